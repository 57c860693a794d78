"""The case_8842 support workflow: "I was charged twice, and I still can't log in."

    intake ─┬─> billing_agent ──┬─> policy_agent ─> response_agent
            └─> account_agent ──┘   (interrupts for human approval above the threshold)

`billing_agent` and `account_agent` run in the same superstep; `account_agent` is a compiled
subgraph (its checkpoints live under their own `checkpoint_ns`). Every node records the tools it
called in the `tool_calls` channel, whose reducer adds counts, so the saved state proves which
tools ran and how often, across crashes, resumes and replays.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Mapping
from typing import Annotated, Any, Literal, NoReturn, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, interrupt

from . import tools
from .tools import Charge, LoginStatus, PasswordReset, Refund

THREAD_ID = "case_8842"
USER_MESSAGE = "I was charged twice, and I still can't log in."
DEFAULT_REFUND_THRESHOLD = 50.0
MODEL_ENV = "CASE_8842_MODEL"

# crash_after -> the node at whose entry the process dies: the first node that needs its output.
CRASH_POINTS: dict[str, str] = {
    "intake": "billing_agent",
    "billing_agent": "policy_agent",
    "account_agent": "policy_agent",
    "policy_agent": "response_agent",
}
CRASH_SAVE_TIMEOUT = 5.0
"""Seconds the crash hook waits for the step's checkpoint to be saved before killing anyway."""


def merge_counts(left: dict[str, int] | None, right: dict[str, int] | None) -> dict[str, int]:
    """Reducer for `tool_calls`: add counts, so parallel nodes can both report their calls."""
    merged = dict(left or {})
    for name, count in (right or {}).items():
        merged[name] = merged.get(name, 0) + count
    return merged


class IntakeSection(TypedDict):
    customer_id: str
    billing_issues: list[str]
    account_issues: list[str]


class BillingSection(TypedDict, total=False):
    """Owned by BillingAgent."""

    issue: Literal["duplicate_charge", "none"]
    duplicate: Charge | None
    refund_requested: float


class AccountSection(TypedDict, total=False):
    """Owned by AccountAgent."""

    issue: Literal["login_failure", "none"]
    login_status: LoginStatus
    password_reset: PasswordReset | None


class PolicySection(TypedDict, total=False):
    """Owned by PolicyAgent: the refund decision and, if approved, the refund itself."""

    decision: Literal["auto_approved", "approved", "denied", "not_needed"]
    approver: Literal["policy", "human"]
    amount: float
    threshold: float
    note: str
    refund: Refund | None


class ResponseSection(TypedDict):
    text: str
    phrased_by: str


class SupportState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    customer_id: str
    intake: IntakeSection
    billing: BillingSection
    account: AccountSection
    policy: PolicySection
    response: ResponseSection
    tool_calls: Annotated[dict[str, int], merge_counts]


# --- inputs --------------------------------------------------------------------------------------


def initial_input(
    message: str = USER_MESSAGE, customer_id: str = tools.CUSTOMER_ID
) -> dict[str, Any]:
    """The customer's first message; the id is fixed so replays and savers compare equal."""
    return {
        "messages": [HumanMessage(content=message, id=f"{THREAD_ID}-user-1")],
        "customer_id": customer_id,
    }


def approval(approved: bool, note: str = "") -> Command:
    """The human reviewer's answer to the policy interrupt."""
    return Command(resume={"approved": approved, "note": note})


def thread_config(thread_id: str = THREAD_ID) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id}}


# --- intake --------------------------------------------------------------------------------------

_BILLING_RULES: dict[str, tuple[str, ...]] = {
    "duplicate_charge": ("charged twice", "double charged", "double-charged", "duplicate charge"),
}
_ACCOUNT_RULES: dict[str, tuple[str, ...]] = {
    "login_failure": ("log in", "login", "sign in", "locked out", "password"),
}


def _classify(text: str, rules: Mapping[str, tuple[str, ...]]) -> list[str]:
    lowered = text.lower()
    return [issue for issue, phrases in rules.items() if any(p in lowered for p in phrases)]


