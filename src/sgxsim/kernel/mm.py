"""Address spaces: ``struct mm_struct``, VMAs, the page table, mmap/munmap/mprotect, and faults.

The address space (:class:`Mm`) is a sorted list of VMAs plus a page table keyed by virtual page
number that implements the :class:`~sgxsim.hw.cpu.PageTable` protocol the processor walks during
enclave execution. User memory lives in the machine's DRAM: anonymous pages are allocated on
first write (reads map the shared zero page), shared mappings of tmpfs files map their page cache.
A user-mode access to a page mapped to EPC reads the abort page (all 0xFF) and drops writes.

Arguments are C's: addresses, lengths, protections and flags are ``unsigned long`` (callers
pass them through :func:`ulong`, so -4096 is a huge address), and the checks run in Linux's
order with Linux's errno.

Models: mm/mmap.c (do_mmap check order, __get_unmapped_area, mmap_region, do_vmi_munmap,
file_mmap_ok), mm/mprotect.c (do_mprotect_pkey, mprotect_fixup: VM_MAY* check,
vm_ops->mprotect before the change), mm/memory.c (handle_mm_fault: do_anonymous_page with the
zero page, do_wp_page, vmf_insert_pfn, zap_vma_ptes), arch/x86/mm/fault.c (do_user_addr_fault,
access_error, bad_area, do_sigbus), mm/gup.c get_user_pages (read, no VM_IO|VM_PFNMAP),
lib/usercopy (copy_{from,to}_user -> EFAULT), kernel/exit.c exit_mmap.
Differs: no VMA merging, no stack growth (a fixed 1 MiB stack VMA at the top of the address
space), no file-backed mappings other than tmpfs files under /dev/shm/ and device files, no
map_count limit, no mlock; a task whose fault never resolves (the handler keeps returning
without mapping the page, e.g. a re-mapped vEPC offset) spins forever in Linux; here it raises
:class:`FaultLoop` (no scheduler) or the scheduler reports it stuck.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sgxsim.errors import ModelInvariantError, SgxSimError
from sgxsim.hw.arch import PAGE_SHIFT, PAGE_SIZE, PfError
from sgxsim.hw.cpu import Pte
from sgxsim.kernel import uapi as U  # noqa: N812
from sgxsim.kernel.fs import FMODE_READ, FMODE_WRITE, SHMEM_FOPS, File, ShmemFile
from sgxsim.kernel.locking import NullScheduler, RwSemaphore, TaskInfo

if TYPE_CHECKING:
    from sgxsim.kernel.main import Kernel

__all__ = [
    "FAULT_RETRY_POINT",
    "FIXED",
    "TASK_SIZE",
    "ULONG_MASK",
    "VDSO_BASE",
    "VM_EXEC",
    "VM_READ",
    "VM_SHARED",
    "VM_WRITE",
    "FaultLoop",
    "Mm",
    "VmFault",
    "VmOperations",
    "Vma",
    "copy_from_user",
    "copy_to_user",
    "do_mmap",
    "do_mprotect_pkey",
    "do_user_addr_fault",
    "exit_mmap",
    "get_user_page",
    "ulong",
    "vm_munmap",
]

# include/linux/mm.h vm_flags
VM_READ = 0x1
VM_WRITE = 0x2
VM_EXEC = 0x4
VM_SHARED = 0x8
VM_MAYREAD = 0x10
VM_MAYWRITE = 0x20
VM_MAYEXEC = 0x40
VM_MAYSHARE = 0x80
VM_PFNMAP = 0x400
VM_IO = 0x4000
VM_DONTCOPY = 0x20000
VM_DONTEXPAND = 0x40000
VM_DONTDUMP = 0x4000000
VM_NORESERVE = 0x200000
VM_ACCESS_FLAGS = VM_READ | VM_WRITE | VM_EXEC

# include/linux/mm_types.h vm_fault_t
VM_FAULT_OOM = 0x1
VM_FAULT_SIGBUS = 0x2
VM_FAULT_SIGSEGV = 0x40
VM_FAULT_NOPAGE = 0x100
VM_FAULT_RETRY = 0x400
VM_FAULT_ERROR = VM_FAULT_OOM | VM_FAULT_SIGBUS | VM_FAULT_SIGSEGV

# enum fault_flag
FAULT_FLAG_WRITE = 0x1
FAULT_FLAG_ALLOW_RETRY = 0x4
FAULT_FLAG_USER = 0x40
FAULT_FLAG_INSTRUCTION = 0x100


#: x86-64 TASK_SIZE_MAX with 4-level paging.
TASK_SIZE = 0x7FFF_FFFF_F000
#: Where top-down mmap placement starts (below the stack gap).
MMAP_BASE = 0x7F00_0000_0000
STACK_SIZE = 1 << 20
STACK_TOP = TASK_SIZE
#: The [vdso] mapping; the ENCLU of __vdso_sgx_enter_enclave is the AEP.
VDSO_BASE = 0x7FFF_F7FC_0000
VDSO_SIZE = 2 * PAGE_SIZE
VDSO_ENCLU_OFFSET = 0x5C0
#: Addresses handed out for Python functions registered as user code (run.user_handler).
USER_TEXT_BASE = 0x40_0000
#: vm.mmap_min_addr (CONFIG_DEFAULT_MMAP_MIN_ADDR on x86): lower fixed mappings get EPERM.
MMAP_MIN_ADDR = 0x10000

_PAGE_MASK = ~(PAGE_SIZE - 1)

# Fault outcomes of do_user_addr_fault.
FIXED = 0
SIGSEGV_MAPERR = 1
SIGSEGV_ACCERR = 2
SIGBUS_ADRERR = 3


#: ``unsigned long`` on x86-64.
ULONG_MASK = (1 << 64) - 1
#: The scheduler preemption point of a retried user fault (see :func:`_fault_in`).
FAULT_RETRY_POINT = "fault_retry"
#: Retries without progress after which a task with no scheduler is reported stuck.
FAULT_LOOP_RETRIES = 64


def ulong(v: int) -> int:
    """A Python int as C's ``unsigned long`` (wrapped mod 2^64)."""
    return v & ULONG_MASK


