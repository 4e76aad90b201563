"""The scenario runner: a concurrent, deterministic simulation of one SGX host in simulated time.

A :class:`Runner` turns a :class:`~sgxsim.sim.scenario.Scenario` into a run. It boots a
:class:`~sgxsim.hw.machine.Machine` and a :class:`~sgxsim.kernel.main.Kernel` on the
deterministic scheduler (:mod:`sgxsim.sim.sched`), binds it to an
:class:`~sgxsim.sim.attestation.AttestationWorld`, and runs every actor as a task bound to a
logical CPU:

* each workload instance is a process: its main thread builds the enclave with the sdk loader,
  grows it with EAUG, seals, attests at its cadence and restarts (or exits) after EPC loss; its
  ECALL threads (``ecall_threads``) spend ``ecall_time`` per ECALL in enclave mode; a builder
  (``build_every``) creates, grows and destroys short-lived enclaves at its cadence;
* each VM maps its vEPC and runs a vCPU that enters the guest every millisecond (halted by the
  host while the EPC is locked under ``vepc = "zap"``);
* the operator runs the scenario's events in order on CPU 0; a late microcode load is
  ``stop_machine`` plus the SGX procedure of the policy and takes the simulated time its leaves
  cost, while the other CPUs keep running and meet it as the kernel code says.

The scheduler runs the runnable task with the earliest simulated time (ties by a seeded choice),
so a run is byte-reproducible from its seed. The modules: :mod:`.core` (the event loop and the
operator), :mod:`.workloads` (workload, builder and VM lifecycles), :mod:`.results` (metrics,
structured events and the report), :mod:`.progress` (what the ``progress`` callback gets).
"""

from __future__ import annotations

from collections.abc import Callable

from sgxsim.sim.runner.core import (
    RUN_POLICIES,
    WHAT_IF_LABEL,
    WHAT_IF_POLICY,
    Runner,
    policy_label,
)
from sgxsim.sim.runner.progress import RunProgress
from sgxsim.sim.runner.results import (
    EVENT_KINDS,
    WINDOW_METRICS,
    RunResult,
    _owner_counts,
)
from sgxsim.sim.scenario import Scenario

__all__ = [
    "EVENT_KINDS",
    "RUN_POLICIES",
    "WHAT_IF_LABEL",
    "WHAT_IF_POLICY",
    "WINDOW_METRICS",
    "RunProgress",
    "RunResult",
    "Runner",
    "_owner_counts",
    "policy_label",
    "run_scenario",
]


def run_scenario(
    scenario: Scenario,
    *,
    seed: int | None = None,
    policy: str | None = None,
    progress: Callable[[RunProgress], None] | None = None,
) -> RunResult:
    """Run ``scenario`` to its end (:class:`Runner` with the same arguments)."""
    return Runner(scenario, seed=seed, policy=policy, progress=progress).run()
