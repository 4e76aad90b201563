"""Real DCAP evidence (Intel hardware, Intel PCS): sgxsim gives dcap-qvl's verdict, via API and CLI.

The three cases are copies of ``shared/data/real-dcap`` (see its README for provenance) in
``tests/attest/data/real-dcap``. dcap-qvl's verdict is computed here at meta.json's ``at``; on
these cases QVL and dcap-qvl agree (both: platform status from the PCK certificate's TCB, QE
Identity UpToDate), so no difference needs explaining. Without ``--at`` (now) every case's
collateral has expired and the error names the item and its window.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import dcap_qvl
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sgxsim.attest import verify_quote
from sgxsim.cli.attest import collateral_from_json, verify
from sgxsim.errors import VerificationError

DATA = Path(__file__).parent / "data" / "real-dcap"
CASES = sorted(p.name for p in DATA.iterdir() if p.is_dir())


def load(case: str) -> tuple[bytes, str, x509.Certificate, dt.datetime]:
    folder = DATA / case
    meta = json.loads((folder / "meta.json").read_text())
    at = dt.datetime.fromisoformat(meta["at"].replace("Z", "+00:00"))
    root = x509.load_pem_x509_certificate((folder / "root.pem").read_bytes())
    return (folder / "quote.bin").read_bytes(), (folder / "collateral.json").read_text(), root, at


def dcap_qvl_verdict(
    quote: bytes, collateral: str, root: x509.Certificate, at: dt.datetime
) -> tuple[str, list[str]]:
    report = dcap_qvl.verify_with_root_ca(
        quote,
        dcap_qvl.QuoteCollateralV3.from_json(collateral),
        root.public_bytes(serialization.Encoding.DER),
        int(at.timestamp()),
    )
    return report.status, list(report.advisory_ids)


def test_the_three_cases_are_present() -> None:
    assert CASES == ["q1_dcapqvl_2023-11", "q1_dcapqvl_2025-06", "q3_automata_v3_2025-08"]


@pytest.mark.parametrize("case", CASES)
def test_api_gives_dcap_qvls_verdict(case: str) -> None:
    quote, collateral, root, at = load(case)
    status, advisories = dcap_qvl_verdict(quote, collateral, root, at)
    ours = verify_quote(quote, collateral_from_json(collateral), root, at)
    assert ours.accepted and str(ours.status) == status and list(ours.advisory_ids) == advisories
    assert not ours.debug
    meta = json.loads((DATA / case / "meta.json").read_text())
    if meta["expect_upstream"] is not None:  # the source project's own expectation
        assert status == meta["expect_upstream"]["status"]
        assert advisories == meta["expect_upstream"]["advisory_ids"]


@pytest.mark.parametrize("case", CASES)
def test_cli_gives_dcap_qvls_verdict(case: str) -> None:
    quote, collateral, root, at = load(case)
    status, advisories = dcap_qvl_verdict(quote, collateral, root, at)
    folder = DATA / case
    args = [str(folder / "quote.bin"), "--collateral", str(folder), "--root", str(folder / "root.pem")]
    result = CliRunner().invoke(verify, [*args, "--at", at.isoformat(), "--json"])
    assert result.exit_code == 0, result.output
    ours = json.loads(result.output)
    assert (ours["status"], ours["advisory_ids"], ours["accepted"]) == (status, advisories, True)
    # Today: expired collateral, named with its window; dcap-qvl refuses too.
    now = CliRunner().invoke(verify, args)
    assert now.exit_code == 1, now.output
    assert now.output.startswith("rejected: ") and "EXPIRED" in now.output and "is valid from" in now.output
    with pytest.raises(ValueError, match="xpired"):
        dcap_qvl_verdict(quote, collateral, root, dt.datetime.now(dt.UTC))


@pytest.mark.parametrize("case", CASES)
def test_real_collateral_one_second_outside_its_window(case: str) -> None:
    quote, collateral_text, root, _ = load(case)
    collateral = collateral_from_json(collateral_text)
    crl = x509.load_der_x509_crl(collateral.pck_crl)
    with pytest.raises(VerificationError, match="PCK CRL is valid from") as info:
        verify_quote(quote, collateral, root, crl.last_update_utc - dt.timedelta(seconds=1))
    assert info.value.reason.name in {"CRL_NOT_YET_VALID"}
