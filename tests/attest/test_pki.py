"""The test PKI: Intel's names and extensions, determinism, CRLs, strict PEM chains."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from tests.attest.attest_world import NOW, PKI_NOT_AFTER, PKI_NOT_BEFORE, World

from sgxsim.attest import CaKind, TestPki, VerificationReason, parse_pem_chain
from sgxsim.attest.pki import pem_chain
from sgxsim.errors import InvalidArgument, VerificationError

INTEL_SUFFIX = "O=Intel Corporation,L=Santa Clara,ST=CA,C=US"


def _subject(cert: x509.Certificate) -> str:
    # rfc4514 prints RDNs last-first; Intel's DER order is CN, O, L, ST, C.
    return ",".join(f"{a.rfc4514_attribute_name}={a.value!s}" for a in cert.subject)


def _bc(cert: x509.Certificate) -> tuple[bool, int | None, bool]:
    ext = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    return ext.value.ca, ext.value.path_length, ext.critical


def _ku(cert: x509.Certificate) -> tuple[bool, bool, bool, bool]:
    ext = cert.extensions.get_extension_for_class(x509.KeyUsage)
    ku = ext.value
    assert ext.critical
    return ku.digital_signature, ku.content_commitment, ku.key_cert_sign, ku.crl_sign


def test_names_and_extensions_follow_intel(world: World) -> None:
    pki = world.pki
    root, platform, processor = pki.root_cert, pki.ca_cert("platform"), pki.ca_cert("processor")
    signer, leaf = pki.tcb_signing_cert, world.pck("uptodate").cert
    assert _subject(root) == f"CN=Intel SGX Root CA,{INTEL_SUFFIX}"
    assert root.issuer == root.subject
    assert _subject(platform) == f"CN=Intel SGX PCK Platform CA,{INTEL_SUFFIX}"
    assert _subject(processor) == f"CN=Intel SGX PCK Processor CA,{INTEL_SUFFIX}"
    assert _subject(signer) == f"CN=Intel SGX TCB Signing,{INTEL_SUFFIX}"
    assert _subject(leaf) == f"CN=Intel SGX PCK Certificate,{INTEL_SUFFIX}"
    assert leaf.issuer == platform.subject and platform.issuer == root.subject == signer.issuer
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Intel SGX PCK Certificate"
    assert _bc(root) == (True, 1, True)
    assert _bc(platform) == _bc(processor) == (True, 0, True)
    assert _bc(signer) == _bc(leaf) == (False, None, True)
    assert _ku(root) == _ku(platform) == (False, False, True, True)
    assert _ku(signer) == _ku(leaf) == (True, True, False, False)
    for cert in (root, platform, processor, signer, leaf):
        assert cert.version is x509.Version.v3
        assert cert.signature_algorithm_oid == x509.SignatureAlgorithmOID.ECDSA_WITH_SHA256
        assert cert.not_valid_before_utc == PKI_NOT_BEFORE and cert.not_valid_after_utc == PKI_NOT_AFTER
        assert 0 < cert.serial_number < 2**159
    platform.verify_directly_issued_by(root)
    leaf.verify_directly_issued_by(platform)
    signer.verify_directly_issued_by(root)
    dp = leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert dp[0].full_name is not None
    assert dp[0].full_name[0].value.endswith("pckcrl?ca=platform&encoding=der")


def _everything(seed: int) -> list[bytes]:
    w = World.build(seed)
    der = serialization.Encoding.DER
    certs = [w.pki.root_cert, w.pki.ca_cert("platform"), w.pki.tcb_signing_cert, w.pck("swhard").cert]
    return [c.public_bytes(der) for c in certs] + [w.pki.root_ca_crl(NOW, NOW + dt.timedelta(days=1))]


def test_generation_is_deterministic_per_seed() -> None:
    assert _everything(11) == _everything(11)
    assert all(a != b for a, b in zip(_everything(11), _everything(12), strict=True))


def test_generate_rejects_bad_arguments() -> None:
    with pytest.raises(InvalidArgument):
        TestPki.generate(random.Random(1), not_before=dt.datetime(2024, 1, 1), not_after=PKI_NOT_AFTER)
    with pytest.raises(InvalidArgument):
        TestPki.generate(random.Random(1), not_before=PKI_NOT_AFTER, not_after=PKI_NOT_BEFORE)
    with pytest.raises(InvalidArgument):
        TestPki.generate(1, not_before=PKI_NOT_BEFORE, not_after=PKI_NOT_AFTER)  # type: ignore[arg-type]


def test_crls_list_revocations_and_number_only_changes_with_content(world: World) -> None:
    pki = world.pki
    later = NOW + dt.timedelta(days=30)
    first = x509.load_der_x509_crl(pki.pck_crl("platform", NOW, later))
    assert first.issuer == pki.ca_cert("platform").subject
    assert first.is_signature_valid(pki.ca_key("platform").public_key())
    assert len(first) == 0
    assert pki.pck_crl("platform", NOW, later) == first.public_bytes(serialization.Encoding.DER)
    victim = world.pck("config").cert
    pki.revoke(victim, NOW)
    second = x509.load_der_x509_crl(pki.pck_crl("platform", NOW, later))
    assert second.get_revoked_certificate_by_serial_number(victim.serial_number) is not None
    number = second.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number == first.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number + 1
    # Revoking a CA goes to the root CRL, not to a PCK CRL.
    pki.revoke(pki.ca_cert(CaKind.PROCESSOR), NOW)
    root_crl = x509.load_der_x509_crl(pki.root_ca_crl(NOW, later))
    assert root_crl.issuer == pki.root_cert.subject and root_crl.is_signature_valid(pki.root_key.public_key())
    assert (
        root_crl.get_revoked_certificate_by_serial_number(pki.ca_cert("processor").serial_number) is not None
    )
    with pytest.raises(InvalidArgument):
        pki.revoke(World.build(seed=99).pki.root_cert, NOW)


def test_pem_chain_parsing_reads_pem_as_qvl_does(world: World) -> None:
    """QVL (CertificateChain::parse + PEM_read_bio_X509) accepts any valid PEM layout; DER stays strict."""
    chain = world.pki.pck_chain_pem(world.pck("uptodate"))
    certs = parse_pem_chain(chain)
    assert pem_chain(*certs) == chain
    body = chain.split(b"\n")
    rewrapped = b"\n".join([*body[:1], body[1] + body[2], *body[3:]])  # a 128-column line
    narrow = b"".join(
        line + b"\n"
        if line.startswith(b"-----")
        else b"\n".join(line[i : i + 40] for i in range(0, len(line), 40)) + b"\n"
        for line in chain.split(b"\n")
        if line
    )
    for good in (
        chain + b"\0",
        chain.replace(b"\n", b"\r\n"),
        rewrapped,
        narrow,
        chain.rstrip(b"\n"),
        chain + b"\n",
    ):
        assert [c.serial_number for c in parse_pem_chain(good)] == [c.serial_number for c in certs]
    assert len(parse_pem_chain(chain[:-30])) == 2  # an unterminated last block is trailing text
    flipped = bytearray(chain)
    flipped[30] = ord("!")  # not base64
    bad_inputs = [b"", b"garbage", chain.replace(b"BEGIN", b"BEGXN", 1), bytes(flipped)]
    for bad in bad_inputs:
        with pytest.raises(VerificationError) as info:
            parse_pem_chain(bad)
        assert info.value.reason is VerificationReason.MALFORMED_CERT_CHAIN, bad[:40]
