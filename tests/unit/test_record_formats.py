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


def test_versions_sort_after_the_32_digit_ones_they_follow() -> None:
    """Threads written with LangGraph's own format (and by earlier releases) continue in order."""
    old = "00000000000000000000000000000009.0.3731221380113904"
    new = next_version(old)
    assert new.startswith("0000000000000010.") and len(new) == 25
    assert new > old and max(old, new) == new
    newer = next_version(new)
    assert newer > new > old and newer.startswith("0000000000000011.")
    assert next_version(None).startswith("0000000000000001.") and next_version(7).startswith("0000000000000008.")
