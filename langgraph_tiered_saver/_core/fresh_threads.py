"""Threads this process found new: Postgres held no checkpoint of them, in any namespace.

A run's first read of a thread Redis does not hold asks Postgres; when Postgres holds nothing of
the thread at all, the thread's first write tells Redis so (`fresh` in hot/lua/write.lua), and
Redis marks its copy whole for every namespace from that write on. Everything later goes through
Redis first, so a namespace Redis lacks then (a subgraph's first read, a new task's namespace)
is absent everywhere, and get.lua says so (`absent`) without a Postgres round trip. The mark is
the one `list` already keeps (list.lua `whole`), dropped by whatever can leave Postgres with a
checkpoint Redis lacks (a prune, an import), and not trusted for a copy whose server changed
since it was verified (hotwatch.py).
"""

from __future__ import annotations

import threading
from collections import OrderedDict


class FreshThreads:
    """(tenant, thread) pairs Postgres answered "no checkpoint at all" for, waiting for the
    thread's first write; bounded (the newest `LIMIT`: one forgotten only loses the shortcut)."""

    LIMIT = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._new: OrderedDict[tuple[str, str], None] = OrderedDict()

    def add(self, tenant_id: str, thread_id: str) -> None:
        with self._lock:
            self._new[(tenant_id, thread_id)] = None
            self._new.move_to_end((tenant_id, thread_id))
            if len(self._new) > self.LIMIT:
                self._new.popitem(last=False)

    def take(self, tenant_id: str, thread_id: str) -> bool:
        """Whether the thread was found new (and forget it: only its first write may say so)."""
        if not self._new:  # the common case, without the lock
            return False
        with self._lock:
            return self._new.pop((tenant_id, thread_id), 0) is None

    def __len__(self) -> int:
        with self._lock:
            return len(self._new)
