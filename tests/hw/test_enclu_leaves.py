"""hw.enclu in-enclave leaves: EREPORT, EGETKEY, EACCEPT, EACCEPTCOPY, EMODPE.

Each leaf's success path and its documented outcomes (SDM pseudo-code; sgx-architecture.md
§4.11, §4.13, §4.14), including the kernel selftests augment, augment_via_eaccept, tcs_create and
the remove_added_page_* access checks, and sealing across a CPUSVN rise (EUPDATESVN).
"""

from __future__ import annotations

import struct

import greenlet
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.hw.enclu_helpers import (
    EGETKEY,
    EREPORT,
    GET_FROM_ADDRESS,
    MAGIC,
    NOP,
    PROGRAM,
    PUT_TO_ADDRESS,
    RAW_EACCEPT,
    RAW_EACCEPTCOPY,
    RAW_EGETKEY,
    RAW_EMODPE,
    RAW_EREPORT,
    Enclave,
    build_enclave,
)

from sgxsim.hw import arch, crypto
from sgxsim.hw.arch import (
    PAGE_SIZE,
    Attributes,
    EnclsLeaf,
    Fault,
    KeyName,
    KeyPolicy,
    Keyrequest,
    PageType,
    Report,
    SecinfoFlags,
    SgxStatus,
    Targetinfo,
    Tcs,
    Vector,
    secinfo_flags,
)
from sgxsim.hw.cpu import MicrocodePatch
from sgxsim.hw.enclu import HARDCODED_PKCS1_5_PADDING, EnclaveExit
from sgxsim.hw.machine import Machine, MachineConfig

R, W, X = int(SecinfoFlags.R), int(SecinfoFlags.W), int(SecinfoFlags.X)
PENDING, MODIFIED, PR = int(SecinfoFlags.PENDING), int(SecinfoFlags.MODIFIED), int(SecinfoFlags.PR)
REG, TCS, TRIM = int(PageType.PT_REG), int(PageType.PT_TCS), int(PageType.PT_TRIM)
OTHER_BASE = 0x7E00_0000_0000


@pytest.fixture
def m() -> Machine:
    return Machine()


@pytest.fixture
def encl(m: Machine) -> Enclave:
    e = build_enclave(m)
    assert e.init_status == SgxStatus.SUCCESS
    return e


@pytest.fixture
def deep(m: Machine) -> Enclave:
    """An enclave with NSSA = 8: several faulting entries can stack up on one TCS."""
    e = build_enclave(m, nssa=8)
    assert e.init_status == SgxStatus.SUCCESS
    return e


def eexit(res: object) -> EnclaveExit:
    assert isinstance(res, EnclaveExit) and not res.is_aex, res
    return res


def aex_fault(res: object) -> Fault | None:
    assert isinstance(res, EnclaveExit) and res.is_aex, res
    return res.fault


def secinfo(encl: Enclave, flags: int, tcs: int | None = None, reserved: int = 0) -> int:
    """A SECINFO in the calling TCS's scratch page (64-byte aligned); its enclave address."""
    tcs = encl.tcs1 if tcs is None else tcs
    si = encl.la("scratch1" if tcs == encl.tcs1 else "scratch2") + 2048
    eexit(encl.copy_in(si, struct.pack("<Q", flags) + struct.pack("<Q", reserved) + bytes(48), tcs))
    return si


def eaccept(encl: Enclave, flags: int, page: int, tcs: int | None = None) -> int | Fault | None:
    """EACCEPT from inside; its RAX, or the fault of the AEX it caused."""
    si = secinfo(encl, flags, tcs)
    op = encl.op(RAW_EACCEPT, si, page, 0xFFFF)
    res = encl.enter(op, tcs)
    if isinstance(res, EnclaveExit) and res.is_aex:
        return res.fault
    eexit(res)
    return encl.host_u64(op + 24)


def state_of(encl: Enclave) -> object:
    return encl.m.epc.secs_state[encl.secs_index]


# ------------------------------------------------------------------------------------------------
# EREPORT


def targetinfo_of(e: Enclave) -> Targetinfo:
    st_ = e.m.epc.secs_state[e.secs_index]
    return Targetinfo(
        measurement=st_.mrenclave,
        attributes=st_.attributes,
        xfrm=st_.xfrm,
        miscselect=st_.miscselect,
        config_svn=st_.config_svn,
        config_id=st_.config_id,
    )


def ereport(e: Enclave, ti: Targetinfo | bytes, reportdata: bytes = b"") -> Report:
    raw = ti if isinstance(ti, bytes) else ti.pack()
    op = e.host_page()
    e.host_write(op, struct.pack("<Q", EREPORT) + raw + reportdata.ljust(64, b"\0"))
    eexit(e.enter(op))
    return Report.unpack(e.host_read(op + 584, Report.SIZE))


