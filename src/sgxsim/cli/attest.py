"""``sgxsim quote`` and ``sgxsim verify``: attestation evidence from simulated machines, and its verdict.

``quote`` builds one attestation world for ``--seed`` and ``--platforms`` machines in it (each at
its ``--late-microcode-svn``), runs the attestable application enclave of :mod:`sgxsim.sdk.quoting`
on each, quotes it through the platform's PCE and QE and writes, into ``--out``:

* ``quote.bin`` (one platform) or ``quote-platform-NN.bin`` -- the DCAP quotes (v3, or v4 with
  ``--version 4``);
* ``collateral.json`` -- the PCS collateral, as dcap-qvl's ``QuoteCollateralV3.to_json()`` writes
  it (its nine field names; CRLs and signatures hex, chains and JSON documents as text);
* ``root.pem`` -- the trust anchor ("Intel SGX Root CA" of the simulated world);
* ``report.json`` -- a summary per quote: header SVNs, the report body, the PCK TCB, and our
  verifier's status at generation time;
* ``verify-command.txt`` -- the ``sgxsim verify ... --at T`` line for the simulated month (the
  collateral is valid then only); ``tcb-info-recovery.json`` with ``--recovery-svn``.

``verify QUOTE --collateral DIR_OR_FILE --root ROOT.pem [--at ISO8601]`` checks a quote with
:func:`sgxsim.attest.verify_quote` (Intel QVL's rules) and prints the verdict. ``--at`` defaults
to the current time: the wall clock is read here, in the CLI, never in the simulated world.
Exit codes (docs/cli.md): 0 accepted; 1 rejected (a verification error, with its reason and
detail, a Revoked TCB, or a debug enclave without ``--allow-debug``); 2 invalid input.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import click
from cryptography import x509

from sgxsim.attest import Collateral, VerifiedQuote, format_date, parse_quote, verify_quote
from sgxsim.cli.output import output_folder
from sgxsim.errors import InvalidArgument, VerificationError
from sgxsim.sim.attestation import AttestationWorld, TcbRecovery, quote_fleet

__all__ = [
    "collateral_from_json",
    "collateral_to_json",
    "load_collateral",
    "load_root",
    "parse_at",
    "quote",
    "verdict_json",
    "verify",
    "wall_clock_now",
]

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


def _svn_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        svns = [int(part) for part in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"not a comma-separated list of SVNs: {value!r}") from None
    if not all(1 <= v <= 255 for v in svns):
        raise click.BadParameter(f"SVNs must be in 1..255: {value!r}")
    return svns


def verify_command(out_dir: Path, quote_file: Path, at: dt.datetime) -> str:
    """The ``sgxsim verify`` line that checks ``quote_file`` in the collateral's simulated month."""
    return (
        f"sgxsim verify {quote_file} --collateral {out_dir / 'collateral.json'} "
        f"--root {out_dir / 'root.pem'} --at {format_date(at)}"
    )


