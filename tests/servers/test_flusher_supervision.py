"""The write-behind path never stops silently: a value or a Postgres error that fails
one thread's flush is contained to that thread, which is retried, then quarantined and reported,
while every other thread keeps reaching Postgres without a `flush()` call."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from langgraph_tiered_saver import ConfigError, FlushError
from langgraph_tiered_saver.flushing.fleet import worker_loop
from langgraph_tiered_saver.flushing.ops import FlushPolicy
from langgraph_tiered_saver.hot import keys as K
from langgraph_tiered_saver.records.audit import dumps_jsonb, jsonb_value
from tests.graphs import chain_graph
from tests.helpers import pg_rows, thread_config, wait_for

FAST_RETRY = dict(quiet_seconds=0.05, max_attempts=3, retry_backoff=0.05, max_backoff=0.2, quarantine_retry_seconds=3600.0)
POISON = "ends with \\u0000"  # a literal backslash, then u0000: must survive exactly




def _pg_metadata(url: str, schema: str, thread: str) -> list[Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            f'SELECT metadata FROM "{schema}".checkpoints WHERE thread_id = %s ORDER BY checkpoint_id', (thread,)
        ).fetchall()
    return [r[0] for r in rows]


def test_poison_strings_reach_postgres_and_do_not_stop_other_threads(
    saver_context: Callable[..., Any], test_database_url: str
) -> None:
    with saver_context(durable=True, flush_policy=FlushPolicy(**FAST_RETRY)) as saver:  # type: ignore[arg-type]
        saver.setup()
        poisoned = f"poison-{uuid.uuid4().hex[:6]}"
        graph = chain_graph(saver, nodes=2)
        graph.invoke({"n": 0}, thread_config(poisoned, note=POISON, nul="a\x00b"))
        healthy = [f"ok-{i}-{uuid.uuid4().hex[:6]}" for i in range(5)]
        for thread in healthy:
            graph.invoke({"n": 0}, thread_config(thread))
        started = time.monotonic()
        everyone = [poisoned, *healthy]
        assert wait_for(lambda: all(pg_rows(test_database_url, saver.schema, t) == 4 for t in everyone), 15)
        print(f"poison value: {len(everyone)} of {len(everyone)} threads in Postgres within {time.monotonic() - started:.2f} s")
        metadata = _pg_metadata(test_database_url, saver.schema, poisoned)
        assert {m.get("note") for m in metadata} == {POISON}  # the backslash sequence kept exactly
        assert {m.get("nul") for m in metadata} == {"ab"}  # a real NUL dropped (JSONB cannot hold it)
        health = saver.flusher_health()
        assert health.alive and health.quarantined == () and health.last_success_at is not None


def _trigger(url: str, schema: str, thread: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"""
            CREATE FUNCTION "{schema}".refuse() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF NEW.thread_id = '{thread}' THEN RAISE EXCEPTION 'refused by a trigger for %', NEW.thread_id; END IF;
              RETURN NEW;
            END $$;
            CREATE TRIGGER refuse BEFORE INSERT ON "{schema}".checkpoints
              FOR EACH ROW EXECUTE FUNCTION "{schema}".refuse();
        """)  # fmt: skip


def _drop_trigger(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP TRIGGER refuse ON "{schema}".checkpoints')


def test_a_postgres_error_quarantines_one_thread_and_the_others_flow(
    saver_context: Callable[..., Any], test_database_url: str, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = saver_context(durable=True, flush_policy=FlushPolicy(**FAST_RETRY))  # type: ignore[arg-type]
    saver = ctx.__enter__()
    # the context is left by hand below: its close() is under test
    saver.setup()
    bad = f"bad-{uuid.uuid4().hex[:6]}"
    _trigger(test_database_url, saver.schema, bad)
    graph = chain_graph(saver, nodes=2)
    caplog.set_level(logging.WARNING, logger="langgraph_tiered_saver")
    graph.invoke({"n": 0}, thread_config(bad))
    healthy = [f"ok-{i}-{uuid.uuid4().hex[:6]}" for i in range(5)]
    for thread in healthy:
        graph.invoke({"n": 0}, thread_config(thread))
    assert wait_for(lambda: all(pg_rows(test_database_url, saver.schema, t) == 4 for t in healthy), 15)
    assert wait_for(lambda: bool(saver.flusher_health().quarantined), 15)

    health = saver.flusher_health()
    assert health.alive
    ((tenant, thread, error),) = health.quarantined
    assert (tenant, thread) == (saver.tenant_id, bad) and "refused by a trigger" in error
    assert saver.metrics.counter("flush_errors") >= 3

    def quarantine_logs() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.levelno == logging.ERROR and "quarantined" in r.getMessage()]

    # the flusher thread counts and logs right after it records the quarantine (seen above)
    assert wait_for(lambda: bool(quarantine_logs()), 5)
    assert saver.metrics.counter("flush_quarantines") == 1
    assert len(quarantine_logs()) == 1 and bad in quarantine_logs()[0].getMessage()
    assert pg_rows(test_database_url, saver.schema, bad) == 0
    import redis

    client = redis.Redis.from_url(redis_url)
    assert client.zcard(K.thread_keys(saver.key_prefix, saver.tenant_id, bad).pend) > 0  # still in the outbox
    assert client.exists(K.lock_key(saver.key_prefix, saver.tenant_id, bad, "flush")) == 0  # lock released
    client.close()

    late = f"late-{uuid.uuid4().hex[:6]}"
    graph.invoke({"n": 0}, thread_config(late))  # written after the quarantine: still flows
    with pytest.raises(FlushError) as raised:
        ctx.__exit__(None, None, None)  # close(): flushes the healthy, names the bad one
    assert raised.value.threads == [(saver.tenant_id, bad)]
    assert pg_rows(test_database_url, saver.schema, late) == 4

    _drop_trigger(test_database_url, saver.schema)
    with saver_context(durable=True, key_prefix=saver.key_prefix, schema=saver.schema) as again:
        (result,) = again.flush(thread_config(bad))
        assert result.checkpoints == 4 and pg_rows(test_database_url, saver.schema, bad) == 4


def test_explicit_flush_lifts_a_quarantine(saver_context: Callable[..., Any], test_database_url: str) -> None:
    with saver_context(durable=True, flush_policy=FlushPolicy(**FAST_RETRY)) as saver:  # type: ignore[arg-type]
        saver.setup()
        bad = f"bad-{uuid.uuid4().hex[:6]}"
        _trigger(test_database_url, saver.schema, bad)
        chain_graph(saver, nodes=2).invoke({"n": 0}, thread_config(bad))
        assert wait_for(lambda: bool(saver.flusher_health().quarantined), 15)
        _drop_trigger(test_database_url, saver.schema)
        (result,) = saver.flush(thread_config(bad))
        assert result.checkpoints == 4
        assert saver.flusher_health().quarantined == ()
        assert saver.metrics.snapshot()["gauges"]["flush_quarantined_threads"] == 0


def test_the_worker_loop_survives_a_failing_thread(saver_context: Callable[..., Any], test_database_url: str) -> None:
    policy = FlushPolicy(**{**FAST_RETRY, "quiet_seconds": 3600.0, "every_n_checkpoints": 0, "on_close": False})
    with saver_context(durable=True, background_flush=False, flush_policy=policy) as saver:
        saver.setup()
        bad, good = f"bad-{uuid.uuid4().hex[:6]}", f"good-{uuid.uuid4().hex[:6]}"
        _trigger(test_database_url, saver.schema, bad)
        graph = chain_graph(saver, nodes=2)
        graph.invoke({"n": 0}, thread_config(bad))
        graph.invoke({"n": 0}, thread_config(good))
        flushed = worker_loop(
            saver.run_op, saver.core.flush, saver.metrics, quiet_seconds=0, poll_seconds=0.05,
            stop=threading.Event(), once=True, policy=policy,
        )  # fmt: skip
        assert flushed == 1  # the good one; the bad one failed, contained
        assert pg_rows(test_database_url, saver.schema, good) == 4
        assert saver.metrics.counter("flush_errors") == 1


@pytest.mark.parametrize(
    ("option", "value"),
    [("on_interrupt", "Sync"), ("on_error", None), ("quiet_seconds", -1), ("quiet_seconds", "1"),
     ("quiet_seconds", True), ("every_n_checkpoints", -5), ("every_n_checkpoints", 2.5),
     ("on_close", "yes"), ("max_attempts", 0), ("retry_backoff", -0.1)],
)  # fmt: skip
def test_flush_policy_options_are_checked(option: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=option):
        FlushPolicy(**{option: value})


json_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    ["\\u0000", "a\x00b", "\\\\u0000", "\\", "\x00"]
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | json_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(json_text, inner, max_size=4),
    max_leaves=12,
)


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out[_without_nul(k)] = _without_nul(v)
        return out
    return value


@pytest.fixture(scope="module")
def pg(request: pytest.FixtureRequest) -> Any:
    with psycopg.connect(request.getfixturevalue("test_database_url"), autocommit=True) as conn:
        yield conn


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.dictionaries(json_text, json_values, max_size=5))
def test_every_string_survives_jsonb(pg: psycopg.Connection[Any], value: dict[str, Any]) -> None:
    """NUL is dropped from every string and key, everything else (backslashes too) is exact."""
    expected = jsonb_value(value)
    (stored,) = pg.execute("SELECT %s::jsonb", (dumps_jsonb(value),)).fetchone()  # type: ignore[misc]
    assert stored == expected
    assert expected == _without_nul(value)  # keys equal but for a NUL merge, the last one wins


def test_threads_past_the_flushers_bound_wait_in_the_outbox_index_and_reach_postgres_at_close(
    saver_context: Callable[..., Any], test_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More threads wait than the flusher keeps a deadline for: its memory stays at the bound,
    and `close()` reads the rest back from the outbox index in Redis: every thread is flushed."""
    from langgraph_tiered_saver.flushing import background

    monkeypatch.setattr(background, "TRACKED_THREADS", 3)
    threads = [f"over-{i}-{uuid.uuid4().hex[:6]}" for i in range(8)]
    with saver_context(durable=True, flush_policy=FlushPolicy(quiet_seconds=3600.0, every_n_checkpoints=0)) as saver:  # type: ignore[arg-type]
        saver.setup()
        graph = chain_graph(saver, nodes=2)
        for thread in threads:
            graph.invoke({"n": 0}, thread_config(thread))
        flusher = saver.core.flusher
        assert len(flusher._touched) == 3 and len(flusher._due) <= 3
        schema = saver.schema
    assert all(pg_rows(test_database_url, schema, t) == 4 for t in threads)
