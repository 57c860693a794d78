"""Across an emulated network: every saver reaches Redis and Postgres through `netem` delay
proxies, at RTT 0 (proxy in the path, no delay added), 0.5, 1 and 2 ms (`--full`).

Three parts, all in this process (the proxies run in a child process):

1. **Proxy precision** (group `netem`): raw Redis PINGs straight to the server and through a
   proxy at each RTT. The proxy's own cost at RTT > 0 (thread wake-ups, one more loopback hop
   each way) is measured first and subtracted from the delay (`compensation`), so a round trip
   through the proxy costs the direct one plus the configured RTT.
2. **Timed runs** (group `rtt`): the 10-node linear graph (growing message list, a new thread
   per run) with `durability="sync"` and `"async"`, case_8842 (invoke + resume,
   `durability="sync"`), and the micro operations put / put_writes / get_tuple (latest of the
   thread just written). Each saver has its own pair of proxies. For every repetition, every RTT
   level (rotated), every saver (rotated) takes its turn: interleaved, so drift hits all alike.
3. **Round trips** (group `roundtrips`), counted by the proxies at RTT 0 with fresh proxies per
   saver, after one warm-up run (connections open): Redis and Postgres round trips and Postgres
   transactions per run, per superstep (= per checkpoint `put` LangGraph makes in the run,
   counted on an `InMemorySaver`), and per micro call. The TieredSaver is counted with its
   background flusher off and its check of the Redis server (hotwatch.py, one small script every
   `redis_check_seconds`) done before counting, so every round
   trip seen is on the caller's path; what the
   write-behind flush then costs is counted separately (one `flush()` after the runs).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver

from ..data import checkpoint_chain, task_writes
from ..env import BenchEnv
from ..graph import CaseGraph, build_case_graph, build_linear_graph, linear_input, run_case
from ..netem import ProxyCounters, ProxyHost, ping_round_trips, proxied_url, target_of
from ..savers import SaverFactory, TieredFactory, error_reason
from ..stats import Result
from ._common import Context, Subject, Table, merge_config, ms_since, rotated

GROUP = "rtt"
DURABILITIES = ("sync", "async")
LINEAR = "10-node graph run"
CASE = "case_8842 run"
MICRO = ("put", "put_writes", "get_tuple")
CALIBRATION_RTT_MS = 1.0
CALIBRATION_BATCHES = 5


def workload_name(kind: str, level: float) -> str:
    return f"{kind} @ RTT {level:g} ms"


# ------------------------------------------------------------------------------ network


class Network:
    """A pair of proxies (Redis, Postgres) per saver, all in one `ProxyHost`."""

    def __init__(self, env: BenchEnv, host: ProxyHost) -> None:
        self.env = env
        self.host = host
        self.redis_target = target_of(env.redis_url, 6379)
        self.pg_target = target_of(env.pg_url, 5432)
        self.index: dict[int, tuple[int, int]] = {}  # id(factory) -> (redis, pg) proxy index

    def env_for(self, factory: SaverFactory) -> BenchEnv:
        """`env` with both servers behind proxies of `factory`'s own (created on first use).

        A saver with a Redis of its own (`env.private_redis`) reaches that one through its
        Redis proxy instead of the shared server."""
        own = self.env.private_redis.get(factory.slug)
        r = self.host.add(target_of(own, 6379) if own else self.redis_target, "redis")
        p = self.host.add(self.pg_target, "postgres")
        self.index[id(factory)] = (r.index, p.index)
        if own:
            private = {**self.env.private_redis, factory.slug: proxied_url(own, r.port)}
            return dataclasses.replace(
                self.env, private_redis=private, pg_url=proxied_url(self.env.pg_url, p.port)
            )
        return dataclasses.replace(
            self.env,
            redis_url=proxied_url(self.env.redis_url, r.port),
            pg_url=proxied_url(self.env.pg_url, p.port),
        )

    def counters(self, factory: SaverFactory) -> tuple[ProxyCounters, ProxyCounters]:
        r, p = self.index[id(factory)]
        all_counters = self.host.counters()
        return all_counters[r], all_counters[p]


# ---------------------------------------------------------------------------- precision


def _precision(ctx: Context, host: ProxyHost) -> None:
    """Calibrate the proxy's compensation, then PING straight and through it at each level."""
    target = target_of(ctx.env.redis_url, 6379)
    proxy = host.add(target, "redis")
    n = ctx.profile.rtt_pings
    host.set_rtt(CALIBRATION_RTT_MS)
    ping_round_trips(proxy.port, 50)  # warm-up: threads, connection, caches
    direct: list[float] = []
    through: list[float] = []
    for _ in range(CALIBRATION_BATCHES):  # alternate, so drift hits both alike
        direct += ping_round_trips(target[1], n // CALIBRATION_BATCHES, target[0])
        through += ping_round_trips(proxy.port, n // CALIBRATION_BATCHES)
    extra = statistics.median(through) - statistics.median(direct) - CALIBRATION_RTT_MS
    compensation = max(0.0, extra)
    host.set_compensation(compensation)
    ctx.notes["netem"] = (
        f"delay proxy compensation {compensation * 1000:.0f} µs per round trip "
        f"(its own cost at RTT > 0, measured at {CALIBRATION_RTT_MS:g} ms and subtracted)"
    )
    results = [Result("netem", "PING direct (no proxy)", "raw Redis")]
    results[0].samples = ping_round_trips(target[1], n, target[0])
    for level in ctx.profile.rtt_levels:
        host.set_rtt(level)
        r = Result("netem", workload_name("PING through proxy", level), "raw Redis")
        r.samples = ping_round_trips(proxy.port, n)
        r.metrics = {"rtt_ms": level}
        results.append(r)
    host.set_rtt(0.0)
    for r in results:
        ctx.progress.result(r)
        ctx.results.append(r)


# -------------------------------------------------------------------------------- runs


def _linear(s: Subject) -> Any:
    if "linear" not in s.cache:
        s.cache["linear"] = build_linear_graph(s.saver)
    return s.cache["linear"]


def _case(s: Subject) -> CaseGraph:
    if "case" not in s.cache:
        s.cache["case"] = build_case_graph(s.saver)
    return s.cache["case"]  # type: ignore[no-any-return]


# Runs rotate over this many tenants: a new thread per run (its first read asks Postgres, as on
# every saver with Postgres), in tenants seen before.
RTT_TENANTS = 10


class _Threads:
    """A new thread id per run, unique across the whole workload."""

    def __init__(self, env: BenchEnv) -> None:
        self.env = env
        self.n = 0

    def next(self, s: Subject, label: str) -> RunnableConfig:
        self.n += 1
        return s.config(self.env.thread_id(f"rtt-{label}-{self.n}"), self.n % RTT_TENANTS)


def linear_runs(s: Subject, threads: _Threads, n: int, durability: str) -> list[float]:
    graph = _linear(s)
    timed = []
    for _ in range(n):
        cfg = threads.next(s, "lin")
        t0 = time.perf_counter()
        graph.invoke(linear_input(), cfg, durability=durability)
        timed.append(ms_since(t0))
    return timed


def case_runs(s: Subject, threads: _Threads, n: int) -> list[float]:
    case = _case(s)
    timed = []
    for _ in range(n):
        cfg = threads.next(s, "case")
        t0 = time.perf_counter()
        run_case(case, cfg, durability="sync")
        timed.append(ms_since(t0))
    return timed


def micro_calls(s: Subject, threads: _Threads, n: int) -> dict[str, list[float]]:
    """`n` puts on a new thread, a put_writes on each checkpoint, `n` get_tuple of the latest."""
    base = threads.next(s, "micro")
    out: dict[str, list[float]] = {op: [] for op in MICRO}
    cfg, configs = base, []
    for args in checkpoint_chain(s.saver, n):
        t0 = time.perf_counter()
        returned = s.saver.put(cfg, args.checkpoint, args.metadata, args.new_versions)
        out["put"].append(ms_since(t0))
        cfg = merge_config(base, returned)
        configs.append(cfg)
    for i, c in enumerate(configs):
        task_id, writes = task_writes(i)
        t0 = time.perf_counter()
        s.saver.put_writes(c, writes, task_id)
        out["put_writes"].append(ms_since(t0))
    for _ in range(n):
        t0 = time.perf_counter()
        found = s.saver.get_tuple(base)
        out["get_tuple"].append(ms_since(t0))
        if found is None:
            raise LookupError("get_tuple returned None for a thread that was written")
    return out


def _open(
    ctx: Context, net: Network, stack: ExitStack, scope: str, factories: list[SaverFactory]
) -> tuple[list[Subject], dict[str, str]]:
    subjects: list[Subject] = []
    failed: dict[str, str] = {}
    for f in factories:
        if f.unavailable:
            continue
        try:
            saver = stack.enter_context(f.open_sync(net.env_for(f), scope))
            subjects.append(Subject(f, saver))
        except Exception as exc:
            failed[f.name] = f"unavailable: {error_reason(exc)}"
    return subjects, failed


class _Tables:
    """One `Table` per (workload kind, RTT level), created on first use."""

    def __init__(self, ctx: Context, failed: dict[str, str]) -> None:
        self.ctx = ctx
        self.failed = failed
        self.tables: dict[tuple[str, float], Table] = {}

    def get(self, kind: str, level: float, op: str) -> Table:
        key = (kind, level)
        if key not in self.tables:
            table = Table(self.ctx, GROUP, workload_name(kind, level), op, self.failed)
            for r in table.results.values():
                r.metrics["rtt_ms"] = level
            self.tables[key] = table
        return self.tables[key]

    def emit(self) -> None:
        for table in self.tables.values():  # insertion order: graph runs first, then calls
            table.emit()


def _timed(ctx: Context, net: Network) -> None:
    p = ctx.profile
    threads = _Threads(ctx.env)
    with ExitStack() as stack:
        subjects, failed = _open(ctx, net, stack, "rtt", ctx.factories)
        tables = _Tables(ctx, failed)
        # create every table up front (report order; unavailable savers are listed too)
        for d in DURABILITIES:
            for level in p.rtt_levels:
                tables.get(f"{LINEAR} (durability={d})", level, "linear")
        for level in p.rtt_levels:
            tables.get(f"{CASE} (durability=sync)", level, "case")
        for op in MICRO:
            for level in p.rtt_levels:
                tables.get(op, level, op)
        warm = _Tables(ctx, failed)  # one untimed turn each: imports, compiled graphs, pools
        for s in subjects:
            _one_turn(ctx, s, threads, warm, 0.0)
        for rep in range(p.rtt_reps):
            for level in rotated(list(p.rtt_levels), rep):
                net.host.set_rtt(level)
                for s in rotated(subjects, rep):
                    _one_turn(ctx, s, threads, tables, level)
            ctx.progress.line(f"rtt: repetition {rep + 1}/{p.rtt_reps} done")
        net.host.set_rtt(0.0)
        tables.emit()


def _one_turn(ctx: Context, s: Subject, threads: _Threads, tables: _Tables, level: float) -> None:
    p = ctx.profile
    steps: list[tuple[Table, Callable[[], list[float]]]] = []
    if s.factory.supports("linear"):
        for d in DURABILITIES:
            table = tables.get(f"{LINEAR} (durability={d})", level, "linear")
            steps.append((table, lambda d=d: linear_runs(s, threads, p.rtt_linear_runs, d)))  # type: ignore[misc]
    if s.factory.supports("case"):
        table = tables.get(f"{CASE} (durability=sync)", level, "case")
        steps.append((table, lambda: case_runs(s, threads, p.rtt_case_runs)))
    for table, fn in steps:
        if table.ok(s):
            try:
                table.add(s, fn())
            except Exception as exc:
                table.fail(s, exc)
    micro = {op: tables.get(op, level, op) for op in MICRO}
    if all(t.ok(s) for t in micro.values()):
        try:
            for op, samples in micro_calls(s, threads, p.rtt_ops).items():
                micro[op].add(s, samples)
        except Exception as exc:
            for t in micro.values():
                t.fail(s, exc)


# ------------------------------------------------------------------------- round trips


class _CountingMemorySaver(InMemorySaver):
    """InMemorySaver that counts `put` calls: LangGraph's checkpoints (supersteps) per run."""

    puts = 0

    def put(self, *args: Any, **kwargs: Any) -> Any:
        self.puts += 1
        return super().put(*args, **kwargs)


def supersteps_per_run() -> dict[str, float]:
    """Checkpoints LangGraph writes per run of each graph (all namespaces, subgraphs included)."""
    out: dict[str, float] = {}
    for d in DURABILITIES:
        saver = _CountingMemorySaver()
        graph = build_linear_graph(saver)
        graph.invoke(linear_input(), {"configurable": {"thread_id": "count"}}, durability=d)
        out[f"{LINEAR} (durability={d})"] = saver.puts
    saver = _CountingMemorySaver()
    run_case(build_case_graph(saver), {"configurable": {"thread_id": "count"}}, durability="sync")
    out[f"{CASE} (durability=sync)"] = saver.puts
    return out


@contextmanager
def _counting(net: Network, f: SaverFactory, into: dict[str, float], per: float) -> Iterator[None]:
    """Add the proxies' counts during the block, divided by `per`, to `into`."""
    r0, p0 = net.counters(f)
    yield
    r1, p1 = net.counters(f)
    r, p = r1.minus(r0), p1.minus(p0)
    into["redis_rt"] = r.round_trips / per
    into["pg_rt"] = p.round_trips / per
    into["pg_xact"] = p.transactions / per
    into["connections"] = (r.connections + p.connections) / per
    into["bytes_up"] = (r.bytes_up + p.bytes_up) / per


def _count_factories(ctx: Context) -> list[SaverFactory]:
    """The savers, the durable TieredSaver with its background flusher off (see module doc)."""
    out: list[SaverFactory] = []
    for f in ctx.factories:
        if isinstance(f, TieredFactory) and f.durable:
            counted = TieredFactory(durable=True, background_flush=False)
            counted.unavailable = f.unavailable
            out.append(counted)
        else:
            out.append(f)
    return out


def _count(ctx: Context, net: Network) -> None:
    steps = supersteps_per_run()
    threads = _Threads(ctx.env)
    workloads = [*steps, *MICRO]
    results = {
        w: {f.name: Result("roundtrips", w, f.name, unit="round trips") for f in ctx.factories}
        for w in workloads
    }
    for f in _count_factories(ctx):
        for w in workloads:
            kind = ("case" if w.startswith(CASE) else "linear") if w in steps else w
            ok = "ok" if f.supports(kind) else "n/a"
            results[w][f.name].status = f.unavailable or ok
        if f.unavailable:
            continue
        try:
            with ExitStack() as stack:
                subjects, failed = _open(ctx, net, stack, "count", [f])
                if failed:
                    for w in workloads:
                        results[w][f.name].status = failed[f.name]
                    continue
                _count_one(ctx, net, subjects[0], threads, steps, results)
        except Exception as exc:
            for w in workloads:
                if results[w][f.name].status == "ok":
                    results[w][f.name].status = f"error: {error_reason(exc)}"
    for by_saver in results.values():
        for r in by_saver.values():
            ctx.progress.result(r)
            ctx.results.append(r)


def _count_one(
    ctx: Context,
    net: Network,
    s: Subject,
    threads: _Threads,
    steps: dict[str, float],
    results: dict[str, dict[str, Result]],
) -> None:
    f, k = s.factory, ctx.profile.count_runs
    total_runs = 0
    if f.supports("linear"):
        # warm-up: connections, prepared scripts, and a first thread in every tenant
        linear_runs(s, threads, RTT_TENANTS, "sync")
        if f.supports("case"):
            case_runs(s, threads, 1)
        if isinstance(f, TieredFactory) and f.durable:
            f.flush(s.saver)  # the warm-up's write-behind: not the counted runs'
        for d in DURABILITIES:
            m: dict[str, float] = {}
            with _counting(net, f, m, k):
                linear_runs(s, threads, k, d)
            _store(results[f"{LINEAR} (durability={d})"][f.name], m, steps, f"{LINEAR} (durability={d})")
            total_runs += k
    if f.supports("case"):
        m = {}
        with _counting(net, f, m, k):
            case_runs(s, threads, k)
        _store(results[f"{CASE} (durability=sync)"][f.name], m, steps, f"{CASE} (durability=sync)")
        total_runs += k
    if all(f.supports(op) for op in MICRO):
        micro_calls(s, threads, 2)  # warm-up
        calls = ctx.profile.rtt_ops
        per_op: dict[str, dict[str, float]] = {op: {} for op in MICRO}
        base = threads.next(s, "count-micro")
        cfg, configs = base, []
        with _counting(net, f, per_op["put"], calls):
            for args in checkpoint_chain(s.saver, calls):
                cfg = merge_config(base, s.saver.put(cfg, args.checkpoint, args.metadata, args.new_versions))
                configs.append(cfg)
        with _counting(net, f, per_op["put_writes"], calls):
            for i, c in enumerate(configs):
                task_id, writes = task_writes(i)
                s.saver.put_writes(c, writes, task_id)
        with _counting(net, f, per_op["get_tuple"], calls):
            for _ in range(calls):
                s.saver.get_tuple(base)
        for op in MICRO:
            results[op][f.name].metrics = per_op[op]
            results[op][f.name].samples = [per_op[op]["redis_rt"] + per_op[op]["pg_rt"]]
    if isinstance(f, TieredFactory) and f.durable and total_runs:
        flushed: dict[str, float] = {}
        with _counting(net, f, flushed, total_runs):
            f.flush(s.saver)
        for w in steps:
            r = results[w][f.name]
            r.metrics.update({f"flush_{k2}": v for k2, v in flushed.items() if k2 != "bytes_up"})


def _store(r: Result, m: dict[str, float], steps: dict[str, float], workload: str) -> None:
    n = steps[workload]
    r.metrics = {
        "supersteps": n,
        "redis_rt_per_superstep": m["redis_rt"] / n,
        "redis_rt": m["redis_rt"],
        "pg_rt": m["pg_rt"],
        "pg_xact": m["pg_xact"],
        "connections": m["connections"],
        "bytes_up": m["bytes_up"],
    }
    r.samples = [m["redis_rt"] + m["pg_rt"]]


# -------------------------------------------------------------------------------- entry


def run(ctx: Context) -> None:
    with ProxyHost() as host:
        _precision(ctx, host)
        net = Network(ctx.env, host)
        _timed(ctx, net)
        host.set_rtt(0.0)
        _count(ctx, net)
    ctx.notes["rtt"] = (
        "savers reach Redis and Postgres through delay proxies (benchmarks/netem.py); "
        "TCP connection set-up is not delayed, only data"
    )
