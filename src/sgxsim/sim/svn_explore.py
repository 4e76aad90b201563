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

Models: the test recipe of RFC v2 (a late load while an SGX stress test runs), the
invariants of issue 4.
Differs: ksgxd's loop sleeps 1 µs after a pass that reclaimed nothing (EPC locked, or every
page young). Linux spins with cond_resched(); PCT gives no fairness, so a spin would never let
the updater (or the enclave threads keeping pages young) run.
"""

from __future__ import annotations

import ctypes
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType, MappingProxyType
from typing import Final

import numpy as np
from cryptography.hazmat.primitives.asymmetric import rsa

from sgxsim.errors import InvalidArgument
from sgxsim.hw import crypto
from sgxsim.hw.arch import (
    PAGE_SIZE,
    Attributes,
    EnclsLeaf,
    LeafResult,
    PageType,
    Secs,
    SgxStatus,
    Sigstruct,
    Tcs,
)
from sgxsim.hw.arch import secinfo_flags as _secinfo_flags
from sgxsim.hw.cpu import LogicalProcessor, MicrocodePatch
from sgxsim.hw.enclu import program_image
from sgxsim.hw.epc import EpcSectionConfig
from sgxsim.hw.machine import DEFAULT_EPC_BASE, Machine, MachineConfig
from sgxsim.kernel import uapi as U  # noqa: N812
from sgxsim.kernel.encl import SGX_ENCL_CREATED, SGX_ENCL_DEAD
from sgxsim.kernel.kvm import Vm, VmConfig
from sgxsim.kernel.main import SGX_NR_HIGH_PAGES, Kernel, validate_epc
from sgxsim.kernel.policy import SvnPolicy
from sgxsim.kernel.printk import KernelLog
from sgxsim.kernel.process import Process, ProcessSignal
from sgxsim.kernel.svn import SvnConfig, SvnUpdate
from sgxsim.rand import Rng
from sgxsim.sim.explore import Invariant, Program
from sgxsim.sim.sched import DeterministicScheduler

__all__ = [
    "AS_POSTED_SUFFIX",
    "ENCLAVE_ACCESS_NS",
    "SCENARIOS",
    "EnclaveKit",
    "SvnScenario",
    "SvnWorld",
    "scenario_names",
    "svn_invariants",
    "svn_program",
]

#: [ASSUMED] Simulated time one memory access of enclave code takes (the hardware model charges
#: only leaves); without it a spinning enclave thread would stop simulated time.
ENCLAVE_ACCESS_NS: Final = 10
#: The program-name suffix of the as-posted variant of a scenario.
AS_POSTED_SUFFIX: Final = "@as-posted"

# --------------------------------------------------------------------------------------------
# The enclave every process runs

# Layout (offsets inside ELRANGE).
_TCS = 0x0000
_SSA = 0x1000
_DATA = 0x2000
_CODE = 0x3000

OP_PUT, OP_GET, OP_SPIN = 0, 1, 2

#: Enclave code: PUT/GET a u64 in the data page; SPIN reads a flag in untrusted memory until it
#: is non-zero or ``n`` reads were made (a thread that stays inside, re-entering after each AEX).
_PROGRAM = """
def enclave_entry(ctx):
    op = ctx.rdi
    t = ctx.read_u64(op)
    buf = ctx.base + 0x2000
    if t == 0:
        ctx.write_u64(buf, ctx.read_u64(op + 8))
    elif t == 1:
        ctx.write_u64(op + 8, ctx.read_u64(buf))
    elif t == 2:
        flag = op + 16
        n = ctx.read_u64(op + 32)
        i = 0
        while i < n and ctx.read_u64(flag) == 0:
            i += 1
        ctx.write_u64(op + 40, i)
    ctx.eexit(ctx.rcx)
