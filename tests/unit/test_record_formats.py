"""What the durable tier may leave out of a row (the JSON is the value exactly) and the format
of channel versions."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import pytest
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from langgraph_tiered_saver.records.audit import dumps_jsonb, json_exact
from langgraph_tiered_saver.records.codec import JSON_RECORD, loads_record, next_version

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
