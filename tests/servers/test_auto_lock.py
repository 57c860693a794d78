"""Automatic run locks (`TieredSaver(auto_lock=...)`, DESIGN contract 8) against real Redis: the
saver takes the thread's lock when a run starts, holds it through the run (subgraphs included)
and lets go at the run's end, at an interrupt, at an error, when idle, or when told to."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypedDict

import pytest
import redis
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

from langgraph_tiered_saver import AutoLock, ConfigError, ThreadLockedError, TieredSaver
from langgraph_tiered_saver.hot import keys as K
from langgraph_tiered_saver.locking.run_locks import run_finished
from tests.faults.test_locks import _assert_linear, _history, _runs_in_order
from tests.helpers import TEST_TENANT, thread_config
from tests.lock_child import NODES, run_config, slow_chain

TENANT = TEST_TENANT


def _thread() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"




class Probe:
    """Reads the thread's lock key from inside nodes, with a client of its own."""

    def __init__(self, redis_url: str, saver: TieredSaver, thread: str) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.key = K.lock_key(saver.key_prefix, TENANT, thread)
        self.seen: list[bool] = []

    def held(self) -> bool:
        return bool(self.client.exists(self.key))

    def record(self) -> None:
        self.seen.append(self.held())


class S(TypedDict, total=False):
    n: int
    approved: bool


def approval_graph(checkpointer: Any, probe: Probe, fail: dict[str, bool] | None = None) -> Any:
    """prepare -> approve (interrupt) -> finish; `fail["finish"]` makes finish raise once."""

    def prepare(state: S) -> dict[str, Any]:
        probe.record()
        return {"n": 1}

    def approve(state: S) -> dict[str, Any]:
        probe.record()
        return {"approved": bool(interrupt("approve?"))}

    def finish(state: S) -> dict[str, Any]:
        probe.record()
        if fail is not None and fail.get("finish"):
            fail["finish"] = False
            raise RuntimeError("finish failed")
        return {"n": state["n"] + 1}

    g = StateGraph(S)
    for name, fn in (("prepare", prepare), ("approve", approve), ("finish", finish)):
        g.add_node(name, fn)
    g.add_edge(START, "prepare")
    g.add_edge("prepare", "approve")
    g.add_edge("approve", "finish")
    g.add_edge("finish", END)
    return g.compile(checkpointer=checkpointer)


def _linear(saver: TieredSaver, thread: str) -> list[Any]:
    history = _history(saver, thread)
    _assert_linear(history)
    return history


def test_run_holds_the_lock_and_lets_go_at_interrupt_error_and_end(
    saver_context: Callable[..., Any], redis_url: str
) -> None:
    thread = _thread()
    cfg = thread_config(thread)
    with saver_context(auto_lock=True) as saver, saver_context(key_prefix=saver.key_prefix) as other:
        probe = Probe(redis_url, saver, thread)
        fail = {"finish": True}
        graph = approval_graph(saver, probe, fail)

        out = graph.invoke({"n": 0}, cfg)
        assert "__interrupt__" in out
        assert probe.seen == [True, True]  # held in every node of the run
        assert not probe.held()  # the interrupt let it go: the person may resume from anywhere
        assert not saver.core.fences

        # another process (a saver without the lock) may write now
        other.put_writes(saver.get_tuple(cfg).config, [("n", 5)], "task-x")  # type: ignore[union-attr]

        with pytest.raises(RuntimeError, match="finish failed"):
            graph.invoke(Command(resume=True), cfg)
        assert probe.seen[2:] == [True, True]
        assert not probe.held()  # the error write let it go

        assert graph.invoke(None, cfg)["n"] == 2  # retry the failed node
        assert probe.seen[-1] is True
        assert not probe.held()  # a final checkpoint ends the run
        assert saver.core.run_locks is not None and saver.core.run_locks.held(saver._ref(cfg)) is None

        # reads outside a run take no lock
        graph.get_state(cfg)
        list(graph.get_state_history(cfg))
        assert not probe.held()
        _linear(saver, thread)


