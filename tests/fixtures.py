"""Every shared fixture: real servers (env, machine, or throwaway), per-test isolation, savers,
the S3 test server and the Postgres blob store.

Tests share the resolved Redis and Postgres, so each test gets its own Redis key prefix and
the session its own database; nothing here flushes or drops anything it did not create.
Fault tests that kill or reconfigure a server use `private_redis` / `private_postgres`.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
import pytest
import redis
from psycopg_pool import ConnectionPool

from devtools.servers import (
    PrivatePostgres,
    PrivateRedis,
    PrivateRedisCluster,
    ServerUnavailable,
    ServerURLs,
    create_database,
    delete_keys,
    drop_database,
    free_port,
    resolve_servers,
)
from langgraph_tiered_saver import TieredSaver
from langgraph_tiered_saver._sansio.io import Op, PgCall, PgStatement, SyncDriver
from langgraph_tiered_saver.blobs import PgBlobStore
from langgraph_tiered_saver.durable.migrations import setup_op
from tests.helpers import RUN_PREFIX, TEST_TENANT, new_prefix

logger = logging.getLogger(__name__)
Server = TypeVar("Server", PrivateRedis, PrivatePostgres)



# The Redis servers this session used (conftest's session-end check sweeps them).
SESSION_REDIS_URLS: list[str] = []


@pytest.fixture(scope="session")
def server_urls() -> Iterator[ServerURLs]:
    with resolve_servers() as urls:
        SESSION_REDIS_URLS.append(urls.redis_url)
        try:
            yield urls
        finally:
            leftovers.update(sweep_run_keys(urls.redis_url))


leftovers: dict[str, int] = {}  # prefix -> keys this run left behind (swept; reported at the end)


def sweep_run_keys(url: str) -> dict[str, int]:
    """Delete every key of this run's prefixes (helpers.RUN_PREFIX) on `url`; returns, per
    prefix, how many there were (none is the goal: each test cleans up after itself)."""
    found: dict[str, int] = {}
    client = redis.Redis.from_url(url)
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{RUN_PREFIX}*", count=1000):
            prefix = key.decode(errors="replace").split(":", 1)[0]
            found[prefix] = found.get(prefix, 0) + 1
            batch.append(key)
            if len(batch) >= 500:
                client.unlink(*batch)
                batch = []
        if batch:
            client.unlink(*batch)
    except redis.RedisError as exc:  # the server went away: nothing to sweep there
        logger.warning("could not sweep %s for this run's keys: %s", url, exc)
    finally:
        client.close()
    return found


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


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """A Redis key prefix unique to this test; its keys are deleted afterwards."""
    prefix = new_prefix()
    yield prefix
    delete_keys(redis_url, f"{prefix}*")


@contextmanager
def _servers(build: Callable[..., Server]) -> Iterator[Callable[..., Server]]:
    """A factory of started servers, all stopped (by PID) when the test ends."""
    started: list[Server] = []

    def make(*args: Any, **kwargs: Any) -> Server:
        server = build(*args, **kwargs)
        started.append(server)
        return server.start()

    try:
        yield make
    finally:
        for server in reversed(started):
            server.close()


@pytest.fixture
def make_private_redis() -> Iterator[Callable[..., PrivateRedis]]:
    """Factory: `make_private_redis("--appendonly", "yes")` starts a server owned by the test
    (`binary=` another server, e.g. valkey-server)."""
    with _servers(lambda *args, binary=None: PrivateRedis(args, binary=binary)) as make:
        yield make


@pytest.fixture
def make_private_postgres() -> Iterator[Callable[..., PrivatePostgres]]:
    """Factory: `make_private_postgres(max_connections="20")` starts a cluster for the test."""
    with _servers(lambda **settings: PrivatePostgres(settings=settings)) as make:
        yield make


@pytest.fixture
def private_redis(make_private_redis: Callable[..., PrivateRedis]) -> PrivateRedis:
    """A started default redis-server that this test may kill or restart."""
    return make_private_redis()


@pytest.fixture
def private_postgres(make_private_postgres: Callable[..., PrivatePostgres]) -> PrivatePostgres:
    """A started default Postgres cluster that this test may kill or restart."""
    return make_private_postgres()



# --------------------------------------------------------------------------- savers


@pytest.fixture
def saver_context(redis_url: str, test_database_url: str) -> Iterator[Callable[..., Any]]:
    """Factory of `from_conn_string` contexts, each on its own key prefix and (with
    `durable=True`) its own Postgres schema, cleaned afterwards. Call `setup()` yourself.
    Savers are bound to tenant `TEST_TENANT` unless the test passes `tenant_id` (None: a
    multi-tenant saver whose calls must carry their tenant)."""
    prefixes: list[str] = []
    schemas: list[str] = []

    def make(cls: type[TieredSaver] = TieredSaver, *, durable: bool = False, **options: Any) -> Any:
        prefix = options.pop("key_prefix", None) or new_prefix()
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


# --------------------------------------------------------------------------- S3 (moto)

DUMMY_CREDENTIALS = {
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
    "region_name": "us-east-1",
}


# --------------------------------------------------------------------------- moto server


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False  # exited: most likely lost the race for the port
        try:
            with urllib.request.urlopen(url + "/moto-api/", timeout=1):
                return True
        except OSError:
            time.sleep(0.1)
    return False


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """`http://127.0.0.1:<port>` of a moto S3 server running in a child process."""
    pytest.importorskip("boto3")
    pytest.importorskip("moto.server")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    for _attempt in range(3):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            if _wait_http(url, proc, timeout=30):
                yield url
                return
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    pytest.fail("moto server did not start on loopback")


@pytest.fixture
def s3_client(moto_endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=moto_endpoint, **DUMMY_CREDENTIALS)


@pytest.fixture
def s3_bucket(s3_client: Any) -> Iterator[str]:
    name = f"lts-test-{uuid.uuid4().hex[:16]}"
    s3_client.create_bucket(Bucket=name)
    yield name
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for item in page.get("Contents", ()):
            s3_client.delete_object(Bucket=name, Key=item["Key"])
    s3_client.delete_bucket(Bucket=name)



# --------------------------------------------------------------------------- Postgres blob store

class DrivenStore:
    """A `PgBlobStore` behind the blocking `BlobStore` methods: each call runs its operation on
    a real driver (the saver does the same through its own drivers)."""

    def __init__(self, driver: SyncDriver, store: PgBlobStore) -> None:
        self.driver = driver
        self.ops = store

    def put(self, digest: str, data: bytes) -> None:
        self.driver.run(self.ops.put_op(digest, data))

    def get(self, digest: str) -> bytes:
        data: bytes = self.driver.run(self.ops.get_op(digest))
        return data

    def delete(self, digest: str) -> None:
        self.driver.run(self.ops.delete_op([digest]))

    def exists(self, digest: str) -> bool:
        return bool(self.driver.run(self.ops.exists_op(digest)))

    def list_digests(self) -> Iterator[str]:
        return iter(self.driver.run(self.ops.digests_op()))


def run_sql(driver: SyncDriver, text: str, params: Any = None, fetch: bool = False) -> Any:
    def op() -> Op[Any]:
        (result,) = yield PgCall((PgStatement(text, params, fetch=fetch),))
        return result

    return driver.run(op())


@pytest.fixture
def pg_blob_schema(test_database_url: str) -> Iterator[tuple[SyncDriver, str]]:
    """A driver on the test database (as its owner: RLS does not bind it) and a fresh schema."""
    schema = f"lts_blobs_{uuid.uuid4().hex[:10]}"
    with ConnectionPool(test_database_url, min_size=1, max_size=8, open=True) as pool:
        driver = SyncDriver(None, pool)
        driver.run(setup_op(schema))
        try:
            yield driver, schema
        finally:
            run_sql(driver, f'DROP SCHEMA "{schema}" CASCADE')


def private_cluster_or_skip(masters: int = 3) -> PrivateRedisCluster:
    """A (not yet started) private Redis Cluster, or the test skipped, saying why, where
    redis-server or redis-cli is missing."""
    try:
        return PrivateRedisCluster(masters)
    except ServerUnavailable as exc:
        pytest.skip(f"no Redis Cluster: {exc}")


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[PrivateRedisCluster]:
    """A 3-master Redis Cluster on private ports for the module (stopped by PID at its end);
    skipped, saying why, where redis-server or redis-cli is missing."""
    cluster = private_cluster_or_skip()
    try:
        cluster.start()
    except ServerUnavailable as exc:
        cluster.close()
        pytest.skip(f"no Redis Cluster: {exc}")
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def cluster_saver_context(redis_cluster: PrivateRedisCluster, test_database_url: str) -> Iterator[Callable[..., Any]]:
    """`saver_context` on the private cluster (`redis+cluster://` URL): own key prefix and schema."""
    schemas: list[str] = []

    def make(cls: type[TieredSaver] = TieredSaver, *, durable: bool = False, **options: Any) -> Any:
        options.setdefault("key_prefix", f"ltscl-{uuid.uuid4().hex[:10]}")
        options.setdefault("tenant_id", TEST_TENANT)
        postgres_url = None
        if durable:
            schemas.append(options.setdefault("schema", f"lts_{uuid.uuid4().hex[:10]}"))
            postgres_url = test_database_url
        return cls.from_conn_string(redis_cluster.url, postgres_url, **options)

    yield make
    if schemas:
        with psycopg.connect(test_database_url, autocommit=True) as conn:
            for schema in schemas:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
