"""Engines for many-run jobs: fleets of hosts, explore shards, compare seeds.

An engine maps a top-level function over a list of small picklable work items and returns the
results *in item order*, whatever order the workers finish in, so a job's output depends only
on its items, never on the engine, the worker count or the timing:

* ``local`` (the default): a process pool on this machine (``workers`` processes, forked once
  per job before any thread starts; ``workers = 1`` runs in this process, nothing to start);
* ``ray``: tasks on a Ray cluster (``ray.init(address=...)``; without an address a local Ray
  instance with ``workers`` CPUs). Ray is an optional extra (``pip install 'sgxsim[ray]'``).
  It is started with usage statistics off (``RAY_USAGE_STATS_ENABLED=0``), without the
  dashboard and without forwarding worker logs: nothing leaves the machine. A task whose worker
  dies is retried by Ray (``max_retries``); the result is the same, because a work item is
  deterministic.

``progress(done, total)`` is called after every finished item. Ctrl-C (KeyboardInterrupt)
cancels the outstanding items (the pool is terminated, Ray tasks are cancelled) and propagates.

Models: nothing of SGX; the job plumbing around the simulator.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sgxsim.errors import SgxSimError

__all__ = [
    "ENGINES",
    "Engine",
    "EngineError",
    "EngineSpec",
    "LocalEngine",
    "RayEngine",
    "check_ray_address",
    "open_engine",
]

T = TypeVar("T")
R = TypeVar("R")

#: Engine names the CLI offers.
ENGINES = ("local", "ray")
#: Times Ray re-runs a task whose worker process died.
RAY_MAX_RETRIES = 3
#: Seconds to wait for a TCP connection to a Ray address, and then for its gRPC reply, before
#: calling it unreachable.
CONNECT_TIMEOUT_S = 3.0
#: Ray's default ports: the GCS of ``host:port`` addresses, the client server of ``ray://``.
_RAY_GCS_PORT = 6379
_RAY_CLIENT_PORT = 10001
#: The HTTP/2 client connection preface and an empty SETTINGS frame (RFC 9113 section 3.4): a
#: Ray GCS or client server (both gRPC) answers with a SETTINGS frame of its own.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes((0, 0, 0, 4, 0, 0, 0, 0, 0))
_H2_SETTINGS = 4

Progress = Callable[[int, int], None]


class EngineError(SgxSimError):
    """An engine cannot start (Ray not installed, an unreachable address, a bad worker count)."""


@dataclass(frozen=True)
class EngineSpec:
    """Which engine, with how many workers (``None``: one per CPU) and, for Ray, which cluster."""

    name: str = "local"
    workers: int | None = None
    address: str | None = None

    def __post_init__(self) -> None:
        if self.name not in ENGINES:
            raise EngineError(f"unknown engine {self.name!r}; expected one of {', '.join(ENGINES)}")
        if self.workers is not None and (
            isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1
        ):
            raise EngineError(f"workers must be an int >= 1, got {self.workers!r}")
        if self.address is not None and self.name != "ray":
            raise EngineError("--address is only for --engine ray")


class Engine(Protocol):
    """Runs ``fn`` over ``items`` and returns the results in item order."""

    name: str

    def map(self, fn: Callable[[T], R], items: Sequence[T], progress: Progress | None = None) -> list[R]: ...


def _ignore_sigint() -> None:
    """Pool workers leave Ctrl-C to the parent, which terminates them (no worker tracebacks)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _indexed(fn: Callable[[T], R], pair: tuple[int, T]) -> tuple[int, R]:
    return pair[0], fn(pair[1])


class LocalEngine:
    """A process pool on this machine (``workers = 1``: in this process)."""

    name = "local"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers if workers is not None else max(os.cpu_count() or 1, 1)
        self._pool: Any = None
        if self.workers > 1:
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            self._pool = multiprocessing.get_context(method).Pool(self.workers, initializer=_ignore_sigint)

    def map(self, fn: Callable[[T], R], items: Sequence[T], progress: Progress | None = None) -> list[R]:
        total = len(items)
        out: list[Any] = [None] * total
        if self._pool is None or total <= 1:
            for i, item in enumerate(items):
                out[i] = fn(item)
                if progress is not None:
                    progress(i + 1, total)
            return out
        import functools

        done = 0
        try:
            for i, res in self._pool.imap_unordered(functools.partial(_indexed, fn), enumerate(items)):
                out[i] = res
                done += 1
                if progress is not None:
                    progress(done, total)
        except BaseException:
            self.close(terminate=True)
            raise
        return out

    def close(self, terminate: bool = False) -> None:
        if self._pool is None:
            return
        if terminate:
            self._pool.terminate()
        else:
            self._pool.close()
        self._pool.join()
        self._pool = None


