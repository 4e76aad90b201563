"""The quality gates run as part of the test suite: ruff, mypy --strict, and the layer contract."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
