"""The benchmark's raw Redis floor (`benchmarks/floor.py`) answers `get_tuple` as a checkpointer
must: with the checkpoint's pending writes, by id and latest, sync and async. A floor that left
them out would be below what any saver LangGraph can resume from has to do. Its durable floor
does the Postgres work it stands for."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
import redis
import redis.asyncio
from langchain_core.runnables import RunnableConfig

from benchmarks.data import checkpoint_chain, task_writes
from benchmarks.floor import DurableFloor, RawRedisFloor
from benchmarks.graph import build_case_graph


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


def _durable_floor_rows(conn: psycopg.Connection[Any], table: str, thread: str) -> list[str]:
    return [row for (row,) in conn.execute(f"SELECT row_id FROM {table} WHERE thread_id = %s", (thread,))]


def test_the_durable_floor_commits_an_interrupt_before_invoke_returns(
    redis_url: str, test_database_url: str, key_prefix: str
) -> None:
    """The durable floor's graph run does what it stands for: the interrupted run's checkpoints
    and its interrupt are in Postgres when `invoke` returns (one statement), the run resumes
    from Redis, a new thread's first read asks Postgres, and a thread Postgres holds but Redis
    does not is never taken for a new one (sync and async)."""
    schema = f"floor_{key_prefix.replace('-', '_').replace(':', '_')}"[:60]
    table = f'"{schema}".durable_floor'
    client, aclient = redis.Redis.from_url(redis_url), redis.asyncio.Redis.from_url(redis_url)
    with psycopg.connect(test_database_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        try:
            for statement in DurableFloor.setup_sql(table):
                conn.execute(statement)
            floor = DurableFloor(client=client, conn=conn, table=table, prefix=key_prefix, carry_writes=True)
            case = build_case_graph(floor)
            assert case.resume is not None, "examples.case_8842 is importable in the tests"
            config = RunnableConfig(configurable={"thread_id": "floor-case", "checkpoint_ns": ""})
            out = case.graph.invoke(case.make_input(), config)
            assert "__interrupt__" in out
            rows = _durable_floor_rows(conn, table, "floor-case")
            latest = floor.get_tuple(config)
            assert latest is not None
            assert latest.checkpoint["id"] in rows  # the interrupted checkpoint is in Postgres
            assert any(row.startswith(latest.checkpoint["id"] + ":") for row in rows)  # and its interrupt
            done = case.graph.invoke(case.resume(), config)
            assert "__interrupt__" not in done

            # an interrupt written while its checkpoint's put is on its way: committed with that put
            early = RunnableConfig(configurable={"thread_id": "floor-early", "checkpoint_ns": ""})
            (args,) = checkpoint_chain(floor, 1)
            pending = RunnableConfig(configurable={**early["configurable"], "checkpoint_id": args.checkpoint["id"]})
            floor.put_writes(pending, [("__interrupt__", "approve?")], "task-1")
            assert _durable_floor_rows(conn, table, "floor-early") == []
            floor.put(early, args.checkpoint, args.metadata, args.new_versions)
            assert sorted(_durable_floor_rows(conn, table, "floor-early")) == sorted(
                [args.checkpoint["id"], f"{args.checkpoint['id']}:task-1:00000000"]
            )

            client.delete(f"{key_prefix}:{{floor-case}}")  # Redis lost the thread: never "new"
            with pytest.raises(NotImplementedError, match="restores nothing"):
                floor.get_tuple(config)

            async def run_async() -> None:
                async with await psycopg.AsyncConnection.connect(test_database_url, autocommit=True) as aconn:
                    afloor = DurableFloor(aclient=aclient, aconn=aconn, table=table, prefix=key_prefix, carry_writes=True)
                    acase = build_case_graph(afloor)
                    aconfig = RunnableConfig(configurable={"thread_id": "floor-case-async", "checkpoint_ns": ""})
                    assert await afloor.aget_tuple(aconfig) is None  # new everywhere
                    out = await acase.graph.ainvoke(acase.make_input(), aconfig)
                    assert "__interrupt__" in out
                    assert _durable_floor_rows(conn, table, "floor-case-async")
                    assert "__interrupt__" not in await acase.graph.ainvoke(acase.resume(), aconfig)  # type: ignore[misc]
                await aclient.aclose()

            asyncio.run(run_async())
        finally:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
            client.close()


def test_the_carried_floor_sends_a_steps_writes_with_the_next_put(redis_url: str, key_prefix: str) -> None:
    """Carried writes reach Redis in the round trip of the put that closes their step (none of
    their own); an interrupt goes at once, with what waits; a read first sends what waits; and
    case_8842 runs on it, sync and async, as on the raw floor."""
    client, aclient = redis.Redis.from_url(redis_url), redis.asyncio.Redis.from_url(redis_url)
    floor = RawRedisFloor(client=client, prefix=key_prefix, carry_writes=True)
    try:
        base = RunnableConfig(configurable={"thread_id": "carried", "checkpoint_ns": ""})
        first, second = checkpoint_chain(floor, 2)
        cfg = RunnableConfig(configurable={**base["configurable"], **floor.put(base, first.checkpoint, first.metadata, first.new_versions)["configurable"]})
        writes_key = f"{key_prefix}:{{carried}}:w:{first.checkpoint['id']}"
        floor.put_writes(cfg, [("messages", "hello")], "task-1")
        assert not client.exists(writes_key)  # waits for the put closing the step
        found = floor.get_tuple(cfg)  # a read sends it first
        assert found is not None and found.pending_writes == [("task-1", "messages", "hello")]
        floor.put_writes(cfg, [("messages", "again")], "task-2")
        floor.put(cfg, second.checkpoint, second.metadata, second.new_versions)
        assert client.hlen(writes_key) == 2
        floor.put_writes(cfg, [("__interrupt__", "approve?")], "task-3")
        assert client.hlen(writes_key) == 3  # at once

        case = build_case_graph(floor)
        config = RunnableConfig(configurable={"thread_id": "carried-case", "checkpoint_ns": ""})
        assert "__interrupt__" in case.graph.invoke(case.make_input(), config)
        assert "__interrupt__" not in case.graph.invoke(case.resume(), config)  # type: ignore[misc]

        async def run_async() -> None:
            afloor = RawRedisFloor(aclient=aclient, prefix=key_prefix, carry_writes=True)
            acase = build_case_graph(afloor)
            aconfig = RunnableConfig(configurable={"thread_id": "carried-case-async", "checkpoint_ns": ""})
            assert "__interrupt__" in await acase.graph.ainvoke(acase.make_input(), aconfig)
            assert "__interrupt__" not in await acase.graph.ainvoke(acase.resume(), aconfig)  # type: ignore[misc]
            await aclient.aclose()

        asyncio.run(run_async())
    finally:
        client.close()
