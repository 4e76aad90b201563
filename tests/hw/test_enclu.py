"""hw.enclu: EENTER/ERESUME/EEXIT, AEX and the enclave execution engine.

Ports of the kernel selftests' hardware-visible behaviour (tcs_entry, pte_permissions,
epcm_permissions) plus entry checks, SSA contents, interrupts, greenlet plumbing and EPC loss.
"""

from __future__ import annotations

import struct

import greenlet
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.hw.enclu_helpers import (
    AEP,
    EEXIT_TO,
    GET_FROM_ADDRESS,
    GET_FROM_BUFFER,
    MAGIC,
    MAGIC2,
    NOP,
    PUT_TO_ADDRESS,
    PUT_TO_BUFFER,
    RAW_EACCEPT,
    RAW_EMODPE,
    READ_SSA,
    REGS,
    SPIN,
    TRAP,
    Enclave,
    build_enclave,
    free_epc_page,
)

from sgxsim.errors import InvalidArgument
from sgxsim.hw.arch import (
    MISC_EXINFO,
    PAGE_SIZE,
    SSA_EXIT_TYPE_HARDWARE,
    SSA_EXIT_TYPE_SOFTWARE,
    EnclsLeaf,
    EncluLeaf,
    Fault,
    PageType,
    SecinfoFlags,
    SgxStatus,
    SsaGpr,
    Vector,
    secinfo_flags,
)
from sgxsim.hw.enclu import (
    ENCLU_INSN_SIZE,
    PROGRAM_MAGIC,
    TCS_STATE_ACTIVE,
    TCS_STATE_INACTIVE,
    EnclaveExit,
    drop_tcs_threads,
    execute,
    program_image,
    xsave_frame_size,
)
from sgxsim.hw.enclu.program import _compile
from sgxsim.hw.machine import Machine, MachineConfig

R, W, X = int(SecinfoFlags.R), int(SecinfoFlags.W), int(SecinfoFlags.X)
REG = int(PageType.PT_REG)


@pytest.fixture
def m() -> Machine:
    return Machine()


@pytest.fixture
def encl(m: Machine) -> Enclave:
    e = build_enclave(m)
    assert e.init_status == SgxStatus.SUCCESS
    return e


def eexit(res: object) -> EnclaveExit:
    assert isinstance(res, EnclaveExit), res
    assert res.leaf == EncluLeaf.EEXIT and not res.is_aex, res
    return res


def aex(res: object) -> EnclaveExit:
    assert isinstance(res, EnclaveExit), res
    assert res.is_aex, res
    return res


def put_get(encl: Enclave, value: int, tcs: int | None = None) -> int:
    eexit(encl.enter(encl.op(PUT_TO_BUFFER, value), tcs))
    op = encl.op(GET_FROM_BUFFER, 0)
    eexit(encl.enter(op, tcs))
    return encl.host_u64(op + 8)


# ------------------------------------------------------------------------------------------------
# Program images


def test_program_image_layout() -> None:
    img = program_image("def enclave_entry(ctx):\n    pass\n")
    assert img[:8] == PROGRAM_MAGIC == b"SGXPY\x00\x00\x01"
    (n,) = struct.unpack_from("<I", img, 8)
    assert img[12:].decode() == "def enclave_entry(ctx):\n    pass\n" and n == len(img) - 12


@pytest.mark.parametrize("bad", [b"x", 3, "def (:"])
def test_program_image_rejects_bad_source(bad: object) -> None:
    with pytest.raises(InvalidArgument):
        program_image(bad)  # type: ignore[arg-type]


def test_program_parts_are_named_after_registered_files() -> None:
    """[MODEL] debug information: a registered file's whole text inside a program is compiled under
    the file's name and line numbers; the parts run in one namespace as the whole text would."""
    m = Machine()
    lib = "def f():\n    return A + 1\n"
    m.enclave_source_files[lib] = "/src/lib.py"
    parts = _compile(m, ("A = 41\n" + lib + "B = f()\n").encode())
    assert parts is not None
    assert [(p.co_filename, p.co_firstlineno) for p in parts] == [
        ("<enclave>", 1),
        ("/src/lib.py", 1),
        ("<enclave>", 1),
    ]
    namespace: dict[str, object] = {}
    for part in parts:
        exec(part, namespace)
    assert namespace["B"] == 42
    # Not at a line start, or cut inside a string literal: the whole text stays one part.
    m.enclave_source_files["B = 2\n"] = "/src/b.py"
    for text in ("if True: B = 2\n", 'S = """\n' + lib + '"""\n'):
        whole = _compile(m, text.encode())
        assert whole is not None and [p.co_filename for p in whole] == ["<enclave>"]
    # Whether it is a program is decided on the whole text (a late __future__ import is not one).
    future = "from __future__ import annotations\n"
    m.enclave_source_files[future] = "/src/future.py"
    assert _compile(m, ("X = 1\n" + future).encode()) is None


