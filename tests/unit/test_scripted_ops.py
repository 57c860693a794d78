"""The core ops' failure branches through the scripted driver: no servers, milliseconds each.
Every real fault kind also has one real-server test (test_hot_faults, test_postgres_faults,
test_flusher_supervision); these cover the branches exhaustively and deterministically."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from psycopg_pool import ConnectionPool

from langgraph_tiered_saver import (
    FlushPolicy,
    StaleLockError,
    ThreadLockedError,
    TieredSaver,
    TierUnavailableError,
)
from langgraph_tiered_saver._core.ops import ListQuery
from langgraph_tiered_saver._sansio.breaker import PgBreaker
from langgraph_tiered_saver._sansio.io import PgCall, RedisCall
from langgraph_tiered_saver._sansio.pgfaults import classify_connect_error, classify_statement_error
from langgraph_tiered_saver._sansio.schedule import Scheduler
from langgraph_tiered_saver._sansio.scripted import Expect, ScriptedDriver, commands_of
from langgraph_tiered_saver.errors import (
    DatabaseMissingError,
    FlushFencedError,
    PostgresAuthError,
    PostgresError,
    RedisPermissionError,
    SchemaMissingError,
)
from langgraph_tiered_saver.flushing.ops import FlushOps, FlushResult
from langgraph_tiered_saver.hot import keys as K
from langgraph_tiered_saver.hot import scripts
from langgraph_tiered_saver.hot.ops import HotOps
from langgraph_tiered_saver.hot.stored import encode_refs
from langgraph_tiered_saver.locking.locks import LockOps
from langgraph_tiered_saver.records.codec import CheckpointRecord, encode_typed
from langgraph_tiered_saver.records.ids import ThreadRef

TENANT, THREAD = "acme", "t1"
REDIS_DOWN = TierUnavailableError("redis", "Connection refused")
PG_DOWN = TierUnavailableError("postgres", "Connection refused")


def _is(*names: str) -> Any:
    return lambda request: commands_of(request) == list(names)


def _copy_epoch(value: str, shards: int = K.SHARDS) -> Expect:
    """The epoch copied into `shards` shards (every one: the epoch was just set), one pipeline."""
    return Expect(
        RedisCall, reply=[True] * shards, describe=f"copy the epoch into {shards} shards",
        check=lambda r: commands_of(r) == ["SET"] * shards and {c[2] for c in r.commands} == {value},
    )  # fmt: skip


def _epoch_copies(copies: list[bytes | None]) -> Expect:
    """Every shard's copy of the epoch read (the epoch was there already), one pipeline."""
    return Expect(RedisCall, reply=copies, check=lambda r: commands_of(r) == ["GET"] * K.SHARDS, describe="read the copies")


@pytest.fixture
def saver_factory() -> Iterator[Any]:
    """Savers whose clients never connect: every request goes to the scripted driver."""
    made: list[TieredSaver] = []

    def make(**options: Any) -> TieredSaver:
        pool = ConnectionPool("postgresql://nowhere.invalid/db", open=False) if options.pop("durable", True) else None
        saver = TieredSaver(redis.Redis(host="nowhere.invalid"), pg_pool=pool, tenant_id=TENANT,
                            background_flush=False, blob_store=None, **options)  # fmt: skip
        saver.core.hot.epoch.value = "epoch-1"  # as after the process' first write
        saver.core.hot.watch._loop = None  # no background checks
        saver.core.hot.watch._checked = True  # as after the process' first read
        made.append(saver)
        return saver

    yield make


def _put_args() -> tuple[Any, ...]:
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"a": 1}
    checkpoint["channel_versions"] = {"a": "1"}
    return {"configurable": {"thread_id": THREAD, "checkpoint_ns": ""}}, checkpoint, {"step": 0}, {"a": "1"}


def _put_op(saver: Any) -> Any:
    cfg, checkpoint, metadata, versions = _put_args()
    return saver.core.put_op(saver._ref(cfg), cfg, checkpoint, metadata, versions)


def test_put_falls_back_to_postgres_when_redis_is_down(saver_factory: Any) -> None:
    saver = saver_factory(on_redis_error="fallback")
    driver = ScriptedDriver([
        Expect(RedisCall, error=REDIS_DOWN, describe="the put script"),
        # thread lock, hot-tier check, fork check (none), value, checkpoint, written-through mark
        Expect(PgCall, reply=[1, 1, [], 1, 1, 1], check=lambda c: c.tenant_id == TENANT, describe="write-through"),
    ])  # fmt: skip
    config = driver.run(_put_op(saver))
    assert config["configurable"]["thread_id"] == THREAD
    assert saver.metrics.counter("redis_fallbacks") == 1
    assert saver.metrics.counter("write_through_rows") == 2  # the value and the checkpoint
    assert saver.metrics.counter("thread_forks") == 0


def test_a_write_through_that_finds_a_fork_reports_it_and_keeps_both(saver_factory: Any) -> None:
    saver = saver_factory(on_redis_error="fallback")
    driver = ScriptedDriver([
        Expect(RedisCall, error=REDIS_DOWN, describe="the put script"),
        Expect(PgCall, reply=[1, 1, [("", "ck-new")], 1, 1, 1], describe="write-through: Postgres names a fork"),
    ])  # fmt: skip
    driver.run(_put_op(saver))
    assert saver.metrics.counter("thread_forks") == 1
    assert saver.metrics.recent("thread_forks") == ((TENANT, THREAD, "", "ck-new"),)


def test_put_raises_when_redis_is_down_and_fallback_is_off(saver_factory: Any) -> None:
    driver = ScriptedDriver([Expect(RedisCall, error=REDIS_DOWN)])
    with pytest.raises(TierUnavailableError, match="redis"):
        driver.run(_put_op(saver_factory()))
    assert not any(isinstance(r, PgCall) for r in driver.seen)  # never a silent Postgres write


def _get_latest(saver: Any) -> Any:
    return saver.core.get_tuple_op(saver._ref({"configurable": {"thread_id": THREAD}}), None)


def test_a_failed_postgres_read_raises_never_answers_no_thread(saver_factory: Any) -> None:
    saver = saver_factory()
    driver = ScriptedDriver([Expect(RedisCall, reply=[[b"miss", [], b"", b""]]), Expect(PgCall, error=PG_DOWN)])
    with pytest.raises(TierUnavailableError, match="postgres"):
        driver.run(_get_latest(saver))
    assert saver.metrics.counter("postgres_read_errors") == 1


@pytest.mark.parametrize("status", [b"miss", b"evicted"])
def test_a_miss_is_answered_by_postgres(saver_factory: Any, status: bytes) -> None:
    saver = saver_factory()
    lookup = Expect(PgCall, reply=[[], [(True,)]], describe="lookup: no such checkpoint, other ones of the thread")
    driver = ScriptedDriver([Expect(RedisCall, reply=[[status, [], b"", b""]]), lookup])
    assert driver.run(_get_latest(saver)) is None  # Postgres, which knows, says there is none
    assert saver.metrics.counter("read_misses") == 1
    assert len(saver.core.fresh) == 0  # Postgres holds some of the thread: not new


