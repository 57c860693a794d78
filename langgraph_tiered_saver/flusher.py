"""Where flushes run: a background thread inside the saver, or the standalone worker loop.

Both drive the same sans-I/O `FlushOps` through a `SyncDriver`; the thread is the only place
that decides *when* (per the `FlushPolicy`), so the hot path never waits on Postgres except
where the policy says "sync" (an interrupt, by default).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ._io import Op
from .errors import TieredSaverError
from .flush import FlushOps, FlushPolicy, FlushResult, OutboxStatus
from .metrics import Metrics

logger = logging.getLogger("langgraph_tiered_saver.flush")

ThreadId = tuple[str, str]
MAX_BACKOFF = 30.0


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
        self._cond = threading.Condition()
        self._due: dict[ThreadId, float] = {}
        self._counts: dict[ThreadId, int] = {}
        self._touched: set[ThreadId] = set()
        self._backoff = 0.0
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
        with self._cond:
            self._due.pop((tenant_id, thread_id), None)
            self._counts.pop((tenant_id, thread_id), None)

    def _schedule(self, key: ThreadId, delay: float) -> None:
        """Urgent (delay 0) wins; otherwise each write pushes the quiet deadline (debounce)."""
        now = time.monotonic()
        current = self._due.get(key)
        if delay == 0.0:
            self._due[key] = now if current is None else min(current, now)
        elif current is None or current > now:
            self._due[key] = now + delay
        self._touched.add(key)
        self._ensure_started()
        if delay == 0.0:
            self._cond.notify()

    def touched(self) -> set[ThreadId]:
        with self._cond:
            return set(self._touched)

    # ------------------------------------------------------------------ the thread

    def _ensure_started(self) -> None:
        if self._thread is None and not self._stopping:
            self._thread = threading.Thread(target=self._loop, name="tiered-saver-flusher", daemon=True)
            self._thread.start()

    def stop(self, drain: bool = True) -> list[FlushResult]:
        """Stop the thread; with `drain`, flush every thread this process wrote to first."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=30)
        if not drain:
            return []
        with self._cond:
            pending = sorted(self._touched | set(self._due))
            self._due.clear()
        return [self._flush_one(key, raise_errors=True) for key in pending]

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
                self._flush_one(key, raise_errors=False)
            if time.monotonic() >= next_adopt:
                self._adopt()
                next_adopt = time.monotonic() + self._adopt_interval

    def _adopt(self) -> None:
        """Also flush quiet threads nobody is flushing (a crashed process' outbox)."""
        quiet_ms = int(max(self._policy.quiet_seconds, self._adopt_interval) * 1000)
        try:
            threads = self._run(self._ops.dirty_threads(older_than_ms=quiet_ms))
            record_outbox(self._metrics, self._run(self._ops.outbox_status()))
        except TieredSaverError as exc:
            logger.warning("flusher could not read the outbox index: %s", exc)
            return
        for key in threads:
            self._flush_one(key, raise_errors=False)

    def _flush_one(self, key: ThreadId, *, raise_errors: bool) -> FlushResult:
        started = time.perf_counter()
        try:
            result: FlushResult = self._run(self._ops.flush_thread(*key))
        except TieredSaverError as exc:
            self._metrics.incr("flush_errors")
            self._backoff = min(MAX_BACKOFF, max(0.5, self._backoff * 2))
            logger.warning(
                "flush of thread %s/%s failed, retrying in %.1fs: %s", key[0], key[1], self._backoff, exc
            )
            with self._cond:
                if not self._stopping:
                    self._due[key] = time.monotonic() + self._backoff
            if raise_errors:
                raise
            return FlushResult(*key, remaining=-1)
        self._backoff = 0.0
        record_flush(self._metrics, result, time.perf_counter() - started)
        with self._cond:
            self._counts.pop(key, None)
            if result.remaining == 0 and key not in self._due:
                self._touched.discard(key)
        return result


def record_outbox(metrics: Metrics, status: OutboxStatus) -> None:
    metrics.set_gauge("outbox_depth", status.depth)
    metrics.set_gauge("outbox_oldest_seconds", status.oldest_seconds)


def record_flush(metrics: Metrics, result: FlushResult, seconds: float) -> None:
    if result.skipped_locked:
        metrics.incr("flush_skipped_locked")
        return
    metrics.incr("flushes")
    metrics.incr("flushed_checkpoints", result.checkpoints)
    metrics.incr("flushed_writes", result.writes)
    metrics.incr("flushed_blobs", result.blobs)
    metrics.observe("flush_seconds", seconds)
    if result.lag_seconds is not None:
        metrics.observe("flush_lag_seconds", result.lag_seconds)
    logger.info(
        "flushed thread %s/%s: %d checkpoints, %d writes, %d values in %.1f ms",
        result.tenant_id, result.thread_id, result.checkpoints, result.writes, result.blobs, seconds * 1000,
    )


def worker_loop(
    run: Callable[[Op[Any]], Any],
    ops: FlushOps,
    metrics: Metrics,
    *,
    quiet_seconds: float,
    poll_seconds: float,
    stop: threading.Event,
    once: bool = False,
) -> int:
    """The standalone worker: flush every thread quiet for `quiet_seconds`, until `stop` is set."""
    flushed = 0
    backoff = 0.0
    while not stop.is_set():
        try:
            threads = run(ops.dirty_threads(older_than_ms=int(quiet_seconds * 1000)))
            for key in threads:
                started = time.perf_counter()
                result = run(ops.flush_thread(*key))
                record_flush(metrics, result, time.perf_counter() - started)
                flushed += 1
            record_outbox(metrics, run(ops.outbox_status()))
            backoff = 0.0
        except TieredSaverError as exc:
            backoff = min(MAX_BACKOFF, max(0.5, backoff * 2))
            metrics.incr("flush_errors")
            logger.warning("worker flush failed, retrying in %.1fs: %s", backoff, exc)
            if once:
                raise
            stop.wait(backoff)
            continue
        if once:
            break
        stop.wait(poll_seconds)
    return flushed
