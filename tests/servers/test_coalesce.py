"""Concurrent commands of one event loop in one pipeline (_sansio/coalesce.py), on a real Redis:
fewer round trips under concurrency, and each command's reply, error or cancellation its own."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import redis.asyncio
import redis.exceptions

from langgraph_tiered_saver._sansio.coalesce import Coalescer
from langgraph_tiered_saver._sansio.io import AsyncDriver, RedisCall
from langgraph_tiered_saver.errors import TierUnavailableError
from tests.helpers import TEST_TENANT


class CountingClient:
    """A real asyncio client that counts what it sends: single commands and pipelines."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.client = client
        self.singles = 0
        self.pipelines: list[int] = []  # commands in each

    async def execute_command(self, *args: Any) -> Any:
        self.singles += 1
        return await self.client.execute_command(*args)

    def pipeline(self, transaction: bool) -> Any:
        assert transaction is False  # each command succeeds or fails alone
        pipe = self.client.pipeline(transaction=False)
        execute = pipe.execute

        async def counted(raise_on_error: bool = True) -> Any:
            self.pipelines.append(len(pipe.command_stack))
            return await execute(raise_on_error=raise_on_error)

        pipe.execute = counted  # type: ignore[method-assign]
        return pipe


async def test_concurrent_commands_share_round_trips_and_each_gets_its_own_reply(redis_url: str, key_prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    counting = CountingClient(client)
    coalescer = Coalescer(counting)
    try:
        replies = await asyncio.gather(*(coalescer.execute(("INCRBY", f"{key_prefix}:n{i}", i + 1)) for i in range(64)))
        stored = await client.mget([f"{key_prefix}:n{i}" for i in range(64)])
    finally:
        await client.aclose()
    # one command went alone (nothing was in flight), the 63 others in pipelines
    assert counting.singles == 1 and sum(counting.pipelines) == 63
    assert len(counting.pipelines) < 63
    # every reply is its own command's, and every command ran once
    assert replies == list(range(1, 65)) == [int(v or 0) for v in stored]


async def test_a_lone_command_goes_at_once_without_a_pipeline(redis_url: str, key_prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    counting = CountingClient(client)
    coalescer = Coalescer(counting)
    try:
        for i in range(3):
            assert await coalescer.execute(("SET", f"{key_prefix}:k", i)) is True
    finally:
        await client.aclose()
    assert (counting.singles, counting.pipelines) == (3, [])


async def test_a_command_redis_refuses_fails_alone(redis_url: str, key_prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    await client.set(f"{key_prefix}:text", "not a number")
    coalescer = Coalescer(CountingClient(client))
    try:
        outcomes = await asyncio.gather(
            *(coalescer.execute(("INCR", f"{key_prefix}:{'text' if i == 7 else f'n{i}'}")) for i in range(12)),
            return_exceptions=True,
        )
    finally:
        await client.aclose()
    assert isinstance(outcomes[7], redis.exceptions.ResponseError)
    assert [o for i, o in enumerate(outcomes) if i != 7] == [1] * 11


async def test_a_cancelled_waiter_leaves_the_others_their_replies(redis_url: str, key_prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    counting = CountingClient(client)
    coalescer = Coalescer(counting)
    try:
        tasks = [asyncio.create_task(coalescer.execute(("INCR", f"{key_prefix}:n{i}"))) for i in range(8)]
        await asyncio.sleep(0)  # the first is in flight, the others wait for the next turn
        tasks[3].cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        unsent = await client.exists(f"{key_prefix}:n3")
    finally:
        await client.aclose()
    assert isinstance(outcomes[3], asyncio.CancelledError)
    assert [o for i, o in enumerate(outcomes) if i != 3] == [1] * 7
    assert unsent == 0  # cancelled before it went: never sent


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_failed_connection_fails_every_waiting_command_each_with_its_own_error() -> None:
    client = redis.asyncio.Redis(host="127.0.0.1", port=_closed_port(), socket_connect_timeout=1)
    coalescer = Coalescer(CountingClient(client))
    try:
        outcomes = await asyncio.gather(*(coalescer.execute(("PING",)) for _ in range(6)), return_exceptions=True)
    finally:
        await client.aclose()
    assert all(isinstance(o, redis.exceptions.ConnectionError) for o in outcomes)
    assert len({id(o) for o in outcomes}) == 6  # raised in six tasks: six objects, six tracebacks


async def test_the_async_driver_coalesces_and_still_types_a_lost_server(redis_url: str, key_prefix: str) -> None:
    """Through the driver every op uses: concurrent calls coalesce; a server that cannot be
    reached is a TierUnavailableError for each caller, as without coalescing."""
    client = redis.asyncio.Redis.from_url(redis_url)
    driver = AsyncDriver(client, None)
    assert driver.coalescer is not None
    counting = CountingClient(client)
    driver.coalescer.client = counting

    def op(i: int) -> Any:
        (reply,) = yield RedisCall((("INCRBY", f"{key_prefix}:{TEST_TENANT}", i),))
        return reply

    try:
        replies = await asyncio.gather(*(driver.run(op(i)) for i in range(20)))
        assert sorted(replies)[-1] == sum(range(20)) and counting.pipelines
    finally:
        await client.aclose()
    lost = redis.asyncio.Redis(host="127.0.0.1", port=_closed_port(), socket_connect_timeout=1)
    driver = AsyncDriver(lost, None)
    try:
        outcomes = await asyncio.gather(*(driver.run(op(i)) for i in range(5)), return_exceptions=True)
    finally:
        await lost.aclose()
    assert all(isinstance(o, TierUnavailableError) for o in outcomes)


async def test_a_cluster_client_is_not_coalesced() -> None:
    """A pipeline's commands may belong to other nodes of a cluster: its driver sends each alone.
    (The client connects on first use: none is made here.)"""
    client = redis.asyncio.RedisCluster(host="127.0.0.1", port=_closed_port())
    assert AsyncDriver(client, None).coalescer is None
