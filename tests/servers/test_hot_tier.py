"""Hot tier behaviour against real Redis: storage per channel version, TTL, errors, tenancy."""

from __future__ import annotations

import operator
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, TypedDict

import pytest
import redis
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.graph import END, START, StateGraph

from langgraph_tiered_saver import (
    ConfigError,
    CorruptDataError,
    InvalidIdError,
    TenantRequiredError,
    TieredSaver,
    TierUnavailableError,
)
from langgraph_tiered_saver.hot import keys as K
from tests.helpers import TEST_TENANT, thread_config, wait_for


def _put(saver: TieredSaver, thread: str, values: dict[str, Any], new: dict[str, Any], parent: Any = None, **extra: Any) -> Any:
    cp = empty_checkpoint()
    cp["channel_values"] = values
    cp["channel_versions"] = {k: v for k, v in new.items()}
    cfg = thread_config(thread, **extra)
    if parent:
        cfg["configurable"]["checkpoint_id"] = parent["configurable"]["checkpoint_id"]
    return saver.put(cfg, cp, {"source": "loop", "step": 0}, new)


def _thread_keys(saver: TieredSaver, thread: str, tenant: str = TEST_TENANT) -> K.ThreadKeys:
    return K.thread_keys(saver.key_prefix, tenant, thread)


class Big(TypedDict, total=False):
    document: str
    counter: Annotated[int, operator.add]


def test_unchanged_channel_is_not_rewritten(saver: TieredSaver, redis_url: str) -> None:
    """A 100 kB channel written once and a counter written every step: Redis holds one copy of
    the document, and each step adds bytes in proportion to what changed, not to the state."""
    g = StateGraph(Big)
    g.add_node(
        "load", lambda s: {"counter": 1} if s.get("document") else {"document": "x" * 100_000, "counter": 1}
    )
    g.add_node("step", lambda s: {"counter": 1})
    g.add_edge(START, "load")
    g.add_edge("load", "step")

    def again(s: Big) -> str:
        return "step" if s["counter"] < 20 else END

    g.add_conditional_edges("step", again)
    graph = g.compile(checkpointer=saver)
    thread = f"t-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url)
    tk = _thread_keys(saver, thread)

    sizes = []

    def snapshot() -> int:
        return sum(client.hstrlen(tk.bl, f) for f in client.hkeys(tk.bl))

    graph.invoke({"counter": 0}, thread_config(thread), durability="sync")
    fields = [f.decode() for f in client.hkeys(tk.bl)]
    doc_fields = [f for f in fields if K.split_blob_field(f)[1] == "document"]
    counter_fields = [f for f in fields if K.split_blob_field(f)[1] == "counter"]
    assert len(doc_fields) == 1, doc_fields
    assert len(counter_fields) >= 20
    sizes.append(snapshot())
    # A second run on the thread (4 more checkpoints) adds only counter-sized bytes.
    graph.invoke({"counter": -2}, thread_config(thread), durability="sync")
    sizes.append(snapshot())
    assert sizes[1] - sizes[0] < 2_000, sizes
    state = graph.get_state(thread_config(thread))
    assert len(state.values["document"]) == 100_000


