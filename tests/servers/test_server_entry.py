"""`langgraph_tiered_saver.server`: the Agent Server entry point. Its environment parsing (every
bad variable a `ConfigError` naming it), the resolver that maps the server's authenticated user
to a tenant, the context manager on real Redis and Postgres, and docs/agent-server.md's JSON
being the example's langgraph.json. The server itself runs in tests/servers/test_agent_server.py."""

from __future__ import annotations

import json
import logging
import re
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver

from langgraph_tiered_saver import ConfigError, TenantRequiredError, TieredSaver
from langgraph_tiered_saver import server as srv
from langgraph_tiered_saver.server import (
    AuthUserTenant,
    capabilities,
    checkpointer,
    options_from_env,
)

REPO = Path(__file__).resolve().parents[2]
REDIS = {"REDIS_URL": "redis://127.0.0.1:6379/0"}


def org_resolver(config: Any) -> str | None:
    return "acme"


# --------------------------------------------------------------------------- environment


def test_defaults_resolve_the_tenant_from_the_authenticated_user() -> None:
    redis_url, postgres_url, options = options_from_env(REDIS)
    assert (redis_url, postgres_url) == (REDIS["REDIS_URL"], None)
    assert options["key_prefix"] == "lts" and options["schema"] == "langgraph_tiered"
    assert isinstance(options["tenant_resolver"], AuthUserTenant) and options["tenant_resolver"].field == "tenant_id"
    assert "tenant_id" not in options


def test_every_variable_is_read() -> None:
    env = {**REDIS, "DATABASE_URL": "postgresql://u@h/db", "LTS_KEY_PREFIX": "app-1", "LTS_SCHEMA": "s1",
           "LTS_TTL_SECONDS": "60", "LTS_TENANT_ID": "acme"}
    _, postgres_url, options = options_from_env(env)
    assert postgres_url == "postgresql://u@h/db"
    assert options == {"key_prefix": "app-1", "schema": "s1", "ttl_seconds": 60.0, "tenant_id": "acme"}
    _, _, options = options_from_env({**REDIS, "LTS_TENANT_FIELD": "identity"})
    assert options["tenant_resolver"].field == "identity"
    _, _, options = options_from_env({**REDIS, "LTS_TENANT_RESOLVER": "tests.servers.test_server_entry:org_resolver"})
    assert options["tenant_resolver"] is org_resolver


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({}, "REDIS_URL"),
        ({**REDIS, "LTS_TTL_SECONDS": "a day"}, "LTS_TTL_SECONDS"),
        ({**REDIS, "LTS_TTL_SECONDS": "0"}, "ttl_seconds"),
        ({**REDIS, "LTS_KEY_PREFIX": "a{b}"}, "key_prefix"),
        ({**REDIS, "LTS_TENANT_ID": ""}, None),  # empty: unset, so the default resolver
        ({**REDIS, "LTS_TENANT_ID": "acme", "LTS_TENANT_FIELD": "org"}, "LTS_TENANT_ID"),
        ({**REDIS, "LTS_TENANT_ID": "acme", "LTS_TENANT_RESOLVER": "a.b:c"}, "LTS_TENANT_ID"),
        ({**REDIS, "LTS_TENANT_FIELD": "org", "LTS_TENANT_RESOLVER": "a.b:c"}, "LTS_TENANT_FIELD"),
        ({**REDIS, "LTS_TENANT_RESOLVER": "no_colon"}, "LTS_TENANT_RESOLVER"),
        ({**REDIS, "LTS_TENANT_RESOLVER": "no.such.module:fn"}, "LTS_TENANT_RESOLVER"),
        ({**REDIS, "LTS_TENANT_RESOLVER": "tests.servers.test_server_entry:nothing"}, "LTS_TENANT_RESOLVER"),
    ],
)
def test_bad_variables_fail_naming_themselves(env: dict[str, str], names: str | None) -> None:
    if names is None:
        assert isinstance(options_from_env(env)[2]["tenant_resolver"], AuthUserTenant)
        return
    with pytest.raises(ConfigError, match=names):
        options_from_env(env)


# --------------------------------------------------------------------------- the resolver


def run_config(user: Any, **configurable: Any) -> dict[str, Any]:
    return {"configurable": {"langgraph_auth_user": user, **configurable}}


def test_resolver_reads_the_user_in_the_run_config() -> None:
    resolve = AuthUserTenant()
    assert resolve(run_config({"identity": "alice", "tenant_id": "acme"}, thread_id="t1")) == "acme"
    assert resolve(run_config({"identity": "alice"}, thread_id="t1")) is None  # no field: no tenant
    assert resolve(run_config({"identity": "alice", "tenant_id": ""}, thread_id="t1")) is None
    by_identity = AuthUserTenant("identity")
    assert by_identity({"configurable": {"langgraph_auth_user_id": "alice"}}) == "alice"
    with pytest.raises(ConfigError):
        AuthUserTenant("")


class ServerUser:
    """The shape of the server's user objects (langgraph_api's ProxyUser): `dict()` and attributes.
    The real ones, and the server's request context, are exercised in test_agent_server.py:
    importing langgraph_api here would load the server's settings into the test process."""

    def __init__(self, **fields: Any) -> None:
        self._fields = fields
        self.identity = fields["identity"]

    def dict(self) -> dict[str, Any]:
        return dict(self._fields)


class AttributeUser:
    """A user type whose `dict` is not the server's (it needs an argument): read as attributes."""

    identity = "carol"
    tenant_id = "initech"

    def dict(self, mode: str) -> dict[str, Any]:
        raise AssertionError("not called like the server's dict()")


