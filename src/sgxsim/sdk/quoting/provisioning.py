"""Provisioning: the CMAC-based key derivations of the PCE and the QE, and the certification data.

[MODEL] Keys:

* PCK private key: Intel's PCE construction (``get_pce_priv_key``): three AES-CMAC blocks under
  the PROVISION key over ``ctr || "PAK_KEY_DER" || 0 0 || 0x01 0x40``, the first 320 bits as a
  big-endian integer d, scalar = d mod (n-1) + 1. PPID = AES-CMAC(PROVISION key at CPUSVN 0,
  ISVSVN 0, 16 zero bytes). The 16-byte keys themselves are :func:`sgxsim.hw.crypto.derive_key`'s.
* QE attestation key: the same construction with label ``"QE3_ATT_KEY"`` under the QE's SEAL key
  (policy MRENCLAVE, current CPUSVN and ISVSVN). QE_ID (quote header user_data[0:16]) =
  AES-CMAC(SEAL key, policy MRSIGNER, CPUSVN 0, ISVSVN 0; ``"QE_ID"`` padded to 16 bytes).

:data:`KDF_SOURCE` is the in-enclave side; the host mirrors here are what the PCS model and the
tests use. Models: intel/SGXDataCenterAttestationPrimitives ``pce_cert.cpp``, ``sgx_quote_3.h``,
``sgx_quote_4.h``.
"""

from __future__ import annotations

import struct

from cryptography.hazmat.primitives.asymmetric import ec

from sgxsim.errors import InvalidArgument
from sgxsim.hw.arch import (
    CPUSVN_SIZE,
)
from sgxsim.hw.crypto import aes_cmac
from sgxsim.sdk.enclaves import enclave_source
from sgxsim.sdk.quoting.ecall import need_bytes

__all__ = [
    "KDF_SOURCE",
    "P256_ORDER",
    "PAK_LABEL",
    "PSVN_SIZE",
    "QE_ATT_LABEL",
    "certification_data",
    "p256_scalar_from_key",
    "pck_private_key",
    "ppid_from_provision_key",
]

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


#: Labels of the CMAC-based P-256 key derivation (11 bytes each).
PAK_LABEL = b"PAK_KEY_DER"


QE_ATT_LABEL = b"QE3_ATT_KEY"


#: ``psvn_t``: CPUSVN (16) then ISVSVN (u16).
PSVN_SIZE = CPUSVN_SIZE + 2


#: The CMAC-based derivations shared by the PCE and the QE (the bytes of
#: :mod:`sgxsim.sdk.enclaves.kdf`; mirrored on the host by :func:`p256_scalar_from_key` /
#: :func:`ppid_from_provision_key`, which the tests compare).
KDF_SOURCE = enclave_source("kdf")


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


def certification_data(
    qe_report_body: bytes, qe_report_sig: bytes, auth_data: bytes, pck_chain_pem: bytes
) -> bytes:
    """``sgx_qe_report_certification_data_t``: QE report, its PCE signature, auth data, PCK chain (type 5).

    What the QE embeds in a quote after its attestation key (v3) or wraps as type 6 (v4).
    Models: sgx_quote_3.h / sgx_quote_4.h. Outcome: the bytes; InvalidArgument for wrong sizes.
    """
    body = need_bytes("qe_report_body", qe_report_body, 384)
    sig = need_bytes("qe_report_sig", qe_report_sig, 64)
    auth = need_bytes("auth_data", auth_data)
    chain = need_bytes("pck_chain_pem", pck_chain_pem)
    if len(auth) > 0xFFFF:
        raise InvalidArgument(f"auth_data of {len(auth)} bytes does not fit a u16 size")
    return body + sig + struct.pack("<H", len(auth)) + auth + struct.pack("<HI", 5, len(chain)) + chain
