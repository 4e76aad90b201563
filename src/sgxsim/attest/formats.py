"""DCAP ECDSA quote formats: report body, quote v3 and v4 (SGX), build and parse.

Layouts (all little-endian integers; signatures and keys big-endian r||s / x||y):

* Report body, 384 bytes (``sgx_report_body_t``, intel/linux-sgx common/inc/sgx_report.h):
  cpu_svn 0 (16), misc_select 16 (4), reserved 20 (12), isv_ext_prod_id 32 (16),
  attributes 48 (flags 8 + xfrm 8), mr_enclave 64 (32), reserved 96 (32), mr_signer 128 (32),
  reserved 160 (32), config_id 192 (64), isv_prod_id 256 (2), isv_svn 258 (2), config_svn 260 (2),
  reserved 262 (42), isv_family_id 304 (16), report_data 320 (64).
* Header, 48 bytes (``sgx_quote_header_t`` / ``sgx_quote4_header_t``): version 0 (2),
  att_key_type 2 (2), att_key_data_0 (v3) / tee_type (v4) 4 (4), qe_svn 8 (2), pce_svn 10 (2),
  qe_vendor_id 12 (16), user_data 28 (20).
* v3 (``sgx_quote_3.h``): header, report body 48 (384), signature_data_len 432 (4), then
  ``sgx_ql_ecdsa_sig_data_t``: sig 64, attest_pub_key 64, qe_report 384, qe_report_sig 64,
  ``sgx_ql_auth_data_t`` {u16 size; data}, ``sgx_ql_certification_data_t`` {u16 type; u32 size; data}
  with type 5 = PCK chain PEM (leaf || intermediate || root).
* v4 (``sgx_quote_4.h``, SGX tee_type 0): header, report body, signature_data_len, then
  ``sgx_ecdsa_sig_data_v4_t``: sig 64, attest_pub_key 64, certification data of type 6 whose body
  is ``sgx_qe_report_certification_data_t``: qe_report 384, qe_report_sig 64, auth data, nested
  certification data (type 5).

The quote signature is ECDSA-P256/SHA-256 by the attestation key over header || report body;
the QE report signature is by the PCK key over the 384-byte QE report body; the QE binds the
attestation key with ``qe_report.report_data[0:32] = SHA-256(attest_pub_key || qe_auth_data)``.
Signing here uses RFC 6979 deterministic nonces so a seeded run reproduces every byte.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from dataclasses import dataclass, field
from typing import ClassVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from sgxsim.attest.reasons import VerificationReason
from sgxsim.errors import InvalidArgument, VerificationError

__all__ = [
    "ATT_KEY_TYPE_ECDSA_P256",
    "ATT_KEY_TYPE_ECDSA_P384",
    "HEADER_SIZE",
    "INTEL_QE_VENDOR_ID",
    "QUOTE_SIGNED_SIZE",
    "REPORT_BODY_SIZE",
    "TEE_TYPE_SGX",
    "TEE_TYPE_TDX",
    "CertDataType",
    "CertificationData",
    "Quote",
    "QuoteHeader",
    "ReportBody",
    "build_quote_v3",
    "build_quote_v4",
    "ecdsa_raw_sign",
    "ecdsa_raw_verify",
    "parse_quote",
    "public_key_from_raw",
    "public_key_raw",
    "qe_report_data",
]

HEADER_SIZE = 48
REPORT_BODY_SIZE = 384
QUOTE_SIGNED_SIZE = HEADER_SIZE + REPORT_BODY_SIZE  # 432: header || report body
SIGNATURE_SIZE = 64
PUBKEY_SIZE = 64
ATT_KEY_TYPE_ECDSA_P256 = 2  # sgx_ql_attestation_algorithm_id_t SGX_QL_ALG_ECDSA_P256
ATT_KEY_TYPE_ECDSA_P384 = 3
TEE_TYPE_SGX = 0x00000000
TEE_TYPE_TDX = 0x00000081
INTEL_QE_VENDOR_ID = bytes.fromhex("939A7233F79C4CA9940A0DB3957F0607")
MAX_QUOTE_SIZE = 1 << 20  # far above any real quote; bounds what a parser will look at


class CertDataType(enum.IntEnum):
    """``sgx_ql_cert_key_type_t`` (sgx_quote_3.h); v4 uses type 6 for QE report certification data."""

    PPID_CLEARTEXT = 1
    PPID_RSA2048_ENCRYPTED = 2
    PPID_RSA3072_ENCRYPTED = 3
    PCK_CLEARTEXT = 4
    PCK_CERT_CHAIN = 5
    ECDSA_SIG_AUX_DATA = 6  # v4: sgx_qe_report_certification_data_t
    PLATFORM_MANIFEST = 7


def _fail(reason: VerificationReason, detail: str) -> VerificationError:
    return VerificationError(reason, detail)


def _need_bytes(name: str, value: object, size: int | None = None) -> bytes:
    if not isinstance(value, bytes | bytearray):
        raise InvalidArgument(f"{name} must be bytes, got {type(value).__name__}")
    if size is not None and len(value) != size:
        raise InvalidArgument(f"{name} must be {size} bytes, got {len(value)}")
    return bytes(value)


def _need_uint(name: str, value: object, bits: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < (1 << bits):
        raise InvalidArgument(f"{name} must be a u{bits}, got {value!r}")
    return value


# ---------------------------------------------------------------- report body


@dataclass(frozen=True)
class ReportBody:
    """``sgx_report_body_t`` (384 bytes). ``pack(unpack(b)) == b`` for every 384-byte ``b``."""

    SIZE: ClassVar[int] = REPORT_BODY_SIZE
    _LAYOUT: ClassVar[struct.Struct] = struct.Struct("<16sI12s16sQQ32s32s32s32s64sHHH42s16s64s")

    cpu_svn: bytes = bytes(16)
    misc_select: int = 0
    reserved1: bytes = bytes(12)
    isv_ext_prod_id: bytes = bytes(16)
    attributes_flags: int = 0
    attributes_xfrm: int = 0
    mr_enclave: bytes = bytes(32)
    reserved2: bytes = bytes(32)
    mr_signer: bytes = bytes(32)
    reserved3: bytes = bytes(32)
    config_id: bytes = bytes(64)
    isv_prod_id: int = 0
    isv_svn: int = 0
    config_svn: int = 0
    reserved4: bytes = bytes(42)
    isv_family_id: bytes = bytes(16)
    report_data: bytes = bytes(64)

    def __post_init__(self) -> None:
        for name, size in (
            ("cpu_svn", 16),
            ("reserved1", 12),
            ("isv_ext_prod_id", 16),
            ("mr_enclave", 32),
            ("reserved2", 32),
            ("mr_signer", 32),
            ("reserved3", 32),
            ("config_id", 64),
            ("reserved4", 42),
            ("isv_family_id", 16),
            ("report_data", 64),
        ):
            _need_bytes(f"ReportBody.{name}", getattr(self, name), size)
        _need_uint("misc_select", self.misc_select, 32)
        _need_uint("attributes_flags", self.attributes_flags, 64)
        _need_uint("attributes_xfrm", self.attributes_xfrm, 64)
        for name in ("isv_prod_id", "isv_svn", "config_svn"):
            _need_uint(name, getattr(self, name), 16)

    @classmethod
    def unpack(cls, buf: bytes) -> ReportBody:
        """Parse 384 bytes; ``InvalidArgument`` only for a wrong type or length."""
        raw = _need_bytes("report body", buf, REPORT_BODY_SIZE)
        f = cls._LAYOUT.unpack(raw)
        return cls(
            cpu_svn=f[0],
            misc_select=f[1],
            reserved1=f[2],
            isv_ext_prod_id=f[3],
            attributes_flags=f[4],
            attributes_xfrm=f[5],
            mr_enclave=f[6],
            reserved2=f[7],
            mr_signer=f[8],
            reserved3=f[9],
            config_id=f[10],
            isv_prod_id=f[11],
            isv_svn=f[12],
            config_svn=f[13],
            reserved4=f[14],
            isv_family_id=f[15],
            report_data=f[16],
        )

    def pack(self) -> bytes:
        """The 384 bytes."""
        return self._LAYOUT.pack(
            self.cpu_svn,
            self.misc_select,
            self.reserved1,
            self.isv_ext_prod_id,
            self.attributes_flags,
            self.attributes_xfrm,
            self.mr_enclave,
            self.reserved2,
            self.mr_signer,
            self.reserved3,
            self.config_id,
            self.isv_prod_id,
            self.isv_svn,
            self.config_svn,
            self.reserved4,
            self.isv_family_id,
            self.report_data,
        )

    @property
    def attributes(self) -> bytes:
        """The 16-byte ATTRIBUTES (flags || xfrm, little-endian) as QE identity masks see it."""
        return struct.pack("<QQ", self.attributes_flags, self.attributes_xfrm)

    @property
    def debug(self) -> bool:
        """ATTRIBUTES.DEBUG (flags bit 1)."""
        return bool(self.attributes_flags & 0x2)

    def reserved_ok(self) -> bool:
        """All four reserved areas are zero."""
        return not any(self.reserved1 + self.reserved2 + self.reserved3 + self.reserved4)


# ---------------------------------------------------------------- crypto helpers


def public_key_raw(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) -> bytes:
    """The 64-byte x||y (big-endian) form a quote carries for a P-256 key."""
    pub = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    if not isinstance(pub.curve, ec.SECP256R1):
        raise InvalidArgument(f"attestation key must be P-256, got {pub.curve.name}")
    nums = pub.public_numbers()
    return nums.x.to_bytes(32, "big") + nums.y.to_bytes(32, "big")


def public_key_from_raw(raw: bytes) -> ec.EllipticCurvePublicKey:
    """Inverse of :func:`public_key_raw`; raises ``ValueError`` when not a point on P-256."""
    if len(raw) != PUBKEY_SIZE:
        raise ValueError(f"raw P-256 key must be 64 bytes, got {len(raw)}")
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + raw)


def ecdsa_raw_sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA-P256/SHA-256 with RFC 6979 nonces; returns r||s, 32 bytes each, big-endian."""
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise InvalidArgument(f"signing key must be an EC P-256 private key, got {type(key).__name__}")
    der = key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def ecdsa_raw_verify(pub: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> bool:
    """Verify a raw r||s signature; ``False`` for any defect (never raises for bad bytes)."""
    if len(signature) != SIGNATURE_SIZE:
        return False
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    if r == 0 or s == 0:
        return False
    try:
        pub.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def qe_report_data(attest_pub_key_raw: bytes, qe_auth_data: bytes) -> bytes:
    """REPORTDATA a QE puts in its report: SHA-256(attest key || auth data) then 32 zero bytes."""
    _need_bytes("attest_pub_key_raw", attest_pub_key_raw, PUBKEY_SIZE)
    _need_bytes("qe_auth_data", qe_auth_data)
    return hashlib.sha256(bytes(attest_pub_key_raw) + bytes(qe_auth_data)).digest() + bytes(32)


# ---------------------------------------------------------------- header and quote


@dataclass(frozen=True)
class QuoteHeader:
    """The 48-byte quote header shared by v3 and v4.

    ``tee_type`` is ``att_key_data_0`` (reserved, 0) in v3 and ``tee_type`` in v4.
    Differs: ``sgx_quote_4.h`` names bytes 8..11 of the v4 header ``reserved``; like QVL's
    ``Header`` and dcap-qvl we read and write QE SVN / PCE SVN there for both versions.
    """

    SIZE: ClassVar[int] = HEADER_SIZE
    _LAYOUT: ClassVar[struct.Struct] = struct.Struct("<HHIHH16s20s")

    version: int
    att_key_type: int = ATT_KEY_TYPE_ECDSA_P256
    tee_type: int = TEE_TYPE_SGX
    qe_svn: int = 0
    pce_svn: int = 0
    qe_vendor_id: bytes = INTEL_QE_VENDOR_ID
    user_data: bytes = bytes(20)

    def __post_init__(self) -> None:
        _need_uint("version", self.version, 16)
        _need_uint("att_key_type", self.att_key_type, 16)
        _need_uint("tee_type", self.tee_type, 32)
        _need_uint("qe_svn", self.qe_svn, 16)
        _need_uint("pce_svn", self.pce_svn, 16)
        _need_bytes("qe_vendor_id", self.qe_vendor_id, 16)
        _need_bytes("user_data", self.user_data, 20)

    def pack(self) -> bytes:
        """The 48 bytes."""
        return self._LAYOUT.pack(
            self.version,
            self.att_key_type,
            self.tee_type,
            self.qe_svn,
            self.pce_svn,
            self.qe_vendor_id,
            self.user_data,
        )

    @classmethod
    def unpack(cls, buf: bytes) -> QuoteHeader:
        """Parse 48 bytes (no semantic checks)."""
        raw = _need_bytes("quote header", buf, HEADER_SIZE)
        return cls(*cls._LAYOUT.unpack(raw))


@dataclass(frozen=True)
class CertificationData:
    """``sgx_ql_certification_data_t``: a type and its body."""

    cert_type: int
    data: bytes

    def pack(self) -> bytes:
        """u16 type || u32 size || data."""
        return struct.pack("<HI", self.cert_type, len(self.data)) + self.data


@dataclass(frozen=True)
class Quote:
    """A parsed SGX ECDSA-P256 quote (v3 or v4); raw byte fields kept for signature checks.

    ``certification_data`` is the innermost one (type 5 for a well-formed v3 or v4 quote);
    ``outer_cert_type`` is the type found in the signature data (6 for v4).
    """

    header: QuoteHeader
    report_body: ReportBody
    signed_data: bytes  # header || report body, what the attestation key signed
    signature: bytes
    attest_pub_key: bytes
    qe_report_body: ReportBody
    raw_qe_report_body: bytes
    qe_report_sig: bytes
    qe_auth_data: bytes
    certification_data: CertificationData
    outer_cert_type: int
    raw: bytes = field(repr=False)

    @property
    def version(self) -> int:
        return self.header.version

    @property
    def pck_chain_pem(self) -> bytes | None:
        """The PEM chain when the certification data is type 5, else ``None``."""
        if self.certification_data.cert_type == CertDataType.PCK_CERT_CHAIN:
            return self.certification_data.data
        return None


def _check_build_args(
    qe_svn: int,
    pce_svn: int,
    report_body: bytes,
    attest_key: ec.EllipticCurvePrivateKey,
    qe_report_body: bytes,
    qe_report_sig: bytes,
    qe_auth_data: bytes,
    pck_chain_pem: bytes,
    user_data: bytes,
    qe_vendor_id: bytes,
) -> None:
    _need_uint("qe_svn", qe_svn, 16)
    _need_uint("pce_svn", pce_svn, 16)
    _need_bytes("report_body", report_body, REPORT_BODY_SIZE)
    _need_bytes("qe_report_body", qe_report_body, REPORT_BODY_SIZE)
    _need_bytes("qe_report_sig", qe_report_sig, SIGNATURE_SIZE)
    if len(_need_bytes("qe_auth_data", qe_auth_data)) > 0xFFFF:
        raise InvalidArgument(f"qe_auth_data longer than a u16 size allows: {len(qe_auth_data)}")
    _need_bytes("pck_chain_pem", pck_chain_pem)
    _need_bytes("user_data", user_data, 20)
    _need_bytes("qe_vendor_id", qe_vendor_id, 16)
    if not isinstance(attest_key, ec.EllipticCurvePrivateKey):
        raise InvalidArgument(f"attest_key must be an EC private key, got {type(attest_key).__name__}")


def _qe_report_cert_body(
    qe_report_body: bytes, qe_report_sig: bytes, qe_auth_data: bytes, pck_chain_pem: bytes
) -> bytes:
    return (
        bytes(qe_report_body)
        + bytes(qe_report_sig)
        + struct.pack("<H", len(qe_auth_data))
        + bytes(qe_auth_data)
        + CertificationData(CertDataType.PCK_CERT_CHAIN, bytes(pck_chain_pem)).pack()
    )


def build_quote_v3(
    *,
    qe_svn: int,
    pce_svn: int,
    report_body: bytes,
    attest_key: ec.EllipticCurvePrivateKey,
    qe_report_body: bytes,
    qe_report_sig: bytes,
    qe_auth_data: bytes,
    pck_chain_pem: bytes,
    user_data: bytes = bytes(20),
    qe_vendor_id: bytes = INTEL_QE_VENDOR_ID,
) -> bytes:
    """Assemble and sign an SGX ECDSA quote v3 with certification data type 5.

    Models: intel/SGXDataCenterAttestationPrimitives sgx_quote_3.h ``sgx_quote3_t`` as the
    QE3 writes it. Outcome: the quote bytes; ``InvalidArgument`` for wrong Python types/sizes.
    """
    _check_build_args(
        qe_svn,
        pce_svn,
        report_body,
        attest_key,
        qe_report_body,
        qe_report_sig,
        qe_auth_data,
        pck_chain_pem,
        user_data,
        qe_vendor_id,
    )
    header = QuoteHeader(
        3, ATT_KEY_TYPE_ECDSA_P256, 0, qe_svn, pce_svn, bytes(qe_vendor_id), bytes(user_data)
    )
    signed = header.pack() + bytes(report_body)
    sig_data = ecdsa_raw_sign(attest_key, signed) + public_key_raw(attest_key)
    sig_data += _qe_report_cert_body(qe_report_body, qe_report_sig, qe_auth_data, pck_chain_pem)
    return signed + struct.pack("<I", len(sig_data)) + sig_data


def build_quote_v4(
    *,
    qe_svn: int,
    pce_svn: int,
    report_body: bytes,
    attest_key: ec.EllipticCurvePrivateKey,
    qe_report_body: bytes,
    qe_report_sig: bytes,
    qe_auth_data: bytes,
    pck_chain_pem: bytes,
    user_data: bytes = bytes(20),
    qe_vendor_id: bytes = INTEL_QE_VENDOR_ID,
) -> bytes:
    """Assemble and sign an SGX (tee_type 0) quote v4: type-6 certification data nesting type 5.

    Models: sgx_quote_4.h ``sgx_quote4_header_t`` + ``sgx_ecdsa_sig_data_v4_t`` +
    ``sgx_qe_report_certification_data_t`` with the SGX 384-byte report body.
    Outcome: the quote bytes; ``InvalidArgument`` for wrong Python types/sizes.
    """
    _check_build_args(
        qe_svn,
        pce_svn,
        report_body,
        attest_key,
        qe_report_body,
        qe_report_sig,
        qe_auth_data,
        pck_chain_pem,
        user_data,
        qe_vendor_id,
    )
    header = QuoteHeader(
        4, ATT_KEY_TYPE_ECDSA_P256, TEE_TYPE_SGX, qe_svn, pce_svn, bytes(qe_vendor_id), bytes(user_data)
    )
    signed = header.pack() + bytes(report_body)
    inner = _qe_report_cert_body(qe_report_body, qe_report_sig, qe_auth_data, pck_chain_pem)
    sig_data = ecdsa_raw_sign(attest_key, signed) + public_key_raw(attest_key)
    sig_data += CertificationData(CertDataType.ECDSA_SIG_AUX_DATA, inner).pack()
    return signed + struct.pack("<I", len(sig_data)) + sig_data


# ---------------------------------------------------------------- parser


class _Reader:
    """Bounds-checked cursor; every overrun is ``MALFORMED_QUOTE``."""

    def __init__(self, buf: bytes, what: str) -> None:
        self.buf = buf
        self.pos = 0
        self.what = what

    def take(self, n: int, field_name: str) -> bytes:
        if self.pos + n > len(self.buf):
            raise _fail(
                VerificationReason.MALFORMED_QUOTE,
                f"{self.what}: {field_name} needs {n} bytes at {self.pos}, {len(self.buf) - self.pos} left",
            )
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def u16(self, field_name: str) -> int:
        return int.from_bytes(self.take(2, field_name), "little")

    def u32(self, field_name: str) -> int:
        return int.from_bytes(self.take(4, field_name), "little")

    def done(self) -> None:
        if self.pos != len(self.buf):
            raise _fail(
                VerificationReason.MALFORMED_QUOTE, f"{self.what}: {len(self.buf) - self.pos} trailing bytes"
            )


def _read_cert_data(r: _Reader) -> CertificationData:
    cert_type = r.u16("certification data type")
    size = r.u32("certification data size")
    return CertificationData(cert_type, r.take(size, "certification data"))


def parse_quote(data: bytes) -> Quote:
    """Parse an SGX ECDSA-P256 quote v3 or v4 (tee_type SGX) into a :class:`Quote`.

    Models: the QVL's quote parser (``Quote::parse``) for the layouts in this module's docstring.
    Bytes after ``signature_data_len`` bytes of signature data are ignored (QVL
    ``Quote::parse``), and so are bytes after the certification data inside the signature data
    (``Ecdsa256BitQuoteV3AuthData::insert`` / ``...V4AuthData::insert``); inside a v4 type-6
    certification data every byte must be accounted for (``QEReportCertificationData::insert``).
    Outcomes: a ``Quote``; ``VerificationError`` with MALFORMED_QUOTE (any length/framing
    defect), UNSUPPORTED_QUOTE_VERSION, UNSUPPORTED_ATT_KEY_TYPE,
    UNSUPPORTED_TEE_TYPE, UNSUPPORTED_QE_VENDOR or UNSUPPORTED_CERT_DATA_TYPE; ``InvalidArgument``
    when ``data`` is not bytes.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidArgument(f"quote must be bytes, got {type(data).__name__}")
    raw = bytes(data)
    if len(raw) > MAX_QUOTE_SIZE:
        raise _fail(VerificationReason.MALFORMED_QUOTE, f"{len(raw)} bytes is larger than any quote")
    r = _Reader(raw, "quote")
    header = QuoteHeader.unpack(r.take(HEADER_SIZE, "header"))
    if header.version not in (3, 4):
        raise _fail(
            VerificationReason.UNSUPPORTED_QUOTE_VERSION,
            f"version {header.version}: only SGX quotes v3 and v4 are supported",
        )
    if header.att_key_type != ATT_KEY_TYPE_ECDSA_P256:
        raise _fail(VerificationReason.UNSUPPORTED_ATT_KEY_TYPE, f"att_key_type {header.att_key_type}")
    if header.tee_type != TEE_TYPE_SGX:
        what = "att_key_data_0" if header.version == 3 else "tee_type"
        kind = " (TDX): a TDX quote, not SGX" if header.tee_type == 0x81 else ": not an SGX quote"
        raise _fail(VerificationReason.UNSUPPORTED_TEE_TYPE, f"{what} 0x{header.tee_type:x}{kind}")
    if header.qe_vendor_id != INTEL_QE_VENDOR_ID:
        raise _fail(VerificationReason.UNSUPPORTED_QE_VENDOR, header.qe_vendor_id.hex())
    body_raw = r.take(REPORT_BODY_SIZE, "report body")
    sig_len = r.u32("signature_data_len")
    sig = _Reader(r.take(sig_len, "signature data"), "signature data")
    # Bytes after the declared signature data are ignored, as QVL's ``Quote::parse`` does.
    signature = sig.take(SIGNATURE_SIZE, "quote signature")
    attest_pub_key = sig.take(PUBKEY_SIZE, "attestation public key")
    if header.version == 3:
        qe = sig
        outer_type = -1
    else:
        outer = _read_cert_data(sig)  # bytes after it are ignored (Ecdsa256BitQuoteV4AuthData::insert)
        if outer.cert_type != CertDataType.ECDSA_SIG_AUX_DATA:
            raise _fail(
                VerificationReason.UNSUPPORTED_CERT_DATA_TYPE,
                f"v4 certification data type {outer.cert_type}, expected 6",
            )
        qe = _Reader(outer.data, "QE report certification data")
        outer_type = outer.cert_type
    qe_report_raw = qe.take(REPORT_BODY_SIZE, "QE report")
    qe_report_sig = qe.take(SIGNATURE_SIZE, "QE report signature")
    auth_size = qe.u16("QE auth data size")
    qe_auth_data = qe.take(auth_size, "QE auth data")
    cert = _read_cert_data(qe)
    if header.version == 4:
        qe.done()  # QEReportCertificationData::insert: "Inconsistent structure"
    # v3: bytes after the certification data are ignored (Ecdsa256BitQuoteV3AuthData::insert).
    if outer_type == -1:
        outer_type = cert.cert_type
    if cert.cert_type != CertDataType.PCK_CERT_CHAIN:
        raise _fail(
            VerificationReason.UNSUPPORTED_CERT_DATA_TYPE,
            f"certification data type {cert.cert_type}, expected 5",
        )
    return Quote(
        header=header,
        report_body=ReportBody.unpack(body_raw),
        signed_data=raw[:QUOTE_SIGNED_SIZE],
        signature=signature,
        attest_pub_key=attest_pub_key,
        qe_report_body=ReportBody.unpack(qe_report_raw),
        raw_qe_report_body=qe_report_raw,
        qe_report_sig=qe_report_sig,
        qe_auth_data=qe_auth_data,
        certification_data=cert,
        outer_cert_type=outer_type,
        raw=raw,
    )
