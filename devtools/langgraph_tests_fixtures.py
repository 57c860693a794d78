"""Checkpointer fixtures that make TieredSaver the `sync_checkpointer` / `async_checkpointer` of
LangGraph's own test directory (loaded by path from the conftest.py that
`devtools/langgraph_tests.py` extracts; self-contained: LangGraph's `tests` package shadows ours).

Redis + Postgres (the full product, background flusher on), one throwaway database and schema
per session, and per test its own tenant and key prefix: LangGraph's tests reuse thread ids
("1") across tests, and row-level security keeps one test's Postgres rows from another's.
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
def lts_database() -> Iterator[tuple[str, str]]:
    """(database url, schema): created, migrated once, dropped at the end."""
    name = f"lts_lgtests_{secrets.token_hex(5)}"
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = DATABASE_URL.rsplit("/", 1)[0] + "/" + name
    schema = "lts_lgtests"
    try:
        with TieredSaver.from_conn_string(REDIS_URL, url, schema=schema, tenant_id="setup", key_prefix=f"ltslg-{name}") as saver:
            saver.setup()
        yield url, schema
    finally:
        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _options(schema: str) -> dict[str, str]:
    token = secrets.token_hex(6)  # not uuid4: tests mock it for deterministic ids
    return {"schema": schema, "tenant_id": f"lg-{token}", "key_prefix": f"ltslg-{token}"}


def _delete_keys(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for i in range(0, len(keys), 500):
            client.unlink(*keys[i : i + 500])
    finally:
        client.close()


@pytest.fixture(params=[PARAM])
def sync_checkpointer(lts_database: tuple[str, str]) -> Iterator[TieredSaver]:
    url, schema = lts_database
    options = _options(schema)
    try:
        with TieredSaver.from_conn_string(REDIS_URL, url, **options) as saver:
            yield saver
    finally:
        _delete_keys(options["key_prefix"])


@pytest.fixture(params=[PARAM])
async def async_checkpointer(lts_database: tuple[str, str]) -> AsyncIterator[TieredSaver]:
    url, schema = lts_database
    options = _options(schema)
    try:
        async with TieredSaver.from_conn_string(REDIS_URL, url, **options) as saver:
            yield saver
    finally:
        _delete_keys(options["key_prefix"])
