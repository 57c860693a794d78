"""Where flushes run: a background thread inside the saver (here), or standalone workers
(fleet.py, which share this module's bookkeeping).

Both drive the same sans-I/O `FlushOps` through a `SyncDriver`; the thread is the only place
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

An error in the loop itself is logged, counted (`flusher_loop_errors`) and the loop goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._io import Op
from .errors import FlushError, PostgresConfigError, TierUnavailableError
from .flush import FlushOps, FlushPolicy, FlushResult, OutboxStatus
from .metrics import Metrics
from .telemetry import observed_op

logger = logging.getLogger("langgraph_tiered_saver.flush")

ThreadId = tuple[str, str]
# The longest wait between flush attempts while a tier is down for everyone: the backlog reaches
# Postgres within this (plus the breaker's probe window) of its return.
OUTAGE_MAX_BACKOFF = 2.0


def is_outage(exc: BaseException) -> bool:
    """Whether a flush failure is everyone's (a tier unreachable, or refusing the saver's
    configuration) rather than the thread's own (its data, or a statement that fails for it)."""
    return isinstance(exc, (TierUnavailableError, PostgresConfigError))


@dataclass
class _Trouble:
    failures: int = 0
    retry_at: float = 0.0
    error: str = ""
    quarantined: bool = False


@dataclass(frozen=True)
class FlusherHealth:
    """What a health check needs to know about a flusher (background thread or worker)."""

    alive: bool
    last_success_at: float | None  # time.time() of the last successful flush
    consecutive_failures: int  # failed flush attempts since the last success, all threads
    quarantined: tuple[tuple[str, str, str], ...] = field(default=())  # (tenant, thread, error)
    outage_seconds: float | None = None  # flushes failing for everyone for this long (None: no outage)
    outage_error: str = ""
    # recent forks found at flush, newest last: (tenant, thread, namespace, checkpoint id)
    forks: tuple[tuple[str, ...], ...] = field(default=())


class RetryBook:
    """Per-thread failure bookkeeping shared by the background flusher and the worker (no I/O;
    the clock is passed in). Thread-safe."""

    def __init__(self, policy: FlushPolicy, metrics: Metrics) -> None:
        self.policy = policy
        self.metrics = metrics
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
                time.monotonic() - since, self._outage_failures,
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
        outage = None if since is None else round(time.monotonic() - since, 3)
        forks = self.metrics.recent("thread_forks")
        return FlusherHealth(alive, self.last_success_at, self.consecutive_failures, self.quarantined(), outage, error, forks)


