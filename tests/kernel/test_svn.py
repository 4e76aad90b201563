"""The SVN-update mechanism (kernel/svn.py) without interleaving: every outcome of the RFC v2
procedure, the explicit trigger, Linux 6.19's update on open, the what-if, and the guards the
driver's paths put around the EPC lock (fixed and as posted).

Concurrent outcomes (IPIs, release waits, races) are explored in tests/sim/test_svn_explore.py.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Iterator

import pytest
from tests.kernel.kernel_helpers import (
    OP_GET,
    Op,
    World,
    build_enclave,
    pte_of,
    small_machine,
)

from sgxsim.errors import InvalidArgument
from sgxsim.hw.arch import PAGE_SIZE, Attributes, EnclsLeaf, PageType, Secs, SgxStatus, secinfo_flags
from sgxsim.hw.cpu import MicrocodePatch
from sgxsim.kernel import uapi as U  # noqa: N812
from sgxsim.kernel.encl import SGX_ENCL_DEAD
from sgxsim.kernel.locking import NullScheduler
from sgxsim.kernel.main import SGX_EPC_PAGE_GUEST, SGX_EPC_PAGE_VA, EpcOwner, Kernel
from sgxsim.kernel.policy import SvnPolicy
from sgxsim.kernel.process import FAULT_FLAG_ALLOW_RETRY, Process, ProcessSignal
from sgxsim.kernel.svn import SVN_RETRY_LOOPS, SvnConfig, SvnUpdate, sgx_epc_pages_valid
from sgxsim.kernel.virt import sgx_virt_ecreate


def _errno(fn, *args) -> int:  # type: ignore[no-untyped-def]
    try:
        fn(*args)
    except OSError as exc:
        return exc.errno or -1
    return 0


def svn_world(pages: int = 256, sched: NullScheduler | None = None, **cfg: object) -> World:
    m = small_machine(pages)
    k = Kernel(m, sched=sched, svn=SvnConfig(**cfg))  # type: ignore[arg-type]
    return World(m, k, dram_baseline=k.dram_pages + 1)


@pytest.fixture
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    cfg = getattr(request, "param", {})
    w = svn_world(**cfg)
    yield w
    w.teardown()


def raised_patch(w: World, by: int = 1, revision_step: int = 1) -> MicrocodePatch:
    """A newer patch whose SGX late-microcode SVN is ``by`` higher than the running one."""
    cur = w.machine.cpus[0].ucode
    return MicrocodePatch.with_svns(
        cur.revision + revision_step, base=cur.svn[0], late_microcode=cur.svn[1] + by, name="test"
    )


def last(w: World) -> SvnUpdate:
    return w.kernel.svn.updates[-1]


# ---------------------------------------------------------------------------------------
# Configuration


def test_config_rejects_bad_values() -> None:
    with pytest.raises(InvalidArgument, match="svn_update_policy"):
        SvnConfig(policy="reboot")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="vepc"):
        SvnConfig(vepc="halt")
    with pytest.raises(InvalidArgument, match="trigger_mode"):
        SvnConfig(trigger_mode="maybe")
    with pytest.raises(InvalidArgument, match="rfc_v2_as_posted"):
        SvnConfig(rfc_v2_as_posted=1)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="patch must be a MicrocodePatch"):
        svn_world(16).kernel.svn.microcode_reload("0xd0003a6")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------
# RFC v2 patch 10: at initialization


def test_init_runs_eupdatesvn_once_after_sanitize(world: World) -> None:
    k = world.kernel
    [rec] = k.svn.updates
    assert rec.trigger == "init" and rec.result == SgxStatus.SGX_NO_UPDATE and rec.tries == 1
    assert [p[0] for p in rec.phases] == ["lock", "zap", "eupdatesvn", "unlock"]
    assert not k.sgx_epc_locked
    assert k.log.grep("CPUSVN not updated")


def test_kexec_init_path_raises_cpusvn() -> None:
    """kexec: no reset, no new snapshot. A kernel without the hook leaves CPUSVN old after a late
    load; the next kernel's init-time EUPDATESVN raises it."""
    m = small_machine(64)
    old = Kernel(m, svn=SvnConfig(policy=SvnPolicy.NONE))
    assert old.svn.updates == []
    before = m.cpusvn
    cur = m.cpus[0].ucode
    patch = MicrocodePatch.with_svns(cur.revision + 1, base=cur.svn[0], late_microcode=cur.svn[1] + 2)
    assert old.svn.microcode_reload(patch) == 0
    assert m.cpusvn == before and m.min_loaded_svn() != before
    m.kexec()
    new = Kernel(m)
    [rec] = new.svn.updates
    assert rec.trigger == "init" and rec.result == 0
    assert m.cpusvn == m.min_loaded_svn() == patch.svn
    assert new.log.grep("CPUSVN updated")


