"""The one error boundary of the ``sgxsim`` command line: exit codes, one-line errors, Ctrl-C.

Every command runs inside :func:`run_command`. A failure ends in one line on stderr that names
the bad value (``sgxsim: error: ...``; scenario errors carry ``file:line`` and the key path), and
the process exits with a code from :data:`EXIT_CODES` (docs/cli.md has the same table). A Python
traceback is printed only with ``sgxsim --debug`` (or ``SGXSIM_DEBUG=1``).

Ctrl-C: while a command runs, SIGINT only sets a flag (:class:`InterruptFlag`). Code outside the
model (imports, parsing, plotting) is interrupted at once; inside the simulated machine
(:meth:`InterruptFlag.deferred`) the interrupt is raised only at a safe point, between two
runner events or two explored schedules (:meth:`InterruptFlag.check`), so the kernel model is
never unwound in the middle of a locked section. When no safe point comes within
:data:`HARD_EXIT_S` (one runner event can build a 32 GiB enclave), the process ends from a
helper thread instead: it removes the temporary output folder (the registered cleanups), waits
for a commit in progress (:meth:`InterruptFlag.critical`) and exits 130 without unwinding the
model at all. Either way the output folder keeps its previous contents
(:mod:`sgxsim.cli.output`).
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from types import FrameType
from typing import Any, Final

import click

__all__ = [
    "EXIT_CODES",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliError",
    "InterruptFlag",
    "current_interrupt",
    "run_command",
]

EXIT_OK: Final = 0
#: A negative verdict or finding: a rejected quote, an exploration violation, a failed run.
EXIT_FAILED: Final = 1
#: A usage error or invalid input (options, scenario files, unreadable or unwritable paths).
EXIT_USAGE: Final = 2
#: ``tcb-impact``: at least one platform will be demoted.
EXIT_DEMOTION: Final = 3
#: Interrupted (Ctrl-C / SIGINT): 128 + SIGINT, as shells report it.
EXIT_INTERRUPTED: Final = 130

#: The exit-code table every command uses (docs/cli.md prints the same).
EXIT_CODES: Final = {
    EXIT_OK: "ok",
    EXIT_FAILED: "a negative verdict or finding: a rejected quote, an exploration violation, a failed run",
    EXIT_USAGE: "usage error or invalid input",
    EXIT_DEMOTION: "a predicted demotion (tcb-impact)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}

_META_KEY: Final = "sgxsim.interrupt"
#: Seconds a deferred Ctrl-C waits for a safe point before the process ends without one.
HARD_EXIT_S: Final = 1.0


class CliError(Exception):
    """A failure a command reports itself: ``message`` is the one line, ``code`` the exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


