"""Hot-tier faults (DESIGN contract 10, and the read cascade of contract 5) on private Redis
servers started for the test: Redis killed mid-run with `on_redis_error="fallback"` and
`"raise"`, and LRU eviction under `maxmemory`. The shared servers' lifecycle is never touched."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypedDict

import psycopg
import pytest
import redis
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

from devtools.servers import PrivateRedis
from langgraph_tiered_saver import TieredSaver, TierUnavailableError
from langgraph_tiered_saver.flushing.ops import FlushPolicy
from langgraph_tiered_saver.hot import keys as K
from tests.graphs import chain_graph
from tests.helpers import TEST_TENANT, new_prefix, thread_config

pytestmark = pytest.mark.faults

NODES = 8
KILL_AT = 3  # node3 kills Redis: checkpoints of steps -1..3 reached Redis, steps 4..8 come after
STEPS = NODES + 2  # checkpoints of one run: input, the start, one per node
# Nothing flushes on its own: what Postgres holds is what the test (or a fallback) put there.
NO_AUTO_FLUSH = FlushPolicy(quiet_seconds=3600.0, every_n_checkpoints=0, on_close=False)
TENANT = TEST_TENANT




@contextmanager
def private_saver(redis_url: str, postgres_url: str, **options: Any) -> Iterator[TieredSaver]:
    """A durable saver on the given (private) Redis, with its own schema, dropped afterwards."""
    schema = f"lts_{uuid.uuid4().hex[:10]}"
    prefix = new_prefix()
    try:
        with TieredSaver.from_conn_string(redis_url, postgres_url, tenant_id=TEST_TENANT, key_prefix=prefix, schema=schema, **options) as saver:
            saver.setup()
            yield saver
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def pg_count(url: str, schema: str, thread: str, table: str = "checkpoints") -> int:
    """Rows of one thread in a durable table, read as the test's (superuser) role."""
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(  # type: ignore[index]
            f'SELECT count(*) FROM "{schema}".{table} WHERE thread_id = %s', (thread,)
        ).fetchone()[0]


def pg_steps(url: str, schema: str, thread: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            f'SELECT step FROM "{schema}".checkpoints WHERE thread_id = %s ORDER BY checkpoint_id', (thread,)
        ).fetchall()
    return [r[0] for r in rows]


def pg_snapshot(url: str, schema: str, thread: str) -> dict[str, int]:
    return {t: pg_count(url, schema, thread, t) for t in ("checkpoints", "checkpoint_blobs", "checkpoint_writes")}


def hot_keys(saver: TieredSaver, url: str, thread: str) -> dict[str, bool]:
    """Which of the thread's nine Redis keys exist."""
    client = redis.Redis.from_url(url)
    try:
        names = K.THREAD_KEY_NAMES
        keys = K.thread_keys(saver.key_prefix, TENANT, thread)
        return {name: bool(client.exists(key)) for name, key in zip(names, keys, strict=True)}
    finally:
        client.close()






def expected_after(runs: int) -> dict[str, Any]:
    graph, cfg = chain_graph(InMemorySaver()), thread_config("expected")
    for _ in range(runs):
        graph.invoke({"n": 0}, cfg)
    return graph.get_state(cfg).values  # type: ignore[no-any-return]


def killer(saver: TieredSaver, server: PrivateRedis, thread: str, *, flush_first: bool) -> Callable[[int], None]:
    """Inside node KILL_AT (once): optionally flush the thread, then SIGKILL Redis."""
    done: list[bool] = []

    def on_node(i: int) -> None:
        if i == KILL_AT and not done:
            done.append(True)
            if flush_first:
                # The private Redis keeps no AOF/RDB: what it holds dies with it. Flushing first
                # makes the steps before the kill durable, so the test sees exactly what the
                # fallback path wrote.
                saver.flush(thread_config(thread))
            server.kill()

    return on_node


# ---------------------------------------------------------------- Redis killed mid-run


