"""attest.impact.tcb_impact: the API behind `sgxsim tcb-impact` (issue 13, items 4 and 5)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from cryptography.hazmat.primitives import serialization
from tests.attest.attest_world import LEVELS, NOW, World, comps

from sgxsim.attest import TcbStatus
from sgxsim.attest.impact import Evidence, load_evidence, tcb_impact
from sgxsim.errors import InvalidArgument

EVENT = NOW + dt.timedelta(days=3)


def before_after(world: World) -> tuple[str, str]:
    before = world.pcs.tcb_info(world.model.fmspc, NOW).body
    world.model.publish_recovery(components=comps(7, 7, 3, 3, 4, 1, 0, 3), pcesvn=13, date=EVENT)
    return before, world.pcs.tcb_info(world.model.fmspc, EVENT).body


def test_quotes_and_certificates_demoted_by_a_recovery(world: World) -> None:
    quotes = {lv: load_evidence(lv, world.quote(lv)) for lv in ("uptodate", "swhard", "outofdate")}
    cert = load_evidence("cert.pem", world.pck("config").pem)
    assert cert is not None and cert.quote is None
    assert load_evidence("root.pem", world.pki.root_cert.public_bytes(serialization.Encoding.PEM)) is None
    assert load_evidence("notes.txt", b"hello") is None
    evidence = [e for e in (*quotes.values(), cert) if e is not None]
    before, after = before_after(world)
    fleet = tcb_impact(evidence, [before], [after], grace=dt.timedelta(days=30))
    rows = {p.name: p for p in fleet.platforms}
    assert (rows["uptodate"].status_now, rows["uptodate"].status_new) == (
        TcbStatus.UP_TO_DATE,
        TcbStatus.OUT_OF_DATE,
    )
    assert rows["uptodate"].demoted and rows["swhard"].demoted and rows["cert.pem"].demoted
    assert not rows["outofdate"].demoted and rows["outofdate"].bites_at is None
    # Grace: refused from the superseding level's tcbDate (the recovery event) + 30 days.
    assert rows["uptodate"].bites_at == EVENT + dt.timedelta(days=30)
    req = rows["uptodate"].requirement
    assert req is not None and req.late_microcode_svn == 7
    assert [(c.index, c.have, c.need) for c in req.components] == [(1, 6, 7), (2, 6, 7)]
    assert req.raw_tcb_meets is False and "SGX Late Microcode Update SVN 6 -> 7" in req.describe()
    assert rows["cert.pem"].requirement is not None and rows["cert.pem"].requirement.raw_tcb_meets is None
    assert {p.name for p in fleet.demoted} == {"uptodate", "swhard", "cert.pem"}
    assert fleet.to_json()["demoted"] == 3


def test_no_change_no_demotion(world: World) -> None:
    ev = load_evidence("q", world.quote("swhard"))
    assert ev is not None
    text = world.pcs.tcb_info(world.model.fmspc, NOW).body
    fleet = tcb_impact([ev], [text], [text])
    assert not fleet.demoted and fleet.platforms[0].status_now is TcbStatus.SW_HARDENING_NEEDED
    assert fleet.platforms[0].requirement is not None  # SWHardeningNeeded: the UpToDate level is shown
    assert fleet.platforms[0].requirement.level == LEVELS["uptodate"]


def test_unknown_fmspc_and_bad_grace(world: World) -> None:
    ev = load_evidence("q", world.quote("swhard"))
    assert ev is not None
    other = Evidence("x", dataclasses.replace(ev.pck, fmspc=bytes(6)))
    text = world.pcs.tcb_info(world.model.fmspc, NOW).body
    with pytest.raises(InvalidArgument, match="no TCB Info for FMSPC"):
        tcb_impact([other], [text], [text])
    with pytest.raises(InvalidArgument):
        tcb_impact([ev], [text], [text], grace=dt.timedelta(days=-1))


def test_simulated_world_says_which_platforms_a_recovery_demotes() -> None:
    # Item 5's function: the world publishes a recovery and reports its impact on its platforms.
    from sgxsim.sim.attestation import AttestationWorld, TcbRecovery, quote_fleet

    world = AttestationWorld(3)
    quote_fleet(world, [1, 2], seed=3)
    level, fleet = world.publish_recovery_with_impact(
        TcbRecovery.late_microcode(3), at_ns=10**9, grace=dt.timedelta(days=14)
    )
    assert level.components[1] == 3
    svn1, svn2 = fleet.platforms
    assert not svn1.demoted and svn1.status_now is TcbStatus.OUT_OF_DATE
    assert svn2.demoted and (svn2.status_now, svn2.status_new) == (
        TcbStatus.SW_HARDENING_NEEDED,
        TcbStatus.OUT_OF_DATE,
    )
    assert svn2.requirement is not None and svn2.requirement.late_microcode_svn == 3
    assert svn2.bites_at == world.datetime_at(10**9) + dt.timedelta(days=14)
