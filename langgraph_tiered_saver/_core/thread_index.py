"""A tenant's threads across both tiers (`saver.list_threads`): the thread indexes of Redis and
Postgres, no checkpoint loaded unless a metadata filter asks for one."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langgraph_tiered_saver._sansio.io import Op
from langgraph_tiered_saver.durable import ops as pg
from langgraph_tiered_saver.records.ids import ThreadRef, check_thread

if TYPE_CHECKING:
    from langgraph_tiered_saver._core.ops import Core


@dataclass(frozen=True)
class ThreadSummary:
    thread_id: str
    in_redis: bool  # Redis holds its keys now (not expired, not evicted)
    postgres_checkpoints: int
    latest_postgres_checkpoint: str | None
    last_flushed_at: dt.datetime | None


def threads_op(core: Core, tenant: str, metadata_filter: dict[str, Any] | None) -> Op[list[ThreadSummary]]:
    """Threads Redis knows first (its index), then those only Postgres has, by thread id. With
    `metadata_filter`, only threads with a checkpoint whose metadata matches it."""
    from langgraph_tiered_saver._core.ops import (
        ListQuery,  # the core imports this module's callers, not this module
    )

    hot = yield from core.hot.list_threads_op(tenant)  # known: may have expired since
    in_redis = yield from core.hot.held_op(tenant, hot)
    durable = {i.thread_id: i for i in (yield from pg.list_threads_op(core.schema, tenant))} if core.durable else {}
    out = []
    for thread_id in [*sorted(hot), *sorted(set(durable) - set(hot))]:
        if metadata_filter:
            ref = ThreadRef(tenant, check_thread(thread_id))
            if not (yield from core.list_op(ListQuery(ref, tenant, True, metadata_filter, None, 1))):
                continue
        info = durable.get(thread_id)
        out.append(ThreadSummary(
            thread_id, thread_id in in_redis, info.checkpoints if info else 0,
            info.latest_checkpoint_id if info else None, info.last_flushed_at if info else None,
        ))  # fmt: skip
    return out