def test_xsave_frame_size() -> None:
    assert xsave_frame_size(0x3) == 576
    assert xsave_frame_size(0x7) == 832
    assert xsave_frame_size(0xE7) == 2688


# ------------------------------------------------------------------------------------------------
# EENTER / EEXIT basics (selftests unclobbered_vdso, tcs_entry)


def test_put_get_and_eexit_registers(encl: Enclave) -> None:
    op = encl.op(PUT_TO_BUFFER, MAGIC)
    res = eexit(encl.enter(op))
    # EEXIT: RAX = 4 (the leaf), RBX = target (the return address EENTER put in RCX), RCX = AEP.
    assert res.rax == EncluLeaf.EEXIT
    assert res.rbx == res.target == AEP + ENCLU_INSN_SIZE
    assert res.rcx == AEP
    assert res.rdi == 0 and res.rsi == 0 and res.fault is None
    assert put_get(encl, MAGIC2) == MAGIC2
    lp = encl.m.cpus[0]
    assert not lp.in_enclave and lp.active_tcs is None
    assert encl.tcs_struct().state == TCS_STATE_INACTIVE
    assert encl.tcs_struct().cssa == 0
    assert encl.tcs_struct().aep == AEP


def test_eexit_passes_gprs_and_target(encl: Enclave) -> None:
    res = eexit(encl.enter(encl.op(EEXIT_TO, 0x1234_5000)))
    assert (res.target, res.rbx, res.rdx, res.r8, res.r9) == (0x1234_5000, 0x1234_5000, 7, 8, 9)
    # RDI is not cleared by EEXIT: the program left the op address in it.
    assert res.rdi != 0


def test_entry_registers(encl: Enclave) -> None:
    op = encl.op(REGS)
    encl.m.cpus[0].page_table = encl.pt
    res = encl.m.enclu(0, EncluLeaf.EENTER, encl.tcs2, AEP, 0x11, rsi=0x22, rdi=op, r8=0x88, r9=0x99)
    eexit(res)
    rax, rbx, rcx, rdx, rsi, r8, r9 = struct.unpack("<7Q", encl.host_read(op + 8, 56))
    assert rax == 0  # CSSA
    assert rbx == encl.tcs2
    assert rcx == AEP + ENCLU_INSN_SIZE
    assert (rdx, rsi, r8, r9) == (0x11, 0x22, 0x88, 0x99)


def test_tcs_entry_both_tcs(encl: Enclave) -> None:
    for tcs in (encl.tcs1, encl.tcs2):
        res = eexit(encl.enter(encl.op(NOP), tcs))
        assert res.fault is None


def test_costs_charged(encl: Enclave) -> None:
    lat = encl.m.config.latency
    before = encl.m.clock.now_ns()
    eexit(encl.enter(encl.op(NOP)))
    assert encl.m.clock.now_ns() - before == lat.enclu[EncluLeaf.EENTER] + lat.enclu[EncluLeaf.EEXIT]
    encl.pt.protect(encl.la("data2"), writable=False)
    before = encl.m.clock.now_ns()
    aex(encl.enter(encl.op(PUT_TO_ADDRESS, 1, encl.la("data2"))))
    assert encl.m.clock.now_ns() - before == lat.enclu[EncluLeaf.EENTER] + lat.aex
    assert encl.m.stats["AEX"] == 1 and encl.m.cpus[0].stats["AEX"] == 1


# ------------------------------------------------------------------------------------------------
# AEX and ERESUME (selftests pte_permissions, epcm_permissions)


def test_pte_permissions(encl: Enclave) -> None:
    page = encl.la("data2")
    eexit(encl.enter(encl.op(PUT_TO_ADDRESS, MAGIC, page)))
    encl.pt.protect(page, writable=False)
    res = aex(encl.enter(encl.op(PUT_TO_ADDRESS, MAGIC2, page)))
    assert res.fault == Fault(Vector.PF, 0x7, page)
    # AEX synthetic state: RAX = ERESUME, RBX = TCS, RCX = AEP, the rest zero.
    assert (res.rax, res.rbx, res.rcx) == (EncluLeaf.ERESUME, encl.tcs1, AEP)
    assert (res.rdx, res.rsi, res.rdi, res.r8, res.r9) == (0, 0, 0, 0, 0)
    tcs = encl.tcs_struct()
    assert tcs.cssa == 1 and tcs.state == TCS_STATE_INACTIVE
    assert not encl.m.cpus[0].in_enclave
    encl.pt.protect(page, writable=True)
    eexit(encl.resume())
    assert encl.tcs_struct().cssa == 0
    op = encl.op(GET_FROM_ADDRESS, 0, page)
    eexit(encl.enter(op))
    assert encl.host_u64(op + 8) == MAGIC2


