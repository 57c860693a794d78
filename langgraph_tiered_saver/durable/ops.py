"""Flush and read operations of the durable tier (sans-I/O generators, see `_io`).

Each `*_op` yields `PgCall`s (one transaction each, with `app.tenant_id` set for row-level
security) and returns parsed codec objects; run it with `SyncDriver.run` or `AsyncDriver.run`.
Deletion, copy and retention live in `retention.py` and are re-exported here, so callers can
import every durable operation from this module.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from langgraph_tiered_saver._sansio import pgarrays
from langgraph_tiered_saver._sansio.io import Op, PgCall, PgStatement
from langgraph_tiered_saver.durable import sql
from langgraph_tiered_saver.durable.records import (
    BlobRow,
    CheckpointRow,
    DurableTuple,
    FlushBatch,
    RowCounts,
    ThreadInfo,
    WriteRow,
    created_at,
    fields_to_pairs,
    is_bare,
    loaded_value,
    stored_value,
    tuple_from_row,
)
from langgraph_tiered_saver.durable.retention import (
    copy_thread_op,
    delete_for_runs_op,
    delete_thread_op,
    prune_older_than_op,
    prune_op,
)
from langgraph_tiered_saver.errors import PostgresError
from langgraph_tiered_saver.hot import keys as K
from langgraph_tiered_saver.hot.keys import blob_field, split_blob_field
from langgraph_tiered_saver.records import filters
from langgraph_tiered_saver.records.audit import dumps_jsonb
from langgraph_tiered_saver.records.codec import JSON_RECORD, TypedValue, WriteRecord

KindsT = TypeVar("KindsT")  # what each statement of a flush transaction returns


def _json_or_none(value: Any) -> str | None:
    return None if value is None else dumps_jsonb(value)


def _record_part(typed: TypedValue, exact: bool) -> tuple[str, bytes | None]:
    """(type, bytes) columns of a checkpoint's or metadata's record: no bytes where the JSONB
    column holds the exact value (sql.MIGRATION_8_LEANER_ROWS)."""
    return (JSON_RECORD, None) if exact else typed


def _stored_fields(checkpoint_json: Mapping[str, Any], pairs: list[list[str]]) -> str | None:
    """The blob_fields column: NULL where the pairs are the checkpoint's channel_versions (what
    readers derive them from, sql.blob_fields), else the pairs."""
    versions = checkpoint_json.get("channel_versions")
    if (
        isinstance(versions, dict) and len(versions) == len(pairs)
        and all(type(v) is str for v in versions.values())
        and sorted(pairs) == sorted([k, v] for k, v in versions.items())
    ):  # fmt: skip
        return None
    return dumps_jsonb(pairs)


def _bare(row: CheckpointRow, batch: Mapping[str, str | None]) -> tuple[Mapping[str, str], bool]:
    """The row's bare values, and whether Postgres must add those of them an earlier flush wrote
    (sql.INSERT_CHECKPOINTS `inherit`): a row that does not know them (`bare` None) knows those
    of its batch (`batch`: blob field -> its type when bare, else None), and inherits when it
    references a value the batch does not carry."""
    if row.bare is not None:
        return row.bare, False
    fields = row.record.blob_fields
    known = {split_blob_field(f)[1]: t for f in fields if (t := batch.get(f)) is not None}
    return known, any(f not in batch for f in fields)


def _checkpoint_params(thread: str, row: CheckpointRow, batch: Mapping[str, str | None]) -> tuple[Any, ...]:
    rec, meta = row.record, row.metadata_json
    bare, inherit = _bare(row, batch)
    step = meta.get("step")
    source, run_id = meta.get("source"), meta.get("run_id")
    return (
        thread, row.ns, row.checkpoint_id, rec.parent_checkpoint_id,
        step if isinstance(step, int) and not isinstance(step, bool) else None,
        None if source is None else str(source),
        None if run_id is None else str(run_id),
        created_at(row.checkpoint_json),
        dumps_jsonb(row.checkpoint_json), dumps_jsonb(meta),
        *_record_part(rec.checkpoint, row.checkpoint_exact), *_record_part(rec.metadata, row.metadata_exact),
        _stored_fields(row.checkpoint_json, fields_to_pairs(row.ns, rec.blob_fields)),
        dumps_jsonb(dict(bare)) if bare else None, inherit,
    )  # fmt: skip


def _json_keys(row: BlobRow | WriteRow) -> bytes | None:
    """The key order when the row keeps its value as its JSONB (an offloaded value never does)."""
    return row.json_keys if row.blob_ref is None and row.value_json is not None else None


def _blob_params(thread: str, row: BlobRow) -> tuple[Any, ...]:
    type_, data = stored_value(row.value, row.blob_ref, f"blob {row.channel}@{row.version}", _json_keys(row))
    return (
        thread, row.ns, row.channel, str(row.version), type_, data, row.blob_ref,
        _json_or_none(row.value_json),
    )  # fmt: skip


def _write_params(thread: str, row: WriteRow) -> tuple[Any, ...]:
    w = row.write
    type_, data = stored_value(w.value, row.blob_ref, f"write {w.task_id}/{w.idx}", _json_keys(row))
    return (
        thread, row.ns, row.checkpoint_id, w.task_id, w.idx, w.channel, type_, data,
        row.blob_ref, w.task_path, _json_or_none(row.value_json),
        None if w.created_at is None else float(w.created_at),
    )  # fmt: skip


def _late_bare_values(schema: str, tenant: str, thread: str, bare: list[BlobRow]) -> PgStatement:
    """sql.NAME_LATE_BARE_VALUES for the bare values of a batch."""
    params = {
        "tenant": tenant, "thread": thread, "ns": [v.ns for v in bare], "channel": [v.channel for v in bare],
        "version": [str(v.version) for v in bare], "type": [v.value[0] for v in bare],
    }  # fmt: skip
    return _flush_statement(sql.CALL_NAME_LATE_BARE_VALUES, schema, _arrays(sql.CALL_NAME_LATE_BARE_VALUES, params))


def _fork_check(schema: str, tenant: str, batch: FlushBatch, rows: list[CheckpointRow]) -> PgStatement:
    ids = [r.checkpoint_id for r in rows]
    parents = [r.record.parent_checkpoint_id for r in rows]
    params = {
        "tenant": tenant, "thread": batch.thread_id, "ns": [r.ns for r in rows], "ids": ids, "parents": parents,
        "floors": [batch.continues.get(i, i) for i in ids], "known": [*ids, *(p for p in parents if p)],
    }  # fmt: skip
    return PgStatement(sql.render(sql.CALL_FORKED_CHECKPOINTS, schema), _arrays(sql.CALL_FORKED_CHECKPOINTS, params), fetch=True)


def _last_per_key(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Special writes, each (thread, ns, checkpoint, task, idx) once, the last one: one upsert
    statement may not update a row twice, and the last write is what row-by-row upserts kept."""
    return list({row[:5]: row for row in rows}.values())


