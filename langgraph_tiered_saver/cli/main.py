"""Command-line tool: schema setup, application role, inspection, flush, retention, worker, import.

    python -m langgraph_tiered_saver setup --partitions 16
    python -m langgraph_tiered_saver create-role app_user --password secret
    python -m langgraph_tiered_saver threads --tenant acme
    python -m langgraph_tiered_saver checkpoints case_8842 --tenant acme
    python -m langgraph_tiered_saver flush --thread case_8842 --tenant acme
    python -m langgraph_tiered_saver prune --tenant acme --older-than 30d --keep-last 5 --dry-run
    python -m langgraph_tiered_saver prune --all-tenants --older-than 30d
    python -m langgraph_tiered_saver worker --http :9464 --retention 30d --workers 4 --all-tenants
    python -m langgraph_tiered_saver migrate-redis  # key schema v1 -> v2, old savers stopped
    python -m langgraph_tiered_saver import-postgres --tenant acme --source-schema public --dry-run

Global options (--redis-url, --postgres-url, --key-prefix, --schema, --tenant, -v) may come
before or after the command.

Servers come from --redis-url / --postgres-url, else REDIS_URL / DATABASE_URL. Output is JSON on
stdout; logs and progress go to stderr. Exit codes: 0 done, 2 bad usage or configuration (a
missing tenant, a malformed URL), 3 a server unreachable, 4 a server refused (authentication,
missing database or schema, a rejected statement).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import re
import signal
import sys
import threading
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg_pool import ConnectionPool

from langgraph_tiered_saver import __version__
from langgraph_tiered_saver._sansio.io import SyncDriver
from langgraph_tiered_saver._sansio.pgfaults import classify_connect_error
from langgraph_tiered_saver.cli import import_postgres as import_cli
from langgraph_tiered_saver.cli.import_postgres import add_import_command
from langgraph_tiered_saver.durable.migrations import setup_op
from langgraph_tiered_saver.durable.roles import check_role_op, create_app_role_op
from langgraph_tiered_saver.errors import (
    ConfigError,
    PostgresAuthError,
    PostgresConfigError,
    PostgresError,
    TenantRequiredError,
    TieredSaverError,
    TierUnavailableError,
)
from langgraph_tiered_saver.flushing.background import record_outbox
from langgraph_tiered_saver.flushing.worker import Worker, WorkerOptions
from langgraph_tiered_saver.observability import logs
from langgraph_tiered_saver.saver import TieredSaver

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta:
    """`30d`, `12h`, `15m`, `90s`."""
    match = _DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"duration {text!r}: use a number and s, m, h or d (e.g. 30d)")
    return timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})


def _global_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The options every command takes. The top-level parser holds the defaults; each
    subcommand accepts them again with no default, so `prune --tenant acme` and
    `--tenant acme prune` mean the same and a value given after the command wins."""

    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument("--redis-url", default=default(os.environ.get("REDIS_URL")),
                        help="Redis URL (default: $REDIS_URL)")
    parser.add_argument("--postgres-url", default=default(os.environ.get("DATABASE_URL")),
                        help="Postgres URL (default: $DATABASE_URL)")
    parser.add_argument("--key-prefix", default=default("lts"), help="first part of every Redis key (default: lts)")
    parser.add_argument("--schema", default=default("langgraph_tiered"),
                        help="Postgres schema of the durable tables (default: langgraph_tiered)")
    parser.add_argument(
        "--tenant", default=default(None),
        help="tenant id: required by every command that reads or changes a tenant's data",
    )
    parser.add_argument("-v", "--verbose", action="store_true", default=default(False), help="log at INFO")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="langgraph-tiered-saver", description=__doc__.split("\n\n")[0],
        epilog="Global options may come before or after the command.",
    )  # fmt: skip
    parser.add_argument("--version", action="version", version=f"langgraph-tiered-saver {__version__}")
    _global_options(parser, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, defaults=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, parents=[common])

    setup = command("setup", "apply the Postgres migrations (Postgres only)")
    setup.add_argument("--partitions", type=int, default=None,
                       help="a new schema: hash-partition the tables by tenant into N partitions")
    role = command("create-role", "create the application role (NOSUPERUSER NOBYPASSRLS; Postgres only)")
    role.add_argument("name")
    role.add_argument("--password")
    threads = command("threads", "list a tenant's threads (both tiers)")
    threads.add_argument("--filter", type=_json_object, help='metadata filter as JSON, e.g. {"source": "input"}')
    cps = command("checkpoints", "list a thread's checkpoints, newest first")
    cps.add_argument("thread")
    cps.add_argument("--ns", default=None)
    cps.add_argument("--limit", type=int, default=20)
    flush = command("flush", "carry the outbox to Postgres now")
    flush.add_argument("--thread")
    prune = command("prune", "retention: drop old checkpoints from Redis and Postgres")
    _retention_args(prune, "--older-than", "--keep-last")
    prune.add_argument("--dry-run", action="store_true", help="report what would go, per tier; delete nothing")
    prune.add_argument("--all-tenants", action="store_true", help="every tenant Postgres knows (a BYPASSRLS role)")
    worker = command("worker", "run the standalone flush worker")
    worker.add_argument("--quiet-seconds", type=float, default=1.0)
    worker.add_argument("--poll-seconds", type=float, default=0.5)
    worker.add_argument("--once", action="store_true", help="flush what is due, then exit")
    worker.add_argument("--workers", type=int, default=1, help="flush loops in this process, sharing the work")
    worker.add_argument("--lease-seconds", type=float, default=30.0,
                        help="membership and per-thread flush lease: a dead worker's work moves after this")
    worker.add_argument("--http", type=_host_port, help="serve /metrics and /healthz on [HOST]:PORT")
    worker.add_argument("--max-outbox-age", type=float, default=300.0, help="/healthz fails past this many seconds")
    worker.add_argument("--summary-seconds", type=float, default=60.0, help="one summary log line this often")
    _retention_args(worker, "--retention", "--retention-keep-last")
    worker.add_argument("--retention-every", type=parse_duration, default=timedelta(hours=1))
    worker.add_argument("--all-tenants", action="store_true", help="retention for every tenant")
    erase = command("delete-tenant", "erase the --tenant from every tier (irreversible)")
    erase.add_argument("--yes", action="store_true", help="confirm: the tenant's data cannot be recovered")
    command("metrics", "outbox depth and the saver's counters")
    command("migrate-redis", "move Redis keys of schema v1 to v2 (stop the old savers first)")
    add_import_command(command("import-postgres", "copy threads from PostgresSaver's tables into the durable tier"))
    return parser


