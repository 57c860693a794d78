"""The worker's HTTP endpoints: `/metrics` (Prometheus text format) and `/healthz` (200 when
healthy, 503 with the reasons when not; JSON either way). A daemon thread of the standard
library's `ThreadingHTTPServer`: a scrape never waits on a flush."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from langgraph_tiered_saver.errors import ConfigError
from langgraph_tiered_saver.observability.health import FlusherHealth
from langgraph_tiered_saver.observability.metrics import Metrics


@dataclass(frozen=True)
class HealthRules:
    """When the worker is unhealthy: its flush loop stopped, stalled (the outbox not checked for
    `stale_after` seconds), flushes fail for every thread (an outage: unhealthy while it lasts), or
a thread has waited in the outbox over `max_outbox_age` seconds (so, after an outage, healthy
again once the backlog has drained)."""

    max_outbox_age: float = 300.0
    stale_after: float = 10.0


@dataclass(frozen=True)
class HealthReport:
    ok: bool
    reasons: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


def check_health(health: FlusherHealth, metrics: Metrics, rules: HealthRules, now: float | None = None) -> HealthReport:
    now = time.time() if now is None else now
    checked_at = metrics.gauge("outbox_checked_at")
    oldest = metrics.gauge("outbox_oldest_seconds")
    reasons = []
    if not health.alive:
        reasons.append("flusher is not running")
    elif checked_at is None or now - checked_at > rules.stale_after:
        reasons.append(f"flusher stalled: outbox not checked for over {rules.stale_after:g} s")
    if health.outage_seconds is not None:
        reasons.append(f"flushes failing for every thread for {health.outage_seconds:.1f} s: {health.outage_error}")
    if oldest is not None and oldest > rules.max_outbox_age:
        reasons.append(f"outbox age {oldest:.1f} s exceeds {rules.max_outbox_age:g} s")
    details = {
        "alive": health.alive,
        "outbox_depth": metrics.gauge("outbox_depth"),
        "outbox_oldest_seconds": oldest,
        "outbox_checked_seconds_ago": None if checked_at is None else round(now - checked_at, 3),
        "consecutive_failures": health.consecutive_failures,
        "outage_seconds": health.outage_seconds,
        "quarantined": [{"tenant_id": t, "thread_id": th, "error": e} for t, th, e in health.quarantined],
    }
    return HealthReport(not reasons, reasons, details)


METRICS_NEED = "/metrics needs prometheus_client: pip install 'langgraph-tiered-saver[prometheus]'"


def prometheus_text(metrics: Metrics, health: Callable[[], FlusherHealth | None]) -> Callable[[], bytes]:
    """The /metrics body maker; raises ConfigError when prometheus_client is missing."""
    try:
        from prometheus_client import CollectorRegistry, generate_latest
    except ImportError as exc:
        raise ConfigError(METRICS_NEED) from exc
    from langgraph_tiered_saver.observability.prometheus import MetricsCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(MetricsCollector(metrics, health))
    return lambda: generate_latest(registry)


class OpsServer:
    """Serves /metrics and /healthz on `host:port` (port 0: any free port, see `.port`)."""

    def __init__(
        self, host: str, port: int, metrics_body: Callable[[], bytes] | None, health: Callable[[], HealthReport]
    ) -> None:
        """`metrics_body` None: prometheus_client is not installed; /healthz is still served and
        /metrics answers 501 saying what to install."""
        handler = _handler(metrics_body, health)
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise ConfigError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from exc
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="tiered-saver-http", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(metrics_body: Callable[[], bytes] | None, health: Callable[[], HealthReport]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                if metrics_body is None:
                    self._send(501, json.dumps({"error": METRICS_NEED}).encode(), "application/json")
                else:
                    self._send(200, metrics_body(), "text/plain; version=0.0.4; charset=utf-8")
            elif path == "/healthz":
                report = health()
                body = {"status": "ok" if report.ok else "unhealthy", "reasons": report.reasons, **report.details}
                self._send(200 if report.ok else 503, json.dumps(body).encode(), "application/json")
            else:
                self._send(404, b'{"error": "not found: try /metrics or /healthz"}', "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # scrapes are not news
            return

    return Handler
