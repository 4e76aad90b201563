"""The ENCLS leaves (supervisor SGX instructions), their batch paths, and the EPCM invariant checker.

Every leaf has the signature ``leaf(m, lp, rbx, rcx, rdx) -> LeafResult`` and is dispatched by
:meth:`sgxsim.hw.machine.Machine.encls_exec` through :data:`LEAVES`. Operands are the register
values exactly as Linux ``arch/x86/kernel/cpu/sgx/encls.h`` passes them: structures (PAGEINFO,
SECINFO, SIGSTRUCT, EINITTOKEN, PCMD, source and backing pages) are addresses in
:class:`~sgxsim.hw.machine.Dram` (kernel virtual == physical in this model); EPC operands are
physical EPC addresses. A leaf checks its operands in the SDM's order and returns the first
failing check's outcome: an :class:`~sgxsim.hw.arch.SgxStatus` (RAX with ZF=1, or CF=1 for
:data:`~sgxsim.hw.arch.INFO_STATUSES`) or a :class:`~sgxsim.hw.arch.Fault` (#GP(0) / #PF).
Python exceptions mean misuse of the model (:class:`~sgxsim.errors.InvalidArgument`) or a broken
model invariant (:class:`~sgxsim.errors.ModelInvariantError`), never an architectural outcome.

Leaves run atomically (the machine's begin/exec/end split is the only preemption point), so the
SDM's concurrency conflicts (#GP or ``SGX_EPC_PAGE_CONFLICT`` when another leaf holds the same EPCM
entry, ``SGX_ENTRYEPOCH_LOCKED``) cannot arise and are not modelled; EUPDATESVN's rule about leaves
in flight on other processors is (see :func:`eupdatesvn`).

Models: Intel SDM Vol. 3D ch. 38 "Intel SGX Instruction References" (ENCLS leaves, Dec 2023);
reference notes ``shared/reference/sgx-architecture.md`` §1.3, §4.0-§4.11, §5 and
``shared/reference/eupdatesvn-linux.md`` §4 (EUPDATESVN).

Differs (model-wide): #PF raised by an ENCLS EPCM check carries error code ``P | SGX`` (0x8001) and
CR2 = the operand address ([MODEL]: the SDM only writes ``#PF(operand)``); the processor always
runs in 64-bit mode (EDBGRD/EDBGWR use 8-byte accesses); CET (PT_SS_FIRST/PT_SS_REST, CET
attributes) is not supported, so those page types take the SDM's "not supported" branch.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from sgxsim.errors import InvalidArgument, ModelInvariantError
from sgxsim.hw import crypto
from sgxsim.hw.arch import (
    CPUSVN_SIZE,
    MR_EADD,
    PAGE_SHIFT,
    PAGE_SIZE,
    SECINFO_FLAGS_ARCH_RESERVED_MASK,
    SGX_TCS_DBGOPTIN,
    SGX_TCS_RESERVED_MASK,
    Attributes,
    EinitToken,
    EnclsLeaf,
    Fault,
    KeyName,
    LeafResult,
    PageType,
    PfError,
    SgxStatus,
    Sigstruct,
    cpusvn_le,
    gp0,
    pf,
)
from sgxsim.hw.cpu import LogicalProcessor
from sgxsim.hw.enclu import drop_tcs_threads
from sgxsim.hw.epc import Epc, Epcm, SecsState

if TYPE_CHECKING:
    from sgxsim.hw.machine import Machine

__all__ = [
    "BATCH_FAULT",
    "LEAVES",
    "SGX2_LEAVES",
    "SGX_TCS_LIMIT",
    "LeafFn",
    "decode_batch_status",
    "eadd",
    "eadd_batch",
    "eaug",
    "eaug_batch",
    "eblock",
    "ecreate",
    "edbgrd",
    "edbgwr",
    "eextend",
    "einit",
    "eldb",
    "eldbc",
    "eldu",
    "elduc",
    "emodpr",
    "emodt",
    "epa",
    "eremove",
    "eremove_batch",
    "etrack",
    "eupdatesvn",
    "ewb",
    "mac_header",
    "ssa_frame_bytes_needed",
    "validate_epcm",
    "xsave_size",
]

# --------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------

_U64 = (1 << 64) - 1
_PAGE_MASK = PAGE_SIZE - 1
_ZERO_PAGE = bytes(PAGE_SIZE)

_PT_SECS = int(PageType.PT_SECS)
_PT_TCS = int(PageType.PT_TCS)
_PT_REG = int(PageType.PT_REG)
_PT_VA = int(PageType.PT_VA)
_PT_TRIM = int(PageType.PT_TRIM)
_PT_SS_FIRST = int(PageType.PT_SS_FIRST)
_PT_SS_REST = int(PageType.PT_SS_REST)
#: Page types that belong to an enclave (have an ENCLAVESECS): the SECS's children.
_CHILD_PTS = frozenset({_PT_TCS, _PT_REG, _PT_TRIM, _PT_SS_FIRST, _PT_SS_REST})

_SUCCESS = SgxStatus.SUCCESS
#: [MODEL] Error code of a #PF an ENCLS EPCM check raises: present + SGX (bit 15).
_PF_EPCM = int(PfError.P | PfError.SGX)

#: Size of the architectural part of a TCS (fields up to GSLIMIT) without CET: EDBGRD #GP beyond it.
SGX_TCS_LIMIT = 72
_TCS_FLAGS_OFFSET = 8

_ATTR_INIT = int(Attributes.INIT)
_ATTR_DEBUG = int(Attributes.DEBUG)
_ATTR_MODE64BIT = int(Attributes.MODE64BIT)
_ATTR_EINITTOKENKEY = int(Attributes.EINITTOKENKEY)
_ATTR_KSS = int(Attributes.KSS)

_PAGEINFO = struct.Struct("<QQQQ")
_SECINFO_FLAGS = struct.Struct("<Q")
#: SECS fields ECREATE uses: size, base, ssa_frame_size, miscselect (offsets 0..23).
_SECS_HEAD = struct.Struct("<QQII")
#: attributes, xfrm at offset 48.
_SECS_ATTRS = struct.Struct("<QQ")
_SECS_ATTRS_OFFSET = 48
_SECS_CONFIG_ID = slice(192, 256)
_SECS_CONFIG_SVN = struct.Struct("<H")
_SECS_CONFIG_SVN_OFFSET = 260
#: Reserved byte ranges of a SECS (reserved1..reserved4) as the SDM lays it out.
_SECS_RESERVED = ((24, 48), (96, 128), (160, 192), (262, 4096))
#: PCMD: SECINFO.FLAGS, SECINFO reserved (56), ENCLAVEID, reserved (40), MAC (16).
_PCMD = struct.Struct("<Q56sQ40s16s")
#: [MODEL] 128-byte MAC header EWB/ELDU authenticate: SECINFO (64 bytes) | EID u64 |
#: PCMD reserved (40 bytes) | LINADDR u64 | 8 zero bytes. The SDM names the fields of its
#: MACHEADER but not their byte offsets.
_MAC_HEADER = struct.Struct("<64sQ40sQ8x")
_U64_LE = struct.Struct("<Q")

#: Largest canonical user/kernel boundary for 48-bit linear addresses.
_CANONICAL_LOW = 1 << 47
_CANONICAL_HIGH = (1 << 64) - (1 << 47)

#: SSA GPR area and MISC region sizes (SDM "State Save Area" §35.9 / ECREATE).
_GPR_SIZE = 184
_MISC_EXINFO_SIZE = 16

#: [MODEL] XSAVE standard-format (offset, size) of each XFRM component above the 576-byte
#: legacy area + header (CPUID.(0xD, i) values of current Intel parts).
_XSAVE_COMPONENTS: Mapping[int, tuple[int, int]] = MappingProxyType(
    {
        2: (576, 256),  # AVX (YMM_Hi128)
        3: (960, 64),  # MPX BNDREGS
        4: (1024, 64),  # MPX BNDCSR
        5: (1088, 64),  # AVX-512 opmask
        6: (1152, 512),  # AVX-512 ZMM_Hi256
        7: (1664, 1024),  # AVX-512 Hi16_ZMM
        9: (2688, 8),  # PKRU
        17: (2752, 64),  # AMX TILECFG
        18: (2816, 8192),  # AMX TILEDATA
    }
)
_XSAVE_LEGACY_AND_HEADER = 512 + 64

#: [MODEL] EWB versions are CR_PAGING_VERSION << 3: EDBGRD ignores bits 2:0 of a VA slot, so a
#: version must have them clear to read as occupied.
_VERSION_SHIFT = 3

#: Value :func:`eremove_batch` stores for a page whose EREMOVE raised a fault.
BATCH_FAULT = -1

# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _regs_ok(rbx: int, rcx: int, rdx: int) -> None:
    """Raise InvalidArgument unless the three operands are 64-bit register values."""
    for name, value in (("rbx", rbx), ("rcx", rcx), ("rdx", rdx)):
        if type(value) is not int or not 0 <= value <= _U64:
            raise InvalidArgument(f"ENCLS operand {name}={value!r} is not a 64-bit register value")


def _pf(addr: int) -> Fault:
    return pf(addr, _PF_EPCM)


def _read_pageinfo(m: Machine, addr: int) -> tuple[int, int, int, int]:
    """PAGEINFO at ``addr``: (LINADDR, SRCPGE, SECINFO/PCMD, SECS)."""
    linaddr, srcpge, secinfo, secs = _PAGEINFO.unpack(m.dram.read(addr, _PAGEINFO.size))
    return linaddr, srcpge, secinfo, secs


def _read_secinfo(m: Machine, addr: int) -> tuple[int, bool]:
    """(FLAGS, reserved-fields-are-zero) of the SECINFO at ``addr``."""
    raw = m.dram.read(addr, 64)
    flags = _SECINFO_FLAGS.unpack_from(raw)[0]
    ok = not flags & SECINFO_FLAGS_ARCH_RESERVED_MASK and raw[8:] == _ZERO_PAGE[:56]
    return flags, ok


def _page_bytes(epc: Epc, idx: int) -> bytes:
    page = epc.contents.get(idx)
    return _ZERO_PAGE if page is None else bytes(page)


def _store_page(epc: Epc, idx: int, data: bytes | bytearray) -> None:
    """Set a page's contents; an all-zero page stores nothing."""
    if data == _ZERO_PAGE:
        epc.contents.pop(idx, None)
    else:
        epc.contents[idx] = bytearray(data)


