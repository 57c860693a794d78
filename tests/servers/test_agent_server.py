"""TieredSaver under LangGraph's Agent Server (`langgraph dev`), driven by the real `langgraph_sdk`.

One script (`drive`) runs the case_8842 graph through the server: a thread, a run to the refund
interrupt, a streamed resume with `Command(resume=...)`, state and history, a copied thread, a
`multitask_strategy="rollback"` run (the server then calls `adelete_for_runs`), a deleted thread.
It runs once with `examples/case_8842/langgraph.json` as written (TieredSaver on real Redis and
Postgres) and once with that file's `checkpointer` entry removed (the server's own default), and
the two must agree. The TieredSaver server is then stopped, its Redis keys wiped, and started
again: the thread left paused at the interrupt resumes from Postgres. Users of two tenants
(`tests/server_app.py`) never see each other's threads, through the server or in the tiers.

One server start per mode (two for TieredSaver: before and after the wipe); each takes seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

try:
    import langgraph_api  # noqa: F401
    import langgraph_cli  # noqa: F401
    import langgraph_runtime_inmem  # noqa: F401
    from langgraph_sdk import get_client
    from langgraph_sdk.errors import NotFoundError
except ImportError as exc:  # pragma: no cover - the `server` extra is part of the test install
    pytest.skip(f"Agent Server packages not importable ({exc.name}): pip install -e '.[server]'", allow_module_level=True)

from devtools.servers import delete_keys, free_port
from examples.case_8842 import tools
from examples.case_8842.graph import THREAD_ID, USER_MESSAGE
from langgraph_tiered_saver import TieredSaver

pytestmark = pytest.mark.timeout(600)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = REPO / "examples" / "case_8842" / "langgraph.json"
LANGGRAPH = Path(sys.executable).with_name("langgraph")
GRAPH = "case_8842"
SLOW_GRAPH = "slow"
ALICE = {"Authorization": "Bearer token-alice"}  # tenant acme (tests/server_app.py)
BOB = {"Authorization": "Bearer token-bob"}  # tenant globex
INPUT = {
    "messages": [{"type": "human", "content": USER_MESSAGE, "id": f"{THREAD_ID}-user-1"}],
    "customer_id": tools.CUSTOMER_ID,
}
APPROVAL = {"approved": True, "note": "verified duplicate"}
STARTUP_SECONDS = 90.0


def server_config(tmp: Path, *, tiered: bool) -> Path:
    """The example's langgraph.json as written, plus the test's auth and slow graph; without
    its `checkpointer` entry for the server's default checkpointer."""
    config = json.loads(EXAMPLE_CONFIG.read_text())
    if not tiered:
        del config["checkpointer"]
    config["graphs"][SLOW_GRAPH] = "tests.server_app:slow_graph"
    config["auth"] = {"path": "tests.server_app:auth"}
    path = tmp / "langgraph.json"
    path.write_text(json.dumps(config))
    return path


