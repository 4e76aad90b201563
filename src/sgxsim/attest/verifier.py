"""DCAP quote verification as Intel's Quote Verification Library does it, one function per QVL verifier.

Intel's QVL (``intel/SGX-TDX-DCAP-QuoteVerificationLibrary``, ``Src/AttestationLibrary/src``) is
the reference; each function below names the QVL function it follows, so the two can be read side
by side:

=============================  ======================================================================
:func:`verify_pck_cert_chain`  ``sgxAttestationVerifyPCKCertificate`` + ``PckCertVerifier::verify``
:func:`verify_tcb_info`        ``sgxAttestationVerifyTCBInfo`` + ``TCBInfoVerifier::verify``
:func:`verify_qe_identity`     ``sgxAttestationVerifyEnclaveIdentity`` + ``EnclaveIdentityVerifier``
:func:`verify_enclave_report`  ``EnclaveReportVerifier::verify`` (the QE report against QE Identity)
:func:`check_tcb_level`        ``checkTcbLevel`` / ``matchTcbLevels`` / ``convergeTcbStatusWithQeTcbStatus``
:func:`verify_quote_body`      ``QuoteVerifier::verify`` (PCK/CRL binding, FMSPC, QE and quote signatures)
:func:`verify_quote`           ``sgxAttestationVerifyQuote`` with the four above, as QvE chains them
=============================  ======================================================================

Result contract:

* Any defect of the quote, the chains, the CRLs or the collateral -> one
  ``VerificationError(reason, detail)`` (``reason`` a :class:`VerificationReason`). Time defects
  name the item and its validity window. A PCK certificate or CA listed on a CRL is such a defect
  (``CERT_REVOKED``); so is a QE ISVSVN below every QE Identity level (``TCB_NOT_SUPPORTED``,
  QVL ``STATUS_SGX_ENCLAVE_REPORT_ISVSVN_NOT_SUPPORTED`` converged to ``STATUS_TCB_NOT_SUPPORTED``).
* Otherwise a :class:`VerifiedQuote` with what QVL/QvE report: status, advisory IDs, the matched
  TCB level and its tcbDate, the collateral's earliest expiration, and ``debug``. ``accepted`` is
  the relying party's default: ``False`` when the converged status is Revoked or, unless
  ``allow_debug``, the quoted enclave is a debug enclave (``rejected_because`` says which); every
  other status is accepted and its acceptability is the relying party's policy
  (:mod:`sgxsim.attest.broker`).

Where we differ from QVL on purpose: duplicate member names in signed JSON are refused (QVL takes
the first); a document is valid from its ``issueDate`` inclusive (QVL's
``EnclaveIdentityV2::checkDateCorrectness`` excludes the issue second); collateral freshness is a
hard failure as in dcap-qvl, not QvE's ``collateral_expiration_status`` flag.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import SignatureAlgorithmOID

from sgxsim.attest.collateral import (
    Collateral,
    ParsedQeIdentity,
    ParsedTcbInfo,
    QeTcbLevel,
    TcbLevel,
    TcbStatus,
    format_date,
    parse_qe_identity,
    parse_tcb_info,
)
from sgxsim.attest.formats import (
    Quote,
    ReportBody,
    ecdsa_raw_verify,
    parse_quote,
    public_key_from_raw,
    qe_report_data,
)
from sgxsim.attest.pckext import OID_SGX_EXTENSION, PckExtension
from sgxsim.attest.pki import (
    PCK_CN,
    PLATFORM_CA_CN,
    PROCESSOR_CA_CN,
    ROOT_CA_CN,
    TCB_SIGNING_CN,
    X509_PARSE_ERRORS,
    CaKind,
    intel_name,
    load_crl_strict,
    parse_pem_chain,
)
from sgxsim.attest.reasons import VerificationReason as R
from sgxsim.errors import InvalidArgument, ModelInvariantError, VerificationError

__all__ = [
    "PckChain",
    "Validity",
    "VerifiedQuote",
    "check_tcb_info_signature",
    "check_tcb_level",
    "converge_tcb_status",
    "verify_enclave_report",
    "verify_pck_cert_chain",
    "verify_qe_identity",
    "verify_quote",
    "verify_quote_body",
    "verify_tcb_info",
]

_X509_ERRORS = X509_PARSE_ERRORS

# QVL QuoteVerification.cpp: EXPECTED_CERTIFICATE_COUNT_IN_PCK_CHAIN / _IN_TCB_CHAIN.
PCK_CHAIN_LENGTH = 3
TCB_CHAIN_LENGTH = 2


@dataclass(frozen=True)
class Validity:
    """One collateral item's validity window (certificate, CRL, TCB Info or QE Identity)."""

    item: str
    not_before: dt.datetime
    not_after: dt.datetime

    def describe(self) -> str:
        return f"{self.item} is valid from {format_date(self.not_before)} to {format_date(self.not_after)}"


