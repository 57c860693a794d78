"""Pruning a thread's history in both tiers at once: `prune(keep_latest)` and retention
(`prune_history`: older than a cutoff, keeping the last N per namespace).

One per-thread op reads the thread from Redis and Postgres, lets a *chooser* pick the
checkpoints to keep, adds the ancestors their DeltaChannels need (`with_delta_ancestors`), and
deletes the rest from both tiers (or, dry, only counts them). Redis is pruned too: otherwise `list` would
keep showing what Postgres dropped.

Kept by retention, always: the N newest checkpoints of every namespace (N >= 1, so the latest),
those newer than the cutoff, a paused run's checkpoint (an `__interrupt__` write and no child),
and their DeltaChannel ancestors. Cost: every thread of the tenant is read whole, one thread
(one flush lock) at a time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from langgraph.checkpoint.serde.types import INTERRUPT

from langgraph_tiered_saver._sansio.io import Op, PgCall, PgStatement
from langgraph_tiered_saver.blobs import parse_pointer
from langgraph_tiered_saver.blobs.offloader import digests_in_export
from langgraph_tiered_saver.durable import ops as pg
from langgraph_tiered_saver.durable import sql
from langgraph_tiered_saver.durable.roles import check_role_op
from langgraph_tiered_saver.errors import ConfigError
from langgraph_tiered_saver.hot import keys as K
from langgraph_tiered_saver.hot.stored import decode_refs, from_durable
from langgraph_tiered_saver.records.codec import (
    CheckpointRecord,
    loads_record,
    unpack_checkpoint,
    unpack_write,
)

# `core` below is the `core.Core` that imports this module (typed Any: no import cycle)
Core = Any
# (records, has_value, paused members) -> members to keep (before ancestors are added)
Chooser = Callable[[Mapping[str, CheckpointRecord], set[str]], set[str]]
Progress = Callable[[int, int, str, str], None]  # (done, total, tenant, thread)


@dataclass
class PruneReport:
    """What a prune removed (or, with `dry_run`, would remove)."""

    dry_run: bool
    tenants: list[str] = field(default_factory=list)
    threads: int = 0  # threads looked at
    threads_pruned: int = 0  # threads that lost (or would lose) a checkpoint
    checkpoints: int = 0  # distinct checkpoints removed across both tiers
    redis_checkpoints: int = 0
    postgres_checkpoints: int = 0
    postgres_writes: int = 0
    kept: int = 0


def latest_per_namespace(records: Mapping[str, CheckpointRecord], keep_last: int) -> set[str]:
    by_ns: dict[str, list[str]] = {}
    for member in records:
        by_ns.setdefault(K.split_checkpoint_member(member)[0], []).append(member)
    keep: set[str] = set()
    for members in by_ns.values():
        members.sort(key=lambda m: K.split_checkpoint_member(m)[1], reverse=True)
        keep.update(members[: max(1, keep_last)])
    return keep


def with_delta_ancestors(serde: Any, records: Mapping[str, CheckpointRecord], seeds: set[str]) -> set[str]:
    """`seeds` plus the ancestors their DeltaChannels are rebuilt from: follow parents while a
    checkpoint's metadata carries `counters_since_delta_snapshot`, up to the snapshot. The one
    rule of every prune, in both tiers: the durable tier's statement applies it too
    (sql.DELETE_CHECKPOINTS), so Redis and Postgres keep the same checkpoints."""
    keep = set(seeds)
    for member in seeds:
        ns, record = K.split_checkpoint_member(member)[0], records[member]
        while "counters_since_delta_snapshot" in (loads_record(serde, record.metadata) or {}):
            parent = K.checkpoint_member(ns, record.parent_checkpoint_id or "")
            if record.parent_checkpoint_id is None or parent not in records:
                break
            keep.add(parent)
            record = records[parent]
    return keep


def retention_chooser(serde: Any, older_than: dt.timedelta | None, keep_last: int | None) -> Chooser:
    """Keep the newest `keep_last` (default 1) per namespace, paused runs, and, with
    `older_than`, everything newer than now - older_than."""
    cutoff = None if older_than is None else dt.datetime.now(dt.timezone.utc) - older_than

    def newer(record: CheckpointRecord) -> bool:
        ts = loads_record(serde, record.checkpoint).get("ts")
        return ts is not None and dt.datetime.fromisoformat(ts) >= cutoff  # type: ignore[operator]

    def choose(records: Mapping[str, CheckpointRecord], paused: set[str]) -> set[str]:
        keep = latest_per_namespace(records, keep_last or 1) | paused
        if cutoff is not None:
            keep |= {m for m, r in records.items() if m not in keep and newer(r)}
        return keep

    return choose


def prune_thread_op(
    core: Core, tenant: str, thread: str, choose: Chooser, *, dry_run: bool, report: PruneReport
) -> Op[None]:
    """Prune one thread in both tiers (the caller holds its flush lock unless `dry_run`).
    Nothing is flushed first: the records are read from both tiers, and dropping a Redis
    checkpoint drops its outbox entry with it, so what is kept and unflushed stays due."""
    yield from core._drain_op(tenant, thread)  # writes this process holds back belong to it
    content = yield from core.hot.export_thread_op(tenant, thread)
    where = f"Redis thread {thread!r}"
    records = {
        member: unpack_checkpoint(raw, decode_refs(content["cv"].get(member))[1], where)
        for member, raw in content["ck"].items()
    }
    in_redis = set(records)
    in_postgres: dict[str, int] = {}  # member -> its pending writes in Postgres
    interrupted = {
        K.checkpoint_member(ns, cid)
        for f, raw in content["wr"].items()
        for ns, cid, _, _ in [K.split_write_field(f)]
        if unpack_write(raw, where).channel == INTERRUPT
    }
    if core.durable:
        for row in (yield from pg.list_op(core.schema, tenant, thread, None, None, None, None, None)):
            found = from_durable(row)
            member = K.checkpoint_member(found.checkpoint_ns, found.checkpoint_id)
            records.setdefault(member, found.record)
            in_postgres[member] = len(found.writes)
            if any(w.channel == INTERRUPT for w in found.writes):
                interrupted.add(member)
    parents = {(K.split_checkpoint_member(m)[0], r.parent_checkpoint_id) for m, r in records.items()}
    paused = {m for m in interrupted if m in records and K.split_checkpoint_member(m) not in parents}

    keep = with_delta_ancestors(core.hot.serde, records, choose(records, paused))
    drop = [m for m in records if m not in keep]
    report.threads += 1
    report.kept += len(keep)
    report.checkpoints += len(drop)
    report.threads_pruned += bool(drop)
    hot_drop = [m for m in drop if m in in_redis]
    if dry_run:  # what each tier would lose, counted from what was just read
        report.redis_checkpoints += len(hot_drop)
        report.postgres_checkpoints += sum(m in in_postgres for m in drop)
        report.postgres_writes += sum(in_postgres.get(m, 0) for m in drop)
    if dry_run or not drop:
        return None
    yield from core.hot.delete_members_op(tenant, {thread: hot_drop}, "members")
    report.redis_checkpoints += len(hot_drop)
    candidates = digests_in_export(content)
    if core.durable:
        kept: dict[tuple[str, str], set[str]] = {}
        for member in keep:
            ns, checkpoint_id = K.split_checkpoint_member(member)
            kept.setdefault((thread, ns), set()).add(checkpoint_id)
        result = yield from pg.prune_op(core.schema, tenant, [thread], "keep_latest", kept)
        report.postgres_checkpoints += result.checkpoints
        report.postgres_writes += result.writes
        candidates |= ref_digests(result.orphaned_blob_refs)
    yield from core._collect_blobs_op(tenant, [thread], candidates)
    return None


def ref_digests(refs: Sequence[str]) -> set[str]:
    return {parse_pointer(ref.encode()).digest for ref in refs}


def tenants_op(core: Core) -> Op[list[str]]:
    """Every tenant Postgres holds threads of (needs a role that bypasses row-level security)."""
    role = yield from check_role_op()
    if not role.bypasses_rls:
        raise ConfigError(
            f"pruning every tenant needs a superuser or BYPASSRLS role (row-level security hides "
            f"other tenants from {role.name!r}); pass a tenant instead"
        )
    (rows,) = yield PgCall((PgStatement(sql.render("SELECT DISTINCT tenant_id FROM {s}.checkpoints ORDER BY 1", core.schema), fetch=True),))
    return [str(r[0]) for r in rows]


def threads_of_op(core: Core, tenant: str) -> Op[list[str]]:
    """The tenant's threads in either tier."""
    threads = set((yield from core.hot.list_threads_op(tenant)))
    if core.durable:
        threads |= {i.thread_id for i in (yield from pg.list_threads_op(core.schema, tenant))}
    return sorted(threads)