class DevServer:
    """`langgraph dev` in its own process group, working directory `cwd` (where the in-memory
    runtime keeps its threads and runs between starts), log in `cwd/server-N.log`."""

    def __init__(self, config: Path, cwd: Path, env: dict[str, str]) -> None:
        self.config, self.cwd, self.env = config, cwd, env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.log_path = cwd / "server-0.log"

    def start(self) -> DevServer:
        self.starts += 1
        self.log_path = self.cwd / f"server-{self.starts}.log"
        args = [str(LANGGRAPH), "dev", "--no-browser", "--no-reload", "--port", str(self.port), "--config", str(self.config)]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(args, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"langgraph dev exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/ok", timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.3)
        self.stop()
        pytest.fail(f"langgraph dev did not answer /ok within {STARTUP_SECONDS}s:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        """Graceful stop (SIGINT, as Ctrl-C): the server leaves the checkpointer's context."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
            pytest.fail(f"langgraph dev did not stop on SIGINT:\n{self.log()[-4000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def dev_server(tmp: Path, *, tiered: bool, env: dict[str, str]) -> Iterator[DevServer]:
    cwd = tmp / ("tiered" if tiered else "default")
    cwd.mkdir()
    server = DevServer(server_config(cwd, tiered=tiered), cwd, env)
    try:
        yield server
    finally:
        server.stop()


def server_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LTS_", "LANGSMITH_", "LANGCHAIN_"))}
    env.update(PYTHONPATH=str(REPO), LANGSMITH_TRACING="false", LANGCHAIN_TRACING_V2="false", **extra)
    return env


# --------------------------------------------------------------------------- the script


async def run_to_interrupt(client: Any, thread_id: str) -> dict[str, Any]:
    await client.runs.wait(thread_id, GRAPH, input=INPUT, raise_error=True)
    return await client.threads.get_state(thread_id)


def interrupts_of(state: dict[str, Any]) -> list[Any]:
    return [item["value"] for task in state["tasks"] for item in task.get("interrupts", [])]


async def resume_streaming(client: Any, thread_id: str) -> list[str]:
    """Resume with Command(resume=...) as a streamed run; the nodes whose updates streamed."""
    nodes: list[str] = []
    async for chunk in client.runs.stream(thread_id, GRAPH, command={"resume": APPROVAL}, stream_mode="updates"):
        assert chunk.event != "error", chunk.data
        if chunk.event == "updates" and isinstance(chunk.data, dict):
            nodes.extend(chunk.data)
    return nodes


async def rollback(client: Any) -> dict[str, Any]:
    """A second run on a busy thread with multitask_strategy="rollback": the first run is
    cancelled and its checkpoints deleted (the server calls the checkpointer's adelete_for_runs)."""
    thread_id = (await client.threads.create())["thread_id"]
    first = await client.runs.create(thread_id, SLOW_GRAPH, input={"steps": ["first"]})
    for _ in range(200):  # until the first run is inside its slow node
        if (await client.runs.get(thread_id, first["run_id"]))["status"] == "running":
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    second = await client.runs.create(thread_id, SLOW_GRAPH, input={"steps": ["second"]}, multitask_strategy="rollback")
    await client.runs.join(thread_id, second["run_id"])
    with pytest.raises(NotFoundError):  # the rolled-back run is gone, with its checkpoints
        await client.runs.get(thread_id, first["run_id"])
    history = await client.threads.get_history(thread_id, limit=100)
    run_ids = {h["metadata"].get("run_id") for h in history if h.get("metadata")}
    assert first["run_id"] not in run_ids, "a checkpoint of the rolled-back run survived"
    state = await client.threads.get_state(thread_id)
    return {"values": state["values"], "history_len": len(history), "thread_id": thread_id}


async def drive(client: Any) -> dict[str, Any]:
    """The same script for both checkpointers; returns what must agree between them."""
    thread_id = (await client.threads.create())["thread_id"]
    paused = await run_to_interrupt(client, thread_id)
    thread_record = await client.threads.get(thread_id)
    streamed = await resume_streaming(client, thread_id)
    final = await client.threads.get_state(thread_id)
    history = await client.threads.get_history(thread_id, limit=200)
    copied = (await client.threads.copy(thread_id))["thread_id"]
    copied_state = await client.threads.get_state(copied)
    copied_history = await client.threads.get_history(copied, limit=200)
    rolled = await rollback(client)
    await client.threads.delete(copied)
    with pytest.raises(NotFoundError):
        await client.threads.get(copied)
    assert copied_state["values"] == final["values"]
    return {
        "thread_id": thread_id,
        "copied": copied,
        "paused_next": paused["next"],
        "interrupts": interrupts_of(paused),
        "thread_interrupts": [i["value"] for items in (thread_record.get("interrupts") or {}).values() for i in items],
        "streamed": streamed,
        "final_next": final["next"],
        "values": final["values"],
        "history_len": len(history),
        "copied_history_len": len(copied_history),
        "rollback_values": rolled["values"],
        "rollback_history_len": rolled["history_len"],
    }


# The state at the interrupt itself is not compared: the server's default checkpointer reads it
# back without its pending interrupt (next == [], no tasks; its thread record has the interrupt),
# where LangGraph's own semantics, which TieredSaver keeps, give next == ["policy_agent"].
COMPARED = ("thread_interrupts", "streamed", "final_next", "values", "history_len",
            "copied_history_len", "rollback_values", "rollback_history_len")


@asynccontextmanager
async def tier_saver(redis_url: str, postgres_url: str, prefix: str, schema: str, tenant: str) -> AsyncIterator[TieredSaver]:
    """A saver of our own on the server's tiers, bound to one tenant: what that tenant has."""
    async with TieredSaver.from_conn_string(redis_url, postgres_url, key_prefix=prefix, schema=schema, tenant_id=tenant) as saver:
        yield saver


async def has_thread(saver: TieredSaver, thread_id: str) -> bool:
    return await saver.aget_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}) is not None


