"""Prometheus exposition of a saver's `Metrics` (needs `prometheus_client`: the [prometheus]
extra).

Why Prometheus' own client rather than OpenTelemetry metrics: the numbers already live in
`Metrics` (cheap, dependency-free, shared by sync and async calls), so an exporter only has to
read them at scrape time — a `Collector` does exactly that, with no second bookkeeping on the
hot path; the text format is what every Prometheus, VictoriaMetrics, Grafana Agent and
OpenTelemetry Collector (prometheus receiver) scrapes. Traces go through OpenTelemetry
(`telemetry`), where a LangGraph run's spans already are.

    from prometheus_client import REGISTRY, start_http_server
    REGISTRY.register(MetricsCollector(saver.metrics, saver.flusher_health))
    start_http_server(9464)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from langgraph_tiered_saver.observability.health import FlusherHealth
from langgraph_tiered_saver.observability.metrics import Histogram, Labels, Metrics

PREFIX = "lts_"
_HELP = {
    "op_seconds": "Duration of a saver call (put, put_writes, get_tuple, list, flush, lock, ...).",
    "request_seconds": "Duration of one request of a call, by tier (redis, postgres, blob, wait).",
    "op_errors": "Saver calls that raised, by error class.",
    "request_errors": "Requests that failed, by tier and error class (also when the call recovered).",
    "flush_lag_seconds": "From a thread's last hot write to its commit in Postgres.",
    "flush_seconds": "Duration of one thread's flush to Postgres (in a group flush, the group's).",
    "postgres_outage_seconds": "Duration of a Postgres outage, from its first failure to its first success.",
}


class MetricsCollector(Collector):
    """Reads `metrics` (and the flusher's health, when given) at every scrape."""

    def __init__(self, metrics: Metrics, health: Callable[[], FlusherHealth | None] | None = None) -> None:
        self.metrics = metrics
        self.health = health

    def collect(self) -> Iterator[Metric]:
        snap = self.metrics.snapshot()
        for name, value in sorted(snap["counters"].items()):
            yield CounterMetricFamily(PREFIX + name, f"Counter {name} of the saver.", value=value)
        for name, value in sorted(snap["gauges"].items()):
            yield GaugeMetricFamily(PREFIX + name, f"Gauge {name} of the saver.", value=value)
        if snap["redis_hit_ratio"] is not None:
            yield GaugeMetricFamily(PREFIX + "redis_hit_ratio", "Reads answered by Redis.", value=snap["redis_hit_ratio"])
        counters, histograms = self.metrics.labelled()
        yield from _labelled_counters(counters)
        yield from _histograms(histograms)
        yield from self._health()

    def _health(self) -> Iterator[Metric]:
        health = self.health() if self.health is not None else None
        if health is None:
            return
        yield GaugeMetricFamily(PREFIX + "flusher_alive", "1 while the flusher runs.", value=int(health.alive))
        yield GaugeMetricFamily(
            PREFIX + "flusher_consecutive_failures", "Failed flushes since the last success.",
            value=health.consecutive_failures,
        )
        yield GaugeMetricFamily(
            PREFIX + "flusher_quarantined_threads", "Threads held back after repeated failures.",
            value=len(health.quarantined),
        )
        if health.last_success_at is not None:
            yield GaugeMetricFamily(
                PREFIX + "flusher_last_success_age_seconds", "Seconds since the last successful flush.",
                value=max(0.0, time.time() - health.last_success_at),
            )


def _families(
    series: Mapping[tuple[str, Labels], Any],
) -> Iterator[tuple[str, list[str], list[tuple[list[str], Any]]]]:
    """Labelled series grouped by name: (name, label names, [(label values, value), ...])."""
    by_name: dict[str, list[Labels]] = {}
    for name, labels in sorted(series):
        by_name.setdefault(name, []).append(labels)
    for name, label_sets in by_name.items():
        names = sorted({k for labels in label_sets for k, _ in labels})
        yield name, names, [([dict(labels).get(k, "") for k in names], series[(name, labels)]) for labels in label_sets]


def _labelled_counters(counters: dict[tuple[str, Labels], int]) -> Iterator[Metric]:
    for name, names, rows in _families(counters):
        family = CounterMetricFamily(PREFIX + name, _HELP.get(name, name), labels=names)
        for values, count in rows:
            family.add_metric(values, count)
        yield family


def _histograms(histograms: dict[tuple[str, Labels], Histogram]) -> Iterator[Metric]:
    for name, names, rows in _families(histograms):
        family = HistogramMetricFamily(PREFIX + name, _HELP.get(name, name), labels=names)
        for values, hist in rows:
            family.add_metric(values, buckets=hist.cumulative(), sum_value=hist.total)
        yield family
