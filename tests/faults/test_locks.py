"""Per-thread run locks (DESIGN contract 8) against real Redis: refusal and waiting, writers
without the lock, renewal, compare-and-delete release, async use, two processes on one thread,
and fencing of a holder that was SIGSTOPped past its TTL."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis

from langgraph_tiered_saver import AutoLock, StaleLockError, ThreadLockedError, TieredSaver
from langgraph_tiered_saver.hot import keys as K
from tests.helpers import TEST_TENANT, ManualClock, new_prefix, thread_config
from tests.lock_child import NODES, run_config, slow_chain

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TENANT = TEST_TENANT




def _thread() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


def _prefix() -> str:
    return new_prefix()


def _lock_key(saver: TieredSaver, thread: str) -> str:
    return K.lock_key(saver.key_prefix, TENANT, thread)


def _history(saver: TieredSaver, thread: str) -> list[Any]:
    """The thread's checkpoints, oldest first."""
    return list(reversed(list(saver.list(thread_config(thread)))))


def _assert_linear(history: list[Any]) -> None:
    """Every checkpoint's parent is the one before it: one chain, no fork."""
    assert history, "no checkpoints"
    assert history[0].parent_config is None
    for prev, cur in itertools.pairwise(history):
        assert cur.parent_config is not None
        assert cur.parent_config["configurable"]["checkpoint_id"] == prev.config["configurable"]["checkpoint_id"]


def _runs_in_order(history: list[Any]) -> list[str]:
    """The run ids in the order their checkpoints appear, each listed once per contiguous block."""
    blocks: list[str] = []
    for t in history:
        run_id = t.metadata.get("run_id")
        if not blocks or blocks[-1] != run_id:
            blocks.append(run_id)
    return blocks


# ---------------------------------------------------------------- one process, two savers


def test_second_holder_is_refused_or_waits(saver_context: Callable[..., Any], redis_url: str) -> None:
    prefix, thread = _prefix(), _thread()
    cfg = thread_config(thread)
    with saver_context(key_prefix=prefix) as a, saver_context(key_prefix=prefix) as b:
        with a.thread_lock(cfg, timeout=10) as handle:
            r = redis.Redis.from_url(redis_url)
            assert r.get(_lock_key(a, thread)) == handle.token.encode()
            with pytest.raises(ThreadLockedError), b.thread_lock(cfg, wait=False):
                pytest.fail("the second holder got the lock")
            started = time.monotonic()
            with pytest.raises(ThreadLockedError), b.thread_lock(cfg, wait=True, wait_timeout=0.3):
                pytest.fail("the second holder got the lock")
            assert time.monotonic() - started >= 0.25
            assert r.get(_lock_key(a, thread)) == handle.token.encode()  # a refusal takes nothing

        # Waiting: `a` holds the lock again and releases it from another thread after 0.3 s.
        lock_a = a.thread_lock(cfg, timeout=10)
        first = lock_a.__enter__()
        released = threading.Event()

        def release_later() -> None:
            time.sleep(0.3)
            lock_a.__exit__(None, None, None)
            released.set()

        releaser = threading.Thread(target=release_later)
        started = time.monotonic()
        releaser.start()
        try:
            with b.thread_lock(cfg, timeout=10, wait=True, wait_timeout=10) as second:
                waited = time.monotonic() - started
                assert released.is_set()
                assert waited >= 0.25
                assert r.get(_lock_key(b, thread)) == second.token.encode()
                assert int(second.fence) > int(first.fence)
        finally:
            releaser.join()
        assert not lock_a.lost
        assert r.get(_lock_key(a, thread)) is None
        r.close()


def test_writer_without_the_lock_is_refused(saver_context: Callable[..., Any]) -> None:
    prefix, thread = _prefix(), _thread()
    cfg = thread_config(thread)
    # `other`'s runs do not wait for the lock (AutoLock(wait=0)): refused at once, not after 30 s
    with saver_context(key_prefix=prefix) as holder, saver_context(key_prefix=prefix, auto_lock=AutoLock(wait=0)) as other:
        with holder.thread_lock(cfg, timeout=10):
            assert slow_chain(holder, nodes=2, sleep=0).invoke({"n": 0}, cfg)["n"] == 2
            written = len(_history(holder, thread))
            with pytest.raises(ThreadLockedError):
                slow_chain(other, nodes=2, sleep=0).invoke({"n": 0}, cfg)
            with pytest.raises(ThreadLockedError):
                other.put_writes(_history(holder, thread)[-1].config, [("n", 1)], "task-1")
            assert len(_history(holder, thread)) == written  # nothing of the refused run
        # Released: a writer without the lock may write again.
        assert slow_chain(other, nodes=2, sleep=0).invoke({"n": 0}, cfg)["n"] == 4
        assert len(_history(other, thread)) == written + 4