def _columns(tenant: str, rows: list[tuple[Any, ...]], template: str) -> tuple[Any, ...]:
    """The tenant, then one array per column: the parameters of `template`, an `unnest` insert
    or its function's call (sql.py), each array as the type the template casts it to."""
    types = sql.param_types(template)
    columns = (list(column) for column in zip(*rows, strict=True))
    return (tenant, *(pgarrays.column(types.get(str(i), ""), c) for i, c in enumerate(columns, start=1)))


def _arrays(template: str, params: dict[str, Any]) -> dict[str, Any]:
    """Named parameters of `template`, each list as the type the template casts it to."""
    types = sql.param_types(template)
    return {k: pgarrays.column(types.get(k, ""), v) if type(v) is list else v for k, v in params.items()}


def _flush_call(
    schema: str, tenant: str, batches: list[FlushBatch], fences: Mapping[str, int], hot_tier: str | None,
    *, plain: bool = True,
) -> tuple[PgCall, list[str]]:
    """The tenant's transaction, and what each statement's result is (a table's row count, a
    thread's forks, or nothing). The writer's hot tier (`hot_tier`, its key prefix) and a thread
    in `fences` are checked first (sql.CHECK_HOT_TIER, sql.MIGRATION_5_FLUSH_FENCE): another
    hot tier's flush, a lease taken over, or a deletion since the read, rolls the whole
    transaction back. Forks are found before the inserts. `plain`: rows go in by plain inserts
    (sql.INSERT_PLAIN_BLOBS, less WAL; a row stored already fails them: see `_inserts_op`), else
    by `ON CONFLICT DO NOTHING`."""
    lock_keys = sql.thread_lock_keys(tenant, (b.thread_id for b in batches))
    statements = [PgStatement(sql.LOCK_THREADS_SHARED, (sql.thread_lock_class(schema), lock_keys))]
    results = ["-"]
    if hot_tier is not None:
        statements.append(PgStatement(sql.render(sql.CHECK_HOT_TIER, schema), (hot_tier,)))
        results.append("-")
    statements += _fence_statements(schema, tenant, batches, fences)
    results += ["-"] * (len(statements) - len(results))
    rows, kinds = _row_statements(schema, tenant, batches, plain=plain)
    return PgCall(tuple(statements + rows), tenant_id=tenant), results + kinds


