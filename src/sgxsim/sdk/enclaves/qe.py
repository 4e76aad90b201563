"""Enclave code: the Quoting Enclave's functions and entry point.

Linked after :mod:`.runtime`, :mod:`.kdf` and :mod:`.ae_common` (see
:mod:`sgxsim.sdk.quoting.qe` for what the QE does).
"""

import hashlib

from cryptography.hazmat.primitives.asymmetric import ec

if __name__ != "enclave":  # on the host (mypy, tests); in an enclave, earlier parts define these
    from sgxsim.hw.enclu import EnclaveContext
    from sgxsim.sdk.enclaves.ae_common import (
        F_ARG0,
        F_ARG1,
        F_IN1,
        F_IN2,
        F_LEAF_RAX,
        KEYNAME_SEAL,
        KEYPOLICY_MRENCLAVE,
        KEYPOLICY_MRSIGNER,
        LEAF_SUCCESS,
        SEAL_FLAGSMASK,
        SEAL_MISCMASK,
        copy_in,
        copy_out,
        do_self_report,
        egetkey,
        enclave_main,
        ereport,
        field_get,
        field_set,
        keyrequest,
        public_raw,
        self_report,
        sign_raw,
        u16,
        verify_report,
    )
    from sgxsim.sdk.enclaves.kdf import kdf_cmac, kdf_p256_scalar

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


def attestation_key(ctx: "EnclaveContext", call: int, me: bytes) -> ec.EllipticCurvePrivateKey | None:
    status, seed = egetkey(
        ctx,
        keyrequest(
            KEYNAME_SEAL,
            KEYPOLICY_MRENCLAVE,
            isvsvn=u16(me, 258),
            cpusvn=me[:16],
            attributemask=SEAL_FLAGSMASK,
            miscmask=SEAL_MISCMASK,
        ),
    )
    field_set(ctx, call, F_LEAF_RAX, status)
    if status != LEAF_SUCCESS:
        return None
    return ec.derive_private_key(kdf_p256_scalar(seed, QE_ATT_LABEL), ec.SECP256R1())


def qe_id(ctx: "EnclaveContext", call: int) -> bytes | None:
    status, key = egetkey(
        ctx,
        keyrequest(
            KEYNAME_SEAL,
            KEYPOLICY_MRSIGNER,
            attributemask=SEAL_FLAGSMASK,
            miscmask=SEAL_MISCMASK,
        ),
    )
    field_set(ctx, call, F_LEAF_RAX, status)
    if status != LEAF_SUCCESS:
        return None
    return kdf_cmac(key, b"QE_ID".ljust(16, b"\0"))


def gen_att_key(ctx: "EnclaveContext", call: int) -> int:
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


def parse_certification(data: bytes) -> tuple[bytes, bytes] | None:
    # qe_report (384) || qe_report_sig (64) || u16 auth size || auth || u16 type 5 || u32 size || chain
    if len(data) < 384 + 64 + 2:
        return None
    auth_size = u16(data, 448)
    pos = 450 + auth_size
    if len(data) < pos + 6 or u16(data, pos) != CERT_PCK_CHAIN:
        return None
    if int.from_bytes(data[pos + 2 : pos + 6], "little") != len(data) - pos - 6:
        return None
    return data[:384], data[450:pos]


def get_quote(ctx: "EnclaveContext", call: int) -> int:
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


def enclave_entry(ctx: "EnclaveContext") -> None:
    enclave_main(ctx, {0: do_self_report, 1: gen_att_key, 2: get_quote})
