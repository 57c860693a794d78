"""The cross-tier operations of the saver, written once as sans-I/O ops (see `_io`).

Each public method returns an op: a generator that yields the Redis, Postgres and blob requests
of one saver call and returns its result. `TieredSaver` runs the same op on its sync driver for
`put` and on its async driver for `aput`, so the two never drift apart. Here lives what spans
the tiers: the hot path with its Postgres fallback, the read cascade Redis -> Postgres ->
blob store, flushes, deletion with blob garbage collection, pruning, and the automatic run locks
around the checkpoint calls. Configs are parsed by the caller: ops take `ThreadRef`s.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field, replace
from datetime import timedelta
from typing import Any, TypeVar

from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.types import RESUME

from langgraph_tiered_saver import _options as opt
from langgraph_tiered_saver._core.delta_walks import KeptWalks
from langgraph_tiered_saver._core.fresh_threads import FreshThreads
from langgraph_tiered_saver._core.legacy import LegacyReads, parent_key
from langgraph_tiered_saver._core.pruning import PruneReport, latest_per_namespace, prune_thread_op
from langgraph_tiered_saver._sansio.io import Op, RedisCall
from langgraph_tiered_saver._sansio.polling import poll_op
from langgraph_tiered_saver._sansio.schedule import Clock, Scheduler
from langgraph_tiered_saver.blobs import BlobStore, parse_pointer
from langgraph_tiered_saver.blobs.offloader import Offloader, blob_factory, digests_in_export
from langgraph_tiered_saver.durable import ops as pg
from langgraph_tiered_saver.durable.hot_tier import claim_op
from langgraph_tiered_saver.durable.migrations import setup_op
from langgraph_tiered_saver.durable.retention import PRUNE_STRATEGIES
from langgraph_tiered_saver.durable.roles import check_role_op
from langgraph_tiered_saver.durable.sql import check_schema
from langgraph_tiered_saver.errors import (
    ConfigError,
    DataLostError,
    PostgresError,
    TierUnavailableError,
)
from langgraph_tiered_saver.flushing.background import (
    FLUSH_GROUP,
    BackgroundFlusher,
    record_flush,
    report_forks,
)
from langgraph_tiered_saver.flushing.ops import FirstRead, FlushOps, FlushPolicy, FlushResult
from langgraph_tiered_saver.hot import keys as K
from langgraph_tiered_saver.hot.combine import Held, WriteCombiner
from langgraph_tiered_saver.hot.epoch import Epoch, HotDurability
from langgraph_tiered_saver.hot.ops import Fetched, HotOps, Listed, WriteLock
from langgraph_tiered_saver.hot.stored import (
    StoredCheckpoint,
    encode_refs,
    from_durable,
    stored_to_export,
)
from langgraph_tiered_saver.hot.upgrade import legacy_check_op
from langgraph_tiered_saver.hot.watch import HotWatch
from langgraph_tiered_saver.locking.locks import Fences
from langgraph_tiered_saver.locking.run_locks import RunLocks
from langgraph_tiered_saver.observability.logs import fields
from langgraph_tiered_saver.observability.metrics import Metrics
from langgraph_tiered_saver.records.codec import DecodeOnce, loads_record, next_version
from langgraph_tiered_saver.records.collection import collector_held
from langgraph_tiered_saver.records.decoded import DecodedValues
from langgraph_tiered_saver.records.ids import ThreadRef, check_indexable, check_thread

# flush() of every thread reads the outbox index this many threads at a time (all pages).
FLUSH_ALL_PAGE = 500
logger = logging.getLogger("langgraph_tiered_saver")
T = TypeVar("T")

# How long a synchronous flush (an interrupt) waits for the put of the checkpoint its write
# belongs to, which LangGraph may still have in flight on another thread.
SYNC_FLUSH_PUT_WAIT_SECONDS = 5.0
# Threads whose latest, read from Postgres while Redis was down, this process remembers.
READ_THROUGH_REMEMBERED = 4096

ListKey = tuple[str, str, str]  # thread, namespace, checkpoint id


@dataclass(frozen=True, slots=True)
class ListQuery:
    """What `list` asks for: one thread (`ref`) or every thread of `tenant` (`ref` None)."""

    ref: ThreadRef | None
    tenant: str
    all_namespaces: bool
    filter: dict[str, Any] | None
    before_id: str | None
    limit: int | None


class LandedPuts:
    """Checkpoint puts of this process, per thread namespace (the newest `LIMIT` namespaces):
    the one in flight and the last one that landed in Redis. An interrupt written for a
    checkpoint whose put landed is flushed without first asking Redis whether that put has come
    (hot.await_checkpoint_op, a round trip on the path of `invoke`); one whose put is in flight
    here waits for it in process. Anything else (a namespace forgotten, a put that failed or
    went to Postgres, one from another process) asks Redis, as before."""

    LIMIT = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._landed: OrderedDict[tuple[str, str, str], str] = OrderedDict()
        self._flying: OrderedDict[tuple[str, str, str], str] = OrderedDict()

    @staticmethod
    def _remember(ids: OrderedDict[tuple[str, str, str], str], namespace: tuple[str, str, str], checkpoint_id: str) -> None:
        ids[namespace] = checkpoint_id
        ids.move_to_end(namespace)
        if len(ids) > LandedPuts.LIMIT:
            ids.popitem(last=False)

    def started(self, ref: ThreadRef, checkpoint_id: str) -> None:
        with self._lock:
            self._remember(self._flying, (ref.tenant_id, ref.thread_id, ref.checkpoint_ns), checkpoint_id)

    def ended(self, ref: ThreadRef, checkpoint_id: str, *, landed: bool) -> None:
        namespace = (ref.tenant_id, ref.thread_id, ref.checkpoint_ns)
        with self._lock:
            if self._flying.get(namespace) == checkpoint_id:
                del self._flying[namespace]
            if landed:
                self._remember(self._landed, namespace, checkpoint_id)

    def state(self, ref: ThreadRef) -> str:
        """"landed", "flying" (its put is under way here) or "unknown", for ref's checkpoint."""
        namespace = (ref.tenant_id, ref.thread_id, ref.checkpoint_ns)
        with self._lock:
            if self._landed.get(namespace) == ref.checkpoint_id:
                return "landed"
            return "flying" if self._flying.get(namespace) == ref.checkpoint_id else "unknown"

    def __len__(self) -> int:
        with self._lock:
            return len(self._landed) + len(self._flying)

    def landed_op(self, ref: ThreadRef, timeout: float) -> Op[bool]:
        """Wait, without I/O, while ref's checkpoint put is under way here: True once it landed."""

        def attempt() -> Op[bool | None]:
            state = self.state(ref)
            return None if state == "flying" else state == "landed"
            yield  # a generator: poll_op runs it with `yield from`

        # a put lands within a round trip or two: checked often, so the wait ends close to it
        return bool((yield from poll_op(attempt, timeout=timeout, first=0.0001, longest=0.0004)))


