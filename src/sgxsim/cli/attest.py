"""``sgxsim quote`` and ``sgxsim verify``: attestation evidence from a simulated machine, and its verdict.

``quote`` builds a default platform (machine, kernel, attestation world for ``--seed``), runs the
attestable application enclave of :mod:`sgxsim.sdk.quoting` under it, quotes it through the
platform's PCE and QE and writes, into ``--out``:

* ``quote.bin`` -- the DCAP quote (v3 by default, v4 with ``--version 4``);
* ``collateral.json`` -- the PCS collateral, as dcap-qvl's ``QuoteCollateralV3.to_json()`` writes
  it (its nine field names; CRLs and signatures hex, chains and JSON documents as text);
* ``root.pem`` -- the trust anchor ("Intel SGX Root CA" of the simulated world);
* ``report.json`` -- a summary of the quote: header SVNs, the report body, the PCK TCB, and our
  verifier's status at generation time.

``verify QUOTE --collateral DIR_OR_FILE --root ROOT.pem [--at ISO8601]`` checks a quote with
:func:`sgxsim.attest.verify_quote` and prints the TCB status and advisory IDs. ``--at`` defaults
to the TCB Info ``issueDate`` of the collateral (there is no wall clock). Exit codes: 0 accepted;
1 rejected (a verification error, with its reason, or a Revoked TCB); 2 usage (unreadable files,
malformed collateral JSON or root PEM, bad options).

The commands are plain :class:`click.Command` objects for the ``sgxsim`` group to register.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import click
from cryptography import x509

from sgxsim.attest import Collateral, VerifiedQuote, parse_quote, parse_tcb_info, verify_quote
from sgxsim.errors import InvalidArgument, VerificationError
from sgxsim.hw.machine import Machine, MachineConfig
from sgxsim.kernel.main import Kernel
from sgxsim.kernel.process import Process
from sgxsim.rand import Rng
from sgxsim.sdk.quoting import build_app, load_app
from sgxsim.sdk.sign import generate_signing_key
from sgxsim.sim.attestation import AttestationWorld

__all__ = ["collateral_from_json", "collateral_to_json", "quote", "verify"]

_BINARY_FIELDS = frozenset({"root_ca_crl", "pck_crl", "tcb_info_signature", "qe_identity_signature"})
_FIELDS = tuple(f.name for f in dataclasses.fields(Collateral))


def collateral_to_json(collateral: Collateral) -> str:
    """dcap-qvl's QuoteCollateralV3 JSON: the nine fields, binary ones as lowercase hex."""
    obj = {
        name: getattr(collateral, name).hex() if name in _BINARY_FIELDS else getattr(collateral, name)
        for name in _FIELDS
    }
    return json.dumps(obj, indent=2)


