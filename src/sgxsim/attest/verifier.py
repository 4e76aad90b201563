"""QVL-like DCAP quote verification against a given root CA, collateral and time.

``verify_quote`` follows Intel's Quote Verification Library (``intel/SGX-TDX-DCAP-
QuoteVerificationLibrary``): PCK chain and CRLs, TCB Info and QE Identity (signature by
"Intel SGX TCB Signing", freshness), QE report signature by the PCK key, the QE report
binding of the attestation key, the quote signature, the QE identity policy and QE TCB status,
TCB-level matching on the PCK certificate's 16 components + PCESVN (``TcbLevelCheck``), and
convergence of platform and QE statuses.

Result contract:

* Any defect of the quote, the chains, the CRLs or the collateral -> one
  ``VerificationError(reason, detail)`` (``reason`` a :class:`VerificationReason`). A PCK
  certificate or CA listed on a CRL is such a defect (``CERT_REVOKED``): the signature chain
  itself is no longer trusted.
* Otherwise a :class:`VerifiedQuote`. When the converged TCB status is ``Revoked`` (a TCB level
  or the QE's ISVSVN level classified Revoked), the quote is genuine but ``accepted`` is
  ``False``; for every other status ``accepted`` is ``True`` and acceptance of the status is the
  relying party's policy (:mod:`sgxsim.attest.broker`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sgxsim.attest.collateral import (
    Collateral,
    ParsedQeIdentity,
    ParsedTcbInfo,
    QeTcbLevel,
    TcbLevel,
    TcbStatus,
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

__all__ = ["VerifiedQuote", "converge_tcb_status", "verify_quote"]

_X509_ERRORS = X509_PARSE_ERRORS


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
        return self.quote.report_body.debug

    @property
    def tcb_evaluation_data_number(self) -> int:
        """The lower of the TCB Info and QE Identity evaluation numbers (as QVL reports it)."""
        return min(self.tcb_info.tcb_evaluation_data_number, self.qe_identity.tcb_evaluation_data_number)


def converge_tcb_status(platform: TcbStatus, qe: TcbStatus) -> TcbStatus:
    """Combine platform and QE TCB statuses as QVL's ``convergeTcbStatusWithQeTcbStatus``.

    QE Revoked -> Revoked; QE OutOfDate turns UpToDate/SWHardeningNeeded into OutOfDate and
    ConfigurationNeeded/ConfigurationAndSWHardeningNeeded into OutOfDateConfigurationNeeded;
    otherwise the platform status stands.
    """
    if qe is TcbStatus.REVOKED:
        return TcbStatus.REVOKED
    if qe is TcbStatus.OUT_OF_DATE:
        if platform in (TcbStatus.UP_TO_DATE, TcbStatus.SW_HARDENING_NEEDED):
            return TcbStatus.OUT_OF_DATE
        if platform in (TcbStatus.CONFIGURATION_NEEDED, TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED):
            return TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED
    return platform


# ---------------------------------------------------------------- certificate helpers


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _check_validity(cert: x509.Certificate, now: dt.datetime, what: str) -> None:
    if now < cert.not_valid_before_utc:
        raise VerificationError(R.CERT_NOT_YET_VALID, f"{what} valid from {cert.not_valid_before_utc}")
    if now > cert.not_valid_after_utc:
        raise VerificationError(R.CERT_EXPIRED, f"{what} expired {cert.not_valid_after_utc}")


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
    crl: x509.CertificateRevocationList, issuer: x509.Certificate, now: dt.datetime, what: str
) -> None:
    if crl.issuer != issuer.subject:
        raise VerificationError(R.CRL_ISSUER_MISMATCH, f"{what} issued by {crl.issuer.rfc4514_string()}")
    pub = issuer.public_key()
    try:
        ok = isinstance(pub, ec.EllipticCurvePublicKey) and crl.is_signature_valid(pub)
    except _X509_ERRORS:
        ok = False
    if not ok:
        raise VerificationError(R.CRL_SIGNATURE_INVALID, what)
    next_update = crl.next_update_utc
    if next_update is None:
        raise VerificationError(R.MALFORMED_CRL, f"{what} has no nextUpdate")
    if now < crl.last_update_utc:
        raise VerificationError(R.CRL_NOT_YET_VALID, f"{what} thisUpdate {crl.last_update_utc}")
    if now > next_update:
        raise VerificationError(R.CRL_EXPIRED, f"{what} nextUpdate {next_update}")


def _check_not_revoked(crl: x509.CertificateRevocationList, cert: x509.Certificate, what: str) -> None:
    try:
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    except _X509_ERRORS as exc:
        raise VerificationError(R.MALFORMED_CRL, f"CRL entries: {exc}") from None
    if entry is not None:
        raise VerificationError(R.CERT_REVOKED, f"{what} serial {cert.serial_number:x} revoked")


def _chain_tail_is_root(certs: list[x509.Certificate], root: x509.Certificate, what: str) -> None:
    root_der = _der(root)
    for extra in certs:
        if _der(extra) != root_der:
            raise VerificationError(R.UNTRUSTED_ROOT, f"{what} ends in a different root")


def _verify_signer_chain(
    pem: str, root: x509.Certificate, root_crl: x509.CertificateRevocationList, now: dt.datetime, what: str
) -> x509.Certificate:
    """TCB Signing || root chain (TCB Info / QE Identity issuer chains)."""
    if not isinstance(pem, str):
        raise InvalidArgument(f"{what} must be str, got {type(pem).__name__}")
    certs = parse_pem_chain(pem)
    if len(certs) > 2:
        raise VerificationError(R.MALFORMED_CERT_CHAIN, f"{what}: {len(certs)} certificates")
    signer = certs[0]
    _chain_tail_is_root(certs[1:], root, what)
    _check_subject(signer, {TCB_SIGNING_CN: None}, f"{what} signer")
    _check_issued_by_root(signer, root, f"{what} signer")
    if _basic_constraints_ca(signer, what):
        raise VerificationError(R.CERT_NAME_MISMATCH, f"{what} signer is a CA")
    _check_validity(signer, now, f"{what} signer")
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


# ---------------------------------------------------------------- the verifier


def verify_quote(
    quote_bytes: bytes,
    collateral: Collateral,
    root_ca: bytes | x509.Certificate,
    now: dt.datetime,
) -> VerifiedQuote:
    """Verify an SGX ECDSA quote (v3 or v4) with ``collateral`` against ``root_ca`` at ``now``.

    Models: Intel QVL ``sgxAttestationVerifyQuote`` (PckCertVerifier, TCBInfoVerifier,
    EnclaveIdentityVerifier, QuoteVerifier incl. TcbLevelCheck and
    convergeTcbStatusWithQeTcbStatus). Outcomes: a :class:`VerifiedQuote` (``accepted`` False
    iff the converged status is Revoked) or ``VerificationError`` with one reason per failure
    class (see :class:`VerificationReason`); ``InvalidArgument`` for wrong Python types, a naive
    ``now`` or a root that is not a self-issued "Intel SGX Root CA".
    Differs: collateral freshness is a hard failure (``TCB_INFO_EXPIRED`` etc.) as in dcap-qvl,
    not QvE's ``collateral_expiration_status`` flag.
    """
    if not isinstance(now, dt.datetime) or now.tzinfo is None:
        raise InvalidArgument(f"now must be a timezone-aware datetime, got {now!r}")
    if not isinstance(collateral, Collateral):
        raise InvalidArgument(f"collateral must be a Collateral, got {type(collateral).__name__}")
    now = now.astimezone(dt.UTC)
    root = _load_root(root_ca)

    quote = parse_quote(quote_bytes)

    # Root CA CRL (also covers the PCK CAs and the TCB Signing certificate).
    root_crl = _load_crl(collateral.root_ca_crl, "root CA CRL")
    _check_crl(root_crl, root, now, "root CA CRL")
    _check_not_revoked(root_crl, root, "root CA")

    # PCK certificate chain from the quote: leaf || PCK CA [|| root].
    chain = parse_pem_chain(quote.certification_data.data)
    if not 2 <= len(chain) <= 3:
        raise VerificationError(R.MALFORMED_CERT_CHAIN, f"PCK chain has {len(chain)} certificates")
    leaf, pck_ca = chain[0], chain[1]
    _chain_tail_is_root(chain[2:], root, "PCK chain")
    kind = _check_subject(
        pck_ca, {PLATFORM_CA_CN: CaKind.PLATFORM, PROCESSOR_CA_CN: CaKind.PROCESSOR}, "PCK CA"
    )
    if kind is None:  # pragma: no cover - both names map to a kind
        raise ModelInvariantError("PCK CA name without a CA kind")
    _check_issued_by_root(pck_ca, root, "PCK CA")
    if not _basic_constraints_ca(pck_ca, "PCK CA"):
        raise VerificationError(R.CERT_NAME_MISMATCH, "PCK CA is not a CA certificate")
    _check_validity(pck_ca, now, "PCK CA")
    _check_not_revoked(root_crl, pck_ca, "PCK CA")
    _check_subject(leaf, {PCK_CN: None}, "PCK certificate")
    _check_issued_by(leaf, pck_ca, "PCK certificate")
    if _basic_constraints_ca(leaf, "PCK certificate"):
        raise VerificationError(R.CERT_NAME_MISMATCH, "PCK certificate is a CA certificate")
    _check_validity(leaf, now, "PCK certificate")

    # PCK CRL of the issuing CA, and its issuer chain.
    pck_crl = _load_crl(collateral.pck_crl, "PCK CRL")
    _check_crl(pck_crl, pck_ca, now, "PCK CRL")
    crl_chain = parse_pem_chain(collateral.pck_crl_issuer_chain)
    if _der(crl_chain[0]) != _der(pck_ca):
        raise VerificationError(R.CRL_ISSUER_MISMATCH, "pck_crl_issuer_chain names another PCK CA")
    _chain_tail_is_root(crl_chain[1:], root, "pck_crl_issuer_chain")
    _check_not_revoked(pck_crl, leaf, "PCK certificate")

    # The SGX extension of the PCK certificate.
    try:
        ext = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(OID_SGX_EXTENSION)).value
    except x509.ExtensionNotFound:
        raise VerificationError(R.MALFORMED_PCK_EXTENSION, "no SGX extension") from None
    except _X509_ERRORS as exc:
        raise VerificationError(R.MALFORMED_CERT_CHAIN, f"PCK certificate extensions: {exc}") from None
    if not isinstance(ext, x509.UnrecognizedExtension):
        raise VerificationError(R.MALFORMED_PCK_EXTENSION, "unexpected extension type")
    pck = PckExtension.decode(ext.value)

    # TCB Info.
    tcb_signer = _verify_signer_chain(collateral.tcb_info_issuer_chain, root, root_crl, now, "TCB info chain")
    _check_signed_text(
        tcb_signer,
        collateral.tcb_info,
        collateral.tcb_info_signature,
        R.TCB_INFO_SIGNATURE_INVALID,
        "TCB info",
    )
    tcb_info = parse_tcb_info(collateral.tcb_info)
    if now < tcb_info.issue_date:
        raise VerificationError(R.TCB_INFO_NOT_YET_VALID, f"issueDate {tcb_info.issue_date}")
    if now > tcb_info.next_update:
        raise VerificationError(R.TCB_INFO_EXPIRED, f"nextUpdate {tcb_info.next_update}")
    if tcb_info.fmspc != pck.fmspc:
        raise VerificationError(R.TCB_INFO_MISMATCH, f"FMSPC {tcb_info.fmspc.hex()} != {pck.fmspc.hex()}")
    if tcb_info.pce_id != pck.pce_id:
        raise VerificationError(R.TCB_INFO_MISMATCH, f"PCE-ID {tcb_info.pce_id.hex()} != {pck.pce_id.hex()}")

    # QE Identity.
    qe_signer = _verify_signer_chain(
        collateral.qe_identity_issuer_chain, root, root_crl, now, "QE identity chain"
    )
    _check_signed_text(
        qe_signer,
        collateral.qe_identity,
        collateral.qe_identity_signature,
        R.QE_IDENTITY_SIGNATURE_INVALID,
        "QE identity",
    )
    qe_identity = parse_qe_identity(collateral.qe_identity)
    if now < qe_identity.issue_date:
        raise VerificationError(R.QE_IDENTITY_NOT_YET_VALID, f"issueDate {qe_identity.issue_date}")
    if now > qe_identity.next_update:
        raise VerificationError(R.QE_IDENTITY_EXPIRED, f"nextUpdate {qe_identity.next_update}")

    # Signatures inside the quote.
    leaf_key = leaf.public_key()
    if not isinstance(leaf_key, ec.EllipticCurvePublicKey) or not ecdsa_raw_verify(
        leaf_key, quote.qe_report_sig, quote.raw_qe_report_body
    ):
        raise VerificationError(R.QE_REPORT_SIGNATURE_INVALID, "PCK key does not sign the QE report")
    # QVL / dcap-qvl compare REPORTDATA[0:32] only; bytes 32..63 are covered by the PCK signature.
    binding = qe_report_data(quote.attest_pub_key, quote.qe_auth_data)[:32]
    if quote.qe_report_body.report_data[:32] != binding:
        raise VerificationError(
            R.QE_REPORT_DATA_MISMATCH, "REPORTDATA[0:32] != SHA-256(attest key || auth data)"
        )
    try:
        attest_key = public_key_from_raw(quote.attest_pub_key)
    except ValueError:
        raise VerificationError(R.QUOTE_SIGNATURE_INVALID, "attestation key is not a P-256 point") from None
    if not ecdsa_raw_verify(attest_key, quote.signature, quote.signed_data):
        raise VerificationError(R.QUOTE_SIGNATURE_INVALID, "attestation key does not sign header||body")

    # QE identity policy and QE TCB status.
    qe_report = quote.qe_report_body
    if qe_report.mr_signer != qe_identity.mrsigner:
        raise VerificationError(R.QE_IDENTITY_MISMATCH, f"MRSIGNER {qe_report.mr_signer.hex()}")
    if qe_report.isv_prod_id != qe_identity.isvprodid:
        raise VerificationError(R.QE_IDENTITY_MISMATCH, f"ISVPRODID {qe_report.isv_prod_id}")
    mask = qe_identity.miscselect_mask
    if qe_report.misc_select & mask != qe_identity.miscselect & mask:
        raise VerificationError(R.QE_IDENTITY_MISMATCH, f"MISCSELECT 0x{qe_report.misc_select:08x}")
    amask = int.from_bytes(qe_identity.attributes_mask, "little")
    if (
        int.from_bytes(qe_report.attributes, "little") & amask
        != int.from_bytes(qe_identity.attributes, "little") & amask
    ):
        raise VerificationError(R.QE_IDENTITY_MISMATCH, f"ATTRIBUTES {qe_report.attributes.hex()}")
    qe_level = next((lv for lv in qe_identity.levels if lv.isvsvn <= qe_report.isv_svn), None)
    qe_status = TcbStatus.REVOKED if qe_level is None else qe_level.status

    # Platform TCB level: the PCK certificate's components and PCESVN (not the quote's CPUSVN).
    level = next((lv for lv in tcb_info.levels if lv.is_met_by(pck.tcb_components, pck.pcesvn)), None)
    if level is None:
        raise VerificationError(
            R.TCB_NOT_SUPPORTED, f"PCK TCB {list(pck.tcb_components)}/{pck.pcesvn} is below every level"
        )
    status = converge_tcb_status(level.status, qe_status)
    advisories = list(level.advisory_ids)
    if qe_level is not None and qe_status is not TcbStatus.UP_TO_DATE:
        advisories += [a for a in qe_level.advisory_ids if a not in advisories]
    above = [
        lv.tcb_date
        for lv in tcb_info.levels
        if lv.dominates(level.components, level.pcesvn)
        and (lv.components, lv.pcesvn) != (level.components, level.pcesvn)
    ]
    return VerifiedQuote(
        status=status,
        accepted=status is not TcbStatus.REVOKED,
        advisory_ids=tuple(advisories),
        platform_status=level.status,
        qe_status=qe_status,
        tcb_level=level,
        qe_tcb_level=qe_level,
        superseded_at=min(above) if above else None,
        tcb_info=tcb_info,
        qe_identity=qe_identity,
        pck=pck,
        ca=kind,
        quote=quote,
    )
