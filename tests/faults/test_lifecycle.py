"""The saver's lifecycle as a user meets it: a closed saver refuses work, the user's exception
wins over a flush failure at exit, and code written for AsyncPostgresSaver works unchanged
(`await saver.setup()`, a saver used from several event loops)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devtools.servers import PrivatePostgres, delete_keys
from langgraph_tiered_saver import EventLoopError, FlushError, SaverClosedError, TieredSaver
from langgraph_tiered_saver.flushing.ops import FlushPolicy
from tests.graphs import chain_graph
from tests.helpers import TEST_TENANT, new_prefix, pg_rows, thread_config


def _outbox_depth(saver: Any) -> int:
    return int(saver._runners.run_internal(saver.core.flush.outbox_status_op()).depth)


def test_a_closed_saver_refuses_every_call(saver_context: Callable[..., Any]) -> None:
    cfg = thread_config()
    with saver_context(durable=True) as saver:
        saver.setup()
        graph = chain_graph(saver, nodes=2)
        graph.invoke({"n": 0, "log": []}, cfg)
        view = saver.for_tenant("other-tenant")
    calls: list[Callable[[], Any]] = [
        lambda: graph.invoke({"n": 0, "log": []}, cfg),  # used to succeed, its writes never flushed
        lambda: saver.get_tuple(cfg),
        lambda: list(saver.list(cfg)),
        lambda: saver.put_writes(saver.get_tuple(cfg).config, [("x", 1)], "task"),
        lambda: saver.delete_thread(cfg["configurable"]["thread_id"]),
        lambda: saver.flush(),
        lambda: saver.setup(),
        lambda: view.get_tuple(cfg),  # a view shares the saver's fate
    ]
    for call in calls:
        with pytest.raises(SaverClosedError, match="the saver is closed"):
            call()
    saver.close()  # a second close is a no-op


def test_close_under_load_leaves_nothing_unflushed(saver_context: Callable[..., Any], redis_url: str, test_database_url: str) -> None:
    """Writers race close(): every write the saver accepted reaches Postgres by the drain; the
    rest are refused. None sits in the outbox with no flusher left to carry it."""
    policy = FlushPolicy(quiet_seconds=3600, every_n_checkpoints=0, on_close=True)
    configs = [thread_config() for _ in range(4)]
    accepted: dict[str, str] = {}
    refused: list[BaseException] = []
    with saver_context(durable=True, flush_policy=policy) as saver:
        saver.setup()
        prefix = saver.key_prefix

        def writer(cfg: dict[str, Any]) -> None:
            thread = cfg["configurable"]["thread_id"]
            checkpoint: Any = None
            while True:
                try:
                    checkpoint = saver.put(cfg if checkpoint is None else checkpoint, _checkpoint(), {"source": "loop", "step": 0}, {})
                except SaverClosedError as exc:
                    refused.append(exc)
                    return
                accepted[thread] = checkpoint["configurable"]["checkpoint_id"]

        writers = [threading.Thread(target=writer, args=(cfg,), daemon=True) for cfg in configs]
        for t in writers:
            t.start()
        time.sleep(0.5)
    for t in writers:
        t.join(10)
    assert len(refused) == len(configs)
    assert _outbox_depth_after_close(redis_url, prefix) == 0
    for thread, checkpoint_id in accepted.items():
        assert checkpoint_id in _pg_checkpoint_ids(test_database_url, saver.schema, thread)


def _checkpoint() -> Any:
    from langgraph.checkpoint.base import empty_checkpoint

    return empty_checkpoint()


def _pg_checkpoint_ids(url: str, schema: str, thread: str) -> set[str]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(f'SELECT checkpoint_id FROM "{schema}".checkpoints WHERE thread_id = %s', (thread,)).fetchall()
    return {r[0] for r in rows}


async def test_a_closed_async_saver_refuses_every_call(saver_context: Callable[..., Any]) -> None:
    cfg = thread_config()
    async with saver_context(durable=True) as saver:
        await saver.asetup()
        graph = chain_graph(saver, nodes=2)
        await graph.ainvoke({"n": 0, "log": []}, cfg)
    for call in (
        lambda: graph.ainvoke({"n": 0, "log": []}, cfg),
        lambda: saver.aget_tuple(cfg),
        lambda: saver.aflush(),
        lambda: saver.adelete_thread(cfg["configurable"]["thread_id"]),
    ):
        with pytest.raises(SaverClosedError):
            await call()
    await saver.aclose()


@pytest.fixture
def pg(make_private_postgres: Callable[..., PrivatePostgres]) -> PrivatePostgres:
    return make_private_postgres()


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    name = new_prefix()
    yield name
    delete_keys(redis_url, f"{name}:*")


def _saver(redis_url: str, pg: PrivatePostgres, prefix: str) -> Any:
    policy = FlushPolicy(quiet_seconds=3600, every_n_checkpoints=0, on_close=True)
    return TieredSaver.from_conn_string(redis_url, pg.url, tenant_id=TEST_TENANT, key_prefix=prefix, flush_policy=policy)


def test_the_users_exception_wins_over_a_flush_failure_at_exit(
    pg: PrivatePostgres, redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="langgraph_tiered_saver")
    with pytest.raises(ValueError, match="the user's own error"), _saver(redis_url, pg, prefix) as saver:
        saver.setup()
        chain_graph(saver, nodes=2).invoke({"n": 0, "log": []}, thread_config())
        pg.stop()  # the drain at exit fails
        raise ValueError("the user's own error")  # used to surface as FlushError, this as context
    assert saver.metrics.counter("close_failures") == 1
    assert any("closing the saver failed while the block raised ValueError" in r.getMessage() for r in caplog.records)
    assert _outbox_depth_after_close(redis_url, prefix) == 1  # kept for the next flusher


def _outbox_depth_after_close(redis_url: str, prefix: str) -> int:
    with TieredSaver.from_conn_string(redis_url, None, tenant_id=TEST_TENANT, key_prefix=prefix) as reader:
        return _outbox_depth(reader)


async def test_the_users_exception_wins_in_async_with_too(pg: PrivatePostgres, redis_url: str, prefix: str) -> None:
    with pytest.raises(KeyError, match="async block"):
        async with _saver(redis_url, pg, prefix) as saver:
            await saver.asetup()
            await chain_graph(saver, nodes=2).ainvoke({"n": 0, "log": []}, thread_config())
            pg.stop()
            raise KeyError("async block")
    assert saver.metrics.counter("close_failures") == 1


def test_a_flush_failure_at_exit_is_raised_when_the_block_succeeded(pg: PrivatePostgres, redis_url: str, prefix: str) -> None:
    with pytest.raises(FlushError, match="could not be flushed at close"), _saver(redis_url, pg, prefix) as saver:
        saver.setup()
        chain_graph(saver, nodes=2).invoke({"n": 0, "log": []}, thread_config())
        pg.stop()


async def test_await_setup_works_as_on_async_postgres_saver(saver_context: Callable[..., Any], test_database_url: str) -> None:
    cfg = thread_config()
    async with saver_context(durable=True) as saver:
        await saver.setup()  # TypeError: object NoneType can't be used in 'await' expression, before
        await chain_graph(saver, nodes=2).ainvoke({"n": 0, "log": []}, cfg)
        await saver.aflush()
        assert pg_rows(test_database_url, saver.schema, cfg["configurable"]["thread_id"]) >= 1
    with saver_context(durable=True) as sync_saver:
        assert sync_saver.setup() is not None  # sync code: runs now, the result needs no await


def test_a_saver_opened_with_with_serves_every_event_loop(saver_context: Callable[..., Any]) -> None:
    cfg = thread_config()
    with saver_context(durable=True) as saver:
        saver.setup()
        graph = chain_graph(saver, nodes=2)
        for _ in range(3):  # each asyncio.run is a new loop: "Event loop is closed" before
            out = asyncio.run(graph.ainvoke({"n": 0, "log": []}, cfg))
            assert out["n"] >= 2
        seen: list[Any] = []
        thread = threading.Thread(target=lambda: seen.append(asyncio.run(saver.aget_tuple(cfg))))
        thread.start()
        thread.join()
        assert seen[0] is not None and seen[0].checkpoint["id"] == saver.get_tuple(cfg).checkpoint["id"]


async def test_an_async_with_saver_refuses_another_loop_with_advice(saver_context: Callable[..., Any]) -> None:
    cfg = thread_config()
    async with saver_context() as saver:
        await chain_graph(saver, nodes=2).ainvoke({"n": 0, "log": []}, cfg)
        errors: list[BaseException] = []

        def other_loop() -> None:
            try:
                asyncio.run(saver.aget_tuple(cfg))
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=other_loop)
        thread.start()
        thread.join()
        assert len(errors) == 1 and isinstance(errors[0], EventLoopError)
        assert "open the saver inside the loop that uses it" in str(errors[0])
        assert (await saver.aget_tuple(cfg)) is not None  # its own loop still works