"""


class _Op(ctypes.Structure):
    _pack_ = 1
    _fields_ = [
        ("type", ctypes.c_uint64),
        ("value", ctypes.c_uint64),
        ("flag", ctypes.c_uint64),
        ("pad", ctypes.c_uint64),
        ("n", ctypes.c_uint64),
        ("ret", ctypes.c_uint64),
    ]


@dataclass(frozen=True)
class EnclaveKit:
    """The enclave image every scenario loads, signed once (per exploration, not per schedule).

    Pages are added unmeasured (only the EADD records enter MRENCLAVE) to keep schedules short.
    """

    pages: tuple[tuple[int, bytes, int], ...]  # (offset, data, SECINFO flags)
    size: int
    sigstruct: bytes

    @classmethod
    def build(cls, heap_pages: int = 4, key: rsa.RSAPrivateKey | None = None) -> EnclaveKit:
        """Lay out and sign the enclave (heap pages after the code, RW)."""
        if not isinstance(heap_pages, int) or isinstance(heap_pages, bool) or heap_pages < 0:
            raise InvalidArgument(f"heap_pages must be an int >= 0, got {heap_pages!r}")
        code = program_image(_PROGRAM)
        code += bytes(-len(code) % PAGE_SIZE)
        tcs = Tcs(ossa=_SSA, nssa=1, oentry=_CODE, fslimit=0xFFFFFFFF, gslimit=0xFFFFFFFF).pack()
        rw = _secinfo_flags(PageType.PT_REG, 3)
        pages: list[tuple[int, bytes, int]] = [
            (_TCS, tcs, _secinfo_flags(PageType.PT_TCS)),
            (_SSA, bytes(PAGE_SIZE), rw),
            (_DATA, bytes(PAGE_SIZE), rw),
        ]
        for i in range(0, len(code), PAGE_SIZE):
            pages.append((_CODE + i, code[i : i + PAGE_SIZE], _secinfo_flags(PageType.PT_REG, 5)))
        top = pages[-1][0] + PAGE_SIZE
        for i in range(heap_pages):
            pages.append((top + i * PAGE_SIZE, bytes(PAGE_SIZE), rw))
        total = pages[-1][0] + PAGE_SIZE
        size = PAGE_SIZE
        while size < total:
            size <<= 1
        meas = crypto.Measurement()
        meas._ecreate(1, size)
        for off, data, fl in pages:
            hashed = fl & ~0x7 if (fl >> 8) & 0xFF == PageType.PT_TCS else fl
            meas.page(off, hashed, data, False)
        sig = Sigstruct(
            attributes=int(Attributes.MODE64BIT),
            attributes_mask=0xFFFF_FFFF_FFFF_FFFF,
            xfrm=3,
            xfrm_mask=0,
            mrenclave=meas.finalize(),
            vendor=0,
        )
        if key is None:
            key = crypto.rsa3072_e3_keygen(Rng(7).stream("keys"))
        return cls(tuple(pages), size, crypto.sigstruct_sign(sig, key).pack())

    @property
    def heap(self) -> tuple[int, int]:
        """(offset, pages) of the heap."""
        code_end = next(
            off for off, _, fl in self.pages if off > _CODE and fl == _secinfo_flags(PageType.PT_REG, 3)
        )
        return code_end, (self.pages[-1][0] + PAGE_SIZE - code_end) // PAGE_SIZE


@dataclass
class EnclHandle:
    """An enclave a process built: its fd, base and the untrusted op block."""

    proc: Process
    fd: int
    base: int
    op_addr: int
    encl_id: int


# --------------------------------------------------------------------------------------------
# The world


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


# --------------------------------------------------------------------------------------------
# Actors


def _errno_of(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        import errno as _errno

        return _errno.errorcode.get(exc.errno or 0, str(exc.errno))
    if isinstance(exc, ProcessSignal):
        return f"SIG{exc.info.signo}"
    return type(exc).__name__


def build_enclave(
    w: SvnWorld, proc: Process, *, init: bool = True, before_init: Callable[[], None] | None = None
) -> EnclHandle:
    """open + CREATE + ADD_PAGES (one ioctl per run of equal flags) + INIT + mmap, as load.c does.

    Raises OSError (EBUSY while EPC is locked...) with the enclave fd closed.
    """
    kit = w.kit
    size = kit.size
    fd = proc.open("/dev/sgx_enclave", U.O_RDWR)
    try:
        area = proc.mmap(0, 2 * size, U.PROT_NONE, U.MAP_PRIVATE | U.MAP_ANONYMOUS, -1, 0)
        base = (area + size - 1) & ~(size - 1)
        secs = Secs(size=size, base=base, ssa_frame_size=1, attributes=int(Attributes.MODE64BIT), xfrm=3)
        src = proc.alloc(secs.pack())
        try:
            proc.ioctl(fd, U.SGX_IOC_ENCLAVE_CREATE, U.sgx_enclave_create(src=src))
        finally:
            proc.munmap(src, PAGE_SIZE)
        encl_id = max(w.k.enclaves) if w.k.enclaves else -1
        pages = kit.pages
        i = 0
        while i < len(pages):
            j = i
            while (
                j + 1 < len(pages)
                and pages[j + 1][2] == pages[i][2]
                and pages[j + 1][0] == pages[j][0] + PAGE_SIZE
            ):
                j += 1
            run = pages[i : j + 1]
            length = len(run) * PAGE_SIZE
            src = proc.alloc(b"".join(p[1] for p in run))
            si = proc.alloc(struct.pack("<Q", pages[i][2]) + bytes(56))
            arg = U.sgx_enclave_add_pages(src=src, offset=pages[i][0], length=length, secinfo=si, flags=0)
            try:
                proc.ioctl(fd, U.SGX_IOC_ENCLAVE_ADD_PAGES, arg)
            except OSError:
                w.note("add_pages", f"partial count {arg.count} of {length}")
                if not 0 <= arg.count < length or arg.count % PAGE_SIZE:
                    w.errors.append(f"ADD_PAGES failed with count {arg.count} of {length}")
                raise
            finally:
                proc.munmap(src, length)
                proc.munmap(si, PAGE_SIZE)
            i = j + 1
        if init:
            addr = proc.alloc(kit.sigstruct)
            if before_init is not None:
                before_init()
            try:
                proc.ioctl(fd, U.SGX_IOC_ENCLAVE_INIT, U.sgx_enclave_init(sigstruct=addr))
            finally:
                proc.munmap(addr, PAGE_SIZE)
            rx = U.PROT_READ | U.PROT_EXEC
            rw = U.PROT_READ | U.PROT_WRITE
            shared = U.MAP_SHARED | U.MAP_FIXED
            heap_off, heap_n = kit.heap
            proc.mmap(base + _TCS, PAGE_SIZE, rw, shared, fd, 0)
            proc.mmap(base + _SSA, 2 * PAGE_SIZE, rw, shared, fd, 0)
            proc.mmap(base + _CODE, heap_off - _CODE, rx, shared, fd, 0)
            if heap_n:
                proc.mmap(base + heap_off, heap_n * PAGE_SIZE, rw, shared, fd, 0)
    except BaseException:
        proc.close(fd)
        raise
    op_addr = proc.alloc(PAGE_SIZE)
    return EnclHandle(proc, fd, base, op_addr, encl_id)


def enclave_call(h: EnclHandle, op: _Op) -> tuple[bool, _Op]:
    """EENTER the TCS with ``op``; (True, op as written back) on EEXIT, (False, op) if the vDSO
    reported an exception (the enclave lost its EPC: #PF with the SGX bit)."""
    proc = h.proc
    run = U.sgx_enclave_run()
    run.tcs = h.base + _TCS
    proc.write(h.op_addr, bytes(op))
    ret = proc.vdso_sgx_enter_enclave(h.op_addr, 0, 0, U.EENTER, 0, 0, run)
    out = _Op.from_buffer_copy(proc.read(h.op_addr, ctypes.sizeof(_Op)))
    return ret == 0 and run.function == U.EEXIT, out


def _release_flag(w: SvnWorld, h: EnclHandle) -> None:
    """Set the SPIN op's flag in the process's memory (what another thread of it would do)."""
    pte = h.proc.mm.lookup(h.op_addr)
    if pte is not None:
        w.machine.dram.write(pte.phys + 16, struct.pack("<Q", 1))


def user_task(w: SvnWorld, name: str, cpu: int, calls: int = 2, rounds: int = 1, retries: int = 30) -> None:
    """A process that builds an enclave (retrying on EBUSY), PUTs and GETs values, and exits.

    A GET from a live enclave must return the last PUT (else: corruption, recorded as an error);
    a call that faults means the enclave lost its EPC: the process closes it and builds anew.
    """
    proc = Process(w.k, name, cpu=cpu)
    w.procs.append(proc)
    value = (cpu << 8) | 1
    try:
        for _ in range(rounds):
            h = _build_retrying(w, proc, retries)
            if h is None:
                continue
            for c in range(calls):
                value += 1
                ok, _ = enclave_call(h, _Op(type=OP_PUT, value=value))
                if ok:
                    ok, out = enclave_call(h, _Op(type=OP_GET))
                    if ok and out.value != value:
                        w.errors.append(f"{name}: enclave {h.encl_id} read {out.value:#x}, put {value:#x}")
                if not ok:
                    w.note("enclave_lost", f"encl {h.encl_id} call {c}")
                    proc.close(h.fd)
                    h = _build_retrying(w, proc, retries)
                    if h is None:
                        break
            if h is not None:
                proc.close(h.fd)
    finally:
        proc.exit()
        w.done.add(name)


def _build_retrying(w: SvnWorld, proc: Process, retries: int) -> EnclHandle | None:
    for _ in range(retries):
        try:
            return build_enclave(w, proc)
        except OSError as exc:
            err = _errno_of(exc)
            w.note("build_failed", err)
            if err not in w.scenario.allowed_errnos:
                w.errors.append(f"{proc.name}: enclave build failed with {err}")
                return None
            w.sched.sleep_ns(30_000)
    return None


def ksgxd_task(w: SvnWorld) -> None:
    """ksgxd (see the module docstring's Differs: sleeps after a pass that reclaimed nothing)."""
    k = w.k
    k.ksgxd_is_task = True
    while not k.ksgxd_should_stop:
        k.ksgxd_waitq.wait_event(lambda: k.ksgxd_should_stop or k.sgx_should_reclaim(SGX_NR_HIGH_PAGES))
        reclaimed = k.stats.get("pages_reclaimed", 0)
        k.ksgxd_step()
        if k.stats.get("pages_reclaimed", 0) == reclaimed:
            # Nothing reclaimed (EPC locked, or every page young): back off 1 us.
            w.sched.sleep_ns(1_000)
        else:
            w.sched.preempt("cond_resched")


def _patch(w: SvnWorld, step: int = 1) -> MicrocodePatch:
    rev = w.machine.cpus[0].ucode.revision + step
    late = w.machine.min_loaded_svn()[0] + step  # every component rises by `step`
    base = late
    return MicrocodePatch.with_svns(rev, base=base, late_microcode=late, name=f"late+{step}")


def reload_task(
    w: SvnWorld,
    before: Callable[[], None] | None = None,
    wait: Callable[[], bool] | None = None,
    loads: int = 1,
) -> None:
    """The administrator: ``echo 1 > /sys/devices/system/cpu/microcode/reload`` with a newer patch."""
    try:
        for i in range(loads):
            if wait is not None and i == 0:
                w.wait_until(wait)
            if before is not None and i == 0:
                before()
            ret = w.k.svn.microcode_reload(_patch(w))
            w.admin.append(("reload", ret))
    finally:
        w.done.add("updater")


# --------------------------------------------------------------------------------------------
# Scenario setups

Setup = Callable[[SvnWorld], None]


def _spawn_common(w: SvnWorld) -> None:
    w.sched.spawn(ksgxd_task, w, name="ksgxd", cpu=1)


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


def _setup_success(w: SvnWorld) -> None:
    _spawn_common(w)
    w.spawn(reload_task, w, name="updater", cpu=0)
    w.spawn(user_task, w, "userA", 2, 1, name="userA", cpu=2)
    w.spawn(user_task, w, "userB", 3, 1, name="userB", cpu=3)


def _spinner(w: SvnWorld, name: str, cpu: int, n: int, enter_when: Callable[[], bool] | None = None) -> None:
    """A process whose thread enters the enclave with SPIN (``n`` reads unless the flag is set)."""
    proc = Process(w.k, name, cpu=cpu)
    w.procs.append(proc)
    try:
        h = _build_retrying(w, proc, 30)
        if h is None:
            return
        w.handles[name] = h
        if enter_when is not None:
            w.wait_until(enter_when, 5_000, 20_000)
        ok, out = enclave_call(h, _Op(type=OP_SPIN, n=n))
        w.note("spin_done", f"ok={ok} iterations={out.ret if ok else '-'}")
        proc.close(h.fd)
    finally:
        if not proc.exited:
            proc.exit()
        w.done.add(name)


def _inside(w: SvnWorld, cpu: int) -> Callable[[], bool]:
    return lambda: w.machine.cpus[cpu].in_enclave


def _setup_ipi(w: SvnWorld) -> None:
    _spawn_common(w)
    # 4 reads: the thread leaves within the zapper's 10 IPI rounds (each round lets it run >= 1).
    # The thread spins until the first IPI reaches its CPU, then leaves (after the AEX and
    # ERESUME): the zapper's retry after that IPI succeeds.
    w.leave_on_ipi.add(2)
    w.spawn(_spinner, w, "spinner", 2, 600, name="spinner", cpu=2)
    w.spawn(reload_task, w, None, _inside(w, 2), name="updater", cpu=0)


def _setup_reenter(w: SvnWorld) -> None:
    _spawn_common(w)
    w.spawn(_spinner, w, "spinner", 2, 600, name="spinner", cpu=2)

    def after_update() -> None:
        h = w.handles.get("spinner")
        if h is not None:
            _release_flag(w, h)

    def updater() -> None:
        try:
            w.wait_until(_inside(w, 2))
            ret = w.k.svn.microcode_reload(_patch(w))
            w.admin.append(("reload", ret))
            after_update()
        finally:
            w.done.add("updater")

    w.spawn(updater, name="updater", cpu=0)


def _exiting_task(w: SvnWorld) -> None:
    """Build an enclave, use it, and exit without closing it once the EPC is locked."""
    proc = Process(w.k, "exiting", cpu=2)
    w.procs.append(proc)
    try:
        h = _build_retrying(w, proc, 30)
        if h is not None:
            w.handles["exiting"] = h
            enclave_call(h, _Op(type=OP_PUT, value=7))
            w.wait_until(lambda: w.k.sgx_epc_locked or bool(w.admin), 5_000, 20_000)
    finally:
        proc.exit()
        w.done.add("exiting")


def _setup_release_wait(w: SvnWorld) -> None:
    _spawn_common(w)
    w.spawn(
        reload_task, w, None, lambda: "exiting" in w.handles or "exiting" in w.done, name="updater", cpu=0
    )
    # Exits (releasing its enclave: children, SECS, VA pages) once the EPC is locked.
    w.spawn(_exiting_task, w, name="exiting", cpu=2)


def _setup_release_abort(w: SvnWorld) -> None:
    _spawn_common(w)
    victim = "victim"

    def victim_task() -> None:
        proc = Process(w.k, victim, cpu=2)
        w.procs.append(proc)
        try:
            h = _build_retrying(w, proc, 30)
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
            ret = w.k.svn.microcode_reload(_patch(w))
            w.admin.append(("reload", ret))
            w.wait_until(lambda: victim in w.done, 20_000, 100_000)
            w.inject_release_eremove = -1
            # A second load zaps what the failed release leaked.
            ret = w.k.svn.microcode_reload(_patch(w))
            w.admin.append(("reload", ret))
        finally:
            w.done.add("updater")

    w.spawn(victim_task, name=victim, cpu=2)
    w.spawn(updater, name="updater", cpu=0)
    w.spawn(user_task, w, "userB", 3, 1, name="userB", cpu=3)


def _setup_ioctl_race(w: SvnWorld) -> None:
    _spawn_common(w)
    w.spawn(reload_task, w, None, lambda: w.ready >= 2, name="updater", cpu=0)
    w.spawn(_ioctl_racer, w, "racerA", 2, name="racerA", cpu=2)
    w.spawn(_ioctl_racer, w, "racerB", 3, False, name="racerB", cpu=3)


def _ioctl_racer(w: SvnWorld, name: str, cpu: int, einit_racer: bool = True) -> None:
    """An EINIT racer (CREATE/ADD_PAGES before the lock, EINIT while EUPDATESVN runs) or a
    builder that starts once the EPC is locked (CREATE/ADD_PAGES -EBUSY, partial counts); then
    SGX2 ioctls and faults."""
    proc = Process(w.k, name, cpu=cpu)
    w.procs.append(proc)
    try:
        h: EnclHandle | None = None
        hook: Callable[[], None] | None = None
        if einit_racer:
            hook = lambda: _await_eupdatesvn(w)  # noqa: E731
        else:
            w.ready += 1
            w.wait_until(lambda: w.k.sgx_epc_locked or bool(w.admin), 5_000, 20_000)
        for _ in range(20):
            try:
                h = build_enclave(w, proc, before_init=hook)
                break
            except OSError as exc:
                err = _errno_of(exc)
                w.note("build_failed", err)
                if err not in w.scenario.allowed_errnos:
                    w.errors.append(f"{name}: enclave build failed with {err}")
                    return
                w.sched.sleep_ns(30_000)
        if h is None:
            return
        heap_off, heap_n = w.kit.heap
        # SGX2: restrict the heap to read-only (EMODPR per page); partial progress in count.
        arg = U.sgx_enclave_restrict_permissions(
            offset=heap_off, length=heap_n * PAGE_SIZE, permissions=U.PROT_READ
        )
        try:
            proc.ioctl(h.fd, U.SGX_IOC_ENCLAVE_RESTRICT_PERMISSIONS, arg)
            w.note("restrict", f"count {arg.count}")
        except OSError as exc:
            err = _errno_of(exc)
            w.note("restrict_failed", f"{err} count {arg.count}")
            # EAGAIN: a heap page was being reclaimed (Linux's SGX2 ioctls ask to retry).
            if err not in w.scenario.allowed_errnos and err != "EAGAIN":
                w.errors.append(f"{name}: RESTRICT_PERMISSIONS failed with {err}")
            elif not 0 <= arg.count <= heap_n * PAGE_SIZE or arg.count % PAGE_SIZE:
                w.errors.append(f"{name}: RESTRICT_PERMISSIONS count {arg.count}")
        # Faults: touch the heap (resident: nothing; reclaimed: ELDU, SIGBUS while locked).
        for i in range(heap_n):
            try:
                proc.read(h.base + heap_off + i * PAGE_SIZE, 8)
            except ProcessSignal as exc:
                w.note("fault", _errno_of(exc))
        ok, _ = enclave_call(h, _Op(type=OP_PUT, value=5))
        w.note("call", f"ok={ok}")
        proc.close(h.fd)
    finally:
        proc.exit()
        w.done.add(name)


def _zap_done(w: SvnWorld) -> bool:
    """The running update finished its zap (EUPDATESVN is next), or the updater is done."""
    if "updater" in w.done:
        return True
    ups = w.k.svn.updates
    return bool(ups) and ups[-1].trigger == "late_load" and any(p[0] == "zap" for p in ups[-1].phases)


def _await_eupdatesvn(w: SvnWorld) -> None:
    """Issue EINIT while EUPDATESVN runs: after the zap, poll (one preemption point per poll)
    until EUPDATESVN is in flight on some CPU (bounded)."""
    w.ready += 1
    w.wait_until(lambda: _zap_done(w), 2_000, 200)
    for _ in range(400):
        if "updater" in w.done or any(lp.inflight == EnclsLeaf.EUPDATESVN for lp in w.machine.cpus):
            return
        w.sched.preempt("poll")


def _vmm_task(w: SvnWorld, name: str, cpu: int, wait_update: bool) -> None:
    """A VMM: /dev/sgx_vepc, two guest pages, the guest's ECREATE (through KVM), exit."""
    from sgxsim.kernel.virt import sgx_virt_ecreate

    k = w.k
    proc = Process(k, name, cpu=cpu)
    w.procs.append(proc)
    try:
        fd = proc.open("/dev/sgx_vepc", U.O_RDWR)
        addr = proc.mmap(0, 2 * PAGE_SIZE, U.PROT_READ | U.PROT_WRITE, U.MAP_SHARED, fd, 0)
        for _ in range(30):
            try:
                proc.read(addr, 8)
                proc.read(addr + PAGE_SIZE, 8)
                break
            except ProcessSignal as exc:
                w.note("vepc_fault", _errno_of(exc))
                w.sched.sleep_ns(30_000)
        secs = Secs(
            size=0x10000, base=0x100000, ssa_frame_size=1, attributes=int(Attributes.MODE64BIT), xfrm=3
        )
        src = proc.alloc(secs.pack())
        si = proc.alloc(bytes(64))
        for _ in range(30):
            prev = k.current_proc
            k.current_proc = proc
            try:
                ret, trapnr = sgx_virt_ecreate(k, 0, src, si, addr)
            finally:
                k.current_proc = prev
            w.note("guest_ecreate", f"{ret} {trapnr}")
            if ret != -U.EBUSY:
                break
            w.sched.sleep_ns(30_000)
        w.guest_secs = True
        if wait_update:
            w.wait_until(lambda: "updater" in w.done)
            # The guest's next ENCLS on its SECS: EPC loss shows as #PF (zapped) or success.
            pte = proc.mm.lookup(addr)
            if pte is not None:
                res = w.machine.encls(cpu, EnclsLeaf.ETRACK, 0, pte.phys, 0)
                w.note("guest_etrack", repr(res))
    finally:
        proc.exit()
        w.done.add(name)


def _setup_vepc(w: SvnWorld) -> None:
    _spawn_common(w)
    w.spawn(_vmm_task, w, "vmm", 3, True, name="vmm", cpu=3)
    w.spawn(reload_task, w, None, lambda: w.guest_secs, name="updater", cpu=0)
    w.spawn(user_task, w, "userA", 2, 1, name="userA", cpu=2)


def _setup_entropy(starve: int | None) -> Setup:
    def setup(w: SvnWorld) -> None:
        _spawn_common(w)
        w.spawn(reload_task, w, lambda: w.machine.entropy.starve(starve), name="updater", cpu=0)
        w.spawn(user_task, w, "userA", 2, 1, name="userA", cpu=2)

    return setup


def _setup_kexec(w: SvnWorld) -> None:
    """The previous kernel left enclaves in the EPC and loaded a newer patch; kexec; boot."""
    m = w.machine
    old = Kernel(m, svn=SvnConfig(policy=SvnPolicy.NONE))
    p = Process(old, "old-user", cpu=2)
    _old_enclave(w, old, p)
    patch = _patch(w)
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


def _old_enclave(w: SvnWorld, old: Kernel, p: Process) -> None:
    """Build one enclave with the old kernel (outside the scheduler), never released."""
    saved = w.kernel
    w.kernel = old
    try:
        build_enclave(w, p)
    finally:
        w.kernel = saved


def _setup_trigger(mode: str) -> Setup:
    def setup(w: SvnWorld) -> None:
        _spawn_common(w)

        def admin() -> None:
            k = w.k
            try:
                ret = k.svn.microcode_reload(_patch(w))
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


def _setup_619(w: SvnWorld) -> None:
    _spawn_common(w)

    def admin() -> None:
        try:
            ret = w.k.svn.microcode_reload(_patch(w))
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
#: guest-*: PUT/GET rounds the guest process makes at most (it stops one round after the update).
_GUEST_ROUNDS: Final = 200


def _guest_build(w: SvnWorld, proc: Process, retries: int = 30) -> EnclHandle | None:
    """Build the kit enclave in a guest process (bounded retries on the scenario's errnos)."""
    g = w.guest
    assert g is not None
    h = _build_retrying(w, proc, retries)
    if h is not None:
        h.encl_id = max(g.enclaves) if g.enclaves else -1
    return h


def _guest_task(w: SvnWorld, name: str, cpu: int) -> None:
    """A guest process: build the enclave, PUT/GET until one round after the update finished;
    a call that faults (EPC loss) makes it close the enclave and build it anew. Then the
    process exits, the guest's EPC accounting is checked and the VMM exits (vEPC released)."""
    g, vm = w.guest, w.vm
    assert g is not None and vm is not None
    proc = Process(g, name, cpu=cpu)
    value = 0x6700
    try:
        h = _guest_build(w, proc)
        w.guest_built = True
        after = 0
        for _ in range(_GUEST_ROUNDS):
            if h is None:
                break
            value += 1
            ok, _ = enclave_call(h, _Op(type=OP_PUT, value=value))
            if ok:
                ok, out = enclave_call(h, _Op(type=OP_GET))
                if ok and out.value != value:
                    w.errors.append(f"{name}: guest enclave {h.encl_id} read {out.value:#x}, put {value:#x}")
            if not ok:
                w.guest_lost += 1
                w.note("enclave_lost", f"guest encl {h.encl_id}")
                # Tear down as a loader does (unmap, close): the dead enclave is released now
                # (EREMOVE of its invalid pages), not at exit; see the report on guest reclaim.
                proc.munmap(h.base, w.kit.size)
                proc.close(h.fd)
                h = _guest_build(w, proc)
                if h is not None:
                    w.guest_rebuilt += 1
                continue
            if "updater" in w.done:
                after += 1
                if after >= 2:
                    break
            w.sched.sleep_ns(10_000)
        if h is not None:
            proc.close(h.fd)
    finally:
        if not proc.exited:
            proc.exit()
        rep = validate_epc(g, expect_empty=True)
        w.guest_problems.extend(rep.problems)
        if g.enclaves:
            w.guest_problems.append(f"guest enclaves {sorted(g.enclaves)} remain after the process exited")
        vm.shutdown()
        w.done.add(name)


def _setup_guest(w: SvnWorld) -> None:
    """A VM (QEMU + KVM, prealloc'ed vEPC) with a booted guest kernel; a guest process builds
    and runs the enclave on vCPU 3 while the host's updater reloads microcode."""
    _spawn_common(w)
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
    w.spawn(_guest_task, w, "guest-app", 3, name="guest-app", cpu=3)
    w.spawn(reload_task, w, None, lambda: w.guest_built or "guest-app" in w.done, name="updater", cpu=0)


# --------------------------------------------------------------------------------------------
# Scenarios


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
       _setup_success, schedules_ci=1000),
    _S("reclaim", "the success world under EPC pressure: ksgxd evicts and reloads pages around the update",
       _setup_success, epc_pages=48),
    _S("ipi", "a thread inside an enclave during the zap: IPI, AEX, then success", _setup_ipi,
       schedules_ci=1000),
    _S("reenter", "a thread that re-enters after every AEX: the zap gives up after 10 IPI rounds",
       _setup_reenter, outcomes=frozenset({"-EBUSY", "SUCCESS"}), expected_warns=1),
    _S("release-wait", "a process exits during the zap: the zapper waits for its VA and SECS pages",
       _setup_release_wait, schedules_ci=1000),
    _S("release-abort", "the release-side EREMOVE fails: the update aborts with -EIO",
       _setup_release_abort, outcomes=frozenset({"-EIO", "SUCCESS"}), expected_warns=None),
    _S("ioctl-race", "CREATE/ADD_PAGES/EINIT/SGX2 ioctls and faults racing the EPC lock",
       _setup_ioctl_race),
    _S("vepc-skip", "a VM holds EPC: guest pages are skipped, EUPDATESVN returns EPC_NOT_READY",
       _setup_vepc, outcomes=frozenset({"SGX_EPC_NOT_READY"})),
    _S("vepc-zap", "a VM holds EPC: guest pages are EREMOVE'd too, the update succeeds",
       _setup_vepc, vepc="zap"),
    _S("entropy", "RDSEED fails 3 times, the 4th EUPDATESVN succeeds", _setup_entropy(3)),
    _S("entropy-starved", "RDSEED starved: SGX_INSUFFICIENT_ENTROPY after 10 tries",
       _setup_entropy(None), outcomes=frozenset({"SGX_INSUFFICIENT_ENTROPY"})),
    _S("kexec-init", "after kexec the driver sanitizes the EPC and runs EUPDATESVN at init",
       _setup_kexec, trigger="init"),
    _S("trigger-destructive", "the explicit trigger in destructive mode: teardown on demand",
       _setup_trigger("destructive"), policy=SvnPolicy.EXPLICIT_TRIGGER, trigger="trigger"),
    _S("trigger-nondestructive", "the explicit trigger in non-destructive mode: -EBUSY while users exist",
       _setup_trigger("non-destructive"), policy=SvnPolicy.EXPLICIT_TRIGGER, trigger_mode="non-destructive",
       trigger="trigger", outcomes=frozenset({"SUCCESS", "SGX_NO_UPDATE", "-EBUSY"})),
    _S("linux-6.19", "EUPDATESVN on the 0 -> 1 usage transition, open/close racing it",
       _setup_619, policy=SvnPolicy.LINUX_6_19_ON_OPEN, trigger="open",
       outcomes=frozenset({"SUCCESS", "SGX_NO_UPDATE"}),
       allowed_errnos=frozenset({"EBUSY", "EIO", "EAGAIN"})),
    _S("guest-zap", "a booted guest runs an enclave: its pages are EREMOVE'd, the guest rebuilds",
       _setup_guest, vepc="zap"),
    _S("guest-skip", "a booted guest runs an enclave: its pages are skipped, EPC_NOT_READY",
       _setup_guest, outcomes=frozenset({"SGX_EPC_NOT_READY"})),
)  # fmt: skip

