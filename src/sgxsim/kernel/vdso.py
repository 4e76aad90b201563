"""``__vdso_sgx_enter_enclave``: enter an enclave, absorb what the kernel can fix, report the rest.

The vDSO executes ENCLU[EENTER/ERESUME] with RBX = ``run.tcs`` and RCX = the AEP (the address of
that same ENCLU), so every asynchronous exit lands back on the ENCLU with RAX = ERESUME. What
happens next is what Linux's fault/trap handling and the vDSO's exception fixup do:

* an interrupt AEX (the kernel's IPIs): the kernel returns to the AEP, ERESUME runs again —
  transparent to the caller;
* a #PF the kernel can fix (not present, in a VMA that allows the access: the enclave fault
  handler ELDUs or EAUGs the page, or anonymous memory is faulted in): the kernel returns to the
  AEP and ERESUME retries the access — transparent;
* any other exception (#PF with the SGX bit, a PTE permission fault, a SIGBUS from the fault
  handler, #GP, #UD...): the vDSO's exception table fixup fills ``run.exception_vector``,
  ``exception_error_code`` and ``exception_addr``, sets ``run.function`` to the leaf in RAX
  (ERESUME after an AEX; the leaf itself if ENCLU faulted before entering) and returns 0, or
  calls ``run.user_handler``; #DB and #BP are never fixed up (SIGTRAP);
* EEXIT: ``run.function = EEXIT``; return 0 or call ``run.user_handler``.

``user_handler(rdi, rsi, rdx, ursp, r8, r9, run)``: a result <= 0 is returned to the caller; a
positive result is the next leaf to execute (validated like ``function``).

Models: arch/x86/entry/vdso/vsgx.S (__vdso_sgx_enter_enclave: function must be EENTER or ERESUME
and run->reserved all zero, else -EINVAL; exception fields; user handler protocol),
arch/x86/entry/vdso/extable.c fixup_vdso_exception() (#DB/#BP excluded), arch/x86/mm/fault.c
(do_user_addr_fault, bad_area and do_sigbus both try the vDSO fixup first).
Differs: ``ursp`` passed to the handler is 0 (stacks are not modelled); the GPRs the enclave
left at EEXIT are kept in ``proc.last_exit`` (an :class:`~sgxsim.hw.enclu.EnclaveExit`) instead
of in registers.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Any

from sgxsim.errors import InvalidArgument, ModelInvariantError
from sgxsim.hw import enclu as hw_enclu
from sgxsim.hw.arch import Fault, PfError, Vector
from sgxsim.kernel import uapi as U  # noqa: N812
from sgxsim.kernel.mm import FIXED, VDSO_BASE, VDSO_ENCLU_OFFSET, _user_copy, do_user_addr_fault

if TYPE_CHECKING:
    from sgxsim.kernel.syscalls import Process

__all__ = ["SIGTRAP", "VDSO_AEP", "vdso_sgx_enter_enclave"]

#: The AEP every enclave entry through the vDSO uses (the ENCLU instruction itself).
VDSO_AEP = VDSO_BASE + VDSO_ENCLU_OFFSET
SIGTRAP = 5
#: Bound on transparent re-entries of one call (a livelock in the model).
_MAX_TRANSPARENT = 1_000_000


def _kernel_fixes(proc: Process, fault: Fault) -> bool:
    """Whether the kernel resolves this #PF and returns to retry (do_user_addr_fault == FIXED)."""
    if fault.vector != Vector.PF:
        return False
    code = fault.error_code | PfError.U
    return do_user_addr_fault(proc.mm, fault.addr, code) == FIXED


def _load_run(proc: Process, run: Any) -> tuple[U.sgx_enclave_run, int | None]:
    if isinstance(run, U.sgx_enclave_run):
        return run, None
    if isinstance(run, int) and not isinstance(run, bool):
        raw = _user_copy(proc.mm, run, ctypes.sizeof(U.sgx_enclave_run), None, user=True)
        if not isinstance(raw, bytes):
            raise proc._fault_signal(raw, run)
        return U.sgx_enclave_run.from_buffer_copy(raw), run
    raise InvalidArgument(f"run must be a struct sgx_enclave_run or its user address, got {run!r}")


def _store_run(proc: Process, run: U.sgx_enclave_run, addr: int | None) -> None:
    if addr is not None:
        _user_copy(proc.mm, addr, ctypes.sizeof(run), bytes(run), user=True)