@dataclass(eq=False)
class Core:
    """The saver's operations over its tiers. Holds settings and the stateless op builders,
    never a connection; `TieredSaver` views of one deployment (`for_tenant`) share one core."""

    _: KW_ONLY
    hot: HotOps
    flush: FlushOps
    offload: Offloader
    schema: str
    durable: bool
    on_redis_error: str
    policy: FlushPolicy
    metrics: Metrics
    fences: Fences
    clock: Clock = time.monotonic
    legacy: LegacyReads | None = field(default=None, init=False)  # checkpoint format < 4: sends migrated on read
    run_locks: RunLocks | None = field(default=None, init=False)  # set by the saver with `auto_lock`
    flusher: BackgroundFlusher | None = field(default=None, init=False)  # set by the saver with `background_flush`
    combiner: WriteCombiner | None = field(default=None, init=False)  # a step's writes ride with its put
    # threads this process wrote through to Postgres while Redis was down: their Redis copy,
    # if Redis comes back with it (persistence, failover), is older than Postgres
    written_through: set[tuple[str, str]] = field(default_factory=set, init=False)
    # (tenant, thread, namespace) -> the latest checkpoint id ("" none) Postgres answered
    # while Redis was down, for the fork check of the write-through that continues it
    read_through: dict[tuple[str, str, str], str] = field(default_factory=dict, init=False)
    landed: LandedPuts = field(default_factory=lambda: LandedPuts(), init=False)
    fresh: FreshThreads = field(default_factory=lambda: FreshThreads(), init=False)
    # values read again (DeltaChannel seeds and writes, a checkpoint's values): records/decoded.py
    decoded: DecodedValues = field(default_factory=lambda: DecodedValues(), init=False)
    # DeltaChannel walks made, where the next walk of their thread may stop: delta_walks.py
    delta_walks: KeptWalks = field(default_factory=lambda: KeptWalks(), init=False)
    _stale_reported: str = field(default="", init=False)  # the generation whose first stale thread was logged

    def __post_init__(self) -> None:
        self.scheduler = Scheduler("tiered-saver-background", self.metrics, clock=self.clock)  # every background job

    @classmethod
    def build(
        cls,
        serde: SerializerProtocol,
        *,
        key_prefix: str,
        schema: str,
        ttl_ms: int,
        durable: bool,
        refresh_ttl_on_read: bool,
        audit_json: bool | None,
        on_redis_error: str,
        policy: FlushPolicy,
        metrics: Metrics,
        blob_store: Any,
        offload_threshold: int,
        hot_durability: str = "memory",
        hot_durability_timeout: float = 1.0,
        redis_check_seconds: float = 2.0,
        write_hold_seconds: float = 0.02,
        cluster: bool = False,
        clock: Clock = time.monotonic,
    ) -> Core:
        """The core of a saver with these options (checked here)."""
        opt.flag("refresh_ttl_on_read", refresh_ttl_on_read)
        opt.flag("audit_json", audit_json, allow_none=True)
        opt.choice("on_redis_error", on_redis_error, ("raise", "fallback"))
        opt.positive_int("offload_threshold", offload_threshold)
        opt.key_prefix(key_prefix)
        check_schema(schema)
        offload = Offloader(
            blob_factory(blob_store, schema=schema, durable=durable), prefix=key_prefix, threshold=offload_threshold,
            collect_garbage=not isinstance(blob_store, BlobStore),
        )
        epoch = Epoch(key_prefix, durable=durable, on_lost=lambda: metrics.incr("redis_data_lost"))
        hot = HotOps(
            serde, prefix=key_prefix, ttl_ms=ttl_ms, refresh_on_read=refresh_ttl_on_read,
            track_outbox=durable, offloader=offload, epoch=epoch,
            watch=HotWatch(
                key_prefix, metrics, enabled=durable, cluster=cluster,
                check_seconds=opt.seconds("redis_check_seconds", redis_check_seconds, inclusive=False),
            ),
            durability=HotDurability.of(hot_durability, opt.seconds("hot_durability_timeout", hot_durability_timeout)),
        )
        flush = FlushOps(serde, key_prefix=key_prefix, schema=schema, audit_json=audit_json, ttl_ms=ttl_ms,
                         offloader=offload, takeover_seconds=policy.takeover_seconds,
                         on_forked=lambda tenant, thread, forked: report_forks(metrics, tenant, thread, forked, "flushed"))  # fmt: skip
        core = cls(
            hot=hot, flush=flush, offload=offload, schema=schema, durable=durable, on_redis_error=on_redis_error,
            policy=policy, metrics=metrics, fences=Fences(), clock=clock,
        )
        if opt.seconds("write_hold_seconds", write_hold_seconds) > 0:
            core.combiner = WriteCombiner(write_hold_seconds, metrics, clock)
        core.legacy = LegacyReads(
            hot, offload, serde, schema=schema, durable=durable,
            first_version=lambda: next_version(None), on_hot_error=core._hot_failed,
        )
        return core

    @functools.cached_property
    def loads(self) -> Callable[[Any], Any]:
        """How a stored value decodes: the durable tier's JSON form, or the serializer's bytes."""
        return functools.partial(loads_record, self.hot.serde)

    def attach(self, run: Callable[[Op[Any]], Any], *, background_flush: bool) -> None:
        """The background jobs on the saver's scheduler, given its sync op runner: the flusher
        (durable tier with `background_flush`), the check of the Redis server (hotwatch.py)
        and the sender of held writes (combine.py). The lock keeper is the saver's (locks.py)."""
        if self.durable and background_flush:
            self.flusher = BackgroundFlusher(run, self.flush, self.policy, self.metrics, self.scheduler)
        self.hot.watch.attach(run, self.scheduler)
        if self.combiner is not None:
            self.combiner.attach(lambda held: run(self._send_held_op([held])), self.scheduler)

    def stop_background(self, *, drain: bool) -> None:
        """Stop the scheduler, then send what is held and, with `drain`, flush the outbox on
        the caller's thread (see BackgroundFlusher.stop)."""
        self.scheduler.stop()
        if self.combiner is not None:
            self.combiner.stop()
        if self.flusher is not None:
            self.flusher.stop(drain=drain)

    # ------------------------------------------------------------------ failure policy

    def _interrupt_flush_failed(self, exc: TierUnavailableError | PostgresError) -> None:
        """An interrupt's synchronous flush failed: the run goes on from Redis and the outbox
        keeps the entries for the flusher. Counted here; an outage is logged once by the
        circuit breaker (at debug level per call), a statement's own error here."""
        self.metrics.incr("flush_errors")
        if isinstance(exc, PostgresError):  # this thread's own statement: no outage to log it
            logger.warning("Postgres refused a statement during an interrupt flush (the outbox keeps it): %s", exc)
            return
        logger.debug("Postgres unavailable during an interrupt flush, the outbox keeps it: %s", exc)

    def _hot_failed(self, exc: TierUnavailableError, what: str) -> None:
        """Redis is down: re-raise, or (fallback mode with a durable tier) log and go on."""
        if self.on_redis_error != "fallback" or not self.durable:
            raise exc
        self.metrics.incr("redis_fallbacks")
        logger.warning("Redis unavailable during %s, using Postgres directly: %s", what, exc)

    # ------------------------------------------------------------------ run locks

    def _in_run_op(self, ref: ThreadRef, body: Op[T]) -> Op[T]:
        """Run a checkpoint call inside its run's automatic lock: a failed call ends the run
        and its lock goes (a run-ending write releases it in its own script: `runlock`)."""
        if self.run_locks is None:
            return (yield from body)
        try:
            return (yield from body)
        except GeneratorExit:
            raise
        except BaseException:
            try:
                yield from self.run_locks.end_op(ref)
            except Exception as exc:  # the call's own error is the one to report
                logger.warning("could not release the run lock of %r: %s", ref.thread_id, exc, extra=fields(ref))
            raise

    def _write_lock(self, ref: ThreadRef, *, checkpoint: Checkpoint | None = None, writes: Sequence[str] = ()) -> WriteLock:
        if self.run_locks is None:
            return WriteLock(self.fences.of(ref))
        return self.run_locks.write_lock(ref, checkpoint=checkpoint, writes=writes)

    def _written(self, ref: ThreadRef, lock: WriteLock) -> None:
        if self.run_locks is not None:
            self.run_locks.written(ref, lock)

    def release_run_lock_op(self, ref: ThreadRef) -> Op[None]:
        yield from self._drain_op(ref.tenant_id, ref.thread_id)  # under the run's lock (fence)
        if self.run_locks is not None:
            yield from self.run_locks.end_op(ref)
        return None

    def close_op(self) -> Op[None]:
        if self.durable:
            yield from self.flush.acks.send_op()
        if self.run_locks is not None:
            yield from self.run_locks.release_all_op()
        return None

    # ------------------------------------------------------------------ checkpoint calls

    def setup_op(self, partitions: int | None = None, replace_hot_tier: bool = False) -> Op[None]:
        if not self.durable:
            return None
        yield from legacy_check_op(self.hot.prefix)  # unflushed threads of key schema v1?
        yield from setup_op(self.schema, partitions)
        yield from claim_op(self.schema, self.hot.prefix, replace=replace_hot_tier)
        role = yield from check_role_op()
        if role.superuser or role.bypass_rls:
            logger.warning(
                "connected to Postgres as %r, which %s: row-level security does not apply to it. "
                "Run the saver as the application role (see docs/tenancy.md, 'Row-level security').",
                role.name,
                "is a superuser" if role.superuser else "has BYPASSRLS",
            )
        return None

    def put_op(
        self,
        ref: ThreadRef,
        config: Any,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> Op[Any]:
        return (yield from self._in_run_op(ref, self._put_op(ref, config, checkpoint, metadata, new_versions)))

    def _put_op(
        self, ref: ThreadRef, config: Any, checkpoint: Checkpoint, metadata: CheckpointMetadata, new_versions: ChannelVersions
    ) -> Op[Any]:
        check_indexable(ref, checkpoint["id"], *(channel + str(v) for channel, v in new_versions.items()))
        yield from self._recover_op(ref)
        carried = self.combiner.closed_by(ref, checkpoint["id"]) if self.combiner is not None else []
        lock = self._write_lock(ref, checkpoint=checkpoint)
        p = yield from self.hot.prepare_put_op(ref, checkpoint, metadata, new_versions, config)
        self.landed.started(ref, checkpoint["id"])
        landed = False
        fresh = self.durable and self.fresh.take(ref.tenant_id, ref.thread_id)
        try:
            yield from self.hot.put_op(ref, p, lock, carried, fresh=fresh)
            self._written(ref, lock)
            landed = True
        except TierUnavailableError as exc:
            self._hot_failed(exc, "put")
            entries: list[tuple[str, Any]] = _write_entries([r for held in carried for r in held.records])
            entries += [(K.outbox_entry("blob", f), v) for f, v in p.blobs]
            refs = encode_refs(p.run_id, p.record.blob_fields)
            entries.append((K.outbox_entry("checkpoint", p.member), (p.record.pack(), refs)))
            continues = self._continues(ref, checkpoint["id"], p.record.parent_checkpoint_id)
            yield from self._write_through_op(ref, entries, continues)
            return ref.config(checkpoint["id"])
        finally:
            self.landed.ended(ref, checkpoint["id"], landed=landed)
        if self.flusher is not None:
            self.flusher.on_checkpoint(ref.tenant_id, ref.thread_id)
        return ref.config(checkpoint["id"])

    def put_writes_op(
        self, ref: ThreadRef, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str, in_run: bool = False
    ) -> Op[None]:
        """`in_run`: the call comes from a graph run, whose next put may carry the writes
        (combine.py); a direct call writes at once, so that a refusal reaches its caller."""
        body = self._put_writes_op(ref, writes, task_id, task_path, in_run)
        return (yield from self._in_run_op(ref, body))

    def _put_writes_op(
        self, ref: ThreadRef, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str, in_run: bool
    ) -> Op[None]:
        if ref.checkpoint_id is None:
            raise ConfigError("config['configurable'] has no 'checkpoint_id' for this write")
        check_indexable(ref, ref.checkpoint_id + task_id, *(channel for channel, _ in writes))
        yield from self._recover_op(ref)
        records, digests = yield from self.hot.prepare_writes_op(ref, writes, task_id, task_path)
        # Specials that end or stop a run (an error, an interrupt, ...) are written at once; a
        # resume value is consumed by the step the run goes on with, whose put carries it.
        special = any(channel in WRITES_IDX_MAP and channel != RESUME for channel, _ in writes)
        if in_run and self.combiner is not None and not special and self.combiner.hold(ref, records, digests):
            return None  # the put closing this step carries them (combine.py)
        held = self.combiner.take(ref.tenant_id, ref.thread_id) if self.combiner is not None and special else []
        held.append(Held(ref, list(records), list(digests)))
        mode = self.policy.for_writes([channel for channel, _ in writes]) if self.durable else None
        # A synchronous flush whose checkpoint put landed: its first outbox read (which takes the
        # lease) rides in the write's round trip, after the write, so it sees it. LangGraph often
        # writes an interrupt while its checkpoint's put is still on its way (another thread or
        # task): that put is awaited here, in process, so the read can still ride along.
        landed = mode == "sync" and (yield from self.landed.landed_op(ref, SYNC_FLUSH_PUT_WAIT_SECONDS))
        token, then = self.flush.first_read(ref.tenant_id, ref.thread_id) if landed else (None, None)
        try:
            sent, first = yield from self._send_op(held, notify=False, writes=[c for c, _ in writes], then=then)
        except Exception:
            if token is not None:  # the read may have run and taken the lease
                yield from self._release_lease_op(ref, token)
            raise
        if token is not None and first == ():  # sent, but the write found Redis lost data
            yield from self._release_lease_op(ref, token)
        if not sent or not self.durable:
            return None
        if mode == "sync" and token is not None and first:
            try:
                yield from self._flush_after_write_op(ref, FirstRead(token, *first))
            except (TierUnavailableError, PostgresError) as exc:
                self._interrupt_flush_failed(exc)
                if self.flusher is not None:
                    self.flusher.on_writes(ref.tenant_id, ref.thread_id, urgent=True)
        elif mode == "sync":
            try:
                # a put this process did not see land (another process', or one still on its way
                # after the wait above): Redis says whether it came
                if not landed and not (yield from self.hot.await_checkpoint_op(ref, SYNC_FLUSH_PUT_WAIT_SECONDS)):
                    logger.warning(
                        "checkpoint %s of thread %r was not written within %.0f s of its %s write; "
                        "flushing without it (it stays in the outbox)",
                        ref.checkpoint_id, ref.thread_id, SYNC_FLUSH_PUT_WAIT_SECONDS, "/".join(c for c, _ in writes),
                        extra=fields(ref),
                    )
                yield from self._flush_now_op(ref.tenant_id, ref.thread_id, defer_ack=True)
            except (TierUnavailableError, PostgresError) as exc:
                # Postgres down, or this thread's statement refused: the agent goes on; the outbox
                # keeps the entries for the flusher's retries (which report a thread's own error).
                self._interrupt_flush_failed(exc)
                if self.flusher is not None:
                    self.flusher.on_writes(ref.tenant_id, ref.thread_id, urgent=True)
        elif self.flusher is not None:
            self.flusher.on_writes(ref.tenant_id, ref.thread_id, urgent=mode == "async")
        return None

    def _send_held_op(self, held: Sequence[Held], *, notify: bool = True, writes: Sequence[str] = ()) -> Op[bool]:
        """Write pending writes now (Redis, or Postgres in fallback); False: written through.
        `notify`: tell the flusher (the put_writes path decides that itself); `writes`: the
        channels of the call's own writes (an interrupt or error ends the run: runlock)."""
        sent, _ = yield from self._send_op(held, notify=notify, writes=writes)
        return sent

    def _send_op(
        self, held: Sequence[Held], *, notify: bool = True, writes: Sequence[str] = (), then: RedisCall | None = None
    ) -> Op[tuple[bool, tuple[Any, ...] | None]]:
        """`_send_held_op`, with `then` sent in the write's round trip when it can be: the
        replies of `then` (None: not sent; (): sent, but not to be used: see write_records_op)."""
        if not held:
            return True, None
        ref = held[-1].ref
        records = [r for h in held for r in h.records]
        lock = self._write_lock(ref, writes=writes)
        try:
            replies = yield from self.hot.write_records_op(ref, records, [d for h in held for d in h.digests], lock, then)
            self._written(ref, lock)
        except TierUnavailableError as exc:
            self._hot_failed(exc, "put_writes")
            yield from self._write_through_op(ref, _write_entries(records))
            return False, None
        if notify and self.flusher is not None:
            self.flusher.on_writes(ref.tenant_id, ref.thread_id, urgent=False)
        return True, replies

    def _release_lease_op(self, ref: ThreadRef, token: str) -> Op[None]:
        """Give back a flush lease a write's round trip may have taken (compare-and-delete: a
        lease another flusher holds is left alone); Redis unreachable: it lapses by itself."""
        with contextlib.suppress(TierUnavailableError):
            yield from self.flush.release_flush_lock_op(ref.tenant_id, ref.thread_id, token)

    def _flush_after_write_op(self, ref: ThreadRef, first: FirstRead) -> Op[None]:
        """The synchronous flush of an interrupt whose outbox read rode in its write. Writes held
        for the thread since were sent after that read: then it reads again."""
        late = self.combiner.take(ref.tenant_id, ref.thread_id) if self.combiner is not None else []
        if late:
            yield from self._release_lease_op(ref, first.token)
            for held in late:
                yield from self._send_held_op([held])
            yield from self._flush_recorded_op(ref.tenant_id, ref.thread_id)
            return None
        yield from self._flush_recorded_op(ref.tenant_id, ref.thread_id, first, defer_ack=True)
        return None

    def _drain_op(self, tenant_id: str, thread_id: str | None = None, ns: str | None = None) -> Op[None]:
        """Send the writes held for a thread (namespace), or for all threads (`thread_id`
        None): a read, flush or deletion must find them in Redis."""
        if self.combiner is None:
            return None
        for held in self.combiner.take(tenant_id, thread_id, ns):
            yield from self._send_held_op([held])
        return None

    def _write_through_op(
        self, ref: ThreadRef, entries: list[tuple[str, Any]], continues: dict[str, str] | None = None
    ) -> Op[None]:
        """Redis is down: write the same rows the flusher would have written, now, recorded as
        written through (a hot-tier sibling flushed later is a fork, reported). `continues`: a
        checkpoint that continues the latest this process read from Postgres (see `_continues`)."""
        self.written_through.add((ref.tenant_id, ref.thread_id))
        self.hot.watch.moves_pending = True  # other processes' reads must not trust Redis' copies: hot/watch.py
        batch = self.flush.build_batch(ref.tenant_id, ref.thread_id, [e for e, _ in entries], [v for _, v in entries])
        batch.written_through, batch.continues = True, continues or {}
        yield from self.flush.offload_rows_op(batch)
        counts = yield from pg.upsert_batch_op(self.schema, [batch], hot_tier=self.hot.prefix)
        report_forks(self.metrics, ref.tenant_id, ref.thread_id, [(ns, c) for _, ns, c in counts.forked], "written-through")
        self.metrics.incr("write_through_rows", len(entries))
        return None

    def _read_through(self, ref: ThreadRef, latest: str | None) -> None:
        """Remember the latest checkpoint Postgres gave this process while Redis was down."""
        key = (ref.tenant_id, ref.thread_id, ref.checkpoint_ns)
        self.read_through.pop(key, None)
        self.read_through[key] = latest or ""
        if len(self.read_through) > READ_THROUGH_REMEMBERED:
            del self.read_through[next(iter(self.read_through))]

    def _continues(self, ref: ThreadRef, checkpoint_id: str, parent: str | None) -> dict[str, str]:
        """A write-through that continues the latest this process read from Postgres: Postgres
        holding anything newer when it lands means another writer continued the thread too (a
        fork). A write from elsewhere (time travel to an older checkpoint) claims nothing."""
        key = (ref.tenant_id, ref.thread_id, ref.checkpoint_ns)
        if self.read_through.get(key) != (parent or ""):
            return {}
        self._read_through(ref, checkpoint_id)
        return {checkpoint_id: parent or ""}

    def _recover_op(self, ref: ThreadRef) -> Op[bool]:
        """Redis answers again for a thread written through to Postgres meanwhile: its Redis copy
        (back from AOF or a replica) predates those writes and must not answer as the latest.
        Flush what it still holds (older checkpoints never displace Postgres' newer latest), then
        drop it, so the thread is read from Postgres and re-warmed from there. Returns whether
        Redis may answer reads of the thread: not while it still refuses this (it is down, or
        serves reads but refuses writes: a demoted replica, out of memory)."""
        key = (ref.tenant_id, ref.thread_id)
        if key not in self.written_through:
            return True
        try:
            if self.durable:
                yield from self._flush_recorded_op(*key)
            yield from self.hot.delete_thread_op(ref.tenant_id, [ref.thread_id])
            if self.hot.watch.moves_pending:  # Redis takes writes again: every process checks its copies
                yield from self.hot.watch.check_op()
        except TierUnavailableError:
            return False  # still refused: the next call tries again
        self.written_through.discard(key)
        self.metrics.incr("redis_stale_threads_dropped")
        logger.warning(
            "thread %s/%s was written through to Postgres while Redis was down: its older Redis copy "
            "was flushed and dropped, the thread now reads from Postgres", ref.tenant_id, ref.thread_id,
            extra=fields(ref),
        )
        return True

    def _flush_now_op(self, tenant_id: str, thread_id: str, *, defer_ack: bool = False) -> Op[FlushResult]:
        yield from self._drain_op(tenant_id, thread_id)
        return (yield from self._flush_recorded_op(tenant_id, thread_id, defer_ack=defer_ack))

    def _flush_recorded_op(
        self, tenant_id: str, thread_id: str, first: FirstRead | None = None, *, defer_ack: bool = False
    ) -> Op[FlushResult]:
        """Flush one thread on the caller's path, counted and reported like the flusher's.
        `defer_ack` (an interrupt's flush): its acknowledgement changes nothing the caller sees,
        so the background thread sends it, where there is one (flushing/acks.py)."""
        started = time.perf_counter()
        flusher = self.flusher if defer_ack else None
        result = yield from self.flush.flush_thread_op(
            tenant_id, thread_id, wait=True, first=first, defer_ack=flusher is not None
        )
        if flusher is not None and self.flush.acks:
            flusher.send_acks_soon()
        record_flush(self.metrics, result, time.perf_counter() - started)
        return result

    def get_tuple_op(self, ref: ThreadRef, run_marker: object | None) -> Op[CheckpointTuple | None]:
        """`run_marker`: the runtime object of a root graph run this read starts (auto_lock)."""
        if run_marker is None or self.run_locks is None:
            return (yield from self._get_tuple_op(ref))
        request = self.run_locks.request(ref, run_marker)
        if request is None:  # this run holds the lock already
            return (yield from self._in_run_op(ref, self._get_tuple_op(ref)))
        run_locks = self.run_locks

        def locking_read() -> Op[Fetched]:  # the run's first read takes its lock (runlock)
            return run_locks.begin_op(ref, run_marker, request, lambda r: self.hot.get_stored_op(ref, r))

        return (yield from self._in_run_op(ref, self._get_tuple_op(ref, locking_read)))

    def _get_tuple_op(self, ref: ThreadRef, read: Callable[[], Op[Fetched]] | None = None) -> Op[CheckpointTuple | None]:
        """Redis answers what it holds and can vouch for; anything else is Postgres' to answer
        (a miss, a copy evicted in part, one that may be older than Postgres), and a Postgres
        that cannot answer is an error, never "no such thread"."""
        hot_up = (yield from self._recover_op(ref)) if self.written_through else True
        if self.combiner is not None:
            yield from self._drain_op(ref.tenant_id, ref.thread_id, ref.checkpoint_ns)
        stored: StoredCheckpoint | None = None
        replica = False
        if hot_up:
            try:
                found = yield from (read() if read is not None else self.hot.get_stored_op(ref))
                # a replica (hot/watch.py; the read ran the check if due): its copies may be older
                # than Postgres', and it takes no writes
                replica = self.durable and self.hot.watch.replica
                if found.status == "absent" and not replica:  # Redis holds all of the thread: see fresh_threads.py
                    self.metrics.incr("read_absent_redis")
                    return None
                stored = found.first
                if stored is not None and (found.status == "unverified" or replica) and self.durable:
                    stored = yield from self._verified_op(ref, stored, found.generation, mark=not replica)
            except TierUnavailableError as exc:
                if exc.tier != "redis":
                    raise
                self._hot_failed(exc, "get_tuple")
                hot_up = False
        if stored is not None and stored.complete:
            self.metrics.incr("read_hits_redis")
            return (yield from self._to_tuple_op(ref, stored, hot_up))
        if not self.durable:
            return None if stored is None else (yield from self._partial_op(ref, stored, hot_up))
        if stored is None and hot_up:
            self.metrics.incr("read_misses")
        # Redis named the checkpoint (a latest it holds in part): Postgres is asked for that one,
        # never for its own latest, which may be older (not flushed yet) and would move it back.
        wanted = ref.checkpoint_id if stored is None else stored.checkpoint_id
        try:
            if stored is None and hot_up:  # nothing of it in Redis: is the thread new everywhere?
                durable, new = yield from pg.get_checkpoint_or_new_op(
                    self.schema, ref.tenant_id, ref.thread_id, ref.checkpoint_ns, wanted
                )
                if new:
                    self.fresh.add(ref.tenant_id, ref.thread_id)
            else:
                durable = yield from pg.get_checkpoint_op(
                    self.schema, ref.tenant_id, ref.thread_id, ref.checkpoint_ns, wanted
                )
        except TierUnavailableError:
            self.metrics.incr("postgres_read_errors")
            raise
        if not hot_up and ref.checkpoint_id is None:
            self._read_through(ref, None if durable is None else durable.checkpoint_id)
        if durable is None:
            return None if stored is None else (yield from self._partial_op(ref, stored, hot_up))
        cold = from_durable(durable)
        self.metrics.incr("read_hits_postgres")
        if hot_up and not replica:
            # Re-warm: the next read of this checkpoint, and the writes that follow, are hot. A
            # checkpoint read by id may be an old one: the namespace's latest goes in with it, or
            # Redis would hold the old one alone and take it for the latest.
            warm = [cold]
            if ref.checkpoint_id is not None:
                latest = yield from pg.get_checkpoint_op(self.schema, ref.tenant_id, ref.thread_id, ref.checkpoint_ns, None)
                if latest is not None and latest.checkpoint_id != cold.checkpoint_id:
                    warm.append(from_durable(latest))
            yield from self.hot.import_thread_op(ref.tenant_id, ref.thread_id, stored_to_export(warm), pending=False)
        return (yield from self._to_tuple_op(ref, cold, hot_up))

    def _verified_op(
        self, ref: ThreadRef, stored: StoredCheckpoint, generation: str, *, mark: bool = True
    ) -> Op[StoredCheckpoint | None]:
        """Redis may have come back with an older copy of this thread than Postgres holds
        (hotwatch.py): Postgres' latest decides. A copy as new as it (or newer: not flushed yet)
        is marked verified and answers; an older one is reported, its outbox flushed (older
        rows never displace newer ones), and dropped: None, so Postgres answers the read.
        Without `mark` (Redis is a replica: it takes no writes) nothing is written to Redis:
        the newer copy answers, and an older one is left for the check after its promotion."""
        latest_ref = replace(ref, checkpoint_id=None)
        if ref.checkpoint_id is None:
            hot_latest: StoredCheckpoint | None = stored
        else:
            hot_latest = (yield from self.hot.fetch_op(latest_ref, None)).first
        try:
            row = yield from pg.get_checkpoint_op(self.schema, ref.tenant_id, ref.thread_id, ref.checkpoint_ns, None)
        except TierUnavailableError:
            self.metrics.incr("postgres_read_errors")
            raise
        if row is None or (hot_latest is not None and not _behind(hot_latest, from_durable(row))):
            if mark:
                yield from self.hot.verify_op(ref, generation)
            return stored
        self.metrics.incr("redis_stale_threads")
        if not mark:
            logger.warning(
                "Redis (a replica) holds an older copy of thread %s/%s than Postgres (latest %s, Postgres %s): "
                "Postgres answers", ref.tenant_id, ref.thread_id, hot_latest.checkpoint_id if hot_latest else None,
                row.checkpoint_id, extra=fields(ref),
            )
            return None
        log = logger.error if self._stale_reported != generation else logger.debug
        self._stale_reported = generation
        log(
            "Redis held an older copy of thread %s/%s than Postgres (latest %s, Postgres %s): it came back "
            "from an older snapshot or a lagging replica. Its unflushed entries are flushed and the thread "
            "is read from Postgres.", ref.tenant_id, ref.thread_id,
            hot_latest.checkpoint_id if hot_latest else None, row.checkpoint_id, extra=fields(ref),
        )
        yield from self._flush_recorded_op(ref.tenant_id, ref.thread_id)
        yield from self.hot.delete_thread_op(ref.tenant_id, [ref.thread_id])
        return None

    def _partial_op(self, ref: ThreadRef, stored: StoredCheckpoint, hot_up: bool) -> Op[CheckpointTuple]:
        """Redis holds a checkpoint without some of its channel values and no other tier has it.
        Under an eviction policy that cannot drop a thread not yet flushed (noeviction,
        volatile-*: its keys keep no TTL), the values were never stored: LangGraph's migration of
        older checkpoints renames channels and keeps their versions, and such a value reads as
        absent, as on PostgresSaver. Under any other policy they may have been evicted: an error."""
        if self.hot.epoch.policy_safe and not stored.refs_lost:
            return (yield from self._to_tuple_op(ref, stored, hot_up))
        return self._lost(ref, stored)

    def _lost(self, ref: ThreadRef, stored: StoredCheckpoint) -> CheckpointTuple:
        """Redis holds a checkpoint without all of its channel values (evicted) and no other tier
        has it: an error, never a checkpoint with values missing (which would run on as if empty)."""
        self.metrics.incr("checkpoints_lost")
        missing = [f for f in stored.record.blob_fields if f not in stored.blobs]
        logger.error("checkpoint %r of thread %s/%s lost channel values in Redis (evicted: use a volatile-* "
                     "maxmemory-policy) and Postgres does not have it", stored.checkpoint_id, ref.tenant_id,
                     ref.thread_id, extra=fields(ref))  # fmt: skip
        raise DataLostError(
            f"checkpoint {stored.checkpoint_id!r} of thread {ref.thread_id!r} lost {len(missing) or 'some'} channel "
            "value(s) to Redis eviction before it reached Postgres; it cannot be restored whole"
        )

    def _to_tuple_op(self, ref: ThreadRef, stored: StoredCheckpoint, hot_up: bool) -> Op[CheckpointTuple]:
        """The CheckpointTuple of a stored checkpoint: blob pointers resolved, and an older
        format migrated (`legacy`; a lookup only for checkpoints of format < 4)."""
        stored = yield from self.offload.resolve_stored_op(ref.tenant_id, stored)
        load, tenant, loads = self.decoded.load, ref.tenant_id, self.loads
        found = self.hot.to_tuple(ref, stored, lambda typed: load(tenant, typed, loads))
        if self.legacy is None or parent_key(found) is None:  # the current format: nothing to migrate
            return found
        return (yield from self.legacy.migrate_one_op(ref.tenant_id, found, hot=hot_up))

    def list_op(self, q: ListQuery) -> Op[list[CheckpointTuple]]:
        if q.limit is not None and q.limit <= 0:
            return []
        hot_up = (yield from self._recover_op(q.ref)) if q.ref is not None else True
        yield from self._drain_op(q.tenant, q.ref.thread_id if q.ref else None)
        found: dict[ListKey, tuple[ThreadRef, StoredCheckpoint]] = {}
        partial: dict[ListKey, tuple[ThreadRef, StoredCheckpoint]] = {}
        listed: Listed | None = None  # one thread's answer: may spare the Postgres query
        try:
            if not hot_up:  # Redis' copy of the thread predates its write-through (_recover_op)
                threads = []
            elif q.ref is not None:
                threads = [q.ref]
            else:
                threads = [ThreadRef(q.tenant, t) for t in (yield from self.hot.list_threads_op(q.tenant))]
            for thread_ref in threads:
                listed = yield from self.hot.list_stored_op(
                    thread_ref, all_namespaces=q.all_namespaces, before_id=q.before_id, metadata_filter=q.filter,
                    limit=q.limit,
                )
                for s in listed.entries:
                    key = (thread_ref.thread_id, s.checkpoint_ns, s.checkpoint_id)
                    if self.durable and not s.complete:
                        partial[key] = (thread_ref, s)  # evicted in part: Postgres first
                    else:
                        found[key] = (thread_ref, s)
        except TierUnavailableError as exc:
            self._hot_failed(exc, "list")
            hot_up = False
        # a replica (hot/watch.py) may lack what went through to Postgres, and takes no marks
        trusted = hot_up and not (self.durable and self.hot.watch.replica)
        if self.durable and not (trusted and q.ref is not None and listed is not None and listed.whole):
            known = len(found)
            yield from self._list_durable_op(q, found, hot_up)
            if trusted and listed is not None and listed.oldest and len(found) == known and not partial and _unrestricted(q):
                yield from self._mark_whole_op(q, listed)
        for key, entry in partial.items():
            found.setdefault(key, entry)  # not flushed yet: the hot copy is all there is
        ordered = sorted(found.items(), key=lambda kv: (kv[0][2], kv[0][1], kv[0][0]), reverse=True)
        resolved = []
        for _, (tref, stored) in ordered[: q.limit]:
            resolved.append((tref, (yield from self.offload.resolve_stored_op(tref.tenant_id, stored))))
        values = DecodeOnce(self.loads)  # checkpoints share channel versions
        with collector_held():  # decoding only: no I/O, no await (records/collection.py)
            out = [self.hot.to_tuple(tref, stored, values) for tref, stored in resolved]
        return out if self.legacy is None else (yield from self.legacy.migrate_op(q.tenant, out, hot=hot_up))

    def _mark_whole_op(self, q: ListQuery, listed: Listed) -> Op[None]:
        """Postgres had nothing of the namespace Redis lacked: record it (list_mark.lua), so the
        next list of it is Redis' alone. A failure costs only that saving."""
        ref = q.ref
        if ref is None:
            return None
        try:
            yield from self.hot.mark_whole_op(ref, q.all_namespaces, listed)
        except TierUnavailableError as exc:
            logger.debug("could not mark %s/%s whole in Redis: %s", ref.tenant_id, ref.thread_id, exc)
        return None

    def _list_durable_op(self, q: ListQuery, found: dict[ListKey, tuple[ThreadRef, StoredCheckpoint]], hot_up: bool) -> Op[None]:
        """Add the Postgres rows Redis did not answer with to `found`."""
        ref = q.ref
        try:
            rows = yield from pg.list_op(
                self.schema, q.tenant,
                None if ref is None else ref.thread_id,
                None if ref is None or q.all_namespaces else ref.checkpoint_ns,
                ref.checkpoint_id if ref else None,
                q.before_id, q.filter, q.limit, known=list(found),
            )
        except TierUnavailableError:
            self.metrics.incr("postgres_read_errors")
            raise  # Redis alone may lack older or expired checkpoints: never a partial list
        in_config = ref is not None and ref.tenant_in_config
        for row in rows:
            key = (row.thread_id, row.checkpoint_ns, row.checkpoint_id)
            if key not in found:
                found[key] = (ThreadRef(q.tenant, row.thread_id, tenant_in_config=in_config), from_durable(row))
        return None

    # ------------------------------------------------------------------ durable-tier calls

    def flush_op(self, ref: ThreadRef | None) -> Op[list[FlushResult]]:
        """Carry the outbox to Postgres now: one thread, or (`ref` None) every dirty thread (all
        of them, not only the first page of the outbox index)."""
        if not self.durable:
            return []
        results: list[FlushResult] = []
        if ref is not None:
            return [(yield from self._flush_one_op(ref.tenant_id, ref.thread_id))]
        # Every dirty thread, a page of the outbox index at a time, until a page brings no
        # thread this call has not flushed yet (what is still dirty then was written meanwhile).
        done: set[tuple[str, str]] = set()
        while True:
            page = yield from self.flush.dirty_threads_op(limit=FLUSH_ALL_PAGE)
            todo = [key for key in page if key not in done]
            if not todo:
                break
            done.update(todo)
            for start in range(0, len(todo), FLUSH_GROUP):
                results += yield from self._flush_some_op(todo[start : start + FLUSH_GROUP])
        left = [r for r in results if r.remaining or r.skipped_locked]
        if left or len(page) >= FLUSH_ALL_PAGE:
            logger.warning(
                "flush(): %d thread(s) flushed; %d still have unflushed entries (written during the flush or "
                "held by another flusher)%s", len(results), len(left),
                f", and the outbox index still lists {len(page)}+ threads" if len(page) >= FLUSH_ALL_PAGE else "",
            )
        return results

    def _flush_some_op(self, threads: list[tuple[str, str]]) -> Op[list[FlushResult]]:
        """Flush threads as one group (one transaction, `FlushOps.flush_group_op`); a thread
        the group could not write whole (its lease held by another flusher, its own error, more
        entries than one read took) is then flushed alone, waiting for the lease as `flush()`
        of one thread does. A failure that is everyone's (a tier down) raises."""
        if len(threads) == 1:
            return [(yield from self._flush_one_op(*threads[0]))]
        for tenant_id, thread_id in threads:
            yield from self._drain_op(tenant_id, thread_id)
        started = time.perf_counter()
        outcomes = yield from self.flush.flush_group_op(threads)
        seconds = time.perf_counter() - started
        results: list[FlushResult] = []
        for key, outcome in zip(threads, outcomes, strict=True):
            if isinstance(outcome, Exception) or outcome.skipped_locked or outcome.remaining:
                results.append((yield from self._flush_one_op(*key)))
                continue
            record_flush(self.metrics, outcome, seconds)
            if self.flusher is not None:
                self.flusher.book.succeeded(key)  # lifts a quarantine
            results.append(outcome)
        return results

    def _flush_one_op(self, tenant_id: str, thread_id: str) -> Op[FlushResult]:
        result = yield from self._flush_now_op(tenant_id, thread_id)
        if self.flusher is not None:
            self.flusher.book.succeeded((tenant_id, thread_id))  # lifts a quarantine
        return result

    def prune_older_than_op(self, tenant: str | None, older_than: timedelta) -> Op[Any]:
        """Postgres retention for one tenant, or every tenant (`tenant` None)."""
        if not self.durable:
            raise ConfigError("prune_older_than applies to the durable tier; this saver has none")
        result = yield from pg.prune_older_than_op(self.schema, tenant, older_than)
        if tenant is not None:
            yield from self._collect_blobs_op(tenant, [], _ref_digests(result.orphaned_blob_refs))
        return result

    # ------------------------------------------------------------------ thread-level calls

    def _with_flush_lock_op(self, tenant: str, thread_id: str, body: Op[T] | Callable[[int | None], Op[T]]) -> Op[T]:
        """Run `body` holding the thread's flush lock: a concurrent flush cannot re-insert rows
        a delete just removed. A callable body gets the lock's fencing token (a deletion's
        tombstone: a flusher that read before it, and took the lock back later, is refused)."""
        if not self.durable:
            return (yield from (body(None) if callable(body) else body))
        yield from self.flush.acks.send_op([(tenant, thread_id)])  # a lease this process still holds
        held = yield from self.flush.acquire_flush_lock_op(tenant, thread_id, wait=True)
        try:
            return (yield from (body(held[1] if held else None) if callable(body) else body))
        finally:
            if held is not None and held[0]:  # "": taken without a lock (Redis out of memory)
                yield from self.flush.release_flush_lock_op(tenant, thread_id, held[0])

    def delete_thread_op(self, tenant: str, thread_id: str) -> Op[None]:
        thread_id = check_thread(thread_id)
        yield from self._with_flush_lock_op(tenant, thread_id, lambda fence: self._delete_thread_op(tenant, thread_id, fence))
        if self.flusher is not None:
            self.flusher.forget(tenant, thread_id)
        return None

    def _delete_thread_op(self, tenant: str, thread_id: str, fence: int | None = None) -> Op[None]:
        self.delta_walks.forget_thread(tenant, thread_id)
        yield from self._drain_op(tenant, thread_id)
        before = yield from self.hot.export_thread_op(tenant, thread_id)
        candidates = digests_in_export(before)
        yield from self.hot.delete_thread_op(tenant, [thread_id])
        if self.durable:
            result = yield from pg.delete_thread_op(self.schema, tenant, thread_id, fence)
            candidates |= _ref_digests(result.orphaned_blob_refs)
        # only now: a registered thread may be in Postgres, so it leaves the registry last
        yield from self.hot.unregister_op(tenant, [thread_id])
        yield from self._collect_blobs_op(tenant, [], candidates)
        return None

    def delete_for_runs_op(self, tenant: str, run_ids: Sequence[str]) -> Op[None]:
        run_ids = opt.id_list("run_ids", run_ids)
        if not run_ids:
            return None
        self.delta_walks.forget_tenant(tenant)
        threads = yield from self.hot.list_threads_op(tenant)
        yield from self.hot.delete_members_op(tenant, {t: run_ids for t in threads}, "runs")
        if self.durable:
            result = yield from pg.delete_for_runs_op(self.schema, tenant, run_ids)
            yield from self._collect_blobs_op(tenant, threads, _ref_digests(result.orphaned_blob_refs))
        return None

    def _collect_blobs_op(self, tenant: str, live_threads: Sequence[str], candidates: set[str]) -> Op[int]:
        """Delete candidate blobs no longer referenced: first drop `live_threads` from the
        reference sets of digests they no longer use, then let the offloader check the rest."""
        if not candidates:
            return 0
        for thread_id in live_threads:
            content = yield from self.hot.export_thread_op(tenant, thread_id)
            gone = candidates - digests_in_export(content)
            if gone:
                yield from self.offload.untrack_op(tenant, thread_id, gone)

        def in_postgres(digests: list[str]) -> Op[set[str]]:
            return (yield from pg.blob_digests_in_use_op(self.schema, tenant, digests))

        deleted = yield from self.offload.collect_op(tenant, candidates, in_postgres if self.durable else None)
        self.metrics.incr("blobs_deleted", deleted)
        return deleted

    def copy_thread_op(self, tenant: str, source_thread_id: str, target_thread_id: str) -> Op[None]:
        src, dst = check_thread(source_thread_id), check_thread(target_thread_id)
        self.delta_walks.forget_thread(tenant, dst)
        yield from self._drain_op(tenant, src)
        if self.durable:
            yield from pg.copy_thread_op(self.schema, tenant, src, dst)
        content = yield from self.hot.export_thread_op(tenant, src)
        yield from self.hot.import_thread_op(tenant, dst, content, pending=self.durable)
        tracked = self.offload.track_commands(tenant, dst, digests_in_export(content))
        if tracked:
            yield RedisCall(tuple(tracked))
        if self.flusher is not None and content.get("ck"):
            self.flusher.on_writes(tenant, dst, urgent=True)
        return None

    def prune_op(self, tenant: str, thread_ids: Sequence[str], strategy: str) -> Op[None]:
        opt.choice("strategy", strategy, PRUNE_STRATEGIES)
        threads = [check_thread(t) for t in opt.id_list("thread_ids", thread_ids)]
        for thread_id in threads:
            if strategy == "delete":
                yield from self.delete_thread_op(tenant, thread_id)
            else:
                self.delta_walks.forget_thread(tenant, thread_id)
                yield from self._with_flush_lock_op(tenant, thread_id, self._keep_latest_op(tenant, thread_id))
        return None

    def _keep_latest_op(self, tenant: str, thread_id: str) -> Op[None]:
        """Keep the latest checkpoint per namespace plus what DeltaChannels need, in both tiers
        (see `history.prune_thread_op`)."""
        keep = lambda records, paused: latest_per_namespace(records, 1)  # noqa: E731
        yield from prune_thread_op(self, tenant, thread_id, keep, dry_run=False, report=PruneReport(False))
        return None


def _unrestricted(q: ListQuery) -> bool:
    """A list of one thread that Postgres answered whole (a limit keeps only rows Redis lacks, so
    none returned means none exist): no filter, no `before`, no checkpoint id."""
    ref = q.ref
    return ref is not None and not q.filter and q.before_id is None and ref.checkpoint_id is None


def _behind(hot: StoredCheckpoint, durable: StoredCheckpoint) -> bool:
    """Whether Postgres holds a newer latest checkpoint than Redis, or the same one with writes
    Redis lacks (an interrupt flushed after the copy Redis came back with)."""
    if durable.checkpoint_id != hot.checkpoint_id:
        return durable.checkpoint_id > hot.checkpoint_id
    return bool({(w.task_id, w.idx) for w in durable.writes} - {(w.task_id, w.idx) for w in hot.writes})


def _write_entries(records: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Outbox entries (with their packed values) of write records, for a write-through."""
    return [(K.outbox_entry("write", field), record.pack()) for field, record in records]


def _ref_digests(refs: Sequence[str]) -> set[str]:
    return {parse_pointer(ref.encode()).digest for ref in refs}
