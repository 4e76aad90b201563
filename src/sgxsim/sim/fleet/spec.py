"""Fleet files: host classes, a microcode rollout in waves, Intel's TCB recovery, relying parties.

:func:`parse_fleet` validates every key with its type and range and raises
:class:`~sgxsim.errors.ScenarioError` naming the key path (``class[2].policy``,
``rollout.wave[1].classes[0]``) and the line, as scenario files do; a class's scenario file is
validated too, and its error names the class. docs/fleet.md documents every key and
:func:`fleet_schema` gives the same rules as a JSON Schema.

The host scenario of a (class, wave) is the class's machine, workloads and VMs with the
rollout's patch and the fleet's events (:func:`host_scenario`); :func:`scenario_to_toml` writes
it as a scenario file so any host replays alone with ``sgxsim run``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sgxsim.errors import ScenarioError
from sgxsim.kernel.policy import SvnPolicy
from sgxsim.sim.scenario import (
    EventSpec,
    MachineSpec,
    PatchSpec,
    RelyingPartySpec,
    Scenario,
    TcbSpec,
    json_schema,
    load_scenario,
    read_machine,
    read_patch,
    read_vm,
    read_workload,
)
from sgxsim.sim.toml_reader import TableReader, line_index, parse_toml

__all__ = [
    "PROCEDURES",
    "TCB_INFO_UPDATES",
    "FleetSpec",
    "GateSpec",
    "HostClass",
    "IntelSpec",
    "RelyingPartyPolicy",
    "RolloutSpec",
    "WaveSpec",
    "fleet_schema",
    "host_scenario",
    "load_fleet",
    "parse_fleet",
    "scenario_to_toml",
]

#: How a host applies the patch: a late load while its enclaves run, or Intel's runtime
#: TCB-recovery flow (drain every enclave and VM, late-load, restart).
PROCEDURES = ("late-load", "drain")
#: Which TCB Info a relying party follows (Intel PCS ``update=early`` or ``update=standard``).
TCB_INFO_UPDATES = ("early", "standard")
_NS_PER_DAY = 86_400_000_000_000
_DAYS_RE = re.compile(r"^\s*(\d+)\s*d\s*$")
#: Operator steps of the drain procedure happen this long before / after the load (simulated).
DRAIN_LEAD_NS = 100_000_000


@dataclass(frozen=True)
class HostClass:
    """``count`` identical hosts: their scenario (machine, workloads, VMs), kernel design, start microcode."""

    name: str
    count: int
    base: Scenario
    policy: SvnPolicy
    early_patch: PatchSpec
    procedure: str = "late-load"
    update_at: int = 2_000_000_000
    trigger_after: int | None = None
    scenario_file: str | None = None


@dataclass(frozen=True)
class WaveSpec:
    """A rollout wave: ``percent`` of (or ``count`` hosts of) each of ``classes``, on ``day``."""

    classes: tuple[str, ...]
    percent: float | None
    count: int | None
    day: int
    soak_days: int


@dataclass(frozen=True)
class GateSpec:
    """Health gates checked on a wave's hosts at the end of its soak; a breach halts the rollout."""

    max_failed_updates_percent: float | None = None
    max_kernel_warns: int | None = None
    max_unavailability_p99_ns: int | None = None
    max_refused_percent: float | None = None


@dataclass(frozen=True)
class RolloutSpec:
    patch: PatchSpec
    waves: tuple[WaveSpec, ...]
    gates: GateSpec


@dataclass(frozen=True)
class IntelSpec:
    """Intel's side of the TCB recovery, in fleet days."""

    published_day: int
    early_update_day: int
    standard_update_day: int
    tcb_evaluation_data_number: int
    new_tcb_evaluation_data_number: int
    new_late_microcode_svn: int
    new_level_status: str = "UpToDate"


@dataclass(frozen=True)
class RelyingPartyPolicy:
    follows: str = "early"
    grace_days: int = 0
    accept_sw_hardening_needed: bool = True

    def flip_day(self, intel: IntelSpec) -> int:
        """The day this relying party starts seeing the new TCB level as the current one."""
        return intel.early_update_day if self.follows == "early" else intel.standard_update_day


