"""Scenario files: a machine, its workloads, VMs, events and a relying-party policy, in TOML.

Every key is validated with its type and range; a mistake raises
:class:`~sgxsim.errors.ScenarioError` naming the key path (``workload[2].heap``) and,
where the file has it, the line (the reader is :mod:`sgxsim.sim.toml_reader`, shared with fleet
files). docs/scenarios.md documents every key and :func:`json_schema` gives the same rules as a
JSON Schema.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgxsim.errors import ScenarioError
from sgxsim.kernel.policy import SvnPolicy
from sgxsim.sim.toml_reader import (
    DURATION_PATTERN,
    MAX_DURATION_NS,
    SIZE_PATTERN,
    TableReader,
    format_ns_short,
    line_index,
    parse_duration,
    parse_size,
    parse_toml,
)

__all__ = [
    "MAX_DURATION_NS",
    "MAX_SCENARIO_BYTES",
    "MIN_CADENCE_NS",
    "EpcSectionSpec",
    "EventSpec",
    "MachineSpec",
    "PatchSpec",
    "RelyingPartySpec",
    "Scenario",
    "TableReader",
    "TcbSpec",
    "VmSpec",
    "WorkloadSpec",
    "decode_utf8",
    "json_schema",
    "late_event_warning",
    "line_index",
    "load_scenario",
    "overrun_warning",
    "parse_duration",
    "parse_scenario",
    "parse_size",
    "read_machine",
    "read_patch",
    "read_vm",
    "read_workload",
]

#: The kernel designs a machine can run (issue "The core"): the RFC v2 teardown after every late
#: load, an explicit administrator trigger, and the design Linux 6.19 merged.
VEPC_POLICIES = ("skip", "zap")
TRIGGER_MODES = ("destructive", "non-destructive")
ON_EPC_LOSS = ("restart", "exit")
EVENT_KINDS = (
    "microcode_load",  # /sys/devices/system/cpu/microcode/reload with a named patch
    "tcb_recovery",  # Intel publishes a TCB recovery (new tcbEvaluationDataNumber)
    "entropy_starve",  # RDSEED fails `count` times (or until restored)
    "entropy_restore",
    "svn_update_trigger",  # explicit-trigger policy: the administrator's write
    "drain",  # operator: stop all enclaves and VMs (Intel's recommended flow)
    "restart",  # operator: restart what was drained
    "kexec",  # jump into a new kernel without a reset
)
TCB_STATUSES = (
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "Revoked",
)

#: The shortest cadence (``attest_every``, periodic work): below it a run would take minutes of
#: wall time per simulated second.
MIN_CADENCE_NS = 10_000_000
#: The longest relying-party grace period (not simulated time: it may exceed a run).
MAX_GRACE_NS = 365 * 86_400_000_000_000
#: A scenario file larger than this is refused before it is read further (``sgxsim run /dev/zero``).
MAX_SCENARIO_BYTES = 1 << 20


# ---------------------------------------------------------------------------------------
# Typed scenario


@dataclass(frozen=True)
class PatchSpec:
    """A microcode patch the scenario can load: revision and SVNs."""

    name: str
    revision: int
    late_microcode_svn: int
    base_svn: int = 2


@dataclass(frozen=True)
class EpcSectionSpec:
    size: int
    node: int


@dataclass(frozen=True)
class MachineSpec:
    sockets: int = 2
    cpus_per_socket: int = 4
    epc_sections: tuple[EpcSectionSpec, ...] = ()
    sgx2: bool = True
    eupdatesvn: bool = True
    early_patch: PatchSpec = PatchSpec("early", 0xD0003A5, 2)
    patches: tuple[PatchSpec, ...] = ()
    svn_update_policy: SvnPolicy = SvnPolicy.RFC_V2_TEARDOWN
    vepc: str = "skip"
    trigger_mode: str = "destructive"
    rfc_v2_as_posted: bool = False
    only_if_svn_rises: bool = False
    latency: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkloadSpec:
    name: str
    count: int = 1
    image_size: int = 64 << 10
    measured: bool = True
    heap: int = 64 << 10
    sgx2_growth: int = 0
    start: int = 0
    lifetime: int | None = None
    attest_every: int | None = None
    seal: bool = False
    threads: int = 1
    on_epc_loss: str = "restart"
    oversubscribe_hint: bool = False
    #: Threads per instance making back-to-back ECALLs (0: the app only calls in when it
    #: attests, seals or is probed after a kernel event).
    ecall_threads: int = 0
    #: Simulated time one ECALL of an ECALL thread spends in enclave mode.
    ecall_time: int = 1_000_000
    #: Logical CPUs the instance's threads run on, in order: the main thread, then the ECALL
    #: threads (cycled; instances take consecutive slots). Empty: spread over the CPUs.
    cpus: tuple[int, ...] = ()
    #: Build (create, add, init, grow) and destroy a short-lived enclave this often (None: never).
    build_every: int | None = None
    #: Under memory pressure right after it is built, ksgxd swaps this enclave's pages out (EWB).
    swap_out: bool = False
    #: Where the file sets it, for messages: ``workload[1] (line 20)``.
    where: str = field(default="", compare=False)


@dataclass(frozen=True)
class VmSpec:
    name: str
    epc: int
    enclaves: int = 1
    enclave_size: int = 1 << 20
    start: int = 0
    #: Where the file sets it, for messages: ``vm[0] (line 30)``.
    where: str = field(default="", compare=False)


@dataclass(frozen=True)
class EventSpec:
    at: int
    kind: str
    patch: str | None = None
    count: int | None = None
    new_late_microcode_svn: int | None = None
    tcb_evaluation_data_number: int | None = None
    #: Where the file sets it, for messages: ``event[2] (line 41)`` (index in file order).
    where: str = field(default="", compare=False)


@dataclass(frozen=True)
class RelyingPartySpec:
    allow: tuple[str, ...] = (
        "UpToDate",
        "SWHardeningNeeded",
        "ConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
    )
    grace_period: int = 0


@dataclass(frozen=True)
class TcbSpec:
    """The TCB Intel publishes at the start: which late-microcode SVN is UpToDate."""

    up_to_date_late_microcode_svn: int = 2
    tcb_evaluation_data_number: int = 17
    advisory_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str = ""
    seed: int = 0
    duration: int = 10_000_000_000
    machine: MachineSpec = field(default_factory=MachineSpec)
    workloads: tuple[WorkloadSpec, ...] = ()
    vms: tuple[VmSpec, ...] = ()
    events: tuple[EventSpec, ...] = ()
    relying_party: RelyingPartySpec = field(default_factory=RelyingPartySpec)
    tcb: TcbSpec = field(default_factory=TcbSpec)
    source: str = ""
    #: Key path -> line of the file (``scenario.duration`` -> 3), for messages.
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)


# ---------------------------------------------------------------------------------------
# Section readers (fleet files read their inline host classes with the same ones)


def read_patch(r: TableReader, default_name: str | None = None) -> PatchSpec:
    """A microcode patch table (``[machine.microcode.early]``, ``[[...patches]]``)."""
    name = r.get("name", r.str_(), default_name or "")
    if not name:
        r.fail("required key is missing", r.key("name"))
    spec = PatchSpec(
        name=name,
        revision=r.require("revision", r.int_(0, 0xFFFFFFFF)),
        late_microcode_svn=r.require("late_microcode_svn", r.int_(0, 255)),
        base_svn=r.get("base_svn", r.int_(0, 255), 2),
    )
    r.done()
    return spec


def read_machine(r: TableReader | None) -> MachineSpec:
    """The ``[machine]`` table (``None``: the default machine, one 64 MiB EPC section per socket)."""
    if r is None:
        return MachineSpec(epc_sections=(EpcSectionSpec(64 << 20, 0), EpcSectionSpec(64 << 20, 1)))
    sockets = r.get("sockets", r.int_(1, 8), 2)
    cpus = r.get("cpus_per_socket", r.int_(1, 512), 4)
    sections: list[EpcSectionSpec] = []
    for s in r.array("epc_sections"):
        node = s.get("node", s.int_(0, 7), len(sections) % sockets)
        if node >= sockets:
            s.fail(f"node {node} does not exist on a {sockets}-socket machine", s.key("node"))
        sections.append(EpcSectionSpec(s.require("size", s.size(lo=4096, page_aligned=True)), node))
        if sections[-1].size > 512 << 30:
            s.fail("an EPC section is at most 512 GiB", s.key("size"))
        s.done()
    if len(sections) > 8:
        r.fail(f"{len(sections)} EPC sections; SGX enumerates at most 8", r.key("epc_sections"))
    if not sections:
        sections = [EpcSectionSpec(64 << 20, n) for n in range(sockets)]
    early = PatchSpec("early", 0xD0003A5, 2)
    patches: list[PatchSpec] = []
    mc = r.sub("microcode")
    if mc is not None:
        e = mc.sub("early")
        if e is not None:
            early = read_patch(e, "early")
        for p in mc.array("patches"):
            patches.append(read_patch(p))
        mc.done()
    names = [p.name for p in patches]
    for i, n in enumerate(names):
        if names.index(n) != i:
            r.fail(f"duplicate patch name {n!r}", r.key(f"microcode.patches[{i}].name"))
    latency: dict[str, int] = {}
    lat = r.sub("latency")
    if lat is not None:
        for k in lat.table:
            latency[k] = lat.get(k, lat.int_(0), 0)
        from sgxsim.hw.machine import LatencyTable

        try:
            LatencyTable().with_overrides(latency)
        except ValueError as err:
            lat.fail(str(err), lat.path)
    spec = MachineSpec(
        sockets=sockets,
        cpus_per_socket=cpus,
        epc_sections=tuple(sections),
        sgx2=r.get("sgx2", r.bool_(), True),
        eupdatesvn=r.get("eupdatesvn", r.bool_(), True),
        early_patch=early,
        patches=tuple(patches),
        svn_update_policy=SvnPolicy(
            r.get("svn_update_policy", r.str_(tuple(SvnPolicy)), SvnPolicy.RFC_V2_TEARDOWN.value)
        ),
        vepc=r.get("vepc", r.str_(VEPC_POLICIES), "skip"),
        trigger_mode=r.get("trigger_mode", r.str_(TRIGGER_MODES), "destructive"),
        rfc_v2_as_posted=r.get("rfc_v2_as_posted", r.bool_(), False),
        only_if_svn_rises=r.get("only_if_svn_rises", r.bool_(), False),
        latency=latency,
    )
    r.done()
    return spec


def _cpu_list(r: TableReader, ncpu: int) -> Callable[[object, str], tuple[int, ...]]:
    def conv(v: object, key: str) -> tuple[int, ...]:
        if not isinstance(v, list):
            r.fail(f"expected an array of CPU numbers, got {v!r}", key)
        assert isinstance(v, list)
        out = []
        for i, item in enumerate(v):
            cpu = r.int_(0)(item, f"{key}[{i}]")
            if cpu >= ncpu:
                r.fail(f"CPU {cpu} does not exist: the machine has {ncpu} logical CPUs (0..{ncpu - 1})", key)
            out.append(cpu)
        return tuple(out)

    return conv


def read_workload(r: TableReader, ncpu: int = 1 << 30) -> WorkloadSpec:
    """A ``[[workload]]`` table; ``cpus`` must name CPUs below ``ncpu``."""
    w = WorkloadSpec(
        name=r.require("name", r.str_()),
        count=r.get("count", r.int_(1, 100_000), 1),
        image_size=r.get("image_size", r.size(lo=4096, page_aligned=True), 64 << 10),
        measured=r.get("measured", r.bool_(), True),
        heap=r.get("heap", r.size(page_aligned=True), 64 << 10),
        sgx2_growth=r.get("sgx2_growth", r.size(page_aligned=True), 0),
        start=r.get("start", r.duration(), 0),
        lifetime=r.get("lifetime", r.opt_duration(), None),
        attest_every=r.get("attest_every", r.opt_duration(MIN_CADENCE_NS), None),
        seal=r.get("seal", r.bool_(), False),
        threads=r.get("threads", r.int_(1, 64), 1),
        on_epc_loss=r.get("on_epc_loss", r.str_(ON_EPC_LOSS), "restart"),
        swap_out=r.get("swap_out", r.bool_(), False),
        ecall_threads=r.get("ecall_threads", r.int_(0, 64), 0),
        ecall_time=r.get("ecall_time", r.duration(), 1_000_000),
        cpus=r.get("cpus", _cpu_list(r, ncpu), ()),
        build_every=r.get("build_every", r.opt_duration(), None),
        where=r.where(),
    )
    if w.ecall_threads and w.ecall_time < 1000:
        r.fail("an ECALL spends at least 1us in enclave mode", r.key("ecall_time"))
    if w.build_every is not None and w.build_every < 100_000:
        r.fail("enclave builds are at least 100us apart", r.key("build_every"))
    if w.sgx2_growth and w.swap_out:
        r.fail("a swapped-out enclave cannot also grow with EAUG", r.key("swap_out"))
    r.done()
    return w


def read_vm(r: TableReader) -> VmSpec:
    """A ``[[vm]]`` table."""
    v = VmSpec(
        name=r.require("name", r.str_()),
        epc=r.require("epc", r.size(lo=8192, page_aligned=True)),
        enclaves=r.get("enclaves", r.int_(0, 1000), 1),
        enclave_size=r.get("enclave_size", r.size(lo=8192, page_aligned=True), 1 << 20),
        start=r.get("start", r.duration(), 0),
        where=r.where(),
    )
    r.done()
    return v


def _event(r: TableReader, patches: set[str]) -> EventSpec:
    kind = r.require("kind", r.str_(EVENT_KINDS))
    e = EventSpec(
        at=r.require("at", r.duration()),
        kind=kind,
        patch=r.get("patch", r.str_(), None),
        count=r.get("count", r.int_(0, 1_000_000), None),
        new_late_microcode_svn=r.get("new_late_microcode_svn", r.int_(0, 255), None),
        tcb_evaluation_data_number=r.get("tcb_evaluation_data_number", r.int_(0, 10_000), None),
        where=r.where(),
    )
    if kind == "microcode_load":
        if e.patch is None:
            r.fail("a microcode_load event names the patch to load", r.key("patch"))
        if e.patch not in patches:
            r.fail(f"no patch named {e.patch!r} in machine.microcode.patches", r.key("patch"))
    if kind == "tcb_recovery" and e.new_late_microcode_svn is None:
        r.fail(
            "a tcb_recovery event says which late-microcode SVN becomes UpToDate",
            r.key("new_late_microcode_svn"),
        )
    r.done()
    return e


def _check_within(
    root: TableReader,
    duration: int,
    workloads: tuple[WorkloadSpec, ...],
    vms: tuple[VmSpec, ...],
    events: tuple[EventSpec, ...],
) -> None:
    """Everything a scenario names happens within ``scenario.duration`` (else it would silently not)."""
    end = format_ns_short(duration)
    for i, w in enumerate(workloads):
        if w.start > duration:
            root.fail(
                f"starts at {format_ns_short(w.start)}, after the scenario ends ({end})",
                f"workload[{i}].start",
            )
    for i, v in enumerate(vms):
        if v.start > duration:
            root.fail(
                f"starts at {format_ns_short(v.start)}, after the scenario ends ({end})", f"vm[{i}].start"
            )
    for e in events:
        if e.at > duration:
            key = e.where.split(" ", 1)[0]
            root.fail(
                f"{e.kind} at {format_ns_short(e.at)} is after the scenario ends ({end}); "
                "make scenario.duration longer or the event earlier",
                f"{key}.at",
            )


#: An event that runs this much later than its ``at`` (or a run that ends this much after its
#: ``duration``) is reported in report.json ``warnings``.
LATE_WARN_NS = 1_000_000


def late_event_warning(ev: EventSpec, late_ns: int) -> dict[str, str | int | float | bool | None] | None:
    """The report.json warning for event ``ev`` run ``late_ns`` after its ``at`` (None if on time)."""
    if late_ns < LATE_WARN_NS:
        return None
    key, _, rest = ev.where.partition(" (line ")
    return {
        "key": f"{key or 'event'}.at",
        "line": int(rest.rstrip(")")) if rest else None,
        "message": f"{ev.kind} written for {format_ns_short(ev.at)} ran at "
        f"{format_ns_short(ev.at + late_ns)} ({format_ns_short(late_ns)} late): "
        "the machine was busy with earlier work until then",
    }


def overrun_warning(sc: Scenario, over_ns: int) -> dict[str, str | int | float | bool | None] | None:
    """The report.json warning for a run whose last action ended ``over_ns`` after ``duration``."""
    if over_ns < LATE_WARN_NS:
        return None
    return {
        "key": "scenario.duration",
        "line": sc.lines.get("scenario.duration"),
        "message": f"the run ended at {format_ns_short(sc.duration + over_ns)}, {format_ns_short(over_ns)} "
        f"after the {format_ns_short(sc.duration)} written: the last action took that long",
    }


def parse_scenario(text: str, source: str = "<string>") -> Scenario:
    """Parse and validate a scenario from TOML text."""
    data = parse_toml(text)
    lines = line_index(text)
    root = TableReader(data, "", lines)
    head = root.sub("scenario")
    if head is None:
        root.fail("required table is missing", "scenario")
    assert head is not None
    name = head.require("name", head.str_())
    description = head.get("description", head.str_(), "")
    seed = head.get("seed", head.int_(0, 2**63 - 1), 0)
    duration = head.get("duration", head.duration(lo=1), 10_000_000_000)
    head.done()
    machine = read_machine(root.sub("machine"))
    ncpu = machine.sockets * machine.cpus_per_socket
    workloads = tuple(read_workload(w, ncpu) for w in root.array("workload"))
    seen: set[str] = set()
    for i, w in enumerate(workloads):
        if w.name in seen:
            root.fail(f"duplicate workload name {w.name!r}", f"workload[{i}].name")
        seen.add(w.name)
    vms = tuple(read_vm(v) for v in root.array("vm"))
    patch_names = {p.name for p in machine.patches}
    events = tuple(sorted((_event(e, patch_names) for e in root.array("event")), key=lambda e: e.at))
    _check_within(root, duration, workloads, vms, events)
    rp = root.sub("relying_party")
    relying = RelyingPartySpec()
    if rp is not None:
        relying = RelyingPartySpec(
            allow=rp.get("allow", rp.str_list(TCB_STATUSES), relying.allow),
            grace_period=rp.get("grace_period", rp.duration(hi=MAX_GRACE_NS), 0),
        )
        rp.done()
    tcb_r = root.sub("tcb")
    tcb = TcbSpec()
    if tcb_r is not None:
        tcb = TcbSpec(
            up_to_date_late_microcode_svn=tcb_r.get("up_to_date_late_microcode_svn", tcb_r.int_(0, 255), 2),
            tcb_evaluation_data_number=tcb_r.get("tcb_evaluation_data_number", tcb_r.int_(0, 10_000), 17),
        )
        tcb_r.done()
    root.done()
    return Scenario(
        name, description, seed, duration, machine, workloads, vms, events, relying, tcb, source, lines
    )


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = f.read(MAX_SCENARIO_BYTES + 1)
    except OSError as err:
        raise ScenarioError(f"cannot read scenario file: {err.strerror}", source=str(p)) from err
    if len(data) > MAX_SCENARIO_BYTES:
        raise ScenarioError(
            f"larger than {MAX_SCENARIO_BYTES >> 20} MiB: not a scenario file (read no further)",
            source=str(p),
        )
    try:
        text = decode_utf8(data)
        return parse_scenario(text, source=str(p))
    except ScenarioError as err:
        raise err.in_file(str(p)) from None


def decode_utf8(data: bytes) -> str:
    """Text from UTF-8 bytes (a UTF-8 byte order mark is dropped); ``ScenarioError`` otherwise.

    The message names the encoding when a byte order mark gives it away (UTF-16/32), else the
    line and column of the first byte that is not UTF-8.
    """
    for bom, name in (
        (codecs.BOM_UTF32_LE, "UTF-32"),
        (codecs.BOM_UTF32_BE, "UTF-32"),
        (codecs.BOM_UTF16_LE, "UTF-16"),
        (codecs.BOM_UTF16_BE, "UTF-16"),
    ):
        if data.startswith(bom):
            raise ScenarioError(f"the file is {name} (byte order mark); save it as UTF-8", line=1)
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    nul = data.find(b"\0")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        column = nul - (data.rfind(b"\n", 0, nul) + 1) + 1
        raise ScenarioError(
            f"a NUL byte at column {column}: not a text file (UTF-16 without a byte order mark?); "
            "save it as UTF-8",
            line=line,
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        bad = data[err.start : err.start + 1].hex()
        raise ScenarioError(
            f"not UTF-8: byte 0x{bad} at column {column} (save the file as UTF-8)", line=line
        ) from None


def json_schema() -> dict[str, Any]:
    """The scenario format as a JSON Schema (draft 2020-12), for editors and external validation."""
    size = {"oneOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": SIZE_PATTERN}]}
    duration = {
        "oneOf": [
            {"type": "integer", "minimum": 0, "maximum": MAX_DURATION_NS},
            {"type": "string", "pattern": DURATION_PATTERN},
        ]
    }
    opt_duration = {"oneOf": [duration, {"enum": ["forever", "never"]}]}
    patch = {
        "type": "object",
        "additionalProperties": False,
        "required": ["revision", "late_microcode_svn"],
        "properties": {
            "name": {"type": "string"},
            "revision": {"type": "integer", "minimum": 0},
            "late_microcode_svn": {"type": "integer", "minimum": 0, "maximum": 255},
            "base_svn": {"type": "integer", "minimum": 0, "maximum": 255},
        },
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "sgxsim scenario",
        "type": "object",
        "additionalProperties": False,
        "required": ["scenario"],
        "properties": {
            "scenario": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name"],
                "properties": {
                    "name": {"type": "string"},
                    "description": {"type": "string"},
                    "seed": {"type": "integer", "minimum": 0},
                    "duration": duration,
                },
            },
            "machine": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "sockets": {"type": "integer", "minimum": 1, "maximum": 8},
                    "cpus_per_socket": {"type": "integer", "minimum": 1, "maximum": 512},
                    "epc_sections": {
                        "type": "array",
                        "maxItems": 8,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["size"],
                            "properties": {
                                "size": size,
                                "node": {"type": "integer", "minimum": 0, "maximum": 7},
                            },
                        },
                    },
                    "sgx2": {"type": "boolean"},
                    "eupdatesvn": {"type": "boolean"},
                    "microcode": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "early": patch,
                            "patches": {
                                "type": "array",
                                "items": {**patch, "required": ["name", "revision", "late_microcode_svn"]},
                            },
                        },
                    },
                    "svn_update_policy": {"enum": [p.value for p in SvnPolicy]},
                    "vepc": {"enum": list(VEPC_POLICIES)},
                    "trigger_mode": {"enum": list(TRIGGER_MODES)},
                    "rfc_v2_as_posted": {"type": "boolean"},
                    "only_if_svn_rises": {"type": "boolean"},
                    "latency": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}},
                },
            },
            "workload": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string"},
                        "count": {"type": "integer", "minimum": 1},
                        "image_size": size,
                        "measured": {"type": "boolean"},
                        "heap": size,
                        "sgx2_growth": size,
                        "start": duration,
                        "lifetime": opt_duration,
                        "attest_every": opt_duration,
                        "seal": {"type": "boolean"},
                        "threads": {"type": "integer", "minimum": 1, "maximum": 64},
                        "on_epc_loss": {"enum": list(ON_EPC_LOSS)},
                        "swap_out": {"type": "boolean"},
                        "ecall_threads": {"type": "integer", "minimum": 0, "maximum": 64},
                        "ecall_time": duration,
                        "cpus": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                        "build_every": opt_duration,
                    },
                },
            },
            "vm": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name", "epc"],
                    "properties": {
                        "name": {"type": "string"},
                        "epc": size,
                        "enclaves": {"type": "integer", "minimum": 0},
                        "enclave_size": size,
                        "start": duration,
                    },
                },
            },
            "event": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["at", "kind"],
                    "properties": {
                        "at": duration,
                        "kind": {"enum": list(EVENT_KINDS)},
                        "patch": {"type": "string"},
                        "count": {"type": "integer", "minimum": 0},
                        "new_late_microcode_svn": {"type": "integer", "minimum": 0, "maximum": 255},
                        "tcb_evaluation_data_number": {"type": "integer", "minimum": 0},
                    },
                },
            },
            "relying_party": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "allow": {"type": "array", "items": {"enum": list(TCB_STATUSES)}},
                    "grace_period": duration,
                },
            },
            "tcb": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "up_to_date_late_microcode_svn": {"type": "integer", "minimum": 0, "maximum": 255},
                    "tcb_evaluation_data_number": {"type": "integer", "minimum": 0},
                },
            },
        },
    }
