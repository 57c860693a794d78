"""A realistic graph end to end (`build_case_graph`), sync `invoke` and async `ainvoke`.

One sample is one whole run (resumed after its interrupt, if it has one) on a fresh thread (tenants spread over the 1,000). For write-behind
savers the flush to Postgres happens off the hot path and is not in this number; its cost shows
in the `pgload` workload.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack, ExitStack

from ..graph import CaseGraph, arun_case, build_case_graph, run_case
from ._common import (
    Context,
    Subject,
    Table,
    around_robin,
    ms_since,
    open_async,
    open_sync,
    round_robin,
)

GROUP = "graph"


def _graph(s: Subject) -> CaseGraph:
    if "graph" not in s.cache:
        s.cache["graph"] = build_case_graph(s.saver)
    return s.cache["graph"]  # type: ignore[no-any-return]


def run(ctx: Context) -> None:
    runs = ctx.profile.graph_runs

    def one_rep(s: Subject, rep: int) -> list[float]:
        case = _graph(s)
        timed = []
        for k in range(runs):
            cfg = s.config(ctx.env.thread_id(f"case-{rep}-{k}"), (rep * runs + k) % 1000)
            t0 = time.perf_counter()
            run_case(case, cfg)
            timed.append(ms_since(t0))
        return timed

    with ExitStack() as stack:
        subjects, failed = open_sync(ctx, stack, "graph-sync", "case")
        table = Table(ctx, GROUP, "graph run (sync)", "case", failed)
        round_robin(table, subjects, ctx.profile.reps, one_rep)
        table.emit()
    asyncio.run(_run_async(ctx))


async def _run_async(ctx: Context) -> None:
    runs = ctx.profile.graph_runs

    async def one_rep(s: Subject, rep: int) -> list[float]:
        case = _graph(s)
        timed = []
        for k in range(runs):
            cfg = s.config(ctx.env.thread_id(f"case-{rep}-{k}"), (rep * runs + k) % 1000)
            t0 = time.perf_counter()
            await arun_case(case, cfg)
            timed.append(ms_since(t0))
        return timed

    async with AsyncExitStack() as stack:
        subjects, failed = await open_async(ctx, stack, "graph-async", "case")
        table = Table(ctx, GROUP, "graph run (async)", "case", failed)
        await around_robin(table, subjects, ctx.profile.reps, one_rep)
        table.emit()