def _set_entry(e: Epcm, idx: int, pt: int, rwx: int, secs: int, linaddr: int) -> None:
    """Make EPCM entry ``idx`` valid with the given fields and all state bits clear."""
    e.pt[idx] = pt
    e.rwx[idx] = rwx
    e.secs[idx] = secs
    e.linaddr[idx] = linaddr
    e.blocked[idx] = False
    e.pending[idx] = False
    e.modified[idx] = False
    e.pr[idx] = False
    e.block_epoch[idx] = 0
    e.valid[idx] = True


def _clear_entry(e: Epcm, idx: int) -> None:
    """Invalidate EPCM entry ``idx`` and zero every field (as a reset leaves it)."""
    e.valid[idx] = False
    e.blocked[idx] = False
    e.pending[idx] = False
    e.modified[idx] = False
    e.pr[idx] = False
    e.pt[idx] = 0
    e.rwx[idx] = 0
    e.secs[idx] = 0
    e.linaddr[idx] = 0
    e.block_epoch[idx] = 0


def _secinfo_of_entry(e: Epcm, idx: int) -> int:
    """SECINFO.FLAGS describing EPCM entry ``idx`` (PT, RWX, PENDING, MODIFIED, PR)."""
    return (
        (int(e.pt[idx]) << 8)
        | int(e.rwx[idx])
        | (int(e.pending[idx]) << 3)
        | (int(e.modified[idx]) << 4)
        | (int(e.pr[idx]) << 5)
    )


def mac_header(secinfo64: bytes, eid: int, reserved40: bytes, linaddr: int) -> bytes:
    """The 128-byte MAC header EWB seals and ELDB/ELDU check ([MODEL] byte layout).

    Models: SDM EWB/ELDU TMP_HEADER {SECINFO, EID, RSVD, LINADDR}.
    """
    return _MAC_HEADER.pack(secinfo64, eid, reserved40, linaddr)


def xsave_size(xfrm: int) -> int:
    """Bytes of the XSAVE area for the state components in ``xfrm`` (standard format, [MODEL]).

    Models: SDM ECREATE ``compute_xsave_size(XFRM)`` with the CPUID.(0xD, i) offsets of current
    Intel parts; x87 and SSE live in the 512-byte legacy area, followed by the 64-byte header.
    """
    size = _XSAVE_LEGACY_AND_HEADER
    for bit, (offset, length) in _XSAVE_COMPONENTS.items():
        if xfrm >> bit & 1:
            size = max(size, offset + length)
    return size


def ssa_frame_bytes_needed(xfrm: int, miscselect: int) -> int:
    """Bytes one SSA frame needs: XSAVE(XFRM) + MISC region + GPRSGX (184).

    Models: SDM ECREATE ``TMP_XSIZE`` (§35.9.2 SSA frame size).
    """
    return xsave_size(xfrm) + (_MISC_EXINFO_SIZE if miscselect & 1 else 0) + _GPR_SIZE


def _xfrm_legal(xfrm: int, supported: int) -> bool:
    """[MODEL] XCR0 legality: supported bits only; MPX both-or-neither; AVX-512 all-or-none on AVX."""
    if xfrm & ~supported:
        return False
    if xfrm >> 2 & 1 and not xfrm >> 1 & 1:
        return False
    if (xfrm >> 3 & 1) != (xfrm >> 4 & 1):
        return False
    avx512 = xfrm >> 5 & 0x7
    return not (avx512 and (avx512 != 0x7 or not xfrm >> 2 & 1))


def _secs_of_child(m: Machine, idx: int) -> SecsState:
    """Hidden state of the enclave owning valid child page ``idx``."""
    sidx = int(m.epc.epcm.secs[idx])
    state = m.epc.secs_state.get(sidx)
    if state is None:
        raise ModelInvariantError(f"EPC page {idx} is a child of {sidx}, which has no SECS state")
    return state


def _va_slot_read(epc: Epc, va_idx: int, offset: int) -> int:
    page = epc.contents.get(va_idx)
    if page is None:
        return 0
    return int(_U64_LE.unpack_from(page, offset)[0])


def _va_slot_write(epc: Epc, va_idx: int, offset: int, value: int) -> None:
    page = epc.contents.get(va_idx)
    if page is None:
        if value == 0:
            return
        page = bytearray(PAGE_SIZE)
        epc.contents[va_idx] = page
    _U64_LE.pack_into(page, offset, value)


# --------------------------------------------------------------------------------------------
# ECREATE
# --------------------------------------------------------------------------------------------


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
        if _CANONICAL_LOW <= base < _CANONICAL_HIGH:
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


# --------------------------------------------------------------------------------------------
# EADD / EEXTEND
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# EINIT
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# EREMOVE
# --------------------------------------------------------------------------------------------


def _remove_page(m: Machine, idx: int) -> None:
    """Invalidate a page and drop what the model keeps beside it (contents, TCS thread)."""
    m.epc.contents.pop(idx, None)
    if idx in m.tcs_threads:
        drop_tcs_threads(m, idx)
    _clear_entry(m.epc.epcm, idx)


def _eremove_index(m: Machine, idx: int) -> SgxStatus:
    """EREMOVE of the EPC page ``idx`` after the operand checks."""
    e = m.epc.epcm
    if not e.valid[idx]:
        return _SUCCESS
    pt = int(e.pt[idx])
    if pt == _PT_VA:
        _remove_page(m, idx)
        return _SUCCESS
    if pt == _PT_SECS:
        state = m.epc.secs_state.get(idx)
        if state is not None and (state.child_count or state.virt_child_count):
            return SgxStatus.SGX_CHILD_PRESENT
        m.epc.secs_state.pop(idx, None)
        _remove_page(m, idx)
        return _SUCCESS
    state = _secs_of_child(m, idx)
    if not (pt == _PT_TRIM and not e.modified[idx]) and state.inside:
        return SgxStatus.SGX_ENCLAVE_ACT
    _remove_page(m, idx)
    state.child_count -= 1
    return _SUCCESS


