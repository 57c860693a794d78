"""Postgres at scale: a schema hash-partitioned by tenant, with row-level security
on every partition, tested adversarially as the application role; and the index each read path
uses, checked with EXPLAIN in both layouts.

One database of its own holds a plain and a partitioned schema with the same 2,000 checkpoints
(20 tenants x 5 threads x 20 checkpoints, each with a channel value and a write), analyzed.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from psycopg_pool import ConnectionPool

from langgraph_tiered_saver._sansio.io import Op, PgCall, PgStatement, SyncDriver
from langgraph_tiered_saver.blobs import PgBlobStore, digest_of
from langgraph_tiered_saver.durable import sql as durable_sql
from langgraph_tiered_saver.durable.migrations import LATEST_VERSION, partition_names, setup_op
from langgraph_tiered_saver.durable.ops import get_checkpoint_op, list_op, upsert_batch_op
from langgraph_tiered_saver.durable.records import BlobRow, CheckpointRow, FlushBatch, WriteRow
from langgraph_tiered_saver.durable.retention import delete_thread_op
from langgraph_tiered_saver.durable.roles import create_app_role_op
from langgraph_tiered_saver.errors import ConfigError, PostgresError
from langgraph_tiered_saver.hot.keys import blob_field
from langgraph_tiered_saver.records.codec import CheckpointRecord, WriteRecord
from tests.graphs import chain_graph
from tests.helpers import thread_config

PLAIN, PARTITIONED = "lts_plain", "lts_parted"
PARTITIONS = 4
TABLES = ("checkpoints", "checkpoint_blobs", "checkpoint_writes", "blob_chunks", "flush_fence", "written_through")
TENANTS = [f"tenant-{i:02d}" for i in range(20)]
THREADS, CHECKPOINTS = 5, 20
SERDE = JsonPlusSerializer()


def _cid(i: int) -> str:
    return f"1ef00000-0000-6000-8000-{i:012d}"  # sortable like LangGraph's uuid6 ids


def _batch(tenant: str, thread: str) -> FlushBatch:
    ts = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc).isoformat()
    batch = FlushBatch(tenant, thread)
    for i in range(CHECKPOINTS):
        cid = _cid(i)
        record = CheckpointRecord(SERDE.dumps_typed({"id": cid}), SERDE.dumps_typed({"step": i}),
                                  _cid(i - 1) if i else None, (blob_field("", "messages", str(i + 1)),))  # fmt: skip
        metadata = {"source": "loop", "step": i, "user": f"{tenant}-{thread}"}
        batch.checkpoints.append(CheckpointRow("", cid, record, {"id": cid, "ts": ts}, metadata))
        batch.blobs.append(BlobRow("", "messages", str(i + 1), SERDE.dumps_typed([f"m{i}"]), [f"m{i}"]))
        batch.writes.append(WriteRow("", cid, WriteRecord("task", 0, "messages", SERDE.dumps_typed(i), ""), i))
    return batch


@pytest.fixture(scope="module")
def env(postgres_url: str) -> Iterator[dict[str, Any]]:
    suffix = uuid.uuid4().hex[:10]
    dbname, role = f"lts_partitions_{suffix}", f"lts_part_app_{suffix}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    admin_url = psycopg.conninfo.make_conninfo(postgres_url, dbname=dbname)
    app_url = psycopg.conninfo.make_conninfo(postgres_url, dbname=dbname, user=role, password="pw-" + suffix)
    try:
        with ConnectionPool(admin_url, min_size=1, max_size=2, open=True) as admin_pool:
            admin = SyncDriver(None, admin_pool)
            assert admin.run(setup_op(PLAIN)) == list(range(1, LATEST_VERSION + 1))
            assert admin.run(setup_op(PARTITIONED, PARTITIONS)) == list(range(1, LATEST_VERSION + 1))
            for schema in (PLAIN, PARTITIONED):
                admin.run(create_app_role_op(schema, role, login=True, password="pw-" + suffix))
                admin.run(upsert_batch_op(schema, [_batch(t, f"thread-{n}") for t in TENANTS for n in range(THREADS)]))
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute("ANALYZE")
            with ConnectionPool(app_url, min_size=1, max_size=2, open=True) as app_pool:
                yield {"admin": admin, "admin_url": admin_url, "app": SyncDriver(None, app_pool), "app_url": app_url,
                       "role": role}  # fmt: skip
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


# ------------------------------------------------------------------ layout


def test_every_table_is_hash_partitioned_by_tenant_with_rls_forced_on_every_partition(env: dict[str, Any]) -> None:
    with psycopg.connect(env["admin_url"]) as conn:
        for table in TABLES:
            strategy, key = conn.execute(
                "SELECT p.partstrat, pg_get_partkeydef(p.partrelid) FROM pg_partitioned_table p "
                "WHERE p.partrelid = to_regclass(%s)", (f"{PARTITIONED}.{table}",)).fetchone()  # type: ignore[misc]
            assert (strategy, key) == ("h", "HASH (tenant_id)")
            parts = conn.execute(
                "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, "
                "(SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = 'tenant_isolation') "
                "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = to_regclass(%s) ORDER BY c.relname", (f"{PARTITIONED}.{table}",)).fetchall()
            assert parts == [(name, True, True, 1) for name in sorted(partition_names(table, PARTITIONS))]
            assert conn.execute("SELECT count(*) FROM pg_partitioned_table WHERE partrelid = to_regclass(%s)",
                                (f"{PLAIN}.{table}",)).fetchone() == (0,)  # fmt: skip
        # the 20 tenants are spread over every partition, each tenant in exactly one
        spread = conn.execute(
            f"SELECT tableoid::regclass::text, count(DISTINCT tenant_id) FROM {PARTITIONED}.checkpoints GROUP BY 1"
        ).fetchall()
        assert len(spread) == PARTITIONS and sum(n for _, n in spread) == len(TENANTS)


def test_setup_keeps_each_schema_in_the_layout_it_was_created_with(env: dict[str, Any]) -> None:
    admin, app = env["admin"], env["app"]
    assert admin.run(setup_op(PARTITIONED)) == [] and admin.run(setup_op(PARTITIONED, PARTITIONS)) == []
    assert app.run(setup_op(PARTITIONED, PARTITIONS)) == []  # the app role's check is read-only
    with pytest.raises(ConfigError, match="has 4 tenant partitions"):
        admin.run(setup_op(PARTITIONED, 8))
    with pytest.raises(ConfigError, match="is not partitioned"):
        admin.run(setup_op(PLAIN, 4))
    for bad in (1, 0, 2000, True, "4"):
        with pytest.raises(ConfigError, match="partitions="):
            admin.run(setup_op("lts_never_made", bad))  # type: ignore[arg-type]


# ------------------------------------------------------------------ row-level security, adversarially


def _app_conn(env: dict[str, Any]) -> psycopg.Connection[Any]:
    return psycopg.connect(env["app_url"])


def test_the_app_role_sees_only_its_tenant_through_the_partitioned_parents(env: dict[str, Any]) -> None:
    mine, other = TENANTS[0], TENANTS[1]
    rows = {"checkpoints": THREADS * CHECKPOINTS, "checkpoint_blobs": THREADS * CHECKPOINTS,
            "checkpoint_writes": THREADS * CHECKPOINTS}  # fmt: skip
    with _app_conn(env) as conn:
        for table, n in rows.items():
            with conn.transaction(force_rollback=True):
                conn.execute("SELECT set_config('app.tenant_id', %s, true)", (mine,))
                assert conn.execute(f"SELECT DISTINCT tenant_id FROM {PARTITIONED}.{table}").fetchall() == [(mine,)]
                assert conn.execute(f"SELECT count(*) FROM {PARTITIONED}.{table}").fetchone() == (n,)
                assert conn.execute(f"DELETE FROM {PARTITIONED}.{table} WHERE tenant_id = %s", (other,)).rowcount == 0
                assert conn.execute(f"DELETE FROM {PARTITIONED}.{table}").rowcount == n
            with conn.transaction():  # no tenant set: nothing at all
                assert conn.execute(f"SELECT count(*) FROM {PARTITIONED}.{table}").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"), conn.transaction():
            conn.execute("SELECT set_config('app.tenant_id', %s, true)", (mine,))
            conn.execute(f"UPDATE {PARTITIONED}.checkpoints SET tenant_id = %s", (other,))  # a move to another partition
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"), conn.transaction():
            conn.execute("SELECT set_config('app.tenant_id', %s, true)", (mine,))
            conn.execute(f"INSERT INTO {PARTITIONED}.blob_chunks VALUES (%s, %s, 0, '\\x00')", (other, "0" * 64))
        # the partitions themselves are not granted to the role at all
        for table in TABLES:
            for partition in partition_names(table, PARTITIONS):
                with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                    conn.execute("SELECT set_config('app.tenant_id', %s, true)", (mine,))
                    conn.execute(f"SELECT count(*) FROM {PARTITIONED}.{partition}")


def _home(env: dict[str, Any], table: str, tenant: str) -> str:
    """The partition of `table` holding `tenant`'s rows (asked as the superuser)."""
    with psycopg.connect(env["admin_url"]) as conn:
        row = conn.execute(f"SELECT DISTINCT tableoid::regclass::text FROM {PARTITIONED}.{table} WHERE tenant_id = %s",
                           (tenant,)).fetchone()  # fmt: skip
    assert row is not None
    return str(row[0]).rsplit(".", 1)[-1]


