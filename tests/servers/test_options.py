"""Every option is checked when the saver is built, with a ConfigError naming it."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis
from langgraph.checkpoint.base import empty_checkpoint

from langgraph_tiered_saver import AutoLock, ConfigError, TieredSaver
from tests.helpers import TEST_TENANT

BAD_OPTIONS = [
    ("ttl_seconds", "1h"),
    ("ttl_seconds", 0.0004),  # would be PX 0: keys that never expire
    ("ttl_seconds", 0),
    ("ttl_seconds", True),
    ("refresh_ttl_on_read", "yes"),
    ("audit_json", 1),
    ("on_redis_error", "Fallback"),
    ("background_flush", None),
    ("pg_timeout", 0),
    ("pg_statement_timeout", -1),
    ("pg_lock_timeout", "2"),
    ("offload_threshold", -5),
    ("offload_threshold", 1.5),
    ("key_prefix", "x{evil}"),
    ("key_prefix", "a:b"),
    ("key_prefix", ""),
    ("schema", "Bad-Schema"),
    ("blob_store", 42),
    ("auto_lock", "yes"),
    ("flush_policy", {"quiet_seconds": 1}),
    ("pool_options", {"redis_max_connections": 3}),
    ("tenant_id", ""),
    ("redis_check_seconds", 0),
    ("redis_check_seconds", "2"),
]


@pytest.mark.parametrize(("option", "value"), BAD_OPTIONS)
def test_bad_options_are_refused_at_construction(redis_url: str, option: str, value: Any) -> None:
    client = redis.Redis.from_url(redis_url)
    with pytest.raises(ConfigError, match=option):
        TieredSaver(client, **{option: value})
    client.close()


@pytest.mark.parametrize(("option", "value"), [("ttl", 0), ("idle", "1"), ("wait", -1)])
def test_auto_lock_options_are_checked(option: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=f"AutoLock.{option}"):
        AutoLock(**{option: value})


def _put(saver: TieredSaver, thread: str) -> None:
    saver.put({"configurable": {"thread_id": thread, "checkpoint_ns": ""}}, empty_checkpoint(), {}, {})


def test_a_bare_string_is_not_a_list_of_ids(saver_context: Callable[..., Any]) -> None:
    with saver_context() as saver:
        for thread in ("o", "k", "ok"):
            _put(saver, thread)
        for call in (
            lambda: saver.prune("ok", strategy="delete"),
            lambda: saver.prune(b"ok"),
            lambda: saver.prune([1, 2]),
            lambda: saver.delete_for_runs("run-1"),
            lambda: saver.prune(["ok"], strategy="drop"),
        ):
            with pytest.raises(ConfigError):
                call()
        cfg = {"configurable": {"thread_id": "o"}}
        assert saver.get_tuple(cfg) is not None  # nothing was deleted
        assert saver.get_tuple({"configurable": {"thread_id": "k"}}) is not None
        saver.prune(["ok"], strategy="delete")
        assert saver.get_tuple({"configurable": {"thread_id": "ok"}}) is None
        assert saver.get_tuple(cfg) is not None


def test_good_options_are_accepted(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    saver = TieredSaver(client, tenant_id=TEST_TENANT, ttl_seconds=0.001, key_prefix=f"ok-{uuid.uuid4().hex[:6]}",
                        auto_lock=AutoLock(ttl=1, wait=None, idle=5))  # fmt: skip
    assert saver.ttl_seconds == 0.001
    saver.close()
    client.close()
