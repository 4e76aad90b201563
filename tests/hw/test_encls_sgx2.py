"""SGX2 ENCLS leaves: EAUG, EMODPR, EMODT (sgx-architecture.md §4.11), and the SGX1-only machine."""

from __future__ import annotations

import struct

import pytest

from sgxsim.hw.arch import EnclsLeaf, Fault, LeafResult, PageType, SgxStatus, gp0, secinfo_flags
from sgxsim.hw.encls import validate_epcm
from sgxsim.hw.machine import Machine

from .helpers import (
    RW,
    RWX,
    Enclave,
    R,
    W,
    X,
    build_enclave,
    check,
    put,
    put_pageinfo,
    put_secinfo,
    small_machine,
)

GP = gp0()
DRAM_ADDR = 0x20_0000


def pf(addr: int) -> Fault:
    return Fault(14, 0x8001, addr)


@pytest.fixture
def m() -> Machine:
    return small_machine()


@pytest.fixture
def encl(m: Machine) -> Enclave:
    return build_enclave(m, size=0x10000)


# --------------------------------------------------------------------------------------------
# EAUG


def _eaug(
    m: Machine,
    encl: Enclave,
    offset: int,
    target: int | None = None,
    *,
    rbx_off: int = 0,
    srcpge: int = 0,
    secinfo: int = 0,
    secs: int | None = None,
    linaddr: int | None = None,
) -> LeafResult:
    page = m.dram.alloc_page()
    la = encl.base + offset if linaddr is None else linaddr
    m.dram.write(
        page + rbx_off, struct.pack("<QQQQ", la, srcpge, secinfo, encl.secs_phys if secs is None else secs)
    )
    return m.encls(0, EnclsLeaf.EAUG, page + rbx_off, encl.pool.alloc() if target is None else target)


def test_eaug_success(m: Machine, encl: Enclave) -> None:
    target = encl.pool.alloc()
    before = encl.state.measurement.copy().finalize()
    check(_eaug(m, encl, 0x5000, target))
    idx = m.epc.index_of(target)
    assert idx is not None
    entry = m.epc.epcm.entry(idx)
    assert entry["valid"] and entry["pending"] and entry["pt"] == PageType.PT_REG
    assert (entry["r"], entry["w"], entry["x"]) == (True, True, False)
    assert entry["linaddr"] == encl.base + 0x5000 and not entry["modified"] and not entry["pr"]
    assert idx not in m.epc.contents and encl.state.child_count == 4
    assert encl.state.measurement.finalize() == before  # EAUG is not measured
    assert validate_epcm(m) == []


def test_eaug_outcomes(m: Machine, encl: Enclave) -> None:
    target = encl.pool.alloc()
    assert _eaug(m, encl, 0x5000, rbx_off=8) == GP
    assert _eaug(m, encl, 0x5000, target + 16) == GP
    assert _eaug(m, encl, 0x5000, DRAM_ADDR) == pf(DRAM_ADDR)
    assert _eaug(m, encl, 0x5000, secinfo=put(m, b"") + 32) == GP
    assert _eaug(m, encl, 0x5000, secs=encl.secs_phys + 8) == GP
    assert _eaug(m, encl, 0, linaddr=encl.base + 0x5008) == GP
    assert _eaug(m, encl, 0x5000, srcpge=put(m, b"")) == GP
    assert _eaug(m, encl, 0x5000, secs=DRAM_ADDR) == pf(DRAM_ADDR)
    assert _eaug(m, encl, 0x5000, encl.phys(0x2000)) == pf(encl.phys(0x2000))
    # A non-zero SECINFO may only ask for shadow-stack pages: #GP without CET.
    assert _eaug(m, encl, 0x5000, secinfo=put_secinfo(m, secinfo_flags(PageType.PT_SS_FIRST, RW))) == GP
    assert _eaug(m, encl, 0x5000, secs=encl.phys(0x2000)) == pf(encl.phys(0x2000))
    free = encl.pool.alloc()
    assert _eaug(m, encl, 0x5000, secs=free) == pf(free)
    assert _eaug(m, encl, 0x10000) == GP
    assert _eaug(m, encl, 0, linaddr=encl.base - 0x1000) == GP
    uninit = build_enclave(m, base=1 << 41, pool=encl.pool, init=False)
    assert _eaug(m, uninit, 0x3000) == GP
    # Order: SRCPGE != 0 (#GP) is checked before PAGEINFO.SECS leaves the EPC (#PF).
    assert _eaug(m, encl, 0x5000, srcpge=put(m, b""), secs=DRAM_ADDR) == GP
    # Target already valid (#PF(RCX)) wins over a SECS that is not a SECS (#PF(SECS)).
    assert _eaug(m, encl, 0x5000, encl.phys(0x2000), secs=free) == pf(encl.phys(0x2000))
    # Not initialized (#GP) is reported for a SECS before the ELRANGE check.
    assert _eaug(m, uninit, 0x100000) == GP
    assert encl.state.child_count == 3 and uninit.state.child_count == 3
    assert validate_epcm(m) == []


