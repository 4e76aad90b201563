"""SGX_IOC_* on /dev/sgx_enclave: success paths and every errno in Linux's validation order."""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import struct
from typing import Any

import pytest
from tests.kernel.kernel_helpers import (
    DATA2,
    TCS1,
    World,
    add_pages,
    build_enclave,
    create_enclave,
    encl_size_for,
    enclave_pages,
    make_world,
    sign,
)

from sgxsim.hw.arch import PAGE_SIZE, Attributes, PageType, Secs, SgxStatus, Sigstruct, secinfo_flags
from sgxsim.kernel import uapi as U  # noqa: N812
from sgxsim.kernel.encl import SGX_ENCL_CREATED, SGX_ENCL_DEBUG, SGX_ENCL_INITIALIZED, SGX_ENCL_IOCTL
from sgxsim.kernel.locking import NullScheduler
from sgxsim.kernel.main import Kernel
from sgxsim.kernel.process import Process

REG_RW = secinfo_flags(PageType.PT_REG, 3)


def _errno(fn, *args) -> int:  # type: ignore[no-untyped-def]
    try:
        fn(*args)
    except OSError as exc:
        return exc.errno or -1
    return 0


def _encl(world: World, proc: Process, fd: int):  # type: ignore[no-untyped-def]
    return proc.file(fd).private_data


def _secinfo(proc: Process, flags: int, reserved: bytes = bytes(56)) -> int:
    return proc.alloc(struct.pack("<Q", flags) + reserved)


# ------------------------------------------------------------------------------- dispatcher


def test_unknown_request_is_enotty(world: World) -> None:
    p = world.proc()
    fd = p.open("/dev/sgx_enclave", U.O_RDWR)
    assert _errno(p.ioctl, fd, 0xC008A4FF, 0) == errno.ENOTTY
    assert _errno(p.ioctl, fd, U.SGX_IOC_VEPC_REMOVE_ALL, 0) == errno.ENOTTY
    assert _errno(p.ioctl, 99, U.SGX_IOC_ENCLAVE_CREATE, 0) == errno.EBADF


def test_provision_fd_has_no_ioctls(world: World) -> None:
    p = world.proc()
    fd = p.open("/dev/sgx_provision", U.O_RDWR)
    assert _errno(p.ioctl, fd, U.SGX_IOC_ENCLAVE_CREATE, U.sgx_enclave_create()) == errno.ENOTTY
    assert _errno(p.mmap, 0, PAGE_SIZE, U.PROT_READ, U.MAP_SHARED, fd, 0) == errno.ENODEV


def test_concurrent_ioctl_on_same_enclave_is_ebusy(world: World) -> None:
    """A second ioctl while one is in flight (another thread at a preemption point) -> EBUSY."""

    seen: list[int] = []

    class Interleave(NullScheduler):
        def preempt(self, point: str) -> None:
            if point == "encls_begin:ECREATE" and not seen:
                seen.append(_errno(p.ioctl, fd, U.SGX_IOC_ENCLAVE_INIT, U.sgx_enclave_init()))

    m = world.machine
    k2 = Kernel(type(m)(m.config, m.rng), sched=Interleave())
    p = Process(k2, "racer")
    fd = p.open("/dev/sgx_enclave", U.O_RDWR)
    secs = Secs(size=0x4000, base=0x10000000, ssa_frame_size=1, attributes=int(Attributes.MODE64BIT), xfrm=3)
    p.ioctl(fd, U.SGX_IOC_ENCLAVE_CREATE, U.sgx_enclave_create(src=p.alloc(secs.pack())))
    assert seen == [errno.EBUSY]
    assert not p.file(fd).private_data.flags & SGX_ENCL_IOCTL
    p.exit()
    assert k2.log.warn_count == 0


def test_ioctl_flag_set_means_ebusy(world: World) -> None:
    p = world.proc()
    fd = p.open("/dev/sgx_enclave", U.O_RDWR)
    _encl(world, p, fd).flags |= SGX_ENCL_IOCTL
    assert _errno(p.ioctl, fd, U.SGX_IOC_ENCLAVE_CREATE, U.sgx_enclave_create()) == errno.EBUSY
    _encl(world, p, fd).flags &= ~SGX_ENCL_IOCTL


# ------------------------------------------------------------------------------- CREATE


