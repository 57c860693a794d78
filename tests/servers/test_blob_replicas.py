"""Two replicas share offloaded values with the default blob store: a second process, with its
own working directory and HOME (so no local directory in common), reads the first one's 5 MB
value and writes its own, which the first reads back. Deleting threads then removes blobs no
thread references any more and keeps the one a remaining thread shares."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langgraph_tiered_saver.blobs import PgBlobStore
from tests.blob_child import cfg, five_mb, payload_graph, sha

ROOT = Path(__file__).resolve().parents[2]


def _digests(saver: Any) -> set[str]:
    return set(saver.run_op(PgBlobStore(saver.schema, saver.tenant_id).digests_op()))


def _child(tmp_path: Path, saver: Any, redis_url: str, pg_url: str, *threads: str) -> dict[str, str]:
    home, cwd = tmp_path / "child-home", tmp_path / "child-cwd"
    home.mkdir()
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "LTS_BLOB_DIR"}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT))
    args = [redis_url, pg_url, saver.key_prefix, saver.schema, saver.tenant_id, *threads]
    out = subprocess.run(
        [sys.executable, "-m", "tests.blob_child", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert list(home.iterdir()) == [] and list(cwd.iterdir()) == []  # nothing stored locally
    result: dict[str, str] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_two_processes_share_5mb_values_and_gc_keeps_shared_blobs(
    saver_context: Callable[..., Any], redis_url: str, test_database_url: str, tmp_path: Path
) -> None:
    a, b, c = (f"{n}-{uuid.uuid4().hex[:6]}" for n in "abc")
    with saver_context(durable=True) as saver:
        assert isinstance(saver.core.offload.stores(saver.tenant_id), PgBlobStore)  # the default
        saver.setup()
        mine = five_mb()
        payload_graph(saver, mine).invoke({}, cfg(a))
        saver.flush()

        child = _child(tmp_path, saver, redis_url, test_database_url, a, b, c)

        assert child["read"] == sha(mine)
        theirs = payload_graph(saver, "").get_state(cfg(b)).values["output"]
        assert sha(theirs) == child["wrote"]
        assert payload_graph(saver, "").get_state(cfg(c)).values["output"] == mine
        assert len(_digests(saver)) == 2  # c shares a's blob

        saver.run_op(saver.core.hot.delete_thread_op(saver.tenant_id, [c]))  # c now lives in Postgres only
        saver.delete_thread(a)  # c's Postgres rows still reference the blob
        assert len(_digests(saver)) == 2
        assert payload_graph(saver, "").get_state(cfg(c)).values["output"] == mine
        saver.delete_thread(b)
        assert len(_digests(saver)) == 1
        saver.delete_thread(c)
        assert _digests(saver) == set()
