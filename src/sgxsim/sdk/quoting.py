"""The platform's quoting enclaves (PCE and QE), an attestable application enclave, and their host calls.

Three enclaves of the simulation, each Python source run by the enclave engine
(:mod:`sgxsim.hw.enclu`), built with :func:`sgxsim.sdk.image.standard_image`, signed with
:func:`sgxsim.sdk.sign.sign_enclave` and loaded through the driver (:func:`sgxsim.sdk.loader.load_enclave`):

* the **Provisioning Certification Enclave** (PCE): holds no state; on request it derives the PCK
  private key of a TCB (CPUSVN, PCESVN) from the PROVISION key (EGETKEY KEYNAME=PROVISION at that
  CPUSVN and ISVSVN, older-or-equal to the platform's, which EGETKEY allows) and signs the
  report body of a PROVISIONKEY enclave (the QE) after checking that REPORT's MAC with its own
  REPORT key; it also returns the PPID. Needs the PROVISIONKEY attribute, so its loader calls
  ``SGX_IOC_ENCLAVE_PROVISION`` (EINIT is refused with EACCES otherwise);
* the **Quoting Enclave** (QE, Intel's "QE3"): derives an ECDSA P-256 attestation key from its
  SEAL key at the current CPUSVN, reports it to the PCE (REPORTDATA = SHA-256(attestation key ||
  QE authentication data) || 0^32), and turns an application enclave's REPORT (targeted at the
  QE, MAC checked with the QE's REPORT key) into a DCAP quote v3 or v4, signed inside the enclave;
* an **application enclave**: EREPORT for a given TARGETINFO and REPORTDATA, and sealing /
  unsealing with the SEAL key in the SDK's ``sgx_sealed_data_t`` layout (the KEYREQUEST travels
  with the blob, so data sealed at an older CPUSVN stays readable after an update, and a blob
  naming a CPUSVN above the running one is refused with SGX_INVALID_CPUSVN).

Calling convention (every enclave): RDI points to a :class:`ae_call` block in untrusted memory
(the role of the SDK's ECALL marshalling structure): function number, status (out), up to three
input buffers (pointer, size) and one output buffer (pointer, capacity, length written), two
scalar arguments and the RAX of the last key leaf. The enclave checks that every buffer lies
outside ELRANGE (``sgx_is_outside_enclave``), copies inputs in, works on its own memory (leaf
operands are placed in its stack page) and copies results out, then EEXITs to the address RCX
held at EENTER. Function 0 of every enclave is a self-REPORT (``sgx_create_report(NULL, ...)``),
which hosts turn into a TARGETINFO.

Statuses are the Intel names and numbers: ``sgx_pce_error_t`` for the PCE, ``quote3_error_t``
for the QE, ``sgx_status_t`` for the application enclave; host wrappers raise
:class:`AeCallError` carrying them, and :class:`EnclaveLost` when the enclave cannot be entered
or did not return through EEXIT (e.g. after its EPC pages were lost).

[MODEL] In-enclave programs import only ``hashlib`` and ``cryptography`` (statically linked
crypto). Keys:

* PCK private key: Intel's PCE construction (``get_pce_priv_key``): three AES-CMAC blocks under
  the PROVISION key over ``ctr || "PAK_KEY_DER" || 0 0 || 0x01 0x40``, the first 320 bits as a
  big-endian integer d, scalar = d mod (n-1) + 1. PPID = AES-CMAC(PROVISION key at CPUSVN 0,
  ISVSVN 0, 16 zero bytes). The 16-byte keys themselves are :func:`sgxsim.hw.crypto.derive_key`'s.
* QE attestation key: the same construction with label ``"QE3_ATT_KEY"`` under the QE's SEAL key
  (policy MRENCLAVE, current CPUSVN and ISVSVN). QE_ID (quote header user_data[0:16]) =
  AES-CMAC(SEAL key, policy MRSIGNER, CPUSVN 0, ISVSVN 0; ``"QE_ID"`` padded to 16 bytes).

Models: intel/SGXDataCenterAttestationPrimitives QuoteGeneration (PCE ``certify_enclave``,
``get_pc_info``, ``pce_cert.cpp``; QE3 ``gen_att_key``/``get_quote``; ``sgx_quote_3.h``,
``sgx_quote_4.h``, ``sgx_ql_lib_common.h``, ``sgx_pce.h``), intel/linux-sgx ``sgx_tseal``
(``sgx_sealed_data_t``, ``sgx_seal_data``/``sgx_unseal_data``), ``sgx_error.h``.
Differs: the PCE returns the PPID in clear (no RSA-3072-OAEP encryption to Intel's PPID key; the
PCS model takes the PPID in clear too) and does not check the requester's REPORTDATA binding of
that key; the QE takes its certification data (QE report, PCE signature, PCK chain) from the
host on every quote instead of keeping it in a sealed blob, and checks that it certifies its
current attestation key; sealing takes its KEYID from the host (the SDK draws it with RDRAND
inside the enclave).
"""

