"""Real graphs on TieredSaver must behave exactly as on InMemorySaver, with invoke and ainvoke."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer

from tests.graphs import Flaky, build_graph, comparable, initial_input, resume
from tests.helpers import thread_config


def scenario(graph: Any, thread: str, durability: str) -> dict[str, Any]:
    """Run to the interrupt, update state, resume, then replay from before the review."""
    cfg = thread_config(thread)
    out: dict[str, Any] = {}
    first = graph.invoke(initial_input(), cfg, durability=durability)
    out["interrupt"] = [i.value for i in first["__interrupt__"]]
    state = graph.get_state(cfg)
    out["paused_next"] = state.next
    out["paused_values"] = comparable(state.values)
    graph.update_state(cfg, {"log": ["manual-note"]})
    final = graph.invoke(resume("yes"), cfg, durability=durability)
    out["final"] = comparable(final)
    history = list(graph.get_state_history(cfg))
    out["history"] = [(s.next, comparable(s.values), s.metadata.get("step")) for s in history]
    subgraph_state = graph.get_state(cfg, subgraphs=True)
    out["final_next"] = subgraph_state.next
    # Time travel: replay from the checkpoint right before the review with another answer.
    before_review = next(s for s in history if s.next == ("review",) and "manual-note" not in s.values["log"])
    replayed = graph.invoke(resume("no"), before_review.config, durability=durability)
    out["replayed"] = comparable(replayed)
    out["history_after_replay"] = len(list(graph.get_state_history(cfg)))
    return out


async def ascenario(graph: Any, thread: str, durability: str) -> dict[str, Any]:
    cfg = thread_config(thread)
    out: dict[str, Any] = {}
    first = await graph.ainvoke(initial_input(), cfg, durability=durability)
    out["interrupt"] = [i.value for i in first["__interrupt__"]]
    state = await graph.aget_state(cfg)
    out["paused_next"] = state.next
    out["paused_values"] = comparable(state.values)
    await graph.aupdate_state(cfg, {"log": ["manual-note"]})
    final = await graph.ainvoke(resume("yes"), cfg, durability=durability)
    out["final"] = comparable(final)
    history = [s async for s in graph.aget_state_history(cfg)]
    out["history"] = [(s.next, comparable(s.values), s.metadata.get("step")) for s in history]
    subgraph_state = await graph.aget_state(cfg, subgraphs=True)
    out["final_next"] = subgraph_state.next
    before_review = next(s for s in history if s.next == ("review",) and "manual-note" not in s.values["log"])
    replayed = await graph.ainvoke(resume("no"), before_review.config, durability=durability)
    out["replayed"] = comparable(replayed)
    out["history_after_replay"] = len([s async for s in graph.aget_state_history(cfg)])
    return out


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_graph_matches_in_memory_sync(saver: Any, durability: str) -> None:
    thread = f"t-{uuid.uuid4().hex[:8]}"
    expected = scenario(build_graph(InMemorySaver(), flaky=Flaky(1)), thread, durability)
    actual = scenario(build_graph(saver, flaky=Flaky(1)), thread, durability)
    assert actual == expected
    assert actual["final"]["decision"] == "yes"
    assert actual["replayed"]["decision"] == "no"
    assert "sub.summarize:inspected" in actual["final"]["log"]


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
async def test_graph_matches_in_memory_async(saver_context: Callable[..., Any], durability: str) -> None:
    thread = f"t-{uuid.uuid4().hex[:8]}"
    expected = await ascenario(build_graph(InMemorySaver(), flaky=Flaky(1)), thread, durability)
    async with saver_context() as saver:
        actual = await ascenario(build_graph(saver, flaky=Flaky(1)), thread, durability)
    assert actual == expected


def test_error_then_resume_after_fix(saver: Any) -> None:
    """A node that raises (no retry) leaves an error write; invoking again resumes from it."""
    flaky = Flaky(1)
    graph = build_graph(saver, flaky=flaky, retry=False)
    cfg = thread_config(f"t-{uuid.uuid4().hex[:8]}")
    with pytest.raises(ConnectionError, match="flaky failure 1"):
        graph.invoke(initial_input(), cfg)
    state = graph.get_state(cfg)
    assert state.next == ("flaky",)
    errors = [t.error for t in state.tasks if t.error]
    assert errors and "flaky failure 1" in str(errors[0])
    result = graph.invoke(None, cfg)
    assert "__interrupt__" in result
    assert flaky.calls == 2
    assert graph.get_state(cfg).values["attempts"] == 2


def test_encrypted_serializer_end_to_end(saver_context: Callable[..., Any], redis_url: str) -> None:
    """With an AES EncryptedSerializer the graph behaves the same and Redis holds no plaintext."""
    import redis

    serde = EncryptedSerializer.from_pycryptodome_aes(key=b"0123456789abcdef0123456789abcdef")
    thread = f"t-{uuid.uuid4().hex[:8]}"
    expected = scenario(build_graph(InMemorySaver(serde=serde), flaky=Flaky(1)), thread, "sync")
    with saver_context(serde=serde) as saver:
        actual = scenario(build_graph(saver, flaky=Flaky(1)), thread, "sync")
        assert actual == expected
        client = redis.Redis.from_url(redis_url)
        dump = b"".join(
            v
            for key in client.scan_iter(match=f"{saver.key_prefix}:*")
            if client.type(key) == b"hash"
            for v in client.hgetall(key).values()
        )
        assert dump, "nothing stored"
        assert b"refund found" not in dump and b"charged twice" not in dump
        assert b"msgpack+aes" in dump or b"+aes" in dump
