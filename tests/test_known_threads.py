"""A new thread's first read asks Postgres nothing, and a thread Postgres holds is never taken
for a new one (known.py), on real servers: expiry, a registry lost or predating the feature,
Redis losing data, a write-through by another process, deletion and copies."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import redis

from devtools.servers import PrivateRedis
from langgraph_tiered_saver import FlushPolicy, TieredSaver
from langgraph_tiered_saver import keys as K
from tests.graphs import chain_graph
from tests.helpers import QUIET_OFF, TEST_TENANT, thread_config, wait_for


class PgCounter:
    """Counts the Postgres transactions a saver's sync driver runs for its callers (not for
    its own background threads: the registry's poll is off the hot path)."""

    def __init__(self, saver: TieredSaver) -> None:
        self.calls = 0
        driver = saver._sync
        inner = driver._pg

        def counted(call: Any) -> Any:
            if not threading.current_thread().name.startswith("tiered-saver-"):
                self.calls += 1
            return inner(call)

        driver._pg = counted  # type: ignore[method-assign]


@pytest.fixture
def known_saver(saver_context: Callable[..., Any]) -> Iterator[TieredSaver]:
    with saver_context(durable=True, flush_policy=_policy()) as saver:
        saver.setup()
        saver.core.hot.known._warden = None  # the tests poll and rebuild by hand (no race with it)
        yield saver


def _policy() -> FlushPolicy:
    return FlushPolicy(**QUIET_OFF)


def _poll(saver: TieredSaver) -> None:
    saver.run_op(saver.core.hot.known.poll_op())


def _rebuild(saver: TieredSaver) -> bool:
    return bool(saver.run_op(saver.core.hot.known.rebuild_op(TEST_TENANT)))


