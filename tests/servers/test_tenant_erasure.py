"""A tenant can be erased from every tier (`delete_tenant`, `adelete_tenant`, the CLI's
`delete-tenant`): afterwards no Redis key and no Postgres row of it remains, in any table, and
other tenants are untouched. There was no way to remove a tenant before."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any, TypedDict

import psycopg
import redis
from langgraph.graph import END, START, StateGraph

from langgraph_tiered_saver._core.erasure import tenant_key_owner
from langgraph_tiered_saver.flushing.ops import FlushPolicy
from langgraph_tiered_saver.hot import keys as K
from tests.helpers import QUIET_OFF, thread_config

BIG = "x" * 5000  # over the offload threshold below: a blob in the blob store


class S(TypedDict, total=False):
    data: str


def _graph(saver: Any) -> Any:
    g = StateGraph(S)
    g.add_node("big", lambda s: {"data": BIG + s.get("data", "")[:10]})
    g.add_node("small", lambda s: {"data": "small"})
    g.add_edge(START, "big")
    g.add_edge("big", "small")
    g.add_edge("small", END)
    return g.compile(checkpointer=saver)


def _keys_of(redis_url: str, prefix: str, tenant: str) -> list[str]:
    client = redis.Redis.from_url(redis_url)
    try:
        keys = [k.decode() for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
    finally:
        client.close()
    encoded = K.encode_id(tenant)
    return sorted(k for k in keys if tenant_key_owner(prefix, tenant, k) or f"{encoded}|" in k)


def _rows_of(url: str, schema: str, tenant: str) -> dict[str, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.columns WHERE table_schema = %s AND column_name = 'tenant_id'",
            (schema,),
        ).fetchall()]  # fmt: skip
        return {t: conn.execute(f'SELECT count(*) FROM "{schema}"."{t}" WHERE tenant_id = %s', (tenant,)).fetchone()[0]  # type: ignore[index]
                for t in tables}  # fmt: skip


def _write(graph: Any, tenant: str, n: int) -> list[dict[str, Any]]:
    configs = [thread_config(tenant_id=tenant) for _ in range(n)]
    for cfg in configs:
        graph.invoke({"data": ""}, cfg)
    return configs


def test_delete_tenant_erases_it_everywhere_and_spares_the_others(
    saver_context: Callable[..., Any], redis_url: str, test_database_url: str
) -> None:
    tenant, other = "acme", "acme:eu"  # a prefix of the other's id: a glob alone would take both
    with saver_context(durable=True, tenant_id=None, offload_threshold=1000, background_flush=False,
                       flush_policy=FlushPolicy(**QUIET_OFF)) as saver:  # fmt: skip
        saver.setup()
        graph = _graph(saver)
        # what the tenant leaves after deleting its threads one by one (the old way out)
        for cfg in _write(graph, tenant, 2):
            saver.flush(cfg)
            saver.for_tenant(tenant).delete_thread(cfg["configurable"]["thread_id"])
        leftover = _keys_of(redis_url, saver.key_prefix, tenant)
        print(f"\nRedis keys of a tenant after all its threads were deleted: {len(leftover)}")
        assert leftover == []  # 256 registry marks without a TTL, before

        flushed = _write(graph, tenant, 3)
        for cfg in flushed:
            saver.flush(cfg)
        _write(graph, tenant, 2)  # only in Redis and the outbox
        theirs = _write(graph, other, 2)
        saver.flush(theirs[0])
        assert any(_rows_of(test_database_url, saver.schema, tenant).values())
        other_keys = _keys_of(redis_url, saver.key_prefix, other)
        other_rows = _rows_of(test_database_url, saver.schema, other)
        assert other_rows["blob_chunks"] > 0  # the other tenant's blobs are in the store too

        erased = saver.delete_tenant(tenant)
        assert erased.threads == 5

        assert _keys_of(redis_url, saver.key_prefix, tenant) == []
        assert set(_rows_of(test_database_url, saver.schema, tenant).values()) == {0}
        outbox = saver.run_op(saver.core.flush.dirty_threads_op())
        assert [key for key in outbox if key[0] == tenant] == []
        # the other tenant: every key, row and checkpoint as before
        assert _keys_of(redis_url, saver.key_prefix, other) == other_keys
        assert _rows_of(test_database_url, saver.schema, other) == other_rows
        for cfg in theirs:  # readable, offloaded value included
            assert graph.get_state(cfg).values["data"] == "small"
            assert any(s.values.get("data", "").startswith(BIG) for s in graph.get_state_history(cfg))


async def test_adelete_tenant_and_the_cli(saver_context: Callable[..., Any], redis_url: str, test_database_url: str) -> None:
    tenant = "globex"
    async with saver_context(durable=True, tenant_id=None, offload_threshold=1000) as saver:
        await saver.asetup()
        graph = _graph(saver)
        for _ in range(2):
            await graph.ainvoke({"data": ""}, thread_config(tenant_id=tenant))
        await saver.aflush()
        erased = await saver.adelete_tenant(tenant)
        assert erased.threads == 2 and _keys_of(redis_url, saver.key_prefix, tenant) == []
        assert set(_rows_of(test_database_url, saver.schema, tenant).values()) == {0}

        await graph.ainvoke({"data": ""}, thread_config(tenant_id=tenant))
        await saver.aflush()
        base = [sys.executable, "-m", "langgraph_tiered_saver", "--redis-url", redis_url, "--postgres-url",
                test_database_url, "--key-prefix", saver.key_prefix, "--schema", saver.schema, "--tenant", tenant]  # fmt: skip
        refused = subprocess.run([*base, "delete-tenant"], capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2 and "--yes" in refused.stderr  # irreversible: asks for --yes
        done = subprocess.run([*base, "delete-tenant", "--yes"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["threads"] == 1
        assert _keys_of(redis_url, saver.key_prefix, tenant) == []
        assert set(_rows_of(test_database_url, saver.schema, tenant).values()) == {0}
