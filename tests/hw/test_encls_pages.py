"""ENCLS leaves on built enclaves: EREMOVE, EDBGRD/EDBGWR, EPA, EBLOCK, ETRACK, EWB, ELDB/ELDU.

Outcomes per sgx-architecture.md §4.5-§4.10, each with its effects on the EPCM, the SECS state
and the pages; validate_epcm must hold after every step.
"""

from __future__ import annotations

import struct

import pytest

from sgxsim.hw import crypto
from sgxsim.hw.arch import (
    PAGE_SIZE,
    EnclsLeaf,
    Fault,
    LeafResult,
    PageType,
    Pcmd,
    SgxStatus,
    Tcs,
    gp0,
    secinfo_flags,
)
from sgxsim.hw.encls import SGX_TCS_LIMIT, validate_epcm
from sgxsim.hw.machine import Machine

from .helpers import (
    RW,
    RWX,
    Backing,
    Enclave,
    EpcPool,
    build_enclave,
    check,
    eldu_page,
    epa_page,
    evict,
    put_pageinfo,
    put_secinfo,
    small_machine,
)

GP = gp0()
DRAM_ADDR = 0x20_0000


def pf(addr: int) -> Fault:
    return Fault(14, 0x8001, addr)


def enter(m: Machine, encl: Enclave, cpu: int) -> None:
    """Put ``cpu`` inside ``encl`` the way EENTER leaves the tracking state."""
    encl.state.inside[cpu] = encl.state.epoch
    m.cpus[cpu].active_secs = encl.secs_index


def leave(m: Machine, encl: Enclave, cpu: int) -> None:
    """Take ``cpu`` out of ``encl`` the way EEXIT/AEX leave the tracking state."""
    encl.state.inside.pop(cpu, None)
    encl.state.track_waiting.discard(cpu)
    m.cpus[cpu].active_secs = None


@pytest.fixture
def m() -> Machine:
    return small_machine()


@pytest.fixture
def encl(m: Machine) -> Enclave:
    return build_enclave(m)


# --------------------------------------------------------------------------------------------
# EREMOVE


def test_eremove_operand_faults(m: Machine, encl: Enclave) -> None:
    assert m.encls(0, EnclsLeaf.EREMOVE, 0, encl.phys(0x2000) + 0x10) == GP
    assert m.encls(0, EnclsLeaf.EREMOVE, 0, DRAM_ADDR) == pf(DRAM_ADDR)


def test_eremove_invalid_page_is_success(m: Machine) -> None:
    free = EpcPool(m).alloc()
    assert m.encls(0, EnclsLeaf.EREMOVE, 0, free) == SgxStatus.SUCCESS
    assert validate_epcm(m) == []


def test_eremove_child_then_secs(m: Machine, encl: Enclave) -> None:
    secs_idx = encl.secs_index
    assert m.encls(0, EnclsLeaf.EREMOVE, 0, encl.secs_phys) == SgxStatus.SGX_CHILD_PRESENT
    data_idx = encl.index(0x2000)
    assert data_idx in m.epc.contents
    check(m.encls(0, EnclsLeaf.EREMOVE, 0, encl.phys(0x2000)))
    assert not m.epc.epcm.valid[data_idx] and data_idx not in m.epc.contents
    assert m.epc.epcm.entry(data_idx) == {**m.epc.epcm.entry(data_idx), "r": False, "w": False, "x": False}
    assert encl.state.child_count == 2
    assert validate_epcm(m) == []
    for off in (0, 0x1000):
        check(m.encls(0, EnclsLeaf.EREMOVE, 0, encl.phys(off)))
    assert m.epc.secs_state[secs_idx].child_count == 0
    check(m.encls(0, EnclsLeaf.EREMOVE, 0, encl.secs_phys))
    assert secs_idx not in m.epc.secs_state and not m.epc.epcm.valid.any()
    assert validate_epcm(m) == []


