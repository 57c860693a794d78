"""A stateful, model-based test of the tiers: hypothesis interleaves graph runs,
reads of old checkpoints by id, flushes, expiry and eviction of clean threads (deleting keys
the way a TTL or a volatile-* LRU policy would), Redis restarting empty, a real Postgres outage
(its private server stopped while a run goes on and a flush is tried) and a real Redis outage
under `on_redis_error="fallback"` (the private server stopped while a run is written through to
Postgres, then started again with its AOF: back with its older copy of the thread). After every
step it checks against a reference model:

- the latest checkpoint of every thread is the model's (it never regresses);
- every checkpoint whose put returned is readable by id, unless its loss was reported;
- `list` answers with exactly the model's checkpoints (both tiers merged);
- a Redis that lost data is reported (`redis_data_lost`) on the next write, once;
- a Cluster node that restarts empty while another node keeps the epoch (one shard's keys
  deleted) is reported by a process that starts then, before any write reaches that shard;
- a flusher that stalled between its outbox read and its commit, while the thread ran on and
  was flushed by another, never commits its older rows (the flush fence);
- a synchronous flush whose process dies after its commit, before the acknowledgement it left
  for its background thread (flushing/acks.py) is sent: the entries stay, the next flush writes
  them again, and nothing is lost, duplicated or forked;
- a thread Redis no longer holds, read or run while Postgres is down, is a typed error, never
  an empty state or a conversation started over.

- a Redis killed and started from an older RDB snapshot (its run id changed, its epoch did not)
  never answers for the newer turns Postgres holds; what ran after the snapshot and was not
  flushed is lost, and the restart is reported (`redis_server_changes`).

- a fallback run of a thread with unflushed runs in the stopped Redis forks it (both branches
  are kept): the fork is reported (`thread_forks`) when the older branch is flushed;
- a Redis demoted to a replica (it serves reads, refuses writes) under fallback: the run is
  written through, and a state read while Redis is still demoted is the run's, never the older
  copy Redis serves;
- a second hot tier (another key prefix, no `setup()`) over the schema runs a turn in its own
  Redis keys but can never flush it into the schema: refused in Postgres' transaction.

At the end of every example, after a flush, Postgres is read directly: each thread's branch
points (a parent with two children, or two roots) must all have been reported as forks, and its
latest checkpoint must be the model's.

CI runs a bounded version; `make soak` runs `LTS_SOAK_EXAMPLES` (default 300) examples and
prints the figures.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from devtools.servers import PrivatePostgres, PrivateRedis
from langgraph_tiered_saver import (
    FlushPolicy,
    HotTierConflictError,
    TieredSaver,
    TierUnavailableError,
)
from langgraph_tiered_saver._sansio.io import PgCall
from langgraph_tiered_saver.flushing.ops import FlushLease
from langgraph_tiered_saver.hot import keys as K
from tests.graphs import two_step_graph
from tests.helpers import QUIET_OFF, TEST_TENANT, wait_for

SOAK_EXAMPLES = int(os.environ.get("LTS_SOAK_EXAMPLES", "0"))
THREADS = 3
DATA_KEYS = ("idx", "ck", "cv", "bl", "wi", "wr")
# Server outages per example (each costs a server stop and start, about a second)
OUTAGES_PER_EXAMPLE = 1
# A failed Postgres read must raise, never read as "no thread" (core._get_tuple_op);
# LTS_MODEL_PG_READ_FAILURES=0 leaves the rule out.
CHECK_POSTGRES_READ_FAILURES = os.environ.get("LTS_MODEL_PG_READ_FAILURES", "1") == "1"


@dataclass
class ThreadModel:
    log: list[str] = field(default_factory=list)  # the latest state's channel `log`
    ids: set[str] = field(default_factory=set)  # checkpoints whose put returned
    flushed_log: list[str] = field(default_factory=list)
    flushed_ids: set[str] = field(default_factory=set)
    dirty: bool = False


@dataclass
class Figures:
    examples: int = 0
    steps: int = 0
    faults: int = 0
    postgres_outages: int = 0
    redis_outages: int = 0  # with fallback; dirty: the thread had unflushed runs in Redis
    redis_demotions: int = 0  # of them, Redis demoted to a replica (reads served, writes refused)
    other_process_reads: int = 0  # reads of a demotion's thread by a process that wrote nothing
    redis_outages_dirty: int = 0
    checkpoints: int = 0
    losses_reported: int = 0
    losses_unreported: int = 0
    stalled_flushes: int = 0
    stalled_flushes_refused: int = 0
    acks_lost: int = 0
    snapshot_restores: int = 0
    lost_to_snapshot_restores: int = 0  # threads whose unflushed runs after the snapshot went
    forks_reported: int = 0
    silent_forks: int = 0
    second_hot_tiers_refused: int = 0
    shard_losses: int = 0  # a node of a Cluster restarted empty, reported by a process that started then


FIGURES = Figures()


class TieredModel(RuleBasedStateMachine):
    redis_server: PrivateRedis
    postgres_server: PrivatePostgres
    schema = ""

    @initialize()
    def start(self) -> None:
        FIGURES.examples += 1
        self.prefix = f"m-{uuid.uuid4().hex[:8]}"
        self.client = redis.Redis.from_url(self.redis_server.url)
        self.context = TieredSaver.from_conn_string(
            self.redis_server.url, self.postgres_server.url, tenant_id=TEST_TENANT, key_prefix=self.prefix,
            schema=self.schema, flush_policy=FlushPolicy(**QUIET_OFF), background_flush=False,  # type: ignore[arg-type]
            on_redis_error="fallback",
        )  # fmt: skip
        self.saver = self.context.__enter__()
        self.saver.setup(replace_hot_tier=True)  # each example is a new deployment of the schema
        self.graph = two_step_graph(self.saver)
        self.threads = {f"{self.prefix}-t{i}": ThreadModel() for i in range(THREADS)}
        self.restarts = 0
        self.runs = 0
        self.restarted_since_write = False
        self.expected_reports = 0
        self.postgres_outages = self.redis_outages = 0
        self.snapshot: dict[str, ThreadModel] | None = None
        self.snapshot_without_epoch = False
        self.expected_forks = 0
        self.forks_elsewhere: list[str] = []  # threads whose fork another process's read reported

    def teardown(self) -> None:
        try:
            if hasattr(self, "threads"):
                self._check_postgres_alone()
        finally:
            self.context.__exit__(None, None, None)
            self.client.close()

    def _check_postgres_alone(self) -> None:
        """Every branch point Postgres holds was reported as a fork, and every thread's latest
        checkpoint in Postgres alone (its Redis copy dropped) is the model's."""
        self.forks_are_reported()
        self.flush()
        reported: dict[str, int] = {}
        for thread in [t for _, t, _, _ in self.saver.metrics.recent("thread_forks")] + self.forks_elsewhere:
            reported[thread] = reported.get(thread, 0) + 1
        with psycopg.connect(self.postgres_server.url, autocommit=True) as conn:
            for thread, model in self.threads.items():
                parents = conn.execute(
                    f'SELECT parent_checkpoint_id, count(*) FROM "{self.schema}".checkpoints '
                    "WHERE thread_id = %s AND checkpoint_ns = '' GROUP BY 1", (thread,),
                ).fetchall()  # fmt: skip
                branch_points = sum(n - 1 for _, n in parents)
                FIGURES.forks_reported += reported.get(thread, 0)
                FIGURES.silent_forks += max(branch_points - reported.get(thread, 0), 0)
                assert branch_points == reported.get(thread, 0), (thread, parents)
                self.client.delete(*K.thread_keys(self.prefix, TEST_TENANT, thread))
                assert self.graph.get_state(self._cfg(thread)).values.get("log", []) == model.log, thread

    def _cfg(self, thread: str, checkpoint_id: str | None = None) -> dict[str, Any]:
        configurable: dict[str, Any] = {"thread_id": thread}
        if checkpoint_id is not None:
            configurable["checkpoint_id"] = checkpoint_id
        return {"configurable": configurable}

    # ------------------------------------------------------------------ rules

    def _history_ids(self, thread: str) -> set[str]:
        return {s.config["configurable"]["checkpoint_id"] for s in self.graph.get_state_history(self._cfg(thread))}

    def _record(self, thread: str, tag: str) -> None:
        """The model after a run of `thread` (tagged `tag`) that returned."""
        model = self.threads[thread]
        model.log = [*model.log, tag, "a", "b"]
        ids = self._history_ids(thread)
        FIGURES.checkpoints += len(ids - model.ids)
        model.ids |= ids
        model.dirty = True

    def _next_tag(self) -> str:
        self.runs += 1
        return f"r{self.runs - 1}"

    @rule(i=st.integers(0, THREADS - 1))
    def run(self, i: int) -> None:
        thread = f"{self.prefix}-t{i}"
        tag = self._next_tag()
        out = self.graph.invoke({"log": [tag]}, self._cfg(thread))
        if self.restarted_since_write:  # this write found the epoch gone: reported, once
            self.expected_reports += 1
            self.restarted_since_write = False
        assert self.saver.metrics.counter("redis_data_lost") == self.expected_reports
        assert out["log"] == [*self.threads[thread].log, tag, "a", "b"]
        self._record(thread, tag)
        FIGURES.steps += 1

    def _flushed(self) -> None:
        for model in self.threads.values():
            model.flushed_log, model.flushed_ids, model.dirty = list(model.log), set(model.ids), False

    @precondition(lambda self: self.runs > 0 and self.postgres_outages < OUTAGES_PER_EXAMPLE)
    @rule(i=st.integers(0, THREADS - 1))
    def postgres_outage(self, i: int) -> None:
        """Postgres stops: a run of a thread Redis holds goes on (one Redis does not hold
        fails with a typed error instead of starting over), a flush fails with a typed error and
        keeps the outbox, and after the restart a flush carries everything over."""
        self.postgres_outages += 1
        thread = f"{self.prefix}-t{i}"
        held = bool(self.client.exists(K.thread_keys(self.prefix, TEST_TENANT, thread).idx))
        tag = self._next_tag()
        self.postgres_server.stop()
        try:
            try:
                out = self.graph.invoke({"log": [tag]}, self._cfg(thread))
                assert out["log"] == [*self.threads[thread].log, tag, "a", "b"]
                ran = True
            except TierUnavailableError:
                assert not held, "a thread Redis holds must not need Postgres to go on"
                ran = False
            if ran or any(model.dirty for model in self.threads.values()):  # else nothing to flush
                with pytest.raises(TierUnavailableError):
                    self.saver.flush()
        finally:
            self.postgres_server.start()
        if self.restarted_since_write and ran:
            self.expected_reports += 1
            self.restarted_since_write = False
        # the saver's breaker lets a probe through within its window: read and flush until it does
        assert wait_for(lambda: self._reads(thread) and self._flush_succeeds(), timeout=30, interval=0.2)
        if ran:
            self._record(thread, tag)
        self._flushed()
        FIGURES.faults += 1
        FIGURES.postgres_outages += 1
        FIGURES.steps += 1

    def _reads(self, thread: str) -> bool:
        try:
            self.graph.get_state(self._cfg(thread))
        except TierUnavailableError:
            return False
        return True

    def _flush_succeeds(self) -> bool:
        try:
            results = self.saver.flush()
        except TierUnavailableError:
            return False
        assert all(result.lost == 0 for result in results)
        return True

    @precondition(lambda self: self.runs > 0 and self.redis_outages < OUTAGES_PER_EXAMPLE)
    @rule(i=st.integers(0, THREADS - 1))
    def redis_outage_with_fallback(self, i: int) -> None:
        """Redis stops: a run is written through to Postgres, going on from what Postgres
        holds (the thread's unflushed runs are in the stopped Redis); Redis comes back from its
        AOF with its older copy, which must never answer as the latest again: the run written
        through is the latest, and the older copy's unflushed checkpoints are kept (flushed)."""
        self._written_through_run(i, self._redis_stopped())

    @precondition(lambda self: self.runs > 0 and self.redis_outages < OUTAGES_PER_EXAMPLE)
    @rule(i=st.integers(0, THREADS - 1))
    def redis_demoted_with_fallback(self, i: int) -> None:
        """A failover demotes Redis to a replica of a primary it cannot reach: it keeps what it
        holds and serves reads, but refuses writes. As in an outage, the run is written through
        (its first read takes the run lock, which Redis refuses), and the older copy Redis still
        serves never answers for the thread, before or after Redis takes writes again: not in
        this process, and not in another one that wrote nothing (hot/watch.py)."""
        self._written_through_run(i, self._redis_demoted(), other_reads=True)
        FIGURES.redis_demotions += 1

    @contextmanager
    def _redis_stopped(self) -> Iterator[None]:
        self.redis_server.stop()
        try:
            yield
        finally:
            self.redis_server.start()
            self.client.connection_pool.disconnect()  # its connections went with the old server

    @contextmanager
    def _redis_demoted(self) -> Iterator[None]:
        self.client.execute_command("REPLICAOF", "127.0.0.1", "1")  # nothing listens there
        try:
            yield
        finally:
            self.client.execute_command("REPLICAOF", "NO", "ONE")

    def _written_through_run(self, i: int, fault: AbstractContextManager[None], *, other_reads: bool = False) -> None:
        """A run while `fault` keeps Redis from taking writes, of a thread with unflushed runs
        (the fork case) when there is one; the thread's state is read before the fault ends.
        `other_reads`: so does another process, which wrote nothing, after its check of the
        server, and again once the fault ended and the checks ran."""
        self.redis_outages += 1
        dirty = [t for t, m in self.threads.items() if m.dirty]
        thread = dirty[i % len(dirty)] if dirty else f"{self.prefix}-t{i}"
        model = self.threads[thread]
        had_unflushed_runs = model.dirty
        tag = self._next_tag()
        with contextlib.ExitStack() as stack:
            other = stack.enter_context(TieredSaver.from_conn_string(
                self.redis_server.url, self.postgres_server.url, tenant_id=TEST_TENANT, key_prefix=self.prefix,
                schema=self.schema, flush_policy=FlushPolicy(**QUIET_OFF), background_flush=False,  # type: ignore[arg-type]
                on_redis_error="fallback", redis_check_seconds=3600.0,
            )) if other_reads else None  # fmt: skip
            reads: list[list[str]] = []
            with fault:
                out = self.graph.invoke({"log": [tag]}, self._cfg(thread))
                reads.append(self.graph.get_state(self._cfg(thread)).values.get("log", []))
                if other is not None:
                    other.run_op(other.core.hot.watch.check_op())  # what its background check does
                    reads.append(two_step_graph(other).get_state(self._cfg(thread)).values.get("log", []))
            if other is not None:
                self.saver.run_op(self.saver.core.hot.watch.check_op())  # the writer's background check
                other.run_op(other.core.hot.watch.check_op())
                reads.append(two_step_graph(other).get_state(self._cfg(thread)).values.get("log", []))
                FIGURES.other_process_reads += 2
                # its read may be the one that meets the older branch, flushes and reports it
                self.forks_elsewhere += [t for _, t, _, _ in other.metrics.recent("thread_forks")]
                assert len(self.forks_elsewhere) >= other.metrics.counter("thread_forks")
        assert out["log"] == [*model.flushed_log, tag, "a", "b"]
        assert all(read == out["log"] for read in reads), reads
        assert self.saver.metrics.counter("redis_fallbacks") >= 1
        # Redis' unflushed runs and this run both continue the flushed latest: a fork, reported
        # when the saver next meets the thread and flushes the older branch
        self.expected_forks += had_unflushed_runs
        model.log = list(model.flushed_log)
        self._record(thread, tag)
        # written through to Postgres; what Redis held unflushed is flushed when the saver next
        # meets the thread (the invariants' reads): nothing of it stays unflushed
        FIGURES.redis_outages_dirty += had_unflushed_runs
        model.flushed_log, model.flushed_ids, model.dirty = list(model.log), set(model.ids), False
        FIGURES.faults += 1
        FIGURES.redis_outages += 1
        FIGURES.steps += 1

    @precondition(lambda self: self.runs > 0)
    @rule(i=st.integers(0, THREADS - 1))
    def stalled_flusher(self, i: int) -> None:
        """A flusher reads the thread's outbox and stalls past its lease (a GC pause, SIGSTOP);
        the thread runs on and is flushed by another flusher; the stalled one then commits
        what it read: Postgres refuses it, and nothing moves back."""
        thread = f"{self.prefix}-t{i}"
        self.run(i)  # something to flush
        stalled = self.saver.core.flush.flush_thread_op(TEST_TENANT, thread, lease=FlushLease("stalled", 100))
        request = _step(self.saver, stalled, None)
        while request is not None and not isinstance(request, PgCall):
            request = _step(self.saver, stalled, request)
        assert request is not None, "the thread had unflushed runs"
        time.sleep(0.15)  # its lease lapses
        self.run(i)
        self.flush()
        result = _finish(self.saver, stalled, request)
        FIGURES.stalled_flushes += 1
        FIGURES.stalled_flushes_refused += bool(result.fenced)
        assert result.fenced, "a stalled flusher's commit after a newer flush must be refused"
        FIGURES.faults += 1

    @rule(i=st.integers(0, THREADS - 1))
    def acknowledgement_lost(self, i: int) -> None:
        """A synchronous flush commits the thread's runs and leaves its acknowledgement for the
        background thread; the process dies before it is sent (dropped here) and its lease
        lapses. The entries are still in the outbox: the next flush writes them again."""
        thread = f"{self.prefix}-t{i}"
        self.run(i)
        flush = self.saver.core.flush
        result = self.saver.run_op(
            flush.flush_thread_op(TEST_TENANT, thread, wait=True, lease=FlushLease("lost-ack", 100), defer_ack=True)
        )
        assert result.checkpoints > 0 and len(flush.acks) == 1
        flush.acks._take(None)  # never sent: the process is gone
        model = self.threads[thread]
        # in Postgres: a run written through now continues it, no fork (the entries only wait
        # for a flush that skips what Postgres holds)
        model.flushed_log, model.flushed_ids, model.dirty = list(model.log), set(model.ids), False
        time.sleep(0.15)  # its lease lapses
        FIGURES.acks_lost += 1
        FIGURES.faults += 1

    @precondition(lambda self: CHECK_POSTGRES_READ_FAILURES and self.runs > 0 and self.postgres_outages < OUTAGES_PER_EXAMPLE)
    @rule(i=st.integers(0, THREADS - 1))
    def postgres_read_failure(self, i: int) -> None:
        """Postgres is down and the thread is no longer in Redis (expired): reading it, or
        running it, is a typed error, never an empty state or a conversation started over."""
        thread = f"{self.prefix}-t{i}"
        if self.threads[thread].dirty:
            self.flush()
        self.client.delete(*K.thread_keys(self.prefix, TEST_TENANT, thread))
        self.postgres_outages += 1
        self.postgres_server.stop()
        try:
            with pytest.raises(TierUnavailableError):
                self.graph.get_state(self._cfg(thread))
            with pytest.raises(TierUnavailableError):
                self.graph.invoke({"log": [self._next_tag()]}, self._cfg(thread))
        finally:
            self.postgres_server.start()
        assert wait_for(lambda: self._reads(thread), timeout=30, interval=0.2)  # the breaker probes again
        FIGURES.faults += 1
        FIGURES.postgres_outages += 1
        FIGURES.steps += 1

    @rule(i=st.integers(0, THREADS - 1))
    def second_hot_tier(self, i: int) -> None:
        """A saver with another key prefix over the same schema (a blue/green deploy that skips
        setup()): it may read and run in its own keys, but never flush into the schema, and its
        setup() is refused; the schema's threads are untouched."""
        thread = f"{self.prefix}-t{i}"
        prefix = f"{self.prefix}-green"
        with TieredSaver.from_conn_string(
            self.redis_server.url, self.postgres_server.url, tenant_id=TEST_TENANT, key_prefix=prefix,
            schema=self.schema, flush_policy=FlushPolicy(**QUIET_OFF), background_flush=False,  # type: ignore[arg-type]
        ) as green:  # fmt: skip
            two_step_graph(green).invoke({"log": ["green"]}, self._cfg(thread))
            with pytest.raises(HotTierConflictError):
                green.flush()
            with pytest.raises(HotTierConflictError):
                green.setup()
        for key in self.client.scan_iter(match=f"{prefix}:*", count=1000):
            self.client.delete(key)
        FIGURES.second_hot_tiers_refused += 1
        FIGURES.faults += 1
        FIGURES.steps += 1

    @rule()
    def flush(self) -> None:
        for result in self.saver.flush():
            assert result.lost == 0  # nothing here loses data before its flush
        self._flushed()
        FIGURES.steps += 1

    @rule(i=st.integers(0, THREADS - 1), data=st.data())
    def read_old(self, i: int, data: st.DataObject) -> None:
        thread = f"{self.prefix}-t{i}"
        ids = sorted(self.threads[thread].ids)
        if ids:
            checkpoint_id = data.draw(st.sampled_from(ids))
            state = self.graph.get_state(self._cfg(thread, checkpoint_id))
            assert state.config["configurable"]["checkpoint_id"] == checkpoint_id
        FIGURES.steps += 1

    @rule(i=st.integers(0, THREADS - 1))
    def expire_clean(self, i: int) -> None:
        """A TTL can only end a clean thread: a dirty one keeps no TTL until flushed. Nor does a
        thread whose flush committed but whose acknowledgement was lost: its entries are still
        in the outbox, so its keys keep none either; the TTL ends only the keys that have one."""
        thread = f"{self.prefix}-t{i}"
        tk = K.thread_keys(self.prefix, TEST_TENANT, thread)
        if self.threads[thread].dirty:
            assert all(self.client.pttl(key) == -1 for key in (tk.ck, tk.pend) if self.client.exists(key))
        else:
            expiring = [key for key in tk if self.client.pttl(key) > 0]
            if expiring:
                self.client.delete(*expiring)
            FIGURES.faults += 1
        FIGURES.steps += 1

    @rule(i=st.integers(0, THREADS - 1), name=st.sampled_from(DATA_KEYS))
    def evict_one_key_of_a_clean_thread(self, i: int, name: str) -> None:
        """What volatile-lru may do: evict any key that has a TTL (a clean thread's; not one
        whose acknowledgement was lost, whose entries are still in the outbox)."""
        thread = f"{self.prefix}-t{i}"
        key = getattr(K.thread_keys(self.prefix, TEST_TENANT, thread), name)
        if not self.threads[thread].dirty and self.client.pttl(key) > 0:
            self.client.delete(key)
            FIGURES.faults += 1
        FIGURES.steps += 1

    @precondition(lambda self: self.runs > 0 and self.snapshot is None and self.redis_outages == 0)
    @rule()
    def redis_saves_a_snapshot(self) -> None:
        """Redis writes an RDB snapshot, its default persistence, of what it holds now."""
        self.client.save()
        self.snapshot_without_epoch = self.restarted_since_write  # Redis lost it, no write since
        self.snapshot = {
            t: ThreadModel(list(m.log), set(m.ids), list(m.flushed_log), set(m.flushed_ids), m.dirty)
            for t, m in self.threads.items()
        }  # fmt: skip
        FIGURES.steps += 1

    @precondition(lambda self: self.snapshot is not None and self.redis_outages == 0)
    @rule()
    def redis_restarts_from_the_snapshot(self) -> None:
        """Redis is killed and starts from that snapshot (the epoch in it, the run id new). Each
        thread then reads as the newer of the snapshot's copy and what Postgres holds; runs made
        after the snapshot and not flushed are gone, and the restart was reported."""
        assert self.snapshot is not None
        changes = self.saver.metrics.counter("redis_server_changes")
        self.redis_server.kill()
        shutil.rmtree(self.redis_server.dir / "appendonlydir", ignore_errors=True)
        args = list(self.redis_server.args)
        self.redis_server.args = [*args, "--appendonly", "no"]  # with AOF on, the RDB is not read
        try:
            self.redis_server.start()
        finally:
            self.redis_server.args = args
        self.client.connection_pool.disconnect()  # its connections went with the killed server
        self.client.config_set("appendonly", "yes")  # as configured again, for the other rules
        for thread, model in self.threads.items():
            snap = self.snapshot[thread]
            snapshot_newer = len(snap.log) > len(model.flushed_log)
            if model.dirty and len(model.log) > max(len(snap.log), len(model.flushed_log)):
                FIGURES.lost_to_snapshot_restores += 1
            if snapshot_newer:
                model.log, model.ids, model.dirty = list(snap.log), set(snap.ids), snap.dirty
            else:
                model.log, model.ids, model.dirty = list(model.flushed_log), set(model.flushed_ids), False
        self.snapshot = None
        if self.snapshot_without_epoch:  # the next write finds no epoch: a loss, reported
            self.restarted_since_write = True
        self.graph.get_state(self._cfg(f"{self.prefix}-t0"))  # the process meets the new server
        # reported (a check in the background at the same moment may count it twice)
        assert self.saver.metrics.counter("redis_server_changes") > changes
        FIGURES.snapshot_restores += 1
        FIGURES.faults += 1
        FIGURES.steps += 1

    @precondition(lambda self: self.runs > 0)
    @rule()
    def redis_restarts_empty(self) -> None:
        """No persistence: everything Redis held is gone, the unflushed runs with it."""
        for key in self.client.scan_iter(match=f"{self.prefix}:*", count=1000):
            self.client.delete(key)
        self.client.delete(K.epoch_key(self.prefix))
        for model in self.threads.values():
            if model.dirty:
                FIGURES.losses_reported += 1  # checked on the next write, below
            model.log, model.ids, model.dirty = list(model.flushed_log), set(model.flushed_ids), False
        self.restarts += 1
        self.restarted_since_write = True
        self.snapshot = None  # its epoch is gone: a restore would be a loss of its own
        FIGURES.faults += 1
        FIGURES.steps += 1

    @precondition(lambda self: self.runs > 0)
    @rule(i=st.integers(0, THREADS - 1))
    def a_node_restarts_empty_and_a_new_process_learns_the_epoch(self, i: int) -> None:
        """A Cluster node restarts empty while the node with the deployment's epoch keeps it
        (here: every key of thread i's shard deleted, the epoch kept), and a process that starts
        then reads before any write reaches that shard. It reports the loss: the shard's copy of
        the epoch it puts back hides it from the writes there. The shard's threads read as
        Postgres holds them."""
        thread = f"{self.prefix}-t{i}"
        shard = K.shard_of(TEST_TENANT, thread)
        # none when Redis restarted empty since and no process learned an epoch after: the
        # process that starts now sets a new one, and the first write of the others says it
        epoch_kept = bool(self.client.exists(K.epoch_key(self.prefix)))
        for key in self.client.scan_iter(match=f"{K.shard_prefix(self.prefix, shard)}:*", count=1000):
            self.client.delete(key)
        for t, model in self.threads.items():
            if K.shard_of(TEST_TENANT, t) == shard:
                FIGURES.losses_reported += int(model.dirty)
                model.log, model.ids, model.dirty = list(model.flushed_log), set(model.flushed_ids), False
        with TieredSaver.from_conn_string(
            self.redis_server.url, self.postgres_server.url, tenant_id=TEST_TENANT, key_prefix=self.prefix,
            schema=self.schema, background_flush=False,
        ) as other:  # fmt: skip
            found = other.get_tuple(self._cfg(thread))
            assert (found.checkpoint["channel_values"].get("log", []) if found else []) == self.threads[thread].log
            assert other.metrics.counter("redis_data_lost") == int(epoch_kept)
        FIGURES.shard_losses += 1
        FIGURES.faults += 1
        FIGURES.steps += 1

    # ------------------------------------------------------------------ invariants

    @invariant()
    def latest_never_regresses(self) -> None:
        if not hasattr(self, "threads"):
            return
        for thread, model in self.threads.items():
            state = self.graph.get_state(self._cfg(thread))
            assert state.values.get("log", []) == model.log, thread

    @invariant()
    def every_returned_put_is_readable_and_listed(self) -> None:
        if not hasattr(self, "threads"):
            return
        for thread, model in self.threads.items():
            listed = {t.checkpoint["id"] for t in self.saver.list(self._cfg(thread))}
            assert listed == model.ids, thread
            for checkpoint_id in model.ids:
                assert self.saver.get_tuple(self._cfg(thread, checkpoint_id)) is not None

    @invariant()
    def forks_are_reported(self) -> None:
        if not hasattr(self, "threads"):
            return
        for thread in self.threads:  # meeting each thread flushes a stale branch (and reports it)
            self.graph.get_state(self._cfg(thread))
        assert self.saver.metrics.counter("thread_forks") + len(self.forks_elsewhere) == self.expected_forks

    @invariant()
    def a_lost_redis_is_reported_once_per_loss(self) -> None:
        if not hasattr(self, "threads"):
            return
        assert self.saver.metrics.counter("redis_data_lost") == self.expected_reports


