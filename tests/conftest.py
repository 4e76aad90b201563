"""Test-suite wide settings: hypothesis runs derandomized by default, so the suite is as
reproducible as the simulator (set HYPOTHESIS_PROFILE=explore to search with fresh randomness)."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from tests.tracing import untraced

settings.register_profile("default", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Make ``--dist loadgroup`` group again under pytest >= 9.2.

    pytest-xdist (3.8) marks an ``xdist_group`` test for its scheduler by appending ``@group`` to
    ``item._nodeid``; pytest 9.2 derives ``nodeid`` from ``item._id`` instead, so the suffix was
    lost and every group was spread over the workers (each ran the demo, and each started its own
    Ray session). On a worker, put the suffix where this pytest reads it; a no-op where xdist's
    own rewrite still works, and without xdist.
    """
    if not hasattr(config, "workerinput"):
        return
    for item in items:
        names = sorted(
            {
                str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                for m in item.iter_markers("xdist_group")
            }
        )
        if names and "@" not in item.nodeid and hasattr(item, "_id"):  # lost: pytest >= 9.2
            from _pytest.nodeid import coerce_node_id

            item._id = coerce_node_id(f"{item.nodeid}@{'_'.join(names)}")


def _untrace_forked_child() -> None:
    sys.settrace(None)
    threading.settrace(None)


def pytest_configure(config: pytest.Config) -> None:
    """Forked children (the local engine's process pool) run untraced under ``--cov``.

    A fork inherits coverage's tracer, but the child ends with ``os._exit`` and never saves what it
    measured, so tracing there only costs time (3-4x on the fleet and ``compare --seeds`` tests).
    """
    if config.pluginmanager.hasplugin("_cov") or config.getoption("cov_source", None):
        os.register_at_fork(after_in_child=_untrace_forked_child)


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """``@pytest.mark.no_cover`` tests run :func:`untraced`."""
    if item.get_closest_marker("no_cover") is None:
        yield
        return
    with untraced():
        yield


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    """``sgxsim demo --seed 7 --json``, run once per test process: its output folder and report.

    Tests that use it carry ``xdist_group("demo")``, so one xdist worker runs the demo for all of
    them (see :func:`pytest_collection_modifyitems`). The folder is shared: a test that writes into
    it works on a copy.
    """
    from click.testing import CliRunner

    from sgxsim.cli import main

    out = tmp_path_factory.mktemp("demo")
    with untraced():  # the runner's paths are covered by tests/test_runner.py, the CLI's by others
        res = CliRunner().invoke(main, ["demo", "--seed", "7", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    report: dict[str, object] = json.loads(res.stdout)
    return out, report
