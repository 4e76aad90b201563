"""A deterministic test PKI with the structure and subject names of Intel's SGX PKI.

Intel SGX Root CA (self-signed, pathlen 1) issues the two PCK CAs ("Intel SGX PCK Platform CA",
"Intel SGX PCK Processor CA", pathlen 0) and the "Intel SGX TCB Signing" certificate (signs TCB
Info and QE Identity); a PCK CA issues "Intel SGX PCK Certificate" leaves that carry the SGX
extension. Every subject is ``CN=..., O=Intel Corporation, L=Santa Clara, ST=CA, C=US`` (the
order of Intel's certificates); keys are ECDSA P-256, signatures ECDSA-with-SHA256.

Determinism: keys and serial numbers come from the injected ``random.Random``; validity and CRL
dates are parameters; signatures use RFC 6979 nonces. Two ``TestPki.generate`` calls with equal
seeds and arguments give byte-identical certificates and CRLs.

Differs: Intel's root and CA keys live in HSMs and its CRLs are published at fixed URLs; here the
keys are in memory and CRLs are built on request with the revocations recorded so far.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import enum
import random
import warnings
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sgxsim.attest.pckext import OID_SGX_EXTENSION, DerError, PckExtension, SgxType, der_children, der_read
from sgxsim.attest.reasons import VerificationReason
from sgxsim.errors import InvalidArgument, VerificationError

__all__ = [
    "INTEL_LOCALITY",
    "INTEL_ORGANIZATION",
    "PCK_CN",
    "PLATFORM_CA_CN",
    "PROCESSOR_CA_CN",
    "ROOT_CA_CN",
    "TCB_SIGNING_CN",
    "CaKind",
    "PckCertificate",
    "TestPki",
    "derive_p256_key",
    "intel_name",
    "load_certificate_strict",
    "load_crl_strict",
    "parse_pem_chain",
    "pem_chain",
]

ROOT_CA_CN = "Intel SGX Root CA"
PLATFORM_CA_CN = "Intel SGX PCK Platform CA"
PROCESSOR_CA_CN = "Intel SGX PCK Processor CA"
PCK_CN = "Intel SGX PCK Certificate"
TCB_SIGNING_CN = "Intel SGX TCB Signing"
INTEL_ORGANIZATION = "Intel Corporation"
INTEL_LOCALITY = "Santa Clara"
INTEL_STATE = "CA"
INTEL_COUNTRY = "US"

ROOT_CRL_URL = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"
PCK_CRL_URL = "https://api.trustedservices.intel.com/sgx/certification/v4/pckcrl?ca={ca}&encoding=der"

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


class CaKind(enum.StrEnum):
    """Which PCK CA issued a PCK certificate (the PCS ``ca=`` parameter)."""

    PLATFORM = "platform"
    PROCESSOR = "processor"


def intel_name(common_name: str) -> x509.Name:
    """``CN=<cn>, O=Intel Corporation, L=Santa Clara, ST=CA, C=US`` in Intel's RDN order."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, INTEL_ORGANIZATION),
            x509.NameAttribute(NameOID.LOCALITY_NAME, INTEL_LOCALITY),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, INTEL_STATE),
            x509.NameAttribute(NameOID.COUNTRY_NAME, INTEL_COUNTRY),
        ]
    )


def derive_p256_key(rng: random.Random) -> ec.EllipticCurvePrivateKey:
    """A P-256 private key whose scalar is drawn from ``rng`` (uniform in [1, n-1])."""
    if not isinstance(rng, random.Random):
        raise InvalidArgument(f"rng must be a random.Random, got {type(rng).__name__}")
    return ec.derive_private_key(rng.randrange(1, P256_ORDER), ec.SECP256R1())


def _utc(name: str, value: dt.datetime) -> dt.datetime:
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        raise InvalidArgument(f"{name} must be a timezone-aware datetime, got {value!r}")
    return value.astimezone(dt.UTC)


