"""Pure planning functions (no I/O): which checkpoints a prune keeps, which outbox entries to flush.

`keep_latest` must stay DeltaChannel-safe: a DeltaChannel stores only an empty marker in
non-snapshot steps and is rebuilt by walking ancestors' writes back to the nearest stored value
(see `BaseCheckpointSaver.prune`). So besides the latest checkpoint of each namespace we keep
every ancestor up to the one that holds a stored value for each of its channels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from . import keys as K
from .codec import CheckpointRecord


def keep_latest(
    records: Mapping[str, CheckpointRecord], has_value: Callable[[str], bool]
) -> set[str]:
    """Members to keep: the latest of each namespace plus the ancestors its channels need.

    `records` maps checkpoint member -> record; `has_value(blob_field)` says whether that channel
    version holds a stored (non-empty) value.
    """
    latest: dict[str, str] = {}
    for member in records:
        ns, checkpoint_id = K.split_checkpoint_member(member)
        if ns not in latest or checkpoint_id > K.split_checkpoint_member(latest[ns])[1]:
            latest[ns] = member
    keep: set[str] = set()
    for ns, member in latest.items():
        keep.add(member)
        missing = {K.split_blob_field(f)[1] for f in records[member].blob_fields if not has_value(f)}
        current = records[member].parent_checkpoint_id
        while missing and current is not None:
            parent_member = K.checkpoint_member(ns, current)
            parent = records.get(parent_member)
            if parent is None:
                break
            keep.add(parent_member)
            for field in parent.blob_fields:
                channel = K.split_blob_field(field)[1]
                if channel in missing and has_value(field):
                    missing.discard(channel)
            current = parent.parent_checkpoint_id
    return keep
