"""The schedule-exploration engine (sgxsim.sim.explore) on small programs built from the real primitives."""

from __future__ import annotations

import dataclasses
import gc
import json
import weakref
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgxsim.errors import InvalidArgument
from sgxsim.kernel.locking import Mutex, Srcu, WaitQueue
from sgxsim.kernel.printk import KernelLog
from sgxsim.rand import Rng
from sgxsim.sim.explore import (
    BUILTIN_CHECKS,
    ExploreResult,
    Invariant,
    Program,
    TraceStep,
    Violation,
    default_kernel_log,
    explore,
    format_violation,
    replay,
    schedule_seed,
)
from sgxsim.sim.sched import DeterministicScheduler

# --------------------------------------------------------------------------- racy counter


class CounterWorld:
    def __init__(self, sched: DeterministicScheduler, locked: bool, tasks: int, incs: int) -> None:
        self.sched = sched
        self.log = KernelLog(sched, prefix="counter")
        self.counter = 0
        self.completed = 0
        self.mutex = Mutex(sched, "counter") if locked else None
        for i in range(tasks):
            sched.spawn(self.worker, incs, name=f"inc{i}", cpu=i)

    def worker(self, incs: int) -> None:
        for _ in range(incs):
            if self.mutex is not None:
                self.mutex.lock()
            tmp = self.counter
            self.sched.charge(10)
            self.sched.preempt("between_read_and_write")
            self.counter = tmp + 1
            self.completed += 1
            self.log.pr_info("increment %d done", self.completed)
            if self.mutex is not None:
                self.mutex.unlock()


def counter_invariant(w: CounterWorld) -> str | None:
    if w.counter != w.completed:
        return f"counter is {w.counter} but {w.completed} increments completed"
    return None


def counter_program(locked: bool, tasks: int = 3, incs: int = 2) -> Program[CounterWorld]:
    return Program(
        name="locked-counter" if locked else "racy-counter",
        setup_fn=lambda sched, rng: CounterWorld(sched, locked, tasks, incs),
        invariants_fn=lambda w: [Invariant("counter-matches-increments", counter_invariant)],
    )


RACY = counter_program(locked=False)
LOCKED = counter_program(locked=True)


def test_racy_counter_violation_found_reported_and_replayed() -> None:
    res = explore(RACY, schedules=200, seed=1)
    assert not res.ok and len(res.violations) == 1
    v = res.violations[0]
    assert v.kind == "invariant" and v.invariant == "counter-matches-increments"
    assert v.message.startswith("counter is ") and "increments completed" in v.message
    assert res.schedules_run == v.schedule + 1  # stopped at the first violating schedule
    assert v.seed == schedule_seed(1, v.schedule)
    assert v.strategy == "random" and v.pct_depth is None and v.pct_steps is None
    assert not v.at_end and len(v.choices) == v.step
    # The trace ends at the detecting step, with simulated times that never go back.
    assert v.trace[-1].step == v.step and v.trace[-1].task == v.choices[-1]
    assert [t.task for t in v.trace] == list(v.choices[-len(v.trace) :])
    assert v.task == v.choices[-2]  # the task that ran last wrote the stale value
    assert any(t.time_ns > 0 for t in v.trace)
    assert v.log_tail and "increment" in v.log_tail[-1]
    # Replay hits the identical violation at the identical step.
    again = replay(RACY, v)
    assert again.replay and again.schedules_run == 1
    assert again.violations == (v,)
    assert again.violations[0].same_as(v)


def test_racy_counter_is_violated_only_under_some_interleavings() -> None:
    res = explore(RACY, schedules=60, seed=3, stop_on_first=False)
    assert 0 < len(res.violations) < res.schedules_run == 60
    assert res.completed == 60 - len(res.violations)
    assert len({v.seed for v in res.violations}) == len(res.violations)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32))
def test_every_found_violation_replays_exactly(seed: int) -> None:
    res = explore(RACY, schedules=30, seed=seed, strategy="both")
    for v in res.violations:
        assert replay(RACY, v).violations == (v,)


