"""Fixtures shared by the fleet tests of tests/sim (test_fleet.py, test_fleet_ray.py)."""

from __future__ import annotations

import pytest

from sgxsim.sim.engine import LocalEngine
from sgxsim.sim.fleet.run import FleetResult, run_fleet
from sgxsim.sim.fleet.spec import load_fleet

from .fleet_helpers import SMALL_FLEET


@pytest.fixture(scope="session")
def small_fleet_sampled() -> FleetResult:
    """The 12-host fleet with one host per (class, wave): 6 host runs on 2 local workers.

    Computed once per test process: the tests that use it carry ``xdist_group(FLEET_GROUP)``
    (the Ray tests too, whose killed-worker run is compared with it), so one xdist worker runs
    them all.
    """
    eng = LocalEngine(2)
    try:
        return run_fleet(load_fleet(SMALL_FLEET), eng, sample=1)
    finally:
        eng.close()
