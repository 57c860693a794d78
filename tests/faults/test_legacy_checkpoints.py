"""Checkpoints of older LangGraph versions (format `v` < 4) load migrated, as on PostgresSaver.

Before format 4 a checkpoint's pending `Send`s were TASKS writes of its parent checkpoint; the
official PostgresSaver moves them into the checkpoint's TASKS channel on read. The same old
history is written into PostgresSaver and TieredSaver (put/put_writes, as an old LangGraph did)
and every read is compared field by field: from Redis, from Postgres after a flush and the loss
of Redis, async, and a real Send graph resumed from its old checkpoints.
"""

from __future__ import annotations

import operator
import uuid
from collections.abc import Callable, Iterator
from typing import Annotated, Any, TypedDict

import psycopg
import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import CheckpointTuple
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.serde.types import TASKS
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from devtools.servers import PrivateRedis, delete_keys
from langgraph_tiered_saver import TieredSaver
from langgraph_tiered_saver._core.legacy import apply_sends, parent_key
from langgraph_tiered_saver.blobs.offloader import filesystem_blobs
from langgraph_tiered_saver.durable import ops as pg_ops
from langgraph_tiered_saver.flushing.ops import FlushPolicy
from langgraph_tiered_saver.hot.ops import HotOps
from tests.helpers import TEST_TENANT

NO_AUTO_FLUSH = FlushPolicy(quiet_seconds=3600.0, every_n_checkpoints=0, on_close=False)
SUB_NS = "child:7c1e"


def _cfg(thread: str, **extra: Any) -> RunnableConfig:
    return {"configurable": {"thread_id": thread, "checkpoint_ns": "", **extra}}


def _version(n: int) -> str:
    return f"{n:032}.{0.25 * n:016}"


# ---------------------------------------------------------------- an old history, written as of old


class Step(TypedDict):
    ns: str
    checkpoint: dict[str, Any]
    metadata: dict[str, Any]
    parent: str | None
    writes: list[tuple[str, str, list[tuple[str, Any]]]]  # (task_id, task_path, writes)


def _checkpoint(
    v: int, values: dict[str, Any], versions: dict[str, str], **extra: Any
) -> dict[str, Any]:
    return {
        "v": v,
        "id": str(uuid6(clock_seq=v)),
        "ts": "2024-06-01T12:00:00+00:00",
        "channel_values": values,
        "channel_versions": versions,
        "versions_seen": {"__input__": {}},
        **extra,
    }


def old_history() -> list[Step]:
    """Format 1..3 checkpoints (plus one of format 4) whose parents carry TASKS writes with
    Send packets, in the root namespace and in a subgraph's."""
    c0 = _checkpoint(1, {"items": ["a", "b"]}, {"items": _version(1)}, pending_sends=[])
    c1 = _checkpoint(2, {"items": ["a", "b"]}, {"items": _version(1), "branch:plan": _version(2)})
    c2 = _checkpoint(3, {"items": ["a", "b"], "results": ["a!"]},
                     {"items": _version(1), "results": _version(3)})  # fmt: skip
    c3 = _checkpoint(3, {"items": ["a", "b"], "results": ["a!", "b!"]},
                     {"items": _version(1), "results": _version(4)})  # fmt: skip
    c4 = _checkpoint(4, {"items": ["a", "b"], "results": ["a!", "b!"]},
                     {"items": _version(1), "results": _version(4)})  # fmt: skip
    s0 = _checkpoint(2, {"detail": "x"}, {"detail": _version(1)})
    s1 = _checkpoint(3, {"detail": "y"}, {"detail": _version(2)})
    plan = [
        ("items", ["a", "b"]),
        (TASKS, Send("work", {"item": "a"})),
        (TASKS, Send("work", {"item": "b"})),
    ]
    return [
        Step(ns="", checkpoint=c0, metadata={"source": "input", "step": -1, "parents": {}}, parent=None,
             writes=[("task-plan", "~plan", plan), ("task-extra", "~extra", [(TASKS, Send("audit", 1))])]),
        Step(ns="", checkpoint=c1, metadata={"source": "loop", "step": 0, "parents": {}}, parent=c0["id"],
             writes=[("task-work-a", "~work", [("results", ["a!"])])]),
        Step(ns="", checkpoint=c2, metadata={"source": "loop", "step": 1, "parents": {}}, parent=c1["id"],
             writes=[("task-retry", "~work", [(TASKS, Send("work", {"item": "b", "retry": True}))])]),
        Step(ns="", checkpoint=c3, metadata={"source": "loop", "step": 2, "parents": {}}, parent=c2["id"],
             writes=[("task-late", "~late", [(TASKS, Send("late", None))])]),
        Step(ns="", checkpoint=c4, metadata={"source": "loop", "step": 3, "parents": {}}, parent=c3["id"],
             writes=[]),
        Step(ns=SUB_NS, checkpoint=s0, metadata={"source": "loop", "step": 0, "parents": {"": c1["id"]}},
             parent=None, writes=[("task-sub", "~sub", [(TASKS, Send("inspect", {"deep": [1, 2]}))])]),
        Step(ns=SUB_NS, checkpoint=s1, metadata={"source": "loop", "step": 1, "parents": {"": c1["id"]}},
             parent=s0["id"], writes=[]),
    ]  # fmt: skip


