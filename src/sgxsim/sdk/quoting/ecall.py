"""The call interface every quoting/application enclave shares: statuses, errors, the call block.

Calling convention (every enclave): RDI points to an :class:`ae_call` block in untrusted memory
(the role of the SDK's ECALL marshalling structure): function number, status (out), up to three
input buffers (pointer, size) and one output buffer (pointer, capacity, length written), two
scalar arguments and the RAX of the last key leaf. The enclave checks that every buffer lies
outside ELRANGE (``sgx_is_outside_enclave``), copies inputs in, works on its own memory (leaf
operands are placed in its stack page) and copies results out, then EEXITs to the address RCX
held at EENTER. Function 0 of every enclave is a self-REPORT (``sgx_create_report(NULL, ...)``),
which hosts turn into a TARGETINFO. :data:`COMMON_SOURCE` is the in-enclave side of it.

Statuses are the Intel names and numbers: ``sgx_pce_error_t`` for the PCE, ``quote3_error_t``
for the QE, ``sgx_status_t`` for the application enclave; host wrappers raise
:class:`AeCallError` carrying them, and :class:`EnclaveLost` when the enclave cannot be entered
or did not return through EEXIT (e.g. after its EPC pages were lost).

Models: ``sgx_error.h``, ``sgx_pce.h``, ``sgx_ql_lib_common.h``; the SDK's ECALL marshalling.
"""

from __future__ import annotations

import ctypes
import enum

from sgxsim.errors import InvalidArgument, SgxSimError
from sgxsim.sdk.enclaves import enclave_source

__all__ = [
    "COMMON_SOURCE",
    "MAX_INPUT",
    "U64_MAX",
    "AeCallError",
    "AeFunction",
    "EnclaveLost",
    "PceError",
    "Quote3Error",
    "SgxError",
    "ae_call",
    "check_svn",
    "need_bytes",
]

U64_MAX = (1 << 64) - 1
#: Largest input buffer an enclave copies in (the EDL's size bound).
MAX_INPUT = 1 << 20


class SgxError(enum.IntEnum):
    """``sgx_status_t`` values the application enclave and the host wrappers use (sgx_error.h)."""

    SGX_SUCCESS = 0x0000
    SGX_ERROR_UNEXPECTED = 0x0001
    SGX_ERROR_INVALID_PARAMETER = 0x0002
    SGX_ERROR_OUT_OF_MEMORY = 0x0003
    SGX_ERROR_ENCLAVE_LOST = 0x0004
    SGX_ERROR_INVALID_FUNCTION = 0x1001
    SGX_ERROR_MAC_MISMATCH = 0x3001
    SGX_ERROR_INVALID_ATTRIBUTE = 0x3002
    SGX_ERROR_INVALID_CPUSVN = 0x3003
    SGX_ERROR_INVALID_ISVSVN = 0x3004
    SGX_ERROR_INVALID_KEYNAME = 0x3005


class PceError(enum.IntEnum):
    """``sgx_pce_error_t`` (sgx_pce.h: ``SGX_PCE_MK_ERROR(x) = 0xF000 | x``)."""

    SGX_PCE_SUCCESS = 0x0000
    SGX_PCE_UNEXPECTED = 0xF001
    SGX_PCE_INVALID_PARAMETER = 0xF002
    SGX_PCE_OUT_OF_EPC = 0xF003
    SGX_PCE_INTERFACE_UNAVAILABLE = 0xF004
    SGX_PCE_INVALID_REPORT = 0xF005
    SGX_PCE_CRYPTO_ERROR = 0xF006
    SGX_PCE_INVALID_PRIVILEGE = 0xF007
    SGX_PCE_INVALID_TCB = 0xF008


