"""What goes into and comes out of the durable tier, and the row <-> codec conversions.

Rows carry the same codec objects as the Redis tier (`CheckpointRecord`, `WriteRecord`,
`TypedValue`), so the saver assembles a CheckpointTuple the same way whichever tier answered.

An offloaded value (see `BlobRow.blob_ref`) is stored with `data` NULL and its content hash in
`blob_ref`; reading it back gives `(type, blob_ref.encode())`, i.e. the pointer value the hot tier
holds, for the saver's blob-store resolution step.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from langgraph_tiered_saver.errors import CorruptDataError
from langgraph_tiered_saver.hot.keys import blob_field, split_blob_field
from langgraph_tiered_saver.records.codec import (
    JSON_RECORD,
    CheckpointRecord,
    TypedValue,
    WriteRecord,
)


class CheckpointRow(NamedTuple):
    ns: str
    checkpoint_id: str
    record: CheckpointRecord
    checkpoint_json: Mapping[str, Any]  # the checkpoint without channel_values, JSON-like
    metadata_json: Mapping[str, Any]
    # the JSON above is the checkpoint's (metadata's) exact value (audit.json_exact): the row
    # keeps no serializer bytes of it, only the JSONB column
    checkpoint_exact: bool = False
    metadata_exact: bool = False
    # channel -> type of the values it references that are a type without payload (an empty
    # channel, a None), which the row names instead of a value row; None: not known (every
    # value of the batch then gets a row)
    bare: Mapping[str, str] | None = None


class BlobRow(NamedTuple):
    ns: str
    channel: str
    version: str
    value: TypedValue
    value_json: Any = None  # the audit copy (JSON data or an orjson.Fragment of its text), or None
    blob_ref: str | None = None  # set when the value lives in the blob store: value[1] is the ref
    # set when value_json is the value exactly (audit.exact_json): the row keeps no serializer
    # bytes, only this key order of its dicts (b"": JSONB's own)
    json_keys: bytes | None = None


class WriteRow(NamedTuple):
    ns: str
    checkpoint_id: str
    write: WriteRecord
    value_json: Any = None
    blob_ref: str | None = None
    json_keys: bytes | None = None  # as BlobRow's


@dataclass
class FlushBatch:
    """Everything of one thread to make durable; plain tuples of the row shapes are accepted."""

    tenant_id: str
    thread_id: str
    checkpoints: list[CheckpointRow | tuple[Any, ...]] = field(default_factory=list)
    blobs: list[BlobRow | tuple[Any, ...]] = field(default_factory=list)
    writes: list[WriteRow | tuple[Any, ...]] = field(default_factory=list)
    # written while Redis was unreachable (the fallback), recorded so a later flush of a sibling
    # is seen as a fork; `continues` maps a checkpoint to the latest it continued (its parent, as
    # read from Postgres by this process): Postgres holding anything newer means a fork
    written_through: bool = False
    continues: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DurableTuple:
    """A checkpoint read from Postgres: its record, its channel values and its pending writes."""

    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    record: CheckpointRecord
    run_id: str | None
    blobs: dict[str, TypedValue]  # blob field (keys.blob_field) -> value, for record.blob_fields
    writes: list[WriteRecord]  # sorted by (task_path, task_id, idx)


@dataclass(frozen=True, slots=True)
class ThreadInfo:
    thread_id: str
    checkpoints: int
    latest_checkpoint_id: str
    latest_created_at: dt.datetime
    last_flushed_at: dt.datetime


@dataclass(frozen=True, slots=True)
class RowCounts:
    """Rows a write statement affected (an idempotent replay reports zeros)."""

    checkpoints: int = 0
    blobs: int = 0
    writes: int = 0
    # (thread, namespace, checkpoint id) of new checkpoints that fork their thread (sql.FORKED_CHECKPOINTS)
    forked: list[tuple[str, str, str]] = field(default_factory=list)


@dataclass
class DeleteResult:
    """What a delete or prune removed; `orphaned_blob_refs` no surviving row of the tenant uses."""

    checkpoints: int = 0
    writes: int = 0
    blobs: int = 0
    reparented: int = 0  # kept checkpoints whose parent was deleted (parent set to NULL)
    orphaned_blob_refs: list[str] = field(default_factory=list)

    def add(self, other: DeleteResult) -> None:
        self.checkpoints += other.checkpoints
        self.writes += other.writes
        self.blobs += other.blobs
        self.reparented += other.reparented
        self.orphaned_blob_refs = sorted(
            set(self.orphaned_blob_refs) | set(other.orphaned_blob_refs)
        )


def fields_to_pairs(ns: str, fields: Sequence[str]) -> list[list[str]]:
    """Blob fields of a checkpoint in namespace `ns` as [channel, version] pairs (NUL-free)."""
    pairs = []
    for f in fields:
        field_ns, channel, version = split_blob_field(f)
        if field_ns != ns:
            raise ValueError(f"blob field {f!r} belongs to namespace {field_ns!r}, not {ns!r}")
        pairs.append([channel, version])
    return pairs


def bare_channels(flat: Sequence[Any]) -> dict[str, str]:
    """A checkpoint's `bare` (channel -> type) from a `field, type, field, type...` list (the
    outbox read's, or `HotOps.bare_fields`)."""
    items = [x.decode() if isinstance(x, bytes) else str(x) for x in flat]
    return {split_blob_field(items[i])[1]: items[i + 1] for i in range(0, len(items) - 1, 2)}