def test_init_path_skipped_without_eupdatesvn_or_when_disabled() -> None:
    from sgxsim.hw.machine import Machine, MachineConfig
    from sgxsim.rand import Rng

    m = Machine(MachineConfig(eupdatesvn=False), Rng(1))
    assert Kernel(m).svn.updates == []
    m2 = small_machine(16)
    assert Kernel(m2, svn=SvnConfig(update_at_init=False)).svn.updates == []


# ---------------------------------------------------------------------------------------
# RFC v2: the late-load path


def test_late_load_tears_down_and_raises_cpusvn(world: World) -> None:
    w = world
    k, m = w.kernel, w.machine
    p = w.proc()
    e = build_enclave(p, heap_pages=4)
    e.put(7)
    start_free = 256 - k.nr_used_pages()
    used = k.nr_used_pages()
    patch = raised_patch(w)
    assert k.svn.microcode_reload(patch) == 0
    rec = last(w)
    assert rec.trigger == "late_load" and rec.result == 0 and rec.result_name == "SUCCESS"
    assert rec.pages_zapped == used and rec.enclaves_killed == [1]
    assert rec.cpusvn_after == m.cpusvn == m.min_loaded_svn() == patch.svn != rec.cpusvn_before
    assert [name for name, _, _ in rec.phases] == ["lock", "zap", "eupdatesvn", "unlock"]
    assert rec.end_ns > rec.start_ns
    # Every page is back on the free lists, none is valid in the EPCM.
    assert k.sgx_nr_free_pages.read() == 256 and sgx_epc_pages_valid(k) == 0
    assert start_free < 256
    encl = p.file(e.fd).private_data
    assert encl.flags & SGX_ENCL_DEAD
    # Entering faults as after EPC loss: the vDSO reports #PF.
    ret, _, run = e.call(Op(type=OP_GET))
    assert ret == 0 and run.function == U.EENTER and run.exception_vector == 14
    assert run.exception_addr == e.base  # the TCS
    # ioctls fail, faults SIGBUS.
    assert _errno(p.ioctl, e.fd, U.SGX_IOC_ENCLAVE_INIT, U.sgx_enclave_init(sigstruct=0)) == errno.EIO
    with pytest.raises(ProcessSignal) as sig:
        p.read(e.heap, 8)
    assert sig.value.info.signo == U.SIGBUS
    assert k.log.grep("updated: 0x") and k.log.grep("CPUSVN updated to")
    w.check()


def test_new_enclaves_after_update_work_and_accounting_returns(world: World) -> None:
    w = world
    k = w.kernel
    p = w.proc()
    build_enclave(p, heap_pages=2)
    k.svn.microcode_reload(raised_patch(w))
    q = w.proc("new")
    e2 = build_enclave(q, heap_pages=2)
    e2.put(99)
    assert e2.get() == 99
    q.exit()
    p.exit()
    assert k.sgx_nr_free_pages.read() == 256


def test_no_update_still_tears_down(world: World) -> None:
    """A newer revision with the same SVN: the RFC cannot tell and destroys everything anyway."""
    w = world
    k, m = w.kernel, w.machine
    p = w.proc()
    e = build_enclave(p)
    before = m.cpusvn
    cur = m.cpus[0].ucode
    assert k.svn.microcode_reload(MicrocodePatch(cur.revision + 1, cur.svn)) == 0
    rec = last(w)
    assert rec.result == SgxStatus.SGX_NO_UPDATE and rec.result_name == "SGX_NO_UPDATE"
    assert rec.enclaves_killed == [p.file(e.fd).private_data.id] and m.cpusvn == before
    assert k.log.grep("CPUSVN not updated")


def test_same_revision_is_no_new_microcode(world: World) -> None:
    w = world
    k = w.kernel
    p = w.proc()
    e = build_enclave(p)
    n = len(k.svn.updates)
    assert k.svn.microcode_reload(w.machine.cpus[0].ucode) == 0
    assert len(k.svn.updates) == n and k.stats.get("microcode_loads", 0) == 0
    e.put(3)
    assert e.get() == 3