def test_epcm_permissions(encl: Enclave) -> None:
    page = encl.la("data2")
    eexit(encl.enter(encl.op(PUT_TO_ADDRESS, MAGIC, page)))
    assert encl.emodpr(page, R) == SgxStatus.SUCCESS
    assert encl.etrack() == SgxStatus.SUCCESS
    si = encl.la("scratch1") + 2048
    eexit(encl.enter(encl.op(PUT_TO_ADDRESS, secinfo_flags(REG, R, int(SecinfoFlags.PR)), si)))
    op = encl.op(RAW_EACCEPT, si, page)
    eexit(encl.enter(op))
    assert encl.host_u64(op + 24) == SgxStatus.SUCCESS
    res = aex(encl.enter(encl.op(PUT_TO_ADDRESS, MAGIC2, page)))
    assert res.fault == Fault(Vector.PF, 0x8007, page)
    # Another thread (TCS #2) extends the permissions back with EMODPE.
    si2 = encl.la("scratch2") + 2048
    eexit(encl.enter(encl.op(PUT_TO_ADDRESS, secinfo_flags(REG, R | W), si2), encl.tcs2))
    eexit(encl.enter(encl.op(RAW_EMODPE, si2, page), encl.tcs2))
    eexit(encl.resume())
    op = encl.op(GET_FROM_ADDRESS, 0, page)
    eexit(encl.enter(op))
    assert encl.host_u64(op + 8) == MAGIC2


def test_aex_host_address_low_bits_cleared_and_exinfo(m: Machine) -> None:
    encl = build_enclave(m, miscselect=MISC_EXINFO)
    page = encl.la("data2")
    encl.pt.protect(page, writable=False)
    res = aex(encl.enter(encl.op(PUT_TO_ADDRESS, 5, page + 0x18)))
    assert res.fault == Fault(Vector.PF, 0x7, page)
    gpr_la = encl.la("ssa1") + PAGE_SIZE - SsaGpr.SIZE
    idx = encl.epc_index(gpr_la)
    gpr = SsaGpr.unpack(m.epc.read(idx, PAGE_SIZE - SsaGpr.SIZE, SsaGpr.SIZE))
    assert gpr.exit_valid and gpr.exit_vector == Vector.PF and gpr.exit_type == SSA_EXIT_TYPE_HARDWARE
    maddr, errcd, _ = struct.unpack("<QII", m.epc.read(idx, PAGE_SIZE - SsaGpr.SIZE - 16, 16))
    assert (maddr, errcd) == (page + 0x18, 0x7)
    assert gpr.rip == encl.la("code")  # [MODEL] RIP = the program image
    assert gpr.fsbase == encl.base and gpr.gsbase == encl.base


def test_pf_not_reported_in_exitinfo_without_exinfo(encl: Enclave) -> None:
    page = encl.la("data2")
    encl.pt.protect(page, writable=False)
    aex(encl.enter(encl.op(PUT_TO_ADDRESS, 5, page)))
    op = encl.op(READ_SSA, 0)
    # Exception-handler entry: CSSA = 1 < NSSA = 2, a fresh run of the program in frame 1.
    eexit(encl.enter(op))
    gpr = SsaGpr.unpack(encl.host_read(op + 16, SsaGpr.SIZE))
    assert gpr.exitinfo == 0
    assert gpr.rdi != 0  # the op pointer the faulting thread had in RDI
    assert encl.tcs_struct().cssa == 1


@pytest.mark.parametrize(
    ("vector", "exit_type"), [(Vector.UD, SSA_EXIT_TYPE_HARDWARE), (Vector.BP, SSA_EXIT_TYPE_SOFTWARE)]
)
def test_trap_exitinfo_and_registers_restored_from_ssa(encl: Enclave, vector: Vector, exit_type: int) -> None:
    op = encl.op(TRAP, int(vector), 0)
    res = aex(encl.enter(op))
    assert res.fault is not None and res.fault.vector == vector
    rd = encl.op(READ_SSA, 0)
    eexit(encl.enter(rd))
    gpr = SsaGpr.unpack(encl.host_read(rd + 16, SsaGpr.SIZE))
    assert gpr.exit_valid and gpr.exit_vector == vector and gpr.exit_type == exit_type
    assert gpr.rsi == 0xABCD
    # The handler edits the saved RSI in SSA; ERESUME restores registers from the SSA bytes.
    rsi_la = encl.la("ssa1") + PAGE_SIZE - SsaGpr.SIZE + SsaGpr.offsetof("rsi")
    eexit(encl.enter(encl.op(PUT_TO_ADDRESS, 0x7777, rsi_la)))
    eexit(encl.resume())
    assert encl.host_u64(op + 16) == 0x7777


