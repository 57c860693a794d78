"""`StoredCheckpoint`: one checkpoint as a tier holds it, the record both tiers, the flusher and
the blob offloader exchange. Plain data and codecs, no I/O, imported by all of them (and
importing none of them), so the tiers never import each other."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from langgraph_tiered_saver.hot import keys as K
from langgraph_tiered_saver.records.codec import (
    CheckpointRecord,
    TypedValue,
    WriteRecord,
    as_str,
    encode_typed,
)


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """One checkpoint as stored in a tier: the common currency of both tiers and the flusher."""

    checkpoint_ns: str
    checkpoint_id: str
    record: CheckpointRecord
    run_id: str
    blobs: dict[str, TypedValue]  # blob field -> value (only the fields the record references)
    writes: list[WriteRecord]
    refs_lost: bool = False  # eviction took its value refs or part of its writes from Redis

    @property
    def complete(self) -> bool:
        """Every channel value the checkpoint references is present (an LRU eviction can drop
        one key of a thread; then the checkpoint must come from Postgres instead)."""
        return not self.refs_lost and all(field in self.blobs for field in self.record.blob_fields)


def from_durable(row: Any) -> StoredCheckpoint:
    """A checkpoint read from Postgres (`durable.records.DurableTuple`)."""
    return StoredCheckpoint(row.checkpoint_ns, row.checkpoint_id, row.record, row.run_id or "", row.blobs, row.writes)


def encode_refs(run_id: str, fields: Iterable[str]) -> str:
    """The `cv` value: run id first (for run deletion), then the blob fields of the checkpoint."""
    return K.REF_SEP.join([run_id, *fields])


def decode_refs(raw: Any) -> tuple[str, tuple[str, ...]]:
    parts = as_str(raw).split(K.REF_SEP) if raw else [""]
    return parts[0], tuple(parts[1:])


def stored_to_export(items: Iterable[StoredCheckpoint]) -> dict[str, dict[str, Any]]:
    """The import format for checkpoints read from Postgres (re-warming Redis)."""
    out: dict[str, dict[str, Any]] = {"ck": {}, "cv": {}, "bl": {}, "wr": {}}
    for s in items:
        member = K.checkpoint_member(s.checkpoint_ns, s.checkpoint_id)
        out["ck"][member] = s.record.pack()
        out["cv"][member] = encode_refs(s.run_id, s.record.blob_fields)
        for field, typed in s.blobs.items():
            out["bl"][field] = encode_typed(typed)
        for w in s.writes:
            out["wr"][K.write_field(s.checkpoint_ns, s.checkpoint_id, w.task_id, w.idx)] = w.pack()
    return out