def egetkey(e: Enclave, req: Keyrequest) -> tuple[int, bytes]:
    op = e.host_page()
    e.host_write(op, struct.pack("<Q", EGETKEY) + req.pack())
    eexit(e.enter(op))
    return e.host_u64(op + 520), e.host_read(op + 528, 16)


def egetkey_fault(e: Enclave, req: Keyrequest) -> Fault | None:
    op = e.host_page()
    e.host_write(op, struct.pack("<Q", EGETKEY) + req.pack())
    return aex_fault(e.enter(op))


def test_ereport_fields_and_mac_verifiable_only_by_target(m: Machine) -> None:
    a = build_enclave(m, isvprodid=7, isvsvn=3)
    b = build_enclave(m, program=PROGRAM + "# enclave B\n", base=OTHER_BASE)
    assert a.mrenclave != b.mrenclave
    report = ereport(a, targetinfo_of(b), b"hello")
    sa = a.m.epc.secs_state[a.secs_index]
    assert report.cpusvn == m.cpusvn
    assert report.mrenclave == a.mrenclave and report.mrsigner == a.mrsigner
    assert report.attributes == sa.attributes and report.attributes & Attributes.INIT
    assert report.xfrm == sa.xfrm and report.miscselect == sa.miscselect
    assert (report.isvprodid, report.isvsvn) == (7, 3)
    assert report.reportdata == b"hello".ljust(64, b"\0")
    assert report.keyid == m.cr_report_keyid
    # The target derives the REPORT key (KEYID from the report) and checks the MAC ...
    status, key_b = egetkey(b, Keyrequest(keyname=KeyName.REPORT, keyid=report.keyid))
    assert status == SgxStatus.SUCCESS
    assert crypto.aes_cmac(key_b, report.body()) == report.mac
    # ... another enclave cannot: its REPORT key is bound to its own identity.
    status, key_a = egetkey(a, Keyrequest(keyname=KeyName.REPORT, keyid=report.keyid))
    assert status == SgxStatus.SUCCESS and key_a != key_b
    assert crypto.aes_cmac(key_a, report.body()) != report.mac
    # A report targeting itself verifies with its own key.
    self_report = ereport(a, targetinfo_of(a))
    assert crypto.aes_cmac(key_a, self_report.body()) == self_report.mac
    # EREPORT keys on the caller's SECS.PADDING, EGETKEY on the hard-coded constant: equal here.
    assert sa.padding == HARDCODED_PKCS1_5_PADDING


def test_ereport_mac_changes_with_target_identity(m: Machine) -> None:
    a = build_enclave(m)
    b = build_enclave(m, program=PROGRAM + "# B\n", base=OTHER_BASE)
    ti = targetinfo_of(b)
    r1 = ereport(a, ti)
    r2 = ereport(
        a, Targetinfo(measurement=ti.measurement, attributes=ti.attributes, xfrm=ti.xfrm, miscselect=1)
    )
    assert r1.body() == r2.body() and r1.mac != r2.mac


def test_ereport_targetinfo_reserved_is_gp(encl: Enclave) -> None:
    raw = bytearray(targetinfo_of(encl).pack())
    raw[200] = 1
    op = encl.host_page()
    encl.host_write(op, struct.pack("<Q", EREPORT) + bytes(raw) + bytes(64))
    assert aex_fault(encl.enter(op)) == Fault(Vector.GP)


def test_ereport_operand_checks(deep: Enclave) -> None:
    s = deep.la("scratch1")
    eexit(deep.copy_in(s, targetinfo_of(deep).pack()))
    cases = [
        ((s + 64, s + 512, s + 1024), Fault(Vector.GP)),  # TARGETINFO not 512-aligned
        ((s, s + 520, s + 1024), Fault(Vector.GP)),  # REPORTDATA not 128-aligned
        ((s, s + 512, s + 1024 + 16), Fault(Vector.GP)),  # OUTPUT not 512-aligned
        ((s, s + 512, deep.host_page()), Fault(Vector.GP)),  # OUTPUT outside ELRANGE
        ((s, s + 512, deep.la("code")), Fault(Vector.PF, 0x8007, deep.la("code"))),  # not W in PTE/EPCM
    ]
    for (ti, rd, out), want in cases:
        fault = aex_fault(deep.enter(deep.op(RAW_EREPORT, ti, rd, out)))
        if want.vector == Vector.PF:
            assert fault is not None and fault.vector == Vector.PF and fault.addr == want.addr
        else:
            assert fault == want
    # The code page is read-only in the PTE as well: that ordinary #PF comes first.
    assert aex_fault(deep.enter(deep.op(RAW_EREPORT, s, s + 512, deep.la("code")))) == Fault(
        Vector.PF, 0x7, deep.la("code")
    )


