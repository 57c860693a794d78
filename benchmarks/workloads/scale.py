"""Costs that grow with the deployment rather than with one run.

- `tenants`: the 10-node graph (durability "sync") on a tenant the process has served before,
  and on a tenant it has never seen (a new one every run), interleaved per saver. A saver that
  keeps per-tenant state (a registry to rebuild, a cache to warm) shows it as the ratio
  `x_known_tenant` of the new-tenant row.
- `memory`: one process serves many short threads (a read that finds nothing, a task's writes,
  two checkpoints: the shape of a one-turn conversation), each new, with the saver's background
  work on. The resident set size is sampled along the way; a saver that keeps state per thread
  it has served grows with the count. Reported: RSS at the first and last sample and the growth
  per 10,000 threads in between (the first tenth is warm-up: pools, caches, interpreter).
- `cpu`: the TieredSaver's own client CPU per call with no server (benchmarks.client_cpu).
- `lock`: what the run lock (on by default) costs a run: the 10-node graph on the TieredSaver
  with `auto_lock` on and off, interleaved (the lock rides in the run's first read and its
  writes, so it adds Redis work, not round trips).
"""

from __future__ import annotations

import statistics
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

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
    threads = ctx.profile.memory_threads
    samples = 10
    with ExitStack() as stack:
        subjects, failed = open_sync(ctx, stack, "memory", "put")
        table = Table(ctx, GROUP, f"RSS over {threads:,} short threads", "put", failed, unit="MiB")
        for s in subjects:
            if not s.name.startswith("TieredSaver") or not table.ok(s):
                continue  # the process-state question is the TieredSaver's (InMemorySaver keeps all by design)
            try:
                table.set_metrics(s, _memory_run(ctx, s, threads, samples))
            except Exception as exc:
                table.fail(s, exc)
        table.results = {k: v for k, v in table.results.items() if k.startswith("TieredSaver")}
        table.emit()


def _memory_run(ctx: Context, s: Subject, threads: int, samples: int) -> dict[str, float]:
    args = list(checkpoint_chain(s.saver, 2))
    task, writes = task_writes(2)
    rss: list[int] = []
    every = max(1, threads // samples)
    run = uuid.uuid4().hex[:6]
    t0 = time.perf_counter()
    for i in range(threads):
        base = s.config(ctx.env.thread_id(f"mem-{run}-{i}"), i % 100)
        s.saver.get_tuple(base)
        cfg = merge_config(base, s.saver.put(base, args[0].checkpoint, args[0].metadata, args[0].new_versions))
        s.saver.put_writes(cfg, writes, task)
        s.saver.put(cfg, args[1].checkpoint, args[1].metadata, args[1].new_versions)
        if (i + 1) % every == 0:
            rss.append(_rss_kib())
    seconds = time.perf_counter() - t0
    first, last = rss[0], rss[-1]  # after the first tenth (warm-up), and at the end
    span = threads - every
    return {
        "threads": threads,
        "rss_first_mib": round(first / 1024, 1),
        "rss_last_mib": round(last / 1024, 1),
        "growth_mib_per_10k_threads": round((last - first) / 1024 / span * 10_000, 2) if span else 0.0,
        "threads_per_s": round(threads / seconds, 1),
    }


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
