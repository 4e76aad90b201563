"""Simulated time: a monotonic nanosecond counter that only explicit costs move.

Nothing here reads the wall clock. The deterministic scheduler keeps one
:class:`SimClock` as the global ("max of times observed") time; without a scheduler a
:class:`SimClock` can be handed to the hardware model directly, and every charged cost
advances it.
"""

from __future__ import annotations

from sgxsim.errors import InvalidArgument

__all__ = ["SimClock", "format_ns"]


def _check(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidArgument(f"{what} must be a non-negative int (ns), got {value!r}")
    return value


class SimClock:
    """Monotonic simulated time in nanoseconds.

    Outcomes: ``advance`` and ``charge`` move time forward by a non-negative amount;
    ``advance_to`` moves it to a later instant and ignores earlier ones (time never
    goes back); negative or non-int amounts raise ``InvalidArgument``.
    """

    __slots__ = ("_now",)

    def __init__(self, start_ns: int = 0) -> None:
        self._now = _check(start_ns, "start_ns")

    def now_ns(self) -> int:
        """The current simulated time."""
        return self._now

    def advance(self, ns: int) -> int:
        """Move time forward by ``ns``; returns the new time."""
        self._now += _check(ns, "advance")
        return self._now

    def advance_to(self, t_ns: int) -> int:
        """Move time to ``t_ns`` if that is later; returns the (possibly unchanged) time."""
        _check(t_ns, "advance_to")
        self._now = max(self._now, t_ns)
        return self._now

    def charge(self, cpu: int, ns: int) -> None:
        """A logical processor spent ``ns`` (the hardware model's cost hook); ``cpu`` is ignored.

        Differs: without a scheduler all CPUs share one timeline, so costs of different
        CPUs add up instead of overlapping. Use the scheduler's clock for parallel time.
        """
        self._now += _check(ns, "charge")

    def __repr__(self) -> str:
        return f"SimClock({format_ns(self._now)})"


def format_ns(t_ns: int) -> str:
    """``t_ns`` as dmesg-style seconds with microseconds, e.g. ``"1.234567"``."""
    us = t_ns // 1000
    return f"{us // 1_000_000}.{us % 1_000_000:06d}"
