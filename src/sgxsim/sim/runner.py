"""The scenario runner: a deterministic discrete-event loop that drives one simulated platform.

A :class:`Runner` turns a :class:`~sgxsim.sim.scenario.Scenario` into a run: it boots a
:class:`~sgxsim.hw.machine.Machine` and a :class:`~sgxsim.kernel.main.Kernel` (with the SVN update
policy of the scenario, or the one given), binds it to an
:class:`~sgxsim.sim.attestation.AttestationWorld` (Intel's PKI/PCS and the relying party), and then
pops ``(time, seq, action)`` entries from a heap in simulated-time order:

* **workloads** are processes in the kernel that build their application enclave with the sdk
  loader (the selftests' ioctl flow; unmeasured pages where the scenario says ``measured =
  false``), grow it with EAUG (SGX2: the process touches its ELRANGE hole, the fault handler
  EAUGs), seal a secret, attest through the quoting enclave (PCE + QE) at their cadence, and on
  EPC loss (the vDSO reports an exception on the next ECALL) restart or exit;
* **VMs** are VMM processes that open ``/dev/sgx_vepc``, map ``epc`` bytes and fault them in
  (host-side vEPC use only);
* **events**: ``microcode_load`` (``k.svn.microcode_reload``), ``svn_update_trigger``
  (``k.svn.update_svn_store``), ``tcb_recovery`` (Intel publishes a new TCB level),
  ``entropy_starve``/``entropy_restore`` (RDSEED), the operator's ``drain``/``restart`` of
  Intel's recommended runtime TCB-recovery flow, and ``kexec`` (a new kernel on the same machine
  without a reset).

Every action is a synchronous call into the kernel; simulated time is a
:class:`~sgxsim.sim.clock.SimClock` that the hardware charges leaf costs to and that the loop
moves to each event's time. All randomness comes from :class:`~sgxsim.rand.Rng` streams of the seed.

The result (:class:`RunResult`) holds the :class:`~sgxsim.sim.report.Report`, the metrics keyed as
:data:`~sgxsim.sim.timeline.COMPARISON_METRICS`, the timeline samples, the Chrome trace and the
kernel log.

Models: a datacenter host running SGX services through a late microcode load (Intel's "Runtime
Microcode Updates with Intel SGX", cdrdv2 648682; the RFC v2 and Linux 6.19 designs as
``sgxsim.kernel.svn`` implements them).
Differs: the loop is single-threaded: a kernel call (an ioctl, a whole SVN update) runs to
completion before the next event, so users never observe the EPC-locked window itself, only its
consequences (dead enclaves, refused opens); ENCLS leaves of one action appear in the trace as one
slice per leaf kind laid end to end (their exact interleaving inside the action is not
recorded); ``swap_out`` memory pressure is injected by running the kernel's reclaimer right
after that enclave is built (workloads that need more EPC than the machine has are swapped out by
the kernel's own reclaim while they are built, and the narrative says how many pages).
"""

from __future__ import annotations

import contextlib
import functools
import heapq
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from sgxsim.attest import VerifiedQuote
from sgxsim.errors import InvalidArgument, ScenarioError
from sgxsim.hw.arch import PAGE_SIZE, EnclsLeaf, EncluLeaf, PageType, SecinfoFlags, cpusvn_le, secinfo_flags
from sgxsim.hw.cpu import MicrocodePatch
from sgxsim.hw.epc import EpcSectionConfig
from sgxsim.hw.machine import DEFAULT_EPC_BASE, DEFAULT_EPC_STRIDE, LatencyTable, Machine, MachineConfig
from sgxsim.kernel import uapi
from sgxsim.kernel.locking import NullScheduler, NullTask
from sgxsim.kernel.main import EpcOwner, Kernel, KernelConfig
from sgxsim.kernel.policy import SvnPolicy
from sgxsim.kernel.printk import KernelLog
from sgxsim.kernel.process import Process, ProcessSignal
from sgxsim.kernel.svn import SvnConfig, SvnUpdate
from sgxsim.rand import Rng
from sgxsim.sdk.image import EnclaveImage, Segment, enclave_size, standard_image
from sgxsim.sdk.loader import load_enclave
from sgxsim.sdk.quoting import (
    APP_SOURCE,
    AeCallError,
    AppEnclave,
    EnclaveBuild,
    EnclaveLost,
)
from sgxsim.sdk.sign import generate_signing_key, sign_enclave
from sgxsim.sim.attestation import AttestationWorld, Platform, TcbRecovery, default_tcb_description
from sgxsim.sim.clock import SimClock
from sgxsim.sim.report import EnclaveRow, Report, Scalar
from sgxsim.sim.scenario import (
    EventSpec,
    Scenario,
    VmSpec,
    WorkloadSpec,
    late_event_warning,
    overrun_warning,
)
from sgxsim.sim.timeline import TimelineData, format_ns
from sgxsim.sim.trace import DEFAULT_MAX_BYTES, TraceRecorder, Track

__all__ = [
    "RUN_POLICIES",
    "WHAT_IF_LABEL",
    "WHAT_IF_POLICY",
    "RunResult",
    "Runner",
    "policy_label",
    "run_scenario",
]

#: The what-if policy: the RFC v2 teardown, skipped when no CPU's loaded SVN exceeds CPUSVN.
WHAT_IF_POLICY = "only_if_svn_rises"
#: How reports label the what-if (it needs knowledge Linux does not have).
WHAT_IF_LABEL = "only_if_svn_rises (what-if, impossible in Linux)"
#: Policies :class:`Runner` accepts: the three designs, a pre-EUPDATESVN kernel, the what-if.
RUN_POLICIES = (*(p.value for p in SvnPolicy), WHAT_IF_POLICY)

#: A refused open/ioctl is retried after this long (simulated).
RETRY_NS = 100_000_000
#: At most this many retries of one start before the workload is reported failed.
MAX_RETRIES = 50
#: Bytes a workload seals at start and unseals on every restart.
_SEAL_SECRET = b"sgxsim workload state"
#: Trace pids of processes of the n-th kernel (after kexec) start at n * this.
_PID_STRIDE = 100_000
_ENCLAVE_OWNERS = (int(EpcOwner.ENCL_PAGE), int(EpcOwner.SECS), int(EpcOwner.VA_PAGE))
#: EPC pages per slice when counting pages by owner (bounded temporaries).
_COUNT_SLICE = 1 << 20
_AESMD = "aesmd (PCE+QE)"
_IOCTL_NAMES: Mapping[int, str] = MappingProxyType(
    {
        uapi.SGX_IOC_ENCLAVE_CREATE: "SGX_IOC_ENCLAVE_CREATE",
        uapi.SGX_IOC_ENCLAVE_ADD_PAGES: "SGX_IOC_ENCLAVE_ADD_PAGES",
        uapi.SGX_IOC_ENCLAVE_INIT: "SGX_IOC_ENCLAVE_INIT",
        uapi.SGX_IOC_ENCLAVE_PROVISION: "SGX_IOC_ENCLAVE_PROVISION",
        uapi.SGX_IOC_VEPC_REMOVE_ALL: "SGX_IOC_VEPC_REMOVE_ALL",
    }
)


