"""Scenario-runner benchmarks (run by hand: ``python benchmarks/bench_run.py [--gib N] [--skip-large]``).

Host wall time against simulated time:

1. ``sgxsim demo``'s scenario (the test suite runs it; the goal is < 15 s, the limit 30 s on 2 cores);
2. ``examples/large-epc-512gib.toml``: one 512 GiB EPC section fully in use by 16 unmeasured
   enclaves that need a few thousand pages more than it holds (the reclaimer swaps those out),
   then a late load under RFC v2 that zaps it all. ``--gib N`` scales the section and the
   enclaves' image size by N/512 (same count, the overcommit scales too) for a quicker run.

Prints one row per case: wall seconds, simulated seconds, simulated/wall ratio, EPC pages, the
peak per enclave and the sum of the peaks, pages swapped out (EWB) and zapped, and the peak RSS
of this process. ``sgxsim run examples/large-epc-512gib.toml`` under ``/usr/bin/time -v`` measures
the same run end to end (imports, report and outputs included).
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import sys
import time
from pathlib import Path

from sgxsim.sim.demo import demo_scenario
from sgxsim.sim.runner import Runner, RunProgress
from sgxsim.sim.scenario import EpcSectionSpec, Scenario, load_scenario

ROOT = Path(__file__).resolve().parents[1]


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)


def bench(label: str, scenario: Scenario) -> None:
    last = [0.0]

    def progress(p: RunProgress) -> None:
        t = time.perf_counter()
        if t - last[0] > 10:
            last[0] = t
            print(f"    ... {p.describe()}", flush=True)

    t0 = time.perf_counter()
    runner = Runner(scenario, progress=progress)
    t1 = time.perf_counter()
    res = runner.run()
    t2 = time.perf_counter()
    sim = res.end_ns / 1e9
    wall = t2 - t0
    peak = max((p for s in res.timeline.epc_pages.values() for _, p in s), default=0)
    total_peak = sum(max((p for _, p in s), default=0) for s in res.timeline.epc_pages.values())
    swapped = runner.kernel.stats.get("pages_reclaimed", 0)
    print(
        f"[{label}] wall {wall:.2f} s (setup {t1 - t0:.2f} s, run {t2 - t1:.2f} s), simulated {sim:.3f} s, "
        f"simulated/wall {sim / wall:.3f}; EPC {runner.machine.epc.npages:,} pages, peak per enclave "
        f"{peak:,}, sum of peaks {total_peak:,}, swapped out {swapped:,}, "
        f"zapped {res.metrics['epc_pages_zapped']:,}; peak RSS {_rss_gib():.2f} GiB",
        flush=True,
    )


def large(gib: int) -> Scenario:
    """The 512 GiB example, or with EPC and image sizes scaled by ``gib / 512`` (same count)."""
    s = load_scenario(ROOT / "examples" / "large-epc-512gib.toml")
    if gib == 512:
        return s
    if gib < 8 or gib > 512 or 512 % gib:
        sys.exit("--gib must be a power of two from 8 to 512")
    machine = dataclasses.replace(s.machine, epc_sections=(EpcSectionSpec(gib << 30, 0),))
    workloads = tuple(dataclasses.replace(w, image_size=w.image_size * gib // 512) for w in s.workloads)
    return dataclasses.replace(s, name=f"large-epc-{gib}gib", machine=machine, workloads=workloads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=int, default=512, help="EPC size of the large case (default 512)")
    ap.add_argument("--skip-large", action="store_true", help="only the demo")
    args = ap.parse_args()
    bench("demo", demo_scenario())
    if not args.skip_large:
        bench(f"{args.gib} GiB EPC fully used", large(args.gib))


if __name__ == "__main__":
    main()