def test_lock_is_renewed_while_held(saver_context: Callable[..., Any], redis_url: str) -> None:
    prefix, thread = _prefix(), _thread()
    cfg = thread_config(thread)
    with saver_context(key_prefix=prefix) as saver, saver_context(key_prefix=prefix) as other:
        r = redis.Redis.from_url(redis_url)
        key = _lock_key(saver, thread)
        graph = slow_chain(saver, nodes=2, sleep=0.05)
        lock = saver.thread_lock(cfg, timeout=1.0, wait=False)
        runs = 0
        with lock as handle:
            started = time.monotonic()
            while time.monotonic() - started < 3.0:
                graph.invoke({"n": 0}, cfg)
                runs += 1
                assert r.get(key) == handle.token.encode()
                assert 0 < r.pttl(key) <= 1000
                time.sleep(0.1)
            with pytest.raises(ThreadLockedError), other.thread_lock(cfg, wait=False):
                pytest.fail("the lock was lost while held")
            assert not lock.lost
        assert not lock.lost
        assert r.exists(key) == 0
        assert runs >= 5
        final = graph.get_state(cfg)
        assert final.values["n"] == 2 * runs
        r.close()


def test_release_does_not_delete_a_new_holders_lock(saver_context: Callable[..., Any], redis_url: str) -> None:
    """First holder's lock goes away (as if it expired), a second holder takes it: the first
    holder's writes are fenced off (StaleLockError) and its release leaves the second's lock."""
    prefix, thread = _prefix(), _thread()
    cfg = thread_config(thread)
    with saver_context(key_prefix=prefix) as a, saver_context(key_prefix=prefix) as b:
        r = redis.Redis.from_url(redis_url)
        key = _lock_key(a, thread)
        graph_a = slow_chain(a, nodes=1, sleep=0)
        lock_a = a.thread_lock(cfg, timeout=30.0)
        with lock_a:
            graph_a.invoke({"n": 0}, cfg)
            r.delete(key)  # the lock expires (the holder was paused, say)
            with b.thread_lock(cfg, timeout=30.0, wait=False) as handle_b:
                before = len(_history(b, thread))
                with pytest.raises(StaleLockError):
                    graph_a.invoke({"n": 0}, cfg)
                assert len(_history(b, thread)) == before
                # put_writes is fenced as well
                with pytest.raises(StaleLockError):
                    a.put_writes(_history(a, thread)[-1].config, [("n", 1)], "task-1")
                lock_a.__exit__(None, None, None)  # the first holder leaves first
                assert lock_a.lost
                assert r.get(key) == handle_b.token.encode()
                assert slow_chain(b, nodes=1, sleep=0).invoke({"n": 0}, cfg)["n"] == 2
        assert r.exists(key) == 0
        r.close()


async def test_async_lock(saver_context: Callable[..., Any], redis_url: str) -> None:
    prefix, thread = _prefix(), _thread()
    cfg = thread_config(thread)
    clock = ManualClock()
    async with saver_context(key_prefix=prefix, clock=clock) as a, \
            saver_context(key_prefix=prefix, auto_lock=AutoLock(wait=0)) as b:
        r = redis.Redis.from_url(redis_url)
        key = _lock_key(a, thread)
        graph = slow_chain(a, nodes=3, sleep=0.01)
        lock = a.thread_lock(cfg, timeout=10.0)
        async with lock as handle:
            assert r.get(key) == handle.token.encode()
            assert (await graph.ainvoke({"n": 0}, cfg))["n"] == 3
            with pytest.raises(ThreadLockedError):
                async with b.thread_lock(cfg, wait=False):
                    pytest.fail("the second holder got the lock")
            with pytest.raises(ThreadLockedError):
                await slow_chain(b, nodes=3, sleep=0).ainvoke({"n": 0}, cfg)
            # renewed by a's lock keeper (its scheduler's thread) once a third of the TTL passed
            r.pexpire(key, 200)  # as if 9.8 s had passed since the last renewal
            clock.advance(3.34, a.core.scheduler)
            assert r.get(key) == handle.token.encode() and r.pttl(key) > 200
            assert (await graph.ainvoke({"n": 0}, cfg))["n"] == 6
        assert not lock.lost
        assert r.exists(key) == 0
        assert (await slow_chain(b, nodes=3, sleep=0).ainvoke({"n": 0}, cfg))["n"] == 9
        r.close()


# ---------------------------------------------------------------- two processes


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.lock_child", *args],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _expect_line(proc: subprocess.Popen[str], prefix: str) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith(prefix):
        proc.kill()
        _, err = proc.communicate(timeout=10)
        pytest.fail(f"child said {line!r}, expected {prefix!r}; stderr:\n{err[-3000:]}")
    return line


