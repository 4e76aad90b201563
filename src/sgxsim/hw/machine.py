"""The simulated SGX platform: processors, EPC, DRAM, package registers, ENCLS/ENCLU entry.

A :class:`Machine` is one platform. It owns no wall clock and no global state:
time is charged to an injected :class:`Clock`, randomness comes from an injected
:class:`~sgxsim.rand.Rng`, and RDSEED is an injected :class:`~sgxsim.rand.EntropySource`.

Models: Intel SDM Vol. 3D ch. 34-41 (package registers CR_CPUSVN, CR_BASE_PK,
CR_NEXT_EID, CR_REPORT_KEYID, CSR_SGX_OWNEREPOCH; CPUID leaf 0x12; ENCLS/ENCLU
dispatch) and Intel's "Runtime Microcode Updates with Intel SGX" (cdrdv2 648682):
CPUSVN is snapshotted at the first SGX use after a reset and is raised at run time
only by a successful EUPDATESVN.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import CodeType, MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from sgxsim.errors import InvalidArgument, ModelInvariantError
from sgxsim.hw.arch import (
    PAGE_SHIFT,
    PAGE_SIZE,
    SGX_ATTR_RESERVED_MASK,
    SGX_CPUID_EDECCSSA,
    SGX_CPUID_EUPDATESVN,
    Attributes,
    EnclsLeaf,
    EncluLeaf,
    Fault,
    LeafResult,
    Vector,
    cpusvn_le,
    cpusvn_min,
    encode_epc_section,
    gp0,
)
from sgxsim.hw.cpu import LogicalProcessor, MicrocodePatch
from sgxsim.hw.epc import Epc, EpcSectionConfig
from sgxsim.rand import EntropySource, Rng

if TYPE_CHECKING:
    from sgxsim.hw.enclu import EnclaveExit

__all__ = [
    "DEFAULT_EPC_BASE",
    "Clock",
    "Dram",
    "LatencyTable",
    "Machine",
    "MachineConfig",
    "SerialClock",
]

#: Where the default EPC sections start in the physical address space (above any DRAM we
#: hand out) and how far apart consecutive sections are placed.
DEFAULT_EPC_BASE = 0x100_0000_0000  # 1 TiB
DEFAULT_EPC_STRIDE = 0x100_0000_0000
#: DRAM handed out by :class:`Dram` lives below this address.
DRAM_LIMIT = DEFAULT_EPC_BASE

_ZERO_PAGE = bytes(PAGE_SIZE)
#: ENCLS leaf numbers to their enum members (a dict lookup is a fraction of ``EnclsLeaf(n)``).
_ENCLS_LEAVES: Mapping[int, EnclsLeaf] = MappingProxyType({int(m): m for m in EnclsLeaf})


# ---------------------------------------------------------------------------------------
# Latencies


_US = 1_000

#: Default cost of each leaf in simulated nanoseconds, and where the number comes from.
#: Measured figures name their public source (Linux commit 8795359e for EREMOVE; Gramine PR 2154
#: for EEXTEND); ASSUMED marks numbers nothing public gives (every other per-leaf latency).
_DEFAULT_ENCLS_NS: dict[EnclsLeaf, tuple[int, str]] = {
    EnclsLeaf.ECREATE: (10 * _US, "ASSUMED"),
    EnclsLeaf.EADD: (5 * _US, "ASSUMED (an 8 GB Gramine build costs ~33 us/page all-in, incl. paging)"),
    EnclsLeaf.EINIT: (200 * _US, "ASSUMED (RSA-3072 verification in microcode)"),
    EnclsLeaf.EREMOVE: (
        1_800,
        "derived: ~1 min to tear down a ~128 GB enclave (commit 8795359e) = ~1.8 us/page",
    ),
    EnclsLeaf.EDBGRD: (1 * _US, "ASSUMED"),
    EnclsLeaf.EDBGWR: (1 * _US, "ASSUMED"),
    EnclsLeaf.EEXTEND: (
        2_100,
        "derived: EEXTEND of a 4 GB heap added 35.7 s (Graphene PR 2154) = ~34 us/page / 16",
    ),
    EnclsLeaf.ELDB: (12 * _US, "ASSUMED"),
    EnclsLeaf.ELDU: (12 * _US, "ASSUMED"),
    EnclsLeaf.EBLOCK: (1 * _US, "ASSUMED"),
    EnclsLeaf.EPA: (3 * _US, "ASSUMED"),
    EnclsLeaf.EWB: (12 * _US, "ASSUMED"),
    EnclsLeaf.ETRACK: (1 * _US, "ASSUMED"),
    EnclsLeaf.EAUG: (3 * _US, "ASSUMED"),
    EnclsLeaf.EMODPR: (2 * _US, "ASSUMED"),
    EnclsLeaf.EMODT: (2 * _US, "ASSUMED"),
    EnclsLeaf.EUPDATESVN: (10 * _US, "ASSUMED: not published (Sean Christopherson's '10us' is hypothetical)"),
}

_DEFAULT_ENCLU_NS: dict[EncluLeaf, tuple[int, str]] = {
    EncluLeaf.EREPORT: (8 * _US, "ASSUMED"),
    EncluLeaf.EGETKEY: (5 * _US, "ASSUMED"),
    EncluLeaf.EENTER: (
        1_600,
        "derived: an SDK ECALL round trip is ~8,000 cycles (~3.2 us at 2.5 GHz), half each way",
    ),
    EncluLeaf.ERESUME: (1_600, "ASSUMED: as EENTER"),
    EncluLeaf.EEXIT: (1_600, "derived: see EENTER"),
    EncluLeaf.EACCEPT: (1 * _US, "ASSUMED"),
    EncluLeaf.EMODPE: (1 * _US, "ASSUMED"),
    EncluLeaf.EACCEPTCOPY: (2 * _US, "ASSUMED"),
    EncluLeaf.EDECCSSA: (1 * _US, "ASSUMED"),
}

#: Cost of an asynchronous exit (AEX) and of an enclave memory access, in ns.
_DEFAULT_AEX_NS = (2 * _US, "ASSUMED")


@dataclass(frozen=True)
class LatencyTable:
    """Simulated cost of each leaf (ns), configurable per machine."""

    encls: Mapping[EnclsLeaf, int] = field(
        default_factory=lambda: MappingProxyType({k: v[0] for k, v in _DEFAULT_ENCLS_NS.items()})
    )
    enclu: Mapping[EncluLeaf, int] = field(
        default_factory=lambda: MappingProxyType({k: v[0] for k, v in _DEFAULT_ENCLU_NS.items()})
    )
    aex: int = _DEFAULT_AEX_NS[0]

    @staticmethod
    def sources() -> dict[str, str]:
        """Where each default comes from (for reports and docs)."""
        out = {leaf.name: src for leaf, (_, src) in _DEFAULT_ENCLS_NS.items()}
        out.update({leaf.name: src for leaf, (_, src) in _DEFAULT_ENCLU_NS.items()})
        out["AEX"] = _DEFAULT_AEX_NS[1]
        return out

    def with_overrides(self, overrides: Mapping[str, int]) -> LatencyTable:
        """A copy with some leaves' costs replaced, by leaf name (``{"EREMOVE": 2000}``)."""
        encls = dict(self.encls)
        enclu = dict(self.enclu)
        aex = self.aex
        for name, ns in overrides.items():
            if not isinstance(ns, int) or isinstance(ns, bool) or ns < 0:
                raise InvalidArgument(f"latency for {name} must be a non-negative int of ns, got {ns!r}")
            if name in EnclsLeaf.__members__:
                encls[EnclsLeaf[name]] = ns
            elif name in EncluLeaf.__members__:
                enclu[EncluLeaf[name]] = ns
            elif name == "AEX":
                aex = ns
            else:
                raise InvalidArgument(f"unknown leaf {name!r} in latency overrides")
        return LatencyTable(MappingProxyType(encls), MappingProxyType(enclu), aex)


