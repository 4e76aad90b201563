"""Verification collateral: TCB Info v3 and QE Identity v2 JSON, their signing, and a TCB model.

JSON shapes are those Intel's PCS v4 serves (``GET /sgx/certification/v4/tcb`` and
``/qe/identity``): a compact envelope ``{"tcbInfo":{...},"signature":"<hex r||s>"}`` (resp.
``"enclaveIdentity"``) whose signature is ECDSA-P256/SHA-256 by the "Intel SGX TCB Signing" key
over the exact bytes of the inner object as served. Field order follows Intel's documents:
``id, version, issueDate, nextUpdate, fmspc, pceId, tcbType, tcbEvaluationDataNumber, tcbLevels``
with levels ``{"tcb":{"sgxtcbcomponents":[16 x {"svn","category","type"}],"pcesvn"},
"tcbDate","tcbStatus","advisoryIDs"}``; component categories/types as in Intel's SGX TCB Info
(component 1 "Early Microcode Update", component 2 "SGX Late Microcode Update", ...).

:class:`Collateral` has exactly the fields of dcap-qvl's ``QuoteCollateralV3``. A
:class:`TcbModel` holds the levels of one FMSPC and lets a scenario publish TCB recoveries
(``tcbEvaluationDataNumber`` increments; dominated levels become OutOfDate).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from sgxsim.attest.formats import ecdsa_raw_sign
from sgxsim.attest.reasons import VerificationReason
from sgxsim.errors import InvalidArgument, VerificationError

__all__ = [
    "DEFAULT_QE_ATTRIBUTES",
    "DEFAULT_QE_ATTRIBUTES_MASK",
    "QE_IDENTITY_STATUSES",
    "SGX_TCB_COMPONENT_LABELS",
    "Collateral",
    "ParsedQeIdentity",
    "ParsedTcbInfo",
    "QeIdentityModel",
    "QeTcbLevel",
    "SignedDocument",
    "TcbLevel",
    "TcbModel",
    "TcbStatus",
    "format_date",
    "parse_date",
    "parse_qe_identity",
    "parse_tcb_info",
    "sign_document",
    "sort_tcb_levels",
    "split_envelope",
]

TCB_COMPONENTS = 16


class TcbStatus(enum.StrEnum):
    """``tcbStatus`` strings of TCB Info / QE Identity (SGX)."""

    UP_TO_DATE = "UpToDate"
    SW_HARDENING_NEEDED = "SWHardeningNeeded"
    CONFIGURATION_NEEDED = "ConfigurationNeeded"
    CONFIGURATION_AND_SW_HARDENING_NEEDED = "ConfigurationAndSWHardeningNeeded"
    OUT_OF_DATE = "OutOfDate"
    OUT_OF_DATE_CONFIGURATION_NEEDED = "OutOfDateConfigurationNeeded"
    REVOKED = "Revoked"


# (category, type) of the 16 SGX TCB components as Intel's TCB Info v3 labels them.
SGX_TCB_COMPONENT_LABELS: tuple[tuple[str | None, str | None], ...] = (
    ("BIOS", "Early Microcode Update"),
    ("OS/VMM", "SGX Late Microcode Update"),
    ("OS/VMM", "TXT SINIT"),
    ("BIOS", None),
    ("BIOS", None),
    ("BIOS", None),
    (None, None),
    ("OS/VMM", "SEAMLDR ACM"),
    (None, None),
    (None, None),
    (None, None),
    (None, None),
    (None, None),
    (None, None),
    (None, None),
    (None, None),
)

# Intel's production QE3 identity: attributes INIT|PROVISIONKEY, MODE64BIT masked out.
DEFAULT_QE_ATTRIBUTES = bytes.fromhex("11000000000000000000000000000000")
DEFAULT_QE_ATTRIBUTES_MASK = bytes.fromhex("FBFFFFFFFFFFFFFF0000000000000000")

_DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def format_date(value: dt.datetime) -> str:
    """Intel's date format: UTC, seconds precision, ``Z`` suffix."""
    if not isinstance(value, dt.datetime) or value.tzinfo is None:
        raise InvalidArgument(f"date must be a timezone-aware datetime, got {value!r}")
    return value.astimezone(dt.UTC).strftime(_DATE_FORMAT)


