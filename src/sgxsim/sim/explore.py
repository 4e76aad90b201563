"""Schedule exploration: run a program under many interleavings and check invariants at every step.

An *exploration program* (:class:`ExploreProgram`) builds a fresh world for one schedule
(machine, kernel, tasks) and spawns its tasks on a :class:`~sgxsim.sim.sched.DeterministicScheduler`.
:func:`explore` runs ``N`` schedules, each with its own seed derived from the exploration
seed and the schedule index, under a random walk, PCT, or both alternately. After every
scheduling decision (the scheduler's ``on_step`` hook, i.e. before the chosen task
resumes) every invariant is checked; so is "no unexpected kernel WARN". Once the run
stops, the invariants are checked once more on the final state, then the program's final
checks. A run that deadlocks, hits the step limit, leaves tasks stuck spinning in page faults
(a user-reachable hang, reported as such: kind "stuck") or in which a task raises is itself a
violation. The first violation of a schedule stops it and is reported as a
:class:`Violation`: where (schedule, seed, strategy, step), what (invariant and message),
how to get there again (the recorded choices) and a readable trace (the last scheduling
steps with simulated time, and the kernel log tail). :func:`replay` re-runs exactly that
schedule with :class:`~sgxsim.sim.sched.ReplayStrategy` and reports the same violation.

The engine's own cost per step is one bounded-deque append (the trace's time stamps)
and, when checking, one loop over the invariants (about a microsecond beyond their own
cost); ``check_every=k`` checks only every k-th step for big worlds (the final state is
always checked).
"""

from __future__ import annotations

import collections
import contextlib
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Generic, NamedTuple, Protocol, TypeVar

from sgxsim.errors import InvalidArgument
from sgxsim.kernel.mm import FaultLoop
from sgxsim.kernel.printk import KernelLog
from sgxsim.rand import Rng
from sgxsim.sim.sched import (
    DeterministicScheduler,
    Pct,
    RandomWalk,
    ReplayDivergence,
    ReplayStrategy,
    RunResult,
    Strategy,
    Task,
    TaskState,
)

__all__ = [
    "BUILTIN_CHECKS",
    "DEFAULT_LOG_TAIL",
    "DEFAULT_MAX_STEPS",
    "DEFAULT_PCT_STEPS",
    "DEFAULT_TRACE_LEN",
    "STRATEGIES",
    "VIOLATION_KINDS",
    "ExploreProgram",
    "ExploreResult",
    "Invariant",
    "InvariantLike",
    "Program",
    "TraceStep",
    "Violation",
    "default_kernel_log",
    "explore",
    "format_violation",
    "replay",
    "schedule_seed",
]

W = TypeVar("W")
W_contra = TypeVar("W_contra", contravariant=True)

#: Strategy names accepted by :func:`explore`; "both" alternates random (even index) and pct (odd).
STRATEGIES: Final = ("random", "pct", "both")
#: Decisions one schedule may take before it counts as not terminating.
DEFAULT_MAX_STEPS: Final = 100_000
#: Scheduling steps kept in a violation's trace.
DEFAULT_TRACE_LEN: Final = 40
#: Kernel log lines kept in a violation.
DEFAULT_LOG_TAIL: Final = 20
#: PCT's step estimate before any schedule has run (later: the longest schedule seen so far).
DEFAULT_PCT_STEPS: Final = 100

#: What a violation is about.
VIOLATION_KINDS: Final = (
    "invariant",  # a per-step invariant failed (after a step, or on the final state)
    "final",  # a final check failed after the schedule completed
    "warn",  # a kernel WARN beyond the expected ones
    "deadlock",  # tasks remain, none can run and none sleeps
    "step-limit",  # the schedule did not terminate within max_steps
    "stuck",  # tasks spin in page faults for ever (a user-reachable hang, as in Linux)
    "exception",  # a task (or a dying task's cleanup) raised
    "divergence",  # replay: a recorded choice is not runnable, or the choices ran out
)

#: Names of the checks the engine adds itself (program invariants may not use them).
BUILTIN_CHECKS: Final = frozenset(
    {"no-unexpected-warn", "no-deadlock", "no-stuck-task", "terminates", "no-task-exception", "replay"}
)


# --------------------------------------------------------------------------- program protocol


class InvariantLike(Protocol[W_contra]):
    """Anything with a ``name`` and ``check(world) -> None | str`` (None: holds; str: what is wrong)."""

    @property
    def name(self) -> str: ...

    def check(self, world: W_contra, /) -> str | None: ...


