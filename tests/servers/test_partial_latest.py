"""A latest checkpoint Redis holds only in part never gives way to an older one from Postgres.

LangGraph's migration of pre-v4 checkpoints renames channels (`start:node` -> `branch:to:node`)
and keeps their versions, so the next checkpoint references channel versions no put ever
stored. Redis then holds that latest checkpoint without some values; Postgres, asked for the
same checkpoint, may not have it yet (or ever): the thread's latest must stay that checkpoint
(missing values read as absent, as on PostgresSaver), not move back to Postgres' latest."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langgraph.checkpoint.base import create_checkpoint, empty_checkpoint

from langgraph_tiered_saver.flushing.ops import FlushPolicy
from tests.helpers import QUIET_OFF, thread_config


def test_partly_held_latest_is_not_replaced_by_an_older_postgres_latest(saver_context: Callable[..., Any]) -> None:
    with saver_context(durable=True, flush_policy=FlushPolicy(**QUIET_OFF)) as saver:
        saver.setup()
        cfg = thread_config()
        first = empty_checkpoint()
        first["channel_values"] = {"a": "one"}
        first["channel_versions"] = {"a": saver.get_next_version(None, None)}
        cfg1 = saver.put(cfg, first, {"step": 0}, first["channel_versions"])
        saver.flush()
        second = create_checkpoint(first, None, 1)
        second["channel_versions"] = {**first["channel_versions"], "renamed": first["channel_versions"]["a"]}
        saver.put(cfg1, second, {"step": 1}, {})  # "renamed" at that version was never stored
        latest = saver.get_tuple(cfg)
        assert latest is not None
        assert latest.checkpoint["id"] == second["id"]
        assert latest.checkpoint["channel_values"] == {"a": "one"}
