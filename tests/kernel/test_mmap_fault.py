"""mmap/mprotect of enclaves (sgx_encl_may_map), the fault handler (ELDU, EAUG, SIGBUS) and
ptrace access (EDBGRD/EDBGWR)."""

from __future__ import annotations

import errno

import pytest
from tests.kernel.kernel_helpers import CODE, DATA1, DATA2, RW, RWX, RX, World, build_enclave, make_world

from sgxsim.hw.arch import PAGE_SIZE, Attributes, PageType
from sgxsim.kernel import uapi as U  # noqa: N812
from sgxsim.kernel.process import ProcessSignal


def _errno(fn, *args) -> int:  # type: ignore[no-untyped-def]
    try:
        fn(*args)
    except OSError as exc:
        return exc.errno or -1
    return 0


def test_map_private_is_einval(world: World) -> None:
    p = world.proc()
    encl = build_enclave(p, mmap=False)
    assert (
        _errno(p.mmap, encl.base, PAGE_SIZE, U.PROT_READ, U.MAP_PRIVATE | U.MAP_FIXED, encl.fd, 0)
        == errno.EINVAL
    )
    assert _errno(p.mmap, 0, PAGE_SIZE, U.PROT_READ, U.MAP_PRIVATE, encl.fd, 0) == errno.EINVAL


def test_permissions_capped_by_page_max_prot(world: World) -> None:
    p = world.proc()
    encl = build_enclave(p, mmap=False)
    # Code pages are R+X: RW is refused, R and RX are fine.
    assert (
        _errno(p.mmap, encl.base + CODE, PAGE_SIZE, RW, U.MAP_SHARED | U.MAP_FIXED, encl.fd, 0)
        == errno.EACCES
    )
    p.mmap(encl.base + CODE, PAGE_SIZE, RX, U.MAP_SHARED | U.MAP_FIXED, encl.fd, 0)
    # Data pages are RW: RWX refused, even when most of the range would allow it.
    assert (
        _errno(p.mmap, encl.base + DATA1, 2 * PAGE_SIZE, RWX, U.MAP_SHARED | U.MAP_FIXED, encl.fd, 0)
        == errno.EACCES
    )
    p.mmap(encl.base + DATA1, 2 * PAGE_SIZE, RW, U.MAP_SHARED | U.MAP_FIXED, encl.fd, 0)
    # mprotect applies the same rule.
    assert _errno(p.mprotect, encl.base + DATA1, PAGE_SIZE, RWX) == errno.EACCES
    p.mprotect(encl.base + DATA1, PAGE_SIZE, U.PROT_READ)
    p.mprotect(encl.base + DATA1, PAGE_SIZE, RW)
    assert _errno(p.mprotect, encl.base + CODE, PAGE_SIZE, RWX) == errno.EACCES


def test_holes_accept_any_permissions_and_range_rule_after_init(world: World) -> None:
    p = world.proc()
    encl = build_enclave(p, mmap=False, extra_size=PAGE_SIZE, init=False)
    hole = encl.base + encl.size - PAGE_SIZE
    # Before INIT a mapping may extend beyond ELRANGE.
    p.mmap(hole, 2 * PAGE_SIZE, RWX, U.MAP_SHARED | U.MAP_FIXED, encl.fd, 0)
    p.munmap(hole, 2 * PAGE_SIZE)
    p2 = build_enclave(world.proc("other"), mmap=False, extra_size=PAGE_SIZE)
    hole2 = p2.base + p2.size - PAGE_SIZE
    p2.proc.mmap(hole2, PAGE_SIZE, RWX, U.MAP_SHARED | U.MAP_FIXED, p2.fd, 0)
    assert (
        _errno(p2.proc.mmap, hole2, 2 * PAGE_SIZE, RWX, U.MAP_SHARED | U.MAP_FIXED, p2.fd, 0) == errno.EACCES
    )
    assert (
        _errno(
            p2.proc.mmap, p2.base - PAGE_SIZE, PAGE_SIZE, U.PROT_READ, U.MAP_SHARED | U.MAP_FIXED, p2.fd, 0
        )
        == errno.EACCES
    )


