"""A TCP delay proxy: an emulated network between the savers and their servers.

This kernel has no `netem`, and asyncio timers round to a millisecond, so `DelayProxy` uses
threads: per connection and direction one reader that timestamps each chunk as it arrives and
one writer that releases it at `arrival + rtt / 2` (a `time.sleep` for the bulk, then a short
spin), in order. A request/response exchange therefore gains about one RTT, whatever its size.
TCP connection setup is not delayed (only data is), so a new connection costs the round trips
of its protocol handshake, not the TCP one.

The proxy also counts, per connection, what an RTT costs the client:

* `round_trips`: client-to-server bursts. A burst starts when the client sends after the server
  last answered (or first on a connection) and lasts until the server's next byte; a pipeline or
  a Lua script is one round trip, N commands sent one after the other are N. This is exact for
  request/response clients such as redis-py and psycopg (a connection is used by one caller at
  a time). A Postgres `Terminate` message (sent on close, never answered) is not counted.
* `transactions` (Postgres only): `ReadyForQuery` messages with status idle that follow a
  `CommandComplete` or an error (so neither the one ending the startup handshake nor a bare `Sync`, such as
  a pipeline's opening one): each marks the end of a transaction (explicit, or the implicit
  one of an autocommit statement), so this equals `xact_commit + xact_rollback` of
  `pg_stat_database` for that traffic. TLS traffic cannot be parsed: use `sslmode=disable`.
* `connections`, `bytes_up`, `bytes_down`.

Run proxies in their own process (`ProxyHost`) so that their threads never wait for the GIL of
the process being measured, nor add to its CPU time. Traffic goes to the target only (loopback
in the benchmark).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import queue
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

from psycopg.conninfo import conninfo_to_dict, make_conninfo

SPIN_SECONDS = 150e-6  # sleep until this close to the deadline, then spin
CHUNK = 256 * 1024
PG_TERMINATE = b"X\x00\x00\x00\x04"
_EOF = None


def precise_timers() -> None:
    """Make this process' sleeps wake on time: 1 ns timer slack (Linux, best effort) and a
    short GIL switch interval, so a spinning thread cannot hold the others back for 5 ms."""
    sys.setswitchinterval(20e-6)
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_timerslack = 29
        libc.prctl(pr_set_timerslack, 1, 0, 0, 0)


def sleep_until(deadline: float) -> None:
    """Sleep until `time.perf_counter() >= deadline`, to within a few microseconds."""
    remaining = deadline - time.perf_counter()
    if remaining > SPIN_SECONDS:
        time.sleep(remaining - SPIN_SECONDS)
    while time.perf_counter() < deadline:
        time.sleep(0)  # releases the GIL while spinning


@dataclass
class ProxyCounters:
    connections: int = 0
    round_trips: int = 0
    transactions: int = 0
    bytes_up: int = 0
    bytes_down: int = 0

    def minus(self, other: ProxyCounters) -> ProxyCounters:
        a, b = asdict(self), asdict(other)
        return ProxyCounters(**{k: a[k] - b[k] for k in a})


class _PgReplyParser:
    """Finds `ReadyForQuery` messages (and their status byte) in a server-to-client stream."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.startup = True  # before the first message: 'N'/'S'/'G' answer SSL/GSS requests
        self.ready_seen = 0
        self.idle_ready = 0
        self.opaque = False  # TLS: cannot be parsed
        # a command completed since the last ReadyForQuery: an idle one without any (a pipeline's
        # opening Sync) ended no transaction
        self.completed = False

    def feed(self, data: bytes) -> int:
        """Consume `data`; returns how many transactions ended in it."""
        if self.opaque:
            return 0
        self.buf += data
        ended = 0
        while self.buf:
            if self.startup and self.buf[0:1] in (b"N", b"G") and self._single_byte_answer():
                del self.buf[0]
                continue
            if self.startup and self.buf[0:1] == b"S" and self._single_byte_answer():
                self.opaque = True
                return ended
            if len(self.buf) < 5:
                break
            kind = self.buf[0:1]
            (length,) = struct.unpack("!I", self.buf[1:5])
            if len(self.buf) < 1 + length:
                break
            self.startup = False
            if kind in (b"C", b"E"):  # CommandComplete, or ErrorResponse (a rollback follows)
                self.completed = True
            elif kind == b"Z":
                status = self.buf[5:6]
                self.ready_seen += 1
                if status == b"I" and self.ready_seen > 1 and self.completed:
                    ended += 1
                self.completed = False
            del self.buf[: 1 + length]
        return ended

    def _single_byte_answer(self) -> bool:
        # An SSL/GSS answer is one byte; a real message has a 4-byte length after its type.
        if len(self.buf) < 5:
            return len(self.buf) == 1
        (length,) = struct.unpack("!I", self.buf[1:5])
        return length < 4 or length > 1 << 30


