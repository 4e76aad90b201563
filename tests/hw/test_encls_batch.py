"""Batch paths (eadd_batch, eaug_batch, eremove_batch) against the one-page leaves, and validate_epcm.

Each scenario runs twice on identical machines: once through the batch path and once page by
page through Machine.encls; every architectural effect (EPCM, contents, SECS state and
measurement, statistics, simulated time) must be equal.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from sgxsim.errors import InvalidArgument
from sgxsim.hw.arch import (
    PAGE_SIZE,
    EnclsLeaf,
    Fault,
    LeafResult,
    PageType,
    SgxStatus,
    Vector,
    gp0,
    secinfo_flags,
)
from sgxsim.hw.encls import (
    BATCH_FAULT,
    BATCH_UD,
    decode_batch_status,
    eadd_batch,
    eaug_batch,
    eremove_batch,
    validate_epcm,
)
from sgxsim.hw.machine import Machine

from .helpers import (
    RW,
    RWX,
    Enclave,
    EpcPool,
    W,
    build_enclave,
    check,
    ecreate,
    epa_page,
    epc_snapshot,
    make_secs,
    one_page_eadds,
    one_page_eaugs,
    one_page_eremoves,
    put,
    put_secinfo,
    small_machine,
)

REG_RW = secinfo_flags(PageType.PT_REG, RW)
DRAM_ADDR = 0x20_0000


def twins(setup: Callable[[Machine], Enclave]) -> tuple[tuple[Machine, Enclave], tuple[Machine, Enclave]]:
    """Two identical machines with the same set-up applied."""
    a, b = small_machine(), small_machine()
    return (a, setup(a)), (b, setup(b))


def uninit(m: Machine) -> Enclave:
    result, encl = ecreate(m, make_secs(0x40000))
    check(result)
    return encl


def initialized(m: Machine) -> Enclave:
    return build_enclave(m, size=0x40000)


def free_pages(m: Machine, n: int) -> list[int]:
    pool = EpcPool(m)
    return [pool.alloc() for _ in range(n)]


def arr(values: list[int]) -> np.ndarray:
    return np.array(values, dtype=np.int64)


# --------------------------------------------------------------------------------------------
# eadd_batch


def _compare_eadd(
    epcs: list[int],
    lins: list[int],
    flags: int = REG_RW,
    with_src: bool = False,
    setup: Callable[[Machine], Enclave] = uninit,
) -> tuple[int, object]:
    (ma, ea), (mb, eb) = twins(setup)
    srcs_a = srcs_b = None
    if with_src:
        srcs_a = [put(ma, bytes([i + 1]) * 64 if i % 2 else b"") for i in range(len(epcs))]
        srcs_b = [put(mb, bytes([i + 1]) * 64 if i % 2 else b"") for i in range(len(epcs))]
    got = eadd_batch(
        ma,
        0,
        ea.secs_phys,
        arr(epcs),
        arr(lins).astype(np.uint64),
        flags,
        None if srcs_a is None else arr(srcs_a),
    )
    want = one_page_eadds(mb, 0, eb.secs_phys, epcs, lins, flags, srcs_b)
    assert got == want
    assert epc_snapshot(ma) == epc_snapshot(mb)
    assert validate_epcm(ma) == []
    return got


def test_eadd_batch_zero_pages_equals_one_page_path() -> None:
    m = small_machine()
    epcs = free_pages(m, 40)[1:]
    lins = [(1 << 40) + i * PAGE_SIZE for i in range(len(epcs))]
    assert _compare_eadd(epcs, lins) == (39, SgxStatus.SUCCESS)


def test_eadd_batch_with_source_pages() -> None:
    m = small_machine()
    epcs = free_pages(m, 9)[1:]
    lins = [(1 << 40) + i * PAGE_SIZE for i in range(8)]
    assert _compare_eadd(epcs, lins, flags=secinfo_flags(PageType.PT_REG, RWX), with_src=True) == (
        8,
        SgxStatus.SUCCESS,
    )


def test_eadd_batch_zero_source_stores_nothing() -> None:
    m = small_machine()
    encl = uninit(m)
    epcs = free_pages(m, 5)[1:]
    done, result = eadd_batch(
        m, 0, encl.secs_phys, arr(epcs), arr([(1 << 40) + i * PAGE_SIZE for i in range(4)]), REG_RW, None
    )
    assert (done, result) == (4, SgxStatus.SUCCESS)
    assert list(m.epc.contents) == [encl.secs_index]
    assert encl.state.child_count == 4 and m.stats["EADD"] == 4


@pytest.mark.parametrize(
    "case",
    ["valid target", "duplicate", "not EPC", "misaligned", "linaddr outside", "linaddr misaligned"],
)
def test_eadd_batch_stops_at_first_failure(case: str) -> None:
    m = small_machine()
    epcs = free_pages(m, 9)[1:]
    lins = [(1 << 40) + i * PAGE_SIZE for i in range(8)]
    if case == "valid target":
        epcs[5] = EpcPool(m).alloc() - PAGE_SIZE  # page 0: the SECS
    elif case == "duplicate":
        epcs[5] = epcs[2]
    elif case == "not EPC":
        epcs[5] = DRAM_ADDR
    elif case == "misaligned":
        epcs[5] += 8
    elif case == "linaddr outside":
        lins[5] = (1 << 40) + 0x40000
    else:
        lins[5] += 0x10
    done, result = _compare_eadd(epcs, lins)
    assert done == 5 and result != SgxStatus.SUCCESS


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (secinfo_flags(PageType.PT_REG, W), gp0()),
        (secinfo_flags(PageType.PT_VA), gp0()),
        (REG_RW | 1 << 20, gp0()),
    ],
    ids=["W-without-R", "VA", "reserved"],
)
def test_eadd_batch_bad_secinfo(flags: int, expected: object) -> None:
    m = small_machine()
    epcs = free_pages(m, 3)[1:]
    assert _compare_eadd(epcs, [(1 << 40), (1 << 40) + PAGE_SIZE], flags) == (0, expected)


def test_eadd_batch_tcs_pages_and_initialized_enclave() -> None:
    m = small_machine()
    epcs = free_pages(m, 3)[1:]
    lins = [(1 << 40), (1 << 40) + PAGE_SIZE]
    assert _compare_eadd(epcs, lins, secinfo_flags(PageType.PT_TCS)) == (2, SgxStatus.SUCCESS)
    # The second source page has non-zero TCS reserved fields: #GP on it.
    assert _compare_eadd(epcs, lins, secinfo_flags(PageType.PT_TCS), with_src=True) == (1, gp0())
    m = small_machine()
    build_enclave(m, size=0x40000)
    epcs = free_pages(m, 2)
    assert _compare_eadd(epcs, [(1 << 40) + 0x10000, (1 << 40) + 0x11000], setup=initialized) == (0, gp0())


def test_eadd_batch_bad_secs() -> None:
    (ma, ea), (mb, eb) = twins(uninit)
    epcs = free_pages(ma, 3)[1:]
    lins = [1 << 40, (1 << 40) + PAGE_SIZE]
    for bad in (lambda e: DRAM_ADDR, lambda e: epcs[0], lambda e: e.secs_phys + 64):
        got = eadd_batch(ma, 0, bad(ea), arr(epcs), arr(lins), REG_RW)
        want = one_page_eadds(mb, 0, bad(eb), epcs, lins, REG_RW)
        assert got == want and got[0] == 0
    assert epc_snapshot(ma) == epc_snapshot(mb)


def test_eadd_batch_refused_while_eupdatesvn_in_flight() -> None:
    m = small_machine()
    encl = uninit(m)
    m.encls_begin(1, EnclsLeaf.EUPDATESVN)
    assert eadd_batch(m, 0, encl.secs_phys, arr(free_pages(m, 2)[1:]), arr([1 << 40]), REG_RW) == (0, gp0())
    m.encls_end(1)
    assert encl.state.child_count == 0 and m.cpus[0].inflight is None


def test_eadd_batch_argument_errors() -> None:
    m = small_machine()
    encl = uninit(m)
    with pytest.raises(InvalidArgument):
        eadd_batch(m, 0, encl.secs_phys, arr([1]), arr([1, 2]), REG_RW)
    with pytest.raises(InvalidArgument):
        eadd_batch(m, 0, encl.secs_phys, [1], arr([1]), REG_RW)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        eadd_batch(m, 0, encl.secs_phys, arr([-4096]), arr([1]), REG_RW)
    with pytest.raises(InvalidArgument):
        eadd_batch(m, 0, encl.secs_phys, arr([4096]), arr([1]), -1)
    assert eadd_batch(m, 0, encl.secs_phys, arr([]), arr([]), REG_RW) == (0, SgxStatus.SUCCESS)
    assert "EADD" not in m.stats


# --------------------------------------------------------------------------------------------
# eaug_batch


def _compare_eaug(
    epcs: list[int],
    lins: list[int],
    setup: Callable[[Machine], Enclave] = initialized,
    secs: int | None = None,
) -> tuple[int, object]:
    (ma, ea), (mb, eb) = twins(setup)
    got = eaug_batch(ma, 0, ea.secs_phys if secs is None else secs, arr(epcs), arr(lins))
    want = one_page_eaugs(mb, 0, eb.secs_phys if secs is None else secs, epcs, lins)
    assert got == want
    assert epc_snapshot(ma) == epc_snapshot(mb)
    assert validate_epcm(ma) == []
    return got


def test_eaug_batch_equals_one_page_path() -> None:
    m = small_machine()
    build_enclave(m, size=0x40000)
    epcs = free_pages(m, 20)
    lins = [(1 << 40) + 0x10000 + i * PAGE_SIZE for i in range(20)]
    assert _compare_eaug(epcs, lins) == (20, SgxStatus.SUCCESS)
    lins[7] = 1 << 39
    assert _compare_eaug(epcs, lins)[0] == 7
    epcs[3] = epcs[1]
    assert _compare_eaug(epcs, lins)[0] == 3
    assert _compare_eaug(epcs, lins, setup=uninit) == (0, gp0())
    assert _compare_eaug(epcs, lins, secs=DRAM_ADDR) == (0, Fault(14, 0x8001, DRAM_ADDR))


def test_eaug_batch_sgx1_machine() -> None:
    m = small_machine(sgx2=False)
    encl = build_enclave(m)
    assert eaug_batch(m, 0, encl.secs_phys, arr(free_pages(m, 1)), arr([(1 << 40) + 0x3000])) == (0, gp0())
    assert m.stats["EAUG"] == 1


# --------------------------------------------------------------------------------------------
# eremove_batch


def _two_enclaves(m: Machine) -> Enclave:
    first = build_enclave(m)
    build_enclave(m, base=1 << 41, pool=first.pool)
    epa_page(m, first.pool)
    return first


def _compare_eremove(
    order: Callable[[Machine, Enclave], list[int]], prepare: Callable[[Machine, Enclave], None] | None = None
) -> list[LeafResult]:
    (ma, ea), (mb, eb) = twins(_two_enclaves)
    if prepare is not None:
        prepare(ma, ea)
        prepare(mb, eb)
    pages_a, pages_b = order(ma, ea), order(mb, eb)
    assert pages_a == pages_b
    got = eremove_batch(ma, 0, arr(pages_a))
    want = one_page_eremoves(mb, 0, pages_b)
    assert got.dtype == np.int32
    assert [decode_batch_status(ma, p, int(s)) for p, s in zip(pages_a, got, strict=True)] == want
    assert epc_snapshot(ma) == epc_snapshot(mb)
    assert validate_epcm(ma) == []
    return want


def _all(m: Machine, _: Enclave) -> list[int]:
    return [m.epc.phys_of(i) for i in range(m.epc.npages)]


def test_eremove_batch_sanitize_pass_order() -> None:
    # SECS pages come first in EPC order: the first pass leaves them (CHILD_PRESENT), the second frees them.
    first = _compare_eremove(_all)
    assert first.count(SgxStatus.SGX_CHILD_PRESENT) == 2
    assert _compare_eremove(lambda m, e: _all(m, e) + _all(m, e)).count(SgxStatus.SGX_CHILD_PRESENT) == 2


def test_eremove_batch_children_then_secs() -> None:
    def order(m: Machine, e: Enclave) -> list[int]:
        return [e.phys(0x2000), e.phys(0), e.phys(0x1000), e.secs_phys, e.secs_phys, e.phys(0)]

    assert _compare_eremove(order) == [SgxStatus.SUCCESS] * 6


def test_eremove_batch_faults_and_active_enclave() -> None:
    def prepare(m: Machine, e: Enclave) -> None:
        e.state.inside[3] = 0
        m.cpus[3].active_secs = e.secs_index
        check(m.encls(0, EnclsLeaf.EMODT, put_secinfo(m, secinfo_flags(PageType.PT_TRIM)), e.phys(0x1000)))
        m.epc.epcm.modified[e.index(0x1000)] = False

    def order(m: Machine, e: Enclave) -> list[int]:
        return [e.phys(0x2000) + 8, DRAM_ADDR, e.phys(0x2000), e.phys(0x1000), e.secs_phys, *_all(m, e)[-3:]]

    results = _compare_eremove(order, prepare)
    assert results[:5] == [
        gp0(),
        Fault(14, 0x8001, DRAM_ADDR),
        SgxStatus.SGX_ENCLAVE_ACT,
        SgxStatus.SUCCESS,
        SgxStatus.SGX_CHILD_PRESENT,
    ]


def test_eremove_batch_drops_tcs_threads_and_contents() -> None:
    m = small_machine()
    encl = build_enclave(m)
    m.tcs_threads[encl.index(0)] = object()
    status = eremove_batch(m, 0, arr([encl.phys(0), encl.phys(0x2000), encl.phys(0x1000), encl.secs_phys]))
    assert status.tolist() == [0, 0, 0, 0]
    assert not m.tcs_threads and not m.epc.contents and not m.epc.secs_state
    assert m.stats["EREMOVE"] == 4 and m.epc.nr_valid() == 0


def test_eremove_batch_gate_and_decode() -> None:
    m = small_machine()
    encl = build_enclave(m)
    m.cpus[0].active_secs = encl.secs_index  # in enclave mode: ENCLS is #UD (SDM)
    encl.state.inside[0] = 0
    assert eremove_batch(m, 0, arr([encl.phys(0x2000)])).tolist() == [BATCH_UD]
    assert decode_batch_status(m, encl.phys(0x2000), BATCH_UD) == Fault(int(Vector.UD))
    assert decode_batch_status(m, encl.phys(0x2000), BATCH_FAULT) == gp0()
    assert decode_batch_status(m, DRAM_ADDR, BATCH_FAULT) == Fault(14, 0x8001, DRAM_ADDR)
    assert decode_batch_status(m, DRAM_ADDR, 13) == SgxStatus.SGX_CHILD_PRESENT
    with pytest.raises(InvalidArgument):
        decode_batch_status(m, DRAM_ADDR, -3)
    assert eremove_batch(m, 0, arr([])).size == 0


# --------------------------------------------------------------------------------------------
# validate_epcm


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda m, e: setattr(e.state, "child_count", 5), "child_count 5 but 3 valid children"),
        (lambda m, e: m.epc.epcm.blocked.__setitem__(200, True), "invalid EPC pages have BLOCKED set"),
        (lambda m, e: m.epc.epcm.rwx.__setitem__(200, 3), "invalid EPC pages have RWX bits set"),
        (
            lambda m, e: m.epc.contents.__setitem__(200, bytearray(PAGE_SIZE)),
            "contents stored for EPC page 200",
        ),
        (lambda m, e: m.epc.epcm.valid.__setitem__(e.secs_index, False), "which is not a valid PT_SECS page"),
        (lambda m, e: m.epc.epcm.secs.__setitem__(e.index(0x2000), 100), "which is not a valid SECS"),
        (lambda m, e: m.epc.epcm.linaddr.__setitem__(e.index(0x2000), 5), "outside its ELRANGE"),
        (lambda m, e: m.epc.secs_state.pop(e.secs_index), "has no SECS state"),
        (lambda m, e: m.tcs_threads.__setitem__(200, object()), "TCS thread is kept for EPC page 200"),
        (lambda m, e: e.state.inside.__setitem__(1, 0), "lists CPU 1 inside"),
        (lambda m, e: setattr(m.cpus[2], "active_secs", e.secs_index), "CPU 2 executes in SECS"),
    ],
    ids=[
        "child-count",
        "blocked",
        "rwx",
        "contents",
        "secs-invalid",
        "dangling-secs",
        "elrange",
        "no-state",
        "tcs-thread",
        "inside",
        "active-secs",
    ],
)
def test_validate_epcm_reports_violations(
    corrupt: Callable[[Machine, Enclave], object], message: str
) -> None:
    m = small_machine()
    encl = build_enclave(m)
    assert validate_epcm(m) == []
    corrupt(m, encl)
    problems = validate_epcm(m)
    assert any(message in p for p in problems), problems