@click.command("quote")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write the quote(s), collateral.json, root.pem and report.json into.",
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
@click.option(
    "--platforms",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Number of platforms (machines) in the one simulated world.",
)
@click.option(
    "--late-microcode-svn",
    "svns",
    callback=_svn_list,
    default=None,
    help="SGX late-microcode SVN of each platform, comma-separated (one value: all). Default 2.",
)
@click.option(
    "--recovery-svn",
    type=click.IntRange(1, 255),
    default=None,
    help="Also publish a TCB recovery to this late-microcode SVN and write its TCB Info "
    "(tcb-info-recovery.json) for `sgxsim tcb-impact`.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def quote(
    out_dir: Path,
    seed: int,
    quote_version: str,
    platforms: int,
    svns: list[int] | None,
    recovery_svn: int | None,
    as_json: bool,
) -> None:
    """Quote an application enclave on simulated platforms and write the evidence.

    The collateral is valid only in the simulated month: the command prints (and writes to
    verify-command.txt) the `sgxsim verify ... --at T` line that checks it.
    """
    if svns is None:
        svns = [2] * platforms
    elif len(svns) == 1:
        svns = svns * platforms
    elif len(svns) != platforms:
        raise click.BadParameter(
            f"{len(svns)} SVNs for {platforms} platforms", param_hint="--late-microcode-svn"
        )
    arguments = {
        "platforms": platforms,
        "late_microcode_svn": svns,
        "recovery_svn": recovery_svn,
        "quote_version": quote_version,
    }
    # Written into a temporary folder and moved into place only when complete (docs/cli.md).
    with output_folder(out_dir, "quote", seed, arguments) as folder:
        tmp = folder.tmp
        world = AttestationWorld(seed)
        fleet = quote_fleet(world, svns, seed=seed, version=int(quote_version))
        generated_at = world.datetime_at(0)
        files: dict[str, Path] = {
            "collateral": out_dir / "collateral.json",
            "root": out_dir / "root.pem",
            "report": out_dir / "report.json",
            "verify_command": out_dir / "verify-command.txt",
        }
        single = len(fleet) == 1
        summaries = []
        for member in fleet:
            name = "quote.bin" if single else f"quote-{member.name}.bin"
            (tmp / name).write_bytes(member.result.quote)
            summary = _summary(member.result.quote, member.result.verified)
            summaries.append(
                {
                    "platform": member.name,
                    "late_microcode_svn": member.late_microcode_svn,
                    "quote": name,
                    **summary,
                }
            )
        if single:
            files["quote"] = out_dir / "quote.bin"
            summary_obj: dict[str, Any] = dict(summaries[0])
            for key in ("platform", "late_microcode_svn", "quote"):
                summary_obj.pop(key)
        else:
            summary_obj = {"platforms": summaries}
        summary_obj["generated_at"] = generated_at.isoformat()
        first = out_dir / ("quote.bin" if single else summaries[0]["quote"])
        command = verify_command(out_dir, first, generated_at)
        summary_obj["verify_command"] = command
        (tmp / files["collateral"].name).write_text(collateral_to_json(fleet[0].result.collateral) + "\n")
        (tmp / files["root"].name).write_bytes(world.root_pem)
        (tmp / files["verify_command"].name).write_text(command + "\n")
        if recovery_svn is not None:
            week_ns = 7 * 24 * 3600 * 10**9
            world.publish_recovery(TcbRecovery.late_microcode(recovery_svn), at_ns=week_ns)
            doc = world.pcs.tcb_info(world.tcb.fmspc, world.datetime_at(week_ns))
            files["recovery"] = out_dir / "tcb-info-recovery.json"
            (tmp / files["recovery"].name).write_text(doc.envelope() + "\n")
            summary_obj["recovery"] = {
                "late_microcode_svn": recovery_svn,
                "published": format_date(world.datetime_at(week_ns)),
            }
        (tmp / files["report"].name).write_text(json.dumps(summary_obj, indent=2) + "\n")
        folder.commit()
    if as_json:
        click.echo(json.dumps({**summary_obj, "files": {k: str(v) for k, v in files.items()}}, indent=2))
        return
    for entry in summaries:
        click.echo(
            f"{entry['platform']}: quote v{quote_version} -> {out_dir / entry['quote']}"
            f"  late microcode SVN {entry['late_microcode_svn']}  TCB status {entry.get('tcb_status', '?')}"
        )
    body = summaries[0]["report_body"]
    click.echo(f"MRENCLAVE {body['mr_enclave']}")
    click.echo(f"MRSIGNER  {body['mr_signer']}")
    click.echo(f"collateral -> {files['collateral']}; root -> {files['root']}; summary -> {files['report']}")
    if "recovery" in files:
        click.echo(f"TCB Info after the recovery -> {files['recovery']}")
    click.echo("The collateral is valid in the simulated month only; verify with:")
    click.echo(f"  {command}")


def parse_at(value: str | None, param: str = "--at") -> dt.datetime | None:
    """``--at``: an ISO 8601 date/time (naive = UTC); ``click.BadParameter`` otherwise."""
    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 date/time: {value!r}", param_hint=param) from None
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


def wall_clock_now() -> dt.datetime:
    """The current UTC time: the default verification time of the tools on real evidence.

    Only the CLI reads the wall clock; the simulated world passes its simulated time.
    """
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def load_collateral(path: Path, param: str = "--collateral") -> Collateral:
    """collateral.json (or the directory holding it) in dcap-qvl's JSON; BadParameter naming the defect."""
    file = path / "collateral.json" if path.is_dir() else path
    try:
        text = file.read_bytes().decode("utf-8")
    except OSError as exc:
        raise click.BadParameter(f"cannot read {file}: {exc.strerror or exc}", param_hint=param) from None
    except UnicodeDecodeError as exc:
        raise click.BadParameter(
            f"{file} is not UTF-8 text ({exc.reason} at byte {exc.start})", param_hint=param
        ) from None
    try:
        return collateral_from_json(text)
    except InvalidArgument as exc:
        raise click.BadParameter(f"{file}: {exc}", param_hint=param) from None


