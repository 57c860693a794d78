"""Redis Cluster: the saver on a local 3-master cluster, sync and async.

The cluster is started on private ports by the `redis_cluster` fixture (tests/fixtures.py) and
stopped by PID; the tests skip, saying why, where redis-server or redis-cli is missing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis
import redis.asyncio.cluster
import redis.cluster
from redis.crc import key_slot

from devtools.servers import PrivateRedisCluster
from langgraph_tiered_saver import TieredSaver
from langgraph_tiered_saver._sansio.io import RedisCall, SyncDriver
from langgraph_tiered_saver.errors import ConfigError
from langgraph_tiered_saver.hot import keys as K
from tests.fixtures import private_cluster_or_skip
from tests.graphs import build_graph, chain_graph, comparable, initial_input, resume
from tests.helpers import TEST_TENANT, pg_rows, thread_config
from tests.servers.test_conformance import SyncAdapter, _run_suite, _SetUp

# ----------------------------------------------------------------------------- one slot per call


def _keys_of(command: tuple[Any, ...]) -> list[str]:
    """The keys a command names: EVALSHA's declared KEYS, else its first argument."""
    name = str(command[0]).upper()
    if name in ("EVALSHA", "EVAL"):
        return [str(k) for k in command[3 : 3 + int(command[2])]]
    if name in ("TIME", "CONFIG", "PING", "WAIT", "WAITAOF", "SCRIPT"):
        return []
    if name == "DEL":
        return [str(k) for k in command[1:]]
    return [str(command[1])]


