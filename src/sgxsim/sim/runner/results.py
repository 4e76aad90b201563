# mypy: disable-error-code="misc"
"""What a run produced: structured events, SVN-update windows, metrics, EPC samples, the report.

Every time here counts from power-on (the one time base of a run). Events are objects with
``t_start_ns``, ``t_end_ns``, ``kind``, ``subject``, ``outcome`` and ``detail``; the narrative
is rendered from them, in start order, each step stamped at its start with its duration.

Window metrics (per run and per update): the *locked window* of an update runs from the start
of its ``lock`` phase to the end of its ``unlock`` phase (the whole update when it did not lock).
``ioctls_refused_in_window`` counts refused opens/ioctls, ``faults_sigbus_in_window`` SIGBUS
faults, ``ipis_sent`` the CPUs the kernel's IPIs targeted, ``aex_by_ipi`` AEXs of ECALL threads
taken for them, ``release_waits`` enclaves being released that the zap waited for, and
``vcpu_halted_ns`` the time vCPUs spent halted, all inside a locked window.
"""

from __future__ import annotations

import errno as _errno
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from sgxsim.kernel.main import EpcOwner, Kernel
from sgxsim.kernel.process import Process
from sgxsim.kernel.svn import SvnUpdate
from sgxsim.sim.report import ECALL_PHASES, EnclaveRow, Report, Scalar
from sgxsim.sim.scenario import Scenario
from sgxsim.sim.timeline import TimelineData, format_ns
from sgxsim.sim.trace import TraceRecorder

if TYPE_CHECKING:
    from sgxsim.sim.runner.core import Runner
    from sgxsim.sim.runner.workloads import Instance

__all__ = ["EVENT_KINDS", "WINDOW_METRICS", "ResultsMixin", "RunResult", "errno_name"]

#: Event kinds a report can hold.
EVENT_KINDS = (
    "boot",
    "microcode_load",
    "svn_update",
    "tcb_recovery",
    "svn_update_trigger",
    "entropy_starve",
    "entropy_restore",
    "drain",
    "restart",
    "kexec",
    "enclave_start",
    "enclave_lost",
    "enclave_restart",
    "enclave_exit",
    "vm_start",
    "attestation",
    "note",
)
#: The window metrics, in report order.
WINDOW_METRICS = (
    "locked_window_ns",
    "ioctls_refused_in_window",
    "faults_sigbus_in_window",
    "ipis_sent",
    "aex_by_ipi",
    "release_waits",
    "vcpu_halted_ns",
)

_ENCLAVE_OWNERS = (int(EpcOwner.ENCL_PAGE), int(EpcOwner.SECS), int(EpcOwner.VA_PAGE))
#: EPC pages per slice when counting pages by owner (bounded temporaries).
_COUNT_SLICE = 1 << 20
_AESMD = "aesmd (PCE+QE)"


def errno_name(err: int | None) -> str:
    if err is None:
        return "E?"
    return _errno.errorcode.get(err, f"errno {err}")


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


def _window(u: SvnUpdate) -> tuple[int, int]:
    """The locked window of ``u``: lock start to unlock end (the whole update without a lock)."""
    lock = [p for p in u.phases if p[0] == "lock"]
    unlock = [p for p in u.phases if p[0] == "unlock"]
    end = max(int(u.end_ns), int(u.start_ns))
    if lock and unlock:
        return int(lock[0][1]), max(int(unlock[-1][2]), int(lock[0][1]))
    return int(u.start_ns), end


def _inside(t: int, windows: list[tuple[int, int]]) -> bool:
    return any(a <= t <= b for a, b in windows)


def _percentiles(values: list[int]) -> dict[str, Scalar]:
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    arr = np.sort(np.asarray(values, dtype=np.int64))
    last = len(arr) - 1
    p50 = int(arr[min(last, int(0.5 * last + 0.5))])
    p99 = int(arr[min(last, int(0.99 * last + 0.5))])
    return {"n": len(values), "p50": p50, "p99": p99, "max": int(arr[-1])}


