"""EPC allocator, NUMA free lists, sanitize at boot, watermarks, the reclaimer (aging, EBLOCK,
ETRACK, EWB, ELDU with the SECS first), IPIs, enclave teardown order, validation."""

from __future__ import annotations

import errno
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.kernel.kernel_helpers import (
    DATA1,
    OP_CHECK,
    OP_FILL,
    Op,
    World,
    build_enclave,
    make_world,
    small_machine,
)

from sgxsim.hw.arch import PAGE_SIZE, EnclsLeaf, PageType
from sgxsim.hw.epc import EpcSectionConfig
from sgxsim.hw.machine import DEFAULT_EPC_BASE
from sgxsim.kernel import uapi as U  # noqa: N812
from sgxsim.kernel.encl import SECS_REF, SgxEncl, sgx_encl_load_page
from sgxsim.kernel.locking import NullScheduler
from sgxsim.kernel.main import (
    SGX_EPC_PAGE_IS_FREE,
    SGX_EPC_PAGE_RECLAIMER_TRACKED,
    EpcOwner,
    Kernel,
    KernelConfig,
    PageLists,
    validate_epc,
)


def test_boot_all_free_and_sections_from_cpuid() -> None:
    secs = (
        EpcSectionConfig(DEFAULT_EPC_BASE, 64 * PAGE_SIZE, 0),
        EpcSectionConfig(DEFAULT_EPC_BASE + (1 << 30), 32 * PAGE_SIZE, 1),
    )
    m = small_machine(sections=secs, sockets=2, cpus_per_socket=2)
    k = Kernel(m)
    assert [(s.phys_addr, s.npages, s.nid) for s in k.sgx_epc_sections] == [
        (DEFAULT_EPC_BASE, 64, 0),
        (DEFAULT_EPC_BASE + (1 << 30), 32, 1),
    ]
    assert k.sgx_nr_free_pages.read() == 96
    assert {nid: n.size for nid, n in k.sgx_numa_nodes.items()} == {0: 64 * PAGE_SIZE, 1: 32 * PAGE_SIZE}
    assert all(k.epc_flags == SGX_EPC_PAGE_IS_FREE)
    assert set(k.misc_devices) == {"/dev/sgx_enclave", "/dev/sgx_provision", "/dev/sgx_vepc"}
    assert not validate_epc(k).problems


def test_numa_local_node_first_then_fallback() -> None:
    secs = (
        EpcSectionConfig(DEFAULT_EPC_BASE, 4 * PAGE_SIZE, 0),
        EpcSectionConfig(DEFAULT_EPC_BASE + (1 << 30), 4 * PAGE_SIZE, 1),
    )
    m = small_machine(sections=secs, sockets=2, cpus_per_socket=1)
    sched = NullScheduler()
    k = Kernel(m, sched=sched)
    sched.task.cpu = 1  # socket 1
    got = [k.sgx_alloc_epc_page(EpcOwner.VEPC, 1, i, False) for i in range(6)]
    assert got == [4, 5, 6, 7, 0, 1]
    sched.task.cpu = 0
    assert k.sgx_alloc_epc_page(EpcOwner.VEPC, 1, 6, False) == 2
    # Freed pages go to the tail of their own node's list.
    k.sgx_free_epc_page(5)
    k.sgx_free_epc_page(0)
    assert k.lists.to_array(k.sgx_numa_nodes[1].free_head).tolist() == [5]
    assert k.lists.to_array(k.sgx_numa_nodes[0].free_head).tolist() == [3, 0]
    for p in (4, 6, 7, 1, 2):
        k.sgx_free_epc_page(p)
    assert not validate_epc(k, expect_empty=True).problems


def test_cpu_on_node_without_epc_falls_back() -> None:
    m = small_machine(8, sockets=3, cpus_per_socket=1)
    sched = NullScheduler()
    k = Kernel(m, sched=sched)
    sched.task.cpu = 2
    assert k.sgx_alloc_epc_page_nowait() == 0


