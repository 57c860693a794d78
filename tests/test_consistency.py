"""Consistency between the tiers under re-warm, expiry, eviction and races (issue 10).

Each test is one reproduction from the issue, against real servers: before the fix it lost or
corrupted a thread silently.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from langgraph.checkpoint.base import empty_checkpoint

from devtools.servers import PrivatePostgres
from langgraph_tiered_saver import FlushPolicy
from langgraph_tiered_saver import flush as flush_module
from langgraph_tiered_saver import keys as K
from tests.graphs import chain_graph, two_step_graph
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
    """Issue 10.1: `get_state` of an old checkpoint after the thread left Redis re-warmed only
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
    """Issue 10.4: the outbox expired with the thread's keys; after Postgres came back the flush
    found nothing and the thread was gone. Now a dirty thread's keys keep no TTL until flushed."""
    pg = make_private_postgres()
    policy = FlushPolicy(quiet_seconds=0.05, every_n_checkpoints=0, on_close=False, retry_backoff=0.1,
                         max_backoff=0.3, max_attempts=1000)  # fmt: skip
    with saver_context(durable=True, postgres_url=pg.url, flush_policy=policy, ttl_seconds=0.5) as saver:
        saver.setup()
        thread = f"t-{uuid.uuid4().hex[:8]}"
        pg.stop()
        expected = chain_graph(saver).invoke({"n": 0}, thread_config(thread))
        time.sleep(1.2)  # more than twice the TTL, with Postgres down
        ttls = _redis_keys(saver, redis_url, thread)
        assert all(ttls[name] == -1 for name in ("idx", "ck", "cv", "bl", "pend")), ttls
        pg.start()
        assert wait_for(lambda: pg_rows(pg.url, saver.schema, thread) == 10, timeout=30)
        assert wait_for(lambda: 0 < _redis_keys(saver, redis_url, thread)["ck"] <= 500, timeout=10)
        assert wait_for(lambda: _redis_keys(saver, redis_url, thread)["ck"] == -2, timeout=5)  # clean: expires
        assert chain_graph(saver).get_state(thread_config(thread)).values == expected


def _put(saver: Any, thread: str, values: dict[str, Any], versions: dict[str, str], new: dict[str, str],
         parent: dict[str, Any] | None = None) -> Any:  # fmt: skip
    cp = empty_checkpoint()
    cp["channel_values"] = values
    cp["channel_versions"] = versions
    return saver.put(parent or thread_config(thread, checkpoint_ns=""), cp, {"source": "loop", "step": 0}, new)


def test_eviction_before_the_flush_is_reported_not_written_half(
    durable: Any, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 10.3: the flusher acknowledged checkpoints whose values LRU had evicted and wrote
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
    """Issue 10.5: an `__interrupt__` write replaced between the flush's read and its
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