@dataclass(frozen=True)
class PckChain:
    """A verified PCK certificate chain (leaf, PCK CA, root) and the leaf's SGX extension."""

    leaf: x509.Certificate
    ca_cert: x509.Certificate
    ca: CaKind
    pck: PckExtension
    pck_crl: x509.CertificateRevocationList


@dataclass(frozen=True)
class VerifiedQuote:
    """The outcome of a successful verification (see the module docstring for ``accepted``)."""

    status: TcbStatus
    accepted: bool
    advisory_ids: tuple[str, ...]
    platform_status: TcbStatus
    qe_status: TcbStatus
    tcb_level: TcbLevel
    qe_tcb_level: QeTcbLevel | None
    superseded_at: dt.datetime | None  # earliest tcbDate of a level strictly above the matched one
    tcb_info: ParsedTcbInfo
    qe_identity: ParsedQeIdentity
    pck: PckExtension
    ca: CaKind
    quote: Quote
    collateral_expiration: Validity | None = None  # the item that expires first
    rejected_because: str | None = None  # why ``accepted`` is False ("Revoked TCB", "debug enclave")

    @property
    def report_body(self) -> ReportBody:
        return self.quote.report_body

    @property
    def mr_enclave(self) -> bytes:
        return self.quote.report_body.mr_enclave

    @property
    def mr_signer(self) -> bytes:
        return self.quote.report_body.mr_signer

    @property
    def isv_prod_id(self) -> int:
        return self.quote.report_body.isv_prod_id

    @property
    def isv_svn(self) -> int:
        return self.quote.report_body.isv_svn

    @property
    def report_data(self) -> bytes:
        return self.quote.report_body.report_data

    @property
    def debug(self) -> bool:
        """ATTRIBUTES.DEBUG of the quoted enclave (QvE reports it; QVL's library does not refuse it)."""
        return self.quote.report_body.debug

    @property
    def tcb_date(self) -> dt.datetime:
        """The tcbDate of the matched TCB level (QvE supplemental ``tcb_level_date_tag``)."""
        return self.tcb_level.tcb_date

    @property
    def tcb_evaluation_data_number(self) -> int:
        """The lower of the TCB Info and QE Identity evaluation numbers (as QVL reports it)."""
        return min(self.tcb_info.tcb_evaluation_data_number, self.qe_identity.tcb_evaluation_data_number)


def converge_tcb_status(platform: TcbStatus, qe: TcbStatus) -> TcbStatus:
    """Combine platform and QE TCB statuses as QVL's ``convergeTcbStatusWithQeTcbStatus``.

    ``qe`` is the QE status as :func:`verify_enclave_report` classifies it (UpToDate, OutOfDate
    or Revoked). QE Revoked -> Revoked; QE OutOfDate turns UpToDate/SWHardeningNeeded into
    OutOfDate and ConfigurationNeeded/ConfigurationAndSWHardeningNeeded into
    OutOfDateConfigurationNeeded; otherwise the platform status stands.
    """
    if qe is TcbStatus.REVOKED:
        return TcbStatus.REVOKED
    if qe is TcbStatus.OUT_OF_DATE:
        if platform in (TcbStatus.UP_TO_DATE, TcbStatus.SW_HARDENING_NEEDED):
            return TcbStatus.OUT_OF_DATE
        if platform in (TcbStatus.CONFIGURATION_NEEDED, TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED):
            return TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED
    return platform