def retention_op(
    core: Core,
    serde: Any,
    tenant: str | None,
    *,
    older_than: dt.timedelta | None = None,
    keep_last: int | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> Op[PruneReport]:
    """Drop checkpoints older than `older_than` and/or beyond the `keep_last` newest of each
    namespace (see the module docstring for what is always kept); `dry_run` only counts;
    `progress(done, total, tenant, thread)` is called after each thread."""
    if older_than is None and keep_last is None:
        raise ConfigError("prune_history needs older_than, keep_last or both")
    if keep_last is not None and (isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1):
        raise ConfigError(f"keep_last must be an int >= 1 (the latest is always kept), got {keep_last!r}")
    if older_than is not None and (not isinstance(older_than, dt.timedelta) or older_than < dt.timedelta(0)):
        raise ConfigError(f"older_than must be a timedelta >= 0, got {older_than!r}")
    choose = retention_chooser(serde, older_than, keep_last)
    return (yield from prune_history_op(core, tenant, choose, dry_run=dry_run, progress=progress))


def prune_history_op(
    core: Core,
    tenant: str | None,
    choose: Chooser,
    *,
    dry_run: bool,
    progress: Progress | None = None,
) -> Op[PruneReport]:
    """Retention over one tenant's threads, or every tenant's (`tenant` None; durable only)."""
    if tenant is None and not core.durable:
        raise ConfigError("pruning every tenant lists the tenants from Postgres; this saver has none")
    tenants = [tenant] if tenant is not None else (yield from tenants_op(core))
    report = PruneReport(dry_run, tenants)
    work: list[tuple[str, str]] = []
    for t in tenants:
        work.extend((t, thread) for thread in (yield from threads_of_op(core, t)))
    for done, (t, thread) in enumerate(work, 1):
        body = prune_thread_op(core, t, thread, choose, dry_run=dry_run, report=report)
        yield from (body if dry_run else core._with_flush_lock_op(t, thread, body))
        if progress is not None:
            progress(done, len(work), t, thread)
    return report
