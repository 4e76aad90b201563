"""A deterministic, seeded scheduler for kernel tasks, built on greenlets.

Every task is a greenlet. Kernel code yields at named preemption points
(:meth:`DeterministicScheduler.preempt`, called by every lock in
:mod:`sgxsim.kernel.locking` and by the ENCLS wrappers) and whenever it sleeps; at
each such point the scheduler makes one *scheduling decision* (a *step*): a
:class:`Strategy` picks which runnable task runs next. The decisions are recorded in
:attr:`DeterministicScheduler.schedule` as ``(step, task name, point)``: the chosen
task resumes at ``point``. The same program with the same strategy seed gives the same
trace, and :class:`ReplayStrategy` re-runs a recorded trace exactly.

Strategies: :class:`RandomWalk` (uniform choice at every step), :class:`Pct`
(probabilistic concurrency testing, Burckhardt et al., ASPLOS 2010),
:class:`RoundRobin` (switch at every point), :class:`TimeOrdered` (discrete-event: the
task with the least simulated time goes next; for realistic timelines) and
:class:`ReplayStrategy`.

Simulated time: each task has its own clock (``Task.local_ns``) that its
:meth:`~DeterministicScheduler.charge` calls advance; a task woken by another cannot
run before the waker's time; the global time (:meth:`~DeterministicScheduler.now_ns`)
is the maximum of the task times observed so far (whenever a task is scheduled or asks
for the time), so it never goes back. Sleepers wake when the global time reaches their
wake time; when nothing else can run, time jumps to the earliest sleeper.

A scheduling decision costs a few microseconds: the runnable set is a list kept in
task-creation order (bisect insert and delete), switching is a direct greenlet switch
from task to task, and a decision that keeps the current task does not switch at all.
"""

from __future__ import annotations

import abc
import bisect
import enum
import functools
import heapq
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, ClassVar, Final, NamedTuple, TypeVar, cast

import greenlet

from sgxsim.errors import InvalidArgument, ModelInvariantError, SgxSimError
from sgxsim.kernel.locking import SchedulerHooks, WaitQueue, might_sleep
from sgxsim.sim.clock import SimClock

__all__ = [
    "STUCK_SPIN_DECISIONS",
    "Blocked",
    "DeterministicScheduler",
    "Pct",
    "RandomWalk",
    "ReplayDivergence",
    "ReplayStrategy",
    "RoundRobin",
    "RunResult",
    "SchedClock",
    "Strategy",
    "Task",
    "TaskState",
    "TimeOrdered",
    "TraceEntry",
    "format_trace",
]

T = TypeVar("T")

_TID = attrgetter("tid")
_LOCAL = attrgetter("local_ns")
_PRIORITY = attrgetter("priority")

#: Value a task greenlet hands the run loop when it stops the run (limit, deadlock, error).
_STOP: Final = "sgxsim-sched-stop"
#: Value a task greenlet returns to the run loop when its function has returned.
_EXIT: Final = "sgxsim-sched-exit"
#: Consecutive decisions in which every runnable task only retries a page fault (and none
#: sleeps) after which the run stops as "stuck": those tasks spin in page faults for ever.
STUCK_SPIN_DECISIONS: Final = 1000


class ReplayDivergence(SgxSimError):
    """A replayed choice names a task that is not runnable at that step (the program changed)."""


class TaskState(enum.Enum):
    RUNNABLE = "runnable"
    BLOCKED = "blocked"
    SLEEPING = "sleeping"
    DONE = "done"
    FAILED = "failed"
    KILLED = "killed"


_LIVE_STATES: Final = frozenset({TaskState.RUNNABLE, TaskState.BLOCKED, TaskState.SLEEPING})


class TraceEntry(NamedTuple):
    """One scheduling decision: at ``step`` task ``task`` runs, resuming at ``point``."""

    step: int
    task: str
    point: str


class Blocked(NamedTuple):
    """A task found blocked when the run stopped."""

    task: str
    waitq: str
    point: str