def _step(saver: TieredSaver, op: Any, request: Any) -> Any:
    """Send `op` the result of `request` (None: start it); its next request, or None once done."""
    try:
        if request is None:
            return next(op)
        try:
            reply = saver.run_op(_one(request))
        except Exception as exc:
            return op.throw(exc)
        return op.send(reply)
    except StopIteration:
        return None


def _finish(saver: TieredSaver, op: Any, request: Any) -> Any:
    """Run a stepped op to its end (failures thrown into it); its result."""
    while True:
        try:
            try:
                reply = saver.run_op(_one(request))
            except Exception as exc:
                request = op.throw(exc)
                continue
            request = op.send(reply)
        except StopIteration as stop:
            return stop.value


def _one(request: Any) -> Any:
    return (yield request)


@pytest.fixture
def model_env(make_private_redis: Any, make_private_postgres: Any) -> tuple[PrivateRedis, PrivatePostgres, str]:
    """Private servers the model may stop: Redis with an fsynced AOF (it comes back with what it
    held) and volatile-lru, Postgres with the schema set up."""
    redis_server: PrivateRedis = make_private_redis(
        "--maxmemory-policy", "volatile-lru", "--appendonly", "yes", "--appendfsync", "always"
    )
    postgres_server: PrivatePostgres = make_private_postgres()
    schema = "lts_model"
    with TieredSaver.from_conn_string(redis_server.url, postgres_server.url, tenant_id=TEST_TENANT, schema=schema) as saver:
        saver.setup()
    return redis_server, postgres_server, schema


