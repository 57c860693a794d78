"""Where flushes run: a job on the saver's background scheduler (here, see schedule.py), or
standalone workers (fleet.py, which share this module's bookkeeping).

Both drive the same sans-I/O `FlushOps` through a `SyncDriver`; the job is the only place
that decides *when* (per the `FlushPolicy`), so the hot path never waits on Postgres except
where the policy says "sync" (an interrupt, by default).

Neither may stop silently, and `RetryBook` tells two kinds of failure apart:

- **The thread's own** (a value Postgres rejects, a trigger, corrupt bytes): contained to that
  thread, retried with backoff and, after `max_attempts` failures in a row, quarantined: it stays
  in the outbox, is logged once at ERROR and counted, and is retried only every
  `quarantine_retry_seconds` or on an explicit `flush()`. Every other thread keeps flowing.
- **Everyone's** (`is_outage`: Postgres or Redis unreachable, or refusing the configuration):
  no thread is to blame, so none is quarantined. Every waiting thread is retried with a backoff
  capped at `OUTAGE_MAX_BACKOFF` seconds, and the first success after the outage makes every
  waiting thread due at once: the backlog is flushed within seconds of the server's return.
  One WARNING when flushes stop, one when they resume, never one per thread.

An error outside one thread's flush is the scheduler's to contain (schedule.py): logged,
counted (`background_job_errors`), and the flusher runs again.

The flusher's memory does not grow with the threads a process serves: a thread's deadline and
counts go when it is flushed (or flushed synchronously, or deleted), and while more than
`TRACKED_THREADS` wait (writes outpace the flushes), further threads are left to the outbox
index in Redis, which records every unflushed thread anyway: adoption flushes them, and
`stop()` drains them from the index.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import Any

from langgraph_tiered_saver._sansio.io import Op
from langgraph_tiered_saver._sansio.schedule import Clock, Scheduler
from langgraph_tiered_saver.errors import FlushError
from langgraph_tiered_saver.flushing.ops import (
    DEFAULT_LEASE,
    FlushLease,
    FlushOps,
    FlushPolicy,
    FlushResult,
    OutboxStatus,
    is_outage,
)
from langgraph_tiered_saver.observability.health import FlusherHealth
from langgraph_tiered_saver.observability.metrics import Metrics
from langgraph_tiered_saver.observability.telemetry import observed_op

logger = logging.getLogger("langgraph_tiered_saver.flush")

ThreadId = tuple[str, str]
# The longest wait between flush attempts while a tier is down for everyone: the backlog reaches
# Postgres within this (plus the breaker's probe window) of its return.
OUTAGE_MAX_BACKOFF = 2.0
# The most threads the background flusher keeps a deadline for; past it, the outbox index in
# Redis is their only record (adoption and the drain at close read it), not this process' memory.
TRACKED_THREADS = 10_000
OVERFLOW_BATCH = 500  # threads the drain reads from the outbox index at a time
# The most due threads one turn flushes together (FlushOps.flush_group_op: one Postgres commit
# and two Redis round trips for all of them): a backlog drains a group per commit, and the
# scheduler's other jobs wait for one group's flush at most.
FLUSH_GROUP = 32


@dataclass
class _Trouble:
    failures: int = 0
    retry_at: float = 0.0
    error: str = ""
    quarantined: bool = False


class RetryBook:
    """Per-thread failure bookkeeping shared by the background flusher and the worker (no I/O;
    `now` is passed in, from `clock`). Thread-safe."""

    def __init__(self, policy: FlushPolicy, metrics: Metrics, clock: Clock = time.monotonic) -> None:
        self.policy = policy
        self.metrics = metrics
        self.clock = clock
        self._lock = threading.Lock()
        self._trouble: dict[ThreadId, _Trouble] = {}
        self.last_success_at: float | None = None
        self.consecutive_failures = 0
        self._outage_since: float | None = None  # monotonic time of the outage's first failure
        self._outage_failures = 0
        self._outage_error = ""

    def failed(self, key: ThreadId, exc: BaseException, now: float) -> float:
        """Record a failed flush of `key`; returns when to try it again (monotonic seconds)."""
        if is_outage(exc):
            return self._outage(key, exc, now)
        with self._lock:
            trouble = self._trouble.setdefault(key, _Trouble())
            trouble.failures += 1
            trouble.error = f"{type(exc).__name__}: {exc}"
            self.consecutive_failures += 1
            newly_quarantined = not trouble.quarantined and trouble.failures >= self.policy.max_attempts
            trouble.quarantined = trouble.quarantined or newly_quarantined
            if trouble.quarantined:
                delay = self.policy.quarantine_retry_seconds
            else:
                delay = min(self.policy.max_backoff, self.policy.retry_backoff * 2 ** (trouble.failures - 1))
            trouble.retry_at = now + delay
            quarantined = sum(t.quarantined for t in self._trouble.values())
        self.metrics.incr("flush_errors")
        self.metrics.set_gauge("flush_quarantined_threads", quarantined)
        if newly_quarantined:
            self.metrics.incr("flush_quarantines")
            logger.error(
                "thread %s/%s quarantined after %d failed flushes: its entries stay in the outbox "
                "(retried every %.0f s or on flush()); last error: %s",
                key[0], key[1], trouble.failures, delay, trouble.error,
                extra={"tenant_id": key[0], "thread_id": key[1]},
            )
        elif not trouble.quarantined:
            logger.warning(
                "flush of thread %s/%s failed (attempt %d of %d), retrying in %.1f s: %s",
                key[0], key[1], trouble.failures, self.policy.max_attempts, delay, trouble.error,
                extra={"tenant_id": key[0], "thread_id": key[1]},
            )
        return trouble.retry_at

    def _outage(self, key: ThreadId, exc: BaseException, now: float) -> float:
        """A failure that is no thread's fault: wait with a short capped backoff, never
        quarantine, and leave the thread's own failure count alone."""
        with self._lock:
            started = self._outage_since is None
            if started:
                self._outage_since = now
                self._outage_failures = 0
            self._outage_failures += 1
            self._outage_error = f"{type(exc).__name__}: {exc}"
            self.consecutive_failures += 1
            exponent = min(self._outage_failures - 1, 16)
            delay = min(OUTAGE_MAX_BACKOFF, self.policy.max_backoff, self.policy.retry_backoff * 2**exponent)
            trouble = self._trouble.setdefault(key, _Trouble())
            trouble.error = self._outage_error
            trouble.retry_at = max(trouble.retry_at, now + delay) if trouble.quarantined else now + delay
        self.metrics.incr("flush_errors")
        self.metrics.incr("flush_outage_failures")
        self.metrics.set_gauge("flush_outage", 1)
        if started:
            logger.warning(
                "flushes stopped: a tier is unavailable for every thread (%s); the outbox keeps "
                "everything, no thread is quarantined for it, retrying every %.1f s at most",
                self._outage_error, OUTAGE_MAX_BACKOFF,
            )
        return trouble.retry_at

    def succeeded(self, key: ThreadId) -> bool:
        """Record a successful flush of `key`; True when it ended an outage (the caller then
        makes every thread that waited for it due at once)."""
        with self._lock:
            trouble = self._trouble.pop(key, None)
            self.last_success_at = time.time()
            self.consecutive_failures = 0
            quarantined = sum(t.quarantined for t in self._trouble.values())
            since, self._outage_since = self._outage_since, None
            if since is not None:  # the others waited on the outage, not on their own failure
                for other in self._trouble.values():
                    if not other.quarantined:
                        other.retry_at = 0.0
        self.metrics.set_gauge("flush_quarantined_threads", quarantined)
        if trouble is not None and trouble.quarantined:
            logger.warning("thread %s/%s flushed again: quarantine lifted", key[0], key[1],
                           extra={"tenant_id": key[0], "thread_id": key[1]})
        if since is not None:
            self.metrics.set_gauge("flush_outage", 0)
            logger.warning(
                "flushes resumed after %.1f s of outage (%d failed attempts); every waiting thread is due now",
                self.clock() - since, self._outage_failures,
            )
        return since is not None

    def waiting(self, key: ThreadId, now: float) -> bool:
        """Whether `key` failed recently and its next try is not due yet."""
        with self._lock:
            trouble = self._trouble.get(key)
            return trouble is not None and trouble.retry_at > now

    def quarantined(self) -> tuple[tuple[str, str, str], ...]:
        with self._lock:
            return tuple((k[0], k[1], t.error) for k, t in sorted(self._trouble.items()) if t.quarantined)

    def health(self, alive: bool) -> FlusherHealth:
        with self._lock:
            since, error = self._outage_since, self._outage_error
        outage = None if since is None else round(self.clock() - since, 3)
        forks = self.metrics.recent("thread_forks")
        return FlusherHealth(alive, self.last_success_at, self.consecutive_failures, self.quarantined(), outage, error, forks)


