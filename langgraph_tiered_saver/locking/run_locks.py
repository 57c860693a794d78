"""Automatic per-run thread locks (`TieredSaver(auto_lock=...)`): the saver takes the thread's
lock when a graph run starts and releases it when the run ends, so concurrent resumers of one
thread are serialised without `with saver.thread_lock(...)` around every `invoke`.

A checkpointer does not see a run's boundaries, only its calls; they are inferred from them:

- start: the Pregel loop's first `get_tuple` of the root graph (its config carries the run's
  runtime object; `get_state`, `update_state` and subgraph loads do not take the lock);
- end: a root checkpoint after which no node is triggered (no `branch:to:`/`join:` channel,
  `__start__` or `__pregel_tasks` among its `updated_channels`), or an `interrupt()` or error
  write of the root graph;
- otherwise (static `interrupt_before`/`interrupt_after`, an exception that LangGraph does not
  record as a write, a custom Pregel graph triggered by plain channels): when the run has made
  no checkpoint call for `idle` seconds, at `saver.release_run_lock(config)`, or when a new run of
  the thread starts in this process after the run's asyncio task is done (cancelled, as a server
  does on rollback) or from the same caller (OS thread and task: one runs one loop at a time):
  it takes the lock over.

The inference lives in the plain functions below; `RunLocks` keeps the held locks.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langgraph_tiered_saver._options import seconds
from langgraph_tiered_saver._sansio.io import Op
from langgraph_tiered_saver._sansio.polling import poll_op
from langgraph_tiered_saver.errors import ConfigError, ThreadLockedError
from langgraph_tiered_saver.hot.ops import Fetched, LockRequest, WriteLock
from langgraph_tiered_saver.locking.locks import (
    POLL_SECONDS,
    Fences,
    LockHandle,
    LockOps,
    Runner,
    ThreadLock,
    new_token,
)
from langgraph_tiered_saver.observability.logs import fields
from langgraph_tiered_saver.records.ids import ThreadRef

logger = logging.getLogger("langgraph_tiered_saver.runlock")

# LangGraph's CONFIG_KEY_RUNTIME: present in the configurable of the calls a running loop makes.
RUNTIME_KEY = "__pregel_runtime"
TRIGGER_PREFIXES = ("branch:to:", "join:")
TRIGGER_CHANNELS = frozenset({"__start__", "__pregel_tasks"})
RUN_ENDING_WRITES = frozenset({"__interrupt__", "__error__"})


@dataclass(frozen=True)
class AutoLock:
    """How automatic run locks behave.

    ttl: lock TTL in seconds, renewed every third of it while the run is active.
    wait: seconds a starting run waits for another holder (None: forever, 0: fail at once
        with `ThreadLockedError`).
    idle: seconds without a checkpoint call after which a run whose end went unseen lets go.
        Set it above your longest node: a node that outlasts it loses the lock (its later
        writes still pass unless another run took the thread, which then gets a typed error).
    """

    ttl: float = 30.0
    wait: float | None = 30.0
    idle: float = 120.0

    def __post_init__(self) -> None:
        seconds("AutoLock.ttl", self.ttl, inclusive=False)
        seconds("AutoLock.idle", self.idle, inclusive=False)
        if self.wait is not None:
            seconds("AutoLock.wait", self.wait)


def auto_lock_policy(option: AutoLock | bool | None) -> AutoLock | None:
    if option is None or option is False:
        return None
    if option is True:
        return AutoLock()
    if isinstance(option, AutoLock):
        return option
    raise ConfigError(f"auto_lock must be a bool or an AutoLock, got {option!r}")


def run_marker(config: Mapping[str, Any]) -> object | None:
    """The runtime object of the root graph run making this call, or None (not a run start)."""
    configurable = config.get("configurable") if isinstance(config, Mapping) else None
    if not isinstance(configurable, Mapping):
        return None  # not a run's config: parse_config says what is wrong with it
    if configurable.get("checkpoint_ns"):
        return None  # a subgraph: its root run holds the lock already
    return configurable.get(RUNTIME_KEY)


def in_graph_run(config: Mapping[str, Any]) -> bool:
    """The call comes from a LangGraph run (its loop passes the run's runtime along), not from
    code calling the saver directly."""
    return RUNTIME_KEY in (config.get("configurable") or {})


def run_finished(checkpoint: Mapping[str, Any]) -> bool:
    """True when the checkpoint's last step triggered no further node."""
    updated: Iterable[str] | None = checkpoint.get("updated_channels")
    if updated is None:
        return False  # an older checkpoint format: leave it to the idle release
    return not any(c in TRIGGER_CHANNELS or c.startswith(TRIGGER_PREFIXES) for c in updated)


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running event loop
        return None


class _Held:
    """A run's lock, and who runs the run: its OS thread and asyncio task. One caller runs one
    loop at a time, so a new run from the same caller, or any new run once that task is done
    (finished or cancelled, as a server cancels a run it rolls back) or that thread is gone,
    means the run ended unseen."""

    __slots__ = ("lock", "marker", "task", "thread")

    def __init__(self, lock: ThreadLock, marker: object) -> None:
        self.lock = lock
        self.marker = marker
        self.thread = threading.current_thread()
        task = _current_task()
        self.task = None if task is None else weakref.ref(task)

    def ended(self) -> bool:
        """Whether the run that took the lock can no longer be running."""
        if self.task is not None:
            task = self.task()
            if task is None or task.done():
                return True
            return task is _current_task()
        return not self.thread.is_alive() or self.thread is threading.current_thread()


class RunLocks:
    """The automatic locks this saver holds, one per (tenant, thread). They cost the run no
    round trip of their own: the run's first read takes the lock in its script (get.lua), each
    write renews it, and the write that ends the run releases it (write.lua). Only a failed
    call, an idle run or `release_run_lock` releases it with a call of its own."""

    def __init__(self, runner: Runner, ops: LockOps, fences: Fences, policy: AutoLock) -> None:
        self.runner = runner
        self.ops = ops
        self.fences = fences
        self.policy = policy
        self._held: dict[tuple[str, str], _Held] = {}
        self._guard = threading.Lock()

    def _forget(self, lock: ThreadLock) -> None:
        with self._guard:
            key = (lock.ref.tenant_id, lock.ref.thread_id)
            held = self._held.get(key)
            if held is not None and held.lock is lock:
                del self._held[key]

    def held(self, ref: ThreadRef) -> ThreadLock | None:
        entry = self._held.get((ref.tenant_id, ref.thread_id))
        return None if entry is None else entry.lock

    def request(self, ref: ThreadRef, marker: object) -> LockRequest | None:
        """The lock a root run's first read takes; None when this run holds it already (a
        second load by the same loop) or the process holds the thread with `thread_lock`."""
        held = self._held.get((ref.tenant_id, ref.thread_id))
        if held is not None and held.marker is marker:
            return None
        if held is not None and held.ended():
            # the earlier run ended unseen (a static interrupt_before/after, a cancelled task):
            # the new run takes its lock over
            held.marker = marker
            held.thread = threading.current_thread()
            task = _current_task()
            held.task = None if task is None else weakref.ref(task)
            held.lock.touch()
            return None
        if held is None and self.fences.of(ref):
            return None
        return LockRequest(new_token(), int(self.policy.ttl * 1000))

    def begin_op(
        self, ref: ThreadRef, marker: object, request: LockRequest, read: Callable[[LockRequest], Op[Fetched]]
    ) -> Op[Fetched]:
        """Run the read that takes the lock, again while another run holds it (up to the
        policy's `wait`), then hold it: `ThreadLockedError` when it never came free."""

        def attempt() -> Op[Fetched | None]:
            found = yield from read(request)
            return None if found.status == "locked" else found

        p = self.policy
        found = yield from poll_op(attempt, timeout=p.wait, longest=POLL_SECONDS)
        if found is None:
            raise ThreadLockedError(f"thread {ref.thread_id!r} (tenant {ref.tenant_id!r}) is locked by another run")
        lock = ThreadLock(
            self.runner, self.ops, self.fences, ref, p.ttl, wait=p.wait != 0, wait_timeout=p.wait,
            idle=p.idle, on_release=self._forget,
        )
        with self._guard:
            self._held[(ref.tenant_id, ref.thread_id)] = _Held(lock, marker)
        lock.adopt(LockHandle(ref.tenant_id, ref.thread_id, request.token, found.fence, request.ttl_ms))
        return found

    def write_lock(
        self, ref: ThreadRef, *, checkpoint: Mapping[str, Any] | None = None, writes: Sequence[str] = ()
    ) -> WriteLock:
        """What a write of the thread carries: the held lock's fence, renewed by the write, and
        released by it when it ends the run (a final root checkpoint, an interrupt or error
        write of the root graph). A thread locked by `thread_lock` only gives its fence."""
        lock = self.held(ref)
        if lock is None or lock.handle is None:
            return WriteLock(self.fences.of(ref))
        lock.touch(renewed=True)
        ending = not ref.checkpoint_ns and (
            run_finished(checkpoint) if checkpoint is not None else any(c in RUN_ENDING_WRITES for c in writes)
        )  # fmt: skip
        return WriteLock(lock.handle.fence, lock.ttl_ms, ending)

    def written(self, ref: ThreadRef, lock: WriteLock) -> None:
        """The write carrying `lock` succeeded: if it ended the run, the lock is gone."""
        if lock.release:
            held = self.held(ref)
            if held is not None and held.handle is not None and held.handle.fence == lock.fence:
                held.released_by_write()

    def end_op(self, ref: ThreadRef) -> Op[None]:
        """The run ends where its writes cannot say so (a failed call, `release_run_lock`): its
        lock goes, with a call of its own."""
        lock = self.held(ref)
        if lock is not None:
            yield from lock.release_op()
        return None

    def release_all_op(self) -> Op[None]:
        """On close: let go of every run lock still held (runs whose end went unseen)."""
        for entry in list(self._held.values()):
            try:
                yield from entry.lock.release_op()
            except Exception as exc:  # closing must go on; the lock expires with its TTL
                logger.warning("could not release the run lock of %r: %s", entry.lock.ref.thread_id, exc,
                               extra=fields(entry.lock.ref))
        return None
