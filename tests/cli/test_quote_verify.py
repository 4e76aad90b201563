"""`sgxsim quote` / `sgxsim verify`: evidence files from a simulated platform, and their verdict.

The commands are invoked as click commands (the lead registers them on the ``sgxsim`` group).
dcap-qvl must reach the same verdict as ``verify`` on the files ``quote`` writes.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import dcap_qvl
import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sgxsim.attest import parse_quote
from sgxsim.cli.attest import collateral_from_json, collateral_to_json, quote, verify
from sgxsim.errors import InvalidArgument

GENERATED_AT = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)


def run_quote(out: Path, *args: str) -> Result:
    result = CliRunner().invoke(quote, ["--out", str(out), *args])
    assert result.exit_code == 0, result.output
    return result


def run_verify(out: Path, *args: str, quote_file: Path | None = None) -> Result:
    """``sgxsim verify`` at the quote's simulated time unless ``args`` give another ``--at``."""
    at = [] if "--at" in args or "--now" in args else ["--at", GENERATED_AT.isoformat()]
    args = tuple(a for a in args if a != "--now")
    return CliRunner().invoke(
        verify,
        [
            str(quote_file or out / "quote.bin"),
            "--collateral",
            str(out),
            "--root",
            str(out / "root.pem"),
            *at,
            *args,
        ],
    )