def parse_date(text: str) -> dt.datetime:
    """Inverse of :func:`format_date`; raises ``ValueError`` for anything else."""
    if not isinstance(text, str) or len(text) != 20:
        raise ValueError(f"bad date {text!r}")
    return dt.datetime.strptime(text, _DATE_FORMAT).replace(tzinfo=dt.UTC)


def _components(value: Sequence[int] | bytes, what: str) -> tuple[int, ...]:
    comps = tuple(value)
    if len(comps) != TCB_COMPONENTS or not all(
        isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in comps
    ):
        raise InvalidArgument(f"{what} must be 16 SVNs in 0..255, got {value!r}")
    return comps


# ---------------------------------------------------------------- levels


@dataclass(frozen=True)
class TcbLevel:
    """One ``tcbLevels`` entry of SGX TCB Info."""

    components: tuple[int, ...]
    pcesvn: int
    tcb_date: dt.datetime
    status: TcbStatus
    advisory_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "components", _components(self.components, "components"))
        if not isinstance(self.pcesvn, int) or not 0 <= self.pcesvn <= 0xFFFF:
            raise InvalidArgument(f"pcesvn must be a u16, got {self.pcesvn!r}")
        format_date(self.tcb_date)
        object.__setattr__(self, "status", TcbStatus(self.status))
        object.__setattr__(self, "advisory_ids", tuple(self.advisory_ids))

    def dominates(self, components: Sequence[int], pcesvn: int) -> bool:
        """Every component >= and PCESVN >= (QVL ``isCpuSvnHigherOrEqual`` + PCESVN check)."""
        return self.pcesvn >= pcesvn and all(a >= b for a, b in zip(self.components, components, strict=True))

    def is_met_by(self, components: Sequence[int], pcesvn: int) -> bool:
        """The platform TCB (components, pcesvn) is >= this level in every component and PCESVN."""
        return pcesvn >= self.pcesvn and all(a >= b for a, b in zip(components, self.components, strict=True))

    def to_json(self) -> dict[str, Any]:
        comps: list[dict[str, Any]] = []
        for svn, (category, ctype) in zip(self.components, SGX_TCB_COMPONENT_LABELS, strict=True):
            entry: dict[str, Any] = {"svn": svn}
            if category is not None:
                entry["category"] = category
            if ctype is not None:
                entry["type"] = ctype
            comps.append(entry)
        out: dict[str, Any] = {
            "tcb": {"sgxtcbcomponents": comps, "pcesvn": self.pcesvn},
            "tcbDate": format_date(self.tcb_date),
            "tcbStatus": str(self.status),
        }
        if self.advisory_ids:
            out["advisoryIDs"] = list(self.advisory_ids)
        return out


def sort_tcb_levels(levels: Iterable[TcbLevel]) -> list[TcbLevel]:
    """QVL's order: components (lexicographic) descending, then PCESVN descending."""
    return sorted(levels, key=lambda lv: (lv.components, lv.pcesvn), reverse=True)


@dataclass(frozen=True)
class QeTcbLevel:
    """One ``tcbLevels`` entry of QE Identity."""

    isvsvn: int
    tcb_date: dt.datetime
    status: TcbStatus
    advisory_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.isvsvn, int) or not 0 <= self.isvsvn <= 0xFFFF:
            raise InvalidArgument(f"isvsvn must be a u16, got {self.isvsvn!r}")
        format_date(self.tcb_date)
        object.__setattr__(self, "status", TcbStatus(self.status))
        object.__setattr__(self, "advisory_ids", tuple(self.advisory_ids))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "tcb": {"isvsvn": self.isvsvn},
            "tcbDate": format_date(self.tcb_date),
            "tcbStatus": str(self.status),
        }
        if self.advisory_ids:
            out["advisoryIDs"] = list(self.advisory_ids)
        return out


