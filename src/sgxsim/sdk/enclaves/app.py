"""Enclave code: the attestable application enclave's functions and entry point.

Linked after :mod:`.runtime`, :mod:`.kdf` and :mod:`.ae_common` (see
:mod:`sgxsim.sdk.quoting.app` for what it does).
"""

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

if __name__ != "enclave":  # on the host (mypy, tests); in an enclave, earlier parts define these
    from sgxsim.hw.enclu import EnclaveContext
    from sgxsim.sdk.enclaves.ae_common import (
        F_ARG0,
        F_IN1,
        F_IN2,
        F_IN3,
        F_LEAF_RAX,
        KEYNAME_SEAL,
        KEYPOLICY_MRSIGNER,
        LEAF_INVALID_ATTRIBUTE,
        LEAF_INVALID_CPUSVN,
        LEAF_INVALID_ISVSVN,
        LEAF_INVALID_KEYNAME,
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
        self_report,
        u16,
    )

INVALID_PARAMETER = 0x0002
SGX_SUCCESS = 0
SGX_ERROR_UNEXPECTED = 0x0001
SGX_ERROR_MAC_MISMATCH = 0x3001
LEAF_TO_SGX_ERROR = {
    LEAF_INVALID_ATTRIBUTE: 0x3002,
    LEAF_INVALID_CPUSVN: 0x3003,
    LEAF_INVALID_ISVSVN: 0x3004,
    LEAF_INVALID_KEYNAME: 0x3005,
}
SEAL_EXPLICIT_PSVN = 0x1


def leaf_error(status: int) -> int:
    return LEAF_TO_SGX_ERROR.get(status, SGX_ERROR_UNEXPECTED)


def do_report(ctx: "EnclaveContext", call: int) -> int:
    targetinfo = copy_in(ctx, call, F_IN1, exact=512)
    reportdata = copy_in(ctx, call, F_IN2, limit=64)
    if targetinfo is None or reportdata is None:
        return INVALID_PARAMETER
    report = ereport(ctx, targetinfo, reportdata.ljust(64, b"\0"))
    return SGX_SUCCESS if copy_out(ctx, call, report) else INVALID_PARAMETER


def seal_key(ctx: "EnclaveContext", call: int, request: bytes) -> tuple[int, bytes]:
    status, key = egetkey(ctx, request)
    field_set(ctx, call, F_LEAF_RAX, status)
    return status, key


def do_seal(ctx: "EnclaveContext", call: int) -> int:
    # sgx_seal_data: MRSIGNER policy at the enclave's own CPUSVN/ISVSVN (or an explicit PSVN).
    text = copy_in(ctx, call, F_IN1)
    keyid = copy_in(ctx, call, F_IN2, exact=32)
    if text is None or keyid is None:
        return INVALID_PARAMETER
    if field_get(ctx, call, F_ARG0) & SEAL_EXPLICIT_PSVN:
        psvn = copy_in(ctx, call, F_IN3, exact=18)
        if psvn is None:
            return INVALID_PARAMETER
        cpusvn, isvsvn = psvn[:16], u16(psvn, 16)
    else:
        me = self_report(ctx)
        cpusvn, isvsvn = me[:16], u16(me, 258)
    request = keyrequest(
        KEYNAME_SEAL,
        KEYPOLICY_MRSIGNER,
        isvsvn=isvsvn,
        cpusvn=cpusvn,
        attributemask=SEAL_FLAGSMASK,
        keyid=keyid,
        miscmask=SEAL_MISCMASK,
    )
    status, key = seal_key(ctx, call, request)
    if status != LEAF_SUCCESS:
        return leaf_error(status)
    sealed = AESGCM(key).encrypt(bytes(12), text, None)
    size = len(text).to_bytes(4, "little")
    blob = request + size + bytes(12) + size + bytes(12) + sealed[-16:] + sealed[:-16]
    return SGX_SUCCESS if copy_out(ctx, call, blob) else INVALID_PARAMETER


def do_unseal(ctx: "EnclaveContext", call: int) -> int:
    blob = copy_in(ctx, call, F_IN1)
    if blob is None or len(blob) < 560:
        return INVALID_PARAMETER
    request = blob[:512]
    payload = blob[560:]
    if int.from_bytes(blob[528:532], "little") != len(payload):
        return INVALID_PARAMETER
    # sgx_unseal_data refuses key requests it did not write (EGETKEY would #GP on some).
    if (
        u16(request, 0) != KEYNAME_SEAL
        or u16(request, 2) & ~3
        or any(request[6:8])
        or any(request[76:78])
        or any(request[78:])
    ):
        return INVALID_PARAMETER
    status, key = seal_key(ctx, call, request)
    if status != LEAF_SUCCESS:
        return leaf_error(status)
    try:
        text = AESGCM(key).decrypt(bytes(12), payload + blob[544:560], None)
    except InvalidTag:
        return SGX_ERROR_MAC_MISMATCH
    return SGX_SUCCESS if copy_out(ctx, call, text) else INVALID_PARAMETER


def enclave_entry(ctx: "EnclaveContext") -> None:
    enclave_main(ctx, {0: do_self_report, 1: do_report, 2: do_seal, 3: do_unseal})
