"""Threads written by PostgresSaver, imported with `import-postgres`, read and resume the same
under TieredSaver: a graph with parallel nodes, a subgraph, a retried error and an interrupt, a
time-travel fork, and an old-format history (pending Sends of format < 4), in a schema of its own."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from langgraph.checkpoint.postgres import PostgresSaver
from psycopg.rows import dict_row

from langgraph_tiered_saver import TieredSaver
from langgraph_tiered_saver.errors import ConfigError, PostgresConfigError, TenantMismatchError
from langgraph_tiered_saver.importer import ReadThroughSaver, import_postgres_saver
from tests.faults.test_legacy_checkpoints import old_history, reads, write_history
from tests.graphs import Flaky, build_graph, comparable, initial_input, resume
from tests.helpers import TEST_TENANT


@pytest.fixture
def source(test_database_url: str) -> Iterator[tuple[str, PostgresSaver]]:
    """PostgresSaver's tables in a schema of their own, dropped afterwards."""
    schema = f"pgsaver_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(test_database_url, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    conn = psycopg.connect(test_database_url, autocommit=True, prepare_threshold=0, row_factory=dict_row)
    conn.execute(f'SET search_path TO "{schema}"')
    saver = PostgresSaver(conn)  # type: ignore[arg-type]
    saver.setup()
    try:
        yield schema, saver
    finally:
        conn.close()
        with psycopg.connect(test_database_url, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _cfg(thread: str) -> Any:
    return {"configurable": {"thread_id": thread}}


def _state(graph: Any, config: Any) -> dict[str, Any]:
    snap = graph.get_state(config, subgraphs=True)
    return {
        "values": comparable(snap.values),
        "next": snap.next,
        "config": snap.config["configurable"],
        "parent": snap.parent_config and snap.parent_config["configurable"],
        "metadata": snap.metadata,
        "interrupts": [(i.id, i.value) for i in snap.interrupts],
        "tasks": [(t.id, t.name, t.error and repr(t.error)) for t in snap.tasks],
    }


def _history(graph: Any, config: Any) -> list[dict[str, Any]]:
    return [
        {"config": s.config["configurable"], "values": comparable(s.values), "next": s.next,
         "metadata": s.metadata, "tasks": [(t.id, t.name) for t in s.tasks]}
        for s in graph.get_state_history(config)
    ]  # fmt: skip


def _write_threads(pg_saver: PostgresSaver) -> None:
    """`graph`: a run to its interrupt (a retried error on the way), then a fork from an
    earlier checkpoint run to the interrupt again; `old`: an old-format history."""
    graph = build_graph(pg_saver, flaky=Flaky(1))
    graph.invoke(initial_input(), _cfg("graph"))
    earlier = next(s for s in graph.get_state_history(_cfg("graph")) if s.next == ("sub",))
    graph.invoke(None, earlier.config)  # time travel: replay from before the subgraph
    write_history(pg_saver, "old", old_history())


def test_imported_threads_read_and_resume_as_under_postgres_saver(
    source: tuple[str, PostgresSaver], durable_saver: TieredSaver, test_database_url: str
) -> None:
    schema, pg_saver = source
    _write_threads(pg_saver)
    seen: list[tuple[int, int, str]] = []
    report = import_postgres_saver(
        durable_saver, test_database_url, source_schema=schema, progress=lambda *a: seen.append(a)
    )
    assert (report.threads, report.tenants, report.last_thread) == (2, {TEST_TENANT: 2}, "old")
    assert seen == [(1, 2, "graph"), (2, 2, "old")]
    again = import_postgres_saver(durable_saver, test_database_url, source_schema=schema)
    with pytest.raises(TenantMismatchError):  # a bound saver writes its own tenant's rows only
        import_postgres_saver(durable_saver, test_database_url, source_schema=schema, tenant="someone-else")
    assert (again.threads, again.checkpoints) == (2, report.checkpoints)  # idempotent: same rows

    on_pg, on_tiered = build_graph(pg_saver), build_graph(durable_saver)
    assert _state(on_tiered, _cfg("graph")) == _state(on_pg, _cfg("graph"))
    assert _history(on_tiered, _cfg("graph")) == _history(on_pg, _cfg("graph"))
    assert _state(on_tiered, _cfg("graph"))["interrupts"]
    steps = old_history()
    assert reads(durable_saver, "old", steps) == reads(pg_saver, "old", steps)

    resumed_pg = on_pg.invoke(resume("yes"), _cfg("graph"))
    resumed_tiered = on_tiered.invoke(resume("yes"), _cfg("graph"))
    assert comparable(resumed_tiered) == comparable(resumed_pg)
    assert _state(on_tiered, _cfg("graph"))["next"] == ()


def test_dry_run_tenant_map_and_going_on_after_a_thread(
    source: tuple[str, PostgresSaver], saver_context: Any, test_database_url: str
) -> None:
    schema, pg_saver = source
    _write_threads(pg_saver)
    with saver_context(durable=True, tenant_id=None) as saver:
        saver.setup()
        dry = import_postgres_saver(saver, test_database_url, source_schema=schema, tenant="acme", dry_run=True)
        assert (dry.dry_run, dry.threads, dry.tenants) == (True, 2, {"acme": 2})
        assert dry.checkpoints > 0 and dry.pending_writes > 0
        assert saver.for_tenant("acme").list_threads() == []  # nothing written
        mapped = import_postgres_saver(saver, test_database_url, source_schema=schema, tenant_map={"graph": "t1"})
        assert (mapped.threads, mapped.skipped_unmapped) == (1, ["old"])
        assert [t.thread_id for t in saver.for_tenant("t1").list_threads()] == ["graph"]
        rest = import_postgres_saver(saver, test_database_url, source_schema=schema, tenant="t2", after="graph")
        assert (rest.threads, rest.last_thread) == (1, "old")
        assert [t.thread_id for t in saver.for_tenant("t2").list_threads()] == ["old"]
        with pytest.raises(ConfigError):
            import_postgres_saver(saver, test_database_url, source_schema=schema)  # no tenant
        with pytest.raises(PostgresConfigError, match="no PostgresSaver table"):
            import_postgres_saver(saver, test_database_url, source_schema="nowhere", tenant="x")


def test_the_command_imports_with_progress_and_a_dry_run(
    source: tuple[str, PostgresSaver], saver_context: Any, redis_url: str, test_database_url: str, tmp_path: Path
) -> None:
    schema, pg_saver = source
    write_history(pg_saver, "old", old_history())
    with saver_context(durable=True, tenant_id=None) as saver:
        saver.setup()
        prefix = saver.core.hot.prefix
        base = [sys.executable, "-m", "langgraph_tiered_saver", "import-postgres", "--redis-url", redis_url,
                "--postgres-url", test_database_url, "--key-prefix", prefix, "--schema", saver.schema,
                "--source-schema", schema]  # fmt: skip
        mapping = tmp_path / "tenants.json"
        mapping.write_text(json.dumps({"old": "acme"}))
        dry = subprocess.run([*base, "--tenant-map", str(mapping), "--dry-run"], capture_output=True, text=True)
        assert dry.returncode == 0, dry.stderr
        assert json.loads(dry.stdout)["dry_run"] is True
        assert saver.for_tenant("acme").list_threads() == []
        done = subprocess.run([*base, "--tenant", "acme"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["threads"] == 1
        assert '"thread": "old"' in done.stderr  # progress names where to go on from
        assert [t.thread_id for t in saver.for_tenant("acme").list_threads()] == ["old"]
        both = subprocess.run([*base, "--tenant", "acme", "--tenant-map", str(mapping)], capture_output=True, text=True)
        assert both.returncode == 2 and "not both" in both.stderr


def test_read_through_imports_a_thread_on_its_first_read(
    source: tuple[str, PostgresSaver], durable_saver: TieredSaver, test_database_url: str
) -> None:
    """Switched before any import: the owner's first read of a PostgresSaver thread imports it,
    and it reads and resumes as under PostgresSaver; another tenant sees nothing; a new thread
    runs as usual; deleting deletes in both places."""
    schema, pg_saver = source
    _write_threads(pg_saver)
    outsider = ReadThroughSaver(durable_saver, test_database_url, source_schema=schema, tenant_of={"graph": "other"})
    assert build_graph(outsider).get_state(_cfg("graph")).values == {}  # not its tenant's thread
    assert list(outsider.list(_cfg("graph"))) == []
    outsider.close()

    saver = ReadThroughSaver(durable_saver, test_database_url, source_schema=schema, tenant_of=TEST_TENANT)
    try:
        on_pg, on_tiered = build_graph(pg_saver), build_graph(saver)
        assert _state(on_tiered, _cfg("graph")) == _state(on_pg, _cfg("graph"))
        assert _history(on_tiered, _cfg("graph")) == _history(on_pg, _cfg("graph"))
        assert _history(build_graph(durable_saver), _cfg("graph")) == _history(on_pg, _cfg("graph"))  # imported
        saver.copy_thread("old", "old-copy")  # a copy of a thread not imported yet imports it first
        assert durable_saver.get_tuple(_cfg("old-copy")) is not None
        steps = old_history()
        assert [t.checkpoint for t in saver.list(_cfg("old"))] == [t.checkpoint for t in pg_saver.list(_cfg("old"))]
        assert reads(durable_saver, "old", steps) == reads(pg_saver, "old", steps)
        assert comparable(on_tiered.invoke(resume("yes"), _cfg("graph"))) == comparable(
            on_pg.invoke(resume("yes"), _cfg("graph"))
        )

        on_tiered.invoke(initial_input(), _cfg("brand-new"))  # in neither: runs on TieredSaver alone
        assert on_tiered.get_state(_cfg("brand-new")).next == ("review",)
        assert pg_saver.get_tuple(_cfg("brand-new")) is None

        saver.delete_thread("old")
        assert durable_saver.get_tuple(_cfg("old")) is None and pg_saver.get_tuple(_cfg("old")) is None
        assert saver.get_tuple(_cfg("old")) is None  # and it does not come back
    finally:
        saver.close()


async def test_read_through_async(
    source: tuple[str, PostgresSaver], durable_saver: TieredSaver, test_database_url: str
) -> None:
    schema, pg_saver = source
    _write_threads(pg_saver)
    saver = ReadThroughSaver(durable_saver, test_database_url, source_schema=schema, tenant_of=TEST_TENANT)
    try:
        on_pg, on_tiered = build_graph(pg_saver), build_graph(saver)
        snap = await on_tiered.aget_state(_cfg("graph"), subgraphs=True)
        assert comparable(snap.values) == comparable(on_pg.get_state(_cfg("graph")).values)
        assert [s.config async for s in on_tiered.aget_state_history(_cfg("graph"))] == [
            s.config for s in on_pg.get_state_history(_cfg("graph"))
        ]
        resumed = await on_tiered.ainvoke(resume("no"), _cfg("graph"))
        assert comparable(resumed) == comparable(on_pg.invoke(resume("no"), _cfg("graph")))
        await saver.adelete_thread("graph")
        assert pg_saver.get_tuple(_cfg("graph")) is None
    finally:
        saver.close()


def test_an_oversized_value_goes_to_the_blob_store(
    source: tuple[str, PostgresSaver], saver_context: Any, test_database_url: str
) -> None:
    schema, pg_saver = source
    graph = build_graph(pg_saver)
    big = {**initial_input(), "log": ["x" * 20_000]}
    graph.invoke(big, _cfg("big"))
    with saver_context(durable=True, offload_threshold=4096) as saver:
        saver.setup()
        import_postgres_saver(saver, test_database_url, source_schema=schema)
        with psycopg.connect(test_database_url) as conn:
            (offloaded,) = conn.execute(
                f'SELECT count(*) FROM "{saver.schema}".checkpoint_blobs WHERE blob_ref IS NOT NULL'
            ).fetchone() or (0,)
        assert offloaded > 0
        assert _state(build_graph(saver), _cfg("big")) == _state(build_graph(pg_saver), _cfg("big"))
