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

import functools
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import keys as K
from ._io import BlobIO, Op, RedisCall
from .blobs import BlobStore, FilesystemBlobStore, load_blob, offload_blob, parse_pointer
from .blobs.pointer import is_pointer
from .blobs.tenant_key import tenant_component
from .codec import BLOB_TYPE, TypedValue, WriteRecord, pointer_digest
from .hot import StoredCheckpoint

DEFAULT_THRESHOLD = 256 * 1024
DEFAULT_COMPRESS_THRESHOLD = 64 * 1024
BlobStoreFactory = Callable[[str], BlobStore]


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
    from .blobs import S3BlobStore

    first = S3BlobStore(bucket, prefix=prefix, **client_options)
    client = first.client  # type: ignore[attr-defined]
    return _cached(
        lambda tenant: S3BlobStore(bucket, prefix=f"{prefix}{tenant_component(tenant)}/", client=client)
    )


def _cached(make: BlobStoreFactory) -> BlobStoreFactory:
    lock = threading.Lock()
    stores: dict[str, BlobStore] = {}

    def get(tenant: str) -> BlobStore:
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


class Offloader:
    def __init__(
        self,
        stores: BlobStoreFactory | None,
        *,
        key_prefix: str,
        threshold: int = DEFAULT_THRESHOLD,
        compress_threshold: int = DEFAULT_COMPRESS_THRESHOLD,
        collect_garbage: bool = True,
    ) -> None:
        # One store shared by all tenants cannot tell whether another tenant uses a blob:
        # garbage collection is then off (blobs are kept), per-tenant factories enable it.
        self.collect_garbage = collect_garbage
        self.stores = stores
        self.prefix = key_prefix
        self.threshold = threshold
        self.compress_threshold = compress_threshold

    def offload(self, tenant_id: str, typed: TypedValue) -> Op[TypedValue]:
        """The value itself, or a pointer to where the store now keeps it."""
        if self.stores is None or len(typed[1]) <= self.threshold:
            return typed
        store = self.stores(tenant_id)
        call = functools.partial(offload_blob, store, typed[1], compress_threshold=self.compress_threshold)
        pointer = yield BlobIO(call)
        return (BLOB_TYPE + typed[0], pointer)

    def resolve(self, tenant_id: str, typed: TypedValue) -> Op[TypedValue]:
        if not typed[0].startswith(BLOB_TYPE):
            return typed
        if self.stores is None:
            from .errors import ConfigError

            raise ConfigError("a stored value lives in the blob store, but this saver has none configured")
        data = yield BlobIO(functools.partial(load_blob, self.stores(tenant_id), typed[1]))
        return (typed[0][len(BLOB_TYPE):], data)

    def resolve_stored(self, tenant_id: str, stored: StoredCheckpoint) -> Op[StoredCheckpoint]:
        if not any(t[0].startswith(BLOB_TYPE) for t in stored.blobs.values()) and not any(
            w.value[0].startswith(BLOB_TYPE) for w in stored.writes
        ):
            return stored
        blobs = {}
        for field, typed in stored.blobs.items():
            blobs[field] = yield from self.resolve(tenant_id, typed)
        writes: list[WriteRecord] = []
        for w in stored.writes:
            writes.append(replace(w, value=(yield from self.resolve(tenant_id, w.value))))
        return replace(stored, blobs=blobs, writes=writes)

    # ------------------------------------------------------------------ reference tracking

    def track_commands(self, tenant_id: str, thread_id: str, digests: Iterable[str]) -> list[tuple[Any, ...]]:
        return [("SADD", K.blob_threads_key(self.prefix, tenant_id, d), thread_id) for d in set(digests)]

    def untrack(self, tenant_id: str, thread_id: str, digests: Iterable[str]) -> Op[None]:
        yield RedisCall(tuple(("SREM", K.blob_threads_key(self.prefix, tenant_id, d), thread_id) for d in digests))
        return None

    def collect(self, tenant_id: str, candidates: Iterable[str], in_postgres: Callable[[list[str]], Op[set[str]]] | None) -> Op[int]:
        """Delete candidate blobs nothing references any more; returns how many were deleted."""
        candidates = sorted(set(candidates))
        if self.stores is None or not candidates or not self.collect_garbage:
            return 0
        keys = [K.blob_threads_key(self.prefix, tenant_id, d) for d in candidates]
        members = yield RedisCall(tuple(("SMEMBERS", k) for k in keys))
        live: set[str] = set()
        for digest, key, threads in zip(candidates, keys, members, strict=True):
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
        store = self.stores(tenant_id)
        for digest in unreferenced:
            yield BlobIO(functools.partial(store.delete, digest))
        return len(unreferenced)


def digests_in_export(content: dict[str, dict[str, Any]]) -> set[str]:
    """Digests referenced by an exported thread (its channel values and writes)."""
    from .codec import unpack_write

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


def digests_in_stored(items: Iterable[StoredCheckpoint]) -> set[str]:
    out: set[str] = set()
    for s in items:
        for typed in s.blobs.values():
            d = pointer_digest(typed)
            if d:
                out.add(d)
        for w in s.writes:
            d = pointer_digest(w.value)
            if d:
                out.add(d)
    return out


__all__ = ["BLOB_TYPE", "Offloader", "filesystem_blobs", "pointer_digest", "s3_blobs"]
