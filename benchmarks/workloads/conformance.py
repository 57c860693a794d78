"""Conformance: the public `langgraph-checkpoint-conformance` suite against every saver.

Speed means little for a saver that loses checkpoints, so the report's Savers table says, per
saver, what this suite found: which capabilities it implements (the suite detects them by the
async methods a class overrides), how many of those passed all their tests, and the tests
passed and failed.

It runs twice per saver, as tests/servers/test_conformance.py runs it on TieredSaver, with a fresh saver
and storage scope per capability (`open_conformance`, `open_conformance_sync`):

* async API: the saver the async workloads use (AsyncPostgresSaver, AsyncRedisSaver, ...);
* sync API: the saver the sync workloads use, its class extended so that each async method the
  suite calls runs the sync twin (`sync_api`); a sync method the class does not implement
  leaves its async twin as the base class', so the suite sees the capability as missing.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver

from ..savers import Saver, SaverFactory, error_reason
from ._common import Context

NOT_A_CHECKPOINTER = "n/a (not a checkpointer)"
# async method the suite calls -> its sync twin
TWINS = {
    "aput": "put",
    "aput_writes": "put_writes",
    "aget_tuple": "get_tuple",
    "alist": "list",
    "adelete_thread": "delete_thread",
    "adelete_for_runs": "delete_for_runs",
    "acopy_thread": "copy_thread",
    "aprune": "prune",
}


def _calls_sync(name: str) -> Callable[..., Any]:
    async def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        return getattr(self, name)(*args, **kwargs)

    method.__name__ = "a" + name
    return method


async def _alist_calls_list(self: Any, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
    for item in self.list(*args, **kwargs):
        yield item


@functools.cache
def sync_api(cls: type) -> type:
    """`cls` with every async method of the suite running its sync twin (see module doc)."""
    namespace: dict[str, Any] = {"__slots__": ()}  # same layout: instances can switch class
    for async_name, name in TWINS.items():
        if getattr(cls, name, None) is getattr(BaseCheckpointSaver, name, None):
            namespace[async_name] = getattr(BaseCheckpointSaver, async_name)
        elif name == "list":
            namespace[async_name] = _alist_calls_list
        else:
            namespace[async_name] = _calls_sync(name)
    return type(f"{cls.__name__}SyncAPI", (cls,), namespace)


async def check(ctx: Context, f: SaverFactory, api: str) -> dict[str, Any]:
    """The suite's report on `f` through `api` ("async" or "sync") as JSON
    (`CapabilityReport.to_dict()`) plus its `summary`."""
    from langgraph.checkpoint.conformance import checkpointer_test, validate

    scopes = itertools.count(1)

    @asynccontextmanager
    async def opened() -> AsyncIterator[Saver]:
        scope = f"conf-{api}-{next(scopes)}"
        if api == "async":
            async with f.open_conformance(ctx.env, scope) as saver:
                yield saver
        else:
            with f.open_conformance_sync(ctx.env, scope) as saver:
                saver.__class__ = sync_api(type(saver))
                yield saver

    @checkpointer_test(name=f"{f.name} ({api} API)")
    async def factory() -> AsyncIterator[Saver]:
        async with opened() as saver:
            yield saver

    report = await validate(factory, progress=None)
    out = report.to_dict()
    out["summary"] = summarize(out)
    return out


def summarize(report: dict[str, Any]) -> str:
    """`6/6 capabilities, 62/62 tests; not implemented: copy_thread, prune` and the like."""
    results: dict[str, dict[str, Any]] = report["results"]
    detected = {cap: r for cap, r in results.items() if r["detected"]}
    passed_caps = sum(1 for r in detected.values() if r["passed"] is True)
    passed = sum(r["tests_passed"] for r in detected.values())
    failed = sum(r["tests_failed"] for r in detected.values())
    text = f"{passed_caps}/{len(detected)} capabilities, {passed}/{passed + failed} tests"
    failing = [f"{cap} {r['tests_failed']}" for cap, r in detected.items() if r["tests_failed"]]
    if failing:
        text += "; failed: " + ", ".join(failing)
    missing = [cap for cap, r in results.items() if not r["detected"]]
    if missing:
        text += "; not implemented: " + ", ".join(missing)
    return text


def combined(by_api: dict[str, str]) -> str:
    """One cell for both APIs: said once when they agree."""
    if by_api["async"] == by_api["sync"]:
        return f"async and sync API: {by_api['async']}"
    return f"async API: {by_api['async']} / sync API: {by_api['sync']}"


def run(ctx: Context) -> None:
    for f in ctx.factories:
        if not f.conformance:
            ctx.conformance[f.name] = {"summary": NOT_A_CHECKPOINTER}
        elif f.unavailable:
            ctx.conformance[f.name] = {"summary": "not run (unavailable)"}
        else:
            entry: dict[str, Any] = {}
            for api in ("async", "sync"):
                try:
                    entry[api] = asyncio.run(check(ctx, f, api))
                except Exception as exc:
                    entry[api] = {"summary": f"error: {error_reason(exc)}"}
            entry["summary"] = combined({api: entry[api]["summary"] for api in ("async", "sync")})
            ctx.conformance[f.name] = entry
        ctx.progress.line(f"{'conformance':<28} {f.name:<40} {ctx.conformance[f.name]['summary']}")
