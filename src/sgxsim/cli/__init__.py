"""The ``sgxsim`` command line: one click group whose commands live in their own modules.

Commands are imported only when they run (:class:`LazyGroup`), so ``sgxsim --help`` and shell
completion import neither numpy, matplotlib, cryptography nor greenlet. Every command runs inside
one error boundary (:mod:`sgxsim.cli.boundary`): one-line errors, the exit codes of docs/cli.md
(0 ok, 1 negative verdict or failed run, 2 usage error or invalid input, 3 predicted demotion,
130 interrupted), a traceback only with ``--debug``. Every command takes ``--json`` for
machine-readable output and, where a run is seeded, ``--seed``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

import click

from sgxsim.cli.boundary import run_command

__all__ = ["COMMANDS", "LazyGroup", "main"]


class LazyCommand(NamedTuple):
    """Where a command lives, and the one line ``--help`` shows for it without importing it."""

    module: str
    attr: str
    short_help: str


#: Every ``sgxsim`` command: name -> where it lives. ``--help`` lists them from here.
COMMANDS: dict[str, LazyCommand] = {
    "info": LazyCommand("sgxsim.cli.info", "info", "Print the simulated machine: CPUID 0x12, CPUs, CPUSVN."),
    "demo": LazyCommand("sgxsim.cli.run", "demo", "Run the embedded default scenario."),
    "run": LazyCommand("sgxsim.cli.run", "run", "Run a scenario file (or `demo`)."),
    "compare": LazyCommand("sgxsim.cli.run", "compare", "Run a scenario under each SVN update policy."),
    "inspect": LazyCommand("sgxsim.cli.run", "inspect", "Show EPC, EPCM, SECS and TCS at a simulated time."),
    "explore": LazyCommand("sgxsim.cli.explore", "explore_cmd", "Explore interleavings of an SVN update."),
    "validate": LazyCommand("sgxsim.cli.validate", "validate", "Check a scenario file and print its plan."),
    "fleet": LazyCommand("sgxsim.cli.fleet", "fleet", "Roll a TCB-recovery update out over a fleet."),
    "quote": LazyCommand("sgxsim.cli.attest", "quote", "Produce a DCAP quote and its collateral."),
    "verify": LazyCommand("sgxsim.cli.attest", "verify", "Verify a DCAP quote as Intel's QVL does."),
    "tcb-impact": LazyCommand(
        "sgxsim.cli.tcb_impact", "tcb_impact_cmd", "Which platforms a new TCB Info demotes, and when."
    ),
}


class LazyGroup(click.Group):
    """A click group that imports a command's module only when that command is resolved."""

    def __init__(self, *args: object, lazy: dict[str, LazyCommand], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        spec = self.lazy.get(cmd_name)
        if spec is None:
            return super().get_command(ctx, cmd_name)
        cmd = getattr(importlib.import_module(spec.module), spec.attr)
        if not isinstance(cmd, click.Command):  # pragma: no cover - a wrong table entry
            raise TypeError(f"{spec.module}.{spec.attr} is not a click command")
        return cmd

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """click's ``main`` inside the error boundary; exits with the boundary's code."""
        argv = list(sys.argv[1:] if args is None else args)
        code = run_command(super().main, argv, prog_name, complete_var=complete_var, **extra)
        if standalone_mode:
            sys.exit(code)
        return code

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[Any]:
        """Complete command names from the table (no command module is imported), then options."""
        from click.shell_completion import CompletionItem

        items: list[Any] = [
            CompletionItem(name, help=self.lazy[name].short_help)
            for name in self.list_commands(ctx)
            if name in self.lazy and name.startswith(incomplete)
        ]
        items.extend(click.Command.shell_complete(self, ctx, incomplete))
        return items

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List the commands from the table (no import), as click's own listing would."""
        rows = [(name, self.lazy[name].short_help) for name in self.list_commands(ctx) if name in self.lazy]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(package_name="sgxsim")
@click.option("--debug", is_flag=True, help="On an error, also print the Python traceback.")
def main(debug: bool) -> None:
    """sgxsim: an executable model of Intel SGX under Linux, for studying EUPDATESVN."""


if __name__ == "__main__":  # pragma: no cover
    main()
