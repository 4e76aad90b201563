"""Independent check: Phala-Network's dcap-qvl (Rust, via its Python bindings) judges our quotes.

Quotes (v3, non-debug, 32-byte QE auth data) come from our builder with synthesized report
bodies and a QE report signed by the PCK key; collateral comes from our PCS; the trust anchor
is our root. dcap-qvl must accept them with the same TCB status and advisories as our
verifier, and both must refuse a Revoked TCB and broken inputs.

Known differences we keep out of the compared cases (both documented in the verifier):
dcap-qvl merges platform and QE statuses by "worst severity" (QVL converges only on QE
OutOfDate/Revoked) and fails a QE ISVSVN below every level (QVL: Revoked).
"""

from __future__ import annotations

import datetime as dt

import dcap_qvl
import pytest
from tests.attest.attest_world import NOW, World

from sgxsim.attest import Collateral, TcbStatus, VerificationReason, verify_quote
from sgxsim.errors import VerificationError

NOW_SECS = int(NOW.timestamp())


def qvl(
    world: World, quote: bytes, collateral: Collateral, now_secs: int = NOW_SECS
) -> dcap_qvl.VerifiedReport:
    return dcap_qvl.verify_with_root_ca(
        quote, dcap_qvl.QuoteCollateralV3(**collateral.as_dcap_qvl_kwargs()), world.pki.root_der, now_secs
    )


@pytest.mark.parametrize("ca", ["platform", "processor"])
@pytest.mark.parametrize(
    ("level", "status"),
    [
        ("uptodate", TcbStatus.UP_TO_DATE),
        ("swhard", TcbStatus.SW_HARDENING_NEEDED),
        ("config", TcbStatus.CONFIGURATION_NEEDED),
        ("outofdate", TcbStatus.OUT_OF_DATE),
    ],
)
def test_dcap_qvl_accepts_with_the_same_status(ca: str, level: str, status: TcbStatus) -> None:
    world = World.build(ca=ca)
    quote = world.quote(level)
    collateral = world.collateral(ca=ca)
    ours = verify_quote(quote, collateral, world.pki.root_der, NOW)
    theirs = qvl(world, quote, collateral)
    assert ours.accepted and ours.status is status
    assert theirs.status == str(ours.status) == status.value
    assert tuple(theirs.advisory_ids) == ours.advisory_ids
    assert theirs.ppid == ours.pck.ppid


def test_qe_out_of_date_agrees_where_the_rules_coincide(world: World) -> None:
    # Platform UpToDate + QE OutOfDate: QVL convergence and dcap-qvl's worst-of both give OutOfDate.
    quote = world.quote("uptodate", qe_isv_svn=6)
    ours = verify_quote(quote, world.collateral(), world.pki.root_der, NOW)
    theirs = qvl(world, quote, world.collateral())
    assert ours.status is TcbStatus.OUT_OF_DATE and theirs.status == "OutOfDate"
    assert tuple(theirs.advisory_ids) == ours.advisory_ids == ("INTEL-SA-00615",)


def test_after_a_tcb_recovery_both_see_out_of_date_then_up_to_date_with_a_new_pck() -> None:
    world = World.build()
    old = world.pck("uptodate")
    event = dt.datetime(2025, 5, 20, tzinfo=dt.UTC)
    new_tcb = bytes(old.extension.tcb_components[:1]) + bytes([7]) + bytes(old.extension.tcb_components[2:])
    world.model.publish_recovery(
        components=tuple(new_tcb), pcesvn=13, date=event, advisory_ids=["INTEL-SA-09999"]
    )
    new = world.pcs.add_pck_cert(old.extension.ppid, new_tcb, 13)
    for pck, status in ((old, "OutOfDate"), (new, "UpToDate")):
        quote = world.quote(pck=pck)
        ours = verify_quote(quote, world.collateral(), world.pki.root_der, NOW)
        theirs = qvl(world, quote, world.collateral())
        assert theirs.status == str(ours.status) == status
        assert tuple(theirs.advisory_ids) == ours.advisory_ids
    assert world.model.tcb_evaluation_data_number == 18


def test_both_refuse_a_revoked_tcb(world: World) -> None:
    quote = world.quote("revoked")
    ours = verify_quote(quote, world.collateral(), world.pki.root_der, NOW)
    assert ours.status is TcbStatus.REVOKED and not ours.accepted
    with pytest.raises(ValueError, match="Revoked"):
        qvl(world, quote, world.collateral())


def test_both_refuse_a_revoked_pck_certificate(world: World) -> None:
    quote = world.quote("uptodate")
    world.pki.revoke(world.pck("uptodate").cert, NOW - dt.timedelta(days=1))
    collateral = world.collateral()
    with pytest.raises(VerificationError) as info:
        verify_quote(quote, collateral, world.pki.root_der, NOW)
    assert info.value.reason is VerificationReason.CERT_REVOKED
    with pytest.raises(ValueError, match="CertRevoked"):
        qvl(world, quote, collateral)


@pytest.mark.parametrize(
    ("case", "reason", "their_message"),
    [
        (
            "tampered_tcb_info",
            VerificationReason.TCB_INFO_SIGNATURE_INVALID,
            "Signature is invalid for tcb_info",
        ),
        (
            "tampered_qe_identity",
            VerificationReason.QE_IDENTITY_SIGNATURE_INVALID,
            "Signature is invalid for qe_identity",
        ),
        ("expired", VerificationReason.TCB_INFO_EXPIRED, "TCBInfo expired"),
        ("wrong_root", VerificationReason.UNTRUSTED_ROOT, "InvalidSignatureForPublicKey"),
        ("debug_qe", VerificationReason.QE_IDENTITY_MISMATCH, "Debug mode is enabled"),
        (
            "bad_quote_signature",
            VerificationReason.QUOTE_SIGNATURE_INVALID,
            "enclave report signature is invalid",
        ),
    ],
)
def test_both_refuse_broken_inputs(case: str, reason: VerificationReason, their_message: str) -> None:
    world = World.build()
    world.pcs.crl_validity = dt.timedelta(days=365)
    quote = world.quote("uptodate")
    collateral = world.collateral()
    now = NOW
    if case == "tampered_tcb_info":
        collateral = collateral.replace(tcb_info=collateral.tcb_info.replace('"pcesvn":13', '"pcesvn":12', 1))
    elif case == "tampered_qe_identity":
        collateral = collateral.replace(
            qe_identity=collateral.qe_identity.replace('"isvsvn":8', '"isvsvn":7')
        )
    elif case == "expired":
        now = NOW + dt.timedelta(days=31)
    elif case == "wrong_root":
        quote = World.build(seed=2).quote("uptodate")
    elif case == "debug_qe":
        quote = world.quote("uptodate", qe_flags=0x17)
    else:
        raw = bytearray(quote)
        raw[440] ^= 0x80
        quote = bytes(raw)
    with pytest.raises(VerificationError) as info:
        verify_quote(quote, collateral, world.pki.root_der, now)
    assert info.value.reason is reason
    with pytest.raises(ValueError, match=their_message):
        qvl(world, quote, collateral, int(now.timestamp()))


def test_dcap_qvl_rejects_v4_sgx_quotes_that_we_accept(world: World) -> None:
    # dcap-qvl verifies SGX only as v3 ("SGX TEE quote must have version 3"); v4 is ours alone.
    quote = world.quote("uptodate", version=4)
    assert verify_quote(quote, world.collateral(), world.pki.root_der, NOW).status is TcbStatus.UP_TO_DATE
    with pytest.raises(ValueError, match="version 3"):
        qvl(world, quote, world.collateral())