@pytest.mark.parametrize("mode", ["run", "auto"])
def test_two_processes_on_one_thread_never_interleave(
    mode: str, saver_context: Callable[..., Any], redis_url: str
) -> None:
    """`run`: each child wraps its invoke in `thread_lock`; `auto`: a plain invoke on a saver
    with `auto_lock`, which takes and releases the lock around the run itself."""
    prefix, thread = _prefix(), _thread()
    with saver_context(key_prefix=prefix) as saver:
        procs = {run_id: _spawn(mode, redis_url, prefix, thread, run_id) for run_id in ("run-a", "run-b")}
        try:
            for proc in procs.values():
                _expect_line(proc, "ready")
            for proc in procs.values():  # go, both at once
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            outputs = {}
            for run_id, proc in procs.items():
                out, err = proc.communicate(timeout=60)
                assert proc.returncode == 0, err[-3000:]
                outputs[run_id] = out.split()
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
        if mode == "run":
            assert all("acquired" in out for out in outputs.values())
        totals = sorted(int(out[-1]) for out in outputs.values())
        assert totals == [NODES, 2 * NODES]  # the second run started from the first one's end

        history = _history(saver, thread)
        _assert_linear(history)
        blocks = _runs_in_order(history)
        assert sorted(blocks) == ["run-a", "run-b"], blocks  # two contiguous runs, not interleaved
        per_run = NODES + 2  # input, one per node, and the start checkpoint
        assert len(history) == 2 * per_run
        # the second run continues the first one's steps: -1 .. 2 * per_run - 2, no gap, no repeat
        assert [t.metadata["step"] for t in history] == list(range(-1, 2 * per_run - 1))
        assert [t.metadata["source"] for t in history].count("input") == 2
        assert history[per_run].metadata["source"] == "input"
        assert saver.get_tuple(thread_config(thread)).checkpoint["channel_values"]["n"] == 2 * NODES  # type: ignore[union-attr]
        assert redis.Redis.from_url(redis_url).exists(_lock_key(saver, thread)) == 0


def test_sigstopped_holder_is_fenced_off(saver_context: Callable[..., Any], redis_url: str) -> None:
    """Process A holds the lock (TTL 1 s) and writes; it is SIGSTOPped for longer than the TTL
    (its renewer is frozen too), the lock expires, B takes it and writes; A continues and its
    next write fails with StaleLockError: nothing of A lands after B took the lock."""
    prefix, thread = _prefix(), _thread()
    r = redis.Redis.from_url(redis_url)
    with saver_context(key_prefix=prefix) as saver:
        key = _lock_key(saver, thread)
        proc = _spawn("stale", redis_url, prefix, thread, "run-a")
        try:
            written_by_a = int(_expect_line(proc, "ready").split()[1])
            assert written_by_a > 0
            os.kill(proc.pid, signal.SIGSTOP)
            try:
                deadline = time.monotonic() + 5  # Redis expires it by its own clock (TTL 1 s)
                while r.exists(key) and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert r.exists(key) == 0, "A's lock did not expire while A was stopped"
                cfg_b = run_config(thread, "run-b")
                with saver.thread_lock(cfg_b, timeout=30.0, wait=False) as handle_b:
                    assert slow_chain(saver, nodes=1, sleep=0).invoke({"n": 0}, cfg_b)["n"] == 2
                    after_b = len(_history(saver, thread))
                    assert proc.stdin is not None
                    proc.stdin.write("go\n")
                    proc.stdin.flush()
                    os.kill(proc.pid, signal.SIGCONT)
                    out, err = proc.communicate(timeout=30)
                    assert proc.returncode == 0, err[-3000:]
                    lines = out.split()
                    assert lines[-1] == "StaleLockError", f"A's late write ended with {lines[-1]}:\n{err[-3000:]}"
                    assert lines[-2] == "lost"
                    # A's exit (compare-and-delete) left B's lock alone
                    assert r.get(key) == handle_b.token.encode()
                    assert len(_history(saver, thread)) == after_b
            finally:
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGCONT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        history = _history(saver, thread)
        _assert_linear(history)
        assert _runs_in_order(history) == ["run-a", "run-b"]
        assert sum(1 for t in history if t.metadata["run_id"] == "run-a") == written_by_a
        assert history[-1].checkpoint["channel_values"]["n"] == 2
    r.close()


def test_many_locks_and_a_run_share_one_background_thread(saver_context: Callable[..., Any]) -> None:
    """The lock keeper, the flusher, the held-write sender and the Redis server check are jobs
    on the saver's one scheduler thread (schedule.py): no thread per lock, none per job."""
    before = set(threading.enumerate())
    with saver_context(durable=True) as saver:
        saver.setup()
        slow_chain(saver, nodes=2, sleep=0).invoke({"n": 0}, thread_config(_thread()))
        locks = [saver.thread_lock(thread_config(_thread()), timeout=10) for _ in range(20)]
        for lock in locks:
            lock.__enter__()
        try:
            assert saver._locks.keeper.held() == 20
            ours = [t.name for t in set(threading.enumerate()) - before if t.name.startswith("tiered-saver-")]
            # the Postgres watchdog is process-wide, and started by an earlier test or this one
            assert sorted(n for n in ours if n != "tiered-saver-pg-watchdog") == ["tiered-saver-background"]
            jobs = {job.name for job in saver.background_health().jobs}
            assert jobs == {"flusher", "write-sender", "lock-keeper", "redis-server-check"}
        finally:
            for lock in locks:
                lock.__exit__(None, None, None)
