"""Hot tier (Redis) operations, written once as sans-I/O generators for the sync and async saver.

Each function builds the Redis requests of one saver operation, yields them, and turns the
replies into LangGraph objects. `put` and `put_writes` are one round trip (one write.lua, with a
step's held writes in the put's script); `get_tuple` is one round trip (one Lua script).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, replace
from typing import TYPE_CHECKING, Any

import redis.exceptions
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from langgraph_tiered_saver._sansio.io import Op, RedisCall
from langgraph_tiered_saver._sansio.polling import poll_op
from langgraph_tiered_saver.errors import CorruptDataError, HotDurabilityError
from langgraph_tiered_saver.hot import keys as K
from langgraph_tiered_saver.hot import scripts
from langgraph_tiered_saver.hot.epoch import Epoch, HotDurability
from langgraph_tiered_saver.hot.scripts import LuaScript
from langgraph_tiered_saver.hot.stored import StoredCheckpoint, decode_refs, encode_refs
from langgraph_tiered_saver.hot.watch import HotWatch
from langgraph_tiered_saver.records import filters
from langgraph_tiered_saver.records.codec import (
    EMPTY,
    CheckpointRecord,
    TypedValue,
    WriteRecord,
    as_str,
    decode_typed,
    encode_typed,
    loads_record,
    pointer_digest,
    scored,
    unpack_checkpoint,
    unpack_write,
)
from langgraph_tiered_saver.records.ids import MAX_TASK_ID, ThreadRef, check_field_id

if TYPE_CHECKING:
    from langgraph_tiered_saver.blobs.offloader import Offloader
    from langgraph_tiered_saver.hot.combine import Held

logger = logging.getLogger("langgraph_tiered_saver")


def now_ms() -> int:
    return int(time.time() * 1000)


def parse_entry(entry: Sequence[Any], where: str) -> StoredCheckpoint:
    """Decode one reply of `get.lua` (member, record, refs, blob values, write records, lost)."""
    member, record_raw, refs_raw, values, writes_raw, lost = entry
    ns, checkpoint_id = K.split_checkpoint_member(as_str(member))
    run_id, fields = decode_refs(refs_raw)
    record = unpack_checkpoint(record_raw, fields, where)
    blobs = {
        field: decode_typed(raw, where)
        for field, raw in zip(fields, values or (), strict=False)
        if raw is not None
    }
    writes = [unpack_write(raw, where) for raw in writes_raw or () if raw is not None]
    writes.sort(key=WriteRecord.sort_key)
    return StoredCheckpoint(ns, checkpoint_id, record, run_id, blobs, writes, refs_lost=bool(int(lost)))


@dataclass(frozen=True, slots=True)
class WriteLock:
    """The run lock a write holds (locks.py): its fencing token ("" for none), the TTL each
    write renews it to (0: not renewed by writes), and whether this write ends the run and
    releases it."""

    fence: str = ""
    ttl_ms: int = 0
    release: bool = False


NO_LOCK = WriteLock()


@dataclass(frozen=True, slots=True)
class LockRequest:
    """A graph run starting: the run lock its first read takes (runlock.py)."""

    token: str
    ttl_ms: int


@dataclass(frozen=True, slots=True)
class Fetched:
    """What get.lua answered (see `HotOps.fetch_op`)."""

    entries: list[StoredCheckpoint]
    status: str
    generation: str  # with "unverified": the shard generation to verify the copy under
    fence: str  # with a lock request that succeeded: the run lock's fencing token

    @property
    def first(self) -> StoredCheckpoint | None:
        return self.entries[0] if self.entries else None


@dataclass(frozen=True, slots=True)
class Listed:
    """What list.lua answered: the checkpoints, whether Redis holds all Postgres does of the
    namespace (or thread) listed, and its first member ("" without any)."""

    entries: list[StoredCheckpoint]
    whole: bool
    oldest: str
    generation: str  # "" when the copy is verified, else the generation to verify it under


@dataclass(frozen=True, slots=True)
class PreparedPut:
    member: str
    record: CheckpointRecord
    run_id: str
    blobs: list[tuple[str, bytes]]  # blob field -> encoded value (or pointer)
    digests: list[str]  # blobs this checkpoint sent to the blob store


@dataclass(eq=False)
class HotOps:
    """Builds the Redis side of every saver operation. Holds settings only, never a connection."""

    serde: SerializerProtocol
    _: KW_ONLY
    prefix: str
    ttl_ms: int
    refresh_on_read: bool
    track_outbox: bool
    offloader: Offloader
    epoch: Epoch
    watch: HotWatch
    durability: HotDurability | None = None

    @property
    def offload_on_put(self) -> bool:
        """Oversized values go to the blob store at put time only without a durable tier: with
        one, the flush sends them there (no blob-store I/O on the hot path; until the flush the
        value is in Redis, which every replica reads)."""
        return not self.track_outbox

    @property
    def read_ttl_ms(self) -> int:
        """The TTL a read refreshes (0: none): none while the server is a replica (hot/watch.py),
        which would refuse the refresh, and so the read."""
        return self.ttl_ms if self.refresh_on_read and not self.watch.replica else 0

    @property
    def _track(self) -> str:
        return "1" if self.track_outbox else "0"

    # ----------------------------------------------------------------- encoding (no I/O)

    def keys(self, tenant_id: str, thread_id: str, **extra: str) -> dict[str, str]:
        return scripts.thread_keys(self.prefix, tenant_id, thread_id, **extra)

    def encode_writes(
        self, ref: ThreadRef, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str
    ) -> list[tuple[str, WriteRecord]]:
        assert ref.checkpoint_id is not None
        check_field_id("task_id", task_id, MAX_TASK_ID)
        out = []
        for i, (channel, value) in enumerate(writes):
            idx = WRITES_IDX_MAP.get(channel, i)
            record = WriteRecord(task_id, idx, channel, self.serde.dumps_typed(value), task_path, time.time())
            out.append((K.write_field(ref.checkpoint_ns, ref.checkpoint_id, task_id, idx), record))
        return out

    def prepare_put_op(
        self,
        ref: ThreadRef,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
        config: RunnableConfig,
    ) -> Op[PreparedPut]:
        """Serialize a checkpoint (its record, and the values of the channels it changed);
        without a durable tier, oversized channel values go to the blob store first (with one,
        the flush sends them there: `offload_on_put`)."""
        ns = ref.checkpoint_ns
        c: dict[str, Any] = dict(checkpoint)
        values: dict[str, Any] = c.pop("channel_values")
        md = get_serializable_checkpoint_metadata(config, metadata)
        run_id = md.get("run_id")
        head = ns + K.SEP  # K.blob_field, inline: every channel of every put
        fields = tuple(f"{head}{ch}{K.SEP}{v}" for ch, v in checkpoint["channel_versions"].items())
        record = CheckpointRecord(self.serde.dumps_typed(c), self.serde.dumps_typed(md), ref.checkpoint_id, fields)
        member = K.checkpoint_member(ns, check_field_id("checkpoint id", checkpoint["id"], 128))
        blobs: list[tuple[str, bytes]] = []
        digests: list[str] = []
        for channel, version in new_versions.items():
            field = K.blob_field(ns, channel, version)
            value = self.serde.dumps_typed(values[channel]) if channel in values else EMPTY
            stored = (yield from self.offloader.offload_op(ref.tenant_id, value)) if self.offload_on_put else value
            if stored is not value:
                digests.append(pointer_digest(stored) or "")
            blobs.append((field, encode_typed(stored)))
        return PreparedPut(member, record, str(run_id) if run_id else "", blobs, digests)

    def prepare_writes_op(
        self, ref: ThreadRef, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str
    ) -> Op[tuple[list[tuple[str, WriteRecord]], list[str]]]:
        out: list[tuple[str, WriteRecord]] = []
        digests: list[str] = []
        for field, record in self.encode_writes(ref, writes, task_id, task_path):
            if not self.offload_on_put:
                out.append((field, record))
                continue
            stored = yield from self.offloader.offload_op(ref.tenant_id, record.value)
            if stored is not record.value:
                digests.append(pointer_digest(stored) or "")
                record = replace(record, value=stored)
            out.append((field, record))
        return out, digests

    def to_tuple(
        self, ref: ThreadRef, stored: StoredCheckpoint, values: Callable[[TypedValue], Any] | None = None
    ) -> CheckpointTuple:
        """Turn a stored checkpoint (from either tier) into LangGraph's CheckpointTuple.
        `values`: how channel values and pending writes are decoded (a list call's `DecodeOnce`,
        a read's `DecodedValues`), else the serde."""
        load_value = functools.partial(loads_record, self.serde) if values is None else values
        blobs = stored.blobs
        try:
            checkpoint: Checkpoint = loads_record(self.serde, stored.record.checkpoint)
            metadata: CheckpointMetadata = loads_record(self.serde, stored.record.metadata)
            channel_values: dict[str, Any] = {}
            for field in stored.record.blob_fields:
                typed = blobs.get(field)
                if typed is None or typed[0] == "empty":
                    continue
                channel_values[field.split(K.SEP, 2)[1]] = load_value(typed)
            pending = [(w.task_id, w.channel, load_value(w.value)) for w in stored.writes]
        except CorruptDataError:
            raise
        except Exception as exc:
            where = f"thread {ref.thread_id!r} checkpoint {stored.checkpoint_id!r}"
            raise CorruptDataError(f"{where}: stored bytes cannot be deserialized: {exc}") from exc
        ns_ref = ThreadRef(ref.tenant_id, ref.thread_id, stored.checkpoint_ns, None, ref.tenant_in_config)
        parent = stored.record.parent_checkpoint_id
        return CheckpointTuple(
            config=ns_ref.config(stored.checkpoint_id),
            checkpoint={**checkpoint, "channel_values": channel_values},
            metadata=metadata,
            parent_config=ns_ref.config(parent) if parent else None,
            pending_writes=pending,
        )

    # ----------------------------------------------------------------- operations

    def put_op(
        self, ref: ThreadRef, put: PreparedPut, lock: WriteLock = NO_LOCK, carried: Sequence[Held] = (), *,
        fresh: bool = False,
    ) -> Op[None]:  # fmt: skip
        """Store a prepared checkpoint, and in the same script the `carried` writes of the step
        it closes (combine.py). `fresh`: Postgres holds nothing of the thread (fresh_threads.py)."""
        records, digests = _held_records(carried), [*_held_digests(carried), *put.digests]
        yield from self._write_op(ref, records, put, digests, lock, fresh=fresh)
        return None

    def write_records_op(
        self, ref: ThreadRef, records: Sequence[tuple[str, WriteRecord]], digests: Sequence[str],
        lock: WriteLock = NO_LOCK, then: RedisCall | None = None,
    ) -> Op[tuple[Any, ...] | None]:  # fmt: skip
        """Store prepared write records. `then`: commands to send in the same round trip, after
        the write (a flush's first outbox read, for an interrupt); returns their replies, None
        when they were not sent (the write needed a transaction or a durability wait), or ()
        when they were sent but the write found Redis had lost data (the replies do not count)."""
        if records:
            return (yield from self._write_op(ref, records, None, digests, lock, then))
        return None

    def _write_op(
        self,
        ref: ThreadRef,
        records: Sequence[tuple[str, WriteRecord]],
        put: PreparedPut | None,
        digests: Sequence[str],
        lock: WriteLock,
        then: RedisCall | None = None,
        *,
        fresh: bool = False,
    ) -> Op[tuple[Any, ...] | None]:
        """One round trip: one write.lua (writes, then the checkpoint closing their step), which
        also keeps the outbox, the registry and the TTL, and compares the epoch (a second round
        trip only on a process' first write, or after Redis lost data). Offloaded blobs add their
        reference sets in a MULTI around it; a durability wait follows it (hot_durability)."""
        epoch = yield from self.epoch.known_op()
        yield from self.watch.ready_op()  # a thread born before the process' check would read as unverified
        plan = thread_plan(self.prefix, ref.tenant_id, ref.thread_id)
        rest: list[Any] = [item for field, r in records for item in (field, r.pack(), "1" if r.idx < 0 else "0")]
        if put is None:
            checkpoint: tuple[Any, ...] = ("", "", "", "")
        else:
            checkpoint = (put.member, put.record.pack(), encode_refs(put.run_id, put.record.blob_fields), put.run_id)
            rest += [item for pair in put.blobs for item in pair]
        args = (
            self.ttl_ms, lock.fence, lock.ttl_ms, "1" if lock.release else "0", self._track, now_ms(), ref.thread_id,
            plan.dirty_member, epoch, *checkpoint, "1" if fresh else "0", len(records),
        )  # fmt: skip
        commands = (scripts.WRITE.call_planned(plan.write_keys, args, rest),
                    *self.offloader.track_commands(ref.tenant_id, ref.thread_id, digests))  # fmt: skip
        wait = self.durability.command() if self.durability is not None else None
        if then is not None and wait is None and len(commands) == 1:  # `then` rides along
            replies = yield RedisCall((*commands, *then.commands), scripts=(*_WRITE_SCRIPTS, *then.scripts))
            if self.durability is not None:
                self.durability.check(None)
            if not int(replies[0]):
                yield from self.epoch.lost_op(epoch)
                return ()
            return tuple(replies[1:])
        if wait is None or len(commands) > 1:  # WAIT/WAITAOF cannot run inside MULTI: after it
            replies = yield RedisCall(commands, transaction=len(commands) > 1, scripts=_WRITE_SCRIPTS)
            confirmed = None if wait is None else (yield from self._wait_op(wait, (wait,)))
        else:  # the wait rides in the same round trip
            replies = yield from self._wait_op(wait, (*commands, wait), _WRITE_SCRIPTS)
            confirmed = replies[-1]
        if self.durability is not None:
            self.durability.check(confirmed)
        if not int(replies[0]):
            yield from self.epoch.lost_op(epoch)
        return None

    def _wait_op(self, wait: tuple[Any, ...], commands: tuple[Any, ...], used: tuple[LuaScript, ...] = ()) -> Op[Any]:
        """Run `commands` ending with the durability wait; a server that cannot wait (WAITAOF
        without `appendonly yes`, an old server) is a typed error, not a raw reply."""
        try:
            replies = yield RedisCall(commands, scripts=used)
        except redis.exceptions.ResponseError as exc:
            raise HotDurabilityError(f"Redis cannot confirm {wait[0]} durability: {exc}") from exc
        return replies if used else replies[0]

    def fetch_op(
        self, ref: ThreadRef, members: Sequence[str] | None, lock: LockRequest | None = None
    ) -> Op[Fetched]:
        """The latest checkpoint of `ref`'s namespace (members=None), or the given members, with
        get.lua's status: "hit", "unverified" (hotwatch.py), "evicted", "miss", "absent" (no tier
        holds it: fresh_threads.py), or "locked" when
        `lock` (a graph run starting: it takes the thread's run lock in the same script) is held
        by another run."""
        ttl = self.read_ttl_ms
        plan = thread_plan(self.prefix, ref.tenant_id, ref.thread_id)
        rest = [ref.checkpoint_ns] if members is None else list(members)
        args = (
            ttl, "latest" if members is None else "ids", lock.token if lock else "", lock.ttl_ms if lock else 0,
            self.ttl_ms,
        )  # fmt: skip
        call = scripts.GET.call_planned(plan.get_keys, args, rest)
        ((status, entries, generation, fence),) = yield RedisCall((call,), scripts=(scripts.GET,))
        where = f"Redis thread {ref.thread_id!r}"
        return Fetched(
            [parse_entry(entry, where) for entry in entries or ()], as_str(status), as_str(generation), as_str(fence)
        )

    def verify_op(self, ref: ThreadRef, generation: str) -> Op[None]:
        """Postgres found the thread's copy current under `generation` (hotwatch.py)."""
        plan = thread_plan(self.prefix, ref.tenant_id, ref.thread_id)
        yield RedisCall((scripts.VERIFY.call_planned(plan.read_keys, (generation,)),), scripts=(scripts.VERIFY,))
        return None

    def get_stored_op(self, ref: ThreadRef, lock: LockRequest | None = None) -> Op[Fetched]:
        """The checkpoint `ref` names (its namespace's latest without an id); see `fetch_op`."""
        members = None if ref.checkpoint_id is None else [
            K.checkpoint_member(ref.checkpoint_ns, ref.checkpoint_id)
        ]
        yield from self.watch.ready_op()
        if self.epoch.value is None and not self.watch.replica:
            yield from self._learn_epoch_op()
        found = yield from self.fetch_op(ref, members, lock)
        if self.watch.due:  # the server restarted during the read (NOSCRIPT): check, read again
            yield from self.watch.ready_op()
            found = yield from self.fetch_op(ref, members, lock)
        return found

    def _learn_epoch_op(self) -> Op[None]:
        """A process' first read learns the deployment's epoch (a pipeline of 256 commands, one
        per shard's copy: epoch.py), as its first read checks the server: a run's first write,
        right after, is then one round trip like the others. LangGraph sends a task's writes after the put
        of its step, and a slow first put lets a later task overtake them in what a run
        streams. Refused (a server that takes no writes): the first write learns it, or raises."""
        try:
            yield from self.epoch.known_op()
        except Exception as exc:
            logger.debug("the first read did not learn the Redis epoch (the first write will): %s", exc)
        return None

    def fetch_writes_op(
        self, tenant_id: str, members_by_thread: Mapping[str, Sequence[str]]
    ) -> Op[dict[tuple[str, str], list[WriteRecord] | None]]:
        """Pending writes of checkpoints (thread -> members), without their channel values, in
        one round trip. A checkpoint Redis does not hold whole (absent, or some of its writes
        evicted) maps to None: only the durable tier can answer for it."""
        threads = [(t, list(m)) for t, m in members_by_thread.items() if m]
        if not threads:
            return {}
        calls = tuple(scripts.WRITES.call(self.keys(tenant_id, t), {}, members) for t, members in threads)
        replies = yield RedisCall(calls, scripts=(scripts.WRITES,))
        out: dict[tuple[str, str], list[WriteRecord] | None] = {}
        for (thread_id, members), reply in zip(threads, replies, strict=True):
            where = f"Redis thread {thread_id!r}"
            for member, (present, raw_writes, lost) in zip(members, reply, strict=True):
                if not int(present) or int(lost):
                    out[(thread_id, member)] = None
                    continue
                writes = [unpack_write(raw, where) for raw in raw_writes or () if raw is not None]
                out[(thread_id, member)] = sorted(writes, key=WriteRecord.sort_key)
        return out

    def await_checkpoint_op(self, ref: ThreadRef, timeout: float) -> Op[bool]:
        """Wait until the checkpoint `ref` names is in Redis. LangGraph submits a step's
        checkpoint and its tasks' writes to background threads concurrently, so an interrupt
        write can arrive before the put of the checkpoint it belongs to: a flush that must make
        the interrupt durable waits for that put first. False if it never came."""
        assert ref.checkpoint_id is not None
        ck = K.thread_keys(self.prefix, ref.tenant_id, ref.thread_id).ck
        member = K.checkpoint_member(ref.checkpoint_ns, ref.checkpoint_id)

        def attempt() -> Op[bool | None]:
            (present,) = yield RedisCall((("HEXISTS", ck, member),))
            return True if present else None

        return bool((yield from poll_op(attempt, timeout=timeout)))

    def members_op(self, ref: ThreadRef, all_namespaces: bool) -> Op[list[str]]:
        """Checkpoint members of a thread, newest checkpoint id first."""
        idx = K.thread_keys(self.prefix, ref.tenant_id, ref.thread_id).idx
        if all_namespaces:
            command: tuple[Any, ...] = ("ZRANGE", idx, 0, -1)
        else:
            low, high = K.ns_range(ref.checkpoint_ns)
            command = ("ZRANGEBYLEX", idx, low, high)
        (raw,) = yield RedisCall((command,))
        members = [as_str(m) for m in raw]
        members.sort(key=lambda m: K.split_checkpoint_member(m)[::-1], reverse=True)
        return members

    def list_threads_op(self, tenant_id: str) -> Op[list[str]]:
        """Threads of a tenant known to Redis, most recently written first (every shard's slice
        of its registry, in one pipeline)."""
        replies = yield RedisCall(
            tuple(("ZRANGE", key, 0, -1, "WITHSCORES") for key in K.tenant_threads_keys(self.prefix, tenant_id))
        )
        scored_threads = [(score, as_str(t)) for reply in replies for t, score in scored(reply)]
        scored_threads.sort(reverse=True)  # as ZREVRANGE: newest first, ties in reverse lex order
        return [t for _, t in scored_threads]

    def held_op(self, tenant_id: str, thread_ids: Sequence[str]) -> Op[set[str]]:
        """Which of the threads Redis holds now (registered ones may have expired)."""
        if not thread_ids:
            return set()
        replies = yield RedisCall(tuple(("EXISTS", K.thread_keys(self.prefix, tenant_id, t).idx) for t in thread_ids))
        return {t for t, n in zip(thread_ids, replies, strict=True) if int(n)}

    def list_stored_op(
        self,
        ref: ThreadRef,
        *,
        all_namespaces: bool,
        before_id: str | None,
        metadata_filter: Mapping[str, Any] | None,
        limit: int | None,
    ) -> Op[Listed]:
        """Checkpoints of one thread, newest first, with `before`, metadata filter and limit: one
        round trip (list.lua), each channel value sent once however many checkpoints share it,
        the limit applied in the script unless a metadata filter (read here) must go first."""
        args = (
            self.read_ttl_ms, "all" if all_namespaces else "one", ref.checkpoint_ns,
            ref.checkpoint_id or "", before_id or "", 0 if metadata_filter or limit is None else limit,
        )  # fmt: skip
        plan = thread_plan(self.prefix, ref.tenant_id, ref.thread_id)
        call = scripts.LIST.call_planned(plan.read_keys, args)
        yield from self.watch.ready_op()  # `whole` trusts a verified copy only: see get_stored_op
        ((entries, fields, values, whole, oldest, generation),) = yield RedisCall((call,), scripts=(scripts.LIST,))
        if self.watch.due:  # the server restarted during the read (NOSCRIPT): check, read again
            yield from self.watch.ready_op()
            ((entries, fields, values, whole, oldest, generation),) = yield RedisCall((call,), scripts=(scripts.LIST,))
        where = f"Redis thread {ref.thread_id!r}"
        shared = {
            as_str(field): decode_typed(raw, where) for field, raw in zip(fields, values or (), strict=False) if raw is not None
        }
        out: list[StoredCheckpoint] = []
        for member, record_raw, refs_raw, writes_raw, lost in entries or ():
            ns, checkpoint_id = K.split_checkpoint_member(as_str(member))
            run_id, refs = decode_refs(refs_raw)
            record = unpack_checkpoint(record_raw, refs, where)
            writes = [unpack_write(raw, where) for raw in writes_raw or () if raw is not None]
            if len(writes) > 1:
                writes.sort(key=WriteRecord.sort_key)
            blobs = {f: shared[f] for f in refs if f in shared}
            stored = StoredCheckpoint(ns, checkpoint_id, record, run_id, blobs, writes, refs_lost=bool(int(lost)))
            if metadata_filter and not self.matches(stored, metadata_filter):
                continue
            out.append(stored)
            if limit is not None and len(out) >= limit:
                break
        return Listed(out, bool(int(whole)), as_str(oldest), as_str(generation))

    def mark_whole_op(self, ref: ThreadRef, all_namespaces: bool, listed: Listed) -> Op[None]:
        """Postgres holds nothing of `ref`'s namespace (or thread) that Redis did not when
        `listed` was read: later lists of it need not ask Postgres, and the copy is verified
        (list_mark.lua)."""
        plan = thread_plan(self.prefix, ref.tenant_id, ref.thread_id)
        args = ("all" if all_namespaces else "one", ref.checkpoint_ns, listed.oldest, listed.generation)
        call = scripts.LIST_MARK.call_planned(plan.read_keys, args)
        yield RedisCall((call,), scripts=(scripts.LIST_MARK,))
        return None

    def matches(self, stored: StoredCheckpoint, metadata_filter: Mapping[str, Any]) -> bool:
        return filters.matches(loads_record(self.serde, stored.record.metadata), metadata_filter)

    def delete_thread_op(self, tenant_id: str, thread_ids: Sequence[str]) -> Op[None]:
        """Drop threads' keys from Redis (and their outbox index entries). They stay in the
        tenant's registry until `unregister_op`, which a deletion runs last."""
        commands: list[tuple[Any, ...]] = []
        for thread_id in thread_ids:
            commands.append(("DEL", *K.thread_keys(self.prefix, tenant_id, thread_id)))
            shard = K.shard_of(tenant_id, thread_id)
            commands.append(("ZREM", K.dirty_key(self.prefix, shard), K.dirty_member(tenant_id, thread_id)))
        if commands:
            yield RedisCall(tuple(commands))
        return None

    def register_op(self, tenant_id: str, thread_id: str) -> Op[None]:
        """List a thread in its tenant's registry (before it reaches Postgres past Redis)."""
        key = K.tenant_threads_key(self.prefix, tenant_id, K.shard_of(tenant_id, thread_id))
        yield RedisCall((("ZADD", key, now_ms(), thread_id),))
        return None

    def unregister_op(self, tenant_id: str, thread_ids: Sequence[str]) -> Op[None]:
        if thread_ids:
            yield RedisCall(tuple(
                ("ZREM", K.tenant_threads_key(self.prefix, tenant_id, K.shard_of(tenant_id, t)), t) for t in thread_ids
            ))  # fmt: skip
        return None

    def delete_members_op(
        self, tenant_id: str, targets: Mapping[str, Sequence[str]], mode: str
    ) -> Op[int]:
        """Delete, per thread, the listed members (mode "members") or runs (mode "runs")."""
        calls = tuple(
            scripts.DELETE_MEMBERS.call(self.keys(tenant_id, thread_id), {"mode": mode}, ids)
            for thread_id, ids in targets.items()
            if ids
        )
        if not calls:
            return 0
        replies = yield RedisCall(calls, scripts=(scripts.DELETE_MEMBERS,))
        return sum(int(reply[0]) for reply in replies)

    def export_thread_op(self, tenant_id: str, thread_id: str) -> Op[dict[str, dict[str, bytes]]]:
        """Every checkpoint record, refs, blob and write of one thread (copy_thread, prune)."""
        tk = K.thread_keys(self.prefix, tenant_id, thread_id)
        replies = yield RedisCall(
            (("HGETALL", tk.ck), ("HGETALL", tk.cv), ("HGETALL", tk.bl), ("HGETALL", tk.wr))
        )
        names = ("ck", "cv", "bl", "wr")
        return {name: {as_str(k): v for k, v in reply.items()} for name, reply in zip(names, replies, strict=True)}

    def import_thread_op(
        self, tenant_id: str, thread_id: str, content: Mapping[str, Mapping[str, Any]], *, pending: bool
    ) -> Op[None]:
        """Write exported (or Postgres-loaded) content into a thread, in one script."""
        if not content.get("ck"):
            return None
        sections: list[Any] = ["ck", len(content["ck"])]
        for member, record in content["ck"].items():
            sections += [member, record, content["cv"].get(member, b"")]
        for section in ("bl", "wr"):
            items = content.get(section) or {}
            sections += [section, len(items)]
            for field, value in items.items():
                sections += [field, value]
        args = {"ttl_ms": self.ttl_ms, "mark_pending": "1" if pending else "0"}
        ts = now_ms()
        shard = K.shard_of(tenant_id, thread_id)
        commands: list[tuple[Any, ...]] = [
            scripts.IMPORT.call(self.keys(tenant_id, thread_id, vgen=K.generation_key(self.prefix, shard)), args, sections),
            ("ZADD", K.tenant_threads_key(self.prefix, tenant_id, shard), ts, thread_id),
        ]
        if pending and self.track_outbox:
            commands.append(("ZADD", K.dirty_key(self.prefix, shard), ts, K.dirty_member(tenant_id, thread_id)))
        yield RedisCall(tuple(commands), transaction=True, scripts=(scripts.IMPORT,))
        return None


_WRITE_SCRIPTS = (scripts.WRITE,)



@dataclass(frozen=True, slots=True)
class ThreadPlan:
    """A thread's key names, built once (see `thread_plan`): the hot path does not re-encode
    ids, hash the shard or format keys on every call."""

    dirty_member: str
    write_keys: tuple[str, ...]  # scripts.WRITE's KEYS, in order
    read_keys: tuple[str, ...]  # scripts.VERIFY's (and LIST's) KEYS, in order
    get_keys: tuple[str, ...]  # scripts.GET's: the thread's key prefix, the shard's generation


@functools.lru_cache(maxsize=1024)
def thread_plan(prefix: str, tenant_id: str, thread_id: str) -> ThreadPlan:
    """The key plan of a thread. Bounded: a process that serves many threads keeps the 1,024 it
    used last."""
    shard = K.shard_of(tenant_id, thread_id)
    thread = scripts.thread_keys(prefix, tenant_id, thread_id)
    thread_prefix, vgen = K.thread_prefix(prefix, tenant_id, thread_id), K.generation_key(prefix, shard)
    write = {
        "thread": thread_prefix, "registry": K.tenant_threads_key(prefix, tenant_id, shard),
        "dirty": K.dirty_key(prefix, shard), "epoch": K.epoch_key(prefix, shard), "vgen": vgen,
    }  # fmt: skip
    read = {**thread, "vgen": vgen}
    get = {"thread": thread_prefix, "vgen": vgen}
    return ThreadPlan(
        K.dirty_member(tenant_id, thread_id), scripts.WRITE.check_keys(write), scripts.VERIFY.check_keys(read),
        scripts.GET.check_keys(get),
    )


def _held_records(held: Sequence[Held]) -> list[tuple[str, WriteRecord]]:
    return [record for h in held for record in h.records]


def _held_digests(held: Sequence[Held]) -> list[str]:
    return [digest for h in held for digest in h.digests]