def _fence_statements(
    schema: str, tenant: str, batches: list[FlushBatch], fences: Mapping[str, int]
) -> list[PgStatement]:
    """The fence of each of the tenant's threads in `fences`, in thread order."""
    return [
        PgStatement(sql.render(sql.FLUSH_FENCE, schema), (tenant, thread, fences[thread]))
        for thread in sorted({b.thread_id for b in batches} & set(fences))
    ]


def _row_statements(
    schema: str, tenant: str, batches: list[FlushBatch], *, plain: bool
) -> tuple[list[PgStatement], list[str]]:
    """The fork checks and inserts of one tenant's batches, and what each result is."""
    blobs: list[tuple[Any, ...]] = []
    checkpoints: list[tuple[Any, ...]] = []
    writes: list[tuple[Any, ...]] = []
    specials: list[tuple[Any, ...]] = []
    through: list[tuple[Any, ...]] = []
    forks: list[tuple[str, PgStatement]] = []
    late: list[PgStatement] = []
    for b in batches:
        rows = [CheckpointRow(*r) for r in b.checkpoints]
        batch_blobs = [BlobRow(*r) for r in b.blobs]
        carried = {  # bare values (type) get no value row: each checkpoint row names them (bare_values)
            blob_field(v.ns, v.channel, v.version): v.value[0] if is_bare(v.value, v.blob_ref) else None
            for v in batch_blobs
        }  # fmt: skip
        blobs += [_blob_params(b.thread_id, v) for v in batch_blobs if not is_bare(v.value, v.blob_ref)]
        bare = [v for v in batch_blobs if is_bare(v.value, v.blob_ref)]
        if bare:
            late.append(_late_bare_values(schema, tenant, b.thread_id, bare))
        if rows:
            forks.append((b.thread_id, _fork_check(schema, tenant, b, rows)))
        checkpoints += [_checkpoint_params(b.thread_id, row, carried) for row in rows]
        if b.written_through:
            through += [(tenant, b.thread_id, r.ns, r.checkpoint_id, r.record.parent_checkpoint_id) for r in rows]
        for r in b.writes:
            row = WriteRow(*r)
            (specials if row.write.idx < 0 else writes).append(
                _write_params(b.thread_id, row)
            )
    blobs.sort(key=lambda r: r[:4])  # primary-key order (after the tenant): fewer index page splits
    checkpoints.sort(key=lambda r: r[:3])
    writes.sort(key=lambda r: r[:5])
    statements: list[PgStatement] = []
    results: list[str] = []
    for thread, check in forks:
        statements.append(check)
        results.append("fork:" + thread)
    last = _last_per_key(specials)
    # plain: through the functions of migration 11 (their plans kept per connection), which
    # return the count of rows written; else the `ON CONFLICT` statements (a rare rerun)
    special = sql.CALL_SPECIAL_WRITES if plain else (sql.UPSERT_SPECIAL_WRITES,)
    for table, template, rows_ in (
        ("blobs", sql.CALL_INSERT_BLOBS if plain else sql.INSERT_BLOBS, blobs),
        ("checkpoints", sql.CALL_INSERT_CHECKPOINTS if plain else sql.INSERT_CHECKPOINTS, checkpoints),
        ("writes", sql.CALL_INSERT_WRITES if plain else sql.INSERT_WRITES, writes),
        *(("writes", template, last) for template in special),
    ):
        if rows_:  # one statement per non-empty kind, its rows as column arrays
            statements.append(_flush_statement(template, schema, _columns(tenant, rows_, template)))
            results.append(table)
    statements += late
    results += ["-"] * len(late)
    if through:  # rare (a write-through while Redis was unreachable): one row per checkpoint
        statements.append(PgStatement(sql.render(sql.INSERT_WRITTEN_THROUGH, schema), through, many=True))
        results.append("-")
    return statements, results