class Task:
    """One schedulable kernel (or user) thread of control.

    Implements :class:`sgxsim.kernel.locking.TaskInfo`. ``point`` is the preemption
    point where it is paused (``"start"`` before it first runs); ``local_ns`` its own
    simulated time; ``priority`` is scratch space for the strategy (PCT).
    """

    __slots__ = ("_sched", "args", "cpu", "daemon", "exception", "fault_retries", "fn", "glet",
                 "interruptible", "local_ns", "name", "point", "preempt_count", "priority", "result", "root",
                 "signal_pending", "sleep_interrupted", "sleep_key", "started", "state", "tid",
                 "waitq")  # fmt: skip

    def __init__(
        self,
        sched: DeterministicScheduler,
        fn: Callable[..., object],
        args: tuple[object, ...],
        name: str,
        cpu: int,
        tid: int,
        daemon: bool,
        local_ns: int,
    ) -> None:
        self._sched = sched
        self.fn = fn
        self.args = args
        self.name = name
        self.cpu = cpu
        self.tid = tid
        self.daemon = daemon
        self.local_ns = local_ns
        self.state = TaskState.RUNNABLE
        self.point = "start"
        self.signal_pending = False
        self.preempt_count = 0
        self.fault_retries = 0
        self.priority = 0.0
        self.waitq: WaitQueue | None = None
        self.interruptible = False
        self.sleep_key = -1
        self.sleep_interrupted = False
        self.started = False
        self.result: object = None
        self.exception: BaseException | None = None
        self.root: Any = None  # the task's own greenlet
        self.glet: Any = None  # the greenlet to resume (differs from root inside nested greenlets)

    @property
    def alive(self) -> bool:
        return self.state in _LIVE_STATES

    def send_signal(self) -> None:
        """Make a signal pending; an interruptible wait or sleep of this task ends at once.

        Models: kernel/signal.c signal_wake_up() (TASK_INTERRUPTIBLE sleepers are woken).
        """
        self._sched._signal(self)

    def clear_signal(self) -> None:
        """The signal was delivered (the task returned to user space and ran its handler)."""
        self.signal_pending = False

    def __repr__(self) -> str:
        return f"<Task {self.name} {self.state.value} at {self.point!r} t={self.local_ns}ns>"


@dataclass(frozen=True)
class RunResult:
    """How a :meth:`DeterministicScheduler.run` call ended.

    Exactly one of ``completed`` (every non-daemon task finished), ``deadlocked`` (tasks
    remain, none can run and none sleeps; ``blocked`` says who waits where),
    ``step_limit_hit`` and ``stuck`` is true. ``stuck``: for :data:`STUCK_SPIN_DECISIONS`
    decisions every runnable task did nothing but retry a page fault (its ``fault_retries``
    stayed non-zero: it never got out of the kernel's fault loop) and nothing slept: a
    user-reachable hang as in Linux (e.g. a task touching a re-mapped /dev/sgx_vepc offset),
    not a model bug; ``spinning`` names the tasks.
    """

    completed: bool
    deadlocked: bool
    step_limit_hit: bool
    steps: int  # decisions made by this run() call
    total_steps: int  # decisions made since the scheduler was created
    now_ns: int
    blocked: tuple[Blocked, ...] = ()
    stuck: bool = False
    spinning: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.completed:
            return f"completed after {self.total_steps} steps at {self.now_ns} ns"
        if self.step_limit_hit:
            return f"step limit hit after {self.total_steps} steps"
        if self.stuck:
            return f"stuck after {self.total_steps} steps: {', '.join(self.spinning)} spin in page faults"
        waits = ", ".join(f"{b.task} on {b.waitq}" for b in self.blocked)
        return f"deadlock after {self.total_steps} steps: {waits}"


# --------------------------------------------------------------------------- strategies


class Strategy(abc.ABC):
    """Picks the next task at each scheduling decision.

    ``choose`` gets the runnable tasks in creation order (never empty), the task that
    was running (``None`` right after a task finished) and the 1-based step number.
    A strategy instance belongs to one scheduler.
    """

    #: If true, sleepers whose wake time is not after the earliest runnable task's time
    #: are woken before choosing (needed for exact discrete-event order).
    time_ordered: ClassVar[bool] = False

    def attach(self, sched: DeterministicScheduler) -> None:
        """Called once by the scheduler that will use this strategy (default: nothing to do)."""
        return

    def on_spawn(self, task: Task) -> None:
        """Called for every new task (default: nothing to do)."""
        return

    @abc.abstractmethod
    def choose(self, runnable: Sequence[Task], current: Task | None, step: int) -> Task:
        """Pick the task that runs next among ``runnable``."""


def _check_rng(rng: object) -> random.Random:
    if not isinstance(rng, random.Random):
        raise InvalidArgument(f"strategy rng must be a random.Random, got {rng!r}")
    return rng


