"""Sans-I/O plumbing shared by the sync and the async saver.

Every operation of the saver is written once, as a generator that *yields requests* (a batch of
Redis commands, a Postgres transaction) and receives their results. Two small drivers run those
generators: `SyncDriver` on `redis.Redis` + `psycopg_pool.ConnectionPool`, `AsyncDriver` on
`redis.asyncio.Redis` + `psycopg_pool.AsyncConnectionPool`. The logic therefore cannot drift
between `put` and `aput` — there is only one copy of it (the h11/h2 model).

Every failure of a request (an unreachable server, a rejected statement, a blob-store error, a
timeout, even a KeyboardInterrupt or an asyncio cancellation) is thrown *into* the generator, so
an operation can fall back to the other tier, and its `finally` blocks always run — including
the cleanup requests they yield (a flush lock released), which the driver executes before the
error goes on to the caller. Both drivers step operations through one `Stepper`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Generic, NoReturn, Protocol, TypeVar

import psycopg
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
import redis.exceptions
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from langgraph_tiered_saver._sansio import pgarrays
from langgraph_tiered_saver._sansio.breaker import PgBreaker
from langgraph_tiered_saver._sansio.coalesce import Coalescer
from langgraph_tiered_saver._sansio.pgfaults import (
    PgLimits,
    classify_connect_error,
    classify_statement_error,
)
from langgraph_tiered_saver._sansio.schedule import Scheduler
from langgraph_tiered_saver.errors import (
    ConfigError,
    PoolExhaustedError,
    RedisPermissionError,
    StaleLockError,
    ThreadLockedError,
    TieredSaverError,
    TierUnavailableError,
)

# The Postgres setting row-level security reads the call's tenant from (see durable.sql).
TENANT_SETTING = "app.tenant_id"
T = TypeVar("T")
R = TypeVar("R")
P = TypeVar("P")


class Script(Protocol):
    """A Lua script as the drivers see it (see `scripts.LuaScript`): its name, source and SHA,
    to load it again when Redis answers NOSCRIPT."""

    @property
    def name(self) -> str: ...

    @property
    def source(self) -> str: ...

    @property
    def sha(self) -> str: ...


@dataclass(frozen=True)
class RedisCall:
    """One round trip: a single command, or a pipeline (MULTI/EXEC when `transaction`)."""

    commands: tuple[tuple[Any, ...], ...]
    transaction: bool = False
    scripts: tuple[Script, ...] = ()


@dataclass(frozen=True)
class PgStatement:
    sql: str
    params: Any = None
    many: bool = False  # executemany over `params` (a sequence of parameter tuples)
    fetch: bool = False  # return the rows (else the row count)
    binary: bool = False  # results in binary format (bytea: raw bytes, not hex text twice the size)


@dataclass(frozen=True)
class PgCall:
    """One Postgres transaction. `tenant_id` is set with set_config(..., true) before anything else,
    so row-level security sees it for this transaction only (safe behind PgBouncer)."""

    statements: tuple[PgStatement, ...]
    tenant_id: str | None = None
    settings: tuple[tuple[str, str], ...] = field(default=())
    # seconds this transaction may take (statements, lock waits and the client deadline) when it
    # differs from the saver's limits; 0 = unbounded (migrations)
    timeout: float | None = None


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

# A cluster that cannot serve a slot now (CLUSTERDOWN, TRYAGAIN past redis-py's retries, a node
# gone, its routing retries exhausted) is an unavailable tier, like a single server that is down.
_CLUSTER_DOWN = tuple(
    getattr(redis.exceptions, name)
    for name in ("ClusterDownError", "TryAgainError", "ClusterError", "SlotNotCoveredError", "MasterDownError")
    if hasattr(redis.exceptions, name)
)
_REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError, *_CLUSTER_DOWN)


class Stepper(Generic[T]):
    """Steps one operation: the driver executes `request` and reports how it went. A failure
    is thrown into the operation, which may answer with more requests (fallback, cleanup)."""

    def __init__(self, op: Op[T]) -> None:
        self._op = op
        self.done = False
        self.value: T | None = None
        self.request: Request | None = self._advance(op.send, None)

    def _advance(self, step: Callable[[Any], Request], arg: Any) -> Request | None:
        try:
            return step(arg)
        except StopIteration as stop:
            self.done, self.value = True, stop.value
            return None

    def feed(self, ok: bool, outcome: Any) -> None:
        self.request = self._advance(self._op.send if ok else self._op.throw, outcome)


def _attempt(execute: Callable[[Any], Any], request: Request | None) -> tuple[bool, Any]:
    try:
        return True, execute(request)
    except BaseException as exc:  # thrown into the op, which re-raises what it does not handle
        return False, exc


# Error replies that mean "Redis cannot take this now", not "this command is wrong": out of
# memory (noeviction), a replica, a failover or a load in progress, a cluster without quorum.
_UNAVAILABLE_REPLIES = ("OOM", "READONLY", "MASTERDOWN", "LOADING", "TRYAGAIN", "CLUSTERDOWN", "BUSY")
# ... which redis-py turns into classes of their own, with the leading word removed.
_UNAVAILABLE_CLASSES = (redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError)
# A reply a command gave inside a script, as some servers word it (Redis 7.0 for a write refused
# by a read-only replica, among others): "Error running script (call to f_<sha>): @user_script:74:
# @user_script: 74: -READONLY You can't write against a read only replica.", after redis-py's
# "Command # 2 (EVALSHA ...) of pipeline caused error: " when the script ran in a pipeline.
_IN_SCRIPT = re.compile(r"(?:ERR )?Error running script \(call to [^)]*\): .*?-([A-Z]+) ")
_CLASS_OF_REPLY = {"READONLY": "ReadOnlyError", "OOM": "OutOfMemoryError"}  # as redis-py names them


def _typed_script_error(exc: redis.exceptions.ResponseError) -> Exception:
    """Scripts signal fencing failures with an error reply; give them their typed class, and
    the server's "unavailable" replies theirs. A command's reply wrapped in a script error is
    typed as that reply."""
    message = str(exc)
    inner = _IN_SCRIPT.search(message)
    reply = message if inner is None else message[inner.start(1):]
    if isinstance(exc, (redis.exceptions.MovedError, redis.exceptions.AskError)) or reply.startswith(("MOVED ", "ASK ")):
        return ConfigError(
            f"the Redis server is a Redis Cluster node (it answered MOVED/ASK: {message}); connect with a cluster "
            "client: redis.cluster.RedisCluster, a redis+cluster:// URL or from_conn_string(..., redis_cluster=True)"
        )
    if isinstance(exc, _UNAVAILABLE_CLASSES):  # redis-py strips the OOM / READONLY word from these
        return TierUnavailableError("redis", f"{type(exc).__name__}: {message}")
    if isinstance(exc, redis.exceptions.NoPermissionError) or reply.startswith("NOPERM"):
        return RedisPermissionError(
            f"the Redis user may not run a command the saver needs ({message}); grant it the commands "
            "listed in the README (EVALSHA, SCRIPT LOAD and the keys under the saver's key_prefix)"
        )
    if reply.startswith("STALE"):
        return StaleLockError(message)
    if reply.startswith("LOCKED"):
        return ThreadLockedError(message)
    word = reply.split(" ", 1)[0]
    if word in _UNAVAILABLE_REPLIES:
        return TierUnavailableError("redis", message if inner is None else f"{_CLASS_OF_REPLY.get(word, word)}: {message}")
    return exc


def _raise_redis_error(exc: Exception) -> NoReturn:
    """Raise a Redis client exception as the saver's typed error (both drivers, from their
    `except`: a try costs nothing until it catches, where a `with` block did); another as is."""
    if isinstance(exc, redis.exceptions.ConnectionError):
        if "No connection available" in str(exc) or "Too many connections" in str(exc):
            raise PoolExhaustedError("redis", f"every pooled connection stayed busy ({exc}); "
                                     "raise max_connections or its wait timeout") from exc
        raise TierUnavailableError("redis", str(exc)) from exc
    if isinstance(exc, _REDIS_DOWN):
        raise TierUnavailableError("redis", str(exc)) from exc
    if isinstance(exc, redis.exceptions.ResponseError):
        raise _typed_script_error(exc) from exc
    raise exc


def _pg_statements(call: PgCall, limits: PgLimits) -> list[tuple[str, Any]]:
    """One SELECT sets the tenant (row-level security) and the server-side timeouts for this
    transaction only (`set_config(..., true)`: safe behind PgBouncer), then the statements."""
    settings = list(_limits_for(call, limits).settings()) + list(call.settings)
    if call.tenant_id is not None:
        settings.insert(0, (TENANT_SETTING, call.tenant_id))
    preamble = "SELECT " + ", ".join("set_config(%s, %s, true)" for _ in settings)
    return [(preamble, tuple(v for pair in settings for v in pair))]


def _limits_for(call: PgCall, limits: PgLimits) -> PgLimits:
    if call.timeout is None:
        return limits
    return PgLimits(limits.connect_wait, call.timeout, call.timeout, call.timeout + 1.0 if call.timeout else 0.0)


class _Deadline:
    """Client-side bound on one transaction: a server that cannot answer (frozen, SIGSTOPped)
    cannot enforce statement_timeout, so past `seconds` the connection's socket is shut down,
    which fails the blocked call; the broken connection then leaves the pool. Armed on the
    process-wide `_WATCHDOG` (one thread for every deadline: a timer thread per transaction
    cost ~0.3 ms)."""

    def __init__(self, conn: Any, seconds: float) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._active = seconds > 0  # 0: unbounded
        self.fired = False
        if self._active:
            _WATCHDOG.arm(time.monotonic() + seconds, self)

    def fire(self) -> None:
        with self._lock:
            if not self._active:
                return
            self._active, self.fired = False, True
            try:
                sock = socket.socket(fileno=os.dup(self._conn.fileno()))
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            except Exception:  # the connection closed meanwhile: nothing left to unblock
                pass

    def cancel(self) -> None:
        with self._lock:
            self._active = False


class _Watchdog:
    """Fires due deadlines: a job on its own process-wide `Scheduler` (schedule.py), because
    its purpose is to unblock calls stuck on a frozen server, and the jobs of a saver's
    scheduler make such calls. Cancelled deadlines stay in the heap until due and are then
    skipped (cancel is a flag: O(1) on the hot side)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._heap: list[tuple[float, int, _Deadline]] = []
        self._seq = 0
        self._scheduler = Scheduler("tiered-saver-pg-watchdog")
        self._job = self._scheduler.job("pg-watchdog", self._turn)

    def arm(self, when: float, deadline: _Deadline) -> None:
        with self._guard:
            self._seq += 1
            heapq.heappush(self._heap, (when, self._seq, deadline))
        self._job.wake(when)

    def _turn(self) -> float | None:
        now = time.monotonic()
        while True:
            with self._guard:
                if not self._heap:
                    return None
                if self._heap[0][0] > now:
                    return self._heap[0][0]
                _, _, due = heapq.heappop(self._heap)
            due.fire()