def test_create_success_sets_fields(world: World) -> None:
    p = world.proc()
    size = 0x8000
    fd, base = create_enclave(p, size, int(Attributes.MODE64BIT | Attributes.DEBUG))
    encl = _encl(world, p, fd)
    assert encl.flags & SGX_ENCL_CREATED and encl.flags & SGX_ENCL_DEBUG
    assert (encl.base, encl.size, encl.page_cnt) == (base, size, 1)
    assert encl.attributes_mask == int(
        Attributes.DEBUG | Attributes.MODE64BIT | Attributes.KSS | Attributes.AEXNOTIFY
    )
    assert len(encl.va_pages) == 1 and encl.secs_epc >= 0
    epcm = world.machine.epc.epcm
    assert epcm.pt[encl.secs_epc] == PageType.PT_SECS
    # SECS + one VA page in use; backing file sized (size + 4096) * 33/32.
    assert world.kernel.nr_used_pages() == 2
    assert encl.backing.size == (size + PAGE_SIZE) + ((size + PAGE_SIZE) >> 5)
    world.check()


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("twice", errno.EINVAL),
        ("bad_arg", errno.EFAULT),
        ("bad_secs_ptr", errno.EFAULT),
        ("secs_crosses_unmapped", errno.EFAULT),
        ("size_not_pow2", errno.EINVAL),
        ("size_zero", errno.EINVAL),
        ("ecreate_faults", errno.EIO),
    ],
)
def test_create_errors_in_order(world: World, case: str, expected: int) -> None:
    p = world.proc()
    fd = p.open("/dev/sgx_enclave", U.O_RDWR)
    good = Secs(size=0x4000, base=0x40000000, ssa_frame_size=1, attributes=int(Attributes.MODE64BIT), xfrm=3)
    arg: object = U.sgx_enclave_create(src=p.alloc(good.pack()))
    if case == "twice":
        p.ioctl(fd, U.SGX_IOC_ENCLAVE_CREATE, arg)
        # Even with garbage the CREATED check comes first.
        arg = 0xDEAD0000
    elif case == "bad_arg":
        arg = 0x1000
    elif case == "bad_secs_ptr":
        arg = U.sgx_enclave_create(src=0x1234000)
    elif case == "secs_crosses_unmapped":
        two = p.alloc(2 * PAGE_SIZE)
        p.munmap(two + PAGE_SIZE, PAGE_SIZE)
        arg = U.sgx_enclave_create(src=two + 8)
    elif case == "size_not_pow2":
        arg = U.sgx_enclave_create(
            src=p.alloc(Secs(size=0x3000, base=0x40000000, ssa_frame_size=1, xfrm=3).pack())
        )
    elif case == "size_zero":
        arg = U.sgx_enclave_create(
            src=p.alloc(Secs(size=0, base=0x40000000, ssa_frame_size=1, xfrm=3).pack())
        )
    elif case == "ecreate_faults":
        # Power-of-two size but base not aligned to it: ECREATE #GP -> EIO, everything unwound.
        arg = U.sgx_enclave_create(
            src=p.alloc(
                Secs(
                    size=0x4000,
                    base=0x40001000,
                    ssa_frame_size=1,
                    attributes=int(Attributes.MODE64BIT),
                    xfrm=3,
                ).pack()
            )
        )
    used_before = world.kernel.nr_used_pages()
    assert _errno(p.ioctl, fd, U.SGX_IOC_ENCLAVE_CREATE, arg) == expected
    if case != "twice":
        encl = _encl(world, p, fd)
        assert not encl.flags & SGX_ENCL_CREATED
        assert world.kernel.nr_used_pages() == used_before == 0, "unwound"
        assert encl.backing is None and encl.page_cnt == 0 and not encl.va_pages
    world.check()


def test_create_enomem_without_epc() -> None:
    w = make_world(2)
    p = w.proc()
    fd = p.open("/dev/sgx_enclave", U.O_RDWR)
    # Occupy one page so only one is free: the VA page succeeds, the SECS allocation has nothing
    # reclaimable -> ENOMEM, and the VA page is given back.
    other = w.kernel.sgx_alloc_epc_page_nowait()
    secs = Secs(size=0x4000, base=0x40000000, ssa_frame_size=1, attributes=int(Attributes.MODE64BIT), xfrm=3)
    assert (
        _errno(p.ioctl, fd, U.SGX_IOC_ENCLAVE_CREATE, U.sgx_enclave_create(src=p.alloc(secs.pack())))
        == errno.ENOMEM
    )
    assert w.kernel.sgx_nr_free_pages.read() == 1
    w.kernel.sgx_free_epc_page(other)
    w.teardown()


# ------------------------------------------------------------------------------- ADD_PAGES


def _created(world: World, size: int = 0x10000) -> tuple[Process, int, int]:
    p = world.proc()
    fd, base = create_enclave(p, size)
    return p, fd, base


