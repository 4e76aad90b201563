"""KVM with SGX: a VMM process that backs a guest's EPC with /dev/sgx_vepc, the EPT, and the
ENCLS exits KVM handles on the guest's behalf.

A :class:`Vm` is what QEMU + KVM build for ``-object memory-backend-epc,prealloc=on`` and
``-M sgx-epc.0.memdev=...``: a VMM process on the host opens /dev/sgx_vepc once per EPC section,
mmaps it shared (and pre-faults it), maps guest RAM as private anonymous memory, and registers
both as memslots. The guest is an unmodified :class:`~sgxsim.kernel.main.Kernel` booted on a
:class:`~sgxsim.kernel.guest.GuestMachine`, whose ENCLS/ENCLU leaves run on the *host's* EPC pages
after EPT translation (GPA -> HVA through the memslots -> host page through the VMM's page
tables). ENCLS leaves whose bit is set in the ENCLS-exiting bitmap (ECREATE unless the guest may
use every hardware attribute, EINIT when the host has flexible launch control, every leaf KVM
does not virtualize) exit to :meth:`Vm.handle_encls`, which runs ECREATE and EINIT through the
host driver's on-behalf-of paths :func:`sgxsim.kernel.virt.sgx_virt_ecreate` /
:func:`~sgxsim.kernel.virt.sgx_virt_einit` and injects #GP/#PF or returns the SGX code in RAX.

EPC loss: QEMU's reset (and migration) path runs SGX_IOC_VEPC_REMOVE_ALL on every vEPC
(:meth:`Vm.reset_epc`), and a host EUPDATESVN teardown with ``vepc="zap"`` EREMOVEs guest pages;
either way the pages stay mapped into the guest but are EPCM-invalid, so the guest's next
EENTER/ERESUME takes the hardware's EPCM #PF, which its vDSO reports to user space.

Models: arch/x86/kvm/vmx/sgx.c (Linux 6.x: handle_encls, handle_encls_ecreate,
__handle_encls_ecreate, handle_encls_einit, sgx_get_encls_gva, sgx_gpa_to_hva, sgx_inject_fault,
encls_leaf_enabled_in_guest, sgx_intercept_encls_ecreate, vmx_write_encls_bitmap,
setup_default_sgx_lepubkeyhash), arch/x86/kvm/cpuid.c (CPUID 0x12: SGX1|SGX2|EDECCSSA, MISC EXINFO,
ATTRIBUTES & (PRIV|UNPRIV)), QEMU hw/i386/sgx.c (pc_machine_init_sgx_epc: EPC at
4 GiB + above-4G RAM, sections back to back; sgx_epc_get_section -> CPUID 0x12 sub-leaves 2+;
the two-round SGX_IOC_VEPC_REMOVE_ALL on reset, Documentation/arch/x86/sgx.rst).
Differs: the guest kernel's addresses are guest-physical (GVA == GPA, as the host model's
kernel virtual == physical), so KVM's GVA -> GPA walk is the identity; KVM's copy of the SECS
page (its TOCTOU guard) is checked and ECREATE then reads the guest page again (virt.py's
sgx_virt_ecreate takes the contents as a VMM address); the EPT for the EPC is populated when the
VM is created (QEMU's prealloc touches every vEPC page) and lazily otherwise; "exit to user
space" cases (emulation failure, an unexpected exit, KVM_RUN errors) raise :class:`KvmExit`
(QEMU would stop the VM); vCPUs are not scheduled on host CPUs (a vCPU's ENCLS does not mark a
host LP in flight; a host EUPDATESVN in flight still poisons it).
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from sgxsim.errors import InvalidArgument, SgxSimError
from sgxsim.hw.arch import (
    PAGE_SHIFT,
    PAGE_SIZE,
    SGX_ATTR_PRIV_MASK,
    SGX_ATTR_UNPRIV_MASK,
    SGX_CPUID,
    Attributes,
    EnclsLeaf,
    Fault,
    LeafResult,
    PfError,
    SgxStatus,
    Vector,
    encode_epc_section,
    gp0,
    pf,
)
from sgxsim.hw.cpu import LogicalProcessor
from sgxsim.hw.epc import EpcSectionConfig
from sgxsim.hw.machine import MachineConfig
from sgxsim.kernel import uapi as U  # noqa: N812
from sgxsim.kernel import virt
from sgxsim.kernel.guest import GuestMachine, Vcpu
from sgxsim.kernel.locking import NullScheduler
from sgxsim.kernel.main import Kernel, KernelConfig
from sgxsim.kernel.mm import FIXED, _fault_in
from sgxsim.kernel.syscalls import Process

if TYPE_CHECKING:
    from sgxsim.kernel.locking import SchedulerHooks
    from sgxsim.kernel.printk import KernelLog

__all__ = [
    "GUEST_EPC_BASE",
    "GUEST_RAM_LIMIT",
    "KVM_SGX_LEPUBKEYHASH_DEFAULT",
    "Ept",
    "KvmExit",
    "Memslot",
    "Vm",
    "VmConfig",
    "encls_exiting_bitmap",
    "guest_cpuid_0x12",
]

#: QEMU places the EPC at 4 GiB + the RAM above 4 GiB (none here: guest RAM stays below the
#: 32-bit PCI hole), sections back to back.
GUEST_EPC_BASE = 0x1_0000_0000
#: Guest RAM must fit below the PCI hole of QEMU's pc machine (3 GiB).
GUEST_RAM_LIMIT = 0xC000_0000
#: Intel's launch-enclave key hash, KVM's reset value of the guest's virtual
#: IA32_SGXLEPUBKEYHASH0..3 (setup_default_sgx_lepubkeyhash), as four little-endian u64.
KVM_SGX_LEPUBKEYHASH_DEFAULT = struct.pack(
    "<4Q", 0xA6053E051270B7AC, 0x6CFBE8BA8B3B413D, 0xC4916D99F2B3735D, 0xD4F8C05909F9BB3B
)
#: CPUID.(0x12,0).EAX bits KVM can expose: SGX1, SGX2, EDECCSSA (never EUPDATESVN, bit 10).
_KVM_CPUID_12_EAX = 0x1 | 0x2 | (1 << 11)
_SGX_MISC_EXINFO = 0x1
_XFEATURE_MASK_FPSSE = 0x3
_U32 = 0xFFFF_FFFF


class KvmExit(SgxSimError):
    """KVM_RUN returned to the VMM with something QEMU cannot handle; the VM stops.

    ``reason`` is the kvm_run exit reason or errno name (``"KVM_EXIT_INTERNAL_ERROR"``,
    ``"KVM_EXIT_UNKNOWN"``, ``"EFAULT"``, ...); ``data`` is what KVM reports with it.
    """

    def __init__(self, reason: str, data: tuple[int, ...] = ()) -> None:
        super().__init__(f"KVM_RUN exit {reason} {tuple(hex(d) for d in data)}")
        self.reason = reason
        self.data = data


@dataclass(frozen=True)
class VmConfig:
    """What the VMM is started with.

    ``epc_pages``: one vEPC section per entry (QEMU ``sgx-epc.N.memdev``), in pages.
    ``ram_pages``: guest RAM. ``vcpus``: vCPU count. ``sgx2``: expose SGX2 (only if the host has
    it). ``provisioning_allowed``: KVM_CAP_SGX_ATTRIBUTE granted with a /dev/sgx_provision fd
    (the guest may then set PROVISIONKEY). ``prealloc``: pre-fault the vEPC when the VM starts
    (QEMU ``prealloc=on``).
    """

    epc_pages: tuple[int, ...] = (64,)
    ram_pages: int = 4096
    vcpus: int = 2
    sgx2: bool = True
    provisioning_allowed: bool = False
    prealloc: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.epc_pages, tuple) or not 1 <= len(self.epc_pages) <= 8:
            raise InvalidArgument(f"epc_pages must be a tuple of 1..8 section sizes, got {self.epc_pages!r}")
        for n in self.epc_pages:
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise InvalidArgument(f"vEPC section sizes must be positive page counts, got {n!r}")
        for name in ("ram_pages", "vcpus"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidArgument(f"{name} must be a positive int, got {value!r}")
        if self.ram_pages * PAGE_SIZE > GUEST_RAM_LIMIT or self.ram_pages < 512:
            raise InvalidArgument(f"ram_pages {self.ram_pages} outside 512..{GUEST_RAM_LIMIT >> PAGE_SHIFT}")
        for name in ("sgx2", "provisioning_allowed", "prealloc"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidArgument(f"{name} must be a bool, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class Memslot:
    """``struct kvm_memory_slot``: guest-physical range -> VMM virtual address."""

    gpa: int
    size: int
    hva: int
    kind: str  # "ram" or "epc"

    def hva_of(self, gpa: int) -> int | None:
        if self.gpa <= gpa < self.gpa + self.size:
            return self.hva + (gpa - self.gpa)
        return None


def guest_cpuid_0x12(
    host_cpuid: Mapping[int, tuple[int, int, int, int]], sections: tuple[tuple[int, int], ...], sgx2: bool
) -> dict[int, tuple[int, int, int, int]]:
    """The guest's CPUID leaf 0x12 by sub-leaf, from the host's sub-leaves 0 and 1.

    Models: arch/x86/kvm/cpuid.c __do_cpuid_func() case 0x12 (EAX(0) & (SGX1|SGX2|EDECCSSA),
    EBX(0) & MISC_EXINFO, EDX(0) max enclave sizes unchanged; EAX(1) & (PRIV|UNPRIV), EBX(1) = 0,
    XFRM (ECX/EDX(1)) unchanged) and QEMU target/i386/cpu.c (sub-leaves 2+ from the sgx-epc
    sections; SGX2 cleared when not requested). Outcome: {sub-leaf: (EAX, EBX, ECX, EDX)}.
    """
    eax0, ebx0, _ecx0, edx0 = host_cpuid[0]
    eax0 &= _KVM_CPUID_12_EAX
    if not sgx2:
        eax0 &= ~0x2
    eax1, _ebx1, ecx1, edx1 = host_cpuid[1]
    out = {
        0: (eax0, ebx0 & _SGX_MISC_EXINFO, 0, edx0),
        1: (eax1 & (SGX_ATTR_PRIV_MASK | SGX_ATTR_UNPRIV_MASK), 0, ecx1, edx1),
    }
    for i, (base, size) in enumerate(sections):
        out[2 + i] = encode_epc_section(base, size)
    return out


def encls_exiting_bitmap(
    guest_sgx1: bool, guest_sgx2: bool, intercept_ecreate: bool, host_sgx_lc: bool
) -> int:
    """The 64-bit ENCLS-exiting bitmap KVM programs: a set bit makes that leaf exit.

    Models: vmx/sgx.c vmx_write_encls_bitmap() (all ones; SGX1 clears ECREATE..ETRACK, SGX2
    EAUG..EMODT; ECREATE is set again when intercepted, EINIT whenever the host has SGX_LC).
    """
    bitmap = (1 << 64) - 1
    if guest_sgx1:
        bitmap &= ~((1 << (EnclsLeaf.ETRACK + 1)) - 1)
        if intercept_ecreate:
            bitmap |= 1 << EnclsLeaf.ECREATE
    if guest_sgx2:
        bitmap &= ~(((1 << (EnclsLeaf.EMODT + 1)) - 1) & ~((1 << EnclsLeaf.EAUG) - 1))
    if host_sgx_lc:
        bitmap |= 1 << EnclsLeaf.EINIT
    return bitmap


def _canonical(addr: int) -> bool:
    return addr < (1 << 47) or (1 << 64) - (1 << 47) <= addr < (1 << 64)


class Ept:
    """The VM's extended page tables for its EPC: guest EPC page index -> host EPC page index.

    Built from the memslots and the VMM's page tables (what KVM's MMU does on an EPT violation:
    gfn -> hva -> the PFN the VMM's PTE maps, faulting it in like get_user_pages). Guest RAM is
    translated per access by :meth:`Vm.ram_hpa`.
    """

    def __init__(self, vm: Vm, npages: int) -> None:
        self.vm = vm
        #: Guest EPC index -> host EPC index (-1: no EPT entry yet).
        self.g2h: npt.NDArray[np.int64] = np.full(npages, -1, dtype=np.int64)
        self._h2g: dict[int, int] = {}
        self._sorted_h = np.zeros(0, dtype=np.int64)
        self._sorted_g = np.zeros(0, dtype=np.int64)
        self._stale = False

    @property
    def npages(self) -> int:
        return len(self.g2h)

    def _install(self, g: int, h: int) -> None:
        self.g2h[g] = h
        self._h2g[h] = g
        self._stale = True

    def _sorted(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        if self._stale:
            hs = np.fromiter(self._h2g.keys(), dtype=np.int64, count=len(self._h2g))
            gs = np.fromiter(self._h2g.values(), dtype=np.int64, count=len(self._h2g))
            order = np.argsort(hs)
            self._sorted_h, self._sorted_g = hs[order], gs[order]
            self._stale = False
        return self._sorted_h, self._sorted_g

    def populate(self, g: int) -> int:
        """Handle an EPT violation on guest EPC page ``g``: its host page index.

        Models: KVM's EPT violation path (kvm_faultin_pfn -> hva_to_pfn -> the VMM's fault
        handler, here sgx_vepc_fault). Outcome: the host index; raises :class:`KvmExit`
        ("EFAULT") when the host cannot back the page (KVM_RUN returns -EFAULT).
        """
        present = int(self.g2h[g])
        if present >= 0:
            return present
        h = self.vm.epc_fault_in(g)
        if h is None:
            raise KvmExit("EFAULT", (self.vm.guest_epc_gpa(g),))
        self._install(g, h)
        return h

    def to_host(self, key: Any) -> Any:
        """Host indices of guest EPC indices ``key`` (int, slice, index array or mask); EPT
        violations on the way are resolved (:meth:`populate`). A negative scalar index is
        refused (IndexError) rather than wrapping around as numpy would."""
        if isinstance(key, int | np.integer) and key < 0:
            raise IndexError(f"guest EPC index {key} is negative")
        h = self.g2h[key]
        if isinstance(h, np.ndarray):
            if h.size and int(h.min()) < 0:
                for g in np.arange(self.npages)[key][h < 0].tolist():
                    self.populate(int(g))
                h = self.g2h[key]
            return h
        if h < 0:
            return np.int64(self.populate(int(key)))
        return h

    def host_of(self, g: int) -> int | None:
        """Scalar guest -> host index (None: not a guest EPC index)."""
        if not 0 <= g < self.npages:
            return None
        return int(self.to_host(g))

    def guest_of(self, h: int) -> int | None:
        """Scalar host -> guest index (None: the host page does not back this guest)."""
        return self._h2g.get(h)

    def guest_of_many(self, h: npt.NDArray[np.integer]) -> npt.NDArray[np.int64]:
        """Vectorized host -> guest index; -1 where the host page does not back this guest."""
        arr = np.asarray(h, dtype=np.int64)
        hs, gs = self._sorted()
        if not hs.size:
            return np.full(arr.shape, -1, dtype=np.int64)
        pos = np.clip(np.searchsorted(hs, arr), 0, hs.size - 1)
        return np.where(hs[pos] == arr, gs[pos], -1)

    def mapped(self) -> dict[int, int]:
        """Guest index -> host index of every EPT entry."""
        return {g: h for h, g in sorted(self._h2g.items(), key=lambda kv: kv[1])}


class Vm:
    """A KVM guest with SGX: the VMM process, memslots, EPT, vCPUs and the guest machine.

    Models: QEMU's SGX EPC setup (hw/i386/sgx.c, backends/hostmem-epc.c: open /dev/sgx_vepc,
    mmap(MAP_SHARED), prealloc) and KVM's SGX support (arch/x86/kvm/vmx/sgx.c).
    Outcomes: a running VM; OSError from the VMM's open/mmap (ENOENT: no /dev/sgx_vepc, i.e. the
    host lacks VMX or SGX; ENOMEM: the host EPC cannot back the vEPC at prealloc).
    """

    def __init__(
        self, host: Kernel, config: VmConfig | None = None, name: str = "qemu", cpu: int = 0
    ) -> None:
        if not isinstance(host, Kernel):
            raise InvalidArgument(f"host must be a Kernel, got {host!r}")
        self.config = config if config is not None else VmConfig()
        if not isinstance(self.config, VmConfig):
            raise InvalidArgument(f"config must be a VmConfig, got {self.config!r}")
        self.host = host
        self.proc = Process(host, name, cpu=cpu)
        self.alive = True
        #: Exits handled, by leaf name (ECREATE, EINIT, or the leaf that was refused).
        self.exits: dict[str, int] = {}
        #: Exceptions injected into the guest by the ENCLS exit handlers, in order.
        self.injected: list[Fault] = []
        cfg = self.config
        try:
            self.vepc_fds: list[int] = []
            self.memslots: list[Memslot] = []
            gpa = GUEST_EPC_BASE
            for pages in cfg.epc_pages:
                fd = self.proc.open(virt.SGX_VEPC_PATH, U.O_RDWR)
                self.vepc_fds.append(fd)
                size = pages * PAGE_SIZE
                hva = self.proc.mmap(0, size, U.PROT_READ | U.PROT_WRITE, U.MAP_SHARED, fd, 0)
                self.memslots.append(Memslot(gpa, size, hva, "epc"))
                gpa += size
            ram = cfg.ram_pages * PAGE_SIZE
            ram_hva = self.proc.mmap(
                0, ram, U.PROT_READ | U.PROT_WRITE, U.MAP_PRIVATE | U.MAP_ANONYMOUS, -1, 0
            )
            self.memslots.append(Memslot(0, ram, ram_hva, "ram"))
            self.ept = Ept(self, sum(cfg.epc_pages))
            if cfg.prealloc:
                for g in range(self.ept.npages):
                    if self.epc_fault_in(g) is None:
                        raise OSError(U.ENOMEM, os.strerror(U.ENOMEM))
                    self.ept.populate(g)
        except BaseException:
            self.proc.exit()
            self.alive = False
            raise
        hm = host.machine
        host_cpuid = {i: hm.cpuid(SGX_CPUID, i) for i in (0, 1)}
        self.epc_sections: tuple[tuple[int, int], ...] = tuple(
            (s.gpa, s.size) for s in self.memslots if s.kind == "epc"
        )
        self.cpuid_12 = guest_cpuid_0x12(host_cpuid, self.epc_sections, cfg.sgx2 and host.sgx2)
        eax0 = self.cpuid_12[0][0]
        self.guest_sgx1 = bool(eax0 & 0x1)
        self.guest_sgx2 = bool(eax0 & 0x2)
        self.encls_bitmap = encls_exiting_bitmap(
            self.guest_sgx1, self.guest_sgx2, self.sgx_intercept_encls_ecreate(host_cpuid), host.config.sgx_lc
        )
        vcpus: list[LogicalProcessor] = [Vcpu(i, 0, hm.cpus[cpu].ucode) for i in range(cfg.vcpus)]
        for lp in vcpus:
            lp.le_pubkey_hash = KVM_SGX_LEPUBKEYHASH_DEFAULT
            lp.__dict__["host_svn"] = host.svn
        guest_config = MachineConfig(
            sockets=1,
            cpus_per_socket=cfg.vcpus,
            epc_sections=tuple(EpcSectionConfig(base, size, 0) for base, size in self.epc_sections),
            sgx2=self.guest_sgx2,
            eupdatesvn=False,
            early_microcode=hm.config.early_microcode,
            latency=hm.config.latency,
            miscselect_supported=hm.config.miscselect_supported,
            attributes_supported=hm.config.attributes_supported,
            xfrm_supported=hm.config.xfrm_supported,
            max_enclave_size_64_log2=hm.config.max_enclave_size_64_log2,
            max_enclave_size_32_log2=hm.config.max_enclave_size_32_log2,
        )
        #: The guest's view of the platform: boot a Kernel on it (:meth:`boot`).
        self.machine = GuestMachine(self, guest_config, vcpus, ram)
        self.guest: Kernel | None = None
        host.svn.vcpu_kickers.append(self.kick_vcpus)

    def __repr__(self) -> str:
        return f"Vm({self.proc.name!r}, epc_pages={self.config.epc_pages}, alive={self.alive})"

    # -- memory ---------------------------------------------------------------------------

    def slot_of(self, gpa: int) -> Memslot | None:
        """The memslot holding ``gpa`` (kvm_vcpu_gfn_to_memslot)."""
        for s in self.memslots:
            if s.gpa <= gpa < s.gpa + s.size:
                return s
        return None

    def gpa_to_hva(self, gpa: int) -> int | None:
        """``kvm_vcpu_gfn_to_hva`` + offset; None is KVM's error HVA."""
        s = self.slot_of(gpa)
        return None if s is None else s.hva_of(gpa)

    def guest_epc_gpa(self, g: int) -> int:
        """Guest-physical address of guest EPC page index ``g`` (sections back to back)."""
        return GUEST_EPC_BASE + (g << PAGE_SHIFT)

    def epc_fault_in(self, g: int) -> int | None:
        """Fault the VMM's vEPC page behind guest EPC index ``g`` in; its host EPC index.

        Models: the VMM touching its vEPC mapping (QEMU prealloc) / KVM's hva_to_pfn, which
        ends in virt.c sgx_vepc_fault(). Outcome: the host index, or None (SIGBUS: host EPC
        exhausted or locked).
        """
        hva = self.gpa_to_hva(self.guest_epc_gpa(g))
        if hva is None or not self.alive:
            return None
        mm = self.proc.mm
        if _fault_in(mm, hva, True, user=True) != FIXED:
            return None
        pte = mm.lookup(hva)
        if pte is None:
            return None
        return self.host.page_of(pte.phys)

    def ram_hpa(self, gpa: int, write: bool) -> int | None:
        """Host-physical address of guest RAM at ``gpa``; None when nothing backs it.

        A read of a page the VMM never touched returns None (it reads as zeros); a write
        faults the VMM's anonymous page in (KVM's EPT violation -> get_user_pages(FOLL_WRITE)).
        """
        s = self.slot_of(gpa)
        if s is None or s.kind != "ram" or not self.alive:
            return None
        hva = s.hva + (gpa - s.gpa)
        mm = self.proc.mm
        pte = mm.lookup(hva)
        if pte is None or not pte.present or (write and not pte.writable):
            if not write:
                if pte is None or not pte.present:
                    return None
            elif _fault_in(mm, hva & ~(PAGE_SIZE - 1), True, user=True) != FIXED:
                return None
            pte = mm.lookup(hva)
            if pte is None:
                return None
        return (pte.phys & ~(PAGE_SIZE - 1)) | (hva & (PAGE_SIZE - 1))

    def ram_pages_backed(self) -> int:
        """Guest RAM pages the VMM holds as its own anonymous pages."""
        s = next(s for s in self.memslots if s.kind == "ram")
        lo, hi = s.hva >> PAGE_SHIFT, (s.hva + s.size) >> PAGE_SHIFT
        return sum(1 for vpn in self.proc.mm.anon_pages if lo <= vpn < hi)

    # -- guest ----------------------------------------------------------------------------

    def boot(
        self,
        config: KernelConfig | None = None,
        sched: SchedulerHooks | None = None,
        log: KernelLog | None = None,
    ) -> Kernel:
        """Boot the guest kernel (the same driver model) on :attr:`machine`; returns it.

        ``config`` defaults to the host's SGX_LC and no VMX (no nested /dev/sgx_vepc).
        """
        if not self.alive:
            raise InvalidArgument("the VM has been shut down")
        if config is None:
            config = KernelConfig(sgx_lc=self.host.config.sgx_lc, vmx=False)
        self.guest = Kernel(self.machine, sched=sched, log=log, config=config)
        return self.guest

    def reset_epc(self) -> list[int]:
        """QEMU's reset of the virtual EPC: SGX_IOC_VEPC_REMOVE_ALL on every vEPC, then a second
        round on those that still had SECS pages with children.

        Models: Documentation/arch/x86/sgx.rst ("Virtual EPC"): first round on all instances,
        a non-zero second round is a bug. Outcomes: the second-round results (all 0); OSError
        (EBUSY: a vCPU is inside a guest enclave).
        """
        first = [self.proc.ioctl(fd, U.SGX_IOC_VEPC_REMOVE_ALL, 0) for fd in self.vepc_fds]
        return [
            self.proc.ioctl(fd, U.SGX_IOC_VEPC_REMOVE_ALL, 0) if n else 0
            for fd, n in zip(self.vepc_fds, first, strict=True)
        ]

    def shutdown(self) -> None:
        """The VMM exits: its vEPC files are released (every page EREMOVE'd and freed) and its
        RAM is unmapped. The guest's state is simply gone (no guest teardown runs)."""
        if not self.alive:
            return
        self.alive = False
        if self.kick_vcpus in self.host.svn.vcpu_kickers:
            self.host.svn.vcpu_kickers.remove(self.kick_vcpus)
        self.proc.exit()

    def kick_vcpus(self) -> None:
        """Force every vCPU executing guest enclave code out (AEX) and wait until it left
        enclave mode.

        Models: the host IPI reaching the physical CPU a vCPU runs on (a VM exit for the
        external interrupt; an enclave in the guest takes an AEX first), i.e. kvm_vcpu_kick().
        Differs: vCPUs are not pinned to host CPUs here, so the host's IPI code kicks them
        explicitly; the wait uses the guest kernel's IPI wait queue (its vDSO exit path wakes it).
        """
        targets = [lp for lp in self.machine.cpus if lp.in_enclave]
        for lp in targets:
            lp.pending_interrupt = True
        g = self.guest
        if not targets or g is None or isinstance(g.sched, NullScheduler):
            return
        g.ipi_waitq.wait_event(lambda: not any(lp.in_enclave and lp.pending_interrupt for lp in targets))

    # -- ENCLS exits ----------------------------------------------------------------------

    def sgx_intercept_encls_ecreate(self, host_cpuid: Mapping[int, tuple[int, int, int, int]]) -> bool:
        """Whether ECREATE must exit to enforce the guest's CPUID restrictions.

        Models: vmx/sgx.c sgx_intercept_encls_ecreate(): without provisioning access, or when
        the guest's MISCSELECT/size (sub-leaf 0 EBX, EDX) or ATTRIBUTES/XFRM (sub-leaf 1)
        differ from the hardware's.
        """
        if not self.config.provisioning_allowed:
            return True
        g0, g1 = self.cpuid_12[0], self.cpuid_12[1]
        h0, h1 = host_cpuid[0], host_cpuid[1]
        return g0[1] != h0[1] or g0[3] != h0[3] or g1 != h1

    def encls_exits(self, leaf: int) -> bool:
        """Whether ENCLS[leaf] executed by the guest causes a VM exit (bitmap bit; leaves >= 63
        use bit 63)."""
        return bool(self.encls_bitmap >> min(max(leaf, 0), 63) & 1)

    def _inject(self, fault: Fault) -> Fault:
        self.injected.append(fault)
        return fault

    def handle_encls(self, vcpu: int, leaf: int, rbx: int, rcx: int, rdx: int) -> LeafResult:
        """Handle an ENCLS exit; the outcome the guest sees (RAX status or an injected fault).

        Models: vmx/sgx.c handle_encls(): #UD without guest SGX1; #GP for a leaf KVM does not
        enable in the guest (EUPDATESVN, ELDBC/ELDUC, SGX2 leaves without SGX2, unknown
        leaves); ECREATE and EINIT emulated; anything else is an unexpected exit (KvmExit
        "KVM_EXIT_UNKNOWN").
        """
        name = EnclsLeaf(leaf).name if leaf in EnclsLeaf._value2member_map_ else f"ENCLS[{leaf:#x}]"
        self.exits[name] = self.exits.get(name, 0) + 1
        if not self.guest_sgx1:
            return self._inject(Fault(int(Vector.UD)))
        enabled = EnclsLeaf.ECREATE <= leaf <= EnclsLeaf.ETRACK or (
            EnclsLeaf.EAUG <= leaf <= EnclsLeaf.EMODT and self.guest_sgx2
        )
        if not enabled:
            return self._inject(gp0())
        if leaf == EnclsLeaf.ECREATE:
            return self.handle_encls_ecreate(vcpu, rbx, rcx)
        if leaf == EnclsLeaf.EINIT:
            return self.handle_encls_einit(vcpu, rbx, rcx, rdx)
        self.host.log.WARN_ONCE(
            "kvm:unexpected_encls", True, "unexpected exit on ENCLS[%u]", leaf, site="handle_encls"
        )
        raise KvmExit("KVM_EXIT_UNKNOWN", (leaf,))

    def _encls_gva(self, gva: int, alignment: int) -> bool:
        """sgx_get_encls_gva() in 64-bit mode: aligned and canonical (else #GP is injected)."""
        return gva % alignment == 0 and _canonical(gva)

    def _hva(self, gpa: int) -> int:
        """sgx_gpa_to_hva(): exit to user space (emulation failure) when no memslot holds it."""
        hva = self.gpa_to_hva(gpa)
        if hva is None:
            raise KvmExit("KVM_EXIT_INTERNAL_ERROR", (gpa, 1))
        return hva

    def _guest_read(self, gpa: int, n: int) -> bytes:
        """kvm_read_guest_virt() for a guest-kernel address (GVA == GPA)."""
        if self.gpa_to_hva(gpa) is None or self.gpa_to_hva(gpa + n - 1) is None:
            raise KvmExit("KVM_EXIT_INTERNAL_ERROR", (gpa, n))
        return self.machine.dram.read(gpa, n)

    def sgx_inject_fault(self, gva: int, trapnr: int) -> Fault:
        """The exception a faulting ECREATE/EINIT reflects into the guest.

        Models: vmx/sgx.c sgx_inject_fault(): a #PF on a host without SGX2 is a bad HVA
        (emulation failure exit); with a guest that has SGX2, an EPCM-signature fault (#PF, or
        #GP on an SGX1 host) becomes #PF(P|W|SGX) at the SECS address; otherwise #GP(0).
        """
        if trapnr == Vector.PF and not self.host.sgx2:
            raise KvmExit("KVM_EXIT_INTERNAL_ERROR", (gva,))
        if (trapnr == Vector.PF or not self.host.sgx2) and self.guest_sgx2:
            return self._inject(pf(gva, int(PfError.P | PfError.W | PfError.SGX)))
        return self._inject(gp0())

    def handle_encls_ecreate(self, vcpu: int, rbx: int, rcx: int) -> LeafResult:
        """Emulate the guest's ECREATE through sgx_virt_ecreate().

        Models: vmx/sgx.c handle_encls_ecreate() + __handle_encls_ecreate(): PAGEINFO 32-byte
        and SECS 4 KiB alignment (#GP), PAGEINFO copied, SECINFO 64 / contents 4 KiB alignment
        (#GP), GPA -> HVA (emulation failure), the SECS checked against the guest's CPUID
        (PROVISIONKEY without permission, MISCSELECT/ATTRIBUTES/XFRM bits the guest lacks,
        XFRM without FP|SSE, SIZE >= 2^max: #GP), then ECREATE on the host; a fault becomes
        sgx_inject_fault(SECS). Outcomes: SUCCESS, an injected Fault; KvmExit.
        """
        if not self._encls_gva(rbx, 32) or not self._encls_gva(rcx, PAGE_SIZE):
            return self._inject(gp0())
        linaddr, contents, metadata, _secs = struct.unpack("<4Q", self._guest_read(rbx, 32))
        if not self._encls_gva(metadata, 64) or not self._encls_gva(contents, PAGE_SIZE):
            return self._inject(gp0())
        metadata_hva, contents_hva, secs_hva = self._hva(metadata), self._hva(contents), self._hva(rcx)
        raw = self._guest_read(contents, 64)
        size, _base, _ssa, miscselect = struct.unpack_from("<QQII", raw, 0)
        attributes, xfrm = struct.unpack_from("<QQ", raw, 48)
        c0, c1 = self.cpuid_12[0], self.cpuid_12[1]
        if not self.config.provisioning_allowed and attributes & Attributes.PROVISIONKEY:
            if c1[0] & Attributes.PROVISIONKEY:
                self.host.pr_err_once("kvm:provisionkey", "SGX PROVISIONKEY advertised but not allowed")
            return self._inject(gp0())
        if (
            miscselect & ~c0[1] & _U32
            or attributes & ~c1[0] & _U32
            or (attributes >> 32) & ~c1[1] & _U32
            or xfrm & ~c1[2] & _U32
            or (xfrm >> 32) & ~c1[3] & _U32
            or xfrm & ~((c1[3] << 32 | c1[2]) | _XFEATURE_MASK_FPSSE)
            or xfrm & _XFEATURE_MASK_FPSSE != _XFEATURE_MASK_FPSSE
        ):
            return self._inject(gp0())
        max_log2 = (c0[3] >> 8) & 0xFF if attributes & Attributes.MODE64BIT else c0[3] & 0xFF
        if size >= 1 << max_log2:
            return self._inject(gp0())
        k = self.host
        prev = self.proc._enter()
        try:
            ret, trapnr = virt.sgx_virt_ecreate(k, linaddr, contents_hva, metadata_hva, secs_hva)
        finally:
            self.proc._leave(prev)
        if ret == 0:
            return SgxStatus.SUCCESS
        if ret == -U.EFAULT:
            return self.sgx_inject_fault(rcx, trapnr)
        raise KvmExit(errno.errorcode.get(-ret, f"errno {-ret}"), (ret,))

    def handle_encls_einit(self, vcpu: int, rbx: int, rcx: int, rdx: int) -> LeafResult:
        """Emulate the guest's EINIT through sgx_virt_einit() with the vCPU's virtual
        LEPUBKEYHASH MSRs.

        Models: vmx/sgx.c handle_encls_einit(): SIGSTRUCT 4 KiB, SECS 4 KiB, EINITTOKEN 512-byte
        alignment (#GP), GPA -> HVA (emulation failure), EINIT on the host; a fault becomes
        sgx_inject_fault(SECS); otherwise RAX = the SGX code (ZF set when non-zero).
        Outcomes: SUCCESS or an SgxStatus error code; an injected Fault; KvmExit.
        """
        if not (
            self._encls_gva(rbx, PAGE_SIZE) and self._encls_gva(rcx, PAGE_SIZE) and self._encls_gva(rdx, 512)
        ):
            return self._inject(gp0())
        sig_hva, secs_hva, token_hva = self._hva(rbx), self._hva(rcx), self._hva(rdx)
        lepubkeyhash = self.machine.cpus[vcpu].le_pubkey_hash
        prev = self.proc._enter()
        try:
            ret, trapnr = virt.sgx_virt_einit(self.host, sig_hva, token_hva, secs_hva, lepubkeyhash)
        finally:
            self.proc._leave(prev)
        if ret == -U.EFAULT:
            return self.sgx_inject_fault(rcx, trapnr)
        if ret < 0:
            raise KvmExit(errno.errorcode.get(-ret, f"errno {-ret}"), (ret,))
        return SgxStatus(ret)
