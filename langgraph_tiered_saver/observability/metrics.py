"""In-process metrics: counters, gauges and latency series (a histogram each, plus a window
of samples for exact percentiles when unlabelled), cheap enough for the hot path.

`saver.metrics.snapshot()` returns plain numbers (the `metrics` command prints them);
`prometheus.MetricsCollector` exposes the same numbers to a Prometheus scrape. Nothing here
does I/O, and nothing here needs an optional dependency.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

RESERVOIR = 2048
RECENT = 100  # notable events kept per kind (forks...), newest last
OP_LABELS = 4096  # label tuples of (tenant, op, tier) kept built
# seconds: from a loopback Redis round trip (~0.2 ms) to a flush stuck behind a frozen Postgres
BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
Labels = tuple[tuple[str, str], ...]


@dataclass
class Histogram:
    """Counts per bucket (not cumulative), their sum and count: Prometheus' histogram model."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def add(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """[(le, observations <= le), ..., ("+Inf", count)]."""
        running, out = 0, []
        for bound, n in zip((*map(str, BUCKETS), "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


class Metrics:
    """`tenant_label=True` adds the tenant to labelled series (op latency, errors): useful with
    few tenants, a cardinality risk with many, hence off by default."""

    def __init__(self, *, tenant_label: bool = False) -> None:
        self.tenant_label = tenant_label
        self._lock = threading.Lock()
        self._counters: defaultdict[str, int] = defaultdict(int)
        self._gauges: dict[str, float] = {}
        self._samples: defaultdict[str, deque[float]] = defaultdict(lambda: deque(maxlen=RESERVOIR))
        self._labelled: defaultdict[tuple[str, Labels], int] = defaultdict(int)
        self._histograms: defaultdict[tuple[str, Labels], Histogram] = defaultdict(Histogram)
        self._recent: defaultdict[str, deque[tuple[Any, ...]]] = defaultdict(lambda: deque(maxlen=RECENT))
        self._op_labels: dict[tuple[str | None, str, str | None], Labels] = {}

    def incr(self, name: str, by: int = 1) -> None:
        with self._lock:
            self._counters[name] += by

    def set_gauge(self, name: str, value: float) -> None:
        with self._lock:
            self._gauges[name] = value

    def gauge(self, name: str) -> float | None:
        with self._lock:
            return self._gauges.get(name)

    def observe(self, name: str, seconds: float, labels: Labels = ()) -> None:
        """One duration of a series: counted in its histogram (exported), and, for a series
        without labels, kept in its bounded window of samples (`snapshot()`'s exact p50/p99;
        labelled series, one per op and tier, keep only the histogram)."""
        with self._lock:
            self._histograms[(name, labels)].add(seconds)
            if not labels:
                self._samples[name].append(seconds)

    def remember(self, name: str, event: tuple[Any, ...]) -> None:
        """Keep a notable event (the last RECENT of each kind) for health checks."""
        with self._lock:
            self._recent[name].append(event)

    def recent(self, name: str) -> tuple[tuple[Any, ...], ...]:
        with self._lock:
            return tuple(self._recent[name])

    def counter(self, name: str) -> int:
        with self._lock:
            return self._counters[name]

    def labels(self, tenant: str | None, **labels: str) -> Labels:
        """Label pairs of one series, sorted; the tenant only when `tenant_label` is on."""
        if self.tenant_label and tenant is not None:
            labels["tenant"] = tenant
        return tuple(sorted(labels.items()))

    def op_labels(self, tenant: str | None, op: str, tier: str | None = None) -> Labels:
        """`labels(tenant, op=op[, tier=tier])`, kept: every call observes one or two of these
        (~1 µs each to build). Bounded: all forgotten at once past OP_LABELS."""
        key = (tenant if self.tenant_label else None, op, tier)
        labels = self._op_labels.get(key)
        if labels is None:
            if len(self._op_labels) >= OP_LABELS:
                self._op_labels.clear()
            labels = self.labels(tenant, op=op, tier=tier) if tier is not None else self.labels(tenant, op=op)
            self._op_labels[key] = labels
        return labels

    def incr_labelled(self, name: str, labels: Labels, by: int = 1) -> None:
        with self._lock:
            self._labelled[(name, labels)] += by

    def labelled(self) -> tuple[dict[tuple[str, Labels], int], dict[tuple[str, Labels], Histogram]]:
        """Copies of the labelled counters and histograms (for exporters)."""
        with self._lock:
            hists = {k: Histogram(list(h.counts), h.total, h.count) for k, h in self._histograms.items()}
            return dict(self._labelled), hists

    def snapshot(self) -> dict[str, Any]:
        """Counters, gauges, tier hit ratio, p50/p99 of every latency series (seconds), and the
        labelled series (op/tier latency and errors) as lists of {labels, ...}."""
        with self._lock:
            counters = dict(self._counters)
            gauges = dict(self._gauges)
            samples = {k: sorted(v) for k, v in self._samples.items()}
        labelled, hists = self.labelled()
        reads = counters.get("read_hits_redis", 0) + counters.get("read_hits_postgres", 0)
        summary = {
            name: {"count": len(vals), "p50": _nearest_rank(vals, 0.50), "p99": _nearest_rank(vals, 0.99)}
            for name, vals in samples.items()
            if vals
        }
        series: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        for (name, labels), value in sorted(labelled.items()):
            series[name].append({**dict(labels), "value": value})
        for (name, labels), hist in sorted(hists.items(), key=lambda kv: kv[0]):
            series[name].append({**dict(labels), "count": hist.count, "sum": hist.total})
        return {
            "counters": counters,
            "gauges": gauges,
            "latency": summary,
            "series": dict(series),
            "redis_hit_ratio": counters.get("read_hits_redis", 0) / reads if reads else None,
        }


def _nearest_rank(ordered: list[float], q: float) -> float:
    """The q-quantile of sorted samples by the nearest-rank method (the smallest value with at
    least q of the samples at or below it)."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]
