"""Simulated Linux processes: an address space, open files, signals, and exit.

A :class:`Process` models one single-threaded-per-call Linux process on a :class:`Kernel`. Its
methods are named after the system calls they model and take the C call's arguments in the C
order, so a C test translates line by line::

    fd = proc.open("/dev/sgx_enclave", O_RDWR)
    proc.ioctl(fd, SGX_IOC_ENCLAVE_CREATE, create)          # ctypes struct or a user address
    proc.mmap(base, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0)

Failures raise ``OSError(errno, os.strerror(errno))`` as the C library's -1/errno would, after
in/out fields were written back (exactly what the kernel's copy_to_user left in user memory).

The address space (:class:`Mm`) is a sorted list of VMAs plus a page table keyed by virtual page
number that implements the :class:`~sgxsim.hw.cpu.PageTable` protocol the processor walks during
enclave execution. User memory lives in the machine's DRAM: anonymous pages are allocated on
first write (reads map the shared zero page), shared mappings of tmpfs files map their page cache.
A user-mode access to a page mapped to EPC reads the abort page (all 0xFF) and drops writes.

Models: mm/mmap.c (mmap_region, get_unmapped_area, do_munmap), mm/mprotect.c
(do_mprotect_pkey, mprotect_fixup: VM_MAY* check, vm_ops->mprotect before the change),
mm/memory.c (handle_mm_fault: do_anonymous_page with the zero page, do_wp_page, vmf_insert_pfn,
zap_vma_ptes), arch/x86/mm/fault.c (do_user_addr_fault, access_error, bad_area, do_sigbus),
mm/gup.c get_user_pages (read, no VM_IO|VM_PFNMAP), lib/usercopy (copy_{from,to}_user ->
EFAULT), kernel/exit.c (exit_mm before exit_files), mm/mmu_notifier.c (release at exit),
fs/file_table.c fput (release on the last reference), fs/ioctl.c (ENOIOCTLCMD -> ENOTTY),
kernel/signal.c (pending signals interrupt syscalls: ERESTARTSYS -> EINTR without SA_RESTART).
Differs: no fork (so no COW between processes), no VMA merging, no stack growth (a fixed
1 MiB stack VMA at the top of the address space), no file-backed mappings other than tmpfs
files under /dev/shm/ and device files; ctypes ioctl arguments are copied to the top of the
stack so that a read past the passed object hits unmapped memory (EFAULT) rather than garbage;
signals are recorded (and faults raise :class:`ProcessSignal`) instead of running handlers or
killing the process; ERESTARTSYS always becomes EINTR (no SA_RESTART).
"""

from __future__ import annotations

import bisect
import ctypes
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sgxsim.errors import InvalidArgument, ModelInvariantError
from sgxsim.hw.arch import PAGE_SHIFT, PAGE_SIZE, PfError
from sgxsim.hw.cpu import Pte
from sgxsim.kernel import uapi as U  # noqa: N812
from sgxsim.kernel.locking import NullScheduler, RwSemaphore

if TYPE_CHECKING:
    from sgxsim.kernel.main import Kernel