def collateral_from_json(text: str) -> Collateral:
    """Inverse of :func:`collateral_to_json`; ``InvalidArgument`` naming the defect otherwise."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        raise InvalidArgument("collateral is not JSON") from None
    if not isinstance(obj, dict) or set(obj) != set(_FIELDS):
        got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise InvalidArgument(f"collateral must have exactly the fields {list(_FIELDS)}, got {got}")
    values: dict[str, Any] = {}
    for name in _FIELDS:
        value = obj[name]
        if not isinstance(value, str):
            raise InvalidArgument(f"collateral field {name!r} must be a string")
        if name in _BINARY_FIELDS:
            try:
                values[name] = bytes.fromhex(value)
            except ValueError:
                raise InvalidArgument(f"collateral field {name!r} is not hex") from None
        else:
            values[name] = value
    return Collateral(**values)


def _summary(quote_bytes: bytes, verified: VerifiedQuote | None) -> dict[str, Any]:
    q = parse_quote(quote_bytes)
    body = q.report_body
    out: dict[str, Any] = {
        "quote_version": q.version,
        "qe_svn": q.header.qe_svn,
        "pce_svn": q.header.pce_svn,
        "report_body": {
            "cpu_svn": body.cpu_svn.hex(),
            "misc_select": body.misc_select,
            "attributes": body.attributes.hex(),
            "mr_enclave": body.mr_enclave.hex(),
            "mr_signer": body.mr_signer.hex(),
            "isv_prod_id": body.isv_prod_id,
            "isv_svn": body.isv_svn,
            "report_data": body.report_data.hex(),
        },
    }
    if verified is not None:
        out["pck"] = {
            "cpusvn": verified.pck.cpusvn.hex(),
            "pcesvn": verified.pck.pcesvn,
            "fmspc": verified.pck.fmspc.hex(),
            "ppid": verified.pck.ppid.hex(),
        }
        out["tcb_status"] = str(verified.status)
        out["advisory_ids"] = list(verified.advisory_ids)
    return out


@click.command("quote")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write quote.bin, collateral.json, root.pem and report.json into.",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the world.")
@click.option(
    "--version",
    "quote_version",
    type=click.Choice(["3", "4"]),
    default="3",
    show_default=True,
    help="Quote format version.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def quote(out_dir: Path, seed: int, quote_version: str, as_json: bool) -> None:
    """Quote an application enclave on a default simulated platform and write the evidence."""
    world = AttestationWorld(seed)
    rng = Rng(seed)
    machine = Machine(MachineConfig(), rng.child("machine"))
    kernel = Kernel(machine)
    platform = world.add_platform(machine, kernel)
    isv_key = generate_signing_key(rng.stream("isv"))
    app = load_app(Process(kernel, "app"), build_app(isv_key), rng.stream("keyid"))
    nonce = hashlib.sha256(f"sgxsim quote --seed {seed}".encode()).digest()
    result = platform.attest(app, at_ns=0, report_data=nonce, version=int(quote_version))
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "quote": out_dir / "quote.bin",
        "collateral": out_dir / "collateral.json",
        "root": out_dir / "root.pem",
        "report": out_dir / "report.json",
    }
    summary = _summary(result.quote, result.verified)
    summary["generated_at"] = world.datetime_at(0).isoformat()
    files["quote"].write_bytes(result.quote)
    files["collateral"].write_text(collateral_to_json(result.collateral) + "\n")
    files["root"].write_bytes(world.root_pem)
    files["report"].write_text(json.dumps(summary, indent=2) + "\n")
    if as_json:
        click.echo(json.dumps({**summary, "files": {k: str(v) for k, v in files.items()}}, indent=2))
        return
    click.echo(f"quote v{quote_version}: {len(result.quote)} bytes -> {files['quote']}")
    body = summary["report_body"]
    click.echo(f"MRENCLAVE {body['mr_enclave']}")
    click.echo(f"MRSIGNER  {body['mr_signer']}")
    click.echo(f"CPUSVN    {body['cpu_svn']}  ISVPRODID {body['isv_prod_id']}  ISVSVN {body['isv_svn']}")
    if "tcb_status" in summary:
        advisories = ", ".join(summary["advisory_ids"]) or "none"
        click.echo(f"TCB status {summary['tcb_status']} (advisories: {advisories})")
    click.echo(f"collateral -> {files['collateral']}; root -> {files['root']}; summary -> {files['report']}")


def _parse_at(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 date/time: {value!r}", param_hint="--at") from None
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


def _load_collateral(path: Path) -> Collateral:
    file = path / "collateral.json" if path.is_dir() else path
    try:
        text = file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {file}: {exc}", param_hint="--collateral") from None
    try:
        return collateral_from_json(text)
    except InvalidArgument as exc:
        raise click.BadParameter(f"{file}: {exc}", param_hint="--collateral") from None


def _load_root(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise click.BadParameter(f"{path}: not a PEM certificate ({exc})", param_hint="--root") from None


@click.command("verify")
@click.argument("quote_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--collateral",
    "collateral_path",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="collateral.json, or the directory holding it.",
)
@click.option(
    "--root",
    "root_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Trust anchor (PEM).",
)
@click.option(
    "--at", "at_text", default=None, help="Verification time, ISO 8601 (default: TCB Info issueDate)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def verify(
    ctx: click.Context,
    quote_file: Path,
    collateral_path: Path,
    root_path: Path,
    at_text: str | None,
    as_json: bool,
) -> None:
    """Verify a quote against collateral and a root CA; print the TCB status and advisory IDs."""
    collateral = _load_collateral(collateral_path)
    root = _load_root(root_path)
    at = _parse_at(at_text)
    quote_bytes = quote_file.read_bytes()
    try:
        if at is None:
            at = parse_tcb_info(collateral.tcb_info).issue_date
        verified = verify_quote(quote_bytes, collateral, root, at)
    except VerificationError as exc:
        name = getattr(exc.reason, "name", str(exc.reason))
        if as_json:
            click.echo(json.dumps({"accepted": False, "error": name, "detail": exc.detail}, indent=2))
        else:
            click.echo(f"rejected: {name}" + (f": {exc.detail}" if exc.detail else ""))
        ctx.exit(1)
    except InvalidArgument as exc:
        raise click.UsageError(str(exc)) from None
    report: dict[str, Any] = {
        "accepted": verified.accepted,
        "status": str(verified.status),
        "advisory_ids": list(verified.advisory_ids),
        "platform_status": str(verified.platform_status),
        "qe_status": str(verified.qe_status),
        "tcb_evaluation_data_number": verified.tcb_evaluation_data_number,
        "at": at.isoformat(),
        "mr_enclave": verified.mr_enclave.hex(),
        "mr_signer": verified.mr_signer.hex(),
        "isv_prod_id": verified.isv_prod_id,
        "isv_svn": verified.isv_svn,
        "report_data": verified.report_data.hex(),
        "fmspc": verified.pck.fmspc.hex(),
    }
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(f"status: {report['status']}")
        click.echo(f"accepted: {'yes' if verified.accepted else 'no'}")
        click.echo(f"advisory IDs: {', '.join(report['advisory_ids']) or 'none'}")
    if not verified.accepted:
        ctx.exit(1)
