"""`sgxsim tcb-impact`: demoted platforms, when it bites, and the TCB they need (issue 13, item 4)."""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives import serialization
from tests.attest.attest_world import NOW, World, comps

from sgxsim.attest import PcsHttpServer, TcbModel
from sgxsim.cli import main
from sgxsim.cli.attest import quote

EXIT_DEMOTION = 3
REAL = Path(__file__).parents[1] / "attest" / "data" / "real-dcap"


def impact(*args: str) -> Result:
    return CliRunner().invoke(main, ["tcb-impact", *args])


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three platforms at late-microcode SVN 1, 2, 3 and a TCB recovery to SVN 3."""
    out = tmp_path_factory.mktemp("fleet")
    args = ["--out", str(out), "--platforms", "3", "--late-microcode-svn", "1,2,3", "--recovery-svn", "3"]
    result = CliRunner().invoke(quote, args)
    assert result.exit_code == 0, result.output
    return out


def run_fleet(fleet: Path, *args: str, new: Path | None = None) -> Result:
    return impact(
        str(fleet),
        "--collateral",
        str(fleet),
        "--new",
        str(new or fleet / "tcb-info-recovery.json"),
        "--root",
        str(fleet / "root.pem"),
        "--at",
        "2025-06-01T00:00:00Z",
        *args,
    )


def test_fleet_after_a_recovery_demoted_platforms_and_their_svn(fleet: Path) -> None:
    result = run_fleet(fleet, "--json")
    assert result.exit_code == EXIT_DEMOTION, result.output
    report = json.loads(result.output)
    rows = {Path(p["platform"]).name: p for p in report["platforms"]}
    assert sorted(rows) == [f"quote-platform-0{i}.bin" for i in range(3)]
    svn1, svn2, svn3 = (rows[f"quote-platform-0{i}.bin"] for i in range(3))
    # Already OutOfDate at SVN 1: not demoted, but still needs SVN 3.
    assert (svn1["status_now"], svn1["status_new"], svn1["demoted"]) == ("OutOfDate", "OutOfDate", False)
    assert svn1["requires"]["late_microcode_svn"] == 3 and svn1["bites_at"] is None
    for row in (svn2, svn3):
        assert (row["status_now"], row["status_new"], row["demoted"]) == (
            "SWHardeningNeeded",
            "OutOfDate",
            True,
        )
        assert row["requires"]["late_microcode_svn"] == 3 and row["verification"] == "ok"
        assert row["bites_at"] == row["effective"] == "2025-06-08T00:00:00Z"
    # SVN 3 already runs the recovered microcode: its quote still carries the SVN-2 certificate.
    assert svn2["requires"]["new_pck_certificate_only"] is False
    assert svn3["requires"]["new_pck_certificate_only"] is True
    assert report["demoted"] == 2 and report["new_tcb_info_signed"] is True
    new = report["tcb_info_new"]["00906ed50000"]
    assert (
        new["tcb_evaluation_data_number"]
        == report["tcb_info_now"]["00906ed50000"]["tcb_evaluation_data_number"] + 1
    )


def test_table_and_grace_period(fleet: Path) -> None:
    table = run_fleet(fleet, "--grace", "30d")
    assert table.exit_code == EXIT_DEMOTION
    assert "2 of 3 platforms will be demoted" in table.output
    assert "SGX Late Microcode Update SVN 2 -> 3" in table.output and "2025-07-08T00:00:00Z" in table.output


def test_no_demotion_exits_0(fleet: Path, tmp_path: Path) -> None:
    collateral = json.loads((fleet / "collateral.json").read_text())
    same = tmp_path / "same.json"
    same.write_text(collateral["tcb_info"])  # today's TCB Info as a user-written file
    result = run_fleet(fleet, "--json", new=same)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["demoted"] == 0 and report["new_tcb_info_signed"] is False


def test_real_evidence_with_a_user_written_tcb_info(tmp_path: Path) -> None:
    case = REAL / "q1_dcapqvl_2025-06"
    collateral = json.loads((case / "collateral.json").read_text())
    info = json.loads(collateral["tcb_info"])
    top = copy.deepcopy(info["tcbLevels"][0])
    for comp in top["tcb"]["sgxtcbcomponents"][:2]:
        comp["svn"] += 1
    top["tcbDate"], top["tcbStatus"], top["advisoryIDs"] = "2025-11-11T00:00:00Z", "UpToDate", []
    for level in info["tcbLevels"]:
        level["tcbStatus"] = "OutOfDate"
    info["tcbLevels"].insert(0, top)
    info["issueDate"], info["tcbEvaluationDataNumber"] = (
        "2025-11-11T00:00:00Z",
        info["tcbEvaluationDataNumber"] + 1,
    )
    new = tmp_path / "tcb-info-user.json"
    new.write_text(json.dumps({"tcbInfo": info}))
    meta = json.loads((case / "meta.json").read_text())
    args = [str(case), "--collateral", str(case), "--new", str(new), "--root", str(case / "root.pem")]
    result = impact(*args, "--at", meta["at"], "--json")
    assert result.exit_code == EXIT_DEMOTION, result.output
    (row,) = json.loads(result.output)["platforms"]
    assert row["status_now"] == "ConfigurationAndSWHardeningNeeded" and row["status_new"] == "OutOfDate"
    assert row["verification"] == "ok" and row["bites_at"] == "2025-11-11T00:00:00Z"
    needed = {c["index"]: c["need"] for c in row["requires"]["components"]}
    have = row["pck_tcb"]["sgxtcbcomponents"]
    assert needed and all(needed[i] > have[i - 1] for i in needed)


def test_pcs_v4_service_early_update(tmp_path: Path) -> None:
    world = World.build()
    for level in ("uptodate", "swhard"):
        (tmp_path / f"{level}.bin").write_bytes(world.quote(level))
    (tmp_path / "root.pem").write_bytes(world.pki.root_cert.public_bytes(serialization.Encoding.PEM))
    early = TcbModel(fmspc=world.model.fmspc, levels=world.model.levels, tcb_evaluation_data_number=17)
    early.publish_recovery(
        components=comps(7, 7, 3, 3, 4, 1, 0, 3), pcesvn=13, date=NOW + dt.timedelta(days=1)
    )
    world.pcs.add_tcb_model(early, update="early")
    with PcsHttpServer(world.pcs, lambda: NOW) as server:
        args = [
            str(tmp_path),
            "--pcs",
            server.base_url,
            "--root",
            str(tmp_path / "root.pem"),
            "--at",
            NOW.isoformat(),
        ]
        result = impact(*args, "--json")
        standard = impact(*args, "--new-update", "standard")
    assert result.exit_code == EXIT_DEMOTION, result.output
    rows = {Path(p["platform"]).name: p for p in json.loads(result.output)["platforms"]}
    assert (
        rows["uptodate.bin"]["status_now"] == "UpToDate" and rows["uptodate.bin"]["status_new"] == "OutOfDate"
    )
    assert rows["uptodate.bin"]["requires"]["late_microcode_svn"] == 7
    assert standard.exit_code == 0, standard.output  # the standard TCB Info has not changed
    down = impact(*args)  # the same URL: the server is stopped now
    assert down.exit_code == 2 and "unreachable" in down.output and "Traceback" not in down.output


@pytest.mark.parametrize("case", ["empty", "garbage-new", "bad-signature", "usage"])
def test_bad_input_exits_2(fleet: Path, tmp_path: Path, case: str) -> None:
    if case == "empty":
        (tmp_path / "note.txt").write_text("nothing here")
        result = impact(
            str(tmp_path),
            "--collateral",
            str(fleet),
            "--new",
            str(fleet / "tcb-info-recovery.json"),
            "--root",
            str(fleet / "root.pem"),
        )
    elif case == "garbage-new":
        bad = tmp_path / "new.json"
        bad.write_bytes(b"\xff\xfe not json")
        result = run_fleet(fleet, new=bad)
    elif case == "bad-signature":
        text = (fleet / "tcb-info-recovery.json").read_text().replace('"pcesvn":13', '"pcesvn":12', 1)
        bad = tmp_path / "new.json"
        bad.write_text(text)
        result = run_fleet(fleet, new=bad)
    else:
        result = impact(str(fleet), "--root", str(fleet / "root.pem"))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "Error" in result.output


def test_pcs_answering_garbage_exits_2(fleet: Path) -> None:
    import http.server
    import threading

    class Garbage(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html>maintenance</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Garbage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = impact(str(fleet), "--pcs", url, "--root", str(fleet / "root.pem"), "--at", "2025-06-01")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert result.exit_code == 2 and "garbage" in result.output and "Traceback" not in result.output
