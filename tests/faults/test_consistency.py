"""Consistency between the tiers under re-warm, expiry, eviction and races.

Each test is one reproduction of a reported loss, against real servers: before the fix it lost or
corrupted a thread silently.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import redis
from langgraph.checkpoint.base import empty_checkpoint

from devtools.servers import PrivatePostgres, PrivateRedis
from langgraph_tiered_saver import FlushPolicy, TieredSaver
from langgraph_tiered_saver.flushing import ops as flush_module
from langgraph_tiered_saver.hot import keys as K
from tests.graphs import two_step_graph
from tests.helpers import QUIET_OFF, TEST_TENANT, pg_rows, thread_config, wait_for

MANUAL = FlushPolicy(**QUIET_OFF)  # type: ignore[arg-type]


def _redis_keys(saver: Any, redis_url: str, thread: str) -> dict[str, int]:
    """PTTL of each of the thread's keys (-2: absent, -1: no TTL)."""
    client = redis.Redis.from_url(redis_url)
    try:
        tk = K.thread_keys(saver.key_prefix, TEST_TENANT, thread)
        return {name: int(client.pttl(key)) for name, key in zip(tk._fields, tk, strict=True)}
    finally:
        client.close()


def _forget_in_redis(saver: Any, thread: str) -> None:
    saver.run_op(saver.core.hot.delete_thread_op(TEST_TENANT, [thread]))


@pytest.fixture
def durable(saver_context: Callable[..., Any]) -> Iterator[Any]:
    with saver_context(durable=True, flush_policy=MANUAL, background_flush=False) as saver:
        saver.setup()
        yield saver


def test_reading_an_old_checkpoint_by_id_never_makes_it_the_latest(durable: Any) -> None:
    """`get_state` of an old checkpoint after the thread left Redis re-warmed only
    that checkpoint, and the next run continued from it."""
    graph, cfg = two_step_graph(durable), thread_config()
    graph.invoke({"log": ["run1"]}, cfg)
    graph.invoke({"log": ["run2"]}, cfg)
    latest = graph.get_state(cfg)
    oldest = list(graph.get_state_history(cfg))[-1]
    durable.flush(cfg)
    _forget_in_redis(durable, cfg["configurable"]["thread_id"])
    assert graph.get_state(oldest.config).values == oldest.values  # by id, from Postgres
    assert graph.get_state(cfg).config == latest.config  # still the newest
    assert graph.invoke({"log": ["run3"]}, cfg)["log"] == ["run1", "a", "b", "run2", "a", "b", "run3", "a", "b"]


def test_unflushed_data_outlives_the_ttl_while_postgres_is_down(
    make_private_postgres: Callable[..., PrivatePostgres], saver_context: Callable[..., Any], redis_url: str
) -> None:
    """The outbox expired with the thread's keys; after Postgres came back the flush
    found nothing and the thread was gone. Now a dirty thread's keys keep no TTL until flushed.
    (Written with direct puts: a graph run on a thread Redis does not hold must first ask
    Postgres, which is down.)"""
    pg = make_private_postgres()
    policy = FlushPolicy(quiet_seconds=0.05, every_n_checkpoints=0, on_close=False, retry_backoff=0.1,
                         max_backoff=0.3, max_attempts=1000)  # fmt: skip
    with saver_context(durable=True, postgres_url=pg.url, flush_policy=policy, ttl_seconds=0.5) as saver:
        saver.setup()
        thread = f"t-{uuid.uuid4().hex[:8]}"
        pg.stop()
        first = _put(saver, thread, {"a": "A1"}, {"a": "1"}, {"a": "1"})
        second = _put(saver, thread, {"a": "A2"}, {"a": "2"}, {"a": "2"}, parent=first)
        saver.put_writes(second, [("a", "A3")], task_id="task-1")
        # the flusher tried and failed (Postgres is down) twice: the keys kept no TTL meanwhile
        assert wait_for(lambda: saver.flusher_health().consecutive_failures >= 2, timeout=30)
        ttls = _redis_keys(saver, redis_url, thread)
        assert all(ttls[name] == -1 for name in ("idx", "ck", "cv", "bl", "wi", "wr", "pend")), ttls
        pg.start()
        assert wait_for(lambda: pg_rows(pg.url, saver.schema, thread) == 2, timeout=30)
        assert wait_for(lambda: 0 < _redis_keys(saver, redis_url, thread)["ck"] <= 500, timeout=10)
        assert wait_for(lambda: _redis_keys(saver, redis_url, thread)["ck"] == -2, timeout=5)  # clean: expires
        latest = saver.get_tuple(thread_config(thread))  # from Postgres now
        assert latest is not None and latest.checkpoint["channel_values"] == {"a": "A2"}
        assert latest.pending_writes == [("task-1", "a", "A3")]