# ---------------------------------------------------------------- certificate and CRL helpers


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _check_window(
    window: Validity, now: dt.datetime, not_yet_valid: R, expired: R, windows: list[Validity]
) -> None:
    """``not_before <= now <= not_after``, else an error naming the item and its window."""
    at = format_date(now)
    if now < window.not_before:
        raise VerificationError(not_yet_valid, f"{window.describe()}; verification time {at} is before it")
    if now > window.not_after:
        raise VerificationError(expired, f"{window.describe()}; it expired before the verification time {at}")
    windows.append(window)


def _check_cert(cert: x509.Certificate, now: dt.datetime, what: str, windows: list[Validity]) -> None:
    """Signature algorithm, critical extensions and validity of one chain certificate.

    QVL verifies every chain signature with ``verifySha256EcdsaSignature``, so a certificate
    signed with another algorithm (e.g. ECDSA-SHA384) fails; an unknown critical extension makes
    a certificate unusable (RFC 5280 4.2).
    """
    if cert.signature_algorithm_oid != SignatureAlgorithmOID.ECDSA_WITH_SHA256:
        raise VerificationError(
            R.CERT_SIGNATURE_INVALID, f"{what} is signed with {cert.signature_algorithm_oid.dotted_string}"
        )
    for ext in cert.extensions:
        oid = ext.oid.dotted_string
        if ext.critical and isinstance(ext.value, x509.UnrecognizedExtension) and oid != OID_SGX_EXTENSION:
            raise VerificationError(R.MALFORMED_CERT_CHAIN, f"{what} has an unknown critical extension {oid}")
    window = Validity(what, cert.not_valid_before_utc, cert.not_valid_after_utc)
    _check_window(window, now, R.CERT_NOT_YET_VALID, R.CERT_EXPIRED, windows)


def _check_subject(cert: x509.Certificate, names: dict[str, CaKind | None], what: str) -> CaKind | None:
    for cn, kind in names.items():
        if cert.subject == intel_name(cn):
            return kind
    raise VerificationError(R.CERT_NAME_MISMATCH, f"{what} subject {cert.subject.rfc4514_string()}")


def _basic_constraints_ca(cert: x509.Certificate, what: str) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    except _X509_ERRORS as exc:
        raise VerificationError(R.MALFORMED_CERT_CHAIN, f"{what} extensions: {exc}") from None
    return bc.ca


def _check_issued_by_root(cert: x509.Certificate, root: x509.Certificate, what: str) -> None:
    try:
        cert.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature):
        raise VerificationError(R.UNTRUSTED_ROOT, f"{what} is not issued by the trusted root") from None


def _check_issued_by(cert: x509.Certificate, issuer: x509.Certificate, what: str) -> None:
    if cert.issuer != issuer.subject:
        raise VerificationError(R.CERT_NAME_MISMATCH, f"{what} issuer {cert.issuer.rfc4514_string()}")
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        raise VerificationError(R.CERT_SIGNATURE_INVALID, f"{what} signature") from None


def _load_crl(der: bytes, what: str) -> x509.CertificateRevocationList:
    if not isinstance(der, bytes):
        raise InvalidArgument(f"{what} must be DER bytes, got {type(der).__name__}")
    return load_crl_strict(der)


