"""/dev/sgx_vepc: mmap, allocation on fault, SGX_IOC_VEPC_REMOVE_ALL (two passes), release with
zombie SECS pages, sgx_virt_ecreate / sgx_virt_einit."""

from __future__ import annotations

import errno
import struct

import pytest
from tests.kernel.kernel_helpers import World, make_world, pte_of

from sgxsim.hw.arch import PAGE_SIZE, Attributes, EnclsLeaf, PageType, Secs, secinfo_flags
from sgxsim.kernel import uapi as U  # noqa: N812
from sgxsim.kernel.main import EpcOwner, KernelConfig
from sgxsim.kernel.process import TASK_SIZE, Process
from sgxsim.kernel.virt import sgx_virt_ecreate, sgx_virt_einit


def _errno(fn, *args) -> int:  # type: ignore[no-untyped-def]
    try:
        fn(*args)
    except OSError as exc:
        return exc.errno or -1
    return 0


def _vepc(p: Process, pages: int) -> tuple[int, int]:
    fd = p.open("/dev/sgx_vepc", U.O_RDWR)
    addr = p.mmap(0, pages * PAGE_SIZE, U.PROT_READ | U.PROT_WRITE, U.MAP_SHARED, fd, 0)
    return fd, addr


def _guest_secs(world: World, p: Process, secs_va: int, base: int = 0x100000) -> None:
    """The guest's ECREATE, run by the host on its behalf (as KVM does)."""
    secs = Secs(size=0x10000, base=base, ssa_frame_size=1, attributes=int(Attributes.MODE64BIT), xfrm=3)
    k = world.kernel
    k.current_proc = p
    try:
        ret, trapnr = sgx_virt_ecreate(k, 0, p.alloc(secs.pack()), p.alloc(bytes(64)), secs_va)
    finally:
        k.current_proc = None
    assert (ret, trapnr) == (0, 0)


def _guest_eadd(world: World, p: Process, secs_va: int, page_va: int, linaddr: int) -> None:
    """A guest EADD straight on the hardware (guest EPC = host EPC pages through EPT)."""
    m = world.machine
    secs_phys = pte_of(p, secs_va).phys
    p.read(page_va, 1)  # fault the vEPC page in
    page_phys = pte_of(p, page_va).phys
    si = m.dram.alloc_page()
    m.dram.write(si, struct.pack("<Q", secinfo_flags(PageType.PT_REG, 3)) + bytes(56))
    src = m.dram.alloc_page()
    pi = m.dram.alloc_page()
    m.dram.write(pi, struct.pack("<QQQQ", linaddr, src, si, secs_phys))
    assert m.encls(0, EnclsLeaf.EADD, pi, page_phys, 0) == 0
    for a in (si, src, pi):
        m.dram.free_page(a)


def test_mmap_requires_shared(world: World) -> None:
    p = world.proc()
    fd = p.open("/dev/sgx_vepc", U.O_RDWR)
    assert _errno(p.mmap, 0, PAGE_SIZE, U.PROT_READ, U.MAP_PRIVATE, fd, 0) == errno.EINVAL


def test_fault_allocates_once_and_pages_are_not_reclaimable(world: World) -> None:
    p = world.proc()
    fd, addr = _vepc(p, 4)
    k = world.kernel
    assert k.sgx_nr_free_pages.read() == 256
    assert p.read(addr + PAGE_SIZE, 4) == b"\xff" * 4  # EPC from outside an enclave: abort page
    assert k.sgx_nr_free_pages.read() == 255
    vepc = p.file(fd).private_data
    page = vepc.page_array[1]
    assert k.epc_owner_kind[page] == EpcOwner.VEPC and k.epc_owner_index[page] == 1
    p.read(addr + PAGE_SIZE, 4)
    assert k.sgx_nr_free_pages.read() == 255
    assert k.lists.empty(k.sgx_active_page_list)
    world.check()


