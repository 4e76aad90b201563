"""Entering an enclave from outside: ENCLU[EENTER] and ENCLU[ERESUME].

Models: Intel SDM Vol. 3D ch. 38 EENTER / ERESUME pseudo-code.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

import greenlet

from sgxsim.errors import InvalidArgument, ModelInvariantError
from sgxsim.hw.arch import (
    PAGE_SIZE,
    SGX_SSA_GPRS_SIZE,
    SGX_TCS_AEXNOTIFY,
    SGX_TCS_DBGOPTIN,
    SGX_TCS_RESERVED_MASK,
    SSA_GPRSGX_AEXNOTIFY,
    Attributes,
    EncluLeaf,
    Fault,
    PageType,
    SsaGpr,
    Tcs,
    canonical,
    gp0,
    xsave_size,
)
from sgxsim.hw.enclu.access import _WRITE, _epc_page, _page_table, _sgx_pf, _ssa_frame
from sgxsim.hw.enclu.aex import _Crash, _enclave_thread, _kill, _thread_record
from sgxsim.hw.enclu.common import (
    _GPR_NAMES,
    _RESUME,
    _TCS_CSSA_OFF,
    _U64,
    TCS_STATE_ACTIVE,
    EnclaveExit,
    _count,
    _set_tcs_state,
    _u64,
)
from sgxsim.hw.enclu.context import EnclaveContext

if TYPE_CHECKING:
    from sgxsim.hw.cpu import LogicalProcessor
    from sgxsim.hw.epc import SecsState
    from sgxsim.hw.machine import Machine

__all__ = [
    "ENCLU_INSN_SIZE",
    "TCS_FLAGS_AEXNOTIFY",
    "execute",
    "xsave_frame_size",
]


#: Length of the ENCLU instruction (0F 01 D7): EENTER's RCX output is the address after it.
ENCLU_INSN_SIZE = 3
#: TCS.FLAGS.AEXNOTIFY (kept under its old name; the one definition is arch.SGX_TCS_AEXNOTIFY).
TCS_FLAGS_AEXNOTIFY = SGX_TCS_AEXNOTIFY
#: EENTER/ERESUME's XSAVE frame size: the same function as ECREATE's (one table, in hw.arch).
xsave_frame_size = xsave_size
_TCS_AEP_OFF = Tcs.offsetof("aep")


@dataclass(frozen=True)
class _Entry:
    tcs_index: int
    secs_index: int
    state: SecsState
    tcs: Tcs
    frame: int
    gpr_loc: tuple[int, int]
    target: int
    #: ERESUME delivering an AEX notification (entered as EENTER: frame = CSSA, RIP = OENTRY).
    notify: bool = False


def _entry_checks(m: Machine, lp: LogicalProcessor, rbx: int, rcx: int, resume: bool) -> _Entry | Fault:
    """EENTER/ERESUME checks in SDM order; the entry parameters or the fault.

    Models: SDM EENTER / ERESUME pseudo-code (64-bit mode, CR4.OSFXSR=1, CR4.OSXSAVE=1).
    [MODEL] The TCS is accessed as read-write (the leaf updates TCS.STATE and the AEP), so its
    page-table #PF error codes are those of a write; the SSA pages are "read/write accessible".
    """
    if rbx & (PAGE_SIZE - 1):
        return gp0()
    pt = _page_table(lp)
    tcs_index = _epc_page(m, pt, rbx, _WRITE)
    if isinstance(tcs_index, Fault):
        return tcs_index
    if not canonical(rcx):
        return gp0()
    e = m.epc.epcm
    if not e.valid[tcs_index] or e.blocked[tcs_index]:
        return _sgx_pf(rbx, _WRITE)
    if int(e.linaddr[tcs_index]) != rbx or e.pt[tcs_index] != PageType.PT_TCS:
        return _sgx_pf(rbx, _WRITE)
    if e.pending[tcs_index] or e.modified[tcs_index]:
        return _sgx_pf(rbx, _WRITE)
    tcs = Tcs.unpack(m.epc.read(tcs_index))
    if tcs.ossa & (PAGE_SIZE - 1) or tcs.ofsbase & (PAGE_SIZE - 1) or tcs.ogsbase & (PAGE_SIZE - 1):
        return gp0()
    secs_index = int(e.secs[tcs_index])
    state = m.epc.secs_state.get(secs_index)
    if state is None:
        raise ModelInvariantError(f"valid TCS page {tcs_index} has no SECS state (SECS {secs_index})")
    if tcs.flags & SGX_TCS_RESERVED_MASK:
        return gp0()
    if not state.initialized:
        return gp0()
    if not state.attributes & Attributes.MODE64BIT:
        return gp0()
    xcr0 = m.config.xfrm_supported | 0x3
    if state.xfrm & xcr0 != state.xfrm:
        return gp0()
    if not tcs.flags & SGX_TCS_DBGOPTIN and bool(tcs.flags & SGX_TCS_AEXNOTIFY) != bool(
        state.attributes & Attributes.AEXNOTIFY
    ):
        return gp0()
    if resume:
        if tcs.cssa == 0:
            return gp0()
        frame = tcs.cssa - 1
    else:
        if tcs.cssa >= tcs.nssa:
            return gp0()
        frame = tcs.cssa
    loc = _ssa_frame(m, pt, state, tcs.ossa, frame, secs_index)
    if isinstance(loc, Fault):
        return loc
    gpr_idx, gpr_off = loc
    if resume:
        gpr = SsaGpr.unpack(m.epc.read(gpr_idx, gpr_off, SGX_SSA_GPRS_SIZE))
        if tcs.flags & SGX_TCS_AEXNOTIFY and gpr.reserved & SSA_GPRSGX_AEXNOTIFY:
            # AEX-Notify: ERESUME delivers the notification by entering as EENTER would.
            entered = _entry_checks(m, lp, rbx, rcx, resume=False)
            return entered if isinstance(entered, Fault) else dataclasses.replace(entered, notify=True)
        target, fsbase, gsbase = gpr.rip, gpr.fsbase, gpr.gsbase
    else:
        target = (tcs.oentry + state.base) & _U64
        fsbase = (tcs.ofsbase + state.base) & _U64
        gsbase = (tcs.ogsbase + state.base) & _U64
    if not canonical(target) or not canonical(fsbase) or not canonical(gsbase):
        return gp0()
    if tcs.state == TCS_STATE_ACTIVE:
        return gp0()
    return _Entry(tcs_index, secs_index, state, tcs, frame, (gpr_idx, gpr_off), target)


def execute(
    m: Machine,
    lp: LogicalProcessor,
    leaf: int,
    rbx: int = 0,
    rcx: int = 0,
    rdx: int = 0,
    *,
    rsi: int = 0,
    rdi: int = 0,
    r8: int = 0,
    r9: int = 0,
) -> EnclaveExit | Fault:
    """Execute ENCLU from outside an enclave: EENTER or ERESUME, running enclave code until it exits.

    Models: SDM ENCLU[EENTER] / ENCLU[ERESUME] (entry checks, see :func:`_entry_checks`) and the
    enclave execution that follows until EEXIT or an AEX. RDX, RSI, RDI, R8 and R9 pass through
    to the enclave at EENTER. Outcomes: :class:`EnclaveExit` (EEXIT, or AEX with the fault),
    or a :class:`~sgxsim.hw.arch.Fault` if the leaf faulted before entering (#GP(0) for the other
    leaves, which are only valid in enclave mode, for an unknown leaf, and for EENTER/ERESUME
    executed in enclave mode).
    """
    for name, value in (
        ("leaf", leaf),
        ("RBX", rbx),
        ("RCX", rcx),
        ("RDX", rdx),
        ("RSI", rsi),
        ("RDI", rdi),
        ("R8", r8),
        ("R9", r9),
    ):
        _u64(name, value)
    name = EncluLeaf(leaf).name if leaf in EncluLeaf._value2member_map_ else f"ENCLU[{leaf:#x}]"
    m.stats[name] = m.stats.get(name, 0) + 1
    if leaf not in (EncluLeaf.EENTER, EncluLeaf.ERESUME) or lp.in_enclave:
        return gp0()
    resume = leaf == EncluLeaf.ERESUME
    m.clock.charge(lp.id, m.config.latency.enclu.get(EncluLeaf(leaf), 0))
    entry = _entry_checks(m, lp, rbx, rcx, resume)
    if isinstance(entry, Fault):
        return entry
    if entry.notify:
        resume = False  # AEX-Notify: the interrupted frame stays suspended; a fresh entry runs
        _count(m, lp, "AEX-NOTIFY")
    state = entry.state
    # Enter enclave mode: CR_ACTIVE_SECS, CR_TCS_PA, TCS.STATE := ACTIVE, CR_TCS_LA.AEP := RCX.
    lp.active_secs = entry.secs_index
    lp.active_tcs = entry.tcs_index
    state.inside[lp.id] = state.epoch
    _set_tcs_state(m, entry.tcs_index, TCS_STATE_ACTIVE)
    m.epc.write(entry.tcs_index, _TCS_AEP_OFF, struct.pack("<Q", rcx))
    lp.stats[name] = lp.stats.get(name, 0) + 1
    rec = _thread_record(m, entry.tcs_index, state.eid, rbx)
    caller = greenlet.getcurrent()
    frame = rec.frames.pop(entry.frame, None) if resume else None
    if not resume:
        for stale in [k for k in rec.frames if k >= entry.frame]:
            _kill(rec.frames.pop(stale).glet)
    if frame is not None and frame.glet.dead:
        frame = None
    if frame is not None:
        # The thread may resume on another processor, and its TCS and SECS may have been paged
        # out and back into other EPC pages since it was suspended.
        ctx = frame.ctx
        ctx.lp = lp
        ctx.tcs_index = entry.tcs_index
        ctx.secs_index = entry.secs_index
        ctx.state = state
    else:
        ctx = EnclaveContext(
            m, lp, entry.secs_index, state, entry.tcs_index, rbx, entry.tcs, rcx, entry.target
        )
    ctx.aep = rcx
    ctx.frame = entry.frame
    ctx._gpr_loc = entry.gpr_loc
    ctx._caller = caller
    if resume:
        gpr = SsaGpr.unpack(m.epc.read(entry.gpr_loc[0], entry.gpr_loc[1], SGX_SSA_GPRS_SIZE))
        for reg in _GPR_NAMES:
            setattr(ctx, reg, getattr(gpr, reg))
        ctx.rflags = gpr.rflags
        ctx.rip = gpr.rip
        ctx.fsbase, ctx.gsbase = gpr.fsbase, gpr.gsbase
        m.epc.write(entry.tcs_index, _TCS_CSSA_OFF, struct.pack("<I", entry.frame))
    else:
        ctx.rax = entry.tcs.cssa
        ctx.rbx = rbx
        ctx.rcx = (rcx + ENCLU_INSN_SIZE) & _U64
        ctx.rdx, ctx.rsi, ctx.rdi, ctx.r8, ctx.r9 = rdx, rsi, rdi, r8, r9
    if frame is not None:
        frame.glet.parent = caller
        result = frame.glet.switch(_RESUME)
    else:
        glet = greenlet.greenlet(run=_enclave_thread, parent=caller)
        ctx._glet = glet
        result = glet.switch(ctx)
    if isinstance(result, EnclaveExit):
        return result
    if isinstance(result, _Crash):
        raise InvalidArgument(f"enclave program raised {result.exc!r} (AEX #UD taken)") from result.exc
    raise ModelInvariantError(f"enclave thread switched back with {result!r}")
