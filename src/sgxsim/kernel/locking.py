"""Kernel concurrency primitives bound to a pluggable scheduler.

Every primitive here (mutex, spinlock, rw_semaphore, SRCU, wait queue, completion,
atomic_t, kref) is an instance bound to a :class:`SchedulerHooks` object given to its
constructor. Kernel paths yield to the scheduler at named *preemption points* (lock
acquire and release, SRCU read-side entry and exit, grace-period start and end), so a
deterministic scheduler (:mod:`sgxsim.sim.sched`) can interleave them; the default
:class:`NullScheduler` runs one task and turns any sleep that nobody could end into a
``ModelInvariantError("deadlock: ...")``.

Names follow include/linux/{mutex,spinlock,rwsem,srcu,wait,completion,atomic,kref}.h.
Misuse that lockdep or DEBUG_MUTEXES would report (recursive locking, unlocking a lock
one does not hold, sleeping with a spinlock held, synchronize_srcu() inside its own
read-side section) raises :class:`~sgxsim.errors.ModelInvariantError`: in this model it
is a bug in the modelled kernel code, which an exploration must surface.

Preemption-point names are ``"<operation>:<lock name>"``, e.g. ``"mutex_lock:encl"``,
``"mutex_unlock:encl"``, ``"srcu_read_lock:sgx_lock_epc_srcu"``.
"""

from __future__ import annotations

import collections
import errno
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, TypeVar

from sgxsim.errors import InvalidArgument, ModelInvariantError

__all__ = [
    "ERESTARTSYS",
    "AtomicInt",
    "Completion",
    "Kref",
    "Mutex",
    "NullScheduler",
    "NullTask",
    "RwSemaphore",
    "SchedulerHooks",
    "SpinLock",
    "Srcu",
    "TaskInfo",
    "WaitQueue",
    "cond_resched",
    "lockdep_assert_held",
    "lockdep_assert_not_held",
    "might_sleep",
    "srcu_read_lock_held",
]

T = TypeVar("T")

#: include/linux/errno.h: kernel-internal "restart the syscall" code; the errno module lacks it.
#: The syscall exit path turns it into EINTR (or a restart) before user space sees it.
ERESTARTSYS = 512

#: ``completion->done`` after complete_all() (include/linux/completion.h uses UINT_MAX).
COMPLETION_DONE_ALL = 0xFFFFFFFF


# --------------------------------------------------------------------------- protocol


class TaskInfo(Protocol):
    """What the kernel may ask of the running task (a slice of ``struct task_struct``)."""

    @property
    def name(self) -> str:
        """``task->comm``: unique per scheduler."""
        ...

    @property
    def cpu(self) -> int:
        """The logical processor the task runs on."""
        ...

    #: A signal is pending (``signal_pending(current)``).
    signal_pending: bool
    #: Spinlocks held / atomic sections entered; > 0 means the task must not sleep.
    preempt_count: int
    #: [MODEL] Retries of the user access the task is faulting on (0 outside a fault loop);
    #: the scheduler reports tasks that do nothing but retry faults as stuck.
    fault_retries: int


