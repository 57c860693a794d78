"""Carrying a step's pending writes in the round trip of the step's checkpoint.

LangGraph saves each finished task's writes (`put_writes`) as the task ends, then the step's
checkpoint (`put`) once every task of the step is done; with `durability="sync"` the next step
starts only after that `put`. Sent on their own, the writes cost a second Redis round trip per
step, and its Python work competes with the graph for the interpreter.

So regular writes for the thread's *open* checkpoint (the newest one put, whose step is running,
or a newer one whose put has not come yet) are held here, for at most `hold_seconds`, and the
`put` that closes their step carries them: the same pipeline, one round trip, before that `put`
returns. LangGraph's promise holds: a step's writes are in Redis before the next step starts.
Never held: special writes that end or stop a run (an interrupt, an error: they are flushed at
once, and take what is held for the thread along; a resume value is held, like a task's writes,
for the step that consumes it), and writes for an older checkpoint (its step closed already). A
holding that no `put` takes within `hold_seconds` (a long parallel sibling, a run that stopped)
is sent on its own by a job on the saver's scheduler, as is everything at `close()`. What a crash of the
process can take: held writes, at most `hold_seconds` old, whose tasks then run again on resume.
Reads, flushes and deletions of a thread send its held writes first (`Core`), including those
the background sender is writing at that moment: a holding stays visible until its write has
landed, so a read right after a run never misses it (a duplicate write is a no-op: regular
writes are insert-if-absent, put_writes.lua).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from langgraph_tiered_saver._sansio.schedule import Clock, Scheduler
from langgraph_tiered_saver.observability.metrics import Metrics
from langgraph_tiered_saver.records.codec import WriteRecord
from langgraph_tiered_saver.records.ids import ThreadRef

logger = logging.getLogger("langgraph_tiered_saver")

Namespace = tuple[str, str, str]  # tenant, thread, checkpoint namespace


@dataclass
class Held:
    """Writes for one checkpoint waiting for the put that closes its step."""

    ref: ThreadRef  # the thread, namespace and checkpoint the writes belong to
    records: list[tuple[str, WriteRecord]] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    due: float = 0.0  # monotonic time by which it is sent, taken or not


def _namespace(held: Held) -> Namespace:
    return held.ref.tenant_id, held.ref.thread_id, held.ref.checkpoint_ns


def _before(held: Held, checkpoint_id: str) -> bool:
    return held.ref.checkpoint_id is not None and held.ref.checkpoint_id < checkpoint_id


class WriteCombiner:
    """Held writes per checkpoint (thread-safe, no I/O): `hold` from put_writes, `closed_by`
    from put, `take` from every other call that must see them, `take_due` for the sender.
    Holdings are kept per thread namespace, so a put looks only at its own; the newest
    checkpoint put per namespace is remembered for the last `OPEN_LIMIT` namespaces (one that
    is forgotten only loses the shortcut: its late writes are held, then carried or sent)."""

    OPEN_LIMIT = 4096

    def __init__(self, hold_seconds: float, metrics: Metrics, clock: Clock = time.monotonic) -> None:
        self.hold_seconds = hold_seconds
        self.metrics = metrics
        self._clock = clock
        self._lock = threading.Lock()
        self._held: dict[Namespace, dict[str, Held]] = {}
        self._sending: dict[int, Held] = {}  # taken by the sender, not yet written
        self._open: OrderedDict[Namespace, str] = OrderedDict()  # newest checkpoint id put, per namespace
        self._sender: Sender | None = None

    def hold(self, ref: ThreadRef, records: list[tuple[str, WriteRecord]], digests: list[str]) -> bool:
        """Keep these writes for the put closing their step; False: send them now (they are
        for a checkpoint older than the open one: its step is closed)."""
        assert ref.checkpoint_id is not None
        namespace = (ref.tenant_id, ref.thread_id, ref.checkpoint_ns)
        with self._lock:
            open_id = self._open.get(namespace)
            if open_id is not None and ref.checkpoint_id < open_id:
                return False
            by_id = self._held.setdefault(namespace, {})
            held = by_id.get(ref.checkpoint_id)
            if held is None:
                held = by_id[ref.checkpoint_id] = Held(ref, due=self._clock() + self.hold_seconds)
            held.records.extend(records)
            held.digests.extend(digests)
        self.metrics.incr("writes_held")
        if self._sender is not None:
            self._sender.due_at(held.due)
        return True

    def closed_by(self, ref: ThreadRef, checkpoint_id: str) -> list[Held]:
        """A put of `checkpoint_id` in ref's namespace: it is the open checkpoint now; it takes
        the writes of the checkpoints before it (its parent's: the step it closes)."""
        namespace = (ref.tenant_id, ref.thread_id, ref.checkpoint_ns)
        with self._lock:
            if checkpoint_id > self._open.get(namespace, ""):
                self._open[namespace] = checkpoint_id
                self._open.move_to_end(namespace)
                if len(self._open) > self.OPEN_LIMIT:
                    self._open.popitem(last=False)
            sending = [h for h in self._sending.values() if _namespace(h) == namespace and _before(h, checkpoint_id)]
            by_id = self._held.get(namespace)
            if not by_id:
                return sending
            taken = [by_id.pop(k) for k in [k for k in by_id if k < checkpoint_id]]
            if not by_id:
                del self._held[namespace]
            return taken + sending

    def take(self, tenant_id: str, thread_id: str | None = None, ns: str | None = None) -> list[Held]:
        """What is held for a tenant, thread or thread namespace (None: any): a read, flush,
        deletion or special write needs it in Redis. Holdings the sender is writing now are
        included (left to it as well): the caller cannot tell whether that write has landed."""

        with self._lock:
            if not self._held and not self._sending:  # the common case: a read with nothing held
                return []
            if thread_id is not None and ns is not None:  # one namespace (a read): no scan
                namespaces = [(tenant_id, thread_id, ns)] if (tenant_id, thread_id, ns) in self._held else []
            else:
                namespaces = [
                    n for n in self._held
                    if n[0] == tenant_id and thread_id in (None, n[1]) and ns in (None, n[2])
                ]  # fmt: skip
            sending = [
                h for h in self._sending.values()
                if h.ref.tenant_id == tenant_id and thread_id in (None, h.ref.thread_id) and ns in (None, h.ref.checkpoint_ns)
            ]  # fmt: skip
            return [held for n in namespaces for held in self._held.pop(n).values()] + sending

    def take_due(self, now: float) -> list[Held]:
        """Holdings past their time, for the sender, which calls `sent` after each write."""
        with self._lock:
            out: list[Held] = []
            for namespace in list(self._held):
                by_id = self._held[namespace]
                for key in [k for k, held in by_id.items() if held.due <= now]:
                    held = by_id.pop(key)
                    self._sending[id(held)] = held
                    out.append(held)
                if not by_id:
                    del self._held[namespace]
            return out

    def sent(self, held: Held) -> None:
        """The sender's write of `held` is over (landed or failed)."""
        with self._lock:
            self._sending.pop(id(held), None)

    def take_all(self) -> list[Held]:
        with self._lock:
            held = [h for by_id in self._held.values() for h in by_id.values()]
            self._held = {}
            self._open.clear()
        return held

    def next_due(self) -> float | None:
        with self._lock:
            return min((h.due for by_id in self._held.values() for h in by_id.values()), default=None)

    def held_count(self) -> int:
        """Holdings waiting (and, in `open_count`, namespaces remembered): for leak checks."""
        with self._lock:
            return sum(len(by_id) for by_id in self._held.values())

    def open_count(self) -> int:
        with self._lock:
            return len(self._open)

    # ------------------------------------------------------------------ the background sender

    def attach(self, send: Callable[[Held], Any], scheduler: Scheduler) -> None:
        """`send(held)` writes one holding to Redis (or Postgres, as its put_writes would);
        holdings no put took in time are sent by a job on `scheduler`."""
        self._sender = Sender(self, send, scheduler)

    def stop(self) -> None:
        """Send whatever is still held (the scheduler was stopped before: no job runs)."""
        for held in self.take_all():
            if self._sender is not None:
                self._sender.send_contained(held)


class Sender:
    """A job on the saver's scheduler sending holdings no put took in time; a failed send is
    logged with the thread, counted, and the others go on (a write lost that way is named,
    never silent). It is woken only when a holding is due before it is due already, so the
    writes of a running graph, which their puts carry, cost it nothing."""

    def __init__(self, combiner: WriteCombiner, send: Callable[[Held], Any], scheduler: Scheduler) -> None:
        self.combiner = combiner
        self.send = send
        self._job = scheduler.job("write-sender", self._turn)
        self._clock = scheduler.clock

    def due_at(self, due: float) -> None:
        """A holding is due at `due` (scheduler clock): the job runs by then."""
        self._job.wake(due)

    def _turn(self) -> float | None:
        for held in self.combiner.take_due(self._clock()):
            try:
                self.send_contained(held)
            finally:
                self.combiner.sent(held)
        return self.combiner.next_due()

    def send_contained(self, held: Held) -> None:
        try:
            self.send(held)
            self.combiner.metrics.incr("writes_sent_alone")
        except Exception as exc:
            self.combiner.metrics.incr("write_sender_errors")
            logger.error(
                "could not write %d held pending writes of thread %s/%s (their tasks run again on "
                "resume): %s", len(held.records), held.ref.tenant_id, held.ref.thread_id, exc,
            )
