"""Every SQL statement of the durable tier, as a named template.

Templates name the schema as `{s}`; `render()` swaps in the validated, quoted schema name (the only
identifier that varies, so no statement is ever built from user data). `{s}` is substituted with
`str.replace`, not `str.format`, so SQL braces (`'{}'`, arrays) need no escaping. Values always
travel as bind parameters (`%s` / `%(name)s`).

The blob fields of a checkpoint (`ns␀channel␀version` in the Redis tier) are stored as a jsonb
array of `[channel, version]` pairs: Postgres text cannot hold NUL, and a checkpoint only ever
references channel versions of its own namespace. Since migration 8 the column is NULL where the
pairs are the checkpoint's own `channel_versions` (nearly always): readers derive them
(`blob_fields`), and no row repeats them.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Iterable
from functools import lru_cache

from langgraph_tiered_saver._options import name_matching
from langgraph_tiered_saver._sansio.io import TENANT_SETTING

SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def check_schema(schema: str) -> str:
    return name_matching(
        SCHEMA_NAME, schema,
        f"schema name {schema!r} is not allowed: use 1-63 characters of [a-z0-9_], starting with a letter or underscore",
    )  # fmt: skip


@lru_cache(maxsize=512)
def render(template: str, schema: str) -> str:
    """The template with its schema placeholder filled in (validated, double-quoted)."""
    return template.replace("{s}", '"' + check_schema(schema) + '"')


def setup_lock_key(schema: str) -> int:
    """bigint advisory-lock key serialising migrations of one schema (stable across processes)."""
    digest = hashlib.blake2b(f"lts-setup:{check_schema(schema)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _int4(data: bytes) -> int:
    value = zlib.crc32(data)
    return value - (1 << 32) if value >= (1 << 31) else value


def thread_lock_class(schema: str) -> int:
    """First key of the (int4, int4) thread locks; a separate key space from the setup lock."""
    return _int4(f"lts-thread:{check_schema(schema)}".encode())


def thread_lock_keys(tenant_id: str, thread_ids: Iterable[str]) -> list[int]:
    """Second keys of the thread locks, sorted so that every transaction locks in one order."""
    return sorted({_int4(f"{tenant_id}|{thread}".encode()) for thread in thread_ids})


# --- thread locks --------------------------------------------------------------------------------
# Flushes take a thread's lock shared, deletions exclusive: a flush that re-uses an existing blob
# row (ON CONFLICT DO NOTHING takes no row lock) can then never commit a checkpoint that points
# to a blob a concurrent prune just deleted. Params: (lock class, sorted int4 keys).

LOCK_THREADS_SHARED = """
SELECT count(*) FROM (
    SELECT pg_advisory_xact_lock_shared(%s, u.k)
    FROM unnest(%s::int4[]) WITH ORDINALITY AS u(k, n) ORDER BY u.n
) AS locked
"""

LOCK_THREADS_EXCLUSIVE = """
SELECT count(*) FROM (
    SELECT pg_advisory_xact_lock(%s, u.k)
    FROM unnest(%s::int4[]) WITH ORDINALITY AS u(k, n) ORDER BY u.n
) AS locked
"""

# A transaction that writes for several tenants (a group flush, durable.ops.upsert_group_op) sets
# the tenant before each tenant's statements: row-level security reads the setting per statement.
SET_TENANT = "SELECT set_config('" + TENANT_SETTING + "', %s, true)"

# --- migrations ----------------------------------------------------------------------------------

SETUP_LOCK = "SELECT pg_advisory_xact_lock(%s)"
CREATE_SCHEMA = "CREATE SCHEMA IF NOT EXISTS {s}"
CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS {s}.schema_migrations (
    version integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
MIGRATIONS_TABLE_EXISTS = "SELECT to_regclass(%s) IS NOT NULL"
SELECT_MIGRATION_VERSIONS = "SELECT version FROM {s}.schema_migrations ORDER BY version"
# Versions this transaction applied: they carry its start time (now() is per transaction).
SELECT_APPLIED_NOW = "SELECT version FROM {s}.schema_migrations WHERE applied_at = now() ORDER BY 1"
# Runs one migration's body only when its version is missing; `{body}` and `{version}` are filled
# by migrations.py from constants, never from input.
MIGRATION_GUARD = """
DO $lts_migration$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM {s}.schema_migrations WHERE version = {version}) THEN
        {body}
        INSERT INTO {s}.schema_migrations (version, applied_at) VALUES ({version}, now());
    END IF;
END
$lts_migration$
"""

_RLS = """
ALTER TABLE {s}.{table} ENABLE ROW LEVEL SECURITY;
ALTER TABLE {s}.{table} FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON {s}.{table}
    USING (tenant_id = current_setting('{setting}', true))
    WITH CHECK (tenant_id = current_setting('{setting}', true));
""".replace("{setting}", TENANT_SETTING)

# The first columns of every per-thread table (tenant first: row-level security and the
# partitioned layout key on it), and of those keyed by namespace too.
_THREAD_KEY_COLUMNS = """    tenant_id text NOT NULL CHECK (tenant_id <> ''),
    thread_id text NOT NULL,
"""
_NAMESPACE_KEY_COLUMNS = _THREAD_KEY_COLUMNS + """    checkpoint_ns text NOT NULL DEFAULT '',
"""

MIGRATION_1_TABLES = """
CREATE TABLE {s}.checkpoints (
""" + _NAMESPACE_KEY_COLUMNS + """    checkpoint_id text NOT NULL,
    parent_checkpoint_id text,
    step integer,
    source text,
    run_id text,
    created_at timestamptz NOT NULL,
    checkpoint jsonb NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}',
    checkpoint_type text NOT NULL,
    checkpoint_bytes bytea NOT NULL,
    metadata_type text NOT NULL,
    metadata_bytes bytea NOT NULL,
    blob_fields jsonb NOT NULL DEFAULT '[]',
    flushed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, thread_id, checkpoint_ns, checkpoint_id)
);
-- The latest checkpoint of a thread is a backward scan of the primary key: no extra index.
CREATE INDEX checkpoints_audit_idx ON {s}.checkpoints (tenant_id, created_at);
CREATE INDEX checkpoints_run_idx ON {s}.checkpoints (tenant_id, run_id) WHERE run_id IS NOT NULL;
CREATE INDEX checkpoints_metadata_idx ON {s}.checkpoints USING gin (metadata jsonb_path_ops);

CREATE TABLE {s}.checkpoint_blobs (
""" + _NAMESPACE_KEY_COLUMNS + """    channel text NOT NULL,
    version text NOT NULL,
    type text NOT NULL,
    data bytea,
    blob_ref text,
    value jsonb,
    PRIMARY KEY (tenant_id, thread_id, checkpoint_ns, channel, version),
    CHECK (data IS NOT NULL OR blob_ref IS NOT NULL)
);
CREATE INDEX checkpoint_blobs_ref_idx ON {s}.checkpoint_blobs (tenant_id, blob_ref)
    WHERE blob_ref IS NOT NULL;

CREATE TABLE {s}.checkpoint_writes (
""" + _NAMESPACE_KEY_COLUMNS + """    checkpoint_id text NOT NULL,
    task_id text NOT NULL,
    idx integer NOT NULL,
    channel text NOT NULL,
    type text NOT NULL,
    data bytea,
    blob_ref text,
    task_path text NOT NULL DEFAULT '',
    value jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, thread_id, checkpoint_ns, checkpoint_id, task_id, idx),
    CHECK (data IS NOT NULL OR blob_ref IS NOT NULL)
);
CREATE INDEX checkpoint_writes_audit_idx
    ON {s}.checkpoint_writes (tenant_id, thread_id, channel, created_at);
CREATE INDEX checkpoint_writes_ref_idx ON {s}.checkpoint_writes (tenant_id, blob_ref)
    WHERE blob_ref IS NOT NULL;