def intake(state: SupportState) -> dict[str, Any]:
    """Keyword rules, not a model: the split into billing and account issues must be reproducible."""
    text = " ".join(str(m.content) for m in state.get("messages", []) if m.type == "human")
    section: IntakeSection = {
        "customer_id": state.get("customer_id") or tools.CUSTOMER_ID,
        "billing_issues": _classify(text, _BILLING_RULES),
        "account_issues": _classify(text, _ACCOUNT_RULES),
    }
    return {"intake": section}


# --- billing -------------------------------------------------------------------------------------


def billing_agent(state: SupportState) -> dict[str, Any]:
    """Looks for the duplicate charge; deciding on the refund is the policy agent's job."""
    section = state["intake"]
    if "duplicate_charge" not in section["billing_issues"]:
        return {"billing": BillingSection(issue="none", duplicate=None)}
    duplicates = tools.find_duplicate_charges(section["customer_id"])
    duplicate = duplicates[0] if duplicates else None
    billing = BillingSection(issue="duplicate_charge", duplicate=duplicate)
    if duplicate is not None:
        billing["refund_requested"] = duplicate["amount"]
    return {"billing": billing, "tool_calls": {"find_duplicate_charges": 1}}


# --- account (a subgraph) ------------------------------------------------------------------------


class AccountAgentInput(TypedDict):
    intake: IntakeSection


class AccountAgentOutput(TypedDict):
    account: AccountSection
    tool_calls: Annotated[dict[str, int], merge_counts]


class AccountAgentState(TypedDict, total=False):
    intake: IntakeSection
    account: AccountSection
    tool_calls: Annotated[dict[str, int], merge_counts]


def _diagnose_login(state: AccountAgentState) -> dict[str, Any]:
    section = state["intake"]
    if "login_failure" not in section["account_issues"]:
        return {"account": AccountSection(issue="none")}
    status = tools.check_login_status(section["customer_id"])
    return {
        "account": AccountSection(issue="login_failure", login_status=status),
        "tool_calls": {"check_login_status": 1},
    }


def _needs_reset(state: AccountAgentState) -> str:
    status = state["account"].get("login_status")
    return "send_reset" if status is not None and status["status"] != "active" else END


def _send_reset(state: AccountAgentState) -> dict[str, Any]:
    account = state["account"]
    reset = tools.send_password_reset(account["login_status"]["email"])
    return {
        "account": {**account, "password_reset": reset},
        "tool_calls": {"send_password_reset": 1},
    }


def build_account_agent() -> CompiledStateGraph:
    """A subgraph so the example also exercises nested checkpoint namespaces.

    Its input schema leaves out `tool_calls`, so its output carries only its own calls and the
    parent's additive reducer does not count earlier calls twice.
    """
    sub = StateGraph(
        AccountAgentState, input_schema=AccountAgentInput, output_schema=AccountAgentOutput
    )
    sub.add_node("diagnose", _diagnose_login)
    sub.add_node("send_reset", _send_reset)
    sub.add_edge(START, "diagnose")
    sub.add_conditional_edges("diagnose", _needs_reset, ["send_reset", END])
    sub.add_edge("send_reset", END)
    return sub.compile()


# --- policy --------------------------------------------------------------------------------------


def _read_approval(answer: Any) -> tuple[bool, str]:
    """Accept the `approval(...)` payload (or a bare bool) and reject anything ambiguous."""
    if isinstance(answer, bool):
        return answer, ""
    if isinstance(answer, Mapping) and isinstance(answer.get("approved"), bool):
        return answer["approved"], str(answer.get("note", ""))
    raise TypeError(f"expected approval(approved, note) as the resume value, got {answer!r}")


