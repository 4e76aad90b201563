"""``sgxsim explore``: run many interleavings of an SVN-update scenario and check its invariants.

``sgxsim explore SCENARIO --schedules N [--seed S] [--strategy random|pct|both] [--as-posted]
[--json] [--out DIR]``; ``sgxsim explore --list``; ``sgxsim explore --replay FILE``.

SCENARIO is a builtin name (:data:`sgxsim.sim.svn.SCENARIOS`, ``NAME@as-posted`` for
the posting's defects) or a scenario TOML file, mapped by its machine options:
``svn_update_policy = "rfc-v2-teardown"`` -> ``success`` (``vepc-skip`` / ``vepc-zap`` by
``vepc`` when the file declares VMs); ``"explicit-trigger"`` -> ``trigger-destructive`` /
``trigger-nondestructive`` by ``trigger_mode``; ``"linux-6.19-on-open"`` -> ``linux-6.19``;
``rfc_v2_as_posted = true`` selects the as-posted variant; ``"none"`` has no update to explore
(usage error). The file's ``seed`` is the default ``--seed``. A builtin world has its own small
machine and processes: a file that sets anything else (workloads, events, machine size,
patches, ...) is refused with the list of what the world would ignore (exit 2), unless
``--closest`` asks for the mapped world anyway.

Exit codes: 0 no violation; 1 a violation was found (its seed, schedule and trace are printed,
and ``violation-<program>-<schedule>.json`` is written to ``--out``, default ``sgxsim-explore``,
with ``run.json``, atomically: :mod:`sgxsim.cli.output`); 2 usage error; 130 interrupted (between
two schedules). ``--replay FILE`` re-runs a saved violation exactly (exit 1 if it reproduces, 0 if
the schedule now passes).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import click

from sgxsim.cli.boundary import EXIT_USAGE, CliError, current_interrupt
from sgxsim.cli.fleet import engine_options, host_progress
from sgxsim.cli.output import output_folder
from sgxsim.errors import SgxSimError
from sgxsim.kernel.policy import SvnPolicy
from sgxsim.sim.explore import STRATEGIES, ExploreResult, Violation, explore, format_violation, replay
from sgxsim.sim.svn import AS_POSTED_SUFFIX, SCENARIOS, svn_program

__all__ = ["explore_cmd", "program_for_toml", "unmodelled_keys"]

#: Scenario keys a builtin world models: they choose the world (and its seed).
_MODELLED = frozenset(
    {
        "scenario",
        "scenario.name",
        "scenario.description",
        "scenario.seed",
        "scenario.duration",
        "machine",
        "machine.svn_update_policy",
        "machine.vepc",
        "machine.trigger_mode",
        "machine.rfc_v2_as_posted",
    }
)


def unmodelled_keys(path: str) -> list[str]:
    """What scenario file ``path`` sets that a builtin exploration world would ignore.

    ``vm[i]`` tables select the world with a VM (``vepc-*``) and are modelled as "a VM holds EPC";
    their sizes are not.
    """
    from sgxsim.sim.scenario import load_scenario

    sc = load_scenario(path)
    keys = sorted(sc.lines.items(), key=lambda kv: (kv[1], kv[0]))
    ignored: dict[str, int] = {}
    for key, line in keys:
        if key in _MODELLED or key.startswith("vm["):
            continue
        if any(k.startswith(f"{key}.") or k.startswith(f"{key}[") for k, _ in keys):
            continue  # a table header: its keys are listed
        unit = re.sub(r"(\[\d+\]).*", r"\1", key)  # one entry per array element: workload[0]
        ignored.setdefault(unit, line)
    return [f"{k} (line {n})" for k, n in ignored.items()]


def program_for_toml(path: str) -> tuple[str, int]:
    """(builtin program name, seed) for a scenario TOML file (see the module docstring).

    Outcomes: the pair; ``click.UsageError`` for a file that cannot be parsed or a policy with
    nothing to explore.
    """
    from sgxsim.sim.scenario import load_scenario

    sc = load_scenario(path)  # ScenarioError: exit 2 with FILE:LINE at the CLI boundary
    m = sc.machine
    policy = m.svn_update_policy
    if policy is SvnPolicy.RFC_V2_TEARDOWN:
        name = ("vepc-zap" if m.vepc == "zap" else "vepc-skip") if sc.vms else "success"
    elif policy is SvnPolicy.EXPLICIT_TRIGGER:
        name = "trigger-destructive" if m.trigger_mode == "destructive" else "trigger-nondestructive"
    elif policy is SvnPolicy.LINUX_6_19_ON_OPEN:
        name = "linux-6.19"
    else:
        raise click.UsageError(f"{path}: svn_update_policy {policy!r} has no SVN update to explore")
    if m.rfc_v2_as_posted:
        name += AS_POSTED_SUFFIX
    return name, sc.seed


def _write(folder: Path, v: Violation) -> str:
    name = f"violation-{v.program}-{v.schedule}.json"
    (folder / name).write_text(json.dumps(v.to_dict(), indent=1) + "\n")
    return name


@click.command("explore")
@click.argument("scenario", required=False)
@click.option(
    "--schedules",
    type=click.IntRange(min=1, max=10**9),
    default=100,
    show_default=True,
    help="How many interleavings to run (each one seeded from --seed and its index).",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0, max=2**63 - 1),
    default=None,
    help="Exploration seed (default: the file's seed, else 0).",
)
@click.option(
    "--strategy",
    type=click.Choice(STRATEGIES),
    default="random",
    show_default=True,
    help="random walk, PCT (priority-based), or both alternating.",
)
@click.option("--as-posted", is_flag=True, help="rfc_v2_as_posted = true (the posting's defects).")
@click.option(
    "--max-steps",
    type=click.IntRange(min=1, max=10**9),
    default=None,
    help="Step bound per schedule (default: the world's).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result.")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="sgxsim-explore",
    show_default=True,
    help="Folder for replay files of violations and run.json.",
)
@click.option("--list", "list_", is_flag=True, help="List the builtin scenarios.")
@click.option(
    "--replay",
    "replay_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Re-run a saved violation-*.json exactly.",
)
@click.option(
    "--closest",
    is_flag=True,
    help="For a TOML file: explore the builtin world its machine maps to, ignoring what it does not model.",
)
@engine_options(default=None)
def explore_cmd(
    scenario: str | None,
    schedules: int,
    seed: int | None,
    strategy: str,
    as_posted: bool,
    max_steps: int | None,
    as_json: bool,
    out: str,
    list_: bool,
    replay_file: str | None,
    closest: bool,
    engine: str | None,
    workers: int | None,
    address: str | None,
) -> None:
    """Explore interleavings of an SVN-update SCENARIO (builtin name or TOML file)."""
    if list_:
        if as_json:
            click.echo(json.dumps({n: s.summary for n, s in SCENARIOS.items()}, indent=1))
        else:
            for n, s in SCENARIOS.items():
                click.echo(f"{n:24} {s.summary}")
        return
    if replay_file is not None:
        try:
            v = Violation.from_dict(json.loads(Path(replay_file).read_bytes()[: 64 << 20].decode("utf-8")))
            with current_interrupt().deferred():
                result = replay(svn_program(v.program), v)
        except (SgxSimError, ValueError, KeyError, TypeError) as exc:
            raise CliError(f"cannot replay {replay_file}: {exc}", EXIT_USAGE) from None
        _report(result.to_dict(), result.violations, as_json, [])
        same = bool(result.violations) and result.violations[0].same_as(v)
        if not as_json:
            click.echo("replayed exactly" if same else "the recorded schedule no longer violates")
        raise SystemExit(1 if result.violations else 0)
    if scenario is None:
        raise click.UsageError("give a SCENARIO (see --list), or --replay FILE")
    default_seed = 0
    if scenario.endswith(".toml") or os.path.sep in scenario:
        name, default_seed = program_for_toml(scenario)
        ignored = unmodelled_keys(scenario)
        if ignored and not closest:
            shown = ", ".join(ignored[:6]) + (f" and {len(ignored) - 6} more" if len(ignored) > 6 else "")
            raise CliError(
                f"{scenario}: explore runs small builtin worlds (sgxsim explore --list), and the world "
                f"this file's machine maps to ({name}) would ignore {shown}. Simulate the file with "
                f"`sgxsim run {scenario}`, or explore that world anyway with --closest",
                EXIT_USAGE,
            )
    else:
        name = scenario
        base = name[: -len(AS_POSTED_SUFFIX)] if name.endswith(AS_POSTED_SUFFIX) else name
        if base not in SCENARIOS:
            raise click.UsageError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    if as_posted and not name.endswith(AS_POSTED_SUFFIX):
        name += AS_POSTED_SUFFIX
    base = name[: -len(AS_POSTED_SUFFIX)] if name.endswith(AS_POSTED_SUFFIX) else name
    program = svn_program(name)
    steps = max_steps if max_steps is not None else SCENARIOS[base].max_steps
    run_seed = seed if seed is not None else default_seed
    arguments = {"scenario": scenario, "program": name, "schedules": schedules, "strategy": strategy}
    with output_folder(Path(out), "explore", run_seed, arguments) as folder:
        if engine is not None or workers is not None:
            eng = engine or "local"
            result = _sharded(name, schedules, run_seed, strategy, steps, as_json, eng, workers, address)
        else:
            flag = current_interrupt()
            with flag.deferred():
                result = explore(
                    program,
                    schedules,
                    run_seed,
                    strategy,
                    max_steps=steps,
                    progress=lambda done, total: flag.check(),
                )
        names = [_write(folder.tmp, v) for v in result.violations]
        paths = folder.commit()
    _report(result.to_dict(), result.violations, as_json, [str(paths[n]) for n in names])
    raise SystemExit(1 if result.violations else 0)


def _sharded(
    name: str,
    schedules: int,
    seed: int,
    strategy: str,
    steps: int,
    quiet: bool,
    engine: str,
    workers: int | None,
    address: str | None,
) -> ExploreResult:
    """Shards of schedules by (seed, index) on an engine (sgxsim.sim.explore_shards).

    Ctrl-C cancels the outstanding shards and propagates (exit 130, the output folder unchanged).
    """
    from sgxsim.sim.engine import EngineError, EngineSpec, open_engine
    from sgxsim.sim.explore_shards import explore_sharded

    try:
        with open_engine(EngineSpec(engine, workers, address)) as eng, host_progress(not quiet, name) as tick:
            return explore_sharded(eng, name, schedules, seed, strategy, max_steps=steps, progress=tick)
    except EngineError as err:
        raise CliError(str(err), EXIT_USAGE) from None


def _report(d: dict[str, Any], violations: tuple[Violation, ...], as_json: bool, paths: list[str]) -> None:
    if as_json:
        d = dict(d)
        d["replay_files"] = paths
        click.echo(json.dumps(d, indent=1))
        return
    click.echo(
        f"{d['program']}: {'replayed' if d['replay'] else 'explored'} {d['schedules_run']} schedule(s) "
        f"({d['strategy']}, seed {d['seed']}), {d['steps_total']} steps: "
        + ("no violation" if not violations else f"{len(violations)} violation(s)")
    )
    for v in violations:
        click.echo(format_violation(v))
    for p in paths:
        click.echo(f"replay file: {p}  (sgxsim explore --replay {p})")