def _check_crl(
    crl: x509.CertificateRevocationList,
    issuer: x509.Certificate,
    now: dt.datetime,
    what: str,
    windows: list[Validity],
) -> None:
    """Issuer, ECDSA-SHA256 signature, and thisUpdate <= now <= nextUpdate (QVL ``PckCrlVerifier``)."""
    if crl.issuer != issuer.subject:
        raise VerificationError(R.CRL_ISSUER_MISMATCH, f"{what} issued by {crl.issuer.rfc4514_string()}")
    pub = issuer.public_key()
    try:
        ok = (
            crl.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA256
            and isinstance(pub, ec.EllipticCurvePublicKey)
            and crl.is_signature_valid(pub)
        )
    except _X509_ERRORS:
        ok = False
    if not ok:
        raise VerificationError(R.CRL_SIGNATURE_INVALID, what)
    next_update = crl.next_update_utc
    if next_update is None:
        raise VerificationError(R.MALFORMED_CRL, f"{what} has no nextUpdate")
    window = Validity(what, crl.last_update_utc, next_update)
    _check_window(window, now, R.CRL_NOT_YET_VALID, R.CRL_EXPIRED, windows)


def _check_not_revoked(crl: x509.CertificateRevocationList, cert: x509.Certificate, what: str) -> None:
    try:
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    except _X509_ERRORS as exc:
        raise VerificationError(R.MALFORMED_CRL, f"CRL entries: {exc}") from None
    if entry is not None:
        raise VerificationError(R.CERT_REVOKED, f"{what} serial {cert.serial_number:x} revoked")


def _check_is_root(cert: x509.Certificate, root: x509.Certificate, what: str) -> None:
    if _der(cert) != _der(root):
        raise VerificationError(R.UNTRUSTED_ROOT, f"{what} ends in a different root")


def _verify_signer_chain(
    pem: str,
    root: x509.Certificate,
    root_crl: x509.CertificateRevocationList,
    now: dt.datetime,
    what: str,
    windows: list[Validity],
) -> x509.Certificate:
    """TCB Signing || root chain of TCB Info / QE Identity (QVL ``TCBSigningChain::verify``)."""
    if not isinstance(pem, str):
        raise InvalidArgument(f"{what} must be str, got {type(pem).__name__}")
    certs = parse_pem_chain(pem)
    if len(certs) != TCB_CHAIN_LENGTH:
        missing = "; root CA missing" if len(certs) < TCB_CHAIN_LENGTH else ""
        raise VerificationError(
            R.MALFORMED_CERT_CHAIN, f"{what}: {len(certs)} certificates, expected {TCB_CHAIN_LENGTH}{missing}"
        )
    signer = certs[0]
    _check_is_root(certs[1], root, what)
    _check_subject(signer, {TCB_SIGNING_CN: None}, f"{what} signer")
    _check_issued_by_root(signer, root, f"{what} signer")
    if _basic_constraints_ca(signer, what):
        raise VerificationError(R.CERT_NAME_MISMATCH, f"{what} signer is a CA")
    _check_cert(signer, now, f"{what} signer", windows)
    _check_not_revoked(root_crl, signer, f"{what} signer")
    return signer


def _check_signed_text(signer: x509.Certificate, text: str, signature: bytes, reason: R, what: str) -> None:
    if not isinstance(text, str) or not isinstance(signature, bytes):
        raise InvalidArgument(f"{what} must be str with a bytes signature")
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        raise VerificationError(reason, f"{what} is not UTF-8 text") from None
    pub = signer.public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey) or not ecdsa_raw_verify(pub, signature, data):
        raise VerificationError(reason, what)


def _load_root(root_ca: bytes | x509.Certificate) -> x509.Certificate:
    if isinstance(root_ca, x509.Certificate):
        root = root_ca
    elif isinstance(root_ca, bytes | bytearray):
        try:
            root = x509.load_der_x509_certificate(bytes(root_ca))
        except ValueError as exc:
            raise InvalidArgument(f"root_ca is not a DER certificate: {exc}") from None
    else:
        raise InvalidArgument(
            f"root_ca must be DER bytes or an x509.Certificate, got {type(root_ca).__name__}"
        )
    if root.subject != intel_name(ROOT_CA_CN) or root.issuer != root.subject:
        raise InvalidArgument(f"root_ca is not a self-issued '{ROOT_CA_CN}': {root.subject.rfc4514_string()}")
    return root


# ---------------------------------------------------------------- the QVL verifiers


