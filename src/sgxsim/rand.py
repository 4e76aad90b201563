"""Deterministic randomness: one seed per run, independent named streams.

Every random value in sgxsim (keys, RDSEED output, scheduler choices, workload
jitter) comes from a stream derived from the run's seed and the stream's name, so
changing what one consumer draws never reshuffles another, and the same seed gives
the same bytes everywhere. Nothing here reads the OS entropy pool or the clock.
"""

from __future__ import annotations

import hashlib
import random

from sgxsim.errors import InvalidArgument

__all__ = ["EntropySource", "Rng"]


class Rng:
    """Root of a run's randomness; ``stream(name)`` gives an independent ``random.Random``."""

    def __init__(self, seed: int) -> None:
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise InvalidArgument(f"seed must be a non-negative int, got {seed!r}")
        self.seed = seed

    def _derive(self, name: str) -> int:
        digest = hashlib.sha256(f"sgxsim/{self.seed}/{name}".encode()).digest()
        return int.from_bytes(digest, "little")

    def stream(self, name: str) -> random.Random:
        """A fresh generator for ``name``; two calls with one name give equal sequences."""
        return random.Random(self._derive(name))

    def child(self, name: str) -> Rng:
        """A derived root, e.g. one per machine of a fleet."""
        return Rng(self._derive(name) % (1 << 63))


class EntropySource:
    """The RDSEED the hardware draws from: deterministic, and starvable by a scenario.

    ``rdseed(n)`` returns ``n`` bytes, or ``None`` when the source is starved (the
    architectural RDSEED failure, CF=0). Starvation is either for the next ``k``
    draws (``starve(k)``) or until ``restore()``.
    """

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._fail_next = 0
        self._starved = False
        self.draws = 0
        self.failures = 0

    def starve(self, count: int | None = None) -> None:
        """Fail the next ``count`` draws, or every draw until :meth:`restore` if ``None``."""
        if count is None:
            self._starved = True
        else:
            if count < 0:
                raise InvalidArgument(f"starve count must be >= 0, got {count}")
            self._fail_next = count

    def restore(self) -> None:
        self._starved = False
        self._fail_next = 0

    def rdseed(self, nbytes: int) -> bytes | None:
        self.draws += 1
        if self._starved or self._fail_next > 0:
            if self._fail_next > 0:
                self._fail_next -= 1
            self.failures += 1
            return None
        return self._rng.randbytes(nbytes)
