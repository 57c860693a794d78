"""The case_8842 demo: `python -m examples.case_8842` (or `make demo`).

One support thread, end to end on `TieredSaver`, in eight short sections:

1. start: servers, a fresh Postgres schema and Redis key prefix, `setup()`;
2. a child process runs the graph and is SIGKILLed between BillingAgent and PolicyAgent;
3. a fresh saver resumes from Redis: no billing or account tool runs again;
4. PolicyAgent pauses for a human, and the pause flushes the thread to Postgres;
5. Redis is wiped, the human approves, and the run completes from Postgres alone;
6. the audit trail, as plain SQL connected as an RLS-bound application role (and another tenant
   sees nothing);
7. time travel: replay from the checkpoint before the decision with a denial;
8. per-tier timings of the checkpoint operations and of the flushes.

Everything the demo creates (schema, keys, role) is named after a random run id and removed at
the end; on a shared Redis only this run's keys are ever deleted.

`python -m examples.case_8842.run child ...` is the process that gets killed in section 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import secrets
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata
from langgraph.checkpoint.base import CheckpointTuple as _CheckpointTuple
from langgraph.checkpoint.serde.types import INTERRUPT
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool

from devtools.servers import delete_keys, resolve_servers, servers_line
from langgraph_tiered_saver import TieredSaver
from langgraph_tiered_saver._sansio.io import SyncDriver
from langgraph_tiered_saver.durable.roles import create_app_role_op

from . import audit, tools
from .graph import THREAD_ID, approval, build_graph, initial_input, thread_config

TENANT = "acme"
OTHER_TENANT = "globex"
REPO_ROOT = Path(__file__).resolve().parents[2]
BILLING_AND_ACCOUNT_TOOLS = ("find_duplicate_charges", "check_login_status", "send_password_reset")
CHILD_TIMEOUT = 60.0

Out = Callable[[str], Any]


@dataclass
class DemoResult:
    """What the demo showed, for tests (no text parsing)."""

    schema: str = ""
    key_prefix: str = ""
    child_returncode: int | None = None
    tool_calls_after_resume: dict[str, int] = field(default_factory=dict)
    """The `tool_calls` state channel after the resume from Redis (section 3)."""
    tools_rerun_by_resume: dict[str, int] = field(default_factory=dict)
    """Tool calls the resuming process itself made (billing/account tools must be absent)."""
    resume_read_hits: dict[str, int] = field(default_factory=dict)
    interrupt: dict[str, Any] | None = None
    postgres_rows_before_interrupt: dict[str, int] = field(default_factory=dict)
    postgres_rows_after_interrupt: dict[str, int] = field(default_factory=dict)
    redis_keys_deleted: int = 0
    completion_read_hits: dict[str, int] = field(default_factory=dict)
    final_reply: str = ""
    final_tool_calls: dict[str, int] = field(default_factory=dict)
    audit_rows: list[dict[str, Any]] = field(default_factory=list)
    policy_decisions: list[dict[str, Any]] = field(default_factory=list)
    other_tenant_rows: int | None = None
    audit_skipped: str | None = None
    replay_from: str = ""
    replayed_reply: str = ""
    replayed_tool_calls: dict[str, int] = field(default_factory=dict)
    postgres_rows_final: dict[str, int] = field(default_factory=dict)
    timings: dict[str, dict[str, float]] = field(default_factory=dict)
    flush_latency: dict[str, dict[str, float]] = field(default_factory=dict)


# --------------------------------------------------------------------------- timing


class OpTimings:
    """Wall time of each checkpoint operation, by operation and by the tier that served it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.samples: dict[str, list[float]] = {}

    def add(self, key: str, seconds: float) -> None:
        with self._lock:
            self.samples.setdefault(key, []).append(seconds)

    def summary(self) -> dict[str, dict[str, float]]:
        """{op: {calls, median_ms, p99_ms}}; p99 is nearest-rank, so with few calls it is the max."""
        with self._lock:
            items = {k: sorted(v) for k, v in self.samples.items()}
        return {
            key: {
                "calls": len(vals),
                "median_ms": statistics.median(vals) * 1000,
                "p99_ms": _p99(vals) * 1000,
            }
            for key, vals in sorted(items.items())
        }