def test_remove_all_arguments(world: World) -> None:
    p = world.proc()
    fd, _ = _vepc(p, 1)
    assert _errno(p.ioctl, fd, U.SGX_IOC_VEPC_REMOVE_ALL, 1) == errno.EINVAL
    assert _errno(p.ioctl, fd, U.SGX_IOC_ENCLAVE_CREATE, 0) == errno.ENOTTY
    assert p.ioctl(fd, U.SGX_IOC_VEPC_REMOVE_ALL, 0) == 0


def test_remove_all_two_passes(world: World) -> None:
    p = world.proc()
    fd, addr = _vepc(p, 4)
    _guest_secs(world, p, addr)
    _guest_eadd(world, p, addr, addr + PAGE_SIZE, 0x100000)
    _guest_eadd(world, p, addr, addr + 2 * PAGE_SIZE, 0x101000)
    m = world.machine
    assert m.epc.nr_valid() == 3
    # First pass removes the children, the SECS reports SGX_CHILD_PRESENT: one failure.
    assert p.ioctl(fd, U.SGX_IOC_VEPC_REMOVE_ALL, 0) == 1
    assert p.ioctl(fd, U.SGX_IOC_VEPC_REMOVE_ALL, 0) == 0
    assert m.epc.nr_valid() == 0
    # Pages stay allocated to the instance.
    assert world.kernel.sgx_nr_free_pages.read() == 256 - 3
    world.check()


@pytest.mark.parametrize("secs_index", [0, 2])
def test_release_removes_children_then_secs(world: World, secs_index: int) -> None:
    """SECS before its child in page order needs release's second pass; after it, the first."""
    p = world.proc()
    fd, addr = _vepc(p, 3)
    child_index = 1 if secs_index == 0 else 0
    _guest_secs(world, p, addr + secs_index * PAGE_SIZE)
    _guest_eadd(world, p, addr + secs_index * PAGE_SIZE, addr + child_index * PAGE_SIZE, 0x100000)
    p.munmap(addr, 3 * PAGE_SIZE)
    p.close(fd)
    assert world.kernel.sgx_nr_free_pages.read() == 256
    assert world.machine.epc.nr_valid() == 0


def test_zombie_secs_with_child_in_other_instance(world: World) -> None:
    p = world.proc()
    fd1, a1 = _vepc(p, 1)
    fd2, a2 = _vepc(p, 1)
    _guest_secs(world, p, a1)
    _guest_eadd(world, p, a1, a2, 0x100000)
    k = world.kernel
    p.munmap(a1, PAGE_SIZE)
    p.close(fd1)  # SECS still has a child in instance 2: zombie
    zombies = k.lists.to_array(k.zombie_secs_pages).tolist()
    assert len(zombies) == 1 and world.machine.epc.epcm.pt[zombies[0]] == PageType.PT_SECS
    world.check()
    p.munmap(a2, PAGE_SIZE)
    p.close(fd2)  # the child goes, then the zombie is retried and freed
    assert k.lists.empty(k.zombie_secs_pages)
    assert k.sgx_nr_free_pages.read() == 256 and world.machine.epc.nr_valid() == 0


def test_vepc_fault_ebusy_retries_after_ksgxd() -> None:
    """With the EPC full of reclaimable enclave pages, the fault gets -EBUSY (no direct reclaim),
    returns VM_FAULT_RETRY, ksgxd runs, and the retried fault succeeds."""
    from tests.kernel.kernel_helpers import build_enclave

    w = make_world(128)
    p = w.proc()
    build_enclave(p, heap_pages=100)
    k = w.kernel
    hog = []
    while (x := k.sgx_alloc_epc_page_nowait()) >= 0:
        hog.append(x)
    _fd, addr = _vepc(p, 1)
    assert p.read(addr, 1) == b"\xff"
    assert k.stats.get("pages_reclaimed", 0) > 0
    for x in hog:
        k.sgx_free_epc_page(x)
    w.teardown()


