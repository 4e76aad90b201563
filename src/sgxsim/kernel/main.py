"""The SGX core of one simulated Linux kernel: EPC sections, the EPC page allocator, sanitizing
at boot, and the ksgxd reclaimer (EBLOCK, ETRACK, IPIs, EWB), plus the :class:`Kernel` object
that holds what Linux keeps in globals.

One :class:`Kernel` belongs to one :class:`~sgxsim.hw.machine.Machine`. Its attributes are the
globals of ``arch/x86/kernel/cpu/sgx/{main,driver,virt}.c`` (``sgx_epc_sections``,
``sgx_numa_nodes``, ``sgx_active_page_list``, ``sgx_nr_free_pages``, ``sgx_reclaimer_lock``,
``ksgxd_waitq``, the reserved masks, ``zombie_secs_pages``) and the bits of the rest of the kernel
the driver needs (processes, misc devices, the kernel log, the scheduler hooks).

Per-EPC-page state (``struct sgx_epc_page``) is array-backed like the EPCM: ``epc_flags``,
``epc_owner_kind``, ``epc_owner_id`` and ``epc_owner_index`` are numpy arrays indexed by the
global EPC page index, and the ``list`` member every page has (free list, active list, dirty
list, poison list, zombie list) is one intrusive doubly-linked list over page indices
(:class:`PageLists`), so any list operation Linux does in O(1) is O(1) here and a machine with
hundreds of GiB of EPC costs a few bytes per page.

Models: arch/x86/kernel/cpu/sgx/main.c (Linux 6.x mainline: NUMA-aware allocator with the
``nid_start`` fallback loop, sanitize passes, sgx_reclaim_pages with SGX_NR_TO_SCAN = 16,
watermarks 32/64), sgx.h (struct sgx_epc_page flags), encl.c sgx_encl_free_epc_page.
Differs: ksgxd's boot-time sanitizing runs synchronously when the :class:`Kernel` is built
(Linux runs it in the ksgxd thread, racing with early allocations); without a scheduler that
runs ksgxd as a task, waking ksgxd defers its loop to the next safe point (syscall exit, fault
retry), see :meth:`Kernel.run_deferred_work`; memory failure (poison) is tracked per page but
no injection path exists yet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from sgxsim.errors import InvalidArgument, ModelInvariantError
from sgxsim.hw.arch import (
    PAGE_SHIFT,
    SGX_CPUID,
    SGX_CPUID_EPC,
    SGX_CPUID_EPC_INVALID,
    SGX_CPUID_EPC_MASK,
    SGX_CPUID_EPC_SECTION,
    SGX_MAX_EPC_SECTIONS,
    PageType,
    SgxStatus,
    sgx_calc_section_metric,
)
from sgxsim.hw.machine import Machine
from sgxsim.kernel import driver, virt
from sgxsim.kernel import encl as em
from sgxsim.kernel import encls as E  # noqa: N812
from sgxsim.kernel.locking import (
    AtomicInt,
    Mutex,
    NullScheduler,
    SchedulerHooks,
    SpinLock,
    Srcu,
    WaitQueue,
    cond_resched,
)
from sgxsim.kernel.printk import KernelLog
from sgxsim.kernel.provision import register_provision
from sgxsim.kernel.sgx import (
    SGX_EPC_PAGE_GUEST,
    SGX_EPC_PAGE_IN_RELEASE,
    SGX_EPC_PAGE_IS_FREE,
    SGX_EPC_PAGE_LEAKED,
    SGX_EPC_PAGE_POISON,
    SGX_EPC_PAGE_RECLAIMER_TRACKED,
    SGX_EPC_PAGE_VA,
    SGX_EPC_PAGE_ZAP_TRACKED,
    SGX_NR_HIGH_PAGES,
    SGX_NR_LOW_PAGES,
    SGX_NR_TO_SCAN,
    EpcOwner,
    PageLists,
    SgxEpcSection,
    SgxNumaNode,
)
from sgxsim.kernel.svn import SgxSvn, SvnConfig
from sgxsim.kernel.syscalls import Process
from sgxsim.kernel.uapi import EBUSY, ENOMEM, ERESTARTSYS

if TYPE_CHECKING:
    from sgxsim.kernel.encl import SgxEncl
    from sgxsim.kernel.fs import MiscDevice, ShmemFile
    from sgxsim.kernel.virt import SgxVepc

__all__ = [
    "SANITIZE_SLICE_PAGES",
    "SGX_EPC_PAGE_GUEST",
    "SGX_EPC_PAGE_IN_RELEASE",
    "SGX_EPC_PAGE_IS_FREE",
    "SGX_EPC_PAGE_LEAKED",
    "SGX_EPC_PAGE_POISON",
    "SGX_EPC_PAGE_RECLAIMER_TRACKED",
    "SGX_EPC_PAGE_VA",
    "SGX_EPC_PAGE_ZAP_TRACKED",
    "SGX_NR_HIGH_PAGES",
    "SGX_NR_LOW_PAGES",
    "SGX_NR_TO_SCAN",
    "EpcOwner",
    "Kernel",
    "KernelConfig",
    "PageLists",
    "SgxEpcSection",
    "SgxNumaNode",
    "validate_epc",
]

#: Pages per slice of a watched boot's first sanitize pass (``Kernel(boot_progress=...)``).
SANITIZE_SLICE_PAGES = 1 << 20


@dataclass(frozen=True)
class KernelConfig:
    """Boot-time facts about the rest of the platform the SGX code depends on.

    ``sgx_lc``: X86_FEATURE_SGX_LC (flexible launch control); without it /dev/sgx_enclave is
    not registered. ``vmx``: X86_FEATURE_VMX (KVM possible); without it /dev/sgx_vepc is not
    registered. ``osxsave``: X86_FEATURE_OSXSAVE (XFRM mask from CPUID). ``use_batch``: let
    uncontended runs of pages use the hardware batch paths (identical results).
    """

    sgx_lc: bool = True
    vmx: bool = True
    osxsave: bool = True
    use_batch: bool = True
    #: Paths on noexec mounts (mmap of their files gets no VM_MAYEXEC; PROT_EXEC -> EPERM).
    noexec_mounts: tuple[str, ...] = ("/dev/shm/",)


@dataclass
class _Deferred:
    ksgxd_woken: bool = False
    wakeups: int = 0


# ---------------------------------------------------------------------------------------
# The kernel


class Kernel:
    """One booted Linux kernel with the SGX driver, on one machine.

    Models: arch/x86/kernel/cpu/sgx/main.c sgx_init() (page cache init from CPUID, ksgxd
    start with its two sanitize passes, /dev/sgx_provision), driver.c sgx_drv_init(),
    virt.c sgx_vepc_init().
    Outcomes: a kernel whose ``sgx_disabled`` is None, or the reason SGX did not come up
    (no SGX1, zero EPC sections), in which case no SGX device is registered.
    """

    def __init__(
        self,
        machine: Machine,
        sched: SchedulerHooks | None = None,
        log: KernelLog | None = None,
        config: KernelConfig | None = None,
        svn: SvnConfig | None = None,
        boot_progress: Callable[[int, int], None] | None = None,
    ) -> None:
        if not isinstance(machine, Machine):
            raise InvalidArgument(f"machine must be a Machine, got {machine!r}")
        self.machine = machine
        self.sched: SchedulerHooks = sched if sched is not None else NullScheduler()
        self.log = log if log is not None else KernelLog(self.sched, prefix="sgx")
        self.config = config if config is not None else KernelConfig()
        if not isinstance(self.config, KernelConfig):
            raise InvalidArgument(f"config must be a KernelConfig, got {self.config!r}")
        m = machine
        npages = m.epc.npages
        self.npages = npages
        # Heads: dirty, active, zombie, then free + poison per node (up to 2 * max nodes).
        self._max_nodes = max(1, max(lp.socket for lp in m.cpus) + 1, max(s.node for s in m.epc.sections) + 1)
        self.lists = PageLists(npages, 3 + 2 * self._max_nodes)
        self.sgx_dirty_head = self.lists.head(0)
        self.sgx_active_page_list = self.lists.head(1)
        self.zombie_secs_pages = self.lists.head(2)
        # struct sgx_epc_page fields.
        self.epc_flags = np.zeros(npages, dtype=np.uint8)
        self.epc_owner_kind = np.zeros(npages, dtype=np.uint8)
        self.epc_owner_id = np.zeros(npages, dtype=np.int32)
        self.epc_owner_index = np.zeros(npages, dtype=np.int64)
        self._flags = self.epc_flags.data
        self._okind = self.epc_owner_kind.data
        self._oid = self.epc_owner_id.data
        self._oidx = self.epc_owner_index.data
        self.sgx_nr_free_pages = AtomicInt(0, bits=64)
        self.sgx_reclaimer_lock = SpinLock(self.sched, "sgx_reclaimer_lock")
        self.ksgxd_waitq = WaitQueue(self.sched, "ksgxd_waitq")
        #: Senders of a waiting IPI (on_each_cpu_mask(..., wait=1)) sleep here until every
        #: interrupted CPU left enclave mode (woken by the vDSO path after the exit).
        self.ipi_waitq = WaitQueue(self.sched, "smp_call_function")
        self.ksgxd_should_stop = False
        #: Set by a scheduler that runs :meth:`ksgxd` as a task; otherwise work is deferred.
        self.ksgxd_is_task = False
        self._deferred = _Deferred()
        self.sgx_epc_sections: list[SgxEpcSection] = []
        self.sgx_numa_nodes: dict[int, SgxNumaNode] = {}
        self.sgx_numa_mask: list[int] = []
        self.sgx_dirty_pages: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        #: RFC v2 patch 01: the "EPC locked" flag and the SRCU its readers hold. Every path that
        #: turns a free EPC page into a used one checks it inside a read-side section
        #: (:meth:`sgx_epc_read_lock` + :meth:`sgx_epc_is_locked`); the allocator re-checks
        #: (:meth:`sgx_epc_alloc_denied`) and WARNs on a path that forgot.
        self.sgx_epc_locked = False
        self.sgx_lock_epc_srcu = Srcu(self.sched, "sgx_lock_epc_srcu")
        # driver.c
        self.sgx_attributes_reserved_mask = 0
        self.sgx_xfrm_reserved_mask = ~0x3 & 0xFFFF_FFFF_FFFF_FFFF
        self.sgx_misc_reserved_mask = 0
        # virt.c
        self.zombie_secs_pages_lock = Mutex(self.sched, "zombie_secs_pages_lock")
        # The rest of the kernel.
        self.misc_devices: dict[str, MiscDevice] = {}
        self.enclaves: dict[int, SgxEncl] = {}
        self.vepcs: dict[int, SgxVepc] = {}
        self.processes: dict[int, Process] = {}
        self._next_encl_id = 1
        self._next_vepc_id = 1
        self._next_pid = 1
        #: The process whose syscall each task is executing, by task name (see current_proc).
        self._current_procs: dict[str, Process] = {}
        #: DRAM pages the kernel and its processes hold (leak accounting).
        self.dram_pages = 0
        #: tmpfs files by path (/dev/shm/...).
        self.tmpfs: dict[str, ShmemFile] = {}
        #: Per-task kernel scratch pages (the kernel stack where PAGEINFO/SECINFO live).
        self._scratch: dict[str, int] = {}
        #: The shared zero page anonymous read faults map (mm/memory.c ZERO_PAGE).
        self.zero_page = self.dram_alloc()
        self.sgx_disabled: str | None = None
        eax0 = machine.cpuid(SGX_CPUID, 0)[0]
        #: X86_FEATURE_SGX2 (CPUID.(0x12,0).EAX bit 1).
        self.sgx2 = bool(eax0 & 0x2)
        #: X86_FEATURE_SGX_EUPDATESVN (CPUID.(0x12,0).EAX bit 10).
        self.sgx_eupdatesvn = bool(eax0 & (1 << 10))
        #: sgx_usage_count (6.19): open enclaves and vEPC instances.
        self.sgx_usage_count = 0
        self.stats: dict[str, int] = {}
        self._once: set[str] = set()
        #: SVN-update state and procedures (kernel/svn.py).
        self.svn = SgxSvn(self, svn)
        #: ``boot_progress(pages_done, pages)`` during the first sanitize pass (for a progress
        #: display of a large EPC's boot; observation only, see :meth:`_sgx_sanitize_pages`).
        self.boot_progress = boot_progress
        self.sgx_init()
        self.boot_progress = None

    def __repr__(self) -> str:
        if self.sgx_disabled is not None:
            return f"<Kernel sgx disabled: {self.sgx_disabled}>"
        return (
            f"<Kernel policy={self.svn.config.policy} enclaves={len(self.enclaves)} vepcs={len(self.vepcs)} "
            f"processes={len(self.processes)} epc_free={self.sgx_nr_free_pages.read()}/{self.npages} "
            f"warns={self.log.warn_count}>"
        )

    # ------------------------------------------------------------------ context

    def current_cpu(self) -> int:
        """The logical processor ``current`` runs on (``smp_processor_id()``)."""
        task = self.sched.current_task()
        cpu = 0 if task is None else task.cpu
        if not 0 <= cpu < len(self.machine.cpus):
            raise ModelInvariantError(f"current task runs on CPU {cpu}, machine has {len(self.machine.cpus)}")
        return cpu

    @property
    def current_proc(self) -> Process | None:
        """The process whose syscall or fault the current task is executing (``current->mm``).

        [MODEL fix] Kept per scheduler task: with several tasks in syscalls at once, each sees
        its own process (one kernel-wide value was clobbered by whichever task entered last).
        """
        task = self.sched.current_task()
        return self._current_procs.get("-" if task is None else task.name)

    @current_proc.setter
    def current_proc(self, proc: Process | None) -> None:
        task = self.sched.current_task()
        key = "-" if task is None else task.name
        if proc is None:
            self._current_procs.pop(key, None)
        else:
            self._current_procs[key] = proc

    def numa_node_id(self) -> int:
        """The NUMA node of the current CPU (its socket)."""
        return self.machine.cpus[self.current_cpu()].socket

    def signal_pending(self) -> bool:
        """``signal_pending(current)``: the task, or the process making the syscall."""
        task = self.sched.current_task()
        if task is not None and task.signal_pending:
            return True
        proc = self.current_proc
        return proc is not None and proc.signal_pending()

    def current_is_ksgxd(self) -> bool:
        task = self.sched.current_task()
        return task is not None and task.name == "ksgxd"

    def dram_alloc(self) -> int:
        """A zeroed DRAM page (alloc_page / kmalloc(PAGE_SIZE)); counted for leak checks."""
        self.dram_pages += 1
        return self.machine.dram.alloc_page()

    def dram_free(self, phys: int) -> None:
        self.dram_pages -= 1
        self.machine.dram.free_page(phys)

    def scratch_page(self) -> int:
        """The current task's kernel-stack page for on-stack structures (PAGEINFO, SECINFO)."""
        task = self.sched.current_task()
        key = "-" if task is None else task.name
        page = self._scratch.get(key)
        if page is None:
            page = self.dram_alloc()
            self._scratch[key] = page
        return page

    def batch_ok(self) -> bool:
        """Whether uncontended runs may use the hardware batch paths: single-task scheduling, or a
        scheduler whose ``batch_ok()`` says nothing else can run now (the scenario runner's)."""
        if not self.config.use_batch:
            return False
        if isinstance(self.sched, NullScheduler):
            return True
        ask = getattr(self.sched, "batch_ok", None)
        return bool(ask()) if callable(ask) else False

    def batch_budget_ns(self) -> int | None:
        """Simulated ns the current task may spend in a batch path before another task could
        run, from a scheduler that offers it (the scenario runner's ``batch_budget_ns``); None
        where batch paths must not interleave (exploration schedulers walk page by page)."""
        if not self.config.use_batch:
            return None
        ask = getattr(self.sched, "batch_budget_ns", None)
        return int(ask()) if callable(ask) else None

    def pr_err_once(self, key: str, fmt: str, *args: object) -> None:
        """pr_err_once(): log the first time ``key`` is seen."""
        if key not in self._once:
            self._once.add(key)
            self.log.pr_err(fmt, *args)

    def sgx_inc_usage_count(self) -> int:
        """Count an SGX user (enclave or vEPC open); under the 6.19 policy the first one runs
        EUPDATESVN.

        Models: main.c sgx_inc_usage_count() (Linux 6.19), see :meth:`SgxSvn.sgx_inc_usage_count`.
        Outcomes: 0, or -errno (the open fails and the count is unchanged).
        """
        return self.svn.sgx_inc_usage_count()

    def sgx_dec_usage_count(self) -> None:
        """Models: main.c sgx_dec_usage_count() (Linux 6.19)."""
        self.svn.sgx_dec_usage_count()

    # ------------------------------------------------------------------ the EPC lock (readers)

    def sgx_epc_read_lock(self) -> int:
        """``srcu_read_lock(&sgx_lock_epc_srcu)``. Models: RFC v2 patch 01 (reader side)."""
        return self.sgx_lock_epc_srcu.srcu_read_lock()

    def sgx_epc_read_unlock(self, idx: int) -> None:
        """``srcu_read_unlock(&sgx_lock_epc_srcu, idx)``."""
        self.sgx_lock_epc_srcu.srcu_read_unlock(idx)

    def sgx_epc_is_locked(self) -> bool:
        """Whether an SVN update holds the EPC (caller must be in a read-side section).

        Models: RFC v2 patch 01 sgx_epc_is_locked() (lockdep_assert_held on the SRCU).
        """
        self.log.WARN_ON_ONCE(
            "sgx_epc_is_locked:srcu",
            not self.sgx_lock_epc_srcu.held_by_current(),
            site="sgx_epc_is_locked",
        )
        return self.sgx_epc_locked

    def count(self, what: str, n: int = 1) -> None:
        self.stats[what] = self.stats.get(what, 0) + n

    # ------------------------------------------------------------------ init

    def sgx_init(self) -> None:
        """Bring up SGX: EPC sections, sanitize, /dev/sgx_provision, the native and KVM drivers.

        Models: main.c sgx_init(), sgx_page_cache_init(), sgx_setup_epc_section(), ksgxd()'s
        two __sgx_sanitize_pages() passes; driver.c sgx_drv_init(); virt.c sgx_vepc_init().
        """
        eax, _, _, _ = self.machine.cpuid(SGX_CPUID, 0)
        if not eax & 1:
            self.sgx_disabled = "no SGX1"
            self.log.pr_err("SGX1 not supported")
            return
        if not self.sgx_page_cache_init():
            self.sgx_disabled = "no EPC"
            return
        self.ksgxd_sanitize()
        self.svn.at_sgx_init()
        register_provision(self)
        ret = driver.sgx_drv_init(self)
        vret = virt.sgx_vepc_init(self)
        if ret and vret:
            self.sgx_disabled = "no driver"

    def sgx_page_cache_init(self) -> bool:
        """Enumerate EPC sections from CPUID.(0x12, 2+i), set up nodes and the dirty list.

        Models: main.c sgx_page_cache_init() / sgx_setup_epc_section().
        Outcomes: True, or False ("There are zero EPC sections.").
        """
        m = self.machine
        dirty: list[npt.NDArray[np.int64]] = []
        for i in range(SGX_MAX_EPC_SECTIONS):
            eax, ebx, ecx, edx = m.cpuid(SGX_CPUID, SGX_CPUID_EPC + i)
            typ = eax & SGX_CPUID_EPC_MASK
            if typ == SGX_CPUID_EPC_INVALID:
                break
            if typ != SGX_CPUID_EPC_SECTION:
                self.log.pr_err("Unknown EPC section type: %u", typ)
                break
            pa = sgx_calc_section_metric(eax, ebx)
            size = sgx_calc_section_metric(ecx, edx)
            self.log.pr_info("EPC section 0x%x-0x%x", pa, pa + size - 1)
            first = m.epc.index_of(pa)
            if first is None:
                raise ModelInvariantError(f"CPUID EPC section {pa:#x} is not EPC in the machine")
            # phys_to_target_node(): the firmware's node for this range.
            nid = m.epc.section_of(first).node
            if nid not in self.sgx_numa_nodes:
                h = 3 + 2 * nid
                self.sgx_numa_nodes[nid] = SgxNumaNode(
                    nid,
                    self.lists.head(h),
                    self.lists.head(h + 1),
                    SpinLock(self.sched, f"sgx_numa_node{nid}"),
                )
                self.sgx_numa_mask = sorted(self.sgx_numa_nodes)
            self.sgx_numa_nodes[nid].size += size
            sec = SgxEpcSection(i, pa, size, first, nid)
            self.sgx_epc_sections.append(sec)
            dirty.append(np.arange(first, first + sec.npages, dtype=np.int64))
        if not self.sgx_epc_sections:
            self.log.pr_err("There are zero EPC sections.")
            return False
        self.sgx_dirty_pages = np.concatenate(dirty)
        return True

    def section_of(self, page: int) -> SgxEpcSection:
        for s in self.sgx_epc_sections:
            if s.first_page <= page < s.first_page + s.npages:
                return s
        raise ModelInvariantError(f"EPC page {page} is in no section")

    def phys(self, page: int) -> int:
        """``sgx_get_epc_phys_addr`` (== the kernel virtual address in this model)."""
        s = self.section_of(page)
        return s.phys_addr + ((page - s.first_page) << PAGE_SHIFT)

    def page_of(self, phys: int) -> int | None:
        """``sgx_paddr_to_page``: the EPC page index of a physical address, or None."""
        return self.machine.epc.index_of(phys)

    def ksgxd_sanitize(self) -> None:
        """ksgxd's start: two __sgx_sanitize_pages() passes, then WARN if pages stay dirty.

        Models: main.c ksgxd() prologue and __sgx_sanitize_pages(): EREMOVE every dirty page;
        success frees it, failure (a SECS whose children come later) keeps it for pass 2.
        Poisoned pages go to their node's poison list.
        """
        for _ in range(2):
            self._sgx_sanitize_pages()
        self.log.WARN_ON(len(self.sgx_dirty_pages) != 0, site="ksgxd")

    def _sgx_sanitize_pages(self) -> None:
        dirty = self.sgx_dirty_pages
        if len(dirty) == 0:
            return
        # A watched boot (boot_progress, outside any task) goes in slices of the dirty list, in
        # order: the same as one batch (EREMOVE and freeing go page by page in order, the latency
        # charged is the same, and no preemption point does anything before the scheduler runs).
        report = self.boot_progress if self.sched.current_task() is None else None
        self.boot_progress = None  # the second pass (the SECS pages left over) is not counted
        step = len(dirty) if report is None else SANITIZE_SLICE_PAGES
        keep: list[npt.NDArray[np.int64]] = []
        for lo in range(0, len(dirty), step):
            part = dirty[lo : lo + step]
            results = E.eremove_many(self, part)
            keep.append(part[results != 0])
            self._free_pages_bulk(part[results == 0])
            if report is not None:
                report(lo + len(part), len(dirty))
        self.sgx_dirty_pages = np.concatenate(keep)

    def _free_pages_bulk(self, pages: npt.NDArray[np.int64]) -> None:
        """``sgx_free_epc_page`` for many detached pages, in order (vectorized)."""
        if len(pages) == 0:
            return
        self.epc_owner_kind[pages] = EpcOwner.NONE
        self.epc_owner_id[pages] = 0
        self.epc_owner_index[pages] = 0
        waited = (self.epc_flags[pages] & SGX_EPC_PAGE_IN_RELEASE) != 0
        for _ in range(int(np.count_nonzero(waited))):
            self.svn.on_free_epc_page(SGX_EPC_PAGE_IN_RELEASE)
        poison = (self.epc_flags[pages] & SGX_EPC_PAGE_POISON) != 0
        self.epc_flags[pages] = SGX_EPC_PAGE_IS_FREE | (self.epc_flags[pages] & SGX_EPC_PAGE_POISON)
        nids = np.zeros(len(pages), dtype=np.int64)
        for s in self.sgx_epc_sections:
            sel = (pages >= s.first_page) & (pages < s.first_page + s.npages)
            nids[sel] = s.nid
        for nid, node in self.sgx_numa_nodes.items():
            sel = nids == nid
            self.lists.splice_tail_array(node.free_head, pages[sel & ~poison])
            for p in pages[sel & poison].tolist():
                self.lists.add(int(p), node.poison_head)
        self.sgx_nr_free_pages.add(int(np.count_nonzero(~poison)))

    # ------------------------------------------------------------------ allocator

    def sgx_epc_alloc_denied(self) -> int:
        """0, or the -errno with which the "EPC locked" state refuses a new EPC page.

        Every caller checked the lock in an SRCU read-side section it still holds, and may
        finish what it started before the lock was set (the writer waits for it). An allocation
        while locked *outside* any read-side section is a path that forgot the check
        (lockdep_assert_held in the RFC's __ecreate/__eadd/__eldu/__epa/__eaug): WARN, -EBUSY.
        """
        if self.sgx_epc_locked and not self.sgx_lock_epc_srcu.held_by_current():
            self.log.WARN(
                True, "EPC page allocated outside sgx_lock_epc_srcu while locked", site="sgx_alloc_epc_page"
            )
            return -EBUSY
        return 0

    def _sgx_alloc_epc_page_from_node(self, nid: int) -> int:
        node = self.sgx_numa_nodes[nid]
        node.lock.lock()
        page = self.lists.first(node.free_head)
        if page < 0:
            node.lock.unlock()
            return -1
        self.lists.del_init(page)
        self._flags[page] = self._flags[page] & SGX_EPC_PAGE_POISON
        node.lock.unlock()
        self.sgx_nr_free_pages.dec()
        return page

    def sgx_alloc_epc_page_nowait(self) -> int:
        """``__sgx_alloc_epc_page``: a free page, local node first, or -ENOMEM.

        Models: main.c __sgx_alloc_epc_page() (mainline ``nid_start`` loop).
        """
        mask = self.sgx_numa_mask
        cur = self.numa_node_id()
        if cur in self.sgx_numa_nodes:
            start = cur
        else:
            start = next((n for n in mask if n > cur), mask[0])
        i = mask.index(start)
        for k in range(len(mask)):
            page = self._sgx_alloc_epc_page_from_node(mask[(i + k) % len(mask)])
            if page >= 0:
                return page
        return -ENOMEM

    def sgx_alloc_epc_pages_bulk(self, n: int) -> npt.NDArray[np.int64] | None:
        """``n`` pages exactly as ``n`` successive :meth:`sgx_alloc_epc_page_nowait` calls would
        return them (same nodes, same order), or None if fewer than ``n`` are free or the
        "EPC locked" guard refuses (the caller then goes page by page through
        :meth:`sgx_alloc_epc_page`, which reports the errno). Owners are not set; the caller
        records them (:meth:`set_owners`).
        """
        if n <= 0 or self.sgx_nr_free_pages.read() < n or self.sgx_epc_alloc_denied():
            return None
        mask = self.sgx_numa_mask
        cur = self.numa_node_id()
        start = cur if cur in self.sgx_numa_nodes else next((x for x in mask if x > cur), mask[0])
        i = mask.index(start)
        out: list[int] = []
        for j in range(len(mask)):
            node = self.sgx_numa_nodes[mask[(i + j) % len(mask)]]
            node.lock.lock()
            out += self.lists.pop_front_many(node.free_head, n - len(out))
            node.lock.unlock()
            if len(out) == n:
                break
        if len(out) < n:
            # Another task allocated between the free-count check and the pops (each node lock is
            # a preemption point under a scheduler): undo, so the caller goes page by page.
            self.sgx_nr_free_pages.sub(len(out))
            for page in reversed(out):
                self.sgx_unalloc_epc_page(page)
            return None
        pages = np.array(out, dtype=np.int64)
        self.epc_flags[pages] &= SGX_EPC_PAGE_POISON
        self.sgx_nr_free_pages.sub(len(out))
        return pages

    def set_owners(
        self, pages: npt.NDArray[np.int64], kind: EpcOwner, owner_id: int, indices: npt.NDArray[np.int64]
    ) -> None:
        """Record owners of many pages (the ``page->owner = owner`` of each allocation)."""
        self.epc_owner_kind[pages] = int(kind)
        self.epc_owner_id[pages] = owner_id
        self.epc_owner_index[pages] = indices
        if kind == EpcOwner.VA_PAGE:
            self.epc_flags[pages] |= SGX_EPC_PAGE_VA
        elif kind == EpcOwner.VEPC:
            self.epc_flags[pages] |= SGX_EPC_PAGE_GUEST

    def sgx_mark_pages_reclaimable(self, pages: npt.NDArray[np.int64]) -> None:
        """:meth:`sgx_mark_page_reclaimable` for many detached pages, in order (vectorized)."""
        lock = self.sgx_reclaimer_lock
        lock.lock()
        self.epc_flags[pages] |= SGX_EPC_PAGE_RECLAIMER_TRACKED
        self.lists.splice_tail_array(self.sgx_active_page_list, pages)
        lock.unlock()

    def _set_owner(self, page: int, kind: EpcOwner, owner_id: int, index: int) -> None:
        self._okind[page] = int(kind)
        self._oid[page] = owner_id
        self._oidx[page] = index
        if kind == EpcOwner.VA_PAGE:
            self._flags[page] = self._flags[page] | SGX_EPC_PAGE_VA
        elif kind == EpcOwner.VEPC:
            self._flags[page] = self._flags[page] | SGX_EPC_PAGE_GUEST

    def sgx_alloc_epc_page(self, kind: EpcOwner, owner_id: int, index: int, reclaim: bool) -> int:
        """Allocate an EPC page for an owner, reclaiming synchronously if asked and needed.

        Models: main.c sgx_alloc_epc_page(owner, reclaim).
        Outcomes: the page index (>= 0); -ENOMEM (nothing free and nothing reclaimable);
        -EBUSY (nothing free, ``reclaim`` false); -ERESTARTSYS (signal pending while reclaiming);
        or the "EPC locked" errno (see :meth:`sgx_epc_alloc_denied`). Wakes ksgxd when fewer than
        SGX_NR_LOW_PAGES pages remain free.
        """
        denied = self.sgx_epc_alloc_denied()
        if denied:
            return denied
        while True:
            page = self.sgx_alloc_epc_page_nowait()
            if page >= 0:
                self._set_owner(page, kind, owner_id, index)
                break
            if self.lists.empty(self.sgx_active_page_list):
                return -ENOMEM
            if not reclaim:
                page = -EBUSY
                break
            if self.signal_pending():
                page = -ERESTARTSYS
                break
            self.sgx_reclaim_pages()
            cond_resched(self.sched)
        if self.sgx_should_reclaim(SGX_NR_LOW_PAGES):
            self.wake_ksgxd()
        return page

    def sgx_free_epc_page(self, page: int) -> None:
        """Return a page the caller already EREMOVE'd or EWB'd to its node's free list.

        Models: main.c sgx_free_epc_page() (tail of the free list, or the poison list).
        """
        nid = self.section_of(page).nid
        node = self.sgx_numa_nodes[nid]
        node.lock.lock()
        self._set_owner(page, EpcOwner.NONE, 0, 0)
        if self._flags[page] & (SGX_EPC_PAGE_IN_RELEASE | SGX_EPC_PAGE_ZAP_TRACKED):
            self.svn.on_free_epc_page(self._flags[page])
        poison = self._flags[page] & SGX_EPC_PAGE_POISON
        if poison:
            self.lists.add(page, node.poison_head)
        else:
            self.lists.add_tail(page, node.free_head)
        self._flags[page] = SGX_EPC_PAGE_IS_FREE | poison
        node.lock.unlock()
        if not poison:
            self.sgx_nr_free_pages.inc()

    def sgx_unalloc_epc_page(self, page: int) -> None:
        """[MODEL] Undo the most recent allocation of a never-used page: back to the *head* of
        its free list, so a batch that over-allocated leaves the lists as if it had not.
        """
        nid = self.section_of(page).nid
        node = self.sgx_numa_nodes[nid]
        self._set_owner(page, EpcOwner.NONE, 0, 0)
        self.lists.add(page, node.free_head)
        self._flags[page] = SGX_EPC_PAGE_IS_FREE | (self._flags[page] & SGX_EPC_PAGE_POISON)
        self.sgx_nr_free_pages.inc()

    def sgx_encl_free_epc_page(self, page: int) -> None:
        """EREMOVE a page and free it; a failing EREMOVE leaks the page (WARN).

        Models: encl.c sgx_encl_free_epc_page().
        """
        self.log.WARN_ON_ONCE(
            "sgx_encl_free_epc_page:tracked",
            self._flags[page] & SGX_EPC_PAGE_RECLAIMER_TRACKED,
            site="sgx_encl_free_epc_page",
        )
        ret = E.eremove(self, page)
        if self.log.WARN_ONCE(
            "EREMOVE", ret, E.EREMOVE_ERROR_MESSAGE, ret, ret, site="sgx_encl_free_epc_page"
        ):
            self._flags[page] = self._flags[page] | SGX_EPC_PAGE_LEAKED
            self.count("epc_pages_leaked")
            # RFC v2 patch 06: an update waiting for this release must give up.
            self.svn.sgx_zap_abort()
            return
        self.sgx_free_epc_page(page)

    def sgx_mark_page_reclaimable(self, page: int) -> None:
        """Put a page at the tail of the active list. Models: main.c sgx_mark_page_reclaimable()."""
        lock = self.sgx_reclaimer_lock
        lock.lock()
        self._flags[page] = self._flags[page] | SGX_EPC_PAGE_RECLAIMER_TRACKED
        self.lists.add_tail(page, self.sgx_active_page_list)
        lock.unlock()

    def sgx_unmark_page_reclaimable(self, page: int) -> int:
        """Take a page off the active list.

        Models: main.c sgx_unmark_page_reclaimable().
        Outcomes: 0, or -EBUSY when the reclaimer has isolated the page.
        """
        lock = self.sgx_reclaimer_lock
        lock.lock()
        if self._flags[page] & SGX_EPC_PAGE_RECLAIMER_TRACKED:
            if self.lists.empty(page):
                lock.unlock()
                return -EBUSY
            self.lists.del_init(page)
            self._flags[page] = self._flags[page] & ~SGX_EPC_PAGE_RECLAIMER_TRACKED
        lock.unlock()
        return 0

    # ------------------------------------------------------------------ reclaimer

    def sgx_should_reclaim(self, watermark: int) -> bool:
        """Models: main.c sgx_should_reclaim()."""
        return self.sgx_nr_free_pages.read() < watermark and not self.lists.empty(self.sgx_active_page_list)

    def wake_ksgxd(self) -> None:
        """``wake_up(&ksgxd_waitq)``, or remember the wake-up when ksgxd is not a task."""
        self._deferred.wakeups += 1
        if self.ksgxd_is_task:
            self.ksgxd_waitq.wake_up()
        else:
            self._deferred.ksgxd_woken = True

    def run_deferred_work(self) -> None:
        """Let a woken ksgxd run to completion (only when no scheduler runs it as a task).

        Called at safe points: syscall exit, before a faulting access is retried. Models the
        ksgxd thread getting the CPU: it reclaims while fewer than SGX_NR_HIGH_PAGES are free.
        """
        if self.ksgxd_is_task or not self._deferred.ksgxd_woken:
            return
        self._deferred.ksgxd_woken = False
        for _ in range(self.npages // SGX_NR_TO_SCAN + 16):
            if not self.ksgxd_step():
                break

    def ksgxd_step(self) -> bool:
        """One iteration of ksgxd's loop: reclaim a batch if below the high watermark.

        Models: main.c ksgxd() loop body. Outcomes: True if it reclaimed, else False.
        """
        if self.sgx_should_reclaim(SGX_NR_HIGH_PAGES):
            # RFC v2 patch 01: no reclaim pass while an SVN update holds the EPC.
            idx = self.sgx_epc_read_lock()
            try:
                if self.sgx_epc_is_locked():
                    self.count("ksgxd_skipped_locked")
                    return False
                self.count("ksgxd_batches")
                self.sgx_reclaim_pages()
            finally:
                self.sgx_epc_read_unlock(idx)
            return True
        return False

    def ksgxd(self) -> None:
        """The ksgxd thread body for a scheduler that runs it as a task (sanitize done at boot).

        Models: main.c ksgxd(): sleep on ksgxd_waitq until asked to stop or below the high
        watermark with reclaimable pages, reclaim, cond_resched.
        """
        self.ksgxd_is_task = True
        while not self.ksgxd_should_stop:
            self.ksgxd_waitq.wait_event(
                lambda: self.ksgxd_should_stop or self.sgx_should_reclaim(SGX_NR_HIGH_PAGES)
            )
            self.ksgxd_step()
            cond_resched(self.sched)

    def sgx_reclaim_direct(self) -> None:
        """Reclaim a batch now if fewer than SGX_NR_LOW_PAGES are free.

        Models: main.c sgx_reclaim_direct() (used by the SGX2 ioctls before taking encl->lock).
        """
        if self.sgx_should_reclaim(SGX_NR_LOW_PAGES):
            self.sgx_reclaim_pages()

    def owner_encl(self, page: int) -> SgxEncl | None:
        """The enclave an EPC page belongs to (``owner->encl``), if any."""
        kind = self._okind[page]
        if kind in (EpcOwner.ENCL_PAGE, EpcOwner.SECS, EpcOwner.VA_PAGE):
            return self.enclaves.get(int(self._oid[page]))
        return None

    def sgx_reclaim_pages(self) -> None:
        """Reclaim up to SGX_NR_TO_SCAN pages from the head of the active list.

        Models: main.c sgx_reclaim_pages(): isolate (kref_get_unless_zero), age (test and
        clear the PTE Accessed bit in every mm: accessed pages go back to the tail), allocate
        backing and mark BEING_RECLAIMED, then for all survivors zap PTEs + EBLOCK, then
        sgx_reclaimer_write (EWB with the ETRACK / IPI retries, SECS write-back when its last
        child left) and free the page.
        """
        self.count("reclaim_batches")
        lists = self.lists
        chunk: list[tuple[int, SgxEncl] | None] = []
        lock = self.sgx_reclaimer_lock
        lock.lock()
        for _ in range(SGX_NR_TO_SCAN):
            page = lists.first(self.sgx_active_page_list)
            if page < 0:
                break
            lists.del_init(page)
            encl = self.owner_encl(page)
            if encl is not None and encl.refcount.kref_get_unless_zero():
                chunk.append((page, encl))
            else:
                # The owner is freeing the page: it is not put back.
                self._flags[page] = self._flags[page] & ~SGX_EPC_PAGE_RECLAIMER_TRACKED
        lock.unlock()

        backing: dict[int, Any] = {}
        for i, item in enumerate(chunk):
            assert item is not None
            page, encl = item
            pfn = int(self._oidx[page])
            if sgx_reclaimer_age(self, encl, pfn):
                encl.lock.lock()
                b = em.sgx_encl_alloc_backing(encl, pfn - encl.base_pfn)
                if b is not None:
                    backing[i] = b
                    encl.pages.set_being_reclaimed(pfn, True)
                    encl.lock.unlock()
                    continue
                encl.lock.unlock()
            # skip: back to the tail, drop the reference.
            lock.lock()
            lists.add_tail(page, self.sgx_active_page_list)
            lock.unlock()
            encl.refcount.kref_put(em.sgx_encl_release_kref)
            chunk[i] = None
            self.count("reclaim_skipped_young")

        for item in chunk:
            if item is not None:
                sgx_reclaimer_block(self, item[1], item[0])

        for i, item in enumerate(chunk):
            if item is None:
                continue
            page, encl = item
            sgx_reclaimer_write(self, encl, page, backing[i])
            encl.refcount.kref_put(em.sgx_encl_release_kref)
            self._flags[page] = self._flags[page] & ~SGX_EPC_PAGE_RECLAIMER_TRACKED
            self.sgx_free_epc_page(page)
            self.count("pages_reclaimed")

    # ------------------------------------------------------------------ IPIs and MSRs

    def on_each_cpu_mask(self, cpus: set[int] | frozenset[int]) -> None:
        """Send the no-op IPI (sgx_ipi_cb) to ``cpus`` and wait for it to be handled.

        Models: kernel/smp.c on_each_cpu_mask(mask, sgx_ipi_cb, NULL, wait=1). A CPU executing
        enclave code takes an AEX for the interrupt (lp.pending_interrupt); a CPU outside
        enclave mode services it at once. Waiting = yielding until every interrupted CPU left
        enclave mode.
        """
        self.count("ipis", len(cpus))
        targets = []
        for cpu in sorted(cpus):
            lp = self.machine.cpus[cpu]
            if lp.in_enclave:
                lp.pending_interrupt = True
                targets.append(lp)

        def acked() -> bool:
            return not any(lp.in_enclave and lp.pending_interrupt for lp in targets)

        if not isinstance(self.sched, NullScheduler):
            # The targets run on other CPUs: sleep until their exits wake us (a spinning sender
            # would let a priority-based strategy starve the very CPUs it waits for).
            self.sched.preempt("smp_call_function_many")
            self.ipi_waitq.wait_event(acked)
            return
        for _ in range(100_000):
            if acked():
                return
            self.sched.preempt("smp_call_function_many")
        self.log.WARN(
            True, "IPI to CPUs %s never acknowledged", [lp.id for lp in targets], site="on_each_cpu_mask"
        )

    def sgx_update_lepubkeyhash(self, cpu: int, lepubkeyhash: bytes) -> None:
        """Write IA32_SGXLEPUBKEYHASH0..3 on ``cpu`` (must not be preempted before the EINIT).

        Models: main.c sgx_update_lepubkeyhash().
        """
        if len(lepubkeyhash) != 32:
            raise ModelInvariantError("LEPUBKEYHASH must be 32 bytes")
        self.machine.cpus[cpu].le_pubkey_hash = bytes(lepubkeyhash)

    # ------------------------------------------------------------------ registries

    def new_encl_id(self) -> int:
        i = self._next_encl_id
        self._next_encl_id += 1
        return i

    def new_vepc_id(self) -> int:
        i = self._next_vepc_id
        self._next_vepc_id += 1
        return i

    def new_pid(self) -> int:
        i = self._next_pid
        self._next_pid += 1
        return i

    def create_process(self, name: str = "proc", cpu: int = 0) -> Process:
        """A new process (an empty address space, no open files)."""
        return Process(self, name, cpu=cpu)

    # ------------------------------------------------------------------ accounting

    def nr_used_pages(self) -> int:
        """Pages neither free, nor poisoned-free, nor leaked (what owners hold)."""
        f = self.epc_flags
        return int(np.count_nonzero((f & (SGX_EPC_PAGE_IS_FREE | SGX_EPC_PAGE_LEAKED)) == 0)) - len(
            self.sgx_dirty_pages
        )

    def epc_summary(self) -> dict[str, int]:
        """Counts for reports: total, free, used, leaked, dirty, active."""
        f = self.epc_flags
        return {
            "total": self.npages,
            "free": self.sgx_nr_free_pages.read(),
            "used": self.nr_used_pages(),
            "leaked": int(np.count_nonzero(f & SGX_EPC_PAGE_LEAKED)),
            "dirty": len(self.sgx_dirty_pages),
            "active": sum(1 for _ in self.lists.iterate(self.sgx_active_page_list)),
        }


# ---------------------------------------------------------------------------------------
# Reclaimer steps (main.c static functions; they reach into encl.h structures as Linux does)


def sgx_reclaimer_age(k: Kernel, encl: SgxEncl, pfn: int) -> bool:
    """True if the page was not accessed since the last scan in any mm (Accessed bits cleared).

    Models: main.c sgx_reclaimer_age().
    """
    ret = True
    idx = encl.srcu.srcu_read_lock()
    try:
        for encl_mm in list(encl.mm_list):
            mm = encl_mm.mm
            if mm.mm_users <= 0:
                continue
            mm.mmap_lock.down_read()
            ret = not em.sgx_encl_test_and_clear_young(mm, encl, pfn)
            mm.mmap_lock.up_read()
            if not ret:
                break
    finally:
        encl.srcu.srcu_read_unlock(idx)
    return ret


def sgx_reclaimer_block(k: Kernel, encl: SgxEncl, page: int) -> None:
    """Zap the page's PTEs in every mm of the enclave, then EBLOCK it under encl->lock.

    Models: main.c sgx_reclaimer_block().
    """
    em.sgx_zap_enclave_ptes(encl, int(k.epc_owner_index[page]) << PAGE_SHIFT)
    encl.lock.lock()
    ret = E.eblock(k, page)
    if E.encls_failed(ret):
        E.ENCLS_WARN(k, ret, "EBLOCK")
    encl.lock.unlock()


def _sgx_encl_ewb(k: Kernel, page: int, va_epc: int, va_offset: int, backing: Any) -> int:
    """Models: main.c __sgx_encl_ewb(): PAGEINFO{addr 0, secs 0, contents, PCMD}."""
    pginfo = em.write_pageinfo(k, 0, backing.contents, backing.pcmd + backing.pcmd_offset, 0)
    return E.ewb(k, pginfo, page, va_epc, va_offset)


def sgx_encl_ewb(k: Kernel, encl: SgxEncl, ref: int, page: int, backing: Any) -> None:
    """Write a blocked page (or the SECS, ``ref`` = SECS_REF) to its backing with EWB.

    Models: main.c sgx_encl_ewb(): take a slot of the first VA page (a full VA page moves to the
    tail); EWB; on SGX_NOT_TRACKED run ETRACK and retry; if still not tracked, IPI the CPUs the
    enclave may run on (mask computed after ETRACK) and retry. Failure: WARN, slot freed (the page
    stays resident in the EPCM). Success: desc |= slot offset, VA page recorded.
    """
    desc = em._ref_desc(encl, ref) & ~em.SGX_ENCL_PAGE_BEING_RECLAIMED
    em._ref_set_desc(encl, ref, desc)
    va = next(iter(encl.va_pages))
    va_offset = em.sgx_alloc_va_slot(encl, va)
    if em.sgx_va_page_full(encl, va):
        encl.va_pages.move_to_end(va)
    va_epc = encl.va_epc[va]
    ret = _sgx_encl_ewb(k, page, va_epc, va_offset, backing)
    if ret == SgxStatus.SGX_NOT_TRACKED:
        ret = E.etrack(k, encl.secs_epc)
        if ret and E.encls_failed(ret):
            E.ENCLS_WARN(k, ret, "ETRACK")
        ret = _sgx_encl_ewb(k, page, va_epc, va_offset, backing)
        if ret == SgxStatus.SGX_NOT_TRACKED:
            k.on_each_cpu_mask(em.sgx_encl_cpumask(encl))
            ret = _sgx_encl_ewb(k, page, va_epc, va_offset, backing)
    if ret:
        if E.encls_failed(ret):
            E.ENCLS_WARN(k, ret, "EWB")
        em.sgx_free_va_slot(encl, va, va_offset)
    else:
        em._ref_set_desc(encl, ref, em._ref_desc(encl, ref) | va_offset)
        em._ref_set_va(encl, ref, va)
        k.count("ewb")


def sgx_reclaimer_write(k: Kernel, encl: SgxEncl, page: int, backing: Any) -> None:
    """EWB one page; when the enclave's last resident child leaves, also write back its SECS.

    Models: main.c sgx_reclaimer_write() (the SECS goes only if the enclave is initialized).
    """
    encl.lock.lock()
    pfn = int(k.epc_owner_index[page])
    sgx_encl_ewb(k, encl, pfn, page, backing)
    encl.pages.set_epc(pfn, -1)
    encl.secs_child_cnt -= 1
    if encl.secs_child_cnt == 0 and encl.flags & em.SGX_ENCL_INITIALIZED:
        b = em.sgx_encl_get_backing(encl, encl.size >> PAGE_SHIFT)
        if b is not None:
            sgx_encl_ewb(k, encl, em.SECS_REF, encl.secs_epc, b)
            k.sgx_encl_free_epc_page(encl.secs_epc)
            encl.secs_epc = -1
            k.count("secs_evicted")
    encl.lock.unlock()


# ---------------------------------------------------------------------------------------
# Validation (drgn style)


@dataclass
class EpcReport:
    """What :func:`validate_epc` found; ``problems`` is empty when everything agrees."""

    problems: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return not self.problems


def validate_epc(k: Kernel, *, expect_empty: bool = False, allow_leaks: bool = False) -> EpcReport:
    """Check EPC accounting and that the EPCM agrees with the driver's page records.

    Checks: free + used + leaked + dirty = total; ``sgx_nr_free_pages`` equals the free-list
    lengths; every free-list page has IS_FREE and no owner and is invalid in the EPCM; every
    owned page is valid in the EPCM (unless its owner is a vEPC, whose guest may have EREMOVE'd
    it) with the page type its owner implies; active-list pages are RECLAIMER_TRACKED encl
    pages; each enclave's records agree (see :func:`sgx.kernel.encl.validate_encl`).
    ``expect_empty``: also require every page free (after all processes exited).
    """
    rep = EpcReport()
    epcm = k.machine.epc.epcm
    f = k.epc_flags
    total = k.npages
    free_mask = (f & SGX_EPC_PAGE_IS_FREE) != 0
    poison = (f & SGX_EPC_PAGE_POISON) != 0
    leaked = (f & SGX_EPC_PAGE_LEAKED) != 0
    nfree_flag = int(np.count_nonzero(free_mask & ~poison))
    on_lists = 0
    for nid, node in k.sgx_numa_nodes.items():
        pages = k.lists.to_array(node.free_head)
        on_lists += len(pages)
        if len(pages) and not np.all(free_mask[pages]):
            rep.problems.append(f"node {nid}: free list holds pages without IS_FREE")
        if len(pages) and np.any(k.epc_owner_kind[pages] != 0):
            rep.problems.append(f"node {nid}: free list holds owned pages")
        if len(pages) and np.any(epcm.valid[pages]):
            bad = pages[epcm.valid[pages]][:5].tolist()
            rep.problems.append(f"node {nid}: free pages valid in the EPCM: {bad}")
        secs_nids = {
            s.nid
            for s in k.sgx_epc_sections
            if np.any((pages >= s.first_page) & (pages < s.first_page + s.npages))
        }
        if secs_nids - {nid}:
            rep.problems.append(f"node {nid}: free list holds pages of nodes {sorted(secs_nids - {nid})}")
    if on_lists != nfree_flag:
        rep.problems.append(f"{on_lists} pages on free lists but {nfree_flag} flagged IS_FREE")
    if k.sgx_nr_free_pages.read() != on_lists:
        rep.problems.append(f"sgx_nr_free_pages={k.sgx_nr_free_pages.read()} but free lists hold {on_lists}")
    used_mask = ~free_mask & ~leaked
    used_mask[k.sgx_dirty_pages] = False
    used = int(np.count_nonzero(used_mask))
    nleaked = int(np.count_nonzero(leaked))
    npoison_free = int(np.count_nonzero(free_mask & poison))
    if on_lists + npoison_free + used + nleaked + len(k.sgx_dirty_pages) != total:
        rep.problems.append(
            f"free {on_lists} + poisoned {npoison_free} + used {used} + leaked {nleaked} "
            f"+ dirty {len(k.sgx_dirty_pages)} != total {total}"
        )
    if nleaked and not allow_leaks:
        rep.problems.append(f"{nleaked} EPC pages leaked")
    kinds = k.epc_owner_kind
    unowned_used = used_mask & (kinds == EpcOwner.NONE)
    if np.any(unowned_used):
        rep.problems.append(f"used pages without owner: {np.nonzero(unowned_used)[0][:5].tolist()}")
    host_owned = used_mask & (kinds != EpcOwner.VEPC) & (kinds != EpcOwner.NONE)
    invalid_owned = host_owned & ~epcm.valid
    if np.any(invalid_owned):
        rep.problems.append(f"owned pages invalid in the EPCM: {np.nonzero(invalid_owned)[0][:5].tolist()}")
    for kind, pts in (
        (EpcOwner.SECS, (PageType.PT_SECS,)),
        (EpcOwner.VA_PAGE, (PageType.PT_VA,)),
        (EpcOwner.ENCL_PAGE, (PageType.PT_REG, PageType.PT_TCS, PageType.PT_TRIM)),
    ):
        sel = used_mask & (kinds == kind) & epcm.valid
        bad = sel & ~np.isin(epcm.pt, np.array([int(p) for p in pts], dtype=np.uint8))
        if np.any(bad):
            rep.problems.append(f"{kind.name} pages with wrong EPCM type: {np.nonzero(bad)[0][:5].tolist()}")
    # Valid EPCM entries that nobody owns (and that are not vEPC pages a guest uses).
    orphan = epcm.valid & ~used_mask & ~leaked
    orphan[k.sgx_dirty_pages] = False
    if np.any(orphan):
        rep.problems.append(f"EPCM-valid pages the driver does not own: {np.nonzero(orphan)[0][:5].tolist()}")
    active = k.lists.to_array(k.sgx_active_page_list)
    if len(active):
        if not np.all(f[active] & SGX_EPC_PAGE_RECLAIMER_TRACKED):
            rep.problems.append("active list holds pages without RECLAIMER_TRACKED")
        if np.any(kinds[active] != EpcOwner.ENCL_PAGE):
            rep.problems.append("active list holds pages that are not enclave pages")
    tracked = np.nonzero(f & SGX_EPC_PAGE_RECLAIMER_TRACKED)[0]
    if len(tracked) != len(active):
        rep.problems.append(f"{len(tracked)} pages RECLAIMER_TRACKED but {len(active)} on the active list")
    for encl in list(k.enclaves.values()):
        rep.problems.extend(em.validate_encl(k, encl))
    for vepc in list(k.vepcs.values()):
        for pgoff, page in vepc.page_array.items():
            if (
                kinds[page] != EpcOwner.VEPC
                or k.epc_owner_id[page] != vepc.id
                or k.epc_owner_index[page] != pgoff
            ):
                rep.problems.append(f"vEPC {vepc.id} page {page} at pgoff {pgoff} has the wrong owner record")
    zombies = k.lists.to_array(k.zombie_secs_pages)
    for page in zombies.tolist():
        if kinds[page] != EpcOwner.VEPC:
            rep.problems.append(f"zombie SECS page {page} not owned as a vEPC page")
    if expect_empty and (used or nleaked or on_lists != total):
        rep.problems.append(f"EPC not empty: {used} used, {nleaked} leaked, {on_lists}/{total} free")
    rep.counts = {"total": total, "free": on_lists, "used": used, "leaked": nleaked, "active": len(active)}
    return rep
