"""The benchmark's raw Redis floor (`benchmarks/floor.py`) answers `get_tuple` as a checkpointer
must: with the checkpoint's pending writes, by id and latest, sync and async. A floor that left
them out would be below what any saver LangGraph can resume from has to do."""

from __future__ import annotations

import asyncio
from typing import Any

import redis
import redis.asyncio
from langchain_core.runnables import RunnableConfig

from benchmarks.data import checkpoint_chain, task_writes
from benchmarks.floor import RawRedisFloor


def _fill(
    floor: RawRedisFloor, thread: str
) -> list[tuple[RunnableConfig, str, list[tuple[str, Any]]]]:
    base: RunnableConfig = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    cfg, out = base, []
    for i, args in enumerate(checkpoint_chain(floor, 3)):
        returned = floor.put(cfg, args.checkpoint, args.metadata, args.new_versions)
        cfg = RunnableConfig(configurable={**base["configurable"], **returned["configurable"]})
        task_id, writes = task_writes(i)
        floor.put_writes(cfg, writes, task_id)
        out.append((cfg, task_id, writes))
    return out


def _expected(task_id: str, writes: list[tuple[str, Any]]) -> list[tuple[str, str, Any]]:
    return [(task_id, channel, value) for channel, value in writes]


def test_the_floor_returns_pending_writes(redis_url: str, key_prefix: str) -> None:
    client, aclient = redis.Redis.from_url(redis_url), redis.asyncio.Redis.from_url(redis_url)
    floor = RawRedisFloor(client=client, aclient=aclient, prefix=key_prefix)
    try:
        chain = _fill(floor, "floor-thread")
        latest = RunnableConfig(configurable={"thread_id": "floor-thread", "checkpoint_ns": ""})
        first_cfg, first_task, first_writes = chain[0]
        last_cfg, last_task, last_writes = chain[-1]

        by_id = floor.get_tuple(first_cfg)
        assert by_id is not None and by_id.config == first_cfg
        assert by_id.pending_writes == _expected(first_task, first_writes)
        newest = floor.get_tuple(latest)
        assert newest is not None and newest.config == last_cfg
        assert newest.pending_writes == _expected(last_task, last_writes)
        assert floor.get_tuple(RunnableConfig(configurable={"thread_id": "no-such-thread"})) is None

        async def reads() -> None:
            by_id = await floor.aget_tuple(first_cfg)
            assert by_id is not None and by_id.pending_writes == _expected(first_task, first_writes)
            newest = await floor.aget_tuple(latest)
            assert newest is not None and newest.pending_writes == _expected(last_task, last_writes)
            await aclient.aclose()

        asyncio.run(reads())
    finally:
        client.close()
