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
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 0.3


def _time(args: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


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
    print(f"{'case':40} {'median':>8} {'max':>8}  (runs: {ns.runs})")
    for label, args, e in cases:
        _time(args, e)  # warm the page cache
        times = [_time(args, e) for _ in range(ns.runs)]
        verdict = ""
        if label in ("sgxsim --help", "sgxsim <TAB>"):
            verdict = "ok" if statistics.median(times) < GOAL_S else f"over the {GOAL_S} s goal"
        print(f"{label:40} {statistics.median(times):8.3f} {max(times):8.3f}  {verdict}")


if __name__ == "__main__":
    main()
