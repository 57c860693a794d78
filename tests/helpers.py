"""Small helpers every test module shares: configs, waiting, counting durable rows."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg

TEST_TENANT = "t-test"  # the tenant the `saver_context` savers are bound to

# A FlushPolicy that never flushes on its own: the test decides when (flush(), close()).
QUIET_OFF: dict[str, Any] = dict(quiet_seconds=3600.0, every_n_checkpoints=0, on_close=False)


def thread_config(thread: str | None = None, **extra: Any) -> dict[str, Any]:
    """A RunnableConfig for `thread` (a new thread id when None) plus `extra` configurable keys."""
    return {"configurable": {"thread_id": f"t-{uuid.uuid4().hex[:8]}" if thread is None else thread, **extra}}


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
