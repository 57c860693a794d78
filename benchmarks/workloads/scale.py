"""Costs that grow with the deployment rather than with one run.

- `tenants`: the 10-node graph (durability "sync") on a tenant the process has served before,
  and on a tenant it has never seen (a new one every run), interleaved per saver. A saver that
  keeps per-tenant state (a registry to rebuild, a cache to warm) shows it as the ratio
  `x_known_tenant` of the new-tenant row.
- `memory`: one process serves many short threads (a checkpoint, a task's writes, a read of
  the thread: the quickest shape that takes every path of a turn), each new, with the saver's
  background work on (flusher included). The resident set size is sampled every tenth of the
  run; a saver that keeps state per thread it has served grows with the count. Reported: RSS
  at the first, middle and last sample, the growth per 10,000 threads fitted over the second
  half (the first is warm-up: pools, caches filling up to their bounds, interpreter), and how
  many threads the background flusher carried to Postgres meanwhile (when writes outpace it,
  the rest wait in the Redis outbox, not in the process). The Python allocation sites that
  still grow, over a short tracemalloc window after the run, go to the log.
- `cpu`: the TieredSaver's own client CPU per call with no server (benchmarks.client_cpu).
- `lock`: what the run lock (on by default) costs a run: the 10-node graph on the TieredSaver
  with `auto_lock` on and off, interleaved (the lock rides in the run's first read and its
  writes, so it adds Redis work, not round trips).
"""

from __future__ import annotations

import gc
import statistics
import time
import tracemalloc
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from langgraph_tiered_saver.flushing.ops import FlushPolicy

from ..client_cpu import measure as measure_client_cpu
from ..data import checkpoint_chain, task_writes
from ..graph import build_linear_graph, linear_input
from ._common import Context, Subject, Table, merge_config, ms_since, open_sync, round_robin

GROUP = "scale"
KNOWN_TENANT = 0


def _graph(s: Subject) -> object:
    if "linear" not in s.cache:
        s.cache["linear"] = build_linear_graph(s.saver)
    return s.cache["linear"]


def run_tenants(ctx: Context) -> None:
    runs = ctx.profile.graph_runs
    fresh = [10_000]  # tenant numbers no other workload uses

    def one_rep(s: Subject, rep: int, *, new: bool) -> list[float]:
        graph = _graph(s)
        timed = []
        for k in range(runs):
            if new:
                fresh[0] += 1
            tenant = fresh[0] if new else KNOWN_TENANT
            cfg = s.config(ctx.env.thread_id(f"tenants-{'new' if new else 'known'}-{rep}-{k}"), tenant)
            t0 = time.perf_counter()
            graph.invoke(linear_input(), cfg, durability="sync")  # type: ignore[attr-defined]
            timed.append(ms_since(t0))
        return timed

    with ExitStack() as stack:
        subjects, failed = open_sync(ctx, stack, "tenants", "graph")
        known = Table(ctx, GROUP, "10-node graph run, known tenant", "graph", failed)
        new = Table(ctx, GROUP, "10-node graph run, new tenant", "graph", failed)
        for s in subjects:  # warm-up: the known tenant is known, connections are open
            one_rep(s, -1, new=False)
        for rep in range(ctx.profile.reps):
            round_robin(known, subjects, 1, lambda s, _r, rep=rep: one_rep(s, rep, new=False))  # type: ignore[misc]
            round_robin(new, subjects, 1, lambda s, _r, rep=rep: one_rep(s, rep, new=True))  # type: ignore[misc]
        for s in subjects:
            k, n = known.results[s.name].summary, new.results[s.name].summary
            if k is not None and n is not None and k.median > 0:
                new.set_metrics(s, {"x_known_tenant": round(n.median / k.median, 3)})
        known.emit()
        new.emit()


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def run_memory(ctx: Context) -> None:
    """The process-state question is the TieredSaver's (InMemorySaver keeps all by design). Its
    close does not drain the backlog the run leaves in the outbox (minutes of flushes that say
    nothing of memory); the benchmark's cleanup deletes it."""
    threads = ctx.profile.memory_threads
    table = Table(ctx, GROUP, f"RSS over {threads:,} short threads", "put", {}, unit="MiB")
    table.results = {k: v for k, v in table.results.items() if k.startswith("TieredSaver")}
    for f in ctx.factories:
        if f.name not in table.results or f.unavailable:
            continue
        subject = Subject(f, None)  # type: ignore[arg-type]
        try:
            with f._conn_manager(ctx.env, "memory", flush_policy=FlushPolicy(on_close=False)) as saver:  # type: ignore[attr-defined]
                saver.setup()
                subject.saver = saver
                table.set_metrics(subject, _memory_run(ctx, subject, threads))
        except Exception as exc:
            table.fail(subject, exc)
    table.emit()


MEMORY_SAMPLES = 10  # RSS samples over the run (every 10,000 threads of the full profile)


