"""An interrupt's flush acknowledges its outbox entries after `invoke` returns (flushing/acks.py):
the interrupt is in Postgres when the caller gets it, the acknowledgement follows from the
background thread, and one never sent costs a second flush of the same rows, not data."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import redis
from langgraph.checkpoint.memory import InMemorySaver

from langgraph_tiered_saver import FlushPolicy
from langgraph_tiered_saver.hot import keys as K
from tests.graphs import build_graph, comparable, initial_input, resume
from tests.helpers import TEST_TENANT


def _interrupted(saver: Any, thread: str | None = None) -> tuple[Any, dict[str, Any]]:
    graph = build_graph(saver)
    config = {"configurable": {"thread_id": thread or f"t-{uuid.uuid4().hex[:8]}"}}
    assert "__interrupt__" in graph.invoke(initial_input(), config)
    return graph, config


def _rows(url: str, schema: str, thread: str) -> tuple[int, int, int, int]:
    """Checkpoints, values and writes of the thread in Postgres, and its interrupt writes."""
    with psycopg.connect(url) as conn:
        counts = [
            conn.execute(f'SELECT count(*) FROM "{schema}".{table} WHERE thread_id = %s', (thread,)).fetchone()[0]  # type: ignore[index]
            for table in ("checkpoints", "checkpoint_blobs", "checkpoint_writes")
        ]
        interrupts = conn.execute(
            f"SELECT count(*) FROM \"{schema}\".checkpoint_writes WHERE thread_id = %s AND channel = '__interrupt__'",
            (thread,),
        ).fetchone()[0]  # type: ignore[index]
    return counts[0], counts[1], counts[2], interrupts


def _settled(client: redis.Redis, saver: Any, thread: str) -> bool:
    """The thread's flush lease is given back and its outbox index mark is gone."""
    prefix = saver.core.flush.prefix
    lease = K.lock_key(prefix, TEST_TENANT, thread, "flush")
    dirty = K.dirty_key(prefix, K.shard_of(TEST_TENANT, thread))
    return not client.exists(lease) and client.zscore(dirty, K.dirty_member(TEST_TENANT, thread)) is None


def test_the_interrupt_is_in_postgres_at_return_and_its_ack_follows(
    saver_context: Callable[..., Any], redis_url: str, test_database_url: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    with saver_context(durable=True, flush_policy=FlushPolicy(on_interrupt="sync")) as saver:
        saver.setup()
        graph, config = _interrupted(saver)
        thread = config["configurable"]["thread_id"]
        assert _rows(test_database_url, saver.schema, thread)[3] == 1  # before anything else ran
        deadline = time.monotonic() + 5
        while not _settled(client, saver, thread):
            assert time.monotonic() < deadline, "the deferred acknowledgement was never sent"
            time.sleep(0.01)
        assert len(saver.core.flush.acks) == 0
        final = graph.invoke(resume("approve"), config)
    memory, memory_config = _interrupted(InMemorySaver(), thread)
    assert comparable(final) == comparable(memory.invoke(resume("approve"), memory_config))
    client.close()


def test_an_ack_never_sent_costs_a_second_flush_of_the_same_rows_not_data(
    saver_context: Callable[..., Any], redis_url: str, test_database_url: str
) -> None:
    """The process dies between the commit and the acknowledgement (here: the pending one is
    dropped): the entries stay, a later flush takes the lease over, writes nothing twice and
    reports no fork, and the thread resumes as it would have."""
    client = redis.Redis.from_url(redis_url)
    policy = FlushPolicy(on_interrupt="sync", takeover_seconds=0.2)
    with saver_context(durable=True, flush_policy=policy, background_flush=False) as saver:
        saver.setup()
        saver.core.flusher = _NoBackground()  # leaves the ack as the background flusher would
        graph, config = _interrupted(saver)
        thread = config["configurable"]["thread_id"]
        before = _rows(test_database_url, saver.schema, thread)
        assert before[3] == 1 and len(saver.core.flush.acks) == 1
        saver.core.flush.acks._take(None)  # never sent
        assert not _settled(client, saver, thread)
        saver.core.flusher = None
        (result,) = saver.flush(config)
        assert result.checkpoints > 0 and not result.forked
        assert _rows(test_database_url, saver.schema, thread) == before
        assert _settled(client, saver, thread) and saver.metrics.counter("thread_forks") == 0
        assert "__interrupt__" not in graph.invoke(resume("approve"), config)
    client.close()


class _NoBackground:
    """A flusher that only takes the wake-up: the pending acknowledgement stays to be looked at."""

    def send_acks_soon(self) -> None:
        pass

    def on_writes(self, tenant_id: str, thread_id: str, urgent: bool) -> None:
        pass

    def on_checkpoint(self, tenant_id: str, thread_id: str) -> None:
        pass

    def stop(self, drain: bool = True) -> list[Any]:
        return []


async def test_an_async_interrupt_leaves_its_ack_to_the_background_thread_too(
    saver_context: Callable[..., Any], redis_url: str, test_database_url: str
) -> None:
    """`ainvoke`: the same flush on the asyncio driver; the acknowledgement it leaves is sent by
    the saver's background thread (on the sync driver), not by the event loop."""
    client = redis.Redis.from_url(redis_url)
    async with saver_context(durable=True, flush_policy=FlushPolicy(on_interrupt="sync")) as saver:
        await saver.asetup()
        graph = build_graph(saver)
        config = {"configurable": {"thread_id": f"t-{uuid.uuid4().hex[:8]}"}}
        assert "__interrupt__" in await graph.ainvoke(initial_input(), config)
        thread = config["configurable"]["thread_id"]
        assert _rows(test_database_url, saver.schema, thread)[3] == 1
        deadline = time.monotonic() + 5
        while not _settled(client, saver, thread):
            assert time.monotonic() < deadline, "the deferred acknowledgement was never sent"
            await asyncio.sleep(0.01)
        assert "__interrupt__" not in await graph.ainvoke(resume("approve"), config)
    client.close()
