"""Exploration of SGX-aware late microcode loading (issue 4): CI exploration of every scenario,
the update's outcome per scenario, the as-posted defects found and replayed, and the CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner
from tests.tracing import untraced

from sgxsim.cli import main
from sgxsim.errors import InvalidArgument
from sgxsim.hw.arch import SgxStatus
from sgxsim.rand import Rng
from sgxsim.sim.explore import Violation, explore, replay
from sgxsim.sim.sched import DeterministicScheduler, RandomWalk
from sgxsim.sim.svn import (
    SCENARIOS,
    EnclaveKit,
    SvnWorld,
    scenario_names,
    svn_invariants,
    svn_program,
)


@pytest.fixture(scope="module")
def kit() -> EnclaveKit:
    return EnclaveKit.build()


def run_world(kit: EnclaveKit, name: str, seed: int) -> tuple[SvnWorld, DeterministicScheduler]:
    """One random-walk schedule of a scenario, run to completion (the caller closes sched)."""
    prog = svn_program(name, kit=kit)
    sched = DeterministicScheduler(RandomWalk(random.Random(seed)))
    w = prog.setup(sched, Rng(seed))
    checks = svn_invariants(w)

    def on_step(step: int, task: object) -> None:
        for inv in checks:
            msg = inv.check(w)
            assert msg is None, f"{inv.name}: {msg}"

    sched.on_step = on_step
    res = sched.run(SCENARIOS[name.split("@", maxsplit=1)[0]].max_steps)
    assert res.completed, res.describe()
    return w, sched


# ------------------------------------------------------------------------------------ CI exploration

CI = [(s.name, s.schedules_ci) for s in SCENARIOS.values()]


# Untraced under --cov (no_cover, tests/tracing.py): each schedule repeats the same code, which the
# tests below and the first schedules of test_explore.py already cover; tracing doubles their time.
@pytest.mark.no_cover
@pytest.mark.parametrize(("name", "schedules"), CI, ids=[n for n, _ in CI])
def test_ci_exploration_finds_no_violation(kit: EnclaveKit, name: str, schedules: int) -> None:
    r = explore(svn_program(name, kit=kit), schedules, seed=4, max_steps=SCENARIOS[name].max_steps)
    assert r.ok, r.summary() + "\n" + (r.violations[0].message if r.violations else "")
    assert r.schedules_run == schedules
    # Every invariant was checked at every step (and once more at the end).
    assert r.check_counts["locked-window"] >= r.steps_total
    assert r.check_counts["epc-clean"] == schedules


def test_scenario_list_and_bad_name() -> None:
    assert {"success", "ipi", "reenter", "release-wait", "release-abort", "ioctl-race", "vepc-skip",
            "vepc-zap", "entropy", "entropy-starved", "kexec-init", "trigger-destructive",
            "trigger-nondestructive", "linux-6.19", "guest-zap",
            "guest-skip"} <= set(scenario_names())  # fmt: skip
    assert SCENARIOS["success"].schedules_ci == SCENARIOS["ipi"].schedules_ci == 1000
    assert SCENARIOS["release-wait"].schedules_ci == 1000
    with pytest.raises(InvalidArgument):
        svn_program("nope")
    assert svn_program("success@as-posted").name == "success@as-posted"
    assert svn_program("success", as_posted=True).name == "success@as-posted"


# ------------------------------------------------------------------------------------ outcomes


def _results(w: SvnWorld, trigger: str) -> list[str]:
    return [r.result_name for r in w.updates(trigger)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_success_kills_every_enclave_and_raises_cpusvn(kit: EnclaveKit, seed: int) -> None:
    w, sched = run_world(kit, "success", seed)
    with sched:
        (rec,) = w.updates("late_load")
        assert rec.result_name == "SUCCESS" and rec.tries == 1
        assert rec.cpusvn_after == w.machine.min_loaded_svn() != rec.cpusvn_before
        assert w.k.log.warn_count == 0


def test_ipi_then_success(kit: EnclaveKit) -> None:
    for seed in range(3):
        w, sched = run_world(kit, "ipi", seed)
        with sched:
            assert _results(w, "late_load") == ["SUCCESS"]
            assert 1 <= w.k.stats["zap_ipi_rounds"] < 10
            assert any(e[1] == "spin_done" for e in w.events)


def test_reenter_gives_up_with_ebusy_after_ten_ipi_rounds(kit: EnclaveKit) -> None:
    w, sched = run_world(kit, "reenter", 5)
    with sched:
        assert _results(w, "late_load") == ["-EBUSY"]
        assert w.k.stats["zap_ipi_rounds"] == 10
        assert w.machine.cpusvn != w.machine.min_loaded_svn()  # no EUPDATESVN ran
        assert "after 10 IPIs" in w.k.log.format()


def test_release_wait_waits_for_the_releasing_enclave(kit: EnclaveKit) -> None:
    waited = 0
    for seed in range(40):
        w, sched = run_world(kit, "release-wait", seed)
        with sched:
            assert _results(w, "late_load") == ["SUCCESS"]
            waited += w.max_zap_waiting > 0
    assert waited, "no schedule had the zapper wait for a releasing enclave"


def test_release_abort_eio_then_a_second_load_cleans_up(kit: EnclaveKit) -> None:
    seen = set()
    for seed in range(20):
        w, sched = run_world(kit, "release-abort", seed)
        with sched:
            res = _results(w, "late_load")
            seen.add(res[0])
            assert res[1] == "SUCCESS"  # the leaked pages are zapped by the second load
            if res[0] == "-EIO":
                assert "CPUSVN update aborted" in w.k.log.format() or "leaked EPC page" in w.k.log.format()
    assert "-EIO" in seen


def test_ioctl_race_ebusy_partial_counts(kit: EnclaveKit) -> None:
    events: set[str] = set()
    for seed in range(10):
        w, sched = run_world(kit, "ioctl-race", seed)
        with sched:
            assert _results(w, "late_load") == ["SUCCESS"]
            assert not w.errors
            events |= {f"{e[1]}:{e[2].split()[0]}" for e in w.events}
    assert "build_failed:EBUSY" in events


def test_vepc_skip_not_ready_and_vepc_zap_success(kit: EnclaveKit) -> None:
    w, sched = run_world(kit, "vepc-skip", 1)
    with sched:
        (rec,) = w.updates("late_load")
        assert rec.result == SgxStatus.SGX_EPC_NOT_READY and rec.vepc_pages_zapped == 0
        assert "EPC not ready" in w.k.log.format()
    w, sched = run_world(kit, "vepc-zap", 1)
    with sched:
        (rec,) = w.updates("late_load")
        assert rec.result_name == "SUCCESS" and rec.vepc_pages_zapped >= 1


def test_entropy_retries(kit: EnclaveKit) -> None:
    w, sched = run_world(kit, "entropy", 1)
    with sched:
        (rec,) = w.updates("late_load")
        assert (rec.result_name, rec.tries) == ("SUCCESS", 4)
    w, sched = run_world(kit, "entropy-starved", 1)
    with sched:
        (rec,) = w.updates("late_load")
        assert (rec.result, rec.tries) == (SgxStatus.SGX_INSUFFICIENT_ENTROPY, 10)
        assert "insufficient entropy after 10 tries" in w.k.log.format()


def test_kexec_init_updates_at_boot(kit: EnclaveKit) -> None:
    w, sched = run_world(kit, "kexec-init", 1)
    with sched:
        (rec,) = w.updates("init")
        assert rec.result_name == "SUCCESS" and rec.cpusvn_after == w.machine.min_loaded_svn()


def test_triggers(kit: EnclaveKit) -> None:
    w, sched = run_world(kit, "trigger-destructive", 1)
    with sched:
        assert [a for a in w.admin if a[0] == "trigger"] == [("trigger", 0)]
        assert _results(w, "late_load") == []  # the load itself did nothing SGX-specific
    outcomes = set()
    for seed in range(6):
        w, sched = run_world(kit, "trigger-nondestructive", seed)
        with sched:
            outcomes.add(tuple(r for _, r in w.admin if _ == "trigger"))
    assert (-16, 0) in outcomes  # -EBUSY while a user exists, then 0


def test_linux_619_updates_only_at_zero_usage(kit: EnclaveKit) -> None:
    for seed in range(4):
        w, sched = run_world(kit, "linux-6.19", seed)
        with sched:
            res = _results(w, "open")
            assert "SUCCESS" in res and set(res) <= {"SUCCESS", "SGX_NO_UPDATE"}
            assert w.k.sgx_usage_count == 0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_guest_zap_guest_loses_epc_and_rebuilds(kit: EnclaveKit, seed: int) -> None:
    w, sched = run_world(kit, "guest-zap", seed)
    with sched:
        (rec,) = w.updates("late_load")
        assert w.vm is not None
        assert rec.result_name == "SUCCESS" and rec.vepc_pages_zapped == w.vm.config.epc_pages[0]
        assert w.guest_built and w.guest_lost == 1 and w.guest_rebuilt == 1
        assert any(e[1] == "enclave_lost" for e in w.events) and not w.errors and not w.guest_problems
        assert w.guest is not None and w.guest.log.warn_count == 0 and w.k.log.warn_count == 0
        assert not w.k.vepcs and not w.k.svn.vcpu_kickers  # the VMM exited and unregistered


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_guest_skip_not_ready_and_the_guest_keeps_its_enclave(kit: EnclaveKit, seed: int) -> None:
    w, sched = run_world(kit, "guest-skip", seed)
    with sched:
        (rec,) = w.updates("late_load")
        assert rec.result == SgxStatus.SGX_EPC_NOT_READY and rec.vepc_pages_zapped == 0
        assert w.guest_built and w.guest_lost == 0 and w.guest_rebuilt == 0
        assert w.k.stats.get("vcpu_halts", 0) == 0  # skip never halts vCPUs
        assert "EPC not ready" in w.k.log.format()


# ------------------------------------------------------------------------------------ as posted


def _kinds(vs: tuple[Violation, ...]) -> dict[str, Violation]:
    out: dict[str, Violation] = {}
    for v in vs:
        if "WARNING at EBLOCK" in v.message or "WARNING at EWB" in v.message:
            out.setdefault("reclaimer", v)
        if "WARNING at EINIT" in v.message or "SGX_LOCKFAIL" in v.message:
            out.setdefault("einit", v)
        if v.invariant == "no-dram-leak":
            out.setdefault("create-leak", v)
    return out


def test_as_posted_exploration_finds_the_reclaimer_and_einit_races_and_replays(kit: EnclaveKit) -> None:
    prog = svn_program("ioctl-race@as-posted", kit=kit)
    with untraced():  # 120 schedules of one world; the replays below are traced
        found = _kinds(explore(prog, 60, seed=1, strategy="random", stop_on_first=False).violations)
        pct = _kinds(explore(prog, 60, seed=1, strategy="pct", stop_on_first=False).violations)
    found.update({k: v for k, v in pct.items() if k not in found})
    assert {"reclaimer", "einit"} <= set(found), sorted(found)
    for kind in ("reclaimer", "einit"):
        v = found[kind]
        again = replay(prog, v)
        assert len(again.violations) == 1 and again.violations[0].same_as(v), kind
    # The fixed kernel passes the same schedules' worlds (see the CI exploration).


# ------------------------------------------------------------------------------------ CLI


def test_cli_list_ok_violation_and_replay(tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(main, ["explore", "--list"])
    assert r.exit_code == 0 and "release-abort" in r.output
    r = runner.invoke(
        main, ["explore", "entropy", "--schedules", "2", "--json", "--out", str(tmp_path / "e")]
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["ok"] is True
    r = runner.invoke(
        main, ["explore", "ioctl-race", "--as-posted", "--schedules", "40", "--out", str(tmp_path)]
    )
    assert r.exit_code == 1, r.output
    assert "VIOLATION" in r.output and "seed" in r.output
    files = list(tmp_path.glob("violation-*.json"))
    assert files
    r = runner.invoke(main, ["explore", "--replay", str(files[0])])
    assert r.exit_code == 1 and "replayed exactly" in r.output


def test_cli_usage_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["explore", "nope"]).exit_code == 2
    assert runner.invoke(main, ["explore"]).exit_code == 2
    assert runner.invoke(main, ["explore", "success", "--schedules", "0"]).exit_code == 2
    bad = tmp_path / "bad.toml"
    bad.write_text('[scenario]\nname = "x"\n[machine]\nsvn_update_policy = "none"\n')
    assert runner.invoke(main, ["explore", str(bad)]).exit_code == 2


def test_cli_toml_maps_to_builtin(tmp_path: Path) -> None:
    from sgxsim.cli.explore import program_for_toml

    f = tmp_path / "s.toml"
    f.write_text('[scenario]\nname = "x"\nseed = 9\n[machine]\nsvn_update_policy = "linux-6.19-on-open"\n')
    assert program_for_toml(str(f)) == ("linux-6.19", 9)
    f.write_text(
        '[scenario]\nname = "x"\n[machine]\nsvn_update_policy = "explicit-trigger"\n'
        'trigger_mode = "non-destructive"\nrfc_v2_as_posted = true\n'
    )
    assert program_for_toml(str(f)) == ("trigger-nondestructive@as-posted", 0)
    r = CliRunner().invoke(
        main, ["explore", str(f), "--schedules", "2", "--json", "--out", str(tmp_path / "out")]
    )
    assert r.exit_code in (0, 1) and json.loads(r.output)["program"] == "trigger-nondestructive@as-posted"


# ------------------------------------------------------------------------------------ full sweep


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["random", "pct"])
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_full_sweep(kit: EnclaveKit, name: str, strategy: str) -> None:
    """Deselected by default (pyproject addopts ``-m 'not slow'``); run with ``-m slow``."""
    r = explore(
        svn_program(name, kit=kit), 2000, seed=11, strategy=strategy, max_steps=SCENARIOS[name].max_steps
    )
    assert r.ok, r.summary() + "\n" + (r.violations[0].message if r.violations else "")


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["random", "pct"])
def test_guest_as_posted_sweep(kit: EnclaveKit, strategy: str) -> None:
    """As posted, vCPUs are neither halted nor kicked: under zap a guest leaf initializes a
    page inside the locked window or the zap gives up (-EBUSY + WARN); skip stays clean."""
    r = explore(svn_program("guest-zap@as-posted", kit=kit), 2000, seed=11, strategy=strategy,
                max_steps=SCENARIOS["guest-zap"].max_steps, stop_on_first=False)  # fmt: skip
    kinds = {v.invariant for v in r.violations}
    assert kinds & {"locked-window", "no-unexpected-warn"}, r.summary()
    r = explore(svn_program("guest-skip@as-posted", kit=kit), 2000, seed=11, strategy=strategy,
                max_steps=SCENARIOS["guest-skip"].max_steps)  # fmt: skip
    assert r.ok, r.summary() + "\n" + (r.violations[0].message if r.violations else "")
