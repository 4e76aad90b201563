"""Running a fleet: one real host run per simulated host, wave by wave, with health gates.

:func:`run_fleet` walks the rollout's waves in order. For each wave it simulates the wave's hosts
(all of them, or ``sample`` per class) on an engine (:mod:`sgxsim.sim.engine`), each with
:func:`~sgxsim.sim.runner.run_scenario` on its (class, wave) scenario and its own seed
(:func:`~sgxsim.sim.fleet.model.host_seed`), then checks the health gates on the wave's hosts at
the end of its soak; a breach halts the rollout (later waves never start). The aggregate
(:class:`FleetResult`) is a pure function of the host outcomes, and every per-host figure comes
from the host's report.json: per-enclave unavailability and ECALL latency (``enclaves``), the
window metrics (``metrics``), event counts and the time to the new CPUSVN (``events``).

Models: a staged ("canary") fleet rollout of an SGX TCB-recovery microcode update.
Differs: the gates see the simulated hosts of a wave (under ``sample`` the estimate from them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sgxsim.kernel.policy import SvnPolicy
from sgxsim.sim.engine import LocalEngine, RayEngine
from sgxsim.sim.fleet.model import (
    BUCKETS,
    Stratum,
    day_status,
    distribution,
    host_seed,
    sample_hosts,
    strata,
    wilson,
)
from sgxsim.sim.fleet.spec import FleetSpec, HostClass, host_scenario, scenario_to_toml
from sgxsim.sim.report import ECALL_PHASES
from sgxsim.sim.runner.results import WINDOW_METRICS

__all__ = [
    "COUNTED_EVENTS",
    "WINDOW_KEYS",
    "FleetResult",
    "HostOutcome",
    "HostTask",
    "event_totals",
    "run_fleet",
    "run_host",
    "unavailability_stats",
    "window_stats",
]

#: The update result that means "nothing to do" (the boot-time EUPDATESVN on an up-to-date CPU).
_NO_UPDATE = "SGX_NO_UPDATE"


@dataclass(frozen=True)
class HostTask:
    """One host run: which host, its seed, its scenario file text (and the file's name for replay)."""

    index: int
    seed: int
    scenario_toml: str
    scenario_file: str


#: The report.json ``metrics`` the fleet aggregates per host: the runner's window metrics.
WINDOW_KEYS = WINDOW_METRICS
#: report.json ``events`` kinds the fleet counts per host (``note`` and ``boot`` are not counted).
COUNTED_EVENTS = (
    "microcode_load",
    "svn_update",
    "svn_update_trigger",
    "tcb_recovery",
    "drain",
    "restart",
    "kexec",
    "enclave_lost",
    "enclave_restart",
    "attestation",
)


@dataclass(frozen=True)
class HostOutcome:
    """What one host run gave, reduced to what the fleet aggregates (and the report's hash).

    Everything comes from the host's report.json: ``metrics`` (window metrics, downtime),
    ``enclaves`` (per-enclave ``unavailable_ns`` and ECALL latency), ``events`` (counts per kind,
    the time from the SVN-raising load to the new CPUSVN) and ``verdicts``.
    """

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
    #: ``unavailable_ns`` of each workload enclave (last successful ECALL before a loss to the
    #: first after, summed; to the end of the run if it never came back).
    enclave_unavailable_ns: tuple[int, ...] = ()
    #: :data:`WINDOW_KEYS` -> the run's value (summed over its SVN-update attempts).
    window: dict[str, int] = field(default_factory=dict)
    #: :data:`ECALL_PHASES` -> the worst p99 ECALL latency over the host's enclaves (None: no ECALL).
    ecall_p99_ns: dict[str, int | None] = field(default_factory=dict)
    #: :data:`COUNTED_EVENTS` kind -> events of that kind in the run.
    events: dict[str, int] = field(default_factory=dict)
    #: From the SVN-raising microcode load to the end of the first successful SVN update after it.
    time_to_new_cpusvn_ns: int | None = None

    @property
    def unavailable_ns(self) -> int:
        """The host's enclave unavailability: its enclaves' ``unavailable_ns``, summed."""
        return sum(self.enclave_unavailable_ns)


def _time_to_new_cpusvn(events: Sequence[Mapping[str, Any]]) -> int | None:
    load = next(
        (e for e in events if e["kind"] == "microcode_load" and e.get("extra", {}).get("svn_raising")), None
    )
    if load is None:
        return None
    for e in events:
        if e["kind"] == "svn_update" and e["outcome"] == "updated" and e["t_start_ns"] >= load["t_start_ns"]:
            return int(e["t_end_ns"]) - int(load["t_start_ns"])
    return None


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
    # Workload enclaves have ECALL latency rows; the VMs' vEPC rows do not.
    workload_rows = [e for e in report.enclaves if e.ecall_latency_ns]
    p99: dict[str, int | None] = {}
    for phase in ECALL_PHASES:
        vals = [row.ecall_latency_ns.get(phase, {}).get("p99") for row in workload_rows]
        ints = [int(v) for v in vals if isinstance(v, int | float) and not isinstance(v, bool)]
        p99[phase] = max(ints) if ints else None
    counts = dict.fromkeys(COUNTED_EVENTS, 0)
    for ev in report.events:
        if ev["kind"] in counts:
            counts[ev["kind"]] += 1
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
        enclave_unavailable_ns=tuple(int(e.unavailable_ns) for e in workload_rows),
        window={k: int(res.metrics.get(k) or 0) for k in WINDOW_KEYS},
        ecall_p99_ns=p99,
        events=counts,
        time_to_new_cpusvn_ns=_time_to_new_cpusvn(report.events),
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


def unavailability_stats(outs: Sequence[HostOutcome], weights: Mapping[int, float]) -> dict[str, Any]:
    """Enclave unavailability of ``outs``: per host (its enclaves' ``unavailable_ns`` summed:
    extrapolated ``sum_ns``, ``p50_ns``, ``p99_ns``, ``max_ns``) and per enclave (``enclaves``
    extrapolated, ``enclave_p50_ns``, ``enclave_p99_ns``, ``enclave_max_ns``), host weights applied."""
    ws = [weights[o.index] for o in outs]
    host = distribution([float(o.unavailable_ns) for o in outs], ws)
    ev = [float(v) for o in outs for v in o.enclave_unavailable_ns]
    ew = [weights[o.index] for o in outs for _ in o.enclave_unavailable_ns]
    encl = distribution(ev, ew)
    return {
        "hosts": round(sum(ws)),
        "simulated": len(outs),
        "sum_ns": host["sum"],
        "p50_ns": host["p50"],
        "p99_ns": host["p99"],
        "max_ns": host["max"],
        "enclaves": round(sum(ew)),
        "enclave_p50_ns": encl["p50"],
        "enclave_p99_ns": encl["p99"],
        "enclave_max_ns": encl["max"],
    }


def window_stats(outs: Sequence[HostOutcome], weights: Mapping[int, float]) -> dict[str, Any]:
    """The update window across ``outs`` (host weights applied): per :data:`WINDOW_KEYS` metric
    its distribution over hosts (``sum`` extrapolated to the hosts they stand for, ``p50``,
    ``p99``, ``max``); the worst ECALL p99 per host before / during / after the update (hosts
    with ECALLs in that phase); the time from the load to the new CPUSVN (hosts that reached it)."""
    out: dict[str, Any] = {"hosts": round(sum(weights[o.index] for o in outs)), "simulated": len(outs)}
    for key in WINDOW_KEYS:
        out[key] = distribution([float(o.window.get(key, 0)) for o in outs], [weights[o.index] for o in outs])
    for phase in ECALL_PHASES:
        have = [o for o in outs if o.ecall_p99_ns.get(phase) is not None]
        out[f"ecall_p99_{phase}_ns"] = distribution(
            [float(o.ecall_p99_ns[phase] or 0) for o in have], [weights[o.index] for o in have]
        )
    reached = [o for o in outs if o.time_to_new_cpusvn_ns is not None]
    out["time_to_new_cpusvn_ns"] = distribution(
        [float(o.time_to_new_cpusvn_ns or 0) for o in reached], [weights[o.index] for o in reached]
    )
    return out


def event_totals(outs: Sequence[HostOutcome], weights: Mapping[int, float]) -> dict[str, int]:
    """Report events per kind (:data:`COUNTED_EVENTS`) over ``outs``, extrapolated by host weight."""
    return {
        kind: round(sum(weights[o.index] * o.events.get(kind, 0) for o in outs)) for kind in COUNTED_EVENTS
    }


@dataclass
class WaveStats:
    """A wave's hosts and the health-gate figures measured on them (estimates under sampling)."""

    wave: int
    day: int
    gate_day: int
    hosts: int
    simulated: int
    failed_updates_percent: float
    kernel_warns: int
    unavailability_p99_ns: int | None
    refused_percent: float
    unavailability_p50_ns: int | None = None
    enclave_unavailability_p99_ns: int | None = None
    locked_window_p99_ns: int | None = None
    ioctls_refused_in_window: int = 0
    enclaves_lost: int = 0
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

    def _outs(self, wave: int | None) -> list[HostOutcome]:
        return [self.outcomes[i] for i in sorted(self.outcomes) if wave is None or self.host_wave[i] == wave]

    def unavailability(self, wave: int | None = None) -> dict[str, Any]:
        """Enclave unavailability per patched host and per enclave (:func:`unavailability_stats`)."""
        return unavailability_stats(self._outs(wave), self.weights)

    def update_window(self, wave: int | None = None) -> dict[str, Any]:
        """The update window per patched host (:func:`window_stats`)."""
        return window_stats(self._outs(wave), self.weights)

    def events(self, wave: int | None = None) -> dict[str, int]:
        """Report events per kind over the patched hosts, extrapolated (:func:`event_totals`)."""
        return event_totals(self._outs(wave), self.weights)

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
    un = unavailability_stats(outs, weights)
    win = window_stats(outs, weights)
    st = WaveStats(
        wave=wave,
        day=w.day,
        gate_day=w.day + w.soak_days,
        hosts=round(total),
        simulated=len(outs),
        failed_updates_percent=round(100.0 * failed / total, 3) if total else 0.0,
        kernel_warns=sum(o.warnings for o in outs),
        unavailability_p99_ns=un["p99_ns"],
        refused_percent=round(100.0 * refused / total, 3) if total else 0.0,
        unavailability_p50_ns=un["p50_ns"],
        enclave_unavailability_p99_ns=un["enclave_p99_ns"],
        locked_window_p99_ns=win["locked_window_ns"]["p99"],
        ioctls_refused_in_window=win["ioctls_refused_in_window"]["sum"] or 0,
        enclaves_lost=event_totals(outs, weights)["enclave_lost"],
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