from __future__ import annotations

import ctypes
import enum
import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sgxsim.errors import InvalidArgument, SgxSimError
from sgxsim.hw.arch import (
    CPUSVN_SIZE,
    Attributes,
    Report,
    Sigstruct,
    Targetinfo,
)
from sgxsim.hw.crypto import aes_cmac, mrsigner
from sgxsim.kernel import uapi
from sgxsim.kernel.process import Process
from sgxsim.sdk.image import EnclaveImage, standard_image
from sgxsim.sdk.loader import Enclave, load_enclave
from sgxsim.sdk.sign import bcd_date, sign_enclave

__all__ = [
    "APP_SOURCE",
    "DEFAULT_QE_AUTH_DATA",
    "INTEL_AE_VENDOR",
    "KDF_SOURCE",
    "PAK_LABEL",
    "PCE_ISVPRODID",
    "PCE_ISVSVN",
    "PCE_PROVISION_KEY_ATTRIBUTEMASK",
    "PCE_PROVISION_KEY_MISCMASK",
    "PCE_PROVISION_KEY_XFRMMASK",
    "PCE_SOURCE",
    "PSVN_SIZE",
    "QE_ATT_LABEL",
    "QE_ISVPRODID",
    "QE_ISVSVN",
    "QE_SOURCE",
    "SEALED_DATA_HEADER_SIZE",
    "AeCallError",
    "AeFunction",
    "AppEnclave",
    "Attestable",
    "EnclaveBuild",
    "EnclaveLost",
    "PceError",
    "PceInfo",
    "ProvisioningCertificationEnclave",
    "QeInit",
    "Quote3Error",
    "QuotingEnclave",
    "SgxError",
    "ae_call",
    "build_app",
    "build_pce",
    "build_qe",
    "certification_data",
    "load_app",
    "load_pce",
    "load_qe",
    "p256_scalar_from_key",
    "pck_private_key",
    "ppid_from_provision_key",
    "target_info_of",
]

_U64 = (1 << 64) - 1
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

#: SIGSTRUCT.VENDOR of Intel's architectural enclaves.
INTEL_AE_VENDOR = 0x8086
#: Intel's PCE: ISVPRODID 1 (psw/ae/pce/config.xml); ISVSVN [ASSUMED] 13, a 2024-era PCESVN.
PCE_ISVPRODID = 1
PCE_ISVSVN = 13
#: Intel's QE3: ISVPRODID 1 (QE Identity ``isvprodid``); ISVSVN [ASSUMED] 8.
QE_ISVPRODID = 1
QE_ISVSVN = 8
#: The PCE's PROVISION key request (pce_cert.cpp ``get_provision_key``): every ATTRIBUTES flag but
#: MODE64BIT, no XFRM bit, every MISCSELECT bit.
PCE_PROVISION_KEY_ATTRIBUTEMASK = _U64 & ~int(Attributes.MODE64BIT)
PCE_PROVISION_KEY_XFRMMASK = 0
PCE_PROVISION_KEY_MISCMASK = 0xFFFFFFFF
#: Labels of the CMAC-based P-256 key derivation (11 bytes each).
PAK_LABEL = b"PAK_KEY_DER"
QE_ATT_LABEL = b"QE3_ATT_KEY"
#: The QE3's default authentication data: bytes 0..31.
DEFAULT_QE_AUTH_DATA = bytes(range(32))
#: ``psvn_t``: CPUSVN (16) then ISVSVN (u16).
PSVN_SIZE = CPUSVN_SIZE + 2
#: ``sizeof(sgx_sealed_data_t)``: KEYREQUEST 512, plain_text_offset 4, reserved 12, then
#: ``sgx_aes_gcm_data_t`` payload_size 4, reserved 12, payload_tag 16.
SEALED_DATA_HEADER_SIZE = 560
#: Largest input buffer an enclave copies in (the EDL's size bound).
MAX_INPUT = 1 << 20


# ============================================================================================
# Status codes
# ============================================================================================


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


# ============================================================================================
# The call block
# ============================================================================================

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


# ============================================================================================
# In-enclave sources
# ============================================================================================

