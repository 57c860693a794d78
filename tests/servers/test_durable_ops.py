"""Durable tier against a real Postgres: migrations, flush upserts, reads, deletes and retention.

Each module run creates its own database (`lts_durable_<random>`) and each test its own schema.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import datetime as dt
import multiprocessing
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import ormsgpack
import psycopg
import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from psycopg_pool import AsyncConnectionPool, ConnectionPool
from pydantic import BaseModel

from langgraph_tiered_saver._sansio import pgarrays
from langgraph_tiered_saver._sansio.io import AsyncDriver, PgCall, PgStatement, SyncDriver
from langgraph_tiered_saver.durable import ops as durable_ops
from langgraph_tiered_saver.durable import sql as durable_sql
from langgraph_tiered_saver.durable.delta import delta_history_op
from langgraph_tiered_saver.durable.migrations import (
    LATEST_VERSION,
    applied_versions_op,
    migration_statement,
    setup_op,
)
from langgraph_tiered_saver.durable.ops import (
    get_checkpoint_op,
    list_op,
    list_threads_op,
    upsert_batch_op,
)
from langgraph_tiered_saver.durable.records import (
    BlobRow,
    CheckpointRow,
    FlushBatch,
    RowCounts,
    WriteRow,
)
from langgraph_tiered_saver.durable.retention import (
    copy_thread_op,
    delete_for_runs_op,
    delete_thread_op,
    prune_older_than_op,
    prune_op,
)
from langgraph_tiered_saver.errors import ConfigError, SchemaMissingError
from langgraph_tiered_saver.hot.keys import blob_field, split_blob_field
from langgraph_tiered_saver.records import audit
from langgraph_tiered_saver.records.audit import dumps_jsonb, to_audit_json
from langgraph_tiered_saver.records.codec import (
    JSON_RECORD,
    CheckpointRecord,
    TypedValue,
    WriteRecord,
    loads_record,
)

SERDE = JsonPlusSerializer()
OLD = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=10)

ALL_VERSIONS = list(range(1, LATEST_VERSION + 1))


@pytest.fixture(scope="module")
def db_url(postgres_url: str) -> Iterator[str]:
    """A database of this module's own on the resolved server."""
    name = f"lts_durable_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield psycopg.conninfo.make_conninfo(postgres_url, dbname=name)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def pool(db_url: str) -> Iterator[ConnectionPool]:
    with ConnectionPool(db_url, min_size=1, max_size=8, open=True) as p:
        yield p


@pytest.fixture
def driver(pool: ConnectionPool) -> SyncDriver:
    return SyncDriver(None, pool)


@pytest.fixture
def schema(driver: SyncDriver) -> str:
    name = f"lts_{uuid.uuid4().hex[:10]}"
    driver.run(setup_op(name))
    return name


# --- builders ------------------------------------------------------------------------------------


def typed(value: Any) -> TypedValue:
    return SERDE.dumps_typed(value)


@dataclasses.dataclass(frozen=True)
class Offloaded:
    """A channel value kept in the blob store: the row holds only its ref."""

    ref: str


@dataclasses.dataclass
class Thread:
    """Builds a thread's flush batch like the flusher does (checkpoint, channel values, writes)."""

    tenant: str
    thread: str
    batch: FlushBatch = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.batch = FlushBatch(self.tenant, self.thread)

    def checkpoint(
        self,
        cid: str,
        parent: str | None = None,
        *,
        ns: str = "",
        values: dict[str, tuple[str, Any]] | None = None,
        new: tuple[str, ...] | None = None,
        ts: dt.datetime | None = None,
        **metadata: Any,
    ) -> CheckpointRow:
        """`values`: channel -> (version, value) the checkpoint references; `new` the channels whose
        blob this checkpoint writes (default: all)."""
        values = values or {}
        checkpoint = {
            "v": 4,
            "id": cid,
            "ts": (ts or dt.datetime.now(dt.timezone.utc)).isoformat(),
            "channel_versions": {ch: v for ch, (v, _) in values.items()},
            "versions_seen": {},
        }
        metadata = {"source": "loop", "step": len(self.batch.checkpoints), **metadata}
        fields = tuple(blob_field(ns, ch, v) for ch, (v, _) in values.items())
        record = CheckpointRecord(typed(checkpoint), typed(metadata), parent, fields)
        row = CheckpointRow(ns, cid, record, checkpoint, metadata)
        self.batch.checkpoints.append(row)
        for ch, (version, value) in values.items():
            if new is not None and ch not in new:
                continue
            if isinstance(value, Offloaded):
                pointer = ("blobref", value.ref.encode())
                self.batch.blobs.append(BlobRow(ns, ch, version, pointer, None, value.ref))
            else:
                self.batch.blobs.append(
                    BlobRow(ns, ch, version, typed(value), to_audit_json(value))
                )
        return row

    def write(
        self,
        cid: str,
        task_id: str,
        idx: int,
        channel: str,
        value: Any,
        *,
        ns: str = "",
        path: str = "",
    ) -> WriteRecord:
        w = WriteRecord(task_id, idx, channel, typed(value), path)
        self.batch.writes.append(WriteRow(ns, cid, w, to_audit_json(value)))
        return w


def unordered(record: CheckpointRecord) -> CheckpointRecord:
    """A record with its blob fields sorted: Postgres derives them from the checkpoint's
    channel_versions (migration 8), in JSONB's key order, not the order they were written in."""
    return dataclasses.replace(record, blob_fields=tuple(sorted(record.blob_fields)))


def rows(driver: SyncDriver, schema: str, table: str, where: str = "true") -> list[tuple[Any, ...]]:
    """Rows as the admin (superuser: row-level security does not apply) sees them."""
    statement = PgStatement(
        f'SELECT * FROM "{schema}".{table} WHERE {where} ORDER BY 1, 2, 3, 4, 5', fetch=True
    )
    (result,) = driver.run(_one(PgCall((statement,))))
    return list(result)


def _one(call: PgCall) -> Any:
    result = yield call
    return result


# --- migrations ----------------------------------------------------------------------------------


def test_setup_is_idempotent_and_enables_rls(driver: SyncDriver) -> None:
    name = f"lts_{uuid.uuid4().hex[:10]}"
    assert driver.run(applied_versions_op(name)) == []
    assert driver.run(setup_op(name)) == ALL_VERSIONS
    assert driver.run(setup_op(name)) == []
    assert driver.run(applied_versions_op(name)) == ALL_VERSIONS
    check = PgStatement(
        "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class "
        "WHERE relnamespace = %s::regnamespace AND relkind = 'r' ORDER BY relname",
        (name,),
        fetch=True,
    )
    (tables,) = driver.run(_one(PgCall((check,))))
    assert tables == [
        ("blob_chunks", True, True),
        ("checkpoint_blobs", True, True),
        ("checkpoint_writes", True, True),
        ("checkpoints", True, True),
        ("flush_fence", True, True),
        ("hot_tier", False, False),  # no tenant data: the key prefix that feeds the schema
        ("schema_migrations", False, False),
        ("written_through", True, True),
    ]
    (indexes,) = driver.run(
        _one(
            PgCall(
                (
                    PgStatement(
                        "SELECT indexname FROM pg_indexes WHERE schemaname = %s",
                        (name,),
                        fetch=True,
                    ),
                )
            )
        )
    )
    found = {i for (i,) in indexes}
    assert {"checkpoints_audit_idx", "checkpoints_run_idx", "checkpoints_metadata_idx"} <= found
    assert "checkpoint_writes_audit_idx" not in found  # migration 8: the primary key serves


def test_setup_upgrades_a_version_1_schema(driver: SyncDriver) -> None:
    """A schema made by a release with one migration gets the blob-store table, nothing else."""
    name = f"lts_{uuid.uuid4().hex[:10]}"
    statements = (
        PgStatement(durable_sql.render(durable_sql.CREATE_SCHEMA, name)),
        PgStatement(durable_sql.render(durable_sql.CREATE_MIGRATIONS_TABLE, name)),
        PgStatement(migration_statement(name, 1)),
    )
    driver.run(_one(PgCall(statements)))
    assert driver.run(applied_versions_op(name)) == [1]
    assert driver.run(setup_op(name)) == ALL_VERSIONS[1:]
    assert driver.run(applied_versions_op(name)) == ALL_VERSIONS


