"""What a new TCB Info does to a fleet: who is demoted, when it bites, and what makes them UpToDate.

A relying party judges a platform by the TCB level its PCK certificate meets in the TCB Info it
uses (QVL ``matchTcbLevels``), converged with the QE's status. After a TCB Recovery Intel
publishes a new TCB Info (first with ``update=early``, later as the standard one): levels below
the new one become OutOfDate. :func:`tcb_impact` evaluates every platform of a fleet under the
TCB Info in use now and under the new one, and says for each demoted platform when the change
bites (the new TCB Info's issueDate, or with a grace period, the tcbDate of the level that
superseded the platform's plus the grace, as :class:`~sgxsim.attest.broker.KeyBroker` applies it)
and which TCB it needs: the SVN of each component below the target level (component 2 is the
"SGX Late Microcode Update") and the PCESVN. When the quote's raw TCB (its CPUSVN and the header's
PCESVN) already meets the target, the platform only needs a new PCK certificate.

Evidence is a quote (its PCK chain is read; the quote is verified in full when collateral is
given) or a bare PCK certificate (PEM or DER; only its SGX extension is read).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from sgxsim.attest.collateral import (
    SGX_TCB_COMPONENT_LABELS,
    Collateral,
    ParsedQeIdentity,
    ParsedTcbInfo,
    TcbLevel,
    TcbStatus,
    format_date,
    parse_tcb_info,
)
from sgxsim.attest.formats import Quote, parse_quote
from sgxsim.attest.pckext import OID_SGX_EXTENSION, PckExtension
from sgxsim.attest.pki import load_certificate_strict, parse_pem_chain
from sgxsim.attest.reasons import VerificationReason
from sgxsim.attest.verifier import (
    check_tcb_level,
    converge_tcb_status,
    verify_enclave_report,
    verify_quote,
)
from sgxsim.errors import InvalidArgument, VerificationError

__all__ = [
    "STATUS_RANK",
    "ComponentNeed",
    "Evidence",
    "FleetImpact",
    "PlatformImpact",
    "Requirement",
    "load_evidence",
    "tcb_impact",
]

#: How bad a status is for a relying party (higher = worse); ``None`` (no level) is worst.
STATUS_RANK: Mapping[TcbStatus, int] = {
    TcbStatus.UP_TO_DATE: 0,
    TcbStatus.SW_HARDENING_NEEDED: 1,
    TcbStatus.CONFIGURATION_NEEDED: 1,
    TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED: 2,
    TcbStatus.OUT_OF_DATE: 3,
    TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED: 4,
    TcbStatus.REVOKED: 5,
}
_NO_LEVEL_RANK = 6


def _rank(status: TcbStatus | None) -> int:
    return _NO_LEVEL_RANK if status is None else STATUS_RANK[status]


@dataclass(frozen=True)
class Evidence:
    """One platform's evidence: its PCK certificate's SGX extension and, for a quote, the quote."""

    name: str
    pck: PckExtension
    quote: Quote | None = None
    raw: bytes = b""


def _pck_of(cert: x509.Certificate) -> PckExtension:
    try:
        ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(OID_SGX_EXTENSION)).value
    except x509.ExtensionNotFound:
        raise VerificationError(VerificationReason.MALFORMED_PCK_EXTENSION, "no SGX extension") from None
    if not isinstance(ext, x509.UnrecognizedExtension):
        raise VerificationError(VerificationReason.MALFORMED_PCK_EXTENSION, "unexpected extension type")
    return PckExtension.decode(ext.value)


def load_evidence(name: str, data: bytes) -> Evidence | None:
    """A quote or a PCK certificate (PEM or DER) from ``data``; ``None`` if it is neither.

    A certificate without the SGX extension (a root or CA certificate) is not evidence (None).
    A quote whose PCK chain cannot be read raises ``VerificationError`` naming why.
    """
    if not isinstance(data, bytes):
        raise InvalidArgument(f"evidence must be bytes, got {type(data).__name__}")
    if b"-----BEGIN CERTIFICATE-----" in data[:4096] and not data.startswith((b"\x03\x00", b"\x04\x00")):
        certs = parse_pem_chain(data)
        leaf = certs[0]
    elif data[:1] == b"\x30":
        try:
            leaf = load_certificate_strict(data)
        except VerificationError:
            return None
    elif data[:2] in (b"\x03\x00", b"\x04\x00", b"\x05\x00"):
        quote = parse_quote(data)
        leaf = parse_pem_chain(quote.certification_data.data)[0]
        return Evidence(name, _pck_of(leaf), quote, data)
    else:
        return None
    try:
        return Evidence(name, _pck_of(leaf), None, data)
    except VerificationError:
        return None


@dataclass(frozen=True)
class ComponentNeed:
    """One TCB component below the target level: index (1-based as Intel numbers them), have, need."""

    index: int
    label: str
    have: int
    need: int


@dataclass(frozen=True)
class Requirement:
    """What the platform needs to meet ``level`` (the target in the new TCB Info)."""

    level: TcbLevel
    components: tuple[ComponentNeed, ...]
    pcesvn: tuple[int, int] | None  # (have, need) when the PCESVN is below
    raw_tcb_meets: bool | None  # the quote's raw TCB meets it: only a new PCK certificate is needed

    @property
    def late_microcode_svn(self) -> int | None:
        """The "SGX Late Microcode Update" SVN needed (component 2), if that component is below."""
        return next((c.need for c in self.components if c.index == 2), None)

    def describe(self) -> str:
        if not self.components and self.pcesvn is None:
            return "nothing (already meets the level)"
        parts = [f"{c.label} SVN {c.have} -> {c.need}" for c in self.components]
        if self.pcesvn is not None:
            parts.append(f"PCESVN {self.pcesvn[0]} -> {self.pcesvn[1]}")
        text = ", ".join(parts)
        if self.raw_tcb_meets:
            text += " (the running TCB already meets it: fetch a new PCK certificate)"
        return text


def _label(index: int) -> str:
    category, ctype = SGX_TCB_COMPONENT_LABELS[index]
    return ctype or (f"{category} component {index + 1}" if category else f"component {index + 1}")


def _requirement(new: ParsedTcbInfo, evidence: Evidence) -> Requirement | None:
    """The UpToDate level of ``new`` needing the fewest raised components (then the lowest)."""
    targets = [lv for lv in new.levels if lv.status is TcbStatus.UP_TO_DATE]
    if not targets:
        best = min(_rank(lv.status) for lv in new.levels)
        targets = [lv for lv in new.levels if _rank(lv.status) == best]
    comps, pcesvn = evidence.pck.tcb_components, evidence.pck.pcesvn

    def cost(level: TcbLevel) -> tuple[int, int]:
        raised = sum(1 for have, need in zip(comps, level.components, strict=True) if have < need)
        return raised + (1 if pcesvn < level.pcesvn else 0), sum(level.components) + level.pcesvn

    level = min(targets, key=cost)
    needs = tuple(
        ComponentNeed(i + 1, _label(i), have, need)
        for i, (have, need) in enumerate(zip(comps, level.components, strict=True))
        if have < need
    )
    raw_meets: bool | None = None
    if evidence.quote is not None:
        raw = tuple(evidence.quote.report_body.cpu_svn)
        raw_meets = level.is_met_by(raw, evidence.quote.header.pce_svn)
    return Requirement(
        level, needs, (pcesvn, level.pcesvn) if pcesvn < level.pcesvn else None, raw_meets if needs else None
    )


@dataclass(frozen=True)
class PlatformImpact:
    """One platform under the TCB Info in use now and under the new one."""

    name: str
    fmspc: bytes
    ppid: bytes
    pck_components: tuple[int, ...]
    pcesvn: int
    status_now: TcbStatus | None  # None: no level matches (TCB_NOT_SUPPORTED)
    status_new: TcbStatus | None
    advisory_ids_new: tuple[str, ...]
    verification: str  # "ok", "not verified (PCK certificate only)" or the verification error
    effective: dt.datetime | None  # the new TCB Info's issueDate
    bites_at: dt.datetime | None  # demoted: when the relying party stops accepting the platform
    requirement: Requirement | None

    @property
    def demoted(self) -> bool:
        return _rank(self.status_new) > _rank(self.status_now)

    def to_json(self) -> dict[str, Any]:
        req = self.requirement
        return {
            "platform": self.name,
            "fmspc": self.fmspc.hex(),
            "ppid": self.ppid.hex(),
            "pck_tcb": {"sgxtcbcomponents": list(self.pck_components), "pcesvn": self.pcesvn},
            "status_now": None if self.status_now is None else str(self.status_now),
            "status_new": None if self.status_new is None else str(self.status_new),
            "advisory_ids_new": list(self.advisory_ids_new),
            "demoted": self.demoted,
            "verification": self.verification,
            "effective": None if self.effective is None else format_date(self.effective),
            "bites_at": None if self.bites_at is None else format_date(self.bites_at),
            "requires": None
            if req is None
            else {
                "target_level": {
                    "sgxtcbcomponents": list(req.level.components),
                    "pcesvn": req.level.pcesvn,
                    "tcb_status": str(req.level.status),
                    "tcb_date": format_date(req.level.tcb_date),
                },
                "components": [
                    {"index": c.index, "label": c.label, "have": c.have, "need": c.need}
                    for c in req.components
                ],
                "pcesvn": None if req.pcesvn is None else {"have": req.pcesvn[0], "need": req.pcesvn[1]},
                "late_microcode_svn": req.late_microcode_svn,
                "new_pck_certificate_only": req.raw_tcb_meets,
                "summary": req.describe(),
            },
        }


@dataclass(frozen=True)
class FleetImpact:
    """Every platform's impact, plus the two TCB Infos per FMSPC."""

    platforms: tuple[PlatformImpact, ...]
    current: Mapping[bytes, ParsedTcbInfo]
    new: Mapping[bytes, ParsedTcbInfo]
    grace: dt.timedelta

    @property
    def demoted(self) -> tuple[PlatformImpact, ...]:
        return tuple(p for p in self.platforms if p.demoted)

    def to_json(self) -> dict[str, Any]:
        def infos(m: Mapping[bytes, ParsedTcbInfo]) -> dict[str, Any]:
            return {
                f.hex(): {
                    "tcb_evaluation_data_number": t.tcb_evaluation_data_number,
                    "issue_date": format_date(t.issue_date),
                    "next_update": format_date(t.next_update),
                }
                for f, t in m.items()
            }

        return {
            "platforms": [p.to_json() for p in self.platforms],
            "demoted": len(self.demoted),
            "total": len(self.platforms),
            "grace_period_seconds": int(self.grace.total_seconds()),
            "tcb_info_now": infos(self.current),
            "tcb_info_new": infos(self.new),
        }


