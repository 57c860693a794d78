"""`list` of one thread reads Redis in one round trip (list.lua): `before` and `limit` applied in
the script, each channel value sent once however many checkpoints share its version."""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from langgraph.checkpoint.base import empty_checkpoint

from langgraph_tiered_saver.hot import keys as K
from langgraph_tiered_saver.hot import scripts
from tests.faults.test_delta_history import counting
from tests.graphs import chain_graph
from tests.helpers import TEST_TENANT, collector_spy, thread_config


def test_list_is_one_round_trip_with_before_limit_and_filter(saver_context: Callable[..., Any]) -> None:
    with saver_context() as saver:
        cfg = thread_config()
        chain_graph(saver, nodes=8).invoke({"n": 0}, cfg)
        everything = list(saver.list(cfg))
        assert len(everything) == 10
        counts: Counter[str] = Counter()
        ids = [t.config["configurable"]["checkpoint_id"] for t in everything]
        before = everything[3].config
        op = saver._list_op(cfg, None, before, 4)
        got = saver.run_op(counting(op, counts))
        assert [t.config["configurable"]["checkpoint_id"] for t in got] == ids[4:8]
        assert counts == Counter({"RedisCall": 1})
        assert [t.metadata["step"] for t in saver.list(cfg, filter={"source": "loop"}, limit=2)] == [8, 7]
        assert list(saver.list(cfg, limit=0)) == []


def test_list_sends_each_channel_value_once(saver_context: Callable[..., Any]) -> None:
    with saver_context() as saver:
        cfg = thread_config()
        chain_graph(saver, nodes=6).invoke({"n": 0}, cfg)
        assert len(list(saver.list(cfg))) == 8  # (and the script is loaded)
        ref = saver._ref(cfg)
        keys = saver.core.hot.keys(TEST_TENANT, ref.thread_id)
        args = {"refresh_ttl_ms": 0, "ns_mode": "all", "ns": "", "checkpoint_id": "", "before_id": "", "limit": 0}
        keys = {**keys, "vgen": K.generation_key(saver.core.hot.prefix, K.shard_of(TEST_TENANT, ref.thread_id))}
        entries, fields, values, *_ = saver._sync.redis.evalsha(scripts.LIST.sha, len(keys), *keys.values(), *args.values())  # type: ignore[union-attr]
        referenced = [f for e in entries for f in e[2].split(K.REF_SEP.encode())[1:]]
        assert len(fields) == len(set(referenced)) < len(referenced)  # shared versions sent once
        assert len(values) == len(fields)


def _list_counted(saver: Any, cfg: dict[str, Any], **kwargs: Any) -> tuple[list[Any], Counter[str]]:
    counts: Counter[str] = Counter()
    op = saver._list_op(cfg, kwargs.get("filter"), kwargs.get("before"), kwargs.get("limit"))
    return saver.run_op(counting(op, counts)), counts


def _ids(tuples: list[Any]) -> list[str]:
    return [t.config["configurable"]["checkpoint_id"] for t in tuples]


def test_a_namespace_postgres_has_nothing_more_of_is_then_listed_from_redis_alone(saver_context: Callable[..., Any]) -> None:
    with saver_context(durable=True, background_flush=False) as saver:
        saver.setup()
        cfg = thread_config()
        # written without a read first: Redis was never told the thread is new (fresh_threads.py)
        saver.put(cfg, empty_checkpoint(), {"step": -1}, {})
        chain_graph(saver, nodes=4).invoke({"n": 0}, cfg)
        saver.flush()
        first, counts = _list_counted(saver, cfg)
        assert counts["PgCall"] == 1  # Postgres asked once: it has nothing Redis lacks
        again, counts = _list_counted(saver, cfg)
        assert counts == Counter({"RedisCall": 1}) and _ids(again) == _ids(first)
        chain_graph(saver, nodes=4).invoke({"n": 0}, cfg)  # new checkpoints keep the mark
        grown, counts = _list_counted(saver, cfg)
        assert counts == Counter({"RedisCall": 1}) and len(grown) == 2 * len(first) - 1
        older, counts = _list_counted(saver, cfg, before=grown[3].config, limit=2)
        assert counts == Counter({"RedisCall": 1}) and _ids(older) == _ids(grown)[4:6]


