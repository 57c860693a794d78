"""langgraph-tiered-saver: a LangGraph checkpointer with a Redis hot tier and a Postgres durable tier."""

from .errors import (
    ConfigError,
    CorruptDataError,
    FlushError,
    InvalidIdError,
    StaleLockError,
    TenantMismatchError,
    TenantRequiredError,
    ThreadLockedError,
    TieredSaverError,
    TierUnavailableError,
)
from .runlock import AutoLock
from .saver import TieredSaver
from .tenancy import tenant_scope

__all__ = [
    "AutoLock",
    "ConfigError",
    "CorruptDataError",
    "FlushError",
    "InvalidIdError",
    "StaleLockError",
    "TenantMismatchError",
    "TenantRequiredError",
    "ThreadLockedError",
    "TierUnavailableError",
    "TieredSaver",
    "TieredSaverError",
    "tenant_scope",
]
__version__ = "0.1.0"