#: The CMAC-based derivations shared by the PCE and the QE (and mirrored on the host by
#: :func:`p256_scalar_from_key` / :func:`ppid_from_provision_key`, which the tests compare).
KDF_SOURCE = """
KDF_P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def kdf_cmac(key, data):
    c = CMAC(algorithms.AES(key))
    c.update(data)
    return c.finalize()


def kdf_p256_scalar(key, label):
    # pce_cert.cpp get_pce_priv_key: counter || label || 0x0140 (320 bits), three CMAC blocks.
    content = bytearray(16)
    content[1:12] = label
    content[14] = 0x01
    content[15] = 0x40
    seed = b""
    for counter in (1, 2, 3):
        content[0] = counter
        seed += kdf_cmac(key, bytes(content))
    return int.from_bytes(seed[:40], "big") % (KDF_P256_N - 1) + 1


def kdf_ppid(key):
    return kdf_cmac(key, bytes(16))
"""

#: Helpers every architectural/application enclave program shares (after the sdk runtime).
_COMMON_SOURCE = '''
import hashlib

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC
from cryptography.hazmat.primitives.constant_time import bytes_eq

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


def field_get(ctx, call, index):
    return ctx.read_u64(call + 8 * index)


def field_set(ctx, call, index, value):
    ctx.write_u64(call + 8 * index, value & U64)


def outside_enclave(ctx, addr, size):
    # sgx_is_outside_enclave: [addr, addr + size) is non-null, does not wrap, misses ELRANGE.
    if addr == 0 or size > U64 - addr:
        return False
    return addr + size <= ctx.base or addr >= ctx.base + ctx.size


def copy_in(ctx, call, index, exact=None, limit=MAX_INPUT):
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


def copy_out(ctx, call, data):
    """Write ``data`` to the output buffer; False (and the needed size in out_len) if it does not fit."""
    addr = field_get(ctx, call, F_OUT)
    cap = field_get(ctx, call, F_OUT_SIZE)
    field_set(ctx, call, F_OUT_LEN, len(data))
    if len(data) > cap or not outside_enclave(ctx, addr, max(cap, 1)):
        return False
    ctx.write(addr, data)
    return True


def u16(data, offset):
    return int.from_bytes(data[offset:offset + 2], "little")


def ereport(ctx, targetinfo, reportdata):
    # Leaf operands live in the thread's stack page (a fresh scratch area for every leaf).
    return rt_ereport(ctx, Scratch(ctx, rt_stack_top(ctx)), targetinfo, reportdata)


def egetkey(ctx, keyrequest):
    return rt_egetkey(ctx, Scratch(ctx, rt_stack_top(ctx)), keyrequest)


def keyrequest(keyname, keypolicy=0, isvsvn=0, cpusvn=bytes(16), attributemask=0, xfrmmask=0,
               keyid=bytes(32), miscmask=0):
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


def self_report(ctx):
    return ereport(ctx, bytes(512), bytes(64))


def verify_report(ctx, report):
    # sgx_verify_report: this enclave's REPORT key for the REPORT's KEYID, CMAC of the body.
    status, key = egetkey(ctx, keyrequest(KEYNAME_REPORT, keyid=report[384:416]))
    if status != LEAF_SUCCESS:
        return False
    return bytes_eq(kdf_cmac(key, report[:384]), report[416:432])


def report_flags(report):
    return int.from_bytes(report[48:56], "little")


def sign_raw(key, data):
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True)))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def public_raw(key):
    numbers = key.public_key().public_numbers()
    return numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")


def do_self_report(ctx, call):
    return 0 if copy_out(ctx, call, self_report(ctx)) else INVALID_PARAMETER


def enclave_main(ctx, functions):
    back = ctx.rcx
    call = ctx.rdi
    if outside_enclave(ctx, call, CALL_SIZE):
        function = functions.get(field_get(ctx, call, F_FUNCTION))
        status = SGX_ERROR_INVALID_FUNCTION if function is None else function(ctx, call)
        field_set(ctx, call, F_STATUS, status)
    ctx.eexit(back)
'''

_PCE_BODY = """
INVALID_PARAMETER = 0xF002
SGX_PCE_SUCCESS = 0
SGX_PCE_UNEXPECTED = 0xF001
SGX_PCE_INVALID_REPORT = 0xF005
SGX_PCE_INVALID_PRIVILEGE = 0xF007
SGX_PCE_INVALID_TCB = 0xF008
PCE_ID = 0
PAK_LABEL = b"PAK_KEY_DER"
PROVISION_ATTRIBUTEMASK = U64 & ~FLAGS_MODE64BIT


def provision_key(ctx, call, cpusvn, isvsvn):
    # pce_cert.cpp get_provision_key: PROVISION key at the given PSVN.
    status, key = egetkey(ctx, keyrequest(
        KEYNAME_PROVISION, isvsvn=isvsvn, cpusvn=cpusvn,
        attributemask=PROVISION_ATTRIBUTEMASK, xfrmmask=0, miscmask=0xFFFFFFFF,
    ))
    field_set(ctx, call, F_LEAF_RAX, status)
    return status, key


def check_requester(ctx, report):
    # Only enclaves holding PROVISIONKEY (PvE, QE3) may use the PCE.
    if not verify_report(ctx, report):
        return SGX_PCE_INVALID_REPORT
    if not report_flags(report) & FLAGS_PROVISIONKEY:
        return SGX_PCE_INVALID_PRIVILEGE
    return SGX_PCE_SUCCESS


def get_pc_info(ctx, call):
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


def certify_enclave(ctx, call):
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


def enclave_entry(ctx):
    enclave_main(ctx, {0: do_self_report, 1: get_pc_info, 2: certify_enclave})
"""

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