def check_ray_address(address: str, timeout: float | None = None) -> None:
    """Fail fast with :class:`EngineError` when no Ray cluster answers at ``address``.

    Nothing listening is "unreachable"; a listener that does not answer the HTTP/2 preface with a
    SETTINGS frame within ``timeout`` is not a Ray GCS or client server (``ray.init`` would retry
    it for minutes; default :data:`CONNECT_TIMEOUT_S`). With Ray's TLS (``RAY_USE_TLS``) only the
    TCP connection is checked.
    """
    timeout = CONNECT_TIMEOUT_S if timeout is None else timeout
    if address == "auto":
        return
    client = address.startswith("ray://")
    rest = address.removeprefix("ray://")
    host, sep, port_text = rest.rpartition(":")
    if not sep:
        host, port_text = rest, str(_RAY_CLIENT_PORT if client else _RAY_GCS_PORT)
    try:
        port = int(port_text)
    except ValueError:
        raise EngineError(f"Ray address {address!r}: port {port_text!r} is not a number") from None
    try:
        conn = socket.create_connection((host, port), timeout=timeout)
    except OSError as err:
        raise EngineError(f"Ray address {address!r} is unreachable: {err.strerror or err}") from None
    with conn:
        if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
            return
        reply = b""
        try:
            conn.sendall(_H2_PREFACE)
            while len(reply) < 9:
                chunk = conn.recv(9 - len(reply))
                if not chunk:
                    break
                reply += chunk
        except OSError:
            pass  # a timeout or a reset: judged by what arrived
    if len(reply) < 9 or reply[3] != _H2_SETTINGS:
        raise EngineError(
            f"Ray address {address!r} does not answer as a Ray cluster (no gRPC reply within "
            f"{timeout:g} s): is it the GCS port (default {_RAY_GCS_PORT}) or ray://host:port of the "
            f"client server (default {_RAY_CLIENT_PORT})?"
        )


class RayEngine:
    """Tasks on a Ray cluster; see the module docstring.

    A session already started in this process (``ray.is_initialized()``) is used as it is and
    left running; a session this engine started is shut down by :meth:`close`.
    """

    name = "ray"

    def __init__(self, workers: int | None = None, address: str | None = None) -> None:
        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
        try:
            import ray
        except ImportError:
            raise EngineError("Ray is not installed: pip install 'sgxsim[ray]'") from None
        self._ray = ray
        self._owns = False
        if ray.is_initialized():
            return
        import logging

        if address is not None:
            check_ray_address(address)
        kwargs: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": logging.ERROR,
        }
        if address is None:
            kwargs["num_cpus"] = workers if workers is not None else max(os.cpu_count() or 1, 1)
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise EngineError(
                f"cannot connect to Ray at {address or 'a new local instance'}: {err}"
            ) from None
        self._owns = True

    def map(self, fn: Callable[[T], R], items: Sequence[T], progress: Progress | None = None) -> list[R]:
        ray = self._ray
        remote = ray.remote(max_retries=RAY_MAX_RETRIES)(fn)
        refs = [remote.remote(item) for item in items]
        index = {ref: i for i, ref in enumerate(refs)}
        out: list[Any] = [None] * len(refs)
        pending = list(refs)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for ref in ready:
                    out[index[ref]] = ray.get(ref)
                if progress is not None:
                    progress(len(refs) - len(pending), len(refs))
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        return out

    def close(self, terminate: bool = False) -> None:
        del terminate
        if self._owns:
            self._ray.shutdown()
            self._owns = False


@contextmanager
def open_engine(spec: EngineSpec) -> Iterator[LocalEngine | RayEngine]:
    """Start the engine ``spec`` names, yield it, and stop what it started (also on Ctrl-C).

    Outcomes: the engine; :class:`EngineError` if it cannot start.
    """
    engine: LocalEngine | RayEngine
    engine = LocalEngine(spec.workers) if spec.name == "local" else RayEngine(spec.workers, spec.address)
    try:
        yield engine
    except BaseException:
        engine.close(terminate=True)
        raise
    engine.close()
