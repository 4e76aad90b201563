"""Start-up benchmark (run by hand: ``python benchmarks/bench_startup.py [--runs N]``).

Measures host wall time of a fresh ``python -m sgxsim`` process for ``--help``, for one TAB of
bash completion (the command names) and for ``sgxsim validate`` of an example, as a shell would
start it. Prints the median and the maximum over ``--runs`` runs and the goal (< 0.3 s for
``--help`` and completion, issue 12). The interpreter's own start-up (``python -c pass``) is
measured beside them, so the figure can be read against the machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 0.3


def _time(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system) of one run of ``args``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=15)
    ns = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    complete = {**env, "_SGXSIM_COMPLETE": "bash_complete", "COMP_WORDS": "sgxsim ", "COMP_CWORD": "1"}
    cases = [
        ("python -c pass", [sys.executable, "-c", "pass"], env),
        ("sgxsim --help", [sys.executable, "-m", "sgxsim", "--help"], env),
        ("sgxsim <TAB>", [sys.executable, "-m", "sgxsim"], complete),
        (
            "sgxsim validate examples/kexec.toml",
            [sys.executable, "-m", "sgxsim", "validate", str(ROOT / "examples" / "kexec.toml")],
            env,
        ),
    ]
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; {ns.runs} runs each")
    print(f"{'case':40} {'wall med':>9} {'wall max':>9} {'CPU med':>9}")
    for label, args, e in cases:
        _time(args, e)  # warm the page cache
        runs = [_time(args, e) for _ in range(ns.runs)]
        wall = [w for w, _ in runs]
        cpu = [c for _, c in runs]
        verdict = ""
        if label in ("sgxsim --help", "sgxsim <TAB>"):
            verdict = "ok" if statistics.median(wall) < GOAL_S else f"wall over the {GOAL_S} s goal"
        med_wall, med_cpu = statistics.median(wall), statistics.median(cpu)
        print(f"{label:40} {med_wall:9.3f} {max(wall):9.3f} {med_cpu:9.3f}  {verdict}")


if __name__ == "__main__":
    main()
