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
from sgxsim.sdk.enclaves import enclave_source
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


#: The application enclave program (kdf, ae_common, then :mod:`sgxsim.sdk.enclaves.app`).
APP_SOURCE = KDF_SOURCE + COMMON_SOURCE + enclave_source("app")


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
