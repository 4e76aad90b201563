"""The fleet's arithmetic: host seeds, wave membership, sampling, TCB status per day, Wilson intervals.

Everything here is a pure function of the fleet file, the fleet seed and host outcomes, so a fleet
result is the same on any engine and with any number of workers.

Models: Intel's TCB recovery as a relying party sees it. A TCB Info update (``early`` on
publication, ``standard`` weeks later; Intel PCS ``update=`` parameter) raises the
tcbEvaluationDataNumber: from the day the relying party follows it, a platform still at the old
late-microcode SVN is ``OutOfDate`` (accepted during the relying party's grace period, refused
after) and one at the new SVN has the new level's status (``UpToDate``, or
``SWHardeningNeeded`` which the relying party may refuse).
Differs: every host of a wave applies the patch on the wave's day; a host's CPUSVN afterwards is
what its simulated run ended with, and stays so for the rest of the fleet horizon (nobody drains
or reboots it later).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

from sgxsim.sim.fleet.spec import FleetSpec, IntelSpec, RelyingPartyPolicy

__all__ = [
    "BUCKETS",
    "Stratum",
    "day_status",
    "distribution",
    "host_seed",
    "sample_hosts",
    "strata",
    "weighted_quantile",
    "wilson",
]

#: What a relying party makes of a host on a day: its TCB status when accepted, else "refused".
BUCKETS = ("UpToDate", "SWHardeningNeeded", "OutOfDate", "refused")
#: z of a two-sided 95 % interval.
Z95 = 1.959963984540054


def host_seed(fleet_seed: int, index: int) -> int:
    """The run seed of host ``index``: the first 8 bytes (big-endian) of
    SHA-256(``"sgxsim-fleet/<fleet seed>/<index>"``), top bit cleared (a seed is < 2**63)."""
    digest = hashlib.sha256(f"sgxsim-fleet/{fleet_seed}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def _sample_key(fleet_seed: int, index: int) -> bytes:
    return hashlib.sha256(f"sgxsim-fleet-sample/{fleet_seed}/{index}".encode()).digest()


@dataclass(frozen=True)
class Stratum:
    """The hosts of one class in one wave (``wave = None``: never in any wave)."""

    cls: str
    wave: int | None
    hosts: tuple[int, ...]  # global host indices


def strata(fleet: FleetSpec) -> list[Stratum]:
    """Every (class, wave) group of hosts, plus each class's hosts that no wave reaches.

    A class's hosts (global indices in file order) are taken by waves in order: a ``percent``
    wave takes the class's hosts up to ``floor(count * cumulative percent / 100)``; a ``count``
    wave the next ``count`` hosts.
    """
    out: list[Stratum] = []
    first = 0
    for hc in fleet.classes:
        taken = 0
        cum = 0.0
        for wi, w in enumerate(fleet.rollout.waves):
            if hc.name not in w.classes:
                continue
            if w.percent is not None:
                cum += w.percent
                end = hc.count if cum >= 100.0 - 1e-9 else math.floor(hc.count * cum / 100.0 + 1e-9)
            else:
                end = min(hc.count, taken + (w.count or 0))
                cum = 100.0 * end / hc.count
            end = max(end, taken)
            out.append(Stratum(hc.name, wi, tuple(range(first + taken, first + end))))
            taken = end
        out.append(Stratum(hc.name, None, tuple(range(first + taken, first + hc.count))))
        first += hc.count
    return out


def sample_hosts(fleet_seed: int, hosts: Sequence[int], k: int | None) -> tuple[int, ...]:
    """The ``k`` hosts of a stratum to simulate (all when ``k`` is None): those with the smallest
    SHA-256(``"sgxsim-fleet-sample/<fleet seed>/<index>"``), in index order."""
    if k is None or k >= len(hosts):
        return tuple(hosts)
    return tuple(sorted(sorted(hosts, key=lambda i: _sample_key(fleet_seed, i))[:k]))


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95 % by default); (0, 1) when n = 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def day_status(day: int, new_svn_since: int | None, intel: IntelSpec, rp: RelyingPartyPolicy) -> str:
    """The bucket (:data:`BUCKETS`) of a host on ``day``; ``new_svn_since`` is the day it reached
    the new CPUSVN (None: never)."""
    flip = rp.flip_day(intel)
    if day < flip:
        return "UpToDate"  # the relying party still uses the old TCB Info: the old level is current
    if new_svn_since is not None and new_svn_since <= day:
        status = intel.new_level_status
        if status == "SWHardeningNeeded" and not rp.accept_sw_hardening_needed:
            return "refused"
        return status
    return "OutOfDate" if day < flip + rp.grace_days else "refused"


def weighted_quantile(values: Sequence[float], weights: Sequence[float], q: float) -> float | None:
    """The smallest value whose cumulative weight reaches ``q`` of the total (None if empty)."""
    pairs = sorted(zip(values, weights, strict=True))
    total = sum(w for _, w in pairs)
    if not pairs or total <= 0:
        return None
    acc = 0.0
    for v, w in pairs:
        acc += w
        if acc >= q * total - 1e-9:
            return v
    return pairs[-1][0]


def distribution(values: Sequence[float], weights: Sequence[float]) -> dict[str, int | None]:
    """``sum`` (each value times its weight: the extrapolated fleet total), weighted ``p50`` and
    ``p99``, and ``max`` (over the values), as integers; None where there are no values."""
    if not values:
        return {"sum": None, "p50": None, "p99": None, "max": None}
    p50 = weighted_quantile(values, weights, 0.5)
    p99 = weighted_quantile(values, weights, 0.99)
    return {
        "sum": round(sum(v * w for v, w in zip(values, weights, strict=True))),
        "p50": None if p50 is None else int(p50),
        "p99": None if p99 is None else int(p99),
        "max": int(max(values)),
    }