def test_add_pages_success_counts_and_records(world: World) -> None:
    p, fd, base = _created(world)
    src = p.alloc(b"\x5a" * 3 * PAGE_SIZE)
    arg = U.sgx_enclave_add_pages(
        src=src, offset=0x2000, length=3 * PAGE_SIZE, secinfo=_secinfo(p, REG_RW), flags=U.SGX_PAGE_MEASURE
    )
    assert p.ioctl(fd, U.SGX_IOC_ENCLAVE_ADD_PAGES, arg) == 0
    assert arg.count == 3 * PAGE_SIZE
    encl = _encl(world, p, fd)
    assert encl.pages.count == 3 and encl.secs_child_cnt == 3 and encl.page_cnt == 4
    for i in range(3):
        pfn = (base + 0x2000 + i * PAGE_SIZE) >> 12
        epc = encl.pages.epc(pfn)
        assert world.machine.epc.read(epc) == b"\x5a" * PAGE_SIZE
        assert encl.pages.prot(pfn) == 3 and encl.pages.type(pfn) == PageType.PT_REG
    # Added pages are reclaimable.
    assert world.kernel.epc_summary()["active"] == 3
    world.check()


def test_tcs_page_gets_rw_max_prot(world: World) -> None:
    p, fd, base = _created(world)
    from sgxsim.hw.arch import Tcs

    src = p.alloc(Tcs(ossa=0x1000, nssa=1).pack())
    arg = U.sgx_enclave_add_pages(
        src=src, offset=0, length=PAGE_SIZE, secinfo=_secinfo(p, secinfo_flags(PageType.PT_TCS)), flags=0
    )
    p.ioctl(fd, U.SGX_IOC_ENCLAVE_ADD_PAGES, arg)
    encl = _encl(world, p, fd)
    assert encl.pages.prot(base >> 12) == 3 and encl.pages.type(base >> 12) == PageType.PT_TCS


ADD_CASES = [
    # (name, expected errno, count written back?)
    ("not_created", errno.EINVAL),
    ("initialized", errno.EINVAL),
    ("bad_arg_ptr", errno.EFAULT),
    ("src_unaligned", errno.EINVAL),
    ("offset_unaligned", errno.EINVAL),
    ("length_zero", errno.EINVAL),
    ("length_unaligned", errno.EINVAL),
    ("overflow", errno.EINVAL),
    ("past_end", errno.EINVAL),
    ("secinfo_ptr", errno.EFAULT),
    ("secinfo_secs_type", errno.EINVAL),
    ("secinfo_va_type", errno.EINVAL),
    ("secinfo_w_without_r", errno.EINVAL),
    ("secinfo_tcs_perms", errno.EINVAL),
    ("secinfo_pending_bit", errno.EINVAL),
    ("secinfo_high_bit", errno.EINVAL),
    ("secinfo_reserved_bytes", errno.EINVAL),
    ("src_unmapped", errno.EFAULT),
    ("src_noexec", errno.EACCES),
    ("src_prot_none", errno.EFAULT),
    ("src_is_enclave", errno.EFAULT),
    ("duplicate", errno.EBUSY),
    ("bad_tcs", errno.EIO),
]


