"""A circuit breaker for Postgres: after an outage is seen, stop waiting on it for a while.

Without it, every call during an outage waits the full connection timeout (the first turn of
every new thread paid 2 s) and psycopg_pool logs on every call. With it, the first failure opens
the circuit: calls fail at once with `TierUnavailableError` (the saver answers from Redis, the
flusher keeps its outbox) until the backoff window passes; then one call probes (half-open). A
success closes the circuit; a failure reopens it with a doubled window (up to `max_open`, a few
seconds, so a returning server is noticed within seconds). One WARNING when an outage starts,
one when it ends (with the outage's length: first failure to first success, and how long
before that the last call failed), never one per call.

Pure state plus an injected clock: the drivers of a saver share one instance (thread-safe).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from langgraph_tiered_saver.errors import TierUnavailableError
from langgraph_tiered_saver.observability.metrics import Metrics

logger = logging.getLogger("langgraph_tiered_saver")
MAX_OPEN = 2.0  # the longest window between probes of a server that is down


class PgBreaker:
    def __init__(
        self,
        metrics: Metrics | None = None,
        *,
        first_open: float = 1.0,
        max_open: float = MAX_OPEN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics or Metrics()
        self.first_open = first_open
        self.max_open = max_open
        self._clock = clock
        self._lock = threading.Lock()
        self._open_until: float | None = None  # None: closed
        self._window = first_open
        self._probing = False
        self._last_error = ""
        self._since = 0.0
        self._last_failure = 0.0

    def before_call(self) -> None:
        """Raise at once while the circuit is open; let one probe through after the window."""
        with self._lock:
            if self._open_until is None:
                return
            now = self._clock()
            if now >= self._open_until and not self._probing:
                self._probing = True
                return
            self.metrics.incr("postgres_fast_failures")
            down_for = now - self._since
        raise TierUnavailableError(
            "postgres", f"circuit open for {down_for:.1f} s after: {self._last_error} (not waiting again yet)"
        )

    def succeeded(self) -> None:
        with self._lock:
            if self._open_until is None:
                return
            now = self._clock()
            down_for, quiet_for = now - self._since, now - self._last_failure
            self._open_until, self._probing, self._window = None, False, self.first_open
        self.metrics.observe("postgres_outage_seconds", down_for)
        logger.warning(
            "Postgres is reachable again after %.1f s; circuit closed (the last failed call was %.1f s ago)",
            down_for, quiet_for, extra={"outage_seconds": round(down_for, 3)},
        )

    def failed(self, exc: TierUnavailableError) -> None:
        with self._lock:
            now = self._clock()
            self._last_error = str(exc)
            self._last_failure = now
            if self._open_until is None:
                self._since = now
                self._window = self.first_open
                started = True
            else:
                self._window = min(self.max_open, self._window * 2)
                started = False
            self._open_until = now + self._window
            self._probing = False
        if started:
            self.metrics.incr("postgres_outages")
            logger.warning(
                "Postgres unavailable, answering from Redis alone and keeping the outbox; "
                "calls fail fast for %.1f s between probes: %s", self.first_open, exc,
            )
