"""Blob stores as sans-I/O operations, so the saver's two drivers run every store alike.

A store that lives in Postgres (`PgBlobStore`) yields `PgCall`s, and so uses the saver's pools,
tenant setting and timeouts in sync and async calls. A blocking store (filesystem, S3, memory)
is wrapped by `as_ops` into `BlobIO` requests, which the async driver runs in a worker thread.
Hashing and (de)compression run as `BlobIO` too: CPU work on megabytes stays off the event loop.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from langgraph_tiered_saver._sansio.io import BlobIO, Op
from langgraph_tiered_saver.blobs.base import BlobStore, digest_of
from langgraph_tiered_saver.blobs.compression import decompress, maybe_compress
from langgraph_tiered_saver.blobs.pointer import BlobPointer, make_pointer, parse_pointer
from langgraph_tiered_saver.errors import CorruptDataError


@runtime_checkable
class BlobOps(Protocol):
    """One tenant's content-addressed bytes, as operations (the `BlobStore` contract)."""

    def put_op(self, digest: str, data: bytes) -> Op[None]:
        """Store `data` under `digest`; a no-op when it is stored already."""

    def get_op(self, digest: str) -> Op[bytes]:
        """The blob, checked against its digest; `BlobMissingError` when absent."""

    def delete_op(self, digests: Sequence[str]) -> Op[None]:
        """Remove the blobs; absent ones are no error."""


class BlockingStoreOps:
    """A blocking `BlobStore` as `BlobOps`: each call one `BlobIO` request."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store

    def put_op(self, digest: str, data: bytes) -> Op[None]:
        yield BlobIO(functools.partial(self.store.put, digest, data))

    def get_op(self, digest: str) -> Op[bytes]:
        data: bytes = yield BlobIO(functools.partial(self.store.get, digest))
        return data

    def delete_op(self, digests: Sequence[str]) -> Op[None]:
        for digest in digests:
            yield BlobIO(functools.partial(self.store.delete, digest))


def as_ops(store: BlobStore | BlobOps) -> BlobOps:
    """`store` itself when it is an operation store, else its blocking adapter."""
    return store if isinstance(store, BlobOps) else BlockingStoreOps(store)


def _encode(value: bytes, compress_threshold: int) -> tuple[bytes, bool, str]:
    stored, compressed = maybe_compress(value, compress_threshold)
    return stored, compressed, digest_of(stored)


def offload_op(ops: BlobOps, value: bytes, *, compress_threshold: int) -> Op[bytes]:
    """Store `value` (zstd-compressed when large enough and zstd is installed); return its
    pointer. The digest is of the stored bytes, so a store checks a blob without decompressing."""
    stored, compressed, digest = yield BlobIO(functools.partial(_encode, value, compress_threshold))
    yield from ops.put_op(digest, stored)
    return make_pointer(digest, len(stored), compressed)


def load_op(ops: BlobOps, pointer: bytes | BlobPointer, *, max_size: int | None = None) -> Op[bytes]:
    """The value a pointer names; `CorruptDataError` when the blob does not match it."""
    ptr = pointer if isinstance(pointer, BlobPointer) else parse_pointer(pointer)
    stored = yield from ops.get_op(ptr.digest)
    if len(stored) != ptr.size:
        raise CorruptDataError(f"blob {ptr.digest} has {len(stored)} bytes but its pointer says {ptr.size}")
    if not ptr.compressed:
        return stored
    value: bytes = yield BlobIO(functools.partial(decompress, stored, max_size))
    return value
