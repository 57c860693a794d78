"""Sans-I/O plumbing shared by the sync and the async saver.

Every operation of the saver is written once, as a generator that *yields requests* (a batch of
Redis commands, a Postgres transaction) and receives their results. Two small drivers run those
generators: `SyncDriver` on `redis.Redis` + `psycopg_pool.ConnectionPool`, `AsyncDriver` on
`redis.asyncio.Redis` + `psycopg_pool.AsyncConnectionPool`. The logic therefore cannot drift
between `put` and `aput` — there is only one copy of it (the h11/h2 model).

An I/O failure is thrown *into* the generator as `TierUnavailableError`, so an operation can
decide to fall back to the other tier or to let the error propagate.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
import redis
import redis.exceptions
from psycopg_pool import PoolTimeout

from .errors import StaleLockError, ThreadLockedError, TierUnavailableError

if TYPE_CHECKING:
    import redis.asyncio
    from psycopg_pool import AsyncConnectionPool, ConnectionPool

T = TypeVar("T")


@dataclass(frozen=True)
class LuaScript:
    """A Lua script shipped in `langgraph_tiered_saver/lua/`, called by SHA (EVALSHA)."""

    name: str
    source: str
    sha: str

    @classmethod
    def load(cls, name: str) -> LuaScript:
        lua = resources.files(__package__) / "lua"
        source = (lua / f"{name}.lua").read_text()
        common = (lua / "_common.lua").read_text()
        full = common + "\n" + source
        return cls(name, full, hashlib.sha1(full.encode()).hexdigest())

    def call(self, keys: Sequence[str], args: Sequence[Any]) -> tuple[Any, ...]:
        return ("EVALSHA", self.sha, len(keys), *keys, *args)


@dataclass(frozen=True)
class RedisCall:
    """One round trip: a single command, or a pipeline (MULTI/EXEC when `transaction`)."""

    commands: tuple[tuple[Any, ...], ...]
    transaction: bool = False
    scripts: tuple[LuaScript, ...] = ()


@dataclass(frozen=True)
class PgStatement:
    sql: str
    params: Any = None
    many: bool = False  # executemany over `params` (a sequence of parameter tuples)
    fetch: bool = False  # return the rows (else the row count)


@dataclass(frozen=True)
class PgCall:
    """One Postgres transaction. `tenant_id` is set with set_config(..., true) before anything else,
    so row-level security sees it for this transaction only (safe behind PgBouncer)."""

    statements: tuple[PgStatement, ...]
    tenant_id: str | None = None
    settings: tuple[tuple[str, str], ...] = field(default=())


@dataclass(frozen=True)
class Sleep:
    """Wait without holding a connection (time.sleep or asyncio.sleep, by driver)."""

    seconds: float


@dataclass(frozen=True)
class BlobIO:
    """A blocking blob-store call (filesystem, S3): run inline by the sync driver, in a worker
    thread by the async one so the event loop never blocks on it."""

    call: Callable[[], Any]


Request = RedisCall | PgCall | Sleep | BlobIO
Op = Generator[Request, Any, T]

_REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
_PG_DOWN = (psycopg.OperationalError, psycopg.InterfaceError)
_TENANT_SETTING = "app.tenant_id"


def _typed_script_error(exc: redis.exceptions.ResponseError) -> Exception:
    """Scripts signal fencing failures with an error reply; give them their typed class."""
    message = str(exc)
    if message.startswith("STALE"):
        return StaleLockError(message)
    if message.startswith("LOCKED"):
        return ThreadLockedError(message)
    return exc


def _pg_preamble(call: PgCall) -> list[tuple[str, tuple[str, str]]]:
    settings = list(call.settings)
    if call.tenant_id is not None:
        settings.insert(0, (_TENANT_SETTING, call.tenant_id))
    return [("SELECT set_config(%s, %s, true)", s) for s in settings]


class SyncDriver:
    """Runs operations on blocking clients. Thread-safe: clients and pools are."""

    def __init__(
        self, redis_client: redis.Redis | None, pg_pool: ConnectionPool | None, pg_timeout: float = 2.0
    ) -> None:
        self.redis = redis_client
        self.pg_pool = pg_pool
        self.pg_timeout = pg_timeout

    def run(self, op: Op[T]) -> T:
        try:
            request = next(op)
            while True:
                try:
                    result = self._execute(request)
                except TierUnavailableError as exc:
                    request = op.throw(exc)
                    continue
                request = op.send(result)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def _execute(self, request: Request) -> Any:
        if isinstance(request, RedisCall):
            return self._redis(request)
        if isinstance(request, Sleep):
            time.sleep(request.seconds)
            return None
        if isinstance(request, BlobIO):
            return request.call()
        return self._pg(request)

    def _redis(self, call: RedisCall) -> Any:
        if self.redis is None:
            raise TierUnavailableError("redis", "the saver has no Redis client")
        try:
            try:
                return self._redis_once(call)
            except redis.exceptions.NoScriptError:
                for script in call.scripts:
                    self.redis.script_load(script.source)
                return self._redis_once(call)
        except _REDIS_DOWN as exc:
            raise TierUnavailableError("redis", str(exc)) from exc
        except redis.exceptions.ResponseError as exc:
            raise _typed_script_error(exc) from exc

    def _redis_once(self, call: RedisCall) -> Any:
        assert self.redis is not None
        if len(call.commands) == 1 and not call.transaction:
            return [self.redis.execute_command(*call.commands[0])]
        pipe = self.redis.pipeline(transaction=call.transaction)
        for command in call.commands:
            pipe.execute_command(*command)
        return pipe.execute()

    def _pg(self, call: PgCall) -> Any:
        if self.pg_pool is None:
            raise TierUnavailableError("postgres", "the saver has no Postgres pool (durable tier off)")
        try:
            with (
                self.pg_pool.connection(timeout=self.pg_timeout) as conn,
                conn.transaction(),
                conn.cursor() as cur,
            ):
                for sql, params in _pg_preamble(call):
                    cur.execute(sql, params)
                results: list[Any] = []
                for st in call.statements:
                    if st.many:
                        cur.executemany(st.sql, st.params)
                        results.append(cur.rowcount)
                    else:
                        cur.execute(st.sql, st.params)
                        results.append(cur.fetchall() if st.fetch else cur.rowcount)
                return results
        except (*_PG_DOWN, PoolTimeout) as exc:
            raise TierUnavailableError("postgres", str(exc)) from exc


class AsyncDriver:
    """Runs the same operations on asyncio clients."""

    def __init__(
        self,
        redis_client: redis.asyncio.Redis | None,
        pg_pool: AsyncConnectionPool | None,
        pg_timeout: float = 2.0,
    ) -> None:
        self.redis = redis_client
        self.pg_pool = pg_pool
        self.pg_timeout = pg_timeout

    async def run(self, op: Op[T]) -> T:
        try:
            request = next(op)
            while True:
                try:
                    result = await self._execute(request)
                except TierUnavailableError as exc:
                    request = op.throw(exc)
                    continue
                request = op.send(result)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    async def _execute(self, request: Request) -> Any:
        if isinstance(request, RedisCall):
            return await self._redis(request)
        if isinstance(request, Sleep):
            await asyncio.sleep(request.seconds)
            return None
        if isinstance(request, BlobIO):
            return await asyncio.to_thread(request.call)
        return await self._pg(request)

    async def _redis(self, call: RedisCall) -> Any:
        if self.redis is None:
            raise TierUnavailableError("redis", "the saver has no Redis client")
        try:
            try:
                return await self._redis_once(call)
            except redis.exceptions.NoScriptError:
                for script in call.scripts:
                    await self.redis.script_load(script.source)
                return await self._redis_once(call)
        except _REDIS_DOWN as exc:
            raise TierUnavailableError("redis", str(exc)) from exc
        except redis.exceptions.ResponseError as exc:
            raise _typed_script_error(exc) from exc

    async def _redis_once(self, call: RedisCall) -> Any:
        assert self.redis is not None
        if len(call.commands) == 1 and not call.transaction:
            return [await self.redis.execute_command(*call.commands[0])]
        pipe = self.redis.pipeline(transaction=call.transaction)
        for command in call.commands:
            pipe.execute_command(*command)
        return await pipe.execute()

    async def _pg(self, call: PgCall) -> Any:
        if self.pg_pool is None:
            raise TierUnavailableError("postgres", "the saver has no Postgres pool (durable tier off)")
        try:
            async with self.pg_pool.connection(timeout=self.pg_timeout) as conn, conn.transaction():
                cur = conn.cursor()
                for sql, params in _pg_preamble(call):
                    await cur.execute(sql, params)
                results: list[Any] = []
                for st in call.statements:
                    if st.many:
                        await cur.executemany(st.sql, st.params)
                        results.append(cur.rowcount)
                    else:
                        await cur.execute(st.sql, st.params)
                        results.append(await cur.fetchall() if st.fetch else cur.rowcount)
                return results
        except (*_PG_DOWN, PoolTimeout) as exc:
            raise TierUnavailableError("postgres", str(exc)) from exc
