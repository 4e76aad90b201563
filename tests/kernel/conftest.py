"""Fixtures of the driver tests: a fresh small machine + kernel, checked at teardown."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.kernel.kernel_helpers import World, make_world


@pytest.fixture
def world() -> Iterator[World]:
    """A 256-page machine; at teardown every process exits, then EPC/DRAM accounting, the
    EPCM-vs-driver agreement and the absence of unexpected WARNs are checked."""
    w = make_world(256)
    yield w
    w.teardown()