class FaultLoop(SgxSimError):
    """A user access whose page fault never resolves: the task spins in page faults forever.

    Linux: the fault handler returns (VM_FAULT_NOPAGE, or VM_FAULT_RETRY with nothing that could
    change) without mapping the page, the access faults again, for ever (a hang the user can
    cause, e.g. touching a re-mapped /dev/sgx_vepc offset). The model reports the hang instead
    of spinning. Not a model bug: :class:`~sgxsim.errors.ModelInvariantError` is for those.
    """

    def __init__(self, owner: str, addr: int, retries: int) -> None:
        super().__init__(f"{owner}: stuck in a page-fault loop at {addr:#x} ({retries} retries, no progress)")
        self.owner = owner
        self.addr = addr
        self.retries = retries


# ---------------------------------------------------------------------------------------
# VMAs and the page table


class VmOperations(Protocol):
    """``struct vm_operations_struct`` (the callbacks a driver VMA may have)."""

    name: str

    def fault(self, vmf: VmFault) -> int: ...

    def open(self, vma: Vma) -> None: ...

    def mprotect(self, vma: Vma, start: int, end: int, newflags: int) -> int: ...

    def access(self, vma: Vma, addr: int, buf: bytearray, write: bool) -> int: ...


@dataclass(eq=False)
class Vma:
    """``struct vm_area_struct``."""

    vm_mm: Mm
    vm_start: int
    vm_end: int
    vm_flags: int
    vm_pgoff: int = 0
    vm_file: File | None = None
    vm_ops: Any = None
    vm_private_data: Any = None
    name: str = ""

    def __repr__(self) -> str:
        return f"Vma({self.vm_start:#x}-{self.vm_end:#x} flags={self.vm_flags:#x} {self.name})"


@dataclass
class VmFault:
    """``struct vm_fault``: the VMA, the faulting address (page aligned) and FAULT_FLAG_*."""

    vma: Vma
    address: int
    flags: int = 0


