"""Row-level security, adversarially: connected as the application role made by roles.py, one
tenant's transaction cannot read, change, delete or forge another tenant's rows, even with raw
SQL that has no WHERE clause; with no tenant set it sees nothing at all.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from psycopg_pool import ConnectionPool

from langgraph_tiered_saver._sansio.io import PgCall, SyncDriver
from langgraph_tiered_saver.blobs import digest_of
from langgraph_tiered_saver.durable import sql as durable_sql
from langgraph_tiered_saver.durable.migrations import setup_op
from langgraph_tiered_saver.durable.ops import (
    get_checkpoint_op,
    list_op,
    list_threads_op,
    upsert_batch_op,
)
from langgraph_tiered_saver.durable.records import BlobRow, CheckpointRow, FlushBatch, WriteRow
from langgraph_tiered_saver.durable.retention import (
    delete_for_runs_op,
    delete_thread_op,
    prune_older_than_op,
    prune_op,
)
from langgraph_tiered_saver.durable.roles import check_role_op, create_app_role_op
from langgraph_tiered_saver.errors import ConfigError, PostgresError
from langgraph_tiered_saver.hot.keys import blob_field
from langgraph_tiered_saver.records.codec import CheckpointRecord, WriteRecord

SCHEMA = "lts_rls"
SERDE = JsonPlusSerializer()
TABLES = ("checkpoints", "checkpoint_blobs", "checkpoint_writes")


def _batch(tenant: str, thread: str) -> FlushBatch:
    ts = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=5)).isoformat()
    batch = FlushBatch(tenant, thread)
    for i, cid in enumerate(("c1", "c2")):
        record = CheckpointRecord(
            SERDE.dumps_typed({"id": cid}),
            SERDE.dumps_typed({"run_id": f"run-{tenant}"}),
            None if i == 0 else "c1",
            (blob_field("", "secret", str(i + 1)),),
        )
        batch.checkpoints.append(
            CheckpointRow(
                "", cid, record, {"id": cid, "ts": ts}, {"run_id": f"run-{tenant}", "step": i}
            )
        )
        batch.blobs.append(
            BlobRow("", "secret", str(i + 1), SERDE.dumps_typed(f"{tenant}-{i}"), f"{tenant}-{i}")
        )
        write = WriteRecord("task", 0, "secret", SERDE.dumps_typed(tenant), "")
        batch.writes.append(WriteRow("", cid, write, tenant))
    return batch


@pytest.fixture(scope="module")
def env(postgres_url: str) -> Iterator[dict[str, Any]]:
    suffix = uuid.uuid4().hex[:10]
    dbname, role = f"lts_durable_rls_{suffix}", f"lts_app_{suffix}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    admin_url = psycopg.conninfo.make_conninfo(postgres_url, dbname=dbname)
    app_url = psycopg.conninfo.make_conninfo(
        postgres_url, dbname=dbname, user=role, password="pw-" + suffix
    )
    try:
        with ConnectionPool(admin_url, min_size=1, max_size=2, open=True) as admin_pool:
            admin = SyncDriver(None, admin_pool)
            admin.run(setup_op(SCHEMA))
            admin.run(create_app_role_op(SCHEMA, role, login=True, password="pw-" + suffix))
            admin.run(create_app_role_op(SCHEMA, role, login=True))  # idempotent
            admin.run(upsert_batch_op(SCHEMA, [_batch("tenant_a", "shared"), _batch("tenant_b", "shared"),
                                               _batch("tenant_b", "b-only")]))  # fmt: skip
            with ConnectionPool(app_url, min_size=1, max_size=2, open=True) as app_pool:
                yield {
                    "admin": admin,
                    "app": SyncDriver(None, app_pool),
                    "app_url": app_url,
                    "role": role,
                }
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def _count(admin: SyncDriver, table: str, tenant: str) -> int:
    def op() -> Any:
        (rows,) = yield PgCall(
            (
                durable_sql_statement(
                    f"SELECT count(*) FROM {SCHEMA}.{table} WHERE tenant_id = %s", (tenant,)
                ),
            )
        )
        return rows[0][0]

    return int(admin.run(op()))


def durable_sql_statement(text: str, params: Any = None) -> Any:
    from langgraph_tiered_saver._sansio.io import PgStatement

    return PgStatement(text, params, fetch=True)


def test_app_role_is_checked(env: dict[str, Any]) -> None:
    app = env["app"].run(check_role_op())
    assert (app.name, app.superuser, app.bypass_rls, app.warning()) == (
        env["role"],
        False,
        False,
        None,
    )
    admin = env["admin"].run(check_role_op())
    assert (
        admin.superuser and admin.bypasses_rls and "row-level security" in (admin.warning() or "")
    )


def test_raw_sql_sees_only_its_tenant(env: dict[str, Any]) -> None:
    with psycopg.connect(env["app_url"]) as conn:
        for table in TABLES:
            with conn.transaction(force_rollback=True):
                conn.execute("SELECT set_config('app.tenant_id', 'tenant_a', true)")
                tenants = conn.execute(
                    f"SELECT DISTINCT tenant_id FROM {SCHEMA}.{table}"
                ).fetchall()
                assert tenants == [("tenant_a",)]
                assert conn.execute(f"SELECT count(*) FROM {SCHEMA}.{table}").fetchone() == (2,)
                # No WHERE: only tenant_a's rows are touched.
                assert (
                    conn.execute(f"UPDATE {SCHEMA}.{table} SET thread_id = thread_id").rowcount == 2
                )
                assert (
                    conn.execute(
                        f"UPDATE {SCHEMA}.{table} SET thread_id = 'x' WHERE tenant_id = 'tenant_b'"
                    ).rowcount
                    == 0
                )
                assert (
                    conn.execute(
                        f"DELETE FROM {SCHEMA}.{table} WHERE tenant_id = 'tenant_b'"
                    ).rowcount
                    == 0
                )
                assert conn.execute(f"DELETE FROM {SCHEMA}.{table}").rowcount == 2
    for table in TABLES:  # the rolled-back deletes left everything in place
        assert _count(env["admin"], table, "tenant_a") == 2
        assert _count(env["admin"], table, "tenant_b") == 4


def test_raw_sql_cannot_forge_or_move_rows_to_another_tenant(env: dict[str, Any]) -> None:
    with psycopg.connect(env["app_url"]) as conn:
        with (
            pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"),
            conn.transaction(),
        ):
            conn.execute("SELECT set_config('app.tenant_id', 'tenant_a', true)")
            conn.execute(
                f"INSERT INTO {SCHEMA}.checkpoint_writes (tenant_id, thread_id, checkpoint_ns, "
                "checkpoint_id, task_id, idx, channel, type, data) "
                "VALUES ('tenant_b', 'shared', '', 'c2', 'evil', 0, 'secret', 'json', '\\x00')"
            )
        with (
            pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"),
            conn.transaction(),
        ):
            conn.execute("SELECT set_config('app.tenant_id', 'tenant_a', true)")
            conn.execute(f"UPDATE {SCHEMA}.checkpoints SET tenant_id = 'tenant_b'")
        # The setting is per transaction: the next one starts with no tenant.
        with conn.transaction():
            for table in TABLES:
                assert conn.execute(f"SELECT count(*) FROM {SCHEMA}.{table}").fetchone() == (0,)
                assert conn.execute(f"DELETE FROM {SCHEMA}.{table}").rowcount == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            conn.execute(
                f"INSERT INTO {SCHEMA}.checkpoint_blobs (tenant_id, thread_id, channel, version, type, data) "
                "VALUES ('tenant_a', 't', 'c', '1', 'json', '\\x00')"
            )
    assert _count(env["admin"], "checkpoint_writes", "tenant_b") == 4
    assert _count(env["admin"], "checkpoints", "tenant_a") == 2


def test_app_role_has_no_ddl_rights(env: dict[str, Any]) -> None:
    with psycopg.connect(env["app_url"]) as conn:
        for statement in (f"ALTER TABLE {SCHEMA}.checkpoints DISABLE ROW LEVEL SECURITY",
                          f"DROP POLICY tenant_isolation ON {SCHEMA}.checkpoints",
                          f"CREATE TABLE {SCHEMA}.x (a int)"):  # fmt: skip
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute(statement)
    # ... but its setup() is a read-only check of an up-to-date schema.
    assert env["app"].run(setup_op(SCHEMA)) == []


def test_ops_as_app_role_are_tenant_scoped(env: dict[str, Any]) -> None:
    app, admin = env["app"], env["admin"]
    got = app.run(get_checkpoint_op(SCHEMA, "tenant_a", "shared", "", None))
    assert (
        got is not None
        and SERDE.loads_typed(got.blobs[blob_field("", "secret", "2")]) == "tenant_a-1"
    )
    assert app.run(get_checkpoint_op(SCHEMA, "tenant_a", "b-only", "", None)) is None
    assert {d.thread_id for d in app.run(list_op(SCHEMA, "tenant_a"))} == {"shared"}
    assert [t.thread_id for t in app.run(list_threads_op(SCHEMA, "tenant_a"))] == ["shared"]
    assert app.run(list_op(SCHEMA, "tenant_a", metadata_filter={"run_id": "run-tenant_b"})) == []

    # A statement that names tenant_b in its WHERE, in a transaction set to tenant_a: RLS wins.
    statement = durable_sql_statement(
        durable_sql.select_tuples(SCHEMA, (durable_sql.WHERE_THREAD,)),
        {"tenant": "tenant_b", "thread": "b-only", "limit": None},
    )

    def forged() -> Any:
        (rows,) = yield PgCall((statement,), tenant_id="tenant_a")
        return rows

    assert app.run(forged()) == []

    # Deletes in tenant_a's name never reach tenant_b's rows.
    assert app.run(delete_thread_op(SCHEMA, "tenant_a", "b-only")).checkpoints == 0
    assert app.run(delete_for_runs_op(SCHEMA, "tenant_a", ["run-tenant_b"])).checkpoints == 0
    assert app.run(prune_op(SCHEMA, "tenant_a", ["b-only"], "delete")).checkpoints == 0
    assert app.run(prune_older_than_op(SCHEMA, "tenant_a", dt.timedelta(days=1))).checkpoints == 1
    assert _count(admin, "checkpoints", "tenant_b") == 4
    assert _count(admin, "checkpoint_blobs", "tenant_b") == 4
    with pytest.raises(ConfigError, match="BYPASSRLS"):
        app.run(prune_older_than_op(SCHEMA, None, dt.timedelta(days=1)))

    # A flush batch claiming another tenant is refused by the policy's WITH CHECK.
    forged_batch = _batch("tenant_b", "shared")
    forged_call = next(upsert_batch_op(SCHEMA, [forged_batch]))
    assert isinstance(forged_call, PgCall)
    hijacked = PgCall(forged_call.statements, tenant_id="tenant_a")

    def hijack() -> Any:
        yield hijacked

    with pytest.raises(PostgresError, match="row-level security") as raised:
        app.run(hijack())
    assert raised.value.sqlstate == "42501"  # insufficient_privilege, with the server's message


def _offloaded_batch(tenant: str, thread: str, blob_digest: str, write_digest: str) -> FlushBatch:
    """A checkpoint whose channel value and pending write live in the blob store."""
    from langgraph_tiered_saver.blobs import make_pointer
    from langgraph_tiered_saver.records.codec import BLOB_TYPE

    batch = FlushBatch(tenant, thread)
    record = CheckpointRecord(
        SERDE.dumps_typed({"id": "c1"}), SERDE.dumps_typed({}), None, (blob_field("", "big", "1"),)
    )
    batch.checkpoints.append(CheckpointRow("", "c1", record, {"id": "c1"}, {"step": 0}))
    blob_ref = make_pointer(blob_digest, 10, False).decode()
    batch.blobs.append(BlobRow("", "big", "1", (BLOB_TYPE + "bytes", blob_ref.encode()), None, blob_ref))
    write_ref = make_pointer(write_digest, 10, False).decode()
    write = WriteRecord("task", 0, "big", (BLOB_TYPE + "bytes", write_ref.encode()), "")
    batch.writes.append(WriteRow("", "c1", write, None, write_ref))
    return batch


def test_blob_gc_in_use_check_is_per_tenant_for_every_role(env: dict[str, Any]) -> None:
    """A digest only another tenant references is not in use for this one: the superuser (who
    bypasses row-level security) and the application role give the same answer."""
    from langgraph_tiered_saver.durable.ops import blob_digests_in_use_op

    shared, a_only, b_only, b_write, nobody = (digest_of(n.encode()) for n in "sabwn")
    env["admin"].run(upsert_batch_op(SCHEMA, [
        _offloaded_batch("gc_a", "t", shared, a_only),
        _offloaded_batch("gc_b", "t", shared, b_only),
        _offloaded_batch("gc_b", "u", b_only, b_write),
    ]))  # fmt: skip
    asked = [shared, a_only, b_only, b_write, nobody]
    expected = {"gc_a": {shared, a_only}, "gc_b": {shared, b_only, b_write}, "gc_c": set()}
    for tenant, in_use in expected.items():
        for driver in ("admin", "app"):
            assert env[driver].run(blob_digests_in_use_op(SCHEMA, tenant, asked)) == in_use, (tenant, driver)


def test_blob_chunks_are_tenant_scoped_for_the_app_role(env: dict[str, Any]) -> None:
    """The Postgres blob store as the application role: another tenant's blob is missing, cannot
    be deleted, and raw SQL sees only the tenant's own chunks; a chunk claiming another tenant
    is refused by the policy."""
    from langgraph_tiered_saver.blobs import BlobMissingError, PgBlobStore

    app, admin = env["app"], env["admin"]
    secret = os.urandom(3 * 1024 * 1024)
    digest = digest_of(secret)
    app.run(PgBlobStore(SCHEMA, "tenant_b").put_op(digest, secret))
    thief = PgBlobStore(SCHEMA, "tenant_a")
    assert app.run(thief.exists_op(digest)) is False
    with pytest.raises(BlobMissingError):
        app.run(thief.get_op(digest))
    app.run(thief.delete_op([digest]))
    assert app.run(thief.digests_op()) == []
    assert admin.run(PgBlobStore(SCHEMA, "tenant_b").get_op(digest)) == secret
    with psycopg.connect(env["app_url"]) as conn:
        with conn.transaction(force_rollback=True):
            conn.execute("SELECT set_config('app.tenant_id', 'tenant_a', true)")
            assert conn.execute(f"SELECT count(*) FROM {SCHEMA}.blob_chunks").fetchone() == (0,)
            assert conn.execute(f"DELETE FROM {SCHEMA}.blob_chunks").rowcount == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            conn.execute("SELECT set_config('app.tenant_id', 'tenant_a', true)")
            conn.execute(
                f"INSERT INTO {SCHEMA}.blob_chunks VALUES ('tenant_b', %s, 0, '\\x00')", ("0" * 64,)
            )
    assert _count(admin, "blob_chunks", "tenant_b") == 3
