"""Oversized values go to the blob store: a 5 MB tool output with the default (Postgres),
filesystem and S3 stores."""

from __future__ import annotations

import base64
import operator
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
import redis
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

from langgraph_tiered_saver import FlushPolicy
from langgraph_tiered_saver.blobs import FilesystemBlobStore, tenant_component
from langgraph_tiered_saver.blobs.offloader import filesystem_blobs, s3_blobs
from langgraph_tiered_saver.hot import keys as K
from tests.helpers import wait_for

FIVE_MB = 5 * 1024 * 1024


class ToolState(TypedDict, total=False):
    output: str
    decision: str
    log: Annotated[list[str], operator.add]


def tool_graph(checkpointer: Any, payload: str) -> Any:
    g = StateGraph(ToolState)
    g.add_node("tool", lambda s: {"output": payload, "log": ["tool"]})
    g.add_node("review", lambda s: {"decision": str(interrupt({"size": len(s["output"])})), "log": ["review"]})
    g.add_node("finish", lambda s: {"log": [f"finish:{s['decision']}:{len(s['output'])}"]})
    g.add_edge(START, "tool")
    g.add_edge("tool", "review")
    g.add_edge("review", "finish")
    g.add_edge("finish", END)
    return g.compile(checkpointer=checkpointer)


def thread_memory(client: redis.Redis, saver: Any, thread: str) -> int:
    """MEMORY USAGE of every key of the thread, counting every field (SAMPLES 0): the default
    samples five fields of a hash and can miss the one big value."""
    keys = K.thread_keys(saver.key_prefix, saver.tenant_id, thread)
    return sum(client.memory_usage(k, samples=0) or 0 for k in keys)