def _make_policy_agent(threshold: float) -> Any:
    def policy_agent(state: SupportState) -> dict[str, Any]:
        """Refunds up to `threshold` are approved here; larger ones wait for a human.

        Everything before `interrupt` runs again on resume, so it is pure; the refund is
        issued only after the decision, and this node's writes are saved once it returns.
        """
        duplicate = state.get("billing", {}).get("duplicate")
        approver: Literal["policy", "human"]
        if duplicate is None:
            return {"policy": PolicySection(decision="not_needed", threshold=threshold)}
        amount = duplicate["amount"]
        if amount <= threshold:
            approved, note, approver = True, "within the automatic refund limit", "policy"
        else:
            answer = interrupt(
                {
                    "type": "refund_approval",
                    "question": f"Refund {amount:.2f} {duplicate['currency']} for a duplicate "
                    f"charge? It is above the automatic limit of {threshold:.2f}.",
                    "customer_id": duplicate["customer_id"],
                    "charge_id": duplicate["charge_id"],
                    "amount": amount,
                    "currency": duplicate["currency"],
                    "threshold": threshold,
                }
            )
            approved, note = _read_approval(answer)
            approver = "human"
        decision: Literal["auto_approved", "approved", "denied"] = "denied"
        if approved:
            decision = "auto_approved" if approver == "policy" else "approved"
        policy = PolicySection(
            decision=decision,
            approver=approver,
            amount=amount,
            threshold=threshold,
            note=note,
            refund=None,
        )
        if not approved:
            return {"policy": policy}
        policy["refund"] = tools.issue_refund(duplicate["charge_id"], amount)
        return {"policy": policy, "tool_calls": {"issue_refund": 1}}

    return policy_agent


# --- response ------------------------------------------------------------------------------------


def _mask(email: str) -> str:
    user, _, domain = email.partition("@")
    return f"{user[:1]}***@{domain}"


def compose_reply(state: SupportState) -> str:
    """The reply from facts in the state alone, so it is the same on every replay."""
    parts = ["Hi, thanks for your patience, and sorry for the trouble."]
    billing = state.get("billing", {})
    policy = state.get("policy", {})
    duplicate = billing.get("duplicate")
    if billing.get("issue") == "duplicate_charge" and duplicate is None:
        parts.append("Billing: we checked your recent charges and found no duplicate charge.")
    elif duplicate is not None:
        what = f"{duplicate['description']} on {duplicate['created'][:10]}"
        amount = f"${duplicate['amount']:.2f}"
        refund = policy.get("refund")
        if refund is not None:
            parts.append(
                f"Billing: you were charged twice for {what}. We have refunded the duplicate "
                f"charge of {amount} (refund {refund['refund_id']}); it should reach your card "
                "within 5-10 business days."
            )
        else:
            note = policy.get("note")
            reason = f" ({note})" if note else ""
            parts.append(
                f"Billing: we found a second charge of {amount} for {what}. Our billing team "
                f"reviewed it and could not approve a refund at this time{reason}. "
                "We will follow up by email."
            )
    account = state.get("account", {})
    reset = account.get("password_reset")
    if reset is not None:
        reason = account.get("login_status", {}).get("reason", "a security check")
        parts.append(
            f"Account: your account was locked after {reason}. We have sent a password reset "
            f"link to {_mask(reset['email'])}; using it will also unlock your account."
        )
    elif account.get("issue") == "login_failure":
        parts.append("Account: your account looks active; please try signing in again.")
    return "\n\n".join(parts)


def _load_chat_model() -> tuple[Any, str]:
    """Imported only for use_llm=True: the default path needs no model, package or key."""
    model_name = os.environ.get(MODEL_ENV)
    if not model_name:
        raise RuntimeError(f"use_llm=True needs {MODEL_ENV}, e.g. 'openai:gpt-4o-mini'")
    try:
        from langchain.chat_models import init_chat_model
    except ImportError as exc:
        raise RuntimeError("use_llm=True needs the `langchain` package") from exc
    return init_chat_model(model_name), model_name


def _make_response_agent(model: Any | None, model_name: str) -> Any:
    def response_agent(state: SupportState) -> dict[str, Any]:
        """The facts come from the template; a model, if any, only rephrases them."""
        text, phrased_by = compose_reply(state), "template"
        if model is not None:
            reply = model.invoke(
                [
                    (
                        "system",
                        "You are a customer support agent. Rewrite the draft reply warmly "
                        "and concisely. Keep every amount, id and action exactly as written.",
                    ),
                    ("human", f"Customer wrote: {USER_MESSAGE}\n\nDraft reply:\n{text}"),
                ]
            )
            content = reply.content
            text = content if isinstance(content, str) else reply.text
            phrased_by = model_name
        turn = len(state.get("messages", []))
        return {
            "response": ResponseSection(text=text, phrased_by=phrased_by),
            "messages": [AIMessage(content=text, name="response_agent", id=f"{THREAD_ID}-{turn}")],
        }

    return response_agent


