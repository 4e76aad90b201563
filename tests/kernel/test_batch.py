"""The batch EADD / EREMOVE paths leave exactly the state the page-by-page paths leave."""

from __future__ import annotations

import struct

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.kernel.kernel_helpers import World, create_enclave, make_world

from sgxsim.hw.arch import PAGE_SIZE, EnclsLeaf, PageType, secinfo_flags
from sgxsim.kernel import uapi as U  # noqa: N812
from sgxsim.kernel.main import KernelConfig


def _snapshot(w: World) -> tuple[object, ...]:
    k = w.kernel
    m = w.machine
    e = m.epc.epcm
    encls = []
    for encl in k.enclaves.values():
        pages = tuple(
            (
                pfn,
                encl.pages.epc(pfn),
                encl.pages.desc(pfn),
                encl.pages.va(pfn),
                encl.pages.prot(pfn),
                encl.pages.type(pfn),
            )
            for pfn in encl.pages.pfns()
        )
        meas = m.epc.secs_state[encl.secs_epc].measurement.copy().finalize() if encl.secs_epc >= 0 else None
        encls.append(
            (
                pages,
                encl.page_cnt,
                encl.secs_child_cnt,
                tuple(encl.va_pages),
                tuple(encl.va_epc),
                encl.va_slots.tobytes(),
                meas,
                tuple(sorted(encl.backing.pages)) if encl.backing else (),
            )
        )
    return (
        e.valid.tobytes(),
        e.pt.tobytes(),
        e.rwx.tobytes(),
        e.secs.tobytes(),
        e.linaddr.tobytes(),
        e.blocked.tobytes(),
        tuple(sorted((i, bytes(v)) for i, v in m.epc.contents.items())),
        k.epc_flags.tobytes(),
        k.epc_owner_kind.tobytes(),
        k.epc_owner_id.tobytes(),
        k.epc_owner_index.tobytes(),
        k.lists._next.tobytes(),
        k.lists._prev.tobytes(),
        k.sgx_nr_free_pages.read(),
        tuple(encls),
    )


def _run(batch: bool, epc_pages: int, chunks: list[int], dup: int | None, fill: bool) -> tuple:  # type: ignore[type-arg]
    w = make_world(epc_pages, config=KernelConfig(use_batch=batch))
    p = w.proc()
    size = 1 << 20
    fd, _ = create_enclave(p, size)
    si = p.alloc(struct.pack("<Q", secinfo_flags(PageType.PT_REG, 3)) + bytes(56))
    results = []
    offset = 0
    if dup is not None:
        src = p.alloc(PAGE_SIZE)
        p.ioctl(
            fd,
            U.SGX_IOC_ENCLAVE_ADD_PAGES,
            U.sgx_enclave_add_pages(src=src, offset=dup * PAGE_SIZE, length=PAGE_SIZE, secinfo=si),
        )
    for n in chunks:
        src = p.alloc(n * PAGE_SIZE)
        if fill:
            for i in range(n):
                p.write(src + i * PAGE_SIZE, struct.pack("<QQ", offset + i, 0xC0FFEE))
        arg = U.sgx_enclave_add_pages(src=src, offset=offset * PAGE_SIZE, length=n * PAGE_SIZE, secinfo=si)
        try:
            p.ioctl(fd, U.SGX_IOC_ENCLAVE_ADD_PAGES, arg)
            results.append((0, arg.count))
        except OSError as exc:
            results.append((exc.errno or 0, arg.count))
        offset += n
        p.munmap(src, n * PAGE_SIZE)
    snap = _snapshot(w)
    stats = (w.kernel.stats.get("pages_reclaimed", 0),)
    p.exit()
    after = _snapshot(w)
    w.teardown()
    return results, snap, stats, after


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    epc_pages=st.integers(min_value=40, max_value=200),
    chunks=st.lists(st.integers(min_value=1, max_value=90), min_size=1, max_size=4),
    dup=st.one_of(st.none(), st.integers(min_value=0, max_value=200)),
    fill=st.booleans(),
)
def test_add_pages_batch_equals_per_page(
    epc_pages: int, chunks: list[int], dup: int | None, fill: bool
) -> None:
    assert _run(True, epc_pages, chunks, dup, fill) == _run(False, epc_pages, chunks, dup, fill)


