"""One hot tier per durable schema.

Each hot tier (a Redis key prefix) answers reads from its own copies and writes to its own
outbox. Two of them over one Postgres schema, as in a blue/green deploy with a new prefix, each
see the other's flushed turns as missing or older and continue from their own copy: a silent
fork. So a schema records the prefix that feeds it (`hot_tier` table, one row), `setup()` claims
it, and a saver with another prefix is refused with `HotTierConflictError` naming both. Moving a
schema to a new prefix is deliberate: drain the old hot tier (`flush`, stop its savers), then
`setup(replace_hot_tier=True)` with the new one.
"""

from __future__ import annotations

from langgraph_tiered_saver._sansio.io import Op, PgCall, PgStatement
from langgraph_tiered_saver.durable import sql
from langgraph_tiered_saver.errors import HotTierConflictError


def claim_op(schema: str, key_prefix: str, *, replace: bool = False) -> Op[None]:
    """Record `key_prefix` as the schema's hot tier, or raise if another one holds it."""
    statements = (
        PgStatement(sql.render(sql.CLAIM_HOT_TIER, schema), {"prefix": key_prefix, "replace": replace}),
        PgStatement(sql.render(sql.HOT_TIER_OWNER, schema), fetch=True),
    )
    _, rows = yield PgCall(statements)
    owner = str(rows[0][0])
    if owner != key_prefix:
        raise HotTierConflictError(
            f"schema {schema!r} is fed by the hot tier with key_prefix {owner!r}; this saver uses {key_prefix!r}. "
            "Two hot tiers over one schema fork threads: use the same key_prefix, or drain the old hot tier "
            "(flush, stop its savers) and call setup(replace_hot_tier=True)"
        )
    return None