#: Builtin scenarios by name.
SCENARIOS: Final = MappingProxyType({s.name: s for s in _SCENARIO_LIST})


def scenario_names() -> tuple[str, ...]:
    return tuple(SCENARIOS)


# --------------------------------------------------------------------------------------------
# Invariants


def _inv_locked_window(w: SvnWorld) -> str | None:
    k = w.kernel
    if k is None:
        return None
    in_window = k.svn.in_locked_window
    if not in_window:
        w.prev_in_window = False
        return None
    valid = w.machine.epc.epcm.valid
    free = k.sgx_nr_free_pages.read()
    msg = None
    if w.prev_in_window:
        new = np.flatnonzero(valid & ~w.prev_valid)
        if len(new):
            msg = f"EPC page(s) {new[:5].tolist()} became valid between synchronize_srcu() and the unlock"
        elif free < w.prev_free:
            msg = f"{w.prev_free - free} EPC page(s) allocated between synchronize_srcu() and the unlock"
    w.prev_valid = valid.copy()
    w.prev_in_window = True
    w.prev_free = free
    return msg


def _encl_dead(w: SvnWorld, encl: object) -> bool:
    from sgxsim.kernel.encl import SgxEncl

    assert isinstance(encl, SgxEncl)
    if not encl.flags & SGX_ENCL_CREATED:
        return True  # opened, never ECREATE'd: no SGX enclave yet
    if encl.flags & SGX_ENCL_DEAD or encl.refcount.kref_read() == 0:
        return True
    if w.as_posted:
        secs = encl.secs_epc
        return secs < 0 or not bool(w.machine.epc.epcm.valid[secs])
    return False