def test_put_writes_only_the_new_versions(saver: TieredSaver, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    thread = f"t-{uuid.uuid4().hex[:8]}"
    first = _put(saver, thread, {"a": "A1", "b": "B1"}, {"a": "1", "b": "1"})
    tk = _thread_keys(saver, thread)
    assert client.hlen(tk.bl) == 2
    cp = empty_checkpoint()
    cp["channel_values"] = {"a": "A2", "b": "B1"}
    cp["channel_versions"] = {"a": "2", "b": "1"}
    cfg = thread_config(thread, checkpoint_id=first["configurable"]["checkpoint_id"])
    saver.put(cfg, cp, {"source": "loop", "step": 1}, {"a": "2"})
    assert client.hlen(tk.bl) == 3
    latest = saver.get_tuple(thread_config(thread))
    assert latest is not None
    assert latest.checkpoint["channel_values"] == {"a": "A2", "b": "B1"}


def test_thread_expires_whole_never_in_part(saver_context: Callable[..., Any], redis_url: str) -> None:
    """TTL 0.6 s; a thread that keeps writing for ~3 TTL periods still reads its step-1 value;
    left alone, every one of its keys disappears."""
    client = redis.Redis.from_url(redis_url)
    thread = f"t-{uuid.uuid4().hex[:8]}"
    with saver_context(ttl_seconds=0.6) as saver:
        parent = _put(saver, thread, {"doc": "written once", "n": 0}, {"doc": "1", "n": "1"})
        deadline = time.monotonic() + 2.0
        n = 1
        while time.monotonic() < deadline:
            time.sleep(0.1)
            cp = empty_checkpoint()
            cp["channel_values"] = {"doc": "written once", "n": n}
            cp["channel_versions"] = {"doc": "1", "n": str(n + 1)}
            cfg = thread_config(thread, checkpoint_id=parent["configurable"]["checkpoint_id"])
            parent = saver.put(cfg, cp, {"source": "loop", "step": n}, {"n": str(n + 1)})
            saver.put_writes(parent, [("n", n)], task_id=f"task-{n}")
            n += 1
        latest = saver.get_tuple(thread_config(thread))
        assert latest is not None
        assert latest.checkpoint["channel_values"]["doc"] == "written once"
        first = list(saver.list(thread_config(thread)))[-1]
        assert first.checkpoint["channel_values"]["doc"] == "written once"
        tk = _thread_keys(saver, thread)
        ttls = {name: client.pttl(key) for name, key in zip(tk._fields, tk, strict=True)}
        # Redis-only, no run ids, no lock: runs/pend/meta were never created.
        live = {name: ttl for name, ttl in ttls.items() if name not in ("runs", "pend", "meta")}
        assert all(0 < ttl <= 600 for ttl in live.values()), ttls
        assert all(ttls[name] == -2 for name in ("runs", "pend", "meta")), ttls
        assert wait_for(lambda: not any(client.exists(key) for key in tk), timeout=5)  # Redis' TTL, real time
        assert saver.get_tuple(thread_config(thread)) is None


def test_a_read_refreshes_the_ttl_only_when_due(saver_context: Callable[..., Any], redis_url: str) -> None:
    """With refresh_ttl_on_read, a read of a clean thread whose keys got their TTL less than a
    sixteenth of it ago leaves them alone; a later read gives every key its full TTL again.
    A dirty thread's keys keep no TTL through reads."""
    client = redis.Redis.from_url(redis_url)
    thread = f"t-{uuid.uuid4().hex[:8]}"
    ttl_ms = 3_200
    with saver_context(durable=True, ttl_seconds=ttl_ms / 1000, refresh_ttl_on_read=True, background_flush=False) as saver:
        saver.setup()
        first = _put(saver, thread, {"a": "A1"}, {"a": "1"})
        _put(saver, thread, {"a": "A2", "b": "B1"}, {"a": "2", "b": "1"}, parent=first)
        tk = _thread_keys(saver, thread)
        data_keys = [key for key in tk if client.exists(key)]
        assert saver.get_tuple(thread_config(thread)) is not None
        assert all(client.pttl(key) == -1 for key in data_keys)  # dirty: no TTL, a read keeps it so
        saver.flush(thread_config(thread))
        data_keys = [key for key in tk if client.exists(key)]
        assert all(0 < client.pttl(key) <= ttl_ms for key in data_keys)  # clean: the flush gave it back
        time.sleep(0.05)  # under 200 ms, a sixteenth of the TTL: not due
        before = {key: client.pttl(key) for key in data_keys}
        assert saver.get_tuple(thread_config(thread)) is not None
        assert all(client.pttl(key) <= before[key] for key in data_keys)
        time.sleep(0.4)  # past a sixteenth: due
        assert saver.get_tuple(thread_config(thread)) is not None
        after = [client.pttl(key) for key in data_keys]
        assert all(ttl_ms - 150 < ttl <= ttl_ms for ttl in after), after
    client.close()


def test_bad_config_errors(saver: TieredSaver) -> None:
    cp = empty_checkpoint()
    with pytest.raises(ConfigError, match="thread_id"):
        saver.put({"configurable": {}}, cp, {}, {})
    with pytest.raises(ConfigError, match="configurable"):
        saver.get_tuple({"thread_id": "x"})  # type: ignore[typeddict-unknown-key]
    with pytest.raises(ConfigError, match="dict"):
        saver.get_tuple("thread-1")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="checkpoint_id"):
        saver.put_writes(thread_config("t1"), [("a", 1)], task_id="t")
    with pytest.raises(ConfigError, match="strategy"):
        saver.prune(["t1"], strategy="everything")


@pytest.mark.parametrize("thread_id", ["", "x" * 1025, "😀" * 600, "nul\x00byte", "lone\ud800surrogate"])
def test_ids_no_tier_can_store_are_rejected(saver: TieredSaver, thread_id: str) -> None:
    with pytest.raises(InvalidIdError):
        saver.put(thread_config(thread_id), empty_checkpoint(), {}, {})
    with pytest.raises(InvalidIdError):
        saver.delete_thread(thread_id)


