"""Simulation: clock, deterministic scheduler, scenarios, the runner, exploration, reports.

The main names are importable from here; they load lazily (``import sgxsim.sim.clock`` does not
pull in the runner, numpy or matplotlib)::

    from sgxsim.sim import load_scenario, run_scenario, write_outputs

    result = run_scenario(load_scenario("examples/kexec.toml"), seed=1)
    print(result.report.metrics["enclaves_destroyed"], result.report.warnings)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sgxsim.sim.clock import SimClock
    from sgxsim.sim.demo import demo_scenario
    from sgxsim.sim.explore import ExploreResult, Violation, explore, replay
    from sgxsim.sim.report import Report, write_outputs
    from sgxsim.sim.runner import RUN_POLICIES, Runner, RunResult, run_scenario
    from sgxsim.sim.scenario import Scenario, json_schema, load_scenario, parse_scenario

_EXPORTS = {
    "RUN_POLICIES": "sgxsim.sim.runner",
    "ExploreResult": "sgxsim.sim.explore",
    "Report": "sgxsim.sim.report",
    "RunResult": "sgxsim.sim.runner",
    "Runner": "sgxsim.sim.runner",
    "Scenario": "sgxsim.sim.scenario",
    "SimClock": "sgxsim.sim.clock",
    "Violation": "sgxsim.sim.explore",
    "demo_scenario": "sgxsim.sim.demo",
    "explore": "sgxsim.sim.explore",
    "json_schema": "sgxsim.sim.scenario",
    "load_scenario": "sgxsim.sim.scenario",
    "parse_scenario": "sgxsim.sim.scenario",
    "replay": "sgxsim.sim.explore",
    "run_scenario": "sgxsim.sim.runner",
    "write_outputs": "sgxsim.sim.report",
}

__all__ = [
    "RUN_POLICIES",
    "ExploreResult",
    "Report",
    "RunResult",
    "Runner",
    "Scenario",
    "SimClock",
    "Violation",
    "demo_scenario",
    "explore",
    "json_schema",
    "load_scenario",
    "parse_scenario",
    "replay",
    "run_scenario",
    "write_outputs",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sgxsim.sim' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