# ---------------------------------------------------------------- models


_DEMOTE: Mapping[TcbStatus, TcbStatus] = MappingProxyType(
    {
        TcbStatus.UP_TO_DATE: TcbStatus.OUT_OF_DATE,
        TcbStatus.SW_HARDENING_NEEDED: TcbStatus.OUT_OF_DATE,
        TcbStatus.CONFIGURATION_NEEDED: TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED,
        TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED: TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED,
    }
)


class TcbModel:
    """The TCB levels Intel publishes for one FMSPC, and their evolution.

    Mutable by design (a scenario drives it): :meth:`publish_recovery` models a TCB Recovery
    (TCB-R) event, :meth:`set_status` any other re-classification.
    """

    def __init__(
        self,
        *,
        fmspc: bytes,
        pce_id: bytes = bytes(2),
        levels: Iterable[TcbLevel],
        tcb_evaluation_data_number: int,
        tcb_type: int = 0,
    ) -> None:
        if not isinstance(fmspc, bytes) or len(fmspc) != 6:
            raise InvalidArgument(f"fmspc must be 6 bytes, got {fmspc!r}")
        if not isinstance(pce_id, bytes) or len(pce_id) != 2:
            raise InvalidArgument(f"pce_id must be 2 bytes, got {pce_id!r}")
        if not isinstance(tcb_evaluation_data_number, int) or tcb_evaluation_data_number < 0:
            raise InvalidArgument(f"bad tcbEvaluationDataNumber {tcb_evaluation_data_number!r}")
        if tcb_type != 0:
            raise InvalidArgument(f"only tcbType 0 is modelled, got {tcb_type!r}")
        self.fmspc = fmspc
        self.pce_id = pce_id
        self.tcb_type = tcb_type
        self.tcb_evaluation_data_number = tcb_evaluation_data_number
        self._levels: list[TcbLevel] = []
        for level in levels:
            self.add_level(level)
        self.recovery_events: list[tuple[int, dt.datetime]] = []

    @property
    def levels(self) -> tuple[TcbLevel, ...]:
        """The levels in QVL order (highest first)."""
        return tuple(self._levels)

    def add_level(self, level: TcbLevel) -> None:
        """Add a level (replacing one with the same components and PCESVN)."""
        if not isinstance(level, TcbLevel):
            raise InvalidArgument(f"level must be a TcbLevel, got {type(level).__name__}")
        rest = [lv for lv in self._levels if (lv.components, lv.pcesvn) != (level.components, level.pcesvn)]
        self._levels = sort_tcb_levels([*rest, level])

    def find(self, components: Sequence[int], pcesvn: int) -> TcbLevel | None:
        """The level with exactly these components and PCESVN."""
        comps = tuple(components)
        return next((lv for lv in self._levels if lv.components == comps and lv.pcesvn == pcesvn), None)

    def match(self, components: Sequence[int], pcesvn: int) -> TcbLevel | None:
        """QVL matching: the first level (highest first) the platform TCB is >= to."""
        comps = _components(components, "components")
        return next((lv for lv in self._levels if lv.is_met_by(comps, pcesvn)), None)

    def set_status(
        self,
        components: Sequence[int],
        pcesvn: int,
        status: TcbStatus,
        advisory_ids: Iterable[str] | None = None,
    ) -> TcbLevel:
        """Re-classify an existing level (e.g. Revoked); returns the new level."""
        old = self.find(components, pcesvn)
        if old is None:
            raise InvalidArgument(f"no TCB level {tuple(components)}/{pcesvn}")
        new = dataclasses.replace(
            old,
            status=TcbStatus(status),
            advisory_ids=old.advisory_ids if advisory_ids is None else tuple(advisory_ids),
        )
        self.add_level(new)
        return new

    def publish_recovery(
        self,
        *,
        components: Sequence[int],
        pcesvn: int,
        date: dt.datetime,
        advisory_ids: Iterable[str] = (),
    ) -> TcbLevel:
        """A TCB Recovery event: a new UpToDate level, older levels demoted, eval number + 1.

        Every existing level the new one dominates (and is not equal to) is demoted:
        UpToDate/SWHardeningNeeded -> OutOfDate, ConfigurationNeeded(/AndSWHardening) ->
        OutOfDateConfigurationNeeded, and gets ``advisory_ids``. The new level's tcbDate is the
        event date (Intel dates a TCB-R level by its recovery event). Returns the new level.
        """
        comps = _components(components, "components")
        advisories = tuple(advisory_ids)
        new = TcbLevel(comps, pcesvn, date, TcbStatus.UP_TO_DATE)
        for level in list(self._levels):
            if (level.components, level.pcesvn) == (comps, pcesvn) or not new.dominates(
                level.components, level.pcesvn
            ):
                continue
            demoted = _DEMOTE.get(level.status, level.status)
            merged = level.advisory_ids + tuple(a for a in advisories if a not in level.advisory_ids)
            self.add_level(dataclasses.replace(level, status=demoted, advisory_ids=merged))
        self.add_level(new)
        self.tcb_evaluation_data_number += 1
        self.recovery_events.append((self.tcb_evaluation_data_number, date.astimezone(dt.UTC)))
        return new

    def tcb_info(self, issue_date: dt.datetime, next_update: dt.datetime) -> dict[str, Any]:
        """The inner ``tcbInfo`` object (Intel field order)."""
        return {
            "id": "SGX",
            "version": 3,
            "issueDate": format_date(issue_date),
            "nextUpdate": format_date(next_update),
            "fmspc": self.fmspc.hex(),
            "pceId": self.pce_id.hex(),
            "tcbType": self.tcb_type,
            "tcbEvaluationDataNumber": self.tcb_evaluation_data_number,
            "tcbLevels": [lv.to_json() for lv in self._levels],
        }


