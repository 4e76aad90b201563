"""``compare --seeds``: p5 / median / p95 are nearest-rank percentiles of the per-seed values."""

from __future__ import annotations

import random

from sgxsim.sim.report import Scalar
from sgxsim.sim.seeds import percentile, spread_rows


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in random.Random(3).sample(range(1000), 20)]
    ordered = sorted(values)
    # Over 20 seeds (``compare demo --seeds 20``): p5 is rank ceil(1) = 1, the median rank 10,
    # p95 rank 19 (the second largest).
    assert percentile(values, 0.05) == ordered[0]
    assert percentile(values, 0.5) == ordered[9]
    assert percentile(values, 0.95) == ordered[18]
    assert percentile(values[:3], 0.05) == min(values[:3]) and percentile(values[:3], 0.95) == max(values[:3])
    assert percentile([7.0], 0.05) == percentile([7.0], 0.95) == 7.0


def test_spread_rows_per_policy_and_metric() -> None:
    rng = random.Random(5)
    runs: list[list[dict[str, Scalar]]] = []
    for _ in range(2):
        runs.append(
            [{"downtime_ns": rng.randrange(10**9), "ratio": rng.random(), "never": None} for _ in range(20)]
        )
    runs[1][4]["downtime_ns"] = None  # a seed whose run lacks the metric: the rest count
    rows = spread_rows(["a", "b"], ["A", "B (note)"], runs, ["downtime_ns", "ratio", "never"])
    assert [(r["policy"], r["seeds"]) for r in rows] == [("A", 20), ("B (note)", 20)]
    for row, metrics in zip(rows, runs, strict=True):
        for key in ("downtime_ns", "ratio"):
            vals = sorted(m[key] for m in metrics if m[key] is not None)  # type: ignore[type-var]
            n = len(vals)
            # nearest rank: the ceil(q * n)-th smallest
            want = {f"{key}_p5": vals[-(-5 * n // 100) - 1], key: vals[-(-n // 2) - 1]}
            want[f"{key}_p95"] = vals[-(-95 * n // 100) - 1]
            assert {k: row[k] for k in want} == want
        assert isinstance(row["downtime_ns"], int) and isinstance(row["ratio"], float)
        assert row["never"] is row["never_p5"] is row["never_p95"] is None
    # 19 values left for policy b: p95 is rank ceil(18.05) = 19, the largest; the median rank 10.
    left = sorted(m["downtime_ns"] for m in runs[1] if m["downtime_ns"] is not None)
    assert len(left) == 19 and rows[1]["downtime_ns_p95"] == left[-1] and rows[1]["downtime_ns"] == left[9]
