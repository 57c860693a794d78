"""Blob tier: content-addressed storage for channel values too large for Redis and Postgres.

Both tiers store a small pointer (`make_pointer`) in place of the value; the bytes live once in
a store keyed by their sha256. Stores: `PgBlobStore` (the saver's default with Postgres: every
replica reads it; speaks `PgCall`s, see `ops.BlobOps`), `S3BlobStore` (needs the `s3` extra),
`FilesystemBlobStore` (this machine only, when chosen), `InMemoryBlobStore` (tests).
Compression needs the `zstd` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langgraph_tiered_saver.blobs.base import (
    DIGEST_LENGTH,
    BlobMissingError,
    BlobStore,
    check_content,
    digest_of,
    is_digest,
    validate_digest,
)
from langgraph_tiered_saver.blobs.compression import ZSTD_AVAILABLE, decompress, maybe_compress
from langgraph_tiered_saver.blobs.filesystem import FilesystemBlobStore
from langgraph_tiered_saver.blobs.memory import InMemoryBlobStore
from langgraph_tiered_saver.blobs.ops import BlobOps, as_ops, load_op, offload_op
from langgraph_tiered_saver.blobs.pointer import (
    POINTER_PREFIX,
    BlobPointer,
    is_pointer,
    make_pointer,
    parse_pointer,
)
from langgraph_tiered_saver.blobs.postgres import PgBlobStore
from langgraph_tiered_saver.blobs.tenant_key import tenant_component

if TYPE_CHECKING:
    from langgraph_tiered_saver.blobs.s3 import S3BlobStore

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
        from langgraph_tiered_saver.blobs.s3 import S3BlobStore

        return S3BlobStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