# ------------------------------------------------------------------------------------------------
# EGETKEY


def seal_request(**kw: object) -> Keyrequest:
    fields: dict[str, object] = {
        "keyname": KeyName.SEAL,
        "keypolicy": KeyPolicy.MRENCLAVE,
        "attributemask": 0xFFFF_FFFF_FFFF_FFFF,
        "xfrmmask": 0,
    }
    fields.update(kw)
    return Keyrequest(**fields)  # type: ignore[arg-type]


def test_seal_key_identity_bindings(m: Machine) -> None:
    a = build_enclave(m, isvprodid=1, isvsvn=2)
    b = build_enclave(m, program=PROGRAM + "# B\n", base=OTHER_BASE, isvprodid=1, isvsvn=2)
    cpusvn = m.cpusvn
    by_mre = [egetkey(e, seal_request(cpusvn=cpusvn)) for e in (a, b, a)]
    assert all(s == SgxStatus.SUCCESS for s, _ in by_mre)
    assert by_mre[0][1] == by_mre[2][1] != by_mre[1][1]
    by_signer = [egetkey(e, seal_request(cpusvn=cpusvn, keypolicy=KeyPolicy.MRSIGNER)) for e in (a, b)]
    assert by_signer[0] == by_signer[1]
    # Older ISVSVN, other KEYID, other OWNEREPOCH: other keys.
    assert egetkey(a, seal_request(cpusvn=cpusvn, isvsvn=1))[1] != by_mre[0][1]
    assert egetkey(a, seal_request(cpusvn=cpusvn, keyid=b"k" * 32))[1] != by_mre[0][1]
    m.owner_epoch = bytes(16)
    assert egetkey(a, seal_request(cpusvn=cpusvn))[1] != by_mre[0][1]


def test_seal_key_other_signer_differs(m: Machine) -> None:
    a = build_enclave(m)
    c = build_enclave(m, base=OTHER_BASE, other_key=True)
    req = seal_request(cpusvn=m.cpusvn, keypolicy=KeyPolicy.MRSIGNER)
    assert egetkey(a, req)[1] != egetkey(c, req)[1]


def test_egetkey_svn_outcomes(m: Machine) -> None:
    e = build_enclave(m, isvsvn=2)
    cur = m.cpusvn
    assert egetkey(e, seal_request(cpusvn=cur, isvsvn=3))[0] == SgxStatus.SGX_INVALID_ISVSVN
    above = bytes([cur[0] + 1]) + cur[1:]
    assert egetkey(e, seal_request(cpusvn=above))[0] == SgxStatus.SGX_INVALID_CPUSVN
    # Component-wise: lower in one component, higher in another is still "beyond".
    mixed = bytes([cur[0] - 1, cur[1] + 1]) + cur[2:]
    assert egetkey(e, seal_request(cpusvn=mixed))[0] == SgxStatus.SGX_INVALID_CPUSVN
    older = bytes([cur[0] - 1]) + cur[1:]
    status, k_old = egetkey(e, seal_request(cpusvn=older))
    assert status == SgxStatus.SUCCESS and k_old != egetkey(e, seal_request(cpusvn=cur))[1]


def test_egetkey_keyname_and_attribute_outcomes(m: Machine) -> None:
    e = build_enclave(m)
    assert egetkey(e, Keyrequest(keyname=5))[0] == SgxStatus.SGX_INVALID_KEYNAME
    for name in (KeyName.PROVISION, KeyName.PROVISION_SEAL, KeyName.EINITTOKEN):
        assert egetkey(e, Keyrequest(keyname=name, cpusvn=m.cpusvn))[0] == SgxStatus.SGX_INVALID_ATTRIBUTE
    assert egetkey(e, Keyrequest(keyname=KeyName.REPORT))[0] == SgxStatus.SUCCESS


def test_provision_keys_ignore_owner_epoch_and_keyid(m: Machine) -> None:
    attrs = int(Attributes.MODE64BIT | Attributes.PROVISIONKEY | Attributes.EINITTOKENKEY)
    e = build_enclave(m, attributes=attrs, isvsvn=1)
    assert e.init_status == SgxStatus.SUCCESS
    cur = m.cpusvn
    prov = Keyrequest(keyname=KeyName.PROVISION, cpusvn=cur, isvsvn=1)
    pseal = Keyrequest(keyname=KeyName.PROVISION_SEAL, cpusvn=cur, isvsvn=1)
    seal = seal_request(cpusvn=cur)
    tok = Keyrequest(keyname=KeyName.EINITTOKEN, cpusvn=cur)
    before = {n: egetkey(e, r) for n, r in (("p", prov), ("ps", pseal), ("s", seal), ("t", tok))}
    assert all(s == SgxStatus.SUCCESS for s, _ in before.values())
    assert len({k for _, k in before.values()}) == 4
    assert (
        egetkey(e, Keyrequest(keyname=KeyName.PROVISION, cpusvn=cur, isvsvn=1, keyid=b"x" * 32))
        == before["p"]
    )
    assert egetkey(e, Keyrequest(keyname=KeyName.PROVISION, cpusvn=cur, isvsvn=2))[0] == (
        SgxStatus.SGX_INVALID_ISVSVN
    )
    m.owner_epoch = b"\x55" * 16
    assert egetkey(e, prov) == before["p"] and egetkey(e, pseal) == before["ps"]
    assert egetkey(e, seal) != before["s"] and egetkey(e, tok) != before["t"]
    m.seal_fuses = b"\x66" * 16
    assert egetkey(e, prov) == before["p"]  # PROVISION omits SEAL_FUSES
    assert egetkey(e, pseal) != before["ps"]