def test_eremove_secs_with_virtual_children(m: Machine) -> None:
    encl = build_enclave(m, [])
    encl.state.virt_child_count = 1
    assert m.encls(0, EnclsLeaf.EREMOVE, 0, encl.secs_phys) == SgxStatus.SGX_CHILD_PRESENT
    encl.state.virt_child_count = 0
    assert m.encls(0, EnclsLeaf.EREMOVE, 0, encl.secs_phys) == SgxStatus.SUCCESS


def test_eremove_va_page(m: Machine) -> None:
    va = epa_page(m, EpcPool(m))
    check(m.encls(0, EnclsLeaf.EREMOVE, 0, va))
    assert not m.epc.epcm.valid.any()


def test_eremove_enclave_active(m: Machine, encl: Enclave) -> None:
    enter(m, encl, 2)
    assert m.encls(0, EnclsLeaf.EREMOVE, 0, encl.phys(0x2000)) == SgxStatus.SGX_ENCLAVE_ACT
    assert m.encls(0, EnclsLeaf.EREMOVE, 0, encl.phys(0)) == SgxStatus.SGX_ENCLAVE_ACT
    assert m.epc.epcm.valid[encl.index(0x2000)]
    assert validate_epcm(m) == []
    # A trimmed page that was EACCEPTed (MODIFIED = 0) can go even while threads run.
    idx = encl.index(0x2000)
    check(m.encls(0, EnclsLeaf.EMODT, put_secinfo(m, secinfo_flags(PageType.PT_TRIM)), encl.phys(0x2000)))
    assert m.encls(0, EnclsLeaf.EREMOVE, 0, encl.phys(0x2000)) == SgxStatus.SGX_ENCLAVE_ACT
    m.epc.epcm.modified[idx] = False  # what EACCEPT(TRIM | MODIFIED) does
    assert m.encls(0, EnclsLeaf.EREMOVE, 0, encl.phys(0x2000)) == SgxStatus.SUCCESS
    assert encl.state.child_count == 2
    leave(m, encl, 2)
    check(m.encls(0, EnclsLeaf.EREMOVE, 0, encl.phys(0x1000)))
    assert validate_epcm(m) == []


def test_eremove_drops_tcs_thread(m: Machine, encl: Enclave) -> None:
    idx = encl.index(0)
    m.tcs_threads[idx] = object()
    check(m.encls(0, EnclsLeaf.EREMOVE, 0, encl.phys(0)))
    assert idx not in m.tcs_threads


# --------------------------------------------------------------------------------------------
# EDBGRD / EDBGWR


def _rd(m: Machine, addr: int) -> object:
    result = m.encls(0, EnclsLeaf.EDBGRD, 0, addr)
    return m.cpus[0].encls_rbx if result == SgxStatus.SUCCESS else result


def test_edbgrd_edbgwr_debug_enclave() -> None:
    m = small_machine()
    encl = build_enclave(m, debug=True)
    data = encl.phys(0x2000)
    assert _rd(m, data) == struct.unpack("<Q", b"sgxsim t")[0]
    check(m.encls(0, EnclsLeaf.EDBGWR, 0x1122334455667788, data + 0x18))
    assert _rd(m, data + 0x18) == 0x1122334455667788
    assert m.epc.read(encl.index(0x2000), 0x18, 8) == (0x1122334455667788).to_bytes(8, "little")
    # EDBGWR into a page that holds nothing yet.
    ssa = encl.phys(0x1000)
    check(m.encls(0, EnclsLeaf.EDBGWR, 7, ssa + 0xFF8))
    assert _rd(m, ssa + 0xFF8) == 7
    # TCS: reads below SGX_TCS_LIMIT, writes only to FLAGS.
    tcs = encl.phys(0)
    assert _rd(m, tcs + 16) == 0x1000  # OSSA
    assert _rd(m, tcs + SGX_TCS_LIMIT) == GP
    check(m.encls(0, EnclsLeaf.EDBGWR, 1, tcs + 8))
    assert Tcs.unpack(m.epc.read(encl.index(0))).flags == 1
    assert m.encls(0, EnclsLeaf.EDBGWR, 1, tcs + 16) == GP
    assert validate_epcm(m) == []


