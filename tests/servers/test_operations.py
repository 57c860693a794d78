"""What an SRE runs: the worker's /metrics and /healthz scraped over real HTTP, its summary
line, retention in both tiers, the public thread listing, and the CLI's error paths (exit
codes, one line, no traceback) against real and unreachable servers."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any, TypedDict

import pytest
from langgraph.channels.delta import DeltaChannel
from langgraph.graph import END, START, StateGraph

from devtools.servers import free_port
from langgraph_tiered_saver import ConfigError, TenantRequiredError, __version__
from langgraph_tiered_saver.cli.main import main
from langgraph_tiered_saver.flushing.endpoints import HealthRules, check_health
from langgraph_tiered_saver.flushing.ops import FlushPolicy
from langgraph_tiered_saver.flushing.worker import Worker, WorkerOptions
from langgraph_tiered_saver.observability.health import FlusherHealth
from langgraph_tiered_saver.observability.metrics import Metrics
from tests.graphs import chain_graph
from tests.helpers import QUIET_OFF, pg_rows, wait_for


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_worker_serves_metrics_and_health(saver_context: Callable[..., Any], caplog: pytest.LogCaptureFixture) -> None:
    with saver_context(durable=True, background_flush=False, flush_policy=FlushPolicy(**QUIET_OFF)) as saver:
        saver.setup()
        chain_graph(saver, 2).invoke({"n": 0}, {"configurable": {"thread_id": f"t-{uuid.uuid4().hex[:8]}"}})
        options = WorkerOptions(quiet_seconds=3600, poll_seconds=0.05, http=("127.0.0.1", 0),
                                max_outbox_age=0.5, summary_seconds=0.1)  # fmt: skip
        worker = Worker(saver, options)
        base = f"http://127.0.0.1:{worker.server.port}"  # type: ignore[union-attr]
        stop = threading.Event()
        with caplog.at_level(logging.INFO, logger="langgraph_tiered_saver.worker"):
            runner = threading.Thread(target=worker.run, args=(stop,))
            runner.start()
            try:
                assert wait_for(lambda: get(base + "/healthz")[0] == 200, timeout=5)
                status, body = get(base + "/metrics")
                assert status == 200
                assert "lts_outbox_depth 1.0" in body and "lts_flusher_alive 1.0" in body
                assert 'lts_op_seconds_count{op="put"}' in body  # the saver's own calls, same registry
                # the thread waits (quiet_seconds): past max_outbox_age the worker is unhealthy
                assert wait_for(lambda: get(base + "/healthz")[0] == 503, timeout=5)
                report = json.loads(get(base + "/healthz")[1])
                assert report["status"] == "unhealthy" and "outbox age" in report["reasons"][0]
                assert get(base + "/nothing")[0] == 404
            finally:
                stop.set()
                runner.join(10)
        assert not worker.running
        summaries = [r for r in caplog.records if r.getMessage().startswith("worker summary")]
        assert summaries and summaries[-1].outbox_depth == 1  # type: ignore[attr-defined]


def test_health_fails_when_the_flusher_is_dead_or_stalled() -> None:
    metrics, rules = Metrics(), HealthRules(max_outbox_age=60, stale_after=2)
    metrics.set_gauge("outbox_checked_at", 1000.0)
    metrics.set_gauge("outbox_oldest_seconds", 1.0)
    assert check_health(FlusherHealth(True, None, 0), metrics, rules, now=1001.0).ok
    dead = check_health(FlusherHealth(False, None, 3), metrics, rules, now=1001.0)
    assert (dead.ok, dead.reasons) == (False, ["flusher is not running"])
    stalled = check_health(FlusherHealth(True, None, 0), metrics, rules, now=1010.0)
    assert stalled.reasons == ["flusher stalled: outbox not checked for over 2 s"]


def test_worker_endpoint_errors_are_clear(saver_context: Callable[..., Any]) -> None:
    with saver_context(durable=True) as saver:
        first = Worker(saver, WorkerOptions(http=("127.0.0.1", 0)))
        try:
            with pytest.raises(ConfigError, match=r"cannot serve on 127\.0\.0\.1"):
                Worker(saver, WorkerOptions(http=("127.0.0.1", first.server.port)))  # type: ignore[union-attr]
        finally:
            first.server.close()  # type: ignore[union-attr]


class _Delta(TypedDict, total=False):
    h: Annotated[list[int], DeltaChannel(lambda state, writes: state + [x for w in writes for x in w], snapshot_frequency=3)]


@pytest.mark.parametrize("runs", [2, 4, 6])
def test_prune_keeps_the_same_delta_ancestors_in_both_tiers(saver_context: Callable[..., Any], runs: int) -> None:
    """`prune(keep_latest)` keeps the latest checkpoint and the ancestors its DeltaChannel is
    rebuilt from, by one rule in Redis and Postgres: the state is the same from either tier."""
    with saver_context(durable=True, background_flush=False, flush_policy=FlushPolicy(**QUIET_OFF)) as saver:
        saver.setup()
        builder = StateGraph(_Delta)
        builder.add_node("a", lambda state: {"h": [len(state.get("h", []))]})
        builder.add_edge(START, "a")
        builder.add_edge("a", END)
        graph = builder.compile(checkpointer=saver)
        config = {"configurable": {"thread_id": f"t-{uuid.uuid4().hex[:8]}"}}
        for i in range(runs):
            graph.invoke({"h": [100 + i]}, config)
        saver.flush(config)
        before = graph.get_state(config).values
        saver.prune([config["configurable"]["thread_id"]], strategy="keep_latest")
        in_redis = [c.config["configurable"]["checkpoint_id"] for c in saver.list(config)]
        assert 0 < len(in_redis) < 3 * runs
        saver.run_op(saver.core.hot.delete_thread_op(saver.tenant_id, [config["configurable"]["thread_id"]]))  # Redis wiped
        from_postgres = [c.config["configurable"]["checkpoint_id"] for c in saver.list(config)]
        assert from_postgres == in_redis
        assert graph.get_state(config).values == before


def test_retention_prunes_both_tiers_and_keeps_the_last_n(saver_context: Callable[..., Any], test_database_url: str) -> None:
    with saver_context(durable=True, background_flush=False, flush_policy=FlushPolicy(**QUIET_OFF)) as saver:
        saver.setup()
        config = {"configurable": {"thread_id": f"t-{uuid.uuid4().hex[:8]}"}}
        chain_graph(saver, 4).invoke({"n": 0}, config)  # 6 checkpoints, in Redis only
        seen: list[tuple[int, int]] = []
        report = saver.prune_history(keep_last=2, progress=lambda done, total, *_: seen.append((done, total)))
        assert (report.checkpoints, report.redis_checkpoints, report.kept, seen) == (4, 4, 2, [(1, 1)])
        assert len(list(saver.list(config))) == 2  # Redis pruned too: history no longer lists them
        saver.flush(config)  # the outbox carries only what is left
        assert pg_rows(test_database_url, saver.schema, config["configurable"]["thread_id"]) == 2
        assert saver.get_tuple(config) is not None  # the latest stays
        assert saver.prune_history(older_than=timedelta(days=1)).checkpoints == 0
        with pytest.raises(ConfigError, match="older_than, keep_last or both"):
            saver.prune_history()
        with pytest.raises(ConfigError, match="keep_last must be an int >= 1"):
            saver.prune_history(keep_last=0)


def test_list_threads_is_public_and_filters_by_metadata(saver_context: Callable[..., Any]) -> None:
    with saver_context(durable=True, tenant_id=None) as saver:
        saver.setup()
        acme = saver.for_tenant("acme")
        chain_graph(acme, 1).invoke({"n": 0}, {"configurable": {"thread_id": "a"}})
        chain_graph(acme, 1).invoke({"n": 0}, {"configurable": {"thread_id": "b", "user": "u1"}})
        assert [t.thread_id for t in saver.list_threads("acme")] == ["a", "b"]
        assert [t.thread_id for t in acme.list_threads(filter={"user": "u1"})] == ["b"]
        assert saver.list_threads("other") == []
        with pytest.raises(TenantRequiredError):
            saver.list_threads()


async def test_alist_threads(saver_context: Callable[..., Any]) -> None:
    async with saver_context() as saver:
        await chain_graph(saver, 1).ainvoke({"n": 0}, {"configurable": {"thread_id": "x"}})
        (only,) = await saver.alist_threads()
        assert (only.thread_id, only.in_redis, only.postgres_checkpoints) == ("x", True, 0)


def test_cli_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"langgraph-tiered-saver {__version__}"


def test_cli_errors_have_exit_codes(redis_url: str, test_database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    def fails(code: int, *args: str) -> str:
        capsys.readouterr()
        started = time.monotonic()
        assert main(list(args)) == code
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
        assert time.monotonic() - started < 8
        return err

    assert "expected redis://" in fails(2, "--redis-url", "http://localhost:6379", "--tenant", "a", "threads")
    assert "expected postgresql://" in fails(2, "--postgres-url", "mysql://localhost/x", "setup")
    assert "expected postgresql://" in fails(2, "--redis-url", redis_url, "--postgres-url", "mysql://h/x", "--tenant", "a", "threads")
    dead = free_port()
    fails(3, "--redis-url", f"redis://127.0.0.1:{dead}/0", "--tenant", "a", "threads")
    fails(3, "--postgres-url", f"postgresql://postgres@127.0.0.1:{dead}/test", "setup")
    missing = test_database_url.rsplit("/", 1)[0] + "/no_such_db_" + uuid.uuid4().hex[:6]
    assert "does not exist" in fails(4, "--postgres-url", missing, "setup")
    assert "--tenant TENANT (or --all-tenants)" in fails(2, "--redis-url", redis_url, "--postgres-url", test_database_url, "prune", "--keep-last", "2")
    assert "give an age" in fails(2, "--redis-url", redis_url, "--postgres-url", test_database_url, "--tenant", "a", "prune")
    fails(2, "--redis-url", redis_url, "--postgres-url", test_database_url, "worker", "--retention", "30d", "--once")


def test_cli_worker_once_and_threads_filter(
    saver_context: Callable[..., Any], redis_url: str, test_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with saver_context(durable=True, background_flush=False, flush_policy=FlushPolicy(**QUIET_OFF)) as saver:
        saver.setup()
        thread = f"t-{uuid.uuid4().hex[:8]}"
        chain_graph(saver, 1).invoke({"n": 0}, {"configurable": {"thread_id": thread, "ticket": "8842"}})
        base = ["--redis-url", redis_url, "--postgres-url", test_database_url, "--key-prefix", saver.key_prefix,
                "--schema", saver.schema, "--tenant", saver.tenant_id]  # fmt: skip
        capsys.readouterr()
        assert main([*base, "threads", "--filter", '{"ticket": "8842"}']) == 0
        assert [t["thread_id"] for t in json.loads(capsys.readouterr().out)] == [thread]
        assert main([*base, "threads", "--filter", '{"ticket": "1"}']) == 0
        assert json.loads(capsys.readouterr().out) == []
        assert main([*base, "worker", "--once", "--quiet-seconds", "0", "--retention", "30d"]) == 0
        assert json.loads(capsys.readouterr().out) == {"stopped": True, "flushed_threads": 1}
        assert pg_rows(test_database_url, saver.schema, thread) == 3


def test_worker_retention_sweeps_and_survives_a_failing_sweep(saver_context: Callable[..., Any], caplog: pytest.LogCaptureFixture) -> None:
    with saver_context(durable=True, background_flush=False, flush_policy=FlushPolicy(**QUIET_OFF)) as saver:
        saver.setup()
        config = {"configurable": {"thread_id": f"t-{uuid.uuid4().hex[:8]}"}}
        chain_graph(saver, 3).invoke({"n": 0}, config)
        sweep = WorkerOptions(once=True, quiet_seconds=3600, retention=lambda: saver.prune_history(keep_last=1))
        Worker(saver, sweep).run(threading.Event())
        assert saver.metrics.counter("retention_sweeps") == 1
        assert len(list(saver.list(config))) == 1

        def broken() -> None:
            raise RuntimeError("sweep failed")

        with caplog.at_level(logging.ERROR, logger="langgraph_tiered_saver.worker"):
            Worker(saver, WorkerOptions(once=True, quiet_seconds=3600, retention=broken)).run(threading.Event())
        assert saver.metrics.counter("worker_retention_errors") == 1
        assert any("worker retention failed" in r.getMessage() for r in caplog.records)


def test_cli_prune_reports_progress_on_stderr(
    saver_context: Callable[..., Any], redis_url: str, test_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with saver_context(durable=True, background_flush=False, flush_policy=FlushPolicy(**QUIET_OFF)) as saver:
        saver.setup()
        for i in range(3):
            chain_graph(saver, 1).invoke({"n": 0}, {"configurable": {"thread_id": f"p{i}"}})
        capsys.readouterr()
        assert main(["--redis-url", redis_url, "--postgres-url", test_database_url, "--key-prefix", saver.key_prefix,
                     "--schema", saver.schema, "--tenant", saver.tenant_id, "prune", "--keep-last", "1"]) == 0  # fmt: skip
        captured = capsys.readouterr()
        assert json.loads(captured.out)["checkpoints"] == 3 * 2  # 3 checkpoints per thread, 1 kept
        lines = [json.loads(line) for line in captured.err.splitlines() if line.startswith('{"progress"')]
        assert lines[-1] == {"progress": "prune", "done": 3, "total": 3}


def test_cli_prune_draws_a_bar_on_a_terminal(
    saver_context: Callable[..., Any], redis_url: str, test_database_url: str
) -> None:
    import os
    import pty
    import subprocess
    import sys

    with saver_context(durable=True, background_flush=False, flush_policy=FlushPolicy(**QUIET_OFF)) as saver:
        saver.setup()
        chain_graph(saver, 1).invoke({"n": 0}, {"configurable": {"thread_id": "bar"}})
        controller, terminal = pty.openpty()
        try:
            out = subprocess.run(
                [sys.executable, "-m", "langgraph_tiered_saver", "--redis-url", redis_url, "--postgres-url",
                 test_database_url, "--key-prefix", saver.key_prefix, "--schema", saver.schema, "--tenant",
                 saver.tenant_id, "prune", "--keep-last", "1", "--dry-run"],
                stdout=subprocess.PIPE, stderr=terminal, timeout=60, check=True,
            )  # fmt: skip
            drawn = os.read(controller, 4096).decode()
        finally:
            os.close(controller)
            os.close(terminal)
        assert json.loads(out.stdout)["dry_run"] is True
        assert "\rprune [" + "#" * 30 + "] 1/1" in drawn


def test_cli_worker_serves_http_until_sigterm(
    saver_context: Callable[..., Any], redis_url: str, test_database_url: str
) -> None:
    import signal
    import subprocess
    import sys

    with saver_context(durable=True, background_flush=False, flush_policy=FlushPolicy(**QUIET_OFF)) as saver:
        saver.setup()
        thread = f"t-{uuid.uuid4().hex[:8]}"
        chain_graph(saver, 1).invoke({"n": 0}, {"configurable": {"thread_id": thread}})
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "langgraph_tiered_saver", "--redis-url", redis_url, "--postgres-url",
             test_database_url, "--key-prefix", saver.key_prefix, "--schema", saver.schema, "worker",
             "--quiet-seconds", "0", "--poll-seconds", "0.1", "--http", f"127.0.0.1:{port}", "--summary-seconds", "0.2"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert wait_for(lambda: pg_rows(test_database_url, saver.schema, thread) == 3, timeout=20)
            assert wait_for(lambda: get(f"http://127.0.0.1:{port}/healthz")[0] == 200, timeout=10)
            # counted once the flush returns, after its rows are visible (its acknowledgement between)
            assert wait_for(lambda: "lts_flushes_total 1.0" in get(f"http://127.0.0.1:{port}/metrics")[1], timeout=10)
            assert wait_for(lambda: "lts_outbox_depth 0.0" in get(f"http://127.0.0.1:{port}/metrics")[1], timeout=10)
            time.sleep(0.5)  # at least two periodic summary lines
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert json.loads(out) == {"stopped": True, "flushed_threads": 1}
        logged = [json.loads(line) for line in err.splitlines()]
        summaries = [entry for entry in logged if entry["msg"].startswith("worker summary")]
        assert len(summaries) >= 3 and summaries[-1]["outbox_depth"] == 0, summaries
        assert sum(entry["flushed_checkpoints"] for entry in summaries) == 3
        assert all(entry["ts"].endswith("Z") for entry in logged)


def test_cli_rejects_malformed_options(capsys: pytest.CaptureFixture[str]) -> None:
    for args, message in (
        (["threads", "--filter", "{"], "not JSON"),
        (["threads", "--filter", "[1]"], "must be a JSON object"),
        (["prune", "--keep-last", "0"], "use a whole number >= 1"),
        (["worker", "--http", "localhost"], "use [HOST]:PORT"),
    ):
        with pytest.raises(SystemExit) as exit_:
            main(["--redis-url", "redis://127.0.0.1:1/0", *args])
        assert exit_.value.code == 2
        assert message in capsys.readouterr().err


def test_prune_every_tenant(saver_context: Callable[..., Any]) -> None:
    with saver_context(durable=True, tenant_id=None, background_flush=False, flush_policy=FlushPolicy(**QUIET_OFF)) as saver:
        saver.setup()
        for tenant in ("acme", "globex"):
            view = saver.for_tenant(tenant)
            chain_graph(view, 2).invoke({"n": 0}, {"configurable": {"thread_id": "t"}})
            view.flush({"configurable": {"thread_id": "t"}})
        report = saver.prune_history(keep_last=1, all_tenants=True, dry_run=True)
        assert (report.tenants, report.threads, report.checkpoints) == (["acme", "globex"], 2, 2 * 3)
        with pytest.raises(ConfigError, match="takes no tenant"):
            saver.for_tenant("acme").prune_history(keep_last=1, all_tenants=True)
    with saver_context(tenant_id=None) as redis_only, pytest.raises(ConfigError, match="this saver has none"):
        redis_only.prune_history(keep_last=1, all_tenants=True)


def test_without_optional_packages(tmp_path: Any) -> None:
    """No opentelemetry: calls run untraced; no prometheus_client: /metrics says what to install."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "sys.modules['opentelemetry'] = None\n"
        "sys.modules['prometheus_client'] = None\n"
        "from langgraph_tiered_saver import ConfigError\nfrom langgraph_tiered_saver.observability import telemetry\n"
        "from langgraph_tiered_saver.observability.metrics import Metrics\n"
        "from langgraph_tiered_saver.flushing.endpoints import prometheus_text\n"
        "assert telemetry.otel_trace is None\n"
        "def op():\n"
        "    got = yield telemetry.RedisCall((('PING',),))\n"
        "    return got\n"
        "m = Metrics(); g = telemetry.observed_op(m, 'put', op())\n"
        "g.send(None)\n"
        "try:\n"
        "    g.send('PONG')\n"
        "except StopIteration as stop:\n"
        "    assert stop.value == 'PONG'\n"
        "assert m.snapshot()['series']['op_seconds'][0]['count'] == 1\n"
        "try:\n"
        "    prometheus_text(m, lambda: None)\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pip install 'langgraph-tiered-saver[prometheus]'" in out.stdout


def test_log_lines_carry_tenant_and_thread_as_fields(caplog: pytest.LogCaptureFixture) -> None:
    from langgraph_tiered_saver.flushing.background import RetryBook
    from langgraph_tiered_saver.observability.logs import JsonLogFormatter

    book = RetryBook(FlushPolicy(max_attempts=1), Metrics())
    with caplog.at_level(logging.ERROR, logger="langgraph_tiered_saver.flush"):
        book.failed(("acme", "case 8842"), RuntimeError("trigger said no"), 0.0)
    entry = json.loads(JsonLogFormatter().format(caplog.records[-1]))
    assert (entry["level"], entry["tenant_id"], entry["thread_id"]) == ("ERROR", "acme", "case 8842")
    assert "quarantined" in entry["msg"] and entry["ts"].endswith("Z")
