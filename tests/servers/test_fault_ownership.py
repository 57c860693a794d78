"""One thread's failing statement is that thread's error (real Redis and Postgres): it never
opens the breaker every tenant shares, and an id Postgres could not index is refused up front."""

from __future__ import annotations

import operator
import random
import time
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

import psycopg
import pytest
from langgraph.graph import END, START, StateGraph

from langgraph_tiered_saver import InvalidIdError, PostgresError
from langgraph_tiered_saver._sansio.io import RedisCall
from langgraph_tiered_saver.durable import sql
from langgraph_tiered_saver.flushing.ops import FlushPolicy
from langgraph_tiered_saver.hot import keys as K
from tests.graphs import chain_graph
from tests.helpers import pg_rows, thread_config, wait_for

MANUAL = FlushPolicy(on_interrupt="off", on_error="off", quiet_seconds=3600, every_n_checkpoints=0, on_close=False)


class S(TypedDict, total=False):
    log: Annotated[list[str], operator.add]


def _nested(name: str, depth: int, checkpointer: Any) -> Any:
    """`depth` levels of subgraphs, every node named `name` (each level repeats it in checkpoint_ns)."""
    graph = StateGraph(S)
    graph.add_node(name, lambda s: {"log": ["inner"]})
    for _ in range(depth):
        graph.add_edge(START, name)
        graph.add_edge(name, END)
        inner = graph.compile()
        graph = StateGraph(S)
        graph.add_node(name, inner)
    graph.add_edge(START, name)
    graph.add_edge(name, END)
    return graph.compile(checkpointer=checkpointer)


def test_a_key_postgres_cannot_index_is_refused_before_either_tier(
    saver_context: Callable[..., Any], redis_url: str, test_database_url: str
) -> None:
    """250 four-byte characters per node name, two subgraph levels: Postgres refused the rows
    with SQLSTATE 54000 at flush time, after Redis had acknowledged the run."""
    rng = random.Random(7)
    name = "".join(chr(0x10000 + rng.randrange(0xFFFF)) for _ in range(250))
    with saver_context(durable=True, background_flush=False, flush_policy=MANUAL) as saver:
        saver.setup()
        cfg = thread_config()
        with pytest.raises(InvalidIdError, match="Postgres can index"):
            _nested(name, 2, saver).invoke({"log": []}, cfg)
        # the levels that fit were written (both tiers), the refused one in neither: the flush
        # of the thread goes through instead of failing on it for ever
        assert all(r.remaining == 0 for r in saver.flush())
        with psycopg.connect(test_database_url) as conn:
            namespaces = {row[0].count("|") for row in conn.execute(
                f'SELECT checkpoint_ns FROM "{saver.schema}".checkpoints WHERE thread_id = %s',
                (cfg["configurable"]["thread_id"],))}  # fmt: skip
        assert 2 not in namespaces and 1 in namespaces  # the deepest level (two '|' in its namespace) refused
        # one level less fits: it works in both tiers
        cfg = thread_config()
        assert _nested(name, 1, saver).invoke({"log": []}, cfg) == {"log": ["inner"]}
        saver.flush()
        assert pg_rows(test_database_url, saver.schema, cfg["configurable"]["thread_id"]) > 0


