"""The benchmark's ``wan`` proxy (benchmarks/network.py): latency per round trip, the
extra round trip of a new connection, pipelined chunks, and the bandwidth cap."""

from __future__ import annotations

import importlib.util
import socket
import socketserver
import sys
import threading
import time
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "bench_network", Path(__file__).resolve().parent.parent / "benchmarks" / "network.py"
)
assert _spec and _spec.loader
network = importlib.util.module_from_spec(_spec)
sys.modules["bench_network"] = network  # dataclasses look their module up
_spec.loader.exec_module(network)

TEN_MB = 10_000_000


class _Upstream(socketserver.ThreadingTCPServer):
    """Echoes each line; ``big\\n`` answers 10 MB instead."""

    daemon_threads = True
    allow_reuse_address = True


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        for line in self.rfile:
            if line == b"big\n":
                self.wfile.write(b"x" * TEN_MB)
            else:
                self.wfile.write(line)
            self.wfile.flush()


@pytest.fixture
def wan():
    server = _Upstream(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with network.WanProxy(f"127.0.0.1:{server.server_address[1]}") as proxy:
        yield proxy
    server.shutdown()
    server.server_close()


def _connect(proxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=10)


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(min(1 << 20, size - len(data)))
        assert chunk, "connection closed early"
        data += chunk
    return bytes(data)


def test_a_new_connection_costs_two_round_trips_and_a_kept_one_costs_one(wan):
    started = time.perf_counter()
    with _connect(wan) as sock:
        sock.sendall(b"ping\n")
        assert _read_exactly(sock, 5) == b"ping\n"
        first = time.perf_counter() - started
        started = time.perf_counter()
        sock.sendall(b"pong\n")
        assert _read_exactly(sock, 5) == b"pong\n"
        second = time.perf_counter() - started
    assert first >= 0.100
    assert second >= 0.050
    # The kept connection paid no second set-up: one connection, three round trips.
    assert wan.counts() == {"connections": 1, "round_trips": 3}


def test_later_chunks_are_not_held_up_behind_earlier_ones(wan):
    with _connect(wan) as sock:
        sock.sendall(b"warm\n")
        _read_exactly(sock, 5)
        started = time.perf_counter()
        for i in range(20):  # one chunk every 10 ms: delivered as a stream, 50 ms late
            sock.sendall(b"%02d\n" % i)
            time.sleep(0.01)
        _read_exactly(sock, 60)
        elapsed = time.perf_counter() - started
    assert 0.240 <= elapsed < 0.80  # serialised delays would take 20 x 50 ms


def test_throughput_is_capped_at_100_mbit(wan):
    with _connect(wan) as sock:
        started = time.perf_counter()
        sock.sendall(b"big\n")
        _read_exactly(sock, TEN_MB)
        elapsed = time.perf_counter() - started
    assert elapsed >= 0.78
