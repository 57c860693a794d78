"""Byte layouts of what the saver stores: typed values, checkpoint records, write records.

Values keep the serializer's own (type, bytes) pair, so any `serde` (EncryptedSerializer
included) round-trips exactly. Records are msgpack arrays (ormsgpack, already a LangGraph
dependency) so that a corrupt record fails loudly with CorruptDataError.
"""

from __future__ import annotations

import os
import pickle  # copies of values this process decoded, never foreign bytes
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import ormsgpack

from langgraph_tiered_saver.errors import CorruptDataError
from langgraph_tiered_saver.records.key_order import with_key_order

TypedValue = tuple[str, bytes]
EMPTY: TypedValue = ("empty", b"")


def encode_typed(value: TypedValue) -> bytes:
    """`type␀bytes`: cheaper than msgpack for the bulk of the data (channel values)."""
    type_, data = value
    return type_.encode() + b"\x00" + data


def decode_typed(raw: bytes, where: str) -> TypedValue:
    type_, sep, data = raw.partition(b"\x00")
    if not sep or not type_:
        raise CorruptDataError(f"{where}: stored value has no type tag (corrupt or foreign bytes)")
    try:
        return type_.decode(), data
    except UnicodeDecodeError as exc:
        raise CorruptDataError(f"{where}: stored value has an undecodable type tag") from exc


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    """A checkpoint without its channel values (those are stored per channel version)."""

    checkpoint: TypedValue
    metadata: TypedValue
    parent_checkpoint_id: str | None
    blob_fields: tuple[str, ...]

    def pack(self) -> bytes:
        return ormsgpack.packb(
            [1, self.checkpoint[0], self.checkpoint[1], self.metadata[0], self.metadata[1],
             self.parent_checkpoint_id]
        )


def unpack_checkpoint(raw: bytes, blob_fields: tuple[str, ...], where: str) -> CheckpointRecord:
    try:
        v, ctype, cbytes, mtype, mbytes, parent = ormsgpack.unpackb(raw)
        if v != 1:
            raise ValueError(f"unknown record version {v!r}")
    except Exception as exc:
        raise CorruptDataError(f"{where}: checkpoint record cannot be decoded: {exc}") from exc
    return CheckpointRecord((ctype, cbytes), (mtype, mbytes), parent, blob_fields)


@dataclass(frozen=True, slots=True)
class WriteRecord:
    task_id: str
    idx: int
    channel: str
    value: TypedValue
    task_path: str
    created_at: float | None = None  # when the task wrote it (epoch seconds), for audits

    def pack(self) -> bytes:
        return ormsgpack.packb(
            [2, self.task_id, self.idx, self.channel, self.value[0], self.value[1], self.task_path,
             self.created_at]
        )

    def sort_key(self) -> tuple[str, str, int]:
        return (self.task_path, self.task_id, self.idx)


def unpack_write(raw: bytes, where: str) -> WriteRecord:
    try:
        fields = ormsgpack.unpackb(raw)
        if fields[0] == 2:
            _, task_id, idx, channel, vtype, vbytes, task_path, created_at = fields
        elif fields[0] == 1:
            _, task_id, idx, channel, vtype, vbytes, task_path = fields
            created_at = None
        else:
            raise ValueError(f"unknown record version {fields[0]!r}")
    except Exception as exc:
        raise CorruptDataError(f"{where}: write record cannot be decoded: {exc}") from exc
    return WriteRecord(task_id, idx, channel, (vtype, vbytes), task_path, created_at)


# A checkpoint's or its metadata's part of a record, or a value, that the durable tier keeps only
# as its JSONB column (the serializer's bytes were dropped there: the JSON is the same value
# exactly, see audit.json_exact and audit.exact_json); its bytes are that JSON's text, after the
# key order of its dicts and a newline where JSONB reorders some (records/key_order.py). Read
# with `loads_record`, in both tiers (a Postgres read re-warms Redis with it).
JSON_RECORD = "lts-json"


