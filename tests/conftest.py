"""Test-suite wide settings: hypothesis runs derandomized by default, so the suite is as
reproducible as the simulator (set HYPOTHESIS_PROFILE=explore to search with fresh randomness)."""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("default", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