def write_history(saver: Any, thread: str, steps: list[Step]) -> None:
    for step in steps:
        conf: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": step["ns"]}
        if step["parent"]:
            conf["checkpoint_id"] = step["parent"]
        ck = step["checkpoint"]
        saved = saver.put(
            {"configurable": conf}, ck, step["metadata"], dict(ck["channel_versions"])
        )
        for task_id, task_path, writes in step["writes"]:
            saver.put_writes(saved, writes, task_id, task_path)


async def awrite_history(saver: Any, thread: str, steps: list[Step]) -> None:
    for step in steps:
        conf: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": step["ns"]}
        if step["parent"]:
            conf["checkpoint_id"] = step["parent"]
        ck = step["checkpoint"]
        saved = await saver.aput(
            {"configurable": conf}, ck, step["metadata"], dict(ck["channel_versions"])
        )
        for task_id, task_path, writes in step["writes"]:
            await saver.aput_writes(saved, writes, task_id, task_path)


# ---------------------------------------------------------------- comparing reads


def _ids(config: RunnableConfig | None) -> tuple[str, str, str] | None:
    if config is None:
        return None
    c = config["configurable"]
    return c["thread_id"], c.get("checkpoint_ns", ""), c["checkpoint_id"]


def view(t: CheckpointTuple | None) -> dict[str, Any] | None:
    """Every field LangGraph reads from a tuple."""
    if t is None:
        return None
    return {
        "config": _ids(t.config),
        "parent": _ids(t.parent_config),
        "checkpoint": t.checkpoint,
        "metadata": t.metadata,
        "pending_writes": t.pending_writes,
    }


def read_cases(
    thread: str, steps: list[Step]
) -> list[tuple[str, str, RunnableConfig, dict[str, Any]]]:
    """(label, method, config, options): latest, each checkpoint by id, list with its options."""
    sub = {"configurable": {"thread_id": thread, "checkpoint_ns": SUB_NS}}
    cases: list[tuple[str, str, RunnableConfig, dict[str, Any]]] = [
        ("latest", "get", _cfg(thread), {}),
        ("latest sub", "get", sub, {}),
    ]
    for step in steps:
        cid = step["checkpoint"]["id"]
        conf: RunnableConfig = {
            "configurable": {"thread_id": thread, "checkpoint_ns": step["ns"], "checkpoint_id": cid}
        }
        cases.append((f"get v{step['checkpoint']['v']} {cid}", "get", conf, {}))
    cases += [
        ("list", "list", _cfg(thread), {}),
        ("list sub", "list", sub, {}),
        ("list all namespaces", "list", {"configurable": {"thread_id": thread}}, {}),
        (
            "list before",
            "list",
            _cfg(thread),
            {"before": _cfg(thread, checkpoint_id=steps[3]["checkpoint"]["id"])},
        ),
        ("list limit", "list", _cfg(thread), {"limit": 3}),
        ("list filter", "list", _cfg(thread), {"filter": {"source": "loop"}}),
    ]
    return cases


