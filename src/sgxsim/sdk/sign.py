"""The enclave signer: SIGSTRUCT for an image, signed with an RSA-3072 (e=3) key.

Keys come from a PEM file (PKCS#1 or PKCS#8, unencrypted or with a password) or are
generated deterministically from a seed with :func:`sgxsim.hw.crypto.rsa3072_e3_keygen`
(never from the OS entropy pool). :func:`sign_enclave` fills the SIGSTRUCT the way the
kernel selftests' ``encl_measure()`` does -- HEADER1/HEADER2 constants, vendor 0,
ATTRIBUTES = the image's (MODE64BIT), XFRM 3, masks 0, MRENCLAVE from the image -- with
every field a parameter, and signs it with :func:`sgxsim.hw.crypto.sigstruct_sign`
(PKCS#1 v1.5 SHA-256 over header || body, modulus/signature little-endian, Q1/Q2).

Models: tools/testing/selftests/sgx/sigstruct.c ``encl_measure`` / ``gen_sign_key``;
SDM Table "Layout of Enclave Signature Structure (SIGSTRUCT)".
"""

from __future__ import annotations

import random
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sgxsim.errors import InvalidArgument
from sgxsim.hw.arch import (
    SGX_MODULUS_SIZE,
    SIGSTRUCT_EXPONENT,
    SIGSTRUCT_HEADER1,
    SIGSTRUCT_HEADER2,
    XFRM_LEGACY,
    Attributes,
    Sigstruct,
)
from sgxsim.hw.crypto import mrsigner, rsa3072_e3_keygen, sigstruct_sign
from sgxsim.sdk.image import EnclaveImage

__all__ = [
    "bcd_date",
    "generate_signing_key",
    "key_mrsigner",
    "load_signing_key",
    "sign_enclave",
    "signing_key_pem",
]

_U16 = 0xFFFF
_U32 = 0xFFFFFFFF
_U64 = (1 << 64) - 1


