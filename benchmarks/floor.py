"""The raw Redis floor: the least work any Redis-backed checkpointer can do per call.

`put` serializes the checkpoint with the same serializer the savers use, then sends one pipeline
(HSET of the bytes + EXPIRE) — one round trip carrying the same bytes as a put. `put_writes` is the
same for the writes (a hash per checkpoint). `get_tuple` is one round trip (a pipeline of HGET and
HGETALL by id, or a short Lua script for the latest) plus deserialization of the checkpoint and of
its pending writes: a tuple without them is not one LangGraph can resume from, so a floor that
skipped them would be below what any checkpointer can do. It keeps no history, so it only takes
part in the put, put_writes and get_tuple workloads; it is the lower bound, not a usable saver.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    get_checkpoint_id,
)
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


class RawRedisFloor(BaseCheckpointSaver[str]):
    """Serialize + one Redis round trip per call. See the module docstring."""

    def __init__(
        self,
        *,
        client: redis.Redis | None = None,
        aclient: redis.asyncio.Redis | None = None,
        prefix: str,
        ttl_seconds: int = 24 * 3600,
    ) -> None:
        super().__init__()
        self.client = client
        self.aclient = aclient
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds
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

    # ---------------------------------------------------------------- sync

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        assert self.client is not None
        key = self._key(config)
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(key, mapping=self._put_mapping(checkpoint, metadata))
        pipe.expire(key, self.ttl_seconds)
        pipe.execute()
        return self._next_config(config, checkpoint)

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        assert self.client is not None
        key = self._writes_key(config, config["configurable"]["checkpoint_id"])
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(key, mapping=self._writes_mapping(writes, task_id))
        pipe.expire(key, self.ttl_seconds)
        pipe.execute()

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        assert self.client is not None and self._latest is not None
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
        key = self._key(config)
        pipe = self.aclient.pipeline(transaction=False)
        pipe.hset(key, mapping=self._put_mapping(checkpoint, metadata))
        pipe.expire(key, self.ttl_seconds)
        await pipe.execute()
        return self._next_config(config, checkpoint)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        assert self.aclient is not None
        key = self._writes_key(config, config["configurable"]["checkpoint_id"])
        pipe = self.aclient.pipeline(transaction=False)
        pipe.hset(key, mapping=self._writes_mapping(writes, task_id))
        pipe.expire(key, self.ttl_seconds)
        await pipe.execute()

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        assert self.aclient is not None and self._alatest is not None
        key = self._key(config)
        cid = get_checkpoint_id(config)
        if not cid:
            return self._latest_tuple(config, await self._alatest(keys=[key]))  # type: ignore[arg-type]
        pipe = self.aclient.pipeline(transaction=False)
        pipe.hget(key, cid)
        pipe.hgetall(self._writes_key(config, cid))
        raw, writes = await pipe.execute()
        return self._tuple(config, raw, writes)