@pytest.mark.parametrize(
    "req",
    [
        Keyrequest(keyname=KeyName.SEAL, reserved1=1),
        Keyrequest(keyname=KeyName.SEAL, reserved2=b"\x01" + bytes(433)),
        Keyrequest(keyname=KeyName.SEAL, keypolicy=0x40),  # reserved policy bit
        Keyrequest(keyname=KeyName.SEAL, keypolicy=int(KeyPolicy.CONFIGID)),  # KSS-only
        Keyrequest(keyname=KeyName.SEAL, keypolicy=int(KeyPolicy.ISVFAMILYID)),
        Keyrequest(keyname=KeyName.SEAL, configsvn=1),  # CONFIGSVN without KSS
        Keyrequest(keyname=5, reserved1=1),  # #GP is checked before the key name
    ],
)
def test_egetkey_gp(encl: Enclave, req: Keyrequest) -> None:
    assert egetkey_fault(encl, req) == Fault(Vector.GP)


def test_egetkey_kss_policy_and_configsvn(m: Machine) -> None:
    e = build_enclave(m, attributes=int(Attributes.MODE64BIT | Attributes.KSS))
    cur = m.cpusvn
    status, _ = egetkey(e, seal_request(cpusvn=cur, keypolicy=int(KeyPolicy.MRENCLAVE | KeyPolicy.CONFIGID)))
    assert status == SgxStatus.SUCCESS
    # CONFIGSVN above SECS.CONFIGSVN (0) is SGX_INVALID_ISVSVN.
    assert egetkey(e, seal_request(cpusvn=cur, configsvn=1))[0] == SgxStatus.SGX_INVALID_ISVSVN


def test_egetkey_operand_checks(deep: Enclave) -> None:
    s = deep.la("scratch1")
    eexit(deep.copy_in(s, seal_request(cpusvn=deep.m.cpusvn).pack()))
    gp = Fault(Vector.GP)
    assert aex_fault(deep.enter(deep.op(RAW_EGETKEY, s + 64, s + 1024))) == gp
    assert aex_fault(deep.enter(deep.op(RAW_EGETKEY, s, s + 1032))) == gp
    assert aex_fault(deep.enter(deep.op(RAW_EGETKEY, s, deep.host_page()))) == gp
    # Output page made read-only in the EPCM (EMODPR + ETRACK + EACCEPT): an SGX #PF.
    out = deep.la("data2")
    assert deep.emodpr(out, R) == SgxStatus.SUCCESS and deep.etrack() == SgxStatus.SUCCESS
    assert eaccept(deep, secinfo_flags(REG, R, PR), out) == SgxStatus.SUCCESS
    assert aex_fault(deep.enter(deep.op(RAW_EGETKEY, s, out))) == Fault(Vector.PF, 0x8007, out)
    op = deep.op(RAW_EGETKEY, s, s + 1024, 0xFF)
    eexit(deep.enter(op))
    assert deep.host_u64(op + 24) == SgxStatus.SUCCESS


