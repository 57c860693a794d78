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

The check runs before the process' first Redis call, every `check_seconds` in the background,
and at once after a driver saw the server's script cache empty (NOSCRIPT: the server restarted).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from . import keys as K
from . import scripts
from ._io import Op, RedisCall
from .codec import as_str
from .metrics import Metrics

logger = logging.getLogger("langgraph_tiered_saver")

CHECK_SECONDS = 2.0


class HotWatch:
    """Whether this process has checked the Redis server's identity recently, and the op that
    checks it. Shared by a saver's sync and async calls; no I/O here."""

    def __init__(self, key_prefix: str, metrics: Metrics, *, enabled: bool, cluster: bool = False,
                 check_seconds: float = CHECK_SECONDS) -> None:  # fmt: skip
        self.prefix = key_prefix
        self.metrics = metrics
        self.enabled = enabled
        self.cluster = cluster
        self.check_seconds = check_seconds
        self._checked = False
        self._loop: WatchLoop | None = None

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
        replies = yield RedisCall(calls, scripts=(scripts.SERVER_CHECK,))
        changed = [(group, as_str(run_id)) for group, run_id in zip(groups, replies, strict=True) if run_id]
        if changed:
            yield RedisCall(tuple(("INCR", key) for (_, generations), _ in changed for key in generations))
            yield RedisCall(tuple(("SET", server, run_id) for (server, _), run_id in changed))
        self._checked = True
        if changed:
            self.metrics.incr("redis_server_changes")
            logger.warning(
                "Redis is a server this deployment has not verified (restarted, failed over, or new): "
                "each thread it holds is checked against Postgres on its next read"
            )
        return bool(changed)

    def attach(self, run: Callable[[Op[Any]], Any]) -> None:
        """Give the background check its (sync) op runner; it starts on first use."""
        if self.enabled:
            self._loop = WatchLoop(self, run)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.stop()


class WatchLoop:
    """A daemon thread running the check every `check_seconds`. Any failure is contained,
    logged once per kind of trouble and counted; the next read checks again."""

    def __init__(self, watch: HotWatch, run: Callable[[Op[Any]], Any]) -> None:
        self.watch = watch
        self.run = run
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()
        self._last_error = ""

    @property
    def started(self) -> bool:
        return self._thread is not None

    def ensure_started(self) -> None:
        with self._guard:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._body, name="tiered-saver-hot-watch", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._guard:
            thread = self._thread
        if thread is not None:
            thread.join(timeout=10)

    def _body(self) -> None:
        while not self._stop.is_set():
            # the first check is the foreground's (before the process' first call), and a
            # restart seen by a driver is checked by the next call: this loop only keeps time
            self._wake.wait(self.watch.check_seconds)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.run(self.watch.check_op())
                self._last_error = ""
            except Exception as exc:
                self.watch._checked = False  # unknown: the next read checks first
                self.watch.metrics.incr("hot_watch_errors")
                error = f"{type(exc).__name__}: {exc}"
                if error != self._last_error:
                    logger.warning("could not check the Redis server's identity (reads check first): %s", error)
                self._last_error = error