# --------------------------------------------------------------------------- the test


async def test_agent_server_tiered_vs_default(tmp_path: Path, redis_url: str, test_database_url: str, key_prefix: str) -> None:
    schema = f"lts_srv_{uuid.uuid4().hex[:8]}"
    tiered_env = server_env(REDIS_URL=redis_url, DATABASE_URL=test_database_url, LTS_KEY_PREFIX=key_prefix, LTS_SCHEMA=schema)

    with dev_server(tmp_path, tiered=True, env=tiered_env) as server:
        server.start()
        alice, bob = get_client(url=server.url, headers=ALICE), get_client(url=server.url, headers=BOB)
        tiered = await drive(alice)

        # Two tenants: bob's own thread works; alice's is not his to read, through the server...
        bob_thread = (await bob.threads.create())["thread_id"]
        assert interrupts_of(await run_to_interrupt(bob, bob_thread)) == tiered["interrupts"]
        for read in (bob.threads.get, bob.threads.get_state):
            with pytest.raises(NotFoundError):
                await read(tiered["thread_id"])
        # ...nor in the tiers: each thread is stored under its user's tenant only.
        async with tier_saver(redis_url, test_database_url, key_prefix, schema, "acme") as acme, \
                tier_saver(redis_url, test_database_url, key_prefix, schema, "globex") as globex:
            assert await has_thread(acme, tiered["thread_id"]) and not await has_thread(globex, tiered["thread_id"])
            assert await has_thread(globex, bob_thread) and not await has_thread(acme, bob_thread)
            assert not await has_thread(acme, tiered["copied"]), "the deleted thread is still stored"

        # A thread left paused at the interrupt, then the server stopped and Redis wiped.
        paused_thread = (await alice.threads.create())["thread_id"]
        paused = await run_to_interrupt(alice, paused_thread)
        server.stop()
        first_log = server.log()
        delete_keys(redis_url, f"{key_prefix}*")
        assert not list(redis.Redis.from_url(redis_url).scan_iter(match=f"{key_prefix}*", count=1000))

        server.start()
        alice = get_client(url=server.url, headers=ALICE)
        from_postgres = await alice.threads.get_state(paused_thread)
        assert from_postgres["next"] == paused["next"] == ["policy_agent"]
        assert interrupts_of(from_postgres) == interrupts_of(paused)
        assert await resume_streaming(alice, paused_thread) == tiered["streamed"]
        resumed = await alice.threads.get_state(paused_thread)
        assert resumed["values"] == tiered["values"]
        assert len(await alice.threads.get_history(paused_thread, limit=200)) == tiered["history_len"]
        server.stop()
        second_log = server.log()

    # The server found every optional capability on TieredSaver: no fallback, no warning.
    for log in (first_log, second_log):
        assert "Using custom checkpointer: TieredSaver" in log
        assert "all present, no fallback" in log
        assert "Custom checkpointer missing" not in log
        assert "TenantRequiredError" not in log and "Traceback" not in log, log[max(0, log.find("Traceback") - 2000):][:6000]

    with dev_server(tmp_path, tiered=False, env=server_env()) as server:
        server.start()
        default = await drive(get_client(url=server.url, headers=ALICE))
        assert "Using custom checkpointer" not in server.log()

    assert tiered["interrupts"] and tiered["interrupts"][0]["type"] == "refund_approval"
    assert tiered["paused_next"] == ["policy_agent"] and tiered["interrupts"] == tiered["thread_interrupts"]
    assert tiered["values"]["policy"]["decision"] == "approved"
    assert tiered["rollback_values"] == {"steps": ["second", "fast", "slow"]}
    for key in COMPARED:
        assert tiered[key] == default[key], f"{key}: TieredSaver {tiered[key]!r} != default {default[key]!r}"