def test_seal_key_survives_cpusvn_rise() -> None:
    """Data sealed before a late microcode update unseals after it: a key for the OLDER CPUSVN."""
    m = Machine()
    early = m.config.early_microcode
    e = build_enclave(m)
    old = m.cpusvn
    assert old == early.svn
    _, k_old = egetkey(e, seal_request(cpusvn=old))
    newer = MicrocodePatch.with_svns(early.revision + 1, base=2, late_microcode=3, name="late")
    assert egetkey(e, seal_request(cpusvn=newer.svn))[0] == SgxStatus.SGX_INVALID_CPUSVN
    # The update: load the patch everywhere, empty the EPC, EUPDATESVN, rebuild the same enclave.
    for cpu in range(len(m.cpus)):
        assert m.load_microcode(cpu, newer)
    assert m.cpusvn == old  # loading alone does not change CR_CPUSVN
    for phys in e.phys.values():
        assert m.encls(0, EnclsLeaf.EREMOVE, 0, phys) == SgxStatus.SUCCESS
    assert m.encls(0, EnclsLeaf.EREMOVE, 0, e.secs_phys) == SgxStatus.SUCCESS
    assert m.encls(0, EnclsLeaf.EUPDATESVN) == SgxStatus.SUCCESS
    assert m.cpusvn == newer.svn
    e2 = build_enclave(m)
    assert e2.mrenclave == e.mrenclave and e2.init_status == SgxStatus.SUCCESS
    status, k_old_again = egetkey(e2, seal_request(cpusvn=old))
    assert status == SgxStatus.SUCCESS and k_old_again == k_old
    status, k_new = egetkey(e2, seal_request(cpusvn=newer.svn))
    assert status == SgxStatus.SUCCESS and k_new != k_old
    beyond = bytes([newer.svn[0], newer.svn[1] + 1]) + newer.svn[2:]
    assert egetkey(e2, seal_request(cpusvn=beyond))[0] == SgxStatus.SGX_INVALID_CPUSVN
    assert ereport(e2, targetinfo_of(e2)).cpusvn == newer.svn


@settings(max_examples=20, deadline=None)
@given(st.binary(min_size=16, max_size=16))
def test_cpusvn_request_outcome_is_componentwise(req_svn: bytes) -> None:
    m = Machine()
    e = build_enclave(m)
    cur = m.cpusvn
    status, _ = egetkey(e, seal_request(cpusvn=req_svn))
    beyond = any(r > c for r, c in zip(req_svn, cur, strict=True))
    assert status == (SgxStatus.SGX_INVALID_CPUSVN if beyond else SgxStatus.SUCCESS)


# ------------------------------------------------------------------------------------------------
# EACCEPT (selftests augment, augment_via_eaccept, tcs_create, remove_added_page_*)


def test_augment(encl: Enclave) -> None:
    hole = encl.la("hole")
    # The kernel's fault handler EAUGs on the first (not-present) fault and maps the page.
    encl.pt.unmap(hole)
    assert aex_fault(encl.enter(encl.op(PUT_TO_ADDRESS, MAGIC, hole))) == Fault(Vector.PF, 0x6, hole)
    encl.eaug(hole, nx=False)
    res = encl.resume()
    assert aex_fault(res) == Fault(Vector.PF, 0x8007, hole)  # the EPCM PENDING violation
    assert eaccept(encl, secinfo_flags(REG, R | W, PENDING), hole, encl.tcs2) == SgxStatus.SUCCESS
    eexit(encl.resume())
    op = encl.op(GET_FROM_ADDRESS, 0, hole)
    eexit(encl.enter(op))
    assert encl.host_u64(op + 8) == MAGIC


def test_augment_via_eaccept(encl: Enclave) -> None:
    hole = encl.la("hole")
    si = secinfo(encl, secinfo_flags(REG, R | W, PENDING))
    op = encl.op(RAW_EACCEPT, si, hole, 0xFFFF)
    # No EPC page and no PTE yet: an ordinary not-present read fault (no SGX bit) ...
    assert aex_fault(encl.enter(op)) == Fault(Vector.PF, 0x4, hole)
    encl.eaug(hole)  # ... which Linux handles with EAUG, then the EACCEPT is retried.
    eexit(encl.resume())
    assert encl.host_u64(op + 24) == SgxStatus.SUCCESS
    e = encl.m.epc.epcm
    idx = encl.epc_index(hole)
    assert not e.pending[idx] and int(e.rwx[idx]) == R | W


def test_eaccept_attribute_mismatch(encl: Enclave) -> None:
    hole = encl.la("hole")
    encl.eaug(hole)
    assert eaccept(encl, secinfo_flags(REG, R, PENDING), hole) == SgxStatus.SGX_PAGE_ATTRIBUTES_MISMATCH
    assert eaccept(encl, secinfo_flags(REG, R | W, PR), hole) == SgxStatus.SGX_PAGE_ATTRIBUTES_MISMATCH
    assert eaccept(encl, secinfo_flags(REG, R | W, PENDING), hole) == SgxStatus.SUCCESS
    # Accepting again: the page is no longer PENDING.
    assert eaccept(encl, secinfo_flags(REG, R | W, PENDING), hole) == SgxStatus.SGX_PAGE_ATTRIBUTES_MISMATCH


def test_eaccept_not_tracked_until_etrack(encl: Enclave) -> None:
    page = encl.la("data2")
    assert encl.emodpr(page, R) == SgxStatus.SUCCESS
    assert eaccept(encl, secinfo_flags(REG, R, PR), page) == SgxStatus.SGX_NOT_TRACKED
    assert encl.etrack() == SgxStatus.SUCCESS
    assert eaccept(encl, secinfo_flags(REG, R, PR), page) == SgxStatus.SUCCESS
    assert not encl.m.epc.epcm.pr[encl.epc_index(page)]


