"""Per-thread run locks with fencing tokens, as sans-I/O operations plus one holder class.

A lock is `SET key token NX PX ttl`; taking it also issues a fencing token that only grows.
While a process holds the lock, every hot-path write of that thread carries the token and the
write script rejects it if a newer token was issued since (`StaleLockError`): a holder that was
paused past its TTL (GC pause, SIGSTOP) and lost the lock can no longer write. Writers without a
token are refused while anyone holds the lock (`ThreadLockedError`), so two processes resuming
one thread never interleave. Release is compare-and-delete; renewal extends only our own lock.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from langgraph_tiered_saver._sansio.io import Op, RedisCall
from langgraph_tiered_saver._sansio.polling import poll_op
from langgraph_tiered_saver._sansio.schedule import Scheduler
from langgraph_tiered_saver.errors import ThreadLockedError
from langgraph_tiered_saver.hot import keys as K
from langgraph_tiered_saver.hot import scripts
from langgraph_tiered_saver.records.codec import as_str
from langgraph_tiered_saver.records.ids import ThreadRef

logger = logging.getLogger("langgraph_tiered_saver.locks")
POLL_SECONDS = 0.05
KEEPER_MAX_SLEEP = 1.0  # the lock keeper looks at its locks at least this often
T = TypeVar("T")


class Runner(Protocol):
    """What runs an op for a lock: the saver's sync and async drivers."""

    def run_op(self, op: Op[T]) -> T: ...

    async def arun_op(self, op: Op[T]) -> T: ...

    def observed(self, name: str, op: Op[T], ref: ThreadRef) -> Op[T]:
        """`op` timed and traced as `name` (see `telemetry`): lock waits and refusals show."""
        ...


class Fences:
    """The fencing tokens of the thread locks this process holds: hot-path writes of a locked
    thread carry its token (see module docstring)."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str], str] = {}

    def __bool__(self) -> bool:
        return bool(self._tokens)

    def of(self, ref: ThreadRef) -> str:
        """The token of the lock held on the thread, "" if none."""
        return self._tokens.get((ref.tenant_id, ref.thread_id), "")

    def hold(self, handle: LockHandle) -> None:
        self._tokens[(handle.tenant_id, handle.thread_id)] = handle.fence

    def drop(self, handle: LockHandle) -> None:
        key = (handle.tenant_id, handle.thread_id)
        if self._tokens.get(key) == handle.fence:  # not a newer holder's token
            self._tokens.pop(key, None)


@dataclass(frozen=True)
class LockHandle:
    tenant_id: str
    thread_id: str
    token: str
    fence: str
    ttl_ms: int


def new_token() -> str:
    """A lock token from the OS' randomness: a library must not draw from (or shift) the
    application's own random sequence (uuid4, random)."""
    return secrets.token_hex(16)


