"""Switch from PostgresSaver before the bulk import ends: a thread TieredSaver does not hold is
imported from PostgresSaver's tables on its first read, then read from TieredSaver.

Only a thread's owner imports it: `tenant_of` names the tenant each thread belongs to, and a
call for another tenant finds nothing, as it would have before. Each thread is looked up in
PostgresSaver's tables once per process (remembered, bounded): a new thread costs one lookup,
an imported one none after its import.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)

from langgraph_tiered_saver.importer.postgres_saver import Source, import_thread_op

if TYPE_CHECKING:
    from langgraph_tiered_saver.saver import TieredSaver

TenantOf = str | Mapping[str, str] | Callable[[str], str | None]
REMEMBERED = 100_000


class ReadThroughSaver(BaseCheckpointSaver[str]):
    """`saver` in front of PostgresSaver's tables (`source_url`, `source_schema`). Compile the
    graph with it; everything else (locks, flush, tenants views) stays on `saver`."""

    def __init__(self, saver: TieredSaver, source_url: str, *, source_schema: str = "public", tenant_of: TenantOf) -> None:
        super().__init__(serde=saver.serde)
        self.saver = saver
        self.source = Source(source_url, source_schema)
        self._owner = _owner_function(tenant_of)
        self._lock = threading.Lock()  # one source connection, used by one caller at a time
        self._settled: OrderedDict[tuple[str, str], None] = OrderedDict()  # looked up already

    @property
    def config_specs(self) -> list[Any]:
        return self.saver.config_specs

    def close(self) -> None:
        """Close the connection to PostgresSaver's tables (the TieredSaver is the caller's)."""
        with self._lock:
            self.source.close()

    # ------------------------------------------------------------------ the read-through

    def _fetch(self, config: RunnableConfig) -> tuple[str, str, list[CheckpointTuple], Any] | None:
        """The thread's rows in PostgresSaver's tables, once, when the caller's tenant owns it."""
        ref = self.saver._ref(config)
        key = (ref.tenant_id, ref.thread_id)
        if self._owner(ref.thread_id) != ref.tenant_id:
            return None
        with self._lock:
            if key in self._settled:
                return None
            tuples, paths = self.source.read(ref.thread_id)
            self._settled[key] = None
            while len(self._settled) > REMEMBERED:
                self._settled.popitem(last=False)
        return (ref.tenant_id, ref.thread_id, tuples, paths) if tuples else None

    def _import(self, config: RunnableConfig) -> bool:
        found = self._fetch(config)
        if found is None:
            return False
        self.saver.run_op(import_thread_op(self.saver.core, *found))
        return True

    async def _aimport(self, config: RunnableConfig) -> bool:
        found = await asyncio.to_thread(self._fetch, config)
        if found is None:
            return False
        await self.saver.arun_op(import_thread_op(self.saver.core, *found))
        return True

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        found = self.saver.get_tuple(config)
        if found is None and self._import(config):
            found = self.saver.get_tuple(config)
        return found

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        found = await self.saver.aget_tuple(config)
        if found is None and await self._aimport(config):
            found = await self.saver.aget_tuple(config)
        return found

    def list(
        self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None, limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        found = list(self.saver.list(config, filter=filter, before=before, limit=limit))
        if not found and config is not None and self._import(config):
            found = list(self.saver.list(config, filter=filter, before=before, limit=limit))
        yield from found

    async def alist(
        self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None, limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        found = [t async for t in self.saver.alist(config, filter=filter, before=before, limit=limit)]
        if not found and config is not None and await self._aimport(config):
            found = [t async for t in self.saver.alist(config, filter=filter, before=before, limit=limit)]
        for item in found:
            yield item

    # ------------------------------------------------------------------ deletion: both places

    def delete_thread(self, thread_id: str) -> None:
        """Delete the thread in TieredSaver and, when the caller's tenant owns it, in
        PostgresSaver's tables: a deleted thread must not come back through the read-through."""
        self.saver.delete_thread(thread_id)
        self._delete_source(self.saver._tenant("delete_thread"), thread_id)

    async def adelete_thread(self, thread_id: str) -> None:
        await self.saver.adelete_thread(thread_id)
        await asyncio.to_thread(self._delete_source, self.saver._tenant("delete_thread"), thread_id)

    def _delete_source(self, tenant: str, thread_id: str) -> None:
        if self._owner(thread_id) != tenant:
            return
        with self._lock:
            self.source.delete(thread_id)
            self._settled.pop((tenant, thread_id), None)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy a thread (imported first if it is still only in PostgresSaver's tables)."""
        self._import({"configurable": {"thread_id": source_thread_id}})
        self.saver.copy_thread(source_thread_id, target_thread_id)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await self._aimport({"configurable": {"thread_id": source_thread_id}})
        await self.saver.acopy_thread(source_thread_id, target_thread_id)

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self.saver.delete_for_runs(run_ids)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await self.saver.adelete_for_runs(run_ids)

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self.saver.prune(thread_ids, strategy=strategy)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await self.saver.aprune(thread_ids, strategy=strategy)

    # ------------------------------------------------------------------ writes: TieredSaver's

    def put(
        self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata, new_versions: ChannelVersions
    ) -> RunnableConfig:
        return self.saver.put(config, checkpoint, metadata, new_versions)

    async def aput(
        self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata, new_versions: ChannelVersions
    ) -> RunnableConfig:
        return await self.saver.aput(config, checkpoint, metadata, new_versions)

    def put_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = "") -> None:
        self.saver.put_writes(config, writes, task_id, task_path)

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        await self.saver.aput_writes(config, writes, task_id, task_path)

    def get_next_version(self, current: str | None, channel: None) -> str:
        return self.saver.get_next_version(current, channel)


def _owner_function(tenant_of: TenantOf) -> Callable[[str], str | None]:
    if isinstance(tenant_of, str):
        return lambda thread: tenant_of
    if isinstance(tenant_of, Mapping):
        return tenant_of.get
    return tenant_of
