"""`flush()` and the CLI's `flush` drain the whole outbox, not the first page of its index."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from langgraph_tiered_saver.cli.main import main
from langgraph_tiered_saver.flushing.ops import FlushPolicy
from tests.graphs import chain_graph
from tests.helpers import QUIET_OFF, pg_rows, thread_config


@pytest.mark.parametrize("how", ["api", "cli"])
def test_flush_drains_more_threads_than_one_page_of_the_outbox_index(
    saver_context: Callable[..., Any], redis_url: str, test_database_url: str,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, how: str,
) -> None:  # fmt: skip
    monkeypatch.setattr("langgraph_tiered_saver._core.ops.FLUSH_ALL_PAGE", 5)  # 12 threads: three pages
    with saver_context(durable=True, background_flush=False, flush_policy=FlushPolicy(**QUIET_OFF)) as saver:  # type: ignore[arg-type]
        saver.setup()
        graph = chain_graph(saver, nodes=1)
        threads = [thread_config() for _ in range(12)]
        for cfg in threads:
            graph.invoke({"n": 0}, cfg)
        if how == "api":
            results = saver.flush()
        else:
            capsys.readouterr()
            base = ["--redis-url", redis_url, "--postgres-url", test_database_url, "--key-prefix", saver.key_prefix,
                    "--schema", saver.schema, "--tenant", saver.tenant_id]  # fmt: skip
            assert main([*base, "flush"]) == 0
            results = json.loads(capsys.readouterr().out)
        assert len(results) == 12
        assert saver.run_op(saver.core.flush.outbox_status_op()).depth == 0
        assert all(pg_rows(test_database_url, saver.schema, c["configurable"]["thread_id"]) == 3 for c in threads)