@dataclass
class QeIdentityModel:
    """The identity Intel publishes for the QE: who may sign quotes, and its TCB levels."""

    mrsigner: bytes
    levels: list[QeTcbLevel]
    tcb_evaluation_data_number: int
    isvprodid: int = 1
    miscselect: int = 0
    miscselect_mask: int = 0xFFFFFFFF
    attributes: bytes = DEFAULT_QE_ATTRIBUTES
    attributes_mask: bytes = DEFAULT_QE_ATTRIBUTES_MASK

    def __post_init__(self) -> None:
        if not isinstance(self.mrsigner, bytes) or len(self.mrsigner) != 32:
            raise InvalidArgument(f"mrsigner must be 32 bytes, got {self.mrsigner!r}")
        for name in ("attributes", "attributes_mask"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != 16:
                raise InvalidArgument(f"{name} must be 16 bytes, got {value!r}")
        self.levels = sorted(self.levels, key=lambda lv: lv.isvsvn, reverse=True)

    def identity_json(self, issue_date: dt.datetime, next_update: dt.datetime) -> dict[str, Any]:
        """The inner ``enclaveIdentity`` object (QE Identity v2, Intel field order)."""
        return {
            "id": "QE",
            "version": 2,
            "issueDate": format_date(issue_date),
            "nextUpdate": format_date(next_update),
            "tcbEvaluationDataNumber": self.tcb_evaluation_data_number,
            "miscselect": self.miscselect.to_bytes(4, "little").hex().upper(),
            "miscselectMask": self.miscselect_mask.to_bytes(4, "little").hex().upper(),
            "attributes": self.attributes.hex().upper(),
            "attributesMask": self.attributes_mask.hex().upper(),
            "mrsigner": self.mrsigner.hex().upper(),
            "isvprodid": self.isvprodid,
            "tcbLevels": [lv.to_json() for lv in self.levels],
        }


# ---------------------------------------------------------------- signing


@dataclass(frozen=True)
class SignedDocument:
    """A signed PCS document: the exact inner JSON text and the raw r||s signature."""

    name: str  # "tcbInfo" or "enclaveIdentity"
    body: str
    signature: bytes

    def envelope(self) -> str:
        """The response body as PCS serves it."""
        return f'{{"{self.name}":{self.body},"signature":"{self.signature.hex()}"}}'


def sign_document(name: str, obj: dict[str, Any], key: ec.EllipticCurvePrivateKey) -> SignedDocument:
    """Serialize ``obj`` compactly and sign its bytes with ``key`` (deterministic ECDSA)."""
    body = json.dumps(obj, separators=(",", ":"))
    return SignedDocument(name, body, ecdsa_raw_sign(key, body.encode("utf-8")))


def split_envelope(text: str, name: str) -> tuple[str, bytes]:
    """Inner object text and signature from a PCS envelope (``ValueError`` if not one)."""
    prefix = f'{{"{name}":'
    if not text.startswith(prefix):
        raise ValueError(f"not a {name} envelope")
    _, end = json.JSONDecoder().raw_decode(text, len(prefix))
    body = text[len(prefix) : end]
    tail = json.loads("{" + text[end + 1 :]) if text[end : end + 1] == "," else None
    if not isinstance(tail, dict) or set(tail) != {"signature"} or not isinstance(tail["signature"], str):
        raise ValueError("bad signature member")
    return body, bytes.fromhex(tail["signature"])


# ---------------------------------------------------------------- parsing (verifier side)


class _Bad(ValueError):
    pass


def _get(obj: dict[str, Any], key: str, typ: type | tuple[type, ...], what: str) -> Any:
    if key not in obj:
        raise _Bad(f"{what}: missing {key!r}")
    value = obj[key]
    if not isinstance(value, typ) or (isinstance(value, bool) and typ is not bool):
        raise _Bad(f"{what}: {key!r} has type {type(value).__name__}")
    return value


def _uint(obj: dict[str, Any], key: str, bits: int, what: str) -> int:
    value: int = _get(obj, key, int, what)
    if not 0 <= value < (1 << bits):
        raise _Bad(f"{what}: {key!r} = {value} out of range")
    return value


def _hexbytes(obj: dict[str, Any], key: str, size: int, what: str) -> bytes:
    text: str = _get(obj, key, str, what)
    if len(text) != 2 * size:
        raise _Bad(f"{what}: {key!r} must be {2 * size} hex digits")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise _Bad(f"{what}: {key!r} is not hex") from None


def _date(obj: dict[str, Any], key: str, what: str) -> dt.datetime:
    try:
        return parse_date(_get(obj, key, str, what))
    except ValueError:
        raise _Bad(f"{what}: bad {key!r}") from None


def _status(obj: dict[str, Any], what: str, allowed: frozenset[TcbStatus] | None = None) -> TcbStatus:
    try:
        status = TcbStatus(_get(obj, "tcbStatus", str, what))
    except ValueError:
        raise _Bad(f"{what}: unknown tcbStatus {obj.get('tcbStatus')!r}") from None
    if allowed is not None and status not in allowed:
        raise _Bad(f"{what}: tcbStatus {status} is not a QE Identity status")
    return status


# QVL ``parseStringToTcbStatus`` (Verifiers/TcbStatus.h), used by ``EnclaveIdentityV2::parseTcbLevels``:
# the SWHardening statuses of TCB Info are not QE Identity statuses.
QE_IDENTITY_STATUSES = frozenset(
    {
        TcbStatus.UP_TO_DATE,
        TcbStatus.CONFIGURATION_NEEDED,
        TcbStatus.OUT_OF_DATE,
        TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED,
        TcbStatus.REVOKED,
    }
)


def _advisories(obj: dict[str, Any], what: str) -> tuple[str, ...]:
    if "advisoryIDs" not in obj:
        return ()
    ids = _get(obj, "advisoryIDs", list, what)
    if not all(isinstance(i, str) for i in ids):
        raise _Bad(f"{what}: advisoryIDs must be strings")
    return tuple(ids)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` refusing a member name twice in one object.

    Differs: QVL's rapidjson lookups take the first of duplicate members and dcap-qvl's serde
    refuses them; a signed document whose meaning depends on the parser is refused here.
    """
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Bad(f"duplicate member {key!r}")
        out[key] = value
    return out


def _load_object(text: str, what: str) -> dict[str, Any]:
    if not isinstance(text, str):
        raise InvalidArgument(f"{what} must be str, got {type(text).__name__}")
    try:
        obj = json.loads(text, object_pairs_hook=_unique_keys)
    except _Bad as exc:
        raise _Bad(f"{what}: {exc}") from None
    except (ValueError, RecursionError):
        raise _Bad(f"{what}: not JSON") from None
    if not isinstance(obj, dict):
        raise _Bad(f"{what}: not a JSON object")
    return obj


@dataclass(frozen=True)
class ParsedTcbInfo:
    """A validated TCB Info v3 (SGX) object."""

    id: str
    version: int
    issue_date: dt.datetime
    next_update: dt.datetime
    fmspc: bytes
    pce_id: bytes
    tcb_type: int
    tcb_evaluation_data_number: int
    levels: tuple[TcbLevel, ...]  # in QVL order (highest first)


def parse_tcb_info(text: str) -> ParsedTcbInfo:
    """Parse and validate the inner ``tcbInfo`` text; defects -> ``VerificationError(MALFORMED_TCB_INFO)``."""
    try:
        obj = _load_object(text, "tcbInfo")
        ident = _get(obj, "id", str, "tcbInfo")
        version = _uint(obj, "version", 8, "tcbInfo")
        if ident != "SGX" or version != 3:
            raise _Bad(f"tcbInfo id/version {ident!r}/{version}, expected 'SGX'/3")
        tcb_type = _uint(obj, "tcbType", 32, "tcbInfo")
        if tcb_type != 0:
            raise _Bad(f"unsupported tcbType {tcb_type}")
        levels_json = _get(obj, "tcbLevels", list, "tcbInfo")
        if not levels_json:
            raise _Bad("tcbInfo: empty tcbLevels")
        levels: list[TcbLevel] = []
        for i, lv in enumerate(levels_json):
            what = f"tcbLevels[{i}]"
            if not isinstance(lv, dict):
                raise _Bad(f"{what}: not an object")
            tcb = _get(lv, "tcb", dict, what)
            comps_json = _get(tcb, "sgxtcbcomponents", list, what)
            if len(comps_json) != TCB_COMPONENTS:
                raise _Bad(f"{what}: {len(comps_json)} sgxtcbcomponents")
            comps: list[int] = []
            for c in comps_json:
                if not isinstance(c, dict):
                    raise _Bad(f"{what}: component is not an object")
                comps.append(_uint(c, "svn", 8, what))
            levels.append(
                TcbLevel(
                    tuple(comps),
                    _uint(tcb, "pcesvn", 16, what),
                    _date(lv, "tcbDate", what),
                    _status(lv, what),
                    _advisories(lv, what),
                )
            )
        return ParsedTcbInfo(
            id=ident,
            version=version,
            issue_date=_date(obj, "issueDate", "tcbInfo"),
            next_update=_date(obj, "nextUpdate", "tcbInfo"),
            fmspc=_hexbytes(obj, "fmspc", 6, "tcbInfo"),
            pce_id=_hexbytes(obj, "pceId", 2, "tcbInfo"),
            tcb_type=tcb_type,
            tcb_evaluation_data_number=_uint(obj, "tcbEvaluationDataNumber", 32, "tcbInfo"),
            levels=tuple(sort_tcb_levels(levels)),
        )
    except _Bad as exc:
        raise VerificationError(VerificationReason.MALFORMED_TCB_INFO, str(exc)) from None


@dataclass(frozen=True)
class ParsedQeIdentity:
    """A validated QE Identity v2 object."""

    id: str
    version: int
    issue_date: dt.datetime
    next_update: dt.datetime
    tcb_evaluation_data_number: int
    miscselect: int
    miscselect_mask: int
    attributes: bytes
    attributes_mask: bytes
    mrsigner: bytes
    isvprodid: int
    levels: tuple[QeTcbLevel, ...]  # in document order (QVL evaluates them so)


def parse_qe_identity(text: str) -> ParsedQeIdentity:
    """Parse and validate the inner ``enclaveIdentity`` text; defects -> ``MALFORMED_QE_IDENTITY``."""
    try:
        obj = _load_object(text, "enclaveIdentity")
        ident = _get(obj, "id", str, "enclaveIdentity")
        version = _uint(obj, "version", 8, "enclaveIdentity")
        if ident != "QE" or version != 2:
            raise _Bad(f"enclaveIdentity id/version {ident!r}/{version}, expected 'QE'/2")
        levels_json = _get(obj, "tcbLevels", list, "enclaveIdentity")
        if not levels_json:
            raise _Bad("enclaveIdentity: empty tcbLevels")
        levels: list[QeTcbLevel] = []
        for i, lv in enumerate(levels_json):
            what = f"tcbLevels[{i}]"
            if not isinstance(lv, dict):
                raise _Bad(f"{what}: not an object")
            tcb = _get(lv, "tcb", dict, what)
            levels.append(
                QeTcbLevel(
                    _uint(tcb, "isvsvn", 16, what),
                    _date(lv, "tcbDate", what),
                    _status(lv, what, QE_IDENTITY_STATUSES),
                    _advisories(lv, what),
                )
            )
        return ParsedQeIdentity(
            id=ident,
            version=version,
            issue_date=_date(obj, "issueDate", "enclaveIdentity"),
            next_update=_date(obj, "nextUpdate", "enclaveIdentity"),
            tcb_evaluation_data_number=_uint(obj, "tcbEvaluationDataNumber", 32, "enclaveIdentity"),
            miscselect=int.from_bytes(_hexbytes(obj, "miscselect", 4, "enclaveIdentity"), "little"),
            miscselect_mask=int.from_bytes(_hexbytes(obj, "miscselectMask", 4, "enclaveIdentity"), "little"),
            attributes=_hexbytes(obj, "attributes", 16, "enclaveIdentity"),
            attributes_mask=_hexbytes(obj, "attributesMask", 16, "enclaveIdentity"),
            mrsigner=_hexbytes(obj, "mrsigner", 32, "enclaveIdentity"),
            isvprodid=_uint(obj, "isvprodid", 16, "enclaveIdentity"),
            levels=tuple(levels),  # document order: EnclaveIdentityV2::getTcbStatus takes the first match
        )
    except _Bad as exc:
        raise VerificationError(VerificationReason.MALFORMED_QE_IDENTITY, str(exc)) from None


# ---------------------------------------------------------------- the collateral bundle


@dataclass(frozen=True)
class Collateral:
    """Everything a verifier needs besides the quote and the root: dcap-qvl's QuoteCollateralV3.

    CRLs are DER; issuer chains are PEM text (signer first); ``tcb_info`` / ``qe_identity`` are
    the exact inner JSON texts; signatures are raw 64-byte r||s.
    """

    pck_crl_issuer_chain: str
    root_ca_crl: bytes
    pck_crl: bytes
    tcb_info_issuer_chain: str
    tcb_info: str
    tcb_info_signature: bytes
    qe_identity_issuer_chain: str
    qe_identity: str
    qe_identity_signature: bytes

    def __post_init__(self) -> None:
        binary = {"root_ca_crl", "pck_crl", "tcb_info_signature", "qe_identity_signature"}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            want = bytes if f.name in binary else str
            if not isinstance(value, want):
                raise InvalidArgument(
                    f"Collateral.{f.name} must be {want.__name__}, got {type(value).__name__}"
                )

    def replace(self, **changes: Any) -> Collateral:
        """A copy with some fields changed (tests use it to tamper)."""
        return dataclasses.replace(self, **changes)

    def as_dcap_qvl_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``dcap_qvl.QuoteCollateralV3(...)``."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
