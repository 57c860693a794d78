"""DeltaChannel history in Postgres: the part of a parent-chain walk Redis cannot answer, in one
statement whatever the depth (see `_core/delta.py` for the walk across tiers).

A recursive CTE follows `parent_checkpoint_id` from a starting checkpoint and carries the
channels still without a seed: a checkpoint whose value for a channel is stored (a blob row,
or a value its row names bare, that is not `empty`) seeds it, and the walk stops when every channel is seeded or the root is
reached. The same statement then returns, per visited checkpoint, its writes to the channels
it still wanted and the seeds it holds, so the chain costs one round trip, not one per
ancestor (as the base class' `get_tuple` walk would).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from langgraph_tiered_saver._sansio.io import Op, PgCall, PgStatement
from langgraph_tiered_saver.durable import sql
from langgraph_tiered_saver.durable.records import loaded_value
from langgraph_tiered_saver.errors import CorruptDataError
from langgraph_tiered_saver.records.codec import TypedValue, WriteRecord

# Params: %(tenant)s %(thread)s %(ns)s %(channels)s (text[]), and where to start: %(start)s (the
# first ancestor to visit, inclusive) or, when NULL, the parent of %(target)s (NULL: of the
# namespace's latest checkpoint). The blob lookups name the tenant as a parameter so that a
# schema partitioned by tenant prunes them to one partition (as sql.SELECT_TUPLES).
_STATE = """
    CROSS JOIN LATERAL (
        SELECT coalesce(array_agg(f ->> 0) FILTER (WHERE coalesce(b.type, {bare} ->> (f ->> 0)) <> 'empty'),
                '{}'::text[]) AS seeded,
            coalesce(array_agg(f ->> 0) FILTER (WHERE coalesce(b.type, {bare} ->> (f ->> 0)) IS NULL),
                '{}'::text[]) AS missing
        FROM jsonb_array_elements({fields}) AS f
        LEFT JOIN {s}.checkpoint_blobs b
            ON b.tenant_id = %(tenant)s AND b.thread_id = %(thread)s AND b.checkpoint_ns = %(ns)s
            AND b.channel = f ->> 0 AND b.version = f ->> 1
        WHERE f ->> 0 = ANY({wanted})
    ) AS st
"""
SELECT_DELTA_HISTORY = (
    """
WITH RECURSIVE walk AS (
    SELECT c.checkpoint_id, c.parent_checkpoint_id, {fields_c} AS blob_fields, c.bare_values AS bare,
        %(channels)s::text[] AS wanted, st.seeded, st.missing, 0 AS depth
    FROM {s}.checkpoints c
"""
    + _STATE.replace("{fields}", "{fields_c}").replace("{wanted}", "%(channels)s::text[]").replace("{bare}", "c.bare_values")
    + """
    WHERE c.tenant_id = %(tenant)s AND c.thread_id = %(thread)s AND c.checkpoint_ns = %(ns)s
        AND c.checkpoint_id = coalesce(%(start)s::text, (
            SELECT t.parent_checkpoint_id FROM {s}.checkpoints t
            WHERE t.tenant_id = %(tenant)s AND t.thread_id = %(thread)s AND t.checkpoint_ns = %(ns)s
                AND (%(target)s::text IS NULL OR t.checkpoint_id = %(target)s::text)
            ORDER BY t.checkpoint_id DESC LIMIT 1
        ))
    UNION ALL
    SELECT p.checkpoint_id, p.parent_checkpoint_id, {fields_p} AS blob_fields, p.bare_values AS bare, nw.wanted,
        st.seeded, st.missing, w.depth + 1
    FROM walk w
    CROSS JOIN LATERAL (
        SELECT ARRAY(SELECT x FROM unnest(w.wanted) AS x WHERE x <> ALL(w.seeded)) AS wanted
    ) AS nw
    JOIN {s}.checkpoints p
        ON p.tenant_id = %(tenant)s AND p.thread_id = %(thread)s AND p.checkpoint_ns = %(ns)s
        AND p.checkpoint_id = w.parent_checkpoint_id
"""
    + _STATE.replace("{fields}", "{fields_p}").replace("{wanted}", "nw.wanted").replace("{bare}", "p.bare_values")
    + """
    WHERE cardinality(nw.wanted) > 0
)
SELECT 'a', w.depth, NULL, w.checkpoint_id, NULL, NULL, NULL, NULL, NULL FROM walk w WHERE w.depth = 0
UNION ALL
SELECT 'w', w.depth, wr.channel, wr.type, {bytes_wr}, wr.blob_ref, wr.task_id, wr.idx, wr.task_path
FROM walk w
JOIN {s}.checkpoint_writes wr
    ON wr.tenant_id = %(tenant)s AND wr.thread_id = %(thread)s AND wr.checkpoint_ns = %(ns)s
    AND wr.checkpoint_id = w.checkpoint_id AND wr.channel = ANY(w.wanted)