class Mm:
    """``struct mm_struct``: VMAs, the page table, the mmap lock, mmu notifiers, the cpumask.

    Implements the processor's ``PageTable`` protocol (:meth:`lookup`).
    """

    def __init__(self, k: Kernel, owner: str) -> None:
        self.k = k
        self.owner = owner
        self.vmas: list[Vma] = []
        self._starts: list[int] = []
        self.ptes: dict[int, Pte] = {}
        #: Anonymous pages this mm owns, by virtual page number (freed when unmapped).
        self.anon_pages: dict[int, int] = {}
        self.mmap_lock = RwSemaphore(k.sched, f"mmap_lock:{owner}")
        #: mm_users: 0 once the process exited (mmget_not_zero fails).
        self.mm_users = 1
        #: mmu notifiers (objects with ``release(mm)``), in registration order.
        self.mmu_notifiers: list[Any] = []
        #: mm_cpumask(): CPUs this mm has run on.
        self.cpumask: set[int] = set()
        self.personality = 0

    # -- the processor's view -------------------------------------------------------

    def lookup(self, linaddr: int) -> Pte | None:
        """The PTE mapping ``linaddr``'s page, or None (the PageTable protocol)."""
        return self.ptes.get(linaddr >> PAGE_SHIFT)

    # -- VMAs ------------------------------------------------------------------------

    def find_vma(self, addr: int) -> Vma | None:
        """The first VMA with ``vm_end > addr`` (it may start above ``addr``). Models: find_vma()."""
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0 and self.vmas[i].vm_end > addr:
            return self.vmas[i]
        if i + 1 < len(self.vmas):
            return self.vmas[i + 1]
        return None

    def vma_lookup(self, addr: int) -> Vma | None:
        """The VMA containing ``addr``, or None. Models: vma_lookup()."""
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0 and self.vmas[i].vm_start <= addr < self.vmas[i].vm_end:
            return self.vmas[i]
        return None

    def overlapping(self, start: int, end: int) -> list[Vma]:
        i = max(0, bisect.bisect_right(self._starts, start) - 1)
        out = []
        while i < len(self.vmas) and self.vmas[i].vm_start < end:
            if self.vmas[i].vm_end > start:
                out.append(self.vmas[i])
            i += 1
        return out

    def insert_vma(self, vma: Vma) -> None:
        i = bisect.bisect_right(self._starts, vma.vm_start)
        self.vmas.insert(i, vma)
        self._starts.insert(i, vma.vm_start)

    def remove_vma(self, vma: Vma) -> None:
        i = self.vmas.index(vma)
        del self.vmas[i]
        del self._starts[i]

    def split_vma(self, vma: Vma, addr: int) -> Vma:
        """Split ``vma`` at ``addr``; returns the upper part (the new VMA). Models: __split_vma()."""
        if not vma.vm_start < addr < vma.vm_end or addr & ~_PAGE_MASK:
            raise ModelInvariantError(f"bad split of {vma} at {addr:#x}")
        new = Vma(
            self,
            addr,
            vma.vm_end,
            vma.vm_flags,
            vma.vm_pgoff + ((addr - vma.vm_start) >> PAGE_SHIFT),
            vma.vm_file.get_file() if vma.vm_file is not None else None,
            vma.vm_ops,
            vma.vm_private_data,
            vma.name,
        )
        self.remove_vma(vma)
        vma.vm_end = addr
        self.insert_vma(vma)
        self.insert_vma(new)
        if new.vm_ops is not None:
            new.vm_ops.open(new)
        return new

    # -- PTEs ------------------------------------------------------------------------

    def zap_range(self, start: int, end: int) -> None:
        """Remove the PTEs of [start, end), freeing anonymous pages. Models: zap_page_range()."""
        ptes = self.ptes
        lo, hi = start >> PAGE_SHIFT, end >> PAGE_SHIFT
        if hi - lo > len(ptes):
            vpns = [v for v in ptes if lo <= v < hi]
        else:
            vpns = [v for v in range(lo, hi) if v in ptes]
        for v in vpns:
            del ptes[v]
            phys = self.anon_pages.pop(v, None)
            if phys is not None:
                self.k.dram_free(phys)

    def zap_vma_ptes(self, vma: Vma, addr: int, size: int) -> None:
        """Models: mm/memory.c zap_vma_ptes() (only for VM_PFNMAP VMAs)."""
        if not vma.vm_flags & VM_PFNMAP or addr < vma.vm_start or addr + size > vma.vm_end:
            return
        self.zap_range(addr, addr + size)

    def pte_prot(self, vma: Vma, pte: Pte) -> None:
        pte.writable = bool(vma.vm_flags & VM_WRITE)
        pte.nx = not vma.vm_flags & VM_EXEC
        pte.user = True

    def vmf_insert_pfn(self, vma: Vma, addr: int, pfn: int) -> int:
        """Map ``addr`` to physical page ``pfn`` with the VMA's protection (Accessed set).

        Models: mm/memory.c vmf_insert_pfn(): an existing PTE is left alone.
        Outcome: VM_FAULT_NOPAGE.
        """
        vpn = addr >> PAGE_SHIFT
        if vpn not in self.ptes:
            pte = Pte(pfn << PAGE_SHIFT, present=True, accessed=True)
            self.pte_prot(vma, pte)
            self.ptes[vpn] = pte
        return VM_FAULT_NOPAGE

    def iter_vmas(self) -> Iterator[Vma]:
        return iter(list(self.vmas))


# ---------------------------------------------------------------------------------------
# Faults


