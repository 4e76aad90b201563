"""Address translation and EPCM access checks in enclave mode (data accesses, fetches, leaf operands).

Models: Intel SDM Vol. 3A §4.5/§4.7 (paging) and Vol. 3D ch. 36-37 (enclave access control).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sgxsim.errors import InvalidArgument
from sgxsim.hw.arch import (
    PAGE_SIZE,
    SGX_SSA_GPRS_SIZE,
    Fault,
    PageType,
    PfError,
    pf,
    xsave_size,
)
from sgxsim.hw.enclu.common import _PAGE_MASK, _U64

if TYPE_CHECKING:
    from sgxsim.hw.cpu import LogicalProcessor, PageTable
    from sgxsim.hw.epc import SecsState
    from sgxsim.hw.machine import Machine

__all__: list[str] = []


_READ, _WRITE, _FETCH = 0, 1, 2
#: The EPCM permission bit each kind of access needs (R, W, X).
_PERM_BIT = (0x1, 0x2, 0x4)


def _pf_code(access: int, present: bool, sgx: bool = False) -> int:
    code = int(PfError.U)
    if access == _WRITE:
        code |= PfError.W
    elif access == _FETCH:
        code |= PfError.I
    if present:
        code |= PfError.P
    if sgx:
        code |= PfError.SGX
    return code


def _walk(pt: PageTable, la: int, access: int, fault_addr: int | None = None) -> int | Fault:
    """Translate ``la`` for a user-mode access; the physical address, or the paging #PF.

    Models: SDM Vol. 3A §4.5/§4.7 (4-level paging; error code P/W/U/I). Sets the PTE's Accessed
    bit, and Dirty for a write, once the walk succeeds.
    """
    addr = la if fault_addr is None else fault_addr
    pte = pt.lookup(la & _PAGE_MASK)
    if pte is None or not pte.present:
        return pf(addr, _pf_code(access, present=False))
    if not pte.user or (access == _WRITE and not pte.writable) or (access == _FETCH and pte.nx):
        return pf(addr, _pf_code(access, present=True))
    pte.accessed = True
    if access == _WRITE:
        pte.dirty = True
    return (pte.phys & _PAGE_MASK) | (la & (PAGE_SIZE - 1))


def _page_table(lp: LogicalProcessor) -> PageTable:
    pt = lp.page_table
    if pt is None:
        raise InvalidArgument(f"CPU {lp.id} has no page table loaded (CR3); ENCLU needs a process context")
    return pt


def _epc_page(m: Machine, pt: PageTable, la: int, access: int, fault_addr: int | None = None) -> int | Fault:
    """Translate an address that must resolve to EPC: the global EPC page index, or the #PF.

    Not-present/permission faults are ordinary #PFs; a mapping to non-EPC memory is an SGX
    access-control #PF (PFEC.SGX).
    """
    phys = _walk(pt, la, access, fault_addr)
    if isinstance(phys, Fault):
        return phys
    idx = m.epc.index_of(phys)
    if idx is None:
        return pf(la if fault_addr is None else fault_addr, _pf_code(access, True, sgx=True))
    return idx


def _sgx_pf(addr: int, access: int) -> Fault:
    return pf(addr, _pf_code(access, True, sgx=True))


def _ssa_page_ok(m: Machine, idx: int, la: int, secs: int) -> bool:
    """EENTER/ERESUME's SSA page conditions: valid, unblocked, not PENDING/MODIFIED, PT_REG, RW."""
    e = m.epc.epcm
    return bool(
        e.valid[idx]
        and not e.blocked[idx]
        and not e.pending[idx]
        and not e.modified[idx]
        and int(e.linaddr[idx]) == la & _PAGE_MASK
        and e.pt[idx] == PageType.PT_REG
        and int(e.secs[idx]) == secs
        and (int(e.rwx[idx]) & 0x3) == 0x3
    )


def _operand_page(m: Machine, lp: LogicalProcessor, la: int, access: int, need: int) -> int | Fault:
    """An in-enclave leaf's memory operand: PT_REG page of the current enclave with ``need`` perms.

    Models: the EREPORT/EGETKEY/EACCEPT/EMODPE operand checks (VALID, BLOCKED, PT_REG,
    ENCLAVESECS = CR_ACTIVE_SECS, not PENDING/MODIFIED, ENCLAVEADDRESS, R or W): #PF otherwise.
    """
    idx = _epc_page(m, _page_table(lp), la, access)
    if isinstance(idx, Fault):
        return idx
    e = m.epc.epcm
    if (
        not e.valid[idx]
        or e.blocked[idx]
        or e.pt[idx] != PageType.PT_REG
        or int(e.secs[idx]) != lp.active_secs
        or e.pending[idx]
        or e.modified[idx]
        or int(e.linaddr[idx]) != la & _PAGE_MASK
        or (int(e.rwx[idx]) & need) != need
    ):
        return _sgx_pf(la, access)
    return idx


def _ssa_frame(
    m: Machine, pt: PageTable, state: SecsState, ossa: int, frame: int, secs: int
) -> tuple[int, int] | Fault:
    """Check SSA frame ``frame`` of a TCS; (EPC index, offset) of its GPRSGX area, or the #PF.

    Models: the SSA checks EENTER, ERESUME and EDECCSSA share: every page of the XSAVE area
    (``xsave_size(XFRM)`` bytes from the frame base) and the page holding GPRSGX (the last 184
    bytes of the frame) must be valid, unblocked, RW PT_REG pages of the enclave at their address.
    """
    sfs = state.ssa_frame_size * PAGE_SIZE
    ssa_la = (ossa + state.base + sfs * frame) & _U64
    page = ssa_la
    while page < ssa_la + xsave_size(state.xfrm):
        idx = _epc_page(m, pt, page, _WRITE)
        if isinstance(idx, Fault):
            return idx
        if not _ssa_page_ok(m, idx, page, secs):
            return _sgx_pf(page, _WRITE)
        page += PAGE_SIZE
    gpr_la = (ssa_la + sfs - SGX_SSA_GPRS_SIZE) & _U64
    gpr_idx = _epc_page(m, pt, gpr_la, _WRITE)
    if isinstance(gpr_idx, Fault):
        return gpr_idx
    if not _ssa_page_ok(m, gpr_idx, gpr_la, secs):
        return _sgx_pf(gpr_la, _WRITE)
    return gpr_idx, gpr_la & (PAGE_SIZE - 1)