UNION ALL
SELECT 'b', w.depth, f ->> 0, coalesce(b.type, w.bare ->> (f ->> 0)),
    CASE WHEN b.type IS NULL THEN ''::bytea ELSE {bytes_b} END,
    b.blob_ref, NULL, NULL, NULL
FROM walk w
CROSS JOIN LATERAL jsonb_array_elements(w.blob_fields) AS f
LEFT JOIN {s}.checkpoint_blobs b
    ON b.tenant_id = %(tenant)s AND b.thread_id = %(thread)s AND b.checkpoint_ns = %(ns)s
    AND b.channel = f ->> 0 AND b.version = f ->> 1
WHERE f ->> 0 = ANY(w.seeded)
UNION ALL
SELECT 'm', w.depth, m, w.checkpoint_id, NULL, NULL, NULL, NULL, NULL
FROM walk w CROSS JOIN LATERAL unnest(w.missing) AS m
"""
).replace("{fields_c}", sql.blob_fields("c")).replace("{fields_p}", sql.blob_fields("p"))
SELECT_DELTA_HISTORY = SELECT_DELTA_HISTORY.replace("{bytes_wr}", sql.stored_bytes("wr")).replace(
    "{bytes_b}", sql.stored_bytes("b")
)


@dataclass
class DurableDelta:
    """Postgres' part of a walk: per visited checkpoint (0 = the first), its writes to the
    channels it still wanted, unsorted; and the seeds found, by channel."""

    writes: dict[int, list[WriteRecord]] = field(default_factory=lambda: defaultdict(list))
    seeds: dict[str, TypedValue] = field(default_factory=dict)
    first: str | None = None  # the checkpoint the walk started at (None: Postgres lacks it)


def delta_history_op(
    schema: str,
    tenant: str,
    thread: str,
    ns: str,
    channels: Sequence[str],
    *,
    start: str | None = None,
    target: str | None = None,
) -> Op[DurableDelta]:
    """Walk from checkpoint `start` (inclusive), or from the parent of `target` (the latest
    checkpoint of the namespace when None too). A checkpoint whose referenced value row is
    missing is corrupt, as in `get_tuple`."""
    params = {
        "tenant": tenant, "thread": thread, "ns": ns, "channels": list(channels), "start": start, "target": target,
    }  # fmt: skip
    statement = PgStatement(sql.render(SELECT_DELTA_HISTORY, schema), params, fetch=True, binary=True)
    (rows,) = yield PgCall((statement,), tenant_id=tenant)
    out = DurableDelta()
    for kind, depth, channel, type_, data, ref, task_id, idx, task_path in rows:
        where = f"postgres thread {thread!r} namespace {ns!r}"
        if kind == "a":
            out.first = type_
            continue
        if kind == "m":
            raise CorruptDataError(f"{where} checkpoint {type_}: value of channel {channel!r} missing from checkpoint_blobs")
        value = loaded_value(
            type_.encode(), None if data is None else bytes(data), None if ref is None else ref.encode(), f"{where} {channel!r}"
        )
        if kind == "b":
            out.seeds[channel] = value
        else:
            out.writes[int(depth)].append(WriteRecord(task_id, int(idx), channel, value, task_path))
    return out