def eremove(m: Machine, lp: LogicalProcessor, rbx: int, rcx: int, rdx: int) -> LeafResult:
    """Remove a page from the EPC (free its EPCM entry).

    Models: SDM ENCLS[EREMOVE] (RCX = EPC page); order: alignment (#GP), EPC membership (#PF);
    invalid page -> SUCCESS (nothing to do); PT_VA and trimmed-unmodified pages -> freed; PT_SECS
    with a child page (or VIRTCHILDCNT) -> SGX_CHILD_PRESENT, else freed; other types with any
    logical processor executing in the enclave -> SGX_ENCLAVE_ACT, else freed.
    Outcomes: SUCCESS, SGX_CHILD_PRESENT, SGX_ENCLAVE_ACT, #GP(0), #PF(RCX).
    Differs: a PT_TRIM page with MODIFIED = 0 is freed (VALID := 0): the SDM pseudo-code's first
    "nothing to do" test also catches it, which would make an EACCEPTed trimmed page impossible to
    free, contradicting Linux's SGX_IOC_ENCLAVE_REMOVE_PAGES.
    """
    _regs_ok(rbx, rcx, rdx)
    if rcx & _PAGE_MASK:
        return gp0()
    idx = m.epc.index_of(rcx)
    if idx is None:
        return _pf(rcx)
    return _eremove_index(m, idx)


# --------------------------------------------------------------------------------------------
# EDBGRD / EDBGWR
# --------------------------------------------------------------------------------------------


def edbgrd(m: Machine, lp: LogicalProcessor, rbx: int, rcx: int, rdx: int) -> LeafResult:
    """Read 8 bytes of a debug enclave's page (or a VA slot's occupancy) into RBX.

    Models: SDM ENCLS[EDBGRD] (RCX = 8-byte-aligned EPC address; output in RBX, 64-bit mode);
    order: alignment, EPC membership, VALID, PT in {REG, TCS, VA}, PENDING/MODIFIED ->
    SGX_PAGE_NOT_DEBUGGABLE, TCS offset >= SGX_TCS_LIMIT -> #GP, REG/TCS of a non-debug
    enclave -> #GP. A VA slot reads as all ones when non-zero, else 0.
    Outcomes: SUCCESS (``lp.encls_rbx`` = the value), SGX_PAGE_NOT_DEBUGGABLE, #GP(0), #PF(RCX).
    """
    _regs_ok(rbx, rcx, rdx)
    if rcx & 7:
        return gp0()
    epc = m.epc
    idx = epc.index_of(rcx)
    if idx is None:
        return _pf(rcx)
    e = epc.epcm
    if not e.valid[idx]:
        return _pf(rcx)
    pt = int(e.pt[idx])
    if pt != _PT_REG and pt != _PT_TCS and pt != _PT_VA:
        return _pf(rcx)
    if e.pending[idx] or e.modified[idx]:
        return SgxStatus.SGX_PAGE_NOT_DEBUGGABLE
    offset = rcx & _PAGE_MASK
    if pt == _PT_TCS and offset >= SGX_TCS_LIMIT:
        return gp0()
    if pt == _PT_VA:
        lp.encls_rbx = _U64 if _va_slot_read(epc, idx, offset) & ~7 else 0
        return _SUCCESS
    if not _secs_of_child(m, idx).attributes & _ATTR_DEBUG:
        return gp0()
    lp.encls_rbx = int(_U64_LE.unpack(epc.read(idx, offset, 8))[0])
    return _SUCCESS


def edbgwr(m: Machine, lp: LogicalProcessor, rbx: int, rcx: int, rdx: int) -> LeafResult:
    """Write RBX (8 bytes) into a debug enclave's REG page or its TCS.FLAGS.

    Models: SDM ENCLS[EDBGWR] (RBX = data, RCX = 8-byte-aligned EPC address, 64-bit mode); order:
    alignment, EPC membership, VALID, PT in {REG, TCS}, PENDING/MODIFIED ->
    SGX_PAGE_NOT_DEBUGGABLE, TCS offset other than FLAGS -> #GP, non-debug enclave -> #GP.
    Outcomes: SUCCESS, SGX_PAGE_NOT_DEBUGGABLE, #GP(0), #PF(RCX).
    """
    _regs_ok(rbx, rcx, rdx)
    if rcx & 7:
        return gp0()
    epc = m.epc
    idx = epc.index_of(rcx)
    if idx is None:
        return _pf(rcx)
    e = epc.epcm
    if not e.valid[idx]:
        return _pf(rcx)
    pt = int(e.pt[idx])
    if pt != _PT_REG and pt != _PT_TCS:
        return _pf(rcx)
    if e.pending[idx] or e.modified[idx]:
        return SgxStatus.SGX_PAGE_NOT_DEBUGGABLE
    offset = rcx & _PAGE_MASK
    if pt == _PT_TCS and offset & 0xFF8 != _TCS_FLAGS_OFFSET:
        return gp0()
    if not _secs_of_child(m, idx).attributes & _ATTR_DEBUG:
        return gp0()
    page = epc.contents.get(idx)
    if page is None:
        if rbx == 0:
            return _SUCCESS
        page = bytearray(PAGE_SIZE)
        epc.contents[idx] = page
    _U64_LE.pack_into(page, offset, rbx)
    return _SUCCESS


# --------------------------------------------------------------------------------------------
# EPA / EBLOCK / ETRACK
# --------------------------------------------------------------------------------------------


def epa(m: Machine, lp: LogicalProcessor, rbx: int, rcx: int, rdx: int) -> LeafResult:
    """Turn a free EPC page into a Version Array page (512 zeroed 8-byte slots).

    Models: SDM ENCLS[EPA] (RBX = PT_VA, RCX = EPC page); order: RBX != PT_VA or RCX misaligned
    -> #GP, not EPC -> #PF, already valid -> #PF.
    Outcomes: SUCCESS, #GP(0), #PF(RCX).
    """
    _regs_ok(rbx, rcx, rdx)
    if rbx != _PT_VA or rcx & _PAGE_MASK:
        return gp0()
    idx = m.epc.index_of(rcx)
    if idx is None:
        return _pf(rcx)
    e = m.epc.epcm
    if e.valid[idx]:
        return _pf(rcx)
    m.epc.contents.pop(idx, None)
    _set_entry(e, idx, _PT_VA, 0, -1, 0)
    return _SUCCESS


def eblock(m: Machine, lp: LogicalProcessor, rbx: int, rcx: int, rdx: int) -> LeafResult:
    """Mark an enclave page BLOCKED (no new TLB translations) ahead of eviction.

    Models: SDM ENCLS[EBLOCK] (RCX = EPC page); order: alignment (#GP), EPC membership (#PF);
    invalid -> SGX_PG_INVLD; PT not in {REG, TCS, TRIM} -> SGX_PG_IS_SECS (SECS) or
    SGX_NOTBLOCKABLE (CF=1); already blocked -> SGX_BLKSTATE (CF=1); else BLOCKED := 1.
    [MODEL] the page is stamped with the enclave's current tracking epoch (``block_epoch``),
    which EWB compares against the epoch ETRACK advances.
    Outcomes: SUCCESS, SGX_PG_INVLD, SGX_PG_IS_SECS, SGX_NOTBLOCKABLE, SGX_BLKSTATE, #GP(0), #PF.
    """
    _regs_ok(rbx, rcx, rdx)
    if rcx & _PAGE_MASK:
        return gp0()
    idx = m.epc.index_of(rcx)
    if idx is None:
        return _pf(rcx)
    e = m.epc.epcm
    if not e.valid[idx]:
        return SgxStatus.SGX_PG_INVLD
    pt = int(e.pt[idx])
    if pt != _PT_REG and pt != _PT_TCS and pt != _PT_TRIM:
        return SgxStatus.SGX_PG_IS_SECS if pt == _PT_SECS else SgxStatus.SGX_NOTBLOCKABLE
    if e.blocked[idx]:
        return SgxStatus.SGX_BLKSTATE
    e.blocked[idx] = True
    e.block_epoch[idx] = _secs_of_child(m, idx).epoch
    return _SUCCESS