def test_refused_patch_fails_the_load_without_sgx_procedure(world: World) -> None:
    w = world
    k, m = w.kernel, w.machine
    cur = m.cpus[0].ucode
    lower = MicrocodePatch.with_svns(cur.revision + 1, base=cur.svn[0], late_microcode=cur.svn[1] - 1)
    n = len(k.svn.updates)
    assert k.svn.microcode_reload(lower) == -errno.EIO
    assert len(k.svn.updates) == n
    assert k.log.grep("late load failed")


def test_entropy_fails_a_few_times_then_succeeds(world: World) -> None:
    w = world
    k, m = w.kernel, w.machine
    m.entropy.starve(3)
    k.svn.microcode_reload(raised_patch(w))
    rec = last(w)
    assert rec.result == 0 and rec.tries == 4
    assert m.cpusvn == m.min_loaded_svn()


def test_entropy_starved_all_tries_fail(world: World) -> None:
    w = world
    k, m = w.kernel, w.machine
    p = w.proc()
    build_enclave(p)
    before = m.cpusvn
    m.entropy.starve()
    assert k.svn.microcode_reload(raised_patch(w)) == 0  # the load itself succeeded
    m.entropy.restore()
    rec = last(w)
    assert rec.result == SgxStatus.SGX_INSUFFICIENT_ENTROPY and rec.tries == SVN_RETRY_LOOPS
    assert m.cpusvn == before and rec.enclaves_killed  # the teardown already happened
    assert k.log.grep("insufficient entropy")
    assert not k.sgx_epc_locked


def test_swapped_out_pages_are_discarded() -> None:
    """An oversubscribed enclave: its evicted pages live in the backing file under VA slots; the
    zap removes the VA pages and the backing is dropped at once."""
    w = svn_world(48)
    k = w.kernel
    p = w.proc()
    e = build_enclave(p, heap_pages=60)
    encl = p.file(e.fd).private_data
    assert k.stats.get("pages_reclaimed", 0) > 0
    backing = encl.backing
    assert backing is not None and backing.pages
    k.svn.microcode_reload(raised_patch(w))
    assert last(w).result == 0
    assert encl.backing is None and not backing.pages
    assert not encl.va_pages and k.sgx_nr_free_pages.read() == 48
    w.teardown()


def test_what_if_only_if_svn_rises() -> None:
    w = svn_world(64, only_if_svn_rises=True)
    k, m = w.kernel, w.machine
    p = w.proc()
    e = build_enclave(p)
    cur = m.cpus[0].ucode
    k.svn.microcode_reload(MicrocodePatch(cur.revision + 1, cur.svn))
    rec = last(w)
    assert rec.skipped.startswith("what-if") and rec.tries == 0 and not rec.enclaves_killed
    e.put(5)
    assert e.get() == 5
    k.svn.microcode_reload(raised_patch(w))
    assert last(w).result == 0 and last(w).enclaves_killed
    w.teardown()


# ---------------------------------------------------------------------------------------
# Patches 02-05: owners and flags


def test_va_and_guest_pages_are_flagged_with_owners(world: World) -> None:
    w = world
    k = w.kernel
    p = w.proc()
    e = build_enclave(p)
    encl = p.file(e.fd).private_data
    [va] = list(encl.va_pages)
    page = encl.va_epc[va]
    assert k.epc_flags[page] & SGX_EPC_PAGE_VA and k.epc_owner_kind[page] == EpcOwner.VA_PAGE
    assert k.owner_encl(page) is encl
    fd = p.open("/dev/sgx_vepc", U.O_RDWR)
    addr = p.mmap(0, PAGE_SIZE, U.PROT_READ | U.PROT_WRITE, U.MAP_SHARED, fd, 0)
    p.read(addr, 1)
    gpage = p.file(fd).private_data.page_array[0]
    assert k.epc_flags[gpage] & SGX_EPC_PAGE_GUEST and k.epc_owner_kind[gpage] == EpcOwner.VEPC
    assert [s.size for s in k.sgx_epc_sections] == [256 * PAGE_SIZE]


# ---------------------------------------------------------------------------------------
# Patch 01: the guards (fixed default and as posted)


