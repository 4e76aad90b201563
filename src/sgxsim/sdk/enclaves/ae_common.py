"""Enclave code: the call interface every quoting/application enclave shares.

Linked after :mod:`.runtime` and :mod:`.kdf`, before the enclave's own module, which defines
``INVALID_PARAMETER`` (its status for a bad parameter) and ``enclave_entry``. The call block
layout is :class:`sgxsim.sdk.quoting.ecall.ae_call`.
"""

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.constant_time import bytes_eq

if __name__ != "enclave":  # on the host (mypy, tests); in an enclave, earlier parts define these
    from collections.abc import Callable, Mapping

    from sgxsim.hw.enclu import EnclaveContext
    from sgxsim.sdk.enclaves._link import INVALID_PARAMETER
    from sgxsim.sdk.enclaves.kdf import kdf_cmac
    from sgxsim.sdk.enclaves.runtime import Scratch, rt_egetkey, rt_ereport, rt_stack_top

U64 = (1 << 64) - 1
KEYNAME_PROVISION = 1
KEYNAME_REPORT = 3
KEYNAME_SEAL = 4
KEYPOLICY_MRENCLAVE = 1
KEYPOLICY_MRSIGNER = 2
FLAGS_PROVISIONKEY = 0x10
FLAGS_MODE64BIT = 0x4
LEAF_SUCCESS = 0
LEAF_INVALID_ATTRIBUTE = 2
LEAF_INVALID_CPUSVN = 32
LEAF_INVALID_ISVSVN = 64
LEAF_INVALID_KEYNAME = 256
SGX_ERROR_INVALID_FUNCTION = 0x1001
# sgx_tseal defaults: TSEAL_DEFAULT_FLAGSMASK, no XFRM, TSEAL_DEFAULT_MISCMASK.
SEAL_FLAGSMASK = 0xFF0000000000000B
SEAL_MISCMASK = 0xF0000000
MAX_INPUT = 1 << 20

# struct ae_call: u64 fields.
F_FUNCTION = 0
F_STATUS = 1
F_IN1 = 2
F_IN2 = 4
F_IN3 = 6
F_ARG0 = 8
F_ARG1 = 9
F_OUT = 10
F_OUT_SIZE = 11
F_OUT_LEN = 12
F_LEAF_RAX = 13
CALL_SIZE = 14 * 8


def field_get(ctx: "EnclaveContext", call: int, index: int) -> int:
    return ctx.read_u64(call + 8 * index)


def field_set(ctx: "EnclaveContext", call: int, index: int, value: int) -> None:
    ctx.write_u64(call + 8 * index, value & U64)


def outside_enclave(ctx: "EnclaveContext", addr: int, size: int) -> bool:
    # sgx_is_outside_enclave: [addr, addr + size) is non-null, does not wrap, misses ELRANGE.
    if addr == 0 or size > U64 - addr:
        return False
    return addr + size <= ctx.base or addr >= ctx.base + ctx.size


def copy_in(
    ctx: "EnclaveContext", call: int, index: int, exact: int | None = None, limit: int = MAX_INPUT
) -> bytes | None:
    """Input buffer ``index`` copied into the enclave, or None when it is not acceptable."""
    addr = field_get(ctx, call, index)
    size = field_get(ctx, call, index + 1)
    if exact is not None and size != exact:
        return None
    if size > limit:
        return None
    if size == 0:
        return b""
    if not outside_enclave(ctx, addr, size):
        return None
    return ctx.read(addr, size)


def copy_out(ctx: "EnclaveContext", call: int, data: bytes) -> bool:
    """Write ``data`` to the output buffer; False (and the needed size in out_len) if it does not fit."""
    addr = field_get(ctx, call, F_OUT)
    cap = field_get(ctx, call, F_OUT_SIZE)
    field_set(ctx, call, F_OUT_LEN, len(data))
    if len(data) > cap or not outside_enclave(ctx, addr, max(cap, 1)):
        return False
    ctx.write(addr, data)
    return True


def u16(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 2], "little")


def ereport(ctx: "EnclaveContext", targetinfo: bytes, reportdata: bytes) -> bytes:
    # Leaf operands live in the thread's stack page (a fresh scratch area for every leaf).
    return rt_ereport(ctx, Scratch(ctx, rt_stack_top(ctx)), targetinfo, reportdata)


def egetkey(ctx: "EnclaveContext", keyrequest: bytes) -> tuple[int, bytes]:
    return rt_egetkey(ctx, Scratch(ctx, rt_stack_top(ctx)), keyrequest)


def keyrequest(
    keyname: int,
    keypolicy: int = 0,
    isvsvn: int = 0,
    cpusvn: bytes = bytes(16),
    attributemask: int = 0,
    xfrmmask: int = 0,
    keyid: bytes = bytes(32),
    miscmask: int = 0,
) -> bytes:
    return (
        keyname.to_bytes(2, "little")
        + keypolicy.to_bytes(2, "little")
        + isvsvn.to_bytes(2, "little")
        + bytes(2)
        + cpusvn
        + attributemask.to_bytes(8, "little")
        + xfrmmask.to_bytes(8, "little")
        + keyid
        + miscmask.to_bytes(4, "little")
        + bytes(2)
        + bytes(434)
    )


def self_report(ctx: "EnclaveContext") -> bytes:
    return ereport(ctx, bytes(512), bytes(64))


def verify_report(ctx: "EnclaveContext", report: bytes) -> bool:
    # sgx_verify_report: this enclave's REPORT key for the REPORT's KEYID, CMAC of the body.
    status, key = egetkey(ctx, keyrequest(KEYNAME_REPORT, keyid=report[384:416]))
    if status != LEAF_SUCCESS:
        return False
    return bytes_eq(kdf_cmac(key, report[:384]), report[416:432])


def report_flags(report: bytes) -> int:
    return int.from_bytes(report[48:56], "little")


def sign_raw(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True)))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def public_raw(key: ec.EllipticCurvePrivateKey) -> bytes:
    numbers = key.public_key().public_numbers()
    return numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")


def do_self_report(ctx: "EnclaveContext", call: int) -> int:
    return 0 if copy_out(ctx, call, self_report(ctx)) else INVALID_PARAMETER


def enclave_main(
    ctx: "EnclaveContext", functions: "Mapping[int, Callable[[EnclaveContext, int], int]]"
) -> None:
    back = ctx.rcx
    call = ctx.rdi
    if outside_enclave(ctx, call, CALL_SIZE):
        function = functions.get(field_get(ctx, call, F_FUNCTION))
        status = SGX_ERROR_INVALID_FUNCTION if function is None else function(ctx, call)
        field_set(ctx, call, F_STATUS, status)
    ctx.eexit(back)