def test_a_schema_older_than_the_read_function_asks_for_setup(driver: SyncDriver) -> None:
    """Reads go through `lts_get_tuple` (migration 7): a schema set up by an earlier release
    raises SchemaMissingError naming setup(), and reads once setup() added the function."""
    name = f"lts_{uuid.uuid4().hex[:10]}"
    statements = [
        PgStatement(durable_sql.render(durable_sql.CREATE_SCHEMA, name)),
        PgStatement(durable_sql.render(durable_sql.CREATE_MIGRATIONS_TABLE, name)),
        *(PgStatement(migration_statement(name, v)) for v in range(1, 7)),
    ]
    driver.run(_one(PgCall(tuple(statements))))
    with pytest.raises(SchemaMissingError, match=r"setup\(\)"):
        driver.run(get_checkpoint_op(name, "acme", "t1", "", None))
    assert driver.run(setup_op(name)) == ALL_VERSIONS[6:]
    driver.run(upsert_batch_op(name, [_three_step_thread().batch]))
    latest = driver.run(get_checkpoint_op(name, "acme", "t1", "", None))
    assert latest is not None and latest.checkpoint_id == "c3"


def test_setup_11_upgrades_a_schema_the_release_before_keeps_writing_to(
    driver: SyncDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migration 11 replaces the fork check and the late bare-value naming in place (same
    parameters and results) and adds plain inserts beside migration 10's: a process of the
    release before, still flushing through migration 10's functions, and one of this release
    write side by side, and each one's rows read back the same; a replay of either is a no-op."""
    name = f"lts_{uuid.uuid4().hex[:10]}"
    statements = [
        PgStatement(durable_sql.render(durable_sql.CREATE_SCHEMA, name)),
        PgStatement(durable_sql.render(durable_sql.CREATE_MIGRATIONS_TABLE, name)),
        *(PgStatement(migration_statement(name, v)) for v in range(1, 11)),
    ]
    driver.run(_one(PgCall(tuple(statements))))
    old, new = (_three_step_thread("acme", thread).batch for thread in ("old", "new"))
    with monkeypatch.context() as m:
        release_10_writer(m)
        assert driver.run(upsert_batch_op(name, [old])) == RowCounts(checkpoints=3, blobs=4, writes=4)
    assert driver.run(setup_op(name)) == ALL_VERSIONS[10:]
    with monkeypatch.context() as m:
        release_10_writer(m)  # the release before, after the upgrade
        assert driver.run(upsert_batch_op(name, [old])) == RowCounts(checkpoints=0, blobs=0, writes=1)
    assert driver.run(upsert_batch_op(name, [new])) == RowCounts(checkpoints=3, blobs=4, writes=4)
    assert driver.run(upsert_batch_op(name, [new])) == RowCounts(checkpoints=0, blobs=0, writes=1)
    read = [driver.run(list_op(name, "acme", thread)) for thread in ("old", "new")]
    assert [_decoded(x)[1:] for x in read[0]] == [_decoded(x)[1:] for x in read[1]] and len(read[0]) == 3


def _exact(t: Thread) -> Thread:
    """The thread's checkpoints flagged as the flusher flags JSON-exact ones (audit.json_exact)."""
    t.batch.checkpoints = [
        CheckpointRow(*r)._replace(checkpoint_exact=True, metadata_exact=True) for r in t.batch.checkpoints
    ]
    return t


def _decoded(found: Any) -> tuple[Any, ...]:
    """What a read gives LangGraph: the record decoded, values and writes by field."""
    record = found.record
    return (
        loads_record(SERDE, record.checkpoint), loads_record(SERDE, record.metadata),
        record.parent_checkpoint_id, sorted(record.blob_fields), found.blobs, found.writes,
    )  # fmt: skip


def test_rows_keep_no_bytes_their_jsonb_holds_exactly(driver: SyncDriver, schema: str) -> None:
    """Migration 8: a JSON-exact checkpoint and metadata keep only their JSONB column, blob
    fields equal to the channel_versions are NULL; reads give the same values back."""
    exact = _exact(_three_step_thread("acme", "t1"))
    plain = dataclasses.replace(_three_step_thread("acme", "t1").batch, thread_id="t2", checkpoints=[
        CheckpointRow(*r)._replace(checkpoint_exact=False, metadata_exact=False) for r in exact.batch.checkpoints
    ])  # fmt: skip
    driver.run(upsert_batch_op(schema, [exact.batch, plain]))
    columns = [
        (r.checkpoint_type, r.checkpoint_bytes, r.metadata_type, r.metadata_bytes, r.blob_fields)
        for r in _named(driver, schema, "thread_id = 't1'")
    ]
    assert columns == [(JSON_RECORD, None, JSON_RECORD, None, None)] * 3
    assert all(r.checkpoint_bytes is not None and r.blob_fields is None for r in _named(driver, schema, "thread_id = 't2'"))
    for found, row in zip(reversed(driver.run(list_op(schema, "acme", "t1"))), exact.batch.checkpoints, strict=True):
        original = CheckpointRow(*row).record
        assert found.record.checkpoint[0] == JSON_RECORD
        assert loads_record(SERDE, found.record.checkpoint) == SERDE.loads_typed(original.checkpoint)
        assert loads_record(SERDE, found.record.metadata) == SERDE.loads_typed(original.metadata)
        assert sorted(found.record.blob_fields) == sorted(original.blob_fields)
    t1 = driver.run(get_checkpoint_op(schema, "acme", "t1", "", None))
    t2 = driver.run(get_checkpoint_op(schema, "acme", "t2", "", None))
    assert t1 is not None and t2 is not None and _decoded(t1) == _decoded(t2)


def test_blob_fields_other_than_the_channel_versions_are_stored(driver: SyncDriver, schema: str) -> None:
    """Versions that are not strings (a caller's own) would not read back as written from the
    JSONB: the row keeps its pairs."""
    t = Thread("acme", "t3")
    t.checkpoint("c1", values={"count": (1, 5)})  # type: ignore[dict-item]
    driver.run(upsert_batch_op(schema, [t.batch]))
    (row,) = _named(driver, schema, "thread_id = 't3'")
    assert row.blob_fields == [["count", "1"]]
    found = driver.run(get_checkpoint_op(schema, "acme", "t3", "", None))
    assert found is not None and found.record.blob_fields == (blob_field("", "count", 1),)


def test_setup_8_upgrades_a_schema_with_rows_in_place(driver: SyncDriver, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows written before migration 8 (serializer bytes, explicit blob fields) read the same
    after it, beside rows written after it."""
    name = f"lts_{uuid.uuid4().hex[:10]}"
    statements = [
        PgStatement(durable_sql.render(durable_sql.CREATE_SCHEMA, name)),
        PgStatement(durable_sql.render(durable_sql.CREATE_MIGRATIONS_TABLE, name)),
        *(PgStatement(migration_statement(name, v)) for v in range(1, 8)),
    ]
    driver.run(_one(PgCall(tuple(statements))))
    with monkeypatch.context() as m:  # the writer of the release before migration 8
        release_8_writer(m)
        m.setattr(durable_ops, "_record_part", lambda typed, exact: typed)
        m.setattr(durable_ops, "_stored_fields", lambda checkpoint_json, pairs: dumps_jsonb(pairs))
        batch = _exact(_three_step_thread("acme", "old")).batch
        driver.run(upsert_batch_op(name, [batch]))
    assert driver.run(setup_op(name)) == ALL_VERSIONS[7:]
    driver.run(upsert_batch_op(name, [dataclasses.replace(batch, thread_id="new")]))
    assert all(r.checkpoint_bytes is not None for r in _named(driver, name, "thread_id = 'old'"))
    old = driver.run(list_op(name, "acme", "old"))
    new = driver.run(list_op(name, "acme", "new"))
    assert [_decoded(o) for o in old] == [_decoded(n) for n in new] and len(old) == 3
    latest = driver.run(get_checkpoint_op(name, "acme", "old", "", None))
    assert latest is not None and _decoded(latest) == _decoded(old[0])


def _rows_read(conn: psycopg.Connection[Any], schema: str) -> int:
    """Rows this transaction's scans read from the schema's tables so far (through an index, or
    sequentially)."""
    row = conn.execute(
        "SELECT coalesce(sum(idx_tup_fetch + seq_tup_read), 0) FROM pg_stat_xact_user_tables WHERE schemaname = %s",
        (schema,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _flush_reads(conn: psycopg.Connection[Any], schema: str, batch: FlushBatch) -> int:
    """What the flush statements of `batch` read, run on `conn` (its plans kept) and rolled back."""
    call, _ = durable_ops._flush_call(schema, batch.tenant_id, [batch], {}, None)
    pgarrays.ready(conn)  # as the saver's drivers do: its column arrays
    with conn.transaction(force_rollback=True):
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (batch.tenant_id,))
        before = _rows_read(conn, schema)
        for st in call.statements:
            conn.cursor().execute(st.sql, st.params, binary=st.binary or None)
        return _rows_read(conn, schema) - before


@pytest.mark.parametrize("release", ["current", "10"])
def test_a_flush_reads_its_batch_not_the_tenant_whatever_plan_its_connection_made_first(
    driver: SyncDriver, schema: str, db_url: str, monkeypatch: pytest.MonkeyPatch, release: str
) -> None:
    """The flush statements keep the generic plan of their connection's first call (functions of
    migrations 10 and 11), made from what the tables held then. Planned on an empty schema, a
    flush into a tenant of 3,000 checkpoints reads about its own batch (migration 11); migration
    10's fork check and inserts read the tenant's rows again for each flush (the contrast shows
    that the count sees it)."""
    if release == "10":
        release_10_writer(monkeypatch)
    with psycopg.connect(db_url, autocommit=True) as conn:
        _flush_reads(conn, schema, _three_step_thread("acme", "first").batch)  # plans made, tables empty
        with psycopg.connect(db_url, autocommit=True) as other:
            other.execute(
                f'INSERT INTO "{schema}".checkpoints (tenant_id, thread_id, checkpoint_ns, checkpoint_id,'
                " checkpoint_type, metadata_type, checkpoint, metadata, created_at)"
                " SELECT 'acme', 'other-' || t, '', lpad(i::text, 8, '0'), 'json', 'json',"
                " '{\"channel_versions\": {}}', '{}', now() FROM generate_series(1, 30) t, generate_series(1, 100) i"
            )
            other.execute(
                f'INSERT INTO "{schema}".checkpoint_writes (tenant_id, thread_id, checkpoint_ns, checkpoint_id,'
                " task_id, idx, channel, type, data) SELECT 'acme', 'other-' || t, '', lpad(i::text, 8, '0'),"
                " 'task', -1, '__error__', 'json', '\\x00' FROM generate_series(1, 30) t, generate_series(1, 100) i"
            )
        reads = _flush_reads(conn, schema, _three_step_thread("acme", "next").batch)
    if release == "current":
        assert reads < 100
    else:
        assert reads > 3000


def release_10_writer(m: pytest.MonkeyPatch) -> None:
    """The flush as the release before migration 11 wrote it: migration 10's functions, its
    inserts of the rows not stored yet and its unbounded fork check."""
    defined = durable_sql._FLUSH_DEFINED
    for name, function in (
        ("CALL_FORKED_CHECKPOINTS", "lts_forked_checkpoints"), ("CALL_INSERT_BLOBS", "lts_insert_new_blobs"),
        ("CALL_INSERT_CHECKPOINTS", "lts_insert_new_checkpoints"), ("CALL_INSERT_WRITES", "lts_insert_new_writes"),
        ("CALL_NAME_LATE_BARE_VALUES", "lts_name_late_bare_values"),
    ):  # fmt: skip
        m.setattr(durable_sql, name, defined[function][1])
    m.setattr(durable_sql, "CALL_SPECIAL_WRITES", (defined["lts_update_special_writes"][1], defined["lts_insert_new_writes"][1]))


def release_9_writer(m: pytest.MonkeyPatch) -> None:
    """The flush as the release before migration 10 wrote it: its statements sent as text, not
    through the functions of migration 10."""
    for name, statement in (
        ("CALL_FORKED_CHECKPOINTS", "FORKED_CHECKPOINTS_10"), ("CALL_INSERT_BLOBS", "INSERT_NEW_BLOBS"),
        ("CALL_INSERT_CHECKPOINTS", "INSERT_NEW_CHECKPOINTS"), ("CALL_INSERT_WRITES", "INSERT_NEW_WRITES"),
        ("CALL_NAME_LATE_BARE_VALUES", "NAME_LATE_BARE_VALUES_10"),
    ):  # fmt: skip
        m.setattr(durable_sql, name, getattr(durable_sql, statement))
    m.setattr(durable_sql, "CALL_SPECIAL_WRITES", (durable_sql.UPDATE_SPECIAL_WRITES, durable_sql.INSERT_NEW_WRITES))


def release_8_writer(m: pytest.MonkeyPatch) -> None:
    """The flush as the release before migration 9 wrote it: no `bare_values` column (a
    checkpoint row's bare values then have value rows: no batch row names them)."""
    release_9_writer(m)
    params = durable_ops._checkpoint_params
    m.setattr(durable_ops, "_checkpoint_params", lambda thread, row, bare: params(thread, row, bare)[:-2])
    for name, statement in (("INSERT_CHECKPOINTS", "INSERT_CHECKPOINTS"), ("CALL_INSERT_CHECKPOINTS", "INSERT_NEW_CHECKPOINTS")):
        text = getattr(durable_sql, statement).replace(", " + durable_sql._BARE_VALUES, "")
        text = text.replace("%b::text[], %b::text[], %b::bool[]) AS u(", "%b::text[]) AS u(")
        m.setattr(durable_sql, name, text.replace(", bare_values)", ")").replace(", bare_values, inherit)", ")"))
    m.setattr(durable_ops, "is_bare", lambda value, ref: False)  # every value has its row


def _named(driver: SyncDriver, schema: str, where: str) -> list[Any]:
    """Checkpoint rows (as the admin sees them) with their columns by name."""
    statement = PgStatement(f'SELECT * FROM "{schema}".checkpoints WHERE {where} ORDER BY checkpoint_id', fetch=True)
    (result,) = driver.run(_one(PgCall((statement,))))
    names = [c for c, in driver.run(_one(PgCall((PgStatement(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = 'checkpoints' "
        "ORDER BY ordinal_position", (schema,), fetch=True),))))[0]]  # fmt: skip
    Row = collections.namedtuple("Row", names)  # type: ignore[misc]
    return [Row(*r) for r in result]


def test_a_row_another_writer_inserts_meanwhile_is_skipped(driver: SyncDriver, schema: str, db_url: str) -> None:
    """Rows go in by plain inserts of those not stored yet (no ON CONFLICT: less WAL). A row
    another transaction inserts at the same time fails that insert with a unique violation; the
    flush then runs again with ON CONFLICT DO NOTHING and commits, the other row kept."""
    t = _three_step_thread("acme", "race")
    blob = BlobRow(*t.batch.blobs[0])
    insert = (
        f'INSERT INTO "{schema}".checkpoint_blobs (tenant_id, thread_id, checkpoint_ns, channel, version, type, data)'
        " VALUES ('acme', 'race', %s, %s, %s, 'msgpack', 'other')"
    )
    with psycopg.connect(db_url) as other, concurrent.futures.ThreadPoolExecutor(1) as pool:
        other.execute(insert, (blob.ns, blob.channel, blob.version))  # uncommitted: the flush waits on it
        flush = pool.submit(driver.run, upsert_batch_op(schema, [t.batch]))
        with psycopg.connect(db_url, autocommit=True) as probe:
            deadline = time.monotonic() + 10
            waiting = (
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE NOT l.granted AND a.datname = current_database()"
            )
            while not probe.execute(waiting).fetchone()[0]:  # type: ignore[index]
                assert time.monotonic() < deadline and not flush.done(), "the flush did not wait for the other insert"
                time.sleep(0.02)
        other.commit()
        counts = flush.result(timeout=10)
    assert counts == RowCounts(checkpoints=3, blobs=len(t.batch.blobs) - 1, writes=4)
    kept = rows(driver, schema, "checkpoint_blobs", f"thread_id = 'race' AND channel = '{blob.channel}' AND version = '{blob.version}'")
    assert [bytes(r[6]) for r in kept] == [b"other"]
    assert len(driver.run(list_op(schema, "acme", "race"))) == 3


def test_get_checkpoint_reads_what_list_reads(driver: SyncDriver, schema: str) -> None:
    """The function and the listing statement are two texts of one read: same tuples."""
    driver.run(upsert_batch_op(schema, [_three_step_thread().batch, _three_step_thread("acme", "t2").batch]))
    for thread in ("t1", "t2"):
        listed = driver.run(list_op(schema, "acme", thread, ""))
        assert [c.checkpoint_id for c in listed] == ["c3", "c2", "c1"]
        assert driver.run(get_checkpoint_op(schema, "acme", thread, "", None)) == listed[0]
        for expected in listed:
            assert driver.run(get_checkpoint_op(schema, "acme", thread, "", expected.checkpoint_id)) == expected


def test_setup_rejects_unsafe_schema_names(driver: SyncDriver) -> None:
    for bad in ('x"; DROP TABLE y; --', "Upper", "1abc", "", "a" * 64):
        with pytest.raises(ConfigError):
            driver.run(setup_op(bad))


def _setup_in_process(args: tuple[str, str]) -> list[int]:
    url, name = args
    with ConnectionPool(url, min_size=1, max_size=1, open=True) as p:
        return SyncDriver(None, p).run(setup_op(name))


def test_concurrent_setup_from_processes(db_url: str, driver: SyncDriver) -> None:
    name = f"lts_{uuid.uuid4().hex[:10]}"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as procs:
        results = procs.map(_setup_in_process, [(db_url, name)] * 4)
    assert sorted(results) == [[], [], [], ALL_VERSIONS]
    assert driver.run(applied_versions_op(name)) == ALL_VERSIONS


def test_concurrent_setup_from_threads(db_url: str, driver: SyncDriver) -> None:
    name = f"lts_{uuid.uuid4().hex[:10]}"
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(_setup_in_process, [(db_url, name)] * 8))
    assert sorted(results) == [[]] * 7 + [ALL_VERSIONS]


# --- flush and read ------------------------------------------------------------------------------


def _three_step_thread(tenant: str = "acme", thread: str = "t1") -> Thread:
    t = Thread(tenant, thread)
    t.checkpoint("c1", values={"messages": ("1", [HumanMessage("hi", id="m1")])}, run_id="run-a")
    t.checkpoint(
        "c2", "c1",
        values={"messages": ("2", [HumanMessage("hi", id="m1"), AIMessage("hello", id="m2")]),
                "count": ("1", 1)},
        run_id="run-a",
    )  # fmt: skip
    t.checkpoint(
        "c3", "c2",
        values={"messages": ("2", None), "count": ("2", 2)}, new=("count",), run_id="run-b",
        source="update", step=7,
    )  # fmt: skip
    t.write("c3", "task-b", 0, "count", 3, path="~__pregel_pull, b")
    t.write("c3", "task-a", 1, "messages", [AIMessage("x")], path="~__pregel_pull, a")
    t.write("c3", "task-a", 0, "count", 4, path="~__pregel_pull, a")
    t.write("c3", "task-a", -1, "__error__", "boom", path="~__pregel_pull, a")
    return t


def test_upsert_get_roundtrip(driver: SyncDriver, schema: str) -> None:
    t = _three_step_thread()
    counts = driver.run(upsert_batch_op(schema, [t.batch]))
    assert counts == RowCounts(checkpoints=3, blobs=4, writes=4)

    latest = driver.run(get_checkpoint_op(schema, "acme", "t1", "", None))
    assert latest is not None
    assert (latest.thread_id, latest.checkpoint_ns, latest.checkpoint_id) == ("t1", "", "c3")
    assert unordered(latest.record) == unordered(t.batch.checkpoints[2][2])
    assert latest.run_id == "run-b"
    assert latest.blobs == {
        blob_field("", "messages", "2"): t.batch.blobs[1][3],
        blob_field("", "count", "2"): t.batch.blobs[3][3],
    }
    assert list(latest.blobs) == list(latest.record.blob_fields)
    assert [(w.task_path, w.task_id, w.idx) for w in latest.writes] == [
        ("~__pregel_pull, a", "task-a", -1),
        ("~__pregel_pull, a", "task-a", 0),
        ("~__pregel_pull, a", "task-a", 1),
        ("~__pregel_pull, b", "task-b", 0),
    ]
    assert SERDE.loads_typed(latest.writes[1].value) == 4

    first = driver.run(get_checkpoint_op(schema, "acme", "t1", "", "c1"))
    assert first is not None and first.record.parent_checkpoint_id is None and first.writes == []
    assert SERDE.loads_typed(first.blobs[blob_field("", "messages", "1")])[0].content == "hi"
    assert driver.run(get_checkpoint_op(schema, "acme", "t1", "", "nope")) is None
    assert driver.run(get_checkpoint_op(schema, "acme", "t1", "other-ns", None)) is None
    assert driver.run(get_checkpoint_op(schema, "other-tenant", "t1", "", None)) is None

    # Relational columns and audit copies are plain SQL.
    (audit,) = driver.run(_one(PgCall((PgStatement(
        f'SELECT checkpoint_id, step, source, run_id, created_at IS NOT NULL, checkpoint ? '
        f"'channel_values', metadata ->> 'source' FROM \"{schema}\".checkpoints ORDER BY 1",
        fetch=True),))))  # fmt: skip
    assert audit[2] == ("c3", 7, "update", "run-b", True, False, "update")
    (values,) = driver.run(_one(PgCall((PgStatement(
        f"SELECT value -> 1 ->> 'content' FROM \"{schema}\".checkpoint_blobs "
        "WHERE channel = 'messages' AND version = '2'", fetch=True),))))  # fmt: skip
    assert values == [("hello",)]


def test_reupsert_is_idempotent_and_special_writes_overwrite(
    driver: SyncDriver, schema: str
) -> None:
    t = _three_step_thread()
    driver.run(upsert_batch_op(schema, [t.batch]))
    before = {table: rows(driver, schema, table) for table in ("checkpoints", "checkpoint_blobs")}
    again = driver.run(upsert_batch_op(schema, [t.batch]))
    assert again == RowCounts(checkpoints=0, blobs=0, writes=1)  # the special write re-applies
    for table, content in before.items():
        assert rows(driver, schema, table) == content

    t2 = Thread("acme", "t1")
    t2.write("c3", "task-a", -1, "__error__", "second error", path="~__pregel_pull, a")
    t2.write("c3", "task-a", 0, "count", 99, path="~__pregel_pull, a")  # regular: first one wins
    driver.run(upsert_batch_op(schema, [t2.batch]))
    got = driver.run(get_checkpoint_op(schema, "acme", "t1", "", "c3"))
    assert got is not None
    by_idx = {(w.task_id, w.idx): SERDE.loads_typed(w.value) for w in got.writes}
    assert by_idx[("task-a", -1)] == "second error"
    assert by_idx[("task-a", 0)] == 4
    assert len(got.writes) == 4


def test_one_batch_with_a_special_write_twice_keeps_the_last(driver: SyncDriver, schema: str) -> None:
    """A batch's rows go in as one statement per kind; a special write given twice (an error,
    then another before the flush) must not fail the upsert, and the last one is kept."""
    t = _three_step_thread()
    t.write("c3", "task-a", -1, "__error__", "later error", path="~__pregel_pull, a")
    counts = driver.run(upsert_batch_op(schema, [t.batch]))
    assert counts.writes == 4
    got = driver.run(get_checkpoint_op(schema, "acme", "t1", "", "c3"))
    assert got is not None
    by_idx = {(w.task_id, w.idx): SERDE.loads_typed(w.value) for w in got.writes}
    assert by_idx[("task-a", -1)] == "later error"


def test_one_transaction_per_tenant(driver: SyncDriver, schema: str) -> None:
    calls: list[PgCall] = []
    op = upsert_batch_op(schema, [_three_step_thread("a", "t1").batch,
                                  _three_step_thread("b", "t1").batch,
                                  _three_step_thread("a", "t2").batch])  # fmt: skip
    request = next(op)
    try:
        while True:
            assert isinstance(request, PgCall)
            calls.append(request)
            request = op.send(driver._execute(request))
    except StopIteration as stop:
        assert stop.value == RowCounts(9, 12, 12)
    assert [c.tenant_id for c in calls] == ["a", "b"]
    # lock, a fork check per thread, blobs, checkpoints, writes, special writes (one statement)
    assert [len(c.statements) for c in calls] == [7, 6]


def test_list_filters_before_limit_and_threads(driver: SyncDriver, schema: str) -> None:
    t1 = _three_step_thread("acme", "t1")
    sub = t1.checkpoint("s1", ns="child:1", values={"x": ("1", "sub")}, run_id="run-b")
    t2 = Thread("acme", "t2")
    t2.checkpoint("c9", values={"x": ("1", "other")}, run_id="run-c")
    other = _three_step_thread("globex", "t1")
    driver.run(upsert_batch_op(schema, [t1.batch, t2.batch, other.batch]))

    def ids(**kw: Any) -> list[str]:
        return [d.checkpoint_id for d in driver.run(list_op(schema, "acme", **kw))]

    assert ids(thread="t1") == ["s1", "c3", "c2", "c1"]
    assert ids(thread="t1", ns="") == ["c3", "c2", "c1"]
    assert ids(thread="t1", ns="child:1") == ["s1"]
    assert ids() == ["s1", "c9", "c3", "c2", "c1"]
    assert ids(thread="t1", ns="", limit=2) == ["c3", "c2"]
    assert ids(thread="t1", ns="", before_checkpoint_id="c3") == ["c2", "c1"]
    assert ids(thread="t1", ns="", before_checkpoint_id="c3", limit=1) == ["c2"]
    assert ids(thread="t1", checkpoint_id="c2") == ["c2"]
    assert ids(metadata_filter={"run_id": "run-a"}) == ["c2", "c1"]
    assert ids(metadata_filter={"source": "update", "step": 7}) == ["c3"]
    assert ids(metadata_filter={"run_id": "nope"}) == []
    # rows the caller has from Redis are skipped, by (thread, ns, id): same id, other thread stays
    assert ids(thread="t1", known=[("t1", "", "c3"), ("t1", "child:1", "s1")]) == ["c2", "c1"]
    assert ids(known=[("t1", "", "c3"), ("t2", "", "c3"), ("t1", "", "c9")]) == ["s1", "c9", "c2", "c1"]
    assert ids(thread="t1", ns="", known=[("t1", "", "c3")], limit=1) == ["c2"]  # newest unknown
    sub_read = driver.run(list_op(schema, "acme", "t1", "child:1"))[0]
    assert unordered(sub_read.record) == unordered(sub.record) and sub_read.checkpoint_ns == "child:1"
    threads = driver.run(list_threads_op(schema, "acme"))
    assert [(i.thread_id, i.checkpoints, i.latest_checkpoint_id) for i in threads] == [
        ("t1", 4, "s1"),
        ("t2", 1, "c9"),
    ]


def test_offloaded_values_keep_their_ref(driver: SyncDriver, schema: str) -> None:
    t = Thread("acme", "t1")
    ref = "sha256:" + "ab" * 32
    record = CheckpointRecord(typed({"id": "c1"}), typed({}), None, (blob_field("", "big", "1"),))
    t.batch.checkpoints.append(CheckpointRow("", "c1", record, {"id": "c1"}, {}))
    t.batch.blobs.append(BlobRow("", "big", "1", ("blobref", ref.encode()), None, ref))
    t.batch.writes.append(
        WriteRow("", "c1", WriteRecord("task", 0, "big", ("blobref", ref.encode()), ""), None, ref)
    )
    driver.run(upsert_batch_op(schema, [t.batch]))
    got = driver.run(get_checkpoint_op(schema, "acme", "t1", "", "c1"))
    assert got is not None
    assert got.blobs == {blob_field("", "big", "1"): ("blobref", ref.encode())}
    assert got.writes[0].value == ("blobref", ref.encode())
    stored = rows(driver, schema, "checkpoint_blobs")[0]
    assert stored[6:8] == (None, ref)  # data NULL, blob_ref set
    bad = Thread("acme", "t1")
    bad.batch.blobs.append(BlobRow("", "big", "2", ("blobref", b"other"), None, ref))
    with pytest.raises(ValueError, match="blob_ref"):
        driver.run(upsert_batch_op(schema, [bad.batch]))


def test_missing_channel_value_is_reported(driver: SyncDriver, schema: str) -> None:
    from langgraph_tiered_saver.errors import CorruptDataError

    t = Thread("acme", "t1")
    t.checkpoint("c1", values={"x": ("1", "v")}, new=())
    driver.run(upsert_batch_op(schema, [t.batch]))
    with pytest.raises(CorruptDataError, match="missing"):
        driver.run(get_checkpoint_op(schema, "acme", "t1", "", None))


# --- delete, copy, prune -------------------------------------------------------------------------


def test_delete_thread_and_runs(driver: SyncDriver, schema: str) -> None:
    t1, t2 = _three_step_thread("acme", "t1"), _three_step_thread("acme", "t2")
    keep = _three_step_thread("globex", "t1")
    driver.run(upsert_batch_op(schema, [t1.batch, t2.batch, keep.batch]))

    result = driver.run(delete_thread_op(schema, "acme", "t1"))
    assert (result.checkpoints, result.writes, result.blobs) == (3, 4, 4)
    assert driver.run(list_op(schema, "acme", "t1")) == []
    assert len(driver.run(list_op(schema, "globex", "t1"))) == 3

    # run-a made c1 and c2 of t2; c3 (run-b) keeps the blobs it references, loses its parent.
    result = driver.run(delete_for_runs_op(schema, "acme", ["run-a", "unknown"]))
    assert (result.checkpoints, result.writes, result.blobs, result.reparented) == (2, 0, 2, 1)
    left = driver.run(list_op(schema, "acme", "t2"))
    assert [d.checkpoint_id for d in left] == ["c3"]
    assert left[0].record.parent_checkpoint_id is None and len(left[0].blobs) == 2
    assert driver.run(delete_for_runs_op(schema, "acme", [])).checkpoints == 0


def test_copy_thread(driver: SyncDriver, schema: str) -> None:
    t = _three_step_thread()
    driver.run(upsert_batch_op(schema, [t.batch]))
    counts = driver.run(copy_thread_op(schema, "acme", "t1", "t1-copy"))
    assert counts == RowCounts(checkpoints=3, blobs=4, writes=4)
    assert driver.run(copy_thread_op(schema, "acme", "t1", "t1-copy")) == RowCounts()
    src = driver.run(list_op(schema, "acme", "t1"))
    dst = driver.run(list_op(schema, "acme", "t1-copy"))
    assert [(d.checkpoint_id, d.record, d.blobs, d.writes) for d in src] == [
        (d.checkpoint_id, d.record, d.blobs, d.writes) for d in dst
    ]


def test_prune_keep_latest_and_delete(driver: SyncDriver, schema: str) -> None:
    t = _three_step_thread("acme", "t1")
    t.checkpoint("s1", ns="child:1", values={"x": ("1", "a")})
    t.checkpoint("s2", "s1", ns="child:1", values={"x": ("2", "b")})
    other = _three_step_thread("acme", "t2")
    driver.run(upsert_batch_op(schema, [t.batch, other.batch]))

    # The caller keeps c2 in the root namespace; child:1 is not listed, so its latest stays.
    result = driver.run(prune_op(schema, "acme", ["t1"], "keep_latest", {("t1", ""): {"c2"}}))
    assert (result.checkpoints, result.writes) == (3, 4)
    assert [d.checkpoint_id for d in driver.run(list_op(schema, "acme", "t1"))] == ["s2", "c2"]
    kept = driver.run(get_checkpoint_op(schema, "acme", "t1", "", "c2"))
    assert kept is not None and kept.record.parent_checkpoint_id is None
    blobs = {
        (r[2], r[3], r[4]) for r in rows(driver, schema, "checkpoint_blobs", "thread_id = 't1'")
    }
    assert blobs == {("", "messages", "2"), ("", "count", "1"), ("child:1", "x", "2")}

    result = driver.run(prune_op(schema, "acme", ["t1", "t2"], "delete"))
    assert result.checkpoints == 5
    assert driver.run(list_op(schema, "acme")) == []
    with pytest.raises(ValueError):
        driver.run(prune_op(schema, "acme", ["t1"], "keep_some"))
    with pytest.raises(TypeError):
        driver.run(prune_op(schema, "acme", "t1"))


def test_prune_older_than_keeps_latest_paused_protected_and_delta_chains(
    driver: SyncDriver, schema: str
) -> None:
    big = "sha256:" + "cd" * 32
    # t1: a straight run c1..c4, all old; c2 was interrupted and then resumed (c3 continues it).
    t1 = Thread("acme", "t1")
    t1.checkpoint("c1", values={"a": ("1", "x"), "big": ("1", Offloaded(big))}, ts=OLD)
    t1.checkpoint("c2", "c1", values={"a": ("1", "x")}, new=(), ts=OLD)
    t1.write("c2", "task", 0, "__interrupt__", "approve?")
    t1.checkpoint("c3", "c2", values={"a": ("2", "y")}, ts=OLD)
    t1.checkpoint("c4", "c3", values={"a": ("2", "y")}, new=(), ts=OLD)
    t1.checkpoint("s1", ns="child:1", values={"z": ("1", 0)}, ts=OLD)  # latest of its namespace
    # t2: forked; p2 is a paused run (interrupt, nothing continued), p3 the newer branch.
    t2 = Thread("acme", "t2")
    t2.checkpoint("p1", values={"a": ("1", 1)}, ts=OLD)
    t2.checkpoint("p2", "p1", values={"a": ("2", 2)}, ts=OLD)
    t2.write("p2", "task", 0, "__interrupt__", "approve?")
    t2.checkpoint("p3", "p1", values={"a": ("3", 3)}, ts=OLD)
    # t3: a DeltaChannel thread: d2, d3 carry counters, so d3 needs d2 and the snapshot d1.
    t3 = Thread("acme", "t3")
    t3.checkpoint("d0", ts=OLD)
    t3.checkpoint("d1", "d0", ts=OLD)
    t3.checkpoint("d2", "d1", ts=OLD, counters_since_delta_snapshot={"items": [1, 1]})
    t3.checkpoint("d3", "d2", ts=OLD, counters_since_delta_snapshot={"items": [2, 2]})
    # t4: recent history is never touched; t5 has an old checkpoint the caller protects.
    t4 = Thread("acme", "t4")
    t4.checkpoint("r1")
    t4.checkpoint("r2", "r1")
    t5 = Thread("acme", "t5")
    t5.checkpoint("q1", ts=OLD)
    t5.checkpoint("q2", "q1", ts=OLD)
    t5.checkpoint("q3", "q2")
    other = Thread("globex", "t1")
    other.checkpoint("g1", ts=OLD)
    other.checkpoint("g2", "g1", ts=OLD)
    driver.run(upsert_batch_op(schema, [t.batch for t in (t1, t2, t3, t4, t5, other)]))

    result = driver.run(
        prune_older_than_op(
            schema, "acme", dt.timedelta(days=1), protect={("acme", "t5", ""): {"q1"}}
        )
    )

    def left(thread: str, tenant: str = "acme") -> list[str]:
        return sorted(d.checkpoint_id for d in driver.run(list_op(schema, tenant, thread)))

    assert left("t1") == ["c4", "s1"]
    assert left("t2") == ["p2", "p3"]
    assert left("t3") == ["d1", "d2", "d3"]
    assert left("t4") == ["r1", "r2"]
    assert left("t5") == ["q1", "q3"]
    assert left("t1", "globex") == ["g1", "g2"]  # another tenant: untouched
    assert result.checkpoints == 3 + 1 + 1 + 1
    assert result.orphaned_blob_refs == [big]
    assert {(r[3], r[4]) for r in rows(driver, schema, "checkpoint_blobs", "thread_id = 't1'")} == {
        ("a", "2"),
        ("z", "1"),
    }
    assert driver.run(get_checkpoint_op(schema, "acme", "t2", "", "p2")) is not None


def test_prune_older_than_every_tenant(driver: SyncDriver, schema: str) -> None:
    threads = []
    for tenant in ("a", "b"):
        t = Thread(tenant, "t")
        t.checkpoint("c1", ts=OLD)
        t.checkpoint("c2", "c1", ts=OLD)
        threads.append(t.batch)
    driver.run(upsert_batch_op(schema, threads))
    result = driver.run(prune_older_than_op(schema, None, dt.timedelta(days=1)))  # as superuser
    assert result.checkpoints == 2
    assert [d.checkpoint_id for d in driver.run(list_op(schema, "b", "t"))] == ["c2"]


# --- audit copies --------------------------------------------------------------------------------


class Ticket(BaseModel):
    id: int
    when: dt.datetime


@dataclasses.dataclass
class Refund:
    amount: float
    currency: str


def test_to_audit_json() -> None:
    msg = AIMessage("done", id="m1", name="billing",
                    tool_calls=[{"name": "refund", "args": {"x": 1}, "id": "call1"}])  # fmt: skip
    assert to_audit_json(msg) == {
        "type": "ai",
        "content": "done",
        "name": "billing",
        "tool_calls": [{"name": "refund", "args": {"x": 1}, "id": "call1", "type": "tool_call"}],
        "id": "m1",
    }
    assert to_audit_json({"messages": [HumanMessage("hi")]})["messages"][0]["content"] == "hi"
    when = dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc)
    assert to_audit_json(Ticket(id=1, when=when)) == {"id": 1, "when": "2024-01-02T00:00:00Z"}
    assert to_audit_json(Refund(12.5, "EUR")) == {"amount": 12.5, "currency": "EUR"}
    assert to_audit_json({"a": (1, "x\x00y"), 2: None}) == {"a": [1, "xy"], "2": None}
    assert to_audit_json(object()) is None
    assert to_audit_json(b"bytes") is None
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    assert to_audit_json(cyclic) is None
    assert to_audit_json(float("nan")) is None

    class Exploding:
        def model_dump(self, **kw: Any) -> Any:
            raise RuntimeError("no")

    assert to_audit_json(Exploding()) is None


