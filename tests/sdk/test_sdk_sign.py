"""sdk.sign: SIGSTRUCT contents as the selftests' encl_measure builds them, keys, signatures."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sgxsim.errors import InvalidArgument
from sgxsim.hw.arch import SIGSTRUCT_HEADER1, SIGSTRUCT_HEADER2, Attributes, SgxStatus, Sigstruct
from sgxsim.hw.crypto import ec_p256_keygen, sigstruct_verify
from sgxsim.sdk.sign import (
    bcd_date,
    generate_signing_key,
    key_mrsigner,
    load_signing_key,
    sign_enclave,
    signing_key_pem,
)
from sgxsim.sdk.test_encl import build_test_encl


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return generate_signing_key(7)


def test_selftest_sigstruct_fields(key: rsa.RSAPrivateKey) -> None:
    image = build_test_encl()
    sig = sign_enclave(image, key)
    raw = sig.pack()
    # header1 = {0x000000E100000006, 0x0000000000010000}, header2 = {0x0000006000000101, 0x0000000100000060}
    assert raw[0:16] == (0x000000E100000006).to_bytes(8, "little") + (0x0000000000010000).to_bytes(
        8, "little"
    )
    assert raw[24:40] == (0x0000006000000101).to_bytes(8, "little") + (0x0000000100000060).to_bytes(
        8, "little"
    )
    assert sig.header1 == SIGSTRUCT_HEADER1 and sig.header2 == SIGSTRUCT_HEADER2
    assert (sig.vendor, sig.date, sig.exponent) == (0, 0, 3)
    assert raw[512:516] == b"\x03\0\0\0"
    assert (sig.attributes, sig.xfrm) == (int(Attributes.MODE64BIT), 3)
    assert (sig.attributes_mask, sig.xfrm_mask, sig.miscselect, sig.misc_mask) == (0, 0, 0, 0)
    assert (sig.isvprodid, sig.isvsvn) == (0, 0)
    assert sig.mrenclave == image.mrenclave() == raw[960:992]
    n = key.public_key().public_numbers().n
    assert sig.modulus == n.to_bytes(384, "little")
    assert sigstruct_verify(sig) == SgxStatus.SUCCESS


def test_signature_covers_header_and_body(key: rsa.RSAPrivateKey) -> None:
    sig = sign_enclave(bytes(range(32)), key, isvprodid=5, isvsvn=9, date=bcd_date(2025, 10, 16))
    assert sigstruct_verify(sig) == SgxStatus.SUCCESS
    assert (sig.isvprodid, sig.isvsvn, sig.date) == (5, 9, 0x20251016)
    for change in ({"isvsvn": 10}, {"date": 0x20251017}, {"mrenclave": bytes(32)}, {"attributes_mask": 1}):
        assert sigstruct_verify(dataclasses.replace(sig, **change)) == SgxStatus.SGX_INVALID_SIGNATURE, change
    # Unsigned fields (reserved4 is reserved, so it breaks the structure instead).
    assert (
        sigstruct_verify(dataclasses.replace(sig, reserved4=b"\1" + bytes(11)))
        == SgxStatus.SGX_INVALID_SIG_STRUCT
    )


def test_parameters_reach_the_body(key: rsa.RSAPrivateKey) -> None:
    sig = sign_enclave(
        build_test_encl(),
        key,
        vendor=0x8086,
        attributes=int(Attributes.MODE64BIT | Attributes.PROVISIONKEY),
        attributes_mask=0xFF,
        xfrm=7,
        xfrm_mask=3,
        miscselect=1,
        misc_mask=1,
        swdefined=0xABCD,
    )
    assert (sig.vendor, sig.attributes, sig.attributes_mask) == (0x8086, 0x14, 0xFF)
    assert (sig.xfrm, sig.xfrm_mask, sig.miscselect, sig.misc_mask, sig.swdefined) == (7, 3, 1, 1, 0xABCD)
    assert sigstruct_verify(sig) == SgxStatus.SUCCESS
    with pytest.raises(InvalidArgument, match="isvsvn"):
        sign_enclave(bytes(32), key, isvsvn=1 << 16)
    with pytest.raises(InvalidArgument, match="MRENCLAVE"):
        sign_enclave(bytes(31), key)


def test_deterministic_keys() -> None:
    a = generate_signing_key(1)
    assert key_mrsigner(a) == key_mrsigner(generate_signing_key(random.Random(1)))
    assert key_mrsigner(a) != key_mrsigner(generate_signing_key(2))
    n = a.public_key().public_numbers().n
    assert key_mrsigner(a) == hashlib.sha256(n.to_bytes(384, "little")).digest()
    with pytest.raises(InvalidArgument):
        generate_signing_key("1")  # type: ignore[arg-type]


def test_pem_round_trip(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    pem = signing_key_pem(key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert key_mrsigner(load_signing_key(pem)) == key_mrsigner(key)
    path = tmp_path / "sign_key.pem"
    traditional = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    path.write_bytes(traditional)  # PKCS#1 "BEGIN RSA PRIVATE KEY", like the selftests' sign_key.pem
    assert key_mrsigner(load_signing_key(path)) == key_mrsigner(key)
    assert key_mrsigner(load_signing_key(str(path))) == key_mrsigner(key)


def test_bad_keys_are_rejected(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    priv = key.private_numbers()
    p, q = priv.p, priv.q
    e = 65537
    d = pow(e, -1, math.lcm(p - 1, q - 1))
    wrong_e = rsa.RSAPrivateNumbers(
        p,
        q,
        d,
        rsa.rsa_crt_dmp1(d, p),
        rsa.rsa_crt_dmq1(d, q),
        rsa.rsa_crt_iqmp(p, q),
        rsa.RSAPublicNumbers(e, p * q),
    ).private_key()
    pem = wrong_e.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(InvalidArgument, match="e=3"):
        load_signing_key(pem)
    with pytest.raises(InvalidArgument, match="e=3"):
        sign_enclave(bytes(32), wrong_e)
    ec_pem = ec_p256_keygen(random.Random(0)).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(InvalidArgument, match="RSA"):
        load_signing_key(ec_pem)
    with pytest.raises(InvalidArgument, match="PEM"):
        load_signing_key(b"not a key")
    with pytest.raises(InvalidArgument, match="cannot read"):
        load_signing_key(tmp_path / "missing.pem")


def test_bcd_date() -> None:
    assert bcd_date(2016, 1, 2) == 0x20160102
    with pytest.raises(InvalidArgument):
        bcd_date(2016, 13, 1)
    with pytest.raises(InvalidArgument):
        bcd_date(2016, 0, 1)


def test_sigstruct_is_a_sigstruct(key: rsa.RSAPrivateKey) -> None:
    assert isinstance(sign_enclave(bytes(32), key), Sigstruct)
