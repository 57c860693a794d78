"""Oversized values go to the blob store; both tiers keep a small pointer (sans-I/O ops).

A serialized value larger than `threshold` bytes is stored by content hash and replaced by
`("lts-blob+<type>", pointer)`; reads resolve pointers before deserializing. Blob stores are
per tenant (`root/<tenant>/...`, `prefix<tenant>/...` with the tenant encoded by
`tenant_component`, never a raw path): a digest never names another tenant's data, and garbage
collection only has to look at one tenant's references.

Garbage collection after a delete or prune: a blob is deleted only when no Postgres row and no
live Redis thread of the tenant references it. Redis references are tracked in a per-tenant
set per digest, written in the same round trip as the value's pointer.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import KW_ONLY, dataclass, replace
from pathlib import Path
from typing import Any

from langgraph_tiered_saver._sansio.io import Op, RedisCall
from langgraph_tiered_saver.blobs import BlobStore, FilesystemBlobStore, parse_pointer
from langgraph_tiered_saver.blobs.ops import BlobOps, as_ops, load_op, offload_op
from langgraph_tiered_saver.blobs.pointer import is_pointer
from langgraph_tiered_saver.blobs.postgres import PgBlobStore
from langgraph_tiered_saver.blobs.tenant_key import tenant_component
from langgraph_tiered_saver.errors import ConfigError, TierUnavailableError
from langgraph_tiered_saver.hot import keys as K
from langgraph_tiered_saver.hot.stored import StoredCheckpoint
from langgraph_tiered_saver.records.codec import BLOB_TYPE, TypedValue, WriteRecord, pointer_digest

logger = logging.getLogger("langgraph_tiered_saver")

DEFAULT_THRESHOLD = 256 * 1024
DEFAULT_COMPRESS_THRESHOLD = 64 * 1024
BlobStoreFactory = Callable[[str], BlobStore | BlobOps]


def default_blob_dir() -> Path:
    """`$LTS_BLOB_DIR`, else `~/.local/share/langgraph-tiered-saver/blobs`."""
    env = os.environ.get("LTS_BLOB_DIR")
    return Path(env) if env else Path.home() / ".local/share/langgraph-tiered-saver/blobs"


def filesystem_blobs(root: str | Path | None = None) -> BlobStoreFactory:
    """Per-tenant filesystem stores under `root` (default: `default_blob_dir()`)."""
    base = Path(root) if root is not None else default_blob_dir()
    return _cached(lambda tenant: FilesystemBlobStore(base / tenant_component(tenant)))


def s3_blobs(bucket: str, *, prefix: str = "lts-blobs/", **client_options: Any) -> BlobStoreFactory:
    """Per-tenant S3 stores: keys `prefix<tenant>/<digest>` in one bucket, one shared client."""
    from langgraph_tiered_saver.blobs import S3BlobStore

    first = S3BlobStore(bucket, prefix=prefix, **client_options)
    client = first.client  # type: ignore[attr-defined]
    return _cached(
        lambda tenant: S3BlobStore(bucket, prefix=f"{prefix}{tenant_component(tenant)}/", client=client)
    )


def postgres_blobs(schema: str = "langgraph_tiered") -> BlobStoreFactory:
    """Per-tenant stores in the saver's Postgres schema (table `blob_chunks`): every replica
    reads them, through the saver's own pools. `schema` must be the saver's."""
    return _cached(lambda tenant: PgBlobStore(schema, tenant))


def blob_factory(option: object, *, schema: str, durable: bool) -> BlobStoreFactory | None:
    """The saver's `blob_store` option as a factory (None: values stay inline).

    "auto" (default): the Postgres store when the saver has Postgres, else no offload (a
    Redis-only saver keeps large values in Redis, which every replica reads). "postgres": the
    Postgres store, or a ConfigError without Postgres. "filesystem": directories on this
    machine only (`default_blob_dir()`). A `BlobStore` serves every tenant; a callable is a
    factory `tenant -> store`.
    """
    if option == "auto":
        return postgres_blobs(schema) if durable else None
    if option == "postgres":
        if not durable:
            raise ConfigError("blob_store='postgres' needs the durable tier (pg_pool or postgres_url)")
        return postgres_blobs(schema)
    if option == "filesystem":
        return filesystem_blobs()
    if option is None:
        return None
    if isinstance(option, BlobStore):
        return lambda tenant: option
    if callable(option) and not isinstance(option, str):
        return option  # type: ignore[no-any-return]
    raise ConfigError(
        "blob_store must be 'auto', 'postgres', 'filesystem', None, a BlobStore or a factory, "
        f"got {option!r}"
    )


def _cached(make: BlobStoreFactory) -> BlobStoreFactory:
    lock = threading.Lock()
    stores: dict[str, BlobStore | BlobOps] = {}

    def get(tenant: str) -> BlobStore | BlobOps:
        with lock:
            if tenant not in stores:
                stores[tenant] = make(tenant)
            return stores[tenant]

    return get


def encoded_digest(raw: bytes) -> str | None:
    """Digest named by an encoded (`type␀bytes`) value, if it is a pointer."""
    if not raw.startswith(BLOB_TYPE.encode()):
        return None
    _type, _, data = raw.partition(b"\x00")
    return parse_pointer(data).digest if is_pointer(data) else None


@dataclass(eq=False)
class Offloader:
    """Oversized values to the blob store and back, with the Redis bookkeeping of which live
    threads reference a blob (for garbage collection). One store shared by all tenants cannot
    tell whether another tenant uses a blob: `collect_garbage` is then off (blobs are kept);
    per-tenant factories enable it."""

    stores: BlobStoreFactory | None
    _: KW_ONLY
    prefix: str
    threshold: int = DEFAULT_THRESHOLD
    compress_threshold: int = DEFAULT_COMPRESS_THRESHOLD
    collect_garbage: bool = True

    def _ops(self, tenant_id: str) -> BlobOps:
        if self.stores is None:
            raise ConfigError("a stored value lives in the blob store, but this saver has none configured")
        return as_ops(self.stores(tenant_id))

    def offload_op(self, tenant_id: str, typed: TypedValue) -> Op[TypedValue]:
        """The value itself, or a pointer to where the store now keeps it. A store that is
        down (Postgres, S3) leaves the value inline: the hot tier keeps working through an
        outage, at the cost of Redis memory, and the flush stores the value in its row."""
        if self.stores is None or len(typed[1]) <= self.threshold:
            return typed
        try:
            pointer = yield from offload_op(
                self._ops(tenant_id), typed[1], compress_threshold=self.compress_threshold
            )
        except TierUnavailableError as exc:
            logger.warning("blob store unavailable, keeping a %d-byte value inline: %s", len(typed[1]), exc)
            return typed
        return (BLOB_TYPE + typed[0], pointer)

    def resolve_op(self, tenant_id: str, typed: TypedValue) -> Op[TypedValue]:
        if not typed[0].startswith(BLOB_TYPE):
            return typed
        data = yield from load_op(self._ops(tenant_id), typed[1])
        return (typed[0][len(BLOB_TYPE):], data)

    def resolve_stored_op(self, tenant_id: str, stored: StoredCheckpoint) -> Op[StoredCheckpoint]:
        if not any(t[0].startswith(BLOB_TYPE) for t in stored.blobs.values()) and not any(
            w.value[0].startswith(BLOB_TYPE) for w in stored.writes
        ):
            return stored
        blobs = {}
        for field, typed in stored.blobs.items():
            blobs[field] = yield from self.resolve_op(tenant_id, typed)
        writes: list[WriteRecord] = []
        for w in stored.writes:
            writes.append(replace(w, value=(yield from self.resolve_op(tenant_id, w.value))))
        return replace(stored, blobs=blobs, writes=writes)

    # ------------------------------------------------------------------ reference tracking

    def track_commands(self, tenant_id: str, thread_id: str, digests: Iterable[str]) -> list[tuple[Any, ...]]:
        if not digests:  # the common case: nothing offloaded (spares the shard's CRC32)
            return []
        shard = K.shard_of(tenant_id, thread_id)
        return [("SADD", K.blob_threads_key(self.prefix, tenant_id, d, shard), thread_id) for d in sorted(set(digests))]

    def untrack_op(self, tenant_id: str, thread_id: str, digests: Iterable[str]) -> Op[None]:
        shard = K.shard_of(tenant_id, thread_id)
        yield RedisCall(tuple(("SREM", K.blob_threads_key(self.prefix, tenant_id, d, shard), thread_id) for d in digests))
        return None

    def collect_op(self, tenant_id: str, candidates: Iterable[str], in_postgres: Callable[[list[str]], Op[set[str]]] | None) -> Op[int]:
        """Delete candidate blobs nothing references any more; returns how many were deleted."""
        candidates = sorted(set(candidates))
        if self.stores is None or not candidates or not self.collect_garbage:
            return 0
        # a digest's referencing threads are spread over the shards: read every shard's set
        keys = [(d, K.blob_threads_key(self.prefix, tenant_id, d, s)) for d in candidates for s in range(K.SHARDS)]
        members = yield RedisCall(tuple(("SMEMBERS", k) for _, k in keys))
        live: set[str] = set()
        for (digest, key), threads in zip(keys, members, strict=True):
            for raw in threads:
                thread_id = raw.decode() if isinstance(raw, bytes) else raw
                (exists,) = yield RedisCall(
                    (("EXISTS", K.thread_keys(self.prefix, tenant_id, thread_id).idx),)
                )
                if exists:
                    live.add(digest)
                else:
                    yield RedisCall((("SREM", key, thread_id),))
        unreferenced = [d for d in candidates if d not in live]
        if in_postgres is not None and unreferenced:
            used = yield from in_postgres(unreferenced)
            unreferenced = [d for d in unreferenced if d not in used]
        yield from self._ops(tenant_id).delete_op(unreferenced)
        return len(unreferenced)


def digests_in_export(content: dict[str, dict[str, Any]]) -> set[str]:
    """Digests referenced by an exported thread (its channel values and writes)."""
    from langgraph_tiered_saver.records.codec import unpack_write

    out: set[str] = set()
    for raw in content.get("bl", {}).values():
        digest = encoded_digest(raw)
        if digest:
            out.add(digest)
    for raw in content.get("wr", {}).values():
        digest = pointer_digest(unpack_write(raw, "export").value)
        if digest:
            out.add(digest)
    return out

__all__ = [
    "BLOB_TYPE",
    "Offloader",
    "blob_factory",
    "filesystem_blobs",
    "pointer_digest",
    "postgres_blobs",
    "s3_blobs",
]