class ResultsMixin:
    """The result half of :class:`~sgxsim.sim.runner.core.Runner`."""

    _time_to_attested: int | None
    _attested_cpusvn: str | None

    def _init_results(self: Runner) -> None:
        self.events: list[dict[str, Any]] = []
        self.refusals: list[tuple[int, str, int]] = []  # (t, errno name, cpu)
        self.sigbus: list[int] = []
        self.faults = 0
        self.updates: list[SvnUpdate] = []
        self._seen_updates = 0
        self.losses = 0
        self.operator_stops = 0
        self.builds_done = 0
        self.builds_refused = 0
        self._svn_load_ns: int | None = None
        self._svn_before: bytes | None = None
        self._time_to_attested = None
        self._attested_cpusvn = None
        self._recovery_ns: int | None = None
        self._epc_key: tuple[int, ...] = ()
        self._update_id = 0
        self._ipi_log: list[tuple[int, int]] = []
        self._aex_log: list[int] = []
        self._release_wait_log: list[int] = []
        self._halt_log: list[tuple[int, int]] = []
        self._kstat_base: dict[str, int] = {}

    # ------------------------------------------------------------------ recording

    def _event(
        self: Runner,
        kind: str,
        t_start: int,
        t_end: int,
        subject: str,
        outcome: str,
        detail: str,
        **extra: Scalar,
    ) -> None:
        ev: dict[str, Any] = {
            "t_start_ns": int(t_start),
            "t_end_ns": max(int(t_end), int(t_start)),
            "kind": kind,
            "subject": subject,
            "outcome": outcome,
            "detail": detail,
        }
        if extra:
            ev["extra"] = dict(extra)
        self.events.append(ev)

    def _note(self: Runner, subject: str, text: str) -> None:
        now = self._now()
        self._event("note", now, now, subject, "", text)

    def _refusal(self: Runner, t: int, what: str, cpu: int) -> None:
        self.refusals.append((t, what, cpu))
        self.timeline.add_refusal(t, what)
        self.timeline.cpu_marks.append((t, cpu, what))

    def _refused(self: Runner, proc: Process, call: str, err: OSError, t0: int) -> None:
        name = errno_name(err.errno)
        now = self._now()
        cur = self.sched.current
        cpu = cur.cpu if cur is not None else 0
        self._refusal(t0, name, cpu)
        self.trace.slice(self._process_track(proc), call, t0, now - t0, "ioctl", {"errno": name})
        self.trace.instant(self.trace.cpu(cpu), f"{call} {name}", now, "window")

    def _fault(self: Runner, proc: Process, what: str, detail: str) -> None:
        now = self._now()
        self.faults += 1
        if what == "SIGBUS":
            self.sigbus.append(now)
        cur = self.sched.current
        self._refusal(now, what, cur.cpu if cur is not None else 0)
        self.trace.instant(self._process_track(proc), what, now, "fault", {"detail": detail[:120]})

    def _collect_updates(self: Runner) -> None:
        new = list(self.kernel.svn.updates)[self._seen_updates :]
        self._seen_updates += len(new)
        for u in new:
            if not u.result_name and not u.end_ns:
                self._seen_updates -= 1  # still running: collect it later
                break
            self.updates.append(u)
            self._update_id += 1
            outcome = str(u.result_name) if u.result != 0 else "updated"
            start, end = int(u.start_ns), max(int(u.end_ns), int(u.start_ns))
            self.timeline.add_update_window(start, end, outcome)
            lo, hi = _window(u)
            self.trace.async_slice(
                f"SVN update ({u.trigger})",
                start,
                end - start,
                async_id=self._update_id,
                args={
                    "result": str(u.result_name),
                    "tries": int(u.tries),
                    "pages_zapped": int(u.pages_zapped),
                },
            )
            if any(p[0] == "lock" for p in u.phases):
                self.trace.async_slice("EPC locked", lo, hi - lo, async_id=self._update_id)
            for name, a, b in u.phases:
                self.trace.async_slice(name, int(a), max(int(b) - int(a), 0), async_id=self._update_id)
            before, after = bytes(u.cpusvn_before), bytes(u.cpusvn_after)
            if before != after and after:
                self.timeline.add_cpusvn_step(end, before.hex(), after.hex())
            self._event(
                "svn_update",
                start,
                end,
                str(u.trigger),
                outcome,
                f"{u.tries} EUPDATESVN execution(s), {u.pages_zapped} EPC pages zapped"
                + (f" (+{u.vepc_pages_zapped} vEPC)" if u.vepc_pages_zapped else "")
                + f", {len(u.enclaves_killed)} enclave(s) destroyed"
                + (f"; CPUSVN {before.hex()} -> {after.hex()}" if before != after and after else ""),
            )

    # ------------------------------------------------------------------ EPC sampling

    def _record_epc(self: Runner, *, force: bool = False) -> None:
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
        now = self._now()
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
        self.trace.counter(
            self.trace.machine(),
            "EPC pages",
            now,
            {"used": k.nr_used_pages(), "free": k.sgx_nr_free_pages.read()},
        )

    # ------------------------------------------------------------------ metrics

    def _window_metrics(self: Runner, windows: list[tuple[int, int]]) -> dict[str, Scalar]:
        return {
            "locked_window_ns": sum(b - a for a, b in windows),
            "ioctls_refused_in_window": sum(
                1 for t, what, _ in self.refusals if what.startswith("E") and _inside(t, windows)
            ),
            "faults_sigbus_in_window": sum(1 for t in self.sigbus if _inside(t, windows)),
            "ipis_sent": sum(n for t, n in self._ipi_log if _inside(t, windows)),
            "aex_by_ipi": sum(1 for t in self._aex_log if _inside(t, windows)),
            "release_waits": sum(1 for t in self._release_wait_log if _inside(t, windows)),
            "vcpu_halted_ns": sum(d for t, d in self._halt_log if _inside(t, windows)),
        }

    def _update_rows(self: Runner) -> list[dict[str, Scalar]]:
        rows: list[dict[str, Scalar]] = []
        for u in self.updates:
            w = _window(u)
            row: dict[str, Scalar] = {
                "trigger": str(u.trigger),
                "start_ns": int(u.start_ns),
                "end_ns": int(u.end_ns),
                "result": str(u.result_name),
                "tries": int(u.tries),
                "pages_zapped": int(u.pages_zapped),
                "vepc_pages_zapped": int(u.vepc_pages_zapped),
                "enclaves_killed": len(u.enclaves_killed),
            }
            row.update(self._window_metrics([w]))
            rows.append(row)
        return rows

    def metrics(self: Runner) -> dict[str, Scalar]:
        """The comparison metrics (timeline.COMPARISON_METRICS keys), window metrics, counts."""
        now = self._end_ns or self._now()
        downtime = 0
        for inst in self.instances:
            downtime += inst.downtime_ns + (now - inst.down_since if inst.down_since is not None else 0)
        zapped = sum(int(u.pages_zapped) + int(u.vepc_pages_zapped) for u in self.updates)
        killed = sum(len(u.enclaves_killed) for u in self.updates)
        duration = sum(max(int(u.end_ns) - int(u.start_ns), 0) for u in self.updates)
        verdicts = self.timeline.verdicts
        out: dict[str, Scalar] = {
            "time_to_attested_ns": self._time_to_attested,
            "new_cpusvn_reached": self._svn_before is not None
            and self._cpusvn() is not None
            and self._cpusvn() != self._svn_before,
            "new_cpusvn_attested": self._time_to_attested is not None,
            "enclaves_destroyed": killed if self.updates else self.losses,
            "enclave_downtime_ns": downtime,
            "refused_ioctls": sum(1 for _, what, _ in self.refusals if what.startswith("E")),
            "faults": self.faults,
            "epc_pages_zapped": zapped,
            "update_duration_ns": duration if self.updates else None,
            "svn_updates": len(self.updates),
            "svn_updates_ok": sum(1 for u in self.updates if u.result == 0),
            "verdicts_accepted": sum(1 for v in verdicts if v.accepted),
            "verdicts_refused": sum(1 for v in verdicts if not v.accepted),
            "enclaves_stopped_by_operator": self.operator_stops,
            "restarts": sum(i.restarts for i in self.instances),
            "ecalls": sum(len(i.ecalls) for i in self.instances),
            "enclave_builds": self.builds_done,
            "enclave_builds_refused": self.builds_refused,
        }
        out.update(self._window_metrics([_window(u) for u in self.updates]))
        return out

    def _enclave_row(self: Runner, inst: Instance, end: int, windows: list[tuple[int, int]]) -> EnclaveRow:
        outages = list(inst.outages)
        if inst.outage_from is not None:
            outages.append((inst.outage_from, end))
        first = windows[0] if windows else None
        phases: dict[str, list[int]] = {phase: [] for phase in ECALL_PHASES}
        for t0, lat in inst.ecalls:
            if first is None or t0 + lat < first[0]:
                phases["before"].append(lat)
            elif t0 > first[1]:
                phases["after"].append(lat)
            else:
                phases["during"].append(lat)
        latency = {phase: _percentiles(v) for phase, v in phases.items()}
        return EnclaveRow(
            name=inst.name,
            pid=inst.pid,
            state=inst.state,
            epc_pages_peak=inst.peak_pages,
            restarts=inst.restarts,
            downtime_ns=inst.downtime_ns + (end - inst.down_since if inst.down_since is not None else 0),
            last_verdict=inst.last_verdict,
            unavailable_ns=sum(b - a for a, b in outages),
            ecall_latency_ns=latency,
        )

    def _narrative(self: Runner) -> list[str]:
        order = sorted(range(len(self.events)), key=lambda i: (self.events[i]["t_start_ns"], i))
        lines = []
        for i in order:
            ev = self.events[i]
            dur = ev["t_end_ns"] - ev["t_start_ns"]
            stamp = f"t={format_ns(ev['t_start_ns'])}" + (f" (+{format_ns(dur)})" if dur else "")
            head = ev["kind"].replace("_", " ") if ev["kind"] != "note" else ""
            what = " ".join(x for x in (head, ev["subject"]) if x)
            tail = ": ".join(x for x in (ev["outcome"], ev["detail"]) if x)
            lines.append(
                f"{stamp}: {what}" + (f": {tail}" if tail else "")
                if ev["kind"] != "note"
                else f"{stamp}: {ev['detail']}"
            )
        return lines

    def _finish(self: Runner, end: int) -> RunResult:
        from sgxsim.sim.runner.core import policy_label

        self._record_epc(force=True)
        self.timeline.end_ns = end
        cap = self.machine.epc.npages
        peak = max((p for series in self.timeline.epc_pages.values() for _, p in series), default=0)
        self.timeline.epc_capacity_pages = cap if peak * 20 >= cap else None
        metrics = self.metrics()
        log = self._old_logs + self.kernel.log.lines()
        warns = self._old_warnings + self.kernel.log.warn_count
        s = self.scenario
        verdicts = self.timeline.verdicts
        statuses: dict[str, int] = {}
        for v in verdicts:
            statuses[v.status] = statuses.get(v.status, 0) + 1
        final_svn = self._cpusvn_hex()
        summary: list[tuple[str, Scalar]] = [
            ("policy", policy_label(self.policy)),
            ("boot_ns", self.t0_ns),
            ("scenario duration_ns", end),
            ("workload enclaves", len(self.instances)),
            ("VMs", len(self.vms)),
            ("SVN update attempts", len(self.updates)),
            ("final CPUSVN", final_svn),
            ("new CPUSVN reached", metrics["new_cpusvn_reached"]),
            ("new CPUSVN attested", metrics["new_cpusvn_attested"]),
            ("enclaves destroyed", metrics["enclaves_destroyed"]),
            ("restarts", metrics["restarts"]),
            ("enclave downtime_ns", metrics["enclave_downtime_ns"]),
            ("locked window_ns", metrics["locked_window_ns"]),
            ("ioctls refused in window", metrics["ioctls_refused_in_window"]),
            ("AEXs by IPI", metrics["aex_by_ipi"]),
            ("attestations", len(verdicts)),
            ("accepted by relying party", metrics["verdicts_accepted"]),
            ("time to attested new CPUSVN_ns", metrics["time_to_attested_ns"]),
            ("kernel WARNs", warns),
        ]
        for st in sorted(statuses):
            summary.append((f"verdicts {st}", statuses[st]))
        # ECALL latency phases count from the first update after boot (sgx_init's EUPDATESVN ran
        # before any workload).
        windows = [_window(u) for u in self.updates if u.trigger != "init"]
        enclaves = [self._enclave_row(i, end, windows) for i in self.instances]
        enclaves += [
            EnclaveRow(name=f"VM {v.spec.name} (vEPC)", pid=v.pid, state=v.state, epc_pages_peak=v.peak_pages)
            for v in self.vms
        ]
        machine: dict[str, Scalar] = {
            "sockets": s.machine.sockets,
            "cpus": self.ncpu,
            "epc_bytes": self.machine.epc.size,
            "epc_sections": len(s.machine.epc_sections),
            "sgx2": s.machine.sgx2,
            "eupdatesvn": s.machine.eupdatesvn,
            "vepc_policy": s.machine.vepc,
            "final_cpusvn": final_svn,
        }
        events = sorted(self.events, key=lambda e: e["t_start_ns"])
        updates = self._update_rows()
        report = Report(
            scenario=s.name,
            seed=self.seed,
            policy=policy_label(self.policy),
            machine=machine,
            narrative=self._narrative(),
            summary=summary,
            metrics=metrics,
            enclaves=enclaves,
            verdicts=list(verdicts),
            kernel_log=log,
            kernel_warnings=warns,
            events=events,
            updates=updates,
            warnings=list(self.warnings),
        )
        for ev in events:
            if ev["kind"] in (
                "microcode_load",
                "tcb_recovery",
                "svn_update_trigger",
                "drain",
                "restart",
                "kexec",
            ):
                self.timeline.add_event(
                    ev["t_start_ns"],
                    ev["t_end_ns"],
                    ev["kind"],
                    ev["subject"],
                    ev["outcome"],
                    bool(ev.get("extra", {}).get("svn_raising", False)),
                )
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
            events_run=len(self.events),
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