def test_edbg_outcomes() -> None:
    m = small_machine()
    encl = build_enclave(m, debug=True)
    prod = build_enclave(m, base=1 << 41, pool=encl.pool)
    for leaf in (EnclsLeaf.EDBGRD, EnclsLeaf.EDBGWR):
        assert m.encls(0, leaf, 0, encl.phys(0x2000) + 4) == GP
        assert m.encls(0, leaf, 0, DRAM_ADDR) == pf(DRAM_ADDR)
        free = encl.pool.alloc()
        assert m.encls(0, leaf, 0, free) == pf(free)
        assert m.encls(0, leaf, 0, encl.secs_phys) == pf(encl.secs_phys)
        # A production enclave's pages are not debuggable: #GP.
        assert m.encls(0, leaf, 0, prod.phys(0x2000)) == GP
    va = epa_page(m, encl.pool)
    assert m.encls(0, EnclsLeaf.EDBGWR, 0, va) == pf(va)
    assert _rd(m, va) == 0
    # PENDING (EAUG) and MODIFIED (EMODT) pages: SGX_PAGE_NOT_DEBUGGABLE.
    aug = encl.pool.alloc()
    check(m.encls(0, EnclsLeaf.EAUG, put_pageinfo(m, encl.base + 0x3000, 0, 0, encl.secs_phys), aug))
    assert m.encls(0, EnclsLeaf.EDBGRD, 0, aug) == SgxStatus.SGX_PAGE_NOT_DEBUGGABLE
    assert m.encls(0, EnclsLeaf.EDBGWR, 0, aug) == SgxStatus.SGX_PAGE_NOT_DEBUGGABLE
    # A REG page changed to TCS is MODIFIED until EACCEPT; NOT_DEBUGGABLE is reported before the
    # TCS offset limit is checked.
    check(m.encls(0, EnclsLeaf.EMODT, put_secinfo(m, secinfo_flags(PageType.PT_TCS)), encl.phys(0x1000)))
    assert m.encls(0, EnclsLeaf.EDBGRD, 0, encl.phys(0x1000)) == SgxStatus.SGX_PAGE_NOT_DEBUGGABLE
    assert m.encls(0, EnclsLeaf.EDBGRD, 0, encl.phys(0x1000) + 0x800) == SgxStatus.SGX_PAGE_NOT_DEBUGGABLE
    # A trimmed page is no longer REG/TCS/VA: #PF.
    check(m.encls(0, EnclsLeaf.EMODT, put_secinfo(m, secinfo_flags(PageType.PT_TRIM)), encl.phys(0x2000)))
    assert m.encls(0, EnclsLeaf.EDBGRD, 0, encl.phys(0x2000)) == pf(encl.phys(0x2000))


def test_edbgrd_va_slot_occupancy() -> None:
    m = small_machine()
    encl = build_enclave(m, debug=True)
    va = epa_page(m, encl.pool)
    result, _ = evict(m, encl.phys(0x2000), va + 16, secs_phys=encl.secs_phys)
    check(result)
    assert _rd(m, va + 16) == (1 << 64) - 1
    assert _rd(m, va + 8) == 0


# --------------------------------------------------------------------------------------------
# EPA


def test_epa(m: Machine) -> None:
    pool = EpcPool(m)
    page = pool.alloc()
    assert m.encls(0, EnclsLeaf.EPA, int(PageType.PT_REG), page) == GP
    assert m.encls(0, EnclsLeaf.EPA, int(PageType.PT_VA), page + 8) == GP
    assert m.encls(0, EnclsLeaf.EPA, int(PageType.PT_VA), DRAM_ADDR) == pf(DRAM_ADDR)
    # RBX is checked before RCX's EPC membership.
    assert m.encls(0, EnclsLeaf.EPA, 0, DRAM_ADDR) == GP
    check(m.encls(0, EnclsLeaf.EPA, int(PageType.PT_VA), page))
    idx = m.epc.index_of(page)
    assert idx is not None
    entry = m.epc.epcm.entry(idx)
    assert entry["valid"] and entry["pt"] == PageType.PT_VA and entry["linaddr"] == 0 and entry["secs"] == -1
    assert m.epc.read(idx) == bytes(PAGE_SIZE)
    assert m.encls(0, EnclsLeaf.EPA, int(PageType.PT_VA), page) == pf(page)
    assert validate_epcm(m) == []


