"""`list(filter=...)` gives the same answer from Redis, from Postgres and from InMemorySaver.

Before this, Redis matched by Python equality and Postgres by jsonb containment:
`{'missing_key': None}` matched in Redis only, `{'tags': ['a']}` in Postgres only.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver

from langgraph_tiered_saver.records import filters

METADATA = [
    {"source": "loop", "step": 1, "tags": ["a", "b"], "flag": 1, "nested": {"k": [1, 2]}},
    {"source": "input", "step": 2, "tags": ["a"], "flag": True, "note": None, "ü": "ß"},
    {"source": "loop", "step": 3, "tags": [], "nested": {"k": [1, 2], "extra": 0}, "big": 2**63},
]
FILTERS = [
    {"missing_key": None},
    {"note": None},
    {"tags": ["a"]},
    {"tags": ["a", "b"]},
    {"tags": []},
    {"flag": True},
    {"flag": 1},
    {"step": 1.0},
    {"nested": {"k": [1, 2]}},
    {"source": "loop", "step": 3},
    {"ü": "ß"},
    {"source": "none of them"},
    {"big": float(2**63)},
    {"big": 2**63},
]


def _write(saver: Any, thread: str) -> None:
    parent = None
    for i, metadata in enumerate(METADATA):
        checkpoint = empty_checkpoint()
        checkpoint["id"] = f"1ef00000-0000-6000-8000-00000000000{i}"
        config: dict[str, Any] = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
        if parent:
            config["configurable"]["checkpoint_id"] = parent
        saver.put(config, checkpoint, metadata, {})
        parent = checkpoint["id"]


def _steps(saver: Any, thread: str, metadata_filter: dict[str, Any]) -> list[int]:
    return [t.metadata["step"] for t in saver.list({"configurable": {"thread_id": thread}}, filter=metadata_filter)]


def test_filters_answer_alike_in_both_tiers_and_like_in_memory_saver(
    saver_context: Callable[..., Any], redis_url: str
) -> None:
    thread = f"t-{uuid.uuid4().hex[:8]}"
    reference = InMemorySaver()
    _write(reference, thread)
    expected = {repr(f): _steps(reference, thread, f) for f in FILTERS}
    assert expected[repr({"missing_key": None})] == [3, 2, 1]
    assert expected[repr({"tags": ["a"]})] == [2]
    # the one deliberate difference from InMemorySaver: JSON equality, where True is not 1
    # (Python says True == 1, so InMemorySaver matches both checkpoints for either filter)
    assert expected[repr({"flag": True})] == expected[repr({"flag": 1})] == [2, 1]
    expected[repr({"flag": True})], expected[repr({"flag": 1})] = [2], [1]
    # ... and numbers by decimal value, as jsonb: float(2**63) is 9223372036854776000, not 2**63
    assert expected[repr({"big": float(2**63)})] == expected[repr({"big": 2**63})] == [3]
    expected[repr({"big": float(2**63)})] = []
    with saver_context(durable=True, background_flush=False) as saver:
        saver.setup()
        _write(saver, thread)
        assert {repr(f): _steps(saver, thread, f) for f in FILTERS} == expected  # Redis
        saver.flush()
        saver.run_op(saver.core.hot.delete_thread_op(saver.tenant_id, [thread]))  # only Postgres has them now
        assert {repr(f): _steps(saver, thread, f) for f in FILTERS} == expected  # Postgres


# numbers past float precision too: `2**63` and `float(2**63)` are equal in Python, not in jsonb
json_leaf = st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=3) | st.sampled_from(
    [0.5, 1.0, 2**63, float(2**63), 2**53 + 1, float(2**53 + 1), 0.1, 1e-7]
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)
keys = st.sampled_from(["a", "b", "c", "ü"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(metadata=st.dictionaries(keys, json_value, max_size=3), metadata_filter=st.dictionaries(keys, json_value, min_size=1, max_size=2))
def test_the_sql_and_the_python_matcher_agree(
    pg_conn: psycopg.Connection[Any], metadata: dict[str, Any], metadata_filter: dict[str, Any]
) -> None:
    conditions, params = filters.sql_conditions(metadata_filter)
    params["metadata"] = filters.dumps_jsonb(metadata)
    sql = "SELECT count(*) FROM (SELECT %(metadata)s::jsonb AS metadata) AS c WHERE true " + " ".join(conditions)
    (count,) = pg_conn.execute(sql, params).fetchone()  # type: ignore[misc]
    assert bool(count) == filters.matches(metadata, metadata_filter)


@pytest.fixture(scope="module")
def pg_conn(request: pytest.FixtureRequest) -> Any:
    url = request.getfixturevalue("test_database_url")
    with psycopg.connect(url, autocommit=True) as conn:
        yield conn
