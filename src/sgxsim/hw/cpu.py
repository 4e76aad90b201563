"""Logical processors, microcode patches, and the page-table interface ENCLU walks.

Models: Intel SDM Vol. 3D §34-§38 (per-LP enclave state: CR_ACTIVE_SECS, CR_TCS_PA,
IA32_SGXLEPUBKEYHASH0-3) and the microcode update facility (Vol. 3A §10.11): each
logical processor runs one loaded patch, identified by its revision, which carries
the security versions that make up CPUSVN.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Protocol

from sgxsim.errors import InvalidArgument
from sgxsim.hw.arch import CPUSVN_SIZE, EnclsLeaf

__all__ = [
    "LE_PUBKEY_HASH_RESET",
    "SVN_COMPONENT_LATE_MICROCODE",
    "SVN_COMPONENT_NAMES",
    "LogicalProcessor",
    "MicrocodePatch",
    "PageTable",
    "Pte",
]

#: Index of the CPUSVN component a late microcode update raises. Intel's TCB Info names
#: component 1 "Early Microcode Update" and component 2 "SGX Late Microcode Update"
#: (attestation-and-figures.md §1.5); index 1 here is component 2.
SVN_COMPONENT_LATE_MICROCODE = 1

#: Names of the CPUSVN components as Intel's TCB Info lists the first three for an
#: Ice Lake server (attestation-and-figures.md §1.5); the others are left unnamed.
SVN_COMPONENT_NAMES: tuple[str, ...] = (
    "Early Microcode Update",
    "SGX Late Microcode Update",
    "TXT SINIT",
    *([""] * 13),
)

#: [MODEL] Reset value of IA32_SGXLEPUBKEYHASH0-3: a fixed stand-in for the hash of
#: Intel's launch-enclave signing key. Linux rewrites the MSRs before every EINIT.
LE_PUBKEY_HASH_RESET = hashlib.sha256(b"sgxsim: Intel launch enclave signing key").digest()


@dataclass(frozen=True)
class MicrocodePatch:
    """A microcode patch: its revision and the 16 component SVNs it carries."""

    revision: int
    svn: bytes
    name: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.revision, int) or self.revision < 0:
            raise InvalidArgument(f"microcode revision must be a non-negative int, got {self.revision!r}")
        if not isinstance(self.svn, bytes) or len(self.svn) != CPUSVN_SIZE:
            raise InvalidArgument(f"microcode svn must be {CPUSVN_SIZE} bytes, got {self.svn!r}")

    @classmethod
    def with_svns(
        cls, revision: int, base: int = 0, late_microcode: int | None = None, name: str = ""
    ) -> MicrocodePatch:
        """A patch whose components are all ``base`` except the SGX late-microcode one."""
        comps = bytearray([base] * CPUSVN_SIZE)
        if late_microcode is not None:
            comps[SVN_COMPONENT_LATE_MICROCODE] = late_microcode
        return cls(revision, bytes(comps), name)


@dataclass
class Pte:
    """A user page-table entry as the CPU walks it (x86-64, 4 KiB pages)."""

    phys: int
    present: bool = True
    writable: bool = False
    user: bool = True
    nx: bool = False
    accessed: bool = False
    dirty: bool = False


class PageTable(Protocol):
    """What the processor needs from a process's page tables (the kernel's mm implements it)."""

    def lookup(self, linaddr: int) -> Pte | None:
        """The PTE mapping ``linaddr``'s page, or None when no entry exists."""
        ...


@dataclass
class LogicalProcessor:
    """One logical processor: loaded microcode and its SGX execution state."""

    id: int
    socket: int
    ucode: MicrocodePatch
    #: ENCLS leaf begun and not yet finished on this LP (EUPDATESVN's concurrency rule).
    inflight: EnclsLeaf | None = None
    #: Set when this leaf began while an EUPDATESVN was in flight elsewhere: it gets #GP(0).
    inflight_poisoned: bool = False
    #: Global EPC index of the SECS of the enclave this LP executes in (CR_ACTIVE_SECS), or None.
    active_secs: int | None = None
    #: Global EPC index of the TCS this LP entered through (CR_TCS_PA), or None.
    active_tcs: int | None = None
    #: IA32_SGXLEPUBKEYHASH0-3 as 32 bytes (four little-endian u64).
    le_pubkey_hash: bytes = LE_PUBKEY_HASH_RESET
    #: The page table of the process this LP is running (CR3), used by ENCLU.
    page_table: PageTable | None = None
    #: An interrupt (e.g. the kernel's IPI) is pending: an LP in enclave mode takes an AEX.
    pending_interrupt: bool = False
    #: RBX as the last ENCLS leaf that outputs in RBX left it (EDBGRD's 8 bytes read).
    encls_rbx: int = 0
    #: Count of AEXs and enclave entries, for reports.
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def in_enclave(self) -> bool:
        return self.active_secs is not None