def _nested(depth: int, mapping: bool) -> Any:
    value: Any = "x"
    for i in range(depth):
        value = {"k": value} if mapping and i % 2 else [value]
    return value


@pytest.mark.parametrize("value", [
    {"n": None}, float("nan"), float("inf"), 1.5, -(2**63), 2**64 - 1, "a\x00b", "\\u0000 lit", {"k\x00": "v", "k": 1}, {1: "int key"},
    {"t": (1, 2)}, {"s": {3, 1, 2}}, {"b": b"x"}, dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone.utc),
    {"when": dt.datetime(2024, 1, 2)}, dt.date(2024, 1, 2), uuid.UUID(int=5), Refund(12.5, "EUR"),
    _nested(64, False), _nested(65, False), _nested(65, True), _nested(130, True), '"[[[[{' * 40, [], {}, "",
    [HumanMessage("hi", id="1"), AIMessage("a\x00", id="2", tool_calls=[{"name": "f", "args": {"x": [1]}, "id": "c"}])],
])  # fmt: skip
def test_audit_from_msgpack_fast_path_matches_conversion(value: Any) -> None:
    """Plain values skip the converted copy: the JSON written must be the converted copy's."""
    type_, data = JsonPlusSerializer().dumps_typed(value)
    assert type_ == "msgpack"
    unpacked = ormsgpack.unpackb(data, ext_hook=audit._audit_ext_hook, option=ormsgpack.OPT_NON_STR_KEYS)
    expected = audit.to_audit_json(unpacked)
    memo: dict[Any, Any] = {}
    for got in (audit.audit_from_msgpack(data), audit.audit_from_msgpack(data, memo), audit.audit_from_msgpack(data, memo)):
        assert (got is None) == (expected is None)
        assert dumps_jsonb(got) == dumps_jsonb(expected)


