"""Debug leaves: EDBGRD and EDBGWR.

Models: Intel SDM Vol. 3D ch. 38 ENCLS[EDBGRD], [EDBGWR].
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sgxsim.hw.arch import (
    PAGE_SIZE,
    LeafResult,
    SgxStatus,
    gp0,
)
from sgxsim.hw.cpu import LogicalProcessor
from sgxsim.hw.encls.common import (
    _ATTR_DEBUG,
    _PAGE_MASK,
    _PT_REG,
    _PT_TCS,
    _PT_VA,
    _SUCCESS,
    _TCS_FLAGS_OFFSET,
    _U64,
    _U64_LE,
    _pf,
    _regs_ok,
    _secs_of_child,
    _va_slot_read,
)

if TYPE_CHECKING:
    from sgxsim.hw.machine import Machine

__all__ = [
    "SGX_TCS_LIMIT",
    "edbgrd",
    "edbgwr",
]


#: Size of the architectural part of a TCS (fields up to GSLIMIT) without CET: EDBGRD #GP beyond it.
SGX_TCS_LIMIT = 72


def edbgrd(m: Machine, lp: LogicalProcessor, rbx: int, rcx: int, rdx: int) -> LeafResult:
    """Read 8 bytes of a debug enclave's page (or a VA slot's occupancy) into RBX.

    Models: SDM ENCLS[EDBGRD] (RCX = 8-byte-aligned EPC address; output in RBX, 64-bit mode);
    order: alignment, EPC membership, VALID, PT in {REG, TCS, VA}, PENDING/MODIFIED ->
    SGX_PAGE_NOT_DEBUGGABLE, TCS offset >= SGX_TCS_LIMIT -> #GP, REG/TCS of a non-debug
    enclave -> #GP. A VA slot reads as all ones when non-zero, else 0.
    Outcomes: SUCCESS (``lp.encls_rbx`` = the value), SGX_PAGE_NOT_DEBUGGABLE, #GP(0), #PF(RCX).
    """
    _regs_ok(rbx, rcx, rdx)
    if rcx & 7:
        return gp0()
    epc = m.epc
    idx = epc.index_of(rcx)
    if idx is None:
        return _pf(rcx)
    e = epc.epcm
    if not e.valid[idx]:
        return _pf(rcx)
    pt = int(e.pt[idx])
    if pt != _PT_REG and pt != _PT_TCS and pt != _PT_VA:
        return _pf(rcx)
    if e.pending[idx] or e.modified[idx]:
        return SgxStatus.SGX_PAGE_NOT_DEBUGGABLE
    offset = rcx & _PAGE_MASK
    if pt == _PT_TCS and offset >= SGX_TCS_LIMIT:
        return gp0()
    if pt == _PT_VA:
        lp.encls_rbx = _U64 if _va_slot_read(epc, idx, offset) & ~7 else 0
        return _SUCCESS
    if not _secs_of_child(m, idx).attributes & _ATTR_DEBUG:
        return gp0()
    lp.encls_rbx = int(_U64_LE.unpack(epc.read(idx, offset, 8))[0])
    return _SUCCESS


def edbgwr(m: Machine, lp: LogicalProcessor, rbx: int, rcx: int, rdx: int) -> LeafResult:
    """Write RBX (8 bytes) into a debug enclave's REG page or its TCS.FLAGS.

    Models: SDM ENCLS[EDBGWR] (RBX = data, RCX = 8-byte-aligned EPC address, 64-bit mode); order:
    alignment, EPC membership, VALID, PT in {REG, TCS}, PENDING/MODIFIED ->
    SGX_PAGE_NOT_DEBUGGABLE, TCS offset other than FLAGS -> #GP, non-debug enclave -> #GP.
    Outcomes: SUCCESS, SGX_PAGE_NOT_DEBUGGABLE, #GP(0), #PF(RCX).
    """
    _regs_ok(rbx, rcx, rdx)
    if rcx & 7:
        return gp0()
    epc = m.epc
    idx = epc.index_of(rcx)
    if idx is None:
        return _pf(rcx)
    e = epc.epcm
    if not e.valid[idx]:
        return _pf(rcx)
    pt = int(e.pt[idx])
    if pt != _PT_REG and pt != _PT_TCS:
        return _pf(rcx)
    if e.pending[idx] or e.modified[idx]:
        return SgxStatus.SGX_PAGE_NOT_DEBUGGABLE
    offset = rcx & _PAGE_MASK
    if pt == _PT_TCS and offset & 0xFF8 != _TCS_FLAGS_OFFSET:
        return gp0()
    if not _secs_of_child(m, idx).attributes & _ATTR_DEBUG:
        return gp0()
    page = epc.contents.get(idx)
    if page is None:
        if rbx == 0:
            return _SUCCESS
        page = bytearray(PAGE_SIZE)
        epc.contents[idx] = page
    _U64_LE.pack_into(page, offset, rbx)
    return _SUCCESS
