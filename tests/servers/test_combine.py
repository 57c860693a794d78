"""A step's writes ride with the put that closes the step (combine.py): one Redis round trip per
superstep, LangGraph's promise kept (a step's writes are in Redis before the next step starts),
and every way out of a holding tested: taken by the put, sent alone when no put comes, sent at
once for special writes, direct calls, reads, flushes and close, failures contained."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis

from langgraph_tiered_saver import FlushPolicy, TieredSaver
from langgraph_tiered_saver._sansio.schedule import Scheduler
from langgraph_tiered_saver.hot import keys as K
from langgraph_tiered_saver.hot.combine import Held, WriteCombiner
from langgraph_tiered_saver.locking.run_locks import RUNTIME_KEY
from langgraph_tiered_saver.observability.metrics import Metrics
from langgraph_tiered_saver.records.codec import WriteRecord
from langgraph_tiered_saver.records.ids import ThreadRef
from tests.graphs import chain_graph
from tests.helpers import QUIET_OFF, TEST_TENANT, thread_config, wait_for

# --------------------------------------------------------------------------- the rules, no I/O


def _ref(checkpoint_id: str, ns: str = "", thread: str = "t1") -> ThreadRef:
    return ThreadRef("acme", thread, ns, checkpoint_id)


def _records(n: int = 1) -> list[tuple[str, WriteRecord]]:
    return [(f"f{i}", WriteRecord("task", i, "ch", ("json", b"1"), "", 0.0)) for i in range(n)]


def test_the_put_closing_a_step_takes_the_writes_of_its_parent_only() -> None:
    c = WriteCombiner(10.0, Metrics())
    c.closed_by(_ref("0001"), "0001")  # checkpoint 0001 put: the open one
    assert c.hold(_ref("0001"), _records(2), [])
    assert c.hold(_ref("0002"), _records(1), [])  # a newer one whose put has not come yet
    taken = c.closed_by(_ref("0001"), "0002")  # the put of 0002 closes 0001's step
    assert [h.ref.checkpoint_id for h in taken] == ["0001"] and len(taken[0].records) == 2
    assert [h.ref.checkpoint_id for h in c.closed_by(_ref("0002"), "0003")] == ["0002"]


def test_writes_for_a_closed_step_are_not_held() -> None:
    c = WriteCombiner(10.0, Metrics())
    c.closed_by(_ref("0005"), "0005")
    assert not c.hold(_ref("0004"), _records(), [])  # its step closed: written at once
    assert c.hold(_ref("0005"), _records(), [])


def test_namespaces_and_threads_are_held_apart() -> None:
    c = WriteCombiner(10.0, Metrics())
    assert c.hold(_ref("0001", ns="child:1"), _records(), [])
    assert c.hold(_ref("0001", thread="t2"), _records(), [])
    assert c.closed_by(_ref("0001"), "0002") == []  # the root namespace of t1 held nothing
    assert [h.ref.checkpoint_ns for h in c.take("acme", "t1")] == ["child:1"]
    assert [h.ref.thread_id for h in c.take("acme")] == ["t2"]


def test_a_read_takes_its_own_namespace_only() -> None:
    c = WriteCombiner(10.0, Metrics())
    assert c.take("acme", "t1", "") == []  # nothing held
    for ref in (_ref("0001"), _ref("0001", ns="child:1"), _ref("0001", thread="t2")):
        assert c.hold(ref, _records(), [])
    assert c.take("acme", "t1", "missing") == [] and c.take("other", "t1", "") == []
    assert [(h.ref.thread_id, h.ref.checkpoint_ns) for h in c.take("acme", "t1", "child:1")] == [("t1", "child:1")]
    assert [(h.ref.thread_id, h.ref.checkpoint_ns) for h in c.take("acme", "t1", "")] == [("t1", "")]
    assert [h.ref.thread_id for h in c.take("acme")] == ["t2"]


def test_holdings_fall_due_after_the_hold_time() -> None:
    c = WriteCombiner(0.05, Metrics())
    c.hold(_ref("0001"), _records(), [])
    assert c.take_due(time.monotonic()) == []
    due = c.next_due()
    assert due is not None
    assert len(c.take_due(due)) == 1


def test_the_sender_contains_failures_and_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    c = WriteCombiner(0.01, metrics)
    sent: list[Held] = []

    def send(held: Held) -> None:
        if held.ref.thread_id == "bad":
            raise RuntimeError("Redis said no")
        sent.append(held)

    scheduler = Scheduler("test-sender", metrics)
    c.attach(send, scheduler)
    c.hold(_ref("0001", thread="bad"), _records(), [])
    c.hold(_ref("0001", thread="good"), _records(), [])
    assert wait_for(lambda: len(sent) == 1 and metrics.counter("write_sender_errors") == 1)
    assert "could not write 1 held pending writes of thread acme/bad" in caplog.text
    c.hold(_ref("0002", thread="good"), _records(), [])  # the thread lives on
    assert wait_for(lambda: len(sent) == 2)
    c.hold(_ref("0003", thread="good"), _records(), [])
    scheduler.stop()
    c.stop()  # sends what is held
    assert len(sent) == 3


# --------------------------------------------------------------------------- real servers


class RedisCalls:
    """Records the command names of every round trip a saver's sync driver makes."""

    def __init__(self, saver: TieredSaver) -> None:
        self.trips: list[list[str]] = []
        driver = saver._sync
        inner = driver._redis

        def counted(call: Any) -> Any:
            self.trips.append([str(c[0]) for c in call.commands])
            return inner(call)

        driver._redis = counted  # type: ignore[method-assign]