_WATCHDOG = _Watchdog()


class _PgGuard:
    """The Postgres side both drivers share: the circuit breaker, the limits, and turning a
    failure into the saver's typed error (and the breaker's bookkeeping)."""

    def __init__(self, limits: PgLimits, breaker: PgBreaker) -> None:
        self.limits = limits
        self.breaker = breaker
        self._probing = threading.Lock()  # one probe connection at a time
        # Whether a call has reached the server since the last outage. Until then a call whose
        # pool has no idle connection first connects once directly: a refused connection, a
        # wrong password or a missing database is then a typed error in milliseconds, instead
        # of after the pool's whole wait (2 s) and its retries.
        self.verified = False

    def probe_first(self, pool: Any) -> bool:
        if self.verified or int(pool.get_stats().get("pool_available", 0)) > 0:
            return False
        return self._probing.acquire(blocking=False)

    def probe_failed(self, exc: BaseException) -> TieredSaverError:
        err = classify_connect_error(exc)
        if type(err) is TierUnavailableError:
            self.verified = False
            self.breaker.failed(err)
        else:
            self.breaker.succeeded()
        return err

    def succeeded(self) -> None:
        self.verified = True
        self.breaker.succeeded()

    def failure(self, exc: BaseException, deadline: _Deadline | None, pool: Any, probe: object) -> TieredSaverError:
        if deadline is not None and deadline.fired:
            err: TieredSaverError = TierUnavailableError(
                "postgres", f"no answer within {self.limits.deadline:g} s (server frozen or unreachable); "
                "the connection was dropped"
            )
        elif isinstance(exc, PoolTimeout):
            err = self._pool_timeout(exc, pool, probe)
        elif isinstance(exc, psycopg.Error):
            err = classify_statement_error(exc)
        else:
            raise exc
        if type(err) is TierUnavailableError:
            self.verified = False
            self.breaker.failed(err)
        else:  # the server answered (a busy pool, a rejected statement): no outage, and a
            self.breaker.succeeded()  # half-open probe must not leave the circuit open for good
        return err

    def needs_probe(self, exc: BaseException, pool: Any) -> bool:
        """A pool timeout is explained by one direct connection attempt, unless the pool holds
        all the connections it may (then it is busy, not broken): a burst of timeouts must not
        become a burst of connections to a server that may be at its limit already."""
        if not isinstance(exc, PoolTimeout) or _pool_full(pool):
            return False
        return self._probing.acquire(blocking=False)

    def probed(self) -> None:
        self._probing.release()

    def _pool_timeout(self, exc: PoolTimeout, pool: Any, probe: object) -> TieredSaverError:
        if isinstance(probe, BaseException):
            return classify_connect_error(probe)
        if probe is NOT_PROBED and not _pool_full(pool):  # another call's probe is under way
            return TierUnavailableError("postgres", f"no connection within {self.limits.connect_wait:g} s ({exc})")
        # a direct connection works, or the pool holds all it may: busy, not broken
        return PoolExhaustedError(
            "postgres", f"no pooled connection free within {self.limits.connect_wait:g} s "
            f"(pool size {pool.get_stats().get('pool_size')}, max {pool.max_size}); raise the pool's max_size"
        )


