"""Soak: many tenants' graphs written while standalone workers flush them.

`--tenants` x `--threads` threads, each one run of a `--steps`-checkpoint chain graph, written by
`--writers` threads of this process through one multi-tenant saver (background flusher off),
while `--workers` `worker` processes (quiet 1 s: a thread is flushed a second after its run
ends) drain the outbox. Reported:

- checkpoints/s written, and the time from the last write until the outbox is empty;
- flush lag: from a checkpoint's creation (its `ts`) to the start of the Postgres transaction
  that made it durable (`flushed_at`), p50/p99 over all checkpoints and over each thread's last;
- Redis memory per thread: MEMORY USAGE of every key of 200 sampled threads (after the flush);
- Postgres rows and bytes per thread (`pg_total_relation_size` of each table, indexes included).

    python -m benchmarks.soak [--tenants 1000] [--threads 10] [--steps 20] [--workers 2] [--writers 4] [--cluster]

`--cluster`: on a private 3-master Redis Cluster (devtools.servers.PrivateRedisCluster, on this
machine's cores like everything else) instead of the benchmark's single Redis; results go to
`soak_cluster.md` / `.json`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import redis
from redis.cluster import RedisCluster

from benchmarks.env import BenchEnv
from benchmarks.machine import machine_info
from devtools.servers import PrivateRedisCluster
from langgraph_tiered_saver import TieredSaver
from langgraph_tiered_saver.flushing.ops import FlushPolicy
from langgraph_tiered_saver.hot import keys as K
from tests.graphs import chain_graph

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
TABLES = ("checkpoints", "checkpoint_blobs", "checkpoint_writes")
SAMPLE = 200


def _workers(env: BenchEnv, redis_url: str, schema: str, prefix: str, count: int) -> list[subprocess.Popen[bytes]]:
    command = [sys.executable, "-m", "langgraph_tiered_saver", "--redis-url", redis_url, "--postgres-url",
               env.pg_url, "--schema", schema, "--key-prefix", prefix, "worker", "--quiet-seconds", "1",
               "--poll-seconds", "0.2"]  # fmt: skip
    return [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(count)]


def _redis_bytes_per_thread(client: Any, prefix: str, threads: list[tuple[str, str]]) -> float:
    sample = random.Random(14).sample(threads, min(SAMPLE, len(threads)))
    total = 0
    for tenant, thread in sample:
        for key in K.thread_keys(prefix, tenant, thread):
            total += client.memory_usage(key) or 0
    return total / len(sample)


def _postgres(env: BenchEnv, schema: str, threads: int) -> dict[str, Any]:
    with psycopg.connect(env.pg_url) as conn:
        out: dict[str, Any] = {}
        for table in TABLES:
            rows, size = conn.execute(
                f'SELECT count(*), pg_total_relation_size(\'"{schema}".{table}\') FROM "{schema}".{table}'
            ).fetchone()  # type: ignore[misc]
            out[table] = {"rows_per_thread": rows / threads, "bytes_per_thread": size / threads}
        lag = "extract(epoch FROM flushed_at - created_at)"
        all_p50, all_p99 = conn.execute(
            f"SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY {lag}), percentile_cont(0.99) WITHIN GROUP "
            f'(ORDER BY {lag}) FROM "{schema}".checkpoints').fetchone()  # type: ignore[misc]  # fmt: skip
        last_p50, last_p99 = conn.execute(
            f"SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY l), percentile_cont(0.99) WITHIN GROUP (ORDER BY l) "
            f"FROM (SELECT DISTINCT ON (tenant_id, thread_id) {lag} AS l FROM \"{schema}\".checkpoints "
            "ORDER BY tenant_id, thread_id, checkpoint_id DESC) AS last").fetchone()  # type: ignore[misc]  # fmt: skip
        out["lag"] = {"all_p50": all_p50, "all_p99": all_p99, "last_p50": last_p50, "last_p99": last_p99}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=10, help="threads per tenant")
    parser.add_argument("--steps", type=int, default=20, help="checkpoints per thread (>= 3)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--cluster", action="store_true", help="on a private 3-master Redis Cluster")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        redis_url = None
        if args.cluster:
            redis_url = stack.enter_context(PrivateRedisCluster(3)).url
        _soak(args, redis_url)


def _soak(args: argparse.Namespace, cluster_url: str | None) -> None:
    policy = FlushPolicy(on_interrupt="off", on_error="off", every_n_checkpoints=0, on_close=False)
    threads = [(f"tenant-{t}", f"thread-{n}") for t in range(args.tenants) for n in range(args.threads)]
    with BenchEnv.create() as env:
        machine = machine_info(env)
        schema, prefix = env.schema("soak", "soak"), env.key_prefix("soak", "soak")
        redis_url = cluster_url or env.redis_url
        client: Any = (
            RedisCluster.from_url(cluster_url.replace("redis+cluster://", "redis://"))
            if cluster_url else redis.Redis.from_url(env.redis_url)
        )  # fmt: skip
        with TieredSaver.from_conn_string(redis_url, env.pg_url, schema=schema, key_prefix=prefix,
                                          background_flush=False, flush_policy=policy) as saver:  # fmt: skip
            saver.setup()
            workers = _workers(env, redis_url, schema, prefix, args.workers)
            graph = chain_graph(saver, nodes=args.steps - 2)

            def run(item: tuple[str, str]) -> None:
                graph.invoke({"n": 0}, {"configurable": {"thread_id": item[1], "tenant_id": item[0]}})

            started = time.perf_counter()
            with ThreadPoolExecutor(args.writers) as pool:
                for _ in pool.map(run, threads):
                    pass
            written = time.perf_counter() - started
            while sum(client.zcard(k) for k in K.dirty_keys(prefix)) > 0:
                time.sleep(0.1)
            drained = time.perf_counter() - started - written
            for w in workers:
                w.send_signal(signal.SIGTERM)
            for w in workers:
                w.wait(60)
            checkpoints = len(threads) * args.steps
            result = {
                "args": vars(args), "threads": len(threads), "checkpoints": checkpoints, "write_seconds": written,
                "checkpoints_per_second": checkpoints / written, "drain_after_writes_seconds": drained,
                "redis_bytes_per_thread": _redis_bytes_per_thread(client, prefix, threads),
                "postgres": _postgres(env, schema, len(threads)),
            }  # fmt: skip
        client.close()
    pg = result["postgres"]
    lag = pg["lag"]
    text = "\n".join([
        f"# Soak: {args.tenants} tenants x {args.threads} threads x {args.steps} checkpoints, {args.workers} workers"
        + (" (Redis Cluster)" if cluster_url else ""),
        "",
        f"`python -m benchmarks.soak --tenants {args.tenants} --threads {args.threads} --steps {args.steps} "
        f"--workers {args.workers} --writers {args.writers}{' --cluster' if cluster_url else ''}`; git {machine.get('git_commit')}, {machine.get('cpu')}, "
        f"{machine.get('cores')} cores shared by Redis, Postgres, writers and workers; "
        + ("a private 3-master Redis Cluster (`--cluster`)." if cluster_url else "single Redis (not a cluster)."),
        "",
        "| measure | value |",
        "|---|---:|",
        f"| checkpoints written | {checkpoints:,} in {written:.0f} s: {checkpoints / written:,.0f}/s |",
        f"| outbox empty after the last write | {drained:.1f} s |",
        f"| flush lag, every checkpoint, p50 / p99 | {lag['all_p50']:.2f} s / {lag['all_p99']:.2f} s |",
        f"| flush lag, each thread's last checkpoint, p50 / p99 | {lag['last_p50']:.2f} s / {lag['last_p99']:.2f} s |",
        f"| Redis memory per thread (MEMORY USAGE, {min(SAMPLE, len(threads))} threads) | {result['redis_bytes_per_thread']:,.0f} B |",
        *(f"| Postgres {t} per thread | {pg[t]['rows_per_thread']:.1f} rows, {pg[t]['bytes_per_thread']:,.0f} B |"
          for t in TABLES),
    ]) + "\n"  # fmt: skip
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "soak_cluster" if cluster_url else "soak"
    (RESULTS / f"{name}.md").write_text(text)
    (RESULTS / f"{name}.json").write_text(json.dumps({"machine": machine, **result}, indent=2, default=str))


if __name__ == "__main__":
    main()