@dataclass(frozen=True)
class Invariant(Generic[W]):
    """A named property of a world: ``check(world)`` returns ``None`` if it holds, else what is wrong."""

    name: str
    check: Callable[[W], str | None]


class ExploreProgram(Protocol[W]):
    """What :func:`explore` runs: a world factory plus the properties to check on it.

    ``setup`` builds a fresh world for one schedule and spawns its tasks on ``sched``
    (outside ``run()``); ``rng`` is that schedule's root of randomness (use its streams,
    never a shared generator, so a schedule replays from its seed alone).
    ``invariants`` are checked after every step; ``final_checks`` once after the schedule
    completed. ``warn_count`` is the number of kernel WARNs so far; more than
    ``expected_warns`` is a violation (``None``: any number is expected). ``kernel_log``
    gives the log whose tail a violation shows (or ``None``).
    """

    @property
    def name(self) -> str: ...

    @property
    def expected_warns(self) -> int | None: ...

    def setup(self, sched: DeterministicScheduler, rng: Rng, /) -> W: ...

    def invariants(self, world: W, /) -> Iterable[InvariantLike[W]]: ...

    def final_checks(self, world: W, /) -> Iterable[InvariantLike[W]]: ...

    def warn_count(self, world: W, /) -> int: ...

    def kernel_log(self, world: W, /) -> KernelLog | None: ...


def default_kernel_log(world: object) -> KernelLog | None:
    """The world's kernel log: ``world.log`` or ``world.kernel.log`` if it is a KernelLog, else None."""
    for owner in (world, getattr(world, "kernel", None)):
        log = getattr(owner, "log", None)
        if isinstance(log, KernelLog):
            return log
    return None


def _no_checks(world: object) -> tuple[InvariantLike[Any], ...]:
    return ()


@dataclass(frozen=True)
class Program(Generic[W]):
    """An :class:`ExploreProgram` assembled from functions.

    ``setup(sched, rng) -> world`` is required; ``invariants`` and ``final_checks``
    default to none; ``log`` finds the world's kernel log (default
    :func:`default_kernel_log`), whose WARN count is compared with ``expected_warns``.
    """

    name: str
    setup_fn: Callable[[DeterministicScheduler, Rng], W]
    invariants_fn: Callable[[W], Iterable[InvariantLike[W]]] = _no_checks
    final_checks_fn: Callable[[W], Iterable[InvariantLike[W]]] = _no_checks
    log_fn: Callable[[W], KernelLog | None] = default_kernel_log
    expected_warns: int | None = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InvalidArgument(f"program name must be a non-empty str, got {self.name!r}")
        for what in ("setup_fn", "invariants_fn", "final_checks_fn", "log_fn"):
            if not callable(getattr(self, what)):
                raise InvalidArgument(f"program {what} must be callable, got {getattr(self, what)!r}")
        _check_expected_warns(self.expected_warns)

    def setup(self, sched: DeterministicScheduler, rng: Rng, /) -> W:
        return self.setup_fn(sched, rng)

    def invariants(self, world: W, /) -> Iterable[InvariantLike[W]]:
        return self.invariants_fn(world)

    def final_checks(self, world: W, /) -> Iterable[InvariantLike[W]]:
        return self.final_checks_fn(world)

    def kernel_log(self, world: W, /) -> KernelLog | None:
        return self.log_fn(world)

    def warn_count(self, world: W, /) -> int:
        log = self.log_fn(world)
        return 0 if log is None else log.warn_count


def _check_expected_warns(value: object) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise InvalidArgument(f"expected_warns must be a non-negative int or None, got {value!r}")


# --------------------------------------------------------------------------- results


class TraceStep(NamedTuple):
    """One scheduling decision in a violation's trace: at ``step`` task ``task`` resumes at
    ``point`` at simulated time ``time_ns`` (its own clock)."""

    step: int
    task: str
    point: str
    time_ns: int


def _req_int(d: Mapping[str, object], key: str, optional: bool = False) -> Any:
    value = d.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument(f"violation field {key!r} must be an int, got {value!r}")
    return value


def _req_str(d: Mapping[str, object], key: str, optional: bool = False) -> Any:
    value = d.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise InvalidArgument(f"violation field {key!r} must be a str, got {value!r}")
    return value


