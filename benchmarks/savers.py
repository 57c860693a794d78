"""Saver factories: one per checkpointer under test.

A factory opens a sync or an async saver inside a *scope* (one workload), with storage private to
that scope: its own Redis key prefix, its own Postgres schema. To benchmark another checkpointer,
subclass `SaverFactory`, implement `open_sync` / `open_async` (context managers that set the saver
up and tear it down), override the hooks it needs (`flush`, `config`, `redis_patterns`,
`pg_schema`), and add an instance to `all_factories()`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
)
from typing import Any, ClassVar

import redis
import redis.asyncio
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from .env import BenchEnv, slug
from .floor import RawRedisFloor

Saver = BaseCheckpointSaver[Any]
ALL_OPS = frozenset({"put", "put_writes", "get_tuple", "list", "graph"})
HOT_TTL_SECONDS = 24 * 3600  # the TieredSaver default; every Redis saver gets the same TTL
PG_POOL_MIN, PG_POOL_MAX = 2, 16
PG_CONN_KWARGS: dict[str, Any] = {
    "autocommit": True,
    "prepare_threshold": 0,
    "row_factory": dict_row,
}


def error_reason(exc: BaseException) -> str:
    """`Type: first line of the message` — what a report shows for a saver that cannot run."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


class SaverFactory:
    """Base class; see the module docstring."""

    name: ClassVar[str]
    ops: ClassVar[frozenset[str]] = ALL_OPS

    unavailable: str | None = None  # set by `probe`

    @property
    def slug(self) -> str:
        return slug(self.name)

    def supports(self, op: str) -> bool:
        return op in self.ops

    def open_sync(
        self, env: BenchEnv, scope: str, *, setup: bool = True
    ) -> AbstractContextManager[Saver]:
        raise NotImplementedError

    def open_async(
        self, env: BenchEnv, scope: str, *, setup: bool = True
    ) -> AbstractAsyncContextManager[Saver]:
        raise NotImplementedError

    def flush(self, saver: Saver) -> None:
        """Make everything written so far durable (write-behind savers drain here)."""

    async def aflush(self, saver: Saver) -> None:
        """Async `flush`."""

    def config(self, thread_id: str, tenant: int = 0) -> RunnableConfig:
        """Config of `thread_id` of tenant number `tenant` (0..999)."""
        return {"configurable": {"thread_id": f"t{tenant:03d}.{thread_id}", "checkpoint_ns": ""}}

    def redis_patterns(self, env: BenchEnv, scope: str) -> tuple[str, list[str]] | None:
        """(Redis URL, key patterns) covering every key the saver wrote in `scope`."""
        return None

    def pg_schema(self, env: BenchEnv, scope: str) -> str | None:
        """Postgres schema holding the saver's tables in `scope`."""
        return None

    def probe(self, env: BenchEnv) -> str | None:
        """Open and set up once; remember and return why it failed, if it did."""
        try:
            with self.open_sync(env, "probe"):
                pass
        except Exception as exc:
            self.unavailable = f"unavailable: {error_reason(exc)}"
        return self.unavailable


# --------------------------------------------------------------------------- InMemorySaver


class MemoryFactory(SaverFactory):
    name = "InMemorySaver"

    @contextmanager
    def open_sync(self, env: BenchEnv, scope: str, *, setup: bool = True) -> Iterator[Saver]:
        yield InMemorySaver()

    @asynccontextmanager
    async def open_async(
        self, env: BenchEnv, scope: str, *, setup: bool = True
    ) -> AsyncIterator[Saver]:
        yield InMemorySaver()


# ----------------------------------------------------------------- langgraph-checkpoint-postgres


class PostgresFactory(SaverFactory):
    """`PostgresSaver` / `AsyncPostgresSaver` on a connection pool, tables in a private schema."""

    name = "PostgresSaver"

    def pg_schema(self, env: BenchEnv, scope: str) -> str | None:
        return env.schema(self.slug, scope)

    @contextmanager
    def open_sync(self, env: BenchEnv, scope: str, *, setup: bool = True) -> Iterator[Saver]:
        from langgraph.checkpoint.postgres import PostgresSaver

        conninfo = env.pg_conninfo(env.schema(self.slug, scope))
        with ConnectionPool(
            conninfo, min_size=PG_POOL_MIN, max_size=PG_POOL_MAX, kwargs=PG_CONN_KWARGS
        ) as pool:
            saver = PostgresSaver(pool)  # type: ignore[arg-type]
            if setup:
                saver.setup()
            yield saver

    @asynccontextmanager
    async def open_async(
        self, env: BenchEnv, scope: str, *, setup: bool = True
    ) -> AsyncIterator[Saver]:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

        conninfo = env.pg_conninfo(env.schema(self.slug, scope))
        async with AsyncConnectionPool(
            conninfo, min_size=PG_POOL_MIN, max_size=PG_POOL_MAX, kwargs=PG_CONN_KWARGS, open=False
        ) as pool:
            saver = AsyncPostgresSaver(pool)  # type: ignore[arg-type]
            if setup:
                await saver.setup()
            yield saver


