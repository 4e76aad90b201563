"""Asynchronous enclave exits and the suspended enclave threads (continuations) they leave.

Models: Intel SDM Vol. 3D ch. 40 (AEX).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import greenlet

from sgxsim.hw.arch import (
    MISC_EXINFO,
    SGX_SSA_GPRS_SIZE,
    SGX_SSA_MISC_EXINFO_SIZE,
    SSA_EXIT_TYPE_HARDWARE,
    SSA_EXIT_TYPE_SOFTWARE,
    EncluLeaf,
    Fault,
    SsaGpr,
    Vector,
    gp0,
    ssa_exitinfo,
)
from sgxsim.hw.enclu.access import _page_table, _ssa_frame
from sgxsim.hw.enclu.common import (
    _PAGE_MASK,
    _TCS_CSSA_OFF,
    _U64,
    TCS_STATE_INACTIVE,
    EnclaveExit,
    _count,
    _leave_enclave,
    _set_tcs_state,
)

if TYPE_CHECKING:
    from sgxsim.hw.enclu.context import EnclaveContext
    from sgxsim.hw.machine import Machine

__all__ = [
    "drop_tcs_threads",
]


#: Exceptions EXITINFO reports unconditionally; #PF and #GP only with MISCSELECT.EXINFO
#: (SDM "EXITINFO" table). #BP (INT3) is a software exception.
_EXITINFO_ALWAYS = frozenset({0, 1, 3, 5, 6, 16, 17, 19})


class _EExit(BaseException):
    """Unwinds the enclave program after EEXIT (BaseException: enclave code cannot catch it)."""

    def __init__(self, event: EnclaveExit) -> None:
        super().__init__("EEXIT")
        self.event = event


@dataclass(frozen=True)
class _Crash:
    """The enclave program raised a Python exception; the processor took a #UD AEX."""

    event: EnclaveExit
    exc: BaseException


@dataclass
class _Frame:
    """A suspended enclave thread: the greenlet and the context it runs with."""

    glet: Any
    ctx: EnclaveContext


@dataclass
class _TcsThread:
    """Continuations of one TCS, by SSA frame number; bound to the enclave's EID and TCS address."""

    eid: int
    tcs_la: int
    frames: dict[int, _Frame] = field(default_factory=dict)


def _kill(glet: Any) -> None:
    """Unwind a suspended enclave greenlet now (deterministically, not at garbage collection)."""
    if glet is not None and not glet.dead and glet is not greenlet.getcurrent():
        glet.parent = greenlet.getcurrent()
        glet.throw(greenlet.GreenletExit)


def drop_tcs_threads(m: Machine, tcs_index: int) -> None:
    """Discard the continuations kept for the TCS page at ``tcs_index`` (EREMOVE of that page).

    Not needed when a TCS is paged out (EWB/ELDU): continuations are found again by EID and TCS
    linear address, whatever EPC page the TCS is reloaded into.
    """
    rec = m.tcs_threads.pop(tcs_index, None)
    if isinstance(rec, _TcsThread):
        for frame in list(rec.frames.values()):
            _kill(frame.glet)
        rec.frames.clear()


def _thread_record(m: Machine, tcs_index: int, eid: int, tcs_la: int) -> _TcsThread:
    """The continuation record of a TCS, following it if it moved to another EPC page."""
    rec = m.tcs_threads.get(tcs_index)
    if isinstance(rec, _TcsThread) and rec.eid == eid and rec.tcs_la == tcs_la:
        return rec
    if rec is not None:
        drop_tcs_threads(m, tcs_index)
    for key, other in list(m.tcs_threads.items()):
        if isinstance(other, _TcsThread) and other.eid == eid and other.tcs_la == tcs_la:
            del m.tcs_threads[key]
            m.tcs_threads[tcs_index] = other
            return other
    fresh = _TcsThread(eid, tcs_la)
    m.tcs_threads[tcs_index] = fresh
    return fresh


def _tcs_cssa(m: Machine, tcs_index: int) -> int:
    return int(struct.unpack("<I", m.epc.read(tcs_index, _TCS_CSSA_OFF, 4))[0])


