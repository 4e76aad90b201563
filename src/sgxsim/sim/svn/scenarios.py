"""The named exploration scenarios."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from sgxsim.kernel.policy import SvnPolicy
from sgxsim.kernel.svn import SvnConfig
from sgxsim.sim.svn.setups import (
    Setup,
    setup_619,
    setup_entropy,
    setup_guest,
    setup_ioctl_race,
    setup_ipi,
    setup_kexec,
    setup_reenter,
    setup_release_abort,
    setup_release_wait,
    setup_success,
    setup_trigger,
    setup_vepc,
)


@dataclass(frozen=True)
class SvnScenario:
    """A named exploration scenario.

    ``outcomes``: result names (:class:`~sgxsim.kernel.svn.SvnUpdate.result_name`) the scenario's
    updates (``trigger``) may end with, for the fixed kernel; ``expected_warns``: kernel WARNs
    allowed (None: any). ``allowed_errnos``: what a process may see from the ioctls.
    """

    name: str
    summary: str
    setup: Setup
    policy: SvnPolicy = SvnPolicy.RFC_V2_TEARDOWN
    vepc: str = "skip"
    trigger_mode: str = "destructive"
    update_at_init: bool = True
    epc_pages: int = 56
    cpus: int = 4
    trigger: str = "late_load"
    outcomes: frozenset[str] = frozenset({"SUCCESS"})
    expected_warns: int | None = 0
    allowed_errnos: frozenset[str] = frozenset({"EBUSY", "EIO"})
    schedules_ci: int = 200
    max_steps: int = 20_000

    def svn_config(self, as_posted: bool) -> SvnConfig:
        return SvnConfig(
            policy=self.policy,
            vepc=self.vepc,
            trigger_mode=self.trigger_mode,
            rfc_v2_as_posted=as_posted,
            update_at_init=self.update_at_init,
        )


_S = SvnScenario


_SCENARIO_LIST: Final = (
    _S("success", "a late load while two processes build and use enclaves and ksgxd reclaims",
       setup_success, schedules_ci=1000),
    _S("reclaim", "the success world under EPC pressure: ksgxd evicts and reloads pages around the update",
       setup_success, epc_pages=48),
    _S("ipi", "a thread inside an enclave during the zap: IPI, AEX, then success", setup_ipi,
       schedules_ci=1000),
    _S("reenter", "a thread that re-enters after every AEX: the zap gives up after 10 IPI rounds",
       setup_reenter, outcomes=frozenset({"-EBUSY", "SUCCESS"}), expected_warns=1),
    _S("release-wait", "a process exits during the zap: the zapper waits for its VA and SECS pages",
       setup_release_wait, schedules_ci=1000),
    _S("release-abort", "the release-side EREMOVE fails: the update aborts with -EIO",
       setup_release_abort, outcomes=frozenset({"-EIO", "SUCCESS"}), expected_warns=None),
    _S("ioctl-race", "CREATE/ADD_PAGES/EINIT/SGX2 ioctls and faults racing the EPC lock",
       setup_ioctl_race),
    _S("vepc-skip", "a VM holds EPC: guest pages are skipped, EUPDATESVN returns EPC_NOT_READY",
       setup_vepc, outcomes=frozenset({"SGX_EPC_NOT_READY"})),
    _S("vepc-zap", "a VM holds EPC: guest pages are EREMOVE'd too, the update succeeds",
       setup_vepc, vepc="zap"),
    _S("entropy", "RDSEED fails 3 times, the 4th EUPDATESVN succeeds", setup_entropy(3)),
    _S("entropy-starved", "RDSEED starved: SGX_INSUFFICIENT_ENTROPY after 10 tries",
       setup_entropy(None), outcomes=frozenset({"SGX_INSUFFICIENT_ENTROPY"})),
    _S("kexec-init", "after kexec the driver sanitizes the EPC and runs EUPDATESVN at init",
       setup_kexec, trigger="init"),
    _S("trigger-destructive", "the explicit trigger in destructive mode: teardown on demand",
       setup_trigger("destructive"), policy=SvnPolicy.EXPLICIT_TRIGGER, trigger="trigger"),
    _S("trigger-nondestructive", "the explicit trigger in non-destructive mode: -EBUSY while users exist",
       setup_trigger("non-destructive"), policy=SvnPolicy.EXPLICIT_TRIGGER, trigger_mode="non-destructive",
       trigger="trigger", outcomes=frozenset({"SUCCESS", "SGX_NO_UPDATE", "-EBUSY"})),
    _S("linux-6.19", "EUPDATESVN on the 0 -> 1 usage transition, open/close racing it",
       setup_619, policy=SvnPolicy.LINUX_6_19_ON_OPEN, trigger="open",
       outcomes=frozenset({"SUCCESS", "SGX_NO_UPDATE"}),
       allowed_errnos=frozenset({"EBUSY", "EIO", "EAGAIN"})),
    _S("guest-zap", "a booted guest runs an enclave: its pages are EREMOVE'd, the guest rebuilds",
       setup_guest, vepc="zap"),
    _S("guest-skip", "a booted guest runs an enclave: its pages are skipped, EPC_NOT_READY",
       setup_guest, outcomes=frozenset({"SGX_EPC_NOT_READY"})),
)  # fmt: skip


#: Builtin scenarios by name.
SCENARIOS: Final = MappingProxyType({s.name: s for s in _SCENARIO_LIST})


def scenario_names() -> tuple[str, ...]:
    return tuple(SCENARIOS)
