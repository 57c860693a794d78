"""Per-thread run locks with fencing tokens, as sans-I/O operations plus one holder class.

A lock is `SET key token NX PX ttl`; taking it also issues a fencing token that only grows.
While a process holds the lock, every hot-path write of that thread carries the token and the
write script rejects it if a newer token was issued since (`StaleLockError`): a holder that was
paused past its TTL (GC pause, SIGSTOP) and lost the lock can no longer write. Writers without a
token are refused while anyone holds the lock (`ThreadLockedError`), so two processes resuming
one thread never interleave. Release is compare-and-delete; renewal extends only our own lock.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import keys as K
from . import scripts
from ._io import Op, RedisCall
from .codec import as_str
from .errors import ThreadLockedError
from .ids import ThreadRef
from .polling import poll

if TYPE_CHECKING:
    from .saver import TieredSaver

logger = logging.getLogger("langgraph_tiered_saver.locks")
POLL_SECONDS = 0.05


@dataclass(frozen=True)
class LockHandle:
    tenant_id: str
    thread_id: str
    token: str
    fence: str
    ttl_ms: int


class LockOps:
    def __init__(self, key_prefix: str, thread_ttl_ms: int) -> None:
        self.prefix = key_prefix
        self.thread_ttl_ms = thread_ttl_ms

    def _keys(self, ref: ThreadRef) -> list[str]:
        return [
            K.lock_key(self.prefix, ref.tenant_id, ref.thread_id),
            K.thread_keys(self.prefix, ref.tenant_id, ref.thread_id).meta,
        ]

    def acquire(self, ref: ThreadRef, ttl_ms: int, *, wait: bool, wait_timeout: float | None) -> Op[LockHandle]:
        token = uuid.uuid4().hex

        def attempt() -> Op[LockHandle | None]:
            (fence,) = yield RedisCall(
                (scripts.LOCK_ACQUIRE.call(self._keys(ref), [token, ttl_ms, self.thread_ttl_ms]),),
                scripts=(scripts.LOCK_ACQUIRE,),
            )
            return LockHandle(ref.tenant_id, ref.thread_id, token, as_str(fence), ttl_ms) if fence else None

        handle = yield from poll(attempt, timeout=wait_timeout if wait else 0, longest=POLL_SECONDS)
        if handle is None:
            raise ThreadLockedError(f"thread {ref.thread_id!r} (tenant {ref.tenant_id!r}) is locked by another holder")
        return handle

    def renew(self, handle: LockHandle) -> Op[bool]:
        key = K.lock_key(self.prefix, handle.tenant_id, handle.thread_id)
        (ok,) = yield RedisCall(
            (scripts.LOCK_RENEW.call([key], [handle.token, handle.ttl_ms]),), scripts=(scripts.LOCK_RENEW,)
        )
        return bool(ok)

    def release(self, handle: LockHandle) -> Op[bool]:
        key = K.lock_key(self.prefix, handle.tenant_id, handle.thread_id)
        (ok,) = yield RedisCall(
            (scripts.LOCK_RELEASE.call([key], [handle.token]),), scripts=(scripts.LOCK_RELEASE,)
        )
        return bool(ok)


class ThreadLock:
    """`with saver.thread_lock(config):` or `async with saver.thread_lock(config):`.

    Renews itself every third of its TTL while held (a thread for sync, a task for async), so
    long nodes keep it; do not hold it across a human pause — release it when the run
    returns on an interrupt and take it again to resume.

    With `idle` set (the saver's automatic run locks), renewal stops and the lock is released
    once nothing has `touch`ed it for that many seconds: a run whose end went unseen does not
    keep its thread locked forever.
    """

    def __init__(
        self,
        saver: TieredSaver,
        ref: ThreadRef,
        ttl: float,
        wait: bool,
        wait_timeout: float | None,
        *,
        idle: float | None = None,
        on_release: Callable[[ThreadLock], None] | None = None,
    ) -> None:
        self.saver = saver
        self.ref = ref
        self.ttl_ms = int(ttl * 1000)
        self.wait = wait
        self.wait_timeout = wait_timeout
        self.idle = idle
        self.on_release = on_release
        self.handle: LockHandle | None = None
        self.lost = False
        self.last_active = time.monotonic()
        self._released = False
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._task: asyncio.Task[Any] | None = None

    @property
    def _ops(self) -> LockOps:
        return self.saver._locks

    def touch(self) -> None:
        """The holder is still at work: postpone the idle release."""
        self.last_active = time.monotonic()

    def _idle(self) -> bool:
        return self.idle is not None and time.monotonic() - self.last_active >= self.idle

    def _held(self, handle: LockHandle) -> None:
        self.handle = handle
        self.last_active = time.monotonic()
        self.saver._fences[(handle.tenant_id, handle.thread_id)] = handle.fence

    def _claim_release(self) -> bool:
        """True for the one caller that gets to release (end of run, idle renewer or `with`)."""
        with self._guard:
            if self._released:
                return False
            self._released = True
            return True

    def _dropped(self) -> None:
        handle = self.handle
        if handle is not None:
            key = (handle.tenant_id, handle.thread_id)
            if self.saver._fences.get(key) == handle.fence:  # not a newer holder's token
                self.saver._fences.pop(key, None)
        if self.on_release is not None:
            self.on_release(self)

    def _lost(self) -> None:
        self.lost = True
        logger.warning("lock of thread %r was lost before release (expired and taken?)", self.ref.thread_id)

    # sync
    def __enter__(self) -> LockHandle:
        self._held(self.saver._run(self._ops.acquire(self.ref, self.ttl_ms, wait=self.wait, wait_timeout=self.wait_timeout)))
        self._renewer = threading.Thread(target=self._renew_loop, daemon=True, name="tiered-saver-lock")
        self._renewer.start()
        assert self.handle is not None
        return self.handle

    def _renew_loop(self) -> None:
        assert self.handle is not None
        while not self._stop.wait(self.ttl_ms / 3000):
            if self._idle():
                logger.info("releasing the lock of idle thread %r", self.ref.thread_id)
                try:
                    self.release()
                except Exception as exc:  # the lock then expires by its TTL; the loop ends either way
                    logger.warning("releasing the idle lock of thread %r failed: %s", self.ref.thread_id, exc)
                return
            try:
                if not self.saver._run(self._ops.renew(self.handle)):
                    self._lost()
                    return
            except Exception as exc:  # keep trying: a short Redis blip must not drop the lock
                logger.warning("lock renewal failed: %s", exc)

    def release(self) -> None:
        """Stop renewing and compare-and-delete the lock (once, whoever calls first)."""
        if not self._claim_release():
            return
        self._stop.set()
        if self._renewer is not None and self._renewer is not threading.current_thread():
            self._renewer.join()
        try:
            if self.handle is not None and not self.saver._run(self._ops.release(self.handle)):
                self._lost()
        finally:
            self._dropped()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    # async
    async def __aenter__(self) -> LockHandle:
        self._held(await self.saver._arun(self._ops.acquire(self.ref, self.ttl_ms, wait=self.wait, wait_timeout=self.wait_timeout)))
        self._task = asyncio.create_task(self._arenew_loop())
        assert self.handle is not None
        return self.handle

    async def _arenew_loop(self) -> None:
        assert self.handle is not None
        while True:
            await asyncio.sleep(self.ttl_ms / 3000)
            if self._idle():
                logger.info("releasing the lock of idle thread %r", self.ref.thread_id)
                await self._arelease(from_renewer=True)
                return
            try:
                if not await self.saver._arun(self._ops.renew(self.handle)):
                    self._lost()
                    return
            except Exception as exc:
                logger.warning("lock renewal failed: %s", exc)

    async def arelease(self) -> None:
        await self._arelease(from_renewer=False)

    async def _arelease(self, *, from_renewer: bool) -> None:
        if not self._claim_release():
            return
        self._stop.set()  # a lock taken with `with` and released from async code
        if self._task is not None and not from_renewer:
            self._task.cancel()
        try:
            if self.handle is not None and not await self.saver._arun(self._ops.release(self.handle)):
                self._lost()
        finally:
            self._dropped()

    async def __aexit__(self, *exc: Any) -> None:
        await self.arelease()
