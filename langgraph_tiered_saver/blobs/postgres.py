"""Blobs in the saver's own Postgres schema: the store every replica reads, with no extra service.

Table `blob_chunks` (migration 2): a blob is its bytes in `CHUNK_SIZE` rows keyed by (tenant_id,
digest, chunk), under the same row-level security as the checkpoint tables. The store speaks
`PgCall`s (see `ops.BlobOps`), so the saver's drivers run it on their pools with the tenant set
for the transaction and the saver's timeouts, in sync and async alike; every statement also names
the tenant, so a role that bypasses RLS gets the same answers.

`put` asks first and skips the upload when the blob is there (content addressing makes that
safe, and it saves re-sending megabytes); the upload itself is one transaction that inserts every
chunk or none, so chunk 0 exists exactly when the whole blob does. `get` re-hashes what it reads.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from langgraph_tiered_saver._sansio.io import BlobIO, Op, PgCall, PgStatement
from langgraph_tiered_saver.blobs.base import BlobMissingError, check_content, validate_digest
from langgraph_tiered_saver.durable import sql
from langgraph_tiered_saver.errors import CorruptDataError

CHUNK_SIZE = 1024 * 1024


class PgBlobStore:
    """One tenant's blobs in `schema` (run its `*_op`s with the saver's driver)."""

    def __init__(self, schema: str, tenant_id: str) -> None:
        if not isinstance(tenant_id, str) or not tenant_id:
            raise ValueError(f"tenant_id must be a non-empty string, got {tenant_id!r}")
        self.schema = sql.check_schema(schema)
        self.tenant_id = tenant_id

    def __repr__(self) -> str:
        return f"PgBlobStore(schema={self.schema!r}, tenant_id={self.tenant_id!r})"

    def _call(self, *statements: PgStatement) -> PgCall:
        return PgCall(statements, tenant_id=self.tenant_id)

    def exists_op(self, digest: str) -> Op[bool]:
        validate_digest(digest)
        query = PgStatement(sql.render(sql.BLOB_EXISTS, self.schema), (self.tenant_id, digest), fetch=True)
        (rows,) = yield self._call(query)
        return bool(rows[0][0])

    def put_op(self, digest: str, data: bytes) -> Op[None]:
        validate_digest(digest)
        data = bytes(data)
        yield BlobIO(functools.partial(check_content, digest, data, "the data given to put()"))
        if (yield from self.exists_op(digest)):
            return
        chunks = [data[i : i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)] or [b""]
        params = {"tenant": self.tenant_id, "digest": digest, "chunks": chunks}
        yield self._call(
            PgStatement(sql.LOCK_BLOB, sql.blob_lock(self.schema, self.tenant_id, digest)),
            PgStatement(sql.render(sql.INSERT_BLOB_CHUNKS, self.schema), params),
        )

    def get_op(self, digest: str) -> Op[bytes]:
        validate_digest(digest)
        query = PgStatement(
            sql.render(sql.SELECT_BLOB_CHUNKS, self.schema), (self.tenant_id, digest), fetch=True, binary=True
        )
        (rows,) = yield self._call(query)
        where = f"Postgres ({self.schema}.blob_chunks, tenant {self.tenant_id!r})"
        if not rows:
            raise BlobMissingError(f"blob {digest} is missing from {where}")
        data: bytes = yield BlobIO(functools.partial(_joined, digest, rows, where))
        return data

    def delete_op(self, digests: Sequence[str]) -> Op[None]:
        digests = [validate_digest(d) for d in digests]
        if digests:
            yield self._call(PgStatement(sql.render(sql.DELETE_BLOBS, self.schema), (self.tenant_id, digests)))

    def digests_op(self) -> Op[list[str]]:
        """Every digest the tenant stores (for garbage collection and audits)."""
        query = PgStatement(sql.render(sql.SELECT_BLOB_DIGESTS, self.schema), (self.tenant_id,), fetch=True)
        (rows,) = yield self._call(query)
        return [str(r[0]) for r in rows]


def _joined(digest: str, rows: list[tuple[int, bytes]], where: str) -> bytes:
    """The chunks' bytes in order, checked: a gap in the numbering or tampering is corruption."""
    if [int(n) for n, _ in rows] != list(range(len(rows))):
        raise CorruptDataError(f"blob {digest} in {where} is corrupt: its chunks are not numbered 0..n-1")
    return check_content(digest, b"".join(bytes(d) for _, d in rows), where)
