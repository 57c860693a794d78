"""One deadline-driven thread for a saver's background work.

Every piece of background work is a `Job`: a body that does what is due and returns when it
is due next (a time on the scheduler's clock), or None to sleep until something wakes it. The
scheduler's one thread runs the earliest due job, so start-on-use, waking, stopping and error
containment are written once, here:

- the thread starts with the first `Job.wake`, never at construction (a saver that is never
  written to holds no thread);
- `Job.wake(at)` makes a job due at `at` unless it is due earlier already: waking is cheap
  enough for the hot path, and wakes the thread only when the new deadline is its next one;
- a job that raises is logged, counted (`background_job_errors`, and per job in `health()`)
  and run again after `ERROR_DELAY` seconds: a bug in one job never stops the thread or the
  other jobs;
- `stop()` ends the thread after the job running at that moment; the owner then does its own
  final work (drain the flusher, send held writes) on the caller's thread.

Jobs take turns, so a job must do one bounded piece of work per turn (the flusher flushes one
group of due threads per turn, `FLUSH_GROUP` at most, not all of them): a lock renewal waits
for one group's flush at most, bounded by
the Postgres deadline (`PgLimits`), which a lock's TTL should exceed by far. A job whose
purpose is to unblock calls stuck on a server (the Postgres watchdog, `_sansio/io.py`) must not share
a thread with jobs that make such calls: it runs on its own process-wide `Scheduler`.

The async saver uses the same thread: its background work runs on the sync driver (clients
built from the async ones if need be, `lifecycle.Runners.run_internal`), because a task on an
event loop would die with that loop (`asyncio.run` per request, several loops per saver).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from langgraph_tiered_saver.observability.metrics import Metrics

logger = logging.getLogger("langgraph_tiered_saver")

Clock = Callable[[], float]
ERROR_DELAY = 0.1  # a job that raised runs again after this long


@dataclass(frozen=True)
class JobHealth:
    name: str
    runs: int
    errors: int  # turns that raised (contained, counted, rescheduled)
    last_error: str


@dataclass(frozen=True)
class SchedulerHealth:
    """What a health check needs to know about a saver's background thread and its jobs."""

    alive: bool  # not stopped, and the thread (once started) runs
    jobs: tuple[JobHealth, ...]


class Job:
    """One piece of background work on a `Scheduler`. `body()` returns when it is due next
    (scheduler clock), or None: idle until `wake`."""

    def __init__(self, scheduler: Scheduler, name: str, body: Callable[[], float | None]) -> None:
        self.scheduler = scheduler
        self.name = name
        self.body = body
        self.due: float | None = None
        self.runs = 0
        self.errors = 0
        self.last_error = ""

    def wake(self, at: float | None = None) -> None:
        """Be due at `at` (default: now) at the latest."""
        self.scheduler._wake(self, self.scheduler.clock() if at is None else at)

    def health(self) -> JobHealth:
        return JobHealth(self.name, self.runs, self.errors, self.last_error)


class Scheduler:
    """A daemon thread running its jobs when due (see module docstring). Thread-safe."""

    def __init__(self, name: str, metrics: Metrics | None = None, *, clock: Clock = time.monotonic) -> None:
        self.name = name
        self.metrics = metrics
        self.clock = clock
        self._cond = threading.Condition()
        self._jobs: list[Job] = []
        self._next: float | None = None  # the deadline the thread sleeps until (None: idle)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._running: Job | None = None  # the job whose turn is under way

    def job(self, name: str, body: Callable[[], float | None]) -> Job:
        job = Job(self, name, body)
        with self._cond:
            self._jobs.append(job)
        return job

    @property
    def alive(self) -> bool:
        """Not stopped, and its thread (once started) still runs."""
        thread = self._thread
        return not self._stopping and (thread is None or thread.is_alive())

    @property
    def started(self) -> bool:
        return self._thread is not None

    def health(self) -> SchedulerHealth:
        with self._cond:
            jobs = tuple(job.health() for job in self._jobs)
        return SchedulerHealth(self.alive, jobs)

    def caught_up(self) -> bool:
        """No turn under way and none due by the clock's time (or stopped)."""
        with self._cond:
            now = self.clock()
            return self._stopping or (
                self._running is None and all(job.due is None or job.due > now for job in self._jobs)
            )

    def poke(self) -> None:
        """Look at the deadlines again now (an injected clock moved)."""
        with self._cond:
            self._cond.notify()

    def stop(self, timeout: float = 30.0) -> None:
        """End the thread after the turn under way; jobs woken later do not run."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # ------------------------------------------------------------------ the thread

    def _wake(self, job: Job, at: float) -> None:
        with self._cond:
            if self._stopping or (job.due is not None and job.due <= at):
                return
            job.due = at
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()
            elif self._next is None or at < self._next:
                self._cond.notify()  # due before the thread wakes by itself

    def _loop(self) -> None:
        while True:
            with self._cond:
                job = self._take_due()
                while job is None:
                    if self._stopping:
                        return
                    self._cond.wait(None if self._next is None else max(0.0, self._next - self.clock()))
                    job = self._take_due()
            self._turn(job)

    def _take_due(self) -> Job | None:
        """The earliest due job, taken off the schedule; else sets `_next`. Under `_cond`."""
        if self._stopping:
            return None
        pending = [job for job in self._jobs if job.due is not None]
        if not pending:
            self._next = None
            return None
        job = min(pending, key=lambda j: j.due)  # type: ignore[arg-type,return-value]
        assert job.due is not None
        if job.due > self.clock():
            self._next = job.due
            return None
        job.due = None
        self._running = job
        return job

    def _turn(self, job: Job) -> None:
        job.runs += 1
        try:
            again = job.body()
        except Exception as exc:
            job.errors += 1
            job.last_error = f"{type(exc).__name__}: {exc}"
            if self.metrics is not None:
                self.metrics.incr("background_job_errors")
            logger.exception("background job %r failed (contained; it runs again in %.1f s)", job.name, ERROR_DELAY)
            again = self.clock() + ERROR_DELAY
        with self._cond:
            self._running = None
            if again is not None and not self._stopping and (job.due is None or again < job.due):
                job.due = again  # the thread looks at the deadlines again before it sleeps