__all__ = [
    "FMODE_READ",
    "FMODE_WRITE",
    "TASK_SIZE",
    "VDSO_BASE",
    "VM_EXEC",
    "VM_READ",
    "VM_SHARED",
    "VM_WRITE",
    "File",
    "FileOperations",
    "Mm",
    "Process",
    "ProcessSignal",
    "ShmemFile",
    "SigInfo",
    "VmFault",
    "VmOperations",
    "Vma",
    "copy_from_user",
    "copy_to_user",
    "get_user_page",
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

# fs.h f_mode
FMODE_READ = 0x1
FMODE_WRITE = 0x2

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

_PAGE_MASK = ~(PAGE_SIZE - 1)

# Fault outcomes of do_user_addr_fault.
FIXED = 0
SIGSEGV_MAPERR = 1
SIGSEGV_ACCERR = 2
SIGBUS_ADRERR = 3


class ProcessSignal(Exception):
    """A synchronous signal (SIGSEGV, SIGBUS) was delivered to the process for a user access."""

    def __init__(self, info: SigInfo) -> None:
        super().__init__(f"signal {info.signo} (code {info.code}) at {info.addr:#x}")
        self.info = info


@dataclass(frozen=True)
class SigInfo:
    """A delivered signal: number, si_code, si_addr (0 for kill())."""

    signo: int
    code: int = 0
    addr: int = 0


# ---------------------------------------------------------------------------------------
# Files


class FileOperations:
    """``struct file_operations``: defaults behave like a missing callback.

    ``open``/``release`` succeed, ``ioctl`` is -ENOTTY (no unlocked_ioctl), ``mmap`` is
    -ENODEV (no ->mmap), ``get_unmapped_area`` returns None (use the mm's default).
    """

    name = "file"

    def open(self, k: Kernel, file: File) -> int:
        return 0

    def release(self, k: Kernel, file: File) -> None:
        return None

    def ioctl(self, k: Kernel, file: File, cmd: int, arg: int) -> int:
        return -U.ENOTTY

    def mmap(self, k: Kernel, file: File, vma: Vma) -> int:
        return -U.ENODEV

    def get_unmapped_area(
        self, k: Kernel, file: File, addr: int, length: int, pgoff: int, flags: int
    ) -> int | None:
        return None


@dataclass(eq=False)
class File:
    """``struct file``: operations, mode, private data, and a reference count."""

    f_op: FileOperations
    path: str
    f_flags: int
    f_mode: int
    private_data: Any = None
    f_count: int = 1
    noexec: bool = False
    shmem: ShmemFile | None = None

    def get_file(self) -> File:
        if self.f_count <= 0:
            raise ModelInvariantError(f"get_file on released file {self.path}")
        self.f_count += 1
        return self

    def fput(self, k: Kernel) -> None:
        """Drop a reference; the last one calls ``f_op.release``. Models: fs/file_table.c fput()."""
        if self.f_count <= 0:
            raise ModelInvariantError(f"fput on released file {self.path}")
        self.f_count -= 1
        if self.f_count == 0:
            self.f_op.release(k, self)
            if self.shmem is not None and self.shmem.anonymous:
                self.shmem.release()


class ShmemFile:
    """A tmpfs (shmem) file: a sparse page cache in DRAM, freed at release or truncation.

    Models: mm/shmem.c shmem_file_setup(), shmem_read_mapping_page() (allocates a zeroed page),
    shmem_truncate_range() (frees pages). Used for enclave backing stores and /dev/shm files.
    """

    def __init__(self, k: Kernel, name: str, size: int, anonymous: bool = True) -> None:
        self.k = k
        self.name = name
        self.size = size
        self.anonymous = anonymous
        self.pages: dict[int, int] = {}

    def get_page(self, index: int) -> int:
        """The physical address of page ``index``, allocating a zero page if absent."""
        phys = self.pages.get(index)
        if phys is None:
            phys = self.k.dram_alloc()
            self.pages[index] = phys
        return phys

    def find_page(self, index: int) -> int | None:
        return self.pages.get(index)

    def truncate_page(self, index: int) -> None:
        phys = self.pages.pop(index, None)
        if phys is not None:
            self.k.dram_free(phys)

    def release(self) -> None:
        for phys in self.pages.values():
            self.k.dram_free(phys)
        self.pages.clear()


class _ShmemFops(FileOperations):
    name = "shmem"

    def mmap(self, k: Kernel, file: File, vma: Vma) -> int:
        return 0


#: The file operations of tmpfs files (stateless).
SHMEM_FOPS = _ShmemFops()


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
    kernel access through a user pointer; same VMA checks, no signal).
    """
    k = mm.k
    # Single task: nothing else can resolve a retried fault, so a bound catches a livelock. Under
    # a scheduler the retry is a preemption point (the task returns to user space and faults
    # again while ksgxd or the EPC-lock writer make progress); the step bound catches livelocks.
    bound = 64 if isinstance(k.sched, NullScheduler) else 1 << 30
    for attempt in range(bound):
        if attempt:
            k.sched.preempt("fault_retry")
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
    raise ModelInvariantError(f"fault at {addr:#x} never resolved (livelock)")


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
# The process


def _oserror(err: int) -> OSError:
    return OSError(err, os.strerror(err))


def _page_align(n: int) -> int:
    return (n + PAGE_SIZE - 1) & _PAGE_MASK


def _calc_vm_prot_bits(prot: int) -> int:
    return (
        (VM_READ if prot & U.PROT_READ else 0)
        | (VM_WRITE if prot & U.PROT_WRITE else 0)
        | (VM_EXEC if prot & U.PROT_EXEC else 0)
    )


class Process:
    """A simulated Linux process: an :class:`Mm`, a file table, pending and delivered signals.

    ``cpu`` is the logical processor its thread runs on when no scheduler task says otherwise.
    """

    def __init__(self, k: Kernel, name: str = "proc", cpu: int = 0) -> None:
        if not isinstance(name, str):
            raise InvalidArgument(f"process name must be a str, got {name!r}")
        if not isinstance(cpu, int) or not 0 <= cpu < len(k.machine.cpus):
            raise InvalidArgument(f"no CPU {cpu!r} on this machine")
        self.k = k
        self.pid = k.new_pid()
        self.name = name
        self.cpu = cpu
        self.mm = Mm(k, f"{name}[{self.pid}]")
        self.fds: dict[int, File] = {}
        self.pending: list[int] = []
        self.signals: list[SigInfo] = []
        self.exited = False
        self.exit_code: int | None = None
        self.functions: dict[int, Callable[..., int]] = {}
        #: The last enclave exit the vDSO saw (GPRs at EEXIT / AEX).
        self.last_exit: Any = None
        k.processes[self.pid] = self
        # The stack and the vDSO.
        self.mm.insert_vma(
            Vma(
                self.mm,
                STACK_TOP - STACK_SIZE,
                STACK_TOP,
                VM_READ | VM_WRITE | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC,
                name="[stack]",
            )
        )
        self.mm.insert_vma(
            Vma(
                self.mm,
                VDSO_BASE,
                VDSO_BASE + VDSO_SIZE,
                VM_READ | VM_EXEC | VM_MAYREAD | VM_MAYEXEC,
                name="[vdso]",
            )
        )

    def __repr__(self) -> str:
        return f"Process({self.name!r}, pid={self.pid})"

    # -- signals -----------------------------------------------------------------------

    def signal_pending(self) -> bool:
        return bool(self.pending)

    def kill(self, signo: int) -> None:
        """Send ``signo`` (kill(2)): pending until the next return to user space."""
        self._check_alive()
        self.pending.append(signo)

    def _deliver_pending(self) -> None:
        for signo in self.pending:
            self.signals.append(SigInfo(signo))
        self.pending.clear()

    def force_sig_fault(self, signo: int, code: int, addr: int) -> ProcessSignal:
        info = SigInfo(signo, code, addr)
        self.signals.append(info)
        return ProcessSignal(info)

    # -- syscall entry/exit ----------------------------------------------------------------

    def _check_alive(self) -> None:
        if self.exited:
            raise InvalidArgument(f"{self!r} has exited")

    def current_cpu(self) -> int:
        """The CPU this process's thread runs on: the scheduler task's, else ``self.cpu``."""
        from sgxsim.kernel.locking import NullScheduler

        return self.cpu if isinstance(self.k.sched, NullScheduler) else self.k.current_cpu()

    def _enter(self) -> Process | None:
        self._check_alive()
        prev = self.k.current_proc
        self.k.current_proc = self
        # switch_mm(): the CPU now runs this mm (mm_cpumask).
        self.mm.cpumask.add(self.current_cpu())
        return prev

    def _leave(self, prev: Process | None) -> None:
        self.k.current_proc = prev
        self.k.run_deferred_work()
        self._deliver_pending()

    def _ret(self, ret: int) -> int:
        if ret < 0:
            err = -ret
            if err == U.ERESTARTSYS:
                err = U.EINTR
            elif err == U.ENOIOCTLCMD:
                err = U.ENOTTY
            raise _oserror(err)
        return ret

    # -- memory access -------------------------------------------------------------------

    def read(self, addr: int, n: int) -> bytes:
        """Read user memory as the process would (faults handled; SIGSEGV/SIGBUS raise)."""
        prev = self._enter()
        try:
            res = _user_copy(self.mm, addr, n, None, user=True)
        finally:
            self._leave(prev)
        if isinstance(res, bytes):
            return res
        raise self._fault_signal(res, addr)

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        """Write user memory as the process would (faults handled; SIGSEGV/SIGBUS raise)."""
        prev = self._enter()
        try:
            res = _user_copy(self.mm, addr, len(data), bytes(data), user=True)
        finally:
            self._leave(prev)
        if not isinstance(res, bytes):
            raise self._fault_signal(res, addr)

    def _fault_signal(self, ret: int, addr: int) -> ProcessSignal:
        if ret == SIGBUS_ADRERR:
            return self.force_sig_fault(U.SIGBUS, U.BUS_ADRERR, addr)
        return self.force_sig_fault(
            U.SIGSEGV, U.SEGV_MAPERR if ret == SIGSEGV_MAPERR else U.SEGV_ACCERR, addr
        )

    def alloc(self, data: bytes | int, prot: int = U.PROT_READ | U.PROT_WRITE) -> int:
        """Convenience: mmap anonymous memory (``data`` bytes or a size) and fill it; the address."""
        size = data if isinstance(data, int) else len(data)
        addr = self.mmap(0, max(size, 1), U.PROT_READ | U.PROT_WRITE, U.MAP_PRIVATE | U.MAP_ANONYMOUS, -1, 0)
        if not isinstance(data, int) and any(data):
            self.write(addr, data)
        if prot != U.PROT_READ | U.PROT_WRITE:
            self.mprotect(addr, _page_align(max(size, 1)), prot)
        return addr

    def register_function(self, fn: Callable[..., int]) -> int:
        """Give a Python callable a user-code address (for ``sgx_enclave_run.user_handler``)."""
        if not callable(fn):
            raise InvalidArgument(f"not callable: {fn!r}")
        addr = USER_TEXT_BASE + 16 * len(self.functions)
        self.functions[addr] = fn
        return addr

    # -- files -----------------------------------------------------------------------------

    def _alloc_fd(self) -> int:
        fd = 3
        while fd in self.fds:
            fd += 1
        return fd

    def open(self, path: str, flags: int = U.O_RDWR, mode: int = 0o600) -> int:
        """open(2): SGX misc devices and tmpfs files under /dev/shm/.

        Outcomes: the fd; ENOENT (no such device / file without O_CREAT), or the device's
        open() error.
        """
        if not isinstance(path, str) or not isinstance(flags, int):
            raise InvalidArgument(f"open({path!r}, {flags!r})")
        k = self.k
        prev = self._enter()
        try:
            acc = flags & U.O_ACCMODE
            f_mode = (FMODE_READ if acc in (U.O_RDONLY, U.O_RDWR) else 0) | (
                FMODE_WRITE if acc in (U.O_WRONLY, U.O_RDWR) else 0
            )
            noexec = any(path.startswith(p) for p in k.config.noexec_mounts)
            dev = k.misc_devices.get(path)
            if dev is not None:
                file = File(dev.fops, path, flags, f_mode, noexec=noexec)
            elif path.startswith("/dev/shm/") and len(path) > len("/dev/shm/"):
                shm = k.tmpfs.get(path)
                if shm is None:
                    if not flags & os.O_CREAT:
                        return self._ret(-U.ENOENT)
                    shm = ShmemFile(k, path, 0, anonymous=False)
                    k.tmpfs[path] = shm
                file = File(SHMEM_FOPS, path, flags, f_mode, noexec=noexec, shmem=shm)
            else:
                return self._ret(-U.ENOENT)
            ret = file.f_op.open(k, file)
            if ret < 0:
                return self._ret(ret)
            fd = self._alloc_fd()
            self.fds[fd] = file
            return fd
        finally:
            self._leave(prev)

    def close(self, fd: int) -> int:
        """close(2). Outcomes: 0; EBADF."""
        prev = self._enter()
        try:
            file = self.fds.pop(fd, None)
            if file is None:
                return self._ret(-U.EBADF)
            file.fput(self.k)
            return 0
        finally:
            self._leave(prev)

    def file(self, fd: int) -> File:
        """The open file behind ``fd`` (for inspection)."""
        f = self.fds.get(fd)
        if f is None:
            raise _oserror(U.EBADF)
        return f

    def ioctl(self, fd: int, request: int, arg: Any = 0) -> int:
        """ioctl(2): ``arg`` is a ctypes structure (copied to and back from the user stack), a user
        address, or 0/None.

        Outcomes: the driver's non-negative return; OSError(EBADF / driver errno; ERESTARTSYS is
        seen as EINTR, ENOIOCTLCMD as ENOTTY), raised after the structure was copied back.
        """
        if not isinstance(request, int) or isinstance(request, bool):
            raise InvalidArgument(f"ioctl request must be an int, got {request!r}")
        k = self.k
        prev = self._enter()
        struct_arg: ctypes.Structure | None = None
        try:
            file = self.fds.get(fd)
            if file is None:
                return self._ret(-U.EBADF)
            if arg is None:
                uarg = 0
            elif isinstance(arg, ctypes.Structure):
                struct_arg = arg
                raw = bytes(arg)
                uarg = (STACK_TOP - len(raw)) & ~0x7
                # The stack copy is made in user mode (the C program's own object).
                res = _user_copy(self.mm, uarg, len(raw), raw, user=True)
                if not isinstance(res, bytes):
                    raise ModelInvariantError("user stack not writable")
            elif isinstance(arg, int) and not isinstance(arg, bool):
                uarg = arg & 0xFFFF_FFFF_FFFF_FFFF
            else:
                raise InvalidArgument(f"ioctl arg must be a ctypes structure, an int or None, got {arg!r}")
            ret = file.f_op.ioctl(k, file, request & 0xFFFF_FFFF, uarg)
            if struct_arg is not None:
                back = _user_copy(self.mm, uarg, ctypes.sizeof(struct_arg), None, user=True)
                if isinstance(back, bytes):
                    ctypes.memmove(ctypes.addressof(struct_arg), back, len(back))
            return self._ret(ret)
        finally:
            self._leave(prev)

    # -- mappings ---------------------------------------------------------------------------

    def _get_unmapped_area(self, length: int, hint: int) -> int:
        mm = self.mm
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

    def mmap(self, addr: int, length: int, prot: int, flags: int, fd: int = -1, offset: int = 0) -> int:
        """mmap(2). Outcomes: the address; EINVAL (length 0, misaligned offset/fixed address,
        bad MAP_TYPE, driver refusal), EBADF, EACCES (file mode / driver permission check),
        EPERM (PROT_EXEC from a noexec mount), ENODEV (file cannot be mapped), ENOMEM."""
        for name, v in (
            ("addr", addr),
            ("length", length),
            ("prot", prot),
            ("flags", flags),
            ("fd", fd),
            ("offset", offset),
        ):
            if not isinstance(v, int) or isinstance(v, bool):
                raise InvalidArgument(f"mmap {name} must be an int, got {v!r}")
        k = self.k
        prev = self._enter()
        try:
            return self._ret(self._do_mmap(k, addr, length, prot, flags, fd, offset))
        finally:
            self._leave(prev)

    def _do_mmap(self, k: Kernel, addr: int, length: int, prot: int, flags: int, fd: int, offset: int) -> int:
        mm = self.mm
        if offset & ~_PAGE_MASK:
            return -U.EINVAL
        if length <= 0:
            return -U.EINVAL
        length = _page_align(length)
        if length > TASK_SIZE:
            return -U.ENOMEM
        maptype = flags & U.MAP_TYPE
        if maptype not in (U.MAP_SHARED, U.MAP_PRIVATE, U.MAP_SHARED_VALIDATE):
            return -U.EINVAL
        shared = maptype != U.MAP_PRIVATE
        if mm.personality & U.READ_IMPLIES_EXEC and prot & U.PROT_READ:
            prot |= U.PROT_EXEC
        file: File | None = None
        if not flags & U.MAP_ANONYMOUS:
            file = self.fds.get(fd)
            if file is None:
                return -U.EBADF
            if not file.f_mode & FMODE_READ:
                return -U.EACCES
            if shared and prot & U.PROT_WRITE and not file.f_mode & FMODE_WRITE:
                return -U.EACCES
            if prot & U.PROT_EXEC and file.noexec:
                return -U.EPERM
        vm_flags = _calc_vm_prot_bits(prot) | VM_MAYREAD | VM_MAYWRITE | VM_MAYEXEC
        if file is not None:
            if shared:
                vm_flags |= VM_SHARED | VM_MAYSHARE
                if not file.f_mode & FMODE_WRITE:
                    vm_flags &= ~(VM_MAYWRITE | VM_SHARED)
            if file.noexec:
                vm_flags &= ~VM_MAYEXEC
        elif shared:
            vm_flags |= VM_SHARED | VM_MAYSHARE
        # get_unmapped_area(): the file's hook first (sgx: MAP_PRIVATE -> EINVAL, MAP_FIXED -> addr).
        if flags & U.MAP_FIXED:
            if addr & ~_PAGE_MASK:
                return -U.EINVAL
            if addr + length > TASK_SIZE or addr < PAGE_SIZE:
                return -U.ENOMEM
        area: int | None = None
        if file is not None:
            area = file.f_op.get_unmapped_area(k, file, addr, length, offset >> PAGE_SHIFT, flags)
            if area is not None and area < 0:
                return area
        if flags & U.MAP_FIXED:
            area = addr
        elif area is None:
            area = self._get_unmapped_area(length, addr)
            if area < 0:
                return area
        start, end = area, area + length
        vma = Vma(
            mm,
            start,
            end,
            vm_flags,
            offset >> PAGE_SHIFT,
            file.get_file() if file is not None else None,
            name=file.path if file else "[anon]",
        )
        if file is None and shared:
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
            self._unmap_range(start, end)
            mm.insert_vma(vma)
        finally:
            mm.mmap_lock.up_write()
        if flags & U.MAP_POPULATE and file is None:
            for a in range(start, end, PAGE_SIZE):
                _fault_in(mm, a, bool(prot & U.PROT_WRITE), user=False)
        return start

    def _unmap_range(self, start: int, end: int) -> None:
        mm = self.mm
        for vma in mm.overlapping(start, end):
            if vma.vm_start < start:
                vma = mm.split_vma(vma, start)
            if vma.vm_end > end:
                mm.split_vma(vma, end)
            mm.zap_range(vma.vm_start, vma.vm_end)
            mm.remove_vma(vma)
            if vma.vm_file is not None:
                vma.vm_file.fput(self.k)

    def munmap(self, addr: int, length: int) -> int:
        """munmap(2). Outcomes: 0; EINVAL (misaligned address, zero length)."""
        prev = self._enter()
        try:
            if addr & ~_PAGE_MASK or length <= 0 or addr + length > TASK_SIZE:
                return self._ret(-U.EINVAL)
            self.mm.mmap_lock.down_write()
            try:
                self._unmap_range(addr, addr + _page_align(length))
            finally:
                self.mm.mmap_lock.up_write()
            return 0
        finally:
            self._leave(prev)

    def mprotect(self, addr: int, length: int, prot: int) -> int:
        """mprotect(2). Outcomes: 0; EINVAL (misaligned, bad prot bits); ENOMEM (range not fully
        mapped); EACCES (beyond VM_MAY* or refused by the driver's ->mprotect)."""
        prev = self._enter()
        try:
            return self._ret(self._do_mprotect(addr, length, prot))
        finally:
            self._leave(prev)

    def _do_mprotect(self, addr: int, length: int, prot: int) -> int:
        mm = self.mm
        if addr & ~_PAGE_MASK:
            return -U.EINVAL
        if prot & ~(U.PROT_READ | U.PROT_WRITE | U.PROT_EXEC):
            return -U.EINVAL
        if length == 0:
            return 0
        end = addr + _page_align(length)
        if end <= addr:
            return -U.ENOMEM
        if mm.personality & U.READ_IMPLIES_EXEC and prot & U.PROT_READ:
            prot |= U.PROT_EXEC
        want = _calc_vm_prot_bits(prot)
        mm.mmap_lock.down_write()
        try:
            vmas = mm.overlapping(addr, end)
            # The range must be mapped without holes.
            cur = addr
            for v in vmas:
                if v.vm_start > cur:
                    return -U.ENOMEM
                cur = v.vm_end
            if cur < end:
                return -U.ENOMEM
            for vma in vmas:
                nstart, nend = max(addr, vma.vm_start), min(end, vma.vm_end)
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

    # -- the vDSO ----------------------------------------------------------------------------

    def vdso_sgx_enter_enclave(
        self, rdi: int, rsi: int, rdx: int, function: int, r8: int, r9: int, run: Any, cpu: int | None = None
    ) -> int:
        """``__vdso_sgx_enter_enclave`` on this process's thread; see :mod:`sgxsim.kernel.vdso`."""
        from sgxsim.kernel.vdso import vdso_sgx_enter_enclave

        return vdso_sgx_enter_enclave(self, rdi, rsi, rdx, function, r8, r9, run, cpu)

    # -- exit ---------------------------------------------------------------------------------

    def exit(self, code: int = 0) -> None:
        """exit(2): release the address space (mmu notifiers first), then the open files.

        Models: kernel/exit.c do_exit(): exit_mm() -> mmput() -> exit_mmap()
        (mmu_notifier_release(), then unmap every VMA, dropping file references), then
        exit_files() (close every descriptor). An enclave is released with its last reference.
        """
        self._check_alive()
        k = self.k
        prev = self._enter()
        try:
            mm = self.mm
            mm.mm_users = 0
            for notifier in list(mm.mmu_notifiers):
                notifier.release(mm)
            mm.mmap_lock.down_write()
            try:
                for vma in list(mm.vmas):
                    mm.zap_range(vma.vm_start, vma.vm_end)
                    mm.remove_vma(vma)
                    if vma.vm_file is not None:
                        vma.vm_file.fput(k)
            finally:
                mm.mmap_lock.up_write()
            for fd in sorted(self.fds):
                self.fds.pop(fd).fput(k)
        finally:
            self.k.current_proc = prev
        self.exited = True
        self.exit_code = code
        self.pending.clear()
        k.processes.pop(self.pid, None)
        k.run_deferred_work()

    # -- inspection -----------------------------------------------------------------------------

    def maps(self) -> list[tuple[int, int, str, str]]:
        """/proc/pid/maps-like rows: (start, end, "rwxs", name)."""
        rows = []
        for v in self.mm.vmas:
            perms = "".join(
                c if v.vm_flags & b else "-" for c, b in (("r", VM_READ), ("w", VM_WRITE), ("x", VM_EXEC))
            )
            perms += "s" if v.vm_flags & VM_SHARED else "p"
            rows.append((v.vm_start, v.vm_end, perms, v.name))
        return rows

    def access_remote(self, addr: int, n: int, data: bytes | None = None) -> bytes | int:
        """ptrace/``/proc/pid/mem``-style access through ``vm_ops.access`` (debug enclaves).

        Models: mm/memory.c __access_remote_vm() falling back to vma->vm_ops->access for
        VM_IO|VM_PFNMAP mappings. Outcomes: the bytes read (or ``data`` written), or -errno.
        """
        vma = self.mm.vma_lookup(addr)
        if vma is None:
            return -U.EFAULT
        if vma.vm_ops is None or not hasattr(vma.vm_ops, "access"):
            res = _user_copy(self.mm, addr, n if data is None else len(data), data, user=False)
            return res if isinstance(res, bytes) else -U.EFAULT
        buf = bytearray(n if data is None else data)
        prev = self._enter()
        try:
            ret = vma.vm_ops.access(vma, addr, buf, data is not None)
        finally:
            self._leave(prev)
        if ret < 0:
            return int(ret)
        return bytes(buf[:ret])