@dataclass(frozen=True)
class FleetSpec:
    name: str
    description: str
    seed: int
    days: int
    classes: tuple[HostClass, ...]
    rollout: RolloutSpec
    intel: IntelSpec
    relying_party: RelyingPartyPolicy
    source: str = ""

    @property
    def hosts(self) -> int:
        return sum(c.count for c in self.classes)

    def with_policy(self, policy: SvnPolicy) -> FleetSpec:
        """The same fleet with every class on kernel design ``policy``."""
        return replace(self, classes=tuple(replace(c, policy=policy) for c in self.classes))


# ---------------------------------------------------------------------------------------
# Parsing


def _percent(r: TableReader, *, zero_ok: bool = False) -> Any:
    """A percentage in (0, 100] (a wave's share), or [0, 100] with ``zero_ok`` (a gate's limit)."""

    def conv(v: object, key: str) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            r.fail(f"expected a number, got {v!r}", key)
        assert isinstance(v, int | float)
        if not (v >= 0 if zero_ok else v > 0) or v > 100:
            r.fail(f"must be in {'[' if zero_ok else '('}0, 100], got {v}", key)
        return float(v)

    return conv


def _days(r: TableReader) -> Any:
    """Whole days from an int or a duration string ("14d")."""

    def conv(v: object, key: str) -> int:
        if isinstance(v, str):
            m = _DAYS_RE.match(v)
            if m is None:
                r.fail(f'expected a whole number of days like 14 or "14d", got {v!r}', key)
            assert m is not None
            return int(m.group(1))
        return int(r.int_(0, 100_000)(v, key))

    return conv