def test_eresume_continues_exactly_at_faulting_access(encl: Enclave) -> None:
    """Two faults in one run: each ERESUME retries the same access."""
    op = encl.op(SPIN, 3, 0)
    encl.pt.protect(op, writable=False)
    res = aex(encl.enter(op))
    assert res.fault == Fault(Vector.PF, 0x7, op)
    # Fault again with the PTE gone (not present write = 0x6), then fix it.
    pte = encl.pt.lookup(op)
    assert pte is not None
    encl.pt.unmap(op)
    res = aex(encl.resume())
    assert res.fault == Fault(Vector.PF, 0x6, op)
    assert encl.tcs_struct().cssa == 1
    encl.pt.ptes[op] = pte
    pte.writable = True
    eexit(encl.resume())
    assert encl.host_u64(op + 16) == 3
    assert pte.accessed and pte.dirty


def test_eresume_cssa_zero_is_gp(encl: Enclave) -> None:
    assert encl.resume() == Fault(Vector.GP, 0, 0)


def test_eenter_cssa_ge_nssa_is_gp(m: Machine) -> None:
    encl = build_enclave(m, nssa=1)
    encl.pt.protect(encl.la("data2"), writable=False)
    aex(encl.enter(encl.op(PUT_TO_ADDRESS, 1, encl.la("data2"))))
    assert encl.enter(encl.op(NOP)) == Fault(Vector.GP, 0, 0)
    # The other TCS is independent (selftest epcm_permissions enters TCS #2).
    eexit(encl.enter(encl.op(NOP), encl.tcs2))


def test_nested_aex_and_resume_order(encl: Enclave) -> None:
    """Frame 0 faults, the handler entry (frame 1) faults too; ERESUMEs unwind 1 then 0."""
    page = encl.la("data2")
    encl.pt.protect(page, writable=False)
    op0 = encl.op(PUT_TO_ADDRESS, 0xA0, page)
    aex(encl.enter(op0))
    op1 = encl.op(PUT_TO_ADDRESS, 0xA1, page + 8)
    aex(encl.enter(op1))
    assert encl.tcs_struct().cssa == 2
    assert encl.enter(encl.op(NOP)) == Fault(Vector.GP, 0, 0)  # CSSA == NSSA
    encl.pt.protect(page, writable=True)
    eexit(encl.resume())
    assert encl.tcs_struct().cssa == 1
    eexit(encl.resume())
    assert encl.tcs_struct().cssa == 0
    got = encl.op(GET_FROM_ADDRESS, 0, page)
    eexit(encl.enter(got))
    assert encl.host_u64(got + 8) == 0xA0
    got = encl.op(GET_FROM_ADDRESS, 0, page + 8)
    eexit(encl.enter(got))
    assert encl.host_u64(got + 8) == 0xA1


# ------------------------------------------------------------------------------------------------
# Entry checks


def test_eenter_misaligned_tcs_is_gp(encl: Enclave) -> None:
    encl.m.cpus[0].page_table = encl.pt
    assert encl.m.enclu(0, EncluLeaf.EENTER, encl.tcs1 + 8, AEP) == Fault(Vector.GP, 0, 0)


def test_eenter_tcs_paging_faults(encl: Enclave) -> None:
    pte = encl.pt.lookup(encl.tcs1)
    assert pte is not None
    encl.pt.unmap(encl.tcs1)
    assert encl.enter(encl.op(NOP)) == Fault(Vector.PF, 0x6, encl.tcs1)
    encl.pt.ptes[encl.tcs1] = pte
    pte.writable = False
    assert encl.enter(encl.op(NOP)) == Fault(Vector.PF, 0x7, encl.tcs1)
    pte.writable = True
    eexit(encl.enter(encl.op(NOP)))


def test_eenter_on_a_non_tcs_page_is_sgx_pf(encl: Enclave) -> None:
    data = encl.la("data")
    encl.m.cpus[0].page_table = encl.pt
    assert encl.m.enclu(0, EncluLeaf.EENTER, data, AEP) == Fault(Vector.PF, 0x8007, data)
    # A TCS mapped at the wrong linear address: ENCLAVEADDRESS mismatch.
    hole = encl.la("hole")
    encl.pt.map(hole, encl.phys[encl.tcs1])
    assert encl.m.enclu(0, EncluLeaf.EENTER, hole, AEP) == Fault(Vector.PF, 0x8007, hole)
    # A mapping to ordinary memory.
    encl.pt.map(hole, encl.m.dram.alloc_page())
    assert encl.m.enclu(0, EncluLeaf.EENTER, hole, AEP) == Fault(Vector.PF, 0x8007, hole)


def test_eenter_non_canonical_aep_is_gp(encl: Enclave) -> None:
    encl.m.cpus[0].page_table = encl.pt
    assert encl.m.enclu(0, EncluLeaf.EENTER, encl.tcs1, 0x0000_8000_0000_0000) == Fault(Vector.GP)