def etrack(m: Machine, lp: LogicalProcessor, rbx: int, rcx: int, rdx: int) -> LeafResult:
    """Start a new TLB-tracking cycle for an enclave.

    Models: SDM ENCLS[ETRACK] (RCX = SECS); order: alignment (#GP), EPC membership, VALID and
    PT_SECS (#PF); previous cycle incomplete -> SGX_PREV_TRK_INCMPL. [MODEL] (sgx-architecture.md
    §4.8): a cycle is incomplete while some processor that was inside the enclave at the last
    ETRACK has not exited (``track_waiting``); success advances ``epoch`` and makes every
    processor now inside a waiter.
    Outcomes: SUCCESS, SGX_PREV_TRK_INCMPL, #GP(0), #PF(RCX).
    """
    _regs_ok(rbx, rcx, rdx)
    if rcx & _PAGE_MASK:
        return gp0()
    idx = m.epc.index_of(rcx)
    if idx is None:
        return _pf(rcx)
    e = m.epc.epcm
    if not e.valid[idx] or e.pt[idx] != _PT_SECS:
        return _pf(rcx)
    state = m.epc.secs_state[idx]
    if state.track_waiting:
        return SgxStatus.SGX_PREV_TRK_INCMPL
    state.epoch += 1
    state.track_waiting = set(state.inside)
    return _SUCCESS


# --------------------------------------------------------------------------------------------
# EWB / ELDB / ELDU
# --------------------------------------------------------------------------------------------


def _paging_operands(m: Machine, rbx: int, rcx: int, rdx: int) -> tuple[int, int] | Fault:
    """The operand checks EWB and ELDB/ELDU share, in the SDM's order.

    PAGEINFO (RBX) 32-byte aligned and the EPC page (RCX) 4 KiB aligned, else #GP(0); RCX in the
    EPC, else #PF(RCX); the VA slot (RDX) 8-byte aligned, else #GP(0); RDX in the EPC, else
    #PF(RDX). Returns the (page, VA page) indices.
    """
    _regs_ok(rbx, rcx, rdx)
    if rbx & 31 or rcx & _PAGE_MASK:
        return gp0()
    idx = m.epc.index_of(rcx)
    if idx is None:
        return _pf(rcx)
    if rdx & 7:
        return gp0()
    va_idx = m.epc.index_of(rdx)
    if va_idx is None:
        return _pf(rdx)
    return idx, va_idx


def ewb(m: Machine, lp: LogicalProcessor, rbx: int, rcx: int, rdx: int) -> LeafResult:
    """Evict an EPC page: encrypt it to PAGEINFO.SRCPGE, write its PCMD, version into the VA slot.

    Models: SDM ENCLS[EWB] (RBX = PAGEINFO{LINADDR=0, SECS=0, SRCPGE, PCMD}, RCX = EPC page,
    RDX = VA slot); order: RBX/RCX alignment, RCX in EPC, RDX alignment, RDX in EPC, RCX and RDX
    in one page (#GP), LINADDR/SECS non-zero (#GP), PCMD/SRCPGE alignment (#GP), RCX invalid
    (#PF), RDX page not a valid VA (#PF(RDX)); child pages: not BLOCKED -> SGX_PAGE_NOT_BLOCKED,
    tracking incomplete -> SGX_NOT_TRACKED ([MODEL]: no ETRACK since the EBLOCK, or processors
    of the last ETRACK still inside); SECS with children -> SGX_CHILD_PRESENT; VA pages evict
    freely. Sealing: ``crypto.ewb_seal(CR_BASE_PK, version, header, page)`` with a fresh
    version ([MODEL] ``m.next_paging_version() << 3``: unique, bits 2:0 clear); ciphertext to
    SRCPGE; PCMD {SECINFO(PT, RWX, PENDING, MODIFIED, PR), ENCLAVEID, MAC}; PAGEINFO.LINADDR :=
    ENCLAVEADDRESS; SGX_VA_SLOT_OCCUPIED (CF=1, the eviction still completes) when the slot was
    non-zero; EPCM entry invalidated.
    [MODEL] an evicted SECS's hidden state moves to ``m.evicted_secs[version]``, and the suspended
    thread of an evicted TCS is kept as ``m.tcs_threads[-version]`` (ELDU moves it back under the
    TCS's new page index), so reusing the freed EPC page cannot disturb it.
    Outcomes: SUCCESS, SGX_VA_SLOT_OCCUPIED, SGX_PAGE_NOT_BLOCKED, SGX_NOT_TRACKED,
    SGX_CHILD_PRESENT, #GP(0), #PF(RCX), #PF(RDX).
    """
    operands = _paging_operands(m, rbx, rcx, rdx)
    if isinstance(operands, Fault):
        return operands
    idx, va_idx = operands
    epc = m.epc
    if va_idx == idx:
        return gp0()
    linaddr_field, srcpge, pcmd_addr, secs_field = _read_pageinfo(m, rbx)
    if linaddr_field != 0 or secs_field != 0:
        return gp0()
    if pcmd_addr & 127 or srcpge & _PAGE_MASK:
        return gp0()
    e = epc.epcm
    if not e.valid[idx]:
        return _pf(rcx)
    if not e.valid[va_idx] or e.pt[va_idx] != _PT_VA:
        return _pf(rdx)
    pt = int(e.pt[idx])
    state: SecsState | None = None
    if pt in _CHILD_PTS:
        state = _secs_of_child(m, idx)
        if not e.blocked[idx]:
            return SgxStatus.SGX_PAGE_NOT_BLOCKED
        if int(e.block_epoch[idx]) >= state.epoch or state.track_waiting:
            return SgxStatus.SGX_NOT_TRACKED
        header_eid = pcmd_eid = state.eid
    elif pt == _PT_SECS:
        state = epc.secs_state[idx]
        if state.child_count or state.virt_child_count:
            return SgxStatus.SGX_CHILD_PRESENT
        header_eid, pcmd_eid = 0, state.eid
    else:  # PT_VA
        header_eid = pcmd_eid = 0
    linaddr = int(e.linaddr[idx])
    flags = _secinfo_of_entry(e, idx)
    secinfo64 = _SECINFO_FLAGS.pack(flags) + _ZERO_PAGE[:56]
    version = m.next_paging_version() << _VERSION_SHIFT
    header = mac_header(secinfo64, header_eid, _ZERO_PAGE[:40], linaddr)
    ciphertext, mac = crypto.ewb_seal(m.cr_base_pk, version, header, _page_bytes(epc, idx))
    m.dram.write(srcpge, ciphertext)
    m.dram.write(pcmd_addr, _PCMD.pack(flags, _ZERO_PAGE[:56], pcmd_eid, _ZERO_PAGE[:40], mac))
    m.dram.write(rbx, _U64_LE.pack(linaddr))
    slot = rdx & _PAGE_MASK
    result = SgxStatus.SGX_VA_SLOT_OCCUPIED if _va_slot_read(epc, va_idx, slot) else _SUCCESS
    _va_slot_write(epc, va_idx, slot, version)
    if pt == _PT_SECS:
        m.evicted_secs[version] = epc.secs_state.pop(idx)
    elif state is not None:
        state.child_count -= 1
    thread = m.tcs_threads.pop(idx, None)
    if thread is not None:
        m.tcs_threads[-version] = thread
    epc.contents.pop(idx, None)
    _clear_entry(e, idx)
    return result