def test_locked_counter_500_schedules_clean_with_exact_check_counts() -> None:
    res = explore(LOCKED, schedules=500, seed=7, strategy="both")
    assert res.ok, format_violation(res.violations[0])
    assert res.schedules_run == res.completed == 500
    # Checked after every step and once more on every final state.
    assert res.check_counts["counter-matches-increments"] == res.steps_total + 500
    assert res.check_counts["no-unexpected-warn"] == res.steps_total + 500
    assert res.max_schedule_steps <= res.steps_total


# --------------------------------------------------------------------------- SRCU epc lock


class EpcLockWorld:
    """The RFC's EPC lock: readers initialize pages inside an SRCU read section unless the
    flag is set; the writer sets the flag, waits for readers, zaps, then unlocks."""

    def __init__(self, sched: DeterministicScheduler, buggy: bool) -> None:
        self.sched = sched
        self.log = KernelLog(sched)
        self.srcu = Srcu(sched, "sgx_lock_epc_srcu")
        self.locked = False
        self.synced = False
        self.inits = 0
        self.inits_at_sync = 0
        self.last_init = ""
        self.ebusy = 0
        reader = self.buggy_reader if buggy else self.reader
        for i in range(2):
            sched.spawn(reader, name=f"ioctl{i}", cpu=i)
        sched.spawn(self.writer, name="ucode", cpu=3)

    def init_page(self) -> None:
        self.sched.preempt("encls:EADD")
        self.sched.charge(500)
        self.inits += 1
        self.last_init = self.sched.current.name if self.sched.current else "?"

    def reader(self) -> None:
        for _ in range(3):
            idx = self.srcu.srcu_read_lock()
            if self.locked:
                self.ebusy += 1
            else:
                self.init_page()
            self.srcu.srcu_read_unlock(idx)

    def buggy_reader(self) -> None:
        for _ in range(3):
            if self.locked:  # checked outside the read section: the writer cannot wait for us
                self.ebusy += 1
                continue
            idx = self.srcu.srcu_read_lock()
            self.init_page()
            self.srcu.srcu_read_unlock(idx)

    def writer(self) -> None:
        self.sched.preempt("late_load")
        self.locked = True
        self.srcu.synchronize_srcu()
        self.synced = True
        self.inits_at_sync = self.inits
        self.log.pr_info("EPC locked, zapping")
        for i in range(3):
            self.sched.preempt(f"encls:EREMOVE:{i}")
        self.synced = False
        self.locked = False
        self.log.pr_info("EPC unlocked")
        self.sched.preempt("unlocked")


def no_init_while_locked(w: EpcLockWorld) -> str | None:
    if w.synced and w.inits != w.inits_at_sync:
        return f"EPC page initialized by {w.last_init} between synchronize_srcu() returning and unlock"
    return None


def epc_lock_program(buggy: bool) -> Program[EpcLockWorld]:
    return Program(
        name="epc-lock-buggy" if buggy else "epc-lock",
        setup_fn=lambda sched, rng: EpcLockWorld(sched, buggy),
        invariants_fn=lambda w: [Invariant("no-init-while-locked", no_init_while_locked)],
        final_checks_fn=lambda w: [
            Invariant(
                "unlocked", lambda w: None if not w.locked and not w.srcu.reader_count else "still locked"
            )
        ],
    )


def test_srcu_epc_lock_correct_reader_never_violates() -> None:
    res = explore(epc_lock_program(buggy=False), schedules=300, seed=11, strategy="both")
    assert res.ok, format_violation(res.violations[0])
    assert res.check_counts["unlocked"] == 300
    assert res.check_counts["no-init-while-locked"] == res.steps_total + 300


def test_srcu_epc_lock_flag_checked_outside_read_section_is_found() -> None:
    prog = epc_lock_program(buggy=True)
    res = explore(prog, schedules=300, seed=11, strategy="both")
    assert not res.ok
    v = res.violations[0]
    assert v.invariant == "no-init-while-locked" and v.task in ("ioctl0", "ioctl1")
    assert f"initialized by {v.task}" in v.message
    assert any(line.endswith("EPC locked, zapping") for line in v.log_tail)
    assert replay(prog, v).violations == (v,)
    text = format_violation(v)
    assert "no-init-while-locked" in text and "<- detected here" in text and "EPC locked" in text


