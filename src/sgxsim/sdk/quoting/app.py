"""The attestable application enclave: program, build, host handle.

EREPORT for a given TARGETINFO and REPORTDATA, and sealing / unsealing with the SEAL key in the
SDK's ``sgx_sealed_data_t`` layout (the KEYREQUEST travels with the blob, so data sealed at an
older CPUSVN stays readable after an update, and a blob naming a CPUSVN above the running one is
refused with SGX_INVALID_CPUSVN).

Models: intel/linux-sgx ``sgx_tseal`` (``sgx_sealed_data_t``, ``sgx_seal_data``/``sgx_unseal_data``).
Differs: sealing takes its KEYID from the host (the SDK draws it with RDRAND inside the enclave).
"""

from __future__ import annotations

import random
import struct
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import rsa

from sgxsim.errors import InvalidArgument
from sgxsim.hw.arch import (
    CPUSVN_SIZE,
    Report,
    Targetinfo,
)
from sgxsim.kernel.process import Process
from sgxsim.sdk.loader import Enclave
from sgxsim.sdk.quoting.build import EnclaveBuild, build_enclave, load_build
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
    "APP_SOURCE",
    "SEALED_DATA_HEADER_SIZE",
    "AppEnclave",
    "Attestable",
    "build_app",
    "load_app",
]

#: ``sizeof(sgx_sealed_data_t)``: KEYREQUEST 512, plain_text_offset 4, reserved 12, then
#: ``sgx_aes_gcm_data_t`` payload_size 4, reserved 12, payload_tag 16.
SEALED_DATA_HEADER_SIZE = 560


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


#: The application enclave program.
APP_SOURCE = KDF_SOURCE + COMMON_SOURCE + _APP_BODY


def build_app(
    key: rsa.RSAPrivateKey,
    *,
    isvprodid: int = 1,
    isvsvn: int = 1,
    provision: bool = False,
    debug: bool = False,
) -> EnclaveBuild:
    """An attestable application enclave signed by an ISV ``key`` (vendor 0)."""
    return build_enclave(
        "app", APP_SOURCE, key, provision=provision, isvprodid=isvprodid, isvsvn=isvsvn, vendor=0, debug=debug
    )


class AppEnclave(HostEnclave):
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
        rd = need_bytes("report_data", report_data)
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
        text = need_bytes("data", data)
        if (cpusvn is None) != (isvsvn is None):
            raise InvalidArgument("give both cpusvn and isvsvn, or neither")
        kid = keyid if keyid is not None else self._keyid_rng.randbytes(32)
        inputs: list[bytes | None] = [text, need_bytes("keyid", kid, 32)]
        flags = 0
        if cpusvn is not None and isvsvn is not None:
            inputs.append(
                need_bytes("cpusvn", cpusvn, CPUSVN_SIZE) + struct.pack("<H", check_svn("isvsvn", isvsvn))
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
        raw = need_bytes("blob", blob)
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


def load_app(proc: Process, build: EnclaveBuild, keyid_rng: random.Random | None = None) -> AppEnclave:
    """Load the application enclave in ``proc``. Outcomes: the handle; the loader's OSError."""
    rng = keyid_rng if keyid_rng is not None else random.Random(0)
    return AppEnclave(load_build(proc, build), build, rng)
