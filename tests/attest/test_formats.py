"""Quote v3/v4 and report-body byte layouts, deterministic signing, and the parser's outcomes."""

from __future__ import annotations

import hashlib
import random
import struct

import dcap_qvl
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.attest.attest_world import ISV_MRENCLAVE, ISV_MRSIGNER, QE_AUTH_DATA, World, isv_body

from sgxsim.attest import (
    INTEL_QE_VENDOR_ID,
    CertDataType,
    QuoteHeader,
    ReportBody,
    VerificationReason,
    build_quote_v3,
    build_quote_v4,
    derive_p256_key,
    ecdsa_raw_sign,
    ecdsa_raw_verify,
    parse_quote,
    public_key_raw,
    qe_report_data,
)
from sgxsim.errors import InvalidArgument, VerificationError

FAST = settings(max_examples=100, deadline=None, database=None)


def test_report_body_offsets_match_sgx_report_h() -> None:
    body = ReportBody(
        cpu_svn=bytes(range(1, 17)),
        misc_select=0x11223344,
        isv_ext_prod_id=b"\xe1" * 16,
        attributes_flags=0x0102030405060708,
        attributes_xfrm=0x1112131415161718,
        mr_enclave=b"\xa1" * 32,
        mr_signer=b"\xb2" * 32,
        config_id=b"\xc3" * 64,
        isv_prod_id=0x5566,
        isv_svn=0x7788,
        config_svn=0x99AA,
        isv_family_id=b"\xd4" * 16,
        report_data=b"\xf5" * 64,
    )
    raw = body.pack()
    assert len(raw) == 384
    assert raw[0:16] == bytes(range(1, 17))
    assert raw[16:20] == bytes.fromhex("44332211")
    assert raw[20:32] == bytes(12)
    assert raw[32:48] == b"\xe1" * 16
    assert raw[48:56] == bytes.fromhex("0807060504030201")
    assert raw[56:64] == bytes.fromhex("1817161514131211")
    assert raw[64:96] == b"\xa1" * 32
    assert raw[96:128] == bytes(32)
    assert raw[128:160] == b"\xb2" * 32
    assert raw[160:192] == bytes(32)
    assert raw[192:256] == b"\xc3" * 64
    assert raw[256:258] == bytes.fromhex("6655")
    assert raw[258:260] == bytes.fromhex("8877")
    assert raw[260:262] == bytes.fromhex("aa99")
    assert raw[262:304] == bytes(42)
    assert raw[304:320] == b"\xd4" * 16
    assert raw[320:384] == b"\xf5" * 64
    assert body.attributes == raw[48:64]
    assert body.reserved_ok()


@FAST
@given(st.binary(min_size=384, max_size=384))
def test_report_body_pack_unpack_round_trip(raw: bytes) -> None:
    body = ReportBody.unpack(raw)
    assert body.pack() == raw
    assert body.debug == bool(raw[48] & 2)


def test_report_body_rejects_wrong_length_and_types() -> None:
    with pytest.raises(InvalidArgument):
        ReportBody.unpack(bytes(383))
    with pytest.raises(InvalidArgument):
        ReportBody.unpack("x" * 384)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        ReportBody(mr_enclave=bytes(31))
    with pytest.raises(InvalidArgument):
        ReportBody(isv_svn=1 << 16)


def test_header_layout() -> None:
    h = QuoteHeader(3, 2, 0, 0x0102, 0x0304, INTEL_QE_VENDOR_ID, b"U" * 20).pack()
    assert h[0:2] == b"\x03\x00" and h[2:4] == b"\x02\x00" and h[4:8] == bytes(4)
    assert h[8:10] == b"\x02\x01" and h[10:12] == b"\x04\x03"
    assert h[12:28] == bytes.fromhex("939A7233F79C4CA9940A0DB3957F0607")
    assert h[28:48] == b"U" * 20
    assert QuoteHeader.unpack(h) == QuoteHeader(3, 2, 0, 0x0102, 0x0304, INTEL_QE_VENDOR_ID, b"U" * 20)