""" + "".join(
    _RLS.replace("{table}", table)
    for table in ("checkpoints", "checkpoint_blobs", "checkpoint_writes")
)

# The blob store every replica reads (blobs/postgres.py): a blob's bytes in 1 MiB chunks, so no
# single value nears bytea's 1 GB limit or makes the server hold a whole blob in one datum.
# STORAGE EXTERNAL: offloaded values are zstd frames or incompressible, pglz would only cost.
MIGRATION_2_BLOB_CHUNKS = """
CREATE TABLE {s}.blob_chunks (
    tenant_id text NOT NULL CHECK (tenant_id <> ''),
    digest text NOT NULL CHECK (digest ~ '^[0-9a-f]{64}$'),
    chunk integer NOT NULL CHECK (chunk >= 0),
    data bytea NOT NULL,
    PRIMARY KEY (tenant_id, digest, chunk)
);
ALTER TABLE {s}.blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
""" + _RLS.replace("{table}", "blob_chunks")

# A counter of write-throughs, for a registry of known threads that Redis once kept; nothing reads
# it since every Redis miss asks Postgres. Kept: a released migration is never edited.
MIGRATION_3_WRITE_THROUGH_COUNTER = """
CREATE SEQUENCE {s}.write_through_count;
"""

# The hot tier (Redis key prefix) that feeds this schema: one row at most. Two hot tiers over one
# schema each answer for their own copies and fork threads (hot_tier.py). Not tenant data: no
# tenant column, no partitions (IF NOT EXISTS keeps it out of the partitioned layout's rewrite).
MIGRATION_4_HOT_TIER = """
CREATE TABLE IF NOT EXISTS {s}.hot_tier (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    key_prefix text NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now()
);
"""
CLAIM_HOT_TIER = """
INSERT INTO {s}.hot_tier (key_prefix) VALUES (%(prefix)s)
ON CONFLICT (one) DO UPDATE SET key_prefix = excluded.key_prefix, claimed_at = now()
WHERE %(replace)s AND {s}.hot_tier.key_prefix <> excluded.key_prefix
"""
HOT_TIER_OWNER = "SELECT key_prefix FROM {s}.hot_tier"

# Flush fencing (flush.py): per thread, the highest token of a flush that committed, and the
# deletion's tombstone. A flusher's token is the Redis clock (microseconds) when its lease began,
# so a flusher that took a thread over holds a higher one than the stalled holder it replaced,
# and one that read the outbox before a deletion a lower one than the deletion. In the same
# transaction as the upsert, `lts_flush_fence` advances the token, or refuses a lower one with
# SQLSTATE LTS01 (pgfaults.FENCED_SQLSTATE): the transaction rolls back, nothing old lands. A
# deletion always advances it and stamps `deleted_at`, and the row stays after the thread's rows
# are gone (a tombstone; a thread created again later flushes with a higher token). A NULL token
# (a deletion that could not ask Redis) takes the Postgres clock.
MIGRATION_5_FLUSH_FENCE = """
CREATE TABLE {s}.flush_fence (
""" + _THREAD_KEY_COLUMNS + """    token bigint NOT NULL,
    deleted_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, thread_id)
);
CREATE FUNCTION {s}.lts_flush_fence(p_tenant text, p_thread text, p_token bigint, p_delete boolean)
RETURNS bigint LANGUAGE plpgsql AS $lts_fence$
DECLARE
    wanted bigint := coalesce(p_token, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
    held bigint;
BEGIN
    INSERT INTO {s}.flush_fence AS f (tenant_id, thread_id, token, deleted_at)
    VALUES (p_tenant, p_thread, wanted, CASE WHEN p_delete THEN now() END)
    ON CONFLICT (tenant_id, thread_id) DO UPDATE
        SET token = greatest(f.token, EXCLUDED.token),
            deleted_at = CASE WHEN p_delete THEN now() ELSE f.deleted_at END, updated_at = now()
        WHERE p_delete OR f.token <= EXCLUDED.token
    RETURNING f.token INTO held;
    IF held IS NULL THEN
        SELECT f.token, f.deleted_at INTO held FROM {s}.flush_fence f
        WHERE f.tenant_id = p_tenant AND f.thread_id = p_thread;
        RAISE EXCEPTION 'flush lease lost: token % is older than % (a newer flusher took thread % over, or the thread was deleted)',
            wanted, held, p_thread USING ERRCODE = 'LTS01';
    END IF;
    RETURN held;
END
$lts_fence$;
""" + _RLS.replace("{table}", "flush_fence")
FLUSH_FENCE = "SELECT {s}.lts_flush_fence(%s, %s, %s, false)"
# Retention (prune_older_than) drops tombstones deleted before its cutoff; a NULL tenant: all.
DELETE_OLD_TOMBSTONES = """
DELETE FROM {s}.flush_fence
WHERE deleted_at < now() - %(older_than)s::interval
AND (%(tenant)s::text IS NULL OR tenant_id = %(tenant)s::text)
"""
TOMBSTONE = "SELECT {s}.lts_flush_fence(%s, %s, %s, true)"

# Checkpoints written through to Postgres while Redis was unreachable (on_redis_error="fallback").
# Each is the child of the latest its process read from Postgres; a hot-tier checkpoint flushed
# later with the same parent continued the thread beside it: a fork (FORKED_CHECKPOINTS).
MIGRATION_6_WRITTEN_THROUGH = """
CREATE TABLE {s}.written_through (
""" + _THREAD_KEY_COLUMNS + """    checkpoint_ns text NOT NULL,
    checkpoint_id text NOT NULL,
    parent_checkpoint_id text,
    written_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, thread_id, checkpoint_ns, checkpoint_id)
);
CREATE INDEX written_through_parent_idx
    ON {s}.written_through (tenant_id, thread_id, checkpoint_ns, parent_checkpoint_id);
CREATE FUNCTION {s}.lts_check_hot_tier(p_prefix text) RETURNS void LANGUAGE plpgsql AS $lts_hot$
DECLARE
    owner text;
BEGIN
    SELECT key_prefix INTO owner FROM {s}.hot_tier;
    IF owner IS NOT NULL AND owner <> p_prefix THEN
        RAISE EXCEPTION 'schema % is fed by the hot tier with key_prefix %; this saver uses %: two hot tiers over one schema fork threads (drain the old one, then setup(replace_hot_tier=True))',
            '{s}', owner, p_prefix USING ERRCODE = 'LTS02';
    END IF;
END
$lts_hot$;
""" + _RLS.replace("{table}", "written_through")
# In every flush transaction: a saver with another key prefix that never ran setup() (which
# claims the schema, hot_tier.py) is refused there, before its rows could fork a thread.
CHECK_HOT_TIER = "SELECT {s}.lts_check_hot_tier(%s)"
INSERT_WRITTEN_THROUGH = """
INSERT INTO {s}.written_through (tenant_id, thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id)
VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING
"""
DELETE_WRITTEN_THROUGH = "DELETE FROM {s}.written_through WHERE tenant_id = %s AND thread_id = %s"
# A written-through checkpoint may reference values that reach Postgres after it (flushed from
# Redis once it is back); its row names those of them that are bare when they come (migration 9).
# Nothing to do, and no write, for a thread with no written-through checkpoint (the usual case:
# one index probe). Params: tenant, thread, and the batch's bare values as parallel arrays.
NAME_LATE_BARE_VALUES_10 = """
UPDATE {s}.checkpoints c SET bare_values = coalesce(c.bare_values, '{}') || n.names
FROM (
    SELECT x.checkpoint_ns, x.checkpoint_id, jsonb_object_agg(u.channel, u.type) AS names
    FROM {s}.written_through x
    JOIN {s}.checkpoints r ON r.tenant_id = x.tenant_id AND r.thread_id = x.thread_id
        AND r.checkpoint_ns = x.checkpoint_ns AND r.checkpoint_id = x.checkpoint_id
    JOIN unnest(%(ns)s::text[], %(channel)s::text[], %(version)s::text[], %(type)s::text[])
        AS u(ns, channel, version, type)
        ON u.ns = r.checkpoint_ns AND r.checkpoint -> 'channel_versions' ->> u.channel = u.version
    WHERE x.tenant_id = %(tenant)s AND x.thread_id = %(thread)s
        AND NOT coalesce(r.bare_values ? u.channel, false)
    GROUP BY x.checkpoint_ns, x.checkpoint_id
) AS n
WHERE c.tenant_id = %(tenant)s AND c.thread_id = %(thread)s AND c.checkpoint_ns = n.checkpoint_ns
    AND c.checkpoint_id = n.checkpoint_id
"""
# The statement as migration 11 has it: the test for a written-through checkpoint of the thread
# comes first, as a condition on no row (the server evaluates it once, before any join), so the
# usual flush costs one index probe whatever the plan: migration 10's, planned while the tables
# were small, joined every checkpoint of the thread with every bare value first (11 ms for a
# 50-checkpoint flush of a 400-checkpoint thread).
NAME_LATE_BARE_VALUES = NAME_LATE_BARE_VALUES_10.rstrip() + """
    AND EXISTS (SELECT 1 FROM {s}.written_through w WHERE w.tenant_id = %(tenant)s AND w.thread_id = %(thread)s)
"""

# Fork check, in the flush transaction before its inserts: the batch's checkpoints Postgres does
# not hold yet that another writer has passed by. A checkpoint `b` forks when, in its namespace,
# Postgres holds a checkpoint the batch does not know (neither in it nor a parent in it) that is
#  - newer than `b`'s floor (`b` itself; for a write-through, the parent it continued), or
#  - a write-through child of `b`'s own parent (a sibling written while Redis was cut off).
# Time travel writes a new (newer) checkpoint beside old ones and is no fork. Params: tenant,
# thread, then parallel arrays of the batch: ns, id, parent, floor; then every id and parent.
FORKED_CHECKPOINTS_10 = """
SELECT b.ns, b.id FROM unnest(%(ns)s::text[], %(ids)s::text[], %(parents)s::text[], %(floors)s::text[])
    AS b(ns, id, parent, floor)
