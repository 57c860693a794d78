"""The blob-store contract and the digest rules every store shares.

Large channel values leave Redis and Postgres for an object store; both tiers keep only a
pointer (see `pointer.py`). Blobs are addressed by the sha256 of their bytes, so a value that
several checkpoints (or threads) share is stored once, and any store can check what it returns.

The methods are synchronous on purpose: the stores are small, thread-safe adapters that the
saver's drivers call (the async driver off the event loop, in a worker thread).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from typing import Protocol, TypeGuard, runtime_checkable

from langgraph_tiered_saver.errors import CorruptDataError, InvalidIdError

DIGEST_LENGTH = 64
_DIGEST_RE = re.compile(r"[0-9a-f]{64}")


class BlobMissingError(CorruptDataError):
    """A pointer names a blob the store does not hold (deleted, never uploaded, wrong store).

    A `CorruptDataError`: the tier that held the pointer refers to data that is not there.
    """


@runtime_checkable
class BlobStore(Protocol):
    """Content-addressed bytes: the key of a blob is `digest_of(blob)`."""

    def put(self, digest: str, data: bytes) -> None:
        """Store `data` under `digest`; a no-op when the digest is already stored."""

    def get(self, digest: str) -> bytes:
        """Return the blob, checked against its digest; `BlobMissingError` when absent."""

    def delete(self, digest: str) -> None:
        """Remove the blob; no error when it is absent."""

    def exists(self, digest: str) -> bool:
        """Whether the blob is stored."""

    def list_digests(self) -> Iterator[str]:
        """Every stored digest, in no particular order (for garbage collection)."""


def digest_of(data: bytes) -> str:
    """The content address of `data`: lowercase hex sha256."""
    return hashlib.sha256(data).hexdigest()


def is_digest(value: object) -> TypeGuard[str]:
    """Whether `value` is a well-formed digest (64 lowercase hex characters)."""
    return isinstance(value, str) and _DIGEST_RE.fullmatch(value) is not None


def validate_digest(digest: object) -> str:
    """Return `digest` if well formed, else raise `InvalidIdError`.

    Digests become file names and object keys, so anything else (`../`, upper case, a prefix)
    is refused before it can address a path or key outside the store's layout.
    """
    if is_digest(digest):
        return digest
    shown = repr(digest)[:80]
    raise InvalidIdError(f"blob digest must be 64 lowercase hex characters (sha256), got {shown}")


def check_content(digest: str, data: bytes, where: str) -> bytes:
    """Return `data` if it hashes to `digest`, else raise `CorruptDataError` (tampered/truncated)."""
    actual = digest_of(data)
    if actual != digest:
        raise CorruptDataError(
            f"blob {digest} in {where} is corrupt: its {len(data)} bytes hash to {actual}"
        )
    return data
