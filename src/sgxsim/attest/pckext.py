"""The Intel SGX extension of a PCK certificate (OID 1.2.840.113741.1.13.1), DER in and out.

A tiny strict DER codec (definite minimal lengths, single-byte tags, minimal INTEGERs)
is enough for this extension; it also serves the verifier, which must read the
extension of an untrusted certificate without raising anything but
``VerificationError(MALFORMED_PCK_EXTENSION)``.

Layout (Intel SGX PCK Certificate and CRL Profile; the OIDs as read by
``Phala-Network/dcap-qvl`` src/oids.rs): ``SEQUENCE OF SEQUENCE { OID, value }`` with
.1 PPID (OCTET STRING 16), .2 TCB (SEQUENCE OF { OID .2.n, INTEGER } for n = 1..16,
.2.17 PCESVN INTEGER, .2.18 CPUSVN OCTET STRING 16), .3 PCE-ID (OCTET STRING 2),
.4 FMSPC (OCTET STRING 6), .5 SGX Type (ENUMERATED: 0 Standard, 1 Scalable,
2 Scalable with integrity), and for Platform-CA certificates .6 Platform Instance ID
(OCTET STRING 16) and .7 Configuration (SEQUENCE { .7.1 dynamicPlatform, .7.2
cachedKeys, .7.3 SMTEnabled }, each BOOLEAN).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sgxsim.attest.reasons import VerificationReason
from sgxsim.errors import InvalidArgument, VerificationError

__all__ = [
    "OID_CONFIGURATION",
    "OID_CPUSVN",
    "OID_FMSPC",
    "OID_PCEID",
    "OID_PCESVN",
    "OID_PLATFORM_INSTANCE_ID",
    "OID_PPID",
    "OID_SGX_EXTENSION",
    "OID_SGX_TYPE",
    "OID_TCB",
    "DerError",
    "PckExtension",
    "SgxType",
    "der_boolean",
    "der_children",
    "der_enumerated",
    "der_integer",
    "der_octet_string",
    "der_oid",
    "der_read",
    "der_sequence",
    "oid_from_der",
]

OID_SGX_EXTENSION = "1.2.840.113741.1.13.1"
OID_PPID = OID_SGX_EXTENSION + ".1"
OID_TCB = OID_SGX_EXTENSION + ".2"
OID_PCESVN = OID_TCB + ".17"
OID_CPUSVN = OID_TCB + ".18"
OID_PCEID = OID_SGX_EXTENSION + ".3"
OID_FMSPC = OID_SGX_EXTENSION + ".4"
OID_SGX_TYPE = OID_SGX_EXTENSION + ".5"
OID_PLATFORM_INSTANCE_ID = OID_SGX_EXTENSION + ".6"
OID_CONFIGURATION = OID_SGX_EXTENSION + ".7"
OID_DYNAMIC_PLATFORM = OID_CONFIGURATION + ".1"
OID_CACHED_KEYS = OID_CONFIGURATION + ".2"
OID_SMT_ENABLED = OID_CONFIGURATION + ".3"

TAG_BOOLEAN = 0x01
TAG_INTEGER = 0x02
TAG_OCTET_STRING = 0x04
TAG_OID = 0x06
TAG_ENUMERATED = 0x0A
TAG_SEQUENCE = 0x30

TCB_COMPONENTS = 16


class DerError(ValueError):
    """Bytes that are not strict DER (raised by the reader; callers translate it)."""


class SgxType(enum.IntEnum):
    """The SGX Type ENUMERATED of the PCK extension."""

    STANDARD = 0
    SCALABLE = 1
    SCALABLE_WITH_INTEGRITY = 2


# ---------------------------------------------------------------- DER writer


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(content)) + content


def der_integer(value: int) -> bytes:
    """DER INTEGER (two's complement, minimal)."""
    length = max(1, (value.bit_length() + 8) // 8)
    return _tlv(TAG_INTEGER, value.to_bytes(length, "big", signed=True))


def der_enumerated(value: int) -> bytes:
    """DER ENUMERATED (same content rules as INTEGER)."""
    return bytes([TAG_ENUMERATED]) + der_integer(value)[1:]


def der_boolean(value: bool) -> bytes:
    """DER BOOLEAN (TRUE is 0xFF)."""
    return _tlv(TAG_BOOLEAN, b"\xff" if value else b"\x00")


def der_octet_string(value: bytes) -> bytes:
    """DER OCTET STRING."""
    return _tlv(TAG_OCTET_STRING, bytes(value))


def der_sequence(*items: bytes) -> bytes:
    """DER SEQUENCE of already-encoded items."""
    return _tlv(TAG_SEQUENCE, b"".join(items))


def der_oid(dotted: str) -> bytes:
    """DER OBJECT IDENTIFIER from dotted decimal."""
    arcs = [int(a) for a in dotted.split(".")]
    if len(arcs) < 2 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] >= 40):
        raise InvalidArgument(f"bad OID {dotted!r}")
    out = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return _tlv(TAG_OID, bytes(out))


