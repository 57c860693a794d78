"""Checkpoints written by LangGraph before checkpoint format 4, migrated on read.

Before format 4 the `Send`s a superstep left pending were not part of the checkpoint: they were
pending writes to the TASKS channel of the checkpoint's *parent*. LangGraph now expects them as
the checkpoint's own TASKS channel value, and the official savers (PostgresSaver) move them
there whenever they read such a checkpoint. This module does the same for both tiers, so an
old thread shows the same state and history, and resumes the same way, as on PostgresSaver.

As upstream, nothing is rewritten in storage: each read applies the migration. Only tuples of
an older format cost a lookup (one round trip per tier, for all the parents of a `list` page);
current checkpoints cost nothing. Differences from PostgresSaver, on purpose: the parent is
looked up in the checkpoint's own namespace and thread (PostgresSaver ignores the namespace
and, in `list`, uses the first row's thread for every row).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any

from langgraph.checkpoint.base import CheckpointTuple
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.types import TASKS

from langgraph_tiered_saver._sansio.io import Op
from langgraph_tiered_saver.blobs.offloader import Offloader
from langgraph_tiered_saver.durable import ops as pg
from langgraph_tiered_saver.errors import CorruptDataError, TierUnavailableError
from langgraph_tiered_saver.hot import keys as K
from langgraph_tiered_saver.hot.ops import HotOps
from langgraph_tiered_saver.records.codec import WriteRecord, loads_record

# The first checkpoint format that keeps pending sends in the checkpoint's own TASKS channel.
SENDS_IN_CHECKPOINT_FORMAT = 4

ParentKey = tuple[str, str, str]  # (thread_id, checkpoint_ns, parent checkpoint id)
HotErrorHandler = Callable[[TierUnavailableError, str], None]


def parent_key(t: CheckpointTuple) -> ParentKey | None:
    """The parent whose TASKS writes belong to `t`, or None when `t` needs no migration
    (current format, or no parent: the first checkpoint of a thread has no sends to inherit)."""
    version = t.checkpoint.get("v")
    if (
        not isinstance(version, int)
        or version >= SENDS_IN_CHECKPOINT_FORMAT
        or t.parent_config is None
    ):
        return None
    parent_id = t.parent_config["configurable"].get("checkpoint_id")
    if not parent_id:
        return None
    conf = t.config["configurable"]
    return conf["thread_id"], conf.get("checkpoint_ns", ""), parent_id


def apply_sends(
    t: CheckpointTuple, sends: Sequence[Any], first_version: Callable[[], Any]
) -> CheckpointTuple:
    """`t` with `sends` as its TASKS channel value, versioned as PostgresSaver does: the highest
    channel version of the checkpoint (a first version when it has none). No sends: `t` as is."""
    if not sends:
        return t
    versions = dict(t.checkpoint["channel_versions"])
    versions[TASKS] = max(versions.values()) if versions else first_version()
    values = {**t.checkpoint["channel_values"], TASKS: list(sends)}
    checkpoint: Any = {**t.checkpoint, "channel_values": values, "channel_versions": versions}
    return t._replace(checkpoint=checkpoint)


def task_writes(writes: Iterable[WriteRecord]) -> list[WriteRecord]:
    """The TASKS writes among a checkpoint's pending writes, in PostgresSaver's order."""
    return sorted((w for w in writes if w.channel == TASKS), key=WriteRecord.sort_key)


@dataclass(eq=False)
class LegacyReads:
    """Migrates older-format tuples for the saver's read ops (holds settings, no connection)."""

    hot: HotOps
    offloader: Offloader
    serde: SerializerProtocol
    _: KW_ONLY
    schema: str
    durable: bool
    first_version: Callable[[], Any]
    on_hot_error: HotErrorHandler  # the saver's policy for a Redis failure: raise, or go on

    def migrate_one_op(self, tenant_id: str, t: CheckpointTuple, *, hot: bool) -> Op[CheckpointTuple]:
        """`migrate` for get_tuple."""
        (out,) = yield from self.migrate_op(tenant_id, [t], hot=hot)
        return out

    def migrate_op(
        self, tenant_id: str, tuples: Sequence[CheckpointTuple], *, hot: bool
    ) -> Op[list[CheckpointTuple]]:
        """The tuples with older-format ones migrated. `hot` False: Redis is known to be down
        (fallback mode), ask Postgres only."""
        keys = [parent_key(t) for t in tuples]
        needed = sorted({k for k in keys if k is not None})
        if not needed:
            return list(tuples)
        writes = yield from self.parent_task_writes_op(tenant_id, needed, hot=hot)
        sends: dict[ParentKey, list[Any]] = {}
        for key in needed:
            sends[key] = yield from self._load_op(tenant_id, key, writes.get(key, []))
        return [
            t if key is None else apply_sends(t, sends[key], self.first_version)
            for t, key in zip(tuples, keys, strict=True)
        ]

    def parent_task_writes_op(
        self, tenant_id: str, parents: Sequence[ParentKey], *, hot: bool
    ) -> Op[dict[ParentKey, list[WriteRecord]]]:
        """TASKS writes of the parents: from Redis (one round trip), then, for the parents Redis
        does not hold whole, from Postgres (one query). A Postgres failure is raised: a tuple
        without its sends would silently skip tasks on resume."""
        found: dict[ParentKey, list[WriteRecord]] = {}
        if hot:
            by_thread: dict[str, list[str]] = defaultdict(list)
            for thread_id, ns, checkpoint_id in parents:
                by_thread[thread_id].append(K.checkpoint_member(ns, checkpoint_id))
            try:
                stored = yield from self.hot.fetch_writes_op(tenant_id, by_thread)
            except TierUnavailableError as exc:
                self.on_hot_error(exc, "legacy checkpoint read")
                stored = {}
            for thread_id, ns, checkpoint_id in parents:
                records = stored.get((thread_id, K.checkpoint_member(ns, checkpoint_id)))
                if records is not None:
                    found[(thread_id, ns, checkpoint_id)] = task_writes(records)
                elif not self.durable:
                    found[(thread_id, ns, checkpoint_id)] = []  # Redis is all there is
        missing = [p for p in parents if p not in found]
        if missing and self.durable:
            rows = yield from pg.channel_writes_op(self.schema, tenant_id, missing, TASKS)
            for key in missing:
                found[key] = rows.get(key, [])
        return found

    def _load_op(self, tenant_id: str, key: ParentKey, writes: Sequence[WriteRecord]) -> Op[list[Any]]:
        """The sends themselves: offloaded values fetched, then deserialized."""
        out = []
        for w in writes:
            typed = yield from self.offloader.resolve_op(tenant_id, w.value)
            try:
                out.append(loads_record(self.serde, typed))
            except Exception as exc:
                raise CorruptDataError(
                    f"thread {key[0]!r} checkpoint {key[2]!r}: TASKS write cannot be deserialized: {exc}"
                ) from exc
        return out
