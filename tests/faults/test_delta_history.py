"""`get_delta_channel_history` across the tiers (delta.py): DeltaChannel graphs give the same
state and history as on PostgresSaver, hot, after a Redis wipe restored from Postgres, and
with Redis holding only part of the chain; the call costs one Redis round trip for a hot
thread and one more (Postgres) where the chain leaves Redis; every failure branch raises or
falls back as the contract says."""

from __future__ import annotations

import contextlib
import gc
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypedDict

import psycopg
import pytest
import redis
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.channels.delta import DeltaChannel
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph

from devtools.servers import PrivatePostgres, PrivateRedis, delete_keys
from langgraph_tiered_saver import TieredSaver
from langgraph_tiered_saver._core.delta import delta_history_op
from langgraph_tiered_saver._sansio.io import Op
from langgraph_tiered_saver.errors import ConfigError, CorruptDataError, TierUnavailableError
from langgraph_tiered_saver.flushing.ops import FlushPolicy
from langgraph_tiered_saver.hot import keys as K
from tests.graphs import Flaky, add_messages_batch, build_graph, comparable, initial_input, resume
from tests.helpers import QUIET_OFF, TEST_TENANT, collector_spy, new_prefix, thread_config

NO_AUTO_FLUSH = FlushPolicy(**QUIET_OFF)
CHANNELS = ["history", "messages", "log"]


class Chat(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], DeltaChannel(add_messages_batch, snapshot_frequency=4)]


def chat_graph(checkpointer: Any, state: Any = Chat) -> Any:
    """The 2-node chat of the benchmark's DeltaChannel workload: user turn in, model, tool."""
    g = StateGraph(state)
    g.add_node("model", lambda s: {"messages": [AIMessage(content=f"answer {len(s['messages'])}", id=f"m-{len(s['messages'])}")]})
    g.add_node("tool", lambda s: {"messages": [AIMessage(content="tool ok", id=f"t-{len(s['messages'])}")]})
    g.add_edge(START, "model")
    g.add_edge("model", "tool")
    g.add_edge("tool", END)
    return g.compile(checkpointer=checkpointer)


def chat(saver: Any, cfg: dict[str, Any], turns: int) -> None:
    """`turns` turns of the chat graph on `saver`, on the thread `cfg` names."""
    graph = chat_graph(saver)
    for i in range(turns):
        graph.invoke(turn(i), cfg)


def turn(i: int) -> dict[str, Any]:
    return {"messages": [HumanMessage(content=f"question {i}", id=f"u-{i}")]}


def plain(history: Any) -> dict[str, Any]:
    """A DeltaChannelHistory mapping in a form that compares across savers."""

    def value(v: Any) -> Any:
        if isinstance(v, list):
            return [value(x) for x in v]
        if hasattr(v, "content") and hasattr(v, "id"):
            return (v.id, v.type, v.content)
        if hasattr(v, "value") and type(v).__name__ == "_DeltaSnapshot":
            return ("snapshot", value(v.value))
        return v

    return {
        ch: {"writes": [(w[1], value(w[2])) for w in entry["writes"]], **({"seed": value(entry["seed"])} if "seed" in entry else {})}
        for ch, entry in history.items()
    }


