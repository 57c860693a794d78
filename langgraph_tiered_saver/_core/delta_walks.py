"""DeltaChannel walks this process made, kept so that the next walk of the thread stops where
they began.

Each turn of a DeltaChannel conversation reads the history at its newest checkpoint: the
writes of every ancestor back to the channel's last snapshot (up to `snapshot_frequency`
updates, so hundreds of ancestors), of which all but the last turn's were read by the turn
before. The Redis walk (hot/lua/delta_history.lua) is told where the kept walk begins; on
reaching that ancestor it checks that the write fields of the kept walk's id range number as
they did (a write added to one of those ancestors, or any of them deleted, changes the count),
and stops there: the call then reads only the turn's new ancestors.

A walk is kept only when Redis answered it all ("done") and its ancestors' ids fall in
strictly decreasing order from the newest: then every field of every one of them lies in the
range the count covers. An ancestor's parent, writes and stored values never change once it
has a child, and the count catches the exceptions (late writes, deletion, expiry, a wiped
Redis), so a kept walk gives what the full walk would. A thread deleted and built again with
the same ids and as many writes (hand-made ids: LangGraph's never repeat) would pass the count:
its birth mark, which the write giving Redis the thread's first checkpoint sets, tells it apart.
A thread without one (written with neither a durable tier nor a run lock, which keep a meta hash
for it) has no walk kept. Bounded: `limit` walks, least recently used first out; a walk of more
than `max_records` writes is not kept. A thread's go when this process deletes, prunes or
overwrites it, a tenant's with its erasure.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from langgraph_tiered_saver.records.codec import TypedValue, WriteRecord

DEFAULT_LIMIT = 256
MAX_RECORDS = 20_000

Key = tuple[str, str, str, tuple[str, ...]]  # tenant, thread, namespace, channels


@dataclass(frozen=True)
class KeptWalk:
    """A whole walk: the parent of the checkpoint it was made for (`newest`, its first
    ancestor) back to `oldest`; `count`: the write fields of that id range then; `born`: the
    thread's birth mark in Redis then; `steps`, newest first, and `seeds` as `_Walk` holds them."""

    newest: str
    oldest: str
    count: int
    born: str
    steps: tuple[list[WriteRecord], ...]
    seeds: dict[str, TypedValue]

    def after(
        self, steps: Sequence[list[WriteRecord]], seeds: dict[str, TypedValue]
    ) -> tuple[list[list[WriteRecord]], dict[str, TypedValue]]:
        """This walk continued by newer `steps` and `seeds`: a channel seeded in the newer part
        takes nothing from this one (its writes here predate its seed)."""
        older = [[w for w in step if w.channel not in seeds] for step in self.steps] if seeds else list(self.steps)
        return [*steps, *older], {**{c: v for c, v in self.seeds.items() if c not in seeds}, **seeds}


def strictly_decreasing(ids: Sequence[str], then: str | None) -> bool:
    """Whether `ids` (newest first), followed by `then` when given, decrease strictly."""
    chain = [*ids, then] if then is not None else ids
    return all(a > b for a, b in pairwise(chain))


class KeptWalks:
    """A bounded LRU of whole walks, by (tenant, thread, namespace, channels)."""

    def __init__(self, limit: int = DEFAULT_LIMIT, max_records: int = MAX_RECORDS) -> None:
        self.limit, self.max_records = limit, max_records
        self._lock = threading.Lock()
        self._walks: OrderedDict[Key, KeptWalk] = OrderedDict()

    def __len__(self) -> int:
        return len(self._walks)

    def get(self, key: Key) -> KeptWalk | None:
        with self._lock:
            walk = self._walks.get(key)
            if walk is not None:
                self._walks.move_to_end(key)
            return walk

    def keep(self, key: Key, walk: KeptWalk) -> None:
        with self._lock:
            self._walks.pop(key, None)
            if sum(len(step) for step in walk.steps) > self.max_records:
                return
            self._walks[key] = walk
            while len(self._walks) > self.limit:
                self._walks.popitem(last=False)

    def drop(self, key: Key) -> None:
        with self._lock:
            self._walks.pop(key, None)

    def forget_thread(self, tenant: str, thread: str) -> None:
        """The thread was deleted, pruned or overwritten here: a thread built again with the same
        ids and as many writes would pass the count (LangGraph's ids never repeat; hand-made
        ones may)."""
        with self._lock:
            for key in [k for k in self._walks if k[0] == tenant and k[1] == thread]:
                del self._walks[key]

    def forget_tenant(self, tenant: str) -> None:
        with self._lock:
            for key in [k for k in self._walks if k[0] == tenant]:
                del self._walks[key]