# ---------------------------------------------------------------- DER reader


def der_read(buf: bytes, offset: int = 0) -> tuple[int, bytes, int]:
    """Read one TLV at ``offset``: ``(tag, content, next_offset)``; raises :class:`DerError`."""
    if offset + 2 > len(buf):
        raise DerError("truncated TLV header")
    tag = buf[offset]
    if tag & 0x1F == 0x1F:
        raise DerError("multi-byte tags are not used here")
    first = buf[offset + 1]
    pos = offset + 2
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise DerError("indefinite length is not DER")
    else:
        nbytes = first & 0x7F
        if nbytes > 4 or pos + nbytes > len(buf):
            raise DerError("bad long-form length")
        length = int.from_bytes(buf[pos : pos + nbytes], "big")
        if buf[pos] == 0 or length < 0x80:
            raise DerError("non-minimal length")
        pos += nbytes
    end = pos + length
    if end > len(buf):
        raise DerError("content runs past the end")
    return tag, bytes(buf[pos:end]), end


def der_children(content: bytes) -> list[tuple[int, bytes]]:
    """The TLVs that exactly fill ``content`` (the inside of a constructed value)."""
    items: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(content):
        tag, value, pos = der_read(content, pos)
        items.append((tag, value))
    return items


def oid_from_der(content: bytes) -> str:
    """Dotted decimal from OBJECT IDENTIFIER content bytes."""
    if not content or content[-1] & 0x80:
        raise DerError("bad OID encoding")
    arcs: list[int] = []
    value = 0
    fresh = True
    for byte in content:
        if fresh and byte == 0x80:
            raise DerError("non-minimal OID arc")
        value = (value << 7) | (byte & 0x7F)
        fresh = not byte & 0x80
        if fresh:
            arcs.append(value)
            value = 0
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(a) for a in head + arcs[1:])


def _integer_from_der(content: bytes, *, what: str) -> int:
    if not content:
        raise DerError(f"{what}: empty INTEGER")
    if len(content) > 1 and (
        (content[0] == 0 and not content[1] & 0x80) or (content[0] == 0xFF and content[1] & 0x80)
    ):
        raise DerError(f"{what}: non-minimal INTEGER")
    value = int.from_bytes(content, "big", signed=True)
    if value < 0:
        raise DerError(f"{what}: negative")
    return value


def _expect(tag: int, want: int, what: str) -> None:
    if tag != want:
        raise DerError(f"{what}: tag 0x{tag:02x}, expected 0x{want:02x}")


def _pairs(content: bytes, what: str) -> dict[str, tuple[int, bytes]]:
    """``SEQUENCE OF SEQUENCE { OID, value }`` content -> {oid: (tag, value)}; no duplicates."""
    out: dict[str, tuple[int, bytes]] = {}
    for tag, inner in der_children(content):
        _expect(tag, TAG_SEQUENCE, what)
        parts = der_children(inner)
        if len(parts) != 2:
            raise DerError(f"{what}: entry with {len(parts)} elements")
        _expect(parts[0][0], TAG_OID, what)
        oid = oid_from_der(parts[0][1])
        if oid in out:
            raise DerError(f"{what}: duplicate {oid}")
        out[oid] = parts[1]
    return out


# ---------------------------------------------------------------- the extension


