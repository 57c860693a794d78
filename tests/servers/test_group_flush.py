"""Group flushes on real Redis and Postgres: the background flusher's several threads, of any
tenants, in one transaction. Row-level security holds for each tenant's rows (as the
application role), and one thread's fence or failing row never costs the others their flush."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import psycopg
import pytest

from langgraph_tiered_saver import FlushError
from langgraph_tiered_saver._sansio.io import PgCall, SyncDriver
from langgraph_tiered_saver.durable.roles import create_app_role_op
from langgraph_tiered_saver.flushing.ops import FlushLease, FlushPolicy, FlushResult
from tests.faults.test_flush_fencing import _finish
from tests.faults.test_flush_workers import _step_until
from tests.graphs import chain_graph
from tests.helpers import thread_config
from tests.servers.test_flusher_supervision import _trigger

MANUAL = FlushPolicy(on_interrupt="off", on_error="off", quiet_seconds=3600, every_n_checkpoints=0, on_close=False)
QUICK_TAKEOVER = replace(MANUAL, takeover_seconds=0.2)  # a stalled lease is taken over at once
TENANTS = ("acme", "globex", "initech")


def _rows_by_tenant(url: str, schema: str, threads: list[str]) -> dict[tuple[str, str], int]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            f'SELECT tenant_id, thread_id, count(*) FROM "{schema}".checkpoints WHERE thread_id = ANY(%s) GROUP BY 1, 2',
            (threads,),
        ).fetchall()
    return {(t, th): n for t, th, n in rows}


def _write(saver: Any, keys: list[tuple[str, str]]) -> None:
    graph = chain_graph(saver, nodes=1)
    for tenant, thread in keys:
        graph.invoke({"n": 0}, thread_config(thread, tenant_id=tenant))


def _write_one_failing(saver: Any, url: str, tag: str) -> tuple[list[tuple[str, str]], tuple[str, str]]:
    """A thread per tenant, written; the first (the oldest write: first in the outbox index)
    has rows Postgres refuses (a trigger). The threads, and that one."""
    keys = [(tenant, f"{tag}{i}-{uuid.uuid4().hex[:6]}") for i, tenant in enumerate(TENANTS)]
    _trigger(url, saver.schema, keys[0][1])
    _write(saver, keys)
    return keys, keys[0]


def _pg_calls(monkeypatch: pytest.MonkeyPatch) -> list[PgCall]:
    calls: list[PgCall] = []
    original = SyncDriver._pg

    def record(self: SyncDriver, call: PgCall) -> Any:
        calls.append(call)
        return original(self, call)

    monkeypatch.setattr(SyncDriver, "_pg", record)
    return calls


def test_a_group_of_several_tenants_commits_once_as_the_app_role(
    saver_context: Callable[..., Any], test_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the NOBYPASSRLS application role: each tenant's rows pass its row-level security
    check because its statements follow its own set_config; one transaction for all."""
    suffix = uuid.uuid4().hex[:10]
    role, password = f"lts_group_app_{suffix}", f"pw-{suffix}"
    app_url = psycopg.conninfo.make_conninfo(test_database_url, user=role, password=password)
    with saver_context(durable=True, tenant_id=None, flush_policy=MANUAL, background_flush=False) as admin:
        admin.setup()
        admin.run_op(create_app_role_op(admin.schema, role, login=True, password=password))
        try:
            with saver_context(durable=True, tenant_id=None, flush_policy=MANUAL, background_flush=False,
                               key_prefix=admin.key_prefix, schema=admin.schema, postgres_url=app_url) as app:  # fmt: skip
                keys = [(tenant, f"g{i}-{uuid.uuid4().hex[:6]}") for i, tenant in enumerate(TENANTS * 2)]
                _write(app, keys)
                calls = _pg_calls(monkeypatch)
                results = app.run_op(app.core.flush.flush_group_op(keys))
                assert len(calls) == 1 and calls[0].tenant_id is None  # one transaction, tenants set inside
                assert all(isinstance(r, FlushResult) and r.checkpoints == 3 and r.remaining == 0 for r in results)
                stored = _rows_by_tenant(test_database_url, admin.schema, [t for _, t in keys])
                assert stored == {key: 3 for key in keys}  # each thread's rows under its own tenant
                assert not set(app.run_op(app.core.flush.dirty_threads_op())) & set(keys)  # out of the outbox
                for tenant in TENANTS:  # read back through row-level security
                    listed = {t.thread_id for t in app.for_tenant(tenant).list_threads()}
                    assert listed == {th for t, th in keys if t == tenant}
        finally:
            with psycopg.connect(test_database_url, autocommit=True) as conn:
                conn.execute(f'DROP OWNED BY "{role}"')
                conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_a_fenced_thread_of_a_group_is_skipped_and_the_others_are_written(
    saver_context: Callable[..., Any], test_database_url: str
) -> None:
    """A thread deleted after the group read its outbox: the group's transaction is refused by
    its fence, each thread is then flushed alone, and only the deleted one is left out."""
    with saver_context(durable=True, tenant_id=None, flush_policy=QUICK_TAKEOVER, background_flush=False) as saver:
        saver.setup()
        keys = [(tenant, f"f{i}-{uuid.uuid4().hex[:6]}") for i, tenant in enumerate(TENANTS)]
        _write(saver, keys)
        group = saver.core.flush.flush_group_op(keys, lease=FlushLease("stalled", 60_000))
        upsert = _step_until(saver, group, PgCall)  # leases held, outboxes read
        deleted = keys[1]
        saver.for_tenant(deleted[0]).delete_thread(deleted[1])  # takes the lease over, tombstones
        results = _finish(saver, group, upsert)
        by_key = {(r.tenant_id, r.thread_id): r for r in results}
        assert by_key[deleted].fenced and by_key[deleted].skipped_locked
        assert all(by_key[k].checkpoints == 3 for k in keys if k != deleted)
        stored = _rows_by_tenant(test_database_url, saver.schema, [t for _, t in keys])
        assert stored == {k: 3 for k in keys if k != deleted}