def _anon_or_file_fault(mm: Mm, vma: Vma, addr: int, write: bool) -> int:
    """handle_mm_fault() for ordinary (non-driver) VMAs."""
    k = mm.k
    vpn = addr >> PAGE_SHIFT
    pte = mm.ptes.get(vpn)
    shm = vma.vm_file.shmem if vma.vm_file is not None else None
    shared = bool(vma.vm_flags & VM_SHARED)
    if shm is not None and shared:
        index = vma.vm_pgoff + ((addr - vma.vm_start) >> PAGE_SHIFT)
        phys = shm.get_page(index)
        new = Pte(phys, present=True, accessed=True, dirty=write)
        mm.pte_prot(vma, new)
        mm.ptes[vpn] = new
        return 0
    if pte is not None and pte.present and write:
        # do_wp_page: copy the zero page or a private file page.
        if vpn in mm.anon_pages:
            pte.writable = True
            return 0
        phys = k.dram_alloc()
        k.machine.dram.write(phys, k.machine.dram.read(pte.phys & _PAGE_MASK, PAGE_SIZE))
        mm.anon_pages[vpn] = phys
        new = Pte(phys, present=True, accessed=True, dirty=True)
        mm.pte_prot(vma, new)
        mm.ptes[vpn] = new
        return 0
    if shm is not None:
        index = vma.vm_pgoff + ((addr - vma.vm_start) >> PAGE_SHIFT)
        src = shm.get_page(index)
        if write:
            phys = k.dram_alloc()
            k.machine.dram.write(phys, k.machine.dram.read(src, PAGE_SIZE))
            mm.anon_pages[vpn] = phys
            new = Pte(phys, present=True, accessed=True, dirty=True)
            mm.pte_prot(vma, new)
        else:
            new = Pte(src, present=True, accessed=True)
            mm.pte_prot(vma, new)
            new.writable = False
        mm.ptes[vpn] = new
        return 0
    if write:
        phys = k.dram_alloc()
        mm.anon_pages[vpn] = phys
        new = Pte(phys, present=True, accessed=True, dirty=True)
        mm.pte_prot(vma, new)
    else:
        new = Pte(k.zero_page, present=True, accessed=True)
        mm.pte_prot(vma, new)
        new.writable = False
    mm.ptes[vpn] = new
    return 0


def handle_mm_fault(mm: Mm, vma: Vma, addr: int, flags: int) -> int:
    """Resolve a fault in ``vma``: the driver's ->fault, or anonymous/tmpfs memory.

    Models: mm/memory.c handle_mm_fault(). Outcomes: 0 / VM_FAULT_NOPAGE (retry the access),
    VM_FAULT_RETRY, or an error (VM_FAULT_SIGBUS, VM_FAULT_OOM, VM_FAULT_SIGSEGV).
    """
    addr &= _PAGE_MASK
    if vma.vm_ops is not None:
        pte = mm.ptes.get(addr >> PAGE_SHIFT)
        if pte is not None and pte.present:
            # A PFN mapping that is present but denied access: nothing to fix (access_error
            # already let it through only if the VMA allows it).
            return VM_FAULT_NOPAGE
        return int(vma.vm_ops.fault(VmFault(vma, addr, flags)))
    return _anon_or_file_fault(mm, vma, addr, bool(flags & FAULT_FLAG_WRITE))


def access_error(error_code: int, vma: Vma) -> bool:
    """Whether a fault is a permission violation the kernel cannot fix.

    Models: arch/x86/mm/fault.c access_error() (PK, SGX, write to !VM_WRITE, read of a present
    page, no access flags at all).
    """
    if error_code & PfError.PK:
        return True
    if error_code & PfError.SGX:
        return True
    if error_code & PfError.W:
        return not vma.vm_flags & VM_WRITE
    if error_code & PfError.P:
        return True
    return not vma.vm_flags & VM_ACCESS_FLAGS


def do_user_addr_fault(mm: Mm, addr: int, error_code: int) -> int:
    """Handle a user-mode #PF: FIXED (retry the access), or which signal it raises.

    Models: arch/x86/mm/fault.c do_user_addr_fault(): no VMA -> bad_area (SIGSEGV,
    SEGV_MAPERR); access_error -> bad_area_access_error (SIGSEGV, SEGV_ACCERR);
    handle_mm_fault errors -> do_sigbus (SIGBUS) / SIGSEGV; NOPAGE/RETRY -> return to retry.
    The caller (the vDSO's exception fixup or the signal path) decides what the user sees.
    """
    vma = mm.vma_lookup(addr)
    if vma is None:
        return SIGSEGV_MAPERR
    if access_error(error_code, vma):
        return SIGSEGV_ACCERR
    flags = FAULT_FLAG_USER | FAULT_FLAG_ALLOW_RETRY
    if error_code & PfError.W:
        flags |= FAULT_FLAG_WRITE
    if error_code & PfError.I:
        flags |= FAULT_FLAG_INSTRUCTION
    mm.mmap_lock.down_read()
    try:
        ret = handle_mm_fault(mm, vma, addr, flags)
    finally:
        mm.mmap_lock.up_read()
    if ret & VM_FAULT_SIGBUS or ret & VM_FAULT_OOM:
        return SIGBUS_ADRERR
    if ret & VM_FAULT_SIGSEGV:
        return SIGSEGV_ACCERR
    return FIXED


