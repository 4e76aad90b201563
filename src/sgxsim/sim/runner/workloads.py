# mypy: disable-error-code="misc"
"""Workload lifecycles of the runner: enclave processes, ECALL threads, builders and VMs.

Each workload instance is a process. Its main thread (a task on the instance's first CPU) loads
the application enclave with the sdk loader (unmeasured pages where ``measured = false``), grows
it with EAUG (SGX2: touching the ELRANGE hole after the image; the fault handler EAUGs), seals a
secret, attests through the platform's PCE + QE at its cadence, and after EPC loss restarts or
exits as ``on_epc_loss`` says. Its ECALL threads (``ecall_threads``, each a task on a CPU of
``cpus``) make back-to-back ECALLs through their own TCS, each spending ``ecall_time`` in enclave
mode (an interrupt ends the wait early: the AEX, then ERESUME). A builder (``build_every``)
creates, adds, initializes, grows and destroys a short-lived enclave at its cadence. A VM maps
its vEPC and runs one vCPU task entering the guest every :data:`VCPU_ENTRY_NS`.

Models: user-space SGX services on Linux (the kernel selftests' load flow, the SDK's
sgx_create_enclave / ECALL / sgx_destroy_enclave, QEMU's vEPC use).
Differs: the ECALL's work is the application enclave's self-report function plus a wait of
``ecall_time`` at its first instruction; a VM's guest is not booted (the vCPU only meets the
host's halt point); the builder's enclave is the workload's own image.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sgxsim.attest import VerifiedQuote
from sgxsim.hw.arch import PAGE_SIZE, PageType, SecinfoFlags, cpusvn_le, secinfo_flags
from sgxsim.kernel import uapi
from sgxsim.kernel.locking import WaitQueue
from sgxsim.kernel.main import Kernel
from sgxsim.kernel.process import Process, ProcessSignal
from sgxsim.sdk.image import EnclaveImage, Segment, enclave_size, standard_image
from sgxsim.sdk.loader import Enclave, load_enclave
from sgxsim.sdk.quoting import (
    APP_SOURCE,
    AeCallError,
    AeFunction,
    AppEnclave,
    EnclaveBuild,
    EnclaveLost,
    ae_call,
)
from sgxsim.sdk.sign import sign_enclave
from sgxsim.sim.scenario import VmSpec, WorkloadSpec
from sgxsim.sim.sched import Task
from sgxsim.sim.timeline import format_ns
from sgxsim.sim.trace import Track

if TYPE_CHECKING:
    from sgxsim.sim.runner.core import Runner

__all__ = ["RETRY_NS", "VCPU_ENTRY_NS", "Instance", "Vm", "WorkloadsMixin"]

#: A refused start is retried after this long (simulated).
RETRY_NS = 100_000_000
#: At most this many retries of one start before the workload is reported failed.
MAX_RETRIES = 50
#: A vCPU enters the guest (and meets the host's halt point) this often.
VCPU_ENTRY_NS = 1_000_000
#: Bytes a workload seals at start and unseals on every restart.
_SEAL_SECRET = b"sgxsim workload state"
#: Trace pids of processes of the n-th kernel (after kexec) start at n * this.
_PID_STRIDE = 100_000
_IOCTL_NAMES = {
    uapi.SGX_IOC_ENCLAVE_CREATE: "SGX_IOC_ENCLAVE_CREATE",
    uapi.SGX_IOC_ENCLAVE_ADD_PAGES: "SGX_IOC_ENCLAVE_ADD_PAGES",
    uapi.SGX_IOC_ENCLAVE_INIT: "SGX_IOC_ENCLAVE_INIT",
    uapi.SGX_IOC_ENCLAVE_PROVISION: "SGX_IOC_ENCLAVE_PROVISION",
    uapi.SGX_IOC_VEPC_REMOVE_ALL: "SGX_IOC_VEPC_REMOVE_ALL",
}


class _TracedProcess(Process):
    """A :class:`Process` whose open/ioctl calls become slices on its trace track; refused calls
    (OSError) are recorded with their time for the run's (window) metrics."""

    def __init__(self, runner: Runner, k: Kernel, name: str, cpu: int) -> None:
        super().__init__(k, name, cpu=cpu)
        self._runner = runner
        self.track = runner._process_track(self)

    def _syscall(self, name: str, fn: Callable[[], int]) -> int:
        r = self._runner
        t0 = r._now()
        try:
            ret = fn()
        except OSError as err:
            r._refused(self, name, err, t0)
            raise
        finally:
            r.sched.end_atomic()
        r.trace.slice(self.track, name, t0, r._now() - t0, "ioctl")
        return ret

    def open(self, path: str, flags: int = uapi.O_RDWR, mode: int = 0o600) -> int:
        return self._syscall(f"open {path}", lambda: super(_TracedProcess, self).open(path, flags, mode))

    def ioctl(self, fd: int, request: int, arg: Any = 0) -> int:
        name = _IOCTL_NAMES.get(request, f"ioctl {request:#x}")
        return self._syscall(name, lambda: super(_TracedProcess, self).ioctl(fd, request, arg))