def test_jsonb_text_accepts_nul_and_odd_values(driver: SyncDriver) -> None:
    text = dumps_jsonb({"k\x00": "a\x00b", "lit": "\\u0000", "big": 2**70, "obj": object()})
    (result,) = driver.run(_one(PgCall((PgStatement("SELECT %s::jsonb", (text,), fetch=True),))))
    value = result[0][0]
    assert value["k"] == "ab" and value["lit"] == "\\u0000" and value["big"] == 2**70
    assert isinstance(value["obj"], str)


# --- async ---------------------------------------------------------------------------------------


async def test_async_driver_smoke(db_url: str) -> None:
    name = f"lts_{uuid.uuid4().hex[:10]}"
    async with AsyncConnectionPool(db_url, min_size=1, max_size=2, open=False) as apool:
        adriver = AsyncDriver(None, apool)
        assert await adriver.run(setup_op(name)) == ALL_VERSIONS
        t = _three_step_thread()
        assert await adriver.run(upsert_batch_op(name, [t.batch])) == RowCounts(3, 4, 4)
        got = await adriver.run(get_checkpoint_op(name, "acme", "t1", "", None))
        assert got is not None and got.checkpoint_id == "c3" and len(got.writes) == 4
        assert len(await adriver.run(list_op(name, "acme", "t1", limit=2))) == 2
        assert (await adriver.run(delete_thread_op(name, "acme", "t1"))).checkpoints == 3