class LockAfter(NullScheduler):
    """Sets the EPC lock flag (as the writer would) at the n-th occurrence of a preemption point."""

    def __init__(self, point: str, n: int) -> None:
        super().__init__()
        self.point = point
        self.n = n
        self.k: Kernel | None = None

    def preempt(self, point: str) -> None:
        if point == self.point and self.k is not None:
            self.n -= 1
            if self.n == 0:
                self.k.sgx_epc_locked = True


def _lock(k: Kernel) -> None:
    k.svn.sgx_lock_epc()


@pytest.mark.parametrize("as_posted", [False, True])
def test_create_ebusy_while_locked(as_posted: bool) -> None:
    w = svn_world(64, rfc_v2_as_posted=as_posted)
    k = w.kernel
    start = k.dram_pages
    p = w.proc()
    _lock(k)
    fd = p.open("/dev/sgx_enclave", U.O_RDWR)
    secs = Secs(size=0x4000, base=0x40000000, ssa_frame_size=1, xfrm=3)
    arg = U.sgx_enclave_create(src=p.alloc(secs.pack()))
    assert _errno(p.ioctl, fd, U.SGX_IOC_ENCLAVE_CREATE, arg) == errno.EBUSY
    assert k.stats.get("secs_copies_leaked", 0) == (1 if as_posted else 0)
    k.svn.sgx_unlock_epc()
    p.exit()
    assert k.dram_pages - start == (1 if as_posted else 0)


def _measured_add(p: Process, fd: int, offset: int, npages: int) -> U.sgx_enclave_add_pages:
    src = p.mmap(0, npages * PAGE_SIZE, U.PROT_READ | U.PROT_WRITE, U.MAP_PRIVATE | U.MAP_ANONYMOUS, -1, 0)
    si = p.alloc(struct.pack("<Q", secinfo_flags(PageType.PT_REG, 3)) + bytes(56))
    return U.sgx_enclave_add_pages(
        src=src, offset=offset, length=npages * PAGE_SIZE, secinfo=si, flags=U.SGX_PAGE_MEASURE
    )


def test_add_pages_reports_partial_progress_when_locked_midway() -> None:
    sched = LockAfter("encls_end:EEXTEND", 16 * 3)  # after the third page's 16 EEXTENDs
    w = svn_world(64, sched=sched)
    k = w.kernel
    sched.k = k
    p = w.proc()
    fd = p.open("/dev/sgx_enclave", U.O_RDWR)
    secs = Secs(size=0x10000, base=0x40000000, ssa_frame_size=1, xfrm=3)
    p.ioctl(fd, U.SGX_IOC_ENCLAVE_CREATE, U.sgx_enclave_create(src=p.alloc(secs.pack())))
    arg = _measured_add(p, fd, 0, 6)
    assert _errno(p.ioctl, fd, U.SGX_IOC_ENCLAVE_ADD_PAGES, arg) == errno.EBUSY
    assert arg.count == 3 * PAGE_SIZE
    assert k.stats["ioctls_ebusy_epc_locked"] == 1
    k.sgx_epc_locked = False
    p.exit()
    w.teardown()


@pytest.mark.parametrize("as_posted", [False, True])
def test_einit_and_provision_guard(as_posted: bool) -> None:
    """Fixed: EINIT and PROVISION see the lock (-EBUSY); as posted they are not guarded."""
    w = svn_world(64, rfc_v2_as_posted=as_posted)
    k = w.kernel
    p = w.proc()
    e = build_enclave(p, init=False, mmap=False)
    from tests.kernel.kernel_helpers import enclave_pages, sign

    pages = enclave_pages(1)
    sig = sign(e.size, pages, int(Attributes.MODE64BIT))
    _lock(k)
    pfd = p.open("/dev/sgx_provision", U.O_RDWR)
    r_prov = _errno(p.ioctl, e.fd, U.SGX_IOC_ENCLAVE_PROVISION, U.sgx_enclave_provision(fd=pfd))
    r_init = _errno(p.ioctl, e.fd, U.SGX_IOC_ENCLAVE_INIT, U.sgx_enclave_init(sigstruct=p.alloc(sig.pack())))
    k.svn.sgx_unlock_epc()
    if as_posted:
        assert (r_prov, r_init) == (0, 0)
    else:
        assert (r_prov, r_init) == (errno.EBUSY, errno.EBUSY)
    w.teardown()