@pytest.mark.parametrize(("case", "expected"), ADD_CASES)
def test_add_pages_errors_in_order(world: World, case: str, expected: int) -> None:
    p = world.proc()
    fd = p.open("/dev/sgx_enclave", U.O_RDWR)
    size = 0x10000
    base = 0
    if case != "not_created":
        fd2, base = create_enclave(p, size)
        p.close(fd)
        fd = fd2
    src = p.alloc(2 * PAGE_SIZE)
    si = _secinfo(p, REG_RW)
    arg = U.sgx_enclave_add_pages(src=src, offset=0x1000, length=PAGE_SIZE, secinfo=si, flags=0)
    uarg: object = arg
    if case == "initialized":
        _encl(world, p, fd).flags |= SGX_ENCL_INITIALIZED
    elif case == "bad_arg_ptr":
        uarg = 0x5000
    elif case == "src_unaligned":
        arg.src += 8
        arg.offset = 0x1001  # a later error must not be reported first
    elif case == "offset_unaligned":
        arg.offset = 0x1800
    elif case == "length_zero":
        arg.length = 0
    elif case == "length_unaligned":
        arg.length = 100
    elif case == "overflow":
        arg.offset = 0xFFFF_FFFF_FFFF_F000
        arg.length = 0x2000
    elif case == "past_end":
        arg.offset = size - PAGE_SIZE
        arg.length = 2 * PAGE_SIZE
    elif case == "secinfo_ptr":
        arg.secinfo = 0x7000
    elif case == "secinfo_secs_type":
        arg.secinfo = _secinfo(p, secinfo_flags(PageType.PT_SECS, 3))
    elif case == "secinfo_va_type":
        arg.secinfo = _secinfo(p, secinfo_flags(PageType.PT_VA))
    elif case == "secinfo_w_without_r":
        arg.secinfo = _secinfo(p, secinfo_flags(PageType.PT_REG, 2))
    elif case == "secinfo_tcs_perms":
        arg.secinfo = _secinfo(p, secinfo_flags(PageType.PT_TCS, 1))
    elif case == "secinfo_pending_bit":
        arg.secinfo = _secinfo(p, REG_RW | 0x8)
    elif case == "secinfo_high_bit":
        arg.secinfo = _secinfo(p, REG_RW | (1 << 40))
    elif case == "secinfo_reserved_bytes":
        arg.secinfo = _secinfo(p, REG_RW, b"\x01" + bytes(55))
    elif case == "src_unmapped":
        p.munmap(src, 2 * PAGE_SIZE)
        # Also make sure no VMA lies just above (find_vma would return it).
        arg.src = 0x10_0000_0000
    elif case == "src_noexec":
        sfd = p.open("/dev/shm/buf", U.O_RDWR | 0o100)
        arg.src = p.mmap(0, PAGE_SIZE, U.PROT_READ | U.PROT_WRITE, U.MAP_SHARED, sfd, 0)
        p.close(sfd)
    elif case == "src_prot_none":
        p.mprotect(src, PAGE_SIZE, U.PROT_NONE)
    elif case == "src_is_enclave":
        p.mmap(base, PAGE_SIZE, U.PROT_READ, U.MAP_SHARED | U.MAP_FIXED, fd, 0)
        arg.src = base
    elif case == "duplicate":
        p.ioctl(
            fd,
            U.SGX_IOC_ENCLAVE_ADD_PAGES,
            U.sgx_enclave_add_pages(src=src, offset=0x1000, length=PAGE_SIZE, secinfo=si, flags=0),
        )
    elif case == "bad_tcs":
        from sgxsim.hw.arch import Tcs

        p.write(src, Tcs(ossa=0x1000, nssa=1, reserved=b"\x01" + bytes(4023)).pack())
        arg.secinfo = _secinfo(p, secinfo_flags(PageType.PT_TCS))
    used = world.kernel.nr_used_pages()
    assert _errno(p.ioctl, fd, U.SGX_IOC_ENCLAVE_ADD_PAGES, uarg) == expected
    if case == "initialized":
        _encl(world, p, fd).flags &= ~SGX_ENCL_INITIALIZED
    if expected != errno.EFAULT or case in ("src_unmapped", "src_prot_none", "src_is_enclave"):
        assert arg.count == 0
    # Nothing leaked: the failed page's EPC and VA pages were given back.
    assert world.kernel.nr_used_pages() == used
    world.check()


def test_add_pages_signal_before_first_page_is_eintr(world: World) -> None:
    p, fd, _ = _created(world)
    arg = U.sgx_enclave_add_pages(
        src=p.alloc(PAGE_SIZE), offset=0, length=PAGE_SIZE, secinfo=_secinfo(p, REG_RW)
    )
    p.kill(U.SIGUSR1)
    assert _errno(p.ioctl, fd, U.SGX_IOC_ENCLAVE_ADD_PAGES, arg) == errno.EINTR
    assert arg.count == 0
    assert [s.signo for s in p.signals] == [U.SIGUSR1]


def test_add_pages_partial_count_on_error(world: World) -> None:
    """Pages before the failing one stay added and ``count`` says how many."""
    p, fd, _base = _created(world)
    si = _secinfo(p, REG_RW)
    src = p.alloc(4 * PAGE_SIZE)
    p.ioctl(
        fd,
        U.SGX_IOC_ENCLAVE_ADD_PAGES,
        U.sgx_enclave_add_pages(src=src, offset=0x3000, length=PAGE_SIZE, secinfo=si),
    )
    arg = U.sgx_enclave_add_pages(src=src, offset=0x1000, length=3 * PAGE_SIZE, secinfo=si)
    assert _errno(p.ioctl, fd, U.SGX_IOC_ENCLAVE_ADD_PAGES, arg) == errno.EBUSY
    assert arg.count == 2 * PAGE_SIZE
    assert _encl(world, p, fd).pages.count == 3
    world.check()


def test_add_pages_count_copy_back_efault(world: World) -> None:
    """The argument sits in a page that is readable but not writable: copy_to_user -> EFAULT."""
    p, fd, _ = _created(world)
    page = p.alloc(PAGE_SIZE)
    arg = U.sgx_enclave_add_pages(
        src=p.alloc(PAGE_SIZE), offset=0, length=PAGE_SIZE, secinfo=_secinfo(p, REG_RW)
    )
    p.write(page, bytes(arg))
    p.mprotect(page, PAGE_SIZE, U.PROT_READ)
    assert _errno(p.ioctl, fd, U.SGX_IOC_ENCLAVE_ADD_PAGES, page) == errno.EFAULT
    # The page was added nevertheless (the kernel only failed to report count).
    assert _encl(world, p, fd).pages.count == 1
    world.check()


