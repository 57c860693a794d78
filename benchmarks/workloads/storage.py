"""Storage-heavy workloads: a long conversation and 1 MB channel values (sync API).

Long conversation: `turns` turns of a one-node chat graph on one thread per saver, savers taking
turns turn by turn. Samples are turn latencies; the metrics say what the thread costs at rest,
measured halfway and at the end (after `flush` for write-behind savers):

* `redis_bytes` / `redis_keys`: `MEMORY USAGE ... SAMPLES 0` over the saver's keys (= per thread)
* `pg_bytes` / `pg_rows`: `pg_total_relation_size` and row counts of the saver's tables
* `*_per_turn`: growth over the second half ÷ turns — the bytes a step adds once the thread is
  long. Flat means per-version storage; growing with the history means the whole state is
  rewritten each step.
"""

from __future__ import annotations

import statistics
import time
from contextlib import ExitStack
from typing import Any

from ..data import checkpoint_chain, large_value
from ..graph import build_chat_graph, chat_turn
from ..probes import pg_footprint, redis_memory
from ._common import Context, Subject, Table, merge_config, ms_since, open_sync, rotated

LONG_SCOPE = "long"


def _footprint(ctx: Context, s: Subject) -> dict[str, float]:
    s.factory.flush(s.saver)
    out: dict[str, float] = {}
    redis_target = s.factory.redis_patterns(ctx.env, LONG_SCOPE)
    if redis_target:
        out["redis_bytes"], out["redis_keys"] = redis_memory(*redis_target)
    schema = s.factory.pg_schema(ctx.env, LONG_SCOPE)
    if schema:
        out["pg_bytes"], out["pg_rows"] = pg_footprint(ctx.env.pg_url, schema)
    return out


def run_long(ctx: Context) -> None:
    turns = ctx.profile.turns
    half = turns // 2
    with ExitStack() as stack:
        subjects, failed = open_sync(ctx, stack, LONG_SCOPE, "graph")
        table = Table(ctx, "long", f"long conversation {turns} turns", "graph", failed)
        graphs: dict[str, Any] = {s.name: build_chat_graph(s.saver) for s in subjects}
        configs = {s.name: s.config(ctx.env.thread_id("long"), 42) for s in subjects}
        at_half: dict[str, dict[str, float]] = {}
        for turn in range(turns):
            for s in rotated(subjects, turn):
                if not table.ok(s):
                    continue
                try:
                    t0 = time.perf_counter()
                    graphs[s.name].invoke(chat_turn(turn), configs[s.name])
                    table.add(s, [ms_since(t0)])
                    if turn == half - 1:
                        at_half[s.name] = _footprint(ctx, s)
                except Exception as exc:
                    table.fail(s, exc)
        for s in subjects:
            if table.ok(s):
                try:
                    table.set_metrics(
                        s, _long_metrics(ctx, s, table, at_half[s.name], turns - half)
                    )
                except Exception as exc:
                    table.fail(s, exc)
        table.emit()


def _long_metrics(
    ctx: Context, s: Subject, table: Table, half: dict[str, float], later_turns: int
) -> dict[str, float]:
    end = _footprint(ctx, s)
    samples = table.results[s.name].samples
    metrics: dict[str, float] = {
        "turn_ms_first10": statistics.median(samples[:10]),
        "turn_ms_last10": statistics.median(samples[-10:]),
        "checkpoints": sum(1 for _ in s.saver.list(s.config(ctx.env.thread_id("long"), 42))),
        **end,
    }
    for key in ("redis_bytes", "pg_bytes"):
        if key in end:
            metrics[f"{key}_per_turn"] = (end[key] - half[key]) / later_turns
    return metrics


def run_large(ctx: Context) -> None:
    """`put` and `get_tuple` (by id) of checkpoints carrying a fresh 1 MB value each."""
    n = ctx.profile.large_ops
    with ExitStack() as stack:
        subjects, failed = open_sync(ctx, stack, "large", "put")
        puts = Table(ctx, "large", "put 1 MB value", "put", failed)
        gets = Table(ctx, "large", "get_tuple 1 MB value", "get_tuple", failed)
        for rep in range(ctx.profile.reps):
            for s in rotated(subjects, rep):
                if puts.ok(s):
                    try:
                        put_ms, get_ms = _large_rep(ctx, s, rep, n)
                        puts.add(s, put_ms)
                        gets.add(s, get_ms)
                    except Exception as exc:
                        puts.fail(s, exc)
                        gets.fail(s, exc)
        puts.emit()
        gets.emit()


def _large_rep(ctx: Context, s: Subject, rep: int, n: int) -> tuple[list[float], list[float]]:
    base = s.config(ctx.env.thread_id(f"large-{rep}"), rep)
    cfg, configs, put_ms = base, [], []
    for args in checkpoint_chain(s.saver, n, document=large_value):
        t0 = time.perf_counter()
        returned = s.saver.put(cfg, args.checkpoint, args.metadata, args.new_versions)
        put_ms.append(ms_since(t0))
        cfg = merge_config(base, returned)
        configs.append(cfg)
    get_ms = []
    for cfg in configs:
        t0 = time.perf_counter()
        found = s.saver.get_tuple(cfg)
        get_ms.append(ms_since(t0))
        if found is None or len(found.checkpoint["channel_values"].get("document", "")) < 10**6:
            raise LookupError("get_tuple did not return the 1 MB value")
    return put_ms, get_ms