def is_bare(value: TypedValue, blob_ref: str | None) -> bool:
    """A value that is its type alone (an empty channel, a None): no value row needed where the
    checkpoint rows name it (CheckpointRow.bare)."""
    return blob_ref is None and value[1] == b""


def pairs_to_fields(ns: str, pairs: Sequence[Sequence[str]]) -> tuple[str, ...]:
    return tuple(blob_field(ns, channel, version) for channel, version in pairs)


def created_at(checkpoint_json: Mapping[str, Any]) -> dt.datetime | None:
    """The checkpoint's own timestamp (`ts`), or None to let the database use now()."""
    ts = checkpoint_json.get("ts")
    if not isinstance(ts, str):
        return None
    try:
        value = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


# A value row's bytes (the serializer's, of a value its JSONB does not hold exactly: messages,
# objects) are deflated (zlib, raw) where that saves a tenth: they are written to the table and
# to the write-ahead log; the row's type says so (`lts-z+<type>`). Only the durable tier
# stores them so: reads give the serializer's bytes back.
DEFLATED = "lts-z+"
_DEFLATE_MIN = 128  # bytes: below, deflate saves little and costs a call


def deflated(value: TypedValue) -> TypedValue:
    """`value` as its row stores it: deflated where that pays (see DEFLATED)."""
    if len(value[1]) < _DEFLATE_MIN or value[0].startswith(DEFLATED):
        return value
    deflate = zlib.compressobj(1, zlib.DEFLATED, -15)  # raw: no header or checksum; level 1: as small as 6 on these values, a quarter less CPU
    packed = deflate.compress(value[1]) + deflate.flush()
    return (DEFLATED + value[0], packed) if len(packed) * 10 <= len(value[1]) * 9 else value


def inflated(value: TypedValue, where: str) -> TypedValue:
    """A row's value as the serializer wrote it (`deflated` undone)."""
    if not value[0].startswith(DEFLATED):
        return value
    try:
        return value[0][len(DEFLATED):], zlib.decompress(value[1], wbits=-15)
    except zlib.error as exc:
        raise CorruptDataError(f"{where}: deflated value cannot be inflated: {exc}") from exc


def stored_value(
    value: TypedValue, blob_ref: str | None, where: str, json_keys: bytes | None = None
) -> tuple[str, bytes | None]:
    """(type, data) columns for a value: data is NULL when the value is offloaded; type
    JSON_RECORD when its JSONB column holds it exactly (`json_keys` not None), data then the key
    order to keep (NULL when JSONB's own: sql.stored_bytes reads them back together)."""
    if blob_ref is None:
        return (JSON_RECORD, json_keys or None) if json_keys is not None else deflated(value)
    if value[1] != blob_ref.encode():
        raise ValueError(f"{where}: an offloaded value's bytes must be its blob_ref {blob_ref!r}")
    return value[0], None


def loaded_value(
    type_: bytes | None, data: bytes | None, ref: bytes | None, where: str
) -> TypedValue:
    if type_ is None:
        raise CorruptDataError(f"{where}: stored value has no type")
    if data is not None:
        return inflated((type_.decode(), bytes(data)), where)
    if ref is not None:
        return type_.decode(), bytes(ref)
    raise CorruptDataError(f"{where}: stored value has neither data nor a blob_ref")


def tuple_from_row(row: Sequence[Any]) -> DurableTuple:
    """One row of sql.SELECT_TUPLES as a DurableTuple; missing channel values are an error."""
    (
        thread,
        ns,
        cid,
        parent,
        run_id,
        ctype,
        cbytes,
        mtype,
        mbytes,
        pairs,
        blob_rows,
        write_rows,
    ) = row
    where = f"postgres checkpoint {thread}/{ns!r}/{cid}"
    fields = pairs_to_fields(ns, pairs or [])
    record = CheckpointRecord((ctype, bytes(cbytes)), (mtype, bytes(mbytes)), parent, fields)
    found = {}
    for channel, version, type_, data, ref in blob_rows or ():
        key = blob_field(ns, channel.decode(), version.decode())
        found[key] = loaded_value(type_, data, ref, f"{where} blob {key!r}")
    missing = [f for f in fields if f not in found]
    if missing:
        raise CorruptDataError(
            f"{where}: channel values missing from checkpoint_blobs: {missing!r}"
        )
    writes = []
    for task_id, idx, channel, type_, data, task_path, ref in write_rows or ():
        value = loaded_value(type_, data, ref, f"{where} write")
        writes.append(
            WriteRecord(task_id.decode(), int(idx), channel.decode(), value, task_path.decode())
        )
    writes.sort(key=WriteRecord.sort_key)
    return DurableTuple(thread, ns, cid, record, run_id, {f: found[f] for f in fields}, writes)
