"""Erasing a tenant from every tier (a privacy request, an offboarded customer): its threads in
Redis and Postgres, its outbox entries, its blobs, and every per-tenant index key.

Threads are found in all the places one may be known (the Redis registry, Postgres, the outbox
index) and each is deleted as `delete_thread` deletes it: under its flush lock, so a flush in
flight cannot write it back, with its blobs collected. Then whatever is left under the tenant is
removed wholesale: every row of every table of the saver's schema that has a `tenant_id` column,
every blob of the tenant's blob store, every Redis key of the tenant (registry slices, marks,
blob reference sets, locks), and the tenant's values this process kept decoded. A sans-I/O op
like the others: `delete_tenant` and `adelete_tenant` run the same code.

Redis keys are found with SCAN (one Redis; on a Cluster the driver's SCAN covers one node) and
deleted only when they parse as this tenant's exactly: an id may contain ':', so a glob alone
could match another tenant's keys ("acme" vs "acme:eu").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from langgraph_tiered_saver._core.delta_walks import KeptWalks
from langgraph_tiered_saver._sansio.io import BlobIO, Op, PgCall, PgStatement, RedisCall
from langgraph_tiered_saver.blobs.offloader import Offloader
from langgraph_tiered_saver.durable import ops as pg
from langgraph_tiered_saver.hot import keys as K
from langgraph_tiered_saver.hot.ops import HotOps
from langgraph_tiered_saver.records.codec import as_str
from langgraph_tiered_saver.records.decoded import DecodedValues
from langgraph_tiered_saver.tenancy import check_tenant

_PAGE = 1000


class Core(Protocol):
    """What erasure needs of `core.Core` (which imports this module)."""

    hot: HotOps
    offload: Offloader
    durable: bool
    schema: str
    decoded: DecodedValues
    delta_walks: KeptWalks

    def delete_thread_op(self, tenant: str, thread_id: str) -> Op[None]: ...


@dataclass
class TenantErasure:
    """What `delete_tenant` removed."""

    tenant_id: str
    threads: int = 0
    redis_keys: int = 0  # per-tenant keys left after the threads' own deletion
    postgres_rows: int = 0  # rows left after the threads' own deletion (blob chunks among them)
    blobs: int = 0  # blobs of a per-tenant blob store (S3, filesystem) deleted at the end


def delete_tenant_op(core: Core, tenant: str) -> Op[TenantErasure]:
    tenant = check_tenant(tenant)
    result = TenantErasure(tenant)
    threads = set((yield from core.hot.list_threads_op(tenant)))
    threads |= set((yield from _outbox_threads_op(core, tenant)))
    if core.durable:
        threads |= set((yield from _postgres_threads_op(core.schema, tenant)))
    for thread_id in sorted(threads):
        yield from core.delete_thread_op(tenant, thread_id)
    result.threads = len(threads)
    if core.durable:
        result.postgres_rows = yield from _delete_rows_op(core.schema, tenant)
    result.blobs = yield from _delete_blobs_op(core, tenant)
    result.redis_keys = yield from _delete_keys_op(core.hot.prefix, tenant)
    core.decoded.forget_tenant(tenant)  # decoded values this process kept
    core.delta_walks.forget_tenant(tenant)  # and its DeltaChannel walks
    return result


def _outbox_threads_op(core: Core, tenant: str) -> Op[list[str]]:
    """The tenant's threads in the outbox index (a thread may be there and nowhere else yet)."""
    replies = yield RedisCall(tuple(("ZRANGE", key, 0, -1) for key in K.dirty_keys(core.hot.prefix)))
    pairs = (K.split_dirty_member(as_str(member)) for reply in replies for member in reply)
    return [thread for owner, thread in pairs if owner == tenant]


def _postgres_threads_op(schema: str, tenant: str) -> Op[list[str]]:
    found: list[str] = []
    after = ""
    while True:
        page = yield from pg.thread_ids_page_op(schema, tenant, after, _PAGE)
        found += page
        if len(page) < _PAGE:
            return found
        after = page[-1]


def _delete_rows_op(schema: str, tenant: str) -> Op[int]:
    """Every row of the tenant in every table of the schema with a tenant_id column (the tenant
    set for row-level security, as every other statement of the saver)."""
    (tables,) = yield PgCall((PgStatement(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY c.relname",
        (schema,), fetch=True,
    ),))  # fmt: skip
    names = [str(row[0]) for row in tables]
    if not names:
        return 0
    statements = tuple(
        PgStatement(f'DELETE FROM "{schema}"."{name}" WHERE tenant_id = %s', (tenant,)) for name in names
    )
    counts = yield PgCall(statements, tenant_id=tenant)
    return sum(int(n) for n in counts if isinstance(n, int) and n > 0)


def _delete_blobs_op(core: Core, tenant: str) -> Op[int]:
    """A blob store scoped to the tenant (S3 or directory per tenant) is emptied; a store that
    all tenants share cannot tell whose a blob is, and keeps them (its Postgres blob chunks, the
    default store, are rows of the tenant and went with them)."""
    offload = core.offload
    if offload.stores is None or not offload.collect_garbage:
        return 0
    store: Any = offload.stores(tenant)
    if not hasattr(store, "list_digests"):  # the Postgres store: its rows are gone already
        return 0

    def erase() -> int:
        digests = list(store.list_digests())
        for digest in digests:
            store.delete(digest)
        return len(digests)

    deleted: int = yield BlobIO(erase)
    return deleted


def tenant_key_owner(prefix: str, tenant: str, key: str) -> bool:
    """Whether `key` is one of `tenant`'s keys exactly (a thread's, or a per-tenant index's)."""
    encoded = K.encode_id(tenant)
    head = f"{prefix}:{K.SCHEMA_VERSION}:{{s"
    if not key.startswith(head):
        return False
    rest = key[len(head):]
    shard, sep, rest = rest.partition("}:")
    if not sep or not shard.isdigit():
        return False
    if rest.startswith(f"t:{encoded}|"):  # ids are encoded: no '|' inside the tenant part
        return True
    tenant_part = f"tenant:{encoded}:"
    if not rest.startswith(tenant_part):
        return False
    tail = rest[len(tenant_part):]
    return tail in ("threads", "known") or (tail.startswith("blob:") and ":" not in tail[5:])


def _delete_keys_op(prefix: str, tenant: str) -> Op[int]:
    encoded = K.encode_id(tenant)
    deleted = 0
    for pattern in (f"{prefix}:{K.SCHEMA_VERSION}:*:t:{encoded}|*", f"{prefix}:{K.SCHEMA_VERSION}:*:tenant:{encoded}:*"):
        for batch in (yield from _scan_op(pattern)):
            mine = [key for key in batch if tenant_key_owner(prefix, tenant, key)]
            if mine:
                replies = yield RedisCall(tuple(("DEL", key) for key in mine))
                deleted += sum(int(n) for n in replies)
    return deleted


def _scan_op(pattern: str) -> Op[list[list[str]]]:
    batches: list[list[str]] = []
    cursor: Any = 0
    while True:
        ((cursor, found),) = yield RedisCall((("SCAN", cursor, "MATCH", pattern, "COUNT", _PAGE),))
        batches.append([as_str(key) for key in found])
        if int(cursor) == 0:
            return batches
