"""Throughput under concurrency: puts/second with 1, 16, 64 async tasks and 1, 16, 64 OS threads.

`conc_ops` checkpoints per burst are split over the workers; worker `w` writes to its own thread
id, under tenant `op_index % 1000` (tenant-aware savers get it as `tenant_id`; the others get it
folded into the thread id). One sample = one burst = ops / wall-clock seconds. Repetitions loop
over levels, then savers, round robin.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, ExitStack
from typing import Any

from langgraph.checkpoint.base.id import uuid6

from ..data import PutArgs, checkpoint_chain
from ._common import Context, Subject, Table, open_async, open_sync, rotated

GROUP = "concurrency"
UNIT = "ckpt/s"


def _template(s: Subject) -> PutArgs:
    if "template" not in s.cache:
        s.cache["template"] = checkpoint_chain(s.saver, 1)[0]
    return s.cache["template"]  # type: ignore[no-any-return]


def _op_args(ctx: Context, s: Subject, label: str, worker: int, op: int) -> tuple[Any, ...]:
    tpl = _template(s)
    cfg = s.config(ctx.env.thread_id(f"{label}-w{worker}"), op % ctx.profile.tenants)
    checkpoint = {**tpl.checkpoint, "id": str(uuid6())}
    return cfg, checkpoint, tpl.metadata, tpl.new_versions


def _thread_burst(ctx: Context, s: Subject, level: int, rep: int) -> float:
    total = ctx.profile.conc_ops
    label = f"thr{level}-{rep}"

    def worker(w: int) -> None:
        for op in range(w, total, level):
            s.saver.put(*_op_args(ctx, s, label, w, op))

    with ThreadPoolExecutor(max_workers=level) as pool:
        barrier = threading.Barrier(level)
        list(pool.map(lambda _: barrier.wait(), range(level)))  # start every thread first
        t0 = time.perf_counter()
        list(pool.map(worker, range(level)))
        return total / (time.perf_counter() - t0)


async def _task_burst(ctx: Context, s: Subject, level: int, rep: int) -> float:
    total = ctx.profile.conc_ops
    label = f"aio{level}-{rep}"

    async def worker(w: int) -> None:
        for op in range(w, total, level):
            await s.saver.aput(*_op_args(ctx, s, label, w, op))

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(level)))
    return total / (time.perf_counter() - t0)


def _tables(ctx: Context, kind: str, failed: dict[str, str]) -> dict[int, Table]:
    return {
        level: Table(
            ctx, GROUP, f"{kind} c={level}", "put", failed, unit=UNIT, higher_is_better=True
        )
        for level in ctx.profile.levels
    }


def run(ctx: Context) -> None:
    with ExitStack() as stack:
        subjects, failed = open_sync(ctx, stack, "conc-threads", "put")
        tables = _tables(ctx, "threads", failed)
        for rep in range(ctx.profile.conc_reps):
            for level, table in tables.items():
                for s in rotated(subjects, rep):
                    if table.ok(s):
                        try:
                            table.add(s, [_thread_burst(ctx, s, level, rep)])
                        except Exception as exc:
                            table.fail(s, exc)
        for table in tables.values():
            table.emit()
    asyncio.run(_run_async(ctx))


async def _run_async(ctx: Context) -> None:
    async with AsyncExitStack() as stack:
        subjects, failed = await open_async(ctx, stack, "conc-async", "put")
        tables = _tables(ctx, "async tasks", failed)
        for rep in range(ctx.profile.conc_reps):
            for level, table in tables.items():
                for s in rotated(subjects, rep):
                    if table.ok(s):
                        try:
                            table.add(s, [await _task_burst(ctx, s, level, rep)])
                        except Exception as exc:
                            table.fail(s, exc)
        for table in tables.values():
            table.emit()
