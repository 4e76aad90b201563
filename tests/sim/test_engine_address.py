"""The Ray address check (sim/engine.py ``check_ray_address``) against local stand-ins: nothing
listening, a listener that never answers, one that answers as an HTTP/2 (gRPC) server, and
Ray's TLS mode, where only the TCP connection can be checked."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from sgxsim.sim.engine import EngineError, check_ray_address

# An HTTP/2 SETTINGS frame with no settings: length 0, type 4, flags 0, stream 0.
SETTINGS_FRAME = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def _serve(answer: bytes | None) -> Iterator[int]:
    """A loopback listener; each connection gets ``answer`` after the client speaks (None: silence)."""
    srv = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def loop() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(64)
                    if answer is not None:
                        conn.sendall(answer)
                    stop.wait(0.5)
                except OSError:
                    pass

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        t.join()
        srv.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    yield from _serve(None)


@pytest.fixture
def grpc_like_port() -> Iterator[int]:
    yield from _serve(SETTINGS_FRAME)


def test_nothing_listening_is_unreachable() -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    with pytest.raises(EngineError, match="unreachable"):
        check_ray_address(f"127.0.0.1:{port}", timeout=1)


def test_a_listener_that_never_answers_is_not_a_ray_cluster(
    silent_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAY_USE_TLS", raising=False)
    with pytest.raises(EngineError, match="does not answer as a Ray cluster"):
        check_ray_address(f"127.0.0.1:{silent_port}", timeout=0.5)


def test_an_http2_settings_reply_passes(grpc_like_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_USE_TLS", raising=False)
    check_ray_address(f"127.0.0.1:{grpc_like_port}", timeout=2)
    check_ray_address(f"ray://127.0.0.1:{grpc_like_port}", timeout=2)


@pytest.mark.parametrize("value", ["1", "true", "TRUE"])
def test_with_ray_tls_only_the_tcp_connection_is_checked(
    silent_port: int, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("RAY_USE_TLS", value)
    check_ray_address(f"127.0.0.1:{silent_port}", timeout=0.5)  # no gRPC preface is sent over TLS
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    with pytest.raises(EngineError, match="unreachable"):
        check_ray_address(f"127.0.0.1:{port}", timeout=1)


def test_a_port_that_is_not_a_number_is_named() -> None:
    with pytest.raises(EngineError, match="'x6379' is not a number"):
        check_ray_address("127.0.0.1:x6379")