def test_add_pages_enomem_when_nothing_reclaimable() -> None:
    w = make_world(4)
    p = w.proc()
    fd, _ = create_enclave(p, 0x10000)  # VA + SECS: 2 pages used
    hog = [w.kernel.sgx_alloc_epc_page_nowait() for _ in range(2)]
    arg = U.sgx_enclave_add_pages(
        src=p.alloc(PAGE_SIZE), offset=0, length=PAGE_SIZE, secinfo=_secinfo(p, REG_RW)
    )
    assert _errno(p.ioctl, fd, U.SGX_IOC_ENCLAVE_ADD_PAGES, arg) == errno.ENOMEM
    for h in hog:
        w.kernel.sgx_free_epc_page(h)
    w.teardown()


def test_wrong_struct_size_faults_or_reads_garbage(world: World) -> None:
    """A too-small argument object: the driver copies sizeof(struct) and hits unmapped memory."""
    p, fd, _ = _created(world)

    class Small(ctypes.Structure):
        _fields_ = [("src", ctypes.c_uint64)]

    assert _errno(p.ioctl, fd, U.SGX_IOC_ENCLAVE_ADD_PAGES, Small(src=0)) == errno.EFAULT
    assert _errno(p.ioctl, fd, U.SGX_IOC_ENCLAVE_INIT, Small(src=0)) == errno.EFAULT
    world.check()


# ------------------------------------------------------------------------------- INIT


def _ready_for_init(world: World, attributes: int = int(Attributes.MODE64BIT)):  # type: ignore[no-untyped-def]
    p = world.proc()
    pages = enclave_pages(1)
    size = encl_size_for(pages[-1][0] + PAGE_SIZE)
    fd, _base = create_enclave(p, size, attributes)
    add_pages(p, fd, pages)
    return p, fd, sign(size, pages, attributes), size, pages


def test_init_success(world: World) -> None:
    p, fd, sig, _, _ = _ready_for_init(world)
    p.ioctl(fd, U.SGX_IOC_ENCLAVE_INIT, U.sgx_enclave_init(sigstruct=p.alloc(sig.pack())))
    encl = _encl(world, p, fd)
    assert encl.flags & SGX_ENCL_INITIALIZED
    state = world.machine.epc.secs_state[encl.secs_epc]
    assert state.initialized and state.mrenclave == sig.mrenclave
    # The LE pubkey hash MSRs hold MRSIGNER of the signer.
    import hashlib

    assert world.machine.cpus[0].le_pubkey_hash == hashlib.sha256(sig.modulus).digest()
    assert (
        _errno(p.ioctl, fd, U.SGX_IOC_ENCLAVE_INIT, U.sgx_enclave_init(sigstruct=p.alloc(sig.pack())))
        == errno.EINVAL
    )
    world.check()


def _mutate(sig: Sigstruct, **changes: Any) -> Sigstruct:
    return dataclasses.replace(sig, **changes)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("not_created", errno.EINVAL),
        ("bad_arg", errno.EFAULT),
        ("bad_sig_ptr", errno.EFAULT),
        ("vendor", errno.EINVAL),
        ("provisionkey", errno.EACCES),
        ("einittokenkey", errno.EACCES),
        ("reserved_attr", errno.EINVAL),
        ("reserved_misc", errno.EINVAL),
        ("reserved_xfrm", errno.EINVAL),
        ("bad_signature", errno.EPERM),
        ("bad_measurement", errno.EPERM),
    ],
)
def test_init_errors(world: World, case: str, expected: int) -> None:
    attrs = int(Attributes.MODE64BIT)
    if case == "provisionkey":
        attrs |= int(Attributes.PROVISIONKEY)
    if case == "einittokenkey":
        attrs |= int(Attributes.EINITTOKENKEY)
    if case == "not_created":
        p = world.proc()
        fd = p.open("/dev/sgx_enclave", U.O_RDWR)
        assert _errno(p.ioctl, fd, U.SGX_IOC_ENCLAVE_INIT, U.sgx_enclave_init()) == expected
        return
    p, fd, sig, _, _ = _ready_for_init(world, attrs)
    arg: object = U.sgx_enclave_init(sigstruct=p.alloc(sig.pack()))
    if case == "bad_arg":
        arg = 0x3000
    elif case == "bad_sig_ptr":
        arg = U.sgx_enclave_init(sigstruct=0x4000)
    elif case == "vendor":
        arg = U.sgx_enclave_init(sigstruct=p.alloc(_mutate(sig, vendor=0x1234).pack()))
    elif case == "reserved_attr":
        arg = U.sgx_enclave_init(sigstruct=p.alloc(_mutate(sig, attributes=sig.attributes | (1 << 3)).pack()))
    elif case == "reserved_misc":
        arg = U.sgx_enclave_init(sigstruct=p.alloc(_mutate(sig, miscselect=2, misc_mask=2).pack()))
    elif case == "reserved_xfrm":
        arg = U.sgx_enclave_init(sigstruct=p.alloc(_mutate(sig, xfrm=1 << 9, xfrm_mask=1 << 9).pack()))
    elif case == "bad_signature":
        arg = U.sgx_enclave_init(sigstruct=p.alloc(_mutate(sig, isvsvn=5).pack()))
    elif case == "bad_measurement":
        p2 = p.file(fd).private_data
        assert p2 is not None
        from tests.kernel.kernel_helpers import sign as resign

        arg = U.sgx_enclave_init(sigstruct=p.alloc(resign(0x40000, [], attrs).pack()))
    assert _errno(p.ioctl, fd, U.SGX_IOC_ENCLAVE_INIT, arg) == expected
    assert not _encl(world, p, fd).flags & SGX_ENCL_INITIALIZED
    world.check()


