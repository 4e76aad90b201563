"""The actors of a schedule: processes, ksgxd, the administrator, a VMM, a guest process.

Each actor is a function run as a scheduler task; what it sees goes into the world
(``w.events``, ``w.errors``, ``w.admin``, ``w.done``).

Differs: ksgxd's loop sleeps 1 µs after a pass that reclaimed nothing (EPC locked, or every
page young). Linux spins with cond_resched(); PCT gives no fairness, so a spin would never let
the updater (or the enclave threads keeping pages young) run.
"""

from __future__ import annotations

import ctypes
import errno
import struct
from collections.abc import Callable
from typing import Final

from sgxsim.hw.arch import PAGE_SIZE, Attributes, EnclsLeaf, Secs
from sgxsim.hw.cpu import MicrocodePatch
from sgxsim.kernel import uapi as U  # noqa: N812
from sgxsim.kernel.main import SGX_NR_HIGH_PAGES, Kernel, validate_epc
from sgxsim.kernel.process import Process, ProcessSignal
from sgxsim.kernel.virt import sgx_virt_ecreate
from sgxsim.sdk.enclaves.svn_kit import OP_GET, OP_PUT, OP_SPIN
from sgxsim.sim.svn.kit import OFF_CODE, OFF_SSA, OFF_TCS, EnclHandle, Op
from sgxsim.sim.svn.world import SvnWorld


def errno_of(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return errno.errorcode.get(exc.errno or 0, str(exc.errno))
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
            proc.mmap(base + OFF_TCS, PAGE_SIZE, rw, shared, fd, 0)
            proc.mmap(base + OFF_SSA, 2 * PAGE_SIZE, rw, shared, fd, 0)
            proc.mmap(base + OFF_CODE, heap_off - OFF_CODE, rx, shared, fd, 0)
            if heap_n:
                proc.mmap(base + heap_off, heap_n * PAGE_SIZE, rw, shared, fd, 0)
    except BaseException:
        proc.close(fd)
        raise
    op_addr = proc.alloc(PAGE_SIZE)
    return EnclHandle(proc, fd, base, op_addr, encl_id)


def enclave_call(h: EnclHandle, op: Op) -> tuple[bool, Op]:
    """EENTER the TCS with ``op``; (True, op as written back) on EEXIT, (False, op) if the vDSO
    reported an exception (the enclave lost its EPC: #PF with the SGX bit)."""
    proc = h.proc
    run = U.sgx_enclave_run()
    run.tcs = h.base + OFF_TCS
    proc.write(h.op_addr, bytes(op))
    ret = proc.vdso_sgx_enter_enclave(h.op_addr, 0, 0, U.EENTER, 0, 0, run)
    out = Op.from_buffer_copy(proc.read(h.op_addr, ctypes.sizeof(Op)))
    return ret == 0 and run.function == U.EEXIT, out


def release_flag(w: SvnWorld, h: EnclHandle) -> None:
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
            h = build_retrying(w, proc, retries)
            if h is None:
                continue
            for c in range(calls):
                value += 1
                ok, _ = enclave_call(h, Op(type=OP_PUT, value=value))
                if ok:
                    ok, out = enclave_call(h, Op(type=OP_GET))
                    if ok and out.value != value:
                        w.errors.append(f"{name}: enclave {h.encl_id} read {out.value:#x}, put {value:#x}")
                if not ok:
                    w.note("enclave_lost", f"encl {h.encl_id} call {c}")
                    proc.close(h.fd)
                    h = build_retrying(w, proc, retries)
                    if h is None:
                        break
            if h is not None:
                proc.close(h.fd)
    finally:
        proc.exit()
        w.done.add(name)


def build_retrying(w: SvnWorld, proc: Process, retries: int) -> EnclHandle | None:
    for _ in range(retries):
        try:
            return build_enclave(w, proc)
        except OSError as exc:
            err = errno_of(exc)
            w.note("build_failed", err)
            if err not in w.scenario.allowed_errnos:
                w.errors.append(f"{proc.name}: enclave build failed with {err}")
                return None
            w.sched.sleep_ns(30_000)
    return None


def ksgxd_task(w: SvnWorld) -> None:
    """ksgxd (see the module's Differs: sleeps after a pass that reclaimed nothing)."""
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


def newer_patch(w: SvnWorld, step: int = 1) -> MicrocodePatch:
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
            ret = w.k.svn.microcode_reload(newer_patch(w))
            w.admin.append(("reload", ret))
    finally:
        w.done.add("updater")


def spinner_task(
    w: SvnWorld, name: str, cpu: int, n: int, enter_when: Callable[[], bool] | None = None
) -> None:
    """A process whose thread enters the enclave with SPIN (``n`` reads unless the flag is set)."""
    proc = Process(w.k, name, cpu=cpu)
    w.procs.append(proc)
    try:
        h = build_retrying(w, proc, 30)
        if h is None:
            return
        w.handles[name] = h
        if enter_when is not None:
            w.wait_until(enter_when, 5_000, 20_000)
        ok, out = enclave_call(h, Op(type=OP_SPIN, n=n))
        w.note("spin_done", f"ok={ok} iterations={out.ret if ok else '-'}")
        proc.close(h.fd)
    finally:
        if not proc.exited:
            proc.exit()
        w.done.add(name)


def exiting_task(w: SvnWorld) -> None:
    """Build an enclave, use it, and exit without closing it once the EPC is locked."""
    proc = Process(w.k, "exiting", cpu=2)
    w.procs.append(proc)
    try:
        h = build_retrying(w, proc, 30)
        if h is not None:
            w.handles["exiting"] = h
            enclave_call(h, Op(type=OP_PUT, value=7))
            w.wait_until(lambda: w.k.sgx_epc_locked or bool(w.admin), 5_000, 20_000)
    finally:
        proc.exit()
        w.done.add("exiting")


def ioctl_racer(w: SvnWorld, name: str, cpu: int, einit_racer: bool = True) -> None:
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
                err = errno_of(exc)
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
            err = errno_of(exc)
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
                w.note("fault", errno_of(exc))
        ok, _ = enclave_call(h, Op(type=OP_PUT, value=5))
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


def vmm_task(w: SvnWorld, name: str, cpu: int, wait_update: bool) -> None:
    """A VMM: /dev/sgx_vepc, two guest pages, the guest's ECREATE (through KVM), exit."""
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
                w.note("vepc_fault", errno_of(exc))
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


def old_enclave(w: SvnWorld, old: Kernel, p: Process) -> None:
    """Build one enclave with the old kernel (outside the scheduler), never released."""
    saved = w.kernel
    w.kernel = old
    try:
        build_enclave(w, p)
    finally:
        w.kernel = saved


#: guest-*: PUT/GET rounds the guest process makes at most (it stops one round after the update).
_GUEST_ROUNDS: Final = 200


def _guest_build(w: SvnWorld, proc: Process, retries: int = 30) -> EnclHandle | None:
    """Build the kit enclave in a guest process (bounded retries on the scenario's errnos)."""
    g = w.guest
    assert g is not None
    h = build_retrying(w, proc, retries)
    if h is not None:
        h.encl_id = max(g.enclaves) if g.enclaves else -1
    return h


def guest_task(w: SvnWorld, name: str, cpu: int) -> None:
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
            ok, _ = enclave_call(h, Op(type=OP_PUT, value=value))
            if ok:
                ok, out = enclave_call(h, Op(type=OP_GET))
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