def test_a_thread_written_through_is_read_from_postgres_while_redis_still_refuses_writes(saver_factory: Any) -> None:
    """Redis answers reads but refused the writes that went to Postgres (a demoted replica, out
    of memory): its copy of the thread predates them, so Postgres answers, never that copy."""
    saver = saver_factory(on_redis_error="fallback")
    saver.core.written_through.add((TENANT, THREAD))
    refused = TierUnavailableError("redis", "ReadOnlyError: You can't write against a read only replica.")
    driver = ScriptedDriver([
        Expect(RedisCall, error=refused, check=_is("ZSCORE", "EVALSHA:outbox_read"), describe="the recovery flush"),
        Expect(PgCall, reply=[[]], describe="Postgres' latest, Redis' copy left unread"),
    ])  # fmt: skip
    assert driver.run(_get_latest(saver)) is None
    assert (TENANT, THREAD) in saver.core.written_through  # recovered on a later call, once Redis takes writes
    assert saver.metrics.counter("read_hits_redis") == 0
    listing = ScriptedDriver([
        Expect(RedisCall, error=refused, check=_is("ZSCORE", "EVALSHA:outbox_read"), describe="the recovery flush"),
        Expect(PgCall, reply=[[]], describe="Postgres' checkpoints, Redis' list left unread"),
    ])  # fmt: skip
    ref = saver._ref({"configurable": {"thread_id": THREAD}})
    assert listing.run(saver.core.list_op(ListQuery(ref, TENANT, True, None, None, None))) == []


def _fresh_arg(request: Any) -> str:
    """The `fresh` argument of the write.lua call in `request`."""
    (command,) = [c for c in request.commands if c[0] == "EVALSHA" and c[1] == scripts.WRITE.sha]
    return str(command[3 + len(scripts.WRITE.keys) + scripts.WRITE.argv.index("fresh")])


def test_a_thread_postgres_holds_nothing_of_tells_redis_so_in_its_first_write(saver_factory: Any) -> None:
    """A miss that Postgres answers "no checkpoint of this thread at all" makes the thread's first
    put say so (write.lua marks the copy whole); the next put does not."""
    saver = saver_factory()
    read = ScriptedDriver([
        Expect(RedisCall, reply=[[b"miss", [], b"", b""]]),
        Expect(PgCall, reply=[[], [(False,)]], check=lambda c: len(c.statements) == 2, describe="lookup + presence"),
    ])  # fmt: skip
    assert read.run(_get_latest(saver)) is None
    assert len(saver.core.fresh) == 1
    first, second = (ScriptedDriver([Expect(RedisCall, reply=[1])]) for _ in range(2))
    first.run(_put_op(saver))
    second.run(_put_op(saver))
    assert _fresh_arg(first.seen[0]) == "1" and _fresh_arg(second.seen[0]) == "0"
    assert len(saver.core.fresh) == 0


def test_a_namespace_redis_vouches_absent_is_none_without_postgres(saver_factory: Any) -> None:
    saver = saver_factory()
    driver = ScriptedDriver([Expect(RedisCall, reply=[[b"absent", [], b"", b""]])])
    assert driver.run(_get_latest(saver)) is None
    assert not any(isinstance(r, PgCall) for r in driver.seen)
    assert saver.metrics.counter("read_absent_redis") == 1


def test_a_failed_postgres_read_fails_a_list(saver_factory: Any) -> None:
    saver = saver_factory()
    ref = saver._ref({"configurable": {"thread_id": THREAD}})
    driver = ScriptedDriver([
        Expect(RedisCall, reply=[[[], [], [], 0, b"", b""]], check=_is("EVALSHA:list"), describe="the thread in Redis"),
        Expect(PgCall, error=PG_DOWN),
    ])  # fmt: skip
    with pytest.raises(TierUnavailableError, match="postgres"):
        driver.run(saver.core.list_op(ListQuery(ref, TENANT, True, None, None, None)))


def test_a_thread_redis_holds_whole_is_listed_without_postgres(saver_factory: Any) -> None:
    """list.lua vouches for it (marked whole, verified): no Postgres call; without the mark, one
    Postgres call, and a mark when Postgres had nothing more."""
    saver = saver_factory()
    ref = saver._ref({"configurable": {"thread_id": THREAD}})
    query = ListQuery(ref, TENANT, True, None, None, None)
    whole = ScriptedDriver([Expect(RedisCall, reply=[[[], [], [], 1, b"\x00c1", b""]], check=_is("EVALSHA:list"))])
    assert whole.run(saver.core.list_op(query)) == []
    driver = ScriptedDriver([
        Expect(RedisCall, reply=[[[], [], [], 0, b"\x00c1", b"7"]], check=_is("EVALSHA:list"), describe="not marked"),
        Expect(PgCall, reply=[[]], describe="Postgres has nothing more"),
        Expect(RedisCall, reply=[1], check=_is("EVALSHA:list_mark"), describe="marked, verified under 7"),
    ])  # fmt: skip
    assert driver.run(saver.core.list_op(query)) == []


def test_the_first_read_checks_which_redis_server_answers(saver_factory: Any) -> None:
    saver = saver_factory()
    saver.core.hot.watch._checked = False  # a new process
    check = lambda r: commands_of(r) == ["EVALSHA:server_check"] and int(r.commands[0][2]) == 1  # noqa: E731
    driver = ScriptedDriver([
        Expect(RedisCall, reply=[[b"run-2", 0]], check=check, describe="server check: another run id"),
        Expect(RedisCall, reply=[1] * K.SHARDS, check=_is(*["INCR"] * K.SHARDS), describe="every generation moves"),
        Expect(RedisCall, reply=[True], check=lambda r: r.commands[0][0] == "SET" and r.commands[0][2] == "run-2"),
        Expect(RedisCall, reply=[[b"miss", [], b"", b""]]), Expect(PgCall, reply=[[], [(False,)]]),
    ])  # fmt: skip
    assert driver.run(_get_latest(saver)) is None
    assert saver.metrics.counter("redis_server_changes") == 1
    ScriptedDriver([Expect(RedisCall, reply=[[b"miss", [], b"", b""]]), Expect(PgCall, reply=[[], [(False,)]])]).run(
        _get_latest(saver)
    )


