"""The quality gates run as part of the test suite: ruff, mypy --strict, and the layer contract."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)


def test_ruff_lint_clean() -> None:
    result = _run(sys.executable, "-m", "ruff", "check", "src", "tests", "tools", "benchmarks")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_clean() -> None:
    result = _run(sys.executable, "-m", "ruff", "format", "--check", "src", "tests", "tools", "benchmarks")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_clean() -> None:
    result = _run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_layer_contract() -> None:
    """import-linter: cli -> sim -> sdk -> kernel -> hw; attest -> hw only; hw has no errno/time."""
    exe = Path(sys.executable).with_name("lint-imports")
    assert exe.exists(), "import-linter is a test dependency"
    result = _run(str(exe))
    assert result.returncode == 0, result.stdout + result.stderr


def _lint_copy(tmp_path: Path, module: str, lines: list[str]) -> subprocess.CompletedProcess[str]:
    """lint-imports on a copy of the package with ``lines`` appended to one module."""
    import shutil

    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "sgxsim", src / "sgxsim", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = src / "sgxsim" / module
    target.write_text(target.read_text() + "\n" + "\n".join(lines) + "\n")
    exe = Path(sys.executable).with_name("lint-imports")
    env = {"PYTHONPATH": str(src), "PATH": str(Path(sys.executable).parent)}
    return subprocess.run(
        [str(exe), "--no-cache"], cwd=tmp_path, capture_output=True, text=True, check=False, env=env
    )


def test_layer_contract_catches_upward_import_from_cli_modules(tmp_path: Path) -> None:
    """Every module of the cli package is inside the contract: sim importing any one of them is
    reported (one lint run; import-linter lists each illegal import on its own)."""
    cli_dir = ROOT / "src" / "sgxsim" / "cli"
    names = sorted(p.stem for p in cli_dir.glob("*.py") if p.stem != "__init__")
    assert names, "the cli is a package of command modules"
    result = _lint_copy(tmp_path, "sim/clock.py", [f"import sgxsim.cli.{n}  # noqa" for n in names])
    assert result.returncode != 0, result.stdout
    for name in names:
        assert f"sgxsim.sim.clock -> sgxsim.cli.{name}" in result.stdout, (name, result.stdout)


@pytest.mark.no_cover
def test_no_cover_tests_and_their_greenlets_run_untraced() -> None:
    """Under ``--cov`` (CI), a ``no_cover`` test runs with no trace function, also in the greenlets
    it makes (tests/tracing.py); pytest-cov's own pause left coverage's tracer on under xdist."""
    import greenlet

    assert sys.gettrace() is None
    assert greenlet.greenlet(sys.gettrace).switch() is None


def test_forked_children_run_untraced() -> None:
    """The local engine's forked workers never save coverage data, so tests/conftest.py takes the
    tracer off in every forked child (under ``--cov``; without it there is none to take off)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running the parent's cleanups
        os.write(write, b"none" if sys.gettrace() is None else b"traced")
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    assert os.read(read, 16) == b"none"
    os.close(read)


def test_ci_runs_the_readmes_test_command_with_the_coverage_floor() -> None:
    """CI measures branch coverage and fails below the floor the README states."""
    import re
    import tomllib

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    command = "pip install -e '.[test]' && python -m pytest -n auto --cov"
    assert command in readme
    assert (
        ci.strip().splitlines()[-1].endswith(command.replace("pip install", "python -m pip install --quiet"))
    )
    cov = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["coverage"]
    assert cov["run"]["branch"] is True and "greenlet" in cov["run"]["concurrency"]
    floor = re.search(r"coverage floor of \*\*([0-9.]+) %\*\*", readme)
    assert floor is not None and float(floor.group(1)) == cov["report"]["fail_under"]