def load_root(path: Path, param: str = "--root") -> x509.Certificate:
    """The trust anchor (PEM, or DER); BadParameter naming the file otherwise."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror or exc}", param_hint=param) from None
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise click.BadParameter(f"{path}: not a certificate ({exc})", param_hint=param) from None


def _date(value: dt.datetime | None) -> str | None:
    return None if value is None else format_date(value)


def verdict_json(verified: VerifiedQuote, at: dt.datetime) -> dict[str, Any]:
    """What ``verify --json`` prints for a verified quote (documented in docs/cli.md)."""
    level = verified.tcb_level
    expiry = verified.collateral_expiration
    return {
        "accepted": verified.accepted,
        "rejected_because": verified.rejected_because,
        "status": str(verified.status),
        "advisory_ids": list(verified.advisory_ids),
        "platform_status": str(verified.platform_status),
        "qe_status": str(verified.qe_status),
        "tcb_date": _date(verified.tcb_date),
        "tcb_level": {
            "sgxtcbcomponents": list(level.components),
            "pcesvn": level.pcesvn,
            "tcb_status": str(level.status),
            "tcb_date": _date(level.tcb_date),
        },
        "tcb_evaluation_data_number": verified.tcb_evaluation_data_number,
        "collateral_expiration": None
        if expiry is None
        else {
            "item": expiry.item,
            "not_before": _date(expiry.not_before),
            "not_after": _date(expiry.not_after),
        },
        "debug": verified.debug,
        "at": _date(at),
        "quote_version": verified.quote.version,
        "mr_enclave": verified.mr_enclave.hex(),
        "mr_signer": verified.mr_signer.hex(),
        "isv_prod_id": verified.isv_prod_id,
        "isv_svn": verified.isv_svn,
        "report_data": verified.report_data.hex(),
        "fmspc": verified.pck.fmspc.hex(),
        "pck": {"cpusvn": verified.pck.cpusvn.hex(), "pcesvn": verified.pck.pcesvn},
    }


@click.command("verify")
@click.argument("quote_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--collateral",
    "collateral_path",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="collateral.json (dcap-qvl QuoteCollateralV3 JSON), or the directory holding it.",
)
@click.option(
    "--root",
    "root_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Trust anchor: Intel SGX Root CA (PEM or DER).",
)
@click.option(
    "--at", "at_text", default=None, help="Verification time, ISO 8601, naive = UTC (default: now)."
)
@click.option("--allow-debug", is_flag=True, help="Accept quotes from debug enclaves.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def verify(
    ctx: click.Context,
    quote_file: Path,
    collateral_path: Path,
    root_path: Path,
    at_text: str | None,
    allow_debug: bool,
    as_json: bool,
) -> None:
    """Verify a DCAP quote as Intel's QVL does; print the TCB status and advisory IDs.

    Exit status: 0 accepted, 1 rejected (the reason is printed), 2 invalid input.
    """
    collateral = load_collateral(collateral_path)
    root = load_root(root_path)
    at = parse_at(at_text) or wall_clock_now()
    try:
        quote_bytes = quote_file.read_bytes()
    except OSError as exc:
        raise click.BadParameter(
            f"cannot read {quote_file}: {exc.strerror or exc}", param_hint="QUOTE"
        ) from None
    try:
        verified = verify_quote(quote_bytes, collateral, root, at, allow_debug=allow_debug)
    except VerificationError as exc:
        name = getattr(exc.reason, "name", str(exc.reason))
        if as_json:
            click.echo(
                json.dumps(
                    {"accepted": False, "error": name, "detail": exc.detail, "at": _date(at)}, indent=2
                )
            )
        else:
            click.echo(f"rejected: {name}" + (f": {exc.detail}" if exc.detail else ""))
        ctx.exit(1)
    except InvalidArgument as exc:
        raise click.UsageError(str(exc)) from None
    report = verdict_json(verified, at)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(f"status: {report['status']}")
        why = f" ({verified.rejected_because})" if verified.rejected_because else ""
        click.echo(f"accepted: {'yes' if verified.accepted else 'no'}{why}")
        click.echo(f"advisory IDs: {', '.join(report['advisory_ids']) or 'none'}")
        click.echo(f"debug enclave: {'yes' if verified.debug else 'no'}")
        click.echo(
            f"TCB date: {report['tcb_date']}  evaluation data number: {report['tcb_evaluation_data_number']}"
        )
        if verified.collateral_expiration is not None:
            e = verified.collateral_expiration
            click.echo(f"collateral valid until {format_date(e.not_after)} ({e.item})")
    if not verified.accepted:
        ctx.exit(1)