class LockOps:
    def __init__(self, key_prefix: str, thread_ttl_ms: int, scheduler: Scheduler) -> None:
        self.prefix = key_prefix
        self.thread_ttl_ms = thread_ttl_ms
        self.keeper = LockKeeper(scheduler)

    def _keys(self, ref: ThreadRef) -> dict[str, str]:
        return {
            "lock": K.lock_key(self.prefix, ref.tenant_id, ref.thread_id),
            "meta": K.thread_keys(self.prefix, ref.tenant_id, ref.thread_id).meta,
        }

    def acquire_op(self, ref: ThreadRef, ttl_ms: int, *, wait: bool, wait_timeout: float | None) -> Op[LockHandle]:
        token = new_token()

        def attempt() -> Op[LockHandle | None]:
            (fence,) = yield RedisCall(
                (scripts.LOCK_ACQUIRE.call(self._keys(ref), {"token": token, "ttl_ms": ttl_ms, "thread_ttl_ms": self.thread_ttl_ms}),),
                scripts=(scripts.LOCK_ACQUIRE,),
            )
            return LockHandle(ref.tenant_id, ref.thread_id, token, as_str(fence), ttl_ms) if fence else None

        handle = yield from poll_op(attempt, timeout=wait_timeout if wait else 0, longest=POLL_SECONDS)
        if handle is None:
            raise ThreadLockedError(f"thread {ref.thread_id!r} (tenant {ref.tenant_id!r}) is locked by another holder")
        return handle

    def renew_op(self, handle: LockHandle) -> Op[bool]:
        key = K.lock_key(self.prefix, handle.tenant_id, handle.thread_id)
        (ok,) = yield RedisCall(
            (scripts.LOCK_RENEW.call({"lock": key}, {"token": handle.token, "ttl_ms": handle.ttl_ms}),), scripts=(scripts.LOCK_RENEW,)
        )
        return bool(ok)

    def release_op(self, handle: LockHandle) -> Op[bool]:
        key = K.lock_key(self.prefix, handle.tenant_id, handle.thread_id)
        (ok,) = yield RedisCall(
            (scripts.LOCK_RELEASE.call({"lock": key}, {"token": handle.token}),), scripts=(scripts.LOCK_RELEASE,)
        )
        return bool(ok)


class LockKeeper:
    """The job on the saver's scheduler that keeps every lock the saver holds: renews each one
    that no write renewed within a third of its TTL (run locks are renewed by their own writes),
    and lets go of a run lock idle past its `idle` limit. One job for all locks, never a thread
    per lock; it runs when the lock due first is due, at least every `KEEPER_MAX_SLEEP`."""

    def __init__(self, scheduler: Scheduler) -> None:
        self._locks: set[ThreadLock] = set()
        self._guard = threading.Lock()
        self.clock = scheduler.clock
        self._job = scheduler.job("lock-keeper", self._turn)

    def add(self, lock: ThreadLock) -> None:
        with self._guard:
            self._locks.add(lock)
        self._job.wake(self.clock() + min(lock.ttl_ms / 3000, KEEPER_MAX_SLEEP))

    def remove(self, lock: ThreadLock) -> None:
        with self._guard:
            self._locks.discard(lock)

    def held(self) -> int:
        with self._guard:
            return len(self._locks)

    def _turn(self) -> float | None:
        with self._guard:
            locks = list(self._locks)
        if not locks:
            return None  # idle until the next lock is added
        wait = KEEPER_MAX_SLEEP
        for lock in locks:
            try:
                wait = min(wait, lock.keep())
            except Exception:  # contained: one lock's trouble never stops the others
                logger.exception("lock keeper error (contained; the others are kept)")
        return self.clock() + max(0.01, wait)


