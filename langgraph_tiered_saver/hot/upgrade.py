"""The upgrade from Redis key schema v1 (one hash tag per thread, unsharded indexes) to v2
(keys.py: 256 slot-tagged shards).

`legacy_check_op` runs in `setup()`: a v1 outbox index with entries means checkpoints this
version would never flush, so setup stops with `LegacyKeysError` and tells the operator what to
do. `migrate_v1` (CLI `migrate-redis`) moves every v1 thread key to its v2 name with DUMP /
RESTORE (each key keeps its TTL), re-indexes the outbox, the tenant registries and the blob
references into their shards, and drops what v2 rebuilds by itself (epoch, known marks,
write-through count, the worker roster). Run it with every saver of the old version stopped.
"""

from __future__ import annotations

import logging
from typing import Any

from langgraph_tiered_saver._sansio.io import Op, RedisCall
from langgraph_tiered_saver.errors import LegacyKeysError, TierUnavailableError
from langgraph_tiered_saver.hot import keys as K
from langgraph_tiered_saver.records.codec import as_str

logger = logging.getLogger("langgraph_tiered_saver")

V1 = "v1"


def legacy_check_op(prefix: str) -> Op[None]:
    """Raise LegacyKeysError when the v1 outbox index holds entries (unflushed v1 threads)."""
    try:
        (pending,) = yield RedisCall((("ZCARD", K.legacy_v1_dirty_key(prefix)),))
    except TierUnavailableError as exc:  # setup() is about Postgres: do not fail it on Redis
        logger.warning("could not check Redis for keys of schema v1: %s", exc)
        return None
    if int(pending):
        raise LegacyKeysError(
            f"Redis holds {int(pending)} unflushed threads under key schema v1 ({K.legacy_v1_dirty_key(prefix)}), "
            "which this version does not read. Either drain them with the previous version (its flush, "
            "`python -m langgraph_tiered_saver flush`), or stop every saver of the previous version and run "
            "`python -m langgraph_tiered_saver migrate-redis --key-prefix "
            f"{prefix}` to move them to schema v2."
        )
    return None


def _v1_thread(prefix: str, key: str) -> tuple[str, str, str] | None:
    """(tenant, thread, suffix) of a v1 thread key `<prefix>:v1:{tenant|thread}:<suffix>`."""
    head = f"{prefix}:{V1}:{{"
    if not key.startswith(head):
        return None
    tag, sep, suffix = key[len(head):].partition("}:")
    if not sep or "|" not in tag:
        return None
    tenant, thread = K.split_dirty_member(tag)
    return tenant, thread, suffix


def migrate_v1(client: Any, prefix: str, *, batch: int = 500) -> dict[str, int]:
    """Move schema v1 keys of `prefix` to v2 on a single Redis (`client`: redis.Redis). Returns
    counts of what moved. Idempotent: a key already moved is gone from v1."""
    counts = {"thread_keys": 0, "outbox_entries": 0, "registry_entries": 0, "blob_references": 0, "dropped": 0}
    for raw in client.scan_iter(match=f"{prefix}:{V1}:*", count=batch):
        key = as_str(raw)
        parsed = _v1_thread(prefix, key)
        if parsed is not None:
            tenant, thread, suffix = parsed
            dumped, ttl = client.dump(key), client.pttl(key)
            if dumped is None:
                continue
            target = f"{K.thread_prefix(prefix, tenant, thread)}:{suffix}"
            client.restore(target, max(int(ttl), 0), dumped, replace=True)
            client.delete(key)
            counts["thread_keys"] += 1
            continue
        rest = key[len(f"{prefix}:{V1}:"):]
        if rest == "dirty":
            for member, score in client.zrange(key, 0, -1, withscores=True):
                tenant, thread = K.split_dirty_member(as_str(member))
                client.zadd(K.dirty_key(prefix, K.shard_of(tenant, thread)), {as_str(member): score})
                counts["outbox_entries"] += 1
            client.delete(key)
        elif rest.startswith("tenant:{") and rest.endswith("}:threads"):
            tenant = K.decode_id(rest[len("tenant:{"): -len("}:threads")])
            for member, score in client.zrange(key, 0, -1, withscores=True):
                thread = as_str(member)
                client.zadd(K.tenant_threads_key(prefix, tenant, K.shard_of(tenant, thread)), {thread: score})
                counts["registry_entries"] += 1
            client.delete(key)
        elif rest.startswith("tenant:{") and "}:blob:" in rest:
            encoded, _, digest = rest[len("tenant:{"):].partition("}:blob:")
            tenant = K.decode_id(encoded)
            for member in client.smembers(key):
                thread = as_str(member)
                client.sadd(K.blob_threads_key(prefix, tenant, digest, K.shard_of(tenant, thread)), thread)
                counts["blob_references"] += 1
            client.delete(key)
        else:  # epoch, known marks, write-through count, worker roster: v2 rebuilds them
            client.delete(key)
            counts["dropped"] += 1
    return counts
