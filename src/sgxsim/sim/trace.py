"""Chrome trace-event JSON for a scenario run (opens in Perfetto and chrome://tracing).

A :class:`TraceRecorder` collects what the simulated machine did on a set of *tracks*: one per
logical CPU (threads of the ``machine`` process), one per simulated user process (and its
threads), and kernel threads such as ``ksgxd`` (threads of the ``kernel`` process). Each
track is a Chrome ``(pid, tid)`` pair announced with ``process_name`` / ``thread_name``
metadata events. On a track the recorder keeps

* complete slices (``ph: "X"``, ``ts``/``dur`` in microseconds as floats, as Chrome wants),
  either from :meth:`TraceRecorder.slice` or from a :meth:`~TraceRecorder.begin` /
  :meth:`~TraceRecorder.end` pair; a batch of leaves is *one* slice whose args carry the page
  count (``{"pages": 512}``);
* instant events (``ph: "i"``) for signals, WARNs and the like;
* counter samples (``ph: "C"``) such as EPC pages in use, attached to the track's process;
* async phase slices (``ph: "b"``/``"e"`` nestable async events) for the phases of an SVN
  update (lock, zap, eupdatesvn, unlock) that nest under one id.

Simulated time is integer nanoseconds throughout the API; the file has microseconds.

**Budget.** The written file stays under ``max_bytes`` (default 48 MB, below the 50 MB a
trace viewer handles comfortably) whatever the scenario. When the recorder holds more than
``max_events`` events, or the rendered file would exceed ``max_bytes``, it degrades in fixed
steps, each counted in ``otherData.budget`` (``otherData.dropped`` is the total dropped):

1. coalesce consecutive same-name slices of one category on a track into one slice whose
   args carry ``count`` (slices merged), ``busy_ns`` (summed durations) and the sums of the
   integer args (``pages``); from then on new slices merge as they arrive, never across a
   slice still open on the track (``coalesced``); counter samples that repeat the previous
   value go (``thinned_counters``);
2. while counter samples are more than a quarter of the target, thin each series to the
   last sample per time bucket, so its final value stays exact (``thinned_counters``);
3. drop the finest category still present, in :data:`DROP_ORDER` (``enclu`` first), and
   every later event of it (``dropped[category]``);
4. as a last resort keep the earliest events only and refuse later ones (``truncated``).

Slices on a track always nest in the file: a merged slice that a parent recorded later with
:meth:`TraceRecorder.slice` would straddle is clipped (record parents with ``begin``/``end``
to avoid that). Output is deterministic: the same calls in the same order give identical bytes.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sgxsim.errors import InvalidArgument

__all__ = [
    "CATEGORIES",
    "CPU_PID",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_EVENTS",
    "DROP_ORDER",
    "KERNEL_PID",
    "TraceRecorder",
    "Track",
]

#: Event categories. The first seven are the brief's; ``epc`` is for EPC-usage counters and
#: ``kernel`` for kernel messages (WARN, printk) that belong to no other category.
CATEGORIES = (
    "encls",
    "enclu",
    "ioctl",
    "fault",
    "update",
    "reclaim",
    "attest",
    "epc",
    "kernel",
    "window",
    "ecall",
)

#: Categories the budget may drop, finest (most numerous per simulated second) first.
#: ``update`` (the SVN update phases) and ``epc`` (counters, thinned instead) are never dropped.
DROP_ORDER = ("enclu", "fault", "encls", "reclaim", "ioctl", "kernel", "attest")

#: Default byte budget of the written file (50 MB limit less a margin).
DEFAULT_MAX_BYTES = 48_000_000
#: Default number of events held before the recorder starts degrading.
DEFAULT_MAX_EVENTS = 250_000

#: Linux never hands out a pid above PID_MAX_LIMIT (4 Mi on 64-bit), so trace pids from
#: 2**23 up are free for the synthetic ``machine`` and ``kernel`` processes.
_RESERVED_BASE = 1 << 23
#: Trace pid of the ``machine`` process whose threads are the logical CPUs.
CPU_PID = _RESERVED_BASE
#: Trace pid of the ``kernel`` process whose threads are kernel threads (``ksgxd``).
KERNEL_PID = _RESERVED_BASE + (1 << 20)
_MAX_CPUS = 1 << 20

_SCALARS = (str, int, float, bool, type(None))
_FAST_SCALARS = frozenset({str, int, bool, type(None)})
_NUMBERS = frozenset({int, float})
_INSTANT_SCOPES = ("t", "p", "g")
_CATEGORY_SET = frozenset(CATEGORIES)
# Sort ranks at one timestamp: ends of async slices close before anything opens there.
_RANK_OTHER = 1
#: Async b/e rows sort by time, then by their position in the nested sequence of their id.
_RANK_ASYNC = 1


@dataclass(frozen=True, order=True)
class Track:
    """One timeline row: a Chrome ``(pid, tid)`` pair."""

    pid: int
    tid: int


class _Event:
    """One recorded event; mutable so that coalescing and thinning can update it in place."""

    __slots__ = ("args", "busy", "cat", "count", "dur", "name", "ph", "pid", "seq", "tid", "ts")

    def __init__(
        self,
        ph: str,
        cat: str,
        name: str,
        pid: int,
        tid: int,
        ts: int,
        dur: int,
        args: dict[str, object] | None,
        seq: int,
    ) -> None:
        self.ph = ph
        self.cat = cat
        self.name = name
        self.pid = pid
        self.tid = tid  # the async id for "async" events
        self.ts = ts
        self.dur = dur
        self.args = args
        self.count = 1
        self.busy = dur  # summed durations of merged slices; the scope index of an instant
        self.seq = seq


def _check_time(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{what} must be an int of simulated ns, got {value!r}")
    if value < 0:
        raise InvalidArgument(f"{what} must be >= 0, got {value}")
    return value


def _check_name(value: object, what: str = "name") -> str:
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{what} must be a non-empty str, got {value!r}")
    return value


def _check_args(args: object) -> dict[str, object] | None:
    """A private copy of ``args`` (str keys, finite JSON scalars), or None."""
    if args is None:
        return None
    if type(args) is dict:
        # Fast path for the common case: every value an exact str/int/bool/None.
        for key, value in args.items():
            if type(key) is not str or type(value) not in _FAST_SCALARS:
                break
        else:
            return dict(args)
    if not isinstance(args, Mapping):
        raise InvalidArgument(f"args must be a mapping of str to scalars, got {args!r}")
    out: dict[str, object] = {}
    for key, value in args.items():
        if not isinstance(key, str):
            raise InvalidArgument(f"args key must be a str, got {key!r}")
        if not isinstance(value, _SCALARS):
            raise InvalidArgument(f"args[{key!r}] must be a str/int/float/bool/None, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidArgument(f"args[{key!r}] must be finite, got {value!r}")
        out[key] = value
    return out


def _us(ns: int) -> float:
    """Chrome timestamps are microseconds; keep them floats so sub-us leaves survive."""
    return ns / 1000


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class TraceRecorder:
    """Collects trace events for one scenario run and writes Chrome trace-event JSON.

    ``metadata`` (scenario, seed, policy, ...) goes into ``otherData``. ``max_bytes`` and
    ``max_events`` set the budget described in the module docstring.
    """

    def __init__(
        self,
        *,
        metadata: Mapping[str, object] | None = None,
        machine_name: str = "machine",
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_events: int = DEFAULT_MAX_EVENTS,
    ) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 4096:
            raise InvalidArgument(f"max_bytes must be an int >= 4096, got {max_bytes!r}")
        if isinstance(max_events, bool) or not isinstance(max_events, int) or max_events < 16:
            raise InvalidArgument(f"max_events must be an int >= 16, got {max_events!r}")
        self._metadata = _check_args(metadata) or {}
        self._max_bytes = max_bytes
        self._max_events = max_events
        self._machine_name = _check_name(machine_name, "machine_name")
        self._processes: dict[int, str] = {}
        self._threads: dict[Track, str] = {}
        self._kthreads: dict[str, Track] = {}
        self._events: list[_Event] = []
        self._seq = 0
        self._open: dict[Track, list[tuple[str, str, int, dict[str, object] | None]]] = {}
        # Budget state.
        self._coalescing = False
        self._last_slice: dict[Track, _Event] = {}
        self._dropped_cats: set[str] = set()
        self._dropped: dict[str, int] = {}
        self._coalesced = 0
        self._thin_ns = 0
        self._last_counter: dict[tuple[int, str], _Event] = {}
        self._thinned = 0
        self._full = False
        self._truncated = 0

    # ------------------------------------------------------------------ tracks

    def cpu(self, cpu: int) -> Track:
        """The track of logical CPU ``cpu`` (thread ``"CPU <n>"`` of the machine process)."""
        if isinstance(cpu, bool) or not isinstance(cpu, int) or not 0 <= cpu < _MAX_CPUS:
            raise InvalidArgument(f"cpu must be an int in [0, {_MAX_CPUS}), got {cpu!r}")
        self._processes.setdefault(CPU_PID, self._machine_name)
        track = Track(CPU_PID, CPU_PID + 1 + cpu)
        self._threads.setdefault(track, f"CPU {cpu}")
        return track

    def machine(self) -> Track:
        """The machine process itself (its pid carries machine-wide counters)."""
        self._processes.setdefault(CPU_PID, self._machine_name)
        return Track(CPU_PID, CPU_PID)

    def kthread(self, name: str) -> Track:
        """The track of kernel thread ``name``; tids follow the order of first use."""
        _check_name(name)
        track = self._kthreads.get(name)
        if track is None:
            self._processes.setdefault(KERNEL_PID, "kernel")
            track = Track(KERNEL_PID, KERNEL_PID + 1 + len(self._kthreads))
            self._kthreads[name] = track
            self._threads[track] = name
        return track

    def ksgxd(self) -> Track:
        """The track of the SGX reclaimer thread ``ksgxd``."""
        return self.kthread("ksgxd")

    def process(self, pid: int, name: str) -> Track:
        """The main-thread track of simulated process ``pid`` (tid == pid, as in Linux)."""
        pid = self._check_pid(pid, "pid")
        _check_name(name)
        self._processes[pid] = name  # a second call renames (exec changes comm)
        track = Track(pid, pid)
        self._threads[track] = name
        return track

    def thread(self, pid: int, tid: int, name: str) -> Track:
        """The track of thread ``tid`` of simulated process ``pid`` (registered earlier)."""
        pid = self._check_pid(pid, "pid")
        tid = self._check_pid(tid, "tid")
        _check_name(name)
        if pid not in self._processes:
            raise InvalidArgument(f"process {pid} is not registered; call process() first")
        track = Track(pid, tid)
        self._threads[track] = name
        return track

    @staticmethod
    def _check_pid(value: object, what: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < _RESERVED_BASE:
            raise InvalidArgument(f"{what} must be an int in [1, {_RESERVED_BASE}), got {value!r}")
        return value

    def _check_track(self, track: object) -> Track:
        if not isinstance(track, Track) or track.pid not in self._processes:
            raise InvalidArgument(f"unknown track {track!r}; get tracks from cpu()/process()/ksgxd()")
        return track

    @staticmethod
    def _check_cat(cat: object) -> str:
        if cat not in _CATEGORY_SET:
            raise InvalidArgument(f"category must be one of {CATEGORIES}, got {cat!r}")
        assert isinstance(cat, str)
        return cat

    # ------------------------------------------------------------------ events

    def slice(
        self,
        track: Track,
        name: str,
        start_ns: int,
        dur_ns: int,
        cat: str,
        args: Mapping[str, object] | None = None,
    ) -> None:
        """Record a complete slice ``[start_ns, start_ns + dur_ns)`` on ``track``."""
        # The hot path of a flood: cheap exact-type checks first, the full checks on a miss.
        if type(track) is not Track or track.pid not in self._processes:
            track = self._check_track(track)
        if type(name) is not str or not name:
            _check_name(name)
        if type(start_ns) is not int or start_ns < 0:
            _check_time(start_ns, "start_ns")
        if type(dur_ns) is not int or dur_ns < 0:
            _check_time(dur_ns, "dur_ns")
        if cat not in _CATEGORY_SET:
            self._check_cat(cat)
        self._add_slice(track, name, start_ns, dur_ns, cat, None if args is None else _check_args(args))

    def begin(
        self, track: Track, name: str, t_ns: int, cat: str, args: Mapping[str, object] | None = None
    ) -> None:
        """Open a slice on ``track``; :meth:`end` closes the innermost open one."""
        track = self._check_track(track)
        _check_name(name)
        _check_time(t_ns, "t_ns")
        self._open.setdefault(track, []).append((name, self._check_cat(cat), t_ns, _check_args(args)))

    def end(self, track: Track, t_ns: int, args: Mapping[str, object] | None = None) -> None:
        """Close the innermost open slice on ``track`` at ``t_ns``; ``args`` are merged in."""
        track = self._check_track(track)
        _check_time(t_ns, "t_ns")
        stack = self._open.get(track)
        if not stack:
            raise InvalidArgument(f"end() on {track} with no open slice")
        name, cat, start, begin_args = stack[-1]
        if t_ns < start:
            raise InvalidArgument(f"end at {t_ns} ns before the slice {name!r} began at {start} ns")
        stack.pop()
        extra = _check_args(args)
        merged = dict(begin_args or {})
        if extra:
            merged.update(extra)
        self._add_slice(track, name, start, t_ns - start, cat, merged or None)

    def instant(
        self,
        track: Track,
        name: str,
        t_ns: int,
        cat: str,
        args: Mapping[str, object] | None = None,
        scope: str = "t",
    ) -> None:
        """Record an instant event (a signal, a WARN); ``scope`` is Chrome's t/p/g."""
        track = self._check_track(track)
        _check_name(name)
        _check_time(t_ns, "t_ns")
        cat = self._check_cat(cat)
        if scope not in _INSTANT_SCOPES:
            raise InvalidArgument(f"scope must be one of {_INSTANT_SCOPES}, got {scope!r}")
        if self._refuse(cat):
            return
        ev = self._new("i", cat, name, track.pid, track.tid, t_ns, 0, _check_args(args))
        ev.busy = _INSTANT_SCOPES.index(scope)
        self._append(ev)

    def counter(
        self,
        track: Track,
        name: str,
        t_ns: int,
        values: Mapping[str, int | float],
        cat: str = "epc",
    ) -> None:
        """Record a sample of counter ``name`` (series per key of ``values``) on ``track``'s process."""
        if type(track) is not Track or track.pid not in self._processes:
            track = self._check_track(track)
        if type(name) is not str or not name:
            _check_name(name)
        if type(t_ns) is not int or t_ns < 0:
            _check_time(t_ns, "t_ns")
        if cat not in _CATEGORY_SET:
            self._check_cat(cat)
        vals = _check_args(values)
        if not vals:
            raise InvalidArgument(f"counter values must be a non-empty mapping to numbers, got {values!r}")
        for v in vals.values():
            if type(v) not in _NUMBERS and (isinstance(v, bool) or not isinstance(v, int | float)):
                raise InvalidArgument(f"counter values must be numbers, got {values!r}")
        if self._refuse(cat):
            return
        key = (track.pid, name)
        last = self._last_counter.get(key)
        if last is not None and self._coalescing and last.args == vals and t_ns >= last.ts:
            self._thinned += 1  # an unchanged value adds nothing
            return
        if (
            last is not None
            and self._thin_ns
            and t_ns >= last.ts
            and t_ns // self._thin_ns == last.ts // self._thin_ns
        ):
            last.ts = t_ns
            last.args = vals
            self._thinned += 1
            return
        ev = self._new("C", cat, name, track.pid, 0, t_ns, 0, vals)
        self._last_counter[key] = ev
        self._append(ev)

    def async_slice(
        self,
        name: str,
        start_ns: int,
        dur_ns: int,
        *,
        async_id: int = 1,
        cat: str = "update",
        args: Mapping[str, object] | None = None,
    ) -> None:
        """Record a nestable async slice on the kernel process (phases sharing ``async_id`` nest)."""
        _check_name(name)
        _check_time(start_ns, "start_ns")
        _check_time(dur_ns, "dur_ns")
        if isinstance(async_id, bool) or not isinstance(async_id, int) or async_id < 0:
            raise InvalidArgument(f"async_id must be an int >= 0, got {async_id!r}")
        cat = self._check_cat(cat)
        if self._refuse(cat):
            return
        self._processes.setdefault(KERNEL_PID, "kernel")
        self._append(self._new("async", cat, name, KERNEL_PID, async_id, start_ns, dur_ns, _check_args(args)))

    # ------------------------------------------------------------------ internals

    def _new(
        self,
        ph: str,
        cat: str,
        name: str,
        pid: int,
        tid: int,
        ts: int,
        dur: int,
        args: dict[str, object] | None,
    ) -> _Event:
        self._seq += 1
        return _Event(ph, cat, name, pid, tid, ts, dur, args, self._seq)

    def _refuse(self, cat: str) -> bool:
        """True (and counted) when the budget no longer takes events of ``cat``."""
        if cat in self._dropped_cats:
            self._dropped[cat] = self._dropped.get(cat, 0) + 1
            return True
        if self._full:
            self._truncated += 1
            return True
        return False

    def _add_slice(
        self, track: Track, name: str, start: int, dur: int, cat: str, args: dict[str, object] | None
    ) -> None:
        if self._refuse(cat):
            return
        if self._coalescing:
            last = self._last_slice.get(track)
            if (
                last is not None
                and last.name == name
                and last.cat == cat
                and start >= last.ts + last.dur
                and not self._opened_since(track, last.ts + last.dur)
            ):
                _merge_into(last, start, dur, args, 1, dur)
                self._coalesced += 1
                return
        ev = self._new("X", cat, name, track.pid, track.tid, start, dur, args)
        self._last_slice[track] = ev
        self._append(ev)

    def _opened_since(self, track: Track, t_ns: int) -> bool:
        """True if a slice still open on ``track`` began at or after ``t_ns``.

        Merging across such a slice would make the merged slice straddle its start.
        """
        stack = self._open.get(track)
        return stack is not None and len(stack) > 0 and stack[-1][2] >= t_ns

    def _append(self, ev: _Event) -> None:
        self._events.append(ev)
        if len(self._events) > self._max_events:
            self._shrink(self._max_events // 2)

    def _shrink(self, target: int) -> None:
        """Degrade step by step until at most ``target`` events remain."""
        while len(self._events) > target:
            self._degrade(target)

    def _degrade(self, target: int) -> None:
        """Apply the next budget step (module docstring)."""
        if not self._coalescing:
            self._coalescing = True
            self._coalesce_all()
            return
        # Counters crowding out everything else are thinned before any category goes.
        counters = [ev for ev in self._events if ev.ph == "C"]
        budget = max(target // 4, 64)
        if len(counters) > budget and self._thin_counters(counters, budget):
            return
        present = {ev.cat for ev in self._events}
        for cat in DROP_ORDER:
            if cat in present:
                self._drop_category(cat)
                return
        self._truncate(target)

    def _coalesce_all(self) -> None:
        by_track: dict[Track, list[_Event]] = {}
        rest: list[_Event] = []
        for ev in self._events:
            if ev.ph == "X":
                by_track.setdefault(Track(ev.pid, ev.tid), []).append(ev)
            else:
                rest.append(ev)
        kept: list[_Event] = []
        self._last_slice = {}
        for track, evs in by_track.items():
            evs.sort(key=lambda e: (e.ts, -e.dur, e.seq))
            cur: _Event | None = None
            for ev in evs:
                if (
                    cur is not None
                    and ev.name == cur.name
                    and ev.cat == cur.cat
                    and ev.ts >= cur.ts + cur.dur
                ):
                    _merge_into(cur, ev.ts, ev.dur, ev.args, ev.count, ev.busy)
                    self._coalesced += ev.count
                    continue
                cur = ev
                kept.append(ev)
            if cur is not None:
                self._last_slice[track] = cur
        # Counters: drop samples that repeat the previous value of their series.
        series: dict[tuple[int, str], list[_Event]] = {}
        for ev in rest:
            if ev.ph == "C":
                series.setdefault((ev.pid, ev.name), []).append(ev)
            else:
                kept.append(ev)
        self._last_counter = {}
        for key, evs in series.items():
            evs.sort(key=lambda e: (e.ts, e.seq))
            prev: _Event | None = None
            for ev in evs:
                if prev is not None and prev.args == ev.args:
                    self._thinned += 1
                    continue
                prev = ev
                kept.append(ev)
            if prev is not None:
                self._last_counter[key] = prev
        kept.sort(key=lambda e: e.seq)
        self._events = kept

    def _drop_category(self, cat: str) -> None:
        kept = [ev for ev in self._events if ev.cat != cat]
        # A merged slice stands for ``count`` recorded slices: all of them are dropped.
        gone = sum(ev.count for ev in self._events if ev.cat == cat)
        self._dropped[cat] = self._dropped.get(cat, 0) + gone
        self._dropped_cats.add(cat)
        self._events = kept
        self._last_slice = {t: ev for t, ev in self._last_slice.items() if ev.cat != cat}
        self._last_counter = {k: ev for k, ev in self._last_counter.items() if ev.cat != cat}
        # Open begin() slices of a dropped category will be refused when they end.

    def _thin_counters(self, counters: list[_Event], budget: int) -> int:
        """Keep the last sample per time bucket of each series; return how many went."""
        series: dict[tuple[int, str], list[_Event]] = {}
        for ev in counters:
            series.setdefault((ev.pid, ev.name), []).append(ev)
        lo = min(ev.ts for ev in counters)
        hi = max(ev.ts for ev in counters)
        per_series = max(budget // len(series), 4)
        bucket = max(self._thin_ns * 2, -(-(hi - lo + 1) // per_series), 1)
        self._thin_ns = bucket
        drop: set[int] = set()
        self._last_counter = {}
        for key, evs in series.items():
            evs.sort(key=lambda e: (e.ts, e.seq))
            # Keep the last sample of each bucket so that the final value is exact.
            for cur, nxt in itertools.pairwise(evs):
                if cur.ts // bucket == nxt.ts // bucket:
                    drop.add(cur.seq)
            self._last_counter[key] = evs[-1]
        self._thinned += len(drop)
        self._events = [ev for ev in self._events if ev.seq not in drop]
        return len(drop)

    def _truncate(self, target: int) -> None:
        order = sorted(self._events, key=lambda e: (e.ts, e.seq))
        keep = {ev.seq for ev in order[: max(target, 0)]}
        self._truncated += sum(ev.count for ev in order[max(target, 0) :])
        self._events = [ev for ev in self._events if ev.seq in keep]
        self._full = True
        self._last_slice = {}
        self._last_counter = {}

    # ------------------------------------------------------------------ output

    @property
    def budget_report(self) -> dict[str, object]:
        """What the budget did so far (the same dict as ``otherData.budget``)."""
        return {
            "coalesced": self._coalesced,
            "dropped": dict(sorted(self._dropped.items())),
            "max_bytes": self._max_bytes,
            "max_events": self._max_events,
            "thinned_counters": self._thinned,
            "truncated": self._truncated,
        }

    def __len__(self) -> int:
        """Number of events held (an async slice counts once; metadata is not counted)."""
        return len(self._events)

    def _close_open(self) -> None:
        """Close slices still open at the end of the run at the last time seen."""
        if not any(self._open.values()):
            return
        last = max((ev.ts + ev.dur for ev in self._events), default=0)
        last = max([last, *(s[2] for stack in self._open.values() for s in stack)])
        for track in sorted(self._open):
            stack = self._open[track]
            while stack:
                self.end(track, last, {"unfinished": True})

    def _metadata_events(self) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for rank, pid in enumerate(sorted(self._processes, key=lambda p: (p < _RESERVED_BASE, p))):
            out.append(
                {
                    "ph": "M",
                    "name": "process_name",
                    "pid": pid,
                    "tid": pid,
                    "args": {"name": self._processes[pid]},
                }
            )
            out.append(
                {
                    "ph": "M",
                    "name": "process_sort_index",
                    "pid": pid,
                    "tid": pid,
                    "args": {"sort_index": rank},
                }
            )
        for track in sorted(self._threads):
            out.append(
                {
                    "ph": "M",
                    "name": "thread_name",
                    "pid": track.pid,
                    "tid": track.tid,
                    "args": {"name": self._threads[track]},
                }
            )
            out.append(
                {
                    "ph": "M",
                    "name": "thread_sort_index",
                    "pid": track.pid,
                    "tid": track.tid,
                    "args": {"sort_index": track.tid - track.pid},
                }
            )
        return out

    def _repair_nesting(self) -> None:
        """Clip coalesced slices that would overlap a slice on their track without nesting.

        Coalescing merges slices that are adjacent in time on a track; a parent recorded
        with :meth:`slice` *after* its children can begin in the gap between two merged
        slices. Chrome (and Perfetto) need the slices of a track to nest, so the merged
        envelope is cut short where that parent begins (or at its parent's end).
        """
        by_track: dict[tuple[int, int], list[_Event]] = {}
        for ev in self._events:
            if ev.ph == "X":
                by_track.setdefault((ev.pid, ev.tid), []).append(ev)
        for evs in by_track.values():
            if not any(ev.count > 1 for ev in evs):
                continue
            evs.sort(key=lambda e: (e.ts, -e.dur, e.seq))
            stack: list[_Event] = []
            for ev in evs:
                while stack and stack[-1].ts + stack[-1].dur <= ev.ts:
                    stack.pop()
                while stack and ev.ts + ev.dur > stack[-1].ts + stack[-1].dur:
                    top = stack[-1]
                    if top.count > 1:
                        top.dur = ev.ts - top.ts
                        stack.pop()
                    elif ev.count > 1:
                        ev.dur = top.ts + top.dur - ev.ts
                    else:
                        break  # the input itself does not nest; leave it as recorded
                stack.append(ev)

    def _render_events(self) -> list[tuple[tuple[int, int, int, int], dict[str, object]]]:
        self._repair_nesting()
        nest_pos = self._async_order()
        rows: list[tuple[tuple[int, int, int, int], dict[str, object]]] = []
        for ev in self._events:
            args = ev.args
            if ev.ph == "X":
                if ev.count > 1:
                    args = dict(args or {})
                    args["count"] = ev.count
                    args["busy_ns"] = ev.busy
                d: dict[str, object] = {
                    "ph": "X",
                    "cat": ev.cat,
                    "name": ev.name,
                    "pid": ev.pid,
                    "tid": ev.tid,
                    "ts": _us(ev.ts),
                    "dur": _us(ev.dur),
                }
                if args:
                    d["args"] = args
                rows.append(((ev.ts, _RANK_OTHER, -ev.dur, ev.seq), d))
            elif ev.ph == "i":
                d = {
                    "ph": "i",
                    "cat": ev.cat,
                    "name": ev.name,
                    "pid": ev.pid,
                    "tid": ev.tid,
                    "ts": _us(ev.ts),
                    "s": _INSTANT_SCOPES[ev.busy],
                }
                if args:
                    d["args"] = args
                rows.append(((ev.ts, _RANK_OTHER, 0, ev.seq), d))
            elif ev.ph == "C":
                d = {"ph": "C", "cat": ev.cat, "name": ev.name, "pid": ev.pid, "ts": _us(ev.ts), "args": args}
                rows.append(((ev.ts, _RANK_OTHER, 0, ev.seq), d))
            else:  # async: a "b"/"e" pair with one id; inner phases end before outer ones
                ident = f"0x{ev.tid:x}"
                b: dict[str, object] = {
                    "ph": "b",
                    "cat": ev.cat,
                    "name": ev.name,
                    "pid": ev.pid,
                    "tid": ev.pid,
                    "id": ident,
                    "ts": _us(ev.ts),
                }
                if args:
                    b["args"] = args
                e: dict[str, object] = {
                    "ph": "e",
                    "cat": ev.cat,
                    "name": ev.name,
                    "pid": ev.pid,
                    "tid": ev.pid,
                    "id": ident,
                    "ts": _us(ev.ts + ev.dur),
                }
                pos = nest_pos[ev.seq]
                rows.append(((ev.ts, _RANK_ASYNC, pos[0], 0), b))
                rows.append(((ev.ts + ev.dur, _RANK_ASYNC, pos[1], 0), e))
        rows.sort(key=lambda r: r[0])
        return rows

    def _async_order(self) -> dict[int, tuple[int, int]]:
        """Positions of each async slice's ``b`` and ``e`` in a properly nested sequence per id.

        Slices of one id are visited outer first (start, then longest, then recording order);
        a slice's ``e`` comes after the ``e`` of everything it contains and before the ``b`` of
        anything starting at or after its end, so zero-length slices emit ``b`` then ``e`` and
        a child never ends after its parent (it is clipped to the parent's end).
        """
        by_id: dict[int, list[_Event]] = {}
        for ev in self._events:
            if ev.ph == "async":
                by_id.setdefault(ev.tid, []).append(ev)
        out: dict[int, tuple[int, int]] = {}
        for evs in by_id.values():
            evs.sort(key=lambda e: (e.ts, -e.dur, e.seq))
            n = 0
            stack: list[_Event] = []
            begins: dict[int, int] = {}
            for ev in evs:
                while stack and stack[-1].ts + stack[-1].dur <= ev.ts:
                    top = stack.pop()
                    out[top.seq] = (begins[top.seq], n)
                    n += 1
                if stack and ev.ts + ev.dur > stack[-1].ts + stack[-1].dur:
                    ev.dur = stack[-1].ts + stack[-1].dur - ev.ts
                begins[ev.seq] = n
                n += 1
                stack.append(ev)
            while stack:
                top = stack.pop()
                out[top.seq] = (begins[top.seq], n)
                n += 1
        return out

    def _render(self) -> bytes:
        lines = [json.dumps(m, sort_keys=True, separators=(",", ":")) for m in self._metadata_events()]
        lines.extend(
            json.dumps(d, sort_keys=True, separators=(",", ":"), allow_nan=False)
            for _, d in self._render_events()
        )
        other = dict(sorted(self._metadata.items()))
        other["budget"] = self.budget_report
        other["dropped"] = sum(self._dropped.values())
        head = '{"displayTimeUnit":"ns","otherData":'
        head += json.dumps(other, sort_keys=True, separators=(",", ":"), allow_nan=False)
        body = ",\n".join(lines)
        return (head + ',"traceEvents":[\n' + body + "\n]}\n").encode()

    def to_bytes(self) -> bytes:
        """The trace file's bytes, degraded as needed to fit ``max_bytes``.

        Closes slices still open (at the last time seen, args ``unfinished``). Degrading is
        permanent: later calls see the reduced recording.
        """
        self._close_open()
        data = self._render()
        while len(data) > self._max_bytes:
            if not self._events:
                raise InvalidArgument(
                    f"max_bytes={self._max_bytes} cannot hold even the track metadata ({len(data)} bytes)"
                )
            n = len(self._events)
            target = max(int(n * self._max_bytes / len(data) * 0.9), 0)
            self._degrade(target)
            data = self._render()
        return data

    def write(self, path: str | Path) -> Path:
        """Write the trace to ``path`` (see :meth:`to_bytes`) and return the path."""
        out = Path(path)
        out.write_bytes(self.to_bytes())
        return out


def _merge_into(
    cur: _Event, start: int, dur: int, args: dict[str, object] | None, count: int, busy: int
) -> None:
    """Extend slice ``cur`` over a later same-name slice; integer args add up."""
    cur.dur = max(cur.ts + cur.dur, start + dur) - cur.ts
    cur.count += count
    cur.busy += busy
    if cur.args is None:
        return
    merged: dict[str, object] = {}
    for key, value in cur.args.items():
        other = None if args is None else args.get(key)
        if _is_int(value) and _is_int(other):
            assert isinstance(value, int) and isinstance(other, int)
            merged[key] = value + other
        elif value == other:
            merged[key] = value
    cur.args = merged or None
