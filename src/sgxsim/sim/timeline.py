"""Time series of a scenario run and the figures drawn from them.

:class:`TimelineData` is what a run records for the picture: EPC pages each enclave holds
over time, the SVN update windows, the CPUSVN steps, attestation verdicts and the ioctl
refusals / faults user space saw. :func:`plot_timeline` draws one figure of it (EPC usage
stacked per enclave with the update windows shaded, a CPUSVN step panel, a verdict panel and
a refusal/fault panel, all against simulated seconds); :func:`plot_comparison` draws the
per-policy bar charts of :data:`COMPARISON_METRICS`.

Figures are drawn with matplotlib's Agg renderer on a private :class:`~matplotlib.figure.Figure`
(no pyplot, no display, no global rc changes) and saved with the ``Software`` PNG text chunk
removed, so the same data gives the same PNG bytes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import EngFormatter, MaxNLocator

from sgxsim.errors import InvalidArgument

__all__ = [
    "COMPARISON_METRICS",
    "STATUS_COLORS",
    "CpusvnStep",
    "EventMark",
    "Refusal",
    "TimelineData",
    "UpdateWindow",
    "Verdict",
    "format_ns",
    "plot_comparison",
    "plot_timeline",
]

#: Marker colours of attestation statuses (Intel TCB status strings); others are grey.
STATUS_COLORS: Mapping[str, str] = {
    "UpToDate": "#2ca02c",
    "SWHardeningNeeded": "#9acd32",
    "ConfigurationNeeded": "#9467bd",
    "ConfigurationAndSWHardeningNeeded": "#c5b0d5",
    "OutOfDate": "#ff7f0e",
    "OutOfDateConfigurationNeeded": "#8c564b",
    "Revoked": "#d62728",
}
_OTHER_STATUS_COLOR = "#7f7f7f"

#: The policy-comparison metrics: ``(key, label, unit)``; unit ``"ns"`` is simulated time.
COMPARISON_METRICS: tuple[tuple[str, str, str], ...] = (
    ("time_to_attested_ns", "Time until new CPUSVN attested", "ns"),
    ("enclaves_destroyed", "Enclaves destroyed", "count"),
    ("enclave_downtime_ns", "Enclave downtime (sum)", "ns"),
    ("refused_ioctls", "Refused ioctls", "count"),
    ("faults", "Faults (SIGBUS/SIGSEGV)", "count"),
    ("epc_pages_zapped", "EPC pages zapped", "count"),
    ("update_duration_ns", "SVN update duration", "ns"),
    ("new_cpusvn_reached", "New CPUSVN reached", "bool"),
    ("new_cpusvn_attested", "New CPUSVN attested", "bool"),
    ("verdicts_refused", "Verdicts refused", "count"),
    ("locked_window_ns", "EPC locked", "ns"),
    ("ioctls_refused_in_window", "Refused in window", "count"),
    ("faults_sigbus_in_window", "SIGBUS in window", "count"),
    ("ipis_sent", "IPIs sent in window", "count"),
    ("aex_by_ipi", "AEXs by IPI", "count"),
    ("release_waits", "Release waits in window", "count"),
    ("vcpu_halted_ns", "vCPUs halted in window", "ns"),
)

_CPUSVN_HEX = re.compile(r"^[0-9a-fA-F]{32}$")
_MAX_GRID = 20_000  # points of the EPC panel's time grid
_MAX_MARKERS = 5_000  # refusals drawn one by one; more are binned
_MAX_VERDICT_ROWS = 16
_UPDATE_OK = "#1f77b4"
_UPDATE_FAIL = "#d62728"
_PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
)
_OTHER_COLOR = "#c7c7c7"
_PNG_METADATA: dict[str, Any] = {"Software": None}


def _time(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"{what} must be an int >= 0 of simulated ns, got {value!r}")
    return value


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{what} must be a non-empty str, got {value!r}")
    return value


def _cpusvn(value: object, what: str) -> str:
    if not isinstance(value, str) or not _CPUSVN_HEX.match(value):
        raise InvalidArgument(f"{what} must be 32 hex digits (16-byte CPUSVN), got {value!r}")
    return value.lower()


@dataclass(frozen=True)
class UpdateWindow:
    """One SVN update attempt: ``[start_ns, end_ns]`` and how it ended (e.g. ``"updated"``)."""

    start_ns: int
    end_ns: int
    outcome: str

    def __post_init__(self) -> None:
        _time(self.start_ns, "start_ns")
        _time(self.end_ns, "end_ns")
        _text(self.outcome, "outcome")
        if self.end_ns < self.start_ns:
            raise InvalidArgument(f"update window ends ({self.end_ns}) before it starts ({self.start_ns})")

    @property
    def succeeded(self) -> bool:
        """True unless the outcome names a failure (``failed``, ``error``, ``EIO``...)."""
        low = self.outcome.lower()
        return not any(w in low for w in ("fail", "error", "eio", "eagain", "abort", "warn"))


@dataclass(frozen=True)
class CpusvnStep:
    """CR_CPUSVN changed at ``t_ns`` from ``old`` to ``new`` (16 bytes as 32 hex digits)."""

    t_ns: int
    old: str
    new: str

    def __post_init__(self) -> None:
        _time(self.t_ns, "t_ns")
        object.__setattr__(self, "old", _cpusvn(self.old, "old"))
        object.__setattr__(self, "new", _cpusvn(self.new, "new"))


@dataclass(frozen=True)
class Verdict:
    """A relying party's verdict on ``enclave``'s quote at ``t_ns``.

    ``status`` is the TCB status string (``UpToDate``, ``OutOfDate``, ``Revoked``...);
    ``accepted`` is the relying party's decision under its policy; ``detail`` is free text.
    """

    t_ns: int
    enclave: str
    status: str
    accepted: bool
    detail: str = ""

    def __post_init__(self) -> None:
        _time(self.t_ns, "t_ns")
        _text(self.enclave, "enclave")
        _text(self.status, "status")
        if not isinstance(self.accepted, bool):
            raise InvalidArgument(f"accepted must be a bool, got {self.accepted!r}")
        if not isinstance(self.detail, str):
            raise InvalidArgument(f"detail must be a str, got {self.detail!r}")


@dataclass(frozen=True)
class Refusal:
    """User space saw a refused ioctl or a fault at ``t_ns``; ``kind`` names it (``EBUSY``, ``SIGBUS``)."""

    t_ns: int
    kind: str

    def __post_init__(self) -> None:
        _time(self.t_ns, "t_ns")
        _text(self.kind, "kind")


@dataclass(frozen=True)
class EventMark:
    """An operator or platform event drawn as a marker: a microcode load (``svn_raising`` or
    functional), a TCB recovery, a trigger write, a drain, a restart, a kexec."""

    t_ns: int
    end_ns: int
    kind: str
    subject: str
    outcome: str
    svn_raising: bool = False

    def __post_init__(self) -> None:
        _time(self.t_ns, "t_ns")
        _time(self.end_ns, "end_ns")
        _text(self.kind, "kind")


@dataclass
class TimelineData:
    """Everything :func:`plot_timeline` draws, recorded as the run goes.

    ``epc_pages`` maps an enclave name to its samples ``(t_ns, pages held)``; a series holds
    its last value until its next sample. ``epc_capacity_pages`` draws the EPC size;
    ``end_ns`` is the end of the run (defaults to the last time recorded).
    """

    epc_pages: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    update_windows: list[UpdateWindow] = field(default_factory=list)
    cpusvn_steps: list[CpusvnStep] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    epc_capacity_pages: int | None = None
    end_ns: int | None = None
    events: list[EventMark] = field(default_factory=list)
    #: What each logical CPU did: ``(cpu, start_ns, end_ns, kind)`` (ECALLs, operator work).
    cpu_spans: list[tuple[int, int, int, str]] = field(default_factory=list)
    #: Instants per CPU: ``(t_ns, cpu, kind)`` (IPIs, refused calls, faults).
    cpu_marks: list[tuple[int, int, str]] = field(default_factory=list)

    def add_event(
        self, t_ns: int, end_ns: int, kind: str, subject: str, outcome: str, svn_raising: bool = False
    ) -> None:
        """Record an event marker (see :class:`EventMark`)."""
        self.events.append(EventMark(t_ns, max(end_ns, t_ns), kind, subject, outcome, svn_raising))

    def add_epc(self, enclave: str, t_ns: int, pages: int) -> None:
        """Record that ``enclave`` holds ``pages`` EPC pages from ``t_ns`` on."""
        _text(enclave, "enclave")
        _time(t_ns, "t_ns")
        if isinstance(pages, bool) or not isinstance(pages, int) or pages < 0:
            raise InvalidArgument(f"pages must be an int >= 0, got {pages!r}")
        self.epc_pages.setdefault(enclave, []).append((t_ns, pages))

    def add_update_window(self, start_ns: int, end_ns: int, outcome: str) -> None:
        """Record one SVN update attempt."""
        self.update_windows.append(UpdateWindow(start_ns, end_ns, outcome))

    def add_cpusvn_step(self, t_ns: int, old: str, new: str) -> None:
        """Record a CPUSVN change."""
        self.cpusvn_steps.append(CpusvnStep(t_ns, old, new))

    def add_verdict(self, t_ns: int, enclave: str, status: str, accepted: bool, detail: str = "") -> None:
        """Record an attestation verdict."""
        self.verdicts.append(Verdict(t_ns, enclave, status, accepted, detail))

    def add_refusal(self, t_ns: int, kind: str) -> None:
        """Record a refused ioctl or a fault."""
        self.refusals.append(Refusal(t_ns, kind))

    def last_ns(self) -> int:
        """``end_ns`` if set, else the latest time anything was recorded (0 if nothing)."""
        if self.end_ns is not None:
            return _time(self.end_ns, "end_ns")
        times = [t for series in self.epc_pages.values() for t, _ in series]
        times += [w.end_ns for w in self.update_windows]
        times += [s.t_ns for s in self.cpusvn_steps]
        times += [v.t_ns for v in self.verdicts]
        times += [r.t_ns for r in self.refusals]
        return max(times, default=0)


# --------------------------------------------------------------------------------------
# Formatting helpers


def format_ns(ns: int | float) -> str:
    """A simulated duration for people: ``"1.500 s"``, ``"12.000 ms"``, ``"830 ns"``."""
    if isinstance(ns, bool) or not isinstance(ns, int | float) or not math.isfinite(ns):
        raise InvalidArgument(f"expected a finite number of ns, got {ns!r}")
    mag = abs(ns)
    if mag >= 1e9:
        return f"{ns / 1e9:.3f} s"
    if mag >= 1e6:
        return f"{ns / 1e6:.3f} ms"
    if mag >= 1e3:
        return f"{ns / 1e3:.3f} us"
    return f"{ns:g} ns"


def _unit_for(max_ns: float) -> tuple[str, float]:
    if max_ns >= 1e9:
        return "s", 1e9
    if max_ns >= 1e6:
        return "ms", 1e6
    if max_ns >= 1e3:
        return "us", 1e3
    return "ns", 1.0


def _short_svn(hexstr: str) -> str:
    """CPUSVN for a tick label: trailing zero bytes dropped (``0e0e0203ff80..``)."""
    short = hexstr.rstrip("0")
    short = short + "0" * (len(short) % 2)
    return (short or "00") + (".." if len(short) < len(hexstr) else "")


# --------------------------------------------------------------------------------------
# The timeline figure


def _step_values(series: Sequence[tuple[int, int]], grid: np.ndarray) -> np.ndarray:
    """Value of a step series (hold last sample; 0 before the first) at each grid time."""
    ordered = sorted(series)  # by time; equal times keep the larger index last -> stable
    times = np.fromiter((t for t, _ in ordered), dtype=np.int64, count=len(ordered))
    vals = np.fromiter((p for _, p in ordered), dtype=np.float64, count=len(ordered))
    idx = np.searchsorted(times, grid, side="right") - 1
    out = np.where(idx >= 0, vals[np.clip(idx, 0, None)], 0.0)
    return np.asarray(out, dtype=np.float64)


def _epc_panel(ax: Any, data: TimelineData, end_ns: int, top_n: int) -> None:
    ax.set_ylabel("EPC pages used")
    series = {name: s for name, s in data.epc_pages.items() if s}
    if not series:
        ax.text(0.5, 0.5, "no EPC samples", transform=ax.transAxes, ha="center", va="center", color="grey")
        return
    times = sorted({t for s in series.values() for t, _ in s} | {end_ns})
    grid = np.asarray(times, dtype=np.int64)
    if len(grid) > _MAX_GRID:
        grid = np.unique(np.linspace(0, end_ns, _MAX_GRID).astype(np.int64))
    values = {name: _step_values(s, grid) for name, s in series.items()}
    # The largest series (by pages x time) get their own colour, the rest stack as "other".
    weight = {name: float(v.sum()) for name, v in values.items()}
    ranked = sorted(values, key=lambda n: (-weight[n], n))
    shown = ranked[:top_n] if len(ranked) > top_n + 1 else ranked
    rest = [n for n in ranked if n not in set(shown)]
    layers = [(name, values[name], _PALETTE[i % len(_PALETTE)]) for i, name in enumerate(shown)]
    if rest:
        other = np.sum([values[n] for n in rest], axis=0)
        layers.append((f"other ({len(rest)})", other, _OTHER_COLOR))
    x = grid / 1e9
    base = np.zeros(len(grid), dtype=np.float64)
    for name, vals, color in layers:
        top = base + vals
        ax.fill_between(x, base, top, step="post", color=color, alpha=0.85, linewidth=0, label=name)
        ax.step(x, top, where="post", color=color, linewidth=0.8)
        base = top
    if data.epc_capacity_pages is not None:
        ax.axhline(data.epc_capacity_pages, color="black", linestyle="--", linewidth=1, label="EPC capacity")
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(EngFormatter(sep=""))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)


_EVENT_STYLE: Mapping[str, tuple[str, Any, str]] = {
    # kind: (colour, line style, legend label)
    "microcode_load": ("#d62728", "-", "late load (SVN-raising)"),
    "microcode_load/functional": ("#ff7f0e", "--", "late load (functional)"),
    "tcb_recovery": ("#2ca02c", ":", "TCB recovery published"),
    "svn_update_trigger": ("#9467bd", "-.", "sgx.update_svn write"),
    "drain": ("#7f7f7f", "--", "drain"),
    "restart": ("#17becf", "--", "restart"),
    "kexec": ("#8c564b", "-", "kexec"),
}


def _event_lines(axes: Sequence[Any], events: Sequence[EventMark]) -> list[Any]:
    """A vertical line per event on every panel, its name above the top panel; legend handles."""
    handles: dict[str, Any] = {}
    for i, ev in enumerate(sorted(events, key=lambda e: (e.t_ns, e.kind, e.subject))):
        key = ev.kind if ev.kind != "microcode_load" or ev.svn_raising else "microcode_load/functional"
        color, style, label = _EVENT_STYLE.get(key, ("#000000", ":", ev.kind))
        for ax in axes:
            ax.axvline(ev.t_ns / 1e9, color=color, linestyle=style, linewidth=1.1, alpha=0.9)
        axes[0].annotate(
            ev.subject if ev.kind == "microcode_load" else label,
            (ev.t_ns / 1e9, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(2, -10 - 9 * (i % 3)),
            textcoords="offset points",
            fontsize=6.5,
            color=color,
        )
        handles.setdefault(key, Line2D([], [], color=color, linestyle=style, label=label))
    return [handles[k] for k in sorted(handles)]


_MARK_STYLE: Mapping[str, tuple[str, str]] = {"IPI": ("v", "#d62728"), "AEX": ("x", "#9467bd")}


def _window_panel(ax: Any, data: TimelineData, ncpu_hint: int = 0) -> None:
    """The longest SVN update at its own time scale: per CPU what ran, IPIs, refused calls."""
    windows = [w for w in data.update_windows if w.end_ns > w.start_ns]
    if not windows:
        ax.text(0.5, 0.5, "no SVN update window to zoom into", transform=ax.transAxes, ha="center")
        ax.set_yticks([])
        return
    w = max(windows, key=lambda w: (w.end_ns - w.start_ns, -w.start_ns))
    pad = max((w.end_ns - w.start_ns) // 2, 100_000)
    lo, hi = max(w.start_ns - pad, 0), w.end_ns + pad
    unit, scale = _unit_for(float(hi - lo))
    cpus = sorted({c for c, *_ in data.cpu_spans} | {c for _, c, _ in data.cpu_marks} | set(range(ncpu_hint)))
    kinds = sorted({k for c, a, b, k in data.cpu_spans if b >= lo and a <= hi})
    colors = {k: _PALETTE[i % len(_PALETTE)] for i, k in enumerate(kinds)}
    handles: list[Any] = []
    for kind in kinds:
        for cpu in cpus:
            bars = [
                ((max(a, lo) - lo) / scale, (min(b, hi) - max(a, lo)) / scale)
                for c, a, b, k in data.cpu_spans
                if c == cpu and k == kind and b >= lo and a <= hi
            ]
            if bars:
                ax.broken_barh(bars, (cpu - 0.35, 0.7), color=colors[kind], alpha=0.8, linewidth=0)
        handles.append(Patch(color=colors[kind], alpha=0.8, label=kind))
    marks = [(t, c, k) for t, c, k in data.cpu_marks if lo <= t <= hi]
    for kind in sorted({k for _, _, k in marks}):
        marker, color = _MARK_STYLE.get(kind, ("|", "#000000"))
        xs = [(t - lo) / scale for t, _, k in marks if k == kind]
        ys = [c for _, c, k in marks if k == kind]
        ax.scatter(xs, ys, marker=marker, s=40, color=color, zorder=3)
        handles.append(Line2D([], [], linestyle="", marker=marker, color=color, label=kind))
    for u in data.update_windows:
        if u.end_ns >= lo and u.start_ns <= hi:
            ax.axvspan(
                (max(u.start_ns, lo) - lo) / scale,
                (min(u.end_ns, hi) - lo) / scale,
                color=_UPDATE_OK if u.succeeded else _UPDATE_FAIL,
                alpha=0.15,
                linewidth=0,
            )
    handles.append(Patch(color=_UPDATE_OK, alpha=0.3, label="SVN update"))
    ax.set_yticks(cpus, [f"CPU {c}" for c in cpus], fontsize=7)
    ax.set_ylim(min(cpus, default=0) - 0.6, max(cpus, default=0) + 0.6)
    ax.set_xlim(0, (hi - lo) / scale)
    ax.set_xlabel(f"{unit} after {format_ns(lo)} (zoom on the SVN update at {format_ns(w.start_ns)})")
    ax.set_title("The SVN update window per logical CPU", fontsize=9)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)


def _cpusvn_panel(ax: Any, data: TimelineData, end_ns: int) -> None:
    ax.set_ylabel("CPUSVN")
    steps = sorted(data.cpusvn_steps, key=lambda s: s.t_ns)
    if not steps:
        ax.text(0.5, 0.5, "no CPUSVN change", transform=ax.transAxes, ha="center", va="center", color="grey")
        ax.set_yticks([])
        return
    levels: list[str] = [steps[0].old]
    for step in steps:
        for svn in (step.old, step.new):
            if svn not in levels:
                levels.append(svn)
    xs = [0.0] + [s.t_ns / 1e9 for s in steps] + [end_ns / 1e9]
    ys = [levels.index(steps[0].old)] + [levels.index(s.new) for s in steps]
    ys.append(ys[-1])
    ax.step(xs, ys, where="post", color="#9467bd", linewidth=2)
    for step in steps:
        ax.annotate(
            f"{_short_svn(step.old)} -> {_short_svn(step.new)}",
            (step.t_ns / 1e9, levels.index(step.new)),
            textcoords="offset points",
            xytext=(4, -10),
            fontsize=7,
            family="monospace",
        )
    ax.set_yticks(range(len(levels)), [_short_svn(v) for v in levels], fontsize=7, family="monospace")
    ax.set_ylim(-0.5, len(levels) - 0.5)


def _verdict_panel(ax: Any, data: TimelineData) -> None:
    ax.set_ylabel("attestation")
    if not data.verdicts:
        ax.text(0.5, 0.5, "no verdicts", transform=ax.transAxes, ha="center", va="center", color="grey")
        ax.set_yticks([])
        return
    first: dict[str, int] = {}
    for v in data.verdicts:
        first[v.enclave] = min(first.get(v.enclave, v.t_ns), v.t_ns)
    rows = sorted(first, key=lambda n: (first[n], n))
    if len(rows) > _MAX_VERDICT_ROWS:
        rows = [*rows[: _MAX_VERDICT_ROWS - 1], "other"]
    row_of = {name: i for i, name in enumerate(rows)}
    statuses: list[str] = []
    for accepted, marker in ((True, "o"), (False, "x")):
        by_status: dict[str, tuple[list[float], list[int]]] = {}
        for v in data.verdicts:
            if v.accepted is not accepted:
                continue
            xs, ys = by_status.setdefault(v.status, ([], []))
            xs.append(v.t_ns / 1e9)
            ys.append(row_of.get(v.enclave, len(rows) - 1))
        for status in sorted(by_status):
            xs, ys = by_status[status]
            color = STATUS_COLORS.get(status, _OTHER_STATUS_COLOR)
            ax.scatter(xs, ys, marker=marker, s=36, color=color, linewidths=1.5 if marker == "x" else 0.5)
            if status not in statuses:
                statuses.append(status)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    handles: list[Any] = [
        Line2D([], [], linestyle="", marker="o", color=STATUS_COLORS.get(s, _OTHER_STATUS_COLOR), label=s)
        for s in sorted(statuses)
    ]
    handles.append(Line2D([], [], linestyle="", marker="x", color="black", label="refused by relying party"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)


def _refusal_panel(ax: Any, data: TimelineData, end_ns: int) -> None:
    ax.set_ylabel("refusals / faults")
    if not data.refusals:
        ax.text(0.5, 0.5, "no refused ioctls or faults", transform=ax.transAxes, ha="center", va="center")
        ax.set_yticks([])
        return
    counts: dict[str, int] = {}
    for r in data.refusals:
        counts[r.kind] = counts.get(r.kind, 0) + 1
    kinds = sorted(counts)
    if len(data.refusals) <= _MAX_MARKERS:
        for i, kind in enumerate(kinds):
            xs = [r.t_ns / 1e9 for r in data.refusals if r.kind == kind]
            ax.scatter(xs, [i] * len(xs), marker="|", s=80, color=_PALETTE[(i + 3) % len(_PALETTE)])
        ax.set_yticks(range(len(kinds)), [f"{k} ({counts[k]})" for k in kinds], fontsize=7)
        ax.set_ylim(-0.7, len(kinds) - 0.3)
        return
    # Too many to draw one by one: events per bin, one line per kind.
    edges = np.linspace(0, max(end_ns, 1), 201)
    for i, kind in enumerate(kinds):
        ts = np.fromiter((r.t_ns for r in data.refusals if r.kind == kind), dtype=np.float64)
        hist, _ = np.histogram(ts, bins=edges)
        ax.step(edges[:-1] / 1e9, hist, where="post", color=_PALETTE[(i + 3) % len(_PALETTE)], label=kind)
    ax.set_ylabel("refusals / faults\nper bin")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)


def _shade_updates(axes: Iterable[Any], windows: Sequence[UpdateWindow]) -> list[Any]:
    handles: list[Any] = []
    seen: set[bool] = set()
    for w in sorted(windows, key=lambda w: (w.start_ns, w.end_ns, w.outcome)):
        color = _UPDATE_OK if w.succeeded else _UPDATE_FAIL
        for ax in axes:
            # A zero-length window still shows: draw it at least as a line.
            ax.axvspan(w.start_ns / 1e9, w.end_ns / 1e9, color=color, alpha=0.18, linewidth=0)
            ax.axvline(w.start_ns / 1e9, color=color, linewidth=0.8, alpha=0.8)
        if w.succeeded not in seen:
            seen.add(w.succeeded)
            label = "SVN update" if w.succeeded else "SVN update (failed)"
            handles.append(Patch(color=color, alpha=0.3, label=label))
    return handles


def plot_timeline(data: TimelineData, path: str | Path, title: str, *, top_n: int = 8) -> Path:
    """Draw the run's timeline into the PNG ``path`` and return the path.

    Panels (shared x axis, simulated seconds): EPC pages used stacked per enclave (the
    ``top_n`` largest by pages x time, the rest as "other"), CPUSVN steps, attestation
    verdicts (colour = TCB status, ``x`` = refused) and refused ioctls / faults. SVN update
    windows are shaded on every panel. Deterministic bytes for equal data.
    """
    if not isinstance(data, TimelineData):
        raise InvalidArgument(f"data must be a TimelineData, got {type(data).__name__}")
    if not isinstance(title, str):
        raise InvalidArgument(f"title must be a str, got {title!r}")
    if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1:
        raise InvalidArgument(f"top_n must be an int >= 1, got {top_n!r}")
    end_ns = max(data.last_ns(), 1)
    fig = Figure(figsize=(13, 12), dpi=100, layout="constrained")
    every = fig.subplots(5, 1, gridspec_kw={"height_ratios": [3.2, 1.0, 1.6, 1.0, 2.0]})
    axes = list(every[:4])
    for ax in axes[1:]:
        ax.sharex(axes[0])
    _epc_panel(axes[0], data, end_ns, top_n)
    _cpusvn_panel(axes[1], data, end_ns)
    _verdict_panel(axes[2], data)
    _refusal_panel(axes[3], data, end_ns)
    _window_panel(every[4], data)
    handles = _shade_updates(axes, data.update_windows)
    handles += _event_lines(axes, data.events)
    if handles:
        axes[1].legend(
            handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False
        )
    for ax in axes:
        ax.grid(True, axis="x", color="#dddddd", linewidth=0.6)
        ax.set_xlim(0, end_ns / 1e9)
    for ax in axes[:-1]:
        ax.tick_params(labelbottom=False)
    axes[-1].set_xlabel("simulated time since power-on (s)")
    fig.suptitle(title)
    return _save(fig, path)


# --------------------------------------------------------------------------------------
# The policy comparison figure

_PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("New CPUSVN reached / attested", ("new_cpusvn_reached", "new_cpusvn_attested")),
    ("Time until new CPUSVN attested", ("time_to_attested_ns",)),
    ("Attestation verdicts refused", ("verdicts_refused",)),
    ("Enclaves destroyed", ("enclaves_destroyed",)),
    ("Enclave downtime (sum)", ("enclave_downtime_ns",)),
    ("Refused ioctls / faults", ("refused_ioctls", "faults")),
    ("EPC pages zapped", ("epc_pages_zapped",)),
    ("SVN update duration", ("update_duration_ns",)),
    ("EPC-locked window", ("locked_window_ns",)),
    ("In the window: refused ioctls / SIGBUS", ("ioctls_refused_in_window", "faults_sigbus_in_window")),
    ("In the window: IPIs / AEXs / release waits", ("ipis_sent", "aex_by_ipi", "release_waits")),
    ("vCPUs halted in the window", ("vcpu_halted_ns",)),
)
_UNITS = {key: unit for key, _, unit in COMPARISON_METRICS}
#: The fill of each stacked series in a comparison panel (the legend names them).
_HATCHES = (None, "//", "..")


def _metric(row: Mapping[str, object], key: str) -> float | None:
    value = row.get(key)
    if value is None:
        return None
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidArgument(
            f"metric {key!r} of policy {row.get('policy')!r} must be a number, got {value!r}"
        )
    return float(value)


def plot_comparison(rows: Sequence[Mapping[str, object]], path: str | Path, title: str = "") -> Path:
    """Bar charts comparing policies, one panel per metric of :data:`COMPARISON_METRICS`.

    Each row is one run: ``{"policy": name, <metric key>: number or None, ...}``; a missing or
    None metric (e.g. the new CPUSVN was never attested) is drawn as "n/a". Refused ioctls and
    faults share a stacked panel. Returns ``path``.
    """
    if not isinstance(rows, Sequence) or not rows:
        raise InvalidArgument("rows must be a non-empty sequence of mappings")
    policies: list[str] = []
    for row in rows:
        if not isinstance(row, Mapping):
            raise InvalidArgument(f"each row must be a mapping, got {row!r}")
        policies.append(_text(row.get("policy"), "row['policy']"))
    fig = Figure(figsize=(15, 11), dpi=100, layout="constrained")
    axes = fig.subplots(3, 4)
    xs = np.arange(len(rows))
    colors = [_PALETTE[i % len(_PALETTE)] for i in range(len(rows))]
    for ax, (label, keys) in zip(axes.flat, _PANELS, strict=False):
        series = [[_metric(row, k) for row in rows] for k in keys]
        finite = [v for s in series for v in s if v is not None]
        is_time = _UNITS[keys[0]] == "ns"
        unit, scale = _unit_for(max(finite, default=0.0)) if is_time else ("", 1.0)
        bottom = np.zeros(len(rows))
        whiskers = 0.0
        legend: list[Any] = []
        for j, (key, vals) in enumerate(zip(keys, series, strict=True)):
            heights = np.array([0.0 if v is None else v / scale for v in vals])
            hatch = _HATCHES[j % len(_HATCHES)]
            ax.bar(xs, heights, bottom=bottom, color=colors, edgecolor="black", linewidth=0.5, hatch=hatch)
            spread = [(_metric(r, f"{key}_p5"), _metric(r, f"{key}_p95")) for r in rows]
            if len(keys) == 1 and any(hi is not None for _, hi in spread):  # compare --seeds: p5 .. p95
                lows = np.array(
                    [h if lo is None else lo / scale for h, (lo, _) in zip(heights, spread, strict=True)]
                )
                highs = np.array(
                    [h if hi is None else hi / scale for h, (_, hi) in zip(heights, spread, strict=True)]
                )
                yerr = np.clip(np.vstack([heights - lows, highs - heights]), 0, None)
                ax.errorbar(xs, heights, yerr=yerr, fmt="none", ecolor="black", capsize=4, label="p5-p95")
                whiskers = float(highs.max())
            bottom = bottom + heights
            legend.append(
                Patch(facecolor="white", edgecolor="black", hatch=hatch, label=key.replace("_", " "))
            )
        top = max(float(bottom.max()) if len(bottom) else 0.0, whiskers)
        for i in range(len(rows)):
            vals_i = [s[i] for s in series]
            if all(v is None for v in vals_i):
                text = "n/a"
            elif _UNITS[keys[0]] == "bool":
                text = " / ".join("yes" if v else "no" for v in vals_i)
            else:
                total = sum(v for v in vals_i if v is not None)
                text = f"{total / scale:.3g}" if is_time else f"{total:.0f}"
            ax.text(xs[i], bottom[i] + top * 0.02, text, ha="center", va="bottom", fontsize=8)
        ax.set_title(label if not unit else f"{label} ({unit})", fontsize=10)
        ax.set_xticks(xs, [_wrap(p) for p in policies], fontsize=7)
        # Room above the bars for the values and, with stacked series, the legend.
        ax.set_ylim(0, max(top * (1.18 if len(keys) == 1 else 1.2 + 0.13 * len(keys)), 1.0))
        if not is_time and _UNITS[keys[0]] != "bool":
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no 0.5 ticks
            ax.yaxis.set_major_formatter(EngFormatter(sep=""))  # 1.2M, not a 1e6 offset
        if len(keys) > 1:
            ax.legend(handles=legend, fontsize=7, frameon=False, loc="upper center")
    for ax in list(axes.flat)[len(_PANELS) :]:
        ax.set_axis_off()
    fig.suptitle(title or "Policy comparison")
    return _save(fig, path)


def _wrap(label: str, width: int = 14) -> str:
    """A policy name on short lines (split at spaces and dashes) so tick labels do not collide."""
    words = re.split(r"(?<=[-\s])", label)
    lines: list[str] = [""]
    for w in words:
        if lines[-1] and len(lines[-1]) + len(w) > width:
            lines.append("")
        lines[-1] += w
    return "\n".join(line.strip() for line in lines)


def _save(fig: Figure, path: str | Path) -> Path:
    out = Path(path)
    fig.savefig(out, format="png", metadata=_PNG_METADATA)
    return out