def test_the_tiers_agree_with_the_model(model_env: tuple[PrivateRedis, PrivatePostgres, str]) -> None:
    TieredModel.redis_server, TieredModel.postgres_server, TieredModel.schema = model_env
    examples = SOAK_EXAMPLES or 12
    run_state_machine_as_test(
        TieredModel,
        settings=settings(
            max_examples=examples, stateful_step_count=12 if not SOAK_EXAMPLES else 30, deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )  # fmt: skip
    print(
        f"\nmodel-based test: {FIGURES.examples} examples, {FIGURES.steps} steps, {FIGURES.faults} faults "
        f"(expiry, eviction, Redis restarts; {FIGURES.postgres_outages} Postgres outages, "
        f"{FIGURES.redis_outages} Redis outages with fallback ({FIGURES.redis_demotions} demotions to a replica, "
        f"{FIGURES.other_process_reads} reads of their threads by another process), "
        f"{FIGURES.redis_outages_dirty} of a thread with unflushed runs), {FIGURES.checkpoints} checkpoints, "
        f"{FIGURES.losses_reported} threads' unflushed runs lost with a reported Redis loss, "
        f"{FIGURES.losses_unreported} unreported losses, {FIGURES.stalled_flushes} stalled flushers "
        f"({FIGURES.stalled_flushes_refused} refused by the fence), {FIGURES.acks_lost} acknowledgements lost, {FIGURES.snapshot_restores} restarts from an "
        f"older snapshot ({FIGURES.lost_to_snapshot_restores} threads' unflushed runs since the snapshot lost, "
        f"each restart reported), {FIGURES.forks_reported} forks reported, {FIGURES.silent_forks} silent forks, "
        f"{FIGURES.second_hot_tiers_refused} second hot tiers refused, {FIGURES.shard_losses} shards lost with "
        "their node and reported by a process that started then"
    )
