"""In-process metrics: counters, gauges and latency summaries, cheap enough for the hot path.

`saver.metrics.snapshot()` returns plain numbers, ready for Prometheus/OpenTelemetry exporters
or a log line; nothing here does I/O.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict, deque
from typing import Any

RESERVOIR = 2048


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: defaultdict[str, int] = defaultdict(int)
        self._gauges: dict[str, float] = {}
        self._samples: defaultdict[str, deque[float]] = defaultdict(lambda: deque(maxlen=RESERVOIR))

    def incr(self, name: str, by: int = 1) -> None:
        with self._lock:
            self._counters[name] += by

    def set_gauge(self, name: str, value: float) -> None:
        with self._lock:
            self._gauges[name] = value

    def observe(self, name: str, seconds: float) -> None:
        with self._lock:
            self._samples[name].append(seconds)

    def counter(self, name: str) -> int:
        with self._lock:
            return self._counters[name]

    def snapshot(self) -> dict[str, Any]:
        """Counters, gauges, tier hit ratio and p50/p99 of every latency series (seconds)."""
        with self._lock:
            counters = dict(self._counters)
            gauges = dict(self._gauges)
            samples = {k: sorted(v) for k, v in self._samples.items()}
        reads = counters.get("read_hits_redis", 0) + counters.get("read_hits_postgres", 0)
        summary = {
            name: {"count": len(vals), "p50": _nearest_rank(vals, 0.50), "p99": _nearest_rank(vals, 0.99)}
            for name, vals in samples.items()
            if vals
        }
        return {
            "counters": counters,
            "gauges": gauges,
            "latency": summary,
            "redis_hit_ratio": counters.get("read_hits_redis", 0) / reads if reads else None,
        }


def _nearest_rank(ordered: list[float], q: float) -> float:
    """The q-quantile of sorted samples by the nearest-rank method (the smallest value with at
    least q of the samples at or below it)."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]
