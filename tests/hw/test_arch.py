"""Tests for sgxsim.hw.arch: numbers and byte layouts against the reference tables.

The expected offsets below are transcribed from shared/reference/sgx-architecture.md
(sections 1.1-1.6, 4, 5), not derived from arch.py's own layout tables.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgxsim.errors import InvalidArgument
from sgxsim.hw import arch
from sgxsim.hw.arch import (
    CPUSVN_SIZE,
    INFO_STATUSES,
    Attributes,
    EinitToken,
    EnclsLeaf,
    EncluLeaf,
    Fault,
    KeyName,
    KeyPolicy,
    Keyrequest,
    MiscExinfo,
    Pageinfo,
    PageType,
    Pcmd,
    PfError,
    Report,
    Secinfo,
    SecinfoFlags,
    Secs,
    SgxStatus,
    Sigstruct,
    SsaGpr,
    Targetinfo,
    Tcs,
    Vector,
)

# ---------------------------------------------------------------------------------------------
# Reference layouts: (field, offset, size, kind) with kind "u" (little-endian unsigned) or "b" (bytes)
# ---------------------------------------------------------------------------------------------

GPR_NAMES = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9",
    "r10", "r11", "r12", "r13", "r14", "r15", "rflags", "rip", "ursp", "urbp",
]  # fmt: skip

REF: dict[type, list[tuple[str, int, int, str]]] = {
    Secs: [
        ("size", 0, 8, "u"),
        ("base", 8, 8, "u"),
        ("ssa_frame_size", 16, 4, "u"),
        ("miscselect", 20, 4, "u"),
        ("reserved1", 24, 24, "b"),
        ("attributes", 48, 8, "u"),
        ("xfrm", 56, 8, "u"),
        ("mrenclave", 64, 32, "b"),
        ("reserved2", 96, 32, "b"),
        ("mrsigner", 128, 32, "b"),
        ("reserved3", 160, 32, "b"),
        ("config_id", 192, 64, "b"),
        ("isv_prod_id", 256, 2, "u"),
        ("isv_svn", 258, 2, "u"),
        ("config_svn", 260, 2, "u"),
        ("reserved4", 262, 3834, "b"),
    ],
    Tcs: [
        ("state", 0, 8, "u"),
        ("flags", 8, 8, "u"),
        ("ossa", 16, 8, "u"),
        ("cssa", 24, 4, "u"),
        ("nssa", 28, 4, "u"),
        ("oentry", 32, 8, "u"),
        ("aep", 40, 8, "u"),
        ("ofsbase", 48, 8, "u"),
        ("ogsbase", 56, 8, "u"),
        ("fslimit", 64, 4, "u"),
        ("gslimit", 68, 4, "u"),
        ("reserved", 72, 4024, "b"),
    ],
    Secinfo: [("flags", 0, 8, "u"), ("reserved", 8, 56, "b")],
    Pageinfo: [("linaddr", 0, 8, "u"), ("srcpge", 8, 8, "u"), ("secinfo", 16, 8, "u"), ("secs", 24, 8, "u")],
    Pcmd: [
        ("secinfo", 0, 64, "secinfo"),
        ("enclave_id", 64, 8, "u"),
        ("reserved", 72, 40, "b"),
        ("mac", 112, 16, "b"),
    ],
    Sigstruct: [
        ("header1", 0, 16, "b"),
        ("vendor", 16, 4, "u"),
        ("date", 20, 4, "u"),
        ("header2", 24, 16, "b"),
        ("swdefined", 40, 4, "u"),
        ("reserved1", 44, 84, "b"),
        ("modulus", 128, 384, "b"),
        ("exponent", 512, 4, "u"),
        ("signature", 516, 384, "b"),
        ("miscselect", 900, 4, "u"),
        ("misc_mask", 904, 4, "u"),
        ("reserved2", 908, 4, "b"),
        ("isvfamilyid", 912, 16, "b"),
        ("attributes", 928, 8, "u"),
        ("xfrm", 936, 8, "u"),
        ("attributes_mask", 944, 8, "u"),
        ("xfrm_mask", 952, 8, "u"),
        ("mrenclave", 960, 32, "b"),
        ("reserved3", 992, 16, "b"),
        ("isvextprodid", 1008, 16, "b"),
        ("isvprodid", 1024, 2, "u"),
        ("isvsvn", 1026, 2, "u"),
        ("reserved4", 1028, 12, "b"),
        ("q1", 1040, 384, "b"),
        ("q2", 1424, 384, "b"),
    ],
    EinitToken: [
        ("valid", 0, 4, "u"),
        ("reserved1", 4, 44, "b"),
        ("attributes", 48, 8, "u"),
        ("xfrm", 56, 8, "u"),
        ("mrenclave", 64, 32, "b"),
        ("reserved2", 96, 32, "b"),
        ("mrsigner", 128, 32, "b"),
        ("reserved3", 160, 32, "b"),
        ("cpusvnle", 192, 16, "b"),
        ("isvprodidle", 208, 2, "u"),
        ("isvsvnle", 210, 2, "u"),
        ("reserved4", 212, 24, "b"),
        ("maskedmiscselectle", 236, 4, "u"),
        ("maskedattributesle", 240, 8, "u"),
        ("maskedxfrmle", 248, 8, "u"),
        ("keyid", 256, 32, "b"),
        ("mac", 288, 16, "b"),
    ],
    Report: [
        ("cpusvn", 0, 16, "b"),
        ("miscselect", 16, 4, "u"),
        ("reserved1", 20, 12, "b"),
        ("isvextprodid", 32, 16, "b"),
        ("attributes", 48, 8, "u"),
        ("xfrm", 56, 8, "u"),
        ("mrenclave", 64, 32, "b"),
        ("reserved2", 96, 32, "b"),
        ("mrsigner", 128, 32, "b"),
        ("reserved3", 160, 32, "b"),
        ("configid", 192, 64, "b"),
        ("isvprodid", 256, 2, "u"),
        ("isvsvn", 258, 2, "u"),
        ("configsvn", 260, 2, "u"),
        ("reserved4", 262, 42, "b"),
        ("isvfamilyid", 304, 16, "b"),
        ("reportdata", 320, 64, "b"),
        ("keyid", 384, 32, "b"),
        ("mac", 416, 16, "b"),
    ],
    Targetinfo: [
        ("measurement", 0, 32, "b"),
        ("attributes", 32, 8, "u"),
        ("xfrm", 40, 8, "u"),
        ("reserved1", 48, 2, "b"),
        ("config_svn", 50, 2, "u"),
        ("miscselect", 52, 4, "u"),
        ("reserved2", 56, 8, "b"),
        ("config_id", 64, 64, "b"),
        ("reserved3", 128, 384, "b"),
    ],
    Keyrequest: [
        ("keyname", 0, 2, "u"),
        ("keypolicy", 2, 2, "u"),
        ("isvsvn", 4, 2, "u"),
        ("reserved1", 6, 2, "u"),
        ("cpusvn", 8, 16, "b"),
        ("attributemask", 24, 8, "u"),
        ("xfrmmask", 32, 8, "u"),
        ("keyid", 40, 32, "b"),
        ("miscmask", 72, 4, "u"),
        ("configsvn", 76, 2, "u"),
        ("reserved2", 78, 434, "b"),
    ],
    SsaGpr: [
        *[(name, 8 * i, 8, "u") for i, name in enumerate(GPR_NAMES)],
        ("exitinfo", 160, 4, "u"),
        ("reserved", 164, 4, "u"),
        ("fsbase", 168, 8, "u"),
        ("gsbase", 176, 8, "u"),
    ],
    MiscExinfo: [("maddr", 0, 8, "u"), ("errcd", 8, 4, "u"), ("reserved", 12, 4, "u")],
}

SIZES = {
    Secs: 4096,
    Tcs: 4096,
    Secinfo: 64,
    Pageinfo: 32,
    Pcmd: 128,
    Sigstruct: 1808,
    EinitToken: 304,
    Report: 432,
    Targetinfo: 512,
    Keyrequest: 512,
    SsaGpr: 184,
    MiscExinfo: 16,
}

STRUCTS = list(REF)
ids = [c.__name__ for c in STRUCTS]


def _marker(offset: int, size: int) -> bytes:
    """Bytes that encode their own absolute offset: byte k of the structure is (k % 251) + 1."""
    return bytes((k % 251) + 1 for k in range(offset, offset + size))


def _value(kind: str, raw: bytes) -> Any:
    if kind == "u":
        return int.from_bytes(raw, "little")
    if kind == "secinfo":
        return Secinfo(flags=int.from_bytes(raw[:8], "little"), reserved=raw[8:])
    return raw


def _zero_kwargs(cls: type) -> dict[str, Any]:
    return {name: _value(kind, bytes(size)) for name, _, size, kind in REF[cls]}


# ---------------------------------------------------------------------------------------------
# Sizes and offsets
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", STRUCTS, ids=ids)
def test_size_and_field_list_match_reference(cls: Any) -> None:
    expected_size = SIZES[cls]
    assert expected_size == cls.SIZE
    assert len(cls().pack()) == SIZES[cls]
    assert [f.name for f in dataclasses.fields(cls)] == [name for name, *_ in REF[cls]]
    # The reference fields tile the structure exactly.
    end = 0
    for _, offset, size, _ in REF[cls]:
        assert offset == end
        end += size
    assert end == SIZES[cls]
    assert [(f.offset, f.size) for f in cls.FIELDS] == [(o, s) for _, o, s, _ in REF[cls]]


@pytest.mark.parametrize("cls", STRUCTS, ids=ids)
def test_every_field_lands_at_its_reference_offset(cls: Any) -> None:
    kwargs = {name: _value(kind, _marker(offset, size)) for name, offset, size, kind in REF[cls]}
    raw = cls(**kwargs).pack()
    assert raw == _marker(0, cls.SIZE)
    assert cls.unpack(raw) == cls(**kwargs)


@pytest.mark.parametrize("cls", STRUCTS, ids=ids)
def test_each_field_alone_touches_only_its_bytes(cls: Any) -> None:
    for name, offset, size, kind in REF[cls]:
        kwargs = _zero_kwargs(cls)
        kwargs[name] = _value(kind, _marker(offset, size))
        raw = cls(**kwargs).pack()
        assert raw[offset : offset + size] == _marker(offset, size), name
        assert raw[:offset] == bytes(offset), name
        assert raw[offset + size :] == bytes(cls.SIZE - offset - size), name
        assert cls.offsetof(name) == offset


def test_named_offsets_from_the_reference() -> None:
    raw = Secs(isv_svn=0xBEEF).pack()
    assert raw[258:260] == b"\xef\xbe"
    raw = Sigstruct(mrenclave=b"\xaa" * 32).pack()
    assert raw[960:992] == b"\xaa" * 32
    raw = Report(mac=b"\x5a" * 16).pack()
    assert raw[416:432] == b"\x5a" * 16
    raw = Targetinfo(miscselect=0x11223344).pack()
    assert raw[52:56] == bytes.fromhex("44332211")
    raw = Keyrequest(cpusvn=bytes(range(1, 17))).pack()
    assert raw[8:24] == bytes(range(1, 17))
    raw = Secs(size=0x2000, base=0x7000_0000, ssa_frame_size=1).pack()
    assert struct.unpack_from("<QQI", raw) == (0x2000, 0x7000_0000, 1)
    raw = Tcs(ossa=0x1000, cssa=2, nssa=3, oentry=0x40).pack()
    assert struct.unpack_from("<QIIQ", raw, 16) == (0x1000, 2, 3, 0x40)
    raw = SsaGpr(exitinfo=0x8000030E, rip=0x1234).pack()
    assert raw[160:164] == bytes.fromhex("0e030080")
    assert raw[136:144] == (0x1234).to_bytes(8, "little")
    raw = EinitToken(valid=1, mac=b"\x77" * 16).pack()
    assert raw[:4] == b"\x01\x00\x00\x00" and raw[288:] == b"\x77" * 16


# ---------------------------------------------------------------------------------------------
# Hypothesis round trips
# ---------------------------------------------------------------------------------------------


def _bytes_strategy(size: int) -> st.SearchStrategy[bytes]:
    if size <= 64:
        return st.binary(min_size=size, max_size=size)

    # Large arrays: zeros with a short random pattern somewhere (keeps hypothesis buffers small).
    def place(args: tuple[int, bytes]) -> bytes:
        pos, pat = args
        out = bytearray(size)
        pat = pat[: size - pos]
        out[pos : pos + len(pat)] = pat
        return bytes(out)

    return st.tuples(st.integers(0, size - 1), st.binary(max_size=24)).map(place)


def _field_strategy(size: int, kind: str) -> st.SearchStrategy[Any]:
    if kind == "u":
        return st.integers(0, (1 << (8 * size)) - 1)
    if kind == "secinfo":
        return st.builds(Secinfo, flags=st.integers(0, (1 << 64) - 1), reserved=_bytes_strategy(56))
    return _bytes_strategy(size)


def _struct_strategy(cls: Any) -> st.SearchStrategy[Any]:
    return st.builds(cls, **{name: _field_strategy(size, kind) for name, _, size, kind in REF[cls]})


def _raw_strategy(size: int) -> st.SearchStrategy[bytes]:
    def build(edits: dict[int, int]) -> bytes:
        out = bytearray(size)
        for pos, val in edits.items():
            out[pos] = val
        return bytes(out)

    if size <= 512:
        return st.binary(min_size=size, max_size=size)
    return st.dictionaries(st.integers(0, size - 1), st.integers(0, 255), max_size=48).map(build)


@pytest.mark.parametrize("cls", STRUCTS, ids=ids)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_unpack_pack_round_trip(cls: Any, data: st.DataObject) -> None:
    obj = data.draw(_struct_strategy(cls))
    raw = obj.pack()
    assert isinstance(raw, bytes) and len(raw) == cls.SIZE
    assert cls.unpack(raw) == obj
    assert cls.unpack(bytearray(raw)) == obj
    assert cls.unpack(memoryview(raw)) == obj
    assert cls.unpack_from(b"\xff" * 5 + raw + b"\xff", 5) == obj


@pytest.mark.parametrize("cls", STRUCTS, ids=ids)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_pack_unpack_is_byte_exact(cls: Any, data: st.DataObject) -> None:
    raw = data.draw(_raw_strategy(cls.SIZE))
    assert cls.unpack(raw).pack() == raw


# ---------------------------------------------------------------------------------------------
# Misuse raises InvalidArgument
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", STRUCTS, ids=ids)
def test_unpack_rejects_wrong_type_and_length(cls: Any) -> None:
    good = bytes(cls.SIZE)
    for bad in (good[:-1], good + b"\0", b""):
        with pytest.raises(InvalidArgument, match=str(cls.SIZE)):
            cls.unpack(bad)
    for bad_type in ("x" * cls.SIZE, list(good), None, 0):
        with pytest.raises(InvalidArgument):
            cls.unpack(bad_type)
    with pytest.raises(InvalidArgument):
        cls.unpack_from(good, 1)
    with pytest.raises(InvalidArgument):
        cls.unpack_from(good, -1)


@pytest.mark.parametrize("cls", STRUCTS, ids=ids)
def test_constructor_rejects_bad_field_values(cls: Any) -> None:
    for name, _, size, kind in REF[cls]:
        if kind == "u":
            bad_values: list[Any] = [-1, 1 << (8 * size), True, "1", 1.0, None]
        elif kind == "b":
            bad_values = [bytes(size + 1), bytes(size - 1) if size > 1 else b"", "x" * size, None, 0]
        else:
            bad_values = [bytes(63), 0, None]
        for bad in bad_values:
            with pytest.raises(InvalidArgument, match=name):
                cls(**{name: bad})


def test_constructor_normalizes_buffers_and_int_subclasses() -> None:
    s = Secs(mrenclave=bytearray(32), attributes=Attributes.DEBUG | Attributes.MODE64BIT)  # type: ignore[arg-type]
    assert type(s.mrenclave) is bytes and type(s.attributes) is int and s.attributes == 6
    hash(s)  # frozen, hashable
    p = Pcmd(secinfo=Secinfo(flags=0x203).pack())  # type: ignore[arg-type]
    assert p.secinfo == Secinfo(flags=0x203)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.size = 1  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# reserved_ok
# ---------------------------------------------------------------------------------------------

RESERVED_BYTES: dict[type, list[str]] = {
    Secs: ["reserved1", "reserved2", "reserved3", "reserved4"],
    Tcs: ["reserved"],
    Secinfo: ["reserved"],
    Sigstruct: ["reserved1", "reserved2", "reserved3", "reserved4"],
    EinitToken: ["reserved1", "reserved2", "reserved3", "reserved4"],
    Targetinfo: ["reserved1", "reserved2", "reserved3"],
    Keyrequest: ["reserved2"],
}


@pytest.mark.parametrize("cls", list(RESERVED_BYTES), ids=[c.__name__ for c in RESERVED_BYTES])
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_reserved_ok_detects_any_nonzero_reserved_byte(cls: Any, data: st.DataObject) -> None:
    assert cls().reserved_ok()
    name = data.draw(st.sampled_from(RESERVED_BYTES[cls]))
    size = len(getattr(cls(), name))
    pos = data.draw(st.integers(0, size - 1))
    val = data.draw(st.integers(1, 255))
    buf = bytearray(size)
    buf[pos] = val
    assert not cls(**{name: bytes(buf)}).reserved_ok()


def test_reserved_ok_integer_and_flag_parts() -> None:
    assert not Keyrequest(reserved1=1).reserved_ok()
    assert Keyrequest(keyname=KeyName.SEAL, keypolicy=0x3F, cpusvn=b"\xff" * 16).reserved_ok()
    # TCS.FLAGS: DBGOPTIN (bit 0) and AEXNOTIFY (bit 1) are defined; bits 63:2 are reserved.
    assert Tcs(flags=arch.SGX_TCS_DBGOPTIN, ossa=0x1000, nssa=2).reserved_ok()
    assert Tcs(flags=arch.SGX_TCS_AEXNOTIFY | arch.SGX_TCS_DBGOPTIN).reserved_ok()
    for bit in (2, 3, 31, 63):
        assert not Tcs(flags=1 << bit).reserved_ok()
    # EINITTOKEN.VALID: bits 31:1 are reserved.
    assert EinitToken(valid=1).reserved_ok()
    assert not EinitToken(valid=2).reserved_ok()
    assert not EinitToken(valid=0x8000_0000).reserved_ok()
    # SECINFO.FLAGS: bits 7:6 and 63:16 reserved; R/W/X, PENDING/MODIFIED/PR, PAGE_TYPE are not.
    assert Secinfo(flags=0xFF3F).reserved_ok()
    for bit in (6, 7, 16, 40, 63):
        assert not Secinfo(flags=1 << bit).reserved_ok()
    # Non-reserved fields never count, even when set to all ones.
    assert Sigstruct(isvfamilyid=b"\xff" * 16, isvextprodid=b"\xff" * 16, swdefined=0xFFFFFFFF).reserved_ok()
    assert Targetinfo(measurement=b"\x01" * 32, config_svn=0xFFFF, config_id=b"\x02" * 64).reserved_ok()
    assert Secs(
        size=1 << 40, mrenclave=b"\x01" * 32, mrsigner=b"\x02" * 32, config_id=b"\x03" * 64
    ).reserved_ok()


# ---------------------------------------------------------------------------------------------
# Structure helpers
# ---------------------------------------------------------------------------------------------


def test_sigstruct_defaults_signed_data_and_header() -> None:
    sig = Sigstruct()
    raw = sig.pack()
    assert raw[0:16] == bytes.fromhex("06000000E10000000000010000000000")
    assert raw[24:40] == bytes.fromhex("01010000600000006000000001000000")
    # Same constants as the selftests' u64 pairs.
    assert struct.unpack("<QQ", arch.SIGSTRUCT_HEADER1) == (0x000000E100000006, 0x0000000000010000)
    assert struct.unpack("<QQ", arch.SIGSTRUCT_HEADER2) == (0x0000006000000101, 0x0000000100000060)
    assert raw[512:516] == b"\x03\x00\x00\x00"
    assert sig.header_ok() and sig.reserved_ok()
    assert not Sigstruct(vendor=0x8087).header_ok()
    assert Sigstruct(vendor=0x8086).header_ok()
    assert not Sigstruct(exponent=65537).header_ok()
    assert not Sigstruct(header2=bytes(16)).header_ok()

    full = Sigstruct(**{n: _value(k, _marker(o, s)) for n, o, s, k in REF[Sigstruct]})
    full_raw = full.pack()
    signed = full.signed_data()
    assert len(signed) == 256
    assert signed == full_raw[0:128] + full_raw[900:1028]
    # Unsigned parts (modulus, exponent, signature, reserved4, q1, q2) do not affect signed data.
    assert dataclasses.replace(full, modulus=b"\x01" * 384, q1=bytes(384), exponent=3).signed_data() == signed
    assert dataclasses.replace(full, isvsvn=1).signed_data() != signed

    dbg = Sigstruct(header1=arch.SIGSTRUCT_HEADER1[:12] + (1 << 31).to_bytes(4, "little"))
    assert dbg.debug and dbg.type == 0x8000_0000 and not dbg.header_ok()
    assert not sig.debug and sig.type == 0
    assert Sigstruct(modulus=(5).to_bytes(384, "little")).modulus_int == 5
    assert Sigstruct(signature=b"\x01" + bytes(383)).signature_int == 1


def test_report_and_token_bodies() -> None:
    rep = Report(**{n: _value(k, _marker(o, s)) for n, o, s, k in REF[Report]})
    assert rep.body() == rep.pack()[:384] and len(rep.body()) == 384
    assert dataclasses.replace(rep, mac=bytes(16), keyid=bytes(32)).body() == rep.body()
    tok = EinitToken(**{n: _value(k, _marker(o, s)) for n, o, s, k in REF[EinitToken]})
    assert tok.body() == tok.pack()[:192]


def test_secinfo_and_pageinfo_helpers() -> None:
    assert arch.secinfo_flags(PageType.PT_REG, SecinfoFlags.R | SecinfoFlags.W) == 0x203
    assert arch.secinfo_flags(PageType.PT_TCS) == 0x100
    assert arch.secinfo_flags(PageType.PT_TRIM, 0, SecinfoFlags.MODIFIED) == 0x410
    assert arch.secinfo_flags(PageType.PT_REG, 7, 0x38) == 0x23F
    for args in ((256,), (-1,), (2, 8), (2, 0, 0x40), (2, 0, 1), ("2",), (True,)):
        with pytest.raises(InvalidArgument):
            arch.secinfo_flags(*args)
    assert arch.secinfo_page_type(0x0000_0000_0003_0405) == 4
    si = Secinfo(flags=arch.secinfo_flags(PageType.PT_REG, 5))
    assert si.page_type == PageType.PT_REG and si.perms == 5
    assert arch.SECINFO_PERMISSION_MASK == 0x7 and arch.SECINFO_PAGE_TYPE_MASK == 0xFF00
    assert arch.SECINFO_RESERVED_MASK == 0xFFFF_FFFF_FFFF_00F8
    assert (
        SecinfoFlags.PENDING | SecinfoFlags.MODIFIED | SecinfoFlags.PR
    ) & arch.SECINFO_RESERVED_MASK == 0x38
    pi = Pageinfo(linaddr=1, srcpge=2, secinfo=0x80, secs=4)
    assert pi.pcmd == pi.metadata == 0x80


def test_ssa_exitinfo() -> None:
    info = arch.ssa_exitinfo(Vector.PF, arch.SSA_EXIT_TYPE_HARDWARE)
    assert info == 0x8000_030E
    gpr = SsaGpr(exitinfo=info)
    assert gpr.exit_vector == 14 and gpr.exit_type == 3 and gpr.exit_valid
    assert arch.ssa_exitinfo(Vector.BP, arch.SSA_EXIT_TYPE_SOFTWARE, valid=False) == 0x603
    assert not SsaGpr(exitinfo=0x603).exit_valid
    for bad in ((256, 3), (14, 8), (-1, 3), (14, -1)):
        with pytest.raises(InvalidArgument):
            arch.ssa_exitinfo(*bad)


# ---------------------------------------------------------------------------------------------
# Enums and constants against the reference tables
# ---------------------------------------------------------------------------------------------


def test_encls_leaf_numbers() -> None:
    expected = {
        "ECREATE": 0x00, "EADD": 0x01, "EINIT": 0x02, "EREMOVE": 0x03, "EDBGRD": 0x04,
        "EDBGWR": 0x05, "EEXTEND": 0x06, "ELDB": 0x07, "ELDU": 0x08, "EBLOCK": 0x09,
        "EPA": 0x0A, "EWB": 0x0B, "ETRACK": 0x0C, "EAUG": 0x0D, "EMODPR": 0x0E,
        "EMODT": 0x0F, "ELDBC": 0x12, "ELDUC": 0x13, "EUPDATESVN": 0x18,
    }  # fmt: skip
    assert {m.name: m.value for m in EnclsLeaf} == expected


def test_enclu_leaf_numbers() -> None:
    expected = {
        "EREPORT": 0, "EGETKEY": 1, "EENTER": 2, "ERESUME": 3, "EEXIT": 4,
        "EACCEPT": 5, "EMODPE": 6, "EACCEPTCOPY": 7, "EDECCSSA": 9,
    }  # fmt: skip
    assert {m.name: m.value for m in EncluLeaf} == expected


def test_return_codes() -> None:
    expected = {
        "SUCCESS": 0, "SGX_INVALID_SIG_STRUCT": 1, "SGX_INVALID_ATTRIBUTE": 2, "SGX_BLKSTATE": 3,
        "SGX_INVALID_MEASUREMENT": 4, "SGX_NOTBLOCKABLE": 5, "SGX_PG_INVLD": 6,
        "SGX_EPC_PAGE_CONFLICT": 7, "SGX_INVALID_SIGNATURE": 8, "SGX_MAC_COMPARE_FAIL": 9,
        "SGX_PAGE_NOT_BLOCKED": 10, "SGX_NOT_TRACKED": 11, "SGX_VA_SLOT_OCCUPIED": 12,
        "SGX_CHILD_PRESENT": 13, "SGX_ENCLAVE_ACT": 14, "SGX_ENTRYEPOCH_LOCKED": 15,
        "SGX_INVALID_EINITTOKEN": 16, "SGX_PREV_TRK_INCMPL": 17, "SGX_PG_IS_SECS": 18,
        "SGX_PAGE_ATTRIBUTES_MISMATCH": 19, "SGX_PAGE_NOT_MODIFIABLE": 20,
        "SGX_PAGE_NOT_DEBUGGABLE": 21, "SGX_INVALID_REPORTMACSTRUCT": 28,
        "SGX_INSUFFICIENT_ENTROPY": 29, "SGX_EPC_NOT_READY": 30, "SGX_NO_UPDATE": 31,
        "SGX_INVALID_CPUSVN": 32, "SGX_INVALID_ISVSVN": 64, "SGX_UNMASKED_EVENT": 128,
        "SGX_INVALID_KEYNAME": 256,
    }  # fmt: skip
    assert {m.name: m.value for m in SgxStatus} == expected
    assert SgxStatus["SGX_LOCKFAIL"] is SgxStatus["SGX_EPC_PAGE_CONFLICT"]
    assert SgxStatus(7).name == "SGX_EPC_PAGE_CONFLICT" and SgxStatus["SGX_LOCKFAIL"] == 7
    assert int(SgxStatus.SUCCESS) == 0 and not SgxStatus.SUCCESS
    assert {
        SgxStatus.SGX_BLKSTATE,
        SgxStatus.SGX_NOTBLOCKABLE,
        SgxStatus.SGX_PG_IS_SECS,
        SgxStatus.SGX_VA_SLOT_OCCUPIED,
        SgxStatus.SGX_NO_UPDATE,
    } == INFO_STATUSES
    assert isinstance(INFO_STATUSES, frozenset)


def test_page_types_flags_attributes_keys_vectors() -> None:
    assert {m.name: m.value for m in PageType} == {
        "PT_SECS": 0, "PT_TCS": 1, "PT_REG": 2, "PT_VA": 3, "PT_TRIM": 4, "PT_SS_FIRST": 5, "PT_SS_REST": 6,
    }  # fmt: skip
    assert {m.name: m.value for m in SecinfoFlags} == {
        "R": 1, "W": 2, "X": 4, "PENDING": 8, "MODIFIED": 0x10, "PR": 0x20,
    }  # fmt: skip
    assert {m.name: m.value for m in Attributes} == {
        "INIT": 1, "DEBUG": 2, "MODE64BIT": 4, "PROVISIONKEY": 0x10, "EINITTOKENKEY": 0x20,
        "CET": 0x40, "KSS": 0x80, "AEXNOTIFY": 0x400,
    }  # fmt: skip
    genmask_63_11 = ((1 << 64) - 1) & ~((1 << 11) - 1)
    expected_reserved = (1 << 3) | (1 << 6) | (1 << 8) | (1 << 9) | genmask_63_11
    assert expected_reserved == arch.SGX_ATTR_RESERVED_MASK
    assert arch.SGX_ATTR_UNPRIV_MASK == 0x2 | 0x4 | 0x80 | 0x400
    assert arch.SGX_ATTR_PRIV_MASK == 0x10 | 0x20
    assert arch.SGX_ATTR_RESERVED_MASK & (arch.SGX_ATTR_UNPRIV_MASK | arch.SGX_ATTR_PRIV_MASK) == 0
    assert arch.MISC_EXINFO == 1 and arch.SGX_MISC_RESERVED_MASK == ((1 << 64) - 1) & ~1
    assert arch.XFRM_LEGACY == 3
    assert {m.name: m.value for m in KeyName} == {
        "EINITTOKEN": 0, "PROVISION": 1, "PROVISION_SEAL": 2, "REPORT": 3, "SEAL": 4,
    }  # fmt: skip
    assert {m.name: m.value for m in KeyPolicy} == {
        "MRENCLAVE": 1, "MRSIGNER": 2, "NOISVPRODID": 4, "CONFIGID": 8,
        "ISVFAMILYID": 0x10, "ISVEXTPRODID": 0x20,
    }  # fmt: skip
    assert arch.KEYPOLICY_KSS_MASK == 0x3C
    assert arch.KEYPOLICY_RESERVED_MASK == 0xFFC0
    assert {m.name: m.value for m in Vector} == {"DE": 0, "DB": 1, "BP": 3, "UD": 6, "GP": 13, "PF": 14}
    assert {m.name: m.value for m in PfError} == {
        "P": 1, "W": 2, "U": 4, "RSVD": 8, "I": 0x10, "PK": 0x20, "SGX": 0x8000,
    }  # fmt: skip


def test_misc_constants() -> None:
    assert arch.PAGE_SIZE == 4096 and 1 << arch.PAGE_SHIFT == arch.PAGE_SIZE
    assert (arch.SGX_CPUID, arch.SGX_CPUID_EPC, arch.SGX_CPUID_EPC_SECTION) == (0x12, 2, 1)
    assert arch.SGX_CPUID_EPC_INVALID == 0 and arch.SGX_CPUID_EPC_MASK == 0xF
    assert arch.SGX_MAX_EPC_SECTIONS == 8
    assert (arch.SGX_CPUID_SGX1, arch.SGX_CPUID_SGX2, arch.SGX_CPUID_EUPDATESVN) == (1, 2, 1 << 10)
    assert arch.SGX_TCS_DBGOPTIN == 1 and arch.SGX_TCS_RESERVED_SIZE == 4024
    assert arch.SGX_TCS_RESERVED_MASK == ((1 << 64) - 1) & ~3
    assert (arch.SGX_SSA_GPRS_SIZE, arch.SGX_SSA_MISC_EXINFO_SIZE) == (184, 16)
    assert arch.SGX_MODULUS_SIZE == 384 and arch.SGX_LAUNCH_TOKEN_SIZE == 304 == EinitToken.SIZE
    assert sorted(arch.SIGSTRUCT_VENDORS) == [0, 0x8086]
    assert arch.IA32_SGXLEPUBKEYHASH_MSRS == (0x8C, 0x8D, 0x8E, 0x8F)
    assert arch.MR_ECREATE.to_bytes(8, "little") == b"ECREATE\0"
    assert arch.MR_EADD.to_bytes(8, "little") == b"EADD\0\0\0\0"
    assert arch.MR_EEXTEND.to_bytes(8, "little") == b"EEXTEND\0"
    assert CPUSVN_SIZE == 16


def test_faults() -> None:
    assert arch.gp0() == Fault(Vector.GP, 0, 0) == Fault(13)
    assert arch.gp0().is_gp and not arch.gp0().is_pf
    f = arch.pf(0x7000_1000, PfError.P | PfError.SGX)
    assert (f.vector, f.error_code, f.addr) == (14, 0x8001, 0x7000_1000)
    assert f.is_pf and str(f) == "#PF(addr=0x70001000, error_code=0x8001)"
    assert str(arch.gp0()) == "#GP(0)"
    assert f != arch.pf(0x7000_1000, PfError.P)
    bad_vectors: list[Any] = [-1, "13", None, True]
    for bad in bad_vectors:
        with pytest.raises(InvalidArgument):
            Fault(bad)
    results: list[arch.LeafResult] = [SgxStatus.SUCCESS, arch.gp0()]
    assert isinstance(results[0], SgxStatus) and isinstance(results[1], Fault)


# ---------------------------------------------------------------------------------------------
# CPUID EPC section encoding
# ---------------------------------------------------------------------------------------------


def _linux_metric(low: int, high: int) -> int:
    # sgx_calc_section_metric: (low & GENMASK(31, 12)) + ((high & GENMASK(19, 0)) << 32)
    return (low & 0xFFFF_F000) + ((high & 0xF_FFFF) << 32)


GIB = 1 << 30


@settings(max_examples=200, deadline=None)
@given(
    base_pages=st.integers(0, (512 * GIB) // 4096),
    size_pages=st.integers(1, (512 * GIB) // 4096),
)
def test_epc_section_cpuid_round_trip_up_to_512_gib(base_pages: int, size_pages: int) -> None:
    base, size = base_pages * 4096, size_pages * 4096
    eax, ebx, ecx, edx = arch.encode_epc_section(base, size)
    for word in (eax, ebx, ecx, edx):
        assert 0 <= word <= 0xFFFF_FFFF
    assert eax & 0xF == arch.SGX_CPUID_EPC_SECTION
    assert ebx >> 20 == 0 and edx >> 20 == 0
    assert (_linux_metric(eax, ebx), _linux_metric(ecx, edx)) == (base, size)
    assert arch.decode_epc_section(eax, ebx, ecx, edx) == (base, size)
    assert arch.sgx_calc_section_metric(eax, ebx) == base


def test_epc_section_cpuid_known_values_and_limits() -> None:
    # A typical client part: 93.5 MiB section at 0x70200000.
    assert arch.decode_epc_section(0x70200001, 0, 0x05D80001, 0) == (0x70200000, 0x05D80000)
    assert arch.encode_epc_section(0x70200000, 0x05D80000) == (0x70200001, 0, 0x05D80001, 0)
    # 512 GiB at 1 TiB: EBX/EDX carry the high bits.
    assert arch.encode_epc_section(1 << 40, 512 * GIB) == (0x1, 0x100, 0x1, 0x80)
    top = (1 << 52) - 4096
    assert arch.decode_epc_section(*arch.encode_epc_section(top, top)) == (top, top)
    # Type 0 ends the enumeration; unknown types are rejected.
    assert arch.decode_epc_section(0x70200000, 0, 0x05D80001, 0) is None
    assert arch.decode_epc_section(0x70200002, 0, 0x05D80001, 0) is None
    for base, size in ((0x1001, 4096), (0, 4097), (1 << 52, 4096), (0, 0), (-4096, 4096), ("0", 4096)):
        with pytest.raises(InvalidArgument):
            arch.encode_epc_section(base, size)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# CPUSVN
# ---------------------------------------------------------------------------------------------

svns = st.binary(min_size=16, max_size=16)


@given(a=svns, b=svns, c=svns)
def test_cpusvn_le_is_a_componentwise_partial_order(a: bytes, b: bytes, c: bytes) -> None:
    assert arch.cpusvn_le(a, a)
    assert arch.cpusvn_le(a, b) == all(x <= y for x, y in zip(a, b, strict=True))
    if arch.cpusvn_le(a, b) and arch.cpusvn_le(b, a):
        assert a == b
    if arch.cpusvn_le(a, b) and arch.cpusvn_le(b, c):
        assert arch.cpusvn_le(a, c)
    assert arch.cpusvn_le(bytes(16), a) and arch.cpusvn_le(a, b"\xff" * 16)


@given(values=st.lists(svns, min_size=1, max_size=6), other=svns)
def test_cpusvn_min_is_the_greatest_lower_bound(values: list[bytes], other: bytes) -> None:
    m = arch.cpusvn_min(values)
    assert isinstance(m, bytes) and len(m) == 16
    assert all(arch.cpusvn_le(m, v) for v in values)
    assert arch.cpusvn_min(reversed(values)) == m
    assert arch.cpusvn_min([m, *values]) == m
    # Anything below every input is below the minimum.
    if all(arch.cpusvn_le(other, v) for v in values):
        assert arch.cpusvn_le(other, m)
    assert arch.cpusvn_min([values[0]]) == values[0]


def test_cpusvn_examples_and_misuse() -> None:
    a = bytes([2] + [0] * 15)
    b = bytes([1, 5] + [0] * 14)
    assert not arch.cpusvn_le(a, b) and not arch.cpusvn_le(b, a)  # incomparable
    assert arch.cpusvn_min([a, b]) == bytes([1] + [0] * 15)
    assert arch.cpusvn_le(bytearray(16), memoryview(b))
    with pytest.raises(InvalidArgument):
        arch.cpusvn_min([])
    with pytest.raises(InvalidArgument):
        arch.cpusvn_le(bytes(15), bytes(16))
    with pytest.raises(InvalidArgument):
        arch.cpusvn_le("0" * 16, bytes(16))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        arch.cpusvn_min([bytes(16), bytes(17)])
