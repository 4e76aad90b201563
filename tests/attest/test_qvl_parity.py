"""Parity with Intel's QVL: one case per difference a differential campaign found (issue 13).

Each test names the QVL function whose behaviour it pins. Accepted-where-QVL-refuses cases must
now be refused (or flagged); refused-where-QVL-accepts cases must now be accepted; where QVL is
strict we stay strict.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from tests.attest.attest_world import NOW, World, isv_body

from sgxsim.attest import (
    Collateral,
    PckCertificate,
    TcbStatus,
    VerificationReason,
    VerifiedQuote,
    ecdsa_raw_sign,
    verify_quote,
)
from sgxsim.attest.pki import pem_chain
from sgxsim.errors import VerificationError

R = VerificationReason


def verify(world: World, quote: bytes, collateral: Collateral | None = None, **kw: bool) -> VerifiedQuote:
    return verify_quote(quote, collateral or world.collateral(), world.pki.root_der, NOW, **kw)


def reason(world: World, quote: bytes, collateral: Collateral | None = None) -> R:
    with pytest.raises(VerificationError) as info:
        verify(world, quote, collateral)
    assert isinstance(info.value.reason, R)
    return info.value.reason


def resign(
    world: World, collateral: Collateral, *, tcb_info: str | None = None, qe: str | None = None
) -> Collateral:
    """Collateral whose TCB Info / QE Identity text is replaced and validly signed."""
    key = world.pki.tcb_signing_key
    changes: dict[str, object] = {}
    if tcb_info is not None:
        changes |= {"tcb_info": tcb_info, "tcb_info_signature": ecdsa_raw_sign(key, tcb_info.encode())}
    if qe is not None:
        changes |= {"qe_identity": qe, "qe_identity_signature": ecdsa_raw_sign(key, qe.encode())}
    return collateral.replace(**changes)


def reissue(
    world: World, pck: PckCertificate, *, critical_oid: str | None = None, sha384: bool = False
) -> PckCertificate:
    """The same PCK certificate (same key and extension) with one profile change."""
    old = pck.cert
    builder = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(old.issuer)
        .public_key(old.public_key())
        .serial_number(old.serial_number + 1)
        .not_valid_before(old.not_valid_before_utc)
        .not_valid_after(old.not_valid_after_utc)
    )
    for ext in old.extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    if critical_oid is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(critical_oid), b"\x05\x00"), critical=True
        )
    cert = builder.sign(world.pki.ca_key(pck.ca), hashes.SHA384() if sha384 else hashes.SHA256())
    return dataclasses.replace(pck, cert=cert)


# ---------------------------------------------------------------- accepted where QVL refuses or flags


def test_debug_enclave_is_flagged_and_refused_by_default(world: World) -> None:
    pck = world.pck("uptodate")
    quote = world.quote(pck=pck, body=isv_body(pck.extension.cpusvn, attributes_flags=0x07))
    v = verify(world, quote)
    assert v.debug and not v.accepted and v.rejected_because == "debug enclave"
    assert v.status is TcbStatus.UP_TO_DATE  # genuine evidence: the status is still reported
    allowed = verify(world, quote, allow_debug=True)
    assert allowed.debug and allowed.accepted and allowed.rejected_because is None
    assert not verify(world, world.quote("uptodate")).debug


@pytest.mark.parametrize("document", ["tcb_info", "qe_identity"])
def test_duplicate_members_in_signed_json_are_refused(world: World, document: str) -> None:
    collateral = world.collateral()
    if document == "tcb_info":
        text = collateral.tcb_info.replace(
            '"tcbStatus":"Revoked"', '"tcbStatus":"Revoked","tcbStatus":"UpToDate"'
        )
        assert text != collateral.tcb_info
        changed, want = resign(world, collateral, tcb_info=text), R.MALFORMED_TCB_INFO
    else:
        text = collateral.qe_identity.replace('"isvprodid":1', '"isvprodid":1,"isvprodid":1')
        assert text != collateral.qe_identity
        changed, want = resign(world, collateral, qe=text), R.MALFORMED_QE_IDENTITY
    assert reason(world, world.quote("revoked"), changed) is want


def test_qe_identity_levels_are_evaluated_in_document_order(world: World) -> None:
    # QVL EnclaveIdentityV2::getTcbStatus: the first level (document order) with isvsvn <= ISVSVN.
    collateral = world.collateral()
    obj = json.loads(collateral.qe_identity)
    assert [lv["tcb"]["isvsvn"] for lv in obj["tcbLevels"]] == [8, 6]
    obj["tcbLevels"].reverse()
    changed = resign(world, collateral, qe=json.dumps(obj, separators=(",", ":")))
    v = verify(world, world.quote("uptodate", qe_isv_svn=8), changed)
    assert v.qe_status is TcbStatus.OUT_OF_DATE and v.status is TcbStatus.OUT_OF_DATE
    assert v.qe_tcb_level is not None and v.qe_tcb_level.isvsvn == 6


@pytest.mark.parametrize("status", ["SWHardeningNeeded", "ConfigurationAndSWHardeningNeeded"])
def test_qe_identity_refuses_tcb_info_only_statuses(world: World, status: str) -> None:
    # QVL parseStringToTcbStatus (EnclaveIdentityV2::parseTcbLevels) knows five statuses.
    collateral = world.collateral()
    text = collateral.qe_identity.replace('"tcbStatus":"UpToDate"', f'"tcbStatus":"{status}"', 1)
    assert (
        reason(world, world.quote("uptodate"), resign(world, collateral, qe=text)) is R.MALFORMED_QE_IDENTITY
    )


def test_qe_identity_configuration_needed_counts_as_out_of_date(world: World) -> None:
    # QVL EnclaveReportVerifier::verify returns ISVSVN_OUT_OF_DATE for every non-UpToDate, non-Revoked level.
    collateral = world.collateral()
    text = collateral.qe_identity.replace('"tcbStatus":"UpToDate"', '"tcbStatus":"ConfigurationNeeded"', 1)
    v = verify(world, world.quote("uptodate"), resign(world, collateral, qe=text))
    assert v.qe_status is TcbStatus.OUT_OF_DATE and v.status is TcbStatus.OUT_OF_DATE


def test_pck_certificate_with_an_unknown_critical_extension_is_refused(world: World) -> None:
    pck = reissue(world, world.pck("uptodate"), critical_oid="1.3.6.1.4.1.99999.1")
    assert reason(world, world.quote(pck=pck)) is R.MALFORMED_CERT_CHAIN


def test_pck_certificate_signed_with_ecdsa_sha384_is_refused(world: World) -> None:
    pck = reissue(world, world.pck("uptodate"), sha384=True)
    assert reason(world, world.quote(pck=pck)) is R.CERT_SIGNATURE_INVALID
    control = reissue(world, world.pck("uptodate"))  # the same re-issue with SHA-256 verifies
    assert verify(world, world.quote(pck=control)).status is TcbStatus.UP_TO_DATE


def test_chains_without_their_root_are_refused(world: World) -> None:
    # QVL sgxAttestationVerifyPCKCertificate: exactly 3 certificates; TCB signing chains exactly 2.
    pck = world.pck("uptodate")
    no_root = pem_chain(pck.cert, world.pki.ca_cert("platform"))
    with pytest.raises(VerificationError, match="root CA missing") as info:
        verify(world, world.quote(pck=pck, chain=no_root))
    assert info.value.reason is R.MALFORMED_CERT_CHAIN
    signer_only = pem_chain(world.pki.tcb_signing_cert).decode()
    assert reason(
        world, world.quote(pck=pck), world.collateral().replace(tcb_info_issuer_chain=signer_only)
    ) is (R.MALFORMED_CERT_CHAIN)


def test_extra_certificates_after_the_chain_are_refused_as_qvl_counts_them(world: World) -> None:
    # QVL sgxAttestationVerifyPCKCertificate: chain.length() != 3 -> STATUS_UNSUPPORTED_CERT_FORMAT.
    pck = world.pck("uptodate")
    extra = world.pki.pck_chain_pem(pck) + pem_chain(world.pki.root_cert)
    assert reason(world, world.quote(pck=pck, chain=extra)) is R.MALFORMED_CERT_CHAIN


# ---------------------------------------------------------------- refused where QVL accepts


def test_bytes_after_the_signature_data_are_ignored(world: World) -> None:
    quote = world.quote("swhard")
    assert verify(world, quote + b"\x00" * 16 + b"junk").status is TcbStatus.SW_HARDENING_NEEDED


@pytest.mark.parametrize("layout", ["crlf", "no-final-newline", "76-columns", "text-around"])
def test_valid_non_canonical_pem_is_accepted(world: World, layout: str) -> None:
    pck = world.pck("swhard")
    chain = world.pki.pck_chain_pem(pck)
    if layout == "crlf":
        chain = chain.replace(b"\n", b"\r\n")
    elif layout == "no-final-newline":
        chain = chain.rstrip(b"\n")
    elif layout == "76-columns":
        out = []
        for block in chain.split(b"-----END CERTIFICATE-----\n")[:-1]:
            b64 = b"".join(block.split(b"\n")[1:])
            lines = [b64[i : i + 76] for i in range(0, len(b64), 76)]
            out.append(
                b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(lines) + b"\n-----END CERTIFICATE-----\n"
            )
        chain = b"".join(out)
    else:
        chain = b"leaf follows\n" + chain + b"end of chain\n"
    assert chain != world.pki.pck_chain_pem(pck)
    v = verify(world, world.quote(pck=pck, chain=chain))
    assert v.status is TcbStatus.SW_HARDENING_NEEDED
    crlf = world.collateral()
    crlf = crlf.replace(tcb_info_issuer_chain=crlf.tcb_info_issuer_chain.replace("\n", "\r\n"))
    assert verify(world, world.quote(pck=pck), crlf).status is TcbStatus.SW_HARDENING_NEEDED


# ---------------------------------------------------------------- strict where QVL is strict


@pytest.mark.parametrize("date", ["2025-05-13T00:00:00.000Z", "2025-05-13T00:00:00+00:00", "2025-05-13"])
def test_dates_of_unmatched_levels_are_parsed_strictly(world: World, date: str) -> None:
    collateral = world.collateral()
    obj = json.loads(collateral.tcb_info)
    obj["tcbLevels"][-1]["tcbDate"] = date  # the lowest level: never matched by an UpToDate quote
    changed = resign(world, collateral, tcb_info=json.dumps(obj, separators=(",", ":")))
    assert reason(world, world.quote("uptodate"), changed) is R.MALFORMED_TCB_INFO


def test_unmatched_level_with_15_components_is_refused(world: World) -> None:
    collateral = world.collateral()
    obj = json.loads(collateral.tcb_info)
    obj["tcbLevels"][-1]["tcb"]["sgxtcbcomponents"].pop()
    changed = resign(world, collateral, tcb_info=json.dumps(obj, separators=(",", ":")))
    assert reason(world, world.quote("uptodate"), changed) is R.MALFORMED_TCB_INFO


def test_crl_is_valid_from_this_update_to_next_update_inclusive() -> None:
    world = World.build()
    collateral = world.collateral(NOW)
    quote = world.quote("uptodate")
    crl = x509.load_der_x509_crl(collateral.pck_crl)
    assert crl.next_update_utc is not None
    for at in (crl.last_update_utc, crl.next_update_utc):
        assert verify_quote(quote, collateral, world.pki.root_der, at).accepted
    one_second = dt.timedelta(seconds=1)
    with pytest.raises(VerificationError) as info:
        verify_quote(quote, collateral, world.pki.root_der, crl.last_update_utc - one_second)
    assert info.value.reason in (R.CRL_NOT_YET_VALID, R.TCB_INFO_NOT_YET_VALID)


def test_time_errors_name_the_item_and_its_window(world: World) -> None:
    quote = world.quote("uptodate")
    collateral = world.collateral(NOW)
    with pytest.raises(VerificationError) as info:
        verify_quote(quote, collateral, world.pki.root_der, NOW + dt.timedelta(days=400))
    detail = info.value.detail
    assert "valid from" in detail and " to " in detail and "expired" in detail
    assert any(item in detail for item in ("CRL", "TCB Info", "QE Identity")), detail


def test_result_carries_what_qvl_reports(world: World) -> None:
    v = verify(world, world.quote("swhard"))
    assert v.tcb_date == v.tcb_level.tcb_date and v.advisory_ids == ("INTEL-SA-00615",)
    assert v.collateral_expiration is not None and v.collateral_expiration.not_after > NOW
    assert v.collateral_expiration.not_after == min(
        v.tcb_info.next_update, v.qe_identity.next_update, v.collateral_expiration.not_after
    )


def test_bytes_after_the_certification_data_follow_qvls_structs(world: World) -> None:
    import struct

    def grow(quote: bytes, *, outer: bool) -> bytes:
        raw = bytearray(quote + b"\x00" * 4)
        struct.pack_into("<I", raw, 432, struct.unpack_from("<I", raw, 432)[0] + 4)
        if outer:  # v4: the type-6 certification data claims the 4 bytes too
            struct.pack_into("<I", raw, 566, struct.unpack_from("<I", raw, 566)[0] + 4)
        return bytes(raw)

    # Ecdsa256BitQuoteV3AuthData::insert / ...V4AuthData::insert do not check the rest ...
    assert verify(world, grow(world.quote("swhard"), outer=False)).status is TcbStatus.SW_HARDENING_NEEDED
    assert verify(world, grow(world.quote("swhard", version=4), outer=False)).accepted
    # ... QEReportCertificationData::insert does ("Inconsistent structure").
    assert reason(world, grow(world.quote("swhard", version=4), outer=True)) is R.MALFORMED_QUOTE
