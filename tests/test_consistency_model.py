"""A stateful, model-based test of the tiers (issue 10): hypothesis interleaves graph runs,
reads of old checkpoints by id, flushes, expiry and eviction of clean threads (deleting keys
the way a TTL or a volatile-* LRU policy would), eviction of any key (as allkeys-lru would),
and Redis restarting empty. After every step it checks against a reference model:

- the latest checkpoint of every thread is the model's (it never regresses);
- every checkpoint whose put returned is readable by id, unless its loss was reported;
- `list` answers with exactly the model's checkpoints (both tiers merged);
- a Redis that lost data is reported (`redis_data_lost`) on the next write, once.

CI runs a bounded version; `make soak` runs `LTS_SOAK_EXAMPLES` (default 300) examples and
prints the figures.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
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

from devtools.servers import PrivateRedis
from langgraph_tiered_saver import FlushPolicy, TieredSaver
from langgraph_tiered_saver import keys as K
from tests.graphs import two_step_graph
from tests.helpers import QUIET_OFF, TEST_TENANT

SOAK_EXAMPLES = int(os.environ.get("LTS_SOAK_EXAMPLES", "0"))
THREADS = 3
DATA_KEYS = ("idx", "ck", "cv", "bl", "wi", "wr")


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
    checkpoints: int = 0
    losses_reported: int = 0
    losses_unreported: int = 0


FIGURES = Figures()


class TieredModel(RuleBasedStateMachine):
    redis_url = ""
    postgres_url = ""
    schema = ""

    @initialize()
    def start(self) -> None:
        FIGURES.examples += 1
        self.prefix = f"m-{uuid.uuid4().hex[:8]}"
        self.client = redis.Redis.from_url(self.redis_url)
        self.context = TieredSaver.from_conn_string(
            self.redis_url, self.postgres_url, tenant_id=TEST_TENANT, key_prefix=self.prefix, schema=self.schema,
            flush_policy=FlushPolicy(**QUIET_OFF), background_flush=False,  # type: ignore[arg-type]
        )  # fmt: skip
        self.saver = self.context.__enter__()
        self.graph = two_step_graph(self.saver)
        self.threads = {f"{self.prefix}-t{i}": ThreadModel() for i in range(THREADS)}
        self.restarts = 0
        self.runs = 0
        self.restarted_since_write = False
        self.expected_reports = 0

    def teardown(self) -> None:
        self.context.__exit__(None, None, None)
        self.client.close()

    def _cfg(self, thread: str, checkpoint_id: str | None = None) -> dict[str, Any]:
        configurable: dict[str, Any] = {"thread_id": thread}
        if checkpoint_id is not None:
            configurable["checkpoint_id"] = checkpoint_id
        return {"configurable": configurable}

    # ------------------------------------------------------------------ rules

    @rule(i=st.integers(0, THREADS - 1))
    def run(self, i: int) -> None:
        thread = f"{self.prefix}-t{i}"
        model = self.threads[thread]
        tag = f"r{self.runs}"
        self.runs += 1
        out = self.graph.invoke({"log": [tag]}, self._cfg(thread))
        if self.restarted_since_write:  # this write found the epoch gone: reported, once
            self.expected_reports += 1
            self.restarted_since_write = False
        assert self.saver.metrics.counter("redis_data_lost") == self.expected_reports
        model.log = [*model.log, tag, "a", "b"]
        assert out["log"] == model.log
        ids = {s.config["configurable"]["checkpoint_id"] for s in self.graph.get_state_history(self._cfg(thread))}
        FIGURES.checkpoints += len(ids - model.ids)
        model.ids |= ids
        model.dirty = True
        FIGURES.steps += 1

    @rule()
    def flush(self) -> None:
        for result in self.saver.flush():
            assert result.lost == 0  # nothing here loses data before its flush
        for model in self.threads.values():
            model.flushed_log, model.flushed_ids, model.dirty = list(model.log), set(model.ids), False
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
        """A TTL can only end a clean thread: a dirty one keeps no TTL until flushed."""
        thread = f"{self.prefix}-t{i}"
        tk = K.thread_keys(self.prefix, TEST_TENANT, thread)
        if self.threads[thread].dirty:
            assert all(self.client.pttl(key) == -1 for key in (tk.ck, tk.pend) if self.client.exists(key))
        else:
            self.client.delete(*tk)
            FIGURES.faults += 1
        FIGURES.steps += 1

    @rule(i=st.integers(0, THREADS - 1), name=st.sampled_from(DATA_KEYS))
    def evict_one_key_of_a_clean_thread(self, i: int, name: str) -> None:
        """What volatile-lru may do: evict any key that has a TTL (a clean thread's)."""
        thread = f"{self.prefix}-t{i}"
        if not self.threads[thread].dirty:
            self.client.delete(getattr(K.thread_keys(self.prefix, TEST_TENANT, thread), name))
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
    def a_lost_redis_is_reported_once_per_loss(self) -> None:
        if not hasattr(self, "threads"):
            return
        assert self.saver.metrics.counter("redis_data_lost") == self.expected_reports


@pytest.fixture
def model_env(test_database_url: str, make_private_redis: Any) -> Iterator[tuple[str, str, str]]:
    server: PrivateRedis = make_private_redis("--maxmemory-policy", "volatile-lru")
    schema = f"lts_model_{uuid.uuid4().hex[:8]}"
    with TieredSaver.from_conn_string(server.url, test_database_url, tenant_id=TEST_TENANT, schema=schema) as saver:
        saver.setup()
    yield server.url, test_database_url, schema
    with psycopg.connect(test_database_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def test_the_tiers_agree_with_the_model(model_env: tuple[str, str, str]) -> None:
    TieredModel.redis_url, TieredModel.postgres_url, TieredModel.schema = model_env
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
        f"(expiry, eviction, Redis restarts), {FIGURES.checkpoints} checkpoints, "
        f"{FIGURES.losses_reported} threads' unflushed runs lost with a reported Redis loss, "
        f"{FIGURES.losses_unreported} unreported losses"
    )
