"""Postgres load per graph run: transactions committed and WAL bytes.

For each saver and repetition (round robin): open a saver whose tables already exist (setup ran
in an earlier, closed session), run `pgload_runs` graph runs, `flush`, close. Every backend of the
bench database is then gone, so `pg_stat_database.xact_commit` of that database is final (see
`PgMonitor`); its delta ÷ runs is the transactions per run. WAL bytes come from
`pg_current_wal_lsn()`, which is cluster-wide: other sessions on the server add noise to it.
Where pg_walinspect can be used (a superuser), the same windows are also read record by record
(`WalByRelation`): `wal_db_bytes_per_run` counts only the bench database's WAL, and
`wal:<relation>` splits it by table and index (`(commit)`: commit records).
"""

from __future__ import annotations

import statistics
from collections import defaultdict

from ..graph import build_case_graph, run_case
from ..probes import PgMonitor, WalByRelation
from ..savers import error_reason
from ._common import Context, Table, rotated

SCOPE = "pgload"


def run(ctx: Context) -> None:
    runs = ctx.profile.pgload_runs
    table = Table(ctx, "pgload", "postgres load per graph run", "graph", {}, unit="xact/run")
    factories = [f for f in ctx.factories if not f.unavailable and f.supports("graph")]
    monitor = PgMonitor(ctx.env.admin_pg_url, ctx.env.db_name)
    wal = WalByRelation(monitor, ctx.env.pg_url, dedicated_db=ctx.env.dedicated_db)
    if wal.reason:
        ctx.notes["pgload wal"] = f"WAL by relation not measured: {wal.reason}"
    per_rep: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    try:
        for f in factories:  # create tables outside the measured windows
            try:
                with f.open_sync(ctx.env, SCOPE):
                    pass
            except Exception as exc:
                table.results[f.name].status = f"unavailable: {error_reason(exc)}"
        for rep in range(ctx.profile.pgload_reps):
            for f in rotated(factories, rep):
                if table.results[f.name].status != "ok":
                    continue
                try:
                    monitor.quiesce()
                    before = monitor.read()
                    start = wal.lsn()
                    with f.open_sync(ctx.env, SCOPE, setup=False) as saver:
                        case = build_case_graph(saver)
                        for k in range(runs):
                            thread = ctx.env.thread_id(f"pgload-{rep}-{k}")
                            run_case(case, f.config(thread, k))
                        f.flush(saver)
                    if not monitor.quiesce():
                        raise TimeoutError("bench database backends did not exit in 10 s")
                    after = monitor.read()
                    end = wal.lsn()
                    stats = per_rep[f.name]
                    stats["xact_per_run"].append((after.xact_commit - before.xact_commit) / runs)
                    stats["rollback_per_run"].append(
                        (after.xact_rollback - before.xact_rollback) / runs
                    )
                    stats["wal_bytes_per_run"].append(monitor.wal_bytes(before, after) / runs)
                    relations = wal.by_relation(start, end)
                    if relations is not None:
                        stats["wal_db_bytes_per_run"].append(sum(relations.values()) / runs)
                        for name, size in sorted(relations.items(), key=lambda kv: -kv[1]):
                            stats[f"wal:{name}"].append(size / runs)
                except Exception as exc:
                    table.results[f.name].status = f"error: {error_reason(exc)}"
    finally:
        monitor.close()
    for name, stats in per_rep.items():
        result = table.results[name]
        if result.status == "ok":
            result.samples = stats["xact_per_run"]
            windows = len(stats["xact_per_run"])  # a relation a window did not write: 0 there
            result.metrics = {k: statistics.median([*v, *[0.0] * (windows - len(v))]) for k, v in stats.items()}
    if not ctx.env.dedicated_db:
        ctx.notes["pgload"] = "shared database: transaction counts include other sessions"
    table.emit()