# ------------------------------------------------------------ langgraph-checkpoint-plainredis


class PlainRedisFactory(SaverFactory):
    """`langgraph_checkpoint_plainredis` (core Redis commands only, no modules)."""

    name = "plainredis"

    def redis_patterns(self, env: BenchEnv, scope: str) -> tuple[str, list[str]] | None:
        return env.redis_url, [env.key_prefix(self.slug, scope) + ":*"]

    @contextmanager
    def open_sync(self, env: BenchEnv, scope: str, *, setup: bool = True) -> Iterator[Saver]:
        from langgraph_checkpoint_plainredis import RedisSaver

        saver = RedisSaver(
            url=env.redis_url, prefix=env.key_prefix(self.slug, scope), ttl=HOT_TTL_SECONDS
        )
        try:
            saver.client.ping()
            yield saver
        finally:
            saver.close()

    @asynccontextmanager
    async def open_async(
        self, env: BenchEnv, scope: str, *, setup: bool = True
    ) -> AsyncIterator[Saver]:
        from langgraph_checkpoint_plainredis import AsyncRedisSaver

        saver = AsyncRedisSaver(
            url=env.redis_url, prefix=env.key_prefix(self.slug, scope), ttl=HOT_TTL_SECONDS
        )
        try:
            await saver.client.ping()
            yield saver
        finally:
            await saver.aclose()


# ----------------------------------------------------------------- langgraph-checkpoint-redis


