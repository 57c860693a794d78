"""The standalone worker through a Postgres outage, as an operator runs it (`worker --http
--max-outbox-age 8`, without the optional prometheus_client): it says at start-up what it
serves, /healthz reports the outage while it lasts and is healthy again once the backlog has
drained, nothing is quarantined, and every stderr line is JSON."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable

import psycopg
import pytest

from devtools.servers import PrivatePostgres, delete_keys, free_port
from langgraph_tiered_saver import TieredSaver
from langgraph_tiered_saver._core.urls import shown
from langgraph_tiered_saver.flushing.ops import FlushPolicy
from tests.graphs import chain_graph
from tests.helpers import QUIET_OFF, TEST_TENANT, new_prefix, thread_config, wait_for

pytestmark = pytest.mark.faults

OUTAGE = 12.0  # past --max-outbox-age 8, and past the 5 attempts (about 8 s) that used to quarantine
NO_PROMETHEUS = "import sys; sys.modules['prometheus_client'] = None; from langgraph_tiered_saver.cli.main import main; sys.exit(main(sys.argv[1:]))"


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def _latest(url: str, schema: str, thread: str) -> str | None:
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=2) as conn:
            row = conn.execute(f'SELECT max(checkpoint_id) FROM "{schema}".checkpoints WHERE thread_id = %s', (thread,)).fetchone()
    except psycopg.OperationalError:
        return None
    return None if row is None else row[0]


def test_shown_hides_passwords() -> None:
    assert shown("postgresql://app:s3cret@db:5432/x") == "postgresql://app:***@db:5432/x"
    assert "s3cret" not in shown("host=db user=app password=s3cret dbname=x")


def test_the_worker_rides_out_an_outage_and_reports_it(
    make_private_postgres: Callable[..., PrivatePostgres], redis_url: str
) -> None:
    pg = make_private_postgres()
    prefix, schema = new_prefix(), f"lts_{uuid.uuid4().hex[:8]}"
    port = free_port()
    configs = [thread_config() for _ in range(4)]
    proc: subprocess.Popen[str] | None = None
    try:
        with TieredSaver.from_conn_string(
            redis_url, pg.url, tenant_id=TEST_TENANT, key_prefix=prefix, schema=schema,
            background_flush=False, flush_policy=FlushPolicy(**QUIET_OFF),
        ) as saver:  # fmt: skip
            saver.setup()
            graph = chain_graph(saver, nodes=2)
            for cfg in configs:
                graph.invoke({"n": 0, "log": []}, cfg)
            proc = subprocess.Popen(
                [sys.executable, "-c", NO_PROMETHEUS, "--redis-url", redis_url, "--postgres-url", pg.url,
                 "--key-prefix", prefix, "--schema", schema, "worker", "--quiet-seconds", "0",
                 "--poll-seconds", "0.1", "--http", f"127.0.0.1:{port}", "--max-outbox-age", "8",
                 "--summary-seconds", "1"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            base = f"http://127.0.0.1:{port}"
            assert wait_for(lambda: get(base + "/healthz")[0] == 200, 20)  # refused without prometheus_client, before
            status, body = get(base + "/metrics")
            assert status == 501 and "prometheus_client" in body
            assert wait_for(lambda: all(_latest(pg.url, schema, c["configurable"]["thread_id"]) for c in configs), 15)

            pg.stop()
            for cfg in configs:  # the hot tier goes on; the outbox grows
                graph.invoke({"n": 0, "log": []}, cfg)
            latest = {c["configurable"]["thread_id"]: saver.get_tuple(c).config["configurable"]["checkpoint_id"] for c in configs}
            assert wait_for(lambda: get(base + "/healthz")[0] == 503, 10)
            time.sleep(OUTAGE)
            status, body = get(base + "/healthz")
            report = json.loads(body)
            assert status == 503 and any("flushes failing for every thread" in r for r in report["reasons"]), report
            assert report["quarantined"] == []

            pg.start()
            back = time.monotonic()
            flushed: dict[str, float] = {}

            def all_flushed() -> bool:
                for thread, checkpoint_id in latest.items():
                    if thread not in flushed and _latest(pg.url, schema, thread) == checkpoint_id:
                        flushed[thread] = time.monotonic() - back
                return len(flushed) == len(latest)

            assert wait_for(all_flushed, 30, interval=0.1), f"not flushed: {set(latest) - set(flushed)}"
            worst = max(flushed.values())
            print(f"\nworker: {OUTAGE:.0f} s outage, every thread in Postgres {worst:.2f} s after recovery")
            assert worst < 10.0
            assert wait_for(lambda: get(base + "/healthz")[0] == 200, 15)  # healthy once the backlog drained
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        delete_keys(redis_url, f"{prefix}:*")
    lines = err.splitlines()
    entries = [json.loads(line) for line in lines]  # every stderr line is JSON, outage included
    started = next(e for e in entries if e["msg"].startswith("flush worker started"))
    assert started["schema"] == schema and started["key_prefix"] == prefix
    assert started["redis"] and str(pg.port) in started["postgres"]
    assert not [e for e in entries if "quarantined after" in e["msg"]]
    assert any("flushes resumed" in e["msg"] for e in entries)
