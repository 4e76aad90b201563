# mypy: disable-error-code="misc"
"""The runner's event loop: the scheduler, boot, CPUs, the operator's events, and the run.

Models: a datacenter host running SGX services through a late microcode load (Intel's "Runtime
Microcode Updates with Intel SGX", cdrdv2 648682; the RFC v2 and Linux 6.19 designs as
``sgxsim.kernel.svn`` implements them).
Differs: a logical CPU runs one task at a time for the length of one kernel call or one ECALL
(no time slicing inside either; a thread that blocks in the kernel keeps its CPU); a task that
wants a busy CPU waits for it. ksgxd is not a task: the kernel runs its reclaim at syscall exit.
The batch paths of the kernel (ADD_PAGES, the zap) run as one step when only the calling task is
runnable or no SVN update is under way (then a batch may run past the time another task was due,
by at most one ADD_PAGES window of the loader). The late load's microcode apply is atomic and
waits for the ECALL in progress on CPU 0 to end.
"""

from __future__ import annotations

import collections
import datetime as dt
import random
from collections.abc import Callable, Sequence

from sgxsim.attest import VerifiedQuote  # noqa: F401  (re-exported for workloads)
from sgxsim.errors import InvalidArgument, ScenarioError
from sgxsim.hw.arch import PAGE_SIZE, cpusvn_le
from sgxsim.hw.cpu import LogicalProcessor, MicrocodePatch
from sgxsim.hw.epc import EpcSectionConfig
from sgxsim.hw.machine import DEFAULT_EPC_BASE, DEFAULT_EPC_STRIDE, LatencyTable, Machine, MachineConfig
from sgxsim.kernel import uapi
from sgxsim.kernel.locking import AtomicInt, WaitQueue
from sgxsim.kernel.main import Kernel, KernelConfig
from sgxsim.kernel.policy import WHAT_IF_POLICY, SvnPolicy
from sgxsim.kernel.printk import KernelLog
from sgxsim.kernel.svn import SvnConfig
from sgxsim.rand import Rng
from sgxsim.sdk.sign import generate_signing_key
from sgxsim.sim.attestation import AttestationWorld, Platform, TcbRecovery, default_tcb_description
from sgxsim.sim.report import Scalar
from sgxsim.sim.runner.progress import RunProgress
from sgxsim.sim.runner.results import ResultsMixin, RunResult, errno_name
from sgxsim.sim.runner.workloads import Instance, Vm, WorkloadsMixin
from sgxsim.sim.scenario import EventSpec, Scenario, late_event_warning, overrun_warning
from sgxsim.sim.sched import DeterministicScheduler, Strategy, Task
from sgxsim.sim.timeline import TimelineData, format_ns
from sgxsim.sim.trace import DEFAULT_MAX_BYTES, TraceRecorder

__all__ = ["RUN_POLICIES", "WHAT_IF_LABEL", "WHAT_IF_POLICY", "Runner", "policy_label"]

#: How reports label the what-if :data:`~sgxsim.kernel.policy.WHAT_IF_POLICY` (it needs
#: knowledge Linux does not have).
WHAT_IF_LABEL = f"{WHAT_IF_POLICY} (what-if, impossible in Linux)"
#: Policies :class:`Runner` accepts: the three designs, a pre-EUPDATESVN kernel, the what-if.
RUN_POLICIES = (*(p.value for p in SvnPolicy), WHAT_IF_POLICY)

#: [ASSUMED] Interrupt handling and the return to user space after an AEX, before ERESUME.
IRQ_RETURN_NS = 2_000
#: A charge at least this long is followed by a preemption point (see _RunScheduler.charge).
_YIELD_CHARGE_NS = 50_000
#: Sleep of an idle task with nothing scheduled (longer than any scenario).
_FOREVER_NS = 1 << 60


def policy_label(policy: str) -> str:
    """The name a report shows for ``policy`` (the what-if is marked as such)."""
    return WHAT_IF_LABEL if policy == WHAT_IF_POLICY else policy


