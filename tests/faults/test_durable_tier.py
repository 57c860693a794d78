"""The durable tier end to end: flush triggers, crash before flush, Redis wiped, Postgres down,
transaction counts. Fault tests run on private servers started by the harness."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from langgraph.checkpoint.memory import InMemorySaver

from devtools.servers import PrivatePostgres, PrivateRedis
from langgraph_tiered_saver import TieredSaver, TierUnavailableError
from langgraph_tiered_saver.flushing.ops import FlushPolicy, OutboxStatus
from tests.graphs import build_graph, chain_graph, comparable, initial_input, resume
from tests.helpers import QUIET_OFF, TEST_TENANT, ManualClock, pg_rows, thread_config, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))












# ---------------------------------------------------------------- policy: one test per trigger



def test_no_trigger_means_no_postgres_io(saver_context: Callable[..., Any], test_database_url: str) -> None:
    clock = ManualClock()
    with saver_context(durable=True, flush_policy=FlushPolicy(**QUIET_OFF), clock=clock) as saver:  # type: ignore[arg-type]
        saver.setup()
        thread = f"t-{uuid.uuid4().hex[:8]}"
        chain_graph(saver).invoke({"n": 0}, thread_config(thread))
        clock.advance(QUIET_OFF["quiet_seconds"] - 1, saver.core.scheduler)  # every turn due until then ran
        assert pg_rows(test_database_url, saver.schema, thread) == 0
        assert len(list(saver.list(thread_config(thread)))) == 10
        clock.advance(2, saver.core.scheduler)  # quiet for longer than quiet_seconds: flushed
        assert pg_rows(test_database_url, saver.schema, thread) == 10


def test_quiet_thread_is_flushed_after_the_run(saver_context: Callable[..., Any], test_database_url: str) -> None:
    policy = FlushPolicy(quiet_seconds=0.3, every_n_checkpoints=0, on_close=False)
    with saver_context(durable=True, flush_policy=policy) as saver:
        saver.setup()
        thread = f"t-{uuid.uuid4().hex[:8]}"
        chain_graph(saver).invoke({"n": 0}, thread_config(thread))
        assert wait_for(lambda: pg_rows(test_database_url, saver.schema, thread) == 10)
        assert pg_rows(test_database_url, saver.schema, thread, "checkpoint_writes") > 0
        # flush lag: from the thread's last write to its commit, at least the quiet interval
        assert wait_for(lambda: "flush_lag_seconds" in saver.metrics.snapshot()["latency"])
        lag = saver.metrics.snapshot()["latency"]["flush_lag_seconds"]
        assert 0.29 <= lag["p50"] < 10.0, lag


def test_outbox_status_reports_depth_and_age(saver_context: Callable[..., Any]) -> None:
    with saver_context(durable=True, background_flush=False, flush_policy=FlushPolicy(**QUIET_OFF)) as saver:  # type: ignore[arg-type]
        saver.setup()
        assert saver.run_op(saver.core.flush.outbox_status_op()) == OutboxStatus(0, 0.0)
        thread = f"t-{uuid.uuid4().hex[:8]}"
        chain_graph(saver).invoke({"n": 0}, thread_config(thread))
        time.sleep(0.3)
        status = saver.run_op(saver.core.flush.outbox_status_op())
        assert status.depth == 1 and 0.29 <= status.oldest_seconds < 10.0, status
        (result,) = saver.flush(thread_config(thread))
        assert result.lag_seconds is not None and result.lag_seconds >= 0.29
        assert saver.run_op(saver.core.flush.outbox_status_op()) == OutboxStatus(0, 0.0)


def test_interrupt_is_durable_before_the_graph_returns(saver_context: Callable[..., Any], test_database_url: str) -> None:
    with saver_context(durable=True, flush_policy=FlushPolicy(**QUIET_OFF)) as saver:  # type: ignore[arg-type]
        saver.setup()
        thread = f"t-{uuid.uuid4().hex[:8]}"
        result = build_graph(saver).invoke(initial_input(), thread_config(thread))
        assert "__interrupt__" in result
        # No waiting: the interrupt write was flushed synchronously, with its checkpoint.
        with psycopg.connect(test_database_url, autocommit=True) as conn:
            kinds = conn.execute(
                f'SELECT channel FROM "{saver.schema}".checkpoint_writes WHERE thread_id = %s',
                (thread,),
            ).fetchall()
        assert ("__interrupt__",) in kinds
        latest = saver.get_tuple(thread_config(thread))
        assert latest is not None
        assert pg_rows(test_database_url, saver.schema, thread) == len(list(saver.list(thread_config(thread))))


def test_interrupt_flush_waits_for_its_checkpoint_put(saver_context: Callable[..., Any], test_database_url: str) -> None:
    """LangGraph may deliver a step's interrupt write before the put of the step's checkpoint
    (both run on background threads): the synchronous flush waits for that put."""
    from langgraph.checkpoint.base import empty_checkpoint

    with saver_context(durable=True, background_flush=False, flush_policy=FlushPolicy(**QUIET_OFF)) as saver:  # type: ignore[arg-type]
        saver.setup()
        thread = f"t-{uuid.uuid4().hex[:8]}"
        checkpoint = empty_checkpoint()
        config = {"configurable": {"thread_id": thread, "checkpoint_ns": "", "checkpoint_id": checkpoint["id"]}}
        late_put = threading.Timer(
            0.2, saver.put, ({"configurable": {"thread_id": thread, "checkpoint_ns": ""}}, checkpoint,
                             {"source": "loop", "step": 0, "parents": {}}, {})
        )  # fmt: skip
        late_put.start()
        started = time.monotonic()
        saver.put_writes(config, [("__interrupt__", "approve?")], "task-1")  # type: ignore[arg-type]
        late_put.join()
        assert time.monotonic() - started >= 0.15  # it waited for the put
        assert pg_rows(test_database_url, saver.schema, thread) == 1
        assert pg_rows(test_database_url, saver.schema, thread, "checkpoint_writes") == 1


def test_error_write_triggers_a_flush(saver_context: Callable[..., Any], test_database_url: str) -> None:
    with saver_context(durable=True, flush_policy=FlushPolicy(**QUIET_OFF)) as saver:  # type: ignore[arg-type]
        saver.setup()
        thread = f"t-{uuid.uuid4().hex[:8]}"
        with pytest.raises(ValueError):
            chain_graph(saver, fail_at=3).invoke({"n": 0}, thread_config(thread))
        assert wait_for(lambda: pg_rows(test_database_url, saver.schema, thread, "checkpoint_writes") > 0)
        with psycopg.connect(test_database_url, autocommit=True) as conn:
            channels = {r[0] for r in conn.execute(
                f'SELECT channel FROM "{saver.schema}".checkpoint_writes WHERE thread_id = %s', (thread,)
            )}
        assert "__error__" in channels


def test_every_n_checkpoints(saver_context: Callable[..., Any], test_database_url: str) -> None:
    policy = FlushPolicy(quiet_seconds=3600.0, every_n_checkpoints=4, on_close=False)
    clock = ManualClock()
    with saver_context(durable=True, flush_policy=policy, clock=clock) as saver:
        saver.setup()
        thread = f"t-{uuid.uuid4().hex[:8]}"
        chain_graph(saver, nodes=2).invoke({"n": 0}, thread_config(thread))  # 4 checkpoints
        assert wait_for(lambda: pg_rows(test_database_url, saver.schema, thread) == 4)
        other = f"t-{uuid.uuid4().hex[:8]}"
        chain_graph(saver, nodes=1).invoke({"n": 0}, thread_config(other))  # 3 checkpoints: below N
        clock.advance(60, saver.core.scheduler)  # every turn due within a minute ran
        assert pg_rows(test_database_url, saver.schema, other) == 0


def test_explicit_flush_and_close(saver_context: Callable[..., Any], test_database_url: str) -> None:
    policy = FlushPolicy(quiet_seconds=3600.0, every_n_checkpoints=0, on_close=True)
    thread_a, thread_b = f"t-{uuid.uuid4().hex[:8]}", f"t-{uuid.uuid4().hex[:8]}"
    with saver_context(durable=True, flush_policy=policy) as saver:
        saver.setup()
        schema = saver.schema
        chain_graph(saver).invoke({"n": 0}, thread_config(thread_a))
        chain_graph(saver).invoke({"n": 0}, thread_config(thread_b))
        results = saver.flush(thread_config(thread_a))
        assert [r.checkpoints for r in results] == [10]
        assert pg_rows(test_database_url, schema, thread_a) == 10
        assert pg_rows(test_database_url, schema, thread_b) == 0
    assert pg_rows(test_database_url, schema, thread_b) == 10  # drained on close


async def test_async_flush_and_close(saver_context: Callable[..., Any], test_database_url: str) -> None:
    policy = FlushPolicy(quiet_seconds=3600.0, every_n_checkpoints=0, on_close=True)
    thread = f"t-{uuid.uuid4().hex[:8]}"
    async with saver_context(durable=True, flush_policy=policy) as saver:
        await saver.asetup()
        schema = saver.schema
        await chain_graph(saver).ainvoke({"n": 0}, thread_config(thread))
        assert pg_rows(test_database_url, schema, thread) == 0
        await saver.aflush()
        assert pg_rows(test_database_url, schema, thread) == 10
        await chain_graph(saver).ainvoke({"n": 0}, thread_config(thread))
    assert pg_rows(test_database_url, schema, thread) == 20


# ---------------------------------------------------------------- faults


def test_crash_before_flush_loses_nothing(saver_context: Callable[..., Any], redis_url: str, test_database_url: str) -> None:
    """A process SIGKILLed after its hot writes and before any flush: the worker command flushes
    its outbox later, and Postgres alone then restores the same state."""
    thread = f"t-{uuid.uuid4().hex[:8]}"
    with saver_context(durable=True, flush_policy=FlushPolicy(**QUIET_OFF)) as saver:  # type: ignore[arg-type]
        saver.setup()
        proc = subprocess.run(
            [sys.executable, "-m", "tests.crash_child", redis_url, test_database_url, saver.schema, saver.key_prefix, thread],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == -9, proc.stderr
        written = int(proc.stdout.strip())
        assert written > 5
        assert pg_rows(test_database_url, saver.schema, thread) == 0
        before = build_graph(saver).get_state(thread_config(thread))
        worker = subprocess.run(
            [sys.executable, "-m", "langgraph_tiered_saver", "--redis-url", redis_url,
             "--postgres-url", test_database_url, "--schema", saver.schema,
             "--key-prefix", saver.key_prefix, "worker", "--once", "--quiet-seconds", "0"],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )
        assert worker.returncode == 0, worker.stderr
        assert pg_rows(test_database_url, saver.schema, thread) == written
        # Postgres alone: drop the hot copy and read through the cascade.
        saver.run_op(saver.core.hot.delete_thread_op(saver.tenant_id, [thread]))
        after = build_graph(saver).get_state(thread_config(thread))
        assert comparable(after.values) == comparable(before.values)
        assert after.next == before.next == ("review",)


def test_redis_wiped_resume_from_postgres(
    make_private_redis: Callable[..., PrivateRedis], saver_context: Callable[..., Any], test_database_url: str
) -> None:
    """Paused at an interrupt (flushed synchronously), Redis loses everything (FLUSHALL on a
    private server); a fresh saver resumes from Postgres, DeltaChannel history included, and
    the run ends exactly as it does on InMemorySaver."""
    server = make_private_redis()
    thread = f"t-{uuid.uuid4().hex[:8]}"
    expected_graph = build_graph(InMemorySaver())
    expected_graph.invoke(initial_input(), thread_config(thread))
    expected_paused = comparable(expected_graph.get_state(thread_config(thread)).values)
    expected_final = comparable(expected_graph.invoke(resume("yes"), thread_config(thread)))

    schema = f"lts_{uuid.uuid4().hex[:10]}"
    opts = dict(durable=True, schema=schema, flush_policy=FlushPolicy(**QUIET_OFF))
    with saver_context(**opts) as saver:  # type: ignore[arg-type]
        saver.setup()
        build_graph(saver).invoke(initial_input(), thread_config(thread))
        before = comparable(build_graph(saver).get_state(thread_config(thread)).values)
    import redis as redis_lib

    redis_lib.Redis.from_url(server.url).flushall()
    with TieredSaver.from_conn_string(
        server.url, test_database_url, schema=schema, tenant_id=TEST_TENANT, key_prefix=saver.key_prefix
    ) as fresh:
        graph = build_graph(fresh)
        state = graph.get_state(thread_config(thread))
        assert comparable(state.values) == before == expected_paused
        assert [m.id for m in state.values["history"]] == [m.id for m in state.values["messages"]]
        final = graph.invoke(resume("yes"), thread_config(thread))
        assert comparable(final) == expected_final
        assert fresh.metrics.counter("read_hits_postgres") >= 1


def test_postgres_down_mid_run_loses_nothing(
    make_private_postgres: Callable[..., PrivatePostgres], saver_context: Callable[..., Any]
) -> None:
    """Postgres stops mid-run: the threads Redis holds keep running, the outbox grows, and after
    a restart the flusher drains it: every checkpoint reaches Postgres. A thread Redis does not
    hold cannot start meanwhile (only Postgres can say it is new): a typed error, no guess."""
    pg = make_private_postgres()
    policy = FlushPolicy(
        quiet_seconds=0.2, every_n_checkpoints=0, on_close=False, retry_backoff=0.1, max_backoff=0.5, max_attempts=100
    )
    with saver_context(durable=True, postgres_url=pg.url, flush_policy=policy) as saver:
        saver.setup()
        first = f"t-{uuid.uuid4().hex[:8]}"
        chain_graph(saver).invoke({"n": 0}, thread_config(first))
        assert wait_for(lambda: pg_rows(pg.url, saver.schema, first) == 10)
        threads = [f"t-{uuid.uuid4().hex[:8]}" for _ in range(3)]
        for thread in threads:
            chain_graph(saver).invoke({"n": 0}, thread_config(thread))
        assert wait_for(lambda: all(pg_rows(pg.url, saver.schema, t) == 10 for t in threads))
        pg.stop()
        for thread in threads:
            assert chain_graph(saver).invoke({"n": 0}, thread_config(thread))["n"] == 16
        with pytest.raises(TierUnavailableError, match="postgres"):
            chain_graph(saver).invoke({"n": 0}, thread_config(f"new-{uuid.uuid4().hex[:8]}"))
        assert wait_for(lambda: saver.metrics.counter("flush_errors") >= 1, timeout=15)
        depth = saver.run_op(saver.core.flush.outbox_status_op()).depth
        assert depth >= 3
        pg.start()
        # the background flusher retries with backoff (its pool reconnects after the restart)
        # and drains the outbox by itself
        assert wait_for(lambda: all(pg_rows(pg.url, saver.schema, t) == 20 for t in threads), timeout=60)
        assert wait_for(lambda: saver.run_op(saver.core.flush.outbox_status_op()).depth == 0, timeout=10)


# ---------------------------------------------------------------- transaction counts


def _xact_commits(admin_url: str, dbname: str) -> int:
    """Committed transactions of the database, less one per session: a backend commits one
    catalog transaction while it logs in, which is connection set-up, not saver work."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        commits, sessions = conn.execute(  # type: ignore[misc]
            "SELECT xact_commit, sessions FROM pg_stat_database WHERE datname = %s", (dbname,)
        ).fetchone()
        return int(commits) - int(sessions)


