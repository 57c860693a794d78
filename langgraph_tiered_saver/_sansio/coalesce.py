"""Concurrent Redis commands of one event loop, sent in one pipeline.

A command a task sends alone costs a connection checkout, a write, a read and a wake-up of the
loop; with many runs checkpointing at once in one process (an Agent Server), that bookkeeping
is most of the CPU a put costs. `Coalescer` sends a command at once when nothing else is in
flight, so a lone caller pays nothing more; while one is, the commands other tasks issue wait
for the loop's next turn and go together, in one pipeline on one connection. The pipeline has
no MULTI: each command succeeds or fails alone, as it would have alone, and its reply or error
goes to the task that issued it.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Sequence
from typing import Any


class Coalescer:
    """Sends single commands on `client` (a `redis.asyncio.Redis`), coalescing concurrent ones.
    Bound to the loop it was made on (the async driver is per loop)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._in_flight = 0
        self._queued: list[tuple[Sequence[Any], asyncio.Future[Any]]] = []
        self._sending: set[asyncio.Task[None]] = set()  # a task the loop holds only weakly

    async def execute(self, command: Sequence[Any]) -> Any:
        if not self._in_flight:
            self._in_flight += 1
            try:
                return await self.client.execute_command(*command)
            finally:
                self._in_flight -= 1
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        self._queued.append((command, reply))
        if len(self._queued) == 1:
            loop.call_soon(self._send)
        return await reply

    def _send(self) -> None:
        # a command whose task was cancelled before it went is not sent, as it would not have been alone
        batch, self._queued = [(c, reply) for c, reply in self._queued if not reply.done()], []
        if not batch:
            return
        self._in_flight += 1
        task = asyncio.get_running_loop().create_task(self._pipeline(batch))
        self._sending.add(task)
        task.add_done_callback(lambda done: self._sent(done, batch))

    def _sent(self, task: asyncio.Task[None], batch: list[tuple[Sequence[Any], asyncio.Future[Any]]]) -> None:
        """Runs once whatever became of the task, even one cancelled before it started (a loop
        shutting down): no waiter is left hanging."""
        self._sending.discard(task)
        self._in_flight -= 1
        for _, reply in batch:
            if not reply.done():
                reply.cancel()

    async def _pipeline(self, batch: list[tuple[Sequence[Any], asyncio.Future[Any]]]) -> None:
        try:
            pipe = self.client.pipeline(transaction=False)
            for command, _ in batch:
                pipe.execute_command(*command)
            replies = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # the connection failed: every command of it did
            for _, reply in batch:
                if not reply.done():
                    reply.set_exception(_own_copy(exc))
            return
        for (_, reply), outcome in zip(batch, replies, strict=True):
            if reply.done():  # its task was cancelled meanwhile
                continue
            if isinstance(outcome, Exception):
                reply.set_exception(outcome)
            else:
                reply.set_result(outcome)


def _own_copy(exc: Exception) -> Exception:
    """One error object per waiting task: each raises it with a traceback of its own."""
    try:
        twin = copy.copy(exc)
    except Exception:
        return exc
    twin.__cause__, twin.__context__ = exc.__cause__, exc.__context__
    return twin
