"""Typed errors: every failure a caller can act on has its own class and a message naming the cause."""

from __future__ import annotations


class TieredSaverError(Exception):
    """Base class of every error raised by langgraph-tiered-saver."""


class ConfigError(TieredSaverError, ValueError):
    """The RunnableConfig or a saver option is malformed (missing thread_id, wrong type...)."""


class InvalidIdError(ConfigError):
    """A tenant, thread, namespace, checkpoint or task id is empty, too long or has forbidden characters.

    Ids are checked because they become part of Redis keys and Postgres rows: an id that could
    break out of the key layout could address another tenant's data.
    """


class CorruptDataError(TieredSaverError):
    """Bytes read from a tier could not be decoded (truncated, tampered or foreign data)."""


class DataLostError(TieredSaverError):
    """A checkpoint lost part of its data in Redis (an allkeys-* eviction) before it reached
    Postgres: it cannot be restored whole, and a partial checkpoint is never returned."""


class TierUnavailableError(TieredSaverError, ConnectionError):
    """A storage tier (Redis or Postgres) could not be reached."""

    def __init__(self, tier: str, detail: str) -> None:
        super().__init__(f"{tier} is unreachable: {detail}")
        self.tier = tier


class ThreadLockedError(TieredSaverError):
    """Another holder owns the thread's lock and the caller chose not to wait (or waited too long)."""


class StaleLockError(TieredSaverError):
    """A write carried a fencing token older than the thread's current lock: its holder lost the lock."""


class FlushError(TieredSaverError):
    """Flushing the outbox to Postgres failed; the entries stay in the outbox and will be retried.
    `threads` names the (tenant, thread) pairs that could not be flushed."""

    def __init__(self, message: str, threads: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.threads = threads or []


class TenantRequiredError(ConfigError):
    """A call of a saver bound to no tenant carried none (config, scope): it never picks a default."""


class TenantMismatchError(ConfigError):
    """A call named two different tenants (a bound saver, the config, a tenant scope)."""


class RedisPermissionError(ConfigError):
    """Redis refused a command to the saver's user (an ACL without EVALSHA, or without the saver's
    keys): a configuration to fix, not an outage, so no fallback masks it."""


class FlushFencedError(TieredSaverError):
    """Postgres refused a flush: its lease was taken over by a newer flusher, or the thread was
    deleted after the flush read its outbox. Nothing was written; the newer holder flushes."""


class PostgresConfigError(TieredSaverError):
    """Postgres answered, but refuses this saver as configured: fix the configuration, not the
    network. Not a `TierUnavailableError`, so no fallback masks it."""

    def __init__(self, detail: str, server_message: str = "") -> None:
        super().__init__(detail + (f" (server said: {server_message})" if server_message else ""))
        self.server_message = server_message


class PostgresAuthError(PostgresConfigError):
    """Authentication failed (wrong password, unknown role, no pg_hba.conf entry)."""


class DatabaseMissingError(PostgresConfigError):
    """The database named in the connection string does not exist."""


class SchemaMissingError(PostgresConfigError):
    """The saver's tables are not there: `setup()` was not run for this schema."""


class PostgresError(TieredSaverError):
    """Postgres rejected a statement (a constraint, a trigger, a bug): carries the SQLSTATE."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message if sqlstate is None else f"[{sqlstate}] {message}")
        self.sqlstate = sqlstate


class PoolExhaustedError(TierUnavailableError):
    """Every connection of a pool stayed busy for the whole wait: the server is up, the pool is
    too small for the load (size it with from_conn_string's pool options)."""


class HotDurabilityError(TieredSaverError):
    """A write reached Redis, but Redis could not confirm it durable as `hot_durability` asks
    (fsynced to the AOF, or copied to a replica) within `hot_durability_timeout`."""


class HotTierConflictError(ConfigError):
    """The Postgres schema is fed by another hot tier (another Redis key prefix): two hot tiers
    over one schema would each answer for their own copies of a thread and fork it."""
class SaverClosedError(TieredSaverError, RuntimeError):
    """The saver was closed (`close()`, or its `with` block ended): it takes no more calls, so
    no write is accepted that no flusher would carry to Postgres."""


class EventLoopError(TieredSaverError, RuntimeError):
    """An asyncio client or pool of the saver was used from another event loop than its own."""


class LegacyKeysError(ConfigError):
    """Redis holds unflushed data under the key schema of an older version (v1, before Redis
    Cluster support): this version would not see it. Drain it with the old version, or move the
    keys with `python -m langgraph_tiered_saver migrate-redis` (see docs/scale-out.md, "Redis Cluster")."""
