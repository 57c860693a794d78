"""Child process for the thread-lock tests (tests/faults/test_locks.py). Two modes, both on a
Redis-only TieredSaver (the lock and the fencing live in Redis):

    run   REDIS_URL PREFIX THREAD RUN_ID   print "ready", wait for a line on stdin, then take the
                                            thread lock (waiting) and run `slow_chain` on the thread;
                                            print "acquired" and "done <n>"
    auto  REDIS_URL PREFIX THREAD RUN_ID   like `run`, but no `thread_lock` in the caller: the saver
                                            takes the lock itself (`auto_lock`); prints "done <n>"
    stale REDIS_URL PREFIX THREAD RUN_ID   take the lock with a 1 s TTL, run one short graph run,
                                            print "ready <checkpoints written>", wait for a line on
                                            stdin (the test SIGSTOPs us meanwhile), then run again
                                            under the same lock and print the outcome: "ok" or the
                                            exception class name
"""

from __future__ import annotations

import sys
import time
from typing import Any

from langgraph_tiered_saver import AutoLock, TieredSaver
from tests.graphs import chain_graph
from tests.helpers import TEST_TENANT

NODES = 8
NODE_SLEEP = 0.04




def slow_chain(checkpointer: Any, nodes: int = NODES, sleep: float = NODE_SLEEP) -> Any:
    """A linear graph of `nodes` nodes, each sleeping a little (so two runs would overlap)."""
    return chain_graph(checkpointer, nodes, on_node=lambda i: time.sleep(sleep))


def run_config(thread: str, run_id: str) -> dict[str, Any]:
    """The run id goes to every checkpoint's metadata (config metadata is merged into it)."""
    return {"configurable": {"thread_id": thread}, "metadata": {"run_id": run_id}}


def say(*parts: object) -> None:
    print(*parts, flush=True)


def run(redis_url: str, prefix: str, thread: str, run_id: str) -> None:
    with TieredSaver.from_conn_string(redis_url, None, tenant_id=TEST_TENANT, key_prefix=prefix) as saver:
        graph = slow_chain(saver)
        cfg = run_config(thread, run_id)
        say("ready")
        sys.stdin.readline()
        with saver.thread_lock(cfg, timeout=5.0, wait=True, wait_timeout=30.0):
            say("acquired")
            result = graph.invoke({"n": 0}, cfg)
        say("done", result["n"])


def auto(redis_url: str, prefix: str, thread: str, run_id: str) -> None:
    with TieredSaver.from_conn_string(redis_url, None, tenant_id=TEST_TENANT, key_prefix=prefix, auto_lock=AutoLock(ttl=5.0, wait=30.0)
    ) as saver:
        graph = slow_chain(saver)
        cfg = run_config(thread, run_id)
        say("ready")
        sys.stdin.readline()
        result = graph.invoke({"n": 0}, cfg)
        say("done", result["n"])


def stale(redis_url: str, prefix: str, thread: str, run_id: str) -> None:
    with TieredSaver.from_conn_string(redis_url, None, tenant_id=TEST_TENANT, key_prefix=prefix) as saver:
        graph = slow_chain(saver, nodes=1, sleep=0.0)
        cfg = run_config(thread, run_id)
        outcome = "ok"
        lock = saver.thread_lock(cfg, timeout=1.0, wait=False)
        try:
            with lock:
                graph.invoke({"n": 0}, cfg)
                say("ready", len(list(saver.list(cfg))))
                sys.stdin.readline()  # SIGSTOPped here, past the lock's TTL
                graph.invoke({"n": 0}, cfg)
        except Exception as exc:
            outcome = type(exc).__name__
        say("lost" if lock.lost else "not-lost")
        say(outcome)


if __name__ == "__main__":
    {"run": run, "auto": auto, "stale": stale}[sys.argv[1]](*sys.argv[2:6])
