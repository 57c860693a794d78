"""The flush loops of standalone workers: one or many, sharing one outbox ("many
flush workers"). worker.py runs them in a worker process, beside its endpoints and summary.

Two kinds of lease divide the work, both in Redis, both timed by the Redis clock:

- A **flush lease per thread** (`flush.FlushLease`, the thread's flush lock): whoever flushes a
  thread holds it, renewed at every batch. It is what makes a thread's flush exclusive, between
  workers and the savers' own background flushers alike, and what hands a dead worker's thread
  over: its lease lapses after `lease` seconds and the next flusher writes the entries the dead
  one never acknowledged (upserts are idempotent; acknowledgement compares versions).
- A **membership lease per worker** (`Roster`): every worker renews its entry in the sorted set
  `<prefix>:<version>:flush_workers` at each poll. The live members, sorted by id, give each
  worker an index i of n, and a thread belongs to share i when its shard (keys.py) % n == i: a
  worker polls only its shards' outbox indexes (256 / n of them), all of them only to steal.
  A worker flushes its own share first, so n workers take disjoint threads in the steady state
  instead of racing for the same oldest ones (each lost race is a wasted round trip); during
  a pass it renews its membership every `SHARE_REFRESH_SECONDS` and skips threads that have
  left its share (a worker that claimed before the others joined, as at every start-up). A worker
  killed with SIGKILL stops renewing; `lease` seconds later the others re-divide the threads
  among themselves, and its in-flight thread's flush lease has lapsed by then too.

A worker whose share has nothing due helps the others (work stealing): it takes threads that
have waited longer than `quiet + lease` seconds, newest first, so that it meets their busy
owner (who works oldest first) in the middle rather than at the head of the queue. Shares are an
efficiency, never a correctness, device: a thread in two shares for a moment (the membership
changed between two workers' polls) is still flushed by one of them at a time.

A pass flushes its threads in groups of `FLUSH_GROUP`, each in one Postgres transaction
(`FlushOps.flush_group_op`, as the background flusher does), and failures are contained per
thread exactly as in the background flusher (`flusher.RetryBook`).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from langgraph_tiered_saver._sansio.io import Op, RedisCall
from langgraph_tiered_saver.errors import TierUnavailableError
from langgraph_tiered_saver.flushing.background import (
    FLUSH_GROUP,
    OUTAGE_MAX_BACKOFF,
    RetryBook,
    ThreadId,
    flush_group,
    record_flush,
    record_outbox,
)
from langgraph_tiered_saver.flushing.ops import DEFAULT_LEASE, FlushLease, FlushOps, FlushPolicy
from langgraph_tiered_saver.hot import keys as K
from langgraph_tiered_saver.hot import scripts
from langgraph_tiered_saver.observability.metrics import Metrics
from langgraph_tiered_saver.records.codec import as_str, scored

logger = logging.getLogger("langgraph_tiered_saver.flush")

DIRTY_PAGE = 500  # threads a worker asks the outbox index for per poll, per live worker
# How often a worker renews its membership during a pass at most: a worker that claimed its
# threads before others joined (every start-up) drops theirs within this.
SHARE_REFRESH_SECONDS = 0.25


def workers_key(prefix: str) -> str:
    """ZSET worker id -> membership lease expiry (ms, Redis clock)."""
    return f"{prefix}:{K.SCHEMA_VERSION}:flush_workers"


def new_worker_id() -> str:
    """host:pid:random: unique per worker, and it tells an operator where the worker runs."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def share_of(tenant_id: str, thread_id: str, count: int) -> int:
    """The share a thread belongs to among `count` workers: its shard's (the same in every
    process), so a share is a set of shards."""
    return K.shard_of(tenant_id, thread_id) % count


def shards_of(share: Share) -> list[int]:
    """The shards whose outbox indexes a share's worker polls."""
    return [shard for shard in range(K.SHARDS) if shard % share.count == share.index]