def test_eenter_ssa_page_faults(encl: Enclave) -> None:
    ssa = encl.la("ssa1")
    pte = encl.pt.lookup(ssa)
    assert pte is not None
    encl.pt.unmap(ssa)
    assert encl.enter(encl.op(NOP)) == Fault(Vector.PF, 0x6, ssa)
    encl.pt.ptes[ssa] = pte
    assert encl.emodpr(ssa, R) == SgxStatus.SUCCESS
    assert encl.enter(encl.op(NOP)) == Fault(Vector.PF, 0x8007, ssa)


def test_blocked_tcs_is_sgx_pf(encl: Enclave) -> None:
    assert encl.m.encls(0, EnclsLeaf.EBLOCK, 0, encl.phys[encl.tcs1]) == SgxStatus.SUCCESS
    assert encl.enter(encl.op(NOP)) == Fault(Vector.PF, 0x8007, encl.tcs1)


def test_eenter_uninitialized_enclave_is_gp(m: Machine) -> None:
    encl = build_enclave(m, corrupt_code_byte=40)
    assert encl.init_status == SgxStatus.SGX_INVALID_MEASUREMENT
    assert encl.enter(encl.op(NOP)) == Fault(Vector.GP, 0, 0)


def test_flipped_code_byte_fails_einit(m: Machine) -> None:
    good = build_enclave(m)
    assert good.init_status == SgxStatus.SUCCESS
    bad = build_enclave(m, corrupt_code_byte=len(PROGRAM_MAGIC) + 4 + 10, base=0x7E00_0000_0000)
    assert bad.init_status == SgxStatus.SGX_INVALID_MEASUREMENT


def test_eenter_busy_tcs_and_in_enclave_are_gp(encl: Enclave) -> None:
    m = encl.m
    seen: list[object] = []

    def hook(lp: object) -> None:
        if m.on_enclave_step is None:
            return
        m.on_enclave_step = None
        m.cpus[1].page_table = encl.pt
        seen.append(m.enclu(1, EncluLeaf.EENTER, encl.tcs1, AEP))  # TCS.STATE = ACTIVE
        seen.append(m.enclu(0, EncluLeaf.EENTER, encl.tcs2, AEP))  # CPU 0 is in enclave mode
        seen.append(m.enclu(1, EncluLeaf.ERESUME, encl.tcs1, AEP))
        seen.append(encl.tcs_struct().state)

    m.on_enclave_step = hook
    eexit(encl.enter(encl.op(NOP)))
    assert seen == [Fault(Vector.GP), Fault(Vector.GP), Fault(Vector.GP), TCS_STATE_ACTIVE]


def test_aexnotify_mismatch_is_gp(m: Machine) -> None:
    encl = build_enclave(m)
    idx = encl.epc_index(encl.tcs1)
    m.epc.write(idx, 8, (2).to_bytes(8, "little"))  # TCS.FLAGS.AEXNOTIFY without the attribute
    assert encl.enter(encl.op(NOP)) == Fault(Vector.GP)
    m.epc.write(idx, 8, (3).to_bytes(8, "little"))  # DBGOPTIN waives the check
    eexit(encl.enter(encl.op(NOP)))
    m.epc.write(idx, 8, (4).to_bytes(8, "little"))  # reserved TCS.FLAGS bit
    assert encl.enter(encl.op(NOP)) == Fault(Vector.GP)


def test_other_leaves_outside_enclave_are_gp(encl: Enclave) -> None:
    lp = encl.m.cpus[0]
    lp.page_table = encl.pt
    for leaf in (0, 1, 4, 5, 6, 7, 8, 0x20):
        assert execute(encl.m, lp, leaf, 0, 0, 0) == Fault(Vector.GP)


@pytest.mark.parametrize("bad", [-1, 1 << 64, "x", True])
def test_execute_rejects_non_register_values(encl: Enclave, bad: object) -> None:
    with pytest.raises(InvalidArgument):
        execute(encl.m, encl.m.cpus[0], EncluLeaf.EENTER, bad, AEP, 0)  # type: ignore[arg-type]


def test_no_page_table_is_invalid_argument(encl: Enclave) -> None:
    encl.m.cpus[0].page_table = None
    with pytest.raises(InvalidArgument):
        encl.m.enclu(0, EncluLeaf.EENTER, encl.tcs1, AEP)


# ------------------------------------------------------------------------------------------------
# EPC loss: the enclave's pages are gone (the kernel emptied the EPC, e.g. for EUPDATESVN)


def _remove_all(encl: Enclave) -> None:
    m = encl.m
    for phys in encl.phys.values():
        assert m.encls(0, EnclsLeaf.EREMOVE, 0, phys) == SgxStatus.SUCCESS
    assert m.encls(0, EnclsLeaf.EREMOVE, 0, encl.secs_phys) == SgxStatus.SUCCESS
    assert m.epc.nr_valid() == 0


