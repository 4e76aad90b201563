"""Why an attestation verification failed: one enum member per failure class.

Every failure of :mod:`sgxsim.attest` parsing or verification is a single
``sgxsim.errors.VerificationError(reason, detail)`` whose ``reason`` is a member of
:class:`VerificationReason`. The members follow the failure classes of Intel's Quote
Verification Library (``STATUS_*`` codes of ``sgx_ql_qv_result_t`` and the QVL's
``Status`` enum); the mapping is named in each member's comment.
"""

from __future__ import annotations

import enum

__all__ = ["VerificationReason"]


class VerificationReason(enum.Enum):
    """The failure classes of quote verification (QVL ``STATUS_*`` analogue in the comment)."""

    # --- the quote bytes (QVL STATUS_UNSUPPORTED_QUOTE_FORMAT and friends) ---
    MALFORMED_QUOTE = "malformed quote"  # framing: lengths, truncation, trailing bytes
    UNSUPPORTED_QUOTE_VERSION = "unsupported quote version"  # not 3 or 4
    UNSUPPORTED_ATT_KEY_TYPE = "unsupported attestation key type"  # not ECDSA-P256 (2)
    UNSUPPORTED_TEE_TYPE = "unsupported TEE type"  # v4 tee_type != SGX, v3 reserved != 0
    UNSUPPORTED_QE_VENDOR = "unsupported QE vendor"  # vendor id is not Intel's
    UNSUPPORTED_CERT_DATA_TYPE = "unsupported certification data type"  # not 5 (v4: 6 wrapping 5)
    # --- certificates and CRLs (QVL STATUS_SGX_*_CERT_*, STATUS_*_REVOKED) ---
    MALFORMED_CERT_CHAIN = "malformed certificate chain"  # PEM/DER, chain length
    UNTRUSTED_ROOT = "chain does not end at the trusted root"
    CERT_NAME_MISMATCH = "certificate subject/issuer is not Intel's structure"
    CERT_SIGNATURE_INVALID = "certificate signature invalid"
    CERT_EXPIRED = "certificate expired"
    CERT_NOT_YET_VALID = "certificate not yet valid"
    CERT_REVOKED = "certificate revoked"  # PCK leaf in the PCK CRL, CA/signer in the root CRL
    MALFORMED_CRL = "malformed CRL"
    CRL_ISSUER_MISMATCH = "CRL not issued by the expected CA"
    CRL_SIGNATURE_INVALID = "CRL signature invalid"
    CRL_EXPIRED = "CRL expired"
    CRL_NOT_YET_VALID = "CRL not yet valid"
    MALFORMED_PCK_EXTENSION = "malformed PCK SGX extension"
    # --- TCB Info (QVL STATUS_SGX_TCB_INFO_*, STATUS_TCB_INFO_MISMATCH) ---
    MALFORMED_TCB_INFO = "malformed TCB info"
    TCB_INFO_SIGNATURE_INVALID = "TCB info signature invalid"
    TCB_INFO_EXPIRED = "TCB info expired"  # now > nextUpdate
    TCB_INFO_NOT_YET_VALID = "TCB info not yet valid"  # now < issueDate
    TCB_INFO_MISMATCH = "TCB info does not match the PCK certificate"  # FMSPC / PCE-ID
    TCB_NOT_SUPPORTED = "no TCB level matches the platform"  # QVL STATUS_TCB_NOT_SUPPORTED
    # --- QE identity (QVL STATUS_SGX_ENCLAVE_IDENTITY_*, STATUS_SGX_ENCLAVE_REPORT_*) ---
    MALFORMED_QE_IDENTITY = "malformed QE identity"
    QE_IDENTITY_SIGNATURE_INVALID = "QE identity signature invalid"
    QE_IDENTITY_EXPIRED = "QE identity expired"
    QE_IDENTITY_NOT_YET_VALID = "QE identity not yet valid"
    QE_IDENTITY_MISMATCH = "QE report does not match the QE identity"  # MRSIGNER, ISVPRODID, masks
    # --- signatures inside the quote ---
    QE_REPORT_SIGNATURE_INVALID = "QE report signature invalid"  # PCK key over the QE report
    QE_REPORT_DATA_MISMATCH = "QE report data does not bind the attestation key"
    QUOTE_SIGNATURE_INVALID = "quote signature invalid"  # attestation key over header||body
