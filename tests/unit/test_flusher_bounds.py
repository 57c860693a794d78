"""The background flusher's memory does not grow with the threads a process serves: a thread's
bookkeeping goes when it is flushed or forgotten, and past `TRACKED_THREADS` waiting threads
the outbox index (here a fake of it) is their only record, drained at close all the same."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from langgraph_tiered_saver._sansio.schedule import Scheduler
from langgraph_tiered_saver.errors import FlushError, TierUnavailableError
from langgraph_tiered_saver.flushing import background
from langgraph_tiered_saver.flushing.acks import DeferredAcks
from langgraph_tiered_saver.flushing.background import BackgroundFlusher
from langgraph_tiered_saver.flushing.ops import FlushPolicy, FlushResult, OutboxStatus
from langgraph_tiered_saver.observability.metrics import Metrics
from tests.helpers import ManualClock

LIMIT = 4


class FakeOutbox:
    """The flush ops the flusher calls, on an in-memory outbox index (insertion order = age)."""

    def __init__(self) -> None:
        self.dirty: dict[tuple[str, str], None] = {}
        self.index_down = False
        self.groups: list[int] = []  # the size of each group flush
        self.acks = DeferredAcks()  # none left: no synchronous flush here

    def flush_thread_op(self, tenant_id: str, thread_id: str, lease: Any = None) -> Iterator[Any]:
        self.dirty.pop((tenant_id, thread_id), None)
        return FlushResult(tenant_id, thread_id)
        yield  # a sans-I/O op that needs no I/O

    def flush_group_op(self, threads: list[tuple[str, str]], lease: Any = None) -> Iterator[Any]:
        self.groups.append(len(threads))
        for key in threads:
            self.dirty.pop(key, None)
        return [FlushResult(*key) for key in threads]
        yield

    def dirty_threads_op(self, older_than_ms: int | None = None, limit: int = 500) -> Iterator[Any]:
        if self.index_down:
            raise TierUnavailableError("Redis is unreachable")
        return list(self.dirty)[:limit]
        yield

    def outbox_status_op(self) -> Iterator[Any]:
        return OutboxStatus(len(self.dirty), 0.0)
        yield


def _run(op: Iterator[Any]) -> Any:
    try:
        next(op)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("the fake ops yield no request")


@pytest.fixture
def flusher(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[BackgroundFlusher, FakeOutbox, ManualClock]]:
    monkeypatch.setattr(background, "TRACKED_THREADS", LIMIT)
    clock, outbox, metrics = ManualClock(), FakeOutbox(), Metrics()
    scheduler = Scheduler("test-flusher-bounds", metrics, clock=clock)
    flusher = BackgroundFlusher(_run, outbox, FlushPolicy(quiet_seconds=3600), metrics, scheduler)  # type: ignore[arg-type]
    yield flusher, outbox, clock
    scheduler.stop()


def _write(flusher: BackgroundFlusher, outbox: FakeOutbox, thread: str) -> None:
    outbox.dirty[("t", thread)] = None  # what the write script records in Redis
    flusher.on_checkpoint("t", thread)


def test_a_backlog_past_the_bound_is_left_to_the_outbox_index_and_drained_at_close(
    flusher: tuple[BackgroundFlusher, FakeOutbox, ManualClock],
) -> None:
    fl, outbox, _ = flusher
    for i in range(3 * LIMIT):
        _write(fl, outbox, f"th{i}")
        fl.on_writes("t", f"th{i}", urgent=False)
    assert len(fl._touched) == LIMIT and len(fl._due) == LIMIT and len(fl._counts) == LIMIT
    results = fl.stop(drain=True)
    assert sorted(r.thread_id for r in results) == sorted(f"th{i}" for i in range(3 * LIMIT))
    assert outbox.dirty == {}


def test_flushed_and_forgotten_threads_leave_nothing_behind(
    flusher: tuple[BackgroundFlusher, FakeOutbox, ManualClock],
) -> None:
    fl, outbox, clock = flusher
    for i in range(LIMIT):
        _write(fl, outbox, f"th{i}")
    fl.forget("t", "th0")  # flushed synchronously (an interrupt) or deleted
    clock.advance(3600, fl._scheduler)
    assert (fl._touched, fl._due, fl._counts, fl.book._trouble) == (set(), {}, {}, {})


def test_adoption_keeps_to_the_bound(flusher: tuple[BackgroundFlusher, FakeOutbox, ManualClock]) -> None:
    fl, outbox, _ = flusher
    for i in range(LIMIT):
        _write(fl, outbox, f"th{i}")
    outbox.dirty.update({("t", f"crashed{i}"): None for i in range(LIMIT)})  # another process' outbox
    fl._adopt()
    assert len(fl._due) == LIMIT


def test_a_drain_that_cannot_read_the_index_says_so_and_flushes_what_it_tracks(
    flusher: tuple[BackgroundFlusher, FakeOutbox, ManualClock], caplog: pytest.LogCaptureFixture
) -> None:
    fl, outbox, _ = flusher
    for i in range(LIMIT + 1):
        _write(fl, outbox, f"th{i}")
    outbox.index_down = True
    results = fl.stop(drain=True)
    assert len(results) == LIMIT and list(outbox.dirty) == [("t", f"th{LIMIT}")]  # kept, not lost
    assert "stay in the outbox" in caplog.text


def test_the_drain_of_the_outbox_index_ends_while_other_processes_keep_writing(
    flusher: tuple[BackgroundFlusher, FakeOutbox, ManualClock],
) -> None:
    fl, outbox, _ = flusher
    for i in range(LIMIT + 2):
        _write(fl, outbox, f"th{i}")
    busy = outbox.dirty_threads_op

    def others_keep_writing(older_than_ms: int | None = None, limit: int = 500) -> Iterator[Any]:
        outbox.dirty.update({("t", f"other{len(outbox.dirty)}-{i}"): None for i in range(limit)})
        return (yield from busy(older_than_ms, limit))

    outbox.dirty_threads_op = others_keep_writing  # type: ignore[method-assign]
    results = fl.stop(drain=True)
    assert len(results) == LIMIT + 2  # what it tracked, and as many as it left out
    assert not {("t", f"th{i}") for i in range(LIMIT + 2)} & set(outbox.dirty)  # the oldest first


def test_a_backlog_is_flushed_in_groups_of_at_most_flush_group_threads(
    flusher: tuple[BackgroundFlusher, FakeOutbox, ManualClock], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(background, "FLUSH_GROUP", 3)
    fl, outbox, clock = flusher
    for i in range(LIMIT):
        _write(fl, outbox, f"th{i}")
    clock.advance(3600, fl._scheduler)
    assert outbox.groups == [3] and outbox.dirty == {}  # three in a group, the last one alone
    assert (fl._touched, fl._due, fl._counts) == (set(), {}, {})


def test_a_due_flush_gathers_the_threads_due_within_gather_seconds(
    flusher: tuple[BackgroundFlusher, FakeOutbox, ManualClock],
) -> None:
    fl, outbox, clock = flusher  # quiet_seconds=3600, gather_seconds=0.25 (the default)
    fl._adopt_interval = 10_000.0  # no adoption pass in between (the fake index holds every thread)
    for i, pause in enumerate((0.1, 0.1, 1.0, 0.0)):
        _write(fl, outbox, f"th{i}")
        clock.now += pause  # the scheduler is not told: nothing is due before th0
    clock.advance(3600 - 1.2, fl._scheduler)  # th0 due; th1, th2 within 0.25 s of it; th3 not
    assert outbox.groups == [3] and list(outbox.dirty) == [("t", "th3")]
    assert fl._due == {("t", "th3"): pytest.approx(clock.now + 1.2)}  # not gathered: due past 0.25 s


def test_a_thread_waiting_out_its_backoff_is_not_gathered_early(
    flusher: tuple[BackgroundFlusher, FakeOutbox, ManualClock],
) -> None:
    fl, outbox, clock = flusher
    fl._adopt_interval = 10_000.0
    _write(fl, outbox, "th0")
    _write(fl, outbox, "th1")
    clock.now += 3600 - 0.4
    fl._failed(("t", "th1"), RuntimeError("refused"))  # its retry: 0.5 s on, within the gather
    clock.advance(0.4, fl._scheduler)  # th0 due
    assert outbox.groups == [] and list(outbox.dirty) == [("t", "th1")]  # th0 alone, th1 waits
    clock.advance(0.1, fl._scheduler)
    assert outbox.dirty == {}


def test_without_gather_seconds_each_due_thread_is_flushed_when_due() -> None:
    clock, outbox, metrics = ManualClock(), FakeOutbox(), Metrics()
    scheduler = Scheduler("test-flusher-gather", metrics, clock=clock)
    fl = BackgroundFlusher(_run, outbox, FlushPolicy(quiet_seconds=10, gather_seconds=0), metrics, scheduler, _adopt_interval=10_000.0)  # type: ignore[arg-type]
    try:
        _write(fl, outbox, "th0")
        clock.now += 0.1
        _write(fl, outbox, "th1")
        clock.advance(9.9, scheduler)
        assert outbox.groups == [] and list(outbox.dirty) == [("t", "th1")]
    finally:
        scheduler.stop()


def test_the_drain_at_close_flushes_in_groups_of_at_most_flush_group_threads(
    flusher: tuple[BackgroundFlusher, FakeOutbox, ManualClock], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(background, "FLUSH_GROUP", 3)
    fl, outbox, _ = flusher
    for i in range(3 * LIMIT):  # LIMIT tracked, the rest left to the outbox index
        _write(fl, outbox, f"th{i}")
    results = fl.stop(drain=True)
    assert sorted(r.thread_id for r in results) == sorted(f"th{i}" for i in range(3 * LIMIT))
    assert outbox.groups == [3, 3, 3, 2] and outbox.dirty == {}  # 4 tracked: 3, and 1 alone; 8 read: 3 + 3 + 2


def test_a_thread_the_drains_group_could_not_write_whole_is_flushed_alone(
    flusher: tuple[BackgroundFlusher, FakeOutbox, ManualClock],
) -> None:
    """Its own error, or entries past what one read took: flushed alone, as before groups; an
    error it still raises then is named by the drain's `FlushError`, the others are written."""
    fl, outbox, _ = flusher
    keys = [("t", f"th{i}") for i in range(3)]
    for _, thread in keys:
        _write(fl, outbox, thread)
    alone: list[str] = []

    def group(threads: list[tuple[str, str]], lease: Any = None) -> Iterator[Any]:
        outbox.groups.append(len(threads))
        for key in threads[2:]:
            outbox.dirty.pop(key, None)
        own = ValueError("a value Postgres refuses")
        return [own, FlushResult(*threads[1], remaining=5), *(FlushResult(*key) for key in threads[2:])]
        yield

    def one(tenant_id: str, thread_id: str, lease: Any = None) -> Iterator[Any]:
        alone.append(thread_id)
        if thread_id == "th0":
            raise ValueError("a value Postgres refuses")
        outbox.dirty.pop((tenant_id, thread_id), None)
        return FlushResult(tenant_id, thread_id)
        yield

    outbox.flush_group_op = group  # type: ignore[method-assign]
    outbox.flush_thread_op = one  # type: ignore[method-assign]
    with pytest.raises(FlushError, match="1 of 3 threads") as raised:
        fl.stop(drain=True)
    assert raised.value.threads == [("t", "th0")]
    assert outbox.groups == [3] and alone == ["th0", "th1"]
    assert list(outbox.dirty) == [("t", "th0")]  # kept in the outbox, not lost
