"""What every workload shares: the run context, opened savers, and per-workload result tables."""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass, field
from typing import Any, TypeVar

from langchain_core.runnables import RunnableConfig

from ..env import BenchEnv
from ..savers import Saver, SaverFactory, error_reason
from ..stats import Result, Summary

T = TypeVar("T")


@dataclass(frozen=True)
class Profile:
    """How much work each workload does. `--quick` and `--full` pick one."""

    name: str
    reps: int  # round-robin repetitions of micro, graph and large-value workloads
    ops: int  # timed calls per saver and repetition (micro workloads)
    graph_runs: int  # graph runs per saver and repetition
    conc_reps: int
    conc_ops: int  # checkpoints per saver, concurrency level and repetition
    turns: int  # long conversation
    large_ops: int  # 1 MB puts per saver and repetition
    pgload_reps: int
    pgload_runs: int  # graph runs per measurement window
    history: int = 50
    levels: tuple[int, ...] = (1, 16, 64)
    tenants: int = 1000
    # across the emulated network (workload `rtt`)
    rtt_levels: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)
    rtt_reps: int = 3  # round-robin repetitions; each visits every RTT level and saver
    rtt_linear_runs: int = 3  # 10-node graph runs per saver, durability mode, level and rep
    rtt_case_runs: int = 2  # case_8842 runs per saver, level and rep
    rtt_ops: int = 10  # timed put / put_writes / get_tuple calls per saver, level and rep
    rtt_pings: int = 300  # PINGs per level for the proxy's precision
    count_runs: int = 5  # graph runs per saver in the round-trip count
    memory_threads: int = 3_000  # short threads one process serves (workload `memory`)
    delta_turns: tuple[int, ...] = (100, 500)  # DeltaChannel conversation lengths (workload `delta`)
    history_checkpoints: int = 500  # thread length of the get_state_history workload
    history_reads: int = 3  # timed get_state_history calls per saver and repetition (each takes ~2 s)


QUICK = Profile(
    "quick",
    reps=3,
    ops=20,
    graph_runs=3,
    conc_reps=2,
    conc_ops=128,
    turns=100,  # the cost of a turn grows with the history: 200 turns take 4× as long
    large_ops=2,
    pgload_reps=2,
    pgload_runs=4,
    rtt_levels=(0.0, 0.5),
    rtt_reps=2,
    rtt_linear_runs=3,
    rtt_case_runs=2,
    rtt_ops=10,
    rtt_pings=200,
    count_runs=3,
)
FULL = Profile(
    "full",
    reps=10,
    ops=50,
    graph_runs=10,
    conc_reps=5,
    conc_ops=512,
    turns=200,
    large_ops=5,
    pgload_reps=5,
    pgload_runs=20,
    rtt_levels=(0.0, 0.5, 1.0, 2.0),
    rtt_reps=12,
    rtt_linear_runs=5,
    rtt_case_runs=3,
    rtt_ops=20,
    rtt_pings=500,
    count_runs=10,
    memory_threads=100_000,
)