def policy_label(policy: str) -> str:
    """The name a report shows for ``policy`` (the what-if is marked as such)."""
    return WHAT_IF_LABEL if policy == WHAT_IF_POLICY else policy


# ---------------------------------------------------------------------------------------
# Plumbing: a clocked scheduler, a traced process


class _ClockedScheduler(NullScheduler):
    """The single-task scheduler with the run's :class:`SimClock` as its time (log timestamps).

    Still a :class:`NullScheduler`, so the kernel takes the hardware batch paths.
    """

    def __init__(self, clock: SimClock) -> None:
        super().__init__(NullTask())
        self.clock = clock

    def now_ns(self) -> int:
        return self.clock.now_ns()

    def charge(self, ns: int) -> None:
        self.clock.advance(ns)

    def sleep_ns(self, ns: int, interruptible: bool = False) -> bool:
        if interruptible and self.task.signal_pending:
            return False
        self.clock.advance(ns)
        return True


class _TracedProcess(Process):
    """A :class:`Process` whose open/ioctl/mmap calls become slices on its trace track.

    Refused calls (OSError) are counted by errno for the run's metrics.
    """

    def __init__(self, runner: Runner, k: Kernel, name: str, cpu: int) -> None:
        super().__init__(k, name, cpu=cpu)
        self._runner = runner
        self.track = runner._process_track(self)

    def _syscall(self, name: str, fn: Callable[[], int]) -> int:
        r = self._runner
        t0 = r.clock.now_ns()
        try:
            ret = fn()
        except OSError as err:
            r._refused(self, name, err, t0)
            raise
        r.trace.slice(self.track, name, t0, r.clock.now_ns() - t0, "ioctl")
        return ret

    def open(self, path: str, flags: int = uapi.O_RDWR, mode: int = 0o600) -> int:
        return self._syscall(f"open {path}", lambda: super(_TracedProcess, self).open(path, flags, mode))

    def ioctl(self, fd: int, request: int, arg: Any = 0) -> int:
        name = _IOCTL_NAMES.get(request, f"ioctl {request:#x}")
        return self._syscall(name, lambda: super(_TracedProcess, self).ioctl(fd, request, arg))


# ---------------------------------------------------------------------------------------
# Run state


@dataclass
class _Instance:
    """One enclave process of a workload (``count`` instances share a spec and a build)."""

    spec: WorkloadSpec
    name: str
    index: int
    cpu: int
    state: str = "pending"  # pending, running, lost, drained, exited, failed
    proc: Process | None = None
    app: AppEnclave | None = None
    encl_id: int = -1
    generation: int = 0
    restarts: int = 0
    retries: int = 0
    down_since: int | None = None
    downtime_ns: int = 0
    peak_pages: int = 0
    last_verdict: str | None = None
    sealed: bytes | None = None
    started_once: bool = False
    pid: int = 0


@dataclass
class _Vm:
    spec: VmSpec
    cpu: int
    state: str = "pending"
    proc: Process | None = None
    vepc_id: int = -1
    peak_pages: int = 0
    pid: int = 0


@dataclass
class RunResult:
    """What a run produced: the report, metrics, timeline, trace, kernel log and final state."""

    scenario: Scenario
    policy: str
    seed: int
    report: Report
    metrics: dict[str, Scalar]
    timeline: TimelineData
    trace: TraceRecorder
    kernel_log: list[str]
    end_ns: int
    events_run: int
    updates: list[dict[str, Scalar]] = field(default_factory=list)


def _bytes_label(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} B"


# ---------------------------------------------------------------------------------------
# The runner


