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


_QE_BODY = """
INVALID_PARAMETER = 0xE002
SGX_QL_SUCCESS = 0
SGX_QL_ERROR_UNEXPECTED = 0xE001
SGX_QL_ATT_KEY_CERT_DATA_INVALID = 0xE010
SGX_QL_INVALID_REPORT = 0xE015
QE_ATT_LABEL = b"QE3_ATT_KEY"
QE_VENDOR_ID = bytes.fromhex("939A7233F79C4CA9940A0DB3957F0607")
ATT_KEY_TYPE_ECDSA_P256 = 2
CERT_PCK_CHAIN = 5
CERT_QE_REPORT = 6


def attestation_key(ctx, call, me):
    status, seed = egetkey(ctx, keyrequest(
        KEYNAME_SEAL, KEYPOLICY_MRENCLAVE, isvsvn=u16(me, 258), cpusvn=me[:16],
        attributemask=SEAL_FLAGSMASK, miscmask=SEAL_MISCMASK,
    ))
    field_set(ctx, call, F_LEAF_RAX, status)
    if status != LEAF_SUCCESS:
        return None
    return ec.derive_private_key(kdf_p256_scalar(seed, QE_ATT_LABEL), ec.SECP256R1())


def qe_id(ctx, call):
    status, key = egetkey(ctx, keyrequest(
        KEYNAME_SEAL, KEYPOLICY_MRSIGNER, attributemask=SEAL_FLAGSMASK, miscmask=SEAL_MISCMASK,
    ))
    field_set(ctx, call, F_LEAF_RAX, status)
    if status != LEAF_SUCCESS:
        return None
    return kdf_cmac(key, b"QE_ID".ljust(16, b"\\0"))


def gen_att_key(ctx, call):
    pce_target = copy_in(ctx, call, F_IN1, exact=512)
    auth = copy_in(ctx, call, F_IN2, limit=0xFFFF)
    if pce_target is None or auth is None:
        return INVALID_PARAMETER
    me = self_report(ctx)
    key = attestation_key(ctx, call, me)
    if key is None:
        return SGX_QL_ERROR_UNEXPECTED
    pub = public_raw(key)
    report = ereport(ctx, pce_target, hashlib.sha256(pub + auth).digest() + bytes(32))
    return SGX_QL_SUCCESS if copy_out(ctx, call, report + pub) else INVALID_PARAMETER


def parse_certification(data):
    # qe_report (384) || qe_report_sig (64) || u16 auth size || auth || u16 type 5 || u32 size || chain
    if len(data) < 384 + 64 + 2:
        return None
    auth_size = u16(data, 448)
    pos = 450 + auth_size
    if len(data) < pos + 6 or u16(data, pos) != CERT_PCK_CHAIN:
        return None
    if int.from_bytes(data[pos + 2:pos + 6], "little") != len(data) - pos - 6:
        return None
    return data[:384], data[450:pos]


def get_quote(ctx, call):
    app = copy_in(ctx, call, F_IN1, exact=432)
    cert = copy_in(ctx, call, F_IN2)
    version = field_get(ctx, call, F_ARG0)
    pce_svn = field_get(ctx, call, F_ARG1)
    if app is None or cert is None or version not in (3, 4) or pce_svn > 0xFFFF:
        return INVALID_PARAMETER
    if not verify_report(ctx, app):
        return SGX_QL_INVALID_REPORT
    parsed = parse_certification(cert)
    if parsed is None:
        return SGX_QL_ATT_KEY_CERT_DATA_INVALID
    qe_report, auth = parsed
    me = self_report(ctx)
    if qe_report[64:96] != me[64:96] or qe_report[128:160] != me[128:160]:
        return SGX_QL_ATT_KEY_CERT_DATA_INVALID
    key = attestation_key(ctx, call, me)
    ident = qe_id(ctx, call)
    if key is None or ident is None:
        return SGX_QL_ERROR_UNEXPECTED
    pub = public_raw(key)
    if qe_report[320:352] != hashlib.sha256(pub + auth).digest():
        return SGX_QL_ATT_KEY_CERT_DATA_INVALID
    header = (
        version.to_bytes(2, "little")
        + ATT_KEY_TYPE_ECDSA_P256.to_bytes(2, "little")
        + bytes(4)  # v3: att_key_data_0 (reserved); v4: tee_type 0 (SGX)
        + me[258:260]  # QE SVN
        + pce_svn.to_bytes(2, "little")
        + QE_VENDOR_ID
        + ident
        + bytes(4)
    )
    signed = header + app[:384]
    sig_data = sign_raw(key, signed) + pub
    if version == 3:
        sig_data += cert
    else:
        sig_data += CERT_QE_REPORT.to_bytes(2, "little") + len(cert).to_bytes(4, "little") + cert
    quote = signed + len(sig_data).to_bytes(4, "little") + sig_data
    return SGX_QL_SUCCESS if copy_out(ctx, call, quote) else INVALID_PARAMETER


def enclave_entry(ctx):
    enclave_main(ctx, {0: do_self_report, 1: gen_att_key, 2: get_quote})
"""


#: The QE program.
QE_SOURCE = KDF_SOURCE + COMMON_SOURCE + _QE_BODY


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