@pytest.mark.parametrize("as_posted", [False, True])
def test_sgx2_ioctl_count_write_back(as_posted: bool) -> None:
    """RESTRICT_PERMISSIONS locked after one page: fixed reports count = 1 page; as posted the
    loop returns before writing count back (it stays 0)."""
    sched = LockAfter("encls_end:ETRACK", 1)
    w = svn_world(64, sched=sched, rfc_v2_as_posted=as_posted)
    k = w.kernel
    p = w.proc()
    e = build_enclave(p, heap_pages=3)
    sched.k = k
    arg = U.sgx_enclave_restrict_permissions(offset=e.heap - e.base, length=3 * PAGE_SIZE, permissions=1)
    assert _errno(p.ioctl, e.fd, U.SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS, arg) == errno.EBUSY
    assert arg.count == (0 if as_posted else PAGE_SIZE)
    sched.k = None
    k.sgx_epc_locked = False
    w.teardown()


def test_fault_while_locked_is_sigbus(world: World) -> None:
    """A fault while locked: SIGBUS for a plain access; EENTER on an unmapped TCS gets the
    vDSO's exception exit (#PF) instead of the signal."""
    w = world
    k = w.kernel
    p = w.proc()
    e = build_enclave(p, heap_pages=2)
    _lock(k)
    with pytest.raises(ProcessSignal) as sig:
        p.read(e.heap, 8)
    assert sig.value.info.signo == U.SIGBUS
    ret, _, run = e.call(Op(type=OP_GET))
    assert ret == 0 and run.exception_vector == 14 and run.exception_addr == e.base
    assert k.stats["faults_sigbus_epc_locked"] == 2
    k.svn.sgx_unlock_epc()
    e.put(8)
    assert e.get() == 8


@pytest.mark.parametrize("as_posted", [False, True])
def test_ptrace_access_while_locked(as_posted: bool) -> None:
    w = svn_world(64, rfc_v2_as_posted=as_posted)
    k = w.kernel
    p = w.proc()
    e = build_enclave(p, attributes=int(Attributes.MODE64BIT | Attributes.DEBUG))
    _lock(k)
    vma = p.mm.vma_lookup(e.heap)
    buf = bytearray(8)
    assert vma is not None
    assert vma.vm_ops.access(vma, e.heap, buf, False) == -errno.EBUSY
    k.svn.sgx_unlock_epc()
    if as_posted:
        w.allowed_warns = 1
        assert k.log.grep("bad unlock balance")
    assert vma.vm_ops.access(vma, e.heap, buf, False) == 8
    w.teardown()


def test_reclaimer_skips_while_locked() -> None:
    w = svn_world(256)
    k = w.kernel
    p = w.proc()
    build_enclave(p, heap_pages=20)
    assert not k.lists.empty(k.sgx_active_page_list)
    _lock(k)
    reclaimed = k.stats.get("pages_reclaimed", 0)
    # Force the reclaimer's condition and run one ksgxd iteration.
    k.sgx_nr_free_pages.set(0)
    assert k.ksgxd_step() is False
    assert k.stats["ksgxd_skipped_locked"] == 1 and k.stats.get("pages_reclaimed", 0) == reclaimed
    k.sgx_nr_free_pages.set(256 - k.nr_used_pages())
    k.svn.sgx_unlock_epc()
    w.teardown()


def test_vepc_fault_retry_or_sigbus_and_virt_ecreate_while_locked(world: World) -> None:
    from sgxsim.kernel.process import VmFault
    from sgxsim.kernel.virt import sgx_vepc_fault

    w = world
    k = w.kernel
    p = w.proc()
    fd = p.open("/dev/sgx_vepc", U.O_RDWR)
    addr = p.mmap(0, 2 * PAGE_SIZE, U.PROT_READ | U.PROT_WRITE, U.MAP_SHARED, fd, 0)
    p.read(addr, 1)
    _lock(k)
    vma = p.mm.vma_lookup(addr + PAGE_SIZE)
    assert vma is not None
    from sgxsim.kernel.process import VM_FAULT_RETRY, VM_FAULT_SIGBUS

    assert sgx_vepc_fault(VmFault(vma, addr + PAGE_SIZE, FAULT_FLAG_ALLOW_RETRY)) == VM_FAULT_RETRY
    assert sgx_vepc_fault(VmFault(vma, addr + PAGE_SIZE, 0)) == VM_FAULT_SIGBUS
    secs = Secs(size=0x10000, base=0x100000, ssa_frame_size=1, attributes=int(Attributes.MODE64BIT), xfrm=3)
    k.current_proc = p
    try:
        assert sgx_virt_ecreate(k, 0, p.alloc(secs.pack()), p.alloc(bytes(64)), addr) == (-errno.EBUSY, 0)
    finally:
        k.current_proc = None
    k.svn.sgx_unlock_epc()