class Quote3Error(enum.IntEnum):
    """``quote3_error_t`` values the QE uses (sgx_ql_lib_common.h: ``SGX_QL_MK_ERROR(x) = 0xE000 | x``)."""

    SGX_QL_SUCCESS = 0x0000
    SGX_QL_ERROR_UNEXPECTED = 0xE001
    SGX_QL_ERROR_INVALID_PARAMETER = 0xE002
    SGX_QL_ATT_KEY_NOT_INITIALIZED = 0xE00F
    SGX_QL_ATT_KEY_CERT_DATA_INVALID = 0xE010
    SGX_QL_NO_PLATFORM_CERT_DATA = 0xE011
    SGX_QL_ERROR_REPORT = 0xE013
    SGX_QL_ENCLAVE_LOST = 0xE014
    SGX_QL_INVALID_REPORT = 0xE015


class AeFunction(enum.IntEnum):
    """Function numbers of the three enclaves (their ECALL tables)."""

    SELF_REPORT = 0
    PCE_GET_PC_INFO = 1
    PCE_CERTIFY_ENCLAVE = 2
    QE_GEN_ATT_KEY = 1
    QE_GET_QUOTE = 2
    APP_REPORT = 1
    APP_SEAL = 2
    APP_UNSEAL = 3


def _status_name(status: int) -> str:
    for enum_type in (SgxError, PceError, Quote3Error):
        try:
            return enum_type(status).name
        except ValueError:
            continue
    return f"{status:#x}"


class AeCallError(SgxSimError):
    """An enclave function returned a non-success status (``status``; ``leaf_rax``: last EGETKEY RAX)."""

    def __init__(self, function: str, status: int, leaf_rax: int = 0, detail: str = "") -> None:
        self.function = function
        self.status = status
        self.leaf_rax = leaf_rax
        self.detail = detail
        extra = f" (EGETKEY RAX {leaf_rax})" if leaf_rax else ""
        text = f"{function}: {_status_name(status)}{extra}"
        super().__init__(f"{text}: {detail}" if detail else text)


class EnclaveLost(AeCallError):
    """The enclave could not be entered or did not EEXIT (EPC lost, unmapped, process gone).

    ``vector``/``error_code``/``addr`` are the exception the vDSO reported (0 when the process
    had exited). Models: the SDK's ``SGX_ERROR_ENCLAVE_LOST`` after a power transition.
    """

    def __init__(
        self, function: str, detail: str, vector: int = 0, error_code: int = 0, addr: int = 0
    ) -> None:
        self.vector = vector
        self.error_code = error_code
        self.addr = addr
        super().__init__(function, SgxError.SGX_ERROR_ENCLAVE_LOST, 0, detail)


_u64 = ctypes.c_uint64


class ae_call(ctypes.Structure):  # noqa: N801 - a C structure's name
    """The block RDI points to at EENTER (all fields u64, little-endian, packed)."""

    _pack_ = 1
    _fields_ = [
        ("function", _u64),
        ("status", _u64),
        ("in1", _u64),
        ("in1_size", _u64),
        ("in2", _u64),
        ("in2_size", _u64),
        ("in3", _u64),
        ("in3_size", _u64),
        ("arg0", _u64),
        ("arg1", _u64),
        ("out", _u64),
        ("out_size", _u64),
        ("out_len", _u64),
        ("leaf_rax", _u64),
    ]


#: Helpers every architectural/application enclave program shares (after the sdk runtime): the
#: bytes of :mod:`sgxsim.sdk.enclaves.ae_common`.
COMMON_SOURCE = enclave_source("ae_common")


def check_svn(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFFFF:
        raise InvalidArgument(f"{name} must be a u16, got {value!r:.60}")
    return value


def need_bytes(name: str, value: object, size: int | None = None) -> bytes:
    if not isinstance(value, bytes | bytearray):
        raise InvalidArgument(f"{name} must be bytes, got {type(value).__name__}")
    if size is not None and len(value) != size:
        raise InvalidArgument(f"{name} must be {size} bytes, got {len(value)}")
    return bytes(value)