def test_redis_killed_mid_run_falls_back_to_postgres(
    make_private_redis: Callable[..., PrivateRedis], test_database_url: str
) -> None:
    server = make_private_redis()
    thread = f"t-{uuid.uuid4().hex[:8]}"
    cfg = thread_config(thread)
    with private_saver(server.url, test_database_url, on_redis_error="fallback", flush_policy=NO_AUTO_FLUSH) as saver:
        graph = chain_graph(saver, on_node=killer(saver, server, thread, flush_first=True))
        result = graph.invoke({"n": 0}, cfg, durability="sync")
        assert server.pid is None  # Redis really is down
        assert result["n"] == NODES
        assert saver.metrics.counter("redis_fallbacks") > 0
        assert saver.metrics.counter("write_through_rows") > 0
        # Every checkpoint of the run is in Postgres: steps -1..3 flushed before the kill,
        # 4..8 written through while Redis was down.
        assert pg_count(test_database_url, saver.schema, thread) == STEPS
        assert sorted(pg_steps(test_database_url, saver.schema, thread)) == list(range(-1, NODES + 1))
        # ... and the writes of the node that ran while Redis died.
        assert pg_count(test_database_url, saver.schema, thread, "checkpoint_writes") >= NODES

        # Reads fall back too: the state comes from Postgres while Redis is down.
        state = graph.get_state(cfg)
        assert state.values == expected_after(1)
        assert state.next == ()
        assert len(list(graph.get_state_history(cfg))) == STEPS

        # Redis back (empty: no persistence): the hot path resumes.
        server.start()
        fallbacks = saver.metrics.counter("redis_fallbacks")
        assert not any(hot_keys(saver, server.url, thread).values())
        assert chain_graph(saver).invoke({"n": 0}, cfg, durability="sync")["n"] == 2 * NODES
        assert saver.metrics.counter("redis_fallbacks") == fallbacks
        hot = hot_keys(saver, server.url, thread)
        assert hot["idx"] and hot["ck"] and hot["bl"], hot
        client = redis.Redis.from_url(server.url)
        try:
            # the second run's checkpoints are hot (plus the one re-warmed from Postgres)
            idx = K.thread_keys(saver.key_prefix, TENANT, thread).idx
            assert client.zcard(idx) >= STEPS
        finally:
            client.close()
        assert graph.get_state(cfg).values == expected_after(2)


def test_redis_killed_with_aof_loses_nothing_after_restart(
    make_private_redis: Callable[..., PrivateRedis], test_database_url: str
) -> None:
    """No flush before the kill: the steps before it live only in Redis (its outbox included).
    With AOF on they survive the crash; after the restart a flush completes Postgres."""
    server = make_private_redis("--appendonly", "yes", "--appendfsync", "always")
    thread = f"t-{uuid.uuid4().hex[:8]}"
    cfg = thread_config(thread)
    with private_saver(server.url, test_database_url, on_redis_error="fallback", flush_policy=NO_AUTO_FLUSH) as saver:
        graph = chain_graph(saver, on_node=killer(saver, server, thread, flush_first=False))
        assert graph.invoke({"n": 0}, cfg, durability="sync")["n"] == NODES
        # Written through while Redis was down: the checkpoints after the kill.
        assert sorted(pg_steps(test_database_url, saver.schema, thread)) == list(range(KILL_AT + 1, NODES + 1))
        server.start()
        saver.flush()
        assert sorted(pg_steps(test_database_url, saver.schema, thread)) == list(range(-1, NODES + 1))
        assert saver.run_op(saver.core.flush.outbox_status_op()).depth == 0
        # Postgres alone restores the final state.
        saver.run_op(saver.core.hot.delete_thread_op(saver.tenant_id, [thread]))
        assert graph.get_state(cfg).values == expected_after(1)
        assert saver.metrics.counter("read_hits_postgres") > 0


def test_redis_killed_mid_run_raises(make_private_redis: Callable[..., PrivateRedis], test_database_url: str) -> None:
    server = make_private_redis()
    thread = f"t-{uuid.uuid4().hex[:8]}"
    cfg = thread_config(thread)
    with private_saver(server.url, test_database_url, on_redis_error="raise", flush_policy=NO_AUTO_FLUSH) as saver:
        at_kill: dict[str, int] = {}
        kill = killer(saver, server, thread, flush_first=True)

        def on_node(i: int) -> None:
            kill(i)
            if i == KILL_AT and not at_kill:
                at_kill.update(pg_snapshot(test_database_url, saver.schema, thread))

        with pytest.raises(TierUnavailableError) as info:
            chain_graph(saver, on_node=on_node).invoke({"n": 0}, cfg, durability="sync")
        assert info.value.tier == "redis"
        assert server.pid is None
        # Postgres holds what was flushed before the failure (steps -1..3) and nothing after it:
        # no row of the failed write, no write-through.
        assert at_kill["checkpoints"] == KILL_AT + 2
        assert pg_snapshot(test_database_url, saver.schema, thread) == at_kill
        assert sorted(pg_steps(test_database_url, saver.schema, thread)) == list(range(-1, KILL_AT + 1))
        assert saver.metrics.counter("redis_fallbacks") == 0
        assert saver.metrics.counter("write_through_rows") == 0
        # reads raise too (no silent answer from one tier)
        with pytest.raises(TierUnavailableError):
            saver.get_tuple(cfg)
        server.start()
        # Redis back, empty: the thread resumes from Postgres at the last durable step.
        state = chain_graph(saver).get_state(cfg)
        assert state.values["n"] == KILL_AT
        assert state.next == (f"node{KILL_AT}",)