def test_bad_tenant_and_namespace(saver: TieredSaver) -> None:
    for bad in (0, "", "a\x00b", ["acme"], "x" * 257):
        with pytest.raises(InvalidIdError, match="tenant_id"):
            saver.get_tuple(thread_config("t1", tenant_id=bad))
        with pytest.raises(InvalidIdError, match="tenant_id"):
            saver.for_tenant(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidIdError, match="checkpoint_ns"):
        saver.get_tuple({"configurable": {"thread_id": "t1", "checkpoint_ns": "a\x00b"}})


def test_corrupt_bytes_give_a_typed_error(saver: TieredSaver, redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    thread = f"t-{uuid.uuid4().hex[:8]}"
    stored = _put(saver, thread, {"a": "A"}, {"a": "1"})
    tk = _thread_keys(saver, thread)
    member = K.checkpoint_member("", stored["configurable"]["checkpoint_id"])
    client.hset(tk.ck, member, b"\xff\x00garbage")
    with pytest.raises(CorruptDataError, match="checkpoint record"):
        saver.get_tuple(thread_config(thread))
    _put(saver, thread + "b", {"a": "A"}, {"a": "1"})
    tkb = _thread_keys(saver, thread + "b")
    client.hset(tkb.bl, K.blob_field("", "a", "1"), b"no-type-tag")
    with pytest.raises(CorruptDataError):
        saver.get_tuple(thread_config(thread + "b"))
    client.hset(tkb.bl, K.blob_field("", "a", "1"), b"msgpack\x00\xc1\xc1")
    with pytest.raises(CorruptDataError, match="deserialized"):
        saver.get_tuple(thread_config(thread + "b"))


def test_unreachable_redis_is_a_typed_error() -> None:
    with (
        TieredSaver.from_conn_string("redis://127.0.0.1:1/0", tenant_id=TEST_TENANT, key_prefix="nowhere") as saver,
        pytest.raises(TierUnavailableError, match="redis"),
    ):
        saver.get_tuple(thread_config("t1"))


async def test_unreachable_redis_is_a_typed_error_async() -> None:
    async with TieredSaver.from_conn_string("redis://127.0.0.1:1/0", tenant_id=TEST_TENANT, key_prefix="nowhere") as saver:
        with pytest.raises(TierUnavailableError, match="redis"):
            await saver.aget_tuple(thread_config("t1"))


def test_decode_responses_client_is_rejected(redis_url: str) -> None:
    with pytest.raises(ConfigError, match="decode_responses"):
        TieredSaver(redis.Redis.from_url(redis_url, decode_responses=True))


def test_tenants_do_not_share_threads(saver_context: Any) -> None:
    with saver_context(tenant_id=None) as saver:
        _tenants_do_not_share_threads(saver)


def _tenants_do_not_share_threads(saver: TieredSaver) -> None:
    thread = f"t-{uuid.uuid4().hex[:8]}"
    _put(saver, thread, {"owner": "acme"}, {"owner": "1"}, tenant_id="acme")
    _put(saver, thread, {"owner": "globex"}, {"owner": "1"}, tenant_id="globex")
    acme = saver.get_tuple(thread_config(thread, tenant_id="acme"))
    globex = saver.get_tuple(thread_config(thread, tenant_id="globex"))
    assert acme is not None and globex is not None
    assert acme.checkpoint["channel_values"] == {"owner": "acme"}
    assert globex.checkpoint["channel_values"] == {"owner": "globex"}
    assert acme.config["configurable"]["tenant_id"] == "acme"
    with pytest.raises(TenantRequiredError):
        saver.get_tuple(thread_config(thread))  # a multi-tenant saver never picks a default tenant
    assert saver.for_tenant("initech").get_tuple(thread_config(thread)) is None
    acme_view = saver.for_tenant("acme")
    assert [t.config["configurable"]["thread_id"] for t in acme_view.list(None)] == [thread]
    acme_view.delete_thread(thread)
    assert saver.get_tuple(thread_config(thread, tenant_id="acme")) is None
    assert saver.get_tuple(thread_config(thread, tenant_id="globex")) is not None


def test_calls_from_many_threads_run_in_parallel(saver: TieredSaver) -> None:
    """No instance-wide lock: concurrent callers use several pooled connections at once."""
    def work(i: int) -> int:
        parent = None
        for step in range(15):
            parent = _put(saver, f"par-{i}", {"step": step}, {"step": str(step + 1)}, parent=parent)
        return len(list(saver.list(thread_config(f"par-{i}"))))

    with ThreadPoolExecutor(max_workers=16) as pool:
        counts = list(pool.map(work, range(16)))
    assert counts == [15] * 16
    pool_ = saver._conn.redis.connection_pool  # a BlockingConnectionPool: _connections = every one made
    assert len(pool_._connections) > 1