def test_a_replica_found_by_the_check_moves_the_generations_once_it_takes_writes_again(saver_factory: Any) -> None:
    """A server demoted to a replica keeps its run id: the check reports the role. While it is a
    replica nothing moves (it would refuse); once it takes writes again, every generation does."""
    saver = saver_factory()
    watch = saver.core.hot.watch
    ScriptedDriver([Expect(RedisCall, reply=[[None, 1]], check=_is("EVALSHA:server_check"))]).run(watch.check_op())
    assert watch.replica and saver.metrics.counter("redis_replica_seen") == 1
    ScriptedDriver([Expect(RedisCall, reply=[[None, 1]])]).run(watch.check_op())  # still one: nothing written
    promoted = ScriptedDriver([
        Expect(RedisCall, reply=[[None, 0]], check=_is("EVALSHA:server_check")),
        Expect(RedisCall, error=TierUnavailableError("redis", "connection reset"), check=_is(*["INCR"] * K.SHARDS)),
    ])  # fmt: skip
    with pytest.raises(TierUnavailableError):
        promoted.run(watch.check_op())
    assert watch.replica  # the generations did not move: the next check tries again
    again = ScriptedDriver([
        Expect(RedisCall, reply=[[None, 0]]), Expect(RedisCall, reply=[1] * K.SHARDS, check=_is(*["INCR"] * K.SHARDS)),
    ])  # fmt: skip
    assert again.run(watch.check_op()) is True
    assert not watch.replica and saver.metrics.counter("redis_server_changes") == 1
    assert ScriptedDriver([Expect(RedisCall, reply=[[None, 0]])]).run(watch.check_op()) is False
    # a new server that is a replica: nothing recorded or moved until it takes writes
    assert ScriptedDriver([Expect(RedisCall, reply=[[b"run-3", 1]])]).run(watch.check_op()) is False
    assert watch.replica
    taking_writes = ScriptedDriver([
        Expect(RedisCall, reply=[[b"run-3", 0]]),
        Expect(RedisCall, reply=[1] * K.SHARDS, check=_is(*["INCR"] * K.SHARDS)),
        Expect(RedisCall, reply=[True], check=lambda r: r.commands[0][0] == "SET" and r.commands[0][2] == "run-3"),
    ])  # fmt: skip
    assert taking_writes.run(watch.check_op()) is True and not watch.replica


def test_a_process_that_wrote_through_moves_the_generations_when_redis_takes_writes_again(saver_factory: Any) -> None:
    """Another process may read Redis' copy of a thread this one wrote through to Postgres, and
    may never have seen Redis refuse: the writer moves the generations, so every process checks
    its copies against Postgres, whatever its own checks saw."""
    saver = saver_factory(on_redis_error="fallback")
    watch = saver.core.hot.watch
    watch.moves_pending = True  # what a write-through sets (core's _write_through_op)
    ScriptedDriver([Expect(RedisCall, reply=[[None, 1]])]).run(watch.check_op())  # still refusing
    assert watch.moves_pending
    moved = ScriptedDriver([Expect(RedisCall, reply=[[None, 0]]), Expect(RedisCall, reply=[1] * K.SHARDS, check=_is(*["INCR"] * K.SHARDS))])
    assert moved.run(watch.check_op()) is True and not watch.moves_pending


def test_while_redis_is_a_replica_reads_ask_postgres_and_write_nothing_to_redis(saver_factory: Any) -> None:
    """A replica's copies may be older than what went through to Postgres: a thread it holds
    whole ("absent": no checkpoint in the namespace) and a list it marked whole both ask
    Postgres; nothing is re-warmed or marked (the replica would refuse)."""
    saver = saver_factory()
    saver.core.hot.watch.replica = True
    read = ScriptedDriver([
        Expect(RedisCall, reply=[[b"absent", [], b"", b""]], check=_is("EVALSHA:get")),
        Expect(PgCall, reply=[[], [(False,)]], describe="Postgres asked, nothing re-warmed"),
    ])  # fmt: skip
    assert read.run(_get_latest(saver)) is None
    ref = saver._ref({"configurable": {"thread_id": THREAD}})
    listing = ScriptedDriver([
        Expect(RedisCall, reply=[[[], [], [], 1, b"\x00c1", b""]], check=_is("EVALSHA:list"), describe="marked whole"),
        Expect(PgCall, reply=[[]], describe="Postgres asked all the same; no mark written"),
    ])  # fmt: skip
    assert listing.run(saver.core.list_op(ListQuery(ref, TENANT, True, None, None, None))) == []


def test_a_script_cache_found_empty_makes_the_next_read_check_the_server(saver_factory: Any) -> None:
    saver = saver_factory()
    saver._sync.on_scripts_lost()  # what the driver calls on NOSCRIPT
    driver = ScriptedDriver([
        Expect(RedisCall, reply=[[None, 0]], check=_is("EVALSHA:server_check")),
        Expect(RedisCall, reply=[[b"miss", [], b"", b""]]), Expect(PgCall, reply=[[], [(False,)]]),
    ])  # fmt: skip
    driver.run(_get_latest(saver))
    assert saver.metrics.counter("redis_server_changes") == 0  # same server: nothing moved


def test_a_deleted_thread_leaves_the_registry_only_after_postgres(saver_factory: Any) -> None:
    saver = saver_factory()
    registry = K.tenant_threads_key("lts", TENANT, K.shard_of(TENANT, THREAD))
    unregisters = lambda r: any(c[:2] == ("ZREM", registry) for c in r.commands)  # noqa: E731
    driver = ScriptedDriver([
        Expect(RedisCall, reply=[b"OK", [b"1700000000", b"0"]], describe="flush lock and the Redis clock"),
        Expect(RedisCall, reply=[{}, {}, {}, {}], describe="export"),
        Expect(RedisCall, reply=[1, 1], check=lambda r: not unregisters(r), describe="delete keys"),
        Expect(PgCall, error=PG_DOWN, describe="delete rows"),
        Expect(RedisCall, reply=[1], describe="flush lock release"),
    ])  # fmt: skip
    with pytest.raises(TierUnavailableError):
        driver.run(saver.core.delete_thread_op(TENANT, THREAD))
    assert not any(isinstance(r, RedisCall) and unregisters(r) for r in driver.seen)


def test_a_missing_schema_is_not_masked_by_the_fallback(saver_factory: Any) -> None:
    driver = ScriptedDriver([
        Expect(RedisCall, reply=[[b"miss", [], b"", b""]]), Expect(PgCall, error=SchemaMissingError("no tables")),
    ])  # fmt: skip
    with pytest.raises(SchemaMissingError):
        saver = saver_factory()
        driver.run(saver.core.get_tuple_op(saver._ref({"configurable": {"thread_id": THREAD}}), None))


def _flush_ops() -> FlushOps:
    return FlushOps(JsonPlusSerializer(), key_prefix="lts", schema="s", audit_json=True, ttl_ms=60_000)


def _blob_entries(n: int, start: int = 0) -> tuple[list[bytes], list[bytes]]:
    fields = [K.blob_field("", "chan", str(i)) for i in range(start, start + n)]
    return [f"b\x00{f}".encode() for f in fields], [encode_typed(("json", b'"v"')) for _ in fields]


def _outbox(entries: list[bytes], values: list[bytes]) -> list[Any]:
    versions = [b"1"] * len(entries)
    return [b"1700000000000", [entries, versions, values, 0]]  # ZSCORE of the dirty index, the locked read


def test_a_busy_flush_lock_is_skipped(saver_factory: Any) -> None:
    driver = ScriptedDriver([Expect(RedisCall, reply=[None, None], check=_is("ZSCORE", "EVALSHA:outbox_read"))])
    result = driver.run(_flush_ops().flush_thread_op(TENANT, THREAD))
    assert result.skipped_locked and driver.slept == 0


