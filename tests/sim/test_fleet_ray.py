"""The 12-host fleet on Ray (a local instance with 2 CPUs, one session for the module) gives the
same fleet.json bytes as the local engine, also (sampled fleet) when a Ray worker is killed mid-run."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from sgxsim.sim.engine import LocalEngine, RayEngine, check_ray_address
from sgxsim.sim.explore_shards import explore_sharded
from sgxsim.sim.fleet.run import FleetResult, run_fleet
from sgxsim.sim.fleet.spec import load_fleet

from .fleet_helpers import FLEET_GROUP, SMALL_FLEET, fleet_json

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.xdist_group(FLEET_GROUP)


@pytest.fixture(scope="module")
def local_json() -> str:
    """fleet.json of the 12-host fleet on the local engine (2 workers)."""
    eng = LocalEngine(2)
    try:
        return fleet_json(run_fleet(load_fleet(SMALL_FLEET), eng))
    finally:
        eng.close()


@pytest.fixture(scope="module")
def ray_engine(local_json: str, small_fleet_sampled: FleetResult) -> Iterator[RayEngine]:
    """One local Ray session (2 CPUs, no dashboard, usage stats off) for every test here.

    The local references come first: their process pools fork before Ray's threads exist.
    """
    del local_json, small_fleet_sampled
    eng = RayEngine(workers=2)
    try:
        yield eng
    finally:
        eng.close()


def test_ray_session_sends_nothing_off_the_machine(ray_engine: RayEngine) -> None:
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"
    assert ray.is_initialized()
    # The check that fails fast on a port that is no Ray cluster accepts a real GCS.
    check_ray_address(ray.get_runtime_context().gcs_address)


def test_ray_and_local_give_the_same_fleet_json(ray_engine: RayEngine, local_json: str) -> None:
    done: list[int] = []
    res = run_fleet(load_fleet(SMALL_FLEET), ray_engine, progress=lambda d, t: done.append(d))
    assert fleet_json(res) == local_json
    assert done[-1] == 12 and done == sorted(done)


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state


def _busy_ray_workers() -> list[int]:
    """PIDs of this session's Ray worker processes running a host (Ray titles them
    ``ray::run_host``): children of the raylet this test process started, never another
    session's (a suite running beside this one)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        raylet = _ppid(int(entry.name)) if cmd.startswith(b"ray::run_host") else None
        if raylet is not None and _ppid(raylet) == os.getpid():
            pids.append(int(entry.name))
    return pids


def test_killed_worker_is_retried_with_the_same_result(
    ray_engine: RayEngine, small_fleet_sampled: FleetResult
) -> None:
    """The sampled fleet (6 host runs; the retry does not depend on the fleet's size) with one Ray
    worker killed while it runs a host: the same fleet.json as on the local engine."""
    killed: list[int] = []

    def kill_one(done: int, total: int) -> None:
        if killed or done >= total - 2:
            return
        for pid in _busy_ray_workers():
            os.kill(pid, signal.SIGKILL)  # a worker process this test's Ray session started
            killed.append(pid)
            return

    res = run_fleet(load_fleet(SMALL_FLEET), ray_engine, sample=1, progress=kill_one)
    assert killed, "no Ray worker was running a host when one finished"
    assert fleet_json(res) == fleet_json(small_fleet_sampled)


def test_explore_shards_on_ray_match_local(ray_engine: RayEngine) -> None:
    args = ("entropy", 6, 3, "both")
    local = explore_sharded(LocalEngine(1), *args, max_steps=20_000, stop_on_first=False, shard_size=2)
    on_ray = explore_sharded(ray_engine, *args, max_steps=20_000, stop_on_first=False, shard_size=2)
    assert on_ray.to_dict() == local.to_dict()
