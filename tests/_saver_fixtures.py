"""Saver fixtures shared by the test modules (imported by conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import redis

from langgraph_tiered_saver import TieredSaver

TEST_TENANT = "t-test"


@pytest.fixture
def saver_context(redis_url: str, test_database_url: str) -> Iterator[Callable[..., Any]]:
    """Factory of `from_conn_string` contexts, each on its own key prefix and (with
    `durable=True`) its own Postgres schema, cleaned afterwards. Call `setup()` yourself.
    Savers are bound to tenant `TEST_TENANT` unless the test passes `tenant_id` (None: a
    multi-tenant saver whose calls must carry their tenant)."""
    prefixes: list[str] = []
    schemas: list[str] = []

    def make(cls: type[TieredSaver] = TieredSaver, *, durable: bool = False, **options: Any) -> Any:
        prefix = options.pop("key_prefix", None) or f"ltstest-{uuid.uuid4().hex[:10]}"
        options.setdefault("tenant_id", TEST_TENANT)
        prefixes.append(prefix)
        postgres_url = None
        if durable:
            schema = options.setdefault("schema", f"lts_{uuid.uuid4().hex[:10]}")
            schemas.append(schema)
            postgres_url = options.pop("postgres_url", test_database_url)
        return cls.from_conn_string(redis_url, postgres_url, key_prefix=prefix, **options)

    yield make
    client = redis.Redis.from_url(redis_url)
    for prefix in prefixes:
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)
    client.close()
    if schemas:
        with psycopg.connect(test_database_url, autocommit=True) as conn:
            for schema in schemas:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def saver(saver_context: Callable[..., Any]) -> Iterator[TieredSaver]:
    """A Redis-only saver."""
    with saver_context() as s:
        yield s


@pytest.fixture
def durable_saver(saver_context: Callable[..., Any]) -> Iterator[TieredSaver]:
    """A saver with its durable tier on (own schema, migrations applied)."""
    with saver_context(durable=True) as s:
        s.setup()
        yield s