def test_provision_allows_provisionkey(world: World) -> None:
    p = world.proc()
    encl = build_enclave(p, attributes=int(Attributes.MODE64BIT | Attributes.PROVISIONKEY), provision=True)
    assert _encl(world, p, encl.fd).flags & SGX_ENCL_INITIALIZED
    encl.put(7)
    assert encl.get() == 7


def test_provision_errors(world: World) -> None:
    p = world.proc()
    fd = p.open("/dev/sgx_enclave", U.O_RDWR)
    other = p.open("/dev/sgx_enclave", U.O_RDWR)
    assert _errno(p.ioctl, fd, U.SGX_IOC_ENCLAVE_PROVISION, 0x2000) == errno.EFAULT
    assert _errno(p.ioctl, fd, U.SGX_IOC_ENCLAVE_PROVISION, U.sgx_enclave_provision(fd=77)) == errno.EINVAL
    assert _errno(p.ioctl, fd, U.SGX_IOC_ENCLAVE_PROVISION, U.sgx_enclave_provision(fd=other)) == errno.EINVAL
    pfd = p.open("/dev/sgx_provision", U.O_RDWR)
    # No CREATED check; the fd is truncated to 32 bits like the C unsigned int.
    p.ioctl(fd, U.SGX_IOC_ENCLAVE_PROVISION, U.sgx_enclave_provision(fd=pfd | (1 << 40)))
    assert _encl(world, p, fd).attributes_mask & Attributes.PROVISIONKEY


def test_einit_unmasked_event_retry_then_eintr(world: World) -> None:
    """EINIT keeps failing with SGX_UNMASKED_EVENT while an interrupt is pending; a signal during
    the sleep between batches -> EINTR (ERESTARTSYS)."""
    p, fd, sig, _, _ = _ready_for_init(world)
    lp = world.machine.cpus[0]
    calls = 0
    orig = world.machine.encls_exec

    def pending_exec(cpu, leaf, rbx=0, rcx=0, rdx=0):  # type: ignore[no-untyped-def]
        nonlocal calls
        if leaf == 2:
            calls += 1
            lp.pending_interrupt = True
            if calls == 25:
                p.kill(U.SIGUSR1)
        try:
            return orig(cpu, leaf, rbx, rcx, rdx)
        finally:
            lp.pending_interrupt = False

    world.machine.encls_exec = pending_exec  # type: ignore[method-assign]
    try:
        assert (
            _errno(p.ioctl, fd, U.SGX_IOC_ENCLAVE_INIT, U.sgx_enclave_init(sigstruct=p.alloc(sig.pack())))
            == errno.EINTR
        )
    finally:
        del world.machine.encls_exec
    assert calls == 40  # two batches of SGX_EINIT_SPIN_COUNT, the signal seen after the second sleep
    p.ioctl(fd, U.SGX_IOC_ENCLAVE_INIT, U.sgx_enclave_init(sigstruct=p.alloc(sig.pack())))


# ------------------------------------------------------------------------------- SGX2


def test_sgx2_ioctls_enodev_without_sgx2() -> None:
    w = make_world(256, sgx2=False)
    p = w.proc()
    encl = build_enclave(p)
    for req, arg in (
        (U.SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS, U.sgx_enclave_restrict_permissions()),
        (U.SGX_IOC_ENCLAVE_MODIFY_TYPES, U.sgx_enclave_modify_types()),
        (U.SGX_IOC_ENCLAVE_REMOVE_PAGES, U.sgx_enclave_remove_pages()),
    ):
        assert _errno(p.ioctl, encl.fd, req, arg) == errno.ENODEV
    w.teardown()


