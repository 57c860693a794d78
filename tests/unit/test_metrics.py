"""The in-process metrics summary: nearest-rank percentiles over a bounded reservoir."""

from __future__ import annotations

from langgraph_tiered_saver.observability.metrics import RESERVOIR, Metrics


def test_percentiles_are_nearest_rank_and_the_reservoir_is_bounded() -> None:
    m = Metrics()
    m.observe("flush", 0.002)
    m.observe("flush", 0.001)
    assert m.snapshot()["latency"]["flush"] == {"count": 2, "p50": 0.001, "p99": 0.002}
    for i in range(1, 101):
        m.observe("put", float(i))
    put = m.snapshot()["latency"]["put"]
    assert (put["p50"], put["p99"]) == (50.0, 99.0)
    for i in range(RESERVOIR * 2):
        m.observe("put", float(i))
    assert m.snapshot()["latency"]["put"]["count"] == RESERVOIR  # old samples fall out


def test_hit_ratio_and_counters() -> None:
    m = Metrics()
    assert m.snapshot()["redis_hit_ratio"] is None
    m.incr("read_hits_redis", 3)
    m.incr("read_hits_postgres")
    snap = m.snapshot()
    assert snap["redis_hit_ratio"] == 0.75
    assert snap["counters"]["read_hits_postgres"] == 1
