"""Many flush workers: disjoint shares, leases that lapse, and a worker process
killed mid-flush whose thread another worker takes over — on real Redis, Postgres and processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from langgraph_tiered_saver._sansio.io import Op, PgCall, RedisCall, Request
from langgraph_tiered_saver.flushing.fleet import Roster, Share, claim_op, share_of, worker_loop
from langgraph_tiered_saver.flushing.ops import FlushLease, FlushPolicy
from langgraph_tiered_saver.hot import keys as K
from langgraph_tiered_saver.records.codec import as_str
from langgraph_tiered_saver.saver import TieredSaver
from tests.graphs import chain_graph
from tests.helpers import TEST_TENANT, pg_rows, thread_config, wait_for

ROOT = Path(__file__).resolve().parents[2]
# Nothing flushes unless a worker does: no background flusher, no trigger fires on its own.
MANUAL = FlushPolicy(on_interrupt="off", on_error="off", quiet_seconds=3600, every_n_checkpoints=0, on_close=False)
CHECKPOINTS_PER_THREAD = 4  # chain_graph(nodes=2): input, two nodes, end


def _write_threads(saver: TieredSaver, threads: list[str]) -> None:
    graph = chain_graph(saver, nodes=2)
    for thread in threads:
        graph.invoke({"n": 0}, thread_config(thread))


def _dirty(redis_url: str, prefix: str) -> set[str]:
    client = redis.Redis.from_url(redis_url)
    try:
        pipe = client.pipeline(transaction=False)
        for key in K.dirty_keys(prefix):
            pipe.zrange(key, 0, -1)
        return {as_str(m) for members in pipe.execute() for m in members}
    finally:
        client.close()


def test_live_workers_split_the_due_threads_into_disjoint_shares(saver_context: Callable[..., Any]) -> None:
    with saver_context(durable=True, background_flush=False, flush_policy=MANUAL) as saver:
        saver.setup()
        threads = [f"share-{i}" for i in range(24)]
        _write_threads(saver, threads)
        rosters = [Roster(saver.key_prefix, f"worker-{i}", 5_000) for i in range(3)]
        for roster in rosters:  # all three join before anyone claims
            saver.run_op(roster.heartbeat_op())
        shares = [saver.run_op(r.heartbeat_op()) for r in rosters]
        assert shares == [Share(0, 3), Share(1, 3), Share(2, 3)]
        assert saver.run_op(rosters[0].members_op()) == ["worker-0", "worker-1", "worker-2"]
        claims = [saver.run_op(claim_op(saver.core.flush, s, quiet_ms=0, steal_after_ms=60_000)) for s in shares]
        assert not any(stolen for _, stolen in claims)
        claimed = [threads for threads, _ in claims]
        every = {(TEST_TENANT, t) for t in threads}
        assert set().union(*map(set, claimed)) == every
        assert sum(len(c) for c in claimed) == len(every)  # disjoint
        assert all(claimed)  # 24 threads over 3 shares: crc32 gives each some

        # A worker that leaves hands its share over at once; the others re-divide.
        saver.run_op(rosters[2].leave_op())
        assert [saver.run_op(r.heartbeat_op()) for r in rosters[:2]] == [Share(0, 2), Share(1, 2)]
        assert all(share_of(TEST_TENANT, t, 2) in (0, 1) for t in threads)


def test_an_idle_worker_takes_only_overdue_threads_of_other_shares(saver_context: Callable[..., Any]) -> None:
    with saver_context(durable=True, background_flush=False, flush_policy=MANUAL) as saver:
        saver.setup()
        ids = [f"steal-{i}" for i in range(40)]
        theirs = [t for t in ids if share_of(TEST_TENANT, t, 2) == 1]
        _write_threads(saver, theirs)
        idle = Share(0, 2)  # owns none of them
        ops = saver.core.flush
        assert saver.run_op(claim_op(ops, idle, quiet_ms=0, steal_after_ms=60_000)) == ([], True)
        time.sleep(0.3)
        stolen, is_stolen = saver.run_op(claim_op(ops, idle, quiet_ms=0, steal_after_ms=200))
        assert is_stolen and sorted(t for _, t in stolen) == sorted(theirs)


def test_a_worker_drops_threads_that_left_its_share_during_a_pass(
    saver_context: Callable[..., Any], redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worker A claims every due thread while alone; B joins right after (as at every start-up).
    A renews its membership during the pass and flushes only what stays its share."""
    monkeypatch.setattr("langgraph_tiered_saver.flushing.fleet.SHARE_REFRESH_SECONDS", 0.0)
    with saver_context(durable=True, background_flush=False, flush_policy=MANUAL) as saver:
        saver.setup()
        threads = [f"mid-{i}" for i in range(20)]
        _write_threads(saver, threads)
        a, b = (Roster(saver.key_prefix, f"worker-{n}", 10_000) for n in "ab")
        ran: list[Any] = []

        def run(op: Op[Any]) -> Any:
            ran.append(result := saver.run_op(op))
            if len(ran) == 2:  # A's heartbeat (alone), then its claim: now B joins
                assert len(result[0]) == len(threads)
                saver.run_op(b.heartbeat_op())
            return result

        flushed = worker_loop(run, saver.core.flush, saver.metrics, quiet_seconds=0, poll_seconds=0.05,
                              stop=threading.Event(), once=True, roster=a)  # fmt: skip
        mine = {t for t in threads if share_of(TEST_TENANT, t, 2) == 0}
        assert 0 < flushed == len(mine) < len(threads)
        assert _dirty(redis_url, saver.key_prefix) == {K.dirty_member(TEST_TENANT, t) for t in set(threads) - mine}


