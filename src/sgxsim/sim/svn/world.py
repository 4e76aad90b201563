"""One schedule's world: machine, kernel, tasks, and what they saw."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import numpy as np

from sgxsim.errors import InvalidArgument
from sgxsim.hw.machine import Machine
from sgxsim.kernel.kvm import Vm
from sgxsim.kernel.main import Kernel
from sgxsim.kernel.printk import KernelLog
from sgxsim.kernel.process import Process
from sgxsim.kernel.svn import SvnConfig, SvnUpdate
from sgxsim.rand import Rng
from sgxsim.sim.sched import DeterministicScheduler
from sgxsim.sim.svn.kit import EnclaveKit, EnclHandle

if TYPE_CHECKING:
    from sgxsim.sim.svn.scenarios import SvnScenario


#: [ASSUMED] Simulated time one memory access of enclave code takes (the hardware model charges
#: only leaves); without it a spinning enclave thread would stop simulated time.
ENCLAVE_ACCESS_NS: Final = 10


@dataclass
class SvnWorld:
    """One schedule's world: machine, kernel, tasks, and what they saw."""

    sched: DeterministicScheduler
    rng: Rng
    scenario: SvnScenario
    as_posted: bool
    kit: EnclaveKit
    machine: Machine
    kernel: Kernel | None = None
    procs: list[Process] = field(default_factory=list)
    #: What the tasks did: (task, event, detail) in order.
    events: list[tuple[str, str, str]] = field(default_factory=list)
    #: Things that must never happen (user-visible corruption, unexpected errno).
    errors: list[str] = field(default_factory=list)
    #: Results of the administrator's actions (reload / trigger / open), in order.
    admin: list[tuple[str, int]] = field(default_factory=list)
    done: set[str] = field(default_factory=set)
    dram_baseline: int = 0
    # Trackers of the per-step invariants.
    prev_valid: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    prev_in_window: bool = False
    prev_free: int = 0
    prev_base_pk: bytes = b""
    max_zap_waiting: int = 0
    records_checked: int = 0
    ipi_seen: bool = False
    svn_config: SvnConfig = field(default_factory=SvnConfig)
    #: Enclaves built by the spinner/victim processes, by task name.
    handles: dict[str, EnclHandle] = field(default_factory=dict)
    #: release-abort: the enclave id whose release-side EREMOVEs fail (-1: none).
    inject_release_eremove: int = -1
    guest_secs: bool = False
    #: CPUs whose spinning thread leaves once an IPI is pending for it (``ipi``).
    leave_on_ipi: set[int] = field(default_factory=set)
    #: ioctl-race: racers whose enclave is added and waits for EINIT.
    ready: int = 0
    #: guest-*: the VM (VMM process on the host) and its booted guest kernel.
    vm: Vm | None = None
    guest: Kernel | None = None
    #: guest-*: the guest process built its first enclave / saw it lost / rebuilt it.
    guest_built: bool = False
    guest_lost: int = 0
    guest_rebuilt: int = 0
    #: guest-*: what validate_epc(guest, expect_empty=True) found when the guest process exited.
    guest_problems: list[str] = field(default_factory=list)

    @property
    def k(self) -> Kernel:
        if self.kernel is None:
            raise InvalidArgument("the kernel has not booted yet")
        return self.kernel

    @property
    def log(self) -> KernelLog | None:
        return None if self.kernel is None else self.kernel.log

    def spawn(self, fn: Callable[..., object], *args: object, name: str, cpu: int) -> None:
        """Spawn an actor; the last one to finish stops ksgxd."""

        def body() -> None:
            try:
                fn(*args)
            finally:
                _stop_ksgxd_if_last(self)

        self.sched.spawn(body, name=name, cpu=cpu)

    def note(self, event: str, detail: str = "") -> None:
        task = self.sched.current
        self.events.append(("-" if task is None else task.name, event, detail))

    def updates(self, trigger: str | None = None) -> list[SvnUpdate]:
        """Finished update records (``trigger`` filters: late_load, trigger, open, init)."""
        if self.kernel is None:
            return []
        return [
            r for r in self.kernel.svn.updates if r.result_name and (trigger is None or r.trigger == trigger)
        ]

    def wait_until(self, cond: Callable[[], bool], step_ns: int = 20_000, limit: int = 2_000) -> bool:
        """Sleep-poll (simulated time) until ``cond()``; False if it never held."""
        for _ in range(limit):
            if cond():
                return True
            self.sched.sleep_ns(step_ns)
        return cond()


def _stop_ksgxd_if_last(w: SvnWorld) -> None:
    """When every other task finished: kthread_stop(ksgxd) so its last pass completes and the
    schedule ends with the EPC quiescent."""
    k = w.kernel
    cur = w.sched.current
    if k is None or cur is None:
        return
    others = [t for t in w.sched.tasks if t is not cur and t.name != "ksgxd"]
    if all(not t.alive for t in others) and not k.ksgxd_should_stop:
        k.ksgxd_should_stop = True
        k.ksgxd_waitq.wake_up()