def _read_arg(call: RedisCall, name: str) -> Any:
    """The named ARGV slot of the outbox_read script in `call` (its second command)."""
    command = call.commands[1]
    return command[3 + int(command[2]) + scripts.OUTBOX_READ.argv.index(name)]


def test_a_flush_waiting_for_a_stalled_lease_takes_it_over_after_takeover_seconds() -> None:
    """A synchronous flush polls for `takeover_seconds` (1 + 2 + 4 + 8 ms of sleeping here),
    never the holder's whole lease, then reads with `force`: the stalled holder's commit is
    refused by Postgres' fence afterwards."""
    ops = FlushOps(JsonPlusSerializer(), key_prefix="lts", schema="s", audit_json=True, ttl_ms=60_000, takeover_seconds=0.01)
    busy = [Expect(RedisCall, reply=[None, None], check=lambda c: _read_arg(c, "force") == "0") for _ in range(5)]
    forced = [b"1700000000000", [[], [], [], 0, b"1700000000", b"5", 1]]
    driver = ScriptedDriver([
        *busy,
        Expect(RedisCall, reply=forced, check=lambda c: _read_arg(c, "force") == "1", describe="forced read"),
        Expect(RedisCall, reply=[0], check=lambda c: _is("EVALSHA:outbox_ack")(c) and _ack_arg(c, "release") == "1"
               and _ack_arg(c, "observed") == b"1700000000000", describe="empty outbox: release, clear the mark"),
    ])  # fmt: skip
    result = driver.run(ops.flush_thread_op(TENANT, THREAD, wait=True))
    assert not result.skipped_locked and result.remaining == 0
    assert driver.slept == pytest.approx(0.015)


def _ack_arg(call: RedisCall, name: str) -> Any:
    """The named ARGV slot of the outbox_ack script in `call`."""
    command = call.commands[0]
    return command[3 + int(command[2]) + scripts.OUTBOX_ACK.argv.index(name)]


def test_the_outbox_is_flushed_in_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("langgraph_tiered_saver.flushing.ops.OUTBOX_BATCH", 2)
    first, second = _blob_entries(2), _blob_entries(1, start=2)
    driver = ScriptedDriver([
        Expect(RedisCall, reply=_outbox(*first), check=_is("ZSCORE", "EVALSHA:outbox_read")),
        Expect(PgCall, reply=[1, 1, 2]),  # thread lock, hot-tier check, values
        Expect(RedisCall, reply=[1], check=lambda c: _is("EVALSHA:outbox_ack")(c) and _ack_arg(c, "release") == "0",
               describe="ack, lock kept"),
        Expect(RedisCall, reply=_outbox(*second)),
        Expect(PgCall, reply=[1, 1, 1]),
        Expect(RedisCall, reply=[0], check=lambda c: _ack_arg(c, "release") == "1"
               and _ack_arg(c, "observed") == b"1700000000000", describe="last ack releases, clears the mark"),
    ])  # fmt: skip
    result = driver.run(_flush_ops().flush_thread_op(TENANT, THREAD))
    assert (result.blobs, result.remaining, result.skipped_locked) == (3, 0, False)


def _checkpoint_entry(checkpoint_id: str) -> tuple[bytes, list[Any]]:
    """An outbox entry of a checkpoint (no channel values) and what the outbox read gives for it."""
    serde = JsonPlusSerializer()
    bare = {**empty_checkpoint(), "id": checkpoint_id}
    bare.pop("channel_values")
    record = CheckpointRecord(serde.dumps_typed(bare), serde.dumps_typed({"step": 1}), None, ())
    member = K.checkpoint_member("", checkpoint_id)
    return K.outbox_entry("checkpoint", member).encode(), [record.pack(), encode_refs("run-1", ()).encode(), [], []]


def test_a_fork_a_flush_commits_is_reported_though_its_acknowledgement_fails() -> None:
    """Forks are told as the transaction that found them commits: the acknowledgement after it
    may fail (a Redis that now refuses writes), and the flush that retries finds the rows stored,
    the fork no longer visible to it."""
    told: list[Any] = []
    ops = FlushOps(JsonPlusSerializer(), key_prefix="lts", schema="s", audit_json=True, ttl_ms=60_000,
                   on_forked=lambda tenant, thread, forked: told.append((tenant, thread, forked)))  # fmt: skip
    entry, value = _checkpoint_entry("ck-1")
    refused = TierUnavailableError("redis", "ReadOnlyError: You can't write against a read only replica.")
    driver = ScriptedDriver([
        Expect(RedisCall, reply=_outbox([entry], [value]), check=_is("ZSCORE", "EVALSHA:outbox_read")),
        Expect(PgCall, reply=[1, 1, [("", "ck-1")], [(1,)]], describe="lock, hot-tier check, fork check: a fork; the row"),
        Expect(RedisCall, error=refused, check=_is("EVALSHA:outbox_ack"), describe="the acknowledgement, refused"),
        Expect(RedisCall, error=refused, describe="the lease's release, refused too"),
    ])  # fmt: skip
    with pytest.raises(TierUnavailableError):
        driver.run(ops.flush_thread_op(TENANT, THREAD))
    assert told == [(TENANT, THREAD, [("", "ck-1")])]


def _deferred(ops: FlushOps) -> None:
    """A synchronous flush that leaves its acknowledgement (flushing/acks.py): read, upsert."""
    driver = ScriptedDriver([
        Expect(RedisCall, reply=_outbox(*_blob_entries(1)), check=_is("ZSCORE", "EVALSHA:outbox_read")),
        Expect(PgCall, reply=[1, 1, 1]),  # thread lock, hot-tier check, values; no ack
    ])  # fmt: skip
    result = driver.run(ops.flush_thread_op(TENANT, THREAD, wait=True, defer_ack=True))
    assert result.blobs == 1 and len(ops.acks) == 1


def test_a_deferred_ack_is_sent_before_the_threads_next_flush_reads() -> None:
    """The lease the left acknowledgement gives back is this process' own: the next flush of
    the thread sends it first instead of waiting for the lease."""
    ops = _flush_ops()
    _deferred(ops)
    driver = ScriptedDriver([
        Expect(RedisCall, reply=[0], check=lambda c: _is("EVALSHA:outbox_ack")(c) and _ack_arg(c, "release") == "1",
               describe="the left ack, releasing the lease"),
        Expect(RedisCall, reply=[None, [[], [], [], 0, b"1700000000", b"5", 1]], describe="read: empty"),
        Expect(RedisCall, reply=[0], check=_is("EVALSHA:outbox_ack"), describe="release"),
    ])  # fmt: skip
    result = driver.run(ops.flush_thread_op(TENANT, THREAD, wait=True))
    assert not result.skipped_locked and driver.slept == 0 and len(ops.acks) == 0


