"""Kernel concurrency primitives (sgxsim.kernel.locking) and the kernel log (sgxsim.kernel.printk)."""

# Task bodies are closures defined and run inside one loop iteration, so late binding is intended.
# ruff: noqa: B023

from __future__ import annotations

import errno
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sgxsim.errors import InvalidArgument, ModelInvariantError
from sgxsim.kernel.locking import (
    ERESTARTSYS,
    AtomicInt,
    Completion,
    Kref,
    Mutex,
    NullScheduler,
    RwSemaphore,
    SpinLock,
    Srcu,
    WaitQueue,
    cond_resched,
    lockdep_assert_held,
    lockdep_assert_not_held,
    srcu_read_lock_held,
)
from sgxsim.kernel.printk import KernelLog, LogLevel, format_timestamp
from sgxsim.sim.sched import DeterministicScheduler, RandomWalk, RoundRobin, Task

SEEDS = range(60)


def walk(seed: int) -> DeterministicScheduler:
    return DeterministicScheduler(RandomWalk(random.Random(seed)))


# --------------------------------------------------------------------------- NullScheduler


def test_null_scheduler_mutex_basics() -> None:
    hooks = NullScheduler()
    m = Mutex(hooks, "encl")
    assert not m.is_locked()
    m.lock()
    assert m.is_locked() and m.owner is hooks.task and m.held_by_current()
    lockdep_assert_held(m)
    assert not m.trylock()
    m.unlock()
    assert not m.is_locked() and m.owner is None
    lockdep_assert_not_held(m)
    with pytest.raises(ModelInvariantError, match="not held"):
        lockdep_assert_held(m)
    assert m.trylock()
    m.unlock()
    with m:
        assert m.is_locked()
    assert not m.is_locked()


def test_mutex_misuse_is_reported() -> None:
    hooks = NullScheduler()
    m = Mutex(hooks, "encl")
    with pytest.raises(ModelInvariantError, match="unlocked mutex 'encl'"):
        m.unlock()
    m.lock()
    with pytest.raises(ModelInvariantError, match="recursive locking"):
        m.lock()
    with pytest.raises(ModelInvariantError, match="recursive locking"):
        m.lock_interruptible()
    with pytest.raises(ModelInvariantError, match="is held by the current task"):
        lockdep_assert_not_held(m)


def test_mutex_unlock_by_non_owner() -> None:
    s = DeterministicScheduler(RoundRobin())
    m = Mutex(s, "svn")

    def owner() -> None:
        m.lock()

    def thief() -> None:
        s.sleep_ns(10)
        m.unlock()

    s.spawn(owner, name="owner")
    s.spawn(thief, name="thief")
    with pytest.raises(ModelInvariantError, match="by thief, owner is owner") as info:
        s.run()
    assert any("'thief'" in note for note in info.value.__notes__)


def test_null_scheduler_sleep_on_unsatisfiable_wait_is_a_deadlock() -> None:
    hooks = NullScheduler()
    wq = WaitQueue(hooks, "ksgxd_waitq")
    assert wq.wait_event(lambda: True) == 0
    with pytest.raises(ModelInvariantError, match=r"deadlock: .*ksgxd_waitq"):
        wq.wait_event(lambda: False)
    hooks.task.signal_pending = True
    assert wq.wait_event(lambda: False, interruptible=True) == -ERESTARTSYS
    # The condition is checked before the signal, as in ___wait_event().
    assert wq.wait_event(lambda: True, interruptible=True) == 0


