"""Everyday connection mistakes get their typed error at once and quietly (each took 2.0 s and
printed 4 raw psycopg.pool warnings; PostgresSaver answers in under 10 ms), and URLs are
checked by the library as by the command line."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devtools.servers import PrivatePostgres, delete_keys, free_port
from langgraph_tiered_saver import ConfigError, TieredSaver, TierUnavailableError
from langgraph_tiered_saver.errors import DatabaseMissingError, PostgresAuthError
from tests.helpers import TEST_TENANT, new_prefix, thread_config

pytestmark = pytest.mark.faults
# The savers here wait up to WAIT for a pooled connection: a mistake that is not recognised
# shows as that whole wait; a recognised one fails in milliseconds (FAST leaves room for a
# loaded machine).
WAIT = 10.0
FAST = 3.0


class _Seen(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def seen() -> Iterator[_Seen]:
    """What reaches the root logger (an application's handlers; pytest's caplog also hooks
    loggers that do not propagate, so it cannot tell)."""
    handler = _Seen()
    logging.getLogger().addHandler(handler)
    yield handler
    logging.getLogger().removeHandler(handler)


def _raw_driver_lines(seen: _Seen) -> list[str]:
    return [r.getMessage() for r in seen.records if r.name.startswith("psycopg")]


def _timed(call: Callable[[], Any], error: type[BaseException]) -> float:
    started = time.perf_counter()
    with pytest.raises(error):
        call()
    return time.perf_counter() - started


def _open_and_setup(redis_url: str, url: str) -> None:
    prefix = new_prefix()
    try:
        with TieredSaver.from_conn_string(
            redis_url, url, tenant_id=TEST_TENANT, key_prefix=prefix, pg_timeout=WAIT
        ) as saver:
            saver.setup()
    finally:
        delete_keys(redis_url, f"{prefix}:*")


def test_a_wrong_password_fails_at_once(
    make_private_postgres: Callable[..., PrivatePostgres], redis_url: str, seen: _Seen
) -> None:
    pg = make_private_postgres()
    pg.require_password("lts_pw", "right")
    url = pg.url.replace("postgres@", "lts_pw:wrong@")
    seconds = _timed(lambda: _open_and_setup(redis_url, url), PostgresAuthError)
    print(f"\nwrong password: PostgresAuthError after {seconds * 1000:.1f} ms")
    assert seconds < FAST
    assert _raw_driver_lines(seen) == []


def test_a_missing_database_fails_at_once(postgres_url: str, redis_url: str, seen: _Seen) -> None:
    url = postgres_url.rsplit("/", 1)[0] + f"/no_such_db_{uuid.uuid4().hex[:6]}"
    seconds = _timed(lambda: _open_and_setup(redis_url, url), DatabaseMissingError)
    print(f"\nmissing database: DatabaseMissingError after {seconds * 1000:.1f} ms")
    assert seconds < FAST
    assert _raw_driver_lines(seen) == []


def test_a_refused_connection_fails_at_once_and_the_hot_tier_goes_on(
    redis_url: str, seen: _Seen
) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    prefix = new_prefix()
    try:
        started = time.perf_counter()
        with TieredSaver.from_conn_string(redis_url, url, tenant_id=TEST_TENANT, key_prefix=prefix, pg_timeout=WAIT) as saver:
            seconds = _timed(saver.setup, TierUnavailableError) + (time.perf_counter() - started)
            with pytest.raises(TierUnavailableError):  # a thread Redis does not hold: only Postgres
                saver.get_tuple(thread_config())  # can say it is new, and the breaker says at once
            time.sleep(0.3)  # the pool's background connection attempts have failed by now
    finally:
        delete_keys(redis_url, f"{prefix}:*")
    print(f"\nrefused connection: TierUnavailableError {seconds * 1000:.1f} ms after opening")
    assert seconds < FAST
    assert _raw_driver_lines(seen) == []  # the pool's warnings come through the saver's logger
    assert any(r.name.startswith("langgraph_tiered_saver.driver.psycopg") for r in seen.records)


async def test_a_redis_address_without_scheme_is_a_config_error(postgres_url: str) -> None:
    for call in (
        lambda: TieredSaver.from_conn_string("localhost:6379"),
        lambda: TieredSaver.from_conn_string("redis://localhost:6379", "localhost:5432"),
    ):
        with pytest.raises(ConfigError, match="_url 'localhost:"):
            call()
    with pytest.raises(ConfigError, match="redis://"):
        async with TieredSaver.from_conn_string("localhost:6379"):
            pass
    with pytest.raises(ConfigError) as raised:
        TieredSaver.from_conn_string("redis://localhost:6379", "mysql://user:secret@host/db")
    assert "secret" not in str(raised.value)
