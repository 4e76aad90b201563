"""Test-suite wide settings: hypothesis runs derandomized by default, so the suite is as
reproducible as the simulator (set HYPOTHESIS_PROFILE=explore to search with fresh randomness)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("default", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    """``sgxsim demo --seed 7 --json``, run once per test process: its output folder and report.

    Tests that use it carry ``xdist_group("demo")`` so that one xdist worker would run the demo for
    all of them; but pytest-xdist 3.8 groups by rewriting ``item._nodeid``, which pytest 9.2 no
    longer reads (nodeid comes from ``item._id``), so today each worker that gets one of these
    tests runs the demo once (2 runs with ``-n 2``, 4 before this fixture). The folder is shared:
    a test that writes into it works on a copy.
    """
    from click.testing import CliRunner

    from sgxsim.cli import main

    out = tmp_path_factory.mktemp("demo")
    res = CliRunner().invoke(main, ["demo", "--seed", "7", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    report: dict[str, object] = json.loads(res.stdout)
    return out, report