@pytest.mark.parametrize("req", ["restrict", "modify", "remove"])
def test_sgx2_validation_order(world: World, req: str) -> None:
    p = world.proc()
    encl = build_enclave(p, init=False)
    request, cls = {
        "restrict": (U.SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS, U.sgx_enclave_restrict_permissions),
        "modify": (U.SGX_IOC_ENCLAVE_MODIFY_TYPES, U.sgx_enclave_modify_types),
        "remove": (U.SGX_IOC_ENCLAVE_REMOVE_PAGES, U.sgx_enclave_remove_pages),
    }[req]
    # Not initialized: EINVAL before the argument is even read.
    assert _errno(p.ioctl, encl.fd, request, 0x1000) == errno.EINVAL
    _encl(world, p, encl.fd).flags |= SGX_ENCL_INITIALIZED
    try:
        assert _errno(p.ioctl, encl.fd, request, 0x1000) == errno.EFAULT
        assert _errno(p.ioctl, encl.fd, request, cls(offset=DATA2, length=0)) == errno.EINVAL
        assert _errno(p.ioctl, encl.fd, request, cls(offset=DATA2 + 1, length=PAGE_SIZE)) == errno.EINVAL
        assert _errno(p.ioctl, encl.fd, request, cls(offset=encl.size, length=PAGE_SIZE)) == errno.EINVAL
        arg = cls(offset=DATA2, length=PAGE_SIZE, count=PAGE_SIZE)
        assert _errno(p.ioctl, encl.fd, request, arg) == errno.EINVAL
        if req == "restrict":
            assert (
                _errno(p.ioctl, encl.fd, request, cls(offset=DATA2, length=PAGE_SIZE, permissions=8))
                == errno.EINVAL
            )
            assert (
                _errno(p.ioctl, encl.fd, request, cls(offset=DATA2, length=PAGE_SIZE, permissions=2))
                == errno.EINVAL
            )
            assert (
                _errno(
                    p.ioctl, encl.fd, request, cls(offset=DATA2, length=PAGE_SIZE, permissions=1, result=1)
                )
                == errno.EINVAL
            )
        if req == "modify":
            assert (
                _errno(p.ioctl, encl.fd, request, cls(offset=DATA2, length=PAGE_SIZE, page_type=0x100))
                == errno.EINVAL
            )
            assert (
                _errno(p.ioctl, encl.fd, request, cls(offset=DATA2, length=PAGE_SIZE, page_type=2))
                == errno.EINVAL
            )
            assert (
                _errno(p.ioctl, encl.fd, request, cls(offset=DATA2, length=PAGE_SIZE, page_type=4, result=3))
                == errno.EINVAL
            )
    finally:
        _encl(world, p, encl.fd).flags &= ~SGX_ENCL_INITIALIZED
    world.check()


def test_restrict_permissions_success_and_tcs(world: World) -> None:
    p = world.proc()
    encl = build_enclave(p, extra_size=PAGE_SIZE)
    arg = U.sgx_enclave_restrict_permissions(offset=DATA2, length=PAGE_SIZE, permissions=U.PROT_READ)
    assert p.ioctl(encl.fd, U.SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS, arg) == 0
    assert (arg.result, arg.count) == (0, PAGE_SIZE)
    k = world.kernel
    e = _encl(world, p, encl.fd)
    epc = e.pages.epc((encl.base + DATA2) >> 12)
    assert world.machine.epc.epcm.pr[epc] and world.machine.epc.epcm.rwx[epc] == 1
    # The kernel does not change vm_max_prot_bits.
    assert e.pages.prot((encl.base + DATA2) >> 12) == 3
    tcs = U.sgx_enclave_restrict_permissions(offset=TCS1, length=PAGE_SIZE, permissions=U.PROT_READ)
    assert _errno(p.ioctl, encl.fd, U.SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS, tcs) == errno.EINVAL
    assert (tcs.result, tcs.count) == (0, 0)
    # Hole: no page -> EFAULT (load fails), count 0.
    hole = U.sgx_enclave_restrict_permissions(offset=encl.size - PAGE_SIZE, length=PAGE_SIZE, permissions=1)
    assert _errno(p.ioctl, encl.fd, U.SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS, hole) == errno.EFAULT
    assert k.stats.get("ipis", 0) >= 1
    world.check()


