"""The operator's side of `TieredSaver` (a mixin, so the checkpointer shell stays thin):
flush now, flusher health, retention in both tiers, the tenant's threads. Each builds an op and
runs it on the saver's sync or async driver, timed and traced like every call (`telemetry`)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from langchain_core.runnables import RunnableConfig

from langgraph_tiered_saver._core.erasure import TenantErasure, delete_tenant_op
from langgraph_tiered_saver._core.ops import Core
from langgraph_tiered_saver._core.pruning import PruneReport, retention_op
from langgraph_tiered_saver._core.thread_index import ThreadSummary, threads_op
from langgraph_tiered_saver._sansio.io import Op
from langgraph_tiered_saver._sansio.schedule import SchedulerHealth
from langgraph_tiered_saver.flushing.ops import FlushResult
from langgraph_tiered_saver.observability.health import FlusherHealth
from langgraph_tiered_saver.observability.metrics import Metrics
from langgraph_tiered_saver.observability.telemetry import observed_op
from langgraph_tiered_saver.records.ids import ThreadRef
from langgraph_tiered_saver.tenancy import TENANT_KEY, resolve_tenant, retention_tenant

T = TypeVar("T")


class OperatorAPI:
    """Needs from the saver: `core`, `metrics`, `serde`, `tenant_id`, `run_op`, `arun_op`,
    `observed`, `_ref`."""

    core: Core
    metrics: Metrics
    serde: Any
    tenant_id: str | None

    if TYPE_CHECKING:  # defined by TieredSaver

        def run_op(self, op: Op[T]) -> T: ...

        async def arun_op(self, op: Op[T]) -> T: ...

        def observed(self, name: str, op: Op[T], ref: ThreadRef) -> Op[T]: ...

        def _ref(self, config: RunnableConfig) -> ThreadRef: ...

    def flush(self, config: RunnableConfig | None = None) -> list[FlushResult]:
        """Carry the outbox to Postgres now: one thread (`config`), or every dirty thread, 32
        to a transaction (a thread another flusher holds is then waited for alone)."""
        return self.run_op(self._flush_op(config))

    async def aflush(self, config: RunnableConfig | None = None) -> list[FlushResult]:
        return await self.arun_op(self._flush_op(config))

    def delete_tenant(self, tenant_id: str) -> TenantErasure:
        """Erase a tenant from every tier: its threads in Redis and Postgres, its outbox
        entries, its blobs and every per-tenant key and row (see `erasure`). Irreversible;
        other tenants are untouched. Named explicitly, never taken from a binding or scope."""
        return self.run_op(delete_tenant_op(self.core, tenant_id))

    async def adelete_tenant(self, tenant_id: str) -> TenantErasure:
        return await self.arun_op(delete_tenant_op(self.core, tenant_id))

    def flusher_health(self) -> FlusherHealth | None:
        """The background flusher's health (None when it is off): alive, last success,
        failures in a row, quarantined threads with their last error."""
        return None if self.core.flusher is None else self.core.flusher.health()

    def background_health(self) -> SchedulerHealth:
        """The saver's background thread (schedule.py): alive, and per job (flusher,
        write-sender, lock-keeper, redis-server-check) its turns and contained errors."""
        return self.core.scheduler.health()

    def prune_older_than(self, older_than: timedelta, tenant_id: str | None = None, *, all_tenants: bool = False) -> Any:
        """Retention for Postgres: drop checkpoints older than `older_than`, never a thread's
        latest one nor a paused run's, and unreferenced values. Acts for one tenant (given here,
        bound or scoped) or, only when asked with `all_tenants=True`, for every tenant."""
        return self.run_op(self.core.prune_older_than_op(retention_tenant(tenant_id, self.tenant_id, all_tenants), older_than))

    async def aprune_older_than(
        self, older_than: timedelta, tenant_id: str | None = None, *, all_tenants: bool = False
    ) -> Any:
        return await self.arun_op(self.core.prune_older_than_op(retention_tenant(tenant_id, self.tenant_id, all_tenants), older_than))

    def prune_history(self, *, tenant_id: str | None = None, all_tenants: bool = False, **how: Any) -> PruneReport:
        """Retention in Redis and Postgres alike (see `history.retention_op` for `older_than`,
        `keep_last`, `dry_run`, `progress`): one tenant (given, bound or scoped) or, with
        `all_tenants=True`, every tenant Postgres knows."""
        return self.run_op(self._prune_history_op(tenant_id, all_tenants, how))

    async def aprune_history(self, *, tenant_id: str | None = None, all_tenants: bool = False, **how: Any) -> PruneReport:
        return await self.arun_op(self._prune_history_op(tenant_id, all_tenants, how))

    def _prune_history_op(self, tenant_id: str | None, all_tenants: bool, how: dict[str, Any]) -> Op[PruneReport]:
        tenant = retention_tenant(tenant_id, self.tenant_id, all_tenants)
        return observed_op(self.metrics, "prune_history", retention_op(self.core, self.serde, tenant, **how), tenant)

    def list_threads(self, tenant_id: str | None = None, *, filter: dict[str, Any] | None = None) -> list[ThreadSummary]:
        """The tenant's threads in both tiers: whether Redis holds each, what Postgres has of it;
        with `filter` (metadata, as in `list`) only threads with a matching checkpoint."""
        return self.run_op(self._threads_op(tenant_id, filter))

    async def alist_threads(self, tenant_id: str | None = None, *, filter: dict[str, Any] | None = None) -> list[ThreadSummary]:
        return await self.arun_op(self._threads_op(tenant_id, filter))

    def _threads_op(self, tenant_id: str | None, filter: dict[str, Any] | None) -> Op[list[ThreadSummary]]:
        tenant = resolve_tenant(None if tenant_id is None else {TENANT_KEY: tenant_id}, self.tenant_id, "list_threads")
        return observed_op(self.metrics, "list_threads", threads_op(self.core, tenant, filter), tenant)

    def _flush_op(self, config: RunnableConfig | None) -> Op[list[FlushResult]]:
        ref = None if config is None else self._ref(config)
        op = self.core.flush_op(ref)
        if ref is None:
            return observed_op(self.metrics, "flush", op, self.tenant_id)
        return self.observed("flush", op, ref)