def test_v3_layout_offsets(world: World) -> None:
    pck = world.pck("uptodate")
    q = world.quote("uptodate")
    chain = world.pki.pck_chain_pem(pck)
    # Offsets used by Gramine's sample and the reference cross-check.
    assert q[0:2] == b"\x03\x00"
    assert q[48:64] == pck.extension.cpusvn  # CPUSVN = quote bytes 48..63
    assert q[96] & 0x02 == 0  # flags at 96 (not debug)
    assert q[112:144] == ISV_MRENCLAVE
    assert q[176:208] == ISV_MRSIGNER
    assert q[304:306] == (7).to_bytes(2, "little")
    assert q[368:432] == b"nonce:0001".ljust(64, b"\0")
    (sig_len,) = struct.unpack_from("<I", q, 432)
    assert sig_len == len(q) - 436
    attest_pub = q[500:564]
    qe_report = ReportBody.unpack(q[564:948])
    assert qe_report.report_data == hashlib.sha256(attest_pub + QE_AUTH_DATA).digest() + bytes(32)
    assert ecdsa_raw_verify(pck.key.public_key(), q[948:1012], q[564:948])
    assert struct.unpack_from("<H", q, 1012) == (32,)
    assert q[1014:1046] == QE_AUTH_DATA
    cert_type, cert_size = struct.unpack_from("<HI", q, 1046)
    assert cert_type == 5 and CertDataType.PCK_CERT_CHAIN.value == 5
    assert q[1052:] == chain and cert_size == len(chain)
    parsed = parse_quote(q)
    pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + attest_pub)
    assert ecdsa_raw_verify(pub, q[436:500], q[0:432])
    assert parsed.signed_data == q[:432] and parsed.attest_pub_key == attest_pub
    assert parsed.pck_chain_pem == chain and parsed.outer_cert_type == 5


def test_v4_nests_type5_in_type6(world: World) -> None:
    q3 = world.quote("uptodate", version=3)
    q4 = world.quote("uptodate", version=4)
    assert q4[0:2] == b"\x04\x00" and q4[4:8] == bytes(4)  # tee_type SGX
    assert q4[48:432] == q3[48:432]
    outer_type, outer_size = struct.unpack_from("<HI", q4, 564)
    assert outer_type == 6 and CertDataType.ECDSA_SIG_AUX_DATA.value == 6
    assert outer_size == len(q4) - 570
    assert q4[570:] == q3[564:]  # sgx_qe_report_certification_data_t = the v3 tail
    p3, p4 = parse_quote(q3), parse_quote(q4)
    assert p4.version == 4 and p4.outer_cert_type == 6
    assert (p4.report_body, p4.qe_report_body, p4.qe_auth_data, p4.certification_data) == (
        p3.report_body,
        p3.qe_report_body,
        p3.qe_auth_data,
        p3.certification_data,
    )


def test_quote_bytes_are_deterministic_for_a_seed() -> None:
    assert World.build(seed=5).quote("config") == World.build(seed=5).quote("config")
    assert World.build(seed=5).quote("config") != World.build(seed=6).quote("config")


def test_deterministic_ecdsa_matches_rfc6979_vector() -> None:
    # RFC 6979 A.2.5, ECDSA P-256 with SHA-256, message "sample".
    key = ec.derive_private_key(
        0xC9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721, ec.SECP256R1()
    )
    sig = ecdsa_raw_sign(key, b"sample")
    assert sig.hex().upper() == (
        "EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716"
        "F7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8"
    )
    assert ecdsa_raw_verify(key.public_key(), sig, b"sample")
    assert not ecdsa_raw_verify(key.public_key(), sig, b"samplf")
    assert not ecdsa_raw_verify(key.public_key(), bytes(64), b"sample")


def test_qe_report_data_binding() -> None:
    key = derive_p256_key(random.Random(3))
    raw = public_key_raw(key)
    assert len(raw) == 64
    rd = qe_report_data(raw, b"auth")
    assert rd == hashlib.sha256(raw + b"auth").digest() + bytes(32)
    with pytest.raises(InvalidArgument):
        qe_report_data(raw[:63], b"")


