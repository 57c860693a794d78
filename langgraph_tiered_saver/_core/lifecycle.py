"""How the saver runs its ops over its life: the sync driver, one asyncio driver per event
loop, and the closed state with the calls under way (so `close()` refuses new calls, then waits
for those under way before it drains the outbox)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Generator
from typing import Any, TypeVar

from langgraph_tiered_saver._core.connections import Connections
from langgraph_tiered_saver._sansio.breaker import PgBreaker
from langgraph_tiered_saver._sansio.io import AsyncDriver, Op, SyncDriver
from langgraph_tiered_saver._sansio.pgfaults import PgLimits
from langgraph_tiered_saver.errors import SaverClosedError

logger = logging.getLogger("langgraph_tiered_saver")
T = TypeVar("T")


class Lifecycle:
    """Whether the saver still takes calls, and how many are under way. Closing refuses new
    calls, then waits for those under way: a write that passed the check must be in the outbox
    before the drain at close reads it."""

    CLOSE_WAIT = 10.0  # seconds close() waits for calls under way

    def __init__(self) -> None:
        self.closed = False
        self._busy = 0
        # a plain lock (every call takes it twice), and the last call out wakes close() only
        # once it waits: a Condition's default RLock and notify cost each call ~2 µs
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)

    def enter(self) -> None:
        with self._lock:
            if self.closed:
                raise SaverClosedError(
                    "the saver is closed (close() was called, or its `with` block ended): it takes no more "
                    "calls, so nothing is written that no flusher would carry to Postgres; open a new one"
                )
            self._busy += 1

    def leave(self) -> None:
        with self._lock:
            self._busy -= 1
            if not self._busy and self.closed:
                self._cond.notify_all()

    def close(self) -> bool:
        """Refuse new calls and wait for those under way; False if it was closed already."""
        with self._cond:
            if self.closed:
                return False
            self.closed = True
            if not self._cond.wait_for(lambda: self._busy == 0, self.CLOSE_WAIT):
                logger.warning("closing with %d calls still under way after %.0f s", self._busy, self.CLOSE_WAIT)
            return True


class SetupDone:
    """What `setup()` returns: the migrations already ran, and awaiting it is a no-op, so code
    written for AsyncPostgresSaver (`await checkpointer.setup()`) works unchanged."""

    def __await__(self) -> Generator[Any, None, None]:
        return None
        yield  # a generator: `await` gets None at once


class Runners:
    """The saver's op runners. `run` / `arun` serve callers (refused once closed, counted while
    under way); `run_internal` / `arun_internal` serve the saver's own threads and close()."""

    def __init__(self, conn: Connections, sync: SyncDriver, limits: PgLimits, breaker: PgBreaker) -> None:
        self.conn = conn
        self.sync = sync
        self.limits, self.breaker = limits, breaker
        self.life = Lifecycle()
        self.asyncs: dict[asyncio.AbstractEventLoop, AsyncDriver] = {}

    def run(self, op: Op[T]) -> T:
        self.life.enter()
        try:
            return self.run_internal(op)
        finally:
            self.life.leave()

    def run_internal(self, op: Op[T]) -> T:
        """On the sync driver, its clients built from the async ones if need be."""
        if self.sync.redis is None or (self.conn.durable and self.sync.pg_pool is None):
            self.sync.redis, self.sync.pg_pool = self.conn.sync_side()
        return self.sync.run(op)

    async def arun(self, op: Op[T]) -> T:
        self.life.enter()
        try:
            return await self.arun_internal(op)
        finally:
            self.life.leave()

    async def arun_internal(self, op: Op[T]) -> T:
        """On the running loop's asyncio driver (see `Connections.async_side`); with a sync
        Postgres pool only, its Postgres calls run on that pool in a worker thread."""
        loop = asyncio.get_running_loop()
        aredis, apg = await self.conn.async_side()
        driver = self.asyncs.get(loop)
        if driver is None or driver.redis is not aredis or driver.pg_pool is not apg:
            driver = AsyncDriver(aredis, apg, limits=self.limits, breaker=self.breaker)
            driver.on_scripts_lost = self.sync.on_scripts_lost
            if self.conn.durable and apg is None:
                if self.sync.pg_pool is None:
                    self.sync.redis, self.sync.pg_pool = self.conn.sync_side()
                driver.pg_in_thread = self.sync._pg
            for closed in [other for other in self.asyncs if other.is_closed()]:
                del self.asyncs[closed]
            self.asyncs[loop] = driver
        return await driver.run(op)
