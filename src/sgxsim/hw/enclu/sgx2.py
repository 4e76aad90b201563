"""The SGX2 leaves issued in enclave mode: EACCEPT, EACCEPTCOPY, EMODPE.

Models: Intel SDM Vol. 3D ch. 38 ENCLU[EACCEPT], [EACCEPTCOPY], [EMODPE].
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sgxsim.hw.arch import (
    PAGE_SIZE,
    SGX_TCS_DBGOPTIN,
    Fault,
    PageType,
    Secinfo,
    SecinfoFlags,
    SgxStatus,
    Tcs,
    gp0,
    secinfo_page_type,
)
from sgxsim.hw.enclu.access import _READ, _WRITE, _epc_page, _operand_page, _page_table, _sgx_pf
from sgxsim.hw.enclu.common import _in_elrange

if TYPE_CHECKING:
    from sgxsim.hw.enclu.context import EnclaveContext
    from sgxsim.hw.epc import SecsState

__all__: list[str] = []


def _tracking_done(state: SecsState, stamp: int) -> bool:
    """[MODEL] True iff an ETRACK ran after the page's EMODPR/EMODT and its cycle completed.

    The same rule as EWB's (hw.encls): the page's ``block_epoch`` stamp is older than the
    enclave's epoch, and no processor that was inside at the last ETRACK is still inside.
    """
    return stamp < state.epoch and not state.track_waiting


def _sgx2(ctx: EnclaveContext) -> Fault | None:
    """SGX2 leaves on an SGX1 part: an unsupported ENCLU leaf, #GP(0)."""
    return None if ctx.m.config.sgx2 else gp0()


def _secinfo_operand(ctx: EnclaveContext, si_la: int) -> Secinfo | Fault:
    """Read a 64-byte-aligned SECINFO from a readable PT_REG page of this enclave."""
    if si_la % 64 or not _in_elrange(ctx, si_la):
        return gp0()
    idx = _operand_page(ctx.m, ctx.lp, si_la, _READ, 0x1)
    if isinstance(idx, Fault):
        return idx
    return Secinfo.unpack(ctx.m.epc.read(idx, si_la & (PAGE_SIZE - 1), Secinfo.SIZE))


def _eaccept(ctx: EnclaveContext, si_la: int, pg_la: int) -> Fault | SgxStatus:
    """Body of EACCEPT (see :meth:`EnclaveContext.eaccept`). Models: SDM EACCEPT pseudo-code."""
    bad = _sgx2(ctx)
    if bad is not None:
        return bad
    m, lp = ctx.m, ctx.lp
    si = _secinfo_operand(ctx, si_la)
    if isinstance(si, Fault):
        return si
    if not si.reserved_ok():
        return gp0()
    if pg_la & (PAGE_SIZE - 1) or not _in_elrange(ctx, pg_la):
        return gp0()
    idx = _epc_page(m, _page_table(lp), pg_la, _READ)
    if isinstance(idx, Fault):
        return idx
    pt = secinfo_page_type(si.flags)
    pending = bool(si.flags & SecinfoFlags.PENDING)
    modified = bool(si.flags & SecinfoFlags.MODIFIED)
    pr = bool(si.flags & SecinfoFlags.PR)
    legal = (
        (pt == PageType.PT_REG and (pr or pending) and not modified)
        or (pt in (PageType.PT_TCS, PageType.PT_TRIM) and not pending and modified and not pr)
        or (pt in (PageType.PT_SS_FIRST, PageType.PT_SS_REST) and pending and not modified and not pr)
    )
    if not legal:
        return gp0()
    e = m.epc.epcm
    if (
        not e.valid[idx]
        or e.blocked[idx]
        or int(e.pt[idx])
        not in (PageType.PT_REG, PageType.PT_TCS, PageType.PT_TRIM, PageType.PT_SS_FIRST, PageType.PT_SS_REST)
        or int(e.secs[idx]) != lp.active_secs
    ):
        return _sgx_pf(pg_la, _READ)
    rwx = int(e.rwx[idx])
    if (
        int(e.linaddr[idx]) != pg_la
        or bool(e.pending[idx]) != pending
        or bool(e.modified[idx]) != modified
        or rwx != si.flags & 0x7
        or int(e.pt[idx]) != pt
    ):
        return SgxStatus.SGX_PAGE_ATTRIBUTES_MISMATCH
    if (e.modified[idx] or e.pr[idx]) and not _tracking_done(ctx.state, int(e.block_epoch[idx])):
        return SgxStatus.SGX_NOT_TRACKED
    if pt == PageType.PT_TCS:
        tcs = Tcs.unpack(m.epc.read(idx))
        if (
            not tcs.reserved_ok()
            or tcs.flags & SGX_TCS_DBGOPTIN
            or tcs.cssa >= tcs.nssa
            or tcs.aep != 0
            or tcs.state != 0
        ):
            return gp0()
    e.pending[idx] = False
    e.modified[idx] = False
    e.pr[idx] = False
    return SgxStatus.SUCCESS


