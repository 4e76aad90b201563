"""Exploration sharded by (seed, index): the same result with 1 or 2 local workers, shards that
add up to the sequential exploration's schedules, and violations that replay exactly alone."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from sgxsim.cli import main
from sgxsim.sim.engine import LocalEngine
from sgxsim.sim.explore import DEFAULT_PCT_STEPS, Violation, explore, replay
from sgxsim.sim.explore_shards import explore_sharded
from sgxsim.sim.svn import svn_program

PROGRAM = "ioctl-race@as-posted"


def test_shards_match_the_sequential_schedules() -> None:
    one = LocalEngine(1)
    sharded = explore_sharded(
        one, "entropy", 6, 3, "both", max_steps=20_000, stop_on_first=False, shard_size=4
    )
    seq = explore(
        svn_program("entropy"),
        6,
        3,
        "both",
        max_steps=20_000,
        stop_on_first=False,
        pct_steps=DEFAULT_PCT_STEPS,
    )
    assert sharded.schedules_run == seq.schedules_run == 6
    assert sharded.steps_total == seq.steps_total and sharded.check_counts == dict(
        sorted(seq.check_counts.items())
    )
    two = LocalEngine(2)
    try:
        again = explore_sharded(
            two, "entropy", 6, 3, "both", max_steps=20_000, stop_on_first=False, shard_size=4
        )
    finally:
        two.close()
    assert again.to_dict() == sharded.to_dict()


def test_sharded_violation_replays_exactly(tmp_path: Path) -> None:
    r = CliRunner().invoke(
        main,
        [
            "explore",
            "ioctl-race",
            "--as-posted",
            "--schedules",
            "8",
            "--engine",
            "local",
            "--workers",
            "2",
            "--out",
            str(tmp_path),
            "--json",
        ],
    )
    assert r.exit_code == 1, r.output
    data = json.loads(r.output)
    assert data["violations"] and data["schedules_requested"] == 8
    (path,) = data["replay_files"]
    r = CliRunner().invoke(main, ["explore", "--replay", path])
    assert r.exit_code == 1 and "replayed exactly" in r.output
    v = data["violations"][0]
    again = replay(svn_program(PROGRAM), Violation.from_dict(v))
    assert again.violations[0].same_as(Violation.from_dict(v))
