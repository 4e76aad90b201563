"""The PCK SGX extension: DER codec encodings, round trips, strict decoding, dcap-qvl agreement."""

from __future__ import annotations

import dcap_qvl
import pytest
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.attest.attest_world import World

from sgxsim.attest import PckExtension, SgxType, VerificationReason
from sgxsim.attest.pckext import (
    OID_PCESVN,
    OID_SGX_EXTENSION,
    DerError,
    der_boolean,
    der_enumerated,
    der_integer,
    der_octet_string,
    der_oid,
    der_read,
    der_sequence,
    oid_from_der,
)
from sgxsim.errors import InvalidArgument, VerificationError

FAST = settings(max_examples=150, deadline=None, database=None)


def test_der_writer_known_encodings() -> None:
    assert der_integer(0) == bytes.fromhex("020100")
    assert der_integer(127) == bytes.fromhex("02017f")
    assert der_integer(128) == bytes.fromhex("02020080")
    assert der_integer(255) == bytes.fromhex("020200ff")
    assert der_integer(256) == bytes.fromhex("02020100")
    assert der_enumerated(1) == bytes.fromhex("0a0101")
    assert der_boolean(True) == bytes.fromhex("0101ff") and der_boolean(False) == bytes.fromhex("010100")
    assert der_octet_string(bytes(200))[:3] == bytes.fromhex("0481c8")
    assert der_octet_string(bytes(300))[:4] == bytes.fromhex("0482012c")
    # Intel's SGX extension OID as it appears in real PCK certificates.
    assert der_oid(OID_SGX_EXTENSION) == bytes.fromhex("06092a864886f84d010d01")
    assert der_sequence(der_integer(1), der_integer(2)) == bytes.fromhex("3006020101020102")


@FAST
@given(st.lists(st.integers(0, 2**40), min_size=1, max_size=8), st.integers(0, 2), st.integers(0, 39))
def test_oid_round_trip(tail: list[int], first: int, second: int) -> None:
    dotted = ".".join(str(a) for a in [first, second, *tail])
    tag, content, end = der_read(der_oid(dotted))
    assert tag == 0x06 and end == len(der_oid(dotted))
    assert oid_from_der(content) == dotted


def test_der_reader_is_strict() -> None:
    with pytest.raises(DerError):
        der_read(bytes.fromhex("0480"))  # indefinite length
    with pytest.raises(DerError):
        der_read(bytes.fromhex("04810100"))  # long form for a short length
    with pytest.raises(DerError):
        der_read(bytes.fromhex("040500"))  # runs past the end
    with pytest.raises(DerError):
        der_read(bytes.fromhex("1f0100"))  # multi-byte tag


ext_strategy = st.builds(
    PckExtension,
    ppid=st.binary(min_size=16, max_size=16),
    tcb_components=st.tuples(*[st.integers(0, 255)] * 16),
    pcesvn=st.integers(0, 0xFFFF),
    cpusvn=st.binary(min_size=16, max_size=16),
    pce_id=st.binary(min_size=2, max_size=2),
    fmspc=st.binary(min_size=6, max_size=6),
    sgx_type=st.sampled_from(list(SgxType)),
    platform_instance_id=st.none() | st.binary(min_size=16, max_size=16),
    configuration=st.none() | st.tuples(st.booleans(), st.booleans(), st.booleans()),
)


@FAST
@given(ext_strategy)
def test_extension_round_trip(ext: PckExtension) -> None:
    assert PckExtension.decode(ext.encode()) == ext


@FAST
@given(st.binary(max_size=600))
def test_decode_arbitrary_bytes_never_raises_anything_else(data: bytes) -> None:
    try:
        PckExtension.decode(data)
    except VerificationError as exc:
        assert exc.reason is VerificationReason.MALFORMED_PCK_EXTENSION


@FAST
@given(ext_strategy, st.data())
def test_decode_mutations(ext: PckExtension, data: st.DataObject) -> None:
    raw = bytearray(ext.encode())
    pos = data.draw(st.integers(0, len(raw) - 1))
    raw[pos] ^= 1 << data.draw(st.integers(0, 7))
    try:
        got = PckExtension.decode(bytes(raw))
    except VerificationError as exc:
        assert exc.reason is VerificationReason.MALFORMED_PCK_EXTENSION
    else:
        assert got != ext  # a flip that still decodes must change a value


def test_decode_rejects_structural_defects() -> None:
    ext = PckExtension.for_tcb(ppid=bytes(16), cpusvn=bytes(16), pcesvn=1, pce_id=bytes(2), fmspc=bytes(6))
    raw = ext.encode()
    for bad in (raw[:-1], raw + b"\0", raw[:2] + raw[2:].replace(der_integer(1), bytes.fromhex("0202 0001"))):
        with pytest.raises(VerificationError) as info:
            PckExtension.decode(bad)
        assert info.value.reason is VerificationReason.MALFORMED_PCK_EXTENSION
    with pytest.raises(InvalidArgument):
        PckExtension.decode("x")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        PckExtension.for_tcb(ppid=bytes(15), cpusvn=bytes(16), pcesvn=1, pce_id=bytes(2), fmspc=bytes(6))


@pytest.mark.parametrize("ca", ["platform", "processor"])
def test_issued_certificate_extension_as_dcap_qvl_reads_it(ca: str) -> None:
    world = World.build(ca=ca)
    pck = world.pck("config")
    cert = pck.cert
    ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(OID_SGX_EXTENSION))
    assert not ext.critical
    assert isinstance(ext.value, x509.UnrecognizedExtension)
    assert PckExtension.decode(ext.value.value) == pck.extension
    theirs = dcap_qvl.parse_pck_extension_from_pem(pck.pem)
    ours = pck.extension
    assert (theirs.ppid, theirs.cpu_svn, theirs.pce_svn, theirs.pce_id, theirs.fmspc) == (
        ours.ppid,
        ours.cpusvn,
        ours.pcesvn,
        ours.pce_id,
        ours.fmspc,
    )
    assert theirs.get_value(OID_PCESVN) == der_integer(ours.pcesvn)[2:]
    if ca == "platform":
        assert theirs.sgx_type == SgxType.SCALABLE and theirs.platform_instance_id == bytes(16)
    else:
        assert theirs.sgx_type == SgxType.STANDARD and theirs.platform_instance_id is None