def run_offload_scenario(saver: Any, redis_url: str, digests: Callable[[], set[str]]) -> None:
    payload = base64.b64encode(os.urandom(FIVE_MB * 3 // 4)).decode()  # 5 MB, incompressible-ish
    assert len(payload) >= FIVE_MB
    thread = f"t-{uuid.uuid4().hex[:8]}"
    cfg = {"configurable": {"thread_id": thread}}
    graph = tool_graph(saver, payload)
    paused = graph.invoke({"log": []}, cfg)
    assert paused["__interrupt__"][0].value == {"size": len(payload)}

    client = redis.Redis.from_url(redis_url)
    # the interrupt's flush put the value in the blob store before `invoke` returned; the
    # acknowledgement that swaps Redis' copy for the pointer goes right after, from the saver's
    # background thread (flushing/acks.py)
    assert wait_for(lambda: thread_memory(client, saver, thread) < 1024 * 1024)
    assert len(digests()) == 1  # stored once, although several checkpoints reference it

    final = graph.invoke(Command(resume="yes"), cfg)
    assert final["output"] == payload
    assert final["log"][-1] == f"finish:yes:{len(payload)}"
    # Time travel: back to the pause, a new branch with another answer.
    history = list(graph.get_state_history(cfg))
    before_review = next(s for s in history if s.next == ("review",))
    graph.invoke(None, before_review.config)
    replayed = graph.invoke(Command(resume="no"), cfg)
    assert replayed["output"] == payload
    assert replayed["log"][-1] == f"finish:no:{len(payload)}"
    # Postgres alone (Redis copy dropped) still restores the value through the pointer.
    saver.flush()
    saver.run_op(saver.core.hot.delete_thread_op(saver.tenant_id, [thread]))
    assert graph.get_state(cfg).values["output"] == payload
    assert thread_memory(client, saver, thread) < 1024 * 1024

    saver.delete_thread(thread)
    assert digests() == set()


def pg_digests(saver: Any) -> set[str]:
    """The saver's tenant's digests in its Postgres blob store."""
    from langgraph_tiered_saver.blobs import PgBlobStore

    return set(saver.run_op(PgBlobStore(saver.schema, saver.tenant_id).digests_op()))


def test_five_mb_tool_output_postgres_by_default(saver_context: Callable[..., Any], redis_url: str) -> None:
    with saver_context(durable=True) as saver:
        saver.setup()
        run_offload_scenario(saver, redis_url, lambda: pg_digests(saver))


async def test_five_mb_tool_output_postgres_async(saver_context: Callable[..., Any]) -> None:
    """The async driver runs the same store on its own pool."""
    payload = "a" * 300_000 + uuid.uuid4().hex
    async with saver_context(durable=True) as saver:
        await saver.asetup()
        graph = tool_graph(saver, payload)
        cfg = {"configurable": {"thread_id": f"t-{uuid.uuid4().hex[:8]}"}}
        await graph.ainvoke({"log": []}, cfg)
        assert (await graph.aget_state(cfg)).values["output"] == payload
        assert len(pg_digests(saver)) == 1
        await saver.adelete_thread(cfg["configurable"]["thread_id"])
        assert pg_digests(saver) == set()


def test_redis_only_saver_keeps_values_inline_by_default(saver_context: Callable[..., Any], redis_url: str) -> None:
    with saver_context() as saver:
        assert saver.core.offload.stores is None
        thread = f"t-{uuid.uuid4().hex[:8]}"
        tool_graph(saver, "y" * 300_000).invoke({"log": []}, {"configurable": {"thread_id": thread}})
        assert thread_memory(redis.Redis.from_url(redis_url), saver, thread) > 300_000


def test_blob_store_option_is_checked(saver_context: Callable[..., Any]) -> None:
    from langgraph_tiered_saver.errors import ConfigError

    with pytest.raises(ConfigError, match="durable tier"):
        saver_context(blob_store="postgres").__enter__()
    with pytest.raises(ConfigError, match="blob_store"):
        saver_context(blob_store="s3").__enter__()


def test_five_mb_tool_output_filesystem(saver_context: Callable[..., Any], redis_url: str, tmp_path: Path) -> None:
    with saver_context(durable=True, blob_store=filesystem_blobs(tmp_path)) as saver:
        saver.setup()
        store = FilesystemBlobStore(tmp_path / tenant_component(saver.tenant_id))
        run_offload_scenario(saver, redis_url, lambda: set(store.list_digests()))


def test_five_mb_tool_output_s3(
    saver_context: Callable[..., Any], redis_url: str, moto_endpoint: str, s3_bucket: str
) -> None:
    factory = s3_blobs(
        s3_bucket,
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    with saver_context(durable=True, blob_store=factory) as saver:
        saver.setup()
        store = factory(saver.tenant_id)
        run_offload_scenario(saver, redis_url, lambda: set(store.list_digests()))


def test_blob_shared_by_a_copy_survives_deleting_the_source(
    saver_context: Callable[..., Any], tmp_path: Path
) -> None:
    """copy_thread shares the blob; deleting the source must not delete what the copy needs."""
    payload = "x" * 400_000 + uuid.uuid4().hex
    with saver_context(durable=True, blob_store=filesystem_blobs(tmp_path)) as saver:
        saver.setup()
        store = FilesystemBlobStore(tmp_path / tenant_component(saver.tenant_id))
        src, dst = f"src-{uuid.uuid4().hex[:6]}", f"dst-{uuid.uuid4().hex[:6]}"
        tool_graph(saver, payload).invoke({"log": []}, {"configurable": {"thread_id": src}})
        saver.copy_thread(src, dst)
        saver.delete_thread(src)
        assert len(set(store.list_digests())) == 1
        state = tool_graph(saver, payload).get_state({"configurable": {"thread_id": dst}})
        assert state.values["output"] == payload
        saver.delete_thread(dst)
        assert set(store.list_digests()) == set()


def test_offload_off_keeps_values_inline(saver_context: Callable[..., Any], redis_url: str) -> None:
    with saver_context(blob_store=None) as saver:
        thread = f"t-{uuid.uuid4().hex[:8]}"
        tool_graph(saver, "y" * 300_000).invoke({"log": []}, {"configurable": {"thread_id": thread}})
        client = redis.Redis.from_url(redis_url)
        assert thread_memory(client, saver, thread) > 300_000


@pytest.mark.parametrize("threshold", [1024])
def test_small_threshold_offloads_writes_too(saver_context: Callable[..., Any], tmp_path: Path, threshold: int) -> None:
    """Pending writes over the threshold (a tool's output before the next checkpoint) are
    offloaded as well, and come back intact in pending_writes."""
    with saver_context(blob_store=filesystem_blobs(tmp_path), offload_threshold=threshold) as saver:
        from langgraph.checkpoint.base import empty_checkpoint

        cfg = saver.put({"configurable": {"thread_id": "w1", "checkpoint_ns": ""}}, empty_checkpoint(), {}, {})
        saver.put_writes(cfg, [("output", "z" * 5000)], task_id="task-1")
        tup = saver.get_tuple(cfg)
        assert tup is not None and tup.pending_writes == [("task-1", "output", "z" * 5000)]
        assert len(list(FilesystemBlobStore(tmp_path / tenant_component(saver.tenant_id)).list_digests())) == 1


def test_a_large_value_costs_the_hot_path_no_blob_store_io(saver_context: Callable[..., Any], redis_url: str) -> None:
    """With a durable tier, the flush sends oversized values to the blob store: a put of one
    works with Postgres (and so the default blob store) down, and the value is in Redis."""
    dead = "postgresql://postgres@127.0.0.1:1/test?connect_timeout=1"
    options = {"postgres_url": dead, "pg_timeout": 0.5, "background_flush": False, "flush_policy": FlushPolicy(on_close=False)}
    with saver_context(durable=True, **options) as saver:
        thread = f"t-{uuid.uuid4().hex[:8]}"
        payload = "q" * 300_000
        checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = {"output": payload}
        checkpoint["channel_versions"] = {"output": "1"}
        config = saver.put({"configurable": {"thread_id": thread}}, checkpoint, {"step": 0}, {"output": "1"})
        latest = saver.get_tuple({"configurable": {"thread_id": thread}})
        assert latest is not None and latest.checkpoint["channel_values"]["output"] == payload
        assert latest.config == config
        assert thread_memory(redis.Redis.from_url(redis_url), saver, thread) > 300_000

