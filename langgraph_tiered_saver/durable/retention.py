"""Deleting, copying and pruning durable history (sans-I/O generators, see `_io`).

Every deletion is one statement (sql.DELETE_CHECKPOINTS) run after an exclusive lock on the
threads it touches, so a concurrent flush of those threads waits instead of committing a
checkpoint whose blob was just collected. Deleting checkpoints also deletes their writes and the
channel values no surviving checkpoint references, and reports the blob-store refs that became
unreferenced within the tenant (`DeleteResult.orphaned_blob_refs`) for the blob-store GC, which
must still check the hot tier before removing anything.

Every prune keeps, besides what it is told to keep, the ancestors a kept checkpoint needs to
rebuild its DeltaChannel values (back to the nearest snapshot), so pruning never silently empties
a delta channel.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

from langgraph_tiered_saver._sansio.io import Op, PgCall, PgStatement
from langgraph_tiered_saver.durable import sql
from langgraph_tiered_saver.durable.records import DeleteResult, RowCounts
from langgraph_tiered_saver.durable.roles import check_role_op
from langgraph_tiered_saver.errors import ConfigError

PRUNE_STRATEGIES = ("keep_latest", "delete")
THREADS_PER_TRANSACTION = 100


def _chunks(items: Sequence[str], size: int = THREADS_PER_TRANSACTION) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


def _delete_call(
    schema: str,
    tenant: str,
    threads: list[str],
    heads: tuple[str, ...],
    candidates: str,
    *,
    everything: bool = False,
    **params: Any,
) -> PgCall:
    lock = PgStatement(
        sql.LOCK_THREADS_EXCLUSIVE,
        (sql.thread_lock_class(schema), sql.thread_lock_keys(tenant, threads)),
    )
    delete = PgStatement(
        sql.delete_checkpoints(schema, heads, candidates),
        {"tenant": tenant, "threads": threads, "everything": everything, **params},
        fetch=True,
    )
    return PgCall((lock, delete), tenant_id=tenant)


def _result(results: list[Any]) -> DeleteResult:
    checkpoints, writes, blobs, reparented, refs = results[-1][0]
    return DeleteResult(int(checkpoints), int(writes), int(blobs), int(reparented), list(refs))


def delete_thread_op(schema: str, tenant: str, thread: str, fence: int | None = None) -> Op[DeleteResult]:
    """Delete every checkpoint, write and channel value of one thread, and leave its tombstone:
    the thread's flush fence advanced to `fence` (the deleter's token; None: the Postgres clock),
    so a flush that read the outbox before the deletion can never bring the thread back."""
    call = _delete_call(schema, tenant, [thread], (), sql.CANDIDATES_ALL, everything=True)
    tombstone = PgStatement(sql.render(sql.TOMBSTONE, schema), (tenant, thread, fence))
    marks = PgStatement(sql.render(sql.DELETE_WRITTEN_THROUGH, schema), (tenant, thread))
    results = yield PgCall((call.statements[0], tombstone, marks, *call.statements[1:]), tenant_id=tenant)
    return _result(results)


def delete_for_runs_op(schema: str, tenant: str, run_ids: Sequence[str]) -> Op[DeleteResult]:
    """Delete the checkpoints the runs created (with their writes and now unused values)."""
    runs = sorted({str(r) for r in run_ids})
    if not runs:
        return DeleteResult()
    (rows,) = yield PgCall(
        (PgStatement(sql.render(sql.SELECT_THREADS_FOR_RUNS, schema), (tenant, runs), fetch=True),),
        tenant_id=tenant,
    )
    total = DeleteResult()
    for threads in _chunks([r[0] for r in rows]):
        results = yield _delete_call(schema, tenant, threads, (), sql.CANDIDATES_RUNS, run_ids=runs)
        total.add(_result(results))
    return total


def copy_thread_op(schema: str, tenant: str, source: str, target: str) -> Op[RowCounts]:
    """Copy a thread's whole history (all namespaces, writes, values) to another thread id.

    Rows the target already has are left alone, so a retried copy completes without duplicates.
    """
    params = {"tenant": tenant, "src": source, "dst": target}
    lock = PgStatement(
        sql.LOCK_THREADS_SHARED,
        (sql.thread_lock_class(schema), sql.thread_lock_keys(tenant, [source, target])),
    )
    statements = (
        lock,
        PgStatement(sql.render(sql.COPY_BLOBS, schema), params),
        PgStatement(sql.render(sql.COPY_CHECKPOINTS, schema), params),
        PgStatement(sql.render(sql.COPY_WRITES, schema), params),
    )
    _, blobs, checkpoints, writes = yield PgCall(statements, tenant_id=tenant)
    return RowCounts(int(checkpoints), int(blobs), int(writes))


def _given(keep: Mapping[Any, Collection[str]]) -> dict[str, Any]:
    """HEADS_GIVEN params from {(..., thread, ns): checkpoint ids}."""
    threads, namespaces, ids = [], [], []
    for key, checkpoint_ids in keep.items():
        thread, ns = key[-2], key[-1]
        for cid in sorted(checkpoint_ids):
            threads.append(thread)
            namespaces.append(ns)
            ids.append(cid)
    return {"keep_threads": threads, "keep_ns": namespaces, "keep_ids": ids}


def prune_op(
    schema: str,
    tenant: str,
    thread_ids: Sequence[str],
    strategy: str = "keep_latest",
    keep: Mapping[tuple[str, str], Collection[str]] | None = None,
) -> Op[DeleteResult]:
    """BaseCheckpointSaver.prune on the durable tier.

    "delete" removes the threads entirely. "keep_latest" keeps, per (thread, ns), the checkpoint
    ids in `keep` (the caller's view across both tiers); a namespace absent from `keep` keeps its
    latest durable checkpoint. DeltaChannel ancestors of kept checkpoints are kept as well.
    """
    if isinstance(thread_ids, str):
        raise TypeError("thread_ids must be a sequence of thread ids, not a str")
    if strategy not in PRUNE_STRATEGIES:
        raise ConfigError(f"strategy must be one of {PRUNE_STRATEGIES}, got {strategy!r}")
    threads = sorted(set(thread_ids))
    keep = keep or {}
    total = DeleteResult()
    for chunk in _chunks(threads):
        if strategy == "delete":
            call = _delete_call(schema, tenant, chunk, (), sql.CANDIDATES_ALL, everything=True)
        else:
            in_chunk = {k: v for k, v in keep.items() if k[0] in chunk}
            heads = (sql.HEADS_GIVEN, sql.HEADS_LATEST_UNLISTED)
            call = _delete_call(
                schema, tenant, chunk, heads, sql.CANDIDATES_ALL,
                listed_threads=[k[0] for k in in_chunk], listed_ns=[k[1] for k in in_chunk],
                **_given(in_chunk),
            )  # fmt: skip
        total.add(_result((yield call)))
    return total


def prune_older_than_op(
    schema: str,
    tenant: str | None,
    older_than: dt.timedelta,
    protect: Mapping[tuple[str, str, str], Collection[str]] | None = None,
) -> Op[DeleteResult]:
    """Retention: delete checkpoints created more than `older_than` ago, per tenant or for all.

    Never deleted: the latest checkpoint of each (thread, ns); a paused run's checkpoint (an
    `__interrupt__` write and no child checkpoint yet); the ids in `protect`, keyed by
    (tenant, thread, ns), e.g. what the hot tier still holds or has yet to flush; and the
    DeltaChannel ancestors of all of those. `tenant=None` spans every tenant, which row-level
    security only allows a role with BYPASSRLS (run it from a maintenance role); each tenant's
    threads are then pruned in transactions scoped to that tenant.
    """
    if older_than < dt.timedelta(0):
        raise ValueError("older_than must not be negative")
    if tenant is None:
        role = yield from check_role_op()
        if not role.bypasses_rls:
            raise ConfigError(
                f"pruning every tenant needs a superuser or BYPASSRLS role (row-level security "
                f"hides other tenants from {role.name!r}); pass a tenant_id instead"
            )
        find = PgStatement(sql.render(sql.SELECT_OLD_THREADS, schema), (older_than,), fetch=True)
    else:
        find = PgStatement(
            sql.render(sql.SELECT_OLD_THREADS_OF_TENANT, schema), (older_than, tenant), fetch=True
        )
    (rows,) = yield PgCall((find,), tenant_id=tenant)
    by_tenant: dict[str, list[str]] = defaultdict(list)
    for row_tenant, thread in rows:
        by_tenant[row_tenant].append(thread)
    heads = (sql.HEADS_LATEST, sql.HEADS_PAUSED, sql.HEADS_GIVEN)
    total = DeleteResult()
    for row_tenant in sorted(by_tenant):
        for chunk in _chunks(by_tenant[row_tenant]):
            protected = {
                k: v for k, v in (protect or {}).items() if k[0] == row_tenant and k[1] in chunk
            }
            call = _delete_call(
                schema, row_tenant, chunk, heads, sql.CANDIDATES_OLDER_THAN,
                older_than=older_than, **_given(protected),
            )  # fmt: skip
            total.add(_result((yield call)))
    # tombstones of threads deleted before the cutoff: a flush stalled that long is not waited for
    expired = PgStatement(sql.render(sql.DELETE_OLD_TOMBSTONES, schema), {"older_than": older_than, "tenant": tenant})
    yield PgCall((expired,), tenant_id=tenant)
    return total