def verify_pck_cert_chain(
    chain_pem: bytes | str,
    root: x509.Certificate,
    root_crl: x509.CertificateRevocationList,
    collateral: Collateral,
    now: dt.datetime,
    windows: list[Validity],
) -> PckChain:
    """The quote's PCK chain (leaf || PCK CA || root), the PCK CRL and its issuer chain.

    Models: QVL ``sgxAttestationVerifyPCKCertificate`` (exactly 3 certificates: a chain without
    its root is refused) and ``PckCertVerifier::verify`` (Intel names, issuer signatures, CA
    flags, validity, root CRL, PCK CRL of the issuing CA), plus ``PckCertificate::parse`` of the
    SGX extension (strict DER). ``windows`` collects the validity windows checked.
    """
    chain = parse_pem_chain(chain_pem)
    if len(chain) != PCK_CHAIN_LENGTH:
        missing = "; root CA missing" if len(chain) < PCK_CHAIN_LENGTH else ""
        raise VerificationError(
            R.MALFORMED_CERT_CHAIN,
            f"PCK chain has {len(chain)} certificates, expected {PCK_CHAIN_LENGTH}{missing}",
        )
    leaf, pck_ca = chain[0], chain[1]
    _check_is_root(chain[2], root, "PCK chain")
    kind = _check_subject(
        pck_ca, {PLATFORM_CA_CN: CaKind.PLATFORM, PROCESSOR_CA_CN: CaKind.PROCESSOR}, "PCK CA"
    )
    if kind is None:  # pragma: no cover - both names map to a kind
        raise ModelInvariantError("PCK CA name without a CA kind")
    _check_issued_by_root(pck_ca, root, "PCK CA")
    if not _basic_constraints_ca(pck_ca, "PCK CA"):
        raise VerificationError(R.CERT_NAME_MISMATCH, "PCK CA is not a CA certificate")
    _check_cert(pck_ca, now, f"PCK CA certificate ({pck_ca.subject.rfc4514_string()})", windows)
    _check_not_revoked(root_crl, pck_ca, "PCK CA")
    _check_subject(leaf, {PCK_CN: None}, "PCK certificate")
    _check_issued_by(leaf, pck_ca, "PCK certificate")
    if _basic_constraints_ca(leaf, "PCK certificate"):
        raise VerificationError(R.CERT_NAME_MISMATCH, "PCK certificate is a CA certificate")
    _check_cert(leaf, now, "PCK certificate", windows)

    # PCK CRL of the issuing CA, and its issuer chain (PCK CA || root).
    pck_crl = _load_crl(collateral.pck_crl, "PCK CRL")
    _check_crl(pck_crl, pck_ca, now, "PCK CRL", windows)
    crl_chain = parse_pem_chain(collateral.pck_crl_issuer_chain)
    if _der(crl_chain[0]) != _der(pck_ca):
        raise VerificationError(R.CRL_ISSUER_MISMATCH, "pck_crl_issuer_chain names another PCK CA")
    for extra in crl_chain[1:]:
        _check_is_root(extra, root, "pck_crl_issuer_chain")
    _check_not_revoked(pck_crl, leaf, "PCK certificate")

    try:
        ext = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(OID_SGX_EXTENSION)).value
    except x509.ExtensionNotFound:
        raise VerificationError(R.MALFORMED_PCK_EXTENSION, "no SGX extension") from None
    except _X509_ERRORS as exc:
        raise VerificationError(R.MALFORMED_CERT_CHAIN, f"PCK certificate extensions: {exc}") from None
    if not isinstance(ext, x509.UnrecognizedExtension):
        raise VerificationError(R.MALFORMED_PCK_EXTENSION, "unexpected extension type")
    return PckChain(leaf, pck_ca, kind, PckExtension.decode(ext.value), pck_crl)