def test_a_thread_redis_holds_in_part_is_listed_with_postgres(saver_context: Callable[..., Any]) -> None:
    """Expired from Redis, then re-warmed (its latest checkpoint only) by a read: every list asks
    Postgres, and gets the older checkpoints from it."""
    with saver_context(durable=True, background_flush=False) as saver:
        saver.setup()
        cfg = thread_config()
        chain_graph(saver, nodes=4).invoke({"n": 0}, cfg)
        saver.flush()
        everything = list(saver.list(cfg))
        assert len(everything) == 6  # ... and the namespace is marked whole
        ref = saver._ref(cfg)
        saver.run_op(saver.core.hot.delete_thread_op(TEST_TENANT, [ref.thread_id]))  # as if it expired
        assert saver.get_tuple(cfg) is not None  # re-warms the latest
        for _ in range(2):
            listed, counts = _list_counted(saver, cfg)
            assert counts["PgCall"] == 1 and _ids(listed) == _ids(everything)


def test_an_import_into_a_whole_namespace_drops_its_mark(saver_context: Callable[..., Any]) -> None:
    with saver_context(durable=True, background_flush=False) as saver:
        saver.setup()
        cfg = thread_config()
        chain_graph(saver, nodes=4).invoke({"n": 0}, cfg)
        saver.flush()
        everything = list(saver.list(cfg))
        ref = saver._ref(cfg)
        hot = saver.core.hot
        exported = saver.run_op(hot.export_thread_op(TEST_TENANT, ref.thread_id))
        saver.run_op(hot.import_thread_op(TEST_TENANT, ref.thread_id, exported, pending=False))
        listed, counts = _list_counted(saver, cfg)
        assert counts["PgCall"] == 1 and _ids(listed) == _ids(everything)


def test_a_checkpoint_read_again_is_decoded_once_into_independent_copies(
    saver_context: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`get_tuple` keeps a channel value or pending write read twice (records/decoded.py): later
    reads copy it instead of deserializing it, and every caller still gets its own objects."""
    from langchain_core.messages import AIMessage, HumanMessage

    from langgraph_tiered_saver.records import decoded

    monkeypatch.setattr(decoded, "COPY_OVERHEAD_SECONDS", -1.0)  # a copy always wins: no timing in the test
    with saver_context() as saver:
        cfg = thread_config()
        checkpoint = empty_checkpoint()
        messages = [HumanMessage(content="I was charged twice " * 10, id="h1")]
        checkpoint["channel_values"] = {"messages": messages}
        checkpoint["channel_versions"] = {"messages": saver.get_next_version(None, None)}
        stored = saver.put(cfg, checkpoint, {"source": "loop", "step": 0}, checkpoint["channel_versions"])
        saver.put_writes(stored, [("messages", [AIMessage(content="refund approved " * 10, id="a1")])], "task-1")
        reads = [saver.get_tuple(cfg) for _ in range(4)]
        assert all(r is not None for r in reads)
        assert len(saver.core.decoded) == 2  # the value and the write, kept from their second read
        first, last = reads[0], reads[-1]
        assert first is not None and last is not None
        assert last.checkpoint["channel_values"] == first.checkpoint["channel_values"] == {"messages": messages}
        assert last.pending_writes == first.pending_writes
        last.checkpoint["channel_values"]["messages"][0].content = "changed"
        last.pending_writes[0][2][0].content = "changed"  # type: ignore[index]
        again = saver.get_tuple(cfg)
        assert again is not None
        assert again.checkpoint["channel_values"]["messages"][0].content == "I was charged twice " * 10
        assert again.pending_writes[0][2][0].content == "refund approved " * 10


def test_list_decodes_with_the_collector_held_and_gives_it_back(saver_context: Callable[..., Any]) -> None:
    """A long history's objects are decoded without the collector's full passes over the
    growing heap (records/collection.py); the collector is on again once `list` returns."""
    serde, collecting = collector_spy()
    assert gc.isenabled()
    with saver_context(durable=True, serde=serde) as saver:
        saver.setup()
        cfg = thread_config()
        chain_graph(saver, nodes=4).invoke({"n": 0}, cfg)
        collecting.clear()
        assert len(list(saver.list(cfg))) == 6
        assert collecting and not any(collecting)
        assert gc.isenabled()
