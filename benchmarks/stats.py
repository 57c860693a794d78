"""Results, their summaries (median, p99, min, max) and ratios against the baselines."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Summary:
    n: int
    median: float
    p99: float
    min: float
    max: float
    mean: float


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile, `q` in [0, 100] (numpy's default method)."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(samples: list[float]) -> Summary | None:
    if not samples:
        return None
    return Summary(
        n=len(samples),
        median=statistics.median(samples),
        p99=percentile(samples, 99),
        min=min(samples),
        max=max(samples),
        mean=statistics.fmean(samples),
    )


@dataclass
class Result:
    """One saver in one workload: latency/throughput samples and/or scalar metrics.

    `status` is "ok", "n/a" (the saver does not take part), "unavailable: <reason>" or
    "error: <reason>".
    """

    group: str
    workload: str
    saver: str
    unit: str = "ms"
    higher_is_better: bool = False
    status: str = "ok"
    samples: list[float] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    vs_postgres: float | None = None
    vs_floor: float | None = None

    @property
    def summary(self) -> Summary | None:
        return summarize(self.samples)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        summary = self.summary
        out["summary"] = asdict(summary) if summary else None
        out["samples"] = [round(s, 6) for s in self.samples]
        return out


def ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or baseline is None or baseline == 0:
        return None
    return value / baseline


def add_ratios(results: list[Result], postgres: str, floor: str) -> None:
    """Set `vs_postgres` / `vs_floor`: median of this saver ÷ median of the baseline, same
    workload. Above 1 means slower (latency) or faster (throughput) than the baseline."""
    medians: dict[tuple[str, str], float] = {}
    for r in results:
        s = r.summary
        if s is not None and r.status == "ok":
            medians[(r.workload, r.saver)] = s.median
    for r in results:
        mine = medians.get((r.workload, r.saver))
        r.vs_postgres = ratio(mine, medians.get((r.workload, postgres)))
        r.vs_floor = ratio(mine, medians.get((r.workload, floor)))