def reads(saver: Any, thread: str, steps: list[Step]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, method, conf, options in read_cases(thread, steps):
        if method == "get":
            out[label] = view(saver.get_tuple(conf))
        else:
            out[label] = [view(t) for t in saver.list(conf, **options)]
    return out


async def areads(saver: Any, thread: str, steps: list[Step]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, method, conf, options in read_cases(thread, steps):
        if method == "get":
            out[label] = view(await saver.aget_tuple(conf))
        else:
            out[label] = [view(t) async for t in saver.alist(conf, **options)]
    return out


def assert_same(got: dict[str, Any], expected: dict[str, Any]) -> None:
    assert list(got) == list(expected)
    for label in expected:
        assert got[label] == expected[label], label


@pytest.fixture
def official(test_database_url: str) -> Iterator[PostgresSaver]:
    with PostgresSaver.from_conn_string(test_database_url) as saver:
        saver.setup()
        yield saver


@pytest.fixture
def reference(official: PostgresSaver) -> tuple[str, list[Step], dict[str, Any]]:
    """The old history in PostgresSaver, and what it reads back."""
    thread = f"legacy-{uuid.uuid4().hex[:8]}"
    steps = old_history()
    write_history(official, thread, steps)
    expected = reads(official, thread, steps)
    # the reference itself shows the migration: sends moved in from the parent, versioned
    latest_v3 = expected[f"get v3 {steps[3]['checkpoint']['id']}"]["checkpoint"]
    assert latest_v3["channel_values"][TASKS] == [Send("work", {"item": "b", "retry": True})]
    assert latest_v3["channel_versions"][TASKS] == _version(4)
    first = expected[f"get v2 {steps[1]['checkpoint']['id']}"]["checkpoint"]["channel_values"][
        TASKS
    ]
    assert first == [Send("audit", 1), Send("work", {"item": "a"}), Send("work", {"item": "b"})]
    assert TASKS not in expected["latest"]["checkpoint"]["channel_values"]  # format 4: as stored
    return thread, steps, expected


# ---------------------------------------------------------------- reads


def test_redis_reads_match_postgres_saver(
    saver_context: Callable[..., Any], reference: tuple[str, list[Step], dict[str, Any]]
) -> None:
    thread, steps, expected = reference
    with saver_context() as saver:  # Redis only: parents' writes can only come from Redis
        write_history(saver, thread, steps)
        assert_same(reads(saver, thread, steps), expected)


def test_hot_reads_of_a_durable_saver_match_postgres_saver(
    saver_context: Callable[..., Any], reference: tuple[str, list[Step], dict[str, Any]]
) -> None:
    thread, steps, expected = reference
    with saver_context(durable=True, flush_policy=NO_AUTO_FLUSH) as saver:
        saver.setup()
        write_history(saver, thread, steps)
        assert_same(reads(saver, thread, steps), expected)
        assert saver.metrics.counter("read_hits_postgres") == 0


def test_postgres_reads_after_flush_and_redis_loss_match_postgres_saver(
    saver_context: Callable[..., Any],
    redis_url: str,
    reference: tuple[str, list[Step], dict[str, Any]],
) -> None:
    """Flushed, then Redis loses the thread: checkpoints and their parents' writes come from
    Postgres. Reads re-warm single checkpoints (not their parents), so the second pass mixes
    a hot checkpoint with a parent only Postgres has."""
    thread, steps, expected = reference
    with saver_context(durable=True, flush_policy=NO_AUTO_FLUSH) as saver:
        saver.setup()
        write_history(saver, thread, steps)
        saver.flush()
        assert delete_keys(redis_url, f"{saver.key_prefix}*") > 0
        assert_same(reads(saver, thread, steps), expected)
        assert saver.metrics.counter("read_hits_postgres") >= 1
        assert_same(reads(saver, thread, steps), expected)  # now partly re-warmed


async def test_async_reads_match_postgres_saver(
    saver_context: Callable[..., Any],
    redis_url: str,
    reference: tuple[str, list[Step], dict[str, Any]],
) -> None:
    thread, steps, expected = reference
    async with saver_context(durable=True, flush_policy=NO_AUTO_FLUSH) as saver:
        await saver.asetup()
        await awrite_history(saver, thread, steps)
        assert_same(await areads(saver, thread, steps), expected)
        await saver.aflush()
        delete_keys(redis_url, f"{saver.key_prefix}*")
        assert_same(await areads(saver, thread, steps), expected)
        assert saver.metrics.counter("read_hits_postgres") >= 1


# ---------------------------------------------------------------- round trips


class Calls:
    """Counts the parent-writes fetches of each tier."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.redis = 0
        self.postgres = 0
        fetch_writes, channel_writes_op = HotOps.fetch_writes_op, pg_ops.channel_writes_op

        def counted_fetch(hot: HotOps, *args: Any) -> Any:
            self.redis += 1
            return (yield from fetch_writes(hot, *args))

        def counted_select(*args: Any) -> Any:
            self.postgres += 1
            return (yield from channel_writes_op(*args))

        monkeypatch.setattr(HotOps, "fetch_writes_op", counted_fetch)
        monkeypatch.setattr(pg_ops, "channel_writes_op", counted_select)


def test_list_fetches_all_parents_at_once(
    saver_context: Callable[..., Any], redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    thread = f"legacy-{uuid.uuid4().hex[:8]}"
    steps = old_history()
    calls = Calls(monkeypatch)
    with saver_context(durable=True, flush_policy=NO_AUTO_FLUSH) as saver:
        saver.setup()
        write_history(saver, thread, steps)
        listed = list(saver.list({"configurable": {"thread_id": thread}}))
        assert sum(TASKS in t.checkpoint["channel_values"] for t in listed) == 3
        assert (calls.redis, calls.postgres) == (1, 0)  # five old checkpoints, one lookup
        saver.flush()
        delete_keys(redis_url, f"{saver.key_prefix}*")
        assert len(list(saver.list({"configurable": {"thread_id": thread}}))) == len(steps)
        assert (calls.redis, calls.postgres) == (2, 1)


def test_list_across_threads_migrates_each_from_its_own_thread(
    saver_context: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    reference: tuple[str, list[Step], dict[str, Any]],
) -> None:
    """`list(None)`: two threads with the same checkpoint ids; each tuple gets the sends of its
    own thread's parent, all parents fetched at once."""
    thread, steps, expected = reference
    other = f"{thread}-other"
    with saver_context() as saver:
        write_history(saver, thread, steps)
        write_history(saver, other, steps[:2])
        calls = Calls(monkeypatch)
        listed = [view(t) for t in saver.list(None)]
        assert calls.redis == 1
    mine = [v for v in listed if v is not None and v["config"][0] == thread]
    assert mine == expected["list all namespaces"]
    theirs = [v for v in listed if v is not None and v["config"][0] == other]
    assert [v["checkpoint"] for v in theirs] == [
        v["checkpoint"]
        for v in expected["list all namespaces"]
        if v["config"][2] in {steps[0]["checkpoint"]["id"], steps[1]["checkpoint"]["id"]}
        and v["config"][1] == ""
    ]


def test_current_checkpoints_cost_no_lookup(
    saver_context: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    thread = f"t-{uuid.uuid4().hex[:8]}"
    calls = Calls(monkeypatch)
    with saver_context(durable=True, flush_policy=NO_AUTO_FLUSH) as saver:
        saver.setup()
        graph = send_graph(saver)
        graph.invoke({"items": ["a", "b"]}, _cfg(thread))
        graph.invoke(None, _cfg(thread))
        assert len(list(graph.get_state_history(_cfg(thread)))) >= 3
        assert (calls.redis, calls.postgres) == (0, 0)


def test_parent_key_and_apply_sends() -> None:
    steps = old_history()
    t = CheckpointTuple(
        _cfg("t", checkpoint_id=steps[1]["checkpoint"]["id"]), steps[1]["checkpoint"],
        {}, _cfg("t", checkpoint_id=steps[0]["checkpoint"]["id"]), [],
    )  # fmt: skip
    assert parent_key(t) == ("t", "", steps[0]["checkpoint"]["id"])
    assert parent_key(t._replace(parent_config=None)) is None
    assert parent_key(t._replace(checkpoint={**t.checkpoint, "v": 4})) is None
    assert apply_sends(t, [], lambda: "x") is t
    moved = apply_sends(t, [Send("n", 1)], lambda: "x")
    assert moved.checkpoint["channel_values"][TASKS] == [Send("n", 1)]
    assert moved.checkpoint["channel_versions"][TASKS] == _version(2)
    assert TASKS not in t.checkpoint["channel_versions"]  # the input is not changed
    empty = t._replace(checkpoint={**t.checkpoint, "channel_versions": {}})
    assert apply_sends(empty, [Send("n", 1)], lambda: "first").checkpoint["channel_versions"] == {
        TASKS: "first"
    }


# ---------------------------------------------------------------- resume


class FanOut(TypedDict, total=False):
    items: list[str]
    results: Annotated[list[str], operator.add]


def send_graph(checkpointer: Any) -> Any:
    """plan -> Send("work", item) per item -> work; paused before the fan-out runs."""

    def fan(state: FanOut) -> list[Send]:
        return [Send("work", {"items": [item]}) for item in state["items"]]

    g = StateGraph(FanOut)
    g.add_node("plan", lambda s: {"items": [i.upper() for i in s["items"]]})
    g.add_node("work", lambda s: {"results": [f"done:{s['items'][0]}"]})
    g.add_edge(START, "plan")
    g.add_conditional_edges("plan", fan, ["work"])
    g.add_edge("work", END)
    return g.compile(checkpointer=checkpointer, interrupt_before=["work"])


def downgraded_history(
    thread: str,
) -> list[
    tuple[RunnableConfig, dict[str, Any], dict[str, Any], list[tuple[str, str, Any]], str | None]
]:
    """A paused Send run, rewritten in format 3: each checkpoint loses its TASKS channel (its
    sends stay where an old LangGraph kept them, as TASKS writes of its parent)."""
    source = InMemorySaver()
    send_graph(source).invoke({"items": ["a", "b", "c"]}, _cfg(thread))
    history = list(reversed(list(source.list(_cfg(thread)))))
    assert any(TASKS in t.checkpoint["channel_values"] for t in history)
    out = []
    for t in history:
        ck: dict[str, Any] = {**t.checkpoint, "v": 3}
        ck["channel_values"] = {k: v for k, v in ck["channel_values"].items() if k != TASKS}
        ck["channel_versions"] = {k: v for k, v in ck["channel_versions"].items() if k != TASKS}
        ck.pop("updated_channels", None)
        parent = t.parent_config["configurable"]["checkpoint_id"] if t.parent_config else None
        out.append((t.config, ck, dict(t.metadata), list(t.pending_writes or []), parent))
    return out


def load_downgraded(saver: Any, thread: str, history: list[Any]) -> None:
    for _config, ck, metadata, writes, parent in history:
        conf = _cfg(thread, checkpoint_id=parent) if parent else _cfg(thread)
        saved = saver.put(conf, ck, metadata, dict(ck["channel_versions"]))
        by_task: dict[str, list[tuple[str, Any]]] = {}
        for task_id, channel, value in writes:
            by_task.setdefault(task_id, []).append((channel, value))
        for task_id, task_writes in by_task.items():
            saver.put_writes(saved, task_writes, task_id, "")


def resume(saver: Any, thread: str) -> dict[str, Any]:
    graph = send_graph(saver)
    paused = graph.get_state(_cfg(thread))
    final = graph.invoke(None, _cfg(thread))
    return {
        "paused_next": paused.next,
        "paused_tasks": sorted(t.name for t in paused.tasks),
        "final": final,
        "history": [(s.next, s.values) for s in graph.get_state_history(_cfg(thread))],
    }


def test_old_send_run_resumes_as_on_postgres_saver(
    saver_context: Callable[..., Any], official: PostgresSaver, redis_url: str
) -> None:
    """A run paused before its Send fan-out, stored in format 3, resumes on TieredSaver as on
    PostgresSaver: from Redis, and from Postgres after a flush and the loss of Redis."""
    thread = f"send-{uuid.uuid4().hex[:8]}"
    history = downgraded_history(thread)
    load_downgraded(official, thread, history)
    expected = resume(official, thread)
    assert expected["paused_tasks"] == ["work", "work", "work"]
    assert sorted(expected["final"]["results"]) == ["done:A", "done:B", "done:C"]
    with saver_context(durable=True, flush_policy=NO_AUTO_FLUSH) as saver:
        saver.setup()
        load_downgraded(saver, thread, history)
        assert resume(saver, thread) == expected
        cold = f"{thread}-cold"
        load_downgraded(saver, cold, history)
        saver.flush()
        delete_keys(redis_url, f"{saver.key_prefix}*")
        assert resume(saver, cold) == expected


def test_offloaded_sends_match_postgres_saver(
    saver_context: Callable[..., Any],
    redis_url: str,
    tmp_path: Any,
    reference: tuple[str, list[Step], dict[str, Any]],
) -> None:
    """Every value (the sends included) in the blob store: pointers are resolved, both tiers."""
    thread, steps, expected = reference
    blobs = filesystem_blobs(tmp_path)
    opts = dict(durable=True, flush_policy=NO_AUTO_FLUSH, blob_store=blobs, offload_threshold=1)
    with saver_context(**opts) as saver:
        saver.setup()
        write_history(saver, thread, steps)
        assert_same(reads(saver, thread, steps), expected)  # inline in Redis until the flush
        saver.flush()
        assert any(tmp_path.rglob("*"))  # the flush offloaded them; Redis keeps the pointers
        assert_same(reads(saver, thread, steps), expected)
        delete_keys(redis_url, f"{saver.key_prefix}*")
        assert_same(reads(saver, thread, steps), expected)


@pytest.mark.faults
def test_redis_down_fallback_reads_parents_from_postgres(
    make_private_redis: Callable[..., PrivateRedis],
    test_database_url: str,
    reference: tuple[str, list[Step], dict[str, Any]],
) -> None:
    """`on_redis_error="fallback"` with Redis down (a private server, killed): checkpoints and
    their parents' writes come from Postgres alone."""
    thread, steps, expected = reference
    server = make_private_redis()
    schema = f"lts_{uuid.uuid4().hex[:10]}"
    opts: dict[str, Any] = dict(
        tenant_id=TEST_TENANT, schema=schema, flush_policy=NO_AUTO_FLUSH, on_redis_error="fallback"
    )
    try:
        with TieredSaver.from_conn_string(server.url, test_database_url, **opts) as saver:
            saver.setup()
            write_history(saver, thread, steps)
            saver.flush()
            server.kill()
            assert_same(reads(saver, thread, steps), expected)
            assert saver.metrics.counter("redis_fallbacks") > 0
    finally:
        with psycopg.connect(test_database_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