def _group_call(
    schema: str, by_tenant: Mapping[str, list[FlushBatch]], fences: Mapping[tuple[str, str], int],
    hot_tier: str | None, *, plain: bool = True,
) -> tuple[PgCall, list[tuple[str, str]]]:
    """One transaction for the batches of several tenants, and (tenant, result kind) of each
    statement. Every thread lock is taken first (one statement, one global order); then, tenant
    by tenant in order, `sql.SET_TENANT` (row-level security checks each row against its
    tenant), the tenant's fences (thread order), fork checks and inserts. A thread's rows are
    written only under its fence's row lock, taken in one global (tenant, thread) order: two
    group flushes that share threads (a takeover) wait for each other, never deadlock."""
    tenants = sorted(by_tenant)
    lock_keys = sorted({k for t in tenants for k in sql.thread_lock_keys(t, (b.thread_id for b in by_tenant[t]))})
    statements = [PgStatement(sql.LOCK_THREADS_SHARED, (sql.thread_lock_class(schema), lock_keys))]
    kinds = [("", "-")]
    for tenant in tenants:
        statements.append(PgStatement(sql.SET_TENANT, (tenant,)))
        kinds.append((tenant, "-"))
        if hot_tier is not None and tenant == tenants[0]:
            statements.append(PgStatement(sql.render(sql.CHECK_HOT_TIER, schema), (hot_tier,)))
            kinds.append((tenant, "-"))
        tenant_fences = {thread: token for (t, thread), token in fences.items() if t == tenant}
        fenced = _fence_statements(schema, tenant, by_tenant[tenant], tenant_fences)
        rows, row_kinds = _row_statements(schema, tenant, by_tenant[tenant], plain=plain)
        statements += fenced + rows
        kinds += [(tenant, "-")] * len(fenced) + [(tenant, kind) for kind in row_kinds]
    return PgCall(tuple(statements)), kinds


def _branch_starts(batches: list[FlushBatch], thread: str, flagged: list[Any]) -> list[tuple[str, str, str]]:
    """Of the flagged checkpoints, those whose parent is not flagged too: one per forked branch."""
    ids = {(str(ns), str(c)) for ns, c in flagged}
    parents = {
        (row.ns, row.checkpoint_id): row.record.parent_checkpoint_id
        for b in batches if b.thread_id == thread for row in map(lambda r: CheckpointRow(*r), b.checkpoints)
    }  # fmt: skip
    return [(thread, ns, c) for ns, c in sorted(ids) if (ns, parents.get((ns, c))) not in ids]


def _flush_statement(template: str, schema: str, params: Any) -> PgStatement:
    """A flush statement: a function's call (sql.MIGRATION_11_BOUNDED_FLUSH) returns its count
    as a row, fetched; a statement sent as text (an `ON CONFLICT` rerun) has its row count."""
    return PgStatement(sql.render(template, schema), params, fetch=template.lstrip().startswith("SELECT"))