def test_a_partition_granted_by_mistake_is_still_tenant_isolated(env: dict[str, Any]) -> None:
    """An administrator runs GRANT ALL ON ALL TABLES IN SCHEMA: the partitions' own policies
    (enabled and forced) still hold every partition to the transaction's tenant."""
    with psycopg.connect(env["admin_url"], autocommit=True) as conn:
        conn.execute(f'GRANT ALL ON ALL TABLES IN SCHEMA {PARTITIONED} TO "{env["role"]}"')
    try:
        with _app_conn(env) as conn:
            for tenant in TENANTS[:6]:
                for partition in partition_names("checkpoints", PARTITIONS):
                    with conn.transaction(force_rollback=True):
                        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant,))
                        seen = conn.execute(f"SELECT DISTINCT tenant_id FROM {PARTITIONED}.{partition}").fetchall()
                        assert seen in ([], [(tenant,)])
                        assert conn.execute(f"UPDATE {PARTITIONED}.{partition} SET step = step").rowcount in (0, THREADS * CHECKPOINTS)
                with conn.transaction():  # no tenant: every partition is empty to the role
                    for table in TABLES:
                        for partition in partition_names(table, PARTITIONS):
                            assert conn.execute(f"SELECT count(*) FROM {PARTITIONED}.{partition}").fetchone() == (0,)
            with conn.transaction(force_rollback=True):
                conn.execute("SELECT set_config('app.tenant_id', %s, true)", (TENANTS[0],))
                found = sum(conn.execute(f"SELECT count(*) FROM {PARTITIONED}.{p}").fetchone()[0]  # type: ignore[index]
                            for p in partition_names("checkpoints", PARTITIONS))  # fmt: skip
                assert found == THREADS * CHECKPOINTS  # its own rows, in its one partition
            insert = (f"INSERT INTO {PARTITIONED}.{{}} (tenant_id, thread_id, checkpoint_ns, checkpoint_id, task_id, "
                      "idx, channel, type, data) VALUES (%s, 't', '', 'c', 'evil', 0, 'x', 'json', '\\x00')")
            mine, victim = TENANTS[0], TENANTS[1]
            with conn.transaction(force_rollback=True):  # its own partition takes its own row
                conn.execute("SELECT set_config('app.tenant_id', %s, true)", (mine,))
                assert conn.execute(insert.format(_home(env, "checkpoint_writes", mine)), (mine,)).rowcount == 1
            # a row of the victim, into the victim's partition (so only the policy can refuse it)
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"), conn.transaction():
                conn.execute("SELECT set_config('app.tenant_id', %s, true)", (mine,))
                conn.execute(insert.format(_home(env, "checkpoint_writes", victim)), (victim,))
    finally:
        with psycopg.connect(env["admin_url"], autocommit=True) as conn:
            conn.execute(f'REVOKE ALL ON ALL TABLES IN SCHEMA {PARTITIONED} FROM "{env["role"]}"')
            conn.execute(f'GRANT SELECT, INSERT, UPDATE, DELETE ON {PARTITIONED}.checkpoints, '
                         f'{PARTITIONED}.checkpoint_blobs, {PARTITIONED}.checkpoint_writes, '
                         f'{PARTITIONED}.blob_chunks TO "{env["role"]}"')  # fmt: skip
            conn.execute(f'GRANT SELECT ON {PARTITIONED}.schema_migrations TO "{env["role"]}"')
            conn.execute(f'GRANT SELECT, INSERT, UPDATE, DELETE ON {PARTITIONED}.flush_fence TO "{env["role"]}"')
            conn.execute(f'GRANT SELECT, INSERT, DELETE ON {PARTITIONED}.written_through TO "{env["role"]}"')
            conn.execute(f'GRANT SELECT, INSERT, UPDATE ON {PARTITIONED}.hot_tier TO "{env["role"]}"')