# --------------------------------------------------------------------------- deadlock, step limit, exceptions


def abba_setup(sched: DeterministicScheduler, rng: Rng) -> dict[str, Any]:
    a, b = Mutex(sched, "A"), Mutex(sched, "B")

    def ab(first: Mutex, second: Mutex) -> None:
        with first:
            sched.preempt("holding_first")
            with second:
                sched.charge(1)

    sched.spawn(ab, a, b, name="t_ab", cpu=0)
    sched.spawn(ab, b, a, name="t_ba", cpu=1)
    return {}


ABBA = Program(name="abba", setup_fn=abba_setup)


def test_deadlock_is_a_violation_naming_the_blocked_tasks() -> None:
    res = explore(ABBA, schedules=100, seed=2, stop_on_first=False)
    assert 0 < len(res.violations) < 100
    v = res.violations[0]
    assert v.kind == "deadlock" and v.invariant == "no-deadlock" and v.at_end
    assert v.message.startswith("deadlock after")
    assert "'t_ab' waits on mutex:B" in v.message and "'t_ba' waits on mutex:A" in v.message
    assert replay(ABBA, v).violations == (v,)
    assert "after the run stopped" in format_violation(v)


def spinner_setup(sched: DeterministicScheduler, rng: Rng) -> dict[str, bool]:
    world = {"flag": False}

    def spin() -> None:
        while not world["flag"]:
            sched.preempt("spin")

    sched.spawn(spin, name="spinner")
    sched.spawn(lambda: None, name="quick")
    return world


def test_non_terminating_schedule_is_a_step_limit_violation() -> None:
    prog = Program(name="spinner", setup_fn=spinner_setup)
    res = explore(prog, schedules=5, seed=0, max_steps=200)
    v = res.violations[0]
    assert v.kind == "step-limit" and v.invariant == "terminates" and v.step == 200
    assert "within 200 steps" in v.message and "spinner runnable at spin" in v.message
    assert replay(prog, v).violations == (v,)


def test_task_exception_is_a_violation_naming_the_task() -> None:
    def setup(sched: DeterministicScheduler, rng: Rng) -> Mutex:
        m = Mutex(sched, "m")

        def bad() -> None:
            sched.preempt("before")
            m.unlock()  # never locked: DEBUG_MUTEXES would complain

        sched.spawn(lambda: sched.preempt("x"), name="ok")
        sched.spawn(bad, name="bad")
        return m

    prog = Program(name="bad-unlock", setup_fn=setup)
    v = explore(prog, schedules=3, seed=0).violations[0]
    assert v.kind == "exception" and v.invariant == "no-task-exception" and v.task == "bad"
    assert "ModelInvariantError" in v.message and "mutex_unlock of unlocked mutex 'm'" in v.message
    assert replay(prog, v).violations == (v,)


def test_raising_check_is_reported_against_that_check() -> None:
    def boom(w: object) -> str | None:
        raise KeyError("missing")

    prog = Program(
        name="boom",
        setup_fn=lambda sched, rng: sched.spawn(lambda: None, name="t"),
        invariants_fn=lambda w: [Invariant("fine", lambda w: None), Invariant("boom", boom)],
    )
    res = explore(prog, schedules=1)
    v = res.violations[0]
    assert (v.kind, v.invariant, v.step, v.task) == ("exception", "boom", 1, None)
    assert "KeyError" in v.message
    assert res.check_counts == {"fine": 1, "boom": 1, "no-unexpected-warn": 0}


# --------------------------------------------------------------------------- WARN


