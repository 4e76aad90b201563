"""Signals: what a process is sent (kill), what it is delivered, and synchronous fault signals.

Models: kernel/signal.c (a pending signal interrupts a syscall: ERESTARTSYS -> EINTR without
SA_RESTART; delivery on the return to user space), arch/x86/mm/fault.c force_sig_fault()
(SIGSEGV with SEGV_MAPERR / SEGV_ACCERR, SIGBUS with BUS_ADRERR).
Differs: signals are recorded (and a fault raises :class:`ProcessSignal`) instead of running
handlers or killing the process; there are no signal masks or handlers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from sgxsim.errors import InvalidArgument
from sgxsim.kernel import uapi as U  # noqa: N812
from sgxsim.kernel.mm import SIGBUS_ADRERR, SIGSEGV_MAPERR

__all__ = ["NSIG", "ProcessSignal", "SigInfo", "TaskSignals"]

#: Signal numbers are 1..NSIG-1 (x86-64 _NSIG = 64).
NSIG = 65


class ProcessSignal(Exception):
    """A synchronous signal (SIGSEGV, SIGBUS) was delivered to the process for a user access."""

    def __init__(self, info: SigInfo) -> None:
        super().__init__(f"signal {info.signo} (code {info.code}) at {info.addr:#x}")
        self.info = info


@dataclass(frozen=True)
class SigInfo:
    """A delivered signal: number, si_code, si_addr (0 for kill())."""

    signo: int
    code: int = 0
    addr: int = 0


class TaskSignals:
    """The signal state of a process: pending (sent, not yet delivered) and delivered signals.

    Mixed into :class:`~sgxsim.kernel.syscalls.Process`, which provides ``_check_alive``.
    """

    pending: list[int]
    signals: list[SigInfo]

    def _check_alive(self) -> None:
        """Provided by ``Process``: InvalidArgument once the process has exited."""

    def signal_pending(self) -> bool:
        """``signal_pending(current)``."""
        return bool(self.pending)

    def kill(self, signo: int) -> None:
        """Send ``signo`` (kill(2)): pending until the next return to user space.

        Models: kernel/signal.c kill_pid_info(). Outcomes: None; OSError(EINVAL) for a signal
        number outside 0..64 (InvalidArgument for a non-int).
        """
        if not isinstance(signo, int) or isinstance(signo, bool):
            raise InvalidArgument(f"kill signo must be an int, got {signo!r}")
        self._check_alive()
        if not 0 <= signo < NSIG:
            raise OSError(U.EINVAL, os.strerror(U.EINVAL))
        if signo:  # signal 0 only checks that the process exists
            self.pending.append(signo)

    def _deliver_pending(self) -> None:
        for signo in self.pending:
            self.signals.append(SigInfo(signo))
        self.pending.clear()

    def force_sig_fault(self, signo: int, code: int, addr: int) -> ProcessSignal:
        """Record a synchronous signal and return the exception the faulting access raises."""
        info = SigInfo(signo, code, addr)
        self.signals.append(info)
        return ProcessSignal(info)

    def _fault_signal(self, ret: int, addr: int) -> ProcessSignal:
        """The signal a failed user access (a ``do_user_addr_fault`` outcome) delivers."""
        if ret == SIGBUS_ADRERR:
            return self.force_sig_fault(U.SIGBUS, U.BUS_ADRERR, addr)
        return self.force_sig_fault(
            U.SIGSEGV, U.SEGV_MAPERR if ret == SIGSEGV_MAPERR else U.SEGV_ACCERR, addr
        )