def _fault_in(mm: Mm, addr: int, write: bool, user: bool) -> int:
    """Make ``addr`` accessible (read or write) or say which fault outcome stopped it.

    Used by user accesses (user=True) and by the kernel's uaccess/gup helpers (user=False: a
    kernel access through a user pointer; same VMA checks, no signal). A fault the handler
    "resolved" without mapping the page is retried, as the CPU re-executes the access. Under a
    scheduler each retry is a preemption point (:data:`FAULT_RETRY_POINT`: the task returns to
    user space and faults again while ksgxd or the EPC-lock writer make progress; the scheduler
    reports tasks that only ever spin there as stuck). With no scheduler nothing else can run:
    after :data:`FAULT_LOOP_RETRIES` retries (deferred ksgxd work run between them) without
    progress the task is stuck, reported as :class:`FaultLoop`.
    """
    k = mm.k
    task = k.sched.current_task()
    try:
        return _fault_in_loop(mm, addr, write, user, task)
    finally:
        if task is not None:
            task.fault_retries = 0


def _fault_in_loop(mm: Mm, addr: int, write: bool, user: bool, task: TaskInfo | None) -> int:
    k = mm.k
    bound = FAULT_LOOP_RETRIES if isinstance(k.sched, NullScheduler) else 1 << 30
    for attempt in range(bound):
        if attempt:
            if task is not None:
                task.fault_retries = attempt
            k.sched.preempt(FAULT_RETRY_POINT)
        vma = mm.vma_lookup(addr)
        if vma is None:
            return SIGSEGV_MAPERR
        need = VM_WRITE if write else VM_READ
        if not vma.vm_flags & need and not (not write and vma.vm_flags & VM_WRITE):
            return SIGSEGV_ACCERR
        pte = mm.ptes.get(addr >> PAGE_SHIFT)
        if pte is not None and pte.present and (not write or pte.writable):
            return FIXED
        code = int(PfError.U) if user else 0
        if write:
            code |= PfError.W
        if pte is not None and pte.present:
            code |= PfError.P
        ret = do_user_addr_fault(mm, addr, code)
        if ret != FIXED:
            return ret
        if attempt:
            k.run_deferred_work()
    raise FaultLoop(mm.owner, addr, bound)


def _phys_of(mm: Mm, addr: int) -> int:
    pte = mm.ptes[addr >> PAGE_SHIFT]
    return (pte.phys & _PAGE_MASK) | (addr & (PAGE_SIZE - 1))


def _user_copy(mm: Mm, addr: int, n: int, data: bytes | None, user: bool) -> bytes | int:
    """Copy to/from user memory page by page; bytes read, or the fault outcome that stopped it."""
    k = mm.k
    dram = k.machine.dram
    out = bytearray()
    pos = 0
    while pos < n:
        a = addr + pos
        chunk = min(n - pos, PAGE_SIZE - (a & (PAGE_SIZE - 1)))
        if a < 0 or a + chunk > TASK_SIZE:
            return SIGSEGV_MAPERR
        ret = _fault_in(mm, a, data is not None, user)
        if ret != FIXED:
            return ret
        pte = mm.ptes[a >> PAGE_SHIFT]
        pte.accessed = True
        phys = _phys_of(mm, a)
        is_epc = k.machine.epc.index_of(phys) is not None
        if data is None:
            out += b"\xff" * chunk if is_epc else dram.read(phys, chunk)
        else:
            pte.dirty = True
            if not is_epc:
                dram.write(phys, data[pos : pos + chunk])
        pos += chunk
    return bytes(out)


def copy_from_user(k: Kernel, addr: int, n: int) -> bytes | None:
    """Read ``n`` bytes of the current process's memory; None means -EFAULT.

    Models: copy_from_user() (faults resolved; an unresolvable one fails the copy).
    """
    proc = k.current_proc
    if proc is None:
        return None
    res = _user_copy(proc.mm, addr, n, None, user=False)
    return res if isinstance(res, bytes) else None


def copy_to_user(k: Kernel, addr: int, data: bytes) -> bool:
    """Write to the current process's memory; False means -EFAULT. Models: copy_to_user()."""
    proc = k.current_proc
    if proc is None:
        return False
    return isinstance(_user_copy(proc.mm, addr, len(data), bytes(data), user=False), bytes)


def get_user_page(k: Kernel, addr: int) -> int | None:
    """The physical page behind a user address, faulted in for reading; None means failure.

    Models: mm/gup.c get_user_pages(addr, 1, 0): VM_IO/VM_PFNMAP or non-readable VMAs fail.
    """
    proc = k.current_proc
    if proc is None:
        return None
    mm = proc.mm
    vma = mm.vma_lookup(addr)
    if vma is None or vma.vm_flags & (VM_IO | VM_PFNMAP) or not vma.vm_flags & VM_READ:
        return None
    if _fault_in(mm, addr, False, user=False) != FIXED:
        return None
    return _phys_of(mm, addr) & _PAGE_MASK