def _inv_eupdatesvn(w: SvnWorld) -> str | None:
    """EUPDATESVN succeeded (CR_BASE_PK replaced) only with no valid EPC page; then every
    enclave is dead and CPUSVN is the minimum loaded SVN."""
    k = w.kernel
    m = w.machine
    pk = m.cr_base_pk
    if pk == w.prev_base_pk:
        return None
    w.prev_base_pk = pk
    if k is None:
        return None
    valid = int(np.count_nonzero(m.epc.epcm.valid))
    if valid:
        return f"EUPDATESVN succeeded with {valid} valid EPC page(s)"
    if m.cpusvn != m.min_loaded_svn():
        return f"CPUSVN {m.cpusvn.hex()} != minimum loaded SVN {m.min_loaded_svn().hex()} after EUPDATESVN"
    alive = [e.id for e in list(k.enclaves.values()) if not _encl_dead(w, e)]
    if alive:
        return f"enclave(s) {alive} created before the update are not dead after EUPDATESVN succeeded"
    if k.svn.config.policy is SvnPolicy.LINUX_6_19_ON_OPEN and k.sgx_usage_count:
        return f"EUPDATESVN succeeded with SGX usage count {k.sgx_usage_count}"
    return None


def _inv_usage_zero(w: SvnWorld) -> str | None:
    k = w.kernel
    if k is None or k.sgx_usage_count == 0:
        return None
    cfg = k.svn.config
    counted = cfg.policy is SvnPolicy.LINUX_6_19_ON_OPEN or (
        cfg.policy is SvnPolicy.EXPLICIT_TRIGGER and cfg.trigger_mode == "non-destructive"
    )
    if counted and any(lp.inflight == EnclsLeaf.EUPDATESVN for lp in w.machine.cpus):
        return f"EUPDATESVN in flight with SGX usage count {k.sgx_usage_count}"
    return None