class RandomWalk(Strategy):
    """Uniformly random runnable task at every step (a random walk over interleavings)."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = _check_rng(rng)

    def choose(self, runnable: Sequence[Task], current: Task | None, step: int) -> Task:
        n = len(runnable)
        return runnable[0] if n == 1 else runnable[self._rng.randrange(n)]


class RoundRobin(Strategy):
    """Switch at every point: the next runnable task after the last one, by creation order."""

    def __init__(self) -> None:
        self._last = -1

    def choose(self, runnable: Sequence[Task], current: Task | None, step: int) -> Task:
        i = bisect.bisect_right(runnable, self._last, key=_TID)
        task = runnable[i] if i < len(runnable) else runnable[0]
        self._last = task.tid
        return task


class TimeOrdered(Strategy):
    """Discrete-event order: the runnable task with the least local time; ties by creation order."""

    time_ordered = True

    def choose(self, runnable: Sequence[Task], current: Task | None, step: int) -> Task:
        # min() keeps the first of equal keys, and runnable is in creation order.
        return min(runnable, key=_LOCAL)


class Pct(Strategy):
    """Probabilistic concurrency testing (Burckhardt, Kothari, Musuvathi, Nagarakatte, ASPLOS'10).

    Each task gets a random priority at or above ``depth`` when spawned; ``depth - 1``
    change points are drawn from steps ``1..expected_steps``; the highest-priority
    runnable task always runs, and at the i-th change point the running task drops to
    priority ``i`` (below every initial priority). A bug of depth ``d`` among ``n``
    tasks and ``k`` steps is found by one run with probability at least ``1/(n k^(d-1))``.

    Differs: tasks here stand for threads on *different* CPUs running in parallel, where one
    that spin-waits (a fault retried while ksgxd holds the page, an IPI sender) cannot stop the
    others. Strict priorities would starve the task it waits for forever, so a runnable task
    passed over ``max_run`` consecutive decisions becomes the highest-priority task
    (``max_run=None`` disables this and gives textbook PCT).
    """

    def __init__(
        self, rng: random.Random, depth: int, expected_steps: int, max_run: int | None = 512
    ) -> None:
        self._rng = _check_rng(rng)
        if max_run is not None and (not isinstance(max_run, int) or isinstance(max_run, bool) or max_run < 1):
            raise InvalidArgument(f"PCT max_run must be None or an int >= 1, got {max_run!r}")
        self.max_run = max_run
        #: Consecutive decisions each runnable task was passed over (by task id).
        self._waited: dict[int, int] = {}
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
            raise InvalidArgument(f"PCT depth must be an int >= 1, got {depth!r}")
        if (
            not isinstance(expected_steps, int)
            or isinstance(expected_steps, bool)
            or expected_steps < depth - 1
        ):
            raise InvalidArgument(
                f"PCT expected_steps must be an int >= depth - 1 ({depth - 1}), got {expected_steps!r}"
            )
        self.depth = depth
        self.expected_steps = expected_steps
        steps = self._rng.sample(range(1, expected_steps + 1), depth - 1)
        self.change_points: dict[int, float] = {step: float(i) for i, step in enumerate(steps, start=1)}

    def on_spawn(self, task: Task) -> None:
        task.priority = self.depth + self._rng.random()

    def choose(self, runnable: Sequence[Task], current: Task | None, step: int) -> Task:
        if current is not None and step in self.change_points:
            current.priority = self.change_points[step]
        # max() keeps the first of equal keys: ties go to the older task.
        task = max(runnable, key=_PRIORITY)
        if self.max_run is None or len(runnable) == 1:
            return task
        waited = self._waited
        starved: Task | None = None
        for t in runnable:
            if t is task:
                waited[t.tid] = 0
            else:
                n = waited.get(t.tid, 0) + 1
                waited[t.tid] = n
                if n >= self.max_run and (starved is None or n > waited[starved.tid]):
                    starved = t
        if starved is not None:
            # Passed over max_run times in a row while runnable: it becomes the top priority.
            starved.priority = task.priority + 1.0
            waited[starved.tid] = 0
            waited[task.tid] = 1
            return starved
        return task


class ReplayStrategy(Strategy):
    """Replay a recorded sequence of choices (task names, one per step).

    Outcomes per step: the named task; ``ReplayDivergence`` if it is not runnable or the
    choices ran out (unless a ``fallback`` strategy takes over from there).
    """

    def __init__(self, choices: Sequence[str], fallback: Strategy | None = None) -> None:
        if isinstance(choices, str) or not all(isinstance(c, str) for c in choices):
            raise InvalidArgument("replay choices must be a sequence of task names")
        self.choices = tuple(choices)
        self.fallback = fallback
        self.position = 0
        self._sched: DeterministicScheduler | None = None

    def attach(self, sched: DeterministicScheduler) -> None:
        self._sched = sched
        if self.fallback is not None:
            self.fallback.attach(sched)

    def on_spawn(self, task: Task) -> None:
        if self.fallback is not None:
            self.fallback.on_spawn(task)

    def choose(self, runnable: Sequence[Task], current: Task | None, step: int) -> Task:
        i = self.position
        if i >= len(self.choices):
            if self.fallback is not None:
                return self.fallback.choose(runnable, current, step)
            raise ReplayDivergence(f"step {step}: replay ran out of choices after {len(self.choices)}")
        self.position = i + 1
        name = self.choices[i]
        task = None if self._sched is None else self._sched.find_task(name)
        if task is None or task.state is not TaskState.RUNNABLE:
            raise ReplayDivergence(
                f"step {step}: replay wants {name!r}, runnable are {[t.name for t in runnable]}"
            )
        return task


# --------------------------------------------------------------------------- scheduler


class DeterministicScheduler(SchedulerHooks):
    """Runs tasks one at a time, switching only at preemption points, as a strategy dictates.

    Models: the Linux scheduler as seen by SGX driver code (kernel/sched/core.c
    schedule(), try_to_wake_up(); kernel/stop_machine.c stop_machine();
    kernel/time/sleep_timeout.c msleep(), msleep_interruptible()).
    Differs: tasks on the same ``cpu`` are not time-sliced against each other (each
    task is its own timeline); give concurrently running tasks distinct CPUs for
    realistic timelines. Only explicit preemption points switch tasks. Time causality is
    carried by wake-ups (a woken task cannot run before its waker's time), not by plain
    shared-memory reads; under :class:`TimeOrdered` the two agree.

    Always :meth:`close` a scheduler whose tasks did not all finish (or use it as a
    context manager): a suspended greenlet is invisible to the cycle collector, so it
    pins the scheduler, its tasks and their saved stacks (about 10 KB per task).
    """

    def __init__(
        self,
        strategy: Strategy | None = None,
        *,
        clock: SimClock | None = None,
        on_step: Callable[[int, Task], object] | None = None,
        record_trace: bool = True,
    ) -> None:
        if strategy is not None and not isinstance(strategy, Strategy):
            raise InvalidArgument(f"strategy must be a Strategy, got {strategy!r}")
        if clock is not None and not isinstance(clock, SimClock):
            raise InvalidArgument(f"clock must be a SimClock, got {clock!r}")
        self.strategy: Strategy = strategy if strategy is not None else TimeOrdered()
        self.clock = clock if clock is not None else SimClock()
        #: Called after every scheduling decision with (step, chosen task); an exception
        #: it raises stops the run and propagates from run().
        self.on_step = on_step
        self.record_trace = record_trace
        #: The schedule trace: one (step, task name, point) per decision.
        self.schedule: list[TraceEntry] = []
        self._tasks: list[Task] = []
        self._by_name: dict[str, Task] = {}
        self._runnable: list[Task] = []
        self._sleepers: list[tuple[int, int, Task]] = []
        self._current: Task | None = None
        self._main: Any = None
        self._step = 0
        self._limit = 0
        self._live = 0
        self._stop_depth = 0
        self._floor_ns = 0
        self._seq = 0
        self._closing = False
        self._stop_reason = ""
        self._pending_exc: BaseException | None = None
        self._stopped_in: Task | None = None
        self._spin = 0
        self.strategy.attach(self)

    # ----------------------------------------------------------------- tasks

    def spawn(
        self,
        fn: Callable[..., object],
        *args: object,
        name: str | None = None,
        cpu: int = 0,
        daemon: bool = False,
    ) -> Task:
        """Create a runnable task that will call ``fn(*args)``.

        ``daemon`` tasks (kthreads such as ksgxd) do not keep the run going: it completes
        when every non-daemon task has finished. Outcomes: the task; ``InvalidArgument``
        for a non-callable, a duplicate or non-str name, or a bad cpu.
        """
        if not callable(fn):
            raise InvalidArgument(f"task function must be callable, got {fn!r}")
        tid = len(self._tasks)
        if name is None:
            name = f"task{tid}"
        if not isinstance(name, str) or not name:
            raise InvalidArgument(f"task name must be a non-empty str, got {name!r}")
        if name in self._by_name:
            raise InvalidArgument(f"task name {name!r} is already used (names identify tasks in traces)")
        if not isinstance(cpu, int) or isinstance(cpu, bool) or cpu < 0:
            raise InvalidArgument(f"cpu must be a non-negative int, got {cpu!r}")
        parent = self._current
        start = parent.local_ns if parent is not None else self.clock.now_ns()
        task = Task(self, fn, args, name, cpu, tid, bool(daemon), start)
        task.root = task.glet = greenlet.greenlet(
            run=functools.partial(self._task_main, task),
            parent=self._main if self._main is not None else greenlet.getcurrent(),
        )
        self._tasks.append(task)
        self._by_name[name] = task
        self._runnable.append(task)  # the highest tid so far: stays sorted
        if not task.daemon:
            self._live += 1
        self.strategy.on_spawn(task)
        return task

    @property
    def tasks(self) -> tuple[Task, ...]:
        return tuple(self._tasks)

    @property
    def current(self) -> Task | None:
        """The running task (``None`` outside run())."""
        return self._current

    @property
    def steps(self) -> int:
        return self._step

    def cpu_clock(self) -> SchedClock:
        """A ``charge(cpu, ns)`` clock for :class:`sgxsim.hw.machine.Machine` that bills the current task."""
        return SchedClock(self)

    def find_task(self, name: str) -> Task | None:
        return self._by_name.get(name)

    def choices(self) -> list[str]:
        """The recorded decisions as task names, for :class:`ReplayStrategy`."""
        return [e.task for e in self.schedule]

    def _task_main(self, task: Task) -> str:
        task.started = True
        try:
            task.result = task.fn(*task.args)
        except greenlet.GreenletExit:
            self._finish(task, TaskState.KILLED)
            return _EXIT
        except BaseException as exc:
            task.exception = exc
            self._finish(task, TaskState.FAILED)
            raise
        self._finish(task, TaskState.DONE)
        return _EXIT

    def _finish(self, task: Task, state: TaskState) -> None:
        old = task.state
        if old not in _LIVE_STATES:
            return
        if old is TaskState.RUNNABLE:
            self._remove_runnable(task)
        elif old is TaskState.BLOCKED:
            if task.waitq is not None and task in task.waitq.waiters:
                task.waitq.waiters.remove(task)
            task.waitq = None
        else:
            task.sleep_key = -1
        task.state = state
        if not task.daemon:
            self._live -= 1

    # ----------------------------------------------------------------- run loop

    def run(self, max_steps: int | None = None) -> RunResult:
        """Run tasks until every non-daemon task is done, a deadlock, or ``max_steps`` decisions.

        A stopped run can be continued by calling run() again. Outcomes: a
        :class:`RunResult`; an exception raised by a task propagates (with a note naming
        the task), as does one raised by ``on_step`` or the strategy.
        """
        if self._main is not None:
            raise InvalidArgument("DeterministicScheduler.run() is not reentrant")
        if max_steps is not None and (
            not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 0
        ):
            raise InvalidArgument(f"max_steps must be a non-negative int or None, got {max_steps!r}")
        main = greenlet.getcurrent()
        self._main = main
        for task in self._tasks:
            if task.alive:
                task.root.parent = main
        first = self._step
        self._limit = first + max_steps if max_steps is not None else 1 << 62
        self._stop_reason = ""
        try:
            while True:
                if self._live == 0:
                    self._stop_reason = "completed"
                    break
                # After a stop inside a task, the next decision is still that task's.
                nxt = self._decide(self._stopped_in)
                self._stopped_in = None
                if nxt is None:
                    break
                self._current = nxt
                try:
                    value = nxt.glet.switch()
                except BaseException as exc:
                    failed = self._current
                    if failed is not None:
                        exc.add_note(
                            f"in sgxsim task {failed.name!r} (step {self._step}, after {failed.point!r})"
                        )
                    raise
                if value is _STOP:
                    break
                self._current = None  # the task finished: nobody runs until the next decision
        finally:
            self._current = None
            self._main = None
        if self._pending_exc is not None:
            pending, self._pending_exc = self._pending_exc, None
            raise pending
        reason = self._stop_reason
        if reason == "completed":
            for task in self._tasks:
                self.clock.advance_to(task.local_ns)
        blocked = tuple(
            Blocked(t.name, t.waitq.name if t.waitq is not None else "?", t.point)
            for t in self._tasks
            if t.state is TaskState.BLOCKED
        )
        return RunResult(
            completed=reason == "completed",
            deadlocked=reason == "deadlock",
            step_limit_hit=reason == "step_limit",
            steps=self._step - first,
            total_steps=self._step,
            now_ns=self.clock.now_ns(),
            blocked=blocked if reason == "deadlock" else (),
            stuck=reason == "stuck",
            spinning=tuple(t.name for t in self._runnable) if reason == "stuck" else (),
        )

    def _decide(self, cur: Task | None) -> Task | None:
        """One scheduling decision; ``None`` means stop the run (reason in _stop_reason)."""
        if self._step >= self._limit:
            self._stop_reason = "step_limit"
            return None
        runnable = self._runnable
        if self._sleepers:
            if self.strategy.time_ordered and runnable:
                horizon = min(runnable, key=_LOCAL).local_ns
            else:
                horizon = self.clock.now_ns()
            self._wake_sleepers(horizon)
            if not runnable:
                self._wake_earliest_sleepers()
        if not runnable:
            self._stop_reason = "deadlock"
            return None
        if self._all_spinning(runnable):
            self._spin += 1
            if self._spin > STUCK_SPIN_DECISIONS:
                self._stop_reason = "stuck"
                return None
        else:
            self._spin = 0
        self._step = step = self._step + 1
        try:
            nxt = self.strategy.choose(runnable, cur, step)
            if nxt.state is not TaskState.RUNNABLE:
                raise ModelInvariantError(f"strategy chose {nxt!r}, which is not runnable")
        except BaseException as exc:
            self._pending_exc = exc
            self._stop_reason = "error"
            return None
        nxt.local_ns = max(nxt.local_ns, self._floor_ns)
        self.clock.advance_to(nxt.local_ns)
        if self.record_trace:
            self.schedule.append(TraceEntry(step, nxt.name, nxt.point))
        if self.on_step is not None:
            try:
                self.on_step(step, nxt)
            except BaseException as exc:
                self._pending_exc = exc
                self._stop_reason = "error"
                return None
        return nxt

    def _all_spinning(self, runnable: Sequence[Task]) -> bool:
        """Every runnable task is retrying a page fault and no task sleeps on a timer."""
        if any(not t.fault_retries for t in runnable):
            return False
        return not any(t.sleep_key == key and t.state is TaskState.SLEEPING for _, key, t in self._sleepers)

    def _yield(self, cur: Task) -> None:
        """Make a decision from inside ``cur`` and switch to the chosen task (or the run loop)."""
        nxt = self._decide(cur)
        if nxt is cur:
            return
        cur.glet = greenlet.getcurrent()
        if nxt is None:
            self._stopped_in = cur
            self._main.switch(_STOP)
        else:
            self._current = nxt
            nxt.glet.switch()
        # Resumed: whoever switched back to us has set self._current = cur.

    def _remove_runnable(self, task: Task) -> None:
        runnable = self._runnable
        i = bisect.bisect_left(runnable, task.tid, key=_TID)
        if i >= len(runnable) or runnable[i] is not task:
            raise ModelInvariantError(f"{task!r} is missing from the run queue")
        del runnable[i]

    def _make_runnable(self, task: Task, at_ns: int) -> None:
        task.state = TaskState.RUNNABLE
        task.waitq = None
        task.local_ns = max(task.local_ns, at_ns)
        bisect.insort(self._runnable, task, key=_TID)

    def _wake_sleepers(self, horizon: int) -> None:
        sleepers = self._sleepers
        while sleepers and sleepers[0][0] <= horizon:
            wake_at, key, task = heapq.heappop(sleepers)
            if task.sleep_key == key and task.state is TaskState.SLEEPING:
                task.sleep_key = -1
                self._make_runnable(task, wake_at)

    def _wake_earliest_sleepers(self) -> None:
        sleepers = self._sleepers
        while sleepers:
            wake_at, key, task = sleepers[0]
            if task.sleep_key == key and task.state is TaskState.SLEEPING:
                self.clock.advance_to(wake_at)
                self._wake_sleepers(wake_at)
                return
            heapq.heappop(sleepers)

    def _waker_time(self) -> int:
        cur = self._current
        return cur.local_ns if cur is not None else self.clock.now_ns()

    # ----------------------------------------------------------------- SchedulerHooks

    def preempt(self, point: str) -> None:
        """A scheduling decision at ``point``; no-op outside run() and inside stop_machine().

        Models: kernel/sched/core.c preempt_schedule() / cond_resched() at a preemption point.
        """
        cur = self._current
        if cur is None or self._stop_depth:
            return
        cur.point = point
        self._yield(cur)

    def block(self, waitq: WaitQueue, interruptible: bool = False) -> None:
        """Sleep on ``waitq`` until woken (or signalled, if interruptible).

        Models: kernel/sched/core.c schedule() after set_current_state(TASK_(UN)INTERRUPTIBLE).
        Outcomes: returns once runnable again; ``ModelInvariantError`` outside any task or
        inside stop_machine() (nobody could wake it).
        """
        cur = self._current
        if cur is None:
            raise ModelInvariantError(f"deadlock: code outside any task sleeps on {waitq.name!r}")
        if self._closing:
            raise greenlet.GreenletExit
        if interruptible and cur.signal_pending:
            return
        if self._stop_depth:
            raise ModelInvariantError(
                f"deadlock: {cur.name!r} sleeps on {waitq.name!r} inside stop_machine(): nothing else runs"
            )
        self._remove_runnable(cur)
        cur.state = TaskState.BLOCKED
        cur.waitq = waitq
        cur.interruptible = interruptible
        cur.point = f"wait:{waitq.name}"
        waitq.waiters.append(cur)
        self._yield(cur)

    def wake(self, waitq: WaitQueue) -> None:
        """Make the first sleeper on ``waitq`` runnable, not before the waker's time.

        Models: kernel/sched/wait.c __wake_up() with nr_exclusive=1 / try_to_wake_up().
        """
        waiters = waitq.waiters
        while waiters:
            task = cast(Task, waiters.popleft())
            if task.state is TaskState.BLOCKED and task.waitq is waitq:
                self._make_runnable(task, self._waker_time())
                return

    def wake_all(self, waitq: WaitQueue) -> None:
        """Make every sleeper on ``waitq`` runnable. Models: kernel/sched/wait.c __wake_up() (all)."""
        waiters = waitq.waiters
        if not waiters:
            return
        at_ns = self._waker_time()
        while waiters:
            task = cast(Task, waiters.popleft())
            if task.state is TaskState.BLOCKED and task.waitq is waitq:
                self._make_runnable(task, at_ns)

    def current_task(self) -> Task | None:
        """``current`` (``None`` outside run())."""
        return self._current

    def now_ns(self) -> int:
        """Global simulated time: the largest task time observed so far (monotonic)."""
        cur = self._current
        if cur is not None:
            return self.clock.advance_to(cur.local_ns)
        return self.clock.now_ns()

    def charge(self, ns: int) -> None:
        """The current task spends ``ns`` (its own clock; outside run(), the global clock).

        Outcomes: returns; ``InvalidArgument`` for a negative or non-int amount.
        """
        if not isinstance(ns, int) or isinstance(ns, bool) or ns < 0:
            raise InvalidArgument(f"charge must be a non-negative int (ns), got {ns!r}")
        cur = self._current
        if cur is None:
            self.clock.advance(ns)
        else:
            cur.local_ns += ns

    def sleep_ns(self, ns: int, interruptible: bool = False) -> bool:
        """Sleep ``ns`` of simulated time.

        Models: kernel/time/sleep_timeout.c msleep() / msleep_interruptible().
        Outcomes: ``True`` after the full sleep; ``False`` if interruptible and a signal is
        (or becomes) pending; ``ModelInvariantError`` with a spinlock held or in stop_machine().
        """
        if not isinstance(ns, int) or isinstance(ns, bool) or ns < 0:
            raise InvalidArgument(f"sleep must be a non-negative int (ns), got {ns!r}")
        cur = self._current
        if cur is None:
            self.clock.advance(ns)
            return True
        if self._closing:
            return False
        might_sleep(self, "msleep")
        if interruptible and cur.signal_pending:
            return False
        self._remove_runnable(cur)
        self._seq += 1
        key = self._seq
        cur.state = TaskState.SLEEPING
        cur.sleep_key = key
        cur.interruptible = interruptible
        cur.sleep_interrupted = False
        cur.point = "msleep_interruptible" if interruptible else "msleep"
        heapq.heappush(self._sleepers, (cur.local_ns + ns, key, cur))
        self._yield(cur)
        return not cur.sleep_interrupted

    def wake_up_process(self, task: Task) -> bool:
        """End an interruptible sleep of ``task`` now (not before the waker's time), without a signal.

        Models: kernel/sched/core.c wake_up_process() on a task in schedule_timeout_interruptible().
        Outcomes: ``True`` if the task was sleeping interruptibly and is now runnable (its
        sleep_ns() returns ``False``); ``False`` otherwise (nothing changes).
        """
        if task.state is not TaskState.SLEEPING or not task.interruptible:
            return False
        task.sleep_key = -1
        task.sleep_interrupted = True
        self._make_runnable(task, self._waker_time())
        return True

    def runnable_count(self) -> int:
        """How many tasks are runnable (the running one included)."""
        return len(self._runnable)

    def stop_machine(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` with no other task scheduled; its preemption points do not switch.

        Models: kernel/stop_machine.c stop_machine(): the caller may be preempted before
        the machine stops (point ``stop_machine``) and after it restarts
        (``stop_machine_done``); ``fn`` runs atomically (sleeping in it is a BUG) and no
        other task makes progress before the time ``fn`` finished.
        Outcomes: ``fn()``'s value; ``ModelInvariantError`` if ``fn`` sleeps or blocks.
        """
        cur = self._current
        if cur is None:
            return fn()
        might_sleep(self, "stop_machine")
        self.preempt("stop_machine")
        self._stop_depth += 1
        cur.preempt_count += 1
        try:
            result = fn()
        finally:
            self._stop_depth -= 1
            cur.preempt_count -= 1
        self._floor_ns = max(self._floor_ns, cur.local_ns)
        self.preempt("stop_machine_done")
        return result

    # ----------------------------------------------------------------- signals, teardown

    def _signal(self, task: Task) -> None:
        task.signal_pending = True
        if not task.interruptible:
            return
        if task.state is TaskState.BLOCKED:
            waitq = task.waitq
            if waitq is not None and task in waitq.waiters:
                waitq.waiters.remove(task)
            self._make_runnable(task, self._waker_time())
        elif task.state is TaskState.SLEEPING:
            task.sleep_key = -1
            task.sleep_interrupted = True
            self._make_runnable(task, self._waker_time())

    def close(self) -> None:
        """Kill every unfinished task (GreenletExit at its current point), in creation order.

        Their cleanup code runs with preemption points disabled; sleeping in it ends the
        task. Outcomes: returns; the first unexpected exception a dying task raised.
        """
        if self._main is not None:
            raise InvalidArgument("close() called from inside run()")
        self._main = greenlet.getcurrent()
        self._closing = True
        self._stop_depth += 1
        first_error: BaseException | None = None
        try:
            for task in self._tasks:
                if not task.alive:
                    continue
                if not task.started:
                    self._finish(task, TaskState.KILLED)
                    continue
                task.root.parent = self._main
                self._current = task
                try:
                    task.glet.throw(greenlet.GreenletExit)
                except BaseException as exc:
                    if first_error is None:
                        first_error = exc
                self._finish(task, TaskState.KILLED)
        finally:
            self._current = None
            self._main = None
            self._closing = False
            self._stop_depth -= 1
        if first_error is not None:
            raise first_error

    def __enter__(self) -> DeterministicScheduler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SchedClock:
    """The hardware model's clock (``now_ns()``, ``charge(cpu, ns)``) backed by a scheduler.

    A leaf's cost goes to the task that issued it (the current task), so leaves on
    different CPUs overlap in time; outside run() it goes to the global clock.
    """

    __slots__ = ("_sched",)

    def __init__(self, sched: DeterministicScheduler) -> None:
        self._sched = sched

    def now_ns(self) -> int:
        return self._sched.now_ns()

    def charge(self, cpu: int, ns: int) -> None:
        self._sched.charge(ns)


def format_trace(trace: Sequence[tuple[int, str, str]]) -> str:
    """A readable schedule: one ``step  task  point`` line per decision."""
    width = max((len(name) for _, name, _ in trace), default=4)
    return "\n".join(f"{step:6d}  {name:<{width}}  {point}" for step, name, point in trace)
