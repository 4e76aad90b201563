"""Scenario setups: which actors a scenario spawns, on which CPUs, waiting for what."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from sgxsim.hw.cpu import LogicalProcessor
from sgxsim.kernel.kvm import Vm, VmConfig
from sgxsim.kernel.main import Kernel
from sgxsim.kernel.policy import SvnPolicy
from sgxsim.kernel.process import Process
from sgxsim.kernel.svn import SvnConfig
from sgxsim.sim.svn.tasks import (
    build_retrying,
    exiting_task,
    guest_task,
    ioctl_racer,
    ksgxd_task,
    newer_patch,
    old_enclave,
    release_flag,
    reload_task,
    spinner_task,
    user_task,
    vmm_task,
)
from sgxsim.sim.svn.world import ENCLAVE_ACCESS_NS, SvnWorld

Setup = Callable[[SvnWorld], None]


def spawn_common(w: SvnWorld) -> None:
    w.sched.spawn(ksgxd_task, w, name="ksgxd", cpu=1)


def setup_success(w: SvnWorld) -> None:
    spawn_common(w)
    w.spawn(reload_task, w, name="updater", cpu=0)
    w.spawn(user_task, w, "userA", 2, 1, name="userA", cpu=2)
    w.spawn(user_task, w, "userB", 3, 1, name="userB", cpu=3)


def _inside(w: SvnWorld, cpu: int) -> Callable[[], bool]:
    return lambda: w.machine.cpus[cpu].in_enclave


def setup_ipi(w: SvnWorld) -> None:
    spawn_common(w)
    # 4 reads: the thread leaves within the zapper's 10 IPI rounds (each round lets it run >= 1).
    # The thread spins until the first IPI reaches its CPU, then leaves (after the AEX and
    # ERESUME): the zapper's retry after that IPI succeeds.
    w.leave_on_ipi.add(2)
    w.spawn(spinner_task, w, "spinner", 2, 600, name="spinner", cpu=2)
    w.spawn(reload_task, w, None, _inside(w, 2), name="updater", cpu=0)


def setup_reenter(w: SvnWorld) -> None:
    spawn_common(w)
    w.spawn(spinner_task, w, "spinner", 2, 600, name="spinner", cpu=2)

    def after_update() -> None:
        h = w.handles.get("spinner")
        if h is not None:
            release_flag(w, h)

    def updater() -> None:
        try:
            w.wait_until(_inside(w, 2))
            ret = w.k.svn.microcode_reload(newer_patch(w))
            w.admin.append(("reload", ret))
            after_update()
        finally:
            w.done.add("updater")

    w.spawn(updater, name="updater", cpu=0)


def setup_release_wait(w: SvnWorld) -> None:
    spawn_common(w)
    w.spawn(
        reload_task, w, None, lambda: "exiting" in w.handles or "exiting" in w.done, name="updater", cpu=0
    )
    # Exits (releasing its enclave: children, SECS, VA pages) once the EPC is locked.
    w.spawn(exiting_task, w, name="exiting", cpu=2)


def setup_release_abort(w: SvnWorld) -> None:
    spawn_common(w)
    victim = "victim"

    def victim_task() -> None:
        proc = Process(w.k, victim, cpu=2)
        w.procs.append(proc)
        try:
            h = build_retrying(w, proc, 30)
            if h is not None:
                w.handles[victim] = h
                w.inject_release_eremove = h.encl_id
            w.wait_until(lambda: w.k.sgx_epc_locked or bool(w.admin), 5_000, 20_000)
        finally:
            proc.exit()
            w.done.add(victim)

    def updater() -> None:
        try:
            w.wait_until(lambda: victim in w.handles or victim in w.done)
            ret = w.k.svn.microcode_reload(newer_patch(w))
            w.admin.append(("reload", ret))
            w.wait_until(lambda: victim in w.done, 20_000, 100_000)
            w.inject_release_eremove = -1
            # A second load zaps what the failed release leaked.
            ret = w.k.svn.microcode_reload(newer_patch(w))
            w.admin.append(("reload", ret))
        finally:
            w.done.add("updater")

    w.spawn(victim_task, name=victim, cpu=2)
    w.spawn(updater, name="updater", cpu=0)
    w.spawn(user_task, w, "userB", 3, 1, name="userB", cpu=3)


def setup_ioctl_race(w: SvnWorld) -> None:
    spawn_common(w)
    w.spawn(reload_task, w, None, lambda: w.ready >= 2, name="updater", cpu=0)
    w.spawn(ioctl_racer, w, "racerA", 2, name="racerA", cpu=2)
    w.spawn(ioctl_racer, w, "racerB", 3, False, name="racerB", cpu=3)


def setup_vepc(w: SvnWorld) -> None:
    spawn_common(w)
    w.spawn(vmm_task, w, "vmm", 3, True, name="vmm", cpu=3)
    w.spawn(reload_task, w, None, lambda: w.guest_secs, name="updater", cpu=0)
    w.spawn(user_task, w, "userA", 2, 1, name="userA", cpu=2)


def setup_entropy(starve: int | None) -> Setup:
    def setup(w: SvnWorld) -> None:
        spawn_common(w)
        w.spawn(reload_task, w, lambda: w.machine.entropy.starve(starve), name="updater", cpu=0)
        w.spawn(user_task, w, "userA", 2, 1, name="userA", cpu=2)

    return setup


def setup_kexec(w: SvnWorld) -> None:
    """The previous kernel left enclaves in the EPC and loaded a newer patch; kexec; boot."""
    m = w.machine
    old = Kernel(m, svn=SvnConfig(policy=SvnPolicy.NONE))
    p = Process(old, "old-user", cpu=2)
    old_enclave(w, old, p)
    patch = newer_patch(w)
    for lp in m.cpus:
        m.load_microcode(lp.id, patch)
    m.kexec()

    def boot() -> None:
        w.kernel = Kernel(m, sched=w.sched, svn=w.svn_config)
        w.kernel.ksgxd_is_task = True
        w.dram_baseline = w.kernel.dram_pages
        w.sched.spawn(ksgxd_task, w, name="ksgxd", cpu=1)
        w.done.add("updater")

    w.spawn(boot, name="boot", cpu=0)

    def late_user() -> None:
        w.wait_until(lambda: w.kernel is not None and "updater" in w.done)
        user_task(w, "userA", 2, 1)

    w.spawn(late_user, name="userA", cpu=2)


def setup_trigger(mode: str) -> Setup:
    def setup(w: SvnWorld) -> None:
        spawn_common(w)

        def admin() -> None:
            k = w.k
            try:
                ret = k.svn.microcode_reload(newer_patch(w))
                w.admin.append(("reload", ret))
                if mode == "non-destructive":
                    w.wait_until(lambda: k.sgx_usage_count > 0 or "userA" in w.done)
                    w.admin.append(("trigger", k.svn.update_svn_store()))
                    w.wait_until(lambda: "userA" in w.done and "userB" in w.done)
                w.admin.append(("trigger", k.svn.update_svn_store()))
            finally:
                w.done.add("updater")

        w.spawn(admin, name="updater", cpu=0)
        w.spawn(user_task, w, "userA", 2, 1, name="userA", cpu=2)
        w.spawn(user_task, w, "userB", 3, 1, name="userB", cpu=3)

    return setup


def setup_619(w: SvnWorld) -> None:
    spawn_common(w)

    def admin() -> None:
        try:
            ret = w.k.svn.microcode_reload(newer_patch(w))
            w.admin.append(("reload", ret))
        finally:
            w.done.add("updater")

    def opener(name: str, cpu: int) -> None:
        # Round 1 races the load; round 2 opens after it (the 0 -> 1 transition updates).
        user_task(w, name, cpu, 1, 1)
        w.done.add(name + "-r1")
        w.wait_until(lambda: {"updater", "userA-r1", "userB-r1"} <= w.done)
        user_task(w, name + "2", cpu, 1, 1)

    w.spawn(admin, name="updater", cpu=0)
    w.spawn(opener, "userA", 2, name="userA", cpu=2)
    w.spawn(opener, "userB", 3, name="userB", cpu=3)


#: guest-*: the VM's EPC (one vEPC section, prealloc'ed from the host's 56 pages) and RAM.
_GUEST_EPC_PAGES: Final = 48


_GUEST_RAM_PAGES: Final = 512


def setup_guest(w: SvnWorld) -> None:
    """A VM (QEMU + KVM, prealloc'ed vEPC) with a booted guest kernel; a guest process builds
    and runs the enclave on vCPU 3 while the host's updater reloads microcode."""
    spawn_common(w)
    sched = w.sched
    vm = Vm(
        w.k,
        VmConfig(epc_pages=(_GUEST_EPC_PAGES,), ram_pages=_GUEST_RAM_PAGES, vcpus=w.scenario.cpus),
        name="qemu",
        cpu=3,
    )

    def guest_enclave_step(lp: LogicalProcessor) -> None:
        sched.charge(ENCLAVE_ACCESS_NS)
        sched.preempt("guest-enclave")

    vm.machine.on_enclave_step = guest_enclave_step
    w.vm = vm
    w.guest = vm.boot(sched=sched)
    w.spawn(guest_task, w, "guest-app", 3, name="guest-app", cpu=3)
    w.spawn(reload_task, w, None, lambda: w.guest_built or "guest-app" in w.done, name="updater", cpu=0)
