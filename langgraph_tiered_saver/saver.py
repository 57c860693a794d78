"""`TieredSaver`: the LangGraph checkpointer users compile their graphs with.

A thin shell: it checks options, parses configs into `ThreadRef`s (with the call's tenant), and
runs the op of each call from `core.Core` on `SyncDriver` (`put`, `get_tuple`, ...) or
`AsyncDriver` (`aput`, `aget_tuple`, ...). Sync and async share one implementation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, TypeVar

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from langgraph_tiered_saver import _options as opt
from langgraph_tiered_saver._admin import OperatorAPI
from langgraph_tiered_saver._core.connections import Connections, PoolOptions, SaverContext
from langgraph_tiered_saver._core.delta import DeltaHistoryAPI
from langgraph_tiered_saver._core.lifecycle import Runners, SetupDone
from langgraph_tiered_saver._core.ops import Core, ListQuery
from langgraph_tiered_saver._sansio.breaker import PgBreaker
from langgraph_tiered_saver._sansio.io import Op, SyncDriver
from langgraph_tiered_saver._sansio.pgfaults import pg_limits
from langgraph_tiered_saver.blobs import BlobStore
from langgraph_tiered_saver.blobs.offloader import DEFAULT_THRESHOLD, BlobStoreFactory
from langgraph_tiered_saver.errors import ConfigError
from langgraph_tiered_saver.flushing.ops import FlushPolicy
from langgraph_tiered_saver.locking.locks import LockOps, ThreadLock
from langgraph_tiered_saver.locking.run_locks import (
    AutoLock,
    RunLocks,
    auto_lock_policy,
    in_graph_run,
    run_marker,
)
from langgraph_tiered_saver.observability.metrics import Metrics
from langgraph_tiered_saver.observability.telemetry import observed_op
from langgraph_tiered_saver.records.codec import next_version
from langgraph_tiered_saver.records.ids import ThreadRef, configurable_of, parse_config
from langgraph_tiered_saver.tenancy import (
    TenantResolver,
    authority,
    check_tenant,
    resolve_tenant,
    tenant_source,
)

logger = logging.getLogger("langgraph_tiered_saver")
T = TypeVar("T")

DEFAULT_TTL_SECONDS = 24 * 3600


class TieredSaver(OperatorAPI, DeltaHistoryAPI, BaseCheckpointSaver[str]):
    """Checkpointer with a Redis hot tier (every write, one round trip, TTL) and a Postgres
    durable tier fed by write-behind flushes (see `FlushPolicy`).

    Pass clients and pools you already have, or use `from_conn_string`. Without Postgres
    (`pg_pool`/`postgres_url` None) the saver runs on the hot tier alone.

    Tenancy (see `tenancy`): every call acts for exactly one tenant or raises. `tenant_id="acme"`
    binds the saver; `tenant_resolver=fn` asks `fn(config)` per call (a server's users: `server`);
    else each call takes it from `config["configurable"]["tenant_id"]` or `tenant_scope(...)`;
    `saver.for_tenant("acme")` is a bound view sharing clients and pools.
    """

    def __init__(
        self,
        redis_client: redis.Redis | redis.cluster.RedisCluster | None = None,
        aredis_client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster | None = None,
        *,
        pg_pool: ConnectionPool | None = None,
        apg_pool: AsyncConnectionPool | None = None,
        serde: SerializerProtocol | None = None,
        tenant_id: str | None = None,
        tenant_resolver: TenantResolver | None = None,
        key_prefix: str = "lts",
        schema: str = "langgraph_tiered",
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        refresh_ttl_on_read: bool = False,
        flush_policy: FlushPolicy | None = None,
        audit_json: bool | None = None,
        on_redis_error: str = "raise",
        background_flush: bool = True,
        pg_timeout: float = 2.0,
        pg_statement_timeout: float = 5.0,
        pg_lock_timeout: float = 2.0,
        blob_store: BlobStoreFactory | BlobStore | str | None = "auto",
        offload_threshold: int = DEFAULT_THRESHOLD,
        auto_lock: AutoLock | bool = True,
        pool_options: PoolOptions | None = None,
        hot_durability: str = "memory",
        hot_durability_timeout: float = 1.0,
        redis_check_seconds: float = 2.0,
        write_hold_seconds: float = 0.02,
        metrics_tenant_label: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(serde=serde)
        pools = opt.instance("pool_options", pool_options, PoolOptions) or PoolOptions()
        self._conn = Connections(redis_client, aredis_client, pg_pool, apg_pool, pools)
        if self._conn.cluster and hot_durability != "memory":
            # WAIT / WAITAOF confirm the writes of the connection they run on; a cluster client
            # sends them to whichever node it picks, not the one that took the write.
            raise ConfigError(
                f"hot_durability={hot_durability!r} is not supported on Redis Cluster (WAIT/WAITAOF would run on "
                "another node than the write); use 'memory' and the cluster's own replication"
            )
        ttl_ms = int(opt.ttl(ttl_seconds) * 1000)
        opt.flag("background_flush", background_flush)
        self.tenant_id, self.tenant_resolver = tenant_source(tenant_id, tenant_resolver)
        self.key_prefix, self.schema, self.ttl_seconds = key_prefix, schema, ttl_seconds
        self.durable = self._conn.durable
        self.policy = opt.instance("flush_policy", flush_policy, FlushPolicy) or FlushPolicy()
        opt.flag("metrics_tenant_label", metrics_tenant_label)
        self.metrics = Metrics(tenant_label=metrics_tenant_label)
        self.core = Core.build(
            self.serde, key_prefix=key_prefix, schema=schema, ttl_ms=ttl_ms, durable=self.durable,
            refresh_ttl_on_read=refresh_ttl_on_read, audit_json=audit_json, on_redis_error=on_redis_error,
            policy=self.policy, metrics=self.metrics, blob_store=blob_store, offload_threshold=offload_threshold,
            hot_durability=hot_durability, hot_durability_timeout=hot_durability_timeout,
            redis_check_seconds=redis_check_seconds, write_hold_seconds=write_hold_seconds, cluster=self._conn.cluster,
            clock=clock,
        )
        limits = pg_limits(pg_timeout, pg_statement_timeout, pg_lock_timeout)
        breaker = PgBreaker(self.metrics)  # shared: one view of an outage for sync and async calls
        self._sync = SyncDriver(redis_client, pg_pool, limits=limits, breaker=breaker)
        self._sync.on_scripts_lost = self.core.hot.watch.server_lost  # async drivers copy it
        self._runners = Runners(self._conn, self._sync, limits, breaker)  # shared with views
        self._locks = LockOps(key_prefix, ttl_ms, self.core.scheduler)
        policy = auto_lock_policy(auto_lock)
        if policy is not None:
            self.core.run_locks = RunLocks(self, self._locks, self.core.fences, policy)
        self.core.attach(self._runners.run_internal, background_flush=background_flush)

    @classmethod
    def from_conn_string(cls, redis_url: str, postgres_url: str | None = None, **options: Any) -> SaverContext:
        """Context manager (`with` or `async with`) owning the clients and pools it creates.
        With `postgres_url=None` the saver is Redis-only."""
        return SaverContext(cls, redis_url, postgres_url, options)

    def for_tenant(self, tenant_id: str) -> TieredSaver:
        """A view of this saver bound to `tenant_id` (shares clients, pools and the flusher):
        every call of the view acts for that tenant, and a config naming another is refused."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.tenant_id, clone.tenant_resolver = check_tenant(tenant_id), None  # not the resolver's
        return clone

    def run_op(self, op: Op[T]) -> T:
        """Run one op on the sync driver (see `lifecycle.Runners`); refused once closed."""
        return self._runners.run(op)

    async def arun_op(self, op: Op[T]) -> T:
        return await self._runners.arun(op)

    def _tenant(self, what: str, **target: Any) -> str:  # no config: bound, resolved for `target`, or scoped
        return resolve_tenant(None, authority(self.tenant_id, self.tenant_resolver, {"configurable": target}, what), what)

    def _ref(self, config: RunnableConfig) -> ThreadRef:
        return parse_config(config, authority(self.tenant_id, self.tenant_resolver, config, "this checkpoint call"))

    def _list_op(
        self, config: RunnableConfig | None, filter: dict[str, Any] | None, before: RunnableConfig | None, limit: int | None
    ) -> Op[list[CheckpointTuple]]:
        ref = None if config is None else self._ref(config)
        tenant = ref.tenant_id if ref else self._tenant("list(None)")
        all_ns = ref is None or configurable_of(config).get("checkpoint_ns") is None
        before_id = None if before is None else configurable_of(before).get("checkpoint_id")
        op = self.core.list_op(ListQuery(ref, tenant, all_ns, filter, before_id, limit))
        return observed_op(self.metrics, "list", op, tenant, ref.thread_id if ref else None)

    def observed(self, name: str, op: Op[T], ref: ThreadRef) -> Op[T]:
        """The call timed by tier and traced (see `telemetry`)."""
        return observed_op(self.metrics, name, op, ref.tenant_id, ref.thread_id)

    # ------------------------------------------------------------------ locks and durable tier

    def thread_lock(
        self, config: RunnableConfig, *, timeout: float = 30.0, wait: bool = True, wait_timeout: float | None = None
    ) -> ThreadLock:
        """Hold the thread's run lock (sync `with` or `async with`): concurrent resumers of the
        same thread wait (or get `ThreadLockedError` with `wait=False`), and a holder that lost
        its lock gets `StaleLockError` on its next write. `timeout` is the lock TTL, renewed
        every third of it while held."""
        return ThreadLock(self, self._locks, self.core.fences, self._ref(config), timeout, wait, wait_timeout)

    def release_run_lock(self, config: RunnableConfig) -> None:
        """With `auto_lock`: let go of the thread's run lock now, for a run whose end the saver
        cannot see (a static `interrupt_before`/`interrupt_after`). No-op if none is held."""
        self.run_op(self.core.release_run_lock_op(self._ref(config)))

    async def arelease_run_lock(self, config: RunnableConfig) -> None:
        await self.arun_op(self.core.release_run_lock_op(self._ref(config)))

    def setup(self, *, partitions: int | None = None, replace_hot_tier: bool = False) -> SetupDone:
        """Apply the Postgres migrations now (idempotent, concurrent-safe; `partitions`: see
        durable.migrations) and claim the schema for this saver's hot tier (hot_tier.py):
        `HotTierConflictError` when another key prefix feeds it, unless `replace_hot_tier`. The
        result may be awaited at no cost (`await saver.setup()`, as on AsyncPostgresSaver)."""
        self.run_op(self.core.setup_op(partitions, replace_hot_tier))
        return SetupDone()

    async def asetup(self, *, partitions: int | None = None, replace_hot_tier: bool = False) -> None:
        await self.arun_op(self.core.setup_op(partitions, replace_hot_tier))

    # ------------------------------------------------------------------ BaseCheckpointSaver, sync

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        marker = None if self.core.run_locks is None else run_marker(config)
        ref = self._ref(config)
        return self.run_op(self.observed("get_tuple", self.core.get_tuple_op(ref, marker), ref))

    def list(
        self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None, limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        yield from self.run_op(self._list_op(config, filter, before, limit))

    def put(
        self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata, new_versions: ChannelVersions
    ) -> RunnableConfig:
        ref = self._ref(config)
        return self.run_op(self.observed("put", self.core.put_op(ref, config, checkpoint, metadata, new_versions), ref))  # type: ignore[no-any-return]

    def put_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        ref = self._ref(config)
        self.run_op(self.observed("put_writes", self.core.put_writes_op(ref, writes, task_id, task_path, in_graph_run(config)), ref))

    def delete_thread(self, thread_id: str) -> None:
        self.run_op(self.core.delete_thread_op(self._tenant("delete_thread", thread_id=thread_id), thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self.run_op(self.core.delete_for_runs_op(self._tenant("delete_for_runs", run_ids=run_ids), run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self.run_op(self.core.copy_thread_op(self._tenant("copy_thread", thread_id=source_thread_id, target_thread_id=target_thread_id), source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self.run_op(self.core.prune_op(self._tenant("prune", thread_ids=thread_ids), thread_ids, strategy))

    # ------------------------------------------------------------------ BaseCheckpointSaver, async

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        marker = None if self.core.run_locks is None else run_marker(config)
        ref = self._ref(config)
        return await self.arun_op(self.observed("get_tuple", self.core.get_tuple_op(ref, marker), ref))

    async def alist(
        self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None, limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        for item in await self.arun_op(self._list_op(config, filter, before, limit)):
            yield item

    async def aput(
        self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata, new_versions: ChannelVersions
    ) -> RunnableConfig:
        ref = self._ref(config)
        return await self.arun_op(self.observed("put", self.core.put_op(ref, config, checkpoint, metadata, new_versions), ref))  # type: ignore[no-any-return]

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        ref = self._ref(config)
        await self.arun_op(self.observed("put_writes", self.core.put_writes_op(ref, writes, task_id, task_path, in_graph_run(config)), ref))

    async def adelete_thread(self, thread_id: str) -> None:
        await self.arun_op(self.core.delete_thread_op(self._tenant("delete_thread", thread_id=thread_id), thread_id))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await self.arun_op(self.core.delete_for_runs_op(self._tenant("delete_for_runs", run_ids=run_ids), run_ids))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await self.arun_op(self.core.copy_thread_op(self._tenant("copy_thread", thread_id=source_thread_id, target_thread_id=target_thread_id), source_thread_id, target_thread_id))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await self.arun_op(self.core.prune_op(self._tenant("prune", thread_ids=thread_ids), thread_ids, strategy))

    def close(self) -> None:
        """Refuse new calls (`SaverClosedError`), release run locks, drain the outbox (per policy),
        stop the flusher, close what the saver created (twins, or all under `from_conn_string`)."""
        if not self._runners.life.close():
            return
        try:
            if self.core.run_locks is not None:
                self._runners.run_internal(self.core.close_op())
            self.core.stop_background(drain=self.policy.on_close)
        finally:
            self.core.scheduler.stop()  # already, unless close_op raised
            self._conn.close_sync_owned()

    async def aclose(self) -> None:
        if not await asyncio.to_thread(self._runners.life.close):  # calls under way may need this loop
            return
        try:
            if self.core.run_locks is not None:
                await self._runners.arun_internal(self.core.close_op())
            await asyncio.to_thread(self.core.stop_background, drain=self.policy.on_close)
        finally:
            await asyncio.to_thread(self.core.scheduler.stop)
            await self._conn.aclose_owned()

    def get_next_version(self, current: str | None, channel: None) -> str:
        return next_version(current)
