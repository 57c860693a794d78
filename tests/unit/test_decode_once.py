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


def _messages(serde: JsonPlusSerializer, n: int, start: int = 0) -> list[TypedValue]:
    return [serde.dumps_typed([AIMessage(content=f"turn {i}", id=f"m{i}")]) for i in range(start, start + n)]


def test_runs_copy_a_sequence_read_again_and_decode_only_its_new_values() -> None:
    """A sequence read again with new values at its end: the part read before comes from the
    kept runs (no decoding), the new part is decoded and kept as one more run; every value
    handed out is an independent object, equal to what decoding gives."""
    serde = JsonPlusSerializer()
    loads = Counting()
    values = DecodedValues()
    seq = ("acme", "t1", "", "messages")
    typed = _messages(serde, 6)
    first = values.run_copies(seq, typed[:4], loads)
    assert loads.calls == 4 and first == [serde.loads_typed(t) for t in typed[:4]]
    first[0][0].content = "changed"  # the caller's objects are its own
    second = values.run_copies(seq, [(t, bytes(b)) for t, b in typed], loads)
    assert loads.calls == 6  # only the two new ones
    assert second == [serde.loads_typed(t) for t in typed]
    third = values.run_copies(seq, typed, loads)
    assert loads.calls == 6 and third == second
    assert all(a[0] is not b[0] for a, b in zip(second, third, strict=True))


def test_runs_are_used_only_where_the_stored_bytes_match() -> None:
    """A value that differs (a fork, a rebuilt thread) ends the runs used: it and everything
    after it are decoded; a shorter sequence (time travel) keeps the runs it covers."""
    serde = JsonPlusSerializer()
    loads = Counting()
    values = DecodedValues()
    seq = ("acme", "t1", "", "messages")
    typed = _messages(serde, 8)
    values.run_copies(seq, typed[:4], loads)
    values.run_copies(seq, typed[:6], loads)
    assert loads.calls == 6
    forked = typed[:2] + _messages(serde, 3, start=100)
    got = values.run_copies(seq, forked, loads)
    assert got == [serde.loads_typed(t) for t in forked] and loads.calls == 6 + 5  # no run matched whole
    assert values.run_copies(seq, forked[:5], loads) == got and loads.calls == 11
    older = values.run_copies(seq, forked[:0], loads)
    assert older == [] and loads.calls == 11


def test_runs_merge_past_their_bound_and_go_with_the_tenant() -> None:
    serde = JsonPlusSerializer()
    loads = Counting()
    values = DecodedValues()
    seq = ("acme", "t1", "", "messages")
    typed = _messages(serde, 40)
    for n in range(1, 41):
        got = values.run_copies(seq, typed[:n], loads)
    assert got == [serde.loads_typed(t) for t in typed] and loads.calls == 40
    assert len(values._runs[seq]) <= 16
    values.run_copies(("other", "t1", "", "messages"), typed[:2], loads)
    values.forget_tenant("acme")
    assert seq not in values._runs and ("other", "t1", "", "messages") in values._runs
    values.run_copies(seq, typed[:3], loads)
    assert loads.calls == 40 + 2 + 3  # decoded again after the erasure


def test_runs_of_values_pickle_cannot_copy_are_not_kept() -> None:
    calls: list[TypedValue] = []

    def loads(typed: TypedValue) -> Any:
        calls.append(typed)
        return {"lock": threading.Lock()}

    values = DecodedValues()
    seq = ("acme", "t1", "", "messages")
    a = values.run_copies(seq, [("x", b"1"), ("x", b"2")], loads)
    b = values.run_copies(seq, [("x", b"1"), ("x", b"2")], loads)
    assert len(calls) == 4 and a[0]["lock"] is not b[0]["lock"]


def test_runs_stay_within_their_bound() -> None:
    """Runs of many sequences: the least recently used go first, the total stays under
    `runs_limit`, and a sequence read after its runs went is decoded again, correctly."""
    serde = JsonPlusSerializer()
    loads = Counting()
    values = DecodedValues(limit=20_000)
    typed = _messages(serde, 10)
    for t in range(20):
        values.run_copies(("acme", f"t{t}", "", "messages"), typed, loads)
        assert values._runs_size <= values.runs_limit
    assert 0 < len(values._runs) < 20 and ("acme", "t0", "", "messages") not in values._runs
    calls = loads.calls
    assert values.run_copies(("acme", "t0", "", "messages"), typed, loads) == [serde.loads_typed(t) for t in typed]
    assert loads.calls == calls + 10
