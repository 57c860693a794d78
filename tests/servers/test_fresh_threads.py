"""Redis vouches for a thread Postgres holds nothing of, from its first write on.

The first read of a new thread asks Postgres, which finds no checkpoint of it in any namespace;
the thread's first write then marks its Redis copy whole (core/fresh_threads.py). A namespace the
thread does not have (a subgraph's first read) is then "none" without a Postgres round trip, and
its history is listed from Redis alone. A thread Postgres holds any of (flushed and gone from
Redis, or only in another namespace) is never vouched for: Postgres keeps answering for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import redis
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver

from langgraph_tiered_saver import FlushPolicy, TieredSaver
from langgraph_tiered_saver._sansio.io import PgCall
from tests.graphs import build_graph, comparable, initial_input
from tests.helpers import QUIET_OFF, thread_config

MANUAL = FlushPolicy(**QUIET_OFF)  # type: ignore[arg-type]


@contextmanager
def postgres_reads(saver: TieredSaver) -> Iterator[list[PgCall]]:
    """The Postgres calls the saver's callers make (reads and flushes) while the block runs."""
    driver = saver._runners.sync
    seen: list[PgCall] = []
    original = driver._pg

    def spy(call: PgCall) -> Any:
        seen.append(call)
        return original(call)

    driver._pg = spy  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        del driver._pg


def _reads(calls: list[PgCall]) -> list[PgCall]:
    """The calls that read (a flush inserts, or calls the insert functions of migrations 10 and 11)."""
    return [c for c in calls if any("lts_get_tuple" in s.sql or "SELECT" in s.sql[:40] for s in c.statements)
            and not any("INSERT" in s.sql or ".lts_insert_" in s.sql for s in c.statements)]  # fmt: skip


def _drop_redis_copy(redis_url: str, saver: TieredSaver, thread: str) -> None:
    """As if the thread's keys expired from Redis (it is flushed)."""
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{saver.key_prefix}:*|{thread}:*", count=1000):
        client.delete(key)
    client.close()


def _subgraph_namespaces(url: str, schema: str, thread: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT DISTINCT checkpoint_ns FROM \"{schema}\".checkpoints WHERE thread_id = %s AND checkpoint_ns <> ''",
            (thread,),
        ).fetchall()
    return [r[0] for r in rows]


def test_a_new_threads_subgraph_reads_are_answered_by_redis(
    saver_context: Callable[..., Any],
) -> None:
    with saver_context(durable=True, flush_policy=MANUAL, background_flush=False) as saver:
        saver.setup()
        cfg = thread_config("fresh-run")
        with postgres_reads(saver) as calls:
            # durability="sync": the root's first put has landed when the subgraph reads (with
            # "async", a subgraph that reads before it may find Redis without the thread yet,
            # and rightly asks Postgres: a second read, seen under load)
            out = build_graph(saver).invoke(initial_input(), cfg, durability="sync")  # to the interrupt
        assert len(_reads(calls)) == 1  # the root's first read: Postgres says the thread is new
        assert saver.metrics.counter("read_absent_redis") >= 1  # the subgraph's first read
        expected = build_graph(InMemorySaver()).invoke(initial_input(), thread_config("fresh-run"))
        assert comparable({k: v for k, v in out.items() if k != "__interrupt__"}) == comparable(
            {k: v for k, v in expected.items() if k != "__interrupt__"}
        )
        with postgres_reads(saver) as calls:
            history = list(saver.list(cfg))
        assert history and not calls  # listed from Redis alone: it holds the whole thread
        saver.flush()
        with postgres_reads(saver) as calls:
            assert [t.config for t in saver.list(cfg)] == [t.config for t in history]
        assert not calls


def test_a_thread_back_from_postgres_reads_its_subgraph_from_postgres(
    saver_context: Callable[..., Any], redis_url: str, test_database_url: str
) -> None:
    with saver_context(durable=True, flush_policy=MANUAL, background_flush=False) as saver:
        saver.setup()
        cfg = thread_config("rewarmed")
        build_graph(saver).invoke(initial_input(), cfg)
        saver.flush()
        (ns,) = _subgraph_namespaces(test_database_url, saver.schema, "rewarmed")
        _drop_redis_copy(redis_url, saver, "rewarmed")
        assert saver.get_tuple(cfg) is not None  # re-warmed: Redis holds the latest again, not all
        vouched = saver.metrics.counter("read_absent_redis")  # the run's own subgraph read, once
        with postgres_reads(saver) as calls:
            found = saver.get_tuple(thread_config("rewarmed", checkpoint_ns=ns))
        assert found is not None and calls  # Postgres answered: Redis never vouched for this copy
        assert saver.metrics.counter("read_absent_redis") == vouched


def test_a_thread_postgres_holds_in_another_namespace_only_is_not_new(
    saver_context: Callable[..., Any], redis_url: str
) -> None:
    with saver_context(durable=True, flush_policy=MANUAL, background_flush=False) as saver:
        saver.setup()
        elsewhere = thread_config("elsewhere", checkpoint_ns="other")
        checkpoint = empty_checkpoint()
        saver.put(elsewhere, checkpoint, {"step": 0}, {})
        saver.flush()
        _drop_redis_copy(redis_url, saver, "elsewhere")
        root = thread_config("elsewhere")
        assert saver.get_tuple(root) is None  # Postgres: no root checkpoint, but the thread exists
        assert len(saver.core.fresh) == 0
        saver.put(root, empty_checkpoint(), {"step": 0}, {})  # Redis holds the root only
        found = saver.get_tuple(elsewhere)
        assert found is not None and found.checkpoint["id"] == checkpoint["id"]
        assert saver.metrics.counter("read_absent_redis") == 0
