"""The process model: anonymous memory, mmap/munmap/mprotect, faults and signals, files, exit."""

from __future__ import annotations

import errno
import os

import pytest
from tests.kernel.kernel_helpers import World, pte_of

from sgxsim.errors import InvalidArgument
from sgxsim.hw.arch import PAGE_SIZE
from sgxsim.kernel import uapi as U  # noqa: N812
from sgxsim.kernel.process import TASK_SIZE, ProcessSignal


def test_linux_constants() -> None:
    assert (U.MAP_SHARED, U.MAP_PRIVATE, U.MAP_FIXED, U.MAP_ANONYMOUS) == (1, 2, 0x10, 0x20)
    assert (U.PROT_NONE, U.PROT_READ, U.PROT_WRITE, U.PROT_EXEC, U.O_RDWR) == (0, 1, 2, 4, 2)
    import mmap as pymmap

    assert pymmap.MAP_SHARED == U.MAP_SHARED and pymmap.PROT_WRITE == U.PROT_WRITE
    assert os.O_RDWR == U.O_RDWR and errno.ENOTTY == U.ENOTTY and errno.EBUSY == U.EBUSY


def test_anonymous_memory_zero_page_then_cow(world: World) -> None:
    p = world.proc()
    k = world.kernel
    a = p.mmap(0, 3 * PAGE_SIZE, U.PROT_READ | U.PROT_WRITE, U.MAP_PRIVATE | U.MAP_ANONYMOUS, -1, 0)
    assert a % PAGE_SIZE == 0
    assert p.read(a + 10, 5) == bytes(5)
    assert pte_of(p, a).phys == k.zero_page and not pte_of(p, a).writable
    p.write(a + PAGE_SIZE - 2, b"hello")  # crosses a page boundary
    assert p.read(a + PAGE_SIZE - 2, 5) == b"hello"
    assert pte_of(p, a).phys != k.zero_page
    assert p.read(a, 4) == bytes(4)
    used = k.dram_pages
    p.munmap(a, 3 * PAGE_SIZE)
    assert k.dram_pages == used - 2
    with pytest.raises(ProcessSignal) as exc:
        p.read(a, 1)
    assert exc.value.info.signo == U.SIGSEGV and exc.value.info.code == U.SEGV_MAPERR


def test_mprotect_and_access_errors(world: World) -> None:
    p = world.proc()
    a = p.alloc(b"data")
    p.mprotect(a, PAGE_SIZE, U.PROT_READ)
    assert p.read(a, 4) == b"data"
    with pytest.raises(ProcessSignal) as exc:
        p.write(a, b"x")
    assert exc.value.info.code == U.SEGV_ACCERR and p.signals[-1].signo == U.SIGSEGV
    p.mprotect(a, PAGE_SIZE, U.PROT_NONE)
    with pytest.raises(ProcessSignal):
        p.read(a, 1)
    with pytest.raises(OSError) as e1:
        p.mprotect(a + 1, PAGE_SIZE, U.PROT_READ)
    assert e1.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e2:
        p.mprotect(a, 2 * PAGE_SIZE + 0x10_0000_0000, U.PROT_READ)
    assert e2.value.errno == errno.ENOMEM


