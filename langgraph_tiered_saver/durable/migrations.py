"""Versioned schema migrations of the durable tier.

A migration is applied at most once: its body runs inside a guard (`DO` block) that checks
`schema_migrations` first, and every guard runs in one transaction holding an advisory lock derived
from the schema name, so processes starting together apply each version exactly once and the
others wait, then see it applied. A role that may only use the tables (see roles.py) can still
call `setup_op`: when every version is present it only reads `schema_migrations`.

To change the schema, append a new body to MIGRATIONS; never edit a released one.
"""

from __future__ import annotations

from .._io import Op, PgCall, PgStatement
from . import sql

# Position + 1 is the version number.
MIGRATIONS: tuple[str, ...] = (
    sql.MIGRATION_1_TABLES,
    sql.MIGRATION_2_BLOB_CHUNKS,
    sql.MIGRATION_3_WRITE_THROUGH_COUNTER,
)
LATEST_VERSION = len(MIGRATIONS)
_DOLLAR_TAG = "$lts_migration$"


def migration_statement(schema: str, version: int) -> str:
    body = MIGRATIONS[version - 1]
    if _DOLLAR_TAG in body:  # would end the DO block early
        raise ValueError(f"migration {version} contains the reserved tag {_DOLLAR_TAG}")
    guarded = sql.MIGRATION_GUARD.replace("{body}", body).replace("{version}", str(version))
    return sql.render(guarded, schema)


def _migrate_call(schema: str) -> PgCall:
    statements = [
        PgStatement(sql.SETUP_LOCK, (sql.setup_lock_key(schema),)),
        PgStatement(sql.render(sql.CREATE_SCHEMA, schema)),
        PgStatement(sql.render(sql.CREATE_MIGRATIONS_TABLE, schema)),
        *(PgStatement(migration_statement(schema, v)) for v in range(1, LATEST_VERSION + 1)),
        PgStatement(sql.render(sql.SELECT_APPLIED_NOW, schema), fetch=True),
    ]
    # DDL on a large table and waiting for another process' migration may take long: unbounded
    return PgCall(tuple(statements), timeout=0)


def applied_versions_op(schema: str) -> Op[list[int]]:
    """Versions recorded in the schema ([] when it was never set up)."""
    sql.check_schema(schema)
    (rows,) = yield PgCall(
        (PgStatement(sql.MIGRATIONS_TABLE_EXISTS, (f'"{schema}".schema_migrations',), fetch=True),)
    )
    if not rows[0][0]:
        return []
    (rows,) = yield PgCall(
        (PgStatement(sql.render(sql.SELECT_MIGRATION_VERSIONS, schema), fetch=True),)
    )
    return [int(r[0]) for r in rows]


def setup_op(schema: str) -> Op[list[int]]:
    """Create the schema and apply missing migrations; returns the versions this call applied.

    The first check is lock-free, so a fully migrated schema costs two reads and no DDL lock.
    """
    applied = yield from applied_versions_op(schema)
    if set(range(1, LATEST_VERSION + 1)) <= set(applied):
        return []
    results = yield _migrate_call(schema)
    return [int(r[0]) for r in results[-1]]
