"""What the durable tier may leave out of a row (the JSON is the value exactly) and the format
of channel versions."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

import orjson
import ormsgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from langgraph_tiered_saver.durable.records import deflated, inflated, loaded_value
from langgraph_tiered_saver.errors import CorruptDataError
from langgraph_tiered_saver.records import audit
from langgraph_tiered_saver.records.audit import dumps_jsonb, json_exact
from langgraph_tiered_saver.records.codec import JSON_RECORD, loads_record, next_version
from langgraph_tiered_saver.records.key_order import jsonb_key, key_order

DEEP: list[Any] = []
for _ in range(70):
    DEEP = [DEEP]


@pytest.mark.parametrize(
    "value",
    [
        {"v": 4, "id": "1f1", "channel_versions": {"a": "0000000000000002.0a1b2c3d"}, "updated_channels": ["a"]},
        {"source": "loop", "step": -1, "parents": {}, "score": 0.5, "ok": True, "none": None},
        [1, "x", [], {}, 1.0, -(2**63), 2**63 - 1, 0.000015],
    ],
)
def test_plain_json_values_are_exact(value: Any) -> None:
    assert json_exact(value)
    assert orjson.loads(dumps_jsonb(value)) == value


@pytest.mark.parametrize(
    "value",
    [
        {"t": (1, 2)},  # comes back a list
        {1: "int key"},  # comes back a str key
        {"nul": "a\x00b"},  # jsonb drops NUL
        {"big": 2**63},  # beyond 64 bits
        {"exp": 1e16},  # Postgres writes it back as an integer
        {"neg0": -0.0},
        {"nan": float("nan")},
        {"inf": float("inf")},
        {"when": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)},  # any non-JSON type
        {"deep": DEEP},  # nested deeper than the audit copy goes
    ],
)
def test_values_json_would_change_are_not_exact(value: Any) -> None:
    assert not json_exact(value)


def test_a_json_record_reads_without_the_serializer() -> None:
    serde = JsonPlusSerializer()
    checkpoint = {"v": 4, "id": "c1", "channel_versions": {"a": "1"}}
    assert loads_record(serde, (JSON_RECORD, orjson.dumps(checkpoint))) == checkpoint
    assert loads_record(serde, serde.dumps_typed(checkpoint)) == checkpoint


def test_versions_order_by_counter_whoever_wrote_the_last_one() -> None:
    """LangGraph's own format (PostgresSaver, and this saver's earlier releases: a random float
    after the counter) and this one continue each other in order."""
    theirs = "00000000000000000000000000000009.0.3731221380113904"
    ours = next_version(theirs)
    assert ours == f"{10:032}.{ours[33:]}" and len(ours) == 41 and int(ours[33:], 16) >= 0
    assert ours > theirs and max(theirs, ours) == ours
    theirs_next = f"{int(ours.split('.')[0]) + 1:032}.0.9856933810872035"  # what they make of ours
    assert theirs_next > ours and next_version(theirs_next) > theirs_next
    assert next_version(None).startswith(f"{1:032}.") and next_version(7).startswith(f"{8:032}.")


def test_exact_json_is_the_serializers_value_with_its_key_order() -> None:
    """A value is kept as its JSONB alone only when that, with the key order of the dicts JSONB
    reorders (shorter keys first, then bytewise), gives back what the serializer would: plain
    JSON types, no extension type (message, set, datetime...), no float JSONB writes back
    otherwise."""
    serde = JsonPlusSerializer()
    exact: list[tuple[Any, bytes]] = [
        ("text", b""), (1, b""), (2.5, b""), (True, b""), ([1, "a", None], b""),
        ({"a": 1, "bb": {"x": [1.5]}, "cc": 2}, b""), ({"ab": 2, "é": 1}, b""),
        ({"bb": 1, "a": 2}, b"[[0,1,0]]"), ({"é": 1, "ab": 2}, b"[[0,1,0]]"),
        ([{"x": {"zz": 1, "y": 2}}, {"c": 1, "bbb": 2, "a": 3}], b"[[1,1,0],[2,1,2,0]]"),
    ]  # fmt: skip
    for value, order in exact:
        typed = serde.dumps_typed(value)
        found = audit.exact_json(typed[1])
        assert found is not None and found[1] == order, value
        text = orjson.dumps(_in_jsonb_order(orjson.loads(found[0])))  # as Postgres gives it back
        stored = (JSON_RECORD, found[1] + b"\n" + text if found[1] else text)
        back = loads_record(serde, stored)
        assert back == value and repr(back) == repr(serde.loads_typed(typed))
    inexact = [{1, 2}, HumanMessage("hi"), dt.datetime(2024, 1, 1), 1e16, -0.0, "a\x00b", {"a\x00": 1}, b"bytes", [b"x"]]
    for value in inexact:
        typed = serde.dumps_typed(value)
        assert typed[0] != "msgpack" or audit.exact_json(typed[1]) is None, value
    assert audit.exact_json(b"\xc1 not msgpack") is None
    with pytest.raises(ValueError, match="key order"):
        loads_record(serde, (JSON_RECORD, b'[[0,0,0]]\n{"a":1,"b":2}'))


def _in_jsonb_order(value: Any) -> Any:
    if type(value) is dict:
        return {k: _in_jsonb_order(value[k]) for k in sorted(value, key=jsonb_key)}
    if type(value) is list:
        return [_in_jsonb_order(v) for v in value]
    return value


def test_a_deflated_value_row_reads_back_the_serializers_bytes() -> None:
    """Value rows deflate the serializer's bytes where that saves a tenth; reads inflate them;
    small or incompressible values are kept as they are; a corrupt one is an error."""
    big = ("msgpack", b"message " * 40)
    stored = deflated(big)
    assert stored[0] == "lts-z+msgpack" and len(stored[1]) < 100
    assert inflated(stored, "here") == big and deflated(stored) == stored
    assert loaded_value(b"lts-z+msgpack", stored[1], None, "here") == big
    for kept in (("msgpack", b"short"), ("msgpack", os.urandom(400))):
        assert deflated(kept) == kept and inflated(kept, "here") == kept
    with pytest.raises(CorruptDataError, match="cannot be inflated"):
        inflated(("lts-z+msgpack", b"\xff not deflate"), "here")


_json_leaves = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=4)
_json_values = st.recursive(
    _json_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_json_values)
def test_exact_json_walks_once_what_json_exact_and_key_order_say(value: Any) -> None:
    """One walk gives both answers: exact or not as `json_exact`, and `key_order`'s order."""
    found = audit.exact_json(ormsgpack.packb(value))
    if not json_exact(value):
        assert found is None
        return
    order = key_order(value)
    assert found == (orjson.dumps(value), orjson.dumps(order) if order else b"")
