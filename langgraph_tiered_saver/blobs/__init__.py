"""Blob tier: content-addressed storage for channel values too large for Redis and Postgres.

Both tiers store a small pointer (`make_pointer`) in place of the value; the bytes live once in
a `BlobStore` keyed by their sha256. Stores: `FilesystemBlobStore` (default), `S3BlobStore`
(needs the `s3` extra), `InMemoryBlobStore` (tests). Compression needs the `zstd` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import (
    DIGEST_LENGTH,
    BlobMissingError,
    BlobStore,
    check_content,
    digest_of,
    is_digest,
    validate_digest,
)
from .compression import ZSTD_AVAILABLE, decompress, maybe_compress
from .filesystem import FilesystemBlobStore
from .memory import InMemoryBlobStore
from .offload import load_blob, offload_blob
from .pointer import POINTER_PREFIX, BlobPointer, is_pointer, make_pointer, parse_pointer
from .tenant_key import tenant_component

if TYPE_CHECKING:
    from .s3 import S3BlobStore

__all__ = [
    "DIGEST_LENGTH",
    "POINTER_PREFIX",
    "ZSTD_AVAILABLE",
    "BlobMissingError",
    "BlobPointer",
    "BlobStore",
    "FilesystemBlobStore",
    "InMemoryBlobStore",
    "S3BlobStore",
    "check_content",
    "decompress",
    "digest_of",
    "is_digest",
    "is_pointer",
    "load_blob",
    "make_pointer",
    "maybe_compress",
    "offload_blob",
    "parse_pointer",
    "tenant_component",
    "validate_digest",
]


def __getattr__(name: str) -> Any:
    # S3BlobStore is loaded on first use so importing the package never imports botocore.
    if name == "S3BlobStore":
        from .s3 import S3BlobStore

        return S3BlobStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