class Progress:
    """One line per workload × saver, with the time since start."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def line(self, text: str) -> None:
        print(f"[{time.monotonic() - self.start:6.1f}s] {text}", file=sys.stderr, flush=True)

    def result(self, r: Result) -> None:
        s: Summary | None = r.summary
        if r.status.startswith("unavailable"):
            detail = "unavailable (see probe)"
        elif r.status != "ok":
            detail = r.status
        elif s is None:
            detail = "  ".join(f"{k}={_fmt(v)}" for k, v in r.metrics.items())
        else:
            detail = f"median {_fmt(s.median)} {r.unit}  p99 {_fmt(s.p99)} {r.unit}  n={s.n}"
        self.line(f"{r.workload:<28} {r.saver:<40} {detail}")


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


@dataclass
class Context:
    env: BenchEnv
    profile: Profile
    factories: list[SaverFactory]
    progress: Progress
    results: list[Result] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    conformance: dict[str, dict[str, Any]] = field(default_factory=dict)  # saver name -> report


@dataclass
class Subject:
    """An opened saver, with a cache for state its workloads prepare once."""

    factory: SaverFactory
    saver: Saver
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.factory.name

    def config(self, thread_id: str, tenant: int = 0) -> RunnableConfig:
        return self.factory.config(thread_id, tenant)


def open_sync(
    ctx: Context, stack: ExitStack, scope: str, op: str
) -> tuple[list[Subject], dict[str, str]]:
    """Open every available saver that supports `op`. Returns (subjects, name -> failure)."""
    subjects: list[Subject] = []
    failed: dict[str, str] = {}
    for f in ctx.factories:
        if f.unavailable or not f.supports(op):
            continue
        try:
            subjects.append(Subject(f, stack.enter_context(f.open_sync(ctx.env, scope))))
        except Exception as exc:
            failed[f.name] = f"unavailable: {error_reason(exc)}"
    return subjects, failed


async def open_async(
    ctx: Context, stack: AsyncExitStack, scope: str, op: str
) -> tuple[list[Subject], dict[str, str]]:
    """Async `open_sync`."""
    subjects: list[Subject] = []
    failed: dict[str, str] = {}
    for f in ctx.factories:
        if f.unavailable or not f.supports(op):
            continue
        try:
            saver = await stack.enter_async_context(f.open_async(ctx.env, scope))
            subjects.append(Subject(f, saver))
        except Exception as exc:
            failed[f.name] = f"unavailable: {error_reason(exc)}"
    return subjects, failed


class Table:
    """The results of one workload, one `Result` per saver (in factory order)."""

    def __init__(
        self,
        ctx: Context,
        group: str,
        workload: str,
        op: str,
        failed: dict[str, str],
        *,
        unit: str = "ms",
        higher_is_better: bool = False,
    ) -> None:
        self.ctx = ctx
        self.results: dict[str, Result] = {}
        for f in ctx.factories:
            status = f.unavailable or failed.get(f.name) or ("ok" if f.supports(op) else "n/a")
            self.results[f.name] = Result(group, workload, f.name, unit, higher_is_better, status)

    def ok(self, subject: Subject) -> bool:
        return self.results[subject.name].status == "ok"

    def add(self, subject: Subject, samples: list[float]) -> None:
        self.results[subject.name].samples.extend(samples)

    def set_metrics(self, subject: Subject, metrics: dict[str, float]) -> None:
        self.results[subject.name].metrics.update(metrics)

    def fail(self, subject: Subject, exc: BaseException) -> None:
        self.results[subject.name].status = f"error: {error_reason(exc)}"

    def emit(self) -> None:
        for r in self.results.values():
            self.ctx.progress.result(r)
            self.ctx.results.append(r)


def rotated(items: list[T], rep: int) -> list[T]:
    """`items` starting at position `rep`: each repetition starts with another saver."""
    if not items:
        return items
    k = rep % len(items)
    return items[k:] + items[:k]


def ms_since(t0: float) -> float:
    """Milliseconds elapsed since `t0 = time.perf_counter()`."""
    return (time.perf_counter() - t0) * 1000


def merge_config(base: RunnableConfig, returned: RunnableConfig) -> RunnableConfig:
    """The config a `put` returned, keeping keys of `base` (tenant_id) it may have dropped."""
    return {"configurable": {**base["configurable"], **returned["configurable"]}}


def round_robin(
    table: Table, subjects: list[Subject], reps: int, fn: Callable[[Subject, int], list[float]]
) -> None:
    """For each repetition, each saver in turn: `fn(subject, rep)` returns its samples."""
    for rep in range(reps):
        for s in rotated(subjects, rep):
            if table.ok(s):
                try:
                    table.add(s, fn(s, rep))
                except Exception as exc:
                    table.fail(s, exc)


async def around_robin(
    table: Table,
    subjects: list[Subject],
    reps: int,
    fn: Callable[[Subject, int], Awaitable[list[float]]],
) -> None:
    """Async `round_robin`."""
    for rep in range(reps):
        for s in rotated(subjects, rep):
            if table.ok(s):
                try:
                    table.add(s, await fn(s, rep))
                except Exception as exc:
                    table.fail(s, exc)
