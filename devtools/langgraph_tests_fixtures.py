"""Checkpointer fixtures that make TieredSaver the `sync_checkpointer` / `async_checkpointer` of
LangGraph's own test directory (loaded by path from the conftest.py that
`devtools/langgraph_tests.py` extracts; self-contained: LangGraph's `tests` package shadows ours).

Redis + Postgres (the full product, background flusher on), one throwaway database and schema
per session fed by one hot tier (one key prefix: a schema takes one), and per test its own
tenant: LangGraph's tests reuse thread ids ("1") across tests; a tenant's Redis keys and, under
row-level security, its Postgres rows are its own.
`REDIS_URL` / `DATABASE_URL` name the servers (default: the machine's own)."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
import redis

from langgraph_tiered_saver import TieredSaver

PARAM = "tiered"
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def lts_database() -> Iterator[tuple[str, str, str]]:
    """(database url, schema, key prefix): created, migrated once, dropped at the end."""
    name = f"lts_lgtests_{secrets.token_hex(5)}"
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = DATABASE_URL.rsplit("/", 1)[0] + "/" + name
    schema, prefix = "lts_lgtests", f"ltslg-{name}"
    try:
        with TieredSaver.from_conn_string(REDIS_URL, url, schema=schema, tenant_id="setup", key_prefix=prefix) as saver:
            saver.setup()
        yield url, schema, prefix
    finally:
        _delete_keys(f"{prefix}:*")
        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _options(schema: str, prefix: str) -> dict[str, str]:
    token = secrets.token_hex(6)  # not uuid4: tests mock it for deterministic ids
    return {"schema": schema, "tenant_id": f"lg-{token}", "key_prefix": prefix}


def _delete_keys(pattern: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=pattern, count=1000))
        for i in range(0, len(keys), 500):
            client.unlink(*keys[i : i + 500])
    finally:
        client.close()


def _tenant_keys(options: dict[str, str]) -> str:
    """The pattern of a test's own Redis keys: its tenant's (keys name `tenant|thread`)."""
    return f"{options['key_prefix']}:*{options['tenant_id']}*"


@pytest.fixture(params=[PARAM])
def sync_checkpointer(lts_database: tuple[str, str, str]) -> Iterator[TieredSaver]:
    url, schema, prefix = lts_database
    options = _options(schema, prefix)
    try:
        with TieredSaver.from_conn_string(REDIS_URL, url, **options) as saver:
            yield saver
    finally:
        _delete_keys(_tenant_keys(options))


@pytest.fixture(params=[PARAM])
async def async_checkpointer(lts_database: tuple[str, str, str]) -> AsyncIterator[TieredSaver]:
    url, schema, prefix = lts_database
    options = _options(schema, prefix)
    try:
        async with TieredSaver.from_conn_string(REDIS_URL, url, **options) as saver:
            yield saver
    finally:
        _delete_keys(_tenant_keys(options))