def pem_chain(*certs: x509.Certificate) -> bytes:
    """Concatenated PEM of ``certs`` in order (leaf first, as in quotes and PCS headers)."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


X509_PARSE_ERRORS = (
    ValueError,
    TypeError,
    NotImplementedError,  # cryptography's X.509 parser raises it for unsupported features
    UnsupportedAlgorithm,
    DerError,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
    x509.InvalidVersion,
)


def _check_signed_envelope(der: bytes) -> None:
    """``SEQUENCE { tbs SEQUENCE, algorithm SEQUENCE, signature BIT STRING }`` exactly, DER-strict.

    cryptography ignores the BIT STRING's unused-bits octet of the outer signature, so without
    this check two different byte strings would be "the same" validly signed certificate/CRL.
    """
    tag, content, end = der_read(der)
    if tag != 0x30 or end != len(der):
        raise DerError("not a single SEQUENCE")
    parts = der_children(content)
    if [t for t, _ in parts] != [0x30, 0x30, 0x03] or not parts[2][1] or parts[2][1][0] != 0:
        raise DerError("bad signed-object structure")


def load_certificate_strict(der: bytes) -> x509.Certificate:
    """Load a DER certificate and parse every field now (cryptography parses lazily).

    Parse warnings (e.g. RFC 5280 violations cryptography only warns about) count as defects.
    Outcomes: the certificate; ``VerificationError(MALFORMED_CERT_CHAIN)`` for any defect.
    """
    try:
        _check_signed_envelope(der)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            cert = x509.load_der_x509_certificate(der)
            _ = (cert.version, cert.subject, cert.issuer, cert.serial_number, cert.signature_hash_algorithm)
            _ = (
                cert.not_valid_before_utc,
                cert.not_valid_after_utc,
                list(cert.extensions),
                cert.public_key(),
            )
    except (*X509_PARSE_ERRORS, Warning) as exc:
        raise VerificationError(VerificationReason.MALFORMED_CERT_CHAIN, f"bad certificate: {exc}") from None
    return cert


def load_crl_strict(der: bytes) -> x509.CertificateRevocationList:
    """Load a DER CRL and parse every field now; defects -> ``VerificationError(MALFORMED_CRL)``."""
    try:
        _check_signed_envelope(der)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            crl = x509.load_der_x509_crl(der)
            _ = (crl.issuer, crl.last_update_utc, crl.next_update_utc, list(crl.extensions))
            _ = (crl.signature_hash_algorithm, crl.tbs_certlist_bytes, crl.signature)
            for entry in crl:
                _ = (entry.serial_number, entry.revocation_date_utc, list(entry.extensions))
    except (*X509_PARSE_ERRORS, Warning) as exc:
        raise VerificationError(VerificationReason.MALFORMED_CRL, f"bad CRL: {exc}") from None
    return crl


_PEM_BEGIN_LINE = b"-----BEGIN CERTIFICATE-----"
_PEM_END_LINE = b"-----END CERTIFICATE-----"
_PEM_WHITESPACE = b" \t\r\n"


def parse_pem_chain(data: bytes | str, *, max_certs: int = 8) -> list[x509.Certificate]:
    """Parse a concatenation of PEM certificates as Intel's QVL reads one.

    Models: QVL ``CertificateChain::parse`` (split after each ``-----END CERTIFICATE-----``;
    what follows the last one is ignored) and OpenSSL ``PEM_read_bio_X509`` for each piece
    (text before the ``-----BEGIN CERTIFICATE-----`` line is skipped; the base64 body may use
    any line width, CRLF or LF, and the last line need not end in a newline). The DER inside
    is parsed strictly (:func:`load_certificate_strict`). Outcomes: the certificates in order;
    ``VerificationError(MALFORMED_CERT_CHAIN)`` for a piece without a certificate, bad base64,
    bad DER, more than ``max_certs`` certificates or none at all.
    """
    raw = data.encode("utf-8", "replace") if isinstance(data, str) else bytes(data)
    certs: list[x509.Certificate] = []
    pos = 0
    while (end := raw.find(_PEM_END_LINE, pos)) >= 0:
        piece = raw[pos:end]
        pos = end + len(_PEM_END_LINE)
        if len(certs) >= max_certs:
            raise VerificationError(VerificationReason.MALFORMED_CERT_CHAIN, f"more than {max_certs} certs")
        begin = piece.rfind(_PEM_BEGIN_LINE)
        if begin < 0 or (begin > 0 and piece[begin - 1 : begin] not in (b"\n", b"\r")):
            raise VerificationError(
                VerificationReason.MALFORMED_CERT_CHAIN, f"certificate {len(certs)}: no PEM header line"
            )
        body = piece[begin + len(_PEM_BEGIN_LINE) :]
        if body[:1] not in (b"\n", b"\r") or body[-1:] not in (b"\n", b"\r"):
            raise VerificationError(
                VerificationReason.MALFORMED_CERT_CHAIN, f"certificate {len(certs)}: PEM lines"
            )
        b64 = body.translate(None, _PEM_WHITESPACE)
        try:
            der = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise VerificationError(
                VerificationReason.MALFORMED_CERT_CHAIN, f"certificate {len(certs)}: bad base64"
            ) from None
        certs.append(load_certificate_strict(der))
    if not certs:
        raise VerificationError(VerificationReason.MALFORMED_CERT_CHAIN, "no certificates")
    return certs


@dataclass(frozen=True)
class PckCertificate:
    """An issued PCK leaf: certificate, its extension values, its CA, and the private key.

    [MODEL] The private key stands for the key the PCE derives for this TCB; the simulated PCE
    uses it to sign QE reports.
    """

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    extension: PckExtension
    ca: CaKind

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class _Ca:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    revoked: dict[int, dt.datetime] = field(default_factory=dict)
    crl_number: int = 0
    last_crl: tuple[object, bytes] | None = None  # (content key, DER) of the last CRL issued


class TestPki:
    """Root CA, PCK Platform/Processor CAs and TCB Signing certificate, plus CRL state.

    Build with :meth:`generate`. Mutable: revocations and CRL numbers accumulate.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        rng: random.Random,
        not_before: dt.datetime,
        not_after: dt.datetime,
        root: _Ca,
        cas: dict[CaKind, _Ca],
        tcb_signing_key: ec.EllipticCurvePrivateKey,
        tcb_signing_cert: x509.Certificate,
    ) -> None:
        self._rng = rng
        self.not_before = not_before
        self.not_after = not_after
        self._root = root
        self._cas = cas
        self.tcb_signing_key = tcb_signing_key
        self.tcb_signing_cert = tcb_signing_cert

    # ------------------------------------------------------------ construction

    @staticmethod
    def _serial(rng: random.Random) -> int:
        return rng.getrandbits(158) | (1 << 157)  # 20 bytes DER, positive, like Intel's serials

    @staticmethod
    def _sign(builder: x509.CertificateBuilder, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
        return builder.sign(key, hashes.SHA256(), ecdsa_deterministic=True)

    @classmethod
    def generate(
        cls,
        rng: random.Random,
        *,
        not_before: dt.datetime,
        not_after: dt.datetime,
    ) -> TestPki:
        """Create the whole hierarchy from ``rng``; validity ``[not_before, not_after]`` for all CAs.

        Outcome: a ``TestPki``; ``InvalidArgument`` for a non-Random rng or naive/inverted dates.
        """
        if not isinstance(rng, random.Random):
            raise InvalidArgument(f"rng must be a random.Random, got {type(rng).__name__}")
        nb, na = _utc("not_before", not_before), _utc("not_after", not_after)
        if na <= nb:
            raise InvalidArgument(f"not_after {na} must be after not_before {nb}")
        root_key = derive_p256_key(rng)
        root_ski = x509.SubjectKeyIdentifier.from_public_key(root_key.public_key())
        root_name = intel_name(ROOT_CA_CN)
        root_cert = cls._sign(
            x509.CertificateBuilder()
            .subject_name(root_name)
            .issuer_name(root_name)
            .public_key(root_key.public_key())
            .serial_number(cls._serial(rng))
            .not_valid_before(nb)
            .not_valid_after(na)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski), False)
            .add_extension(cls._crl_dp(ROOT_CRL_URL), False)
            .add_extension(root_ski, False)
            .add_extension(cls._ca_key_usage(), True)
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), True),
            root_key,
        )
        root = _Ca(root_key, root_cert)
        cas: dict[CaKind, _Ca] = {}
        for kind, cn in ((CaKind.PROCESSOR, PROCESSOR_CA_CN), (CaKind.PLATFORM, PLATFORM_CA_CN)):
            key = derive_p256_key(rng)
            cert = cls._issue(
                rng,
                root,
                intel_name(cn),
                key.public_key(),
                nb,
                na,
                key_usage=cls._ca_key_usage(),
                ca=True,
                crl_url=ROOT_CRL_URL,
            )
            cas[kind] = _Ca(key, cert)
        tcb_key = derive_p256_key(rng)
        tcb_cert = cls._issue(
            rng,
            root,
            intel_name(TCB_SIGNING_CN),
            tcb_key.public_key(),
            nb,
            na,
            key_usage=cls._leaf_key_usage(),
            ca=False,
            crl_url=ROOT_CRL_URL,
        )
        return cls(rng, nb, na, root, cas, tcb_key, tcb_cert)

    @staticmethod
    def _crl_dp(url: str) -> x509.CRLDistributionPoints:
        return x509.CRLDistributionPoints(
            [
                x509.DistributionPoint(
                    full_name=[x509.UniformResourceIdentifier(url)],
                    relative_name=None,
                    reasons=None,
                    crl_issuer=None,
                )
            ]
        )

    @staticmethod
    def _ca_key_usage() -> x509.KeyUsage:
        return x509.KeyUsage(
            digital_signature=False,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=True,
            crl_sign=True,
            encipher_only=False,
            decipher_only=False,
        )

    @staticmethod
    def _leaf_key_usage() -> x509.KeyUsage:
        return x509.KeyUsage(
            digital_signature=True,
            content_commitment=True,  # "Non Repudiation" in Intel's PCK/TCB Signing certificates
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=False,
            crl_sign=False,
            encipher_only=False,
            decipher_only=False,
        )

    @classmethod
    def _issue(
        cls,
        rng: random.Random,
        issuer: _Ca,
        subject: x509.Name,
        public_key: ec.EllipticCurvePublicKey,
        not_before: dt.datetime,
        not_after: dt.datetime,
        *,
        key_usage: x509.KeyUsage,
        ca: bool,
        crl_url: str,
        sgx_extension: bytes | None = None,
    ) -> x509.Certificate:
        issuer_ski = issuer.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.cert.subject)
            .public_key(public_key)
            .serial_number(cls._serial(rng))
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski), False)
            .add_extension(cls._crl_dp(crl_url), False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), False)
            .add_extension(key_usage, True)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), True)
        )
        if sgx_extension is not None:
            builder = builder.add_extension(
                x509.UnrecognizedExtension(x509.ObjectIdentifier(OID_SGX_EXTENSION), sgx_extension), False
            )
        return cls._sign(builder, issuer.key)

    # ------------------------------------------------------------ accessors

    @property
    def root_cert(self) -> x509.Certificate:
        return self._root.cert

    @property
    def root_key(self) -> ec.EllipticCurvePrivateKey:
        return self._root.key

    @property
    def root_der(self) -> bytes:
        """The trust anchor as DER (what ``dcap_qvl.verify_with_root_ca`` takes)."""
        return self._root.cert.public_bytes(serialization.Encoding.DER)

    def ca_cert(self, ca: CaKind | str) -> x509.Certificate:
        return self._cas[CaKind(ca)].cert

    def ca_key(self, ca: CaKind | str) -> ec.EllipticCurvePrivateKey:
        return self._cas[CaKind(ca)].key

    def pck_chain_pem(self, pck: PckCertificate | x509.Certificate, ca: CaKind | str | None = None) -> bytes:
        """leaf || PCK CA || root, PEM: the body of certification data type 5."""
        if isinstance(pck, PckCertificate):
            cert, kind = pck.cert, pck.ca
        else:
            if ca is None:
                raise InvalidArgument("ca is required when passing a bare certificate")
            cert, kind = pck, CaKind(ca)
        return pem_chain(cert, self.ca_cert(kind), self.root_cert)

    def pck_ca_chain_pem(self, ca: CaKind | str) -> str:
        """PCK CA || root: the ``SGX-PCK-Certificate-Issuer-Chain`` / ``pck_crl_issuer_chain``."""
        return pem_chain(self.ca_cert(ca), self.root_cert).decode("ascii")

    def tcb_signing_chain_pem(self) -> str:
        """TCB Signing || root: ``TCB-Info-Issuer-Chain`` and ``SGX-Enclave-Identity-Issuer-Chain``."""
        return pem_chain(self.tcb_signing_cert, self.root_cert).decode("ascii")

    # ------------------------------------------------------------ issuing and revoking

    def issue_pck(
        self,
        extension: PckExtension,
        *,
        ca: CaKind | str = CaKind.PLATFORM,
        key: ec.EllipticCurvePrivateKey | None = None,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> PckCertificate:
        """Issue an "Intel SGX PCK Certificate" for ``extension`` from the ``ca`` PCK CA.

        The key is drawn from the PKI's rng unless given. Intel's profile: Processor-CA
        certificates are SGX Type Standard without platform instance/configuration; Platform-CA
        ones carry them. Outcome: a :class:`PckCertificate`; ``InvalidArgument`` on bad types.
        """
        if not isinstance(extension, PckExtension):
            raise InvalidArgument(f"extension must be a PckExtension, got {type(extension).__name__}")
        kind = CaKind(ca)
        if key is None:
            key = derive_p256_key(self._rng)
        elif not isinstance(key, ec.EllipticCurvePrivateKey):
            raise InvalidArgument(f"key must be an EC private key, got {type(key).__name__}")
        nb = self.not_before if not_before is None else _utc("not_before", not_before)
        na = self.not_after if not_after is None else _utc("not_after", not_after)
        cert = self._issue(
            self._rng,
            self._cas[kind],
            intel_name(PCK_CN),
            key.public_key(),
            nb,
            na,
            key_usage=self._leaf_key_usage(),
            ca=False,
            crl_url=PCK_CRL_URL.format(ca=kind.value),
            sgx_extension=extension.encode(),
        )
        return PckCertificate(cert, key, extension, kind)

    def default_extension(
        self,
        *,
        ppid: bytes,
        cpusvn: bytes,
        pcesvn: int,
        pce_id: bytes,
        fmspc: bytes,
        ca: CaKind | str,
        platform_instance_id: bytes | None = None,
    ) -> PckExtension:
        """The extension Intel's profile gives a PCK certificate of ``ca`` for this TCB."""
        if CaKind(ca) is CaKind.PROCESSOR:
            return PckExtension.for_tcb(ppid=ppid, cpusvn=cpusvn, pcesvn=pcesvn, pce_id=pce_id, fmspc=fmspc)
        return PckExtension.for_tcb(
            ppid=ppid,
            cpusvn=cpusvn,
            pcesvn=pcesvn,
            pce_id=pce_id,
            fmspc=fmspc,
            sgx_type=SgxType.SCALABLE,
            platform_instance_id=platform_instance_id or bytes(16),
            configuration=(False, False, True),
        )

    def revoke(self, cert: x509.Certificate, when: dt.datetime) -> None:
        """Put ``cert`` on its issuer's CRL (PCK leaf -> PCK CA CRL; CA/TCB signer -> root CRL)."""
        if not isinstance(cert, x509.Certificate):
            raise InvalidArgument(f"cert must be an x509.Certificate, got {type(cert).__name__}")
        issuer = self._issuer_of(cert)
        issuer.revoked[cert.serial_number] = _utc("when", when)

    def _issuer_of(self, cert: x509.Certificate) -> _Ca:
        for ca in (self._root, *self._cas.values()):
            try:
                cert.verify_directly_issued_by(ca.cert)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return ca
        raise InvalidArgument(f"{cert.subject.rfc4514_string()} was not issued by this PKI")

    # ------------------------------------------------------------ CRLs

    def _crl(self, ca: _Ca, this_update: dt.datetime, next_update: dt.datetime) -> bytes:
        tu, nu = _utc("this_update", this_update), _utc("next_update", next_update)
        if nu <= tu:
            raise InvalidArgument(f"next_update {nu} must be after this_update {tu}")
        content = (tu, nu, tuple(sorted(ca.revoked.items())))
        if ca.last_crl is not None and ca.last_crl[0] == content:
            return ca.last_crl[1]  # same content: the same CRL, not a new CRL number
        ca.crl_number += 1
        ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca.cert.subject)
            .last_update(tu)
            .next_update(nu)
            .add_extension(x509.CRLNumber(ca.crl_number), False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False)
        )
        for serial, when in sorted(ca.revoked.items()):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
            )
        crl = builder.sign(ca.key, hashes.SHA256(), ecdsa_deterministic=True)
        der = crl.public_bytes(serialization.Encoding.DER)
        ca.last_crl = (content, der)
        return der

    def root_ca_crl(self, this_update: dt.datetime, next_update: dt.datetime) -> bytes:
        """The Root CA CRL (DER) with every revocation so far; a new CRL number when the content changes."""
        return self._crl(self._root, this_update, next_update)

    def pck_crl(self, ca: CaKind | str, this_update: dt.datetime, next_update: dt.datetime) -> bytes:
        """The ``ca`` PCK CA CRL (DER) with every revocation so far; new CRL number when content changes."""
        return self._crl(self._cas[CaKind(ca)], this_update, next_update)
