"""SGX-aware late microcode loading: stop EPC page initializations, zap every EPC page, run
ENCLS[EUPDATESVN] with the kernel's retry policy, and the alternative designs beside it.

One :class:`SgxSvn` belongs to one :class:`~sgxsim.kernel.main.Kernel` (``k.svn``). It holds what
the RFC series "Support microcode updates affecting SGX" (v2, March 2022) adds to
``arch/x86/kernel/cpu/sgx/main.c`` (``sgx_zap_waitq``, ``sgx_zap_abort_wait``,
``zap_waiting_count``; the ``sgx_epc_locked`` flag and ``sgx_lock_epc_srcu`` live on the kernel,
next to the allocator every reader guards), the late-load path of the microcode core
(``reload_store`` → ``microcode_reload_late`` under ``stop_machine`` → ``microcode_check`` →
``update_cpusvn_intel``), and the two designs the review led to: an explicit administrator
trigger (RFC v1's sysfs file / the 2025 ``sgx.update_svn`` knob) and Linux 6.19's EUPDATESVN on
the first open of an SGX device (``sgx_inc_usage_count`` / ``sgx_update_svn``).

Policies (``SvnConfig.policy``, a :class:`~sgxsim.kernel.policy.SvnPolicy`):

``RFC_V2_TEARDOWN``
    After every successful late load (and once at SGX initialization): lock EPC, zap, EUPDATESVN,
    unlock. Errors are logged only.
``EXPLICIT_TRIGGER``
    The late load does nothing SGX-specific; :meth:`SgxSvn.update_svn_store` runs the update,
    destructively (the teardown above) or non-destructively (-EBUSY while any SGX user exists).
``LINUX_6_19_ON_OPEN``
    EUPDATESVN on the 0 → 1 transition of the SGX usage count (open of /dev/sgx_enclave or
    /dev/sgx_vepc); running enclaves are never disturbed.
``NONE``
    A kernel without EUPDATESVN support (CPUSVN changes only across a reset).

Fixed by default, reproducible as posted: ``SvnConfig.rfc_v2_as_posted = True`` reproduces the
defects of the posting (docs/deviations.md lists each one and where it lives in the code).

Models: RFC v2 patches 01-10 (Message-IDs ``20220315010300.10199-{2..11}-cathy.zhang@intel.com``),
Linux 6.19 commits 483fc19e9cb1 and 0f2753efc5ba, Sean Christopherson's ``sgx.update_svn``
sketch (``aAviqeAdGn-w1GpK@google.com``).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from sgxsim.errors import InvalidArgument
from sgxsim.hw.arch import EnclsLeaf, SgxStatus, cpusvn_le
from sgxsim.hw.cpu import MicrocodePatch
from sgxsim.kernel import encl as em
from sgxsim.kernel import encls as E  # noqa: N812
from sgxsim.kernel.encl import SGX_ENCL_DEAD, SgxEncl
from sgxsim.kernel.locking import AtomicInt, Mutex, NullScheduler, RwSemaphore, WaitQueue, cond_resched
from sgxsim.kernel.policy import SvnPolicy
from sgxsim.kernel.sgx import (
    SGX_EPC_PAGE_GUEST,
    SGX_EPC_PAGE_IN_RELEASE,
    SGX_EPC_PAGE_IS_FREE,
    SGX_EPC_PAGE_LEAKED,
    SGX_EPC_PAGE_RECLAIMER_TRACKED,
    SGX_EPC_PAGE_ZAP_TRACKED,
    EpcOwner,
)
from sgxsim.kernel.uapi import EAGAIN, EBUSY, EINTR, EINVAL, EIO, EOPNOTSUPP, ERESTARTSYS

if TYPE_CHECKING:
    from sgxsim.kernel.main import Kernel

__all__ = [
    "MICROCODE_APPLY_NS",
    "SGX_ZAP_RETRIES",
    "SVN_RETRY_LOOPS",
    "SgxSvn",
    "SvnConfig",
    "SvnUpdate",
    "sgx_epc_pages_valid",
]

VEPC_POLICIES = ("skip", "zap")
TRIGGER_MODES = ("destructive", "non-destructive")

#: EREMOVE retries (each after an IPI) before the zapper gives up on a page (RFC v2 patch 06).
SGX_ZAP_RETRIES = 10
#: EUPDATESVN executions per attempt on SGX_INSUFFICIENT_ENTROPY (RFC v2 patch 08: 10;
#: Linux 6.19: RDRAND_RETRY_LOOPS = 10).
SVN_RETRY_LOOPS = 10
#: [ASSUMED] Simulated time to apply one microcode patch during a late load (no figure is
#: published; Intel reports staging cut it by ~40 %). All CPUs apply in parallel under
#: stop_machine, so the load costs this once.
MICROCODE_APPLY_NS = 2_000_000

_SGX_NAMES = {int(s): s.name for s in SgxStatus}


def _result_name(ret: int) -> str:
    """A readable name for an SGX code, a kernel-encoded fault, or a -errno."""
    if ret == -ERESTARTSYS:
        return "-ERESTARTSYS"  # kernel-internal, not in errno.errorcode
    if ret < 0:
        return f"-{errno.errorcode.get(-ret, str(-ret))}"
    if E.encls_faulted(ret):
        return f"fault #{E.ENCLS_TRAPNR(ret)}"
    if ret == 0:
        return "SUCCESS"
    return _SGX_NAMES.get(ret, str(ret))


@dataclass(frozen=True)
class SvnConfig:
    """How a kernel handles SVN updates (a machine option in scenarios).

    ``policy``: a :class:`SvnPolicy` (its string spelling is accepted too). ``vepc``: ``"skip"``
    guest (vEPC) pages as RFC v2 does
    (EUPDATESVN then reports SGX_EPC_NOT_READY while a VM holds valid EPC) or ``"zap"`` them too
    (the guest sees EPC loss, as after migration). ``trigger_mode``: for ``explicit-trigger``,
    ``"destructive"`` (teardown) or ``"non-destructive"`` (-EBUSY while any SGX user exists).
    ``rfc_v2_as_posted``: reproduce the posting's defects. ``only_if_svn_rises``: what-if
    impossible in Linux (Intel gives the kernel no metadata saying whether a patch affects SGX):
    skip the teardown when the minimum loaded SVN across CPUs (what EUPDATESVN would commit)
    does not exceed CPUSVN. ``update_at_init``: RFC v2 patch
    10 (EUPDATESVN once after EPC sanitization, for kexec).
    """

    policy: SvnPolicy = SvnPolicy.RFC_V2_TEARDOWN
    vepc: str = "skip"
    trigger_mode: str = "destructive"
    rfc_v2_as_posted: bool = False
    only_if_svn_rises: bool = False
    update_at_init: bool = True

    def __post_init__(self) -> None:
        try:
            # A frozen dataclass: normalise a string spelling to the enum member.
            object.__setattr__(self, "policy", SvnPolicy.parse(self.policy))
        except ValueError as err:
            raise InvalidArgument(f"svn_update_policy: {err}") from None
        if self.vepc not in VEPC_POLICIES:
            raise InvalidArgument(f"vepc must be one of {VEPC_POLICIES}, got {self.vepc!r}")
        if self.trigger_mode not in TRIGGER_MODES:
            raise InvalidArgument(f"trigger_mode must be one of {TRIGGER_MODES}, got {self.trigger_mode!r}")
        for name in ("rfc_v2_as_posted", "only_if_svn_rises", "update_at_init"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidArgument(f"{name} must be a bool, got {getattr(self, name)!r}")


@dataclass
class SvnUpdate:
    """One attempt of the SGX SVN procedure, for reports and tests.

    ``result``: the SGX code of the last EUPDATESVN (0, SGX_NO_UPDATE...), a kernel-encoded
    fault, or a -errno when no EUPDATESVN ran (zap failed: -EBUSY/-EIO/-ERESTARTSYS; policy
    refused: -EBUSY/-EOPNOTSUPP). ``errno``: what the caller sees (0 or -errno) where the path
    returns one (trigger, open), else 0.
    """

    trigger: str
    start_ns: int
    cpusvn_before: bytes
    end_ns: int = 0
    result: int = 0
    result_name: str = ""
    errno: int = 0
    tries: int = 0
    pages_zapped: int = 0
    vepc_pages_zapped: int = 0
    enclaves_killed: list[int] = field(default_factory=list)
    phases: list[tuple[str, int, int]] = field(default_factory=list)
    cpusvn_after: bytes = b""
    skipped: str = ""

    @property
    def succeeded(self) -> bool:
        """EUPDATESVN ran and returned success (CPUSVN may or may not have risen)."""
        return self.tries > 0 and self.result in (0, int(SgxStatus.SGX_NO_UPDATE))

    def as_dict(self) -> dict[str, object]:
        return {
            "trigger": self.trigger,
            "start_ns": self.start_ns,
            "end_ns": self.end_ns,
            "result": self.result,
            "result_name": self.result_name,
            "errno": self.errno,
            "tries": self.tries,
            "pages_zapped": self.pages_zapped,
            "vepc_pages_zapped": self.vepc_pages_zapped,
            "enclaves_killed": list(self.enclaves_killed),
            "phases": [list(p) for p in self.phases],
            "cpusvn_before": self.cpusvn_before.hex(),
            "cpusvn_after": self.cpusvn_after.hex(),
            "skipped": self.skipped,
        }


class _Phase:
    """Records a named phase of an update with its simulated start and end."""

    def __init__(self, svn: SgxSvn, rec: SvnUpdate | None, name: str) -> None:
        self.svn = svn
        self.rec = rec
        self.name = name
        self.start = 0

    def __enter__(self) -> _Phase:
        self.start = self.svn.now_ns()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.rec is not None:
            self.rec.phases.append((self.name, self.start, self.svn.now_ns()))


class SgxSvn:
    """The SVN-update state and procedures of one kernel (``k.svn``)."""

    def __init__(self, k: Kernel, config: SvnConfig | None = None) -> None:
        if config is None:
            config = SvnConfig()
        if not isinstance(config, SvnConfig):
            raise InvalidArgument(f"svn config must be an SvnConfig, got {config!r}")
        self.k = k
        self.config = config
        sched = k.sched
        # RFC v2 patch 06.
        self.sgx_zap_waitq = WaitQueue(sched, "sgx_zap_waitq")
        self.sgx_zap_abort_wait = False
        self.zap_waiting_count = AtomicInt(0)
        #: vCPUs halted for the EPC-locked window (``vepc = "zap"``, see :meth:`vcpu_halt_point`).
        self.vcpu_waitq = WaitQueue(sched, "sgx_vcpu_halt")
        #: [MODEL fix] KVM's vCPU kick, one per VM (``Vm`` registers it): forces every vCPU in
        #: enclave mode out (AEX) and waits for it, as the IPI does for a host CPU.
        self.vcpu_kickers: list[Callable[[], None]] = []
        # The microcode core's serialization of late loads (microcode_mutex).
        self.microcode_mutex = Mutex(sched, "microcode_mutex")
        # Linux 6.19: sgx_svn_lock serializes usage-count changes with EUPDATESVN.
        self.sgx_svn_lock = Mutex(sched, "sgx_svn_lock")
        #: [MODEL] Our fix for the unguarded release-path EREMOVE: paths that must run ENCLS
        #: without failing take it for read; EUPDATESVN runs with it held for write. Also the
        #: rwsem of the ``sgx.update_svn`` sketch (opens read, the knob writes).
        self.sgx_update_rwsem = RwSemaphore(sched, "sgx_update_rwsem")
        #: Every attempt of the procedure, in order.
        self.updates: list[SvnUpdate] = []
        #: True between the writer's synchronize_srcu() returning and sgx_unlock_epc() (the
        #: window in which no EPC page may be initialized).
        self.in_locked_window = False

    # ------------------------------------------------------------------ helpers

    @property
    def as_posted(self) -> bool:
        return self.config.rfc_v2_as_posted

    @property
    def epc_locked(self) -> bool:
        return self.k.sgx_epc_locked

    def now_ns(self) -> int:
        """Simulated time (the machine clock every leaf charges)."""
        return self.k.machine.clock.now_ns()

    def _begin(self, trigger: str) -> SvnUpdate:
        rec = SvnUpdate(trigger, self.now_ns(), self.k.machine.cpusvn)
        self.updates.append(rec)
        return rec

    def _end(self, rec: SvnUpdate) -> None:
        rec.end_ns = self.now_ns()
        rec.cpusvn_after = self.k.machine.cpusvn
        if not rec.result_name:
            rec.result_name = _result_name(rec.result)

    # ------------------------------------------------------------------ patch 01: the EPC lock

    def sgx_lock_epc(self) -> None:
        """Stop new EPC page initializations and wait for paths already past the check.

        Models: RFC v2 patch 01 sgx_lock_epc(): set ``sgx_epc_locked``, synchronize_srcu().
        """
        k = self.k
        k.sgx_epc_locked = True
        k.sgx_lock_epc_srcu.synchronize_srcu()
        self.in_locked_window = True

    def sgx_unlock_epc(self) -> None:
        """Models: RFC v2 patch 01 sgx_unlock_epc(): clear ``sgx_epc_locked``, synchronize_srcu()."""
        k = self.k
        self.in_locked_window = False
        k.sgx_epc_locked = False
        if self.vcpu_waitq.waiters:
            k.sched.wake_all(self.vcpu_waitq)
        k.sgx_lock_epc_srcu.synchronize_srcu()

    # ------------------------------------------------------------------ patch 06: zapping

    def sgx_zap_wakeup(self) -> None:
        """Wake the zapper once every awaited releasing page is gone. Models: RFC v2 sgx_zap_wakeup()."""
        if self.zap_waiting_count.read() == 0:
            self.k.sched.wake_all(self.sgx_zap_waitq)

    def sgx_zap_abort(self) -> None:
        """A release-side EREMOVE failed: abort the update. Models: RFC v2 sgx_zap_abort()."""
        self.sgx_zap_abort_wait = True
        self.k.sched.wake_all(self.sgx_zap_waitq)

    def on_free_epc_page(self, flags: int) -> None:
        """The zap bookkeeping sgx_free_epc_page() does for a page with ``flags``.

        Models: RFC v2 patch 06 hunk in sgx_free_epc_page() (IN_RELEASE: one awaited page fewer).
        The ZAP_TRACKED list removal is implicit: the deferred-SECS list is local to the zapper.
        """

        if flags & SGX_EPC_PAGE_IN_RELEASE:
            self.zap_waiting_count.add_unless(-1, 0)

    def _mark_dead(self, encl: SgxEncl, rec: SvnUpdate | None) -> None:
        """[MODEL fix] The enclave lost (some of) its EPC: every later use fails (no as-posted
        equivalent: the posting leaves the kernel believing the enclave intact)."""

        if encl.flags & SGX_ENCL_DEAD:
            return
        encl.flags |= SGX_ENCL_DEAD
        if rec is not None:
            rec.enclaves_killed.append(encl.id)
        # Its swapped-out pages are unrecoverable (VA pages gone, paging key about to change).
        if encl.backing is not None:
            encl.backing.release()
            encl.backing = None
        self.k.count("enclaves_killed")

    def _detach_zapped(self, encl: SgxEncl, page: int) -> None:
        """[MODEL fix] After a successful zap EREMOVE: take the page from its enclave, clear the
        owner, zap its PTEs and free it (the posting does none of this)."""
        k = self.k
        kind = int(k.epc_owner_kind[page])
        index = int(k.epc_owner_index[page])
        if k.epc_flags[page] & SGX_EPC_PAGE_RECLAIMER_TRACKED and k.sgx_unmark_page_reclaimable(page):
            # Isolated by the reclaimer: impossible while EPC is locked (ksgxd skips its pass).
            k.log.WARN(
                True, "zapped EPC page %d is isolated by the reclaimer", page, site="sgx_zap_encl_page"
            )
            return
        if kind == EpcOwner.ENCL_PAGE:
            if encl.pages.epc(index) == page:
                encl.pages.set_epc(index, -1)
                encl.secs_child_cnt -= 1
                em.sgx_zap_enclave_ptes(encl, index << 12)
        elif kind == EpcOwner.SECS and encl.secs_epc == page:
            encl.secs_epc = -1
        elif kind == EpcOwner.VA_PAGE and index < len(encl.va_epc) and encl.va_epc[index] == page:
            encl.va_pages.pop(index, None)
            em._va_release_id(encl, index)
        k.sgx_free_epc_page(page)

    def sgx_zap_encl_page(self, page: int, secs_pages: list[int] | None, rec: SvnUpdate | None) -> int:
        """EREMOVE one used EPC page for the update.

        Models: RFC v2 patch 06 sgx_zap_encl_page(). Outcomes: 0 (removed, deferred SECS,
        unused page, or left to a releasing enclave); -EBUSY (still SGX_ENCLAVE_ACT after
        SGX_ZAP_RETRIES IPIs); -EIO (EREMOVE of an ownerless page failed).
        Differs (fixed default): a removed page is freed and detached from its enclave, which
        is marked dead; as posted it stays "owned" (see docs/deviations.md).
        """

        k = self.k
        node = k.sgx_numa_nodes[k.section_of(page).nid]
        node.lock.lock()
        kind = int(k.epc_owner_kind[page])
        if kind == EpcOwner.NONE or k.epc_flags[page] & SGX_EPC_PAGE_IS_FREE:
            node.lock.unlock()
            return 0
        encl = k.owner_encl(page)
        if encl is None:
            # An EPC leak (EREMOVE failed at release): try again.
            node.lock.unlock()
            ret = E.eremove(k, page)
            if ret == SgxStatus.SGX_CHILD_PRESENT and secs_pages is not None and not self.as_posted:
                # [MODEL fix] a leaked SECS whose leaked children come later in the walk: defer
                # it to the second pass like any SECS (the posting fails the update with -EIO).
                secs_pages.append(page)
                return 0
            if ret:
                k.log.WARN(True, "EREMOVE of a leaked EPC page returned %d", ret, site="sgx_zap_encl_page")
                return -EIO
            k.epc_flags[page] &= ~np.uint8(SGX_EPC_PAGE_LEAKED)
            k.sgx_free_epc_page(page)
            return 0
        if not encl.refcount.kref_get_unless_zero():
            # Being released: the release path EREMOVEs it; wait for its VA and SECS pages.
            if kind in (EpcOwner.VA_PAGE, EpcOwner.SECS) and not k.epc_flags[page] & SGX_EPC_PAGE_IN_RELEASE:
                self.zap_waiting_count.inc()
                k.epc_flags[page] |= SGX_EPC_PAGE_IN_RELEASE
            node.lock.unlock()
            return 0
        node.lock.unlock()
        if not self.as_posted:
            self._mark_dead(encl, rec)
        try:
            ret = E.eremove(k, page)
            if ret == SgxStatus.SGX_CHILD_PRESENT and secs_pages is not None:
                secs_pages.append(page)
                k.epc_flags[page] |= SGX_EPC_PAGE_ZAP_TRACKED
                return 0
            tries = 0
            while ret and tries < SGX_ZAP_RETRIES:
                tries += 1
                k.count("zap_ipi_rounds")
                k.on_each_cpu_mask(em.sgx_encl_cpumask(encl))
                ret = E.eremove(k, page)
            if ret:
                k.log.pr_err(
                    "EREMOVE of EPC page %d failed (%s) after %d IPIs", page, _result_name(ret), tries
                )
                return -EBUSY
            if k.epc_flags[page] & SGX_EPC_PAGE_ZAP_TRACKED:
                k.epc_flags[page] &= ~np.uint8(SGX_EPC_PAGE_ZAP_TRACKED)
            if rec is not None:
                rec.pages_zapped += 1
            k.count("epc_pages_zapped")
            if not self.as_posted:
                self._detach_zapped(encl, page)
            return 0
        finally:
            encl.refcount.kref_put(em.sgx_encl_release_kref)

    def _zap_guest_page(self, page: int, secs_pages: list[int] | None, rec: SvnUpdate | None) -> int:
        """``vepc = "zap"``: EREMOVE a guest page (it stays allocated to its vEPC, EPCM-invalid,
        exactly as after SGX_IOC_VEPC_REMOVE_ALL). Outcomes: 0, or -EBUSY (a guest thread keeps
        running in the enclave)."""
        k = self.k
        ret = E.eremove(k, page)
        if ret == SgxStatus.SGX_CHILD_PRESENT and secs_pages is not None:
            secs_pages.append(page)
            return 0
        tries = 0
        while ret and not E.encls_faulted(ret) and tries < SGX_ZAP_RETRIES:
            tries += 1
            if not self.as_posted:
                # [MODEL fix] the IPI reaches the CPUs running vCPUs: a vCPU in a guest
                # enclave exits to KVM (AEX) like a host thread would.
                for kick in list(self.vcpu_kickers):
                    kick()
            k.on_each_cpu_mask(set(range(len(k.machine.cpus))))
            ret = E.eremove(k, page)
        if ret:
            return -EBUSY
        if rec is not None:
            rec.vepc_pages_zapped += 1
        k.count("vepc_pages_zapped")
        return 0

    def _zap_one(self, page: int, secs_pages: list[int] | None, rec: SvnUpdate | None) -> int:

        if self.k.epc_flags[page] & SGX_EPC_PAGE_GUEST:
            if self.config.vepc == "skip":
                return 0
            return self._zap_guest_page(page, secs_pages, rec)
        return self.sgx_zap_encl_page(page, secs_pages, rec)

    def sgx_zap_section_pages(
        self, first: int, npages: int, secs_pages: list[int], rec: SvnUpdate | None
    ) -> int:
        """Models: RFC v2 patch 06 sgx_zap_section_pages(): every used page, guest pages skipped
        (or zapped under ``vepc = "zap"``); the first error stops the walk."""

        k = self.k
        kinds = k.epc_owner_kind[first : first + npages]
        free = (k.epc_flags[first : first + npages] & SGX_EPC_PAGE_IS_FREE) != 0
        used = np.flatnonzero((kinds != EpcOwner.NONE) & ~free) + first
        for page in used.tolist():
            ret = self._zap_one(int(page), secs_pages, rec)
            if ret:
                return ret
            cond_resched(k.sched)
        return 0

    #: Pages per hardware EREMOVE batch of the batch zap (bounds its temporary arrays).
    ZAP_BATCH_PAGES = 1 << 22
    #: Fewest pages a chunk of the interleaved batch zap removes between two preemption points
    #: (~115 us of EREMOVE), even when another task is due sooner (see :meth:`_zap_batch`).
    ZAP_CHUNK_MIN_PAGES = 64

    def _batch_candidates(self, lo: int, hi: int) -> npt.NDArray[np.int64]:
        """Used pages in [lo, hi) the zap must EREMOVE (guest pages only under vepc = "zap")."""

        k = self.k
        flags = k.epc_flags[lo:hi]
        used = (k.epc_owner_kind[lo:hi] != EpcOwner.NONE) & ((flags & SGX_EPC_PAGE_IS_FREE) == 0)
        if self.config.vepc == "skip":
            used &= (flags & SGX_EPC_PAGE_GUEST) == 0
        return np.flatnonzero(used).astype(np.int64) + lo

    def _zap_batch(self, secs_pages: list[int], rec: SvnUpdate | None) -> int | None:
        """Pass 1 of the zap with hardware EREMOVE batches; identical outcome to the page walk
        (every EREMOVE then returns 0 or, for a SECS with children, SGX_CHILD_PRESENT; any other
        result takes the page-by-page path). Sections are walked in order; SECS pages with
        children are appended to ``secs_pages`` for the caller's second pass. Returns None when
        it does not apply (the caller walks page by page), else 0 or the first page's error.

        Two modes:

        * whole: nothing else can interleave (``batch_ok``: the NullScheduler, or the runner with
          only this task runnable) and no CPU is in enclave mode; batches of
          :attr:`ZAP_BATCH_PAGES`.
        * interleaved: the scheduler says how much simulated time passes before another task
          could run (``batch_budget_ns``: the scenario runner). Each chunk removes the pages that
          time buys at the EREMOVE latency, at least :attr:`ZAP_CHUNK_MIN_PAGES`, then reaches a
          preemption point, so other CPUs meet the zap between chunks as they would between
          pages. Pages of an enclave being released, or whose owner is gone (a leak), and every
          page of a chunk that starts while some CPU is in enclave mode, take the page walk.
          Differs: a task due inside a minimum-size chunk runs after it (at most ~115 us late
          in what it observes); the exploration scheduler offers no budget and walks page by
          page.
        """
        k = self.k
        budget = None
        if not k.batch_ok() or any(lp.in_enclave for lp in k.machine.cpus):
            budget = k.batch_budget_ns()
            if budget is None:
                return None
        per_page = max(1, k.machine.config.latency.encls.get(EnclsLeaf.EREMOVE, 0))
        killed: set[int] = set()
        for s in k.sgx_epc_sections:
            lo, end = s.first_page, s.first_page + s.npages
            while lo < end:
                pages = self._batch_candidates(lo, min(end, lo + self.ZAP_BATCH_PAGES))
                if len(pages) == 0:
                    lo += self.ZAP_BATCH_PAGES
                    continue
                if budget is not None:
                    take = min(len(pages), max(self.ZAP_CHUNK_MIN_PAGES, budget // per_page))
                    pages = pages[:take]
                lo = int(pages[-1]) + 1
                ret = self._zap_chunk(pages, secs_pages, killed, rec, walk_all=budget is not None)
                if ret:
                    return ret
                del pages
                if budget is not None:
                    cond_resched(k.sched)
                    budget = k.batch_budget_ns() or 0
        return 0

    def _zap_chunk(
        self,
        pages: npt.NDArray[np.int64],
        secs_pages: list[int],
        killed: set[int],
        rec: SvnUpdate | None,
        walk_all: bool,
    ) -> int:
        """EREMOVE one chunk of ``_zap_batch``; ``walk_all`` (interleaved mode) sends the pages
        the batch must not take to the page walk first (see there)."""
        k = self.k
        if walk_all:
            if any(lp.in_enclave for lp in k.machine.cpus):
                walk = np.ones(len(pages), dtype=np.bool_)
            else:
                walk = self._walk_mask(pages)
            for p in pages[walk].tolist():
                ret = self._zap_one(int(p), secs_pages, rec)
                if ret:
                    return ret
            pages = pages[~walk]
        if len(pages) == 0:
            return 0
        results = E.eremove_many(k, pages)
        child = results == SgxStatus.SGX_CHILD_PRESENT
        ok = results == 0
        self._batch_removed(pages[ok], killed, rec)
        k.epc_flags[pages[child]] |= SGX_EPC_PAGE_ZAP_TRACKED
        secs_pages += pages[child].tolist()
        for p in pages[~ok & ~child].tolist():
            ret = self._zap_one(int(p), None, rec)
            if ret:
                return ret
        return 0

    def _walk_mask(self, pages: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """Pages whose walk does more than EREMOVE + free: host pages whose enclave is gone (an
        EPC leak) or being released (kref already zero: the release path owns them)."""
        k = self.k
        host = (k.epc_flags[pages] & SGX_EPC_PAGE_GUEST) == 0
        ids = k.epc_owner_id[pages]
        walk = np.zeros(len(pages), dtype=np.bool_)
        for eid in np.unique(ids[host]).tolist():
            encl = k.enclaves.get(int(eid))
            if encl is None or encl.refcount.kref_read() == 0:
                walk |= host & (ids == eid)
        return walk

    def _batch_removed(self, removed: npt.NDArray[np.int64], killed: set[int], rec: SvnUpdate | None) -> None:
        """Bookkeeping for pages the batch zap EREMOVEd: counts; fixed default: kill their
        enclaves, detach the pages from them, take them off the active list and free them."""

        k = self.k
        if len(removed) == 0:
            return
        guest = (k.epc_flags[removed] & SGX_EPC_PAGE_GUEST) != 0
        host = removed[~guest]
        nguest = int(np.count_nonzero(guest))
        if rec is not None:
            rec.pages_zapped += len(host)
            rec.vepc_pages_zapped += nguest
        k.count("epc_pages_zapped", len(host))
        if nguest:
            k.count("vepc_pages_zapped", nguest)
        if self.as_posted or len(host) == 0:
            return
        k.epc_flags[host] &= ~np.uint8(SGX_EPC_PAGE_LEAKED)
        kinds = k.epc_owner_kind[host]
        ids = k.epc_owner_id[host]
        for eid in np.unique(ids[kinds != EpcOwner.NONE]).tolist():
            encl = k.enclaves.get(int(eid))
            if encl is None:
                continue  # a leak of a released enclave: just free it
            mine = ids == eid
            if eid not in killed:
                killed.add(int(eid))
                self._mark_dead(encl, rec)
                if encl.size:
                    em.sgx_zap_enclave_range(encl, encl.base, encl.size)
            regular = mine & (kinds == EpcOwner.ENCL_PAGE)
            encl.secs_child_cnt -= encl.pages.forget_epc_many(k.epc_owner_index[host[regular]], host[regular])
            for page in host[mine & (kinds == EpcOwner.VA_PAGE)].tolist():
                va = int(k.epc_owner_index[page])
                if va < len(encl.va_epc) and encl.va_epc[va] == page:
                    encl.va_pages.pop(va, None)
                    em._va_release_id(encl, va)
            if encl.secs_epc >= 0 and np.any(host[mine & (kinds == EpcOwner.SECS)] == encl.secs_epc):
                encl.secs_epc = -1
        tracked = host[(k.epc_flags[host] & SGX_EPC_PAGE_RECLAIMER_TRACKED) != 0]
        k.lists.del_many(tracked)
        k.epc_flags[tracked] &= ~np.uint8(SGX_EPC_PAGE_RECLAIMER_TRACKED)
        k._free_pages_bulk(host)

    def sgx_zap_pages(self, rec: SvnUpdate | None = None) -> int:
        """EREMOVE every used EPC page: a walk over all sections, then the deferred SECS pages,
        then an interruptible wait for enclaves that were already being released.

        Models: RFC v2 patch 06 sgx_zap_pages(). Outcomes: 0; -EBUSY (a page stayed busy);
        -EIO (a release-side EREMOVE failed: abort); -ERESTARTSYS (signal while waiting).
        """
        k = self.k
        if not self.as_posted:
            # The posting never resets the abort flag (docs/deviations.md).
            self.sgx_zap_abort_wait = False
        secs_pages: list[int] = []
        ret = self._zap_batch(secs_pages, rec)
        if ret is None:
            ret = 0
            for s in k.sgx_epc_sections:
                ret = self.sgx_zap_section_pages(s.first_page, s.npages, secs_pages, rec)
                if ret:
                    break
        if k.log.WARN_ON_ONCE("sgx_zap_pages:pass1", ret, site="sgx_zap_pages"):
            return ret
        for page in secs_pages:
            ret = self._zap_one(page, None, rec)
            if ret:
                return ret
        r = self.sgx_zap_waitq.wait_event(
            lambda: self.zap_waiting_count.read() == 0 or self.sgx_zap_abort_wait, interruptible=True
        )
        if r:
            k.log.pr_err("CPUSVN update interrupted before the zap finished")
            return -ERESTARTSYS
        if self.sgx_zap_abort_wait:
            k.log.pr_err("EREMOVE failed on the release side; CPUSVN update aborted")
            return -EIO
        return 0

    # ------------------------------------------------------------------ patch 08: EUPDATESVN

    def _eupdatesvn_loop(self, rec: SvnUpdate | None) -> int:
        """Up to SVN_RETRY_LOOPS executions, stopping at the first result other than
        SGX_INSUFFICIENT_ENTROPY. Returns the last kernel-encoded result."""
        k = self.k
        ret = int(SgxStatus.SGX_INSUFFICIENT_ENTROPY)
        for _ in range(SVN_RETRY_LOOPS):
            ret = E.eupdatesvn(k)
            if rec is not None:
                rec.tries += 1
            k.count("eupdatesvn")
            if ret != SgxStatus.SGX_INSUFFICIENT_ENTROPY:
                break
        return ret

    def sgx_updatesvn(self, rec: SvnUpdate | None = None) -> int:
        """Run EUPDATESVN with the retry policy and log one line for the outcome.

        Models: RFC v2 patch 08 sgx_updatesvn(). Outcomes (the raw SGX code): 0,
        SGX_NO_UPDATE, SGX_EPC_NOT_READY, SGX_INSUFFICIENT_ENTROPY (10 tries failed),
        SGX_LOCKFAIL (another ENCLS leaf was in flight), or a fault.
        Differs (fixed default): runs with ``sgx_update_rwsem`` held for write, so the paths
        the posting left unguarded cannot start a leaf while it runs.
        """
        k = self.k
        guard = not self.as_posted
        if guard:
            self.sgx_update_rwsem.down_write()
        try:
            with _Phase(self, rec, "eupdatesvn"):
                ret = self._eupdatesvn_loop(rec)
        finally:
            if guard:
                self.sgx_update_rwsem.up_write()
        log = k.log
        if ret == 0:
            log.pr_info("EUPDATESVN: CPUSVN updated to %s", k.machine.cpusvn.hex())
        elif ret == SgxStatus.SGX_NO_UPDATE:
            log.pr_info("EUPDATESVN: CPUSVN not updated (no newer SVN loaded); keys refreshed")
        elif ret == SgxStatus.SGX_EPC_NOT_READY:
            log.pr_info("EUPDATESVN: EPC not ready (valid EPC pages remain)")
        elif ret == SgxStatus.SGX_INSUFFICIENT_ENTROPY:
            log.pr_info("EUPDATESVN: insufficient entropy after %d tries, try again later", SVN_RETRY_LOOPS)
        elif ret == SgxStatus.SGX_LOCKFAIL:
            log.pr_info("EUPDATESVN: concurrency violation (another ENCLS leaf was running)")
        else:
            log.pr_info("EUPDATESVN: unexpected result %s", _result_name(ret))
        return ret

    # ------------------------------------------------------------------ patch 09: the procedure

    def _svn_would_rise(self) -> bool:
        m = self.k.machine
        cur = m.cpusvn
        new = m.min_loaded_svn()
        return new != cur and cpusvn_le(cur, new)

    def update_cpusvn_intel(self, trigger: str = "late_load") -> SvnUpdate:
        """Lock EPC, zap every page, EUPDATESVN, unlock; every error is only logged.

        Models: RFC v2 patch 09 update_cpusvn_intel(). Outcome: the :class:`SvnUpdate` record.
        """
        k = self.k
        rec = self._begin(trigger)
        with _Phase(self, rec, "lock"):
            self.sgx_lock_epc()
        with _Phase(self, rec, "zap"):
            ret = self.sgx_zap_pages(rec)
        if ret:
            rec.result = ret
        else:
            rec.result = self.sgx_updatesvn(rec)
        with _Phase(self, rec, "unlock"):
            self.sgx_unlock_epc()
        self._end(rec)
        k.count("svn_updates")
        return rec

    # ------------------------------------------------------------------ the late-load path

    def microcode_reload(self, patch: MicrocodePatch) -> int:
        """``echo 1 > /sys/devices/system/cpu/microcode/reload`` with ``patch`` in the firmware
        directory: apply it on every logical CPU under stop_machine (nothing else runs), then
        run the SGX procedure of the policy. The SGX outcome never changes the load's result.

        Models: arch/x86/kernel/cpu/microcode/core.c reload_store() / microcode_reload_late()
        (stop_machine) / microcode_check() (RFC v2 patch 09 hook).
        Outcomes: 0 (loaded, or no newer patch: nothing done); -EIO (some CPU refused the patch,
        e.g. a lower SVN: the load failed and no SGX procedure runs). A non-patch argument raises
        InvalidArgument.
        """
        if not isinstance(patch, MicrocodePatch):
            raise InvalidArgument(f"patch must be a MicrocodePatch, got {patch!r}")
        k = self.k
        m = k.machine
        self.microcode_mutex.lock()
        try:
            if all(patch.revision <= lp.ucode.revision for lp in m.cpus):
                k.log.pr_info("no newer microcode than revision 0x%x", patch.revision, prefix="microcode")
                return 0
            # stop_machine: every CPU applies the patch with nothing else scheduled; the model
            # runs it atomically (no preemption point inside).
            old = m.cpus[0].ucode.revision
            failed = [lp.id for lp in m.cpus if not m.load_microcode(lp.id, patch)]
            m.charge(0, MICROCODE_APPLY_NS)
            k.count("microcode_loads")
            if failed:
                k.log.pr_err("late load failed on CPUs %s", failed, prefix="microcode")
                return -EIO
            k.log.pr_info("updated: 0x%x -> 0x%x (late load)", old, patch.revision, prefix="microcode")
            self.microcode_check()
            return 0
        finally:
            self.microcode_mutex.unlock()

    def microcode_check(self) -> None:
        """After a successful late load: the SGX hook of the policy.

        Models: arch/x86/kernel/cpu/common.c microcode_check() + RFC v2 patch 09 (guarded by
        CONFIG_X86_SGX and CPUID.(0x12,0).EAX[10]).
        """
        k = self.k
        if self.config.policy is not SvnPolicy.RFC_V2_TEARDOWN or not k.sgx_eupdatesvn or k.sgx_disabled:
            return
        if self.config.only_if_svn_rises and not self._svn_would_rise():
            rec = self._begin("late_load")
            rec.skipped = "what-if only_if_svn_rises: no CPU's loaded SVN exceeds CPUSVN"
            rec.result = 0
            rec.result_name = "SKIPPED"
            self._end(rec)
            k.log.pr_info("[what-if] SGX update skipped: loaded SVN does not exceed CPUSVN")
            return
        self.update_cpusvn_intel("late_load")

    # ------------------------------------------------------------------ patch 10: at init

    def at_sgx_init(self) -> None:
        """After EPC sanitization: run the procedure once (kexec: no reset took a snapshot).

        Models: RFC v2 patch 10 (ksgxd, after both __sgx_sanitize_pages passes, if the dirty
        list is empty and CPUID.(0x12,0).EAX[10] is set).
        """
        k = self.k
        if (
            self.config.policy is not SvnPolicy.RFC_V2_TEARDOWN
            or not self.config.update_at_init
            or not k.sgx_eupdatesvn
            or len(k.sgx_dirty_pages)
        ):
            return
        self.update_cpusvn_intel("init")

    # ------------------------------------------------------------------ explicit trigger

    def update_svn_store(self) -> int:
        """An administrator's write to the update knob (policy ``explicit-trigger``).

        Models: Sean Christopherson's ``sgx.update_svn`` sketch (non-destructive: -EOPNOTSUPP
        without EUPDATESVN, rwsem write-locked, -EBUSY while any SGX user exists, 0/NO_UPDATE
        -> 0, entropy -> -EAGAIN, else WARN + -EIO) and RFC v1's ``svnupdate`` file
        (destructive: the RFC v2 teardown on demand).
        Outcomes: 0, -EOPNOTSUPP, -EBUSY, -EAGAIN, -EIO, -EINTR; -EINVAL under another policy
        (the knob does not exist there).
        """
        k = self.k
        if self.config.policy is not SvnPolicy.EXPLICIT_TRIGGER:
            return -EINVAL
        if not k.sgx_eupdatesvn or k.sgx_disabled:
            return -EOPNOTSUPP
        if self.config.trigger_mode == "destructive":
            rec = self.update_cpusvn_intel("trigger")
            r = rec.result
            if r < 0:
                rec.errno = -EINTR if r == -ERESTARTSYS else r
            elif r == SgxStatus.SGX_EPC_NOT_READY:
                # Guest pages skipped (vepc = "skip"): expected and already logged, no WARN.
                rec.errno = -EBUSY
            else:
                rec.errno = self._errno_of(r)
            return rec.errno
        rec = self._begin("trigger")
        self.sgx_update_rwsem.down_write()
        try:
            if k.sgx_usage_count:
                rec.result = -EBUSY
                rec.errno = -EBUSY
                k.log.pr_info("update_svn: %d SGX users, refusing", k.sgx_usage_count)
            else:
                with _Phase(self, rec, "eupdatesvn"):
                    r = self._eupdatesvn_loop(rec)
                rec.result = r
                rec.errno = self._errno_of(r)
        finally:
            self.sgx_update_rwsem.up_write()
        self._end(rec)
        return rec.errno

    def _errno_of(self, ret: int) -> int:
        """0 / SGX_NO_UPDATE -> 0; entropy -> -EAGAIN; anything else -> ENCLS_WARN + -EIO."""
        if ret in (0, SgxStatus.SGX_NO_UPDATE):
            return 0
        if ret == SgxStatus.SGX_INSUFFICIENT_ENTROPY:
            return -EAGAIN
        E.ENCLS_WARN(self.k, ret, "EUPDATESVN")
        return -EIO

    # ------------------------------------------------------------------ Linux 6.19

    def sgx_update_svn(self) -> int:
        """Attempt EUPDATESVN with an empty EPC (the 0 -> 1 usage transition).

        Models: Linux 6.19 main.c sgx_update_svn(). Outcomes: 0 (success, SGX_NO_UPDATE, or no
        EUPDATESVN support); -EAGAIN (entropy exhausted after 10 tries); -EIO (anything else,
        with ENCLS_WARN).
        """
        k = self.k
        if not k.sgx_eupdatesvn:
            return 0
        k.log.WARN(
            k.sgx_usage_count != 0, "Elevated usage count when calling EUPDATESVN", site="sgx_update_svn"
        )
        rec = self._begin("open")
        with _Phase(self, rec, "eupdatesvn"):
            ret = self._eupdatesvn_loop(rec)
        rec.result = ret
        if ret == 0:
            k.log.pr_info("SVN updated successfully")
        rec.errno = self._errno_of(ret)
        self._end(rec)
        return rec.errno

    def sgx_inc_usage_count(self) -> int:
        """Count an SGX user; under the 6.19 policy the first one runs :meth:`sgx_update_svn`.

        Models: Linux 6.19 main.c sgx_inc_usage_count() (sgx_svn_lock held throughout; on
        failure the count is left unchanged and the open fails). Under ``explicit-trigger``
        non-destructive mode, opens hold ``sgx_update_rwsem`` for read (the sketch's rwsem).
        """
        k = self.k
        policy = self.config.policy
        if policy is SvnPolicy.EXPLICIT_TRIGGER:
            self.sgx_update_rwsem.down_read()
            k.sgx_usage_count += 1
            self.sgx_update_rwsem.up_read()
            return 0
        self.sgx_svn_lock.lock()
        try:
            if k.sgx_usage_count == 0 and policy is SvnPolicy.LINUX_6_19_ON_OPEN:
                ret = self.sgx_update_svn()
                if ret:
                    return ret
            k.sgx_usage_count += 1
            return 0
        finally:
            self.sgx_svn_lock.unlock()

    def sgx_dec_usage_count(self) -> None:
        """Models: Linux 6.19 main.c sgx_dec_usage_count() (under sgx_svn_lock)."""
        k = self.k
        self.sgx_svn_lock.lock()
        k.sgx_usage_count -= 1
        self.sgx_svn_lock.unlock()
        k.log.WARN_ON_ONCE("sgx_usage_count", k.sgx_usage_count < 0, site="sgx_dec_usage_count")

    # ------------------------------------------------------------------ guards used by the driver

    def encls_fence_begin(self) -> bool:
        """[MODEL fix] Before a path that must run ENCLS and cannot fail with -EBUSY (enclave and
        vEPC release, SGX_IOC_VEPC_REMOVE_ALL, KVM's EINIT on behalf of a guest): wait out a
        running EUPDATESVN. Returns whether the guard was taken (pass it to
        :meth:`encls_fence_end`). As posted, the release path is not guarded."""
        if self.as_posted:
            return False
        self.sgx_update_rwsem.down_read()
        return True

    def encls_fence_end(self, taken: bool) -> None:
        if taken:
            self.sgx_update_rwsem.up_read()

    def vcpu_halt_point(self) -> None:
        """[MODEL fix] Where a vCPU is about to execute a guest ENCLS leaf natively: under
        ``vepc = "zap"`` (fixed default) it stays halted while the host holds the EPC locked,
        like the KVM halt/resume notifiers of a later variant of the series (eupdatesvn-linux.md
        §2, "an unattributed later variant"). RFC v2 (``vepc = "skip"``) and the posting do not
        halt guests. With no scheduler nothing can run concurrently, so there is nothing to wait.
        """
        k = self.k
        if (
            self.config.vepc != "zap"
            or self.as_posted
            or not k.sgx_epc_locked
            or isinstance(k.sched, NullScheduler)
        ):
            return
        k.count("vcpu_halts")
        self.vcpu_waitq.wait_event(lambda: not k.sgx_epc_locked)

    def guard_unguarded_ioctls(self) -> bool:
        """Whether EINIT and PROVISION check the EPC lock (fixed) or not (as posted)."""
        return not self.as_posted

    def validate(self) -> list[str]:
        """Consistency of the update state for checkers: no waiter count without an update."""
        problems: list[str] = []
        if not self.k.sgx_epc_locked and self.in_locked_window:
            problems.append("in_locked_window set while EPC is unlocked")
        if self.zap_waiting_count.read() < 0:
            problems.append("zap_waiting_count < 0")
        return problems


def sgx_epc_pages_valid(k: Kernel) -> int:
    """How many EPC pages are valid in the EPCM (what EUPDATESVN's "EPC ready" check reads)."""
    return int(np.count_nonzero(k.machine.epc.epcm.valid))
