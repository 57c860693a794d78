"""A partition forks a thread; the fork is reported, never silent.

Under `on_redis_error="fallback"` a process cut off from Redis writes its turn through to
Postgres, continuing the latest Postgres holds, while another process that still reaches Redis
continues the same checkpoint in the hot tier. Both turns are kept; the flush (or the
write-through) that lands second finds the other and reports the fork: ERROR, `thread_forks`,
and the flusher's health. Time travel (a new turn from an older checkpoint) is not a fork.
A saver with another key prefix that never ran `setup()` cannot flush into the schema.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from langgraph.checkpoint.base import empty_checkpoint

from devtools.servers import free_port
from langgraph_tiered_saver import FlushPolicy, HotTierConflictError, TieredSaver
from tests.graphs import two_step_graph
from tests.helpers import QUIET_OFF, TEST_TENANT, thread_config

MANUAL = FlushPolicy(**QUIET_OFF)  # type: ignore[arg-type]


@contextmanager
def cut_off(reachable: TieredSaver, test_database_url: str) -> Iterator[TieredSaver]:
    """A second process of the same deployment (same key prefix and schema) that cannot reach
    Redis: its Redis URL leads nowhere, so it falls back to Postgres."""
    with TieredSaver.from_conn_string(
        f"redis://127.0.0.1:{free_port()}/0", test_database_url, tenant_id=TEST_TENANT, schema=reachable.schema,
        key_prefix=reachable.key_prefix, flush_policy=MANUAL, background_flush=False, on_redis_error="fallback",
    ) as saver:  # fmt: skip
        yield saver


def _children(url: str, schema: str, thread: str) -> dict[str | None, list[str]]:
    """The thread's checkpoints in Postgres by parent (read as superuser)."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            f'SELECT parent_checkpoint_id, checkpoint_id FROM "{schema}".checkpoints '
            "WHERE thread_id = %s AND checkpoint_ns = '' ORDER BY checkpoint_id", (thread,),
        ).fetchall()  # fmt: skip
    children: dict[str | None, list[str]] = {}
    for parent, checkpoint_id in rows:
        children.setdefault(parent, []).append(checkpoint_id)
    return children


def _forks(children: dict[str | None, list[str]]) -> list[str | None]:
    return [parent for parent, ids in children.items() if len(ids) > 1]


def test_a_sibling_turn_flushed_after_a_write_through_is_reported(
    saver_context: Callable[..., Any], test_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Process A, cut off from Redis, writes turn 2 through; process B, which still reaches
    Redis, runs its own turn 2 from the same turn 1 and flushes it after A's landed."""
    with saver_context(durable=True, flush_policy=MANUAL, background_flush=False) as b:
        b.setup()
        cfg = thread_config()
        thread = cfg["configurable"]["thread_id"]
        two_step_graph(b).invoke({"log": ["turn 1"]}, cfg)
        b.flush()
        turn_1 = b.get_tuple(cfg).checkpoint["id"]
        with cut_off(b, test_database_url) as a:
            assert two_step_graph(a).invoke({"log": ["turn 2 (A)"]}, cfg)["log"][-3:] == ["turn 2 (A)", "a", "b"]
            assert a.metrics.counter("redis_fallbacks") >= 1 and a.metrics.counter("thread_forks") == 0
        two_step_graph(b).invoke({"log": ["turn 2 (B)"]}, cfg)  # from B's Redis copy: turn 1
        with caplog.at_level(logging.ERROR, logger="langgraph_tiered_saver"):
            b.flush()
        children = _children(test_database_url, b.schema, thread)
        assert _forks(children) == [turn_1]  # both turns kept, beside each other
        assert b.metrics.counter("thread_forks") == 1
        (fork,) = b.metrics.recent("thread_forks")
        assert fork[:3] == (TEST_TENANT, thread, "") and fork[3] in children[turn_1]
        assert any("forked" in r.getMessage() and thread in r.getMessage() for r in caplog.records)


def test_a_write_through_that_lands_after_a_sibling_flush_is_reported(
    saver_context: Callable[..., Any], test_database_url: str
) -> None:
    """A reads turn 1 from Postgres; B runs and flushes turn 2; A's write-through of its own
    child of turn 1 then finds Postgres holding a newer checkpoint it never saw."""
    with saver_context(durable=True, flush_policy=MANUAL, background_flush=False) as b:
        b.setup()
        cfg = thread_config()
        thread = cfg["configurable"]["thread_id"]
        two_step_graph(b).invoke({"log": ["turn 1"]}, cfg)
        b.flush()
        with cut_off(b, test_database_url) as a:
            read = a.get_tuple(cfg)
            assert read is not None
            two_step_graph(b).invoke({"log": ["turn 2 (B)"]}, cfg)
            b.flush()
            a.put(read.config, empty_checkpoint(), {"source": "loop", "step": 9, "parents": {}}, {})
            assert a.metrics.counter("thread_forks") == 1
            assert a.metrics.recent("thread_forks")[0][1] == thread
            assert b.metrics.counter("thread_forks") == 0
        assert _forks(_children(test_database_url, b.schema, thread)) == [read.config["configurable"]["checkpoint_id"]]


def test_time_travel_is_not_a_fork(saver_context: Callable[..., Any], test_database_url: str) -> None:
    """A new turn from an older checkpoint, in the hot tier and written through, branches the
    thread as asked: nothing is reported."""
    with saver_context(durable=True, flush_policy=MANUAL, background_flush=False) as b:
        b.setup()
        graph, cfg = two_step_graph(b), thread_config()
        thread = cfg["configurable"]["thread_id"]
        graph.invoke({"log": ["turn 1"]}, cfg)
        graph.invoke({"log": ["turn 2"]}, cfg)
        b.flush()
        old = next(s for s in graph.get_state_history(cfg) if s.values.get("log") == ["turn 1", "a", "b"])
        graph.invoke({"log": ["turn 2 again"]}, old.config)  # time travel in the hot tier
        b.flush()
        with cut_off(b, test_database_url) as a:
            two_step_graph(a).invoke({"log": ["turn 2 once more"]}, old.config)  # and written through
            assert a.metrics.counter("thread_forks") == 0
        graph.invoke({"log": ["turn 3"]}, cfg)
        b.flush()
        assert b.metrics.counter("thread_forks") == 0
        assert len(_children(test_database_url, b.schema, thread)[old.config["configurable"]["checkpoint_id"]]) == 3


def test_another_hot_tier_that_never_ran_setup_cannot_flush_into_the_schema(saver_context: Callable[..., Any]) -> None:
    """Green (a new key prefix) skips setup(), which would have refused it: its flush is
    refused in Postgres' transaction, nothing of it lands, and its turn stays in its outbox."""
    with saver_context(durable=True, key_prefix=None, flush_policy=MANUAL, background_flush=False) as blue:
        blue.setup()
        cfg = thread_config()
        two_step_graph(blue).invoke({"log": ["turn 1"]}, cfg)
        blue.flush()
        turn_1 = len(list(blue.list(cfg)))
        green_context = saver_context(durable=True, schema=blue.schema, flush_policy=MANUAL, background_flush=False)
        with green_context as green:
            two_step_graph(green).invoke({"log": ["turn 2"]}, cfg)
            with pytest.raises(HotTierConflictError, match=blue.key_prefix):
                green.flush()
            assert green.run_op(green.core.flush.outbox_status_op()).depth == 1  # kept, not dropped
            assert len(list(blue.list(cfg))) == turn_1  # blue's turn only