def test_sgx1_machine_rejects_sgx2_leaves() -> None:
    m = small_machine(sgx2=False)
    encl = build_enclave(m)
    assert _eaug(m, encl, 0x3000) == GP
    si = put_secinfo(m, secinfo_flags(PageType.PT_REG, R))
    assert m.encls(0, EnclsLeaf.EMODPR, si, encl.phys(0x2000)) == GP
    assert (
        m.encls(0, EnclsLeaf.EMODT, put_secinfo(m, secinfo_flags(PageType.PT_TRIM)), encl.phys(0x2000)) == GP
    )
    assert m.epc.epcm.rwx[encl.index(0x2000)] == RWX


# --------------------------------------------------------------------------------------------
# EMODPR


def test_emodpr_restricts_and_sets_pr(m: Machine, encl: Enclave) -> None:
    idx = encl.index(0x2000)
    encl.state.epoch = 4
    check(
        m.encls(0, EnclsLeaf.EMODPR, put_secinfo(m, secinfo_flags(PageType.PT_REG, R | X)), encl.phys(0x2000))
    )
    e = m.epc.epcm
    assert e.rwx[idx] == R | X and e.pr[idx] and e.block_epoch[idx] == 4
    # Permissions can only shrink: asking for RWX again leaves R|X.
    check(m.encls(0, EnclsLeaf.EMODPR, put_secinfo(m, RWX), encl.phys(0x2000)))
    assert e.rwx[idx] == R | X
    check(m.encls(0, EnclsLeaf.EMODPR, put_secinfo(m, 0), encl.phys(0x2000)))
    assert e.rwx[idx] == 0
    assert validate_epcm(m) == []


def test_emodpr_outcomes(m: Machine, encl: Enclave) -> None:
    page = encl.phys(0x2000)
    si = put_secinfo(m, R)
    assert m.encls(0, EnclsLeaf.EMODPR, si + 32, page) == GP
    assert m.encls(0, EnclsLeaf.EMODPR, si, page + 8) == GP
    assert m.encls(0, EnclsLeaf.EMODPR, si, DRAM_ADDR) == pf(DRAM_ADDR)
    assert m.encls(0, EnclsLeaf.EMODPR, put_secinfo(m, R, b"\x01" + bytes(55)), page) == GP
    assert m.encls(0, EnclsLeaf.EMODPR, put_secinfo(m, R | 1 << 7), page) == GP
    assert m.encls(0, EnclsLeaf.EMODPR, put_secinfo(m, W), page) == GP
    free = encl.pool.alloc()
    assert m.encls(0, EnclsLeaf.EMODPR, si, free) == pf(free)
    assert m.encls(0, EnclsLeaf.EMODPR, si, encl.phys(0)) == pf(encl.phys(0))  # TCS
    assert m.encls(0, EnclsLeaf.EMODPR, si, encl.secs_phys) == pf(encl.secs_phys)
    aug = encl.pool.alloc()
    check(m.encls(0, EnclsLeaf.EAUG, put_pageinfo(m, encl.base + 0x6000, 0, 0, encl.secs_phys), aug))
    assert m.encls(0, EnclsLeaf.EMODPR, si, aug) == SgxStatus.SGX_PAGE_NOT_MODIFIABLE  # PENDING
    uninit = build_enclave(m, base=1 << 41, pool=encl.pool, init=False)
    assert m.encls(0, EnclsLeaf.EMODPR, si, uninit.phys(0x2000)) == GP
    # Order: a bad SECINFO (#GP) is checked before EPCM.VALID (#PF).
    assert m.encls(0, EnclsLeaf.EMODPR, put_secinfo(m, W), free) == GP
    assert m.epc.epcm.rwx[encl.index(0x2000)] == RWX


