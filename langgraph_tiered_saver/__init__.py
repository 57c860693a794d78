"""langgraph-tiered-saver: a LangGraph checkpointer with a Redis hot tier and a Postgres durable tier."""

from langgraph_tiered_saver._core.connections import PoolOptions
from langgraph_tiered_saver.blobs import BlobStore
from langgraph_tiered_saver.blobs.offloader import filesystem_blobs, postgres_blobs, s3_blobs
from langgraph_tiered_saver.errors import (
    ConfigError,
    CorruptDataError,
    DatabaseMissingError,
    DataLostError,
    EventLoopError,
    FlushError,
    FlushFencedError,
    HotDurabilityError,
    HotTierConflictError,
    InvalidIdError,
    LegacyKeysError,
    PoolExhaustedError,
    PostgresAuthError,
    PostgresConfigError,
    PostgresError,
    RedisPermissionError,
    SaverClosedError,
    SchemaMissingError,
    StaleLockError,
    TenantMismatchError,
    TenantRequiredError,
    ThreadLockedError,
    TieredSaverError,
    TierUnavailableError,
)
from langgraph_tiered_saver.flushing.ops import FlushPolicy, FlushResult
from langgraph_tiered_saver.locking.run_locks import AutoLock
from langgraph_tiered_saver.observability.health import FlusherHealth
from langgraph_tiered_saver.saver import TieredSaver
from langgraph_tiered_saver.tenancy import tenant_scope

__all__ = [
    "AutoLock",
    "BlobStore",
    "ConfigError",
    "CorruptDataError",
    "DataLostError",
    "DatabaseMissingError",
    "EventLoopError",
    "FlushError",
    "FlushFencedError",
    "FlushPolicy",
    "FlushResult",
    "FlusherHealth",
    "HotDurabilityError",
    "HotTierConflictError",
    "InvalidIdError",
    "LegacyKeysError",
    "PoolExhaustedError",
    "PoolOptions",
    "PostgresAuthError",
    "PostgresConfigError",
    "PostgresError",
    "RedisPermissionError",
    "SaverClosedError",
    "SchemaMissingError",
    "StaleLockError",
    "TenantMismatchError",
    "TenantRequiredError",
    "ThreadLockedError",
    "TierUnavailableError",
    "TieredSaver",
    "TieredSaverError",
    "filesystem_blobs",
    "postgres_blobs",
    "s3_blobs",
    "tenant_scope",
]
__version__ = "0.1.0"
