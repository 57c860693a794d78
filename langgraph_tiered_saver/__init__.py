"""langgraph-tiered-saver: a LangGraph checkpointer with a Redis hot tier and a Postgres durable tier."""

from .errors import (
    ConfigError,
    CorruptDataError,
    FlushError,
    InvalidIdError,
    StaleLockError,
    ThreadLockedError,
    TieredSaverError,
    TierUnavailableError,
)
from .runlock import AutoLock
from .saver import TieredSaver

__all__ = [
    "AutoLock",
    "ConfigError",
    "CorruptDataError",
    "FlushError",
    "InvalidIdError",
    "StaleLockError",
    "ThreadLockedError",
    "TierUnavailableError",
    "TieredSaver",
    "TieredSaverError",
]
__version__ = "0.1.0"
