"""Acknowledgements a synchronous flush leaves to be sent after its caller has its answer.

An interrupt's flush is on the caller's path: `invoke` returns once the interrupt is committed
in Postgres. Its acknowledgement (the entries taken off the outbox, the lease given back) changes
nothing the caller sees, so it need not cost the caller a Redis round trip: the flush leaves it
here and the saver's background thread sends it right after (`BackgroundFlusher`). Until then the
entries stay in the outbox and the lease stays held, so whatever reads the outbox or takes the
thread's lease in this process sends the thread's pending acknowledgement first (`send_op`).

One that is never sent (the process dies first, Redis refuses it) costs work, not data: the
lease lapses, the entries are read again by the next flush, and its inserts skip the rows
Postgres holds (at-least-once delivery, idempotent rows).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from langgraph_tiered_saver._sansio.io import Op, RedisCall
from langgraph_tiered_saver.errors import TierUnavailableError

logger = logging.getLogger("langgraph_tiered_saver.flush")

ThreadId = tuple[str, str]


class DeferredAcks:
    """The acknowledgements left by synchronous flushes, one per thread at most (a thread's next
    flush sends it before reading). Thread-safe: the caller's thread leaves, any thread sends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[ThreadId, RedisCall] = {}

    def leave(self, key: ThreadId, call: RedisCall) -> None:
        with self._lock:
            self._calls[key] = call

    def __len__(self) -> int:
        return len(self._calls)

    def _take(self, keys: Iterable[ThreadId] | None) -> list[tuple[ThreadId, RedisCall]]:
        with self._lock:
            if keys is None:
                taken, self._calls = list(self._calls.items()), {}
                return taken
            return [(key, call) for key in keys if (call := self._calls.pop(key, None)) is not None]

    def send_op(self, keys: Iterable[ThreadId] | None = None) -> Op[int]:
        """Send the pending acknowledgements of `keys` (None: all); how many were sent. One
        Redis refuses is logged and dropped: its entries are flushed again (see above)."""
        if not self._calls:
            return 0
        sent = 0
        for (tenant_id, thread_id), call in self._take(keys):
            try:
                yield call
                sent += 1
            except TierUnavailableError as exc:
                logger.warning(
                    "could not acknowledge the flush of thread %s/%s (its rows are in Postgres): its "
                    "entries stay in the outbox and are flushed again once its lease lapses: %s",
                    tenant_id, thread_id, exc, extra={"tenant_id": tenant_id, "thread_id": thread_id},
                )
        return sent
