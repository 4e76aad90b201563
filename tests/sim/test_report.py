"""The run report: schema-valid JSON with a stable order, Markdown tables, rich output, the output folder."""

from __future__ import annotations

import dataclasses
import io
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from sgxsim.errors import InvalidArgument
from sgxsim.kernel.policy import WHAT_IF_POLICY
from sgxsim.sim.report import REPORT_FORMAT, EnclaveRow, Report, Scalar, report_schema, write_outputs
from sgxsim.sim.runner import RUN_POLICIES, policy_label
from sgxsim.sim.timeline import COMPARISON_METRICS, TimelineData, Verdict
from sgxsim.sim.trace import TraceRecorder

S = 1_000_000_000


def _report(comparison: bool = True) -> Report:
    return Report(
        scenario="late-microcode-2s",
        seed=42,
        policy="rfc-v2-teardown",
        machine={"sockets": 2, "cpus": 16, "epc": "2 x 64 MiB", "sgx2": True},
        narrative=[
            "t=0.000 s: 4 enclaves built and attested (OutOfDate)",
            "t=3.000 s: late microcode load; EPC locked, 20000 pages zapped",
            "t=3.040 s: EUPDATESVN succeeded; CPUSVN 0e0e0203.. -> 0e0e0303..",
        ],
        summary=[("Enclaves", 4), ("Update outcome", "updated"), ("Update duration_ns", 40_000_000)],
        metrics={
            "time_to_attested_ns": 1_200_000_000,
            "enclaves_destroyed": 4,
            "epc_pages_zapped": 20_000,
            "eupdatesvn_retries": 0,
            "vepc_skipped": True,
            "ratio": 0.25,
            "unreached": None,
        },
        enclaves=[
            EnclaveRow("enclave-0", 1201, "restarted", 5000, 1, 300_000_000, "UpToDate"),
            EnclaveRow("a|b", 1202, "destroyed", 12, 0, 0, None),
        ],
        verdicts=[
            Verdict(1 * S, "enclave-0", "OutOfDate", False, "CPUSVN below the TCB level"),
            Verdict(4 * S, "enclave-0", "UpToDate", True),
        ],
        kernel_log=[
            "[    3.000000] microcode: updated early: 0xd0003a5 -> 0xd0003b9",
            "[    3.040000] sgx: SVN updated",
        ],
        kernel_warnings=1,
        warnings=[{"key": "event[0].at", "line": 3, "message": "ran 4.4s late"}],
        comparison=[
            {"policy": "rfc-v2-teardown", "enclaves_destroyed": 4, "time_to_attested_ns": 1_200_000_000},
            {"policy": "linux-6.19-on-open", "enclaves_destroyed": 0, "time_to_attested_ns": None, "x": 1},
        ]
        if comparison
        else [],
    )


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(report_schema())


def test_json_validates_against_schema() -> None:
    doc = json.loads(_report().to_json())
    jsonschema.Draft202012Validator(report_schema()).validate(doc)
    assert doc["format"] == REPORT_FORMAT


def test_schema_rejects_what_the_report_never_writes() -> None:
    validator = jsonschema.Draft202012Validator(report_schema())
    doc = json.loads(_report().to_json())
    for bad in (
        {**doc, "seed": -1},
        {**doc, "surprise": 1},
        {**doc, "format": "other/9"},
        {
            **doc,
            "verdicts": [{"t_ns": 0, "enclave": "e", "status": "UpToDate", "accepted": "yes", "detail": ""}],
        },
        {**doc, "comparison": [{"faults": 1}]},
        {**doc, "metrics": {"": 1}},
        {k: v for k, v in doc.items() if k != "metrics"},
    ):
        assert not validator.is_valid(bad)


