"""Exploration programs for SGX-aware late microcode loading (issue 4, "concurrency that can be trusted").

Each named scenario builds a small world for one schedule — a machine (48 or 56 EPC pages,
4 logical CPUs), a :class:`~sgxsim.kernel.main.Kernel` on the
:class:`~sgxsim.sim.sched.DeterministicScheduler`, ksgxd as a daemon task, and tasks for an
updater and for processes that build, enter, fault and release enclaves or run a VM — and is
explored by :func:`sgxsim.sim.explore.explore` with these invariants after every step:

``locked-window``
    no EPC page becomes valid in the EPCM and none is allocated between the return of the
    writer's ``synchronize_srcu()`` and ``sgx_unlock_epc()`` (``k.svn.in_locked_window``);
``eupdatesvn-empty-epc``
    EUPDATESVN never succeeds (CR_BASE_PK replaced) while any EPC page is valid; and when one
    succeeded, every enclave that exists is dead (``SGX_ENCL_DEAD`` in the fixed kernel,
    released, or — as posted, where the kernel never marks them — without a valid SECS in the
    EPCM) and CPUSVN equals ``machine.min_loaded_svn()``;
``eupdatesvn-usage-zero``
    under ``linux-6.19-on-open`` (and the non-destructive trigger) EUPDATESVN is in flight, or
    succeeds, only while the SGX usage count is zero;
``update-records``
    every finished update record is consistent: no SGX_LOCKFAIL (another leaf overlapped
    EUPDATESVN), an SGX_EPC_NOT_READY result is logged, ``k.svn.validate()`` is clean;
``user-visible``
    what the processes saw is allowed: a value read back from a live enclave is the value put,
    and only the scenario's errnos occur.

After the schedule completes (every process exited): ``epc-clean`` (``validate_epc`` with
``expect_empty``: free + used = total, EPCM agrees, no leak), ``no-dram-leak``, and
``outcome`` (the update's result is one the scenario allows). The engine adds "terminates"
(step bound), "no-deadlock", "no-task-exception" and "no kernel WARN beyond the scenario's".

``guest-zap`` / ``guest-skip`` boot a guest kernel on a 48-page vEPC (host: 56 pages) and
add ``guest-no-warn`` (per step) and ``guest-clean`` (the guest's EPC accounting when its
process exited; under zap a zapped guest saw the loss and rebuilt, under skip it lost nothing).

Every scenario also runs with ``rfc_v2_as_posted = True`` (program name ``NAME@as-posted``);
the exploration then finds the posting's defects (the reclaimer EBLOCKing zapped pages, EINIT
overlapping EUPDATESVN, the unguarded release-path EREMOVE).

Modules, one reason to change each: :mod:`~sgxsim.sim.svn.kit` (the enclave every process
builds), :mod:`~sgxsim.sim.svn.world` (one schedule's state), :mod:`~sgxsim.sim.svn.tasks` (the
actors), :mod:`~sgxsim.sim.svn.setups` (which actors a scenario spawns),
:mod:`~sgxsim.sim.svn.scenarios` (the named scenarios), :mod:`~sgxsim.sim.svn.invariants` and
:mod:`~sgxsim.sim.svn.program` (a scenario as an exploration program).

Models: the test recipe of RFC v2 (a late load while an SGX stress test runs), the
invariants of issue 4.
Differs: see :mod:`~sgxsim.sim.svn.tasks` (ksgxd's back-off).
"""

from sgxsim.sim.svn.invariants import svn_final_checks, svn_invariants
from sgxsim.sim.svn.kit import EnclaveKit, EnclHandle
from sgxsim.sim.svn.program import AS_POSTED_SUFFIX, svn_program
from sgxsim.sim.svn.scenarios import SCENARIOS, SvnScenario, scenario_names
from sgxsim.sim.svn.world import ENCLAVE_ACCESS_NS, SvnWorld

__all__ = [
    "AS_POSTED_SUFFIX",
    "ENCLAVE_ACCESS_NS",
    "SCENARIOS",
    "EnclHandle",
    "EnclaveKit",
    "SvnScenario",
    "SvnWorld",
    "scenario_names",
    "svn_final_checks",
    "svn_invariants",
    "svn_program",
]