_APP_BODY = """
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

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


def leaf_error(status):
    return LEAF_TO_SGX_ERROR.get(status, SGX_ERROR_UNEXPECTED)


def do_report(ctx, call):
    targetinfo = copy_in(ctx, call, F_IN1, exact=512)
    reportdata = copy_in(ctx, call, F_IN2, limit=64)
    if targetinfo is None or reportdata is None:
        return INVALID_PARAMETER
    report = ereport(ctx, targetinfo, reportdata.ljust(64, b"\\0"))
    return SGX_SUCCESS if copy_out(ctx, call, report) else INVALID_PARAMETER


def seal_key(ctx, call, request):
    status, key = egetkey(ctx, request)
    field_set(ctx, call, F_LEAF_RAX, status)
    return status, key


def do_seal(ctx, call):
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
        KEYNAME_SEAL, KEYPOLICY_MRSIGNER, isvsvn=isvsvn, cpusvn=cpusvn,
        attributemask=SEAL_FLAGSMASK, keyid=keyid, miscmask=SEAL_MISCMASK,
    )
    status, key = seal_key(ctx, call, request)
    if status != LEAF_SUCCESS:
        return leaf_error(status)
    sealed = AESGCM(key).encrypt(bytes(12), text, None)
    size = len(text).to_bytes(4, "little")
    blob = request + size + bytes(12) + size + bytes(12) + sealed[-16:] + sealed[:-16]
    return SGX_SUCCESS if copy_out(ctx, call, blob) else INVALID_PARAMETER


def do_unseal(ctx, call):
    blob = copy_in(ctx, call, F_IN1)
    if blob is None or len(blob) < 560:
        return INVALID_PARAMETER
    request = blob[:512]
    payload = blob[560:]
    if int.from_bytes(blob[528:532], "little") != len(payload):
        return INVALID_PARAMETER
    # sgx_unseal_data refuses key requests it did not write (EGETKEY would #GP on some).
    if (u16(request, 0) != KEYNAME_SEAL or u16(request, 2) & ~3 or any(request[6:8])
            or any(request[76:78]) or any(request[78:])):
        return INVALID_PARAMETER
    status, key = seal_key(ctx, call, request)
    if status != LEAF_SUCCESS:
        return leaf_error(status)
    try:
        text = AESGCM(key).decrypt(bytes(12), payload + blob[544:560], None)
    except InvalidTag:
        return SGX_ERROR_MAC_MISMATCH
    return SGX_SUCCESS if copy_out(ctx, call, text) else INVALID_PARAMETER


def enclave_entry(ctx):
    enclave_main(ctx, {0: do_self_report, 1: do_report, 2: do_seal, 3: do_unseal})
"""

#: The PCE program (linked with the sdk runtime by :func:`standard_image`).
PCE_SOURCE = KDF_SOURCE + _COMMON_SOURCE + _PCE_BODY
#: The QE program.
QE_SOURCE = KDF_SOURCE + _COMMON_SOURCE + _QE_BODY
#: The application enclave program.
APP_SOURCE = KDF_SOURCE + _COMMON_SOURCE + _APP_BODY


# ============================================================================================
# Host-side mirrors of the key derivations
# ============================================================================================


def _key16(name: str, key: object) -> bytes:
    if not isinstance(key, bytes | bytearray) or len(key) != 16:
        raise InvalidArgument(f"{name} must be a 16-byte key, got {key!r:.60}")
    return bytes(key)


def p256_scalar_from_key(key: bytes, label: bytes) -> int:
    """The P-256 private scalar the PCE/QE derive from a 16-byte key and an 11-byte label.

    Models: pce_cert.cpp ``get_pce_priv_key`` (the same construction as :data:`KDF_SOURCE`).
    """
    k = _key16("key", key)
    if not isinstance(label, bytes) or len(label) != 11:
        raise InvalidArgument(f"label must be 11 bytes, got {label!r}")
    content = bytearray(16)
    content[1:12] = label
    content[14:16] = b"\x01\x40"
    seed = b""
    for counter in (1, 2, 3):
        content[0] = counter
        seed += aes_cmac(k, bytes(content))
    return int.from_bytes(seed[:40], "big") % (P256_ORDER - 1) + 1