def histories(saver: Any, cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """The delta history of every checkpoint of the thread (all namespaces), newest first."""
    out = []
    for t in list(saver.list(cfg)):  # PostgresSaver.list holds its lock while iterating
        out.append(plain(saver.get_delta_channel_history(config=t.config, channels=CHANNELS)))
    return out


def base_walk(saver: Any, config: dict[str, Any], channels: list[str]) -> dict[str, Any]:
    """The base class' walk (one get_tuple per ancestor): the reference result."""
    return plain(BaseCheckpointSaver.get_delta_channel_history(saver, config=config, channels=channels))


def counting(op: Op[Any], counts: Counter[str]) -> Op[Any]:
    """`op` unchanged, its requests counted by kind (RedisCall, PgCall, ...)."""
    try:
        request = op.send(None)
        while True:
            counts[type(request).__name__] += 1
            try:
                result = yield request
            except BaseException as exc:
                request = op.throw(exc)
            else:
                request = op.send(result)
    except StopIteration as stop:
        return stop.value


def counted_history(saver: TieredSaver, config: dict[str, Any], channels: list[str]) -> tuple[dict[str, Any], Counter[str]]:
    counts: Counter[str] = Counter()
    result = saver.run_op(counting(delta_history_op(saver.core, saver._ref(config), channels), counts))
    return plain(result), counts


def scenario(graph: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    """Interrupt, update_state, resume, time travel (a fork), subgraph: see test_graphs."""
    out: dict[str, Any] = {}
    graph.invoke(initial_input(), cfg)
    graph.update_state(cfg, {"log": ["manual-note"]})
    out["final"] = comparable(graph.invoke(resume("yes"), cfg))
    history = list(graph.get_state_history(cfg))
    before_review = next(s for s in history if s.next == ("review",) and "manual-note" not in s.values["log"])
    out["replayed"] = comparable(graph.invoke(resume("no"), before_review.config))
    out["history"] = [(s.next, comparable(s.values), s.metadata.get("step")) for s in graph.get_state_history(cfg)]
    out["state"] = comparable(graph.get_state(cfg, subgraphs=True).values)
    return out


def more(graph: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    """After a wipe: fork again from before the review, and read everything back."""
    history = list(graph.get_state_history(cfg))
    before_review = [s for s in history if s.next == ("review",)][-1]
    out = {"again": comparable(graph.invoke(resume("later"), before_review.config))}
    out["history"] = [(s.next, comparable(s.values), s.metadata.get("step")) for s in graph.get_state_history(cfg)]
    return out


@pytest.fixture
def postgres_saver(test_database_url: str) -> Iterator[Any]:
    from langgraph.checkpoint.postgres import PostgresSaver

    with PostgresSaver.from_conn_string(test_database_url) as official:
        official.setup()
        yield official


def test_delta_graph_matches_postgres_saver_hot_and_after_a_redis_wipe(
    saver_context: Callable[..., Any], postgres_saver: Any, redis_url: str
) -> None:
    thread = f"t-{uuid.uuid4().hex[:8]}"
    cfg = thread_config(thread)
    expected = scenario(build_graph(postgres_saver, flaky=Flaky(1)), cfg)
    expected_histories = histories(postgres_saver, cfg)
    with saver_context(durable=True, flush_policy=NO_AUTO_FLUSH) as saver:
        saver.setup()
        graph = build_graph(saver, flaky=Flaky(1))
        assert scenario(graph, cfg) == expected
        assert histories(saver, cfg) == expected_histories
        assert any(h["history"].get("seed") for h in expected_histories)  # snapshots on the path
        saver.flush()
        delete_keys(redis_url, f"{saver.key_prefix}:*")  # Redis wiped: Postgres restores all of it
        assert histories(saver, cfg) == expected_histories
        assert more(graph, cfg) == more(build_graph(postgres_saver, flaky=Flaky(1)), cfg)
        assert histories(saver, cfg) == histories(postgres_saver, cfg)


async def test_delta_graph_async_matches_postgres_saver(saver_context: Callable[..., Any], postgres_saver: Any) -> None:
    cfg = thread_config()
    chat = chat_graph(postgres_saver)
    for i in range(9):
        chat.invoke(turn(i), cfg)
    expected = [plain(postgres_saver.get_delta_channel_history(config=t.config, channels=["messages"])) for t in list(postgres_saver.list(cfg))]
    async with saver_context(durable=True) as saver:
        await saver.asetup()
        graph = chat_graph(saver)
        for i in range(9):
            await graph.ainvoke(turn(i), cfg)
        tuples = [t async for t in saver.alist(cfg)]
        actual = [plain(await saver.aget_delta_channel_history(config=t.config, channels=["messages"])) for t in tuples]
        assert [len(s.values["messages"]) async for s in graph.aget_state_history(cfg)] == [
            len(s.values["messages"]) for s in chat.get_state_history(cfg)
        ]
    assert actual == expected


def test_hot_thread_is_one_redis_round_trip_and_a_partial_one_adds_one_postgres(
    saver_context: Callable[..., Any], redis_url: str
) -> None:
    cfg = thread_config()
    with saver_context(durable=True, flush_policy=NO_AUTO_FLUSH) as saver:
        saver.setup()
        chat(saver, cfg, 12)
        latest = saver.get_tuple(cfg)
        assert latest is not None
        expected = base_walk(saver, latest.config, ["messages"])
        assert expected["messages"]["writes"] and "seed" in expected["messages"]
        hot, counts = counted_history(saver, latest.config, ["messages"])
        assert hot == expected
        assert counts == Counter({"RedisCall": 1})
        # the whole thread: every checkpoint's walk in one Redis round trip
        for t in saver.list(cfg):
            assert counted_history(saver, t.config, ["messages"]) == (base_walk(saver, t.config, ["messages"]), Counter({"RedisCall": 1}))
        saver.flush()
        delete_keys(redis_url, f"{saver.key_prefix}:*")
        cold, counts = counted_history(saver, latest.config, ["messages"])  # all in Postgres
        assert cold == expected and counts["PgCall"] == 1
        saver.get_tuple(cfg)  # re-warms the latest checkpoint only: the chain leaves Redis at its parent
        partial, counts = counted_history(saver, latest.config, ["messages"])
        assert partial == expected
        assert counts["RedisCall"] == 1 and counts["PgCall"] == 1


def test_a_seed_read_again_is_a_copy_without_blob_fetch_or_decode(saver_context: Callable[..., Any]) -> None:
    """Each turn reads the same seed: the second read takes a copy from `core.decoded` (no blob
    store call, no deserialization), equal to the base walk and independent of the first; the
    tenant's erasure forgets it."""
    cfg = thread_config()
    with saver_context(durable=True, flush_policy=NO_AUTO_FLUSH, blob_store="postgres", offload_threshold=600) as saver:
        saver.setup()
        chat(saver, cfg, 6)
        saver.flush()  # the snapshot is offloaded: Redis keeps a pointer to the blob store
        latest = saver.get_tuple(cfg)
        assert latest is not None
        expected = base_walk(saver, latest.config, ["messages"])
        assert "seed" in expected["messages"]
        saver.core.decoded.forget_tenant(TEST_TENANT)
        first, counts = counted_history(saver, latest.config, ["messages"])
        assert first == expected and counts["RedisCall"] == 1 and sum(counts.values()) > 1  # the blob fetched
        again, counts = counted_history(saver, latest.config, ["messages"])
        assert again == expected and counts == Counter({"RedisCall": 1})
        one = saver.get_delta_channel_history(config=latest.config, channels=["messages"])
        one["messages"]["seed"].value[0].content = "changed"
        one["messages"]["seed"].value.clear()
        two = saver.get_delta_channel_history(config=latest.config, channels=["messages"])
        assert plain(two) == expected
        assert len(saver.core.decoded) >= 1  # the seed, and the writes read again
        saver.delete_tenant(TEST_TENANT)
        assert len(saver.core.decoded) == 0


def test_values_are_made_with_the_collector_held_and_the_blob_fetch_is_not(saver_context: Callable[..., Any]) -> None:
    """The history's seed and writes are decoded with the cyclic collector held off (a long
    conversation's messages are many long-lived objects: records/collection.py); fetching an
    offloaded seed from the blob store (I/O) is not held, and the collector is on again when
    the call returns."""
    serde, collecting = collector_spy()
    cfg = thread_config()
    assert gc.isenabled()
    with saver_context(
        durable=True, flush_policy=NO_AUTO_FLUSH, blob_store="postgres", offload_threshold=600, serde=serde
    ) as saver:
        saver.setup()
        chat(saver, cfg, 6)
        saver.flush()  # the snapshot is offloaded: its read fetches the blob store
        latest = saver.get_tuple(cfg)
        assert latest is not None
        saver.core.decoded.forget_tenant(TEST_TENANT)
        fetching: list[bool] = []
        load_op = saver.core.offload.resolve_op

        def spied_resolve(tenant: str, typed: Any) -> Op[Any]:
            fetching.append(gc.isenabled())
            return (yield from load_op(tenant, typed))

        saver.core.offload.resolve_op = spied_resolve  # type: ignore[method-assign]
        collecting.clear()
        history = saver.get_delta_channel_history(config=latest.config, channels=["messages"])
        assert "seed" in history["messages"] and history["messages"]["writes"]
        assert collecting and not any(collecting)
        assert fetching and all(fetching)
        assert gc.isenabled()


def test_evicted_value_or_writes_in_redis_are_read_from_postgres(
    saver_context: Callable[..., Any], redis_url: str
) -> None:
    cfg = thread_config()
    with saver_context(durable=True, flush_policy=NO_AUTO_FLUSH) as saver:
        saver.setup()
        chat(saver, cfg, 6)
        latest = saver.get_tuple(cfg)
        assert latest is not None
        expected = base_walk(saver, latest.config, ["messages"])
        saver.flush()
        client = redis.Redis.from_url(redis_url)
        bl = next(k for k in client.scan_iter(match=f"{saver.key_prefix}:*:bl"))
        wi = next(k for k in client.scan_iter(match=f"{saver.key_prefix}:*:wi"))
        client.delete(bl)  # an LRU eviction took the thread's values
        got, counts = counted_history(saver, latest.config, ["messages"])
        assert got == expected and counts["PgCall"] == 1
        client.delete(wi)  # ... and its write index
        got, counts = counted_history(saver, latest.config, ["messages"])
        assert got == expected and counts["PgCall"] == 1
        client.close()


def test_one_write_evicted_mid_chain_hands_that_ancestor_and_beyond_to_postgres(
    saver_context: Callable[..., Any], redis_url: str
) -> None:
    """The script reads the writes of the whole chain at once: a write missing from one
    ancestor ends the Redis part there (the newer ancestors' writes and seeds stand), and
    Postgres answers for it and what lies beyond."""
    cfg = thread_config()
    with saver_context(durable=True, flush_policy=NO_AUTO_FLUSH) as saver:
        saver.setup()
        chat(saver, cfg, 7)
        tuples = list(saver.list(cfg))
        expected = [base_walk(saver, t.config, ["messages"]) for t in tuples]
        saver.flush()
        client = redis.Redis.from_url(redis_url)
        wr = next(k for k in client.scan_iter(match=f"{saver.key_prefix}:*:wr"))
        fields = client.hkeys(wr)
        # the nearest ancestor of the latest checkpoint that has writes: on the latest's walk
        evicted = next(f for t in tuples[1:] for f in fields if f.split(b"\x00")[1] == t.checkpoint["id"].encode())
        client.hdel(wr, evicted)
        client.close()
        for t, want in zip(tuples, expected, strict=True):
            assert counted_history(saver, t.config, ["messages"])[0] == want
        assert counted_history(saver, tuples[0].config, ["messages"])[1] == Counter({"RedisCall": 1, "PgCall": 1})


def test_ids_that_do_not_sort_by_age_and_forks_off_the_path(saver_context: Callable[..., Any]) -> None:
    """Checkpoint ids need not sort in the order of the chain (the script's range read of the
    writes then misses some ancestors, read on their own), and a fork's writes stay out."""
    from langgraph.checkpoint.base import empty_checkpoint

    cfg = thread_config()
    with saver_context() as saver:
        parent: str | None = None
        chain = ["c5", "c1", "c9", "c3", "c7"]  # root first
        for n, cid in enumerate([*chain, "c8"]):
            if cid == "c8":
                parent = "c1"  # a fork off the chain, between c1 and c9 by id
            checkpoint = {**empty_checkpoint(), "id": cid, "channel_versions": {"messages": f"{n + 1:032}.0"}}
            if cid == "c9":
                checkpoint["channel_values"] = {"messages": [f"seed-{cid}"]}
            conf = {"configurable": {**cfg["configurable"], "checkpoint_ns": "", **({"checkpoint_id": parent} if parent else {})}}
            saver.put(conf, checkpoint, {"step": n}, {"messages": f"{n + 1:032}.0"})
            written = {"configurable": {**cfg["configurable"], "checkpoint_ns": "", "checkpoint_id": cid}}
            saver.put_writes(written, [("messages", f"write-{cid}"), ("other", f"other-{cid}")], task_id=f"task-{cid}")
            if cid != "c3":  # c3 wrote nothing to messages
                saver.put_writes(written, [("messages", f"second-{cid}")], task_id=f"task2-{cid}")
            parent = cid
        for target in ["c7", "c3", "c9", "c1", "c8"]:
            conf = {"configurable": {**cfg["configurable"], "checkpoint_ns": "", "checkpoint_id": target}}
            got, counts = counted_history(saver, conf, ["messages", "other"])
            assert got == base_walk(saver, conf, ["messages", "other"]) and counts == Counter({"RedisCall": 1})
        c7 = {"configurable": {**cfg["configurable"], "checkpoint_ns": "", "checkpoint_id": "c7"}}
        walked = saver.get_delta_channel_history(config=c7, channels=["messages"])["messages"]
        assert walked["seed"] == ["seed-c9"]
        assert [w[2] for w in walked["writes"]] == ["write-c9", "second-c9", "write-c3"]


@pytest.mark.parametrize("durable", [True, False])
def test_an_ancestor_evicted_in_part_and_never_flushed_is_corrupt_data(
    saver_context: Callable[..., Any], redis_url: str, durable: bool
) -> None:
    """Redis lost part of an ancestor (its values) before any flush: no tier can rebuild the
    channel, and a shorter history would be a wrong state."""
    cfg = thread_config()
    with saver_context(durable=durable, flush_policy=NO_AUTO_FLUSH) as saver:
        if durable:
            saver.setup()
        chat(saver, cfg, 3)
        client = redis.Redis.from_url(redis_url)
        client.delete(next(k for k in client.scan_iter(match=f"{saver.key_prefix}:*:bl")))
        client.close()
        with pytest.raises(CorruptDataError, match="Redis lost part of it"):
            saver.get_delta_channel_history(config=cfg, channels=["messages"])


def test_redis_only_saver_ends_the_walk_where_redis_does(saver_context: Callable[..., Any], redis_url: str) -> None:
    """No durable tier: an ancestor Redis lost ends the walk, as the base class' get_tuple walk."""
    cfg = thread_config()
    with saver_context() as saver:
        chat(saver, cfg, 6)
        tuples = list(saver.list(cfg))
        client = redis.Redis.from_url(redis_url)
        ck = next(k for k in client.scan_iter(match=f"{saver.key_prefix}:*:ck"))
        client.hdel(ck, next(f for f in client.hkeys(ck) if f.endswith(tuples[3].config["configurable"]["checkpoint_id"].encode())))
        client.close()
        for t in tuples[:3]:
            assert counted_history(saver, t.config, ["messages"])[0] == base_walk(saver, t.config, ["messages"])
        assert saver.get_delta_channel_history(config=tuples[3].config, channels=["messages"]) == {"messages": {"writes": []}}


def test_empty_unknown_and_bad_input(saver_context: Callable[..., Any]) -> None:
    with saver_context(durable=True) as saver:
        saver.setup()
        cfg = thread_config()
        assert saver.get_delta_channel_history(config=cfg, channels=[]) == {}
        assert saver.get_delta_channel_history(config=cfg, channels=["a", "b"]) == {"a": {"writes": []}, "b": {"writes": []}}
        with pytest.raises(ConfigError, match="sequence of channel names"):
            saver.get_delta_channel_history(config=cfg, channels="messages")
        with pytest.raises(ConfigError, match="non-empty string"):
            saver.get_delta_channel_history(config=cfg, channels=[""])


def test_missing_value_row_in_postgres_is_corrupt_data(
    saver_context: Callable[..., Any], redis_url: str, test_database_url: str
) -> None:
    cfg = thread_config()
    with saver_context(durable=True, flush_policy=NO_AUTO_FLUSH) as saver:
        saver.setup()
        chat(saver, cfg, 3)
        saver.flush()
        delete_keys(redis_url, f"{saver.key_prefix}:*")
        with psycopg.connect(test_database_url, autocommit=True) as conn:
            conn.execute(f'DELETE FROM "{saver.schema}".checkpoint_blobs WHERE channel = %s', ("messages",))
        with pytest.raises(CorruptDataError, match="missing from checkpoint_blobs"):
            saver.get_delta_channel_history(config=cfg, channels=["messages"])


@contextmanager
def private_saver(redis_url: str, postgres_url: str, **options: Any) -> Iterator[TieredSaver]:
    """A durable saver on its own schema and key prefix (both removed afterwards)."""
    schema = options.setdefault("schema", f"lts_{uuid.uuid4().hex[:10]}")
    prefix = options.setdefault("key_prefix", f"ltstest-{uuid.uuid4().hex[:10]}")
    try:
        with TieredSaver.from_conn_string(
            redis_url, postgres_url, tenant_id=TEST_TENANT, flush_policy=NO_AUTO_FLUSH, **options
        ) as saver:
            saver.setup()
            yield saver
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        with contextlib.suppress(redis.exceptions.ConnectionError):  # a private server the test stopped
            delete_keys(redis_url, f"{prefix}:*")


def test_redis_down_falls_back_to_postgres_or_raises(
    make_private_redis: Callable[..., PrivateRedis], test_database_url: str
) -> None:
    server = make_private_redis()
    cfg = thread_config()
    with private_saver(server.url, test_database_url, on_redis_error="fallback") as saver:
        chat(saver, cfg, 6)
        latest = saver.get_tuple(cfg)
        assert latest is not None
        expected = base_walk(saver, latest.config, ["messages"])
        saver.flush()
        with private_saver(server.url, test_database_url, schema=saver.schema, key_prefix=saver.key_prefix) as strict:
            strict.get_tuple(cfg)  # connected while Redis is up
            server.stop()
            assert plain(saver.get_delta_channel_history(config=latest.config, channels=["messages"])) == expected
            assert saver.metrics.counter("redis_fallbacks") > 0
            with pytest.raises(TierUnavailableError):
                strict.get_delta_channel_history(config=latest.config, channels=["messages"])


def test_postgres_down_where_the_chain_leaves_redis_raises(
    make_private_postgres: Callable[..., PrivatePostgres], redis_url: str
) -> None:
    """A chain cut short would rebuild a wrong state: the call raises instead."""
    pg = make_private_postgres()
    cfg = thread_config()
    with private_saver(redis_url, pg.url) as saver:
        chat(saver, cfg, 6)
        latest = saver.get_tuple(cfg)
        assert latest is not None
        saver.flush()
        delete_keys(redis_url, f"{saver.key_prefix}:*")
        saver.get_tuple(cfg)  # the latest only is back in Redis
        pg.stop()
        with pytest.raises(TierUnavailableError):
            saver.get_delta_channel_history(config=latest.config, channels=["messages"])
        pg.start()


def test_on_a_redis_cluster(cluster_saver_context: Callable[..., Any]) -> None:
    """The walk is one script over one thread's keys, which share a slot: it runs on a Cluster."""
    cfg = thread_config()
    with cluster_saver_context(durable=True, flush_policy=NO_AUTO_FLUSH) as saver:
        saver.setup()
        chat(saver, cfg, 6)
        for t in list(saver.list(cfg)):
            assert counted_history(saver, t.config, ["messages"]) == (base_walk(saver, t.config, ["messages"]), Counter({"RedisCall": 1}))


# ------------------------------------------------------------------ walks kept across calls


class LongChat(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], DeltaChannel(add_messages_batch, snapshot_frequency=40)]


def long_chat_graph(checkpointer: Any) -> Any:
    """`chat_graph` with snapshots far apart: each turn's walk goes back over many turns."""
    return chat_graph(checkpointer, LongChat)


def walked(saver: TieredSaver, config: dict[str, Any], channels: list[str]) -> tuple[dict[str, Any], str, int]:
    """The history, and what the Redis walk answered: its status and how many ancestors it visited."""
    seen: list[Any] = []

    def watching(op: Op[Any]) -> Op[Any]:
        try:
            request = op.send(None)
            while True:
                result = yield request
                seen.append(result)
                request = op.send(result)
        except StopIteration as stop:
            return stop.value

    result = saver.run_op(watching(delta_history_op(saver.core, saver._ref(config), channels)))
    ((status, _, _, _, _, ids, *_),) = seen[-1]
    return plain(result), status.decode(), len(ids)


def at(cfg: dict[str, Any], checkpoint_id: str) -> dict[str, Any]:
    return {"configurable": {**cfg["configurable"], "checkpoint_ns": "", "checkpoint_id": checkpoint_id}}


@pytest.mark.parametrize("durable", [True, False])
def test_each_turn_walks_only_its_new_ancestors_and_gets_the_whole_walks_history(
    saver_context: Callable[..., Any], durable: bool
) -> None:
    """A walk kept from the turn before (delta_walks.py) stops the next one where it began: the
    turn's 4 new ancestors are walked, the history is the full walk's, across a snapshot."""
    cfg = thread_config()
    with saver_context(durable=durable) as saver:
        saver.setup()
        graph = long_chat_graph(saver)
        statuses = []
        for i in range(20):  # 60 updates: a snapshot at the 40th
            graph.invoke(turn(i), cfg)
            history, status, visited = walked(saver, cfg, ["messages"])
            assert history == base_walk(saver, cfg, ["messages"])
            statuses.append((status, visited))
            again = walked(saver, cfg, ["messages"])  # the same target: nothing new to walk
            assert again[0] == history and (i == 0 or again[1:] == ("known", 0))
        assert statuses[0] == ("done", 3)
        assert all(s == ("known", 4) for s in statuses[1:13]), statuses  # before the snapshot
        assert statuses[13][0] == "done"  # the turn's new part holds the snapshot: nothing kept is needed
        assert all(s == ("known", 4) for s in statuses[15:]), statuses
        state = graph.get_state(cfg).values["messages"]
        assert len(state) == 60 and [m.id for m in state[:3]] == ["u-0", "m-1", "t-2"]


def test_a_kept_walk_is_not_used_once_its_ancestors_changed(saver_context: Callable[..., Any]) -> None:
    """A write added to an ancestor the kept walk covers, or a fork, or the thread deleted and
    written again: the next walk does not stop at the kept one, and matches the full walk."""
    cfg = thread_config()
    with saver_context() as saver:
        graph = long_chat_graph(saver)
        for i in range(6):
            graph.invoke(turn(i), cfg)
        assert walked(saver, cfg, ["messages"])[1] == "known"
        ancestors = list(saver.list(cfg))
        late = at(cfg, ancestors[7].config["configurable"]["checkpoint_id"])
        saver.put_writes(late, [("messages", [AIMessage(content="late", id="late-1")])], task_id="late-task")
        history, status, visited = walked(saver, cfg, ["messages"])
        assert (status, visited) == ("done", len(ancestors) - 1)
        assert history == base_walk(saver, cfg, ["messages"])
        assert ("messages", [("late-1", "ai", "late")]) in history["messages"]["writes"]
        assert walked(saver, cfg, ["messages"])[1:] == ("known", 0)  # kept again, the late write in it
        # time travel: a fork off an older checkpoint walks its own path
        fork = graph.invoke(turn(100), at(cfg, ancestors[4].config["configurable"]["checkpoint_id"]))
        assert fork["messages"][-1].id.startswith("t-")
        history, status, _ = walked(saver, cfg, ["messages"])  # stops at the walk the fork's run kept
        assert history == base_walk(saver, cfg, ["messages"])
        assert all(w[1][0][0] != "u-5" for w in history["messages"]["writes"])  # the fork left turn 5 out
        # the thread deleted and written again (new ids): nothing kept of it applies
        saver.delete_thread(cfg["configurable"]["thread_id"])
        for i in range(3):
            graph.invoke(turn(i), cfg)
        history, status, _ = walked(saver, cfg, ["messages"])
        assert history == base_walk(saver, cfg, ["messages"]) and len(history["messages"]["writes"]) == 9


def hand_made_chain(saver: Any, cfg: dict[str, Any], ids: list[str], tag: str) -> None:
    """A chain of checkpoints with these ids (root first), each writing `<tag>-<id>` to messages."""
    from langgraph.checkpoint.base import empty_checkpoint

    parent: str | None = None
    for n, cid in enumerate(ids):
        checkpoint = {**empty_checkpoint(), "id": cid, "channel_versions": {"messages": f"{n + 1:032}.0"}}
        conf = at(cfg, parent) if parent else {"configurable": {**cfg["configurable"], "checkpoint_ns": ""}}
        saver.put(conf, checkpoint, {"step": n}, {"messages": f"{n + 1:032}.0"})
        saver.put_writes(at(cfg, cid), [("messages", f"{tag}-{cid}")], task_id=f"task-{cid}")
        parent = cid


def test_a_walk_whose_ids_do_not_sort_is_not_kept(saver_context: Callable[..., Any]) -> None:
    """Ids out of order along the chain: a late write to an ancestor outside the id range the
    count covers would go unseen, so such a walk is never kept."""
    cfg = thread_config()
    with saver_context() as saver:
        hand_made_chain(saver, cfg, ["c1", "c9", "c3", "c7"], "write")
        assert walked(saver, at(cfg, "c7"), ["messages"])[1:] == ("done", 3)
        assert len(saver.core.delta_walks) == 0
        saver.put_writes(at(cfg, "c9"), [("messages", "late-c9")], task_id="late-task")
        history, status, _ = walked(saver, at(cfg, "c7"), ["messages"])
        assert status == "done"
        assert [w[1] for w in history["messages"]["writes"]] == ["write-c1", "late-c9", "write-c9", "write-c3"]


def test_a_thread_deleted_and_built_again_with_the_same_ids_is_walked_anew(saver_context: Callable[..., Any]) -> None:
    """Hand-made ids may repeat where LangGraph's never do: a thread deleted here and built again
    with the same ids and as many writes would pass the kept walk's count, so the deletion
    forgets the thread's kept walks."""
    cfg = thread_config()
    with saver_context(durable=True, flush_policy=NO_AUTO_FLUSH) as saver:
        saver.setup()
        hand_made_chain(saver, cfg, ["c1", "c3", "c5", "c7"], "first")
        assert walked(saver, at(cfg, "c7"), ["messages"])[1:] == ("done", 3)
        assert walked(saver, at(cfg, "c7"), ["messages"])[1:] == ("known", 0)
        saver.delete_thread(cfg["configurable"]["thread_id"])
        hand_made_chain(saver, cfg, ["c1", "c3", "c5", "c7"], "second")
        history, status, _ = walked(saver, at(cfg, "c7"), ["messages"])
        assert status == "done"
        assert [w[1] for w in history["messages"]["writes"]] == ["second-c1", "second-c3", "second-c5"]


def test_a_thread_another_process_deleted_and_built_again_is_walked_anew(saver_context: Callable[..., Any]) -> None:
    """The same, with the deletion and the rebuild made by another process (another saver on
    the same keys and schema), which cannot tell this one to forget: the thread's birth mark in
    Redis, set by the write that gives it its first checkpoint, differs from the kept walk's."""
    cfg = thread_config()
    prefix, schema = new_prefix(), f"lts_{uuid.uuid4().hex[:10]}"
    shared = {"durable": True, "key_prefix": prefix, "schema": schema, "flush_policy": NO_AUTO_FLUSH}
    with saver_context(**shared) as saver, saver_context(**shared) as other:
        saver.setup()
        hand_made_chain(saver, cfg, ["c1", "c3", "c5", "c7"], "first")
        assert walked(saver, at(cfg, "c7"), ["messages"])[1:] == ("done", 3)
        assert walked(saver, at(cfg, "c7"), ["messages"])[1:] == ("known", 0)
        other.delete_thread(cfg["configurable"]["thread_id"])
        hand_made_chain(other, cfg, ["c1", "c3", "c5", "c7"], "second")
        assert len(saver.core.delta_walks) == 1  # this process was not told
        history, status, _ = walked(saver, at(cfg, "c7"), ["messages"])
        assert status == "done"
        assert [w[1] for w in history["messages"]["writes"]] == ["second-c1", "second-c3", "second-c5"]
        assert walked(saver, at(cfg, "c7"), ["messages"])[1:] == ("known", 0)  # the new thread's walk, kept


def test_a_thread_without_a_birth_mark_keeps_no_walk(saver_context: Callable[..., Any]) -> None:
    """Written with neither a durable tier nor a run lock, a thread keeps no meta hash in Redis,
    so no birth mark: its walks are never kept (another process' rebuild could not be told)."""
    cfg = thread_config()
    with saver_context() as saver:
        hand_made_chain(saver, cfg, ["c1", "c3", "c5", "c7"], "first")
        for _ in range(2):
            history, status, visited = walked(saver, at(cfg, "c7"), ["messages"])
            assert (status, visited) == ("done", 3)
            assert [w[1] for w in history["messages"]["writes"]] == ["first-c1", "first-c3", "first-c5"]
        assert len(saver.core.delta_walks) == 0


def test_a_thread_older_than_birth_marks_gets_one_on_its_first_walk(saver_context: Callable[..., Any], redis_url: str) -> None:
    """A thread written by a release without birth marks (its meta hash has none) gets one when
    first walked, so its walks are kept from then on, and a rebuild still tells itself apart."""
    cfg = thread_config()
    with saver_context(durable=True, flush_policy=NO_AUTO_FLUSH) as saver:
        saver.setup()
        hand_made_chain(saver, cfg, ["c1", "c3", "c5", "c7"], "first")
        meta = K.thread_keys(saver.core.hot.prefix, TEST_TENANT, cfg["configurable"]["thread_id"]).meta
        client = redis.Redis.from_url(redis_url)
        assert client.hdel(meta, "born") == 1  # as an older release left it
        assert walked(saver, at(cfg, "c7"), ["messages"])[1:] == ("done", 3)
        assert client.hget(meta, "born")
        assert walked(saver, at(cfg, "c7"), ["messages"])[1:] == ("known", 0)
        client.close()