def _inv_records(w: SvnWorld) -> str | None:
    k = w.kernel
    if k is None:
        return None
    svn = k.svn
    waiting = svn.zap_waiting_count.read()
    w.max_zap_waiting = max(w.max_zap_waiting, waiting)
    if svn.in_locked_window and not svn.epc_locked:
        return "in_locked_window set while EPC is unlocked"
    if waiting < 0:
        return "zap_waiting_count < 0"
    updates = svn.updates
    while w.records_checked < len(updates):
        rec = updates[w.records_checked]
        if not rec.result_name:
            break
        w.records_checked += 1
        if rec.tries and rec.result == SgxStatus.SGX_LOCKFAIL:
            return f"EUPDATESVN ({rec.trigger}) returned SGX_LOCKFAIL: another ENCLS leaf was in flight"
        if (
            rec.result == SgxStatus.SGX_EPC_NOT_READY
            and rec.trigger != "open"
            and not any("EPC not ready" in line for line in k.log.lines())
        ):
            return "EUPDATESVN returned SGX_EPC_NOT_READY without a log line"
    return None


def _inv_user(w: SvnWorld) -> str | None:
    return w.errors[0] if w.errors else None


def _inv_guest_warn(w: SvnWorld) -> str | None:
    g = w.guest
    if g is None or not g.log.warn_count:
        return None
    return f"guest kernel WARN: {g.log.warnings[0]}"


