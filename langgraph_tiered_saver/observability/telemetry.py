"""Where checkpoint time goes: one wrapper op that times an operation and each request it
yields, by tier, counts failures, and records OpenTelemetry spans when `opentelemetry-api` is
installed (a no-op without it, or before the application sets a tracer provider).

The wrapper is itself a sans-I/O op (it sits between the operation and the driver), so the
sync and the async saver share it, and no tier op is edited to be observed:

    metrics  lts_op_seconds{op}                    whole call, as the caller waited for it
             lts_request_seconds{op, tier}         each Redis round trip, Postgres transaction,
                                                   blob-store call, or wait (a lock's sleep)
             lts_op_errors_total{op, error}        calls that raised, by error class
             lts_request_errors_total{op, tier, error}  failed requests, even when the op recovered
                                                   (a fallback, a blob kept inline)
    spans    lts.<op> with lts.tenant_id, lts.thread_id, lts.tiers; a child span per request
             (lts.redis / lts.postgres / lts.blob / lts.wait) with db.system where it applies
"""

from __future__ import annotations

import os
import time
from typing import Any, TypeVar

from langgraph_tiered_saver._sansio.io import BlobIO, Op, PgCall, RedisCall, Request
from langgraph_tiered_saver.observability.metrics import Metrics

try:  # optional: the [otel] extra
    from opentelemetry import trace as otel_trace
    from opentelemetry.trace import Status, StatusCode
except ImportError:  # pragma: no cover - exercised where the extra is absent
    otel_trace = None  # type: ignore[assignment]

T = TypeVar("T")
TRACER_NAME = "langgraph_tiered_saver"
# one proxy for the process: it follows the provider the application sets, whenever it does
_TRACER = otel_trace.get_tracer(TRACER_NAME) if otel_trace is not None else None
_DB_SYSTEM = {"redis": "redis", "postgres": "postgresql"}


def tier_of(request: Request) -> str:
    if isinstance(request, RedisCall):
        return "redis"
    if isinstance(request, PgCall):
        return "postgres"
    if isinstance(request, BlobIO):
        return "blob"
    return "wait"


class _Spans:
    """The op's span and its children; every method is a no-op without OpenTelemetry."""

    def __init__(self, name: str, tenant: str | None, thread: str | None) -> None:
        self._tracer = _TRACER
        self._span: Any = None
        self.tiers: set[str] = set()
        if self._tracer is not None:
            attrs = {k: v for k, v in (("lts.tenant_id", tenant), ("lts.thread_id", thread)) if v is not None}
            self._span = self._tracer.start_span(f"lts.{name}", attributes=attrs)

    def child(self, tier: str) -> Any:
        self.tiers.add(tier)
        if self._span is None or not self._span.is_recording():
            return None
        attrs = {"db.system": _DB_SYSTEM[tier]} if tier in _DB_SYSTEM else {}
        return self._tracer.start_span(  # type: ignore[union-attr]
            f"lts.{tier}", context=otel_trace.set_span_in_context(self._span), attributes=attrs
        )

    @staticmethod
    def end_child(child: Any, error: BaseException | None) -> None:
        if child is not None:
            _fail(child, error)
            child.end()

    def end(self, error: BaseException | None) -> None:
        if self._span is None:
            return
        self._span.set_attribute("lts.tiers", sorted(self.tiers))
        _fail(self._span, error)
        self._span.end()


def _fail(span: Any, error: BaseException | None) -> None:
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))


_UNKNOWN = object()
_ENV_PROVIDER = otel_trace is not None and "OTEL_PYTHON_TRACER_PROVIDER" in os.environ
_traced = False  # a provider, once set, stays: OpenTelemetry refuses to replace it


def _tracing() -> bool:
    """Whether an application has installed a tracer provider: until it does, the API's proxy
    hands out non-recording spans, and the call skips building them (a per-call cost). The
    API's global is read directly (the public getter costs an environment lookup per call),
    through the public getter when this API version does not have it."""
    global _traced
    if _traced:
        return True
    if _TRACER is None:
        return False
    if getattr(otel_trace, "_TRACER_PROVIDER", _UNKNOWN) is None and not _ENV_PROVIDER:
        return False
    provider = otel_trace.get_tracer_provider()
    _traced = not isinstance(provider, (otel_trace.ProxyTracerProvider, otel_trace.NoOpTracerProvider))
    return _traced


def observed_op(
    metrics: Metrics, name: str, op: Op[T], tenant: str | None = None, thread: str | None = None
) -> Op[T]:
    """Run `op` unchanged (same requests, same results, same errors), measuring it."""
    spans = _Spans(name, tenant, thread) if _tracing() else None
    by_tier: dict[str, Any] = {}  # a series' labels, built once per call and tier
    started = time.perf_counter()
    try:
        request = next(op)
        while True:
            tier = tier_of(request)
            labels = by_tier.get(tier)
            if labels is None:
                labels = by_tier[tier] = metrics.op_labels(tenant, name, tier)
            child = None if spans is None else spans.child(tier)
            sent = time.perf_counter()
            try:
                result = yield request
            except BaseException as exc:
                metrics.observe("request_seconds", time.perf_counter() - sent, labels)
                metrics.incr_labelled("request_errors", metrics.labels(tenant, op=name, tier=tier, error=type(exc).__name__))
                if spans is not None:
                    spans.end_child(child, exc)
                request = op.throw(exc)
            else:
                metrics.observe("request_seconds", time.perf_counter() - sent, labels)
                if spans is not None:
                    spans.end_child(child, None)
                request = op.send(result)
    except StopIteration as stop:
        metrics.observe("op_seconds", time.perf_counter() - started, metrics.op_labels(tenant, name))
        if spans is not None:
            spans.end(None)
        return stop.value  # type: ignore[no-any-return]
    except BaseException as exc:
        metrics.observe("op_seconds", time.perf_counter() - started, metrics.labels(tenant, op=name))
        metrics.incr_labelled("op_errors", metrics.labels(tenant, op=name, error=type(exc).__name__))
        if spans is not None:
            spans.end(exc)
        raise