def test_eenter_after_epc_loss_faults_with_sgx_bit(encl: Enclave) -> None:
    eexit(encl.enter(encl.op(NOP)))
    _remove_all(encl)
    assert encl.enter(encl.op(NOP)) == Fault(Vector.PF, 0x8007, encl.tcs1)
    # With the PTE zapped too, it is an ordinary not-present fault the kernel handles.
    encl.pt.unmap(encl.tcs1)
    assert encl.enter(encl.op(NOP)) == Fault(Vector.PF, 0x6, encl.tcs1)


def test_eresume_after_epc_loss_faults_with_sgx_bit(encl: Enclave) -> None:
    encl.pt.protect(encl.la("data2"), writable=False)
    aex(encl.enter(encl.op(PUT_TO_ADDRESS, 1, encl.la("data2"))))
    _remove_all(encl)
    assert encl.resume() == Fault(Vector.PF, 0x8007, encl.tcs1)
    assert encl.m.tcs_threads == {}


# ------------------------------------------------------------------------------------------------
# Code fetch


def test_code_without_epcm_x_cannot_run(m: Machine) -> None:
    encl = build_enclave(m, code_perms=R)
    assert encl.init_status == SgxStatus.SUCCESS
    res = aex(encl.enter(encl.op(NOP)))
    assert res.fault == Fault(Vector.PF, 0x8015, encl.la("code"))  # SGX | I | U | P


def test_code_with_nx_pte_cannot_run(encl: Enclave) -> None:
    encl.pt.protect(encl.la("code"), nx=True)
    res = aex(encl.enter(encl.op(NOP)))
    assert res.fault == Fault(Vector.PF, 0x15, encl.la("code"))
    encl.pt.protect(encl.la("code"), nx=False)
    eexit(encl.resume())  # the fetch is retried and the program runs


def test_bad_program_is_ud(m: Machine) -> None:
    encl = build_enclave(m, program="x = 1\n")
    res = aex(encl.enter(encl.op(NOP)))
    assert res.fault == Fault(Vector.UD)
    res = aex(encl.resume())  # still no entry point
    assert res.fault == Fault(Vector.UD)


def test_falling_off_the_end_is_ud(m: Machine) -> None:
    encl = build_enclave(m, program="def enclave_entry(ctx):\n    ctx.read_u64(ctx.rdi)\n")
    res = aex(encl.enter(encl.op(NOP)))
    assert res.fault == Fault(Vector.UD)


def test_program_exception_is_invalid_argument_and_state_consistent(m: Machine) -> None:
    encl = build_enclave(m, program="def enclave_entry(ctx):\n    raise ValueError('boom')\n")
    with pytest.raises(InvalidArgument, match="boom"):
        encl.enter(encl.op(NOP))
    lp = m.cpus[0]
    assert not lp.in_enclave
    assert encl.tcs_struct().cssa == 1 and encl.tcs_struct().state == TCS_STATE_INACTIVE
    state = m.epc.secs_state[encl.secs_index]
    assert lp.id not in state.inside


def test_eexit_to_non_canonical_target_is_gp(encl: Enclave) -> None:
    res = aex(encl.enter(encl.op(EEXIT_TO, 0x0000_8000_0000_0000)))
    assert res.fault == Fault(Vector.GP)


def test_program_state_does_not_survive_between_entries(m: Machine) -> None:
    src = (
        "counter = [0]\n"
        "def enclave_entry(ctx):\n"
        "    counter[0] += 1\n"
        "    ctx.write_u64(ctx.rdi + 8, counter[0])\n"
        "    ctx.eexit(ctx.rcx)\n"
    )
    encl = build_enclave(m, program=src)
    for _ in range(2):
        op = encl.op(0, 0)
        eexit(encl.enter(op))
        assert encl.host_u64(op + 8) == 1


# ------------------------------------------------------------------------------------------------
# Memory outside ELRANGE and other enclaves' pages


def test_epc_outside_elrange_is_the_abort_page(m: Machine) -> None:
    a = build_enclave(m)
    b = build_enclave(m, base=0x7E00_0000_0000)
    # Map B's data page into A's process outside A's ELRANGE: reads 0xFF, writes dropped.
    la = 0x6000_0000_0000
    a.pt.map(la, b.phys[b.la("data")])
    op = a.op(GET_FROM_ADDRESS, 0, la)
    eexit(a.enter(op))
    assert a.host_u64(op + 8) == 0xFFFF_FFFF_FFFF_FFFF
    eexit(a.enter(a.op(PUT_TO_ADDRESS, MAGIC, la)))
    assert m.epc.read(b.epc_index(b.la("data")), 0, 8) == bytes(8)
    # Inside ELRANGE, another enclave's page is an EPCM violation.
    hole = a.la("hole")
    a.pt.map(hole, b.phys[b.la("data")])
    res = aex(a.enter(a.op(GET_FROM_ADDRESS, 0, hole)))
    assert res.fault == Fault(Vector.PF, 0x8005, hole)