def json_record_parts(data: bytes) -> tuple[bytes, bytes]:
    """A JSON_RECORD's JSON text and the key order kept before it (b"" when JSONB's own)."""
    order, newline, text = data.partition(b"\n")
    return (text, order) if newline else (order, b"")


def loads_record(serde: Any, typed: TypedValue) -> Any:
    """A checkpoint record's checkpoint or metadata, or a channel value or write: JSON text kept
    by the durable tier (a row whose JSONB holds the value exactly), or the serializer's own
    bytes."""
    if typed[0] == JSON_RECORD:
        text, order = json_record_parts(typed[1])
        return with_key_order(orjson.loads(text), orjson.loads(order)) if order else orjson.loads(text)
    return serde.loads_typed(typed)


# Oversized values are replaced by ("lts-blob+<type>", pointer) in both tiers (see offload.py).
BLOB_TYPE = "lts-blob+"


def pointer_digest(typed: TypedValue) -> str | None:
    """The blob-store digest a stored value points at, or None for an inline value."""
    if not typed[0].startswith(BLOB_TYPE):
        return None
    from langgraph_tiered_saver.blobs.pointer import parse_pointer

    return parse_pointer(typed[1]).digest


def scored(reply: Any) -> list[tuple[Any, float]]:
    """(member, score) pairs of a raw ZRANGE ... WITHSCORES reply: redis-py 5 leaves a command
    sent with execute_command flat (`[m1, s1, m2, s2]`), newer versions pair it."""
    items = list(reply or ())
    if items and not isinstance(items[0], (list, tuple)):
        return [(items[i], float(items[i + 1])) for i in range(0, len(items), 2)]
    return [(member, float(score)) for member, score in items]


def as_str(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


# The library's own generator, seeded from the OS: tokens and version tiebreaks never consume
# the application's `random` or `uuid.uuid4` sequence (a test that seeds or mocks them, like
# LangGraph's deterministic ids, sees the same ids with this saver as without it).
_RANDOM = random.Random(os.urandom(16))


def next_version(current: str | int | None) -> str:
    """A channel's next version. Versions sort as strings: a counter zero-padded to 32 digits (as
    LangGraph's own savers), then 8 hex digits of random tiebreak where they write a random float
    (41 characters instead of 51: a version is stored wherever a checkpoint names a channel, in
    channel_versions, versions_seen and the key of each value, in both tiers). The counter keeps
    its 32 digits so that versions of both forms order by counter alone: a thread continues in
    order whichever release or saver wrote its last version (a shorter counter would sort an
    older release's next version before the one it follows)."""
    if current is None:
        counter = 0
    elif isinstance(current, int):
        counter = current
    else:
        counter = int(current.split(".")[0])
    return f"{counter + 1:032}.{_RANDOM.getrandbits(32):08x}"


_UNSET = object()


class DecodeOnce:
    """`loads` for the many tuples of one list call, where checkpoints share channel versions
    (history of a long thread: ~500 references to ~330 values). Each stored value is decoded
    by the serializer once; a repeat gets an independent copy, a pickle round trip of the
    first (about 5x cheaper than msgpack decoding of messages), never the same object: a
    caller may mutate a snapshot's values, as it may with any other saver's. A value pickle
    cannot copy is decoded again."""

    __slots__ = ("_loads", "_seen")

    def __init__(self, loads: Callable[[TypedValue], Any]) -> None:
        self._loads = loads
        self._seen: dict[TypedValue, list[Any]] = {}  # stored bytes -> [first value, its pickle]

    def __call__(self, typed: TypedValue) -> Any:
        key = (typed[0], typed[1])
        seen = self._seen.get(key)
        if seen is None:
            value = self._loads(typed)
            self._seen[key] = [value, _UNSET]
            return value
        if seen[1] is _UNSET:
            try:
                seen[1] = pickle.dumps(seen[0], pickle.HIGHEST_PROTOCOL)
            except Exception:  # not picklable: decoded each time, as without this
                seen[1] = None
        return self._loads(typed) if seen[1] is None else pickle.loads(seen[1])  # our own bytes, from this call
