"""What a health check needs to know about a flusher (background thread or worker)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FlusherHealth:
    """What a health check needs to know about a flusher (background thread or worker)."""

    alive: bool
    last_success_at: float | None  # time.time() of the last successful flush
    consecutive_failures: int  # failed flush attempts since the last success, all threads
    quarantined: tuple[tuple[str, str, str], ...] = field(default=())  # (tenant, thread, error)
    outage_seconds: float | None = None  # flushes failing for everyone for this long (None: no outage)
    outage_error: str = ""
    # recent forks found at flush, newest last: (tenant, thread, namespace, checkpoint id)
    forks: tuple[tuple[str, ...], ...] = field(default=())