# --- transactions on autocommit connections (the saver's pools) ---------------------------------


def test_a_transaction_is_one_round_trip_and_a_failed_one_is_rolled_back(db_url: str) -> None:
    """On an autocommit connection a PgCall's BEGIN, statements and COMMIT go out with one Sync
    (one network round trip); a failed statement commits nothing before it and leaves the
    connection idle and usable."""
    import tempfile

    from langgraph_tiered_saver._sansio.io import PIPELINE, _transaction_sync
    from langgraph_tiered_saver._sansio.pgfaults import PgLimits

    if not PIPELINE:
        pytest.skip("libpq without pipeline mode: one statement at a time")
    table = f"lts_tx_{uuid.uuid4().hex[:8]}"
    limits = PgLimits(connect_wait=2.0)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (n int PRIMARY KEY)")
        try:
            insert = PgCall((PgStatement(f"INSERT INTO {table} VALUES (1)"),
                             PgStatement(f"SELECT count(*) FROM {table}", fetch=True)), tenant_id="acme")  # fmt: skip
            with tempfile.TemporaryFile("w+") as trace:
                conn.pgconn.trace(trace.fileno())
                conn.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS | psycopg.pq.Trace.REGRESS_MODE)
                try:
                    assert _transaction_sync(conn, insert, limits) == [1, [(1,)]]
                finally:
                    conn.pgconn.untrace()
                trace.seek(0)
                syncs = [line for line in trace.read().splitlines() if line.split("\t")[1:3] == ["4", "Sync"]]
            assert len(syncs) == 1

            failing = PgCall((PgStatement(f"INSERT INTO {table} VALUES (2)"), PgStatement(f"INSERT INTO {table} VALUES (1)")))
            with pytest.raises(psycopg.errors.UniqueViolation):
                _transaction_sync(conn, failing, limits)
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            assert conn.execute(f"SELECT n FROM {table} ORDER BY n").fetchall() == [(1,)]  # 2 rolled back
        finally:
            conn.execute(f"DROP TABLE {table}")


