"""Micro operations, sync and async API: put, put_writes, get_tuple (latest, by id), list.

Each timed call is one sample. Savers take turns per repetition (round robin), all open at once.
The read workloads run against one thread with a `history`-step past (put + put_writes per step).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass
from functools import partial

from langchain_core.runnables import RunnableConfig

from ..data import checkpoint_chain, task_writes
from ._common import (
    Context,
    Subject,
    Table,
    around_robin,
    merge_config,
    ms_since,
    open_async,
    open_sync,
    round_robin,
)

GROUP = "micro"
History = tuple[RunnableConfig, list[RunnableConfig]]


@dataclass(frozen=True)
class MicroOp:
    name: str
    op: str  # the capability a saver needs (SaverFactory.ops)
    sync: Callable[[Context, Subject, int], list[float]]
    aio: Callable[[Context, Subject, int], Awaitable[list[float]]]


# ------------------------------------------------------------------------------- sync


def _put_chain(
    s: Subject, base: RunnableConfig, n: int, *, timed: list[float] | None = None
) -> list[RunnableConfig]:
    cfg, configs = base, []
    for args in checkpoint_chain(s.saver, n):
        t0 = time.perf_counter()
        returned = s.saver.put(cfg, args.checkpoint, args.metadata, args.new_versions)
        if timed is not None:
            timed.append(ms_since(t0))
        cfg = merge_config(base, returned)
        configs.append(cfg)
    return configs


def put_sync(ctx: Context, s: Subject, rep: int) -> list[float]:
    timed: list[float] = []
    _put_chain(s, s.config(ctx.env.thread_id(f"put-{rep}"), rep), ctx.profile.ops, timed=timed)
    return timed


def put_writes_sync(ctx: Context, s: Subject, rep: int) -> list[float]:
    configs = _put_chain(s, s.config(ctx.env.thread_id(f"pw-{rep}"), rep), ctx.profile.ops)
    timed: list[float] = []
    for i, cfg in enumerate(configs):
        task_id, writes = task_writes(i)
        t0 = time.perf_counter()
        s.saver.put_writes(cfg, writes, task_id)
        timed.append(ms_since(t0))
    return timed


def _history_sync(ctx: Context, s: Subject) -> History:
    if "history" not in s.cache:
        base = s.config(ctx.env.thread_id("history"), 7)
        configs = _put_chain(s, base, ctx.profile.history)
        for i, cfg in enumerate(configs):
            task_id, writes = task_writes(i)
            s.saver.put_writes(cfg, writes, task_id)
        s.cache["history"] = (base, configs)
    return s.cache["history"]  # type: ignore[no-any-return]


def _get_sync(s: Subject, configs: list[RunnableConfig]) -> list[float]:
    timed = []
    for cfg in configs:
        t0 = time.perf_counter()
        found = s.saver.get_tuple(cfg)
        timed.append(ms_since(t0))
        if found is None:
            raise LookupError("get_tuple returned None for a checkpoint that was put")
    return timed


def get_latest_sync(ctx: Context, s: Subject, rep: int) -> list[float]:
    base, _ = _history_sync(ctx, s)
    return _get_sync(s, [base] * ctx.profile.ops)


def get_by_id_sync(ctx: Context, s: Subject, rep: int) -> list[float]:
    _, configs = _history_sync(ctx, s)
    rng = random.Random(rep)
    return _get_sync(s, [rng.choice(configs) for _ in range(ctx.profile.ops)])


def list_sync(ctx: Context, s: Subject, rep: int) -> list[float]:
    base, _ = _history_sync(ctx, s)
    timed = []
    for _ in range(_list_calls(ctx)):
        t0 = time.perf_counter()
        n = sum(1 for _ in s.saver.list(base))
        timed.append(ms_since(t0))
        _check_listed(ctx, n)
    return timed


def _list_calls(ctx: Context) -> int:
    return max(3, ctx.profile.ops // 4)


def _check_listed(ctx: Context, n: int) -> None:
    if n != ctx.profile.history:
        raise AssertionError(f"list returned {n} checkpoints, expected {ctx.profile.history}")


# ------------------------------------------------------------------------------ async


async def _aput_chain(
    s: Subject, base: RunnableConfig, n: int, *, timed: list[float] | None = None
) -> list[RunnableConfig]:
    cfg, configs = base, []
    for args in checkpoint_chain(s.saver, n):
        t0 = time.perf_counter()
        returned = await s.saver.aput(cfg, args.checkpoint, args.metadata, args.new_versions)
        if timed is not None:
            timed.append(ms_since(t0))
        cfg = merge_config(base, returned)
        configs.append(cfg)
    return configs


async def put_async(ctx: Context, s: Subject, rep: int) -> list[float]:
    timed: list[float] = []
    base = s.config(ctx.env.thread_id(f"put-{rep}"), rep)
    await _aput_chain(s, base, ctx.profile.ops, timed=timed)
    return timed


async def put_writes_async(ctx: Context, s: Subject, rep: int) -> list[float]:
    configs = await _aput_chain(s, s.config(ctx.env.thread_id(f"pw-{rep}"), rep), ctx.profile.ops)
    timed: list[float] = []
    for i, cfg in enumerate(configs):
        task_id, writes = task_writes(i)
        t0 = time.perf_counter()
        await s.saver.aput_writes(cfg, writes, task_id)
        timed.append(ms_since(t0))
    return timed


async def _history_async(ctx: Context, s: Subject) -> History:
    if "history" not in s.cache:
        base = s.config(ctx.env.thread_id("history"), 7)
        configs = await _aput_chain(s, base, ctx.profile.history)
        for i, cfg in enumerate(configs):
            task_id, writes = task_writes(i)
            await s.saver.aput_writes(cfg, writes, task_id)
        s.cache["history"] = (base, configs)
    return s.cache["history"]  # type: ignore[no-any-return]


async def _aget(s: Subject, configs: list[RunnableConfig]) -> list[float]:
    timed = []
    for cfg in configs:
        t0 = time.perf_counter()
        found = await s.saver.aget_tuple(cfg)
        timed.append(ms_since(t0))
        if found is None:
            raise LookupError("aget_tuple returned None for a checkpoint that was put")
    return timed


async def get_latest_async(ctx: Context, s: Subject, rep: int) -> list[float]:
    base, _ = await _history_async(ctx, s)
    return await _aget(s, [base] * ctx.profile.ops)


async def get_by_id_async(ctx: Context, s: Subject, rep: int) -> list[float]:
    _, configs = await _history_async(ctx, s)
    rng = random.Random(rep)
    return await _aget(s, [rng.choice(configs) for _ in range(ctx.profile.ops)])


async def list_async(ctx: Context, s: Subject, rep: int) -> list[float]:
    base, _ = await _history_async(ctx, s)
    timed = []
    for _ in range(_list_calls(ctx)):
        t0 = time.perf_counter()
        n = len([t async for t in s.saver.alist(base)])
        timed.append(ms_since(t0))
        _check_listed(ctx, n)
    return timed


# --------------------------------------------------------------------------- drivers

OPS = (
    MicroOp("put", "put", put_sync, put_async),
    MicroOp("put_writes", "put_writes", put_writes_sync, put_writes_async),
    MicroOp("get_tuple latest", "get_tuple", get_latest_sync, get_latest_async),
    MicroOp("get_tuple by id", "get_tuple", get_by_id_sync, get_by_id_async),
    MicroOp("list 50", "list", list_sync, list_async),
)


def run(ctx: Context) -> None:
    with ExitStack() as stack:
        subjects, failed = open_sync(ctx, stack, "micro-sync", "put")
        for spec in OPS:
            table = Table(ctx, GROUP, f"{spec.name} (sync)", spec.op, failed)
            active = [s for s in subjects if s.factory.supports(spec.op)]
            round_robin(table, active, ctx.profile.reps, partial(spec.sync, ctx))
            table.emit()
    asyncio.run(_run_async(ctx))


async def _run_async(ctx: Context) -> None:
    async with AsyncExitStack() as stack:
        subjects, failed = await open_async(ctx, stack, "micro-async", "put")
        for spec in OPS:
            table = Table(ctx, GROUP, f"{spec.name} (async)", spec.op, failed)
            active = [s for s in subjects if s.factory.supports(spec.op)]
            await around_robin(table, active, ctx.profile.reps, partial(spec.aio, ctx))
            table.emit()
