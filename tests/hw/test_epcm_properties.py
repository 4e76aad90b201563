"""Property tests of the EPCM model.

* A hypothesis state machine drives random sequences of ECREATE / EADD / EINIT / EAUG / EREMOVE /
  EBLOCK / ETRACK / EPA / EWB / ELDU / EUPDATESVN, microcode loads, enclave entry/exit and cold
  resets, and checks after every step: ``validate_epcm(m) == []``; the set of valid pages equals
  a shadow model updated only from the leaves' outcomes (no page is both free and valid); every
  SECS's child count equals its valid children; CPUSVN never decreases within a boot.
* The batch paths equal the one-page path on random inputs.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from sgxsim.hw.arch import PAGE_SIZE, EnclsLeaf, PageType, SgxStatus, cpusvn_le, secinfo_flags
from sgxsim.hw.cpu import MicrocodePatch
from sgxsim.hw.encls import decode_batch_status, eadd_batch, eaug_batch, eremove_batch, validate_epcm
from sgxsim.hw.machine import Machine

from .helpers import (
    RW,
    RWX,
    Backing,
    Enclave,
    EpcPool,
    build_enclave,
    eadd_page,
    einit,
    eldu_page,
    epc_snapshot,
    evict,
    one_page_eadds,
    one_page_eaugs,
    one_page_eremoves,
    put,
    reg_page,
    sign,
    small_machine,
    tcs_page,
)

NPAGES = 40
SUCCESS = SgxStatus.SUCCESS
CHILD = frozenset({PageType.PT_REG, PageType.PT_TCS, PageType.PT_TRIM})


class EpcmStateMachine(RuleBasedStateMachine):
    """Random ENCLS traffic on a 40-page, 4-CPU machine; leaves run on CPU 0, CPUs 1-3 enter enclaves."""

    m: Machine

    @initialize()
    def boot(self) -> None:
        self.m = small_machine(epc_pages=NPAGES)
        self._forget()

    def _forget(self) -> None:
        self.pool = _Pool(self.m)
        self.enclaves: list[tuple[Enclave, int]] = []
        self.backings: list[tuple[Backing, str, Enclave | None]] = []
        self.shadow_valid: set[int] = set()
        self.boots = self.m.boots
        self.last_cpusvn: bytes | None = None

    # -- helpers ---------------------------------------------------------------------------

    def _idx(self, phys: int) -> int:
        idx = self.m.epc.index_of(phys)
        assert idx is not None
        return idx

    def _live(self) -> list[Enclave]:
        """Enclaves whose SECS is resident (a valid PT_SECS page holding their EID)."""
        out = []
        for encl, eid in self.enclaves:
            state = self.m.epc.secs_state.get(self._idx(encl.secs_phys))
            if state is not None and state.eid == eid:
                out.append(encl)
        return out

    def _page(self, data: st.DataObject) -> int:
        """A page index: usually a valid page, sometimes any page."""
        want_valid: int = data.draw(st.integers(0, 3))
        if self.shadow_valid and want_valid:
            return data.draw(st.sampled_from(sorted(self.shadow_valid)))
        return data.draw(st.integers(0, NPAGES - 1))

    def _free_pages(self) -> int:
        return NPAGES - len(self.shadow_valid)

    # -- enclave building ----------------------------------------------------------------------

    @rule(init=st.booleans(), npages=st.integers(0, 3))
    def create(self, init: bool, npages: int) -> None:
        if self._free_pages() < 1 + 3 or len(self.enclaves) >= 6:
            return
        base = (1 << 40) + len(self.enclaves) * (1 << 30)
        pages = [tcs_page(0, ossa=0x1000), *(reg_page(0x1000 * (i + 1), b"%d" % i) for i in range(npages))]
        encl = build_enclave(
            self.m, pages[: npages + 1] if npages else [], size=0x10000, base=base, pool=self.pool, init=init
        )
        eid = encl.state.eid
        self.enclaves.append((encl, eid))
        self.shadow_valid.add(encl.secs_index)
        self.shadow_valid.update(encl.index(off) for off in encl.pages)

    @rule(data=st.data(), kind=st.sampled_from(["reg", "tcs", "unmeasured"]), slot=st.integers(0, 16))
    def add(self, data: st.DataObject, kind: str, slot: int) -> None:
        live = self._live()
        target = self.pool.free()
        if not live or target is None:
            return
        encl = data.draw(st.sampled_from(live))
        offset = slot * PAGE_SIZE
        spec = {
            "reg": reg_page(offset, b"page %d" % slot, perms=RWX),
            "tcs": tcs_page(offset, ossa=0x1000),
            "unmeasured": reg_page(offset, measure=False),
        }[kind]
        result = eadd_page(encl, spec, target)
        if result == SUCCESS:
            self.shadow_valid.add(self._idx(target))
        else:
            # Offset 16 pages is outside the 64 KiB ELRANGE; otherwise only an initialized enclave refuses.
            assert slot == 16 or encl.state.initialized

    @rule(data=st.data())
    def init(self, data: st.DataObject) -> None:
        live = self._live()
        if live:
            encl = data.draw(st.sampled_from(live))
            expected = SgxStatus.SUCCESS if not encl.state.initialized else None
            result = einit(self.m, encl, sign(encl))
            if expected is not None:
                assert result == expected

    @rule(data=st.data(), slot=st.integers(0, 17))
    def aug(self, data: st.DataObject, slot: int) -> None:
        live = self._live()
        target = self.pool.free()
        if not live or target is None:
            return
        encl = data.draw(st.sampled_from(live))
        pageinfo = put(
            self.m,
            (encl.base + slot * PAGE_SIZE).to_bytes(8, "little")
            + bytes(16)
            + encl.secs_phys.to_bytes(8, "little"),
        )
        if self.m.encls(0, EnclsLeaf.EAUG, pageinfo, target) == SUCCESS:
            self.shadow_valid.add(self._idx(target))

    @rule()
    def epa(self) -> None:
        target = self.pool.free()
        if target is not None and self.m.encls(0, EnclsLeaf.EPA, int(PageType.PT_VA), target) == SUCCESS:
            self.shadow_valid.add(self._idx(target))

    # -- removal, blocking, tracking -------------------------------------------------------------

    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        idx = self._page(data)
        if self.m.encls(0, EnclsLeaf.EREMOVE, 0, self.m.epc.phys_of(idx)) == SUCCESS:
            self.shadow_valid.discard(idx)

    @rule(data=st.data())
    def remove_batch(self, data: st.DataObject) -> None:
        pages = data.draw(st.lists(st.integers(0, NPAGES - 1), max_size=12))
        status = eremove_batch(self.m, 0, np.array([self.m.epc.phys_of(i) for i in pages], dtype=np.int64))
        for idx, code in zip(pages, status.tolist(), strict=True):
            if code == SUCCESS:
                self.shadow_valid.discard(idx)

    @rule(data=st.data())
    def block(self, data: st.DataObject) -> None:
        self.m.encls(0, EnclsLeaf.EBLOCK, 0, self.m.epc.phys_of(self._page(data)))

    @rule(data=st.data())
    def track(self, data: st.DataObject) -> None:
        live = self._live()
        phys = data.draw(st.sampled_from(live)).secs_phys if live else self.m.epc.phys_of(self._page(data))
        self.m.encls(0, EnclsLeaf.ETRACK, 0, phys)

    @rule(data=st.data(), cpu=st.integers(1, 3))
    def enter(self, data: st.DataObject, cpu: int) -> None:
        """CPU ``cpu`` enters through a TCS page if EENTER's EPCM checks would pass."""
        m, e = self.m, self.m.epc.epcm
        idx = self._page(data)
        lp = m.cpus[cpu]
        if lp.in_enclave or not e.valid[idx] or e.pt[idx] != PageType.PT_TCS or e.blocked[idx]:
            return
        if e.pending[idx] or e.modified[idx]:
            return
        state = m.epc.secs_state[int(e.secs[idx])]
        if not state.initialized:
            return
        state.inside[cpu] = state.epoch
        lp.active_secs = int(e.secs[idx])
        lp.active_tcs = idx

    @rule(cpu=st.integers(1, 3))
    def leave(self, cpu: int) -> None:
        lp = self.m.cpus[cpu]
        if lp.active_secs is None:
            return
        state = self.m.epc.secs_state[lp.active_secs]
        state.inside.pop(cpu, None)
        state.track_waiting.discard(cpu)
        lp.active_secs = lp.active_tcs = None

    # -- paging ------------------------------------------------------------------------------------

    def _va_slot(self, data: st.DataObject) -> int | None:
        """A slot of a VA page (EPA-ing one if there is none and a page is free)."""
        e = self.m.epc.epcm
        vas = [i for i in self.shadow_valid if e.pt[i] == PageType.PT_VA]
        if not vas:
            self.epa()
            vas = [i for i in self.shadow_valid if e.pt[i] == PageType.PT_VA]
        if not vas:
            return None
        return self.m.epc.phys_of(data.draw(st.sampled_from(sorted(vas)))) + 8 * data.draw(st.integers(0, 3))

    @rule(data=st.data(), prepare=st.booleans())
    def writeback(self, data: st.DataObject, prepare: bool) -> None:
        idx = self._page(data)
        slot = self._va_slot(data)
        if slot is None or self.m.epc.index_of(slot) == idx:
            return
        e = self.m.epc.epcm
        valid, pt = bool(e.valid[idx]), int(e.pt[idx])
        owner = int(e.secs[idx]) if valid and pt in CHILD else None
        encl = None
        if valid and pt == PageType.PT_SECS:
            encl = next((en for en in self._live() if self._idx(en.secs_phys) == idx), None)
        elif owner is not None:
            encl = next((en for en in self._live() if self._idx(en.secs_phys) == owner), None)
        if prepare and owner is not None:
            self.m.encls(0, EnclsLeaf.EBLOCK, 0, self.m.epc.phys_of(idx))
            self.m.encls(0, EnclsLeaf.ETRACK, 0, self.m.epc.phys_of(owner))
        result, backing = evict(self.m, self.m.epc.phys_of(idx), slot, block=False)
        if result in (SUCCESS, SgxStatus.SGX_VA_SLOT_OCCUPIED):
            assert valid
            self.shadow_valid.discard(idx)
            kind = "secs" if pt == PageType.PT_SECS else "va" if pt == PageType.PT_VA else "child"
            self.backings.append((backing, kind, encl))

    @rule(data=st.data())
    def evict_enclave(self, data: st.DataObject) -> None:
        """Evict every child of a live enclave (EBLOCK, ETRACK, EWB), then its SECS."""
        live = self._live()
        if not live:
            return
        encl = data.draw(st.sampled_from(live))
        e = self.m.epc.epcm
        sidx = self._idx(encl.secs_phys)
        for idx in sorted(self.shadow_valid):
            if (
                e.valid[idx]
                and e.pt[idx] != PageType.PT_SECS
                and e.pt[idx] != PageType.PT_VA
                and e.secs[idx] == sidx
            ):
                slot = self._va_slot(data)
                if slot is None:
                    return
                self.m.encls(0, EnclsLeaf.EBLOCK, 0, self.m.epc.phys_of(idx))
                self.m.encls(0, EnclsLeaf.ETRACK, 0, encl.secs_phys)
                result, backing = evict(self.m, self.m.epc.phys_of(idx), slot, block=False)
                if result in (SUCCESS, SgxStatus.SGX_VA_SLOT_OCCUPIED):
                    self.shadow_valid.discard(idx)
                    self.backings.append((backing, "child", encl))
                else:
                    # Only a processor inside the enclave can hold tracking up.
                    assert result == SgxStatus.SGX_NOT_TRACKED and self.m.epc.secs_state[sidx].inside
                    return
        slot = self._va_slot(data)
        if slot is None:
            return
        result, backing = evict(self.m, encl.secs_phys, slot, block=False)
        assert result in (SUCCESS, SgxStatus.SGX_VA_SLOT_OCCUPIED)
        self.shadow_valid.discard(sidx)
        self.backings.append((backing, "secs", encl))

    @precondition(lambda self: self.backings)
    @rule(data=st.data())
    def load(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(self.backings) - 1))
        backing, kind, encl = self.backings[i]
        target = self.pool.free()
        if target is None:
            return
        secs = encl.secs_phys if kind == "child" and encl is not None else 0
        result = eldu_page(self.m, backing, target, secs_phys=secs, blocked=data.draw(st.booleans()))
        if result == SUCCESS:
            self.shadow_valid.add(self._idx(target))
            del self.backings[i]
            if kind == "secs" and encl is not None:
                encl.secs_phys = target

    # -- microcode and EUPDATESVN ------------------------------------------------------------------

    @rule(cpu=st.integers(0, 3), component=st.integers(0, 15), bump=st.integers(0, 2))
    def load_microcode(self, cpu: int, component: int, bump: int) -> None:
        old = self.m.cpus[cpu].ucode
        svn = bytearray(old.svn)
        svn[component] = min(255, svn[component] + bump)
        assert self.m.load_microcode(cpu, MicrocodePatch(old.revision + 1, bytes(svn)))

    @rule(component=st.integers(0, 15))
    def late_load_everywhere(self, component: int) -> None:
        """A late microcode load on every CPU raising one SVN component."""
        for lp in self.m.cpus:
            svn = bytearray(lp.ucode.svn)
            svn[component] = min(255, svn[component] + 1)
            assert self.m.load_microcode(lp.id, MicrocodePatch(lp.ucode.revision + 1, bytes(svn)))

    @rule()
    def sanitize(self) -> None:
        """EREMOVE every page twice, as ksgxd does (children first pass, SECS second)."""
        pages = np.array([self.m.epc.phys_of(i) for i in range(NPAGES)], dtype=np.int64)
        for _ in range(2):
            for idx, code in enumerate(eremove_batch(self.m, 0, pages).tolist()):
                if code == SUCCESS:
                    self.shadow_valid.discard(idx)

    @rule(starve=st.booleans())
    def updatesvn(self, starve: bool) -> None:
        if starve:
            self.m.entropy.starve(1)
        before = self.m.cpusvn
        result = self.m.encls(0, EnclsLeaf.EUPDATESVN)
        self.m.entropy.restore()
        if result == SUCCESS:
            assert self.m.cpusvn != before
        elif result == SgxStatus.SGX_EPC_NOT_READY:
            assert self.shadow_valid
        elif result == SgxStatus.SGX_NO_UPDATE:
            assert self.m.cpusvn == before
        else:
            assert result == SgxStatus.SGX_INSUFFICIENT_ENTROPY and starve

    @rule()
    def cold_reset(self) -> None:
        self.m.cold_reset()
        self._forget()

    # -- invariants ------------------------------------------------------------------------------

    @invariant()
    def epcm_consistent(self) -> None:
        assert validate_epcm(self.m) == []

    @invariant()
    def valid_pages_match_outcomes(self) -> None:
        valid = set(np.flatnonzero(self.m.epc.epcm.valid).tolist())
        assert valid == self.shadow_valid

    @invariant()
    def child_counts(self) -> None:
        e = self.m.epc.epcm
        for k, state in self.m.epc.secs_state.items():
            children = np.count_nonzero(
                e.valid & (e.secs == k) & (e.pt != PageType.PT_SECS) & (e.pt != PageType.PT_VA)
            )
            assert state.child_count == children

    @invariant()
    def cpusvn_monotonic(self) -> None:
        current = self.m.cr_cpusvn
        if current is None:
            return
        if self.last_cpusvn is not None and self.boots == self.m.boots:
            assert cpusvn_le(self.last_cpusvn, current)
        self.last_cpusvn, self.boots = current, self.m.boots