def test_dcap_qvl_parses_our_v3_and_v4_quotes(world: World) -> None:
    pck = world.pck("swhard")
    for version in (3, 4):
        q = world.quote("swhard", version=version)
        parsed = dcap_qvl.parse_quote(q)
        assert parsed.is_sgx() and parsed.header.version == version
        assert parsed.header.qe_svn == 8 and parsed.header.pce_svn == 13
        assert parsed.header.qe_vendor_id == INTEL_QE_VENDOR_ID
        assert parsed.report.mr_enclave == ISV_MRENCLAVE and parsed.report.mr_signer == ISV_MRSIGNER
        assert parsed.report.cpu_svn == pck.extension.cpusvn
        assert parsed.cert_chain_pem_bytes() == world.pki.pck_chain_pem(pck)
        assert parsed.fmspc() == "00906ED50000" and parsed.ca() == "platform"
        ext = parsed.pck_extension()
        assert ext is not None and ext.pce_svn == 13 and ext.cpu_svn == pck.extension.cpusvn


def _raw_quote_args(world: World) -> dict[str, object]:
    pck = world.pck("uptodate")
    key = derive_p256_key(random.Random(9))
    qe_body, qe_sig = world.qe_report(pck, public_key_raw(key))
    return {
        "qe_svn": 8,
        "pce_svn": 13,
        "report_body": isv_body(pck.extension.cpusvn).pack(),
        "attest_key": key,
        "qe_report_body": qe_body,
        "qe_report_sig": qe_sig,
        "qe_auth_data": QE_AUTH_DATA,
        "pck_chain_pem": world.pki.pck_chain_pem(pck),
    }


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("report_body", bytes(383)),
        ("qe_report_sig", bytes(63)),
        ("attest_key", b"not a key"),
        ("qe_svn", -1),
        ("pce_svn", 1 << 16),
        ("pck_chain_pem", "text"),
    ],
)
def test_builders_reject_bad_arguments(world: World, name: str, value: object) -> None:
    args = _raw_quote_args(world)
    args[name] = value
    for build in (build_quote_v3, build_quote_v4):
        with pytest.raises(InvalidArgument):
            build(**args)  # type: ignore[arg-type]


def _reason(data: bytes) -> VerificationReason:
    with pytest.raises(VerificationError) as info:
        parse_quote(data)
    assert isinstance(info.value.reason, VerificationReason)
    return info.value.reason


def test_parse_quote_failure_reasons(world: World) -> None:
    q = world.quote("uptodate")
    assert _reason(b"") is VerificationReason.MALFORMED_QUOTE
    assert _reason(q[:-1]) is VerificationReason.MALFORMED_QUOTE
    # Bytes after the signature data are ignored, as QVL's Quote::parse does.
    assert parse_quote(q + b"\0" * 7).signature == parse_quote(q).signature
    assert _reason(b"\x05\x00" + q[2:]) is VerificationReason.UNSUPPORTED_QUOTE_VERSION
    assert _reason(q[:2] + b"\x03\x00" + q[4:]) is VerificationReason.UNSUPPORTED_ATT_KEY_TYPE
    assert _reason(q[:4] + b"\x81\x00\x00\x00" + q[8:]) is VerificationReason.UNSUPPORTED_TEE_TYPE
    assert _reason(q[:12] + bytes(16) + q[28:]) is VerificationReason.UNSUPPORTED_QE_VENDOR
    assert _reason(q[:1046] + b"\x04\x00" + q[1048:]) is VerificationReason.UNSUPPORTED_CERT_DATA_TYPE
    q4 = world.quote("uptodate", version=4)
    assert _reason(q4[:564] + b"\x05\x00" + q4[566:]) is VerificationReason.UNSUPPORTED_CERT_DATA_TYPE
    assert _reason(q4[:4] + b"\x81\x00\x00\x00" + q4[8:]) is VerificationReason.UNSUPPORTED_TEE_TYPE
    with pytest.raises(VerificationError, match="TDX quote, not SGX"):
        parse_quote(b"\x04\x00" + q4[2:4] + b"\x81\x00\x00\x00" + q4[8:])
    with pytest.raises(VerificationError, match="version 5: only SGX quotes v3 and v4"):
        parse_quote(b"\x05\x00" + q[2:])
    with pytest.raises(InvalidArgument):
        parse_quote("quote")  # type: ignore[arg-type]
