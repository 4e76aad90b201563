"""Fleet files, the fleet's arithmetic, local fleet runs, gates, sampling, replay, atomic outputs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner

from sgxsim.cli import main
from sgxsim.errors import ScenarioError
from sgxsim.sim.engine import LocalEngine
from sgxsim.sim.fleet.model import (
    Z95,
    day_status,
    host_seed,
    sample_hosts,
    strata,
    weighted_quantile,
    wilson,
)
from sgxsim.sim.fleet.output import FLEET_FILES, fleet_markdown, write_fleet
from sgxsim.sim.fleet.run import (
    COUNTED_EVENTS,
    WINDOW_KEYS,
    FleetResult,
    HostOutcome,
    _wave_stats,
    run_fleet,
)
from sgxsim.sim.fleet.spec import (
    IntelSpec,
    RelyingPartyPolicy,
    fleet_schema,
    load_fleet,
    parse_fleet,
    scenario_to_toml,
)
from sgxsim.sim.scenario import load_scenario, parse_scenario

from .fleet_helpers import FLEET_GROUP, SMALL_FLEET, fleet_json

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_FLEETS = sorted((ROOT / "examples" / "fleet").glob("*.toml"))
SMALL_TEXT = SMALL_FLEET.read_text()


@pytest.fixture
def sampled(small_fleet_sampled: FleetResult) -> FleetResult:
    """The 12-host fleet with one host per (class, wave): 6 host runs on 2 local workers (conftest)."""
    return small_fleet_sampled


# --------------------------------------------------------------------------- the fleet file


@pytest.mark.parametrize("path", [SMALL_FLEET, *EXAMPLE_FLEETS], ids=lambda p: p.stem)
def test_fleet_files_parse_and_match_schema(path: Path) -> None:
    spec = load_fleet(path)
    assert spec.hosts == sum(c.count for c in spec.classes) > 0
    jsonschema.validate(tomllib.loads(path.read_text()), fleet_schema())


def test_example_fleet_shape() -> None:
    (path,) = [p for p in EXAMPLE_FLEETS if p.stem == "tcb-recovery"]
    spec = load_fleet(path)
    assert 9_000 <= spec.hosts <= 11_000 and len(spec.classes) == 5
    assert len({c.policy for c in spec.classes}) >= 3
    cumulative, total = [], 0.0
    for w in spec.rollout.waves:
        total += w.percent or 0
        cumulative.append(round(total))
    assert cumulative == [1, 10, 50, 100]
    assert spec.intel.standard_update_day > spec.intel.early_update_day


def _err(text: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        parse_fleet(text, base_dir=SMALL_FLEET.parent)
    return info.value


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_unknown_class_in_a_wave_names_key_and_line() -> None:
    text = SMALL_TEXT.replace("percent = 25\n", 'percent = 25\nclasses = ["teardown", "gpu"]\n')
    err = _err(text)
    assert err.key == "rollout.wave[0].classes[1]" and "'gpu'" in str(err)
    assert err.line == _line_of(text, 'classes = ["teardown", "gpu"]')


def test_waves_over_100_percent() -> None:
    text = SMALL_TEXT.replace("percent = 75", "percent = 80")
    err = _err(text)
    assert (
        err.key == "rollout.wave[1].percent"
        and "105" in str(err)
        and err.line == _line_of(text, "percent = 80")
    )


def test_inline_class_errors_name_the_class_path() -> None:
    text = SMALL_TEXT.replace(
        'cpus_per_socket = 2\n[[class.workload]]\nname = "svc"\nheap = "256KiB"\n'
        'attest_every = "1s"\n\n[[class]]\nname = "drained"',
        'cpus_per_socket = 0\n[[class.workload]]\nname = "svc"\nheap = "256KiB"\n'
        'attest_every = "1s"\n\n[[class]]\nname = "drained"',
    )
    err = _err(text)
    assert err.key == "class[1].machine.cpus_per_socket"
    assert err.line == _line_of(text, "cpus_per_socket = 0")


def test_class_scenario_file_failing_validation(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('[scenario]\nname = "bad"\n[machine]\nsockets = 99\n')
    text = SMALL_TEXT.replace(
        'name = "teardown"\ncount = 4\n', 'name = "teardown"\ncount = 4\nscenario = "bad.toml"\n'
    )
    text = text.replace(
        'duration = "3s"\nupdate_at = "1500ms"\n[class.machine]\nsockets = 1\n'
        'cpus_per_socket = 2\n[[class.machine.epc_sections]]\nsize = "32MiB"\n'
        '[[class.workload]]\nname = "svc"\nheap = "256KiB"\nattest_every = "1s"\n',
        "",
        1,
    )
    with pytest.raises(ScenarioError) as info:
        parse_fleet(text, base_dir=tmp_path)
    assert info.value.key == "class[0].scenario" and "machine.sockets" in str(info.value)


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        (
            'policy = "rfc-v2-teardown"',
            'policy = "rfc-v2-teardown"\ntrigger_after = "1s"',
            "class[0].trigger_after",
        ),
        ("standard_update_day = 16", "standard_update_day = 1", "intel.standard_update_day"),
        ('follows = "standard"', 'follows = "late"', "relying_party.follows"),
        ("percent = 25\n", "percent = 25\ncount = 2\n", "rollout.wave[0].percent"),
        ("[fleet]\n", "[fleet]\nbogus = 1\n", "fleet.bogus"),
    ],
)
def test_other_mistakes(old: str, new: str, key: str) -> None:
    assert old in SMALL_TEXT
    assert _err(SMALL_TEXT.replace(old, new, 1)).key == key


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.toml")), ids=lambda p: p.stem)
def test_scenario_to_toml_round_trips(path: Path) -> None:
    sc = load_scenario(path)
    back = parse_scenario(scenario_to_toml(sc), source=sc.source)
    assert back == sc


# --------------------------------------------------------------------------- arithmetic


def test_host_seed_is_the_documented_function() -> None:
    digest = hashlib.sha256(b"sgxsim-fleet/5/7").digest()
    assert host_seed(5, 7) == int.from_bytes(digest[:8], "big") & (2**63 - 1)
    assert len({host_seed(5, i) for i in range(1000)}) == 1000
    assert host_seed(5, 7) != host_seed(6, 7)


def test_wilson_interval() -> None:
    lo, hi = wilson(0, 10)
    assert lo == 0 and math.isclose(hi, Z95**2 / (10 + Z95**2))
    lo, hi = wilson(5, 10)
    assert math.isclose(0.5 - lo, hi - 0.5) and lo < 0.5 < hi
    narrow = wilson(500, 1000)
    assert narrow[1] - narrow[0] < hi - lo
    assert wilson(0, 0) == (0.0, 1.0)


def test_waves_take_cumulative_shares_of_each_class() -> None:
    spec = load_fleet(SMALL_FLEET)
    groups = strata(spec)
    by = {(g.cls, g.wave): g.hosts for g in groups}
    assert by[("teardown", 0)] == (0,) and by[("teardown", 1)] == (1, 2, 3)
    assert by[("on-open", 0)] == (4,) and by[("drained", 1)] == (9, 10, 11)
    assert all(not by[(c.name, None)] for c in spec.classes)
    assert sorted(i for g in groups for i in g.hosts) == list(range(12))
    chosen = sample_hosts(spec.seed, tuple(range(100)), 4)
    assert len(chosen) == 4 and chosen == sample_hosts(spec.seed, tuple(range(100)), 4)
    assert chosen != sample_hosts(spec.seed + 1, tuple(range(100)), 4)


def test_day_status_follows_tcb_info_grace_and_policy() -> None:
    intel = IntelSpec(2, 2, 16, 17, 18, 3)
    rp = RelyingPartyPolicy(follows="standard", grace_days=7)
    assert day_status(10, None, intel, rp) == "UpToDate"  # relying party still on the old TCB Info
    assert day_status(16, None, intel, rp) == "OutOfDate"
    assert day_status(22, None, intel, rp) == "OutOfDate"
    assert day_status(23, None, intel, rp) == "refused"
    assert day_status(23, 5, intel, rp) == "UpToDate"
    assert day_status(20, 21, intel, rp) == "OutOfDate"  # not yet patched that day
    early = dataclasses.replace(rp, follows="early")
    assert day_status(10, None, intel, early) == "refused"
    hardening = dataclasses.replace(intel, new_level_status="SWHardeningNeeded")
    assert day_status(20, 5, hardening, rp) == "SWHardeningNeeded"
    strict = dataclasses.replace(rp, accept_sw_hardening_needed=False)
    assert day_status(20, 5, hardening, strict) == "refused"


# --------------------------------------------------------------------------- fleet runs


@pytest.mark.xdist_group(FLEET_GROUP)
def test_sampled_run_reports_what_it_stands_for(sampled: FleetResult) -> None:
    data = json.loads(fleet_json(sampled))
    s = data["sampling"]
    assert s["host_runs_simulated"] == len(data["hosts"]) == 6
    assert s["hosts_represented"] == 12 and "6 host runs stand for 12" in s["note"]
    st = data["status"]["overall"]
    for b, series in st["fraction"].items():
        for d, p in enumerate(series):
            assert st["wilson95_low"][b][d] - 1e-9 <= p <= st["wilson95_high"][b][d] + 1e-9
    assert sum(h["weight"] for h in data["hosts"]) == pytest.approx(12)
    # linux-6.19-on-open with running enclaves never updates; the drained class does.
    reasons = {r["class"]: r["reason"] for r in data["never_reached_new_cpusvn"]}
    assert set(reasons) == {"on-open"} and "drain" in reasons["on-open"]
    assert data["rollout"]["verdict"] == "completed"
    last = data["days"] - 1
    assert st["fraction"]["refused"][last] == pytest.approx(1 / 3, abs=1e-6)


@pytest.mark.xdist_group(FLEET_GROUP)
def test_gate_halts_the_rollout(sampled: FleetResult) -> None:
    text = SMALL_TEXT.replace("max_kernel_warns = 0", "max_failed_updates_percent = 10")
    spec = parse_fleet(text, base_dir=SMALL_FLEET.parent)
    seen: list[tuple[int, int]] = []
    res = run_fleet(spec, LocalEngine(1), progress=lambda d, t: seen.append((d, t)))
    data = json.loads(fleet_json(res))
    # Wave 0 has one host per class, so the sampled run (2 workers) simulated the same hosts as this
    # one (1 worker, in process): the same entries, report hashes included.
    wave0 = [h for h in json.loads(fleet_json(sampled))["hosts"] if h["wave"] == 0]
    assert data["hosts"] == wave0
    assert data["rollout"]["verdict"] == "halted"
    assert (
        data["rollout"]["halted"]["wave"] == 0
        and "max_failed_updates_percent" in data["rollout"]["halted"]["gates"][0]
    )
    assert len(data["hosts"]) == 3 and {h["wave"] for h in data["hosts"]} == {0}
    halted = [r for r in data["never_reached_new_cpusvn"] if "halted after wave 0" in r["reason"]]
    assert sum(r["hosts"] for r in halted) == 9
    assert seen[-1] == (12, 12) and [d for d, _ in seen[:3]] == [1, 2, 3]


@pytest.mark.xdist_group(FLEET_GROUP)
def test_write_is_atomic_and_replay_two_hosts(sampled: FleetResult, tmp_path: Path) -> None:
    out = tmp_path / "fleet-out"
    write_fleet(out, [sampled])
    assert all((out / f).is_file() for f in FLEET_FILES)
    data = json.loads((out / "fleet.json").read_text())
    assert (out / "fleet.json").read_text().rstrip("\n") == fleet_json(sampled)
    hosts = [h for h in data["hosts"] if h["class"] == "teardown"][:1] + [
        h for h in data["hosts"] if h["class"] == "on-open"
    ][:1]
    for h in hosts:
        d = tmp_path / f"replay-{h['index']}"
        r = CliRunner().invoke(
            main, ["run", str(out / h["scenario"]), "--seed", str(h["seed"]), "--out", str(d), "-q"]
        )
        assert r.exit_code == 0, r.output
        assert hashlib.sha256((d / "report.json").read_bytes()).hexdigest() == h["report_sha256"]
        # The fleet's per-host figures are the host report's metrics, enclaves and events.
        report = json.loads((d / "report.json").read_text())
        assert h["window"] == {k: report["metrics"][k] for k in WINDOW_KEYS}
        rows = [e for e in report["enclaves"] if e["ecall_latency_ns"]]
        assert h["enclave_unavailable_ns"] == [e["unavailable_ns"] for e in rows]
        assert h["unavailable_ns"] == sum(e["unavailable_ns"] for e in rows)
        assert h["events"] == {k: sum(1 for e in report["events"] if e["kind"] == k) for k in COUNTED_EVENTS}
        assert h["enclave_downtime_ns"] == report["metrics"]["enclave_downtime_ns"]
        for phase, p99 in h["ecall_p99_ns"].items():
            vals = [e["ecall_latency_ns"][phase]["p99"] for e in rows]
            assert p99 == max((v for v in vals if v is not None), default=None)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.xdist_group(FLEET_GROUP)
def test_interrupted_write_leaves_nothing(
    sampled: FleetResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sgxsim.sim.fleet.output as output

    def boom(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(output, "_plot", boom)
    with pytest.raises(KeyboardInterrupt):
        write_fleet(tmp_path / "x", [sampled])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.xdist_group(FLEET_GROUP)
def test_fleet_figures_aggregate_the_host_reports(sampled: FleetResult) -> None:
    data = json.loads(fleet_json(sampled))
    hosts = data["hosts"]
    w = [h["weight"] for h in hosts]
    un = data["unavailability"]["overall"]
    host_un = [float(h["unavailable_ns"]) for h in hosts]
    assert un["sum_ns"] == round(sum(v * x for v, x in zip(host_un, w, strict=True)))
    assert un["p99_ns"] == weighted_quantile(host_un, w, 0.99)
    assert un["enclave_max_ns"] == max(v for h in hosts for v in h["enclave_unavailable_ns"])
    win = data["update_window"]["overall"]
    for key in ("locked_window_ns", "ioctls_refused_in_window"):
        assert win[key]["sum"] == round(sum(h["window"][key] * h["weight"] for h in hosts))
        assert win[key]["max"] == max(h["window"][key] for h in hosts)
    lost = sum(h["events"]["enclave_lost"] * h["weight"] for h in hosts)
    assert data["events"]["overall"]["enclave_lost"] == round(lost)
    for wave in data["rollout"]["waves"]:
        per = next(u for u in data["unavailability"]["per_wave"] if u["wave"] == wave["wave"])
        assert wave["unavailability_p99_ns"] == per["p99_ns"]
    # The teardown zaps its hosts' enclaves: lost, unavailable, a locked window; on-open hosts keep
    # running theirs (no EUPDATESVN with enclaves in the EPC): nothing lost, never unavailable.
    by_class: dict[str, list[dict[str, Any]]] = {}
    for h in hosts:
        by_class.setdefault(h["class"], []).append(h)
    for h in by_class["teardown"]:
        assert h["events"]["enclave_lost"] >= 1 and h["window"]["locked_window_ns"] > 0
        # From the last ECALL before the loss to the first after the restart: contains the downtime.
        assert h["unavailable_ns"] >= h["enclave_downtime_ns"] > 0 and h["time_to_new_cpusvn_ns"] > 0
        assert h["ecall_p99_ns"]["after"] >= 20_000_000  # its ECALL thread's 20 ms calls
    for h in by_class["on-open"]:
        assert h["events"]["enclave_lost"] == 0 and h["unavailable_ns"] == 0
        assert h["time_to_new_cpusvn_ns"] is None
    for h in by_class["drained"]:  # drained before the load: EUPDATESVN runs at the restart's open
        assert h["events"]["drain"] == 1 and h["time_to_new_cpusvn_ns"] > 0
    md = fleet_markdown(data)
    assert "## Enclave unavailability" in md and "## The update window" in md


def _outcome(index: int, unavailable: tuple[int, ...], downtime: int) -> HostOutcome:
    return HostOutcome(
        index, 1, "", True, 1, None, 0, downtime, 0, 0, False, "", enclave_unavailable_ns=unavailable
    )


def test_unavailability_gate_uses_the_enclaves_unavailable_time() -> None:
    text = SMALL_TEXT.replace("max_kernel_warns = 0", 'max_unavailability_p99 = "1s"')
    spec = parse_fleet(text, base_dir=SMALL_FLEET.parent)
    weights = {0: 1.0, 1: 1.0}
    # Short downtime (lost to running again) but long unavailability (ECALL gap): the gate trips.
    st = _wave_stats(spec, 0, [_outcome(0, (600_000_000, 600_000_000), 1000), _outcome(1, (), 0)], weights)
    assert st.unavailability_p99_ns == 1_200_000_000 and st.enclave_unavailability_p99_ns == 600_000_000
    assert st.breached and "max_unavailability_p99" in st.breached[0]
    st = _wave_stats(spec, 0, [_outcome(0, (900_000_000,), 5_000_000_000), _outcome(1, (), 0)], weights)
    assert not st.breached