def _execute(saver: TieredSaver, request: Request) -> Any:
    """One request of a stepped op, run by the saver's real driver."""

    def one() -> Op[Any]:
        return (yield request)

    return saver.run_op(one())


def _answer(saver: TieredSaver, op: Generator[Request, Any, Any], request: Request) -> Request:
    """Run `request` and give `op` its reply, or its error (as the saver's driver does)."""
    try:
        reply = _execute(saver, request)
    except Exception as exc:
        return op.throw(exc)
    return op.send(reply)


def _step_until(saver: TieredSaver, op: Generator[Request, Any, Any], kind: type, reply: Any = None) -> Request:
    """Run `op`'s requests until it yields one of `kind` (returned, not run)."""
    request = op.send(reply)
    while not isinstance(request, kind):
        request = _answer(saver, op, request)
    return request


def _finish(saver: TieredSaver, op: Generator[Request, Any, Any], request: Request) -> Any:
    try:
        while True:
            request = _answer(saver, op, request)
    except StopIteration as stop:
        return stop.value


def test_a_lapsed_flush_lease_passes_to_the_next_flusher_and_the_old_holder_harms_nothing(
    saver_context: Callable[..., Any], redis_url: str, test_database_url: str
) -> None:
    """Flusher A takes the lease and stalls before its Postgres transaction (a GC pause, a
    frozen VM) past the lease; flusher B takes the thread over and is mid-flush when A wakes.
    A's upsert is a replay, its acknowledgement removes nothing B still needs, its release
    leaves B's lease alone; B then finishes: every row once in Postgres, the outbox empty."""
    with saver_context(durable=True, background_flush=False, flush_policy=MANUAL) as saver:
        saver.setup()
        thread = f"lapse-{uuid.uuid4().hex[:6]}"
        _write_threads(saver, [thread])
        ops = saver.core.flush
        lock = K.lock_key(saver.key_prefix, TEST_TENANT, thread, "flush")
        client = redis.Redis.from_url(redis_url)
        try:
            a = ops.flush_thread_op(TEST_TENANT, thread, lease=FlushLease("worker-a", 300))
            a_upsert = _step_until(saver, a, PgCall)
            assert as_str(client.get(lock)).startswith("worker-a/")
            assert wait_for(lambda: client.get(lock) is None, 5)  # not renewed: it lapses

            b = ops.flush_thread_op(TEST_TENANT, thread, lease=FlushLease("worker-b", 30_000))
            b_upsert = _step_until(saver, b, PgCall)
            b_token = client.get(lock)
            assert as_str(b_token).startswith("worker-b/")

            a_result = _finish(saver, a, a_upsert)  # A wakes up: writes, acknowledges, releases
            assert a_result.checkpoints == CHECKPOINTS_PER_THREAD
            assert client.get(lock) == b_token  # B's lease survived A's release
            b_result = _finish(saver, b, b_upsert)
            assert (b_result.checkpoints, b_result.remaining) == (CHECKPOINTS_PER_THREAD, 0)
            assert client.get(lock) is None
        finally:
            client.close()
        assert pg_rows(test_database_url, saver.schema, thread) == CHECKPOINTS_PER_THREAD
        assert _dirty(redis_url, saver.key_prefix) == set()


