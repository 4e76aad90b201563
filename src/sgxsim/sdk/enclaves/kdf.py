"""Enclave code: the CMAC-based derivations the PCE and the QE share.

Mirrored on the host by :func:`sgxsim.sdk.quoting.provisioning.p256_scalar_from_key` and
:func:`~sgxsim.sdk.quoting.provisioning.ppid_from_provision_key` (the tests compare them).
"""

from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC

KDF_P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def kdf_cmac(key: bytes, data: bytes) -> bytes:
    c = CMAC(algorithms.AES(key))
    c.update(data)
    return c.finalize()


def kdf_p256_scalar(key: bytes, label: bytes) -> int:
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


def kdf_ppid(key: bytes) -> bytes:
    return kdf_cmac(key, bytes(16))
