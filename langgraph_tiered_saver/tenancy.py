"""Which tenant a call acts for: exactly one, or a `TenantRequiredError`, never a silent default.

A tenant reaches the saver in one of four ways:

1. **Bound**: the saver was built with `tenant_id="acme"`, or is a view `saver.for_tenant("acme")`.
   Every call acts for that tenant; a config or scope naming another one is refused.
2. **Carried by the run**: `config["configurable"]["tenant_id"]`. LangGraph copies the run's
   `configurable` into every task and subgraph run, so puts, writes and reads of a run carry it.
   It does not carry it everywhere: `graph.get_state(config, subgraphs=True)` builds each
   subgraph's config from `thread_id` and `checkpoint_ns` only, and thread-level methods
   (`delete_thread`, `copy_thread`, `prune`, `delete_for_runs`) take no config at all.
3. **Scoped**: `with tenant_scope("acme"): ...` sets the tenant for everything the block calls in
   this context. A context variable, so LangGraph's worker threads and asyncio tasks (which copy
   the context) see it, and concurrent requests of other tenants do not.
4. **Resolved**: `TieredSaver(..., tenant_resolver=fn)` asks `fn(config)` on every call, e.g. for
   the organisation of the user a server authenticated. Thread-level methods have no config, so
   `fn` gets one naming what they act on: `{"configurable": {"thread_id": ...}}` (delete_thread;
   copy_thread adds `target_thread_id`), `{"thread_ids": [...]}` (prune), `{"run_ids": [...]}`
   (delete_for_runs), `{}` (list(None)). The resolver is the authority: when it finds no tenant
   the call raises `TenantRequiredError` (a config's own `tenant_id` cannot stand in for it),
   and a config or scope naming another tenant than it raises `TenantMismatchError`.

An unbound saver with none of these raises `TenantRequiredError`; two sources that disagree
raise `TenantMismatchError`. Returned configs carry `tenant_id` only when the caller's did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from langgraph_tiered_saver.errors import (
    ConfigError,
    InvalidIdError,
    TenantMismatchError,
    TenantRequiredError,
)
from langgraph_tiered_saver.records.storable_id import check_id

MAX_TENANT_ID = 256
TENANT_KEY = "tenant_id"

TenantResolver = Callable[[Any], "str | None"]
"""Maps a call's config to its tenant, or None if it has none (see 4. above)."""

_SCOPE: ContextVar[str | None] = ContextVar("langgraph_tiered_saver_tenant", default=None)

_HOW_TO = (
    "bind the saver to a tenant (TieredSaver(..., tenant_id='acme') or saver.for_tenant('acme')), "
    "put configurable.tenant_id in the config, or wrap the call in `with tenant_scope('acme'):`"
)


def check_tenant(value: Any) -> str:
    """A tenant id is a non-empty string (any text; keys encode it). 0, '' and None are refused
    rather than read as "no tenant", so they can never select a default."""
    if not isinstance(value, str):
        raise InvalidIdError(f"tenant_id must be a non-empty string, got {type(value).__name__} {value!r}")
    return check_id("tenant_id", value, MAX_TENANT_ID)


@contextmanager
def tenant_scope(tenant_id: str) -> Iterator[str]:
    """Act for `tenant_id` in this block (and the threads and tasks it starts with its context)."""
    token = _SCOPE.set(check_tenant(tenant_id))
    try:
        yield tenant_id
    finally:
        _SCOPE.reset(token)


def resolve_tenant(configurable: dict[str, Any] | None, bound: str | None, what: str) -> str:
    """The one tenant a call acts for. `configurable` is the call's config (None for thread-level
    methods), `bound` the saver's tenant, `what` names the call for the error message."""
    given = None if configurable is None else configurable.get(TENANT_KEY)
    scoped = _SCOPE.get()
    if scoped is None and (given is None) != (bound is None):  # one source: the common call
        return bound if given is None else check_tenant(given)  # type: ignore[return-value]
    candidates = {
        source: tenant
        for source, tenant in (
            ("config", None if given is None else check_tenant(given)),
            ("saver", bound),
            ("tenant_scope", scoped),
        )
        if tenant is not None
    }
    if not candidates:
        raise TenantRequiredError(f"{what} has no tenant and the saver is not bound to one: {_HOW_TO}")
    if len(set(candidates.values())) > 1:
        sources = ", ".join(f"{source}={tenant!r}" for source, tenant in candidates.items())
        raise TenantMismatchError(f"{what} names more than one tenant ({sources}); refusing to guess")
    return next(iter(candidates.values()))


def resolver_tenant(resolver: TenantResolver, config: Any, what: str) -> str:
    """The tenant `resolver` finds for `config`; finding none is an error, never a default."""
    tenant = resolver(config)
    if tenant is None:
        raise TenantRequiredError(
            f"{what}: the saver's tenant_resolver found no tenant for this call "
            f"(configurable keys: {sorted((config or {}).get('configurable') or {})})"
        )
    return check_tenant(tenant)


def tenant_source(tenant_id: Any, resolver: Any) -> tuple[str | None, TenantResolver | None]:
    """A saver's own tenant: bound (`tenant_id`), resolved per call (`resolver`), or neither."""
    if resolver is not None and (tenant_id is not None or not callable(resolver)):
        raise ConfigError(
            "tenant_resolver must be a callable config -> tenant id, and takes no tenant_id "
            f"(a saver is bound or resolves its tenant per call), got {resolver!r}"
        )
    return (None if tenant_id is None else check_tenant(tenant_id)), resolver


def authority(bound: str | None, resolver: TenantResolver | None, config: Any, what: str) -> str | None:
    """The saver's own tenant for a call: the bound one, or what its resolver finds for `config`."""
    return bound if resolver is None else resolver_tenant(resolver, config, what)


def retention_tenant(given: str | None, bound: str | None, all_tenants: bool) -> str | None:
    """The tenant `prune_older_than` acts for: one (given, bound or scoped), or every tenant
    (None) only when asked with `all_tenants=True` on an unbound saver."""
    if not all_tenants:
        return resolve_tenant(None if given is None else {TENANT_KEY: given}, bound, "prune_older_than")
    if given is not None or bound is not None:
        raise ConfigError("prune_older_than(all_tenants=True) takes no tenant and needs an unbound saver")
    return None