def svn_invariants(w: SvnWorld) -> list[Invariant[SvnWorld]]:
    """The per-step invariants (see the module docstring; guest-* add ``guest-no-warn``)."""
    invs = [
        Invariant("locked-window", _inv_locked_window),
        Invariant("eupdatesvn-empty-epc", _inv_eupdatesvn),
        Invariant("eupdatesvn-usage-zero", _inv_usage_zero),
        Invariant("update-records", _inv_records),
        Invariant("user-visible", _inv_user),
    ]
    if w.vm is not None:
        invs.append(Invariant("guest-no-warn", _inv_guest_warn))
    return invs


def _final_epc(w: SvnWorld) -> str | None:
    k = w.k
    rep = validate_epc(k, expect_empty=True)
    if rep.problems:
        return "; ".join(rep.problems[:3])
    summary = k.epc_summary()
    if summary["free"] + summary["used"] != summary["total"]:
        return f"free {summary['free']} + used {summary['used']} != total {summary['total']}"
    if k.enclaves or k.vepcs:
        return f"enclaves {sorted(k.enclaves)} / vEPCs {sorted(k.vepcs)} remain after every process exited"
    return None


def _final_dram(w: SvnWorld) -> str | None:
    k = w.k
    # Kernel scratch pages: one per task that issued ENCLS with on-stack structures.
    allowed = w.dram_baseline + len(k._scratch)
    if k.dram_pages > allowed:
        return f"DRAM pages {k.dram_pages} > {allowed} after every process exited"
    return None


