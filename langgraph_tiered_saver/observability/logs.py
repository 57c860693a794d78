"""Structured logs: one JSON object per line, ISO-8601 UTC timestamps, and the fields a call
passes with `extra=` (tenant_id, thread_id, counts) as fields of their own, so a log pipeline
filters on them instead of parsing message text."""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

# attributes every LogRecord has: anything else came from `extra=` and becomes a field
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonLogFormatter(logging.Formatter):
    """`{"ts": "2026-11-25T08:44:16.123Z", "level": ..., "logger": ..., "msg": ..., <extra>}`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def fields(ref: Any) -> dict[str, str]:
    """`extra=` for a log line about one thread (anything with tenant_id and thread_id)."""
    return {"tenant_id": ref.tenant_id, "thread_id": ref.thread_id}


def configure(level: int) -> None:
    """JSON lines on stderr for the package's loggers (the command-line tool and the worker).
    The root logger is left alone, so an embedding application keeps its own setup."""
    package = logging.getLogger("langgraph_tiered_saver")
    for old in [h for h in package.handlers if isinstance(h.formatter, JsonLogFormatter)]:
        package.removeHandler(old)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter())
    package.addHandler(handler)
    package.setLevel(level)
    relay_driver_logs()  # psycopg_pool's connection warnings, as JSON too
    logging.captureWarnings(True)  # Python warnings (deprecations...) as JSON lines, not raw text
    warnings_logger = logging.getLogger("py.warnings")
    for old in [h for h in warnings_logger.handlers if isinstance(h.formatter, JsonLogFormatter)]:
        warnings_logger.removeHandler(old)
    warnings_logger.addHandler(handler)
    warnings_logger.propagate = False


class _Relay(logging.Handler):
    """Re-emits a psycopg / psycopg_pool record through the saver's logger tree, so it has the
    saver's handlers and format (JSON in the worker) instead of reaching stderr raw."""

    def emit(self, record: logging.LogRecord) -> None:
        relayed = logging.makeLogRecord(vars(record))
        relayed.name = f"langgraph_tiered_saver.driver.{record.name}"
        logging.getLogger(relayed.name).handle(relayed)


def relay_driver_logs() -> None:
    """Route the `psycopg` loggers (the pool's "error connecting" warnings among them) through
    `langgraph_tiered_saver.driver.*`. Idempotent; called when the saver builds its pools."""
    driver = logging.getLogger("psycopg")
    if not any(isinstance(h, _Relay) for h in driver.handlers):
        driver.addHandler(_Relay())
        driver.propagate = False
