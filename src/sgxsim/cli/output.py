"""Output folders written atomically, with a ``run.json`` that says what a run wrote.

A command that writes files into ``--out DIR`` does it through :class:`OutputFolder`:

1. :meth:`OutputFolder.open` checks ``DIR`` at once (a file, ``/dev/null``, a folder that cannot
   be created, a name too long: a one-line error before any work) and makes a temporary folder:
   beside ``DIR`` when ``DIR`` does not exist yet, inside it (``DIR/.sgxsim-tmp-*``) when it does
   (so that ``--out ~`` needs no write access to ``/home``);
2. the command writes its files into :attr:`OutputFolder.tmp`;
3. :meth:`OutputFolder.commit` writes ``run.json`` (command, arguments, seed, sgxsim version,
   files written) and moves the files into ``DIR``. Files named in the *previous* run's
   ``run.json`` that this run did not write are removed (a stale ``comparison.png``); nothing
   else in ``DIR`` is ever touched;
4. if the command fails or is interrupted before :meth:`commit`, the temporary folder is removed
   and ``DIR`` is exactly as it was.

Differs from a single ``rename``: when ``DIR`` exists, its files are replaced one ``rename`` at a
time (each atomic); Ctrl-C is held off (:meth:`InterruptFlag.deferred`) for those few renames.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sgxsim.cli.boundary import EXIT_USAGE, CliError, InterruptFlag, current_interrupt

__all__ = ["RUN_JSON", "OutputFolder", "output_folder", "previous_files"]

#: The manifest of a run's output folder.
RUN_JSON = "run.json"
_TMP_PREFIX = ".sgxsim-tmp-"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sgxsim")
    except PackageNotFoundError:  # pragma: no cover - not installed
        return "unknown"


def previous_files(out_dir: Path) -> list[str]:
    """The file names the previous run's ``run.json`` in ``out_dir`` lists ([] if none or unreadable)."""
    try:
        data = json.loads((out_dir / RUN_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, list):
        return []
    # Only plain names of files directly in the folder: never a path that leads elsewhere.
    return [f for f in files if isinstance(f, str) and _plain_name(f)]


def _plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..", RUN_JSON) and "/" not in name and os.sep not in name


class OutputFolder:
    """One run's output folder (see the module docstring)."""

    def __init__(self, out_dir: Path, command: str, seed: int | None, arguments: dict[str, Any]) -> None:
        self.out_dir = out_dir
        self.command = command
        self.seed = seed
        self.arguments = arguments
        self.tmp = Path()
        self._fresh = False
        self.committed: dict[str, Path] = {}

    def open(self) -> OutputFolder:
        """Check ``--out`` and make the temporary folder; ``CliError`` (exit 2) naming the path."""
        out = self.out_dir
        try:
            if out.exists() and not out.is_dir():
                raise CliError(f"--out {out}: exists and is not a folder", EXIT_USAGE)
            if out.is_dir():
                self.tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=out))
            else:
                parent = out.absolute().parent
                for p in (parent, *parent.parents):
                    if p.exists() and not p.is_dir():
                        raise CliError(f"--out {out}: {p} is not a folder", EXIT_USAGE)
                parent.mkdir(parents=True, exist_ok=True)
                out.mkdir()  # probe: the name is valid and the parent writable (removed at once)
                out.rmdir()
                self.tmp = Path(tempfile.mkdtemp(prefix=f".{out.name[:64]}{_TMP_PREFIX}", dir=parent))
                umask = os.umask(0o022)
                os.umask(umask)
                self.tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would become the folder's mode
                self._fresh = True
        except OSError as err:
            raise CliError(
                f"--out {_short(out)}: cannot create the output folder: {_why(err)}", EXIT_USAGE
            ) from None
        return self

    def discard(self) -> None:
        """Remove the temporary folder (the previous outputs stay as they were)."""
        if self.tmp != Path() and self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)

    def commit(self, interrupt: InterruptFlag | None = None) -> dict[str, Path]:
        """Move the files written into :attr:`tmp` into place; return ``{name: final path}``.

        An interrupt requested before this point cancels the commit (``KeyboardInterrupt``).
        """
        flag = interrupt or current_interrupt()
        flag.check()
        names = sorted(p.name for p in self.tmp.iterdir() if p.is_file() and p.name != RUN_JSON)
        manifest = {
            "command": self.command,
            "arguments": self.arguments,
            "seed": self.seed,
            "version": _version(),
            "files": names,
        }
        try:
            (self.tmp / RUN_JSON).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
            with flag.deferred(), flag.critical():
                if self._fresh:
                    os.rename(self.tmp, self.out_dir)
                else:
                    self._replace_into_existing(names)
        except OSError as err:
            raise CliError(
                f"--out {self.out_dir}: cannot write the outputs: {_why(err)}", EXIT_USAGE
            ) from None
        self.committed = {n: self.out_dir / n for n in names}
        return self.committed

    def _replace_into_existing(self, names: list[str]) -> None:
        out = self.out_dir
        stale = [n for n in previous_files(out) if n not in names]
        for n in names:
            target = out / n
            if target.is_dir() and not target.is_symlink():
                raise IsADirectoryError(0, "a folder has the name of an output file", str(target))
            os.replace(self.tmp / n, target)
        for n in stale:
            target = out / n
            if target.is_file() or target.is_symlink():
                target.unlink()
        os.replace(self.tmp / RUN_JSON, out / RUN_JSON)
        os.rmdir(self.tmp)


def _why(err: OSError) -> str:
    return err.strerror or type(err).__name__


def _short(path: Path) -> str:
    text = str(path)
    return text if len(text) <= 80 else f"{text[:40]}...{text[-30:]} ({len(text)} characters)"


@contextmanager
def output_folder(
    out_dir: Path, command: str, seed: int | None, arguments: dict[str, Any] | None = None
) -> Iterator[OutputFolder]:
    """An :class:`OutputFolder` opened at once and discarded unless committed inside the block."""
    folder = OutputFolder(Path(out_dir), command, seed, dict(arguments or {})).open()
    flag = current_interrupt()
    flag.add_cleanup(folder.discard)
    try:
        yield folder
    finally:
        flag.remove_cleanup(folder.discard)
        folder.discard()