def _final_outcome(w: SvnWorld) -> str | None:
    recs = w.updates(w.scenario.trigger)
    if not recs:
        return f"no {w.scenario.trigger!r} update record"
    if w.as_posted:
        return None
    bad = [
        r.result_name for r in recs if r.result_name not in w.scenario.outcomes and r.result_name != "SKIPPED"
    ]
    if bad:
        return f"update result(s) {bad} not in {sorted(w.scenario.outcomes)}"
    return None


def _final_guest(w: SvnWorld) -> str | None:
    """guest-*: the guest's EPC accounting was clean when its process exited; under zap, a
    guest whose pages were EREMOVE'd saw the loss and rebuilt; under skip it lost nothing."""
    if w.guest_problems:
        return "guest EPC: " + "; ".join(w.guest_problems[:3])
    if not w.guest_built:
        return "the guest never built its enclave"
    zapped = sum(r.vepc_pages_zapped for r in w.updates())
    if w.scenario.vepc == "skip" and (zapped or w.guest_lost):
        return f"vepc=skip: {zapped} guest page(s) zapped, {w.guest_lost} loss(es) seen"
    if w.scenario.vepc == "zap" and not w.as_posted and zapped and not (w.guest_lost and w.guest_rebuilt):
        return f"{zapped} guest page(s) zapped; {w.guest_lost} loss(es), {w.guest_rebuilt} rebuild(s) seen"
    return None


def _finals(w: SvnWorld) -> list[Invariant[SvnWorld]]:
    finals = [
        Invariant("epc-clean", _final_epc),
        Invariant("no-dram-leak", _final_dram),
        Invariant("outcome", _final_outcome),
    ]
    if w.vm is not None:
        finals.append(Invariant("guest-clean", _final_guest))
    return finals


# --------------------------------------------------------------------------------------------
# Programs


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
    w = SvnWorld(sched, rng, scenario, as_posted, kit, m)
    if isinstance(m, _InjectingMachine):
        m.world = w

    def enclave_step(lp: LogicalProcessor) -> None:
        sched.charge(ENCLAVE_ACCESS_NS)
        sched.preempt("enclave")
        if lp.pending_interrupt and lp.id in w.leave_on_ipi:
            h = w.handles.get("spinner")
            if h is not None:
                _release_flag(w, h)

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
        final_checks_fn=_finals,
        log_fn=lambda w: w.log,
        expected_warns=scenario.expected_warns,
    )