def check_tcb_info_signature(
    text: str, signature: bytes, issuer_chain: str, root: x509.Certificate | bytes, now: dt.datetime
) -> ParsedTcbInfo:
    """A TCB Info text signed by the TCB Signing key of ``issuer_chain`` (signer || root) under ``root``.

    For planning tools (``tcb-impact``): the chain and the signature are checked as
    :func:`verify_tcb_info` does (signer validity at ``now``), not the TCB Info's own freshness or
    CRLs. Outcome: the parsed TCB Info; ``VerificationError`` otherwise.
    """
    anchor = _load_root(root)
    certs = parse_pem_chain(issuer_chain)
    what = "TCB Info signing chain"
    if len(certs) != TCB_CHAIN_LENGTH:
        raise VerificationError(R.MALFORMED_CERT_CHAIN, f"{what}: {len(certs)} certificates")
    _check_is_root(certs[1], anchor, what)
    _check_subject(certs[0], {TCB_SIGNING_CN: None}, f"{what} signer")
    _check_issued_by_root(certs[0], anchor, f"{what} signer")
    _check_cert(certs[0], now, f"{what} signer", [])
    _check_signed_text(certs[0], text, signature, R.TCB_INFO_SIGNATURE_INVALID, "TCB Info")
    return parse_tcb_info(text)


def verify_tcb_info(
    collateral: Collateral,
    root: x509.Certificate,
    root_crl: x509.CertificateRevocationList,
    now: dt.datetime,
    windows: list[Validity],
) -> ParsedTcbInfo:
    """Signer chain, signature, strict parse and freshness of the TCB Info.

    Models: QVL ``sgxAttestationVerifyTCBInfo`` / ``TCBInfoVerifier::verify`` and
    ``TcbInfo::parse`` (every level parsed strictly, dates ``YYYY-MM-DDThh:mm:ssZ`` only).
    """
    signer = _verify_signer_chain(
        collateral.tcb_info_issuer_chain, root, root_crl, now, "TCB Info signing chain", windows
    )
    _check_signed_text(
        signer, collateral.tcb_info, collateral.tcb_info_signature, R.TCB_INFO_SIGNATURE_INVALID, "TCB Info"
    )
    tcb_info = parse_tcb_info(collateral.tcb_info)
    window = Validity(f"TCB Info (FMSPC {tcb_info.fmspc.hex()})", tcb_info.issue_date, tcb_info.next_update)
    _check_window(window, now, R.TCB_INFO_NOT_YET_VALID, R.TCB_INFO_EXPIRED, windows)
    return tcb_info


def verify_qe_identity(
    collateral: Collateral,
    root: x509.Certificate,
    root_crl: x509.CertificateRevocationList,
    now: dt.datetime,
    windows: list[Validity],
) -> ParsedQeIdentity:
    """Signer chain, signature, strict parse and freshness of the QE Identity.

    Models: QVL ``sgxAttestationVerifyEnclaveIdentity`` / ``EnclaveIdentityVerifier::verify`` and
    ``EnclaveIdentityV2`` (levels kept in document order; statuses of ``parseStringToTcbStatus``).
    """
    signer = _verify_signer_chain(
        collateral.qe_identity_issuer_chain, root, root_crl, now, "QE Identity signing chain", windows
    )
    _check_signed_text(
        signer,
        collateral.qe_identity,
        collateral.qe_identity_signature,
        R.QE_IDENTITY_SIGNATURE_INVALID,
        "QE Identity",
    )
    identity = parse_qe_identity(collateral.qe_identity)
    window = Validity("QE Identity", identity.issue_date, identity.next_update)
    _check_window(window, now, R.QE_IDENTITY_NOT_YET_VALID, R.QE_IDENTITY_EXPIRED, windows)
    return identity