def _put(saver: Any, thread: str, values: dict[str, Any], versions: dict[str, str], new: dict[str, str],
         parent: dict[str, Any] | None = None) -> Any:  # fmt: skip
    cp = empty_checkpoint()
    cp["channel_values"] = values
    cp["channel_versions"] = versions
    return saver.put(parent or thread_config(thread, checkpoint_ns=""), cp, {"source": "loop", "step": 0}, new)


def test_eviction_before_the_flush_is_reported_not_written_half(
    durable: Any, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The flusher acknowledged checkpoints whose values LRU had evicted and wrote
    their rows without them: `get_state` then raised CorruptDataError for good."""
    thread = f"t-{uuid.uuid4().hex[:8]}"
    _put(durable, thread, {"a": "A"}, {"a": "1"}, {"a": "1"})
    client = redis.Redis.from_url(redis_url)
    client.delete(K.thread_keys(durable.key_prefix, TEST_TENANT, thread).bl)  # what LRU would do
    client.close()
    caplog.set_level(logging.ERROR, logger="langgraph_tiered_saver")
    (result,) = durable.flush(thread_config(thread))
    assert result.lost >= 1 and result.checkpoints == 0
    assert durable.metrics.counter("outbox_entries_lost") >= 1
    assert any("lost" in r.getMessage() for r in caplog.records)
    _forget_in_redis(durable, thread)
    assert durable.get_tuple(thread_config(thread)) is None  # nothing half-written to read back
    assert list(durable.list(thread_config(thread))) == []


def test_values_an_earlier_flush_wrote_complete_a_checkpoint(durable: Any, redis_url: str) -> None:
    """A checkpoint whose unchanged channel value Redis lost, but an earlier flush had written,
    is complete across the tiers: it is written, not reported lost."""
    thread = f"t-{uuid.uuid4().hex[:8]}"
    first = _put(durable, thread, {"a": "A", "b": "B1"}, {"a": "1", "b": "1"}, {"a": "1", "b": "1"})
    durable.flush(thread_config(thread))
    client = redis.Redis.from_url(redis_url)
    client.delete(K.thread_keys(durable.key_prefix, TEST_TENANT, thread).bl)
    client.close()
    _put(durable, thread, {"a": "A", "b": "B2"}, {"a": "1", "b": "2"}, {"b": "2"}, parent=first)
    (result,) = durable.flush(thread_config(thread))
    assert (result.checkpoints, result.lost) == (1, 0)
    _forget_in_redis(durable, thread)
    latest = durable.get_tuple(thread_config(thread))
    assert latest is not None and latest.checkpoint["channel_values"] == {"a": "A", "b": "B2"}


def test_a_special_write_replaced_during_a_flush_is_flushed_again(
    saver_context: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An `__interrupt__` write replaced between the flush's read and its
    acknowledgement lost its outbox entry: Postgres kept "question v1" for good."""
    policy = FlushPolicy(on_interrupt="async", **QUIET_OFF)  # type: ignore[arg-type]
    with saver_context(durable=True, flush_policy=policy, background_flush=False) as saver:
        saver.setup()
        thread = f"t-{uuid.uuid4().hex[:8]}"
        cfg = _put(saver, thread, {"a": "A"}, {"a": "1"}, {"a": "1"})
        saver.put_writes(cfg, [("__interrupt__", "question v1")], task_id="ask")
        upsert = flush_module.upsert_batch_op
        replaced: list[bool] = []

        def upsert_then_replace(*args: Any, **kwargs: Any) -> Any:
            result = yield from upsert(*args, **kwargs)
            if not replaced:  # between the flush's read and its acknowledgement
                replaced.append(True)
                saver.put_writes(cfg, [("__interrupt__", "question v2")], task_id="ask")
            return result

        monkeypatch.setattr(flush_module, "upsert_batch_op", upsert_then_replace)
        (first,) = saver.flush(thread_config(thread))
        assert replaced and first.remaining == 1  # the replaced entry stayed in the outbox
        (second,) = saver.flush(thread_config(thread))
        assert second.writes == 1 and second.remaining == 0
        _forget_in_redis(saver, thread)
        latest = saver.get_tuple(thread_config(thread))
        assert latest is not None and latest.pending_writes == [("ask", "__interrupt__", "question v2")]


def test_redis_restarted_empty_is_reported_not_passed_over(
    make_private_redis: Callable[..., PrivateRedis], test_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis restarted without persistence lost the unflushed window with no
    log line, and the thread silently went on from its last flushed checkpoint."""
    server = make_private_redis()
    schema = f"lts_{uuid.uuid4().hex[:10]}"
    with TieredSaver.from_conn_string(
        server.url, test_database_url, tenant_id=TEST_TENANT, schema=schema, flush_policy=MANUAL,
        background_flush=False,
    ) as saver:  # fmt: skip
        saver.setup()
        graph, cfg = two_step_graph(saver), thread_config()
        graph.invoke({"log": ["run1"]}, cfg)
        saver.flush(cfg)
        graph.invoke({"log": ["run2"]}, cfg)  # not flushed: only Redis has it
        server.restart()  # no persistence: empty
        caplog.set_level(logging.ERROR, logger="langgraph_tiered_saver")
        out = graph.invoke({"log": ["run3"]}, cfg)
        assert out["log"] == ["run1", "a", "b", "run3", "a", "b"]  # run 2 is gone ...
        assert saver.metrics.counter("redis_data_lost") == 1  # ... and that is said, once
        assert [r for r in caplog.records if "Redis lost data" in r.getMessage()]
        graph.invoke({"log": ["run4"]}, cfg)
        assert saver.metrics.counter("redis_data_lost") == 1
    with psycopg.connect(test_database_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def test_redis_back_with_old_data_after_a_fallback_does_not_answer_as_latest(
    make_private_redis: Callable[..., PrivateRedis], test_database_url: str
) -> None:
    """Run 1 in Redis, Redis stops, run 2 is written through to Postgres, Redis comes
    back with run 1 (AOF): `get_state` returned run 1 and run 3 forked from it."""
    server = make_private_redis("--appendonly", "yes", "--appendfsync", "always")
    schema = f"lts_{uuid.uuid4().hex[:10]}"
    with TieredSaver.from_conn_string(
        server.url, test_database_url, tenant_id=TEST_TENANT, schema=schema, flush_policy=MANUAL,
        background_flush=False, on_redis_error="fallback",
    ) as saver:  # fmt: skip
        saver.setup()
        graph, cfg = two_step_graph(saver), thread_config()
        graph.invoke({"log": ["run1"]}, cfg)  # Redis only: not flushed
        server.stop()
        graph.invoke({"log": ["run2"]}, cfg)  # written through to Postgres
        after_run2 = graph.get_state(cfg)
        server.restart()  # back, with run 1 from its AOF
        assert graph.get_state(cfg).values == after_run2.values
        assert saver.metrics.counter("redis_stale_threads_dropped") == 1
        # run 1 (flushed on the way) and run 2 both continue the thread's root: a fork, reported
        assert saver.metrics.counter("thread_forks") == 1
        assert graph.invoke({"log": ["run3"]}, cfg)["log"] == [*after_run2.values["log"], "run3", "a", "b"]
        ids = {t.checkpoint["id"] for t in saver.list(cfg)}
        assert len(ids) == len(list(graph.get_state_history(cfg)))  # run 1's checkpoints kept too
    with psycopg.connect(test_database_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def test_an_evicted_outbox_is_reported(durable: Any, redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Under an allkeys-* policy Redis may evict a dirty thread's outbox itself: the thread's
    meta remembers that it had unflushed entries, so the flush reports the loss (once)."""
    thread = f"t-{uuid.uuid4().hex[:8]}"
    two_step_graph(durable).invoke({"log": []}, thread_config(thread))
    client = redis.Redis.from_url(redis_url)
    client.delete(K.thread_keys(durable.key_prefix, TEST_TENANT, thread).pend)  # what LRU would do
    client.close()
    caplog.set_level(logging.ERROR, logger="langgraph_tiered_saver")
    (result,) = durable.flush(thread_config(thread))
    assert result.lost == 1 and result.checkpoints == 0
    assert [r for r in caplog.records if "outbox of thread" in r.getMessage()]
    (again,) = durable.flush(thread_config(thread))
    assert again.lost == 0  # reported once
