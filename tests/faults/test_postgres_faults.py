"""Postgres faults on private servers: a frozen server costs at most the configured timeout, an
outage costs no wait after its first call (threads Redis holds go on; one it does not hold gets a
typed error at once: only Postgres can say it is new), and misconfiguration gets an error that
says what is wrong instead of "unreachable"."""

from __future__ import annotations

import logging
import operator
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt

from devtools.servers import PrivatePostgres, delete_keys
from langgraph_tiered_saver import TieredSaver, TierUnavailableError
from langgraph_tiered_saver.errors import (
    DatabaseMissingError,
    PostgresAuthError,
    SchemaMissingError,
)
from langgraph_tiered_saver.flushing.ops import FlushPolicy
from tests.helpers import TEST_TENANT, new_prefix, pg_rows, thread_config, wait_for

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


@contextmanager
def _saver(redis_url: str, url: str, **options: Any) -> Iterator[Any]:
    prefix = new_prefix()
    try:
        with TieredSaver.from_conn_string(
            redis_url, url, tenant_id=TEST_TENANT, key_prefix=prefix,
            flush_policy=FlushPolicy(quiet_seconds=3600, every_n_checkpoints=0, on_close=False), **options,
        ) as saver:  # fmt: skip
            yield saver
    finally:
        delete_keys(redis_url, f"{prefix}:*")


def test_a_frozen_postgres_costs_at_most_the_timeout(pg: PrivatePostgres, redis_url: str) -> None:
    with _saver(redis_url, pg.url, pg_timeout=1.0, pg_statement_timeout=1.0) as saver:
        saver.setup()
        graph = ask_graph(saver)
        cfg = thread_config()
        graph.invoke({"log": []}, cfg)  # warm the pool: its connections now hang on the frozen server
        rows_before = pg_rows(pg.url, saver.schema, cfg["configurable"]["thread_id"])
        pg.freeze()
        try:
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
        assert pg_rows(pg.url, saver.schema, cfg["configurable"]["thread_id"]) > rows_before


def _flushed(saver: Any, cfg: dict[str, Any]) -> bool:
    try:
        return bool(saver.flush(cfg)[0].checkpoints)
    except TierUnavailableError:  # the breaker's window is not over yet
        return False


def test_an_outage_costs_no_wait_after_its_first_call(
    pg: PrivatePostgres, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Threads Redis holds run through the outage; a thread it does not hold fails at once with
    a typed error (the breaker), never started over from nothing."""
    with _saver(redis_url, pg.url, pg_timeout=2.0) as saver:
        saver.setup()
        graph = ask_graph(saver)
        held = [thread_config() for _ in range(10)]
        for cfg in held:
            graph.invoke({"log": []}, cfg)
        pg.stop()
        caplog.set_level(logging.WARNING, logger="langgraph_tiered_saver")
        times = []
        for cfg in held:
            started = time.monotonic()
            assert "__interrupt__" in graph.invoke({"log": []}, cfg)
            times.append(time.monotonic() - started)
        later = statistics.median(times[1:])
        print(f"Postgres down: first held thread {times[0]:.2f} s, the next 9 median {later * 1000:.1f} ms")
        assert later < 0.5  # each waited pg_timeout (2 s) before the circuit breaker
        started = time.monotonic()
        with pytest.raises(TierUnavailableError, match="postgres"):
            graph.invoke({"log": []}, thread_config())  # a thread Redis does not hold
        assert time.monotonic() - started < 0.5
        outage_logs = [r for r in caplog.records if "Postgres unavailable" in r.getMessage()]
        assert len(outage_logs) == 1  # one warning per outage, not one per call
        assert saver.metrics.counter("postgres_outages") == 1
        assert saver.metrics.counter("postgres_fast_failures") > 0


def test_a_wrong_password_is_an_auth_error(pg: PrivatePostgres, redis_url: str) -> None:
    pg.require_password("lts_pw", "right")
    url = pg.url.replace("postgres@", "lts_pw:wrong@")
    with pytest.raises(PostgresAuthError, match="password authentication failed"), _saver(redis_url, url, pg_timeout=1.0) as saver:
        saver.setup()


def test_a_missing_database_says_so(redis_url: str, postgres_url: str) -> None:
    url = postgres_url.rsplit("/", 1)[0] + "/no_such_database_lts"
    with pytest.raises(DatabaseMissingError, match="does not exist"), _saver(redis_url, url, pg_timeout=1.0) as saver:
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
        with pytest.raises(TierUnavailableError, match="postgres"):  # a thread Redis does not hold:
            saver.get_tuple(thread_config())  # only Postgres can tell it is new
