"""`list(filter=...)`: one meaning of a metadata filter, applied the same way by both tiers.

LangGraph's reference (`InMemorySaver`) matches a checkpoint when, for every filter key,
`metadata.get(key) == value`: a key the metadata lacks matches `None`, and a list matches only
an equal list. Postgres' `metadata @> filter` means containment instead (`{"tags": ["a"]}`
matches `["a", "b"]`, `{"k": None}` never matches a missing key), so the tiers answered
differently before a flush and after it.

Here both tiers compare JSON values, exactly: the hot tier compares the metadata as the durable
tier stores it (`normalize`, the JSONB form), and `sql_conditions` writes the same comparison in
SQL. JSON has no int/bool confusion: `True` does not match `1` (Python's `True == 1` would),
and numbers compare as jsonb compares them, by decimal value (`float(2**63)` is not `2**63`).
Containment on the non-null part stays as a prefilter, which the GIN index on `metadata` serves.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from langgraph_tiered_saver.records.audit import dumps_jsonb
from langgraph_tiered_saver.records.audit import jsonb_value as normalize


def json_equal(a: Any, b: Any) -> bool:
    """Equality of two normalized JSON values as Postgres' jsonb `=` decides it."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return _number(a) == _number(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _number(value: int | float) -> Decimal:
    """A JSON number as jsonb holds it: the exact decimal of its text. Python compares an int
    with a float exactly in binary (`2**63 == float(2**63)`), jsonb the float's shortest decimal
    (9223372036854775808 vs 9223372036854776000): the decimal text decides in both tiers."""
    return Decimal(value) if isinstance(value, int) else Decimal(repr(value))


def matches(metadata: Mapping[str, Any], metadata_filter: Mapping[str, Any]) -> bool:
    """Whether a checkpoint's (deserialized) metadata passes the filter."""
    stored = normalize(dict(metadata))
    wanted = normalize(dict(metadata_filter))
    return all(json_equal(stored.get(key), value) for key, value in wanted.items())


def sql_conditions(metadata_filter: Mapping[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """WHERE fragments (on alias `c`) and their parameters for the same test in Postgres."""
    wanted = normalize(dict(metadata_filter))
    conditions: list[str] = []
    params: dict[str, Any] = {}
    present = {key: value for key, value in wanted.items() if value is not None}
    if present:
        conditions.append("AND c.metadata @> %(mf_prefilter)s::jsonb")
        params["mf_prefilter"] = dumps_jsonb(present)
    for i, (key, value) in enumerate(wanted.items()):
        params[f"mf_key_{i}"] = key
        if value is None:
            conditions.append(f"AND coalesce(c.metadata -> %(mf_key_{i})s, 'null'::jsonb) = 'null'::jsonb")
        else:
            conditions.append(f"AND c.metadata -> %(mf_key_{i})s = %(mf_value_{i})s::jsonb")
            params[f"mf_value_{i}"] = dumps_jsonb(value)
    return conditions, params