def _eld(m: Machine, rbx: int, rcx: int, rdx: int, blocked: bool) -> LeafResult:
    """ELDB/ELDU body; ``blocked`` selects ELDB (child pages come back BLOCKED)."""
    operands = _paging_operands(m, rbx, rcx, rdx)
    if isinstance(operands, Fault):
        return operands
    idx, va_idx = operands
    epc = m.epc
    linaddr, srcpge, pcmd_addr, secs_addr = _read_pageinfo(m, rbx)
    if pcmd_addr & 127 or srcpge & _PAGE_MASK:
        return gp0()
    e = epc.epcm
    if e.valid[idx]:
        return _pf(rcx)
    if not e.valid[va_idx] or e.pt[va_idx] != _PT_VA:
        return _pf(rdx)
    raw_pcmd = m.dram.read(pcmd_addr, _PCMD.size)
    flags, _, _, pcmd_reserved, mac = _PCMD.unpack(raw_pcmd)
    pt = (flags >> 8) & 0xFF
    state: SecsState | None = None
    sidx = -1
    if pt in (_PT_REG, _PT_TCS, _PT_TRIM):
        if secs_addr & _PAGE_MASK:
            return gp0()
        found = epc.index_of(secs_addr)
        if found is None:
            return _pf(secs_addr)
        if not e.valid[found] or e.pt[found] != _PT_SECS:
            return _pf(secs_addr)
        sidx = found
        state = epc.secs_state[sidx]
        eid = state.eid
    else:
        eid = 0
        if secs_addr != 0:
            return gp0()
    header = mac_header(raw_pcmd[:64], eid, pcmd_reserved, linaddr)
    slot = rdx & _PAGE_MASK
    version = _va_slot_read(epc, va_idx, slot)
    ciphertext = m.dram.read(srcpge, PAGE_SIZE)
    plain = crypto.eldu_open(m.cr_base_pk, version, header, ciphertext, mac)
    if plain is None:
        return SgxStatus.SGX_MAC_COMPARE_FAIL
    if pt == _PT_SECS:
        restored = m.evicted_secs.pop(version, None)
        if not isinstance(restored, SecsState):
            raise ModelInvariantError(f"ELDU of a SECS sealed with version {version}: no hidden state kept")
        epc.secs_state[idx] = restored
    _va_slot_write(epc, va_idx, slot, 0)
    _store_page(epc, idx, plain)
    _set_entry(e, idx, pt, flags & 0x7, sidx, linaddr)
    e.pending[idx] = bool(flags & 0x8)
    e.modified[idx] = bool(flags & 0x10)
    e.pr[idx] = bool(flags & 0x20)
    if state is not None:
        state.child_count += 1
        if blocked:
            e.blocked[idx] = True
            e.block_epoch[idx] = state.epoch
    thread = m.tcs_threads.pop(-version, None)
    if thread is not None:
        m.tcs_threads[idx] = thread
    return _SUCCESS


def eldu(m: Machine, lp: LogicalProcessor, rbx: int, rcx: int, rdx: int) -> LeafResult:
    """Load an evicted page back into the EPC, unblocked.

    Models: SDM ENCLS[ELDU] (RBX = PAGEINFO{LINADDR, SRCPGE, PCMD, SECS}, RCX = free EPC page,
    RDX = VA slot); order: RBX/RCX alignment, RCX in EPC, RDX alignment, RDX in EPC, PCMD/SRCPGE
    alignment, RCX valid (#PF), RDX not a valid VA (#PF(RDX)); for child types (PCMD PT in
    {REG, TCS, TRIM}) PAGEINFO.SECS alignment (#GP), in EPC and a valid PT_SECS (#PF(SECS)), its
    EID binds the MAC; for SECS/VA PAGEINFO.SECS must be 0 (#GP). The page is opened with
    ``crypto.eldu_open`` under the *current* CR_BASE_PK and the slot's version: failure ->
    SGX_MAC_COMPARE_FAIL (e.g. after EUPDATESVN refreshed the key). Success zeroes the slot and
    restores the EPCM entry from PCMD.SECINFO and LINADDR; a SECS gets its hidden state back
    from ``m.evicted_secs``; the SECS child count rises by one for child pages.
    Outcomes: SUCCESS, SGX_MAC_COMPARE_FAIL, #GP(0), #PF(RCX), #PF(RDX), #PF(PAGEINFO.SECS).
    Differs: [MODEL] a PAGEINFO.SECS that is not a valid SECS raises #PF(SECS) (the SDM reads its
    EID without saying what an invalid one gives).
    """
    return _eld(m, rbx, rcx, rdx, blocked=False)


def eldb(m: Machine, lp: LogicalProcessor, rbx: int, rcx: int, rdx: int) -> LeafResult:
    """As :func:`eldu`, but a child page comes back BLOCKED (stamped with the current epoch).

    Models: SDM ENCLS[ELDB]. Outcomes: as ELDU.
    """
    return _eld(m, rbx, rcx, rdx, blocked=True)


def elduc(m: Machine, lp: LogicalProcessor, rbx: int, rcx: int, rdx: int) -> LeafResult:
    """ELDUC: ELDU whose concurrency conflicts return SGX_EPC_PAGE_CONFLICT (none arise here).

    Models: SDM ENCLS[ELDUC] (EAX = 13H). Outcomes: as ELDU.
    """
    return _eld(m, rbx, rcx, rdx, blocked=False)


def eldbc(m: Machine, lp: LogicalProcessor, rbx: int, rcx: int, rdx: int) -> LeafResult:
    """ELDBC: ELDB whose concurrency conflicts return SGX_EPC_PAGE_CONFLICT (none arise here).

    Models: SDM ENCLS[ELDBC] (EAX = 12H). Outcomes: as ELDB.
    """
    return _eld(m, rbx, rcx, rdx, blocked=True)


# --------------------------------------------------------------------------------------------
# SGX2: EAUG / EMODPR / EMODT
# --------------------------------------------------------------------------------------------


def _eaug_tail(m: Machine, idx: int, rcx: int, sidx: int, secs_addr: int, linaddr: int) -> LeafResult:
    """EAUG from the EPCM(RCX).VALID check on (shared by the one-page leaf and the batch)."""
    e = m.epc.epcm
    if e.valid[idx]:
        return _pf(rcx)
    if not e.valid[sidx] or e.pt[sidx] != _PT_SECS:
        return _pf(secs_addr)
    state = m.epc.secs_state[sidx]
    if not state.initialized:
        return gp0()
    if not state.base <= linaddr < state.base + state.size:
        return gp0()
    m.epc.contents.pop(idx, None)
    _set_entry(e, idx, _PT_REG, 0x3, sidx, linaddr)
    e.pending[idx] = True
    state.child_count += 1
    return _SUCCESS


def eaug(m: Machine, lp: LogicalProcessor, rbx: int, rcx: int, rdx: int) -> LeafResult:
    """Add a zeroed, PENDING read/write REG page to an initialized enclave (not measured).

    Models: SDM ENCLS[EAUG] (RBX = PAGEINFO{LINADDR, SECS, SRCPGE = 0, SECINFO = 0}, RCX = EPC
    page); order: PAGEINFO/EPC alignment, RCX in EPC, SECINFO alignment (if non-zero), SECS and
    LINADDR alignment, SRCPGE non-zero (#GP), SECS in EPC, RCX valid (#PF), a non-zero SECINFO
    (only shadow-stack types are allowed: #GP without CET), SECS valid PT_SECS (#PF(SECS)),
    enclave not initialized (#GP), LINADDR outside ELRANGE (#GP).
    Outcomes: SUCCESS, #GP(0), #PF(RCX), #PF(PAGEINFO.SECS).
    """
    _regs_ok(rbx, rcx, rdx)
    if rbx & 31 or rcx & _PAGE_MASK:
        return gp0()
    epc = m.epc
    idx = epc.index_of(rcx)
    if idx is None:
        return _pf(rcx)
    linaddr, srcpge, secinfo_addr, secs_addr = _read_pageinfo(m, rbx)
    if secinfo_addr and secinfo_addr & 63:
        return gp0()
    if secs_addr & _PAGE_MASK or linaddr & _PAGE_MASK:
        return gp0()
    if srcpge != 0:
        return gp0()
    sidx = epc.index_of(secs_addr)
    if sidx is None:
        return _pf(secs_addr)
    if secinfo_addr:
        if epc.epcm.valid[idx]:
            return _pf(rcx)
        return gp0()  # a SECINFO may only request PT_SS_FIRST/PT_SS_REST, which needs CET
    return _eaug_tail(m, idx, rcx, sidx, secs_addr, linaddr)