def test_alloc_errors_enomem_ebusy_erestartsys(world: World) -> None:
    k = world.kernel
    held = [k.sgx_alloc_epc_page(EpcOwner.VEPC, 9, i, False) for i in range(256)]
    assert k.sgx_alloc_epc_page(EpcOwner.VEPC, 9, 0, True) == -errno.ENOMEM  # nothing reclaimable
    for page_ in held:
        k.sgx_free_epc_page(page_)
    p = world.proc()
    build_enclave(p, heap_pages=8)
    hog = []
    while (x := k.sgx_alloc_epc_page_nowait()) >= 0:
        hog.append(x)
    assert k.sgx_alloc_epc_page(EpcOwner.VEPC, 9, 0, False) == -errno.EBUSY
    k.current_proc = p
    p.kill(U.SIGUSR1)
    assert k.sgx_alloc_epc_page(EpcOwner.VEPC, 9, 0, True) == -U.ERESTARTSYS
    p.pending.clear()
    page = k.sgx_alloc_epc_page(EpcOwner.VEPC, 9, 0, True)  # reclaims a batch synchronously
    k.current_proc = None
    assert page >= 0 and k.stats["pages_reclaimed"] >= 1
    for x in [*hog, page]:
        k.sgx_free_epc_page(x)
    world.check()


def test_epc_locked_guard_refuses_allocation(world: World) -> None:
    k = world.kernel
    k.sgx_epc_locked = True
    p = world.proc()
    fd = p.open("/dev/sgx_enclave", U.O_RDWR)
    from sgxsim.hw.arch import Secs

    secs = Secs(size=0x4000, base=0x40000000, ssa_frame_size=1, xfrm=3)
    with pytest.raises(OSError) as exc:
        p.ioctl(fd, U.SGX_IOC_ENCLAVE_CREATE, U.sgx_enclave_create(src=p.alloc(secs.pack())))
    assert exc.value.errno == errno.EBUSY
    k.sgx_epc_locked = False


def test_page_lists_semantics() -> None:
    lists = PageLists(8, 2)
    h = lists.head(0)
    for i in (3, 1, 5):
        lists.add_tail(i, h)
    lists.add(7, h)
    assert lists.to_array(h).tolist() == [7, 3, 1, 5]
    lists.del_init(1)
    assert lists.empty(1) and lists.to_array(h).tolist() == [7, 3, 5]
    lists.move_tail(7, h)
    assert lists.first(h) == 3
    assert lists.pop_front_many(h, 2) == [3, 5] and lists.to_array(h).tolist() == [7]
    import numpy as np

    lists.splice_tail_array(h, np.array([0, 2, 4]))
    assert lists.to_array(h).tolist() == [7, 0, 2, 4]
    from sgxsim.errors import ModelInvariantError

    with pytest.raises(ModelInvariantError):
        lists.head(5)


# ------------------------------------------------------------------------------- reclaim


def test_oversubscribed_build_evicts_and_reloads_with_contents() -> None:
    w = make_world(128)
    k = w.kernel
    p = w.proc()
    heap_pages = 200
    encl = build_enclave(p, heap_pages=heap_pages)
    assert k.stats["pages_reclaimed"] > 0 and k.machine.stats.get("EWB", 0) > 0
    w.check()
    ret, _, run = encl.call(Op(type=OP_FILL, value=0x5EED, addr=encl.heap, n=heap_pages))
    assert ret == 0 and run.function == U.EEXIT
    w.check()
    ret, out, run = encl.call(Op(type=OP_CHECK, value=0x5EED, addr=encl.heap, n=heap_pages))
    assert ret == 0 and run.function == U.EEXIT and out.ret == 0
    assert k.stats["eldu"] > heap_pages
    encl.put(77)
    assert encl.get() == 77
    w.check()
    w.teardown()


