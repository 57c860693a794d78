"""Readable JSON copies of channel values and writes, for audit queries in plain SQL.

The durable tier keeps the serializer's exact bytes for restoring state; these copies only serve
people reading the tables (`value ->> 'content'`). They are best effort: a value with no faithful
JSON form is stored as NULL rather than as something misleading, and nothing here ever raises,
because an audit copy must not be able to fail a flush.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import json
import math
import re
import uuid
from collections.abc import Mapping
from functools import partial
from typing import Any

import orjson
import ormsgpack
from langgraph.checkpoint.serde.jsonplus import (  # the serializer's ext codes and data reading
    EXT_PYDANTIC_V1,
    EXT_PYDANTIC_V2,
    _msgpack_ext_hook_to_json,
)

from langgraph_tiered_saver.records.key_order import jsonb_keys

# A JSON-compatible object: dict[str, JSON] | list[JSON] | str | int | float | bool | None.
JSON = Any
_MESSAGE_KEYS = ("type", "content", "name", "tool_calls", "tool_call_id", "id")
_MAX_DEPTH = 64
# orjson writes NUL as \u0000, which jsonb rejects; match it only when the backslash is not itself
# escaped (an even run of backslashes before it).
_NUL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


class _Unrepresentable(Exception):
    pass


def to_audit_json(value: Any) -> JSON:
    """A JSON-compatible copy of `value`, or None when it has none. Never raises."""
    try:
        return _convert(value, 0, set())
    except Exception:
        return None


def audit_from_msgpack(data: bytes, memo: dict[tuple[int, bytes], Any] | None = None) -> JSON:
    """The audit copy of a value the serializer stored as msgpack, read straight from its bytes:
    LangChain messages and other packed objects are taken as the data they were packed from,
    never rebuilt (rebuilding validates every message with pydantic: it was most of a flush's
    CPU). Messages keep the same keys as `to_audit_json` gives them. Never raises.

    `memo` (one per flush batch) reads each packed object once: a message list channel holds,
    at each of its versions, every earlier message again, packed to the same bytes."""
    hook = _audit_ext_hook if memo is None else partial(_memo_ext_hook, memo)
    try:
        value = ormsgpack.unpackb(data, ext_hook=hook, option=ormsgpack.OPT_NON_STR_KEYS)
    except Exception:
        return None
    text = _plain_json(value)
    if text is not None:
        return None if text == b"null" else orjson.Fragment(text)
    try:
        return _convert(value, 0, set())
    except Exception:
        return None


# orjson writes these types its own way (datetime, dataclass, subclasses): hand them to
# `_refuse`, so that only plain JSON data takes the fast path.
_PLAIN = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_INNERMOST = re.compile(rb"\[\]|\{\}")  # one level per pass (no cascade, unlike chained replaces)


def _refuse(value: Any) -> Any:
    raise TypeError


def _plain_json(value: Any) -> bytes | None:
    """`value` as JSON text in one C call, when `_convert` would give the same JSON: plain data
    (str keys, no NUL, no type orjson writes differently) at most `_MAX_DEPTH` deep. None
    otherwise: the caller takes the slow path. Spares building a converted copy of every value
    (most of a flush's CPU)."""
    try:
        text = orjson.dumps(value, default=_refuse, option=_PLAIN)
    except (TypeError, orjson.JSONEncodeError):
        return None
    if b"\\u0000" in text or not _shallow(text):
        return None
    return text


def _shallow(text: bytes) -> bool:
    """Whether JSON `text` nests at most `_MAX_DEPTH` containers (`_convert`'s limit)."""
    if text.count(b"[") + text.count(b"{") <= _MAX_DEPTH:
        return True
    brackets = _STRING.sub(b"", text).translate(None, _NOT_BRACKETS)
    for _ in range(_MAX_DEPTH):
        if not brackets:
            return True
        brackets = _INNERMOST.sub(b"", brackets)
    return not brackets


_MISSING = object()


def _memo_ext_hook(memo: dict[tuple[int, bytes], Any], code: int, data: bytes) -> Any:
    """`_audit_ext_hook`, each packed object read once (the copies it returns are never mutated:
    they are only written out as JSON or converted into new objects)."""
    if code not in (EXT_PYDANTIC_V1, EXT_PYDANTIC_V2):
        return _msgpack_ext_hook_to_json(code, data)
    value = memo.get((code, data), _MISSING)
    if value is _MISSING:
        value = memo[(code, data)] = _audit_ext_hook(code, data)
    return value


def _audit_ext_hook(code: int, data: bytes) -> Any:
    if code in (EXT_PYDANTIC_V1, EXT_PYDANTIC_V2):
        module, _name, kwargs = ormsgpack.unpackb(data, ext_hook=_audit_ext_hook, option=ormsgpack.OPT_NON_STR_KEYS)[:3]
        if isinstance(kwargs, dict) and str(module).startswith("langchain_core.messages"):
            return {k: kwargs.get(k) for k in _MESSAGE_KEYS if k in kwargs}
        return kwargs
    return _msgpack_ext_hook_to_json(code, data)  # LangGraph's own reading of the others as data


def _convert(value: Any, depth: int, seen: set[int]) -> JSON:
    if depth > _MAX_DEPTH:
        raise _Unrepresentable("too deep")
    if value is None or isinstance(value, (bool, int)):
        return value.value if isinstance(value, enum.Enum) else value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, enum.Enum):
        return _convert(value.value, depth + 1, seen)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (uuid.UUID, decimal.Decimal)):
        return str(value)
    if id(value) in seen:
        raise _Unrepresentable("cycle")
    seen = seen | {id(value)}
    if isinstance(value, Mapping):
        return {_key(k): _convert(v, depth + 1, seen) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [_convert(v, depth + 1, seen) for v in items]
    if _is_message(value):
        dumped = value.model_dump(mode="json")
        return {k: _convert(dumped.get(k), depth + 1, seen) for k in _MESSAGE_KEYS if k in dumped}
    if hasattr(value, "model_dump") and callable(value.model_dump):  # pydantic v2
        return _convert(value.model_dump(mode="json"), depth + 1, seen)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _convert(dataclasses.asdict(value), depth + 1, seen)
    raise _Unrepresentable(type(value).__name__)


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key.replace("\x00", "")
    if isinstance(key, (int, float, bool, uuid.UUID)) or key is None:
        return str(key)
    raise _Unrepresentable(f"{type(key).__name__} key")


def _is_message(value: Any) -> bool:
    try:
        from langchain_core.messages import BaseMessage
    except ImportError:  # pragma: no cover - langchain_core ships with langgraph
        return False
    return isinstance(value, BaseMessage)


def dumps_jsonb(value: Any) -> str:
    """JSON text Postgres accepts as jsonb: no NUL escapes, non-JSON leaves become strings.

    Used for the checkpoint and metadata columns, whose content the caller already made JSON-like;
    the fallbacks only keep an odd leaf (a huge int, a custom object) from failing the flush.
    """
    try:
        text = orjson.dumps(value, default=_fallback, option=orjson.OPT_NON_STR_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):
        try:  # e.g. an int beyond 64 bits, or keys orjson cannot write
            text = json.dumps(value, default=str, skipkeys=True, allow_nan=False)
        except (TypeError, ValueError):
            text = json.dumps(to_audit_json(value))
    if "\\u0000" not in text:  # the common case: no scan with the regex
        return text
    return _NUL_ESCAPE.sub(r"\1", text)


def jsonb_value(value: Any) -> Any:
    """The JSON value Postgres holds for `value` in a JSONB column (NUL characters dropped from
    every string and key; a literal backslash-u0000 in the text kept exactly)."""
    return orjson.loads(dumps_jsonb(value))


def json_exact(value: Any, depth: int = 0) -> bool:
    """Whether `value` comes back from its JSONB column (`dumps_jsonb`, Postgres' text of it,
    `orjson.loads`) equal and of the same types: plain dicts with str keys, lists, str, bool,
    None, 64-bit ints and floats Postgres writes back as written (no exponent: jsonb would give
    `1e+16` back as an int; no -0.0). No NUL (jsonb drops it), no tuple (it comes back a list)."""
    return _exact_walk(value, depth, None)


def _float_exact(value: float) -> bool:
    return math.isfinite(value) and not (value == 0 and math.copysign(1.0, value) < 0) and b"e" not in orjson.dumps(value)


def _exact_walk(value: Any, depth: int, order: list[list[int]] | None) -> bool:
    """`json_exact`, and with `order` the key order JSONB would lose, gathered in the same walk
    (`key_order`'s: dicts numbered depth first, their keys visited in JSONB's order)."""
    seen = 0

    def walk(v: Any, depth: int) -> bool:
        nonlocal seen
        kind = type(v)
        if kind is str:
            return "\x00" not in v
        if v is None or kind is bool:
            return True
        if kind is int:
            return -(1 << 63) <= v < (1 << 63)
        if kind is float:
            return _float_exact(v)
        if depth >= _MAX_DEPTH:
            return False
        if kind is list:  # loops, not all(): a generator per container costs more than the check
            for x in v:  # noqa: SIM110
                if not walk(x, depth + 1):
                    return False
            return True
        if kind is not dict:
            return False
        for k in v:
            if type(k) is not str or "\x00" in k:
                return False
        if order is None:
            for x in v.values():  # noqa: SIM110
                if not walk(x, depth + 1):
                    return False
            return True
        place = seen
        seen += 1
        for k in jsonb_keys(v, place, order):  # noqa: SIM110
            if not walk(v[k], depth + 1):
                return False
        return True

    return walk(value, depth)


def exact_json(data: bytes) -> tuple[bytes, bytes] | None:
    """(JSON text, key order) of a value the serializer stored as msgpack `data`, when its JSONB
    column, with the key order of the dicts JSONB reorders (`key_order`: b"" when none is), gives
    back exactly what the serializer would (`json_exact`); else None. Plain msgpack data only:
    an extension type (a message, a set, a datetime...) is not read at all. Never raises."""
    try:
        value = ormsgpack.unpackb(data)  # no ext hook: an extension type raises
    except Exception:
        return None
    order: list[list[int]] = []
    try:
        if not _exact_walk(value, 0, order):
            return None
        return orjson.dumps(value), orjson.dumps(order) if order else b""
    except Exception:
        return None


def _fallback(value: Any) -> Any:
    converted = to_audit_json(value)
    return str(value) if converted is None else converted
