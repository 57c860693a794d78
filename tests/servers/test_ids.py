"""Any tenant or thread id PostgresSaver accepts works, and ids cannot reach each other's keys.

Before ids were encoded in keys, `'a b'`, `'über'`, `{`, `|` and ids over 256 characters
raised `InvalidIdError`; now they are percent-encoded into the hash tag (see `keys`).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from langgraph.checkpoint.postgres import PostgresSaver

from langgraph_tiered_saver.hot import keys as K
from tests.graphs import two_step_graph
from tests.helpers import thread_config

# Text Postgres can store: no NUL, no lone surrogates (which UTF-8 cannot encode either).
ids = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=40)
CRAFTED = [
    "a b", "über", "{x}", "a|b", "}{", "%7B", "{", "|", "tab\there", "new\nline", "😀",
    "x" * 1024, "é" * 1024, "lts:v1:{t|x}:idx", "../..", "",
]  # fmt: skip


def all_keys(tenant: str, thread: str) -> set[str]:
    return {
        *K.thread_keys("p", tenant, thread),
        K.lock_key("p", tenant, thread),
        K.tenant_threads_key("p", tenant, K.shard_of(tenant, thread)) + "#" + thread,  # a registry entry
        "dirty#" + K.dirty_member(tenant, thread),
    }


def cluster_tag(key: str) -> str:
    """The part of `key` Redis Cluster hashes: the text between the first `{` and the next `}`."""
    match = re.search(r"\{([^}]*)\}", key)
    assert match is not None and match.group(1), key
    return match.group(1)


@settings(max_examples=400, deadline=None)
@given(ids, ids, ids, ids)
def test_two_different_ids_never_share_a_key(t1: str, th1: str, t2: str, th2: str) -> None:
    if (t1, th1) == (t2, th2):
        return
    assert not all_keys(t1, th1) & all_keys(t2, th2)
    shard = K.shard_of(t1, th1)
    tags = {cluster_tag(k) for k in K.thread_keys("p", t1, th1)} | {cluster_tag(K.lock_key("p", t1, th1))}
    tags |= {cluster_tag(k) for k in (K.tenant_threads_key("p", t1, shard), K.dirty_key("p", shard))}
    tags |= {cluster_tag(k) for k in (K.generation_key("p", shard), K.server_key("p", shard), K.epoch_key("p", shard))}
    assert tags == {f"s{shard:04d}"}  # one slot with its shard's indexes, and nothing forged


@settings(max_examples=400, deadline=None)
@given(ids, ids)
def test_ids_round_trip_through_the_outbox_index(tenant: str, thread: str) -> None:
    assert K.split_dirty_member(K.dirty_member(tenant, thread)) == (tenant, thread)
    assert K.decode_id(K.encode_id(thread)) == thread


def test_safe_ids_stay_readable_in_keys_outside_the_shard_tag() -> None:
    shard = K.shard_of("acme", "user:42/a.b@c+d=e~f-g_h")
    assert K.thread_keys("lts", "acme", "user:42/a.b@c+d=e~f-g_h").idx == (
        f"lts:v2:{{s{shard:04d}}}:t:acme|user:42/a.b@c+d=e~f-g_h:idx"
    )
    assert 0 <= shard < K.SHARDS


@pytest.fixture
def official(test_database_url: str) -> Iterator[PostgresSaver]:
    with PostgresSaver.from_conn_string(test_database_url) as saver:
        saver.setup()
        yield saver




def test_crafted_ids_work_like_postgres_saver_in_both_tiers(
    saver_context: Callable[..., Any], official: PostgresSaver, redis_url: str
) -> None:
    run = uuid.uuid4().hex[:6]
    crafted = [c + run if c else c for c in CRAFTED if len(c) < 1000] + [c for c in CRAFTED if len(c) >= 1000]
    crafted = [c for c in crafted if c]  # "" is no id in either saver
    expected = {thread: two_step_graph(official).invoke({"log": [thread[:20]]}, thread_config(thread)) for thread in crafted}
    with saver_context(durable=True, tenant_id="acme") as saver:
        saver.setup()
        graph = two_step_graph(saver)
        for thread in crafted:
            assert graph.invoke({"log": [thread[:20]]}, thread_config(thread)) == expected[thread]
        saver.flush()
        for thread in crafted:  # Redis forgets them: Postgres answers, under the same ids
            saver.run_op(saver.core.hot.delete_thread_op("acme", [thread]))
            assert graph.get_state(thread_config(thread)).values == expected[thread]
            assert next(iter(graph.get_state_history(thread_config(thread)))).config["configurable"]["thread_id"] == thread
        listed = {t.config["configurable"]["thread_id"] for t in saver.list(None)}
        assert set(crafted) <= listed
        for thread in crafted:
            saver.delete_thread(thread)
            assert saver.get_tuple(thread_config(thread)) is None


def test_crafted_tenant_and_thread_pairs_stay_apart(saver_context: Callable[..., Any], redis_url: str) -> None:
    """`(a, b|c)` and `(a|b, c)` would share the tag `{a|b|c}` without encoding; `}{` pairs
    would forge one; `%7B` and `{` would collide under a naive escape."""
    pairs = [("a", "b|c"), ("a|b", "c"), ("t}", "{x"), ("t", "}{x"), ("%7B", "x"), ("{", "x")]
    with saver_context(durable=True, tenant_id=None) as saver:
        saver.setup()
        graph = two_step_graph(saver)
        for tenant, thread in pairs:
            cfg = {"configurable": {"thread_id": thread, "tenant_id": tenant}}
            graph.invoke({"log": [f"{tenant}/{thread}"]}, cfg)
        for tenant, thread in pairs:
            cfg = {"configurable": {"thread_id": thread, "tenant_id": tenant}}
            assert graph.get_state(cfg).values["log"][0] == f"{tenant}/{thread}"
        victim = saver.for_tenant("a|b")
        saver.for_tenant("a").delete_thread("b|c")
        assert victim.get_tuple(thread_config("c")) is not None
        keys = {k.decode() for k in redis.Redis.from_url(redis_url).scan_iter(match=f"{saver.key_prefix}:*")}
        tags = {cluster_tag(k) for k in keys if "{" in k}
        assert all(re.fullmatch(r"s\d{4}", tag) for tag in tags)  # no id forged a tag
        for tenant, thread in pairs[1:]:
            assert K.thread_keys(saver.key_prefix, tenant, thread).idx in keys
