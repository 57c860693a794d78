"""Child process for tests/servers/test_blob_replicas.py: a second replica (its own process, working
directory and HOME) on the same Redis prefix, Postgres schema and tenant, with the default blob
store. Usage:

    python -m tests.blob_child REDIS_URL POSTGRES_URL PREFIX SCHEMA TENANT READ WRITE SHARE

Reads thread READ, writes a fresh 5 MB value to thread WRITE and READ's value to thread SHARE,
closes the saver (which flushes), and prints one JSON line: the sha256 of what it read and wrote.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph

from langgraph_tiered_saver import TieredSaver

FIVE_MB = 5 * 1024 * 1024


class Big(TypedDict, total=False):
    output: str


def payload_graph(checkpointer: Any, payload: str) -> Any:
    """One node that stores `payload` in the state (offloaded: far over 256 KiB)."""
    g = StateGraph(Big)
    g.add_node("tool", lambda s: {"output": payload})
    g.add_edge(START, "tool")
    g.add_edge("tool", END)
    return g.compile(checkpointer=checkpointer)


def five_mb() -> str:
    return base64.b64encode(os.urandom(FIVE_MB * 3 // 4)).decode()


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def cfg(thread: str) -> Any:
    return {"configurable": {"thread_id": thread}}


def main(redis_url: str, pg_url: str, prefix: str, schema: str, tenant: str, read: str, write: str, share: str) -> None:
    options = {"key_prefix": prefix, "schema": schema, "tenant_id": tenant}
    with TieredSaver.from_conn_string(redis_url, pg_url, **options) as saver:
        saver.setup()
        got = payload_graph(saver, "").get_state(cfg(read)).values["output"]
        mine = five_mb()
        payload_graph(saver, mine).invoke({}, cfg(write))
        payload_graph(saver, got).invoke({}, cfg(share))
    print(json.dumps({"read": sha(got), "wrote": sha(mine)}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