def test_a_thread_whose_rows_fail_costs_the_group_nothing_but_its_own_flush(
    saver_context: Callable[..., Any], test_database_url: str
) -> None:
    with saver_context(durable=True, tenant_id=None, flush_policy=MANUAL, background_flush=False) as saver:
        saver.setup()
        keys, bad = _write_one_failing(saver, test_database_url, "x")
        results = saver.run_op(saver.core.flush.flush_group_op(keys))
        assert isinstance(results[0], Exception) and "refused by a trigger" in str(results[0])
        assert all(isinstance(r, FlushResult) and r.checkpoints == 3 for r in results[1:])
        stored = _rows_by_tenant(test_database_url, saver.schema, [t for _, t in keys])
        assert stored == {k: 3 for k in keys[1:]}
        assert bad in set(saver.run_op(saver.core.flush.dirty_threads_op()))  # still in the outbox


def test_flush_of_every_thread_writes_them_in_groups(
    saver_context: Callable[..., Any], test_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`flush()` with no thread: the dirty threads of every tenant in one transaction, as the
    background flusher writes a group, not one transaction each."""
    with saver_context(durable=True, tenant_id=None, flush_policy=MANUAL, background_flush=False) as saver:
        saver.setup()
        keys = [(tenant, f"a{i}-{uuid.uuid4().hex[:6]}") for i, tenant in enumerate(TENANTS * 2)]
        _write(saver, keys)
        calls = _pg_calls(monkeypatch)
        results = saver.flush()
        assert len(calls) == 1  # one transaction for the six threads
        assert sorted((r.tenant_id, r.thread_id, r.checkpoints, r.remaining) for r in results) == sorted(
            (tenant, thread, 3, 0) for tenant, thread in keys
        )
        assert _rows_by_tenant(test_database_url, saver.schema, [t for _, t in keys]) == {k: 3 for k in keys}
        assert not set(saver.run_op(saver.core.flush.dirty_threads_op())) & set(keys)


def test_flush_of_every_thread_waits_for_a_lease_the_group_could_not_take(
    saver_context: Callable[..., Any], test_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread another flusher holds (stalled) is skipped by the group and then flushed alone,
    after `takeover_seconds`, as `flush()` of that thread does: nothing is left out."""
    with saver_context(durable=True, tenant_id=None, flush_policy=QUICK_TAKEOVER, background_flush=False) as saver:
        saver.setup()
        keys = [(tenant, f"w{i}-{uuid.uuid4().hex[:6]}") for i, tenant in enumerate(TENANTS)]
        _write(saver, keys)
        held = keys[1]
        assert saver.run_op(saver.core.flush.acquire_flush_lock_op(*held, wait=False)) is not None  # never released
        calls = _pg_calls(monkeypatch)
        results = saver.flush()
        assert [c.tenant_id for c in calls] == [None, held[0]]  # the group, then the held thread alone
        assert {(r.tenant_id, r.thread_id): (r.checkpoints, r.skipped_locked) for r in results} == {
            k: (3, False) for k in keys
        }
        assert _rows_by_tenant(test_database_url, saver.schema, [t for _, t in keys]) == {k: 3 for k in keys}


def test_flush_of_every_thread_raises_a_threads_own_error_after_writing_the_others(
    saver_context: Callable[..., Any], test_database_url: str
) -> None:
    with saver_context(durable=True, tenant_id=None, flush_policy=MANUAL, background_flush=False) as saver:
        saver.setup()
        keys, bad = _write_one_failing(saver, test_database_url, "e")
        with pytest.raises(Exception, match="refused by a trigger"):
            saver.flush()
        stored = _rows_by_tenant(test_database_url, saver.schema, [t for _, t in keys])
        assert stored == {k: 3 for k in keys[1:]}  # the group wrote the others first
        assert bad in set(saver.run_op(saver.core.flush.dirty_threads_op()))  # kept in the outbox


def test_close_drains_the_threads_of_every_tenant_in_one_transaction(
    saver_context: Callable[..., Any], test_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`close()` with threads waiting (nothing was due yet): one group, not one transaction each."""
    ctx = saver_context(durable=True, tenant_id=None, flush_policy=replace(MANUAL, on_close=True))
    saver = ctx.__enter__()
    saver.setup()
    keys = [(tenant, f"c{i}-{uuid.uuid4().hex[:6]}") for i, tenant in enumerate(TENANTS * 2)]
    _write(saver, keys)
    calls = _pg_calls(monkeypatch)
    ctx.__exit__(None, None, None)
    assert len(calls) == 1 and calls[0].tenant_id is None  # one transaction for the six threads
    assert _rows_by_tenant(test_database_url, saver.schema, [t for _, t in keys]) == {k: 3 for k in keys}


def test_close_names_a_thread_postgres_refuses_after_its_group_wrote_the_others(
    saver_context: Callable[..., Any], test_database_url: str
) -> None:
    ctx = saver_context(durable=True, tenant_id=None, flush_policy=replace(MANUAL, on_close=True))
    saver = ctx.__enter__()
    saver.setup()
    keys, bad = _write_one_failing(saver, test_database_url, "d")
    with pytest.raises(FlushError) as raised:
        ctx.__exit__(None, None, None)
    assert raised.value.threads == [bad]
    assert _rows_by_tenant(test_database_url, saver.schema, [t for _, t in keys]) == {k: 3 for k in keys[1:]}
    with saver_context(durable=True, tenant_id=None, flush_policy=MANUAL, background_flush=False,
                       key_prefix=saver.key_prefix, schema=saver.schema) as again:  # fmt: skip
        assert bad in set(again.run_op(again.core.flush.dirty_threads_op()))  # kept in the outbox
