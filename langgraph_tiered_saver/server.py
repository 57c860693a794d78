"""Entry point for LangGraph Agent Server (`langgraph dev`, self-hosted and LangSmith deployments).

In `langgraph.json`:

    "checkpointer": {"path": "langgraph_tiered_saver.server.checkpointer"}

The server enters `checkpointer()` once at start-up and leaves it at shutdown. Everything comes
from the environment (the server has no other way to pass options to a checkpointer):

    REDIS_URL             Redis URL (required), as for the CLI and the worker
    DATABASE_URL          Postgres URL; unset: the saver runs on Redis alone
    LTS_KEY_PREFIX        Redis key prefix (default "lts")
    LTS_SCHEMA            Postgres schema (default "langgraph_tiered")
    LTS_TTL_SECONDS       hot-tier TTL in seconds (default 24 h)
    LTS_TENANT_ID         bind every call to this one tenant (single-tenant deployments)
    LTS_TENANT_FIELD      else: the field of the authenticated user that names the tenant
                          (default "tenant_id"; "identity" makes every user its own tenant)
    LTS_TENANT_RESOLVER   else: "package.module:function", your own resolver (config -> tenant)
    LTS_SETUP             "0" skips `asetup()` (when migrations run elsewhere); default "1"

Tenancy: the server authenticates users with its own `Auth` handlers and passes the user in the
run's config (`configurable.langgraph_auth_user`); reads of thread state and thread-level calls
(delete, copy) carry no user in their config, so the resolver then reads the server's request
context. The server's own clean-up outside any request (the rollback of a cancelled run) has
neither: the resolver then uses the tenant it saw acting on that thread or run in this process.
A call with no tenant raises `TenantRequiredError`: there is no default tenant.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver

from langgraph_tiered_saver import _options as opt
from langgraph_tiered_saver.errors import ConfigError
from langgraph_tiered_saver.saver import DEFAULT_TTL_SECONDS, TieredSaver
from langgraph_tiered_saver.tenancy import TenantResolver, check_tenant

logger = logging.getLogger("langgraph_tiered_saver.server")

ENV_REDIS_URL = "REDIS_URL"
ENV_POSTGRES_URL = "DATABASE_URL"
ENV_KEY_PREFIX = "LTS_KEY_PREFIX"
ENV_SCHEMA = "LTS_SCHEMA"
ENV_TTL = "LTS_TTL_SECONDS"
ENV_TENANT_ID = "LTS_TENANT_ID"
ENV_TENANT_FIELD = "LTS_TENANT_FIELD"
ENV_TENANT_RESOLVER = "LTS_TENANT_RESOLVER"
ENV_SETUP = "LTS_SETUP"
DEFAULT_TENANT_FIELD = "tenant_id"

# The optional methods the server probes at start-up; without them it falls back or degrades
# (rollback cannot clean up, copy replays checkpoints one by one, TTL sweeps cannot prune).
SERVER_CAPABILITIES = ("adelete_thread", "adelete_for_runs", "acopy_thread", "aprune")


def capabilities(saver_type: type) -> dict[str, bool]:
    """Which of `SERVER_CAPABILITIES` `saver_type` implements (overrides), as the server checks."""
    return {
        name: getattr(saver_type, name, None) not in (None, getattr(BaseCheckpointSaver, name, None))
        for name in SERVER_CAPABILITIES
    }


def _field(user: Any, field: str) -> Any:
    """`field` of a server user: a dict, the server's proxy of one (`user.dict()`), or an object."""
    if user is None:
        return None
    if isinstance(user, Mapping):
        return user.get(field)
    as_dict = getattr(user, "dict", None)
    if callable(as_dict):
        try:
            value = as_dict()
        except Exception:  # a user type whose dict() needs arguments: fall back to the attribute
            value = None
        if isinstance(value, Mapping) and field in value:
            return value[field]
    return getattr(user, field, None)


def _request_user() -> Any:
    """The user the server authenticated for the current request or run, if any. Read only
    inside a running server: importing langgraph_api elsewhere loads its settings (and fails
    without them), so a saver used on its own never does."""
    utils = sys.modules.get("langgraph_api.utils")
    ctx = None if utils is None else utils.get_auth_ctx()  # the server's own context variable
    return None if ctx is None else ctx.user


class _Seen:
    """Bounded memory of which tenant acted on a thread or run id (oldest forgotten first); an
    id seen under two tenants is remembered as ambiguous, so it resolves to no tenant."""

    AMBIGUOUS = object()

    def __init__(self, size: int) -> None:
        self.size = size
        self._ids: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()  # the server calls from its event loops and executor threads

    def add(self, ids: Iterable[Any], tenant: str) -> None:
        with self._lock:
            for key in ids:
                if isinstance(key, str) and key:
                    known = self._ids.pop(key, tenant)
                    self._ids[key] = tenant if known == tenant else self.AMBIGUOUS
            while len(self._ids) > self.size:
                self._ids.popitem(last=False)

    def tenant(self, ids: list[Any]) -> str | None:
        with self._lock:
            found = {self._ids.get(key) for key in ids}
        if not ids or len(found) != 1:
            return None
        tenant = found.pop()
        return tenant if isinstance(tenant, str) else None


