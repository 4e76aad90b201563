"""AEX-Notify: TCS.FLAGS.AEXNOTIFY, ERESUME's notification delivery, ENCLU[EDECCSSA]; ENCLS #UD.

Models: Intel ISE "Asynchronous Enclave Exit Notify and the EDECCSSA User Leaf Function" and the
SDM ERESUME/EENTER/ENCLS pseudo-code (see sgxsim.hw.enclu.entry / .aex and Machine.encls_exec).
"""

from __future__ import annotations

import pytest
from tests.hw.enclu_helpers import AEP, Enclave, build_enclave
from tests.hw.helpers import build_enclave as raw_build
from tests.hw.helpers import reg_page, tcs_page

from sgxsim.hw import arch
from sgxsim.hw.arch import PAGE_SIZE, Attributes, EnclsLeaf, EncluLeaf, Fault, SgxStatus, SsaGpr, Vector
from sgxsim.hw.enclu import EnclaveExit
from sgxsim.hw.machine import Machine, MachineConfig

AEXN = int(Attributes.MODE64BIT | Attributes.AEXNOTIFY)

#: A thread that opts in to AEX-Notify in SSA[0] (op 0; op 1 leaves it off) and traps; the
#: handler entry (RAX = CSSA = 1) records RAX, runs EDECCSSA and EEXITs. Op 2: EDECCSSA at CSSA 0.
HANDLER = """
def enclave_entry(ctx):
    data = ctx.base + L["data"]
    gpr0 = ctx.base + L["ssa1"] + 4096 - 184
    if ctx.rax == 0:
        op = ctx.read_u64(ctx.rdi)
        if op == 2:
            ctx.edeccssa()
        ctx.write(gpr0 + 167, b"\\x01" if op == 0 else b"\\x00")
        ctx.trap(3)
        ctx.write_u64(data + 16, 0xD0)
        ctx.eexit(ctx.rcx)
    ctx.write_u64(data, ctx.rax)
    ctx.edeccssa()
    ctx.write_u64(data + 8, 1)
    ctx.eexit(ctx.rcx)
"""


def _encl(m: Machine | None = None) -> Enclave:
    encl = build_enclave(
        m or Machine(), program=HANDLER, attributes=AEXN, tcs_flags=arch.SGX_TCS_AEXNOTIFY, nssa=2
    )
    assert encl.init_status == SgxStatus.SUCCESS
    return encl


def _data(encl: Enclave, off: int) -> int:
    return int.from_bytes(encl.m.epc.read(encl.epc_index(encl.la("data")), off, 8), "little")


def test_eadd_tcs_with_aexnotify_flag() -> None:
    """TCS.FLAGS bit 1 is AEXNOTIFY, not reserved: raw EADD of such a TCS succeeds; bit 2 is #GP."""
    m = Machine()
    pages = [tcs_page(0, ossa=0x1000, flags=arch.SGX_TCS_AEXNOTIFY), reg_page(0x1000, perms=0x3)]
    raw = raw_build(m, pages, size=0x4000, base=0x10_0000, attributes=AEXN, init=False)
    assert len(raw.pages) == 2
    with pytest.raises(AssertionError, match="EADD"):
        raw_build(m, [tcs_page(0, ossa=0x1000, flags=0x4)], size=0x4000, base=0x20_0000, attributes=AEXN)


def test_eresume_delivers_notification_and_edeccssa_returns_to_frame() -> None:
    encl = _encl()
    res = encl.enter(encl.op(0))
    assert isinstance(res, EnclaveExit) and res.is_aex and res.fault is not None
    assert res.fault.vector == Vector.BP
    assert encl.tcs_struct().cssa == 1
    gpr = SsaGpr.unpack(encl.m.epc.read(encl.epc_index(encl.la("ssa1")), PAGE_SIZE - 184, 184))
    assert gpr.reserved & arch.SSA_GPRSGX_AEXNOTIFY  # AEX leaves the opt-in bit alone
    # ERESUME enters the handler at OENTRY with RAX = CSSA = 1 instead of resuming the trap.
    done = encl.resume()
    assert isinstance(done, EnclaveExit) and not done.is_aex
    assert _data(encl, 0) == 1 and _data(encl, 8) == 1
    assert _data(encl, 16) == 0  # the interrupted thread did not continue
    assert encl.tcs_struct().cssa == 0  # EDECCSSA
    assert encl.m.stats["AEX-NOTIFY"] == 1 and encl.m.stats["EDECCSSA"] == 1


def test_eresume_without_opt_in_resumes() -> None:
    encl = _encl()
    res = encl.enter(encl.op(1))
    assert isinstance(res, EnclaveExit) and res.is_aex
    done = encl.resume()
    assert isinstance(done, EnclaveExit) and not done.is_aex
    assert _data(encl, 16) == 0xD0 and _data(encl, 0) == 0
    assert "AEX-NOTIFY" not in encl.m.stats


def test_notify_needs_a_free_ssa_frame() -> None:
    """Delivery enters as EENTER does: with CSSA == NSSA there is no frame, so ERESUME is #GP."""
    m = Machine()
    encl = build_enclave(m, program=HANDLER, attributes=AEXN, tcs_flags=arch.SGX_TCS_AEXNOTIFY, nssa=1)
    res = encl.enter(encl.op(0))
    assert isinstance(res, EnclaveExit) and res.is_aex
    assert encl.resume() == Fault(Vector.GP)


def test_edeccssa_at_cssa_zero_is_gp() -> None:
    encl = _encl()
    res = encl.enter(encl.op(2))
    assert isinstance(res, EnclaveExit) and res.is_aex and res.fault == Fault(Vector.GP)


def test_edeccssa_unsupported_is_gp_and_cpuid() -> None:
    assert Machine().cpuid(0x12, 0)[0] & arch.SGX_CPUID_EDECCSSA
    assert Machine().describe()["edeccssa"] is True
    m = Machine(MachineConfig(edeccssa=False))
    assert not m.cpuid(0x12, 0)[0] & arch.SGX_CPUID_EDECCSSA
    encl = _encl(m)
    assert encl.enter(encl.op(0)) is not None
    res = encl.resume()  # the handler's EDECCSSA faults: an AEX with #GP
    assert isinstance(res, EnclaveExit) and res.is_aex and res.fault == Fault(Vector.GP)


def test_edeccssa_is_not_an_outside_leaf() -> None:
    encl = _encl()
    encl.m.cpus[0].page_table = encl.pt
    assert encl.m.enclu(0, EncluLeaf.EDECCSSA, encl.tcs1, AEP) == Fault(Vector.GP)


def test_encls_in_enclave_mode_is_ud() -> None:
    encl = _encl()
    m = encl.m
    state = m.epc.secs_state[encl.secs_index]
    m.cpus[1].active_secs = encl.secs_index
    state.inside[1] = state.epoch
    assert m.encls(1, EnclsLeaf.EREMOVE, 0, encl.secs_phys) == Fault(Vector.UD)
    assert m.encls(1, 0x7F, 0, 0) == Fault(Vector.UD)  # before the leaf-number check
    m.cpus[1].active_secs = None
    state.inside.pop(1)
    assert m.encls(1, EnclsLeaf.EREMOVE, 0, encl.secs_phys) == SgxStatus.SGX_CHILD_PRESENT
