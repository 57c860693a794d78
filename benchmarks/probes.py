"""Server-side measurements: Redis memory of a saver's keys, Postgres table sizes and load."""

from __future__ import annotations

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
