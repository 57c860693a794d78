"""Child process for crash tests: runs the test graph to its interrupt on a TieredSaver that does
not flush, prints the checkpoint count, then dies by SIGKILL (no close, no drain)."""

from __future__ import annotations

import os
import signal
import sys

from langgraph_tiered_saver import TieredSaver
from langgraph_tiered_saver.flushing.ops import FlushPolicy
from tests.graphs import build_graph, initial_input
from tests.helpers import TEST_TENANT


def main(redis_url: str, postgres_url: str, schema: str, prefix: str, thread: str) -> None:
    policy = FlushPolicy(on_interrupt="off", on_error="off", quiet_seconds=3600, every_n_checkpoints=0)
    saver_cm = TieredSaver.from_conn_string(redis_url, postgres_url, schema=schema, tenant_id=TEST_TENANT, key_prefix=prefix, flush_policy=policy
    )
    saver = saver_cm.__enter__()
    graph = build_graph(saver)
    graph.invoke(initial_input(), {"configurable": {"thread_id": thread}})
    count = len(list(saver.list({"configurable": {"thread_id": thread}})))
    print(count, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main(*sys.argv[1:6])
