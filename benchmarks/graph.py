"""Graphs the end-to-end workloads run.

`build_case_graph` is the one place that decides which "realistic" graph is measured: the
`examples.case_8842` support workflow when it is importable, otherwise a stand-in of the same
shape (intake → Billing ‖ Account → Policy → Response, a messages channel, no LLM calls).
A run that stops at an interrupt (the human approval of case_8842) is resumed with `resume()`,
so one "run" is the whole conversation, pause and resume included.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable
from itertools import pairwise
from typing import Annotated, Any, NamedTuple

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict

MAX_RESUMES = 5


class CaseGraph(NamedTuple):
    graph: Any  # a compiled graph (CompiledStateGraph)
    make_input: Callable[[], Any]
    resume: Callable[[], Any] | None  # the input that answers an interrupt (a Command)
    source: str  # which graph this is, for the report


def build_case_graph(checkpointer: BaseCheckpointSaver[Any]) -> CaseGraph:
    """The realistic graph, compiled with `checkpointer`, its first input, and its resume."""
    try:
        from examples.case_8842 import graph as case  # type: ignore[import-not-found]

        build_graph, initial_input = case.build_graph, case.initial_input
    except (ImportError, AttributeError):
        stand_in = _stand_in(checkpointer)
        return CaseGraph(stand_in, _stand_in_input, None, "stand-in (case_8842 shape)")
    if callable(initial_input):
        make_input = initial_input
    else:

        def make_input() -> Any:
            return copy.deepcopy(initial_input)

    approval = getattr(case, "approval", None)
    resume = (lambda: approval(True)) if callable(approval) else None
    return CaseGraph(build_graph(checkpointer), make_input, resume, "examples.case_8842.graph")


def run_case(case: CaseGraph, config: Any, **invoke_kwargs: Any) -> Any:
    """One whole run: invoke, then resume while the graph stops at an interrupt.
    `invoke_kwargs` (e.g. `durability="async"`) go to every `invoke`."""
    out = case.graph.invoke(case.make_input(), config, **invoke_kwargs)
    for _ in range(MAX_RESUMES):
        if case.resume is None or "__interrupt__" not in out:
            break
        out = case.graph.invoke(case.resume(), config, **invoke_kwargs)
    return out


async def arun_case(case: CaseGraph, config: Any) -> Any:
    """Async `run_case`."""
    out = await case.graph.ainvoke(case.make_input(), config)
    for _ in range(MAX_RESUMES):
        if case.resume is None or "__interrupt__" not in out:
            break
        out = await case.graph.ainvoke(case.resume(), config)
    return out


# ------------------------------------------------------------------------------ stand-in


class CaseState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    findings: Annotated[list[str], operator.add]
    refund_cents: int
    route: str


def _intake(state: CaseState) -> CaseState:
    return {"messages": [AIMessage("Routing to Billing and Account.")], "route": "triage"}


def _billing(state: CaseState) -> CaseState:
    return {
        "messages": [AIMessage("Billing: two captures of 129.00 EUR on 2024-05-02.")],
        "findings": ["billing: duplicate capture, refund 12900"],
        "refund_cents": 12900,
    }


def _account(state: CaseState) -> CaseState:
    return {
        "messages": [AIMessage("Account: locked after 5 failed logins; reset link sent.")],
        "findings": ["account: locked, reset sent"],
    }


def _policy(state: CaseState) -> CaseState:
    decision = "approve" if state.get("refund_cents", 0) < 50000 else "escalate"
    return {"findings": [f"policy: {decision}"], "route": decision}


def _respond(state: CaseState) -> CaseState:
    text = "We refunded the duplicate charge and sent you a password reset link."
    return {"messages": [AIMessage(text)], "route": "done"}


def _stand_in(checkpointer: BaseCheckpointSaver[Any]) -> Any:
    builder = StateGraph(CaseState)
    for name, fn in (
        ("intake", _intake),
        ("billing", _billing),
        ("account", _account),
        ("policy", _policy),
        ("respond", _respond),
    ):
        builder.add_node(name, fn)
    builder.add_edge(START, "intake")
    builder.add_edge("intake", "billing")
    builder.add_edge("intake", "account")
    builder.add_edge(["billing", "account"], "policy")
    builder.add_edge("policy", "respond")
    builder.add_edge("respond", END)
    return builder.compile(checkpointer=checkpointer)


def _stand_in_input() -> CaseState:
    return {"messages": [HumanMessage("I was charged twice, and I can't log in.")]}


# ------------------------------------------------------------------------- chat graph


class ChatState(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def _reply(state: ChatState) -> ChatState:
    turn = len(state["messages"]) // 2
    return {"messages": [AIMessage(f"Answer to turn {turn}: here is what I found. " * 3)]}


def build_chat_graph(checkpointer: BaseCheckpointSaver[Any]) -> Any:
    """One agent node appending to a messages channel: the long-conversation workload."""
    builder = StateGraph(ChatState)
    builder.add_node("agent", _reply)
    builder.add_edge(START, "agent")
    builder.add_edge("agent", END)
    return builder.compile(checkpointer=checkpointer)


def chat_turn(turn: int) -> ChatState:
    return {"messages": [HumanMessage(f"Turn {turn}: and what about my second order? " * 3)]}


# ------------------------------------------------------------------------ linear graph

LINEAR_NODES = 10


def _linear_node(i: int) -> Any:  # a node function (StateGraph's node types are overloads)
    def node(state: ChatState) -> ChatState:
        return {"messages": [AIMessage(f"step {i}: checked, moving on. " * 4, id=f"m{i}")]}

    return node


def build_linear_graph(checkpointer: BaseCheckpointSaver[Any], nodes: int = LINEAR_NODES) -> Any:
    """`nodes` nodes in a row, each appending a message: the message list grows every step."""
    builder = StateGraph(ChatState)
    names = [f"n{i}" for i in range(nodes)]
    for i, name in enumerate(names):
        builder.add_node(name, _linear_node(i))
    builder.add_edge(START, names[0])
    for a, b in pairwise(names):
        builder.add_edge(a, b)
    builder.add_edge(names[-1], END)
    return builder.compile(checkpointer=checkpointer)


def linear_input() -> ChatState:
    return {"messages": [HumanMessage("I was charged twice, and I can't log in.", id="h0")]}
