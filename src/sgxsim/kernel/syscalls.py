"""Simulated Linux processes and their system calls.

A :class:`Process` models one single-threaded-per-call Linux process on a
:class:`~sgxsim.kernel.main.Kernel`. Its methods are named after the system calls they model and
take the C call's arguments in the C order, so a C test translates line by line::

    fd = proc.open("/dev/sgx_enclave", O_RDWR)
    proc.ioctl(fd, SGX_IOC_ENCLAVE_CREATE, create)          # ctypes struct or a user address
    proc.mmap(base, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0)

The boundary contract: a wrong Python type (a str for a signal, a float for an address, a CPU
the machine does not have) raises :class:`~sgxsim.errors.InvalidArgument`; every int is C's (an
``unsigned long`` wraps mod 2^64, an ``int`` fd wraps to 32 bits), so a negative address is a
huge one and gets Linux's errno. Failures raise ``OSError(errno, os.strerror(errno))`` as the C
library's -1/errno would, after in/out fields were written back (exactly what the kernel's
copy_to_user left in user memory).

Models: the syscall entry points of mm/mmap.c (ksys_mmap_pgoff: fget -> EBADF), arch/x86/kernel/
sys_x86_64.c (mmap: offset alignment -> EINVAL), mm/mprotect.c, fs/open.c, fs/ioctl.c
(ENOIOCTLCMD -> ENOTTY), kernel/exit.c do_exit (exit_mm before exit_files), kernel/signal.c
(ERESTARTSYS -> EINTR without SA_RESTART), mm/memory.c __access_remote_vm.
Differs: no fork (so no COW between processes); ctypes ioctl arguments are copied to the top of
the stack so that a read past the passed object hits unmapped memory (EFAULT) rather than
garbage; ERESTARTSYS always becomes EINTR (no SA_RESTART).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sgxsim.errors import InvalidArgument
from sgxsim.hw.arch import PAGE_SIZE
from sgxsim.kernel import uapi as U  # noqa: N812
from sgxsim.kernel.fs import FMODE_READ, FMODE_WRITE, SHMEM_FOPS, File, ShmemFile
from sgxsim.kernel.locking import NullScheduler
from sgxsim.kernel.mm import (
    STACK_SIZE,
    STACK_TOP,
    USER_TEXT_BASE,
    VDSO_BASE,
    VDSO_SIZE,
    VM_EXEC,
    VM_MAYEXEC,
    VM_MAYREAD,
    VM_MAYWRITE,
    VM_READ,
    VM_SHARED,
    VM_WRITE,
    Mm,
    Vma,
    _user_copy,
    do_mmap,
    do_mprotect_pkey,
    exit_mmap,
    ulong,
    vm_munmap,
)
from sgxsim.kernel.signals import TaskSignals
from sgxsim.kernel.vdso import vdso_sgx_enter_enclave

if TYPE_CHECKING:
    from sgxsim.kernel.main import Kernel
    from sgxsim.kernel.signals import SigInfo

__all__ = ["Process", "check_int"]


def _oserror(err: int) -> OSError:
    return OSError(err, os.strerror(err))


def check_int(what: str, v: object) -> int:
    """``v`` if it is an int (not a bool), else InvalidArgument: the model API's type check."""
    if not isinstance(v, int) or isinstance(v, bool):
        raise InvalidArgument(f"{what} must be an int, got {v!r}")
    return v


def _c_int(v: int) -> int:
    """A Python int as C's 32-bit ``int``."""
    v &= 0xFFFF_FFFF
    return v - (1 << 32) if v & 0x8000_0000 else v


