"""Clients and pools: built once here, sized by the user, closed by whoever created them.

The saver runs sync calls on `redis.Redis` + `psycopg_pool.ConnectionPool` and async calls on
their asyncio twins. A user may give either client (or pool) and the saver builds the other the
first time it is needed — from the *public* settings of the given one (an allowlist of
connection settings), never by copying redis-py's internal `connection_kwargs` wholesale: each
redis-py release adds keys there (8.x: `himport_registry`) that the other client class refuses.

Pools the saver creates:

- Redis: a *blocking* pool (`BlockingConnectionPool`) of `redis_max_connections`: a burst of
  concurrent runs waits up to `redis_pool_timeout` for a connection instead of failing with
  "Too many connections" (and a wait past it raises `PoolExhaustedError`, not "unreachable").
- Postgres: `pg_min_size`..`pg_max_size` connections, recycled after `pg_max_idle` /
  `pg_max_lifetime`, with `prepare_threshold=None` by default: psycopg then never creates
  server-side prepared statements, which PgBouncer in transaction mode cannot keep per
  client (`DuplicatePreparedStatement`). Safe first: a pooler cannot be detected reliably
  (same port, another host). The cost falls on Postgres reads, off the hot path. A read of one
  checkpoint (a new thread's first read) goes through the PL/pgSQL function `lts_get_tuple`,
  whose plans the server keeps per connection whatever the pooler; other reads (`list`) are
  planned each time: set `pg_prepare_threshold=5` when no transaction-mode pooler sits in front.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, fields
from typing import Any

import psycopg
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from langgraph_tiered_saver import _options as opt
from langgraph_tiered_saver._core.urls import check_postgres_url, check_redis_url, shown
from langgraph_tiered_saver._sansio.pgfaults import classify_connect_error
from langgraph_tiered_saver.errors import ConfigError, EventLoopError, TierUnavailableError
from langgraph_tiered_saver.observability.logs import relay_driver_logs

logger = logging.getLogger("langgraph_tiered_saver")

# Settings that mean the same to redis.Redis and redis.asyncio.Redis connections (redis-py 5-8).
REDIS_SETTINGS = (
    "host", "port", "path", "db", "username", "password", "credential_provider",
    "socket_timeout", "socket_connect_timeout", "socket_keepalive", "socket_keepalive_options",
    "retry_on_timeout", "encoding", "encoding_errors", "decode_responses", "client_name",
    "health_check_interval", "protocol", "ssl_keyfile", "ssl_certfile", "ssl_cert_reqs",
    "ssl_ca_certs", "ssl_ca_data", "ssl_check_hostname",
)  # fmt: skip


@dataclass(frozen=True)
class PoolOptions:
    """Sizes of the pools the saver creates (`from_conn_string`, and twins of given clients)."""

    redis_max_connections: int = 64
    redis_pool_timeout: float = 20.0
    pg_min_size: int = 1
    pg_max_size: int = 10
    pg_max_idle: float = 600.0
    pg_max_lifetime: float = 3600.0
    pg_prepare_threshold: int | None = None
    # How long the pool retries one failed connection attempt before giving up on it (it then
    # connects afresh on the next request). psycopg_pool's default, 300 s with a doubling delay,
    # left a pool waiting up to a minute after a 45 s outage had ended.
    pg_reconnect_timeout: float = 2.0
    redis_cluster: bool = False  # the URL names a Redis Cluster node (also: `redis+cluster://`)

    def __post_init__(self) -> None:
        for name in ("redis_max_connections", "pg_min_size", "pg_max_size"):
            opt.positive_int(name, getattr(self, name))
        for name in ("redis_pool_timeout", "pg_max_idle", "pg_max_lifetime", "pg_reconnect_timeout"):
            opt.seconds(name, getattr(self, name), inclusive=False)
        if self.pg_min_size > self.pg_max_size:
            raise ConfigError(f"pg_min_size ({self.pg_min_size}) exceeds pg_max_size ({self.pg_max_size})")
        if self.pg_prepare_threshold is not None:
            opt.whole("pg_prepare_threshold", self.pg_prepare_threshold)

    @classmethod
    def take(cls, options: dict[str, Any]) -> PoolOptions:
        """Pop the pool options out of `from_conn_string`'s keyword arguments."""
        names = {f.name for f in fields(cls)}
        return cls(**{name: options.pop(name) for name in list(options) if name in names})

    def pg_kwargs(self) -> dict[str, Any]:
        return {
            "min_size": self.pg_min_size,
            "max_size": self.pg_max_size,
            "max_idle": self.pg_max_idle,
            "max_lifetime": self.pg_max_lifetime,
            "reconnect_timeout": self.pg_reconnect_timeout,
            "kwargs": {"autocommit": True, "prepare_threshold": self.pg_prepare_threshold},
        }


CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


class AsyncBlockingPool(redis.asyncio.BlockingConnectionPool):
    """redis-py's asyncio blocking pool, with a checkout that skips its wait machinery (a
    condition, a timeout scope: about 8 us a command) when an idle connection is there and no
    one waits: taking it cannot block, and the plain pool's checkout takes it without yielding
    to the loop. Otherwise, and on releases whose pool has another design (redis-py 5.0's
    queue), redis-py's own checkout runs."""

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        condition = getattr(self, "_condition", None)
        lock = getattr(self, "_lock", None)
        if (
            condition is not None and lock is not None and not lock.locked()
            and not getattr(condition, "_waiters", True) and getattr(self, "_available_connections", None)
        ):  # fmt: skip
            return await redis.asyncio.ConnectionPool.get_connection(self, *args, **kwargs)
        return await super().get_connection(*args, **kwargs)


def cluster_url(url: str, options: PoolOptions) -> str | None:
    """The plain redis:// URL of a cluster node when `url` names a cluster, else None."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in CLUSTER_SCHEMES:
        return CLUSTER_SCHEMES[scheme.lower()] + "://" + rest
    return url if options.redis_cluster else None


def is_cluster(client: Any) -> bool:
    return isinstance(client, (redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster))


def cluster_transactions_supported(client: Any) -> bool:
    """Whether redis-py runs MULTI/EXEC on a cluster (a single-slot transaction): redis-py >= 6.1."""
    import inspect

    pipeline_class = type(client.pipeline())
    return "transaction" in inspect.signature(pipeline_class.__init__).parameters


def _cluster_kwargs(client: Any) -> dict[str, Any]:
    manager = getattr(client, "nodes_manager", None)
    given = getattr(client, "connection_kwargs", None) or getattr(manager, "connection_kwargs", None) or {}
    return dict(given)


def redis_from_url(url: str, options: PoolOptions, *, asyncio: bool) -> Any:
    """A client on a blocking pool of the configured size (a RedisCluster for a cluster URL)."""
    node_url = cluster_url(url, options)
    if node_url is not None:
        cluster: Any = redis.asyncio.cluster if asyncio else redis.cluster
        return cluster.RedisCluster.from_url(
            node_url, max_connections=options.redis_max_connections, decode_responses=False
        )
    module: Any = redis.asyncio if asyncio else redis
    pool = (AsyncBlockingPool if asyncio else redis.BlockingConnectionPool).from_url(
        url, max_connections=options.redis_max_connections, timeout=options.redis_pool_timeout,
        decode_responses=False,
    )  # fmt: skip
    return module.Redis(connection_pool=pool)


def redis_settings(client: Any) -> dict[str, Any]:
    """The public connection settings of a redis-py client (sync or asyncio)."""
    if is_cluster(client):
        given = _cluster_kwargs(client)
        return {name: given[name] for name in REDIS_SETTINGS if name in given and name not in ("host", "port", "db")}
    pool = client.connection_pool
    given = pool.connection_kwargs
    settings = {name: given[name] for name in REDIS_SETTINGS if name in given}
    settings["connection_class"] = pool.connection_class.__name__
    return settings


def redis_twin(client: Any, options: PoolOptions, *, asyncio: bool) -> Any:
    """A client of the other kind (sync <-> asyncio) on the same server, with the same settings."""
    if is_cluster(client):
        # the known nodes, else the startup nodes (an asyncio client learns the others lazily)
        nodes = list(client.get_nodes()) or list(client.nodes_manager.startup_nodes.values())
        if not nodes:
            raise ConfigError("the Redis Cluster client names no node to build its twin from")
        host, port = nodes[0].host, nodes[0].port
        cluster: Any = redis.asyncio.cluster if asyncio else redis.cluster
        return cluster.RedisCluster(
            host=host, port=port, max_connections=options.redis_max_connections, **redis_settings(client)
        )
    module: Any = redis.asyncio if asyncio else redis
    settings = redis_settings(client)
    connection_class = getattr(module.connection, settings.pop("connection_class"), module.Connection)
    pool = (AsyncBlockingPool if asyncio else redis.BlockingConnectionPool)(
        connection_class=connection_class, max_connections=options.redis_max_connections,
        timeout=options.redis_pool_timeout, **settings,
    )  # fmt: skip
    return module.Redis(connection_pool=pool)


def pg_pool(conninfo: str, options: PoolOptions) -> ConnectionPool:
    return ConnectionPool(conninfo, open=True, **options.pg_kwargs())


async def apg_pool(conninfo: str, options: PoolOptions) -> AsyncConnectionPool:
    pool = AsyncConnectionPool(conninfo, open=False, **options.pg_kwargs())
    await pool.open()
    return pool


def pool_conninfo(pool: Any) -> str:
    conninfo = pool.conninfo
    if not isinstance(conninfo, str):
        raise ConfigError("give both pools (pg_pool and apg_pool) when a pool's conninfo is a callable")
    return conninfo


_SYNC_CLOSED = (redis.Redis, redis.cluster.RedisCluster, ConnectionPool)


class Connections:
    """The saver's clients and pools, and which of them it created (and so must close)."""

    def __init__(
        self,
        redis_client: Any,
        aredis_client: Any,
        pg: ConnectionPool | None,
        apg: AsyncConnectionPool | None,
        options: PoolOptions,
    ) -> None:
        if redis_client is None and aredis_client is None:
            raise ConfigError("TieredSaver needs a Redis client (redis_client or aredis_client)")
        for client in (redis_client, aredis_client):
            if client is None:
                continue
            if is_cluster(client):
                if _cluster_kwargs(client).get("decode_responses"):
                    raise ConfigError("the Redis client must use decode_responses=False (bytes)")
                if not cluster_transactions_supported(client):
                    raise ConfigError(
                        f"Redis Cluster needs redis-py >= 6.1 (MULTI/EXEC in a cluster pipeline); this is {redis.__version__}"
                    )
                continue
            if not hasattr(client, "connection_pool"):
                raise ConfigError(f"unsupported Redis client {type(client).__name__}")
            if client.connection_pool.connection_kwargs.get("decode_responses"):
                raise ConfigError("the Redis client must use decode_responses=False (bytes)")
        self.cluster = is_cluster(redis_client if redis_client is not None else aredis_client)
        self.redis, self.aredis, self.pg, self.apg = redis_client, aredis_client, pg, apg
        self.options = options
        self.durable = pg is not None or apg is not None
        self.owned: list[Any] = []
        self._lock = threading.Lock()
        self._given_aredis, self._given_apg = aredis_client, apg
        self._given_loop: asyncio.AbstractEventLoop | None = None  # the loop the given ones run on
        self._sides: dict[asyncio.AbstractEventLoop, tuple[Any, AsyncConnectionPool | None]] = {}
        self._loop_of: dict[int, asyncio.AbstractEventLoop] = {}  # id(twin) -> its loop

    def sync_side(self) -> tuple[Any, ConnectionPool | None]:
        """The sync client and pool, built from their async twins on first use."""
        with self._lock:
            if self.redis is None:
                self.redis = redis_twin(self.aredis, self.options, asyncio=False)
                self.owned.append(self.redis)
            if self.durable and self.pg is None:
                self.pg = pg_pool(pool_conninfo(self.apg), self.options)
                self.owned.append(self.pg)
        return self.redis, self.pg

    async def async_side(self) -> tuple[Any, AsyncConnectionPool | None]:
        """The asyncio client and pool of the running event loop.

        asyncio clients belong to the loop they first ran on. Twins (built here from the sync
        client and pool) are built once per loop, so a saver opened with `with` serves any
        loop (each `asyncio.run`, a loop per thread). Clients the user gave, or `async with`
        made, serve their own loop only: another loop gets `EventLoopError`, which says what to
        do, instead of asyncio's "Event loop is closed". Concurrent first calls share one pool
        (open() is idempotent, so every caller may await it)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            side = self._sides.get(loop)
            if side is None:
                for dead in [other for other in self._sides if other.is_closed()]:
                    self._forget(dead)
                side = (self._async_redis(loop), self._async_pg(loop))
                self._sides[loop] = side
                self.aredis, self.apg = side
        aredis, apg = side
        if apg is not None and apg.closed and apg in self.owned:  # open already: no lock per call
            await apg.open()
        return aredis, apg

    def _async_redis(self, loop: asyncio.AbstractEventLoop) -> Any:
        if self._given_aredis is not None:
            self._check_loop(loop, "Redis client")
            return self._given_aredis
        twin = redis_twin(self.redis, self.options, asyncio=True)
        self.owned.append(twin)
        self._loop_of[id(twin)] = loop
        return twin

    def _async_pg(self, loop: asyncio.AbstractEventLoop) -> AsyncConnectionPool | None:
        """The given asyncio pool; None when the saver has a sync pool only (its async calls
        then run their Postgres part on the sync pool in a worker thread: an asyncio pool per
        loop would leave its background tasks to every `asyncio.run` to cancel)."""
        if self._given_apg is None:
            return None
        self._check_loop(loop, "Postgres pool")
        return self._given_apg

    def _check_loop(self, loop: asyncio.AbstractEventLoop, what: str) -> None:
        if self._given_loop is None:
            self._given_loop = loop
        elif self._given_loop is not loop:
            state = "now closed" if self._given_loop.is_closed() else "still running elsewhere"
            raise EventLoopError(
                f"this saver's asyncio {what} belongs to the event loop that first used it ({state}), not "
                "the running one: open the saver inside the loop that uses it (`async with "
                "TieredSaver.from_conn_string(...)` within each asyncio.run), or open it with `with` "
                "(sync), which builds asyncio clients for every event loop"
            )

    def _forget(self, loop: asyncio.AbstractEventLoop) -> None:
        """Drop the twins of a closed loop: their connections died with it and cannot be
        closed from another loop."""
        for resource in self._sides.pop(loop, ()):
            if resource is not None and self._loop_of.pop(id(resource), None) is loop:
                self.owned = [r for r in self.owned if r is not resource]

    def close_sync_owned(self) -> None:
        """Close what was created here and is closed without an event loop."""
        for resource in reversed(self.owned):
            if isinstance(resource, _SYNC_CLOSED):
                resource.close()
        self.owned = [r for r in self.owned if not isinstance(r, _SYNC_CLOSED)]

    async def aclose_owned(self) -> None:
        running = asyncio.get_running_loop()
        for resource in reversed(self.owned):
            loop = self._loop_of.get(id(resource))
            if loop is not None and loop is not running:
                continue  # another loop's twin: it cannot be awaited here (and dies with its loop)
            if isinstance(resource, AsyncConnectionPool):
                await resource.close()
            elif isinstance(resource, (redis.asyncio.Redis, redis.asyncio.cluster.RedisCluster)):
                await (resource.aclose() if hasattr(resource, "aclose") else resource.close())
            else:
                resource.close()
        self.owned = []


class SaverContext:
    """What `TieredSaver.from_conn_string` returns: enter it with `with` or `async with`. It
    owns (and closes) the clients and pools it creates; the saver drains its outbox first."""

    def __init__(self, cls: Any, redis_url: str, postgres_url: str | None, options: dict[str, Any]) -> None:
        self.cls = cls
        self.redis_url = check_redis_url(redis_url)
        self.postgres_url = None if postgres_url is None else check_postgres_url(postgres_url)
        self.options = dict(options)
        self.pools = PoolOptions.take(self.options)
        self.saver: Any = None

    def _made(self, saver: Any, client: Any, pool: Any) -> Any:
        saver._conn.owned[:0] = [r for r in (client, pool) if r is not None]
        self.saver = saver
        return saver

    def __enter__(self) -> Any:
        # Sync use: blocking clients; async twins are built if ever needed (and closed with the saver).
        relay_driver_logs()
        if self.postgres_url:
            check_postgres(self.postgres_url, self.options.get("pg_timeout", 2.0))
        client = redis_from_url(self.redis_url, self.pools, asyncio=False)
        pool = pg_pool(self.postgres_url, self.pools) if self.postgres_url else None
        return self._made(self.cls(client, None, pg_pool=pool, pool_options=self.pools, **self.options), client, pool)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if self.saver is not None:
            if exc is None:
                self.saver.close()  # the block succeeded: a flush failure at close is the caller's error
                return
            try:
                self.saver.close()
            except Exception:
                _close_failed_under(self.saver, exc)

    async def __aenter__(self) -> Any:
        # Async use: asyncio clients; the flusher thread builds its blocking twins on first flush.
        relay_driver_logs()
        if self.postgres_url:
            await acheck_postgres(self.postgres_url, self.options.get("pg_timeout", 2.0))
        client = redis_from_url(self.redis_url, self.pools, asyncio=True)
        pool = await apg_pool(self.postgres_url, self.pools) if self.postgres_url else None
        return self._made(self.cls(None, client, apg_pool=pool, pool_options=self.pools, **self.options), client, pool)

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if self.saver is not None:
            if exc is None:
                await self.saver.aclose()
                return
            try:
                await self.saver.aclose()
            except Exception:
                _close_failed_under(self.saver, exc)


def describe_servers(conn: Connections) -> dict[str, str | None]:
    """Where the saver's servers are, passwords hidden (for start-up logs)."""
    client = conn.redis if conn.redis is not None else conn.aredis
    if is_cluster(client):
        nodes = list(client.get_nodes()) or list(client.nodes_manager.startup_nodes.values())
        redis_at = "cluster " + ", ".join(f"{n.host}:{n.port}" for n in nodes[:3])
    else:
        kwargs = client.connection_pool.connection_kwargs
        redis_at = (f"unix://{kwargs['path']}" if kwargs.get("path")
                    else f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}")  # fmt: skip
    pool = conn.pg if conn.pg is not None else conn.apg
    conninfo = getattr(pool, "conninfo", None)
    return {"redis": redis_at, "postgres": shown(conninfo) if isinstance(conninfo, str) else None}