def _p99(sorted_vals: Sequence[float]) -> float:
    rank = max(1, -(-99 * len(sorted_vals) // 100))  # ceil(0.99 n)
    return sorted_vals[rank - 1]


class TimedSaver(TieredSaver):
    """`TieredSaver` that times put / put_writes / get_tuple and labels each call by tier.

    put and put_writes are Redis-only by contract, except a put_writes carrying an interrupt,
    which the default flush policy makes durable before the graph returns (a sync flush).
    get_tuple is labelled by where the checkpoint came from (the saver's hit counters).
    """

    def __init__(self, *args: Any, timings: OpTimings | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timings = timings if timings is not None else OpTimings()

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        started = time.perf_counter()
        try:
            return super().put(config, checkpoint, metadata, new_versions)
        finally:
            self.timings.add("put  [redis]", time.perf_counter() - started)

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        sync_flush = self.policy.on_interrupt == "sync" and any(c == INTERRUPT for c, _ in writes)
        started = time.perf_counter()
        try:
            super().put_writes(config, writes, task_id, task_path)
        finally:
            key = "put_writes  [redis + sync flush]" if sync_flush else "put_writes  [redis]"
            self.timings.add(key, time.perf_counter() - started)

    def get_tuple(self, config: RunnableConfig) -> _CheckpointTuple | None:
        pg_before = self.metrics.counter("read_hits_postgres")
        started = time.perf_counter()
        found = super().get_tuple(config)
        seconds = time.perf_counter() - started
        if found is None:
            tier = "miss"
        elif self.metrics.counter("read_hits_postgres") > pg_before:
            tier = "postgres"
        else:
            tier = "redis"
        self.timings.add(f"get_tuple  [{tier}]", seconds)
        return found


# --------------------------------------------------------------------------- helpers


def _saver(
    redis_url: str, postgres_url: str, schema: str, prefix: str, timings: OpTimings | None = None
) -> Any:
    """A fresh saver context (its own clients and pools) on this run's schema and prefix."""
    return TimedSaver.from_conn_string(
        redis_url, postgres_url, key_prefix=prefix, schema=schema, tenant_id=TENANT, timings=timings
    )


def _section(out: Out, number: int, title: str) -> None:
    out("")
    out(f"[{number}] {title}")


def _indent(text: str, pad: str = "      ") -> str:
    return "\n".join((pad + line).rstrip() for line in text.splitlines())


def _counts(values: dict[str, Any]) -> dict[str, int]:
    return dict(sorted((values.get("tool_calls") or {}).items()))


def _fmt_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in counts.items()) or "none"


def _fmt_rows(rows: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in rows.items())


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


@contextmanager
def _tenant_tx(conn: psycopg.Connection[Any], tenant: str) -> Iterator[psycopg.Cursor[Any]]:
    """A transaction whose RLS tenant is `tenant` (set_config(..., true): this transaction only)."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(audit.SET_TENANT, {"tenant_id": tenant})
        yield cur


def _query(cur: psycopg.Cursor[Any], template: str, schema: str) -> list[dict[str, Any]]:
    cur.execute(
        sql.SQL(template).format(schema=sql.Identifier(schema)),  # type: ignore[arg-type]
        {"thread_id": THREAD_ID},
    )
    names = [d.name for d in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def row_counts(postgres_url: str, schema: str, tenant: str = TENANT) -> dict[str, int]:
    """Rows of the thread in each durable table (as the URL's role, tenant set for RLS)."""
    with psycopg.connect(postgres_url, autocommit=True) as conn, _tenant_tx(conn, tenant) as cur:
        (row,) = _query(cur, audit.ROW_COUNTS, schema)
    return {k: int(v) for k, v in row.items()}


def delete_run_keys(redis_url: str, prefix: str) -> int:
    """Delete this run's keys only (SCAN MATCH prefix:*): the server may be shared."""
    return delete_keys(redis_url, f"{prefix}:*")


def _count_run_keys(redis_url: str, prefix: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return sum(1 for _ in client.scan_iter(match=f"{prefix}:*", count=1000))
    finally:
        client.close()


def _redis_hits(saver: TieredSaver) -> dict[str, int]:
    counters = saver.metrics.snapshot()["counters"]
    return {tier: int(counters.get(f"read_hits_{tier}", 0)) for tier in ("redis", "postgres")}


def _flush_stats(saver: TieredSaver) -> dict[str, float]:
    snap = saver.metrics.snapshot()
    lat = snap["latency"].get("flush_seconds")
    counters = snap["counters"]
    return {
        "flushes": float(counters.get("flushes", 0)),
        "checkpoints": float(counters.get("flushed_checkpoints", 0)),
        "writes": float(counters.get("flushed_writes", 0)),
        "values": float(counters.get("flushed_blobs", 0)),
        "p50_ms": lat["p50"] * 1000 if lat else 0.0,
        "p99_ms": lat["p99"] * 1000 if lat else 0.0,
    }


# --------------------------------------------------------------------------- the child


def child_main(args: argparse.Namespace) -> int:
    """Run the graph until the crash point kills this process (section 2)."""
    with _saver(args.redis_url, args.postgres_url, args.schema, args.prefix) as saver:
        graph = build_graph(saver, crash_after=args.crash_after)
        print(f"child pid {os.getpid()}: running {THREAD_ID} with crash_after={args.crash_after!r}")
        for update in graph.stream(initial_input(), thread_config(), stream_mode="updates"):
            for node, values in update.items():
                calls = _fmt_counts(_counts(values or {}))
                print(f"child: {node} finished (tools: {calls})", flush=True)
    print("child: the run finished without crashing", flush=True)
    return 0


def _run_child(
    redis_url: str, postgres_url: str, schema: str, prefix: str
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    cmd = [
        sys.executable, "-m", "examples.case_8842.run", "child",
        "--redis-url", redis_url, "--postgres-url", postgres_url,
        "--schema", schema, "--prefix", prefix, "--crash-after", "billing_agent",
    ]  # fmt: skip
    return subprocess.run(
        cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT
    )


# --------------------------------------------------------------------------- the demo


def run_demo(
    redis_url: str,
    postgres_url: str,
    *,
    out: Out = print,
    redis_is_private: bool = False,
    origin: dict[str, str] | None = None,
) -> DemoResult:
    """Run the whole story on the given servers; everything it creates is removed at the end.

    `redis_is_private=True` (a throwaway server nobody else uses) lets section 5 FLUSHALL;
    otherwise only this run's keys are deleted. `origin` (from `resolve_servers`) is only printed.
    """
    origin = origin or {}
    out("[1] Start: servers, a fresh schema and key prefix, TieredSaver.setup()")
    out(
        f"      Redis    {_mask(redis_url)}  ({_origin(origin.get('redis', 'given'), 'REDIS_URL')})"
    )
    out(f"      Postgres {_mask(postgres_url)}  "
        f"({_origin(origin.get('postgres', 'given'), 'DATABASE_URL')})")  # fmt: skip
    run_id = secrets.token_hex(4)
    schema, prefix = f"case_8842_{run_id}", f"case8842-{run_id}"
    result = DemoResult(schema=schema, key_prefix=prefix)
    timings = OpTimings()
    flush_by_phase: dict[str, dict[str, float]] = {}
    tools.reset_tool_calls()
    try:
        _demo_steps(redis_url, postgres_url, schema, prefix, redis_is_private, out, result,
                    timings, flush_by_phase)  # fmt: skip
    finally:
        _cleanup(redis_url, postgres_url, schema, prefix, out)
    return result


def _demo_steps(
    redis_url: str,
    postgres_url: str,
    schema: str,
    prefix: str,
    redis_is_private: bool,
    out: Out,
    result: DemoResult,
    timings: OpTimings,
    flush_by_phase: dict[str, dict[str, float]],
) -> None:
    config = thread_config()

    # 1 ------------------------------------------------------------------------------------------
    out(f"      Postgres schema {schema}, Redis key prefix {prefix}:*, tenant {TENANT!r}")
    with _saver(redis_url, postgres_url, schema, prefix) as saver:
        saver.setup()
    out(f"      saver.setup(): tables checkpoints, checkpoint_blobs, checkpoint_writes in {schema}")
    with psycopg.connect(postgres_url) as conn:
        name, bypasses = conn.execute(audit.CURRENT_ROLE).fetchone() or ("?", False)
    if bypasses:
        out(f"      note: this URL connects as {name!r}, which bypasses RLS (the saver logs a "
            "warning); section 6 reads as an application role")  # fmt: skip

    # 2 ------------------------------------------------------------------------------------------
    _section(
        out, 2, "Crash mid-run: a child process runs the graph with crash_after='billing_agent'"
    )
    child = _run_child(redis_url, postgres_url, schema, prefix)
    result.child_returncode = child.returncode
    out(_indent(child.stdout.strip()))
    for line in child.stderr.strip().splitlines():
        if line.startswith("case_8842:"):
            out(_indent(line))
    if child.returncode != -9:
        out(_indent(child.stderr.strip()[-2000:]))
        raise RuntimeError(f"the child should die by SIGKILL, it exited with {child.returncode}")
    out("      exit status -9: killed by SIGKILL after Billing/Account finished, before Policy ran")
    result.postgres_rows_before_interrupt = row_counts(postgres_url, schema)

    # 3 + 4 --------------------------------------------------------------------------------------
    _section(out, 3, "Resume from Redis in this process, with a fresh saver")
    tools.reset_tool_calls()
    with _saver(redis_url, postgres_url, schema, prefix, timings) as saver:
        graph = build_graph(saver)
        before = graph.get_state(config)
        out(f"      saved state: next={list(before.next)}, tool_calls: "
            f"{_fmt_counts(_counts(before.values))}")  # fmt: skip
        resumed = graph.invoke(None, config)
        after = graph.get_state(config)
        result.tool_calls_after_resume = _counts(after.values)
        result.tools_rerun_by_resume = dict(tools.TOOL_CALLS)
        result.resume_read_hits = _redis_hits(saver)
        rerun = {t: tools.TOOL_CALLS[t] for t in BILLING_AND_ACCOUNT_TOOLS}
        out(f"      tool_calls after resume: {_fmt_counts(result.tool_calls_after_resume)}")
        out(f"      billing/account tools run by this process: {_fmt_counts(rerun)} (not re-run)")
        hits = result.resume_read_hits
        out(f"      reads served: redis {hits['redis']}, postgres {hits['postgres']}")

        _section(out, 4, "Human approval pause; the interrupt flushes the thread to Postgres")
        interrupts = resumed.get("__interrupt__") or []
        result.interrupt = dict(interrupts[0].value) if interrupts else None
        out(f"      next={list(after.next)}; interrupt payload:")
        out(_indent(json.dumps(result.interrupt, indent=2), "        "))
        result.postgres_rows_after_interrupt = row_counts(postgres_url, schema)
        out(f"      Postgres rows for {THREAD_ID!r} after the crash:  "
            f"{_fmt_rows(result.postgres_rows_before_interrupt)}")  # fmt: skip
        out(f"      ... once invoke() returned at the pause: "
            f"{_fmt_rows(result.postgres_rows_after_interrupt)}")  # fmt: skip
        out(
            "      (flush_policy.on_interrupt='sync'; the crashed child's steps were in the Redis "
            "outbox and went too)"
        )
    flush_by_phase["resume to pause"] = _flush_stats(saver)

    # 5 ------------------------------------------------------------------------------------------
    _section(out, 5, "Redis wiped; approval resumes from Postgres alone")
    if redis_is_private:
        client = redis.Redis.from_url(redis_url)
        try:
            result.redis_keys_deleted = int(client.dbsize())
            client.flushall()
        finally:
            client.close()
        out(f"      FLUSHALL on the throwaway Redis ({result.redis_keys_deleted} keys)")
    else:
        result.redis_keys_deleted = delete_run_keys(redis_url, prefix)
        out(f"      shared Redis: deleted this run's {result.redis_keys_deleted} keys "
            f"(SCAN MATCH {prefix}:*); {_count_run_keys(redis_url, prefix)} left")  # fmt: skip
    tools.reset_tool_calls()
    with _saver(redis_url, postgres_url, schema, prefix, timings) as saver:
        graph = build_graph(saver)
        final = graph.invoke(approval(True, "duplicate confirmed in the ledger"), config)
        result.completion_read_hits = _redis_hits(saver)
        result.final_reply = final["response"]["text"]
        result.final_tool_calls = _counts(final)
    hits = result.completion_read_hits
    out(f"      invoke(Command(resume=approval(True, ...))): reads served by postgres "
        f"{hits['postgres']}, redis {hits['redis']} (re-warmed)")  # fmt: skip
    out(f"      tool_calls: {_fmt_counts(result.final_tool_calls)}")
    out("      final reply:")
    out(_indent(result.final_reply, "        | "))
    flush_by_phase["approval to end"] = _flush_stats(saver)

    # 6 ------------------------------------------------------------------------------------------
    _section(out, 6, "Audit trail in plain SQL (examples/case_8842/audit.py), as an RLS-bound role")
    _audit(postgres_url, schema, out, result)

    # 7 ------------------------------------------------------------------------------------------
    _section(out, 7, "Time travel: replay from the checkpoint before the policy decision")
    tools.reset_tool_calls()
    with _saver(redis_url, postgres_url, schema, prefix, timings) as saver:
        graph = build_graph(saver)
        history = list(graph.get_state_history(config))
        out(f"      history ({len(history)} checkpoints, newest first):")
        for snap in history:
            meta = snap.metadata or {}
            marker = ""
            if snap.next == ("policy_agent",) and not result.replay_from:
                marker = "   <- replay from here"
                result.replay_from = snap.config["configurable"]["checkpoint_id"]
                pre_policy = snap
            line = f"        step {meta.get('step'):>2} {meta.get('source', ''):<6} "
            out(f"{line}next={list(snap.next)!s:<38}{marker}".rstrip())
        if not result.replay_from:
            raise RuntimeError("no checkpoint before policy_agent in the history")
        asked = graph.invoke(None, pre_policy.config)
        again = (asked.get("__interrupt__") or [None])[0]
        out(
            f"      invoke(None, that config): asks again -> {again.value['question'] if again else None}"
        )
        replay = graph.invoke(approval(False, "card issuer already reversed it"), config)
        result.replayed_reply = replay["response"]["text"]
        result.replayed_tool_calls = _counts(replay)
    out("      denied this time; the new branch's reply:")
    out(_indent(result.replayed_reply, "        | "))
    same = "the same" if result.replayed_reply == result.final_reply else "different"
    out(f"      replies are {same}; issue_refund on the branch: "
        f"{result.replayed_tool_calls.get('issue_refund', 0)}")  # fmt: skip
    flush_by_phase["time travel"] = _flush_stats(saver)

    # 8 ------------------------------------------------------------------------------------------
    _section(out, 8, "Timing per tier (this process, sections 3-7)")
    result.timings = timings.summary()
    result.flush_latency = flush_by_phase
    out("      wall time per call as LangGraph made it (its background writer threads included)")
    out(f"      {'operation  [tier]':<36}{'calls':>6}{'median':>11}{'p99':>11}")
    for key, row in result.timings.items():
        out(
            f"      {key:<36}{int(row['calls']):>6}{row['median_ms']:>8.2f} ms{row['p99_ms']:>8.2f} ms"
        )
    out(f"      {'postgres flush (saver.metrics)':<36}{'flushes':>7}{'p50':>10}{'p99':>11}  rows")
    for phase, stats in flush_by_phase.items():
        out(f"      {'  ' + phase:<36}{int(stats['flushes']):>6}{stats['p50_ms']:>8.2f} ms"
            f"{stats['p99_ms']:>8.2f} ms  {int(stats['checkpoints'])} ckpt, "
            f"{int(stats['writes'])} writes, {int(stats['values'])} values")  # fmt: skip
    result.postgres_rows_final = row_counts(postgres_url, schema)
    out(f"      Postgres rows for {THREAD_ID!r} now: {_fmt_rows(result.postgres_rows_final)}")


def _audit(postgres_url: str, schema: str, out: Out, result: DemoResult) -> None:
    role = f"case_8842_audit_{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(18)
    ident = {"schema": sql.Identifier(schema), "role": sql.Identifier(role)}
    try:
        with ConnectionPool(
            postgres_url, min_size=1, max_size=1, kwargs={"autocommit": True}
        ) as pool:
            SyncDriver(None, pool).run(
                create_app_role_op(schema, role, login=True, password=password)
            )
    except psycopg.errors.InsufficientPrivilege as exc:
        result.audit_skipped = f"cannot create roles with this DATABASE_URL: {exc}".strip()
        out(f"      skipped: {result.audit_skipped}")
        return
    out(f"      create_app_role_op: role {role} (LOGIN, NOSUPERUSER, NOBYPASSRLS, random password)")
    try:
        app_url = make_conninfo(postgres_url, user=role, password=password)
        with psycopg.connect(app_url, autocommit=True) as conn:
            (who,) = conn.execute("SELECT current_user").fetchone() or ("?",)
            with _tenant_tx(conn, TENANT) as cur:
                result.audit_rows = _query(cur, audit.AUDIT_TRAIL, schema)
                result.policy_decisions = _query(cur, audit.POLICY_DECISIONS, schema)
            with _tenant_tx(conn, OTHER_TENANT) as cur:
                result.other_tenant_rows = len(_query(cur, audit.AUDIT_TRAIL, schema))
        out(
            f"      connected as {who}; set_config('app.tenant_id', '{TENANT}', true); AUDIT_TRAIL:"
        )
        out(f"        {'at':<12} {'step':>4}  {'node':<25} {'channel':<13} what")
        for row in result.audit_rows:
            at = row["at"].strftime("%H:%M:%S.%f")[:12]
            out(
                f"        {at:<12} {row['step']:>4}  {row['node']:<25} {row['channel']:<13} {row['what']}"
            )
        out(
            "      POLICY_DECISIONS (value ->> 'decision', 'approver', 'note', refund ->> 'refund_id'):"
        )
        for row in result.policy_decisions:
            out(f"        step {row['step']}: {row['decision']} by {row['approver']}, {row['amount']} "
                f"({row['note']}), refund {row['refund_id']}")  # fmt: skip
        out(f"      same query with app.tenant_id = '{OTHER_TENANT}': "
            f"{result.other_tenant_rows} rows (RLS, no WHERE tenant_id)")  # fmt: skip
    except psycopg.OperationalError as exc:
        result.audit_skipped = f"cannot connect as the new role: {exc}".strip()
        out(f"      skipped: {result.audit_skipped}")
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(sql.SQL(audit.REVOKE_APP_ROLE).format(**ident))
            admin.execute(sql.SQL(audit.DROP_APP_ROLE).format(**ident))
        out(f"      role {role} dropped")


def _cleanup(redis_url: str, postgres_url: str, schema: str, prefix: str, out: Out) -> None:
    _section(out, 9, "Clean up")
    try:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        out(f"      dropped schema {schema}")
    finally:
        deleted = delete_run_keys(redis_url, prefix)
        out(f"      deleted {deleted} Redis keys {prefix}:*")


# --------------------------------------------------------------------------- entry points


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m examples.case_8842", description="The case_8842 demo on TieredSaver."
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("demo", help="run the whole demo (the default)")
    child = sub.add_parser("child", help="internal: the process section 2 kills")
    for name in ("--redis-url", "--postgres-url", "--schema", "--prefix"):
        child.add_argument(name, required=True)
    child.add_argument("--crash-after", default="billing_agent")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "child":
        return child_main(args)
    logging.basicConfig(level=logging.WARNING, format="      (log) %(name)s: %(message)s")
    with resolve_servers() as urls:
        print(servers_line(urls, "The demo creates a schema, a role and a key prefix named after a random "
                                 "run id there, and removes them at its end."), flush=True)  # fmt: skip
        private = urls.origin["redis"] == "throwaway"
        run_demo(
            urls.redis_url,
            urls.postgres_url,
            out=lambda line: print(line, flush=True),
            redis_is_private=private,
            origin=urls.origin,
        )
    print("\ndone.", flush=True)
    return 0


def _origin(origin: str, env: str) -> str:
    return {
        "env": f"from ${env}",
        "machine": "the server running on this machine",
        "throwaway": "a throwaway server started for this demo, removed on exit",
        "docker": "a throwaway Docker container, removed on exit",
        "given": "given to run_demo",
    }.get(origin, origin)


def _mask(url: str) -> str:
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)


if __name__ == "__main__":
    sys.exit(main())
