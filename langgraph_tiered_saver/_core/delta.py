"""`get_delta_channel_history` across the tiers, in a bounded number of round trips.

LangGraph rebuilds a `DeltaChannel` from the writes of a checkpoint's ancestors back to the
nearest stored value (its "seed"). The base class walks the parent chain with one `get_tuple`
per ancestor: one round trip per step of a conversation. Here one Lua script walks the chain
inside Redis (`hot/lua/delta_history.lua`); where Redis no longer holds an ancestor (expired,
evicted, never re-warmed) one recursive Postgres statement walks the rest
(`durable.delta`). So the call costs one Redis round trip for a hot thread, plus one Postgres
round trip when the chain leaves Redis, whatever its depth.

The contract is the base class': only on-path ancestors count (forks), the target's own writes
are excluded (they belong to the next step), writes come oldest first (in `pending_writes`
order within a checkpoint), and a channel without any stored value on the path gets no seed.
A tier that cannot answer raises: a chain cut short by an outage would be a wrong state, not
an older one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import DeltaChannelHistory

from langgraph_tiered_saver._core.delta_walks import KeptWalk, KeptWalks, strictly_decreasing
from langgraph_tiered_saver._sansio.io import Op, RedisCall
from langgraph_tiered_saver.durable import delta as pgdelta
from langgraph_tiered_saver.errors import ConfigError, CorruptDataError, TierUnavailableError
from langgraph_tiered_saver.hot import scripts
from langgraph_tiered_saver.hot.ops import thread_plan
from langgraph_tiered_saver.records.codec import (
    BLOB_TYPE,
    TypedValue,
    WriteRecord,
    as_str,
    decode_typed,
    unpack_write,
)
from langgraph_tiered_saver.records.collection import collector_held
from langgraph_tiered_saver.records.ids import ThreadRef

if TYPE_CHECKING:
    from langgraph_tiered_saver._core.ops import Core
    from langgraph_tiered_saver.hot.ops import HotOps

T = TypeVar("T")


class DeltaHistoryAPI:
    """`get_delta_channel_history` / `aget_delta_channel_history` of TieredSaver. Needs from the
    saver: `core`, `run_op`, `arun_op`, `observed`, `_ref` (as `admin.OperatorAPI`)."""

    core: Core

    if TYPE_CHECKING:  # defined by TieredSaver

        def run_op(self, op: Op[T]) -> T: ...

        async def arun_op(self, op: Op[T]) -> T: ...

        def observed(self, name: str, op: Op[T], ref: ThreadRef) -> Op[T]: ...

        def _ref(self, config: RunnableConfig) -> ThreadRef: ...

    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        """DeltaChannel writes and seed along the parent chain: one Redis round trip, plus one
        Postgres round trip for what Redis no longer holds (module docstring)."""
        return self.run_op(self._delta_history_op(config, channels))

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        return await self.arun_op(self._delta_history_op(config, channels))

    def _delta_history_op(self, config: RunnableConfig, channels: Sequence[str]) -> Op[dict[str, DeltaChannelHistory]]:
        ref = self._ref(config)
        return self.observed("get_delta_channel_history", delta_history_op(self.core, ref, channels), ref)


class _Walk:
    """What the walk gathered: per visited ancestor (newest first) its writes to the channels
    it still wanted, sorted as `pending_writes`; and the seeds, by channel."""

    def __init__(self) -> None:
        self.steps: list[list[WriteRecord]] = []
        self.seeds: dict[str, TypedValue] = {}


def _check_channels(channels: Sequence[str]) -> list[str]:
    if isinstance(channels, str):
        raise ConfigError(f"channels must be a sequence of channel names, not the string {channels!r}")
    wanted = list(channels)
    for channel in wanted:
        if not isinstance(channel, str) or not channel or "\x00" in channel:
            raise ConfigError(f"channel name {channel!r} is not a non-empty string without NUL")
    return wanted


def hot_walk_op(
    hot: HotOps, ref: ThreadRef, channels: Sequence[str], walk: _Walk, kept: KeptWalks | None = None
) -> Op[tuple[str, str, str]]:
    """Walk in Redis (one round trip), stopping where a walk `kept` from an earlier call begins
    (delta_walks.py). Returns (status, target id, next id): see the script ("known" comes back
    as "done", the kept part added)."""
    key = (ref.tenant_id, ref.thread_id, ref.checkpoint_ns, tuple(channels))
    known = kept.get(key) if kept is not None else None
    args = (
        hot.read_ttl_ms, ref.checkpoint_ns, ref.checkpoint_id or "",
        *((known.newest, known.oldest, known.count, known.born) if known is not None else ("", "", 0, "")),
    )  # fmt: skip
    plan = thread_plan(hot.prefix, ref.tenant_id, ref.thread_id)  # its key prefix: GET's first key
    call = scripts.DELTA_HISTORY.call_planned(plan.get_keys[:1], args, list(channels))
    ((status, target_id, raw_steps, raw_seeds, next_id, *whole),) = yield RedisCall((call,), scripts=(scripts.DELTA_HISTORY,))
    where = f"Redis thread {ref.thread_id!r}"
    steps: list[list[WriteRecord]] = []
    for raw_writes in raw_steps:
        writes = [unpack_write(raw, where) for raw in raw_writes]
        if len(writes) > 1:
            writes.sort(key=WriteRecord.sort_key)
        steps.append(writes)
    seeds = {as_str(raw_seeds[i]): decode_typed(raw_seeds[i + 1], where) for i in range(0, len(raw_seeds), 2)}
    status = as_str(status)
    if status == "known" and known is not None:  # the kept walk goes on where this one stopped
        steps, seeds = known.after(steps, seeds)
    if status in ("done", "known") and kept is not None and whole:
        ids, count, born = [as_str(i) for i in whole[0]], int(whole[1]), as_str(whole[2])
        before = known if status == "known" else None
        newest = ids[0] if ids else before.newest if before is not None else None
        oldest = before.oldest if before is not None else ids[-1] if ids else None
        if born and newest is not None and oldest is not None and strictly_decreasing(ids, before.newest if before is not None else None):
            kept.keep(key, KeptWalk(newest, oldest, count, born, tuple(steps), seeds))
        else:
            kept.drop(key)
        status = "done"
    walk.steps += steps
    walk.seeds.update(seeds)
    return status, as_str(target_id), as_str(next_id)


def delta_history_op(core: Core, ref: ThreadRef, channels: Sequence[str]) -> Op[dict[str, DeltaChannelHistory]]:
    """The DeltaChannel history of `channels` at the checkpoint `ref` names (its namespace's
    latest when it names none)."""
    wanted = _check_channels(channels)
    if not wanted:
        return {}
    hot_up = yield from core._recover_op(ref)  # not: Redis' copy predates a write-through
    if hot_up and ref.checkpoint_id is None and core.durable and core.hot.watch.replica:
        # a replica's latest may be older than Postgres' (hot/watch.py): the target is the newer one
        latest = yield from core._get_tuple_op(ref)
        if latest is None:
            return {channel: {"writes": []} for channel in wanted}
        ref = replace(ref, checkpoint_id=latest.config["configurable"]["checkpoint_id"])
    yield from core._drain_op(ref.tenant_id, ref.thread_id, ref.checkpoint_ns)  # held writes belong to it
    walk = _Walk()
    status, target_id, next_id = "target", ref.checkpoint_id or "", ""
    try:
        if hot_up:
            status, target_id, next_id = yield from hot_walk_op(core.hot, ref, wanted, walk, core.delta_walks)
    except TierUnavailableError as exc:
        core._hot_failed(exc, "get_delta_channel_history")  # re-raises unless falling back to Postgres
    if status == "lost" and not core.durable:
        raise CorruptDataError(
            f"thread {ref.thread_id!r} checkpoint {next_id!r}: Redis lost part of it (evicted) and there is no "
            "durable tier: its DeltaChannel history cannot be rebuilt"
        )
    if status != "done" and core.durable:
        remaining = [c for c in dict.fromkeys(wanted) if c not in walk.seeds]
        found = yield from pgdelta.delta_history_op(
            core.schema, ref.tenant_id, ref.thread_id, ref.checkpoint_ns, remaining,
            start=next_id if status in ("handoff", "lost") else None,
            target=(target_id or None) if status == "target" else None,
        )  # fmt: skip
        if status == "lost" and found.first is None:
            raise CorruptDataError(
                f"thread {ref.thread_id!r} checkpoint {next_id!r}: Redis lost part of it (evicted before its flush) "
                "and Postgres does not have it: its DeltaChannel history cannot be rebuilt"
            )
        for depth in sorted(found.writes):
            walk.steps.append(sorted(found.writes[depth], key=WriteRecord.sort_key))
        walk.seeds.update(found.seeds)
    return (yield from _history_op(core, ref, wanted, walk))


def _history_op(core: Core, ref: ThreadRef, wanted: list[str], walk: _Walk) -> Op[dict[str, DeltaChannelHistory]]:
    """The walk as LangGraph's `DeltaChannelHistory` entries: values resolved from the blob
    store and deserialized. Each turn of a conversation reads the same seed and, but for the
    newest, the same writes again: a seed read before, and a write read twice before, is a copy
    from `core.decoded` (no blob fetch, no deserialization: records/decoded.py). The values are
    made with the cyclic collector held off (records/collection.py): a long conversation's seed
    and writes are thousands of long-lived objects and no cycles, and each young collection
    over them only promotes them towards a full pass."""
    loads = core.loads
    decoded, tenant = core.decoded, ref.tenant_id

    def checked_loads(typed: TypedValue) -> Any:
        try:
            return loads(typed)
        except Exception as exc:
            raise CorruptDataError(f"thread {ref.thread_id!r}: stored bytes cannot be deserialized: {exc}") from exc

    def resolve(typed: TypedValue, seed: bool) -> Op[Any]:
        """A seed, or an offloaded write: a copy of the value read before, if it was."""
        with collector_held():
            hit, value = decoded.get(tenant, typed)
        if hit:
            return value
        stored = yield from core.offload.resolve_op(tenant, typed)  # I/O: outside the hold
        with collector_held():
            value = checked_loads(stored)
            if seed or decoded.seen_again(tenant, typed):
                decoded.put(tenant, typed, value)
        return value

    history: dict[str, DeltaChannelHistory] = {ch: {"writes": []} for ch in wanted}
    writes: dict[str, list[WriteRecord]] = {ch: [] for ch in wanted}
    for step in reversed(walk.steps):
        for w in step:
            if w.channel in writes:
                writes[w.channel].append(w)
    for channel, records in writes.items():
        if not any(w.value[0].startswith(BLOB_TYPE) for w in records):
            # inline values, in the order the turn before read them, its new ones last: copies of
            # the runs kept of them (records/decoded.py), the new ones decoded
            sequence = (tenant, ref.thread_id, ref.checkpoint_ns, channel)
            with collector_held():
                values = decoded.run_copies(
                    sequence, [w.value for w in records], lambda typed: decoded.load(tenant, typed, checked_loads)
                )
        else:  # offloaded writes: each fetched (or copied) on its own
            values = []
            for w in records:
                if w.value[0].startswith(BLOB_TYPE):
                    values.append((yield from resolve(w.value, False)))
                else:
                    with collector_held():
                        values.append(decoded.load(tenant, w.value, checked_loads))
        history[channel]["writes"] = [(w.task_id, w.channel, v) for w, v in zip(records, values, strict=True)]
    for channel, typed in walk.seeds.items():
        if channel in history:
            history[channel]["seed"] = yield from resolve(typed, True)  # the turn before read it too
    return history
