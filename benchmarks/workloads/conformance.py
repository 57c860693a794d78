"""Conformance: the public `langgraph-checkpoint-conformance` suite against every saver.

Speed means little for a saver that loses checkpoints, so the report's Savers table says, per
saver, what this suite found: which capabilities it implements (the suite detects them by the
async methods a class overrides), how many of those passed all their tests, and the tests
passed and failed. The suite only calls async methods, so it runs on the saver's async API
(`open_conformance`, by default `open_async`: AsyncPostgresSaver, AsyncRedisSaver, ...; the
TieredSaver bound to a tenant, as tests/test_conformance.py runs it), with a fresh saver and
storage scope per capability.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

from ..savers import SaverFactory, error_reason
from ._common import Context

NOT_A_CHECKPOINTER = "n/a (not a checkpointer)"


async def check(ctx: Context, f: SaverFactory) -> dict[str, Any]:
    """The suite's report on `f` as JSON (`CapabilityReport.to_dict()`) plus `summary`."""
    from langgraph.checkpoint.conformance import checkpointer_test, validate

    scopes = itertools.count(1)

    @checkpointer_test(name=f.name)
    async def factory() -> AsyncIterator[Any]:
        async with f.open_conformance(ctx.env, f"conf-{next(scopes)}") as saver:
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


def run(ctx: Context) -> None:
    for f in ctx.factories:
        if not f.conformance:
            ctx.conformance[f.name] = {"summary": NOT_A_CHECKPOINTER}
        elif f.unavailable:
            ctx.conformance[f.name] = {"summary": "not run (unavailable)"}
        else:
            try:
                ctx.conformance[f.name] = asyncio.run(check(ctx, f))
            except Exception as exc:
                ctx.conformance[f.name] = {"summary": f"error: {error_reason(exc)}"}
        ctx.progress.line(f"{'conformance':<28} {f.name:<40} {ctx.conformance[f.name]['summary']}")