def _rows_written(result: Any) -> int:
    """Rows a flush statement wrote: a function's count (one row), or the statement's row count."""
    return int(result[0][0]) if isinstance(result, list) else max(int(result), 0)


def _by_tenant(batches: Iterable[FlushBatch]) -> dict[str, list[FlushBatch]]:
    by_tenant: dict[str, list[FlushBatch]] = defaultdict(list)
    for batch in batches:
        by_tenant[batch.tenant_id].append(batch)
    return by_tenant


def _inserts_op(build: Callable[..., tuple[PgCall, KindsT]]) -> Op[tuple[Any, KindsT]]:
    """The flush transaction `build(plain=...)` makes, with plain inserts; a row stored already
    (a unique violation: another writer's, inserted meanwhile, or the flush's own, replayed after
    its acknowledgement was lost) makes it run again with `ON CONFLICT`, skipping it."""
    call, kinds = build(plain=True)
    try:
        return (yield call), kinds
    except PostgresError as exc:
        if exc.sqlstate != sql.UNIQUE_VIOLATION:
            raise
    call, kinds = build(plain=False)
    return (yield call), kinds


def upsert_batch_op(
    schema: str,
    batches: Iterable[FlushBatch],
    fences: Mapping[tuple[str, str], int] | None = None,
    *,
    hot_tier: str | None = None,
) -> Op[RowCounts]:
    """Make the batches durable: one transaction per tenant, idempotent on replay.

    Checkpoints, blobs and regular writes are inserted where absent; special writes (idx < 0)
    overwrite. Returns the rows actually inserted or overwritten (zeros for a replay) and the
    new checkpoints that fork their thread (committed all the same: nothing is dropped; the
    caller reports them). `fences`: the flush token of (tenant, thread) pairs; a token older
    than the thread's fence raises `FlushFencedError` and writes nothing. `hot_tier`: the
    writer's key prefix; a schema claimed by another raises `HotTierConflictError`, and the
    transaction commits nothing.
    """
    by_tenant = _by_tenant(batches)
    totals = {"checkpoints": 0, "blobs": 0, "writes": 0}
    forked: list[tuple[str, str, str]] = []
    for tenant in sorted(by_tenant):
        tenant_fences = {thread: token for (t, thread), token in (fences or {}).items() if t == tenant}
        build = functools.partial(_flush_call, schema, tenant, by_tenant[tenant], tenant_fences, hot_tier)
        results, kinds = yield from _inserts_op(build)
        for kind, result in zip(kinds, results, strict=True):
            if kind.startswith("fork:"):
                forked += _branch_starts(by_tenant[tenant], kind[5:], result)
            elif kind in totals:
                totals[kind] += _rows_written(result)
    return RowCounts(totals["checkpoints"], totals["blobs"], totals["writes"], forked)


def upsert_group_op(
    schema: str,
    batches: Iterable[FlushBatch],
    fences: Mapping[tuple[str, str], int] | None = None,
    *,
    hot_tier: str | None = None,
) -> Op[dict[tuple[str, str], list[tuple[str, str]]]]:
    """`upsert_batch_op` for the threads of any tenants in one transaction (one commit, one
    round trip, where `upsert_batch_op` costs one per tenant): the background flusher's group.
    Returns, per (tenant, thread), the (namespace, checkpoint id) of its new checkpoints that
    fork it. All or nothing: one thread's failing row, or fence, rolls back every thread's
    (the caller then flushes them one by one to find it)."""
    by_tenant = _by_tenant(batches)
    forked: dict[tuple[str, str], list[tuple[str, str]]] = {
        (t, b.thread_id): [] for t, group in by_tenant.items() for b in group
    }
    if not by_tenant:
        return forked
    build = functools.partial(_group_call, schema, by_tenant, fences or {}, hot_tier)
    results, kinds = yield from _inserts_op(build)
    for (tenant, kind), result in zip(kinds, results, strict=True):
        if kind.startswith("fork:"):
            thread = kind[5:]
            forked[(tenant, thread)] += [(ns, c) for _, ns, c in _branch_starts(by_tenant[tenant], thread, result)]
    return forked