async def test_an_async_transaction_is_rolled_back_when_a_statement_fails(db_url: str) -> None:
    from langgraph_tiered_saver._sansio.io import _transaction_async
    from langgraph_tiered_saver._sansio.pgfaults import PgLimits

    table = f"lts_tx_{uuid.uuid4().hex[:8]}"
    limits = PgLimits(connect_wait=2.0)
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await conn.execute(f"CREATE TABLE {table} (n int PRIMARY KEY)")
        try:
            ok = PgCall((PgStatement(f"INSERT INTO {table} VALUES (1)"), PgStatement(f"SELECT n FROM {table}", fetch=True)))
            assert await _transaction_async(conn, ok, limits) == [1, [(1,)]]
            failing = PgCall((PgStatement(f"INSERT INTO {table} VALUES (2)"), PgStatement(f"INSERT INTO {table} VALUES (1)")))
            with pytest.raises(psycopg.errors.UniqueViolation):
                await _transaction_async(conn, failing, limits)
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            assert await (await conn.execute(f"SELECT n FROM {table} ORDER BY n")).fetchall() == [(1,)]
        finally:
            await conn.execute(f"DROP TABLE {table}")


# --- migration 9: bare values and values kept as JSON -------------------------------------------


def _exact_value(row: Any) -> Any:
    """A value or write row flagged as the flusher flags one whose JSONB holds it exactly."""
    value = row.value if isinstance(row, BlobRow) else row.write.value
    exact = audit.exact_json(value[1]) if value[0] == "msgpack" else None
    return row if exact is None else row._replace(value_json=orjson.Fragment(exact[0]), json_keys=exact[1])


