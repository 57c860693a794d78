"""Redis that answers but refuses (real private servers): out of memory under `noeviction`, a
read-only replica, an ACL user without EVALSHA. Each reply is a typed error; where it means
"Redis cannot take this now" (OOM, READONLY), `on_redis_error="fallback"` writes through."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import redis

from devtools.servers import PrivatePostgres, PrivateRedis
from langgraph_tiered_saver import (
    DataLostError,
    RedisPermissionError,
    TieredSaver,
    TierUnavailableError,
)
from langgraph_tiered_saver.flushing.fleet import Roster, worker_loop
from langgraph_tiered_saver.hot import keys as K
from tests.faults.test_hot_faults import NO_AUTO_FLUSH, STEPS, pg_count, private_saver
from tests.graphs import chain_graph
from tests.helpers import TEST_TENANT, thread_config, wait_for

pytestmark = pytest.mark.faults


@contextmanager
def client_of(url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(url)
    try:
        yield client
    finally:
        client.close()


def fill_until_oom(url: str) -> None:
    """Junk keys, then a `maxmemory` below what Redis holds, under `noeviction`: every write that
    allocates is refused with OOM from here on (reads, DEL, EXPIRE still work)."""
    with client_of(url) as client:
        pipe = client.pipeline(transaction=False)
        for i in range(200):
            pipe.set(f"junk:{i}", b"x" * 20_000)
        pipe.execute()
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", str(used - 1_000_000))
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            client.set("probe", "x")


@pytest.mark.parametrize("mode", ["fallback", "raise"])
def test_out_of_memory_is_typed_and_falls_back_to_postgres(
    make_private_redis: Callable[..., PrivateRedis], test_database_url: str, mode: str
) -> None:
    server = make_private_redis()
    with private_saver(server.url, test_database_url, on_redis_error=mode, flush_policy=NO_AUTO_FLUSH) as saver:
        fill_until_oom(server.url)
        cfg = thread_config()
        graph = chain_graph(saver)
        if mode == "raise":
            with pytest.raises(TierUnavailableError, match="OutOfMemoryError"):
                graph.invoke({"n": 0}, cfg)
            return
        assert graph.invoke({"n": 0}, cfg)["n"] > 0
        assert saver.metrics.counter("redis_fallbacks") > 0
        assert pg_count(test_database_url, saver.schema, cfg["configurable"]["thread_id"]) == STEPS


@pytest.mark.parametrize("mode", ["fallback", "raise"])
def test_a_read_only_replica_is_typed_and_falls_back_to_postgres(
    make_private_redis: Callable[..., PrivateRedis], test_database_url: str, mode: str
) -> None:
    primary = make_private_redis()
    replica = make_private_redis("--replicaof", "127.0.0.1", str(primary.port))
    with client_of(replica.url) as client:
        deadline = time.monotonic() + 10
        while client.info("replication").get("master_link_status") != "up" and time.monotonic() < deadline:
            time.sleep(0.05)
    with private_saver(replica.url, test_database_url, on_redis_error=mode, flush_policy=NO_AUTO_FLUSH) as saver:
        cfg = thread_config()
        graph = chain_graph(saver)
        if mode == "raise":
            with pytest.raises(TierUnavailableError, match="ReadOnlyError"):
                graph.invoke({"n": 0}, cfg)
            return
        assert graph.invoke({"n": 0}, cfg)["n"] > 0
        assert pg_count(test_database_url, saver.schema, cfg["configurable"]["thread_id"]) == STEPS


def test_a_demoted_redis_never_answers_for_a_thread_written_through(
    make_private_redis: Callable[..., PrivateRedis], test_database_url: str
) -> None:
    """A failover demotes the saver's Redis to a replica of a primary it cannot reach: it keeps
    its data and serves reads, but refuses writes. A run is then written through to Postgres,
    and from then on the older copy Redis still serves must not answer for the thread (a state
    read right after the run would go back in time), until Redis takes writes again."""
    server = make_private_redis()
    with private_saver(server.url, test_database_url, on_redis_error="fallback") as saver, client_of(server.url) as client:
        cfg = thread_config()
        graph = chain_graph(saver)
        per_run = graph.invoke({"n": 0}, cfg)["n"]  # each run adds one per node
        saver.flush()
        client.execute_command("REPLICAOF", "127.0.0.1", "1")  # no primary there: it keeps what it holds
        assert graph.invoke({"n": 0}, cfg)["n"] == 2 * per_run
        assert saver.metrics.counter("redis_fallbacks") > 0
        assert graph.get_state(cfg).values["n"] == 2 * per_run
        assert next(iter(graph.get_state_history(cfg))).values["n"] == 2 * per_run
        assert graph.invoke({"n": 0}, cfg)["n"] == 3 * per_run
        assert graph.get_state(cfg).values["n"] == 3 * per_run
        client.execute_command("REPLICAOF", "NO", "ONE")  # writable again: the thread goes on from Postgres
        assert graph.get_state(cfg).values["n"] == 3 * per_run
        assert graph.invoke({"n": 0}, cfg)["n"] == 4 * per_run
        saver.flush()
        assert saver.metrics.counter("thread_forks") == 0
        assert pg_count(test_database_url, saver.schema, cfg["configurable"]["thread_id"]) == 4 * STEPS


@pytest.mark.parametrize("reader_saw_it", [True, False])
def test_another_process_never_reads_the_older_copy_a_demoted_redis_keeps(
    make_private_redis: Callable[..., PrivateRedis], test_database_url: str, reader_saw_it: bool
) -> None:
    """A run written through to Postgres by one process (the demoted Redis refused its writes)
    must not be read back older by another process, which wrote nothing: once its check finds
    the replica, its reads take the newer of the two tiers. Once Redis takes writes again, the
    generations move (the writer's check, or the reader's if it saw the replica), so the older
    copy is checked against Postgres and dropped, and the reader's run goes on from the newest."""
    server = make_private_redis()
    with (
        private_saver(server.url, test_database_url, on_redis_error="fallback") as saver,
        client_of(server.url) as client,
        TieredSaver.from_conn_string(
            server.url, test_database_url, tenant_id=TEST_TENANT, key_prefix=saver.key_prefix, schema=saver.schema,
            on_redis_error="fallback", redis_check_seconds=3600.0,  # its checks: the test's, below
        ) as other,
    ):
        cfg = thread_config()
        graph, reader = chain_graph(saver), chain_graph(other)
        per_run = graph.invoke({"n": 0}, cfg)["n"]
        saver.flush()
        assert reader.get_state(cfg).values["n"] == per_run
        client.execute_command("REPLICAOF", "127.0.0.1", "1")  # it keeps the copy of n = per_run
        assert graph.invoke({"n": 0}, cfg)["n"] == 2 * per_run  # written through
        if reader_saw_it:
            other.run_op(other.core.hot.watch.check_op())  # what its background check does
            assert other.core.hot.watch.replica
            assert reader.get_state(cfg).values["n"] == 2 * per_run
            assert next(iter(reader.get_state_history(cfg))).values["n"] == 2 * per_run
            assert [s.values["n"] for s in reader.get_state_history(cfg)][:2] == [2 * per_run, 2 * per_run - 1]
        client.execute_command("REPLICAOF", "NO", "ONE")
        saver.run_op(saver.core.hot.watch.check_op())  # the writer's background check
        if reader_saw_it:
            other.run_op(other.core.hot.watch.check_op())
        assert not other.core.hot.watch.replica
        assert reader.get_state(cfg).values["n"] == 2 * per_run
        assert reader.invoke({"n": 0}, cfg)["n"] == 3 * per_run
        other.flush()
        saver.flush()
        assert saver.metrics.counter("thread_forks") == 0 and other.metrics.counter("thread_forks") == 0
        assert pg_count(test_database_url, saver.schema, cfg["configurable"]["thread_id"]) == 3 * STEPS


