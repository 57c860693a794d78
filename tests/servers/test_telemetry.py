"""Metrics and traces of real calls: the OpenTelemetry SDK's in-memory span exporter, and a
Prometheus scrape of the saver's collector parsed by prometheus_client's own parser."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from langgraph_tiered_saver import ThreadLockedError
from langgraph_tiered_saver.flushing.ops import FlushPolicy
from langgraph_tiered_saver.observability.prometheus import MetricsCollector
from tests.graphs import chain_graph
from tests.helpers import QUIET_OFF, TEST_TENANT

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def tracer_provider() -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(provider)  # once per process: OpenTelemetry refuses a second


def scrape(saver: Any) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MetricsCollector(saver.metrics, saver.flusher_health))
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def test_a_run_is_traced_by_call_and_tier(saver_context: Callable[..., Any]) -> None:
    EXPORTER.clear()
    thread = f"t-{uuid.uuid4().hex[:8]}"
    with saver_context(durable=True, background_flush=False, flush_policy=FlushPolicy(**QUIET_OFF)) as saver:
        saver.setup()
        with trace.get_tracer("app").start_as_current_span("graph run") as run:
            chain_graph(saver, 2).invoke({"n": 0}, {"configurable": {"thread_id": thread}})
        saver.flush({"configurable": {"thread_id": thread}})
    spans = EXPORTER.get_finished_spans()
    by_name: dict[str, list[Any]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    assert {"lts.put", "lts.put_writes", "lts.get_tuple", "lts.flush", "lts.redis", "lts.postgres"} <= set(by_name)
    put = by_name["lts.put"][-1]  # (a process' first write also reads Redis' maxmemory-policy)
    assert put.parent.span_id == run.get_span_context().span_id  # inside the application's trace
    assert (put.attributes["lts.tenant_id"], put.attributes["lts.thread_id"]) == (TEST_TENANT, thread)
    assert put.attributes["lts.tiers"] == ("redis",)  # one Redis round trip, no Postgres
    children = [s for s in spans if s.parent is not None and s.parent.span_id == put.context.span_id]
    assert [(c.name, c.attributes["db.system"]) for c in children] == [("lts.redis", "redis")]
    flush = by_name["lts.flush"][-1]
    assert "postgres" in flush.attributes["lts.tiers"]
    assert all(s.status.is_ok for s in by_name["lts.put"])


def test_errors_are_counted_and_marked_on_the_span(saver_context: Callable[..., Any]) -> None:
    EXPORTER.clear()
    with saver_context() as saver:
        config = {"configurable": {"thread_id": f"t-{uuid.uuid4().hex[:8]}"}}
        with saver.thread_lock(config), pytest.raises(ThreadLockedError), saver.for_tenant(TEST_TENANT).thread_lock(config, wait=False):
            pass
        samples = scrape(saver)
    refused = samples["lts_op_errors_total"][(("error", "ThreadLockedError"), ("op", "lock"))]
    assert refused == 1
    (failed,) = [s for s in EXPORTER.get_finished_spans() if s.name == "lts.lock" and not s.status.is_ok]
    assert "ThreadLockedError" in failed.status.description


def test_a_scrape_shows_latency_by_op_and_tier(saver_context: Callable[..., Any]) -> None:
    with saver_context(durable=True, flush_policy=FlushPolicy(quiet_seconds=0.05)) as saver:
        saver.setup()
        # a warm-up run: the process' first write may also learn Redis' epoch (unless its
        # background thread did first), which is not a put's own round trip
        chain_graph(saver, 3).invoke({"n": 0}, {"configurable": {"thread_id": f"t-{uuid.uuid4().hex[:8]}"}})
        before = scrape(saver)
        thread = f"t-{uuid.uuid4().hex[:8]}"
        chain_graph(saver, 3).invoke({"n": 0}, {"configurable": {"thread_id": thread}})
        list(saver.list({"configurable": {"thread_id": thread}}))
        saver.flush()
        samples = scrape(saver)
    put_key, redis_key = (("op", "put"),), (("op", "put"), ("tier", "redis"))
    puts = samples["lts_op_seconds_count"][put_key] - before["lts_op_seconds_count"][put_key]
    assert puts >= 4  # input + 3 nodes + end
    # one Redis round trip per put
    assert samples["lts_request_seconds_count"][redis_key] - before["lts_request_seconds_count"][redis_key] == puts
    assert (("op", "put"), ("tier", "postgres")) not in samples["lts_request_seconds_count"]
    assert samples["lts_op_seconds_bucket"][(("le", "+Inf"), ("op", "list"))] == 1
    # the background flusher may have written the thread before flush() did, alone or in a group
    flushed = [samples["lts_request_seconds_count"].get((("op", op), ("tier", "postgres")), 0) for op in ("flush", "flush_group")]
    assert sum(flushed) >= 1
    assert samples["lts_flushes_total"][()] >= 1
    assert samples["lts_flusher_alive"][()] == 1
    assert samples["lts_flush_lag_seconds_count"][()] >= 1


def test_tenant_label_is_opt_in() -> None:
    from langgraph_tiered_saver.observability.metrics import Metrics

    assert Metrics().labels("acme", op="put") == (("op", "put"),)
    assert Metrics(tenant_label=True).labels("acme", op="put") == (("op", "put"), ("tenant", "acme"))
    kept = Metrics(tenant_label=True)  # op_labels: the same tuples, built once per tenant, op and tier
    assert kept.op_labels("acme", "put", "redis") == kept.labels("acme", op="put", tier="redis")
    assert kept.op_labels("acme", "put") == (("op", "put"), ("tenant", "acme"))
    assert kept.op_labels("other", "put") == (("op", "put"), ("tenant", "other"))
    assert Metrics().op_labels("acme", "put", "redis") == (("op", "put"), ("tier", "redis"))


def test_blob_store_latency_and_errors_are_scraped(saver_context: Callable[..., Any], tmp_path: Any) -> None:
    from langgraph_tiered_saver import filesystem_blobs

    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    big = {"n": 0, "log": ["x" * 4096]}
    with saver_context(blob_store=filesystem_blobs(tmp_path / "ok"), offload_threshold=1024) as good:
        chain_graph(good, 1).invoke(big, {"configurable": {"thread_id": "big"}})
        assert scrape(good)["lts_request_seconds_count"][(("op", "put"), ("tier", "blob"))] >= 1
    with saver_context(blob_store=filesystem_blobs(blocker / "blobs"), offload_threshold=1024) as broken:
        with pytest.raises(NotADirectoryError):  # a local store's error is the caller's (only an outage keeps values inline)
            chain_graph(broken, 1).invoke(big, {"configurable": {"thread_id": "big"}})
        samples = scrape(broken)
    assert samples["lts_request_errors_total"][(("error", "NotADirectoryError"), ("op", "put"), ("tier", "blob"))] == 1
    assert samples["lts_op_errors_total"][(("error", "NotADirectoryError"), ("op", "put"))] == 1


def test_lock_waits_are_scraped(saver_context: Callable[..., Any]) -> None:
    import threading
    import time

    with saver_context() as saver:
        config = {"configurable": {"thread_id": f"t-{uuid.uuid4().hex[:8]}"}}
        first = saver.thread_lock(config)
        first.__enter__()
        threading.Timer(0.3, first.release).start()
        started = time.monotonic()
        with saver.thread_lock(config, wait=True, wait_timeout=5):
            waited = time.monotonic() - started
        samples = scrape(saver)
    assert waited >= 0.25
    assert samples["lts_request_seconds_count"][(("op", "lock"), ("tier", "wait"))] >= 1
    assert samples["lts_request_seconds_sum"][(("op", "lock"), ("tier", "wait"))] >= 0.2
