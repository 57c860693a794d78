"""A Redis that answers with older copies than Postgres: never trusted, never a fork.

Redis restarted from an RDB snapshot (its default persistence) comes back with the epoch and
every key of the snapshot, so nothing but its run id tells it apart. Each test runs real turns
on a private server, saves a snapshot, runs and flushes more turns, then kills the server and
starts it from the snapshot.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
import redis

from devtools.servers import PrivateRedis
from langgraph_tiered_saver import FlushPolicy, TieredSaver
from tests.graphs import two_step_graph
from tests.helpers import QUIET_OFF, TEST_TENANT, thread_config

MANUAL = FlushPolicy(**QUIET_OFF)  # type: ignore[arg-type]


def _roots(url: str, schema: str, thread: str) -> int:
    """Checkpoints of the thread's root namespace without a parent: 1, or the thread forked."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            f'SELECT count(*) FROM "{schema}".checkpoints WHERE thread_id = %s AND checkpoint_ns = %s '
            "AND parent_checkpoint_id IS NULL", (thread, ""),
        ).fetchone()  # fmt: skip
    assert row is not None
    return int(row[0])


@pytest.fixture
def schema(test_database_url: str) -> Iterator[str]:
    name = f"lts_{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect(test_database_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@contextmanager
def _saver(server: PrivateRedis, url: str, schema: str) -> Iterator[Any]:
    with TieredSaver.from_conn_string(
        server.url, url, tenant_id=TEST_TENANT, schema=schema, flush_policy=MANUAL, background_flush=False,
    ) as saver:  # fmt: skip
        saver.setup()
        yield saver


def _snapshot_then_more_turns(saver: Any, server: PrivateRedis) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Run 1 (flushed), SAVE, run 2 (flushed), a thread born after the snapshot (flushed)."""
    graph, cfg, later = two_step_graph(saver), thread_config(), thread_config()
    graph.invoke({"log": ["turn 1"]}, cfg)
    saver.flush(cfg)
    client = redis.Redis.from_url(server.url)
    client.save()
    client.close()
    graph.invoke({"log": ["turn 2"]}, cfg)
    graph.invoke({"log": ["born later"]}, later)
    saver.flush()
    return cfg, later, graph.get_state(cfg).values


def test_a_redis_restored_from_an_older_snapshot_never_answers_for_newer_postgres(
    make_private_redis: Callable[..., PrivateRedis], test_database_url: str, schema: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    server = make_private_redis()
    with _saver(server, test_database_url, schema) as saver:
        cfg, later, expected = _snapshot_then_more_turns(saver, server)
    server.kill()
    server.start()  # from dump.rdb: turn 1 only, the epoch of before
    caplog.set_level(logging.WARNING, logger="langgraph_tiered_saver")
    with _saver(server, test_database_url, schema) as fresh:  # a new process
        graph = two_step_graph(fresh)
        assert graph.get_state(cfg).values == expected  # never the snapshot's turn 1
        assert graph.get_state(later).values["log"] == ["born later", "a", "b"]  # asked Postgres: not new
        assert fresh.metrics.counter("redis_server_changes") == 1
        assert fresh.metrics.counter("redis_stale_threads") == 1
        assert [r.levelname for r in caplog.records if "older copy of thread" in r.getMessage()] == ["ERROR"]
        out = graph.invoke({"log": ["turn 3"]}, cfg)
        assert out["log"] == [*expected["log"], "turn 3", "a", "b"]
        fresh.flush()
    assert _roots(test_database_url, schema, cfg["configurable"]["thread_id"]) == 1
    assert _roots(test_database_url, schema, later["configurable"]["thread_id"]) == 1


def test_a_running_process_sees_the_restart_before_it_reads_the_old_copy(
    make_private_redis: Callable[..., PrivateRedis], test_database_url: str, schema: str
) -> None:
    """The same process goes on across the restart: the empty script cache (NOSCRIPT) or its
    background check tells it, before the old copy answers."""
    server = make_private_redis()
    with _saver(server, test_database_url, schema) as saver:
        cfg, later, expected = _snapshot_then_more_turns(saver, server)
        server.kill()
        server.start()
        graph = two_step_graph(saver)
        assert graph.get_state(cfg).values == expected
        assert graph.invoke({"log": ["turn 3"]}, cfg)["log"] == [*expected["log"], "turn 3", "a", "b"]
        assert graph.invoke({"log": ["again"]}, later)["log"] == ["born later", "a", "b", "again", "a", "b"]
        saver.flush()
        assert saver.metrics.counter("redis_stale_threads") == 1
    for config in (cfg, later):
        assert _roots(test_database_url, schema, config["configurable"]["thread_id"]) == 1


def test_a_copy_as_new_as_postgres_is_verified_once_and_then_answers_alone(
    make_private_redis: Callable[..., PrivateRedis], test_database_url: str, schema: str
) -> None:
    server = make_private_redis()
    with _saver(server, test_database_url, schema) as saver:
        graph, cfg = two_step_graph(saver), thread_config()
        graph.invoke({"log": ["turn 1"]}, cfg)
        saver.flush(cfg)
        client = redis.Redis.from_url(server.url)
        client.save()
        client.close()
    server.kill()
    server.start()  # the snapshot holds everything Postgres has: nothing is stale
    with _saver(server, test_database_url, schema) as fresh:
        hits = fresh.metrics.counter("read_hits_redis")
        assert fresh.get_tuple(cfg) is not None
        assert fresh.get_tuple(cfg) is not None
        assert fresh.metrics.counter("redis_stale_threads") == 0
        assert fresh.metrics.counter("read_hits_redis") == hits + 2
        assert fresh.metrics.counter("read_hits_postgres") == 0


def test_a_snapshot_marked_whole_is_not_listed_alone_after_the_restore(
    make_private_redis: Callable[..., PrivateRedis], test_database_url: str, schema: str
) -> None:
    """A list marks the thread whole in Redis (Postgres had nothing more); the snapshot keeps the
    mark, Postgres gets newer checkpoints after it: the restored copy is not listed alone."""
    server = make_private_redis()
    with _saver(server, test_database_url, schema) as saver:
        graph, cfg = two_step_graph(saver), thread_config()
        graph.invoke({"log": ["turn 1"]}, cfg)
        saver.flush(cfg)
        assert len(list(saver.list(cfg))) == len(list(saver.list(cfg)))  # the second from Redis alone
        client = redis.Redis.from_url(server.url)
        client.save()
        client.close()
        graph.invoke({"log": ["turn 2"]}, cfg)
        saver.flush()
        expected = [t.config["configurable"]["checkpoint_id"] for t in saver.list(cfg)]
    server.kill()
    server.start()
    with _saver(server, test_database_url, schema) as fresh:
        for _ in range(2):
            assert [t.config["configurable"]["checkpoint_id"] for t in fresh.list(cfg)] == expected
