"""One copy of every architectural table: ECREATE's SSA sizing and EENTER's XSAVE frame agree."""

from __future__ import annotations

from tests.hw.enclu_helpers import NOP, build_enclave

from sgxsim.hw import arch
from sgxsim.hw.arch import PAGE_SIZE, Fault, PfError, Vector, ssa_frame_bytes_needed, xsave_size
from sgxsim.hw.enclu import EnclaveExit, xsave_frame_size
from sgxsim.hw.machine import Machine, MachineConfig

AVX_AMX = 0x7 | (1 << 17) | (1 << 18)


def test_xsave_tables_are_one_function() -> None:
    for xfrm in (0x3, 0x7, 0xE7, 0x2E7, AVX_AMX, 0xE7 | (1 << 17) | (1 << 18)):
        assert xsave_frame_size(xfrm) == xsave_size(xfrm)
    assert xsave_size(AVX_AMX) == 2816 + 8192  # TILEDATA ends the AMX frame


def test_ecreate_sizing_and_eenter_frame_agree_with_amx() -> None:
    """With AMX in XFRM the frame spans 3 pages; EENTER must check the middle one ECREATE sized for."""
    m = Machine(MachineConfig(xfrm_supported=AVX_AMX))
    sfs = -(-ssa_frame_bytes_needed(AVX_AMX, 0) // PAGE_SIZE)
    assert sfs == 3
    encl = build_enclave(m, xfrm=AVX_AMX, ssa_frame_size=sfs, nssa=1)
    assert encl.init_status == arch.SgxStatus.SUCCESS
    ok = encl.enter(encl.op(NOP))
    assert isinstance(ok, EnclaveExit) and not ok.is_aex
    # Unmap the second page of SSA frame 0: only the AMX TILEDATA part of the XSAVE area lives there.
    middle = encl.la("ssa1") + PAGE_SIZE
    assert xsave_frame_size(AVX_AMX) > PAGE_SIZE + PAGE_SIZE // 2
    encl.pt.unmap(middle)
    res = encl.enter(encl.op(NOP))
    assert isinstance(res, Fault) and res.vector == Vector.PF and res.addr == middle
    assert res.error_code & PfError.W and not res.error_code & PfError.P
