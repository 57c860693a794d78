"""Pure planning functions (no I/O): which checkpoints a prune keeps, which outbox entries to flush.

`keep_with_ancestors` keeps prunes DeltaChannel-safe: a DeltaChannel stores only an empty marker in
non-snapshot steps and is rebuilt by walking ancestors' writes back to the nearest stored value
(see `BaseCheckpointSaver.prune`). So besides each checkpoint a prune keeps, we keep
every ancestor up to the one that holds a stored value for each of its channels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from . import keys as K
from .codec import CheckpointRecord


def keep_with_ancestors(
    records: Mapping[str, CheckpointRecord], seeds: set[str], has_value: Callable[[str], bool]
) -> set[str]:
    """`seeds` plus, for each, the ancestors up to a stored value of each of its channels."""
    keep: set[str] = set()
    for member in sorted(seeds):
        ns = K.split_checkpoint_member(member)[0]
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