@dataclass
class Instance:
    """One enclave process of a workload (``count`` instances share a spec and a build)."""

    spec: WorkloadSpec
    name: str
    index: int
    cpus: tuple[int, ...]
    state: str = "pending"  # pending, running, lost, drained, exited, failed
    proc: Process | None = None
    app: AppEnclave | None = None
    encl_id: int = -1
    generation: int = 0
    restarts: int = 0
    retries: int = 0
    retry_at: int = 0
    down_since: int | None = None
    downtime_ns: int = 0
    peak_pages: int = 0
    last_verdict: str | None = None
    sealed: bytes | None = None
    started_once: bool = False
    pid: int = 0
    task: Task | None = None
    #: Set by the operator: "drain" or "kexec"; cleared when done.
    command: str | None = None
    #: Make the next ECALL now (after a kernel event).
    probe: bool = False
    #: An ECALL thread saw the enclave lost.
    lost_seen: bool = False
    next_attest: int | None = None
    threads_live: int = 0
    threads_waitq: WaitQueue | None = None
    #: (start_ns, latency_ns) of every ECALL of the ECALL threads.
    ecalls: list[tuple[int, int]] = field(default_factory=list)
    #: Last successful ECALL end before the enclave was lost, first after (unavailability).
    last_ok_ns: int | None = None
    outages: list[tuple[int, int]] = field(default_factory=list)
    outage_from: int | None = None

    @property
    def cpu(self) -> int:
        return self.cpus[0]


@dataclass
class Vm:
    spec: VmSpec
    cpu: int
    state: str = "pending"
    proc: Process | None = None
    vepc_id: int = -1
    peak_pages: int = 0
    pid: int = 0
    task: Task | None = None
    halted_ns: int = 0


