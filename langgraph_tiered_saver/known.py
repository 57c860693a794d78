"""Knowing a new thread without asking Postgres.

The first read of a thread Redis does not hold must tell a new thread (start fresh) from a cold
one (expired from Redis, flushed to Postgres). Asking Postgres costs a transaction on the hot
path of every new thread. The tenant's registry in Redis (`keys.tenant_threads_key`, one slice
per shard) holds every thread written through Redis, past the threads' TTL, so it can answer
alone once it is *complete*: it holds every thread Postgres holds. Each slice's mark
(`keys.known_key`) says under which token (the shard's copies of the epoch and the
write-through count) it was found complete; the token changes whenever completeness may have
broken:

- Redis lost data (restarted empty, flushed, failed over without it): the epoch changes
  (sentinel.py), and the registry went with the data.
- A thread reached Postgres past Redis (a write-through during a Redis outage, `Core`): the
  deployment's write-through counter in Postgres moves. Every process polls it in the
  background (every `poll_seconds`) and raises Redis' copy (`known_seen.lua`).

A tenant whose registry is not complete under the current token is rebuilt in the background
from Postgres' thread ids, then marked complete under the token read before the copy, if that
token is still current (`known_complete.lua`); meanwhile its misses ask Postgres as before.
`get.lua` classifies a miss: "new" (not registered in a complete registry, or "born": first
written while it was complete, so Redis holds all of it) needs no lookup; "cold" (registered),
"incomplete" (a rebuild is due), "evicted" and "untrusted" ask Postgres. A process trusts the registry only while its last poll
succeeded within `trust_seconds` and Redis' eviction policy cannot drop keys without a TTL
(noeviction, volatile-*); otherwise every miss asks Postgres.

The process that writes a thread through stops trusting the registry at once, until a poll has
carried the new count into Redis (`wrote_through`). The one window: a write-through by another
process is seen within one poll interval. A process that reads a thread in that interval, from a
Redis that the writer could not reach, takes it for new; the README states it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from . import keys as K
from . import scripts
from ._io import Op, RedisCall
from .codec import as_str
from .durable import ops as pg
from .metrics import Metrics
from .sentinel import Epoch

logger = logging.getLogger("langgraph_tiered_saver")

POLL_SECONDS = 2.0
REBUILD_PAGE = 2000
# statuses of a miss in get.lua (lua/_common.lua miss_status)
NEW, INCOMPLETE, UNTRUSTED = "new", "incomplete", "untrusted"


class KnownThreads:
    """The registry's keys and token for the scripts, whether this process may trust it, and
    the ops that keep it complete. Shared by a saver's sync and async calls; no I/O here."""

    def __init__(
        self, key_prefix: str, schema: str, epoch: Epoch, metrics: Metrics, *, enabled: bool,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:  # fmt: skip
        self.prefix = key_prefix
        self.schema = schema
        self.epoch = epoch
        self.metrics = metrics
        self.enabled = enabled
        self.poll_seconds = poll_seconds
        self.trust_seconds = 3 * poll_seconds
        self._fresh_until = 0.0
        self._lock = threading.Lock()
        self._wanted: set[str] = set()  # tenants whose registry should be rebuilt
        self._warden: Warden | None = None
        self._pushed: int | None = None  # the write-through count last copied into every shard
        self._generation = 0  # moved by wrote_through(): a poll begun before it earns no trust

    # ------------------------------------------------------------------ used by the scripts

    def trusted(self) -> bool:
        return self.enabled and self.epoch.policy_safe is True and time.monotonic() < self._fresh_until

    def trust_arg(self) -> str:
        """ARG.trust of the scripts (and the background thread's start, on first use)."""
        if self._warden is not None and not self._warden.started:
            self._warden.ensure_started()
        return "1" if self.trusted() else "0"

    def read_keys(self, tenant_id: str, shard: int) -> dict[str, str]:
        """KEYS a read in `shard` needs to classify a miss (scripts._KNOWN_KEYS)."""
        return {
            "registry": K.tenant_threads_key(self.prefix, tenant_id, shard),
            "known": K.known_key(self.prefix, tenant_id, shard),
            "epoch": K.epoch_key(self.prefix, shard), "write_through": K.write_through_key(self.prefix, shard),
        }  # fmt: skip

    def wrote_through(self) -> None:
        """This process writes a thread through to Postgres (Redis is down): until a poll that
        began after this has carried the new count into Redis, Redis' registry may lack the
        thread, so no miss is trusted (the marks' token moves with that poll)."""
        with self._lock:
            self._generation += 1
            self._fresh_until = 0.0
        if self._warden is not None:
            self._warden.wake()

    def missed(self, tenant_id: str, status: str) -> None:
        """A read found nothing in Redis; `status` is get.lua's verdict."""
        self.metrics.incr(f"read_misses_{status}")
        if status in (INCOMPLETE, UNTRUSTED):  # a rebuild checks the mark first: cheap if complete
            with self._lock:
                self._wanted.add(tenant_id)
            if self._warden is not None:
                self._warden.wake()  # rebuild now, not at the next poll

    # ------------------------------------------------------------------ the background ops

    def poll_op(self) -> Op[None]:
        """Carry Postgres' write-through count into Redis; on success, trust the registry for
        `trust_seconds` (the first poll also learns the epoch and checks the eviction policy)."""
        generation = self._generation
        yield from self.epoch.known_op()
        count = yield from pg.write_through_count_op(self.schema)
        self.metrics.incr("registry_polls")  # one small Postgres transaction each
        raised = 0
        if count != self._pushed:  # a shard that lost its copy also lost its epoch: token moved
            calls = tuple(
                scripts.KNOWN_SEEN.call({"write_through": K.write_through_key(self.prefix, shard)}, {"count": count})
                for shard in range(K.SHARDS)
            )
            replies = yield RedisCall(calls, scripts=(scripts.KNOWN_SEEN,))
            raised = sum(int(r) for r in replies)
            self._pushed = count
        if raised:
            self.metrics.incr("write_throughs_seen")
            logger.info("Postgres counts %d write-throughs: every tenant's thread registry is rebuilt", count)
        with self._lock:
            if generation == self._generation:  # no write-through of ours since it began
                self._fresh_until = time.monotonic() + self.trust_seconds
        return None

    def rebuild_op(self, tenant_id: str) -> Op[bool]:
        """Copy the tenant's Postgres thread ids into its registry, then mark it complete under
        the token read first (False: the token moved meanwhile; the next miss asks again)."""
        shards = range(K.SHARDS)
        keys = [self.read_keys(tenant_id, shard) for shard in shards]
        read = yield RedisCall(tuple(("GET", k[name]) for k in keys for name in ("epoch", "write_through", "known")))
        tokens: dict[int, str] = {}
        complete = True
        for shard in shards:
            epoch, seen, mark = read[3 * shard : 3 * shard + 3]
            if epoch is None:
                complete = False  # the shard lost data and nobody wrote since: a write sets it
                continue
            token = as_str(epoch) + "/" + (as_str(seen) if seen is not None else "0")
            if mark is None or as_str(mark) != token:
                tokens[shard] = token
        if not tokens:
            return complete  # complete already
        after, copied = "", 0
        while True:
            page = yield from pg.thread_ids_page_op(self.schema, tenant_id, after, REBUILD_PAGE)
            self.metrics.incr("registry_scan_pages")  # one small Postgres transaction each
            if not page:
                break
            by_shard: dict[int, list[Any]] = {}
            for thread_id in page:
                shard = K.shard_of(tenant_id, thread_id)
                if shard in tokens:
                    by_shard.setdefault(shard, []).extend((0, thread_id))
            if by_shard:
                yield RedisCall(tuple(("ZADD", keys[s]["registry"], "NX", *args) for s, args in by_shard.items()))
            copied += len(page)
            after = page[-1]
        calls = tuple(
            scripts.KNOWN_COMPLETE.call({k: keys[s][k] for k in ("known", "epoch", "write_through")}, {"token": token})
            for s, token in tokens.items()
        )
        replies = yield RedisCall(calls, scripts=(scripts.KNOWN_COMPLETE,))
        marked = complete and all(int(r) for r in replies)
        if int(marked):
            self.metrics.incr("registry_rebuilds")
            logger.info("thread registry of tenant %r complete (%d threads in Postgres)", tenant_id, copied)
        return bool(int(marked))

    def take_wanted(self) -> list[str]:
        with self._lock:
            wanted, self._wanted = sorted(self._wanted), set()
        return wanted

    # ------------------------------------------------------------------ the thread

    def attach(self, run: Callable[[Op[Any]], Any]) -> None:
        """Give the background thread its (sync) op runner; it starts on first use."""
        if self.enabled:
            self._warden = Warden(self, run)

    def stop(self) -> None:
        if self._warden is not None:
            self._warden.stop()


class Warden:
    """A daemon thread: polls the write-through count, rebuilds the registries asked for. Any
    failure is contained, logged once per kind of trouble and counted; trust lapses by itself."""

    def __init__(self, known: KnownThreads, run: Callable[[Op[Any]], Any]) -> None:
        self.known = known
        self.run = run
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()
        self._last_error = ""

    @property
    def started(self) -> bool:
        return self._thread is not None

    def ensure_started(self) -> None:
        with self._guard:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._loop, name="tiered-saver-known-threads", daemon=True)
                self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._guard:
            thread = self._thread
        if thread is not None:
            thread.join(timeout=10)

    def _loop(self) -> None:
        """The thread's body: never ends but on stop(). Each step's failure is contained in
        `_step`; anything else is logged, counted, and the loop goes on."""
        next_poll = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_poll:
                    self._step(self.known.poll_op(), "poll the write-through count")
                    next_poll = time.monotonic() + self.known.poll_seconds
                if self.known.trusted():
                    for tenant_id in self.known.take_wanted():
                        self._step(self.known.rebuild_op(tenant_id), f"rebuild the registry of {tenant_id!r}")
            except Exception:
                self.known.metrics.incr("known_threads_errors")
                logger.exception("known-threads loop error (contained; the loop goes on)")
                next_poll = time.monotonic() + self.known.poll_seconds
            self._wake.wait(max(0.0, next_poll - time.monotonic()))
            self._wake.clear()

    def _step(self, op: Op[Any], what: str) -> None:
        try:
            self.run(op)
        except Exception as exc:
            self.known.metrics.incr("known_threads_errors")
            error = f"{type(exc).__name__}: {exc}"
            if error != self._last_error:  # one line per kind of trouble, not one per poll
                logger.warning("could not %s (new threads ask Postgres until it works): %s", what, error)
            self._last_error = error
        else:
            self._last_error = ""
