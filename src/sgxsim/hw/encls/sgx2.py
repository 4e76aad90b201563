"""SGX2 dynamic-memory leaves run by the kernel: EAUG, EMODPR, EMODT, and the EAUG batch path.

Models: Intel SDM Vol. 3D ch. 38 ENCLS[EAUG], [EMODPR], [EMODT].
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from sgxsim.errors import InvalidArgument
from sgxsim.hw.arch import (
    EnclsLeaf,
    LeafResult,
    SgxStatus,
    gp0,
)
from sgxsim.hw.cpu import LogicalProcessor
from sgxsim.hw.encls.batching import (
    I64Array,
    _as_addr_array,
    _batch_account,
    _batch_begin,
    _drop_contents,
    _first_occurrence,
    _indices_of,
)
from sgxsim.hw.encls.common import (
    _PAGE_MASK,
    _PT_REG,
    _PT_SECS,
    _PT_SS_FIRST,
    _PT_SS_REST,
    _PT_TCS,
    _PT_TRIM,
    _SUCCESS,
    _U64,
    _pf,
    _read_pageinfo,
    _read_secinfo,
    _regs_ok,
    _secs_of_child,
    _set_entry,
)
from sgxsim.hw.epc import SecsState

if TYPE_CHECKING:
    from sgxsim.hw.machine import Machine

__all__ = [
    "eaug",
    "eaug_batch",
    "emodpr",
    "emodt",
]


def _eaug_tail(m: Machine, idx: int, rcx: int, sidx: int, secs_addr: int, linaddr: int) -> LeafResult:
    """EAUG from the EPCM(RCX).VALID check on (shared by the one-page leaf and the batch)."""
    e = m.epc.epcm
    if e.valid[idx]:
        return _pf(rcx)
    if not e.valid[sidx] or e.pt[sidx] != _PT_SECS:
        return _pf(secs_addr)
    state = m.epc.secs_state[sidx]
    if not state.initialized:
        return gp0()
    if not state.base <= linaddr < state.base + state.size:
        return gp0()
    m.epc.contents.pop(idx, None)
    _set_entry(e, idx, _PT_REG, 0x3, sidx, linaddr)
    e.pending[idx] = True
    state.child_count += 1
    return _SUCCESS


def eaug(m: Machine, lp: LogicalProcessor, rbx: int, rcx: int, rdx: int) -> LeafResult:
    """Add a zeroed, PENDING read/write REG page to an initialized enclave (not measured).

    Models: SDM ENCLS[EAUG] (RBX = PAGEINFO{LINADDR, SECS, SRCPGE = 0, SECINFO = 0}, RCX = EPC
    page); order: PAGEINFO/EPC alignment, RCX in EPC, SECINFO alignment (if non-zero), SECS and
    LINADDR alignment, SRCPGE non-zero (#GP), SECS in EPC, RCX valid (#PF), a non-zero SECINFO
    (only shadow-stack types are allowed: #GP without CET), SECS valid PT_SECS (#PF(SECS)),
    enclave not initialized (#GP), LINADDR outside ELRANGE (#GP).
    Outcomes: SUCCESS, #GP(0), #PF(RCX), #PF(PAGEINFO.SECS).
    """
    _regs_ok(rbx, rcx, rdx)
    if rbx & 31 or rcx & _PAGE_MASK:
        return gp0()
    epc = m.epc
    idx = epc.index_of(rcx)
    if idx is None:
        return _pf(rcx)
    linaddr, srcpge, secinfo_addr, secs_addr = _read_pageinfo(m, rbx)
    if secinfo_addr and secinfo_addr & 63:
        return gp0()
    if secs_addr & _PAGE_MASK or linaddr & _PAGE_MASK:
        return gp0()
    if srcpge != 0:
        return gp0()
    sidx = epc.index_of(secs_addr)
    if sidx is None:
        return _pf(secs_addr)
    if secinfo_addr:
        if epc.epcm.valid[idx]:
            return _pf(rcx)
        return gp0()  # a SECINFO may only request PT_SS_FIRST/PT_SS_REST, which needs CET
    return _eaug_tail(m, idx, rcx, sidx, secs_addr, linaddr)


def emodpr(m: Machine, lp: LogicalProcessor, rbx: int, rcx: int, rdx: int) -> LeafResult:
    """Restrict a REG page's EPCM permissions (R/W/X AND SECINFO) and set PR.

    Models: SDM ENCLS[EMODPR] (RBX = SECINFO, RCX = EPC page); order: SECINFO/EPC alignment, RCX
    in EPC, SECINFO reserved or W without R (#GP), not valid (#PF), PENDING or MODIFIED ->
    SGX_PAGE_NOT_MODIFIABLE, PT != REG (#PF), enclave not initialized (#GP).
    Outcomes: SUCCESS, SGX_PAGE_NOT_MODIFIABLE, #GP(0), #PF(RCX).
    """
    _regs_ok(rbx, rcx, rdx)
    if rbx & 63 or rcx & _PAGE_MASK:
        return gp0()
    idx = m.epc.index_of(rcx)
    if idx is None:
        return _pf(rcx)
    flags, secinfo_ok = _read_secinfo(m, rbx)
    if not secinfo_ok or (flags & 0x2 and not flags & 0x1):
        return gp0()
    e = m.epc.epcm
    if not e.valid[idx]:
        return _pf(rcx)
    if e.pending[idx] or e.modified[idx]:
        return SgxStatus.SGX_PAGE_NOT_MODIFIABLE
    if e.pt[idx] != _PT_REG:
        return _pf(rcx)
    state = _secs_of_child(m, idx)
    if not state.initialized:
        return gp0()
    e.pr[idx] = True
    e.rwx[idx] = int(e.rwx[idx]) & flags & 0x7
    e.block_epoch[idx] = state.epoch
    return _SUCCESS


def emodt(m: Machine, lp: LogicalProcessor, rbx: int, rcx: int, rdx: int) -> LeafResult:
    """Change a page's type to TCS or TRIM (MODIFIED := 1, RWX := 0; the enclave must EACCEPT).

    Models: SDM ENCLS[EMODT] (RBX = SECINFO, RCX = EPC page); order: SECINFO/EPC alignment, RCX in
    EPC, SECINFO reserved or PT not in {TCS, TRIM} (#GP), not valid (#PF), transition not
    REG -> {TCS, TRIM} or TCS -> TRIM (#PF), PENDING or MODIFIED -> SGX_PAGE_NOT_MODIFIABLE,
    enclave not initialized (#GP).
    Outcomes: SUCCESS, SGX_PAGE_NOT_MODIFIABLE, #GP(0), #PF(RCX).
    """
    _regs_ok(rbx, rcx, rdx)
    if rbx & 63 or rcx & _PAGE_MASK:
        return gp0()
    idx = m.epc.index_of(rcx)
    if idx is None:
        return _pf(rcx)
    flags, secinfo_ok = _read_secinfo(m, rbx)
    new_pt = (flags >> 8) & 0xFF
    if not secinfo_ok or (new_pt != _PT_TCS and new_pt != _PT_TRIM):
        return gp0()
    e = m.epc.epcm
    if not e.valid[idx]:
        return _pf(rcx)
    pt = int(e.pt[idx])
    if not (pt == _PT_REG or (pt in (_PT_TCS, _PT_SS_FIRST, _PT_SS_REST) and new_pt == _PT_TRIM)):
        return _pf(rcx)
    if e.pending[idx] or e.modified[idx]:
        return SgxStatus.SGX_PAGE_NOT_MODIFIABLE
    state = _secs_of_child(m, idx)
    if not state.initialized:
        return gp0()
    e.block_epoch[idx] = state.epoch
    e.pr[idx] = False
    e.modified[idx] = True
    e.rwx[idx] = 0
    e.pt[idx] = new_pt
    return _SUCCESS


def eaug_batch(
    m: Machine,
    cpu: int,
    secs_phys: int,
    epc_phys: npt.NDArray[np.integer],
    linaddrs: npt.NDArray[np.integer],
) -> tuple[int, LeafResult]:
    """EAUG many pages as one in-flight ENCLS; stop at the first failure.

    Page ``i`` is EAUGed as the one-page leaf would with PAGEINFO{LINADDR=linaddrs[i],
    SECS=secs_phys, SRCPGE=0, SECINFO=0} and RCX = epc_phys[i]. Returns (pages added, outcome of
    the page that stopped the batch or SUCCESS). Pages whose checks all pass are committed with
    numpy; the rest take the one-page path. Charges the EAUG latency per page attempted.
    Models: repeated SDM ENCLS[EAUG] (Linux sgx_encl_eaug_page). Outcomes: as :func:`eaug`.
    """
    epc_arr = _as_addr_array("epc_phys", epc_phys)
    lin_arr = _as_addr_array("linaddrs", linaddrs)
    if lin_arr.size != epc_arr.size:
        raise InvalidArgument("eaug_batch: epc_phys and linaddrs must have equal lengths")
    if type(secs_phys) is not int or not 0 <= secs_phys <= _U64:
        raise InvalidArgument(f"eaug_batch: secs_phys={secs_phys!r} is not a 64-bit value")
    n = int(epc_arr.size)
    if n == 0:
        return 0, _SUCCESS
    leaf = EnclsLeaf.EAUG
    lp, gate = _batch_begin(m, cpu, leaf)
    try:
        if gate is not None:
            _batch_account(m, lp, leaf, 1, 0)
            return 0, gate
        done, result = _eaug_batch_body(m, epc_arr, lin_arr, secs_phys)
        attempted = done + (result != _SUCCESS)
        _batch_account(m, lp, leaf, attempted, attempted)
        return done, result
    finally:
        m.encls_end(cpu)


def _eaug_one(m: Machine, epc_addr: int, linaddr: int, secs_phys: int) -> LeafResult:
    if epc_addr & _PAGE_MASK:
        return gp0()
    idx = m.epc.index_of(epc_addr)
    if idx is None:
        return _pf(epc_addr)
    if secs_phys & _PAGE_MASK or linaddr & _PAGE_MASK:
        return gp0()
    sidx = m.epc.index_of(secs_phys)
    if sidx is None:
        return _pf(secs_phys)
    return _eaug_tail(m, idx, epc_addr, sidx, secs_phys, linaddr)


def _eaug_batch_body(
    m: Machine, epc_arr: I64Array, lin_arr: I64Array, secs_phys: int
) -> tuple[int, LeafResult]:
    epc = m.epc
    e = epc.epcm
    n = int(epc_arr.size)
    sidx = epc.index_of(secs_phys)
    fast = np.zeros(n, dtype=np.bool_)
    idx, in_epc = _indices_of(epc, epc_arr)
    state: SecsState | None = None
    if sidx is not None and not secs_phys & _PAGE_MASK and e.valid[sidx] and e.pt[sidx] == _PT_SECS:
        state = epc.secs_state[sidx]
        if state.initialized:
            aligned = ((epc_arr & _PAGE_MASK) == 0) & ((lin_arr & _PAGE_MASK) == 0)
            in_range = (lin_arr >= state.base) & (lin_arr < state.base + state.size)
            fast = aligned & in_epc & in_range
            fast &= ~e.valid[np.where(fast, idx, 0)]
            fast &= _first_occurrence(idx, fast)
    done = 0
    while done < n:
        tail = np.flatnonzero(~fast[done:])
        stop = n if tail.size == 0 else done + int(tail[0])
        if stop > done:
            assert state is not None and sidx is not None
            ids = idx[done:stop]
            e.valid[ids] = True
            e.pt[ids] = _PT_REG
            e.rwx[ids] = 0x3
            e.secs[ids] = sidx
            e.linaddr[ids] = lin_arr[done:stop].astype(np.uint64)
            e.blocked[ids] = False
            e.pending[ids] = True
            e.modified[ids] = False
            e.pr[ids] = False
            e.block_epoch[ids] = 0
            _drop_contents(epc, ids)
            state.child_count += int(ids.size)
            done = stop
        if done == n:
            break
        result = _eaug_one(m, int(epc_arr[done]), int(lin_arr[done]), secs_phys)
        if result != _SUCCESS:
            return done, result
        done += 1
    return done, _SUCCESS
