"""The benchmark's conformance column: the suite's sync-API adapter runs the sync methods a saver
implements and leaves the others missing, and the cell says both APIs' results in one line."""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.conformance.capabilities import Capability, DetectedCapabilities
from langgraph.checkpoint.memory import InMemorySaver

from benchmarks.workloads.conformance import combined, summarize, sync_api


class _PutOnly(InMemorySaver):
    """Sync put is ours; async put would be a different code path the adapter must bypass."""

    calls: list[str]

    def put(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append("put")
        return super().put(*args, **kwargs)

    async def aput(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the sync API adapter must not call the async method")


async def test_sync_api_runs_the_sync_twin() -> None:
    saver = _PutOnly()
    saver.calls = []
    saver.__class__ = sync_api(_PutOnly)
    config = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    from langgraph.checkpoint.base import empty_checkpoint

    await saver.aput(config, empty_checkpoint(), {}, {})
    assert saver.calls == ["put"]
    assert [c async for c in saver.alist(config)]  # alist iterates the sync list
    assert isinstance(saver, _PutOnly)


def test_sync_api_leaves_unimplemented_capabilities_missing() -> None:
    detected = DetectedCapabilities.from_instance(sync_api(InMemorySaver)())
    assert Capability.PUT in detected.detected
    # InMemorySaver has no sync prune / copy_thread / delete_for_runs: not detected
    assert {Capability.PRUNE, Capability.COPY_THREAD, Capability.DELETE_FOR_RUNS} <= detected.missing
    assert sync_api(InMemorySaver).aprune is BaseCheckpointSaver.aprune  # type: ignore[attr-defined]


def test_summary_and_combined_cell() -> None:
    report = {
        "results": {
            "put": {"detected": True, "passed": True, "tests_passed": 5, "tests_failed": 0},
            "list": {"detected": True, "passed": False, "tests_passed": 3, "tests_failed": 2},
            "prune": {"detected": False, "passed": None, "tests_passed": 0, "tests_failed": 0},
        }
    }
    text = summarize(report)
    assert text == "1/2 capabilities, 8/10 tests; failed: list 2; not implemented: prune"
    assert combined({"async": text, "sync": text}) == f"async and sync API: {text}"
    assert combined({"async": "a", "sync": "b"}) == "async API: a / sync API: b"
