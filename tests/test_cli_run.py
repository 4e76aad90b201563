"""``sgxsim demo``, ``run``, ``compare``, ``inspect``: outputs, JSON schemas, exit codes, completion."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from sgxsim.cli import main
from sgxsim.sim.inspect import inspect_schema
from sgxsim.sim.report import report_schema

SMALL = """\
[scenario]
name = "small"
seed = 5
duration = "2s"

[machine]
sockets = 1
cpus_per_socket = 2

[[machine.epc_sections]]
size = "32MiB"

[[machine.microcode.patches]]
name = "up"
revision = 0xd0003d1
late_microcode_svn = 3

[[workload]]
name = "app"
heap = "256KiB"
attest_every = "400ms"

[[event]]
at = "500ms"
kind = "tcb_recovery"
new_late_microcode_svn = 3

[[event]]
at = "1s"
kind = "microcode_load"
patch = "up"
"""

#: The demo's summary with seed 7 (update when the model's behaviour changes on purpose).
GOLDEN_DEMO_SUMMARY = {
    "policy": "rfc-v2-teardown",
    "workload enclaves": 11,
    "VMs": 1,
    "SVN update attempts": 3,
    "final CPUSVN": "02030202020202020202020202020202",
    "kernel WARNs": 0,
}


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture
def demo_out(demo_run: tuple[Path, dict[str, object]]) -> tuple[Path, dict[str, object]]:
    """The demo with seed 7 (tests/conftest.py runs it once per test process)."""
    return demo_run


@pytest.mark.xdist_group("demo")
def test_demo_golden_summary_and_schema(demo_out: tuple[Path, dict[str, object]]) -> None:
    out, data = demo_out
    jsonschema.validate(data, report_schema())
    rows = data["summary"]
    assert isinstance(rows, list)
    summary = {row["item"]: row["value"] for row in rows}
    for key, value in GOLDEN_DEMO_SUMMARY.items():
        assert summary[key] == value, key
    metrics = data["metrics"]
    assert isinstance(metrics, dict)
    assert metrics["time_to_attested_ns"] is not None and metrics["epc_pages_zapped"] > 0
    assert metrics["faults"] > 0 and metrics["enclaves_destroyed"] > 0
    assert json.loads((out / "report.json").read_text()) == data
    narrative = "\n".join(data["narrative"])  # type: ignore[arg-type]
    for needle in ("swaps archive out", "vm start VM tenant-a", "tcb recovery", "CPUSVN 0202", "UpToDate"):
        assert needle in narrative


@pytest.mark.xdist_group("demo")
def test_demo_outputs(demo_out: tuple[Path, dict[str, object]]) -> None:
    out, _ = demo_out
    assert sorted(p.name for p in out.iterdir()) == [
        "kernel.log",
        "report.json",
        "report.md",
        "run.json",
        "timeline.png",
        "trace.json",
    ]
    png = (out / "timeline.png").read_bytes()
    assert _png_size(png) == (1300, 1200) and len(png) > 30_000
    assert "EUPDATESVN" in (out / "kernel.log").read_text()
    assert "## Narrative" in (out / "report.md").read_text()


@pytest.mark.xdist_group("demo")
def test_demo_trace_tracks(demo_out: tuple[Path, dict[str, object]]) -> None:
    out, _ = demo_out
    raw = (out / "trace.json").read_bytes()
    assert len(raw) < 50_000_000
    trace = json.loads(raw)
    events = trace["traceEvents"]
    threads = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    procs = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    assert {"CPU 0", "db", "web-0", "qemu-tenant-a"} <= threads
    assert {"machine", "kernel", "db", "inference"} <= procs
    cats = {e.get("cat") for e in events}
    assert {"ioctl", "fault", "update", "attest", "epc"} <= cats
    phases = {e["name"] for e in events if e["ph"] == "b"}
    assert {"lock", "zap", "eupdatesvn", "unlock"} <= phases
    ioctls = {e["name"] for e in events if e.get("cat") == "ioctl"}
    assert {"SGX_IOC_ENCLAVE_CREATE", "SGX_IOC_ENCLAVE_ADD_PAGES", "SGX_IOC_ENCLAVE_INIT"} <= ioctls


def test_run_compare_inspect(tmp_path: Path) -> None:
    path = tmp_path / "small.toml"
    path.write_text(SMALL)
    runner = CliRunner()
    res = runner.invoke(main, ["run", str(path), "--out", str(tmp_path / "o"), "--json", "--seed", "3"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    jsonschema.validate(data, report_schema())
    assert data["seed"] == 3 and data["scenario"] == "small"
    res = runner.invoke(main, ["run", str(path), "--out", str(tmp_path / "o2"), "-v"])
    assert res.exit_code == 0, res.output
    assert "Summary" in res.stdout and "Enclaves" in res.stdout and "Wrote" in res.stdout
    res = runner.invoke(
        main,
        [
            "compare",
            str(path),
            "--policies",
            "rfc-v2-teardown,linux-6.19-on-open",
            "--out",
            str(tmp_path / "c"),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    jsonschema.validate(data, report_schema())
    rows = {r["policy"]: r for r in data["comparison"]}
    assert list(rows) == [
        "rfc-v2-teardown",
        "linux-6.19-on-open",
        "only_if_svn_rises (what-if, impossible in Linux)",
    ]
    assert rows["rfc-v2-teardown"]["time_to_attested_ns"] is not None
    assert rows["linux-6.19-on-open"]["time_to_attested_ns"] is None
    assert (tmp_path / "c" / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    res = runner.invoke(main, ["inspect", str(path), "--at", "1500ms", "--enclave", "app", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    jsonschema.validate(data, inspect_schema())
    assert data["cpusvn"] == "02030202020202020202020202020202" and data["enclaves"][0]["workload"] == "app"
    res = runner.invoke(main, ["inspect", str(path), "--at", "1500ms", "--state", "tcs", "-v"])
    assert res.exit_code == 0 and "EPCM entries" in res.stdout and "TCS page" in res.stdout


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (SMALL.replace('heap = "256KiB"', 'heap = "lots"'), "bad.toml:20: workload[0].heap"),
        (SMALL.replace('patch = "up"', 'patch = "down"'), "bad.toml:31: event[1].patch"),
        (SMALL.replace("sockets = 1", "sockets = 1\nsocket = 2"), "bad.toml:8: machine.socket"),
        (SMALL.replace("[scenario]", "[scenario\n"), "not valid TOML"),
    ],
)
def test_scenario_errors_exit_2_with_file_line_and_key(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    res = CliRunner().invoke(main, ["run", str(path), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert needle in res.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["run"]).exit_code == 2
    assert runner.invoke(main, ["demo", "--policy", "yolo"]).exit_code == 2
    assert runner.invoke(main, ["compare", "demo", "--policies", "nope"]).exit_code == 2
    assert runner.invoke(main, ["inspect", "demo", "--at", "soon"]).exit_code == 2
    res = runner.invoke(main, ["run", str(tmp_path / "missing.toml")])
    assert res.exit_code == 2 and "cannot read scenario file" in res.stderr


@pytest.mark.parametrize("cmd", ["demo", "run", "compare", "inspect"])
def test_help(cmd: str) -> None:
    res = CliRunner().invoke(main, [cmd, "--help"])
    assert res.exit_code == 0 and "--json" in res.stdout and "--seed" in res.stdout


def test_shell_completion_script() -> None:
    res = CliRunner().invoke(main, [], env={"_SGXSIM_COMPLETE": "bash_source"}, prog_name="sgxsim")
    assert res.exit_code == 0
    assert "_sgxsim_completion" in res.stdout and "complete " in res.stdout


def test_progress_bar_restarts_its_estimate_at_each_phase() -> None:
    """The bar's time left comes from the current phase's rate of work (EPC pages while booting,
    simulated time after), shows from the first work done, and restarts with each phase."""
    import io

    from rich.console import Console
    from rich.progress import Progress

    from sgxsim.cli import run as run_cli
    from sgxsim.sim.runner import RunProgress

    clock = [0.0]
    out = io.StringIO()
    console = Console(file=out, width=100, force_terminal=False)
    with Progress(
        *run_cli._bar_columns(), console=console, auto_refresh=False, get_time=lambda: clock[0]
    ) as bar:
        feed = run_cli._RunBar(bar, "demo")
        eta = run_cli._EtaColumn()

        def left() -> str:
            return str(eta.render(bar.tasks[0]))

        feed(RunProgress("boot", 0, 134_217_728, 0, 60 * 10**9))
        assert left() == "ETA ..."
        clock[0] = 10.0
        feed(RunProgress("boot", 33_554_432, 134_217_728, 0, 60 * 10**9))
        assert left() == "ETA 0:00:30"
        clock[0] = 40.0
        feed(RunProgress("run", 0, 50 * 10**9, 10 * 10**9, 60 * 10**9))
        assert bar.tasks[0].completed == 0 and bar.tasks[0].total == 50 * 10**9 and left() == "ETA ..."
        clock[0] = 100.0
        feed(RunProgress("run", 10 * 10**9, 50 * 10**9, 20 * 10**9, 60 * 10**9))
        assert left() == "ETA 0:04:00"
        console.print(bar.make_tasks_table(bar.tasks))
    line = out.getvalue()
    assert "20.000 s of 60.000 s simulated" in line and "ETA 0:04:00" in line and "-:--:--" not in line
