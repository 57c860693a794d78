"""Knowing when Redis may answer with older copies than Postgres holds.

Redis answers a read alone only for what it holds and can vouch for; a miss always asks
Postgres. What it holds can still be older than Postgres: a server restarted from an RDB
snapshot or an AOF that lagged, or a failover to a replica that lagged, comes back with copies
from before later turns were flushed. The epoch (sentinel.py) cannot see that: it is in the
snapshot too. What the snapshot cannot carry is the server's run id, which changes with every
start.

So each shard has a generation (`keys.generation_key`) and the deployment (each shard, on a
Cluster) records the run id of the server whose copies are known good (`keys.server_key`).
`server_check.lua` compares the two; when the run id changed, every generation moves. A thread's
copy carries the generation it was last verified under (`vg` in its meta); `get.lua` answers
"unverified" for a copy that lags its shard's generation, and the core then asks Postgres: a
copy as new as Postgres' is marked verified (`verify.lua`), an older one is reported and
dropped, and the thread is read from Postgres. Writes need no check: they add to the thread.

A server demoted to a replica (a failover the client was not told of, e.g. `REPLICAOF` run by
an operator) keeps its run id and its data, serves reads and refuses writes. Writes then go
through to Postgres (`on_redis_error="fallback"`), and Redis' copies of those threads fall
behind, in every process, not only in the one that wrote them. The check reports the role:
while the server is a replica (`HotWatch.replica`), reads answer from whichever tier holds the
newer copy, writing nothing to Redis (core's `_get_tuple_op`, `list_op`); when it takes writes
again, every generation moves, so each thread it holds is checked against Postgres on its next
read, as after a restart.

The check runs before the process' first Redis call, every `check_seconds` in the background,
and at once after a driver saw the server's script cache empty (NOSCRIPT: the server restarted).
The background check is a job on the saver's scheduler (schedule.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from langgraph_tiered_saver._sansio.io import Op, RedisCall
from langgraph_tiered_saver._sansio.schedule import Scheduler
from langgraph_tiered_saver.hot import keys as K
from langgraph_tiered_saver.hot import scripts
from langgraph_tiered_saver.observability.metrics import Metrics
from langgraph_tiered_saver.records.codec import as_str

logger = logging.getLogger("langgraph_tiered_saver")

CHECK_SECONDS = 2.0


@dataclass(eq=False)
class HotWatch:
    """Whether this process has checked the Redis server's identity recently, and the op that
    checks it. Shared by a saver's sync and async calls; no I/O here."""

    prefix: str
    metrics: Metrics
    _: KW_ONLY
    enabled: bool
    cluster: bool = False
    check_seconds: float = CHECK_SECONDS
    _checked: bool = field(default=False, init=False)
    replica: bool = field(default=False, init=False)  # the last check found a replica (see module docstring)
    # this process wrote through to Postgres while Redis refused (core's `_write_through_op`):
    # the generations move once Redis takes writes again, in this process, whatever others saw
    moves_pending: bool = field(default=False, init=False)
    _loop: WatchLoop | None = field(default=None, init=False)

    @property
    def due(self) -> bool:
        return self.enabled and not self._checked

    def server_lost(self) -> None:
        """A driver saw the script cache empty: the server restarted. Check before the next read."""
        self._checked = False

    def ready_op(self) -> Op[None]:
        """Run the check if this process has not yet (its first call) or a restart was seen."""
        if self._loop is not None and not self._loop.started:
            self._loop.ensure_started()
        if self.due:
            yield from self.check_op()
        return None

    def check_op(self) -> Op[bool]:
        """Compare the server's run id with the recorded one; True when the generations moved.
        The generations move before the new run id is recorded: a check cut short between the
        two moves them again next time, never not at all."""
        if self.cluster:  # each shard's keys live on its own node: one check per shard
            groups = [(K.server_key(self.prefix, s), [K.generation_key(self.prefix, s)]) for s in range(K.SHARDS)]
        else:
            groups = [(K.server_key(self.prefix), [K.generation_key(self.prefix, s) for s in range(K.SHARDS)])]
        calls = tuple(scripts.SERVER_CHECK.call({"server": server}, {}) for server, _ in groups)
        # per server: its run id when it changed (else None), and 1 when it is a replica
        replies = [(run_id, bool(int(role))) for run_id, role in (yield RedisCall(calls, scripts=(scripts.SERVER_CHECK,)))]
        replica = any(is_replica for _, is_replica in replies)
        if replica and not self.replica:
            self.metrics.incr("redis_replica_seen")
            logger.warning(
                "Redis is a replica (it refuses writes: demoted in a failover?): reads answer from whichever of "
                "Redis and Postgres holds the newer copy until it takes writes again"
            )
        # writes may have gone through to Postgres meanwhile: this process saw the replica, or wrote some
        promoted = not replica and (self.replica or self.moves_pending)
        self.replica = self.replica or replica  # no longer a replica once the generations moved
        # a replica takes no writes: a new run id is recorded, and the generations moved, once it
        # takes them (its reads meanwhile check every copy against Postgres)
        changed = [] if replica else [
            (group, as_str(run_id)) for group, (run_id, _) in zip(groups, replies, strict=True) if run_id
        ]
        moved = groups if promoted else [group for group, _ in changed]
        if moved:
            yield RedisCall(tuple(("INCR", key) for _, generations in moved for key in generations))
            self.moves_pending = self.moves_pending and not promoted
        if changed:
            yield RedisCall(tuple(("SET", server, run_id) for (server, _), run_id in changed))
        self.replica = replica
        self._checked = True
        if moved:
            self.metrics.incr("redis_server_changes")
            logger.warning(
                "Redis is a server this deployment has not verified (restarted, failed over, new, or a replica "
                "taking writes again): each thread it holds is checked against Postgres on its next read"
            )
        return bool(moved)

    def unknown(self) -> None:
        """The check failed: whether the server changed is unknown, so the next read checks first."""
        self._checked = False

    def attach(self, run: Callable[[Op[Any]], Any], scheduler: Scheduler) -> None:
        """Run the check every `check_seconds` as a job on `scheduler`, from the first call on."""
        if self.enabled:
            self._loop = WatchLoop(self, run, scheduler)


class WatchLoop:
    """The job running the check every `check_seconds`. A failure is contained, logged once
    per kind of trouble and counted; the next read checks again."""

    def __init__(self, watch: HotWatch, run: Callable[[Op[Any]], Any], scheduler: Scheduler) -> None:
        self.watch = watch
        self.run = run
        self.clock = scheduler.clock
        self._job = scheduler.job("redis-server-check", self._turn)
        self.started = False
        self._last_error = ""

    def ensure_started(self) -> None:
        # the first check is the foreground's (before the process' first call), and a restart
        # seen by a driver is checked by the next call: this job only keeps time
        self.started = True
        self._job.wake(self.clock() + self.watch.check_seconds)

    def _turn(self) -> float:
        try:
            self.run(self.watch.check_op())
            self._last_error = ""
        except Exception as exc:
            self.watch.unknown()
            self.watch.metrics.incr("hot_watch_errors")
            error = f"{type(exc).__name__}: {exc}"
            if error != self._last_error:
                logger.warning("could not check the Redis server's identity (reads check first): %s", error)
            self._last_error = error
        return self.clock() + self.watch.check_seconds