# ---------------------------------------------------------------------------------------
# Guest pages: skip (RFC v2) and zap


def _guest_enclave(w: World, p: Process) -> tuple[int, int]:
    fd = p.open("/dev/sgx_vepc", U.O_RDWR)
    addr = p.mmap(0, 2 * PAGE_SIZE, U.PROT_READ | U.PROT_WRITE, U.MAP_SHARED, fd, 0)
    secs = Secs(size=0x10000, base=0x100000, ssa_frame_size=1, attributes=int(Attributes.MODE64BIT), xfrm=3)
    k, m = w.kernel, w.machine
    k.current_proc = p
    try:
        assert sgx_virt_ecreate(k, 0, p.alloc(secs.pack()), p.alloc(bytes(64)), addr) == (0, 0)
    finally:
        k.current_proc = None
    # A guest EADD straight on the hardware.
    secs_phys = pte_of(p, addr).phys
    p.read(addr + PAGE_SIZE, 1)
    page_phys = pte_of(p, addr + PAGE_SIZE).phys
    si, src, pi = m.dram.alloc_page(), m.dram.alloc_page(), m.dram.alloc_page()
    m.dram.write(si, struct.pack("<Q", secinfo_flags(PageType.PT_REG, 3)) + bytes(56))
    m.dram.write(pi, struct.pack("<QQQQ", 0x100000, src, si, secs_phys))
    assert m.encls(0, EnclsLeaf.EADD, pi, page_phys, 0) == 0
    for a in (si, src, pi):
        m.dram.free_page(a)
    return fd, addr


@pytest.mark.parametrize("world", [{"vepc": "skip"}], indirect=True)
def test_vepc_skip_leaves_guest_pages_and_epc_not_ready(world: World) -> None:
    w = world
    k, m = w.kernel, w.machine
    p = w.proc()
    _guest_enclave(w, p)
    host = w.proc("host")
    build_enclave(host)
    before = m.cpusvn
    k.svn.microcode_reload(raised_patch(w))
    rec = last(w)
    assert rec.result == SgxStatus.SGX_EPC_NOT_READY and rec.vepc_pages_zapped == 0
    assert rec.enclaves_killed and m.cpusvn == before
    assert sgx_epc_pages_valid(k) == 2
    assert k.log.grep("EPC not ready")


@pytest.mark.parametrize("world", [{"vepc": "zap"}], indirect=True)
def test_vepc_zap_removes_guest_pages_and_succeeds(world: World) -> None:
    w = world
    k, m = w.kernel, w.machine
    p = w.proc()
    fd, _ = _guest_enclave(w, p)
    k.svn.microcode_reload(raised_patch(w))
    rec = last(w)
    assert rec.result == 0 and rec.vepc_pages_zapped == 2
    assert m.cpusvn == m.min_loaded_svn() and sgx_epc_pages_valid(k) == 0
    # The pages stay allocated to the vEPC (as after SGX_IOC_VEPC_REMOVE_ALL).
    assert len(p.file(fd).private_data.page_array) == 2
    assert k.sgx_nr_free_pages.read() == 254


# ---------------------------------------------------------------------------------------
# Explicit trigger


def test_explicit_trigger_destructive() -> None:
    w = svn_world(64, policy="explicit-trigger", trigger_mode="destructive")
    k, m = w.kernel, w.machine
    p = w.proc()
    e = build_enclave(p)
    before = m.cpusvn
    assert k.svn.updates == []  # no init-time update under this policy
    k.svn.microcode_reload(raised_patch(w))
    assert k.svn.updates == [] and m.cpusvn == before
    e.put(1)
    assert e.get() == 1
    assert k.svn.update_svn_store() == 0
    rec = last(w)
    assert rec.trigger == "trigger" and rec.enclaves_killed and m.cpusvn == m.min_loaded_svn()
    m.entropy.starve()
    assert k.svn.update_svn_store() == -errno.EAGAIN
    m.entropy.restore()
    w.teardown()


