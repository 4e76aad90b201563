"""SGX byte-exact structures (SECS, TCS, SECINFO, PAGEINFO, PCMD, SIGSTRUCT, ... SSA GPRSGX).

See :mod:`sgxsim.hw.arch` for the conventions every structure follows.
Models: Intel SDM Vol. 3D ch. 34 "SGX data structures"; Linux ``arch/x86/include/asm/sgx.h``.
"""

from __future__ import annotations

import dataclasses
import re
import struct
from typing import Any, ClassVar, NamedTuple, Self, TypeVar, cast

from sgxsim.errors import InvalidArgument, ModelInvariantError
from sgxsim.hw.arch.consts import (
    CPUSVN_SIZE,
    PAGE_SIZE,
    SECINFO_FLAGS_ARCH_RESERVED_MASK,
    SECINFO_PERMISSION_MASK,
    SGX_MODULUS_SIZE,
    SGX_SSA_GPRS_SIZE,
    SGX_SSA_MISC_EXINFO_SIZE,
    SGX_TCS_RESERVED_MASK,
    SGX_TCS_RESERVED_SIZE,
    SIGSTRUCT_EXPONENT,
    SIGSTRUCT_HEADER1,
    SIGSTRUCT_HEADER2,
    SIGSTRUCT_TYPE_DEBUG,
    SIGSTRUCT_VENDORS,
    secinfo_page_type,
)

__all__ = [
    "EinitToken",
    "FieldSpec",
    "Keyrequest",
    "MiscExinfo",
    "Pageinfo",
    "Pcmd",
    "Report",
    "Secinfo",
    "Secs",
    "Sigstruct",
    "SsaGpr",
    "Targetinfo",
    "Tcs",
    "ssa_exitinfo",
]


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
        """True iff FLAGS bits 63:2 and the 4024 reserved bytes are zero (EADD/EENTER #GP otherwise)."""
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