def test_read_implies_exec_personality_refused(world: World) -> None:
    p = world.proc()
    encl = build_enclave(p, mmap=False)
    p.mm.personality = U.READ_IMPLIES_EXEC
    assert (
        _errno(p.mmap, encl.base + DATA1, PAGE_SIZE, U.PROT_READ, U.MAP_SHARED | U.MAP_FIXED, encl.fd, 0)
        == errno.EACCES
    )
    p.mm.personality = 0


def test_write_mapping_needs_writable_fd(world: World) -> None:
    p = world.proc()
    fd = p.open("/dev/sgx_enclave", U.O_RDONLY)
    assert _errno(p.mmap, 0, PAGE_SIZE, RW, U.MAP_SHARED, fd, 0) == errno.EACCES
    p.mmap(0, PAGE_SIZE, U.PROT_READ, U.MAP_SHARED, fd, 0)


def test_noexec_dev_refuses_prot_exec() -> None:
    from sgxsim.kernel.main import KernelConfig

    w = make_world(64, config=KernelConfig(noexec_mounts=("/dev/",)))
    p = w.proc()
    fd = p.open("/dev/sgx_enclave", U.O_RDWR)
    assert _errno(p.mmap, 0, PAGE_SIZE, U.PROT_EXEC, U.MAP_SHARED, fd, 0) == errno.EPERM
    w.teardown()


def test_user_access_faults_in_abort_page(world: World) -> None:
    p = world.proc()
    encl = build_enclave(p)
    mm = p.mm
    vpn = (encl.base + DATA1) >> 12
    mm.zap_range(encl.base + DATA1, encl.base + DATA1 + PAGE_SIZE)
    assert mm.lookup(encl.base + DATA1) is None
    assert p.read(encl.base + DATA1, 16) == b"\xff" * 16
    pte = mm.ptes[vpn]
    e = p.file(encl.fd).private_data
    assert pte.phys == world.kernel.phys(e.pages.epc(vpn)) and pte.writable and pte.nx
    # Writes from outside the enclave are dropped.
    p.write(encl.base + DATA1, b"x" * 8)
    encl.put(5)
    assert encl.get() == 5


def test_fault_wider_than_page_prot_is_sigbus(world: World) -> None:
    """A mapping made before the page existed may be wider than its max prot: the fault refuses."""
    import struct

    from tests.kernel.kernel_helpers import create_enclave

    from sgxsim.hw.arch import secinfo_flags

    p = world.proc()
    fd, base = create_enclave(p, 0x10000)
    p.mmap(base + PAGE_SIZE, PAGE_SIZE, RW, U.MAP_SHARED | U.MAP_FIXED, fd, 0)  # no page yet: allowed
    si = p.alloc(struct.pack("<Q", secinfo_flags(PageType.PT_REG, 1)) + bytes(56))
    p.ioctl(
        fd,
        U.SGX_IOC_ENCLAVE_ADD_PAGES,
        U.sgx_enclave_add_pages(src=p.alloc(PAGE_SIZE), offset=PAGE_SIZE, length=PAGE_SIZE, secinfo=si),
    )
    with pytest.raises(ProcessSignal) as exc:
        p.read(base + PAGE_SIZE, 8)
    assert exc.value.info.signo == U.SIGBUS and exc.value.info.addr == base + PAGE_SIZE


def test_fault_on_hole_before_init_is_sigbus(world: World) -> None:
    p = world.proc()
    encl = build_enclave(p, mmap=False, init=False, extra_size=PAGE_SIZE)
    hole = encl.base + encl.size - PAGE_SIZE
    p.mmap(hole, PAGE_SIZE, RW, U.MAP_SHARED | U.MAP_FIXED, encl.fd, 0)
    with pytest.raises(ProcessSignal) as exc:
        p.read(hole, 1)
    assert exc.value.info.signo == U.SIGBUS
    assert p.signals[-1].signo == U.SIGBUS


