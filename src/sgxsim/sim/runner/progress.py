"""Progress of a run, for a display: the work done in the current phase, never complete early.

A run has three phases, each counted in its own unit of work:

* ``boot``: the kernel's EPC sanitization, in EPC pages EREMOVE'd of the machine's pages (for
  hundreds of GiB of EPC this takes minutes of host time before the first simulated event);
* ``run``: simulated time from the end of boot to the scenario's end;
* ``overrun``: past the scenario's end, the events written before it that still run, counted
  in events done of those due (a run may only end once they are done).

:class:`~sgxsim.sim.runner.Runner` passes a :class:`RunProgress` to its ``progress`` callback;
``done == total`` only in the very last call, once the run has finished. A display estimates the
time left from the rate of work in the current phase (``sgxsim run``'s bar restarts its estimate
at each phase, see :mod:`sgxsim.cli.run`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sgxsim.sim.timeline import format_ns

__all__ = ["PHASES", "RunProgress"]

#: The phases of a run, in order, and the unit each counts in.
PHASES = {"boot": "pages", "run": "ns", "overrun": "events"}


@dataclass(frozen=True)
class RunProgress:
    """Where a run is: ``done`` of ``total`` units of work of ``phase`` (see :data:`PHASES`),
    at simulated time ``now_ns`` of a scenario that ends at ``end_ns`` (power-on time base)."""

    phase: str
    done: int
    total: int
    now_ns: int
    end_ns: int

    @property
    def unit(self) -> str:
        return PHASES[self.phase]

    @property
    def fraction(self) -> float:
        """``done / total`` of the current phase (1.0 only when complete)."""
        return self.done / self.total if self.total > 0 else 1.0

    @property
    def finished(self) -> bool:
        return self.phase != "boot" and self.done >= self.total

    def describe(self) -> str:
        """What the run is doing, for people: e.g. ``"boot: 1.05 M of 134 M EPC pages sanitized"``."""
        if self.phase == "boot":
            return f"boot: {_si(self.done)} of {_si(self.total)} EPC pages sanitized"
        if self.phase == "run":
            return f"{format_ns(self.now_ns)} of {format_ns(self.end_ns)} simulated"
        return f"past the end ({format_ns(self.now_ns)}): {self.done} of {self.total} events done"


def _si(n: int) -> str:
    for suffix, scale in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= scale:
            return f"{n / scale:.3g} {suffix}"
    return str(n)
