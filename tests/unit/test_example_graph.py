"""The bundled case_8842 example graph on InMemorySaver, driven with invoke and ainvoke.

The lead runs the same scenarios on TieredSaver; here the graph itself is under test: the
interrupt, both answers, time travel, and that a resume after the parallel step calls no
billing or account tool again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command, StateSnapshot

from examples.case_8842 import (
    THREAD_ID,
    approval,
    build_graph,
    initial_input,
    thread_config,
    tools,
)
from examples.case_8842 import graph as graph_module

REPO_ROOT = Path(__file__).resolve().parents[2]
PARALLEL_STEP_CALLS = {
    "find_duplicate_charges": 1,
    "check_login_status": 1,
    "send_password_reset": 1,
}
EXPECTED_INTERRUPT = {
    "type": "refund_approval",
    "question": "Refund 129.99 USD for a duplicate charge? It is above the automatic limit of 50.00.",
    "customer_id": "cus_8842",
    "charge_id": "ch_8842_002",
    "amount": 129.99,
    "currency": "USD",
    "threshold": 50.0,
}


class Runner:
    """One scenario, written once, run through either the sync or the async API."""

    def __init__(self, graph: Any, mode: str) -> None:
        self.graph = graph
        self.sync = mode == "invoke"

    async def invoke(self, value: Any, config: RunnableConfig | None = None, **kw: Any) -> Any:
        config = config or thread_config()
        if self.sync:
            return self.graph.invoke(value, config, **kw)
        return await self.graph.ainvoke(value, config, **kw)

    async def state(self, config: RunnableConfig | None = None) -> StateSnapshot:
        config = config or thread_config()
        return self.graph.get_state(config) if self.sync else await self.graph.aget_state(config)

    async def history(self) -> list[StateSnapshot]:
        if self.sync:
            return list(self.graph.get_state_history(thread_config()))
        return [s async for s in self.graph.aget_state_history(thread_config())]

    async def update(self, config: RunnableConfig, values: Any, as_node: str) -> RunnableConfig:
        if self.sync:
            return self.graph.update_state(config, values, as_node=as_node)
        return await self.graph.aupdate_state(config, values, as_node=as_node)


@pytest.fixture(autouse=True)
def _fresh_tool_counters() -> None:
    tools.reset_tool_calls()


@pytest.fixture(params=["invoke", "ainvoke"])
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


def runner(mode: str, **options: Any) -> Runner:
    return Runner(build_graph(InMemorySaver(), **options), mode)


async def run_to_interrupt(run: Runner) -> dict[str, Any]:
    result = await run.invoke(initial_input())
    assert [i.value for i in result["__interrupt__"]] == [EXPECTED_INTERRUPT]
    return result


def pre_policy(history: list[StateSnapshot]) -> StateSnapshot:
    """The oldest checkpoint waiting for policy_agent: the one the first run stopped at."""
    return [s for s in history if s.next == ("policy_agent",)][-1]


async def test_runs_to_the_refund_interrupt(mode: str) -> None:
    run = runner(mode)
    result = await run_to_interrupt(run)

    billing = result["billing"]
    assert billing["issue"] == "duplicate_charge"
    assert billing["duplicate"]["charge_id"] == "ch_8842_002"
    assert billing["refund_requested"] == 129.99
    account = result["account"]
    assert account["issue"] == "login_failure"
    assert account["login_status"]["status"] == "locked"
    assert account["password_reset"]["status"] == "sent"
    assert "policy" not in result and "response" not in result
    assert result["tool_calls"] == PARALLEL_STEP_CALLS
    assert dict(tools.TOOL_CALLS) == PARALLEL_STEP_CALLS

    state = await run.state()
    assert state.next == ("policy_agent",)
    assert [i.value for t in state.tasks for i in t.interrupts] == [EXPECTED_INTERRUPT]


async def test_approved_refund_reply(mode: str) -> None:
    run = runner(mode)
    await run_to_interrupt(run)
    final = await run.invoke(approval(True, "duplicate confirmed by ledger"))

    assert "__interrupt__" not in final
    policy = final["policy"]
    assert (policy["decision"], policy["approver"]) == ("approved", "human")
    assert policy["refund"] == {
        "refund_id": "re_8842_002",
        "charge_id": "ch_8842_002",
        "amount": 129.99,
        "currency": "USD",
        "status": "succeeded",
    }
    text = final["response"]["text"]
    assert "refunded the duplicate charge of $129.99" in text
    assert "password reset" in text
    assert final["messages"][-1] == AIMessage(
        content=text, name="response_agent", id=f"{THREAD_ID}-1"
    )
    # The resume ran policy and response only: the parallel step's tools stay at one call each.
    assert final["tool_calls"] == {**PARALLEL_STEP_CALLS, "issue_refund": 1}
    assert dict(tools.TOOL_CALLS) == {**PARALLEL_STEP_CALLS, "issue_refund": 1}
    assert (await run.state()).next == ()


async def test_denied_refund_reply(mode: str) -> None:
    run = runner(mode)
    await run_to_interrupt(run)
    final = await run.invoke(approval(False, "chargeback already open"))

    assert final["policy"]["decision"] == "denied"
    assert final["policy"]["refund"] is None
    text = final["response"]["text"]
    assert "$129.99" in text and "could not approve a refund" in text
    assert "chargeback already open" in text
    assert "refunded" not in text
    assert "password reset" in text
    assert final["tool_calls"] == PARALLEL_STEP_CALLS


async def test_time_travel_replays_policy_with_another_answer(mode: str) -> None:
    run = runner(mode)
    await run_to_interrupt(run)
    approved = await run.invoke(approval(True, "ok"))
    before_policy = pre_policy(await run.history())
    assert before_policy.values["billing"] == approved["billing"]

    # Replaying from the old checkpoint forgets the old answer and asks again, on a fork...
    again = await run.invoke(None, before_policy.config)
    assert [i.value for i in again["__interrupt__"]] == [EXPECTED_INTERRUPT]
    assert (await run.state()).next == ("policy_agent",)
    # ...which the thread's head now is, so a plain resume answers it.
    denied = await run.invoke(approval(False, "second look: not a duplicate"))

    assert denied["policy"]["decision"] == "denied"
    assert denied["response"]["text"] != approved["response"]["text"]
    assert denied["tool_calls"] == PARALLEL_STEP_CALLS
    # Billing and account ran once in all: the fork started after their step.
    assert dict(tools.TOOL_CALLS) == {**PARALLEL_STEP_CALLS, "issue_refund": 1}
    # Both branches stay in the history.
    decisions = {s.values.get("policy", {}).get("decision") for s in await run.history()}
    assert {"approved", "denied"} <= decisions


async def test_update_state_fork_below_threshold_needs_no_human(mode: str) -> None:
    run = runner(mode)
    await run_to_interrupt(run)
    before_policy = pre_policy(await run.history())
    billing = before_policy.values["billing"]
    small = {**billing, "duplicate": {**billing["duplicate"], "amount": 20.0}}

    fork = await run.update(before_policy.config, {"billing": small}, as_node="billing_agent")
    final = await run.invoke(None, fork)

    assert "__interrupt__" not in final
    assert final["policy"]["decision"] == "auto_approved"
    assert "$20.00" in final["response"]["text"]
    assert dict(tools.TOOL_CALLS) == {**PARALLEL_STEP_CALLS, "issue_refund": 1}


async def test_threshold_above_the_charge_approves_on_its_own(mode: str) -> None:
    run = runner(mode, refund_threshold=200.0)
    final = await run.invoke(initial_input())

    assert "__interrupt__" not in final
    assert (final["policy"]["decision"], final["policy"]["approver"]) == ("auto_approved", "policy")
    assert "$129.99" in final["response"]["text"]


async def test_billing_only_message_skips_account_tools(mode: str) -> None:
    run = runner(mode, refund_threshold=200.0)
    final = await run.invoke(initial_input("I was charged twice for my renewal."))

    assert final["intake"]["account_issues"] == []
    assert final["account"] == {"issue": "none"}
    assert final["tool_calls"] == {"find_duplicate_charges": 1, "issue_refund": 1}
    assert "password reset" not in final["response"]["text"]


class SimulatedCrash(BaseException):
    """Stands in for SIGKILL in-process: the run stops dead where the kill would be."""


@pytest.mark.parametrize("durability", ["sync", "async"])
async def test_resume_after_crash_in_policy_reruns_no_finished_tool(
    mode: str, durability: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reasons: list[str] = []

    def crash(reason: str) -> None:
        reasons.append(reason)
        raise SimulatedCrash(reason)

    monkeypatch.setattr(graph_module, "_crash", crash)
    saver = InMemorySaver()
    crashing = Runner(build_graph(saver, crash_after="billing_agent"), mode)
    with pytest.raises(SimulatedCrash):
        await crashing.invoke(initial_input(), durability=durability)
    assert reasons == ["crash after billing_agent at the start of policy_agent (checkpoint saved)"]

    # A new process would build the graph again, without the crash, on the same saver.
    resumed = Runner(build_graph(saver), mode)
    assert (await resumed.state()).next == ("policy_agent",)
    paused = await resumed.invoke(None, durability=durability)
    assert [i.value for i in paused["__interrupt__"]] == [EXPECTED_INTERRUPT]
    final = await resumed.invoke(approval(True, "ok"), durability=durability)

    assert final["tool_calls"] == {**PARALLEL_STEP_CALLS, "issue_refund": 1}
    assert dict(tools.TOOL_CALLS) == {**PARALLEL_STEP_CALLS, "issue_refund": 1}
    assert "$129.99" in final["response"]["text"]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_crash_after_billing_kills_the_process() -> None:
    """The crash is a real SIGKILL (nothing in-process survives; the lead's runner resumes)."""
    script = (
        "from langgraph.checkpoint.memory import InMemorySaver\n"
        "from examples.case_8842 import build_graph, initial_input, thread_config\n"
        "g = build_graph(InMemorySaver(), crash_after='billing_agent')\n"
        "g.invoke(initial_input(), thread_config(), durability='async')\n"
        "print('survived')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert "survived" not in done.stdout
    assert "at the start of policy_agent (checkpoint saved)" in done.stderr


def test_build_graph_rejects_bad_options(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="crash_after"):
        build_graph(InMemorySaver(), crash_after="response_agent")
    with pytest.raises(ValueError, match="checkpointer"):
        build_graph(None, crash_after="billing_agent")
    monkeypatch.delenv("CASE_8842_MODEL", raising=False)
    with pytest.raises(RuntimeError, match="CASE_8842_MODEL"):
        build_graph(InMemorySaver(), use_llm=True)


async def test_resume_value_must_be_an_approval(mode: str) -> None:
    run = runner(mode)
    await run_to_interrupt(run)
    with pytest.raises(TypeError, match="approval"):
        await run.invoke(Command(resume="yes please"))


async def test_use_llm_only_rephrases(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    model = FakeListChatModel(responses=["We refunded $129.99 and sent a password reset link."])
    monkeypatch.setattr(graph_module, "_load_chat_model", lambda: (model, "fake:model"))
    run = runner(mode, use_llm=True, refund_threshold=200.0)
    final = await run.invoke(initial_input())

    assert final["response"] == {
        "text": "We refunded $129.99 and sent a password reset link.",
        "phrased_by": "fake:model",
    }
    assert final["policy"]["decision"] == "auto_approved"
