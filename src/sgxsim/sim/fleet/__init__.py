"""Fleet rollouts of an SGX TCB recovery: many real host runs, waves, gates, relying parties.

* :mod:`.spec`: the fleet file (parsing with key paths and lines, JSON Schema, host scenarios);
* :mod:`.model`: host seeds, wave membership, sampling, TCB status per day, Wilson intervals;
* :mod:`.run`: :func:`run_fleet` on an engine (:mod:`sgxsim.sim.engine`);
* :mod:`.output`: fleet.json, fleet.md and the plots.

docs/fleet.md is the manual.
"""

from __future__ import annotations

from sgxsim.sim.fleet.model import host_seed, wilson
from sgxsim.sim.fleet.run import FleetResult, HostOutcome, HostTask, run_fleet, run_host
from sgxsim.sim.fleet.spec import FleetSpec, fleet_schema, load_fleet, parse_fleet

__all__ = [
    "FleetResult",
    "FleetSpec",
    "HostOutcome",
    "HostTask",
    "fleet_schema",
    "host_seed",
    "load_fleet",
    "parse_fleet",
    "run_fleet",
    "run_host",
    "wilson",
]