def test_a_deferred_ack_redis_refuses_is_logged_and_its_entries_flushed_again(caplog: pytest.LogCaptureFixture) -> None:
    ops = _flush_ops()
    _deferred(ops)
    with caplog.at_level(logging.WARNING, "langgraph_tiered_saver.flush"):
        assert ScriptedDriver([Expect(RedisCall, error=REDIS_DOWN)]).run(ops.acks.send_op()) == 0
    assert len(ops.acks) == 0 and "flushed again once its lease lapses" in caplog.text
    # the entries are still in the outbox: the next flush (past the lapsed lease) writes them again
    driver = ScriptedDriver([
        Expect(RedisCall, reply=_outbox(*_blob_entries(1))),
        Expect(PgCall, reply=[1, 1, 0]),  # the value is in Postgres already: nothing inserted
        Expect(RedisCall, reply=[0], check=_is("EVALSHA:outbox_ack")),
    ])  # fmt: skip
    assert driver.run(ops.flush_thread_op(TENANT, THREAD)).remaining == 0


@pytest.mark.parametrize("error", [PostgresError("refused by a trigger", "P0001"), KeyboardInterrupt()])
def test_an_error_mid_flush_still_releases_the_flush_lock(error: BaseException) -> None:
    driver = ScriptedDriver([
        Expect(RedisCall, reply=_outbox(*_blob_entries(1))),
        Expect(PgCall, error=error),
        Expect(RedisCall, reply=[1], check=_is("EVALSHA:lock_release"), describe="the finally's release"),
    ])  # fmt: skip
    with pytest.raises(type(error)):
        driver.run(_flush_ops().flush_thread_op(TENANT, THREAD))


def test_waiting_for_a_checkpoint_put_times_out() -> None:
    hot = HotOps(JsonPlusSerializer(), prefix="lts", ttl_ms=1000, refresh_on_read=False, track_outbox=True, offloader=None, epoch=None, watch=None)
    ref = ThreadRef(TENANT, THREAD, "", "cp-1")
    driver = ScriptedDriver([Expect(RedisCall, reply=[0], check=_is("HEXISTS")) for _ in range(5)])
    assert driver.run(hot.await_checkpoint_op(ref, timeout=0.01)) is False
    assert driver.slept == pytest.approx(0.015)  # 1 + 2 + 4 + 8 ms, then the deadline
    found = ScriptedDriver([Expect(RedisCall, reply=[0]), Expect(RedisCall, reply=[1])])
    assert found.run(hot.await_checkpoint_op(ref, timeout=5)) is True


def test_a_busy_thread_lock_raises_or_waits() -> None:
    locks = LockOps("lts", 60_000, Scheduler("test-locks"))
    ref = ThreadRef(TENANT, THREAD)
    with pytest.raises(ThreadLockedError):
        ScriptedDriver([Expect(RedisCall, reply=[None])]).run(locks.acquire_op(ref, 1000, wait=False, wait_timeout=None))
    driver = ScriptedDriver([Expect(RedisCall, reply=[None]), Expect(RedisCall, reply=[None]), Expect(RedisCall, reply=[b"7"])])
    handle = driver.run(locks.acquire_op(ref, 1000, wait=True, wait_timeout=10))
    assert handle.fence == "7" and driver.slept == pytest.approx(0.003)


def test_the_interrupt_flush_goes_on_when_postgres_is_down(saver_factory: Any) -> None:
    saver = saver_factory(flush_policy=FlushPolicy(on_interrupt="sync"))
    config = {"configurable": {"thread_id": THREAD, "checkpoint_ns": "", "checkpoint_id": "cp-1"}}
    driver = ScriptedDriver([
        Expect(RedisCall, reply=[1], describe="put_writes"),
        Expect(RedisCall, reply=[1], check=_is("HEXISTS"), describe="its checkpoint is there"),
        Expect(RedisCall, reply=_outbox(*_blob_entries(1))),
        Expect(PgCall, error=PG_DOWN),
        Expect(RedisCall, reply=[1], check=_is("EVALSHA:lock_release")),
    ])  # fmt: skip
    driver.run(saver.core.put_writes_op(saver._ref(config), [("__interrupt__", "approve?")], "task-1", ""))
    assert saver.metrics.counter("flush_errors") == 1


def _landed(saver: Any, config: dict[str, Any]) -> Any:
    """The ref of `config`, its checkpoint's put landed in Redis (as LangGraph's put before it)."""
    ref = saver._ref(config)
    saver.core.landed.started(ref, ref.checkpoint_id)
    saver.core.landed.ended(ref, ref.checkpoint_id, landed=True)
    return ref


def _script_arg(command: tuple[Any, ...], script: Any, name: str) -> Any:
    return command[3 + int(command[2]) + script.argv.index(name)]


def _inline_read(command: tuple[Any, ...]) -> bool:
    """outbox_read.lua sent as EVAL (its source): never NOSCRIPT, so a retry of the pipeline
    for the write script's NOSCRIPT is the only one, and it runs the read again after the write."""
    return command[:2] == ("EVAL", scripts.OUTBOX_READ.source)


def test_the_interrupt_flush_reads_the_outbox_in_the_write_round_trip(saver_factory: Any) -> None:
    """Its checkpoint landed: write, dirty score and locked outbox read in one round trip, then
    the upsert, then the ack with the lease token of that read."""
    saver = saver_factory(flush_policy=FlushPolicy(on_interrupt="sync"))
    ref = _landed(saver, {"configurable": {"thread_id": THREAD, "checkpoint_ns": "", "checkpoint_id": "cp-1"}})
    tokens: list[Any] = []

    def write_then_read(call: RedisCall) -> bool:
        tokens.append(_script_arg(call.commands[2], scripts.OUTBOX_READ, "token"))
        return commands_of(call) == ["EVALSHA:write", "ZSCORE", "EVAL"] and _inline_read(call.commands[2])

    driver = ScriptedDriver([
        Expect(RedisCall, reply=[1, *_outbox(*_blob_entries(1))], check=write_then_read, describe="write + read"),
        Expect(PgCall, reply=[1, 1, 1]),  # thread lock, hot-tier check, values
        Expect(RedisCall, reply=[0], check=lambda c: _is("EVALSHA:outbox_ack")(c) and _ack_arg(c, "token") == tokens[0]
               and _ack_arg(c, "release") == "1", describe="ack by the read's token, release"),
    ])  # fmt: skip
    driver.run(saver.core.put_writes_op(ref, [("__interrupt__", "approve?")], "task-1", ""))
    assert saver.metrics.counter("flush_errors") == 0


def test_an_interrupt_write_that_fails_gives_back_the_lease_its_read_may_hold(saver_factory: Any) -> None:
    saver = saver_factory(flush_policy=FlushPolicy(on_interrupt="sync"))
    ref = _landed(saver, {"configurable": {"thread_id": THREAD, "checkpoint_ns": "", "checkpoint_id": "cp-1"}})
    tokens: list[Any] = []
    driver = ScriptedDriver([
        Expect(RedisCall, error=redis.exceptions.ResponseError("the write script failed"),
               check=lambda c: bool(tokens.append(_script_arg(c.commands[2], scripts.OUTBOX_READ, "token"))) or True),
        Expect(RedisCall, reply=[1], check=lambda c: _is("EVALSHA:lock_release")(c)
               and _script_arg(c.commands[0], scripts.LOCK_RELEASE, "token") == tokens[0], describe="release by token"),
    ])  # fmt: skip
    with pytest.raises(redis.exceptions.ResponseError):
        driver.run(saver.core.put_writes_op(ref, [("__interrupt__", "approve?")], "task-1", ""))