class _Driver(Generic[R, P]):
    """What both drivers hold: a Redis client, a Postgres pool, and the guard of Postgres calls
    (limits, circuit breaker, error classification)."""

    def __init__(
        self,
        redis_client: R | None,
        pg_pool: P | None,
        *,
        limits: PgLimits | None = None,
        breaker: PgBreaker | None = None,
    ) -> None:
        self.redis = redis_client
        self.pg_pool = pg_pool
        # told when the server's script cache is empty (NOSCRIPT): it restarted (hotwatch.py)
        self.on_scripts_lost: Callable[[], None] | None = None
        self.pg = _PgGuard(limits or PgLimits(), breaker or PgBreaker())


    def _scripts_lost(self) -> None:
        if self.on_scripts_lost is not None:
            self.on_scripts_lost()


class SyncDriver(_Driver["redis.Redis | redis.cluster.RedisCluster", ConnectionPool]):
    """Runs operations on blocking clients. Thread-safe: clients, pools and the breaker are."""

    def run(self, op: Op[T]) -> T:
        step = Stepper(op)
        while not step.done:
            step.feed(*_attempt(self._execute, step.request))
        return step.value  # type: ignore[return-value]

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
                self._scripts_lost()
                for script in call.scripts:
                    self.redis.script_load(script.source)
                return self._redis_once(call)
        except Exception as exc:
            _raise_redis_error(exc)

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
        self.pg.breaker.before_call()
        if self.pg.probe_first(self.pg_pool):
            failed = self._probe()
            if failed is not None:
                raise self.pg.probe_failed(failed) from failed
        deadline = None
        try:
            with self.pg_pool.connection(timeout=self.pg.limits.connect_wait) as conn:
                deadline = _Deadline(conn, _limits_for(call, self.pg.limits).deadline)
                try:
                    results = _transaction_sync(conn, call, self.pg.limits)
                finally:
                    deadline.cancel()
        except (PoolTimeout, psycopg.Error) as exc:
            probe = self._probe() if self.pg.needs_probe(exc, self.pg_pool) else NOT_PROBED
            raise self.pg.failure(exc, deadline, self.pg_pool, probe) from exc
        self.pg.succeeded()
        return results

    def _probe(self) -> BaseException | None:
        """Why the pool found no connection: connect once directly (None: it works)."""
        conninfo = self.pg_pool.conninfo if self.pg_pool is not None else None
        try:
            if not isinstance(conninfo, str):
                return TierUnavailableError("postgres", "no pooled connection could be made")
            psycopg.connect(conninfo, connect_timeout=_probe_seconds(self.pg.limits)).close()
        except Exception as exc:
            return exc
        finally:
            self.pg.probed()
        return None


