"""Postgres faults on private servers: a frozen server costs at most the configured
timeout, an outage costs new threads no wait after the first, and misconfiguration gets an
error that says what is wrong instead of "unreachable"."""

from __future__ import annotations

import logging
import operator
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Annotated, Any, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt

from devtools.servers import PrivatePostgres
from langgraph_tiered_saver import TieredSaver, TierUnavailableError
from langgraph_tiered_saver.errors import (
    DatabaseMissingError,
    PostgresAuthError,
    SchemaMissingError,
)
from langgraph_tiered_saver.flush import FlushPolicy
from tests.helpers import TEST_TENANT, pg_rows, thread_config, wait_for

pytestmark = pytest.mark.faults


class S(TypedDict, total=False):
    log: Annotated[list[str], operator.add]


def ask_graph(checkpointer: Any) -> Any:
    """prepare -> ask (interrupt: a synchronous flush to Postgres by default)."""
    g = StateGraph(S)
    g.add_node("prepare", lambda s: {"log": ["prepare"]})
    g.add_node("ask", lambda s: {"log": [str(interrupt("approve?"))]})
    g.add_edge(START, "prepare")
    g.add_edge("prepare", "ask")
    g.add_edge("ask", END)
    return g.compile(checkpointer=checkpointer)




@pytest.fixture
def pg(make_private_postgres: Callable[..., PrivatePostgres]) -> Iterator[PrivatePostgres]:
    server = make_private_postgres()
    yield server
    server.thaw()


def _saver(redis_url: str, url: str, **options: Any) -> Any:
    return TieredSaver.from_conn_string(
        redis_url, url, tenant_id=TEST_TENANT, key_prefix=f"ltstest-{uuid.uuid4().hex[:8]}",
        flush_policy=FlushPolicy(quiet_seconds=3600, every_n_checkpoints=0, on_close=False), **options,
    )  # fmt: skip


def test_a_frozen_postgres_costs_at_most_the_timeout(pg: PrivatePostgres, redis_url: str) -> None:
    with _saver(redis_url, pg.url, pg_timeout=1.0, pg_statement_timeout=1.0) as saver:
        saver.setup()
        graph = ask_graph(saver)
        graph.invoke({"log": []}, thread_config())  # warm the pool: its connections now hang on the frozen server
        pg.freeze()
        try:
            cfg = thread_config()
            started = time.monotonic()
            out = graph.invoke({"log": []}, cfg)
            elapsed = time.monotonic() - started
            assert "__interrupt__" in out
            assert graph.get_state(cfg).next == ("ask",)  # the pause is in Redis, and in the outbox
            print(f"frozen Postgres: invoke to the interrupt took {elapsed:.2f} s (statement timeout 1 s, deadline 2 s)")
            assert elapsed < 6.0  # without the client deadline it blocked 25 s and more
            assert saver.metrics.counter("postgres_outages") == 1
        finally:
            pg.thaw()
        assert wait_for(lambda: _flushed(saver, cfg), 15)
        assert pg_rows(pg.url, saver.schema, cfg["configurable"]["thread_id"]) == 3


def _flushed(saver: Any, cfg: dict[str, Any]) -> bool:
    try:
        return bool(saver.flush(cfg)[0].checkpoints)
    except TierUnavailableError:  # the breaker's window is not over yet
        return False


def test_new_threads_do_not_wait_during_an_outage(
    pg: PrivatePostgres, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with _saver(redis_url, pg.url, pg_timeout=2.0) as saver:
        saver.setup()
        graph = ask_graph(saver)
        pg.stop()
        caplog.set_level(logging.WARNING, logger="langgraph_tiered_saver")
        times = []
        for _ in range(10):
            started = time.monotonic()
            assert "__interrupt__" in graph.invoke({"log": []}, thread_config())
            times.append(time.monotonic() - started)
        later = statistics.median(times[1:])
        print(f"Postgres down: first new thread {times[0]:.2f} s, the next 9 median {later * 1000:.1f} ms")
        assert later < 0.5  # each waited pg_timeout (2 s) before the circuit breaker
        outage_logs = [r for r in caplog.records if "Postgres unavailable" in r.getMessage()]
        assert len(outage_logs) == 1  # one warning per outage, not one per call
        assert saver.metrics.counter("postgres_outages") == 1
        assert saver.metrics.counter("postgres_fast_failures") > 0


def test_a_wrong_password_is_an_auth_error(pg: PrivatePostgres, redis_url: str) -> None:
    pg.require_password("lts_pw", "right")
    url = pg.url.replace("postgres@", "lts_pw:wrong@")
    with _saver(redis_url, url, pg_timeout=1.0) as saver, pytest.raises(PostgresAuthError, match="password authentication failed"):
        saver.setup()


def test_a_missing_database_says_so(redis_url: str, postgres_url: str) -> None:
    url = postgres_url.rsplit("/", 1)[0] + "/no_such_database_lts"
    with _saver(redis_url, url, pg_timeout=1.0) as saver, pytest.raises(DatabaseMissingError, match="does not exist"):
        saver.setup()


def test_missing_tables_ask_for_setup(redis_url: str, test_database_url: str) -> None:
    schema = f"never_set_up_{uuid.uuid4().hex[:6]}"
    with _saver(redis_url, test_database_url, schema=schema) as saver, pytest.raises(SchemaMissingError, match=r"setup\(\)"):
        saver.get_tuple(thread_config())  # a new thread: the cascade asks Postgres, which has no tables


def test_an_unreachable_server_is_unavailable(redis_url: str) -> None:
    from devtools.servers import free_port

    url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    with _saver(redis_url, url, pg_timeout=0.5) as saver:
        with pytest.raises(TierUnavailableError, match="postgres is unreachable"):
            saver.setup()
        assert saver.get_tuple(thread_config()) is None  # reads go on from Redis alone