def test_emodpr_probe_of_trimmed_pages(m: Machine, encl: Enclave) -> None:
    # Linux's REMOVE_PAGES probe: EMODPR on a trimmed page returns NOT_MODIFIABLE while it is
    # MODIFIED (not yet EACCEPTed) and #PF once EACCEPT cleared MODIFIED (PT_TRIM is not REG).
    page = encl.phys(0x2000)
    check(m.encls(0, EnclsLeaf.EMODT, put_secinfo(m, secinfo_flags(PageType.PT_TRIM)), page))
    assert m.encls(0, EnclsLeaf.EMODPR, put_secinfo(m, RWX), page) == SgxStatus.SGX_PAGE_NOT_MODIFIABLE
    m.epc.epcm.modified[encl.index(0x2000)] = False  # EACCEPT(TRIM | MODIFIED)
    assert m.encls(0, EnclsLeaf.EMODPR, put_secinfo(m, RWX), page) == pf(page)


# --------------------------------------------------------------------------------------------
# EMODT


@pytest.mark.parametrize(
    ("offset", "new_pt"),
    [(0x2000, PageType.PT_TCS), (0x2000, PageType.PT_TRIM), (0, PageType.PT_TRIM)],
    ids=["REG->TCS", "REG->TRIM", "TCS->TRIM"],
)
def test_emodt_transitions(m: Machine, encl: Enclave, offset: int, new_pt: PageType) -> None:
    idx = encl.index(offset)
    m.epc.epcm.pr[idx] = True
    encl.state.epoch = 2
    check(m.encls(0, EnclsLeaf.EMODT, put_secinfo(m, secinfo_flags(new_pt, RWX)), encl.phys(offset)))
    entry = m.epc.epcm.entry(idx)
    assert entry["pt"] == new_pt and entry["modified"] and not entry["pr"]
    assert not (entry["r"] or entry["w"] or entry["x"])
    assert m.epc.epcm.block_epoch[idx] == 2
    assert validate_epcm(m) == []


def test_emodt_outcomes(m: Machine, encl: Enclave) -> None:
    page = encl.phys(0x2000)
    trim = put_secinfo(m, secinfo_flags(PageType.PT_TRIM))
    assert m.encls(0, EnclsLeaf.EMODT, trim + 16, page) == GP
    assert m.encls(0, EnclsLeaf.EMODT, trim, page + 8) == GP
    assert m.encls(0, EnclsLeaf.EMODT, trim, DRAM_ADDR) == pf(DRAM_ADDR)
    assert (
        m.encls(
            0, EnclsLeaf.EMODT, put_secinfo(m, secinfo_flags(PageType.PT_TRIM), b"\x01" + bytes(55)), page
        )
        == GP
    )
    for bad in (PageType.PT_REG, PageType.PT_SECS, PageType.PT_VA):
        assert m.encls(0, EnclsLeaf.EMODT, put_secinfo(m, secinfo_flags(bad)), page) == GP
    free = encl.pool.alloc()
    assert m.encls(0, EnclsLeaf.EMODT, trim, free) == pf(free)
    tcs = put_secinfo(m, secinfo_flags(PageType.PT_TCS))
    assert m.encls(0, EnclsLeaf.EMODT, tcs, encl.phys(0)) == pf(encl.phys(0))  # TCS -> TCS
    assert m.encls(0, EnclsLeaf.EMODT, trim, encl.secs_phys) == pf(encl.secs_phys)
    aug = encl.pool.alloc()
    check(m.encls(0, EnclsLeaf.EAUG, put_pageinfo(m, encl.base + 0x6000, 0, 0, encl.secs_phys), aug))
    assert m.encls(0, EnclsLeaf.EMODT, trim, aug) == SgxStatus.SGX_PAGE_NOT_MODIFIABLE
    check(m.encls(0, EnclsLeaf.EMODT, trim, page))
    assert m.encls(0, EnclsLeaf.EMODT, trim, page) == pf(page)  # TRIM -> TRIM is not a transition
    check(m.encls(0, EnclsLeaf.EMODT, tcs, encl.phys(0x1000)))
    # A MODIFIED TCS can be trimmed only after EACCEPT: NOT_MODIFIABLE (transition checked first).
    assert m.encls(0, EnclsLeaf.EMODT, trim, encl.phys(0x1000)) == SgxStatus.SGX_PAGE_NOT_MODIFIABLE
    uninit = build_enclave(m, base=1 << 41, pool=encl.pool, init=False)
    assert m.encls(0, EnclsLeaf.EMODT, trim, uninit.phys(0x2000)) == GP
    assert validate_epcm(m) == []