def test_json_key_order_is_stable() -> None:
    text = _report().to_json()
    doc = json.loads(text)
    assert list(doc) == [
        "format",
        "scenario",
        "seed",
        "policy",
        "machine",
        "narrative",
        "summary",
        "metrics",
        "enclaves",
        "verdicts",
        "kernel_log",
        "kernel_warnings",
        "events",
        "updates",
        "warnings",
        "comparison",
    ]
    assert list(doc["metrics"]) == sorted(doc["metrics"])
    assert list(doc["machine"]) == sorted(doc["machine"])
    # Comparison rows: policy first, then the known metrics in their fixed order, then others.
    assert list(doc["comparison"][1]) == ["policy", "time_to_attested_ns", "enclaves_destroyed", "x"]
    assert text == _report().to_json()
    assert text.endswith("}\n")


def test_json_round_trips() -> None:
    report = _report()
    assert Report.from_json(report.to_json()) == report


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
_names = st.text(min_size=1, max_size=10)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**64),
    metrics=st.dictionaries(st.text(min_size=1, max_size=12), _scalars, max_size=6),
    summary=st.lists(st.tuples(_names, _scalars), max_size=4),
    verdicts=st.lists(
        st.builds(Verdict, st.integers(0, 10**12), _names, _names, st.booleans(), st.text(max_size=5)),
        max_size=4,
    ),
    enclaves=st.lists(
        st.builds(
            EnclaveRow,
            _names,
            st.integers(0, 2**22),
            _names,
            st.integers(0, 2**40),
            st.integers(0, 9),
            st.integers(0, 10**12),
            st.none() | _names,
        ),
        max_size=3,
    ),
    log=st.lists(st.text(max_size=20), max_size=4),
)
def test_any_report_validates_and_round_trips(
    seed: int,
    metrics: dict[str, Any],
    summary: list[tuple[str, Any]],
    verdicts: list[Verdict],
    enclaves: list[EnclaveRow],
    log: list[str],
) -> None:
    report = Report("s", seed, "p", metrics=metrics, summary=summary, verdicts=verdicts, enclaves=enclaves)
    report.kernel_log = log
    text = report.to_json()
    jsonschema.Draft202012Validator(report_schema()).validate(json.loads(text))
    assert Report.from_json(text) == report
    assert "| Item | Value |" in report.to_markdown()


def test_markdown_has_the_tables() -> None:
    md = _report().to_markdown()
    assert md.startswith("# sgxsim report: late-microcode-2s\n")
    assert "## Narrative\n\n1. t=0.000 s: 4 enclaves built and attested (OutOfDate)\n" in md
    assert "| Item | Value |\n|---|---|\n| Enclaves | 4 |\n| Update outcome | updated |" in md
    assert "| Update duration | 40.000 ms |" in md
    assert "| Time until new CPUSVN attested | 1.200 s |" in md
    assert "| vepc skipped | yes |" in md
    assert "| unreached | n/a |" in md
    assert "| a\\|b | 1202 | destroyed |" in md  # pipes in cells are escaped
    assert "| 1.000 s | enclave-0 | OutOfDate | no | CPUSVN below the TCB level |" in md
    assert "## Policy comparison" in md
    assert "| Policy | Time until new CPUSVN attested | Enclaves destroyed | x |" in md
    assert "| linux-6.19-on-open | n/a | 0 | 1 |" in md
    assert "[    3.040000] sgx: SVN updated" in md
    assert "kernel WARNs: 1" in md


def test_markdown_without_comparison() -> None:
    md = _report(comparison=False).to_markdown()
    assert "## Policy comparison" not in md
    assert "| Item | Value |" in md


def test_markdown_quotes_only_the_log_tail() -> None:
    report = _report()
    report.kernel_log = [f"line {i}" for i in range(100)]
    md = report.to_markdown()
    assert "Last 40 of 100 lines" in md
    assert "line 99" in md
    assert "line 59\n" not in md


def test_rich_rendering() -> None:
    buf = io.StringIO()
    console = Console(file=buf, width=140, color_system=None)
    _report().render_rich(console)
    out = buf.getvalue()
    assert "Summary" in out and "Metrics" in out and "Policy comparison" in out
    assert "late-microcode-2s" in out
    assert "1.200 s" in out
    assert "linux-6.19-" in out and "on-open" in out  # one policy column, its name wrapped at a dash