def test_batch_path_is_taken_and_failure_unwinds_exactly() -> None:
    """An EADD failure in the middle of a batch (injected) leaves the per-page error state."""
    import numpy as np

    from sgxsim.hw import encls as hw_encls

    def run(batch: bool) -> tuple:  # type: ignore[type-arg]
        w = make_world(128, config=KernelConfig(use_batch=batch))
        p = w.proc()
        fd, _base = create_enclave(p, 1 << 20)
        # Make page 5's EPC page unusable: the EPC page the 6th allocation will return is made
        # valid behind the driver's back, so EADD #PFs on it (-EIO), in both paths.
        k = w.kernel
        order = k.lists.to_array(k.sgx_numa_nodes[0].free_head)
        victim = int(order[5])
        w.machine.epc.epcm.valid[victim] = True
        w.machine.epc.epcm.pt[victim] = PageType.PT_VA
        si = p.alloc(struct.pack("<Q", secinfo_flags(PageType.PT_REG, 3)) + bytes(56))
        arg = U.sgx_enclave_add_pages(
            src=p.alloc(10 * PAGE_SIZE), offset=0, length=10 * PAGE_SIZE, secinfo=si
        )
        try:
            p.ioctl(fd, U.SGX_IOC_ENCLAVE_ADD_PAGES, arg)
            err = 0
        except OSError as exc:
            err = exc.errno or 0
        snap = _snapshot(w)
        batched = k.stats.get("add_pages_batched", 0)
        w.machine.epc.epcm.valid[victim] = False
        w.machine.epc.epcm.pt[victim] = 0
        p.exit()
        w.allowed_warns = k.log.warn_count
        w.teardown()
        return err, arg.count, snap, batched

    a = run(True)
    b = run(False)
    assert a[:3] == b[:3]
    # EIO (5) on the sixth page: five pages added, and the batch path added them.
    assert a[0] == 5 and a[1] == 5 * PAGE_SIZE
    assert a[3] == 5 and b[3] == 0
    assert np is not None and hw_encls.BATCH_FAULT == -1


def test_eremove_many_equals_single(world) -> None:  # type: ignore[no-untyped-def]
    from tests.kernel.kernel_helpers import build_enclave

    from sgxsim.kernel import encls as E  # noqa: N812

    p = world.proc()
    encl = build_enclave(p, heap_pages=4)
    e = p.file(encl.fd).private_data
    pages = [e.pages.epc(pfn) for pfn in e.pages.pfns()]
    import numpy as np

    k = world.kernel
    # Removing the SECS first fails with CHILD_PRESENT in both forms; a non-EPC address faults.
    assert E.eremove(k, e.secs_epc) == 13
    out = E.eremove_many(k, np.array([e.secs_epc, *pages[:2]], dtype=np.int64))
    assert out.tolist() == [13, 0, 0]
    assert EnclsLeaf.EREMOVE == 3
    # Put the two removed pages back into a consistent state for teardown: they are gone from the
    # EPCM, so drop them from the driver as REMOVE_PAGES would.
    for pfn in e.pages.pfns()[:2]:
        page = e.pages.epc(pfn)
        k.sgx_unmark_page_reclaimable(page)
        k.sgx_free_epc_page(page)
        e.secs_child_cnt -= 1
        e.pages.erase(pfn)
        e.page_cnt -= 1
    world.check()


@given(
    st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 7)), max_size=60),
    st.integers(0, 3000),
    st.integers(0, 3000),
    st.integers(0, 7),
)
@settings(max_examples=100, deadline=None)
def test_all_prot_equals_per_entry_check(
    entries: list[tuple[int, int]], lo: int, span: int, bits: int
) -> None:
    """EnclPages.all_prot (the batch path of sgx_encl_may_map) answers as checking every present
    entry of pfns(lo, hi) would."""
    from sgxsim.kernel.encl import EnclPages

    pages = EnclPages()
    for pfn, prot in entries:
        pages.insert(pfn, prot)
    hi = lo + span
    expect = all(not (~pages.prot(p) & bits) for p in pages.pfns(lo, hi))
    assert pages.all_prot(lo, hi, bits) == expect


@given(
    st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 7)), max_size=80),
    st.integers(0, 3000),
    st.integers(0, 3000),
    st.integers(1, 40),
    st.lists(st.integers(0, 3000), max_size=20),
)
@settings(max_examples=100, deadline=None)
def test_present_groups_and_prot_many_walk_as_the_page_array(
    entries: list[tuple[int, int]], lo: int, span: int, n: int, erased: list[int]
) -> None:
    """The interleavable path of sgx_encl_may_map: present_groups yields pfns(lo, hi) in order,
    n at a time; prot_many reads each entry's prot, -1 for one erased after it was listed."""
    from sgxsim.kernel.encl import EnclPages

    pages = EnclPages()
    for pfn, prot in entries:
        pages.insert(pfn, prot)
    hi = lo + span
    groups = [g.tolist() for g in pages.present_groups(lo, hi, n)]
    assert [p for g in groups for p in g] == pages.pfns(lo, hi)
    assert all(len(g) == n for g in groups[:-1]) and all(0 < len(g) <= n for g in groups)
    listed = np.array(pages.pfns(lo, hi), dtype=np.int64)
    for pfn in erased:
        pages.erase(pfn)
    expect = [pages.prot(p) if pages.load(p) else -1 for p in listed.tolist()]
    assert pages.prot_many(listed).tolist() == expect