def _class(r: TableReader, index: int, base_dir: Path) -> HostClass:
    name = r.require("name", r.str_())
    count = r.require("count", r.int_(1, 10_000_000))
    scenario_file = r.get("scenario", r.str_(), None)
    inline = [k for k in ("machine", "workload", "vm", "duration") if k in r.table]
    if scenario_file is not None and inline:
        r.fail(f"give either a scenario file or an inline {inline[0]}, not both", r.key(inline[0]))
    if scenario_file is not None:
        path = Path(scenario_file)
        if not path.is_absolute():
            path = base_dir / path
        try:
            base = load_scenario(path)
        except ScenarioError as err:
            r.fail(f"scenario {scenario_file} of class {name!r} is invalid: {err}", r.key("scenario"))
    else:
        machine = read_machine(r.sub("machine"))
        workloads = tuple(read_workload(w) for w in r.array("workload"))
        seen: set[str] = set()
        for i, w in enumerate(workloads):
            if w.name in seen:
                r.fail(f"duplicate workload name {w.name!r}", r.key(f"workload[{i}].name"))
            seen.add(w.name)
        vms = tuple(read_vm(v) for v in r.array("vm"))
        duration = r.get("duration", r.duration(), 5_000_000_000)
        base = Scenario(name=name, duration=duration, machine=machine, workloads=workloads, vms=vms)
    policy = SvnPolicy(
        r.get("policy", r.str_(tuple(SvnPolicy)), base.machine.svn_update_policy.value),
    )
    mc = r.sub("microcode")
    early = base.machine.early_patch if mc is None else read_patch(mc, "early")
    procedure = r.get("procedure", r.str_(PROCEDURES), "late-load")
    update_at = r.get("update_at", r.duration(), min(2_000_000_000, base.duration // 2))
    if update_at >= base.duration:
        r.fail(f"must be before the end of the host run ({base.duration} ns)", r.key("update_at"))
    if procedure == "drain" and update_at < DRAIN_LEAD_NS:
        r.fail("the drain procedure needs update_at >= 100ms (the drain comes first)", r.key("update_at"))
    trigger_after = r.get("trigger_after", r.opt_duration(), None)
    if trigger_after is not None and policy is not SvnPolicy.EXPLICIT_TRIGGER:
        r.fail(f"trigger_after is for policy {SvnPolicy.EXPLICIT_TRIGGER.value!r}", r.key("trigger_after"))
    r.done()
    del index
    return HostClass(
        name=name,
        count=count,
        base=base,
        policy=policy,
        early_patch=early,
        procedure=procedure,
        update_at=update_at,
        trigger_after=trigger_after,
        scenario_file=scenario_file,
    )


def _waves(
    r: TableReader, classes: Mapping[str, HostClass], start_day: int, soak: int
) -> tuple[WaveSpec, ...]:
    waves: list[WaveSpec] = []
    totals: dict[str, float] = dict.fromkeys(classes, 0.0)
    day = start_day
    readers = r.array("wave")
    if not readers:
        r.fail("a rollout needs at least one [[rollout.wave]]", r.key("wave"))
    for w in readers:
        names = w.get("classes", _class_names(w, classes), tuple(classes))
        percent = w.get("percent", _percent(w), None)
        count = w.get("count", w.int_(1, 10_000_000), None)
        if (percent is None) == (count is None):
            w.fail("give exactly one of percent or count", w.key("percent"))
        day = w.get("day", _days(w), day)
        if waves and day < waves[-1].day:
            w.fail(f"waves go forward in time: day {day} is before wave {len(waves) - 1}'s", w.key("day"))
        wave_soak = w.get("soak", _days(w), soak)
        for n in names:
            share = percent if percent is not None else 100.0 * (count or 0) / classes[n].count
            totals[n] += share
            if totals[n] > 100.0 + 1e-9:
                w.fail(
                    f"the waves add up to {totals[n]:g} % of class {n!r} (more than 100 %)",
                    w.key("percent" if percent is not None else "count"),
                )
        w.done()
        waves.append(WaveSpec(names, percent, count, day, wave_soak))
        day += wave_soak
    return tuple(waves)


def _class_names(r: TableReader, classes: Mapping[str, HostClass]) -> Any:
    def conv(v: object, key: str) -> tuple[str, ...]:
        if not isinstance(v, list) or not v:
            r.fail(f"expected a non-empty array of class names, got {v!r}", key)
        assert isinstance(v, list)
        out: list[str] = []
        for i, item in enumerate(v):
            name = r.str_()(item, f"{key}[{i}]")
            if name not in classes:
                r.fail(f"unknown host class {name!r} (classes: {', '.join(classes)})", f"{key}[{i}]")
            out.append(name)
        return tuple(out)

    return conv


def _gates(r: TableReader | None) -> GateSpec:
    if r is None:
        return GateSpec()
    g = GateSpec(
        max_failed_updates_percent=r.get("max_failed_updates_percent", _percent(r, zero_ok=True), None),
        max_kernel_warns=r.get("max_kernel_warns", r.int_(0), None),
        max_unavailability_p99_ns=r.get("max_unavailability_p99", r.duration(), None),
        max_refused_percent=r.get("max_refused_percent", _percent(r, zero_ok=True), None),
    )
    r.done()
    return g


def parse_fleet(text: str, source: str = "<string>", base_dir: Path | None = None) -> FleetSpec:
    """Parse and validate a fleet from TOML text (class scenario files relative to ``base_dir``)."""
    root = TableReader(parse_toml(text), "", line_index(text))
    head = root.sub("fleet")
    if head is None:
        root.fail("required table is missing", "fleet")
    assert head is not None
    name = head.require("name", head.str_())
    description = head.get("description", head.str_(), "")
    seed = head.get("seed", head.int_(0, 2**63 - 1), 0)
    days = head.get("days", _days(head), 60)
    if days < 1:
        head.fail("must be at least 1", head.key("days"))
    head.done()
    classes: dict[str, HostClass] = {}
    class_readers = root.array("class")
    if not class_readers:
        root.fail("a fleet needs at least one [[class]]", "class")
    for i, cr in enumerate(class_readers):
        hc = _class(cr, i, base_dir or Path("."))
        if hc.name in classes:
            cr.fail(f"duplicate class name {hc.name!r}", cr.key("name"))
        classes[hc.name] = hc
    intel = _intel(root.sub("intel"), root)
    rp = _relying_party(root.sub("relying_party"))
    ro = root.sub("rollout")
    if ro is None:
        root.fail("required table is missing", "rollout")
    assert ro is not None
    pr = ro.sub("patch")
    if pr is None:
        ro.fail("required table is missing", ro.key("patch"))
    assert pr is not None
    patch = read_patch(pr)
    start = ro.get("start_day", _days(ro), intel.published_day)
    soak = ro.get("soak", _days(ro), 1)
    waves = _waves(ro, classes, start, soak)
    gates = _gates(ro.sub("gates"))
    ro.done()
    for w in waves:
        if w.day >= days:
            root.fail(f"wave on day {w.day} is past the fleet's {days} days", "rollout.wave")
    root.done()
    return FleetSpec(
        name=name,
        description=description,
        seed=seed,
        days=days,
        classes=tuple(classes.values()),
        rollout=RolloutSpec(patch, waves, gates),
        intel=intel,
        relying_party=rp,
        source=source,
    )


def _intel(r: TableReader | None, root: TableReader) -> IntelSpec:
    if r is None:
        root.fail("required table is missing", "intel")
    assert r is not None
    published = r.require("published_day", _days(r))
    early = r.get("early_update_day", _days(r), published)
    standard = r.get("standard_update_day", _days(r), early)
    if early < published:
        r.fail("Intel's early TCB Info update comes on or after publication", r.key("early_update_day"))
    if standard < early:
        r.fail("the standard TCB Info update comes on or after the early one", r.key("standard_update_day"))
    before = r.get("tcb_evaluation_data_number", r.int_(0, 10_000), 17)
    after = r.get("new_tcb_evaluation_data_number", r.int_(0, 10_000), before + 1)
    if after <= before:
        r.fail(f"must exceed tcb_evaluation_data_number ({before})", r.key("new_tcb_evaluation_data_number"))
    spec = IntelSpec(
        published_day=published,
        early_update_day=early,
        standard_update_day=standard,
        tcb_evaluation_data_number=before,
        new_tcb_evaluation_data_number=after,
        new_late_microcode_svn=r.require("new_late_microcode_svn", r.int_(1, 255)),
        new_level_status=r.get("new_level_status", r.str_(("UpToDate", "SWHardeningNeeded")), "UpToDate"),
    )
    r.done()
    return spec


def _relying_party(r: TableReader | None) -> RelyingPartyPolicy:
    if r is None:
        return RelyingPartyPolicy()
    p = RelyingPartyPolicy(
        follows=r.get("follows", r.str_(TCB_INFO_UPDATES), "early"),
        grace_days=r.get("grace_period", _days(r), 0),
        accept_sw_hardening_needed=r.get("accept_sw_hardening_needed", r.bool_(), True),
    )
    r.done()
    return p


def load_fleet(path: str | Path) -> FleetSpec:
    """Read and validate a fleet file (class scenario files are relative to its folder)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise ScenarioError(f"cannot read fleet file: {err.strerror}", key=str(p)) from err
    return parse_fleet(text, source=str(p), base_dir=p.parent)


# ---------------------------------------------------------------------------------------
# Host scenarios


def host_scenario(fleet: FleetSpec, hc: HostClass, wave: int) -> Scenario:
    """The scenario every host of class ``hc`` in wave ``wave`` runs (its own update).

    The class's machine (kernel design ``hc.policy``, start microcode ``hc.early_patch``, the
    rollout's patch added), workloads and VMs; the class scenario's own events are replaced by:
    a ``tcb_recovery`` at 0 s when the relying party already sees the new TCB on the wave's day
    (with the grace still left that day); the operator's ``drain`` before and ``restart`` after
    the load for the drain procedure; the ``microcode_load`` at ``update_at``; the
    administrator's trigger ``trigger_after`` later (explicit-trigger design).
    """
    w = fleet.rollout.waves[wave]
    intel, rp = fleet.intel, fleet.relying_party
    patch = fleet.rollout.patch
    m = hc.base.machine
    patches = (*(p for p in m.patches if p.name != patch.name), patch)
    machine = replace(m, early_patch=hc.early_patch, patches=patches, svn_update_policy=hc.policy)
    events: list[EventSpec] = []
    flip = rp.flip_day(intel)
    grace_ns = 0
    if w.day >= flip:
        events.append(
            EventSpec(
                at=0,
                kind="tcb_recovery",
                new_late_microcode_svn=intel.new_late_microcode_svn,
                tcb_evaluation_data_number=intel.new_tcb_evaluation_data_number,
            )
        )
        # The grace left that day; a host run lasts seconds, so one day stands for "all of the run".
        grace_ns = min(max(flip + rp.grace_days - w.day, 0), 1) * _NS_PER_DAY
    if hc.procedure == "drain":
        events.append(EventSpec(at=hc.update_at - DRAIN_LEAD_NS, kind="drain"))
    events.append(EventSpec(at=hc.update_at, kind="microcode_load", patch=patch.name))
    if hc.procedure == "drain":
        events.append(EventSpec(at=hc.update_at + DRAIN_LEAD_NS, kind="restart"))
    if hc.trigger_after is not None and hc.policy is SvnPolicy.EXPLICIT_TRIGGER:
        events.append(EventSpec(at=hc.update_at + hc.trigger_after, kind="svn_update_trigger"))
    allow = ("UpToDate", "SWHardeningNeeded") if rp.accept_sw_hardening_needed else ("UpToDate",)
    return Scenario(
        name=f"{fleet.name}-{hc.name}-wave{wave}",
        description=f"fleet {fleet.name}: class {hc.name}, wave {wave} (day {w.day}), {hc.procedure}",
        seed=fleet.seed,
        duration=hc.base.duration,
        machine=machine,
        workloads=hc.base.workloads,
        vms=hc.base.vms,
        events=tuple(sorted(events, key=lambda e: e.at)),
        relying_party=RelyingPartySpec(allow=allow, grace_period=grace_ns),
        tcb=TcbSpec(
            up_to_date_late_microcode_svn=hc.early_patch.late_microcode_svn,
            tcb_evaluation_data_number=intel.tcb_evaluation_data_number,
        ),
    )


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, tuple | list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"no TOML form for {v!r}")  # pragma: no cover - every Scenario field is covered


def _patch_lines(p: PatchSpec) -> list[str]:
    return [
        f"name = {_toml_value(p.name)}",
        f"revision = {p.revision:#x}",
        f"late_microcode_svn = {p.late_microcode_svn}",
        f"base_svn = {p.base_svn}",
    ]


def _machine_lines(m: MachineSpec) -> list[str]:
    out = [
        "[machine]",
        f"sockets = {m.sockets}",
        f"cpus_per_socket = {m.cpus_per_socket}",
        f"sgx2 = {_toml_value(m.sgx2)}",
        f"eupdatesvn = {_toml_value(m.eupdatesvn)}",
        f"svn_update_policy = {_toml_value(m.svn_update_policy.value)}",
        f"vepc = {_toml_value(m.vepc)}",
        f"trigger_mode = {_toml_value(m.trigger_mode)}",
        f"rfc_v2_as_posted = {_toml_value(m.rfc_v2_as_posted)}",
        f"only_if_svn_rises = {_toml_value(m.only_if_svn_rises)}",
    ]
    for s in m.epc_sections:
        out += ["", "[[machine.epc_sections]]", f"size = {s.size}", f"node = {s.node}"]
    out += ["", "[machine.microcode.early]", *_patch_lines(m.early_patch)]
    for p in m.patches:
        out += ["", "[[machine.microcode.patches]]", *_patch_lines(p)]
    if m.latency:
        out += ["", "[machine.latency]", *(f"{k} = {v}" for k, v in sorted(m.latency.items()))]
    return out


def scenario_to_toml(sc: Scenario) -> str:
    """``sc`` as a scenario file that :func:`~sgxsim.sim.scenario.parse_scenario` reads back equal.

    Sizes and durations are written as integers (bytes, ns); every key is written, defaults too.
    """
    out = [
        "[scenario]",
        f"name = {_toml_value(sc.name)}",
        f"description = {_toml_value(sc.description)}",
        f"seed = {sc.seed}",
        f"duration = {sc.duration}",
        "",
        *_machine_lines(sc.machine),
    ]
    keys = json_schema()["properties"]  # only scenario keys (not e.g. where a spec came from)
    for w in sc.workloads:
        out += ["", "[[workload]]"]
        for key, value in vars(w).items():
            if key in keys["workload"]["items"]["properties"]:
                out.append(f"{key} = {_toml_value('never' if value is None else value)}")
    for v in sc.vms:
        vm_keys = keys["vm"]["items"]["properties"]
        out += ["", "[[vm]]", *(f"{k} = {_toml_value(x)}" for k, x in vars(v).items() if k in vm_keys)]
    for e in sc.events:
        ev_keys = keys["event"]["items"]["properties"]
        out += [
            "",
            "[[event]]",
            *(f"{k} = {_toml_value(x)}" for k, x in vars(e).items() if x is not None and k in ev_keys),
        ]
    rp = sc.relying_party
    out += ["", "[relying_party]", f"allow = {_toml_value(rp.allow)}", f"grace_period = {rp.grace_period}"]
    out += [
        "",
        "[tcb]",
        f"up_to_date_late_microcode_svn = {sc.tcb.up_to_date_late_microcode_svn}",
        f"tcb_evaluation_data_number = {sc.tcb.tcb_evaluation_data_number}",
    ]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------
# JSON Schema


def fleet_schema() -> dict[str, Any]:
    """The fleet format as a JSON Schema (draft 2020-12); inline class tables use the scenario's rules."""
    sc = json_schema()["properties"]
    days = {"oneOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": r"^\s*\d+\s*d\s*$"}]}
    duration = sc["scenario"]["properties"]["duration"]
    patch = sc["machine"]["properties"]["microcode"]["properties"]["early"]
    pct = {"type": "number", "exclusiveMinimum": 0, "maximum": 100}
    limit = {"type": "number", "minimum": 0, "maximum": 100}

    def obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
        return {
            "type": "object",
            "additionalProperties": False,
            "properties": props,
            "required": required or [],
        }

    host_class = obj(
        {
            "name": {"type": "string"},
            "count": {"type": "integer", "minimum": 1},
            "scenario": {"type": "string"},
            "machine": sc["machine"],
            "workload": sc["workload"],
            "vm": sc["vm"],
            "duration": duration,
            "policy": {"enum": [p.value for p in SvnPolicy]},
            "microcode": patch,
            "procedure": {"enum": list(PROCEDURES)},
            "update_at": duration,
            "trigger_after": {"oneOf": [duration, {"enum": ["never", "forever"]}]},
        },
        ["name", "count"],
    )
    wave = obj(
        {
            "classes": {"type": "array", "minItems": 1, "items": {"type": "string"}},
            "percent": pct,
            "count": {"type": "integer", "minimum": 1},
            "day": days,
            "soak": days,
        }
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "sgxsim fleet",
        **obj(
            {
                "fleet": obj(
                    {
                        "name": {"type": "string"},
                        "description": {"type": "string"},
                        "seed": {"type": "integer", "minimum": 0},
                        "days": days,
                    },
                    ["name"],
                ),
                "class": {"type": "array", "minItems": 1, "items": host_class},
                "intel": obj(
                    {
                        "published_day": days,
                        "early_update_day": days,
                        "standard_update_day": days,
                        "tcb_evaluation_data_number": {"type": "integer", "minimum": 0},
                        "new_tcb_evaluation_data_number": {"type": "integer", "minimum": 0},
                        "new_late_microcode_svn": {"type": "integer", "minimum": 1, "maximum": 255},
                        "new_level_status": {"enum": ["UpToDate", "SWHardeningNeeded"]},
                    },
                    ["published_day", "new_late_microcode_svn"],
                ),
                "relying_party": obj(
                    {
                        "follows": {"enum": list(TCB_INFO_UPDATES)},
                        "grace_period": days,
                        "accept_sw_hardening_needed": {"type": "boolean"},
                    }
                ),
                "rollout": obj(
                    {
                        "patch": {**patch, "required": ["name", "revision", "late_microcode_svn"]},
                        "start_day": days,
                        "soak": days,
                        "wave": {"type": "array", "minItems": 1, "items": wave},
                        "gates": obj(
                            {
                                "max_failed_updates_percent": limit,
                                "max_kernel_warns": {"type": "integer", "minimum": 0},
                                "max_unavailability_p99": duration,
                                "max_refused_percent": limit,
                            }
                        ),
                    },
                    ["patch", "wave"],
                ),
            },
            ["fleet", "class", "intel", "rollout"],
        ),
    }
