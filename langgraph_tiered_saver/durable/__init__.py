"""Durable tier: Postgres tables with row-level security, written by the flusher.

Pure logic and SQL: every operation is a sans-I/O generator (`*_op`) that the saver and the
flusher run with `_io.SyncDriver` / `_io.AsyncDriver`.
"""

from .audit import dumps_jsonb, to_audit_json
from .migrations import LATEST_VERSION, applied_versions_op, setup_op
from .ops import get_checkpoint_op, list_op, list_threads_op, upsert_batch_op
from .records import (
    BlobRow,
    CheckpointRow,
    DeleteResult,
    DurableTuple,
    FlushBatch,
    RowCounts,
    ThreadInfo,
    WriteRow,
)
from .retention import (
    PRUNE_STRATEGIES,
    copy_thread_op,
    delete_for_runs_op,
    delete_thread_op,
    prune_older_than_op,
    prune_op,
)
from .roles import RoleCheck, check_role_op, create_app_role_op

__all__ = [
    "LATEST_VERSION",
    "PRUNE_STRATEGIES",
    "BlobRow",
    "CheckpointRow",
    "DeleteResult",
    "DurableTuple",
    "FlushBatch",
    "RoleCheck",
    "RowCounts",
    "ThreadInfo",
    "WriteRow",
    "applied_versions_op",
    "check_role_op",
    "copy_thread_op",
    "create_app_role_op",
    "delete_for_runs_op",
    "delete_thread_op",
    "dumps_jsonb",
    "get_checkpoint_op",
    "list_op",
    "list_threads_op",
    "prune_older_than_op",
    "prune_op",
    "setup_op",
    "to_audit_json",
    "upsert_batch_op",
]