def test_a_user_without_evalsha_gets_a_typed_error(
    make_private_redis: Callable[..., PrivateRedis], test_database_url: str
) -> None:
    server = make_private_redis()
    password = uuid.uuid4().hex
    with client_of(server.url) as client:
        client.execute_command("ACL", "SETUSER", "app", "on", f">{password}", "~*", "+@all", "-evalsha", "-eval")
    url = f"redis://app:{password}@127.0.0.1:{server.port}/0"
    with (
        private_saver(url, test_database_url, on_redis_error="fallback", flush_policy=NO_AUTO_FLUSH) as saver,
        pytest.raises(RedisPermissionError, match="evalsha"),
    ):
        chain_graph(saver).invoke({"n": 0}, thread_config())


def test_a_full_redis_still_drains_its_outbox_after_a_postgres_outage(
    make_private_redis: Callable[..., PrivateRedis], make_private_postgres: Callable[..., PrivatePostgres]
) -> None:
    """`noeviction`: Postgres is down while the outbox grows, and Redis fills up. Taking a
    flush lease is a write Redis refuses now; the flush goes on without one (Postgres' fence
    still orders flushers) and acknowledging only deletes, so the whole outbox drains once
    Postgres is back, and Redis has room again."""
    server = make_private_redis()
    pg = make_private_postgres()
    with private_saver(server.url, pg.url, flush_policy=NO_AUTO_FLUSH, background_flush=False) as saver:
        graph = chain_graph(saver, nodes=2)
        threads = [thread_config() for _ in range(20)]
        for cfg in threads:
            graph.invoke({"n": 0}, cfg)
        pg.stop()
        with pytest.raises(TierUnavailableError):
            saver.flush(threads[0])
        fill_until_oom(server.url)
        pg.start()
        results = None
        deadline = time.monotonic() + 20
        while results is None:  # the pool's connections to the old server fail once each
            try:
                results = saver.flush()
            except TierUnavailableError:
                assert time.monotonic() < deadline
                time.sleep(0.5)
        assert results and all(r.remaining == 0 for r in results)
        assert saver.run_op(saver.core.flush.outbox_status_op()).depth == 0
        for cfg in threads:
            assert pg_count(pg.url, saver.schema, cfg["configurable"]["thread_id"]) == 4


