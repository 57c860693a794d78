"""DeltaChannel workloads (sync API): a long DeltaChannel conversation, and the history of a
long thread part of which has left Redis.

DeltaChannel conversation: a 2-node chat graph (model, then tool) whose `messages` channel is
a `DeltaChannel`: a checkpoint stores only what a step appended, and reading the state replays
the writes since the nearest snapshot (`get_delta_channel_history`). One thread per saver and
length (`delta_turns`, 100 and 500), savers taking turns turn by turn. Samples are the turn
latencies of the last 20 turns (what a long conversation costs per turn); metrics give the
first and last 10.

History: a thread of `history_checkpoints` checkpoints (a one-node graph invoked until it has
them), then, for TieredSaver, flushed and its Redis copy dropped, and its latest checkpoint
read back (Redis holds the latest, Postgres the rest: what a thread that expired from Redis
looks like when its user returns). Samples: full `get_state_history` calls, `history_reads`
per saver and repetition (the thread is built once per saver; a call takes seconds, so the
samples come from many short rotations of the savers rather than long runs of one).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.channels.delta import DeltaChannel
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from ..graph import build_chat_graph, chat_turn
from ._common import Context, Subject, Table, ms_since, open_sync, rotated

LAST_TURNS = 20  # turns whose latency is the sample: the conversation at its length


def _fold(state: list[AnyMessage], writes: Sequence[Any]) -> list[AnyMessage]:
    for w in writes:
        state = add_messages(state, w)
    return state


class DeltaChat(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], DeltaChannel(_fold)]


def build_delta_chat_graph(checkpointer: Any) -> Any:
    """model -> tool, each appending one message to a DeltaChannel."""

    def model(state: DeltaChat) -> DeltaChat:
        return {"messages": [AIMessage(f"Answer {len(state['messages'])}: let me check that. " * 3)]}

    def tool(state: DeltaChat) -> DeltaChat:
        return {"messages": [AIMessage("lookup result: order 8842 was charged twice. " * 3)]}

    builder = StateGraph(DeltaChat)
    builder.add_node("model", model)
    builder.add_node("tool", tool)
    builder.add_edge(START, "model")
    builder.add_edge("model", "tool")
    builder.add_edge("tool", END)
    return builder.compile(checkpointer=checkpointer)


def _delta_turn(turn: int) -> DeltaChat:
    return {"messages": [HumanMessage(f"Turn {turn}: and what about my second order? " * 3)]}


def run_conversation(ctx: Context) -> None:
    for turns in ctx.profile.delta_turns:
        _conversation(ctx, turns)


def _conversation(ctx: Context, turns: int) -> None:
    scope = f"delta{turns}"
    with ExitStack() as stack:
        subjects, failed = open_sync(ctx, stack, scope, "graph")
        table = Table(ctx, "delta", f"DeltaChannel conversation {turns} turns", "graph", failed)
        graphs = {s.name: build_delta_chat_graph(s.saver) for s in subjects}
        configs = {s.name: s.config(ctx.env.thread_id(scope), 7) for s in subjects}
        all_ms: dict[str, list[float]] = {s.name: [] for s in subjects}
        for turn in range(turns):
            for s in rotated(subjects, turn):
                if not table.ok(s):
                    continue
                try:
                    t0 = time.perf_counter()
                    graphs[s.name].invoke(_delta_turn(turn), configs[s.name])
                    all_ms[s.name].append(ms_since(t0))
                except Exception as exc:
                    table.fail(s, exc)
        for s in subjects:
            if table.ok(s):
                samples = all_ms[s.name]
                table.add(s, samples[-LAST_TURNS:])
                table.set_metrics(s, {
                    "turn_ms_first10": _median(samples[:10]), "turn_ms_last10": _median(samples[-10:]),
                    "messages": float(len(graphs[s.name].get_state(configs[s.name]).values["messages"])),
                })  # fmt: skip
        table.emit()


def _median(xs: list[float]) -> float:
    ordered = sorted(xs)
    return ordered[len(ordered) // 2] if ordered else 0.0


def run_history(ctx: Context) -> None:
    n = ctx.profile.history_checkpoints
    scope = f"history{n}"
    with ExitStack() as stack:
        subjects, failed = open_sync(ctx, stack, scope, "graph")
        table = Table(ctx, "history", f"get_state_history {n} checkpoints, older part out of Redis", "graph", failed)
        graphs = {s.name: build_chat_graph(s.saver) for s in subjects}
        configs = {s.name: s.config(ctx.env.thread_id(scope), 11) for s in subjects}
        sizes: dict[str, int] = {}
        for s in subjects:
            try:
                sizes[s.name] = _fill(s, graphs[s.name], configs[s.name], n)
                table.set_metrics(s, {"checkpoints": float(sizes[s.name])})
            except Exception as exc:
                table.fail(s, exc)
        for rep in range(ctx.profile.reps):
            for s in rotated(subjects, rep):
                if not table.ok(s):
                    continue
                try:
                    samples = []
                    for _ in range(ctx.profile.history_reads):
                        t0 = time.perf_counter()
                        found = sum(1 for _ in graphs[s.name].get_state_history(configs[s.name]))
                        samples.append(ms_since(t0))
                    if found != sizes[s.name]:
                        raise AssertionError(f"history has {found} checkpoints, not {sizes[s.name]}")
                    table.add(s, samples)
                except Exception as exc:
                    table.fail(s, exc)
        table.emit()


def _fill(s: Subject, graph: Any, config: Any, n: int) -> int:
    """Invoke until the thread has at least `n` checkpoints (a turn writes 3); a TieredSaver
    then keeps only its latest checkpoint in Redis (flushed, dropped, the latest read back:
    re-warmed). Returns the thread's length."""
    graph.invoke(chat_turn(0), config)
    per_turn = sum(1 for _ in s.saver.list(config))
    for turn in range(1, -(-n // per_turn)):
        graph.invoke(chat_turn(turn), config)
    _leave_redis(s, config)
    return sum(1 for _ in s.saver.list(config))


def _leave_redis(s: Subject, config: Any) -> None:
    from langgraph_tiered_saver import TieredSaver

    saver = s.saver
    if not isinstance(saver, TieredSaver) or not saver.durable:
        return
    ref = saver._ref(config)
    saver.flush()
    saver.run_op(saver.core.hot.delete_thread_op(ref.tenant_id, [ref.thread_id]))
    saver.get_tuple(config)  # the latest only is back in Redis