def _wr(redis_url: str, saver: TieredSaver, thread: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.hlen(K.thread_keys(saver.key_prefix, TEST_TENANT, thread).wr))
    finally:
        client.close()


def _in_run(stored: Any) -> dict[str, Any]:
    """The config of a stored checkpoint as LangGraph's loop passes it to put_writes (with the
    run's runtime)."""
    return {"configurable": {**stored["configurable"], RUNTIME_KEY: object()}}


def test_one_round_trip_per_superstep_and_each_steps_writes_in_redis_before_the_next(
    saver_context: Callable[..., Any], redis_url: str
) -> None:
    # a hold time no loaded machine outlasts: the rule under test is the combining, not the timer
    with saver_context(durable=True, flush_policy=FlushPolicy(**QUIET_OFF), write_hold_seconds=5.0) as saver:
        saver.setup()
        config = thread_config()
        thread = config["configurable"]["thread_id"]
        seen: list[tuple[int, int]] = []
        graph = chain_graph(saver, nodes=6, on_node=lambda i: seen.append((i, _wr(redis_url, saver, thread))))
        graph.invoke({"n": 0}, config, durability="sync")  # warm: scripts loaded, epoch known
        calls = RedisCalls(saver)
        config = thread_config()
        thread = config["configurable"]["thread_id"]
        seen.clear()
        assert graph.invoke({"n": 0}, config, durability="sync")["n"] == 6
        scripts = [trip for trip in calls.trips if "EVALSHA" in trip]
        puts = len(list(saver.list(config)))
        assert len(scripts) <= puts + 2, calls.trips  # one per checkpoint, the first read (+1 slack)
        assert all(trip == ["EVALSHA"] for trip in scripts), calls.trips  # one script, no MULTI
        assert saver.metrics.counter("writes_sent_alone") == 0  # the step's writes rode with its put
        # LangGraph's promise: when node i runs, the writes of every earlier task are in Redis
        for i, writes in seen:
            assert writes >= i, seen
        assert saver.metrics.counter("writes_held") > 0


