"""Tenancy (DESIGN contract 7): every call acts for exactly one tenant or raises, never a default.

The same graph (a subgraph that pauses at an `interrupt()`) runs for two tenants on one thread id,
through each way a tenant reaches the saver: a bound view (`for_tenant`), the run's config, and
`tenant_scope`. What LangGraph shows (subgraph state, history, update_state, resume, time travel,
returned configs) is compared field by field with the official PostgresSaver on the same graph.
"""

from __future__ import annotations

import operator
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Annotated, Any, TypedDict

import psycopg
import pytest
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, StateSnapshot, interrupt

from langgraph_tiered_saver import (
    InvalidIdError,
    TenantMismatchError,
    TenantRequiredError,
    tenant_scope,
)
from tests.helpers import thread_config

TENANTS = ("acme", "globex")


class Parent(TypedDict, total=False):
    log: Annotated[list[str], operator.add]
    answer: str


class Child(TypedDict, total=False):
    log: Annotated[list[str], operator.add]
    answer: str


def build(checkpointer: Any) -> Any:
    """start -> sub(ask: interrupt -> done) -> finish: the pause happens inside the subgraph."""

    def ask(state: Child) -> dict[str, Any]:
        answer = interrupt({"question": "refund?", "seen": len(state.get("log", []))})
        return {"log": [f"sub.ask:{answer}"], "answer": str(answer)}

    sub = StateGraph(Child)
    sub.add_node("ask", ask)
    sub.add_node("done", lambda s: {"log": ["sub.done"]})
    sub.add_edge(START, "ask")
    sub.add_edge("ask", "done")
    sub.add_edge("done", END)

    g = StateGraph(Parent)
    g.add_node("start", lambda s: {"log": ["start"]})
    g.add_node("sub", sub.compile())
    g.add_node("finish", lambda s: {"log": [f"finish:{s.get('answer')}"]})
    g.add_edge(START, "start")
    g.add_edge("start", "sub")
    g.add_edge("sub", "finish")
    g.add_edge("finish", END)
    return g.compile(checkpointer=checkpointer)


def _keys(config: Any) -> list[str] | None:
    return None if config is None else sorted(config["configurable"])


def _snapshot(snap: Any) -> dict[str, Any]:
    """What a user reads off a StateSnapshot, minus ids that differ per saver (uuid6, task ids)."""
    return {
        "values": snap.values,
        "next": snap.next,
        "config_keys": _keys(snap.config),
        "parent_config_keys": _keys(snap.parent_config),
        "step": (snap.metadata or {}).get("step"),
        "source": (snap.metadata or {}).get("source"),
        "interrupts": [i.value for i in snap.interrupts],
        "tasks": [
            (t.name, [i.value for i in t.interrupts], _snapshot(t.state) if isinstance(t.state, StateSnapshot) else _keys(t.state))
            for t in snap.tasks
        ],
    }


def scenario(
    graph: Any, config: dict[str, Any], scope: Callable[[], AbstractContextManager[Any]], tenant: str
) -> dict[str, Any]:
    """One tenant's life on the thread; `scope()` wraps the calls that carry no tenant by
    themselves (get_state with subgraphs), as the README tells multi-tenant users to."""
    out: dict[str, Any] = {}
    out["paused"] = sorted(graph.invoke({"log": [f"input:{tenant}"]}, config))
    with scope():
        out["with_subgraphs"] = _snapshot(graph.get_state(config, subgraphs=True))
    out["state"] = _snapshot(graph.get_state(config))
    history = list(graph.get_state_history(config))
    out["history"] = [_snapshot(s) for s in history]
    out["update_keys"] = _keys(graph.update_state(config, {"log": [f"note:{tenant}"]}))
    out["after_update"] = _snapshot(graph.get_state(config))
    out["resumed"] = graph.invoke(Command(resume=f"yes-{tenant}"), config)
    before_sub = next(s for s in history if s.next == ("sub",))
    out["time_travel"] = sorted(graph.invoke(None, before_sub.config))
    out["after_time_travel"] = _snapshot(graph.get_state(config))
    return out


@pytest.fixture
def official(test_database_url: str) -> Iterator[PostgresSaver]:
    with PostgresSaver.from_conn_string(test_database_url) as saver:
        saver.setup()
        yield saver




def _reference(official: PostgresSaver, thread_per_tenant: dict[str, str]) -> dict[str, dict[str, Any]]:
    """PostgresSaver has no tenants: each tenant's run gets its own thread there."""
    graph = build(official)
    return {t: scenario(graph, thread_config(thread_per_tenant[t]), nullcontext, t) for t in TENANTS}


def test_bound_views_match_postgres_saver(saver_context: Callable[..., Any], official: PostgresSaver) -> None:
    thread = f"t-{uuid.uuid4().hex[:8]}"
    expected = _reference(official, {t: f"{thread}-{t}" for t in TENANTS})
    with saver_context(durable=True, tenant_id=None) as saver:
        saver.setup()
        got = {t: scenario(build(saver.for_tenant(t)), thread_config(thread), nullcontext, t) for t in TENANTS}
        assert got == expected
        assert got["acme"]["with_subgraphs"]["tasks"][0][2]["next"] == ("ask",)  # not an empty state

        saver.flush()
        saver.for_tenant("acme").delete_thread(thread)
        assert saver.for_tenant("acme").get_tuple(thread_config(thread)) is None
        assert saver.for_tenant("globex").get_tuple(thread_config(thread)) is not None  # other tenant untouched
        with psycopg.connect(saver._conn.pg.conninfo) as conn:
            rows = conn.execute(
                f"SELECT tenant_id, count(*) FROM {saver.schema}.checkpoints WHERE thread_id = %s GROUP BY 1",
                (thread,),
            ).fetchall()
        globex_checkpoints = len(list(saver.for_tenant("globex").list(thread_config(thread))))
        assert dict(rows) == {"globex": globex_checkpoints}  # acme's rows are gone, globex's all there