class Runner:
    """Runs one scenario under one policy; see the module docstring.

    ``seed`` overrides the scenario's seed; ``policy`` overrides ``machine.svn_update_policy``
    (one of :data:`RUN_POLICIES`); ``progress(now_ns, duration_ns)`` is called after every event.
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        seed: int | None = None,
        policy: str | None = None,
        progress: Callable[[int, int], None] | None = None,
        trace_max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if not isinstance(scenario, Scenario):
            raise InvalidArgument(f"scenario must be a Scenario, got {type(scenario).__name__}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise InvalidArgument(f"seed must be an int >= 0, got {seed!r}")
        pol = scenario.machine.svn_update_policy if policy is None else policy
        if pol not in RUN_POLICIES:
            raise InvalidArgument(f"policy must be one of {', '.join(RUN_POLICIES)}; got {pol!r}")
        self.scenario = scenario
        self.seed = scenario.seed if seed is None else seed
        self.policy = pol
        self.progress = progress
        self.rng = Rng(self.seed)
        self._jitter = self.rng.stream("workload")
        self.clock = SimClock()
        self.trace = TraceRecorder(
            metadata={"scenario": scenario.name, "seed": self.seed, "policy": policy_label(pol)},
            max_bytes=trace_max_bytes,
        )
        self.timeline = TimelineData()
        self.narrative: list[str] = []
        self._heap: list[tuple[int, int, Callable[[], None]]] = []
        self._seq = 0
        self._events_run = 0
        self._validate()
        self.machine = Machine(self._machine_config(), self.rng.child("machine"), clock=self.clock)
        self.sched = _ClockedScheduler(self.clock)
        self.generation = 0
        self._old_logs: list[str] = []
        self._old_warnings = 0
        #: What the run had to change from the scenario as written (report.json ``warnings``).
        self.warnings: list[dict[str, Scalar]] = []
        self.kernel = self._boot()
        #: Scenario times (``start``, ``at``, ``duration``) count from the end of the first boot.
        self.t0_ns = self.clock.now_ns()
        self.world = AttestationWorld(
            self.seed,
            default_tcb_description(
                base=scenario.machine.early_patch.base_svn,
                late_microcode=max(scenario.tcb.up_to_date_late_microcode_svn, 1),
            ),
        )
        self.platform: Platform = self.world.add_platform(self.machine, self.kernel)
        self._isv_key = generate_signing_key(self.rng.stream("isv-key"))
        self._builds: dict[str, EnclaveBuild] = {}
        self.instances: list[_Instance] = []
        ncpu = len(self.machine.cpus)
        for w in scenario.workloads:
            for i in range(w.count):
                name = w.name if w.count == 1 else f"{w.name}-{i}"
                self.instances.append(_Instance(w, name, i, cpu=(len(self.instances) + 1) % ncpu))
        self.vms = [_Vm(v, cpu=(len(self.instances) + 1 + j) % ncpu) for j, v in enumerate(scenario.vms)]
        # Metrics.
        self.refused: dict[str, int] = {}
        self.faults = 0
        self.updates: list[SvnUpdate] = []
        self._seen_updates = 0
        self.losses = 0
        self.operator_stops = 0
        self._svn_load_ns: int | None = None
        self._svn_before: bytes | None = None
        self._time_to_attested: int | None = None
        self._recovery_ns: int | None = None
        self._epc_key: tuple[int, ...] = ()
        self._update_id = 0
        self._cpusvn_last = self._cpusvn()

    # ------------------------------------------------------------------ setup

    def _validate(self) -> None:
        s = self.scenario
        if not s.machine.sgx2:
            for i, w in enumerate(s.workloads):
                if w.sgx2_growth:
                    raise ScenarioError(
                        "sgx2_growth needs machine.sgx2 = true (EAUG is an SGX2 leaf)",
                        key=f"workload[{i}].sgx2_growth",
                    )

    def _machine_config(self) -> MachineConfig:
        m = self.scenario.machine
        sections = tuple(
            EpcSectionConfig(DEFAULT_EPC_BASE + i * DEFAULT_EPC_STRIDE, s.size, s.node)
            for i, s in enumerate(m.epc_sections)
        )
        e = m.early_patch
        return MachineConfig(
            sockets=m.sockets,
            cpus_per_socket=m.cpus_per_socket,
            epc_sections=sections,
            sgx2=m.sgx2,
            eupdatesvn=m.eupdatesvn,
            early_microcode=MicrocodePatch.with_svns(
                e.revision, base=e.base_svn, late_microcode=e.late_microcode_svn, name=e.name
            ),
            latency=LatencyTable().with_overrides(dict(m.latency)),
        )

    def _svn_config(self) -> SvnConfig:
        """The kernel's SVN update configuration for this run's policy."""
        m = self.scenario.machine
        policy = SvnPolicy.RFC_V2_TEARDOWN if self.policy == WHAT_IF_POLICY else SvnPolicy(self.policy)
        return SvnConfig(
            policy=policy,
            vepc=m.vepc,
            trigger_mode=m.trigger_mode,
            rfc_v2_as_posted=m.rfc_v2_as_posted,
            only_if_svn_rises=m.only_if_svn_rises or self.policy == WHAT_IF_POLICY,
        )

    def _boot(self) -> Kernel:
        self.sched.task.cpu = 0
        log = KernelLog(self.sched, prefix="sgx")
        cfg = self._svn_config()
        t0 = self.clock.now_ns()
        k = Kernel(self.machine, sched=self.sched, log=log, config=KernelConfig(), svn=cfg)
        self.trace.slice(
            self.trace.cpu(0),
            "sgx_init",
            t0,
            self.clock.now_ns() - t0,
            "kernel",
            {"generation": self.generation},
        )
        self._stats = dict(self.machine.stats)
        self._kstats = dict(k.stats)
        return k

    # ------------------------------------------------------------------ event queue

    def at(self, t_ns: int, action: Callable[[], None]) -> None:
        """Schedule ``action`` at simulated time ``t_ns`` (ties run in scheduling order)."""
        self._seq += 1
        heapq.heappush(self._heap, (t_ns, self._seq, action))

    def run(self, until_ns: int | None = None) -> RunResult:
        """Run the scenario to its end (or to ``until_ns``) and return the result."""
        s = self.scenario
        t0 = self.t0_ns
        end = t0 + (s.duration if until_ns is None else min(until_ns, s.duration))
        self._collect_updates()
        self._record_epc(force=True)
        self.narrative.append(
            f"t={format_ns(self.clock.now_ns())}: booted a {s.machine.sockets}-socket machine "
            f"(scenario time 0 = end of boot), "
            f"{_bytes_label(self.machine.epc.size)} EPC in {len(s.machine.epc_sections)} section(s), "
            f"policy {policy_label(self.policy)}, CPUSVN {self._cpusvn_hex()}"
        )
        for inst in sorted(self.instances, key=lambda i: (not i.spec.swap_out, i.spec.start)):
            self.at(t0 + inst.spec.start, functools.partial(self._start, inst))
        for vm in self.vms:
            self.at(t0 + vm.spec.start, functools.partial(self._start_vm, vm))
        for ev in s.events:
            self.at(t0 + ev.at, functools.partial(self._event, ev))
        while self._heap and self._heap[0][0] <= end:
            t, _, action = heapq.heappop(self._heap)
            self.clock.advance_to(t)
            self._begin_action()
            action()
            self._end_action()
            self._events_run += 1
            if self.progress is not None:
                self.progress(min(self.clock.now_ns(), end), end)
        if (w := overrun_warning(s, self.clock.now_ns() - end)) is not None:
            self.warnings.append(w)
        self.clock.advance_to(end)
        if self.progress is not None:
            self.progress(end, end)
        return self._finish()

    # ------------------------------------------------------------------ per-action bookkeeping

    def _begin_action(self) -> None:
        self._stats = dict(self.machine.stats)
        self._kstats = dict(self.kernel.stats)
        self._t_action = self.clock.now_ns()
        self._cpu_action = self.sched.task.cpu

    def _end_action(self) -> None:
        self._trace_leaves(self._t_action, self._cpu_action)
        self._collect_updates()
        self._record_epc()

    def _trace_leaves(self, t0: int, cpu: int) -> None:
        """One slice per leaf kind executed by the action, laid end to end from ``t0``."""
        now = self.machine.stats
        lat = self.machine.config.latency
        t = t0
        track = self.trace.cpu(cpu)
        for name in sorted(now):
            n = now[name] - self._stats.get(name, 0)
            if n <= 0:
                continue
            if name in EnclsLeaf.__members__:
                dur, cat = lat.encls[EnclsLeaf[name]] * n, "encls"
            elif name in EncluLeaf.__members__:
                dur, cat = lat.enclu[EncluLeaf[name]] * n, "enclu"
            else:
                continue
            self.trace.slice(track, name, t, dur, cat, {"pages" if cat == "encls" else "count": n})
            t += dur
        reclaimed = self.kernel.stats.get("pages_reclaimed", 0) - self._kstats.get("pages_reclaimed", 0)
        if reclaimed > 0:
            dur = reclaimed * lat.encls[EnclsLeaf.EWB]
            self.trace.slice(
                self.trace.ksgxd(), "sgx_reclaim_pages", t0, dur, "reclaim", {"pages": reclaimed}
            )

    def _process_track(self, proc: Process) -> Track:
        return self.trace.process(proc.pid + self.generation * _PID_STRIDE, proc.name)

    def _refused(self, proc: Process, call: str, err: OSError, t0: int) -> None:
        name = _errno_name(err.errno)
        self.refused[name] = self.refused.get(name, 0) + 1
        self.timeline.add_refusal(self.clock.now_ns(), name)
        track = self._process_track(proc)
        self.trace.slice(track, call, t0, self.clock.now_ns() - t0, "ioctl", {"errno": name})

    def _fault(self, inst: _Instance | None, what: str, detail: str) -> None:
        self.faults += 1
        self.timeline.add_refusal(self.clock.now_ns(), what)
        if inst is not None and inst.proc is not None:
            self.trace.instant(
                self._process_track(inst.proc), what, self.clock.now_ns(), "fault", {"detail": detail[:120]}
            )

    # ------------------------------------------------------------------ EPC sampling

    def _cpusvn(self) -> bytes | None:
        return self.machine.cr_cpusvn

    def _cpusvn_hex(self) -> str:
        svn = self._cpusvn()
        return "not yet snapshotted" if svn is None else svn.hex()

    def _record_epc(self, *, force: bool = False) -> None:
        k = self.kernel
        key = (
            self.generation,
            k.sgx_nr_free_pages.read(),
            sum(self.machine.stats.values()),
            sum(inst.encl_id for inst in self.instances),
        )
        if key == self._epc_key and not force:
            return
        self._epc_key = key
        now = self.clock.now_ns()
        counts, vepc_counts = _owner_counts(k)
        known: set[int] = set()
        for inst in self.instances:
            pages = 0
            if inst.state == "running" and 0 <= inst.encl_id < len(counts):
                pages = int(counts[inst.encl_id])
                known.add(inst.encl_id)
            inst.peak_pages = max(inst.peak_pages, pages)
            series = self.timeline.epc_pages.get(inst.name)
            if (series or pages) and (not series or series[-1][1] != pages):
                self.timeline.add_epc(inst.name, now, pages)
        other = int(counts.sum()) - sum(int(counts[i]) for i in known)
        series = self.timeline.epc_pages.get(_AESMD)
        if (series or other) and (not series or series[-1][1] != other):
            self.timeline.add_epc(_AESMD, now, other)
        for vm in self.vms:
            pages = (
                int(vepc_counts[vm.vepc_id])
                if vm.state == "running" and 0 <= vm.vepc_id < len(vepc_counts)
                else 0
            )
            vm.peak_pages = max(vm.peak_pages, pages)
            name = f"VM {vm.spec.name} (vEPC)"
            series = self.timeline.epc_pages.get(name)
            if (series or pages) and (not series or series[-1][1] != pages):
                self.timeline.add_epc(name, now, pages)
        used = k.nr_used_pages()
        self.trace.counter(
            self.trace.machine(), "EPC pages", now, {"used": used, "free": k.sgx_nr_free_pages.read()}
        )

    # ------------------------------------------------------------------ workloads

    def _build(self, spec: WorkloadSpec) -> EnclaveBuild:
        """The workload's application enclave: the attestable app, its image pages and heap."""
        build = self._builds.get(spec.name)
        if build is not None:
            return build
        base = standard_image(APP_SOURCE, heap_size=spec.heap)
        segments = list(base.segments)
        pad = max(spec.image_size - base.src_size, 0)
        pad -= pad % PAGE_SIZE
        end = base.src_size
        if pad:
            flags = secinfo_flags(PageType.PT_REG, int(SecinfoFlags.R | SecinfoFlags.W))
            segments.append(Segment("image", end, pad, flags, spec.measured))
            end += pad
        size = enclave_size(end + spec.sgx2_growth)
        image = EnclaveImage(
            tuple(segments),
            size,
            base.ssa_frame_size,
            base.attributes,
            base.xfrm,
            base.miscselect,
            dict(base.symbols) | {"growth": end} if spec.sgx2_growth else dict(base.symbols),
        )
        sig = sign_enclave(image, self._isv_key, isvprodid=1, isvsvn=1)
        build = EnclaveBuild(spec.name, image, sig, False)
        self._builds[spec.name] = build
        return build

    def _enter_cpu(self, cpu: int) -> None:
        self.sched.task.cpu = cpu
        self._cpu_action = cpu

    def _start(self, inst: _Instance) -> None:
        """Start (or restart) one enclave process: load, grow, unseal/seal, schedule its life."""
        if inst.state in ("running", "exited", "failed"):
            return
        spec = inst.spec
        now = self.clock.now_ns()
        if spec.lifetime is not None and inst.started_once and now >= self.t0_ns + spec.start + spec.lifetime:
            self._set_exited(inst, now)
            return
        self._enter_cpu(inst.cpu)
        build = self._build(spec)
        proc = _TracedProcess(self, self.kernel, inst.name, inst.cpu)
        track = proc.track
        t0 = now
        reclaimed = self.kernel.stats.get("pages_reclaimed", 0)
        try:
            encl = load_enclave(proc, build.image, sigstruct=build.sigstruct)
        except OSError as err:
            proc.exit()
            self.trace.slice(track, "load enclave", t0, self.clock.now_ns() - t0, "ioctl", {"failed": True})
            self._retry(inst, f"load failed: {err.strerror}")
            return
        app = AppEnclave(encl, build, self.rng.stream(f"keyid/{inst.name}/{inst.generation}"))
        inst.proc, inst.app, inst.pid = proc, app, proc.pid
        inst.encl_id = proc.file(encl.fd).private_data.id
        inst.generation += 1
        inst.retries = 0
        self.trace.slice(
            track,
            "load enclave",
            t0,
            self.clock.now_ns() - t0,
            "ioctl",
            {"pages": build.image.total_size // PAGE_SIZE},
        )
        reclaimed = self.kernel.stats.get("pages_reclaimed", 0) - reclaimed
        if reclaimed > 0:
            self._say(
                f"EPC full while {inst.name} was built: the reclaimer swapped {reclaimed} pages out (EWB)"
            )
        if spec.sgx2_growth and not self._grow(inst):
            return
        if spec.seal and not self._seal(inst):
            return
        restarted = inst.started_once
        inst.state = "running"
        if inst.down_since is not None:
            inst.downtime_ns += self.clock.now_ns() - inst.down_since
            inst.down_since = None
        if restarted:
            inst.restarts += 1
            self._say(f"{inst.name} restarted (enclave {inst.encl_id})")
        inst.started_once = True
        if spec.swap_out:
            self._swap_out(inst)
        gen = inst.generation
        if spec.attest_every is not None:
            frac = self._jitter.random()
            self.at(
                self.clock.now_ns() + int(spec.attest_every * (0.5 + frac)), lambda: self._attest(inst, gen)
            )
        if spec.lifetime is not None and not restarted:
            self.at(self.t0_ns + spec.start + spec.lifetime, lambda: self._lifetime_end(inst))

    def _retry(self, inst: _Instance, why: str) -> None:
        inst.retries += 1
        if inst.down_since is None:
            inst.down_since = self.clock.now_ns()
        if inst.retries > MAX_RETRIES:
            inst.state = "failed"
            self._say(f"{inst.name} gave up after {MAX_RETRIES} retries ({why})")
            return
        inst.state = "pending"
        self.at(self.clock.now_ns() + RETRY_NS, lambda: self._start(inst))

    def _grow(self, inst: _Instance) -> bool:
        """SGX2: touch the ELRANGE hole after the image page by page; the fault handler EAUGs."""
        assert inst.proc is not None and inst.app is not None
        encl = inst.app.encl
        proc = inst.proc
        start = encl.base + encl.image.symbol("growth")
        n = inst.spec.sgx2_growth // PAGE_SIZE
        t0 = self.clock.now_ns()
        try:
            proc.mmap(
                start,
                n * PAGE_SIZE,
                uapi.PROT_READ | uapi.PROT_WRITE,
                uapi.MAP_SHARED | uapi.MAP_FIXED,
                encl.fd,
            )
            for i in range(n):
                proc.read(start + i * PAGE_SIZE, 1)
        except ProcessSignal as sig:
            self._fault(inst, "SIGBUS", str(sig))
            self._lost(inst, "EAUG growth faulted")
            return False
        except OSError as err:
            self._lost(inst, f"growth mmap failed: {err.strerror}")
            return False
        self.trace.slice(
            proc_track(self, proc), "EAUG growth", t0, self.clock.now_ns() - t0, "fault", {"pages": n}
        )
        return True

    def _seal(self, inst: _Instance) -> bool:
        assert inst.app is not None
        try:
            if inst.sealed is None:
                inst.sealed = inst.app.seal(_SEAL_SECRET)
            elif inst.app.unseal(inst.sealed) != _SEAL_SECRET:
                self._say(f"{inst.name}: unsealed data differs")
        except EnclaveLost as err:
            self._fault(inst, "enclave lost", str(err))
            self._lost(inst, "lost while sealing")
            return False
        except AeCallError as err:
            self._say(f"{inst.name}: sealing failed: {err}")
        return True

    def _swap_out(self, inst: _Instance) -> None:
        """Memory pressure: ksgxd reclaims the (oldest) pages of this enclave to its backing store."""
        k = self.kernel
        before = k.stats.get("pages_reclaimed", 0)
        for _ in range(k.npages // 16 + 16):
            if k.lists.empty(k.sgx_active_page_list):
                break
            n = k.stats.get("pages_reclaimed", 0)
            k.sgx_reclaim_pages()
            if k.stats.get("pages_reclaimed", 0) == n and k.stats.get("reclaim_skipped_young", 0) > k.npages:
                break
            if self._encl_pages(inst) <= 1:
                break
        self._say(
            f"memory pressure: ksgxd swaps {inst.name} out "
            f"({k.stats.get('pages_reclaimed', 0) - before} pages EWB'd)"
        )

    def _encl_pages(self, inst: _Instance) -> int:
        counts, _ = _owner_counts(self.kernel)
        return int(counts[inst.encl_id]) if 0 <= inst.encl_id < len(counts) else 0

    def _lifetime_end(self, inst: _Instance) -> None:
        if inst.state in ("exited", "failed"):
            return
        self._stop(inst)
        self._set_exited(inst, self.clock.now_ns())
        self._say(f"{inst.name} finished its work and exited")

    def _set_exited(self, inst: _Instance, now: int) -> None:
        if inst.down_since is not None:
            inst.downtime_ns += now - inst.down_since
            inst.down_since = None
        inst.state = "exited"

    def _stop(self, inst: _Instance) -> None:
        """Close the enclave and end its process (nothing to do for what is gone)."""
        self._enter_cpu(inst.cpu)
        if inst.app is not None:
            with contextlib.suppress(OSError):
                inst.app.close()
        if inst.proc is not None and not inst.proc.exited:
            inst.proc.exit()
        inst.app = None
        inst.proc = None
        inst.encl_id = -1

    def _lost(self, inst: _Instance, why: str) -> None:
        """The enclave lost its EPC: restart or exit per ``on_epc_loss``."""
        now = self.clock.now_ns()
        self.losses += 1
        self._stop(inst)
        inst.down_since = now if inst.down_since is None else inst.down_since
        if inst.spec.on_epc_loss == "restart":
            inst.state = "lost"
            self._say(f"{inst.name}: {why}; restarting")
            self.at(now, lambda: self._start(inst))
        else:
            inst.state = "exited"
            self._say(f"{inst.name}: {why}; exiting (on_epc_loss = exit)")

    def _probe(self, inst: _Instance) -> bool:
        """The application's next ECALL: False (fault counted, loss handled) if the enclave is gone."""
        if inst.state != "running" or inst.app is None:
            return False
        self._enter_cpu(inst.cpu)
        try:
            inst.app.self_report()
        except EnclaveLost as err:
            self._fault(inst, "enclave lost", str(err))
            self._lost(inst, "EPC lost (the vDSO reported a #PF on EENTER)")
            return False
        return True

    def _attest(self, inst: _Instance, gen: int) -> None:
        if inst.state != "running" or inst.generation != gen or inst.app is None:
            return
        spec = inst.spec
        assert spec.attest_every is not None
        self.at(self.clock.now_ns() + spec.attest_every, lambda: self._attest(inst, gen))
        self._enter_cpu(inst.cpu)
        now = self.clock.now_ns()
        app = inst.app
        app_lost: list[bool] = []

        class _Probe:
            def report(self, target_info: Any, report_data: bytes = b"") -> bytes:
                try:
                    return app.report(target_info, report_data)
                except EnclaveLost:
                    app_lost.append(True)
                    raise

        t0 = now
        track = proc_track(self, inst.proc) if inst.proc is not None else None
        try:
            result = self.platform.attest(_Probe(), at_ns=now)
        except EnclaveLost as err:
            if app_lost:
                self._fault(inst, "enclave lost", str(err))
                self._lost(inst, "EPC lost (seen at attestation)")
            else:
                self._verdict(inst, "QuotingFailed", False, str(err))
            return
        except (AeCallError, OSError) as err:
            self._verdict(inst, "QuotingFailed", False, str(err))
            if isinstance(err, OSError):
                self.refused[_errno_name(err.errno)] = self.refused.get(_errno_name(err.errno), 0) + 1
            return
        if track is not None:
            self.trace.slice(track, "attest", t0, self.clock.now_ns() - t0, "attest")
        ver = result.verification
        if isinstance(ver, VerifiedQuote):
            status = str(ver.status.value)
            cpusvn = ver.report_body.cpu_svn
            accepted = status in self.scenario.relying_party.allow
            detail = f"CPUSVN {cpusvn.hex()}"
            rp = self.scenario.relying_party
            if (
                not accepted
                and status == "OutOfDate"
                and self._recovery_ns is not None
                and now - self._recovery_ns <= rp.grace_period
            ):
                accepted = True
                detail += " (grace period)"
            self._verdict(inst, status, accepted, detail)
            if (
                status == "UpToDate"
                and self._time_to_attested is None
                and self._svn_load_ns is not None
                and self._svn_before is not None
                and cpusvn != self._svn_before
                and cpusvn_le(self._svn_before, cpusvn)
            ):
                self._time_to_attested = self.clock.now_ns() - self._svn_load_ns
                self._say(
                    f"{inst.name} attested UpToDate with the new CPUSVN {cpusvn.hex()} "
                    f"({format_ns(self._time_to_attested)} after the microcode load)"
                )
        else:
            self._verdict(inst, "Invalid", False, str(ver))

    def _verdict(self, inst: _Instance, status: str, accepted: bool, detail: str) -> None:
        inst.last_verdict = status
        self.timeline.add_verdict(self.clock.now_ns(), inst.name, status, accepted, detail)

    # ------------------------------------------------------------------ VMs

    def _start_vm(self, vm: _Vm) -> None:
        if vm.state == "running":
            return
        self._enter_cpu(vm.cpu)
        proc = _TracedProcess(self, self.kernel, f"qemu-{vm.spec.name}", vm.cpu)
        t0 = self.clock.now_ns()
        n = vm.spec.epc // PAGE_SIZE
        try:
            fd = proc.open("/dev/sgx_vepc", uapi.O_RDWR)
            vm.vepc_id = proc.file(fd).private_data.id
            addr = proc.mmap(0, n * PAGE_SIZE, uapi.PROT_READ | uapi.PROT_WRITE, uapi.MAP_SHARED, fd, 0)
            for i in range(n):
                proc.read(addr + i * PAGE_SIZE, 1)
        except (OSError, ProcessSignal) as err:
            if not proc.exited:
                proc.exit()
            vm.state = "pending"
            self._say(f"VM {vm.spec.name} could not map its vEPC ({err}); retrying")
            self.at(self.clock.now_ns() + RETRY_NS, lambda: self._start_vm(vm))
            return
        vm.proc, vm.pid, vm.state = proc, proc.pid, "running"
        self.trace.slice(
            proc_track(self, proc), "fault in vEPC", t0, self.clock.now_ns() - t0, "fault", {"pages": n}
        )
        self._say(f"VM {vm.spec.name} started with {_bytes_label(vm.spec.epc)} of vEPC")

    def _stop_vm(self, vm: _Vm) -> None:
        self._enter_cpu(vm.cpu)
        if vm.proc is not None and not vm.proc.exited:
            vm.proc.exit()
        vm.proc = None
        vm.vepc_id = -1
        vm.state = "drained"

    # ------------------------------------------------------------------ events

    def _say(self, text: str) -> None:
        self.narrative.append(f"t={format_ns(self.clock.now_ns())}: {text}")

    def _event(self, ev: EventSpec) -> None:
        if (w := late_event_warning(ev, self.clock.now_ns() - (self.t0_ns + ev.at))) is not None:
            self.warnings.append(w)
        self._enter_cpu(0)
        handler = {
            "microcode_load": self._ev_microcode,
            "svn_update_trigger": self._ev_trigger,
            "tcb_recovery": self._ev_tcb,
            "entropy_starve": self._ev_starve,
            "entropy_restore": self._ev_restore,
            "drain": self._ev_drain,
            "restart": self._ev_restart,
            "kexec": self._ev_kexec,
        }[ev.kind]
        handler(ev)

    def _patch(self, name: str) -> MicrocodePatch:
        for p in self.scenario.machine.patches:
            if p.name == name:
                return MicrocodePatch.with_svns(
                    p.revision, base=p.base_svn, late_microcode=p.late_microcode_svn, name=p.name
                )
        raise ScenarioError(f"no patch named {name!r}", key="event.patch")  # parse_scenario checked

    def _ev_microcode(self, ev: EventSpec) -> None:
        assert ev.patch is not None
        patch = self._patch(ev.patch)
        now = self.clock.now_ns()
        before = self._cpusvn()
        rises = before is not None and patch.svn != before and cpusvn_le(before, patch.svn)
        if rises and self._svn_load_ns is None:
            self._svn_load_ns = now
            self._svn_before = before
        svn = getattr(self.kernel, "svn", None)
        if svn is None:
            ok = all(self.machine.load_microcode(lp.id, patch) for lp in self.machine.cpus)
            ret = 0 if ok else -uapi.EINVAL
            self.kernel.log.pr_info(
                "microcode: late load of %s (no SGX SVN procedure in this kernel)", patch.name
            )
        else:
            ret = svn.microcode_reload(patch)
        self._say(
            f"late microcode load of {patch.name} (rev {patch.revision:#x}, SVN "
            f"{'raises' if rises else 'does not raise'} the SGX TCB): "
            f"{'ok' if ret == 0 else _errno_name(-ret)}"
        )
        self._after_kernel_event()

    def _ev_trigger(self, ev: EventSpec) -> None:
        ret = self.kernel.svn.update_svn_store()
        self._say(f"administrator writes sgx.update_svn: {'ok' if ret == 0 else _errno_name(-ret)}")
        if ret < 0:
            self.timeline.add_refusal(self.clock.now_ns(), f"update_svn {_errno_name(-ret)}")
        self._after_kernel_event()

    def _ev_tcb(self, ev: EventSpec) -> None:
        assert ev.new_late_microcode_svn is not None
        base = self.scenario.machine.early_patch.base_svn
        rec = TcbRecovery.late_microcode(ev.new_late_microcode_svn, base=base)
        self.world.publish_recovery(rec, at_ns=self.clock.now_ns())
        self._recovery_ns = self.clock.now_ns()
        self._say(
            f"Intel publishes a TCB recovery: late-microcode SVN {ev.new_late_microcode_svn} is UpToDate, "
            "older levels OutOfDate (tcbEvaluationDataNumber "
            f"{self.world.tcb_model.tcb_evaluation_data_number})"
        )

    def _ev_starve(self, ev: EventSpec) -> None:
        self.machine.entropy.starve(ev.count)
        self._say(f"RDSEED starved ({'until restored' if ev.count is None else f'next {ev.count} draws'})")

    def _ev_restore(self, ev: EventSpec) -> None:
        self.machine.entropy.restore()
        self._say("RDSEED entropy restored")

    def _ev_drain(self, ev: EventSpec) -> None:
        now = self.clock.now_ns()
        n = 0
        for inst in self.instances:
            if inst.state in ("running", "pending", "lost"):
                if inst.state == "running":
                    n += 1
                self._stop(inst)
                inst.state = "drained"
                inst.down_since = now if inst.down_since is None else inst.down_since
        for vm in self.vms:
            if vm.state == "running":
                self._stop_vm(vm)
        self.platform.stop()
        self.operator_stops += n
        self._say(f"operator drains the host: {n} enclave(s), {len(self.vms)} VM(s) and aesmd stopped")
        self._after_kernel_event()

    def _ev_restart(self, ev: EventSpec) -> None:
        n = 0
        for inst in self.instances:
            if inst.state == "drained":
                inst.state = "pending"
                n += 1
                self._start(inst)
        for vm in self.vms:
            if vm.state == "drained":
                self._start_vm(vm)
        self._say(f"operator restarts {n} enclave(s) and the VMs")

    def _ev_kexec(self, ev: EventSpec) -> None:
        now = self.clock.now_ns()
        self._collect_updates()
        running = [i for i in self.instances if i.state in ("running", "pending", "lost")]
        for inst in running:
            inst.proc = inst.app = None
            inst.encl_id = -1
            inst.state = "drained"
            inst.down_since = now if inst.down_since is None else inst.down_since
        vms = [vm for vm in self.vms if vm.state == "running"]
        for vm in vms:
            vm.proc, vm.vepc_id, vm.state = None, -1, "drained"
        self._old_logs += self.kernel.log.lines()
        self._old_warnings += self.kernel.log.warn_count
        self.machine.kexec()
        self.generation += 1
        self.kernel = self._boot()
        self._seen_updates = 0
        self.platform = self.world.add_platform(self.machine, self.kernel)
        self._say(f"kexec into a new kernel (no reset): CPUSVN {self._cpusvn_hex()}; services restart")
        self._after_kernel_event()
        for inst in running:
            inst.state = "pending"
            self._start(inst)
        for vm in vms:
            self._start_vm(vm)

    def _after_kernel_event(self) -> None:
        """Collect SVN updates, then let every running application make its next ECALL."""
        self._collect_updates()
        for inst in self.instances:
            if inst.state == "running":
                self._probe(inst)

    def _collect_updates(self) -> None:
        new = list(self.kernel.svn.updates)[self._seen_updates :]
        self._seen_updates += len(new)
        for u in new:
            self.updates.append(u)
            self._update_id += 1
            outcome = str(u.result_name) if u.result != 0 else "updated"
            self.timeline.add_update_window(u.start_ns, max(u.end_ns, u.start_ns), outcome)
            self.trace.async_slice(
                f"SVN update ({u.trigger})",
                u.start_ns,
                max(u.end_ns - u.start_ns, 0),
                async_id=self._update_id,
                args={
                    "result": str(u.result_name),
                    "tries": int(u.tries),
                    "pages_zapped": int(u.pages_zapped),
                },
            )
            for name, start, end in u.phases:
                self.trace.async_slice(name, start, max(end - start, 0), async_id=self._update_id)
            before, after = bytes(u.cpusvn_before), bytes(u.cpusvn_after)
            if before != after:
                self.timeline.add_cpusvn_step(u.end_ns, before.hex(), after.hex())
            self._say(
                f"SGX SVN procedure ({u.trigger}): {u.result_name} after {u.tries} EUPDATESVN "
                f"execution(s), {u.pages_zapped} EPC pages zapped"
                + (f" (+{u.vepc_pages_zapped} vEPC)" if u.vepc_pages_zapped else "")
                + f", {len(u.enclaves_killed)} enclave(s) destroyed, "
                f"{format_ns(max(u.end_ns - u.start_ns, 0))}"
                + (f"; CPUSVN {before.hex()} -> {after.hex()}" if before != after else "")
            )
        cur = self._cpusvn()
        self._cpusvn_last = cur if cur is not None else self._cpusvn_last

    # ------------------------------------------------------------------ the result

    def metrics(self) -> dict[str, Scalar]:
        """The comparison metrics (timeline.COMPARISON_METRICS keys) plus a few counts."""
        now = self.clock.now_ns()
        downtime = 0
        for inst in self.instances:
            downtime += inst.downtime_ns + (now - inst.down_since if inst.down_since is not None else 0)
        zapped = sum(int(u.pages_zapped) + int(u.vepc_pages_zapped) for u in self.updates)
        killed = sum(len(u.enclaves_killed) for u in self.updates)
        duration = sum(max(int(u.end_ns) - int(u.start_ns), 0) for u in self.updates)
        verdicts = self.timeline.verdicts
        return {
            "time_to_attested_ns": self._time_to_attested,
            "enclaves_destroyed": killed if self.updates else self.losses,
            "enclave_downtime_ns": downtime,
            "refused_ioctls": sum(self.refused.values()),
            "faults": self.faults,
            "epc_pages_zapped": zapped,
            "update_duration_ns": duration if self.updates else None,
            "svn_updates": len(self.updates),
            "svn_updates_ok": sum(1 for u in self.updates if u.result == 0),
            "verdicts_accepted": sum(1 for v in verdicts if v.accepted),
            "verdicts_refused": sum(1 for v in verdicts if not v.accepted),
            "enclaves_stopped_by_operator": self.operator_stops,
            "restarts": sum(i.restarts for i in self.instances),
        }

    def _finish(self) -> RunResult:
        end = self.clock.now_ns()
        self._record_epc(force=True)
        self.timeline.end_ns = end
        cap = self.machine.epc.npages
        peak = max((p for series in self.timeline.epc_pages.values() for _, p in series), default=0)
        # The capacity line only where it does not flatten the usage to nothing.
        self.timeline.epc_capacity_pages = cap if peak * 20 >= cap else None
        metrics = self.metrics()
        log = self._old_logs + self.kernel.log.lines()
        warnings = self._old_warnings + self.kernel.log.warn_count
        s = self.scenario
        verdicts = self.timeline.verdicts
        statuses: dict[str, int] = {}
        for v in verdicts:
            statuses[v.status] = statuses.get(v.status, 0) + 1
        final_svn = self._cpusvn_hex()
        summary: list[tuple[str, Scalar]] = [
            ("policy", policy_label(self.policy)),
            ("boot_ns", self.t0_ns),
            ("scenario duration_ns", end - self.t0_ns),
            ("workload enclaves", len(self.instances)),
            ("VMs", len(self.vms)),
            ("SVN update attempts", len(self.updates)),
            ("final CPUSVN", final_svn),
            ("enclaves destroyed", metrics["enclaves_destroyed"]),
            ("restarts", metrics["restarts"]),
            ("enclave downtime_ns", metrics["enclave_downtime_ns"]),
            ("attestations", len(verdicts)),
            ("accepted by relying party", metrics["verdicts_accepted"]),
            ("time to attested new CPUSVN_ns", metrics["time_to_attested_ns"]),
            ("kernel WARNs", warnings),
        ]
        for st in sorted(statuses):
            summary.append((f"verdicts {st}", statuses[st]))
        enclaves = [
            EnclaveRow(
                name=i.name,
                pid=i.pid,
                state=i.state,
                epc_pages_peak=i.peak_pages,
                restarts=i.restarts,
                downtime_ns=i.downtime_ns + (end - i.down_since if i.down_since is not None else 0),
                last_verdict=i.last_verdict,
            )
            for i in self.instances
        ]
        enclaves += [
            EnclaveRow(name=f"VM {v.spec.name} (vEPC)", pid=v.pid, state=v.state, epc_pages_peak=v.peak_pages)
            for v in self.vms
        ]
        machine: dict[str, Scalar] = {
            "sockets": s.machine.sockets,
            "cpus": len(self.machine.cpus),
            "epc_bytes": self.machine.epc.size,
            "epc_sections": len(s.machine.epc_sections),
            "sgx2": s.machine.sgx2,
            "eupdatesvn": s.machine.eupdatesvn,
            "vepc_policy": s.machine.vepc,
            "final_cpusvn": final_svn,
        }
        report = Report(
            scenario=s.name,
            seed=self.seed,
            policy=policy_label(self.policy),
            machine=machine,
            narrative=list(self.narrative),
            summary=summary,
            metrics=metrics,
            enclaves=enclaves,
            verdicts=list(verdicts),
            kernel_log=log,
            kernel_warnings=warnings,
            warnings=list(self.warnings),
        )
        updates: list[dict[str, Scalar]] = [
            {
                "trigger": str(u.trigger),
                "start_ns": int(u.start_ns),
                "end_ns": int(u.end_ns),
                "result": str(u.result_name),
                "tries": int(u.tries),
                "pages_zapped": int(u.pages_zapped),
                "vepc_pages_zapped": int(u.vepc_pages_zapped),
                "enclaves_killed": len(u.enclaves_killed),
            }
            for u in self.updates
        ]
        return RunResult(
            scenario=s,
            policy=self.policy,
            seed=self.seed,
            report=report,
            metrics=metrics,
            timeline=self.timeline,
            trace=self.trace,
            kernel_log=log,
            end_ns=end,
            events_run=self._events_run,
            updates=updates,
        )


def _owner_counts(k: Kernel) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """EPC pages per enclave id (its pages, SECS and VA pages) and per vEPC id.

    One pass over the owner arrays in slices of :data:`_COUNT_SLICE` pages, so the temporaries
    stay bounded whatever the EPC size (a 512 GiB EPC has 134 M pages). Pages are allocated in
    long runs of one owner, so each slice is counted by runs of equal (kind, id) when it has
    few of them (a fraction of the cost of a per-page histogram), page by page otherwise.
    """
    kinds = k.epc_owner_kind
    ids = k.epc_owner_id
    counts = np.zeros(1, dtype=np.int64)
    vepc = np.zeros(1, dtype=np.int64)
    lo_kind, span = np.uint8(min(_ENCLAVE_OWNERS)), np.uint8(max(_ENCLAVE_OWNERS) - min(_ENCLAVE_OWNERS))
    vepc_kind = np.uint8(EpcOwner.VEPC)
    for lo in range(0, len(kinds), _COUNT_SLICE):
        kind = kinds[lo : lo + _COUNT_SLICE]
        owner = ids[lo : lo + _COUNT_SLICE]
        change = np.flatnonzero((owner[1:] != owner[:-1]) | (kind[1:] != kind[:-1]))
        if change.size * 8 < kind.size:
            starts = np.concatenate(([0], change + 1))
            lengths = np.diff(np.append(starts, kind.size)).astype(np.float64)
            kind, owner = kind[starts], owner[starts]
        else:
            lengths = None
        # ENCL_PAGE, SECS and VA_PAGE are consecutive kinds: one unsigned range test.
        encl = (kind - lo_kind) <= span
        guest = kind == vepc_kind
        c = np.bincount(owner[encl], None if lengths is None else lengths[encl])
        v = np.bincount(owner[guest], None if lengths is None else lengths[guest])
        counts = _add_padded(counts, c.astype(np.int64))
        vepc = _add_padded(vepc, v.astype(np.int64))
    return counts, vepc


def _add_padded(a: npt.NDArray[np.int64], b: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    if len(b) > len(a):
        a, b = b.copy(), a
    a[: len(b)] += b
    return a


def proc_track(runner: Runner, proc: Process) -> Track:
    """The trace track of ``proc`` in ``runner``'s trace."""
    return runner._process_track(proc)


def _errno_name(err: int | None) -> str:
    import errno as _errno

    if err is None:
        return "E?"
    return _errno.errorcode.get(err, f"errno {err}")


def run_scenario(
    scenario: Scenario,
    *,
    seed: int | None = None,
    policy: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RunResult:
    """Run ``scenario`` to its end (:class:`Runner` with the same arguments)."""
    return Runner(scenario, seed=seed, policy=policy, progress=progress).run()