class ThreadLock:
    """`with saver.thread_lock(config):` or `async with saver.thread_lock(config):`.

    Renewed every third of its TTL while held, by the saver's lock keeper (one scheduler job
    for all locks, on the sync driver), so long nodes keep it; do not hold it across a human pause —
    release it when the run returns on an interrupt and take it again to resume.

    With `idle` set (the saver's automatic run locks), renewal stops and the lock is released
    once nothing has `touch`ed it for that many seconds: a run whose end went unseen does not
    keep its thread locked forever.

    Acquire and release are ops (`acquire_op`, `release_op`), so the automatic run locks take
    and drop them inside the checkpoint call's own op, on whichever driver runs it.
    """

    def __init__(
        self,
        runner: Runner,
        ops: LockOps,
        fences: Fences,
        ref: ThreadRef,
        ttl: float,
        wait: bool,
        wait_timeout: float | None,
        *,
        idle: float | None = None,
        on_release: Callable[[ThreadLock], None] | None = None,
    ) -> None:
        self.runner = runner
        self.ops = ops
        self.fences = fences
        self.ref = ref
        self.ttl_ms = int(ttl * 1000)
        self.wait = wait
        self.wait_timeout = wait_timeout
        self.idle = idle
        self.on_release = on_release
        self.handle: LockHandle | None = None
        self.lost = False
        self.last_active = self.renewed_at = self.ops.keeper.clock()
        self._released = False
        self._guard = threading.Lock()

    def touch(self, renewed: bool = False) -> None:
        """The holder is still at work: postpone the idle release (`renewed`: a write of the
        holder renewed the lock's TTL too)."""
        self.last_active = self.ops.keeper.clock()
        if renewed:
            self.renewed_at = self.last_active

    def _idle(self) -> bool:
        return self.idle is not None and self.ops.keeper.clock() - self.last_active >= self.idle

    def acquire_op(self) -> Op[LockHandle]:
        handle = yield from self.ops.acquire_op(self.ref, self.ttl_ms, wait=self.wait, wait_timeout=self.wait_timeout)
        self.adopt(handle)
        return handle

    def adopt(self, handle: LockHandle) -> None:
        """The lock is ours (taken here, or by the read that started the run): hold its fence
        and let the keeper renew it."""
        self.handle = handle
        self.last_active = self.renewed_at = self.ops.keeper.clock()
        self.fences.hold(handle)
        self.ops.keeper.add(self)

    def released_by_write(self) -> None:
        """The write that ended the run released the lock in its own script."""
        with self._guard:
            if self._released:
                return
            self._released = True
        self._let_go()

    def _let_go(self) -> None:
        self.ops.keeper.remove(self)
        if self.handle is not None:
            self.fences.drop(self.handle)
        if self.on_release is not None:
            self.on_release(self)

    def release_op(self) -> Op[None]:
        """Stop renewing and compare-and-delete the lock (once, whoever calls first)."""
        with self._guard:
            if self._released:
                return None
            self._released = True
        try:
            if self.handle is not None and not (yield from self.ops.release_op(self.handle)):
                self._lost()
        finally:
            self._let_go()
        return None

    def _fields(self) -> dict[str, str]:
        """Tenant and thread as log fields (see `logs`)."""
        return {"tenant_id": self.ref.tenant_id, "thread_id": self.ref.thread_id}

    def _lost(self) -> None:
        self.lost = True
        logger.warning("lock of thread %r was lost before release (expired and taken?)", self.ref.thread_id, extra=self._fields())

    def keep(self) -> float:
        """The keeper's turn (its thread): release when idle, renew when due. Seconds until
        this lock is due again."""
        handle, third = self.handle, self.ttl_ms / 3000
        if handle is None or self._released:
            return third
        if self._idle():
            logger.info("releasing the lock of idle thread %r", self.ref.thread_id, extra=self._fields())
            try:
                self.release()
            except Exception as exc:  # the lock then expires by its TTL
                logger.warning("releasing the idle lock of thread %r failed: %s", self.ref.thread_id, exc, extra=self._fields())
                self._let_go()
            return third
        due = self.renewed_at + third - self.ops.keeper.clock()
        if due > 0:
            return due
        try:
            renewed = self.runner.run_op(self.ops.renew_op(handle))
        except Exception as exc:  # keep trying: a short Redis blip must not drop the lock
            logger.warning("lock renewal failed: %s", exc, extra=self._fields())
            return min(third, 1.0)
        if not renewed and not self._released:  # not merely released meanwhile
            self._lost()  # its fence stays: the holder's next write is refused as stale
            self.ops.keeper.remove(self)
            return third
        self.renewed_at = self.ops.keeper.clock()
        return third

    def release(self) -> None:
        self.runner.run_op(self.release_op())

    async def arelease(self) -> None:
        await self.runner.arun_op(self.release_op())

    def __enter__(self) -> LockHandle:
        return self.runner.run_op(self.runner.observed("lock", self.acquire_op(), self.ref))

    def __exit__(self, *exc: Any) -> None:
        self.release()

    async def __aenter__(self) -> LockHandle:
        return await self.runner.arun_op(self.runner.observed("lock", self.acquire_op(), self.ref))

    async def __aexit__(self, *exc: Any) -> None:
        await self.arelease()
