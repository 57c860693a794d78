"""An in-process blob store: for unit tests and single-process experiments, not for production
(blobs vanish with the process while Postgres still holds pointers to them)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from langgraph_tiered_saver.blobs.base import BlobMissingError, check_content, validate_digest


class InMemoryBlobStore:
    """A dict behind a lock; `get` verifies content like the durable stores do."""

    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(self, digest: str, data: bytes) -> None:
        validate_digest(digest)
        check_content(digest, bytes(data), "the data given to put()")
        with self._lock:
            self._blobs.setdefault(digest, bytes(data))

    def get(self, digest: str) -> bytes:
        validate_digest(digest)
        with self._lock:
            data = self._blobs.get(digest)
        if data is None:
            raise BlobMissingError(f"blob {digest} is not in the in-memory blob store")
        return check_content(digest, data, "the in-memory blob store")

    def delete(self, digest: str) -> None:
        validate_digest(digest)
        with self._lock:
            self._blobs.pop(digest, None)

    def exists(self, digest: str) -> bool:
        validate_digest(digest)
        with self._lock:
            return digest in self._blobs

    def list_digests(self) -> Iterator[str]:
        with self._lock:
            digests = list(self._blobs)
        return iter(digests)
