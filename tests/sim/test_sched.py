"""The deterministic scheduler (sgxsim.sim.sched) and simulated clock (sgxsim.sim.clock)."""

# Task bodies are closures defined and run inside one loop iteration, so late binding is intended.
# ruff: noqa: B023

from __future__ import annotations

import gc
import math
import random
import weakref
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgxsim.errors import InvalidArgument, ModelInvariantError
from sgxsim.kernel.locking import Completion, Mutex, Srcu, WaitQueue
from sgxsim.rand import Rng
from sgxsim.sim.clock import SimClock, format_ns
from sgxsim.sim.sched import (
    DeterministicScheduler,
    Pct,
    RandomWalk,
    ReplayDivergence,
    ReplayStrategy,
    RoundRobin,
    Strategy,
    Task,
    TaskState,
    TimeOrdered,
    TraceEntry,
    format_trace,
)

# --------------------------------------------------------------------------- a small workload


def workload(s: DeterministicScheduler, log: list[str] | None = None) -> Callable[[], list[str]]:
    """Three tasks sharing a mutex and an SRCU flag, with charges and sleeps; returns an event log."""
    events: list[str] = [] if log is None else log
    m = Mutex(s, "encl")
    srcu = Srcu(s, "epc_srcu")
    flag = {"locked": False}

    def ioctl(name: str) -> None:
        for i in range(3):
            idx = srcu.srcu_read_lock()
            if flag["locked"]:
                events.append(f"{name}:EBUSY")
            else:
                with m:
                    s.charge(100 + i)
                    events.append(f"{name}:add{i}")
            srcu.srcu_read_unlock(idx)

    def updater() -> None:
        s.sleep_ns(150)
        flag["locked"] = True
        srcu.synchronize_srcu()
        events.append("updater:locked")
        with m:
            s.charge(1000)
        flag["locked"] = False
        srcu.synchronize_srcu()
        events.append("updater:unlocked")

    s.spawn(ioctl, "a", name="a", cpu=0)
    s.spawn(ioctl, "b", name="b", cpu=1)
    s.spawn(updater, name="updater", cpu=2)
    return lambda: events


def run_workload(strategy: Strategy) -> tuple[list[TraceEntry], list[str], int]:
    s = DeterministicScheduler(strategy)
    events = workload(s)
    result = s.run()
    assert result.completed, result.describe()
    return s.schedule, events(), result.now_ns


# --------------------------------------------------------------------------- determinism and replay


@pytest.mark.parametrize(
    "make",
    [
        lambda seed: RandomWalk(random.Random(seed)),
        lambda seed: Pct(random.Random(seed), depth=3, expected_steps=60),
    ],
    ids=["random-walk", "pct"],
)
def test_same_seed_same_trace(make: Callable[[int], Strategy]) -> None:
    traces = set()
    for seed in range(15):
        first = run_workload(make(seed))
        second = run_workload(make(seed))
        assert first == second
        traces.add(tuple(first[0]))
    assert len(traces) > 5  # different seeds explore different schedules


def test_replay_reproduces_a_random_walk_trace() -> None:
    for seed in range(10):
        s = DeterministicScheduler(RandomWalk(random.Random(seed)))
        events = workload(s)
        assert s.run().completed
        replayed = run_workload(ReplayStrategy(s.choices()))
        assert replayed == (s.schedule, events(), s.clock.now_ns())


def test_replay_divergence_and_exhaustion() -> None:
    s = DeterministicScheduler(RandomWalk(random.Random(3)))
    workload(s)
    s.run()
    choices = s.choices()
    with pytest.raises(ReplayDivergence, match="runnable are"):
        run_workload(ReplayStrategy(["nobody", *choices]))
    with pytest.raises(ReplayDivergence, match="ran out"):
        run_workload(ReplayStrategy(choices[:5]))
    # A fallback strategy takes over where the recorded prefix ends.
    trace, _, _ = run_workload(ReplayStrategy(choices[:5], fallback=RoundRobin()))
    assert [e.task for e in trace[:5]] == choices[:5]
    with pytest.raises(InvalidArgument):
        ReplayStrategy("abc")