def test_modify_types_result_on_sgx_error(world: World) -> None:
    """EMODT on a page that is already MODIFIED returns SGX_PAGE_NOT_MODIFIABLE -> result, EFAULT."""
    p = world.proc()
    encl = build_enclave(p)
    arg = U.sgx_enclave_modify_types(offset=DATA2, length=PAGE_SIZE, page_type=PageType.PT_TRIM)
    assert p.ioctl(encl.fd, U.SGX_IOC_ENCLAVE_MODIFY_TYPES, arg) == 0 and arg.count == PAGE_SIZE
    again = U.sgx_enclave_modify_types(offset=DATA2, length=PAGE_SIZE, page_type=PageType.PT_TRIM)
    # A TRIM page cannot change type at all (driver check) -> EINVAL before EMODT.
    assert _errno(p.ioctl, encl.fd, U.SGX_IOC_ENCLAVE_MODIFY_TYPES, again) == errno.EINVAL
    # REG -> TCS on a page whose EPCM is modified (PR after EMODPR is fine; use a trimmed sibling):
    r = U.sgx_enclave_restrict_permissions(offset=DATA2 - PAGE_SIZE, length=PAGE_SIZE, permissions=1)
    p.ioctl(encl.fd, U.SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS, r)
    e = _encl(world, p, encl.fd)
    pfn = (encl.base + DATA2 - PAGE_SIZE) >> 12
    world.machine.epc.epcm.modified[e.pages.epc(pfn)] = True  # as after an un-accepted EMODT
    tcs = U.sgx_enclave_modify_types(offset=DATA2 - PAGE_SIZE, length=PAGE_SIZE, page_type=PageType.PT_TCS)
    assert _errno(p.ioctl, encl.fd, U.SGX_IOC_ENCLAVE_MODIFY_TYPES, tcs) == errno.EFAULT
    assert tcs.result == SgxStatus.SGX_PAGE_NOT_MODIFIABLE and tcs.count == 0
    assert e.pages.prot(pfn) == 3, "max prot restored"
    world.machine.epc.epcm.modified[e.pages.epc(pfn)] = False


def test_modify_types_reg_to_tcs_needs_rw(world: World) -> None:
    p = world.proc()
    encl = build_enclave(p)
    from tests.kernel.kernel_helpers import CODE

    arg = U.sgx_enclave_modify_types(offset=CODE, length=PAGE_SIZE, page_type=PageType.PT_TCS)
    assert _errno(p.ioctl, encl.fd, U.SGX_IOC_ENCLAVE_MODIFY_TYPES, arg) == errno.EPERM
    assert arg.count == 0


def test_remove_pages_requires_trim_and_eaccept(world: World) -> None:
    p = world.proc()
    encl = build_enclave(p)
    rem = U.sgx_enclave_remove_pages(offset=DATA2, length=PAGE_SIZE)
    assert _errno(p.ioctl, encl.fd, U.SGX_IOC_ENCLAVE_REMOVE_PAGES, rem) == errno.EPERM
    mod = U.sgx_enclave_modify_types(offset=DATA2, length=PAGE_SIZE, page_type=PageType.PT_TRIM)
    p.ioctl(encl.fd, U.SGX_IOC_ENCLAVE_MODIFY_TYPES, mod)
    rem = U.sgx_enclave_remove_pages(offset=DATA2, length=PAGE_SIZE)
    assert _errno(p.ioctl, encl.fd, U.SGX_IOC_ENCLAVE_REMOVE_PAGES, rem) == errno.EPERM
    assert rem.count == 0
    from tests.kernel.kernel_helpers import OP_EACCEPT, Op

    from sgxsim.hw.arch import SecinfoFlags

    ret, out, run = encl.call(
        Op(
            type=OP_EACCEPT,
            addr=encl.base + DATA2,
            flags=secinfo_flags(PageType.PT_TRIM, 0, int(SecinfoFlags.MODIFIED)),
        )
    )
    assert ret == 0 and run.function == U.EEXIT and out.ret == 0
    e = _encl(world, p, encl.fd)
    used = world.kernel.nr_used_pages()
    rem = U.sgx_enclave_remove_pages(offset=DATA2, length=PAGE_SIZE)
    assert p.ioctl(encl.fd, U.SGX_IOC_ENCLAVE_REMOVE_PAGES, rem) == 0 and rem.count == PAGE_SIZE
    assert not e.pages.load((encl.base + DATA2) >> 12)
    assert world.kernel.nr_used_pages() == used - 1
    world.check()


def test_full_build_through_helpers(world: World) -> None:
    p = world.proc()
    encl = build_enclave(p, heap_pages=4)
    encl.put(0xABCDEF)
    assert encl.get() == 0xABCDEF
    assert _encl(world, p, encl.fd).pages.count == len(enclave_pages(4))
    world.check()
