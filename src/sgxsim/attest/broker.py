"""A relying party that releases a secret to attested enclaves: identity + TCB policy.

The policy is what relying parties publish in practice (reference §5): an allow-list of
enclave identities (MRENCLAVE, or MRSIGNER + ISVPRODID + minimum ISVSVN), an allow-list of TCB
statuses (commonly UpToDate and SWHardeningNeeded, sometimes the ConfigurationNeeded ones),
OutOfDate accepted only within a grace period after the TCB Recovery event that superseded the
platform's level, never Revoked, optionally a minimum ``tcbEvaluationDataNumber`` and
rejected advisories. Time is a parameter.

The grace clock starts at :attr:`VerifiedQuote.superseded_at`: the earliest ``tcbDate`` of a
TCB Info level strictly above the platform's matched level, i.e. the date of the recovery that
made the platform's level out of date (a TCB-R level is dated by its recovery event).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from cryptography import x509

from sgxsim.attest.collateral import Collateral, TcbStatus
from sgxsim.attest.reasons import VerificationReason
from sgxsim.attest.verifier import VerifiedQuote, verify_quote
from sgxsim.errors import InvalidArgument, VerificationError

__all__ = ["BrokerDecision", "BrokerPolicy", "DecisionReason", "EnclaveRule", "KeyBroker"]

# OutOfDate within grace is judged as the status it had before the recovery demoted it.
_GRACE_TARGET: Mapping[TcbStatus, TcbStatus] = MappingProxyType(
    {
        TcbStatus.OUT_OF_DATE: TcbStatus.UP_TO_DATE,
        TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED: TcbStatus.CONFIGURATION_NEEDED,
    }
)


class DecisionReason(enum.Enum):
    """Why the broker released or refused."""

    RELEASED = "released"
    RELEASED_IN_GRACE = "released: OutOfDate within the grace period after a TCB recovery"
    VERIFICATION_FAILED = "quote verification failed"
    TCB_REVOKED = "TCB revoked"
    IDENTITY_MISMATCH = "enclave identity not allowed"
    DEBUG_ENCLAVE = "debug enclave"
    TCB_EVALUATION_TOO_OLD = "tcbEvaluationDataNumber below the policy minimum"
    ADVISORY_REJECTED = "an advisory the policy rejects applies"
    TCB_STATUS_NOT_ALLOWED = "TCB status not allowed"
    GRACE_PERIOD_EXPIRED = "OutOfDate and the grace period has expired"


@dataclass(frozen=True)
class EnclaveRule:
    """One allowed identity: ``mrenclave`` alone, or ``mrsigner`` + ``isv_prod_id`` + ``min_isv_svn``."""

    mrenclave: bytes | None = None
    mrsigner: bytes | None = None
    isv_prod_id: int | None = None
    min_isv_svn: int = 0

    def __post_init__(self) -> None:
        by_enclave = self.mrenclave is not None
        by_signer = self.mrsigner is not None or self.isv_prod_id is not None
        if by_enclave == by_signer:
            raise InvalidArgument("an EnclaveRule names either mrenclave, or mrsigner + isv_prod_id")
        if by_enclave and (not isinstance(self.mrenclave, bytes) or len(self.mrenclave) != 32):
            raise InvalidArgument(f"mrenclave must be 32 bytes, got {self.mrenclave!r}")
        if by_signer:
            if not isinstance(self.mrsigner, bytes) or len(self.mrsigner) != 32:
                raise InvalidArgument(f"mrsigner must be 32 bytes, got {self.mrsigner!r}")
            if not isinstance(self.isv_prod_id, int) or not 0 <= self.isv_prod_id <= 0xFFFF:
                raise InvalidArgument(f"isv_prod_id must be a u16, got {self.isv_prod_id!r}")
        if not isinstance(self.min_isv_svn, int) or not 0 <= self.min_isv_svn <= 0xFFFF:
            raise InvalidArgument(f"min_isv_svn must be a u16, got {self.min_isv_svn!r}")

    def matches(self, verified: VerifiedQuote) -> bool:
        if self.mrenclave is not None:
            return verified.mr_enclave == self.mrenclave
        return (
            verified.mr_signer == self.mrsigner
            and verified.isv_prod_id == self.isv_prod_id
            and verified.isv_svn >= self.min_isv_svn
        )


@dataclass(frozen=True)
class BrokerPolicy:
    """What the broker requires before releasing its secret."""

    rules: tuple[EnclaveRule, ...]
    allowed_statuses: frozenset[TcbStatus] = frozenset({TcbStatus.UP_TO_DATE, TcbStatus.SW_HARDENING_NEEDED})
    out_of_date_grace: dt.timedelta = dt.timedelta(0)
    allow_debug: bool = False
    min_tcb_evaluation_data_number: int = 0
    rejected_advisories: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.rules or not all(isinstance(r, EnclaveRule) for r in self.rules):
            raise InvalidArgument("BrokerPolicy.rules must be a non-empty tuple of EnclaveRule")
        statuses = frozenset(TcbStatus(s) for s in self.allowed_statuses)
        if TcbStatus.REVOKED in statuses:
            raise InvalidArgument("a policy may never allow Revoked")
        object.__setattr__(self, "allowed_statuses", statuses)
        if not isinstance(self.out_of_date_grace, dt.timedelta) or self.out_of_date_grace < dt.timedelta(0):
            raise InvalidArgument(
                f"out_of_date_grace must be a non-negative timedelta, got {self.out_of_date_grace!r}"
            )


@dataclass(frozen=True)
class BrokerDecision:
    """The broker's answer; ``secret`` is set only when ``released``."""

    released: bool
    reason: DecisionReason
    detail: str = ""
    secret: bytes | None = field(default=None, repr=False)
    status: TcbStatus | None = None
    verification_reason: VerificationReason | None = None