def test_explicit_trigger_non_destructive() -> None:
    w = svn_world(64, policy="explicit-trigger", trigger_mode="non-destructive")
    k, m = w.kernel, w.machine
    p = w.proc()
    e = build_enclave(p)
    k.svn.microcode_reload(raised_patch(w))
    before = m.cpusvn
    assert k.svn.update_svn_store() == -errno.EBUSY
    assert last(w).result == -errno.EBUSY and m.cpusvn == before
    e.put(2)
    assert e.get() == 2  # never disturbed
    p.exit()
    m.entropy.starve()
    assert k.svn.update_svn_store() == -errno.EAGAIN and last(w).tries == SVN_RETRY_LOOPS
    m.entropy.restore()
    assert k.svn.update_svn_store() == 0 and m.cpusvn == m.min_loaded_svn()
    w.teardown()


def test_explicit_trigger_unsupported_and_wrong_policy() -> None:
    from sgxsim.hw.machine import Machine, MachineConfig
    from sgxsim.rand import Rng

    m = Machine(MachineConfig(eupdatesvn=False), Rng(1))
    k = Kernel(m, svn=SvnConfig(policy=SvnPolicy.EXPLICIT_TRIGGER))
    assert k.svn.update_svn_store() == -errno.EOPNOTSUPP
    assert svn_world(16).kernel.svn.update_svn_store() == -errno.EINVAL


# ---------------------------------------------------------------------------------------
# Linux 6.19: EUPDATESVN on the first open


def test_619_updates_on_first_open_only() -> None:
    w = svn_world(64, policy="linux-6.19-on-open")
    k, m = w.kernel, w.machine
    assert k.svn.updates == []
    p = w.proc()
    e = build_enclave(p)
    [rec] = k.svn.updates
    assert rec.trigger == "open" and rec.result == SgxStatus.SGX_NO_UPDATE
    before = m.cpusvn
    k.svn.microcode_reload(raised_patch(w))  # the late load does nothing SGX-specific
    assert len(k.svn.updates) == 1 and m.cpusvn == before
    q = w.proc("second")
    build_enclave(q)  # count 1 -> 2: no attempt
    assert len(k.svn.updates) == 1
    e.put(4)
    assert e.get() == 4
    p.exit()
    q.exit()
    assert k.sgx_usage_count == 0
    r = w.proc("third")
    build_enclave(r)
    assert last(w).result == 0 and m.cpusvn == m.min_loaded_svn()
    assert k.log.grep("SVN updated successfully")
    w.teardown()


def test_619_count_drops_at_release_not_close() -> None:
    w = svn_world(64, policy="linux-6.19-on-open")
    k = w.kernel
    p = w.proc()
    e = build_enclave(p)
    p.close(e.fd)  # the mappings keep the enclave alive
    assert k.sgx_usage_count == 1
    for off, length, _ in e.segments:
        p.munmap(e.base + off, length)
    assert k.sgx_usage_count == 0
    w.teardown()


def test_619_open_fails_eagain_when_starved_and_count_unchanged() -> None:
    w = svn_world(64, policy="linux-6.19-on-open")
    k, m = w.kernel, w.machine
    p = w.proc()
    m.entropy.starve()
    assert _errno(p.open, "/dev/sgx_enclave", U.O_RDWR) == errno.EAGAIN
    assert _errno(p.open, "/dev/sgx_vepc", U.O_RDWR) == errno.EAGAIN
    assert k.sgx_usage_count == 0 and last(w).tries == SVN_RETRY_LOOPS
    m.entropy.restore()
    fd = p.open("/dev/sgx_enclave", U.O_RDWR)
    assert k.sgx_usage_count == 1
    p.close(fd)
    w.teardown()


def test_destructive_trigger_with_guest_pages_skipped_is_ebusy_without_warn() -> None:
    """vepc = "skip": a VM keeps valid EPC, EUPDATESVN reports SGX_EPC_NOT_READY (logged); the
    administrator's write fails with EBUSY (users remain), not the unexpected-error WARN + EIO."""
    w = svn_world(64, policy="explicit-trigger", trigger_mode="destructive", vepc="skip")
    k = w.kernel
    p = w.proc()
    _guest_enclave(w, p)
    k.svn.microcode_reload(raised_patch(w))
    assert k.svn.update_svn_store() == -errno.EBUSY
    assert last(w).result == SgxStatus.SGX_EPC_NOT_READY and k.log.warn_count == 0
    w.teardown()
