"""Server URLs checked before any connection attempt, by the library as by the command line: a
malformed one is a one-line `ConfigError` naming what was expected (never a client library's
raw ValueError, e.g. redis-py's for "localhost:6379"), and no message shows a password."""

from __future__ import annotations

from urllib.parse import urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict

from langgraph_tiered_saver.errors import ConfigError

REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
POSTGRES_SCHEMES = ("postgresql", "postgres")


def shown(url: str) -> str:
    """`url` without its credentials, for messages and logs."""
    if "://" not in url and "password" in url:  # a key=value conninfo
        try:
            return " ".join(f"{k}={'***' if k == 'password' else v}" for k, v in conninfo_to_dict(url).items())
        except psycopg.ProgrammingError:
            return "<conninfo not shown: it names a password>"
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        user_info, host = rest.rsplit("@", 1)
        return f"{scheme}://{user_info.split(':', 1)[0]}:***@{host}" if ":" in user_info else f"{scheme}://{user_info}@{host}"
    return url


def check_redis_url(url: str, name: str = "redis_url") -> str:
    if not isinstance(url, str) or urlsplit(url).scheme not in REDIS_SCHEMES:
        allowed = ", ".join(f"{s}://" for s in REDIS_SCHEMES)
        raise ConfigError(f"{name} {shown(str(url))!r}: expected a URL starting with {allowed} (e.g. redis://localhost:6379/0)")
    return url


def check_postgres_url(url: str, name: str = "postgres_url") -> str:
    """A postgres:// URL, or a libpq key=value conninfo string (as psycopg accepts)."""
    if not isinstance(url, str):
        raise ConfigError(f"{name} must be a string, not {type(url).__name__}")
    scheme = urlsplit(url).scheme
    if "://" in url and scheme not in POSTGRES_SCHEMES:
        raise ConfigError(f"{name} {shown(url)!r}: expected postgresql:// or postgres:// (or a key=value conninfo)")
    try:
        conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"{name} {shown(url)!r} is not a valid Postgres URL or conninfo: {str(exc).strip()}") from None
    return url