def test_tcs_page_is_not_data(encl: Enclave) -> None:
    res = aex(encl.enter(encl.op(GET_FROM_ADDRESS, 0, encl.tcs2)))
    assert res.fault == Fault(Vector.PF, 0x8005, encl.tcs2)


def test_non_canonical_data_access_is_gp(encl: Enclave) -> None:
    res = aex(encl.enter(encl.op(GET_FROM_ADDRESS, 0, 0x0000_8000_0000_0000)))
    assert res.fault == Fault(Vector.GP)


# ------------------------------------------------------------------------------------------------
# Interrupts, the scheduler hook and greenlet plumbing


def test_interrupt_aex_and_resume(encl: Enclave) -> None:
    m = encl.m
    steps = [0]

    def hook(lp: object) -> None:
        steps[0] += 1
        if steps[0] in (5, 9):
            m.cpus[0].pending_interrupt = True  # the kernel's IPI

    m.on_enclave_step = hook
    op = encl.op(SPIN, 10, 0)
    # Steps 1-2 fetch the program, 3-4 read the op, step 5 precedes the first counter write.
    res = aex(encl.enter(op))
    assert res.fault is None and encl.host_u64(op + 16) == 0
    assert not m.cpus[0].pending_interrupt
    assert aex(encl.resume()).fault is None
    assert encl.host_u64(op + 16) == 4
    eexit(encl.resume())
    assert encl.host_u64(op + 16) == 10
    op2 = encl.op(READ_SSA, 0)
    eexit(encl.enter(op2))
    assert SsaGpr.unpack(encl.host_read(op2 + 16, SsaGpr.SIZE)).exitinfo == 0


@settings(max_examples=25, deadline=None)
@given(st.sets(st.integers(min_value=1, max_value=40), max_size=6), st.integers(min_value=1, max_value=12))
def test_interrupts_never_change_results(interrupts: set[int], n: int) -> None:
    m = Machine()
    encl = build_enclave(m)
    steps = [0]

    def hook(lp: object) -> None:
        steps[0] += 1
        if steps[0] in interrupts:
            m.cpus[0].pending_interrupt = True

    m.on_enclave_step = hook
    op = encl.op(SPIN, n, 0)
    res = encl.enter(op)
    exits = 0
    while isinstance(res, EnclaveExit) and res.is_aex:
        assert res.fault is None
        exits += 1
        res = encl.resume()
    eexit(res)
    assert encl.host_u64(op + 16) == n
    assert exits == m.stats.get("AEX", 0) == len([i for i in interrupts if i <= steps[0]])
    assert encl.tcs_struct().cssa == 0


def test_hook_sees_enclave_mode(encl: Enclave) -> None:
    seen: list[tuple[bool, int | None]] = []
    encl.m.on_enclave_step = lambda lp: seen.append((lp.in_enclave, lp.active_tcs))
    eexit(encl.enter(encl.op(NOP)))
    assert seen and all(s == (True, encl.epc_index(encl.tcs1)) for s in seen)


def test_exits_return_to_the_greenlet_that_entered(encl: Enclave) -> None:
    page = encl.la("data2")
    encl.pt.protect(page, writable=False)
    log: list[tuple[str, object]] = []

    def task_a() -> None:
        log.append(("a", encl.enter(encl.op(PUT_TO_ADDRESS, MAGIC2, page))))

    def task_b() -> None:
        log.append(("b", encl.resume(cpu=1)))

    greenlet.greenlet(task_a).switch()
    encl.pt.protect(page, writable=True)
    greenlet.greenlet(task_b).switch()
    assert [who for who, _ in log] == ["a", "b"]
    aex(log[0][1])
    eexit(log[1][1])
    op = encl.op(GET_FROM_ADDRESS, 0, page)
    eexit(encl.enter(op))
    assert encl.host_u64(op + 8) == MAGIC2


def test_scheduler_can_preempt_inside_enclave(m: Machine) -> None:
    """A scheduler switches away at a step and back later; the enclave continues where it was."""
    a = build_enclave(m)
    b = build_enclave(m, base=0x7E00_0000_0000)
    sched = greenlet.getcurrent()
    order: list[str] = []
    parked: list[object] = []

    def hook(lp: object) -> None:
        me = greenlet.getcurrent()
        parked.append(me)
        sched.switch()
        order.append("resumed")

    def run(e: Enclave, cpu: int, name: str) -> None:
        op = e.op(SPIN, 3, 0)
        res = e.enter(op, cpu=cpu)
        order.append(name)
        eexit(res)
        assert e.host_u64(op + 16) == 3

    ta = greenlet.greenlet(lambda: run(a, 0, "a-done"))
    tb = greenlet.greenlet(lambda: run(b, 1, "b-done"))
    m.on_enclave_step = hook
    ta.switch()
    tb.switch()
    while parked:
        g = parked.pop(0)
        g.switch()  # type: ignore[attr-defined]
    assert order.count("a-done") == 1 and order.count("b-done") == 1
    assert ta.dead and tb.dead


