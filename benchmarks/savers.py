"""Saver factories: one per checkpointer under test.

A factory opens a sync or an async saver inside a *scope* (one workload), with storage private to
that scope: its own Redis key prefix, its own Postgres schema. To benchmark another checkpointer,
subclass `SaverFactory`, implement `open_sync` / `open_async` (context managers that set the saver
up and tear it down), override the hooks it needs (`flush`, `config`, `redis_patterns`,
`pg_schema`), and add an instance to `all_factories()`.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
)
from typing import Any, ClassVar

import psycopg
import redis
import redis.asyncio
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from devtools.servers import ServerUnavailable

from .env import BenchEnv, slug
from .floor import DurableFloor, RawRedisFloor

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
    conformance: ClassVar[bool] = True  # False: not a checkpointer (the floor), suite not run

    unavailable: str | None = None  # set by `probe`

    @property
    def slug(self) -> str:
        return slug(self.name)

    def supports(self, op: str) -> bool:
        """`linear`: the 10-node linear graph on new threads (no resume, so no pending writes
        read back), which every saver running graphs can run, and the raw floor too. `case`:
        case_8842 on new threads (invoke, interrupt, resume: the latest checkpoint with its
        pending writes read back, no history), likewise."""
        return op in self.ops or (op in ("linear", "case") and "graph" in self.ops)

    def open_sync(
        self, env: BenchEnv, scope: str, *, setup: bool = True
    ) -> AbstractContextManager[Saver]:
        raise NotImplementedError

    def open_async(
        self, env: BenchEnv, scope: str, *, setup: bool = True
    ) -> AbstractAsyncContextManager[Saver]:
        raise NotImplementedError

    def open_conformance(self, env: BenchEnv, scope: str) -> AbstractAsyncContextManager[Saver]:
        """The async saver the conformance suite checks (its configs carry only thread ids)."""
        return self.open_async(env, scope)

    def open_conformance_sync(self, env: BenchEnv, scope: str) -> AbstractContextManager[Saver]:
        """The sync saver the conformance suite checks through its sync API."""
        return self.open_sync(env, scope)

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

    def prepare(self, env: BenchEnv) -> None:
        """Start what the saver needs beyond the shared servers (see `env.adopt`); raise if it
        cannot be had."""

    def probe(self, env: BenchEnv) -> str | None:
        """Prepare, open and set up once; remember and return why it failed, if it did."""
        try:
            self.prepare(env)
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
    """A `langgraph-checkpoint-redis` saver on a redis-stack server of its own.

    The library needs RediSearch and RedisJSON, so each of its savers gets a private
    redis-stack (devtools/redis_stack.py) started at probe time and stopped at cleanup: its
    indexes and its prefix-less keys (`write_keys_zset:...`) then never meet another saver's.
    The sync workloads use `sync_class`, the async ones `async_class`.
    """

    sync_class: ClassVar[str]  # "module:Class", imported when opened
    async_class: ClassVar[str]

    def prepare(self, env: BenchEnv) -> None:
        if self.slug in env.private_redis:
            return
        from devtools.redis_stack import PrivateRedisStack

        try:
            server = PrivateRedisStack(build=redis_stack_build())
            server.start()
        except ServerUnavailable as exc:
            raise ServerUnavailable(f"redis-stack: {exc}") from exc
        env.adopt(self.name, server, server.url)

    def redis_url(self, env: BenchEnv) -> str:
        try:
            return env.private_redis[self.slug]
        except KeyError:
            raise ServerUnavailable(f"{self.name} has no redis-stack server (not prepared)") from None

    def _prefixes(self, scope: str) -> tuple[str, str]:
        base = f"{self.slug}-{slug(scope)}"
        return base + "_cp", base + "_wr"

    def redis_patterns(self, env: BenchEnv, scope: str) -> tuple[str, list[str]] | None:
        cp, wr = self._prefixes(scope)
        # `write_keys_zset:<thread id>:...` ignores the prefixes; the storage workload names its
        # thread after its scope (env.thread_id(scope)), so this pattern finds that thread's only
        zsets = f"write_keys_zset:*{env.thread_id(slug(scope))}:*"
        return self.redis_url(env), [cp + ":*", wr + ":*", zsets]

    def _options(self, scope: str) -> dict[str, Any]:
        cp, wr = self._prefixes(scope)
        # the same TTL as every Redis saver here; this library counts it in minutes
        ttl = {"default_ttl": HOT_TTL_SECONDS // 60}
        return {"checkpoint_prefix": cp, "checkpoint_write_prefix": wr, "ttl": ttl}

    @contextmanager
    def open_sync(self, env: BenchEnv, scope: str, *, setup: bool = True) -> Iterator[Saver]:
        cls = _import(self.sync_class)
        with cls.from_conn_string(self.redis_url(env), **self._options(scope)) as saver:
            # always: setup() also builds the client-side key registry a put needs; creating
            # the indexes again is a no-op (overwrite=False), like __aenter__ for the async one
            saver.setup()
            yield saver

    @asynccontextmanager
    async def open_async(
        self, env: BenchEnv, scope: str, *, setup: bool = True
    ) -> AsyncIterator[Saver]:
        cls = _import(self.async_class)
        # its __aenter__ runs asetup(): indexes are created whatever `setup` says
        async with cls.from_conn_string(self.redis_url(env), **self._options(scope)) as saver:
            yield saver


    @asynccontextmanager
    async def open_conformance(self, env: BenchEnv, scope: str) -> AsyncIterator[Saver]:
        """With the library's default key prefixes, as most users run it: with custom ones,
        ShallowRedisSaver's delete_thread misses its keys (4 more failures in 0.5.2). The
        suite's thread ids are unique, so its capabilities may share the server's keyspace."""
        cls = _import(self.async_class)
        async with cls.from_conn_string(self.redis_url(env)) as saver:
            yield saver

    @contextmanager
    def open_conformance_sync(self, env: BenchEnv, scope: str) -> Iterator[Saver]:
        """Sync `open_conformance`."""
        cls = _import(self.sync_class)
        with cls.from_conn_string(self.redis_url(env)) as saver:
            saver.setup()
            yield saver


class RedisSaverFactory(RedisStackFactory):
    """`RedisSaver` / `AsyncRedisSaver`: the full checkpoint history, in RedisJSON documents."""

    name = "RedisSaver"
    sync_class = "langgraph.checkpoint.redis:RedisSaver"
    async_class = "langgraph.checkpoint.redis.aio:AsyncRedisSaver"


class ShallowRedisSaverFactory(RedisStackFactory):
    """`ShallowRedisSaver` / `AsyncShallowRedisSaver`: only the latest checkpoint per thread."""

    name = "ShallowRedisSaver"
    ops = ALL_OPS - {"list"}  # it keeps one checkpoint per thread: no history to list
    sync_class = "langgraph.checkpoint.redis.shallow:ShallowRedisSaver"
    async_class = "langgraph.checkpoint.redis.ashallow:AsyncShallowRedisSaver"


def _import(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


_STACK_BUILD: list[Any] = []  # memo of redis_stack_build(): the build, or the error


def redis_stack_build() -> Any:
    """The cached redis-stack build, fetched once per process; the same error every later call."""
    if not _STACK_BUILD:
        from devtools.redis_stack import ensure_redis_stack

        try:
            _STACK_BUILD.append(ensure_redis_stack())
        except ServerUnavailable as exc:
            _STACK_BUILD.append(exc)
    found = _STACK_BUILD[0]
    if isinstance(found, ServerUnavailable):
        raise ServerUnavailable(str(found))
    return found


def redis_stack_note(env: BenchEnv) -> str | None:
    """One line for the report: what the redis-stack savers ran on, or why they could not."""
    if not _STACK_BUILD:
        return None  # no redis-stack saver selected
    if isinstance(_STACK_BUILD[0], ServerUnavailable):
        return f"RedisSaver and ShallowRedisSaver not run: redis-stack unavailable: {_STACK_BUILD[0]}"
    if not env.private_redis:
        return None
    client = redis.Redis.from_url(next(iter(env.private_redis.values())))
    try:
        version = client.info("server")["redis_version"]
        modules = client.execute_command("MODULE", "LIST")
    finally:
        client.close()
    names = ", ".join(
        f"{m[b'name'].decode()} {m[b'ver'] // 10000}.{m[b'ver'] // 100 % 100}.{m[b'ver'] % 100}"
        for m in modules
    )
    return (
        f"langgraph-checkpoint-redis savers: each on a private redis-stack server, Redis {version} "
        f"with {names} (devtools/redis_stack.py; the async workloads use AsyncRedisSaver and "
        "AsyncShallowRedisSaver)"
    )


# ---------------------------------------------------------------------- raw Redis floor


class FloorFactory(SaverFactory):
    name = "raw redis floor"
    # `linear`: a graph run on a new thread reads nothing back but "no checkpoint yet", so the
    # floor can checkpoint it: its figure is the least a Redis round trip per superstep costs
    ops = frozenset({"put", "put_writes", "get_tuple", "linear", "case"})
    conformance = False
    carry_writes = False  # see RawRedisFloor

    def redis_patterns(self, env: BenchEnv, scope: str) -> tuple[str, list[str]] | None:
        return env.redis_url, [env.key_prefix(self.slug, scope) + ":*"]

    @contextmanager
    def open_sync(self, env: BenchEnv, scope: str, *, setup: bool = True) -> Iterator[Saver]:
        client = redis.Redis.from_url(env.redis_url)
        try:
            client.ping()
            yield RawRedisFloor(client=client, prefix=env.key_prefix(self.slug, scope), carry_writes=self.carry_writes)
        finally:
            client.close()

    @asynccontextmanager
    async def open_async(
        self, env: BenchEnv, scope: str, *, setup: bool = True
    ) -> AsyncIterator[Saver]:
        client = redis.asyncio.Redis.from_url(env.redis_url)
        try:
            await client.ping()
            yield RawRedisFloor(aclient=client, prefix=env.key_prefix(self.slug, scope), carry_writes=self.carry_writes)
        finally:
            await client.aclose()


class CarriedFloorFactory(FloorFactory):
    """The raw floor with TieredSaver's write combining (a step's writes go with the put that
    closes it: one round trip per superstep): the floor of a graph run in Redis."""

    name = "carried floor"
    ops = frozenset({"linear", "case"})
    carry_writes = True


class DurableFloorFactory(SaverFactory):
    """The carried floor plus the Postgres work a checkpointer that makes an interrupt durable
    before `invoke` returns cannot skip (floor.DurableFloor): the floor of TieredSaver's
    graph runs, as the raw floor is of its calls."""

    name = "durable floor"
    ops = frozenset({"linear", "case"})
    conformance = False

    def redis_patterns(self, env: BenchEnv, scope: str) -> tuple[str, list[str]] | None:
        return env.redis_url, [env.key_prefix(self.slug, scope) + ":*"]

    def pg_schema(self, env: BenchEnv, scope: str) -> str | None:
        return env.schema(self.slug, scope)

    def _table(self, env: BenchEnv, scope: str) -> str:
        return f'"{env.schema(self.slug, scope)}".durable_floor'

    @contextmanager
    def open_sync(self, env: BenchEnv, scope: str, *, setup: bool = True) -> Iterator[Saver]:
        table = self._table(env, scope)
        client = redis.Redis.from_url(env.redis_url)
        try:
            with psycopg.connect(env.pg_url, autocommit=True, prepare_threshold=0) as conn:
                for statement in DurableFloor.setup_sql(table) if setup else []:
                    conn.execute(statement)
                client.ping()
                yield DurableFloor(
                    client=client, conn=conn, table=table, prefix=env.key_prefix(self.slug, scope), carry_writes=True
                )
        finally:
            client.close()

    @asynccontextmanager
    async def open_async(
        self, env: BenchEnv, scope: str, *, setup: bool = True
    ) -> AsyncIterator[Saver]:
        table = self._table(env, scope)
        client = redis.asyncio.Redis.from_url(env.redis_url)
        try:
            async with await psycopg.AsyncConnection.connect(env.pg_url, autocommit=True, prepare_threshold=0) as conn:
                for statement in DurableFloor.setup_sql(table) if setup else []:
                    await conn.execute(statement)
                await client.ping()
                yield DurableFloor(
                    aclient=client, aconn=conn, table=table, prefix=env.key_prefix(self.slug, scope), carry_writes=True
                )
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

    def _conn_manager(self, env: BenchEnv, scope: str, **options: Any) -> Any:
        from langgraph_tiered_saver import TieredSaver  # type: ignore[attr-defined]

        if not self.background_flush:
            options |= {"background_flush": False, "redis_check_seconds": 3600.0}
        return TieredSaver.from_conn_string(
            env.redis_url,
            env.pg_url if self.durable else None,
            key_prefix=env.key_prefix(self.slug, scope),
            schema=env.schema(self.slug, scope, create=False),
            **options,
        )

    @asynccontextmanager
    async def open_conformance(self, env: BenchEnv, scope: str) -> AsyncIterator[Saver]:
        """Bound to one tenant: the suite's configs carry none (as in tests/servers/test_conformance.py)."""
        async with self._conn_manager(env, scope, tenant_id="tenant-conformance") as saver:
            await saver.asetup()
            yield saver

    @contextmanager
    def open_conformance_sync(self, env: BenchEnv, scope: str) -> Iterator[Saver]:
        """Sync `open_conformance`."""
        with self._conn_manager(env, scope, tenant_id="tenant-conformance") as saver:
            saver.setup()
            yield saver

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
        RedisSaverFactory(),
        ShallowRedisSaverFactory(),
        FloorFactory(),
        CarriedFloorFactory(),
        DurableFloorFactory(),
        TieredFactory(durable=True),
        TieredFactory(durable=False),
    ]


BASELINE_POSTGRES = PostgresFactory.name
BASELINE_FLOOR = FloorFactory.name
