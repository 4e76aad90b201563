"""The Enclave Page Cache and its map (EPCM), as numpy struct-of-arrays.

Every EPC page of every section has a *global page index*; the EPCM fields of all
pages live in flat numpy arrays indexed by it, so a 2 x 512 GiB machine costs a few
tens of bytes per page (and nothing that is touched until used: the arrays are
zero-initialised, which the OS provides lazily). Page contents are stored only for
pages that hold non-zero data.

Hidden per-enclave state the processor keeps in a SECS page (EID, the running
measurement, tracking epochs, committed identity) lives in :class:`SecsState`,
keyed by the SECS page's index.

Models: Intel SDM Vol. 3D §34.5 (EPC and EPCM) and §35.7 (SECS hidden fields).
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from sgxsim.errors import InvalidArgument
from sgxsim.hw.arch import PAGE_SHIFT, PAGE_SIZE, SGX_MAX_EPC_SECTIONS
from sgxsim.hw.crypto import Measurement

__all__ = [
    "EPC_SECTION_MAX_SIZE",
    "Epc",
    "EpcSection",
    "EpcSectionConfig",
    "Epcm",
    "SecsState",
]

#: Largest section we model: 512 GiB per socket (3rd-gen Xeon SP, attestation-and-figures.md §3).
EPC_SECTION_MAX_SIZE = 512 << 30

_ZERO_PAGE = bytes(PAGE_SIZE)

BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class EpcSectionConfig:
    """One EPC section as CPUID.(0x12, 2+i) enumerates it: physical base, size, NUMA node."""

    base: int
    size: int
    node: int = 0

    def __post_init__(self) -> None:
        for name in ("base", "size", "node"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidArgument(f"EPC section {name} must be an int, got {value!r}")
        if self.base < 0 or self.base % PAGE_SIZE:
            raise InvalidArgument(f"EPC section base {self.base:#x} is not page-aligned")
        if self.size <= 0 or self.size % PAGE_SIZE:
            raise InvalidArgument(f"EPC section size {self.size:#x} is not a positive multiple of 4 KiB")
        if self.size > EPC_SECTION_MAX_SIZE:
            raise InvalidArgument(f"EPC section size {self.size:#x} exceeds 512 GiB")
        if self.node < 0:
            raise InvalidArgument(f"EPC section node {self.node} is negative")


@dataclass(frozen=True)
class EpcSection:
    """A configured section placed in the global page index space."""

    index: int
    base: int
    size: int
    node: int
    first_page: int

    @property
    def npages(self) -> int:
        return self.size >> PAGE_SHIFT

    @property
    def end(self) -> int:
        return self.base + self.size


class Epcm:
    """EPCM fields of every EPC page (SDM Table 34-29), one numpy array per field.

    ``secs`` (ENCLAVESECS) and ``linaddr`` (ENCLAVEADDRESS) are meaningful only for valid
    pages; ``block_epoch`` is the [MODEL] tracking stamp EBLOCK records (see hw.encls).
    """

    __slots__ = (
        "block_epoch",
        "blocked",
        "linaddr",
        "modified",
        "npages",
        "pending",
        "pr",
        "pt",
        "rwx",
        "secs",
        "valid",
    )

    def __init__(self, npages: int) -> None:
        self.npages = npages
        self.valid: BoolArray = np.zeros(npages, dtype=np.bool_)
        self.blocked: BoolArray = np.zeros(npages, dtype=np.bool_)
        self.pending: BoolArray = np.zeros(npages, dtype=np.bool_)
        self.modified: BoolArray = np.zeros(npages, dtype=np.bool_)
        self.pr: BoolArray = np.zeros(npages, dtype=np.bool_)
        self.pt: npt.NDArray[np.uint8] = np.zeros(npages, dtype=np.uint8)
        self.rwx: npt.NDArray[np.uint8] = np.zeros(npages, dtype=np.uint8)
        self.secs: npt.NDArray[np.int32] = np.zeros(npages, dtype=np.int32)
        self.linaddr: npt.NDArray[np.uint64] = np.zeros(npages, dtype=np.uint64)
        self.block_epoch: npt.NDArray[np.uint32] = np.zeros(npages, dtype=np.uint32)

    @property
    def nbytes(self) -> int:
        """Host bytes the EPCM arrays occupy (address space; untouched pages cost no RSS)."""
        return sum(int(getattr(self, name).nbytes) for name in self.__slots__ if name != "npages")

    def invalidate_all(self) -> None:
        """Clear every entry, as a cold reset does (EPC contents are lost)."""
        for name in self.__slots__:
            if name != "npages":
                getattr(self, name)[:] = 0

    def entry(self, index: int) -> dict[str, int | bool]:
        """One EPCM entry as a dict (for inspection and tests)."""
        return {
            "valid": bool(self.valid[index]),
            "pt": int(self.pt[index]),
            "r": bool(self.rwx[index] & 1),
            "w": bool(self.rwx[index] & 2),
            "x": bool(self.rwx[index] & 4),
            "blocked": bool(self.blocked[index]),
            "pending": bool(self.pending[index]),
            "modified": bool(self.modified[index]),
            "pr": bool(self.pr[index]),
            "secs": int(self.secs[index]),
            "linaddr": int(self.linaddr[index]),
        }


@dataclass
class SecsState:
    """Processor-internal state of one enclave, kept with its SECS page.

    Architectural SECS fields are copied at ECREATE; EINIT commits the identity. The
    [MODEL] tracking state: ``epoch`` counts ETRACKs; ``inside`` maps each logical
    processor executing in the enclave to the epoch it entered in; ``track_waiting``
    is the set of processors that were inside when the last ETRACK ran and have not
    yet exited (ETRACK's "previous tracking cycle not complete").
    """

    eid: int
    base: int
    size: int
    ssa_frame_size: int
    miscselect: int
    attributes: int
    xfrm: int
    isv_prod_id_req: int = 0
    config_id: bytes = bytes(64)
    config_svn: int = 0
    measurement: Measurement = field(default_factory=Measurement)
    initialized: bool = False
    mrenclave: bytes = bytes(32)
    mrsigner: bytes = bytes(32)
    isv_prod_id: int = 0
    isv_svn: int = 0
    isv_family_id: bytes = bytes(16)
    isv_ext_prod_id: bytes = bytes(16)
    padding: bytes = b""
    child_count: int = 0
    virt_child_count: int = 0
    epoch: int = 0
    inside: dict[int, int] = field(default_factory=dict)
    track_waiting: set[int] = field(default_factory=set)
    tracked_epoch: int = 0


class Epc:
    """All EPC sections, the EPCM, page contents and the SECS hidden state."""

    def __init__(self, sections: tuple[EpcSectionConfig, ...]) -> None:
        if not isinstance(sections, tuple) or not all(isinstance(s, EpcSectionConfig) for s in sections):
            raise InvalidArgument(f"EPC sections must be a tuple of EpcSectionConfig, got {sections!r}")
        if not 1 <= len(sections) <= SGX_MAX_EPC_SECTIONS:
            raise InvalidArgument(
                f"{len(sections)} EPC sections configured; SGX enumerates 1 to {SGX_MAX_EPC_SECTIONS}"
            )
        ordered = sorted(sections, key=lambda s: s.base)
        for a, b in itertools.pairwise(ordered):
            if a.base + a.size > b.base:
                raise InvalidArgument(f"EPC sections at {a.base:#x} and {b.base:#x} overlap")
        placed: list[EpcSection] = []
        first = 0
        for i, cfg in enumerate(sections):
            placed.append(EpcSection(i, cfg.base, cfg.size, cfg.node, first))
            first += cfg.size >> PAGE_SHIFT
        self.sections: tuple[EpcSection, ...] = tuple(placed)
        self.npages = first
        self.epcm = Epcm(first)
        self.contents: dict[int, bytearray] = {}
        self.secs_state: dict[int, SecsState] = {}
        self._by_base = sorted(self.sections, key=lambda s: s.base)
        self._bases = [s.base for s in self._by_base]

    # -- addressing ---------------------------------------------------------------

    def index_of(self, phys: int) -> int | None:
        """Global page index of the EPC page containing ``phys``, or None if not EPC."""
        i = bisect.bisect_right(self._bases, phys) - 1
        if i < 0:
            return None
        s = self._by_base[i]
        if phys >= s.end:
            return None
        return s.first_page + ((phys - s.base) >> PAGE_SHIFT)

    def phys_of(self, index: int) -> int:
        """Physical address of the page with global index ``index``."""
        for s in self.sections:
            if s.first_page <= index < s.first_page + s.npages:
                return s.base + ((index - s.first_page) << PAGE_SHIFT)
        raise InvalidArgument(f"EPC page index {index} out of range (0..{self.npages - 1})")

    def section_of(self, index: int) -> EpcSection:
        for s in self.sections:
            if s.first_page <= index < s.first_page + s.npages:
                return s
        raise InvalidArgument(f"EPC page index {index} out of range (0..{self.npages - 1})")

    @property
    def size(self) -> int:
        return self.npages << PAGE_SHIFT

    # -- contents -----------------------------------------------------------------

    def read(self, index: int, offset: int = 0, length: int = PAGE_SIZE) -> bytes:
        """Bytes of an EPC page (zeros where nothing was ever written)."""
        page = self.contents.get(index)
        if page is None:
            return _ZERO_PAGE[:length] if offset == 0 else bytes(length)
        return bytes(page[offset : offset + length])

    def write(self, index: int, offset: int, data: bytes | bytearray | memoryview) -> None:
        page = self.contents.get(index)
        if page is None:
            if data == _ZERO_PAGE[: len(data)]:
                return
            page = bytearray(PAGE_SIZE)
            self.contents[index] = page
        page[offset : offset + len(data)] = data

    def set_page(self, index: int, data: bytes | bytearray | memoryview | None) -> None:
        """Replace a whole page; ``None`` or all-zero data stores nothing."""
        if data is None or data == _ZERO_PAGE[: len(data)]:
            self.contents.pop(index, None)
        else:
            self.contents[index] = bytearray(data)

    def clear_pages(self, indices: npt.NDArray[np.int64]) -> None:
        """Drop the contents of many pages (EREMOVE batch, reset)."""
        contents = self.contents
        if len(contents) < len(indices):
            wanted = set(indices.tolist())
            for k in [k for k in contents if k in wanted]:
                del contents[k]
        else:
            for k in indices.tolist():
                contents.pop(k, None)

    # -- accounting ---------------------------------------------------------------

    def nr_valid(self) -> int:
        return int(np.count_nonzero(self.epcm.valid))

    def host_bytes_per_page(self) -> float:
        """EPCM array bytes per EPC page (contents of data pages excluded)."""
        return self.epcm.nbytes / max(1, self.npages)