def _ids(configurable: Mapping[str, Any], config: Mapping[str, Any]) -> list[Any]:
    """The thread and run ids a call names (its own config, or a thread-level call's target)."""
    ids = [configurable.get("thread_id"), configurable.get("run_id"), config.get("run_id")]
    ids.append((config.get("metadata") or {}).get("run_id"))
    for many in ("thread_ids", "run_ids"):
        if isinstance(configurable.get(many), (list, tuple, set, frozenset)):
            ids.extend(configurable[many])
    return [str(i) for i in ids if i is not None and i != ""]


class AuthUserTenant:
    """Resolver: the tenant is `field` of the user the server authenticated.

    From the run's config (`configurable.langgraph_auth_user`, `langgraph_auth_user_id` for
    `identity`) when it carries one, else from the server's request context. An empty value
    counts as none, so an unauthenticated request never reaches the tenant "" or a default.
    With no user at all (the server's own clean-up, outside any request), the tenant a user of
    this process was last seen acting for on the same thread or run, if exactly one.
    """

    def __init__(self, field: str = DEFAULT_TENANT_FIELD, *, remember: int = 100_000) -> None:
        if not isinstance(field, str) or not field:
            raise ConfigError(f"{ENV_TENANT_FIELD} must name a field of the authenticated user, got {field!r}")
        self.field = field
        self._seen = _Seen(remember)

    def __call__(self, config: Any) -> str | None:
        config = config or {}
        configurable = config.get("configurable") or {}
        user = configurable.get("langgraph_auth_user")
        value = _field(user, self.field)
        if value is None and self.field == "identity":
            value = configurable.get("langgraph_auth_user_id")
        if user is None and value is None:
            user = _request_user()
            value = _field(user, self.field)
        ids = _ids(configurable, config)
        if user is None and value is None:
            return self._seen.tenant(ids)
        if value in (None, ""):
            return None
        self._seen.add(ids, str(value))
        return str(value)

    def __repr__(self) -> str:
        return f"AuthUserTenant({self.field!r})"


def _import(path: str) -> Any:
    module, sep, name = path.partition(":")
    if not sep or not module or not name:
        raise ConfigError(f"{ENV_TENANT_RESOLVER} must be 'package.module:function', got {path!r}")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{ENV_TENANT_RESOLVER}={path!r} cannot be imported: {exc}") from exc


def _seconds(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {text!r}") from None
    return opt.ttl(value)


def options_from_env(env: Mapping[str, str] | None = None) -> tuple[str, str | None, dict[str, Any]]:
    """(redis_url, postgres_url, options for `TieredSaver.from_conn_string`) from the environment.
    Every value is checked here, so a bad variable fails the server's start, naming itself."""
    env = os.environ if env is None else env
    redis_url = env.get(ENV_REDIS_URL)
    if not redis_url:
        raise ConfigError(f"{ENV_REDIS_URL} is not set: the checkpointer needs a Redis URL")
    options: dict[str, Any] = {
        "key_prefix": opt.key_prefix(env.get(ENV_KEY_PREFIX, "lts")),
        "schema": env.get(ENV_SCHEMA, "langgraph_tiered"),
        "ttl_seconds": _seconds(ENV_TTL, env[ENV_TTL]) if env.get(ENV_TTL) else DEFAULT_TTL_SECONDS,
    }
    tenant_id, resolver_path = env.get(ENV_TENANT_ID), env.get(ENV_TENANT_RESOLVER)
    if tenant_id and (resolver_path or env.get(ENV_TENANT_FIELD)):
        raise ConfigError(f"set {ENV_TENANT_ID} (one tenant) or a resolver ({ENV_TENANT_FIELD}/{ENV_TENANT_RESOLVER}), not both")
    if resolver_path and env.get(ENV_TENANT_FIELD):
        raise ConfigError(f"set {ENV_TENANT_FIELD} or {ENV_TENANT_RESOLVER}, not both")
    if tenant_id:
        options["tenant_id"] = check_tenant(tenant_id)
    else:
        resolver: TenantResolver = (
            _import(resolver_path) if resolver_path else AuthUserTenant(env.get(ENV_TENANT_FIELD, DEFAULT_TENANT_FIELD))
        )
        options["tenant_resolver"] = resolver
    return redis_url, env.get(ENV_POSTGRES_URL) or None, options


@asynccontextmanager
async def checkpointer() -> AsyncIterator[TieredSaver]:
    """The server's checkpointer: a `TieredSaver` built from the environment, schema applied.
    Leaving it (server shutdown) drains the outbox per the flush policy and closes the pools."""
    redis_url, postgres_url, options = options_from_env()
    async with TieredSaver.from_conn_string(redis_url, postgres_url, **options) as saver:
        if postgres_url and os.environ.get(ENV_SETUP, "1") != "0":
            await saver.asetup()
        found = capabilities(type(saver))
        logger.info(
            "TieredSaver for LangGraph Agent Server: capabilities %s; %s; tenant %s; durable tier %s",
            ", ".join(f"{name}={'yes' if ok else 'NO'}" for name, ok in found.items()),
            "all present, no fallback" if all(found.values()) else "MISSING some: the server falls back",
            options.get("tenant_id") or options.get("tenant_resolver"),
            "Postgres" if postgres_url else "none (Redis only)",
        )
        yield saver
