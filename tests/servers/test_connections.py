"""Clients and pools (connections.py) against real servers: twins built either way, pools users
size, bursts that wait instead of failing, and a clear error when a pool stays busy."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest
import redis
import redis.asyncio
from langgraph.checkpoint.base import empty_checkpoint
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from devtools.servers import delete_keys
from langgraph_tiered_saver import ConfigError, TieredSaver
from langgraph_tiered_saver._core.connections import (
    AsyncBlockingPool,
    PoolOptions,
    redis_settings,
    redis_twin,
)
from langgraph_tiered_saver._sansio.io import RedisCall
from langgraph_tiered_saver.errors import PoolExhaustedError
from tests.graphs import two_step_graph
from tests.helpers import TEST_TENANT, new_prefix, thread_config


def test_twin_keeps_the_public_settings_and_drops_internal_ones(redis_url: str) -> None:
    url = redis.connection.parse_url(redis_url)
    client = redis.Redis(host=url["host"], port=url["port"], db=3, socket_timeout=7.5, client_name="lts-twin-test")
    settings = redis_settings(client)
    assert (settings["db"], settings["socket_timeout"], settings["client_name"]) == (3, 7.5, "lts-twin-test")
    assert "himport_registry" not in settings and "retry" not in settings
    twin = redis_twin(client, PoolOptions(redis_max_connections=3), asyncio=True)
    kwargs = twin.connection_pool.connection_kwargs
    assert (kwargs["db"], kwargs["socket_timeout"], kwargs["client_name"]) == (3, 7.5, "lts-twin-test")
    assert twin.connection_pool.max_connections == 3
    back = redis_twin(twin, PoolOptions(), asyncio=False)
    assert back.ping() and back.connection_pool.connection_kwargs["db"] == 3
    back.close()
    client.close()


def test_a_sync_client_serves_ainvoke(redis_url: str, test_database_url: str) -> None:
    """Only blocking clients given: the async twins are built on first use (redis-py 8 broke this)."""
    client = redis.Redis.from_url(redis_url)
    pool = ConnectionPool(test_database_url, kwargs={"autocommit": True}, open=True)
    saver = TieredSaver(client, pg_pool=pool, tenant_id=TEST_TENANT, key_prefix=new_prefix(),
                        schema=f"lts_{uuid.uuid4().hex[:8]}")  # fmt: skip
    try:
        saver.setup()
        cfg = thread_config()
        out = asyncio.run(two_step_graph(saver).ainvoke({"log": []}, cfg))
        assert out["log"] == ["a", "b"]
        assert saver.flush(cfg)[0].checkpoints == 4
    finally:
        saver.close()
        delete_keys(redis_url, f"{saver.key_prefix}:*")
        client.close()
        pool.close()


async def test_an_async_client_serves_invoke_and_the_flusher(redis_url: str, test_database_url: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    pool = AsyncConnectionPool(test_database_url, kwargs={"autocommit": True}, open=False)
    await pool.open()
    saver = TieredSaver(None, client, apg_pool=pool, tenant_id=TEST_TENANT, key_prefix=new_prefix(),
                        schema=f"lts_{uuid.uuid4().hex[:8]}")  # fmt: skip
    try:
        await saver.asetup()
        cfg = thread_config()
        out = await asyncio.to_thread(two_step_graph(saver).invoke, {"log": []}, cfg)
        assert out["log"] == ["a", "b"]
        deadline = time.monotonic() + 15  # the background flusher (sync twins) drains it
        while time.monotonic() < deadline and saver.metrics.counter("flushed_checkpoints") < 4:
            await asyncio.sleep(0.1)
        assert saver.metrics.counter("flushed_checkpoints") == 4
    finally:
        await saver.aclose()
        delete_keys(redis_url, f"{saver.key_prefix}:*")
        await client.aclose()
        await pool.close()


async def test_500_concurrent_runs_on_one_saver_all_succeed(saver_context: Callable[..., Any]) -> None:
    """Far more concurrent runs than Redis connections: the blocking pool makes them wait. (Each
    new thread's first read asks Postgres: 500 at once on one saturated event loop wait for a
    pooled connection longer than the default 2 s, which counts the loop's whole backlog.)"""
    async with saver_context(durable=True, redis_max_connections=16, pg_max_size=16, pg_timeout=20.0) as saver:
        await saver.asetup()
        graph = two_step_graph(saver)
        started = time.perf_counter()
        results = await asyncio.gather(
            *(graph.ainvoke({"log": []}, thread_config()) for _ in range(500)), return_exceptions=True
        )
        elapsed = time.perf_counter() - started
        failures = [r for r in results if isinstance(r, BaseException)]
        assert not failures, failures[:3]
        assert all(r["log"] == ["a", "b"] for r in results)  # type: ignore[index]
        assert saver._conn.aredis.connection_pool.max_connections == 16
        print(f"500 concurrent ainvoke: 0 failed, {elapsed:.1f} s, 16 Redis connections")


def test_a_pool_that_stays_busy_says_so(redis_url: str) -> None:
    prefix = new_prefix()
    try:
        with TieredSaver.from_conn_string(
            redis_url, tenant_id=TEST_TENANT, key_prefix=prefix,
            redis_max_connections=1, redis_pool_timeout=0.2,
        ) as saver:  # fmt: skip
            held = saver._conn.redis.connection_pool.get_connection("PING")
            try:
                with pytest.raises(PoolExhaustedError, match="every pooled connection stayed busy"):
                    saver.get_tuple(thread_config())
            finally:
                saver._conn.redis.connection_pool.release(held)
            assert saver.get_tuple(thread_config()) is None
    finally:
        delete_keys(redis_url, f"{prefix}:*")  # the deployment's epoch and shard marks


async def test_the_async_pool_stays_bounded_and_waits_when_no_connection_is_idle(redis_url: str) -> None:
    """Its checkout takes an idle connection at once; a burst beyond its size waits for one (no
    "Too many connections"), and a wait past its timeout fails as redis-py's does."""
    name = f"lts-pool-{uuid.uuid4().hex[:8]}"
    # a burst waits as long as it takes (a slow or busy machine); the wait past a timeout below
    pool = AsyncBlockingPool.from_url(redis_url, max_connections=2, timeout=30.0, client_name=name)
    client = redis.asyncio.Redis(connection_pool=pool)
    observer = redis.Redis.from_url(redis_url)
    try:
        for _ in range(20):
            assert await client.ping()
        assert all(r == b"PONG" or r is True for r in await asyncio.gather(*(client.ping() for _ in range(200))))
        assert sum(1 for c in observer.client_list() if c.get("name") == name) == 2
        held = [await pool.get_connection("PING"), await pool.get_connection("PING")]
        pool.timeout = 0.3
        with pytest.raises(redis.exceptions.ConnectionError, match="No connection available"):
            await client.ping()
        waiting = asyncio.ensure_future(client.ping())  # waits for a release, then goes on
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await pool.release(held.pop())
        assert await waiting
        await pool.release(held.pop())
    finally:
        await client.aclose()
        observer.close()


def test_a_busy_postgres_pool_is_not_called_unreachable(saver_context: Callable[..., Any]) -> None:
    with saver_context(durable=True, pg_max_size=1, pg_timeout=0.3) as saver:
        saver.setup()
        with saver._conn.pg.connection(), pytest.raises(PoolExhaustedError, match="no pooled connection free"):
            saver.prune_older_than(timedelta(days=1))  # the only connection is held
        assert saver.prune_older_than(timedelta(days=1)).checkpoints == 0


def test_prepared_statements_are_off_by_default(saver_context: Callable[..., Any]) -> None:
    with saver_context(durable=True) as saver:
        saver.setup()
        cfg = thread_config()
        graph = two_step_graph(saver)
        for _ in range(8):  # more executions than psycopg's default threshold (5)
            graph.invoke({"log": []}, cfg)
            saver.flush(cfg)
        with saver._conn.pg.connection() as conn:
            assert conn.prepare_threshold is None
            assert conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone() == (0,)


@pytest.mark.parametrize(
    ("option", "value"),
    [("redis_max_connections", 0), ("redis_max_connections", True), ("redis_pool_timeout", -1),
     ("pg_max_size", "10"), ("pg_prepare_threshold", -1)],
)  # fmt: skip
def test_pool_options_are_checked(option: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=option):
        PoolOptions(**{option: value})
    with pytest.raises(ConfigError, match="pg_min_size"):
        PoolOptions(pg_min_size=5, pg_max_size=2)


def test_psycopg_pool_kwargs(test_database_url: str) -> None:
    options = PoolOptions(pg_prepare_threshold=5)
    with ConnectionPool(test_database_url, open=True, **options.pg_kwargs()) as pool, pool.connection() as conn:
        assert isinstance(conn, psycopg.Connection) and conn.prepare_threshold == 5


def _first_put() -> tuple[Any, Any, Any, Any]:
    """The arguments of a new thread's first put."""
    cfg = {"configurable": {**thread_config()["configurable"], "checkpoint_ns": ""}}
    return cfg, empty_checkpoint(), {"source": "input", "step": -1, "parents": {}}, {}


def test_a_new_savers_first_write_is_one_round_trip(saver_context: Callable[..., Any], redis_url: str) -> None:
    """A process' first read learns the deployment's Redis epoch (one SET per shard) and the
    eviction policy, as it checks the server: the first write of a run, which follows its first
    read, is one round trip like every other. LangGraph sends a task's writes after the put of
    its step, and a slow first put reorders what a run streams (LangGraph's test_imp_nested)."""
    with saver_context(durable=True) as saver:
        saver.setup()
        assert saver.core.hot.epoch.value is None
        cfg, *rest = _first_put()
        assert saver.get_tuple(cfg) is None  # a run's first call
        epoch = saver.core.hot.epoch.value
        assert epoch is not None
        requests: list[str] = []
        execute = saver._sync._execute

        def counted(request: Any) -> Any:
            if isinstance(request, RedisCall):
                requests.append(",".join(str(command[0]) for command in request.commands))
            return execute(request)

        saver._sync._execute = counted
        saver.put(cfg, *rest)
        assert requests == ["EVALSHA"]
        assert saver.core.hot.epoch.value == epoch
        client = redis.Redis.from_url(redis_url)
        assert client.get(saver.core.hot.epoch.key).decode() == epoch
        client.close()


async def test_a_new_async_savers_first_write_is_one_round_trip(saver_context: Callable[..., Any]) -> None:
    async with saver_context(durable=True) as saver:
        await saver.asetup()
        cfg, *rest = _first_put()
        assert await saver.aget_tuple(cfg) is None
        assert saver.core.hot.epoch.value is not None
        requests: list[str] = []
        driver = saver._runners.asyncs[asyncio.get_running_loop()]
        execute = driver._execute

        async def counted(request: Any) -> Any:
            if isinstance(request, RedisCall):
                requests.append(",".join(str(command[0]) for command in request.commands))
            return await execute(request)

        driver._execute = counted
        await saver.aput(cfg, *rest)
        assert requests == ["EVALSHA"]


def test_a_saver_opened_while_redis_is_down_learns_the_epoch_once_it_is_back(
    make_private_redis: Callable[..., Any],
) -> None:
    server = make_private_redis()
    url = server.url
    server.stop()
    with TieredSaver.from_conn_string(url, None, key_prefix=new_prefix(), tenant_id=TEST_TENANT) as saver:
        assert saver.core.hot.epoch.value is None
        server.start()
        two_step_graph(saver).invoke({"log": []}, thread_config())
        assert saver.core.hot.epoch.value is not None
