"""Tests for sgxsim.hw.crypto: measurement, key derivation, CMAC, paging crypto, SIGSTRUCT RSA, keygen.

Expected values come from the reference notes (shared/reference/sgx-architecture.md sections 1.5,
4.4, 4.9/4.10, 4.14, 5), RFC 4493, and independent computations with hashlib / cryptography.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
import struct

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sgxsim.errors import InvalidArgument
from sgxsim.hw.arch import KeyName, SgxStatus, Sigstruct
from sgxsim.hw.crypto import (
    PKCS1_SHA256_PADDING,
    KeyDependencies,
    Measurement,
    aes_cmac,
    derive_key,
    ec_p256_keygen,
    eldu_open,
    ewb_seal,
    mrsigner,
    rsa3072_e3_keygen,
    sigstruct_sign,
    sigstruct_verify,
)

SLOW = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])

# ---------------------------------------------------------------------------------------------
# MRENCLAVE measurement
# ---------------------------------------------------------------------------------------------


def reference_mrenclave(size: int, ssa: int, pages: list[tuple[int, int, bytes, bool]]) -> bytes:
    """Reference section 5 pseudo-code, written out with struct formats as the signers do."""
    h = hashlib.sha256(struct.pack("<8sIQ44s", b"ECREATE", ssa, size, b""))
    for off, flags, data, measured in pages:
        h.update(struct.pack("<8sQQ40s", b"EADD", off, flags, b""))
        if measured:
            for i in range(0, 4096, 256):
                h.update(struct.pack("<8sQ48s", b"EEXTEND", off + i, b""))
                h.update(data[i : i + 256])
    return h.digest()


def block_by_block(size: int, ssa: int, pages: list[tuple[int, int, bytes, bool]]) -> Measurement:
    m = Measurement()
    m.ecreate(ssa, size)
    for off, flags, data, measured in pages:
        m.eadd(off, flags)
        if measured:
            for i in range(16):
                m.eextend(off + 256 * i, data[256 * i : 256 * (i + 1)])
    return m


def fast_path(size: int, ssa: int, pages: list[tuple[int, int, bytes, bool]]) -> Measurement:
    m = Measurement.ecreate(ssa, size)
    for page in pages:
        m.page(*page)
    return m


page_strategy = st.tuples(
    st.integers(0, (1 << 52) - 1).map(lambda p: p << 12),
    st.integers(0, (1 << 64) - 1),
    st.binary(min_size=16, max_size=16).map(lambda b: b * 256),
    st.booleans(),
)


@given(
    size=st.integers(0, (1 << 64) - 1),
    ssa=st.integers(0, (1 << 32) - 1),
    pages=st.lists(page_strategy, max_size=12),
)
@SLOW
def test_fast_path_equals_block_by_block_and_reference(
    size: int, ssa: int, pages: list[tuple[int, int, bytes, bool]]
) -> None:
    fast = fast_path(size, ssa, pages)
    slow = block_by_block(size, ssa, pages)
    expected_blocks = 1 + sum(81 if measured else 1 for *_, measured in pages)
    assert fast.update_count == slow.update_count == expected_blocks
    assert fast.finalize() == slow.finalize() == reference_mrenclave(size, ssa, pages)


def test_fast_path_across_batch_boundaries_and_interleaved_ops() -> None:
    rng = random.Random(7)
    # 600 measured pages in a row fill (and reuse) the 256-page batch buffer; then a mix.
    pages = [
        (
            i * 4096,
            rng.choice([0x203, 0x205, 0x100, 0x201]),
            rng.randbytes(4096),
            i < 600 or rng.random() < 0.8,
        )
        for i in range(900)
    ]
    fast = Measurement.ecreate(1, 1 << 24)
    for n, page in enumerate(pages):
        fast.page(*page)
        if n == 700:  # a block-by-block op between queued pages must keep the order
            fast.eadd(0x7FF000, 0x203)
            fast.eextend(0x7FF100, bytes(range(256)))
    expected = block_by_block(1 << 24, 1, pages[:701])
    expected.eadd(0x7FF000, 0x203)
    expected.eextend(0x7FF100, bytes(range(256)))
    for off, flags, data, measured in pages[701:]:
        expected.eadd(off, flags)
        for i in range(16 if measured else 0):
            expected.eextend(off + 256 * i, data[256 * i : 256 * (i + 1)])
    assert fast.update_count == expected.update_count
    assert fast.finalize() == expected.finalize()
    assert fast.finalize() != Measurement.ecreate(1, 1 << 24).finalize()


def test_update_count_counts_64_byte_blocks() -> None:
    m = Measurement.ecreate(1, 0x2000)
    assert m.update_count == 1
    m.eadd(0, 0x203)
    assert m.update_count == 2
    m.eextend(0x100, bytes(256))
    assert m.update_count == 7
    m.page(0x1000, 0x203, bytes(4096), True)
    assert m.update_count == 88  # one EADD + 16 x 5
    m.page(0x2000, 0x203, bytes(4096), False)
    assert m.update_count == 89


def test_ecreate_block_bytes_exact() -> None:
    m = Measurement.ecreate(0x11223344, 0x0102030405060708)
    block = b"ECREATE\0" + bytes.fromhex("44332211") + bytes.fromhex("0807060504030201") + bytes(44)
    assert len(block) == 64
    assert m.finalize() == hashlib.sha256(block).digest()


def test_ecreate_on_instance_reinitializes_and_returns_self() -> None:
    m = Measurement()
    m.page(0, 0x203, bytes(4096), True)
    assert m.ecreate(1, 0x2000) is m
    assert m.update_count == 1
    assert m.finalize() == Measurement.ecreate(1, 0x2000).finalize()


def test_copy_is_independent_and_finalize_is_repeatable() -> None:
    m = Measurement.ecreate(1, 0x4000)
    m.page(0, 0x203, b"\x01" * 4096, True)
    twin = m.copy()
    assert twin.finalize() == m.finalize() == m.finalize()
    m.page(0x1000, 0x203, b"\x02" * 4096, True)
    assert twin.finalize() != m.finalize()
    assert twin.update_count == 82
    assert m.update_count == 163


def test_page_accepts_bytes_like_and_copies_it() -> None:
    data = bytearray(b"\x5a" * 4096)
    m = Measurement.ecreate(1, 0x2000)
    m.page(0, 0x203, data, True)  # type: ignore[arg-type]  # bytes-like is accepted
    data[0] = 0  # mutating the caller's buffer after the call must not change the measurement
    assert m.finalize() == reference_mrenclave(0x2000, 1, [(0, 0x203, b"\x5a" * 4096, True)])


@pytest.mark.parametrize(
    ("offset", "flags", "data", "measured"),
    [
        (0x800, 0x203, bytes(4096), True),  # misaligned
        (-4096, 0x203, bytes(4096), True),  # negative
        (1 << 64, 0x203, bytes(4096), True),  # beyond u64
        (4096.0, 0x203, bytes(4096), True),  # float
        ("0", 0x203, bytes(4096), True),
        (0, 1 << 64, bytes(4096), True),  # flags beyond u64
        (0, -1, bytes(4096), True),
        (0, 0x203, bytes(4095), True),  # short page
        (0, 0x203, "x" * 4096, True),  # str is not bytes
        (0, 0x203, bytes(4096), 1),  # measured must be a bool
        (0, 0x203, bytes(4096), None),
    ],
)
def test_page_rejects_bad_arguments(offset: object, flags: object, data: object, measured: object) -> None:
    m = Measurement.ecreate(1, 0x2000)
    with pytest.raises(InvalidArgument):
        m.page(offset, flags, data, measured)  # type: ignore[arg-type]
    assert m.update_count == 1


def test_leaf_methods_reject_bad_arguments() -> None:
    m = Measurement()
    with pytest.raises(InvalidArgument):
        m.ecreate(1 << 32, 0x2000)
    with pytest.raises(InvalidArgument):
        m.ecreate(1, -1)
    with pytest.raises(InvalidArgument):
        m.eadd(0x10, 0x203)
    with pytest.raises(InvalidArgument):
        m.eadd(0, True)
    with pytest.raises(InvalidArgument):
        m.eextend(0x80, bytes(256))
    with pytest.raises(InvalidArgument):
        m.eextend(0x100, bytes(255))


# ---------------------------------------------------------------------------------------------
# Key derivation [MODEL]
# ---------------------------------------------------------------------------------------------

SECRET = bytes(range(32))
BASE = KeyDependencies(keyname=KeyName.SEAL, mrsigner=b"\x11" * 32, isvprodid=7, isvsvn=3)

INT_FIELDS = {"keyname": 16, "isvprodid": 16, "isvsvn": 16, "miscselect": 32, "miscmask": 32}
INT_FIELDS |= {"keypolicy": 16, "configsvn": 16}
BYTE_FIELDS = {"ownerepoch": 16, "attributes": 16, "attributemask": 16, "mrenclave": 32, "mrsigner": 32}
BYTE_FIELDS |= {"keyid": 32, "seal_fuses": 16, "cpusvn": 16, "padding": 352, "configid": 64}
BYTE_FIELDS |= {"isvextprodid": 16, "isvfamilyid": 16}


def test_keydependencies_has_every_sdm_field() -> None:
    names = {f.name for f in dataclasses.fields(KeyDependencies)}
    assert names == set(INT_FIELDS) | set(BYTE_FIELDS)


def test_derive_key_equal_inputs_equal_keys() -> None:
    key = derive_key(SECRET, BASE)
    assert len(key) == 16
    same = KeyDependencies(keyname=4, mrsigner=bytearray(b"\x11" * 32), isvprodid=7, isvsvn=3)  # type: ignore[arg-type]
    assert same == BASE
    assert derive_key(bytearray(SECRET), same) == key  # type: ignore[arg-type]


@st.composite
def changed_field(draw: st.DrawFn) -> tuple[str, object]:
    name = draw(st.sampled_from(sorted(INT_FIELDS) + sorted(BYTE_FIELDS)))
    old = getattr(BASE, name)
    if name in INT_FIELDS:
        value: object = draw(st.integers(0, (1 << INT_FIELDS[name]) - 1).filter(lambda v: v != old))
    else:
        size = BYTE_FIELDS[name]
        value = draw(st.binary(min_size=size, max_size=size).filter(lambda v: v != old))
    return name, value


@given(change=changed_field())
@SLOW
def test_derive_key_changing_any_field_changes_the_key(change: tuple[str, object]) -> None:
    name, value = change
    other = dataclasses.replace(BASE, **{name: value})  # type: ignore[arg-type]
    assert derive_key(SECRET, other) != derive_key(SECRET, BASE)


@given(secret=st.binary(min_size=1, max_size=64).filter(lambda s: s != SECRET))
@SLOW
def test_derive_key_depends_on_the_secret(secret: bytes) -> None:
    assert derive_key(secret, BASE) != derive_key(SECRET, BASE)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"keyname": 1 << 16},
        {"keyname": -1},
        {"keyname": True},
        {"isvsvn": "3"},
        {"miscmask": 1 << 32},
        {"mrenclave": bytes(31)},
        {"padding": b""},
        {"cpusvn": "0" * 16},
    ],
)
def test_keydependencies_rejects_bad_fields(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"keyname": 4} | kwargs
    with pytest.raises(InvalidArgument):
        KeyDependencies(**args)  # type: ignore[arg-type]


def test_derive_key_rejects_bad_arguments() -> None:
    with pytest.raises(InvalidArgument):
        derive_key(b"", BASE)
    with pytest.raises(InvalidArgument):
        derive_key("secret", BASE)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        derive_key(SECRET, "deps")  # type: ignore[arg-type]


def test_pkcs1_padding_is_the_sdm_hardcoded_constant() -> None:
    # SDM EGETKEY: HARDCODED_PKCS1_5_PADDING[15:0] = 0100H, [2655:16] = 330 x 0FFH,
    # [2815:2656] = 2004000501020403650148866009060D30313000H (little-endian in memory).
    expected = (
        (0x0100).to_bytes(2, "little")
        + b"\xff" * 330
        + (0x2004000501020403650148866009060D30313000).to_bytes(20, "little")
    )
    assert expected == PKCS1_SHA256_PADDING
    assert BASE.padding == expected


# ---------------------------------------------------------------------------------------------
# AES-CMAC (RFC 4493 section 4 examples)
# ---------------------------------------------------------------------------------------------

RFC4493_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
RFC4493_MSG = bytes.fromhex(
    "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710"
)


@pytest.mark.parametrize(
    ("length", "mac"),
    [
        (0, "bb1d6929e95937287fa37d129b756746"),
        (16, "070a16b46b4d4144f79bdd9dd04a287c"),
        (40, "dfa66747de9ae63030ca32611497c827"),
        (64, "51f0bebf7e3b9d92fc49741779363cfe"),
    ],
)
def test_aes_cmac_rfc4493(length: int, mac: str) -> None:
    assert aes_cmac(RFC4493_KEY, RFC4493_MSG[:length]) == bytes.fromhex(mac)


def test_aes_cmac_rejects_bad_key() -> None:
    with pytest.raises(InvalidArgument):
        aes_cmac(bytes(32), b"data")
    with pytest.raises(InvalidArgument):
        aes_cmac(RFC4493_KEY, "data")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# EWB / ELDU paging crypto
# ---------------------------------------------------------------------------------------------

PK = bytes.fromhex("000102030405060708090a0b0c0d0e0f")


@given(
    version=st.integers(0, (1 << 64) - 1),
    header=st.binary(max_size=128),
    page=st.binary(min_size=8, max_size=8).map(lambda b: b * 512),
)
@SLOW
def test_ewb_eldu_round_trip(version: int, header: bytes, page: bytes) -> None:
    ciphertext, mac = ewb_seal(PK, version, header, page)
    assert len(ciphertext) == 4096
    assert len(mac) == 16
    assert ciphertext != page
    assert eldu_open(PK, version, header, ciphertext, mac) == page


def test_ewb_uses_version_shifted_by_32_as_iv() -> None:
    page = bytes(range(256)) * 16
    ciphertext, mac = ewb_seal(PK, 0x1122334455667788, b"hdr", page)
    nonce = (0x1122334455667788 << 32).to_bytes(12, "little")
    assert ciphertext + mac == AESGCM(PK).encrypt(nonce, page, b"hdr")
    assert ewb_seal(PK, 0x1122334455667788, b"hdr", page) == (ciphertext, mac)  # deterministic


def test_eldu_open_authentication_failures_return_none() -> None:
    page = b"\xc3" * 4096
    header = b"\x02\x03" + bytes(62) + (0x7000_1000).to_bytes(8, "little") + bytes(56)
    ciphertext, mac = ewb_seal(PK, 5, header, page)
    assert eldu_open(PK, 5, header, ciphertext, mac) == page
    assert eldu_open(PK, 6, header, ciphertext, mac) is None  # wrong version (replay)
    assert eldu_open(PK, 5, header[:-1] + b"\x01", ciphertext, mac) is None  # wrong header
    assert eldu_open(PK, 5, header, ciphertext, bytes(a ^ 1 for a in mac[:1]) + mac[1:]) is None
    assert eldu_open(PK, 5, header, b"\x00" + ciphertext[1:], mac) is None
    assert eldu_open(bytes(16), 5, header, ciphertext, mac) is None  # wrong paging key


def test_paging_crypto_rejects_bad_lengths() -> None:
    with pytest.raises(InvalidArgument):
        ewb_seal(PK, 0, b"", bytes(4095))
    with pytest.raises(InvalidArgument):
        ewb_seal(bytes(32), 0, b"", bytes(4096))
    with pytest.raises(InvalidArgument):
        ewb_seal(PK, 1 << 64, b"", bytes(4096))
    with pytest.raises(InvalidArgument):
        eldu_open(PK, 0, b"", bytes(4096), bytes(15))
    with pytest.raises(InvalidArgument):
        eldu_open(PK, -1, b"", bytes(4096), bytes(16))


# ---------------------------------------------------------------------------------------------
# Deterministic keys
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa3072_e3_keygen(random.Random(1234))


def test_rsa_keygen_is_deterministic_and_well_formed(rsa_key: rsa.RSAPrivateKey) -> None:
    again = rsa3072_e3_keygen(random.Random(1234))
    other = rsa3072_e3_keygen(random.Random(1235))
    numbers = rsa_key.private_numbers()
    assert again.private_numbers() == numbers
    assert other.public_key().public_numbers().n != numbers.public_numbers.n
    assert rsa_key.key_size == 3072
    assert numbers.public_numbers.e == 3
    assert numbers.p.bit_length() == numbers.q.bit_length() == 1536
    assert numbers.p % 3 == 2 and numbers.q % 3 == 2
    assert numbers.p * numbers.q == numbers.public_numbers.n
    assert 3 * numbers.d % math.lcm(numbers.p - 1, numbers.q - 1) == 1
    signature = rsa_key.sign(b"msg", padding.PKCS1v15(), hashes.SHA256())
    rsa_key.public_key().verify(signature, b"msg", padding.PKCS1v15(), hashes.SHA256())


def test_keygen_is_stable_across_versions(rsa_key: rsa.RSAPrivateKey) -> None:
    # Pinned: golden outputs (MRSIGNER of every test enclave) depend on these staying the same.
    n = rsa_key.public_key().public_numbers().n
    assert mrsigner(n.to_bytes(384, "little")).hex() == (
        "038070d6509294caefa2688eae2ea877536e725ef674e3506ea96ad2c8cb649e"
    )
    scalar = ec_p256_keygen(random.Random(99)).private_numbers().private_value
    assert scalar == 0x221C4E003F9931EE3AF27F802DC5FD3D9974D75B333824FE61790134676B1B6A


def test_ec_keygen_is_deterministic() -> None:
    a = ec_p256_keygen(random.Random(99))
    b = ec_p256_keygen(random.Random(99))
    c = ec_p256_keygen(random.Random(100))
    assert isinstance(a.curve, ec.SECP256R1)
    assert a.private_numbers().private_value == b.private_numbers().private_value
    assert a.private_numbers().private_value != c.private_numbers().private_value
    signature = a.sign(b"msg", ec.ECDSA(hashes.SHA256()))
    b.public_key().verify(signature, b"msg", ec.ECDSA(hashes.SHA256()))


def test_keygen_needs_a_random_instance() -> None:
    with pytest.raises(InvalidArgument):
        rsa3072_e3_keygen(1234)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        ec_p256_keygen(None)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# SIGSTRUCT
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signed(rsa_key: rsa.RSAPrivateKey) -> Sigstruct:
    sig = Sigstruct(
        vendor=0x8086,
        date=0x20250131,
        swdefined=0xA5A5,
        miscselect=1,
        misc_mask=0xFFFFFFFF,
        isvfamilyid=b"\x01" * 16,
        attributes=0x6,
        xfrm=0x3,
        attributes_mask=0xFFFFFFFFFFFFFFFF,
        xfrm_mask=0xFFFFFFFFFFFFFFFB,
        mrenclave=hashlib.sha256(b"enclave").digest(),
        isvextprodid=b"\x02" * 16,
        isvprodid=0x1234,
        isvsvn=0x0007,
    )
    return sigstruct_sign(sig, rsa_key)


def test_sign_fills_modulus_exponent_signature_q1_q2(signed: Sigstruct, rsa_key: rsa.RSAPrivateKey) -> None:
    n = rsa_key.public_key().public_numbers().n
    s = int.from_bytes(signed.signature, "little")
    assert signed.modulus == n.to_bytes(384, "little")
    assert signed.exponent == 3
    assert int.from_bytes(signed.q1, "little") == s * s // n
    assert int.from_bytes(signed.q2, "little") == (s**3 - (s * s // n) * s * n) // n
    # The signature is standard RSASSA-PKCS1-v1_5 / SHA-256 over header||body, stored little-endian.
    rsa_key.public_key().verify(
        s.to_bytes(384, "big"), signed.signed_data(), padding.PKCS1v15(), hashes.SHA256()
    )
    raw = signed.pack()
    assert signed.signed_data() == raw[0:128] + raw[900:1028]
    # EINIT's PADDING (upper 352 bytes of the encoded message) is the hardcoded constant.
    assert pow(s, 3, n).to_bytes(384, "big")[:352] == PKCS1_SHA256_PADDING


def test_verify_round_trip(signed: Sigstruct) -> None:
    assert sigstruct_verify(signed) is SgxStatus.SUCCESS


def test_mrsigner_is_sha256_of_stored_modulus(signed: Sigstruct, rsa_key: rsa.RSAPrivateKey) -> None:
    n = rsa_key.public_key().public_numbers().n
    assert mrsigner(signed.modulus) == hashlib.sha256(n.to_bytes(384, "little")).digest()
    assert mrsigner(signed.modulus) != hashlib.sha256(n.to_bytes(384, "big")).digest()
    with pytest.raises(InvalidArgument):
        mrsigner(signed.modulus[:-1])


# Structural fields EINIT checks before the signature (reference 4.4 step 1): (start, end).
STRUCTURAL = [
    (0, 16),  # HEADER1 (incl. the SDK "type" word at 12..15)
    (16, 20),  # VENDOR
    (24, 40),  # HEADER2
    (44, 128),  # reserved1
    (512, 516),  # EXPONENT
    (908, 912),  # reserved2
    (992, 1008),  # reserved3
    (1028, 1040),  # reserved4
]


def expected_after_flip(offset: int) -> SgxStatus:
    if any(start <= offset < end for start, end in STRUCTURAL):
        return SgxStatus.SGX_INVALID_SIG_STRUCT
    return SgxStatus.SGX_INVALID_SIGNATURE


def flipped(sig: Sigstruct, offset: int, bit: int) -> Sigstruct:
    raw = bytearray(sig.pack())
    raw[offset] ^= 1 << bit
    return Sigstruct.unpack(bytes(raw))


def test_every_byte_flip_is_rejected_with_einits_code(signed: Sigstruct) -> None:
    outcomes: dict[SgxStatus, int] = {}
    for offset in range(Sigstruct.SIZE):
        outcome = sigstruct_verify(flipped(signed, offset, offset % 8))
        assert outcome == expected_after_flip(offset), offset
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    # Both signed regions (header 0..127, body 900..1027) and every unsigned part are covered.
    assert outcomes[SgxStatus.SGX_INVALID_SIGNATURE] == Sigstruct.SIZE - sum(e - s for s, e in STRUCTURAL)


@given(offset=st.integers(0, Sigstruct.SIZE - 1), bit=st.integers(0, 7))
@SLOW
def test_any_bit_flip_is_rejected(signed: Sigstruct, offset: int, bit: int) -> None:
    assert sigstruct_verify(flipped(signed, offset, bit)) == expected_after_flip(offset)


def test_bad_q1_q2_are_invalid_signature(signed: Sigstruct) -> None:
    q1 = int.from_bytes(signed.q1, "little")
    q2 = int.from_bytes(signed.q2, "little")
    for change in (
        {"q1": (q1 + 1).to_bytes(384, "little")},
        {"q1": (q1 - 1).to_bytes(384, "little")},
        {"q2": (q2 + 1).to_bytes(384, "little")},
        {"q2": (q2 - 1).to_bytes(384, "little")},
        {"q1": bytes(384), "q2": bytes(384)},
    ):
        assert sigstruct_verify(dataclasses.replace(signed, **change)) is SgxStatus.SGX_INVALID_SIGNATURE  # type: ignore[arg-type]


def test_signature_not_below_modulus_is_rejected(signed: Sigstruct, rsa_key: rsa.RSAPrivateKey) -> None:
    # s + n is congruent to s, so with q1/q2 recomputed for it only the "s < n" rule rejects it.
    # Find a body whose s + n and q1/q2 still fit the 384-byte fields (deterministic for this key).
    n = signed.modulus_int
    for isvsvn in range(2000):
        candidate = sigstruct_sign(dataclasses.replace(signed, isvsvn=isvsvn), rsa_key)
        s = candidate.signature_int + n
        q1 = s * s // n
        q2 = s * (s * s - q1 * n) // n
        if max(s, q1, q2) < 1 << 3072:
            break
    else:
        raise AssertionError("no representable s + n found")
    malleated = dataclasses.replace(
        candidate,
        signature=s.to_bytes(384, "little"),
        q1=q1.to_bytes(384, "little"),
        q2=q2.to_bytes(384, "little"),
    )
    assert pow(s, 3, n) == pow(candidate.signature_int, 3, n)  # would pass the RSA equation
    assert sigstruct_verify(candidate) is SgxStatus.SUCCESS
    assert sigstruct_verify(malleated) is SgxStatus.SGX_INVALID_SIGNATURE


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"vendor": 0}, SgxStatus.SGX_INVALID_SIGNATURE),  # valid vendor, but signed data changed
        ({"vendor": 0x8087}, SgxStatus.SGX_INVALID_SIG_STRUCT),
        ({"header1": b"\x07" + bytes(15)}, SgxStatus.SGX_INVALID_SIG_STRUCT),
        ({"header2": bytes(16)}, SgxStatus.SGX_INVALID_SIG_STRUCT),
        ({"exponent": 65537}, SgxStatus.SGX_INVALID_SIG_STRUCT),
        ({"reserved1": b"\x01" + bytes(83)}, SgxStatus.SGX_INVALID_SIG_STRUCT),
        ({"reserved4": bytes(11) + b"\x80"}, SgxStatus.SGX_INVALID_SIG_STRUCT),
        # Both wrong: the structure check comes first (EINIT order).
        ({"exponent": 1, "signature": bytes(384)}, SgxStatus.SGX_INVALID_SIG_STRUCT),
        ({"modulus": bytes(384)}, SgxStatus.SGX_INVALID_SIGNATURE),
    ],
)
def test_structure_checks_come_first(
    signed: Sigstruct, change: dict[str, object], expected: SgxStatus
) -> None:
    assert sigstruct_verify(dataclasses.replace(signed, **change)) is expected  # type: ignore[arg-type]


@pytest.mark.parametrize("vendor", [0x0000, 0x8086])
def test_both_vendors_verify(rsa_key: rsa.RSAPrivateKey, vendor: int) -> None:
    assert sigstruct_verify(sigstruct_sign(Sigstruct(vendor=vendor), rsa_key)) is SgxStatus.SUCCESS


def test_all_zero_sigstruct_never_raises() -> None:
    assert sigstruct_verify(Sigstruct()) is SgxStatus.SGX_INVALID_SIGNATURE
    assert sigstruct_verify(Sigstruct(header1=bytes(16))) is SgxStatus.SGX_INVALID_SIG_STRUCT
    with pytest.raises(InvalidArgument):
        sigstruct_verify(Sigstruct().pack())  # type: ignore[arg-type]


def test_sign_rejects_keys_that_are_not_rsa3072_e3(rsa_key: rsa.RSAPrivateKey) -> None:
    numbers = rsa_key.private_numbers()
    p, q = numbers.p, numbers.q
    d = pow(65537, -1, (p - 1) * (q - 1))
    e65537 = rsa.RSAPrivateNumbers(
        p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q),
        rsa.RSAPublicNumbers(65537, p * q),
    ).private_key()  # fmt: skip
    with pytest.raises(InvalidArgument):
        sigstruct_sign(Sigstruct(), e65537)
    q_small = 1_000_000_007  # prime, = 2 (mod 3): an e=3 key that is not 3072 bits
    d_small = pow(3, -1, math.lcm(p - 1, q_small - 1))
    small = rsa.RSAPrivateNumbers(
        p, q_small, d_small, rsa.rsa_crt_dmp1(d_small, p), rsa.rsa_crt_dmq1(d_small, q_small),
        rsa.rsa_crt_iqmp(p, q_small), rsa.RSAPublicNumbers(3, p * q_small),
    ).private_key(unsafe_skip_rsa_key_validation=True)  # fmt: skip
    assert small.key_size != 3072
    with pytest.raises(InvalidArgument):
        sigstruct_sign(Sigstruct(), small)
    with pytest.raises(InvalidArgument):
        sigstruct_sign(Sigstruct(), ec_p256_keygen(random.Random(1)))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        sigstruct_sign(Sigstruct().pack(), rsa_key)  # type: ignore[arg-type]


def test_signature_verifies_with_cryptography_after_body_change_fails(signed: Sigstruct) -> None:
    changed = dataclasses.replace(signed, isvsvn=signed.isvsvn + 1)
    with pytest.raises(InvalidSignature):
        rsa.RSAPublicNumbers(3, signed.modulus_int).public_key().verify(
            signed.signature_int.to_bytes(384, "big"),
            changed.signed_data(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    assert sigstruct_verify(changed) is SgxStatus.SGX_INVALID_SIGNATURE


# -- Measurement.eadd_many ----------------------------------------------------------------


@given(
    st.lists(
        st.tuples(st.sampled_from(["eadd", "many", "page"]), st.lists(st.integers(0, 4095), max_size=40)),
        max_size=8,
    ),
    st.sampled_from([0x203, 0x201, 0x100]),
)
@settings(max_examples=60, deadline=None)
def test_eadd_many_equals_eadd_per_offset(ops: list[tuple[str, list[int]]], flags: int) -> None:
    """Any mix of eadd_many, eadd and measured pages gives the digest and update count of the
    one-block-at-a-time sequence."""
    import numpy as np

    from sgxsim.hw.crypto import Measurement

    a = Measurement.ecreate(1, 1 << 24)
    b = Measurement.ecreate(1, 1 << 24)
    for kind, pages in ops:
        offs = [p * 4096 for p in pages]
        if kind == "many":
            a.eadd_many(np.array(offs, dtype=np.int64), flags)
            for off in offs:
                b.eadd(off, flags)
        elif kind == "eadd":
            for off in offs:
                a.eadd(off, flags)
                b.eadd(off, flags)
        else:
            for off in offs[:3]:
                data = bytes([off & 0xFF]) * 4096
                a.page(off, flags, data, True)
                b.eadd(off, flags)
                for chunk in range(0, 4096, 256):
                    b.eextend(off + chunk, data[chunk : chunk + 256])
    assert a.update_count == b.update_count
    assert a.finalize() == b.finalize()


def test_eadd_many_rejects_bad_offsets_without_hashing() -> None:
    import numpy as np

    from sgxsim.errors import InvalidArgument
    from sgxsim.hw.crypto import Measurement

    m = Measurement.ecreate(1, 1 << 20)
    before = m.copy().finalize()
    for bad in ([0, 4097], [-4096], [True]):
        with pytest.raises(InvalidArgument):
            m.eadd_many(bad, 0x203)
    with pytest.raises(InvalidArgument):
        m.eadd_many(np.zeros((2, 2), dtype=np.int64), 0x203)
    m.eadd_many([], 0x203)
    assert m.copy().finalize() == before and m.update_count == 1


def test_pipelined_batches_equal_the_sequential_measurement() -> None:
    """Past the first full batch a measurement hashes batches on its own thread; interleaved
    copy(), eadd(), eextend() and finalize() still see exactly the block-by-block state."""
    from sgxsim.hw.crypto import Measurement

    rnd = random.Random(7)
    fast = Measurement.ecreate(1, 1 << 30)
    slow = Measurement.ecreate(1, 1 << 30)
    peeks = []
    for i in range(3 * 512 + 100):
        data = rnd.randbytes(4096)
        fast.page(i * 4096, 0x203, data, True)
        slow.eadd(i * 4096, 0x203)
        for c in range(0, 4096, 256):
            slow.eextend(i * 4096 + c, data[c : c + 256])
        if i in (700, 1300):
            peeks.append((fast.copy().finalize(), slow.copy().finalize(), fast.update_count))
        if i == 1000:
            fast.eadd(0x7FFF000, 0x201)
            slow.eadd(0x7FFF000, 0x201)
    assert all(a == b for a, b, _ in peeks)
    assert fast.update_count == slow.update_count
    assert fast.finalize() == slow.finalize()
    # finalize() does not consume: more pages continue from the same state.
    fast.page(0x8000000, 0x203, bytes(4096), True)
    slow.eadd(0x8000000, 0x203)
    for c in range(0, 4096, 256):
        slow.eextend(0x8000000 + c, bytes(256))
    assert fast.finalize() == slow.finalize()