class WorkloadsMixin:
    """The workload half of :class:`~sgxsim.sim.runner.core.Runner`."""

    _time_to_attested: int | None
    _attested_cpusvn: str | None

    # ------------------------------------------------------------------ setup

    def _init_workloads(self: Runner) -> None:
        ncpu = self.ncpu
        self._builds: dict[tuple[str, int], EnclaveBuild] = {}
        self.instances: list[Instance] = []
        for w in self.scenario.workloads:
            for i in range(w.count):
                name = w.name if w.count == 1 else f"{w.name}-{i}"
                if w.cpus:
                    cpus = tuple(
                        w.cpus[(i * (1 + w.ecall_threads) + j) % len(w.cpus)]
                        for j in range(1 + w.ecall_threads)
                    )
                else:
                    first = len(self.instances) + 1
                    cpus = tuple((first + j) % ncpu for j in range(1 + w.ecall_threads))
                self.instances.append(Instance(w, name, i, cpus))
        self.vms = [Vm(v, cpu=(len(self.instances) + 1 + j) % ncpu) for j, v in enumerate(self.scenario.vms)]

    def _spawn_workloads(self: Runner) -> None:
        for inst in sorted(self.instances, key=lambda i: (not i.spec.swap_out, i.spec.start)):
            inst.retry_at = inst.spec.start
            inst.threads_waitq = WaitQueue(self.sched, f"{inst.name}:threads")
            inst.task = self.sched.spawn(self._instance_main, inst, name=inst.name, cpu=inst.cpu, daemon=True)
        for wi, w in enumerate(self.scenario.workloads):
            if w.build_every is not None:
                cpu = w.cpus[-1] if w.cpus else (wi + 1) % self.ncpu
                self.sched.spawn(self._builder, w, cpu, name=f"{w.name}:builder", cpu=cpu, daemon=True)
        for vm in self.vms:
            vm.task = self.sched.spawn(
                self._vm_main, vm, name=f"qemu-{vm.spec.name}", cpu=vm.cpu, daemon=True
            )

    def _build(self: Runner, spec: WorkloadSpec) -> EnclaveBuild:
        """The workload's application enclave: the attestable app, its image pages and heap; one
        TCS for the main thread and one per ECALL thread."""
        key = (spec.name, spec.ecall_threads)
        build = self._builds.get(key)
        if build is not None:
            return build
        base = standard_image(APP_SOURCE, heap_size=spec.heap, threads=1 + spec.ecall_threads)
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
        self._builds[key] = build
        return build

    def _process_track(self: Runner, proc: Process) -> Track:
        return self.trace.process(proc.pid + self.generation * _PID_STRIDE, proc.name)

    # ------------------------------------------------------------------ the main thread

    def _instance_main(self: Runner, inst: Instance) -> None:
        self._sleep_until(inst.spec.start)
        spec = inst.spec
        lifetime_end = None if spec.lifetime is None else spec.start + spec.lifetime
        while inst.state not in ("exited", "failed"):
            now = self._now()
            if inst.command is not None:
                self._obey(inst)
                continue
            if lifetime_end is not None and now >= lifetime_end and inst.started_once:
                self._retire(inst)
                self._event("enclave_exit", now, self._now(), inst.name, "exited", "finished its work")
                break
            if inst.state in ("pending", "lost") and now >= inst.retry_at:
                self._with_cpu(inst.cpu, lambda: self._start(inst))
                continue
            if inst.state == "running" and (inst.lost_seen or inst.probe):
                inst.probe = False
                if inst.lost_seen or not self._with_cpu(inst.cpu, lambda: self._probe(inst)):
                    self._lost(inst, "EPC lost (the vDSO reported a #PF on EENTER)")
                continue
            if inst.state == "running" and inst.next_attest is not None and now >= inst.next_attest:
                assert spec.attest_every is not None
                inst.next_attest += spec.attest_every
                self._with_cpu(inst.cpu, lambda: self._attest(inst))
                continue
            wake = [t for t in (lifetime_end,) if t is not None]
            if inst.state in ("pending", "lost"):
                wake.append(inst.retry_at)
            if inst.state == "running" and inst.next_attest is not None:
                wake.append(inst.next_attest)
            self._sleep_until(min(wake) if wake else 1 << 62)

    def _with_cpu(self: Runner, cpu: int, fn: Callable[[], bool | None]) -> bool | None:
        if self._cpu_owner[cpu] is not None and self._cpu_owner[cpu] is self.sched.current:
            return fn()
        self._cpu_acquire(cpu)
        try:
            return fn()
        finally:
            self._cpu_release(cpu)

    def _obey(self: Runner, inst: Instance) -> None:
        """The operator's command: stop for a drain (close, exit) or a kexec (the process vanishes)."""
        how = inst.command
        now = self._now()
        was = inst.state
        self._stop_threads(inst)
        if how == "drain":
            self._with_cpu(inst.cpu, lambda: self._stop(inst))
        else:
            inst.proc = inst.app = None
            inst.encl_id = -1
        inst.state = "drained"
        if inst.down_since is None:
            inst.down_since = now
        if was == "running":
            self._outage_begin(inst, now)
        inst.command = None
        self._ops_waitq.wake_up_all()

    def _stop_threads(self: Runner, inst: Instance) -> None:
        """Wait until the ECALL threads of the current generation have left (after their ECALL)."""
        inst.generation += 1
        wq = inst.threads_waitq
        if inst.threads_live and wq is not None:
            wq.wait_event(lambda: inst.threads_live == 0)

    def _start(self: Runner, inst: Instance) -> None:
        """Start (or restart) one enclave process: load, grow, unseal/seal, ECALL threads."""
        spec = inst.spec
        t0 = self._now()
        build = self._build(spec)
        proc = _TracedProcess(self, self.kernel, inst.name, inst.cpu)
        reclaimed = self.kernel.stats.get("pages_reclaimed", 0)
        try:
            encl = load_enclave(proc, build.image, sigstruct=build.sigstruct)
        except (OSError, ProcessSignal) as err:
            if not proc.exited:
                proc.exit()
            self.trace.slice(proc.track, "load enclave", t0, self._now() - t0, "ioctl", {"failed": True})
            self._retry(inst, f"load failed: {err}")
            return
        app = AppEnclave(encl, build, self.rng.stream(f"keyid/{inst.name}/{inst.restarts}/{self.generation}"))
        inst.proc, inst.app, inst.pid = proc, app, proc.pid
        inst.encl_id = proc.file(encl.fd).private_data.id
        inst.retries = 0
        self.trace.slice(
            proc.track,
            "load enclave",
            t0,
            self._now() - t0,
            "ioctl",
            {"pages": build.image.total_size // PAGE_SIZE},
        )
        reclaimed = self.kernel.stats.get("pages_reclaimed", 0) - reclaimed
        if reclaimed > 0:
            self._note(
                inst.name,
                f"EPC full while {inst.name} was built: the reclaimer swapped {reclaimed} pages out (EWB)",
            )
        if spec.sgx2_growth and not self._grow(inst, proc, encl, proc.track):
            return
        if spec.seal and not self._seal(inst):
            return
        restarted = inst.started_once
        inst.state = "running"
        now = self._now()
        if inst.down_since is not None:
            inst.downtime_ns += now - inst.down_since
            inst.down_since = None
        if restarted:
            inst.restarts += 1
            self._event("enclave_restart", t0, now, inst.name, "running", f"enclave {inst.encl_id}")
        else:
            self._event("enclave_start", t0, now, inst.name, "running", f"enclave {inst.encl_id}")
        inst.started_once = True
        if spec.swap_out:
            self._swap_out(inst)
        if spec.attest_every is not None:
            inst.next_attest = now + int(spec.attest_every * (0.5 + self._jitter.random()))
        inst.lost_seen = False
        self._spawn_ecall_threads(inst, encl)
        self._record_epc()

    def _retry(self: Runner, inst: Instance, why: str) -> None:
        inst.retries += 1
        now = self._now()
        if inst.down_since is None:
            inst.down_since = now
        if inst.retries > MAX_RETRIES:
            inst.state = "failed"
            self._event(
                "enclave_start", now, now, inst.name, "failed", f"gave up after {MAX_RETRIES} retries ({why})"
            )
            return
        inst.state = "pending" if inst.state != "lost" else "lost"
        inst.retry_at = now + RETRY_NS

    def _grow(self: Runner, inst: Instance | None, proc: Process, encl: Enclave, track: Track) -> bool:
        """SGX2: touch the ELRANGE hole after the image page by page; the fault handler EAUGs."""
        spec = inst.spec if inst is not None else None
        growth = spec.sgx2_growth if spec is not None else 0
        start = encl.base + encl.image.symbol("growth")
        n = growth // PAGE_SIZE
        t0 = self._now()
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
            self._fault(proc, "SIGBUS", str(sig))
            if inst is not None:
                self._lost(inst, "EAUG growth faulted (SIGBUS)")
            return False
        except OSError as err:
            if inst is not None:
                self._lost(inst, f"growth mmap failed: {err.strerror}")
            return False
        self.trace.slice(track, "EAUG growth", t0, self._now() - t0, "fault", {"pages": n})
        return True

    def _seal(self: Runner, inst: Instance) -> bool:
        assert inst.app is not None
        try:
            if inst.sealed is None:
                inst.sealed = inst.app.seal(_SEAL_SECRET)
            elif inst.app.unseal(inst.sealed) != _SEAL_SECRET:
                self._note(inst.name, f"{inst.name}: unsealed data differs")
        except EnclaveLost as err:
            if inst.proc is not None:
                self._fault(inst.proc, "enclave lost", str(err))
            self._lost(inst, "lost while sealing")
            return False
        except AeCallError as err:
            self._note(inst.name, f"{inst.name}: sealing failed: {err}")
        return True

    def _swap_out(self: Runner, inst: Instance) -> None:
        """Memory pressure: the kernel's reclaimer swaps the (oldest) pages of this enclave out."""
        k = self.kernel
        before = k.stats.get("pages_reclaimed", 0)
        for _ in range(k.npages // 16 + 16):
            if k.lists.empty(k.sgx_active_page_list):
                break
            n = k.stats.get("pages_reclaimed", 0)
            k.sgx_reclaim_pages()
            if k.stats.get("pages_reclaimed", 0) == n and k.stats.get("reclaim_skipped_young", 0) > k.npages:
                break
            if self._swapped_out(inst):
                break
        self._note(
            inst.name,
            f"memory pressure: ksgxd swaps {inst.name} out "
            f"({k.stats.get('pages_reclaimed', 0) - before} pages EWB'd)",
        )

    def _swapped_out(self: Runner, inst: Instance) -> bool:
        """No page of the enclave (children or SECS) is left in the EPC: its VA pages stay, as
        they hold the versions of what was written back (encl->secs_child_cnt, O(1))."""
        encl = self.kernel.enclaves.get(inst.encl_id)
        return encl is None or (encl.secs_child_cnt == 0 and encl.secs_epc < 0)

    def _retire(self: Runner, inst: Instance) -> None:
        self._stop_threads(inst)
        self._with_cpu(inst.cpu, lambda: self._stop(inst))
        if inst.down_since is not None:
            inst.downtime_ns += self._now() - inst.down_since
            inst.down_since = None
        inst.state = "exited"
        self._record_epc()

    def _stop(self: Runner, inst: Instance) -> None:
        """Close the enclave and end its process (nothing to do for what is gone)."""
        if inst.app is not None:
            with contextlib.suppress(OSError, ProcessSignal):
                inst.app.close()
        if inst.proc is not None and not inst.proc.exited:
            inst.proc.exit()
        inst.app = None
        inst.proc = None
        inst.encl_id = -1

    def _lost(self: Runner, inst: Instance, why: str) -> None:
        """The enclave lost its EPC: stop its threads, then restart or exit per ``on_epc_loss``."""
        now = self._now()
        self.losses += 1
        self._outage_begin(inst, now)
        self._stop_threads(inst)
        self._with_cpu(inst.cpu, lambda: self._stop(inst))
        inst.lost_seen = False
        if inst.down_since is None:
            inst.down_since = now
        if inst.spec.on_epc_loss == "restart":
            inst.state = "lost"
            inst.retry_at = self._now()
            self._event("enclave_lost", now, now, inst.name, "restarting", why)
        else:
            inst.state = "exited"  # down until the end of the run
            self._event("enclave_lost", now, now, inst.name, "exited", f"{why}; on_epc_loss = exit")
        self._record_epc()

    def _outage_begin(self: Runner, inst: Instance, now: int) -> None:
        if inst.outage_from is None:
            inst.outage_from = inst.last_ok_ns if inst.last_ok_ns is not None else now

    def _ecall_ok(self: Runner, inst: Instance, end: int) -> None:
        inst.last_ok_ns = end
        if inst.outage_from is not None:
            inst.outages.append((inst.outage_from, end))
            inst.outage_from = None

    def _probe(self: Runner, inst: Instance) -> bool:
        """The application's next ECALL: False (fault counted) if the enclave is gone."""
        if inst.state != "running" or inst.app is None:
            return False
        try:
            inst.app.self_report()
        except EnclaveLost as err:
            if inst.proc is not None:
                self._fault(inst.proc, "enclave lost", str(err))
            return False
        self._ecall_ok(inst, self._now())
        return True

    def _attest(self: Runner, inst: Instance) -> None:
        if inst.state != "running" or inst.app is None:
            return
        now = self._now()
        app = inst.app
        app_lost: list[bool] = []

        class _Probe:
            def report(self, target_info: Any, report_data: bytes = b"") -> bytes:
                try:
                    return app.report(target_info, report_data)
                except EnclaveLost:
                    app_lost.append(True)
                    raise

        try:
            result = self.platform.attest(_Probe(), at_ns=now)
        except EnclaveLost as err:
            if app_lost:
                if inst.proc is not None:
                    self._fault(inst.proc, "enclave lost", str(err))
                inst.lost_seen = True
            else:
                self._verdict(inst, now, "QuotingFailed", False, str(err))
            return
        except (AeCallError, OSError, ProcessSignal) as err:
            self._verdict(inst, now, "QuotingFailed", False, str(err))
            return
        self._ecall_ok(inst, self._now())
        if inst.proc is not None:
            self.trace.slice(self._process_track(inst.proc), "attest", now, self._now() - now, "attest")
        ver = result.verification
        if not isinstance(ver, VerifiedQuote):
            self._verdict(inst, now, "Invalid", False, str(ver))
            return
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
        self._verdict(inst, now, status, accepted, detail)
        if (
            status == "UpToDate"
            and self._time_to_attested is None
            and self._svn_load_ns is not None
            and self._svn_before is not None
            and cpusvn != self._svn_before
            and cpusvn_le(self._svn_before, cpusvn)
        ):
            took = self._now() - self._svn_load_ns
            self._time_to_attested = took
            self._attested_cpusvn = cpusvn.hex()
            self._note(
                inst.name,
                f"{inst.name} attested UpToDate with the new CPUSVN {cpusvn.hex()} "
                f"({format_ns(took)} after the microcode load)",
            )

    def _verdict(self: Runner, inst: Instance, t0: int, status: str, accepted: bool, detail: str) -> None:
        inst.last_verdict = status
        self.timeline.add_verdict(t0, inst.name, status, accepted, detail)
        self._event(
            "attestation",
            t0,
            self._now(),
            inst.name,
            status,
            ("accepted" if accepted else "refused") + f"; {detail}",
        )

    # ------------------------------------------------------------------ ECALL threads

    def _spawn_ecall_threads(self: Runner, inst: Instance, encl: Enclave) -> None:
        spec = inst.spec
        if not spec.ecall_threads:
            return
        gen = inst.generation
        for j in range(spec.ecall_threads):
            cpu = inst.cpus[1 + j]
            inst.threads_live += 1
            self.sched.spawn(
                self._ecall_thread,
                inst,
                encl,
                j,
                gen,
                cpu,
                name=f"{inst.name}:ecall{j}:{self.generation}.{inst.restarts}.{gen}",
                cpu=cpu,
                daemon=True,
            )

    def _ecall_thread(self: Runner, inst: Instance, encl: Enclave, j: int, gen: int, cpu: int) -> None:
        """Back-to-back ECALLs through TCS ``j + 1``, each ``ecall_time`` in enclave mode."""
        proc = encl.proc
        service = inst.spec.ecall_time
        me = self.sched.current
        assert me is not None
        run = uapi.sgx_enclave_run()
        call_addr = out_addr = 0
        try:
            self._cpu_acquire(cpu)
            try:
                call_addr = proc.alloc(PAGE_SIZE)
                out_addr = proc.alloc(PAGE_SIZE)
            finally:
                self._cpu_release(cpu)
            call = ae_call(function=int(AeFunction.SELF_REPORT), out=out_addr, out_size=432)
            raw = bytes(call)
            while (
                inst.generation == gen and inst.state == "running" and not inst.lost_seen and not proc.exited
            ):
                self._cpu_acquire(cpu)
                t0 = self._now()
                self._deadline[me.tid] = t0 + service
                try:
                    proc.write(call_addr, raw)
                    ret = encl.call(call_addr, j + 1, run)
                    ok = ret == 0 and run.function == uapi.EEXIT
                except (OSError, ProcessSignal):
                    ok = False
                finally:
                    self._deadline.pop(me.tid, None)
                    self._cpu_release(cpu)
                t1 = self._now()
                if not ok:
                    if inst.generation == gen:
                        self._fault(proc, "enclave lost", f"ECALL thread {j} on CPU {cpu}")
                        inst.lost_seen = True
                        if inst.task is not None:
                            self.sched.wake_up_process(inst.task)
                    break
                inst.ecalls.append((t0, t1 - t0))
                self.trace.slice(self.trace.cpu(cpu), "ECALL", t0, t1 - t0, "ecall", {"enclave": inst.name})
                self.timeline.cpu_spans.append((cpu, t0, t1, "ECALL"))
                self._ecall_ok(inst, t1)
        finally:
            inst.threads_live -= 1
            if inst.threads_waitq is not None:
                inst.threads_waitq.wake_up_all()

    # ------------------------------------------------------------------ builders

    def _builder(self: Runner, spec: WorkloadSpec, cpu: int) -> None:
        """Every ``build_every``: create, add, initialize (and grow) an enclave, then destroy it."""
        assert spec.build_every is not None
        t = max(spec.start, self._now())
        gen = -1
        proc: _TracedProcess | None = None
        build = self._build(spec)
        while True:
            self._sleep_until(t, interruptible=False)
            t += spec.build_every
            self._cpu_acquire(cpu)
            try:
                if proc is None or gen != self.generation or proc.exited:
                    gen = self.generation
                    proc = _TracedProcess(self, self.kernel, f"{spec.name}-builder", cpu)
                t0 = self._now()
                try:
                    encl = load_enclave(proc, build.image, sigstruct=build.sigstruct)
                except (OSError, ProcessSignal):
                    self.builds_refused += 1
                    continue
                self.builds_done += 1
                if spec.sgx2_growth:
                    self._grow(None, proc, encl, proc.track)
                with contextlib.suppress(OSError, ProcessSignal):
                    encl.close()
                self.trace.slice(proc.track, "build enclave", t0, self._now() - t0, "ioctl")
            finally:
                self._cpu_release(cpu)

    # ------------------------------------------------------------------ VMs

    def _vm_main(self: Runner, vm: Vm) -> None:
        self._sleep_until(vm.spec.start)
        while True:
            if vm.state == "pending":
                self._with_cpu(vm.cpu, lambda: self._start_vm(vm))
                if vm.state == "pending":
                    self._sleep_until(self._now() + RETRY_NS)
                continue
            if vm.state != "running":
                self._sleep_until(1 << 62)
                continue
            # The vCPU enters the guest: KVM's halt point first (halted while the EPC is locked).
            t0 = self._now()
            self.kernel.svn.vcpu_halt_point()
            halted = self._now() - t0
            if halted:
                vm.halted_ns += halted
                self._halt_log.append((t0, halted))
                self.timeline.cpu_spans.append((vm.cpu, t0, t0 + halted, "vCPU halted"))
                if vm.proc is not None:
                    self.trace.slice(self._process_track(vm.proc), "vCPU halted", t0, halted, "window")
            self._sleep_until(self._now() + VCPU_ENTRY_NS)

    def _start_vm(self: Runner, vm: Vm) -> None:
        proc = _TracedProcess(self, self.kernel, f"qemu-{vm.spec.name}", vm.cpu)
        t0 = self._now()
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
            self._note(f"VM {vm.spec.name}", f"VM {vm.spec.name} could not map its vEPC ({err}); retrying")
            return
        vm.proc, vm.pid, vm.state = proc, proc.pid, "running"
        self.trace.slice(proc.track, "fault in vEPC", t0, self._now() - t0, "fault", {"pages": n})
        self._event("vm_start", t0, self._now(), f"VM {vm.spec.name}", "running", f"{n} vEPC pages")
        self._record_epc()

    def _stop_vm(self: Runner, vm: Vm) -> None:
        if vm.proc is not None and not vm.proc.exited:
            vm.proc.exit()
        vm.proc = None
        vm.vepc_id = -1
        vm.state = "drained"