def _memory_run(ctx: Context, s: Subject, threads: int) -> dict[str, float]:
    """`threads` new threads, each a put, its task's writes and a read of it; RSS after every
    tenth, growth per 10,000 threads fitted over the second half (the first is warm-up: pools,
    caches up to their bounds, the interpreter). Then a short window under tracemalloc names
    the Python allocations that still grow (the log only: tracing costs time and memory)."""
    args = checkpoint_chain(s.saver, 1)[0]
    task, writes = task_writes(2)
    every = max(1, threads // MEMORY_SAMPLES)
    run = uuid.uuid4().hex[:6]

    def serve(i: int) -> None:
        base = s.config(ctx.env.thread_id(f"mem-{run}-{i}"), i % 100)
        cfg = merge_config(base, s.saver.put(base, args.checkpoint, args.metadata, args.new_versions))
        s.saver.put_writes(cfg, writes, task)
        s.saver.get_tuple(base)

    rss: list[int] = []
    t0 = time.perf_counter()
    for i in range(threads):
        serve(i)
        if (i + 1) % every == 0:
            rss.append(_rss_kib())
    seconds = time.perf_counter() - t0
    flushed = s.saver.metrics.counter("flushes")  # type: ignore[attr-defined]
    series = " ".join(f"{kib / 1024:.1f}" for kib in rss)
    ctx.progress.line(f"{'memory (RSS MiB)':<28} {s.name:<40} every {every:,} threads: {series}")
    _log_python_growth(ctx, s, lambda i: serve(threads + i), min(every, 5_000))
    half = rss[len(rss) // 2 - 1 :]  # from the middle sample on
    slope_kib = statistics.linear_regression(range(len(half)), half).slope if len(half) > 1 else 0.0
    return {
        "threads": threads,
        "rss_first_mib": round(rss[0] / 1024, 1),
        "rss_mid_mib": round(half[0] / 1024, 1),
        "rss_last_mib": round(rss[-1] / 1024, 1),
        "growth_mib_per_10k_threads": round(slope_kib / 1024 / every * 10_000, 2),
        "threads_per_s": round(threads / seconds, 1),
        "threads_flushed": flushed,
    }


def _log_python_growth(ctx: Context, s: Subject, serve: Callable[[int], None], count: int) -> None:
    """The three Python allocation sites that grew most over `count` more threads. Traced from
    `count` threads earlier, so that what a bounded cache of up to `count` entries replaces in
    the window was traced too and does not count as growth (a larger one's turnover still does)."""
    if count < 1:
        return
    tracemalloc.start()
    try:
        for i in range(count):
            serve(i)
        gc.collect()
        before = tracemalloc.take_snapshot()
        for i in range(count, 2 * count):
            serve(i)
        gc.collect()
        top = tracemalloc.take_snapshot().compare_to(before, "lineno")[:3]
    finally:
        tracemalloc.stop()
    for stat in top:
        ctx.progress.line(f"{'memory (tracemalloc)':<28} {s.name:<40} {count:,} threads: {stat}")


def run_cpu(ctx: Context) -> None:
    table = Table(ctx, GROUP, "client CPU per call, no server", "put", {}, unit="µs")
    figures = measure_client_cpu(rounds=ctx.profile.reps, calls=ctx.profile.ops * 20)
    for name, result in table.results.items():
        if name == "TieredSaver" and result.status == "ok":
            result.metrics.update({f"{op}_us": v["median_us"] for op, v in figures.items()})
    table.results = {k: v for k, v in table.results.items() if k == "TieredSaver"}
    table.emit()


def run_lock(ctx: Context) -> None:
    runs = ctx.profile.graph_runs
    table = Table(ctx, GROUP, "10-node graph run, run lock on vs off", "graph", {})
    table.results = {k: v for k, v in table.results.items() if k == "TieredSaver"}
    factory = next((f for f in ctx.factories if f.name == "TieredSaver" and not f.unavailable), None)
    if factory is None or "TieredSaver" not in table.results:
        table.emit()
        return
    timed: dict[bool, list[float]] = {True: [], False: []}
    with ExitStack() as stack:
        savers = {}
        for locked in (True, False):
            saver = stack.enter_context(factory._conn_manager(ctx.env, f"lock-{locked}", auto_lock=locked))  # type: ignore[attr-defined]
            saver.setup()
            savers[locked] = saver
        graphs = {locked: build_linear_graph(saver) for locked, saver in savers.items()}
        for rep in range(ctx.profile.reps):
            for locked in (True, False) if rep % 2 == 0 else (False, True):
                for k in range(runs):
                    cfg = factory.config(ctx.env.thread_id(f"lock-{locked}-{rep}-{k}"), rep % 10)
                    t0 = time.perf_counter()
                    graphs[locked].invoke(linear_input(), cfg, durability="sync")
                    timed[locked].append(ms_since(t0))
    on, off = statistics.median(timed[True]), statistics.median(timed[False])
    result = table.results["TieredSaver"]
    result.samples.extend(timed[True])
    result.metrics.update({"lock_off_median_ms": round(off, 3), "lock_cost_ms_per_run": round(on - off, 3)})
    table.emit()