def verify_enclave_report(identity: ParsedQeIdentity, report: ReportBody) -> tuple[TcbStatus, QeTcbLevel]:
    """The QE report against the QE Identity; returns the QE TCB status and the level that gave it.

    Models: QVL ``EnclaveReportVerifier::verify``: ``report.MISCSELECT & mask == miscselect``,
    ``report.ATTRIBUTES & mask == attributes`` (the identity's values are compared unmasked),
    MRSIGNER, ISVPRODID; then the first level in document order with ``isvsvn <= ISVSVN``
    (``EnclaveIdentityV2::getTcbStatus``). Its status UpToDate -> UpToDate, Revoked -> Revoked,
    any other -> OutOfDate (QVL returns ``ISVSVN_OUT_OF_DATE`` for every non-UpToDate,
    non-Revoked level). No level -> ``VerificationError(TCB_NOT_SUPPORTED)``.
    """
    if report.misc_select & identity.miscselect_mask != identity.miscselect:
        raise VerificationError(R.QE_IDENTITY_MISMATCH, f"MISCSELECT 0x{report.misc_select:08x}")
    mask = int.from_bytes(identity.attributes_mask, "little")
    if int.from_bytes(report.attributes, "little") & mask != int.from_bytes(identity.attributes, "little"):
        raise VerificationError(R.QE_IDENTITY_MISMATCH, f"ATTRIBUTES {report.attributes.hex()}")
    if report.mr_signer != identity.mrsigner:
        raise VerificationError(R.QE_IDENTITY_MISMATCH, f"MRSIGNER {report.mr_signer.hex()}")
    if report.isv_prod_id != identity.isvprodid:
        raise VerificationError(R.QE_IDENTITY_MISMATCH, f"ISVPRODID {report.isv_prod_id}")
    level = next((lv for lv in identity.levels if lv.isvsvn <= report.isv_svn), None)
    if level is None:
        raise VerificationError(R.TCB_NOT_SUPPORTED, f"QE ISVSVN {report.isv_svn} is below every QE level")
    if level.status in (TcbStatus.UP_TO_DATE, TcbStatus.REVOKED):
        return level.status, level
    return TcbStatus.OUT_OF_DATE, level


def check_tcb_level(tcb_info: ParsedTcbInfo, pck: PckExtension) -> TcbLevel:
    """The TCB level of the platform: the first (highest) level the PCK TCB meets.

    Models: QVL ``matchTcbLevels`` / ``isCpuSvnHigherOrEqual``: every one of the PCK
    certificate's 16 components and its PCESVN >= the level's (not the quote's CPUSVN).
    No level -> ``VerificationError(TCB_NOT_SUPPORTED)``.
    """
    level = next((lv for lv in tcb_info.levels if lv.is_met_by(pck.tcb_components, pck.pcesvn)), None)
    if level is None:
        raise VerificationError(
            R.TCB_NOT_SUPPORTED, f"PCK TCB {list(pck.tcb_components)}/{pck.pcesvn} is below every level"
        )
    return level


def verify_quote_body(
    quote: Quote, chain: PckChain, tcb_info: ParsedTcbInfo, identity: ParsedQeIdentity
) -> tuple[TcbStatus, QeTcbLevel]:
    """The quote against its verified PCK chain and collateral; returns the QE status and level.

    Models: QVL ``QuoteVerifier::verify`` in its order: TCB Info FMSPC / PCE-ID against the PCK
    certificate, QE report signature by the PCK key, QE report data binding
    (REPORTDATA[0:32] = SHA-256(attestation key || QE auth data)), the QE report against the QE
    Identity (:func:`verify_enclave_report`), the attestation key, the quote signature.
    """
    pck = chain.pck
    if tcb_info.fmspc != pck.fmspc:
        raise VerificationError(R.TCB_INFO_MISMATCH, f"FMSPC {tcb_info.fmspc.hex()} != {pck.fmspc.hex()}")
    if tcb_info.pce_id != pck.pce_id:
        raise VerificationError(R.TCB_INFO_MISMATCH, f"PCE-ID {tcb_info.pce_id.hex()} != {pck.pce_id.hex()}")
    leaf_key = chain.leaf.public_key()
    if not isinstance(leaf_key, ec.EllipticCurvePublicKey) or not ecdsa_raw_verify(
        leaf_key, quote.qe_report_sig, quote.raw_qe_report_body
    ):
        raise VerificationError(R.QE_REPORT_SIGNATURE_INVALID, "PCK key does not sign the QE report")
    binding = qe_report_data(quote.attest_pub_key, quote.qe_auth_data)[:32]
    if quote.qe_report_body.report_data[:32] != binding:
        raise VerificationError(
            R.QE_REPORT_DATA_MISMATCH, "REPORTDATA[0:32] != SHA-256(attest key || auth data)"
        )
    qe_status, qe_level = verify_enclave_report(identity, quote.qe_report_body)
    try:
        attest_key = public_key_from_raw(quote.attest_pub_key)
    except ValueError:
        raise VerificationError(R.QUOTE_SIGNATURE_INVALID, "attestation key is not a P-256 point") from None
    if not ecdsa_raw_verify(attest_key, quote.signature, quote.signed_data):
        raise VerificationError(R.QUOTE_SIGNATURE_INVALID, "attestation key does not sign header||body")
    return qe_status, qe_level