# --------------------------------------------------------------------------------------------
# EBLOCK / ETRACK


def test_eblock_outcomes(m: Machine, encl: Enclave) -> None:
    va = epa_page(m, encl.pool)
    free = encl.pool.alloc()
    assert m.encls(0, EnclsLeaf.EBLOCK, 0, encl.phys(0x1000) + 8) == GP
    assert m.encls(0, EnclsLeaf.EBLOCK, 0, DRAM_ADDR) == pf(DRAM_ADDR)
    assert m.encls(0, EnclsLeaf.EBLOCK, 0, free) == SgxStatus.SGX_PG_INVLD
    assert m.encls(0, EnclsLeaf.EBLOCK, 0, encl.secs_phys) == SgxStatus.SGX_PG_IS_SECS
    assert m.encls(0, EnclsLeaf.EBLOCK, 0, va) == SgxStatus.SGX_NOTBLOCKABLE
    encl.state.epoch = 5
    check(m.encls(0, EnclsLeaf.EBLOCK, 0, encl.phys(0x1000)))
    idx = encl.index(0x1000)
    assert m.epc.epcm.blocked[idx] and m.epc.epcm.block_epoch[idx] == 5
    assert m.encls(0, EnclsLeaf.EBLOCK, 0, encl.phys(0x1000)) == SgxStatus.SGX_BLKSTATE
    check(m.encls(0, EnclsLeaf.EBLOCK, 0, encl.phys(0)))  # TCS pages are blockable
    check(m.encls(0, EnclsLeaf.EMODT, put_secinfo(m, secinfo_flags(PageType.PT_TRIM)), encl.phys(0x2000)))
    check(m.encls(0, EnclsLeaf.EBLOCK, 0, encl.phys(0x2000)))  # and TRIM pages
    assert validate_epcm(m) == []


def test_etrack_outcomes(m: Machine, encl: Enclave) -> None:
    assert m.encls(0, EnclsLeaf.ETRACK, 0, encl.secs_phys + 8) == GP
    assert m.encls(0, EnclsLeaf.ETRACK, 0, DRAM_ADDR) == pf(DRAM_ADDR)
    assert m.encls(0, EnclsLeaf.ETRACK, 0, encl.phys(0x1000)) == pf(encl.phys(0x1000))
    free = encl.pool.alloc()
    assert m.encls(0, EnclsLeaf.ETRACK, 0, free) == pf(free)
    check(m.encls(0, EnclsLeaf.ETRACK, 0, encl.secs_phys))
    assert encl.state.epoch == 1 and not encl.state.track_waiting
    # Nobody inside: the cycle completes at once, so another ETRACK succeeds.
    check(m.encls(0, EnclsLeaf.ETRACK, 0, encl.secs_phys))
    enter(m, encl, 1)
    enter(m, encl, 3)
    check(m.encls(0, EnclsLeaf.ETRACK, 0, encl.secs_phys))
    assert encl.state.epoch == 3 and encl.state.track_waiting == {1, 3}
    assert m.encls(0, EnclsLeaf.ETRACK, 0, encl.secs_phys) == SgxStatus.SGX_PREV_TRK_INCMPL
    leave(m, encl, 1)
    assert m.encls(0, EnclsLeaf.ETRACK, 0, encl.secs_phys) == SgxStatus.SGX_PREV_TRK_INCMPL
    leave(m, encl, 3)
    check(m.encls(0, EnclsLeaf.ETRACK, 0, encl.secs_phys))
    assert encl.state.epoch == 4


# --------------------------------------------------------------------------------------------
# EWB