def get_user_pages_read(k: Kernel, start: int, n: int) -> list[int] | None:
    """``get_user_pages(start, n, 0)`` for a run inside one ordinary VMA: the physical pages,
    faulted in for reading exactly as one-page calls would (same PTEs), or None when the run is
    not one plain VMA (the caller then goes page by page).
    """
    proc = k.current_proc
    if proc is None or n <= 0:
        return None
    mm = proc.mm
    vma = mm.vma_lookup(start)
    if (
        vma is None
        or vma.vm_ops is not None
        or vma.vm_flags & (VM_IO | VM_PFNMAP)
        or not vma.vm_flags & VM_READ
        or start + n * PAGE_SIZE > vma.vm_end
    ):
        return None
    ptes = mm.ptes
    vpn0 = start >> PAGE_SHIFT
    refs = [ptes.get(v) for v in range(vpn0, vpn0 + n)]
    if all(pte is not None and pte.present for pte in refs):
        # Already faulted in (a reused source buffer): no fault path to take.
        return [pte.phys & _PAGE_MASK for pte in refs]  # type: ignore[union-attr]
    out: list[int] = []
    for i in range(n):
        pte = ptes.get(vpn0 + i)
        if pte is None or not pte.present:
            _anon_or_file_fault(mm, vma, (vpn0 + i) << PAGE_SHIFT, False)
            pte = ptes[vpn0 + i]
        out.append(pte.phys & _PAGE_MASK)
    return out


# ---------------------------------------------------------------------------------------
# mmap, munmap, mprotect, exit


def _page_align(n: int) -> int:
    """``PAGE_ALIGN`` on an unsigned long (wraps to 0 for the top page)."""
    return (n + PAGE_SIZE - 1) & _PAGE_MASK & ULONG_MASK


def _calc_vm_prot_bits(prot: int) -> int:
    return (
        (VM_READ if prot & U.PROT_READ else 0)
        | (VM_WRITE if prot & U.PROT_WRITE else 0)
        | (VM_EXEC if prot & U.PROT_EXEC else 0)
    )


def get_unmapped_area(mm: Mm, length: int, hint: int) -> int:
    """Top-down placement below MMAP_BASE, the hint first if it is free.

    Models: mm/mmap.c arch_get_unmapped_area_topdown() (simplified: no randomization).
    Outcomes: the address, or -ENOMEM.
    """
    if (
        hint
        and not hint & ~_PAGE_MASK
        and hint + length <= MMAP_BASE
        and not mm.overlapping(hint, hint + length)
    ):
        return hint
    cand = MMAP_BASE - length
    while cand > 0:
        over = mm.overlapping(cand, cand + length)
        if not over:
            return cand
        cand = min(v.vm_start for v in over) - length
    return -U.ENOMEM


def _file_mmap_ok(file: File, pgoff: int, length: int) -> bool:
    """Models: mm/mmap.c file_mmap_ok() / file_mmap_size_max(): regular (tmpfs) files end at
    MAX_LFS_FILESIZE, device files at ULONG_MAX."""
    maxsize = (1 << 63) - 1 if file.shmem is not None else ULONG_MASK
    if length > maxsize:
        return False
    return pgoff <= (maxsize - length) >> PAGE_SHIFT


