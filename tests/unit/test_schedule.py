"""The one background thread of a saver (schedule.py): jobs run when due on an injected
clock, a job that raises is contained, counted and run again, and the thread starts on use."""

from __future__ import annotations

import threading

import pytest

from langgraph_tiered_saver._sansio.schedule import ERROR_DELAY, Scheduler
from langgraph_tiered_saver.observability.metrics import Metrics
from tests.helpers import ManualClock


def _threads(name: str) -> int:
    return sum(t.name == name for t in threading.enumerate())


def test_jobs_run_when_due_on_one_thread_started_on_use() -> None:
    clock = ManualClock()
    scheduler = Scheduler("test-sched-due", clock=clock)
    runs: list[tuple[str, float]] = []
    a = scheduler.job("a", lambda: runs.append(("a", clock())) or clock() + 10)  # type: ignore[func-returns-value]
    b = scheduler.job("b", lambda: runs.append(("b", clock())) or None)  # type: ignore[func-returns-value]
    try:
        assert not scheduler.started and _threads("test-sched-due") == 0
        a.wake(clock() + 5)
        b.wake(clock() + 7)
        assert _threads("test-sched-due") == 1
        clock.advance(4, scheduler)
        assert runs == []
        clock.advance(1, scheduler)
        assert runs == [("a", 1005.0)]
        clock.advance(2, scheduler)
        assert runs == [("a", 1005.0), ("b", 1007.0)]
        clock.advance(8, scheduler)  # a asked to run again 10 s after its turn; b sleeps until woken
        assert runs[2:] == [("a", 1015.0)]
        b.wake()
        b.wake(clock() + 100)  # a later deadline does not postpone an earlier one
        clock.advance(0, scheduler)
        assert runs[3:] == [("b", 1015.0)]
        assert _threads("test-sched-due") == 1
    finally:
        scheduler.stop()
    assert _threads("test-sched-due") == 0 and not scheduler.alive


def test_a_job_that_raises_is_contained_counted_and_run_again(caplog: pytest.LogCaptureFixture) -> None:
    clock, metrics = ManualClock(), Metrics()
    scheduler = Scheduler("test-sched-errors", metrics, clock=clock)
    calls: list[float] = []

    def flaky() -> float | None:
        calls.append(clock())
        if len(calls) == 1:
            raise RuntimeError("boom")
        return None

    other: list[float] = []
    job = scheduler.job("flaky", flaky)
    scheduler.job("other", lambda: other.append(clock()) or None).wake(clock() + 1)  # type: ignore[func-returns-value]
    try:
        job.wake()
        clock.advance(0, scheduler)
        assert calls == [1000.0] and metrics.counter("background_job_errors") == 1
        assert "background job 'flaky' failed" in caplog.text
        (health, _) = scheduler.health().jobs
        assert (health.runs, health.errors, health.last_error) == (1, 1, "RuntimeError: boom")
        clock.advance(ERROR_DELAY, scheduler)
        assert len(calls) == 2 and scheduler.alive
        clock.advance(1, scheduler)
        assert other == [1000.0 + ERROR_DELAY + 1]
    finally:
        scheduler.stop()


def test_a_stopped_scheduler_runs_nothing_more() -> None:
    clock = ManualClock()
    scheduler = Scheduler("test-sched-stop", clock=clock)
    runs: list[float] = []
    job = scheduler.job("j", lambda: runs.append(clock()) or None)  # type: ignore[func-returns-value]
    scheduler.stop()
    job.wake()
    assert not scheduler.started and runs == [] and _threads("test-sched-stop") == 0
