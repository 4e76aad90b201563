"""ENCLS leaves that build an enclave: ECREATE, EADD, EEXTEND, EINIT.

Each leaf: the success path with its effects, every outcome sgx-architecture.md §4.1-§4.4 lists,
and the SDM check order where two failing conditions hold at once (the first check wins).
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable

import pytest

from sgxsim.hw import crypto
from sgxsim.hw.arch import (
    PAGE_SIZE,
    Attributes,
    EinitToken,
    EnclsLeaf,
    Fault,
    KeyName,
    LeafResult,
    PageType,
    SgxStatus,
    Sigstruct,
    Tcs,
    gp0,
    secinfo_flags,
)
from sgxsim.hw.encls import ssa_frame_bytes_needed, validate_epcm, xsave_size
from sgxsim.hw.machine import Machine

from .helpers import (
    DEFAULT_BASE,
    RW,
    RWX,
    Enclave,
    EpcPool,
    PageSpec,
    W,
    build_enclave,
    check,
    eadd_page,
    ecreate,
    einit,
    expected_mrenclave,
    make_secs,
    other_signing_key,
    put,
    put_secinfo,
    reg_page,
    sign,
    small_machine,
    tcs_page,
)

GP = gp0()
PF_EPCM = 0x8001
DRAM_ADDR = 0x20_0000  # a page-aligned physical address that is not EPC


def pf(addr: int) -> Fault:
    return Fault(14, PF_EPCM, addr)


# --------------------------------------------------------------------------------------------
# ECREATE


def _ecreate_raw(
    m: Machine,
    secs_bytes: bytes,
    *,
    linaddr: int = 0,
    secs_field: int = 0,
    secinfo_flags_: int = 0,
    secinfo_reserved: bytes = bytes(56),
    src_offset: int = 0,
    secinfo_offset: int = 0,
    pageinfo_offset: int = 0,
    rcx: int | None = None,
) -> tuple[LeafResult, int]:
    src = put(m, b"") + src_offset
    m.dram.write(src, secs_bytes)
    secinfo = put_secinfo(m, secinfo_flags_, secinfo_reserved) + secinfo_offset
    if secinfo_offset:
        m.dram.write(secinfo, struct.pack("<Q", secinfo_flags_) + secinfo_reserved)
    pageinfo_page = put(m, b"")
    pageinfo = pageinfo_page + pageinfo_offset
    m.dram.write(pageinfo, struct.pack("<QQQQ", linaddr, src, secinfo, secs_field))
    target = EpcPool(m).alloc() if rcx is None else rcx
    return m.encls(0, EnclsLeaf.ECREATE, pageinfo, target), target


def _secs(**kw: object) -> bytes:
    return make_secs(**{"size": 0x4000, **kw}).pack()  # type: ignore[arg-type]


def test_ecreate_success_creates_secs_state_and_epcm_entry() -> None:
    m = small_machine()
    result, target = _ecreate_raw(m, _secs(ssa_frame_size=2))
    assert result == SgxStatus.SUCCESS
    idx = m.epc.index_of(target)
    assert idx is not None
    entry = m.epc.epcm.entry(idx)
    assert entry["valid"] and entry["pt"] == PageType.PT_SECS
    assert not (entry["r"] or entry["w"] or entry["x"] or entry["blocked"] or entry["pending"])
    state = m.epc.secs_state[idx]
    assert (state.eid, state.base, state.size, state.ssa_frame_size) == (1, DEFAULT_BASE, 0x4000, 2)
    assert not state.initialized and state.child_count == 0
    # The ECREATE block alone: MRENCLAVE of an enclave with no pages.
    assert state.measurement.finalize() == expected_mrenclave(0x4000, 2, [])
    # EIDs come from CR_NEXT_EID.
    result, target2 = _ecreate_raw(m, _secs())
    assert result == SgxStatus.SUCCESS
    idx2 = m.epc.index_of(target2)
    assert idx2 is not None and m.epc.secs_state[idx2].eid == 2
    assert validate_epcm(m) == []


AVX_AMX = 0x7 | (1 << 17) | (1 << 18)

ECREATE_GP_CASES: dict[str, dict[str, object]] = {
    "pageinfo not 32-byte aligned": {"pageinfo_offset": 8},
    "srcpge not 4K aligned": {"src_offset": 64},
    "secinfo not 64-byte aligned": {"secinfo_offset": 32},
    "linaddr not zero": {"linaddr": 0x1000},
    "pageinfo.secs not zero": {"secs_field": 0x1000},
    "secinfo reserved bytes": {"secinfo_reserved": b"\x01" + bytes(55)},
    "secinfo reserved flag bit 6": {"secinfo_flags_": 0x40},
    "secinfo page type is REG": {"secinfo_flags_": secinfo_flags(PageType.PT_REG)},
    "xfrm without SSE": {"secs": {"xfrm": 0x1}},
    "xfrm unsupported bit": {"secs": {"xfrm": 0x3 | (1 << 3) | (1 << 4)}},
    "miscselect unsupported": {"secs": {"miscselect": 0x2}},
    "ssaframesize zero": {"secs": {"ssa_frame_size": 0}},
    "64-bit base not canonical": {"secs": {"base": 1 << 47, "size": 0x4000}},
    "32-bit base above 4 GiB": {"secs": {"base": 1 << 32, "attributes": 0}},
    "64-bit size at the CPUID limit": {"secs": {"base": 0, "size": 1 << 47}},
    "32-bit size at the CPUID limit": {"secs": {"base": 0, "size": 1 << 31, "attributes": 0}},
    "size below 8 KiB": {"secs": {"size": 0x1000}},
    "size not a power of two": {"secs": {"size": 0x3000}},
    "base not aligned to size": {"secs": {"base": DEFAULT_BASE + 0x2000}},
    "INIT attribute set": {"secs": {"attributes": int(Attributes.MODE64BIT | Attributes.INIT)}},
    "reserved attribute bit 3": {"secs": {"attributes": int(Attributes.MODE64BIT) | 0x8}},
    "CET attribute not supported": {"secs": {"attributes": int(Attributes.MODE64BIT | Attributes.CET)}},
    "secs reserved1": {"secs": {"reserved1": b"\x01" + bytes(23)}},
    "secs reserved4": {"secs": {"reserved4": bytes(3833) + b"\x01"}},
    "configid without KSS": {"secs": {"config_id": b"\x01" + bytes(63)}},
    "configsvn without KSS": {"secs": {"config_svn": 1}},
}


@pytest.mark.parametrize("case", list(ECREATE_GP_CASES))
def test_ecreate_gp_outcomes(case: str) -> None:
    m = small_machine()
    kwargs = dict(ECREATE_GP_CASES[case])
    secs_fields = dict(kwargs.pop("secs", {}))  # type: ignore[call-overload]
    result, _ = _ecreate_raw(m, _secs(**secs_fields), **kwargs)  # type: ignore[arg-type]
    assert result == GP
    assert not m.epc.epcm.valid.any() and not m.epc.secs_state and not m.epc.contents
    assert m.cr_next_eid == 1


def test_ecreate_rcx_checks() -> None:
    m = small_machine()
    target = EpcPool(m).alloc()
    assert _ecreate_raw(m, _secs(), rcx=target + 0x800)[0] == GP
    assert _ecreate_raw(m, _secs(), rcx=DRAM_ADDR)[0] == pf(DRAM_ADDR)
    check(_ecreate_raw(m, _secs(), rcx=target)[0])
    # The page is now valid: #PF on the target.
    assert _ecreate_raw(m, _secs(), rcx=target)[0] == pf(target)


def test_ecreate_kss_allows_config_fields() -> None:
    m = small_machine()
    kss = int(Attributes.MODE64BIT | Attributes.KSS)
    result, target = _ecreate_raw(m, _secs(attributes=kss, config_id=b"\x07" * 64, config_svn=3))
    assert result == SgxStatus.SUCCESS
    idx = m.epc.index_of(target)
    assert idx is not None
    assert m.epc.secs_state[idx].config_id == b"\x07" * 64 and m.epc.secs_state[idx].config_svn == 3


def test_ecreate_ssa_frame_must_hold_xsave_state() -> None:
    # AMX TILEDATA makes the XSAVE area 11008 bytes: 1 SSA page is too small, 3 are enough.
    m = small_machine(xfrm_supported=AVX_AMX)
    assert xsave_size(AVX_AMX) == 2816 + 8192
    assert ssa_frame_bytes_needed(AVX_AMX, 1) == 11008 + 16 + 184
    assert _ecreate_raw(m, _secs(xfrm=AVX_AMX, ssa_frame_size=2))[0] == GP
    assert _ecreate_raw(m, _secs(xfrm=AVX_AMX, ssa_frame_size=3))[0] == SgxStatus.SUCCESS
    assert xsave_size(0x3) == 576 and xsave_size(0x7) == 832


def test_ecreate_32bit_enclave_below_4g() -> None:
    m = small_machine()
    assert _ecreate_raw(m, _secs(base=0x1000_0000, attributes=0))[0] == SgxStatus.SUCCESS


def test_ecreate_check_order() -> None:
    m = small_machine()
    # RBX misaligned (#GP) is checked before RCX leaves the EPC (#PF).
    assert _ecreate_raw(m, _secs(), pageinfo_offset=8, rcx=DRAM_ADDR)[0] == GP
    # RCX outside the EPC (#PF) wins over a bad SECINFO (#GP).
    bad_pt = secinfo_flags(PageType.PT_REG)
    assert _ecreate_raw(m, _secs(), secinfo_flags_=bad_pt, rcx=DRAM_ADDR)[0] == pf(DRAM_ADDR)
    target = EpcPool(m).alloc()
    check(_ecreate_raw(m, _secs(), rcx=target)[0])
    # A bad SECINFO (#GP) is checked before the target's EPCM.VALID (#PF).
    assert _ecreate_raw(m, _secs(), secinfo_flags_=bad_pt, rcx=target)[0] == GP
    # The target's EPCM.VALID (#PF) wins over a bad SECS (size 0, #GP).
    assert _ecreate_raw(m, _secs(size=0), rcx=target)[0] == pf(target)


# --------------------------------------------------------------------------------------------
# EADD


@pytest.fixture
def uninit() -> Enclave:
    m = small_machine()
    result, encl = ecreate(m, make_secs(0x8000))
    check(result)
    return encl


def _eadd_raw(
    encl: Enclave,
    spec: PageSpec,
    *,
    rbx_offset: int = 0,
    rcx: int | None = None,
    src_offset: int = 0,
    secs: int | None = None,
    secinfo_offset: int = 0,
    linaddr: int | None = None,
    secinfo_reserved: bytes = bytes(56),
) -> tuple[LeafResult, int]:
    m = encl.m
    src = put(m, spec.page[: PAGE_SIZE - src_offset] if src_offset else spec.page) + src_offset
    secinfo = put_secinfo(m, spec.flags, secinfo_reserved) + secinfo_offset
    if secinfo_offset:
        m.dram.write(secinfo, struct.pack("<Q", spec.flags) + secinfo_reserved)
    la = encl.base + spec.offset if linaddr is None else linaddr
    page = put(m, b"")
    m.dram.write(
        page + rbx_offset, struct.pack("<QQQQ", la, src, secinfo, encl.secs_phys if secs is None else secs)
    )
    target = encl.pool.alloc() if rcx is None else rcx
    return m.encls(0, EnclsLeaf.EADD, page + rbx_offset, target), target


def test_eadd_reg_success(uninit: Enclave) -> None:
    spec = reg_page(0x3000, b"hello", perms=RWX)
    result, target = _eadd_raw(uninit, spec)
    assert result == SgxStatus.SUCCESS
    m = uninit.m
    idx = m.epc.index_of(target)
    assert idx is not None
    entry = m.epc.epcm.entry(idx)
    assert entry["valid"] and entry["pt"] == PageType.PT_REG and entry["r"] and entry["w"] and entry["x"]
    assert entry["linaddr"] == uninit.base + 0x3000 and entry["secs"] == uninit.secs_index
    assert m.epc.read(idx, 0, 5) == b"hello"
    assert uninit.state.child_count == 1
    assert uninit.state.measurement.finalize() == expected_mrenclave(
        0x8000, 1, [dataclasses.replace(spec, measure=False)]
    )
    assert validate_epcm(m) == []


def test_eadd_zero_page_stores_nothing(uninit: Enclave) -> None:
    result, target = _eadd_raw(uninit, reg_page(0, b""))
    assert result == SgxStatus.SUCCESS
    assert uninit.m.epc.index_of(target) not in uninit.m.epc.contents


def test_eadd_tcs_forces_fields_and_permissions(uninit: Enclave) -> None:
    # DBGOPTIN, CSSA, AEP and STATE are forced to 0; SECINFO R/W/X are forced to 0 before hashing.
    tcs = Tcs(state=5, flags=1, ossa=0x1000, cssa=1, nssa=2, aep=0x1234, fslimit=0xFFF, gslimit=0xFFF)
    spec = PageSpec(0, secinfo_flags(PageType.PT_TCS, RWX), tcs.pack(), measure=True)
    m = uninit.m
    result, target = _eadd_raw(uninit, spec)
    assert result == SgxStatus.SUCCESS
    idx = m.epc.index_of(target)
    assert idx is not None
    stored = Tcs.unpack(m.epc.read(idx))
    assert (stored.state, stored.flags, stored.cssa, stored.aep) == (0, 0, 0, 0)
    assert (stored.ossa, stored.nssa, stored.fslimit) == (0x1000, 2, 0xFFF)
    entry = m.epc.epcm.entry(idx)
    assert entry["pt"] == PageType.PT_TCS and not (entry["r"] or entry["w"] or entry["x"])
    for chunk in range(0, PAGE_SIZE, 256):
        check(m.encls(0, EnclsLeaf.EEXTEND, uninit.secs_phys, target + chunk))
    forced = PageSpec(0, secinfo_flags(PageType.PT_TCS), stored.pack(), measure=True)
    assert uninit.state.measurement.finalize() == expected_mrenclave(0x8000, 1, [forced])


def test_eadd_32bit_tcs_needs_full_segment_limits() -> None:
    m = small_machine()
    result, encl = ecreate(m, make_secs(0x8000, 0x1000_0000, attributes=0))
    check(result)
    bad = tcs_page(0, ossa=0x1000, fslimit=0x1000, gslimit=0xFFF)
    assert _eadd_raw(encl, bad)[0] == GP
    assert _eadd_raw(encl, tcs_page(0, ossa=0x1000, fslimit=0xFFF, gslimit=0x1FFF))[0] == SgxStatus.SUCCESS


EADD_GP_CASES: dict[str, Callable[[Enclave], tuple[LeafResult, int]]] = {
    "pageinfo misaligned": lambda en: _eadd_raw(en, reg_page(0), rbx_offset=16),
    "rcx misaligned": lambda en: _eadd_raw(en, reg_page(0), rcx=en.pool.alloc() + 8),
    "srcpge misaligned": lambda en: _eadd_raw(en, reg_page(0), src_offset=8),
    "secs misaligned": lambda en: _eadd_raw(en, reg_page(0), secs=en.secs_phys + 8),
    "secinfo misaligned": lambda en: _eadd_raw(en, reg_page(0), secinfo_offset=8),
    "linaddr misaligned": lambda en: _eadd_raw(en, reg_page(0), linaddr=en.base + 8),
    "secinfo reserved bytes": lambda en: _eadd_raw(en, reg_page(0), secinfo_reserved=bytes(55) + b"\x01"),
    "secinfo reserved flag bit 16": lambda en: _eadd_raw(
        en, PageSpec(0, secinfo_flags(PageType.PT_REG, RW) | 1 << 16)
    ),
    "page type SECS": lambda en: _eadd_raw(en, PageSpec(0, secinfo_flags(PageType.PT_SECS))),
    "page type VA": lambda en: _eadd_raw(en, PageSpec(0, secinfo_flags(PageType.PT_VA))),
    "page type TRIM": lambda en: _eadd_raw(en, PageSpec(0, secinfo_flags(PageType.PT_TRIM))),
    "page type SS_FIRST without CET": lambda en: _eadd_raw(
        en, PageSpec(0, secinfo_flags(PageType.PT_SS_FIRST, RW))
    ),
    "W without R": lambda en: _eadd_raw(en, reg_page(0, perms=W)),
    "TCS reserved flags": lambda en: _eadd_raw(en, tcs_page(0, ossa=0x1000, flags=4)),
    "TCS reserved bytes": lambda en: _eadd_raw(
        en, PageSpec(0, secinfo_flags(PageType.PT_TCS), bytes(100) + b"\x01")
    ),
    "linaddr below ELRANGE": lambda en: _eadd_raw(en, reg_page(0), linaddr=en.base - PAGE_SIZE),
    "linaddr above ELRANGE": lambda en: _eadd_raw(en, reg_page(0), linaddr=en.base + en.size),
}


@pytest.mark.parametrize("case", list(EADD_GP_CASES))
def test_eadd_gp_outcomes(uninit: Enclave, case: str) -> None:
    before = uninit.state.measurement.copy().finalize()
    assert EADD_GP_CASES[case](uninit)[0] == GP
    assert uninit.state.child_count == 0
    assert uninit.state.measurement.finalize() == before
    assert validate_epcm(uninit.m) == []


def test_eadd_pf_outcomes(uninit: Enclave) -> None:
    # RCX outside the EPC.
    assert _eadd_raw(uninit, reg_page(0), rcx=DRAM_ADDR)[0] == pf(DRAM_ADDR)
    # PAGEINFO.SECS outside the EPC.
    assert _eadd_raw(uninit, reg_page(0), secs=DRAM_ADDR)[0] == pf(DRAM_ADDR)
    # Target already valid.
    result, target = _eadd_raw(uninit, reg_page(0))
    check(result)
    assert _eadd_raw(uninit, reg_page(0x1000), rcx=target)[0] == pf(target)
    # PAGEINFO.SECS is an EPC page that is not a SECS (a REG page), or a free page.
    assert _eadd_raw(uninit, reg_page(0x1000), secs=target)[0] == pf(target)
    free = uninit.pool.alloc()
    assert _eadd_raw(uninit, reg_page(0x1000), secs=free)[0] == pf(free)


def test_eadd_after_einit_is_gp() -> None:
    m = small_machine()
    encl = build_enclave(m)
    assert _eadd_raw(encl, reg_page(0x3000))[0] == GP


def test_eadd_check_order(uninit: Enclave) -> None:
    # SECS outside the EPC (#PF(SECS)) wins over a bad SECINFO page type (#GP).
    assert _eadd_raw(uninit, PageSpec(0, secinfo_flags(PageType.PT_VA)), secs=DRAM_ADDR)[0] == pf(DRAM_ADDR)
    result, target = _eadd_raw(uninit, reg_page(0))
    check(result)
    # A bad SECINFO (#GP) is checked before the target's EPCM.VALID (#PF).
    assert _eadd_raw(uninit, PageSpec(0x1000, secinfo_flags(PageType.PT_VA)), rcx=target)[0] == GP
    # Target valid (#PF(RCX)) wins over a SECS that is not a SECS (#PF(SECS)).
    assert _eadd_raw(uninit, reg_page(0x1000), rcx=target, secs=target)[0] == pf(target)
    # SECS not a SECS (#PF) wins over W-without-R (#GP) and LINADDR outside ELRANGE (#GP).
    assert _eadd_raw(uninit, reg_page(0x1000, perms=W), secs=target, linaddr=0)[0] == pf(target)


# --------------------------------------------------------------------------------------------
# EEXTEND


def test_eextend_outcomes() -> None:
    m = small_machine()
    result, encl = ecreate(m, make_secs(0x8000))
    check(result)
    result, other = ecreate(m, make_secs(0x8000, DEFAULT_BASE * 2), pool=encl.pool)
    check(result)
    check(eadd_page(encl, reg_page(0, b"x" * 300, measure=False)))
    page = encl.phys(0)
    assert m.encls(0, EnclsLeaf.EEXTEND, encl.secs_phys + 8, page) == GP
    assert m.encls(0, EnclsLeaf.EEXTEND, DRAM_ADDR, page) == pf(DRAM_ADDR)
    assert m.encls(0, EnclsLeaf.EEXTEND, encl.secs_phys, page + 0x80) == GP
    assert m.encls(0, EnclsLeaf.EEXTEND, encl.secs_phys, DRAM_ADDR) == pf(DRAM_ADDR)
    free = encl.pool.alloc()
    assert m.encls(0, EnclsLeaf.EEXTEND, encl.secs_phys, free) == pf(free)
    # A SECS page is neither REG nor TCS.
    assert m.encls(0, EnclsLeaf.EEXTEND, encl.secs_phys, other.secs_phys) == pf(other.secs_phys)
    # RBX is another enclave's SECS.
    assert m.encls(0, EnclsLeaf.EEXTEND, other.secs_phys, page) == GP
    # Order: RBX outside the EPC (#PF(RBX)) wins over RCX misaligned (#GP).
    assert m.encls(0, EnclsLeaf.EEXTEND, DRAM_ADDR, page + 0x80) == pf(DRAM_ADDR)
    # Success: the chunk at offset 0x100 is measured with its enclave offset.
    before = encl.state.measurement.copy()
    check(m.encls(0, EnclsLeaf.EEXTEND, encl.secs_phys, page + 0x100))
    before.eextend(0x100, (b"x" * 300 + bytes(PAGE_SIZE))[0x100:0x200])
    assert encl.state.measurement.finalize() == before.finalize()


def test_eextend_after_einit_is_gp() -> None:
    m = small_machine()
    encl = build_enclave(m)
    assert m.encls(0, EnclsLeaf.EEXTEND, encl.secs_phys, encl.phys(0x2000)) == GP


# --------------------------------------------------------------------------------------------
# EINIT


@pytest.fixture
def built() -> Enclave:
    m = small_machine()
    return build_enclave(m, init=False)


def test_einit_success_commits_identity(built: Enclave) -> None:
    m = built.m
    sig = sign(built, isvprodid=7, isvsvn=3, isvextprodid=b"\x05" * 16)
    assert einit(m, built, sig) == SgxStatus.SUCCESS
    state = built.state
    assert state.initialized and state.attributes & Attributes.INIT
    assert state.mrenclave == built.mrenclave() == sig.mrenclave
    assert state.mrsigner == crypto.mrsigner(sig.modulus)
    assert (state.isv_prod_id, state.isv_svn, state.isv_ext_prod_id) == (7, 3, b"\x05" * 16)
    assert state.padding == crypto.PKCS1_SHA256_PADDING
    # Already initialized: #GP.
    assert einit(m, built, sig) == GP


def test_einit_accepts_intel_vendor(built: Enclave) -> None:
    assert einit(built.m, built, sign(built, vendor=0x8086)) == SgxStatus.SUCCESS


def _with(sig: Sigstruct, **changes: object) -> Sigstruct:
    return dataclasses.replace(sig, **changes)  # type: ignore[arg-type]


def test_einit_alignment_and_secs_operand(built: Enclave) -> None:
    m = built.m
    sig_addr = put(m, sign(built).pack())
    token = put(m, EinitToken().pack())
    assert m.encls(0, EnclsLeaf.EINIT, sig_addr + 64, built.secs_phys, token) == GP
    assert m.encls(0, EnclsLeaf.EINIT, sig_addr, built.secs_phys + 64, token) == GP
    assert m.encls(0, EnclsLeaf.EINIT, sig_addr, built.secs_phys, token + 256) == GP
    assert m.encls(0, EnclsLeaf.EINIT, sig_addr, DRAM_ADDR, token) == pf(DRAM_ADDR)
    m.cpus[0].le_pubkey_hash = crypto.mrsigner(sign(built).modulus)
    reg = built.phys(0x1000)
    assert m.encls(0, EnclsLeaf.EINIT, sig_addr, reg, token) == pf(reg)
    free = built.pool.alloc()
    assert m.encls(0, EnclsLeaf.EINIT, sig_addr, free, token) == pf(free)


@pytest.mark.parametrize(
    "changes",
    [
        {"header1": bytes(16)},
        {"vendor": 0x1234},
        {"header2": bytes(16)},
        {"exponent": 65537},
        {"reserved1": b"\x01" + bytes(83)},
        {"reserved4": b"\x01" + bytes(11)},
    ],
    ids=["header1", "vendor", "header2", "exponent", "reserved1", "reserved4"],
)
def test_einit_invalid_sig_struct(built: Enclave, changes: dict[str, object]) -> None:
    assert einit(built.m, built, _with(sign(built), **changes)) == SgxStatus.SGX_INVALID_SIG_STRUCT
    assert not built.state.initialized


def test_einit_invalid_signature(built: Enclave) -> None:
    sig = sign(built)
    bad = bytearray(sig.signature)
    bad[0] ^= 1
    assert einit(built.m, built, _with(sig, signature=bytes(bad))) == SgxStatus.SGX_INVALID_SIGNATURE
    # Signed data changed after signing.
    assert einit(built.m, built, _with(sig, isvsvn=9)) == SgxStatus.SGX_INVALID_SIGNATURE


def test_einit_unmasked_event_then_retry(built: Enclave) -> None:
    m = built.m
    m.cpus[0].pending_interrupt = True
    assert einit(m, built, sign(built)) == SgxStatus.SGX_UNMASKED_EVENT
    assert not m.cpus[0].pending_interrupt and not built.state.initialized
    assert einit(m, built, sign(built)) == SgxStatus.SUCCESS


def test_einit_order_sig_struct_event_signature(built: Enclave) -> None:
    m = built.m
    sig = sign(built)
    bad_sig = bytearray(sig.signature)
    bad_sig[5] ^= 0xFF
    # A bad header wins over a pending interrupt; a pending interrupt wins over a bad signature.
    m.cpus[0].pending_interrupt = True
    assert einit(m, built, _with(sig, vendor=1)) == SgxStatus.SGX_INVALID_SIG_STRUCT
    assert einit(m, built, _with(sig, signature=bytes(bad_sig))) == SgxStatus.SGX_UNMASKED_EVENT
    # A bad signature wins over a SECS operand that is not a SECS (#PF).
    sig_addr = put(m, _with(sig, signature=bytes(bad_sig)).pack())
    reg = built.phys(0x1000)
    assert m.encls(0, EnclsLeaf.EINIT, sig_addr, reg, put(m, b"")) == SgxStatus.SGX_INVALID_SIGNATURE


def test_einit_isvfamilyid_needs_kss(built: Enclave) -> None:
    sig = sign(built, isvfamilyid=b"\x01" * 16)
    assert einit(built.m, built, sig) == SgxStatus.SGX_INVALID_SIG_STRUCT
    m = small_machine()
    kss = build_enclave(m, attributes=int(Attributes.MODE64BIT | Attributes.KSS), init=False)
    assert einit(m, kss, sign(kss, isvfamilyid=b"\x01" * 16)) == SgxStatus.SUCCESS
    assert kss.state.isv_family_id == b"\x01" * 16


def test_einit_invalid_measurement(built: Enclave) -> None:
    assert einit(built.m, built, sign(built, mrenclave=b"\x11" * 32)) == SgxStatus.SGX_INVALID_MEASUREMENT
    # An unmeasured page still changes MRENCLAVE (its EADD block).
    m = small_machine()
    encl = build_enclave(m, [reg_page(0, measure=False)], init=False)
    wrong = expected_mrenclave(encl.size, 1, [])
    assert einit(m, encl, sign(encl, mrenclave=wrong)) == SgxStatus.SGX_INVALID_MEASUREMENT
    assert einit(m, encl, sign(encl)) == SgxStatus.SUCCESS


def test_einit_attribute_checks(built: Enclave) -> None:
    m = built.m
    debug = int(Attributes.MODE64BIT | Attributes.DEBUG)
    assert einit(m, built, sign(built, attributes=debug)) == SgxStatus.SGX_INVALID_ATTRIBUTE
    # Masked out: accepted for this check.
    assert einit(m, built, sign(built, xfrm=0x7)) == SgxStatus.SGX_INVALID_ATTRIBUTE
    assert einit(m, built, sign(built, miscselect=1)) == SgxStatus.SGX_INVALID_ATTRIBUTE
    assert (
        einit(
            m,
            built,
            sign(
                built,
                attributes=debug,
                attributes_mask=int(Attributes.MODE64BIT),
                xfrm=0x7,
                xfrm_mask=0x3,
                miscselect=1,
                misc_mask=0,
            ),
        )
        == SgxStatus.SUCCESS
    )


def test_einit_einittokenkey_needs_le_key() -> None:
    m = small_machine()
    attrs = int(Attributes.MODE64BIT | Attributes.EINITTOKENKEY)
    encl = build_enclave(m, attributes=attrs, init=False)
    # The enclave's MRSIGNER is not IA32_SGXLEPUBKEYHASH: INVALID_ATTRIBUTE (before the token check).
    assert einit(m, encl, sign(encl), set_le_hash=False) == SgxStatus.SGX_INVALID_ATTRIBUTE
    assert einit(m, encl, sign(encl)) == SgxStatus.SUCCESS


def test_einit_zero_token_requires_le_hash(built: Enclave) -> None:
    # The Linux path: EINITTOKEN.VALID = 0, so MRSIGNER must equal IA32_SGXLEPUBKEYHASH.
    m = built.m
    assert einit(m, built, sign(built), set_le_hash=False) == SgxStatus.SGX_INVALID_EINITTOKEN
    m.cpus[1].le_pubkey_hash = crypto.mrsigner(sign(built).modulus)
    # The MSRs of the executing logical processor count, not another one's.
    assert einit(m, built, sign(built), set_le_hash=False, cpu=0) == SgxStatus.SGX_INVALID_EINITTOKEN
    assert einit(m, built, sign(built), set_le_hash=False, cpu=1) == SgxStatus.SUCCESS


# --------------------------------------------------------------------------------------------
# EINIT with a launch token (VALID = 1)

LE_HASH = b"\x4c" * 32  # IA32_SGXLEPUBKEYHASH: a launch enclave signed by some other key


def _token(
    m: Machine, encl: Enclave, sig: Sigstruct, *, mac_ok: bool = True, **changes: object
) -> EinitToken:
    """A launch token for ``encl`` MACed with the EINITTOKEN key an LE would get from EGETKEY."""
    tok = EinitToken(
        valid=1,
        attributes=encl.secs.attributes,
        xfrm=encl.secs.xfrm,
        mrenclave=sig.mrenclave,
        mrsigner=crypto.mrsigner(sig.modulus),
        cpusvnle=m.cpusvn,
        isvprodidle=1,
        isvsvnle=2,
        maskedattributesle=int(Attributes.MODE64BIT | Attributes.EINITTOKENKEY | Attributes.INIT),
        maskedxfrmle=0x3,
        keyid=b"\x33" * 32,
    )
    tok = dataclasses.replace(tok, **changes)  # type: ignore[arg-type]
    deps = crypto.KeyDependencies(
        keyname=int(KeyName.EINITTOKEN),
        isvprodid=tok.isvprodidle,
        isvsvn=tok.isvsvnle,
        ownerepoch=m.owner_epoch,
        attributes=struct.pack("<QQ", tok.maskedattributesle, tok.maskedxfrmle),
        mrsigner=LE_HASH,
        keyid=tok.keyid,
        seal_fuses=m.seal_fuses,
        cpusvn=tok.cpusvnle,
        miscselect=tok.maskedmiscselectle,
    )
    mac = crypto.aes_cmac(crypto.derive_key(m.fused_secret, deps), tok.body())
    return dataclasses.replace(tok, mac=mac if mac_ok else bytes(16))


def _einit_token(m: Machine, encl: Enclave, sig: Sigstruct, tok: EinitToken) -> LeafResult:
    m.cpus[0].le_pubkey_hash = LE_HASH
    return einit(m, encl, sig, token=tok, set_le_hash=False)


def test_einit_token_success(built: Enclave) -> None:
    m = built.m
    m.encls(0, EnclsLeaf.EPA, 3, built.pool.alloc())  # any leaf: takes the CPUSVN snapshot
    sig = sign(built, key=other_signing_key())
    assert _einit_token(m, built, sig, _token(m, built, sig)) == SgxStatus.SUCCESS
    assert built.state.mrsigner == crypto.mrsigner(sig.modulus) != LE_HASH


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"maskedattributesle": int(Attributes.MODE64BIT | Attributes.DEBUG)},
            SgxStatus.SGX_INVALID_EINITTOKEN,
        ),
        ({"reserved2": b"\x01" + bytes(31)}, SgxStatus.SGX_INVALID_EINITTOKEN),
        ({"valid": 3}, SgxStatus.SGX_INVALID_EINITTOKEN),
        ({"cpusvnle": b"\xff" * 16}, SgxStatus.SGX_INVALID_CPUSVN),
        ({"mrenclave": b"\x01" * 32}, SgxStatus.SGX_INVALID_MEASUREMENT),
        ({"mrsigner": b"\x01" * 32}, SgxStatus.SGX_INVALID_MEASUREMENT),
        ({"attributes": int(Attributes.MODE64BIT | Attributes.DEBUG)}, SgxStatus.SGX_INVALID_ATTRIBUTE),
        ({"xfrm": 0x7}, SgxStatus.SGX_INVALID_ATTRIBUTE),
    ],
    ids=["debug-le", "reserved", "valid-bits", "cpusvn", "mrenclave", "mrsigner", "attributes", "xfrm"],
)
def test_einit_token_failures(built: Enclave, changes: dict[str, object], expected: SgxStatus) -> None:
    m = built.m
    sig = sign(built)
    assert _einit_token(m, built, sig, _token(m, built, sig, **changes)) == expected  # type: ignore[arg-type]
    assert not built.state.initialized


def test_einit_token_mac(built: Enclave) -> None:
    m = built.m
    sig = sign(built)
    assert (
        _einit_token(m, built, sig, _token(m, built, sig, mac_ok=False)) == SgxStatus.SGX_INVALID_EINITTOKEN
    )
    # The MAC is checked before the token's MRENCLAVE (a forged token cannot reach that check).
    forged = _token(m, built, sig, mac_ok=False, mrenclave=b"\x01" * 32)
    assert _einit_token(m, built, sig, forged) == SgxStatus.SGX_INVALID_EINITTOKEN
    # A debug launch enclave's token for a debug enclave is fine.
    m2 = small_machine()
    dbg = build_enclave(m2, debug=True, init=False)
    sig2 = sign(dbg)
    tok = _token(m2, dbg, sig2, maskedattributesle=int(Attributes.MODE64BIT | Attributes.DEBUG))
    assert _einit_token(m2, dbg, sig2, tok) == SgxStatus.SUCCESS
