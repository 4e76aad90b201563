"""Running a fleet: one real host run per simulated host, wave by wave, with health gates.

:func:`run_fleet` walks the rollout's waves in order. For each wave it simulates the wave's hosts
(all of them, or ``sample`` per class) on an engine (:mod:`sgxsim.sim.engine`), each with
:func:`~sgxsim.sim.runner.run_scenario` on its (class, wave) scenario and its own seed
(:func:`~sgxsim.sim.fleet.model.host_seed`), then checks the health gates on the wave's hosts at
the end of its soak; a breach halts the rollout (later waves never start). The aggregate
(:class:`FleetResult`) is a pure function of the host outcomes.

Models: a staged ("canary") fleet rollout of an SGX TCB-recovery microcode update.
Differs: the gates see the simulated hosts of a wave (under ``sample`` the estimate from them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sgxsim.kernel.policy import SvnPolicy
from sgxsim.sim.engine import LocalEngine, RayEngine
from sgxsim.sim.fleet.model import (
    BUCKETS,
    Stratum,
    day_status,
    host_seed,
    sample_hosts,
    strata,
    weighted_quantile,
    wilson,
)
from sgxsim.sim.fleet.spec import FleetSpec, HostClass, host_scenario, scenario_to_toml

__all__ = ["FleetResult", "HostOutcome", "HostTask", "run_fleet", "run_host"]

#: The update result that means "nothing to do" (the boot-time EUPDATESVN on an up-to-date CPU).
_NO_UPDATE = "SGX_NO_UPDATE"


@dataclass(frozen=True)
class HostTask:
    """One host run: which host, its seed, its scenario file text (and the file's name for replay)."""

    index: int
    seed: int
    scenario_toml: str
    scenario_file: str


@dataclass(frozen=True)
class HostOutcome:
    """What one host run gave, reduced to what the fleet aggregates (and the report's hash)."""

    index: int
    seed: int
    report_sha256: str
    reached_new_svn: bool
    attempts: int
    last_result: str | None
    warnings: int
    downtime_ns: int
    enclaves_destroyed: int
    verdicts_refused: int
    last_verdict_refused: bool
    final_cpusvn: str
    error: str | None = None


def run_host(task: HostTask) -> HostOutcome:
    """Run one host (top-level, so every engine can ship it to a worker).

    Outcomes: a :class:`HostOutcome`; a run that raises is an outcome with ``error`` set (the
    fleet reports it as a failed update), never an exception.
    """
    from sgxsim.sim.runner import run_scenario
    from sgxsim.sim.scenario import parse_scenario

    try:
        res = run_scenario(parse_scenario(task.scenario_toml, task.scenario_file), seed=task.seed)
    except Exception as err:  # a model bug on one host must not take the fleet down
        return HostOutcome(task.index, task.seed, "", False, 0, None, 0, 0, 0, 0, True, "", repr(err))
    report = res.report
    attempts = [u for u in res.updates if u["result"] != _NO_UPDATE]
    verdicts = report.verdicts
    return HostOutcome(
        index=task.index,
        seed=task.seed,
        report_sha256=hashlib.sha256(report.to_json().encode("utf-8")).hexdigest(),
        reached_new_svn=bool(res.timeline.cpusvn_steps),
        attempts=len(attempts),
        last_result=str(attempts[-1]["result"]) if attempts else None,
        warnings=int(report.kernel_warnings),
        downtime_ns=int(res.metrics.get("enclave_downtime_ns") or 0),
        enclaves_destroyed=int(res.metrics.get("enclaves_destroyed") or 0),
        verdicts_refused=sum(1 for v in verdicts if not v.accepted),
        last_verdict_refused=bool(verdicts) and not verdicts[-1].accepted,
        final_cpusvn=str(report.machine.get("final_cpusvn", "")),
    )


def why_not_reached(hc: HostClass, out: HostOutcome) -> str:
    """Why a patched host's run ended without the new CPUSVN."""
    if out.error is not None:
        return f"the host run failed: {out.error}"
    if out.attempts:
        return f"EUPDATESVN did not raise CPUSVN (last result {out.last_result})"
    if not hc.base.machine.eupdatesvn:
        return "the CPU does not enumerate EUPDATESVN: CPUSVN changes only at the next reboot"
    if hc.policy is SvnPolicy.NONE:
        return "the kernel has no EUPDATESVN support: CPUSVN changes only at the next reboot"
    if hc.policy is SvnPolicy.LINUX_6_19_ON_OPEN:
        return (
            "EUPDATESVN runs at the first open with an empty EPC, and the host's enclaves never all "
            "exited: it stays at the old CPUSVN until someone drains it"
        )
    if hc.policy is SvnPolicy.EXPLICIT_TRIGGER:
        return "nobody wrote the update trigger (sgx.update_svn) after the load"
    return "no SVN update ran after the load"


@dataclass
class WaveStats:
    """A wave's hosts and the health-gate figures measured on them."""

    wave: int
    day: int
    gate_day: int
    hosts: int
    simulated: int
    failed_updates_percent: float
    kernel_warns: int
    unavailability_p99_ns: int | None
    refused_percent: float
    breached: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass
class FleetResult:
    """A fleet run: per-host outcomes with their weights, wave statistics, the halt verdict."""

    fleet: FleetSpec
    policy: str | None
    sample: int | None
    engine: str
    outcomes: dict[int, HostOutcome]
    weights: dict[int, float]
    host_wave: dict[int, int]
    host_class: dict[int, str]
    scenario_files: dict[tuple[str, int], str]
    waves: list[WaveStats]
    halted: WaveStats | None
    groups: list[Stratum]

    # ------------------------------------------------------------------ derived figures

    def update_day(self, index: int) -> int | None:
        wave = self.host_wave.get(index)
        return None if wave is None else self.fleet.rollout.waves[wave].day

    def new_svn_since(self, index: int) -> int | None:
        out = self.outcomes.get(index)
        return self.update_day(index) if out is not None and out.reached_new_svn else None

    def daily(self, cls: str | None = None) -> dict[str, Any]:
        """Per day: the weighted fraction of hosts in each bucket (and 95 % Wilson bounds when sampled)."""
        days = list(range(self.fleet.days))
        fractions: dict[str, list[float]] = {b: [] for b in BUCKETS}
        lows: dict[str, list[float]] = {b: [] for b in BUCKETS}
        highs: dict[str, list[float]] = {b: [] for b in BUCKETS}
        groups = [g for g in self.groups if cls is None or g.cls == cls]
        total = sum(len(g.hosts) for g in groups)
        for day in days:
            frac = dict.fromkeys(BUCKETS, 0.0)
            lo = dict.fromkeys(BUCKETS, 0.0)
            hi = dict.fromkeys(BUCKETS, 0.0)
            for g in groups:
                n = len(g.hosts)
                if not n:
                    continue
                sim = [i for i in g.hosts if i in self.outcomes] if g.wave is not None else list(g.hosts)
                counts = dict.fromkeys(BUCKETS, 0)
                for i in sim:
                    since = self.new_svn_since(i) if g.wave is not None else None
                    counts[day_status(day, since, self.fleet.intel, self.fleet.relying_party)] += 1
                exact = len(sim) == n
                for b in BUCKETS:
                    p = counts[b] / len(sim) if sim else 0.0
                    frac[b] += n * p
                    a, z = (p, p) if exact else wilson(counts[b], len(sim))
                    lo[b] += n * a
                    hi[b] += n * z
            for b in BUCKETS:
                fractions[b].append(round(frac[b] / total, 6) if total else 0.0)
                lows[b].append(round(lo[b] / total, 6) if total else 0.0)
                highs[b].append(round(hi[b] / total, 6) if total else 0.0)
        out: dict[str, Any] = {"day": days, "fraction": fractions}
        if self.sample is not None:
            out["wilson95_low"] = lows
            out["wilson95_high"] = highs
        return out

    def unavailability(self, wave: int | None = None) -> dict[str, Any]:
        """Enclave unavailability per patched host: extrapolated sum, p50, p99 (ns)."""
        idx = [i for i in self.outcomes if wave is None or self.host_wave[i] == wave]
        vals = [float(self.outcomes[i].downtime_ns) for i in idx]
        ws = [self.weights[i] for i in idx]
        p50 = weighted_quantile(vals, ws, 0.5)
        p99 = weighted_quantile(vals, ws, 0.99)
        return {
            "hosts": round(sum(ws)),
            "simulated": len(idx),
            "sum_ns": round(sum(v * w for v, w in zip(vals, ws, strict=True))),
            "p50_ns": None if p50 is None else int(p50),
            "p99_ns": None if p99 is None else int(p99),
            "max_ns": int(max(vals)) if vals else None,
        }

    def never_reached(self) -> list[dict[str, Any]]:
        """Hosts without the new CPUSVN at the horizon, grouped by class and reason."""
        classes = {c.name: c for c in self.fleet.classes}
        rows: dict[tuple[str, str], list[float]] = {}
        for g in self.groups:
            if g.wave is None:
                reason = "not patched: no wave reached it"
                if self.halted is not None and any(
                    g.cls in w.classes for w in self.fleet.rollout.waves[self.halted.wave + 1 :]
                ):
                    reason = f"not patched: the rollout halted after wave {self.halted.wave}"
                if g.hosts:
                    r = rows.setdefault((g.cls, reason), [0.0, 0.0])
                    r[0] += len(g.hosts)
                continue
            for i in g.hosts:
                out = self.outcomes.get(i)
                if out is None or out.reached_new_svn:
                    continue
                r = rows.setdefault((g.cls, why_not_reached(classes[g.cls], out)), [0.0, 0.0])
                r[0] += self.weights[i]
                r[1] += 1
        return [
            {"class": c, "reason": reason, "hosts": round(v[0]), "simulated": int(v[1])}
            for (c, reason), v in sorted(rows.items())
        ]


Progress = Callable[[int, int], None]


def _wave_stats(
    fleet: FleetSpec, wave: int, outs: Sequence[HostOutcome], weights: dict[int, float]
) -> WaveStats:
    w = fleet.rollout.waves[wave]
    total = sum(weights[o.index] for o in outs)
    failed = sum(weights[o.index] for o in outs if not o.reached_new_svn)
    refused = sum(weights[o.index] for o in outs if o.last_verdict_refused)
    p99 = weighted_quantile([float(o.downtime_ns) for o in outs], [weights[o.index] for o in outs], 0.99)
    st = WaveStats(
        wave=wave,
        day=w.day,
        gate_day=w.day + w.soak_days,
        hosts=round(total),
        simulated=len(outs),
        failed_updates_percent=round(100.0 * failed / total, 3) if total else 0.0,
        kernel_warns=sum(o.warnings for o in outs),
        unavailability_p99_ns=None if p99 is None else int(p99),
        refused_percent=round(100.0 * refused / total, 3) if total else 0.0,
    )
    g = fleet.rollout.gates
    checks: list[tuple[str, float | None, float | None]] = [
        ("max_failed_updates_percent", st.failed_updates_percent, g.max_failed_updates_percent),
        ("max_kernel_warns", st.kernel_warns, g.max_kernel_warns),
        ("max_unavailability_p99", st.unavailability_p99_ns, g.max_unavailability_p99_ns),
        ("max_refused_percent", st.refused_percent, g.max_refused_percent),
    ]
    st.breached = [
        f"{name}: {value:g} > {limit:g}"
        for name, value, limit in checks
        if value is not None and limit is not None and value > limit
    ]
    return st


def plan_tasks(
    fleet: FleetSpec, sample: int | None
) -> tuple[list[Stratum], dict[tuple[str, int], str], dict[int, list[HostTask]], dict[int, float]]:
    """The strata, the (class, wave) scenario files, each wave's host tasks and each host's weight."""
    groups = strata(fleet)
    classes = {c.name: c for c in fleet.classes}
    files: dict[tuple[str, int], str] = {}
    tasks: dict[int, list[HostTask]] = {}
    weights: dict[int, float] = {}
    for g in groups:
        if g.wave is None or not g.hosts:
            continue
        key = (g.cls, g.wave)
        name = f"scenarios/{g.cls}-wave{g.wave}.toml"
        files[key] = scenario_to_toml(host_scenario(fleet, classes[g.cls], g.wave))
        chosen = sample_hosts(fleet.seed, g.hosts, sample)
        for i in chosen:
            weights[i] = len(g.hosts) / len(chosen)
            tasks.setdefault(g.wave, []).append(HostTask(i, host_seed(fleet.seed, i), files[key], name))
    return groups, files, tasks, weights


def run_fleet(
    fleet: FleetSpec,
    engine: LocalEngine | RayEngine,
    *,
    sample: int | None = None,
    policy: SvnPolicy | None = None,
    progress: Progress | None = None,
) -> FleetResult:
    """Roll the patch out over ``fleet`` (every class on ``policy`` if given); see the module docstring.

    ``progress(done, total)`` counts finished host runs out of all the waves' host runs (a halt
    finishes early). Outcomes: a :class:`FleetResult`.
    """
    if policy is not None:
        fleet = fleet.with_policy(policy)
    groups, files, tasks, weights = plan_tasks(fleet, sample)
    total = sum(len(t) for t in tasks.values())
    outcomes: dict[int, HostOutcome] = {}
    host_wave: dict[int, int] = {}
    waves: list[WaveStats] = []
    halted: WaveStats | None = None
    done = 0
    for wi in range(len(fleet.rollout.waves)):
        batch = tasks.get(wi, [])
        base = done

        def tick(n: int, _t: int, base: int = base) -> None:
            if progress is not None:
                progress(base + n, total)

        outs = engine.map(run_host, batch, tick) if batch else []
        done += len(batch)
        for o in outs:
            outcomes[o.index] = o
        for g in groups:
            if g.wave == wi:
                for i in g.hosts:
                    host_wave[i] = wi
        st = _wave_stats(fleet, wi, outs, weights)
        waves.append(st)
        if st.breached:
            halted = st
            break
    if halted is not None:
        # Hosts of the waves that never started are unpatched: fold them into their class's rest.
        keep = {i for i in host_wave if host_wave[i] <= halted.wave}
        host_wave = {i: w for i, w in host_wave.items() if i in keep}
        merged: list[Stratum] = []
        for g in groups:
            if g.wave is not None and g.wave > halted.wave:
                merged.append(Stratum(g.cls, None, g.hosts))
            else:
                merged.append(g)
        groups = merged
        weights = {i: w for i, w in weights.items() if i in outcomes}
    if progress is not None:
        progress(total, total)
    return FleetResult(
        fleet=fleet,
        policy=None if policy is None else policy.value,
        sample=sample,
        engine=engine.name,
        outcomes=outcomes,
        weights=weights,
        host_wave=host_wave,
        host_class={i: g.cls for g in groups for i in g.hosts},
        scenario_files={k: v for k, v in files.items() if k[1] in {w.wave for w in waves}},
        waves=waves,
        halted=halted,
        groups=groups,
    )