def _check_int(name: str, value: object, maximum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
        raise InvalidArgument(f"{name} must be an int in [0, {maximum:#x}], got {value!r:.60}")
    return int(value)


def _check_key(key: object) -> rsa.RSAPrivateKey:
    if not isinstance(key, rsa.RSAPrivateKey):
        raise InvalidArgument(f"signing key must be an RSA private key, got {type(key).__name__}")
    pub = key.public_key().public_numbers()
    if pub.n.bit_length() != SGX_MODULUS_SIZE * 8 or pub.e != SIGSTRUCT_EXPONENT:
        raise InvalidArgument(
            f"SGX signing keys are RSA-3072 with e=3; got {pub.n.bit_length()}-bit modulus, e={pub.e}"
        )
    return key


def load_signing_key(pem: bytes | str | Path, password: bytes | None = None) -> rsa.RSAPrivateKey:
    """An RSA-3072, e=3 private key from PEM bytes or a PEM file path.

    Models: sigstruct.c ``gen_sign_key`` (PEM_read_bio_RSAPrivateKey of sign_key.pem).
    Raises InvalidArgument for unreadable PEM, a non-RSA key, or the wrong size/exponent.
    """
    if isinstance(pem, str | Path):
        try:
            raw = Path(pem).read_bytes()
        except OSError as exc:
            raise InvalidArgument(f"cannot read signing key file {str(pem)!r}: {exc.strerror}") from None
    elif isinstance(pem, bytes | bytearray):
        raw = bytes(pem)
    else:
        raise InvalidArgument(f"pem must be bytes or a path, got {type(pem).__name__}")
    try:
        key = serialization.load_pem_private_key(raw, password=password)
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(f"not a usable PEM private key: {exc}") from None
    return _check_key(key)


def generate_signing_key(seed: int | random.Random) -> rsa.RSAPrivateKey:
    """A deterministic RSA-3072, e=3 key: same seed, same key (``rsa3072_e3_keygen``)."""
    if isinstance(seed, random.Random):
        rng = seed
    elif isinstance(seed, int) and not isinstance(seed, bool):
        rng = random.Random(seed)
    else:
        raise InvalidArgument(f"seed must be an int or random.Random, got {seed!r:.60}")
    return _check_key(rsa3072_e3_keygen(rng))


def signing_key_pem(key: rsa.RSAPrivateKey) -> bytes:
    """``key`` as unencrypted PKCS#8 PEM (round-trips through :func:`load_signing_key`)."""
    return _check_key(key).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def key_mrsigner(key: rsa.RSAPrivateKey) -> bytes:
    """MRSIGNER of enclaves signed with ``key``: SHA-256 of the little-endian modulus."""
    n = _check_key(key).public_key().public_numbers().n
    return mrsigner(n.to_bytes(SGX_MODULUS_SIZE, "little"))


def bcd_date(year: int, month: int, day: int) -> int:
    """SIGSTRUCT.DATE for a calendar date: BCD ``yyyymmdd`` as a u32 (e.g. 2025-10-16 -> 0x20251016)."""
    y = _check_int("year", year, 9999)
    m = _check_int("month", month, 12)
    d = _check_int("day", day, 31)
    if m == 0 or d == 0:
        raise InvalidArgument(f"no such date {y:04d}-{m:02d}-{d:02d}")
    return int(f"{y:04d}{m:02d}{d:02d}", 16)


def sign_enclave(
    image: EnclaveImage | bytes,
    key: rsa.RSAPrivateKey,
    *,
    vendor: int = 0,
    date: int = 0,
    swdefined: int = 0,
    attributes: int | None = None,
    attributes_mask: int = 0,
    xfrm: int | None = None,
    xfrm_mask: int = 0,
    miscselect: int | None = None,
    misc_mask: int = 0,
    isvprodid: int = 0,
    isvsvn: int = 0,
    isvfamilyid: bytes = bytes(16),
    isvextprodid: bytes = bytes(16),
) -> Sigstruct:
    """A signed SIGSTRUCT for ``image`` (or for a raw 32-byte MRENCLAVE).

    Defaults are the selftests' ``encl_measure``: vendor 0, date 0, ATTRIBUTES/XFRM/
    MISCSELECT from the image (MODE64BIT, 3, 0; with a raw MRENCLAVE: MODE64BIT, 3, 0),
    all masks 0, ISVPRODID/ISVSVN 0. EINIT compares SECS and SIGSTRUCT attributes only
    under ``attributes_mask``; with mask 0 any SECS attributes pass.

    Models: sigstruct.c ``encl_measure``; hw.crypto ``sigstruct_sign`` does the RSA part.
    """
    if isinstance(image, EnclaveImage):
        mrenclave = image.mrenclave()
        attributes = image.attributes if attributes is None else attributes
        xfrm = image.xfrm if xfrm is None else xfrm
        miscselect = image.miscselect if miscselect is None else miscselect
    elif isinstance(image, bytes | bytearray) and len(image) == 32:
        mrenclave = bytes(image)
    else:
        raise InvalidArgument(f"image must be an EnclaveImage or a 32-byte MRENCLAVE, got {image!r:.60}")
    sig = Sigstruct(
        header1=SIGSTRUCT_HEADER1,
        vendor=_check_int("vendor", vendor, _U32),
        date=_check_int("date", date, _U32),
        header2=SIGSTRUCT_HEADER2,
        swdefined=_check_int("swdefined", swdefined, _U32),
        miscselect=_check_int("miscselect", 0 if miscselect is None else miscselect, _U32),
        misc_mask=_check_int("misc_mask", misc_mask, _U32),
        isvfamilyid=isvfamilyid,
        attributes=_check_int(
            "attributes", int(Attributes.MODE64BIT) if attributes is None else attributes, _U64
        ),
        xfrm=_check_int("xfrm", XFRM_LEGACY if xfrm is None else xfrm, _U64),
        attributes_mask=_check_int("attributes_mask", attributes_mask, _U64),
        xfrm_mask=_check_int("xfrm_mask", xfrm_mask, _U64),
        mrenclave=mrenclave,
        isvextprodid=isvextprodid,
        isvprodid=_check_int("isvprodid", isvprodid, _U16),
        isvsvn=_check_int("isvsvn", isvsvn, _U16),
    )
    return sigstruct_sign(sig, _check_key(key))