@dataclass(frozen=True)
class PckExtension:
    """Values of a PCK certificate's SGX extension.

    ``tcb_components`` are the 16 ``sgxtcbcompNNsvn`` INTEGERs the verifier matches
    against TCB Info (QVL ``TcbLevelCheck``); ``cpusvn`` is the raw CPUSVN the PCK
    certificate was issued for (for ``tcbType`` 0 it equals the 16 components).
    ``configuration`` is ``(dynamic_platform, cached_keys, smt_enabled)`` or ``None``.
    """

    ppid: bytes
    tcb_components: tuple[int, ...]
    pcesvn: int
    cpusvn: bytes
    pce_id: bytes
    fmspc: bytes
    sgx_type: int = SgxType.STANDARD
    platform_instance_id: bytes | None = None
    configuration: tuple[bool, bool, bool] | None = None

    def __post_init__(self) -> None:
        for name, value, size in (
            ("ppid", self.ppid, 16),
            ("cpusvn", self.cpusvn, 16),
            ("pce_id", self.pce_id, 2),
            ("fmspc", self.fmspc, 6),
        ):
            if not isinstance(value, bytes) or len(value) != size:
                raise InvalidArgument(f"PckExtension.{name} must be {size} bytes, got {value!r}")
        comps = self.tcb_components
        if (
            not isinstance(comps, tuple)
            or len(comps) != TCB_COMPONENTS
            or not all(isinstance(c, int) and 0 <= c <= 255 for c in comps)
        ):
            raise InvalidArgument(f"tcb_components must be 16 ints in 0..255, got {comps!r}")
        if not isinstance(self.pcesvn, int) or not 0 <= self.pcesvn <= 0xFFFF:
            raise InvalidArgument(f"pcesvn must be a u16, got {self.pcesvn!r}")
        if not isinstance(self.sgx_type, int) or not 0 <= self.sgx_type <= 0x7FFF:
            raise InvalidArgument(f"sgx_type out of range: {self.sgx_type!r}")
        pid = self.platform_instance_id
        if pid is not None and (not isinstance(pid, bytes) or len(pid) != 16):
            raise InvalidArgument(f"platform_instance_id must be 16 bytes, got {pid!r}")

    @classmethod
    def for_tcb(
        cls,
        *,
        ppid: bytes,
        cpusvn: bytes,
        pcesvn: int,
        pce_id: bytes,
        fmspc: bytes,
        sgx_type: int = SgxType.STANDARD,
        platform_instance_id: bytes | None = None,
        configuration: tuple[bool, bool, bool] | None = None,
    ) -> PckExtension:
        """An extension for TCB type 0: the 16 components are the CPUSVN bytes."""
        if not isinstance(cpusvn, bytes) or len(cpusvn) != 16:
            raise InvalidArgument(f"cpusvn must be 16 bytes, got {cpusvn!r}")
        return cls(
            ppid=ppid,
            tcb_components=tuple(cpusvn),
            pcesvn=pcesvn,
            cpusvn=cpusvn,
            pce_id=pce_id,
            fmspc=fmspc,
            sgx_type=sgx_type,
            platform_instance_id=platform_instance_id,
            configuration=configuration,
        )

    def encode(self) -> bytes:
        """The extension value (the DER inside the X.509 extension's OCTET STRING)."""
        tcb_items = [
            der_sequence(der_oid(f"{OID_TCB}.{i + 1}"), der_integer(svn))
            for i, svn in enumerate(self.tcb_components)
        ]
        tcb_items.append(der_sequence(der_oid(OID_PCESVN), der_integer(self.pcesvn)))
        tcb_items.append(der_sequence(der_oid(OID_CPUSVN), der_octet_string(self.cpusvn)))
        items = [
            der_sequence(der_oid(OID_PPID), der_octet_string(self.ppid)),
            der_sequence(der_oid(OID_TCB), der_sequence(*tcb_items)),
            der_sequence(der_oid(OID_PCEID), der_octet_string(self.pce_id)),
            der_sequence(der_oid(OID_FMSPC), der_octet_string(self.fmspc)),
            der_sequence(der_oid(OID_SGX_TYPE), der_enumerated(self.sgx_type)),
        ]
        if self.platform_instance_id is not None:
            items.append(
                der_sequence(der_oid(OID_PLATFORM_INSTANCE_ID), der_octet_string(self.platform_instance_id))
            )
        if self.configuration is not None:
            flags = zip(
                (OID_DYNAMIC_PLATFORM, OID_CACHED_KEYS, OID_SMT_ENABLED), self.configuration, strict=True
            )
            items.append(
                der_sequence(
                    der_oid(OID_CONFIGURATION),
                    der_sequence(*(der_sequence(der_oid(o), der_boolean(v)) for o, v in flags)),
                )
            )
        return der_sequence(*items)

    @classmethod
    def decode(cls, der: bytes) -> PckExtension:
        """Parse an extension value; any defect -> ``VerificationError(MALFORMED_PCK_EXTENSION)``."""
        if not isinstance(der, bytes):
            raise InvalidArgument(f"extension value must be bytes, got {type(der).__name__}")
        try:
            return cls._decode(der)
        except (DerError, InvalidArgument) as exc:
            raise VerificationError(VerificationReason.MALFORMED_PCK_EXTENSION, str(exc)) from None

    @classmethod
    def _decode(cls, der: bytes) -> PckExtension:
        tag, content, end = der_read(der)
        _expect(tag, TAG_SEQUENCE, "SGX extension")
        if end != len(der):
            raise DerError("trailing bytes after the SGX extension")
        top = _pairs(content, "SGX extension")

        def octets(oid: str, size: int, table: dict[str, tuple[int, bytes]]) -> bytes:
            if oid not in table:
                raise DerError(f"missing {oid}")
            t, v = table[oid]
            _expect(t, TAG_OCTET_STRING, oid)
            if len(v) != size:
                raise DerError(f"{oid}: {len(v)} bytes, expected {size}")
            return v

        ppid = octets(OID_PPID, 16, top)
        if OID_TCB not in top:
            raise DerError(f"missing {OID_TCB}")
        t, tcb_content = top[OID_TCB]
        _expect(t, TAG_SEQUENCE, OID_TCB)
        tcb = _pairs(tcb_content, OID_TCB)
        comps: list[int] = []
        for i in range(1, TCB_COMPONENTS + 1):
            oid = f"{OID_TCB}.{i}"
            if oid not in tcb:
                raise DerError(f"missing {oid}")
            t, v = tcb[oid]
            _expect(t, TAG_INTEGER, oid)
            svn = _integer_from_der(v, what=oid)
            if svn > 255:
                raise DerError(f"{oid}: SVN {svn} > 255")
            comps.append(svn)
        if OID_PCESVN not in tcb:
            raise DerError(f"missing {OID_PCESVN}")
        t, v = tcb[OID_PCESVN]
        _expect(t, TAG_INTEGER, OID_PCESVN)
        pcesvn = _integer_from_der(v, what=OID_PCESVN)
        if pcesvn > 0xFFFF:
            raise DerError(f"PCESVN {pcesvn} > 0xFFFF")
        cpusvn = octets(OID_CPUSVN, 16, tcb)
        pce_id = octets(OID_PCEID, 2, top)
        fmspc = octets(OID_FMSPC, 6, top)
        if OID_SGX_TYPE not in top:
            raise DerError(f"missing {OID_SGX_TYPE}")
        t, v = top[OID_SGX_TYPE]
        _expect(t, TAG_ENUMERATED, OID_SGX_TYPE)
        sgx_type = _integer_from_der(v, what=OID_SGX_TYPE)
        if sgx_type > 0x7FFF:
            raise DerError(f"SGX type {sgx_type} out of range")
        pid = octets(OID_PLATFORM_INSTANCE_ID, 16, top) if OID_PLATFORM_INSTANCE_ID in top else None
        configuration: tuple[bool, bool, bool] | None = None
        if OID_CONFIGURATION in top:
            t, v = top[OID_CONFIGURATION]
            _expect(t, TAG_SEQUENCE, OID_CONFIGURATION)
            conf = _pairs(v, OID_CONFIGURATION)
            flags: list[bool] = []
            for oid in (OID_DYNAMIC_PLATFORM, OID_CACHED_KEYS, OID_SMT_ENABLED):
                if oid not in conf:
                    raise DerError(f"missing {oid}")
                t, b = conf[oid]
                _expect(t, TAG_BOOLEAN, oid)
                if b not in (b"\x00", b"\xff"):
                    raise DerError(f"{oid}: BOOLEAN is not DER")
                flags.append(b == b"\xff")
            configuration = (flags[0], flags[1], flags[2])
        return cls(
            ppid=ppid,
            tcb_components=tuple(comps),
            pcesvn=pcesvn,
            cpusvn=cpusvn,
            pce_id=pce_id,
            fmspc=fmspc,
            sgx_type=sgx_type,
            platform_instance_id=pid,
            configuration=configuration,
        )
