"""EREPORT and EGETKEY: reports and key derivation.

Models: Intel SDM Vol. 3D ch. 38 ENCLU[EREPORT], ENCLU[EGETKEY].
"""

from __future__ import annotations

import dataclasses
import struct
from typing import TYPE_CHECKING, Any

from sgxsim.errors import ModelInvariantError
from sgxsim.hw.arch import (
    KEYPOLICY_KSS_MASK,
    KEYPOLICY_RESERVED_MASK,
    PAGE_SIZE,
    Attributes,
    Fault,
    KeyName,
    KeyPolicy,
    Keyrequest,
    Report,
    SgxStatus,
    Targetinfo,
    cpusvn_le,
    gp0,
)
from sgxsim.hw.crypto import PKCS1_SHA256_PADDING, KeyDependencies, aes_cmac, derive_key
from sgxsim.hw.enclu.access import _READ, _WRITE, _operand_page
from sgxsim.hw.enclu.common import _U64, _in_elrange

if TYPE_CHECKING:
    from sgxsim.hw.enclu.context import EnclaveContext
    from sgxsim.hw.machine import Machine

__all__ = [
    "HARDCODED_PKCS1_5_PADDING",
    "REQUIRED_SEALING_MASK",
]


#: ATTRIBUTES bits every EGETKEY derivation binds: INIT and DEBUG (REQUIRED_SEALING_MASK).
REQUIRED_SEALING_MASK = int(Attributes.INIT | Attributes.DEBUG)
#: The SDM's HARDCODED_PKCS1_5_PADDING (352 bytes; the top of a PKCS#1 v1.5 SHA-256 encoded
#: message in SIGSTRUCT byte order): EGETKEY's REPORT key uses it instead of SECS.PADDING.
HARDCODED_PKCS1_5_PADDING = PKCS1_SHA256_PADDING


def _ereport(ctx: EnclaveContext, ti_la: int, rd_la: int, out_la: int) -> Fault | None:
    """Body of EREPORT (see :meth:`EnclaveContext.ereport`)."""
    m, lp, state = ctx.m, ctx.lp, ctx.state
    if ti_la % 512 or not _in_elrange(ctx, ti_la):
        return gp0()
    ti_idx = _operand_page(m, lp, ti_la, _READ, 0x1)
    if isinstance(ti_idx, Fault):
        return ti_idx
    ti = Targetinfo.unpack(m.epc.read(ti_idx, ti_la & (PAGE_SIZE - 1), Targetinfo.SIZE))
    if not ti.reserved_ok():
        return gp0()
    if rd_la % 128 or not _in_elrange(ctx, rd_la):
        return gp0()
    rd_idx = _operand_page(m, lp, rd_la, _READ, 0x1)
    if isinstance(rd_idx, Fault):
        return rd_idx
    if out_la % 512 or not _in_elrange(ctx, out_la):
        return gp0()
    out_idx = _operand_page(m, lp, out_la, _WRITE, 0x2)
    if isinstance(out_idx, Fault):
        return out_idx
    cpusvn = m.cpusvn
    report = Report(
        cpusvn=cpusvn,
        miscselect=state.miscselect,
        isvextprodid=state.isv_ext_prod_id,
        attributes=state.attributes,
        xfrm=state.xfrm,
        mrenclave=state.mrenclave,
        mrsigner=state.mrsigner,
        configid=state.config_id,
        isvprodid=state.isv_prod_id,
        isvsvn=state.isv_svn,
        configsvn=state.config_svn,
        isvfamilyid=state.isv_family_id,
        reportdata=m.epc.read(rd_idx, rd_la & (PAGE_SIZE - 1), 64),
        keyid=m.cr_report_keyid,
    )
    deps = _deps(
        m,
        keyname=KeyName.REPORT,
        ownerepoch=m.owner_epoch,
        attributes=_attrs(ti.attributes, ti.xfrm),
        mrenclave=ti.measurement,
        keyid=report.keyid,
        seal_fuses=m.seal_fuses,
        cpusvn=cpusvn,
        padding=state.padding,
        miscselect=ti.miscselect,
        configid=ti.config_id,
        configsvn=ti.config_svn,
    )
    mac = aes_cmac(derive_key(m.fused_secret, deps), report.body())
    m.epc.write(out_idx, out_la & (PAGE_SIZE - 1), dataclasses.replace(report, mac=mac).pack())
    return None


