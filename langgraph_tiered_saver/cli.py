"""Command-line tool: schema setup, application role, inspection, flush, retention, worker.

    python -m langgraph_tiered_saver setup
    python -m langgraph_tiered_saver create-role app_user --password secret
    python -m langgraph_tiered_saver threads --tenant acme
    python -m langgraph_tiered_saver checkpoints case_8842 --tenant acme
    python -m langgraph_tiered_saver flush [--thread ID]
    python -m langgraph_tiered_saver prune --older-than 30d [--tenant acme]
    python -m langgraph_tiered_saver worker [--quiet-seconds 1] [--poll-seconds 0.5] [--workers N]

Servers come from --redis-url / --postgres-url, else REDIS_URL / DATABASE_URL.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import signal
import sys
import threading
from datetime import timedelta
from typing import Any

from psycopg_pool import ConnectionPool

from ._io import SyncDriver
from .durable.migrations import setup_op
from .durable.ops import list_threads_op
from .durable.roles import check_role_op, create_app_role_op
from .errors import ConfigError, TenantRequiredError, TieredSaverError
from .flusher import record_outbox
from .saver import TieredSaver
from .workers import run_workers

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    """`30d`, `12h`, `15m`, `90s`."""
    match = _DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"duration {text!r}: use a number and s, m, h or d (e.g. 30d)")
    return timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="langgraph-tiered-saver", description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"))
    parser.add_argument("--postgres-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--key-prefix", default="lts")
    parser.add_argument("--schema", default="langgraph_tiered")
    parser.add_argument(
        "--tenant", default=None, help="tenant id: required by every command that reads or changes a tenant's data"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    setup = sub.add_parser("setup", help="apply the Postgres migrations")
    setup.add_argument("--partitions", type=int, default=None,
                       help="a new schema: hash-partition the tables by tenant into N partitions")
    role = sub.add_parser("create-role", help="create the application role (NOSUPERUSER NOBYPASSRLS)")
    role.add_argument("name")
    role.add_argument("--password")
    sub.add_parser("threads", help="list a tenant's threads (both tiers)")
    cps = sub.add_parser("checkpoints", help="list a thread's checkpoints, newest first")
    cps.add_argument("thread")
    cps.add_argument("--ns", default=None)
    cps.add_argument("--limit", type=int, default=20)
    flush = sub.add_parser("flush", help="carry the outbox to Postgres now")
    flush.add_argument("--thread")
    prune = sub.add_parser("prune", help="retention: drop old checkpoints from Postgres")
    prune.add_argument("--older-than", type=parse_duration, required=True)
    prune.add_argument("--all-tenants", action="store_true")
    worker = sub.add_parser("worker", help="run the standalone flush worker")
    worker.add_argument("--quiet-seconds", type=float, default=1.0)
    worker.add_argument("--poll-seconds", type=float, default=0.5)
    worker.add_argument("--once", action="store_true", help="flush what is due, then exit")
    worker.add_argument("--workers", type=int, default=1, help="worker threads in this process (workers.py)")
    worker.add_argument("--lease-seconds", type=float, default=30.0,
                        help="membership and per-thread flush lease: a dead worker's work moves after this")
    sub.add_parser("metrics", help="outbox depth and the saver's counters")
    return parser


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line (structured logs for the worker and the commands)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _emit(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=_jsonable))


def _jsonable(obj: Any) -> Any:
    """Result objects print as JSON objects (their fields), anything else as its text."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return str(obj)


POSTGRES_ONLY = ("setup", "create-role")


def run_postgres_only(args: argparse.Namespace) -> int:
    """`setup` and `create-role` touch Postgres alone: no Redis URL needed."""
    if not args.postgres_url:
        raise ConfigError(f"{args.command} works on Postgres: pass --postgres-url or set DATABASE_URL")
    with ConnectionPool(args.postgres_url, min_size=1, max_size=1, kwargs={"autocommit": True}, open=True) as pool:
        driver = SyncDriver(None, pool)
        if args.command == "setup":
            applied = driver.run(setup_op(args.schema, args.partitions))
            role = driver.run(check_role_op())
            _emit({"schema": args.schema, "applied_migrations": applied, "up_to_date": True,
                   "connected_as": role.name, "warning": role.warning()})  # fmt: skip
        else:
            driver.run(create_app_role_op(args.schema, args.name, login=bool(args.password), password=args.password))
            _emit({"role": args.name, "schema": args.schema, "row_level_security": True})
    return 0