class _EarliestFirst(Strategy):
    """The runnable task with the least simulated time; ties by a seeded choice."""

    time_ordered = True

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def choose(self, runnable: Sequence[Task], current: Task | None, step: int) -> Task:
        if len(runnable) == 1:
            return runnable[0]
        t = min(task.local_ns for task in runnable)
        ties = [task for task in runnable if task.local_ns == t]
        return ties[0] if len(ties) == 1 else ties[self._rng.randrange(len(ties))]


class _CountingAtomic(AtomicInt):
    """``zap_waiting_count`` that logs the time of each increment (a release the zap waits for)."""

    def __init__(self, log: list[int], now: Callable[[], int]) -> None:
        super().__init__(0)
        self._log = log
        self._clock = now

    def inc(self) -> None:
        self._log.append(self._clock())
        super().inc()


class _RunScheduler(DeterministicScheduler):
    """The deterministic scheduler with the batch rule of the runner (see :meth:`batch_ok`)."""

    #: The machine whose CPUs the tasks run on (set once it exists).
    machine: Machine | None = None

    #: Whether an SVN update may be running (the EPC locked, or the operator loading microcode).
    update_active: Callable[[], bool] = staticmethod(lambda: False)

    #: A task running a kernel batch path while others could run: it is not preempted until
    #: its system call returns (the batch paths assume nothing interleaves).
    atomic: Task | None = None

    def batch_ok(self) -> bool:
        """Kernel batch paths run when nothing but the caller can run now, or when no SVN update
        is under way (a batch is then one step: at most one ADD_PAGES window of the loader)."""
        cur = self.current
        if cur is None or self.runnable_count() <= 1:
            return True
        if self.update_active():
            return False
        self.atomic = cur
        return True

    def batch_budget_ns(self) -> int:
        """Simulated ns the current task can run before any other task could (the earliest
        other runnable task or timer; 0 on a tie): what an interleaved batch may cover."""
        cur = self.current
        if cur is None:
            return _FOREVER_NS
        horizon = min((t.local_ns for t in self._runnable if t is not cur), default=_FOREVER_NS)
        if self._sleepers:
            horizon = min(horizon, self._sleepers[0][0])
        return max(0, horizon - cur.local_ns)

    def end_atomic(self) -> None:
        """The system call of the atomic task returned: it is preemptible again."""
        if self.atomic is not None and self.atomic is self.current:
            self.atomic = None

    def preempt(self, point: str) -> None:
        cur = self._current
        if cur is None or (self.atomic is not None and self.atomic is cur):
            return
        if self._keeps_running(cur):
            cur.point = point
            return
        super().preempt(point)

    def _keeps_running(self, cur: Task) -> bool:
        """Whether the decision at a preemption point can only pick ``cur`` again: it is strictly
        earlier in simulated time than every other runnable task and every timer, and it is not
        retrying a fault (so a spinning task still meets the scheduler's stuck check).

        The earliest-first strategy would choose it (a unique minimum draws no tie-break), so
        skipping the decision leaves the run unchanged apart from the step count; it saves the
        bulk of the decisions of a long kernel path (a reclaimer batch has ~20 per page).
        """
        if self._stop_depth or cur.fault_retries:
            return False
        t = cur.local_ns
        sleepers = self._sleepers
        if sleepers and sleepers[0][0] <= t:
            return False
        return not any(task.local_ns <= t and task is not cur for task in self._runnable)

    def charge(self, ns: int) -> None:
        """Charge ``ns`` to the current task; after a long charge (a microcode apply, a batch of
        leaves) let the tasks that are earlier in simulated time run first, so nothing the
        charging task changes next is seen before its time."""
        super().charge(ns)
        cur = self.current
        if ns < _YIELD_CHARGE_NS or cur is None or self.machine is None:
            return
        lp = self.machine.cpus[cur.cpu]
        if not lp.in_enclave and lp.inflight is None:  # never inside a leaf or enclave code
            self.preempt("charge")


