"""Versioned schema migrations of the durable tier.

A migration is applied at most once: its body runs inside a guard (`DO` block) that checks
`schema_migrations` first, and every guard runs in one transaction holding an advisory lock derived
from the schema name, so processes starting together apply each version exactly once and the
others wait, then see it applied. A role that may only use the tables (see roles.py) can still
call `setup_op`: when every version is present it only reads `schema_migrations`.

To change the schema, append a new body to MIGRATIONS; never edit a released one.

**Layouts.** A schema is plain (the default) or hash-partitioned by tenant (`partitions=N`),
chosen once, when `setup` creates it; later `setup` calls find the layout in the catalog and
apply any new migration in it. The partitioned body of a version is derived from the released
one (`partitioned_body`: each CREATE TABLE gets `PARTITION BY HASH (tenant_id)`, its N
partitions, and row-level security on each partition), so the two layouts cannot drift apart
and a plain schema runs exactly the statements it always ran. Moving an existing schema to
partitions is a data migration (create a partitioned schema, copy, switch), not a `setup` call:
asking `setup` for another layout than the schema has raises `ConfigError`.
"""

from __future__ import annotations

import re

from langgraph_tiered_saver._sansio.io import Op, PgCall, PgStatement
from langgraph_tiered_saver.durable import sql
from langgraph_tiered_saver.errors import ConfigError

# Position + 1 is the version number.
MIGRATIONS: tuple[str, ...] = (
    sql.MIGRATION_1_TABLES,
    sql.MIGRATION_2_BLOB_CHUNKS,
    sql.MIGRATION_3_WRITE_THROUGH_COUNTER,
    sql.MIGRATION_4_HOT_TIER,
    sql.MIGRATION_5_FLUSH_FENCE,
    sql.MIGRATION_6_WRITTEN_THROUGH,
    sql.MIGRATION_7_TUPLE_FUNCTION,
    sql.MIGRATION_8_LEANER_ROWS,
    sql.MIGRATION_9_BARE_AND_JSON_VALUES,
    sql.MIGRATION_10_FLUSH_FUNCTIONS,
    sql.MIGRATION_11_BOUNDED_FLUSH,
)
LATEST_VERSION = len(MIGRATIONS)
_DOLLAR_TAG = "$lts_migration$"
MAX_PARTITIONS = 1024
# A table of a migration body: `CREATE TABLE {s}.name (` ... a line `);` (sql.py's style).
_CREATE_TABLE = re.compile(r"(CREATE TABLE \{s\}\.(\w+) \(\n.*?\n\));", re.DOTALL)


def check_partitions(partitions: int | None) -> int | None:
    if partitions is not None and (
        isinstance(partitions, bool) or not isinstance(partitions, int) or not 2 <= partitions <= MAX_PARTITIONS
    ):
        raise ConfigError(f"partitions={partitions!r}: use None (no partitioning) or a whole number 2-{MAX_PARTITIONS}")
    return partitions


def partition_names(table: str, partitions: int) -> list[str]:
    return [f"{table}_p{i}" for i in range(partitions)]


def partitioned_body(body: str, partitions: int) -> str:
    """A migration body with each of its tables hash-partitioned by tenant (see docstring)."""
    tables: list[str] = []

    def partition(match: re.Match[str]) -> str:
        create, table = match.group(1), match.group(2)
        if "tenant_id text NOT NULL" not in create:
            raise ValueError(f"table {table} has no tenant_id column to partition by")
        tables.append(table)
        return create + sql.PARTITION_BY_TENANT + ";" + "".join(
            sql.CREATE_PARTITION.replace("{partition}", name).replace("{table}", table)
            .replace("{n}", str(partitions)).replace("{i}", str(i))
            for i, name in enumerate(partition_names(table, partitions))
        )  # fmt: skip

    out = _CREATE_TABLE.sub(partition, body)
    rls = [sql.PARTITION_RLS.replace("{table}", p) for t in tables for p in partition_names(t, partitions)]
    return out + "".join(rls)


def migration_statement(schema: str, version: int, partitions: int | None = None) -> str:
    body = MIGRATIONS[version - 1]
    if partitions is not None:
        body = partitioned_body(body, partitions)
    if _DOLLAR_TAG in body:  # would end the DO block early
        raise ValueError(f"migration {version} contains the reserved tag {_DOLLAR_TAG}")
    guarded = sql.MIGRATION_GUARD.replace("{body}", body).replace("{version}", str(version))
    return sql.render(guarded, schema)


def _layout_statement(schema: str) -> PgStatement:
    return PgStatement(sql.SCHEMA_PARTITIONS, (f'"{sql.check_schema(schema)}".checkpoints',), fetch=True)


def _layout(rows: list[tuple[int]]) -> int | None:
    return int(rows[0][0]) if rows else None


def _migrate_call(schema: str, partitions: int | None) -> PgCall:
    statements = [
        PgStatement(sql.SETUP_LOCK, (sql.setup_lock_key(schema),)),
        PgStatement(sql.render(sql.CREATE_SCHEMA, schema)),
        PgStatement(sql.render(sql.CREATE_MIGRATIONS_TABLE, schema)),
        *(PgStatement(migration_statement(schema, v, partitions)) for v in range(1, LATEST_VERSION + 1)),
        PgStatement(sql.render(sql.SELECT_APPLIED_NOW, schema), fetch=True),
        _layout_statement(schema),
    ]
    # DDL on a large table and waiting for another process' migration may take long: unbounded
    return PgCall(tuple(statements), timeout=0)


def schema_partitions_op(schema: str) -> Op[int | None]:
    """How many tenant partitions the schema's tables have (None: not partitioned, or absent)."""
    (rows,) = yield PgCall((_layout_statement(schema),))
    return _layout(rows)


def _check_layout(schema: str, wanted: int | None, actual: int | None) -> None:
    """Refuse a layout other than the schema's, when the caller asked for one."""
    if wanted is not None and wanted != actual:
        has = "is not partitioned" if actual is None else f"has {actual} tenant partitions"
        raise ConfigError(
            f"schema {schema!r} {has}; setup(partitions={wanted}) chooses the layout of a new schema "
            "only (moving data between layouts is a copy into a new schema, see docs/scale-out.md, 'Postgres at scale')"
        )


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


def setup_op(schema: str, partitions: int | None = None) -> Op[list[int]]:
    """Create the schema and apply missing migrations; returns the versions this call applied.

    `partitions`: None keeps the schema's layout (plain for a new one); N asks for N hash
    partitions by tenant, which a new schema gets and an existing one must already have.
    The first check is lock-free, so a fully migrated schema costs two reads (three with
    `partitions`) and no DDL lock.
    """
    check_partitions(partitions)
    applied = yield from applied_versions_op(schema)
    layout = partitions
    if applied:  # the schema exists: its layout rules, pending migrations included
        layout = yield from schema_partitions_op(schema)
        _check_layout(schema, partitions, layout)
    if set(range(1, LATEST_VERSION + 1)) <= set(applied):
        return []
    results = yield _migrate_call(schema, layout)
    # a concurrent setup may have created the schema first, in its own layout
    _check_layout(schema, partitions, _layout(results[-1]))
    return [int(r[0]) for r in results[-2]]
