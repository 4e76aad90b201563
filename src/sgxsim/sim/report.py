"""The report of a scenario run: JSON (with its schema), Markdown, a rich table, and the output folder.

A :class:`Report` is plain data the driver fills at the end of a run: the scenario, seed and
kernel policy, a machine summary, narrative lines ("t=3.000 s: late microcode load on CPU 0"),
a summary table, metrics, one row per enclave, the attestation verdicts, the kernel log and
its WARN count, and, when several policies were run, one comparison row per policy.

* :meth:`Report.to_json` gives a stable key order and validates against :func:`report_schema`
  (JSON Schema draft 2020-12); :meth:`Report.from_dict` reads it back.
* :meth:`Report.to_markdown` is ``report.md``; :meth:`Report.render_rich` prints the summary to
  a :class:`rich.console.Console` the caller owns.
* :func:`write_outputs` writes ``report.json``, ``report.md``, ``timeline.png``, ``trace.json``,
  ``kernel.log`` and, with comparison rows, ``comparison.png``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from sgxsim.errors import InvalidArgument
from sgxsim.sim.timeline import (
    COMPARISON_METRICS,
    TimelineData,
    Verdict,
    format_ns,
    plot_comparison,
    plot_timeline,
)
from sgxsim.sim.trace import TraceRecorder

__all__ = [
    "ECALL_PHASES",
    "REPORT_FORMAT",
    "EnclaveRow",
    "Report",
    "Scalar",
    "comparison_table",
    "policy_notes",
    "report_schema",
    "write_outputs",
]

#: The phases of an enclave's ECALL latency (``EnclaveRow.ecall_latency_ns`` keys): before,
#: during and after the run's first SVN update window.
ECALL_PHASES = ("before", "during", "after")

#: The ``format`` field of every report; bump when the schema changes incompatibly.
REPORT_FORMAT = "sgxsim-report/2"
#: The fields every event object has.
_EVENT_KEYS = ("t_start_ns", "t_end_ns", "kind", "subject", "outcome", "detail")

Scalar = str | int | float | bool | None

#: Kernel log lines quoted in report.md (the whole log is in kernel.log).
_MD_LOG_TAIL = 40
_METRIC_LABELS = {key: label for key, label, _ in COMPARISON_METRICS}


def _scalar(value: object, what: str) -> Scalar:
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidArgument(f"{what} must be finite, got {value!r}")
        return value
    raise InvalidArgument(f"{what} must be a str/int/float/bool/None, got {value!r}")


def _str(value: object, what: str, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not empty and not value):
        raise InvalidArgument(f"{what} must be a {'' if empty else 'non-empty '}str, got {value!r}")
    return value


def _nat(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"{what} must be an int >= 0, got {value!r}")
    return value


def _scalar_map(value: object, what: str) -> dict[str, Scalar]:
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"{what} must be a mapping, got {value!r}")
    out: dict[str, Scalar] = {}
    for key in sorted(value, key=str):
        out[_str(key, f"{what} key")] = _scalar(value[key], f"{what}[{key!r}]")
    return out


def _list(value: object, what: str) -> list[Any]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise InvalidArgument(f"{what} must be a list, got {value!r}")
    return list(value)


@dataclass(frozen=True)
class EnclaveRow:
    """One enclave of the run: final state, EPC peak, restarts, downtime, last verdict."""

    name: str
    pid: int
    state: str
    epc_pages_peak: int = 0
    restarts: int = 0
    downtime_ns: int = 0
    last_verdict: str | None = None
    #: Last successful ECALL before each loss to the first after, summed.
    unavailable_ns: int = 0
    #: ECALL latency of the ECALL threads before/during/after the first SVN update:
    #: ``{"before": {"n", "p50", "p99", "max"}, ...}``.
    ecall_latency_ns: dict[str, dict[str, Scalar]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _str(self.name, "enclave name")
        _nat(self.unavailable_ns, "unavailable_ns")
        for phase, stats in self.ecall_latency_ns.items():
            _scalar_map(stats, f"ecall_latency_ns[{phase!r}]")
        _nat(self.pid, "pid")
        _str(self.state, "state")
        _nat(self.epc_pages_peak, "epc_pages_peak")
        _nat(self.restarts, "restarts")
        _nat(self.downtime_ns, "downtime_ns")
        if self.last_verdict is not None:
            _str(self.last_verdict, "last_verdict")

    def to_dict(self) -> dict[str, Any]:
        """The row as JSON data (the schema's ``enclaves`` item)."""
        return {
            "name": self.name,
            "pid": self.pid,
            "state": self.state,
            "epc_pages_peak": self.epc_pages_peak,
            "restarts": self.restarts,
            "downtime_ns": self.downtime_ns,
            "last_verdict": self.last_verdict,
            "unavailable_ns": self.unavailable_ns,
            "ecall_latency_ns": {k: dict(v) for k, v in self.ecall_latency_ns.items()},
        }


def _event_dict(ev: dict[str, Any]) -> dict[str, Any]:
    out = {key: ev[key] for key in _EVENT_KEYS}
    if ev.get("extra"):
        out["extra"] = dict(ev["extra"])
    return out


def _warning_dict(w: dict[str, Scalar]) -> dict[str, Scalar]:
    return {"key": w.get("key"), "line": w.get("line"), "message": w.get("message")}


def _verdict_dict(v: Verdict) -> dict[str, Any]:
    return {
        "t_ns": v.t_ns,
        "enclave": v.enclave,
        "status": v.status,
        "accepted": v.accepted,
        "detail": v.detail,
    }


@dataclass
class Report:
    """The outcome of one scenario run (see the module docstring for each part).

    ``summary`` rows are ``(item, value)``; ``comparison`` rows are ``{"policy": ...,
    <metric>: value}`` with the keys of :data:`~sgxsim.sim.timeline.COMPARISON_METRICS`
    (others allowed). Metric keys ending in ``_ns`` are simulated nanoseconds.
    """

    scenario: str
    seed: int
    policy: str
    machine: dict[str, Scalar] = field(default_factory=dict)
    narrative: list[str] = field(default_factory=list)
    summary: list[tuple[str, Scalar]] = field(default_factory=list)
    metrics: dict[str, Scalar] = field(default_factory=dict)
    enclaves: list[EnclaveRow] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    kernel_log: list[str] = field(default_factory=list)
    #: Kernel WARNs logged during the run.
    kernel_warnings: int = 0
    comparison: list[dict[str, Scalar]] = field(default_factory=list)
    #: Structured events (``t_start_ns``, ``t_end_ns``, ``kind``, ``subject``, ``outcome``,
    #: ``detail``; optional ``extra`` scalars), in start order.
    events: list[dict[str, Any]] = field(default_factory=list)
    #: One row per SVN update attempt, with its window metrics.
    updates: list[dict[str, Scalar]] = field(default_factory=list)
    #: What the run had to change from what the scenario says: ``{"key", "line", "message"}``.
    warnings: list[dict[str, Scalar]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field's type (the lists may have changed since construction)."""
        _str(self.scenario, "scenario")
        _nat(self.seed, "seed")
        _str(self.policy, "policy")
        _scalar_map(self.machine, "machine")
        for i, line in enumerate(_list(self.narrative, "narrative")):
            _str(line, f"narrative[{i}]", empty=True)
        for i, row in enumerate(_list(self.summary, "summary")):
            if not isinstance(row, tuple) or len(row) != 2:
                raise InvalidArgument(f"summary[{i}] must be an (item, value) tuple, got {row!r}")
            _str(row[0], f"summary[{i}] item")
            _scalar(row[1], f"summary[{i}] value")
        _scalar_map(self.metrics, "metrics")
        for i, enclave in enumerate(_list(self.enclaves, "enclaves")):
            if not isinstance(enclave, EnclaveRow):
                raise InvalidArgument(f"enclaves[{i}] must be an EnclaveRow, got {enclave!r}")
        for i, verdict in enumerate(_list(self.verdicts, "verdicts")):
            if not isinstance(verdict, Verdict):
                raise InvalidArgument(f"verdicts[{i}] must be a Verdict, got {verdict!r}")
        for i, line in enumerate(_list(self.kernel_log, "kernel_log")):
            _str(line, f"kernel_log[{i}]", empty=True)
        _nat(self.kernel_warnings, "kernel_warnings")
        for i, ev in enumerate(_list(self.events, "events")):
            if not isinstance(ev, dict):
                raise InvalidArgument(f"events[{i}] must be a mapping, got {ev!r}")
            for key in _EVENT_KEYS:
                if key not in ev:
                    raise InvalidArgument(f"events[{i}] lacks {key!r}")
            if ev["t_end_ns"] < ev["t_start_ns"]:
                raise InvalidArgument(f"events[{i}] ends before it starts")
        for i, urow in enumerate(_list(self.updates, "updates")):
            _scalar_map(urow, f"updates[{i}]")
        for i, wrow in enumerate(_list(self.warnings, "warnings")):
            _scalar_map(wrow, f"warnings[{i}]")
            _str(wrow.get("message"), f"warnings[{i}]['message']")
        for i, crow in enumerate(_list(self.comparison, "comparison")):
            _scalar_map(crow, f"comparison[{i}]")
            _str(crow.get("policy"), f"comparison[{i}]['policy']")

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON data in its stable key order (the schema's order)."""
        self.validate()
        return {
            "format": REPORT_FORMAT,
            "scenario": self.scenario,
            "seed": self.seed,
            "policy": self.policy,
            "machine": _scalar_map(self.machine, "machine"),
            "narrative": list(self.narrative),
            "summary": [{"item": item, "value": value} for item, value in self.summary],
            "metrics": _scalar_map(self.metrics, "metrics"),
            "enclaves": [e.to_dict() for e in self.enclaves],
            "verdicts": [_verdict_dict(v) for v in self.verdicts],
            "kernel_log": list(self.kernel_log),
            "kernel_warnings": self.kernel_warnings,
            "events": [_event_dict(ev) for ev in self.events],
            "updates": [dict(row) for row in self.updates],
            "warnings": [_warning_dict(w) for w in self.warnings],
            "comparison": [_comparison_row(row) for row in self.comparison],
        }

    def to_json(self) -> str:
        """``report.json``: :meth:`to_dict` indented, one trailing newline, deterministic."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Report:
        """Read back :meth:`to_dict` output; a malformed document raises :class:`InvalidArgument`."""
        if not isinstance(data, Mapping):
            raise InvalidArgument(f"a report must be a mapping, got {type(data).__name__}")
        if data.get("format") != REPORT_FORMAT:
            raise InvalidArgument(f"report format must be {REPORT_FORMAT!r}, got {data.get('format')!r}")
        try:
            return cls(
                scenario=data["scenario"],
                seed=data["seed"],
                policy=data["policy"],
                machine=dict(data["machine"]),
                narrative=list(data["narrative"]),
                summary=[(row["item"], row["value"]) for row in data["summary"]],
                metrics=dict(data["metrics"]),
                enclaves=[EnclaveRow(**row) for row in data["enclaves"]],
                events=[dict(ev) for ev in data["events"]],
                updates=[dict(row) for row in data["updates"]],
                kernel_warnings=data["kernel_warnings"],
                verdicts=[Verdict(**row) for row in data["verdicts"]],
                kernel_log=list(data["kernel_log"]),
                warnings=[dict(w) for w in data["warnings"]],
                comparison=[dict(row) for row in data["comparison"]],
            )
        except InvalidArgument:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgument(f"malformed report: {exc!r}") from exc

    @classmethod
    def from_json(cls, text: str) -> Report:
        """Parse ``report.json`` text (see :meth:`from_dict`)."""
        try:
            data = json.loads(text)
        except (TypeError, json.JSONDecodeError) as exc:
            raise InvalidArgument(f"report.json is not JSON: {exc}") from exc
        return cls.from_dict(data)

    # ------------------------------------------------------------------ Markdown

    def to_markdown(self) -> str:
        """``report.md``: header, narrative, summary, metrics, enclaves, verdicts, comparison, log tail."""
        self.validate()
        out: list[str] = [f"# sgxsim report: {_md_inline(self.scenario)}", ""]
        out.append(f"- seed: `{self.seed}`")
        out.append(f"- policy: `{_md_inline(self.policy)}`")
        for key, value in _scalar_map(self.machine, "machine").items():
            out.append(f"- {_md_inline(_label(key))}: {_md_inline(_fmt(key, value))}")
        out.append(f"- kernel WARNs: {self.kernel_warnings}")
        for w in self.warnings:
            where = f"{w.get('key')}" + (f" (line {w.get('line')})" if w.get("line") is not None else "")
            out.append(f"- warning: {_md_inline(where)}: {_md_inline(str(w.get('message')))}")
        out.append("")
        if self.narrative:
            out += ["## Narrative", ""]
            out += [f"{i}. {_md_inline(line)}" for i, line in enumerate(self.narrative, start=1)]
            out.append("")
        out += ["## Summary", ""]
        out += _md_table(
            ("Item", "Value"), [(_label(item), _fmt(item, value)) for item, value in self.summary]
        )
        out += ["", "## Metrics", ""]
        metrics = _scalar_map(self.metrics, "metrics")
        out += _md_table(
            ("Metric", "Value"), [(_METRIC_LABELS.get(k, _label(k)), _fmt(k, v)) for k, v in metrics.items()]
        )
        recoveries = [ev for ev in self.events if ev["kind"] == "tcb_recovery"]
        if recoveries:
            out += ["", "## TCB recoveries", ""]
            out.append(
                "What `sgxsim tcb-impact` tells this host's operator when Intel publishes each "
                "recovery: the platforms whose PCK TCB it demotes, when the relying party starts "
                "refusing them (publication plus its grace period) and the late-microcode SVN that "
                "makes them UpToDate again."
            )
            out.append("")
            out += _md_table(
                ("t", "Platforms demoted", "New status", "Refused from", "Grace period", "Needs SVN"),
                [_recovery_cells(ev) for ev in recoveries],
            )
        if self.enclaves:
            out += ["", "## Enclaves", ""]
            out += _md_table(
                (
                    "Enclave",
                    "PID",
                    "State",
                    "EPC pages (peak)",
                    "Restarts",
                    "Downtime",
                    "Unavailable",
                    "Last verdict",
                ),
                [
                    (
                        e.name,
                        str(e.pid),
                        e.state,
                        str(e.epc_pages_peak),
                        str(e.restarts),
                        format_ns(e.downtime_ns),
                        format_ns(e.unavailable_ns),
                        e.last_verdict or "n/a",
                    )
                    for e in self.enclaves
                ],
            )
            timed = [e for e in self.enclaves if any(st.get("n") for st in e.ecall_latency_ns.values())]
            if timed:
                out += ["", "## ECALL latency", ""]
                out.append(
                    "ECALL threads' latency (p50 / p99 / max, with the number of ECALLs) before, "
                    "during and after the first SVN update; an ECALL overlapping its locked "
                    "window counts as during. Unavailable (above): from the last successful "
                    "ECALL before each loss to the first after it."
                )
                out.append("")
                out += _md_table(
                    ("Enclave", *(phase.capitalize() for phase in ECALL_PHASES)),
                    [
                        (e.name, *(_latency_cell(e.ecall_latency_ns.get(ph, {})) for ph in ECALL_PHASES))
                        for e in timed
                    ],
                )
        if self.verdicts:
            out += ["", "## Attestation verdicts", ""]
            out += _md_table(
                ("t", "Enclave", "TCB status", "Accepted", "Detail"),
                [
                    (format_ns(v.t_ns), v.enclave, v.status, "yes" if v.accepted else "no", v.detail)
                    for v in self.verdicts
                ],
            )
        if self.comparison:
            out += ["", "## Policy comparison", ""]
            seeds = {row.get("seeds") for row in self.comparison}
            if seeds - {None}:
                n = ", ".join(str(v) for v in sorted(x for x in seeds if isinstance(x, int)))
                out += [f"Over {n} seeds per policy: each cell is the median (p5 .. p95).", ""]
            keys = _metric_keys(self.comparison)
            out += _md_table(
                ("Policy", *(_METRIC_LABELS.get(k, _label(k)) for k in keys)),
                [
                    (str(row["policy"]), *(_spread_cell(k, row, " ") for k in keys))
                    for row in (_comparison_row(r) for r in self.comparison)
                ],
            )
        out += ["", "## Kernel log", ""]
        tail = self.kernel_log[-_MD_LOG_TAIL:]
        if len(tail) < len(self.kernel_log):
            out.append(f"Last {len(tail)} of {len(self.kernel_log)} lines (all in `kernel.log`):")
        else:
            out.append(f"{len(tail)} lines (also in `kernel.log`):")
        out += ["", "```text", *(line.replace("```", "'''") for line in tail), "```", ""]
        return "\n".join(out)

    # ------------------------------------------------------------------ rich

    def render_rich(self, console: Console) -> None:
        """Print the summary, metrics and (when present) the policy comparison to ``console``."""
        if not isinstance(console, Console):
            raise InvalidArgument(f"console must be a rich Console, got {type(console).__name__}")
        self.validate()
        console.print(
            Text.assemble(
                ("sgxsim ", "bold"),
                (self.scenario, "bold cyan"),
                f"  policy {self.policy}  seed {self.seed}  kernel WARNs {self.kernel_warnings}",
            )
        )
        for w in self.warnings:
            where = f"{w.get('key')}" + (f" (line {w.get('line')})" if w.get("line") is not None else "")
            console.print(Text.assemble(("warning: ", "bold yellow"), f"{where}: {w.get('message')}"))
        summary = Table(title="Summary", show_header=True, header_style="bold")
        summary.add_column("Item")
        summary.add_column("Value", justify="right")
        for item, value in self.summary:
            summary.add_row(Text(_label(item)), Text(_fmt(item, value)))
        console.print(summary)
        metrics = Table(title="Metrics", show_header=True, header_style="bold")
        metrics.add_column("Metric")
        metrics.add_column("Value", justify="right")
        for key, value in _scalar_map(self.metrics, "metrics").items():
            metrics.add_row(Text(_METRIC_LABELS.get(key, _label(key))), Text(_fmt(key, value)))
        console.print(metrics)
        if self.comparison:
            console.print(comparison_table(self.comparison, current=self.policy))
            for note in policy_notes(self.comparison):
                console.print(Text(note))


def _latency_cell(stats: Mapping[str, Scalar]) -> str:
    """``p50 / p99 / max (n)`` of one phase's ECALL latencies; ``-`` without ECALLs."""
    n = stats.get("n")
    if not n:
        return "-"
    return " / ".join(_fmt("_ns", stats.get(k)) for k in ("p50", "p99", "max")) + f" ({n})"


def _recovery_cells(ev: Mapping[str, Any]) -> tuple[str, ...]:
    """A tcb_recovery event's impact (its ``extra``) as report.md cells."""
    x = ev.get("extra") or {}
    demoted, total = x.get("platforms_demoted"), x.get("platforms")
    return (
        format_ns(ev["t_start_ns"]),
        "n/a" if demoted is None else f"{demoted} of {total}",
        _fmt("", x.get("demoted_status")) if demoted else "-",
        _fmt("refused_from_ns", x.get("refused_from_ns")),
        _fmt("grace_period_ns", x.get("grace_period_ns")),
        _fmt("", x.get("required_late_microcode_svn")),
    )


#: A policy label's note (after the first `` (``) goes under the table, not into its header.
_NOTE = " ("


def comparison_table(
    rows: Sequence[Mapping[str, Scalar]], *, title: str = "Policy comparison", current: str | None = None
) -> Table:
    """The policy comparison for a terminal: one line per metric, one column per policy, so it
    reads at 100 columns with five policies. Policy names are wrapped after their dashes and
    underscores (never cut); a label's note in parentheses is left to :func:`policy_notes`. With ``compare
    --seeds`` rows (``<key>_p5`` / ``<key>_p95`` present) a cell is the median over p5 .. p95.
    The column of ``current`` (the report's own run) is bold."""
    table = Table(
        title=title, title_justify="left", show_header=True, header_style="bold", box=box.SIMPLE_HEAD
    )
    keys = _metric_keys(rows)
    labels = [_METRIC_LABELS.get(k, _label(k)) for k in keys]
    longest_word = max((len(w) for label in labels for w in label.split()), default=6)
    table.add_column("Metric", overflow="fold", min_width=longest_word, max_width=max(26, longest_word))
    for row in rows:
        name = str(row["policy"]).split(_NOTE, 1)[0]
        header = _wrap_name(name) + ("*" if _NOTE in str(row["policy"]) else "")
        table.add_column(
            header,
            justify="right",
            min_width=max(len(line) for line in header.splitlines()),
            style="bold" if row.get("policy") == current else None,
            overflow="fold",
        )
    for key, label in zip(keys, labels, strict=True):
        cells = []
        for row in rows:
            cells.append(Text(_spread_cell(key, row, "\n")))
        table.add_row(Text(label if key in _METRIC_LABELS else label[:1].upper() + label[1:]), *cells)
    return table


def _spread_cell(key: str, row: Mapping[str, Scalar], sep: str) -> str:
    """``key``'s value in ``row``; for ``compare --seeds`` rows, the median then ``(p5 .. p95)``."""
    cell = _fmt(key, row.get(key))
    if f"{key}_p5" in row or f"{key}_p95" in row:
        cell += f"{sep}({_fmt(key, row.get(f'{key}_p5'))} ..{sep}{_fmt(key, row.get(f'{key}_p95'))})"
    return cell


def policy_notes(rows: Sequence[Mapping[str, Scalar]]) -> list[str]:
    """``*name: note`` for each policy label with a note (the what-if's)."""
    out = []
    for row in rows:
        name, sep, note = str(row["policy"]).partition(_NOTE)
        if sep:
            out.append(f"*{name}: {note.removesuffix(')')}")
    return out


def _wrap_name(name: str, width: int = 11) -> str:
    """``name`` on lines of at most ``width`` characters where it has dashes or underscores
    (``linux-6.19-`` / ``on-open``); a part without either stays whole."""
    lines = [""]
    for part in re.split(r"(?<=[-_])", name):
        if lines[-1] and len(lines[-1]) + len(part) > width:
            lines.append("")
        lines[-1] += part
    return "\n".join(lines)


def _comparison_row(row: Mapping[str, Scalar]) -> dict[str, Scalar]:
    """A comparison row with ``policy`` first, then the known metrics, then the rest by name."""
    data = _scalar_map(row, "comparison row")
    out: dict[str, Scalar] = {"policy": data.pop("policy")}
    for key, _, _ in COMPARISON_METRICS:
        if key in data:
            out[key] = data.pop(key)
    out.update(data)
    return out


def _comparison_keys(rows: Sequence[Mapping[str, Scalar]]) -> list[str]:
    present = {k for row in rows for k in row if k != "policy"}
    known = [k for k, _, _ in COMPARISON_METRICS if k in present]
    return known + sorted(present - set(known))


def _metric_keys(rows: Sequence[Mapping[str, Scalar]]) -> list[str]:
    """The metrics of comparison rows, one per column or line (``seeds`` and the spread's
    ``*_p5`` / ``*_p95`` go into the cells, see :func:`_spread_cell`)."""
    return [k for k in _comparison_keys(rows) if k != "seeds" and not k.endswith(("_p5", "_p95"))]


def _label(key: str) -> str:
    """A summary key for people: ``*_ns`` keys are shown as durations, so the suffix goes; the
    remaining underscores become spaces (JSON keeps the keys as they are)."""
    if key.endswith("_ns"):
        key = key[:-3]
    return key.replace("_", " ")


def _fmt(key: str, value: Scalar) -> str:
    """A value for people: durations for ``*_ns`` numbers, yes/no, n/a for None."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float) and key.endswith("_ns"):
        return format_ns(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _md_inline(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")


def _md_cell(text: str) -> str:
    return _md_inline(text).replace("\\", "\\\\").replace("|", "\\|")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return lines


def report_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) that every :meth:`Report.to_json` document satisfies."""
    scalar: dict[str, Any] = {"type": ["string", "number", "boolean", "null"]}
    nat: dict[str, Any] = {"type": "integer", "minimum": 0}
    name: dict[str, Any] = {"type": "string", "minLength": 1}
    scalar_map: dict[str, Any] = {
        "type": "object",
        "propertyNames": {"minLength": 1},
        "additionalProperties": scalar,
    }
    strings: dict[str, Any] = {"type": "array", "items": {"type": "string"}}

    def obj(props: dict[str, Any], required: Sequence[str] | None = None) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": props,
            "required": list(props if required is None else required),
            "additionalProperties": False,
        }

    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:sgxsim:report:2",
        "title": "sgxsim scenario report",
        **obj(
            {
                "format": {"const": REPORT_FORMAT},
                "scenario": name,
                "seed": nat,
                "policy": name,
                "machine": scalar_map,
                "narrative": strings,
                "summary": {"type": "array", "items": obj({"item": name, "value": scalar})},
                "metrics": scalar_map,
                "enclaves": {
                    "type": "array",
                    "items": obj(
                        {
                            "name": name,
                            "pid": nat,
                            "state": name,
                            "epc_pages_peak": nat,
                            "restarts": nat,
                            "downtime_ns": nat,
                            "last_verdict": {"type": ["string", "null"], "minLength": 1},
                            "unavailable_ns": nat,
                            "ecall_latency_ns": {"type": "object", "additionalProperties": scalar_map},
                        }
                    ),
                },
                "verdicts": {
                    "type": "array",
                    "items": obj(
                        {
                            "t_ns": nat,
                            "enclave": name,
                            "status": name,
                            "accepted": {"type": "boolean"},
                            "detail": {"type": "string"},
                        }
                    ),
                },
                "kernel_log": strings,
                "kernel_warnings": nat,
                "events": {
                    "type": "array",
                    "items": obj(
                        {
                            "t_start_ns": nat,
                            "t_end_ns": nat,
                            "kind": name,
                            "subject": {"type": "string"},
                            "outcome": {"type": "string"},
                            "detail": {"type": "string"},
                            "extra": scalar_map,
                        },
                        required=list(_EVENT_KEYS),
                    ),
                },
                "updates": {"type": "array", "items": scalar_map},
                "warnings": {
                    "type": "array",
                    "items": obj(
                        {
                            "key": {"type": ["string", "null"]},
                            "line": {"type": ["integer", "null"]},
                            "message": {"type": "string"},
                        }
                    ),
                },
                "comparison": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"policy": name},
                        "required": ["policy"],
                        "additionalProperties": scalar,
                    },
                },
            }
        ),
    }