@pytest.mark.parametrize("durable", [True, False])
def test_a_checkpoint_whose_values_were_evicted_before_its_flush_is_an_error(
    make_private_redis: Callable[..., PrivateRedis], test_database_url: str, durable: bool
) -> None:
    """`allkeys-*` evicts one key of a thread (DEL of the channel values stands in for it,
    deterministically) before the thread reached Postgres: reading its latest checkpoint raises
    DataLostError, never returns the checkpoint with its values missing."""
    server = make_private_redis()
    context = (
        private_saver(server.url, test_database_url, flush_policy=NO_AUTO_FLUSH, background_flush=False)
        if durable
        else TieredSaver.from_conn_string(server.url, None, tenant_id=TEST_TENANT, key_prefix=f"lost-{uuid.uuid4().hex[:6]}")
    )
    with context as target:
        cfg = thread_config()
        chain_graph(target, nodes=2).invoke({"n": 0}, cfg)
        keys = K.thread_keys(target.key_prefix, TEST_TENANT, cfg["configurable"]["thread_id"])
        with client_of(server.url) as client:
            client.delete(keys.bl)
        with pytest.raises(DataLostError, match="eviction"):
            target.get_tuple(cfg)


def test_a_full_redis_still_deletes_threads_and_workers_still_flush(
    make_private_redis: Callable[..., PrivateRedis], test_database_url: str
) -> None:
    """`noeviction`, Redis full: a deletion (its flush lock is a SET Redis refuses) and a worker
    (its membership heartbeat is a ZADD Redis refuses) both go on; the fence keeps them safe."""
    server = make_private_redis()
    with private_saver(server.url, test_database_url, flush_policy=NO_AUTO_FLUSH, background_flush=False) as saver:
        graph = chain_graph(saver, nodes=2)
        doomed, kept = thread_config(), [thread_config() for _ in range(5)]
        for cfg in (doomed, *kept):
            graph.invoke({"n": 0}, cfg)
        saver.flush(doomed)
        fill_until_oom(server.url)
        saver.delete_thread(doomed["configurable"]["thread_id"])
        assert pg_count(test_database_url, saver.schema, doomed["configurable"]["thread_id"]) == 0
        assert saver.get_tuple(doomed) is None

        stop = threading.Event()
        roster = Roster(saver.key_prefix, "full-worker", 3_000)
        worker = threading.Thread(target=worker_loop, args=(saver.run_op, saver.core.flush, saver.metrics),
                                  kwargs={"quiet_seconds": 0, "poll_seconds": 0.05, "stop": stop, "roster": roster})
        worker.start()
        try:
            assert wait_for(lambda: saver.run_op(saver.core.flush.outbox_status_op()).depth == 0, 20)
        finally:
            stop.set()
            worker.join(10)
        for cfg in kept:
            assert pg_count(test_database_url, saver.schema, cfg["configurable"]["thread_id"]) == 4
