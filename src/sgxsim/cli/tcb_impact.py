"""``sgxsim tcb-impact``: which platforms of a fleet a new TCB Info demotes, when, and what fixes them.

Evidence: files or folders (searched recursively) of quotes and PCK certificates; other files
(a root certificate, collateral.json) are skipped. Collateral: today's from ``--collateral`` (the
TCB Info and QE Identity in use, with their chains) and the new TCB Info from ``--new`` (a PCS
response body ``{"tcbInfo":...,"signature":...}`` signed under ``--root``, or a bare ``tcbInfo``
object a user wrote, reported as unsigned), or both from a PCS v4-compatible service (``--pcs
URL``: ``/tcb?fmspc=...`` for today's, ``&update=early`` (or ``--new-update standard``) for the
new one, with the ``TCB-Info-Issuer-Chain`` header as Intel serves it).

Exit status: 0 no platform is demoted; 3 at least one is; 2 invalid input (unreadable or
malformed files, a bad signature, an unreachable or garbled PCS).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import urllib.error
from pathlib import Path
from typing import Any

import click

from sgxsim.attest import Collateral, PcsClient, PcsHttpError, format_date, parse_qe_identity
from sgxsim.attest.collateral import split_envelope
from sgxsim.attest.impact import Evidence, FleetImpact, load_evidence, tcb_impact
from sgxsim.attest.verifier import check_tcb_info_signature
from sgxsim.cli.attest import load_collateral, load_root, parse_at, wall_clock_now
from sgxsim.cli.boundary import EXIT_DEMOTION, EXIT_USAGE
from sgxsim.errors import InvalidArgument, VerificationError

__all__ = ["EXIT_DEMOTION", "BadInput", "tcb_impact_cmd"]

_EVIDENCE_SUFFIXES = (".bin", ".dat", ".quote", ".pem", ".crt", ".cer", ".der")
_DURATION = re.compile(r"^(\d+)([dhms])$")


class BadInput(click.ClickException):
    """Invalid input that is not a command-line usage error (a bad file, a PCS answer): exit 2."""

    exit_code = EXIT_USAGE


def _grace(value: str) -> dt.timedelta:
    match = _DURATION.match(value.strip())
    if match is None:
        raise click.BadParameter(f"not a duration like 30d, 12h, 90m: {value!r}", param_hint="--grace")
    n, unit = int(match.group(1)), match.group(2)
    return dt.timedelta(**{{"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}[unit]: n})


def _evidence(paths: tuple[Path, ...]) -> list[Evidence]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in _EVIDENCE_SUFFIXES
            )
        else:
            files.append(path)
    out: list[Evidence] = []
    for file in files:
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise click.BadParameter(
                f"cannot read {file}: {exc.strerror or exc}", param_hint="FLEET"
            ) from None
        try:
            ev = load_evidence(str(file), data)
        except VerificationError as exc:
            raise click.BadParameter(f"{file}: {exc}", param_hint="FLEET") from None
        if ev is not None:
            out.append(ev)
    if not out:
        raise click.BadParameter("no quote or PCK certificate found", param_hint="FLEET")
    return out


def _new_tcb_info(path: Path, issuer_chain: str | None, root: Any, at: dt.datetime) -> tuple[str, bool]:
    """The inner tcbInfo text of ``--new`` and whether its signature was verified."""
    try:
        text = path.read_bytes().decode("utf-8").strip()
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror or exc}", param_hint="--new") from None
    except UnicodeDecodeError:
        raise click.BadParameter(f"{path} is not UTF-8 text", param_hint="--new") from None
    try:
        obj = json.loads(text)
    except ValueError:
        raise click.BadParameter(f"{path} is not JSON", param_hint="--new") from None
    if isinstance(obj, dict) and "signature" in obj:
        try:
            body, signature = split_envelope(text, "tcbInfo")
        except ValueError as exc:
            raise click.BadParameter(f"{path}: not a signed TCB Info ({exc})", param_hint="--new") from None
        if issuer_chain is None:
            raise click.BadParameter(f"{path} is signed: give --collateral or --pcs for its issuer chain")
        try:
            check_tcb_info_signature(body, signature, issuer_chain, root, at)
        except VerificationError as exc:
            raise click.BadParameter(f"{path}: {exc}", param_hint="--new") from None
        return body, True
    inner = obj.get("tcbInfo", obj) if isinstance(obj, dict) else obj
    return json.dumps(inner, separators=(",", ":")), False


def _fetch(client: PcsClient, fmspc: bytes, update: str | None, root: Any, at: dt.datetime) -> str:
    try:
        body, signature, chain = client.tcb_info(fmspc, update=update)
    except PcsHttpError as exc:
        raise BadInput(f"PCS: {exc}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise BadInput(f"PCS {client.base_url} unreachable: {reason}") from None
    except ValueError as exc:
        raise BadInput(f"PCS answered garbage for TCB Info of {fmspc.hex()}: {exc}") from None
    try:
        check_tcb_info_signature(body, signature, chain, root, at)
    except VerificationError as exc:
        raise BadInput(f"PCS TCB Info of {fmspc.hex()}: {exc}") from None
    return body


def _table(fleet: FleetImpact) -> list[str]:
    rows = [("platform", "now", "new", "demoted", "bites at", "needs")]
    for p in fleet.platforms:
        needs = "-" if p.requirement is None else p.requirement.describe()
        rows.append(
            (
                Path(p.name).name,
                str(p.status_now) if p.status_now is not None else "no level",
                str(p.status_new) if p.status_new is not None else "no level",
                "yes" if p.demoted else "no",
                format_date(p.bites_at) if p.bites_at is not None else "-",
                needs,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return ["  ".join(c.ljust(w) for c, w in zip(r[:5], widths, strict=True)) + "  " + r[5] for r in rows]


@click.command("tcb-impact")
@click.argument("fleet", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--collateral",
    "collateral_path",
    type=click.Path(exists=True, path_type=Path),
    help="Today's collateral.json (dcap-qvl JSON) or its folder: TCB Info and QE Identity in use.",
)
@click.option(
    "--new",
    "new_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The new TCB Info: a PCS response body (signed) or a tcbInfo object you wrote (unsigned).",
)
@click.option("--pcs", "pcs_url", default=None, help="A PCS v4-compatible service (Intel PCS or a PCCS).")
@click.option(
    "--new-update",
    type=click.Choice(["early", "standard"]),
    default="early",
    show_default=True,
    help="With --pcs: which TCB Info is the new one.",
)
@click.option(
    "--root",
    "root_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Trust anchor (Intel SGX Root CA, PEM or DER).",
)
@click.option("--at", "at_text", default=None, help="Evaluation time, ISO 8601 (default: now).")
@click.option(
    "--grace", "grace_text", default="0d", show_default=True, help="Relying party's OutOfDate grace."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def tcb_impact_cmd(
    ctx: click.Context,
    fleet: tuple[Path, ...],
    collateral_path: Path | None,
    new_path: Path | None,
    pcs_url: str | None,
    new_update: str,
    root_path: Path,
    at_text: str | None,
    grace_text: str,
    as_json: bool,
) -> None:
    """Report which platforms a new TCB Info demotes, when, and the TCB each needs (exit 3 if any)."""
    root = load_root(root_path)
    at = parse_at(at_text) or wall_clock_now()
    grace = _grace(grace_text)
    evidence = _evidence(fleet)
    if pcs_url is None and (collateral_path is None or new_path is None):
        raise click.UsageError("give --collateral and --new, or --pcs URL")
    collateral: Collateral | None = None if collateral_path is None else load_collateral(collateral_path)
    fmspcs = sorted({ev.pck.fmspc for ev in evidence})
    signed_new = True
    current: list[str] = []
    new: list[str] = []
    qe_text: str | None = None if collateral is None else collateral.qe_identity
    if pcs_url is not None:
        try:
            client = PcsClient(pcs_url, allow_remote=True)
        except InvalidArgument as exc:
            raise click.BadParameter(str(exc), param_hint="--pcs") from None
        current = [_fetch(client, f, None, root, at) for f in fmspcs]
        if new_path is None:
            new = [_fetch(client, f, new_update, root, at) for f in fmspcs]
        if qe_text is None:
            try:
                qe_text = client.qe_identity()[0]
            except (PcsHttpError, urllib.error.URLError, OSError, ValueError) as exc:
                raise BadInput(f"PCS QE Identity: {exc}") from None
    else:
        assert collateral is not None
        try:
            check_tcb_info_signature(
                collateral.tcb_info, collateral.tcb_info_signature, collateral.tcb_info_issuer_chain, root, at
            )
            current = [collateral.tcb_info]
        except VerificationError as exc:
            raise click.BadParameter(f"today's TCB Info: {exc}", param_hint="--collateral") from None
    if new_path is not None:
        chain = None if collateral is None else collateral.tcb_info_issuer_chain
        text, signed_new = _new_tcb_info(new_path, chain, root, at)
        new = [text]
    try:
        qe = None if qe_text is None else parse_qe_identity(qe_text)
        result = tcb_impact(
            evidence, current, new, qe_identity=qe, collateral=collateral, root=root, at=at, grace=grace
        )
    except (VerificationError, InvalidArgument) as exc:
        raise BadInput(str(exc)) from None
    report = {**result.to_json(), "at": format_date(at), "new_tcb_info_signed": signed_new}
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        for line in _table(result):
            click.echo(line)
        infos = ", ".join(
            f"{f.hex()}: evaluation data number {result.current[f].tcb_evaluation_data_number} -> "
            f"{result.new[f].tcb_evaluation_data_number} (new issued {format_date(result.new[f].issue_date)})"
            for f in result.new
        )
        click.echo(f"{len(result.demoted)} of {len(result.platforms)} platforms will be demoted; {infos}")
        if not signed_new:
            click.echo("note: the new TCB Info is unsigned (user-written)")
    if result.demoted:
        ctx.exit(EXIT_DEMOTION)
