"""`TieredSaver(tenant_resolver=fn)`: the tenant of each call comes from `fn(config)`, the way a
server maps its authenticated user to a tenant. The resolver is the authority: no answer is a
`TenantRequiredError` (a config's own `tenant_id` cannot stand in), another tenant named by the
config or a scope is a `TenantMismatchError`, and thread-level methods give it their target."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from langgraph.types import Command

from langgraph_tiered_saver import (
    ConfigError,
    InvalidIdError,
    TenantMismatchError,
    TenantRequiredError,
    TieredSaver,
    tenant_scope,
)
from tests.servers.test_tenancy import build


def org_of(config: Any) -> str | None:
    """The test's resolver: the `org` a (pretend) server put in the run's config."""
    return ((config or {}).get("configurable") or {}).get("org")


def run_config(thread: str, org: str | None, **extra: Any) -> dict[str, Any]:
    configurable: dict[str, Any] = {"thread_id": thread, **extra}
    if org is not None:
        configurable["org"] = org
    return {"configurable": configurable}


def test_each_call_acts_for_the_resolved_tenant(saver_context: Callable[..., Any]) -> None:
    """Two tenants on one thread id, a subgraph interrupt and a resume each: never mixed."""
    thread = f"t-{uuid.uuid4().hex[:8]}"
    with saver_context(tenant_id=None, tenant_resolver=org_of) as saver:
        graph = build(saver)
        for org in ("acme", "globex"):
            graph.invoke({"log": [org]}, run_config(thread, org))
        graph.invoke(Command(resume="yes"), run_config(thread, "acme"))
        acme = graph.get_state(run_config(thread, "acme"))
        globex = graph.get_state(run_config(thread, "globex"))
        assert acme.next == () and acme.values["log"][-1] == "finish:yes" and "globex" not in acme.values["log"]
        assert globex.next == ("sub",) and globex.values["log"] == ["globex", "start"]
        # A bound view acts for its own tenant; the resolver is not asked.
        view = saver.for_tenant("globex")
        assert view.tenant_resolver is None
        assert view.get_tuple({"configurable": {"thread_id": thread}}).checkpoint["id"] == globex.config["configurable"]["checkpoint_id"]
        assert "tenant_id" not in acme.config["configurable"]  # returned configs carry what was passed


def test_no_tenant_from_the_resolver_is_an_error(saver_context: Callable[..., Any]) -> None:
    thread = f"t-{uuid.uuid4().hex[:8]}"
    with saver_context(tenant_id=None, tenant_resolver=org_of) as saver:
        with pytest.raises(TenantRequiredError, match="tenant_resolver found no tenant"):
            build(saver).invoke({"log": ["x"]}, run_config(thread, None))
        with pytest.raises(TenantRequiredError):
            saver.get_tuple(run_config(thread, None))
        # the config's own tenant_id is no substitute for the resolver's answer
        with pytest.raises(TenantRequiredError):
            saver.get_tuple(run_config(thread, None, tenant_id="acme"))
        with pytest.raises(TenantRequiredError):
            saver.delete_thread(thread)
        with pytest.raises(TenantRequiredError):
            list(saver.list(None))


def test_another_tenant_named_alongside_is_refused(saver_context: Callable[..., Any]) -> None:
    thread = f"t-{uuid.uuid4().hex[:8]}"
    with saver_context(tenant_id=None, tenant_resolver=org_of) as saver:
        with pytest.raises(TenantMismatchError):
            saver.get_tuple(run_config(thread, "acme", tenant_id="globex"))
        with tenant_scope("globex"), pytest.raises(TenantMismatchError):
            saver.get_tuple(run_config(thread, "acme"))
        # agreeing sources are fine
        assert saver.get_tuple(run_config(thread, "acme", tenant_id="acme")) is None
        with tenant_scope("acme"):
            assert saver.get_tuple(run_config(thread, "acme")) is None


def test_resolver_answers_are_checked(saver_context: Callable[..., Any]) -> None:
    with saver_context(tenant_id=None, tenant_resolver=lambda config: "") as saver, pytest.raises(InvalidIdError):
        saver.get_tuple(run_config("t-1", None))
    with saver_context(tenant_id=None, tenant_resolver=lambda config: 7) as saver, pytest.raises(InvalidIdError):
        saver.get_tuple(run_config("t-1", None))


async def test_thread_level_methods_give_the_resolver_their_target(saver_context: Callable[..., Any]) -> None:
    seen: list[Any] = []

    def resolver(config: Any) -> str:
        seen.append(config)
        return "acme"

    async with saver_context(tenant_id=None, tenant_resolver=resolver) as saver:
        await saver.adelete_thread("t-a")
        await saver.acopy_thread("t-a", "t-b")
        await saver.adelete_for_runs(["r-1"])
        await saver.aprune(["t-a", "t-b"])
        assert [item async for item in saver.alist(None)] == []
    assert seen == [
        {"configurable": {"thread_id": "t-a"}},
        {"configurable": {"thread_id": "t-a", "target_thread_id": "t-b"}},
        {"configurable": {"run_ids": ["r-1"]}},
        {"configurable": {"thread_ids": ["t-a", "t-b"]}},
        {"configurable": {}},
    ]


def test_resolver_options_are_checked(redis_url: str) -> None:
    with pytest.raises(ConfigError, match="tenant_resolver"):
        TieredSaver.from_conn_string(redis_url, tenant_id="acme", tenant_resolver=org_of).__enter__()
    with pytest.raises(ConfigError, match="tenant_resolver"):
        TieredSaver.from_conn_string(redis_url, tenant_resolver="acme").__enter__()