def test_the_saver_ops_work_as_the_app_role_on_partitions(env: dict[str, Any]) -> None:
    app, tenant = env["app"], "ops-tenant"
    app.run(upsert_batch_op(PARTITIONED, [_batch(tenant, "t1"), _batch(tenant, "t2")]))
    latest = app.run(get_checkpoint_op(PARTITIONED, tenant, "t1", "", None))
    assert latest is not None and latest.checkpoint_id == _cid(CHECKPOINTS - 1)
    page = app.run(list_op(PARTITIONED, tenant, "t1", "", before_checkpoint_id=_cid(5), limit=3))
    assert [d.checkpoint_id for d in page] == [_cid(4), _cid(3), _cid(2)]
    assert app.run(get_checkpoint_op(PARTITIONED, TENANTS[0], "t1", "", None)) is None
    assert app.run(delete_thread_op(PARTITIONED, tenant, "t2")).checkpoints == CHECKPOINTS
    data = b"x" * 3_000_000
    app.run(PgBlobStore(PARTITIONED, tenant).put_op(digest_of(data), data))
    assert app.run(PgBlobStore(PARTITIONED, tenant).get_op(digest_of(data))) == data
    assert app.run(PgBlobStore(PARTITIONED, TENANTS[0]).exists_op(digest_of(data))) is False

    forged = next(upsert_batch_op(PARTITIONED, [_batch(TENANTS[1], "forged")]))
    assert isinstance(forged, PgCall)

    def hijack() -> Op[Any]:
        yield PgCall(forged.statements, tenant_id=tenant)

    with pytest.raises(PostgresError, match="row-level security"):
        app.run(hijack())


