"""The pointer that Redis and Postgres store in place of an offloaded value.

Format (ASCII, about 90 bytes)::

    lts-blob:v1:<digest>:<size>:<z|r>

`digest` is the sha256 of the bytes held by the blob store and `size` their length; `z` means
those bytes are a zstd frame of the value, `r` that they are the raw value. The version field
lets a later format coexist with pointers already written to Postgres.
"""

from __future__ import annotations

from dataclasses import dataclass

from langgraph_tiered_saver.blobs.base import is_digest, validate_digest
from langgraph_tiered_saver.errors import CorruptDataError

POINTER_PREFIX = b"lts-blob:"
POINTER_VERSION = b"v1"
_MAX_POINTER_LENGTH = 128
_FLAGS = {b"z": True, b"r": False}


@dataclass(frozen=True)
class BlobPointer:
    """What a tier knows about an offloaded value: where it is, how big, how encoded."""

    digest: str
    size: int
    compressed: bool


def make_pointer(digest: str, size: int, compressed: bool) -> bytes:
    """Encode a pointer; `size` is the stored blob's length in bytes."""
    validate_digest(digest)
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"blob size must be a non-negative int, got {size!r}")
    flag = b"z" if compressed else b"r"
    return b":".join(
        (POINTER_PREFIX.rstrip(b":"), POINTER_VERSION, digest.encode(), str(size).encode(), flag)
    )


def is_pointer(raw: bytes) -> bool:
    """Cheap test of whether stored bytes are (meant to be) a pointer rather than a value."""
    return raw.startswith(POINTER_PREFIX)


def parse_pointer(raw: bytes) -> BlobPointer:
    """Decode a pointer; `CorruptDataError` on anything malformed or of an unknown version."""
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise CorruptDataError(f"blob pointer must be bytes, got {type(raw).__name__}")
    raw = bytes(raw)
    if len(raw) > _MAX_POINTER_LENGTH or not raw.startswith(POINTER_PREFIX):
        raise CorruptDataError(f"not a blob pointer: {raw[:40]!r}")
    parts = raw.split(b":")
    if len(parts) != 5:
        raise CorruptDataError(f"malformed blob pointer {raw!r}")
    _, version, digest_b, size_b, flag = parts
    if version != POINTER_VERSION:
        raise CorruptDataError(f"unsupported blob pointer version {version!r} in {raw!r}")
    digest = digest_b.decode("ascii", "replace")
    if not is_digest(digest):
        raise CorruptDataError(f"blob pointer has a malformed digest: {raw!r}")
    if not size_b.isdigit() or (len(size_b) > 1 and size_b.startswith(b"0")):
        raise CorruptDataError(f"blob pointer has a malformed size: {raw!r}")
    if flag not in _FLAGS:
        raise CorruptDataError(f"blob pointer has an unknown encoding flag {flag!r}: {raw!r}")
    return BlobPointer(digest, int(size_b), _FLAGS[flag])
