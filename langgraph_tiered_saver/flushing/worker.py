"""The standalone worker process around the flush loops of `flushing/fleet.py` (one, or `workers` of
them sharing the outbox by leases): its /metrics and /healthz endpoints, a periodic summary log
line (instead of one line per flushed thread), and the retention sweeper (`--retention 30d`).
The loops share one `RetryBook` (thread-safe), the background flusher's bookkeeping, so health
covers them all."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from langgraph_tiered_saver import _options as opt
from langgraph_tiered_saver._core.connections import describe_servers
from langgraph_tiered_saver.errors import ConfigError
from langgraph_tiered_saver.flushing.background import RetryBook
from langgraph_tiered_saver.flushing.endpoints import (
    HealthReport,
    HealthRules,
    OpsServer,
    check_health,
    prometheus_text,
)
from langgraph_tiered_saver.flushing.fleet import run_workers
from langgraph_tiered_saver.observability.health import FlusherHealth

logger = logging.getLogger("langgraph_tiered_saver.worker")

_SUMMED = ("flushes", "flushed_checkpoints", "flushed_writes", "flush_errors", "outbox_entries_lost")


@dataclass(frozen=True)
class WorkerOptions:
    quiet_seconds: float = 1.0
    poll_seconds: float = 0.5
    once: bool = False
    http: tuple[str, int] | None = None  # (host, port) of /metrics and /healthz
    max_outbox_age: float = 300.0
    summary_seconds: float = 60.0
    retention: Callable[[], Any] | None = None  # one retention sweep (see cli)
    retention_every: float = 3600.0
    workers: int = 1  # flush loops in this process (fleet.py)
    lease_seconds: float = 30.0  # membership and per-thread flush lease (fleet.py)

    def __post_init__(self) -> None:
        opt.positive_int("workers", self.workers)
        opt.seconds("lease_seconds", self.lease_seconds, minimum=0.001)


class Worker:
    """Runs the flush loop in the calling thread until `stop` is set; the endpoints, summary
    and retention run beside it in daemon threads and stop with it."""

    def __init__(self, saver: Any, options: WorkerOptions) -> None:
        self.saver = saver
        self.options = options
        self.metrics = saver.metrics
        self.book = RetryBook(saver.policy, saver.metrics)
        self.rules = HealthRules(options.max_outbox_age, stale_after=max(1.0, 5 * options.poll_seconds + 1.0))
        self.running = False
        self._totals: dict[str, int] = {}  # counters at the last summary line
        self.server: OpsServer | None = None
        if options.http is not None:  # before the loop: a bad port fails at start
            try:
                metrics_body: Callable[[], bytes] | None = prometheus_text(self.metrics, self.health)
            except ConfigError as exc:  # /healthz needs nothing optional: serve it, say what /metrics needs
                metrics_body = None
                logger.warning("%s; serving /healthz only", exc)
            self.server = OpsServer(*options.http, metrics_body, self.health_report)

    def health(self) -> FlusherHealth:
        return self.book.health(self.running)

    def health_report(self) -> HealthReport:
        return check_health(self.health(), self.metrics, self.rules)

    def run(self, stop: threading.Event) -> int:
        side = [self._every(self.options.summary_seconds, self._summary, stop, "summary")]
        # With --once the sweep runs after the flush pass, not beside it: a sweep takes each
        # thread's flush lease, and the one pass would skip a thread the sweep holds.
        sweep_after = self.options.retention is not None and self.options.once
        if self.options.retention is not None and not sweep_after:
            side.append(self._every(self.options.retention_every, self._sweep, stop, "retention", at_start=True))
        self.running = True
        servers = describe_servers(self.saver._conn)
        logger.info(
            "flush worker started: Redis %s, Postgres %s, schema %r, key prefix %r",
            servers["redis"], servers["postgres"], self.saver.schema, self.saver.key_prefix,
            extra={"http_port": self.server.port if self.server else None, **servers,
                   "schema": self.saver.schema, "key_prefix": self.saver.key_prefix, "workers": self.options.workers},
        )  # fmt: skip
        try:
            flushed = run_workers(
                self.options.workers, prefix=self.saver.key_prefix, lease_seconds=self.options.lease_seconds, stop=stop,
                run=self.saver.run_op, ops=self.saver.core.flush, metrics=self.metrics,
                quiet_seconds=self.options.quiet_seconds, poll_seconds=self.options.poll_seconds,
                once=self.options.once, book=self.book,
            )  # fmt: skip
            if sweep_after:
                self._contained(self._sweep, "retention")
        finally:
            self.running = False
            stop.set()
            for thread in side:
                thread.join(timeout=5)
            self._summary()
            if self.server is not None:
                self.server.close()
        return flushed

    def _every(self, seconds: float, task: Callable[[], None], stop: threading.Event, name: str, *, at_start: bool = False) -> threading.Thread:
        def loop() -> None:
            if at_start:
                self._contained(task, name)
            while not stop.wait(seconds):
                self._contained(task, name)

        thread = threading.Thread(target=loop, name=f"tiered-saver-{name}", daemon=True)
        thread.start()
        return thread

    def _contained(self, task: Callable[[], None], name: str) -> None:
        try:
            task()
        except Exception:  # logged and counted; the next round tries again
            self.metrics.incr(f"worker_{name}_errors")
            logger.exception("worker %s failed (contained; retried next round)", name)

    def _summary(self) -> None:
        now = {name: self.metrics.counter(name) for name in _SUMMED}
        delta = {name: now[name] - self._totals.get(name, 0) for name in _SUMMED}
        self._totals = now
        health = self.health()
        logger.info(
            "worker summary: %d flushes, %d checkpoints, %d errors; outbox %s threads, oldest %s s",
            delta["flushes"], delta["flushed_checkpoints"], delta["flush_errors"],
            self.metrics.gauge("outbox_depth"), self.metrics.gauge("outbox_oldest_seconds"),
            extra={**delta, "outbox_depth": self.metrics.gauge("outbox_depth"),
                   "outbox_oldest_seconds": self.metrics.gauge("outbox_oldest_seconds"),
                   "quarantined": len(health.quarantined), "alive": health.alive, "at": time.time()},
        )  # fmt: skip

    def _sweep(self) -> None:
        assert self.options.retention is not None
        result = self.options.retention()
        self.metrics.incr("retention_sweeps")
        logger.info("retention sweep done", extra={"result": result})