def test_a_write_that_sees_another_epoch_reports_the_loss_once(
    saver_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    saver = saver_factory()
    driver = ScriptedDriver([
        Expect(RedisCall, reply=[0], check=_is("EVALSHA:write"), describe="put: Redis holds no epoch-1"),
        Expect(RedisCall, reply=[None, b"epoch-2"], check=_is("SET", "GET"), describe="adopt the current epoch"),
        _epoch_copies([b"epoch-1"] * K.SHARDS),
        _copy_epoch("epoch-2"),
    ])  # fmt: skip
    next_put = ScriptedDriver([Expect(RedisCall, reply=[1], check=_is("EVALSHA:write"), describe="same epoch now")])
    with caplog.at_level(logging.ERROR, logger="langgraph_tiered_saver"):
        driver.run(_put_op(saver))
        next_put.run(_put_op(saver))
    assert saver.metrics.counter("redis_data_lost") == 1
    assert saver.core.hot.epoch.value == "epoch-2" and saver.core.hot.epoch.lost_at is not None
    assert [r.levelname for r in caplog.records if "Redis lost data" in r.getMessage()] == ["ERROR"]


def test_a_write_whose_shard_lost_its_epoch_copy_says_so(saver_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    """The epoch stayed (a Cluster node restarted empty, the epoch on another): the write's
    shard had no copy. Reported once, as that, and the copies put back."""
    saver = saver_factory()
    copies: list[bytes | None] = [b"epoch-1"] * (K.SHARDS - 2) + [None] * 2
    driver = ScriptedDriver([
        Expect(RedisCall, reply=[0], check=_is("EVALSHA:write"), describe="put: the shard holds no epoch"),
        Expect(RedisCall, reply=[None, b"epoch-1"], check=_is("SET", "GET"), describe="the epoch stayed"),
        _epoch_copies(copies),
        _copy_epoch("epoch-1", 2),
    ])  # fmt: skip
    with caplog.at_level(logging.ERROR, logger="langgraph_tiered_saver"):
        driver.run(_put_op(saver))
    assert saver.metrics.counter("redis_data_lost") == 1 and saver.core.hot.epoch.value == "epoch-1"
    said = [r.getMessage() for r in caplog.records if "Redis lost data" in r.getMessage()]
    assert len(said) == 1 and f"(2 of {K.SHARDS} shards lost their copy of epoch epoch-1: a Redis node" in said[0]


@pytest.mark.parametrize(("copies", "reported"), [
    ([b"epoch-1"] * (K.SHARDS - 3) + [None] * 3, True),  # a node wiped, the epoch kept on another
    ([None] * K.SHARDS, False),  # the epoch's first setter stopped before copying it
    ([b"epoch-1"] * K.SHARDS, False),
])  # fmt: skip
def test_a_process_that_finds_shards_without_their_epoch_copy_reports_the_loss(
    saver_factory: Any, caplog: pytest.LogCaptureFixture, copies: list[bytes | None], reported: bool
) -> None:
    """Learning an epoch that was there, a process puts back the copies a wiped node lost: it
    says so first, as the writes there, which then see their epoch, no longer can."""
    saver = saver_factory()
    saver.core.hot.epoch.value = None  # a process' first call
    missing = sum(1 for copy in copies if copy is None)
    driver = ScriptedDriver([
        Expect(RedisCall, reply=[None, b"epoch-1"], check=_is("SET", "GET"), describe="the epoch was there"),
        _epoch_copies(copies),
        *([_copy_epoch("epoch-1", missing)] if missing else []),
        Expect(RedisCall, reply=[[b"maxmemory-policy", b"noeviction"]], check=_is("CONFIG")),
        Expect(RedisCall, reply=[1], check=lambda c: _is("EVALSHA:write")(c) and "epoch-1" in c.commands[0]),
    ])  # fmt: skip
    with caplog.at_level(logging.ERROR, logger="langgraph_tiered_saver"):
        driver.run(_put_op(saver))
    assert saver.metrics.counter("redis_data_lost") == int(reported)
    assert (saver.core.hot.epoch.lost_at is not None) is reported
    said = [r.getMessage() for r in caplog.records if "Redis lost data" in r.getMessage()]
    assert said == ([f"Redis lost data (3 of {K.SHARDS} shards lost their copy of epoch epoch-1: a Redis node "
                     "restarted empty or was flushed). Checkpoints not yet flushed to Postgres are lost; threads "
                     "continue from their last flushed checkpoint."] if reported else [])  # fmt: skip


@pytest.mark.parametrize(("policy", "warned"), [(b"allkeys-lru", True), (b"volatile-lru", False), (None, False)])
def test_the_first_write_learns_the_epoch_and_checks_the_eviction_policy(
    saver_factory: Any, caplog: pytest.LogCaptureFixture, policy: bytes | None, warned: bool
) -> None:
    saver = saver_factory()
    saver.core.hot.epoch.value = None  # a process' first write
    config_reply: Expect = (
        Expect(RedisCall, reply=[[b"maxmemory-policy", policy]], check=_is("CONFIG"))
        if policy is not None
        else Expect(RedisCall, error=redis.exceptions.ResponseError("unknown command 'CONFIG'"), check=_is("CONFIG"))
    )
    driver = ScriptedDriver([
        Expect(RedisCall, reply=[True, b"epoch-1"], check=_is("SET", "GET"), describe="set the epoch if new"),
        _copy_epoch("epoch-1"),
        config_reply,
        Expect(RedisCall, reply=[1], check=lambda c: _is("EVALSHA:write")(c) and "epoch-1" in c.commands[0]),
    ])  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="langgraph_tiered_saver"):
        driver.run(_put_op(saver))
    assert any("maxmemory-policy" in r.getMessage() for r in caplog.records) is warned
    assert saver.metrics.counter("redis_data_lost") == 0


def test_the_circuit_breaker_opens_once_probes_and_closes() -> None:
    now = [100.0]
    breaker = PgBreaker(first_open=1.0, max_open=4.0, clock=lambda: now[0])
    breaker.before_call()  # closed: passes
    breaker.failed(PG_DOWN)
    with pytest.raises(TierUnavailableError, match="circuit open"):
        breaker.before_call()
    now[0] += 1.0
    breaker.before_call()  # the probe
    with pytest.raises(TierUnavailableError):
        breaker.before_call()  # only one probe at a time
    breaker.failed(PG_DOWN)  # the probe failed: window doubles
    now[0] += 1.5
    with pytest.raises(TierUnavailableError):
        breaker.before_call()
    now[0] += 0.5
    breaker.before_call()
    breaker.succeeded()
    breaker.before_call()
    assert breaker.metrics.counter("postgres_outages") == 1
    assert breaker.metrics.counter("postgres_fast_failures") == 3


def test_postgres_errors_are_classified() -> None:
    import psycopg

    refused = psycopg.OperationalError('connection failed: connection to server at "127.0.0.1", port 1 failed: Connection refused')
    assert type(classify_connect_error(refused)) is TierUnavailableError
    auth = psycopg.OperationalError('connection failed: ... FATAL:  password authentication failed for user "app"')
    assert isinstance(classify_connect_error(auth), PostgresAuthError)
    db = psycopg.OperationalError('connection failed: ... FATAL:  database "nope" does not exist')
    assert isinstance(classify_connect_error(db), DatabaseMissingError)
    assert isinstance(classify_statement_error(psycopg.errors.UndefinedTable("relation x does not exist")), SchemaMissingError)
    # one statement's failure is that thread's error, never an outage, whatever psycopg's class
    for statement_error in (psycopg.errors.QueryCanceled("statement timeout"), psycopg.errors.LockNotAvailable("lock"),
                            psycopg.errors.ProgramLimitExceeded("index row size 3648 exceeds btree version 4 maximum 2704"),
                            psycopg.errors.CharacterNotInRepertoire("invalid byte sequence")):  # fmt: skip
        assert isinstance(statement_error, psycopg.OperationalError) or statement_error.sqlstate.startswith("22")
        classified = classify_statement_error(statement_error)
        assert type(classified) is PostgresError and classified.sqlstate == statement_error.sqlstate
    assert type(classify_statement_error(psycopg.errors.AdminShutdown("terminating connection"))) is TierUnavailableError
    assert type(classify_statement_error(psycopg.errors.TooManyConnections("too many"))) is TierUnavailableError
    rejected = classify_statement_error(psycopg.errors.CheckViolation("new row violates check"))
    assert isinstance(rejected, PostgresError)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [("OOM command not allowed when used memory > 'maxmemory'", TierUnavailableError),
     ("READONLY You can't write against a read only replica.", TierUnavailableError),
     ("STALE fencing token 3 is older than 4: the lock was lost", StaleLockError),
     ("ERR wrong number of arguments", redis.exceptions.ResponseError),
     # a command's reply inside a script, as Redis 7.0 words some (a read-only replica's refusal)
     ("Error running script (call to f_084b42c3): @user_script:74: @user_script: 74: -READONLY You can't write "
      "against a read only replica.", TierUnavailableError),
     ("Error running script (call to f_084b42c3): @user_script:12: @user_script: 12: -OOM command not allowed when "
      "used memory > 'maxmemory'.", TierUnavailableError),
     ("Command # 2 (EVALSHA e85b5922 11...) of pipeline caused error: Error running script (call to f_e85b5922): "
      "@user_script:69: @user_script: 69: -READONLY You can't write against a read only replica.", TierUnavailableError),
     ("Error running script (call to f_084b42c3): @user_script:3: @user_script: 3: -NOPERM this user has no "
      "permissions to run the 'hdel' command", RedisPermissionError),
     # a fault of the script itself stays what it is
     ("Error running script (call to f_084b42c3): @user_script:9: user_script:9: attempt to compare nil with number",
      redis.exceptions.ResponseError)],
)  # fmt: skip
def test_redis_error_replies_are_typed(reply: str, expected: type) -> None:
    from langgraph_tiered_saver._sansio.io import _typed_script_error

    typed = _typed_script_error(redis.exceptions.ResponseError(reply))
    assert type(typed) is expected
    if "-READONLY" in reply:  # named as redis-py names the reply it parses outside a script
        assert "ReadOnlyError" in str(typed)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [(redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), TierUnavailableError),
     (redis.exceptions.ReadOnlyError("You can't write against a read only replica."), TierUnavailableError),
     (redis.exceptions.NoPermissionError("this user has no permissions to run the 'evalsha' command"),
      RedisPermissionError)],
)  # fmt: skip
def test_redis_error_classes_are_typed(exc: Exception, expected: type) -> None:
    """redis-py parses OOM / READONLY / NOPERM replies into classes and drops the leading word."""
    from langgraph_tiered_saver._sansio.io import _typed_script_error

    assert type(_typed_script_error(exc)) is expected  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- group flushes