def test_writer_outside_the_run_is_refused_while_it_runs(saver_context: Callable[..., Any], redis_url: str) -> None:
    thread = _thread()
    cfg = thread_config(thread)
    with saver_context(auto_lock=AutoLock(wait=0)) as saver, \
            saver_context(key_prefix=saver.key_prefix, auto_lock=AutoLock(wait=0)) as other:  # refused at once
        probe = Probe(redis_url, saver, thread)
        graph = approval_graph(saver, probe)
        graph.invoke({"n": 0}, cfg)
        refused: list[BaseException] = []

        def meddle(state: S) -> dict[str, Any]:
            for attempt in (
                lambda: other.put_writes(saver.get_tuple(cfg).config, [("n", 9)], "meddler"),  # type: ignore[union-attr]
                lambda: slow_chain(other, nodes=1, sleep=0).invoke({"n": 0}, cfg),
            ):
                try:
                    attempt()
                except ThreadLockedError as exc:
                    refused.append(exc)
            return {"n": 1}

        g = StateGraph(S)
        g.add_node("meddle", meddle)
        g.add_edge(START, "meddle")
        g.add_edge("meddle", END)
        g.compile(checkpointer=saver).invoke({"n": 0}, cfg)
        assert len(refused) == 2
        assert not probe.held()

        # wait=0: a run that finds the thread locked fails at once, before reading or writing
        with other.thread_lock(cfg, timeout=10):
            before = len(list(saver.list(cfg)))
            started = time.monotonic()
            with pytest.raises(ThreadLockedError):
                graph.invoke({"n": 0}, cfg)
            assert time.monotonic() - started < 1.0
            assert len(list(saver.list(cfg))) == before
        _linear(saver, thread)