class Process(TaskSignals):
    """A simulated Linux process: an :class:`~sgxsim.kernel.mm.Mm`, a file table, signals.

    ``cpu`` is the logical processor its thread runs on when no scheduler task says otherwise.
    """

    def __init__(self, k: Kernel, name: str = "proc", cpu: int = 0) -> None:
        if not isinstance(name, str):
            raise InvalidArgument(f"process name must be a str, got {name!r}")
        if not isinstance(cpu, int) or isinstance(cpu, bool) or not 0 <= cpu < len(k.machine.cpus):
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
        state = f"exited({self.exit_code})" if self.exited else "alive"
        return (
            f"<Process {self.name!r} pid={self.pid} {state} cpu={self.cpu} fds={len(self.fds)} "
            f"vmas={len(self.mm.vmas)} pending={len(self.pending)}>"
        )

    # -- syscall entry/exit ----------------------------------------------------------------

    def _check_alive(self) -> None:
        if self.exited:
            raise InvalidArgument(f"{self!r} has exited")

    def current_cpu(self) -> int:
        """The CPU this process's thread runs on: the scheduler task's, else ``self.cpu``."""
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
        """Read user memory as the process would (faults handled; SIGSEGV/SIGBUS raise;
        :class:`~sgxsim.kernel.mm.FaultLoop` when the fault never resolves)."""
        addr = ulong(check_int("read addr", addr))
        if check_int("read length", n) < 0:
            raise InvalidArgument(f"read length must be >= 0, got {n}")
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
        addr = ulong(check_int("write addr", addr))
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidArgument(f"write data must be bytes-like, got {type(data).__name__}")
        prev = self._enter()
        try:
            res = _user_copy(self.mm, addr, len(data), bytes(data), user=True)
        finally:
            self._leave(prev)
        if not isinstance(res, bytes):
            raise self._fault_signal(res, addr)

    def alloc(self, data: bytes | int, prot: int = U.PROT_READ | U.PROT_WRITE) -> int:
        """Convenience: mmap anonymous memory (``data`` bytes or a size) and fill it; the address."""
        check_int("alloc prot", prot)
        if isinstance(data, int) and not isinstance(data, bool):
            if data < 0:
                raise InvalidArgument(f"alloc size must be >= 0, got {data}")
            size = data
        elif isinstance(data, (bytes, bytearray, memoryview)):
            size = len(data)
        else:
            raise InvalidArgument(f"alloc data must be bytes-like or a size, got {type(data).__name__}")
        addr = self.mmap(0, max(size, 1), U.PROT_READ | U.PROT_WRITE, U.MAP_PRIVATE | U.MAP_ANONYMOUS, -1, 0)
        if not isinstance(data, int) and any(data):
            self.write(addr, data)
        if prot != U.PROT_READ | U.PROT_WRITE:
            self.mprotect(addr, max(size, 1), prot)
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
        if not isinstance(path, str):
            raise InvalidArgument(f"open path must be a str, got {path!r}")
        flags = check_int("open flags", flags) & 0xFFFF_FFFF
        check_int("open mode", mode)
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
        fd = _c_int(check_int("close fd", fd))
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
        f = self.fds.get(_c_int(check_int("fd", fd)))
        if f is None:
            raise _oserror(U.EBADF)
        return f

    def ioctl(self, fd: int, request: int, arg: Any = 0) -> int:
        """ioctl(2): ``arg`` is a ctypes structure (copied to and back from the user stack), a user
        address, or 0/None.

        Outcomes: the driver's non-negative return; OSError(EBADF / driver errno; ERESTARTSYS is
        seen as EINTR, ENOIOCTLCMD as ENOTTY), raised after the structure was copied back.
        """
        fd = _c_int(check_int("ioctl fd", fd))
        check_int("ioctl request", request)
        if arg is not None and not isinstance(arg, ctypes.Structure):
            check_int("ioctl arg (a ctypes structure, an int or None)", arg)
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
                    # The program's own store to its stack faults before the syscall (SIGSEGV).
                    raise self._fault_signal(res, uarg)
            elif isinstance(arg, int) and not isinstance(arg, bool):
                uarg = ulong(arg)
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

    def mmap(self, addr: int, length: int, prot: int, flags: int, fd: int = -1, offset: int = 0) -> int:
        """mmap(2). Outcomes: the address; EINVAL (length 0, misaligned offset/fixed address,
        bad MAP_TYPE, driver refusal), EBADF, EACCES (file mode / driver permission check),
        EPERM (PROT_EXEC from a noexec mount; a fixed address below mmap_min_addr), ENODEV
        (file cannot be mapped), ENOMEM, EOVERFLOW (offset + length beyond the file's limit),
        EEXIST (MAP_FIXED_NOREPLACE over a mapping). See :func:`sgxsim.kernel.mm.do_mmap`."""
        addr, length, prot, flags = (
            ulong(check_int(f"mmap {n}", v))
            for n, v in (("addr", addr), ("length", length), ("prot", prot), ("flags", flags))
        )
        fd = _c_int(check_int("mmap fd", fd))
        offset = ulong(check_int("mmap offset", offset))
        k = self.k
        prev = self._enter()
        try:
            if offset & (PAGE_SIZE - 1):
                return self._ret(-U.EINVAL)
            file: File | None = None
            if not flags & U.MAP_ANONYMOUS:
                file = self.fds.get(fd)
                if file is None:
                    return self._ret(-U.EBADF)
            return self._ret(do_mmap(k, self.mm, file, addr, length, prot, flags, offset // PAGE_SIZE))
        finally:
            self._leave(prev)

    def munmap(self, addr: int, length: int) -> int:
        """munmap(2). Outcomes: 0; EINVAL (misaligned address, zero length, beyond TASK_SIZE)."""
        addr = ulong(check_int("munmap addr", addr))
        length = ulong(check_int("munmap length", length))
        prev = self._enter()
        try:
            return self._ret(vm_munmap(self.mm, addr, length))
        finally:
            self._leave(prev)

    def mprotect(self, addr: int, length: int, prot: int) -> int:
        """mprotect(2). Outcomes: 0; EINVAL (misaligned, bad prot bits); ENOMEM (range not fully
        mapped, or wrapping); EACCES (beyond VM_MAY* or refused by the driver's ->mprotect)."""
        addr = ulong(check_int("mprotect addr", addr))
        length = ulong(check_int("mprotect length", length))
        prot = ulong(check_int("mprotect prot", prot))
        prev = self._enter()
        try:
            return self._ret(do_mprotect_pkey(self.mm, addr, length, prot))
        finally:
            self._leave(prev)

    # -- the vDSO ----------------------------------------------------------------------------

    def vdso_sgx_enter_enclave(
        self, rdi: int, rsi: int, rdx: int, function: int, r8: int, r9: int, run: Any, cpu: int | None = None
    ) -> int:
        """``__vdso_sgx_enter_enclave`` on this process's thread; see :mod:`sgxsim.kernel.vdso`."""
        return vdso_sgx_enter_enclave(self, rdi, rsi, rdx, function, r8, r9, run, cpu)

    # -- exit ---------------------------------------------------------------------------------

    def exit(self, code: int = 0) -> None:
        """exit(2): release the address space (mmu notifiers first), then the open files.

        Models: kernel/exit.c do_exit(): exit_mm() -> mmput() -> exit_mmap(), then
        exit_files() (close every descriptor). An enclave is released with its last reference.
        """
        check_int("exit code", code)
        self._check_alive()
        k = self.k
        prev = self._enter()
        try:
            exit_mmap(self.mm)
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
        addr = ulong(check_int("access_remote addr", addr))
        if check_int("access_remote length", n) < 0:
            raise InvalidArgument(f"access_remote length must be >= 0, got {n}")
        if data is not None and not isinstance(data, (bytes, bytearray)):
            raise InvalidArgument(f"access_remote data must be bytes or None, got {type(data).__name__}")
        self._check_alive()
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
