"""The raw Redis floor: the least work any Redis-backed checkpointer can do per call.

`put` serializes the checkpoint with the same serializer the savers use, then sends one pipeline
(HSET of the bytes + EXPIRE) — one round trip carrying the same bytes as a put. `put_writes` is the
same for the writes (a hash per checkpoint). `get_tuple` is one round trip (a pipeline of HGET and
HGETALL by id, or a short Lua script for the latest) plus deserialization of the checkpoint and of
its pending writes: a tuple without them is not one LangGraph can resume from, so a floor that
skipped them would be below what any checkpointer can do. It keeps no history, so it only takes
part in the put, put_writes and get_tuple workloads and in graph runs on new threads (the 10-node
graph, case_8842); it is the lower bound, not a usable saver.

Two more floors build on it for graph runs. The carried floor (`carry_writes`) sends a step's
writes with the put that closes the step, as TieredSaver does: one round trip per superstep
where the raw floor makes one per call. The durable floor (`DurableFloor`, carrying too) adds
the Postgres work a checkpointer that makes an interrupt durable before `invoke` returns cannot
skip.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
)
from langgraph.checkpoint.serde.types import INTERRUPT, RESUME
from redis.typing import EncodableT, FieldT

_LATEST = "latest"
# KEYS[1]: the thread's hash; its writes live in KEYS[1] .. ":w:" .. <checkpoint id>, in the same
# Cluster slot (the thread key's hash tag)
_GET_LATEST = (
    "local latest = redis.call('HGET', KEYS[1], 'latest') "
    "if not latest then return false end "
    "return {redis.call('HGET', KEYS[1], latest), redis.call('HGETALL', KEYS[1] .. ':w:' .. latest)}"
)
_TYPE_SEP = b"\x00"
# A durable floor's commit: (thread id, row ids, row bytes)
Commit = tuple[str, list[str], list[bytes]]


class RawRedisFloor(BaseCheckpointSaver[str]):
    """Serialize + one Redis round trip per call. See the module docstring."""

    def __init__(
        self,
        *,
        client: redis.Redis | None = None,
        aclient: redis.asyncio.Redis | None = None,
        prefix: str,
        ttl_seconds: int = 24 * 3600,
        carry_writes: bool = False,
    ) -> None:
        super().__init__()
        self.client = client
        self.aclient = aclient
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds
        # `carry_writes`: a step's writes wait in process and go in the round trip of the put
        # that closes the step, as TieredSaver's (one round trip per superstep); a special
        # write (an interrupt, an error) goes at once, and a read first sends what waits
        self.carry_writes = carry_writes
        self._held: dict[str, list[tuple[str, dict[FieldT, EncodableT]]]] = {}
        # LangGraph calls put and put_writes from its worker threads: the writes held here, and
        # a durable floor's rows, are changed under this lock (never taken twice at once)
        self._lock = threading.Lock()
        self._latest = client.register_script(_GET_LATEST) if client else None
        self._alatest = aclient.register_script(_GET_LATEST) if aclient else None

    # ------------------------------------------------------------ encoding

    def _key(self, config: RunnableConfig) -> str:
        return f"{self.prefix}:{{{config['configurable']['thread_id']}}}"

    def _writes_key(self, config: RunnableConfig, checkpoint_id: str) -> str:
        return f"{self._key(config)}:w:{checkpoint_id}"

    def _dumps(self, value: Any) -> bytes:
        type_, data = self.serde.dumps_typed(value)
        return type_.encode() + _TYPE_SEP + data

    def _loads(self, raw: bytes) -> Any:
        type_, _, data = raw.partition(_TYPE_SEP)
        return self.serde.loads_typed((type_.decode(), data))

    def _put_mapping(
        self, checkpoint: Checkpoint, metadata: CheckpointMetadata
    ) -> dict[FieldT, EncodableT]:
        return {checkpoint["id"]: self._dumps((checkpoint, metadata)), _LATEST: checkpoint["id"]}

    def _writes_mapping(
        self, writes: Sequence[tuple[str, Any]], task_id: str
    ) -> dict[FieldT, EncodableT]:
        return {f"{task_id}:{i:08d}": self._dumps(w) for i, w in enumerate(writes)}

    def _tuple(
        self, config: RunnableConfig, raw: bytes | None, writes: dict[bytes, bytes] | list[bytes]
    ) -> CheckpointTuple | None:
        if raw is None:
            return None
        checkpoint, metadata = self._loads(raw)
        conf = {**config["configurable"], "checkpoint_id": checkpoint["id"]}
        # HGETALL: a dict from redis-py, a flat [field, value, ...] list from a script
        fields = (
            writes
            if isinstance(writes, dict)
            else dict(zip(writes[::2], writes[1::2], strict=True))
        )
        pending = [
            (field.decode().partition(":")[0], *self._loads(value))
            for field, value in sorted(fields.items())
        ]
        return CheckpointTuple({"configurable": conf}, checkpoint, metadata, pending_writes=pending)

    def _latest_tuple(
        self, config: RunnableConfig, reply: list[Any] | None
    ) -> CheckpointTuple | None:
        return None if not reply else self._tuple(config, reply[0], reply[1])

    def _next_config(self, config: RunnableConfig, checkpoint: Checkpoint) -> RunnableConfig:
        return {"configurable": {**config["configurable"], "checkpoint_id": checkpoint["id"]}}

    def _stage_put(
        self, pipe: Any, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata
    ) -> dict[FieldT, EncodableT]:
        """Queue a put's commands on `pipe` (sync or async): its one round trip."""
        key = self._key(config)
        mapping = self._put_mapping(checkpoint, metadata)
        pipe.hset(key, mapping=mapping)
        pipe.expire(key, self.ttl_seconds)
        return mapping

    def _stage_writes(
        self, pipe: Any, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str
    ) -> dict[FieldT, EncodableT]:
        key = self._writes_key(config, config["configurable"]["checkpoint_id"])
        mapping = self._writes_mapping(writes, task_id)
        pipe.hset(key, mapping=mapping)
        pipe.expire(key, self.ttl_seconds)
        return mapping

    def _hold(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str
    ) -> dict[FieldT, EncodableT] | None:
        """Keep a step's writes for the put that closes it (`carry_writes`); None: send now."""
        if not self.carry_writes or any(c in WRITES_IDX_MAP and c != RESUME for c, _ in writes):
            return None
        key = self._writes_key(config, config["configurable"]["checkpoint_id"])
        mapping = self._writes_mapping(writes, task_id)
        with self._lock:
            self._held.setdefault(config["configurable"]["thread_id"], []).append((key, mapping))
        return mapping

    def _holds(self, config: RunnableConfig) -> bool:
        return self.carry_writes and config["configurable"]["thread_id"] in self._held

    def _stage_held(self, pipe: Any, config: RunnableConfig) -> bool:
        """Queue the thread's waiting writes on `pipe`; whether there were any."""
        if not self.carry_writes:
            return False
        with self._lock:
            held = self._held.pop(config["configurable"]["thread_id"], [])
        for key, mapping in held:
            pipe.hset(key, mapping=mapping)
            pipe.expire(key, self.ttl_seconds)
        return bool(held)

    # What a put or a write commits to Postgres after its round trip: nothing here (the durable
    # floor's: see DurableFloor).

    def _put_done(self, config: RunnableConfig, checkpoint: Checkpoint, mapping: dict[FieldT, EncodableT]) -> Commit | None:
        return None

    def _writes_done(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], mapping: dict[FieldT, EncodableT]
    ) -> Commit | None:
        return None

    def _commit(self, commit: Commit) -> None:
        raise NotImplementedError("the raw floor has no Postgres")

    async def _acommit(self, commit: Commit) -> None:
        raise NotImplementedError("the raw floor has no Postgres")

    # ---------------------------------------------------------------- sync

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        assert self.client is not None
        pipe = self.client.pipeline(transaction=False)
        self._stage_held(pipe, config)
        mapping = self._stage_put(pipe, config, checkpoint, metadata)
        pipe.execute()
        commit = self._put_done(config, checkpoint, mapping)
        if commit is not None:
            self._commit(commit)
        return self._next_config(config, checkpoint)

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        assert self.client is not None
        mapping = self._hold(config, writes, task_id)
        if mapping is None:
            pipe = self.client.pipeline(transaction=False)
            self._stage_held(pipe, config)
            mapping = self._stage_writes(pipe, config, writes, task_id)
            pipe.execute()
        commit = self._writes_done(config, writes, mapping)
        if commit is not None:
            self._commit(commit)

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        assert self.client is not None and self._latest is not None
        if self._holds(config):  # a read sees every write before it
            pipe = self.client.pipeline(transaction=False)
            self._stage_held(pipe, config)
            pipe.execute()
        key = self._key(config)
        cid = get_checkpoint_id(config)
        if not cid:
            return self._latest_tuple(config, self._latest(keys=[key]))  # type: ignore[arg-type]
        pipe = self.client.pipeline(transaction=False)
        pipe.hget(key, cid)
        pipe.hgetall(self._writes_key(config, cid))
        raw, writes = pipe.execute()
        return self._tuple(config, raw, writes)

    # --------------------------------------------------------------- async

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        assert self.aclient is not None
        pipe = self.aclient.pipeline(transaction=False)
        self._stage_held(pipe, config)
        mapping = self._stage_put(pipe, config, checkpoint, metadata)
        await pipe.execute()
        commit = self._put_done(config, checkpoint, mapping)
        if commit is not None:
            await self._acommit(commit)
        return self._next_config(config, checkpoint)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        assert self.aclient is not None
        mapping = self._hold(config, writes, task_id)
        if mapping is None:
            pipe = self.aclient.pipeline(transaction=False)
            self._stage_held(pipe, config)
            mapping = self._stage_writes(pipe, config, writes, task_id)
            await pipe.execute()
        commit = self._writes_done(config, writes, mapping)
        if commit is not None:
            await self._acommit(commit)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        assert self.aclient is not None and self._alatest is not None
        if self._holds(config):  # a read sees every write before it
            pipe = self.aclient.pipeline(transaction=False)
            self._stage_held(pipe, config)
            await pipe.execute()
        key = self._key(config)
        cid = get_checkpoint_id(config)
        if not cid:
            return self._latest_tuple(config, await self._alatest(keys=[key]))  # type: ignore[arg-type]
        pipe = self.aclient.pipeline(transaction=False)
        pipe.hget(key, cid)
        pipe.hgetall(self._writes_key(config, cid))
        raw, writes = await pipe.execute()
        return self._tuple(config, raw, writes)