@pytest.fixture(scope="module")
def evidence(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("evidence")
    run_quote(out, "--seed", "4")
    return out


def test_quote_writes_the_evidence_files(evidence: Path) -> None:
    assert {p.name for p in evidence.iterdir()} == {
        "quote.bin",
        "collateral.json",
        "root.pem",
        "report.json",
        "verify-command.txt",
        "run.json",
    }
    q = parse_quote((evidence / "quote.bin").read_bytes())
    summary = json.loads((evidence / "report.json").read_text())
    assert summary["quote_version"] == q.version == 3
    assert summary["report_body"]["mr_enclave"] == q.report_body.mr_enclave.hex()
    assert summary["report_body"]["cpu_svn"] == "02" * 16
    assert (summary["qe_svn"], summary["pce_svn"]) == (q.header.qe_svn, q.header.pce_svn) == (8, 13)
    assert summary["tcb_status"] == "SWHardeningNeeded" and summary["advisory_ids"] == ["INTEL-SA-00615"]
    assert summary["pck"]["cpusvn"] == "02" * 16
    root = x509.load_pem_x509_certificate((evidence / "root.pem").read_bytes())
    assert root.subject == root.issuer and root.subject.rfc4514_string().endswith("CN=Intel SGX Root CA")
    # collateral.json is dcap-qvl's own JSON form.
    text = (evidence / "collateral.json").read_text()
    theirs = dcap_qvl.QuoteCollateralV3.from_json(text)
    assert json.loads(theirs.to_json()) == json.loads(text)


def test_quote_output_folder_is_replaced_as_a_whole(tmp_path: Path) -> None:
    """quote writes through the atomic output folder: run.json names its files; the next run
    removes only those (a user's own file stays), and a refused run leaves everything intact."""
    out = tmp_path / "q"
    run_quote(out, "--seed", "1")
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["command"] == "quote" and "quote.bin" in manifest["files"]
    (out / "notes.txt").write_text("mine")
    run_quote(out, "--seed", "1", "--platforms", "2")
    names = {p.name for p in out.iterdir()}
    assert "quote.bin" not in names and {"notes.txt", "run.json"} <= names
    assert len([n for n in names if n.startswith("quote-") and n.endswith(".bin")]) == 2
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    bad = CliRunner().invoke(quote, ["--out", str(out), "--platforms", "2", "--late-microcode-svn", "1,2,3"])
    assert bad.exit_code == 2
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_verify_accepts_and_dcap_qvl_agrees(evidence: Path) -> None:
    result = run_verify(evidence, "--json")
    assert result.exit_code == 0, result.output
    ours = json.loads(result.output)
    assert ours["accepted"] is True and ours["status"] == "SWHardeningNeeded"
    assert ours["advisory_ids"] == ["INTEL-SA-00615"] and ours["at"] == "2025-06-01T00:00:00Z"
    assert ours["debug"] is False and ours["rejected_because"] is None
    assert ours["tcb_date"] == ours["tcb_level"]["tcb_date"] == "2024-11-12T00:00:00Z"
    assert ours["collateral_expiration"]["not_after"] == "2025-07-01T00:00:00Z"
    root_der = x509.load_pem_x509_certificate((evidence / "root.pem").read_bytes()).public_bytes(
        serialization.Encoding.DER
    )
    theirs = dcap_qvl.verify_with_root_ca(
        (evidence / "quote.bin").read_bytes(),
        dcap_qvl.QuoteCollateralV3.from_json((evidence / "collateral.json").read_text()),
        root_der,
        int(GENERATED_AT.timestamp()),
    )
    assert theirs.status == ours["status"] and list(theirs.advisory_ids) == ours["advisory_ids"]
    text = run_verify(evidence)
    assert text.exit_code == 0
    assert "status: SWHardeningNeeded" in text.output and "INTEL-SA-00615" in text.output


def test_quote_v4_and_json_output(tmp_path: Path) -> None:
    result = run_quote(tmp_path, "--version", "4", "--json", "--seed", "4")
    summary = json.loads(result.output)
    assert summary["quote_version"] == 4 and summary["files"]["quote"] == str(tmp_path / "quote.bin")
    assert parse_quote((tmp_path / "quote.bin").read_bytes()).version == 4
    verdict = run_verify(tmp_path, "--json")
    assert verdict.exit_code == 0 and json.loads(verdict.output)["status"] == "SWHardeningNeeded"


def test_same_seed_same_files(evidence: Path, tmp_path: Path) -> None:
    run_quote(tmp_path, "--seed", "4")
    for name in ("quote.bin", "collateral.json", "root.pem", "report.json", "verify-command.txt"):
        ours = (tmp_path / name).read_bytes().replace(bytes(tmp_path), b"OUT")
        assert ours == (evidence / name).read_bytes().replace(bytes(evidence), b"OUT"), name


def test_verify_rejects_with_a_reason(evidence: Path, tmp_path: Path) -> None:
    raw = bytearray((evidence / "quote.bin").read_bytes())
    raw[48 + 320] ^= 1  # REPORTDATA: the attestation key's signature no longer matches
    bad = tmp_path / "bad.bin"
    bad.write_bytes(bytes(raw))
    result = run_verify(evidence, "--json", quote_file=bad)
    assert result.exit_code == 1
    assert json.loads(result.output) == {
        "accepted": False,
        "error": "QUOTE_SIGNATURE_INVALID",
        "detail": "attestation key does not sign header||body",
        "at": "2025-06-01T00:00:00Z",
    }
    stale = run_verify(evidence, "--at", "2025-08-01T00:00:00Z")
    assert stale.exit_code == 1 and stale.output.startswith("rejected: ")
    early = run_verify(evidence, "--at", "2025-05-31T23:59:59")  # naive: UTC
    assert early.exit_code == 1 and "NOT_YET_VALID" in early.output
    truncated = tmp_path / "short.bin"
    truncated.write_bytes(bytes(raw[:100]))
    assert run_verify(evidence, quote_file=truncated).exit_code == 1


def test_verify_usage_errors(evidence: Path, tmp_path: Path) -> None:
    assert run_verify(evidence, "--at", "yesterday").exit_code == 2
    assert CliRunner().invoke(verify, [str(evidence / "quote.bin")]).exit_code == 2  # options missing
    missing = CliRunner().invoke(
        verify,
        [str(tmp_path / "nope.bin"), "--collateral", str(evidence), "--root", str(evidence / "root.pem")],
    )
    assert missing.exit_code == 2
    broken = tmp_path / "collateral.json"
    broken.write_text("{}")
    result = CliRunner().invoke(
        verify,
        [str(evidence / "quote.bin"), "--collateral", str(broken), "--root", str(evidence / "root.pem")],
    )
    assert result.exit_code == 2 and "fields" in result.output
    not_pem = tmp_path / "root.pem"
    not_pem.write_text("hello")
    result = CliRunner().invoke(
        verify, [str(evidence / "quote.bin"), "--collateral", str(evidence), "--root", str(not_pem)]
    )
    assert result.exit_code == 2
    assert CliRunner().invoke(quote, ["--out", str(tmp_path / "x"), "--version", "5"]).exit_code == 2


def test_collateral_json_roundtrip_and_defects(evidence: Path) -> None:
    text = (evidence / "collateral.json").read_text()
    collateral = collateral_from_json(text)
    assert json.loads(collateral_to_json(collateral)) == json.loads(text)
    obj = json.loads(text)
    for change in ({"pck_crl": "zz"}, {"tcb_info": 5}, {"extra": ""}):
        with pytest.raises(InvalidArgument):
            collateral_from_json(json.dumps({**obj, **change}))
    with pytest.raises(InvalidArgument):
        collateral_from_json("[1, 2]")
    with pytest.raises(InvalidArgument):
        collateral_from_json("not json")


def test_quote_prints_and_writes_the_verify_command(evidence: Path) -> None:
    command = (evidence / "verify-command.txt").read_text().split()
    assert (
        command[:2] == ["sgxsim", "verify"] and command[command.index("--at") + 1] == "2025-06-01T00:00:00Z"
    )
    args = command[2:]
    result = CliRunner().invoke(verify, args)
    assert result.exit_code == 0 and "status: SWHardeningNeeded" in result.output


def test_verify_defaults_to_now_and_names_what_expired(evidence: Path) -> None:
    # The simulated collateral is valid in June 2025 only; the wall clock is later.
    result = run_verify(evidence, "--now")
    assert result.exit_code == 1, result.output
    assert result.output.startswith("rejected: CRL_EXPIRED: root CA CRL is valid from 2025-06-01T00:00:00Z")
    assert "expired before the verification time" in result.output


def test_debug_enclave_is_rejected_unless_allowed(tmp_path: Path) -> None:
    from tests.attest.attest_world import NOW, World, isv_body

    world = World.build()
    pck = world.pck("uptodate")
    quote_bytes = world.quote(pck=pck, body=isv_body(pck.extension.cpusvn, attributes_flags=0x07))
    (tmp_path / "quote.bin").write_bytes(quote_bytes)
    (tmp_path / "collateral.json").write_text(collateral_to_json(world.collateral()))
    (tmp_path / "root.pem").write_bytes(world.pki.root_cert.public_bytes(serialization.Encoding.PEM))
    at = ("--at", NOW.isoformat())
    refused = run_verify(tmp_path, *at, "--json")
    assert refused.exit_code == 1 and json.loads(refused.output)["debug"] is True
    assert json.loads(refused.output)["rejected_because"] == "debug enclave"
    text = run_verify(tmp_path, *at)
    assert "accepted: no (debug enclave)" in text.output and "debug enclave: yes" in text.output
    allowed = run_verify(tmp_path, *at, "--allow-debug", "--json")
    assert allowed.exit_code == 0 and json.loads(allowed.output)["accepted"] is True
