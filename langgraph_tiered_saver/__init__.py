"""langgraph-tiered-saver: a LangGraph checkpointer with a Redis hot tier and a Postgres durable tier."""

from .blobs import BlobStore
from .connections import PoolOptions
from .errors import (
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
from .flush import FlushPolicy, FlushResult
from .flusher import FlusherHealth
from .offload import filesystem_blobs, postgres_blobs, s3_blobs
from .runlock import AutoLock
from .saver import TieredSaver
from .tenancy import tenant_scope

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