NOT_PROBED = object()  # a pool timeout explained without a probe connection


def _pool_full(pool: Any) -> bool:
    return int(pool.get_stats().get("pool_size", 0)) >= int(pool.max_size)


def _probe_seconds(limits: PgLimits) -> int:
    return max(1, int(limits.connect_wait))


# A PgCall's statements go out in one pipeline (libpq >= 14): BEGIN, the settings, every
# statement and COMMIT, then one Sync: one network round trip instead of one each, which is what
# a transaction costs across a real network. (psycopg's `transaction()` block syncs at BEGIN and
# at COMMIT, and the pipeline once more on exit: four round trips; so on an autocommit
# connection, which the saver's pools are, BEGIN and COMMIT are sent as plain statements.) A
# failed statement makes the server skip the rest up to the Sync, COMMIT included, and leaves
# the transaction aborted: it is rolled back before the error goes on. Each statement gets its
# own cursor, so its result is still there once the pipeline is synced; without pipeline
# support, or on a connection that is not autocommit, `transaction()` runs the statements.
PIPELINE = psycopg.Pipeline.is_supported()


def _transaction_sync(conn: Any, call: PgCall, limits: PgLimits) -> list[Any]:
    pgarrays.ready(conn)
    if PIPELINE and conn.autocommit:
        try:
            with conn.pipeline():
                conn.cursor().execute("BEGIN")
                for sql, params in _pg_statements(call, limits):
                    conn.cursor().execute(sql, params)
                cursors = [_start_sync(conn.cursor(), st) for st in call.statements]
                conn.cursor().execute("COMMIT")
        except BaseException:
            _rollback_sync(conn)
            raise
    else:
        with conn.pipeline() if PIPELINE else contextlib.nullcontext(), conn.transaction():
            for sql, params in _pg_statements(call, limits):
                conn.cursor().execute(sql, params)
            cursors = [_start_sync(conn.cursor(), st) for st in call.statements]
    return [cur.fetchall() if st.fetch and not st.many else cur.rowcount for cur, st in zip(cursors, call.statements, strict=True)]