class _Pool(EpcPool):
    """Free pages for the state machine: any page whose EPCM entry is invalid right now."""

    def free(self) -> int | None:
        e = self.m.epc.epcm
        free = np.flatnonzero(~e.valid)
        return None if free.size == 0 else self.m.epc.phys_of(int(free[0]))

    def alloc(self) -> int:
        page = self.free()
        assert page is not None
        return page


class _FixedPool(EpcPool):
    def __init__(self, page: int) -> None:
        self.page = page

    def alloc(self) -> int:
        return self.page


EpcmStateMachine.TestCase.settings = settings(
    max_examples=50, stateful_step_count=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestEpcmStateMachine = EpcmStateMachine.TestCase


# --------------------------------------------------------------------------------------------
# Batch == one page


def _setup(m: Machine, initialized: bool) -> Enclave:
    encl = build_enclave(m, size=0x20000, init=initialized)
    build_enclave(m, base=1 << 41, pool=encl.pool)
    return encl


_addr = st.one_of(
    st.integers(0, 63).map(lambda i: ("epc", i, 0)),
    st.integers(0, 63).map(lambda i: ("epc", i, 8)),
    st.just(("dram", 0, 0)),
)


def _phys(m: Machine, spec: tuple[str, int, int]) -> int:
    kind, i, off = spec
    return (m.epc.phys_of(i) + off) if kind == "epc" else 0x30_0000


@settings(max_examples=60, deadline=None)
@given(
    pages=st.lists(st.tuples(_addr, st.integers(-1, 40), st.booleans()), max_size=24),
    initialized=st.booleans(),
    flags=st.sampled_from(
        [
            secinfo_flags(PageType.PT_REG, RW),
            secinfo_flags(PageType.PT_REG, RWX),
            secinfo_flags(PageType.PT_TCS),
            secinfo_flags(PageType.PT_REG, 2),
        ]
    ),
    with_src=st.booleans(),
    secs_choice=st.sampled_from(["own", "other", "reg", "dram"]),
)
def test_eadd_batch_equals_one_page_path(
    pages: list[tuple[tuple[str, int, int], int, bool]],
    initialized: bool,
    flags: int,
    with_src: bool,
    secs_choice: str,
) -> None:
    ma, mb = small_machine(epc_pages=64), small_machine(epc_pages=64)
    ea, eb = _setup(ma, initialized), _setup(mb, initialized)

    def secs(m: Machine, e: Enclave) -> int:
        return {"own": e.secs_phys, "other": m.epc.phys_of(5), "reg": e.phys(0x1000), "dram": 0x30_0000}[
            secs_choice
        ]

    epcs_a = [_phys(ma, a) for a, _, _ in pages]
    lins = [(1 << 40) + slot * PAGE_SIZE + (16 if odd and slot == 7 else 0) for _, slot, odd in pages]
    srcs_a = srcs_b = None
    if with_src:
        srcs_a = [put(ma, bytes([i]) * 32 if nz else b"") for i, (_, _, nz) in enumerate(pages)]
        srcs_b = [put(mb, bytes([i]) * 32 if nz else b"") for i, (_, _, nz) in enumerate(pages)]
    got = eadd_batch(
        ma,
        0,
        secs(ma, ea),
        np.array(epcs_a, dtype=np.int64),
        np.array(lins, dtype=np.uint64),
        flags,
        None if srcs_a is None else np.array(srcs_a, dtype=np.int64),
    )
    want = one_page_eadds(mb, 0, secs(mb, eb), [_phys(mb, a) for a, _, _ in pages], lins, flags, srcs_b)
    assert got == want
    assert epc_snapshot(ma) == epc_snapshot(mb)
    assert validate_epcm(ma) == []


@settings(max_examples=60, deadline=None)
@given(pages=st.lists(st.tuples(_addr, st.integers(-1, 40)), max_size=24), initialized=st.booleans())
def test_eaug_batch_equals_one_page_path(
    pages: list[tuple[tuple[str, int, int], int]], initialized: bool
) -> None:
    ma, mb = small_machine(epc_pages=64), small_machine(epc_pages=64)
    ea, eb = _setup(ma, initialized), _setup(mb, initialized)
    lins = [(1 << 40) + slot * PAGE_SIZE for _, slot in pages]
    got = eaug_batch(
        ma,
        0,
        ea.secs_phys,
        np.array([_phys(ma, a) for a, _ in pages], dtype=np.int64),
        np.array(lins, dtype=np.int64),
    )
    want = one_page_eaugs(mb, 0, eb.secs_phys, [_phys(mb, a) for a, _ in pages], lins)
    assert got == want
    assert epc_snapshot(ma) == epc_snapshot(mb)


#: Consecutive EPC pages (the path that clears the EPCM through slices), in order or permuted.
_runs = st.tuples(st.integers(0, 63), st.integers(1, 64), st.randoms(use_true_random=False)).map(
    lambda t: (
        t[2].sample([("epc", i, 0) for i in range(t[0], min(64, t[0] + t[1]))], k=min(64, t[0] + t[1]) - t[0])
        if t[1] % 2
        else [("epc", i, 0) for i in range(t[0], min(64, t[0] + t[1]))]
    )
)


@settings(max_examples=80, deadline=None)
@given(pages=st.one_of(st.lists(_addr, max_size=40), _runs), active=st.booleans(), trim=st.booleans())
def test_eremove_batch_equals_one_page_path(
    pages: list[tuple[str, int, int]], active: bool, trim: bool
) -> None:
    ma, mb = small_machine(epc_pages=64), small_machine(epc_pages=64)
    for m in (ma, mb):
        encl = _setup(m, True)
        pool = encl.pool
        m.encls(0, EnclsLeaf.EPA, int(PageType.PT_VA), pool.alloc())
        m.tcs_threads[encl.index(0)] = "thread"
        if trim:
            m.encls(
                0,
                EnclsLeaf.EMODT,
                put(m, secinfo_flags(PageType.PT_TRIM).to_bytes(8, "little")),
                encl.phys(0x1000),
            )
        if active:
            encl.state.inside[2] = 0
            m.cpus[2].active_secs = encl.secs_index
    phys_a = [_phys(ma, a) for a in pages]
    got = eremove_batch(ma, 0, np.array(phys_a, dtype=np.int64))
    want = one_page_eremoves(mb, 0, [_phys(mb, a) for a in pages])
    assert [decode_batch_status(ma, p, int(s)) for p, s in zip(phys_a, got, strict=True)] == want
    assert epc_snapshot(ma) == epc_snapshot(mb)
    assert validate_epcm(ma) == []
