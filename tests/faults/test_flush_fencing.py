"""Fenced flushes on real Redis, Postgres and worker processes: a flusher whose lease was taken
over, or whose thread was deleted, after it read the outbox never commits; a synchronous flush
waits for a stalled holder at most `takeover_seconds`."""

from __future__ import annotations

import datetime as dt
import operator
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Generator
from typing import Annotated, Any, TypedDict

import psycopg
import pytest
import redis
from langgraph.checkpoint.serde.types import ERROR, INTERRUPT
from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt

from langgraph_tiered_saver._sansio.io import PgCall, Request
from langgraph_tiered_saver.flushing.ops import FlushLease, FlushPolicy
from langgraph_tiered_saver.hot import keys as K
from langgraph_tiered_saver.records.codec import as_str
from tests.faults.test_flush_workers import (
    CHECKPOINTS_PER_THREAD,
    _execute,
    _spawn_worker,
    _step_until,
)
from tests.graphs import chain_graph
from tests.helpers import TEST_TENANT, pg_rows, thread_config, wait_for

MANUAL = FlushPolicy(on_interrupt="off", on_error="off", quiet_seconds=3600, every_n_checkpoints=0, on_close=False)
BIG = "x" * 3_000_000  # a large outbox: the worker's read-to-commit window is wide enough to stop it in


class Filled(TypedDict, total=False):
    blob: str
    log: Annotated[list[str], operator.add]


def fill_and_ask(checkpointer: Any) -> Any:
    """fill (a large value) -> ask (an interrupt)."""
    g = StateGraph(Filled)
    g.add_node("fill", lambda s: {"blob": BIG + uuid.uuid4().hex, "log": ["fill"]})
    g.add_node("ask", lambda s: {"log": [str(interrupt("approve?"))]})
    g.add_edge(START, "fill")
    g.add_edge("fill", "ask")
    g.add_edge("ask", END)
    return g.compile(checkpointer=checkpointer)


def _finish(saver: Any, op: Generator[Request, Any, Any], request: Request) -> Any:
    """Run a stepped op to its end on the saver's driver, its failures thrown into it."""
    try:
        while True:
            try:
                reply = _execute(saver, request)
            except Exception as exc:
                request = op.throw(exc)
                continue
            request = op.send(reply)
    except StopIteration as stop:
        return stop.value


def _special_value(url: str, schema: str, thread: str, channel: str) -> list[bytes]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            f'SELECT coalesce(data, convert_to(value::text, \'UTF8\')) FROM "{schema}".checkpoint_writes'
            " WHERE thread_id = %s AND channel = %s",  # a value kept as its JSONB alone: its text
            (thread, channel),
        ).fetchall()
    return [bytes(r[0]) for r in rows]


@pytest.mark.parametrize("channel", [INTERRUPT, ERROR])
def test_a_stalled_flusher_never_writes_an_older_special_write_over_a_newer_one(
    saver_context: Callable[..., Any], test_database_url: str, channel: str
) -> None:
    """Flusher A reads `<channel>` = attempt 1 and stalls; attempt 2 replaces it in Redis and a
    synchronous flush takes A's lease over and commits it; A wakes up: Postgres refuses its
    commit, so attempt 2 stays, in both tiers."""
    policy = FlushPolicy(on_interrupt="off", on_error="off", quiet_seconds=3600, every_n_checkpoints=0,
                         on_close=False, takeover_seconds=0.2)  # fmt: skip
    with saver_context(durable=True, background_flush=False, flush_policy=policy) as saver:
        saver.setup()
        thread = f"special-{uuid.uuid4().hex[:6]}"
        cfg = thread_config(thread)
        chain_graph(saver, nodes=1).invoke({"n": 0}, cfg)
        at = saver.get_tuple(cfg).config  # type: ignore[union-attr]
        saver.put_writes(at, [(channel, "attempt 1")], "task-1")
        ops = saver.core.flush
        a = ops.flush_thread_op(TEST_TENANT, thread, lease=FlushLease("stalled", 60_000))
        a_upsert = _step_until(saver, a, PgCall)  # A holds the lease and has read attempt 1

        saver.put_writes(at, [(channel, "attempt 2")], "task-1")
        started = time.monotonic()
        b = saver.flush(cfg)[0]  # synchronous: takes the lease over after 0.2 s, not 60 s
        assert time.monotonic() - started < 5 and b.remaining == 0
        newer = _special_value(test_database_url, saver.schema, thread, channel)
        assert len(newer) == 1 and b"attempt 2" in newer[0]

        late = _finish(saver, a, a_upsert)  # refused: a background flusher reports a skip
        assert late.fenced and late.skipped_locked and late.writes == 0
        assert _special_value(test_database_url, saver.schema, thread, channel) == newer
        pending = saver.get_tuple(at).pending_writes  # type: ignore[union-attr]
        assert [v for _, c, v in pending if c == channel] == ["attempt 2"]


def test_a_flusher_that_read_before_a_deletion_cannot_bring_the_thread_back(
    saver_context: Callable[..., Any], test_database_url: str
) -> None:
    with saver_context(durable=True, background_flush=False, flush_policy=MANUAL) as saver:
        saver.setup()
        thread = f"tomb-{uuid.uuid4().hex[:6]}"
        chain_graph(saver, nodes=2).invoke({"n": 0}, thread_config(thread))
        a = saver.core.flush.flush_thread_op(TEST_TENANT, thread, lease=FlushLease("stalled", 300))
        a_upsert = _step_until(saver, a, PgCall)
        time.sleep(0.4)  # A's lease lapses
        saver.delete_thread(thread)
        result = _finish(saver, a, a_upsert)  # a background flusher's refusal is a skip, no error
        assert result.fenced and result.skipped_locked and result.checkpoints == 0
        assert pg_rows(test_database_url, saver.schema, thread) == 0
        assert thread not in {t.thread_id for t in saver.list_threads()}
        # the tombstone does not stop the thread from being used again afterwards
        chain_graph(saver, nodes=2).invoke({"n": 0}, thread_config(thread))
        assert saver.flush(thread_config(thread))[0].checkpoints == CHECKPOINTS_PER_THREAD
        assert pg_rows(test_database_url, saver.schema, thread) == CHECKPOINTS_PER_THREAD


