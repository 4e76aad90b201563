"""SGX architectural constants and byte-exact structures: the single source of SGX numbers.

Everything here is a constant, an enum or a frozen dataclass. Names follow the Intel SDM
(Vol. 3D ch. 34-38 "Intel SGX") and Linux ``arch/x86/include/asm/sgx.h``; facts and offsets are
those of ``shared/reference/sgx-architecture.md`` sections 1.1-1.6, 4 and 5.

Structures are frozen dataclasses with keyword fields named after the SDM/kernel struct fields
(``bytes`` for byte arrays, ``int`` for integers). Each has ``SIZE``, ``pack()`` (exactly ``SIZE``
little-endian bytes at the architectural offsets), ``unpack(buf)`` / ``unpack_from(buf, offset)``
and, where an SGX leaf checks reserved fields, ``reserved_ok()``. Every field defaults to zero
(an all-zero structure), except that ``Sigstruct`` defaults its two header constants and its
exponent to the only values EINIT accepts.

A 16-byte architectural ATTRIBUTES value (``flags u64`` at +0, ``xfrm u64`` at +8) is represented
by two ``int`` fields: ``attributes`` (the flags, see :class:`Attributes`) followed by ``xfrm``
(e.g. ``Report.attributes``/``Report.xfrm``; masks are ``attributemask``/``xfrmmask`` etc.).

Constructing a structure with a wrong Python type, a byte string of the wrong length or an
integer that does not fit its field raises :class:`~sgxsim.errors.InvalidArgument`; values that are
architecturally wrong but representable (non-zero reserved bytes, bad headers) are accepted, so
that leaves can return the SDM outcome for them.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import struct
from collections.abc import Iterable
from typing import Any, ClassVar, NamedTuple, Self, TypeAlias, TypeVar, cast

from sgxsim.errors import InvalidArgument, ModelInvariantError

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

SGX_TCS_DBGOPTIN = 0x1
SGX_TCS_RESERVED_MASK = _genmask(63, 1)
SGX_TCS_RESERVED_SIZE = 4024

SGX_SSA_GPRS_SIZE = 184
SGX_SSA_MISC_EXINFO_SIZE = 16
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


# --------------------------------------------------------------------------------------------
# Structure machinery
# --------------------------------------------------------------------------------------------


class FieldSpec(NamedTuple):
    """Where one structure field lives: byte ``offset``, ``size`` and whether it is a byte array."""

    name: str
    offset: int
    size: int
    is_bytes: bool


_INT_SIZES = {"B": 1, "H": 2, "I": 4, "Q": 8}
_FMT_TOKEN = re.compile(r"(\d*)([BHIQs])")
_ZERO_PAGE = bytes(PAGE_SIZE)


class _Packed:
    """Base of the byte-exact structures; subclasses are frozen slotted dataclasses + ``_layout``."""

    __slots__ = ()

    SIZE: ClassVar[int]
    #: ``struct`` format of the fields in declaration order (little-endian, no padding).
    _FMT: ClassVar[str]
    _STRUCT: ClassVar[struct.Struct]
    #: Field layout (name, offset, size, is_bytes) in declaration order.
    FIELDS: ClassVar[tuple[FieldSpec, ...]]

    def __post_init__(self) -> None:
        for spec in self.FIELDS:
            self._check_field(spec, getattr(self, spec.name))

    def _check_field(self, spec: FieldSpec, value: object) -> None:
        cls = type(self).__name__
        if spec.is_bytes:
            if type(value) is not bytes:
                if not isinstance(value, bytes | bytearray | memoryview):
                    raise InvalidArgument(
                        f"{cls}.{spec.name} must be bytes, got {type(value).__name__} {value!r:.60}"
                    )
                value = bytes(value)
                object.__setattr__(self, spec.name, value)
            if len(value) != spec.size:
                raise InvalidArgument(f"{cls}.{spec.name} must be {spec.size} bytes, got {len(value)}")
        else:
            if type(value) is not int:
                if not isinstance(value, int) or isinstance(value, bool):
                    raise InvalidArgument(f"{cls}.{spec.name} must be an int, got {value!r:.60}")
                value = int(value)
                object.__setattr__(self, spec.name, value)
            if value < 0 or value >> (8 * spec.size):
                raise InvalidArgument(f"{cls}.{spec.name}={value:#x} does not fit in {spec.size} bytes")

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, spec.name) for spec in self.FIELDS)

    def pack(self) -> bytes:
        """The structure as exactly ``SIZE`` little-endian bytes at the architectural offsets."""
        return self._STRUCT.pack(*self._values())

    @classmethod
    def _from_values(cls, values: tuple[Any, ...]) -> Self:
        return cast(Any, cls)(*values)  # type: ignore[no-any-return]

    @classmethod
    def unpack(cls, buf: bytes | bytearray | memoryview) -> Self:
        """Parse exactly ``SIZE`` bytes. Raises InvalidArgument for a non-buffer or a wrong length."""
        if not isinstance(buf, bytes | bytearray | memoryview):
            raise InvalidArgument(f"{cls.__name__}.unpack needs bytes, got {type(buf).__name__}")
        n = buf.nbytes if isinstance(buf, memoryview) else len(buf)
        if n != cls.SIZE:
            raise InvalidArgument(f"{cls.__name__}.unpack needs {cls.SIZE} bytes, got {n}")
        return cls._from_values(cls._STRUCT.unpack(buf))

    @classmethod
    def unpack_from(cls, buf: bytes | bytearray | memoryview, offset: int = 0) -> Self:
        """Parse ``SIZE`` bytes of ``buf`` starting at ``offset`` (e.g. a structure inside a page)."""
        if not isinstance(buf, bytes | bytearray | memoryview):
            raise InvalidArgument(f"{cls.__name__}.unpack_from needs bytes, got {type(buf).__name__}")
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise InvalidArgument(f"{cls.__name__}.unpack_from: bad offset {offset!r}")
        n = buf.nbytes if isinstance(buf, memoryview) else len(buf)
        if offset + cls.SIZE > n:
            raise InvalidArgument(
                f"{cls.__name__}.unpack_from needs {cls.SIZE} bytes at offset {offset}, buffer has {n}"
            )
        return cls._from_values(cls._STRUCT.unpack_from(buf, offset))

    @classmethod
    def offsetof(cls, name: str) -> int:
        """Byte offset of field ``name``."""
        for spec in cls.FIELDS:
            if spec.name == name:
                return spec.offset
        raise InvalidArgument(f"{cls.__name__} has no field {name!r}")


_P = TypeVar("_P", bound=type[_Packed])


def _layout(cls: _P) -> _P:
    """Derive ``_STRUCT`` and ``FIELDS`` from ``_FMT`` and the dataclass fields; check ``SIZE``."""
    names = [f.name for f in dataclasses.fields(cast(Any, cls))]
    fmt = cls._FMT
    if not fmt.startswith("<"):
        raise ModelInvariantError(f"{cls.__name__}: format must be little-endian")
    tokens = _FMT_TOKEN.findall(fmt[1:])
    if "".join(c + k for c, k in tokens) != fmt[1:] or len(tokens) != len(names):
        raise ModelInvariantError(f"{cls.__name__}: format {fmt!r} does not match fields {names}")
    specs = []
    offset = 0
    for name, (count, code) in zip(names, tokens, strict=True):
        if code == "s":
            size, is_bytes = int(count or "1"), True
        else:
            if count:
                raise ModelInvariantError(f"{cls.__name__}.{name}: repeated integer codes are not supported")
            size, is_bytes = _INT_SIZES[code], False
        specs.append(FieldSpec(name, offset, size, is_bytes))
        offset += size
    compiled = struct.Struct(fmt)
    if compiled.size != cls.SIZE or offset != cls.SIZE:
        raise ModelInvariantError(f"{cls.__name__}: layout is {compiled.size} bytes, SIZE is {cls.SIZE}")
    cls._STRUCT = compiled
    cls.FIELDS = tuple(specs)
    return cls


def _zero(n: int) -> Any:
    return dataclasses.field(default=bytes(n))


def _all_zero(*chunks: bytes) -> bool:
    return all(chunk == _ZERO_PAGE[: len(chunk)] for chunk in chunks)


# --------------------------------------------------------------------------------------------
# Structures
# --------------------------------------------------------------------------------------------


@_layout
@dataclasses.dataclass(frozen=True, slots=True)
class Secs(_Packed):
    """SGX Enclave Control Structure (4096 bytes).

    Models: SDM Table "Layout of SGX Enclave Control Structure (SECS)"; kernel ``struct sgx_secs``
    (field names as the kernel's). ``ssa_frame_size`` is in pages.
    """

    SIZE: ClassVar[int] = 4096
    _FMT: ClassVar[str] = "<QQII24sQQ32s32s32s32s64sHHH3834s"

    size: int = 0
    base: int = 0
    ssa_frame_size: int = 0
    miscselect: int = 0
    reserved1: bytes = _zero(24)
    attributes: int = 0
    xfrm: int = 0
    mrenclave: bytes = _zero(32)
    reserved2: bytes = _zero(32)
    mrsigner: bytes = _zero(32)
    reserved3: bytes = _zero(32)
    config_id: bytes = _zero(64)
    isv_prod_id: int = 0
    isv_svn: int = 0
    config_svn: int = 0
    reserved4: bytes = _zero(3834)

    def reserved_ok(self) -> bool:
        """True iff reserved1..reserved4 are all zero (ECREATE #GP otherwise)."""
        return _all_zero(self.reserved1, self.reserved2, self.reserved3, self.reserved4)


@_layout
@dataclasses.dataclass(frozen=True, slots=True)
class Tcs(_Packed):
    """Thread Control Structure (4096 bytes).

    Models: SDM Table "Layout of Thread Control Structure (TCS)"; kernel ``struct sgx_tcs``
    (``ssa_offset``=``ossa``, ``ssa_index``=``cssa``, ``nr_ssa_frames``=``nssa``,
    ``entry_offset``=``oentry``, ``exit_addr``=``aep``, ``fs_offset``=``ofsbase``,
    ``gs_offset``=``ogsbase``, ``fs_limit``/``gs_limit``=``fslimit``/``gslimit``).
    """

    SIZE: ClassVar[int] = 4096
    _FMT: ClassVar[str] = "<QQQIIQQQQII4024s"

    state: int = 0
    flags: int = 0
    ossa: int = 0
    cssa: int = 0
    nssa: int = 0
    oentry: int = 0
    aep: int = 0
    ofsbase: int = 0
    ogsbase: int = 0
    fslimit: int = 0
    gslimit: int = 0
    reserved: bytes = _zero(SGX_TCS_RESERVED_SIZE)

    def reserved_ok(self) -> bool:
        """True iff FLAGS bits 63:1 and the 4024 reserved bytes are zero (EADD/EENTER #GP otherwise)."""
        return not self.flags & SGX_TCS_RESERVED_MASK and _all_zero(self.reserved)


@_layout
@dataclasses.dataclass(frozen=True, slots=True)
class Secinfo(_Packed):
    """Security information of an EPC page (64 bytes): FLAGS u64 + 56 reserved bytes.

    Models: SDM Table "Layout of Security Information (SECINFO) Data Structure"; kernel
    ``struct sgx_secinfo``.
    """

    SIZE: ClassVar[int] = 64
    _FMT: ClassVar[str] = "<Q56s"

    flags: int = 0
    reserved: bytes = _zero(56)

    @property
    def page_type(self) -> int:
        """FLAGS.PAGE_TYPE (bits 15:8)."""
        return secinfo_page_type(self.flags)

    @property
    def perms(self) -> int:
        """FLAGS R/W/X bits (2:0)."""
        return self.flags & SECINFO_PERMISSION_MASK

    def reserved_ok(self) -> bool:
        """True iff the 56 reserved bytes and the reserved FLAGS bits (7:6, 63:16) are zero.

        Models: SDM EADD/EMODPR/EMODT/EACCEPT "SECINFO reserved fields are not zero => #GP".
        The kernel's stricter EADD view (PENDING/MODIFIED/PR too) is ``SECINFO_RESERVED_MASK``.
        """
        return not self.flags & SECINFO_FLAGS_ARCH_RESERVED_MASK and _all_zero(self.reserved)


@_layout
@dataclasses.dataclass(frozen=True, slots=True)
class Pageinfo(_Packed):
    """Paging/creation parameter block (32 bytes): four effective addresses.

    Models: SDM Table "Layout of PAGEINFO Data Structure"; kernel ``struct sgx_pageinfo``
    (``addr``=``linaddr``, ``contents``=``srcpge``, ``metadata``=``secinfo``). For EWB/ELDU the
    ``secinfo`` slot holds the PCMD address (``pcmd`` property).
    """

    SIZE: ClassVar[int] = 32
    _FMT: ClassVar[str] = "<QQQQ"

    linaddr: int = 0
    srcpge: int = 0
    secinfo: int = 0
    secs: int = 0

    @property
    def pcmd(self) -> int:
        """The PCMD pointer (same slot as ``secinfo``; EWB/ELDB/ELDU)."""
        return self.secinfo

    @property
    def metadata(self) -> int:
        """The kernel's name for the SECINFO/PCMD slot."""
        return self.secinfo


@_layout
@dataclasses.dataclass(frozen=True, slots=True)
class Pcmd(_Packed):
    """Paging Crypto MetaData (128 bytes) written by EWB and checked by ELDB/ELDU.

    Models: SDM Table "Layout of PCMD Data Structure"; kernel ``struct sgx_pcmd``. ``secinfo`` is
    a :class:`Secinfo` (bytes of length 64 are accepted and parsed).
    """

    SIZE: ClassVar[int] = 128
    _FMT: ClassVar[str] = "<64sQ40s16s"

    secinfo: Secinfo = dataclasses.field(default_factory=Secinfo)
    enclave_id: int = 0
    reserved: bytes = _zero(40)
    mac: bytes = _zero(16)

    def __post_init__(self) -> None:
        value: object = self.secinfo
        if isinstance(value, bytes | bytearray | memoryview):
            n = value.nbytes if isinstance(value, memoryview) else len(value)
            if n != Secinfo.SIZE:
                raise InvalidArgument(
                    f"Pcmd.secinfo must be a Secinfo or {Secinfo.SIZE} bytes, got {n} bytes"
                )
            object.__setattr__(self, "secinfo", Secinfo.unpack(value))
        elif not isinstance(value, Secinfo):
            raise InvalidArgument(f"Pcmd.secinfo must be a Secinfo or 64 bytes, got {value!r:.60}")
        for spec in self.FIELDS[1:]:
            self._check_field(spec, getattr(self, spec.name))

    def _values(self) -> tuple[Any, ...]:
        return (self.secinfo.pack(), self.enclave_id, self.reserved, self.mac)


@_layout
@dataclasses.dataclass(frozen=True, slots=True)
class Sigstruct(_Packed):
    """Enclave signature structure (1808 bytes).

    Models: SDM Table "Layout of Enclave Signature Structure (SIGSTRUCT)"; kernel
    ``struct sgx_sigstruct`` (header/body flattened). The kernel's ``reserved2[20]`` is split per the
    KSS layout into ``reserved2`` (4 bytes @908) + ``isvfamilyid`` (16 @912), and ``reserved3[32]``
    into ``reserved3`` (16 @992) + ``isvextprodid`` (16 @1008). ``modulus``, ``signature``, ``q1``
    and ``q2`` are 384-byte little-endian integers as stored. Defaults: ``header1``/``header2`` are
    the architectural constants and ``exponent`` is 3; everything else is zero.
    """

    SIZE: ClassVar[int] = 1808
    _FMT: ClassVar[str] = "<16sII16sI84s384sI384sII4s16sQQQQ32s16s16sHH12s384s384s"

    header1: bytes = SIGSTRUCT_HEADER1
    vendor: int = 0
    date: int = 0
    header2: bytes = SIGSTRUCT_HEADER2
    swdefined: int = 0
    reserved1: bytes = _zero(84)
    modulus: bytes = _zero(SGX_MODULUS_SIZE)
    exponent: int = SIGSTRUCT_EXPONENT
    signature: bytes = _zero(SGX_MODULUS_SIZE)
    miscselect: int = 0
    misc_mask: int = 0
    reserved2: bytes = _zero(4)
    isvfamilyid: bytes = _zero(16)
    attributes: int = 0
    xfrm: int = 0
    attributes_mask: int = 0
    xfrm_mask: int = 0
    mrenclave: bytes = _zero(32)
    reserved3: bytes = _zero(16)
    isvextprodid: bytes = _zero(16)
    isvprodid: int = 0
    isvsvn: int = 0
    reserved4: bytes = _zero(12)
    q1: bytes = _zero(SGX_MODULUS_SIZE)
    q2: bytes = _zero(SGX_MODULUS_SIZE)

    HEADER_END: ClassVar[int] = 128
    BODY_START: ClassVar[int] = 900
    BODY_END: ClassVar[int] = 1028

    def signed_data(self) -> bytes:
        """The 256 signed bytes: header (bytes 0..127) followed by body (bytes 900..1027)."""
        raw = self.pack()
        return raw[: self.HEADER_END] + raw[self.BODY_START : self.BODY_END]

    @property
    def type(self) -> int:
        """Header bytes 12..15 as a u32 (Intel SDK ``css_header_t.type``; part of HEADER1 for EINIT)."""
        return int.from_bytes(self.header1[12:16], "little")

    @property
    def debug(self) -> bool:
        """Bit 31 of ``type`` (SDK debug-signing marker). EINIT only accepts the exact HEADER1."""
        return bool(self.type & SIGSTRUCT_TYPE_DEBUG)

    @property
    def modulus_int(self) -> int:
        """MODULUS as an integer (stored little-endian)."""
        return int.from_bytes(self.modulus, "little")

    @property
    def signature_int(self) -> int:
        """SIGNATURE as an integer (stored little-endian)."""
        return int.from_bytes(self.signature, "little")

    def header_ok(self) -> bool:
        """True iff HEADER1, VENDOR, HEADER2 and EXPONENT have the only values EINIT accepts."""
        return (
            self.header1 == SIGSTRUCT_HEADER1
            and self.vendor in SIGSTRUCT_VENDORS
            and self.header2 == SIGSTRUCT_HEADER2
            and self.exponent == SIGSTRUCT_EXPONENT
        )

    def reserved_ok(self) -> bool:
        """True iff reserved1 (84), reserved2 (4), reserved3 (16) and reserved4 (12) are zero.

        ISVFAMILYID/ISVEXTPRODID are not reserved (EINIT checks ISVFAMILYID against KSS separately).
        """
        return _all_zero(self.reserved1, self.reserved2, self.reserved3, self.reserved4)


@_layout
@dataclasses.dataclass(frozen=True, slots=True)
class EinitToken(_Packed):
    """Launch token (304 bytes) checked by EINIT when ``valid`` bit 0 is set.

    Models: SDM Table "Layout of EINIT Token (EINITTOKEN)". ``attributes``/``xfrm`` and
    ``maskedattributesle``/``maskedxfrmle`` are the two u64 halves of the 16-byte ATTRIBUTES fields.
    """

    SIZE: ClassVar[int] = 304
    _FMT: ClassVar[str] = "<I44sQQ32s32s32s32s16sHH24sIQQ32s16s"

    valid: int = 0
    reserved1: bytes = _zero(44)
    attributes: int = 0
    xfrm: int = 0
    mrenclave: bytes = _zero(32)
    reserved2: bytes = _zero(32)
    mrsigner: bytes = _zero(32)
    reserved3: bytes = _zero(32)
    cpusvnle: bytes = _zero(CPUSVN_SIZE)
    isvprodidle: int = 0
    isvsvnle: int = 0
    reserved4: bytes = _zero(24)
    maskedmiscselectle: int = 0
    maskedattributesle: int = 0
    maskedxfrmle: int = 0
    keyid: bytes = _zero(32)
    mac: bytes = _zero(16)

    MAC_END: ClassVar[int] = 192

    def body(self) -> bytes:
        """Bytes 0..191, the CMAC input of ``mac``."""
        return self.pack()[: self.MAC_END]

    def reserved_ok(self) -> bool:
        """True iff VALID bits 31:1 and reserved1..reserved4 are zero (EINIT: SGX_INVALID_EINITTOKEN)."""
        return not self.valid & ~1 and _all_zero(
            self.reserved1, self.reserved2, self.reserved3, self.reserved4
        )


@_layout
@dataclasses.dataclass(frozen=True, slots=True)
class Report(_Packed):
    """EREPORT output (432 bytes): the 384-byte body, KEYID and the CMAC.

    Models: SDM Table "Layout of REPORT"; Intel SDK ``sgx_report_t``.
    """

    SIZE: ClassVar[int] = 432
    _FMT: ClassVar[str] = "<16sI12s16sQQ32s32s32s32s64sHHH42s16s64s32s16s"

    cpusvn: bytes = _zero(CPUSVN_SIZE)
    miscselect: int = 0
    reserved1: bytes = _zero(12)
    isvextprodid: bytes = _zero(16)
    attributes: int = 0
    xfrm: int = 0
    mrenclave: bytes = _zero(32)
    reserved2: bytes = _zero(32)
    mrsigner: bytes = _zero(32)
    reserved3: bytes = _zero(32)
    configid: bytes = _zero(64)
    isvprodid: int = 0
    isvsvn: int = 0
    configsvn: int = 0
    reserved4: bytes = _zero(42)
    isvfamilyid: bytes = _zero(16)
    reportdata: bytes = _zero(64)
    keyid: bytes = _zero(32)
    mac: bytes = _zero(16)

    BODY_SIZE: ClassVar[int] = 384

    def body(self) -> bytes:
        """Bytes 0..383, the CMAC input of ``mac``."""
        return self.pack()[: self.BODY_SIZE]


@_layout
@dataclasses.dataclass(frozen=True, slots=True)
class Targetinfo(_Packed):
    """EREPORT target description (512 bytes), newer layout with CONFIGSVN/CONFIGID.

    Models: SDM Table "Layout of TARGETINFO Data Structure"; Intel SDK ``sgx_target_info_t``.
    ``reserved1`` covers bytes 48..49 (CET_ATTRIBUTES on CET parts, not modelled).
    """

    SIZE: ClassVar[int] = 512
    _FMT: ClassVar[str] = "<32sQQ2sHI8s64s384s"

    measurement: bytes = _zero(32)
    attributes: int = 0
    xfrm: int = 0
    reserved1: bytes = _zero(2)
    config_svn: int = 0
    miscselect: int = 0
    reserved2: bytes = _zero(8)
    config_id: bytes = _zero(64)
    reserved3: bytes = _zero(384)

    def reserved_ok(self) -> bool:
        """True iff reserved1..reserved3 are zero (EREPORT #GP otherwise)."""
        return _all_zero(self.reserved1, self.reserved2, self.reserved3)


@_layout
@dataclasses.dataclass(frozen=True, slots=True)
class Keyrequest(_Packed):
    """EGETKEY request (512 bytes).

    Models: SDM Table "Layout of KEYREQUEST Data Structure". ``attributemask``/``xfrmmask`` are the
    two u64 halves of the 16-byte ATTRIBUTEMASK.
    """

    SIZE: ClassVar[int] = 512
    _FMT: ClassVar[str] = "<HHHH16sQQ32sIH434s"

    keyname: int = 0
    keypolicy: int = 0
    isvsvn: int = 0
    reserved1: int = 0
    cpusvn: bytes = _zero(CPUSVN_SIZE)
    attributemask: int = 0
    xfrmmask: int = 0
    keyid: bytes = _zero(32)
    miscmask: int = 0
    configsvn: int = 0
    reserved2: bytes = _zero(434)

    def reserved_ok(self) -> bool:
        """True iff reserved1 and reserved2 are zero (EGETKEY #GP otherwise; policy bits: see masks)."""
        return self.reserved1 == 0 and _all_zero(self.reserved2)


@_layout
@dataclasses.dataclass(frozen=True, slots=True)
class SsaGpr(_Packed):
    """GPRSGX area of an SSA frame (last 184 bytes of the frame).

    Models: SDM Table "Layout of GPRSGX Portion of the State Save Area"; Intel SDK ``ssa_gpr_t``.
    ``exitinfo`` is the u32 EXITINFO (vector bits 7:0, exit_type bits 10:8, valid bit 31).
    """

    SIZE: ClassVar[int] = SGX_SSA_GPRS_SIZE
    _FMT: ClassVar[str] = "<" + "Q" * 20 + "IIQQ"

    rax: int = 0
    rcx: int = 0
    rdx: int = 0
    rbx: int = 0
    rsp: int = 0
    rbp: int = 0
    rsi: int = 0
    rdi: int = 0
    r8: int = 0
    r9: int = 0
    r10: int = 0
    r11: int = 0
    r12: int = 0
    r13: int = 0
    r14: int = 0
    r15: int = 0
    rflags: int = 0
    rip: int = 0
    ursp: int = 0
    urbp: int = 0
    exitinfo: int = 0
    reserved: int = 0
    fsbase: int = 0
    gsbase: int = 0

    @property
    def exit_vector(self) -> int:
        """EXITINFO.VECTOR (bits 7:0)."""
        return self.exitinfo & 0xFF

    @property
    def exit_type(self) -> int:
        """EXITINFO.EXIT_TYPE (bits 10:8)."""
        return (self.exitinfo >> 8) & 0x7

    @property
    def exit_valid(self) -> bool:
        """EXITINFO.VALID (bit 31)."""
        return bool(self.exitinfo >> 31 & 1)


def ssa_exitinfo(vector: int, exit_type: int, valid: bool = True) -> int:
    """Encode SSA.GPRSGX.EXITINFO: VECTOR bits 7:0, EXIT_TYPE bits 10:8, VALID bit 31.

    Models: SDM Table "Layout of EXITINFO Field". Raises InvalidArgument if a part does not fit.
    """
    if not isinstance(vector, int) or isinstance(vector, bool) or not 0 <= vector <= 0xFF:
        raise InvalidArgument(f"ssa_exitinfo: vector={vector!r} does not fit 8 bits")
    if not isinstance(exit_type, int) or isinstance(exit_type, bool) or not 0 <= exit_type <= 0x7:
        raise InvalidArgument(f"ssa_exitinfo: exit_type={exit_type!r} does not fit 3 bits")
    return int(vector) | (int(exit_type) << 8) | (int(bool(valid)) << 31)


@_layout
@dataclasses.dataclass(frozen=True, slots=True)
class MiscExinfo(_Packed):
    """MISC.EXINFO area (16 bytes, just below GPRSGX when MISCSELECT.EXINFO=1).

    Models: SDM Table "Layout of EXINFO Structure" (MADDR u64, ERRCD u32, reserved u32);
    [UNVERIFIED] in the reference notes.
    """

    SIZE: ClassVar[int] = SGX_SSA_MISC_EXINFO_SIZE
    _FMT: ClassVar[str] = "<QII"

    maddr: int = 0
    errcd: int = 0
    reserved: int = 0


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
    "XFRM_LEGACY",
    "Attributes",
    "EinitToken",
    "EnclsLeaf",
    "EncluLeaf",
    "Fault",
    "FieldSpec",
    "KeyName",
    "KeyPolicy",
    "Keyrequest",
    "LeafResult",
    "MiscExinfo",
    "PageType",
    "Pageinfo",
    "Pcmd",
    "PfError",
    "Report",
    "Secinfo",
    "SecinfoFlags",
    "Secs",
    "SgxStatus",
    "Sigstruct",
    "SsaGpr",
    "Targetinfo",
    "Tcs",
    "Vector",
    "cpusvn_le",
    "cpusvn_min",
    "decode_epc_section",
    "encode_epc_section",
    "gp0",
    "pf",
    "secinfo_flags",
    "secinfo_page_type",
    "sgx_calc_section_metric",
    "ssa_exitinfo",
]
