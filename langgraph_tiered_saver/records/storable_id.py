"""What a tenant or thread id may be: storable as a Redis key part and a Postgres key column."""

from __future__ import annotations

from typing import Any

from langgraph_tiered_saver.errors import InvalidIdError


def check_id(kind: str, value: Any, max_len: int) -> str:
    """`value` if it can name a tenant or thread: a non-empty string of at most `max_len`
    characters and twice as many UTF-8 bytes (ids are part of Postgres primary keys, and a
    b-tree entry holds at most ~2.7 kB), that Postgres can store (no NUL) and UTF-8 can
    encode (no lone surrogate)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise InvalidIdError(f"{kind} must be a string, got {type(value).__name__} {value!r}")
    if not value:
        raise InvalidIdError(f"{kind} must not be empty")
    if len(value) > max_len:
        raise InvalidIdError(f"{kind} is {len(value)} characters long, the limit is {max_len}")
    if "\x00" in value:
        raise InvalidIdError(f"{kind} {value[:60]!r} contains a NUL character, which Postgres text cannot hold")
    try:
        size = len(value.encode())
    except UnicodeEncodeError as exc:
        raise InvalidIdError(f"{kind} {value[:60]!r} is not valid unicode: {exc.reason}") from None
    if size > 2 * max_len:
        raise InvalidIdError(f"{kind} is {size} bytes long in UTF-8, the limit is {2 * max_len}")
    return value
