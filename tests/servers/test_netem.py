"""The benchmark's TCP delay proxy (`benchmarks/netem.py`): bytes arrive intact and in order
under concurrency, a round trip through it costs at least the configured RTT, and it counts
round trips and Postgres transactions the way the benchmark reports them."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
import redis

from benchmarks.netem import (
    DelayProxy,
    ProxyHost,
    ping_round_trips,
    proxied_url,
    target_of,
)


@pytest.fixture
def echo_server() -> Iterator[tuple[str, int]]:
    """A loopback TCP server that sends back whatever it receives (one thread per client)."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    yield listener.getsockname()[:2]
    stop.set()
    listener.close()
    acceptor.join(timeout=2)


def _exchange(port: int, payloads: list[bytes]) -> bytes:
    """Send every payload (streaming), read until all bytes came back."""
    expected = sum(len(p) for p in payloads)
    got = bytearray()
    with socket.create_connection(("127.0.0.1", port)) as s:
        def read() -> None:
            while len(got) < expected:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got.extend(chunk)

        t = threading.Thread(target=read, daemon=True)
        t.start()
        for p in payloads:
            s.sendall(p)
        t.join(timeout=30)
    return bytes(got)


def test_bytes_arrive_intact_and_in_order_under_concurrency(
    echo_server: tuple[str, int],
) -> None:
    with DelayProxy(echo_server, rtt_ms=0.4) as proxy:
        clients = 8
        sent = [[os.urandom(1 + (i * 977 + k * 131) % 40000) for k in range(30)] for i in range(clients)]
        received: list[bytes | None] = [None] * clients

        def client(i: int) -> None:
            received[i] = _exchange(proxy.port, sent[i])

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        for i in range(clients):
            assert received[i] == b"".join(sent[i]), f"client {i} got altered bytes"
        assert proxy.snapshot().connections == clients


def test_round_trip_takes_at_least_the_configured_rtt(redis_url: str) -> None:
    host, port = target_of(redis_url, 6379)
    with DelayProxy((host, port), rtt_ms=2.0, protocol="redis") as proxy:
        samples = ping_round_trips(proxy.port, 20)
    assert min(samples) >= 2.0


def test_redis_round_trips_are_counted_per_burst(redis_url: str) -> None:
    host, port = target_of(redis_url, 6379)
    with DelayProxy((host, port), protocol="redis") as proxy:
        client = redis.Redis.from_url(proxied_url(redis_url, proxy.port))
        try:
            client.ping()  # connection set-up happens here
            before = proxy.snapshot()
            pipe = client.pipeline(transaction=False)
            for _ in range(5):
                pipe.ping()
            pipe.execute()
            after_pipeline = proxy.snapshot()
            for _ in range(3):
                client.ping()
            after_singles = proxy.snapshot()
        finally:
            client.close()
    assert after_pipeline.minus(before).round_trips == 1
    assert after_singles.minus(after_pipeline).round_trips == 3


def test_postgres_round_trips_and_transactions_are_counted(postgres_url: str) -> None:
    target = target_of(postgres_url, 5432)
    with DelayProxy(target, protocol="postgres") as proxy:
        with psycopg.connect(proxied_url(postgres_url, proxy.port), autocommit=True) as conn:
            before = proxy.snapshot()
            for _ in range(3):
                conn.execute("SELECT 1").fetchall()
            autocommit = proxy.snapshot()
            with conn.transaction():
                conn.execute("SELECT 1").fetchall()
                conn.execute("SELECT 2").fetchall()
            explicit = proxy.snapshot()
        closed = proxy.snapshot()
    assert autocommit.minus(before).round_trips == 3
    assert autocommit.minus(before).transactions == 3
    assert explicit.minus(autocommit).transactions == 1
    assert explicit.minus(autocommit).round_trips >= 3  # BEGIN, 2 statements, COMMIT
    assert closed.minus(explicit).round_trips == 0  # Terminate is never answered: not counted


def test_proxy_host_runs_proxies_in_a_child_process(redis_url: str) -> None:
    with ProxyHost() as host:
        proxy = host.add(target_of(redis_url, 6379), "redis")
        host.set_rtt(1.0)
        t0 = time.perf_counter()
        ping_round_trips(proxy.port, 3)
        elapsed_ms = (time.perf_counter() - t0) * 1000
        counters = host.counters()[proxy.index]
    assert elapsed_ms >= 3 * 1.0  # no compensation set: every round trip gains the full RTT
    assert counters.round_trips == 3 and counters.connections == 1