class RedisStackFactory(SaverFactory):
    """`langgraph-checkpoint-redis` (needs RediSearch + RedisJSON), on the auxiliary Redis db.

    Some of its keys (`write_keys_zset:...`) ignore the prefix, hence the separate logical db;
    they contain the thread id, which contains the run id, so cleanup finds them.
    """

    name = "RedisSaver (langgraph-checkpoint-redis)"

    def _prefixes(self, env: BenchEnv, scope: str) -> tuple[str, str]:
        base = env.key_prefix("redisstack", scope)
        return base + "_cp", base + "_wr"

    def redis_patterns(self, env: BenchEnv, scope: str) -> tuple[str, list[str]] | None:
        base = env.key_prefix("redisstack", scope)
        return env.redis_aux_url, [base + "_*", f"write_keys_zset:*{env.run_id}*"]

    @contextmanager
    def open_sync(self, env: BenchEnv, scope: str, *, setup: bool = True) -> Iterator[Saver]:
        from langgraph.checkpoint.redis import RedisSaver

        cp, wr = self._prefixes(env, scope)
        ttl = {"default_ttl": HOT_TTL_SECONDS // 60}  # minutes, in this library
        with RedisSaver.from_conn_string(
            env.redis_aux_url, checkpoint_prefix=cp, checkpoint_write_prefix=wr, ttl=ttl
        ) as saver:
            try:
                if setup:
                    saver.setup()
                yield saver
            finally:
                _drop_search_indexes(env.redis_aux_url, env.run_id)

    @asynccontextmanager
    async def open_async(
        self, env: BenchEnv, scope: str, *, setup: bool = True
    ) -> AsyncIterator[Saver]:
        from langgraph.checkpoint.redis.aio import AsyncRedisSaver

        cp, wr = self._prefixes(env, scope)
        ttl = {"default_ttl": HOT_TTL_SECONDS // 60}
        try:
            async with AsyncRedisSaver.from_conn_string(  # its __aenter__ runs asetup()
                env.redis_aux_url, checkpoint_prefix=cp, checkpoint_write_prefix=wr, ttl=ttl
            ) as saver:
                yield saver
        finally:
            _drop_search_indexes(env.redis_aux_url, env.run_id)


def _drop_search_indexes(url: str, run_id: str) -> None:
    """Drop the RediSearch indexes this run created (no-op on a server without the module)."""
    client = redis.Redis.from_url(url)
    try:
        names = client.execute_command("FT._LIST")
    except redis.ResponseError:
        return
    finally:
        client.close()
    client = redis.Redis.from_url(url)
    try:
        for raw in names:
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            if run_id in name:
                client.execute_command("FT.DROPINDEX", name)
    finally:
        client.close()


# ---------------------------------------------------------------------- raw Redis floor


class FloorFactory(SaverFactory):
    name = "raw redis floor"
    ops = frozenset({"put", "put_writes", "get_tuple"})

    def redis_patterns(self, env: BenchEnv, scope: str) -> tuple[str, list[str]] | None:
        return env.redis_url, [env.key_prefix(self.slug, scope) + ":*"]

    @contextmanager
    def open_sync(self, env: BenchEnv, scope: str, *, setup: bool = True) -> Iterator[Saver]:
        client = redis.Redis.from_url(env.redis_url)
        try:
            client.ping()
            yield RawRedisFloor(client=client, prefix=env.key_prefix(self.slug, scope))
        finally:
            client.close()

    @asynccontextmanager
    async def open_async(
        self, env: BenchEnv, scope: str, *, setup: bool = True
    ) -> AsyncIterator[Saver]:
        client = redis.asyncio.Redis.from_url(env.redis_url)
        try:
            await client.ping()
            yield RawRedisFloor(aclient=client, prefix=env.key_prefix(self.slug, scope))
        finally:
            await client.aclose()


# ---------------------------------------------------------------------------- TieredSaver


class TieredFactory(SaverFactory):
    """`langgraph_tiered_saver.TieredSaver`, with or without its Postgres durable tier."""

    def __init__(self, *, durable: bool, background_flush: bool = True) -> None:
        self.durable = durable
        # off: only the hot path talks to the servers (the flusher is off, and the Redis server's
        # identity is checked once, when the saver starts, instead of every 2 s)
        self.background_flush = background_flush

    @property
    def name(self) -> str:  # type: ignore[override]
        return "TieredSaver" if self.durable else "TieredSaver (durable off)"

    def config(self, thread_id: str, tenant: int = 0) -> RunnableConfig:
        return {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": "",
                "tenant_id": f"tenant-{tenant:03d}",
            }
        }

    def redis_patterns(self, env: BenchEnv, scope: str) -> tuple[str, list[str]] | None:
        return env.redis_url, [env.key_prefix(self.slug, scope) + ":*"]

    def pg_schema(self, env: BenchEnv, scope: str) -> str | None:
        return env.schema(self.slug, scope, create=False) if self.durable else None

    def _conn_manager(self, env: BenchEnv, scope: str) -> Any:
        from langgraph_tiered_saver import TieredSaver  # type: ignore[attr-defined]

        return TieredSaver.from_conn_string(
            env.redis_url,
            env.pg_url if self.durable else None,
            key_prefix=env.key_prefix(self.slug, scope),
            schema=env.schema(self.slug, scope, create=False),
            **({} if self.background_flush else {"background_flush": False, "redis_check_seconds": 3600.0}),
        )

    @contextmanager
    def open_sync(self, env: BenchEnv, scope: str, *, setup: bool = True) -> Iterator[Saver]:
        with self._conn_manager(env, scope) as saver:
            if setup:
                saver.setup()
            yield saver

    @asynccontextmanager
    async def open_async(
        self, env: BenchEnv, scope: str, *, setup: bool = True
    ) -> AsyncIterator[Saver]:
        async with self._conn_manager(env, scope) as saver:
            if setup:
                await saver.asetup()
            yield saver

    def flush(self, saver: Saver) -> None:
        saver.flush()  # type: ignore[attr-defined]

    async def aflush(self, saver: Saver) -> None:
        await saver.aflush()  # type: ignore[attr-defined]


def all_factories() -> list[SaverFactory]:
    """Every saver, in report order. The Postgres saver and the floor are the ratio baselines."""
    return [
        MemoryFactory(),
        PostgresFactory(),
        PlainRedisFactory(),
        RedisStackFactory(),
        FloorFactory(),
        TieredFactory(durable=True),
        TieredFactory(durable=False),
    ]


BASELINE_POSTGRES = PostgresFactory.name
BASELINE_FLOOR = FloorFactory.name