def test_a_resume_rides_with_the_put_of_the_step_it_resumes(saver_context: Callable[..., Any]) -> None:
    """The resume value (`__resume__`) and the resumed task's writes are held like any task's
    writes: the step's put carries them, and the resumed run sees them (same state as on
    InMemorySaver); an interrupt or error would take them along (the special writes test)."""
    from langgraph.checkpoint.memory import InMemorySaver

    from tests.graphs import build_graph, comparable, initial_input, resume

    with saver_context(durable=True, flush_policy=FlushPolicy(**QUIET_OFF), write_hold_seconds=5.0) as saver:
        saver.setup()
        config = thread_config()
        graph = build_graph(saver)
        graph.invoke(initial_input(), config)  # to the interrupt
        paused = final_checkpoint(saver, config)
        held, alone = saver.metrics.counter("writes_held"), saver.metrics.counter("writes_sent_alone")
        calls = RedisCalls(saver)
        final = graph.invoke(resume("yes"), config)
        scripts = [t for t in calls.trips if t == ["EVALSHA"]]  # the run's, before the reads below
        assert saver.metrics.counter("writes_held") > held  # the resume value among them
        assert saver.metrics.counter("writes_sent_alone") == alone
        # the resumed run's round trips: its first read, the DeltaChannel's history, then one
        # script per checkpoint it put
        steps = sum(1 for t in saver.list(config) if t.config["configurable"]["checkpoint_id"] > paused)
        assert len(scripts) == steps + 2, scripts
        mem = build_graph(InMemorySaver())
        mem_config = thread_config()
        mem.invoke(initial_input(), mem_config)
        assert comparable(final) == comparable(mem.invoke(resume("yes"), mem_config))


def final_checkpoint(saver: TieredSaver, config: dict[str, Any]) -> str:
    found = saver.get_tuple(config)
    assert found is not None
    return str(found.config["configurable"]["checkpoint_id"])


def test_writes_no_put_takes_are_sent_alone_and_direct_calls_are_never_held(
    saver_context: Callable[..., Any], redis_url: str
) -> None:
    with saver_context(write_hold_seconds=0.05) as saver:
        config = thread_config()
        thread = config["configurable"]["thread_id"]
        stored = saver.put(config, _checkpoint("0001"), {"step": 0}, {})
        saver.put_writes(_in_run(stored), [("n", 1)], "task-a")
        assert _wr(redis_url, saver, thread) == 0  # held for the put closing the step
        assert wait_for(lambda: _wr(redis_url, saver, thread) == 1, timeout=2)
        assert saver.metrics.counter("writes_sent_alone") == 1
        saver.put_writes(stored, [("n", 2)], "task-b")  # a direct call: in Redis on return
        assert _wr(redis_url, saver, thread) == 2


def test_a_special_write_a_read_and_close_send_what_is_held(saver_context: Callable[..., Any], redis_url: str) -> None:
    with saver_context(write_hold_seconds=30.0) as saver:
        config = thread_config()
        thread = config["configurable"]["thread_id"]
        stored = saver.put(config, _checkpoint("0001"), {"step": 0}, {})
        saver.put_writes(_in_run(stored), [("n", 1)], "task-a")
        assert _wr(redis_url, saver, thread) == 0
        saver.put_writes(_in_run(stored), [("__interrupt__", "why?")], "task-b")
        assert _wr(redis_url, saver, thread) == 2  # the interrupt took the held write along
        saver.put_writes(_in_run(stored), [("n", 3)], "task-c")
        found = saver.get_tuple(stored)
        assert found is not None and ("task-c", "n", 3) in found.pending_writes  # a read sends first
        saver.put_writes(_in_run(stored), [("n", 4)], "task-d")
        held_at_close = _wr(redis_url, saver, thread)
    assert _wr(redis_url, saver, thread) == held_at_close + 1  # close() sent it


def test_the_async_saver_carries_writes_too(saver_context: Callable[..., Any]) -> None:
    import asyncio

    async def run() -> int:
        async with saver_context(durable=False) as saver:
            config = thread_config()
            result = await chain_graph(saver, nodes=4).ainvoke({"n": 0}, config)
            assert saver.metrics.counter("writes_held") > 0
            history = [c async for c in saver.alist(config)]
            assert all(c.pending_writes is not None for c in history)
            return int(result["n"])

    assert asyncio.run(run()) == 4


