"""Constants and small helpers shared by the ENCLS leaves (operand reads, EPCM entry updates)."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from sgxsim.errors import InvalidArgument, ModelInvariantError
from sgxsim.hw.arch import (
    PAGE_SIZE,
    SECINFO_FLAGS_ARCH_RESERVED_MASK,
    Attributes,
    EnclsLeaf,
    Fault,
    PageType,
    PfError,
    SgxStatus,
    Tcs,
    pf,
)
from sgxsim.hw.epc import Epc, Epcm, SecsState

if TYPE_CHECKING:
    from sgxsim.hw.machine import Machine

__all__ = [
    "SGX2_LEAVES",
]


_U64 = (1 << 64) - 1
_PAGE_MASK = PAGE_SIZE - 1
_ZERO_PAGE = bytes(PAGE_SIZE)
_PT_SECS = int(PageType.PT_SECS)
_PT_TCS = int(PageType.PT_TCS)
_PT_REG = int(PageType.PT_REG)
_PT_VA = int(PageType.PT_VA)
_PT_TRIM = int(PageType.PT_TRIM)
_PT_SS_FIRST = int(PageType.PT_SS_FIRST)
_PT_SS_REST = int(PageType.PT_SS_REST)
_SUCCESS = SgxStatus.SUCCESS
#: [MODEL] Error code of a #PF an ENCLS EPCM check raises: present + SGX (bit 15).
_PF_EPCM = int(PfError.P | PfError.SGX)
_TCS_FLAGS_OFFSET = Tcs.offsetof("flags")
_ATTR_DEBUG = int(Attributes.DEBUG)
_PAGEINFO = struct.Struct("<QQQQ")
_SECINFO_FLAGS = struct.Struct("<Q")
_U64_LE = struct.Struct("<Q")
#: [MODEL] EWB versions are CR_PAGING_VERSION << 3: EDBGRD ignores bits 2:0 of a VA slot, so a
#: version must have them clear to read as occupied.
_VERSION_SHIFT = 3


def _regs_ok(rbx: int, rcx: int, rdx: int) -> None:
    """Raise InvalidArgument unless the three operands are 64-bit register values."""
    for name, value in (("rbx", rbx), ("rcx", rcx), ("rdx", rdx)):
        if type(value) is not int or not 0 <= value <= _U64:
            raise InvalidArgument(f"ENCLS operand {name}={value!r} is not a 64-bit register value")


def _pf(addr: int) -> Fault:
    return pf(addr, _PF_EPCM)


def _read_pageinfo(m: Machine, addr: int) -> tuple[int, int, int, int]:
    """PAGEINFO at ``addr``: (LINADDR, SRCPGE, SECINFO/PCMD, SECS)."""
    linaddr, srcpge, secinfo, secs = _PAGEINFO.unpack(m.dram.read(addr, _PAGEINFO.size))
    return linaddr, srcpge, secinfo, secs


def _read_secinfo(m: Machine, addr: int) -> tuple[int, bool]:
    """(FLAGS, reserved-fields-are-zero) of the SECINFO at ``addr``."""
    raw = m.dram.read(addr, 64)
    flags = _SECINFO_FLAGS.unpack_from(raw)[0]
    ok = not flags & SECINFO_FLAGS_ARCH_RESERVED_MASK and raw[8:] == _ZERO_PAGE[:56]
    return flags, ok


def _store_page(epc: Epc, idx: int, data: bytes | bytearray) -> None:
    """Set a page's contents; an all-zero page stores nothing."""
    if data == _ZERO_PAGE:
        epc.contents.pop(idx, None)
    else:
        epc.contents[idx] = bytearray(data)


def _set_entry(e: Epcm, idx: int, pt: int, rwx: int, secs: int, linaddr: int) -> None:
    """Make EPCM entry ``idx`` valid with the given fields and all state bits clear."""
    e.pt[idx] = pt
    e.rwx[idx] = rwx
    e.secs[idx] = secs
    e.linaddr[idx] = linaddr
    e.blocked[idx] = False
    e.pending[idx] = False
    e.modified[idx] = False
    e.pr[idx] = False
    e.block_epoch[idx] = 0
    e.valid[idx] = True


def _clear_entry(e: Epcm, idx: int) -> None:
    """Invalidate EPCM entry ``idx`` and zero every field (as a reset leaves it)."""
    e.valid[idx] = False
    e.blocked[idx] = False
    e.pending[idx] = False
    e.modified[idx] = False
    e.pr[idx] = False
    e.pt[idx] = 0
    e.rwx[idx] = 0
    e.secs[idx] = 0
    e.linaddr[idx] = 0
    e.block_epoch[idx] = 0


def _secs_of_child(m: Machine, idx: int) -> SecsState:
    """Hidden state of the enclave owning valid child page ``idx``."""
    sidx = int(m.epc.epcm.secs[idx])
    state = m.epc.secs_state.get(sidx)
    if state is None:
        raise ModelInvariantError(f"EPC page {idx} is a child of {sidx}, which has no SECS state")
    return state


def _va_slot_read(epc: Epc, va_idx: int, offset: int) -> int:
    page = epc.contents.get(va_idx)
    if page is None:
        return 0
    return int(_U64_LE.unpack_from(page, offset)[0])


#: Leaves that need SGX2 (CPUID.(12H,0).EAX[1]); #GP(0) on an SGX1-only machine.
SGX2_LEAVES: frozenset[int] = frozenset({int(EnclsLeaf.EAUG), int(EnclsLeaf.EMODPR), int(EnclsLeaf.EMODT)})
