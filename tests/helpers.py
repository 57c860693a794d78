"""Small helpers every test module shares: configs, waiting, counting durable rows."""

from __future__ import annotations

import gc
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

TEST_TENANT = "t-test"  # the tenant the `saver_context` savers are bound to

# Every Redis key prefix of one test run starts with `ltstest-<run>-`, inherited by subprocess
# children through the environment: the session-end check (conftest.py) finds what this run
# left behind, and never another run's keys on a shared server.
RUN_ID = os.environ.setdefault("LTS_TEST_RUN", uuid.uuid4().hex[:6])
RUN_PREFIX = f"ltstest-{RUN_ID}-"


PREFIX_OWNERS: dict[str, str] = {}  # prefix -> the test that made it (for the leak report)


def new_prefix() -> str:
    """A fresh key prefix for one saver of this test run."""
    prefix = f"{RUN_PREFIX}{uuid.uuid4().hex[:8]}"
    PREFIX_OWNERS[prefix] = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" ", 1)[0]
    return prefix

# A FlushPolicy that never flushes on its own: the test decides when (flush(), close()).
QUIET_OFF: dict[str, Any] = dict(quiet_seconds=3600.0, every_n_checkpoints=0, on_close=False)


def thread_config(thread: str | None = None, **extra: Any) -> dict[str, Any]:
    """A RunnableConfig for `thread` (a new thread id when None) plus `extra` configurable keys."""
    return {"configurable": {"thread_id": f"t-{uuid.uuid4().hex[:8]}" if thread is None else thread, **extra}}


def collector_spy() -> tuple[JsonPlusSerializer, list[bool]]:
    """A serializer that records, for each value it deserializes, whether the cyclic garbage
    collector was on (records/collection.py), and the list it records into."""
    serde = JsonPlusSerializer()
    collecting: list[bool] = []
    loads_typed = serde.loads_typed

    def spying(data: tuple[str, bytes]) -> Any:
        collecting.append(gc.isenabled())
        return loads_typed(data)

    serde.loads_typed = spying  # type: ignore[method-assign]
    return serde, collecting


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll `predicate` until it holds or `timeout` passes; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def pg_rows(url: str, schema: str, thread: str | None = None, table: str = "checkpoints") -> int:
    """Rows in a durable table, read as superuser (bypassing RLS) for counting."""
    with psycopg.connect(url, autocommit=True) as conn:
        if thread is None:
            return conn.execute(f'SELECT count(*) FROM "{schema}".{table}').fetchone()[0]  # type: ignore[index]
        return conn.execute(  # type: ignore[index]
            f'SELECT count(*) FROM "{schema}".{table} WHERE thread_id = %s', (thread,)
        ).fetchone()[0]


class ManualClock:
    """A clock for a saver's `clock=` (or a `Scheduler`) that moves only when told: a test
    advances it past a deadline and waits for the scheduler to catch up, instead of sleeping."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float, scheduler: Any = None) -> None:
        """Move on `seconds`; with `scheduler`, return once it has run every turn due by now."""
        self.now += seconds
        if scheduler is not None:
            scheduler.poke()
            assert wait_for(scheduler.caught_up), "the scheduler did not catch up with the clock"
