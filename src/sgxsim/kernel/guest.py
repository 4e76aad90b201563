"""The guest's view of the platform: a :class:`~sgxsim.hw.machine.Machine` whose EPC is a
vEPC-backed guest-physical range and whose leaves run on the host's EPC pages.

An unmodified :class:`~sgxsim.kernel.main.Kernel` boots on a :class:`GuestMachine` (it is a
``Machine``), numbers its EPC pages 0..n-1 from the guest's CPUID sections, and hands ENCLS
guest-physical operands. The hardware leaves (:mod:`sgxsim.hw.encls`, :mod:`sgxsim.hw.enclu`,
also their batch paths) run unchanged on this machine; what they touch is translated, which is
what VMX non-root execution with EPT does:

* ``epc`` (:class:`GuestEpc`): guest sections and guest page indices, but the EPCM fields,
  page contents and SECS hidden state are the *host's*, reached through the EPT (guest EPC page
  index -> host EPC page index); an EPCM ENCLAVESECS value is translated both ways, so the host
  sees its own indices (its EREMOVE of a guest page finds the right SECS) and the guest its own;
* ``dram`` (:class:`GuestDram`): guest RAM, i.e. the VMM's anonymous memory on the host;
* package state (CR_CPUSVN, CR_BASE_PK, the fused keys, the EID and paging-version counters),
  the clock and the entropy source are the host's: a guest enclave derives the keys the same
  enclave would on the host;
* ``cpus`` are the vCPUs (their IA32_SGXLEPUBKEYHASH values are KVM's virtual MSRs);
* ENCLS leaves set in the ENCLS-exiting bitmap go to :meth:`sgxsim.kernel.kvm.Vm.handle_encls`;
* CPUID leaf 0x12 is the VM's (KVM + QEMU).

Models: Intel SDM Vol. 3D ch. 39 (SGX in VMX operation: ENCLS exiting, EPT on EPC) and
arch/x86/kvm (EPT, CPUID); see :mod:`sgxsim.kernel.kvm`.
Differs: an EPCM entry that is invalid reads ENCLAVESECS = 0 in the guest whatever the host array
holds (the field is meaningless there); the guest cannot load microcode (KVM ignores the write:
``load_microcode`` returns False) and has no reset of its own (``cold_reset``/``kexec`` raise
InvalidArgument: reset the VM through :meth:`~sgxsim.kernel.kvm.Vm.reset_epc`).
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np
import numpy.typing as npt

from sgxsim.errors import InvalidArgument
from sgxsim.hw.arch import PAGE_SIZE, LeafResult
from sgxsim.hw.cpu import LogicalProcessor, MicrocodePatch
from sgxsim.hw.epc import Epc, Epcm, EpcSectionConfig, SecsState
from sgxsim.hw.machine import Dram, Machine, MachineConfig

if TYPE_CHECKING:
    from sgxsim.kernel.kvm import Ept, Vm

__all__ = ["GuestDram", "GuestEpc", "GuestMachine", "Vcpu"]

V = TypeVar("V")


class _EptArray:
    """One EPCM field of the guest's EPC: the host's numpy array seen through the EPT.

    Indexing (int, slice, index array, boolean mask) reads and writes the host array at the
    host indices; ``secs`` values are translated (guest SECS index <-> host SECS index).
    Whole-array use (``np.asarray``, ``~``, ``&``, ``==``, ``.any()``) gathers a guest-indexed copy.
    """

    __slots__ = ("_ept", "_host", "_secs", "_valid")

    def __init__(self, host: npt.NDArray[Any], ept: Ept, valid: npt.NDArray[np.bool_] | None) -> None:
        self._host = host
        self._ept = ept
        #: The host VALID array when this is the ENCLAVESECS field (values translated).
        self._valid = valid
        self._secs = valid is not None

    def __len__(self) -> int:
        return self._ept.npages

    @property
    def dtype(self) -> np.dtype[Any]:
        return self._host.dtype

    @property
    def nbytes(self) -> int:
        return 0

    def _to_guest(self, h: Any, raw: Any) -> Any:
        assert self._valid is not None
        arr = np.asarray(raw, dtype=np.int64)
        g = self._ept.guest_of_many(np.maximum(arr, 0))
        out = np.where(arr < 0, arr, g)
        out = np.where(self._valid[h], out, 0).astype(self._host.dtype)
        return out if isinstance(raw, np.ndarray) else out[()]

    def _to_host(self, value: Any) -> Any:
        arr = np.asarray(value, dtype=np.int64)
        flat = arr.reshape(-1)
        res = flat.copy()
        for i, v in enumerate(flat.tolist()):
            if v > 0 or (v == 0 and self._ept.g2h[0] >= 0):
                host = self._ept.host_of(v)
                res[i] = -1 if host is None else host
        shaped = res.reshape(arr.shape)
        return shaped if isinstance(value, np.ndarray) else shaped[()]

    def __getitem__(self, key: Any) -> Any:
        h = self._ept.to_host(key)
        raw = self._host[h]
        return self._to_guest(h, raw) if self._secs else raw

    def __setitem__(self, key: Any, value: Any) -> None:
        h = self._ept.to_host(key)
        self._host[h] = self._to_host(value) if self._secs else value

    def __array__(self, dtype: Any = None, copy: Any = None) -> npt.NDArray[Any]:
        out = self[:]
        return np.asarray(out, dtype=dtype) if dtype is not None else np.asarray(out)

    def any(self) -> bool:
        return bool(np.asarray(self).any())

    def all(self) -> bool:
        return bool(np.asarray(self).all())

    def tolist(self) -> list[Any]:
        return list(np.asarray(self).tolist())

    def __iter__(self) -> Iterator[Any]:
        return iter(np.asarray(self))

    def __invert__(self) -> npt.NDArray[Any]:
        out: npt.NDArray[Any] = ~np.asarray(self)
        return out

    def __and__(self, other: Any) -> npt.NDArray[Any]:
        out: npt.NDArray[Any] = np.asarray(self) & np.asarray(other)
        return out

    __rand__ = __and__

    def __or__(self, other: Any) -> npt.NDArray[Any]:
        out: npt.NDArray[Any] = np.asarray(self) | np.asarray(other)
        return out

    __ror__ = __or__

    def __eq__(self, other: object) -> npt.NDArray[Any]:  # type: ignore[override]
        out: npt.NDArray[Any] = np.asarray(self) == np.asarray(other)
        return out

    def __ne__(self, other: object) -> npt.NDArray[Any]:  # type: ignore[override]
        out: npt.NDArray[Any] = np.asarray(self) != np.asarray(other)
        return out

    __hash__ = None  # type: ignore[assignment]


class _EptEpcm(Epcm):
    """The guest's EPCM: every field an :class:`_EptArray` over the host's EPCM."""

    __slots__ = ()

    def __init__(self, host: Epcm, ept: Ept) -> None:
        for name in Epcm.__slots__:
            if name == "npages":
                continue
            field = getattr(host, name)
            setattr(self, name, _EptArray(field, ept, host.valid if name == "secs" else None))
        self.npages = ept.npages

    @property
    def nbytes(self) -> int:
        return 0


class _EptMap(MutableMapping[int, V]):
    """A host dict keyed by EPC page index (contents, SECS state, TCS threads), keyed by guest
    index. Negative keys (the model's EWB-version keys of evicted TCS threads) pass through."""

    def __init__(self, host: MutableMapping[int, V], ept: Ept, negative_passthrough: bool = False) -> None:
        self._host = host
        self._ept = ept
        self._neg = negative_passthrough

    def _h(self, g: object) -> int:
        if not isinstance(g, int | np.integer):
            raise KeyError(g)
        g = int(g)
        if g < 0 and self._neg:
            return g
        h = self._ept.host_of(g)
        if h is None:
            raise KeyError(g)
        return h

    def __getitem__(self, g: int) -> V:
        return self._host[self._h(g)]

    def __setitem__(self, g: int, value: V) -> None:
        self._host[self._h(g)] = value

    def __delitem__(self, g: int) -> None:
        del self._host[self._h(g)]

    def __contains__(self, g: object) -> bool:
        try:
            return self._h(g) in self._host
        except KeyError:
            return False

    def __iter__(self) -> Iterator[int]:
        for h in list(self._host):
            if h < 0 and self._neg:
                yield h
                continue
            g = self._ept.guest_of(h)
            if g is not None:
                yield g

    def __len__(self) -> int:
        return sum(1 for _ in self)


class GuestEpc(Epc):
    """The guest's EPC: its CPUID sections and page numbering, the host's EPCM/contents/SECS
    state through the EPT."""

    def __init__(self, sections: tuple[EpcSectionConfig, ...], host: Epc, ept: Ept) -> None:
        super().__init__(sections)
        if self.npages != ept.npages:
            raise InvalidArgument(f"guest EPC has {self.npages} pages but the EPT maps {ept.npages}")
        self.host = host
        self.ept = ept
        self.epcm = _EptEpcm(host.epcm, ept)
        self.contents = cast("dict[int, bytearray]", _EptMap(host.contents, ept))
        self.secs_state = cast("dict[int, SecsState]", _EptMap(host.secs_state, ept))


class GuestDram(Dram):
    """Guest RAM (guest-physical addresses 1 MiB .. RAM size), kept in the VMM's anonymous
    memory on the host. The guest kernel allocates from it (kmalloc/alloc_page of the guest);
    reads and writes go through the memslot to the host's DRAM."""

    def __init__(self, vm: Vm, size: int) -> None:
        super().__init__(limit=size)
        self.vm = vm

    def _chunks(self, addr: int, length: int) -> Iterator[tuple[int, int, int]]:
        pos = 0
        while pos < length:
            a = addr + pos
            n = min(length - pos, PAGE_SIZE - (a & (PAGE_SIZE - 1)))
            yield a, pos, n
            pos += n

    def read(self, addr: int, length: int) -> bytes:
        host = self.vm.host.machine.dram
        out = bytearray()
        for a, _pos, n in self._chunks(addr, length):
            hpa = self.vm.ram_hpa(a, False)
            out += bytes(n) if hpa is None else host.read(hpa, n)
        return bytes(out)

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        host = self.vm.host.machine.dram
        buf = bytes(data)
        for a, pos, n in self._chunks(addr, len(buf)):
            piece = buf[pos : pos + n]
            if not any(piece) and self.vm.ram_hpa(a, False) is None:
                continue  # an untouched page already reads as zeros
            hpa = self.vm.ram_hpa(a, True)
            if hpa is not None:
                host.write(hpa, piece)

    def free_page(self, addr: int) -> None:
        if self.vm.ram_hpa(addr, False) is not None and not self.page_is_zero(addr):
            self.write(addr, bytes(PAGE_SIZE))
        self._free.append(addr)

    def page_is_zero(self, addr: int) -> bool:
        hpa = self.vm.ram_hpa(addr & ~(PAGE_SIZE - 1), False)
        return hpa is None or self.vm.host.machine.dram.page_is_zero(hpa)

    @property
    def pages_in_use(self) -> int:
        return self.vm.ram_pages_backed()


class Vcpu(LogicalProcessor):
    """[MODEL fix] A vCPU: loading a user page table to run guest code (the vDSO does it before
    every EENTER/ERESUME) is where a vCPU the host halted waits (``host_svn.vcpu_halt_point``),
    so a vCPU kicked out of a guest enclave during the EPC-locked window does not re-enter it."""

    def __setattr__(self, name: str, value: object) -> None:
        if name == "page_table" and value is not None:
            svn = self.__dict__.get("host_svn")
            if svn is not None:
                svn.vcpu_halt_point()
        super().__setattr__(name, value)


class GuestMachine(Machine):
    """The platform as the guest sees it (see the module docstring)."""

    def __init__(self, vm: Vm, config: MachineConfig, vcpus: list[LogicalProcessor], ram_size: int) -> None:
        # Deliberately not Machine.__init__: the silicon state is the host's.
        self.vm = vm
        self.host = vm.host.machine
        self.config = config
        self.rng = self.host.rng
        self.clock = self.host.clock
        self.entropy = self.host.entropy
        self.epc = GuestEpc(config.epc_sections, self.host.epc, vm.ept)
        self.dram = GuestDram(vm, ram_size)
        self.cpus = vcpus
        self.stats: dict[str, int] = {}
        self._eupdatesvn_cpus: set[int] = set()
        self._encls_handlers = None
        self.tcs_threads = cast("dict[int, object]", _EptMap(self.host.tcs_threads, vm.ept, True))
        self.on_enclave_step = None
        self.enclave_code_cache = self.host.enclave_code_cache
        self.enclave_source_files = self.host.enclave_source_files
        self.evicted_secs = self.host.evicted_secs

    def __repr__(self) -> str:
        return f"GuestMachine(vcpus={len(self.cpus)}, epc_pages={self.epc.npages})"

    # -- package state: the host's ---------------------------------------------------------

    @property
    def fused_secret(self) -> bytes:  # type: ignore[override]
        return self.host.fused_secret

    @property
    def seal_fuses(self) -> bytes:  # type: ignore[override]
        return self.host.seal_fuses

    @property
    def owner_epoch(self) -> bytes:  # type: ignore[override]
        return self.host.owner_epoch

    @property
    def boots(self) -> int:  # type: ignore[override]
        return self.host.boots

    @property
    def cr_cpusvn(self) -> bytes | None:
        return self.host.cr_cpusvn

    @cr_cpusvn.setter
    def cr_cpusvn(self, value: bytes | None) -> None:
        self.host.cr_cpusvn = value

    @property
    def cr_base_pk(self) -> bytes:
        return self.host.cr_base_pk

    @cr_base_pk.setter
    def cr_base_pk(self, value: bytes) -> None:
        self.host.cr_base_pk = value

    @property
    def cr_report_keyid(self) -> bytes:
        return self.host.cr_report_keyid

    @cr_report_keyid.setter
    def cr_report_keyid(self, value: bytes) -> None:
        self.host.cr_report_keyid = value

    @property
    def cr_next_eid(self) -> int:
        return self.host.cr_next_eid

    @cr_next_eid.setter
    def cr_next_eid(self, value: int) -> None:
        self.host.cr_next_eid = value

    @property
    def cr_paging_version(self) -> int:
        return self.host.cr_paging_version

    @cr_paging_version.setter
    def cr_paging_version(self, value: int) -> None:
        self.host.cr_paging_version = value

    def min_loaded_svn(self) -> bytes:
        return self.host.min_loaded_svn()

    def next_eid(self) -> int:
        return self.host.next_eid()

    def next_paging_version(self) -> int:
        return self.host.next_paging_version()

    # -- what a guest cannot do ------------------------------------------------------------

    def load_microcode(self, cpu: int, patch: MicrocodePatch) -> bool:
        """A guest's microcode load: KVM ignores writes to IA32_BIOS_UPDT_TRIG. Outcome: False."""
        if not isinstance(patch, MicrocodePatch):
            raise InvalidArgument(f"patch must be a MicrocodePatch, got {patch!r}")
        self._lp(cpu)
        return False

    def cold_reset(self) -> None:
        raise InvalidArgument("a guest has no platform reset of its own; use Vm.reset_epc()")

    def kexec(self) -> None:
        raise InvalidArgument("a guest has no kexec in this model; use Vm.reset_epc()")

    # -- CPUID and ENCLS -------------------------------------------------------------------

    def cpuid(self, leaf: int, subleaf: int = 0) -> tuple[int, int, int, int]:
        """The VM's CPUID leaf 0x12 (KVM's supported bits, QEMU's EPC sections); zeros elsewhere.

        Models: arch/x86/kvm/cpuid.c (leaf 0x12) and QEMU target/i386/cpu.c.
        """
        if leaf != 0x12:
            return (0, 0, 0, 0)
        return self.vm.cpuid_12.get(subleaf, (0, 0, 0, 0))

    def encls_begin(self, cpu: int, leaf: int) -> None:
        """As :meth:`Machine.encls_begin` on the vCPU; a leaf begun while the host runs
        EUPDATESVN on any logical processor is poisoned (#GP) as on bare metal."""
        # vepc = "zap" (fixed default): the host halts vCPUs for the EPC-locked window, so no
        # guest leaf initializes a page the zap already passed or overlaps EUPDATESVN.
        self.vm.host.svn.vcpu_halt_point()
        super().encls_begin(cpu, leaf)
        if self.host.eupdatesvn_in_flight():
            self.cpus[cpu].inflight_poisoned = True

    def encls_exec(self, cpu: int, leaf: int, rbx: int = 0, rcx: int = 0, rdx: int = 0) -> LeafResult:
        """Execute ENCLS on a vCPU: a leaf in the ENCLS-exiting bitmap exits to KVM
        (:meth:`sgxsim.kernel.kvm.Vm.handle_encls`); any other runs natively on the host's EPC
        through the EPT.

        Models: SDM Vol. 3D §39.5 (ENCLS-exiting bitmap; VM exit before the leaf executes).
        Outcomes: the leaf's SgxStatus or Fault, or what KVM reflects (status in RAX, injected
        #GP/#PF/#UD).
        """
        lp = self._lp(cpu)
        if not lp.in_enclave and self.vm.encls_exits(leaf):
            return self.vm.handle_encls(cpu, leaf, rbx, rcx, rdx)
        return super().encls_exec(cpu, leaf, rbx, rcx, rdx)

    def guest_page_to_host(self, index: int) -> int | None:
        """The host EPC page index behind guest EPC page ``index`` (the EPT entry)."""
        return self.vm.ept.host_of(index)

    def guest_phys_to_host(self, gpa: int) -> int | None:
        """The host-physical address behind a guest-physical one (EPC or RAM), or None."""
        g = self.epc.index_of(gpa)
        if g is not None:
            h = self.vm.ept.host_of(g)
            return None if h is None else self.host.epc.phys_of(h) | (gpa & (PAGE_SIZE - 1))
        return self.vm.ram_hpa(gpa, False)