@dataclass(eq=False)
class BackgroundFlusher:
    """Flushes threads when they are due: a job on the saver's `Scheduler` (schedule.py),
    started on the first write. The due threads, up to `FLUSH_GROUP` of them (any tenants), per
    turn, in one transaction, so the scheduler's other jobs (lock renewal) wait for one group's
    flush at most, never for a whole backlog. A thread's failure in a group is its own: the
    group op flushes each alone when the group's transaction is refused."""

    _run: Callable[[Op[Any]], Any]
    _ops: FlushOps
    _policy: FlushPolicy
    _metrics: Metrics
    _scheduler: Scheduler
    _: KW_ONLY
    _adopt_interval: float = 5.0

    def __post_init__(self) -> None:
        self._clock = self._scheduler.clock
        self.book = RetryBook(self._policy, self._metrics, self._scheduler.clock)
        self._cond = threading.Lock()
        self._due: dict[ThreadId, float] = {}
        self._counts: dict[ThreadId, int] = {}
        self._touched: set[ThreadId] = set()
        self._job = self._scheduler.job("flusher", self._turn)
        self._next_adopt: float | None = None  # set on the first write
        self._stopping = False
        self._left_out = 0  # writes of threads left to the outbox index: the drain reads that many at most

    # ------------------------------------------------------------------ called by the saver

    def on_checkpoint(self, tenant_id: str, thread_id: str) -> None:
        """A checkpoint was written: push the quiet deadline, count towards every-N."""
        key = (tenant_id, thread_id)
        with self._cond:
            if not self._tracks(key):
                return
            count = self._counts.get(key, 0) + 1
            self._counts[key] = count
            if self._policy.for_checkpoint_count(count) == "async":
                self._schedule(key, 0.0)
            else:
                self._schedule(key, self._policy.quiet_seconds)

    def on_writes(self, tenant_id: str, thread_id: str, urgent: bool) -> None:
        key = (tenant_id, thread_id)
        with self._cond:
            if self._tracks(key):
                self._schedule(key, 0.0 if urgent else self._policy.quiet_seconds)

    def _tracks(self, key: ThreadId) -> bool:
        """Whether this process keeps `key`'s deadline: a thread it already tracks, or a new one
        while fewer than `TRACKED_THREADS` wait. Otherwise the outbox index holds it (and the
        next adoption's turn comes now), so a backlog costs Redis memory, not this process'."""
        if key in self._touched or key in self._due or len(self._touched) < TRACKED_THREADS:
            return True
        self._left_out += 1
        self._next_adopt = self._clock() if self._next_adopt is None else self._next_adopt
        self._job.wake(self._next_adopt)
        return False

    def send_acks_soon(self) -> None:
        """A synchronous flush left its acknowledgement (acks.py): the next turn, now, sends it."""
        self._job.wake(self._clock())

    def forget(self, tenant_id: str, thread_id: str) -> None:
        """The thread was flushed synchronously or deleted: nothing left to schedule."""
        key = (tenant_id, thread_id)
        with self._cond:
            self._due.pop(key, None)
            self._counts.pop(key, None)
            self._touched.discard(key)
        self.book.succeeded(key)

    def _schedule(self, key: ThreadId, delay: float) -> None:
        """Urgent (delay 0) wins; otherwise each write pushes the quiet deadline (debounce).
        A thread in backoff keeps its retry time: new writes do not hammer a failing flush."""
        now = self._clock()
        current = self._due.get(key)
        if not self.book.waiting(key, now):
            if delay == 0.0:
                self._due[key] = now if current is None else min(current, now)
            elif current is None or current > now:
                self._due[key] = now + delay
        self._touched.add(key)
        if self._next_adopt is None:
            self._next_adopt = now + self._adopt_interval
        due = self._due.get(key)
        self._job.wake(min(self._next_adopt, due) if due is not None else self._next_adopt)

    def health(self) -> FlusherHealth:
        return self.book.health(not self._stopping and self._scheduler.alive)

    # ------------------------------------------------------------------ the job

    def stop(self, drain: bool = True) -> list[FlushResult]:
        """Stop flushing in the background (the scheduler stops its thread); with `drain`, flush
        every thread this process wrote to (and every quarantined one, once more), then raise
        one `FlushError` naming those that failed. Threads go `FLUSH_GROUP` to a transaction
        (`_drain_group`): a server that stops with many threads waiting commits once per group."""
        with self._cond:
            self._stopping = True
        self._scheduler.stop()
        if not drain:
            return []
        with self._cond:
            pending = sorted(self._touched | set(self._due) | {(t, th) for t, th, _ in self.book.quarantined()})
            self._due.clear()
        results: list[FlushResult] = []
        failed: list[tuple[ThreadId, Exception]] = []
        tried: set[ThreadId] = set()
        budget = len(pending) + self._left_out  # ends even while other processes keep writing
        while pending:
            for start in range(0, len(pending), FLUSH_GROUP):
                group = pending[start : start + FLUSH_GROUP]
                tried.update(group)
                self._drain_group(group, results, failed)
            pending = self._overflow(tried, len(failed), budget - len(tried))
        if failed:
            names = ", ".join(f"{t}/{th} ({type(e).__name__}: {e})" for (t, th), e in failed)
            raise FlushError(
                f"{len(failed)} of {len(tried)} threads could not be flushed at close; their "
                f"entries stay in the Redis outbox for the next flusher: {names}",
                threads=[key for key, _ in failed],
            )
        return results

    def _drain_group(
        self, keys: list[ThreadId], results: list[FlushResult], failed: list[tuple[ThreadId, Exception]]
    ) -> None:
        """Flush `keys` in one group; a thread the group could not write whole (its own error,
        a failure that was everyone's, more entries than one read took) is flushed alone, as
        the drain flushed every thread before groups: what fails then is `failed`."""
        outcomes, seconds = flush_group(self._run, self._ops, self._metrics, keys) if len(keys) > 1 else ([None], 0.0)
        for key, outcome in zip(keys, outcomes, strict=True):
            if isinstance(outcome, FlushResult) and not outcome.remaining:
                self._flushed(key, outcome, seconds)
                results.append(outcome)
                continue
            try:
                results.append(self._flush(key))
            except Exception as exc:
                self.book.failed(key, exc, self._clock())
                failed.append((key, exc))

    def _overflow(self, tried: set[ThreadId], failed: int, budget: int) -> list[ThreadId]:
        """The threads left to the outbox index (more waited than this process tracks) that the
        drain has not tried yet, a batch of at most `budget` at a time (read past the `failed`
        ones, which stay in the index); none when nothing was left out."""
        if budget <= 0:
            return []
        try:
            batch = self._run(self._ops.dirty_threads_op(limit=failed + OVERFLOW_BATCH))
        except Exception as exc:
            logger.warning("could not read the outbox index to drain the threads it alone holds; "
                           "their entries stay in the outbox for the next flusher: %s", exc)
            return []
        return [key for key in batch if key not in tried][:budget]

    def _turn(self) -> float | None:
        """The scheduler's turn: flush the thread due first, or adopt when that is due.
        Returns when the next turn is due."""
        if self._ops.acks:
            self._run(self._ops.acks.send_op())
        now = self._clock()
        with self._cond:
            if self._stopping:
                return None
            ready = self._ready(now)
            for key in ready:
                del self._due[key]
        if len(ready) == 1:
            self._flush_contained(ready[0])
        elif ready:
            self._flush_group(ready)
        elif self._next_adopt is not None and now >= self._next_adopt:
            self._adopt()
            self._next_adopt = self._clock() + self._adopt_interval
        with self._cond:
            if self._stopping:
                return None
            deadlines = [*self._due.values()] + ([] if self._next_adopt is None else [self._next_adopt])
            return min(deadlines, default=None)

    def _ready(self, now: float) -> list[ThreadId]:
        """The threads to flush this turn, soonest first: those due, and when any is, those due
        within `gather_seconds` too (not in backoff), `FLUSH_GROUP` at most. Called locked."""
        if not any(due <= now for due in self._due.values()):
            return []
        horizon = now + self._policy.gather_seconds
        due_soon = ((due, key) for key, due in self._due.items() if due <= now or (due <= horizon and not self.book.waiting(key, now)))
        return [key for _, key in heapq.nsmallest(FLUSH_GROUP, due_soon)]

    def _adopt(self) -> None:
        """Also flush quiet threads nobody is flushing (a crashed process' outbox)."""
        quiet_ms = int(max(self._policy.quiet_seconds, self._adopt_interval) * 1000)
        try:
            threads = self._run(self._ops.dirty_threads_op(older_than_ms=quiet_ms))
            record_outbox(self._metrics, self._run(self._ops.outbox_status_op()))
        except Exception as exc:
            self._metrics.incr("flush_errors")
            logger.warning("flusher could not read the outbox index: %s", exc)
            return
        now = self._clock()
        with self._cond:
            for key in threads:  # flushed one per turn, like every other due thread
                if len(self._due) >= TRACKED_THREADS and key not in self._due:
                    break  # the rest wait in the outbox index for a later adoption
                if not self.book.waiting(key, now) and not self._stopping:
                    self._due[key] = min(self._due.get(key, now), now)

    def _flush(self, key: ThreadId) -> FlushResult:
        started = time.perf_counter()
        result: FlushResult = self._run(observed_op(self._metrics, "flush", self._ops.flush_thread_op(*key), *key))
        self._flushed(key, result, time.perf_counter() - started)
        return result

    def _flush_group(self, keys: list[ThreadId]) -> None:
        """Flush several threads in one go; each outcome is booked as its thread's own (a
        failure that is everyone's, raised by the op, for each of them: the book counts it as
        an outage, never against a thread). `flush_seconds` is the group's, for each thread."""
        outcomes, seconds = flush_group(self._run, self._ops, self._metrics, keys)
        for key, outcome in zip(keys, outcomes, strict=True):
            if isinstance(outcome, Exception):
                self._failed(key, outcome)
            else:
                self._flushed(key, outcome, seconds)

    def _flushed(self, key: ThreadId, result: FlushResult, seconds: float) -> None:
        record_flush(self._metrics, result, seconds)
        outage_over = self.book.succeeded(key)
        with self._cond:
            if outage_over:  # the threads that waited on the outage are due now, not at their backoff
                now = self._clock()
                for other, due in self._due.items():
                    if not self.book.waiting(other, now):
                        self._due[other] = min(due, now)
            self._counts.pop(key, None)
            if result.remaining == 0 and key not in self._due:
                self._touched.discard(key)

    def _flush_contained(self, key: ThreadId) -> None:
        """Flush one thread; a failure is this thread's alone: booked and rescheduled."""
        try:
            self._flush(key)
        except Exception as exc:
            self._failed(key, exc)

    def _failed(self, key: ThreadId, exc: Exception) -> None:
        retry_at = self.book.failed(key, exc, self._clock())
        with self._cond:
            if not self._stopping:
                self._due[key] = retry_at


