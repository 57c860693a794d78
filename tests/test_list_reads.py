"""`list` of one thread reads Redis in one round trip (list.lua): `before` and `limit` applied in
the script, each channel value sent once however many checkpoints share its version."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from langgraph_tiered_saver import keys as K
from langgraph_tiered_saver import scripts
from tests.graphs import chain_graph
from tests.helpers import TEST_TENANT, thread_config
from tests.test_delta_history import counting


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
        entries, fields, values = saver._sync.redis.evalsha(scripts.LIST.sha, len(keys), *keys.values(), *args.values())  # type: ignore[union-attr]
        referenced = [f for e in entries for f in e[2].split(K.REF_SEP.encode())[1:]]
        assert len(fields) == len(set(referenced)) < len(referenced)  # shared versions sent once
        assert len(values) == len(fields)
