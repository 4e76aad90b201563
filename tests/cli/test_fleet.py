"""``sgxsim fleet``: bad input fails fast (exit 2, no traceback); Ctrl-C exits 130, writes nothing."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sgxsim.cli import main

SMALL = Path(__file__).resolve().parents[1] / "sim" / "data" / "small-fleet.toml"


def _fleet(tmp_path: Path, old: str = "", new: str = "") -> Path:
    text = SMALL.read_text()
    if old:
        assert old in text
        text = text.replace(old, new, 1)
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    return path


def _invoke(args: list[str], tmp_path: Path) -> tuple[int, str]:
    r = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "out"), "-q"])
    assert "Traceback" not in r.output
    return r.exit_code, r.output


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ("percent = 25\n", 'percent = 25\nclasses = ["nope"]\n', "rollout.wave[0].classes[0]"),
        ("percent = 75", "percent = 90", "more than 100 %"),
        ('policy = "rfc-v2-teardown"', 'policy = "rfc-v3"', "class[0].policy"),
        ('size = "32MiB"', 'size = "3MiB+"', "class[0].machine.epc_sections[0].size"),
    ],
)
def test_bad_fleet_file_exits_2_before_any_work(tmp_path: Path, old: str, new: str, needle: str) -> None:
    code, out = _invoke(["fleet", str(_fleet(tmp_path, old, new))], tmp_path)
    assert code == 2 and needle in out and "(line " in out
    assert not (tmp_path / "out").exists()


def test_class_scenario_failing_validation_names_the_class(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('[scenario]\nname = "bad"\n[machine]\nsockets = 99\n')
    # The teardown class takes its hosts from bad.toml instead of its inline machine and workload.
    inline = SMALL.read_text().split('policy = "rfc-v2-teardown"\n', 1)[1].split("\n[[class]]", 1)[0]
    path = _fleet(tmp_path, 'policy = "rfc-v2-teardown"\n' + inline, 'scenario = "bad.toml"\n')
    code, out = _invoke(["fleet", str(path)], tmp_path)
    assert code == 2 and "class[0].scenario (line " in out and "class 'teardown'" in out, out
    assert "bad.toml:4: machine.sockets" in out  # the scenario's own key and line
    assert not (tmp_path / "out").exists()


def test_missing_file_and_conflicting_options(tmp_path: Path) -> None:
    code, out = _invoke(["fleet", str(tmp_path / "none.toml")], tmp_path)
    assert code == 2 and "cannot read fleet file" in out
    code, _ = _invoke(["fleet", str(SMALL), "--policy", "none", "--compare-policies"], tmp_path)
    assert code == 2
    code, out = _invoke(["fleet", str(SMALL), "--address", "127.0.0.1:1"], tmp_path)
    assert code == 2 and "--engine ray" in out


def test_unreachable_ray_address_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out = _invoke(["fleet", str(SMALL), "--engine", "ray", "--address", f"127.0.0.1:{port}"], tmp_path)
    assert code == 2 and "unreachable" in out
    assert not (tmp_path / "out").exists()
    # compare --seeds starts its engine before its first run, too.
    code, out = _compare_no_runs(tmp_path, monkeypatch, "--engine", "ray", "--address", f"127.0.0.1:{port}")
    assert code == 2 and "unreachable" in out
    # Something listens there but is no Ray cluster (it never answers gRPC): ray.init would retry
    # it for minutes; the engine gives up after its connect timeout.
    import sgxsim.sim.engine as engine

    monkeypatch.setattr(engine, "CONNECT_TIMEOUT_S", 0.2)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        code, out = _invoke(
            ["fleet", str(SMALL), "--engine", "ray", "--address", f"127.0.0.1:{port}"], tmp_path
        )
    assert code == 2 and "does not answer as a Ray cluster" in out, out
    assert not (tmp_path / "out").exists()


def _compare_no_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *options: str) -> tuple[int, str]:
    """``compare --seeds 2 OPTIONS`` where starting a run fails the test; nothing may be written."""
    import sgxsim.cli.run as run_cli

    def no_run(*_: object, **__: object) -> None:
        raise AssertionError("a run started")

    monkeypatch.setattr(run_cli, "_execute", no_run)
    scenario = SMALL.parent / "small-late-load.toml"
    code, out = _invoke(["compare", str(scenario), "--seeds", "2", *options], tmp_path)
    assert not (tmp_path / "out").exists()
    return code, out


def test_compare_seeds_bad_engine_options_fail_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = _compare_no_runs(tmp_path, monkeypatch, "--address", "127.0.0.1:1")
    assert code == 2 and "--address is only for --engine ray" in out


def test_ctrl_c_exits_130_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sgxsim.sim.fleet.run as run

    def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "run_fleet", interrupted)
    code, out = _invoke(["fleet", str(SMALL), "--workers", "1"], tmp_path)
    assert code == 130 and "interrupted" in out
    assert list(tmp_path.iterdir()) == []


def test_compare_over_seeds_reports_p5_median_p95(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sgxsim.cli.run as run_cli
    from sgxsim.sim.engine import LocalEngine

    ran: dict[tuple[str, int], dict[str, Any]] = {}
    calls: list[tuple[str, int]] = []
    local_map, execute = LocalEngine.map, run_cli._execute

    def recording_map(self: LocalEngine, fn: Any, items: Any, progress: Any = None) -> Any:
        out = local_map(self, fn, items, progress)  # the seed runs, on the 2 workers
        for task, metrics in zip(items, out, strict=True):
            ran[(task.policy, task.seed)] = metrics
            calls.append((task.policy, task.seed))
        return out

    def recording_execute(*args: Any) -> Any:
        res = execute(*args)
        ran[(res.policy, res.seed)] = dict(res.metrics)  # compare's own run: the base seed's
        calls.append((res.policy, res.seed))
        return res

    monkeypatch.setattr(LocalEngine, "map", recording_map)
    monkeypatch.setattr(run_cli, "_execute", recording_execute)
    scenario = SMALL.parent / "small-late-load.toml"
    args = ["compare", str(scenario), "--policies", "rfc-v2-teardown,linux-6.19-on-open", "--no-what-if"]
    out = tmp_path / "o"
    r = CliRunner().invoke(main, [*args, "--seeds", "3", "--workers", "2", "--out", str(out)])
    assert r.exit_code == 0 and "median (p5 .. p95)" in r.output, r.output
    report = json.loads((out / "report.json").read_text())
    rows = report["comparison"]
    assert [row["policy"] for row in rows] == ["rfc-v2-teardown", "linux-6.19-on-open"]
    base = report["seed"]
    # Every (policy, seed) ran once: the base seed's run is compare's own, not run again.
    assert sorted(calls) == sorted((row["policy"], base + i) for row in rows for i in range(3))
    for row in rows:
        assert row["seeds"] == 3
        for key in ("enclave_downtime_ns", "verdicts_accepted", "time_to_attested_ns"):
            per_seed = sorted(
                ran[(row["policy"], base + i)][key]
                for i in range(3)
                if ran[(row["policy"], base + i)][key] is not None
            )
            if not per_seed:
                assert row[key] is row[f"{key}_p5"] is row[f"{key}_p95"] is None
                continue
            # Nearest rank over 3 seeds: p5 is the smallest, the median the middle, p95 the largest.
            assert (row[f"{key}_p5"], row[key], row[f"{key}_p95"]) == (
                per_seed[0],
                per_seed[(len(per_seed) - 1) // 2],
                per_seed[-1],
            )
    teardown = rows[0]
    assert teardown["time_to_attested_ns_p5"] < teardown["time_to_attested_ns_p95"]  # seeds spread
    assert (out / "comparison.png").stat().st_size > 0


def test_compare_policies_runs_the_fleet_under_each_design(tmp_path: Path) -> None:
    text = SMALL.read_text()
    text = text.replace(
        "[[rollout.wave]]\npercent = 25\n\n[[rollout.wave]]\npercent = 75", "[[rollout.wave]]\npercent = 100"
    )
    # Two classes (late load with an ECALL thread, drain): under each design one host run apiece.
    on_open = text.index('[[class]]\nname = "on-open"')
    text = text[:on_open] + text[text.index('[[class]]\nname = "drained"') :]
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    out = tmp_path / "cmp"
    r = CliRunner().invoke(
        main,
        [
            "fleet",
            str(path),
            "--compare-policies",
            "--sample",
            "1",
            "--workers",
            "2",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    top = json.loads(r.output)
    rows = {row["policy"]: row for row in top["comparison"]}
    assert set(rows) == {"rfc-v2-teardown", "explicit-trigger", "linux-6.19-on-open"}
    assert all(row["host_runs"] == 2 for row in rows.values())
    # Without a trigger write, the explicit trigger never updates a host, drained or not; the RFC v2
    # teardown updates every one.
    assert rows["rfc-v2-teardown"]["never_reached_hosts"] == 0
    assert rows["explicit-trigger"]["never_reached_hosts"] == 8
    for policy in rows:
        sub = json.loads((out / policy / "fleet.json").read_text())
        assert sub["policy"] == policy and all(c["policy"] == policy for c in sub["classes"])
