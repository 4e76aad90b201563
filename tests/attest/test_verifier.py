"""verify_quote: statuses, QVL matching and convergence, and one reason per failure class."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from cryptography.hazmat.primitives import serialization
from tests.attest.attest_world import FMSPC, LEVELS, NOW, PCE_ID, PPID, World, comps, isv_body

from sgxsim.attest import (
    CaKind,
    Collateral,
    PckExtension,
    TcbStatus,
    VerificationReason,
    VerifiedQuote,
    converge_tcb_status,
    verify_quote,
)
from sgxsim.errors import InvalidArgument, VerificationError

R = VerificationReason


def verify(
    world: World, quote: bytes, collateral: Collateral | None = None, now: dt.datetime = NOW
) -> VerifiedQuote:
    return verify_quote(quote, collateral or world.collateral(now), world.pki.root_der, now)


def reason(world: World, quote: bytes, collateral: Collateral | None = None, now: dt.datetime = NOW) -> R:
    with pytest.raises(VerificationError) as info:
        verify(world, quote, collateral, now)
    assert isinstance(info.value.reason, R)
    return info.value.reason


@pytest.mark.parametrize("version", [3, 4])
@pytest.mark.parametrize(
    ("level", "status", "advisories"),
    [
        ("uptodate", TcbStatus.UP_TO_DATE, ()),
        ("swhard", TcbStatus.SW_HARDENING_NEEDED, ("INTEL-SA-00615",)),
        ("config", TcbStatus.CONFIGURATION_NEEDED, ("INTEL-SA-00219",)),
        ("outofdate", TcbStatus.OUT_OF_DATE, ("INTEL-SA-00828", "INTEL-SA-00837")),
    ],
)
def test_status_per_tcb_level(
    world: World, version: int, level: str, status: TcbStatus, advisories: tuple[str, ...]
) -> None:
    v = verify(world, world.quote(level, version=version))
    assert v.accepted and v.status is status and v.platform_status is status
    assert v.qe_status is TcbStatus.UP_TO_DATE and v.advisory_ids == advisories
    assert v.tcb_level == LEVELS[level] and v.ca is CaKind.PLATFORM
    assert v.mr_enclave == isv_body(bytes(16)).mr_enclave and v.isv_prod_id == 7 and v.isv_svn == 3
    assert not v.debug and v.report_data.startswith(b"nonce:0001")
    assert v.pck.fmspc == FMSPC and v.pck.ppid == PPID and v.tcb_evaluation_data_number == 17


def test_revoked_level_is_genuine_but_not_accepted(world: World) -> None:
    v = verify(world, world.quote("revoked"))
    assert v.status is TcbStatus.REVOKED and not v.accepted and v.advisory_ids == ("INTEL-SA-00001",)


def test_superseded_at_is_the_next_level_up(world: World) -> None:
    assert verify(world, world.quote("uptodate")).superseded_at is None
    assert verify(world, world.quote("swhard")).superseded_at == LEVELS["uptodate"].tcb_date
    assert verify(world, world.quote("outofdate")).superseded_at == LEVELS["config"].tcb_date


def test_matching_uses_the_pck_tcb_not_the_quote_cpusvn(world: World) -> None:
    # After EUPDATESVN the enclave's CPUSVN is higher, but the PCK certificate is still the old one.
    pck = world.pck("swhard")
    body = isv_body(bytes(comps(9, 9, 9, 9, 9, 9, 9, 9, 9)))
    v = verify(world, world.quote(pck=pck, body=body))
    assert v.status is TcbStatus.SW_HARDENING_NEEDED and v.report_body.cpu_svn[0] == 9


def test_level_matching_is_component_wise() -> None:
    # One component below the UpToDate level (component 2, SGX late microcode) -> next level down.
    world = World.build()
    pck = world.pcs.add_pck_cert(PPID, bytes(comps(6, 5, 3, 3, 4, 1, 0, 3)), 13)
    assert verify(world, world.quote(pck=pck)).status is TcbStatus.SW_HARDENING_NEEDED
    # PCESVN below a level's pcesvn also drops the level.
    pck = world.pcs.add_pck_cert(PPID, bytes(comps(6, 6, 3, 3, 4, 1, 0, 3)), 12)
    assert verify(world, world.quote(pck=pck)).status is TcbStatus.OUT_OF_DATE


def test_tcb_not_supported(world: World) -> None:
    ext = PckExtension.for_tcb(ppid=PPID, cpusvn=bytes(16), pcesvn=1, pce_id=PCE_ID, fmspc=FMSPC)
    pck = world.pki.issue_pck(ext, ca="platform")
    assert reason(world, world.quote(pck=pck)) is R.TCB_NOT_SUPPORTED


@pytest.mark.parametrize(
    ("level", "qe_svn", "status"),
    [
        ("uptodate", 6, TcbStatus.OUT_OF_DATE),
        ("swhard", 6, TcbStatus.OUT_OF_DATE),
        ("config", 6, TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED),
        ("outofdate", 6, TcbStatus.OUT_OF_DATE),
        ("uptodate", 7, TcbStatus.OUT_OF_DATE),
        ("uptodate", 9, TcbStatus.UP_TO_DATE),
    ],
)
def test_qe_status_converges(world: World, level: str, qe_svn: int, status: TcbStatus) -> None:
    v = verify(world, world.quote(level, qe_isv_svn=qe_svn))
    assert v.status is status and v.accepted == (status is not TcbStatus.REVOKED)
    if 6 <= qe_svn < 8:
        assert "INTEL-SA-00615" in v.advisory_ids and v.qe_status is TcbStatus.OUT_OF_DATE


def test_qe_isvsvn_below_every_level_is_not_supported(world: World) -> None:
    # QVL: EnclaveReportVerifier -> ISVSVN_NOT_SUPPORTED, converged to STATUS_TCB_NOT_SUPPORTED.
    assert reason(world, world.quote("uptodate", qe_isv_svn=5)) is R.TCB_NOT_SUPPORTED


def test_converge_table_is_exhaustive() -> None:
    for platform, qe in itertools.product(TcbStatus, TcbStatus):
        got = converge_tcb_status(platform, qe)
        if qe is TcbStatus.REVOKED:
            assert got is TcbStatus.REVOKED
        elif qe is TcbStatus.OUT_OF_DATE and platform.value in ("UpToDate", "SWHardeningNeeded"):
            assert got is TcbStatus.OUT_OF_DATE
        elif qe is TcbStatus.OUT_OF_DATE and platform.value.startswith("Configuration"):
            assert got is TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED
        else:
            assert got is platform


def test_processor_ca_quotes_verify() -> None:
    world = World.build(ca="processor")
    v = verify_quote(world.quote("config"), world.collateral(ca="processor"), world.pki.root_cert, NOW)
    assert v.ca is CaKind.PROCESSOR and v.status is TcbStatus.CONFIGURATION_NEEDED


def test_tampered_and_stale_collateral(world: World) -> None:
    q = world.quote("uptodate")
    col = world.collateral()
    tampered = col.tcb_info.replace('"tcbStatus":"OutOfDate"', '"tcbStatus":"UpToDate"')
    assert reason(world, q, col.replace(tcb_info=tampered)) is R.TCB_INFO_SIGNATURE_INVALID
    assert (
        reason(world, q, col.replace(tcb_info_signature=col.qe_identity_signature))
        is R.TCB_INFO_SIGNATURE_INVALID
    )
    assert reason(world, q, col.replace(qe_identity=col.qe_identity + " ")) is R.QE_IDENTITY_SIGNATURE_INVALID
    assert reason(world, q, col.replace(tcb_info_signature=b"\x01" * 63)) is R.TCB_INFO_SIGNATURE_INVALID
    # Stale TCB info while the CRLs are still fresh.
    world.pcs.crl_validity = dt.timedelta(days=365)
    col = world.collateral()
    assert reason(world, q, col, NOW + dt.timedelta(days=31)) is R.TCB_INFO_EXPIRED
    assert reason(world, q, col, NOW - dt.timedelta(seconds=1)) is R.CRL_NOT_YET_VALID
    world.pcs.tcb_validity = dt.timedelta(days=400)
    assert reason(world, q, world.collateral(), NOW + dt.timedelta(days=366)) is R.CRL_EXPIRED


def test_collateral_issued_in_the_future_is_not_yet_valid(world: World) -> None:
    q = world.quote("uptodate")
    tcb = world.pcs.tcb_info(FMSPC, NOW + dt.timedelta(hours=1))
    col = world.collateral().replace(tcb_info=tcb.body, tcb_info_signature=tcb.signature)
    assert reason(world, q, col) is R.TCB_INFO_NOT_YET_VALID
    qe = world.pcs.qe_identity(NOW + dt.timedelta(hours=1))
    col = world.collateral().replace(qe_identity=qe.body, qe_identity_signature=qe.signature)
    assert reason(world, q, col) is R.QE_IDENTITY_NOT_YET_VALID


def test_revocations(world: World) -> None:
    q = world.quote("uptodate")
    world.pki.revoke(world.pck("uptodate").cert, NOW)
    assert reason(world, q) is R.CERT_REVOKED
    assert verify(world, world.quote("swhard")).accepted  # other PCK certificates unaffected
    world2 = World.build()
    world2.pki.revoke(world2.pki.ca_cert("platform"), NOW)
    assert reason(world2, world2.quote("uptodate")) is R.CERT_REVOKED
    world3 = World.build()
    world3.pki.revoke(world3.pki.tcb_signing_cert, NOW)
    assert reason(world3, world3.quote("uptodate")) is R.CERT_REVOKED


def test_chain_and_root_failures(world: World) -> None:
    q = world.quote("uptodate")
    other = World.build(seed=2)  # same Intel names, different keys
    assert reason(world, other.quote("uptodate"), world.collateral()) is R.UNTRUSTED_ROOT
    with pytest.raises(VerificationError) as info:
        verify_quote(q, world.collateral(), other.pki.root_der, NOW)
    assert info.value.reason is R.CRL_SIGNATURE_INVALID  # the root CRL is checked first
    # Another platform's (valid) chain swapped into the quote: its key did not sign the QE report.
    other_pck = world.pki.issue_pck(world.pck("uptodate").extension, ca="platform")
    assert (
        reason(world, world.quote("uptodate", chain=world.pki.pck_chain_pem(other_pck)))
        is R.QE_REPORT_SIGNATURE_INVALID
    )
    # Processor-CA collateral for a Platform-CA quote.
    assert reason(world, q, world.collateral(ca="processor")) is R.CRL_ISSUER_MISMATCH
    # Leaf not issued by the CA in the chain.
    mixed = world.pki.pck_chain_pem(world.pck("uptodate").cert, ca="processor")
    assert reason(world, world.quote("uptodate", chain=mixed)) is R.CERT_NAME_MISMATCH
    # Chain too short, or the root in the chain replaced by another root.
    leaf_only = world.pck("uptodate").pem
    assert reason(world, world.quote("uptodate", chain=leaf_only)) is R.MALFORMED_CERT_CHAIN
    foreign_root = world.pki.pck_chain_pem(world.pck("uptodate")).rsplit(b"-----BEGIN", 1)[0]
    foreign_root += other.pki.root_cert.public_bytes(serialization.Encoding.PEM)
    assert reason(world, world.quote("uptodate", chain=foreign_root)) is R.UNTRUSTED_ROOT


def test_certificate_validity_window(world: World) -> None:
    short = world.pki.issue_pck(world.pck("uptodate").extension, not_after=NOW + dt.timedelta(days=1))
    q = world.quote(pck=short)
    assert verify(world, q).accepted
    world.pcs.tcb_validity = world.pcs.crl_validity = dt.timedelta(days=10)
    col = world.collateral()
    assert reason(world, q, col, NOW + dt.timedelta(days=2)) is R.CERT_EXPIRED
    late = world.pki.issue_pck(world.pck("uptodate").extension, not_before=NOW + dt.timedelta(days=1))
    assert reason(world, world.quote(pck=late)) is R.CERT_NOT_YET_VALID


def test_qe_and_quote_signature_failures(world: World) -> None:
    assert reason(world, world.quote("uptodate", qe_mrsigner=bytes(32))) is R.QE_IDENTITY_MISMATCH
    assert reason(world, world.quote("uptodate", qe_flags=0x17)) is R.QE_IDENTITY_MISMATCH  # debug QE
    assert verify(world, world.quote("uptodate", qe_flags=0x11)).accepted  # MODE64BIT is masked out
    q = bytearray(world.quote("uptodate"))
    q[1014] ^= 1  # QE auth data: binding breaks
    assert reason(world, bytes(q)) is R.QE_REPORT_DATA_MISMATCH
    q = bytearray(world.quote("uptodate"))
    q[200] ^= 1  # ISV report body: quote signature breaks
    assert reason(world, bytes(q)) is R.QUOTE_SIGNATURE_INVALID
    q = bytearray(world.quote("uptodate"))
    q[600] ^= 1  # QE report body: PCK signature breaks
    assert reason(world, bytes(q)) is R.QE_REPORT_SIGNATURE_INVALID


def test_fmspc_mismatch(world: World) -> None:
    ext = PckExtension.for_tcb(
        ppid=PPID, cpusvn=bytes(LEVELS["uptodate"].components), pcesvn=13, pce_id=PCE_ID, fmspc=bytes(6)
    )
    pck = world.pki.issue_pck(ext, ca="platform")
    assert reason(world, world.quote(pck=pck)) is R.TCB_INFO_MISMATCH


def test_argument_errors(world: World) -> None:
    q = world.quote("uptodate")
    with pytest.raises(InvalidArgument):
        verify_quote(q, world.collateral(), world.pki.root_der, dt.datetime(2025, 6, 1))
    with pytest.raises(InvalidArgument):
        verify_quote(q, world.collateral(), b"not a cert", NOW)
    with pytest.raises(InvalidArgument):
        verify_quote(q, world.collateral(), world.pki.ca_cert("platform"), NOW)
    with pytest.raises(InvalidArgument):
        verify_quote(q, {}, world.pki.root_der, NOW)  # type: ignore[arg-type]
    tokyo = NOW.astimezone(dt.timezone(dt.timedelta(hours=9)))
    assert verify_quote(q, world.collateral(), world.pki.root_cert, tokyo).accepted
