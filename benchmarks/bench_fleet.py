"""Fleet and exploration throughput on the engines (issue "Fleet rollouts ... on Ray").

Run by hand: ``python benchmarks/bench_fleet.py [--hosts 20] [--schedules 64] [--no-ray]
[--example]``.

1. The same 20-host fleet (three classes, one wave) with 1 local worker and with 2: wall time,
   hosts/s and the speed-up (goal >= 1.7x on 2 cores); the two fleet.json must be identical.
2. ``explore`` throughput in schedules per second per core: sequential (one process), sharded on
   the local engine with 2 workers, and sharded on a local Ray instance with 2 CPUs.
3. ``--example``: ``sgxsim fleet examples/fleet/tcb-recovery.toml --sample 4`` end to end on
   2 local workers (limit: 10 minutes on a 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

from sgxsim.sim.engine import LocalEngine, RayEngine
from sgxsim.sim.explore import DEFAULT_PCT_STEPS, explore
from sgxsim.sim.explore_shards import explore_sharded
from sgxsim.sim.fleet.output import fleet_dict
from sgxsim.sim.fleet.run import run_fleet
from sgxsim.sim.fleet.spec import load_fleet, parse_fleet
from sgxsim.sim.svn import svn_program

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "tests" / "sim" / "data" / "small-fleet.toml"


def bench_fleet(hosts: int) -> None:
    text = SMALL.read_text()
    per = [hosts // 3 + (1 if i < hosts % 3 else 0) for i in range(3)]
    counts = iter(per)
    text = re.sub(r"count = 4", lambda _: f"count = {next(counts)}", text)
    text = re.sub(
        r"\[\[rollout\.wave\]\]\npercent = 25\n\n\[\[rollout\.wave\]\]\npercent = 75",
        "[[rollout.wave]]\npercent = 100",
        text,
    )
    spec = parse_fleet(text, base_dir=SMALL.parent)
    assert spec.hosts == hosts and len(spec.rollout.waves) == 1
    out: dict[int, tuple[float, str]] = {}
    for workers in (1, 2):
        t0 = time.perf_counter()
        eng = LocalEngine(workers)
        try:
            res = run_fleet(spec, eng)
        finally:
            eng.close()
        wall = time.perf_counter() - t0
        out[workers] = (wall, json.dumps(fleet_dict(res), sort_keys=True))
        print(f"fleet {hosts} hosts, {workers} local worker(s): {wall:.1f} s, {hosts / wall:.2f} hosts/s")
    assert out[1][1] == out[2][1], "fleet.json differs between 1 and 2 workers"
    print(f"speed-up 2 workers vs 1: {out[1][0] / out[2][0]:.2f}x (goal >= 1.7x); fleet.json identical")


def bench_explore(schedules: int, ray: bool) -> None:
    name, seed, strategy, steps = "success", 0, "random", 100_000
    t0 = time.perf_counter()
    seq = explore(svn_program(name), schedules, seed, strategy, max_steps=steps, pct_steps=DEFAULT_PCT_STEPS)
    wall = time.perf_counter() - t0
    print(f"explore {name} x{schedules}, sequential: {schedules / wall:.1f} schedules/s/core ({wall:.1f} s)")
    eng = LocalEngine(2)
    try:
        t0 = time.perf_counter()
        loc = explore_sharded(eng, name, schedules, seed, strategy, max_steps=steps)
        wall = time.perf_counter() - t0
    finally:
        eng.close()
    assert loc.steps_total == seq.steps_total
    print(f"explore sharded, local 2 workers: {schedules / wall / 2:.1f} schedules/s/core ({wall:.1f} s)")
    if not ray:
        return
    t0 = time.perf_counter()
    reng = RayEngine(workers=2)
    start = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        on_ray = explore_sharded(reng, name, schedules, seed, strategy, max_steps=steps)
        wall = time.perf_counter() - t0
    finally:
        reng.close()
    assert on_ray.to_dict() == loc.to_dict()
    print(
        f"explore sharded, Ray 2 CPUs: {schedules / wall / 2:.1f} schedules/s/core ({wall:.1f} s; "
        f"Ray start-up {start:.1f} s not included)"
    )


def bench_example() -> None:
    spec = load_fleet(ROOT / "examples" / "fleet" / "tcb-recovery.toml")
    t0 = time.perf_counter()
    eng = LocalEngine(2)
    try:
        res = run_fleet(spec, eng, sample=4)
    finally:
        eng.close()
    wall = time.perf_counter() - t0
    data = fleet_dict(res)
    print(
        f"tcb-recovery --sample 4: {wall:.0f} s ({wall / 600:.2f} of the 10 min limit), "
        f"{data['sampling']['host_runs_simulated']} host runs for {data['sampling']['hosts_represented']} "
        f"hosts, verdict {data['rollout']['verdict']}, final day {data['status']['final_day']}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=20)
    ap.add_argument("--schedules", type=int, default=64)
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument(
        "--example", action="store_true", help="also time the 10,000-host example with --sample 4"
    )
    args = ap.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    bench_fleet(args.hosts)
    bench_explore(args.schedules, not args.no_ray)
    if args.example:
        bench_example()


if __name__ == "__main__":
    main()