def test_context_cannot_be_used_outside_its_thread(m: Machine) -> None:
    import builtins

    kept: list[object] = []
    builtins.KEEP_FOR_TEST = kept  # type: ignore[attr-defined]
    try:
        encl = build_enclave(
            m, program="def enclave_entry(ctx):\n    KEEP_FOR_TEST.append(ctx)\n    ctx.eexit(ctx.rcx)\n"
        )
        eexit(encl.enter(encl.op(NOP)))
    finally:
        del builtins.KEEP_FOR_TEST  # type: ignore[attr-defined]
    with pytest.raises(InvalidArgument, match="outside the enclave thread"):
        kept[0].read(encl.la("data"), 8)  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------------
# Continuations: dropping, kexec, and paging the TCS out and back in


def test_dropped_continuation_restarts_program_at_ssa_rip(encl: Enclave) -> None:
    page = encl.la("data2")
    encl.pt.protect(page, writable=False)
    op = encl.op(SPIN, 2, 0)
    encl.pt.protect(op, writable=False)
    aex(encl.enter(op))
    drop_tcs_threads(encl.m, encl.epc_index(encl.tcs1))
    assert encl.m.tcs_threads == {}
    encl.pt.protect(op, writable=True)
    # No continuation: ERESUME restores SSA (RIP = the program image, RDI = op) and runs it again.
    eexit(encl.resume())
    assert encl.host_u64(op + 16) == 2


def test_kexec_discards_continuations(encl: Enclave) -> None:
    encl.pt.protect(encl.la("data2"), writable=False)
    aex(encl.enter(encl.op(PUT_TO_ADDRESS, 1, encl.la("data2"))))
    encl.m.kexec()
    assert encl.m.tcs_threads == {}
    encl.pt.protect(encl.la("data2"), writable=True)
    eexit(encl.resume())
    got = encl.op(GET_FROM_ADDRESS, 0, encl.la("data2"))
    eexit(encl.enter(got))
    assert encl.host_u64(got + 8) == 1


def test_continuation_follows_tcs_through_ewb_and_eldu(encl: Enclave) -> None:
    m = encl.m
    page = encl.la("data2")
    encl.pt.protect(page, writable=False)
    aex(encl.enter(encl.op(PUT_TO_ADDRESS, MAGIC, page)))
    tcs_phys = encl.phys[encl.tcs1]
    va = free_epc_page(m)
    assert m.encls(0, EnclsLeaf.EPA, int(PageType.PT_VA), va) == SgxStatus.SUCCESS
    assert m.encls(0, EnclsLeaf.EBLOCK, 0, tcs_phys) == SgxStatus.SUCCESS
    assert encl.etrack() == SgxStatus.SUCCESS
    backing, pcmd, pageinfo = m.dram.alloc_page(), m.dram.alloc_page(), m.dram.alloc_page()
    m.dram.write(pageinfo, struct.pack("<QQQQ", 0, backing, pcmd, 0))
    assert m.encls(0, EnclsLeaf.EWB, pageinfo, tcs_phys, va) == SgxStatus.SUCCESS
    # Occupy the old frame so the TCS comes back elsewhere.
    filler = encl.eaug(encl.la("hole"))
    new_phys = free_epc_page(m)
    assert new_phys != tcs_phys and filler == tcs_phys
    m.dram.write(pageinfo, struct.pack("<QQQQ", encl.tcs1, backing, pcmd, encl.secs_phys))
    assert m.encls(0, EnclsLeaf.ELDU, pageinfo, new_phys, va) == SgxStatus.SUCCESS
    encl.phys[encl.tcs1] = new_phys
    encl.pt.map(encl.tcs1, new_phys)
    encl.pt.protect(page, writable=True)
    eexit(encl.resume())
    got = encl.op(GET_FROM_ADDRESS, 0, page)
    eexit(encl.enter(got))
    assert encl.host_u64(got + 8) == MAGIC


def test_sgx1_machine_rejects_sgx2_leaves_in_enclave(m: Machine) -> None:
    m1 = Machine(MachineConfig(sgx2=False))
    encl = build_enclave(m1)
    si = encl.la("scratch1") + 2048
    eexit(encl.enter(encl.op(PUT_TO_ADDRESS, secinfo_flags(REG, R | W), si)))
    res = aex(encl.enter(encl.op(RAW_EMODPE, si, encl.la("data"))))
    assert res.fault == Fault(Vector.GP)