def test_tenant_from_the_config_with_a_scope_for_subgraph_state(
    saver_context: Callable[..., Any], official: PostgresSaver
) -> None:
    thread = f"t-{uuid.uuid4().hex[:8]}"
    expected = _reference(official, {t: f"{thread}-{t}" for t in TENANTS})
    with saver_context(durable=True, tenant_id=None) as saver:
        saver.setup()
        graph = build(saver)
        got = {
            t: scenario(graph, thread_config(thread, tenant_id=t), lambda t=t: tenant_scope(t), t)  # type: ignore[misc]
            for t in TENANTS
        }
        # the caller passed tenant_id, so returned configs carry it: one key more than upstream
        for t in TENANTS:
            for section in ("state", "after_update", "after_time_travel"):
                assert got[t][section]["config_keys"] == sorted(["checkpoint_id", "checkpoint_ns", "thread_id", "tenant_id"])
                got[t][section]["config_keys"].remove("tenant_id")
                got[t][section]["parent_config_keys"].remove("tenant_id")
            for snap in got[t]["history"]:
                snap["config_keys"].remove("tenant_id")
                if snap["parent_config_keys"]:
                    snap["parent_config_keys"].remove("tenant_id")
            got[t]["update_keys"].remove("tenant_id")
            snap = got[t]["with_subgraphs"]
            snap["config_keys"].remove("tenant_id")
            snap["parent_config_keys"].remove("tenant_id")
        assert got == expected


def test_a_call_without_a_tenant_raises_instead_of_using_a_default(saver_context: Callable[..., Any]) -> None:
    thread = f"t-{uuid.uuid4().hex[:8]}"
    with saver_context(durable=True, tenant_id=None) as saver:
        saver.setup()
        graph = build(saver)
        graph.invoke({"log": ["input"]}, thread_config(thread, tenant_id="acme"))
        # LangGraph builds subgraph configs from thread_id and checkpoint_ns only: the
        # subgraph's state cannot be read without a tenant, and says so
        with pytest.raises(TenantRequiredError, match="tenant_scope"):
            graph.get_state(thread_config(thread, tenant_id="acme"), subgraphs=True)
        with pytest.raises(TenantRequiredError):
            graph.get_state(thread_config(thread))
        for call in (
            lambda: saver.delete_thread(thread),
            lambda: saver.delete_for_runs(["r1"]),
            lambda: saver.copy_thread(thread, "copy"),
            lambda: saver.prune([thread]),
            lambda: list(saver.list(None)),
            lambda: saver.prune_older_than(__import__("datetime").timedelta(days=1)),
        ):
            with pytest.raises(TenantRequiredError):
                call()
        assert graph.get_state(thread_config(thread, tenant_id="acme")).next == ("sub",)  # nothing deleted

        with tenant_scope("acme"):
            saver.delete_thread(thread)
        assert graph.get_state(thread_config(thread, tenant_id="acme")).values == {}


async def test_scope_reaches_async_calls_and_is_per_task(saver_context: Callable[..., Any]) -> None:
    import asyncio

    with saver_context(tenant_id=None) as saver:
        graph = build(saver)

        async def run(tenant: str) -> Any:
            with tenant_scope(tenant):
                cfg = thread_config("shared-thread")
                await graph.ainvoke({"log": [f"input:{tenant}"]}, cfg)
                await asyncio.sleep(0)
                return (await graph.aget_state(cfg, subgraphs=True)).values["log"]

        logs = await asyncio.gather(*(run(t) for t in TENANTS))
        assert logs == [["input:acme", "start"], ["input:globex", "start"]]


def test_sources_that_disagree_are_refused(saver_context: Callable[..., Any]) -> None:
    with saver_context(tenant_id="acme") as saver:
        with pytest.raises(TenantMismatchError, match="config='globex', saver='acme'"):
            saver.get_tuple(thread_config("t1", tenant_id="globex"))
        with tenant_scope("globex"), pytest.raises(TenantMismatchError):
            saver.delete_thread("t1")
        assert saver.get_tuple(thread_config("t1", tenant_id="acme")) is None  # the same tenant is fine
        with pytest.raises(InvalidIdError):
            saver.for_tenant("")


def test_bound_saver_returns_configs_like_postgres_saver(
    saver_context: Callable[..., Any], official: PostgresSaver
) -> None:
    thread = f"t-{uuid.uuid4().hex[:8]}"
    with saver_context(tenant_id="acme") as saver:
        for checkpointer in (saver, official):
            graph = build(checkpointer)
            graph.invoke({"log": ["input"]}, thread_config(f"{thread}-{id(checkpointer)}"))
            snap = graph.get_state(thread_config(f"{thread}-{id(checkpointer)}"))
            assert _keys(snap.config) == ["checkpoint_id", "checkpoint_ns", "thread_id"]
            assert _keys(snap.parent_config) == ["checkpoint_id", "checkpoint_ns", "thread_id"]
