"""Enclave code: the Provisioning Certification Enclave's functions and entry point.

Linked after :mod:`.runtime`, :mod:`.kdf` and :mod:`.ae_common` (see
:mod:`sgxsim.sdk.quoting.pce` for what the PCE does).
"""

from cryptography.hazmat.primitives.asymmetric import ec

if __name__ != "enclave":  # on the host (mypy, tests); in an enclave, earlier parts define these
    from sgxsim.hw.enclu import EnclaveContext
    from sgxsim.sdk.enclaves.ae_common import (
        F_IN1,
        F_IN2,
        F_LEAF_RAX,
        FLAGS_MODE64BIT,
        FLAGS_PROVISIONKEY,
        KEYNAME_PROVISION,
        LEAF_INVALID_CPUSVN,
        LEAF_INVALID_ISVSVN,
        LEAF_SUCCESS,
        U64,
        copy_in,
        copy_out,
        do_self_report,
        egetkey,
        enclave_main,
        field_set,
        keyrequest,
        report_flags,
        self_report,
        sign_raw,
        u16,
        verify_report,
    )
    from sgxsim.sdk.enclaves.kdf import kdf_p256_scalar, kdf_ppid

INVALID_PARAMETER = 0xF002
SGX_PCE_SUCCESS = 0
SGX_PCE_UNEXPECTED = 0xF001
SGX_PCE_INVALID_REPORT = 0xF005
SGX_PCE_INVALID_PRIVILEGE = 0xF007
SGX_PCE_INVALID_TCB = 0xF008
PCE_ID = 0
PAK_LABEL = b"PAK_KEY_DER"
PROVISION_ATTRIBUTEMASK = U64 & ~FLAGS_MODE64BIT


def provision_key(ctx: "EnclaveContext", call: int, cpusvn: bytes, isvsvn: int) -> tuple[int, bytes]:
    # pce_cert.cpp get_provision_key: PROVISION key at the given PSVN.
    status, key = egetkey(
        ctx,
        keyrequest(
            KEYNAME_PROVISION,
            isvsvn=isvsvn,
            cpusvn=cpusvn,
            attributemask=PROVISION_ATTRIBUTEMASK,
            xfrmmask=0,
            miscmask=0xFFFFFFFF,
        ),
    )
    field_set(ctx, call, F_LEAF_RAX, status)
    return status, key


def check_requester(ctx: "EnclaveContext", report: bytes) -> int:
    # Only enclaves holding PROVISIONKEY (PvE, QE3) may use the PCE.
    if not verify_report(ctx, report):
        return SGX_PCE_INVALID_REPORT
    if not report_flags(report) & FLAGS_PROVISIONKEY:
        return SGX_PCE_INVALID_PRIVILEGE
    return SGX_PCE_SUCCESS


def get_pc_info(ctx: "EnclaveContext", call: int) -> int:
    report = copy_in(ctx, call, F_IN1, exact=432)
    if report is None:
        return INVALID_PARAMETER
    bad = check_requester(ctx, report)
    if bad:
        return bad
    status, key = provision_key(ctx, call, bytes(16), 0)
    if status != LEAF_SUCCESS:
        return SGX_PCE_UNEXPECTED
    me = self_report(ctx)
    info = kdf_ppid(key) + me[258:260] + PCE_ID.to_bytes(2, "little")
    return SGX_PCE_SUCCESS if copy_out(ctx, call, info) else INVALID_PARAMETER


def certify_enclave(ctx: "EnclaveContext", call: int) -> int:
    psvn = copy_in(ctx, call, F_IN1, exact=18)
    report = copy_in(ctx, call, F_IN2, exact=432)
    if psvn is None or report is None:
        return INVALID_PARAMETER
    bad = check_requester(ctx, report)
    if bad:
        return bad
    status, key = provision_key(ctx, call, psvn[:16], u16(psvn, 16))
    if status in (LEAF_INVALID_CPUSVN, LEAF_INVALID_ISVSVN):
        return SGX_PCE_INVALID_TCB
    if status != LEAF_SUCCESS:
        return SGX_PCE_UNEXPECTED
    pck = ec.derive_private_key(kdf_p256_scalar(key, PAK_LABEL), ec.SECP256R1())
    signature = sign_raw(pck, report[:384])
    return SGX_PCE_SUCCESS if copy_out(ctx, call, signature) else INVALID_PARAMETER


def enclave_entry(ctx: "EnclaveContext") -> None:
    enclave_main(ctx, {0: do_self_report, 1: get_pc_info, 2: certify_enclave})