def test_concurrent_runs_in_one_process_are_serialised(saver_context: Callable[..., Any]) -> None:
    thread = _thread()
    with saver_context(auto_lock=AutoLock(ttl=5.0, wait=30.0)) as saver:
        graph = slow_chain(saver, sleep=0.02)
        results: dict[str, int] = {}
        errors: list[BaseException] = []

        def run(run_id: str) -> None:
            try:
                results[run_id] = graph.invoke({"n": 0}, run_config(thread, run_id))["n"]
            except BaseException as exc:
                errors.append(exc)

        workers = [threading.Thread(target=run, args=(f"run-{i}",)) for i in range(3)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
        assert not errors, errors
        assert sorted(results.values()) == [NODES, 2 * NODES, 3 * NODES]
        blocks = _runs_in_order(_linear(saver, thread))
        assert sorted(blocks) == ["run-0", "run-1", "run-2"], blocks  # no interleaving


async def test_concurrent_async_runs_are_serialised(saver_context: Callable[..., Any], redis_url: str) -> None:
    thread = _thread()
    async with saver_context(auto_lock=AutoLock(ttl=5.0, wait=30.0)) as saver:
        probe = Probe(redis_url, saver, thread)
        graph = slow_chain(saver, sleep=0.01)
        outs = await asyncio.gather(*(graph.ainvoke({"n": 0}, run_config(thread, f"run-{i}")) for i in range(3)))
        assert sorted(o["n"] for o in outs) == [NODES, 2 * NODES, 3 * NODES]
        assert not probe.held()
        history = list(reversed([t async for t in saver.alist(thread_config(thread))]))
        _assert_linear(history)
        blocks = _runs_in_order(history)
        assert sorted(blocks) == ["run-0", "run-1", "run-2"], blocks

        # interrupt and resume on the async path
        a_graph = approval_graph(saver, probe)
        cfg = thread_config(_thread())
        probe2 = Probe(redis_url, saver, cfg["configurable"]["thread_id"])
        await a_graph.ainvoke({"n": 0}, cfg)
        assert not probe2.held()
        assert (await a_graph.ainvoke(Command(resume=True), cfg))["n"] == 2
        assert not probe2.held()


def test_subgraph_runs_under_the_parent_lock(saver_context: Callable[..., Any], redis_url: str) -> None:
    thread = _thread()
    with saver_context(auto_lock=True) as saver:
        probe = Probe(redis_url, saver, thread)

        def inner(state: S) -> dict[str, Any]:
            probe.record()
            return {"n": state["n"] + 1}

        sub = StateGraph(S)
        sub.add_node("inner", inner)
        sub.add_edge(START, "inner")
        sub.add_edge("inner", END)

        def after(state: S) -> dict[str, Any]:
            probe.record()  # the subgraph's final checkpoint did not release the parent's lock
            return {"n": state["n"] + 1}

        g = StateGraph(S)
        g.add_node("sub", sub.compile())
        g.add_node("after", after)
        g.add_edge(START, "sub")
        g.add_edge("sub", "after")
        g.add_edge("after", END)
        assert g.compile(checkpointer=saver).invoke({"n": 0}, thread_config(thread))["n"] == 2
        assert probe.seen == [True, True]
        assert not probe.held()


def test_static_interrupt_is_released_when_idle_or_on_request(saver_context: Callable[..., Any], redis_url: str) -> None:
    """A static `interrupt_before` ends a run without a write the saver could see."""
    with saver_context(auto_lock=AutoLock(ttl=0.6, wait=5.0, idle=0.5)) as saver:
        graph = slow_chain(saver, nodes=3, sleep=0).builder.compile(checkpointer=saver, interrupt_before=["node1"])
        thread = _thread()
        probe = Probe(redis_url, saver, thread)
        graph.invoke({"n": 0}, thread_config(thread))
        assert probe.held()
        deadline = time.monotonic() + 5
        while probe.held() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not probe.held(), "the idle run's lock was not released"
        assert saver.core.run_locks is not None and saver.core.run_locks.held(saver._ref(thread_config(thread))) is None
        assert graph.invoke(None, thread_config(thread))["n"] == 3

    with saver_context(auto_lock=True) as saver:
        graph = slow_chain(saver, nodes=3, sleep=0).builder.compile(checkpointer=saver, interrupt_before=["node1"])
        thread = _thread()
        probe = Probe(redis_url, saver, thread)
        graph.invoke({"n": 0}, thread_config(thread))
        assert probe.held()
        saver.release_run_lock(thread_config(thread))
        assert not probe.held()
        assert graph.invoke(None, thread_config(thread))["n"] == 3
        assert not probe.held()


def test_durable_saver_with_auto_lock(saver_context: Callable[..., Any], redis_url: str) -> None:
    """The interrupt's synchronous flush to Postgres happens under the lock, then it goes."""
    thread = _thread()
    cfg = thread_config(thread)
    with saver_context(durable=True, auto_lock=True) as saver:
        saver.setup()
        probe = Probe(redis_url, saver, thread)
        graph = approval_graph(saver, probe)
        graph.invoke({"n": 0}, cfg)
        assert not probe.held()
        saver.run_op(saver.core.hot.delete_thread_op(saver.tenant_id, [thread]))  # Redis lost the thread
        assert graph.invoke(Command(resume=True), cfg)["n"] == 2  # resumed from Postgres, locked
        assert probe.seen == [True, True, True, True]
        assert not probe.held()


def test_run_end_detection_and_options() -> None:
    assert run_finished({"updated_channels": ["n", "messages"]})
    assert not run_finished({"updated_channels": ["n", "branch:to:agent"]})
    assert not run_finished({"updated_channels": ["join:a+b:c"]})
    assert not run_finished({"updated_channels": ["__start__"]})
    assert not run_finished({"updated_channels": ["__pregel_tasks"]})
    assert not run_finished({})  # older format: unknown, left to the idle release
    with pytest.raises(ConfigError):
        AutoLock(ttl=0)
    with pytest.raises(ConfigError):
        AutoLock(wait=-1)
    with pytest.raises(ConfigError):
        TieredSaver(redis.Redis(), auto_lock="yes")  # type: ignore[arg-type]


def test_two_resumers_never_both_run_the_refund_with_default_settings(
    saver_context: Callable[..., Any]
) -> None:
    """Two savers (as two processes) resume one paused thread at the same moment, with no lock
    option given: the refund runs once; the later resumer finds the thread past its interrupt."""
    thread = _thread()
    cfg = thread_config(thread)
    refunds: list[str] = []
    gate = threading.Barrier(2)

    def refund_graph(checkpointer: Any, who: str) -> Any:
        def approve(state: S) -> dict[str, Any]:
            return {"approved": bool(interrupt("refund $129.99?"))}

        def refund(state: S) -> dict[str, Any]:
            refunds.append(who)
            time.sleep(0.3)  # the refund call: the other resumer arrives meanwhile
            return {"n": state.get("n", 0) + 1}

        g = StateGraph(S)
        g.add_node("approve", approve)
        g.add_node("refund", refund)
        g.add_edge(START, "approve")
        g.add_edge("approve", "refund")
        g.add_edge("refund", END)
        return g.compile(checkpointer=checkpointer)

    with saver_context(durable=True) as first, saver_context(durable=True, key_prefix=first.key_prefix,
                                                             schema=first.schema) as second:  # fmt: skip
        first.setup()
        assert "__interrupt__" in refund_graph(first, "first").invoke({"n": 0}, cfg)
        results: dict[str, Any] = {}

        def resume(saver: Any, who: str) -> None:
            gate.wait()
            results[who] = refund_graph(saver, who).invoke(Command(resume=True), cfg)

        workers = [threading.Thread(target=resume, args=(s, w)) for s, w in ((first, "first"), (second, "second"))]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=60)
        assert len(refunds) == 1, refunds
        assert all(r["n"] == 1 for r in results.values()), results
        _linear(first, thread)