class WarnWorld:
    def __init__(self, sched: DeterministicScheduler) -> None:
        self.log = KernelLog(sched)
        self.sched = sched
        sched.spawn(self.warner, name="warner", cpu=1)
        sched.spawn(lambda: sched.preempt("other"), name="other")

    def warner(self) -> None:
        self.sched.preempt("before_warn")
        self.log.WARN(True, "EPC page %d still in use", 7, site="sgx_zap_pages")
        self.sched.preempt("after_warn")


def warn_program(expected: int | None) -> Program[WarnWorld]:
    # The default log finder picks up ``world.log``.
    return Program(name="warner", setup_fn=lambda sched, rng: WarnWorld(sched), expected_warns=expected)


def test_unexpected_warn_is_a_violation_with_the_warning_in_the_log_tail() -> None:
    prog = warn_program(expected=0)
    res = explore(prog, schedules=5, seed=4)
    v = res.violations[0]
    assert v.kind == "warn" and v.invariant == "no-unexpected-warn" and v.task == "warner"
    assert v.message == (
        "1 kernel WARN(s), 0 expected; last: WARNING at sgx_zap_pages (task warner): EPC page 7 still in use"
    )
    assert any("WARNING: CPU: 1 Comm: warner at sgx_zap_pages" in line for line in v.log_tail)
    assert replay(prog, v).violations == (v,)


@pytest.mark.parametrize("expected", [1, None])
def test_expected_warn_is_not_a_violation(expected: int | None) -> None:
    res = explore(warn_program(expected), schedules=20, seed=4)
    assert res.ok and res.completed == 20
    assert ("no-unexpected-warn" in res.check_counts) == (expected is not None)


# --------------------------------------------------------------------------- final checks, check_every


class LeakWorld:
    def __init__(self, sched: DeterministicScheduler) -> None:
        self.total = 8
        self.free = 8
        self.used = 0
        self.steps_seen: list[int] = []
        self.sched = sched
        for i in range(3):
            sched.spawn(self.proc, i, name=f"proc{i}", cpu=i)

    def proc(self, i: int) -> None:
        self.free -= 2
        self.used += 2
        self.sched.preempt("allocated")
        self.used -= 2
        if i != 1:  # proc1 forgets to put its pages back on the free list
            self.free += 2


def leak_program() -> Program[LeakWorld]:
    def conserved(w: LeakWorld) -> str | None:
        w.steps_seen.append(w.sched.steps)
        return None

    return Program(
        name="leak",
        setup_fn=lambda sched, rng: LeakWorld(sched),
        invariants_fn=lambda w: [Invariant("seen", conserved)],
        final_checks_fn=lambda w: [
            Invariant(
                "epc-accounted",
                lambda w: (
                    None
                    if w.free + w.used == w.total
                    else f"free {w.free} + used {w.used} != total {w.total}"
                ),
            ),
        ],
    )


def test_final_check_runs_once_after_completion_and_reports_at_end() -> None:
    prog = leak_program()
    res = explore(prog, schedules=4, seed=0, stop_on_first=False)
    assert len(res.violations) == 4 and res.completed == 0
    v = res.violations[0]
    assert (v.kind, v.invariant, v.at_end) == ("final", "epc-accounted", True)
    assert v.message == "free 6 + used 0 != total 8"
    assert res.check_counts["epc-accounted"] == 4
    assert replay(prog, v).violations == (v,)


def test_invariants_see_every_step_and_the_final_state() -> None:
    seen: list[list[int]] = []
    base = leak_program()
    prog = dataclasses.replace(base, setup_fn=lambda sched, rng: _remember(LeakWorld(sched), seen))
    res = explore(prog, schedules=3, seed=5, stop_on_first=False)
    for steps in seen:
        n = steps[-1]
        assert steps == [*range(1, n + 1), n]  # steps 1..n in the hook, then the final state
    assert sum(len(s) for s in seen) == res.steps_total + 3


def _remember(world: LeakWorld, box: list[list[int]]) -> LeakWorld:
    box.append(world.steps_seen)
    return world


