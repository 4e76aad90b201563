"""``sgxsim fleet FLEET.toml``: roll a TCB-recovery microcode update out over a fleet of hosts.

Each simulated host is a real run of the single-host runner with its own seed; docs/fleet.md is
the manual. Exit codes: 0 the rollout completed; 1 a health gate halted it; 2 usage error or
invalid input (a bad fleet file, an unknown class in a wave, waves over 100 %, an unreachable
Ray address), reported before any host runs; 130 interrupted (outstanding host runs cancelled,
no output written).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from sgxsim.kernel.policy import SvnPolicy

__all__ = ["fleet"]


def _fail(message: str, code: int) -> None:
    click.echo(f"sgxsim: error: {message}", err=True)
    sys.exit(code)


@contextmanager
def host_progress(enabled: bool, label: str) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on stderr counting finished runs (hosts, schedules, seeds)."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(file=sys.stderr),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def engine_options(default: str | None = "local") -> Callable[[Callable[..., object]], Callable[..., object]]:
    """--engine, --workers, --address (shared by fleet, explore and compare)."""
    from sgxsim.sim.engine import ENGINES

    def decorate(fn: Callable[..., object]) -> Callable[..., object]:
        fn = click.option(
            "--address", default=None, help="Ray cluster address (host:port, ray://host:port or auto)."
        )(fn)
        fn = click.option(
            "--workers",
            type=click.IntRange(1),
            default=None,
            help="Worker processes / Ray CPUs (default: all).",
        )(fn)
        return click.option(
            "--engine",
            type=click.Choice(ENGINES),
            default=default,
            show_default=default is not None,
            help="local: a process pool here; ray: a Ray cluster (pip install 'sgxsim[ray]').",
        )(fn)

    return decorate


@click.command()
@click.argument("fleet_file", metavar="FLEET.toml", type=click.Path(dir_okay=False, path_type=Path))
@engine_options()
@click.option("--sample", type=click.IntRange(1), default=None, help="Simulate K hosts per (class, wave).")
@click.option(
    "--seed", type=click.IntRange(0, 2**63 - 1), default=None, help="Fleet seed (default: the file's)."
)
@click.option(
    "--policy",
    type=click.Choice([p.value for p in SvnPolicy]),
    default=None,
    help="Run every class on this kernel design.",
)
@click.option("--compare-policies", is_flag=True, help="Run the fleet under each kernel design.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("sgxsim-fleet"),
    show_default=True,
    help="Output folder (replaced when the run completes).",
)
@click.option("--json", "as_json", is_flag=True, help="Print fleet.json on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="Print only errors (and --json output).")
def fleet(
    fleet_file: Path,
    engine: str,
    workers: int | None,
    address: str | None,
    sample: int | None,
    seed: int | None,
    policy: str | None,
    compare_policies: bool,
    out_dir: Path,
    as_json: bool,
    quiet: bool,
) -> None:
    """Roll a microcode update out over FLEET.toml's hosts in waves (docs/fleet.md).

    Writes fleet.json (status fractions per day, waves, gates, every simulated host's seed and
    report hash), fleet.md, fleet-status.png, fleet-downtime.png and scenarios/ to --out.
    """
    import json
    from dataclasses import replace

    from sgxsim.errors import ScenarioError
    from sgxsim.sim.engine import EngineError, EngineSpec, open_engine
    from sgxsim.sim.fleet.output import write_fleet
    from sgxsim.sim.fleet.run import FleetResult, run_fleet
    from sgxsim.sim.fleet.spec import load_fleet

    if policy is not None and compare_policies:
        raise click.UsageError("--policy and --compare-policies exclude each other")
    try:
        spec = load_fleet(fleet_file)
        engine_spec = EngineSpec(engine, workers, address)
    except (ScenarioError, EngineError) as err:
        _fail(str(err), 2)
    if seed is not None:
        spec = replace(spec, seed=seed)
    policies: list[SvnPolicy | None] = [None] if policy is None else [SvnPolicy(policy)]
    if compare_policies:
        policies = [p for p in SvnPolicy if p is not SvnPolicy.NONE]
    results: list[FleetResult] = []
    try:
        with open_engine(engine_spec) as eng:
            for pol in policies:
                label = f"{spec.name}" + (f" [{pol.value}]" if pol is not None else "")
                with host_progress(not (as_json or quiet), label) as tick:
                    results.append(run_fleet(spec, eng, sample=sample, policy=pol, progress=tick))
        top = write_fleet(out_dir, results)
    except EngineError as err:
        _fail(str(err), 2)
    except KeyboardInterrupt:
        _fail("interrupted: outstanding host runs cancelled, nothing written", 130)
    if as_json:
        click.echo(json.dumps(top, indent=1, sort_keys=True))
    elif not quiet:
        _summary(top, out_dir)
    halted = any(r.halted is not None for r in results)
    sys.exit(1 if halted and not compare_policies else 0)


def _summary(top: dict[str, object], out_dir: Path) -> None:
    del top
    click.echo((out_dir / "fleet.md").read_text(encoding="utf-8"), nl=False)
    click.echo(f"Wrote fleet.json, fleet.md and plots to {out_dir}")