def flush_group(
    run: Callable[[Op[Any]], Any], ops: FlushOps, metrics: Metrics, keys: list[ThreadId],
    lease: FlushLease = DEFAULT_LEASE,
) -> tuple[list[FlushResult | Exception], float]:
    """Flush `keys` as one group (`FlushOps.flush_group_op`; one thread alone by
    `flush_thread_op`): each thread's outcome, its result or the exception that is its own (a
    failure that is everyone's, raised by the op, for each of them), and the seconds it took.
    The background flusher's and the standalone workers' way through their due threads."""
    started = time.perf_counter()
    outcomes: list[FlushResult | Exception]
    try:
        if len(keys) == 1:
            outcomes = [run(observed_op(metrics, "flush", ops.flush_thread_op(*keys[0], lease=lease), *keys[0]))]
        else:
            outcomes = run(observed_op(metrics, "flush_group", ops.flush_group_op(keys, lease)))
    except Exception as exc:
        outcomes = [exc] * len(keys)
    return outcomes, time.perf_counter() - started


def record_outbox(metrics: Metrics, status: OutboxStatus) -> None:
    metrics.set_gauge("outbox_depth", status.depth)
    metrics.set_gauge("outbox_oldest_seconds", status.oldest_seconds)
    metrics.set_gauge("outbox_checked_at", time.time())  # the loop's heartbeat (health checks)