def test_null_scheduler_time() -> None:
    hooks = NullScheduler(start_ns=5)
    assert hooks.now_ns() == 5
    hooks.charge(10)
    assert hooks.sleep_ns(100) is True
    assert hooks.now_ns() == 115
    hooks.task.signal_pending = True
    assert hooks.sleep_ns(100, interruptible=True) is False
    assert hooks.sleep_ns(100) is True
    assert hooks.now_ns() == 215
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(InvalidArgument):
            hooks.charge(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        NullScheduler(start_ns=-1)
    assert hooks.stop_machine(lambda: 42) == 42
    assert hooks.task.preempt_count == 0
    cond_resched(hooks)


def test_errno_values_are_linux() -> None:
    assert ERESTARTSYS == 512  # include/linux/errno.h
    s = DeterministicScheduler(RoundRobin())
    m = Mutex(s, "m")
    got: list[int] = []

    def holder() -> None:
        m.lock()
        s.sleep_ns(1000)
        m.unlock()

    def waiter() -> None:
        got.append(m.lock_interruptible())

    def killer(t: Task) -> None:
        s.sleep_ns(10)
        t.send_signal()

    s.spawn(holder, name="holder")
    w = s.spawn(waiter, name="waiter")
    s.spawn(killer, w, name="killer")
    assert s.run().completed
    assert got == [-errno.EINTR]
    assert not m.is_locked()


def test_lock_interruptible_uncontended_ignores_signal() -> None:
    hooks = NullScheduler()
    hooks.task.signal_pending = True
    m = Mutex(hooks, "m")
    assert m.lock_interruptible() == 0
    assert m.is_locked()


# --------------------------------------------------------------------------- mutual exclusion


def lost_update(seed: int, lock: bool, tasks: int = 3, iters: int = 3) -> int:
    """The classic read-preempt-write counter: lost updates without the lock."""
    s = walk(seed)
    m = Mutex(s, "counter")
    box = {"x": 0}

    def worker() -> None:
        for _ in range(iters):
            if lock:
                m.lock()
            v = box["x"]
            s.preempt("between_read_and_write")
            box["x"] = v + 1
            if lock:
                m.unlock()

    for i in range(tasks):
        s.spawn(worker, name=f"w{i}", cpu=i)
    assert s.run().completed
    return box["x"]


def test_scheduler_interleaves_so_unlocked_counter_loses_updates() -> None:
    results = [lost_update(seed, lock=False) for seed in SEEDS]
    assert any(r < 9 for r in results), "the scheduler never interleaved the read and the write"
    # ...and not every schedule is racy: the walk explores different orders.
    assert len(set(results)) > 1


def test_mutex_prevents_lost_updates_on_every_seed() -> None:
    assert all(lost_update(seed, lock=True) == 9 for seed in SEEDS)


@pytest.mark.parametrize("kind", ["mutex", "spinlock"])
def test_at_most_one_task_in_critical_section_at_every_step(kind: str) -> None:
    for seed in range(25):
        s = walk(seed)
        lock = Mutex(s, "m") if kind == "mutex" else SpinLock(s, "l")
        inside: list[str] = []
        max_inside = [0]

        def check(step: int, task: Task) -> None:
            max_inside[0] = max(max_inside[0], len(inside))

        s.on_step = check

        def worker(name: str) -> None:
            for _ in range(3):
                with lock:
                    inside.append(name)
                    s.preempt("cs1")
                    s.preempt("cs2")
                    inside.remove(name)

        for i in range(4):
            s.spawn(worker, f"t{i}", name=f"t{i}")
        assert s.run().completed
        assert max_inside[0] == 1


def test_woken_waiter_may_lose_the_race_and_requeues() -> None:
    """Without hand-off a third task can take the mutex first: every order still serializes."""
    seen_orders = set()
    for seed in SEEDS:
        s = walk(seed)
        m = Mutex(s, "m")
        order: list[str] = []

        def worker(name: str) -> None:
            with m:
                order.append(name)
                s.preempt("cs")

        for n in "abc":
            s.spawn(worker, n, name=n)
        assert s.run().completed
        assert sorted(order) == ["a", "b", "c"]
        seen_orders.add(tuple(order))
    assert len(seen_orders) >= 4


# --------------------------------------------------------------------------- spinlock


def test_spinlock_forbids_sleeping() -> None:
    hooks = NullScheduler()
    sl = SpinLock(hooks, "node->lock")
    m = Mutex(hooks, "m")
    with sl:
        assert hooks.task.preempt_count == 1
        lockdep_assert_held(sl)
        with pytest.raises(ModelInvariantError, match="sleeping function called from invalid context"):
            m.lock()
        with pytest.raises(ModelInvariantError, match="invalid context"):
            hooks.sleep_ns(10)
        with pytest.raises(ModelInvariantError, match="recursive spin_lock"):
            sl.lock()
        assert not sl.trylock()
    assert hooks.task.preempt_count == 0
    assert not m.is_locked()
    with pytest.raises(ModelInvariantError, match="spin_unlock"):
        sl.unlock()


# --------------------------------------------------------------------------- rw_semaphore


def test_rwsem_readers_share_writers_exclude() -> None:
    both_readers_inside = False
    for seed in range(40):
        s = walk(seed)
        sem = RwSemaphore(s, "mmap_lock")
        readers = [0]
        writers = [0]

        def check(step: int, task: Task) -> None:
            assert writers[0] <= 1
            assert not (writers[0] and readers[0])

        s.on_step = check

        def reader() -> None:
            nonlocal both_readers_inside
            with sem.read():
                readers[0] += 1
                s.preempt("reading")
                both_readers_inside |= readers[0] == 2
                readers[0] -= 1

        def writer() -> None:
            with sem.write():
                writers[0] += 1
                s.preempt("writing")
                writers[0] -= 1

        s.spawn(reader, name="r1")
        s.spawn(reader, name="r2")
        s.spawn(writer, name="w")
        assert s.run().completed
        assert sem.reader_count == 0 and not sem.is_locked()
    assert both_readers_inside


def test_rwsem_misuse() -> None:
    hooks = NullScheduler()
    sem = RwSemaphore(hooks, "sem")
    with pytest.raises(ModelInvariantError, match="up_read"):
        sem.up_read()
    with pytest.raises(ModelInvariantError, match="up_write"):
        sem.up_write()
    sem.down_write()
    assert sem.is_write_locked() and sem.write_held_by_current()
    lockdep_assert_held(sem)
    assert not sem.down_read_trylock()
    with pytest.raises(ModelInvariantError, match=r"down_read .*deadlock"):
        sem.down_read()
    sem.up_write()
    assert sem.down_read_trylock()
    assert not sem.down_write_trylock()
    with pytest.raises(ModelInvariantError, match="down_write"):
        sem.down_write()
    sem.up_read()
    assert sem.down_write_trylock()
    sem.up_write()


def test_rwsem_recursive_read_deadlocks_against_queued_writer() -> None:
    s = DeterministicScheduler(RoundRobin())
    sem = RwSemaphore(s, "sem")
    phase = Completion(s, "phase")

    def reader() -> None:
        sem.down_read()
        phase.wait_for_completion()
        s.sleep_ns(100)  # the writer queues up meanwhile
        sem.down_read()  # recursive read: blocks behind the queued writer
        sem.up_read()
        sem.up_read()

    def writer() -> None:
        phase.complete()
        sem.down_write()
        sem.up_write()

    s.spawn(reader, name="reader")
    s.spawn(writer, name="writer")
    result = s.run()
    assert result.deadlocked
    assert {(b.task, b.waitq) for b in result.blocked} == {("reader", "rwsem:sem"), ("writer", "rwsem:sem")}


# --------------------------------------------------------------------------- SRCU


def test_synchronize_srcu_waits_for_preexisting_reader() -> None:
    for seed in range(30):
        s = walk(seed)
        srcu = Srcu(s, "sgx_lock_epc_srcu")
        entered = Completion(s, "entered")
        gate = Completion(s, "gate")
        events: list[str] = []

        def reader() -> None:
            idx = srcu.srcu_read_lock()
            assert srcu_read_lock_held(srcu)
            lockdep_assert_held(srcu)
            events.append("reader in")
            entered.complete_all()
            gate.wait_for_completion()
            events.append("reader out")
            srcu.srcu_read_unlock(idx)
            assert not srcu_read_lock_held(srcu)

        def writer() -> None:
            entered.wait_for_completion()
            events.append("sync start")
            srcu.synchronize_srcu()
            events.append("sync end")

        def opener() -> None:
            entered.wait_for_completion()
            s.sleep_ns(1_000)
            gate.complete()

        s.spawn(reader, name="reader")
        s.spawn(writer, name="writer")
        s.spawn(opener, name="opener")
        assert s.run().completed
        assert events.index("sync end") > events.index("reader out") > events.index("reader in")


def test_reader_starting_after_synchronize_does_not_delay_it() -> None:
    """If synchronize_srcu() waited for the late reader this would deadlock."""
    for seed in range(30):
        s = walk(seed)
        srcu = Srcu(s, "srcu")
        r1_in = Completion(s, "r1_in")
        r2_in = Completion(s, "r2_in")
        sync_done = Completion(s, "sync_done")
        flags = {"sync_began": False}
        events: list[str] = []

        def r1() -> None:
            with srcu.read_section():
                r1_in.complete()
                r2_in.wait_for_completion()  # stay inside until the late reader is in
                events.append("r1 out")

        def writer() -> None:
            r1_in.wait_for_completion()
            flags["sync_began"] = True  # the grace period's snapshot is taken at the call
            srcu.synchronize_srcu()
            events.append("sync end")
            sync_done.complete()

        def r2() -> None:
            while not flags["sync_began"]:
                s.sleep_ns(100)
            with srcu.read_section():
                events.append("r2 in")
                r2_in.complete()
                sync_done.wait_for_completion()  # stays inside across the whole grace period
                events.append("r2 out")

        s.spawn(r1, name="r1")
        s.spawn(writer, name="writer")
        s.spawn(r2, name="r2")
        result = s.run()
        assert result.completed, result.describe()
        assert events.index("r2 in") < events.index("sync end") < events.index("r2 out")
        assert events.index("r1 out") < events.index("sync end")


def test_srcu_grace_period_is_exact_under_random_schedules() -> None:
    """At the end of a grace period every reader active at the call has left; later ones may not have."""
    later_reader_inside_at_end = False
    ends = 0
    for seed in range(40):
        s = walk(seed)
        srcu = Srcu(s, "srcu")
        active: set[str] = set()
        before: set[str] = set()

        def at_grace_period_end(step: int, task: Task) -> None:
            # The decision taken at the writer's "synchronize_srcu_done" point sees the state
            # exactly as the grace period ended (nothing runs in between).
            nonlocal later_reader_inside_at_end, ends
            cur = s.current
            if cur is not None and cur.name == "w" and cur.point == "synchronize_srcu_done:srcu":
                ends += 1
                assert not (before & active), f"grace period ended with {before & active} inside"
                later_reader_inside_at_end |= bool(active - before)

        s.on_step = at_grace_period_end

        def reader(name: str) -> None:
            for i in range(3):
                idx = srcu.srcu_read_lock()
                active.add(f"{name}.{i}")
                s.preempt("in section")
                s.charge(10)
                s.preempt("still in section")
                active.discard(f"{name}.{i}")
                srcu.srcu_read_unlock(idx)

        def writer() -> None:
            for _ in range(3):
                before.clear()
                before.update(active)
                srcu.synchronize_srcu()

        for i in range(3):
            s.spawn(reader, f"r{i}", name=f"r{i}")
        s.spawn(writer, name="w")
        assert s.run().completed
        assert srcu.reader_count == 0
    assert ends == 3 * 40
    assert later_reader_inside_at_end


def test_srcu_misuse() -> None:
    hooks = NullScheduler()
    srcu = Srcu(hooks, "srcu")
    srcu.synchronize_srcu()  # no readers: returns at once
    idx = srcu.srcu_read_lock()
    with pytest.raises(ModelInvariantError, match="Illegal synchronize_srcu"):
        srcu.synchronize_srcu()
    srcu.srcu_read_unlock(idx)
    with pytest.raises(ModelInvariantError, match="no such reader"):
        srcu.srcu_read_unlock(idx)
    with pytest.raises(InvalidArgument):
        srcu.srcu_read_unlock("0")  # type: ignore[arg-type]
    with pytest.raises(ModelInvariantError, match="not held"):
        lockdep_assert_held(srcu)
    with SpinLock(hooks, "l"), pytest.raises(ModelInvariantError, match="invalid context"):
        srcu.synchronize_srcu()


def test_srcu_nested_read_sections() -> None:
    hooks = NullScheduler()
    srcu = Srcu(hooks, "srcu")
    a = srcu.srcu_read_lock()
    b = srcu.srcu_read_lock()
    assert a != b and srcu.reader_count == 2
    srcu.srcu_read_unlock(a)
    assert srcu_read_lock_held(srcu)
    srcu.srcu_read_unlock(b)
    assert not srcu_read_lock_held(srcu)


# --------------------------------------------------------------------------- wait queues, completions


def test_wait_event_interruptible_returns_erestartsys_after_signal() -> None:
    s = DeterministicScheduler(RoundRobin())
    wq = WaitQueue(s, "wq")
    got: list[int] = []

    def waiter() -> None:
        got.append(wq.wait_event(lambda: False, interruptible=True))

    def sender(t: Task) -> None:
        s.preempt("before signal")
        t.send_signal()

    w = s.spawn(waiter, name="waiter")
    s.spawn(sender, w, name="sender")
    result = s.run()
    assert result.completed
    assert got == [-ERESTARTSYS]
    assert w.signal_pending
    w.clear_signal()
    assert not w.signal_pending


def test_uninterruptible_wait_ignores_signals() -> None:
    s = DeterministicScheduler(RoundRobin())
    wq = WaitQueue(s, "wq")
    state = {"ready": False}
    got: list[int] = []

    def waiter() -> None:
        got.append(wq.wait_event(lambda: state["ready"]))

    def other(t: Task) -> None:
        t.send_signal()  # does not end an uninterruptible wait
        s.sleep_ns(500)
        assert t.state.value == "blocked"
        state["ready"] = True
        wq.wake_up()

    w = s.spawn(waiter, name="waiter")
    s.spawn(other, w, name="other")
    assert s.run().completed
    assert got == [0]
    assert w.local_ns >= 500  # woken by a task whose time was 500


def test_completion_semantics() -> None:
    for seed in range(20):
        s = walk(seed)
        done = Completion(s, "done")
        woke: list[str] = []

        def waiter(name: str) -> None:
            done.wait_for_completion()
            woke.append(name)

        def completer() -> None:
            s.sleep_ns(10)
            done.complete()
            s.sleep_ns(10)
            done.complete_all()

        for n in ("a", "b", "c"):
            s.spawn(waiter, n, name=n)
        s.spawn(completer, name="completer")
        assert s.run().completed
        assert sorted(woke) == ["a", "b", "c"]
        assert done.completion_done()  # complete_all stays done
        assert done.try_wait_for_completion() and done.completion_done()
        done.reinit_completion()
        assert not done.try_wait_for_completion()


def test_completion_counts_and_interruptible_wait() -> None:
    hooks = NullScheduler()
    c = Completion(hooks, "c")
    c.complete()
    c.complete()
    assert c.try_wait_for_completion()
    c.wait_for_completion()
    assert not c.completion_done()
    with pytest.raises(ModelInvariantError, match="deadlock"):
        c.wait_for_completion()
    hooks.task.signal_pending = True
    assert c.wait_for_completion_interruptible() == -ERESTARTSYS
    c.complete()
    assert c.wait_for_completion_interruptible() == 0


# --------------------------------------------------------------------------- atomics, kref


def test_atomic_int_operations() -> None:
    a = AtomicInt(0)
    assert not a.inc_not_zero() and a.read() == 0
    a.inc()
    assert a.inc_not_zero() and a.read() == 2
    assert a.dec_return() == 1
    assert a.dec_and_test() and a.read() == 0
    assert a.cmpxchg(5, 7) == 0 and a.read() == 0
    assert a.cmpxchg(0, 7) == 0 and a.read() == 7
    assert a.xchg(3) == 7
    assert not a.add_unless(1, 3) and a.read() == 3
    assert a.add_unless(2, 0) and a.read() == 5
    a.set(0x7FFFFFFF)
    assert a.inc_return() == -0x80000000  # atomic_t is a wrapping 32-bit int
    wide = AtomicInt(0x7FFFFFFF, bits=64)
    assert wide.inc_return() == 0x80000000
    with pytest.raises(InvalidArgument):
        AtomicInt(0, bits=16)
    with pytest.raises(InvalidArgument):
        AtomicInt(1.0)  # type: ignore[arg-type]


@given(st.lists(st.integers(-(2**40), 2**40), max_size=30))
def test_atomic_add_matches_int32_arithmetic(deltas: list[int]) -> None:
    a = AtomicInt(0)
    total = 0
    for d in deltas:
        a.add(d)
        total += d
    assert a.read() == ((total + 2**31) % 2**32) - 2**31


def test_kref_releases_exactly_once() -> None:
    released: list[object] = []
    owner = object()
    ref = Kref(owner)
    ref.kref_get()
    assert ref.kref_read() == 2
    assert ref.kref_put(lambda k: released.append(k.container)) is False
    assert ref.kref_put(lambda k: released.append(k.container)) is True
    assert released == [owner]
    assert not ref.kref_get_unless_zero()
    with pytest.raises(ModelInvariantError, match="use-after-free"):
        ref.kref_get()
    with pytest.raises(ModelInvariantError, match="underflow"):
        ref.kref_put(released.append)
    assert released == [owner]


# --------------------------------------------------------------------------- printk / WARN


def sgx_update_svn(log: KernelLog, ret: int) -> bool:
    return log.WARN(ret != 0, "EUPDATESVN returned %d (0x%x)", ret, ret)


def test_kernel_log_format_uses_simulated_time() -> None:
    hooks = NullScheduler()
    log = KernelLog(hooks)
    hooks.charge(1_234_567_891)
    entry = log.pr_info("EPC section 0x%x-0x%x", 0x80000000, 0x8FFFFFFF)
    assert entry.time_ns == 1_234_567_891 and entry.task == "main" and entry.level is LogLevel.INFO
    hooks.charge(98_765_432_109)
    log.pr_err("no EPC", prefix="x86/cpu")
    log.pr_debug("debug")
    assert log.lines() == [
        "[    1.234567] sgx: EPC section 0x80000000-0x8fffffff",
        "[  100.000000] x86/cpu: no EPC",
        "[  100.000000] sgx: debug",
    ]
    assert log.format(level=LogLevel.INFO) == "\n".join(log.lines()[:2])
    assert log.lines(show_task=True)[0] == "[    1.234567] [  main] sgx: EPC section 0x80000000-0x8fffffff"
    assert [e.message for e in log.grep("EPC")] == ["EPC section 0x80000000-0x8fffffff", "no EPC"]
    assert format_timestamp(0) == "[    0.000000]"
    assert format_timestamp(123_456_789_012_345) == "[123456.789012]"
    assert len(log) == 3
    with pytest.raises(InvalidArgument, match="does not match"):
        log.pr_info("%d %d", 1)


def test_warn_logs_counts_and_returns_condition() -> None:
    hooks = NullScheduler()
    log = KernelLog(hooks)
    assert sgx_update_svn(log, 0) is False
    assert log.warn_count == 0 and not log.tainted and len(log) == 0
    hooks.charge(2_000_000)
    assert sgx_update_svn(log, 5) is True
    assert log.warn_count == 1 and log.tainted
    warning = log.warnings[0]
    assert (warning.site, warning.message, warning.task, warning.time_ns) == (
        "sgx_update_svn",
        "EUPDATESVN returned 5 (0x5)",
        "main",
        2_000_000,
    )
    assert log.lines() == [
        "[    0.002000] ------------[ cut here ]------------",
        "[    0.002000] EUPDATESVN returned 5 (0x5)",
        "[    0.002000] WARNING: CPU: 0 Comm: main at sgx_update_svn",
    ]
    assert log.WARN_ON(1, site="sgx_encl_release") is True
    assert log.warnings[-1].site == "sgx_encl_release" and log.warn_count == 2
    assert log.WARN_ON(0) is False and log.warn_count == 2


def test_warn_once_logs_once_per_key_but_always_returns_condition() -> None:
    hooks = NullScheduler()
    log = KernelLog(hooks)
    results = [log.WARN_ONCE("encls:EREMOVE", True, "EREMOVE returned %d", 13) for _ in range(3)]
    assert results == [True, True, True]
    assert log.warn_count == 1 and log.warnings[0].key == "encls:EREMOVE"
    assert log.WARN_ONCE("encls:EREMOVE", False, "x") is False
    assert log.WARN_ON_ONCE("zap", True) and log.WARN_ON_ONCE("zap", True)
    assert log.warn_count == 2
    assert log.warnings[1].site == "test_warn_once_logs_once_per_key_but_always_returns_condition"


def test_kernel_log_records_the_running_task() -> None:
    s = DeterministicScheduler(RoundRobin())
    log = KernelLog(s)

    def ksgxd() -> None:
        s.charge(1500)
        log.pr_info("reclaim")
        log.WARN(True, "oops")

    s.spawn(ksgxd, name="ksgxd", cpu=3)
    log.pr_info("setup")
    assert s.run().completed
    assert [(e.task, e.cpu) for e in log.entries] == [
        (None, None),
        ("ksgxd", 3),
        ("ksgxd", 3),
        ("ksgxd", 3),
        ("ksgxd", 3),
    ]
    assert log.entries[1].time_ns == 1500
    assert log.lines()[-1].endswith("WARNING: CPU: 3 Comm: ksgxd at ksgxd")
    assert log.warnings[0].task == "ksgxd"
