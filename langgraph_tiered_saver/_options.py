"""Checks of the saver's options and arguments: a wrong value fails at construction (or at the
call) with a `ConfigError` naming the option, the value and what is allowed — never later, as an
untyped error deep in a flush, or as a silently different behaviour."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, TypeVar

from langgraph_tiered_saver.errors import ConfigError

# Key prefixes become the first part of every Redis key: no hash-tag braces (they would move
# every key of the deployment into one cluster slot) and no separators of the key layout.
KEY_PREFIX = re.compile(r"[A-Za-z0-9._-]{1,64}")
MIN_TTL_SECONDS = 0.001
T = TypeVar("T")  # PEXPIRE takes milliseconds: a shorter TTL would round to "never expire"


def seconds(name: str, value: Any, *, minimum: float = 0.0, inclusive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ConfigError(f"{name} must be a number of seconds, got {type(value).__name__} {value!r}")
    if value < minimum or (not inclusive and value == minimum):
        bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
        raise ConfigError(f"{name} must be {bound} seconds, got {value!r}")
    return float(value)


def flag(name: str, value: Any, *, allow_none: bool = False) -> bool | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, bool):
        allowed = "True, False or None" if allow_none else "True or False"
        raise ConfigError(f"{name} must be {allowed}, got {value!r}")
    return value


def choice(name: str, value: Any, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {tuple(allowed)}, got {value!r}")
    return str(value)


def instance(name: str, value: Any, cls: type[T]) -> T | None:
    """`value` if it is None or a `cls` (options objects: `FlushPolicy`, `PoolOptions`, ...)."""
    if value is not None and not isinstance(value, cls):
        raise ConfigError(f"{name} must be a {cls.__name__}, got {value!r}")
    return value


def whole(name: str, value: Any, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return value


def positive_int(name: str, value: Any) -> int:
    return whole(name, value, minimum=1)


def name_matching(pattern: re.Pattern[str], value: Any, refusal: str) -> str:
    """`value` if it is a string `pattern` matches whole, else a ConfigError saying `refusal`."""
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ConfigError(refusal)
    return value


def key_prefix(value: Any) -> str:
    return name_matching(
        KEY_PREFIX, value,
        f"key_prefix must be 1-64 characters of letters, digits, '.', '_' and '-', got {value!r} "
        "(braces would put every key in one Redis Cluster slot; ':' separates key parts)",
    )  # fmt: skip


def ttl(value: Any) -> float:
    return seconds("ttl_seconds", value, minimum=MIN_TTL_SECONDS)


def id_list(name: str, value: Any) -> list[str]:
    """A sequence of ids, never a bare string (which would be iterated character by character:
    `prune("ok")` used to prune threads 'o' and 'k')."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence | set | frozenset):
        raise ConfigError(f"{name} must be a list of ids, got {type(value).__name__} {value!r}")
    items = list(value)
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"{name} must hold strings, got {type(item).__name__} {item!r}")
    return items