def _select(
    schema: str, tenant: str, conditions: tuple[str, ...], params: dict[str, Any]
) -> PgCall:
    statement = PgStatement(  # binary: bytea values as raw bytes, not hex text parsed back
        sql.select_tuples(schema, conditions), {"tenant": tenant, **params}, fetch=True, binary=True
    )
    return PgCall((statement,), tenant_id=tenant)


def _tuple_statement(schema: str, tenant: str, thread: str, ns: str, checkpoint_id: str | None) -> PgStatement:
    """`lts_get_tuple`'s call; binary: bytea values as raw bytes, not hex text parsed back."""
    return PgStatement(sql.render(sql.GET_TUPLE, schema), (tenant, thread, ns, checkpoint_id), fetch=True, binary=True)


def get_checkpoint_op(
    schema: str, tenant: str, thread: str, ns: str, checkpoint_id: str | None
) -> Op[DurableTuple | None]:
    """One checkpoint (the latest of the namespace when `checkpoint_id` is None), or None.

    Through `lts_get_tuple` (sql.MIGRATION_7_TUPLE_FUNCTION), whose plans the server keeps per
    connection; a schema set up before it raises `SchemaMissingError` (run setup())."""
    (rows,) = yield PgCall((_tuple_statement(schema, tenant, thread, ns, checkpoint_id),), tenant_id=tenant)
    return tuple_from_row(rows[0]) if rows else None


def get_checkpoint_or_new_op(
    schema: str, tenant: str, thread: str, ns: str, checkpoint_id: str | None
) -> Op[tuple[DurableTuple | None, bool]]:
    """`get_checkpoint_op`, and whether the thread is new to Postgres (no checkpoint in any
    namespace), in the same round trip: Redis may then vouch for all of a new thread it holds
    from its first write on (hot/lua/write.lua `fresh`)."""
    statements = (
        _tuple_statement(schema, tenant, thread, ns, checkpoint_id),
        PgStatement(sql.render(sql.THREAD_HAS_CHECKPOINTS, schema), (tenant, thread), fetch=True),
    )
    rows, present = yield PgCall(statements, tenant_id=tenant)
    return (tuple_from_row(rows[0]) if rows else None), not present[0][0]


def list_op(
    schema: str,
    tenant: str,
    thread: str | None = None,
    ns: str | None = None,
    checkpoint_id: str | None = None,
    before_checkpoint_id: str | None = None,
    metadata_filter: Mapping[str, Any] | None = None,
    limit: int | None = None,
    known: Sequence[tuple[str, str, str]] = (),
) -> Op[list[DurableTuple]]:
    """Checkpoints of a tenant, newest (highest checkpoint_id) first.

    `thread` / `ns` / `checkpoint_id` None mean any; `metadata_filter` has the meaning
    `filters` gives it in both tiers (per-key JSON equality, a missing key equal to None).
    `known` (thread, ns, checkpoint id) rows are left out: the caller has them from Redis, so
    a history that is hot costs one cheap query instead of reading every row twice. With a
    `limit`, the newest `limit` rows not known are returned, which is what a merge needs.
    """
    conditions: list[str] = []
    params: dict[str, Any] = {"limit": limit}
    for name, value, condition in (
        ("thread", thread, sql.WHERE_THREAD),
        ("ns", ns, sql.WHERE_NS),
        ("checkpoint_id", checkpoint_id, sql.WHERE_CHECKPOINT_ID),
        ("before", before_checkpoint_id, sql.WHERE_BEFORE),
    ):
        if value is not None:
            conditions.append(condition)
            params[name] = value
    if metadata_filter:
        filter_conditions, filter_params = filters.sql_conditions(metadata_filter)
        conditions += filter_conditions
        params.update(filter_params)
    if known:
        conditions.append(sql.WHERE_NOT_KNOWN)
        params["known_thread"], params["known_ns"], params["known_id"] = (list(c) for c in zip(*known, strict=True))
    (rows,) = yield _select(schema, tenant, tuple(conditions), params)
    return [tuple_from_row(r) for r in rows]