WHERE NOT EXISTS (
    SELECT 1 FROM {s}.checkpoints c WHERE c.tenant_id = %(tenant)s AND c.thread_id = %(thread)s
    AND c.checkpoint_ns = b.ns AND c.checkpoint_id = b.id
) AND (
    EXISTS (
        SELECT 1 FROM {s}.checkpoints c WHERE c.tenant_id = %(tenant)s AND c.thread_id = %(thread)s
        AND c.checkpoint_ns = b.ns AND c.checkpoint_id > b.floor AND c.checkpoint_id <> ALL(%(known)s::text[])
    ) OR EXISTS (
        SELECT 1 FROM {s}.written_through w
        JOIN {s}.checkpoints c ON c.tenant_id = w.tenant_id AND c.thread_id = w.thread_id
            AND c.checkpoint_ns = w.checkpoint_ns AND c.checkpoint_id = w.checkpoint_id
        WHERE w.tenant_id = %(tenant)s AND w.thread_id = %(thread)s AND w.checkpoint_ns = b.ns
        AND w.parent_checkpoint_id = b.parent AND w.checkpoint_id <> ALL(%(known)s::text[])
    )
)
ORDER BY b.ns, b.id
"""
# Parts of migration 10's fork check that migration 11's replaces.
_FORK_BATCH = """SELECT b.ns, b.id FROM unnest(%(ns)s::text[], %(ids)s::text[], %(parents)s::text[], %(floors)s::text[])
    AS b(ns, id, parent, floor)
