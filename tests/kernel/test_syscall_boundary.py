"""The syscall boundary: InvalidArgument only for a wrong Python type; ints are C's.

An ``unsigned long`` wraps mod 2^64 (so -4096 is the top page of the address space) and gets the
errno Linux gives it; a value of the wrong Python type is a misuse of the model API.
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.kernel.kernel_helpers import OP_NOP, Op, World, build_enclave, make_world

from sgxsim.errors import InvalidArgument
from sgxsim.hw.arch import PAGE_SIZE
from sgxsim.kernel import ProcessSignal
from sgxsim.kernel import uapi as U  # noqa: N812
from sgxsim.kernel.process import STACK_TOP

RW = U.PROT_READ | U.PROT_WRITE
ANON = U.MAP_PRIVATE | U.MAP_ANONYMOUS


@pytest.fixture
def world() -> Iterator[World]:
    w = make_world(64)
    yield w
    w.teardown()


def _errno(fn: Callable[..., Any], *args: Any, **kw: Any) -> int:
    try:
        fn(*args, **kw)
    except OSError as exc:
        return exc.errno or -1
    return 0


def _run() -> U.sgx_enclave_run:
    return U.sgx_enclave_run()


#: The process is typed Any: these calls pass wrong types on purpose.
WRONG_TYPES: list[tuple[str, Callable[[Any, int], Any]]] = [
    ("mprotect addr", lambda p, a: p.mprotect("0", PAGE_SIZE, RW)),
    ("mprotect prot", lambda p, a: p.mprotect(a, PAGE_SIZE, None)),
    ("munmap addr", lambda p, a: p.munmap(None, PAGE_SIZE)),
    ("munmap length", lambda p, a: p.munmap(a, 4096.0)),
    ("read addr", lambda p, a: p.read(float(a), 1)),
    ("read length", lambda p, a: p.read(a, "1")),
    ("read negative length", lambda p, a: p.read(a, -1)),
    ("write data", lambda p, a: p.write(a, "text")),
    ("write addr", lambda p, a: p.write(str(a), b"x")),
    ("alloc data", lambda p, a: p.alloc("text")),
    ("alloc prot", lambda p, a: p.alloc(16, prot="rw")),
    ("access_remote addr", lambda p, a: p.access_remote("0", 1)),
    ("access_remote length", lambda p, a: p.access_remote(a, None)),
    ("access_remote data", lambda p, a: p.access_remote(a, 1, "x")),
    ("kill", lambda p, a: p.kill("SIGKILL")),
    ("kill bool", lambda p, a: p.kill(True)),
    ("mmap flags", lambda p, a: p.mmap(0, PAGE_SIZE, RW, str(ANON))),
    ("mmap offset", lambda p, a: p.mmap(0, PAGE_SIZE, RW, ANON, -1, 0.0)),
    ("open path", lambda p, a: p.open(b"/dev/sgx_enclave")),
    ("close fd", lambda p, a: p.close("3")),
    ("ioctl fd", lambda p, a: p.ioctl(None, U.SGX_IOC_VEPC_REMOVE_ALL)),
    ("ioctl arg", lambda p, a: p.ioctl(3, U.SGX_IOC_VEPC_REMOVE_ALL, 1.5)),
    ("exit code", lambda p, a: p.exit("0")),
    (
        "vdso cpu 99",
        lambda p, a: p.vdso_sgx_enter_enclave(0, 0, 0, U.EENTER, 0, 0, U.sgx_enclave_run(), cpu=99),
    ),
    (
        "vdso cpu -1",
        lambda p, a: p.vdso_sgx_enter_enclave(0, 0, 0, U.EENTER, 0, 0, U.sgx_enclave_run(), cpu=-1),
    ),
    ("vdso rdi", lambda p, a: p.vdso_sgx_enter_enclave(None, 0, 0, U.EENTER, 0, 0, U.sgx_enclave_run())),
]


@pytest.mark.parametrize(("what", "call"), WRONG_TYPES, ids=[w for w, _ in WRONG_TYPES])
def test_wrong_python_type_is_invalid_argument(world: World, what: str, call: Callable[..., Any]) -> None:
    p = world.proc()
    addr = p.alloc(PAGE_SIZE)
    before = p.maps()
    with pytest.raises(InvalidArgument):
        call(p, addr)
    assert p.maps() == before and not p.exited and p.pending == []


def test_negative_ints_are_huge_unsigned_longs(world: World) -> None:
    p = world.proc()
    a = p.alloc(PAGE_SIZE)
    # do_vmi_munmap: start > TASK_SIZE -> EINVAL (was: accepted and returned 0).
    assert _errno(p.munmap, -4096, 4096) == errno.EINVAL
    assert _errno(p.munmap, a, -4096) == errno.EINVAL  # len > TASK_SIZE - start
    # do_mprotect_pkey: end = start + len wraps -> ENOMEM.
    assert _errno(p.mprotect, -4096, 4096, U.PROT_READ) == errno.ENOMEM
    # mmap: PAGE_ALIGN(len) wraps to 0 -> ENOMEM; a len beyond TASK_SIZE -> ENOMEM.
    assert _errno(p.mmap, 0, -1, RW, ANON) == errno.ENOMEM
    assert _errno(p.mmap, 0, -4096, RW, ANON) == errno.ENOMEM
    # A misaligned unsigned offset is EINVAL (sys_mmap), before the fd is looked at.
    assert _errno(p.mmap, 0, PAGE_SIZE, RW, U.MAP_SHARED, 99, -1) == errno.EINVAL
    # User accesses at a negative address fault at the top of the address space.
    with pytest.raises(ProcessSignal) as exc:
        p.read(-4096, 1)
    assert exc.value.info.signo == U.SIGSEGV and exc.value.info.addr == (1 << 64) - 4096
    assert p.read(a, 1) == b"\0"


def test_mmap_offset_overflow_is_eoverflow(world: World) -> None:
    """mm/mmap.c file_mmap_ok(): pgoff beyond the file's maximum size -> EOVERFLOW; an anonymous
    private mapping ignores the offset (pgoff = addr >> PAGE_SHIFT)."""
    p = world.proc()
    vfd = p.open("/dev/sgx_vepc", U.O_RDWR)
    efd = p.open("/dev/sgx_enclave", U.O_RDWR)
    sfd = p.open("/dev/shm/fuzz", U.O_RDWR | os.O_CREAT)
    assert _errno(p.mmap, 0, PAGE_SIZE, RW, U.MAP_SHARED, vfd, -4096) == errno.EOVERFLOW
    assert _errno(p.mmap, 0, PAGE_SIZE, RW, U.MAP_SHARED, efd, -4096) == errno.EOVERFLOW
    assert _errno(p.mmap, 0, PAGE_SIZE, RW, U.MAP_SHARED, sfd, 1 << 63) == errno.EOVERFLOW
    assert _errno(p.mmap, 0, PAGE_SIZE, RW, U.MAP_SHARED, vfd, (1 << 64) - 2 * PAGE_SIZE) == 0
    assert p.mmap(0, PAGE_SIZE, RW, ANON, -1, -4096) > 0
    for fd in (vfd, efd, sfd):
        p.close(fd)


def test_map_fixed_noreplace_over_a_mapping_is_eexist(world: World) -> None:
    p = world.proc()
    a = p.mmap(0, 3 * PAGE_SIZE, RW, ANON)
    p.write(a + PAGE_SIZE, b"keep")
    noreplace = ANON | U.MAP_FIXED_NOREPLACE
    assert _errno(p.mmap, a + PAGE_SIZE, PAGE_SIZE, RW, noreplace) == errno.EEXIST
    assert _errno(p.mmap, a - PAGE_SIZE, 2 * PAGE_SIZE, RW, noreplace) == errno.EEXIST  # overlaps
    assert p.read(a + PAGE_SIZE, 4) == b"keep"
    assert p.mmap(a + 3 * PAGE_SIZE, PAGE_SIZE, RW, noreplace) == a + 3 * PAGE_SIZE  # free: placed there
    assert p.mmap(a, PAGE_SIZE, RW, ANON | U.MAP_FIXED) == a  # MAP_FIXED still replaces


def test_commit_charge_beyond_ram_is_enomem_and_populate_stays_cheap(world: World) -> None:
    """Found by the slow syscall fuzzer: MAP_POPULATE of a 1 TiB anonymous mapping faulted in 2^28
    pages (hours, then the host's OOM killer). Linux charges a private writable or shared anonymous
    mapping against the commit limit (OVERCOMMIT_GUESS: RAM + swap) and fails it with ENOMEM;
    MAP_NORESERVE skips the charge; a read-only one is not charged and maps the zero page."""
    p = world.proc()
    ram = p.k.machine.dram.total_pages * PAGE_SIZE
    populate = ANON | U.MAP_POPULATE
    shared = U.MAP_SHARED | U.MAP_ANONYMOUS | U.MAP_POPULATE
    for flags in (populate, shared, ANON):
        assert _errno(p.mmap, 0, ram + PAGE_SIZE, RW, flags) == errno.ENOMEM, hex(flags)
    noreserve = U.MAP_SHARED | U.MAP_ANONYMOUS | U.MAP_NORESERVE
    assert _errno(p.mmap, 0, 1 << 40, RW, noreserve) == 0  # no charge: pages on demand
    big = p.mmap(0, 1 << 40, U.PROT_READ, populate)  # not charged; populate leaves it to the reads
    assert p.read(big + (1 << 39), 8) == bytes(8)
    small = p.mmap(0, 2 * PAGE_SIZE, RW, populate)
    dram = p.k.dram_pages
    p.write(small, b"x")  # populated: the write needs no new page
    assert p.k.dram_pages == dram and p.read(small, 1) == b"x"


def test_ioctl_struct_on_an_unwritable_stack_is_the_programs_sigsegv(world: World) -> None:
    """Found by the slow syscall fuzzer: after mprotect(PROT_NONE) of the stack, the copy of an
    ioctl's structure onto it raised ModelInvariantError; a C program faults on that store."""
    p = world.proc()
    fd = p.open("/dev/sgx_enclave", U.O_RDWR)
    assert p.mprotect(STACK_TOP - PAGE_SIZE, PAGE_SIZE, U.PROT_NONE) == 0
    with pytest.raises(ProcessSignal) as info:
        p.ioctl(fd, U.SGX_IOC_ENCLAVE_CREATE, U.sgx_enclave_create(src=0))
    assert info.value.info.signo == signal.SIGSEGV


def test_map_fixed_below_mmap_min_addr_is_eperm(world: World) -> None:
    p = world.proc()
    assert _errno(p.mmap, PAGE_SIZE, PAGE_SIZE, RW, ANON | U.MAP_FIXED) == errno.EPERM
    assert _errno(p.mmap, 0x1001, PAGE_SIZE, RW, ANON | U.MAP_FIXED) == errno.EINVAL
    hint = p.mmap(PAGE_SIZE, PAGE_SIZE, RW, ANON)  # a hint is rounded up to mmap_min_addr
    assert hint >= 0x10000


def test_mprotect_checks_in_linux_order(world: World) -> None:
    p = world.proc()
    a = p.alloc(PAGE_SIZE)
    assert _errno(p.mprotect, a + 1, PAGE_SIZE, 0x10) == errno.EINVAL  # misaligned first
    assert _errno(p.mprotect, a, 0, 0x10) == 0  # len 0 before the prot check
    assert _errno(p.mprotect, a, PAGE_SIZE, 0x10) == errno.EINVAL  # arch_validate_prot
    assert _errno(p.mprotect, a, PAGE_SIZE, U.PROT_READ | U.PROT_SEM) == 0
    assert _errno(p.mprotect, a, PAGE_SIZE, U.PROT_READ | U.PROT_GROWSDOWN) == 0  # stripped
    assert _errno(p.mprotect, a, 2 * PAGE_SIZE, U.PROT_READ) == errno.ENOMEM  # a hole


def test_kill_signal_numbers(world: World) -> None:
    p = world.proc()
    assert _errno(p.kill, 65) == errno.EINVAL
    assert _errno(p.kill, -9) == errno.EINVAL
    p.kill(0)  # existence check only
    assert p.pending == []
    p.kill(U.SIGSEGV)
    assert p.pending == [U.SIGSEGV]


def test_vdso_wraps_registers_and_uses_the_given_cpu(world: World) -> None:
    p = world.proc()
    e = build_enclave(p)
    run = U.sgx_enclave_run()
    run.tcs = e.base
    # A leaf that is neither EENTER nor ERESUME, as a wrapped 32-bit value: -EINVAL.
    p.write(e.op_addr, bytes(Op(type=OP_NOP)))
    assert p.vdso_sgx_enter_enclave(e.op_addr, 0, 0, -1, 0, 0, run) == -errno.EINVAL
    assert p.vdso_sgx_enter_enclave(e.op_addr - (1 << 64), 0, 0, U.EENTER + (1 << 32), 0, 0, run, cpu=3) == 0
    assert run.function == U.EEXIT and 3 in p.mm.cpumask
