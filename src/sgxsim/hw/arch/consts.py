"""SGX architectural numbers: leaf numbers, status codes, flags, masks, CPUID, and the architectural tables.

The single copy of every SGX number and table the model uses; :mod:`sgxsim.hw.arch` re-exports it.
Models: Intel SDM Vol. 3D ch. 34-38; Linux ``arch/x86/include/asm/sgx.h``.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import TypeAlias

from sgxsim.errors import InvalidArgument

__all__ = [
    "CPUSVN_SIZE",
    "IA32_SGXLEPUBKEYHASH0",
    "IA32_SGXLEPUBKEYHASH1",
    "IA32_SGXLEPUBKEYHASH2",
    "IA32_SGXLEPUBKEYHASH3",
    "IA32_SGXLEPUBKEYHASH_MSRS",
    "INFO_STATUSES",
    "KEYPOLICY_KSS_MASK",
    "KEYPOLICY_RESERVED_MASK",
    "MISC_EXINFO",
    "MR_EADD",
    "MR_ECREATE",
    "MR_EEXTEND",
    "PAGE_SHIFT",
    "PAGE_SIZE",
    "SECINFO_FLAGS_ARCH_RESERVED_MASK",
    "SECINFO_PAGE_TYPE_MASK",
    "SECINFO_PERMISSION_MASK",
    "SECINFO_RESERVED_MASK",
    "SECINFO_STATE_MASK",
    "SGX_ATTR_PRIV_MASK",
    "SGX_ATTR_RESERVED_MASK",
    "SGX_ATTR_UNPRIV_MASK",
    "SGX_CPUID",
    "SGX_CPUID_EDECCSSA",
    "SGX_CPUID_EPC",
    "SGX_CPUID_EPC_ADDR_LIMIT",
    "SGX_CPUID_EPC_INVALID",
    "SGX_CPUID_EPC_MASK",
    "SGX_CPUID_EPC_PROTECTED",
    "SGX_CPUID_EPC_SECTION",
    "SGX_CPUID_EUPDATESVN",
    "SGX_CPUID_SGX1",
    "SGX_CPUID_SGX2",
    "SGX_LAUNCH_TOKEN_SIZE",
    "SGX_MAX_EPC_SECTIONS",
    "SGX_MISC_RESERVED_MASK",
    "SGX_MODULUS_SIZE",
    "SGX_SSA_GPRS_SIZE",
    "SGX_SSA_MISC_EXINFO_SIZE",
    "SGX_TCS_AEXNOTIFY",
    "SGX_TCS_DBGOPTIN",
    "SGX_TCS_RESERVED_MASK",
    "SGX_TCS_RESERVED_SIZE",
    "SIGSTRUCT_EXPONENT",
    "SIGSTRUCT_HEADER1",
    "SIGSTRUCT_HEADER2",
    "SIGSTRUCT_TYPE_DEBUG",
    "SIGSTRUCT_VENDORS",
    "SIGSTRUCT_VENDOR_INTEL",
    "SIGSTRUCT_VENDOR_NONE",
    "SSA_EXIT_TYPE_HARDWARE",
    "SSA_EXIT_TYPE_SOFTWARE",
    "SSA_GPRSGX_AEXNOTIFY",
    "XFRM_LEGACY",
    "XSAVE_COMPONENTS",
    "XSAVE_LEGACY_AND_HEADER_SIZE",
    "Attributes",
    "EnclsLeaf",
    "EncluLeaf",
    "Fault",
    "KeyName",
    "KeyPolicy",
    "LeafResult",
    "PageType",
    "PfError",
    "SecinfoFlags",
    "SgxStatus",
    "Vector",
    "canonical",
    "cpusvn_le",
    "cpusvn_min",
    "decode_epc_section",
    "encode_epc_section",
    "gp0",
    "pf",
    "secinfo_flags",
    "secinfo_page_type",
    "sgx_calc_section_metric",
    "ssa_frame_bytes_needed",
    "xsave_size",
]


# --------------------------------------------------------------------------------------------
# Pages
# --------------------------------------------------------------------------------------------

PAGE_SIZE = 4096
PAGE_SHIFT = 12

_U16 = 0xFFFF
_U32 = 0xFFFF_FFFF
_U64 = 0xFFFF_FFFF_FFFF_FFFF


def _genmask(high: int, low: int) -> int:
    """Bits ``high..low`` inclusive set (Linux ``GENMASK_ULL``)."""
    return ((1 << (high + 1)) - 1) & ~((1 << low) - 1)


# --------------------------------------------------------------------------------------------
# Leaf numbers and return codes
# --------------------------------------------------------------------------------------------


class EnclsLeaf(enum.IntEnum):
    """ENCLS leaf numbers (value in EAX).

    Models: kernel ``enum sgx_encls_function``; SDM ELDB/ELDU/ELDBC/ELDUC opcode table for
    ELDB (0x07), ELDBC (0x12), ELDUC (0x13).
    """

    ECREATE = 0x00
    EADD = 0x01
    EINIT = 0x02
    EREMOVE = 0x03
    EDBGRD = 0x04
    EDBGWR = 0x05
    EEXTEND = 0x06
    ELDB = 0x07
    ELDU = 0x08
    EBLOCK = 0x09
    EPA = 0x0A
    EWB = 0x0B
    ETRACK = 0x0C
    EAUG = 0x0D
    EMODPR = 0x0E
    EMODT = 0x0F
    ELDBC = 0x12
    ELDUC = 0x13
    EUPDATESVN = 0x18


class EncluLeaf(enum.IntEnum):
    """ENCLU leaf numbers (value in EAX). Models: asm/enclu.h, SDM Table "ENCLU leaf functions"."""

    EREPORT = 0x0
    EGETKEY = 0x1
    EENTER = 0x2
    ERESUME = 0x3
    EEXIT = 0x4
    EACCEPT = 0x5
    EMODPE = 0x6
    EACCEPTCOPY = 0x7
    EDECCSSA = 0x9


class SgxStatus(enum.IntEnum):
    """SGX leaf return codes (RAX with ZF=1, or CF=1 for the informational ones).

    Models: SDM Table "Error or Information Codes for Intel SGX Instructions"; kernel
    ``enum sgx_return_code``. ``SGX_LOCKFAIL`` is the older SDM name of code 7 (an alias).
    ``SGX_EPC_NOT_READY`` (30) only existed in an intermediate EUPDATESVN patch version.
    ``SGX_INVALID_REPORTMACSTRUCT`` (28, EVERIFYREPORT2) is listed for completeness.
    """

    SUCCESS = 0
    SGX_INVALID_SIG_STRUCT = 1
    SGX_INVALID_ATTRIBUTE = 2
    SGX_BLKSTATE = 3
    SGX_INVALID_MEASUREMENT = 4
    SGX_NOTBLOCKABLE = 5
    SGX_PG_INVLD = 6
    SGX_EPC_PAGE_CONFLICT = 7
    SGX_LOCKFAIL = 7
    SGX_INVALID_SIGNATURE = 8
    SGX_MAC_COMPARE_FAIL = 9
    SGX_PAGE_NOT_BLOCKED = 10
    SGX_NOT_TRACKED = 11
    SGX_VA_SLOT_OCCUPIED = 12
    SGX_CHILD_PRESENT = 13
    SGX_ENCLAVE_ACT = 14
    SGX_ENTRYEPOCH_LOCKED = 15
    SGX_INVALID_EINITTOKEN = 16
    SGX_PREV_TRK_INCMPL = 17
    SGX_PG_IS_SECS = 18
    SGX_PAGE_ATTRIBUTES_MISMATCH = 19
    SGX_PAGE_NOT_MODIFIABLE = 20
    SGX_PAGE_NOT_DEBUGGABLE = 21
    SGX_INVALID_REPORTMACSTRUCT = 28
    SGX_INSUFFICIENT_ENTROPY = 29
    SGX_EPC_NOT_READY = 30
    SGX_NO_UPDATE = 31
    SGX_INVALID_CPUSVN = 32
    SGX_INVALID_ISVSVN = 64
    SGX_UNMASKED_EVENT = 128
    SGX_INVALID_KEYNAME = 256


#: Codes returned with RFLAGS.CF=1 (information, not failure): EBLOCK's BLKSTATE, NOTBLOCKABLE and
#: PG_IS_SECS, EWB's VA_SLOT_OCCUPIED (the page is still written out), EUPDATESVN's NO_UPDATE.
INFO_STATUSES: frozenset[SgxStatus] = frozenset(
    {
        SgxStatus.SGX_BLKSTATE,
        SgxStatus.SGX_NOTBLOCKABLE,
        SgxStatus.SGX_PG_IS_SECS,
        SgxStatus.SGX_VA_SLOT_OCCUPIED,
        SgxStatus.SGX_NO_UPDATE,
    }
)

# --------------------------------------------------------------------------------------------
# Page types and SECINFO flags
# --------------------------------------------------------------------------------------------


class PageType(enum.IntEnum):
    """EPCM page types (SECINFO.FLAGS bits 15:8). Models: kernel ``enum sgx_page_type``; SDM PT_*."""

    PT_SECS = 0
    PT_TCS = 1
    PT_REG = 2
    PT_VA = 3
    PT_TRIM = 4
    PT_SS_FIRST = 5
    PT_SS_REST = 6


class SecinfoFlags(enum.IntFlag):
    """SECINFO.FLAGS permission and SGX2 state bits (page type lives in bits 15:8)."""

    R = 0x01
    W = 0x02
    X = 0x04
    PENDING = 0x08
    MODIFIED = 0x10
    PR = 0x20


SECINFO_PERMISSION_MASK = 0x7
SECINFO_STATE_MASK = 0x38
SECINFO_PAGE_TYPE_MASK = 0xFF00
#: The kernel's view, ``~(PERMISSION_MASK | PAGE_TYPE_MASK)`` as a u64: PENDING/MODIFIED/PR count as
#: reserved for SGX_IOC_ENCLAVE_ADD_PAGES validation.
SECINFO_RESERVED_MASK = ~(SECINFO_PERMISSION_MASK | SECINFO_PAGE_TYPE_MASK) & _U64
#: Architecturally reserved SECINFO.FLAGS bits (7:6 and 63:16; SDM SECINFO.FLAGS table).
SECINFO_FLAGS_ARCH_RESERVED_MASK = _genmask(7, 6) | _genmask(63, 16)


def secinfo_flags(page_type: int, perms: int = 0, state: int = 0) -> int:
    """Compose a SECINFO.FLAGS value from a page type, R/W/X bits and PENDING/MODIFIED/PR bits.

    Models: SDM SECINFO.FLAGS layout (R/W/X bits 2:0, state bits 5:3, PAGE_TYPE bits 15:8).
    Raises InvalidArgument if a part does not fit its bit field.
    """
    for name, value, mask in (
        ("page_type", page_type, 0xFF),
        ("perms", perms, SECINFO_PERMISSION_MASK),
        ("state", state, SECINFO_STATE_MASK),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0 or value & ~mask:
            raise InvalidArgument(f"secinfo_flags: {name}={value!r} does not fit mask {mask:#x}")
    return (int(page_type) << 8) | int(perms) | int(state)


def secinfo_page_type(flags: int) -> int:
    """PAGE_TYPE field (bits 15:8) of a SECINFO.FLAGS value."""
    return (flags >> 8) & 0xFF


# --------------------------------------------------------------------------------------------
# Attributes, MISCSELECT, XFRM
# --------------------------------------------------------------------------------------------


class Attributes(enum.IntFlag):
    """SECS.ATTRIBUTES flag bits (low u64 of ATTRIBUTES). Models: asm/sgx.h ``enum sgx_attribute``."""

    INIT = 0x1
    DEBUG = 0x2
    MODE64BIT = 0x4
    PROVISIONKEY = 0x10
    EINITTOKENKEY = 0x20
    CET = 0x40
    KSS = 0x80
    AEXNOTIFY = 0x400


#: Kernel ``SGX_ATTR_RESERVED_MASK`` = BIT3|BIT6|BIT8|BIT9|GENMASK(63,11) (CET is reserved for Linux).
SGX_ATTR_RESERVED_MASK = (1 << 3) | (1 << 6) | (1 << 8) | (1 << 9) | _genmask(63, 11)
SGX_ATTR_UNPRIV_MASK = int(Attributes.DEBUG | Attributes.MODE64BIT | Attributes.KSS | Attributes.AEXNOTIFY)
SGX_ATTR_PRIV_MASK = int(Attributes.PROVISIONKEY | Attributes.EINITTOKENKEY)

MISC_EXINFO = 0x1
SGX_MISC_RESERVED_MASK = _genmask(63, 1)
#: x87 and SSE state: XFRM bits 1:0 must both be set (ECREATE #GP otherwise).
XFRM_LEGACY = 0x3

# --------------------------------------------------------------------------------------------
# EGETKEY
# --------------------------------------------------------------------------------------------


class KeyName(enum.IntEnum):
    """KEYREQUEST.KEYNAME values. Models: SDM KEYREQUEST KeyName table."""

    EINITTOKEN = 0
    PROVISION = 1
    PROVISION_SEAL = 2
    REPORT = 3
    SEAL = 4


class KeyPolicy(enum.IntFlag):
    """KEYREQUEST.KEYPOLICY bits. Models: SDM KEYREQUEST KeyPolicy table."""

    MRENCLAVE = 0x1
    MRSIGNER = 0x2
    NOISVPRODID = 0x4
    CONFIGID = 0x8
    ISVFAMILYID = 0x10
    ISVEXTPRODID = 0x20


#: Policy bits that require SECS.ATTRIBUTES.KSS (EGETKEY #GP otherwise).
KEYPOLICY_KSS_MASK = 0x3C
#: Reserved KEYPOLICY bits (15:6): EGETKEY #GP if any is set.
KEYPOLICY_RESERVED_MASK = _genmask(15, 6)

# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------


class Vector(enum.IntEnum):
    """Exception vectors a leaf or enclave access can raise."""

    DE = 0
    DB = 1
    BP = 3
    UD = 6
    GP = 13
    PF = 14


class PfError(enum.IntFlag):
    """#PF error-code bits (SGX = bit 15: EPCM-induced fault)."""

    P = 0x1
    W = 0x2
    U = 0x4
    RSVD = 0x8
    I = 0x10  # noqa: E741 - the SDM's name for the instruction-fetch bit
    PK = 0x20
    SGX = 0x8000