def _ewb_raw(
    m: Machine,
    epc: int,
    va_slot: int,
    *,
    rbx_off: int = 0,
    linaddr: int = 0,
    secs: int = 0,
    pcmd_off: int = 0,
    src_off: int = 0,
) -> object:
    page = m.dram.alloc_page()
    m.dram.write(
        page + rbx_off,
        struct.pack("<QQQQ", linaddr, m.dram.alloc_page() + src_off, m.dram.alloc_page() + pcmd_off, secs),
    )
    return m.encls(0, EnclsLeaf.EWB, page + rbx_off, epc, va_slot)


def test_ewb_operand_checks(m: Machine, encl: Enclave) -> None:
    va = epa_page(m, encl.pool)
    page = encl.phys(0x2000)
    check(m.encls(0, EnclsLeaf.EBLOCK, 0, page))
    check(m.encls(0, EnclsLeaf.ETRACK, 0, encl.secs_phys))
    free = encl.pool.alloc()
    assert _ewb_raw(m, page, va, rbx_off=16) == GP
    assert _ewb_raw(m, page + 8, va) == GP
    assert _ewb_raw(m, DRAM_ADDR, va) == pf(DRAM_ADDR)
    assert _ewb_raw(m, page, va + 4) == GP
    assert _ewb_raw(m, page, DRAM_ADDR) == pf(DRAM_ADDR)
    assert _ewb_raw(m, page, page + 8) == GP  # EPC page and VA slot in one page
    assert _ewb_raw(m, page, va, linaddr=0x1000) == GP
    assert _ewb_raw(m, page, va, secs=encl.secs_phys) == GP
    assert _ewb_raw(m, page, va, pcmd_off=64) == GP
    assert _ewb_raw(m, page, va, src_off=128) == GP
    assert _ewb_raw(m, free, va) == pf(free)
    assert _ewb_raw(m, page, encl.phys(0x1000)) == pf(encl.phys(0x1000))  # not a VA page
    assert _ewb_raw(m, page, free + 8) == pf(free + 8)  # invalid VA page
    # Order: RCX outside the EPC (#PF) wins over a misaligned VA slot (#GP).
    assert _ewb_raw(m, DRAM_ADDR, va + 4) == pf(DRAM_ADDR)
    # The page was never evicted by the failing attempts.
    assert m.epc.epcm.valid[encl.index(0x2000)] and encl.state.child_count == 3
    assert validate_epcm(m) == []


def test_ewb_blocking_and_tracking(m: Machine, encl: Enclave) -> None:
    va = epa_page(m, encl.pool)
    page = encl.phys(0x2000)
    assert evict(m, page, va, block=False)[0] == SgxStatus.SGX_PAGE_NOT_BLOCKED
    check(m.encls(0, EnclsLeaf.EBLOCK, 0, page))
    assert evict(m, page, va, block=False)[0] == SgxStatus.SGX_NOT_TRACKED  # no ETRACK yet
    enter(m, encl, 2)
    check(m.encls(0, EnclsLeaf.ETRACK, 0, encl.secs_phys))
    assert evict(m, page, va, block=False)[0] == SgxStatus.SGX_NOT_TRACKED  # CPU 2 still inside
    leave(m, encl, 2)
    result, backing = evict(m, page, va, block=False)
    assert result == SgxStatus.SUCCESS
    assert backing.linaddr == encl.base + 0x2000
    idx = encl.index(0x2000)
    assert not m.epc.epcm.valid[idx] and idx not in m.epc.contents
    assert encl.state.child_count == 2
    assert validate_epcm(m) == []


