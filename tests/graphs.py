"""Real LangGraph graphs used by the tests: fan-out, subgraph, interrupt, retry, DeltaChannel."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.channels.delta import DeltaChannel
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import Command, RetryPolicy, interrupt


def add_messages_batch(state: list[AnyMessage], writes: list[Any]) -> list[AnyMessage]:
    """DeltaChannel reducer: folds a batch of message writes with add_messages."""
    for w in writes:
        state = add_messages(state, w)
    return state


class State(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    history: Annotated[list[AnyMessage], DeltaChannel(add_messages_batch, snapshot_frequency=3)]
    log: Annotated[list[str], operator.add]
    decision: str
    attempts: int


class SubState(TypedDict, total=False):
    log: Annotated[list[str], operator.add]
    detail: str


def _say(node: str, text: str) -> dict[str, Any]:
    msg = AIMessage(content=text, id=f"msg-{node}")
    return {"messages": [msg], "history": [msg], "log": [node]}


def build_subgraph() -> Any:
    sub = StateGraph(SubState)
    sub.add_node("inspect", lambda s: {"log": ["sub.inspect"], "detail": "inspected"})
    sub.add_node("summarize", lambda s: {"log": [f"sub.summarize:{s.get('detail')}"]})
    sub.add_edge(START, "inspect")
    sub.add_edge("inspect", "summarize")
    sub.add_edge("summarize", END)
    return sub.compile()


class Flaky:
    """A node that fails its first `failures` calls: exercises error writes and RetryPolicy."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self, state: State) -> dict[str, Any]:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"flaky failure {self.calls}")
        return {**_say("flaky", "recovered"), "attempts": self.calls}


def build_graph(checkpointer: Any, *, flaky: Flaky | None = None, retry: bool = True) -> Any:
    """start -> (billing || account) -> subgraph -> flaky -> review (interrupt) -> finish."""
    flaky = flaky or Flaky(0)
    g = StateGraph(State)
    g.add_node("start", lambda s: _say("start", "hello"))
    g.add_node("billing", lambda s: _say("billing", "refund found"))
    g.add_node("account", lambda s: _say("account", "reset sent"))
    g.add_node("sub", build_subgraph())
    g.add_node(
        "flaky", flaky, retry_policy=RetryPolicy(max_attempts=3, initial_interval=0.01) if retry else None
    )

    def review(state: State) -> dict[str, Any]:
        answer = interrupt({"question": "approve refund?", "log_len": len(state.get("log", []))})
        return {**_say("review", f"decision {answer}"), "decision": str(answer)}

    g.add_node("review", review)
    g.add_node("finish", lambda s: _say("finish", f"done with {s.get('decision')}"))
    g.add_edge(START, "start")
    g.add_edge("start", "billing")
    g.add_edge("start", "account")
    g.add_edge(["billing", "account"], "sub")
    g.add_edge("sub", "flaky")
    g.add_edge("flaky", "review")
    g.add_edge("review", "finish")
    g.add_edge("finish", END)
    return g.compile(checkpointer=checkpointer)


def initial_input() -> dict[str, Any]:
    msg = HumanMessage(content="I was charged twice", id="msg-user")
    return {"messages": [msg], "history": [msg], "log": ["input"]}


def resume(answer: str) -> Command:
    return Command(resume=answer)


def comparable(values: dict[str, Any]) -> dict[str, Any]:
    """State values in a form that compares across savers (messages by id/type/content)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key in ("messages", "history"):
            out[key] = [(m.id, m.type, m.content) for m in value]
        else:
            out[key] = value
    return out


class LogState(TypedDict, total=False):
    log: Annotated[list[str], operator.add]


def two_step_graph(checkpointer: Any) -> Any:
    """START -> a -> b -> END, each appending its name: the smallest real run (2 supersteps)."""
    g = StateGraph(LogState)
    g.add_node("a", lambda s: {"log": ["a"]})
    g.add_node("b", lambda s: {"log": ["b"]})
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("b", END)
    return g.compile(checkpointer=checkpointer)


class Counter(TypedDict, total=False):
    n: Annotated[int, operator.add]
    log: Annotated[list[str], operator.add]


def chain_graph(
    checkpointer: Any, nodes: int = 8, *, fail_at: int | None = None, on_node: Callable[[int], None] | None = None
) -> Any:
    """`nodes` nodes in a line (the shape of a case_8842 run). Node `fail_at` raises once;
    `on_node(i)` runs inside node i (a sleep, a kill, a fault)."""
    g = StateGraph(Counter)
    failed: list[bool] = []

    def make(i: int) -> Callable[[Counter], dict[str, Any]]:
        def node(state: Counter) -> dict[str, Any]:
            if on_node is not None:
                on_node(i)
            if i == fail_at and not failed:
                failed.append(True)
                raise ValueError(f"node {i} failed")
            return {"n": 1, "log": [f"node{i}"]}

        return node

    for i in range(nodes):
        g.add_node(f"node{i}", make(i))
    g.add_edge(START, "node0")
    for i in range(nodes - 1):
        g.add_edge(f"node{i}", f"node{i + 1}")
    g.add_edge(f"node{nodes - 1}", END)
    return g.compile(checkpointer=checkpointer)