def test_eaccept_not_tracked_after_a_second_emodpr(encl: Enclave) -> None:
    page = encl.la("data2")
    assert encl.emodpr(page, R | W) == SgxStatus.SUCCESS and encl.etrack() == SgxStatus.SUCCESS
    assert eaccept(encl, secinfo_flags(REG, R | W, PR), page) == SgxStatus.SUCCESS
    assert encl.emodpr(page, R) == SgxStatus.SUCCESS
    assert eaccept(encl, secinfo_flags(REG, R, PR), page) == SgxStatus.SGX_NOT_TRACKED


def test_eaccept_not_tracked_while_a_thread_from_before_etrack_is_inside(encl: Enclave) -> None:
    m = encl.m
    page = encl.la("data2")
    assert encl.emodpr(page, R) == SgxStatus.SUCCESS
    main = greenlet.getcurrent()
    parked: list[object] = []

    def hook(lp: object) -> None:
        if getattr(lp, "id", None) == 1 and not parked:
            parked.append(greenlet.getcurrent())
            main.switch()

    results: list[object] = []
    m.on_enclave_step = hook
    inside = greenlet.greenlet(lambda: results.append(encl.enter(encl.op(NOP), cpu=1)))
    inside.switch()  # CPU 1 is now inside the enclave, parked at its first access
    assert m.cpus[1].in_enclave
    assert encl.etrack() == SgxStatus.SUCCESS  # CPU 1 was inside: it must leave first
    assert eaccept(encl, secinfo_flags(REG, R, PR), page, encl.tcs2) == SgxStatus.SGX_NOT_TRACKED
    assert encl.etrack() == SgxStatus.SGX_PREV_TRK_INCMPL
    parked[0].switch()  # type: ignore[attr-defined]
    eexit(results[0])
    assert eaccept(encl, secinfo_flags(REG, R, PR), page, encl.tcs2) == SgxStatus.SUCCESS


def test_trimmed_page_accept_then_access_faults(encl: Enclave) -> None:
    page = encl.la("data2")
    eexit(encl.enter(encl.op(PUT_TO_ADDRESS, MAGIC, page)))
    assert encl.emodt(page, TRIM) == SgxStatus.SUCCESS
    # remove_added_page_invalid_access: reading a trimmed page is an EPCM violation.
    assert aex_fault(encl.enter(encl.op(GET_FROM_ADDRESS, 0, page), encl.tcs2)) == Fault(
        Vector.PF, 0x8005, page
    )
    assert eaccept(encl, secinfo_flags(TRIM, 0, MODIFIED), page) == SgxStatus.SGX_NOT_TRACKED
    assert encl.etrack() == SgxStatus.SUCCESS
    assert eaccept(encl, secinfo_flags(TRIM, 0, MODIFIED), page) == SgxStatus.SUCCESS
    # ..._after_eaccept: still a PT_TRIM page.
    assert aex_fault(encl.enter(encl.op(GET_FROM_ADDRESS, 0, page))) == Fault(Vector.PF, 0x8005, page)


@pytest.mark.parametrize(
    "flags",
    [
        secinfo_flags(REG, R | W),  # REG needs PR or PENDING
        secinfo_flags(REG, R | W, PENDING | MODIFIED),
        secinfo_flags(TCS, 0, PENDING),  # TCS/TRIM need MODIFIED only
        secinfo_flags(TRIM, 0, MODIFIED | PR),
        secinfo_flags(PageType.PT_SECS, 0, PENDING),
        secinfo_flags(REG, R | W, PENDING) | 0x40,  # reserved flag bit
        secinfo_flags(REG, R | W, PENDING) | (1 << 20),
    ],
)
def test_eaccept_illegal_secinfo_is_gp(encl: Enclave, flags: int) -> None:
    encl.eaug(encl.la("hole"))
    assert eaccept(encl, flags, encl.la("hole")) == Fault(Vector.GP)