class _Pipe:
    """One direction's delay line: chunks leave in order, each at its deadline. With no delay
    and nothing queued the reader sends itself (no thread hand-off, which costs ~50 µs)."""

    def __init__(self, dst: socket.socket) -> None:
        self.dst = dst
        self.chunks: queue.SimpleQueue[tuple[float, bytes] | None] = queue.SimpleQueue()
        self.pending = 0
        self.lock = threading.Lock()

    def put(self, deadline: float, data: bytes) -> None:
        with self.lock:
            if self.pending == 0 and deadline <= time.perf_counter():
                self.dst.sendall(data)
                return
            self.pending += 1
        self.chunks.put((deadline, data))

    def put_eof(self) -> None:
        self.chunks.put(_EOF)

    def drain(self) -> None:
        while (item := self.chunks.get()) is not _EOF:
            deadline, data = item
            sleep_until(deadline)
            with self.lock:
                self.dst.sendall(data)
                self.pending -= 1


class _Link:
    """One proxied connection: two sockets, four threads, its counters' share."""

    def __init__(self, proxy: DelayProxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.server = server
        self.awaiting_reply = False
        self.pg = _PgReplyParser() if proxy.protocol == "postgres" else None
        self.open_directions = 2
        self.lock = threading.Lock()
        self.threads = [
            *self._direction(client, server, upstream=True),
            *self._direction(server, client, upstream=False),
        ]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def _direction(
        self, src: socket.socket, dst: socket.socket, *, upstream: bool
    ) -> list[threading.Thread]:
        pipe = _Pipe(dst)
        name = "up" if upstream else "down"
        return [
            threading.Thread(target=self._read, args=(src, pipe, upstream), daemon=True,
                             name=f"netem-read-{name}"),
            threading.Thread(target=self._write, args=(pipe,), daemon=True,
                             name=f"netem-write-{name}"),
        ]

    def _read(self, src: socket.socket, pipe: _Pipe, upstream: bool) -> None:
        try:
            while True:
                data = src.recv(CHUNK)
                now = time.perf_counter()
                if not data:
                    break
                self._count(data, upstream)
                pipe.put(now + self.proxy.delay_seconds(), data)
        except OSError:
            pass
        finally:
            pipe.put_eof()

    def _write(self, pipe: _Pipe) -> None:
        try:
            pipe.drain()
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                pipe.dst.shutdown(socket.SHUT_WR)
            with self.lock:
                self.open_directions -= 1
                done = self.open_directions == 0
            if done:
                self.close()

    def _count(self, data: bytes, upstream: bool) -> None:
        c = self.proxy.counters
        with self.proxy.lock:
            if upstream:
                c.bytes_up += len(data)
                if not self.awaiting_reply and not (self.pg and data == PG_TERMINATE):
                    self.awaiting_reply = True
                    c.round_trips += 1
            else:
                c.bytes_down += len(data)
                self.awaiting_reply = False
                if self.pg is not None:
                    c.transactions += self.pg.feed(data)

    def close(self) -> None:
        for s in (self.client, self.server):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self.proxy._forget(self)


class DelayProxy:
    """Listens on a free loopback port and forwards every connection to `target`, each
    direction delayed by `rtt_ms / 2`. `protocol` ("raw", "redis", "postgres") only changes
    what is counted. Change `rtt_ms` at any time; it applies to chunks received afterwards."""

    def __init__(
        self,
        target: tuple[str, int],
        *,
        rtt_ms: float = 0.0,
        protocol: str = "raw",
        listen_host: str = "127.0.0.1",
    ) -> None:
        if protocol not in ("raw", "redis", "postgres"):
            raise ValueError(f"protocol must be raw, redis or postgres, got {protocol!r}")
        self.target = target
        self.protocol = protocol
        self.rtt_ms = rtt_ms
        self.compensation_ms = 0.0
        self.counters = ProxyCounters()
        self.lock = threading.Lock()
        self.links: set[_Link] = set()
        self.listener = socket.create_server((listen_host, 0))
        self.host, self.port = self.listener.getsockname()[:2]
        self._closed = False
        self._acceptor = threading.Thread(target=self._accept, daemon=True, name="netem-accept")
        self._acceptor.start()

    @property
    def rtt_ms(self) -> float:
        return self._rtt_ms

    @rtt_ms.setter
    def rtt_ms(self, value: float) -> None:
        if value < 0:
            raise ValueError(f"rtt_ms must be >= 0, got {value!r}")
        self._rtt_ms = value

    def delay_seconds(self) -> float:
        """One-way delay of a chunk received now: half the RTT, less half the proxy's own
        measured cost (`compensation_ms`, see `calibrate`), never below zero."""
        if self._rtt_ms <= 0:
            return 0.0
        return max(0.0, self._rtt_ms - self.compensation_ms) / 2000

    def snapshot(self) -> ProxyCounters:
        with self.lock:
            return ProxyCounters(**asdict(self.counters))

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.counters.connections += 1
            link = _Link(self, client, server)
            with self.lock:
                self.links.add(link)
            link.start()

    def _forget(self, link: _Link) -> None:
        with self.lock:
            self.links.discard(link)

    def close(self) -> None:
        """Stop accepting, cut every connection, and wait for the threads to end."""
        self._closed = True
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self._acceptor.join(timeout=2)
        with self.lock:
            links = list(self.links)
        for link in links:
            link.close()
        for link in links:
            for t in link.threads:
                t.join(timeout=2)

    def __enter__(self) -> DelayProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------ a process of proxies


def serve(commands: IO[str], replies: IO[str]) -> None:
    """The proxy process' loop: one JSON command per line in, one JSON reply per line out."""
    precise_timers()
    proxies: list[DelayProxy] = []
    try:
        for line in commands:
            cmd = json.loads(line)
            reply: Any = None
            if cmd["op"] == "add":
                target = (cmd["host"], cmd["port"])
                proxies.append(DelayProxy(target, rtt_ms=cmd["rtt_ms"], protocol=cmd["protocol"]))
                reply = {"index": len(proxies) - 1, "port": proxies[-1].port}
            elif cmd["op"] == "rtt":
                for p in proxies:
                    p.rtt_ms = cmd["rtt_ms"]
            elif cmd["op"] == "compensation":
                for p in proxies:
                    p.compensation_ms = cmd["ms"]
            elif cmd["op"] == "counters":
                reply = [asdict(p.snapshot()) for p in proxies]
            elif cmd["op"] == "stop":
                break
            else:
                reply = {"error": f"unknown op {cmd['op']!r}"}
            replies.write(json.dumps(reply) + "\n")
            replies.flush()
    finally:
        for p in proxies:
            p.close()


@dataclass(frozen=True)
class ProxyHandle:
    index: int
    host: str
    port: int
    target: tuple[str, int]


class ProxyHost:
    """Delay proxies living in a child process (`python -m benchmarks.netem`). `add` one per
    target, `set_rtt` for all, `counters` to read them; `close` (or leaving the context
    manager) stops the process."""

    def __init__(self, rtt_ms: float = 0.0) -> None:
        root = Path(__file__).resolve().parent.parent
        self._process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.netem"],
            cwd=root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.rtt_ms = rtt_ms
        self._lock = threading.Lock()

    def _call(self, op: str, **args: Any) -> Any:
        assert self._process.stdin is not None and self._process.stdout is not None
        with self._lock:
            self._process.stdin.write(json.dumps({"op": op, **args}) + "\n")
            self._process.stdin.flush()
            line = self._process.stdout.readline()
        if not line:
            raise ConnectionError(f"proxy process exited (code {self._process.poll()})")
        reply = json.loads(line)
        if isinstance(reply, dict) and "error" in reply:
            raise ValueError(reply["error"])
        return reply

    def add(self, target: tuple[str, int], protocol: str = "raw") -> ProxyHandle:
        reply = self._call(
            "add", host=target[0], port=target[1], protocol=protocol, rtt_ms=self.rtt_ms
        )
        return ProxyHandle(reply["index"], "127.0.0.1", reply["port"], target)

    def set_rtt(self, rtt_ms: float) -> None:
        self._call("rtt", rtt_ms=rtt_ms)
        self.rtt_ms = rtt_ms

    def set_compensation(self, ms: float) -> None:
        """Subtract `ms` from every non-zero RTT: the round-trip cost of the proxy itself."""
        self._call("compensation", ms=ms)

    def counters(self) -> list[ProxyCounters]:
        return [ProxyCounters(**c) for c in self._call("counters")]

    def close(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin is not None
            with contextlib.suppress(OSError):
                self._process.stdin.write(json.dumps({"op": "stop"}) + "\n")
                self._process.stdin.close()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)
        if self._process.stdout is not None:
            self._process.stdout.close()

    def __enter__(self) -> ProxyHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------- URLs

_URL_SCHEMES = ("redis://", "rediss://", "postgres://", "postgresql://")


def target_of(url: str, default_port: int) -> tuple[str, int]:
    """(host, port) of a Redis/Postgres URL or a libpq conninfo string."""
    if url.startswith(_URL_SCHEMES):
        parts = urlsplit(url)
        return parts.hostname or "127.0.0.1", parts.port or default_port
    info = conninfo_to_dict(url)
    return str(info.get("host") or "127.0.0.1"), int(info.get("port") or default_port)


def proxied_url(url: str, port: int) -> str:
    """`url` (URL or conninfo) pointing at 127.0.0.1:`port`; Postgres without TLS, so the
    proxy can read its messages."""
    if url.startswith(_URL_SCHEMES):
        parts = urlsplit(url)
        userinfo, at, _ = parts.netloc.rpartition("@")
        netloc = f"{userinfo}{at}127.0.0.1:{port}"
        url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
        if parts.scheme.startswith("postgres"):
            return make_conninfo(url, sslmode="disable")
        return url
    return make_conninfo(url, host="127.0.0.1", port=str(port), sslmode="disable")


# ---------------------------------------------------------------------------- precision


def ping_round_trips(port: int, n: int, host: str = "127.0.0.1") -> list[float]:
    """`n` raw Redis PING round trips (ms) on one connection: RESP inline, no client library."""
    samples = []
    with socket.create_connection((host, port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(n):
            t0 = time.perf_counter()
            s.sendall(b"PING\r\n")
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = s.recv(64)
                if not chunk:
                    raise ConnectionError("connection closed during PING")
                reply += chunk
            samples.append((time.perf_counter() - t0) * 1000)
            if reply != b"+PONG\r\n":
                raise ConnectionError(f"unexpected PING reply {reply!r}")
    return samples


if __name__ == "__main__":
    serve(sys.stdin, sys.stdout)