@dataclass(frozen=True)
class Share:
    """A worker's place among the live workers: index `index` of `count`."""

    index: int
    count: int

    def owns(self, key: ThreadId) -> bool:
        return share_of(key[0], key[1], self.count) == self.index


class Roster:
    """One worker's membership lease (sans-I/O ops)."""

    def __init__(self, prefix: str, worker_id: str, lease_ms: int) -> None:
        self.key = workers_key(prefix)
        self.worker_id = worker_id
        self.lease_ms = lease_ms

    def heartbeat_op(self) -> Op[Share]:
        """Renew the lease, drop lapsed members, and return this worker's share (one round trip)."""
        call = scripts.WORKER_HEARTBEAT.call({"workers": self.key}, {"worker": self.worker_id, "lease_ms": self.lease_ms})
        (members,) = yield RedisCall((call,), scripts=(scripts.WORKER_HEARTBEAT,))
        live = sorted(as_str(m) for m in members)
        return Share(live.index(self.worker_id), len(live))

    def leave_op(self) -> Op[None]:
        """Give the share back at once (a clean stop), instead of after the lease."""
        yield RedisCall((("ZREM", self.key, self.worker_id),))
        return None

    def members_op(self) -> Op[list[str]]:
        """The workers whose membership lease has not lapsed (for operators and tests)."""
        members, clock = yield RedisCall((("ZRANGE", self.key, 0, -1, "WITHSCORES"), ("TIME",)))
        now_ms = int(clock[0]) * 1000 + int(clock[1]) // 1000
        return sorted(as_str(m) for m, expiry in scored(members) if float(expiry) > now_ms)


def claim_op(
    ops: FlushOps, share: Share | None, *, quiet_ms: int, steal_after_ms: int
) -> Op[tuple[list[ThreadId], bool]]:
    """The threads this worker should flush now, and whether they are stolen: its share's due
    threads, oldest first; when none is due, the overdue threads of any share, newest first
    (see module docstring)."""
    if share is None or share.count == 1:
        return (yield from ops.dirty_threads_op(older_than_ms=quiet_ms, limit=DIRTY_PAGE)), False
    mine: list[ThreadId] = yield from ops.dirty_threads_op(older_than_ms=quiet_ms, limit=DIRTY_PAGE, shards=shards_of(share))
    if mine:
        return mine, False
    overdue: list[ThreadId] = yield from ops.dirty_threads_op(older_than_ms=quiet_ms + steal_after_ms, limit=DIRTY_PAGE)
    return overdue[::-1], True


def _heartbeat(run: Callable[[Op[Any]], Any], roster: Roster | None) -> Share | None:
    """This worker's share; None (every due thread) when Redis is out of memory and refuses the
    membership write: a full Redis is exactly when the outbox must drain, and the flush fence
    in Postgres keeps two workers on one thread safe (shares are only an efficiency)."""
    if roster is None:
        return None
    try:
        return run(roster.heartbeat_op())  # type: ignore[no-any-return]
    except TierUnavailableError as exc:
        if "OutOfMemoryError" not in str(exc) and "OOM" not in str(exc):
            raise
        logger.warning("worker %s cannot renew its membership (Redis is out of memory): flushing any due "
                       "thread until it can", roster.worker_id)  # fmt: skip
        return None