# --- crash point ---------------------------------------------------------------------------------


def _crash(reason: str) -> NoReturn:
    """Die the way a killed worker dies: no exception handlers, no atexit, no flush."""
    print(f"case_8842: {reason}; SIGKILL to pid {os.getpid()}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
    raise SystemExit(137)  # unreachable where SIGKILL exists


def _wait_until_saved(checkpointer: BaseCheckpointSaver, config: RunnableConfig) -> bool:
    """Wait until the checkpoint this step started from is in the saver.

    With durability="sync" it already is; with "async" it is being saved in the background
    while this node runs; with "exit" it never will be, so give up after a timeout.
    """
    conf = config.get("configurable", {})
    checkpoint_id = (conf.get("checkpoint_map") or {}).get("")
    if checkpoint_id is None:
        return False
    target: RunnableConfig = {
        "configurable": {
            "thread_id": conf["thread_id"],
            "checkpoint_ns": "",
            "checkpoint_id": checkpoint_id,
        }
    }
    deadline = time.monotonic() + CRASH_SAVE_TIMEOUT
    while checkpointer.get_tuple(target) is None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _with_crash_point(
    node: Any, name: str, crash_after: str, checkpointer: BaseCheckpointSaver
) -> Any:
    """Wrap `node` so the process dies on entry, before it does anything, once."""
    fired = False

    def crashing(state: SupportState, config: RunnableConfig) -> Any:
        nonlocal fired
        if not fired:
            fired = True
            saved = _wait_until_saved(checkpointer, config)
            _crash(
                f"crash after {crash_after} at the start of {name} "
                f"({'checkpoint saved' if saved else 'checkpoint NOT confirmed saved'})"
            )
        return node(state)

    crashing.__name__ = name
    crashing.__doc__ = node.__doc__
    return crashing


# --- the graph -----------------------------------------------------------------------------------


def build_graph(
    checkpointer: BaseCheckpointSaver | None,
    *,
    refund_threshold: float = DEFAULT_REFUND_THRESHOLD,
    crash_after: str | None = None,
    use_llm: bool = False,
) -> CompiledStateGraph:
    """Compile the case_8842 workflow on `checkpointer`.

    `crash_after="billing_agent"` SIGKILLs the process at the start of `policy_agent`, the first
    node after BillingAgent, and only once the checkpoint holding the finished parallel step is
    saved: a resume from the saver then starts at `policy_agent` and runs no billing or account
    tool again. Use it only in a child process you mean to lose.
    """
    if crash_after is not None:
        if crash_after not in CRASH_POINTS:
            raise ValueError(f"crash_after must be one of {sorted(CRASH_POINTS)}: {crash_after!r}")
        if checkpointer is None:
            raise ValueError("crash_after needs a checkpointer: there is nothing to resume from")
    model, model_name = _load_chat_model() if use_llm else (None, "template")

    nodes: dict[str, Any] = {
        "intake": intake,
        "billing_agent": billing_agent,
        "account_agent": build_account_agent(),
        "policy_agent": _make_policy_agent(refund_threshold),
        "response_agent": _make_response_agent(model, model_name),
    }
    if crash_after is not None:
        assert checkpointer is not None
        victim = CRASH_POINTS[crash_after]
        nodes[victim] = _with_crash_point(nodes[victim], victim, crash_after, checkpointer)

    graph = StateGraph(SupportState)
    for name, node in nodes.items():
        graph.add_node(name, node)
    graph.add_edge(START, "intake")
    graph.add_edge("intake", "billing_agent")
    graph.add_edge("intake", "account_agent")
    graph.add_edge(["billing_agent", "account_agent"], "policy_agent")
    graph.add_edge("policy_agent", "response_agent")
    graph.add_edge("response_agent", END)
    return graph.compile(checkpointer=checkpointer)