def _attrs(flags: int, xfrm: int) -> bytes:
    """A 16-byte ATTRIBUTES value: flags u64 then XFRM u64, little-endian."""
    return struct.pack("<QQ", flags & _U64, xfrm & _U64)


def _deps(m: Machine, **fields: Any) -> KeyDependencies:
    """A KEYDEPENDENCIES value: the named fields, every other one zero (PADDING always named)."""
    padding = fields.get("padding", b"")
    if len(padding) != len(PKCS1_SHA256_PADDING):
        raise ModelInvariantError(f"SECS.PADDING of an initialized enclave is {len(padding)} bytes, not 352")
    return KeyDependencies(**fields)


def _egetkey(ctx: EnclaveContext, kr_la: int, out_la: int) -> Fault | SgxStatus:
    """Body of EGETKEY (see :meth:`EnclaveContext.egetkey`)."""
    m, lp, state = ctx.m, ctx.lp, ctx.state
    if kr_la % 512 or not _in_elrange(ctx, kr_la):
        return gp0()
    kr_idx = _operand_page(m, lp, kr_la, _READ, 0x1)
    if isinstance(kr_idx, Fault):
        return kr_idx
    if out_la % 16 or not _in_elrange(ctx, out_la):
        return gp0()
    out_idx = _operand_page(m, lp, out_la, _WRITE, 0x2)
    if isinstance(out_idx, Fault):
        return out_idx
    req = Keyrequest.unpack(m.epc.read(kr_idx, kr_la & (PAGE_SIZE - 1), Keyrequest.SIZE))
    if not req.reserved_ok() or req.keypolicy & KEYPOLICY_RESERVED_MASK:
        return gp0()
    kss = bool(state.attributes & Attributes.KSS)
    if not kss and (req.keypolicy & KEYPOLICY_KSS_MASK or req.configsvn > 0):
        return gp0()
    tmp_attributes = (req.attributemask | REQUIRED_SEALING_MASK) & state.attributes
    tmp_xfrm = req.xfrmmask & state.xfrm
    tmp_miscselect = req.miscmask & state.miscselect
    cur_cpusvn = m.cpusvn
    policy = req.keypolicy
    name = req.keyname

    def svn_checks(check_config: bool) -> SgxStatus | None:
        if not cpusvn_le(req.cpusvn, cur_cpusvn):
            return SgxStatus.SGX_INVALID_CPUSVN
        if req.isvsvn > state.isv_svn:
            return SgxStatus.SGX_INVALID_ISVSVN
        if check_config and req.configsvn > state.config_svn:
            return SgxStatus.SGX_INVALID_ISVSVN
        return None

    def policy_identity() -> dict[str, Any]:
        return {
            "isvfamilyid": state.isv_family_id if policy & KeyPolicy.ISVFAMILYID else bytes(16),
            "isvextprodid": state.isv_ext_prod_id if policy & KeyPolicy.ISVEXTPRODID else bytes(16),
            "isvprodid": 0 if policy & KeyPolicy.NOISVPRODID else state.isv_prod_id,
            "configid": state.config_id if policy & KeyPolicy.CONFIGID else bytes(64),
            "configsvn": req.configsvn if policy & KeyPolicy.CONFIGID else 0,
        }

    miscmask_inv = ~req.miscmask & 0xFFFF_FFFF
    if name == KeyName.SEAL:
        bad = svn_checks(check_config=True)
        if bad is not None:
            return bad
        deps = _deps(
            m,
            keyname=KeyName.SEAL,
            **policy_identity(),
            isvsvn=req.isvsvn,
            ownerepoch=m.owner_epoch,
            attributes=_attrs(tmp_attributes, tmp_xfrm),
            attributemask=_attrs(req.attributemask, req.xfrmmask),
            mrenclave=state.mrenclave if policy & KeyPolicy.MRENCLAVE else bytes(32),
            mrsigner=state.mrsigner if policy & KeyPolicy.MRSIGNER else bytes(32),
            keyid=req.keyid,
            seal_fuses=m.seal_fuses,
            cpusvn=req.cpusvn,
            padding=state.padding,
            miscselect=tmp_miscselect,
            miscmask=miscmask_inv,
            keypolicy=policy,
        )
    elif name == KeyName.REPORT:
        deps = _deps(
            m,
            keyname=KeyName.REPORT,
            ownerepoch=m.owner_epoch,
            attributes=_attrs(state.attributes, state.xfrm),
            mrenclave=state.mrenclave,
            keyid=req.keyid,
            seal_fuses=m.seal_fuses,
            cpusvn=cur_cpusvn,
            padding=HARDCODED_PKCS1_5_PADDING,
            miscselect=state.miscselect,
            configid=state.config_id,
            configsvn=state.config_svn,
        )
    elif name == KeyName.EINITTOKEN:
        if not state.attributes & Attributes.EINITTOKENKEY:
            return SgxStatus.SGX_INVALID_ATTRIBUTE
        bad = svn_checks(check_config=False)
        if bad is not None:
            return bad
        deps = _deps(
            m,
            keyname=KeyName.EINITTOKEN,
            isvprodid=state.isv_prod_id,
            isvsvn=req.isvsvn,
            ownerepoch=m.owner_epoch,
            attributes=_attrs(tmp_attributes, tmp_xfrm),
            mrsigner=state.mrsigner,
            keyid=req.keyid,
            seal_fuses=m.seal_fuses,
            cpusvn=req.cpusvn,
            padding=state.padding,
            miscselect=tmp_miscselect,
        )
    elif name == KeyName.PROVISION:
        if not state.attributes & Attributes.PROVISIONKEY:
            return SgxStatus.SGX_INVALID_ATTRIBUTE
        bad = svn_checks(check_config=False)
        if bad is not None:
            return bad
        deps = _deps(
            m,
            keyname=KeyName.PROVISION,
            isvprodid=state.isv_prod_id,
            isvsvn=req.isvsvn,
            attributes=_attrs(tmp_attributes, tmp_xfrm),
            attributemask=_attrs(req.attributemask, req.xfrmmask),
            mrsigner=state.mrsigner,
            cpusvn=req.cpusvn,
            padding=state.padding,
            miscselect=tmp_miscselect,
            miscmask=miscmask_inv,
        )
    elif name == KeyName.PROVISION_SEAL:
        if not state.attributes & Attributes.PROVISIONKEY:
            return SgxStatus.SGX_INVALID_ATTRIBUTE
        bad = svn_checks(check_config=False)
        if bad is not None:
            return bad
        ident = policy_identity()
        deps = _deps(
            m,
            keyname=KeyName.PROVISION_SEAL,
            **ident,
            isvsvn=req.isvsvn,
            attributes=_attrs(tmp_attributes, tmp_xfrm),
            attributemask=_attrs(req.attributemask, req.xfrmmask),
            mrsigner=state.mrsigner,
            seal_fuses=m.seal_fuses,
            cpusvn=req.cpusvn,
            padding=state.padding,
            miscselect=tmp_miscselect,
            miscmask=miscmask_inv,
            keypolicy=policy,
        )
    else:
        return SgxStatus.SGX_INVALID_KEYNAME
    m.epc.write(out_idx, out_la & (PAGE_SIZE - 1), derive_key(m.fused_secret, deps))
    return SgxStatus.SUCCESS
