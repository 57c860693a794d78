"""What a Postgres failure means, and how long the saver may wait on Postgres. No I/O.

A psycopg error becomes one of the saver's typed errors:

- `TierUnavailableError("postgres", ...)`: the server cannot answer now (down, frozen past the
  deadline, statement or lock timeout, connection lost). The hot tier goes on; the outbox keeps
  what must be flushed.
- `PostgresAuthError` / `DatabaseMissingError` / `SchemaMissingError`: the server answers but
  refuses this configuration. These are raised to the caller, never taken for an outage.
- `PostgresError`: a statement was rejected (constraint, trigger, an index row too large, a
  data exception, a statement or lock timeout): carries the SQLSTATE. It belongs to the thread
  whose statement failed, so it never opens the breaker that every tenant shares.
- `FlushFencedError`: the flush's lease was taken over, or its thread deleted (durable.sql's
  fence): nothing was written, and a newer flusher has the thread.
- `HotTierConflictError`: the schema is fed by another hot tier (key prefix): nothing was written.

The server's SQLSTATE decides, not psycopg's class: psycopg raises many statement errors
(SQLSTATE 54000 "index row size exceeds", 57014 statement timeout) as `OperationalError`. Only
the classes that describe the server or the connection (08 connection exception, 53
insufficient resources, 57P01-57P05 shutdown, 58 system error) are an outage. psycopg reports
a lost connection without a SQLSTATE; those are told apart by the server's message (English,
the server's default `lc_messages`).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
import psycopg.errors

from langgraph_tiered_saver._options import seconds
from langgraph_tiered_saver.errors import (
    DatabaseMissingError,
    FlushFencedError,
    HotTierConflictError,
    PostgresAuthError,
    PostgresError,
    SchemaMissingError,
    TieredSaverError,
    TierUnavailableError,
)

_AUTH_MARKERS = (
    "password authentication failed",
    "authentication failed",
    "no pg_hba.conf entry",
    "role \"",  # FATAL: role "x" does not exist
    "no password supplied",
)
# SQLSTATE classes / codes that describe the server or the connection, not one statement.
_OUTAGE_CLASSES = ("08", "53", "58")
_OUTAGE_CODES = ("57P01", "57P02", "57P03", "57P04", "57P05")
_TIMEOUT_CODES = ("57014", "55P03")  # statement timeout (query canceled), lock timeout
FENCED_SQLSTATE = "LTS01"  # raised by the flush fence (durable.sql.MIGRATION_5_FLUSH_FENCE)
HOT_TIER_SQLSTATE = "LTS02"  # a flush from another hot tier (durable.sql.CHECK_HOT_TIER)
_SCHEMA_MISSING = (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName, psycopg.errors.UndefinedFunction)


@dataclass(frozen=True)
class PgLimits:
    """Bounds on every wait for Postgres.

    `connect_wait`: for a pooled connection. `statement_timeout` / `lock_timeout`: set per
    transaction (`set_config(..., true)`, safe behind PgBouncer), enforced by the server.
    `deadline`: enforced by the client, for a server that cannot enforce anything (frozen,
    SIGSTOPped, a half-open TCP connection): past it the connection's socket is shut down, the
    call fails as `TierUnavailableError`, and the broken connection leaves the pool.
    """

    connect_wait: float = 2.0
    statement_timeout: float = 5.0
    lock_timeout: float = 2.0
    deadline: float = 6.0

    def settings(self) -> tuple[tuple[str, str], ...]:
        return (
            ("statement_timeout", str(int(self.statement_timeout * 1000))),
            ("lock_timeout", str(int(self.lock_timeout * 1000))),
        )


def pg_limits(connect_wait: float, statement_timeout: float, lock_timeout: float) -> PgLimits:
    """The saver's limits; the client deadline leaves the server a second to enforce its own."""
    for name, value in (("pg_timeout", connect_wait), ("pg_statement_timeout", statement_timeout),
                        ("pg_lock_timeout", lock_timeout)):  # fmt: skip
        seconds(name, value, inclusive=False)
    return PgLimits(connect_wait, statement_timeout, lock_timeout, statement_timeout + 1.0)


def classify_connect_error(exc: BaseException) -> TieredSaverError:
    """A failure to connect: a refused configuration, or an unreachable server."""
    message = str(exc)
    if _FATAL_DATABASE in message and "does not exist" in message:
        return DatabaseMissingError("the Postgres database does not exist", _fatal_line(message))
    if any(marker in message for marker in _AUTH_MARKERS) and "FATAL" in message:
        return PostgresAuthError("Postgres refused the credentials", _fatal_line(message))
    return TierUnavailableError("postgres", message.strip().replace("\n", " | "))


def classify_statement_error(exc: psycopg.Error) -> TieredSaverError:
    """A failure while a transaction ran."""
    if isinstance(exc, _SCHEMA_MISSING):
        return SchemaMissingError(
            "the saver's Postgres tables or functions are missing (a schema never set up, or set up "
            "by an older release): run saver.setup() (or the `setup` command) for this schema first",
            str(exc).strip(),
        )
    code = exc.sqlstate
    if code == FENCED_SQLSTATE:
        return FlushFencedError(_primary(exc))
    if code == HOT_TIER_SQLSTATE:
        return HotTierConflictError(_primary(exc))
    if code is None:  # no answer from the server: the connection, not the statement
        if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
            return classify_connect_error(exc)
        return PostgresError(str(exc).strip(), None)
    if code.startswith(_OUTAGE_CLASSES) or code in _OUTAGE_CODES:
        return classify_connect_error(exc)
    if code in _TIMEOUT_CODES:
        return PostgresError(f"timed out: {str(exc).strip()}", code)
    return PostgresError(str(exc).strip(), code)


def _primary(exc: psycopg.Error) -> str:
    diag = getattr(exc, "diag", None)
    return str(getattr(diag, "message_primary", None) or exc).strip()


_FATAL_DATABASE = "database \""


def _fatal_line(message: str) -> str:
    for line in message.splitlines():
        if "FATAL" in line:
            return line[line.index("FATAL") :].strip()
    return message.strip()
