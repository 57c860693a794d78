"""The case_8842 demo end to end on TieredSaver, on the project's real Redis and Postgres.

`run_demo` runs once for the module (it SIGKILLs a child process, resumes from Redis, wipes this
run's Redis keys and resumes from Postgres, reads the audit trail as an RLS-bound role, replays);
each test checks one claim on its `DemoResult`. The last test runs `python -m examples.case_8842`
as `make demo` does, pointed at the same servers through REDIS_URL / DATABASE_URL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import redis

from devtools.servers import PrivatePostgres, PrivateRedis
from examples.case_8842.run import BILLING_AND_ACCOUNT_TOOLS, DemoResult, run_demo

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo(redis_url: str, test_database_url: str) -> tuple[DemoResult, list[str]]:
    lines: list[str] = []
    result = run_demo(redis_url, test_database_url, out=lines.append)
    return result, lines


def test_child_was_killed_between_billing_and_policy(demo: tuple[DemoResult, list[str]]) -> None:
    result, lines = demo
    assert result.child_returncode == -signal.SIGKILL
    text = "\n".join(lines)
    assert "billing_agent finished" in text and "account_agent finished" in text
    assert "at the start of policy_agent (checkpoint saved)" in text


def test_resume_from_redis_reruns_no_finished_node(demo: tuple[DemoResult, list[str]]) -> None:
    result, _ = demo
    assert {t: result.tool_calls_after_resume.get(t) for t in BILLING_AND_ACCOUNT_TOOLS} == {
        "find_duplicate_charges": 1,
        "check_login_status": 1,
        "send_password_reset": 1,
    }
    assert not any(result.tools_rerun_by_resume.get(t) for t in BILLING_AND_ACCOUNT_TOOLS)
    assert result.resume_read_hits["redis"] >= 1
    assert result.resume_read_hits["postgres"] == 0


def test_pause_flushes_to_postgres(demo: tuple[DemoResult, list[str]]) -> None:
    result, _ = demo
    assert result.interrupt is not None and result.interrupt["amount"] == 129.99
    after = result.postgres_rows_after_interrupt
    assert after["checkpoints"] > result.postgres_rows_before_interrupt["checkpoints"]
    assert all(after[table] > 0 for table in ("checkpoints", "blobs", "writes"))
    assert all(n > 0 for n in result.postgres_rows_final.values())


def test_completion_from_postgres_after_redis_wipe(demo: tuple[DemoResult, list[str]]) -> None:
    result, _ = demo
    assert result.redis_keys_deleted > 0
    assert result.completion_read_hits["postgres"] >= 1
    assert "$129.99" in result.final_reply and "refund re_8842_002" in result.final_reply
    assert "password reset" in result.final_reply
    assert result.final_tool_calls == {
        "find_duplicate_charges": 1,
        "check_login_status": 1,
        "send_password_reset": 1,
        "issue_refund": 1,
    }


def test_audit_trail_is_tenant_isolated(demo: tuple[DemoResult, list[str]]) -> None:
    result, _ = demo
    if result.audit_skipped:
        pytest.skip(result.audit_skipped)
    assert result.audit_rows
    nodes = {row["node"] for row in result.audit_rows}
    assert {"billing_agent", "account_agent", "policy_agent", "human reviewer"} <= nodes
    assert [(d["decision"], d["approver"]) for d in result.policy_decisions] == [
        ("approved", "human")
    ]
    assert result.other_tenant_rows == 0


def test_time_travel_replay_differs(demo: tuple[DemoResult, list[str]]) -> None:
    result, _ = demo
    assert result.replay_from
    assert result.replayed_reply != result.final_reply
    assert "could not approve a refund" in result.replayed_reply
    assert "issue_refund" not in result.replayed_tool_calls


def test_timings_and_cleanup(
    demo: tuple[DemoResult, list[str]], redis_url: str, test_database_url: str
) -> None:
    result, _ = demo
    assert result.timings["put  [redis]"]["calls"] > 0
    assert result.timings["get_tuple  [postgres]"]["calls"] >= 1
    assert any(stats["flushes"] > 0 for stats in result.flush_latency.values())
    client = redis.Redis.from_url(redis_url)
    try:
        assert next(client.scan_iter(match=f"{result.key_prefix}:*"), None) is None
    finally:
        client.close()
    with psycopg.connect(test_database_url) as conn:
        row = conn.execute("SELECT to_regnamespace(%s)", (result.schema,)).fetchone()
    assert row == (None,)


def test_module_entry_point_exits_zero(redis_url: str, test_database_url: str) -> None:
    env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": test_database_url}
    proc = subprocess.run(
        [sys.executable, "-m", "examples.case_8842"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    first = proc.stdout.splitlines()[0]
    assert first.startswith("servers: Redis ") and "(from $REDIS_URL)" in first and "(from $DATABASE_URL)" in first
    for section in range(1, 10):
        assert f"[{section}] " in proc.stdout


def _footprint(redis_url: str, postgres_url: str) -> dict[str, object]:
    """Everything a run could leave on a server: roles, databases, schemas, and every key."""
    with psycopg.connect(postgres_url) as conn:
        roles = conn.execute("SELECT rolname FROM pg_roles ORDER BY 1").fetchall()
        databases = conn.execute("SELECT datname FROM pg_database ORDER BY 1").fetchall()
        schemas = conn.execute("SELECT nspname FROM pg_namespace ORDER BY 1").fetchall()
    client = redis.Redis.from_url(redis_url)
    try:
        keyspace = client.info("keyspace")
        keys = {
            db: sorted(redis.Redis.from_url(redis_url, db=int(db[2:])).keys("*")) for db in keyspace
        }
    finally:
        client.close()
    return {"roles": roles, "databases": databases, "schemas": schemas, "keys": keys}


def test_the_demo_leaves_a_machines_services_as_it_found_them(
    private_redis: PrivateRedis, private_postgres: PrivatePostgres
) -> None:
    """`make demo` on a machine with its own Redis and Postgres: the same roles, databases,
    schemas and keys afterwards. Private servers stand in for the machine's (nothing else
    writes to them meanwhile), handed over as the machine's are: by URL."""
    seed = redis.Redis.from_url(private_redis.url)
    seed.set("someone-elses-key", "kept")  # the service is not empty, and is not wiped
    seed.close()
    before = _footprint(private_redis.url, private_postgres.url)
    env = {**os.environ, "REDIS_URL": private_redis.url, "DATABASE_URL": private_postgres.url}
    proc = subprocess.run([sys.executable, "-m", "examples.case_8842"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "role case_8842_audit_" in proc.stdout  # it did create (and drop) a role
    assert _footprint(private_redis.url, private_postgres.url) == before
