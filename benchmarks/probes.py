"""Server-side measurements: Redis memory of a saver's keys, Postgres table sizes and load."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import psycopg
import redis
from psycopg import sql


def redis_memory(url: str, patterns: list[str]) -> tuple[int, int]:
    """(bytes, keys): `MEMORY USAGE ... SAMPLES 0` summed over every key matching `patterns`."""
    client = redis.Redis.from_url(url)
    total = count = 0
    try:
        for pattern in patterns:
            keys = list(client.scan_iter(match=pattern, count=1000))
            for start in range(0, len(keys), 500):
                pipe = client.pipeline(transaction=False)
                for key in keys[start : start + 500]:
                    pipe.memory_usage(key, samples=0)
                total += sum(int(n or 0) for n in pipe.execute())
            count += len(keys)
    finally:
        client.close()
    return total, count


def pg_footprint(pg_url: str, schema: str) -> tuple[int, int]:
    """(bytes, rows) of every table in `schema`: `pg_total_relation_size` and exact counts."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind IN ('r', 'p')",
            (schema,),
        ).fetchall()
        rows = 0
        for name, _size in tables:
            query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, name))
            row = conn.execute(query).fetchone()
            rows += int(row[0]) if row else 0
    return sum(int(size) for _name, size in tables), rows


@dataclass(frozen=True)
class PgCounters:
    xact_commit: int
    xact_rollback: int
    wal_lsn: str


class PgMonitor:
    """Reads `pg_stat_database` of the bench database from a connection to *another* database,
    so the monitor's own transactions are not counted.

    Postgres publishes a backend's counters lazily (at most once a second, and at exit), so
    `quiesce()` waits until the bench database has no backends left before reading: callers close
    their savers (pools) first, which makes every counter final.
    """

    def __init__(self, admin_url: str, db_name: str) -> None:
        self.db_name = db_name
        self.conn = psycopg.connect(admin_url, autocommit=True)

    def close(self) -> None:
        self.conn.close()

    def quiesce(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = self.conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (self.db_name,),
            ).fetchone()
            if row and row[0] == 0:
                return True
            time.sleep(0.05)
        return False

    def read(self) -> PgCounters:
        self.conn.execute("SELECT pg_stat_clear_snapshot()")
        row = self.conn.execute(
            "SELECT xact_commit, xact_rollback, pg_current_wal_lsn()::text"
            " FROM pg_stat_database WHERE datname = %s",
            (self.db_name,),
        ).fetchone()
        assert row is not None, f"database {self.db_name} not in pg_stat_database"
        return PgCounters(int(row[0]), int(row[1]), str(row[2]))

    def wal_bytes(self, before: PgCounters, after: PgCounters) -> int:
        row = self.conn.execute(
            "SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)", (after.wal_lsn, before.wal_lsn)
        ).fetchone()
        return int(row[0]) if row else 0


# A block reference in pg_walinspect's `block_ref`: "blkref #0: rel 1663/16384/16385 blk 0".
_BLOCK_REL = re.compile(r"rel \d+/(\d+)/(\d+)")
_RELATION_NAMES = """
SELECT pg_relation_filenode(c.oid)::text, coalesce(t.relname || ' (toast)', ti.relname || ' (toast index)', c.relname)
FROM pg_class c
LEFT JOIN pg_class t ON t.reltoastrelid = c.oid
LEFT JOIN pg_index x ON x.indexrelid = c.oid
LEFT JOIN pg_class ti ON ti.reltoastrelid = x.indrelid
WHERE pg_relation_filenode(c.oid) IS NOT NULL
"""  # pg_relation_filenode: also the system catalogs, whose pg_class.relfilenode is 0


class WalByRelation:
    """WAL a database's relations received between two LSNs, by relation, read with
    pg_walinspect (superuser or pg_read_server_files; the extension is created in the bench
    database, dropped with it). Unlike the cluster-wide LSN difference, other databases'
    sessions add nothing; commit records count for the database when their transaction wrote
    to it. `reason` says why it is unavailable (then `None` is returned).

    Connections to the bench database are opened only for a read and closed at once, so
    `PgMonitor.quiesce` still sees the database empty between windows."""

    def __init__(self, monitor: PgMonitor, bench_url: str, *, dedicated_db: bool) -> None:
        self.monitor = monitor
        self.bench_url = bench_url
        self.reason: str | None = None
        if not dedicated_db:  # never an extension in a database the benchmark does not own
            self.reason = "the bench database is a shared one"
            return
        try:
            with psycopg.connect(bench_url, autocommit=True) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        except psycopg.Error as exc:
            self.reason = f"pg_walinspect unavailable: {str(exc).strip().splitlines()[0]}"

    def lsn(self) -> str:
        row = self.monitor.conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
        assert row is not None
        return str(row[0])

    def by_relation(self, start: str, end: str, timeout: float = 10.0) -> dict[str, int] | None:
        """Bytes of WAL per relation name (schema left out), and `(commit)` for commit records."""
        if self.reason is not None:
            return None
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.bench_url, autocommit=True) as conn:
            if conn.execute("SELECT %s::pg_lsn >= %s::pg_lsn", (start, end)).fetchone()[0]:  # type: ignore[index]
                return {}  # no WAL in the window (a saver that never writes to Postgres)
            # pg_walinspect reads only WAL already flushed to disk
            while conn.execute("SELECT pg_current_wal_flush_lsn() < %s::pg_lsn", (end,)).fetchone()[0]:  # type: ignore[index]
                if time.monotonic() > deadline:
                    raise TimeoutError("WAL not flushed in 10 s")
                time.sleep(0.05)
            db_row = conn.execute("SELECT oid::text FROM pg_database WHERE datname = current_database()").fetchone()
            assert db_row is not None
            names = dict(conn.execute(_RELATION_NAMES).fetchall())
            records = conn.execute(
                "SELECT xid::text, record_length, block_ref FROM pg_get_wal_records_info(%s::pg_lsn, %s::pg_lsn)",
                (start, end),
            ).fetchall()
        out: dict[str, int] = {}
        xids: set[str] = set()
        unattributed: list[tuple[str, int]] = []
        for xid, length, block_ref in records:
            match = _BLOCK_REL.search(block_ref or "")
            if match is None:
                unattributed.append((xid, int(length)))
            elif match.group(1) == db_row[0]:
                name = names.get(match.group(2), f"relfilenode {match.group(2)}")
                out[name] = out.get(name, 0) + int(length)
                xids.add(xid)
        commits = sum(length for xid, length in unattributed if xid in xids and xid != "0")
        if commits:
            out["(commit)"] = commits
        return out