def channel_writes_op(
    schema: str, tenant: str, checkpoints: Sequence[tuple[str, str, str]], channel: str
) -> Op[dict[tuple[str, str, str], list[WriteRecord]]]:
    """The writes to `channel` of some (thread, ns, checkpoint id) checkpoints, in one query,
    each list sorted by (task_path, task_id, idx); checkpoints without any are left out."""
    if not checkpoints:
        return {}
    threads, namespaces, ids = (list(c) for c in zip(*checkpoints, strict=True))
    params = {"tenant": tenant, "threads": threads, "ns": namespaces, "ids": ids, "channel": channel}
    statement = PgStatement(sql.render(sql.SELECT_CHANNEL_WRITES, schema), params, fetch=True, binary=True)
    (rows,) = yield PgCall((statement,), tenant_id=tenant)
    out: dict[tuple[str, str, str], list[WriteRecord]] = defaultdict(list)
    for thread, ns, cid, task_id, idx, ch, type_, data, task_path, ref in rows:
        where = f"postgres checkpoint {thread}/{ns!r}/{cid} write"
        value = loaded_value(type_.encode(), data, None if ref is None else ref.encode(), where)
        out[(thread, ns, cid)].append(WriteRecord(task_id, int(idx), ch, value, task_path))
    for writes in out.values():
        writes.sort(key=WriteRecord.sort_key)
    return dict(out)


def list_threads_op(schema: str, tenant: str) -> Op[list[ThreadInfo]]:
    """The tenant's threads in Postgres, with checkpoint count and latest activity."""
    call = PgCall(
        (PgStatement(sql.render(sql.LIST_THREADS, schema), (tenant,), fetch=True),),
        tenant_id=tenant,
    )
    (rows,) = yield call
    return [
        ThreadInfo(str(t), int(n), str(last), created, flushed)
        for t, n, last, created, flushed in rows
    ]


__all__ = [
    "channel_writes_op",
    "copy_thread_op",
    "delete_for_runs_op",
    "delete_thread_op",
    "get_checkpoint_op",
    "list_op",
    "list_threads_op",
    "prune_older_than_op",
    "prune_op",
    "upsert_batch_op",
    "upsert_group_op",
]


def blob_fields_present_op(schema: str, tenant: str, thread: str, fields: Sequence[str]) -> Op[set[str]]:
    """Which of the thread's blob fields (`keys.blob_field`) Postgres holds: a checkpoint whose
    values Redis lost may still be complete with the ones an earlier flush wrote."""
    if not fields:
        return set()
    parts = [K.split_blob_field(f) for f in fields]
    params = {
        "tenant": tenant, "thread": thread,
        "ns": [p[0] for p in parts], "channel": [p[1] for p in parts], "version": [p[2] for p in parts],
    }  # fmt: skip
    statement = PgStatement(sql.render(sql.BLOB_FIELDS_PRESENT, schema), params, fetch=True)
    (rows,) = yield PgCall((statement,), tenant_id=tenant)
    return {K.blob_field(*row) for row in rows}


def blob_digests_in_use_op(schema: str, tenant: str, digests: Sequence[str]) -> Op[set[str]]:
    """Which of `digests` the tenant's durable rows still reference (blob-store GC)."""
    if not digests:
        return set()
    statement = PgStatement(
        sql.render(sql.BLOB_DIGESTS_IN_USE, schema),
        {"tenant": tenant, "digests": list(digests)},
        fetch=True,
    )
    (rows,) = yield PgCall((statement,), tenant_id=tenant)
    return {row[0] for row in rows}


def thread_ids_page_op(schema: str, tenant: str, after: str, limit: int) -> Op[list[str]]:
    """Up to `limit` of the tenant's thread ids in Postgres, in order, after `after`."""
    statement = PgStatement(sql.render(sql.THREAD_IDS_PAGE, schema), (tenant, after, limit), fetch=True)
    (rows,) = yield PgCall((statement,), tenant_id=tenant)
    return [str(row[0]) for row in rows]