def emodpr(m: Machine, lp: LogicalProcessor, rbx: int, rcx: int, rdx: int) -> LeafResult:
    """Restrict a REG page's EPCM permissions (R/W/X AND SECINFO) and set PR.

    Models: SDM ENCLS[EMODPR] (RBX = SECINFO, RCX = EPC page); order: SECINFO/EPC alignment, RCX
    in EPC, SECINFO reserved or W without R (#GP), not valid (#PF), PENDING or MODIFIED ->
    SGX_PAGE_NOT_MODIFIABLE, PT != REG (#PF), enclave not initialized (#GP).
    Outcomes: SUCCESS, SGX_PAGE_NOT_MODIFIABLE, #GP(0), #PF(RCX).
    """
    _regs_ok(rbx, rcx, rdx)
    if rbx & 63 or rcx & _PAGE_MASK:
        return gp0()
    idx = m.epc.index_of(rcx)
    if idx is None:
        return _pf(rcx)
    flags, secinfo_ok = _read_secinfo(m, rbx)
    if not secinfo_ok or (flags & 0x2 and not flags & 0x1):
        return gp0()
    e = m.epc.epcm
    if not e.valid[idx]:
        return _pf(rcx)
    if e.pending[idx] or e.modified[idx]:
        return SgxStatus.SGX_PAGE_NOT_MODIFIABLE
    if e.pt[idx] != _PT_REG:
        return _pf(rcx)
    state = _secs_of_child(m, idx)
    if not state.initialized:
        return gp0()
    e.pr[idx] = True
    e.rwx[idx] = int(e.rwx[idx]) & flags & 0x7
    e.block_epoch[idx] = state.epoch
    return _SUCCESS


def emodt(m: Machine, lp: LogicalProcessor, rbx: int, rcx: int, rdx: int) -> LeafResult:
    """Change a page's type to TCS or TRIM (MODIFIED := 1, RWX := 0; the enclave must EACCEPT).

    Models: SDM ENCLS[EMODT] (RBX = SECINFO, RCX = EPC page); order: SECINFO/EPC alignment, RCX in
    EPC, SECINFO reserved or PT not in {TCS, TRIM} (#GP), not valid (#PF), transition not
    REG -> {TCS, TRIM} or TCS -> TRIM (#PF), PENDING or MODIFIED -> SGX_PAGE_NOT_MODIFIABLE,
    enclave not initialized (#GP).
    Outcomes: SUCCESS, SGX_PAGE_NOT_MODIFIABLE, #GP(0), #PF(RCX).
    """
    _regs_ok(rbx, rcx, rdx)
    if rbx & 63 or rcx & _PAGE_MASK:
        return gp0()
    idx = m.epc.index_of(rcx)
    if idx is None:
        return _pf(rcx)
    flags, secinfo_ok = _read_secinfo(m, rbx)
    new_pt = (flags >> 8) & 0xFF
    if not secinfo_ok or (new_pt != _PT_TCS and new_pt != _PT_TRIM):
        return gp0()
    e = m.epc.epcm
    if not e.valid[idx]:
        return _pf(rcx)
    pt = int(e.pt[idx])
    if not (pt == _PT_REG or (pt in (_PT_TCS, _PT_SS_FIRST, _PT_SS_REST) and new_pt == _PT_TRIM)):
        return _pf(rcx)
    if e.pending[idx] or e.modified[idx]:
        return SgxStatus.SGX_PAGE_NOT_MODIFIABLE
    state = _secs_of_child(m, idx)
    if not state.initialized:
        return gp0()
    e.block_epoch[idx] = state.epoch
    e.pr[idx] = False
    e.modified[idx] = True
    e.rwx[idx] = 0
    e.pt[idx] = new_pt
    return _SUCCESS


# --------------------------------------------------------------------------------------------
# EUPDATESVN
# --------------------------------------------------------------------------------------------


def eupdatesvn(m: Machine, lp: LogicalProcessor, rbx: int, rcx: int, rdx: int) -> LeafResult:
    """Refresh the paging key and raise CR_CPUSVN to the minimum SVN of the loaded microcode.

    Models: Intel "Runtime Microcode Updates with Intel SGX" (cdrdv2 648682) EUPDATESVN pseudo-code
    as quoted on LKML (eupdatesvn-linux.md §4), in its order: another logical processor has an
    ENCLS leaf in flight -> SGX_LOCKFAIL (code 7); any valid EPCM entry -> SGX_EPC_NOT_READY;
    RDSEED of 16 bytes fails -> SGX_INSUFFICIENT_ENTROPY; else CR_BASE_PK := the 16 bytes and
    CR_CPUSVN := the component-wise minimum SVN over all logical processors: SUCCESS if it
    changed, SGX_NO_UPDATE (CF=1) if not. CPUSVN never decreases (ModelInvariantError otherwise).
    [MODEL] pages evicted under the old key can never be loaded again, so their kept SECS state
    and suspended threads are dropped.
    Outcomes: SUCCESS, SGX_NO_UPDATE, SGX_LOCKFAIL, SGX_EPC_NOT_READY, SGX_INSUFFICIENT_ENTROPY.
    """
    _regs_ok(rbx, rcx, rdx)
    if any(other.inflight is not None for other in m.cpus if other is not lp):
        return SgxStatus.SGX_LOCKFAIL
    if m.epc.epcm.valid.any():
        return SgxStatus.SGX_EPC_NOT_READY
    fresh_key = m.entropy.rdseed(16)
    if fresh_key is None:
        return SgxStatus.SGX_INSUFFICIENT_ENTROPY
    m.cr_base_pk = fresh_key
    m.evicted_secs.clear()
    for key in [k for k in m.tcs_threads if k < 0]:
        drop_tcs_threads(m, key)
    old = m.cpusvn
    new = m.min_loaded_svn()
    if len(new) != CPUSVN_SIZE or not cpusvn_le(old, new):
        raise ModelInvariantError(f"EUPDATESVN would lower CPUSVN from {old.hex()} to {new.hex()}")
    m.cr_cpusvn = new
    return _SUCCESS if new != old else SgxStatus.SGX_NO_UPDATE


# --------------------------------------------------------------------------------------------
# Dispatch table
# --------------------------------------------------------------------------------------------

LeafFn = Callable[["Machine", LogicalProcessor, int, int, int], LeafResult]

#: ENCLS leaf number -> implementation.
LEAVES: Mapping[int, LeafFn] = MappingProxyType(
    {
        int(EnclsLeaf.ECREATE): ecreate,
        int(EnclsLeaf.EADD): eadd,
        int(EnclsLeaf.EINIT): einit,
        int(EnclsLeaf.EREMOVE): eremove,
        int(EnclsLeaf.EDBGRD): edbgrd,
        int(EnclsLeaf.EDBGWR): edbgwr,
        int(EnclsLeaf.EEXTEND): eextend,
        int(EnclsLeaf.ELDB): eldb,
        int(EnclsLeaf.ELDU): eldu,
        int(EnclsLeaf.EBLOCK): eblock,
        int(EnclsLeaf.EPA): epa,
        int(EnclsLeaf.EWB): ewb,
        int(EnclsLeaf.ETRACK): etrack,
        int(EnclsLeaf.EAUG): eaug,
        int(EnclsLeaf.EMODPR): emodpr,
        int(EnclsLeaf.EMODT): emodt,
        int(EnclsLeaf.ELDBC): eldbc,
        int(EnclsLeaf.ELDUC): elduc,
        int(EnclsLeaf.EUPDATESVN): eupdatesvn,
    }
)

#: Leaves that need SGX2 (CPUID.(12H,0).EAX[1]); #GP(0) on an SGX1-only machine.
SGX2_LEAVES: frozenset[int] = frozenset({int(EnclsLeaf.EAUG), int(EnclsLeaf.EMODPR), int(EnclsLeaf.EMODT)})

# --------------------------------------------------------------------------------------------
# Batch paths
# --------------------------------------------------------------------------------------------

I64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def _as_addr_array(name: str, value: object) -> I64Array:
    """A 1-D int64 array of non-negative addresses, or InvalidArgument."""
    if not isinstance(value, np.ndarray) or value.ndim != 1 or value.dtype.kind not in "iu":
        raise InvalidArgument(f"{name} must be a 1-D integer numpy array, got {value!r:.80}")
    arr = value.astype(np.int64, copy=False)
    if arr.size and (int(arr.min()) < 0 or (value.dtype.kind == "u" and int(value.max()) > (1 << 63) - 1)):
        raise InvalidArgument(f"{name} holds addresses outside 0..2**63-1")
    return arr