class KeyBroker:
    """Releases ``secret`` to enclaves whose quote verifies and satisfies ``policy``."""

    def __init__(self, policy: BrokerPolicy, secret: bytes, root_ca: bytes | x509.Certificate) -> None:
        if not isinstance(policy, BrokerPolicy):
            raise InvalidArgument(f"policy must be a BrokerPolicy, got {type(policy).__name__}")
        if not isinstance(secret, bytes) or not secret:
            raise InvalidArgument("secret must be non-empty bytes")
        self.policy = policy
        self._secret = secret
        self.root_ca = root_ca
        self.decisions: list[BrokerDecision] = []

    def request(self, quote: bytes, collateral: Collateral, now: dt.datetime) -> BrokerDecision:
        """Verify ``quote`` with ``collateral`` at ``now`` and decide (recorded in ``decisions``)."""
        try:
            verified = verify_quote(quote, collateral, self.root_ca, now, allow_debug=True)  # policy below
        except VerificationError as exc:
            reason = exc.reason if isinstance(exc.reason, VerificationReason) else None
            decision = BrokerDecision(
                False, DecisionReason.VERIFICATION_FAILED, str(exc), verification_reason=reason
            )
        else:
            decision = self.evaluate(verified, now)
        self.decisions.append(decision)
        return decision

    def evaluate(self, verified: VerifiedQuote, now: dt.datetime) -> BrokerDecision:
        """Apply the policy to an already verified quote (no side effects)."""
        if not isinstance(now, dt.datetime) or now.tzinfo is None:
            raise InvalidArgument(f"now must be a timezone-aware datetime, got {now!r}")
        p = self.policy
        status = verified.status

        def refuse(reason: DecisionReason, detail: str = "") -> BrokerDecision:
            return BrokerDecision(False, reason, detail, status=status)

        if status is TcbStatus.REVOKED:
            return refuse(DecisionReason.TCB_REVOKED)
        if not any(rule.matches(verified) for rule in p.rules):
            return refuse(DecisionReason.IDENTITY_MISMATCH, f"MRENCLAVE {verified.mr_enclave.hex()}")
        if verified.debug and not p.allow_debug:
            return refuse(DecisionReason.DEBUG_ENCLAVE)
        if verified.tcb_evaluation_data_number < p.min_tcb_evaluation_data_number:
            return refuse(
                DecisionReason.TCB_EVALUATION_TOO_OLD,
                f"{verified.tcb_evaluation_data_number} < {p.min_tcb_evaluation_data_number}",
            )
        bad = sorted(set(verified.advisory_ids) & p.rejected_advisories)
        if bad:
            return refuse(DecisionReason.ADVISORY_REJECTED, ", ".join(bad))
        if status in p.allowed_statuses:
            return BrokerDecision(True, DecisionReason.RELEASED, secret=self._secret, status=status)
        target = _GRACE_TARGET.get(status)
        if target is None or target not in p.allowed_statuses or p.out_of_date_grace <= dt.timedelta(0):
            return refuse(DecisionReason.TCB_STATUS_NOT_ALLOWED, str(status))
        since = verified.superseded_at
        if since is None:
            return refuse(DecisionReason.TCB_STATUS_NOT_ALLOWED, f"{status} without a superseding TCB level")
        deadline = since + p.out_of_date_grace
        if now > deadline:
            return refuse(DecisionReason.GRACE_PERIOD_EXPIRED, f"grace ended {deadline.isoformat()}")
        return BrokerDecision(
            True,
            DecisionReason.RELEASED_IN_GRACE,
            f"grace until {deadline.isoformat()}",
            secret=self._secret,
            status=status,
        )