def _rollback_sync(conn: Any) -> None:
    """End an aborted transaction; a connection that cannot (it broke) leaves the pool anyway."""
    with contextlib.suppress(Exception):
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.rollback()


async def _transaction_async(conn: Any, call: PgCall, limits: PgLimits) -> list[Any]:
    pgarrays.ready(conn)
    if PIPELINE and conn.autocommit:
        try:
            async with conn.pipeline():
                await conn.cursor().execute("BEGIN")
                for sql, params in _pg_statements(call, limits):
                    await conn.cursor().execute(sql, params)
                cursors = [await _start_async(conn.cursor(), st) for st in call.statements]
                await conn.cursor().execute("COMMIT")
        except BaseException:
            await _rollback_async(conn)
            raise
    else:
        async with conn.pipeline() if PIPELINE else contextlib.nullcontext(), conn.transaction():
            for sql, params in _pg_statements(call, limits):
                await conn.cursor().execute(sql, params)
            cursors = [await _start_async(conn.cursor(), st) for st in call.statements]
    return [
        await cur.fetchall() if st.fetch and not st.many else cur.rowcount
        for cur, st in zip(cursors, call.statements, strict=True)
    ]


async def _rollback_async(conn: Any) -> None:
    with contextlib.suppress(Exception):
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            await conn.rollback()


def _start_sync(cur: Any, st: PgStatement) -> Any:
    if st.many:
        cur.executemany(st.sql, st.params)
    else:
        cur.execute(st.sql, st.params, binary=st.binary or None)
    return cur


async def _start_async(cur: Any, st: PgStatement) -> Any:
    if st.many:
        await cur.executemany(st.sql, st.params)
    else:
        await cur.execute(st.sql, st.params, binary=st.binary or None)
    return cur