def test_one_tenants_failing_flush_never_opens_the_breaker_for_another(
    saver_context: Callable[..., Any], test_database_url: str
) -> None:
    """Tenant a's thread is held by a lock (its flushes fail with lock_timeout, SQLSTATE 55P03,
    raised by psycopg as OperationalError); tenant b meanwhile reads and runs turns through
    Postgres as usual, and the breaker never opens."""
    with saver_context(durable=True, tenant_id=None, background_flush=False, flush_policy=MANUAL,
                       pg_lock_timeout=0.3) as saver:  # fmt: skip
        saver.setup()
        a_cfg = thread_config(tenant_id="tenant-a")
        graph = chain_graph(saver, nodes=2)
        graph.invoke({"n": 0}, a_cfg)
        b_threads = [thread_config(tenant_id="tenant-b") for _ in range(3)]
        for cfg in b_threads:
            graph.invoke({"n": 0}, cfg)
            saver.flush(cfg)
        lock_key = sql.thread_lock_keys("tenant-a", [a_cfg["configurable"]["thread_id"]])
        holder = psycopg.connect(test_database_url)
        try:
            holder.execute(sql.LOCK_THREADS_EXCLUSIVE, (sql.thread_lock_class(saver.schema), lock_key))
            failures = 0
            for _ in range(3):
                with pytest.raises(PostgresError) as caught:
                    saver.flush(a_cfg)
                assert caught.value.sqlstate == "55P03"
                failures += 1
                # tenant b: Postgres reads (list merges both tiers) and turns that reach Postgres
                for cfg in b_threads:
                    assert len(list(saver.list(cfg))) >= 4
                    graph.invoke({"n": 1}, cfg)
                    saver.flush(cfg)
            assert failures == 3
            assert saver.metrics.counter("postgres_outages") == 0
            assert saver.metrics.counter("postgres_fast_failures") == 0
        finally:
            holder.close()
        assert saver.flush(a_cfg)[0].checkpoints == 4  # the lock gone, tenant a's thread flushes


def test_a_row_postgres_refuses_as_operational_error_fails_only_its_thread(
    saver_context: Callable[..., Any], test_database_url: str
) -> None:
    """A trigger refuses tenant a's rows with SQLSTATE 54000 (what an index row too large gives;
    psycopg raises it as OperationalError). The background flusher retries that thread and
    quarantines it; tenant b's threads, read after expiring from Redis, flush and read from
    Postgres all along, and the breaker every tenant shares never opens."""
    policy = FlushPolicy(on_interrupt="off", on_error="off", quiet_seconds=0.05, every_n_checkpoints=0,
                         on_close=False, max_attempts=2, retry_backoff=0.05)  # fmt: skip
    with saver_context(durable=True, tenant_id=None, flush_policy=policy) as saver:
        saver.setup()
        with psycopg.connect(test_database_url, autocommit=True) as conn:
            conn.execute(f"""
                CREATE FUNCTION "{saver.schema}".too_large() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    RAISE EXCEPTION 'index row size 3648 exceeds btree version 4 maximum 2704' USING ERRCODE = '54000';
                END $$""")
            conn.execute(f"""CREATE TRIGGER too_large BEFORE INSERT ON "{saver.schema}".checkpoints
                FOR EACH ROW WHEN (NEW.tenant_id = 'tenant-a') EXECUTE FUNCTION "{saver.schema}".too_large()""")
        graph = chain_graph(saver, nodes=2)
        a_cfg = thread_config(tenant_id="tenant-a")
        graph.invoke({"n": 0}, a_cfg)
        b_threads = [thread_config(tenant_id="tenant-b") for _ in range(3)]
        deadline = time.monotonic() + 3.0
        runs = dict.fromkeys(range(len(b_threads)), 0)
        while time.monotonic() < deadline:
            for i, cfg in enumerate(b_threads):
                graph.invoke({"n": 0}, cfg)
                runs[i] += 1
                thread, wanted = cfg["configurable"]["thread_id"], 4 * runs[i]  # each turn flushed
                assert wait_for(lambda t=thread, n=wanted: pg_rows(test_database_url, saver.schema, t) >= n, 5)
                tk = K.thread_keys(saver.key_prefix, "tenant-b", thread)
                saver.run_op(_delete_keys(tk))  # expired from Redis: the next read is Postgres'
                assert graph.get_state(cfg).values["n"] > 0
        health = saver.flusher_health()
        assert health is not None
        assert wait_for(lambda: (a_cfg["configurable"]["thread_id"] in str(saver.flusher_health())), 5)
        assert saver.metrics.counter("postgres_outages") == 0
        assert saver.metrics.counter("postgres_fast_failures") == 0
        with pytest.raises(PostgresError) as caught:
            saver.flush(a_cfg)
        assert caught.value.sqlstate == "54000"


def _delete_keys(keys: Any) -> Any:
    yield RedisCall((("DEL", *keys),))