def test_secs_evicted_last_and_reloaded_first() -> None:
    w = make_world(128)
    k = w.kernel
    p = w.proc()
    encl = build_enclave(p, heap_pages=2)
    encl.put(0x42)
    e: SgxEncl = p.file(encl.fd).private_data
    # Age everything and reclaim until the enclave has no resident child: the SECS goes too.
    for _ in range(20):
        for pte in p.mm.ptes.values():
            pte.accessed = False
        k.sgx_reclaim_pages()
        if e.secs_epc < 0:
            break
    assert e.secs_epc < 0 and e.secs_child_cnt == 0 and k.stats["secs_evicted"] == 1
    assert e.pages.count and all(e.pages.epc(pfn) < 0 for pfn in e.pages.pfns())
    w.check()
    order: list[str] = []
    orig = w.machine.encls_exec

    def spy(cpu, leaf, rbx=0, rcx=0, rdx=0):  # type: ignore[no-untyped-def]
        if leaf == EnclsLeaf.ELDU:
            pi = w.machine.dram.read(rbx, 32)
            order.append("SECS" if int.from_bytes(pi[24:32], "little") == 0 else "child")
        return orig(cpu, leaf, rbx, rcx, rdx)

    w.machine.encls_exec = spy  # type: ignore[method-assign]
    try:
        assert sgx_encl_load_page_for_test(e, encl.base + DATA1) == 0
    finally:
        del w.machine.encls_exec
    assert order == ["SECS", "child"]
    assert e.secs_epc >= 0 and w.machine.epc.epcm.pt[e.secs_epc] == PageType.PT_SECS
    assert encl.get() == 0x42
    w.check()
    w.teardown()


def sgx_encl_load_page_for_test(e: SgxEncl, addr: int) -> int:
    e.lock.lock()
    try:
        return sgx_encl_load_page(e, addr)
    finally:
        e.lock.unlock()


def test_aging_skips_accessed_pages(world: World) -> None:
    k = world.kernel
    p = world.proc()
    encl = build_enclave(p, heap_pages=4)
    encl.put(1)  # faults in TCS, code and data pages
    e: SgxEncl = p.file(encl.fd).private_data
    young = {vpn for vpn, pte in p.mm.ptes.items() if world.machine.epc.index_of(pte.phys) is not None}
    assert young
    for vpn in young:
        p.mm.ptes[vpn].accessed = True
    active = k.epc_summary()["active"]
    k.sgx_reclaim_pages()
    # Young pages were skipped (Accessed now clear) and stay resident; the others were evicted.
    assert k.stats["reclaim_skipped_young"] == len(young)
    assert all(e.pages.epc(vpn) >= 0 and not p.mm.ptes[vpn].accessed for vpn in young)
    assert k.stats["pages_reclaimed"] == min(16, active) - len(young)
    # A second pass reclaims them (no longer young).
    k.sgx_reclaim_pages()
    k.sgx_reclaim_pages()
    assert all(e.pages.epc(vpn) < 0 for vpn in young)
    assert encl.get() == 1
    world.check()


def test_watermarks_and_ksgxd_step() -> None:
    w = make_world(128)
    k = w.kernel
    p = w.proc()
    build_enclave(p, heap_pages=40)
    assert not k.ksgxd_step()  # plenty free
    hog = []
    while k.sgx_nr_free_pages.read() > 10:
        hog.append(k.sgx_alloc_epc_page_nowait())
    assert k.sgx_should_reclaim(32)
    for _ in range(20):
        if not k.ksgxd_step():
            break
    assert k.sgx_nr_free_pages.read() >= 64 or k.lists.empty(k.sgx_active_page_list)
    for h in hog:
        k.sgx_free_epc_page(h)
    w.check()
    w.teardown()


def test_allocation_below_low_watermark_wakes_ksgxd_which_runs_at_syscall_exit() -> None:
    w = make_world(128)
    k = w.kernel
    p = w.proc()
    build_enclave(p, heap_pages=100)
    # The build went below 32 free pages; by the end of the last syscall ksgxd ran and
    # restored the high watermark (or ran out of reclaimable pages).
    assert k._deferred.wakeups > 0
    assert k.sgx_nr_free_pages.read() >= 64
    w.teardown()