def _req_list(d: Mapping[str, object], key: str) -> list[Any]:
    value = d.get(key)
    if not isinstance(value, list | tuple):
        raise InvalidArgument(f"violation field {key!r} must be a list, got {value!r}")
    return list(value)


@dataclass(frozen=True)
class Violation:
    """The first broken property of one schedule, with what it takes to see it again.

    ``step`` is the number of scheduling decisions made when it was detected: after
    decision ``step`` was taken and before its task resumed, or (``at_end``) after the run
    stopped. ``task`` is the task that ran last before detection (its code broke the
    property; ``None`` if the initial state was already wrong). ``choices`` are the task
    names chosen at steps ``1..step``: :func:`replay` feeds them to a ReplayStrategy.
    """

    program: str
    schedule: int
    seed: int
    strategy: str  # "random" or "pct"
    pct_depth: int | None
    pct_steps: int | None
    max_steps: int
    check_every: int
    step: int
    at_end: bool
    kind: str
    invariant: str
    message: str
    task: str | None
    time_ns: int
    choices: tuple[str, ...]
    trace: tuple[TraceStep, ...]
    log_tail: tuple[str, ...] = ()

    def same_as(self, other: Violation) -> bool:
        """Same property broken the same way at the same step of the same schedule."""
        return (self.kind, self.invariant, self.message, self.step, self.choices) == (
            other.kind,
            other.invariant,
            other.message,
            other.step,
            other.choices,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (inverse: :meth:`from_dict`)."""
        return {
            "program": self.program,
            "schedule": self.schedule,
            "seed": self.seed,
            "strategy": self.strategy,
            "pct_depth": self.pct_depth,
            "pct_steps": self.pct_steps,
            "max_steps": self.max_steps,
            "check_every": self.check_every,
            "step": self.step,
            "at_end": self.at_end,
            "kind": self.kind,
            "invariant": self.invariant,
            "message": self.message,
            "task": self.task,
            "time_ns": self.time_ns,
            "choices": list(self.choices),
            "trace": [t._asdict() for t in self.trace],
            "log_tail": list(self.log_tail),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> Violation:
        """Rebuild a violation from :meth:`to_dict` output (e.g. a saved JSON report).

        Outcomes: the violation; ``InvalidArgument`` naming the first malformed field.
        """
        if not isinstance(d, Mapping):
            raise InvalidArgument(f"violation must be a mapping, got {d!r}")
        kind = _req_str(d, "kind")
        if kind not in VIOLATION_KINDS:
            raise InvalidArgument(f"violation kind must be one of {VIOLATION_KINDS}, got {kind!r}")
        strategy = _req_str(d, "strategy")
        if strategy not in ("random", "pct"):
            raise InvalidArgument(f"violation strategy must be 'random' or 'pct', got {strategy!r}")
        at_end = d.get("at_end")
        if not isinstance(at_end, bool):
            raise InvalidArgument(f"violation field 'at_end' must be a bool, got {at_end!r}")
        choices = _req_list(d, "choices")
        if not all(isinstance(c, str) for c in choices):
            raise InvalidArgument("violation field 'choices' must be a list of task names")
        trace: list[TraceStep] = []
        for entry in _req_list(d, "trace"):
            if not isinstance(entry, Mapping):
                raise InvalidArgument(f"violation trace entry must be a mapping, got {entry!r}")
            trace.append(
                TraceStep(
                    _req_int(entry, "step"),
                    _req_str(entry, "task"),
                    _req_str(entry, "point"),
                    _req_int(entry, "time_ns"),
                )
            )
        log_tail = _req_list(d, "log_tail") if "log_tail" in d else []
        if not all(isinstance(line, str) for line in log_tail):
            raise InvalidArgument("violation field 'log_tail' must be a list of str")
        return cls(
            program=_req_str(d, "program"),
            schedule=_req_int(d, "schedule"),
            seed=_req_int(d, "seed"),
            strategy=strategy,
            pct_depth=_req_int(d, "pct_depth", optional=True),
            pct_steps=_req_int(d, "pct_steps", optional=True),
            max_steps=_req_int(d, "max_steps"),
            check_every=_req_int(d, "check_every"),
            step=_req_int(d, "step"),
            at_end=at_end,
            kind=kind,
            invariant=_req_str(d, "invariant"),
            message=_req_str(d, "message"),
            task=_req_str(d, "task", optional=True),
            time_ns=_req_int(d, "time_ns"),
            choices=tuple(choices),
            trace=tuple(trace),
            log_tail=tuple(log_tail),
        )


@dataclass(frozen=True)
class ExploreResult:
    """What an exploration (or a replay) did and found.

    ``check_counts`` maps each check name (the program's invariants and final checks and
    the built-in ``no-unexpected-warn``) to how many times it was evaluated.
    ``completed`` counts schedules that ran to completion with every check passing.
    """

    program: str
    seed: int
    strategy: str
    pct_depth: int
    max_steps: int
    check_every: int
    schedules_requested: int
    schedules_run: int
    steps_total: int
    max_schedule_steps: int
    completed: int
    budget_exhausted: bool
    violations: tuple[Violation, ...]
    check_counts: dict[str, int] = field(default_factory=dict)
    replay: bool = False

    @property
    def ok(self) -> bool:
        """No violation was found."""
        return not self.violations

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of the whole result."""
        return {
            "program": self.program,
            "seed": self.seed,
            "strategy": self.strategy,
            "pct_depth": self.pct_depth,
            "max_steps": self.max_steps,
            "check_every": self.check_every,
            "replay": self.replay,
            "schedules_requested": self.schedules_requested,
            "schedules_run": self.schedules_run,
            "steps_total": self.steps_total,
            "max_schedule_steps": self.max_schedule_steps,
            "completed": self.completed,
            "budget_exhausted": self.budget_exhausted,
            "ok": self.ok,
            "check_counts": dict(self.check_counts),
            "violations": [v.to_dict() for v in self.violations],
        }

    def summary(self) -> str:
        """One line: schedules, steps, outcome."""
        what = "replayed" if self.replay else "explored"
        head = (
            f"{self.program}: {what} {self.schedules_run} schedule(s) ({self.strategy}, seed {self.seed}), "
            f"{self.steps_total} steps"
        )
        if self.budget_exhausted:
            head += " (step budget exhausted)"
        if self.ok:
            return f"{head}: no violation"
        first = self.violations[0]
        return (
            f"{head}: {len(self.violations)} violation(s); first: {first.invariant} "
            f"in schedule {first.schedule} at step {first.step}"
        )


# --------------------------------------------------------------------------- rendering


def _rle(choices: Sequence[str]) -> str:
    parts: list[str] = []
    i = 0
    n = len(choices)
    while i < n:
        j = i + 1
        while j < n and choices[j] == choices[i]:
            j += 1
        parts.append(choices[i] if j - i == 1 else f"{choices[i]}*{j - i}")
        i = j
    return " ".join(parts)


def _secs(t_ns: int) -> str:
    """Simulated time as seconds with nanoseconds, e.g. ``"0.000012345"``."""
    return f"{t_ns // 1_000_000_000}.{t_ns % 1_000_000_000:09d}"


def format_violation(v: Violation, max_choices_chars: int = 400) -> str:
    """A human-readable report of one violation: what, where, how to replay, trace, log tail."""
    where = "after the run stopped" if v.at_end else f"before the task of step {v.step} resumed"
    strategy = v.strategy if v.strategy != "pct" else f"pct(depth={v.pct_depth}, steps={v.pct_steps})"
    ran = f"after task {v.task!r} ran" if v.task is not None else "in the initial state"
    lines = [
        f"VIOLATION [{v.kind}] {v.invariant}: {v.message}",
        f"  program {v.program!r}, schedule {v.schedule}, seed {v.seed}, strategy {strategy}",
        f"  detected {where} (step {v.step}, t={_secs(v.time_ns)} s), {ran}",
    ]
    rle = _rle(v.choices)
    if len(rle) > max_choices_chars:
        rle = rle[:max_choices_chars] + " ..."
    lines.append(f"  replay: {len(v.choices)} choices: {rle}")
    if v.trace:
        width = max(len(t.task) for t in v.trace)
        first = v.trace[0].step
        lines.append(f"  last {len(v.trace)} scheduling steps (from step {first}):")
        lines.append(f"    {'step':>6}  {'time (s)':>16}  {'task':<{width}}  resumes at")
        for t in v.trace:
            mark = "   <- detected here" if (not v.at_end and t.step == v.step) else ""
            lines.append(f"    {t.step:6d}  {_secs(t.time_ns):>16}  {t.task:<{width}}  {t.point}{mark}")
        if v.at_end:
            lines.append("    (the run stopped here)")
    if v.log_tail:
        lines.append(f"  kernel log (last {len(v.log_tail)} lines):")
        lines.extend(f"    {line}" for line in v.log_tail)
    return "\n".join(lines)


# --------------------------------------------------------------------------- engine


class _Detected(Exception):
    """Raised by the step hook (or built by the engine) when a check fails; stops the run."""

    def __init__(self, kind: str, name: str, message: str, position: int = -1, task: str | None = None):
        super().__init__(f"{name}: {message}")
        self.kind = kind
        self.name = name
        self.message = message
        self.position = position  # index of the failed check in the round, -1 if none
        self.task = task


def schedule_seed(seed: int, index: int) -> int:
    """The seed of schedule ``index`` of an exploration seeded with ``seed`` (independent streams)."""
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise InvalidArgument(f"schedule index must be a non-negative int, got {index!r}")
    return Rng(seed).child(f"explore/schedule/{index}").seed


def _collect(
    items: Iterable[InvariantLike[W]], what: str
) -> tuple[tuple[str, Callable[[W], str | None]], ...]:
    out: list[tuple[str, Callable[[W], str | None]]] = []
    seen: set[str] = set()
    for inv in items:
        name = getattr(inv, "name", None)
        check = getattr(inv, "check", None)
        if not isinstance(name, str) or not name or not callable(check):
            raise InvalidArgument(f"{what} must have a non-empty str name and a check(world), got {inv!r}")
        if name in seen or name in BUILTIN_CHECKS:
            raise InvalidArgument(f"{what} name {name!r} is used twice or reserved")
        seen.add(name)
        out.append((name, check))
    return tuple(out)


def _warn_check(program: ExploreProgram[W], allowed: int) -> Callable[[W], str | None]:
    warn_count = program.warn_count

    def check(world: W) -> str | None:
        n = warn_count(world)
        if n <= allowed:
            return None
        log = program.kernel_log(world)
        last = ""
        if log is not None and log.warnings:
            w = log.warnings[-1]
            text = f": {w.message}" if w.message else ""
            last = f"; last: WARNING at {w.site} (task {w.task or '-'}){text}"
        return f"{n} kernel WARN(s), {allowed} expected{last}"

    return check


def _exception_message(exc: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines()
    msg = text[0] if text else type(exc).__name__
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        f = frames[-1]
        msg += f" (in {f.name}, {f.filename.rsplit('/', 1)[-1]}:{f.lineno})"
    return msg


def _state_summary(sched: DeterministicScheduler) -> str:
    parts = [
        f"{t.name} {t.state.value} at {t.point}"
        for t in sched.tasks
        if t.state in (TaskState.RUNNABLE, TaskState.BLOCKED, TaskState.SLEEPING)
    ]
    return ", ".join(parts) if parts else "no live task"


@dataclass
class _Outcome:
    steps: int
    completed: bool
    violation: Violation | None
    counts: dict[str, int]


@dataclass(frozen=True)
class _Config:
    max_steps: int
    check_every: int
    pct_depth: int
    trace_len: int
    log_tail: int


def _run_schedule(
    program: ExploreProgram[W],
    cfg: _Config,
    index: int,
    seed: int,
    strategy_name: str,
    pct_steps: int | None,
    replay_choices: Sequence[str] | None = None,
) -> _Outcome:
    """Run one schedule to its end or its first violation; always closes the scheduler."""
    rng = Rng(seed)
    strategy: Strategy
    if replay_choices is not None:
        strategy = ReplayStrategy(replay_choices)
    elif strategy_name == "pct":
        steps = pct_steps if pct_steps is not None else DEFAULT_PCT_STEPS
        strategy = Pct(rng.stream("sched"), cfg.pct_depth, max(steps, cfg.pct_depth - 1))
    else:
        strategy = RandomWalk(rng.stream("sched"))
    sched = DeterministicScheduler(strategy)
    try:
        world = program.setup(sched, rng)
    except BaseException as exc:
        exc.add_note(f"in setup of program {program.name!r}, schedule {index} (seed {seed})")
        with contextlib.suppress(Exception):  # the setup error is the one to report
            sched.close()
        raise
    counts: dict[str, int] = {}
    violation: Violation | None = None
    completed = False
    # Task times of the last trace_len decisions, aligned with the end of sched.schedule.
    times: collections.deque[int] = collections.deque(maxlen=cfg.trace_len)
    steps = 0
    try:
        checks = _collect(program.invariants(world), "invariant")
        allowed = program.expected_warns
        _check_expected_warns(allowed)
        if allowed is not None:
            checks = (*checks, ("no-unexpected-warn", _warn_check(program, allowed)))
        times_append = times.append
        every = cfg.check_every
        rounds = 0

        def check_round() -> None:
            position = 0
            try:
                for position, (name, check) in enumerate(checks):
                    msg = check(world)
                    if msg is not None:
                        kind = "warn" if name == "no-unexpected-warn" else "invariant"
                        raise _Detected(kind, name, str(msg), position)
            except _Detected:
                raise
            except Exception as exc:
                raise _Detected(
                    "exception", checks[position][0], f"check raised {_exception_message(exc)}", position
                ) from exc

        def on_step(step: int, task: Task) -> None:
            nonlocal rounds
            times_append(task.local_ns)
            if every != 1 and step % every:
                return
            rounds += 1
            check_round()

        sched.on_step = on_step
        detected: _Detected | None = None
        result: RunResult | None = None
        in_hook = False
        try:
            result = sched.run(cfg.max_steps)
        except _Detected as d:
            detected = d
            in_hook = True
        except ReplayDivergence as exc:
            detected = _Detected("divergence", "replay", str(exc))
        except FaultLoop as exc:
            failed = next((t.name for t in sched.tasks if t.exception is exc), None)
            detected = _Detected("stuck", "no-stuck-task", str(exc), task=failed)
        except Exception as exc:
            failed = next((t.name for t in sched.tasks if t.exception is exc), None)
            who = f"task {failed!r}: " if failed is not None else ""
            detected = _Detected("exception", "no-task-exception", who + _exception_message(exc), task=failed)
        sched.on_step = None
        at_end = not in_hook
        if result is not None:
            if result.deadlocked:
                waits = "; ".join(
                    f"{b.task!r} waits on {b.waitq}"
                    + ("" if b.point == f"wait:{b.waitq}" else f" at {b.point}")
                    for b in result.blocked
                )
                detected = _Detected(
                    "deadlock", "no-deadlock", f"deadlock after {result.total_steps} steps: {waits}"
                )
            elif result.stuck:
                detected = _Detected(
                    "stuck",
                    "no-stuck-task",
                    f"stuck after {result.total_steps} steps: {', '.join(map(repr, result.spinning))} "
                    "spin in page faults (the handler returns without mapping the page)",
                )
            elif result.step_limit_hit:
                detected = _Detected(
                    "step-limit",
                    "terminates",
                    f"no termination within {cfg.max_steps} steps: {_state_summary(sched)}",
                )
            else:
                # The final state (the last task's code after its last preemption point).
                rounds += 1
                try:
                    check_round()
                except _Detected as d:
                    detected = d
                if detected is None:
                    finals = _collect(program.final_checks(world), "final check")
                    for name, check in finals:
                        counts[name] = counts.get(name, 0) + 1
                        try:
                            msg = check(world)
                        except Exception as exc:
                            msg = f"check raised {_exception_message(exc)}"
                        if msg is not None:
                            detected = _Detected("final", name, str(msg))
                            break
        # Per-step/end check counts: every round ran every check, except the failing one
        # which stopped at the failed position.
        failed_pos = detected.position if detected is not None else -1
        for position, (name, _) in enumerate(checks):
            n = rounds - (1 if failed_pos >= 0 and position > failed_pos else 0)
            counts[name] = counts.get(name, 0) + n
        steps = sched.steps
        if detected is None:
            completed = True
        else:
            violation = _make_violation(program, cfg, world, sched, detected, at_end, index, seed,
                                        strategy_name, pct_steps, times)  # fmt: skip
    finally:
        sched.on_step = None
        close_error: Exception | None = None
        try:
            sched.close()
        except Exception as exc:
            close_error = exc
    if close_error is not None and violation is None:
        detected = _Detected(
            "exception", "no-task-exception", f"task cleanup at teardown: {_exception_message(close_error)}"
        )
        violation = _make_violation(program, cfg, world, sched, detected, True, index, seed,
                                    strategy_name, pct_steps, times)  # fmt: skip
        completed = False
    return _Outcome(steps=steps, completed=completed, violation=violation, counts=counts)


def _make_violation(
    program: ExploreProgram[W],
    cfg: _Config,
    world: W,
    sched: DeterministicScheduler,
    detected: _Detected,
    at_end: bool,
    index: int,
    seed: int,
    strategy_name: str,
    pct_steps: int | None,
    times: Sequence[int],
) -> Violation:
    schedule = sched.schedule
    step = sched.steps
    if detected.task is not None:
        ran_last: str | None = detected.task
    elif at_end:
        ran_last = schedule[-1].task if schedule else None
    else:
        ran_last = schedule[-2].task if len(schedule) >= 2 else None
    k = cfg.trace_len
    tail = schedule[-k:] if k else []
    stamps = list(times)[-len(tail) :] if tail else []
    stamps = [0] * (len(tail) - len(stamps)) + stamps  # (never short: one stamp per decision)
    trace = tuple(TraceStep(e.step, e.task, e.point, t) for e, t in zip(tail, stamps, strict=True))
    log_tail: tuple[str, ...] = ()
    log = program.kernel_log(world)
    if log is not None and cfg.log_tail:
        log_tail = tuple(log.lines(show_task=True)[-cfg.log_tail :])
    pct = strategy_name == "pct"
    return Violation(
        program=program.name,
        schedule=index,
        seed=seed,
        strategy=strategy_name,
        pct_depth=cfg.pct_depth if pct else None,
        pct_steps=pct_steps if pct else None,
        max_steps=cfg.max_steps,
        check_every=cfg.check_every,
        step=step,
        at_end=at_end,
        kind=detected.kind,
        invariant=detected.name,
        message=detected.message,
        task=ran_last,
        time_ns=sched.now_ns(),
        choices=tuple(sched.choices()),
        trace=trace,
        log_tail=log_tail,
    )


# --------------------------------------------------------------------------- entry points


def _check_int(value: object, what: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise InvalidArgument(f"{what} must be an int >= {minimum}, got {value!r}")
    return value


def _check_program(program: object) -> None:
    for attr in ("setup", "invariants", "final_checks", "warn_count", "kernel_log"):
        if not callable(getattr(program, attr, None)):
            raise InvalidArgument(f"program must have a callable {attr}(), got {program!r}")
    name = getattr(program, "name", None)
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"program name must be a non-empty str, got {name!r}")
    if not hasattr(program, "expected_warns"):
        raise InvalidArgument(f"program must have expected_warns (an int, or None for any), got {program!r}")
    _check_expected_warns(program.expected_warns)


def _add_counts(total: dict[str, int], part: Mapping[str, int]) -> None:
    for name, n in part.items():
        total[name] = total.get(name, 0) + n


def explore(
    program: ExploreProgram[W],
    schedules: int,
    seed: int = 0,
    strategy: str = "random",
    *,
    pct_depth: int = 3,
    pct_steps: int | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
    stop_on_first: bool = True,
    time_budget_steps: int | None = None,
    check_every: int = 1,
    trace_len: int = DEFAULT_TRACE_LEN,
    log_tail: int = DEFAULT_LOG_TAIL,
    progress: Callable[[int, int], None] | None = None,
    first_index: int = 0,
) -> ExploreResult:
    """Run ``schedules`` interleavings of ``program``, checking its invariants after every step.

    Schedule ``i`` gets seed :func:`schedule_seed` ``(seed, i)``: its world and its strategy
    draw only from that, so it replays alone. ``strategy`` is ``"random"`` (random walk),
    ``"pct"`` (PCT of depth ``pct_depth``, step estimate ``pct_steps`` or, if ``None``, the
    longest schedule seen so far) or ``"both"`` (random on even, pct on odd indices).
    ``max_steps`` bounds each schedule (beyond it: a "terminates" violation);
    ``time_budget_steps`` bounds the total steps (no new schedule starts past it);
    ``stop_on_first`` stops at the first violating schedule. ``progress(done, schedules)`` is
    called after every schedule (a safe point: no model code is on the stack). ``first_index``
    starts at that schedule index (a shard of a bigger exploration: schedules ``first_index`` on).
    Outcomes: an :class:`ExploreResult`; ``InvalidArgument`` for a bad parameter or
    program; an exception raised by ``setup`` propagates.
    """
    _check_program(program)
    schedules = _check_int(schedules, "schedules", 0)
    seed = _check_int(seed, "seed", 0)
    if strategy not in STRATEGIES:
        raise InvalidArgument(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    cfg = _Config(
        max_steps=_check_int(max_steps, "max_steps", 1),
        check_every=_check_int(check_every, "check_every", 1),
        pct_depth=_check_int(pct_depth, "pct_depth", 1),
        trace_len=_check_int(trace_len, "trace_len", 0),
        log_tail=_check_int(log_tail, "log_tail", 0),
    )
    if pct_steps is not None:
        _check_int(pct_steps, "pct_steps", max(1, pct_depth - 1))
    if time_budget_steps is not None:
        _check_int(time_budget_steps, "time_budget_steps", 1)
    if not isinstance(stop_on_first, bool):
        raise InvalidArgument(f"stop_on_first must be a bool, got {stop_on_first!r}")
    violations: list[Violation] = []
    counts: dict[str, int] = {}
    steps_total = 0
    longest = 0
    completed = 0
    ran = 0
    exhausted = False
    first_index = _check_int(first_index, "first_index", 0)
    for index in range(first_index, first_index + schedules):
        if time_budget_steps is not None and steps_total >= time_budget_steps:
            exhausted = True
            break
        name = strategy if strategy != "both" else ("random" if index % 2 == 0 else "pct")
        estimate: int | None = None
        if name == "pct":
            estimate = pct_steps if pct_steps is not None else (longest or DEFAULT_PCT_STEPS)
            estimate = max(estimate, cfg.pct_depth - 1, 1)
        out = _run_schedule(program, cfg, index, schedule_seed(seed, index), name, estimate)
        ran += 1
        steps_total += out.steps
        longest = max(longest, out.steps)
        completed += out.completed
        _add_counts(counts, out.counts)
        if progress is not None:
            progress(ran, schedules)
        if out.violation is not None:
            violations.append(out.violation)
            if stop_on_first:
                break
    return ExploreResult(
        program=program.name,
        seed=seed,
        strategy=strategy,
        pct_depth=cfg.pct_depth,
        max_steps=cfg.max_steps,
        check_every=cfg.check_every,
        schedules_requested=schedules,
        schedules_run=ran,
        steps_total=steps_total,
        max_schedule_steps=longest,
        completed=completed,
        budget_exhausted=exhausted,
        violations=tuple(violations),
        check_counts=counts,
    )


def replay(
    program: ExploreProgram[W],
    violation: Violation,
    *,
    trace_len: int = DEFAULT_TRACE_LEN,
    log_tail: int = DEFAULT_LOG_TAIL,
) -> ExploreResult:
    """Re-run exactly the schedule of ``violation`` (same world seed, recorded choices).

    The replay uses the violation's ``max_steps`` and ``check_every`` and reports
    violations with the original's schedule index, seed and strategy, so a faithful
    replay's violation equals the original (given the same ``trace_len``/``log_tail``).
    Outcomes: an :class:`ExploreResult` with ``replay=True`` and at most one violation
    (kind ``"divergence"`` if the program no longer follows the recorded choices; none if
    the recorded schedule now passes); ``InvalidArgument`` for a bad argument.
    """
    _check_program(program)
    if not isinstance(violation, Violation):
        raise InvalidArgument(f"replay needs a Violation, got {violation!r}")
    if violation.program != program.name:
        raise InvalidArgument(f"violation was found in program {violation.program!r}, not {program.name!r}")
    cfg = _Config(
        max_steps=_check_int(violation.max_steps, "max_steps", 1),
        check_every=_check_int(violation.check_every, "check_every", 1),
        pct_depth=violation.pct_depth if violation.pct_depth is not None else 1,
        trace_len=_check_int(trace_len, "trace_len", 0),
        log_tail=_check_int(log_tail, "log_tail", 0),
    )
    out = _run_schedule(
        program,
        cfg,
        violation.schedule,
        violation.seed,
        violation.strategy,
        violation.pct_steps,
        replay_choices=violation.choices,
    )
    return ExploreResult(
        program=program.name,
        seed=violation.seed,
        strategy=violation.strategy,
        pct_depth=cfg.pct_depth,
        max_steps=cfg.max_steps,
        check_every=cfg.check_every,
        schedules_requested=1,
        schedules_run=1,
        steps_total=out.steps,
        max_schedule_steps=out.steps,
        completed=int(out.completed),
        budget_exhausted=False,
        violations=() if out.violation is None else (out.violation,),
        check_counts=out.counts,
        replay=True,
    )