def test_check_every_checks_fewer_steps_and_replays() -> None:
    full = explore(RACY, schedules=40, seed=9, stop_on_first=False)
    sparse = explore(RACY, schedules=40, seed=9, stop_on_first=False, check_every=3)
    assert sparse.check_counts["counter-matches-increments"] < full.check_counts["counter-matches-increments"]
    for v in sparse.violations:
        assert v.check_every == 3
        assert v.at_end or v.step % 3 == 0
        assert replay(RACY, v).violations == (v,)


# --------------------------------------------------------------------------- PCT


class Depth2World:
    """``user`` misbehaves only if it runs its whole operation while ``init`` sits in a one-step
    window: one preemption of init at the right step (depth 2), rare for a random walk."""

    def __init__(self, sched: DeterministicScheduler) -> None:
        self.sched = sched
        self.window = False
        self.bug = False
        sched.spawn(self.init, name="init", cpu=0)
        sched.spawn(self.user, name="user", cpu=1)

    def init(self) -> None:
        for i in range(20):
            self.sched.preempt(f"init{i}")
            if i == 10:
                self.window = True
            elif i == 11:
                self.window = False

    def user(self) -> None:
        self.sched.preempt("user_start")
        first = self.window
        for i in range(10):
            self.sched.preempt(f"user{i}")
        if first and self.window:
            self.bug = True


DEPTH2 = Program(
    name="depth2",
    setup_fn=lambda sched, rng: Depth2World(sched),
    invariants_fn=lambda w: [
        Invariant("no-torn-window", lambda w: "user saw the window twice" if w.bug else None)
    ],
)


def test_pct_finds_a_depth_two_bug_that_random_walk_misses() -> None:
    pct = explore(DEPTH2, schedules=300, seed=0, strategy="pct", pct_depth=2, stop_on_first=False)
    rw = explore(DEPTH2, schedules=300, seed=0, strategy="random", stop_on_first=False)
    assert len(pct.violations) >= 3
    assert len(rw.violations) < len(pct.violations)
    v = pct.violations[0]
    assert v.strategy == "pct" and v.pct_depth == 2 and v.pct_steps is not None
    assert v.task == "user"
    assert replay(DEPTH2, v).violations == (v,)
    assert "pct(depth=2" in format_violation(v)


def test_both_alternates_strategies() -> None:
    res = explore(RACY, schedules=60, seed=1, strategy="both", stop_on_first=False)
    strategies = {v.strategy for v in res.violations}
    assert strategies == {"random", "pct"}
    assert all((v.schedule % 2 == 0) == (v.strategy == "random") for v in res.violations)


# --------------------------------------------------------------------------- determinism, rendering, budget


def test_same_seed_same_result_dict() -> None:
    def run(seed: int) -> dict[str, Any]:
        return explore(RACY, schedules=40, seed=seed, strategy="both", stop_on_first=False).to_dict()

    a, b = run(21), run(21)
    assert a == b
    assert json.loads(json.dumps(a)) == a  # JSON-able
    assert run(22) != a


def test_violation_dict_round_trip_and_validation() -> None:
    v = explore(RACY, schedules=100, seed=1).violations[0]
    d = json.loads(json.dumps(v.to_dict()))
    back = Violation.from_dict(d)
    assert back == v and isinstance(back.trace[0], TraceStep)
    assert replay(RACY, back).violations == (v,)
    for key, bad in [("kind", "oops"), ("step", "7"), ("choices", [1]), ("at_end", 1), ("strategy", "x")]:
        with pytest.raises(InvalidArgument, match=key if key != "choices" else "choices"):
            Violation.from_dict({**d, key: bad})
    with pytest.raises(InvalidArgument):
        Violation.from_dict([])  # type: ignore[arg-type]


def test_replay_divergence_is_reported() -> None:
    v = explore(RACY, schedules=100, seed=1).violations[0]
    tampered = dataclasses.replace(v, choices=("nobody", *v.choices[1:]))
    res = replay(RACY, tampered)
    (d,) = res.violations
    assert d.kind == "divergence" and d.invariant == "replay" and "'nobody'" in d.message
    truncated = dataclasses.replace(v, choices=v.choices[:-1])
    (d,) = replay(RACY, truncated).violations
    assert d.kind == "divergence" and "ran out" in d.message
    with pytest.raises(InvalidArgument, match="racy-counter"):
        replay(LOCKED, v)