def do_mmap(
    k: Kernel, mm: Mm, file: File | None, addr: int, length: int, prot: int, flags: int, pgoff: int
) -> int:
    """Map ``length`` bytes at ``addr`` (a hint unless MAP_FIXED); all arguments unsigned long.

    Models: mm/mmap.c do_mmap() check order: length 0 -> EINVAL; READ_IMPLIES_EXEC;
    MAP_FIXED_NOREPLACE implies MAP_FIXED; PAGE_ALIGN(len) == 0 -> ENOMEM; pgoff overflow ->
    EOVERFLOW; __get_unmapped_area (len > TASK_SIZE -> ENOMEM, the file's hook, range and
    alignment checks, mmap_min_addr -> EPERM); MAP_FIXED_NOREPLACE over a mapping -> EEXIST;
    file_mmap_ok -> EOVERFLOW; the MAP_TYPE switch (file mode EACCES, noexec EPERM, no ->mmap
    ENODEV, bad type EINVAL); then mmap_region (the driver's ->mmap, MAP_FIXED replaces).
    Outcomes: the address, or -errno.
    """
    if length == 0:
        return -U.EINVAL
    if mm.personality & U.READ_IMPLIES_EXEC and prot & U.PROT_READ and not (file is not None and file.noexec):
        prot |= U.PROT_EXEC
    if flags & U.MAP_FIXED_NOREPLACE:
        flags |= U.MAP_FIXED
    if not flags & U.MAP_FIXED:
        # round_hint_to_min()
        addr &= _PAGE_MASK & ULONG_MASK
        if addr and addr < MMAP_MIN_ADDR:
            addr = MMAP_MIN_ADDR
    length = _page_align(length)
    if length == 0:
        return -U.ENOMEM
    if pgoff + (length >> PAGE_SHIFT) > ULONG_MASK:
        return -U.EOVERFLOW
    vm_flags = _calc_vm_prot_bits(prot) | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
    if flags & U.MAP_NORESERVE:  # the default overcommit mode (OVERCOMMIT_GUESS) honours it
        vm_flags |= VM_NORESERVE
    # __get_unmapped_area()
    if length > TASK_SIZE:
        return -U.ENOMEM
    area: int | None = None
    if file is not None:
        area = file.f_op.get_unmapped_area(k, file, addr, length, pgoff, flags)
        if area is not None and area < 0:
            return area
    if flags & U.MAP_FIXED:
        area = addr
    elif area is None:
        area = get_unmapped_area(mm, length, addr)
        if area < 0:
            return area
    if area > TASK_SIZE - length:
        return -U.ENOMEM
    if area & ~_PAGE_MASK:
        return -U.EINVAL
    if area < MMAP_MIN_ADDR:
        return -U.EPERM
    if flags & U.MAP_FIXED_NOREPLACE and mm.overlapping(area, area + length):
        return -U.EEXIST
    maptype = flags & U.MAP_TYPE
    if file is not None:
        if not _file_mmap_ok(file, pgoff, length):
            return -U.EOVERFLOW
        if maptype in (U.MAP_SHARED, U.MAP_SHARED_VALIDATE):
            if prot & U.PROT_WRITE and not file.f_mode & FMODE_WRITE:
                return -U.EACCES
            vm_flags |= VM_SHARED | VM_MAYSHARE
            if not file.f_mode & FMODE_WRITE:
                vm_flags &= ~(VM_MAYWRITE | VM_SHARED)
        elif maptype != U.MAP_PRIVATE:
            return -U.EINVAL
        if not file.f_mode & FMODE_READ:
            return -U.EACCES
        if file.noexec:
            if vm_flags & VM_EXEC:
                return -U.EPERM
            vm_flags &= ~VM_MAYEXEC
    elif maptype == U.MAP_SHARED:
        pgoff = 0
        vm_flags |= VM_SHARED | VM_MAYSHARE
    elif maptype == U.MAP_PRIVATE:
        pgoff = area >> PAGE_SHIFT
    else:
        return -U.EINVAL
    return _mmap_region(k, mm, file, area, length, vm_flags, pgoff, bool(flags & U.MAP_POPULATE))


def _vm_enough_memory(k: Kernel, pages: int) -> bool:
    """Whether ``pages`` may be committed.

    Models: mm/util.c __vm_enough_memory() under the default OVERCOMMIT_GUESS: a request for more
    than all of RAM plus swap fails (the model has no swap).
    """
    return pages <= k.machine.dram.total_pages


def _accounted(file: File | None, vm_flags: int) -> bool:
    """Whether a new mapping is charged against the commit limit.

    Models: mm/mmap.c accountable_mapping() (private writable, no VM_NORESERVE) and, for a shared
    anonymous mapping, mm/shmem.c shmem_acct_size() of its /dev/zero file (no VM_NORESERVE).
    """
    if vm_flags & VM_NORESERVE:
        return False
    if file is None and vm_flags & VM_SHARED:
        return True
    return vm_flags & (VM_SHARED | VM_WRITE) == VM_WRITE


def _mmap_region(
    k: Kernel, mm: Mm, file: File | None, start: int, length: int, vm_flags: int, pgoff: int, populate: bool
) -> int:
    """Models: mm/mmap.c mmap_region(): the commit charge (-ENOMEM), the driver's ->mmap, then the
    old mapping goes; MAP_POPULATE then faults the pages in.

    [MODEL] Populate skips anonymous private mappings that are not writable: Linux maps the shared
    zero page at each address, which the first read here maps instead (same contents; only the
    page tables differ), so a read-only terabyte mapping costs no time. The charge ignores what a
    MAP_FIXED mapping replaces (Linux subtracts its accounted pages).
    """
    if _accounted(file, vm_flags) and not _vm_enough_memory(k, length >> PAGE_SHIFT):
        return -U.ENOMEM
    end = start + length
    vma = Vma(
        mm,
        start,
        end,
        vm_flags,
        pgoff if file is not None else 0,
        file.get_file() if file is not None else None,
        name=file.path if file else "[anon]",
    )
    if file is None and vm_flags & VM_SHARED:
        shm = ShmemFile(k, "dev/zero (deleted)", length)
        vma.vm_file = File(SHMEM_FOPS, "[shmem]", U.O_RDWR, FMODE_READ | FMODE_WRITE, shmem=shm)
    mm.mmap_lock.down_write()
    try:
        if file is not None:
            ret = file.f_op.mmap(k, file, vma)
            if ret < 0:
                if vma.vm_file is not None:
                    vma.vm_file.fput(k)
                return ret
        # MAP_FIXED replaces what was there (after the driver accepted the new mapping).
        do_munmap(mm, start, end)
        mm.insert_vma(vma)
    finally:
        mm.mmap_lock.up_write()
    if populate and file is None and vm_flags & (VM_SHARED | VM_WRITE):
        for a in range(start, end, PAGE_SIZE):
            _fault_in(mm, a, bool(vm_flags & VM_WRITE), user=False)
    return start


