"""The Quoting Enclave (QE, Intel's "QE3"): program, build, host handle.

The QE derives an ECDSA P-256 attestation key from its SEAL key at the current CPUSVN, reports it
to the PCE (REPORTDATA = SHA-256(attestation key || QE authentication data) || 0^32), and turns an
application enclave's REPORT (targeted at the QE, MAC checked with the QE's REPORT key) into a
DCAP quote v3 or v4, signed inside the enclave.

Models: intel/SGXDataCenterAttestationPrimitives QuoteGeneration QE3 (``gen_att_key``,
``get_quote``; ``sgx_quote_3.h``, ``sgx_quote_4.h``).
Differs: the QE takes its certification data (QE report, PCE signature, PCK chain) from the host
on every quote instead of keeping it in a sealed blob, and checks that it certifies its current
attestation key.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import rsa

from sgxsim.errors import InvalidArgument
from sgxsim.hw.arch import (
    Report,
    Targetinfo,
)
from sgxsim.kernel.process import Process
from sgxsim.sdk.enclaves import enclave_source
from sgxsim.sdk.quoting.build import INTEL_AE_VENDOR, EnclaveBuild, build_enclave, load_build
from sgxsim.sdk.quoting.ecall import (
    COMMON_SOURCE,
    AeCallError,
    AeFunction,
    check_svn,
    need_bytes,
)
from sgxsim.sdk.quoting.host import HostEnclave
from sgxsim.sdk.quoting.provisioning import KDF_SOURCE

__all__ = [
    "DEFAULT_QE_AUTH_DATA",
    "QE_ISVPRODID",
    "QE_ISVSVN",
    "QE_SOURCE",
    "QeInit",
    "QuotingEnclave",
    "build_qe",
    "load_qe",
]

#: Intel's QE3: ISVPRODID 1 (QE Identity ``isvprodid``); ISVSVN [ASSUMED] 8.
QE_ISVPRODID = 1


QE_ISVSVN = 8


#: The QE3's default authentication data: bytes 0..31.
DEFAULT_QE_AUTH_DATA = bytes(range(32))


#: The QE program (kdf, ae_common, then :mod:`sgxsim.sdk.enclaves.qe`).
QE_SOURCE = KDF_SOURCE + COMMON_SOURCE + enclave_source("qe")


def build_qe(key: rsa.RSAPrivateKey, *, isvsvn: int = QE_ISVSVN) -> EnclaveBuild:
    """The QE signed with Intel's ``key`` (vendor 0x8086, ISVPRODID 1, PROVISIONKEY)."""
    return build_enclave(
        "qe", QE_SOURCE, key, provision=True, isvprodid=QE_ISVPRODID, isvsvn=isvsvn, vendor=INTEL_AE_VENDOR
    )


@dataclass(frozen=True)
class QeInit:
    """``gen_att_key``'s answer: the QE REPORT targeted at the PCE and the attestation public key."""

    report: bytes
    attest_pub: bytes
    auth_data: bytes

    @property
    def report_body(self) -> bytes:
        return self.report[:384]


class QuotingEnclave(HostEnclave):
    """Host handle of a loaded QE."""

    def gen_att_key(self, pce_target_info: Targetinfo, auth_data: bytes = DEFAULT_QE_AUTH_DATA) -> QeInit:
        """Derive the attestation key and REPORT it to the PCE (REPORTDATA binds key and auth data).

        Models: QE3 ``gen_att_key``. Outcomes: :class:`QeInit`; :class:`AeCallError`
        (SGX_QL_ERROR_INVALID_PARAMETER, SGX_QL_ERROR_UNEXPECTED).
        """
        if not isinstance(pce_target_info, Targetinfo):
            raise InvalidArgument(
                f"pce_target_info must be a Targetinfo, got {type(pce_target_info).__name__}"
            )
        auth = need_bytes("auth_data", auth_data)
        res = self.ecall(AeFunction.QE_GEN_ATT_KEY, [pce_target_info.pack(), auth], out_size=Report.SIZE + 64)
        if res.status:
            raise AeCallError("qe.gen_att_key", res.status, res.leaf_rax)
        return QeInit(res.data[: Report.SIZE], res.data[Report.SIZE :], auth)

    def get_quote(self, app_report: bytes, certification: bytes, pce_svn: int, *, version: int = 3) -> bytes:
        """Turn an application REPORT targeted at this QE into a quote (v3, or v4 on request).

        ``certification`` is :func:`certification_data`; ``pce_svn`` the PCESVN of the PCK
        certificate it carries. Models: QE3 ``get_quote``. Outcomes: the quote bytes;
        :class:`AeCallError` with SGX_QL_INVALID_REPORT (the REPORT's MAC does not verify with
        this QE's REPORT key: forged, modified, or targeted elsewhere),
        SGX_QL_ATT_KEY_CERT_DATA_INVALID (certification data malformed, of another QE, or not for
        the current attestation key), SGX_QL_ERROR_INVALID_PARAMETER.
        """
        if version not in (3, 4):
            raise InvalidArgument(f"quote version must be 3 or 4, got {version!r}")
        cert = need_bytes("certification", certification)
        size = 48 + 384 + 4 + 128 + (6 if version == 4 else 0) + len(cert)
        res = self.ecall(
            AeFunction.QE_GET_QUOTE,
            [need_bytes("app_report", app_report), cert],
            arg0=version,
            arg1=check_svn("pce_svn", pce_svn),
            out_size=size,
        )
        if res.status:
            raise AeCallError("qe.get_quote", res.status, res.leaf_rax)
        return res.data


def load_qe(proc: Process, build: EnclaveBuild) -> QuotingEnclave:
    """Load the QE in ``proc`` (with SGX_IOC_ENCLAVE_PROVISION). Outcomes: the handle; loader OSError."""
    return QuotingEnclave(load_build(proc, build), build)