def _lean(batch: FlushBatch, *, named: bool = True) -> FlushBatch:
    """The batch as the flusher writes it since migration 9: each checkpoint row names the bare
    values it references (as the outbox read reports them; `named` False: as a write-through,
    which knows only those of its batch), values whose JSON is exact are flagged."""
    bare = {
        blob_field(b.ns, b.channel, b.version): b.value[0] for b in map(lambda r: BlobRow(*r), batch.blobs)
        if b.value[1] == b""
    }  # fmt: skip
    return dataclasses.replace(
        batch,
        checkpoints=[
            CheckpointRow(*r)._replace(bare={
                split_blob_field(f)[1]: bare[f] for f in CheckpointRow(*r).record.blob_fields if f in bare
            } if named else None)
            for r in batch.checkpoints
        ],
        blobs=[_exact_value(BlobRow(*r)) for r in batch.blobs],
        writes=[_exact_value(WriteRow(*r)) for r in batch.writes],
    )  # fmt: skip


def _bare_thread(tenant: str = "acme", thread: str = "b1") -> Thread:
    """Values of every form: exact JSON kept as JSONB alone (with the key order of a dict JSONB
    reorders), a None and an empty channel (bare: no value row), a message (bytes and audit
    copy)."""
    t = Thread(tenant, thread)
    t.checkpoint("c1", values={"a": ("1", {"b": 1, "a": 2}), "s": ("1", "text"), "n": ("1", None)})
    t.checkpoint(
        "c2", "c1", new=("s",),
        values={"a": ("1", None), "s": ("2", [1, 2.5, {"x": True, "yy": None}]), "n": ("1", None), "e": ("1", None)},
    )  # fmt: skip
    t.batch.blobs.append(BlobRow("", "e", "1", ("empty", b"")))
    t.write("c2", "task-a", 0, "s", {"kk": [{"z": 1, "a": 2}], "k": "v"})
    t.write("c2", "task-a", 1, "m", [HumanMessage("hi " * 40, id="m1"), AIMessage("hello " * 40, id="m2")])
    t.write("c2", "task-a", 2, "branch:to:x", None)
    return t


