"""The Provisioning Certification Enclave (PCE): program, build, host handle.

The PCE holds no state; on request it derives the PCK private key of a TCB (CPUSVN, PCESVN) from
the PROVISION key (EGETKEY KEYNAME=PROVISION at that CPUSVN and ISVSVN, older-or-equal to the
platform's, which EGETKEY allows) and signs the report body of a PROVISIONKEY enclave (the QE)
after checking that REPORT's MAC with its own REPORT key; it also returns the PPID. It needs the
PROVISIONKEY attribute.

Models: intel/SGXDataCenterAttestationPrimitives QuoteGeneration PCE (``certify_enclave``,
``get_pc_info``, ``pce_cert.cpp``).
Differs: the PCE returns the PPID in clear (no RSA-3072-OAEP encryption to Intel's PPID key; the
PCS model takes the PPID in clear too) and does not check the requester's REPORTDATA binding of
that key.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import rsa

from sgxsim.hw.arch import (
    CPUSVN_SIZE,
    Attributes,
)
from sgxsim.kernel.process import Process
from sgxsim.sdk.enclaves import enclave_source
from sgxsim.sdk.quoting.build import INTEL_AE_VENDOR, EnclaveBuild, build_enclave, load_build
from sgxsim.sdk.quoting.ecall import (
    COMMON_SOURCE,
    U64_MAX,
    AeCallError,
    AeFunction,
    check_svn,
    need_bytes,
)
from sgxsim.sdk.quoting.host import HostEnclave
from sgxsim.sdk.quoting.provisioning import KDF_SOURCE

__all__ = [
    "PCE_ISVPRODID",
    "PCE_ISVSVN",
    "PCE_PROVISION_KEY_ATTRIBUTEMASK",
    "PCE_PROVISION_KEY_MISCMASK",
    "PCE_PROVISION_KEY_XFRMMASK",
    "PCE_SOURCE",
    "PceInfo",
    "ProvisioningCertificationEnclave",
    "build_pce",
    "load_pce",
]

#: Intel's PCE: ISVPRODID 1 (psw/ae/pce/config.xml); ISVSVN [ASSUMED] 13, a 2024-era PCESVN.
PCE_ISVPRODID = 1


PCE_ISVSVN = 13


#: The PCE's PROVISION key request (pce_cert.cpp ``get_provision_key``): every ATTRIBUTES flag but
#: MODE64BIT, no XFRM bit, every MISCSELECT bit.
PCE_PROVISION_KEY_ATTRIBUTEMASK = U64_MAX & ~int(Attributes.MODE64BIT)


PCE_PROVISION_KEY_XFRMMASK = 0


PCE_PROVISION_KEY_MISCMASK = 0xFFFFFFFF


#: The PCE program (linked with the sdk runtime by :func:`standard_image`): the bytes of
#: :mod:`sgxsim.sdk.enclaves.kdf`, :mod:`~sgxsim.sdk.enclaves.ae_common` and :mod:`~sgxsim.sdk.enclaves.pce`.
PCE_SOURCE = KDF_SOURCE + COMMON_SOURCE + enclave_source("pce")


def build_pce(key: rsa.RSAPrivateKey, *, isvsvn: int = PCE_ISVSVN) -> EnclaveBuild:
    """The PCE signed with Intel's ``key`` (vendor 0x8086, ISVPRODID 1, PROVISIONKEY)."""
    return build_enclave(
        "pce", PCE_SOURCE, key, provision=True, isvprodid=PCE_ISVPRODID, isvsvn=isvsvn, vendor=INTEL_AE_VENDOR
    )


@dataclass(frozen=True)
class PceInfo:
    """``get_pc_info``'s answer: the PPID, the PCE's ISVSVN (PCESVN) and PCE-ID."""

    ppid: bytes
    pce_isvsvn: int
    pce_id: bytes


class ProvisioningCertificationEnclave(HostEnclave):
    """Host handle of a loaded PCE."""

    def get_pc_info(self, requester_report: bytes) -> PceInfo:
        """PPID, PCESVN and PCE-ID, for a REPORT (targeted at the PCE) of a PROVISIONKEY enclave.

        Models: PCE ``get_pc_info`` (see module Differs). Outcomes: :class:`PceInfo`;
        :class:`AeCallError` with SGX_PCE_INVALID_REPORT (MAC check failed), SGX_PCE_INVALID_PRIVILEGE
        (requester lacks PROVISIONKEY), SGX_PCE_INVALID_PARAMETER.
        """
        res = self.ecall(AeFunction.PCE_GET_PC_INFO, [need_bytes("report", requester_report)], out_size=20)
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
        psvn = need_bytes("cpusvn", cpusvn, CPUSVN_SIZE) + struct.pack("<H", check_svn("pcesvn", pcesvn))
        res = self.ecall(AeFunction.PCE_CERTIFY_ENCLAVE, [psvn, need_bytes("report", report)], out_size=64)
        if res.status:
            raise AeCallError("pce.certify_enclave", res.status, res.leaf_rax)
        return res.data


def load_pce(proc: Process, build: EnclaveBuild) -> ProvisioningCertificationEnclave:
    """Load the PCE in ``proc`` (with SGX_IOC_ENCLAVE_PROVISION). Outcomes: the handle; loader OSError."""
    return ProvisioningCertificationEnclave(load_build(proc, build), build)
