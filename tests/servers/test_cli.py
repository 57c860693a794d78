"""The command-line tool (DESIGN contract 11) against real servers: setup, threads, checkpoints,
flush, metrics and prune, each reading what a saver wrote, and its errors."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from devtools.servers import delete_keys
from langgraph_tiered_saver.cli.main import main
from langgraph_tiered_saver.flushing.ops import FlushPolicy
from tests.graphs import chain_graph
from tests.helpers import QUIET_OFF, new_prefix, pg_rows


def test_cli_inspects_flushes_and_prunes(
    saver_context: Callable[..., Any], redis_url: str, test_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with saver_context(durable=True, background_flush=False, flush_policy=FlushPolicy(**QUIET_OFF)) as saver:  # type: ignore[arg-type]
        base = ["--redis-url", redis_url, "--postgres-url", test_database_url,
                "--key-prefix", saver.key_prefix, "--schema", saver.schema, "--tenant", saver.tenant_id]  # fmt: skip

        def cli(*args: str) -> Any:
            capsys.readouterr()
            assert main([*base, *args]) == 0
            return json.loads(capsys.readouterr().out)

        assert cli("setup")["up_to_date"] is True
        assert cli("threads") == []
        thread = f"t-{uuid.uuid4().hex[:8]}"
        chain_graph(saver).invoke({"n": 0}, {"configurable": {"thread_id": thread}})

        (listed,) = cli("threads")
        assert listed == {"thread_id": thread, "in_redis": True, "postgres_checkpoints": 0,
                          "latest_postgres_checkpoint": None, "last_flushed_at": None}  # fmt: skip
        checkpoints = cli("checkpoints", thread, "--limit", "3")
        assert [c["step"] for c in checkpoints] == [8, 7, 6]
        assert "n" in checkpoints[0]["channels"]

        metrics = cli("metrics")
        assert metrics["gauges"]["outbox_depth"] == 1  # written, not flushed yet
        assert pg_rows(test_database_url, saver.schema, thread) == 0

        (flushed,) = cli("flush", "--thread", thread)
        assert (flushed["thread_id"], flushed["checkpoints"], flushed["remaining"]) == (thread, 10, 0)
        assert isinstance(flushed["lag_seconds"], float)  # the outbox entry's age was known
        assert pg_rows(test_database_url, saver.schema, thread) == 10
        assert cli("metrics")["gauges"]["outbox_depth"] == 0
        (listed,) = cli("threads")
        assert (listed["in_redis"], listed["postgres_checkpoints"]) == (True, 10)
        assert listed["latest_postgres_checkpoint"] == checkpoints[0]["checkpoint_id"]
        assert listed["last_flushed_at"] is not None
        saver.run_op(saver.core.hot.delete_thread_op(saver.tenant_id, [thread]))  # gone from Redis (TTL)
        (listed,) = cli("threads")
        assert (listed["thread_id"], listed["in_redis"], listed["postgres_checkpoints"]) == (thread, False, 10)

        assert cli("prune", "--older-than", "30d")["checkpoints"] == 0  # nothing that old
        dry = cli("prune", "--older-than", "0s", "--keep-last", "3", "--dry-run")
        assert (dry["dry_run"], dry["checkpoints"], dry["kept"]) == (True, 7, 3)
        assert pg_rows(test_database_url, saver.schema, thread) == 10  # a dry run deletes nothing
        pruned = cli("prune", "--older-than", "0s", "--keep-last", "3")
        assert (pruned["checkpoints"], pruned["postgres_checkpoints"]) == (7, 7)
        assert pg_rows(test_database_url, saver.schema, thread) == 3
        pruned = cli("prune", "--older-than", "0s")
        assert pruned["checkpoints"] == 2  # all but the latest, which a thread always keeps
        assert pg_rows(test_database_url, saver.schema, thread) == 1


def test_cli_errors_are_one_clear_line(
    redis_url: str, test_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = new_prefix()  # never the shared default prefix
    try:
        for command in (["threads"], ["checkpoints", "t1"], ["flush", "--thread", "t1"], ["prune", "--older-than", "1d"]):
            assert main(["--redis-url", redis_url, "--postgres-url", test_database_url, "--key-prefix", prefix, *command]) == 2
            assert "error: this command reads or changes one tenant's data: pass --tenant" in capsys.readouterr().err
        assert main(["--redis-url", redis_url, "--postgres-url", "", "--key-prefix", prefix, "worker", "--once"]) == 2
        assert "error: the worker flushes to Postgres" in capsys.readouterr().err
    finally:
        delete_keys(redis_url, f"{prefix}:*")
    with pytest.raises(SystemExit):
        main(["--redis-url", redis_url, "prune", "--older-than", "soon"])
    assert "use a number and s, m, h or d" in capsys.readouterr().err


def test_postgres_only_commands_need_no_redis(
    test_database_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    schema = f"lts_cli_{uuid.uuid4().hex[:8]}"
    role = f"lts_cli_{uuid.uuid4().hex[:8]}"
    try:
        assert main(["--postgres-url", test_database_url, "--schema", schema, "setup"]) == 0
        assert json.loads(capsys.readouterr().out)["up_to_date"] is True
        assert main(["--postgres-url", test_database_url, "--schema", schema, "create-role", role]) == 0
        assert json.loads(capsys.readouterr().out) == {"role": role, "schema": schema, "row_level_security": True}
    finally:
        import psycopg

        with psycopg.connect(test_database_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_logs_are_one_json_object_per_line() -> None:
    import logging

    from langgraph_tiered_saver.observability.logs import JsonLogFormatter

    record = logging.LogRecord("lts", logging.WARNING, __file__, 1, 'thread "%s" said %s', ("a\nb", '{"x": 1}'), None)
    line = JsonLogFormatter().format(record)
    assert "\n" not in line
    assert json.loads(line)["msg"] == 'thread "a\nb" said {"x": 1}'
    record.created = 0.25
    record.tenant_id, record.thread_id = "acme", "case_8842"  # as logging sets `extra=`
    entry = json.loads(JsonLogFormatter().format(record))
    assert (entry["ts"], entry["tenant_id"], entry["thread_id"]) == ("1970-01-01T00:00:00.250Z", "acme", "case_8842")


def test_global_options_after_the_command_and_a_dry_run_in_words(
    saver_context: Callable[..., Any], redis_url: str, test_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prune --tenant acme --dry-run` works (global options after the command), and the dry
    run says per tier what it would remove."""
    with saver_context(durable=True, background_flush=False, flush_policy=FlushPolicy(**QUIET_OFF)) as saver:  # type: ignore[arg-type]
        options = ["--redis-url", redis_url, "--postgres-url", test_database_url,
                   "--key-prefix", saver.key_prefix, "--schema", saver.schema, "--tenant", saver.tenant_id]  # fmt: skip
        saver.setup()
        thread = f"t-{uuid.uuid4().hex[:8]}"
        chain_graph(saver).invoke({"n": 0}, {"configurable": {"thread_id": thread}})
        saver.flush({"configurable": {"thread_id": thread}})  # 10 checkpoints in both tiers
        capsys.readouterr()
        assert main(["prune", *options, "--older-than", "0s", "--keep-last", "3", "--dry-run"]) == 0
        dry = json.loads(capsys.readouterr().out)
        assert (dry["redis_checkpoints"], dry["postgres_checkpoints"], dry["postgres_writes"]) == (7, 7, 20)
        assert dry["summary"] == (
            f"dry run: would remove 7 checkpoint(s) from 1 of 1 thread(s) of {saver.tenant_id}: "
            "7 from Redis, 7 from Postgres (one held in both counts in each; with 20 pending write(s)); 3 checkpoint(s) kept "
            "(each namespace's latest, paused runs, and the ancestors kept ones need). Nothing was deleted."
        )
        assert pg_rows(test_database_url, saver.schema, thread) == 10
        # the value after the command wins over the one before it
        assert main(["--tenant", "other", "prune", *options, "--keep-last", "3"]) == 0
        pruned = json.loads(capsys.readouterr().out)
        assert pruned["summary"].startswith("removed 7 checkpoint(s)")
        assert (pruned["redis_checkpoints"], pruned["postgres_checkpoints"], pruned["postgres_writes"]) == (7, 7, 20)
        with pytest.raises(SystemExit):
            main(["prune", "--no-such-option"])
        assert "unrecognized arguments" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["setup", "threads", "prune", "worker", "import-postgres"])
def test_every_command_help_lists_the_global_options(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    for option in ("--redis-url", "--postgres-url", "--key-prefix", "--schema", "--tenant"):
        assert option in out
