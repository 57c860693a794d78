"""Write-behind flush: the policy (when) and the flush operation (what), both free of I/O.

The outbox is kept in Redis, written by the same script as the data: per thread, a `pend` set
names every checkpoint, channel value and write not yet in Postgres, and a deployment-wide
`dirty` index names the threads that have such entries, scored by their last write. A flusher
(the saver's background thread, or the standalone worker) reads a thread's entries, upserts
them in one Postgres transaction, and only then removes them from the outbox. A flusher that
dies mid-way leaves the entries in place, and the next one writes them again: delivery is
at-least-once, and idempotent upserts make the effect exactly once.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import orjson
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.types import ERROR, INTERRUPT

from langgraph_tiered_saver import _options as opt
from langgraph_tiered_saver._sansio.io import Op, RedisCall
from langgraph_tiered_saver._sansio.polling import poll_op
from langgraph_tiered_saver.durable.ops import (
    FlushBatch,
    blob_fields_present_op,
    upsert_batch_op,
    upsert_group_op,
)
from langgraph_tiered_saver.durable.records import BlobRow, CheckpointRow, WriteRow, bare_channels
from langgraph_tiered_saver.errors import (
    FlushFencedError,
    PostgresConfigError,
    TierUnavailableError,
)
from langgraph_tiered_saver.flushing.acks import DeferredAcks
from langgraph_tiered_saver.hot import keys as K
from langgraph_tiered_saver.hot import scripts
from langgraph_tiered_saver.hot.stored import decode_refs
from langgraph_tiered_saver.observability.logs import fields
from langgraph_tiered_saver.records import codec
from langgraph_tiered_saver.records.audit import (
    audit_from_msgpack,
    exact_json,
    json_exact,
    jsonb_value,
    to_audit_json,
)
from langgraph_tiered_saver.records.codec import TypedValue, as_str, scored

if TYPE_CHECKING:
    from langgraph_tiered_saver.blobs.offloader import Offloader

Mode = Literal["sync", "async", "off"]
MODES = ("sync", "async", "off")
OUTBOX_BATCH = 2000
# A checkpoint some of whose channel values Redis lost: (entry, namespace, id, missing fields).
Unsure = tuple[str, str, str, list[str]]
FLUSH_LOCK_MS = 60_000  # a flush lease's default length (see FlushLease)
# How long a synchronous flush (an interrupt, flush(), a deletion) waits for another flusher's
# lease before it takes the thread over (see FlushOps.takeover_seconds).
TAKEOVER_SECONDS = 5.0
FENCED_RETRIES = 3  # a synchronous flush refused by the fence starts again, with a newer token

logger = logging.getLogger("langgraph_tiered_saver.flush")


@dataclass(frozen=True)
class FlushPolicy:
    """When a thread's hot writes are carried to Postgres. Every trigger is configurable.

    - `on_interrupt`: a run paused for a person (minutes or days). "sync" (default) makes the
      paused checkpoint durable before the graph returns; the extra round trip costs nothing
      there.
    - `on_error`: a task wrote an error. "async" by default.
    - `quiet_seconds`: the end of a run: the thread has had no write for this long.
    - `gather_seconds`: a due flush takes along the threads due within this long (one
      transaction for all: back-to-back runs share a commit instead of paying one each). A
      thread is flushed up to this much early, never late.
    - `every_n_checkpoints`: long runs are flushed in the middle too, every N checkpoints.
    - `on_close`: `close()` / leaving the context manager drains this process' outbox.
    - `max_attempts`, `retry_backoff`, `max_backoff`: a thread whose flush fails is retried
      after `retry_backoff` seconds, doubling up to `max_backoff`; after `max_attempts`
      failures in a row it is quarantined (see `flusher.RetryBook`), retried only every
      `quarantine_retry_seconds`, and never dropped from the outbox.
    - `takeover_seconds`: how long a synchronous flush (interrupt, `flush()`, a deletion) waits
      for another flusher's lease before taking the thread over with a newer fencing token;
      Postgres then refuses the old holder's commit (see `FlushOps.takeover_seconds`).
    """

    on_interrupt: Mode = "sync"
    on_error: Mode = "async"
    quiet_seconds: float = 1.0
    gather_seconds: float = 0.25
    every_n_checkpoints: int = 50
    on_close: bool = True
    max_attempts: int = 5
    retry_backoff: float = 0.5
    max_backoff: float = 30.0
    quarantine_retry_seconds: float = 300.0
    takeover_seconds: float = TAKEOVER_SECONDS

    def __post_init__(self) -> None:
        for name in ("on_interrupt", "on_error"):
            opt.choice(f"FlushPolicy.{name}", getattr(self, name), MODES)
        for name in ("quiet_seconds", "gather_seconds", "retry_backoff", "max_backoff", "quarantine_retry_seconds", "takeover_seconds"):
            opt.seconds(f"FlushPolicy.{name}", getattr(self, name))
        opt.whole("FlushPolicy.every_n_checkpoints", self.every_n_checkpoints)
        opt.positive_int("FlushPolicy.max_attempts", self.max_attempts)
        opt.flag("FlushPolicy.on_close", self.on_close)

    def for_writes(self, channels: Sequence[str]) -> Mode:
        """What a batch of pending writes asks for: the most urgent of its triggers."""
        modes: list[Mode] = []
        if INTERRUPT in channels:
            modes.append(self.on_interrupt)
        if ERROR in channels:
            modes.append(self.on_error)
        if "sync" in modes:
            return "sync"
        return "async" if "async" in modes else "off"

    def for_checkpoint_count(self, count: int) -> Mode:
        n = self.every_n_checkpoints
        return "async" if n > 0 and count > 0 and count % n == 0 else "off"


@dataclass
class Offloaded:
    """What a flush sent to the blob store: outbox entry -> the encoded value Redis may keep
    instead (the pointer), and the digests (Redis tracks which threads reference them)."""

    pointers: dict[str, bytes]
    digests: list[str]

    def add(self, entry: str, encoded: bytes, stored: TypedValue) -> None:
        self.pointers[entry] = encoded
        digest = codec.pointer_digest(stored)
        if digest:
            self.digests.append(digest)


def _blob_ref(typed: tuple[str, bytes]) -> str | None:
    """Offloaded values are stored in Postgres as their pointer (`blob_ref`), data NULL."""
    return typed[1].decode() if typed[0].startswith(codec.BLOB_TYPE) else None


@dataclass(frozen=True)
class FlushLease:
    """How a flusher holds a thread while it flushes it: the thread's flush lock, a lease.

    The lease is taken by the locked outbox read and renewed by every further batch read, so a
    long flush keeps it while it makes progress; a flusher that dies mid-flush (SIGKILL, a lost
    host) holds it at most `ms` more, then the next flusher takes the thread over and writes
    the unacknowledged entries again (idempotent upserts). `holder` names the flusher in the
    lock's value (`holder/random`), so `GET` on a lock tells an operator who holds it.
    """

    holder: str = ""
    ms: int = FLUSH_LOCK_MS

    def __post_init__(self) -> None:
        opt.positive_int("FlushLease.ms", self.ms)

    def new_token(self) -> str:
        random = secrets.token_hex(16)
        return f"{self.holder}/{random}" if self.holder else random


DEFAULT_LEASE = FlushLease()


@dataclass(frozen=True)
class FirstRead:
    """A flush's first outbox read made by a caller (`FlushOps.first_read`): the lease token it
    used, the thread's dirty score and the outbox script's reply (empty: another holder)."""

    token: str
    observed: Any
    reply: Any
    limit: int | None = None  # the most entries the read asked for (None: OUTBOX_BATCH); fewer: all of them


@dataclass
class FlushResult:
    tenant_id: str
    thread_id: str
    checkpoints: int = 0
    blobs: int = 0
    writes: int = 0
    skipped_locked: bool = False
    remaining: int = 0
    # outbox entries whose data Redis no longer held (evicted): reported, never written half
    lost: int = 0
    # Postgres refused the commit: the lease was taken over or the thread deleted meanwhile
    fenced: bool = False
    # seconds from the thread's last hot write (as the outbox index saw it) to its commit in
    # Postgres: how far the durable tier was behind for this thread
    lag_seconds: float | None = None
    # (namespace, checkpoint id) of flushed checkpoints that fork the thread: Postgres already
    # held a newer checkpoint this hot tier never had (a write-through during a partition)
    forked: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class OutboxStatus:
    depth: int  # threads with unflushed entries
    oldest_seconds: float  # how long the longest-waiting of them has been quiet (0 if none)


class FlushOps:
    """Builds the flush of one thread: read outbox, upsert to Postgres, acknowledge."""

    def __init__(
        self,
        serde: SerializerProtocol,
        *,
        key_prefix: str,
        schema: str,
        audit_json: bool | None,
        ttl_ms: int,
        offloader: Offloader | None = None,
        takeover_seconds: float = TAKEOVER_SECONDS,
        on_forked: Callable[[str, str, list[tuple[str, str]]], None] | None = None,
    ) -> None:
        self.serde = serde
        # Told of the forks a flush found as soon as its transaction commits (tenant, thread,
        # [(namespace, checkpoint id)]): a later step of that flush may fail (its acknowledgement,
        # on a Redis that refuses writes), and its retry finds the rows stored, the fork no
        # longer visible to it.
        self.on_forked = on_forked
        self.offloader = offloader  # sends oversized values to the blob store before their rows
        # A synchronous flush waits at most this long for another flusher's lease, then takes
        # the thread over with a newer fencing token: a stalled holder (SIGSTOP, a GC pause, a
        # frozen VM) costs an interrupt this, not the holder's whole lease. Safe because Postgres
        # refuses the older token's commit (durable.sql.MIGRATION_5_FLUSH_FENCE).
        self.takeover_seconds = opt.seconds("takeover_seconds", takeover_seconds)
        self.ttl_ms = ttl_ms  # given back to a thread's keys once its outbox is empty
        self.prefix = key_prefix
        self.schema = schema
        # A readable JSON copy of encrypted values would defeat the encryption: off by default.
        self.audit_json = (not isinstance(serde, EncryptedSerializer)) if audit_json is None else audit_json
        self.acks = DeferredAcks()  # of synchronous flushes, sent by the background thread (acks.py)

    def _audit(self, typed: tuple[str, bytes], memo: dict[tuple[int, bytes], Any] | None = None) -> Any:
        if not self.audit_json or typed[0] == "empty" or typed[0].startswith(codec.BLOB_TYPE) or self._offloads(typed):
            return None
        if typed[0] == "msgpack":
            return audit_from_msgpack(typed[1], memo)
        try:
            return to_audit_json(self.serde.loads_typed(typed))
        except Exception:
            return None

    def _value_json(
        self, typed: tuple[str, bytes], memo: dict[tuple[int, bytes], Any]
    ) -> tuple[Any, bytes | None]:
        """A value's audit copy, and when it is the value exactly, the key order of its dicts
        (the row then keeps no serializer bytes: audit.exact_json); else None."""
        if self.audit_json and not self._offloads(typed):
            if typed[0] == codec.JSON_RECORD:  # a value read back from such a row
                text, order = codec.json_record_parts(typed[1])
                return orjson.Fragment(text), order
            if typed[0] == "msgpack":
                exact = exact_json(typed[1])
                if exact is not None:
                    return orjson.Fragment(exact[0]), exact[1]
        return self._audit(typed, memo), None

    def build_batch(
        self, tenant_id: str, thread_id: str, entries: Sequence[Any], values: Sequence[Any]
    ) -> FlushBatch:
        """Decode outbox entries into rows (entries whose data is gone are skipped)."""
        return self._decode(tenant_id, thread_id, entries, values)[0]

    def _decode(
        self, tenant_id: str, thread_id: str, entries: Sequence[Any], values: Sequence[Any]
    ) -> tuple[FlushBatch, list[Unsure]]:
        """The rows of outbox entries, and the checkpoints some of whose values Redis lost."""
        where = f"outbox of thread {thread_id!r}"
        batch = FlushBatch(tenant_id, thread_id, [], [], [])
        unsure: list[Unsure] = []
        memo: dict[tuple[int, bytes], Any] = {}  # messages read once per batch (audit_from_msgpack)
        for raw_entry, value in zip(entries, values, strict=True):
            entry = as_str(raw_entry)
            if not value:
                logger.error(
                    "outbox entry %r of thread %s/%s lost: Redis no longer holds all of its data "
                    "(evicted before its flush: use a volatile-* maxmemory-policy, see README); "
                    "not written to Postgres",
                    entry, tenant_id, thread_id, extra={"tenant_id": tenant_id, "thread_id": thread_id},
                )
                continue
            kind, rest = K.split_outbox_entry(entry)
            if kind == K.OUTBOX_KINDS["checkpoint"]:
                ns, checkpoint_id = K.split_checkpoint_member(rest)
                run_id, fields = decode_refs(value[1])
                del run_id
                missing = [as_str(f) for f in value[2]] if len(value) > 2 else []
                if missing:
                    unsure.append((entry, ns, checkpoint_id, missing))
                record = codec.unpack_checkpoint(value[0], fields, where)
                checkpoint = dict(codec.loads_record(self.serde, record.checkpoint))
                exact = "channel_values" not in checkpoint and json_exact(checkpoint)
                checkpoint.pop("channel_values", None)
                metadata = codec.loads_record(self.serde, record.metadata)
                batch.checkpoints.append(
                    CheckpointRow(ns, checkpoint_id, record, jsonb_value(checkpoint), jsonb_value(metadata),
                                  exact, json_exact(metadata), bare_channels(value[3]) if len(value) > 3 and not missing else None)
                )
            elif kind == K.OUTBOX_KINDS["blob"]:
                ns, channel, version = K.split_blob_field(rest)
                typed = codec.decode_typed(value, where)
                audit, keys = self._value_json(typed, memo)
                batch.blobs.append(BlobRow(ns, channel, version, typed, audit, _blob_ref(typed), keys))
            else:
                ns, checkpoint_id, _task, _idx = K.split_write_field(rest)
                write = codec.unpack_write(value, where)
                audit, keys = self._value_json(write.value, memo)
                batch.writes.append(WriteRow(ns, checkpoint_id, write, audit, _blob_ref(write.value), keys))
        return batch, unsure

    def _offloads(self, typed: TypedValue) -> bool:
        return self.offloader is not None and self.offloader.stores is not None and len(typed[1]) > self.offloader.threshold

    def offload_rows_op(self, batch: FlushBatch) -> Op[Offloaded]:
        """Send the batch's oversized values to the blob store; their rows keep the pointer.
        Content-addressed and idempotent: a retried flush uploads nothing new. A store that is
        down leaves the value in its row (offload_op). Returns what Redis may now hold as a
        pointer: outbox entry -> the encoded pointer value, and the digests."""
        out = Offloaded({}, [])
        if self.offloader is None:
            return out
        for i, row in enumerate(batch.blobs):
            blob = BlobRow(*row)
            if blob.blob_ref is None and self._offloads(blob.value):
                stored = yield from self.offloader.offload_op(batch.tenant_id, blob.value)
                if stored is not blob.value:
                    batch.blobs[i] = blob._replace(value=stored, value_json=None, blob_ref=_blob_ref(stored))
                    out.add(K.outbox_entry("blob", K.blob_field(blob.ns, blob.channel, blob.version)), codec.encode_typed(stored), stored)
        for i, row in enumerate(batch.writes):
            write_row = WriteRow(*row)
            if write_row.blob_ref is None and self._offloads(write_row.write.value):
                stored = yield from self.offloader.offload_op(batch.tenant_id, write_row.write.value)
                if stored is not write_row.write.value:
                    record = replace(write_row.write, value=stored)
                    batch.writes[i] = write_row._replace(write=record, value_json=None, blob_ref=_blob_ref(stored))
                    w = record
                    field = K.write_field(write_row.ns, write_row.checkpoint_id, w.task_id, w.idx)
                    out.add(K.outbox_entry("write", field), record.pack(), stored)
        return out

    def _settle_op(self, batch: FlushBatch, unsure: list[Unsure]) -> Op[int]:
        """Drop from `batch` the checkpoints whose missing values Postgres does not hold either
        (their rows would not read back): reported at ERROR, counted, never written half."""
        if not unsure:
            return 0
        in_batch = {K.blob_field(b[0], b[1], b[2]) for b in batch.blobs}
        wanted = sorted({f for *_, missing in unsure for f in missing} - in_batch)
        present = yield from blob_fields_present_op(self.schema, batch.tenant_id, batch.thread_id, wanted)
        lost = {(ns, cid) for _, ns, cid, missing in unsure if not set(missing) <= present | in_batch}
        if lost:
            for ns, cid in sorted(lost):
                logger.error(
                    "checkpoint %r (ns %r) of thread %s/%s lost: Redis no longer holds all of its "
                    "channel values and Postgres does not have them (evicted before the flush: use a "
                    "volatile-* maxmemory-policy, see README); not written to Postgres",
                    cid, ns, batch.tenant_id, batch.thread_id, extra=fields(batch),
                )
            batch.checkpoints = [c for c in batch.checkpoints if (c[0], c[1]) not in lost]
        return len(lost)

    def acquire_flush_lock_op(self, tenant_id: str, thread_id: str, *, wait: bool) -> Op[tuple[str, int] | None]:
        """Take the thread's flush lock (so two flushers, or a flush and a delete, never
        interleave on one thread). Returns the token and the fencing token (the Redis clock in
        microseconds), or None when busy and not waiting. Waiting takes the lock over after
        `takeover_seconds`: the holder's later commit is refused by the fence."""
        lock = K.lock_key(self.prefix, tenant_id, thread_id, "flush")
        token = secrets.token_hex(16)

        def attempt(force: bool = False) -> Op[tuple[str, int] | None]:
            nx = () if force else ("NX",)
            try:
                acquired, clock = yield RedisCall((("SET", lock, token, *nx, "PX", FLUSH_LOCK_MS), ("TIME",)))
            except TierUnavailableError as exc:
                if not _out_of_memory(exc):
                    raise
                # Redis is full and refuses the lock's SET (not GET or DEL): go on without the lock
                # (as the outbox read does), the fence orders this against any flusher
                holder, clock = yield RedisCall((("GET", lock), ("TIME",)))
                if holder is not None and not force:
                    return None
                if holder is not None:
                    yield RedisCall((("DEL", lock),))
                return ("", _micros(clock[0], clock[1]))
            return (token, _micros(clock[0], clock[1])) if acquired else None

        got = yield from poll_op(attempt, timeout=self.takeover_seconds if wait else 0)
        if got is None and wait:
            logger.warning("flush lock of thread %s/%s held for over %.1f s: taken over (the holder's flush "
                           "will be refused by Postgres' fence)", tenant_id, thread_id, self.takeover_seconds)
            got = yield from attempt(force=True)
        return got

    def release_flush_lock_op(self, tenant_id: str, thread_id: str, token: str) -> Op[None]:
        lock = K.lock_key(self.prefix, tenant_id, thread_id, "flush")
        yield RedisCall((scripts.LOCK_RELEASE.call({"lock": lock}, {"token": token}),), scripts=(scripts.LOCK_RELEASE,))
        return None

    def first_read(self, tenant_id: str, thread_id: str, lease: FlushLease = DEFAULT_LEASE) -> tuple[str, RedisCall]:
        """A flush's first outbox read (taking the lease) and its token, for a caller that sends
        it in the round trip of its own write (an interrupt: `flush_thread_op(first=...)`)."""
        token = lease.new_token()
        keys = self._keys(tenant_id, thread_id)
        dirty = K.dirty_key(self.prefix, K.shard_of(tenant_id, thread_id))
        score, read = self._read_call(keys, token, dirty, K.dirty_member(tenant_id, thread_id), lease.ms).commands
        # EVAL, not EVALSHA: the script cache may have the write script and not this one (a
        # restarted Redis), and a NOSCRIPT retry of the pipeline would run the write twice
        return token, RedisCall((score, scripts.OUTBOX_READ.inline(read)))

    def _keys(self, tenant_id: str, thread_id: str) -> dict[str, str]:
        lock = K.lock_key(self.prefix, tenant_id, thread_id, "flush")
        return scripts.thread_keys(self.prefix, tenant_id, thread_id, flush_lock=lock)

    def _forked(self, tenant_id: str, thread_id: str, forked: list[tuple[str, str]]) -> None:
        if forked and self.on_forked is not None:
            self.on_forked(tenant_id, thread_id, forked)

    def flush_thread_op(
        self, tenant_id: str, thread_id: str, *, wait: bool = False, lease: FlushLease = DEFAULT_LEASE,
        first: FirstRead | None = None, defer_ack: bool = False,
    ) -> Op[FlushResult]:
        """Flush one thread completely (in batches), under the thread's flush lease (`lease`).
        With `wait`, wait for a concurrent flusher to finish instead of skipping (a sync flush
        must see its own writes in Postgres), at most `takeover_seconds`, then take over.

        Two Redis round trips in the common case: take the lock and read the outbox (with the
        dirty score beside it), then acknowledge, release and clear the dirty mark in one script.

        Postgres refuses the commit of a flush whose lease was taken over since its read, or
        whose thread was deleted since (the fence): nothing is written, the entries stay in the
        outbox, and the newer holder flushes them. A background flush reports that as skipped;
        a synchronous one starts again with a newer token.

        `first`: the replies of `first_read`'s call, already made (its token, ZSCORE and outbox
        replies); a lease it did not get is waited for as usual. `defer_ack`: the last
        acknowledgement is left in `acks` for the background thread to send (acks.py)."""
        for attempt in range(FENCED_RETRIES if wait else 1):
            try:
                return (yield from self._flush_thread_op(
                    tenant_id, thread_id, wait=wait, lease=lease, first=first, defer_ack=defer_ack
                ))
            except FlushFencedError as exc:
                logger.warning("flush of thread %s/%s refused by Postgres (lease lost): %s", tenant_id, thread_id,
                               exc, extra={"tenant_id": tenant_id, "thread_id": thread_id})  # fmt: skip
                if wait and attempt == FENCED_RETRIES - 1:
                    raise
                first = None  # a retry reads again, with a newer token
        return FlushResult(tenant_id, thread_id, skipped_locked=True, fenced=True)

    def flush_group_op(
        self, threads: Sequence[tuple[str, str]], lease: FlushLease = DEFAULT_LEASE
    ) -> Op[list[FlushResult | Exception]]:
        """Flush several threads, of any tenants, as one: their leases taken and outboxes read in
        one Redis round trip, their rows written in one Postgres transaction
        (`upsert_group_op`: fenced per thread, forks reported per thread, one commit), their
        entries acknowledged in one round trip. The background flusher's way through a
        backlog: a commit, and its round trips, per group instead of per thread.

        Returns each thread's result, or the exception that is its own (corrupt bytes, its
        transaction refused), in the order given. A failed group transaction is not blamed on
        every thread: each is then flushed alone (`flush_thread_op`, with the read already
        made), so a failing or fenced thread is found and handled as it would be alone and the
        others are written. A failure that is everyone's (`is_outage`: a tier down) raises.
        Each thread's read asks for `OUTBOX_BATCH / len(threads)` entries at most, so a group
        holds no more entries than one thread's flush does; a thread with more, or with nothing
        to write, is flushed alone (its further reads as usual). Pipelines span Redis Cluster
        slots (one per thread), never a MULTI."""
        yield from self.acks.send_op(threads)  # leases this process still holds
        tokens = [lease.new_token() for _ in threads]
        limit = max(1, OUTBOX_BATCH // max(1, len(threads)))
        commands: list[tuple[Any, ...]] = []
        plans: list[tuple[dict[str, str], str]] = []  # each thread's ack keys and dirty member, for its ack
        for (tenant_id, thread_id), token in zip(threads, tokens, strict=True):
            dirty = K.dirty_key(self.prefix, K.shard_of(tenant_id, thread_id))
            member = K.dirty_member(tenant_id, thread_id)
            keys = self._keys(tenant_id, thread_id)
            commands += self._read_call(keys, token, dirty, member, lease.ms, limit=limit).commands
            plans.append(({**keys, "dirty": dirty}, member))
        replies = yield RedisCall(tuple(commands), scripts=(scripts.OUTBOX_READ,))
        outcomes: list[FlushResult | Exception | None] = [None] * len(threads)
        held: dict[int, FirstRead] = {}  # leases this op still has to release or hand on
        for i, key in enumerate(threads):
            observed, reply = replies[2 * i], replies[2 * i + 1]
            if reply:
                held[i] = FirstRead(tokens[i], observed, reply, limit)
                if len(reply) > 6 and not int(reply[6]):
                    logger.warning("flush of thread %s/%s runs without a lease: Redis refused the lease write (out of "
                                   "memory?); Postgres' fence still orders flushers", *key)  # fmt: skip
            else:
                outcomes[i] = FlushResult(*key, skipped_locked=True)
        alone = [i for i, read in held.items() if not read.reply[0] or len(read.reply[0]) >= limit]
        try:
            group: dict[int, tuple[FlushBatch, Offloaded, int]] = {}
            for i, read in held.items():
                if i in alone:
                    continue
                try:
                    group[i] = yield from self._rows_op(*threads[i], read.reply[0], read.reply[2])
                except Exception as exc:  # this thread's own (corrupt bytes): its lease goes below
                    outcomes[i] = exc
            written = yield from self._group_transaction_op(threads, held, group)
            for key, forked in (written or {}).items():
                self._forked(*key, forked)
            if written is None:  # refused: each thread alone finds the one to blame
                alone += list(group)
            else:
                yield from self._group_ack_op(threads, plans, held, group, written, outcomes)
            for i in sorted(alone):
                first = held.pop(i)  # the lease goes with the read: flush_thread_op releases it
                try:
                    outcomes[i] = yield from self.flush_thread_op(*threads[i], lease=lease, first=first)
                except Exception as exc:
                    outcomes[i] = exc
        finally:
            if held:
                yield from self._release_all_op(threads, held)
        done = [outcome for outcome in outcomes if outcome is not None]
        assert len(done) == len(threads), "every thread of a group flush has an outcome"
        return done

    def _group_transaction_op(
        self, threads: Sequence[tuple[str, str]], held: dict[int, FirstRead],
        group: dict[int, tuple[FlushBatch, Offloaded, int]],
    ) -> Op[dict[tuple[str, str], list[tuple[str, str]]] | None]:
        """The group's rows in one transaction; per thread, the forks it found. None when the
        transaction failed for a reason that may be one thread's (logged): nothing committed."""
        batches = [batch for batch, _, _ in group.values() if batch.checkpoints or batch.blobs or batch.writes]
        fences = {threads[i]: fence for i in group if (fence := _fence_of(held[i].reply)) is not None}
        try:
            return (yield from upsert_group_op(self.schema, batches, fences, hot_tier=self.prefix))
        except Exception as exc:
            if is_outage(exc):
                raise
            logger.info("group flush of %d threads refused (%s: %s): flushing them one by one",
                        len(group), type(exc).__name__, exc)  # fmt: skip
            return None

    def _group_ack_op(
        self, threads: Sequence[tuple[str, str]], plans: Sequence[tuple[dict[str, str], str]], held: dict[int, FirstRead],
        group: dict[int, tuple[FlushBatch, Offloaded, int]],
        written: dict[tuple[str, str], list[tuple[str, str]]], outcomes: list[FlushResult | Exception | None],
    ) -> Op[None]:
        """Acknowledge the group's entries, releasing each lease: one round trip, plus one MULTI
        per thread whose offloaded values must be tracked with its ack (rare)."""
        calls: list[tuple[list[int], RedisCall]] = []
        plain: list[int] = []
        acks: list[tuple[Any, ...]] = []
        for i, (batch, offloaded, _) in group.items():
            read = held[i]
            entries, versions = read.reply[0], read.reply[1]
            ack, track = self._ack_commands(
                *plans[i], batch, read.token, read.observed, entries, versions, offloaded, last=True
            )
            if track:
                calls.append(([i], RedisCall((ack, *track), transaction=True, scripts=(scripts.OUTBOX_ACK,))))
            else:
                plain.append(i)
                acks.append(ack)
        if acks:
            calls.append((plain, RedisCall(tuple(acks), scripts=(scripts.OUTBOX_ACK,))))
        for indexes, call in calls:
            replies = yield call
            for i, remaining in zip(indexes, replies, strict=False):
                batch, _, lost = group[i]
                read = held.pop(i)
                result = FlushResult(batch.tenant_id, batch.thread_id, remaining=int(remaining))
                result.lost += _outbox_lost(batch.tenant_id, batch.thread_id, read.reply[3])
                _count(result, batch, lost)
                result.forked = written.get(threads[i], [])
                if read.observed is not None and (batch.checkpoints or batch.blobs or batch.writes):
                    result.lag_seconds = _seconds_since(read.observed)
                outcomes[i] = result
        return None

    def _release_all_op(self, threads: Sequence[tuple[str, str]], held: dict[int, FirstRead]) -> Op[None]:
        """Release the leases a group flush still holds, in one round trip. A failure is logged,
        not raised: it would hide the flush's own outcome, and a lease lapses on its own."""
        commands = tuple(
            scripts.LOCK_RELEASE.call({"lock": K.lock_key(self.prefix, *threads[i], "flush")}, {"token": read.token})
            for i, read in held.items()
        )  # fmt: skip
        try:
            yield RedisCall(commands, scripts=(scripts.LOCK_RELEASE,))
        except Exception as exc:
            logger.warning("could not release the flush leases of %d threads (they lapse within their lease): %s",
                           len(commands), exc)  # fmt: skip
        held.clear()
        return None

    def _flush_thread_op(
        self, tenant_id: str, thread_id: str, *, wait: bool, lease: FlushLease, first: FirstRead | None,
        defer_ack: bool = False,
    ) -> Op[FlushResult]:
        yield from self.acks.send_op([(tenant_id, thread_id)])  # a lease this process still holds
        result = FlushResult(tenant_id, thread_id)
        dirty = K.dirty_key(self.prefix, K.shard_of(tenant_id, thread_id))
        member = K.dirty_member(tenant_id, thread_id)
        keys = self._keys(tenant_id, thread_id)
        ack_keys = {**keys, "dirty": dirty}
        token = lease.new_token() if first is None else first.token
        limit = OUTBOX_BATCH  # of the read the loop starts from

        def attempt(force: bool = False) -> Op[tuple[Any, Any] | None]:
            nonlocal first, limit
            if first is not None:  # made in the caller's round trip
                observed, reply, limit, first = first.observed, first.reply, first.limit or OUTBOX_BATCH, None
            else:
                observed, reply = yield self._read_call(keys, token, dirty, member, lease.ms, force=force)
                limit = OUTBOX_BATCH
            return (observed, reply) if reply else None

        read = yield from poll_op(attempt, timeout=self.takeover_seconds if wait else 0)
        if read is None and wait:
            logger.warning(
                "flush lease of thread %s/%s held for over %.1f s by a flusher that does not finish: taken "
                "over (Postgres refuses the stalled holder's commit)", tenant_id, thread_id, self.takeover_seconds,
                extra={"tenant_id": tenant_id, "thread_id": thread_id},
            )
            read = yield from attempt(force=True)
        if read is None:
            result.skipped_locked = True
            return result
        observed, reply = read
        fence = _fence_of(reply)
        if len(reply) > 6 and not int(reply[6]):
            logger.warning("flush of thread %s/%s runs without a lease: Redis refused the lease write (out of "
                           "memory?); Postgres' fence still orders flushers", tenant_id, thread_id)  # fmt: skip
        fences = {} if fence is None else {(tenant_id, thread_id): fence}
        # the dirty score the read saw: the last ack takes the thread out of the outbox index
        # only if no write came since (its score would be higher)
        seen = "" if observed is None else observed
        released = False
        try:
            while True:
                entries, versions, values, outbox_lost = reply[:4]
                result.lost += _outbox_lost(tenant_id, thread_id, outbox_lost)
                if not entries:  # nothing to flush: release the lease, clear the dirty mark
                    ack = {"token": token, "release": "1", "ttl_ms": self.ttl_ms, "member": member, "observed": seen}
                    (remaining,) = yield RedisCall((scripts.OUTBOX_ACK.call(ack_keys, ack),), scripts=(scripts.OUTBOX_ACK,))
                    released = True
                    result.remaining = int(remaining)
                    break
                batch, offloaded, lost = yield from self._rows_op(tenant_id, thread_id, entries, values)
                if batch.checkpoints or batch.blobs or batch.writes:
                    counts = yield from upsert_batch_op(self.schema, [batch], fences, hot_tier=self.prefix)
                    forked = [(ns, checkpoint_id) for _, ns, checkpoint_id in counts.forked]
                    self._forked(tenant_id, thread_id, forked)
                    result.forked += forked
                    if observed is not None:
                        result.lag_seconds = _seconds_since(observed)
                _count(result, batch, lost)
                last, limit = len(entries) < limit, OUTBOX_BATCH
                ack_call, track = self._ack_commands(
                    ack_keys, member, batch, token, observed, entries, versions, offloaded, last=last
                )
                if defer_ack and last and not track:  # the read held all: nothing remains to read
                    self.acks.leave((tenant_id, thread_id), RedisCall((ack_call,), scripts=(scripts.OUTBOX_ACK,)))
                    released = True
                    break
                replies = yield RedisCall(
                    (ack_call, *track), transaction=bool(track), scripts=(scripts.OUTBOX_ACK,)
                )
                remaining = replies[0]
                released = last
                result.remaining = int(remaining)
                if result.remaining == 0 or last:
                    break
                _, reply = yield self._read_call(keys, token, dirty, member, lease.ms)
                if not reply:  # the lease lapsed between batches and another flusher has it now
                    released = True  # not ours to release; `remaining` stays what the last ack saw
                    logger.warning(
                        "flush lease of thread %s/%s lapsed mid-flush (a batch took over %d ms); "
                        "its holder goes on", tenant_id, thread_id, lease.ms,
                    )
                    break
        finally:
            if not released:
                yield from self.release_flush_lock_op(tenant_id, thread_id, token)
        return result

    def _rows_op(
        self, tenant_id: str, thread_id: str, entries: Sequence[Any], values: Sequence[Any]
    ) -> Op[tuple[FlushBatch, Offloaded, int]]:
        """The rows of one outbox read, their oversized values sent to the blob store, and how
        many entries (or checkpoints) are lost: their data was gone from Redis."""
        batch, unsure = self._decode(tenant_id, thread_id, entries, values)
        lost = yield from self._settle_op(batch, unsure)
        offloaded = yield from self.offload_rows_op(batch)
        return batch, offloaded, lost + sum(1 for value in values if not value)

    def _ack_commands(
        self, ack_keys: dict[str, str], member: str, batch: FlushBatch, token: str, observed: Any,
        entries: Sequence[Any], versions: Sequence[Any], offloaded: Offloaded, *, last: bool,
    ) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
        """The acknowledgement of flushed entries (releasing the lease when `last`) and the
        offloaded values' tracking commands, which must go with it in one MULTI. `ack_keys`,
        `member`: the thread's keys with its outbox index, and its member there, as its read
        had them."""
        tenant_id, thread_id = batch.tenant_id, batch.thread_id
        ack = {
            "token": token, "release": "1" if last else "0", "ttl_ms": self.ttl_ms,
            "member": member, "observed": "" if observed is None else observed,
        }  # fmt: skip
        acked = [
            item for entry, version in zip(entries, versions, strict=True)
            for item in (entry, version, offloaded.pointers.get(as_str(entry), b""))
        ]  # fmt: skip
        track = self.offloader.track_commands(tenant_id, thread_id, offloaded.digests) if offloaded.digests and self.offloader else []
        return scripts.OUTBOX_ACK.call(ack_keys, ack, acked), track

    @staticmethod
    def _read_call(
        keys: dict[str, str], token: str, dirty: str, member: str, lease_ms: int, *, force: bool = False,
        limit: int | None = None,
    ) -> RedisCall:
        """The dirty score (the shard's index, in the thread's slot) and the locked outbox read (taking or renewing the lease), pipelined."""
        args = {"limit": OUTBOX_BATCH if limit is None else limit, "token": token, "lock_ttl_ms": lease_ms, "force": "1" if force else "0"}
        return RedisCall((("ZSCORE", dirty, member), scripts.OUTBOX_READ.call(keys, args)), scripts=(scripts.OUTBOX_READ,))

    def dirty_threads_op(
        self, older_than_ms: int | None = None, limit: int = 500, shards: Sequence[int] | None = None
    ) -> Op[list[tuple[str, str]]]:
        """Threads with outbox entries, oldest write first; only those quiet for `older_than_ms`;
        from every shard's outbox index (one pipeline), or only from `shards`'."""
        upper: Any = "+inf" if older_than_ms is None else int(time.time() * 1000) - older_than_ms
        replies = yield RedisCall(tuple(
            ("ZRANGEBYSCORE", K.dirty_key(self.prefix, shard), "-inf", upper, "LIMIT", 0, limit, "WITHSCORES")
            for shard in (range(K.SHARDS) if shards is None else shards)
        ))  # fmt: skip
        due = sorted((score, as_str(m)) for reply in replies for m, score in scored(reply))
        return [K.split_dirty_member(m) for _, m in due[:limit]]

    def outbox_status_op(self) -> Op[OutboxStatus]:
        """Depth of the outbox index and the age of its oldest entry, in one round trip (after
        the acknowledgements this process still owes, which would count)."""
        yield from self.acks.send_op()
        commands: list[tuple[Any, ...]] = []
        for dirty in K.dirty_keys(self.prefix):
            commands += [("ZCARD", dirty), ("ZRANGE", dirty, 0, 0, "WITHSCORES")]
        replies = yield RedisCall(tuple(commands))
        depth = sum(int(n) for n in replies[0::2])
        scores = [score for oldest in replies[1::2] for _, score in scored(oldest)]
        return OutboxStatus(depth, _seconds_since(min(scores)) if scores else 0.0)


def is_outage(exc: BaseException) -> bool:
    """Whether a flush failure is everyone's (a tier unreachable, or refusing the saver's
    configuration) rather than the thread's own (its data, or a statement that fails for it)."""
    return isinstance(exc, (TierUnavailableError, PostgresConfigError))


def _outbox_lost(tenant_id: str, thread_id: str, flag: Any) -> int:
    """1 (and an ERROR) when the outbox read found the thread's outbox evicted, else 0."""
    if not int(flag):
        return 0
    logger.error(
        "the outbox of thread %s/%s was lost: Redis evicted it before its flush "
        "(use a volatile-* maxmemory-policy, see README); its unflushed checkpoints "
        "never reach Postgres", tenant_id, thread_id,
        extra={"tenant_id": tenant_id, "thread_id": thread_id},
    )
    return 1


def _count(result: FlushResult, batch: FlushBatch, lost: int) -> None:
    result.checkpoints += len(batch.checkpoints)
    result.blobs += len(batch.blobs)
    result.writes += len(batch.writes)
    result.lost += lost


def _out_of_memory(exc: TierUnavailableError) -> bool:
    return "OutOfMemoryError" in str(exc) or "OOM" in str(exc)


def _micros(seconds: Any, micros: Any) -> int:
    return int(seconds) * 1_000_000 + int(micros)


def _fence_of(reply: Sequence[Any]) -> int | None:
    """A flush's fencing token: the Redis clock of its first outbox read (None from a script
    that predates fencing, which only a scripted test driver still answers)."""
    return _micros(reply[4], reply[5]) if len(reply) > 5 else None


def _seconds_since(score_ms: Any) -> float:
    """Age of a dirty-index score (a write time in ms since the epoch)."""
    return max(0.0, (time.time() * 1000 - float(score_ms)) / 1000)
