"""Shared by the fleet tests: the 12-host fleet file, their xdist group, a JSON dump of a fleet result."""

from __future__ import annotations

import json
from pathlib import Path

from sgxsim.sim.fleet.output import fleet_dict
from sgxsim.sim.fleet.run import FleetResult

SMALL_FLEET = Path(__file__).resolve().parent / "data" / "small-fleet.toml"
#: The xdist group of the tests that share the small fleet's runs (conftest ``small_fleet_sampled``)
#: and the Ray session: one xdist worker computes them once.
FLEET_GROUP = "small-fleet"


def fleet_json(res: FleetResult) -> str:
    """What fleet.json holds for ``res`` (same serialization as the writer)."""
    return json.dumps(fleet_dict(res), indent=1, sort_keys=True)