def _worst_rows(spread: bool) -> list[dict[str, Scalar]]:
    """A comparison row per policy the runner knows, with the widest values a metric gets."""
    rows: list[dict[str, Scalar]] = []
    for i, policy in enumerate(RUN_POLICIES):
        row: dict[str, Scalar] = {"policy": policy_label(policy)}
        for key, _, unit in COMPARISON_METRICS:
            value: Scalar = {"ns": 412_345_678 + i, "bool": i % 2 == 0}.get(unit, 1_234_567 + i)
            row[key] = value if i != 2 else None
            if spread:
                row[f"{key}_p5"], row[f"{key}_p95"] = value, value
        row["verdicts_accepted"], row["verdicts_refused"] = 12_345, 41
        if spread:
            row["seeds"] = 20
        rows.append(row)
    return rows


@pytest.mark.parametrize("spread", [False, True])
def test_comparison_table_reads_at_100_columns(spread: bool) -> None:
    """sgxsim compare's table at 100 columns with every policy (compare --seeds too): no line
    longer, nothing cut or folded, each policy's name whole (wrapped after dashes), the
    what-if's note under the table, every metric's label."""
    rows = _worst_rows(spread)
    buf = io.StringIO()
    console = Console(file=buf, width=100, color_system=None)
    if spread:
        from sgxsim.cli.run import _print_spread

        _print_spread(console, rows)
    else:
        report = _report()
        report.comparison = rows
        report.render_rich(console)
    out = buf.getvalue()
    table = out[out.index("seeds: median" if spread else "Policy comparison") :]
    assert max(len(line.rstrip()) for line in out.splitlines()) <= 100
    assert "…" not in out and "..." not in table.replace(" .. ", "")
    header = "\n".join(table.splitlines()[:6])
    for policy in RUN_POLICIES:
        for part in re.split(r"(?<=[-_])", policy):
            assert part in header, (policy, part)
    assert f"*{WHAT_IF_POLICY}: what-if, impossible in Linux" in out
    words = set(table.split())
    for _, label, _ in COMPARISON_METRICS:
        assert set(label.split()) <= words, label
    assert "n/a" in table and "412.346 ms" in table


def test_rich_does_not_interpret_markup_in_data() -> None:
    report = _report(comparison=False)
    report.summary = [("[bold]item[/bold]", "[red]x")]
    buf = io.StringIO()
    report.render_rich(Console(file=buf, width=100, color_system=None))
    assert "[bold]item[/bold]" in buf.getvalue()


