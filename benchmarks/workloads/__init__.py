"""Workloads, by group name (what `--only` takes), in run order.

A workload is a function `run(ctx: Context) -> None` that opens the savers it needs, runs them
round robin, and appends one `Result` per saver to `ctx.results` (via `Table.emit`).
"""

from __future__ import annotations

from collections.abc import Callable

from . import concurrency, conformance, delta, e2e, micro, pgload, rtt, scale, storage
from ._common import FULL, QUICK, Context, Profile, Progress

WORKLOADS: dict[str, Callable[[Context], None]] = {
    "micro": micro.run,
    "graph": e2e.run,
    "concurrency": concurrency.run,
    "long": storage.run_long,
    "large": storage.run_large,
    "pgload": pgload.run,
    "rtt": rtt.run,
    "tenants": scale.run_tenants,
    "memory": scale.run_memory,
    "cpu": scale.run_cpu,
    "lock": scale.run_lock,
    "conformance": conformance.run,
    "delta": delta.run_conversation,
    "history": delta.run_history,
}

__all__ = ["FULL", "QUICK", "WORKLOADS", "Context", "Profile", "Progress"]