def test_a_saver_set_up_partitioned_runs_flushes_and_restores_from_postgres(
    saver_context: Callable[..., Any],
) -> None:
    with saver_context(durable=True) as saver:
        saver.setup(partitions=PARTITIONS)
        config = thread_config()
        chain_graph(saver, nodes=3).invoke({"n": 0}, config)
        saver.flush()
        before = saver.get_tuple(config)
        saver.run_op(saver.core.hot.delete_thread_op(saver.tenant_id, [config["configurable"]["thread_id"]]))
        after = saver.get_tuple(config)
        assert after is not None and before is not None
        assert after.checkpoint["id"] == before.checkpoint["id"]
        assert after.checkpoint["channel_values"] == before.checkpoint["channel_values"]
        assert len(list(saver.list(config))) == 5
        saver.setup()  # later setups keep the layout


# ------------------------------------------------------------------ indexes, by EXPLAIN


def _statement(op: Op[Any]) -> PgStatement:
    call = next(op)
    assert isinstance(call, PgCall) and len(call.statements) == 1
    return call.statements[0]


def _tuple_body(body: str) -> Callable[[str, str], Op[Any]]:
    """A read the saver runs through `lts_get_tuple`: EXPLAIN cannot see inside a function, so the
    statement the function runs (checked against its definition) is explained, with the function's
    arguments as parameters (the plan the function starts with, before caching a generic one)."""

    def op(schema: str, tenant: str) -> Op[Any]:
        checkpoint_id = _cid(7) if "p_checkpoint_id" in body else None
        call = _statement(get_checkpoint_op(schema, tenant, "thread-2", "", checkpoint_id))
        assert call.sql == durable_sql.render(durable_sql.GET_TUPLE, schema)
        args = dict(zip(("tenant", "thread", "ns", "checkpoint_id"), call.params, strict=True))  # type: ignore[arg-type]
        text = durable_sql.render(body, schema)
        for name in args:
            text = re.sub(rf"\bp_{name}\b", f"%({name})s", text)
        yield PgCall((PgStatement(text, {**args, "body": durable_sql.render(body, schema)}, fetch=True),))

    return op


