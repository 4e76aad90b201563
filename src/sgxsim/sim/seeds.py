"""One scenario under each policy over many seeds: the spread of each comparison metric.

``sgxsim compare SCENARIO --seeds N`` runs every policy with seeds ``base, base + 1, ...,
base + N - 1`` (``base``: ``--seed`` or the scenario's; compare's own run of each policy is the
base seed's, the other seeds run on an engine, :mod:`sgxsim.sim.engine`), and reports for each
metric its median and its 5th and 95th percentiles (nearest rank over the seeds whose run has
the metric; a metric no run has stays n/a). Each run replays alone with
``sgxsim run SCENARIO --policy P --seed S``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sgxsim.sim.report import Scalar
from sgxsim.sim.scenario import Scenario

__all__ = ["SeedRun", "percentile", "run_seed", "spread_rows"]


@dataclass(frozen=True)
class SeedRun:
    """One run of the sweep: the scenario under ``policy`` with ``seed``."""

    scenario: Scenario
    policy: str
    seed: int


def run_seed(task: SeedRun) -> dict[str, Scalar]:
    """The run's metrics (top-level, so every engine can ship it to a worker)."""
    from sgxsim.sim.runner import run_scenario

    return dict(run_scenario(task.scenario, seed=task.seed, policy=task.policy).metrics)


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-quantile (0 < q <= 1) of non-empty ``values``."""
    ordered = sorted(values)
    return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]


def spread_rows(
    policies: Sequence[str],
    labels: Sequence[str],
    runs: Sequence[Sequence[dict[str, Scalar]]],
    keys: Sequence[str],
) -> list[dict[str, Scalar]]:
    """Comparison rows: per policy, each metric's median as ``key`` and ``key_p5`` / ``key_p95``."""
    rows: list[dict[str, Scalar]] = []
    for _, label, metrics in zip(policies, labels, runs, strict=True):
        row: dict[str, Scalar] = {"policy": label, "seeds": len(metrics)}
        for key in keys:
            vals = [float(m[key]) for m in metrics if isinstance(m.get(key), int | float)]  # type: ignore[arg-type]
            if not vals:
                row[key] = row[f"{key}_p5"] = row[f"{key}_p95"] = None
                continue
            as_int = all(isinstance(m.get(key), int) for m in metrics if m.get(key) is not None)
            for name, q in ((key, 0.5), (f"{key}_p5", 0.05), (f"{key}_p95", 0.95)):
                v = percentile(vals, q)
                row[name] = int(v) if as_int else v
        rows.append(row)
    return rows