def test_ewb_writes_pcmd_ciphertext_and_version(m: Machine, encl: Enclave) -> None:
    va = epa_page(m, encl.pool)
    plain = m.epc.read(encl.index(0x2000))
    result, backing = evict(m, encl.phys(0x2000), va + 8 * 7, secs_phys=encl.secs_phys)
    check(result)
    pcmd = Pcmd.unpack(m.dram.read(backing.pcmd, Pcmd.SIZE))
    assert pcmd.secinfo.flags == secinfo_flags(PageType.PT_REG, RWX)
    assert pcmd.enclave_id == encl.state.eid and pcmd.reserved == bytes(40)
    assert m.dram.read(backing.srcpge, PAGE_SIZE) != plain
    va_idx = m.epc.index_of(va)
    assert va_idx is not None
    version = struct.unpack("<Q", m.epc.read(va_idx, 56, 8))[0]
    assert version != 0
    header = _header(secinfo_flags(PageType.PT_REG, RWX), encl.state.eid, encl.base + 0x2000)
    assert (
        crypto.eldu_open(m.cr_base_pk, version, header, m.dram.read(backing.srcpge, PAGE_SIZE), pcmd.mac)
        == plain
    )


def _header(flags: int, eid: int, linaddr: int) -> bytes:
    # The [MODEL] MAC header of hw.encls: SECINFO(64) | EID | reserved(40) | LINADDR | 8 zero bytes.
    return struct.pack("<Q56sQ40sQ8x", flags, bytes(56), eid, bytes(40), linaddr)


def test_ewb_va_slot_occupied_still_evicts(m: Machine, encl: Enclave) -> None:
    va = epa_page(m, encl.pool)
    check(evict(m, encl.phys(0x2000), va, secs_phys=encl.secs_phys)[0])
    va_idx = m.epc.index_of(va)
    assert va_idx is not None
    first = struct.unpack("<Q", m.epc.read(va_idx, 0, 8))[0]
    result, _ = evict(m, encl.phys(0x1000), va, secs_phys=encl.secs_phys)
    assert result == SgxStatus.SGX_VA_SLOT_OCCUPIED
    assert not m.epc.epcm.valid[encl.index(0x1000)]
    assert struct.unpack("<Q", m.epc.read(va_idx, 0, 8))[0] > first
    assert encl.state.child_count == 1
    assert validate_epcm(m) == []


def test_ewb_secs_and_va_pages(m: Machine, encl: Enclave) -> None:
    va = epa_page(m, encl.pool)
    assert evict(m, encl.secs_phys, va, block=False)[0] == SgxStatus.SGX_CHILD_PRESENT
    for i, off in enumerate((0, 0x1000, 0x2000)):
        check(evict(m, encl.phys(off), va + 8 * (i + 1), secs_phys=encl.secs_phys)[0])
    eid = encl.state.eid
    secs_idx = encl.secs_index
    result, backing = evict(m, encl.secs_phys, va + 8 * 10, block=False)
    check(result)
    assert secs_idx not in m.epc.secs_state and len(m.evicted_secs) == 1
    pcmd = Pcmd.unpack(m.dram.read(backing.pcmd, Pcmd.SIZE))
    assert pcmd.enclave_id == eid and pcmd.secinfo.page_type == PageType.PT_SECS
    # A VA page can be evicted into another VA page.
    va2 = epa_page(m, encl.pool)
    result, va_backing = evict(m, va, va2, block=False)
    check(result)
    assert Pcmd.unpack(m.dram.read(va_backing.pcmd, Pcmd.SIZE)).enclave_id == 0
    assert validate_epcm(m) == []


# --------------------------------------------------------------------------------------------
# ELDB / ELDU


def _evicted(m: Machine, encl: Enclave, off: int = 0x2000) -> tuple[int, Backing]:
    va = epa_page(m, encl.pool)
    result, backing = evict(m, encl.phys(off), va + 24, secs_phys=encl.secs_phys)
    check(result)
    return va, backing


