"""The upgrade from Redis key schema v1 (before Redis Cluster support) to v2 (upgrade.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
import redis

from langgraph_tiered_saver import FlushPolicy, LegacyKeysError
from langgraph_tiered_saver.cli.main import main
from langgraph_tiered_saver.records.codec import as_str
from tests.graphs import chain_graph
from tests.helpers import TEST_TENANT, pg_rows, thread_config

V2_THREAD = re.compile(r"^(?P<prefix>.+):v2:\{s\d{4}\}:t:(?P<tag>[^:]*\|[^:]*):(?P<suffix>.+)$")


def downgrade_to_v1(client: redis.Redis, prefix: str) -> int:
    """Rename the v2 keys of `prefix` to what version 1 wrote (its thread tag `{tenant|thread}`,
    one outbox index, one registry per tenant, an epoch): the state an upgrade starts from."""
    moved = 0
    for raw in list(client.scan_iter(match=f"{prefix}:v2:*", count=1000)):
        key = as_str(raw)
        match = V2_THREAD.match(key)
        if match:
            client.rename(key, f"{prefix}:v1:{{{match['tag']}}}:{match['suffix']}")
            moved += 1
        elif key.endswith(":dirty"):
            for member, score in client.zrange(key, 0, -1, withscores=True):
                client.zadd(f"{prefix}:v1:dirty", {member: score})
            client.delete(key)
        elif key.endswith(":threads"):
            tenant = key.split(":tenant:", 1)[1][: -len(":threads")]
            for member, score in client.zrange(key, 0, -1, withscores=True):
                client.zadd(f"{prefix}:v1:tenant:{{{tenant}}}:threads", {member: score})
            client.delete(key)
        else:
            client.delete(key)
    client.set(f"{prefix}:v1:epoch", "old-epoch")
    return moved


def test_setup_refuses_unflushed_v1_keys_and_migrate_redis_moves_them(
    saver_context: Callable[..., Any], redis_url: str, test_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client = redis.Redis.from_url(redis_url)
    no_drain = FlushPolicy(on_close=False)  # leave the outbox as a crash of the old version would
    with saver_context(durable=True, background_flush=False, flush_policy=no_drain) as saver:
        saver.setup()
        prefix = saver.key_prefix
        threads = [f"up-{i}" for i in range(5)]
        graph = chain_graph(saver, nodes=3)
        for thread in threads:
            graph.invoke({"n": 0}, thread_config(thread))
        assert downgrade_to_v1(client, prefix) > 0
        assert client.zcard(f"{prefix}:v1:dirty") == len(threads)
        with pytest.raises(LegacyKeysError, match="migrate-redis"):
            saver.setup()
        assert main(["--redis-url", redis_url, "--key-prefix", prefix, "migrate-redis"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["outbox_entries"] == len(threads) and report["registry_entries"] == len(threads)
        assert report["thread_keys"] > 0 and report["dropped"] >= 1
        assert not list(client.scan_iter(match=f"{prefix}:v1:*"))
        saver.setup()  # nothing of v1 is left
        for thread in threads:
            assert saver.get_tuple(thread_config(thread)).checkpoint["channel_values"]["n"] == 3
        assert sorted(saver.run_op(saver.core.hot.list_threads_op(TEST_TENANT))) == sorted(threads)
        results = saver.flush()
        assert {r.thread_id for r in results if r.checkpoints} == set(threads)
        assert pg_rows(test_database_url, saver.schema) == sum(len(list(saver.list(thread_config(t)))) for t in threads)
    client.close()
