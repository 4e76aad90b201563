"""``sgxsim demo``, ``run``, ``compare`` and ``inspect``: scenario runs from the command line.

* ``demo`` runs the embedded default scenario (:mod:`sgxsim.sim.demo`);
* ``run SCENARIO.toml`` runs a user's scenario;
* ``compare SCENARIO --policies a,b,c`` runs it under each SVN update policy (plus the labelled
  what-if ``only_if_svn_rises``) and tabulates the comparison metrics;
* ``inspect SCENARIO --at TIME`` shows EPC sections, EPCM entries, SECS and TCS contents at a
  simulated time.

``SCENARIO`` may be the word ``demo`` for the embedded scenario. Every command takes ``--json``,
``--seed``, ``-v``/``-q``; ``demo``/``run``/``compare`` write their output folder (``--out``):
``report.json``, ``report.md``, ``timeline.png``, ``trace.json``, ``kernel.log`` (and
``comparison.png`` for ``compare``) and ``run.json``, atomically (:mod:`sgxsim.cli.output`).
Exit codes (:mod:`sgxsim.cli.boundary`): 0 ok; 1 a failed check (``--strict``: a kernel WARN
fired); 2 usage error or invalid scenario; 130 interrupted. docs/cli.md is the manual.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn
from rich.table import Table
from rich.text import Text

from sgxsim.cli.boundary import EXIT_FAILED, EXIT_USAGE, CliError, current_interrupt
from sgxsim.cli.fleet import engine_options, host_progress
from sgxsim.cli.output import OutputFolder, output_folder
from sgxsim.errors import ScenarioError
from sgxsim.kernel.policy import WHAT_IF_POLICY, SvnPolicy
from sgxsim.sim.engine import EngineSpec
from sgxsim.sim.report import Report, Scalar, write_outputs
from sgxsim.sim.runner import RUN_POLICIES, Runner, RunProgress, RunResult, policy_label
from sgxsim.sim.scenario import Scenario, load_scenario
from sgxsim.sim.timeline import COMPARISON_METRICS
from sgxsim.sim.toml_reader import format_ns_short, parse_duration

__all__ = ["compare", "demo", "inspect", "run"]

_DEFAULT_OUT = "sgxsim-out"


def _load(spec: str) -> Scenario:
    """A scenario from a path, or the embedded demo for the word ``demo``."""
    if spec == "demo" and not Path(spec).exists():
        from sgxsim.sim.demo import demo_scenario

        return demo_scenario()
    return load_scenario(spec)


class _EtaColumn(ProgressColumn):
    """Time left in the current phase of a run, from the rate of work since the phase began
    (work done per wall second: EPC pages while booting, simulated time while running)."""

    def render(self, task: Task) -> Text:
        elapsed, total, done = task.elapsed, task.total, task.completed
        if total is None or not elapsed or done <= 0:
            return Text("ETA ...", style="progress.remaining")
        left = max(elapsed * (total - done) / done, 0.0)
        minutes, seconds = divmod(int(left + 0.5), 60)
        hours, minutes = divmod(minutes, 60)
        return Text(f"ETA {hours}:{minutes:02d}:{seconds:02d}", style="progress.remaining")


class _RunBar:
    """Feeds a run's :class:`RunProgress` to one task of a rich :class:`Progress`: each phase of
    the run (boot, run, overrun) restarts the bar, so the time left comes from that phase's rate."""

    def __init__(self, progress: Progress, label: str) -> None:
        self.progress = progress
        self.task = progress.add_task(label, total=1, what="")
        self.phase = ""

    def __call__(self, p: RunProgress) -> None:
        if p.phase != self.phase:
            self.phase = p.phase
            self.progress.reset(self.task, total=max(p.total, 1), completed=0)
        self.progress.update(self.task, completed=p.done, what=p.describe())


def _bar_columns() -> tuple[ProgressColumn, ...]:
    return (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[what]}"),
        _EtaColumn(),
    )