def _raw(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def _flushed_thread(saver: TieredSaver) -> dict[str, Any]:
    """A thread run and flushed, then expired from Redis (its keys gone, its registry entry kept)."""
    config = thread_config()
    chain_graph(saver, nodes=3).invoke({"n": 0}, config)
    saver.flush(config)
    thread_id = config["configurable"]["thread_id"]
    assert saver._sync.redis is not None
    saver._sync.redis.delete(*K.thread_keys(saver.key_prefix, TEST_TENANT, thread_id))
    return config


def test_a_new_thread_runs_without_a_postgres_round_trip(known_saver: TieredSaver) -> None:
    _poll(known_saver)
    assert _rebuild(known_saver)  # the tenant's registry: complete (Postgres holds none of it)
    counter = PgCounter(known_saver)
    config = thread_config()
    graph = chain_graph(known_saver, nodes=4)
    assert graph.invoke({"n": 0}, config)["n"] == 4
    assert counter.calls == 0
    assert known_saver.metrics.counter("read_misses_new") >= 1
    # a subgraph-like read of another namespace of a thread born in Redis: still none
    assert known_saver.get_tuple({"configurable": {**config["configurable"], "checkpoint_ns": "child:1"}}) is None
    assert counter.calls == 0


def test_an_expired_thread_is_read_back_from_postgres(known_saver: TieredSaver) -> None:
    _poll(known_saver)
    _rebuild(known_saver)
    config = _flushed_thread(known_saver)
    counter = PgCounter(known_saver)
    state = chain_graph(known_saver, nodes=3).get_state(config)
    assert state.values["n"] == 3
    assert counter.calls >= 1
    assert known_saver.metrics.counter("read_misses_cold") >= 1


def test_a_registry_lost_or_older_than_the_feature_is_rebuilt_from_postgres(
    known_saver: TieredSaver, redis_url: str
) -> None:
    config = _flushed_thread(known_saver)
    client = _raw(redis_url)
    client.delete(*K.tenant_threads_keys(known_saver.key_prefix, TEST_TENANT), *_known_keys(known_saver))
    _poll(known_saver)
    graph = chain_graph(known_saver, nodes=3)
    assert graph.get_state(config).values["n"] == 3  # "incomplete": asked Postgres
    assert known_saver.metrics.counter("read_misses_incomplete") == 1
    assert _rebuild(known_saver)
    client.delete(*K.thread_keys(known_saver.key_prefix, TEST_TENANT, config["configurable"]["thread_id"]))
    assert graph.get_state(config).values["n"] == 3  # registered again by the rebuild: "cold"
    assert known_saver.metrics.counter("read_misses_cold") == 1
    counter = PgCounter(known_saver)
    assert known_saver.get_tuple(thread_config()) is None
    assert counter.calls == 0


def test_the_background_thread_polls_and_rebuilds_by_itself(known_saver: TieredSaver, redis_url: str) -> None:
    known = known_saver.core.hot.known
    config = _flushed_thread(known_saver)
    # this test is about the background thread: attached only now, so no rebuild the run above
    # asked for can land between the deletion below and the counter it reads (a rebuild reads
    # and marks all 1024 shards: a window wide enough to hit)
    known.attach(known_saver.run_op)
    known.poll_seconds = 0.05
    rebuilds = known_saver.metrics.counter("registry_rebuilds")
    _raw(redis_url).delete(*_known_keys(known_saver))
    assert known_saver.get_tuple(thread_config()) is None  # "incomplete": a rebuild is asked
    assert wait_for(lambda: known_saver.metrics.counter("registry_rebuilds") > rebuilds)
    assert wait_for(known.trusted)
    counter = PgCounter(known_saver)
    assert known_saver.get_tuple(thread_config()) is None
    assert counter.calls == 0
    assert known_saver.get_tuple(config) is not None  # the flushed thread: still found


def test_redis_losing_data_makes_every_miss_ask_postgres(known_saver: TieredSaver, redis_url: str) -> None:
    _poll(known_saver)
    _rebuild(known_saver)
    config = _flushed_thread(known_saver)
    client = _raw(redis_url)
    # what a restart without persistence leaves: none of the deployment's keys
    client.delete(*client.keys(f"{known_saver.key_prefix}:*"))
    _poll(known_saver)
    new_before = known_saver.metrics.counter("read_misses_new")
    assert chain_graph(known_saver, nodes=3).get_state(config).values["n"] == 3
    assert known_saver.metrics.counter("read_misses_new") == new_before
    assert known_saver.metrics.counter("read_misses_incomplete") == 1


def test_a_write_through_by_another_process_is_never_taken_for_a_new_thread(
    known_saver: TieredSaver, make_private_redis: Callable[..., PrivateRedis], test_database_url: str
) -> None:
    _poll(known_saver)
    _rebuild(known_saver)
    # another process, whose Redis is down, writes a new thread straight to Postgres
    down = make_private_redis()
    down.stop()
    with TieredSaver.from_conn_string(
        down.url, test_database_url, tenant_id=TEST_TENANT, schema=known_saver.schema,
        key_prefix=known_saver.key_prefix, on_redis_error="fallback", flush_policy=_policy(),
    ) as other:  # fmt: skip
        config = thread_config()
        chain_graph(other, nodes=3).invoke({"n": 0}, config)
        assert other.metrics.counter("write_through_rows") > 0
    _poll(known_saver)  # the count moved: the registry is no longer complete
    assert known_saver.metrics.counter("write_throughs_seen") == 1
    assert chain_graph(known_saver, nodes=3).get_state(config).values["n"] == 3
    assert known_saver.metrics.counter("read_misses_new") == 0
    assert known_saver.metrics.counter("read_misses_incomplete") == 1
    assert _rebuild(known_saver)  # Postgres' threads, the written-through one among them


def test_a_deleted_thread_starts_anew_and_a_copy_of_a_cold_thread_is_found(known_saver: TieredSaver) -> None:
    _poll(known_saver)
    _rebuild(known_saver)
    config = _flushed_thread(known_saver)
    target = thread_config()
    known_saver.copy_thread(config["configurable"]["thread_id"], target["configurable"]["thread_id"])
    graph = chain_graph(known_saver, nodes=3)
    assert graph.get_state(target).values["n"] == 3
    known_saver.delete_thread(config["configurable"]["thread_id"])
    counter = PgCounter(known_saver)
    assert known_saver.get_tuple(config) is None
    assert counter.calls == 0  # unregistered after Postgres dropped it: known to be new


def test_the_background_thread_survives_failures_and_trust_lapses_meanwhile(known_saver: TieredSaver) -> None:
    known = known_saver.core.hot.known
    known.attach(known_saver.run_op)  # this test is about the background thread
    known.poll_seconds, known.trust_seconds = 0.05, 0.15
    driver = known_saver._sync
    working = driver._pg
    failing = {"on": False}

    def pg(call: Any) -> Any:
        if failing["on"] and threading.current_thread().name == "tiered-saver-known-threads":
            raise RuntimeError("Postgres said no")
        return working(call)

    driver._pg = pg  # type: ignore[method-assign]
    assert known_saver.get_tuple(thread_config()) is None  # starts the thread
    assert wait_for(known.trusted)
    failing["on"] = True
    errors = known_saver.metrics.counter("known_threads_errors")
    assert wait_for(lambda: known_saver.metrics.counter("known_threads_errors") >= errors + 3)
    assert wait_for(lambda: not known.trusted())  # no poll: no trust, misses ask Postgres
    assert known._warden is not None and known._warden._thread is not None and known._warden._thread.is_alive()
    failing["on"] = False
    assert wait_for(known.trusted)  # back by itself


def _known_keys(saver: TieredSaver) -> list[str]:
    """The tenant's known marks, one per shard (keys.py)."""
    return [K.known_key(saver.key_prefix, TEST_TENANT, shard) for shard in range(K.SHARDS)]


def test_the_process_that_wrote_a_thread_through_never_takes_it_for_new(
    make_private_redis: Callable[..., PrivateRedis], test_database_url: str
) -> None:
    """Redis stops, a new thread is written through to Postgres, Redis comes back (AOF) with a
    registry marked complete that lacks it: the writer must not read it as new before its next
    poll has carried the write-through count into Redis (found by the model-based test)."""
    server = make_private_redis("--appendonly", "yes", "--appendfsync", "always")
    schema = f"lts_{uuid.uuid4().hex[:10]}"
    with TieredSaver.from_conn_string(
        server.url, test_database_url, tenant_id=TEST_TENANT, schema=schema, flush_policy=_policy(),
        on_redis_error="fallback",
    ) as saver:  # fmt: skip
        saver.setup()
        saver.core.hot.known._warden = None  # no poll but the test's own
        _poll(saver)
        assert _rebuild(saver)
        config = thread_config()
        server.stop()
        chain_graph(saver, nodes=3).invoke({"n": 0}, config)
        assert saver.metrics.counter("write_through_rows") > 0
        server.start()
        assert saver.get_tuple(config) is not None  # before: None (taken for a new thread)
        assert chain_graph(saver, nodes=3).get_state(config).values["n"] == 3
        assert saver.metrics.counter("read_misses_new") == 0
        _poll(saver)  # carries the count into Redis; the marks' token moved
        assert saver.core.hot.known.trusted()
        assert saver.metrics.counter("write_throughs_seen") == 1
    with psycopg.connect(test_database_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