class BackgroundFlusher:
    """A daemon thread that flushes threads when they are due. Started lazily on first write."""

    def __init__(
        self,
        run: Callable[[Op[Any]], Any],
        ops: FlushOps,
        policy: FlushPolicy,
        metrics: Metrics,
        *,
        adopt_interval: float = 5.0,
    ) -> None:
        self._run = run
        self._ops = ops
        self._policy = policy
        self._metrics = metrics
        self._adopt_interval = adopt_interval
        self.book = RetryBook(policy, metrics)
        self._cond = threading.Condition()
        self._due: dict[ThreadId, float] = {}
        self._counts: dict[ThreadId, int] = {}
        self._touched: set[ThreadId] = set()
        self._thread: threading.Thread | None = None
        self._stopping = False

    # ------------------------------------------------------------------ called by the saver

    def on_checkpoint(self, tenant_id: str, thread_id: str) -> None:
        """A checkpoint was written: push the quiet deadline, count towards every-N."""
        key = (tenant_id, thread_id)
        with self._cond:
            count = self._counts.get(key, 0) + 1
            self._counts[key] = count
            if self._policy.for_checkpoint_count(count) == "async":
                self._schedule(key, 0.0)
            else:
                self._schedule(key, self._policy.quiet_seconds)

    def on_writes(self, tenant_id: str, thread_id: str, urgent: bool) -> None:
        with self._cond:
            self._schedule((tenant_id, thread_id), 0.0 if urgent else self._policy.quiet_seconds)

    def forget(self, tenant_id: str, thread_id: str) -> None:
        """The thread was flushed synchronously or deleted: nothing left to schedule."""
        key = (tenant_id, thread_id)
        with self._cond:
            self._due.pop(key, None)
            self._counts.pop(key, None)
        self.book.succeeded(key)

    def _schedule(self, key: ThreadId, delay: float) -> None:
        """Urgent (delay 0) wins; otherwise each write pushes the quiet deadline (debounce).
        A thread in backoff keeps its retry time: new writes do not hammer a failing flush."""
        now = time.monotonic()
        current = self._due.get(key)
        if not self.book.waiting(key, now):
            if delay == 0.0:
                self._due[key] = now if current is None else min(current, now)
            elif current is None or current > now:
                self._due[key] = now + delay
        self._touched.add(key)
        self._ensure_started()
        if delay == 0.0:
            self._cond.notify()

    def health(self) -> FlusherHealth:
        thread = self._thread
        alive = not self._stopping and (thread is None or thread.is_alive())
        return self.book.health(alive)

    # ------------------------------------------------------------------ the thread

    def _ensure_started(self) -> None:
        if self._thread is None and not self._stopping:
            self._thread = threading.Thread(target=self._supervise, name="tiered-saver-flusher", daemon=True)
            self._thread.start()

    def stop(self, drain: bool = True) -> list[FlushResult]:
        """Stop the thread; with `drain`, flush every thread this process wrote to (and every
        quarantined one, once more), then raise one `FlushError` naming those that failed."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=30)
        if not drain:
            return []
        with self._cond:
            pending = sorted(self._touched | set(self._due) | {(t, th) for t, th, _ in self.book.quarantined()})
            self._due.clear()
        results, failed = [], []
        for key in pending:
            try:
                results.append(self._flush(key))
            except Exception as exc:
                self.book.failed(key, exc, time.monotonic())
                failed.append((key, exc))
        if failed:
            names = ", ".join(f"{t}/{th} ({type(e).__name__}: {e})" for (t, th), e in failed)
            raise FlushError(
                f"{len(failed)} of {len(pending)} threads could not be flushed at close; their "
                f"entries stay in the Redis outbox for the next flusher: {names}",
                threads=[key for key, _ in failed],
            )
        return results

    def _supervise(self) -> None:
        """The thread's body: the loop, restarted after anything it did not contain."""
        while True:
            try:
                self._loop()
                return
            except Exception:
                self._metrics.incr("flusher_loop_errors")
                logger.exception("flusher loop error (contained; the loop goes on)")
                time.sleep(0.1)

    def _loop(self) -> None:
        next_adopt = time.monotonic() + self._adopt_interval
        while True:
            with self._cond:
                if self._stopping:
                    return
                now = time.monotonic()
                ready = [k for k, due in self._due.items() if due <= now]
                if not ready:
                    wake = min([*self._due.values(), next_adopt])
                    self._cond.wait(timeout=max(0.0, wake - now))
                    ready = [k for k, due in self._due.items() if due <= time.monotonic()]
                for key in ready:
                    self._due.pop(key, None)
            for key in ready:
                self._flush_contained(key)
            if time.monotonic() >= next_adopt:
                self._adopt()
                next_adopt = time.monotonic() + self._adopt_interval

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
        now = time.monotonic()
        for key in threads:
            if not self.book.waiting(key, now):
                self._flush_contained(key)

    def _flush(self, key: ThreadId) -> FlushResult:
        started = time.perf_counter()
        result: FlushResult = self._run(observed_op(self._metrics, "flush", self._ops.flush_thread_op(*key), *key))
        record_flush(self._metrics, result, time.perf_counter() - started)
        outage_over = self.book.succeeded(key)
        with self._cond:
            if outage_over:  # the threads that waited on the outage are due now, not at their backoff
                now = time.monotonic()
                for other, due in self._due.items():
                    if not self.book.waiting(other, now):
                        self._due[other] = min(due, now)
                self._cond.notify()
            self._counts.pop(key, None)
            if result.remaining == 0 and key not in self._due:
                self._touched.discard(key)
        return result

    def _flush_contained(self, key: ThreadId) -> None:
        """Flush one thread; a failure is this thread's alone: booked and rescheduled."""
        try:
            self._flush(key)
        except Exception as exc:
            retry_at = self.book.failed(key, exc, time.monotonic())
            with self._cond:
                if not self._stopping:
                    self._due[key] = retry_at


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
    report_forks(metrics, result.tenant_id, result.thread_id, result.forked, "flushed")
    metrics.observe("flush_seconds", seconds)
    if result.lag_seconds is not None:
        metrics.observe("flush_lag_seconds", result.lag_seconds)
        metrics.histogram("flush_lag_seconds", (), result.lag_seconds)
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