class InterruptFlag:
    """SIGINT as a flag while a command runs (see the module docstring).

    ``immediate`` (the default) raises ``KeyboardInterrupt`` from the handler, as Python would;
    inside :meth:`deferred` the handler only records the request and :meth:`check` raises it.
    """

    def __init__(self, hard_exit_s: float = HARD_EXIT_S) -> None:
        self.requested = False
        self._depth = 0
        self._hard_exit_s = hard_exit_s
        self._timer: threading.Timer | None = None
        self._cleanups: list[Callable[[], None]] = []
        self._critical = threading.Lock()

    def handler(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        if self._depth == 0:
            raise KeyboardInterrupt
        if self._timer is None:
            self._timer = threading.Timer(self._hard_exit_s, self._hard_exit)
            self._timer.daemon = True
            self._timer.start()

    def add_cleanup(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` (e.g. remove a temporary folder) if the process ends without unwinding."""
        self._cleanups.append(fn)

    def remove_cleanup(self, fn: Callable[[], None]) -> None:
        if fn in self._cleanups:
            self._cleanups.remove(fn)

    @contextmanager
    def critical(self) -> Iterator[None]:
        """A section the hard exit waits for (moving finished outputs into place)."""
        with self._critical:
            yield

    def cancel(self) -> None:
        """The interrupt was handled by unwinding: no hard exit."""
        if self._timer is not None:
            self._timer.cancel()

    def _hard_exit(self) -> None:
        with self._critical:
            for fn in reversed(self._cleanups):
                with suppress(Exception):  # best effort: the process is ending
                    fn()
            with suppress(OSError, ValueError):
                sys.stdout.flush()
            with suppress(OSError, ValueError):
                sys.stderr.write("\nsgxsim: error: interrupted\n")
                sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)

    def check(self) -> None:
        """A safe point: raise ``KeyboardInterrupt`` if Ctrl-C was pressed (no hard exit then)."""
        if self.requested:
            self.cancel()
            raise KeyboardInterrupt

    def progress(self, now_ns: int, end_ns: int) -> None:
        """A runner ``progress`` callback that is only a safe point."""
        self.check()

    @contextmanager
    def deferred(self) -> Iterator[InterruptFlag]:
        """Within: SIGINT waits for the next :meth:`check` (and is raised on leaving at the latest)."""
        self._depth += 1
        try:
            yield self
        finally:
            self._depth -= 1
        self.check()

    @contextmanager
    def installed(self) -> Iterator[InterruptFlag]:
        """Install :meth:`handler` for SIGINT (main thread only) and restore the old one after."""
        if not _main_thread():
            yield self
            return
        old = signal.signal(signal.SIGINT, self.handler)
        try:
            yield self
        finally:
            self.cancel()
            signal.signal(signal.SIGINT, old)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def current_interrupt() -> InterruptFlag:
    """The running command's interrupt flag (a fresh, uninstalled one outside a command)."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        obj = ctx.find_root().obj
        flag = obj.get(_META_KEY) if isinstance(obj, dict) else None
        if isinstance(flag, InterruptFlag):
            return flag
    return InterruptFlag()


def _debug_requested(args: list[str]) -> bool:
    """``--debug`` among the group options (before the command name), or SGXSIM_DEBUG=1."""
    if os.environ.get("SGXSIM_DEBUG", "") not in ("", "0"):
        return True
    for arg in args:
        if arg == "--debug":
            return True
        if not arg.startswith("-"):
            return False
    return False


def _one_line(text: str) -> str:
    return " ".join(str(text).split()) or "(no message)"


def _describe_os_error(err: OSError) -> str:
    where = err.filename if err.filename is not None else ""
    if err.filename2 is not None:
        where = f"{where} -> {err.filename2}"
    what = err.strerror or str(err)
    return f"{where}: {what}" if where else what


def _classify(err: BaseException) -> tuple[str, int]:
    """(one-line message, exit code) for an exception that escaped a command."""
    from sgxsim.errors import InvalidArgument, ScenarioError, VerificationError

    if isinstance(err, CliError):
        return str(err), err.code
    if isinstance(err, ScenarioError):
        return str(err), EXIT_USAGE
    if isinstance(err, InvalidArgument):
        return str(err), EXIT_USAGE
    if isinstance(err, VerificationError):
        return f"verification failed: {err}", EXIT_FAILED
    if isinstance(err, UnicodeError):
        return f"not UTF-8 text: {err}", EXIT_USAGE
    if isinstance(err, OSError):
        return _describe_os_error(err), EXIT_USAGE
    if isinstance(err, MemoryError):
        return "out of memory", EXIT_FAILED
    return (
        f"internal error: {type(err).__name__}: {err} "
        "(a bug in sgxsim; rerun with --debug for the traceback)",
        EXIT_FAILED,
    )


def run_command(invoke: Callable[..., Any], args: list[str], prog_name: str | None, **extra: Any) -> int:
    """Run a click command's ``main`` in non-standalone mode and map every outcome to an exit code.

    Returns the exit code (the caller exits with it). Nothing but the one-line message reaches
    stderr unless ``--debug`` is given.
    """
    debug = _debug_requested(args)
    flag = InterruptFlag()
    obj = extra.pop("obj", None)
    obj = {**(obj if isinstance(obj, dict) else {}), _META_KEY: flag}
    try:
        with flag.installed():
            try:
                rv = invoke(args=args, prog_name=prog_name, standalone_mode=False, obj=obj, **extra)
            except click.Abort as abort:
                # click turns KeyboardInterrupt into Abort; anything else aborting is a failure.
                if isinstance(abort.__context__, KeyboardInterrupt) or flag.requested:
                    raise KeyboardInterrupt from abort
                raise
        code = rv if isinstance(rv, int) else EXIT_OK
        return code
    except KeyboardInterrupt:
        flag.cancel()
        if debug:
            _print_traceback()
        _echo_err("interrupted")
        return EXIT_INTERRUPTED
    except click.exceptions.Exit as ex:
        return ex.exit_code
    except click.UsageError as err:
        err.show()  # click's usage line and message (no traceback: not a failure of sgxsim)
        return EXIT_USAGE
    except click.ClickException as err:
        if debug:
            _print_traceback()
        _echo_err(_one_line(err.format_message()))
        return EXIT_USAGE
    except click.Abort:
        _echo_err("aborted")
        return EXIT_FAILED
    except SystemExit as ex:
        return _exit_code(ex.code)
    except BrokenPipeError:
        # The reader of stdout went away (``sgxsim info | head -1``): stop quietly.
        _silence_stdout()
        return EXIT_OK
    except Exception as err:
        if debug:
            _print_traceback()
        message, code = _classify(err)
        _echo_err(_one_line(message))
        return code


def _print_traceback() -> None:
    import traceback

    traceback.print_exc()


def _exit_code(code: object) -> int:
    if code is None:
        return EXIT_OK
    if isinstance(code, int):
        return code
    _echo_err(_one_line(str(code)))
    return EXIT_FAILED


def _echo_err(message: str) -> None:
    try:
        click.echo(f"sgxsim: error: {message}", err=True)
    except OSError as err:  # pragma: no cover - stderr closed
        if err.errno != errno.EPIPE:
            raise


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # pragma: no cover - no real stdout (CliRunner)
        pass