def test_vepc_fault_enomem_is_sigbus() -> None:
    from sgxsim.kernel.process import ProcessSignal

    w = make_world(2)
    p = w.proc()
    _fd, addr = _vepc(p, 3)
    p.read(addr, 1)
    p.read(addr + PAGE_SIZE, 1)
    with pytest.raises(ProcessSignal) as exc:
        p.read(addr + 2 * PAGE_SIZE, 1)
    assert exc.value.info.signo == U.SIGBUS
    w.teardown()


def test_virt_einit_uses_guest_lepubkeyhash(world: World) -> None:
    p = world.proc()
    _fd, addr = _vepc(p, 1)
    _guest_secs(world, p, addr)
    k = world.kernel
    k.current_proc = p
    try:
        sig = p.alloc(bytes(4096))
        ret, trapnr = sgx_virt_einit(k, sig, p.alloc(bytes(4096)), addr, b"\x11" * 32)
    finally:
        k.current_proc = None
    # An all-zero SIGSTRUCT: EINIT reports SGX_INVALID_SIG_STRUCT (returned as is, not an errno).
    assert (ret, trapnr) == (1, 0)
    assert world.machine.cpus[0].le_pubkey_hash == b"\x11" * 32


def test_virt_ecreate_fault_returns_trapnr(world: World) -> None:
    p = world.proc()
    _fd, addr = _vepc(p, 1)
    k = world.kernel
    bad = Secs(size=0x3000, base=0x100000, ssa_frame_size=1, xfrm=3)  # not a power of two: #GP
    k.current_proc = p
    try:
        ret, trapnr = sgx_virt_ecreate(k, 0, p.alloc(bad.pack()), p.alloc(bytes(64)), addr)
        assert (ret, trapnr) == (-errno.EFAULT, 13)
        # Unmapped contents: ECREATE's #PF reaches the exception fixup (no WARN in Linux).
        assert sgx_virt_ecreate(k, 0, 0x1000, 0x1000, addr) == (-errno.EFAULT, 14)
        assert world.kernel.log.warn_count == 0
        # access_ok() fails only for a range beyond TASK_SIZE: a KVM bug, WARN_ON_ONCE.
        assert sgx_virt_ecreate(k, 0, 0x1000, 0x1000, TASK_SIZE) == (-errno.EINVAL, 0)
    finally:
        k.current_proc = None
    world.allowed_warns = 1  # the access_ok WARN_ON_ONCE


@pytest.mark.parametrize("how", ["read-only", "unmapped"])
def test_virt_ecreate_einit_on_a_bad_secs_address_fault_without_warn(world: World, how: str) -> None:
    """Models: virt.c sgx_virt_ecreate/einit: access_ok() checks the range only; ECREATE/EINIT
    then take the #PF and return -EFAULT with trapnr 14 (KVM injects it); nothing WARNs."""
    p = world.proc()
    _fd, addr = _vepc(p, 2)
    k = world.kernel
    good = Secs(size=0x10000, base=0x100000, ssa_frame_size=1, attributes=int(Attributes.MODE64BIT), xfrm=3)
    src, si, sig, tok = p.alloc(good.pack()), p.alloc(bytes(64)), p.alloc(bytes(4096)), p.alloc(bytes(4096))
    p.read(addr, 1)  # the vEPC page exists: only the mapping is wrong
    if how == "read-only":
        p.mprotect(addr, 2 * PAGE_SIZE, U.PROT_READ)
    else:
        p.munmap(addr, 2 * PAGE_SIZE)
    k.current_proc = p
    try:
        assert sgx_virt_ecreate(k, 0, src, si, addr) == (-errno.EFAULT, 14)
        assert sgx_virt_einit(k, sig, tok, addr, b"\0" * 32) == (-errno.EFAULT, 14)
    finally:
        k.current_proc = None
    assert k.log.warn_count == 0
    assert k.stats["virt_encls_pf"] == 2
    assert world.machine.stats.get("ECREATE", 0) == 0


def test_no_vepc_without_vmx() -> None:
    w = make_world(16, config=KernelConfig(vmx=False))
    p = w.proc()
    assert _errno(p.open, "/dev/sgx_vepc", U.O_RDWR) == errno.ENOENT
    w.teardown()