def worker_loop(
    run: Callable[[Op[Any]], Any],
    ops: FlushOps,
    metrics: Metrics,
    *,
    quiet_seconds: float,
    poll_seconds: float,
    stop: threading.Event,
    once: bool = False,
    policy: FlushPolicy | None = None,
    book: RetryBook | None = None,
    roster: Roster | None = None,
    lease: FlushLease = DEFAULT_LEASE,
) -> int:
    """Flush threads quiet for `quiet_seconds` until `stop` is set (or one pass with `once`);
    returns how many thread flushes it made. With a `roster`, only this worker's share (and
    overdue threads when its share is idle); without, every due thread. It polls again at once
    after a pass that flushed something, else after `poll_seconds`."""
    book = book or RetryBook(policy or FlushPolicy(), metrics)
    flushed = 0
    idle_backoff = 0.0
    quiet_ms = int(quiet_seconds * 1000)
    try:
        while not stop.is_set():
            try:
                share = _heartbeat(run, roster)
                threads, stolen = run(claim_op(ops, share, quiet_ms=quiet_ms, steal_after_ms=lease.ms))
                record_outbox(metrics, run(ops.outbox_status_op()))
                idle_backoff = 0.0
            except Exception as exc:
                idle_backoff = min(OUTAGE_MAX_BACKOFF, max(0.5, idle_backoff * 2))  # Redis is back within seconds
                metrics.incr("flush_errors")
                logger.warning("worker could not read the outbox index, retrying in %.1f s: %s", idle_backoff, exc)
                if once:
                    raise
                stop.wait(idle_backoff)
                continue
            done = 0
            beat = time.monotonic()
            refresh = min(SHARE_REFRESH_SECONDS, lease.ms / 3000)
            for start in range(0, len(threads), FLUSH_GROUP):
                if stop.is_set():
                    break
                if roster is not None and time.monotonic() - beat >= refresh:
                    try:
                        share = _heartbeat(run, roster)
                    except Exception as exc:
                        metrics.incr("flush_errors")
                        logger.warning("worker could not renew its membership, ending this pass: %s", exc)
                        break
                    beat = time.monotonic()
                group = [
                    key for key in threads[start : start + FLUSH_GROUP]
                    # a thread the workers' change since the claim made another's, or in backoff
                    if (share is None or stolen or share.owns(key)) and not book.waiting(key, time.monotonic())
                ]  # fmt: skip
                done += _flush_group(run, ops, metrics, book, group, lease)
            flushed += done
            if once:
                break
            if not done:
                stop.wait(poll_seconds)
    finally:
        if roster is not None:
            try:
                run(roster.leave_op())
            except Exception as exc:  # the lease lapses on its own; say why the handover waits
                logger.warning("worker %s could not leave the roster (its share moves when its lease lapses): %s",
                               roster.worker_id, exc)
    return flushed


def _flush_group(
    run: Callable[[Op[Any]], Any], ops: FlushOps, metrics: Metrics, book: RetryBook, group: list[ThreadId],
    lease: FlushLease,
) -> int:
    """Flush `group` as the background flusher does (`background.flush_group`), each outcome
    booked as its thread's own; how many threads were flushed (not skipped for another
    flusher's lease)."""
    if not group:
        return 0
    outcomes, seconds = flush_group(run, ops, metrics, group, lease)
    done = 0
    for key, outcome in zip(group, outcomes, strict=True):
        if isinstance(outcome, Exception):
            book.failed(key, outcome, time.monotonic())
            continue
        book.succeeded(key)
        record_flush(metrics, outcome, seconds)
        done += not outcome.skipped_locked
    return done


def run_workers(count: int, *, prefix: str, lease_seconds: float, stop: threading.Event, **loop: Any) -> int:
    """`count` workers as threads of this process, each running `worker_loop(**loop)` with its
    own membership and retry bookkeeping; returns their flushes. Ends when `stop` is set (or
    after one pass each with `once=True`), re-raising the first worker's error once all have
    ended."""
    lease_ms = int(lease_seconds * 1000)
    results: list[int] = []
    errors: list[BaseException] = []

    def body(worker_id: str) -> None:
        try:
            roster = Roster(prefix, worker_id, lease_ms) if not loop.get("once") else None
            results.append(worker_loop(stop=stop, roster=roster, lease=FlushLease(worker_id, lease_ms), **loop))
        except BaseException as exc:  # re-raised by run_workers once every worker has ended
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=body, args=(new_worker_id(),), name=f"flush-worker-{i}", daemon=True)
               for i in range(count)]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():  # join in slices: a signal handler setting `stop` still runs
            thread.join(0.2)
    if errors:
        raise errors[0]
    return sum(results)