def _eacceptcopy(ctx: EnclaveContext, si_la: int, dst_la: int, src_la: int) -> Fault | SgxStatus:
    """Body of EACCEPTCOPY. Models: SDM EACCEPTCOPY pseudo-code."""
    bad = _sgx2(ctx)
    if bad is not None:
        return bad
    m, lp = ctx.m, ctx.lp
    if si_la % 64:
        return gp0()
    if dst_la & (PAGE_SIZE - 1) or src_la & (PAGE_SIZE - 1):
        return gp0()
    if not (_in_elrange(ctx, si_la) and _in_elrange(ctx, dst_la) and _in_elrange(ctx, src_la)):
        return gp0()
    pt = _page_table(lp)
    si_idx = _epc_page(m, pt, si_la, _READ)
    if isinstance(si_idx, Fault):
        return si_idx
    dst = _epc_page(m, pt, dst_la, _WRITE)
    if isinstance(dst, Fault):
        return dst
    src = _epc_page(m, pt, src_la, _READ)
    if isinstance(src, Fault):
        return src
    si_page = _operand_page(m, lp, si_la, _READ, 0x1)
    if isinstance(si_page, Fault):
        return si_page
    si = Secinfo.unpack(m.epc.read(si_idx, si_la & (PAGE_SIZE - 1), Secinfo.SIZE))
    perms = si.flags & 0x7
    if not si.reserved_ok() or (not perms & 0x1 and perms & 0x2) or si.page_type != PageType.PT_REG:
        return gp0()
    if _operand_page(m, lp, src_la, _READ, 0x1) != src:
        return _sgx_pf(src_la, _READ)
    e = m.epc.epcm
    if (
        not e.valid[dst]
        or not e.pending[dst]
        or e.modified[dst]
        or e.blocked[dst]
        or e.pt[dst] != PageType.PT_REG
        or int(e.secs[dst]) != lp.active_secs
        or int(e.rwx[dst]) != 0x3
        or int(e.linaddr[dst]) != dst_la
    ):
        return SgxStatus.SGX_PAGE_ATTRIBUTES_MISMATCH
    m.epc.set_page(dst, m.epc.read(src))
    e.rwx[dst] = perms
    e.pending[dst] = False
    return SgxStatus.SUCCESS


def _emodpe(ctx: EnclaveContext, si_la: int, pg_la: int) -> Fault | None:
    """Body of EMODPE. Models: SDM EMODPE pseudo-code."""
    bad = _sgx2(ctx)
    if bad is not None:
        return bad
    m, lp = ctx.m, ctx.lp
    if si_la % 64 or pg_la & (PAGE_SIZE - 1):
        return gp0()
    if not (_in_elrange(ctx, si_la) and _in_elrange(ctx, pg_la)):
        return gp0()
    pt = _page_table(lp)
    si_idx = _epc_page(m, pt, si_la, _READ)
    if isinstance(si_idx, Fault):
        return si_idx
    idx = _epc_page(m, pt, pg_la, _READ)
    if isinstance(idx, Fault):
        return idx
    si_page = _operand_page(m, lp, si_la, _READ, 0x1)
    if isinstance(si_page, Fault):
        return si_page
    si = Secinfo.unpack(m.epc.read(si_idx, si_la & (PAGE_SIZE - 1), Secinfo.SIZE))
    if not si.reserved_ok():
        return gp0()
    e = m.epc.epcm
    if (
        not e.valid[idx]
        or e.pending[idx]
        or e.modified[idx]
        or e.blocked[idx]
        or e.pt[idx] != PageType.PT_REG
        or int(e.secs[idx]) != lp.active_secs
        or int(e.linaddr[idx]) != pg_la
    ):
        return _sgx_pf(pg_la, _READ)
    rwx = int(e.rwx[idx])
    if not rwx & 0x1 and not si.flags & 0x1 and si.flags & 0x2:
        return gp0()
    e.rwx[idx] = rwx | (si.flags & 0x7)
    return None
