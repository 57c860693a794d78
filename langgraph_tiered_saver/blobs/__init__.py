"""Blob tier: content-addressed storage for channel values too large for Redis and Postgres.

Both tiers store a small pointer (`make_pointer`) in place of the value; the bytes live once in
a store keyed by their sha256. Stores: `PgBlobStore` (the saver's default with Postgres: every
replica reads it; speaks `PgCall`s, see `ops.BlobOps`), `S3BlobStore` (needs the `s3` extra),
`FilesystemBlobStore` (this machine only, when chosen), `InMemoryBlobStore` (tests).
Compression needs the `zstd` extra.
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
from .ops import BlobOps, as_ops, load_op, offload_op
from .pointer import POINTER_PREFIX, BlobPointer, is_pointer, make_pointer, parse_pointer
from .postgres import PgBlobStore
from .tenant_key import tenant_component

if TYPE_CHECKING:
    from .s3 import S3BlobStore

__all__ = [
    "DIGEST_LENGTH",
    "POINTER_PREFIX",
    "ZSTD_AVAILABLE",
    "BlobMissingError",
    "BlobOps",
    "BlobPointer",
    "BlobStore",
    "FilesystemBlobStore",
    "InMemoryBlobStore",
    "PgBlobStore",
    "S3BlobStore",
    "as_ops",
    "check_content",
    "decompress",
    "digest_of",
    "is_digest",
    "is_pointer",
    "load_op",
    "make_pointer",
    "maybe_compress",
    "offload_op",
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