@dataclasses.dataclass(frozen=True, slots=True)
class Fault:
    """An architectural exception raised by a leaf: ``vector`` with ``error_code`` (and CR2 = ``addr``)."""

    vector: int
    error_code: int = 0
    addr: int = 0

    def __post_init__(self) -> None:
        for name in ("vector", "error_code", "addr"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidArgument(f"Fault.{name} must be a non-negative int, got {value!r}")

    @property
    def is_gp(self) -> bool:
        """True for a #GP."""
        return self.vector == Vector.GP

    @property
    def is_pf(self) -> bool:
        """True for a #PF."""
        return self.vector == Vector.PF

    def __str__(self) -> str:
        try:
            name = Vector(self.vector).name
        except ValueError:
            name = str(self.vector)
        if self.vector == Vector.PF:
            return f"#PF(addr={self.addr:#x}, error_code={self.error_code:#x})"
        return f"#{name}({self.error_code})"


def gp0() -> Fault:
    """#GP(0), the general-protection fault every SGX consistency check raises."""
    return Fault(Vector.GP, 0, 0)


def pf(addr: int, error_code: int) -> Fault:
    """#PF at linear address ``addr`` with ``error_code`` (see :class:`PfError`)."""
    return Fault(Vector.PF, error_code, addr)


#: What a leaf returns: a status code (SUCCESS, error or information) or an exception.
LeafResult: TypeAlias = SgxStatus | Fault

# --------------------------------------------------------------------------------------------
# CPUID leaf 0x12
# --------------------------------------------------------------------------------------------

SGX_CPUID = 0x12
SGX_CPUID_EPC = 2
SGX_CPUID_EPC_MASK = 0xF
SGX_CPUID_EPC_INVALID = 0x0
SGX_CPUID_EPC_SECTION = 0x1
SGX_MAX_EPC_SECTIONS = 8
#: CPUID.(0x12,0).EAX feature bits.
SGX_CPUID_SGX1 = 1 << 0
SGX_CPUID_SGX2 = 1 << 1
SGX_CPUID_EUPDATESVN = 1 << 10
#: CPUID.(0x12,0).EAX[11]: ENCLU[EDECCSSA] (Linux ``X86_FEATURE_SGX_EDECCSSA``).
SGX_CPUID_EDECCSSA = 1 << 11
#: CPUID.(0x12,2+i).ECX[3:0] EPC section property: confidentiality, integrity and replay protection.
SGX_CPUID_EPC_PROTECTED = 0x1
#: Largest base/size one EPC section sub-leaf can express (20 + 32 address bits).
SGX_CPUID_EPC_ADDR_LIMIT = 1 << 52


def sgx_calc_section_metric(low: int, high: int) -> int:
    """Combine two CPUID words into an EPC section base or size.

    Models: Linux arch/x86/kernel/cpu/sgx/main.c ``sgx_calc_section_metric``:
    ``(low & GENMASK(31,12)) + ((high & GENMASK(19,0)) << 32)``.
    """
    return (low & _genmask(31, 12)) + ((high & _genmask(19, 0)) << 32)


def encode_epc_section(base: int, size: int) -> tuple[int, int, int, int]:
    """CPUID.(0x12, 2+i) (eax, ebx, ecx, edx) words describing one EPC section.

    Models: SDM CPUID leaf 12H sub-leaf >= 2 (EAX[3:0]=1 valid section, EAX[31:12]/EBX[19:0]
    base, ECX[31:12]/EDX[19:0] size, ECX[3:0] = 1 protection property).
    Raises InvalidArgument unless base and size are page-aligned, size > 0 and both < 2**52.
    """
    for name, value in (("base", base), ("size", size)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidArgument(f"EPC section {name} must be an int, got {value!r}")
        if value < 0 or value >= SGX_CPUID_EPC_ADDR_LIMIT or value % PAGE_SIZE:
            raise InvalidArgument(f"EPC section {name}={value:#x} is not a page-aligned value below 2**52")
    if size == 0:
        raise InvalidArgument("EPC section size must be non-zero")
    eax = (base & _genmask(31, 12)) | SGX_CPUID_EPC_SECTION
    ebx = base >> 32
    ecx = (size & _genmask(31, 12)) | SGX_CPUID_EPC_PROTECTED
    edx = size >> 32
    return eax, ebx, ecx, edx


def decode_epc_section(eax: int, ebx: int, ecx: int, edx: int) -> tuple[int, int] | None:
    """(base, size) of the EPC section a CPUID.(0x12, 2+i) sub-leaf describes, None if not a section.

    Models: Linux main.c ``sgx_page_cache_init`` loop: type = EAX & 0xF; INVALID (0) ends the
    enumeration and any other non-SECTION type is rejected, both returned as None here.
    """
    if eax & SGX_CPUID_EPC_MASK != SGX_CPUID_EPC_SECTION:
        return None
    return sgx_calc_section_metric(eax, ebx), sgx_calc_section_metric(ecx, edx)


# --------------------------------------------------------------------------------------------
# TCS, SSA, SIGSTRUCT, launch, MSRs, CPUSVN, measurement
# --------------------------------------------------------------------------------------------

#: TCS.FLAGS: DBGOPTIN (bit 0), AEXNOTIFY (bit 1; SDM "TCS.FLAGS" table); bits 63:2 are reserved.
SGX_TCS_DBGOPTIN = 0x1
SGX_TCS_AEXNOTIFY = 0x2
SGX_TCS_RESERVED_MASK = _genmask(63, 2)
SGX_TCS_RESERVED_SIZE = 4024

SGX_SSA_GPRS_SIZE = 184
SGX_SSA_MISC_EXINFO_SIZE = 16
#: SSA.GPRSGX.AEXNOTIFY: bit 0 of the byte at GPRSGX offset 167 (bit 24 of the u32 at 164), the
#: per-frame AEX-Notify enable (Intel ISE "Asynchronous Enclave Exit Notify"; SDK ``ssa_gpr_t``).
SSA_GPRSGX_AEXNOTIFY = 1 << 24

#: [MODEL] XSAVE standard-format (offset, size) of each XFRM state component above the legacy
#: area and header (CPUID.(0xD, i).EBX/EAX of current Intel parts): the one table both ECREATE's
#: SSA sizing and EENTER/ERESUME's SSA page checks use.
XSAVE_COMPONENTS: Mapping[int, tuple[int, int]] = MappingProxyType(
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
#: x87/SSE legacy area (512 bytes) + XSAVE header (64 bytes).
XSAVE_LEGACY_AND_HEADER_SIZE = 512 + 64


def xsave_size(xfrm: int) -> int:
    """Bytes of the standard-format XSAVE area for the state components in ``xfrm``.

    Models: SDM ECREATE ``compute_xsave_size(XFRM)`` and EENTER/ERESUME ``compute_XSAVE_frame_size``
    (the same function), with :data:`XSAVE_COMPONENTS`.
    """
    size = XSAVE_LEGACY_AND_HEADER_SIZE
    for bit, (offset, length) in XSAVE_COMPONENTS.items():
        if xfrm >> bit & 1:
            size = max(size, offset + length)
    return size


def ssa_frame_bytes_needed(xfrm: int, miscselect: int) -> int:
    """Bytes one SSA frame needs: XSAVE(XFRM) + MISC region (EXINFO if selected) + GPRSGX.

    Models: SDM ECREATE ``TMP_XSIZE`` (SSA frame size check).
    """
    return (
        xsave_size(xfrm) + (SGX_SSA_MISC_EXINFO_SIZE if miscselect & MISC_EXINFO else 0) + SGX_SSA_GPRS_SIZE
    )


def canonical(addr: int) -> bool:
    """True iff a 64-bit linear address is canonical with 48-bit linear addresses (bits 63:47 equal)."""
    top = addr >> 47
    return top == 0 or top == (1 << 17) - 1


#: SSA.GPRSGX.EXITINFO.EXIT_TYPE values (SDM EXITINFO table): hardware / software exception.
SSA_EXIT_TYPE_HARDWARE = 0b011
SSA_EXIT_TYPE_SOFTWARE = 0b110

SIGSTRUCT_HEADER1 = bytes.fromhex("06000000E10000000000010000000000")
SIGSTRUCT_HEADER2 = bytes.fromhex("01010000600000006000000001000000")
SIGSTRUCT_VENDOR_NONE = 0x0000
SIGSTRUCT_VENDOR_INTEL = 0x8086
SIGSTRUCT_VENDORS: frozenset[int] = frozenset({SIGSTRUCT_VENDOR_NONE, SIGSTRUCT_VENDOR_INTEL})
SIGSTRUCT_EXPONENT = 3
SIGSTRUCT_TYPE_DEBUG = 1 << 31
SGX_MODULUS_SIZE = 384
SGX_LAUNCH_TOKEN_SIZE = 304

IA32_SGXLEPUBKEYHASH0 = 0x8C
IA32_SGXLEPUBKEYHASH1 = 0x8D
IA32_SGXLEPUBKEYHASH2 = 0x8E
IA32_SGXLEPUBKEYHASH3 = 0x8F
IA32_SGXLEPUBKEYHASH_MSRS = (
    IA32_SGXLEPUBKEYHASH0,
    IA32_SGXLEPUBKEYHASH1,
    IA32_SGXLEPUBKEYHASH2,
    IA32_SGXLEPUBKEYHASH3,
)

#: 64-bit tags opening each MRENCLAVE update block (reference section 5; little-endian in the block).
MR_ECREATE = 0x0045544145524345  # b"ECREATE\0"
MR_EADD = 0x0000000044444145  # b"EADD\0\0\0\0"
MR_EEXTEND = 0x00444E4554584545  # b"EEXTEND\0"

CPUSVN_SIZE = 16
_BytesLike: TypeAlias = bytes | bytearray | memoryview


def _cpusvn(value: object, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise InvalidArgument(f"{what}: CPUSVN must be bytes, got {type(value).__name__}")
    raw = bytes(value)
    if len(raw) != CPUSVN_SIZE:
        raise InvalidArgument(f"{what}: CPUSVN must be {CPUSVN_SIZE} bytes, got {len(raw)}")
    return raw


def cpusvn_le(a: _BytesLike, b: _BytesLike) -> bool:
    """True iff every one-byte component of CPUSVN ``a`` is <= the same component of ``b``.

    Models: Intel DCAP ``isCpuSvnHigherOrEqual`` (component-wise); [MODEL] for the SDM's
    "CPUSVN beyond the current CPU configuration" = ``not cpusvn_le(requested, current)``.
    """
    ra, rb = _cpusvn(a, "cpusvn_le"), _cpusvn(b, "cpusvn_le")
    return all(x <= y for x, y in zip(ra, rb, strict=True))


def cpusvn_min(svns: Iterable[_BytesLike]) -> bytes:
    """Component-wise minimum of one or more CPUSVNs (the greatest CPUSVN <= all of them)."""
    values = [_cpusvn(s, "cpusvn_min") for s in svns]
    if not values:
        raise InvalidArgument("cpusvn_min: needs at least one CPUSVN, got none")
    return bytes(min(column) for column in zip(*values, strict=True))