def test_trace_names_task_and_resume_point() -> None:
    s = DeterministicScheduler(RoundRobin())
    m = Mutex(s, "m")

    def t() -> None:
        with m:
            s.preempt("cs")

    s.spawn(t, name="x")
    s.spawn(t, name="y")
    assert s.run().completed
    assert s.schedule == [
        (1, "x", "start"),
        (2, "y", "start"),
        (3, "x", "mutex_lock:m"),  # x takes m
        (4, "y", "mutex_lock:m"),  # x holds m: y goes to sleep on it
        (5, "x", "cs"),  # x releases m and wakes y
        (6, "y", "wait:mutex:m"),  # y takes m
        (7, "x", "mutex_unlock:m"),  # x finishes
        (8, "y", "cs"),
        (9, "y", "mutex_unlock:m"),
    ]
    assert format_trace(s.schedule).splitlines()[2] == "     3  x  mutex_lock:m"


@given(
    programs=st.lists(
        st.lists(
            st.sampled_from(["preempt", "lock", "charge", "sleep", "srcu", "signal"]), min_size=1, max_size=6
        ),
        min_size=1,
        max_size=4,
    ),
    seed=st.integers(0, 2**32),
)
@settings(max_examples=60, deadline=None)
def test_any_program_replays_exactly(programs: list[list[str]], seed: int) -> None:
    def build(strategy: Strategy) -> tuple[DeterministicScheduler, list[tuple[str, int, int]]]:
        s = DeterministicScheduler(strategy)
        m = Mutex(s, "m")
        srcu = Srcu(s, "srcu")
        log: list[tuple[str, int, int]] = []
        tasks: list[Task] = []

        def body(name: str, ops: list[str]) -> None:
            for i, op in enumerate(ops):
                if op == "preempt":
                    s.preempt(f"p{i}")
                elif op == "lock":
                    with m:
                        s.charge(7)
                elif op == "charge":
                    s.charge(13 * (i + 1))
                elif op == "sleep":
                    s.sleep_ns(50, interruptible=True)
                elif op == "srcu":
                    srcu.synchronize_srcu() if i % 2 else srcu.srcu_read_unlock(srcu.srcu_read_lock())
                else:
                    tasks[(i + 1) % len(tasks)].send_signal()
                log.append((name, i, s.now_ns()))

        for k, ops in enumerate(programs):
            tasks.append(s.spawn(body, f"t{k}", ops, name=f"t{k}", cpu=k))
        return s, log

    s1, log1 = build(RandomWalk(random.Random(seed)))
    r1 = s1.run()
    assert r1.completed
    s2, log2 = build(RandomWalk(random.Random(seed)))
    assert s2.run() == r1
    s3, log3 = build(ReplayStrategy(s1.choices()))
    assert s3.run() == r1
    assert s1.schedule == s2.schedule == s3.schedule
    assert log1 == log2 == log3
    times = [t for _, _, t in log1]
    assert times == sorted(times)  # the global clock never goes back


# --------------------------------------------------------------------------- deadlock, errors, limits


def abba(s: DeterministicScheduler) -> None:
    a = Mutex(s, "A")
    b = Mutex(s, "B")

    def t1() -> None:
        with a, b:
            pass

    def t2() -> None:
        with b, a:
            pass

    s.spawn(t1, name="t1")
    s.spawn(t2, name="t2")


def test_abba_deadlock_is_detected_and_reported() -> None:
    s = DeterministicScheduler(RoundRobin())
    abba(s)
    result = s.run()
    assert result.deadlocked and not result.completed and not result.step_limit_hit
    assert set(result.blocked) == {("t1", "mutex:B", "wait:mutex:B"), ("t2", "mutex:A", "wait:mutex:A")}
    assert result.describe() == f"deadlock after {result.total_steps} steps: t1 on mutex:B, t2 on mutex:A"
    s.close()
    assert all(t.state is TaskState.KILLED for t in s.tasks)


def test_random_walk_finds_abba_deadlock_only_sometimes() -> None:
    outcomes = set()
    for seed in range(40):
        with DeterministicScheduler(RandomWalk(random.Random(seed))) as s:
            abba(s)
            result = s.run()
            outcomes.add(result.deadlocked)
            assert result.deadlocked != result.completed
    assert outcomes == {True, False}


