"""Id validation and config parsing: the only door through which user input reaches key names and rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from langchain_core.runnables import RunnableConfig

from langgraph_tiered_saver.errors import ConfigError, InvalidIdError
from langgraph_tiered_saver.records.storable_id import check_id
from langgraph_tiered_saver.tenancy import TENANT_KEY, resolve_tenant

MAX_THREAD_ID = 1024
MAX_NS = 1024
MAX_CHECKPOINT_ID = 128
MAX_TASK_ID = 512
# Postgres indexes a row's key columns in one btree tuple of at most 2704 bytes (a third of a
# page): a row whose key is larger is refused (SQLSTATE 54000) at flush time, long after Redis
# acknowledged it. The UTF-8 bytes of a row's key columns are therefore checked before either
# tier is written; 2600 leaves room for the tuple's headers. Deep subgraphs with long node names
# reach it (every level repeats its node name in checkpoint_ns, its channels repeat it again).
MAX_INDEXED_BYTES = 2600


def check_field_id(kind: str, value: Any, max_len: int, *, allow_empty: bool = False) -> str:
    """Validate ids stored inside keys' fields (namespace, checkpoint, task, channel ids).

    They may hold any printable text LangGraph produces (`child:1|grand:<uuid>`), but not the
    control characters the field layout uses as separators.
    """
    if not isinstance(value, str):
        raise InvalidIdError(f"{kind} must be a string, got {type(value).__name__}")
    if not value and not allow_empty:
        raise InvalidIdError(f"{kind} must not be empty")
    if len(value) > max_len:
        raise InvalidIdError(f"{kind} is {len(value)} characters long, the limit is {max_len}")
    if "\x00" in value or "\x01" in value:
        raise InvalidIdError(f"{kind} {value[:60]!r} contains a NUL or SOH control character")
    return value


def check_indexable(ref: ThreadRef, *parts: str) -> None:
    """Refuse (typed, up front, the same for both tiers) a row key Postgres could not index: the
    tenant, thread and namespace of `ref` with each of `parts` (the rest of one row's key)."""
    chars = len(ref.tenant_id) + len(ref.thread_id) + len(ref.checkpoint_ns)
    if 4 * (chars + max(map(len, parts), default=0)) <= MAX_INDEXED_BYTES:
        return  # short enough whatever the characters (UTF-8 takes at most 4 bytes each)
    base = sum(len(v.encode()) for v in (ref.tenant_id, ref.thread_id, ref.checkpoint_ns))
    for part in parts:
        size = base + len(part.encode())
        if size > MAX_INDEXED_BYTES:
            raise InvalidIdError(
                f"thread {ref.thread_id[:40]!r}: a row key of {size} UTF-8 bytes (tenant, thread, checkpoint_ns "
                f"{ref.checkpoint_ns[:60]!r}..., {part[:40]!r}...) exceeds the {MAX_INDEXED_BYTES} bytes Postgres "
                "can index; shorten the subgraph node names or ids"
            )


def check_thread(value: Any) -> str:
    """Any text (keys encode it, see `keys`); an int is taken as its decimal string."""
    return check_id("thread_id", value, MAX_THREAD_ID)


@dataclass(frozen=True, slots=True)
class ThreadRef:
    """Where a config points: tenant, thread, namespace and (optionally) one checkpoint."""

    tenant_id: str
    thread_id: str
    checkpoint_ns: str = ""
    checkpoint_id: str | None = None
    # whether the caller's config named the tenant: returned configs carry it only then
    tenant_in_config: bool = False

    def config(self, checkpoint_id: str | None = None) -> RunnableConfig:
        """The RunnableConfig LangGraph expects back for this ref: what the caller passed (the
        tenant only if it passed one) plus the checkpoint id."""
        configurable: dict[str, Any] = {
            "thread_id": self.thread_id,
            "checkpoint_ns": self.checkpoint_ns,
            "checkpoint_id": checkpoint_id if checkpoint_id is not None else self.checkpoint_id,
        }
        if self.tenant_in_config:
            configurable[TENANT_KEY] = self.tenant_id
        return {"configurable": configurable}


def configurable_of(config: Any) -> dict[str, Any]:
    if not isinstance(config, dict):
        raise ConfigError(f"config must be a dict (RunnableConfig), got {type(config).__name__}")
    configurable = config.get("configurable")
    if not isinstance(configurable, dict):
        raise ConfigError("config has no 'configurable' dict; pass {'configurable': {'thread_id': ...}}")
    return configurable


def parse_config(config: Any, bound_tenant: str | None, *, need_checkpoint_id: bool = False) -> ThreadRef:
    """Turn a RunnableConfig into a validated ThreadRef, with a typed error for each defect
    (the tenant resolved as `tenancy.resolve_tenant` says: exactly one, or an error)."""
    c = configurable_of(config)
    if c.get("thread_id") is None:
        raise ConfigError("config['configurable'] has no 'thread_id': the saver needs one to store state")
    tenant = resolve_tenant(c, bound_tenant, "this checkpoint call")
    thread = check_thread(c["thread_id"])
    ns = check_field_id("checkpoint_ns", c.get("checkpoint_ns") or "", MAX_NS, allow_empty=True)
    cid = c.get("checkpoint_id")
    if cid is not None and cid != "":
        cid = check_field_id("checkpoint_id", cid, MAX_CHECKPOINT_ID)
    else:
        cid = None
    if need_checkpoint_id and cid is None:
        raise ConfigError("config['configurable'] has no 'checkpoint_id' for this write")
    return ThreadRef(tenant, thread, ns, cid, c.get(TENANT_KEY) is not None)