def vdso_sgx_enter_enclave(
    proc: Process,
    rdi: int,
    rsi: int,
    rdx: int,
    function: int,
    r8: int,
    r9: int,
    run: Any,
    cpu: int | None = None,
) -> int:
    """Enter the enclave whose TCS is ``run.tcs`` with leaf ``function`` (EENTER or ERESUME).

    Outcomes: 0 (EEXIT, or an exception reported in ``run``); -EINVAL (bad leaf or non-zero
    reserved bytes); a user handler's non-positive result. Raises ProcessSignal for #DB/#BP.
    """
    k = proc.k
    for what, v in (("rdi", rdi), ("rsi", rsi), ("rdx", rdx), ("function", function), ("r8", r8), ("r9", r9)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise InvalidArgument(f"vdso_sgx_enter_enclave {what} must be an int, got {v!r}")
    # The vDSO runs on the calling thread's CPU: a CPU the machine lacks is a wrong model argument.
    if cpu is not None and (
        not isinstance(cpu, int) or isinstance(cpu, bool) or not 0 <= cpu < len(k.machine.cpus)
    ):
        raise InvalidArgument(f"vdso_sgx_enter_enclave: no CPU {cpu!r} on this machine")
    rdi, rsi, rdx, r8, r9 = (v & 0xFFFF_FFFF_FFFF_FFFF for v in (rdi, rsi, rdx, r8, r9))
    function &= 0xFFFF_FFFF
    proc._check_alive()
    if cpu is None:
        cpu = proc.current_cpu()
    lp = k.machine.cpus[cpu]
    r, addr = _load_run(proc, run)
    leaf = function
    prev = proc._enter()
    try:
        for _ in range(_MAX_TRANSPARENT):
            if leaf not in (U.EENTER, U.ERESUME):
                return -U.EINVAL
            if not r.reserved_is_zero():
                return -U.EINVAL
            lp.page_table = proc.mm
            proc.mm.cpumask.add(cpu)
            res = hw_enclu.execute(k.machine, lp, leaf, r.tcs, VDSO_AEP, rdx, rsi=rsi, rdi=rdi, r8=r8, r9=r9)
            if k.ipi_waitq.waiters:
                # This CPU left enclave mode (the IPI's AEX, or any exit): wake IPI senders.
                k.sched.wake_all(k.ipi_waitq)
            fault: Fault | None
            if isinstance(res, Fault):
                fault = res
                # ENCLU faulted before entering: a fixed #PF re-executes the same leaf.
                if _kernel_fixes(proc, fault):
                    k.run_deferred_work()
                    continue
                exc_leaf = leaf
            else:
                proc.last_exit = res
                if not res.is_aex:
                    r.function = U.EEXIT
                    rdi, rsi, rdx, r8, r9 = res.rdi, res.rsi, res.rdx, res.r8, res.r9
                    ret = _finish(proc, r, addr, rdi, rsi, rdx, r8, r9)
                    if ret is None:
                        return 0
                    if ret <= 0:
                        return ret
                    leaf = ret
                    continue
                fault = res.fault
                rdi = rsi = rdx = r8 = r9 = 0
                if fault is None or _kernel_fixes(proc, fault):
                    # Interrupt, or a fault the kernel fixed: back to the AEP, ERESUME.
                    k.run_deferred_work()
                    leaf = U.ERESUME
                    continue
                exc_leaf = U.ERESUME
            if fault.vector in (Vector.DB, Vector.BP):
                raise proc.force_sig_fault(SIGTRAP, 0, fault.addr)
            r.function = exc_leaf
            r.exception_vector = fault.vector
            r.exception_error_code = fault.error_code & 0xFFFF
            r.exception_addr = fault.addr
            ret = _finish(proc, r, addr, rdi, rsi, rdx, r8, r9)
            if ret is None:
                return 0
            if ret <= 0:
                return ret
            leaf = ret
        raise ModelInvariantError("vDSO: enclave never made progress (livelock)")
    finally:
        _store_run(proc, r, addr)
        proc.k.current_proc = prev
        k.run_deferred_work()
        proc._deliver_pending()


def _finish(
    proc: Process, run: U.sgx_enclave_run, addr: int | None, rdi: int, rsi: int, rdx: int, r8: int, r9: int
) -> int | None:
    """Call the user handler if one is set; None means "no handler, return 0"."""
    handler = run.user_handler
    if isinstance(handler, int):
        if handler == 0:
            return None
        fn = proc.functions.get(handler)
        if fn is None:
            raise proc.force_sig_fault(U.SIGSEGV, U.SEGV_MAPERR, handler)
        handler = fn
    _store_run(proc, run, addr)
    ret = handler(rdi, rsi, rdx, 0, r8, r9, run)
    if not isinstance(ret, int):
        raise InvalidArgument(f"user_handler returned {ret!r}, not an int")
    return ret
