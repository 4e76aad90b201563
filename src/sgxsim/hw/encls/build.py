"""Enclave build leaves: ECREATE, EADD, EEXTEND, EINIT, and the EADD batch path beside EADD.

Models: Intel SDM Vol. 3D ch. 38 ENCLS[ECREATE], [EADD], [EEXTEND], [EINIT].
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from sgxsim.errors import InvalidArgument
from sgxsim.hw import crypto
from sgxsim.hw.arch import (
    MR_EADD,
    PAGE_SIZE,
    SECINFO_FLAGS_ARCH_RESERVED_MASK,
    SGX_TCS_DBGOPTIN,
    SGX_TCS_RESERVED_MASK,
    Attributes,
    EinitToken,
    EnclsLeaf,
    KeyName,
    LeafResult,
    Secs,
    SgxStatus,
    Sigstruct,
    canonical,
    cpusvn_le,
    gp0,
    ssa_frame_bytes_needed,
)
from sgxsim.hw.cpu import LogicalProcessor
from sgxsim.hw.encls.batching import (
    I64Array,
    _as_addr_array,
    _batch_account,
    _batch_begin,
    _drop_contents,
    _first_occurrence,
    _indices_of,
)
from sgxsim.hw.encls.common import (
    _ATTR_DEBUG,
    _PAGE_MASK,
    _PT_REG,
    _PT_SECS,
    _PT_TCS,
    _SUCCESS,
    _TCS_FLAGS_OFFSET,
    _U64,
    _U64_LE,
    _ZERO_PAGE,
    _pf,
    _read_pageinfo,
    _read_secinfo,
    _regs_ok,
    _set_entry,
    _store_page,
)
from sgxsim.hw.encls.debug import SGX_TCS_LIMIT
from sgxsim.hw.epc import SecsState

if TYPE_CHECKING:
    from sgxsim.hw.machine import Machine

__all__ = [
    "eadd",
    "eadd_batch",
    "ecreate",
    "eextend",
    "einit",
]


_ATTR_INIT = int(Attributes.INIT)
_ATTR_MODE64BIT = int(Attributes.MODE64BIT)
_ATTR_EINITTOKENKEY = int(Attributes.EINITTOKENKEY)
_ATTR_KSS = int(Attributes.KSS)
#: SECS fields ECREATE uses: size, base, ssa_frame_size, miscselect (offsets 0..23).
_SECS_HEAD = struct.Struct("<QQII")
#: attributes, xfrm at offset 48.
_SECS_ATTRS = struct.Struct("<QQ")
_SECS_ATTRS_OFFSET = Secs.offsetof("attributes")
_SECS_CONFIG_ID = slice(Secs.offsetof("config_id"), Secs.offsetof("config_id") + 64)
_SECS_CONFIG_SVN = struct.Struct("<H")
_SECS_CONFIG_SVN_OFFSET = Secs.offsetof("config_svn")
#: Reserved byte ranges of a SECS (reserved1..reserved4), from the arch layout.
_SECS_RESERVED = tuple(
    (spec.offset, spec.offset + spec.size) for spec in Secs.FIELDS if spec.name.startswith("reserved")
)


def _xfrm_legal(xfrm: int, supported: int) -> bool:
    """[MODEL] XCR0 legality: supported bits only; MPX both-or-neither; AVX-512 all-or-none on AVX;
    AMX TILECFG and TILEDATA both-or-neither (SDM XSETBV #GP rules)."""
    if xfrm & ~supported:
        return False
    if xfrm >> 2 & 1 and not xfrm >> 1 & 1:
        return False
    if (xfrm >> 3 & 1) != (xfrm >> 4 & 1) or (xfrm >> 17 & 1) != (xfrm >> 18 & 1):
        return False
    avx512 = xfrm >> 5 & 0x7
    return not (avx512 and (avx512 != 0x7 or not xfrm >> 2 & 1))


def ecreate(m: Machine, lp: LogicalProcessor, rbx: int, rcx: int, rdx: int) -> LeafResult:
    """Create a SECS page in the EPC from the SECS at PAGEINFO.SRCPGE.

    Models: SDM ENCLS[ECREATE] (RBX = PAGEINFO, RCX = target EPC page); check order as the
    pseudo-code: PAGEINFO/EPC alignment, EPC membership, SRCPGE/SECINFO alignment, LINADDR/SECS
    zero, SECINFO (reserved, PT_SECS), EPCM.VALID, XFRM, MISCSELECT, SSAFRAMESIZE, BASEADDR
    (canonical / 32-bit), SIZE limit, SIZE power of two >= 8 KiB, BASEADDR alignment, ATTRIBUTES
    vs CR_SGX_ATTRIBUTES_MASK (which excludes INIT), SECS reserved, CONFIGID/CONFIGSVN without KSS.
    Outcomes: SUCCESS; #GP(0); #PF(RCX) if RCX is not EPC or the page is already valid.
    Effects: SecsState with a new EID and the ECREATE measurement block; EPCM PT_SECS, RWX=0.
    Differs: the unsupported-MISCSELECT check is ``MISCSELECT & ~CPUID.(12H,0).EBX`` (the SDM's
    pseudo-code expression is garbled); the SECS is copied into the EPC only on success.
    """
    _regs_ok(rbx, rcx, rdx)
    if rbx & 31 or rcx & _PAGE_MASK:
        return gp0()
    epc = m.epc
    idx = epc.index_of(rcx)
    if idx is None:
        return _pf(rcx)
    linaddr, srcpge, secinfo_addr, secs_field = _read_pageinfo(m, rbx)
    if srcpge & _PAGE_MASK or secinfo_addr & 63:
        return gp0()
    if linaddr != 0 or secs_field != 0:
        return gp0()
    flags, secinfo_ok = _read_secinfo(m, secinfo_addr)
    if not secinfo_ok or (flags >> 8) & 0xFF != _PT_SECS:
        return gp0()
    e = epc.epcm
    if e.valid[idx]:
        return _pf(rcx)
    raw = m.dram.read(srcpge, PAGE_SIZE)
    size, base, ssa_frame_size, miscselect = _SECS_HEAD.unpack_from(raw)
    attributes, xfrm = _SECS_ATTRS.unpack_from(raw, _SECS_ATTRS_OFFSET)
    cfg = m.config
    if xfrm & 0x3 != 0x3 or not _xfrm_legal(xfrm, cfg.xfrm_supported):
        return gp0()
    if miscselect & ~cfg.miscselect_supported:
        return gp0()
    if ssa_frame_size * PAGE_SIZE < ssa_frame_bytes_needed(xfrm, miscselect):
        return gp0()
    mode64 = bool(attributes & _ATTR_MODE64BIT)
    if mode64:
        if not canonical(base):
            return gp0()
        if size >= 1 << cfg.max_enclave_size_64_log2:
            return gp0()
    else:
        if base & 0xFFFF_FFFF_0000_0000:
            return gp0()
        if size >= 1 << cfg.max_enclave_size_32_log2:
            return gp0()
    if size < 2 * PAGE_SIZE or size & (size - 1):
        return gp0()
    if base & (size - 1):
        return gp0()
    if attributes & ~(cfg.attributes_supported & ~_ATTR_INIT):
        return gp0()
    if any(raw[lo:hi] != _ZERO_PAGE[: hi - lo] for lo, hi in _SECS_RESERVED):
        return gp0()
    config_id = raw[_SECS_CONFIG_ID]
    config_svn = _SECS_CONFIG_SVN.unpack_from(raw, _SECS_CONFIG_SVN_OFFSET)[0]
    if (config_id != _ZERO_PAGE[:64] or config_svn) and not attributes & _ATTR_KSS:
        return gp0()
    state = SecsState(
        eid=m.next_eid(),
        base=base,
        size=size,
        ssa_frame_size=ssa_frame_size,
        miscselect=miscselect,
        attributes=attributes,
        xfrm=xfrm,
        config_id=config_id,
        config_svn=config_svn,
    )
    state.measurement.ecreate(ssa_frame_size, size)
    epc.secs_state[idx] = state
    _store_page(epc, idx, raw)
    _set_entry(e, idx, _PT_SECS, 0, -1, 0)
    return _SUCCESS


def _tcs_checks_and_force(data: bytes, mode64: bool) -> bytes | None:
    """EADD's TCS checks on the copied page; the page with DBGOPTIN/CSSA/AEP/STATE forced to 0.

    None means #GP(0) (reserved fields, or 32-bit FS/GSLIMIT low bits not 0xFFF).
    """
    tcs_flags = _U64_LE.unpack_from(data, _TCS_FLAGS_OFFSET)[0]
    if tcs_flags & SGX_TCS_RESERVED_MASK or data[SGX_TCS_LIMIT:] != _ZERO_PAGE[SGX_TCS_LIMIT:]:
        return None
    if not mode64:
        fslimit, gslimit = struct.unpack_from("<II", data, 64)
        if fslimit & 0xFFF != 0xFFF or gslimit & 0xFFF != 0xFFF:
            return None
    page = bytearray(data)
    _U64_LE.pack_into(page, 0, 0)  # STATE
    _U64_LE.pack_into(page, _TCS_FLAGS_OFFSET, tcs_flags & ~SGX_TCS_DBGOPTIN)
    struct.pack_into("<I", page, 24, 0)  # CSSA
    _U64_LE.pack_into(page, 40, 0)  # AEP
    return bytes(page)


def _eadd_tail(
    m: Machine,
    idx: int,
    rcx: int,
    sidx: int,
    secs_addr: int,
    linaddr: int,
    flags: int,
    secinfo_ok: bool,
    srcpge: int | None,
) -> LeafResult:
    """EADD from the SECINFO check on (shared by the one-page leaf and :func:`eadd_batch`)."""
    pt = (flags >> 8) & 0xFF
    if not secinfo_ok or (pt != _PT_REG and pt != _PT_TCS):
        return gp0()
    e = m.epc.epcm
    if e.valid[idx]:
        return _pf(rcx)
    if not e.valid[sidx] or e.pt[sidx] != _PT_SECS:
        return _pf(secs_addr)
    state = m.epc.secs_state[sidx]
    data = _ZERO_PAGE if srcpge is None else m.dram.read(srcpge, PAGE_SIZE)
    if pt == _PT_TCS:
        forced = _tcs_checks_and_force(data, bool(state.attributes & _ATTR_MODE64BIT))
        if forced is None:
            return gp0()
        data = forced
    elif flags & 0x2 and not flags & 0x1:
        return gp0()
    if not state.base <= linaddr < state.base + state.size:
        return gp0()
    if state.initialized:
        return gp0()
    if pt == _PT_TCS:
        flags &= ~0x7
    state.measurement.eadd(linaddr - state.base, flags)
    _store_page(m.epc, idx, data)
    _set_entry(e, idx, pt, flags & 0x7, sidx, linaddr)
    state.child_count += 1
    return _SUCCESS


def eadd(m: Machine, lp: LogicalProcessor, rbx: int, rcx: int, rdx: int) -> LeafResult:
    """Add a TCS or REG page to an uninitialized enclave and extend MRENCLAVE with its EADD block.

    Models: SDM ENCLS[EADD] (RBX = PAGEINFO, RCX = EPC page); order: PAGEINFO/EPC alignment, EPC
    membership, SRCPGE/SECS/SECINFO/LINADDR alignment, SECS in EPC, SECINFO (reserved, PT in
    {REG, TCS}), EPCM(RCX).VALID, SECS valid PT_SECS, TCS reserved fields (and 32-bit FS/GSLIMIT)
    or REG W-without-R, LINADDR in ELRANGE, enclave already initialized.
    Outcomes: SUCCESS; #GP(0); #PF(RCX); #PF(PAGEINFO.SECS).
    Effects: the page (TCS with STATE/DBGOPTIN/CSSA/AEP forced to 0), EPCM (TCS RWX forced to 0
    before hashing), SECS child count + 1, EADD block = {tag, offset, SECINFO[0:48]}.
    """
    _regs_ok(rbx, rcx, rdx)
    if rbx & 31 or rcx & _PAGE_MASK:
        return gp0()
    epc = m.epc
    idx = epc.index_of(rcx)
    if idx is None:
        return _pf(rcx)
    linaddr, srcpge, secinfo_addr, secs_addr = _read_pageinfo(m, rbx)
    if srcpge & _PAGE_MASK or secs_addr & _PAGE_MASK or secinfo_addr & 63 or linaddr & _PAGE_MASK:
        return gp0()
    sidx = epc.index_of(secs_addr)
    if sidx is None:
        return _pf(secs_addr)
    flags, secinfo_ok = _read_secinfo(m, secinfo_addr)
    return _eadd_tail(m, idx, rcx, sidx, secs_addr, linaddr, flags, secinfo_ok, srcpge)


def eextend(m: Machine, lp: LogicalProcessor, rbx: int, rcx: int, rdx: int) -> LeafResult:
    """Extend MRENCLAVE with a 256-byte chunk of an EADDed page.

    Models: SDM ENCLS[EEXTEND] (RBX = SECS, RCX = 256-byte-aligned address in an EPC page); order:
    RBX alignment, RBX in EPC, RCX alignment, RCX in EPC, RCX page valid, PT in {REG, TCS},
    RBX is the page's SECS, enclave not initialized.
    Outcomes: SUCCESS; #GP(0); #PF(RBX); #PF(RCX).
    """
    _regs_ok(rbx, rcx, rdx)
    epc = m.epc
    if rbx & _PAGE_MASK:
        return gp0()
    sidx = epc.index_of(rbx)
    if sidx is None:
        return _pf(rbx)
    if rcx & 0xFF:
        return gp0()
    idx = epc.index_of(rcx)
    if idx is None:
        return _pf(rcx)
    e = epc.epcm
    if not e.valid[idx]:
        return _pf(rcx)
    pt = int(e.pt[idx])
    if pt != _PT_REG and pt != _PT_TCS:
        return _pf(rcx)
    if int(e.secs[idx]) != sidx:
        return gp0()
    state = epc.secs_state[sidx]
    if state.initialized:
        return gp0()
    offset_in_page = rcx & _PAGE_MASK
    chunk = epc.read(idx, offset_in_page, 256)
    state.measurement.eextend(int(e.linaddr[idx]) - state.base + offset_in_page, chunk)
    return _SUCCESS


def _pkcs1_padding(sig: Sigstruct) -> bytes:
    """Upper 352 bytes of the PKCS#1 v1.5 encoded message recovered from the signature.

    Models: SDM EINIT TMP_SIG_PADDING (signature^3 mod modulus, big-endian, first 352 bytes).
    """
    n = sig.modulus_int
    if n == 0:
        return bytes(352)
    em = pow(sig.signature_int, 3, n)
    return em.to_bytes(384, "big")[:352]


def _einittoken_key(m: Machine, lp: LogicalProcessor, token: EinitToken) -> bytes:
    """The launch (EINITTOKEN) key EINIT derives from the token's LE fields.

    Models: SDM EINIT TMP_KEYDEPENDENCIES for KEYNAME = EINITTOKEN_KEY.
    """
    deps = crypto.KeyDependencies(
        keyname=int(KeyName.EINITTOKEN),
        isvprodid=token.isvprodidle,
        isvsvn=token.isvsvnle,
        ownerepoch=m.owner_epoch,
        attributes=_SECS_ATTRS.pack(token.maskedattributesle, token.maskedxfrmle),
        mrsigner=lp.le_pubkey_hash,
        keyid=token.keyid,
        seal_fuses=m.seal_fuses,
        cpusvn=token.cpusvnle,
        padding=crypto.PKCS1_SHA256_PADDING,
        miscselect=token.maskedmiscselectle,
    )
    return crypto.derive_key(m.fused_secret, deps)


def einit(m: Machine, lp: LogicalProcessor, rbx: int, rcx: int, rdx: int) -> LeafResult:
    """Verify SIGSTRUCT (and EINITTOKEN) against the built enclave and mark it initialized.

    Models: SDM ENCLS[EINIT] (RBX = SIGSTRUCT, RCX = SECS, RDX = EINITTOKEN); order as
    sgx-architecture.md §4.4 and the pseudo-code: alignment (RBX/RCX 4 KiB, RDX 512 B), RCX in
    EPC; SIGSTRUCT header/vendor/header2/exponent/reserved -> SGX_INVALID_SIG_STRUCT; pending
    interrupt -> SGX_UNMASKED_EVENT; signature -> SGX_INVALID_SIGNATURE; SECS valid PT_SECS ->
    #PF(RCX); ISVFAMILYID without KSS -> SGX_INVALID_SIG_STRUCT; already initialized -> #GP(0);
    MRENCLAVE -> SGX_INVALID_MEASUREMENT; EINITTOKENKEY attribute without the LE key ->
    SGX_INVALID_ATTRIBUTE; ATTRIBUTES/XFRM and MISCSELECT under their masks ->
    SGX_INVALID_ATTRIBUTE; token VALID=0: MRSIGNER != IA32_SGXLEPUBKEYHASH ->
    SGX_INVALID_EINITTOKEN (the Linux path); token VALID=1: debug LE for a production enclave,
    reserved fields, token MAC -> SGX_INVALID_EINITTOKEN, CPUSVNLE beyond CR_CPUSVN ->
    SGX_INVALID_CPUSVN, token MRENCLAVE/MRSIGNER -> SGX_INVALID_MEASUREMENT, token ATTRIBUTES ->
    SGX_INVALID_ATTRIBUTE.
    Effects on success: MRENCLAVE, MRSIGNER, ISVPRODID, ISVSVN, ISVFAMILYID, ISVEXTPRODID and
    PADDING committed; ATTRIBUTES.INIT set.
    Differs: the token-attribute mismatch returns SGX_INVALID_ATTRIBUTE (the SDM's
    SGX_INVALID_EINIT_ATTRIBUTE has no published value); [MODEL] an SGX_UNMASKED_EVENT exit
    delivers the pending interrupt, so ``lp.pending_interrupt`` is cleared.
    """
    _regs_ok(rbx, rcx, rdx)
    if rbx & _PAGE_MASK or rcx & _PAGE_MASK or rdx & 511:
        return gp0()
    epc = m.epc
    sidx = epc.index_of(rcx)
    if sidx is None:
        return _pf(rcx)
    sig = Sigstruct.unpack(m.dram.read(rbx, Sigstruct.SIZE))
    token = EinitToken.unpack(m.dram.read(rdx, EinitToken.SIZE))
    if not sig.header_ok() or not sig.reserved_ok():
        return SgxStatus.SGX_INVALID_SIG_STRUCT
    if lp.pending_interrupt:
        lp.pending_interrupt = False
        return SgxStatus.SGX_UNMASKED_EVENT
    verdict = crypto.sigstruct_verify(sig)
    if verdict != _SUCCESS:
        return verdict
    e = epc.epcm
    if not e.valid[sidx] or e.pt[sidx] != _PT_SECS:
        return _pf(rcx)
    state = epc.secs_state[sidx]
    if sig.isvfamilyid != _ZERO_PAGE[:16] and not state.attributes & _ATTR_KSS:
        return SgxStatus.SGX_INVALID_SIG_STRUCT
    if state.initialized:
        return gp0()
    mrenclave = state.measurement.finalize()
    if sig.mrenclave != mrenclave:
        return SgxStatus.SGX_INVALID_MEASUREMENT
    mrsigner = crypto.mrsigner(sig.modulus)
    if state.attributes & _ATTR_EINITTOKENKEY and mrsigner != lp.le_pubkey_hash:
        return SgxStatus.SGX_INVALID_ATTRIBUTE
    if (state.attributes & sig.attributes_mask) != (sig.attributes & sig.attributes_mask) or (
        state.xfrm & sig.xfrm_mask
    ) != (sig.xfrm & sig.xfrm_mask):
        return SgxStatus.SGX_INVALID_ATTRIBUTE
    if (state.miscselect & sig.misc_mask) != (sig.miscselect & sig.misc_mask):
        return SgxStatus.SGX_INVALID_ATTRIBUTE
    if not token.valid & 1:
        if mrsigner != lp.le_pubkey_hash:
            return SgxStatus.SGX_INVALID_EINITTOKEN
    else:
        if token.maskedattributesle & _ATTR_DEBUG and not state.attributes & _ATTR_DEBUG:
            return SgxStatus.SGX_INVALID_EINITTOKEN
        if not token.reserved_ok():
            return SgxStatus.SGX_INVALID_EINITTOKEN
        if not cpusvn_le(token.cpusvnle, m.cpusvn):
            return SgxStatus.SGX_INVALID_CPUSVN
        key = _einittoken_key(m, lp, token)
        if crypto.aes_cmac(key, token.body()) != token.mac:
            return SgxStatus.SGX_INVALID_EINITTOKEN
        if token.mrenclave != mrenclave or token.mrsigner != mrsigner:
            return SgxStatus.SGX_INVALID_MEASUREMENT
        if token.attributes != state.attributes or token.xfrm != state.xfrm:
            return SgxStatus.SGX_INVALID_ATTRIBUTE
    state.mrenclave = mrenclave
    state.mrsigner = mrsigner
    state.isv_ext_prod_id = sig.isvextprodid
    state.isv_prod_id = sig.isvprodid
    state.isv_svn = sig.isvsvn
    state.isv_family_id = sig.isvfamilyid
    state.padding = _pkcs1_padding(sig)
    state.attributes |= _ATTR_INIT
    state.initialized = True
    return _SUCCESS


def _eadd_blocks(offsets: I64Array, flags: int) -> bytes:
    """EADD measurement blocks for many pages, one 64-byte row each (sgx-architecture.md §5)."""
    rows = np.zeros((offsets.size, 8), dtype="<u8")
    rows[:, 0] = MR_EADD
    rows[:, 1] = offsets.astype("<u8")
    rows[:, 2] = flags
    return rows.tobytes()


def _measure_eadds(meas: crypto.Measurement, offsets: I64Array, flags: int) -> None:
    """Hash the EADD blocks of many pages: the same state as ``meas.eadd(off, flags)`` per offset.

    Delegates to :meth:`Measurement.eadd_many` (which flushes any queued measured pages first).
    """
    meas.eadd_many(offsets, flags)


def eadd_batch(
    m: Machine,
    cpu: int,
    secs_phys: int,
    epc_phys: npt.NDArray[np.integer],
    linaddrs: npt.NDArray[np.integer],
    secinfo_flags: int,
    src_phys: npt.NDArray[np.integer] | None = None,
) -> tuple[int, LeafResult]:
    """EADD many pages (one SECINFO, unmeasured) as one in-flight ENCLS; stop at the first failure.

    Page ``i`` is EADDed as the one-page leaf would with PAGEINFO{LINADDR=linaddrs[i],
    SRCPGE=src_phys[i] (an all-zero page when ``src_phys`` is None), SECINFO with FLAGS =
    ``secinfo_flags``, SECS=secs_phys} and RCX = epc_phys[i]. Returns (pages added, outcome of
    the page that stopped the batch or SUCCESS). REG pages whose checks all pass are committed
    with numpy and their EADD blocks hashed in one update; TCS pages, duplicates and failing
    pages take the one-page path, so results equal page-by-page EADD. Charges the EADD latency
    per page attempted.
    Models: repeated SDM ENCLS[EADD] as Linux sgx_encl_add_page issues it (without EEXTEND).
    Outcomes: as :func:`eadd`.
    """
    epc_arr = _as_addr_array("epc_phys", epc_phys)
    lin_arr = _as_addr_array("linaddrs", linaddrs)
    src_arr = None if src_phys is None else _as_addr_array("src_phys", src_phys)
    if lin_arr.size != epc_arr.size or (src_arr is not None and src_arr.size != epc_arr.size):
        raise InvalidArgument("eadd_batch: epc_phys, linaddrs and src_phys must have equal lengths")
    for name, value in (("secs_phys", secs_phys), ("secinfo_flags", secinfo_flags)):
        if type(value) is not int or not 0 <= value <= _U64:
            raise InvalidArgument(f"eadd_batch: {name}={value!r} is not a 64-bit value")
    n = int(epc_arr.size)
    if n == 0:
        return 0, _SUCCESS
    leaf = EnclsLeaf.EADD
    lp, gate = _batch_begin(m, cpu, leaf)
    try:
        if gate is not None:
            _batch_account(m, lp, leaf, 1, 0)
            return 0, gate
        done, result = _eadd_batch_body(m, epc_arr, lin_arr, secs_phys, secinfo_flags, src_arr)
        attempted = done + (result != _SUCCESS)
        _batch_account(m, lp, leaf, attempted, attempted)
        return done, result
    finally:
        m.encls_end(cpu)


def _eadd_one(
    m: Machine, epc_addr: int, linaddr: int, secs_phys: int, flags: int, secinfo_ok: bool, src: int | None
) -> LeafResult:
    """One page of :func:`eadd_batch` through the one-page check sequence."""
    if epc_addr & _PAGE_MASK:
        return gp0()
    idx = m.epc.index_of(epc_addr)
    if idx is None:
        return _pf(epc_addr)
    if (src is not None and src & _PAGE_MASK) or secs_phys & _PAGE_MASK or linaddr & _PAGE_MASK:
        return gp0()
    sidx = m.epc.index_of(secs_phys)
    if sidx is None:
        return _pf(secs_phys)
    return _eadd_tail(m, idx, epc_addr, sidx, secs_phys, linaddr, flags, secinfo_ok, src)


def _eadd_batch_body(
    m: Machine, epc_arr: I64Array, lin_arr: I64Array, secs_phys: int, flags: int, src_arr: I64Array | None
) -> tuple[int, LeafResult]:
    epc = m.epc
    e = epc.epcm
    n = int(epc_arr.size)
    secinfo_ok = not flags & SECINFO_FLAGS_ARCH_RESERVED_MASK
    pt = (flags >> 8) & 0xFF
    sidx = epc.index_of(secs_phys)
    fast = np.zeros(n, dtype=np.bool_)
    idx, in_epc = _indices_of(epc, epc_arr)
    state: SecsState | None = None
    reg_ok = secinfo_ok and pt == _PT_REG and not (flags & 0x2 and not flags & 0x1)
    if (
        reg_ok
        and sidx is not None
        and not secs_phys & _PAGE_MASK
        and e.valid[sidx]
        and e.pt[sidx] == _PT_SECS
    ):
        state = epc.secs_state[sidx]
        if not state.initialized:
            aligned = ((epc_arr & _PAGE_MASK) == 0) & ((lin_arr & _PAGE_MASK) == 0)
            if src_arr is not None:
                aligned &= (src_arr & _PAGE_MASK) == 0
            in_range = (lin_arr >= state.base) & (lin_arr < state.base + state.size)
            fast = aligned & in_epc & in_range
            safe_idx = np.where(fast, idx, 0)
            fast &= ~e.valid[safe_idx]
            fast &= _first_occurrence(idx, fast)
    done = 0
    while done < n:
        tail = np.flatnonzero(~fast[done:])
        stop = n if tail.size == 0 else done + int(tail[0])
        if stop > done:
            assert state is not None and sidx is not None
            _eadd_commit(
                m,
                state,
                sidx,
                idx[done:stop],
                lin_arr[done:stop],
                flags,
                None if src_arr is None else src_arr[done:stop],
            )
            done = stop
        if done == n:
            break
        src = None if src_arr is None else int(src_arr[done])
        result = _eadd_one(m, int(epc_arr[done]), int(lin_arr[done]), secs_phys, flags, secinfo_ok, src)
        if result != _SUCCESS:
            return done, result
        done += 1
    return done, _SUCCESS


def _eadd_commit(
    m: Machine,
    state: SecsState,
    sidx: int,
    idx: I64Array,
    lin: I64Array,
    flags: int,
    src: I64Array | None,
) -> None:
    """Commit REG pages that passed every EADD check (vectorized EPCM update, one hash update)."""
    e = m.epc.epcm
    e.valid[idx] = True
    e.pt[idx] = _PT_REG
    e.rwx[idx] = flags & 0x7
    e.secs[idx] = sidx
    e.linaddr[idx] = lin.astype(np.uint64)
    e.blocked[idx] = False
    e.pending[idx] = False
    e.modified[idx] = False
    e.pr[idx] = False
    e.block_epoch[idx] = 0
    refs = None if src is None else m.dram.page_refs(src.tolist())
    if refs is None or not any(refs):
        # Every source is a never-written (zero) page: no contents to store.
        _drop_contents(m.epc, idx)
    else:
        for k, ref in zip(idx.tolist(), refs, strict=True):
            _store_page(m.epc, k, _ZERO_PAGE if ref is None else ref)
    _measure_eadds(state.measurement, lin - state.base, flags)
    state.child_count += int(idx.size)