class Clock(Protocol):
    """Where leaf costs go: the scheduler charges the running task, the default a global clock."""

    def charge(self, cpu: int, ns: int) -> None: ...

    def now_ns(self) -> int: ...


class SerialClock:
    """The default clock: one global simulated time, advanced by every charge."""

    def __init__(self) -> None:
        self._now = 0

    def charge(self, cpu: int, ns: int) -> None:
        self._now += ns

    def now_ns(self) -> int:
        return self._now


# ---------------------------------------------------------------------------------------
# Configuration


def _default_sections() -> tuple[EpcSectionConfig, ...]:
    return (EpcSectionConfig(DEFAULT_EPC_BASE, 256 * PAGE_SIZE, 0),)


@dataclass(frozen=True)
class MachineConfig:
    """Static description of a platform (what CPUID and the BIOS would report)."""

    sockets: int = 1
    cpus_per_socket: int = 4
    epc_sections: tuple[EpcSectionConfig, ...] = field(default_factory=_default_sections)
    sgx2: bool = True
    eupdatesvn: bool = True
    #: CPUID.(0x12,0).EAX[11]: ENCLU[EDECCSSA] (AEX-Notify's leaf).
    edeccssa: bool = True
    early_microcode: MicrocodePatch = field(
        default_factory=lambda: MicrocodePatch.with_svns(0xD0003A5, base=2, late_microcode=2, name="early")
    )
    latency: LatencyTable = field(default_factory=LatencyTable)
    #: CPUID.(0x12,0).EBX: supported MISCSELECT bits (EXINFO).
    miscselect_supported: int = 0x1
    #: CPUID.(0x12,1).EAX|EBX<<32: ATTRIBUTES bits ECREATE accepts (INIT excluded by ECREATE).
    attributes_supported: int = int(
        Attributes.INIT
        | Attributes.DEBUG
        | Attributes.MODE64BIT
        | Attributes.PROVISIONKEY
        | Attributes.EINITTOKENKEY
        | Attributes.KSS
        | Attributes.AEXNOTIFY
    )
    #: CPUID.(0x12,1).ECX|EDX<<32: XFRM bits ECREATE accepts (x87, SSE, AVX).
    xfrm_supported: int = 0x7
    #: CPUID.(0x12,0).EDX[15:8]: log2 of the largest 64-bit enclave.
    max_enclave_size_64_log2: int = 47
    #: CPUID.(0x12,0).EDX[7:0]: log2 of the largest 32-bit enclave.
    max_enclave_size_32_log2: int = 31

    def __post_init__(self) -> None:
        for name in ("sockets", "cpus_per_socket"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidArgument(f"{name} must be a positive int, got {value!r}")
        if self.sockets * self.cpus_per_socket > 1024:
            raise InvalidArgument(
                f"{self.sockets * self.cpus_per_socket} logical CPUs; sgxsim models up to 1024"
            )
        if not isinstance(self.early_microcode, MicrocodePatch):
            raise InvalidArgument(f"early_microcode must be a MicrocodePatch, got {self.early_microcode!r}")
        if self.attributes_supported & SGX_ATTR_RESERVED_MASK:
            raise InvalidArgument(f"attributes_supported {self.attributes_supported:#x} sets reserved bits")
        # Validation of the sections themselves happens in Epc().

    @property
    def ncpus(self) -> int:
        return self.sockets * self.cpus_per_socket

    def replace(self, **changes: object) -> MachineConfig:
        return replace(self, **changes)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------
# DRAM


#: DRAM below this address is left to firmware.
_DRAM_FIRST = 0x10_0000


class Dram:
    """Ordinary (non-EPC) physical memory: sparse pages, zero where never written.

    In this model kernel virtual addresses equal physical addresses (the direct map),
    so the driver hands ENCLS the addresses it allocates here.
    """

    def __init__(self, limit: int = DRAM_LIMIT) -> None:
        self.limit = limit
        self._pages: dict[int, bytearray] = {}
        self._next = _DRAM_FIRST  # leave the first MiB alone, as firmware does
        self._free: list[int] = []

    @property
    def total_pages(self) -> int:
        """Pages the allocator can ever hand out (Linux's ``totalram_pages()``)."""
        return (self.limit - _DRAM_FIRST) >> PAGE_SHIFT

    def alloc_page(self) -> int:
        """A free page-aligned physical address (kmalloc/alloc_page of the model)."""
        if self._free:
            return self._free.pop()
        addr = self._next
        if addr + PAGE_SIZE > self.limit:
            raise ModelInvariantError("simulated DRAM exhausted")
        self._next += PAGE_SIZE
        return addr

    def free_page(self, addr: int) -> None:
        self._pages.pop(addr >> PAGE_SHIFT, None)
        self._free.append(addr)

    def read(self, addr: int, length: int) -> bytes:
        out = bytearray()
        while length > 0:
            pfn, off = addr >> PAGE_SHIFT, addr & (PAGE_SIZE - 1)
            n = min(length, PAGE_SIZE - off)
            page = self._pages.get(pfn)
            out += page[off : off + n] if page is not None else bytes(n)
            addr += n
            length -= n
        return bytes(out)

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(bytes(data))
        while view:
            pfn, off = addr >> PAGE_SHIFT, addr & (PAGE_SIZE - 1)
            n = min(len(view), PAGE_SIZE - off)
            page = self._pages.get(pfn)
            if page is None:
                if view[:n] == _ZERO_PAGE[:n]:
                    addr += n
                    view = view[n:]
                    continue
                page = bytearray(PAGE_SIZE)
                self._pages[pfn] = page
            page[off : off + n] = view[:n]
            addr += n
            view = view[n:]

    def page_refs(self, addrs: list[int]) -> list[bytearray | None]:
        """The stored page (or None for a never-written, all-zero page) of each page-aligned
        address, without copying (callers must copy before keeping them)."""
        get = self._pages.get
        return [get(a >> PAGE_SHIFT) for a in addrs]

    def page_is_zero(self, addr: int) -> bool:
        """True if the page at ``addr`` was never written with non-zero data."""
        page = self._pages.get(addr >> PAGE_SHIFT)
        return page is None or page == _ZERO_PAGE

    @property
    def pages_in_use(self) -> int:
        return len(self._pages)


# ---------------------------------------------------------------------------------------
# The machine


class Machine:
    """One SGX platform."""

    def __init__(
        self,
        config: MachineConfig | None = None,
        rng: Rng | None = None,
        clock: Clock | None = None,
        entropy: EntropySource | None = None,
    ) -> None:
        self.config = config if config is not None else MachineConfig()
        if not isinstance(self.config, MachineConfig):
            raise InvalidArgument(f"config must be a MachineConfig, got {self.config!r}")
        self.rng = rng if rng is not None else Rng(0)
        self.clock: Clock = clock if clock is not None else SerialClock()
        self.entropy = entropy if entropy is not None else EntropySource(self.rng.stream("entropy"))
        self.epc = Epc(self.config.epc_sections)
        self.dram = Dram()
        cpus = []
        for s in range(self.config.sockets):
            for c in range(self.config.cpus_per_socket):
                cpus.append(
                    LogicalProcessor(s * self.config.cpus_per_socket + c, s, self.config.early_microcode)
                )
        self.cpus: list[LogicalProcessor] = cpus
        keys = self.rng.stream("keys")
        # Fused at manufacturing: survive every reset.
        self.fused_secret = keys.randbytes(32)
        self.seal_fuses = keys.randbytes(16)
        #: CSR_SGX_OWNEREPOCH: set by the BIOS, constant across boots of this model.
        self.owner_epoch = keys.randbytes(16)
        self._boot_rng = self.rng.stream("boot")
        self.boots = 0
        #: Statistics: leaves executed by name, and outcomes.
        self.stats: dict[str, int] = {}
        #: Logical processors with ENCLS[EUPDATESVN] in flight (a leaf begun beside one is poisoned).
        self._eupdatesvn_cpus: set[int] = set()
        #: hw.encls's (LEAVES, SGX2_LEAVES), imported at the first ENCLS (that package imports this one).
        self._encls_handlers: tuple[Mapping[int, Any], frozenset[int]] | None = None
        #: Enclave threads (hw.enclu) keyed by TCS page index: the continuation of code
        #: that an AEX suspended. Dropped when the TCS page leaves the EPC.
        self.tcs_threads: dict[int, object] = {}
        #: Called as ``on_enclave_step(lp)`` before every memory access of enclave code
        #: (hw.enclu): the scheduler's preemption point inside enclave execution.
        self.on_enclave_step: Callable[[LogicalProcessor], None] | None = None
        #: Compiled enclave programs by SHA-256 of their source (hw.enclu); None = not a program.
        self.enclave_code_cache: dict[bytes, tuple[CodeType, ...] | None] = {}
        #: [MODEL] Debug information: source file text -> file name, for enclave code that holds a
        #: whole file (hw.enclu names that part after it: tracebacks, coverage). Never changes
        #: what a program does. Registered by loaders (``sgxsim.sdk.enclaves``).
        self.enclave_source_files: dict[str, str] = {}
        #: [MODEL] EWB'd SECS hidden state, keyed by the EWB version that sealed it.
        self.evicted_secs: dict[int, object] = {}
        self._power_on()

    # -- resets -------------------------------------------------------------------

    def _power_on(self) -> None:
        self.boots += 1
        #: CR_CPUSVN: None until the first successful ENCLS after a reset takes the snapshot.
        self.cr_cpusvn: bytes | None = None
        #: CR_BASE_PK, the paging key EWB/ELDU use; regenerated by EUPDATESVN.
        self.cr_base_pk: bytes = self._boot_rng.randbytes(16)
        self.cr_report_keyid: bytes = self._boot_rng.randbytes(32)
        self.cr_next_eid = 1
        self.cr_paging_version = 1
        self.tcs_threads.clear()
        self.evicted_secs.clear()

    def cold_reset(self) -> None:
        """Power cycle: EPC contents lost, microcode back to the early patch, new CPUSVN snapshot later.

        Models: a platform reset (SDM Vol. 3D §34.5: EPC contents do not survive reset).
        """
        self.epc.epcm.invalidate_all()
        self.epc.contents.clear()
        self.epc.secs_state.clear()
        for lp in self.cpus:
            lp.ucode = self.config.early_microcode
            self._reset_lp(lp)
        self._power_on()

    def kexec(self) -> None:
        """Jump into a new kernel without a reset: EPCM, CR_CPUSVN and loaded microcode survive.

        No new CPUSVN snapshot is taken, which is why the driver sanitizes the EPC and, in the
        RFC, runs EUPDATESVN at SGX initialization. Every LP leaves enclave mode (the old
        kernel stopped all CPUs), so no thread is inside any enclave.
        """
        for lp in self.cpus:
            self._reset_lp(lp)
        for state in self.epc.secs_state.values():
            state.inside.clear()
            state.track_waiting.clear()
        self.tcs_threads.clear()

    def _reset_lp(self, lp: LogicalProcessor) -> None:
        self._eupdatesvn_cpus.discard(lp.id)
        lp.inflight = None
        lp.inflight_poisoned = False
        lp.active_secs = None
        lp.active_tcs = None
        lp.page_table = None
        lp.pending_interrupt = False

    # -- microcode and CPUSVN -----------------------------------------------------

    def load_microcode(self, cpu: int, patch: MicrocodePatch) -> bool:
        """Apply a microcode patch on one logical processor (WRMSR IA32_BIOS_UPDT_TRIG).

        Models: the processor's patch loader. [MODEL] anti-rollback: a patch whose SVN is
        below the running patch's in any component is refused (returns False). Loading
        does NOT change CR_CPUSVN; only EUPDATESVN (or the snapshot after a reset) does.
        """
        if not isinstance(patch, MicrocodePatch):
            raise InvalidArgument(f"patch must be a MicrocodePatch, got {patch!r}")
        lp = self._lp(cpu)
        if not cpusvn_le(lp.ucode.svn, patch.svn):
            return False
        lp.ucode = patch
        return True

    def min_loaded_svn(self) -> bytes:
        """Component-wise minimum SVN of the patches loaded on all logical processors."""
        return cpusvn_min(lp.ucode.svn for lp in self.cpus)

    @property
    def cpusvn(self) -> bytes:
        """CR_CPUSVN as EREPORT would report it now (taking the snapshot if not yet taken)."""
        if self.cr_cpusvn is None:
            return self.min_loaded_svn()
        return self.cr_cpusvn

    def _take_cpusvn_snapshot(self) -> None:
        if self.cr_cpusvn is None:
            self.cr_cpusvn = self.min_loaded_svn()

    # -- CPUID --------------------------------------------------------------------

    def __repr__(self) -> str:
        cfg = self.config
        snap = self.cr_cpusvn
        cpusvn = snap.hex() if snap is not None else f"{self.min_loaded_svn().hex()} (no snapshot yet)"
        return (
            f"Machine(sockets={cfg.sockets}, cpus={len(self.cpus)}, "
            f"epc={self.epc.npages * PAGE_SIZE >> 20} MiB in {len(self.epc.sections)} section(s), "
            f"enclaves={len(self.epc.secs_state)}, cpusvn={cpusvn}, "
            f"sgx2={cfg.sgx2}, eupdatesvn={cfg.eupdatesvn})"
        )

    def cpuid(self, leaf: int, subleaf: int = 0) -> tuple[int, int, int, int]:
        """CPUID leaf 0x12 (other leaves return zeros): (EAX, EBX, ECX, EDX).

        Models: SDM Vol. 2A CPUID leaf 12H; sub-leaf 0 EAX: SGX1 (bit 0), SGX2 (1), EUPDATESVN
        (10), EDECCSSA (11).
        """
        if leaf != 0x12:
            return (0, 0, 0, 0)
        cfg = self.config
        if subleaf == 0:
            eax = (
                0x1
                | (0x2 if cfg.sgx2 else 0)
                | (SGX_CPUID_EUPDATESVN if cfg.eupdatesvn else 0)
                | (SGX_CPUID_EDECCSSA if cfg.edeccssa else 0)
            )
            edx = (cfg.max_enclave_size_32_log2 & 0xFF) | ((cfg.max_enclave_size_64_log2 & 0xFF) << 8)
            return (eax, cfg.miscselect_supported & 0xFFFFFFFF, 0, edx)
        if subleaf == 1:
            a, x = cfg.attributes_supported, cfg.xfrm_supported
            return (a & 0xFFFFFFFF, a >> 32, x & 0xFFFFFFFF, x >> 32)
        i = subleaf - 2
        if 0 <= i < len(self.epc.sections):
            s = self.epc.sections[i]
            return encode_epc_section(s.base, s.size)
        return (0, 0, 0, 0)

    # -- ENCLS --------------------------------------------------------------------

    def _lp(self, cpu: int) -> LogicalProcessor:
        if not isinstance(cpu, int) or not 0 <= cpu < len(self.cpus):
            raise InvalidArgument(f"no logical processor {cpu!r} (machine has {len(self.cpus)})")
        return self.cpus[cpu]

    def encls(self, cpu: int, leaf: int, rbx: int = 0, rcx: int = 0, rdx: int = 0) -> LeafResult:
        """Execute one ENCLS leaf atomically on logical processor ``cpu``."""
        self.encls_begin(cpu, leaf)
        try:
            return self.encls_exec(cpu, leaf, rbx, rcx, rdx)
        finally:
            self.encls_end(cpu)

    def encls_begin(self, cpu: int, leaf: int) -> None:
        """Mark ``leaf`` in flight on ``cpu`` (the scheduler may switch tasks before exec)."""
        lp = self._lp(cpu)
        if lp.inflight is not None:
            raise ModelInvariantError(f"CPU {cpu} already has ENCLS[{lp.inflight!r}] in flight")
        member = _ENCLS_LEAVES.get(leaf)
        if member is None:
            lp.inflight = None
            lp.inflight_poisoned = True
            return
        lp.inflight = member
        busy = self._eupdatesvn_cpus
        lp.inflight_poisoned = bool(busy) and any(c != cpu for c in busy)
        if member is EnclsLeaf.EUPDATESVN:
            busy.add(cpu)

    def eupdatesvn_in_flight(self) -> bool:
        """Whether some logical processor has ENCLS[EUPDATESVN] in flight."""
        return bool(self._eupdatesvn_cpus)

    def encls_exec(self, cpu: int, leaf: int, rbx: int = 0, rcx: int = 0, rdx: int = 0) -> LeafResult:
        """Run the body of the in-flight leaf and return its SDM outcome."""
        handlers = self._encls_handlers
        if handlers is None:
            from sgxsim.hw.encls import LEAVES, SGX2_LEAVES  # hw.encls imports this module

            handlers = self._encls_handlers = (LEAVES, SGX2_LEAVES)
        leaves, sgx2_leaves = handlers
        lp = self._lp(cpu)
        inflight = lp.inflight
        if inflight is not None and inflight != leaf:
            raise ModelInvariantError(f"CPU {cpu}: exec of leaf {leaf:#x} but {inflight!r} is in flight")
        member = _ENCLS_LEAVES.get(leaf)
        name = member.name if member is not None else f"ENCLS[{leaf:#x}]"
        self.stats[name] = self.stats.get(name, 0) + 1
        handler = leaves.get(leaf) if inflight is not None else None
        if lp.in_enclave:
            return Fault(Vector.UD)  # SDM ENCLS: #UD if executed in enclave mode (before the leaf checks)
        if lp.inflight_poisoned or handler is None or member is None:
            # An unsupported leaf, or one begun while EUPDATESVN was in flight: #GP(0).
            return gp0()
        if not self.config.sgx2 and leaf in sgx2_leaves:
            return gp0()
        if member is EnclsLeaf.EUPDATESVN and not self.config.eupdatesvn:
            return gp0()
        if self.cr_cpusvn is None:
            self._take_cpusvn_snapshot()
        result = handler(self, lp, rbx, rcx, rdx)
        self.clock.charge(lp.id, self.config.latency.encls.get(member, 0))
        return result

    def encls_end(self, cpu: int) -> None:
        lp = self._lp(cpu)
        if lp.inflight is EnclsLeaf.EUPDATESVN:
            self._eupdatesvn_cpus.discard(cpu)
        lp.inflight = None
        lp.inflight_poisoned = False

    # -- ENCLU --------------------------------------------------------------------

    def enclu(
        self,
        cpu: int,
        leaf: int,
        rbx: int = 0,
        rcx: int = 0,
        rdx: int = 0,
        *,
        rsi: int = 0,
        rdi: int = 0,
        r8: int = 0,
        r9: int = 0,
    ) -> EnclaveExit | Fault:
        """Execute an ENCLU leaf from outside the enclave (EENTER, ERESUME) on ``cpu``.

        RDX, RSI, RDI, R8 and R9 pass through to the enclave at EENTER (the vDSO's ABI). The
        in-enclave leaves (EREPORT, EGETKEY, EACCEPT, ...) are issued by enclave code through
        :mod:`sgxsim.hw.enclu`'s enclave context.
        """
        from sgxsim.hw import enclu as user_leaves

        return user_leaves.execute(self, self._lp(cpu), leaf, rbx, rcx, rdx, rsi=rsi, rdi=rdi, r8=r8, r9=r9)

    # -- helpers for leaves ---------------------------------------------------------

    def next_eid(self) -> int:
        eid = self.cr_next_eid
        self.cr_next_eid += 1
        return eid

    def next_paging_version(self) -> int:
        v = self.cr_paging_version
        self.cr_paging_version += 1
        return v

    def charge(self, cpu: int, ns: int) -> None:
        self.clock.charge(cpu, ns)

    def describe(self) -> dict[str, object]:
        """A summary of the platform (``sgxsim info``)."""
        eax, ebx, ecx, edx = self.cpuid(0x12, 0)
        return {
            "cpuid_12_0": {"eax": eax, "ebx": ebx, "ecx": ecx, "edx": edx},
            "sgx1": bool(eax & 1),
            "sgx2": bool(eax & 2),
            "eupdatesvn": bool(eax & SGX_CPUID_EUPDATESVN),
            "edeccssa": bool(eax & SGX_CPUID_EDECCSSA),
            "epc_sections": [
                {
                    "index": s.index,
                    "base": s.base,
                    "size": s.size,
                    "node": s.node,
                    "pages": s.npages,
                    "cpuid": self.cpuid(0x12, 2 + s.index),
                }
                for s in self.epc.sections
            ],
            "epc_pages": self.epc.npages,
            "cpus": [
                {
                    "id": lp.id,
                    "socket": lp.socket,
                    "microcode_revision": lp.ucode.revision,
                    "microcode_svn": lp.ucode.svn.hex(),
                }
                for lp in self.cpus
            ],
            "cpusvn": self.cpusvn.hex(),
            "cpusvn_snapshot_taken": self.cr_cpusvn is not None,
        }