def _aex(ctx: EnclaveContext, fault: Fault | None) -> EnclaveExit:
    """Asynchronous enclave exit: save state to SSA[CSSA], CSSA += 1, leave enclave mode.

    Models: SDM Vol. 3D ch. 40 (asynchronous enclave exit): GPRs (+EXITINFO; MISC.EXINFO when selected) to
    the current SSA frame, CSSA incremented, TCS inactive, synthetic state (RAX=3 ERESUME,
    RBX=TCS, RCX=AEP, RDX/RSI/RDI/R8-R15 = 0), CR2's low 12 bits cleared for a #PF.
    Also stores the calling greenlet in the TCS's continuation stack.
    """
    m, lp, state = ctx.m, ctx.lp, ctx.state
    gpr_idx, gpr_off = ctx._gpr_loc
    old = SsaGpr.unpack(m.epc.read(gpr_idx, gpr_off, SGX_SSA_GPRS_SIZE))
    exitinfo = 0
    if fault is not None:
        exinfo = bool(state.miscselect & MISC_EXINFO)
        if fault.vector in _EXITINFO_ALWAYS or (fault.vector in (Vector.PF, Vector.GP) and exinfo):
            kind = SSA_EXIT_TYPE_SOFTWARE if fault.vector == Vector.BP else SSA_EXIT_TYPE_HARDWARE
            exitinfo = ssa_exitinfo(fault.vector, kind)
        if exinfo and fault.vector in (Vector.PF, Vector.GP):
            misc = struct.pack("<QII", fault.addr & _U64, fault.error_code & 0xFFFF_FFFF, 0)
            m.epc.write(gpr_idx, gpr_off - SGX_SSA_MISC_EXINFO_SIZE, misc)
    regs = ctx._regs()
    saved = SsaGpr(
        **regs,
        rflags=ctx.rflags & _U64,
        rip=ctx.rip & _U64,
        ursp=old.ursp,
        urbp=old.urbp,
        exitinfo=exitinfo,
        reserved=old.reserved,
        fsbase=ctx.fsbase,
        gsbase=ctx.gsbase,
    )
    m.epc.write(gpr_idx, gpr_off, saved.pack())
    frame = _tcs_cssa(m, ctx.tcs_index)
    m.epc.write(ctx.tcs_index, _TCS_CSSA_OFF, struct.pack("<I", (frame + 1) & 0xFFFF_FFFF))
    _set_tcs_state(m, ctx.tcs_index, TCS_STATE_INACTIVE)
    _leave_enclave(m, lp)
    rec = _thread_record(m, ctx.tcs_index, state.eid, ctx.tcs)
    stale = rec.frames.get(frame)
    if stale is not None and stale.glet is not ctx._glet:
        # EDECCSSA made this frame current again and software did not continue its thread: the
        # new AEX overwrites the saved state, so the old continuation is gone.
        _kill(stale.glet)
    rec.frames[frame] = _Frame(ctx._glet, ctx)
    _count(m, lp, "AEX")
    m.clock.charge(lp.id, m.config.latency.aex)
    host_fault = None
    if fault is not None:
        addr = fault.addr & _PAGE_MASK if fault.vector == Vector.PF else fault.addr
        host_fault = Fault(fault.vector, fault.error_code, addr)
    return EnclaveExit(
        int(EncluLeaf.ERESUME), int(EncluLeaf.ERESUME), ctx.tcs, ctx.aep, fault=host_fault, target=ctx.aep
    )


def _enclave_thread(ctx: EnclaveContext) -> object:
    """Body of an enclave thread's greenlet: load and run the program image at ``ctx.rip``."""
    try:
        fn = ctx._load_program(ctx.rip)
        fn(ctx)
        while True:  # [MODEL] falling off the end of enclave_entry executes garbage: #UD
            ctx._deliver(Fault(Vector.UD))
    except _EExit as done:
        return done.event
    except Exception as exc:
        if ctx._dead:  # raised while being discarded: finish unwinding
            raise greenlet.GreenletExit from exc
        if ctx._exit_event is not None:  # raised while unwinding after EEXIT: EEXIT stands
            return ctx._exit_event
        return _Crash(_crash_exit(ctx), exc)


def _crash_exit(ctx: EnclaveContext) -> EnclaveExit:
    """State changes of the #UD AEX taken when enclave code raised; the thread is not kept."""
    event = _aex(ctx, Fault(Vector.UD))
    rec = ctx.m.tcs_threads.get(ctx.tcs_index)
    if isinstance(rec, _TcsThread):
        rec.frames = {k: v for k, v in rec.frames.items() if v.ctx is not ctx}
    return event


def _edeccssa(ctx: EnclaveContext) -> Fault | None:
    """Body of EDECCSSA (see :meth:`EnclaveContext.edeccssa`)."""
    m = ctx.m
    if not m.config.edeccssa:
        return gp0()  # an ENCLU leaf the processor does not enumerate
    cssa = _tcs_cssa(m, ctx.tcs_index)
    if cssa == 0:
        return gp0()
    loc = _ssa_frame(m, _page_table(ctx.lp), ctx.state, ctx.ossa, cssa - 1, ctx.secs_index)
    if isinstance(loc, Fault):
        return loc
    m.epc.write(ctx.tcs_index, _TCS_CSSA_OFF, struct.pack("<I", cssa - 1))
    ctx.frame = cssa - 1
    ctx._gpr_loc = loc
    return None
