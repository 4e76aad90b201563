"""TCB Info v3 / QE Identity v2 JSON, signatures over the served text, and the TCB model."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.attest.attest_world import FMSPC, LEVELS, NOW, QE_MRSIGNER, UTC, World, comps

from sgxsim.attest import (
    Collateral,
    TcbLevel,
    TcbModel,
    TcbStatus,
    VerificationReason,
    ecdsa_raw_verify,
    parse_qe_identity,
    parse_tcb_info,
    split_envelope,
)
from sgxsim.attest.collateral import sort_tcb_levels
from sgxsim.errors import InvalidArgument, VerificationError

FAST = settings(max_examples=100, deadline=None, database=None)


def test_tcb_info_json_matches_intel_shape(world: World) -> None:
    doc = world.pcs.tcb_info(FMSPC, NOW)
    info = json.loads(doc.body)
    assert list(info) == [
        "id",
        "version",
        "issueDate",
        "nextUpdate",
        "fmspc",
        "pceId",
        "tcbType",
        "tcbEvaluationDataNumber",
        "tcbLevels",
    ]
    assert (info["id"], info["version"], info["tcbType"], info["tcbEvaluationDataNumber"]) == (
        "SGX",
        3,
        0,
        17,
    )
    assert info["issueDate"] == "2025-06-01T12:00:00Z" and info["nextUpdate"] == "2025-07-01T12:00:00Z"
    assert info["fmspc"] == "00906ed50000" and info["pceId"] == "0000"
    top = info["tcbLevels"][0]
    assert list(top) == ["tcb", "tcbDate", "tcbStatus"]
    components = top["tcb"]["sgxtcbcomponents"]
    assert len(components) == 16 and top["tcb"]["pcesvn"] == 13
    assert components[0] == {"svn": 6, "category": "BIOS", "type": "Early Microcode Update"}
    assert components[1] == {"svn": 6, "category": "OS/VMM", "type": "SGX Late Microcode Update"}
    assert components[2] == {"svn": 3, "category": "OS/VMM", "type": "TXT SINIT"}
    assert components[6] == {"svn": 0}
    assert [lv["tcbStatus"] for lv in info["tcbLevels"]] == [
        "UpToDate",
        "SWHardeningNeeded",
        "ConfigurationNeeded",
        "OutOfDate",
        "Revoked",
    ]
    assert info["tcbLevels"][3]["advisoryIDs"] == ["INTEL-SA-00828", "INTEL-SA-00837"]
    assert ": " not in doc.body and ", " not in doc.body  # compact separators, as served
    # The signature is over the exact inner text, verifiable with the TCB Signing key.
    assert ecdsa_raw_verify(world.pki.tcb_signing_cert.public_key(), doc.signature, doc.body.encode())  # type: ignore[arg-type]
    envelope = doc.envelope()
    assert envelope.startswith('{"tcbInfo":{"id":"SGX","version":3,')
    assert split_envelope(envelope, "tcbInfo") == (doc.body, doc.signature)
    assert json.loads(envelope)["signature"] == doc.signature.hex()


def test_qe_identity_json_matches_intel_shape(world: World) -> None:
    doc = world.pcs.qe_identity(NOW)
    ident = json.loads(doc.body)
    assert list(ident) == [
        "id",
        "version",
        "issueDate",
        "nextUpdate",
        "tcbEvaluationDataNumber",
        "miscselect",
        "miscselectMask",
        "attributes",
        "attributesMask",
        "mrsigner",
        "isvprodid",
        "tcbLevels",
    ]
    assert (ident["id"], ident["version"], ident["isvprodid"]) == ("QE", 2, 1)
    assert ident["miscselect"] == "00000000" and ident["miscselectMask"] == "FFFFFFFF"
    assert ident["attributes"] == "11000000000000000000000000000000"
    assert ident["attributesMask"] == "FBFFFFFFFFFFFFFF0000000000000000"
    assert ident["mrsigner"] == QE_MRSIGNER.hex().upper()
    assert ident["tcbLevels"][0] == {
        "tcb": {"isvsvn": 8},
        "tcbDate": "2024-03-13T00:00:00Z",
        "tcbStatus": "UpToDate",
    }
    assert split_envelope(doc.envelope(), "enclaveIdentity") == (doc.body, doc.signature)


def test_parsers_round_trip_the_generated_documents(world: World) -> None:
    info = parse_tcb_info(world.pcs.tcb_info(FMSPC, NOW).body)
    assert info.levels == tuple(LEVELS.values())
    assert info.fmspc == FMSPC and info.issue_date == NOW and info.next_update == NOW + dt.timedelta(days=30)
    ident = parse_qe_identity(world.pcs.qe_identity(NOW).body)
    assert ident.mrsigner == QE_MRSIGNER and [lv.isvsvn for lv in ident.levels] == [8, 6]
    assert ident.miscselect_mask == 0xFFFFFFFF and ident.attributes[0] == 0x11


def test_levels_sort_in_qvl_order() -> None:
    base = dt.datetime(2024, 1, 1, tzinfo=UTC)
    a = TcbLevel(comps(2, 9), 1, base, "UpToDate")  # type: ignore[arg-type]
    b = TcbLevel(comps(3, 0), 1, base, "OutOfDate")  # type: ignore[arg-type]
    c = TcbLevel(comps(3, 0), 7, base, "OutOfDate")  # type: ignore[arg-type]
    assert sort_tcb_levels([a, b, c]) == [c, b, a]  # components lexicographic, then PCESVN


def _mutated(body: str, path: list[object], value: object) -> str:
    obj = json.loads(body)
    target = obj
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(obj)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (["id"], "TDX"),
        (["version"], 2),
        (["tcbType"], 1),
        (["fmspc"], "00906ed5"),
        (["pceId"], "zz00"),
        (["issueDate"], "2025-06-01 12:00:00"),
        (["nextUpdate"], KeyError),
        (["tcbLevels"], []),
        (["tcbLevels", 0, "tcbStatus"], "Fine"),
        (["tcbLevels", 0, "tcb", "pcesvn"], -1),
        (["tcbLevels", 0, "tcb", "sgxtcbcomponents", 3, "svn"], 256),
        (["tcbLevels", 0, "tcb", "sgxtcbcomponents", 3], KeyError),
        (["tcbLevels", 0, "advisoryIDs"], [1]),
        (["tcbEvaluationDataNumber"], True),
    ],
)
def test_parse_tcb_info_rejects_malformed(world: World, path: list[object], value: object) -> None:
    body = world.pcs.tcb_info(FMSPC, NOW).body
    with pytest.raises(VerificationError) as info:
        parse_tcb_info(_mutated(body, path, value))
    assert info.value.reason is VerificationReason.MALFORMED_TCB_INFO


@FAST
@given(st.text(max_size=200))
def test_parsers_never_raise_anything_else(text: str) -> None:
    for parse, reason in (
        (parse_tcb_info, VerificationReason.MALFORMED_TCB_INFO),
        (parse_qe_identity, VerificationReason.MALFORMED_QE_IDENTITY),
    ):
        with pytest.raises(VerificationError) as info:
            parse(text)
        assert info.value.reason is reason


def test_publish_recovery_demotes_dominated_levels() -> None:
    model = TcbModel(fmspc=FMSPC, levels=LEVELS.values(), tcb_evaluation_data_number=17)
    event = dt.datetime(2025, 11, 11, tzinfo=UTC)
    new = model.publish_recovery(
        components=comps(7, 7, 3, 3, 4, 1, 0, 3), pcesvn=13, date=event, advisory_ids=["INTEL-SA-01234"]
    )
    assert model.tcb_evaluation_data_number == 18 and model.recovery_events == [(18, event)]
    assert model.levels[0] == new and new.status is TcbStatus.UP_TO_DATE and new.tcb_date == event
    by_old = {lv.components: lv for lv in model.levels}
    old_top = by_old[LEVELS["uptodate"].components]
    assert old_top.status is TcbStatus.OUT_OF_DATE and old_top.advisory_ids == ("INTEL-SA-01234",)
    assert by_old[LEVELS["swhard"].components].status is TcbStatus.OUT_OF_DATE
    assert by_old[LEVELS["swhard"].components].advisory_ids == ("INTEL-SA-00615", "INTEL-SA-01234")
    assert by_old[LEVELS["config"].components].status is TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED
    assert by_old[LEVELS["revoked"].components].status is TcbStatus.REVOKED
    # A platform still at the old top level now matches OutOfDate; the new TCB matches UpToDate.
    assert model.match(LEVELS["uptodate"].components, 13) == old_top
    assert model.match(comps(7, 7, 3, 3, 4, 1, 0, 3), 13) == new
    assert model.match(comps(0), 0) is None


def test_publish_recovery_leaves_incomparable_levels_alone() -> None:
    base = dt.datetime(2024, 1, 1, tzinfo=UTC)
    other = TcbLevel(comps(1, 1, 9), 13, base, TcbStatus.UP_TO_DATE)
    model = TcbModel(fmspc=FMSPC, levels=[other], tcb_evaluation_data_number=1)
    model.publish_recovery(components=comps(2, 2, 2), pcesvn=13, date=base)
    assert model.find(other.components, 13) == other


def test_model_and_collateral_argument_checks() -> None:
    with pytest.raises(InvalidArgument):
        TcbModel(fmspc=b"123", levels=[], tcb_evaluation_data_number=1)
    with pytest.raises(InvalidArgument):
        TcbModel(fmspc=FMSPC, levels=[], tcb_evaluation_data_number=1, tcb_type=1)
    with pytest.raises(InvalidArgument):
        TcbLevel(comps(256), 0, NOW, TcbStatus.UP_TO_DATE)
    with pytest.raises(InvalidArgument):
        TcbLevel(comps(1), 0, dt.datetime(2024, 1, 1), TcbStatus.UP_TO_DATE)
    with pytest.raises(ValueError, match="Bogus"):
        TcbLevel(comps(1), 0, NOW, "Bogus")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        Collateral("", b"", b"", "", "", "not bytes", "", "", b"")  # type: ignore[arg-type]