def do_munmap(mm: Mm, start: int, end: int) -> None:
    """Unmap [start, end) (mmap_lock held for writing): split, zap, drop file references.

    Models: mm/mmap.c do_vmi_align_munmap().
    """
    for vma in mm.overlapping(start, end):
        if vma.vm_start < start:
            vma = mm.split_vma(vma, start)
        if vma.vm_end > end:
            mm.split_vma(vma, end)
        mm.zap_range(vma.vm_start, vma.vm_end)
        mm.remove_vma(vma)
        if vma.vm_file is not None:
            vma.vm_file.fput(mm.k)


def vm_munmap(mm: Mm, start: int, length: int) -> int:
    """munmap(2) on unsigned longs.

    Models: mm/mmap.c do_vmi_munmap(): misaligned start, start > TASK_SIZE or
    len > TASK_SIZE - start -> EINVAL; PAGE_ALIGN(len) == 0 -> EINVAL. Outcomes: 0 or -EINVAL.
    """
    if start & ~_PAGE_MASK or start > TASK_SIZE or length > TASK_SIZE - start:
        return -U.EINVAL
    end = start + _page_align(length)
    if end == start:
        return -U.EINVAL
    mm.mmap_lock.down_write()
    try:
        do_munmap(mm, start, end)
    finally:
        mm.mmap_lock.up_write()
    return 0


def do_mprotect_pkey(mm: Mm, start: int, length: int, prot: int) -> int:
    """mprotect(2) on unsigned longs.

    Models: mm/mprotect.c do_mprotect_pkey(): misaligned -> EINVAL; len 0 -> 0; end <= start
    (wrap) -> ENOMEM; arch_validate_prot (only PROT_READ|WRITE|EXEC|SEM) -> EINVAL; a hole in
    the range -> ENOMEM; beyond VM_MAY* -> EACCES; the driver's ->mprotect; then the change.
    Outcomes: 0 or -errno.
    """
    prot &= ~(U.PROT_GROWSDOWN | U.PROT_GROWSUP)
    if start & ~_PAGE_MASK:
        return -U.EINVAL
    if length == 0:
        return 0
    end = start + _page_align(length)
    if end <= start or end > ULONG_MASK:
        return -U.ENOMEM
    if prot & ~(U.PROT_READ | U.PROT_WRITE | U.PROT_EXEC | U.PROT_SEM):
        return -U.EINVAL
    if mm.personality & U.READ_IMPLIES_EXEC and prot & U.PROT_READ:
        prot |= U.PROT_EXEC
    want = _calc_vm_prot_bits(prot)
    mm.mmap_lock.down_write()
    try:
        vmas = mm.overlapping(start, end)
        # The range must be mapped without holes.
        cur = start
        for v in vmas:
            if v.vm_start > cur:
                return -U.ENOMEM
            cur = v.vm_end
        if cur < end:
            return -U.ENOMEM
        for vma in vmas:
            nstart, nend = max(start, vma.vm_start), min(end, vma.vm_end)
            newflags = want | (vma.vm_flags & ~VM_ACCESS_FLAGS)
            if (newflags & ~(newflags >> 4)) & VM_ACCESS_FLAGS:
                return -U.EACCES
            if vma.vm_ops is not None:
                err = vma.vm_ops.mprotect(vma, nstart, nend, newflags)
                if err:
                    return int(err)
            piece = vma
            if piece.vm_start < nstart:
                piece = mm.split_vma(piece, nstart)
            if piece.vm_end > nend:
                mm.split_vma(piece, nend)
            piece.vm_flags = newflags
            for vpn in range(nstart >> PAGE_SHIFT, nend >> PAGE_SHIFT):
                pte = mm.ptes.get(vpn)
                if pte is None:
                    continue
                mm.pte_prot(piece, pte)
                # A COW-shared page (zero page, private file page) stays read-only.
                if vpn not in mm.anon_pages and not piece.vm_flags & (VM_SHARED | VM_PFNMAP):
                    pte.writable = False
        return 0
    finally:
        mm.mmap_lock.up_write()


def exit_mmap(mm: Mm) -> None:
    """Tear the address space down: mmu notifiers first, then every VMA.

    Models: kernel/fork.c mmput() -> mm/mmap.c exit_mmap() (mmu_notifier_release(), then unmap
    every VMA, dropping file references).
    """
    mm.mm_users = 0
    for notifier in list(mm.mmu_notifiers):
        notifier.release(mm)
    mm.mmap_lock.down_write()
    try:
        for vma in list(mm.vmas):
            mm.zap_range(vma.vm_start, vma.vm_end)
            mm.remove_vma(vma)
            if vma.vm_file is not None:
                vma.vm_file.fput(mm.k)
    finally:
        mm.mmap_lock.up_write()