@contextmanager
def _progress(enabled: bool, label: str) -> Iterator[Callable[[RunProgress], None] | None]:
    """A rich progress bar on stderr over a run's work (nothing when disabled; see :class:`_RunBar`)."""
    if not enabled:
        yield None
        return
    with Progress(*_bar_columns(), console=Console(file=sys.stderr), transient=True) as bar:
        yield _RunBar(bar, label)


def _common(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--seed, --json, -v/-q."""
    fn = click.option("-q", "--quiet", is_flag=True, help="Print only errors (and --json output).")(fn)
    fn = click.option("-v", "--verbose", count=True, help="More detail: the enclave table, the kernel log.")(
        fn
    )
    fn = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")(fn)
    fn = click.option(
        "--seed", type=click.IntRange(0, 2**63 - 1), default=None, help="Seed (default: the scenario's)."
    )(fn)
    return fn


def _outputs(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--strict", is_flag=True, help="Exit 1 if the kernel logged a WARN during the run.")(fn)
    fn = click.option(
        "--out",
        "out_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path(_DEFAULT_OUT),
        show_default=True,
        help="Output folder.",
    )(fn)
    return fn


def _policy_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--policy",
        type=click.Choice(RUN_POLICIES),
        default=None,
        help="SVN update policy (default: the scenario's machine.svn_update_policy).",
    )(fn)


def _execute(scenario: Scenario, seed: int | None, policy: str | None, show_progress: bool) -> RunResult:
    """Run under Ctrl-C deferral: an interrupt is raised between two events (a safe point)."""
    label = f"{scenario.name} [{policy_label(policy or scenario.machine.svn_update_policy)}]"
    flag = current_interrupt()
    with _progress(show_progress, label) as bar, flag.deferred():

        def progress(p: RunProgress) -> None:
            if bar is not None:
                bar(p)
            flag.check()

        return Runner(scenario, seed=seed, policy=policy, progress=progress).run()


def _open_out(out_dir: Path, command: str, seed: int | None, **arguments: Any) -> Any:
    """The output folder of a run, checked before the run starts (:mod:`sgxsim.cli.output`)."""
    return output_folder(out_dir, command, seed, arguments)


def _print_run(console: Console, report: Report, verbose: int, quiet: bool, paths: dict[str, Path]) -> None:
    if quiet:
        return
    for line in report.narrative:
        console.print(line, highlight=False, markup=False)
    console.print()
    report.render_rich(console)
    if verbose:
        t = Table(title="Enclaves", show_header=True, header_style="bold")
        for col in ("Enclave", "PID", "State", "EPC pages (peak)", "Restarts", "Last verdict"):
            t.add_column(col)
        for e in report.enclaves:
            t.add_row(
                e.name, str(e.pid), e.state, str(e.epc_pages_peak), str(e.restarts), e.last_verdict or "n/a"
            )
        console.print(t)
    if verbose > 1:
        for line in report.kernel_log:
            console.print(line, highlight=False, markup=False)
    folder = next(iter(paths.values())).parent if paths else Path(".")
    console.print(f"Wrote {', '.join(sorted(paths))} to {folder}", highlight=False)


def _finish(
    result: RunResult, folder: OutputFolder, as_json: bool, verbose: int, quiet: bool, strict: bool
) -> None:
    write_outputs(folder.tmp, result.report, result.trace, result.timeline)
    paths = folder.commit()
    if as_json:
        click.echo(result.report.to_json(), nl=False)
    else:
        _print_run(Console(file=sys.stdout), result.report, verbose, quiet, paths)
    if strict and result.report.kernel_warnings:
        raise CliError(
            f"{result.report.kernel_warnings} kernel WARN(s) during the run (see kernel.log)", EXIT_FAILED
        )


@click.command()
@_common
@_outputs
@_policy_option
def demo(
    seed: int | None,
    as_json: bool,
    verbose: int,
    quiet: bool,
    out_dir: Path,
    strict: bool,
    policy: str | None,
) -> None:
    """Run the embedded default scenario: a 2-socket server through a late microcode load.

    Prints a short narrative and a summary table, and writes report.json, report.md,
    timeline.png, trace.json and kernel.log to --out.
    """
    from sgxsim.sim.demo import demo_scenario

    sc = demo_scenario()
    with _open_out(out_dir, "demo", sc.seed if seed is None else seed, policy=policy) as folder:
        result = _execute(sc, seed, policy, not (as_json or quiet))
        _finish(result, folder, as_json, verbose, quiet, strict)


@click.command()
@click.argument("scenario", metavar="SCENARIO.toml")
@_common
@_outputs
@_policy_option
@click.option(
    "--dry-run",
    is_flag=True,
    help="Check the scenario and print its plan (as `sgxsim validate`); run nothing.",
)
def run(
    scenario: str,
    seed: int | None,
    as_json: bool,
    verbose: int,
    quiet: bool,
    out_dir: Path,
    strict: bool,
    policy: str | None,
    dry_run: bool,
) -> None:
    """Run a scenario file (docs/scenarios.md) and write the same outputs as demo."""
    sc = _load(scenario)
    if dry_run:
        from sgxsim.cli.validate import print_plan

        print_plan(sc, as_json=as_json, policy=policy)
        return
    with _open_out(
        out_dir, "run", sc.seed if seed is None else seed, scenario=scenario, policy=policy
    ) as folder:
        result = _execute(sc, seed, policy, not (as_json or quiet))
        _finish(result, folder, as_json, verbose, quiet, strict)


def _parse_policies(text: str) -> list[str]:
    out: list[str] = []
    for raw in text.split(","):
        p = raw.strip()
        if not p:
            continue
        if p not in RUN_POLICIES:
            raise click.BadParameter(
                f"{p!r} is not a policy ({', '.join(RUN_POLICIES)})",
                param_hint="--policies",
            )
        if p not in out:
            out.append(p)
    if not out:
        raise click.BadParameter("no policy given", param_hint="--policies")
    return out


@click.command()
@click.argument("scenario", metavar="SCENARIO")
@click.option(
    "--policies",
    default=",".join(p.value for p in SvnPolicy if p is not SvnPolicy.NONE),
    show_default=True,
    help="Comma-separated SVN update policies to compare.",
)
@click.option(
    "--what-if/--no-what-if",
    default=True,
    show_default=True,
    help=f"Also run the what-if {WHAT_IF_POLICY} (impossible in Linux: the kernel cannot know).",
)
@click.option(
    "--seeds",
    type=click.IntRange(1),
    default=None,
    help="Run each policy over N seeds; report p5/median/p95.",
)
@engine_options()
@_common
@_outputs
def compare(
    scenario: str,
    policies: str,
    what_if: bool,
    seeds: int | None,
    engine: str,
    workers: int | None,
    address: str | None,
    seed: int | None,
    as_json: bool,
    verbose: int,
    quiet: bool,
    out_dir: Path,
    strict: bool,
) -> None:
    """Run SCENARIO under each policy and tabulate time to attestation, losses, downtime, ...

    The report (and its outputs) is the first policy's run with one comparison row per policy;
    comparison.png draws the metrics side by side.
    """
    pols = _parse_policies(policies)
    if what_if and WHAT_IF_POLICY not in pols:
        pols.append(WHAT_IF_POLICY)
    sc = _load(scenario)
    with ExitStack() as stack:
        # The engine of --seeds starts before any run: a bad --engine/--address fails fast (exit 2).
        eng = None if seeds is None else _seed_engine(stack, engine, workers, address)
        folder = stack.enter_context(
            _open_out(out_dir, "compare", sc.seed if seed is None else seed, scenario=scenario, policies=pols)
        )
        results = [_execute(sc, seed, p, not (as_json or quiet)) for p in pols]
        base = results[0]
        rows: list[dict[str, Scalar]] = []
        for res in results:
            row: dict[str, Scalar] = {"policy": policy_label(res.policy)}
            for key, _, _ in COMPARISON_METRICS:
                row[key] = res.metrics.get(key)
            row["verdicts_accepted"] = res.metrics.get("verdicts_accepted")
            row["verdicts_refused"] = res.metrics.get("verdicts_refused")
            rows.append(row)
        if seeds is not None:
            rows = _seed_rows(sc, pols, results, seeds, quiet or as_json, eng)
        base.report.comparison = rows
        write_outputs(folder.tmp, base.report, base.trace, base.timeline)
        paths = folder.commit()
        if as_json:
            click.echo(base.report.to_json(), nl=False)
        elif not quiet:
            console = Console(file=sys.stdout)
            if seeds is None:
                base.report.render_rich(console)
            else:
                _print_spread(console, rows)
            console.print(f"Wrote {', '.join(sorted(paths))} to {out_dir}", highlight=False)
        if strict and any(r.report.kernel_warnings for r in results):
            raise CliError("kernel WARN(s) during a run (see kernel.log)", EXIT_FAILED)


def _seed_engine(stack: ExitStack, engine: str, workers: int | None, address: str | None) -> Any:
    """The started engine of ``compare --seeds``, stopped by ``stack``; one that cannot start
    (a bad option, Ray missing, an unreachable address) is a usage error."""
    from sgxsim.sim.engine import EngineError, open_engine

    try:
        return stack.enter_context(open_engine(EngineSpec(engine, workers, address)))
    except EngineError as err:
        raise CliError(str(err), EXIT_USAGE) from None


def _seed_rows(
    sc: Scenario, pols: list[str], results: list[RunResult], n: int, quiet: bool, eng: Any
) -> list[dict[str, Scalar]]:
    """Each policy over seeds base .. base + n - 1: p5 / median / p95 rows (sim/seeds.py).

    ``results`` are the policies' runs with the base seed (compare's own runs); ``eng`` runs the
    other n - 1 seeds of each. Ctrl-C cancels the outstanding runs and propagates (exit 130)."""
    from sgxsim.sim.seeds import SeedRun, run_seed, spread_rows

    base = results[0].seed
    tasks = [SeedRun(sc, p, base + i) for p in pols for i in range(1, n)]
    with host_progress(not quiet, f"{sc.name} x {n} seeds") as tick:
        metrics = eng.map(run_seed, tasks, tick)
    keys = [k for k, _, _ in COMPARISON_METRICS] + ["verdicts_accepted", "verdicts_refused"]
    runs = [[dict(res.metrics), *metrics[j * (n - 1) : (j + 1) * (n - 1)]] for j, res in enumerate(results)]
    return spread_rows(pols, [policy_label(r.policy) for r in results], runs, keys)


def _print_spread(console: Console, rows: list[dict[str, Scalar]]) -> None:
    """One line per metric, one column per policy: median, then p5 .. p95 over the seeds."""
    from sgxsim.sim.report import comparison_table, policy_notes

    console.print(comparison_table(rows, title=f"Over {rows[0]['seeds']} seeds: median (p5 .. p95)"))
    for note in policy_notes(rows):
        console.print(note, highlight=False, markup=False)


@click.command()
@click.argument("scenario", metavar="SCENARIO")
@click.option("--at", "at", required=True, help='Scenario time to stop at, e.g. "9s" or "8500ms".')
@click.option("--enclave", default=None, help="Only this enclave: kernel enclave id or workload name.")
@click.option(
    "--state",
    type=click.Choice(
        ("valid", "free", "pending", "blocked", "modified", "pr", "secs", "tcs", "reg", "va", "trim")
    ),
    default=None,
    help="Only EPCM entries in this state (or of this page type).",
)
@click.option("--page", type=click.IntRange(0), default=None, help="Only this EPC page (global index).")
@click.option("--limit", type=click.IntRange(0), default=64, show_default=True, help="EPCM entries shown.")
@_policy_option
@_common
def inspect(
    scenario: str,
    at: str,
    enclave: str | None,
    state: str | None,
    page: int | None,
    limit: int,
    policy: str | None,
    seed: int | None,
    as_json: bool,
    verbose: int,
    quiet: bool,
) -> None:
    """Show EPC sections, EPCM entries, SECS and TCS contents at simulated time --at."""
    import json

    from sgxsim.sim.inspect import inspect_machine

    try:
        at_ns = parse_duration(at, "--at")
    except ScenarioError as err:
        raise click.BadParameter(err.message, param_hint="--at") from None
    sc = _load(scenario)
    if at_ns > sc.duration:
        raise CliError(
            f"--at {at}: after the end of scenario {sc.name!r}, which lasts {format_ns_short(sc.duration)}",
            EXIT_USAGE,
        )
    with current_interrupt().deferred():
        data = inspect_machine(
            sc, at_ns, seed=seed, policy=policy, enclave=enclave, state=state, page=page, limit=limit
        )
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    if quiet:
        return
    _print_inspect(Console(file=sys.stdout), data, verbose)


def _print_inspect(console: Console, data: dict[str, Any], verbose: int) -> None:
    console.print(
        f"[bold]{data['scenario']}[/bold] at {data['at_ns'] / 1e9:.6f} s (policy {data['policy']}, "
        f"seed {data['seed']}), CPUSVN {data['cpusvn']}",
        highlight=False,
    )
    t = Table(title="EPC sections", title_justify="left")
    for col in ("section", "base", "size", "node", "pages", "valid"):
        t.add_column(col, justify="right")
    for s in data["epc_sections"]:
        t.add_row(
            str(s["index"]),
            f"{s['base']:#x}",
            str(s["size"]),
            str(s["node"]),
            str(s["pages"]),
            str(s["valid"]),
        )
    console.print(t)
    e = data["epcm"]
    t = Table(title=f"EPCM entries ({e['shown']} of {e['matched']})", title_justify="left")
    for col in ("page", "type", "rwx", "P", "M", "B", "PR", "SECS", "linaddr", "enclave"):
        t.add_column(col)
    for x in e["entries"]:
        t.add_row(
            str(x["page"]),
            x["type"] or "free",
            x["rwx"],
            "P" if x["pending"] else "",
            "M" if x["modified"] else "",
            "B" if x["blocked"] else "",
            "PR" if x["pr"] else "",
            "" if x["secs_page"] is None else str(x["secs_page"]),
            "" if x["linaddr"] is None else f"{x['linaddr']:#x}",
            "" if x["enclave"] is None else f"{x['enclave']} {x['workload'] or ''}".strip(),
        )
    console.print(t)
    for enc in data["enclaves"]:
        s = enc["secs"]
        console.print(
            f"[bold]enclave {enc['id']}[/bold] {enc['workload'] or '(unnamed)'}: {enc['epc_pages']} EPC "
            f"pages, SECS page {s['page']}, base {s['base']:#x}, size {s['size']:#x}, "
            f"SSA frame {s['ssa_frame_size']} page(s), MISCSELECT {s['miscselect']:#x}, "
            f"ATTRIBUTES {s['attributes']:#x}, XFRM {s['xfrm']:#x}",
            highlight=False,
        )
        console.print(
            f"  EID {s.get('eid', '?')}, initialized {s.get('initialized', '?')}, "
            f"child count {s.get('child_count', '?')}, ISVPRODID {s.get('isv_prod_id', '?')}, "
            f"ISVSVN {s.get('isv_svn', '?')}",
            highlight=False,
        )
        console.print(f"  MRENCLAVE {s.get('mrenclave', '?')}", highlight=False)
        console.print(f"  MRSIGNER  {s.get('mrsigner', '?')}", highlight=False)
        if verbose:
            for tcs in enc["tcs"]:
                console.print(
                    f"  TCS page {tcs['page']} at {tcs['linaddr']:#x}: OSSA {tcs['ossa']:#x} "
                    f"CSSA {tcs['cssa']} NSSA {tcs['nssa']} OENTRY {tcs['oentry']:#x}",
                    highlight=False,
                )
