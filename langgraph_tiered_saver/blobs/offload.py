"""The two steps the saver needs around a store: value -> pointer, pointer -> value.

Kept apart from the stores so every store stays a dumb byte container, and apart from the saver
so the pointer/compression rules live in one place.
"""

from __future__ import annotations

from ..errors import CorruptDataError
from .base import BlobStore, digest_of
from .compression import decompress, maybe_compress
from .pointer import BlobPointer, make_pointer, parse_pointer

DEFAULT_COMPRESS_THRESHOLD = 64 * 1024


def offload_blob(
    store: BlobStore, value: bytes, *, compress_threshold: int = DEFAULT_COMPRESS_THRESHOLD
) -> bytes:
    """Store `value` (zstd-compressed when large enough and zstd is installed); return its pointer.

    The digest is of the stored bytes, so a store can verify a blob without decompressing it.
    """
    stored, compressed = maybe_compress(value, compress_threshold)
    digest = digest_of(stored)
    store.put(digest, stored)
    return make_pointer(digest, len(stored), compressed)


def load_blob(
    store: BlobStore, pointer: bytes | BlobPointer, *, max_size: int | None = None
) -> bytes:
    """Fetch and decode the value a pointer names; `CorruptDataError` if it does not match."""
    ptr = pointer if isinstance(pointer, BlobPointer) else parse_pointer(pointer)
    stored = store.get(ptr.digest)
    if len(stored) != ptr.size:
        raise CorruptDataError(
            f"blob {ptr.digest} has {len(stored)} bytes but its pointer says {ptr.size}"
        )
    return decompress(stored, max_size) if ptr.compressed else stored
