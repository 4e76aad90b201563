"""DCAP attestation as a library: quote formats, PKI, collateral, PCS, verifier, relying party.

Depends only on :mod:`sgxsim.errors` (and :mod:`cryptography`): a verifier needs no simulated
machine. The quoting enclaves of the simulated platform call :func:`build_quote_v3` /
:func:`build_quote_v4` and :func:`qe_report_data`; a relying party calls :func:`verify_quote` or
uses a :class:`KeyBroker`.

A quoting enclave's job, in library calls (the PCE's signature is ``ecdsa_raw_sign`` with the
PCK key of the certificate :meth:`Pcs.select_pck_cert` chose for the platform's raw TCB)::

    auth = bytes(32)                                         # QE authentication data
    qe_body = <QE REPORT body with report_data = qe_report_data(public_key_raw(attest_key), auth)>
    qe_sig = ecdsa_raw_sign(pck.key, qe_body)                # PCE signs the QE report
    quote = build_quote_v3(qe_svn=..., pce_svn=..., report_body=isv_report_body_384,
                           attest_key=attest_key, qe_report_body=qe_body, qe_report_sig=qe_sig,
                           qe_auth_data=auth, pck_chain_pem=pki.pck_chain_pem(pck))
"""

from __future__ import annotations

from sgxsim.attest.broker import BrokerDecision, BrokerPolicy, DecisionReason, EnclaveRule, KeyBroker
from sgxsim.attest.collateral import (
    SGX_TCB_COMPONENT_LABELS,
    Collateral,
    ParsedQeIdentity,
    ParsedTcbInfo,
    QeIdentityModel,
    QeTcbLevel,
    SignedDocument,
    TcbLevel,
    TcbModel,
    TcbStatus,
    format_date,
    parse_qe_identity,
    parse_tcb_info,
    sign_document,
    split_envelope,
)
from sgxsim.attest.formats import (
    ATT_KEY_TYPE_ECDSA_P256,
    INTEL_QE_VENDOR_ID,
    REPORT_BODY_SIZE,
    CertDataType,
    CertificationData,
    Quote,
    QuoteHeader,
    ReportBody,
    build_quote_v3,
    build_quote_v4,
    ecdsa_raw_sign,
    ecdsa_raw_verify,
    parse_quote,
    public_key_raw,
    qe_report_data,
)
from sgxsim.attest.pckext import PckExtension, SgxType
from sgxsim.attest.pcs import Pcs, PcsClient, PcsHttpError, PcsHttpServer, RegisteredPlatform, select_pck_cert
from sgxsim.attest.pki import CaKind, PckCertificate, TestPki, derive_p256_key, intel_name, parse_pem_chain
from sgxsim.attest.reasons import VerificationReason
from sgxsim.attest.verifier import VerifiedQuote, converge_tcb_status, verify_quote

__all__ = [
    "ATT_KEY_TYPE_ECDSA_P256",
    "INTEL_QE_VENDOR_ID",
    "REPORT_BODY_SIZE",
    "SGX_TCB_COMPONENT_LABELS",
    "BrokerDecision",
    "BrokerPolicy",
    "CaKind",
    "CertDataType",
    "CertificationData",
    "Collateral",
    "DecisionReason",
    "EnclaveRule",
    "KeyBroker",
    "ParsedQeIdentity",
    "ParsedTcbInfo",
    "PckCertificate",
    "PckExtension",
    "Pcs",
    "PcsClient",
    "PcsHttpError",
    "PcsHttpServer",
    "QeIdentityModel",
    "QeTcbLevel",
    "Quote",
    "QuoteHeader",
    "RegisteredPlatform",
    "ReportBody",
    "SgxType",
    "SignedDocument",
    "TcbLevel",
    "TcbModel",
    "TcbStatus",
    "TestPki",
    "VerificationReason",
    "VerifiedQuote",
    "build_quote_v3",
    "build_quote_v4",
    "converge_tcb_status",
    "derive_p256_key",
    "ecdsa_raw_sign",
    "ecdsa_raw_verify",
    "format_date",
    "intel_name",
    "parse_pem_chain",
    "parse_qe_identity",
    "parse_quote",
    "parse_tcb_info",
    "public_key_raw",
    "qe_report_data",
    "select_pck_cert",
    "sign_document",
    "split_envelope",
    "verify_quote",
]