def test_resolver_reads_the_servers_user_objects() -> None:
    user = ServerUser(identity="alice", tenant_id="acme")
    assert AuthUserTenant()(run_config(user)) == "acme"
    assert AuthUserTenant("identity")(run_config(user)) == "alice"
    assert AuthUserTenant("org")(run_config(user)) is None
    assert AuthUserTenant()(run_config(AttributeUser())) == "initech"


def test_without_any_user_the_tenant_seen_on_that_thread_or_run() -> None:
    resolve = AuthUserTenant(remember=3)
    acme = {"identity": "alice", "tenant_id": "acme"}
    assert resolve({"configurable": {"langgraph_auth_user": acme, "thread_id": "t1", "run_id": "r1"}}) == "acme"
    assert resolve({"configurable": {"run_ids": ["r1"]}}) == "acme"
    assert resolve({"configurable": {"thread_id": "t1"}}) == "acme"
    assert resolve({"configurable": {"thread_id": "t-unseen"}}) is None
    assert resolve({"configurable": {}}) is None
    # an id seen under two tenants resolves to none
    resolve({"configurable": {"langgraph_auth_user": {"identity": "b", "tenant_id": "globex"}, "thread_id": "t1"}})
    assert resolve({"configurable": {"thread_id": "t1"}}) is None
    # two ids of different tenants in one call: none
    resolve({"configurable": {"langgraph_auth_user": acme, "run_id": "r2"}})
    resolve({"configurable": {"langgraph_auth_user": {"identity": "b", "tenant_id": "globex"}, "run_id": "r3"}})
    assert resolve({"configurable": {"run_ids": ["r2", "r3"]}}) is None
    # bounded: the oldest ids are forgotten
    for n in range(5):
        resolve({"configurable": {"langgraph_auth_user": acme, "thread_id": f"x{n}"}})
    assert resolve({"configurable": {"run_ids": ["r2"]}}) is None


def test_capabilities_are_what_the_server_checks() -> None:
    assert capabilities(TieredSaver) == dict.fromkeys(srv.SERVER_CAPABILITIES, True)

    class Bare(BaseCheckpointSaver[str]):
        pass

    assert capabilities(Bare) == dict.fromkeys(srv.SERVER_CAPABILITIES, False)
    assert capabilities(InMemorySaver)["adelete_thread"]


# --------------------------------------------------------------------------- the context manager


async def test_checkpointer_context_on_real_servers(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, redis_url: str, test_database_url: str, key_prefix: str
) -> None:
    schema = f"lts_entry_{uuid.uuid4().hex[:8]}"
    for name in ("LTS_TENANT_FIELD", "LTS_TENANT_RESOLVER", "LTS_TTL_SECONDS", "LTS_SETUP"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("DATABASE_URL", test_database_url)
    monkeypatch.setenv("LTS_KEY_PREFIX", key_prefix)
    monkeypatch.setenv("LTS_SCHEMA", schema)
    monkeypatch.delenv("LTS_TENANT_ID", raising=False)
    caplog.set_level(logging.INFO, logger="langgraph_tiered_saver.server")
    try:
        async with checkpointer() as saver:
            assert isinstance(saver, TieredSaver) and saver.tenant_resolver is not None
            with pytest.raises(TenantRequiredError):  # no server, no user: no tenant
                await saver.aget_tuple({"configurable": {"thread_id": "t1"}})
            user = {"identity": "alice", "tenant_id": "acme"}
            assert await saver.aget_tuple(run_config(user, thread_id="t1")) is None
        with psycopg.connect(test_database_url) as conn:  # asetup() ran
            assert conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
        line = next(r.getMessage() for r in caplog.records if "capabilities" in r.getMessage())
        assert "all present, no fallback" in line and "durable tier Postgres" in line
    finally:
        with psycopg.connect(test_database_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# --------------------------------------------------------------------------- the doc


def test_doc_shows_the_example_config_and_every_variable() -> None:
    doc = (REPO / "docs" / "agent-server.md").read_text()
    block = re.search(r"```json\n(.*?)```", doc, re.S)
    assert block is not None
    assert json.loads(block.group(1)) == json.loads((REPO / "examples" / "case_8842" / "langgraph.json").read_text())
    names = {value for key, value in vars(srv).items() if key.startswith("ENV_")}
    assert names and all(f"`{name}`" in doc for name in names)


async def test_checkpointer_without_setup_or_postgres(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, redis_url: str, test_database_url: str, key_prefix: str
) -> None:
    """`LTS_SETUP=0` leaves the schema alone (migrations run elsewhere); no `DATABASE_URL` is a
    Redis-only saver, and the start-up line says so. A bad variable fails before connecting."""
    schema = f"lts_entry_{uuid.uuid4().hex[:8]}"
    for name in ("LTS_TENANT_FIELD", "LTS_TENANT_RESOLVER", "LTS_TTL_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("LTS_KEY_PREFIX", key_prefix)
    monkeypatch.setenv("LTS_SCHEMA", schema)
    monkeypatch.setenv("LTS_TENANT_ID", "acme")
    monkeypatch.setenv("DATABASE_URL", test_database_url)
    monkeypatch.setenv("LTS_SETUP", "0")
    async with checkpointer() as saver:
        assert saver.tenant_id == "acme" and saver.tenant_resolver is None
    with psycopg.connect(test_database_url) as conn:
        assert conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone() is None
    monkeypatch.delenv("DATABASE_URL")
    caplog.set_level(logging.INFO, logger="langgraph_tiered_saver.server")
    async with checkpointer() as saver:
        assert not saver.durable
    assert any("durable tier none (Redis only)" in r.getMessage() for r in caplog.records)
    monkeypatch.setenv("LTS_TTL_SECONDS", "soon")
    with pytest.raises(ConfigError, match="LTS_TTL_SECONDS"):
        async with checkpointer():
            pass
