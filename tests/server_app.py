"""What the Agent Server end-to-end test adds to examples/case_8842/langgraph.json: an `Auth`
handler whose users belong to tenants, and a slow graph for `multitask_strategy="rollback"`
(the case_8842 graph finishes before a second run could interrupt it).

Imported by the server process (`tests.server_app:auth`, `tests.server_app:slow_graph`).
"""

from __future__ import annotations

import asyncio
from typing import Any, TypedDict

from langgraph.graph import START, StateGraph
from langgraph_sdk import Auth

# token -> the user the server authenticates: `tenant_id` is what the saver's resolver reads.
USERS: dict[str, dict[str, Any]] = {
    "token-alice": {"identity": "alice", "tenant_id": "acme"},
    "token-bob": {"identity": "bob", "tenant_id": "globex"},
}
SLOW_SECONDS = 5.0  # the second run must find the first still in here, even on a loaded machine

auth = Auth()


@auth.authenticate
async def authenticate(authorization: str | None) -> Auth.types.MinimalUserDict:
    token = (authorization or "").removeprefix("Bearer ").strip()
    if token not in USERS:
        raise Auth.exceptions.HTTPException(status_code=401, detail="unknown token")
    return USERS[token]  # type: ignore[return-value]


@auth.on
async def same_tenant(ctx: Auth.types.AuthContext, value: Any) -> dict[str, str]:
    """The usual server-side rule: resources are tagged with, and filtered by, the tenant."""
    tenant = ctx.user["tenant_id"]
    if isinstance(value, dict):
        value.setdefault("metadata", {})
        if isinstance(value["metadata"], dict):
            value["metadata"]["tenant"] = tenant
    return {"tenant": tenant}


class SlowState(TypedDict, total=False):
    steps: list[str]


async def _slow(state: SlowState) -> dict[str, Any]:
    await asyncio.sleep(SLOW_SECONDS)
    return {"steps": [*state.get("steps", []), "slow"]}


def _fast(state: SlowState) -> dict[str, Any]:
    return {"steps": [*state.get("steps", []), "fast"]}


_builder = StateGraph(SlowState)
_builder.add_node("fast", _fast)
_builder.add_node("slow", _slow)
_builder.add_edge(START, "fast")
_builder.add_edge("fast", "slow")
slow_graph = _builder.compile()
