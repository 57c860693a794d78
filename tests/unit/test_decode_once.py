"""DecodeOnce and DecodedValues: each stored value decoded once (per list call, or across calls), and every caller still gets its own objects."""

from __future__ import annotations

import threading
import time
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from langgraph_tiered_saver.records.codec import DecodeOnce, TypedValue
from langgraph_tiered_saver.records.decoded import DecodedValues


class Counting:
    def __init__(self) -> None:
        self.serde = JsonPlusSerializer()
        self.calls = 0

    def __call__(self, typed: TypedValue) -> Any:
        self.calls += 1
        return self.serde.loads_typed(typed)


def test_each_value_decoded_once_and_copies_are_independent() -> None:
    loads = Counting()
    messages = [HumanMessage(content="hi", id="1"), AIMessage(content="hello", id="2")]
    typed = loads.serde.dumps_typed(messages)
    other = loads.serde.dumps_typed({"n": 1})
    values = DecodeOnce(loads)
    first, second, third = values(typed), values((typed[0], bytes(typed[1]))), values(typed)
    assert values(other) == {"n": 1}
    assert loads.calls == 2  # one per distinct stored value
    assert first == second == third == messages
    second[0].content = "changed"
    second.append(HumanMessage(content="more", id="3"))
    assert first[0].content == third[0].content == "hi"
    assert len(first) == len(third) == 2
    assert first[0] is not third[0]


def test_a_value_pickle_cannot_copy_is_decoded_again() -> None:
    calls: list[TypedValue] = []

    def loads(typed: TypedValue) -> Any:
        calls.append(typed)
        return {"lock": threading.Lock()}  # a lock cannot be pickled

    values = DecodeOnce(loads)
    a, b = values(("x", b"lock")), values(("x", b"lock"))
    assert len(calls) == 2 and a["lock"] is not b["lock"]


def test_decoded_values_copies_per_tenant_within_a_bound() -> None:
    serde = JsonPlusSerializer()
    messages = [HumanMessage(content="hi", id="1"), AIMessage(content="hello", id="2")]
    typed = serde.dumps_typed(messages)
    values = DecodedValues(limit=10_000)
    assert values.get("a", typed) == (False, None)
    values.put("a", typed, serde.loads_typed(typed))
    assert values.get("b", typed) == (False, None)  # another tenant's entry is not shared
    hit, first = values.get("a", (typed[0], bytes(typed[1])))
    _, second = values.get("a", typed)
    assert hit and first == second == messages
    first[0].content = "changed"
    assert second[0].content == "hi" and first[0] is not second[0]
    values.put("a", ("x", b"1"), threading.Lock())  # pickle cannot copy it: not kept
    assert len(values) == 1
    for i in range(200):  # least recently used out first, the total stays under the limit
        values.put("a", ("msgpack", serde.dumps_typed(f"value {i}" * 10)[1]), f"value {i}" * 10)
    assert values.get("a", typed) == (False, None)
    assert 0 < len(values) < 200
    values.put("b", typed, messages)
    values.forget_tenant("a")
    assert len(values) == 1 and values.get("b", typed)[0]


def test_decoded_values_load_keeps_a_value_from_its_second_read() -> None:
    serde = JsonPlusSerializer()
    calls: list[TypedValue] = []

    def slow_loads(typed: TypedValue) -> Any:  # a decode far dearer than a copy (messages)
        calls.append(typed)
        time.sleep(0.002)
        return serde.loads_typed(typed)

    messages = [HumanMessage(content="hi " * 50, id="1"), AIMessage(content="hello " * 50, id="2")]
    typed = serde.dumps_typed(messages)
    small = serde.dumps_typed("node-1")
    values = DecodedValues(limit=1_000_000)
    first = values.load("a", typed, slow_loads)
    assert len(values) == 0  # read once: not kept
    second = values.load("a", (typed[0], bytes(typed[1])), slow_loads)
    assert len(values) == 1 and len(calls) == 2  # read again: decoded and kept
    third = values.load("a", typed, slow_loads)
    assert len(calls) == 2 and first == second == third == messages
    third[0].content = "changed"
    assert values.load("a", typed, slow_loads)[0].content == "hi " * 50
    assert values.load("b", typed, slow_loads) == messages and len(calls) == 3  # another tenant's is not shared
    for _ in range(3):  # a value too small to be worth a copy is always decoded
        assert values.load("a", small, slow_loads) == "node-1"
    assert len(calls) == 6 and len(values) == 1
    values.load("b", typed, slow_loads)
    values.forget_tenant("b")  # erasure forgets its values and the marks of values read once
    values.load("b", typed, slow_loads)
    assert len(values) == 1 and len(calls) == 8


def test_decoded_values_load_decodes_plain_data_a_copy_would_not_speed_up() -> None:
    big = [{"n": i, "text": "x" * 20} for i in range(2_000)]
    calls: list[TypedValue] = []

    def fast_loads(typed: TypedValue) -> Any:  # a decode far cheaper than a copy (plain data)
        calls.append(typed)
        return big

    typed = ("msgpack", b"p" * 500)
    values = DecodedValues(limit=10_000_000)
    for _ in range(4):
        assert values.load("a", typed, fast_loads) == big
    assert len(calls) == 4 and len(values) == 0  # marked plain on its second read: never kept