# ------------------------------------------------------------------------ durable floor

# Threads whose rows since their last commit the durable floor keeps (a run that never stops at
# an interrupt commits nothing on the caller's path: its rows are the write-behind's, not the
# floor's); the oldest are dropped past this many.
_BUFFERED_THREADS = 1024


@dataclass
class _Unflushed:
    """A thread's rows since its last commit, the checkpoints it put, and the checkpoint an
    interrupt waits for (its put still on its way)."""

    rows: list[tuple[str, bytes]] = field(default_factory=list)
    put: set[str] = field(default_factory=set)
    awaiting: str | None = None


class DurableFloor(RawRedisFloor):
    """The carried floor (with `carry_writes`, as the benchmark runs it) plus the least Postgres
    work on the caller's path of a checkpointer that makes an interrupt durable before `invoke`
    returns and never takes a thread Redis does not hold for a new one:

    - a read of the latest checkpoint that Redis does not have: one indexed Postgres lookup
      (does Postgres hold the thread?), one round trip;
    - a write of an interrupt: one autocommit statement inserting the serialized bytes of the
      thread's checkpoints and writes not yet committed, one round trip and one commit.

    No JSONB copy, no row-level security, no outbox, no locks. It restores nothing from Postgres
    (a lookup that finds the thread raises): a lower bound for the benchmark, not a saver."""

    def __init__(self, *, table: str, conn: Any = None, aconn: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.table = table  # schema-qualified and quoted
        self.conn = conn
        self.aconn = aconn
        self._threads: OrderedDict[str, _Unflushed] = OrderedDict()

    @staticmethod
    def setup_sql(table: str) -> list[str]:
        """The table (no key but the lookup's index: a row is the bytes, not a record to update)."""
        return [
            f"CREATE TABLE IF NOT EXISTS {table} (thread_id text NOT NULL, row_id text NOT NULL, data bytea NOT NULL)",
            f"CREATE INDEX IF NOT EXISTS durable_floor_thread ON {table} (thread_id)",
        ]

    def _lookup_sql(self) -> str:
        return f"SELECT EXISTS (SELECT 1 FROM {self.table} WHERE thread_id = %s)"

    def _insert_sql(self) -> str:
        return f"INSERT INTO {self.table} (thread_id, row_id, data) SELECT %s, unnest(%s::text[]), unnest(%s::bytea[])"

    def _keep(
        self, config: RunnableConfig, rows: list[tuple[str, bytes]], *, put: str | None = None,
        interrupt: str | None = None,
    ) -> Commit | None:
        """Keep a call's rows; the thread's rows to commit now, if any: at an interrupt whose
        checkpoint was put (LangGraph may write the interrupt while that put is on its way: then
        at that put, so the interrupted checkpoint is always in the commit, still one)."""
        thread = config["configurable"]["thread_id"]
        with self._lock:
            kept = self._threads.pop(thread, None) or _Unflushed()
            self._threads[thread] = kept
            while len(self._threads) > _BUFFERED_THREADS:
                self._threads.popitem(last=False)
            kept.rows += rows
            if put is not None:
                kept.put.add(put)
            if interrupt is not None and interrupt not in kept.put:
                kept.awaiting = interrupt
                return None
            if interrupt is None and (put is None or put != kept.awaiting):
                return None
            kept.awaiting = None
            commit, kept.rows = kept.rows, []
        return thread, [r for r, _ in commit], [d for _, d in commit]

    @staticmethod
    def _writes_rows(mapping: dict[FieldT, EncodableT], checkpoint_id: str) -> list[tuple[str, bytes]]:
        return [(f"{checkpoint_id}:{field!s}", value) for field, value in mapping.items()]  # type: ignore[misc]

    @staticmethod
    def _found(config: RunnableConfig) -> None:
        raise NotImplementedError(
            f"thread {config['configurable']['thread_id']!r} is in Postgres but not in Redis: "
            "the durable floor restores nothing"
        )

    def _put_done(self, config: RunnableConfig, checkpoint: Checkpoint, mapping: dict[FieldT, EncodableT]) -> Commit | None:
        rows = [(checkpoint["id"], mapping[checkpoint["id"]])]
        return self._keep(config, rows, put=checkpoint["id"])  # type: ignore[arg-type]

    def _writes_done(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], mapping: dict[FieldT, EncodableT]
    ) -> Commit | None:
        checkpoint_id = config["configurable"]["checkpoint_id"]
        interrupt = checkpoint_id if any(channel == INTERRUPT for channel, _ in writes) else None
        return self._keep(config, self._writes_rows(mapping, checkpoint_id), interrupt=interrupt)

    def _commit(self, commit: Commit) -> None:
        assert self.conn is not None
        self.conn.execute(self._insert_sql(), commit)

    async def _acommit(self, commit: Commit) -> None:
        assert self.aconn is not None
        await self.aconn.execute(self._insert_sql(), commit)

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        assert self.conn is not None
        found = super().get_tuple(config)
        if found is None and not get_checkpoint_id(config):
            (exists,) = self.conn.execute(self._lookup_sql(), (config["configurable"]["thread_id"],)).fetchone()
            if exists:
                self._found(config)
        return found

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        assert self.aconn is not None
        found = await super().aget_tuple(config)
        if found is None and not get_checkpoint_id(config):
            cur = await self.aconn.execute(self._lookup_sql(), (config["configurable"]["thread_id"],))
            (exists,) = await cur.fetchone()
            if exists:
                self._found(config)
        return found