def test_a_flush_renews_its_lease_at_every_batch(
    saver_context: Callable[..., Any], redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("langgraph_tiered_saver.flushing.ops.OUTBOX_BATCH", 3)
    with saver_context(durable=True, background_flush=False, flush_policy=MANUAL) as saver:
        saver.setup()
        thread = f"renew-{uuid.uuid4().hex[:6]}"
        _write_threads(saver, [thread])
        lock = K.lock_key(saver.key_prefix, TEST_TENANT, thread, "flush")
        client = redis.Redis.from_url(redis_url)
        try:
            op = saver.core.flush.flush_thread_op(TEST_TENANT, thread, lease=FlushLease("w", 2_000))
            request = _step_until(saver, op, PgCall)  # first batch read: lease taken
            request = op.send(_execute(saver, request))  # upsert; next: the first ack
            time.sleep(1.2)
            request = op.send(_execute(saver, request))  # ack; next: the second batch read
            assert isinstance(request, RedisCall)
            assert client.pttl(lock) < 1_000
            request = op.send(_execute(saver, request))  # second batch read renews
            assert client.pttl(lock) > 1_500
            assert _finish(saver, op, request).remaining == 0
            assert client.get(lock) is None
        finally:
            client.close()


def _spawn_worker(redis_url: str, postgres_url: str, saver: TieredSaver, lease: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "langgraph_tiered_saver", "--redis-url", redis_url, "--postgres-url", postgres_url,
         "--schema", saver.schema, "--key-prefix", saver.key_prefix, "worker", "--quiet-seconds", "0",
         "--poll-seconds", "0.1", "--lease-seconds", str(lease)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_a_worker_killed_mid_flush_is_taken_over_and_nothing_is_lost(
    saver_context: Callable[..., Any], redis_url: str, test_database_url: str
) -> None:
    """Two `worker` processes share 30 threads. One of them is SIGKILLed inside the Postgres
    transaction of a thread (a trigger makes that thread's first insert sleep 4 s): the other
    takes the thread over once the 2 s leases lapse. The killed worker's transaction was sent
    whole (BEGIN .. COMMIT in one pipeline), so its backend commits it after the sleep: the
    thread is flushed twice, and the second flush inserts nothing. Every checkpoint of every
    thread is in Postgres exactly once, the outbox is empty, the dead worker left the roster."""
    with saver_context(durable=True, background_flush=False, flush_policy=MANUAL) as saver:
        saver.setup()
        slow = "slow-thread"
        threads = [slow, *(f"kill-{i}" for i in range(29))]
        _write_threads(saver, threads)
        schema = saver.schema
        with psycopg.connect(test_database_url, autocommit=True) as conn:
            conn.execute(f'CREATE SEQUENCE "{schema}".slow_once')
            conn.execute(f"""
                CREATE FUNCTION "{schema}".sleep_once() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF nextval('"{schema}".slow_once') = 1 THEN PERFORM pg_sleep(4); END IF;
                    RETURN NEW;
                END $$""")
            conn.execute(f"""CREATE TRIGGER sleep_once BEFORE INSERT ON "{schema}".checkpoints
                FOR EACH ROW WHEN (NEW.thread_id = '{slow}') EXECUTE FUNCTION "{schema}".sleep_once()""")
        workers = [_spawn_worker(redis_url, test_database_url, saver, 2.0) for _ in range(2)]
        lock = K.lock_key(saver.key_prefix, TEST_TENANT, slow, "flush")
        client = redis.Redis.from_url(redis_url)
        try:
            assert wait_for(lambda: client.get(lock) is not None, 30), "no worker took the slow thread"
            holder_pid = int(as_str(client.get(lock)).split("/")[0].split(":")[1])
            victim = next(w for w in workers if w.pid == holder_pid)
            survivor = next(w for w in workers if w is not victim)
            with psycopg.connect(test_database_url, autocommit=True) as conn:
                assert wait_for(lambda: conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'").fetchone()[0] > 0, 10)  # type: ignore[index]
            os.kill(victim.pid, signal.SIGKILL)  # mid-flush: inside the thread's transaction
            victim.wait(10)
            # never acknowledged: still in the outbox, so whoever empties it now is the survivor
            # (the test's saver has no background flusher)
            assert K.dirty_member(TEST_TENANT, slow) in _dirty(redis_url, saver.key_prefix)

            def all_flushed() -> bool:
                return all(pg_rows(test_database_url, schema, t) == CHECKPOINTS_PER_THREAD for t in threads)

            assert wait_for(all_flushed, 60)
            assert wait_for(lambda: not _dirty(redis_url, saver.key_prefix), 30)
            roster = Roster(saver.key_prefix, "observer", 1)
            assert wait_for(lambda: len(saver.run_op(roster.members_op())) == 1, 10)  # the dead one lapsed
            assert client.get(lock) is None
            assert survivor.poll() is None  # still running
        finally:
            client.close()
            for worker in workers:
                if worker.poll() is None:
                    worker.send_signal(signal.SIGTERM)
            outputs = [w.communicate(timeout=30) for w in workers]
        assert survivor.returncode == 0, outputs
        assert json.loads(outputs[workers.index(survivor)][0])["flushed_threads"] > 0
        assert pg_rows(test_database_url, schema) == CHECKPOINTS_PER_THREAD * len(threads)


def test_a_worker_pass_flushes_its_threads_in_groups(
    saver_context: Callable[..., Any], redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """40 due threads: two Postgres transactions (groups of FLUSH_GROUP = 32 and 8), not 40."""
    with saver_context(durable=True, background_flush=False, flush_policy=MANUAL) as saver:
        saver.setup()
        threads = [f"group-{i}" for i in range(40)]
        _write_threads(saver, threads)
        driver = saver._runners.sync
        flushes: list[PgCall] = []
        original = driver._pg

        def spy(call: PgCall) -> Any:
            if any(".lts_insert_" in s.sql for s in call.statements):
                flushes.append(call)
            return original(call)

        monkeypatch.setattr(driver, "_pg", spy)
        flushed = worker_loop(saver.run_op, saver.core.flush, saver.metrics, quiet_seconds=0, poll_seconds=0.05,
                              stop=threading.Event(), once=True)  # fmt: skip
        assert flushed == len(threads) and len(flushes) == 2
        assert _dirty(redis_url, saver.key_prefix) == set()
