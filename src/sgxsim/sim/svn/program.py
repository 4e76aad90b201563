"""A scenario as an exploration :class:`~sgxsim.sim.explore.Program`."""

from __future__ import annotations

import sys
from types import FrameType
from typing import Final

from sgxsim.errors import InvalidArgument
from sgxsim.hw.arch import PAGE_SIZE, EnclsLeaf, LeafResult, SgxStatus
from sgxsim.hw.cpu import LogicalProcessor
from sgxsim.hw.epc import EpcSectionConfig
from sgxsim.hw.machine import DEFAULT_EPC_BASE, Machine, MachineConfig
from sgxsim.kernel.main import Kernel
from sgxsim.rand import Rng
from sgxsim.sdk.enclaves import register_enclave_sources
from sgxsim.sim.explore import Program
from sgxsim.sim.sched import DeterministicScheduler
from sgxsim.sim.svn.invariants import svn_final_checks, svn_invariants
from sgxsim.sim.svn.kit import EnclaveKit
from sgxsim.sim.svn.scenarios import SCENARIOS, SvnScenario
from sgxsim.sim.svn.tasks import release_flag
from sgxsim.sim.svn.world import ENCLAVE_ACCESS_NS, SvnWorld

#: The program-name suffix of the as-posted variant of a scenario.
AS_POSTED_SUFFIX: Final = "@as-posted"


class _InjectingMachine(Machine):
    """[MODEL] fault injection for ``release-abort``: EREMOVEs that sgx_encl_release() issues for
    one enclave report SGX_ENCLAVE_ACT, as if a thread of it were still inside on another CPU
    (impossible in Linux, where exit kills a process's threads before its mm goes; no
    architectural path makes the release-side EREMOVE fail in the fixed kernel)."""

    world: SvnWorld | None = None

    def encls_exec(self, cpu: int, leaf: int, rbx: int = 0, rcx: int = 0, rdx: int = 0) -> LeafResult:
        w = self.world
        if (
            leaf == EnclsLeaf.EREMOVE
            and w is not None
            and w.inject_release_eremove >= 0
            and w.kernel is not None
        ):
            k = w.kernel
            page = k.page_of(rcx)
            if page is not None and int(k.epc_owner_id[page]) == w.inject_release_eremove and _in_release():
                w.note("injected", f"EREMOVE of page {page} -> SGX_ENCLAVE_ACT")
                return SgxStatus.SGX_ENCLAVE_ACT
        return super().encls_exec(cpu, leaf, rbx, rcx, rdx)


def _in_release() -> bool:
    """Whether the EREMOVE being executed was issued by sgx_encl_release (a few frames up)."""
    f: FrameType | None = sys._getframe(2)
    for _ in range(12):
        if f is None:
            return False
        if f.f_code.co_name == "_sgx_encl_release":
            return True
        f = f.f_back
    return False


def _make_world(
    scenario: SvnScenario, as_posted: bool, kit: EnclaveKit, sched: DeterministicScheduler, rng: Rng
) -> SvnWorld:
    cfg = MachineConfig(
        epc_sections=(EpcSectionConfig(DEFAULT_EPC_BASE, scenario.epc_pages * PAGE_SIZE, 0),),
        cpus_per_socket=scenario.cpus,
    )
    cls = _InjectingMachine if scenario.name == "release-abort" else Machine
    m = cls(cfg, rng.child("machine"), clock=sched.cpu_clock())
    register_enclave_sources(m)
    w = SvnWorld(sched, rng, scenario, as_posted, kit, m)
    if isinstance(m, _InjectingMachine):
        m.world = w

    def enclave_step(lp: LogicalProcessor) -> None:
        sched.charge(ENCLAVE_ACCESS_NS)
        sched.preempt("enclave")
        if lp.pending_interrupt and lp.id in w.leave_on_ipi:
            h = w.handles.get("spinner")
            if h is not None:
                release_flag(w, h)

    m.on_enclave_step = enclave_step
    w.svn_config = scenario.svn_config(as_posted)
    if scenario.name != "kexec-init":
        k = Kernel(m, sched=sched, svn=w.svn_config)
        k.ksgxd_is_task = True
        w.kernel = k
        w.dram_baseline = k.dram_pages
    scenario.setup(w)
    w.prev_base_pk = m.cr_base_pk
    return w


def svn_program(name: str, *, as_posted: bool = False, kit: EnclaveKit | None = None) -> Program[SvnWorld]:
    """The exploration program of scenario ``name`` (``NAME@as-posted`` also selects as_posted).

    Outcomes: a :class:`~sgxsim.sim.explore.Program`; ``InvalidArgument`` for an unknown name.
    """
    if not isinstance(name, str):
        raise InvalidArgument(f"scenario name must be a str, got {name!r}")
    if name.endswith(AS_POSTED_SUFFIX):
        name = name[: -len(AS_POSTED_SUFFIX)]
        as_posted = True
    scenario = SCENARIOS.get(name)
    if scenario is None:
        raise InvalidArgument(f"unknown SVN exploration scenario {name!r}; known: {', '.join(SCENARIOS)}")
    if kit is None:
        kit = EnclaveKit.build()
    the_kit = kit

    def setup(sched: DeterministicScheduler, rng: Rng) -> SvnWorld:
        return _make_world(scenario, as_posted, the_kit, sched, rng)

    return Program(
        name=scenario.name + (AS_POSTED_SUFFIX if as_posted else ""),
        setup_fn=setup,
        invariants_fn=svn_invariants,
        final_checks_fn=svn_final_checks,
        log_fn=lambda w: w.log,
        expected_warns=scenario.expected_warns,
    )