def test_eldu_round_trip(m: Machine, encl: Enclave) -> None:
    plain = m.epc.read(encl.index(0x2000))
    va, backing = _evicted(m, encl)
    target = encl.pool.alloc()
    check(eldu_page(m, backing, target, secs_phys=encl.secs_phys))
    idx = m.epc.index_of(target)
    assert idx is not None
    entry = m.epc.epcm.entry(idx)
    assert entry["valid"] and not entry["blocked"] and entry["pt"] == PageType.PT_REG
    assert (entry["r"], entry["w"], entry["x"]) == (True, True, True)
    assert entry["linaddr"] == encl.base + 0x2000 and entry["secs"] == encl.secs_index
    assert m.epc.read(idx) == plain
    va_idx = m.epc.index_of(va)
    assert va_idx is not None and m.epc.read(va_idx, 24, 8) == bytes(8)
    assert encl.state.child_count == 3
    assert validate_epcm(m) == []
    # The slot is spent: loading the same backing again fails the MAC (version 0).
    assert (
        eldu_page(m, backing, encl.pool.alloc(), secs_phys=encl.secs_phys) == SgxStatus.SGX_MAC_COMPARE_FAIL
    )


def test_eldb_loads_blocked(m: Machine, encl: Enclave) -> None:
    _, backing = _evicted(m, encl)
    encl.state.epoch = 9
    target = encl.pool.alloc()
    check(eldu_page(m, backing, target, secs_phys=encl.secs_phys, blocked=True))
    idx = m.epc.index_of(target)
    assert idx is not None and m.epc.epcm.blocked[idx] and m.epc.epcm.block_epoch[idx] == 9
    # Evicting it again needs a tracking cycle that began after the ELDB.
    va = epa_page(m, encl.pool)
    assert evict(m, target, va, block=False)[0] == SgxStatus.SGX_NOT_TRACKED
    check(m.encls(0, EnclsLeaf.ETRACK, 0, encl.secs_phys))
    check(evict(m, target, va, block=False)[0])


def test_eldu_mac_failures(m: Machine, encl: Enclave) -> None:
    _, backing = _evicted(m, encl)
    target = encl.pool.alloc()
    # Tampered ciphertext.
    ct = bytearray(m.dram.read(backing.srcpge, PAGE_SIZE))
    ct[100] ^= 1
    m.dram.write(backing.srcpge, bytes(ct))
    assert eldu_page(m, backing, target, secs_phys=encl.secs_phys) == SgxStatus.SGX_MAC_COMPARE_FAIL
    ct[100] ^= 1
    m.dram.write(backing.srcpge, bytes(ct))
    # Wrong LINADDR, tampered PCMD permissions or reserved bytes, another enclave's SECS.
    assert (
        eldu_page(m, backing, target, secs_phys=encl.secs_phys, linaddr=encl.base)
        == SgxStatus.SGX_MAC_COMPARE_FAIL
    )
    good = m.dram.read(backing.pcmd, Pcmd.SIZE)
    m.dram.write(backing.pcmd, struct.pack("<Q", secinfo_flags(PageType.PT_REG, RW)))
    assert eldu_page(m, backing, target, secs_phys=encl.secs_phys) == SgxStatus.SGX_MAC_COMPARE_FAIL
    m.dram.write(backing.pcmd, good)
    m.dram.write(backing.pcmd + 72, b"\x01")
    assert eldu_page(m, backing, target, secs_phys=encl.secs_phys) == SgxStatus.SGX_MAC_COMPARE_FAIL
    m.dram.write(backing.pcmd, good)
    other = build_enclave(m, pool=encl.pool, base=1 << 41)
    assert eldu_page(m, backing, target, secs_phys=other.secs_phys) == SgxStatus.SGX_MAC_COMPARE_FAIL
    # Nothing was loaded by the failures; the genuine load still works.
    assert encl.state.child_count == 2
    check(eldu_page(m, backing, target, secs_phys=encl.secs_phys))
    assert validate_epcm(m) == []