def check_postgres(url: str, timeout: float) -> None:
    """Connect once before building the pool: a configuration Postgres refuses (a wrong
    password, a missing database) raises its typed error at once, with no pool retrying it in
    the background. An unreachable server only logs: the hot tier works without Postgres, and
    the first Postgres call says it is unreachable (fast, see `_io._PgGuard.verified`)."""
    try:
        psycopg.connect(url, connect_timeout=max(1, int(timeout))).close()
    except psycopg.Error as exc:
        _refused_or_unreachable(url, exc)


async def acheck_postgres(url: str, timeout: float) -> None:
    try:
        conn = await psycopg.AsyncConnection.connect(url, connect_timeout=max(1, int(timeout)))
        await conn.close()
    except psycopg.Error as exc:
        _refused_or_unreachable(url, exc)


def _refused_or_unreachable(url: str, exc: psycopg.Error) -> None:
    err = classify_connect_error(exc)
    if not isinstance(err, TierUnavailableError):
        raise err from None
    logger.warning("Postgres at %s is unreachable at start-up; the hot tier works meanwhile: %s", shown(url), err)


def _close_failed_under(saver: Any, exc: BaseException) -> None:
    """The block raised, and so did closing the saver (a flush during an outage): the user's
    exception is the one that propagates; the close failure is logged and counted."""
    saver.metrics.incr("close_failures")
    logger.error(
        "closing the saver failed while the block raised %s (the block's exception propagates; "
        "unflushed entries stay in the Redis outbox for the next flusher)", type(exc).__name__, exc_info=True,
    )