def run(args: argparse.Namespace) -> int:
    if args.command in POSTGRES_ONLY:
        return run_postgres_only(args)
    if not args.redis_url:
        raise ConfigError("no Redis URL: pass --redis-url or set REDIS_URL")
    options: dict[str, Any] = {
        "key_prefix": args.key_prefix,
        "schema": args.schema,
        "tenant_id": args.tenant,
        "background_flush": False,
    }
    with TieredSaver.from_conn_string(args.redis_url, args.postgres_url, **options) as saver:
        if args.command == "threads":
            _emit(_threads(saver))
        elif args.command == "checkpoints":
            config: dict[str, Any] = {"configurable": {"thread_id": args.thread}}
            if args.ns is not None:
                config["configurable"]["checkpoint_ns"] = args.ns
            _emit(
                [
                    {
                        "checkpoint_id": t.checkpoint["id"],
                        "ns": t.config["configurable"]["checkpoint_ns"],
                        "ts": t.checkpoint["ts"],
                        "step": t.metadata.get("step"),
                        "source": t.metadata.get("source"),
                        "channels": sorted(t.checkpoint["channel_values"]),
                        "pending_writes": len(t.pending_writes or []),
                    }
                    for t in saver.list(config, limit=args.limit)  # type: ignore[arg-type]
                ]
            )
        elif args.command == "flush":
            config = {"configurable": {"thread_id": args.thread}} if args.thread else None  # type: ignore[assignment]
            results = saver.flush(config)  # type: ignore[arg-type]
            _emit(results)
        elif args.command == "prune":
            _emit(saver.prune_older_than(args.older_than, all_tenants=True) if args.all_tenants else saver.prune_older_than(args.older_than))
        elif args.command == "worker":
            return _worker(saver, args)
        elif args.command == "metrics":
            record_outbox(saver.metrics, saver.run_op(saver.core.flush.outbox_status_op()))
            _emit(saver.metrics.snapshot())
    return 0


def _threads(saver: TieredSaver) -> list[dict[str, Any]]:
    """The tenant's threads from both tiers' indexes (no checkpoint is loaded): whether Redis
    holds it, and what Postgres has of it."""
    tenant = saver._tenant("threads")
    hot = saver.run_op(saver.core.hot.list_threads_op(tenant))  # known: may have expired since
    in_redis = saver.run_op(saver.core.hot.held_op(tenant, hot))
    durable = {i.thread_id: i for i in saver.run_op(list_threads_op(saver.schema, tenant))} if saver.durable else {}
    out = []
    for thread_id in [*hot, *sorted(set(durable) - set(hot))]:
        info = durable.get(thread_id)
        out.append({
            "thread_id": thread_id,
            "in_redis": thread_id in in_redis,
            "postgres_checkpoints": info.checkpoints if info else 0,
            "latest_postgres_checkpoint": info.latest_checkpoint_id if info else None,
            "last_flushed_at": info.last_flushed_at if info else None,
        })
    return out


def _worker(saver: TieredSaver, args: argparse.Namespace) -> int:
    if not saver.durable:
        raise ConfigError("the worker flushes to Postgres: pass --postgres-url or set DATABASE_URL")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    logging.getLogger("langgraph_tiered_saver").info("flush worker started")
    if args.workers < 1 or args.lease_seconds <= 0:
        raise ConfigError("--workers must be at least 1 and --lease-seconds positive")
    flushed = run_workers(
        saver.run_op,
        saver.core.flush,
        saver.metrics,
        prefix=args.key_prefix,
        count=args.workers,
        lease_seconds=args.lease_seconds,
        stop=stop,
        quiet_seconds=args.quiet_seconds,
        poll_seconds=args.poll_seconds,
        once=args.once,
        policy=saver.policy,
    )
    print(f"worker stopped after flushing {flushed} thread(s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter())
    logging.basicConfig(
        level=logging.INFO if args.verbose or args.command == "worker" else logging.WARNING,
        handlers=[handler],
    )
    try:
        return run(args)
    except TenantRequiredError:
        print("error: this command reads or changes one tenant's data: pass --tenant TENANT"
              + (" (or --all-tenants)" if args.command == "prune" else ""), file=sys.stderr)
        return 2
    except TieredSaverError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
