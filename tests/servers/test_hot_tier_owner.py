"""One hot tier per durable schema: a second key prefix over the same schema is refused.

The reproduction (a blue/green deploy): blue and green savers with different key prefixes over
one schema. Green's turn is flushed; blue holds an older copy of the thread in its own Redis
keys, answers from it and its next turn forks the thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from langgraph_tiered_saver import FlushPolicy, HotTierConflictError
from tests.graphs import two_step_graph
from tests.helpers import QUIET_OFF, thread_config

MANUAL = FlushPolicy(**QUIET_OFF)  # type: ignore[arg-type]


def test_a_second_key_prefix_over_one_schema_is_refused_naming_both(saver_context: Callable[..., Any]) -> None:
    with saver_context(durable=True, key_prefix="blue-tier", flush_policy=MANUAL) as blue:
        blue.setup()
        blue.setup()  # idempotent for its own prefix
        green_context = saver_context(durable=True, key_prefix="green-tier", schema=blue.schema, flush_policy=MANUAL)
        with green_context as green, pytest.raises(HotTierConflictError, match=r"'blue-tier'.*'green-tier'"):
            green.setup()


def test_a_drained_hot_tier_is_replaced_deliberately(saver_context: Callable[..., Any]) -> None:
    cfg = thread_config()
    with saver_context(durable=True, key_prefix="blue-tier", flush_policy=MANUAL) as blue:
        blue.setup()
        two_step_graph(blue).invoke({"log": ["turn 1"]}, cfg)
        blue.flush()
        with saver_context(durable=True, key_prefix="green-tier", schema=blue.schema, flush_policy=MANUAL) as green:
            green.setup(replace_hot_tier=True)  # blue is drained and stops serving
            out = two_step_graph(green).invoke({"log": ["turn 2"]}, cfg)  # read from Postgres
            assert out["log"] == ["turn 1", "a", "b", "turn 2", "a", "b"]
        with pytest.raises(HotTierConflictError, match="'green-tier'"):
            blue.setup()  # the old tier cannot come back unnoticed