def test_every_script_and_transaction_touches_one_slot(
    saver_context: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every EVALSHA (and every MULTI/EXEC) the saver sends names keys of one slot: run every
    operation (graph with interrupt, list, flush, copy, runs, prune, delete, locks, registry
    check) on a single Redis and check each recorded call with redis-py's key_slot."""
    calls: list[RedisCall] = []
    original = SyncDriver._redis_once

    def record(self: SyncDriver, call: RedisCall) -> Any:
        calls.append(call)
        return original(self, call)

    monkeypatch.setattr(SyncDriver, "_redis_once", record)
    with saver_context(durable=True, background_flush=False, offload_threshold=1024, blob_store="postgres") as saver:
        saver.setup()
        graph = build_graph(saver)
        cfg = thread_config(f"slots-{uuid.uuid4().hex[:6]}")
        graph.invoke(initial_input(), cfg)
        graph.invoke({"messages": [], "log": ["x" * 4000]}, cfg)  # an offloaded blob (tracked in a MULTI)
        list(saver.list(cfg))
        saver.flush()
        saver.copy_thread(cfg["configurable"]["thread_id"], "slots-copy")
        saver.delete_for_runs(["no-such-run"])
        saver.prune([cfg["configurable"]["thread_id"]])
        with saver.thread_lock(thread_config("slots-locked")):
            pass
        saver.run_op(saver.core.hot.watch.check_op())
        saver.delete_thread("slots-copy")
        saver.get_tuple(thread_config("slots-never-written"))
    scripts = transactions = 0
    for call in calls:
        for command in call.commands:
            if str(command[0]).upper() == "EVALSHA":
                scripts += 1
                slots = {key_slot(k.encode()) for k in _keys_of(command)}
                assert len(slots) == 1, command[:3 + int(command[2])]
        if call.transaction:
            transactions += 1
            slots = {key_slot(k.encode()) for command in call.commands for k in _keys_of(command)}
            assert len(slots) == 1, call.commands
    assert scripts > 20 and transactions > 0
    tracked = [c for call in calls if call.transaction for c in call.commands if c[0] == "SADD"]
    assert tracked  # an offloaded blob's reference rode in a put's MULTI, in the thread's slot


# ----------------------------------------------------------------------------- clients and options


def test_cluster_clients_are_accepted_and_their_twins_built(redis_cluster: PrivateRedisCluster) -> None:
    port = redis_cluster.nodes[0].port
    client = redis.cluster.RedisCluster(host="127.0.0.1", port=port)
    saver = TieredSaver(client, tenant_id=TEST_TENANT, key_prefix=f"ltscl-{uuid.uuid4().hex[:6]}")
    try:
        cfg = thread_config("twin")
        graph = chain_graph(saver, nodes=2)
        graph.invoke({"n": 0}, cfg)
        assert saver.get_tuple(cfg) is not None
        twin = asyncio.run(_aget(saver, cfg))  # the asyncio twin, built from the sync client
        assert twin is not None and twin.checkpoint["id"] == saver.get_tuple(cfg).checkpoint["id"]
        assert isinstance(saver._conn.aredis, redis.asyncio.cluster.RedisCluster)
    finally:
        saver.close()
        client.close()
    with pytest.raises(ConfigError, match="not supported on Redis Cluster"):
        TieredSaver(redis.cluster.RedisCluster(host="127.0.0.1", port=port), hot_durability="aof")
    with pytest.raises(ConfigError, match="decode_responses"):
        TieredSaver(redis.cluster.RedisCluster(host="127.0.0.1", port=port, decode_responses=True))


def test_a_redis_py_without_cluster_transactions_is_refused(
    redis_cluster: PrivateRedisCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis-py < 6.1 has no MULTI/EXEC in cluster pipelines: refused, not run without atomicity."""
    monkeypatch.setattr("langgraph_tiered_saver._core.connections.cluster_transactions_supported", lambda client: False)
    client = redis.cluster.RedisCluster(host="127.0.0.1", port=redis_cluster.nodes[0].port)
    try:
        with pytest.raises(ConfigError, match=r"redis-py >= 6\.1"):
            TieredSaver(client)
    finally:
        client.close()


def test_a_plain_url_at_a_cluster_node_says_to_use_a_cluster_client(redis_cluster: PrivateRedisCluster) -> None:
    """Before: a raw MovedError. Now a ConfigError naming the cluster URL and option."""
    url = f"redis://127.0.0.1:{redis_cluster.nodes[0].port}"
    context = TieredSaver.from_conn_string(url, tenant_id=TEST_TENANT, key_prefix="ltscl-plain")
    with context as saver, pytest.raises(ConfigError, match=r"redis\+cluster://"):
        for i in range(16):  # some thread's shard lives on another node
            chain_graph(saver, nodes=1).invoke({"n": 0}, thread_config(f"plain-{i}"))


async def _aget(saver: TieredSaver, cfg: dict[str, Any]) -> Any:
    return await saver.aget_tuple(cfg)


def test_from_conn_string_takes_a_cluster_option(redis_cluster: PrivateRedisCluster) -> None:
    url = f"redis://127.0.0.1:{redis_cluster.nodes[1].port}"
    with TieredSaver.from_conn_string(url, redis_cluster=True, tenant_id=TEST_TENANT, key_prefix="ltscl-opt") as saver:
        assert isinstance(saver._conn.redis, redis.cluster.RedisCluster)
        chain_graph(saver, nodes=2).invoke({"n": 0}, thread_config("opt"))
        assert saver.get_tuple(thread_config("opt")) is not None


# ----------------------------------------------------------------------------- conformance


@pytest.mark.parametrize("api", ["async", "sync"])
async def test_conformance_on_the_cluster(api: str, cluster_saver_context: Callable[..., Any]) -> None:
    """The LangGraph conformance suite (81 tests, 8 capabilities) with Redis Cluster + Postgres."""
    cls = TieredSaver if api == "async" else SyncAdapter
    await _run_suite(f"TieredSaver[{api},cluster]", lambda: _SetUp(cluster_saver_context(cls=cls, durable=True)))


# ----------------------------------------------------------------------------- group flushes


def test_a_group_flush_spans_the_slots_of_its_threads(
    cluster_saver_context: Callable[..., Any], redis_cluster: PrivateRedisCluster, test_database_url: str
) -> None:
    """The background flusher's group reads and acknowledges threads of several slots (and
    nodes) in one pipeline each, no MULTI; with every node's script cache emptied first, the
    NOSCRIPT retry loads the scripts on every node."""
    with cluster_saver_context(durable=True, background_flush=False, tenant_id=None) as saver:
        saver.setup()
        keys = [(f"tenant-{i % 3}", f"group-{i}-{uuid.uuid4().hex[:6]}") for i in range(9)]
        graph = chain_graph(saver, nodes=1)
        for tenant, thread in keys:
            graph.invoke({"n": 0}, thread_config(thread, tenant_id=tenant))
        for node in redis_cluster.nodes:
            redis.Redis(port=node.port).script_flush()
        results = saver.run_op(saver.core.flush.flush_group_op(keys))
        assert [(r.tenant_id, r.thread_id, r.checkpoints, r.remaining) for r in results] == [(*k, 3, 0) for k in keys]
        assert all(pg_rows(test_database_url, saver.schema, thread) == 3 for _, thread in keys)


# ----------------------------------------------------------------------------- wipe and restore


def test_a_graph_survives_a_wipe_of_every_node_from_postgres(
    cluster_saver_context: Callable[..., Any], redis_cluster: PrivateRedisCluster, test_database_url: str
) -> None:
    """Run to the interrupt, flush, FLUSHALL every node: the thread comes back from Postgres
    and resumes to the end."""
    with cluster_saver_context(durable=True, background_flush=False) as saver:
        saver.setup()
        graph = build_graph(saver)
        cfg = thread_config(f"wipe-{uuid.uuid4().hex[:6]}")
        first = graph.invoke(initial_input(), cfg)
        assert "__interrupt__" in first
        paused = comparable(graph.get_state(cfg).values)
        saver.flush()
        assert pg_rows(test_database_url, saver.schema, cfg["configurable"]["thread_id"]) > 0
        redis_cluster.flushall()
        assert comparable(graph.get_state(cfg).values) == paused  # from Postgres
        final = graph.invoke(resume("yes"), cfg)
        assert final["decision"] == "yes"
        assert len(list(graph.get_state_history(cfg))) > 3


async def test_a_graph_survives_a_wipe_of_every_node_from_postgres_async(
    cluster_saver_context: Callable[..., Any], redis_cluster: PrivateRedisCluster
) -> None:
    async with cluster_saver_context(durable=True, background_flush=False) as saver:
        await saver.asetup()
        graph = build_graph(saver)
        cfg = thread_config(f"awipe-{uuid.uuid4().hex[:6]}")
        first = await graph.ainvoke(initial_input(), cfg)
        assert "__interrupt__" in first
        paused = comparable((await graph.aget_state(cfg)).values)
        await saver.aflush()
        redis_cluster.flushall()
        assert comparable((await graph.aget_state(cfg)).values) == paused
        final = await graph.ainvoke(resume("yes"), cfg)
        assert final["decision"] == "yes"


def _node_port(cluster: PrivateRedisCluster, key: str) -> int:
    client = redis.cluster.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
    try:
        return int(client.get_node_from_key(key).port)
    finally:
        client.close()


def test_a_wiped_node_is_reported_even_when_a_new_process_opens_first(
    cluster_saver_context: Callable[..., Any], redis_cluster: PrivateRedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """One node loses its data (FLUSHALL: a restart without persistence) while the node holding
    the deployment's epoch keeps it. A process that starts then, before anyone writes to the
    wiped node, learns the epoch: it must not put the wiped shards' copies back as if nothing
    happened, or no write there ever sees the loss and it is never said."""
    prefix = f"ltscl-{uuid.uuid4().hex[:10]}"
    epoch_port = _node_port(redis_cluster, K.epoch_key(prefix))
    thread = next(
        t for t in (f"wiped-{i}" for i in range(1000))
        if _node_port(redis_cluster, K.thread_prefix(prefix, TEST_TENANT, t)) != epoch_port
    )  # fmt: skip
    cfg = thread_config(thread)
    caplog.set_level(logging.ERROR, logger="langgraph_tiered_saver")
    with cluster_saver_context(key_prefix=prefix) as first:
        graph = chain_graph(first, nodes=2)
        graph.invoke({"n": 0}, cfg)
        wiped = redis.Redis(port=_node_port(redis_cluster, K.thread_prefix(prefix, TEST_TENANT, thread)))
        try:
            wiped.flushall()
        finally:
            wiped.close()
        with cluster_saver_context(key_prefix=prefix) as second:
            assert second.get_tuple(thread_config("another-thread")) is None  # its first read learns the epoch
            graph.invoke({"n": 0}, cfg)  # the first process writes to the wiped shard
            reports = first.metrics.counter("redis_data_lost") + second.metrics.counter("redis_data_lost")
    assert reports >= 1
    assert [r for r in caplog.records if "Redis lost data" in r.getMessage()]


# ----------------------------------------------------------------------------- resharding

RESHARD_SLOTS = 1500
NODES = 6


def _reshard_back_and_forth(cluster: PrivateRedisCluster, done: threading.Event, figures: dict[str, float]) -> None:
    try:
        start = time.monotonic()
        cluster.reshard(0, 1, RESHARD_SLOTS)
        cluster.reshard(1, 2, RESHARD_SLOTS)
        cluster.reshard(2, 0, RESHARD_SLOTS)
        figures["seconds"] = time.monotonic() - start
    finally:
        done.set()


def test_a_reshard_while_graphs_run_loses_nothing(
    cluster_saver_context: Callable[..., Any], redis_cluster: PrivateRedisCluster, test_database_url: str
) -> None:
    """Move slots (with their keys) between nodes three times while graphs run on 4 threads:
    redis-py follows MOVED/ASK; no error reaches a graph, every run ends whole, and the flush
    carries every thread to Postgres."""
    done, figures, errors = threading.Event(), {}, []
    runs: dict[str, int] = {}
    with cluster_saver_context(durable=True, background_flush=False) as saver:
        saver.setup()
        graph = chain_graph(saver, nodes=NODES)

        def worker(w: int) -> None:
            i = 0
            while not done.is_set() or i < 3:
                thread = f"reshard-{w}-{i}"
                try:
                    out = graph.invoke({"n": 0}, thread_config(thread))
                    runs[thread] = out["n"]
                except Exception as exc:
                    errors.append(f"{thread}: {type(exc).__name__}: {exc}")
                i += 1

        resharder = threading.Thread(target=_reshard_back_and_forth, args=(redis_cluster, done, figures))
        workers = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
        for t in (resharder, *workers):
            t.start()
        for t in (resharder, *workers):
            t.join(timeout=600)
        assert not errors, errors[:5]
        assert runs and set(runs.values()) == {NODES}
        for thread in runs:
            assert saver.get_tuple(thread_config(thread)).checkpoint["channel_values"]["n"] == NODES
        saver.flush()
        assert pg_rows(test_database_url, saver.schema) == sum(len(list(saver.list(thread_config(t)))) for t in runs)
        print(f"\nreshard (sync): {len(runs)} runs of {NODES} nodes during {3 * RESHARD_SLOTS} slot moves "
              f"in {figures.get('seconds', 0):.1f} s, 0 errors")  # fmt: skip


async def test_a_reshard_while_async_graphs_run_loses_nothing(
    cluster_saver_context: Callable[..., Any], redis_cluster: PrivateRedisCluster, test_database_url: str
) -> None:
    done, figures, errors = threading.Event(), {}, []
    runs: dict[str, int] = {}
    async with cluster_saver_context(durable=True, background_flush=False) as saver:
        await saver.asetup()
        graph = chain_graph(saver, nodes=NODES)

        async def worker(w: int) -> None:
            i = 0
            while not done.is_set() or i < 3:
                thread = f"areshard-{w}-{i}"
                try:
                    out = await graph.ainvoke({"n": 0}, thread_config(thread))
                    runs[thread] = out["n"]
                except Exception as exc:
                    errors.append(f"{thread}: {type(exc).__name__}: {exc}")
                i += 1

        resharder = asyncio.create_task(asyncio.to_thread(_reshard_back_and_forth, redis_cluster, done, figures))
        await asyncio.gather(resharder, *(worker(w) for w in range(4)))
        assert not errors, errors[:5]
        assert runs and set(runs.values()) == {NODES}
        for thread in runs:
            stored = await saver.aget_tuple(thread_config(thread))
            assert stored.checkpoint["channel_values"]["n"] == NODES
        await saver.aflush()
        listed = 0
        for thread in runs:
            listed += len([c async for c in saver.alist(thread_config(thread))])
        assert pg_rows(test_database_url, saver.schema) == listed
        print(f"\nreshard (async): {len(runs)} runs of {NODES} nodes during {3 * RESHARD_SLOTS} slot moves "
              f"in {figures.get('seconds', 0):.1f} s, 0 errors")  # fmt: skip


# ----------------------------------------------------------------------------- a node down


def test_a_node_down_is_tier_unavailable_sync_and_async() -> None:
    """A master killed (no replica to fail over to): calls whose slot it served raise
    TierUnavailableError, the saver's "Redis is down" error, sync and async; never a raw
    redis-py cluster exception. An own cluster: this one is broken on purpose."""
    from langgraph_tiered_saver.errors import TierUnavailableError

    cluster = private_cluster_or_skip()
    try:
        cluster.start()
        client = redis.cluster.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
        saver = TieredSaver(client, tenant_id=TEST_TENANT, key_prefix="ltscl-down")
        graph = chain_graph(saver, nodes=2)
        graph.invoke({"n": 0}, thread_config("before"))
        cluster.nodes[2].kill()
        with pytest.raises(TierUnavailableError):
            for i in range(64):  # some thread's shard lives on the dead node
                graph.invoke({"n": 0}, thread_config(f"down-{i}"))

        async def async_side() -> None:
            with pytest.raises(TierUnavailableError):
                for i in range(64):
                    await graph.ainvoke({"n": 0}, thread_config(f"adown-{i}"))

        asyncio.run(async_side())
        saver.close()
        client.close()
    finally:
        cluster.close()
