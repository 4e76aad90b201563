"""sdk.image: segment tables, the enclave-size rule, TCS contents and the offline MRENCLAVE."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgxsim.errors import InvalidArgument
from sgxsim.hw.arch import PAGE_SIZE, Attributes, PageType, Secs, Tcs, secinfo_flags
from sgxsim.hw.enclu import PROGRAM_MAGIC, program_image
from sgxsim.sdk.image import (
    EnclaveImage,
    ImageBuilder,
    Segment,
    enclave_size,
    standard_image,
    tcs_page,
)
from sgxsim.sdk.runtime import RUNTIME_SOURCE

RW = 0x3
RX = 0x5


def reference_mrenclave(size: int, ssa_frame_pages: int, pages: list[tuple[int, int, bytes, bool]]) -> bytes:
    """The reference notes' section 5 pseudo-code, written independently of hw.crypto."""
    h = hashlib.sha256(struct.pack("<8sIQ44s", b"ECREATE", ssa_frame_pages, size, b""))
    for off, flags, data, measured in pages:
        h.update(struct.pack("<8sQQ40s", b"EADD", off, flags, b""))
        if measured:
            for i in range(0, PAGE_SIZE, 256):
                h.update(struct.pack("<8sQ48s", b"EEXTEND", off + i, b""))
                h.update(data[i : i + 256])
    return h.digest()


@pytest.mark.parametrize(
    ("src", "size"),
    [(0, 0x1000), (1, 0x1000), (0x1000, 0x1000), (0x1001, 0x2000), (0xB000, 0x10000), (0x10000, 0x10000)],
)
def test_enclave_size_follows_the_selftest_rule(src: int, size: int) -> None:
    assert enclave_size(src) == size


def test_tcs_page_layout() -> None:
    raw = tcs_page(0x6000, 0x2000)
    assert len(raw) == PAGE_SIZE
    tcs = Tcs.unpack(raw)
    assert (tcs.state, tcs.flags, tcs.cssa, tcs.aep) == (0, 0, 0, 0)
    assert (tcs.ossa, tcs.nssa, tcs.oentry) == (0x6000, 1, 0x2000)
    assert (tcs.fslimit, tcs.gslimit) == (0xFFFFFFFF, 0xFFFFFFFF)
    assert tcs.reserved_ok()
    # Byte offsets as test_encl_bootstrap.S lays them out.
    assert raw[16:24] == (0x6000).to_bytes(8, "little")
    assert raw[28:32] == (1).to_bytes(4, "little")
    assert raw[32:40] == (0x2000).to_bytes(8, "little")
    assert raw[64:72] == b"\xff" * 8


def test_segment_validation() -> None:
    with pytest.raises(InvalidArgument, match="offset"):
        Segment("x", 0x10, PAGE_SIZE, 0x203)
    with pytest.raises(InvalidArgument, match="size"):
        Segment("x", 0, 0, 0x203)
    with pytest.raises(InvalidArgument, match="do not fit"):
        Segment("x", 0, PAGE_SIZE, 0x203, data=bytes(PAGE_SIZE + 1))
    with pytest.raises(InvalidArgument, match="measure"):
        Segment("x", 0, PAGE_SIZE, 0x203, measure=1)  # type: ignore[arg-type]
    seg = Segment("x", PAGE_SIZE, 2 * PAGE_SIZE, 0x205, data=b"ab")
    assert seg.page(0)[:3] == b"ab\0" and seg.page(1) == bytes(PAGE_SIZE)
    assert seg.prot == RX and seg.end == 3 * PAGE_SIZE and seg.npages == 2
    assert Segment("t", 0, PAGE_SIZE, 0x100).prot == RW  # TCS segments are mapped RW (load.c)


def test_image_validation() -> None:
    a = Segment("a", 0, 2 * PAGE_SIZE, 0x203)
    b = Segment("b", PAGE_SIZE, PAGE_SIZE, 0x203)
    with pytest.raises(InvalidArgument, match="overlap"):
        EnclaveImage((a, b), 0x4000)
    with pytest.raises(InvalidArgument, match="power of two"):
        EnclaveImage((a,), 0x3000)
    with pytest.raises(InvalidArgument, match="does not fit"):
        EnclaveImage((a,), 0x1000)
    with pytest.raises(InvalidArgument, match="symbol"):
        EnclaveImage((a,), 0x2000, symbols={"far": 0x2000})
    image = EnclaveImage((a,), 0x2000, symbols={"x": 8})
    with pytest.raises(InvalidArgument, match="no symbol"):
        image.symbol("y")
    with pytest.raises(InvalidArgument, match="no segment"):
        image.segment("zz")