def test_eaccept_operand_checks(m: Machine) -> None:
    encl = build_enclave(m, nssa=8)
    other = build_enclave(m, base=OTHER_BASE)
    hole = encl.la("hole")
    si = secinfo(encl, secinfo_flags(REG, R | W, PENDING))
    gp = Fault(Vector.GP)
    assert aex_fault(encl.enter(encl.op(RAW_EACCEPT, si + 8, hole))) == gp  # SECINFO alignment
    assert aex_fault(encl.enter(encl.op(RAW_EACCEPT, si, hole + 8))) == gp  # page alignment
    assert aex_fault(encl.enter(encl.op(RAW_EACCEPT, si, encl.host_page()))) == gp  # outside ELRANGE
    host_si = encl.host_page()
    assert aex_fault(encl.enter(encl.op(RAW_EACCEPT, host_si, hole))) == gp  # SECINFO outside ELRANGE
    # SECINFO reserved bytes.
    eexit(encl.enter(encl.op(PUT_TO_ADDRESS, 1, si + 16)))
    assert aex_fault(encl.enter(encl.op(RAW_EACCEPT, si, hole))) == gp
    eexit(encl.enter(encl.op(PUT_TO_ADDRESS, 0, si + 16)))
    # Target mapped to another enclave's page: an EPCM #PF (read).
    encl.pt.map(hole, other.phys[other.la("data")])
    assert aex_fault(encl.enter(encl.op(RAW_EACCEPT, si, hole))) == Fault(Vector.PF, 0x8005, hole)
    # A TCS can be the target of EACCEPT only with TCS|MODIFIED; a PENDING REG SECINFO mismatches.
    op = encl.op(RAW_EACCEPT, si, encl.tcs2)
    eexit(encl.enter(op))
    assert encl.host_u64(op + 24) == SgxStatus.SGX_PAGE_ATTRIBUTES_MISMATCH


def _make_tcs_page(encl: Enclave, cssa: int = 0, nssa: int = 1, flags: int = 0) -> int:
    """tcs_create: EAUG+EACCEPT a page and an SSA page, write a TCS, EMODT it to PT_TCS, ETRACK."""
    tcs_la, ssa_la = encl.la("hole"), encl.la("hole") + PAGE_SIZE
    for la in (tcs_la, ssa_la):
        encl.eaug(la)
        assert eaccept(encl, secinfo_flags(REG, R | W, PENDING), la) == SgxStatus.SUCCESS
    tcs = Tcs(
        flags=flags,
        ossa=ssa_la - encl.base,
        cssa=cssa,
        nssa=nssa,
        oentry=encl.layout["code"],
        fslimit=0xFFFFFFFF,
        gslimit=0xFFFFFFFF,
    )
    eexit(encl.copy_in(tcs_la, tcs.pack()[:256]))
    assert encl.emodt(tcs_la, TCS) == SgxStatus.SUCCESS
    assert encl.etrack() == SgxStatus.SUCCESS
    return tcs_la


def test_tcs_create(encl: Enclave) -> None:
    tcs_la = _make_tcs_page(encl)
    # Not yet accepted: EENTER faults on the MODIFIED TCS.
    assert encl.enter(encl.op(NOP), tcs_la) == Fault(Vector.PF, 0x8007, tcs_la)
    assert eaccept(encl, secinfo_flags(TCS, 0, MODIFIED), tcs_la) == SgxStatus.SUCCESS
    op = encl.op(0, MAGIC)
    eexit(encl.enter(op, tcs_la))
    assert encl.copy_out(encl.la("data"), 8) == MAGIC.to_bytes(8, "little")


def test_tcs_create_aexnotify() -> None:
    """EACCEPT of a TCS with FLAGS.AEXNOTIFY (bit 1, not reserved) in an AEXNOTIFY enclave, then entry."""
    attrs = int(Attributes.MODE64BIT | Attributes.AEXNOTIFY)
    encl = build_enclave(Machine(), attributes=attrs, tcs_flags=arch.SGX_TCS_AEXNOTIFY)
    assert encl.init_status == SgxStatus.SUCCESS
    tcs_la = _make_tcs_page(encl, flags=arch.SGX_TCS_AEXNOTIFY)
    assert eaccept(encl, secinfo_flags(TCS, 0, MODIFIED), tcs_la) == SgxStatus.SUCCESS
    op = encl.op(0, MAGIC)
    eexit(encl.enter(op, tcs_la))
    assert encl.copy_out(encl.la("data"), 8) == MAGIC.to_bytes(8, "little")
    # A reserved FLAGS bit (63:2) is still refused.
    encl2 = build_enclave(Machine(), attributes=attrs, tcs_flags=arch.SGX_TCS_AEXNOTIFY)
    bad = _make_tcs_page(encl2, flags=arch.SGX_TCS_AEXNOTIFY | 0x4)
    assert eaccept(encl2, secinfo_flags(TCS, 0, MODIFIED), bad) == Fault(Vector.GP)


def test_tcs_accept_rejects_insane_tcs(encl: Enclave) -> None:
    tcs_la = _make_tcs_page(encl, cssa=1, nssa=1)
    assert eaccept(encl, secinfo_flags(TCS, 0, MODIFIED), tcs_la) == Fault(Vector.GP)


# ------------------------------------------------------------------------------------------------
# EACCEPTCOPY