def _values(found: Any) -> tuple[Any, ...]:
    """What LangGraph gets of a read: decoded values (dict key order included) and writes."""

    def both(value: Any) -> Any:
        return (value, repr(value))  # repr: the key order of every dict

    blobs = {f: both(loads_record(SERDE, v)) if v[1] else v for f, v in found.blobs.items()}
    writes = [(w.task_id, w.idx, w.channel, both(loads_record(SERDE, w.value)) if w.value[1] else w.value) for w in found.writes]
    return _decoded(found)[:4], blobs, writes


def test_bare_and_json_values_keep_no_row_or_bytes_and_read_back_exactly(
    driver: SyncDriver, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migration 9: no value row for a bare value (each checkpoint row names it in
    bare_values), exact JSON values keep only their JSONB (type lts-json, data NULL); get, list
    and DeltaChannel history read what the rows of the release before read."""
    t = _bare_thread()
    plain = dataclasses.replace(t.batch, thread_id="plain")
    driver.run(upsert_batch_op(schema, [_lean(t.batch)]))
    with monkeypatch.context() as m:
        release_8_writer(m)
        driver.run(upsert_batch_op(schema, [plain]))
    blobs = {(r[3], r[4]): (r[5], r[6], r[8]) for r in rows(driver, schema, "checkpoint_blobs", "thread_id = 'b1'")}
    assert set(blobs) == {("a", "1"), ("s", "1"), ("s", "2")}
    assert blobs[("a", "1")] == (JSON_RECORD, b"[[0,1,0]]", {"a": 2, "b": 1})  # JSONB's order, and the row's
    assert blobs[("s", "2")] == (JSON_RECORD, None, [1, 2.5, {"x": True, "yy": None}])
    assert [r.bare_values for r in _named(driver, schema, "thread_id = 'b1'")] == [
        {"n": "null"}, {"n": "null", "e": "empty"}
    ]
    writes = {r[5]: (r[7], r[8]) for r in rows(driver, schema, "checkpoint_writes", "thread_id = 'b1'")}
    assert writes[0] == (JSON_RECORD, b"[[0,1,0],[1,1,0]]") and writes[2] == ("null", b"")
    message = WriteRow(*t.batch.writes[1]).write.value  # deflated, the audit copy kept
    assert writes[1][0] == "lts-z+msgpack" and len(writes[1][1]) < len(message[1]) * 0.9
    assert len(rows(driver, schema, "checkpoint_blobs", "thread_id = 'plain'")) == 5
    lean, plain = (driver.run(list_op(schema, "acme", thread)) for thread in ("b1", "plain"))
    assert [_values(x) for x in lean] == [_values(x) for x in plain] and len(lean) == 2
    for cid in ("c1", "c2"):
        found = driver.run(get_checkpoint_op(schema, "acme", "b1", "", cid))
        assert found is not None and _values(found) == _values(plain[0 if cid == "c2" else 1])
    histories = [
        driver.run(delta_history_op(schema, "acme", thread, "", ["n", "e", "s", "m"], start="c2"))
        for thread in ("b1", "plain")
    ]
    seeds = [{k: loads_record(SERDE, v) if v[1] else v for k, v in h.seeds.items()} for h in histories]
    assert seeds[0] == seeds[1] and seeds[0].keys() == {"n", "s"}
    writes = [{d: [(w.channel, loads_record(SERDE, w.value) if w.value[1] else w.value) for w in ws]
               for d, ws in h.writes.items()} for h in histories]  # fmt: skip
    assert writes[0] == writes[1] and writes[0]


def test_a_row_that_does_not_know_its_bare_values_takes_them_from_earlier_rows(driver: SyncDriver, schema: str) -> None:
    """A checkpoint row whose batch does not carry all its values (a write-through: bare values
    not known) names the bare values earlier rows of its thread named (same channel version)."""
    base = _bare_thread()
    plain = dataclasses.replace(base.batch, thread_id="plain")
    t = _lean(base.batch)
    first = dataclasses.replace(t, checkpoints=t.checkpoints[:1], blobs=t.blobs[:3], writes=[])
    later = _lean(base.batch, named=False)
    second = dataclasses.replace(
        later, checkpoints=later.checkpoints[1:], blobs=[b for b in later.blobs if b[1] in ("s", "e")]
    )  # fmt: skip
    assert [BlobRow(*b).channel for b in first.blobs] == ["a", "s", "n"]
    driver.run(upsert_batch_op(schema, [first]))
    driver.run(upsert_batch_op(schema, [second]))
    assert [r.bare_values for r in _named(driver, schema, "thread_id = 'b1'")] == [
        {"n": "null"}, {"n": "null", "e": "empty"}
    ]
    driver.run(upsert_batch_op(schema, [plain]))
    assert [_values(x) for x in driver.run(list_op(schema, "acme", "b1"))] == [
        _values(x) for x in driver.run(list_op(schema, "acme", "plain"))
    ]


def test_setup_9_upgrades_a_schema_with_rows_in_place(driver: SyncDriver, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows written before migration 9 (a row per value, serializer bytes) read the same after
    it, beside rows written after it; its setup applies 9 and the later ones."""
    name = f"lts_{uuid.uuid4().hex[:10]}"
    statements = [
        PgStatement(durable_sql.render(durable_sql.CREATE_SCHEMA, name)),
        PgStatement(durable_sql.render(durable_sql.CREATE_MIGRATIONS_TABLE, name)),
        *(PgStatement(migration_statement(name, v)) for v in range(1, 9)),
    ]
    driver.run(_one(PgCall(tuple(statements))))
    t = _bare_thread("acme", "old")
    new = dataclasses.replace(t.batch, thread_id="new")
    with monkeypatch.context() as m:
        release_8_writer(m)
        driver.run(upsert_batch_op(name, [t.batch]))
    assert driver.run(setup_op(name)) == ALL_VERSIONS[8:]
    driver.run(upsert_batch_op(name, [_lean(new)]))
    assert len(rows(driver, name, "checkpoint_blobs", "thread_id = 'old'")) == 5
    assert len(rows(driver, name, "checkpoint_blobs", "thread_id = 'new'")) == 3
    old, new = (driver.run(list_op(name, "acme", thread)) for thread in ("old", "new"))
    assert [_values(o) for o in old] == [_values(n) for n in new] and len(old) == 2


def test_column_arrays_reach_postgres_as_the_lists_they_wrap(db_url: str) -> None:
    """The flush's text and bytea column arrays (pgarrays) read back as the lists they wrap:
    NULLs, empty strings and arrays, NUL bytes, non-ASCII text in the connection's encoding; a
    column holding another class is left to psycopg."""
    texts = ["a", None, "", "é☃", "x" * 5000]
    blobs = [b"\x00\x01", None, b"", b"y" * 5000]
    with psycopg.connect(db_url, autocommit=True) as conn:
        pgarrays.ready(conn)
        found = conn.execute(
            "SELECT %(t)s::text[], %(b)s::bytea[], %(e)s::text[]",
            {"t": pgarrays.TextArray(texts), "b": pgarrays.ByteaArray(blobs), "e": pgarrays.TextArray([])},
        ).fetchone()
        assert found == (texts, blobs, [])
        conn.execute("SET client_encoding TO 'LATIN1'")
        found = conn.execute("SELECT %b::text[]", (pgarrays.TextArray(["é", None]),)).fetchone()
        assert found == (["é", None],)
    assert pgarrays.column("text[]", ["a", 1]) == ["a", 1]
    assert isinstance(pgarrays.column("bytea[]", [b"a", None]), pgarrays.ByteaArray)