def pck_private_key(provision_key: bytes) -> ec.EllipticCurvePrivateKey:
    """The PCK private key the PCE derives from the PROVISION key of one TCB (CPUSVN, PCESVN)."""
    return ec.derive_private_key(p256_scalar_from_key(provision_key, PAK_LABEL), ec.SECP256R1())


def ppid_from_provision_key(provision_key: bytes) -> bytes:
    """PPID = AES-CMAC(PROVISION key at CPUSVN 0 / ISVSVN 0, 16 zero bytes). Models: pce_cert.cpp get_ppid."""
    return aes_cmac(_key16("provision_key", provision_key), bytes(16))


# ============================================================================================
# Builds
# ============================================================================================


@dataclass(frozen=True)
class EnclaveBuild:
    """An enclave as shipped: its image, its signed SIGSTRUCT, and whether it needs PROVISIONKEY."""

    name: str
    image: EnclaveImage
    sigstruct: Sigstruct
    provision: bool

    @property
    def mrenclave(self) -> bytes:
        return self.sigstruct.mrenclave

    @property
    def mrsigner(self) -> bytes:
        return mrsigner(self.sigstruct.modulus)

    @property
    def isvprodid(self) -> int:
        return self.sigstruct.isvprodid

    @property
    def isvsvn(self) -> int:
        return self.sigstruct.isvsvn

    @property
    def secs_attributes(self) -> int:
        """SECS.ATTRIBUTES while the enclave runs (INIT set by EINIT)."""
        return self.image.attributes | int(Attributes.INIT)