def test_secs_from_image() -> None:
    image = standard_image("def enclave_entry(ctx):\n    ctx.eexit(ctx.rcx)\n", miscselect=1)
    secs = image.secs(0x7F00_0000_0000)
    assert isinstance(secs, Secs)
    assert (secs.base, secs.size, secs.ssa_frame_size) == (0x7F00_0000_0000, image.size, 1)
    assert (secs.attributes, secs.xfrm, secs.miscselect) == (int(Attributes.MODE64BIT), 3, 1)
    assert secs.reserved_ok()


def test_builder_code_pages_hold_program_images() -> None:
    b = ImageBuilder()
    b.add_tcs("tcs", 1)
    entries = b.add_code("text", [("one", "def enclave_entry(ctx):\n    pass\n"), ("two", "x = 1\n" * 800)])
    image = b.build()
    text = image.segment("text")
    assert text.flags == secinfo_flags(PageType.PT_REG, RX) and text.measure
    assert entries == {"one": PAGE_SIZE, "two": 2 * PAGE_SIZE}
    assert image.symbol("two") == 2 * PAGE_SIZE
    blob = text.contents()
    assert blob[: len(PROGRAM_MAGIC)] == PROGRAM_MAGIC
    assert blob[PAGE_SIZE : PAGE_SIZE + len(program_image("x = 1\n" * 800))] == program_image("x = 1\n" * 800)
    with pytest.raises(InvalidArgument, match="already added"):
        b.add("text", PAGE_SIZE)
    with pytest.raises(InvalidArgument):
        b.add_code("bad", [("e", "def (")])


def test_builder_fill() -> None:
    b = ImageBuilder()
    b.add("d", 2 * PAGE_SIZE)
    b.fill("d", b"xyz", at=PAGE_SIZE - 1)
    assert b.build().segment("d").contents()[PAGE_SIZE - 1 : PAGE_SIZE + 2] == b"xyz"
    with pytest.raises(InvalidArgument, match="overflows"):
        b.fill("d", b"ab", at=2 * PAGE_SIZE - 1)
    with pytest.raises(InvalidArgument, match="no segment"):
        b.fill("e", b"")


def test_standard_image_layout() -> None:
    image = standard_image("def enclave_entry(ctx):\n    ctx.eexit(ctx.rcx)\n", threads=2, data=b"hi")
    names = [s.name for s in image.segments]
    assert names == ["tcs", "text", "ssa", "stack", "data", "heap"]
    assert image.tcs_offsets == (0, PAGE_SIZE)
    text, ssa = image.symbol("enclave_entry"), image.symbol("ssa")
    for i, off in enumerate(image.tcs_offsets):
        tcs = Tcs.unpack(image.segment("tcs").page(off // PAGE_SIZE))
        assert (tcs.ossa, tcs.oentry, tcs.nssa) == (ssa + i * PAGE_SIZE, text, 1)
    assert image.segment("heap").measure is False
    assert all(s.measure for s in image.segments if s.name != "heap")
    source = image.segment("text").contents()[12:].rstrip(b"\0").decode()
    assert f"ENCL_STACK = {image.symbol('stack'):#018x}" in source
    assert f"ENCL_SELF = {text:#018x}" in source
    assert RUNTIME_SOURCE in source


def test_mrenclave_hashes_tcs_without_permissions() -> None:
    """EADD clears R/W/X of a TCS before hashing SECINFO: flags 0x107 measure like 0x100."""
    body = tcs_page(PAGE_SIZE, 0)
    ssa = Segment("ssa", PAGE_SIZE, PAGE_SIZE, 0x203)
    plain = EnclaveImage((Segment("t", 0, PAGE_SIZE, 0x100, data=body), ssa), 0x2000)
    with_perms = EnclaveImage((Segment("t", 0, PAGE_SIZE, 0x107, data=body), ssa), 0x2000)
    assert plain.mrenclave() == with_perms.mrenclave()
    assert plain.mrenclave() == reference_mrenclave(0x2000, 1, list(plain.pages()))


_segment_specs = st.lists(
    st.tuples(
        st.integers(1, 3),
        st.sampled_from([0x100, 0x201, 0x203, 0x205, 0x207]),
        st.booleans(),
        st.binary(max_size=64),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=40, deadline=None)
@given(specs=_segment_specs, ssa=st.integers(1, 4), grow=st.integers(0, 2))
def test_offline_mrenclave_matches_reference(
    specs: list[tuple[int, int, bool, bytes]], ssa: int, grow: int
) -> None:
    b = ImageBuilder(ssa_frame_size=ssa)
    for i, (npages, flags, measure, data) in enumerate(specs):
        b.add(f"s{i}", npages * PAGE_SIZE, data=data * 7, flags=flags, measure=measure)
    image = b.build(size=enclave_size(b.next_offset) << grow)
    expected = reference_mrenclave(image.size, ssa, list(image.pages()))
    assert image.mrenclave() == expected
    assert image.measurement().finalize() == expected
