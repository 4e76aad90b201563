"""Running a block of a test without coverage.py's tracer (see :func:`untraced`)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def untraced() -> Iterator[None]:
    """Run the block without coverage.py's tracer; a no-op when the suite runs without ``--cov``.

    For work that repeats code other tests already cover (exploration sweeps, the demo behind many
    output checks, stress tests): traced, each costs 4-8x its time. pytest-cov's own ``no_cover``
    pause does not take the tracer off under xdist (measured: ``sys.gettrace()`` is still coverage's
    CTracer inside a ``no_cover`` test on a worker), so this removes it from the thread and starts
    it again after. Greenlets made inside the block share the thread's (now empty) trace function.
    """
    tracer = sys.gettrace()
    start = getattr(tracer, "start", None)
    if tracer is None or start is None:  # not under coverage (or a debugger's tracer: leave it)
        yield
        return
    sys.settrace(None)
    thread_trace = threading.gettrace()
    threading.settrace(None)
    try:
        yield
    finally:
        threading.settrace(thread_trace)
        start()