def test_mmap_validation(world: World) -> None:
    p = world.proc()
    anon = U.MAP_PRIVATE | U.MAP_ANONYMOUS
    for args, err in (
        ((0, 0, U.PROT_READ, anon, -1, 0), errno.EINVAL),
        ((0, PAGE_SIZE, U.PROT_READ, anon, -1, 1), errno.EINVAL),
        ((0, PAGE_SIZE, U.PROT_READ, U.MAP_ANONYMOUS, -1, 0), errno.EINVAL),
        ((0x1001, PAGE_SIZE, U.PROT_READ, anon | U.MAP_FIXED, -1, 0), errno.EINVAL),
        ((0, PAGE_SIZE, U.PROT_READ, U.MAP_SHARED, 42, 0), errno.EBADF),
        ((TASK_SIZE, PAGE_SIZE, U.PROT_READ, anon | U.MAP_FIXED, -1, 0), errno.ENOMEM),
    ):
        with pytest.raises(OSError) as exc:
            p.mmap(*args)
        assert exc.value.errno == err, args
    with pytest.raises(InvalidArgument):
        p.mmap(0, "1", U.PROT_READ, anon, -1, 0)  # type: ignore[arg-type]
    # MAP_FIXED replaces what was there.
    a = p.alloc(b"old")
    b = p.mmap(a, PAGE_SIZE, U.PROT_READ, anon | U.MAP_FIXED, -1, 0)
    assert b == a and p.read(a, 3) == bytes(3)
    # A hint is honoured when free.
    assert p.mmap(0x5000_0000, PAGE_SIZE, U.PROT_READ, anon, -1, 0) == 0x5000_0000


def test_shared_tmpfs_file_and_noexec(world: World) -> None:
    p = world.proc()
    with pytest.raises(OSError) as exc:
        p.open("/dev/shm/x", U.O_RDWR)
    assert exc.value.errno == errno.ENOENT
    fd = p.open("/dev/shm/x", U.O_RDWR | os.O_CREAT)
    a = p.mmap(0, PAGE_SIZE, U.PROT_READ | U.PROT_WRITE, U.MAP_SHARED, fd, 0)
    b = p.mmap(0, PAGE_SIZE, U.PROT_READ, U.MAP_SHARED, fd, 0)
    p.write(a, b"shared")
    assert p.read(b, 6) == b"shared"
    with pytest.raises(OSError) as e2:
        p.mmap(0, PAGE_SIZE, U.PROT_EXEC, U.MAP_SHARED, fd, 0)
    assert e2.value.errno == errno.EPERM
    vma = p.mm.vma_lookup(a)
    from sgxsim.kernel.process import VM_MAYEXEC

    assert vma is not None and not vma.vm_flags & VM_MAYEXEC
    world.kernel.tmpfs["/dev/shm/x"].release()


def test_signals_pending_and_delivered(world: World) -> None:
    p = world.proc()
    p.kill(U.SIGUSR1)
    assert p.signal_pending()
    p.alloc(1)  # any syscall returns to user space and delivers it
    assert not p.signal_pending() and [s.signo for s in p.signals] == [U.SIGUSR1]


def test_close_and_ebadf(world: World) -> None:
    p = world.proc()
    fd = p.open("/dev/sgx_provision", U.O_RDWR)
    assert fd == 3 and p.open("/dev/sgx_provision", U.O_RDWR) == 4
    assert p.close(fd) == 0
    with pytest.raises(OSError) as exc:
        p.close(fd)
    assert exc.value.errno == errno.EBADF
    assert p.open("/dev/sgx_provision", U.O_RDWR) == 3


def test_exit_releases_everything_and_refuses_further_calls(world: World) -> None:
    p = world.proc()
    k = world.kernel
    base = k.dram_pages
    p.alloc(b"x" * 3 * PAGE_SIZE)
    p.open("/dev/sgx_enclave", U.O_RDWR)
    assert k.enclaves and k.dram_pages > base
    p.exit(3)
    assert p.exited and p.exit_code == 3 and not k.enclaves and k.dram_pages == base
    with pytest.raises(InvalidArgument):
        p.read(0x1000, 1)
    assert p.pid not in k.processes


def test_maps_listing(world: World) -> None:
    p = world.proc()
    a = p.mmap(0, 2 * PAGE_SIZE, U.PROT_READ, U.MAP_PRIVATE | U.MAP_ANONYMOUS, -1, 0)
    p.mprotect(a, PAGE_SIZE, U.PROT_READ | U.PROT_WRITE)
    rows = [r for r in p.maps() if r[3] == "[anon]"]
    assert rows == [
        (a, a + PAGE_SIZE, "rw-p", "[anon]"),
        (a + PAGE_SIZE, a + 2 * PAGE_SIZE, "r--p", "[anon]"),
    ]