def test_fault_on_hole_after_init_eaugs(world: World) -> None:
    p = world.proc()
    encl = build_enclave(p, extra_size=PAGE_SIZE)
    hole = encl.base + encl.size - PAGE_SIZE
    p.mmap(hole, PAGE_SIZE, RWX, U.MAP_SHARED | U.MAP_FIXED, encl.fd, 0)
    assert p.read(hole, 4) == b"\xff" * 4
    e = p.file(encl.fd).private_data
    pfn = hole >> 12
    epc = e.pages.epc(pfn)
    epcm = world.machine.epc.epcm
    assert epcm.pending[epc] and epcm.pt[epc] == PageType.PT_REG and epcm.rwx[epc] == 3
    assert e.pages.prot(pfn) == 7 and e.secs_child_cnt == e.pages.count
    world.check()


def test_fault_on_hole_without_sgx2_is_sigbus() -> None:
    w = make_world(256, sgx2=False)
    p = w.proc()
    encl = build_enclave(p, extra_size=PAGE_SIZE)
    hole = encl.base + encl.size - PAGE_SIZE
    p.mmap(hole, PAGE_SIZE, RW, U.MAP_SHARED | U.MAP_FIXED, encl.fd, 0)
    with pytest.raises(ProcessSignal):
        p.write(hole, b"1")
    w.teardown()


def test_mm_list_one_entry_per_mm_and_munmap_keeps_it(world: World) -> None:
    p = world.proc()
    encl = build_enclave(p)
    e = p.file(encl.fd).private_data
    assert len(e.mm_list) == 1
    # refs: the file + one mm.
    assert e.refcount.kref_read() == 2
    p.munmap(encl.base, encl.size)
    assert len(e.mm_list) == 1 and not e.released
    p.close(encl.fd)
    # close with no mapping left: sgx_release drains the mm_list and releases.
    assert e.released and not world.kernel.enclaves


def test_close_while_mapped_defers_release(world: World) -> None:
    p = world.proc()
    encl = build_enclave(p)
    e = p.file(encl.fd).private_data
    p.close(encl.fd)
    assert not e.released
    encl.put(3)
    assert encl.get() == 3
    p.munmap(encl.base, encl.size)
    assert e.released
    world.check(expect_empty=True)


def test_split_vma_keeps_single_mm_entry(world: World) -> None:
    p = world.proc()
    encl = build_enclave(p)
    p.mprotect(encl.base + DATA1, PAGE_SIZE, U.PROT_READ)
    e = p.file(encl.fd).private_data
    assert len(e.mm_list) == 1
    assert len([v for v in p.mm.vmas if v.vm_private_data is e]) == 6


@pytest.mark.parametrize("debug", [True, False])
def test_ptrace_access(world: World, debug: bool) -> None:
    p = world.proc()
    attrs = int(Attributes.MODE64BIT | (Attributes.DEBUG if debug else 0))
    encl = build_enclave(p, attributes=attrs)
    encl.put(0x1122334455667788)
    got = p.access_remote(encl.base + DATA1 + 3, 7)
    if not debug:
        assert got == -errno.EFAULT
        return
    assert got == (0x1122334455667788).to_bytes(8, "little")[3:] + b"\x00" * 2
    assert p.access_remote(encl.base + DATA1 + 1, 2, b"\xaa\xbb") == b"\xaa\xbb"
    assert encl.get() == 0x1122334455BBAA88
    # TCS pages: EDBGRD beyond the architectural fields is #GP -> EIO.
    assert p.access_remote(encl.base + 0x100, 8) == -errno.EIO
    assert p.access_remote(encl.base + DATA2 + PAGE_SIZE * 100, 8) in (-errno.EFAULT,)