def test_format_violation_is_readable() -> None:
    v = explore(RACY, schedules=100, seed=1, trace_len=5, log_tail=3).violations[0]
    text = format_violation(v)
    lines = text.splitlines()
    assert lines[0] == f"VIOLATION [invariant] counter-matches-increments: {v.message}"
    assert f"seed {v.seed}" in lines[1] and f"schedule {v.schedule}" in lines[1]
    assert f"step {v.step}" in lines[2] and repr(v.task) in lines[2]
    assert lines[3].startswith(f"  replay: {len(v.choices)} choices: ")
    assert len(v.trace) == 5 and len(v.log_tail) == 3
    assert sum("<- detected here" in line for line in lines) == 1
    assert "kernel log (last 3 lines):" in text


def test_summary_and_result_fields() -> None:
    res = explore(RACY, schedules=100, seed=1)
    assert isinstance(res, ExploreResult)
    assert "1 violation(s); first: counter-matches-increments" in res.summary()
    assert explore(LOCKED, schedules=2).summary().endswith("no violation")


def test_step_budget_stops_starting_schedules() -> None:
    res = explore(LOCKED, schedules=1000, seed=0, time_budget_steps=100)
    assert res.budget_exhausted and res.schedules_run < 1000
    assert res.steps_total >= 100
    assert res.steps_total - res.max_schedule_steps < 100  # the last schedule started under budget


def test_worlds_are_freed_after_each_schedule() -> None:
    refs: list[weakref.ref[Any]] = []

    def setup(sched: DeterministicScheduler, rng: Rng) -> CounterWorld:
        w = CounterWorld(sched, locked=False, tasks=3, incs=2)
        refs.append(weakref.ref(w))
        return w

    prog = dataclasses.replace(RACY, setup_fn=setup)
    res = explore(prog, schedules=30, seed=1, stop_on_first=False)
    assert res.violations  # some schedules stopped with suspended tasks...
    gc.collect()
    assert all(r() is None for r in refs)  # ...which close() unwound


def test_world_randomness_comes_from_the_schedule_seed() -> None:
    draws: list[int] = []

    def setup(sched: DeterministicScheduler, rng: Rng) -> None:
        draws.append(rng.stream("workload").randrange(1 << 30))
        sched.spawn(lambda: None, name="t")

    prog: Program[None] = Program(name="draws", setup_fn=setup)
    explore(prog, schedules=3, seed=8)
    assert draws == [Rng(schedule_seed(8, i)).stream("workload").randrange(1 << 30) for i in range(3)]


def test_default_kernel_log_finder() -> None:
    s = DeterministicScheduler()
    log = KernelLog(s)

    class K:
        pass

    k = K()
    k.log = log  # type: ignore[attr-defined]
    w = K()
    w.kernel = k  # type: ignore[attr-defined]
    assert default_kernel_log(k) is log and default_kernel_log(w) is log
    assert default_kernel_log(object()) is None


class NoWarnsAttr:
    name = "incomplete"

    def setup(self, sched: DeterministicScheduler, rng: Rng) -> None:
        return None

    def invariants(self, world: None) -> list[Invariant[None]]:
        return []

    final_checks = invariants

    def warn_count(self, world: None) -> int:
        return 0

    def kernel_log(self, world: None) -> None:
        return None