def test_being_reclaimed_page_is_ebusy_to_loaders() -> None:
    """While the reclaimer holds a page (BEING_RECLAIMED, between isolation and EWB), a fault or
    SGX2 load sees -EBUSY and release skips it."""
    seen: list[int] = []
    holder: dict[str, object] = {}

    class Probe(NullScheduler):
        def preempt(self, point: str) -> None:
            if point == "srcu_read_lock:encl_srcu" and not seen and "encl" in holder:
                e = holder["encl"]
                assert isinstance(e, SgxEncl)
                for pfn in e.pages.pfns():
                    if e.pages.desc(pfn) & 8 and e.pages.epc(pfn) >= 0:
                        e.lock.lock()
                        seen.append(sgx_encl_load_page(e, pfn << 12))
                        e.lock.unlock()
                        seen.append(holder["kk"].sgx_unmark_page_reclaimable(e.pages.epc(pfn)))  # type: ignore[attr-defined]
                        break

    m = small_machine(128)
    k = Kernel(m, sched=Probe(), config=KernelConfig(use_batch=False))
    p = k.create_process()
    encl = build_enclave(p, heap_pages=4)
    holder["encl"] = p.file(encl.fd).private_data
    holder["k"] = k
    holder["kk"] = k
    for pte in p.mm.ptes.values():
        pte.accessed = False
    k.sgx_reclaim_pages()
    assert seen == [-errno.EBUSY, -errno.EBUSY]
    p.exit()
    assert not validate_epc(k, expect_empty=True).problems


def test_on_each_cpu_mask_waits_for_aex() -> None:
    class Ack(NullScheduler):
        def preempt(self, point: str) -> None:
            if point == "smp_call_function_many":
                for lp in m.cpus:
                    if lp.pending_interrupt:
                        lp.pending_interrupt = False
                        lp.active_secs = None

    m = small_machine(16)
    k = Kernel(m, sched=Ack())
    m.cpus[2].active_secs = 5  # pretend CPU 2 runs enclave code
    k.on_each_cpu_mask({1, 2, 3})
    assert m.cpus[2].active_secs is None and not any(lp.pending_interrupt for lp in m.cpus)
    assert k.stats["ipis"] == 3
    assert k.log.warn_count == 0


# ------------------------------------------------------------------------------- teardown


def test_release_order_children_secs_va() -> None:
    w = make_world(128, config=KernelConfig(use_batch=False))
    p = w.proc()
    encl = build_enclave(p, heap_pages=3)
    e: SgxEncl = p.file(encl.fd).private_data
    kinds: list[int] = []
    orig = w.machine.encls_exec

    def spy(cpu, leaf, rbx=0, rcx=0, rdx=0):  # type: ignore[no-untyped-def]
        if leaf == EnclsLeaf.EREMOVE:
            kinds.append(int(w.machine.epc.epcm.pt[w.machine.epc.index_of(rcx)]))
        return orig(cpu, leaf, rbx, rcx, rdx)

    w.machine.encls_exec = spy  # type: ignore[method-assign]
    n_children = e.pages.count
    p.exit()
    del w.machine.encls_exec
    assert len(kinds) == n_children + 2
    assert all(t in (PageType.PT_REG, PageType.PT_TCS) for t in kinds[:n_children])
    assert kinds[n_children:] == [PageType.PT_SECS, PageType.PT_VA]
    w.teardown()


def test_release_with_evicted_pages_frees_backing_and_va() -> None:
    w = make_world(128)
    p = w.proc()
    build_enclave(p, heap_pages=300)
    assert w.kernel.dram_pages > w.dram_baseline  # backing pages in use
    p.exit()
    w.teardown()  # checks DRAM back to baseline, EPC all free


def test_batch_release_equals_per_page_release() -> None:
    states = []
    for batch in (True, False):
        w = make_world(256, config=KernelConfig(use_batch=batch))
        p = w.proc()
        build_enclave(p, heap_pages=20)
        p.exit()
        k = w.kernel
        states.append(
            (
                k.lists._next.tolist(),
                k.lists._prev.tolist(),
                k.epc_flags.tolist(),
                w.machine.epc.epcm.valid.tolist(),
            )
        )
        w.teardown()
    assert states[0] == states[1]


