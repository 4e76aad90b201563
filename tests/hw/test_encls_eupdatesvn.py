"""ENCLS[EUPDATESVN] (eupdatesvn-linux.md §4), the concurrency rule, and CPUSVN across resets."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sgxsim.errors import ModelInvariantError
from sgxsim.hw.arch import EnclsLeaf, PageType, SgxStatus, cpusvn_le, gp0
from sgxsim.hw.cpu import MicrocodePatch
from sgxsim.hw.encls import eremove_batch, validate_epcm
from sgxsim.hw.machine import Machine

from .helpers import Backing, EpcPool, build_enclave, check, eldu_page, epa_page, evict, small_machine

EARLY = MicrocodePatch.with_svns(0xD0003A5, base=2, late_microcode=2, name="early")
LATE = MicrocodePatch.with_svns(0xD0003B9, base=2, late_microcode=5, name="late")


def eupdatesvn(m: Machine, cpu: int = 0) -> object:
    return m.encls(cpu, EnclsLeaf.EUPDATESVN)


def warm(m: Machine) -> None:
    """Use SGX once (EREMOVE of a free page): CR_CPUSVN is snapshotted now."""
    check(m.encls(0, EnclsLeaf.EREMOVE, 0, m.epc.phys_of(0)))
    assert m.cr_cpusvn == EARLY.svn


def load_all(m: Machine, patch: MicrocodePatch) -> None:
    for lp in m.cpus:
        assert m.load_microcode(lp.id, patch)


def test_no_update_when_nothing_newer_but_key_refreshed() -> None:
    m = small_machine()
    key = m.cr_base_pk
    assert eupdatesvn(m) == SgxStatus.SGX_NO_UPDATE
    assert m.cpusvn == EARLY.svn and m.cr_base_pk != key and len(m.cr_base_pk) == 16


def test_success_raises_cpusvn_to_minimum_over_cpus() -> None:
    m = small_machine()
    check(m.encls(0, EnclsLeaf.EPA, int(PageType.PT_VA), EpcPool(m).alloc()))
    assert m.cr_cpusvn == EARLY.svn  # the snapshot at first use
    check(m.encls(0, EnclsLeaf.EREMOVE, 0, m.epc.phys_of(0)))
    load_all(m, LATE)
    assert m.cpusvn == EARLY.svn  # loading microcode alone changes nothing
    assert eupdatesvn(m, 2) == SgxStatus.SUCCESS
    assert m.cpusvn == LATE.svn
    assert eupdatesvn(m) == SgxStatus.SGX_NO_UPDATE


def test_partial_load_is_no_update() -> None:
    m = small_machine()
    warm(m)
    for lp in m.cpus[1:]:
        assert m.load_microcode(lp.id, LATE)
    assert eupdatesvn(m) == SgxStatus.SGX_NO_UPDATE
    assert m.cpusvn == EARLY.svn
    assert m.load_microcode(0, LATE)
    assert eupdatesvn(m) == SgxStatus.SUCCESS and m.cpusvn == LATE.svn


def test_componentwise_minimum() -> None:
    m = small_machine()
    warm(m)
    a = MicrocodePatch(1, bytes([2, 5] + [2] * 14))
    b = MicrocodePatch(2, bytes([3, 4] + [2] * 14))
    for lp in m.cpus:
        assert m.load_microcode(lp.id, a if lp.id % 2 else b)
    assert eupdatesvn(m) == SgxStatus.SUCCESS
    assert m.cpusvn == bytes([2, 4] + [2] * 14)


def test_lockfail_while_another_cpu_has_a_leaf_in_flight() -> None:
    m = small_machine()
    warm(m)
    load_all(m, LATE)
    m.encls_begin(1, EnclsLeaf.EADD)
    assert eupdatesvn(m) == SgxStatus.SGX_LOCKFAIL
    assert m.cpusvn == EARLY.svn
    m.encls_end(1)
    assert eupdatesvn(m) == SgxStatus.SUCCESS


def test_leaf_begun_during_eupdatesvn_gets_gp() -> None:
    m = small_machine()
    page = EpcPool(m).alloc()
    m.encls_begin(0, EnclsLeaf.EUPDATESVN)
    m.encls_begin(1, EnclsLeaf.EPA)
    assert m.encls_exec(1, EnclsLeaf.EPA, int(PageType.PT_VA), page) == gp0()
    assert not m.epc.epcm.valid.any()
    # While that leaf is still in flight, EUPDATESVN itself fails with LOCKFAIL.
    assert m.encls_exec(0, EnclsLeaf.EUPDATESVN) == SgxStatus.SGX_LOCKFAIL
    m.encls_end(1)
    assert m.encls_exec(0, EnclsLeaf.EUPDATESVN) == SgxStatus.SGX_NO_UPDATE
    m.encls_end(0)
    # Batch paths obey the same rule.
    m.encls_begin(0, EnclsLeaf.EUPDATESVN)
    status = eremove_batch(m, 1, np.array([page], dtype=np.int64))
    assert status.tolist() == [-1]
    m.encls_end(0)


def test_epc_not_ready_while_any_page_is_valid() -> None:
    m = small_machine()
    va = epa_page(m, EpcPool(m))
    key = m.cr_base_pk
    assert eupdatesvn(m) == SgxStatus.SGX_EPC_NOT_READY
    assert m.cr_base_pk == key
    check(m.encls(0, EnclsLeaf.EREMOVE, 0, va))
    assert eupdatesvn(m) == SgxStatus.SGX_NO_UPDATE


def test_insufficient_entropy() -> None:
    m = small_machine()
    warm(m)
    load_all(m, LATE)
    key = m.cr_base_pk
    m.entropy.starve(1)
    assert eupdatesvn(m) == SgxStatus.SGX_INSUFFICIENT_ENTROPY
    assert m.cr_base_pk == key and m.cpusvn == EARLY.svn
    assert eupdatesvn(m) == SgxStatus.SUCCESS


def test_check_order() -> None:
    m = small_machine()
    epa_page(m, EpcPool(m))
    m.entropy.starve(1)
    # LOCKFAIL before EPC_NOT_READY, EPC_NOT_READY before drawing entropy.
    m.encls_begin(3, EnclsLeaf.EREMOVE)
    assert eupdatesvn(m) == SgxStatus.SGX_LOCKFAIL
    m.encls_end(3)
    draws = m.entropy.draws
    assert eupdatesvn(m) == SgxStatus.SGX_EPC_NOT_READY
    assert m.entropy.draws == draws
    check(m.encls(0, EnclsLeaf.EREMOVE, 0, m.epc.phys_of(0)))
    assert eupdatesvn(m) == SgxStatus.SGX_INSUFFICIENT_ENTROPY


def _evict_va_page(m: Machine) -> tuple[Backing, int]:
    """EWB a VA page into another VA page; remove everything; return (backing, version)."""
    pool = EpcPool(m)
    va1 = epa_page(m, pool)
    va2 = epa_page(m, pool)
    result, backing = evict(m, va1, va2 + 8, block=False)
    check(result)
    idx = m.epc.index_of(va2)
    assert idx is not None
    version = int.from_bytes(m.epc.read(idx, 8, 8), "little")
    check(m.encls(0, EnclsLeaf.EREMOVE, 0, va2))
    return backing, version


@pytest.mark.parametrize("run_eupdatesvn", [False, True])
def test_paging_key_refresh_breaks_old_evictions(run_eupdatesvn: bool) -> None:
    # Even SGX_NO_UPDATE regenerates CR_BASE_PK, so a page EWB'd before cannot be loaded after.
    m = small_machine()
    backing, version = _evict_va_page(m)
    if run_eupdatesvn:
        assert eupdatesvn(m) == SgxStatus.SGX_NO_UPDATE
    pool = EpcPool(m)
    va3 = epa_page(m, pool)
    idx = m.epc.index_of(va3)
    assert idx is not None
    m.epc.write(idx, 8, version.to_bytes(8, "little"))  # the test knows the version
    result = eldu_page(m, dataclasses.replace(backing, va_slot=va3 + 8), pool.alloc())
    expected = SgxStatus.SGX_MAC_COMPARE_FAIL if run_eupdatesvn else SgxStatus.SUCCESS
    assert result == expected


def test_cpusvn_never_decreases() -> None:
    m = small_machine()
    warm(m)
    load_all(m, LATE)
    assert eupdatesvn(m) == SgxStatus.SUCCESS
    m.cpus[0].ucode = EARLY  # bypass the loader's anti-rollback: a broken model
    with pytest.raises(ModelInvariantError):
        eupdatesvn(m)


def test_snapshot_taken_at_first_use_after_cold_reset() -> None:
    m = small_machine()
    load_all(m, LATE)
    assert m.cr_cpusvn is None
    epa_page(m, EpcPool(m))
    assert m.cr_cpusvn == LATE.svn  # nothing used SGX before the late load: snapshot sees it
    m.cold_reset()
    assert m.cr_cpusvn is None and not m.epc.epcm.valid.any()
    assert all(lp.ucode == EARLY for lp in m.cpus)
    epa_page(m, EpcPool(m))
    assert m.cr_cpusvn == EARLY.svn
    assert validate_epcm(m) == []


def test_kexec_keeps_epcm_and_cpusvn() -> None:
    m = small_machine()
    warm(m)
    encl = build_enclave(m)
    load_all(m, LATE)
    m.kexec()
    assert m.cr_cpusvn == EARLY.svn  # no new snapshot
    assert m.epc.epcm.valid[encl.index(0x2000)] and encl.state.initialized
    assert validate_epcm(m) == []
    assert eupdatesvn(m) == SgxStatus.SGX_EPC_NOT_READY
    # Sanitize as ksgxd does: EREMOVE every page, twice (SECS pages fail while children remain).
    pages = np.array([m.epc.phys_of(i) for i in range(m.epc.npages)], dtype=np.int64)
    first = eremove_batch(m, 0, pages)
    assert SgxStatus.SGX_CHILD_PRESENT in first.tolist() or m.epc.nr_valid() == 0
    eremove_batch(m, 0, pages)
    assert m.epc.nr_valid() == 0
    assert eupdatesvn(m) == SgxStatus.SUCCESS
    assert m.cpusvn == LATE.svn and cpusvn_le(EARLY.svn, m.cpusvn)
