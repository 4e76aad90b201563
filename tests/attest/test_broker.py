"""KeyBroker: identity rules, TCB status allow-list, OutOfDate grace after a TCB recovery."""

from __future__ import annotations

import datetime as dt

import pytest
from tests.attest.attest_world import ISV_MRENCLAVE, ISV_MRSIGNER, LEVELS, NOW, UTC, World, comps, isv_body

from sgxsim.attest import (
    BrokerPolicy,
    DecisionReason,
    EnclaveRule,
    KeyBroker,
    TcbStatus,
    VerificationReason,
)
from sgxsim.errors import InvalidArgument

SECRET = b"the data key"
BY_ENCLAVE = EnclaveRule(mrenclave=ISV_MRENCLAVE)
BY_SIGNER = EnclaveRule(mrsigner=ISV_MRSIGNER, isv_prod_id=7, min_isv_svn=3)


def broker(world: World, **policy: object) -> KeyBroker:
    rules = policy.pop("rules", (BY_ENCLAVE,))
    return KeyBroker(BrokerPolicy(rules=rules, **policy), SECRET, world.pki.root_der)  # type: ignore[arg-type]


def test_release_to_allowed_identity_and_status(world: World) -> None:
    kb = broker(world)
    d = kb.request(world.quote("uptodate"), world.collateral(), NOW)
    assert d.released and d.reason is DecisionReason.RELEASED and d.secret == SECRET
    assert d.status is TcbStatus.UP_TO_DATE
    d = kb.request(world.quote("swhard"), world.collateral(), NOW)
    assert d.released and d.status is TcbStatus.SW_HARDENING_NEEDED
    d = kb.request(world.quote("config"), world.collateral(), NOW)
    assert not d.released and d.reason is DecisionReason.TCB_STATUS_NOT_ALLOWED and d.secret is None
    assert len(kb.decisions) == 3


def test_signer_rule_checks_product_and_minimum_svn(world: World) -> None:
    kb = broker(world, rules=(BY_SIGNER,))
    cpusvn = bytes(LEVELS["uptodate"].components)
    other_enclave = isv_body(cpusvn, mr_enclave=bytes(32))
    assert kb.request(world.quote("uptodate", body=other_enclave), world.collateral(), NOW).released
    old = isv_body(cpusvn, isv_svn=2)
    assert kb.request(world.quote("uptodate", body=old), world.collateral(), NOW).reason is (
        DecisionReason.IDENTITY_MISMATCH
    )
    other_product = isv_body(cpusvn, isv_prod_id=8)
    assert not kb.request(world.quote("uptodate", body=other_product), world.collateral(), NOW).released


def test_debug_enclaves_are_refused_unless_allowed(world: World) -> None:
    debug = isv_body(bytes(LEVELS["uptodate"].components), attributes_flags=0x07)
    quote = world.quote("uptodate", body=debug)
    assert broker(world).request(quote, world.collateral(), NOW).reason is DecisionReason.DEBUG_ENCLAVE
    assert broker(world, allow_debug=True).request(quote, world.collateral(), NOW).released


def test_revoked_and_unverifiable_quotes(world: World) -> None:
    kb = broker(world, allowed_statuses=frozenset(TcbStatus) - {TcbStatus.REVOKED})
    assert kb.request(world.quote("revoked"), world.collateral(), NOW).reason is DecisionReason.TCB_REVOKED
    tampered = bytearray(world.quote("uptodate"))
    tampered[150] ^= 1
    d = kb.request(bytes(tampered), world.collateral(), NOW)
    assert d.reason is DecisionReason.VERIFICATION_FAILED
    assert d.verification_reason is VerificationReason.QUOTE_SIGNATURE_INVALID


def test_out_of_date_grace_after_a_tcb_recovery(world: World) -> None:
    event = dt.datetime(2025, 6, 10, tzinfo=UTC)
    world.model.publish_recovery(components=comps(6, 7, 3, 3, 4, 1, 0, 3), pcesvn=13, date=event)
    quote = world.quote("uptodate")  # the platform has not updated: its level is now OutOfDate
    kb = broker(world, out_of_date_grace=dt.timedelta(days=30))
    no_grace = broker(world)
    within = event + dt.timedelta(days=10)
    d = kb.request(quote, world.collateral(within), within)
    assert d.released and d.reason is DecisionReason.RELEASED_IN_GRACE and d.status is TcbStatus.OUT_OF_DATE
    assert (
        no_grace.request(quote, world.collateral(within), within).reason
        is DecisionReason.TCB_STATUS_NOT_ALLOWED
    )
    after = event + dt.timedelta(days=31)
    world.pcs.crl_validity = dt.timedelta(days=60)
    d = kb.request(quote, world.collateral(after), after)
    assert not d.released and d.reason is DecisionReason.GRACE_PERIOD_EXPIRED
    # A platform that was already OutOfDate before the event gets no fresh grace.
    d = kb.request(world.quote("outofdate"), world.collateral(within), within)
    assert d.reason is DecisionReason.GRACE_PERIOD_EXPIRED


def test_minimum_evaluation_number_and_rejected_advisories(world: World) -> None:
    kb = broker(world, min_tcb_evaluation_data_number=18)
    assert (
        kb.request(world.quote("uptodate"), world.collateral(), NOW).reason
        is DecisionReason.TCB_EVALUATION_TOO_OLD
    )
    world.model.publish_recovery(components=comps(6, 7, 3, 3, 4, 1, 0, 3), pcesvn=13, date=NOW)
    world.qe_model.tcb_evaluation_data_number = 18
    fresh = world.pcs.add_pck_cert(
        world.pck("uptodate").extension.ppid, bytes(comps(6, 7, 3, 3, 4, 1, 0, 3)), 13
    )
    assert kb.request(world.quote(pck=fresh), world.collateral(), NOW).released
    picky = broker(world, rejected_advisories=frozenset({"INTEL-SA-00615"}))
    assert (
        picky.request(world.quote("swhard"), world.collateral(), NOW).reason
        is DecisionReason.ADVISORY_REJECTED
    )


def test_policy_validation() -> None:
    with pytest.raises(InvalidArgument):
        BrokerPolicy(rules=())
    with pytest.raises(InvalidArgument):
        BrokerPolicy(rules=(BY_ENCLAVE,), allowed_statuses=frozenset({TcbStatus.REVOKED}))
    with pytest.raises(InvalidArgument):
        BrokerPolicy(rules=(BY_ENCLAVE,), out_of_date_grace=dt.timedelta(days=-1))
    with pytest.raises(InvalidArgument):
        EnclaveRule()
    with pytest.raises(InvalidArgument):
        EnclaveRule(mrenclave=ISV_MRENCLAVE, mrsigner=ISV_MRSIGNER, isv_prod_id=1)
    with pytest.raises(InvalidArgument):
        EnclaveRule(mrsigner=ISV_MRSIGNER)
    with pytest.raises(InvalidArgument):
        KeyBroker(BrokerPolicy(rules=(BY_ENCLAVE,)), b"", b"")