def _retention_args(parser: argparse.ArgumentParser, older: str, keep: str) -> None:
    parser.add_argument(older, type=parse_duration, help="drop checkpoints older than this (30d, 12h)")
    parser.add_argument(keep, type=_positive_int, help="keep the N newest of each thread's namespace")


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: use a whole number >= 1")
    return int(text)


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("the filter must be a JSON object")
    return value


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: use [HOST]:PORT, e.g. :9464 or 0.0.0.0:9464")
    return host or "127.0.0.1", int(port)


def _emit(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=_jsonable))


def _jsonable(obj: Any) -> Any:
    """Result objects print as JSON objects (their fields), times as ISO-8601, else text."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, dt.datetime):
        return obj.isoformat()
    return str(obj)


EXIT_USAGE, EXIT_UNREACHABLE, EXIT_REFUSED = 2, 3, 4
POSTGRES_ONLY = ("setup", "create-role")
_SCHEMES = {
    "redis": ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster"), "postgres": ("postgresql", "postgres"),
}  # fmt: skip


def check_url(kind: str, url: str) -> str:
    """A URL of the right scheme, or a one-line ConfigError (before any connection attempt)."""
    scheme = urlsplit(url).scheme
    if scheme not in _SCHEMES[kind]:
        allowed = ", ".join(f"{s}://" for s in _SCHEMES[kind])
        shown = url.split("@")[-1] if "@" in url else url  # no password in the message
        raise ConfigError(f"--{kind}-url {shown!r}: expected {allowed}")
    return url


def run_postgres_only(args: argparse.Namespace) -> int:
    """`setup` and `create-role` touch Postgres alone: no Redis URL needed."""
    if not args.postgres_url:
        raise ConfigError(f"{args.command} works on Postgres: pass --postgres-url or set DATABASE_URL")
    url = check_url("postgres", args.postgres_url)
    try:  # one direct attempt first: a clear reason now instead of a pool's timeout
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.Error as exc:
        raise classify_connect_error(exc) from exc
    with ConnectionPool(url, min_size=1, max_size=1, kwargs={"autocommit": True}, open=True) as pool:
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
    redis_url = check_url("redis", args.redis_url)
    if args.command == "migrate-redis":
        return _migrate_redis(redis_url, args.key_prefix)
    postgres_url = check_url("postgres", args.postgres_url) if args.postgres_url else None
    options: dict[str, Any] = {
        "key_prefix": args.key_prefix,
        "schema": args.schema,
        "tenant_id": None if args.command == "import-postgres" else args.tenant,
        "background_flush": False,
    }
    with TieredSaver.from_conn_string(redis_url, postgres_url, **options) as saver:
        if args.command == "threads":
            _emit(saver.list_threads(filter=args.filter))
        elif args.command == "checkpoints":
            _emit(_checkpoints(saver, args))
        elif args.command == "flush":
            config = {"configurable": {"thread_id": args.thread}} if args.thread else None
            _emit(saver.flush(config))  # type: ignore[arg-type]
        elif args.command == "prune":
            report = _prune(saver, args, args.older_than, args.keep_last, dry_run=args.dry_run, progress=_progress())
            _emit({"summary": prune_summary(report), **dataclasses.asdict(report)})
        elif args.command == "import-postgres":
            _emit(_import(saver, args, postgres_url))
        elif args.command == "worker":
            return _worker(saver, args)
        elif args.command == "delete-tenant":
            if args.tenant is None:
                raise TenantRequiredError("delete-tenant")
            if not args.yes:
                raise ConfigError(f"delete-tenant erases tenant {args.tenant!r} from Redis, Postgres and the "
                                  "blob store for good: add --yes to confirm")  # fmt: skip
            _emit(saver.delete_tenant(args.tenant))
        elif args.command == "metrics":
            record_outbox(saver.metrics, saver.run_op(saver.core.flush.outbox_status_op()))
            _emit(saver.metrics.snapshot())
    return 0


def _migrate_redis(redis_url: str, prefix: str) -> int:
    """Schema v1 never ran on a cluster: the keys to move live on one server."""
    import redis

    from langgraph_tiered_saver.hot.upgrade import migrate_v1

    client = redis.Redis.from_url(redis_url)
    try:
        try:
            counts = migrate_v1(client, prefix)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise TierUnavailableError("redis", str(exc)) from exc
    finally:
        client.close()
    _emit({"key_prefix": prefix, "schema": "v2", **counts})
    return 0


def _checkpoints(saver: TieredSaver, args: argparse.Namespace) -> list[dict[str, Any]]:
    config: dict[str, Any] = {"configurable": {"thread_id": args.thread}}
    if args.ns is not None:
        config["configurable"]["checkpoint_ns"] = args.ns
    return [
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


def _prune(saver: TieredSaver, args: argparse.Namespace, older_than: Any, keep_last: Any, **how: Any) -> Any:
    if older_than is None and keep_last is None:
        raise ConfigError(f"{args.command}: give an age (e.g. 30d), a number to keep, or both")
    return saver.prune_history(older_than=older_than, keep_last=keep_last, all_tenants=args.all_tenants, **how)


def prune_summary(report: Any) -> str:
    """The prune report in words: what goes (or would go) from each tier, and what stays."""
    verb = "would remove" if report.dry_run else "removed"
    tenants = ", ".join(report.tenants) or "no tenant"
    text = (
        f"{'dry run: ' if report.dry_run else ''}{verb} {report.checkpoints} checkpoint(s) from "
        f"{report.threads_pruned} of {report.threads} thread(s) of {tenants}: "
        f"{report.redis_checkpoints} from Redis, {report.postgres_checkpoints} from Postgres "
        f"(one held in both counts in each; with {report.postgres_writes} pending write(s)); {report.kept} checkpoint(s) kept "
        "(each namespace's latest, paused runs, and the ancestors kept ones need)"
    )
    return text + (". Nothing was deleted." if report.dry_run else ".")


def _import(saver: TieredSaver, args: argparse.Namespace, postgres_url: str | None) -> Any:
    from langgraph_tiered_saver.importer import import_postgres_saver

    source = args.source_url or postgres_url
    if not source:
        raise ConfigError("import-postgres reads PostgresSaver's tables: pass --source-url or --postgres-url")
    return import_postgres_saver(
        saver, check_url("postgres", source), source_schema=args.source_schema, tenant=args.tenant,
        tenant_map=import_cli.load_tenant_map(args.tenant_map), threads=args.threads, after=args.after,
        dry_run=args.dry_run, progress=import_cli.progress(),
    )  # fmt: skip


def _progress() -> Any:
    """Progress on stderr: a bar on a terminal, a line every 5 % otherwise."""
    tty = sys.stderr.isatty()

    def show(done: int, total: int, tenant: str, thread: str) -> None:
        if tty:
            filled = int(30 * done / total)
            print(f"\rprune [{'#' * filled}{'.' * (30 - filled)}] {done}/{total}", end="\n" if done == total else "",
                  file=sys.stderr, flush=True)  # fmt: skip
        elif done == total or done % max(1, total // 20) == 0:
            print(json.dumps({"progress": "prune", "done": done, "total": total}), file=sys.stderr, flush=True)

    return show


def _worker(saver: TieredSaver, args: argparse.Namespace) -> int:
    if not saver.durable:
        raise ConfigError("the worker flushes to Postgres: pass --postgres-url or set DATABASE_URL")
    retention = None
    if args.retention is not None or args.retention_keep_last is not None:
        if not args.all_tenants and args.tenant is None:  # fail now, not at the first sweep
            raise TenantRequiredError("worker --retention")
        retention = lambda: _prune(saver, args, args.retention, args.retention_keep_last)  # noqa: E731
    options = WorkerOptions(
        quiet_seconds=args.quiet_seconds, poll_seconds=args.poll_seconds, once=args.once, http=args.http,
        max_outbox_age=args.max_outbox_age, summary_seconds=args.summary_seconds, retention=retention,
        retention_every=args.retention_every.total_seconds(), workers=args.workers, lease_seconds=args.lease_seconds,
    )  # fmt: skip
    worker = Worker(saver, options)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    flushed = worker.run(stop)
    _emit({"stopped": True, "flushed_threads": flushed})
    return 0


def exit_code(exc: TieredSaverError) -> int:
    if isinstance(exc, (PostgresAuthError, PostgresConfigError, PostgresError)):
        return EXIT_REFUSED
    if isinstance(exc, TierUnavailableError):
        return EXIT_UNREACHABLE
    return EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(logging_level(args))
    try:
        return run(args)
    except TenantRequiredError:
        print("error: this command reads or changes one tenant's data: pass --tenant TENANT"
              + (" (or --all-tenants)" if args.command in ("prune", "worker") else ""), file=sys.stderr)
        return EXIT_USAGE
    except TieredSaverError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return exit_code(exc)


def logging_level(args: argparse.Namespace) -> int:
    return 20 if args.verbose or args.command == "worker" else 30  # INFO, WARNING


if __name__ == "__main__":
    sys.exit(main())