def _check_svn(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFFFF:
        raise InvalidArgument(f"{name} must be a u16, got {value!r:.60}")
    return value


def _build(
    name: str,
    source: str,
    key: rsa.RSAPrivateKey,
    *,
    provision: bool,
    isvprodid: int,
    isvsvn: int,
    vendor: int,
    debug: bool = False,
) -> EnclaveBuild:
    attributes = int(Attributes.MODE64BIT)
    if provision:
        attributes |= int(Attributes.PROVISIONKEY)
    if debug:
        attributes |= int(Attributes.DEBUG)
    image = standard_image(source, heap_size=0, attributes=attributes)
    sig = sign_enclave(
        image,
        key,
        vendor=vendor,
        date=bcd_date(2025, 1, 1),
        attributes=attributes,
        # Production signing: DEBUG, MODE64BIT and PROVISIONKEY must be exactly as signed.
        attributes_mask=int(Attributes.DEBUG | Attributes.MODE64BIT | Attributes.PROVISIONKEY),
        isvprodid=_check_svn("isvprodid", isvprodid),
        isvsvn=_check_svn("isvsvn", isvsvn),
    )
    return EnclaveBuild(name, image, sig, provision)


def build_pce(key: rsa.RSAPrivateKey, *, isvsvn: int = PCE_ISVSVN) -> EnclaveBuild:
    """The PCE signed with Intel's ``key`` (vendor 0x8086, ISVPRODID 1, PROVISIONKEY)."""
    return _build(
        "pce", PCE_SOURCE, key, provision=True, isvprodid=PCE_ISVPRODID, isvsvn=isvsvn, vendor=INTEL_AE_VENDOR
    )


def build_qe(key: rsa.RSAPrivateKey, *, isvsvn: int = QE_ISVSVN) -> EnclaveBuild:
    """The QE signed with Intel's ``key`` (vendor 0x8086, ISVPRODID 1, PROVISIONKEY)."""
    return _build(
        "qe", QE_SOURCE, key, provision=True, isvprodid=QE_ISVPRODID, isvsvn=isvsvn, vendor=INTEL_AE_VENDOR
    )


def build_app(
    key: rsa.RSAPrivateKey,
    *,
    isvprodid: int = 1,
    isvsvn: int = 1,
    provision: bool = False,
    debug: bool = False,
) -> EnclaveBuild:
    """An attestable application enclave signed by an ISV ``key`` (vendor 0)."""
    return _build(
        "app", APP_SOURCE, key, provision=provision, isvprodid=isvprodid, isvsvn=isvsvn, vendor=0, debug=debug
    )


def target_info_of(report: bytes | Report) -> Targetinfo:
    """TARGETINFO naming the enclave a REPORT describes.

    Models: SDK ``sgx_get_target_info`` / the QE library's ``sgx_qe_get_target_info`` (MRENCLAVE,
    ATTRIBUTES, XFRM, MISCSELECT, CONFIGSVN, CONFIGID of the target). Outcome: the Targetinfo;
    InvalidArgument for a value that is not a 432-byte REPORT.
    """
    r = report if isinstance(report, Report) else Report.unpack(_need_bytes("report", report, Report.SIZE))
    return Targetinfo(
        measurement=r.mrenclave,
        attributes=r.attributes,
        xfrm=r.xfrm,
        config_svn=r.configsvn,
        miscselect=r.miscselect,
        config_id=r.configid,
    )


def _need_bytes(name: str, value: object, size: int | None = None) -> bytes:
    if not isinstance(value, bytes | bytearray):
        raise InvalidArgument(f"{name} must be bytes, got {type(value).__name__}")
    if size is not None and len(value) != size:
        raise InvalidArgument(f"{name} must be {size} bytes, got {len(value)}")
    return bytes(value)


def certification_data(
    qe_report_body: bytes, qe_report_sig: bytes, auth_data: bytes, pck_chain_pem: bytes
) -> bytes:
    """``sgx_qe_report_certification_data_t``: QE report, its PCE signature, auth data, PCK chain (type 5).

    What the QE embeds in a quote after its attestation key (v3) or wraps as type 6 (v4).
    Models: sgx_quote_3.h / sgx_quote_4.h. Outcome: the bytes; InvalidArgument for wrong sizes.
    """
    body = _need_bytes("qe_report_body", qe_report_body, 384)
    sig = _need_bytes("qe_report_sig", qe_report_sig, 64)
    auth = _need_bytes("auth_data", auth_data)
    chain = _need_bytes("pck_chain_pem", pck_chain_pem)
    if len(auth) > 0xFFFF:
        raise InvalidArgument(f"auth_data of {len(auth)} bytes does not fit a u16 size")
    return body + sig + struct.pack("<H", len(auth)) + auth + struct.pack("<HI", 5, len(chain)) + chain


# ============================================================================================
# Host side: loaded enclaves
# ============================================================================================


@dataclass(frozen=True)
class _CallResult:
    status: int
    data: bytes
    out_len: int
    leaf_rax: int


class _HostEnclave:
    """A loaded enclave and the untrusted-side call path (the URTS's role)."""

    def __init__(self, encl: Enclave, build: EnclaveBuild) -> None:
        self.encl = encl
        self.build = build
        self.calls = 0

    @property
    def proc(self) -> Process:
        return self.encl.proc

    @property
    def alive(self) -> bool:
        """The hosting process runs and the enclave was not closed (its EPC may still be lost)."""
        return not self.encl.closed and not self.encl.proc.exited

    def ecall(
        self,
        function: int,
        inputs: Sequence[bytes | None] = (),
        *,
        arg0: int = 0,
        arg1: int = 0,
        out_size: int = 0,
    ) -> _CallResult:
        """Enter the enclave through the vDSO with a call block; copy the output back.

        Outcomes: the enclave's status, output bytes (when it succeeded), out_len and the last
        EGETKEY RAX; :class:`EnclaveLost` if the enclave cannot be entered or exits other than by
        EEXIT (the vDSO's exception report is attached).
        """
        name = f"{self.build.name}[{function}]"
        if not self.alive:
            raise EnclaveLost(name, "the enclave or its process is gone")
        if len(inputs) > 3:
            raise InvalidArgument(f"at most three input buffers, got {len(inputs)}")
        proc = self.proc
        held: list[tuple[int, int]] = []
        try:
            call = ae_call(function=function, arg0=arg0 & _U64, arg1=arg1 & _U64)
            for i, data in enumerate(inputs):
                if data is None:
                    continue
                raw = _need_bytes(f"input {i + 1}", data)
                addr = proc.alloc(raw)
                held.append((addr, max(len(raw), 1)))
                setattr(call, f"in{i + 1}", addr)
                setattr(call, f"in{i + 1}_size", len(raw))
            if out_size:
                call.out = proc.alloc(out_size)
                call.out_size = out_size
                held.append((call.out, out_size))
            self.calls += 1
            ret = self.encl.call_op(call)
            run = self.encl.run
            if ret != 0 or run.function != uapi.EEXIT:
                raise EnclaveLost(
                    name,
                    f"vDSO returned {ret}, function {run.function}, exception vector {run.exception_vector}",
                    run.exception_vector,
                    run.exception_error_code,
                    run.exception_addr,
                )
            status = int(call.status)
            data = b""
            if status == 0 and call.out_len:
                data = proc.read(call.out, min(int(call.out_len), out_size))
            return _CallResult(status, data, int(call.out_len), int(call.leaf_rax))
        finally:
            if not proc.exited:
                for addr, size in held:
                    proc.munmap(addr, size)

    def self_report(self) -> Report:
        """This enclave's REPORT (function 0: EREPORT with an all-zero TARGETINFO).

        Models: SDK ``sgx_create_report(NULL, NULL, &report)``. Outcomes: the Report; EnclaveLost.
        """
        res = self.ecall(AeFunction.SELF_REPORT, out_size=Report.SIZE)
        if res.status:
            raise AeCallError(f"{self.build.name}.self_report", res.status)
        return Report.unpack(res.data)

    def target_info(self) -> Targetinfo:
        """TARGETINFO other enclaves use to EREPORT to this one."""
        return target_info_of(self.self_report())

    def close(self) -> None:
        """Unmap and close the enclave (idempotent; nothing to do if its process exited).

        Models: SDK ``sgx_destroy_enclave`` (selftests' ``encl_delete``).
        """
        if not self.encl.closed and not self.encl.proc.exited:
            self.encl.close()


@dataclass(frozen=True)
class PceInfo:
    """``get_pc_info``'s answer: the PPID, the PCE's ISVSVN (PCESVN) and PCE-ID."""

    ppid: bytes
    pce_isvsvn: int
    pce_id: bytes


class ProvisioningCertificationEnclave(_HostEnclave):
    """Host handle of a loaded PCE."""

    def get_pc_info(self, requester_report: bytes) -> PceInfo:
        """PPID, PCESVN and PCE-ID, for a REPORT (targeted at the PCE) of a PROVISIONKEY enclave.

        Models: PCE ``get_pc_info`` (see module Differs). Outcomes: :class:`PceInfo`;
        :class:`AeCallError` with SGX_PCE_INVALID_REPORT (MAC check failed), SGX_PCE_INVALID_PRIVILEGE
        (requester lacks PROVISIONKEY), SGX_PCE_INVALID_PARAMETER.
        """
        res = self.ecall(AeFunction.PCE_GET_PC_INFO, [_need_bytes("report", requester_report)], out_size=20)
        if res.status:
            raise AeCallError("pce.get_pc_info", res.status, res.leaf_rax)
        return PceInfo(res.data[:16], int.from_bytes(res.data[16:18], "little"), res.data[18:20][::-1])

    def certify_enclave(self, report: bytes, cpusvn: bytes, pcesvn: int) -> bytes:
        """Sign ``report``'s body with the PCK key of TCB (``cpusvn``, ``pcesvn``); the raw r||s signature.

        Models: PCE ``certify_enclave``. Outcomes: 64 bytes; :class:`AeCallError` with
        SGX_PCE_INVALID_REPORT, SGX_PCE_INVALID_PRIVILEGE, SGX_PCE_INVALID_TCB (EGETKEY refused the
        PSVN: CPUSVN above the platform's or PCESVN above the PCE's; ``leaf_rax`` says which),
        SGX_PCE_INVALID_PARAMETER.
        """
        psvn = _need_bytes("cpusvn", cpusvn, CPUSVN_SIZE) + struct.pack("<H", _check_svn("pcesvn", pcesvn))
        res = self.ecall(AeFunction.PCE_CERTIFY_ENCLAVE, [psvn, _need_bytes("report", report)], out_size=64)
        if res.status:
            raise AeCallError("pce.certify_enclave", res.status, res.leaf_rax)
        return res.data


@dataclass(frozen=True)
class QeInit:
    """``gen_att_key``'s answer: the QE REPORT targeted at the PCE and the attestation public key."""

    report: bytes
    attest_pub: bytes
    auth_data: bytes

    @property
    def report_body(self) -> bytes:
        return self.report[:384]


class QuotingEnclave(_HostEnclave):
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
        auth = _need_bytes("auth_data", auth_data)
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
        cert = _need_bytes("certification", certification)
        size = 48 + 384 + 4 + 128 + (6 if version == 4 else 0) + len(cert)
        res = self.ecall(
            AeFunction.QE_GET_QUOTE,
            [_need_bytes("app_report", app_report), cert],
            arg0=version,
            arg1=_check_svn("pce_svn", pce_svn),
            out_size=size,
        )
        if res.status:
            raise AeCallError("qe.get_quote", res.status, res.leaf_rax)
        return res.data


class AppEnclave(_HostEnclave):
    """Host handle of the attestable application enclave.

    ``keyid_rng`` supplies each sealed blob's KEYID (see module Differs).
    """

    def __init__(self, encl: Enclave, build: EnclaveBuild, keyid_rng: random.Random) -> None:
        super().__init__(encl, build)
        if not isinstance(keyid_rng, random.Random):
            raise InvalidArgument(f"keyid_rng must be a random.Random, got {type(keyid_rng).__name__}")
        self._keyid_rng = keyid_rng

    def report(self, target_info: Targetinfo, report_data: bytes = b"") -> bytes:
        """EREPORT for ``target_info`` with ``report_data`` (up to 64 bytes, zero-padded); 432 bytes.

        Models: SDK ``sgx_create_report``. Outcomes: the REPORT; InvalidArgument for bad types.
        """
        if not isinstance(target_info, Targetinfo):
            raise InvalidArgument(f"target_info must be a Targetinfo, got {type(target_info).__name__}")
        rd = _need_bytes("report_data", report_data)
        if len(rd) > 64:
            raise InvalidArgument(f"report_data is at most 64 bytes, got {len(rd)}")
        res = self.ecall(AeFunction.APP_REPORT, [target_info.pack(), rd], out_size=Report.SIZE)
        if res.status:
            raise AeCallError("app.report", res.status)
        return res.data

    def seal(
        self,
        data: bytes,
        *,
        cpusvn: bytes | None = None,
        isvsvn: int | None = None,
        keyid: bytes | None = None,
    ) -> bytes:
        """``sgx_seal_data`` (MRSIGNER policy) at the running CPUSVN/ISVSVN, or at an explicit PSVN.

        Outcomes: the ``sgx_sealed_data_t`` blob; :class:`AeCallError` with SGX_ERROR_INVALID_CPUSVN /
        SGX_ERROR_INVALID_ISVSVN (``leaf_rax`` SGX_INVALID_CPUSVN / SGX_INVALID_ISVSVN) when the
        explicit PSVN is above the platform's / enclave's.
        """
        text = _need_bytes("data", data)
        if (cpusvn is None) != (isvsvn is None):
            raise InvalidArgument("give both cpusvn and isvsvn, or neither")
        kid = keyid if keyid is not None else self._keyid_rng.randbytes(32)
        inputs: list[bytes | None] = [text, _need_bytes("keyid", kid, 32)]
        flags = 0
        if cpusvn is not None and isvsvn is not None:
            inputs.append(
                _need_bytes("cpusvn", cpusvn, CPUSVN_SIZE) + struct.pack("<H", _check_svn("isvsvn", isvsvn))
            )
            flags = 1
        res = self.ecall(
            AeFunction.APP_SEAL, inputs, arg0=flags, out_size=SEALED_DATA_HEADER_SIZE + len(text)
        )
        if res.status:
            raise AeCallError("app.seal", res.status, res.leaf_rax)
        return res.data

    def unseal(self, blob: bytes) -> bytes:
        """``sgx_unseal_data``: re-derive the SEAL key the blob's KEYREQUEST names and decrypt.

        Outcomes: the plaintext; :class:`AeCallError` with SGX_ERROR_INVALID_CPUSVN (the blob's CPUSVN
        is above the running one, e.g. after a reset to older microcode), SGX_ERROR_INVALID_ISVSVN,
        SGX_ERROR_MAC_MISMATCH (tampered blob or another platform/signer), SGX_ERROR_INVALID_PARAMETER.
        """
        raw = _need_bytes("blob", blob)
        out = max(len(raw) - SEALED_DATA_HEADER_SIZE, 0)
        res = self.ecall(AeFunction.APP_UNSEAL, [raw], out_size=max(out, 1))
        if res.status:
            raise AeCallError("app.unseal", res.status, res.leaf_rax)
        return res.data if res.out_len else b""


class Attestable(Protocol):
    """What an attestation flow needs from an application enclave: a REPORT for a target."""

    def report(self, target_info: Targetinfo, report_data: bytes = b"") -> bytes:
        """EREPORT for ``target_info`` with ``report_data``; the 432-byte REPORT."""
        ...


def _load(proc: Process, build: EnclaveBuild) -> Enclave:
    if not isinstance(proc, Process):
        raise InvalidArgument(f"proc must be a Process, got {type(proc).__name__}")
    if not isinstance(build, EnclaveBuild):
        raise InvalidArgument(f"build must be an EnclaveBuild, got {type(build).__name__}")
    return load_enclave(proc, build.image, sigstruct=build.sigstruct, provision=build.provision)


def load_pce(proc: Process, build: EnclaveBuild) -> ProvisioningCertificationEnclave:
    """Load the PCE in ``proc`` (with SGX_IOC_ENCLAVE_PROVISION). Outcomes: the handle; loader OSError."""
    return ProvisioningCertificationEnclave(_load(proc, build), build)


def load_qe(proc: Process, build: EnclaveBuild) -> QuotingEnclave:
    """Load the QE in ``proc`` (with SGX_IOC_ENCLAVE_PROVISION). Outcomes: the handle; loader OSError."""
    return QuotingEnclave(_load(proc, build), build)


def load_app(proc: Process, build: EnclaveBuild, keyid_rng: random.Random | None = None) -> AppEnclave:
    """Load the application enclave in ``proc``. Outcomes: the handle; the loader's OSError."""
    rng = keyid_rng if keyid_rng is not None else random.Random(0)
    return AppEnclave(_load(proc, build), build, rng)
