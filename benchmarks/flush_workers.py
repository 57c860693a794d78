"""Flushed checkpoints per second with 1, 2 and 4 flush workers.

Each round fills an outbox (a fresh key prefix and schema): `--threads` threads over 10 tenants,
`--steps` supersteps each (a `put` with one new channel value and a `put_writes` of one write),
written with the background flusher off, so nothing reaches Postgres. Then N workers start
— N `worker` processes, or one process with `--workers N` threads (`--mode threads`) — and the
round ends when the outbox index is empty. Rounds run the worker counts in rotating order.

Two rates per round: **flush window** = checkpoints / (last flush transaction's start - first
one's), read from Postgres' `flushed_at` (what the workers achieve, process start excluded);
**wall** = checkpoints / (outbox empty - workers launched), start-up included. And
**flushes per thread**: thread flushes the workers made / threads (1.00: no thread was flushed
twice; a lost race for a lease is not a flush).

    python -m benchmarks.flush_workers [--threads 300] [--steps 20] [--rounds 2] [--mode processes|threads|both]
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import redis
from langgraph.checkpoint.base import empty_checkpoint

from benchmarks.env import BenchEnv
from benchmarks.machine import machine_info
from langgraph_tiered_saver import TieredSaver
from langgraph_tiered_saver.flushing.ops import FlushPolicy
from langgraph_tiered_saver.hot import keys as K

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
COUNTS = (1, 2, 4)
TENANTS = 10
MANUAL = FlushPolicy(on_interrupt="off", on_error="off", quiet_seconds=3600, every_n_checkpoints=0, on_close=False)


def fill(saver: TieredSaver, threads: int, steps: int) -> int:
    """Write the outbox; returns the checkpoints written."""
    for t in range(threads):
        tenant = saver.for_tenant(f"tenant-{t % TENANTS}")
        config: dict[str, Any] = {"configurable": {"thread_id": f"thread-{t}", "checkpoint_ns": ""}}
        for step in range(steps):
            checkpoint = empty_checkpoint()
            checkpoint["channel_values"] = {"messages": [f"message {step} of thread {t}: " + "x" * 200]}
            checkpoint["channel_versions"] = {"messages": step + 1}
            config = tenant.put(config, checkpoint, {"source": "loop", "step": step}, {"messages": step + 1})  # type: ignore[arg-type]
            tenant.put_writes(config, [("messages", f"write {step}")], task_id=f"task-{step}")  # type: ignore[arg-type]
    return threads * steps


def launch(env: BenchEnv, schema: str, prefix: str, mode: str, count: int) -> list[subprocess.Popen[bytes]]:
    base = [sys.executable, "-m", "langgraph_tiered_saver", "--redis-url", env.redis_url, "--postgres-url",
            env.pg_url, "--schema", schema, "--key-prefix", prefix, "worker", "--quiet-seconds", "0",
            "--poll-seconds", "0.05", "--lease-seconds", "30"]  # fmt: skip
    if mode == "threads":
        return [subprocess.Popen([*base, "--workers", str(count)], cwd=ROOT, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL)]  # fmt: skip
    return [subprocess.Popen(base, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) for _ in range(count)]


def one_round(env: BenchEnv, mode: str, count: int, label: str, threads: int, steps: int) -> dict[str, Any]:
    schema, prefix = env.schema("workers", label), env.key_prefix("workers", label)
    with TieredSaver.from_conn_string(env.redis_url, env.pg_url, schema=schema, key_prefix=prefix,
                                      background_flush=False, flush_policy=MANUAL) as saver:  # fmt: skip
        saver.setup()
        written = fill(saver, threads, steps)
    client = redis.Redis.from_url(env.redis_url)
    started = time.perf_counter()
    workers = launch(env, schema, prefix, mode, count)
    try:
        while sum(client.zcard(k) for k in K.dirty_keys(prefix)) > 0:
            time.sleep(0.02)
        wall = time.perf_counter() - started
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        outputs = [w.communicate(timeout=30)[0].decode() for w in workers]
        client.close()
    # each worker ends by printing {"stopped": true, "flushed_threads": N}: N counts thread flushes
    flushes = sum(int(m) for out in outputs for m in re.findall(r'"flushed_threads": (\d+)', out))
    with psycopg.connect(env.pg_url) as conn:
        rows, window = conn.execute(
            f'SELECT count(*), extract(epoch FROM max(flushed_at) - min(flushed_at)) FROM "{schema}".checkpoints'
        ).fetchone()  # type: ignore[misc]
    if rows != written:
        raise RuntimeError(f"{label}: {rows} checkpoints in Postgres, {written} written")
    return {"mode": mode, "workers": count, "checkpoints": written, "wall_s": wall, "window_s": float(window),
            "window_rate": written / float(window), "wall_rate": written / wall,
            "flushes_per_thread": flushes / threads}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=300)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--mode", choices=("processes", "threads", "both"), default="both")
    args = parser.parse_args()
    modes = ("processes", "threads") if args.mode == "both" else (args.mode,)
    results: list[dict[str, Any]] = []
    with BenchEnv.create() as env:
        machine = machine_info(env)
        for r in range(args.rounds):
            for mode in modes:
                order = COUNTS[r % len(COUNTS):] + COUNTS[: r % len(COUNTS)]
                for count in order:
                    result = one_round(env, mode, count, f"{mode[0]}{count}r{r}", args.threads, args.steps)
                    print(json.dumps(result), flush=True)
                    results.append(result)
    text = render(results, vars(args), machine)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "flush_workers.md").write_text(text)
    (RESULTS / "flush_workers.json").write_text(json.dumps({"machine": machine, "args": vars(args), "rounds": results}, indent=2))


def render(results: list[dict[str, Any]], args: dict[str, Any], machine: dict[str, Any]) -> str:
    """The Markdown table of a run (medians, and the range over rounds)."""
    modes = [m for m in ("processes", "threads") if any(x["mode"] == m for x in results)]
    lines = [
        f"# Flush workers: {args['threads']} threads x {args['steps']} steps ({args['threads'] * args['steps']:,} "
        f"checkpoints, as many writes and channel values) per round, {args['rounds']} rounds",
        "",
        f"`python -m benchmarks.flush_workers --threads {args['threads']} --steps {args['steps']} --rounds "
        f"{args['rounds']} --mode {args['mode']}`; git {machine.get('git_commit')}, {machine.get('cpu')}, "
        f"{machine.get('cores')} cores shared by Redis, Postgres and the workers.",
        "",
        "| workers | mode | checkpoints/s, flush window: median (min-max) | checkpoints/s, wall incl. start-up "
        "| vs 1 worker | flushes per thread (max) |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for mode in modes:
        base = None
        for count in COUNTS:
            mine = [x for x in results if x["mode"] == mode and x["workers"] == count]
            rates = [x["window_rate"] for x in mine]
            window = statistics.median(rates)
            wall = statistics.median(x["wall_rate"] for x in mine)
            base = base or window
            redundancy = max(x.get("flushes_per_thread", float("nan")) for x in mine)
            lines.append(f"| {count} | {mode} | {window:,.0f} ({min(rates):,.0f}-{max(rates):,.0f}) | {wall:,.0f} "
                         f"| {window / base:.2f}x | {redundancy:.2f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