def test_task_exception_propagates_with_task_name() -> None:
    s = DeterministicScheduler(RoundRobin())

    def ok() -> None:
        s.preempt("x")

    def bad() -> None:
        s.preempt("before")
        raise KeyError("boom")

    s.spawn(ok, name="ok")
    t = s.spawn(bad, name="ksgxd")
    with pytest.raises(KeyError, match="boom") as info:
        s.run()
    assert any("'ksgxd'" in note and "'before'" in note for note in info.value.__notes__)
    assert t.state is TaskState.FAILED and isinstance(t.exception, KeyError)
    assert s.run().completed  # the others can still finish


def test_on_step_sees_every_decision_and_can_stop_the_run() -> None:
    s = DeterministicScheduler(RoundRobin())
    abba(s)
    seen: list[tuple[int, str]] = []
    s.on_step = lambda step, task: seen.append((step, task.name))
    s.run()
    assert seen == [(e.step, e.task) for e in s.schedule]

    s2 = DeterministicScheduler(RandomWalk(random.Random(1)))
    workload(s2)

    def invariant(step: int, task: Task) -> None:
        if step == 7:
            raise AssertionError(f"invariant broken at step {step}")

    s2.on_step = invariant
    with pytest.raises(AssertionError, match="step 7"):
        s2.run()
    assert s2.steps == 7 and len(s2.schedule) == 7


def test_step_limit_then_continue_gives_the_uninterrupted_schedule() -> None:
    full, _, _ = run_workload(RandomWalk(random.Random(11)))
    s = DeterministicScheduler(RandomWalk(random.Random(11)))
    workload(s)
    first = s.run(max_steps=5)
    assert first.step_limit_hit and first.steps == 5 and not first.completed
    second = s.run(max_steps=3)
    assert second.step_limit_hit and second.total_steps == 8
    rest = s.run()
    assert rest.completed and rest.total_steps == len(full)
    assert s.schedule == full
    with pytest.raises(InvalidArgument):
        s.run(max_steps=-1)


def test_daemon_does_not_keep_the_run_alive() -> None:
    s = DeterministicScheduler(RoundRobin())
    wq = WaitQueue(s, "ksgxd_waitq")
    work = {"n": 0, "stop": False}

    def ksgxd() -> None:
        while True:
            wq.wait_event(lambda: work["n"] > 0 or work["stop"])
            if work["stop"]:
                return
            work["n"] -= 1

    def user() -> None:
        for _ in range(3):
            work["n"] += 1
            wq.wake_up()
            s.preempt("after wake")

    d = s.spawn(ksgxd, name="ksgxd", daemon=True)
    s.spawn(user, name="user")
    result = s.run()
    assert result.completed and work["n"] == 0
    assert d.state is TaskState.BLOCKED
    s.close()
    assert d.state is TaskState.KILLED


