"""Enclave images: the pages an enclave is built from, their SECINFO, and the offline MRENCLAVE.

An :class:`EnclaveImage` is what the kernel selftests' ``encl_load()`` produces from
``test_encl.elf``: a table of segments (each one ``SGX_IOC_ENCLAVE_ADD_PAGES`` call: an
enclave offset, a size, SECINFO flags, whether the pages are measured with EEXTEND, and
their contents), the enclave size (the smallest power of two covering the image), and the
SECS fields ECREATE is given. Enclave code is Python source stored in R|X pages as a
program image (:func:`sgxsim.hw.enclu.program_image`); a TCS's OENTRY is the enclave
offset of such an image.

:meth:`EnclaveImage.mrenclave` computes MRENCLAVE offline exactly as the selftests'
``encl_measure()`` (and Intel's and Gramine's signers) do, with
:class:`sgxsim.hw.crypto.Measurement`, so it equals what EINIT finalizes.

Models: tools/testing/selftests/sgx/load.c ``encl_load`` (segment table, heap segment,
enclave size rule), test_encl.lds (TCS segment first) and sigstruct.c ``encl_measure``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from sgxsim.errors import InvalidArgument, ModelInvariantError
from sgxsim.hw.arch import (
    PAGE_SIZE,
    XFRM_LEGACY,
    Attributes,
    PageType,
    SecinfoFlags,
    Secs,
    Tcs,
    secinfo_flags,
    secinfo_page_type,
)
from sgxsim.hw.crypto import Measurement
from sgxsim.hw.enclu import program_image
from sgxsim.sdk.runtime import link_program

__all__ = [
    "TCS_LIMIT_MAX",
    "EnclaveImage",
    "ImageBuilder",
    "Segment",
    "enclave_size",
    "standard_image",
    "tcs_page",
]

#: FSLIMIT/GSLIMIT of every TCS the sdk writes (test_encl_bootstrap.S: 0xFFFFFFFF).
TCS_LIMIT_MAX = 0xFFFFFFFF

_U64 = (1 << 64) - 1
#: Bytes of unmeasured pages whose EADD blocks :meth:`EnclaveImage.measurement` hashes per call.
_EADD_RUN = 4 << 30
_RW = int(SecinfoFlags.R | SecinfoFlags.W)
_RX = int(SecinfoFlags.R | SecinfoFlags.X)


def _check_int(name: str, value: object, *, minimum: int = 0, maximum: int = _U64) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument(f"{name} must be an int, got {value!r:.60}")
    if not minimum <= value <= maximum:
        raise InvalidArgument(f"{name}={value:#x} is outside [{minimum:#x}, {maximum:#x}]")
    return int(value)


def _check_page_multiple(name: str, value: object, *, allow_zero: bool = False) -> int:
    v = _check_int(name, value)
    if v % PAGE_SIZE or (v == 0 and not allow_zero):
        raise InvalidArgument(f"{name}={v:#x} is not a positive multiple of {PAGE_SIZE:#x}")
    return v


def enclave_size(src_size: int) -> int:
    """The enclave size for an image of ``src_size`` bytes: the smallest power of two >= it.

    Models: load.c ``encl_load`` / sigstruct.c ``mrenclave_ecreate`` (start at 0x1000 and
    double while smaller than the image). An image of one page therefore gets 0x1000, which
    ECREATE rejects (SIZE < 8 KiB => #GP): the rule is the selftests', not a fix-up.
    """
    n = _check_int("src_size", src_size)
    size = PAGE_SIZE
    while size < n:
        size <<= 1
    return size


def tcs_page(ossa: int, oentry: int, *, nssa: int = 1, ofsbase: int = 0, ogsbase: int = 0) -> bytes:
    """The 4096 bytes of a TCS as the enclave author lays it out before EADD.

    STATE, FLAGS, CSSA and AEP are 0 (the CPU owns them), FSLIMIT/GSLIMIT are 0xFFFFFFFF.
    Models: test_encl_bootstrap.S ``.tcs`` section; test_encl.c ``do_encl_init_tcs_page``.
    """
    return Tcs(
        ossa=_check_int("ossa", ossa),
        nssa=_check_int("nssa", nssa, maximum=0xFFFFFFFF),
        oentry=_check_int("oentry", oentry),
        ofsbase=_check_int("ofsbase", ofsbase),
        ogsbase=_check_int("ogsbase", ogsbase),
        fslimit=TCS_LIMIT_MAX,
        gslimit=TCS_LIMIT_MAX,
    ).pack()


@dataclass(frozen=True)
class Segment:
    """A run of enclave pages added by one SGX_IOC_ENCLAVE_ADD_PAGES call.

    ``flags`` is SECINFO.FLAGS (page type << 8 | R/W/X); ``data`` is the segment's leading
    contents (zero-filled up to ``size``). ``prot`` is the mmap protection the loader maps
    the segment with: RW for a TCS segment (load.c), the SECINFO R/W/X bits otherwise (the
    PROT_READ/WRITE/EXEC values equal SECINFO R/W/X). Flags are not validated beyond fitting
    in a u64: an image may carry what the kernel rejects, so the rejection can be tested.
    """

    name: str
    offset: int
    size: int
    flags: int
    measure: bool = True
    data: bytes = b""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise InvalidArgument(f"segment name must be a str, got {self.name!r:.60}")
        _check_page_multiple(f"segment {self.name!r} offset", self.offset, allow_zero=True)
        _check_page_multiple(f"segment {self.name!r} size", self.size)
        _check_int(f"segment {self.name!r} flags", self.flags)
        if not isinstance(self.measure, bool):
            raise InvalidArgument(f"segment {self.name!r} measure must be a bool, got {self.measure!r}")
        if not isinstance(self.data, bytes | bytearray | memoryview):
            raise InvalidArgument(f"segment {self.name!r} data must be bytes, got {type(self.data).__name__}")
        object.__setattr__(self, "data", bytes(self.data))
        if len(self.data) > self.size:
            raise InvalidArgument(
                f"segment {self.name!r}: {len(self.data)} bytes of data do not fit in {self.size:#x}"
            )

    @property
    def end(self) -> int:
        """Enclave offset just past the segment."""
        return self.offset + self.size

    @property
    def npages(self) -> int:
        return self.size // PAGE_SIZE

    @property
    def page_type(self) -> int:
        return secinfo_page_type(self.flags)

    @property
    def prot(self) -> int:
        """PROT_* bits for mmap (load.c: TCS segment RW, others from the R/W/X flags)."""
        if self.page_type == PageType.PT_TCS:
            return _RW
        return self.flags & 0x7

    def contents(self) -> bytes:
        """All ``size`` bytes of the segment (data then zeros)."""
        return self.data + bytes(self.size - len(self.data))

    def page(self, index: int) -> bytes:
        """The 4096 bytes of page ``index`` of the segment."""
        i = _check_int("page index", index, maximum=self.npages - 1)
        chunk = self.data[i * PAGE_SIZE : (i + 1) * PAGE_SIZE]
        return chunk + bytes(PAGE_SIZE - len(chunk))


@dataclass(frozen=True)
class EnclaveImage:
    """An enclave ready to load: segments in ADD_PAGES order plus the SECS parameters.

    ``size`` must be a power of two covering every segment; ``symbols`` maps names (entry
    points, buffers) to enclave offsets, like the ELF symbol table ``encl_get_entry`` reads.
    """

    segments: tuple[Segment, ...]
    size: int
    ssa_frame_size: int = 1
    attributes: int = int(Attributes.MODE64BIT)
    xfrm: int = XFRM_LEGACY
    miscselect: int = 0
    symbols: Mapping[str, int] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.segments, tuple) or not all(isinstance(s, Segment) for s in self.segments):
            raise InvalidArgument("segments must be a tuple of Segment")
        if not self.segments:
            raise InvalidArgument("an enclave image needs at least one segment")
        size = _check_int("size", self.size, minimum=PAGE_SIZE)
        if size & (size - 1):
            raise InvalidArgument(f"enclave size {size:#x} is not a power of two")
        _check_int("ssa_frame_size", self.ssa_frame_size, maximum=0xFFFFFFFF)
        _check_int("attributes", self.attributes)
        _check_int("xfrm", self.xfrm)
        _check_int("miscselect", self.miscselect, maximum=0xFFFFFFFF)
        ordered = sorted(self.segments, key=lambda s: s.offset)
        for a, b in itertools.pairwise(ordered):
            if a.end > b.offset:
                raise InvalidArgument(f"segments {a.name!r} and {b.name!r} overlap")
        if self.src_size > size:
            raise InvalidArgument(f"image of {self.src_size:#x} bytes does not fit enclave size {size:#x}")
        symbols = dict(self.symbols)
        for name, off in symbols.items():
            _check_int(f"symbol {name!r}", off, maximum=size - 1)
        object.__setattr__(self, "symbols", MappingProxyType(symbols))

    @property
    def src_size(self) -> int:
        """End of the last segment (load.c ``encl->src_size``)."""
        return max(s.end for s in self.segments)

    @property
    def total_size(self) -> int:
        """Sum of segment sizes (main.c computes ``total_size`` this way for SGX2 tests)."""
        return sum(s.size for s in self.segments)

    @property
    def tcs_offsets(self) -> tuple[int, ...]:
        """Enclave offsets of every TCS page, in image order."""
        return tuple(
            s.offset + i * PAGE_SIZE
            for s in self.segments
            if s.page_type == PageType.PT_TCS
            for i in range(s.npages)
        )

    def segment(self, name: str) -> Segment:
        """The segment called ``name``."""
        for s in self.segments:
            if s.name == name:
                return s
        raise InvalidArgument(f"image has no segment {name!r} (has {[s.name for s in self.segments]})")

    def symbol(self, name: str) -> int:
        """Enclave offset of symbol ``name`` (load.c ``encl_get_entry``)."""
        try:
            return self.symbols[name]
        except KeyError:
            raise InvalidArgument(f"image has no symbol {name!r}") from None

    def secs(self, base: int) -> Secs:
        """The SECS handed to SGX_IOC_ENCLAVE_CREATE for an enclave based at ``base``.

        Models: load.c ``encl_ioc_create`` (ssa_frame_size, attributes, xfrm, base, size).
        """
        return Secs(
            size=self.size,
            base=_check_int("base", base),
            ssa_frame_size=self.ssa_frame_size,
            miscselect=self.miscselect,
            attributes=self.attributes,
            xfrm=self.xfrm,
        )

    def pages(self) -> Iterator[tuple[int, int, bytes, bool]]:
        """Every page as ``(offset, secinfo_flags, data4k, measured)`` in EADD order."""
        for s in self.segments:
            for i in range(s.npages):
                yield s.offset + i * PAGE_SIZE, s.flags, s.page(i), s.measure

    def measurement(self) -> Measurement:
        """The running measurement after ECREATE and every EADD/EEXTEND of the image."""
        m = Measurement.ecreate(self.ssa_frame_size, self.size)
        for s in self.segments:
            # EADD hashes the SECINFO with R/W/X already cleared for a TCS (SDM EADD).
            hashed = s.flags & ~0x7 if s.page_type == PageType.PT_TCS else s.flags
            if not s.measure:
                # Unmeasured pages hash only their EADD block: the same blocks, in runs.
                for lo in range(s.offset, s.end, _EADD_RUN):
                    m.eadd_many(np.arange(lo, min(lo + _EADD_RUN, s.end), PAGE_SIZE, dtype=np.uint64), hashed)
                continue
            for i in range(s.npages):
                m.page(s.offset + i * PAGE_SIZE, hashed, s.page(i), True)
        return m

    def mrenclave(self) -> bytes:
        """MRENCLAVE as EINIT will finalize it for this image.

        Models: sigstruct.c ``encl_measure`` (mrenclave_ecreate/eadd/eextend/commit).
        """
        return self.measurement().finalize()


class ImageBuilder:
    """Lays segments out back to back from offset 0 and produces an :class:`EnclaveImage`.

    Offsets are assigned as segments are added, so a TCS can be filled in (:meth:`fill`)
    once the SSA and code it points at have been placed.
    """

    def __init__(
        self,
        *,
        ssa_frame_size: int = 1,
        attributes: int = int(Attributes.MODE64BIT),
        xfrm: int = XFRM_LEGACY,
        miscselect: int = 0,
    ) -> None:
        self.ssa_frame_size = _check_int("ssa_frame_size", ssa_frame_size, minimum=1, maximum=0xFFFFFFFF)
        self.attributes = _check_int("attributes", attributes)
        self.xfrm = _check_int("xfrm", xfrm)
        self.miscselect = _check_int("miscselect", miscselect, maximum=0xFFFFFFFF)
        self._segments: list[Segment] = []
        self._symbols: dict[str, int] = {}
        self._next = 0

    @property
    def next_offset(self) -> int:
        """Where the next segment will be placed."""
        return self._next

    def add(
        self,
        name: str,
        size: int | None = None,
        *,
        data: bytes = b"",
        flags: int | None = None,
        page_type: int = PageType.PT_REG,
        perms: int = _RW,
        measure: bool = True,
    ) -> int:
        """Append a segment (``size`` defaults to ``data`` rounded up to pages); returns its offset.

        ``flags`` overrides ``page_type``/``perms`` with raw SECINFO flags.
        """
        if any(s.name == name for s in self._segments):
            raise InvalidArgument(f"segment {name!r} already added")
        if size is None:
            size = max(PAGE_SIZE, -(-len(data) // PAGE_SIZE) * PAGE_SIZE)
        if flags is None:
            flags = secinfo_flags(page_type, perms)
        seg = Segment(name, self._next, size, flags, measure, data)
        self._segments.append(seg)
        self._next = seg.end
        return seg.offset

    def add_tcs(self, name: str, count: int = 1) -> int:
        """Append ``count`` TCS pages (contents filled later with :meth:`fill` / :func:`tcs_page`)."""
        n = _check_int("TCS count", count, minimum=1, maximum=1 << 20)
        return self.add(name, n * PAGE_SIZE, page_type=PageType.PT_TCS, perms=0)

    def add_code(self, name: str, programs: Sequence[tuple[str, str]]) -> dict[str, int]:
        """Append an R|X segment holding one program image per ``(symbol, source)``.

        Each image starts on a page boundary; returns (and records) symbol -> enclave offset.
        """
        if not programs:
            raise InvalidArgument(f"code segment {name!r} needs at least one program")
        blob = bytearray()
        entries: dict[str, int] = {}
        for symbol, source in programs:
            if not isinstance(symbol, str) or not isinstance(source, str):
                raise InvalidArgument(f"program must be (symbol, source) strings, got {symbol!r:.40}")
            entries[symbol] = len(blob)
            blob += program_image(source)
            blob += bytes(-len(blob) % PAGE_SIZE)
        base = self.add(name, data=bytes(blob), perms=_RX)
        resolved = {symbol: base + off for symbol, off in entries.items()}
        for symbol, off in resolved.items():
            self.symbol(symbol, off)
        return resolved

    def add_heap(self, size: int, name: str = "heap") -> int:
        """Append ``size`` bytes of zero RW pages, not measured (load.c's heap segment)."""
        return self.add(name, _check_page_multiple("heap size", size), measure=False)

    def fill(self, name: str, data: bytes, at: int = 0) -> None:
        """Overwrite bytes ``at`` .. of segment ``name``'s contents with ``data``."""
        for i, s in enumerate(self._segments):
            if s.name == name:
                start = _check_int("fill offset", at, maximum=s.size)
                if start + len(data) > s.size:
                    raise InvalidArgument(f"fill of {len(data)} bytes at {start:#x} overflows {name!r}")
                buf = bytearray(s.contents())
                buf[start : start + len(data)] = data
                self._segments[i] = Segment(
                    s.name, s.offset, s.size, s.flags, s.measure, bytes(buf).rstrip(b"\0")
                )
                return
        raise InvalidArgument(f"no segment {name!r} to fill")

    def symbol(self, name: str, offset: int) -> None:
        """Record symbol ``name`` at enclave ``offset``."""
        self._symbols[name] = _check_int(f"symbol {name!r}", offset)

    def build(self, size: int | None = None) -> EnclaveImage:
        """The image; ``size`` defaults to :func:`enclave_size` of the laid-out bytes."""
        if not self._segments:
            raise InvalidArgument("nothing to build: no segments added")
        return EnclaveImage(
            segments=tuple(self._segments),
            size=enclave_size(self._next) if size is None else size,
            ssa_frame_size=self.ssa_frame_size,
            attributes=self.attributes,
            xfrm=self.xfrm,
            miscselect=self.miscselect,
            symbols=dict(self._symbols),
        )


def _pages(nbytes: int) -> int:
    return -(-nbytes // PAGE_SIZE)


def standard_image(
    source: str,
    *,
    threads: int = 1,
    data: bytes = b"",
    heap_size: int = PAGE_SIZE,
    attributes: int = int(Attributes.MODE64BIT),
    miscselect: int = 0,
    runtime: bool = True,
) -> EnclaveImage:
    """A one-program enclave: ``threads`` TCSs, code, SSA frames, stacks, data, heap.

    Layout, in order: ``tcs`` (one TCS page per thread, OENTRY = the program), ``text`` (R|X
    program image, symbol ``enclave_entry``), ``ssa`` (one frame per TCS, NSSA = 1), ``stack``
    (one RW page per thread), ``data`` (RW, measured; omitted when empty), ``heap`` (RW, not
    measured; omitted when ``heap_size`` is 0). The program is linked
    (:func:`sgxsim.sdk.runtime.link_program`) with the constants ``ENCL_SELF``, ``ENCL_SSA``,
    ``ENCL_STACK``, ``ENCL_DATA``, ``ENCL_HEAP``, ``ENCL_HEAP_SIZE`` and ``ENCL_THREADS``
    (enclave offsets and sizes) and, with ``runtime``, the sdk runtime helpers.
    """
    n = _check_int("threads", threads, minimum=1, maximum=1024)
    heap = _check_page_multiple("heap size", heap_size, allow_zero=True)
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidArgument(f"data must be bytes, got {type(data).__name__}")
    b = ImageBuilder(attributes=attributes, miscselect=miscselect)
    names = ("ENCL_SELF", "ENCL_SSA", "ENCL_STACK", "ENCL_DATA", "ENCL_HEAP")
    placeholder = dict.fromkeys(names, 0) | {"ENCL_HEAP_SIZE": heap, "ENCL_THREADS": n}
    text = n * PAGE_SIZE
    code_pages = _pages(len(program_image(link_program(source, placeholder, runtime=runtime))))
    ssa = text + code_pages * PAGE_SIZE
    stack = ssa + n * b.ssa_frame_size * PAGE_SIZE
    data_off = stack + n * PAGE_SIZE
    heap_off = data_off + _pages(len(data)) * PAGE_SIZE
    constants = placeholder | dict(zip(names, (text, ssa, stack, data_off, heap_off), strict=True))
    b.add_tcs("tcs", n)
    b.add_code("text", [("enclave_entry", link_program(source, constants, runtime=runtime))])
    b.symbol("ssa", b.add("ssa", n * b.ssa_frame_size * PAGE_SIZE))
    b.symbol("stack", b.add("stack", n * PAGE_SIZE))
    for i in range(n):
        b.fill("tcs", tcs_page(ssa + i * b.ssa_frame_size * PAGE_SIZE, text), at=i * PAGE_SIZE)
    if data:
        b.symbol("data", b.add("data", data=bytes(data)))
    if heap:
        b.symbol("heap", b.add_heap(heap))
    image = b.build()
    if image.symbol("enclave_entry") != text or b.next_offset != heap_off + heap:
        raise ModelInvariantError("standard_image layout moved between passes")
    return image