def test_a_sigstopped_worker_is_taken_over_and_its_late_flush_refused(
    saver_context: Callable[..., Any], redis_url: str, test_database_url: str
) -> None:
    """Two `worker` processes with 3 s leases. The one holding a thread's lease is SIGSTOPped
    after its outbox read and before its commit. Meanwhile: a run on the thread ending at an
    interrupt flushes synchronously (taking the lease over after 1 s, not waiting out the
    lease), then the thread is deleted. SIGCONT: the stopped worker's commit is refused, the
    thread does not come back, and the worker goes on."""
    policy = FlushPolicy(on_interrupt="sync", on_error="off", quiet_seconds=3600, every_n_checkpoints=0,
                         on_close=False, takeover_seconds=1.0)  # fmt: skip
    with saver_context(durable=True, background_flush=False, flush_policy=policy) as saver:
        saver.setup()
        client = redis.Redis.from_url(redis_url)
        workers: list[subprocess.Popen[str]] = []
        stopped: subprocess.Popen[str] | None = None
        try:
            thread, holder = _stall_a_worker_mid_flush(saver, client, redis_url, test_database_url, workers)
            stopped = holder
            cfg = thread_config(thread)
            started = time.monotonic()
            out = fill_and_ask(saver).invoke({"log": []}, cfg)
            elapsed = time.monotonic() - started
            assert "__interrupt__" in out
            assert elapsed < 2.9, f"the interrupt's flush waited {elapsed:.1f} s for the stopped worker"
            saver.delete_thread(thread)
            assert pg_rows(test_database_url, saver.schema, thread) == 0
            os.kill(holder.pid, signal.SIGCONT)
            stopped = None
            time.sleep(2.0)  # the woken worker sends its old transaction: refused
            assert pg_rows(test_database_url, saver.schema, thread) == 0
            assert thread not in {t.thread_id for t in saver.list_threads()}
            assert saver.get_tuple(cfg) is None
            assert all(w.poll() is None for w in workers)
        finally:
            if stopped is not None:
                os.kill(stopped.pid, signal.SIGCONT)
            client.close()
            for worker in workers:
                if worker.poll() is None:
                    worker.send_signal(signal.SIGTERM)
            outputs = [w.communicate(timeout=30) for w in workers]
        assert any("lease lost" in err for _, err in outputs), [err[-2000:] for _, err in outputs]


def _stall_a_worker_mid_flush(
    saver: Any, client: redis.Redis, redis_url: str, postgres_url: str, workers: list[subprocess.Popen[str]]
) -> tuple[str, subprocess.Popen[str]]:
    """Start two workers and SIGSTOP the one that took a thread's lease before it committed
    (its outbox is large, so the read-to-commit window is wide; tried on new threads until the
    stop lands inside it). Returns the thread and the stopped worker."""
    workers += [_spawn_worker(redis_url, postgres_url, saver, 3.0) for _ in range(2)]
    for attempt in range(5):
        thread = f"stall-{attempt}-{uuid.uuid4().hex[:6]}"
        lock = K.lock_key(saver.key_prefix, TEST_TENANT, thread, "flush")
        manual = saver.core.policy
        saver.core.policy = MANUAL  # this first run is left to the workers
        try:
            fill_and_ask(saver).invoke({"log": []}, thread_config(thread))
        finally:
            saver.core.policy = manual
        deadline = time.monotonic() + 20
        value = None
        while value is None and time.monotonic() < deadline:
            value = client.get(lock)
        assert value is not None, "no worker took the thread"
        pid = int(as_str(value).split("/")[0].split(":")[1])
        os.kill(pid, signal.SIGSTOP)
        holder = next(w for w in workers if w.pid == pid)
        time.sleep(1.0)  # a transaction sent before the stop would commit meanwhile
        if pg_rows(postgres_url, saver.schema, thread) == 0:
            return thread, holder
        os.kill(pid, signal.SIGCONT)  # it committed first: try again on another thread
        assert wait_for(lambda lock=lock: client.get(lock) is None, 10)  # type: ignore[misc]
    pytest.fail("could not stop a worker between its outbox read and its commit in 5 tries")



def test_a_deletion_leaves_a_tombstone_that_retention_removes(
    saver_context: Callable[..., Any], test_database_url: str
) -> None:
    with saver_context(durable=True, background_flush=False, flush_policy=MANUAL) as saver:
        saver.setup()
        thread = f"tomb-{uuid.uuid4().hex[:6]}"
        chain_graph(saver, nodes=1).invoke({"n": 0}, thread_config(thread))
        saver.flush()
        saver.delete_thread(thread)

        def tombstones() -> list[tuple[Any, ...]]:
            with psycopg.connect(test_database_url, autocommit=True) as conn:
                return conn.execute(f'SELECT thread_id, deleted_at IS NOT NULL FROM "{saver.schema}".flush_fence '
                                    "WHERE deleted_at IS NOT NULL").fetchall()  # fmt: skip

        assert tombstones() == [(thread, True)]
        saver.prune_older_than(dt.timedelta(hours=1))
        assert tombstones() == [(thread, True)]  # younger than the cutoff: kept
        time.sleep(0.05)
        saver.prune_older_than(dt.timedelta(0))
        assert tombstones() == []