class AsyncDriver(_Driver["redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster", AsyncConnectionPool]):
    """Runs the same operations on asyncio clients. Concurrent single commands go in one
    pipeline (coalesce.py), except on a cluster, whose commands of one pipeline may belong to
    other nodes."""

    def __init__(
        self,
        redis_client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster | None,
        pg_pool: AsyncConnectionPool | None,
        *,
        limits: PgLimits | None = None,
        breaker: PgBreaker | None = None,
    ) -> None:
        super().__init__(redis_client, pg_pool, limits=limits, breaker=breaker)
        coalesce = redis_client is not None and not isinstance(redis_client, redis.asyncio.cluster.RedisCluster)
        self.coalescer = Coalescer(redis_client) if coalesce else None

    async def run(self, op: Op[T]) -> T:
        step = Stepper(op)
        while not step.done:
            try:
                outcome = await self._execute(step.request)
            except BaseException as exc:  # CancelledError included: the op's cleanup still runs
                step.feed(False, exc)
            else:
                step.feed(True, outcome)
        return step.value  # type: ignore[return-value]

    # Set when the saver has a sync Postgres pool only: Postgres calls run on it in a thread.
    pg_in_thread: Callable[[PgCall], Any] | None = None

    async def _execute(self, request: Request | None) -> Any:
        if isinstance(request, RedisCall):
            return await self._redis(request)
        if isinstance(request, PgCall) and self.pg_in_thread is not None:
            return await asyncio.to_thread(self.pg_in_thread, request)
        if isinstance(request, Sleep):
            await asyncio.sleep(request.seconds)
            return None
        if isinstance(request, BlobIO):
            return await asyncio.to_thread(request.call)
        assert isinstance(request, PgCall)
        return await self._pg(request)

    async def _redis(self, call: RedisCall) -> Any:
        if self.redis is None:
            raise TierUnavailableError("redis", "the saver has no Redis client")
        try:
            try:
                return await self._redis_once(call)
            except redis.exceptions.NoScriptError:
                self._scripts_lost()
                for script in call.scripts:
                    await self.redis.script_load(script.source)
                return await self._redis_once(call)
        except Exception as exc:
            _raise_redis_error(exc)

    async def _redis_once(self, call: RedisCall) -> Any:
        assert self.redis is not None
        if len(call.commands) == 1 and not call.transaction:
            if self.coalescer is not None:
                return [await self.coalescer.execute(call.commands[0])]
            return [await self.redis.execute_command(*call.commands[0])]
        pipe = self.redis.pipeline(transaction=call.transaction)
        for command in call.commands:
            pipe.execute_command(*command)
        return await pipe.execute()

    async def _pg(self, call: PgCall) -> Any:
        if self.pg_pool is None:
            raise TierUnavailableError("postgres", "the saver has no Postgres pool (durable tier off)")
        self.pg.breaker.before_call()
        if self.pg.probe_first(self.pg_pool):
            failed = await self._probe()
            if failed is not None:
                raise self.pg.probe_failed(failed) from failed
        deadline = None
        try:
            async with self.pg_pool.connection(timeout=self.pg.limits.connect_wait) as conn:
                deadline = _Deadline(conn, _limits_for(call, self.pg.limits).deadline)
                try:
                    results = await _transaction_async(conn, call, self.pg.limits)
                finally:
                    deadline.cancel()
        except (PoolTimeout, psycopg.Error) as exc:
            probe = await self._probe() if self.pg.needs_probe(exc, self.pg_pool) else NOT_PROBED
            raise self.pg.failure(exc, deadline, self.pg_pool, probe) from exc
        self.pg.succeeded()
        return results

    async def _probe(self) -> BaseException | None:
        conninfo = self.pg_pool.conninfo if self.pg_pool is not None else None
        try:
            if not isinstance(conninfo, str):
                return TierUnavailableError("postgres", "no pooled connection could be made")
            conn = await psycopg.AsyncConnection.connect(conninfo, connect_timeout=_probe_seconds(self.pg.limits))
            await conn.close()
        except Exception as exc:
            return exc
        finally:
            self.pg.probed()
        return None
