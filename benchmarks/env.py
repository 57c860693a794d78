"""Where the benchmark runs: server URLs, a throwaway database, unique names, and cleanup.

Everything the benchmark stores is namespaced by a random `run_id`:

* Postgres: a fresh database `lts_bench_<run_id>` created on the server of `DATABASE_URL`
  (default `postgresql://postgres@127.0.0.1:5432/postgres`) and dropped at the end. Each saver and
  workload gets its own schema inside it, so table sizes and row counts are per saver. If the role
  may not create databases, the database of `DATABASE_URL` itself is used with per-run schemas
  (dropped at the end) and the transaction counts are marked as shared with other sessions.
* Redis: key prefixes `lts-bench-<run_id>-...` on the database of `REDIS_URL`
  (default `redis://127.0.0.1:6379/0`). Cleanup deletes those keys by pattern; nothing is ever
  flushed.
* Private servers: a saver that needs a server of its own (langgraph-checkpoint-redis needs
  redis-stack) starts it through `adopt`, registers its URL in `private_redis` under the saver's
  slug, and cleanup stops it by PID and removes its directory.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from devtools.servers import delete_keys

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
KEY_PREFIX_ROOT = "lts-bench"


class _Server(Protocol):
    def close(self) -> None: ...


def with_pg_dbname(url: str, dbname: str) -> str:
    """`url` pointing at database `dbname` (keeps the URL form when given a URL)."""
    if url.startswith(("postgres://", "postgresql://")):
        parts = urlsplit(url)
        return urlunsplit((parts.scheme, parts.netloc, f"/{dbname}", parts.query, parts.fragment))
    return make_conninfo(url, dbname=dbname)


def slug(text: str) -> str:
    """Lowercase identifier-safe form of `text` (for schemas and key prefixes)."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


@dataclass
class BenchEnv:
    run_id: str
    redis_url: str
    admin_pg_url: str
    pg_url: str
    db_name: str
    dedicated_db: bool
    schemas: list[str] = field(default_factory=list)
    private_redis: dict[str, str] = field(default_factory=dict)  # saver slug -> its own server
    servers: list[_Server] = field(default_factory=list)

    # ------------------------------------------------------------------ names

    def key_prefix(self, saver: str, scope: str) -> str:
        return f"{KEY_PREFIX_ROOT}-{self.run_id}-{slug(saver)}-{slug(scope)}"

    def thread_id(self, label: str) -> str:
        return f"{self.run_id}-{label}"

    def schema(self, saver: str, scope: str, *, create: bool = True) -> str:
        """Name of a schema private to one saver and scope; created here when `create`."""
        name = f"b{self.run_id}_{slug(saver)}_{slug(scope)}"[:63]
        if name not in self.schemas:
            if create:
                with psycopg.connect(self.pg_url, autocommit=True) as conn:
                    stmt = sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(name))
                    conn.execute(stmt)
            self.schemas.append(name)
        return name

    def pg_conninfo(self, schema: str) -> str:
        """Connection string of the bench database with `search_path` set to `schema`."""
        return make_conninfo(self.pg_url, options=f"-c search_path={schema}")

    def adopt(self, saver: str, server: _Server, url: str) -> None:
        """Register `server` (already started) as `saver`'s own Redis; stopped at cleanup."""
        self.servers.append(server)
        self.private_redis[slug(saver)] = url

    # ------------------------------------------------------------- lifecycle

    @classmethod
    @contextmanager
    def create(cls) -> Iterator[BenchEnv]:
        run_id = secrets.token_hex(3)
        redis_url = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
        admin_url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
        db_name = f"lts_bench_{run_id}"
        dedicated = _try_create_database(admin_url, db_name)
        if not dedicated:
            db_name = str(conninfo_to_dict(admin_url).get("dbname") or "postgres")
        env = cls(
            run_id=run_id,
            redis_url=redis_url,
            admin_pg_url=admin_url,
            pg_url=with_pg_dbname(admin_url, db_name) if dedicated else admin_url,
            db_name=db_name,
            dedicated_db=dedicated,
        )
        try:
            yield env
        finally:
            env.cleanup()

    def cleanup(self) -> None:
        for server in reversed(self.servers):
            server.close()
        self.servers.clear()
        delete_keys(self.redis_url, f"{KEY_PREFIX_ROOT}-{self.run_id}-*")
        if self.dedicated_db:
            _drop_database(self.admin_pg_url, self.db_name)
        else:
            with psycopg.connect(self.pg_url, autocommit=True) as conn:
                for name in self.schemas:
                    conn.execute(
                        sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
                    )


def _try_create_database(admin_url: str, db_name: str) -> bool:
    try:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db_name)))
        return True
    except psycopg.errors.InsufficientPrivilege:
        return False


def _drop_database(admin_url: str, db_name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for attempt in range(5):
            try:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(db_name)
                    )
                )
                return
            except psycopg.errors.ObjectInUse:
                time.sleep(0.2 * (attempt + 1))