def verify_quote(
    quote_bytes: bytes,
    collateral: Collateral,
    root_ca: bytes | x509.Certificate,
    now: dt.datetime,
    *,
    allow_debug: bool = False,
) -> VerifiedQuote:
    """Verify an SGX ECDSA quote (v3 or v4) with ``collateral`` against ``root_ca`` at ``now``.

    Models: QvE ``sgx_qve_verify_quote`` chaining QVL's verifiers: root CA CRL,
    :func:`verify_pck_cert_chain`, :func:`verify_tcb_info`, :func:`verify_qe_identity`,
    :func:`verify_quote_body`, :func:`check_tcb_level` and :func:`converge_tcb_status`.
    Outcomes: a :class:`VerifiedQuote` (``accepted`` False iff the converged status is Revoked or,
    unless ``allow_debug``, the enclave is a debug enclave) or ``VerificationError`` with one reason
    per failure class; ``InvalidArgument`` for wrong Python types, a naive ``now`` or a root that is
    not a self-issued "Intel SGX Root CA".
    """
    if not isinstance(now, dt.datetime) or now.tzinfo is None:
        raise InvalidArgument(f"now must be a timezone-aware datetime, got {now!r}")
    if not isinstance(collateral, Collateral):
        raise InvalidArgument(f"collateral must be a Collateral, got {type(collateral).__name__}")
    now = now.astimezone(dt.UTC)
    root = _load_root(root_ca)
    quote = parse_quote(quote_bytes)
    windows: list[Validity] = []

    root_crl = _load_crl(collateral.root_ca_crl, "root CA CRL")
    _check_crl(root_crl, root, now, "root CA CRL", windows)
    _check_not_revoked(root_crl, root, "root CA")
    windows.append(Validity("root CA certificate", root.not_valid_before_utc, root.not_valid_after_utc))

    chain = verify_pck_cert_chain(quote.certification_data.data, root, root_crl, collateral, now, windows)
    tcb_info = verify_tcb_info(collateral, root, root_crl, now, windows)
    identity = verify_qe_identity(collateral, root, root_crl, now, windows)
    qe_status, qe_level = verify_quote_body(quote, chain, tcb_info, identity)
    level = check_tcb_level(tcb_info, chain.pck)

    status = converge_tcb_status(level.status, qe_status)
    advisories = list(level.advisory_ids)
    if qe_status is not TcbStatus.UP_TO_DATE:
        advisories += [a for a in qe_level.advisory_ids if a not in advisories]
    above = [
        lv.tcb_date
        for lv in tcb_info.levels
        if lv.dominates(level.components, level.pcesvn)
        and (lv.components, lv.pcesvn) != (level.components, level.pcesvn)
    ]
    rejected: str | None = None
    if status is TcbStatus.REVOKED:
        rejected = "Revoked TCB"
    elif quote.report_body.debug and not allow_debug:
        rejected = "debug enclave"
    return VerifiedQuote(
        status=status,
        accepted=rejected is None,
        advisory_ids=tuple(advisories),
        platform_status=level.status,
        qe_status=qe_status,
        tcb_level=level,
        qe_tcb_level=qe_level,
        superseded_at=min(above) if above else None,
        tcb_info=tcb_info,
        qe_identity=identity,
        pck=chain.pck,
        ca=chain.ca,
        quote=quote,
        collateral_expiration=min(windows, key=lambda w: w.not_after),
        rejected_because=rejected,
    )
