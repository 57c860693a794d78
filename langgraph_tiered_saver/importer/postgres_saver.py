"""Import threads from PostgresSaver's tables (`checkpoints`, `checkpoint_blobs`,
`checkpoint_writes`, in any schema) into the durable tier.

The source is read through PostgresSaver itself (package `langgraph-checkpoint-postgres`), so
its own code decodes every format it ever wrote, old pending-`Send` checkpoints included. Each
thread is written with the same rows and the same idempotent upsert a flush uses, in one
transaction per thread: a re-run rewrites identical rows (idempotent), and an interrupted import
goes on from the thread it stopped at (`after`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from langgraph_tiered_saver._sansio.io import Op
from langgraph_tiered_saver.durable import ops as pg
from langgraph_tiered_saver.errors import ConfigError, PostgresConfigError, TenantMismatchError
from langgraph_tiered_saver.hot import keys as K
from langgraph_tiered_saver.hot.stored import encode_refs
from langgraph_tiered_saver.records.ids import ThreadRef, check_thread
from langgraph_tiered_saver.tenancy import check_tenant

if TYPE_CHECKING:
    from langgraph.checkpoint.base import CheckpointTuple

    from langgraph_tiered_saver.saver import TieredSaver

Progress = Callable[[int, int, str], None]  # (done, total, thread)
PAGE = 500


@dataclass
class ImportReport:
    """What an import copied (or, with `dry_run`, would copy)."""

    dry_run: bool
    source_schema: str
    threads: int = 0  # threads copied (or that would be)
    checkpoints: int = 0
    pending_writes: int = 0
    skipped_unmapped: list[str] = field(default_factory=list)  # no tenant in the map
    tenants: dict[str, int] = field(default_factory=dict)  # tenant -> threads
    last_thread: str | None = None  # pass it as `after` to go on from there


def import_postgres_saver(
    saver: TieredSaver,
    source_url: str,
    *,
    source_schema: str = "public",
    tenant: str | None = None,
    tenant_map: Mapping[str, str] | None = None,
    threads: Sequence[str] | None = None,
    after: str | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> ImportReport:
    """Copy PostgresSaver's threads into `saver`'s durable tier, each for its tenant.

    The tenant comes from `tenant` (every thread), else `tenant_map` (thread -> tenant; threads
    it lacks are skipped and listed), else the saver's bound tenant. `threads` limits the import
    to those ids; `after` skips every thread id up to and including it (threads go in id order).
    """
    if not saver.durable:
        raise ConfigError("import-postgres writes the durable tier: the saver needs a Postgres URL")
    if tenant is not None and tenant_map is not None:
        raise ConfigError("import-postgres: give a tenant or a tenant map, not both")
    default = check_tenant(tenant) if tenant is not None else saver.tenant_id
    mapping = {check_thread(t): check_tenant(v) for t, v in (tenant_map or {}).items()}
    if default is None and tenant_map is None:
        raise ConfigError("import-postgres: pass a tenant, a tenant map, or use a saver bound to a tenant")
    bound = saver.tenant_id
    owners = {t for t in (default, *mapping.values()) if t is not None}
    others = sorted(owners - {bound}) if bound is not None else []
    if others:  # a saver bound to one tenant never writes another's rows
        raise TenantMismatchError(f"import-postgres: the saver is bound to tenant {bound!r}, not {others[0]!r}")
    report = ImportReport(dry_run=dry_run, source_schema=source_schema)
    with Source(source_url, source_schema) as source:
        ids = source.thread_ids(threads, after)
        for done, thread in enumerate(ids, 1):
            owner = mapping.get(thread, default if tenant_map is None else None)
            if owner is None:
                report.skipped_unmapped.append(thread)
            else:
                tuples, paths = source.read(thread)
                report.checkpoints += len(tuples)
                report.pending_writes += sum(len(t.pending_writes or []) for t in tuples)
                if not dry_run:
                    saver.run_op(import_thread_op(saver.core, owner, thread, tuples, paths))
                report.threads += 1
                report.tenants[owner] = report.tenants.get(owner, 0) + 1
            report.last_thread = thread
            if progress is not None:
                progress(done, len(ids), thread)
    return report


def import_thread_op(
    core: Any, tenant: str, thread: str, tuples: Sequence[CheckpointTuple], task_paths: Mapping[tuple[str, str, str], str]
) -> Op[None]:
    """One thread's checkpoints (oldest first) and pending writes as the rows a flush writes,
    upserted in one transaction; Redis is not touched (a first read warms it from Postgres)."""
    entries: dict[str, Any] = {}  # outbox entry -> packed value; a channel version once
    for t in tuples:
        ns = t.config["configurable"].get("checkpoint_ns", "")
        parent = (t.parent_config or {}).get("configurable", {}).get("checkpoint_id")
        config: Any = {"configurable": {"thread_id": thread, "checkpoint_ns": ns, "checkpoint_id": parent}}
        ref = ThreadRef(tenant, thread, ns, parent)
        versions = dict(t.checkpoint["channel_versions"])
        put = yield from core.hot.prepare_put_op(ref, t.checkpoint, t.metadata, versions, config)
        entries.update((K.outbox_entry("blob", f), v) for f, v in put.blobs)
        refs = encode_refs(put.run_id, put.record.blob_fields)
        entries[K.outbox_entry("checkpoint", put.member)] = (put.record.pack(), refs)
        checkpoint_id = t.checkpoint["id"]
        by_task: dict[str, list[tuple[str, Any]]] = {}
        for task_id, channel, value in t.pending_writes or []:
            by_task.setdefault(task_id, []).append((channel, value))
        for task_id, writes in by_task.items():
            path = task_paths.get((ns, checkpoint_id, task_id), "")
            wref = ThreadRef(tenant, thread, ns, checkpoint_id)
            records, _ = yield from core.hot.prepare_writes_op(wref, writes, task_id, path)
            entries.update((K.outbox_entry("write", f), r.pack()) for f, r in records)
    if not entries:
        return None
    batch = core.flush.build_batch(tenant, thread, list(entries), list(entries.values()))
    yield from core.flush.offload_rows_op(batch)  # oversized values to the blob store, as a flush does
    yield from pg.upsert_batch_op(core.schema, [batch])
    return None


class Source:
    """PostgresSaver's tables, read through PostgresSaver on one connection (its schema first on
    the search path). Not shared between threads: callers serialize their use."""

    def __init__(self, url: str, schema: str) -> None:
        self.url, self.schema = url, schema
        self.conn: psycopg.Connection[Any] | None = None

    def __enter__(self) -> Source:
        try:
            from langgraph.checkpoint.postgres import PostgresSaver
        except ImportError as exc:
            raise ConfigError(
                "import-postgres reads through PostgresSaver: pip install 'langgraph-tiered-saver[import-postgres]'"
            ) from exc
        conn: psycopg.Connection[Any] = psycopg.connect(
            self.url, autocommit=True, prepare_threshold=0, row_factory=dict_row  # type: ignore[arg-type]
        )
        try:
            found = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = 'checkpoints') AS ok",
                [self.schema],
            ).fetchone()
            if not found or not found["ok"]:
                raise PostgresConfigError(f"no PostgresSaver table {self.schema}.checkpoints in the source database")
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        except BaseException:
            conn.close()
            raise
        self.conn, self.saver = conn, PostgresSaver(conn)  # type: ignore[arg-type]
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _conn(self) -> psycopg.Connection[Any]:
        if self.conn is None or self.conn.closed:
            self.__enter__()
        assert self.conn is not None
        return self.conn

    def has(self, thread: str) -> bool:
        row = self._conn().execute("SELECT 1 AS one FROM checkpoints WHERE thread_id = %s LIMIT 1", [thread]).fetchone()
        return row is not None

    def read(self, thread: str) -> tuple[list[CheckpointTuple], dict[tuple[str, str, str], str]]:
        """The thread's checkpoints of every namespace, oldest first, and its task paths."""
        self._conn()
        tuples = list(self.saver.list({"configurable": {"thread_id": thread}}))[::-1]
        return tuples, self._task_paths(thread)

    def delete(self, thread: str) -> None:
        self._conn()
        self.saver.delete_thread(thread)

    def thread_ids(self, only: Sequence[str] | None, after: str | None) -> list[str]:
        if only is not None:
            rows = self._conn().execute(
                "SELECT DISTINCT thread_id FROM checkpoints WHERE thread_id = ANY(%s) AND (%s::text IS NULL OR thread_id > %s)"
                " ORDER BY thread_id",
                [list(only), after, after],
            ).fetchall()
            return [row["thread_id"] for row in rows]
        return [row["thread_id"] for row in self._pages(after)]

    def _pages(self, after: str | None) -> Iterator[dict[str, Any]]:
        last = after
        while True:
            where = "WHERE thread_id > %s" if last is not None else ""
            rows = self._conn().execute(
                f"SELECT DISTINCT thread_id FROM checkpoints {where} ORDER BY thread_id LIMIT {PAGE}",
                [last] if last is not None else [],
            ).fetchall()
            yield from rows
            if len(rows) < PAGE:
                return
            last = rows[-1]["thread_id"]

    def _task_paths(self, thread: str) -> dict[tuple[str, str, str], str]:
        """(ns, checkpoint, task) -> task_path: PostgresSaver's tuples do not carry it, and the
        order of pending writes depends on it. Schemas from before the column: all empty."""
        try:
            rows = self._conn().execute(
                "SELECT DISTINCT checkpoint_ns, checkpoint_id, task_id, task_path FROM checkpoint_writes"
                " WHERE thread_id = %s",
                [thread],
            ).fetchall()
        except psycopg.errors.UndefinedColumn:
            return {}
        return {(r["checkpoint_ns"], r["checkpoint_id"], r["task_id"]): r["task_path"] or "" for r in rows}
