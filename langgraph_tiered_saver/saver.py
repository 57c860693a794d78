"""`TieredSaver`: the LangGraph checkpointer users compile their graphs with.

The class is thin on purpose: every operation is one generator in `hot.py` / `durable/` (no
I/O), run by `SyncDriver` for `put`, `get_tuple`, ... and by `AsyncDriver` for `aput`,
`aget_tuple`, ... Sync and async therefore share one implementation line for line.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import timedelta
from typing import Any

import redis
import redis.asyncio
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

from . import keys as K
from . import options as opt
from ._io import AsyncDriver, Op, RedisCall, SyncDriver
from .blobs import BlobStore, parse_pointer
from .breaker import PgBreaker
from .codec import encode_typed, unpack_checkpoint
from .connections import Connections, PoolOptions, apg_pool, pg_pool, redis_from_url
from .durable import ops as pg
from .durable.migrations import setup_op
from .durable.retention import PRUNE_STRATEGIES
from .durable.roles import check_role_op
from .durable.sql import check_schema
from .errors import ConfigError, TierUnavailableError
from .flush import FlushOps, FlushPolicy, FlushResult
from .flusher import BackgroundFlusher, FlusherHealth, record_flush
from .hot import HotOps, StoredCheckpoint, decode_refs, encode_refs, stored_to_export
from .ids import ThreadRef, check_thread, configurable_of, parse_config
from .legacy import LegacyReads
from .locks import LockOps, ThreadLock
from .metrics import Metrics
from .offload import (
    DEFAULT_THRESHOLD,
    BlobStoreFactory,
    Offloader,
    digests_in_export,
    filesystem_blobs,
)
from .pgfaults import pg_limits
from .planning import keep_latest
from .runlock import AutoLock, RunLocks, auto_lock_policy, ends_run, run_finished, run_marker
from .tenancy import check_tenant, resolve_tenant

logger = logging.getLogger("langgraph_tiered_saver")

DEFAULT_TTL_SECONDS = 24 * 3600
# How long a synchronous flush (an interrupt) waits for the put of the checkpoint its write
# belongs to, which LangGraph may still have in flight on another thread.
SYNC_FLUSH_PUT_WAIT_SECONDS = 5.0


class TieredSaver(BaseCheckpointSaver[str]):
    """Checkpointer with a Redis hot tier (every write, one round trip, TTL) and a Postgres
    durable tier fed by write-behind flushes (see `FlushPolicy`).

    Pass clients and pools you already have, or use `from_conn_string`. Without Postgres
    (`pg_pool`/`postgres_url` None) the saver runs on the hot tier alone.

    Tenancy (see `tenancy`): every call acts for exactly one tenant or raises. `tenant_id="acme"`
    binds the saver (single-tenant deployments); without it the saver is multi-tenant and each
    call takes its tenant from `config["configurable"]["tenant_id"]` or `tenant_scope(...)`;
    `saver.for_tenant("acme")` is a bound view sharing clients and pools.
    """

    def __init__(
        self,
        redis_client: redis.Redis | None = None,
        aredis_client: redis.asyncio.Redis | None = None,
        *,
        pg_pool: ConnectionPool | None = None,
        apg_pool: AsyncConnectionPool | None = None,
        serde: SerializerProtocol | None = None,
        tenant_id: str | None = None,
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
        blob_store: BlobStoreFactory | BlobStore | str | None = "filesystem",
        offload_threshold: int = DEFAULT_THRESHOLD,
        auto_lock: AutoLock | bool = False,
        pool_options: PoolOptions | None = None,
    ) -> None:
        super().__init__(serde=serde)
        if pool_options is not None and not isinstance(pool_options, PoolOptions):
            raise ConfigError(f"pool_options must be a PoolOptions, got {pool_options!r}")
        if flush_policy is not None and not isinstance(flush_policy, FlushPolicy):
            raise ConfigError(f"flush_policy must be a FlushPolicy, got {flush_policy!r}")
        self._conn = Connections(redis_client, aredis_client, pg_pool, apg_pool, pool_options or PoolOptions())
        ttl_seconds = opt.ttl(ttl_seconds)
        opt.flag("refresh_ttl_on_read", refresh_ttl_on_read)
        opt.flag("audit_json", audit_json, allow_none=True)
        opt.flag("background_flush", background_flush)
        opt.choice("on_redis_error", on_redis_error, ("raise", "fallback"))
        for name, value in (("pg_timeout", pg_timeout), ("pg_statement_timeout", pg_statement_timeout),
                            ("pg_lock_timeout", pg_lock_timeout)):  # fmt: skip
            opt.seconds(name, value, inclusive=False)
        opt.positive_int("offload_threshold", offload_threshold)
        opt.key_prefix(key_prefix)
        check_schema(schema)
        self.tenant_id = None if tenant_id is None else check_tenant(tenant_id)
        self.key_prefix = key_prefix
        self.schema = schema
        self.ttl_seconds = ttl_seconds
        self.durable = self._conn.durable
        self.on_redis_error = on_redis_error
        self.policy = flush_policy or FlushPolicy()
        self.metrics = Metrics()
        self._offload = Offloader(
            _blob_factory(blob_store), key_prefix=key_prefix, threshold=offload_threshold,
            collect_garbage=not isinstance(blob_store, BlobStore),
        )
        self._hot = HotOps(
            self.serde,
            key_prefix=key_prefix,
            ttl_ms=int(ttl_seconds * 1000),
            refresh_on_read=refresh_ttl_on_read,
            track_outbox=self.durable,
            offloader=self._offload,
        )
        self._flush = FlushOps(self.serde, key_prefix=key_prefix, schema=schema, audit_json=audit_json)
        self._legacy = LegacyReads(  # checkpoint format < 4: sends migrated on read (legacy.py)
            self._hot, self._offload, self.serde, schema=schema, durable=self.durable,
            first_version=lambda: self.get_next_version(None, None), on_hot_error=self._hot_failed,
        )
        limits = pg_limits(pg_timeout, pg_statement_timeout, pg_lock_timeout)
        breaker = PgBreaker(self.metrics)  # shared: one view of an outage for sync and async calls
        self._sync = SyncDriver(redis_client, pg_pool, limits=limits, breaker=breaker)
        self._async = AsyncDriver(aredis_client, apg_pool, limits=limits, breaker=breaker)
        self._locks = LockOps(key_prefix, int(ttl_seconds * 1000))
        self._fences: dict[tuple[str, str], str] = {}
        policy = auto_lock_policy(auto_lock)
        self._run_locks = None if policy is None else RunLocks(self, policy)
        self._flusher: BackgroundFlusher | None = None
        if self.durable and background_flush:
            self._flusher = BackgroundFlusher(self._run, self._flush, self.policy, self.metrics)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_conn_string(
        cls, redis_url: str, postgres_url: str | None = None, **options: Any
    ) -> _SaverContext:
        """Context manager (`with` or `async with`) owning the clients and pools it creates.
        With `postgres_url=None` the saver is Redis-only."""
        return _SaverContext(cls, redis_url, postgres_url, options)

    def for_tenant(self, tenant_id: str) -> TieredSaver:
        """A view of this saver bound to `tenant_id` (shares clients, pools and the flusher):
        every call of the view acts for that tenant, and a config naming another is refused."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.tenant_id = check_tenant(tenant_id)
        return clone

    def _driver_sync(self) -> SyncDriver:
        if self._sync.redis is None or (self.durable and self._sync.pg_pool is None):
            self._sync.redis, self._sync.pg_pool = self._conn.sync_side()
        return self._sync

    async def _driver_async(self) -> AsyncDriver:
        if self._async.redis is None or (self.durable and self._async.pg_pool is None):
            self._async.redis, self._async.pg_pool = await self._conn.async_side()
        return self._async

    def _run(self, op: Op[Any]) -> Any:
        return self._driver_sync().run(op)

    async def _arun(self, op: Op[Any]) -> Any:
        return await (await self._driver_async()).run(op)

    def _tenant(self, what: str) -> str:
        """The tenant of a call that has no config (thread-level methods): bound or scoped."""
        return resolve_tenant(None, self.tenant_id, what)

    def _ref(self, config: RunnableConfig, *, need_checkpoint_id: bool = False) -> ThreadRef:
        return parse_config(config, self.tenant_id, need_checkpoint_id=need_checkpoint_id)

    def _fence(self, ref: ThreadRef) -> str:
        """The fencing token of the lock this process holds on the thread ("" if none)."""
        return self._fences.get((ref.tenant_id, ref.thread_id), "")

    def thread_lock(
        self,
        config: RunnableConfig,
        *,
        timeout: float = 30.0,
        wait: bool = True,
        wait_timeout: float | None = None,
    ) -> ThreadLock:
        """Hold the thread's run lock (sync `with` or `async with`): concurrent resumers of the
        same thread wait (or get `ThreadLockedError` with `wait=False`), and a holder that lost
        its lock gets `StaleLockError` on its next write. `timeout` is the lock TTL, renewed
        every third of it while held."""
        return ThreadLock(self, self._ref(config), timeout, wait, wait_timeout)

    def release_run_lock(self, config: RunnableConfig) -> None:
        """With `auto_lock`: let go of the thread's run lock now, for a run whose end the saver
        cannot see (a static `interrupt_before`/`interrupt_after`). No-op if none is held."""
        if self._run_locks is not None:
            self._run_locks.end(self._ref(config))

    async def arelease_run_lock(self, config: RunnableConfig) -> None:
        if self._run_locks is not None:
            await self._run_locks.aend(self._ref(config))

    def _run_start(self, config: RunnableConfig) -> object | None:
        """With `auto_lock`: the run marker if this `get_tuple` starts a root graph run."""
        return None if self._run_locks is None else run_marker(config)

    def _run_lock_to_end(
        self,
        config: RunnableConfig,
        *,
        checkpoint: Checkpoint | None = None,
        writes: Sequence[tuple[str, Any]] = (),
        failed: bool = False,
    ) -> ThreadLock | None:
        """With `auto_lock`: note the run's activity and return its lock if this call was the
        run's last one (a final root checkpoint, an interrupt or error write, a failed call)."""
        if self._run_locks is None:
            return None
        try:
            ref = self._ref(config)
        except ConfigError:
            return None
        lock = self._run_locks.held(ref)
        if lock is None:
            return None
        lock.touch()
        if failed:
            return lock
        if ref.checkpoint_ns:
            return None
        done = run_finished(checkpoint) if checkpoint is not None else ends_run(writes)
        return lock if done else None

    def _run_progress(self, config: RunnableConfig, **call: Any) -> None:
        lock = self._run_lock_to_end(config, **call)
        if lock is not None:
            lock.release()

    async def _arun_progress(self, config: RunnableConfig, **call: Any) -> None:
        lock = self._run_lock_to_end(config, **call)
        if lock is not None:
            await lock.arelease()

    def _run_failed(self, config: RunnableConfig) -> None:
        """A checkpoint call raised: the run fails with it, so its lock goes."""
        self._run_progress(config, failed=True)

    async def _arun_failed(self, config: RunnableConfig) -> None:
        await self._arun_progress(config, failed=True)

    def _postgres_failed(self, exc: TierUnavailableError, what: str) -> None:
        """Postgres down: the hot tier answers alone. A thread that lives only in Postgres
        (expired from Redis) is not visible until Postgres is back: counted here, logged once
        per outage by the circuit breaker (at debug level per call)."""
        self.metrics.incr("postgres_read_errors" if what != "interrupt flush" else "flush_errors")
        logger.debug("Postgres unavailable during %s, answering from Redis alone: %s", what, exc)

    def _hot_failed(self, exc: TierUnavailableError, what: str) -> None:
        """Redis is down: re-raise, or (fallback mode with a durable tier) log and go on."""
        if self.on_redis_error != "fallback" or not self.durable:
            raise exc
        self.metrics.incr("redis_fallbacks")
        logger.warning("Redis unavailable during %s, using Postgres directly: %s", what, exc)

    # ------------------------------------------------------------------ operations (no I/O)

    def _setup_op(self) -> Op[None]:
        if not self.durable:
            return None
        yield from setup_op(self.schema)
        role = yield from check_role_op()
        if role.superuser or role.bypass_rls:
            logger.warning(
                "connected to Postgres as %r, which %s: row-level security does not apply to it. "
                "Run the saver as the application role (see README, 'Row-level security').",
                role.name,
                "is a superuser" if role.superuser else "has BYPASSRLS",
            )
        return None

    def _put_op(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> Op[RunnableConfig]:
        ref = self._ref(config)
        try:
            result = yield from self._hot.put(
                ref, checkpoint, metadata, new_versions, config, self._fence(ref)
            )
        except TierUnavailableError as exc:
            self._hot_failed(exc, "put")
            p = yield from self._hot.prepare_put(ref, checkpoint, metadata, new_versions, config)
            entries: list[tuple[str, Any]] = [(f"b\x00{f}", v) for f, v in p.blobs]
            refs = encode_refs(p.run_id, p.record.blob_fields)
            entries.append((f"c\x00{p.member}", (p.record.pack(), refs)))
            yield from self._write_through(ref, entries)
            return ref.config(checkpoint["id"])
        if self._flusher is not None:
            self._flusher.on_checkpoint(ref.tenant_id, ref.thread_id)
        return result

    def _put_writes_op(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str
    ) -> Op[None]:
        ref = self._ref(config, need_checkpoint_id=True)
        try:
            yield from self._hot.put_writes(ref, writes, task_id, task_path, self._fence(ref))
        except TierUnavailableError as exc:
            self._hot_failed(exc, "put_writes")
            records, _digests = yield from self._hot.prepare_writes(ref, writes, task_id, task_path)
            yield from self._write_through(ref, [(f"w\x00{f}", r.pack()) for f, r in records])
            return None
        if not self.durable:
            return None
        mode = self.policy.for_writes([channel for channel, _ in writes])
        if mode == "sync":
            try:
                if not (yield from self._hot.await_checkpoint(ref, SYNC_FLUSH_PUT_WAIT_SECONDS)):
                    logger.warning(
                        "checkpoint %s of thread %r was not written within %.0f s of its %s write; "
                        "flushing without it (it stays in the outbox)",
                        ref.checkpoint_id, ref.thread_id, SYNC_FLUSH_PUT_WAIT_SECONDS, "/".join(c for c, _ in writes),
                    )
                yield from self._flush_now(ref.tenant_id, ref.thread_id)
            except TierUnavailableError as exc:
                # Postgres down: the agent goes on; the outbox keeps the entries for a retry.
                self._postgres_failed(exc, "interrupt flush")
                if self._flusher is not None:
                    self._flusher.on_writes(ref.tenant_id, ref.thread_id, urgent=True)
        elif self._flusher is not None:
            self._flusher.on_writes(ref.tenant_id, ref.thread_id, urgent=mode == "async")
        return None

    def _write_through(self, ref: ThreadRef, entries: list[tuple[str, Any]]) -> Op[None]:
        """Redis is down: write the same rows the flusher would have written, now."""
        batch = self._flush.build_batch(ref.tenant_id, ref.thread_id, [e for e, _ in entries], [v for _, v in entries])
        yield from pg.upsert_batch_op(self.schema, [batch])
        self.metrics.incr("write_through_rows", len(entries))
        return None

    def _flush_now(self, tenant_id: str, thread_id: str) -> Op[FlushResult]:
        started = time.perf_counter()
        result = yield from self._flush.flush_thread(tenant_id, thread_id, wait=True)
        record_flush(self.metrics, result, time.perf_counter() - started)
        return result

    def _get_tuple_op(self, config: RunnableConfig) -> Op[CheckpointTuple | None]:
        ref = self._ref(config)
        stored: StoredCheckpoint | None = None
        hot_up = True
        try:
            stored = yield from self._hot.get_stored(ref)
        except TierUnavailableError as exc:
            self._hot_failed(exc, "get_tuple")
            hot_up = False
        if stored is not None and (not self.durable or _complete(stored)):
            self.metrics.incr("read_hits_redis")
            hit = self._hot.to_tuple(ref, (yield from self._offload.resolve_stored(ref.tenant_id, stored)))
            return (yield from self._legacy.migrate_one(ref.tenant_id, hit, hot=hot_up))  # legacy
        if not self.durable:
            return None
        try:
            durable = yield from pg.get_checkpoint_op(
                self.schema, ref.tenant_id, ref.thread_id, ref.checkpoint_ns, ref.checkpoint_id
            )
        except TierUnavailableError as exc:
            if not hot_up:
                raise
            self._postgres_failed(exc, "get_tuple")
            durable = None
        if durable is None:
            if stored is None:
                return None
            hit = self._hot.to_tuple(ref, (yield from self._offload.resolve_stored(ref.tenant_id, stored)))
            return (yield from self._legacy.migrate_one(ref.tenant_id, hit, hot=hot_up))  # legacy
        found = _from_durable(durable, self.serde)
        self.metrics.incr("read_hits_postgres")
        if hot_up:
            # Re-warm: the next read of this checkpoint, and the writes that follow, are hot.
            yield from self._hot.import_thread(ref.tenant_id, ref.thread_id, stored_to_export([found]), pending=False)
        hit = self._hot.to_tuple(ref, (yield from self._offload.resolve_stored(ref.tenant_id, found)))
        return (yield from self._legacy.migrate_one(ref.tenant_id, hit, hot=hot_up))  # legacy

    def _list_op(
        self,
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> Op[list[CheckpointTuple]]:
        if limit is not None and limit <= 0:
            return []
        before_id = configurable_of(before).get("checkpoint_id") if before is not None else None
        if config is None:
            ref: ThreadRef | None = None
            tenant = self._tenant("list(None)")
            all_namespaces = True
        else:
            ref = self._ref(config)
            tenant = ref.tenant_id
            all_namespaces = configurable_of(config).get("checkpoint_ns") is None
        found: dict[tuple[str, str, str], tuple[ThreadRef, StoredCheckpoint]] = {}
        partial: dict[tuple[str, str, str], tuple[ThreadRef, StoredCheckpoint]] = {}
        hot_up = True
        try:
            threads = [ref] if ref else [ThreadRef(tenant, t) for t in (yield from self._hot.list_threads(tenant))]
            for thread_ref in threads:
                for s in (yield from self._hot.list_stored(
                    thread_ref,
                    all_namespaces=all_namespaces,
                    before_id=before_id,
                    metadata_filter=filter,
                    limit=limit,
                )):
                    key = (thread_ref.thread_id, s.checkpoint_ns, s.checkpoint_id)
                    if self.durable and not _complete(s):
                        partial[key] = (thread_ref, s)  # evicted in part: Postgres first
                    else:
                        found[key] = (thread_ref, s)
        except TierUnavailableError as exc:
            self._hot_failed(exc, "list")
            hot_up = False
        rows: list[Any] = []
        if self.durable:
            try:
                rows = yield from pg.list_op(
                    self.schema,
                    tenant,
                    None if ref is None else ref.thread_id,
                    None if ref is None or all_namespaces else ref.checkpoint_ns,
                    ref.checkpoint_id if ref else None,
                    before_id,
                    filter,
                    limit,
                    known=list(found),
                )
            except TierUnavailableError as exc:
                if not hot_up:
                    raise
                self._postgres_failed(exc, "list")
            for row in rows:
                key = (row.thread_id, row.checkpoint_ns, row.checkpoint_id)
                if key not in found:
                    tref = ThreadRef(tenant, row.thread_id, tenant_in_config=ref is not None and ref.tenant_in_config)
                    found[key] = (tref, _from_durable(row, self.serde))
        for key, entry in partial.items():
            found.setdefault(key, entry)  # not flushed yet: the hot copy is all there is
        ordered = sorted(found.items(), key=lambda kv: (kv[0][2], kv[0][1], kv[0][0]), reverse=True)
        if limit is not None:
            ordered = ordered[:limit]
        out = []
        for _, (tref, stored) in ordered:
            resolved = yield from self._offload.resolve_stored(tref.tenant_id, stored)
            out.append(self._hot.to_tuple(tref, resolved))
        out = yield from self._legacy.migrate(tenant, out, hot=hot_up)  # legacy
        return out

    def _flush_op(self, config: RunnableConfig | None) -> Op[list[FlushResult]]:
        if not self.durable:
            return []
        if config is not None:
            ref = self._ref(config)
            threads = [(ref.tenant_id, ref.thread_id)]
        else:
            threads = yield from self._flush.dirty_threads()
        results = []
        for tenant_id, thread_id in threads:
            results.append((yield from self._flush_now(tenant_id, thread_id)))
            if self._flusher is not None:
                self._flusher.book.succeeded((tenant_id, thread_id))  # lifts a quarantine
        return results

    def _with_flush_lock(self, tenant: str, thread_id: str, body: Op[Any]) -> Op[Any]:
        """Run `body` holding the thread's flush lock: a concurrent flush cannot re-insert rows
        a delete just removed."""
        if not self.durable:
            return (yield from body)
        token = yield from self._flush.acquire_flush_lock(tenant, thread_id, wait=True)
        try:
            return (yield from body)
        finally:
            if token is not None:
                yield from self._flush.release_flush_lock(tenant, thread_id, token)

    def _delete_thread_op(self, thread_id: str) -> Op[None]:
        tenant = self._tenant("delete_thread")
        thread_id = check_thread(thread_id)

        def body() -> Op[None]:
            before = yield from self._hot.export_thread(tenant, thread_id)
            candidates = digests_in_export(before)
            yield from self._hot.delete_thread(tenant, [thread_id])
            if self.durable:
                result = yield from pg.delete_thread_op(self.schema, tenant, thread_id)
                candidates |= _ref_digests(result.orphaned_blob_refs)
            yield from self._collect_blobs(tenant, [], candidates)
            return None

        yield from self._with_flush_lock(tenant, thread_id, body())
        if self._flusher is not None:
            self._flusher.forget(tenant, thread_id)
        return None

    def _delete_for_runs_op(self, run_ids: Sequence[str]) -> Op[None]:
        tenant = self._tenant("delete_for_runs")
        run_ids = opt.id_list("run_ids", run_ids)
        if not run_ids:
            return None
        threads = yield from self._hot.list_threads(tenant)
        yield from self._hot.delete_members(tenant, {t: run_ids for t in threads}, "runs")
        if self.durable:
            result = yield from pg.delete_for_runs_op(self.schema, tenant, run_ids)
            yield from self._collect_blobs(tenant, threads, _ref_digests(result.orphaned_blob_refs))
        return None

    def _collect_blobs(self, tenant: str, live_threads: Sequence[str], candidates: set[str]) -> Op[int]:
        """Delete candidate blobs no longer referenced: first drop `live_threads` from the
        reference sets of digests they no longer use, then let the offloader check the rest."""
        if not candidates:
            return 0
        for thread_id in live_threads:
            content = yield from self._hot.export_thread(tenant, thread_id)
            gone = candidates - digests_in_export(content)
            if gone:
                yield from self._offload.untrack(tenant, thread_id, gone)

        def in_postgres(digests: list[str]) -> Op[set[str]]:
            return (yield from pg.blob_digests_in_use_op(self.schema, tenant, digests))

        deleted = yield from self._offload.collect(
            tenant, candidates, in_postgres if self.durable else None
        )
        self.metrics.incr("blobs_deleted", deleted)
        return deleted

    def _copy_thread_op(self, source_thread_id: str, target_thread_id: str) -> Op[None]:
        tenant = self._tenant("copy_thread")
        src, dst = check_thread(source_thread_id), check_thread(target_thread_id)
        if self.durable:
            yield from pg.copy_thread_op(self.schema, tenant, src, dst)
        content = yield from self._hot.export_thread(tenant, src)
        yield from self._hot.import_thread(tenant, dst, content, pending=self.durable)
        tracked = self._offload.track_commands(tenant, dst, digests_in_export(content))
        if tracked:
            yield RedisCall(tuple(tracked))
        if self._flusher is not None and content.get("ck"):
            self._flusher.on_writes(tenant, dst, urgent=True)
        return None

    def _prune_op(self, thread_ids: Sequence[str], strategy: str) -> Op[None]:
        opt.choice("strategy", strategy, PRUNE_STRATEGIES)
        thread_ids = opt.id_list("thread_ids", thread_ids)
        tenant = self._tenant("prune")
        threads = [check_thread(t) for t in thread_ids]
        if strategy == "delete":
            for thread_id in threads:
                yield from self._delete_thread_op(thread_id)
            return None
        for thread_id in threads:
            yield from self._with_flush_lock(tenant, thread_id, self._keep_latest_op(tenant, thread_id))
        return None

    def _keep_latest_op(self, tenant: str, thread_id: str) -> Op[None]:
        """Keep the latest checkpoint per namespace plus what DeltaChannels need, in both tiers.
        With a durable tier, the outbox is flushed first so Postgres holds the full history."""
        if self.durable:
            yield from self._flush.flush_thread(tenant, thread_id, wait=False)
        content = yield from self._hot.export_thread(tenant, thread_id)
        where = f"Redis thread {thread_id!r}"
        records = {
            member: unpack_checkpoint(raw, decode_refs(content["cv"].get(member))[1], where)
            for member, raw in content["ck"].items()
        }
        blobs = dict(content["bl"])
        if self.durable:
            rows = yield from pg.list_op(self.schema, tenant, thread_id, None, None, None, None, None)
            for row in rows:
                found = _from_durable(row, self.serde)
                member = K.checkpoint_member(found.checkpoint_ns, found.checkpoint_id)
                records.setdefault(member, found.record)
                for field, typed in found.blobs.items():
                    blobs.setdefault(field, encode_typed(typed))

        def has_value(field: str) -> bool:
            raw = blobs.get(field)
            return raw is not None and not raw.startswith(b"empty\x00")

        keep = keep_latest(records, has_value)
        drop = [m for m in records if m not in keep]
        candidates = digests_in_export(content)
        yield from self._hot.delete_members(tenant, {thread_id: drop}, "members")
        if self.durable:
            kept: dict[tuple[str, str], set[str]] = {}
            for member in keep:
                ns, checkpoint_id = K.split_checkpoint_member(member)
                kept.setdefault((thread_id, ns), set()).add(checkpoint_id)
            result = yield from pg.prune_op(self.schema, tenant, [thread_id], "keep_latest", kept)
            candidates |= _ref_digests(result.orphaned_blob_refs)
        yield from self._collect_blobs(tenant, [thread_id], candidates)
        return None

    def _prune_older_than_op(self, older_than: timedelta, tenant_id: str | None, all_tenants: bool) -> Op[Any]:
        if not self.durable:
            raise ConfigError("prune_older_than applies to the durable tier; this saver has none")
        if all_tenants:
            if tenant_id is not None or self.tenant_id is not None:
                raise ConfigError("prune_older_than(all_tenants=True) takes no tenant and needs an unbound saver")
            tenant = None
        else:
            tenant = resolve_tenant(None if tenant_id is None else {"tenant_id": tenant_id}, self.tenant_id, "prune_older_than")
        result = yield from pg.prune_older_than_op(self.schema, tenant, older_than)
        if tenant is not None:
            yield from self._collect_blobs(tenant, [], _ref_digests(result.orphaned_blob_refs))
        return result

    # ------------------------------------------------------------------ durable-tier API

    def setup(self) -> None:
        """Apply the Postgres migrations (idempotent, safe from many processes at once)."""
        self._run(self._setup_op())

    async def asetup(self) -> None:
        await self._arun(self._setup_op())

    def flush(self, config: RunnableConfig | None = None) -> list[FlushResult]:
        """Carry the outbox to Postgres now: one thread (`config`), or every dirty thread."""
        return self._run(self._flush_op(config))  # type: ignore[no-any-return]

    async def aflush(self, config: RunnableConfig | None = None) -> list[FlushResult]:
        return await self._arun(self._flush_op(config))  # type: ignore[no-any-return]

    def flusher_health(self) -> FlusherHealth | None:
        """The background flusher's health (None when it is off): alive, last success,
        failures in a row, quarantined threads with their last error."""
        return None if self._flusher is None else self._flusher.health()

    def prune_older_than(
        self, older_than: timedelta, tenant_id: str | None = None, *, all_tenants: bool = False
    ) -> Any:
        """Retention for Postgres: drop checkpoints older than `older_than`, never a thread's
        latest one nor a paused run's, and unreferenced values. Acts for one tenant (given here,
        bound or scoped) or, only when asked with `all_tenants=True`, for every tenant."""
        return self._run(self._prune_older_than_op(older_than, tenant_id, all_tenants))

    async def aprune_older_than(
        self, older_than: timedelta, tenant_id: str | None = None, *, all_tenants: bool = False
    ) -> Any:
        return await self._arun(self._prune_older_than_op(older_than, tenant_id, all_tenants))

    # ------------------------------------------------------------------ sync API

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        marker = self._run_start(config)
        if marker is None:
            return self._run(self._get_tuple_op(config))  # type: ignore[no-any-return]
        ref = self._ref(config)
        try:
            self._run_locks.begin(ref, marker)  # type: ignore[union-attr]
        except TierUnavailableError as exc:
            self._hot_failed(exc, "run lock")
        try:
            return self._run(self._get_tuple_op(config))  # type: ignore[no-any-return]
        except BaseException:
            self._run_failed(config)
            raise

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        yield from self._run(self._list_op(config, filter, before, limit))

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        try:
            result = self._run(self._put_op(config, checkpoint, metadata, new_versions))
        except BaseException:
            self._run_failed(config)
            raise
        self._run_progress(config, checkpoint=checkpoint)
        return result  # type: ignore[no-any-return]

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        try:
            self._run(self._put_writes_op(config, writes, task_id, task_path))
        except BaseException:
            self._run_failed(config)
            raise
        self._run_progress(config, writes=writes)

    def delete_thread(self, thread_id: str) -> None:
        self._run(self._delete_thread_op(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._run(self._delete_for_runs_op(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._run(self._copy_thread_op(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self._run(self._prune_op(thread_ids, strategy))

    # ------------------------------------------------------------------ async API

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        marker = self._run_start(config)
        if marker is None:
            return await self._arun(self._get_tuple_op(config))  # type: ignore[no-any-return]
        ref = self._ref(config)
        try:
            await self._run_locks.abegin(ref, marker)  # type: ignore[union-attr]
        except TierUnavailableError as exc:
            self._hot_failed(exc, "run lock")
        try:
            return await self._arun(self._get_tuple_op(config))  # type: ignore[no-any-return]
        except BaseException:
            await self._arun_failed(config)
            raise

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        for item in await self._arun(self._list_op(config, filter, before, limit)):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        try:
            result = await self._arun(self._put_op(config, checkpoint, metadata, new_versions))
        except BaseException:
            await self._arun_failed(config)
            raise
        await self._arun_progress(config, checkpoint=checkpoint)
        return result  # type: ignore[no-any-return]

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        try:
            await self._arun(self._put_writes_op(config, writes, task_id, task_path))
        except BaseException:
            await self._arun_failed(config)
            raise
        await self._arun_progress(config, writes=writes)

    async def adelete_thread(self, thread_id: str) -> None:
        await self._arun(self._delete_thread_op(thread_id))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await self._arun(self._delete_for_runs_op(run_ids))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await self._arun(self._copy_thread_op(source_thread_id, target_thread_id))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await self._arun(self._prune_op(thread_ids, strategy))

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Drain the outbox (per policy), stop the background flusher, and close the clients
        and pools the saver created (twins, or all of them under `from_conn_string`)."""
        try:
            if self._run_locks is not None:
                self._run_locks.release_all()
            if self._flusher is not None:
                self._flusher.stop(drain=self.policy.on_close)
        finally:
            self._conn.close_sync_owned()

    async def aclose(self) -> None:
        try:
            if self._run_locks is not None:
                await self._run_locks.arelease_all()
            if self._flusher is not None:
                await asyncio.to_thread(self._flusher.stop, drain=self.policy.on_close)
        finally:
            await self._conn.aclose_owned()

    # ------------------------------------------------------------------ versions

    def get_next_version(self, current: str | None, channel: None) -> str:
        """Versions sort as strings: zero-padded counter, then a random tiebreak (as upstream)."""
        if current is None:
            current_v = 0
        elif isinstance(current, int):
            current_v = current
        else:
            current_v = int(current.split(".")[0])
        return f"{current_v + 1:032}.{random.random():016}"


def _blob_factory(option: Any) -> BlobStoreFactory | None:
    """"filesystem" (default): per-tenant directories; None: no offload; a factory; a store."""
    if option == "filesystem":
        return filesystem_blobs()
    if option is None:
        return None
    if isinstance(option, BlobStore):
        return lambda tenant: option
    if callable(option):
        return option  # type: ignore[no-any-return]
    raise ConfigError(f"blob_store must be 'filesystem', None, a BlobStore or a factory, got {option!r}")


def _ref_digests(refs: Sequence[str]) -> set[str]:
    return {parse_pointer(ref.encode()).digest for ref in refs}


def _complete(stored: StoredCheckpoint) -> bool:
    """Every channel value the checkpoint references is present (an LRU eviction can drop one
    key of a thread; then the checkpoint must come from Postgres instead)."""
    return not stored.refs_lost and all(field in stored.blobs for field in stored.record.blob_fields)


def _from_durable(row: Any, serde: SerializerProtocol) -> StoredCheckpoint:
    return StoredCheckpoint(row.checkpoint_ns, row.checkpoint_id, row.record, row.run_id or "", row.blobs, row.writes)


class _SaverContext:
    """What `from_conn_string` returns: enter it with `with` or `async with`. It owns (and
    closes) the clients and pools it creates; the saver drains its outbox first."""

    def __init__(
        self, cls: type[TieredSaver], redis_url: str, postgres_url: str | None, options: dict[str, Any]
    ) -> None:
        self.cls = cls
        self.redis_url = redis_url
        self.postgres_url = postgres_url
        self.options = dict(options)
        self.pools = PoolOptions.take(self.options)
        self.saver: TieredSaver | None = None

    def __enter__(self) -> TieredSaver:
        # Sync use: blocking clients; async twins are built if ever needed (and closed with the saver).
        client = redis_from_url(self.redis_url, self.pools, asyncio=False)
        pool = pg_pool(self.postgres_url, self.pools) if self.postgres_url else None
        self.saver = self.cls(client, None, pg_pool=pool, pool_options=self.pools, **self.options)
        self.saver._conn.owned[:0] = [r for r in (client, pool) if r is not None]
        return self.saver

    def __exit__(self, *exc: object) -> None:
        if self.saver is not None:
            self.saver.close()

    async def __aenter__(self) -> TieredSaver:
        # Async use: asyncio clients; the flusher thread builds its blocking twins on first flush.
        client = redis_from_url(self.redis_url, self.pools, asyncio=True)
        pool = await apg_pool(self.postgres_url, self.pools) if self.postgres_url else None
        self.saver = self.cls(None, client, apg_pool=pool, pool_options=self.pools, **self.options)
        self.saver._conn.owned[:0] = [r for r in (client, pool) if r is not None]
        return self.saver

    async def __aexit__(self, *exc: object) -> None:
        if self.saver is not None:
            await self.saver.aclose()
