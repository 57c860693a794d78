"""`import-postgres`: the command-line face of `import_postgres_saver`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from langgraph_tiered_saver.errors import ConfigError


def add_import_command(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source-url", help="PostgresSaver's database (default: --postgres-url)")
    parser.add_argument("--source-schema", default="public", help="schema of PostgresSaver's tables (default: public)")
    parser.add_argument("--tenant-map", metavar="FILE",
                        help='JSON object thread -> tenant, e.g. {"case_1": "acme"}; other threads are skipped')
    parser.add_argument("--thread", action="append", dest="threads", metavar="ID",
                        help="import only this thread (repeatable)")
    parser.add_argument("--after", metavar="ID", help="go on after this thread id (threads go in id order)")
    parser.add_argument("--dry-run", action="store_true", help="count what would be copied, write nothing")


def load_tenant_map(path: str | None) -> dict[str, str] | None:
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--tenant-map {path}: {exc}") from exc
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ConfigError(f"--tenant-map {path}: expected a JSON object of thread id -> tenant id")
    return value


def progress() -> Any:
    """One JSON line per thread on stderr: where to go on from (`--after`) if stopped."""

    def show(done: int, total: int, thread: str) -> None:
        print(json.dumps({"progress": "import-postgres", "done": done, "total": total, "thread": thread}),
              file=sys.stderr, flush=True)  # fmt: skip

    return show