BAD_CALLS: list[tuple[str, Callable[[], object]]] = [
    ("schedules", lambda: explore(RACY, schedules=-1)),
    ("strategy", lambda: explore(RACY, schedules=1, strategy="dfs")),
    ("pct_depth", lambda: explore(RACY, schedules=1, pct_depth=0)),
    ("check_every", lambda: explore(RACY, schedules=1, check_every=0)),
    ("max_steps", lambda: explore(RACY, schedules=1, max_steps=True)),
    ("seed", lambda: explore(RACY, schedules=1, seed=-3)),
    ("time_budget_steps", lambda: explore(RACY, schedules=1, time_budget_steps=0)),
    ("setup", lambda: explore(object(), schedules=1)),  # type: ignore[arg-type]
    ("expected_warns", lambda: Program(name="x", setup_fn=abba_setup, expected_warns=-1)),
    ("name", lambda: Program(name="", setup_fn=abba_setup)),
    ("Violation", lambda: replay(RACY, "v")),  # type: ignore[arg-type]
    ("stop_on_first", lambda: explore(RACY, schedules=1, stop_on_first=1)),  # type: ignore[arg-type]
    ("expected_warns", lambda: explore(NoWarnsAttr(), schedules=1)),  # type: ignore[arg-type]
]


@pytest.mark.parametrize("what,call", BAD_CALLS, ids=[w for w, _ in BAD_CALLS])
def test_bad_arguments_raise_invalid_argument(what: str, call: Callable[[], object]) -> None:
    with pytest.raises(InvalidArgument, match=what):
        call()


def test_invariant_names_must_be_unique_and_not_builtin() -> None:
    for names in (["a", "a"], ["no-deadlock"]):

        def invariants(w: CounterWorld, names: list[str] = names) -> list[Invariant[CounterWorld]]:
            return [Invariant(n, counter_invariant) for n in names]

        prog = dataclasses.replace(RACY, invariants_fn=invariants)
        with pytest.raises(InvalidArgument, match="used twice or reserved"):
            explore(prog, schedules=1)
    assert "no-unexpected-warn" in BUILTIN_CHECKS


def test_setup_error_propagates_with_the_schedule_named() -> None:
    def setup(sched: DeterministicScheduler, rng: Rng) -> None:
        sched.spawn(lambda: None, name="t")
        raise ValueError("no EPC configured")

    with pytest.raises(ValueError, match="no EPC configured") as info:
        explore(Program(name="broken", setup_fn=setup), schedules=2, seed=1)
    assert f"schedule 0 (seed {schedule_seed(1, 0)})" in "".join(info.value.__notes__)


class DaemonWorld:
    """A ksgxd-like daemon that sleeps on a wait queue forever; the user task finishes."""

    def __init__(self, sched: DeterministicScheduler) -> None:
        self.sched = sched
        self.work = 0
        self.done = 0
        self.wq = WaitQueue(sched, "ksgxd_waitq")
        sched.spawn(self.ksgxd, name="ksgxd", daemon=True)
        sched.spawn(self.user, name="user")

    def ksgxd(self) -> None:
        while True:
            self.wq.wait_event(lambda: self.work > self.done)
            self.done += 1
            self.sched.preempt("reclaim")

    def user(self) -> None:
        for _ in range(3):
            self.work += 1
            self.wq.wake_up()
            self.sched.preempt("kick")


def test_daemons_do_not_keep_a_schedule_alive_and_are_unwound() -> None:
    prog = Program(name="daemon", setup_fn=lambda sched, rng: DaemonWorld(sched))
    res = explore(prog, schedules=50, seed=3)
    assert res.ok and res.completed == 50


def test_a_program_class_satisfies_the_protocol() -> None:
    """Any object with the protocol's members works, not only Program."""

    class Racy:
        name = "class-racy"
        expected_warns = 0

        def setup(self, sched: DeterministicScheduler, rng: Rng) -> CounterWorld:
            return CounterWorld(sched, locked=False, tasks=2, incs=2)

        def invariants(self, world: CounterWorld) -> list[Invariant[CounterWorld]]:
            return [Invariant("counter", counter_invariant)]

        def final_checks(self, world: CounterWorld) -> list[Invariant[CounterWorld]]:
            return []

        def warn_count(self, world: CounterWorld) -> int:
            return world.log.warn_count

        def kernel_log(self, world: CounterWorld) -> KernelLog:
            return world.log

    prog = Racy()
    v = explore(prog, schedules=200, seed=5).violations[0]
    assert v.program == "class-racy"
    assert replay(prog, v).violations == (v,)
