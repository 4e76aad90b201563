"""Fleet and exploration throughput on the engines (issue "Fleet rollouts ... on Ray").

Run by hand, on a quiet machine: ``python benchmarks/bench_fleet.py [--hosts 20] [--schedules 64]
[--no-ray] [--no-example]``. Every line it prints is a figure docs/performance.md quotes; the
first and last lines give the conditions (CPUs, load average, UTC time).

1. The same 20-host fleet (tests/sim/data/small-fleet.toml's three classes, one 100 % wave,
   every host simulated) with 1 local worker (in this process) and with 2 (a process pool),
   ``run_fleet`` only (no outputs written): wall time each, hosts/s and the speed-up 1 -> 2
   (goal >= 1.7x on 2 cores). The two fleet.json contents must be byte-identical.
2. ``explore success`` throughput in schedules per second per core: sequential (one process),
   then sharded (``--schedules / 4`` per shard, so both workers get shards) on the local engine
   with 2 workers and on a local Ray instance with 2 CPUs (Ray start-up timed apart). The sharded
   results must equal each other.
3. Unless ``--no-example``: ``sgxsim fleet examples/fleet/tcb-recovery.toml --sample 4
   --workers 2 --out DIR -q`` through the CLI in a child process, wall time end to end
   (start-up, every host run, fleet.json, fleet.md and the plots written; limit 10 minutes on
   a 2-core machine); then checks that fleet.json has the per-day status fractions and the
   verdict, and prints them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sgxsim.sim.engine import LocalEngine, RayEngine
from sgxsim.sim.explore import DEFAULT_PCT_STEPS, explore
from sgxsim.sim.explore_shards import explore_sharded
from sgxsim.sim.fleet.output import fleet_dict
from sgxsim.sim.fleet.run import run_fleet
from sgxsim.sim.fleet.spec import parse_fleet
from sgxsim.sim.svn import svn_program

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "tests" / "sim" / "data" / "small-fleet.toml"
EXAMPLE = ROOT / "examples" / "fleet" / "tcb-recovery.toml"
#: The done-when limit of the example with --sample 4 on a 2-core machine.
EXAMPLE_LIMIT_S = 600.0


def conditions(when: str) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    load = os.getloadavg()
    return f"{when}: {now}, {os.cpu_count()} CPUs, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}"


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
        print(
            f"fleet {hosts} hosts (run_fleet, every host simulated), {workers} local worker(s): "
            f"{wall:.1f} s wall, {hosts / wall:.2f} hosts/s"
        )
    assert out[1][1] == out[2][1], "fleet.json differs between 1 and 2 workers"
    print(f"fleet speed-up 2 workers vs 1: {out[1][0] / out[2][0]:.2f}x (goal >= 1.7x); fleet.json identical")


def bench_explore(schedules: int, ray: bool) -> None:
    name, seed, strategy, steps = "success", 0, "random", 100_000
    shard = max(1, schedules // 4)
    t0 = time.perf_counter()
    seq = explore(svn_program(name), schedules, seed, strategy, max_steps=steps, pct_steps=DEFAULT_PCT_STEPS)
    wall = time.perf_counter() - t0
    print(f"explore {name} x{schedules}, sequential: {schedules / wall:.1f} schedules/s/core ({wall:.1f} s)")
    eng = LocalEngine(2)
    try:
        t0 = time.perf_counter()
        loc = explore_sharded(eng, name, schedules, seed, strategy, max_steps=steps, shard_size=shard)
        wall = time.perf_counter() - t0
    finally:
        eng.close()
    assert loc.steps_total == seq.steps_total
    print(
        f"explore sharded ({shard} per shard), local 2 workers: {schedules / wall / 2:.1f} "
        f"schedules/s/core ({wall:.1f} s wall, pool start-up included)"
    )
    if not ray:
        return
    t0 = time.perf_counter()
    reng = RayEngine(workers=2)
    start = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        on_ray = explore_sharded(reng, name, schedules, seed, strategy, max_steps=steps, shard_size=shard)
        wall = time.perf_counter() - t0
    finally:
        reng.close()
    assert on_ray.to_dict() == loc.to_dict()
    print(
        f"explore sharded ({shard} per shard), Ray 2 CPUs: {schedules / wall / 2:.1f} schedules/s/core "
        f"({wall:.1f} s wall; Ray start-up {start:.1f} s not included)"
    )


def bench_example() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "sgxsim", "fleet", str(EXAMPLE), "--sample", "4", "--workers", "2"]
        cmd += ["--out", str(out), "-q"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode not in (0, 1):  # 1: a gate halted the rollout (still a complete run)
            raise SystemExit(f"sgxsim fleet failed ({proc.returncode}): {proc.stderr.strip()}")
        data = json.loads((out / "fleet.json").read_text())
    status = data["status"]["overall"]
    assert len(status["day"]) == data["days"] and all(
        len(v) == data["days"] for v in status["fraction"].values()
    )
    final = ", ".join(f"{100 * v:.1f} % {b}" for b, v in data["status"]["final_day"].items())
    print(
        f"sgxsim fleet examples/fleet/tcb-recovery.toml --sample 4 --workers 2 (CLI, outputs written): "
        f"{wall:.0f} s wall ({wall / EXAMPLE_LIMIT_S:.2f} of the 10 min limit), exit {proc.returncode}; "
        f"{data['sampling']['host_runs_simulated']} host runs for {data['sampling']['hosts_represented']} "
        f"hosts; verdict {data['rollout']['verdict']}; per-day status over {data['days']} days; "
        f"last day {final}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=20)
    ap.add_argument("--schedules", type=int, default=64)
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray figures")
    ap.add_argument(
        "--no-example", action="store_true", help="skip the 10,000-host example with --sample 4 (minutes)"
    )
    args = ap.parse_args()
    print(conditions("start"))
    bench_fleet(args.hosts)
    bench_explore(args.schedules, not args.no_ray)
    if not args.no_example:
        bench_example()
    print(conditions("end"))


if __name__ == "__main__":
    main()