def record_flush(metrics: Metrics, result: FlushResult, seconds: float) -> None:
    if result.skipped_locked:
        metrics.incr("flush_skipped_locked")
        return
    metrics.incr("flushes")
    metrics.incr("flushed_checkpoints", result.checkpoints)
    metrics.incr("flushed_writes", result.writes)
    metrics.incr("flushed_blobs", result.blobs)
    if result.lost:
        metrics.incr("outbox_entries_lost", result.lost)
    metrics.observe("flush_seconds", seconds)
    if result.lag_seconds is not None:
        metrics.observe("flush_lag_seconds", result.lag_seconds)
    logger.debug(
        "flushed thread %s/%s: %d checkpoints, %d writes, %d values in %.1f ms",
        result.tenant_id, result.thread_id, result.checkpoints, result.writes, result.blobs, seconds * 1000,
        extra={"tenant_id": result.tenant_id, "thread_id": result.thread_id},
    )


def report_forks(metrics: Metrics, tenant_id: str, thread_id: str, forked: list[tuple[str, str]], how: str) -> None:
    """A thread forked: two writers continued it from the same checkpoint, neither knowing the
    other (a partition under `on_redis_error="fallback"`). Both branches are kept in Postgres;
    the newest checkpoint is the thread's latest. Never silent: ERROR, `thread_forks`, health."""
    if not forked:
        return
    metrics.incr("thread_forks")
    for ns, checkpoint_id in forked:
        metrics.remember("thread_forks", (tenant_id, thread_id, ns, checkpoint_id))
    logger.error(
        "thread %s/%s forked: %s checkpoint(s) %s continue a checkpoint that another writer had "
        "already continued without this hot tier (a write-through while Redis was unreachable); both "
        "branches are kept in Postgres, the newest checkpoint is the thread's latest",
        tenant_id, thread_id, how, ", ".join(f"{c} (ns {n!r})" for n, c in forked),
        extra={"tenant_id": tenant_id, "thread_id": thread_id},
    )