def _superseded_at(info: ParsedTcbInfo, level: TcbLevel) -> dt.datetime | None:
    above = [
        lv.tcb_date
        for lv in info.levels
        if lv.dominates(level.components, level.pcesvn)
        and (lv.components, lv.pcesvn) != (level.components, level.pcesvn)
    ]
    return min(above) if above else None


def _match(info: ParsedTcbInfo, pck: PckExtension) -> TcbLevel | None:
    try:
        return check_tcb_level(info, pck)
    except VerificationError:
        return None


def tcb_impact(
    evidence: Sequence[Evidence],
    current: Iterable[str],
    new: Iterable[str],
    *,
    qe_identity: ParsedQeIdentity | None = None,
    collateral: Collateral | None = None,
    root: x509.Certificate | bytes | None = None,
    at: dt.datetime | None = None,
    grace: dt.timedelta = dt.timedelta(0),
) -> FleetImpact:
    """Evaluate ``evidence`` under the ``current`` and ``new`` TCB Info texts (inner ``tcbInfo`` JSON).

    The texts are parsed strictly (:func:`~sgxsim.attest.parse_tcb_info`); verifying their
    signatures is the caller's business (the CLI does it against the root). ``qe_identity``
    converges a quote's status with its QE's (QVL ``convergeTcbStatusWithQeTcbStatus``); with
    ``collateral``, ``root`` and ``at`` each quote is also verified in full
    (:func:`~sgxsim.attest.verify_quote`) and the outcome reported. Outcome: a
    :class:`FleetImpact`; ``InvalidArgument`` if a platform's FMSPC has no TCB Info in either set.
    """
    if not isinstance(grace, dt.timedelta) or grace < dt.timedelta(0):
        raise InvalidArgument(f"grace must be a non-negative timedelta, got {grace!r}")
    now_infos = {i.fmspc: i for i in (parse_tcb_info(t) for t in current)}
    new_infos = {i.fmspc: i for i in (parse_tcb_info(t) for t in new)}
    out: list[PlatformImpact] = []
    for ev in evidence:
        fmspc = ev.pck.fmspc
        if fmspc not in now_infos or fmspc not in new_infos:
            raise InvalidArgument(f"{ev.name}: no TCB Info for FMSPC {fmspc.hex()} (now and new are needed)")
        info_now, info_new = now_infos[fmspc], new_infos[fmspc]
        qe_status: TcbStatus | None = None
        verification = "not verified (PCK certificate only)"
        if ev.quote is not None:
            verification = "not verified (no collateral)"
            if qe_identity is not None:
                try:
                    qe_status, _ = verify_enclave_report(qe_identity, ev.quote.qe_report_body)
                except VerificationError as exc:
                    verification = f"QE: {exc}"
            if collateral is not None and root is not None and at is not None:
                try:
                    verify_quote(ev.raw, collateral, root, at, allow_debug=True)
                    verification = "ok"
                except VerificationError as exc:
                    verification = str(exc)
        level_now, level_new = _match(info_now, ev.pck), _match(info_new, ev.pck)

        def status(level: TcbLevel | None, qe: TcbStatus | None = qe_status) -> TcbStatus | None:
            if level is None:
                return None
            return level.status if qe is None else converge_tcb_status(level.status, qe)

        impact = PlatformImpact(
            name=ev.name,
            fmspc=fmspc,
            ppid=ev.pck.ppid,
            pck_components=tuple(ev.pck.tcb_components),
            pcesvn=ev.pck.pcesvn,
            status_now=status(level_now),
            status_new=status(level_new),
            advisory_ids_new=() if level_new is None else level_new.advisory_ids,
            verification=verification,
            effective=info_new.issue_date,
            bites_at=None,
            requirement=None,
        )
        if impact.demoted or _rank(impact.status_new) > 0:
            bites = info_new.issue_date
            if impact.demoted and level_new is not None and grace > dt.timedelta(0):
                since = _superseded_at(info_new, level_new)
                if since is not None:
                    bites = max(bites, since + grace)
            impact = dataclasses.replace(
                impact, bites_at=bites if impact.demoted else None, requirement=_requirement(info_new, ev)
            )
        out.append(impact)
    return FleetImpact(tuple(out), now_infos, new_infos, grace)
