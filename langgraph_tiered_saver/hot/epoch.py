"""Knowing when Redis lost data (an epoch key, the eviction policy check), and the option to
not lose it (`HotDurability`).

A deployment's Redis holds one key without TTL, `<prefix>:v2:epoch`, set once to a random
token, and a copy of it in each shard (keys.py), which the scripts of that shard compare. Each
process learns the token on its first call (a read, or a write); every `put`/`put_writes` script
then compares it with the one the process knows (same round trip, no extra cost). A different or
missing token means Redis restarted empty, was flushed, or failed over to a replica without
the data: whatever was not flushed yet is gone. That is reported once per process and event
(ERROR log, `redis_data_lost` counter, `Epoch.lost_at`), never passed
over silently; the process then adopts the current token. On a Cluster one node can lose its
shards' copies while another keeps the epoch: a process that learns the epoch then finds those
copies missing, and reports the loss itself before it puts them back.

The same first call checks `maxmemory-policy`: under an `allkeys-*` policy Redis may evict a
thread that is not flushed yet (its keys keep no TTL until then, so `volatile-*` policies and
`noeviction` never do).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from langgraph_tiered_saver._sansio.io import Op, RedisCall
from langgraph_tiered_saver.errors import ConfigError, HotDurabilityError
from langgraph_tiered_saver.hot import keys as K
from langgraph_tiered_saver.records.codec import as_str

logger = logging.getLogger("langgraph_tiered_saver")

UNSAFE_POLICIES = ("allkeys-lru", "allkeys-lfu", "allkeys-random")


class Epoch:
    """The epoch this process knows, and what to do when Redis shows another."""

    def __init__(self, key_prefix: str, *, durable: bool, on_lost: Callable[[], None]) -> None:
        self.prefix = key_prefix
        self.key = K.epoch_key(key_prefix)
        self.durable = durable
        self.on_lost = on_lost
        self.value: str | None = None
        self.lost_at: float | None = None
        # whether the eviction policy keeps keys without TTL (None: not checked, or unreadable)
        self.policy_safe: bool | None = None
        self._guard = threading.Lock()
        self._adopting = False

    def known_op(self) -> Op[str]:
        """The current epoch (set it if this is the deployment's first write). Learning it, a
        process may find shards that lost their copy (`_adopt_op`): it says so then, since its
        copies put back would hide the loss from every later write there."""
        if self.value is None:
            value, lost_shards = yield from self._adopt_op()
            with self._guard:
                first, self.value = self.value is None, value
            if first and lost_shards:
                self._report(_shards_lost(value, lost_shards))
            yield from self._check_policy_op()
        return self.value

    def lost_op(self, used: str) -> Op[None]:
        """A write script that ran with epoch `used` saw another: report the loss once (the
        step's concurrent writes all see it; the first one reports), adopt the current epoch."""
        with self._guard:
            if self.value != used or self._adopting:
                return None
            self._adopting = True
        try:
            current, lost_shards = yield from self._adopt_op()
        finally:
            with self._guard:
                self._adopting = False
        self.value = current
        if current == used:  # the epoch stayed: the write's shard lost its copy (a Cluster node)
            self._report(_shards_lost(used, lost_shards))
        else:
            self._report(f"epoch {used} is gone; now {current}: it restarted empty, was flushed or failed over without its data")
        return None

    def _report(self, what: str) -> None:
        self.lost_at = time.time()
        self.on_lost()
        logger.error(
            "Redis lost data (%s). Checkpoints not yet flushed to Postgres are lost; threads "
            "continue from their last flushed checkpoint.",
            what,
        )

    def _adopt_op(self) -> Op[tuple[str, int]]:
        """Set the deployment's epoch if there is none, and make every shard's copy of it
        current; with it, how many shards lost their copy while the epoch itself stayed (a
        Cluster node wiped, the epoch on another): their data went with it. Put back without a
        word, the copies would hide that from every later write there. A shard without a copy
        where every shard lacks one is not counted: the epoch's first setter stopped before
        copying it (no node keeps the epoch without some shards' copies)."""
        created, current = yield RedisCall((("SET", self.key, secrets.token_hex(16), "NX"), ("GET", self.key)))
        value = as_str(current)
        keys = [K.epoch_key(self.prefix, shard) for shard in range(K.SHARDS)]
        if created:
            yield RedisCall(tuple(("SET", key, value) for key in keys))
            return value, 0
        copies = yield RedisCall(tuple(("GET", key) for key in keys))
        stale = [key for key, copy in zip(keys, copies, strict=True) if copy is None or as_str(copy) != value]
        if stale:
            yield RedisCall(tuple(("SET", key, value) for key in stale))
        missing = sum(1 for copy in copies if copy is None)
        return value, 0 if missing == K.SHARDS else missing

    def _check_policy_op(self) -> Op[None]:
        try:
            (reply,) = yield RedisCall((("CONFIG", "GET", "maxmemory-policy"),))
        except Exception as exc:  # managed Redis often refuses CONFIG: nothing to check then
            logger.debug("cannot read maxmemory-policy: %s", exc)
            return None
        policy = _config_value(reply)
        self.policy_safe = policy is not None and policy not in UNSAFE_POLICIES
        if self.durable and policy in UNSAFE_POLICIES:
            logger.warning(
                "Redis maxmemory-policy is %s: it may evict a thread before its flush (lost, and "
                "reported). Use volatile-lru or noeviction: unflushed threads keep no TTL, so "
                "volatile-* policies never evict them.",
                policy,
            )
        return None


def _shards_lost(epoch: str, shards: int) -> str:
    """What a loss the epoch itself survived is, said (0 shards: the copy was already put back)."""
    which = f"{shards} of {K.SHARDS} shards lost their copy" if shards else "a shard lost its copy"
    return f"{which} of epoch {epoch}: a Redis node restarted empty or was flushed"


def _config_value(reply: Any) -> str | None:
    """CONFIG GET answers a flat list (RESP2) or a map (RESP3)."""
    values = list(reply.values()) if isinstance(reply, dict) else list(reply or [])[1::2]
    return as_str(values[0]) if values else None


class HotDurability:
    """`hot_durability`: what a write waits for before it returns, in the same round trip.

    "memory" (default): nothing; Redis acknowledged it in memory (what `appendfsync everysec`
    or a replica then keep is up to the server's settings). "aof": `WAITAOF 1 0` — the write is
    fsynced to this server's append-only file (Redis >= 7.2, Valkey >= 8, `appendonly yes`).
    "replica": `WAIT 1` — at least one replica has it (survives a failover).
    """

    def __init__(self, mode: str, timeout: float) -> None:
        self.mode = mode
        self.timeout_ms = max(1, int(timeout * 1000))

    @classmethod
    def of(cls, mode: str, timeout: float) -> HotDurability | None:
        if mode not in ("memory", "aof", "replica"):
            raise ConfigError(f"hot_durability must be 'memory', 'aof' or 'replica', got {mode!r}")
        return None if mode == "memory" else cls(mode, timeout)

    def command(self) -> tuple[Any, ...]:
        if self.mode == "aof":
            return ("WAITAOF", 1, 0, self.timeout_ms)
        return ("WAIT", 1, self.timeout_ms)

    def check(self, reply: Any) -> None:
        confirmed = int(reply[0]) if isinstance(reply, (list, tuple)) else int(reply)
        if confirmed < 1:
            what = "fsynced to the AOF" if self.mode == "aof" else "copied to a replica"
            raise HotDurabilityError(f"Redis did not confirm the write {what} within {self.timeout_ms} ms")
