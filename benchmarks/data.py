"""Synthetic checkpoints and writes shaped like a real support-agent graph.

A step changes two channels (`messages`, `route`); `context` is written once, on the first
checkpoint of a chain, and then never changes. A saver that stores channel values per version
(as the official savers and the TieredSaver do) therefore writes only the messages and the route
on every later step.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    empty_checkpoint,
)
from langgraph.checkpoint.base.id import uuid6

N_MESSAGES = 10
LARGE_VALUE_BYTES = 1_000_000


def conversation(n: int = N_MESSAGES) -> list[BaseMessage]:
    """`n` alternating messages, about 200 bytes each."""
    out: list[BaseMessage] = []
    for i in range(n):
        if i % 2 == 0:
            text = (
                f"Customer turn {i}: I was charged twice for order #88{i:02d} and I can't log in."
            )
            out.append(HumanMessage(content=text, id=f"h{i}"))
        else:
            text = f"Agent turn {i}: I see two captures on the card; checking the account lock now."
            out.append(AIMessage(content=text, id=f"a{i}"))
    return out


CONTEXT: dict[str, Any] = {
    "customer": {"id": "cust-8842", "plan": "pro", "region": "eu-west-1", "since": "2021-04-02"},
    "order": {"id": "ord-8842", "amount_cents": 12900, "currency": "EUR", "captures": 2},
    "flags": [f"flag-{i}" for i in range(20)],
}


@dataclass(frozen=True)
class PutArgs:
    """The arguments of one `put` call."""

    checkpoint: Checkpoint
    metadata: CheckpointMetadata
    new_versions: ChannelVersions


CURRENT_FORMAT = 4


def checkpoint_chain(
    saver: BaseCheckpointSaver[Any], n: int, *, document: Callable[[], str] | None = None
) -> list[PutArgs]:
    """`n` successive checkpoints of one thread, versioned with `saver.get_next_version`.

    With `document`, every step also writes a new value of a `document` channel.
    """
    messages = conversation()
    versions: dict[str, Any] = {}
    chain: list[PutArgs] = []
    for step in range(n):
        changed = ["messages", "route"] if step else ["messages", "route", "context"]
        if document is not None:
            changed.append("document")
        for channel in changed:
            versions[channel] = saver.get_next_version(versions.get(channel), None)
        values: dict[str, Any] = {
            "messages": messages,
            "route": f"node-{step % 4}",
            "context": CONTEXT,
        }
        if document is not None:
            values["document"] = document()
        checkpoint = empty_checkpoint()  # carries every key the installed version expects
        # The format LangGraph's loop writes (langgraph.pregel._checkpoint.empty_checkpoint);
        # base.empty_checkpoint still says 2, and an older format makes every saver that migrates
        # on read (PostgresSaver, TieredSaver) look up the parent's TASKS writes as well.
        checkpoint["v"] = CURRENT_FORMAT
        checkpoint["id"] = str(uuid6(clock_seq=step))
        checkpoint["ts"] = datetime.now(timezone.utc).isoformat()
        checkpoint["channel_values"] = values
        checkpoint["channel_versions"] = dict(versions)
        checkpoint["versions_seen"] = {"agent": {"messages": versions["messages"]}}
        checkpoint["updated_channels"] = changed
        metadata: CheckpointMetadata = {"source": "loop", "step": step, "parents": {}}
        chain.append(PutArgs(checkpoint, metadata, {c: versions[c] for c in changed}))
    return chain


def task_writes(i: int) -> tuple[str, list[tuple[str, Any]]]:
    """A task id and the two writes one agent task produces."""
    reply = AIMessage(content=f"Refund {i} approved for the duplicate capture.", id=f"w{i}")
    return str(uuid.uuid4()), [("messages", [reply]), ("route", "respond")]


def large_value(size: int = LARGE_VALUE_BYTES) -> str:
    """A random (incompressible) hex string of `size` characters."""
    return os.urandom(size // 2 + 1).hex()[:size]
