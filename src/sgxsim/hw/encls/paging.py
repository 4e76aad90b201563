"""EPC paging leaves: EPA, EBLOCK, ETRACK, EWB, ELDB/ELDU (and the ELDBC/ELDUC variants).

Models: Intel SDM Vol. 3D ch. 38 ENCLS[EPA], [EBLOCK], [ETRACK], [EWB], [ELDB/ELDU/ELDBC/ELDUC].
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from sgxsim.errors import ModelInvariantError
from sgxsim.hw import crypto
from sgxsim.hw.arch import (
    PAGE_SIZE,
    Fault,
    LeafResult,
    SgxStatus,
    gp0,
)
from sgxsim.hw.cpu import LogicalProcessor
from sgxsim.hw.encls.common import (
    _PAGE_MASK,
    _PT_REG,
    _PT_SECS,
    _PT_SS_FIRST,
    _PT_SS_REST,
    _PT_TCS,
    _PT_TRIM,
    _PT_VA,
    _SECINFO_FLAGS,
    _SUCCESS,
    _U64_LE,
    _VERSION_SHIFT,
    _ZERO_PAGE,
    _clear_entry,
    _pf,
    _read_pageinfo,
    _regs_ok,
    _secs_of_child,
    _set_entry,
    _store_page,
    _va_slot_read,
)
from sgxsim.hw.epc import Epc, Epcm, SecsState

if TYPE_CHECKING:
    from sgxsim.hw.machine import Machine

__all__ = [
    "eblock",
    "eldb",
    "eldbc",
    "eldu",
    "elduc",
    "epa",
    "etrack",
    "ewb",
    "mac_header",
]


#: Page types that belong to an enclave (have an ENCLAVESECS): the SECS's children.
_CHILD_PTS = frozenset({_PT_TCS, _PT_REG, _PT_TRIM, _PT_SS_FIRST, _PT_SS_REST})
#: PCMD: SECINFO.FLAGS, SECINFO reserved (56), ENCLAVEID, reserved (40), MAC (16).
_PCMD = struct.Struct("<Q56sQ40s16s")
#: [MODEL] 128-byte MAC header EWB/ELDU authenticate: SECINFO (64 bytes) | EID u64 |
#: PCMD reserved (40 bytes) | LINADDR u64 | 8 zero bytes. The SDM names the fields of its
#: MACHEADER but not their byte offsets.
_MAC_HEADER = struct.Struct("<64sQ40sQ8x")


def _page_bytes(epc: Epc, idx: int) -> bytes:
    page = epc.contents.get(idx)
    return _ZERO_PAGE if page is None else bytes(page)


def _secinfo_of_entry(e: Epcm, idx: int) -> int:
    """SECINFO.FLAGS describing EPCM entry ``idx`` (PT, RWX, PENDING, MODIFIED, PR)."""
    return (
        (int(e.pt[idx]) << 8)
        | int(e.rwx[idx])
        | (int(e.pending[idx]) << 3)
        | (int(e.modified[idx]) << 4)
        | (int(e.pr[idx]) << 5)
    )


def mac_header(secinfo64: bytes, eid: int, reserved40: bytes, linaddr: int) -> bytes:
    """The 128-byte MAC header EWB seals and ELDB/ELDU check ([MODEL] byte layout).

    Models: SDM EWB/ELDU TMP_HEADER {SECINFO, EID, RSVD, LINADDR}.
    """
    return _MAC_HEADER.pack(secinfo64, eid, reserved40, linaddr)


def _va_slot_write(epc: Epc, va_idx: int, offset: int, value: int) -> None:
    page = epc.contents.get(va_idx)
    if page is None:
        if value == 0:
            return
        page = bytearray(PAGE_SIZE)
        epc.contents[va_idx] = page
    _U64_LE.pack_into(page, offset, value)


def epa(m: Machine, lp: LogicalProcessor, rbx: int, rcx: int, rdx: int) -> LeafResult:
    """Turn a free EPC page into a Version Array page (512 zeroed 8-byte slots).

    Models: SDM ENCLS[EPA] (RBX = PT_VA, RCX = EPC page); order: RBX != PT_VA or RCX misaligned
    -> #GP, not EPC -> #PF, already valid -> #PF.
    Outcomes: SUCCESS, #GP(0), #PF(RCX).
    """
    _regs_ok(rbx, rcx, rdx)
    if rbx != _PT_VA or rcx & _PAGE_MASK:
        return gp0()
    idx = m.epc.index_of(rcx)
    if idx is None:
        return _pf(rcx)
    e = m.epc.epcm
    if e.valid[idx]:
        return _pf(rcx)
    m.epc.contents.pop(idx, None)
    _set_entry(e, idx, _PT_VA, 0, -1, 0)
    return _SUCCESS


def eblock(m: Machine, lp: LogicalProcessor, rbx: int, rcx: int, rdx: int) -> LeafResult:
    """Mark an enclave page BLOCKED (no new TLB translations) ahead of eviction.

    Models: SDM ENCLS[EBLOCK] (RCX = EPC page); order: alignment (#GP), EPC membership (#PF);
    invalid -> SGX_PG_INVLD; PT not in {REG, TCS, TRIM} -> SGX_PG_IS_SECS (SECS) or
    SGX_NOTBLOCKABLE (CF=1); already blocked -> SGX_BLKSTATE (CF=1); else BLOCKED := 1.
    [MODEL] the page is stamped with the enclave's current tracking epoch (``block_epoch``),
    which EWB compares against the epoch ETRACK advances.
    Outcomes: SUCCESS, SGX_PG_INVLD, SGX_PG_IS_SECS, SGX_NOTBLOCKABLE, SGX_BLKSTATE, #GP(0), #PF.
    """
    _regs_ok(rbx, rcx, rdx)
    if rcx & _PAGE_MASK:
        return gp0()
    idx = m.epc.index_of(rcx)
    if idx is None:
        return _pf(rcx)
    e = m.epc.epcm
    if not e.valid[idx]:
        return SgxStatus.SGX_PG_INVLD
    pt = int(e.pt[idx])
    if pt != _PT_REG and pt != _PT_TCS and pt != _PT_TRIM:
        return SgxStatus.SGX_PG_IS_SECS if pt == _PT_SECS else SgxStatus.SGX_NOTBLOCKABLE
    if e.blocked[idx]:
        return SgxStatus.SGX_BLKSTATE
    e.blocked[idx] = True
    e.block_epoch[idx] = _secs_of_child(m, idx).epoch
    return _SUCCESS


def etrack(m: Machine, lp: LogicalProcessor, rbx: int, rcx: int, rdx: int) -> LeafResult:
    """Start a new TLB-tracking cycle for an enclave.

    Models: SDM ENCLS[ETRACK] (RCX = SECS); order: alignment (#GP), EPC membership, VALID and
    PT_SECS (#PF); previous cycle incomplete -> SGX_PREV_TRK_INCMPL. [MODEL] (sgx-architecture.md
    §4.8): a cycle is incomplete while some processor that was inside the enclave at the last
    ETRACK has not exited (``track_waiting``); success advances ``epoch`` and makes every
    processor now inside a waiter.
    Outcomes: SUCCESS, SGX_PREV_TRK_INCMPL, #GP(0), #PF(RCX).
    """
    _regs_ok(rbx, rcx, rdx)
    if rcx & _PAGE_MASK:
        return gp0()
    idx = m.epc.index_of(rcx)
    if idx is None:
        return _pf(rcx)
    e = m.epc.epcm
    if not e.valid[idx] or e.pt[idx] != _PT_SECS:
        return _pf(rcx)
    state = m.epc.secs_state[idx]
    if state.track_waiting:
        return SgxStatus.SGX_PREV_TRK_INCMPL
    state.epoch += 1
    state.track_waiting = set(state.inside)
    return _SUCCESS


def _paging_operands(m: Machine, rbx: int, rcx: int, rdx: int) -> tuple[int, int] | Fault:
    """The operand checks EWB and ELDB/ELDU share, in the SDM's order.

    PAGEINFO (RBX) 32-byte aligned and the EPC page (RCX) 4 KiB aligned, else #GP(0); RCX in the
    EPC, else #PF(RCX); the VA slot (RDX) 8-byte aligned, else #GP(0); RDX in the EPC, else
    #PF(RDX). Returns the (page, VA page) indices.
    """
    _regs_ok(rbx, rcx, rdx)
    if rbx & 31 or rcx & _PAGE_MASK:
        return gp0()
    idx = m.epc.index_of(rcx)
    if idx is None:
        return _pf(rcx)
    if rdx & 7:
        return gp0()
    va_idx = m.epc.index_of(rdx)
    if va_idx is None:
        return _pf(rdx)
    return idx, va_idx


def ewb(m: Machine, lp: LogicalProcessor, rbx: int, rcx: int, rdx: int) -> LeafResult:
    """Evict an EPC page: encrypt it to PAGEINFO.SRCPGE, write its PCMD, version into the VA slot.

    Models: SDM ENCLS[EWB] (RBX = PAGEINFO{LINADDR=0, SECS=0, SRCPGE, PCMD}, RCX = EPC page,
    RDX = VA slot); order: RBX/RCX alignment, RCX in EPC, RDX alignment, RDX in EPC, RCX and RDX
    in one page (#GP), LINADDR/SECS non-zero (#GP), PCMD/SRCPGE alignment (#GP), RCX invalid
    (#PF), RDX page not a valid VA (#PF(RDX)); child pages: not BLOCKED -> SGX_PAGE_NOT_BLOCKED,
    tracking incomplete -> SGX_NOT_TRACKED ([MODEL]: no ETRACK since the EBLOCK, or processors
    of the last ETRACK still inside); SECS with children -> SGX_CHILD_PRESENT; VA pages evict
    freely. Sealing: ``crypto.ewb_seal(CR_BASE_PK, version, header, page)`` with a fresh
    version ([MODEL] ``m.next_paging_version() << 3``: unique, bits 2:0 clear); ciphertext to
    SRCPGE; PCMD {SECINFO(PT, RWX, PENDING, MODIFIED, PR), ENCLAVEID, MAC}; PAGEINFO.LINADDR :=
    ENCLAVEADDRESS; SGX_VA_SLOT_OCCUPIED (CF=1, the eviction still completes) when the slot was
    non-zero; EPCM entry invalidated.
    [MODEL] an evicted SECS's hidden state moves to ``m.evicted_secs[version]``, and the suspended
    thread of an evicted TCS is kept as ``m.tcs_threads[-version]`` (ELDU moves it back under the
    TCS's new page index), so reusing the freed EPC page cannot disturb it.
    Outcomes: SUCCESS, SGX_VA_SLOT_OCCUPIED, SGX_PAGE_NOT_BLOCKED, SGX_NOT_TRACKED,
    SGX_CHILD_PRESENT, #GP(0), #PF(RCX), #PF(RDX).
    """
    operands = _paging_operands(m, rbx, rcx, rdx)
    if isinstance(operands, Fault):
        return operands
    idx, va_idx = operands
    epc = m.epc
    if va_idx == idx:
        return gp0()
    linaddr_field, srcpge, pcmd_addr, secs_field = _read_pageinfo(m, rbx)
    if linaddr_field != 0 or secs_field != 0:
        return gp0()
    if pcmd_addr & 127 or srcpge & _PAGE_MASK:
        return gp0()
    e = epc.epcm
    if not e.valid[idx]:
        return _pf(rcx)
    if not e.valid[va_idx] or e.pt[va_idx] != _PT_VA:
        return _pf(rdx)
    pt = int(e.pt[idx])
    state: SecsState | None = None
    if pt in _CHILD_PTS:
        state = _secs_of_child(m, idx)
        if not e.blocked[idx]:
            return SgxStatus.SGX_PAGE_NOT_BLOCKED
        if int(e.block_epoch[idx]) >= state.epoch or state.track_waiting:
            return SgxStatus.SGX_NOT_TRACKED
        header_eid = pcmd_eid = state.eid
    elif pt == _PT_SECS:
        state = epc.secs_state[idx]
        if state.child_count or state.virt_child_count:
            return SgxStatus.SGX_CHILD_PRESENT
        header_eid, pcmd_eid = 0, state.eid
    else:  # PT_VA
        header_eid = pcmd_eid = 0
    linaddr = int(e.linaddr[idx])
    flags = _secinfo_of_entry(e, idx)
    secinfo64 = _SECINFO_FLAGS.pack(flags) + _ZERO_PAGE[:56]
    version = m.next_paging_version() << _VERSION_SHIFT
    header = mac_header(secinfo64, header_eid, _ZERO_PAGE[:40], linaddr)
    ciphertext, mac = crypto.ewb_seal(m.cr_base_pk, version, header, _page_bytes(epc, idx))
    m.dram.write(srcpge, ciphertext)
    m.dram.write(pcmd_addr, _PCMD.pack(flags, _ZERO_PAGE[:56], pcmd_eid, _ZERO_PAGE[:40], mac))
    m.dram.write(rbx, _U64_LE.pack(linaddr))
    slot = rdx & _PAGE_MASK
    result = SgxStatus.SGX_VA_SLOT_OCCUPIED if _va_slot_read(epc, va_idx, slot) else _SUCCESS
    _va_slot_write(epc, va_idx, slot, version)
    if pt == _PT_SECS:
        m.evicted_secs[version] = epc.secs_state.pop(idx)
    elif state is not None:
        state.child_count -= 1
    thread = m.tcs_threads.pop(idx, None)
    if thread is not None:
        m.tcs_threads[-version] = thread
    epc.contents.pop(idx, None)
    _clear_entry(e, idx)
    return result


def _eld(m: Machine, rbx: int, rcx: int, rdx: int, blocked: bool) -> LeafResult:
    """ELDB/ELDU body; ``blocked`` selects ELDB (child pages come back BLOCKED)."""
    operands = _paging_operands(m, rbx, rcx, rdx)
    if isinstance(operands, Fault):
        return operands
    idx, va_idx = operands
    epc = m.epc
    linaddr, srcpge, pcmd_addr, secs_addr = _read_pageinfo(m, rbx)
    if pcmd_addr & 127 or srcpge & _PAGE_MASK:
        return gp0()
    e = epc.epcm
    if e.valid[idx]:
        return _pf(rcx)
    if not e.valid[va_idx] or e.pt[va_idx] != _PT_VA:
        return _pf(rdx)
    raw_pcmd = m.dram.read(pcmd_addr, _PCMD.size)
    flags, _, _, pcmd_reserved, mac = _PCMD.unpack(raw_pcmd)
    pt = (flags >> 8) & 0xFF
    state: SecsState | None = None
    sidx = -1
    if pt in (_PT_REG, _PT_TCS, _PT_TRIM):
        if secs_addr & _PAGE_MASK:
            return gp0()
        found = epc.index_of(secs_addr)
        if found is None:
            return _pf(secs_addr)
        if not e.valid[found] or e.pt[found] != _PT_SECS:
            return _pf(secs_addr)
        sidx = found
        state = epc.secs_state[sidx]
        eid = state.eid
    else:
        eid = 0
        if secs_addr != 0:
            return gp0()
    header = mac_header(raw_pcmd[:64], eid, pcmd_reserved, linaddr)
    slot = rdx & _PAGE_MASK
    version = _va_slot_read(epc, va_idx, slot)
    ciphertext = m.dram.read(srcpge, PAGE_SIZE)
    plain = crypto.eldu_open(m.cr_base_pk, version, header, ciphertext, mac)
    if plain is None:
        return SgxStatus.SGX_MAC_COMPARE_FAIL
    if pt == _PT_SECS:
        restored = m.evicted_secs.pop(version, None)
        if not isinstance(restored, SecsState):
            raise ModelInvariantError(f"ELDU of a SECS sealed with version {version}: no hidden state kept")
        epc.secs_state[idx] = restored
    _va_slot_write(epc, va_idx, slot, 0)
    _store_page(epc, idx, plain)
    _set_entry(e, idx, pt, flags & 0x7, sidx, linaddr)
    e.pending[idx] = bool(flags & 0x8)
    e.modified[idx] = bool(flags & 0x10)
    e.pr[idx] = bool(flags & 0x20)
    if state is not None:
        state.child_count += 1
        if blocked:
            e.blocked[idx] = True
            e.block_epoch[idx] = state.epoch
    thread = m.tcs_threads.pop(-version, None)
    if thread is not None:
        m.tcs_threads[idx] = thread
    return _SUCCESS


def eldu(m: Machine, lp: LogicalProcessor, rbx: int, rcx: int, rdx: int) -> LeafResult:
    """Load an evicted page back into the EPC, unblocked.

    Models: SDM ENCLS[ELDU] (RBX = PAGEINFO{LINADDR, SRCPGE, PCMD, SECS}, RCX = free EPC page,
    RDX = VA slot); order: RBX/RCX alignment, RCX in EPC, RDX alignment, RDX in EPC, PCMD/SRCPGE
    alignment, RCX valid (#PF), RDX not a valid VA (#PF(RDX)); for child types (PCMD PT in
    {REG, TCS, TRIM}) PAGEINFO.SECS alignment (#GP), in EPC and a valid PT_SECS (#PF(SECS)), its
    EID binds the MAC; for SECS/VA PAGEINFO.SECS must be 0 (#GP). The page is opened with
    ``crypto.eldu_open`` under the *current* CR_BASE_PK and the slot's version: failure ->
    SGX_MAC_COMPARE_FAIL (e.g. after EUPDATESVN refreshed the key). Success zeroes the slot and
    restores the EPCM entry from PCMD.SECINFO and LINADDR; a SECS gets its hidden state back
    from ``m.evicted_secs``; the SECS child count rises by one for child pages.
    Outcomes: SUCCESS, SGX_MAC_COMPARE_FAIL, #GP(0), #PF(RCX), #PF(RDX), #PF(PAGEINFO.SECS).
    Differs: [MODEL] a PAGEINFO.SECS that is not a valid SECS raises #PF(SECS) (the SDM reads its
    EID without saying what an invalid one gives).
    """
    return _eld(m, rbx, rcx, rdx, blocked=False)


def eldb(m: Machine, lp: LogicalProcessor, rbx: int, rcx: int, rdx: int) -> LeafResult:
    """As :func:`eldu`, but a child page comes back BLOCKED (stamped with the current epoch).

    Models: SDM ENCLS[ELDB]. Outcomes: as ELDU.
    """
    return _eld(m, rbx, rcx, rdx, blocked=True)


def elduc(m: Machine, lp: LogicalProcessor, rbx: int, rcx: int, rdx: int) -> LeafResult:
    """ELDUC: ELDU whose concurrency conflicts return SGX_EPC_PAGE_CONFLICT (none arise here).

    Models: SDM ENCLS[ELDUC] (EAX = 13H). Outcomes: as ELDU.
    """
    return _eld(m, rbx, rcx, rdx, blocked=False)


def eldbc(m: Machine, lp: LogicalProcessor, rbx: int, rcx: int, rdx: int) -> LeafResult:
    """ELDBC: ELDB whose concurrency conflicts return SGX_EPC_PAGE_CONFLICT (none arise here).

    Models: SDM ENCLS[ELDBC] (EAX = 12H). Outcomes: as ELDB.
    """
    return _eld(m, rbx, rcx, rdx, blocked=True)
