"""Client CPU of the hot path, with no server: what a `put`, a `put_writes`, a superstep
(a task's writes, then the put that closes the step) and a `get_tuple` of the latest checkpoint
(with two pending writes) cost the interpreter.

Every Redis request is answered at once by a driver that replies as the server would (no
socket), so the figure is the saver's own Python work: config parsing, serialization, key
plans, script arguments, metrics. The floor beside it is serializing the same checkpoint once
(`serde.dumps_typed`), which any checkpointer pays; for `get_tuple`, deserializing it once
(`get_floor`), as the raw Redis floor does. CPU time (`time.process_time`), medians of
rounds, so other load on the machine moves it little.

    python -m benchmarks.client_cpu [--rounds 15] [--calls 2000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
from langgraph.checkpoint.base import Checkpoint
from psycopg_pool import ConnectionPool

from langgraph_tiered_saver import TieredSaver
from langgraph_tiered_saver._sansio.io import RedisCall, SyncDriver
from langgraph_tiered_saver.hot import keys as K
from langgraph_tiered_saver.hot import scripts
from langgraph_tiered_saver.hot.stored import encode_refs
from langgraph_tiered_saver.records.codec import CheckpointRecord, WriteRecord, encode_typed

CHANNELS = 10
CHANGED = 3


class _Replying(SyncDriver):
    """Answers every Redis request as the server would for a healthy hot path: get.lua with
    `get_reply`, the server check with one run id of a primary, anything else with 1s."""

    get_reply: Any = None

    def _redis(self, call: RedisCall) -> Any:
        if call.commands[0][:2] == ("EVALSHA", scripts.GET.sha):
            return [self.get_reply]
        if call.commands[0][:2] == ("EVALSHA", scripts.SERVER_CHECK.sha):
            return [[b"client-cpu-server", 0] for _ in call.commands]
        return [1] * len(call.commands)

    def _pg(self, call: Any) -> Any:
        raise AssertionError(f"the hot path asked Postgres: {call}")


def _checkpoint(step: int, previous: str | None) -> tuple[dict[str, Any], Checkpoint, dict[str, Any], dict[str, str]]:
    versions = {f"channel_{i}": f"{step:032}.{i}" for i in range(CHANNELS)}
    checkpoint: Checkpoint = {
        "v": 4, "id": str(uuid.uuid1()), "ts": "2026-12-06T00:00:00+00:00",
        "channel_values": {f"channel_{i}": {"text": "x" * 200, "n": i} for i in range(CHANNELS)},
        "channel_versions": versions,
        "versions_seen": {"node": dict(list(versions.items())[:CHANGED])},
        "updated_channels": [f"channel_{i}" for i in range(CHANGED)],
    }  # fmt: skip
    new_versions = {f"channel_{i}": versions[f"channel_{i}"] for i in range(CHANGED)}
    config = {"configurable": {"thread_id": "t-cpu", "checkpoint_ns": "", "checkpoint_id": previous}}
    metadata = {"source": "loop", "step": step, "parents": {}, "run_id": "run-1"}
    return config, checkpoint, metadata, new_versions


def _get_reply(saver: TieredSaver, checkpoint: Checkpoint, metadata: dict[str, Any]) -> list[Any]:
    """What get.lua answers for `checkpoint` (every channel value) with two pending writes, as
    bytes, built with the saver's own encoders."""
    serde = saver.serde
    fields = [K.blob_field("", ch, v) for ch, v in checkpoint["channel_versions"].items()]
    bare = {k: v for k, v in checkpoint.items() if k != "channel_values"}
    record = CheckpointRecord(serde.dumps_typed(bare), serde.dumps_typed(metadata), None, tuple(fields))
    values = [encode_typed(serde.dumps_typed(checkpoint["channel_values"][f.split(K.SEP)[1]])) for f in fields]
    writes = [
        WriteRecord("task-1", i, f"channel_{i}", serde.dumps_typed({"text": "w" * 200}), "", 0.0).pack()
        for i in range(2)
    ]
    member = K.checkpoint_member("", checkpoint["id"]).encode()
    entry = [member, record.pack(), encode_refs("run-1", fields).encode(), values, writes, 0]
    return [b"hit", [entry], b"", b""]


def _saver() -> TieredSaver:
    pool = ConnectionPool("postgresql://nowhere.invalid/db", open=False)
    saver = TieredSaver(redis.Redis(host="nowhere.invalid"), pg_pool=pool, tenant_id="acme", background_flush=False)
    replying = _Replying(redis.Redis(host="nowhere.invalid"), pool)
    replying.pg = saver._sync.pg
    saver._sync = saver._runners.sync = replying
    return saver


def _rounds(body: Callable[[], None], calls: int, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(calls):
            body()
        out.append((time.process_time() - started) / calls * 1e6)
    return out


def measure(rounds: int, calls: int) -> dict[str, Any]:
    saver = _saver()
    config, checkpoint, metadata, new_versions = _checkpoint(1, None)
    put_config = {"configurable": {**config["configurable"], "checkpoint_id": checkpoint["id"]}}
    writes = [("channel_0", {"text": "y" * 200}), ("channel_1", {"text": "z" * 200})]
    saver.core.hot.epoch.value = "epoch-1"  # as after the process' first write

    def put() -> None:
        saver.put(config, checkpoint, metadata, new_versions)

    def put_writes() -> None:
        saver.put_writes(put_config, writes, "task-1", "")

    def floor() -> None:
        saver.serde.dumps_typed(checkpoint)

    saver._runners.sync.get_reply = _get_reply(saver, checkpoint, metadata)  # type: ignore[attr-defined]
    latest = {"configurable": {**config["configurable"], "checkpoint_id": None}}
    stored = saver.serde.dumps_typed((checkpoint, metadata))

    def get_tuple() -> None:
        found = saver.get_tuple(latest)
        assert found is not None and len(found.pending_writes or ()) == 2

    def get_floor() -> None:
        saver.serde.loads_typed(stored)

    bodies = (("put", put), ("put_writes", put_writes), ("floor", floor), ("get_tuple", get_tuple), ("get_floor", get_floor))
    figures = {name: _rounds(body, calls, rounds) for name, body in bodies}
    saver.close()
    return {
        name: {"median_us": round(statistics.median(v), 1), "min_us": round(min(v), 1)} for name, v in figures.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    print(json.dumps(measure(args.rounds, args.calls), indent=2))


if __name__ == "__main__":
    main()
