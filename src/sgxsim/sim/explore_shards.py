"""Exploration sharded over an engine: schedules split by (seed, index), merged back in index order.

Schedule ``i`` of an exploration seeded ``s`` depends only on ``(s, i)``
(:func:`~sgxsim.sim.explore.schedule_seed`), so a shard is simply schedules ``first ..
first + count - 1`` explored alone (``explore(..., first_index=first)``) in a worker that builds
the builtin program by name. Shards have a fixed size (never derived from the worker count), and
results are merged in index order, so the merged result is the same on every engine and with
any number of workers. A violation carries its schedule index, seed, strategy and choices: it
replays exactly on one machine with ``sgxsim explore --replay``.

Differs from one sequential :func:`~sgxsim.sim.explore.explore`: PCT's step estimate is fixed
(``pct_steps``, default :data:`~sgxsim.sim.explore.DEFAULT_PCT_STEPS`) instead of the longest
schedule seen so far, so that shards need nothing from each other; with ``stop_on_first`` each
shard stops at its own first violation and the merge keeps the lowest-index one (later shards
may have run schedules past it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sgxsim.sim.engine import LocalEngine, RayEngine
from sgxsim.sim.explore import DEFAULT_PCT_STEPS, ExploreResult, explore

__all__ = ["DEFAULT_SHARD_SIZE", "ExploreShard", "explore_sharded", "run_shard"]

#: Schedules per shard (a task): big enough to amortize shipping, small enough to balance.
DEFAULT_SHARD_SIZE = 32


@dataclass(frozen=True)
class ExploreShard:
    """Schedules ``first .. first + count - 1`` of builtin program ``program`` (by name)."""

    program: str
    seed: int
    strategy: str
    first: int
    count: int
    max_steps: int
    pct_steps: int
    stop_on_first: bool


def run_shard(shard: ExploreShard) -> ExploreResult:
    """Explore one shard (top-level, so every engine can ship it to a worker)."""
    from sgxsim.sim.svn import svn_program

    return explore(
        svn_program(shard.program),
        shard.count,
        shard.seed,
        shard.strategy,
        max_steps=shard.max_steps,
        pct_steps=shard.pct_steps,
        stop_on_first=shard.stop_on_first,
        first_index=shard.first,
    )


def explore_sharded(
    engine: LocalEngine | RayEngine,
    program: str,
    schedules: int,
    seed: int,
    strategy: str,
    *,
    max_steps: int,
    pct_steps: int | None = None,
    stop_on_first: bool = True,
    shard_size: int = DEFAULT_SHARD_SIZE,
    progress: Callable[[int, int], None] | None = None,
) -> ExploreResult:
    """Explore ``schedules`` schedules of ``program`` in shards of ``shard_size`` on ``engine``.

    ``progress(done, total)`` counts finished schedules (shard by shard). Outcomes: the merged
    :class:`~sgxsim.sim.explore.ExploreResult` (violations in schedule order).
    """
    pct = pct_steps if pct_steps is not None else DEFAULT_PCT_STEPS
    shards = [
        ExploreShard(
            program, seed, strategy, first, min(shard_size, schedules - first), max_steps, pct, stop_on_first
        )
        for first in range(0, schedules, shard_size)
    ]

    def tick(done: int, total: int) -> None:
        if progress is not None:
            progress(min(done * shard_size, schedules), schedules)

    parts = engine.map(run_shard, shards, tick)
    violations = sorted((v for p in parts for v in p.violations), key=lambda v: v.schedule)
    if stop_on_first:
        violations = violations[:1]
    counts: dict[str, int] = {}
    for p in parts:
        for name, n in p.check_counts.items():
            counts[name] = counts.get(name, 0) + n
    first = parts[0]
    return ExploreResult(
        program=first.program,
        seed=seed,
        strategy=strategy,
        pct_depth=first.pct_depth,
        max_steps=max_steps,
        check_every=first.check_every,
        schedules_requested=schedules,
        schedules_run=sum(p.schedules_run for p in parts),
        steps_total=sum(p.steps_total for p in parts),
        max_schedule_steps=max(p.max_schedule_steps for p in parts),
        completed=sum(p.completed for p in parts),
        budget_exhausted=False,
        violations=tuple(violations),
        check_counts=dict(sorted(counts.items())),
    )