@pytest.mark.no_cover  # covers no arc the other report/timeline/trace tests miss (coverage contexts)
def test_write_outputs(tmp_path: Path) -> None:
    trace = TraceRecorder(metadata={"scenario": "late-microcode-2s"})
    trace.slice(trace.cpu(0), "EUPDATESVN", 3 * S, 40_000, "encls")
    trace.slice(trace.ksgxd(), "sgx_reclaim_pages", S, 900, "reclaim", {"pages": 16})
    timeline = TimelineData(end_ns=6 * S)
    for i in range(50):
        timeline.add_epc("enclave-0", i * S // 10, (i % 30) * 100)
    timeline.add_update_window(3 * S, 3 * S + 40_000, "updated")
    timeline.add_verdict(4 * S, "enclave-0", "UpToDate", True)
    report = _report()
    paths = write_outputs(tmp_path / "out", report, trace, timeline)
    assert sorted(paths) == [
        "comparison.png",
        "kernel.log",
        "report.json",
        "report.md",
        "timeline.png",
        "trace.json",
    ]
    assert all(p.parent == tmp_path / "out" and p.exists() for p in paths.values())
    jsonschema.validate(json.loads(paths["report.json"].read_text()), report_schema())
    assert paths["report.md"].read_text() == report.to_markdown()
    assert paths["timeline.png"].read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert paths["comparison.png"].read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    events = json.loads(paths["trace.json"].read_text())["traceEvents"]
    names = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert names == {"CPU 0", "ksgxd"}
    assert paths["kernel.log"].read_text().splitlines() == report.kernel_log
    # Without comparison rows there is no comparison figure.
    again = write_outputs(tmp_path / "out2", _report(comparison=False), trace, timeline)
    assert "comparison.png" not in again


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"seed": -1}, "seed"),
        ({"seed": True}, "seed"),
        ({"scenario": ""}, "scenario"),
        ({"metrics": {"x": float("nan")}}, "finite"),
        ({"metrics": {"x": [1]}}, "metrics"),
        ({"summary": [("only-one",)]}, "summary"),
        ({"enclaves": ["enclave-0"]}, "EnclaveRow"),
        ({"verdicts": [("t", "e")]}, "Verdict"),
        ({"kernel_warnings": -2}, "kernel_warnings"),
        ({"warnings": [{"key": "k"}]}, "warnings"),
        ({"comparison": [{"faults": 1}]}, "policy"),
        ({"narrative": "one string"}, "narrative"),
    ],
)
def test_bad_report_fields_raise(kwargs: dict[str, Any], match: str) -> None:
    base: dict[str, Any] = {"scenario": "s", "seed": 1, "policy": "p"}
    with pytest.raises(InvalidArgument, match=match):
        Report(**{**base, **kwargs})


def test_mutated_report_is_revalidated_on_output() -> None:
    report = _report()
    report.metrics["bad"] = float("inf")
    with pytest.raises(InvalidArgument, match="finite"):
        report.to_json()


@pytest.mark.parametrize(
    "text",
    ["not json", "[]", json.dumps({"format": "x"}), json.dumps({"format": REPORT_FORMAT, "scenario": "s"})],
)
def test_from_json_rejects_malformed(text: str) -> None:
    with pytest.raises(InvalidArgument):
        Report.from_json(text)


def test_enclave_row_validation() -> None:
    with pytest.raises(InvalidArgument, match="restarts"):
        EnclaveRow("e", 1, "running", restarts=-1)
    with pytest.raises(InvalidArgument, match="last_verdict"):
        EnclaveRow("e", 1, "running", last_verdict="")


def test_write_outputs_checks_types(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="Report"):
        write_outputs(tmp_path, {}, TraceRecorder(), TimelineData())  # type: ignore[arg-type]


def test_markdown_comparison_over_seeds_shows_median_and_spread_per_cell() -> None:
    """``compare --seeds`` rows: report.md gives each metric once, as median (p5 .. p95), and says
    how many seeds; no raw ``*_p5`` / ``*_p95`` columns."""
    report = dataclasses.replace(
        _report(comparison=False),
        comparison=[
            {
                "policy": policy,
                "seeds": 20,
                "enclaves_destroyed": mid,
                "enclaves_destroyed_p5": mid - 1,
                "enclaves_destroyed_p95": mid + 2,
                "time_to_attested_ns": 2 * S,
                "time_to_attested_ns_p5": S,
                "time_to_attested_ns_p95": 3 * S,
            }
            for policy, mid in (("rfc-v2-teardown", 12), ("explicit-trigger", 3))
        ],
    )
    md = report.to_markdown()
    table = md.split("## Policy comparison", 1)[1].split("## Kernel log", 1)[0]
    assert "Over 20 seeds per policy: each cell is the median (p5 .. p95)." in table
    assert "_p5" not in table and "_p95" not in table and "| seeds" not in table.lower()
    assert "| rfc-v2-teardown | " in table
    row = next(line for line in table.splitlines() if line.startswith("| rfc-v2-teardown"))
    assert "12 (11 .. 14)" in row
    assert "2.000 s (1.000 s .. 3.000 s)" in row, row
