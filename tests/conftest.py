"""Shared fixtures: real servers (env, machine, or throwaway) and per-test isolation.

Tests share the resolved Redis and Postgres, so each test gets its own Redis key prefix and
the session its own database; nothing here flushes or drops anything it did not create.
Fault tests that kill or reconfigure a server use `private_redis` / `private_postgres`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
import redis

from devtools.servers import (
    PrivatePostgres,
    PrivateRedis,
    ServerURLs,
    create_database,
    drop_database,
    resolve_servers,
)

logger = logging.getLogger(__name__)

# The saver fixtures live in their own module; registered here rather than star-imported.
pytest_plugins = ["tests._saver_fixtures"]


@pytest.fixture(scope="session")
def server_urls() -> Iterator[ServerURLs]:
    with resolve_servers() as urls:
        yield urls


@pytest.fixture(scope="session")
def redis_url(server_urls: ServerURLs) -> str:
    return server_urls.redis_url


@pytest.fixture(scope="session")
def postgres_url(server_urls: ServerURLs) -> str:
    return server_urls.postgres_url


@pytest.fixture(scope="session")
def test_database_url(postgres_url: str) -> Iterator[str]:
    """A fresh database for this session, dropped at the end (falls back to the given one
    when the role may not create databases, as with a restricted `DATABASE_URL`)."""
    name = f"lts_test_{uuid.uuid4().hex[:12]}"
    try:
        url = create_database(postgres_url, name)
    except psycopg.errors.InsufficientPrivilege:
        logger.warning("cannot CREATE DATABASE on the given server; using it as is")
        yield postgres_url
        return
    try:
        yield url
    finally:
        drop_database(postgres_url, name)


def delete_keys(url: str, prefix: str) -> int:
    """Delete the keys starting with `prefix` (SCAN, never FLUSHALL: the server is shared)."""
    client = redis.Redis.from_url(url)
    deleted = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(client.delete(*batch))
                batch.clear()
        if batch:
            deleted += int(client.delete(*batch))
    finally:
        client.close()
    return deleted


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """A Redis key prefix unique to this test; its keys are deleted afterwards."""
    prefix = f"ltstest-{uuid.uuid4().hex[:8]}"
    yield prefix
    delete_keys(redis_url, prefix)


@pytest.fixture
def make_private_redis() -> Iterator[Callable[..., PrivateRedis]]:
    """Factory: `make_private_redis("--appendonly", "yes")` starts a server owned by the test."""
    started: list[PrivateRedis] = []

    def make(*args: str) -> PrivateRedis:
        server = PrivateRedis(args)
        started.append(server)
        return server.start()

    yield make
    for server in reversed(started):
        server.close()


@pytest.fixture
def make_private_postgres() -> Iterator[Callable[..., PrivatePostgres]]:
    """Factory: `make_private_postgres(max_connections="20")` starts a cluster for the test."""
    started: list[PrivatePostgres] = []

    def make(**settings: str) -> PrivatePostgres:
        server = PrivatePostgres(settings=settings)
        started.append(server)
        return server.start()

    yield make
    for server in reversed(started):
        server.close()


@pytest.fixture
def private_redis(make_private_redis: Callable[..., PrivateRedis]) -> PrivateRedis:
    """A started default redis-server that this test may kill or restart."""
    return make_private_redis()


@pytest.fixture
def private_postgres(make_private_postgres: Callable[..., PrivatePostgres]) -> PrivatePostgres:
    """A started default Postgres cluster that this test may kill or restart."""
    return make_private_postgres()