"""
_FORK_STORED = """NOT EXISTS (
    SELECT 1 FROM {s}.checkpoints c WHERE c.tenant_id = %(tenant)s AND c.thread_id = %(thread)s
    AND c.checkpoint_ns = b.ns AND c.checkpoint_id = b.id
)"""
_FORK_NEWER = """SELECT 1 FROM {s}.checkpoints c WHERE c.tenant_id = %(tenant)s AND c.thread_id = %(thread)s
        AND c.checkpoint_ns = b.ns AND c.checkpoint_id > b.floor AND c.checkpoint_id <> ALL(%(known)s::text[])"""


def _replaced(text: str, *pairs: tuple[str, str]) -> str:
    """`text` with each (old, new) replaced once; an `old` not found is an error (sql.py's own)."""
    for old, new in pairs:
        if old not in text:
            raise ValueError(f"statement fragment not found: {old[:60]!r}")
        text = text.replace(old, new, 1)
    return text


# The same check as migration 11 has it, its work bounded by what Postgres holds of the thread from
# the batch's oldest floor on (usually nothing: the batch is the thread's newest), read once per
# namespace along the primary key (the ORDER BY makes it the only index that serves), whatever the
# plan: migration 10's looked, for each batch row, through the tenant's checkpoints by the audit
# index when planned while the table was small (69 ms for 50 rows in a tenant of 10,000). Its
# text is migration 10's with the parts above replaced, the written-through sibling kept.
FORKED_CHECKPOINTS = """
WITH b AS MATERIALIZED (
    SELECT * FROM unnest(%(ns)s::text[], %(ids)s::text[], %(parents)s::text[], %(floors)s::text[])
        AS b(ns, id, parent, floor)
), stored AS MATERIALIZED (
    SELECT n.ns, c.checkpoint_id AS id
    FROM (SELECT b.ns, min(b.floor) AS floor FROM b GROUP BY b.ns) AS n
    CROSS JOIN LATERAL (
        SELECT c.checkpoint_id FROM {s}.checkpoints c
        WHERE c.tenant_id = %(tenant)s AND c.thread_id = %(thread)s AND c.checkpoint_ns = n.ns
            AND c.checkpoint_id >= n.floor
        ORDER BY c.checkpoint_id
    ) AS c
)""" + _replaced(
    FORKED_CHECKPOINTS_10,
    (_FORK_BATCH, "SELECT b.ns, b.id FROM b\n"),
    (_FORK_STORED, "NOT EXISTS (SELECT 1 FROM stored s WHERE s.ns = b.ns AND s.id = b.id)"),
    (_FORK_NEWER, "SELECT 1 FROM stored s WHERE s.ns = b.ns AND s.id > b.floor AND s.id <> ALL(%(known)s::text[])"),
)
# --- partitioned layout (migrations.py) ----------------------------------------------------------
# A schema set up with `partitions=N` gets every tenant table hash-partitioned by tenant_id: the
# same migrations, each CREATE TABLE followed by its N partitions, and row-level security
# enabled, forced and given the tenant policy on every partition too (a query through the parent
# is checked against the parent's policy, one that names a partition directly against the
# partition's own). Indexes created on the parent cascade to every partition.

PARTITION_BY_TENANT = " PARTITION BY HASH (tenant_id)"
CREATE_PARTITION = """
CREATE TABLE {s}.{partition} PARTITION OF {s}.{table} FOR VALUES WITH (MODULUS {n}, REMAINDER {i});"""
PARTITION_RLS = _RLS
# The partition count of a schema's checkpoints table; no row when it is not partitioned.
# Param: the table as text ('"schema".checkpoints').
SCHEMA_PARTITIONS = """
SELECT count(i.inhrelid) FROM pg_partitioned_table p
LEFT JOIN pg_inherits i ON i.inhparent = p.partrelid
WHERE p.partrelid = to_regclass(%s)
GROUP BY p.partrelid
"""

# --- flush (upsert) ------------------------------------------------------------------------------

# Each kind of row goes in as one statement over parallel arrays (one per column, `unnest`),
# not one statement per row (executemany): fewer protocol messages and less client work per row
# (a flush of 44 rows: 1.3 instead of 1.9 ms of the flusher's CPU, which competes with the graph
# for the interpreter). The tenant is one parameter: a flush transaction is a tenant's. The arrays
# travel in binary (%b): as text every bytea element is hex-escaped by the client, which cost
# more than the per-row statements saved.
INSERT_BLOBS = """
INSERT INTO {s}.checkpoint_blobs
    (tenant_id, thread_id, checkpoint_ns, channel, version, type, data, blob_ref, value)
SELECT %s, u.thread_id, u.checkpoint_ns, u.channel, u.version, u.type, u.data, u.blob_ref,
    u.value::jsonb
FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::bytea[], %b::text[],
    %b::text[]) AS u(thread_id, checkpoint_ns, channel, version, type, data, blob_ref, value)
ON CONFLICT (tenant_id, thread_id, checkpoint_ns, channel, version) DO NOTHING
"""

# A checkpoint row's bare values (migration 9). `inherit`: the batch did not know them all (a
# write-through, or a checkpoint some of whose values Redis lost: the flusher knows the values
# its batch carries, not those an earlier flush wrote): the other bare values of its channel
# versions are taken from the rows of its thread that name them (same channel, same version:
# the same value; the tenant is the flush transaction's).
_BARE_VALUES = """CASE WHEN u.inherit THEN nullif(coalesce(u.bare_values::jsonb, '{}') || coalesce((
        SELECT jsonb_object_agg(e.key, e.value) FROM {s}.checkpoints p
        CROSS JOIN LATERAL jsonb_each(p.bare_values) AS e
        WHERE p.tenant_id = current_setting('{setting}', true) AND p.thread_id = u.thread_id
            AND p.checkpoint_ns = u.checkpoint_ns AND p.bare_values IS NOT NULL
            AND p.checkpoint -> 'channel_versions' -> e.key = u.checkpoint::jsonb -> 'channel_versions' -> e.key
    ), '{}'), '{}') ELSE u.bare_values::jsonb END""".replace("{setting}", TENANT_SETTING)

INSERT_CHECKPOINTS = """
INSERT INTO {s}.checkpoints
    (tenant_id, thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, step, source,
     run_id, created_at, checkpoint, metadata, checkpoint_type, checkpoint_bytes, metadata_type,
     metadata_bytes, blob_fields, bare_values)
SELECT %s, u.thread_id, u.checkpoint_ns, u.checkpoint_id, u.parent_checkpoint_id, u.step,
    u.source, u.run_id, coalesce(u.created_at, now()), u.checkpoint::jsonb, u.metadata::jsonb,
    u.checkpoint_type, u.checkpoint_bytes, u.metadata_type, u.metadata_bytes,
    u.blob_fields::jsonb, {bare}
FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::int4[], %b::text[], %b::text[],
    %b::timestamptz[], %b::text[], %b::text[], %b::text[], %b::bytea[], %b::text[], %b::bytea[],
    %b::text[], %b::text[], %b::bool[]) AS u(thread_id, checkpoint_ns, checkpoint_id,
    parent_checkpoint_id, step, source, run_id, created_at, checkpoint, metadata, checkpoint_type,
    checkpoint_bytes, metadata_type, metadata_bytes, blob_fields, bare_values, inherit)
ON CONFLICT (tenant_id, thread_id, checkpoint_ns, checkpoint_id) DO NOTHING
""".replace("{bare}", _BARE_VALUES)

_WRITES_INSERT = """
INSERT INTO {s}.checkpoint_writes
    (tenant_id, thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, type, data,
     blob_ref, task_path, value, created_at)
SELECT %s, u.thread_id, u.checkpoint_ns, u.checkpoint_id, u.task_id, u.idx, u.channel, u.type,
    u.data, u.blob_ref, u.task_path, u.value::jsonb, coalesce(to_timestamp(u.created_at), now())
FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::int4[], %b::text[], %b::text[],
    %b::bytea[], %b::text[], %b::text[], %b::text[], %b::float8[]) AS u(thread_id,
    checkpoint_ns, checkpoint_id, task_id, idx, channel, type, data, blob_ref, task_path, value,
    created_at)
ON CONFLICT (tenant_id, thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
"""
INSERT_WRITES = _WRITES_INSERT + "DO NOTHING"
# Special writes (idx < 0: errors, interrupts, resume...) overwrite, as in LangGraph's savers.
# One statement may not update a row twice: the caller passes each key once (the last write).
UPSERT_SPECIAL_WRITES = (
    _WRITES_INSERT
    + """DO UPDATE SET channel = EXCLUDED.channel, type = EXCLUDED.type, data = EXCLUDED.data,
    blob_ref = EXCLUDED.blob_ref, task_path = EXCLUDED.task_path, value = EXCLUDED.value,
    created_at = EXCLUDED.created_at
"""
)



def _insert_absent(insert: str, table: str, key: str) -> str:
    """An `unnest` insert above as a plain insert of the rows not stored yet (`key`: the primary
    key columns after the tenant). `ON CONFLICT` inserts each row speculatively, which costs a
    second WAL record per row (a confirmation, ~50 bytes); this costs none. Two writers that
    insert the same row at once make one fail with a unique violation: the flush then runs again
    with the `ON CONFLICT` statement (durable.ops.upsert_batch_op). Migration 10's flush; migration
    11's inserts are plain, without the look for stored rows (see MIGRATION_11_BOUNDED_FLUSH)."""
    conflict = insert.index("ON CONFLICT")
    matches = " AND ".join(f"x.{c} = u.{c}" for c in key.split(", "))
    return (
        insert[:conflict].replace("SELECT %s, ", "SELECT k.tenant, ", 1)
        .replace("FROM unnest(", "FROM (SELECT %s::text AS tenant) AS k, unnest(", 1)
        + f"WHERE NOT EXISTS (\n    SELECT 1 FROM {{s}}.{table} x WHERE x.tenant_id = k.tenant AND {matches}\n)\n"
    )  # fmt: skip


INSERT_NEW_BLOBS = _insert_absent(INSERT_BLOBS, "checkpoint_blobs", "thread_id, checkpoint_ns, channel, version")
INSERT_NEW_CHECKPOINTS = _insert_absent(INSERT_CHECKPOINTS, "checkpoints", "thread_id, checkpoint_ns, checkpoint_id")
INSERT_NEW_WRITES = _insert_absent(
    INSERT_WRITES, "checkpoint_writes", "thread_id, checkpoint_ns, checkpoint_id, task_id, idx"
)
# Migration 10's plain flush's special writes (this release's: lts_write_specials, migration 11):
# those stored already are overwritten here, then the others go in by INSERT_NEW_WRITES
# (UPSERT_SPECIAL_WRITES' ON CONFLICT would log a confirmation per new row, or lock a stored one
# first). Same parameters as the inserts.
UPDATE_SPECIAL_WRITES = (
    """
UPDATE {s}.checkpoint_writes x SET channel = u.channel, type = u.type, data = u.data,
    blob_ref = u.blob_ref, task_path = u.task_path, value = u.value::jsonb,
    created_at = coalesce(to_timestamp(u.created_at), now())
FROM (SELECT %s::text AS tenant) AS k, """
    + _WRITES_INSERT[_WRITES_INSERT.index("unnest(") : _WRITES_INSERT.index("ON CONFLICT")]
    + """WHERE x.tenant_id = k.tenant AND x.thread_id = u.thread_id AND x.checkpoint_ns = u.checkpoint_ns
    AND x.checkpoint_id = u.checkpoint_id AND x.task_id = u.task_id AND x.idx = u.idx
"""
)
UNIQUE_VIOLATION = "23505"

# --- reads ---------------------------------------------------------------------------------------
# One statement returns checkpoints with their blobs and writes (one snapshot: a concurrent prune
# cannot remove a blob between reading a checkpoint and reading its values). The value and write
# lookups name the tenant as a parameter, not through `c`, so that in a schema partitioned by
# tenant the planner prunes them to the tenant's partition too (tests/servers/test_partitioned_schema.py). Blob and write
# columns travel as bytea arrays, as in langgraph-checkpoint-postgres.

# The checkpoint with its values and writes; `{tenant}` is the tenant's placeholder (a statement
# parameter here, a function argument in migration 7).
_TUPLE_SELECT = """
SELECT c.thread_id, c.checkpoint_ns, c.checkpoint_id, c.parent_checkpoint_id, c.run_id,
    c.checkpoint_type, c.checkpoint_bytes, c.metadata_type, c.metadata_bytes, c.blob_fields,
    (
        SELECT array_agg(ARRAY[convert_to(b.channel, 'UTF8'), convert_to(b.version, 'UTF8'),
            convert_to(b.type, 'UTF8'), b.data, convert_to(b.blob_ref, 'UTF8')])
        FROM jsonb_array_elements(c.blob_fields) AS f
        JOIN {s}.checkpoint_blobs b
            ON b.tenant_id = {tenant} AND b.thread_id = c.thread_id
            AND b.checkpoint_ns = c.checkpoint_ns AND b.channel = f ->> 0
            AND b.version = f ->> 1
    ) AS blobs,
    (
        SELECT array_agg(ARRAY[convert_to(w.task_id, 'UTF8'), convert_to(w.idx::text, 'UTF8'),
            convert_to(w.channel, 'UTF8'), convert_to(w.type, 'UTF8'), w.data,
            convert_to(w.task_path, 'UTF8'), convert_to(w.blob_ref, 'UTF8')])
        FROM {s}.checkpoint_writes w
        WHERE w.tenant_id = {tenant} AND w.thread_id = c.thread_id
            AND w.checkpoint_ns = c.checkpoint_ns AND w.checkpoint_id = c.checkpoint_id
    ) AS writes
FROM {s}.checkpoints c
WHERE c.tenant_id = {tenant}"""

# The blob fields of checkpoint row `{row}`: its column, or where that is NULL (migration 8) the
# [channel, version] pairs of its checkpoint's `channel_versions`, which they were derived from.
_BLOB_FIELDS = (
    "coalesce({row}.blob_fields, (SELECT jsonb_agg(jsonb_build_array(v.key, v.value)) "
    "FROM jsonb_each_text({row}.checkpoint -> 'channel_versions') AS v))"
)


def blob_fields(row: str) -> str:
    """The SQL expression of a checkpoint row's blob fields (see _BLOB_FIELDS)."""
    return _BLOB_FIELDS.replace("{row}", row)


# A record's checkpoint and metadata: the serializer's bytes, or (migration 8; type JSON_RECORD,
# bytes NULL) the text of the JSONB column, which holds the same value exactly.
_RECORD_COLUMNS_7 = "c.checkpoint_type, c.checkpoint_bytes, c.metadata_type, c.metadata_bytes, c.blob_fields,"
_RECORD_COLUMNS = (
    "c.checkpoint_type, coalesce(c.checkpoint_bytes, convert_to(c.checkpoint::text, 'UTF8')),\n"
    "    c.metadata_type, coalesce(c.metadata_bytes, convert_to(c.metadata::text, 'UTF8')),\n"
    "    " + blob_fields("c") + ","
)
_READ_SELECT = _TUPLE_SELECT.replace(_RECORD_COLUMNS_7, _RECORD_COLUMNS).replace(
    "jsonb_array_elements(c.blob_fields)", "jsonb_array_elements(" + blob_fields("c") + ")"
)
# Migration 9's reading of a value: a row's bytes, or (type JSON_RECORD, data NULL) the text of its
# JSONB, which holds the same value exactly; and a value the checkpoint row names bare (an empty
# channel, a None: `bare_values`, channel -> type) is its type with no bytes, without a row.
_STORED_BYTES = (
    "CASE WHEN {a}.type = 'lts-json' THEN coalesce({a}.data || decode('0a', 'hex'), ''::bytea)"
    " || convert_to({a}.value::text, 'UTF8') ELSE {a}.data END"
)


def stored_bytes(alias: str) -> str:
    """The SQL expression of a value or write row's bytes: its `data`, or for a row that keeps
    its value as its JSONB alone (type JSON_RECORD, migration 9) the key order it keeps, a
    newline, and the JSON's text (records/key_order.py; codec.loads_record reads them)."""
    return _STORED_BYTES.replace("{a}", alias)


_VALUES_8 = """SELECT array_agg(ARRAY[convert_to(b.channel, 'UTF8'), convert_to(b.version, 'UTF8'),
            convert_to(b.type, 'UTF8'), b.data, convert_to(b.blob_ref, 'UTF8')])"""
_VALUES_9 = """SELECT array_agg(ARRAY[convert_to(f ->> 0, 'UTF8'), convert_to(f ->> 1, 'UTF8'),
            convert_to(coalesce(b.type, c.bare_values ->> (f ->> 0)), 'UTF8'),
            CASE WHEN b.type IS NULL THEN ''::bytea ELSE """ + stored_bytes("b") + """ END,
            convert_to(b.blob_ref, 'UTF8')])"""
_VALUES_JOIN_8 = """
        JOIN {s}.checkpoint_blobs b
            ON b.tenant_id = {tenant} AND b.thread_id = c.thread_id
            AND b.checkpoint_ns = c.checkpoint_ns AND b.channel = f ->> 0
            AND b.version = f ->> 1
"""
_VALUES_JOIN_9 = _VALUES_JOIN_8.replace("JOIN", "LEFT JOIN", 1) + """        WHERE b.type IS NOT NULL OR c.bare_values ? (f ->> 0)
"""
_WRITE_DATA_8 = "convert_to(w.type, 'UTF8'), w.data,"
_WRITE_DATA_9 = "convert_to(w.type, 'UTF8'), " + stored_bytes("w") + ","
_READ_SELECT_9 = _READ_SELECT
for _old, _new in ((_VALUES_8, _VALUES_9), (_VALUES_JOIN_8, _VALUES_JOIN_9), (_WRITE_DATA_8, _WRITE_DATA_9)):
    assert _READ_SELECT_9.count(_old) == 1, _old
    _READ_SELECT_9 = _READ_SELECT_9.replace(_old, _new)
# `list` reads many checkpoints of a thread: each value it references is fetched by one primary-key
# lookup, in a LATERAL subquery whose LIMIT 1 (one row per channel version) keeps the planner from
# flattening it into a join. As a join, a thread whose rows are not yet ANALYZEd, or a small table,
# got a hash or sequential scan of all the thread's values per checkpoint: a history of 500
# checkpoints read 500 x 1,000 value rows.
_VALUES_JOIN = _VALUES_JOIN_9
_VALUES_LOOKUP = """
        LEFT JOIN LATERAL (
            SELECT b.type, b.data, b.value, b.blob_ref FROM {s}.checkpoint_blobs b
            WHERE b.tenant_id = {tenant} AND b.thread_id = c.thread_id
                AND b.checkpoint_ns = c.checkpoint_ns AND b.channel = f ->> 0 AND b.version = f ->> 1
            LIMIT 1
        ) AS b ON true
        WHERE b.type IS NOT NULL OR c.bare_values ? (f ->> 0)
"""
_LIST_SELECT = _READ_SELECT_9.replace(_VALUES_JOIN, _VALUES_LOOKUP)
assert _VALUES_LOOKUP in _LIST_SELECT  # the join was found and replaced
SELECT_TUPLES = _LIST_SELECT.replace("{tenant}", "%(tenant)s") + """ {where}
ORDER BY c.checkpoint_id DESC, c.thread_id, c.checkpoint_ns
LIMIT %(limit)s
"""
# The saver's own hot reads as PL/pgSQL functions: a function keeps the plans of its statements per
# server connection, which is safe behind PgBouncer in transaction mode (psycopg's prepared
# statements are not, so they are off: connections.py), and spares each call the planning of the
# statement above (~0.8 ms of a new thread's first read). SECURITY INVOKER (the default): the
# caller's row-level security and tenant setting apply. The bodies are SELECT_TUPLES' statement for
# one thread and namespace, with the tenant a parameter of every lookup (partition pruning).
# Part of migration 7: its text must not change (add a new function in a new migration instead).


def _tuple_bodies(select: str) -> tuple[str, str]:
    """The statements of `lts_get_tuple` made of `select`: the latest, and one by id."""
    columns = select.replace("{tenant}", "p_tenant") + " AND c.thread_id = p_thread AND c.checkpoint_ns = p_ns"
    return columns + "\nORDER BY c.checkpoint_id DESC\nLIMIT 1", columns + " AND c.checkpoint_id = p_checkpoint_id"


def _tuple_function(select: str, create: str) -> str:
    """`lts_get_tuple` (`create`: CREATE or CREATE OR REPLACE) with the statement `select`."""
    latest, by_id = _tuple_bodies(select)
    return (
        """
""" + create + """ FUNCTION {s}.lts_get_tuple(p_tenant text, p_thread text, p_ns text, p_checkpoint_id text)
RETURNS TABLE (thread_id text, checkpoint_ns text, checkpoint_id text, parent_checkpoint_id text,
    run_id text, checkpoint_type text, checkpoint_bytes bytea, metadata_type text,
    metadata_bytes bytea, blob_fields jsonb, blobs bytea[], writes bytea[])
LANGUAGE plpgsql STABLE SECURITY INVOKER AS $lts_tuple$
#variable_conflict use_column
BEGIN
    IF p_checkpoint_id IS NULL THEN
        RETURN QUERY"""
        + latest
        + """;
    ELSE
        RETURN QUERY"""
        + by_id
        + """;
    END IF;
END
$lts_tuple$;
"""
    )


# One checkpoint of a namespace with its values and writes: the latest when the id is NULL.
MIGRATION_7_TUPLE_FUNCTION = _tuple_function(_TUPLE_SELECT, "CREATE")
# The statements of the function as migration 9 left it (the one every read runs).
TUPLE_LATEST_BODY, TUPLE_BY_ID_BODY = _tuple_bodies(_READ_SELECT_9)

# Less write-ahead log per checkpoint, the readable copies kept (see docs/design.md, "Write-ahead
# log"): a checkpoint row no longer repeats what its JSONB columns hold exactly: the serializer's
# bytes of the checkpoint and metadata (NULL, type JSON_RECORD, where the JSON is the same value)
# and the blob fields (NULL where they are its channel_versions). Rows written before keep theirs;
# readers take either. The index of writes by (thread, channel, time) goes: the primary key
# serves every lookup of the saver's, by thread. `lts_get_tuple` reads both kinds of rows (a
# process still running the older release reads through it too).
MIGRATION_8_LEANER_ROWS = (
    """
ALTER TABLE {s}.checkpoints
    ALTER COLUMN checkpoint_bytes DROP NOT NULL,
    ALTER COLUMN metadata_bytes DROP NOT NULL,
    ALTER COLUMN blob_fields DROP NOT NULL,
    ALTER COLUMN blob_fields DROP DEFAULT;
DROP INDEX IF EXISTS {s}.checkpoint_writes_audit_idx;
"""
    + _tuple_function(_READ_SELECT, "CREATE OR REPLACE")
)

# Less write-ahead log per channel value (see docs/design.md, "Write-ahead log"): a checkpoint row
# names the values it references that are a type alone (an empty channel, a None) in
# `bare_values` (channel -> type), and no value row is written for them; a value or write whose
# JSONB holds it exactly (audit.exact_json: same types, same key order) keeps no serializer bytes
# (type JSON_RECORD, data NULL). Rows written before keep theirs; readers take either. The new
# CHECK constraints are implied by the old ones: existing rows need no scan (NOT VALID).
MIGRATION_9_BARE_AND_JSON_VALUES = (
    """
ALTER TABLE {s}.checkpoints ADD COLUMN bare_values jsonb;
ALTER TABLE {s}.checkpoint_blobs DROP CONSTRAINT IF EXISTS checkpoint_blobs_check,
    ADD CONSTRAINT checkpoint_blobs_stored CHECK (data IS NOT NULL OR blob_ref IS NOT NULL OR value IS NOT NULL);
ALTER TABLE {s}.checkpoint_writes DROP CONSTRAINT IF EXISTS checkpoint_writes_check,
    ADD CONSTRAINT checkpoint_writes_stored CHECK (data IS NOT NULL OR blob_ref IS NOT NULL OR value IS NOT NULL);
"""
    + _tuple_function(_READ_SELECT_9, "CREATE OR REPLACE")
)
GET_TUPLE = "SELECT * FROM {s}.lts_get_tuple(%s, %s, %s, %s)"

# --- the flush's statements as functions (migration 10) ------------------------------------------
# Each statement of the plain flush (fork check, the inserts of rows not stored yet, the special
# writes' update, the late naming of bare values) as a PL/pgSQL function: a function keeps the
# plans of its statements per server connection (safe behind PgBouncer in transaction mode, like
# `lts_get_tuple`), where the statement sent as text is parsed and planned again in every flush
# (~1.5 ms of server time for a case_8842 interrupt's flush, most of it planning). Their plans
# are generic from the first call (`plan_cache_mode`): the statements look rows up by primary
# key whatever the arrays hold, and a custom plan, which the server would otherwise make for
# each of a connection's first calls and keep making where it estimates one cheaper, is planning
# again (the fork check: 0.42 ms per flush custom, 0.15 generic). SECURITY
# INVOKER (the default): the caller's row-level security and tenant setting apply. The bodies are
# the statements above, their placeholders the function's parameters, in order; the functions are
# called with the same parameters the statements take (`flush_call`). Their text is migration
# 10's: a later change of a statement above needs a new migration.
_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%[sb]")
_CAST = re.compile(r"::(\w+(?:\[\])?)")


def _placeholders(template: str) -> tuple[list[str], list[str]]:
    """The template's parameters in order of first use (a name, or its position) and the SQL
    type each is cast to where first used (text when not cast)."""
    names: list[str] = []
    types: list[str] = []
    for i, match in enumerate(_PLACEHOLDER.finditer(template)):
        name = match.group(1) or str(i)
        if name in names:
            continue
        cast = _CAST.match(template, match.end())
        names.append(name)
        types.append(cast.group(1) if cast else "text")
    return names, types


@lru_cache(maxsize=64)
def param_types(template: str) -> dict[str, str]:
    """The SQL type of each of the template's parameters, by name or position: its column arrays
    are dumped by that type (`_sansio.pgarrays`)."""
    names, types = _placeholders(template)
    return dict(zip(names, types, strict=True))


def _as_function(name: str, template: str, *, fetch: bool, create: str = "CREATE") -> tuple[str, str]:
    """(CREATE statement, call) of `template` as the function `name`: it returns the rows of a
    query (`fetch`), else the count of rows the statement wrote. The call takes the template's
    own parameters (`%s`/`%b` by position, or `%(name)s` by name), cast as the template casts them."""
    names, types = _placeholders(template)
    numbered = {n: f"${k}" for k, n in enumerate(names, start=1)}
    position = iter(range(len(template)))

    def number(match: re.Match[str]) -> str:
        i = next(position)  # every placeholder counts, as in `_placeholders`
        return numbered[match.group(1) or str(i)]

    body = _PLACEHOLDER.sub(number, template).strip()
    if fetch:
        returns, run = "TABLE (fork_ns text, fork_id text)", f"RETURN QUERY {body};"
    else:
        returns, run = "bigint", f"{body};\n    GET DIAGNOSTICS lts_rows = ROW_COUNT;\n    RETURN lts_rows;"
    definition = f"""
{create} FUNCTION {{s}}.{name}({", ".join(types)}) RETURNS {returns} LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan AS $lts_flush$
DECLARE
    lts_rows bigint;
BEGIN
    {run}
END
$lts_flush$;
"""
    marks = [(f"%({n})s" if not n.isdigit() else "%b" if t.endswith("[]") else "%s") + "::" + t for n, t in zip(names, types, strict=True)]
    return definition, f"SELECT * FROM {{s}}.{name}({', '.join(marks)})"


_FLUSH_FUNCTIONS = {
    "lts_forked_checkpoints": (FORKED_CHECKPOINTS_10, True),
    "lts_insert_new_blobs": (INSERT_NEW_BLOBS, False),
    "lts_insert_new_checkpoints": (INSERT_NEW_CHECKPOINTS, False),
    "lts_insert_new_writes": (INSERT_NEW_WRITES, False),
    "lts_update_special_writes": (UPDATE_SPECIAL_WRITES, False),
    "lts_name_late_bare_values": (NAME_LATE_BARE_VALUES_10, False),
}
_FLUSH_DEFINED = {name: _as_function(name, t, fetch=f) for name, (t, f) in _FLUSH_FUNCTIONS.items()}
MIGRATION_10_FLUSH_FUNCTIONS = "".join(create for create, _ in _FLUSH_DEFINED.values())

# Migration 11: flush statements whose cost does not hang on the plan a connection made first. A
# function keeps the generic plan of its first call, made from what the tables held then: in a
# new schema, nothing, and the server then takes a lookup by tenant alone for as good as one by
# the whole key; migration 10's statements kept such plans until autovacuum analyzed the tables,
# each flush reading the thread's or the tenant's rows again (a DeltaChannel conversation's flush
# grew to ~17 ms of statements in 100 turns). The fork check and the naming of late bare values
# are replaced by their bounded forms (same parameters and results: a process of the release
# before calls them too); rows go in by plain inserts, without the look for rows already stored:
# the primary key finds those, and a unique violation (a flush replayed after its acknowledgement
# was lost, or another writer's row) makes the flush run again with `ON CONFLICT DO NOTHING`
# (durable.ops._inserts_op), as it did for a concurrent insert.
INSERT_PLAIN_BLOBS = INSERT_BLOBS[: INSERT_BLOBS.index("ON CONFLICT")]
INSERT_PLAIN_CHECKPOINTS = INSERT_CHECKPOINTS[: INSERT_CHECKPOINTS.index("ON CONFLICT")]
INSERT_PLAIN_WRITES = INSERT_WRITES[: INSERT_WRITES.index("ON CONFLICT")]
_BOUNDED_FUNCTIONS = {  # name: (statement, returns its rows, replaces migration 10's)
    "lts_forked_checkpoints": (FORKED_CHECKPOINTS, True, True),
    "lts_name_late_bare_values": (NAME_LATE_BARE_VALUES, False, True),
    "lts_insert_blobs": (INSERT_PLAIN_BLOBS, False, False),
    "lts_insert_checkpoints": (INSERT_PLAIN_CHECKPOINTS, False, False),
    "lts_insert_writes": (INSERT_PLAIN_WRITES, False, False),
}
_FLUSH_DEFINED_11 = {
    name: _as_function(name, t, fetch=f, create="CREATE OR REPLACE" if replaces else "CREATE")
    for name, (t, f, replaces) in _BOUNDED_FUNCTIONS.items()
}
# Special writes (an interrupt, an error: a few per flush) row by row, each by its whole primary
# key: an update, else an insert. Migration 10's update joined the batch with the tenant's writes
# and its insert looked for the rows not stored yet the same way, both planned while the table
# was small: each read all of the tenant's writes (a test counts them). Same parameters as the
# inserts; returns the rows written.
WRITE_SPECIALS_FUNCTION = """
CREATE FUNCTION {s}.lts_write_specials(p_tenant text, p_thread text[], p_ns text[], p_checkpoint text[],
    p_task text[], p_idx int4[], p_channel text[], p_type text[], p_data bytea[], p_blob_ref text[],
    p_task_path text[], p_value text[], p_created_at float8[]) RETURNS bigint LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan AS $lts_flush$
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_thread, 1), 0) LOOP
        UPDATE {s}.checkpoint_writes SET channel = p_channel[i], type = p_type[i], data = p_data[i],
            blob_ref = p_blob_ref[i], task_path = p_task_path[i], value = p_value[i]::jsonb,
            created_at = coalesce(to_timestamp(p_created_at[i]), now())
        WHERE tenant_id = p_tenant AND thread_id = p_thread[i] AND checkpoint_ns = p_ns[i]
            AND checkpoint_id = p_checkpoint[i] AND task_id = p_task[i] AND idx = p_idx[i];
        IF NOT FOUND THEN
            INSERT INTO {s}.checkpoint_writes (tenant_id, thread_id, checkpoint_ns, checkpoint_id, task_id,
                idx, channel, type, data, blob_ref, task_path, value, created_at)
            VALUES (p_tenant, p_thread[i], p_ns[i], p_checkpoint[i], p_task[i], p_idx[i], p_channel[i],
                p_type[i], p_data[i], p_blob_ref[i], p_task_path[i], p_value[i]::jsonb,
                coalesce(to_timestamp(p_created_at[i]), now()));
        END IF;
    END LOOP;
    RETURN coalesce(array_length(p_thread, 1), 0);
END
$lts_flush$;
"""
CALL_WRITE_SPECIALS = (
    "SELECT * FROM {s}.lts_write_specials(%s::text, %b::text[], %b::text[], %b::text[], %b::text[], %b::int4[],"
    " %b::text[], %b::text[], %b::bytea[], %b::text[], %b::text[], %b::text[], %b::float8[])"
)
MIGRATION_11_BOUNDED_FLUSH = "".join(create for create, _ in _FLUSH_DEFINED_11.values()) + WRITE_SPECIALS_FUNCTION
# The calls, with the statements' own parameters.
CALL_FORKED_CHECKPOINTS = _FLUSH_DEFINED_11["lts_forked_checkpoints"][1]
CALL_INSERT_BLOBS = _FLUSH_DEFINED_11["lts_insert_blobs"][1]
CALL_INSERT_CHECKPOINTS = _FLUSH_DEFINED_11["lts_insert_checkpoints"][1]
CALL_INSERT_WRITES = _FLUSH_DEFINED_11["lts_insert_writes"][1]
# The statements that write a flush's special writes (a release's choice: tests stand in others)
CALL_SPECIAL_WRITES: tuple[str, ...] = (CALL_WRITE_SPECIALS,)
CALL_NAME_LATE_BARE_VALUES = _FLUSH_DEFINED_11["lts_name_late_bare_values"][1]
# Whether a thread has any checkpoint, in any namespace (the primary key's prefix: an index probe)
THREAD_HAS_CHECKPOINTS = "SELECT EXISTS (SELECT 1 FROM {s}.checkpoints WHERE tenant_id = %s AND thread_id = %s)"

WHERE_THREAD = "AND c.thread_id = %(thread)s"
WHERE_NS = "AND c.checkpoint_ns = %(ns)s"
WHERE_CHECKPOINT_ID = "AND c.checkpoint_id = %(checkpoint_id)s"
WHERE_BEFORE = "AND c.checkpoint_id < %(before)s"
# Rows the caller already has (from Redis): skipped before their columns are read and sent.
WHERE_NOT_KNOWN = (
    "AND (c.thread_id, c.checkpoint_ns, c.checkpoint_id) NOT IN "
    "(SELECT * FROM unnest(%(known_thread)s::text[], %(known_ns)s::text[], %(known_id)s::text[]))"
)

# Writes to one channel of some checkpoints, given as parallel arrays (legacy.py reads the TASKS
# writes of the parents of checkpoints written before format 4 with it).
SELECT_CHANNEL_WRITES = """
SELECT w.thread_id, w.checkpoint_ns, w.checkpoint_id, w.task_id, w.idx, w.channel, w.type,
    {bytes_w}, w.task_path, w.blob_ref
FROM unnest(%(threads)s::text[], %(ns)s::text[], %(ids)s::text[]) AS p(thread_id, checkpoint_ns, checkpoint_id)
JOIN {s}.checkpoint_writes w
    ON w.tenant_id = %(tenant)s AND w.thread_id = p.thread_id
    AND w.checkpoint_ns = p.checkpoint_ns AND w.checkpoint_id = p.checkpoint_id
WHERE w.channel = %(channel)s
""".replace("{bytes_w}", stored_bytes("w"))


@lru_cache(maxsize=256)
def select_tuples(schema: str, conditions: tuple[str, ...]) -> str:
    """SELECT_TUPLES narrowed by some of the WHERE_* constants above."""
    return render(SELECT_TUPLES.replace("{where}", " ".join(conditions)), schema)


LIST_THREADS = """
SELECT thread_id, count(*), max(checkpoint_id), max(created_at), max(flushed_at)
FROM {s}.checkpoints
WHERE tenant_id = %s
GROUP BY thread_id
ORDER BY thread_id
"""

# --- copy ----------------------------------------------------------------------------------------
# Params: %(tenant)s, %(src)s, %(dst)s. Existing rows of the target are kept (idempotent retry).

COPY_BLOBS = """
INSERT INTO {s}.checkpoint_blobs
    (tenant_id, thread_id, checkpoint_ns, channel, version, type, data, blob_ref, value)
SELECT tenant_id, %(dst)s, checkpoint_ns, channel, version, type, data, blob_ref, value
FROM {s}.checkpoint_blobs WHERE tenant_id = %(tenant)s AND thread_id = %(src)s
ON CONFLICT DO NOTHING
"""
COPY_CHECKPOINTS = """
INSERT INTO {s}.checkpoints
    (tenant_id, thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, step, source,
     run_id, created_at, checkpoint, metadata, checkpoint_type, checkpoint_bytes, metadata_type,
     metadata_bytes, blob_fields, bare_values)
SELECT tenant_id, %(dst)s, checkpoint_ns, checkpoint_id, parent_checkpoint_id, step, source,
    run_id, created_at, checkpoint, metadata, checkpoint_type, checkpoint_bytes, metadata_type,
    metadata_bytes, blob_fields, bare_values
FROM {s}.checkpoints WHERE tenant_id = %(tenant)s AND thread_id = %(src)s
ON CONFLICT DO NOTHING
"""
COPY_WRITES = """
INSERT INTO {s}.checkpoint_writes
    (tenant_id, thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, type, data,
     blob_ref, task_path, value, created_at)
SELECT tenant_id, %(dst)s, checkpoint_ns, checkpoint_id, task_id, idx, channel, type, data,
    blob_ref, task_path, value, created_at
FROM {s}.checkpoint_writes WHERE tenant_id = %(tenant)s AND thread_id = %(src)s
ON CONFLICT DO NOTHING
"""

# --- retention -----------------------------------------------------------------------------------
# One statement deletes the `doomed` checkpoints of some threads with their writes, the blobs
# only they referenced, clears dangling parent pointers, and reports the blob-store refs no
# surviving row of the tenant holds. `{heads}` are checkpoints to keep; `kept` extends them along
# parent links while a checkpoint carries DeltaChannel counters (its value is rebuilt from its
# ancestors' writes), up to the snapshot. `{candidates}` narrows what may be deleted.
# Params: %(tenant)s, %(threads)s (text[]), %(everything)s (bool: all writes and blobs of the
# threads too), plus those of the fragments.

DELETE_CHECKPOINTS = """
WITH RECURSIVE heads AS (
    {heads}
),
kept AS (
    SELECT h.thread_id, h.checkpoint_ns, h.checkpoint_id FROM heads h
    UNION
    SELECT p.thread_id, p.checkpoint_ns, p.checkpoint_id
    FROM kept k
    JOIN {s}.checkpoints c
        ON c.tenant_id = %(tenant)s AND c.thread_id = k.thread_id
        AND c.checkpoint_ns = k.checkpoint_ns AND c.checkpoint_id = k.checkpoint_id
    JOIN {s}.checkpoints p
        ON p.tenant_id = %(tenant)s AND p.thread_id = c.thread_id
        AND p.checkpoint_ns = c.checkpoint_ns AND p.checkpoint_id = c.parent_checkpoint_id
    WHERE c.metadata ? 'counters_since_delta_snapshot'
),
doomed AS (
    SELECT c.thread_id, c.checkpoint_ns, c.checkpoint_id, {fields_c} AS blob_fields
    FROM {s}.checkpoints c
    WHERE c.tenant_id = %(tenant)s AND c.thread_id = ANY(%(threads)s) AND ({candidates})
    AND NOT EXISTS (
        SELECT 1 FROM kept k WHERE k.thread_id = c.thread_id
        AND k.checkpoint_ns = c.checkpoint_ns AND k.checkpoint_id = c.checkpoint_id
    )
),
dc AS (
    DELETE FROM {s}.checkpoints c USING doomed d
    WHERE c.tenant_id = %(tenant)s AND c.thread_id = d.thread_id
    AND c.checkpoint_ns = d.checkpoint_ns AND c.checkpoint_id = d.checkpoint_id
    RETURNING 1
),
dw AS (
    DELETE FROM {s}.checkpoint_writes w
    WHERE w.tenant_id = %(tenant)s AND w.thread_id = ANY(%(threads)s) AND (
        %(everything)s OR EXISTS (
            SELECT 1 FROM doomed d WHERE d.thread_id = w.thread_id
            AND d.checkpoint_ns = w.checkpoint_ns AND d.checkpoint_id = w.checkpoint_id
        )
    )
    RETURNING w.thread_id, w.checkpoint_ns, w.checkpoint_id, w.task_id, w.idx, w.blob_ref
),
freed AS (
    SELECT DISTINCT d.thread_id, d.checkpoint_ns, f ->> 0 AS channel, f ->> 1 AS version
    FROM doomed d CROSS JOIN LATERAL jsonb_array_elements(d.blob_fields) AS f
),
live AS (
    SELECT DISTINCT c.thread_id, c.checkpoint_ns, f ->> 0 AS channel, f ->> 1 AS version
    FROM {s}.checkpoints c CROSS JOIN LATERAL jsonb_array_elements({fields_c}) AS f
    WHERE c.tenant_id = %(tenant)s AND c.thread_id = ANY(%(threads)s)
    AND NOT EXISTS (
        SELECT 1 FROM doomed d WHERE d.thread_id = c.thread_id
        AND d.checkpoint_ns = c.checkpoint_ns AND d.checkpoint_id = c.checkpoint_id
    )
),
db AS (
    DELETE FROM {s}.checkpoint_blobs b
    WHERE b.tenant_id = %(tenant)s AND b.thread_id = ANY(%(threads)s)
    AND (%(everything)s OR EXISTS (
        SELECT 1 FROM freed r WHERE r.thread_id = b.thread_id
        AND r.checkpoint_ns = b.checkpoint_ns AND r.channel = b.channel AND r.version = b.version
    ))
    AND NOT EXISTS (
        SELECT 1 FROM live r WHERE r.thread_id = b.thread_id
        AND r.checkpoint_ns = b.checkpoint_ns AND r.channel = b.channel AND r.version = b.version
    )
    RETURNING b.thread_id, b.checkpoint_ns, b.channel, b.version, b.blob_ref
),
orphaned AS (
    -- A ref is orphaned when every row of the tenant that holds it (as the statement's snapshot
    -- sees them, before these deletions) is among the rows deleted here.
    SELECT g.blob_ref
    FROM (SELECT blob_ref FROM dw UNION ALL SELECT blob_ref FROM db) AS g
    WHERE g.blob_ref IS NOT NULL
    GROUP BY g.blob_ref
    HAVING count(*) = (
        SELECT count(*) FROM {s}.checkpoint_blobs b WHERE b.tenant_id = %(tenant)s AND b.blob_ref = g.blob_ref
    ) + (
        SELECT count(*) FROM {s}.checkpoint_writes w WHERE w.tenant_id = %(tenant)s AND w.blob_ref = g.blob_ref
    )
),
reparented AS (
    UPDATE {s}.checkpoints c SET parent_checkpoint_id = NULL
    FROM doomed d
    WHERE c.tenant_id = %(tenant)s AND c.thread_id = d.thread_id
    AND c.checkpoint_ns = d.checkpoint_ns AND c.parent_checkpoint_id = d.checkpoint_id
    AND NOT EXISTS (
        SELECT 1 FROM doomed x WHERE x.thread_id = c.thread_id
        AND x.checkpoint_ns = c.checkpoint_ns AND x.checkpoint_id = c.checkpoint_id
    )
    RETURNING 1
)
SELECT (SELECT count(*) FROM dc), (SELECT count(*) FROM dw), (SELECT count(*) FROM db),
    (SELECT count(*) FROM reparented), ARRAY(SELECT blob_ref FROM orphaned ORDER BY blob_ref)
"""

HEADS_NONE = (
    "SELECT NULL::text AS thread_id, NULL::text AS checkpoint_ns, NULL::text AS checkpoint_id "
    "WHERE false"
)
# The latest checkpoint of each namespace of the threads.
HEADS_LATEST = """
SELECT DISTINCT ON (l.thread_id, l.checkpoint_ns) l.thread_id, l.checkpoint_ns, l.checkpoint_id
FROM {s}.checkpoints l
WHERE l.tenant_id = %(tenant)s AND l.thread_id = ANY(%(threads)s)
ORDER BY l.thread_id, l.checkpoint_ns, l.checkpoint_id DESC
"""
# ... of the namespaces the caller did not list (params %(listed_threads)s, %(listed_ns)s).
HEADS_LATEST_UNLISTED = """
SELECT DISTINCT ON (l.thread_id, l.checkpoint_ns) l.thread_id, l.checkpoint_ns, l.checkpoint_id
FROM {s}.checkpoints l
WHERE l.tenant_id = %(tenant)s AND l.thread_id = ANY(%(threads)s)
AND NOT EXISTS (
    SELECT 1 FROM unnest(%(listed_threads)s::text[], %(listed_ns)s::text[]) AS g(t, n)
    WHERE g.t = l.thread_id AND g.n = l.checkpoint_ns
)
ORDER BY l.thread_id, l.checkpoint_ns, l.checkpoint_id DESC
"""
# Checkpoints the caller names (params %(keep_threads)s, %(keep_ns)s, %(keep_ids)s).
HEADS_GIVEN = """
SELECT g.thread_id, g.checkpoint_ns, g.checkpoint_id
FROM unnest(%(keep_threads)s::text[], %(keep_ns)s::text[], %(keep_ids)s::text[])
    AS g(thread_id, checkpoint_ns, checkpoint_id)
"""
# A paused run: the checkpoint has an interrupt write and nothing continued from it yet.
HEADS_PAUSED = """
SELECT c.thread_id, c.checkpoint_ns, c.checkpoint_id
FROM {s}.checkpoints c
WHERE c.tenant_id = %(tenant)s AND c.thread_id = ANY(%(threads)s)
AND EXISTS (
    SELECT 1 FROM {s}.checkpoint_writes w
    WHERE w.tenant_id = c.tenant_id AND w.thread_id = c.thread_id
    AND w.checkpoint_ns = c.checkpoint_ns AND w.checkpoint_id = c.checkpoint_id
    AND w.channel = '__interrupt__'
)
AND NOT EXISTS (
    SELECT 1 FROM {s}.checkpoints ch
    WHERE ch.tenant_id = c.tenant_id AND ch.thread_id = c.thread_id
    AND ch.checkpoint_ns = c.checkpoint_ns AND ch.parent_checkpoint_id = c.checkpoint_id
)
"""

CANDIDATES_ALL = "true"
CANDIDATES_RUNS = "c.run_id = ANY(%(run_ids)s)"
CANDIDATES_OLDER_THAN = "c.created_at < now() - %(older_than)s::interval"


@lru_cache(maxsize=64)
def delete_checkpoints(schema: str, heads: tuple[str, ...], candidates: str) -> str:
    """DELETE_CHECKPOINTS with its head and candidate fragments."""
    head_sql = "\nUNION\n".join(f"({h})" for h in heads) if heads else HEADS_NONE
    sql = DELETE_CHECKPOINTS.replace("{heads}", head_sql).replace("{candidates}", candidates)
    sql = sql.replace("{fields_c}", blob_fields("c"))
    return render(sql, schema)


SELECT_THREADS_FOR_RUNS = """
SELECT DISTINCT thread_id FROM {s}.checkpoints
WHERE tenant_id = %s AND run_id = ANY(%s) ORDER BY thread_id
"""
# Tenant and thread pairs with checkpoints older than the cutoff; params (older_than, tenant?).
SELECT_OLD_THREADS = """
SELECT DISTINCT tenant_id, thread_id FROM {s}.checkpoints
WHERE created_at < now() - %s::interval
ORDER BY tenant_id, thread_id
"""
SELECT_OLD_THREADS_OF_TENANT = """
SELECT DISTINCT tenant_id, thread_id FROM {s}.checkpoints
WHERE created_at < now() - %s::interval AND tenant_id = %s
ORDER BY tenant_id, thread_id
"""

# Which of some blob digests a tenant's rows still point at (blob GC). Pointers are
# `lts-blob:v1:<digest>:<size>:<flag>`, so the digest is the third ':'-separated part. The
# explicit tenant filter makes the answer the same for a role that bypasses row-level security
# (a superuser would otherwise keep a blob alive for another tenant's reference).
# Which channel values of a thread Postgres holds, of those given as parallel arrays: as a value
# row, or named bare by a checkpoint row (migration 9: then a row that references it inherits it).
BLOB_FIELDS_PRESENT = """
SELECT b.checkpoint_ns, b.channel, b.version FROM {s}.checkpoint_blobs b
JOIN unnest(%(ns)s::text[], %(channel)s::text[], %(version)s::text[]) AS f(ns, channel, version)
  ON b.checkpoint_ns = f.ns AND b.channel = f.channel AND b.version = f.version
WHERE b.tenant_id = %(tenant)s AND b.thread_id = %(thread)s
UNION
SELECT f.ns, f.channel, f.version
FROM unnest(%(ns)s::text[], %(channel)s::text[], %(version)s::text[]) AS f(ns, channel, version)
WHERE EXISTS (
    SELECT 1 FROM {s}.checkpoints p
    WHERE p.tenant_id = %(tenant)s AND p.thread_id = %(thread)s AND p.checkpoint_ns = f.ns
        AND p.bare_values ? f.channel AND p.checkpoint -> 'channel_versions' ->> f.channel = f.version
)
"""

BLOB_DIGESTS_IN_USE = """
SELECT split_part(blob_ref, ':', 3) FROM {s}.checkpoint_blobs
WHERE tenant_id = %(tenant)s AND blob_ref IS NOT NULL
AND split_part(blob_ref, ':', 3) = ANY(%(digests)s)
UNION
SELECT split_part(blob_ref, ':', 3) FROM {s}.checkpoint_writes
WHERE tenant_id = %(tenant)s AND blob_ref IS NOT NULL
AND split_part(blob_ref, ':', 3) = ANY(%(digests)s)
"""

# --- blob store ----------------------------------------------------------------------------------
# Chunk 0 exists exactly when the blob does: a put inserts all chunks in one transaction, a delete
# removes them in one statement.

BLOB_EXISTS = """
SELECT EXISTS (SELECT 1 FROM {s}.blob_chunks WHERE tenant_id = %s AND digest = %s AND chunk = 0)
"""
# Params: (lock class, key). Writers of one digest take turns, so the NOT EXISTS of the insert
# sees a finished blob and never mixes two writers' chunks.
LOCK_BLOB = "SELECT pg_advisory_xact_lock(%s, %s)"
INSERT_BLOB_CHUNKS = """
INSERT INTO {s}.blob_chunks (tenant_id, digest, chunk, data)
SELECT %(tenant)s, %(digest)s, c.n - 1, c.data
FROM unnest(%(chunks)b::bytea[]) WITH ORDINALITY AS c(data, n)
WHERE NOT EXISTS (
    SELECT 1 FROM {s}.blob_chunks WHERE tenant_id = %(tenant)s AND digest = %(digest)s
)
"""
SELECT_BLOB_CHUNKS = """
SELECT chunk, data FROM {s}.blob_chunks WHERE tenant_id = %s AND digest = %s ORDER BY chunk
"""
DELETE_BLOBS = "DELETE FROM {s}.blob_chunks WHERE tenant_id = %s AND digest = ANY(%s)"
SELECT_BLOB_DIGESTS = """
SELECT digest FROM {s}.blob_chunks WHERE tenant_id = %s AND chunk = 0 ORDER BY digest
"""


def blob_lock(schema: str, tenant_id: str, digest: str) -> tuple[int, int]:
    """(int4, int4) advisory-lock key of one tenant's blob (a key space of its own)."""
    return _int4(f"lts-blob:{check_schema(schema)}".encode()), _int4(f"{tenant_id}|{digest}".encode())

# One page of a tenant's thread ids (keyset pagination over the primary key).
THREAD_IDS_PAGE = """
SELECT DISTINCT thread_id FROM {s}.checkpoints
WHERE tenant_id = %s AND thread_id > %s
ORDER BY thread_id LIMIT %s
"""
