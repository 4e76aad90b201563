"""Constants, exit events and small helpers shared by the ENCLU modules."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sgxsim.errors import InvalidArgument
from sgxsim.hw.arch import (
    PAGE_SIZE,
    EncluLeaf,
    Fault,
    Tcs,
)

if TYPE_CHECKING:
    from sgxsim.hw.cpu import LogicalProcessor
    from sgxsim.hw.enclu.context import EnclaveContext
    from sgxsim.hw.machine import Machine

__all__ = [
    "TCS_STATE_ACTIVE",
    "TCS_STATE_INACTIVE",
    "EnclaveExit",
]


#: [MODEL] TCS.STATE encodings (the SDM names only ACTIVE/INACTIVE; EADD and EACCEPT require 0).
TCS_STATE_INACTIVE = 0
TCS_STATE_ACTIVE = 1
_U64 = (1 << 64) - 1
_PAGE_MASK = ~(PAGE_SIZE - 1) & _U64
_TCS_STATE_OFF = Tcs.offsetof("state")
_TCS_CSSA_OFF = Tcs.offsetof("cssa")
_GPR_NAMES = ("rax", "rcx", "rdx", "rbx", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")


def _u64(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _U64:
        raise InvalidArgument(f"{name} must be an int in [0, 2**64), got {value!r}")
    return value


@dataclass(frozen=True)
class EnclaveExit:
    """How the processor left enclave mode: EEXIT, or an AEX (``leaf`` = ERESUME, RAX = 3).

    ``rax``..``r9`` are the GPRs the host sees. After EEXIT they are whatever the enclave left
    (RAX = 4, RBX = target, RCX = AEP); after an AEX the synthetic state (RAX = 3, RBX = TCS,
    RCX = AEP, others 0). ``fault`` is the exception that caused an AEX as delivered to the host
    (None for an interrupt AEX or EEXIT); ``target`` is EEXIT's RBX, or the AEP after an AEX.
    """

    leaf: int
    rax: int
    rbx: int
    rcx: int
    rdx: int = 0
    rsi: int = 0
    rdi: int = 0
    r8: int = 0
    r9: int = 0
    fault: Fault | None = None
    target: int = 0

    @property
    def is_aex(self) -> bool:
        """True for an asynchronous exit (the vDSO reports ``run.function == ERESUME``)."""
        return self.leaf == EncluLeaf.ERESUME


def _leave_enclave(m: Machine, lp: LogicalProcessor) -> None:
    """Leave enclave mode: CR_ACTIVE_SECS/CR_TCS cleared, LP removed from the tracking sets.

    An LP that was inside when the last ETRACK ran stops holding that tracking cycle open
    (EEXIT and AEX both count).
    """
    secs = lp.active_secs
    lp.active_secs = None
    lp.active_tcs = None
    if secs is None:
        return
    state = m.epc.secs_state.get(secs)
    if state is None:
        return
    state.inside.pop(lp.id, None)
    state.track_waiting.discard(lp.id)


_RESUME = object()  # what ERESUME sends into a suspended enclave thread


def _count(m: Machine, lp: LogicalProcessor, name: str) -> None:
    m.stats[name] = m.stats.get(name, 0) + 1
    lp.stats[name] = lp.stats.get(name, 0) + 1


def _set_tcs_state(m: Machine, tcs_index: int, value: int) -> None:
    m.epc.write(tcs_index, _TCS_STATE_OFF, struct.pack("<Q", value))


def _in_elrange(ctx: EnclaveContext, la: int) -> bool:
    return ctx.base <= la < ctx.base + ctx.size
