"""Fixtures of the attest tests; the world builder lives in ``attest_world``."""

from __future__ import annotations

import pytest
from tests.attest.attest_world import World


@pytest.fixture
def world() -> World:
    """A fresh world (tests mutate it: revocations, TCB recoveries)."""
    return World.build()