GROUP = [("acme", "t1"), ("globex", "t2"), ("acme", "t3")]


def _fenced_outbox(entries: list[bytes], values: list[bytes]) -> list[Any]:
    """`_outbox` with the fencing clock and the lease flag the outbox read script returns."""
    score, read = _outbox(entries, values)
    return [score, [*read, b"1700000000", b"5", 1]]


def _group_read(*replies: list[Any]) -> Expect:
    return Expect(
        RedisCall, reply=[part for reply in replies for part in reply], describe="every thread's lease and outbox",
        check=lambda c: commands_of(c) == ["ZSCORE", "EVALSHA:outbox_read"] * len(replies) and not c.transaction,
    )  # fmt: skip


def _sql_of(call: PgCall) -> list[str]:
    return [st.sql for st in call.statements]


def test_a_group_flush_writes_threads_of_several_tenants_in_one_transaction() -> None:
    """Three round trips for three threads of two tenants: one pipelined read (each thread's
    own slot, no MULTI), one transaction with each tenant's statements after its own
    set_config, one pipelined ack."""
    from langgraph_tiered_saver.durable import sql

    def transaction(call: PgCall) -> bool:
        texts = _sql_of(call)
        tenants = [st.params[0] for st in call.statements if st.sql == sql.SET_TENANT]
        fences = [st.params[:2] for st in call.statements if "lts_flush_fence" in st.sql]
        acme = texts.index(sql.SET_TENANT)
        globex = texts.index(sql.SET_TENANT, acme + 1)
        return (
            call.tenant_id is None and tenants == ["acme", "globex"]
            and fences == [("acme", "t1"), ("acme", "t3"), ("globex", "t2")]
            and all(st.params[0] == "acme" for st in call.statements[acme + 1:globex] if "INSERT" in st.sql)
            and all(st.params[0] == "globex" for st in call.statements[globex + 1:] if "INSERT" in st.sql)
        )  # fmt: skip

    driver = ScriptedDriver([
        _group_read(*(_fenced_outbox(*_blob_entries(1 + i)) for i in range(3))),
        # thread locks; acme: tenant, hot-tier check, 2 fences, values; globex: tenant, fence, values
        Expect(PgCall, reply=[1, 1, 1, 1, 1, 3, 1, 1, 2], check=transaction, describe="one transaction"),
        Expect(RedisCall, reply=[0, 0, 0], check=lambda c: commands_of(c) == ["EVALSHA:outbox_ack"] * 3
               and not c.transaction and all(_ack_arg(RedisCall((cmd,)), "release") == "1" for cmd in c.commands),
               describe="every ack in one pipeline, each releasing its lease"),
    ])  # fmt: skip
    results = driver.run(_flush_ops().flush_group_op(GROUP))
    assert [(r.tenant_id, r.thread_id, r.blobs, r.remaining) for r in results] == [
        ("acme", "t1", 1, 0), ("globex", "t2", 2, 0), ("acme", "t3", 3, 0),
    ]  # fmt: skip