def _indices_of(epc: Epc, phys: I64Array) -> tuple[I64Array, BoolArray]:
    """Vectorized :meth:`Epc.index_of`: (global page indices, in-EPC mask); -1 where not EPC."""
    order = sorted(epc.sections, key=lambda s: s.base)
    bases = np.array([s.base for s in order], dtype=np.int64)
    ends = np.array([s.end for s in order], dtype=np.int64)
    firsts = np.array([s.first_page for s in order], dtype=np.int64)
    j = np.searchsorted(bases, phys, side="right") - 1
    jc = np.clip(j, 0, len(order) - 1)
    inside = (j >= 0) & (phys < ends[jc])
    idx = np.where(inside, firsts[jc] + ((phys - bases[jc]) >> PAGE_SHIFT), -1)
    return idx.astype(np.int64, copy=False), inside


def _drop_contents(epc: Epc, idx: I64Array) -> None:
    """Forget the stored contents of the pages ``idx`` (cheap when few pages hold data)."""
    contents = epc.contents
    if not contents:
        return
    if len(contents) < idx.size:
        keys = np.fromiter(contents.keys(), dtype=np.int64, count=len(contents))
        for k in keys[np.isin(keys, idx)].tolist():
            del contents[k]
    else:
        for k in idx.tolist():
            contents.pop(k, None)


def _first_occurrence(idx: I64Array, eligible: BoolArray) -> BoolArray:
    """True where ``idx[i]`` is eligible and no earlier eligible entry has the same index."""
    pos = np.flatnonzero(eligible)
    sub = idx[pos]
    if sub.size < 2 or bool(np.all(sub[1:] > sub[:-1])):
        return eligible.copy()  # strictly increasing: no repeats (the common, sorted case)
    first = np.zeros(idx.shape, dtype=np.bool_)
    _, where = np.unique(sub, return_index=True)
    first[pos[where]] = True
    return first


def _batch_begin(m: Machine, cpu: int, leaf: EnclsLeaf) -> tuple[LogicalProcessor, Fault | None]:
    """Begin ``leaf`` on ``cpu`` and apply the gate Machine.encls_exec applies before a handler."""
    m.encls_begin(cpu, leaf)
    lp = m.cpus[cpu]
    if lp.inflight_poisoned or lp.in_enclave:
        return lp, gp0()
    if leaf in SGX2_LEAVES and not m.config.sgx2:
        return lp, gp0()
    m._take_cpusvn_snapshot()
    return lp, None


def _batch_account(m: Machine, lp: LogicalProcessor, leaf: EnclsLeaf, executed: int, charged: int) -> None:
    """Statistics and simulated time as ``executed`` one-page calls (``charged`` of them ran)."""
    if executed:
        m.stats[leaf.name] = m.stats.get(leaf.name, 0) + executed
    if charged:
        m.clock.charge(lp.id, m.config.latency.encls.get(leaf, 0) * charged)


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


def eaug_batch(
    m: Machine,
    cpu: int,
    secs_phys: int,
    epc_phys: npt.NDArray[np.integer],
    linaddrs: npt.NDArray[np.integer],
) -> tuple[int, LeafResult]:
    """EAUG many pages as one in-flight ENCLS; stop at the first failure.

    Page ``i`` is EAUGed as the one-page leaf would with PAGEINFO{LINADDR=linaddrs[i],
    SECS=secs_phys, SRCPGE=0, SECINFO=0} and RCX = epc_phys[i]. Returns (pages added, outcome of
    the page that stopped the batch or SUCCESS). Pages whose checks all pass are committed with
    numpy; the rest take the one-page path. Charges the EAUG latency per page attempted.
    Models: repeated SDM ENCLS[EAUG] (Linux sgx_encl_eaug_page). Outcomes: as :func:`eaug`.
    """
    epc_arr = _as_addr_array("epc_phys", epc_phys)
    lin_arr = _as_addr_array("linaddrs", linaddrs)
    if lin_arr.size != epc_arr.size:
        raise InvalidArgument("eaug_batch: epc_phys and linaddrs must have equal lengths")
    if type(secs_phys) is not int or not 0 <= secs_phys <= _U64:
        raise InvalidArgument(f"eaug_batch: secs_phys={secs_phys!r} is not a 64-bit value")
    n = int(epc_arr.size)
    if n == 0:
        return 0, _SUCCESS
    leaf = EnclsLeaf.EAUG
    lp, gate = _batch_begin(m, cpu, leaf)
    try:
        if gate is not None:
            _batch_account(m, lp, leaf, 1, 0)
            return 0, gate
        done, result = _eaug_batch_body(m, epc_arr, lin_arr, secs_phys)
        attempted = done + (result != _SUCCESS)
        _batch_account(m, lp, leaf, attempted, attempted)
        return done, result
    finally:
        m.encls_end(cpu)


def _eaug_one(m: Machine, epc_addr: int, linaddr: int, secs_phys: int) -> LeafResult:
    if epc_addr & _PAGE_MASK:
        return gp0()
    idx = m.epc.index_of(epc_addr)
    if idx is None:
        return _pf(epc_addr)
    if secs_phys & _PAGE_MASK or linaddr & _PAGE_MASK:
        return gp0()
    sidx = m.epc.index_of(secs_phys)
    if sidx is None:
        return _pf(secs_phys)
    return _eaug_tail(m, idx, epc_addr, sidx, secs_phys, linaddr)


def _eaug_batch_body(
    m: Machine, epc_arr: I64Array, lin_arr: I64Array, secs_phys: int
) -> tuple[int, LeafResult]:
    epc = m.epc
    e = epc.epcm
    n = int(epc_arr.size)
    sidx = epc.index_of(secs_phys)
    fast = np.zeros(n, dtype=np.bool_)
    idx, in_epc = _indices_of(epc, epc_arr)
    state: SecsState | None = None
    if sidx is not None and not secs_phys & _PAGE_MASK and e.valid[sidx] and e.pt[sidx] == _PT_SECS:
        state = epc.secs_state[sidx]
        if state.initialized:
            aligned = ((epc_arr & _PAGE_MASK) == 0) & ((lin_arr & _PAGE_MASK) == 0)
            in_range = (lin_arr >= state.base) & (lin_arr < state.base + state.size)
            fast = aligned & in_epc & in_range
            fast &= ~e.valid[np.where(fast, idx, 0)]
            fast &= _first_occurrence(idx, fast)
    done = 0
    while done < n:
        tail = np.flatnonzero(~fast[done:])
        stop = n if tail.size == 0 else done + int(tail[0])
        if stop > done:
            assert state is not None and sidx is not None
            ids = idx[done:stop]
            e.valid[ids] = True
            e.pt[ids] = _PT_REG
            e.rwx[ids] = 0x3
            e.secs[ids] = sidx
            e.linaddr[ids] = lin_arr[done:stop].astype(np.uint64)
            e.blocked[ids] = False
            e.pending[ids] = True
            e.modified[ids] = False
            e.pr[ids] = False
            e.block_epoch[ids] = 0
            _drop_contents(epc, ids)
            state.child_count += int(ids.size)
            done = stop
        if done == n:
            break
        result = _eaug_one(m, int(epc_arr[done]), int(lin_arr[done]), secs_phys)
        if result != _SUCCESS:
            return done, result
        done += 1
    return done, _SUCCESS


def eremove_batch(m: Machine, cpu: int, epc_phys: npt.NDArray[np.integer]) -> npt.NDArray[np.int32]:
    """EREMOVE every page of ``epc_phys`` as one in-flight ENCLS; per-page outcome codes.

    Returns an int32 array: the :class:`SgxStatus` of each page's EREMOVE, or
    :data:`BATCH_FAULT` (-1) where it raised a fault (decode with :func:`decode_batch_status`).
    Every page is attempted (a failure does not stop the batch), in order, with results equal to
    page-by-page EREMOVE: REG/TCS/TRIM/VA/invalid pages are handled with numpy; SECS pages and
    repeated pages take the one-page path in their position, so a SECS after its children sees
    them gone. Charges the EREMOVE latency per page.
    Models: repeated SDM ENCLS[EREMOVE] (Linux sgx_encl_release / __sgx_sanitize_pages /
    sgx_vepc_remove_all). Outcomes per page: as :func:`eremove`.
    """
    arr = _as_addr_array("epc_phys", epc_phys)
    n = int(arr.size)
    out = np.zeros(n, dtype=np.int32)
    if n == 0:
        return out
    leaf = EnclsLeaf.EREMOVE
    lp, gate = _batch_begin(m, cpu, leaf)
    try:
        if gate is not None:
            out[:] = BATCH_FAULT
            _batch_account(m, lp, leaf, n, 0)
            return out
        _eremove_batch_body(m, arr, out)
        _batch_account(m, lp, leaf, n, n)
        return out
    finally:
        m.encls_end(cpu)