def test_spawn_validation_and_spawn_from_a_task() -> None:
    s = DeterministicScheduler(RoundRobin())
    s.spawn(lambda: None, name="x")
    with pytest.raises(InvalidArgument, match="already used"):
        s.spawn(lambda: None, name="x")
    with pytest.raises(InvalidArgument):
        s.spawn(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        s.spawn(lambda: None, cpu=-1)
    with pytest.raises(InvalidArgument):
        DeterministicScheduler(RoundRobin, clock=None)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        Pct(random.Random(0), depth=0, expected_steps=10)
    with pytest.raises(InvalidArgument):
        Pct(random.Random(0), depth=5, expected_steps=2)
    with pytest.raises(InvalidArgument):
        RandomWalk(0)  # type: ignore[arg-type]

    children: list[Task] = []

    def parent() -> None:
        s.charge(500)
        children.append(s.spawn(lambda: s.charge(1), name="child", cpu=1))

    s.spawn(parent, name="parent")
    assert s.run().completed
    assert children[0].state is TaskState.DONE and children[0].local_ns == 501
    assert s.find_task("child") is children[0] and s.find_task("nope") is None
    assert [t.name for t in s.tasks] == ["x", "parent", "child"]


def test_blocking_outside_any_task_is_a_deadlock() -> None:
    s = DeterministicScheduler()
    m = Mutex(s, "m")
    m.lock()  # setup code outside run() may take uncontended locks
    assert s.current_task() is None and m.owner is None and m.held_by_current()
    with pytest.raises(ModelInvariantError, match="recursive"):
        m.lock()
    with pytest.raises(ModelInvariantError, match="deadlock: code outside any task"):
        WaitQueue(s, "wq").wait_event(lambda: False)
    m.unlock()
    s.charge(10)
    assert s.sleep_ns(5) is True
    assert s.now_ns() == 15
    assert s.stop_machine(lambda: "ran") == "ran"


def test_close_frees_a_stopped_scheduler() -> None:
    """Suspended greenlets pin their scheduler (greenlet frames are invisible to the cycle
    collector); close() ends them so a deadlocked run does not leak."""
    refs = []
    for seed in range(5):
        with DeterministicScheduler(RandomWalk(random.Random(seed))) as s:
            abba(s)
            s.run(max_steps=3)
            roots = [t.root for t in s.tasks]
        assert not any(roots)  # no greenlet left suspended
        refs.append(weakref.ref(s))
    del s, roots
    gc.collect()
    assert all(r() is None for r in refs)


# --------------------------------------------------------------------------- PCT


def depth2_bug(s: DeterministicScheduler) -> dict[str, bool]:
    """A use-before-init bug of depth 2: the reader must run after init starts and before it ends.

    Finding it needs two ordering constraints: ``init`` runs before ``user`` reads
    (otherwise ``published`` is still False and the user backs off), and ``user`` runs
    between the publish and the setup of ``value``.
    """
    state = {"published": False, "value_ready": False, "bug": False}

    def init() -> None:
        for i in range(4):
            s.preempt(f"init_prep{i}")
        state["published"] = True
        s.preempt("after_publish")
        state["value_ready"] = True
        for i in range(4):
            s.preempt(f"init_tail{i}")

    def user() -> None:
        for i in range(4):
            s.preempt(f"user_prep{i}")
        if state["published"] and not state["value_ready"]:
            state["bug"] = True

    s.spawn(init, name="init")
    s.spawn(user, name="user")
    return state


def test_pct_finds_a_depth_two_bug() -> None:
    found_at = None
    for seed in range(100):
        s = DeterministicScheduler(Pct(Rng(seed).stream("sched"), depth=2, expected_steps=16))
        state = depth2_bug(s)
        assert s.run().completed
        if state["bug"]:
            found_at = seed
            choices = s.choices()
            break
    assert found_at is not None
    # The buggy schedule replays exactly.
    s = DeterministicScheduler(ReplayStrategy(choices))
    state = depth2_bug(s)
    assert s.run().completed and state["bug"]
    assert s.choices() == choices


def test_pct_depth_two_hit_rate_meets_the_bound() -> None:
    """Depth 1 (no change points) never preempts init; depth 2 hits at rate >= 1/(n k), n=2, k=16."""
    runs = 1000
    hits = {1: 0, 2: 0}
    for depth in (1, 2):
        for seed in range(runs if depth == 2 else 200):
            s = DeterministicScheduler(Pct(Rng(seed).stream("sched"), depth=depth, expected_steps=16))
            state = depth2_bug(s)
            assert s.run().completed
            hits[depth] += state["bug"]
    assert hits[1] == 0
    bound = 1 / (2 * 16)
    assert hits[2] / runs >= bound - 3 * math.sqrt(bound * (1 - bound) / runs)  # sampling slack


def test_pct_change_points_are_seeded() -> None:
    a = Pct(random.Random(5), depth=4, expected_steps=100)
    b = Pct(random.Random(5), depth=4, expected_steps=100)
    assert a.change_points == b.change_points
    assert sorted(a.change_points.values()) == [1.0, 2.0, 3.0]
    assert all(1 <= k <= 100 for k in a.change_points)


# --------------------------------------------------------------------------- time


def test_time_ordered_runs_least_time_first() -> None:
    s = DeterministicScheduler(TimeOrdered())
    events: list[tuple[int, str]] = []

    def ticker(name: str, cost: int) -> None:
        for _ in range(4):
            events.append((s.now_ns(), name))
            s.charge(cost)
            s.preempt("tick")

    s.spawn(ticker, "slow", 30, name="slow", cpu=0)
    s.spawn(ticker, "fast", 10, name="fast", cpu=1)
    s.spawn(ticker, "tie", 30, name="tie", cpu=2)
    result = s.run()
    assert result.completed
    assert events == sorted(events, key=lambda e: e[0])  # a realistic, monotonic timeline
    assert events[:6] == [(0, "slow"), (0, "fast"), (0, "tie"), (10, "fast"), (20, "fast"), (30, "slow")]
    assert [n for t, n in events if t == 30] == ["slow", "fast", "tie"]  # ties by creation order
    assert result.now_ns == 120  # slow and tie end at 4 * 30


def test_sleepers_wake_in_time_order_and_time_jumps_when_idle() -> None:
    s = DeterministicScheduler(TimeOrdered())
    woke: list[tuple[str, int]] = []

    def sleeper(name: str, ns: int) -> None:
        assert s.sleep_ns(ns)
        woke.append((name, s.now_ns()))

    def busy() -> None:
        for _ in range(10):
            s.charge(100)
            s.preempt("busy")
        woke.append(("busy", s.now_ns()))

    s.spawn(sleeper, "late", 5_000, name="late")
    s.spawn(sleeper, "early", 250, name="early")
    s.spawn(busy, name="busy")
    result = s.run()
    assert result.completed
    assert woke == [("early", 250), ("busy", 1000), ("late", 5000)]
    assert result.now_ns == 5000


def test_interruptible_sleep_cut_short_by_signal() -> None:
    s = DeterministicScheduler(TimeOrdered())
    got: list[tuple[bool, int]] = []

    def sleeper() -> None:
        got.append((s.sleep_ns(1_000_000, interruptible=True), s.now_ns()))
        got.append((s.sleep_ns(10, interruptible=True), s.now_ns()))  # signal still pending

    def killer(t: Task) -> None:
        s.charge(300)
        s.preempt("about to signal")
        t.send_signal()

    t = s.spawn(sleeper, name="sleeper")
    s.spawn(killer, t, name="killer")
    assert s.run().completed
    assert got == [(False, 300), (False, 300)]


def test_woken_task_does_not_run_before_its_waker() -> None:
    s = DeterministicScheduler(RoundRobin())  # the waiter sleeps before the waker runs
    done = Completion(s, "done")
    times: dict[str, int] = {}

    def waiter() -> None:
        done.wait_for_completion()
        times["waiter"] = s.current.local_ns if s.current else -1

    def waker() -> None:
        s.charge(12_345)
        done.complete()

    s.spawn(waiter, name="waiter")
    s.spawn(waker, name="waker")
    assert s.run().completed
    assert times["waiter"] >= 12_345


def test_stop_machine_excludes_every_other_task() -> None:
    for seed in range(20):
        s = DeterministicScheduler(RandomWalk(random.Random(seed)))
        progress = {"other": 0}
        during: list[int] = []
        other_times: list[int] = []

        def loader() -> str:
            s.charge(100)

            def update() -> str:
                for _ in range(5):
                    during.append(progress["other"])
                    s.preempt("inside")  # no-op: nobody else may run
                    s.charge(1_000)
                return "updated"

            return s.stop_machine(update)

        def other() -> None:
            for _ in range(10):
                progress["other"] += 1
                other_times.append(s.current.local_ns if s.current else -1)
                s.preempt("other")

        t = s.spawn(loader, name="loader", cpu=0)
        s.spawn(other, name="other", cpu=1)
        assert s.run().completed
        assert t.result == "updated"
        assert len(set(during)) == 1  # the other task made no progress inside stop_machine
        assert not any(e.point == "inside" for e in s.schedule)
        if during[0] < 10:  # other resumed after the machine restarted: not before its end time
            assert other_times[during[0]] >= 5_100


def test_stop_machine_forbids_sleeping_and_blocking() -> None:
    s = DeterministicScheduler(RoundRobin())
    m = Mutex(s, "microcode_mutex")

    def bad() -> None:
        s.stop_machine(m.lock)

    s.spawn(bad, name="bad")
    with pytest.raises(ModelInvariantError, match="invalid context"):
        s.run()

    s = DeterministicScheduler(RoundRobin())
    wq = WaitQueue(s, "wq")

    def blocker() -> None:
        s.stop_machine(lambda: s.block(wq))

    s.spawn(blocker, name="blocker")
    with pytest.raises(ModelInvariantError, match="inside stop_machine"):
        s.run()


def test_global_time_is_monotonic_under_random_walk() -> None:
    for seed in range(10):
        s = DeterministicScheduler(RandomWalk(random.Random(seed)))
        stamps: list[int] = []
        s.on_step = lambda step, task: stamps.append(s.now_ns())
        workload(s)
        result = s.run()
        assert stamps == sorted(stamps)
        assert result.now_ns == max(t.local_ns for t in s.tasks)


def test_cpu_clock_bills_the_issuing_task() -> None:
    s = DeterministicScheduler(RoundRobin())
    clock = s.cpu_clock()

    def leaf(cpu: int, cost: int) -> None:
        clock.charge(cpu, cost)
        s.preempt("encls_end")

    a = s.spawn(leaf, 0, 700, name="a", cpu=0)
    b = s.spawn(leaf, 1, 300, name="b", cpu=1)
    result = s.run()
    assert (a.local_ns, b.local_ns) == (700, 300)  # the two CPUs ran in parallel
    assert result.now_ns == clock.now_ns() == 700
    clock.charge(0, 50)  # outside run(): the global clock
    assert clock.now_ns() == 750


def test_round_robin_switches_at_every_point() -> None:
    s = DeterministicScheduler(RoundRobin())

    def body() -> None:
        s.preempt("p")
        s.preempt("p")

    for n in ("a", "b", "c"):
        s.spawn(body, name=n)
    assert s.run().completed
    assert [e.task for e in s.schedule] == ["a", "b", "c"] * 3


def test_close_unwinds_tasks_and_releases_their_locks() -> None:
    s = DeterministicScheduler(RoundRobin())
    m = Mutex(s, "m")
    gate = Completion(s, "gate")
    cleaned: list[str] = []

    def holder() -> None:
        try:
            with m:
                gate.wait_for_completion()
        finally:
            cleaned.append("holder")

    def waiter() -> None:
        try:
            m.lock()
        finally:
            cleaned.append("waiter")

    s.spawn(holder, name="holder")
    s.spawn(waiter, name="waiter")
    result = s.run(max_steps=4)
    assert result.step_limit_hit
    assert [t.point for t in s.tasks] == ["wait:completion:gate", "wait:mutex:m"]
    s.spawn(lambda: None, name="never-started")
    s.close()
    assert cleaned == ["holder", "waiter"]
    assert not m.is_locked()
    assert all(t.state is TaskState.KILLED for t in s.tasks)


# --------------------------------------------------------------------------- clock


def test_sim_clock() -> None:
    c = SimClock(10)
    assert c.advance(5) == 15
    assert c.advance_to(12) == 15  # never goes back
    assert c.advance_to(40) == 40
    c.charge(3, 2)
    assert c.now_ns() == 42
    for bad in (-1, 1.0, True):
        with pytest.raises(InvalidArgument):
            c.advance(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        SimClock(-5)
    assert format_ns(1_234_567_890) == "1.234567"
    assert repr(c) == "SimClock(0.000000)"


def test_pct_boosts_a_task_passed_over_max_run_times() -> None:
    """A spin-waiting high-priority task cannot starve the task it waits for (fair PCT variant);
    with max_run=None (textbook PCT) the same program never terminates within the bound."""

    def run(max_run: int | None) -> bool:
        s = DeterministicScheduler(Pct(random.Random(1), depth=1, expected_steps=1, max_run=max_run))
        flag = {"set": False}

        def waiter() -> None:
            for _ in range(5_000):
                if flag["set"]:
                    return
                s.preempt("spin")
            raise RuntimeError("starved")

        def setter() -> None:
            s.preempt("work")
            flag["set"] = True

        s.spawn(waiter, name="waiter")
        s.spawn(setter, name="setter")
        # Make the waiter the higher-priority task.
        s.find_task("waiter").priority = 10.0  # type: ignore[union-attr]
        s.find_task("setter").priority = 1.0  # type: ignore[union-attr]
        try:
            s.run()
        except Exception:
            return False
        finally:
            s.close()
        return flag["set"]

    assert run(64) is True
    assert run(None) is False
    with pytest.raises(InvalidArgument):
        Pct(random.Random(0), depth=1, expected_steps=1, max_run=0)