# ---------------------------------------------------------------- eviction


class Payload(TypedDict, total=False):
    payload: bytes


def filler_graph(checkpointer: Any) -> Any:
    """One node writing ~100 KB of incompressible bytes (under the blob-offload threshold)."""
    g = StateGraph(Payload)
    g.add_node("fill", lambda s: {"payload": os.urandom(100_000)})
    g.add_edge(START, "fill")
    g.add_edge("fill", END)
    return g.compile(checkpointer=checkpointer)


def test_evicted_thread_is_read_from_postgres(
    make_private_redis: Callable[..., PrivateRedis], test_database_url: str
) -> None:
    # volatile-lru, as the README asks: only flushed (clean) threads carry a TTL and are evicted
    server = make_private_redis("--maxmemory", "4mb", "--maxmemory-policy", "volatile-lru")
    thread = f"t-{uuid.uuid4().hex[:8]}"
    cfg = thread_config(thread)
    with private_saver(server.url, test_database_url, flush_policy=NO_AUTO_FLUSH) as saver:
        graph = chain_graph(saver)
        graph.invoke({"n": 0}, cfg)
        saver.flush(cfg)
        assert pg_count(test_database_url, saver.schema, thread) == STEPS
        before = graph.get_state(cfg)
        assert all(hot_keys(saver, server.url, thread)[name] for name in ("idx", "ck", "cv", "bl"))

        client = redis.Redis.from_url(server.url)
        try:
            filler = filler_graph(saver)
            for i in range(80):
                filler.invoke({"payload": b""}, thread_config(f"filler-{i}"))
                saver.flush(thread_config(f"filler-{i}"))  # clean: now it may be evicted too
                if i >= 20 and not any(hot_keys(saver, server.url, thread).values()):
                    break
            evicted = [name for name, present in hot_keys(saver, server.url, thread).items() if not present]
            assert evicted, "nothing of the thread was evicted"
            assert int(client.info("stats")["evicted_keys"]) > 0
            assert client.dbsize() > 0
        finally:
            client.close()

        hits = saver.metrics.counter("read_hits_postgres")
        after = graph.get_state(cfg)
        assert after.values == before.values
        assert after.config["configurable"]["checkpoint_id"] == before.config["configurable"]["checkpoint_id"]
        assert saver.metrics.counter("read_hits_postgres") > hits
        # and the thread continues from there
        assert graph.invoke({"n": 0}, cfg)["n"] == 2 * NODES
        assert graph.get_state(cfg).values == expected_after(2)


@pytest.mark.parametrize("lost", ["idx", "ck", "cv", "bl", "wi", "wr"])
def test_one_evicted_key_is_read_from_postgres(
    lost: str, make_private_redis: Callable[..., PrivateRedis], test_database_url: str
) -> None:
    """`allkeys-lru` evicts keys one by one, so any single key of a thread can vanish while the
    others stay: every such partial loss must be answered from Postgres, never as a silently
    smaller state. (DEL of one key stands in for the eviction, deterministically.)"""
    server = make_private_redis()
    thread = f"t-{uuid.uuid4().hex[:8]}"
    cfg = thread_config(thread)
    with private_saver(server.url, test_database_url, flush_policy=NO_AUTO_FLUSH) as saver:
        flaky = {"fail": True}

        def on_node(i: int) -> None:
            # node2 fails once: its error is a pending write of the latest checkpoint, so the
            # `wi`/`wr` keys hold something a reader must not lose.
            if i == 2 and flaky["fail"]:
                flaky["fail"] = False
                raise ValueError("node2 failed")

        graph = chain_graph(saver, on_node=on_node)
        with pytest.raises(ValueError):
            graph.invoke({"n": 0}, cfg)
        saver.flush(cfg)
        before = graph.get_state(cfg)
        before_writes = [(w[0], w[1]) for w in saver.get_tuple(cfg).pending_writes]  # type: ignore[union-attr]
        assert ("__error__" in {channel for _, channel in before_writes}), before_writes
        assert hot_keys(saver, server.url, thread)[lost]
        client = redis.Redis.from_url(server.url)
        try:
            client.delete(K.thread_keys(saver.key_prefix, TENANT, thread)._asdict()[lost])
        finally:
            client.close()
        after = graph.get_state(cfg)
        assert after.values == before.values
        assert after.next == before.next == ("node2",)
        assert [t.error for t in after.tasks] == [t.error for t in before.tasks]
        assert [(w[0], w[1]) for w in saver.get_tuple(cfg).pending_writes] == before_writes  # type: ignore[union-attr]
        # resuming (None input) retries node2 and finishes the run as if nothing was lost
        assert graph.invoke(None, cfg)["n"] == NODES
        assert graph.get_state(cfg).values == expected_after(1)