PKEY = r"checkpoints(_p\d+)?_pkey"
TENANT_INDEX = r"checkpoints_audit_idx|checkpoints_p\d+_tenant_id_created_at_idx"  # (tenant_id, created_at)
GIN = r"checkpoints_metadata_idx|checkpoints_p\d+_metadata_idx"
READ_PATHS: dict[str, tuple[Callable[[str, str], Op[Any]], str, str]] = {
    # path: (the op as the saver runs it, the index its checkpoints scan must use, who asks)
    "latest": (_tuple_body(durable_sql.TUPLE_LATEST_BODY), PKEY, "app"),
    "by id": (_tuple_body(durable_sql.TUPLE_BY_ID_BODY), PKEY, "app"),
    "list before/limit": (lambda s, t: list_op(s, t, "thread-2", "", before_checkpoint_id=_cid(9), limit=5), PKEY, "app"),
    "list of a thread, metadata filter": (
        lambda s, t: list_op(s, t, "thread-2", None, metadata_filter={"source": "loop", "step": 3}), PKEY, "app"),
    # Under row-level security a qual that is not LEAKPROOF (jsonb's @>, ->, =) may not run
    # before the tenant policy, so it cannot be an index condition: the application role's
    # tenant-wide filter scans the tenant's rows by a tenant-leading index (in the partitioned
    # schema: in the tenant's partition alone). The GIN index serves audit queries made by a
    # role that bypasses RLS (README, "Postgres at scale").
    "metadata filter across threads": (
        lambda s, t: list_op(s, t, metadata_filter={"user": f"{t}-thread-3", "step": 4}), TENANT_INDEX, "app"),
    "metadata filter across threads, audit role": (
        lambda s, t: list_op(s, t, metadata_filter={"user": f"{t}-thread-3", "step": 4}), GIN, "admin"),
}  # fmt: skip


BACKWARD = ("latest", "list before/limit")


def _plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _plan_nodes(child)