def test_a_refused_group_transaction_flushes_each_thread_alone() -> None:
    """One thread's fence (a takeover since the read) or failing row rolls the group back: each
    thread is then flushed alone from the read already made, so the fenced one is skipped, the
    failing one gets its own error, and the other is written."""
    trigger = PostgresError("refused by a trigger", "P0001")
    driver = ScriptedDriver([
        _group_read(*(_fenced_outbox(*_blob_entries(1)) for _ in GROUP)),
        Expect(PgCall, error=FlushFencedError("lease lost"), describe="the group, refused"),
        Expect(PgCall, error=FlushFencedError("lease lost"), check=lambda c: c.tenant_id == "acme", describe="t1 alone"),
        Expect(RedisCall, reply=[0], check=_is("EVALSHA:lock_release"), describe="t1's lease released"),
        Expect(PgCall, reply=[1, 1, 1, 1], check=lambda c: c.tenant_id == "globex", describe="t2 alone"),
        Expect(RedisCall, reply=[0], check=_is("EVALSHA:outbox_ack"), describe="t2 acknowledged"),
        Expect(PgCall, error=trigger, check=lambda c: c.tenant_id == "acme", describe="t3 alone"),
        Expect(RedisCall, reply=[0], check=_is("EVALSHA:lock_release"), describe="t3's lease released"),
    ])  # fmt: skip
    fenced, written, failed = driver.run(_flush_ops().flush_group_op(GROUP))
    assert isinstance(fenced, FlushResult) and fenced.fenced and fenced.skipped_locked and fenced.blobs == 0
    assert isinstance(written, FlushResult) and (written.thread_id, written.blobs, written.remaining) == ("t2", 1, 0)
    assert failed is trigger


def test_a_busy_thread_of_a_group_is_skipped_and_a_corrupt_one_fails_alone() -> None:
    entries, _ = _blob_entries(1)
    driver = ScriptedDriver([
        _group_read([None, None], _fenced_outbox(entries, [b"\xffcorrupt"]), _fenced_outbox(*_blob_entries(2))),
        Expect(PgCall, reply=[1, 1, 1, 1, 2], check=lambda c: "t2" not in str(c), describe="t3 alone in the group"),
        Expect(RedisCall, reply=[0], check=_is("EVALSHA:outbox_ack"), describe="t3 acknowledged"),
        Expect(RedisCall, reply=[1], check=lambda c: _is("EVALSHA:lock_release")(c) and "t2" in str(c.commands),
               describe="the corrupt thread's lease released"),
    ])  # fmt: skip
    busy, corrupt, written = driver.run(_flush_ops().flush_group_op(GROUP))
    assert isinstance(busy, FlushResult) and busy.skipped_locked and not busy.fenced
    assert isinstance(corrupt, Exception)
    assert isinstance(written, FlushResult) and written.blobs == 2


def test_a_group_flush_in_an_outage_raises_and_releases_every_lease() -> None:
    driver = ScriptedDriver([
        _group_read(*(_fenced_outbox(*_blob_entries(1)) for _ in GROUP)),
        Expect(PgCall, error=PG_DOWN),
        Expect(RedisCall, reply=[1, 1, 1], check=lambda c: commands_of(c) == ["EVALSHA:lock_release"] * 3,
               describe="every lease released in one round trip"),
    ])  # fmt: skip
    with pytest.raises(TierUnavailableError):
        driver.run(_flush_ops().flush_group_op(GROUP))


def test_a_group_thread_with_more_than_its_share_of_entries_is_flushed_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two threads read at most 4 / 2 entries each (a group holds no more than one thread's
    flush would); the one that has more goes on alone, its next read a whole batch."""
    monkeypatch.setattr("langgraph_tiered_saver.flushing.ops.OUTBOX_BATCH", 4)
    share = _group_read(_fenced_outbox(*_blob_entries(1)), _fenced_outbox(*_blob_entries(2)))
    share.check = lambda c: _read_arg(RedisCall(c.commands[:2]), "limit") == 2 == _read_arg(RedisCall(c.commands[2:]), "limit")
    driver = ScriptedDriver([
        share,
        Expect(PgCall, reply=[1, 1, 1, 1, 1], check=lambda c: c.tenant_id is None, describe="the group: t1"),
        Expect(RedisCall, reply=[0], check=_is("EVALSHA:outbox_ack")),
        Expect(PgCall, reply=[1, 1, 1, 2], check=lambda c: c.tenant_id == "globex", describe="t2 alone, first batch"),
        Expect(RedisCall, reply=[1], check=lambda c: _ack_arg(c, "release") == "0", describe="lease kept"),
        Expect(RedisCall, reply=_fenced_outbox(*_blob_entries(1, start=2)), check=lambda c: _read_arg(c, "limit") == 4,
               describe="t2's next read: a whole batch"),
        Expect(PgCall, reply=[1, 1, 1, 1]),
        Expect(RedisCall, reply=[0], check=lambda c: _ack_arg(c, "release") == "1"),
    ])  # fmt: skip
    one, two = driver.run(_flush_ops().flush_group_op(GROUP[:2]))
    assert isinstance(one, FlushResult) and isinstance(two, FlushResult) and (one.blobs, two.blobs) == (1, 3)


def test_the_first_read_learns_the_epoch_and_a_refused_or_replica_one_leaves_it_to_the_first_write(
    saver_factory: Any,
) -> None:
    """A process' first read learns the epoch, so the first write is one round trip. A server that
    refuses the epoch's writes (out of memory here) still answers the read; a replica is not
    asked to write at all. Either way the first write learns it (or raises, as it did)."""
    absent = [[b"absent", [], b"", b""]]
    saver = saver_factory()
    saver.core.hot.epoch.value = None
    refused = ScriptedDriver([
        Expect(RedisCall, error=redis.exceptions.ResponseError("OOM command not allowed"), check=_is("SET", "GET")),
        Expect(RedisCall, reply=absent, check=_is("EVALSHA:get"), describe="the read goes on"),
    ])  # fmt: skip
    assert refused.run(_get_latest(saver)) is None
    assert saver.core.hot.epoch.value is None
    saver.core.hot.watch.replica = True
    replica = ScriptedDriver([
        Expect(RedisCall, reply=absent, check=_is("EVALSHA:get"), describe="no epoch write on a replica"),
        Expect(PgCall, reply=[[], [(False,)]]),
    ])  # fmt: skip
    assert replica.run(_get_latest(saver)) is None
    assert saver.core.hot.epoch.value is None
    saver.core.hot.watch.replica = False
    learned = ScriptedDriver([
        Expect(RedisCall, reply=[True, b"epoch-1"], check=_is("SET", "GET"), describe="set the epoch if new"),
        _copy_epoch("epoch-1"),
        Expect(RedisCall, reply=[[b"maxmemory-policy", b"noeviction"]], check=_is("CONFIG")),
        Expect(RedisCall, reply=absent, check=_is("EVALSHA:get")),
    ])  # fmt: skip
    assert learned.run(_get_latest(saver)) is None
    assert saver.core.hot.epoch.value == "epoch-1"
    first_write = ScriptedDriver([Expect(RedisCall, reply=[1], check=_is("EVALSHA:write"), describe="one round trip")])
    first_write.run(_put_op(saver))