def eacceptcopy(encl: Enclave, flags: int, dst: int, src: int) -> int | Fault | None:
    si = secinfo(encl, flags)
    op = encl.op(RAW_EACCEPTCOPY, si, dst, src, 0xFFFF)
    res = encl.enter(op)
    if isinstance(res, EnclaveExit) and res.is_aex:
        return res.fault
    eexit(res)
    return encl.host_u64(op + 32)


def test_eacceptcopy(encl: Enclave) -> None:
    hole, src = encl.la("hole"), encl.la("data")
    eexit(encl.copy_in(src, b"page contents" * 10))
    encl.eaug(hole)
    assert eacceptcopy(encl, secinfo_flags(REG, R), hole, src) == SgxStatus.SUCCESS
    e, idx = encl.m.epc.epcm, encl.epc_index(hole)
    assert int(e.rwx[idx]) == R and not e.pending[idx]
    assert encl.copy_out(hole, 130) == b"page contents" * 10
    # The page is now read-only in the EPCM.
    assert aex_fault(encl.enter(encl.op(PUT_TO_ADDRESS, 1, hole))) == Fault(Vector.PF, 0x8007, hole)
    # Not PENDING any more: a second copy mismatches.
    assert eacceptcopy(encl, secinfo_flags(REG, R), hole, src) == SgxStatus.SGX_PAGE_ATTRIBUTES_MISMATCH


@pytest.mark.parametrize(
    "flags", [secinfo_flags(REG, W), secinfo_flags(TCS, 0), secinfo_flags(REG, R) | 0x80]
)
def test_eacceptcopy_bad_secinfo_is_gp(encl: Enclave, flags: int) -> None:
    encl.eaug(encl.la("hole"))
    assert eacceptcopy(encl, flags, encl.la("hole"), encl.la("data")) == Fault(Vector.GP)


def test_eacceptcopy_source_and_alignment(encl: Enclave) -> None:
    hole = encl.la("hole")
    encl.eaug(hole)
    assert eacceptcopy(encl, secinfo_flags(REG, R), hole, encl.la("data") + 8) == Fault(Vector.GP)
    # The source must be a readable REG page of the enclave: a TCS is not.
    fault = eacceptcopy(encl, secinfo_flags(REG, R), hole, encl.tcs2)
    assert isinstance(fault, Fault) and fault.vector == Vector.PF and fault.error_code & 0x8000


# ------------------------------------------------------------------------------------------------
# EMODPE


def emodpe(encl: Enclave, flags: int, page: int) -> Fault | None:
    si = secinfo(encl, flags)
    res = encl.enter(encl.op(RAW_EMODPE, si, page))
    if isinstance(res, EnclaveExit) and res.is_aex:
        return res.fault
    eexit(res)
    return None


def test_emodpe_extends_only(encl: Enclave) -> None:
    page = encl.la("data2")
    e, idx = encl.m.epc.epcm, encl.epc_index(page)
    assert emodpe(encl, secinfo_flags(REG, X), page) is None
    assert int(e.rwx[idx]) == R | W | X
    assert emodpe(encl, secinfo_flags(REG, 0), page) is None  # nothing to add, nothing removed
    assert int(e.rwx[idx]) == R | W | X


def test_emodpe_w_without_r_on_unreadable_page_is_gp(encl: Enclave) -> None:
    page = encl.la("data2")
    assert encl.emodpr(page, 0) == SgxStatus.SUCCESS and encl.etrack() == SgxStatus.SUCCESS
    assert eaccept(encl, secinfo_flags(REG, 0, PR), page) == SgxStatus.SUCCESS
    assert emodpe(encl, secinfo_flags(REG, W), page) == Fault(Vector.GP)
    assert emodpe(encl, secinfo_flags(REG, R | W), page) is None
    assert int(encl.m.epc.epcm.rwx[encl.epc_index(page)]) == R | W


def test_emodpe_target_checks(deep: Enclave) -> None:
    hole = deep.la("hole")
    deep.eaug(hole)
    assert emodpe(deep, secinfo_flags(REG, X), hole) == Fault(Vector.PF, 0x8005, hole)  # PENDING
    assert emodpe(deep, secinfo_flags(REG, X), deep.tcs2) == Fault(Vector.PF, 0x8005, deep.tcs2)
    assert emodpe(deep, secinfo_flags(REG, X) | 0x40, deep.la("data")) == Fault(Vector.GP)
    assert emodpe(deep, secinfo_flags(REG, X), deep.la("data") + 64) == Fault(Vector.GP)


def test_sgx2_leaves_gp_on_sgx1_part() -> None:
    m = Machine(MachineConfig(sgx2=False))
    encl = build_enclave(m)
    assert eaccept(encl, secinfo_flags(REG, R | W, PENDING), encl.la("data")) == Fault(Vector.GP)
    assert emodpe(encl, secinfo_flags(REG, X), encl.la("data")) == Fault(Vector.GP)