@pytest.mark.parametrize("schema", [PLAIN, PARTITIONED])
@pytest.mark.parametrize("path", list(READ_PATHS))
def test_each_read_path_uses_its_index(env: dict[str, Any], schema: str, path: str) -> None:
    """EXPLAIN as the application role (its row-level security qual included), sequential scans
    priced out: the checkpoints scan uses the intended index, the channel values and writes
    their primary keys, nothing is scanned sequentially, and in the partitioned schema only
    the tenant's partition is touched (pruned at plan time)."""
    tenant = TENANTS[3]
    make_op, index, role = READ_PATHS[path]
    statement = _statement(make_op(schema, tenant))
    params = statement.params
    if isinstance(params, dict) and "body" in params:  # the function's statement: as defined
        params = {k: v for k, v in params.items() if k != "body"}
        with psycopg.connect(env["admin_url"]) as conn:
            (definition,) = conn.execute(
                "SELECT pg_get_functiondef(%s::regprocedure)", (f"{schema}.lts_get_tuple(text, text, text, text)",)
            ).fetchone()  # type: ignore[misc]
        assert statement.params["body"] in definition  # type: ignore[index]
        statement = PgStatement(statement.sql, params, fetch=True)
    with psycopg.connect(env[f"{role}_url"]) as conn, conn.transaction(force_rollback=True):
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant,))
        conn.execute("SET LOCAL enable_seqscan = off")
        (plan,) = conn.execute("EXPLAIN (FORMAT JSON) " + statement.sql, statement.params).fetchone()[0]  # type: ignore[index]
        result = conn.execute(statement.sql, statement.params).fetchall()
        assert result  # the query finds something: the plan is one that matters
    nodes = list(_plan_nodes(plan["Plan"]))
    assert not [n for n in nodes if n["Node Type"] == "Seq Scan"], plan
    # relation -> index: an index scan names both; a bitmap heap scan's index is its child's
    scans = {n["Relation Name"]: n.get("Index Name") or next(
        (c.get("Index Name") for c in _plan_nodes(n) if c["Node Type"] == "Bitmap Index Scan"), None)
        for n in nodes if "Relation Name" in n}  # fmt: skip
    base = {re.sub(r"_p\d+$", "", rel) for rel in scans}
    assert base == {"checkpoints", "checkpoint_blobs", "checkpoint_writes"}, scans
    checkpoints_index = {i for rel, i in scans.items() if rel.startswith("checkpoints")}
    assert len(checkpoints_index) == 1 and re.fullmatch(index, checkpoints_index.pop() or ""), scans
    if path in BACKWARD:  # newest first straight from the primary key: no sort of the thread's rows
        (scan,) = [n for n in nodes if n.get("Relation Name", "").startswith("checkpoints")]
        assert scan.get("Scan Direction") == "Backward" and not [n for n in nodes if n["Node Type"] == "Sort"], plan
    for rel, used in scans.items():
        if not rel.startswith("checkpoints"):
            assert (used or "").endswith("_pkey"), scans
    if schema == PARTITIONED:
        suffix = _home(env, "checkpoints", tenant).rsplit("_", 1)[1]
        assert {rel.rsplit("_", 1)[1] for rel in scans} == {suffix}, scans  # one partition of each table
        assert not [n for n in nodes if n["Node Type"] == "Append"], plan
    else:
        assert set(scans) == {"checkpoints", "checkpoint_blobs", "checkpoint_writes"}


def test_the_setup_command_takes_partitions(test_database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    from langgraph_tiered_saver.cli.main import main

    schema = f"lts_cli_{uuid.uuid4().hex[:8]}"
    try:
        assert main(["--postgres-url", test_database_url, "--schema", schema, "setup", "--partitions", "3"]) == 0
        assert json.loads(capsys.readouterr().out)["applied_migrations"] == list(range(1, LATEST_VERSION + 1))
        assert main(["--postgres-url", test_database_url, "--schema", schema, "setup", "--partitions", "5"]) == 2
        assert "has 3 tenant partitions" in capsys.readouterr().err
        with psycopg.connect(test_database_url) as conn:
            assert conn.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = to_regclass(%s)",
                                (f"{schema}.checkpoint_writes",)).fetchone() == (3,)  # fmt: skip
    finally:
        with psycopg.connect(test_database_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