def test_eldu_operand_checks(m: Machine, encl: Enclave) -> None:
    va, backing = _evicted(m, encl)
    target = encl.pool.alloc()
    slot = backing.va_slot

    def ld(
        rbx_off: int = 0,
        rcx: int = target,
        rdx: int = slot,
        secs: int = encl.secs_phys,
        pcmd_off: int = 0,
        src_off: int = 0,
    ) -> LeafResult:
        page = m.dram.alloc_page()
        m.dram.write(
            page + rbx_off,
            struct.pack("<QQQQ", backing.linaddr, backing.srcpge + src_off, backing.pcmd + pcmd_off, secs),
        )
        return m.encls(0, EnclsLeaf.ELDU, page + rbx_off, rcx, rdx)

    assert ld(rbx_off=8) == GP
    assert ld(rcx=target + 8) == GP
    assert ld(rcx=DRAM_ADDR) == pf(DRAM_ADDR)
    assert ld(rdx=slot + 2) == GP
    assert ld(rdx=DRAM_ADDR) == pf(DRAM_ADDR)
    assert ld(pcmd_off=64) == GP
    assert ld(src_off=256) == GP
    assert ld(rcx=encl.phys(0x1000)) == pf(encl.phys(0x1000))  # target already valid
    assert ld(rdx=encl.phys(0x1000)) == pf(encl.phys(0x1000))  # not a VA page
    assert ld(secs=encl.secs_phys + 8) == GP
    assert ld(secs=DRAM_ADDR) == pf(DRAM_ADDR)
    assert ld(secs=encl.phys(0x1000)) == pf(encl.phys(0x1000))  # not a SECS
    # Order: target valid (#PF(RCX)) wins over a bad SECS operand.
    assert ld(rcx=encl.phys(0x1000), secs=DRAM_ADDR) == pf(encl.phys(0x1000))
    check(ld())
    # A VA page's PAGEINFO.SECS must be 0.
    va2 = epa_page(m, encl.pool)
    result, va_backing = evict(m, va, va2, block=False)
    check(result)
    assert eldu_page(m, va_backing, encl.pool.alloc(), secs_phys=encl.secs_phys) == GP
    check(eldu_page(m, va_backing, encl.pool.alloc()))
    assert validate_epcm(m) == []


def test_eldu_secs_round_trip_then_children(m: Machine, encl: Enclave) -> None:
    va = epa_page(m, encl.pool)
    backings = {}
    for i, off in enumerate((0, 0x1000, 0x2000)):
        result, backings[off] = evict(m, encl.phys(off), va + 8 * i, secs_phys=encl.secs_phys)
        check(result)
    state = encl.state
    result, secs_backing = evict(m, encl.secs_phys, va + 8 * 9, block=False)
    check(result)
    # The SECS comes back in another EPC page with its hidden state (EID, identity).
    new_secs = encl.pool.alloc()
    assert eldu_page(m, secs_backing, new_secs, secs_phys=encl.secs_phys) == GP  # SECS field must be 0
    check(eldu_page(m, secs_backing, new_secs))
    new_idx = m.epc.index_of(new_secs)
    assert new_idx is not None
    restored = m.epc.secs_state[new_idx]
    assert restored is state and restored.eid == state.eid and restored.initialized
    assert not m.evicted_secs
    for backing in backings.values():
        check(eldu_page(m, backing, encl.pool.alloc(), secs_phys=new_secs))
    assert restored.child_count == 3
    assert validate_epcm(m) == []


def test_tcs_thread_follows_its_page(m: Machine, encl: Enclave) -> None:
    thread = object()
    m.tcs_threads[encl.index(0)] = thread
    va = epa_page(m, encl.pool)
    result, backing = evict(m, encl.phys(0), va, secs_phys=encl.secs_phys)
    check(result)
    assert list(m.tcs_threads.values()) == [thread] and min(m.tcs_threads) < 0
    assert validate_epcm(m) == []
    # The freed EPC page is reused and removed: the evicted TCS's thread is untouched.
    reuse = encl.phys(0)
    check(m.encls(0, EnclsLeaf.EPA, 3, reuse))
    check(m.encls(0, EnclsLeaf.EREMOVE, 0, reuse))
    assert list(m.tcs_threads.values()) == [thread]
    target = encl.pool.alloc()
    check(eldu_page(m, backing, target, secs_phys=encl.secs_phys))
    assert m.tcs_threads == {m.epc.index_of(target): thread}
    assert validate_epcm(m) == []