def write_outputs(
    out_dir: str | Path, report: Report, trace: TraceRecorder, timeline: TimelineData
) -> dict[str, Path]:
    """Write a run's output folder and return ``{file name: path}``.

    Files: ``report.json``, ``report.md``, ``timeline.png``, ``trace.json``, ``kernel.log``
    and, when the report has comparison rows, ``comparison.png``. The folder is created if
    needed; existing files of these names are replaced.
    """
    if not isinstance(report, Report):
        raise InvalidArgument(f"report must be a Report, got {type(report).__name__}")
    if not isinstance(trace, TraceRecorder):
        raise InvalidArgument(f"trace must be a TraceRecorder, got {type(trace).__name__}")
    if not isinstance(timeline, TimelineData):
        raise InvalidArgument(f"timeline must be a TimelineData, got {type(timeline).__name__}")
    if not isinstance(out_dir, str | Path):
        raise InvalidArgument(f"out_dir must be a path, got {out_dir!r}")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    paths = {
        "report.json": root / "report.json",
        "report.md": root / "report.md",
        "timeline.png": root / "timeline.png",
        "trace.json": root / "trace.json",
        "kernel.log": root / "kernel.log",
    }
    paths["report.json"].write_text(report.to_json(), encoding="utf-8")
    paths["report.md"].write_text(report.to_markdown(), encoding="utf-8")
    title = f"{report.scenario} - {report.policy}, seed {report.seed}"
    plot_timeline(timeline, paths["timeline.png"], title)
    trace.write(paths["trace.json"])
    log = "\n".join(report.kernel_log)
    paths["kernel.log"].write_text(log + "\n" if log else "", encoding="utf-8")
    if report.comparison:
        paths["comparison.png"] = root / "comparison.png"
        plot_comparison(report.comparison, paths["comparison.png"], f"{report.scenario}: policy comparison")
    return paths