class SchedulerHooks(Protocol):
    """The scheduler contract every primitive in this module is written against.

    ``kernel`` owns this protocol; :class:`NullScheduler` is the single-task default and
    ``sgxsim.sim.sched.DeterministicScheduler`` the interleaving one.
    """

    def preempt(self, point: str) -> None:
        """A named preemption point: the scheduler may run other tasks before returning."""
        ...

    def block(self, waitq: WaitQueue, interruptible: bool = False) -> None:
        """Put the current task to sleep on ``waitq`` until woken (or signalled, if interruptible).

        Returns immediately if ``interruptible`` and a signal is already pending; callers
        always re-check their condition after it returns.
        """
        ...

    def wake(self, waitq: WaitQueue) -> None:
        """Wake the first task sleeping on ``waitq`` (FIFO), if any."""
        ...

    def wake_all(self, waitq: WaitQueue) -> None:
        """Wake every task sleeping on ``waitq``."""
        ...

    def current_task(self) -> TaskInfo | None:
        """``current``; ``None`` outside any task (setup code)."""
        ...

    def now_ns(self) -> int:
        """Simulated time in nanoseconds, monotonic."""
        ...

    def charge(self, ns: int) -> None:
        """The current task consumes ``ns`` nanoseconds of simulated time (e.g. one ENCLS leaf)."""
        ...

    def sleep_ns(self, ns: int, interruptible: bool = False) -> bool:
        """msleep / msleep_interruptible; ``False`` if a signal cut the sleep short."""
        ...

    def stop_machine(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` with every other task held off (kernel/stop_machine.c stop_machine())."""
        ...


# --------------------------------------------------------------------------- default


@dataclass(eq=False)
class NullTask:
    """The one task a :class:`NullScheduler` runs."""

    name: str = "main"
    cpu: int = 0
    signal_pending: bool = False
    preempt_count: int = 0
    fault_retries: int = 0


class NullScheduler:
    """The default single-task scheduler: no interleaving, time advances only by charges.

    Outcomes: ``preempt`` is a no-op; ``block`` returns at once if it is interruptible
    and a signal is pending, otherwise it raises ``ModelInvariantError("deadlock: ...")``
    because no other task exists to wake the sleeper; ``sleep_ns`` advances time and
    returns ``True`` (``False`` without sleeping if interruptible and a signal is pending).
    """

    def __init__(self, task: NullTask | None = None, start_ns: int = 0) -> None:
        if not isinstance(start_ns, int) or isinstance(start_ns, bool) or start_ns < 0:
            raise InvalidArgument(f"start_ns must be a non-negative int, got {start_ns!r}")
        self.task = task if task is not None else NullTask()
        self._now = start_ns

    def preempt(self, point: str) -> None:
        return None

    def block(self, waitq: WaitQueue, interruptible: bool = False) -> None:
        if interruptible and self.task.signal_pending:
            return
        raise ModelInvariantError(
            f"deadlock: task {self.task.name!r} sleeps on {waitq.name!r} and no other task can wake it"
        )

    def wake(self, waitq: WaitQueue) -> None:
        return None

    def wake_all(self, waitq: WaitQueue) -> None:
        return None

    def current_task(self) -> NullTask:
        return self.task

    def now_ns(self) -> int:
        return self._now

    def charge(self, ns: int) -> None:
        _check_ns(ns)
        self._now += ns

    def sleep_ns(self, ns: int, interruptible: bool = False) -> bool:
        _check_ns(ns)
        might_sleep(self, "msleep")
        if interruptible and self.task.signal_pending:
            return False
        self._now += ns
        return True

    def stop_machine(self, fn: Callable[[], T]) -> T:
        might_sleep(self, "stop_machine")
        self.task.preempt_count += 1
        try:
            return fn()
        finally:
            self.task.preempt_count -= 1


def _check_ns(ns: object) -> None:
    if not isinstance(ns, int) or isinstance(ns, bool) or ns < 0:
        raise InvalidArgument(f"time in ns must be a non-negative int, got {ns!r}")


def _task_name(task: TaskInfo | None) -> str:
    return "<no task>" if task is None else task.name


# --------------------------------------------------------------------------- helpers


def might_sleep(hooks: SchedulerHooks, where: str) -> None:
    """Assert the current task may sleep here.

    Models: include/linux/kernel.h might_sleep() with CONFIG_DEBUG_ATOMIC_SLEEP.
    Outcomes: returns; or raises ``ModelInvariantError`` ("BUG: sleeping function called
    from invalid context") when the task holds a spinlock or runs inside stop_machine.
    """
    cur = hooks.current_task()
    if cur is not None and cur.preempt_count > 0:
        raise ModelInvariantError(
            f"BUG: sleeping function called from invalid context at {where}: "
            f"task {cur.name!r} preempt_count={cur.preempt_count}"
        )


def cond_resched(hooks: SchedulerHooks) -> None:
    """A voluntary preemption point in a long loop.

    Models: kernel/sched/core.c cond_resched(). Outcome: returns (maybe after other tasks ran).
    """
    hooks.preempt("cond_resched")


# --------------------------------------------------------------------------- wait queue


class WaitQueue:
    """A wait queue head (``wait_queue_head_t``): tasks sleep on it until a condition holds.

    Models: include/linux/wait.h wait_event(), wait_event_interruptible(), wake_up(),
    wake_up_all(), waitqueue_active().
    ``waiters`` is owned by the scheduler (it appends and pops sleeping tasks, FIFO).
    """

    __slots__ = ("_hooks", "name", "waiters")

    def __init__(self, hooks: SchedulerHooks, name: str = "waitq") -> None:
        self._hooks = hooks
        self.name = name
        self.waiters: collections.deque[TaskInfo] = collections.deque()

    def wait_event(self, cond: Callable[[], object], interruptible: bool = False) -> int:
        """Sleep until ``cond()`` is true.

        Models: include/linux/wait.h wait_event() / wait_event_interruptible() (the
        condition is checked before the signal, as ___wait_event does).
        Outcomes: 0 once ``cond()`` holds; ``-ERESTARTSYS`` if interruptible and a
        signal is pending while the condition is false.
        """
        hooks = self._hooks
        might_sleep(hooks, f"wait_event:{self.name}")
        while not cond():
            if interruptible:
                cur = hooks.current_task()
                if cur is not None and cur.signal_pending:
                    return -ERESTARTSYS
            hooks.block(self, interruptible)
        return 0

    def wake_up(self) -> None:
        """Wake one sleeper (the first). Models: include/linux/wait.h wake_up()."""
        if self.waiters:
            self._hooks.wake(self)

    def wake_up_all(self) -> None:
        """Wake every sleeper. Models: include/linux/wait.h wake_up_all()."""
        if self.waiters:
            self._hooks.wake_all(self)

    def active(self) -> bool:
        """Someone sleeps here. Models: include/linux/wait.h waitqueue_active()."""
        return bool(self.waiters)

    def __repr__(self) -> str:
        return f"WaitQueue({self.name!r}, waiters={[t.name for t in self.waiters]})"


# --------------------------------------------------------------------------- locks


class Mutex:
    """A sleeping lock with an owner (``struct mutex``).

    Models: kernel/locking/mutex.c mutex_lock(), mutex_lock_interruptible(),
    mutex_trylock(), mutex_unlock(), mutex_is_locked(), with CONFIG_DEBUG_MUTEXES checks.
    Preemption points: ``mutex_lock:<name>`` before the attempt, ``mutex_trylock:<name>``,
    ``mutex_unlock:<name>`` after the release.
    Differs: no optimistic spinning and no hand-off: a woken waiter competes again and
    a third task may take the lock first (an order Linux also allows).
    """

    __slots__ = (
        "_hooks",
        "_lock_point",
        "_locked",
        "_owner",
        "_trylock_point",
        "_unlock_point",
        "_wq",
        "name",
    )

    def __init__(self, hooks: SchedulerHooks, name: str = "mutex") -> None:
        self._hooks = hooks
        self.name = name
        self._locked = False
        self._owner: TaskInfo | None = None
        self._wq = WaitQueue(hooks, f"mutex:{name}")
        self._lock_point = f"mutex_lock:{name}"
        self._trylock_point = f"mutex_trylock:{name}"
        self._unlock_point = f"mutex_unlock:{name}"

    @property
    def owner(self) -> TaskInfo | None:
        """The holder (``None`` if unlocked or held by setup code outside any task)."""
        return self._owner

    def is_locked(self) -> bool:
        """Models: include/linux/mutex.h mutex_is_locked()."""
        return self._locked

    def held_by_current(self) -> bool:
        return self._locked and self._owner is self._hooks.current_task()

    def _check_recursion(self, cur: TaskInfo | None) -> None:
        if self._locked and self._owner is cur:
            raise ModelInvariantError(
                f"possible recursive locking detected: {_task_name(cur)} already holds mutex {self.name!r}"
            )

    def lock(self) -> None:
        """Take the mutex, sleeping while another task holds it.

        Outcomes: returns holding the lock; ``ModelInvariantError`` on recursive locking or
        when called with a spinlock held; a deadlock is reported by the scheduler.
        """
        hooks = self._hooks
        cur = hooks.current_task()
        self._check_recursion(cur)
        might_sleep(hooks, self._lock_point)
        hooks.preempt(self._lock_point)
        while self._locked:
            hooks.block(self._wq)
        self._locked = True
        self._owner = cur

    def lock_interruptible(self) -> int:
        """Take the mutex unless a signal arrives while waiting.

        Outcomes: 0 (lock held); ``-EINTR`` if the lock is contended and a signal is
        pending (lock not held).
        """
        hooks = self._hooks
        cur = hooks.current_task()
        self._check_recursion(cur)
        might_sleep(hooks, self._lock_point)
        hooks.preempt(self._lock_point)
        while self._locked:
            if cur is not None and cur.signal_pending:
                return -errno.EINTR
            hooks.block(self._wq, True)
        self._locked = True
        self._owner = cur
        return 0

    def trylock(self) -> bool:
        """Take the mutex only if free. Outcomes: ``True`` (held) or ``False``."""
        hooks = self._hooks
        hooks.preempt(self._trylock_point)
        if self._locked:
            return False
        self._locked = True
        self._owner = hooks.current_task()
        return True

    def unlock(self) -> None:
        """Release the mutex and wake the first waiter.

        Outcomes: returns; ``ModelInvariantError`` if unlocked or held by another task.
        """
        hooks = self._hooks
        cur = hooks.current_task()
        if not self._locked:
            raise ModelInvariantError(f"mutex_unlock of unlocked mutex {self.name!r} by {_task_name(cur)}")
        if self._owner is not cur:
            raise ModelInvariantError(
                f"mutex_unlock of {self.name!r} by {_task_name(cur)}, owner is {_task_name(self._owner)}"
            )
        self._locked = False
        self._owner = None
        if self._wq.waiters:
            hooks.wake(self._wq)
        hooks.preempt(self._unlock_point)

    def __enter__(self) -> Mutex:
        self.lock()
        return self

    def __exit__(self, *exc: object) -> None:
        self.unlock()

    def __repr__(self) -> str:
        return f"Mutex({self.name!r}, owner={_task_name(self._owner) if self._locked else None})"


class SpinLock:
    """A busy-waiting lock (``spinlock_t``); holding it forbids sleeping.

    Models: include/linux/spinlock.h spin_lock(), spin_trylock(), spin_unlock()
    (preempt_count raised while held, checked by might_sleep()).
    Preemption points: ``spin_lock:<name>`` before the attempt, ``spin_unlock:<name>``
    after the release. Other tasks still interleave while it is held: they model the
    other CPUs, which keep running.
    Differs: a contended acquirer is parked on a wait queue instead of spinning; the
    observable orders are the same.
    """

    __slots__ = ("_hooks", "_lock_point", "_locked", "_owner", "_unlock_point", "_wq", "name")

    def __init__(self, hooks: SchedulerHooks, name: str = "spinlock") -> None:
        self._hooks = hooks
        self.name = name
        self._locked = False
        self._owner: TaskInfo | None = None
        self._wq = WaitQueue(hooks, f"spinlock:{name}")
        self._lock_point = f"spin_lock:{name}"
        self._unlock_point = f"spin_unlock:{name}"

    @property
    def owner(self) -> TaskInfo | None:
        return self._owner

    def is_locked(self) -> bool:
        """Models: include/linux/spinlock.h spin_is_locked()."""
        return self._locked

    def held_by_current(self) -> bool:
        return self._locked and self._owner is self._hooks.current_task()

    def lock(self) -> None:
        """Take the lock. Outcomes: returns holding it; ``ModelInvariantError`` on recursion."""
        hooks = self._hooks
        cur = hooks.current_task()
        if self._locked and self._owner is cur:
            raise ModelInvariantError(
                f"recursive spin_lock: {_task_name(cur)} already holds {self.name!r} (self-deadlock)"
            )
        hooks.preempt(self._lock_point)
        while self._locked:
            hooks.block(self._wq)
        self._locked = True
        self._owner = cur
        if cur is not None:
            cur.preempt_count += 1

    def trylock(self) -> bool:
        """Take the lock only if free. Outcomes: ``True`` (held) or ``False``."""
        hooks = self._hooks
        hooks.preempt(self._lock_point)
        if self._locked:
            return False
        cur = hooks.current_task()
        self._locked = True
        self._owner = cur
        if cur is not None:
            cur.preempt_count += 1
        return True

    def unlock(self) -> None:
        """Release the lock. Outcomes: returns; ``ModelInvariantError`` if not held by the caller."""
        hooks = self._hooks
        cur = hooks.current_task()
        if not self._locked or self._owner is not cur:
            raise ModelInvariantError(
                f"spin_unlock of {self.name!r} by {_task_name(cur)}, "
                f"owner is {_task_name(self._owner) if self._locked else 'nobody'}"
            )
        self._locked = False
        self._owner = None
        if cur is not None:
            cur.preempt_count -= 1
        if self._wq.waiters:
            hooks.wake(self._wq)
        hooks.preempt(self._unlock_point)

    def __enter__(self) -> SpinLock:
        self.lock()
        return self

    def __exit__(self, *exc: object) -> None:
        self.unlock()

    def __repr__(self) -> str:
        return f"SpinLock({self.name!r}, owner={_task_name(self._owner) if self._locked else None})"


class RwSemaphore:
    """A reader/writer sleeping lock (``struct rw_semaphore``).

    Models: kernel/locking/rwsem.c down_read(), down_read_trylock(), up_read(),
    down_write(), down_write_trylock(), up_write().
    Preemption points: ``down_read:<name>``, ``up_read:<name>``, ``down_write:<name>``,
    ``up_write:<name>``.
    A new reader waits while a writer holds the lock *or waits for it* (as rwsem does to
    avoid writer starvation), so a recursive down_read() can deadlock against a queued
    writer, as in Linux.
    """

    __slots__ = (
        "_hooks",
        "_points",
        "_readers",
        "_waiting_writers",
        "_wq",
        "_writer",
        "_writer_owner",
        "name",
    )

    def __init__(self, hooks: SchedulerHooks, name: str = "rwsem") -> None:
        self._hooks = hooks
        self.name = name
        self._readers: dict[TaskInfo | None, int] = {}
        self._writer = False
        self._writer_owner: TaskInfo | None = None
        self._waiting_writers = 0
        self._wq = WaitQueue(hooks, f"rwsem:{name}")
        self._points = tuple(f"{op}:{name}" for op in ("down_read", "up_read", "down_write", "up_write"))

    @property
    def reader_count(self) -> int:
        return sum(self._readers.values())

    def is_write_locked(self) -> bool:
        return self._writer

    def is_locked(self) -> bool:
        """Models: include/linux/rwsem.h rwsem_is_locked()."""
        return self._writer or bool(self._readers)

    def held_by_current(self) -> bool:
        """Read- or write-held by the current task (lockdep_assert_held accepts either)."""
        cur = self._hooks.current_task()
        return (self._writer and self._writer_owner is cur) or cur in self._readers

    def write_held_by_current(self) -> bool:
        return self._writer and self._writer_owner is self._hooks.current_task()

    def _add_reader(self, cur: TaskInfo | None) -> None:
        self._readers[cur] = self._readers.get(cur, 0) + 1

    def down_read(self) -> None:
        """Take the lock shared. Outcomes: returns holding it; ``ModelInvariantError`` if the
        caller write-holds it (self-deadlock)."""
        hooks = self._hooks
        cur = hooks.current_task()
        if self._writer and self._writer_owner is cur:
            raise ModelInvariantError(f"down_read of {self.name!r} by its writer {_task_name(cur)}: deadlock")
        might_sleep(hooks, self._points[0])
        hooks.preempt(self._points[0])
        while self._writer or self._waiting_writers:
            hooks.block(self._wq)
        self._add_reader(cur)

    def down_read_trylock(self) -> bool:
        """Outcomes: ``True`` (read-held) or ``False`` (a writer holds or waits)."""
        hooks = self._hooks
        hooks.preempt(self._points[0])
        if self._writer or self._waiting_writers:
            return False
        self._add_reader(hooks.current_task())
        return True

    def up_read(self) -> None:
        """Release a shared hold. Outcomes: returns; ``ModelInvariantError`` if the caller holds none."""
        hooks = self._hooks
        cur = hooks.current_task()
        n = self._readers.get(cur, 0)
        if n == 0:
            raise ModelInvariantError(
                f"up_read of {self.name!r} by {_task_name(cur)}, which does not hold it"
            )
        if n == 1:
            del self._readers[cur]
        else:
            self._readers[cur] = n - 1
        if not self._readers and self._wq.waiters:
            hooks.wake_all(self._wq)
        hooks.preempt(self._points[1])

    def down_write(self) -> None:
        """Take the lock exclusive. Outcomes: returns holding it; ``ModelInvariantError`` if the
        caller already holds it (self-deadlock)."""
        hooks = self._hooks
        cur = hooks.current_task()
        if (self._writer and self._writer_owner is cur) or cur in self._readers:
            raise ModelInvariantError(f"down_write of {self.name!r} by {_task_name(cur)}, which holds it")
        might_sleep(hooks, self._points[2])
        hooks.preempt(self._points[2])
        self._waiting_writers += 1
        try:
            while self._writer or self._readers:
                hooks.block(self._wq)
        finally:
            self._waiting_writers -= 1
        self._writer = True
        self._writer_owner = cur

    def down_write_trylock(self) -> bool:
        """Outcomes: ``True`` (write-held) or ``False``."""
        hooks = self._hooks
        hooks.preempt(self._points[2])
        if self._writer or self._readers:
            return False
        self._writer = True
        self._writer_owner = hooks.current_task()
        return True

    def up_write(self) -> None:
        """Release the exclusive hold. Outcomes: returns; ``ModelInvariantError`` if not the writer."""
        hooks = self._hooks
        cur = hooks.current_task()
        if not self._writer or self._writer_owner is not cur:
            raise ModelInvariantError(
                f"up_write of {self.name!r} by {_task_name(cur)}, which is not the writer"
            )
        self._writer = False
        self._writer_owner = None
        if self._wq.waiters:
            hooks.wake_all(self._wq)
        hooks.preempt(self._points[3])

    @contextmanager
    def read(self) -> Iterator[None]:
        self.down_read()
        try:
            yield
        finally:
            self.up_read()

    @contextmanager
    def write(self) -> Iterator[None]:
        self.down_write()
        try:
            yield
        finally:
            self.up_write()


class Srcu:
    """Sleepable RCU (``struct srcu_struct``): readers may sleep; writers wait for them.

    Models: include/linux/srcu.h srcu_read_lock(), srcu_read_unlock(),
    synchronize_srcu(), srcu_read_lock_held() (kernel/rcu/srcutree.c).
    Preemption points: ``srcu_read_lock:<name>`` before entry, ``srcu_read_unlock:<name>``
    after exit, ``synchronize_srcu:<name>`` at the start of a grace period and
    ``synchronize_srcu_done:<name>`` at its end.
    Differs: the grace period is exact: synchronize_srcu() waits for precisely the
    readers that entered before the call (Linux may also wait for some later ones,
    which SRCU permits). The index returned by srcu_read_lock() is a per-reader ticket,
    not Linux's 0/1 counter index; it must be passed back to srcu_read_unlock() all the same.
    """

    __slots__ = ("_done_point", "_held", "_hooks", "_lock_point", "_next", "_readers", "_sync_point",
                 "_unlock_point", "_wq", "name")  # fmt: skip

    def __init__(self, hooks: SchedulerHooks, name: str = "srcu") -> None:
        self._hooks = hooks
        self.name = name
        self._next = 0
        # ticket -> reader; tickets grow, and dicts keep insertion order, so the first
        # key is always the oldest active reader.
        self._readers: dict[int, TaskInfo | None] = {}
        self._held: dict[TaskInfo | None, int] = {}
        self._wq = WaitQueue(hooks, f"srcu:{name}")
        self._lock_point = f"srcu_read_lock:{name}"
        self._unlock_point = f"srcu_read_unlock:{name}"
        self._sync_point = f"synchronize_srcu:{name}"
        self._done_point = f"synchronize_srcu_done:{name}"

    @property
    def reader_count(self) -> int:
        return len(self._readers)

    def held_by_current(self) -> bool:
        return self._held.get(self._hooks.current_task(), 0) > 0

    def srcu_read_lock(self) -> int:
        """Enter a read-side critical section. Outcome: the index for srcu_read_unlock()."""
        hooks = self._hooks
        hooks.preempt(self._lock_point)
        cur = hooks.current_task()
        idx = self._next
        self._next = idx + 1
        self._readers[idx] = cur
        self._held[cur] = self._held.get(cur, 0) + 1
        return idx

    def srcu_read_unlock(self, idx: int) -> None:
        """Leave the read-side section ``idx``. Outcomes: returns; ``ModelInvariantError``
        for an index that is not an active reader; ``InvalidArgument`` for a non-int."""
        hooks = self._hooks
        if not isinstance(idx, int) or isinstance(idx, bool):
            raise InvalidArgument(f"srcu_read_unlock index must be an int, got {idx!r}")
        try:
            reader = self._readers.pop(idx)
        except KeyError:
            raise ModelInvariantError(f"srcu_read_unlock({idx!r}) on {self.name!r}: no such reader") from None
        n = self._held[reader]
        if n == 1:
            del self._held[reader]
        else:
            self._held[reader] = n - 1
        if self._wq.waiters:
            hooks.wake_all(self._wq)
        hooks.preempt(self._unlock_point)

    def _oldest(self) -> int | None:
        return next(iter(self._readers), None)

    def synchronize_srcu(self) -> None:
        """Wait until every reader that entered before this call has left.

        Outcomes: returns; ``ModelInvariantError`` if called inside a read-side section of
        this same srcu_struct (lockdep: "Illegal synchronize_srcu() in same-type SRCU
        read-side critical section") or with a spinlock held.
        """
        hooks = self._hooks
        if self.held_by_current():
            raise ModelInvariantError(
                f"Illegal synchronize_srcu() in same-type SRCU ({self.name!r}) read-side critical section"
            )
        might_sleep(hooks, self._sync_point)
        target = self._next

        def grace_period_over() -> bool:
            oldest = self._oldest()
            return oldest is None or oldest >= target

        hooks.preempt(self._sync_point)
        self._wq.wait_event(grace_period_over)
        hooks.preempt(self._done_point)

    @contextmanager
    def read_section(self) -> Iterator[int]:
        idx = self.srcu_read_lock()
        try:
            yield idx
        finally:
            self.srcu_read_unlock(idx)


def srcu_read_lock_held(srcu: Srcu) -> bool:
    """Whether the current task is inside a read-side section of ``srcu``.

    Models: include/linux/srcu.h srcu_read_lock_held() (with lockdep enabled).
    """
    return srcu.held_by_current()


class _Lockable(Protocol):
    name: str

    def held_by_current(self) -> bool: ...


def lockdep_assert_held(lock: _Lockable) -> None:
    """Assert the current task holds ``lock`` (a Mutex, SpinLock, RwSemaphore or Srcu read side).

    Models: include/linux/lockdep.h lockdep_assert_held().
    Outcomes: returns; ``ModelInvariantError`` naming the lock if it is not held.
    """
    if not lock.held_by_current():
        raise ModelInvariantError(f"lockdep_assert_held: {lock.name!r} is not held by the current task")


def lockdep_assert_not_held(lock: _Lockable) -> None:
    """Models: include/linux/lockdep.h lockdep_assert_not_held(). Outcomes: returns or raises."""
    if lock.held_by_current():
        raise ModelInvariantError(f"lockdep_assert_not_held: {lock.name!r} is held by the current task")


# --------------------------------------------------------------------------- completion


class Completion:
    """A one-shot (or counted) event to wait for (``struct completion``).

    Models: kernel/sched/completion.c complete(), complete_all(),
    wait_for_completion(), wait_for_completion_interruptible(),
    try_wait_for_completion(), completion_done(), reinit_completion().
    """

    __slots__ = ("_hooks", "_wq", "done", "name")

    def __init__(self, hooks: SchedulerHooks, name: str = "completion") -> None:
        self._hooks = hooks
        self.name = name
        self.done = 0
        self._wq = WaitQueue(hooks, f"completion:{name}")

    def complete(self) -> None:
        """Signal one waiter (or the next wait). Outcome: returns."""
        if self.done != COMPLETION_DONE_ALL:
            self.done += 1
        self._wq.wake_up()
        self._hooks.preempt(f"complete:{self.name}")

    def complete_all(self) -> None:
        """Signal every current and future waiter. Outcome: returns."""
        self.done = COMPLETION_DONE_ALL
        self._wq.wake_up_all()
        self._hooks.preempt(f"complete:{self.name}")

    def _consume(self) -> None:
        if self.done != COMPLETION_DONE_ALL:
            self.done -= 1

    def wait_for_completion(self) -> None:
        """Sleep until completed, then consume one completion. Outcome: returns."""
        self._wq.wait_event(lambda: self.done > 0)
        self._consume()

    def wait_for_completion_interruptible(self) -> int:
        """Outcomes: 0 (consumed one completion) or ``-ERESTARTSYS`` (signal pending)."""
        ret = self._wq.wait_event(lambda: self.done > 0, interruptible=True)
        if ret == 0:
            self._consume()
        return ret

    def try_wait_for_completion(self) -> bool:
        """Consume a completion without sleeping. Outcomes: ``True`` or ``False``."""
        if self.done == 0:
            return False
        self._consume()
        return True

    def completion_done(self) -> bool:
        """Whether a wait would return at once (no waiters consumed it yet)."""
        return self.done > 0

    def reinit_completion(self) -> None:
        self.done = 0


# --------------------------------------------------------------------------- atomics


class AtomicInt:
    """``atomic_t`` (32-bit) or ``atomic64_t``/``atomic_long_t`` (``bits=64``), wrapping.

    Models: include/linux/atomic/atomic-instrumented.h (atomic_read, atomic_set,
    atomic_inc, atomic_dec, atomic_add, atomic_sub, *_return, atomic_dec_and_test,
    atomic_inc_not_zero, atomic_add_unless, atomic_cmpxchg, atomic_xchg).
    Each operation is indivisible and is not a preemption point.
    """

    __slots__ = ("_half", "_mask", "_value")

    def __init__(self, value: int = 0, bits: int = 32) -> None:
        if bits not in (32, 64):
            raise InvalidArgument(f"atomic width must be 32 or 64 bits, got {bits!r}")
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidArgument(f"atomic value must be an int, got {value!r}")
        self._mask = (1 << bits) - 1
        self._half = 1 << (bits - 1)
        self._value = self._wrap(value)

    def _wrap(self, v: int) -> int:
        return ((v + self._half) & self._mask) - self._half

    def read(self) -> int:
        return self._value

    def set(self, value: int) -> None:
        self._value = self._wrap(value)

    def add_return(self, n: int) -> int:
        self._value = v = self._wrap(self._value + n)
        return v

    def add(self, n: int) -> None:
        self.add_return(n)

    def sub(self, n: int) -> None:
        self.add_return(-n)

    def inc(self) -> None:
        self.add_return(1)

    def dec(self) -> None:
        self.add_return(-1)

    def inc_return(self) -> int:
        return self.add_return(1)

    def dec_return(self) -> int:
        return self.add_return(-1)

    def dec_and_test(self) -> bool:
        """Decrement; ``True`` if the result is zero."""
        return self.add_return(-1) == 0

    def add_unless(self, n: int, unless: int) -> bool:
        """Add ``n`` unless the value is ``unless``; ``True`` if it added."""
        if self._value == unless:
            return False
        self.add_return(n)
        return True

    def inc_not_zero(self) -> bool:
        return self.add_unless(1, 0)

    def cmpxchg(self, old: int, new: int) -> int:
        """Store ``new`` if the value equals ``old``; returns the value seen."""
        seen = self._value
        if seen == old:
            self._value = self._wrap(new)
        return seen

    def xchg(self, new: int) -> int:
        seen = self._value
        self._value = self._wrap(new)
        return seen

    def __repr__(self) -> str:
        return f"AtomicInt({self._value})"


class Kref:
    """A reference count that releases its object when it drops to zero (``struct kref``).

    Models: include/linux/kref.h kref_init(), kref_get(), kref_get_unless_zero(),
    kref_put(), kref_read() (refcount_t checks for use-after-free and underflow).
    ``container`` stands in for container_of(): the object the count belongs to.
    Differs: a get on zero or a put below zero raises ``ModelInvariantError`` instead of
    refcount_t's WARN-and-saturate: in the model it is a use-after-free to surface.
    """

    __slots__ = ("container", "refcount")

    def __init__(self, container: object = None) -> None:
        self.container = container
        self.refcount = AtomicInt(1)

    def kref_read(self) -> int:
        return self.refcount.read()

    def kref_get(self) -> None:
        """Take a reference. Outcomes: returns; ``ModelInvariantError`` if the count was 0."""
        if self.refcount.read() <= 0:
            raise ModelInvariantError("refcount_t: addition on 0; use-after-free")
        self.refcount.inc()

    def kref_get_unless_zero(self) -> bool:
        """Outcomes: ``True`` (reference taken) or ``False`` (object already being released)."""
        return self.refcount.inc_not_zero()

    def kref_put(self, release_fn: Callable[[Kref], object]) -> bool:
        """Drop a reference; on the last one call ``release_fn(self)``.

        Outcomes: ``True`` if this put released the object, else ``False``;
        ``ModelInvariantError`` on underflow.
        """
        if self.refcount.read() <= 0:
            raise ModelInvariantError("refcount_t: underflow; use-after-free")
        if self.refcount.dec_and_test():
            release_fn(self)
            return True
        return False

    def __repr__(self) -> str:
        return f"Kref({self.refcount.read()})"