class Runner(WorkloadsMixin, ResultsMixin):
    """Runs one scenario under one policy; see the package docstring.

    ``seed`` overrides the scenario's seed; ``policy`` overrides ``machine.svn_update_policy``
    (one of :data:`RUN_POLICIES`); ``progress(RunProgress)`` is called as work gets done
    (:mod:`.progress`: EPC pages sanitized during boot, then simulated time at most every 1/1000
    of the run, then events past the end; complete only in the last call, at the end); it does
    not change the run. An exception it raises (e.g. KeyboardInterrupt) stops the run at a safe
    point and propagates.
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        seed: int | None = None,
        policy: str | None = None,
        progress: Callable[[RunProgress], None] | None = None,
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
        self.policy = str(pol)
        self.progress = progress
        self.rng = Rng(self.seed)
        self._jitter = self.rng.stream("workload")
        self.sched = _RunScheduler(_EarliestFirst(self.rng.stream("sched")), record_trace=False)
        self.sched.on_step = self._on_step
        self.clock = self.sched.clock
        self.trace = TraceRecorder(
            metadata={"scenario": scenario.name, "seed": self.seed, "policy": policy_label(self.policy)},
            max_bytes=trace_max_bytes,
        )
        self.timeline = TimelineData()
        self._init_results()
        self._validate()
        epc_pages = sum(sec.size for sec in scenario.machine.epc_sections) // PAGE_SIZE
        if progress is not None:
            progress(RunProgress("boot", 0, epc_pages, 0, scenario.duration))  # the bar shows at once
        self.machine = Machine(
            self._machine_config(), self.rng.child("machine"), clock=self.sched.cpu_clock()
        )
        self.machine.on_enclave_step = self._enclave_step
        self.sched.machine = self.machine
        self._updating = False
        self.sched.update_active = lambda: self._updating or self.kernel.sgx_epc_locked
        self.ncpu = len(self.machine.cpus)
        #: The task that holds each CPU (one kernel call or ECALL at a time), and its waiters.
        self._cpu_owner: list[Task | None] = [None] * self.ncpu
        self._cpu_waitq = [WaitQueue(self.sched, f"cpu{c}") for c in range(self.ncpu)]
        self._cpu_queue: list[collections.deque[Task]] = [collections.deque() for _ in range(self.ncpu)]
        #: ECALL threads sleeping out their service time in enclave mode, by CPU.
        self._in_enclave: dict[int, Task] = {}
        #: ECALL threads between an interrupt's AEX and their return to user space.
        self._irq_exit: set[int] = set()
        #: Service deadline of the ECALL each ECALL thread is in, by task id.
        self._deadline: dict[int, int] = {}
        self.generation = 0
        #: What the run had to change from the scenario as written (report.json ``warnings``).
        self.warnings: list[dict[str, Scalar]] = []
        self._old_logs: list[str] = []
        self._old_warnings = 0
        self.kernel = self._boot(epc_pages)
        #: End of the first boot (every time in a run counts from power-on).
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
        self._init_workloads()
        self._end_ns = 0
        self._last_progress = -1
        self._last_overrun = -1
        self._events_due = 0
        self._progress_step = max((max(scenario.duration, self.t0_ns) - self.t0_ns) // 1000, 1)
        self._cpusvn_last = self._cpusvn()
        self._ops_waitq = WaitQueue(self.sched, "operator")
        self._events_done = 0

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

    def _boot(self, epc_pages: int = 0) -> Kernel:
        """Boot a kernel on the machine; the first boot reports its sanitize pass as progress."""
        log = KernelLog(self.sched, prefix="sgx")
        t0 = self._now()
        report = self.progress
        watch: Callable[[int, int], None] | None = None
        if report is not None and epc_pages:
            end = self.scenario.duration

            def watch(done: int, total: int) -> None:
                # Never complete while booting: the run is still ahead.
                report(RunProgress("boot", min(done, epc_pages - 1), epc_pages, self._now(), end))

        k = Kernel(
            self.machine,
            sched=self.sched,
            log=log,
            config=KernelConfig(),
            svn=self._svn_config(),
            boot_progress=watch,
        )
        self.trace.slice(
            self.trace.cpu(0), "sgx_init", t0, self._now() - t0, "kernel", {"generation": self.generation}
        )
        self._hook_kernel(k)
        return k

    def _hook_kernel(self, k: Kernel) -> None:
        """Observe the kernel's IPIs (and deliver them to CPUs sleeping in enclave mode) and its
        release waits. Models: the IPI reaching a CPU that runs enclave code (an interrupt: AEX)."""
        send = k.on_each_cpu_mask
        machine = self.machine

        def on_each_cpu_mask(cpus: set[int] | frozenset[int]) -> None:
            now = self._now()
            self._ipi_log.append((now, len(cpus)))
            for cpu in sorted(cpus):
                lp = machine.cpus[cpu]
                if lp.in_enclave:
                    lp.pending_interrupt = True
                    task = self._in_enclave.get(cpu)
                    if task is not None:
                        self.sched.wake_up_process(task)
                    self.trace.instant(self.trace.cpu(cpu), "IPI", now, "window")
                    self.timeline.cpu_marks.append((now, cpu, "IPI"))
            send(cpus)

        setattr(k, "on_each_cpu_mask", on_each_cpu_mask)  # noqa: B010 - instance hook
        k.svn.zap_waiting_count = _CountingAtomic(self._release_wait_log, self._now)
        deferred = k.run_deferred_work

        def run_deferred_work() -> None:
            # Between an interrupt's AEX and the vDSO's ERESUME: the CPU handles the interrupt
            # and returns to user space, which takes time; the IPI sender runs meanwhile.
            cur = self.sched.current
            if cur is not None and cur.tid in self._irq_exit:
                self._irq_exit.discard(cur.tid)
                self.sched.charge(IRQ_RETURN_NS)
                self.sched.preempt("irq_exit")
            deferred()

        setattr(k, "run_deferred_work", run_deferred_work)  # noqa: B010 - instance hook

    # ------------------------------------------------------------------ time and CPUs

    def _now(self) -> int:
        """The simulated time of the running task (the global time outside the run)."""
        cur = self.sched.current
        return cur.local_ns if cur is not None else self.clock.now_ns()

    def _sleep_until(self, t_ns: int, interruptible: bool = True) -> bool:
        """Sleep the current task until ``t_ns``; False if woken early (wake_up_process)."""
        now = self._now()
        if t_ns <= now:
            return True
        return self.sched.sleep_ns(min(t_ns - now, _FOREVER_NS), interruptible=interruptible)

    def _cpu_acquire(self, cpu: int) -> None:
        """Take ``cpu`` for one kernel call or ECALL; a busy CPU is handed over in FIFO order."""
        cur = self.sched.current
        if cur is None:
            return
        cur.cpu = cpu
        owner = self._cpu_owner
        if owner[cpu] is cur:
            return
        if owner[cpu] is None and not self._cpu_queue[cpu]:
            owner[cpu] = cur
            return
        self._cpu_queue[cpu].append(cur)
        self._cpu_waitq[cpu].wait_event(lambda: owner[cpu] is cur)

    def _cpu_release(self, cpu: int) -> None:
        cur = self.sched.current
        if cur is None or self._cpu_owner[cpu] is not cur:
            return
        queue = self._cpu_queue[cpu]
        self._cpu_owner[cpu] = queue.popleft() if queue else None
        if queue is not None and self._cpu_waitq[cpu].active():
            self._cpu_waitq[cpu].wake_up_all()

    def _enclave_step(self, lp: LogicalProcessor) -> None:
        """Before each access of enclave code: an ECALL thread spends its service time here,
        asleep in enclave mode until the ECALL's deadline or an interrupt (the kernel's IPI)."""
        cur = self.sched.current
        if cur is None:
            return
        deadline = self._deadline.get(cur.tid)
        if deadline is None or cur.local_ns >= deadline:
            return
        self._in_enclave[lp.id] = cur
        try:
            self.sched.sleep_ns(deadline - cur.local_ns, interruptible=True)
        finally:
            self._in_enclave.pop(lp.id, None)
        if lp.pending_interrupt:
            self._aex_log.append(cur.local_ns)
            self.timeline.cpu_marks.append((cur.local_ns, lp.id, "AEX"))
            self._irq_exit.add(cur.tid)

    def _on_step(self, step: int, task: Task) -> None:
        if self.progress is None:
            return
        now = task.local_ns
        end = self._end_ns
        if now < end:
            if now - self._last_progress >= self._progress_step:
                self._last_progress = now
                self.progress(RunProgress("run", now - self.t0_ns, end - self.t0_ns, now, end))
            return
        # Past the end: the events written before it that still run (never complete here: the
        # run ends after the last of them).
        due, done = self._events_due, self._events_done
        if done < due and (done != self._last_overrun or now - self._last_progress >= self._progress_step):
            self._last_progress = now
            self._last_overrun = done
            self.progress(RunProgress("overrun", done, due, now, end))

    # ------------------------------------------------------------------ the run

    def run(self, until_ns: int | None = None) -> RunResult:
        """Run the scenario to its end (or to ``until_ns``, power-on time) and return the result."""
        s = self.scenario
        end = s.duration if until_ns is None else min(until_ns, s.duration)
        self._end_ns = end = max(end, self.t0_ns)
        self._collect_updates()
        self._record_epc(force=True)
        self._event(
            "boot",
            0,
            self.t0_ns,
            f"{s.machine.sockets}-socket machine",
            "ok",
            f"{_bytes_label(self.machine.epc.size)} EPC in {len(s.machine.epc_sections)} section(s), "
            f"policy {policy_label(self.policy)}, CPUSVN {self._cpusvn_hex()}",
        )
        self._spawn_workloads()
        self.sched.spawn(self._operator, name="operator", cpu=0, daemon=True)
        due = self._events_due = sum(1 for ev in s.events if ev.at <= end)
        finished: list[int] = []

        def end_of_run() -> None:
            # Every event written before the end runs, even if the machine was busy until then.
            self._sleep_until(end, interruptible=False)
            self._ops_waitq.wait_event(lambda: self._events_done >= due)
            finished.append(self._now())

        self.sched.spawn(end_of_run, name="end-of-run", cpu=0)
        result = self.sched.run()
        if not result.completed:
            raise ScenarioError(f"the run stopped early: {result.describe()}")
        last = max(finished, default=end)
        if until_ns is None and (w := overrun_warning(s, last - s.duration)) is not None:
            self.warnings.append(w)
        # The run ends when its last event's work did (a boot or a zap of a huge EPC can outlast
        # the scenario): every figure is closed then, never before something it contains.
        self._end_ns = end = max(end, last)
        self.clock.advance_to(end)
        self._collect_updates()
        if self.progress is not None:
            total = max(end - self.t0_ns, 1)
            self.progress(RunProgress("run", total, total, max(self.clock.now_ns(), end), end))
        out = self._finish(end)
        if until_ns is None:
            self.close()
        return out

    def close(self) -> None:
        """End the tasks still alive (daemons parked at the end of the run)."""
        try:
            self.sched.close()
        except Exception:
            return

    # ------------------------------------------------------------------ the operator

    def _operator(self) -> None:
        """The administrator: the scenario's events in time order (file order for equal times)."""
        for ev in sorted(self.scenario.events, key=lambda e: e.at):
            self._sleep_until(ev.at, interruptible=False)
            self._cpu_acquire(0)
            t0 = self._now()
            if (w := late_event_warning(ev, t0 - ev.at)) is not None:
                self.warnings.append(w)
            self._updating = ev.kind in ("microcode_load", "svn_update_trigger", "kexec")
            try:
                self._run_event(ev)
            finally:
                self._updating = False
                self._cpu_release(0)
            self.trace.slice(self.trace.cpu(0), ev.kind, t0, self._now() - t0, "kernel")
            self.timeline.cpu_spans.append((0, t0, self._now(), ev.kind))
            self._collect_updates()
            self._record_epc()
            self._notify_all()
            self._events_done += 1
            self._ops_waitq.wake_up_all()

    def _run_event(self, ev: EventSpec) -> None:
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
        t0 = self._now()
        before = self._cpusvn()
        rises = before is not None and patch.svn != before and cpusvn_le(before, patch.svn)
        if rises and self._svn_load_ns is None:
            self._svn_load_ns = t0
            self._svn_before = before
        svn = getattr(self.kernel, "svn", None)
        if svn is None:
            ok = all(self.machine.load_microcode(lp.id, patch) for lp in self.machine.cpus)
            ret = 0 if ok else -uapi.EINVAL
        else:
            ret = svn.microcode_reload(patch)
        self._event(
            "microcode_load",
            t0,
            self._now(),
            patch.name,
            "ok" if ret == 0 else errno_name(-ret),
            f"rev {patch.revision:#x}, {'SVN-raising' if rises else 'functional'} "
            f"(the SVN {'raises' if rises else 'does not raise'} the SGX TCB)",
            svn_raising=rises,
        )

    def _ev_trigger(self, ev: EventSpec) -> None:
        t0 = self._now()
        ret = self.kernel.svn.update_svn_store()
        outcome = "ok" if ret == 0 else errno_name(-ret)
        self._event(
            "svn_update_trigger", t0, self._now(), "sgx.update_svn", outcome, "administrator writes 1"
        )
        if ret < 0:
            self._refusal(self._now(), f"update_svn {outcome}", 0)

    def _ev_tcb(self, ev: EventSpec) -> None:
        """Intel publishes the recovery; what ``sgxsim tcb-impact`` would tell this host's operator
        (which platforms it demotes, from when, what they need) goes into the event."""
        assert ev.new_late_microcode_svn is not None
        base = self.scenario.machine.early_patch.base_svn
        rec = TcbRecovery.late_microcode(ev.new_late_microcode_svn, base=base)
        now = self._now()
        grace_ns = self.scenario.relying_party.grace_period
        _level, impact = self.world.publish_recovery_with_impact(
            rec, at_ns=now, grace=dt.timedelta(microseconds=grace_ns // 1000)
        )
        self._recovery_ns = now
        demoted = impact.demoted
        # The relying party fetches the new TCB Info as it is published (its issueDate has whole
        # seconds) and keeps accepting the demoted level for its grace period.
        bites = [max(self._sim_ns(p.bites_at), now + grace_ns) for p in demoted if p.bites_at is not None]
        needs = sorted(
            {
                svn
                for p in demoted
                if p.requirement is not None and (svn := p.requirement.late_microcode_svn) is not None
            }
        )
        if demoted:
            names = ", ".join(f"{p.name} {p.status_now} -> {p.status_new}" for p in demoted)
            impact_text = f"; demotes {len(demoted)} of {len(impact.platforms)} platform(s) ({names})"
            if bites:
                impact_text += (
                    f", refused from t={format_ns(min(bites))} (grace period {format_ns(grace_ns)})"
                )
            if needs:
                impact_text += f"; UpToDate again with late-microcode SVN {', '.join(map(str, needs))}"
        else:
            impact_text = f"; demotes none of {len(impact.platforms)} platform(s)"
        self._event(
            "tcb_recovery",
            now,
            now,
            "Intel PCS",
            "published",
            f"late-microcode SVN {ev.new_late_microcode_svn} is UpToDate, older levels OutOfDate "
            f"(tcbEvaluationDataNumber {self.world.tcb_model.tcb_evaluation_data_number})" + impact_text,
            platforms=len(impact.platforms),
            platforms_demoted=len(demoted),
            demoted_status=", ".join(sorted({str(p.status_new) for p in demoted})) or None,
            grace_period_ns=grace_ns,
            refused_from_ns=min(bites) if bites else None,
            required_late_microcode_svn=max(needs) if needs else None,
        )

    def _sim_ns(self, when: dt.datetime) -> int:
        """Simulated time (power-on base) of a date of the attestation world."""
        return (when - self.world.epoch) // dt.timedelta(microseconds=1) * 1000

    def _ev_starve(self, ev: EventSpec) -> None:
        self.machine.entropy.starve(ev.count)
        now = self._now()
        what = "until restored" if ev.count is None else f"next {ev.count} draws"
        self._event("entropy_starve", now, now, "RDSEED", "starved", what)

    def _ev_restore(self, ev: EventSpec) -> None:
        self.machine.entropy.restore()
        now = self._now()
        self._event("entropy_restore", now, now, "RDSEED", "restored", "")

    def _ev_drain(self, ev: EventSpec) -> None:
        t0 = self._now()
        n = self._stop_all("drain")
        for vm in self.vms:
            if vm.state == "running":
                self._stop_vm(vm)
        self.platform.stop()
        self.operator_stops += n
        self._event(
            "drain", t0, self._now(), "host", "ok", f"{n} enclave(s), {len(self.vms)} VM(s) and aesmd stopped"
        )

    def _ev_restart(self, ev: EventSpec) -> None:
        t0 = self._now()
        n = 0
        for inst in self.instances:
            if inst.state == "drained":
                inst.state = "pending"
                inst.retry_at = t0
                n += 1
        for vm in self.vms:
            if vm.state == "drained":
                vm.state = "pending"
        self._notify_all()
        self._event("restart", t0, t0, "host", "ok", f"{n} enclave(s) and the VMs restarted")

    def _ev_kexec(self, ev: EventSpec) -> None:
        t0 = self._now()
        self._collect_updates()
        running = [i for i in self.instances if i.state in ("running", "pending", "lost")]
        self._stop_all("kexec")
        vms = [vm for vm in self.vms if vm.state == "running"]
        for vm in vms:
            vm.proc, vm.vepc_id, vm.state = None, -1, "drained"
        self._old_logs += self.kernel.log.lines()
        self._old_warnings += self.kernel.log.warn_count
        self.machine.kexec()
        self.generation += 1
        self._kstat_base = {}
        self.kernel = self._boot()
        self._seen_updates = 0
        self.platform = self.world.add_platform(self.machine, self.kernel)
        for inst in running:
            inst.state = "pending"
            inst.retry_at = self._now()
        for vm in vms:
            vm.state = "pending"
        self._event(
            "kexec",
            t0,
            self._now(),
            "kernel",
            "ok",
            f"new kernel without a reset: CPUSVN {self._cpusvn_hex()}",
        )

    def _notify_all(self) -> None:
        """Wake every workload's main thread (it makes its next ECALL, starts, or stops)."""
        for inst in self.instances:
            inst.probe = inst.state == "running"
            if inst.task is not None:
                self.sched.wake_up_process(inst.task)
        for vm in self.vms:
            if vm.task is not None:
                self.sched.wake_up_process(vm.task)

    def _stop_all(self, how: str) -> int:
        """Ask every live instance to stop (``drain``: close and exit; ``kexec``: its processes
        vanish with the kernel) and wait until each did. Returns how many were running."""
        n = 0
        asked: list[Instance] = []
        for inst in self.instances:
            if inst.state in ("running", "pending", "lost"):
                n += inst.state == "running"
                inst.command = how
                asked.append(inst)
        self._notify_all()
        self._cpu_release(0)
        self._ops_waitq.wait_event(lambda: all(i.command is None for i in asked))
        self._cpu_acquire(0)
        return n

    # ------------------------------------------------------------------ helpers for the mixins

    def _cpusvn(self) -> bytes | None:
        return self.machine.cr_cpusvn

    def _cpusvn_hex(self) -> str:
        svn = self._cpusvn()
        return "not yet snapshotted" if svn is None else svn.hex()


def _bytes_label(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} B"


__all__ += ["Vm"]