def _checkpoint(checkpoint_id: str) -> Any:
    from langgraph.checkpoint.base import empty_checkpoint

    checkpoint = empty_checkpoint()
    checkpoint["id"] = f"1ef{checkpoint_id}-0000-6000-8000-{uuid.uuid4().hex[:12]}"
    return checkpoint



def test_a_read_while_the_sender_writes_a_holding_still_sees_it(saver_context: Callable[..., Any]) -> None:
    """The sender takes a holding that fell due and is writing it when a read comes (a read right
    after a run, on a loaded machine): the read must not find it gone from both the combiner and
    Redis. It writes it too (a no-op if the sender's write lands first)."""
    import threading

    with saver_context(write_hold_seconds=0.01) as saver:
        combiner = saver.core.combiner
        assert combiner is not None
        config = thread_config()
        stored = saver.put(config, _checkpoint("0001"), {"step": 0}, {})
        sender_started, release = threading.Event(), threading.Event()
        saver.put_writes(_in_run(stored), [("warm", 0)], "task-0")  # starts the sender thread
        assert wait_for(lambda: combiner.next_due() is None, timeout=2)  # sent alone
        sender = combiner._sender
        assert sender is not None
        send = sender.send

        def slow_send(held: Held) -> Any:
            sender_started.set()
            release.wait(5)
            return send(held)

        sender.send = slow_send
        saver.put_writes(_in_run(stored), [("n", 1)], "task-a")
        assert sender_started.wait(2)  # the sender took it and is writing it
        found = saver.get_tuple(stored)
        release.set()
        assert found is not None and ("task-a", "n", 1) in found.pending_writes
        assert wait_for(lambda: combiner.take(TEST_TENANT) == [], timeout=2)  # the sender's write is over
        again = saver.get_tuple(stored)
        assert again is not None and [w for w in again.pending_writes if w[0] == "task-a"] == [("task-a", "n", 1)]


def test_an_interrupt_waits_in_process_for_its_checkpoint_put_under_way() -> None:
    """The interrupt's flush needs its checkpoint in Redis: a put that landed here answers at
    once, one under way here is waited for without I/O (sleeps only), and anything else is
    "unknown" (the caller then asks Redis)."""
    from langgraph_tiered_saver._core.ops import LandedPuts
    from langgraph_tiered_saver._sansio.io import Sleep

    landed = LandedPuts()
    assert landed.state(_ref("c1")) == "unknown"
    landed.started(_ref("c1"), "c1")
    assert landed.state(_ref("c1")) == "flying" and landed.state(_ref("c1", ns="sub")) == "unknown"

    op = landed.landed_op(_ref("c1"), timeout=1.0)
    assert isinstance(next(op), Sleep)  # under way: it sleeps, it does not ask Redis
    landed.ended(_ref("c1"), "c1", landed=True)
    with pytest.raises(StopIteration) as stop:
        op.send(None)
    assert stop.value.value is True
    assert landed.state(_ref("c1")) == "landed" and landed.state(_ref("c0")) == "unknown"

    landed.started(_ref("c2"), "c2")
    landed.ended(_ref("c2"), "c2", landed=False)  # written through to Postgres, or refused
    op = landed.landed_op(_ref("c2"), timeout=1.0)
    with pytest.raises(StopIteration) as stop:
        next(op)
    assert stop.value.value is False


def test_landed_puts_remember_a_bounded_number_of_namespaces(monkeypatch: pytest.MonkeyPatch) -> None:
    from langgraph_tiered_saver._core.ops import LandedPuts

    monkeypatch.setattr(LandedPuts, "LIMIT", 3)
    landed = LandedPuts()
    for i in range(10):
        landed.started(_ref("c1", thread=f"t{i}"), "c1")
        landed.ended(_ref("c1", thread=f"t{i}"), "c1", landed=True)
        landed.started(_ref("c2", thread=f"t{i}"), "c2")  # never ends: a run that stopped
    assert len(landed) == 6
    assert landed.state(_ref("c1", thread="t9")) == "landed" and landed.state(_ref("c1", thread="t0")) == "unknown"