def test_kexec_leaves_dirty_epc_sanitized_in_two_passes() -> None:
    m = small_machine(128)
    k1 = Kernel(m)
    p = k1.create_process()
    build_enclave(p, heap_pages=4)
    valid_before = m.epc.nr_valid()
    assert valid_before > 0
    m.kexec()
    calls: list[int] = []
    from sgxsim.kernel import encls as kencls

    orig = kencls.eremove_many

    def count(k, pages):  # type: ignore[no-untyped-def]
        out = orig(k, pages)
        calls.append(int((out != 0).sum()))
        return out

    kencls.eremove_many = count
    try:
        k2 = Kernel(m)
    finally:
        kencls.eremove_many = orig
    # Pass 1 fails exactly on the SECS (its children come after it), pass 2 removes it.
    assert calls == [1, 0]
    assert m.epc.nr_valid() == 0 and k2.sgx_nr_free_pages.read() == 128
    assert not validate_epc(k2, expect_empty=True).problems
    assert k2.log.warn_count == 0


def test_validate_detects_corruption(world: World) -> None:
    p = world.proc()
    encl = build_enclave(p)
    e: SgxEncl = p.file(encl.fd).private_data
    k = world.kernel
    pfn = (encl.base + DATA1) >> 12
    page = e.pages.epc(pfn)
    world.machine.epc.epcm.valid[page] = False
    assert any("invalid in the EPCM" in s for s in validate_epc(k).problems)
    world.machine.epc.epcm.valid[page] = True
    k.epc_flags[page] &= 0xFF & ~SGX_EPC_PAGE_RECLAIMER_TRACKED
    assert validate_epc(k).problems
    k.epc_flags[page] |= SGX_EPC_PAGE_RECLAIMER_TRACKED
    e.secs_child_cnt += 1
    assert any("secs_child_cnt" in s for s in validate_epc(k).problems)
    e.secs_child_cnt -= 1
    assert e.secs_epc >= 0 and SECS_REF == -1
    world.check()


def test_kernel_without_sgx_lc_has_no_enclave_device() -> None:
    w = make_world(32, config=KernelConfig(sgx_lc=False, vmx=False))
    assert w.kernel.misc_devices.keys() == {"/dev/sgx_provision"}
    assert w.kernel.sgx_disabled == "no driver"
    p = w.proc()
    with pytest.raises(OSError) as exc:
        p.open("/dev/sgx_enclave", U.O_RDWR)
    assert exc.value.errno == errno.ENOENT
    w.teardown()


def test_reserved_masks_from_cpuid(world: World) -> None:
    k = world.kernel
    cfg = world.machine.config
    assert k.sgx_misc_reserved_mask == (~cfg.miscselect_supported & 0xFFFFFFFF) | 0xFFFFFFFE
    assert k.sgx_xfrm_reserved_mask == ~cfg.xfrm_supported & (2**64 - 1)
    assert not k.sgx_attributes_reserved_mask & cfg.attributes_supported
    assert k.sgx_attributes_reserved_mask & (1 << 3)
    assert world.machine.dram is not None and DATA1 == 0x4000


@given(
    st.lists(st.integers(0, 2), min_size=1, max_size=40),
    st.randoms(use_true_random=False),
)
@settings(max_examples=150, deadline=None)
def test_del_many_equals_del_init_one_by_one(heads: list[int], rnd: random.Random) -> None:
    """Removing any subset of nodes (from several lists, in any order, some detached) leaves the
    lists exactly as ``list_del_init`` node by node would."""
    n = len(heads)
    a, b = PageLists(n, 3), PageLists(n, 3)
    order = list(range(n))
    rnd.shuffle(order)
    for node in order:
        if heads[node] < 3:
            for pl in (a, b):
                pl.add_tail(node, pl.head(heads[node]))
    detached = [x for x in range(n) if rnd.random() < 0.2]
    for x in detached:
        a.del_init(x)
        b.del_init(x)
    victims = [x for x in range(n) if rnd.random() < 0.6]
    a.del_many(np.array(victims, dtype=np.int64))
    for x in victims:
        b.del_init(x)
    assert a._next.tolist() == b._next.tolist() and a._prev.tolist() == b._prev.tolist()