def _eremove_batch_body(m: Machine, arr: I64Array, out: npt.NDArray[np.int32]) -> None:
    epc = m.epc
    e = epc.epcm
    idx, in_epc = _indices_of(epc, arr)
    aligned = (arr & _PAGE_MASK) == 0
    ok = aligned & in_epc
    out[~ok] = BATCH_FAULT
    safe = np.where(ok, idx, 0)
    # Entries taking the one-page path, in order: valid SECS pages and repeats of an index.
    special = ok & ~_first_occurrence(idx, ok)
    special |= ok & e.valid[safe] & (e.pt[safe] == _PT_SECS)
    plain = ok & ~special
    bounds = [0, *(np.flatnonzero(special) + 1).tolist()]
    if bounds[-1] != arr.size:
        bounds.append(int(arr.size))
    for start, stop in itertools.pairwise(bounds):
        seg_stop = stop - 1 if special[stop - 1] else stop
        seg = np.flatnonzero(plain[start:seg_stop]) + start
        if seg.size:
            _eremove_vector(m, idx[seg], seg, out)
        if seg_stop != stop:
            out[stop - 1] = int(_eremove_index(m, int(idx[stop - 1])))


def _eremove_vector(m: Machine, ids: I64Array, pos: I64Array, out: npt.NDArray[np.int32]) -> None:
    """EREMOVE distinct non-SECS pages ``ids`` (batch positions ``pos``) with numpy."""
    e = m.epc.epcm
    valid = e.valid[ids]
    pt = e.pt[ids]
    is_va = valid & (pt == _PT_VA)
    child = valid & ~is_va
    quiet_trim = child & (pt == _PT_TRIM) & ~e.modified[ids]
    active_secs = [k for k, st in m.epc.secs_state.items() if st.inside]
    busy = child & ~quiet_trim
    if active_secs:
        busy &= np.isin(e.secs[ids], np.array(active_secs, dtype=np.int32))
    else:
        busy[:] = False
    out[pos[busy]] = int(SgxStatus.SGX_ENCLAVE_ACT)
    out[pos[~busy]] = int(_SUCCESS)
    removed_child = child & ~busy
    owner_of = e.secs[ids[removed_child]]
    if owner_of.size and owner_of.min() == owner_of.max():  # one enclave: no sort needed
        owners, counts = owner_of[:1], np.array([owner_of.size])
    else:
        owners, counts = np.unique(owner_of, return_counts=True)
    for owner, count in zip(owners.tolist(), counts.tolist(), strict=True):
        state = m.epc.secs_state.get(int(owner))
        if state is None:
            raise ModelInvariantError(f"EPC pages are children of {owner}, which has no SECS state")
        state.child_count -= int(count)
    gone = ids[is_va | removed_child]
    if gone.size:
        for name in Epcm.__slots__:
            if name != "npages":
                getattr(e, name)[gone] = 0
        _drop_contents(m.epc, gone)
        if m.tcs_threads:
            for k in gone.tolist():
                if k in m.tcs_threads:
                    drop_tcs_threads(m, k)


def decode_batch_status(m: Machine, phys: int, status: int) -> LeafResult:
    """The one-page outcome that an :func:`eremove_batch` entry ``status`` for ``phys`` stands for.

    Non-negative values are :class:`SgxStatus` codes; :data:`BATCH_FAULT` is #PF(phys) when
    ``phys`` is page-aligned but not EPC, and #GP(0) otherwise (misaligned, or the whole batch
    was refused: begun while EUPDATESVN was in flight, or in enclave mode).
    """
    if status >= 0:
        return SgxStatus(status)
    if status != BATCH_FAULT:
        raise InvalidArgument(f"not an eremove_batch status: {status!r}")
    if not phys & _PAGE_MASK and m.epc.index_of(phys) is None:
        return _pf(phys)
    return gp0()


# --------------------------------------------------------------------------------------------
# EPCM invariants
# --------------------------------------------------------------------------------------------


def validate_epcm(m: Machine) -> list[str]:
    """Every violated EPCM/SECS-state invariant, as messages (an empty list means consistent).

    Checks: every SecsState sits on a valid PT_SECS page and every valid PT_SECS page has one;
    each SECS's child count equals its valid child pages; every valid child page's ENCLAVESECS is
    a valid PT_SECS with state and its ENCLAVEADDRESS lies in that enclave's ELRANGE; no invalid
    page carries BLOCKED/PENDING/MODIFIED/PR/RWX or stored contents; stored pages are 4 KiB; TCS
    threads are kept only for valid pages (or evicted TCSs, under ``-version``); processors inside
    an enclave agree with CR_ACTIVE_SECS.
    Used by tests, the kernel's self-checks and the explorer.
    """
    epc = m.epc
    e = epc.epcm
    problems: list[str] = []
    valid = e.valid
    secs_pages = np.flatnonzero(valid & (e.pt == _PT_SECS))
    state_keys = set(epc.secs_state)
    for k in sorted(state_keys - set(secs_pages.tolist())):
        problems.append(f"SECS state kept for EPC page {k}, which is not a valid PT_SECS page")
    for k in sorted(set(secs_pages.tolist()) - state_keys):
        problems.append(f"valid PT_SECS page {k} has no SECS state")
    child_mask = valid & (e.pt != _PT_SECS) & (e.pt != _PT_VA)
    children = np.flatnonzero(child_mask)
    owners = e.secs[children]
    uniq, counts = np.unique(owners, return_counts=True)
    actual = dict(zip(uniq.tolist(), counts.tolist(), strict=True))
    for k, state in sorted(epc.secs_state.items()):
        if state.child_count != actual.get(k, 0):
            problems.append(
                f"SECS {k}: child_count {state.child_count} but {actual.get(k, 0)} valid children"
            )
    for owner in uniq.tolist():
        if owner not in state_keys or not 0 <= owner < e.npages or not valid[owner]:
            problems.append(f"valid child pages name SECS {owner}, which is not a valid SECS")
            continue
        state = epc.secs_state[owner]
        lin = e.linaddr[children[owners == owner]]
        outside = (lin < np.uint64(state.base)) | (lin >= np.uint64(state.base + state.size))
        if outside.any():
            problems.append(f"SECS {owner}: {int(outside.sum())} children lie outside its ELRANGE")
    invalid = ~valid
    for name in ("blocked", "pending", "modified", "pr"):
        bad = int(np.count_nonzero(getattr(e, name) & invalid))
        if bad:
            problems.append(f"{bad} invalid EPC pages have {name.upper()} set")
    bad_rwx = int(np.count_nonzero((e.rwx != 0) & invalid))
    if bad_rwx:
        problems.append(f"{bad_rwx} invalid EPC pages have RWX bits set")
    for k, page in epc.contents.items():
        if not 0 <= k < e.npages or not valid[k]:
            problems.append(f"contents stored for EPC page {k}, which is not valid")
        elif len(page) != PAGE_SIZE:
            problems.append(f"contents of EPC page {k} are {len(page)} bytes")
    for k in m.tcs_threads:
        if k < 0:
            if -k >= m.cr_paging_version << _VERSION_SHIFT:
                problems.append(f"a TCS thread is kept for EWB version {-k}, which was never issued")
        elif k >= e.npages or not valid[k]:
            problems.append(f"a TCS thread is kept for EPC page {k}, which is not valid")
    for k, state in epc.secs_state.items():
        for cpu in state.inside:
            if not 0 <= cpu < len(m.cpus) or m.cpus[cpu].active_secs != k:
                problems.append(f"SECS {k} lists CPU {cpu} inside, but its CR_ACTIVE_SECS differs")
    for lp in m.cpus:
        if lp.active_secs is not None:
            state_in = epc.secs_state.get(lp.active_secs)
            if state_in is None or lp.id not in state_in.inside:
                problems.append(f"CPU {lp.id} executes in SECS {lp.active_secs}, which does not list it")
    return problems