def _settled_commits(admin_url: str, dbname: str) -> int:
    """Backends flush their statistics when they exit; wait until the count has not moved for
    half a second. (Readings run in the admin database, so they do not count themselves.)"""
    readings = [_xact_commits(admin_url, dbname)]
    for _ in range(150):
        time.sleep(0.1)
        readings.append(_xact_commits(admin_url, dbname))
        if len(readings) >= 6 and len(set(readings[-6:])) == 1:
            break
    return readings[-1]


def test_a_run_commits_at_most_two_transactions(
    make_private_postgres: Callable[..., PrivatePostgres], saver_context: Callable[..., Any]
) -> None:
    """An 8-node run: TieredSaver commits at most 2 Postgres transactions (the read that tells
    Postgres has no such thread, one flush), where the Postgres-only saver commits one per put
    and put_writes."""
    from langgraph.checkpoint.postgres import PostgresSaver

    pg = make_private_postgres(autovacuum="off")  # autovacuum's ANALYZE commits would add noise
    admin = pg.url
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE DATABASE tiered")
        conn.execute("CREATE DATABASE official")
    tiered_url = admin.rsplit("/", 1)[0] + "/tiered"
    official_url = admin.rsplit("/", 1)[0] + "/official"

    policy = FlushPolicy(quiet_seconds=3600.0, every_n_checkpoints=0, on_close=True)
    with saver_context(durable=True, postgres_url=tiered_url, flush_policy=policy) as saver:
        saver.setup()
    base = _settled_commits(admin, "tiered")
    with saver_context(
        durable=True, postgres_url=tiered_url, flush_policy=policy, schema=saver.schema, key_prefix=saver.key_prefix
    ) as saver:
        chain_graph(saver).invoke({"n": 0}, thread_config("run-1"))
    tiered = _settled_commits(admin, "tiered") - base

    with PostgresSaver.from_conn_string(official_url) as official:
        official.setup()
    base = _settled_commits(admin, "official")
    with PostgresSaver.from_conn_string(official_url) as official:
        chain_graph(official).invoke({"n": 0}, thread_config("run-1"))
    postgres_only = _settled_commits(admin, "official") - base
    print(f"transactions per 8-node run: TieredSaver {tiered}, PostgresSaver {postgres_only}")
    assert tiered <= 2
    assert postgres_only >= 10
    assert pg_rows(tiered_url, saver.schema, "run-1") == 10
