"""Write the results: `results.json`, `results.md`, and PNG plots when matplotlib is installed."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .report_rtt import RTT_GROUPS, markdown_sections
from .stats import Result

GROUP_TITLES = {
    "micro": "Micro operations — latency per call (ms, lower is better)",
    "graph": "Realistic graph end to end — latency per run (ms, lower is better)",
    "concurrency": "Concurrency — checkpoints per second (higher is better)",
    "long": "Long conversation — latency per turn (ms) and footprint of the thread",
    "large": "Large values (1 MB channel value) — latency per call (ms)",
    "pgload": "Postgres load per graph run (transactions committed, WAL bytes)",
}


def write(
    out: Path,
    meta: dict[str, Any],
    savers: list[dict[str, str]],
    results: list[Result],
    conformance: dict[str, dict[str, Any]] | None = None,
) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "meta": meta,
        "savers": savers,
        "conformance": conformance or {},  # per saver: the suite's full report
        "results": [r.to_json() for r in results],
    }
    written = [
        _atomic_write(out / "results.json", json.dumps(doc, indent=1) + "\n"),
        _atomic_write(out / "results.md", markdown(meta, savers, results)),
    ]
    from .plots import plot_all

    written += plot_all(out, results)
    return written


def _atomic_write(path: Path, text: str) -> Path:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------- markdown


def fmt_num(v: float | None) -> str:
    """3 significant digits; integers with thousands separators from 1,000 on."""
    if v is None:
        return "–"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.3g}" if abs(v) >= 0.001 or v == 0 else f"{v:.2e}"


def fmt_ratio(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}×"


def markdown(meta: dict[str, Any], savers: list[dict[str, str]], results: list[Result]) -> str:
    m = meta["machine"]
    redis_mods = ", ".join(m["redis"]["modules"]) or "none"
    lines = [
        "# Checkpointer benchmarks",
        "",
        f"- Command: `{meta['command']}` (profile `{meta['profile']}`, run `{meta['run_id']}`, "
        f"{meta['started']}, took {meta['duration_s']:.0f} s)",
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB RAM; {m['os']}",
        f"- Servers: Redis {m['redis']['version']} (modules: {redis_mods}), "
        f"PostgreSQL {m['postgres']}; Python {m['python']}; git {m['git_commit']}",
        "- Packages: " + ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v),
        f"- Graph: {meta['notes'].get('graph', 'not run')}",
        "- Method: one process; in every workload the savers take turns per repetition (round "
        "robin, starting saver rotated), so drift and noise hit all of them alike. "
        "× Postgres / × floor = this median ÷ the median of `PostgresSaver` / `raw redis floor` "
        "in the same row group (latency: above 1 is slower; throughput: above 1 is faster).",
    ]
    lines += [f"- Note: {v}" for k, v in meta["notes"].items() if k != "graph"]
    lines += [
        "",
        "## Savers",
        "",
        "Conformance: the `langgraph-checkpoint-conformance` suite through the saver's async API "
        "and its sync API (said once when both agree) — capabilities implemented (detected) and "
        "fully passed, tests passed / run, and what failed or is not implemented.",
        "",
        "| saver | status | conformance |",
        "|---|---|---|",
    ]
    lines += [
        f"| {s['name']} | {s['status']} | {s.get('conformance', 'not run')} |" for s in savers
    ]
    lines += ["", *summary_table(results)]
    for group, title in GROUP_TITLES.items():
        rows = [r for r in results if r.group == group]
        if rows:
            lines += ["", f"## {title}", "", *detail_table(rows)]
            if any(r.metrics for r in rows):
                lines += ["", *metrics_table(rows)]
            lines += _not_measured(rows)
    lines += markdown_sections(results)
    return "\n".join(lines) + "\n"


def _ok(rows: Iterable[Result]) -> list[Result]:
    return [r for r in rows if r.status == "ok"]


def summary_table(results: list[Result]) -> list[str]:
    """Medians: one row per workload, one column per saver that ran anything."""
    savers = list(dict.fromkeys(r.saver for r in _ok(results) if r.group not in RTT_GROUPS))
    workloads = list(
        dict.fromkeys(
            r.workload for r in results if r.group != "pgload" and r.group not in RTT_GROUPS
        )
    )
    cells = {(r.workload, r.saver): r for r in _ok(results)}
    out = [
        "## Summary — medians",
        "",
        "| workload | unit | " + " | ".join(savers) + " |",
        "|---|---|" + "---:|" * len(savers),
    ]
    for w in workloads:
        unit = next(r.unit for r in results if r.workload == w)
        row = []
        for s in savers:
            r = cells.get((w, s))
            summary = r.summary if r else None
            row.append(fmt_num(summary.median) if r and summary else "–")
        out.append(f"| {w} | {unit} | " + " | ".join(row) + " |")
    return out


def detail_table(rows: list[Result]) -> list[str]:
    out = [
        "| workload | saver | n | median | p99 | min | max | × Postgres | × floor |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in _ok(rows):
        s = r.summary
        if s is None:
            continue
        nums = " | ".join(fmt_num(v) for v in (s.median, s.p99, s.min, s.max))
        out.append(
            f"| {r.workload} ({r.unit}) | {r.saver} | {s.n} | {nums} | "
            f"{fmt_ratio(r.vs_postgres)} | {fmt_ratio(r.vs_floor)} |"
        )
    for r in rows:
        if r.status.startswith("error"):
            out.append(f"| {r.workload} | {r.saver} | {r.status} |||||||")
    return out


def metrics_table(rows: list[Result]) -> list[str]:
    ok = [r for r in _ok(rows) if r.metrics]
    keys = list(dict.fromkeys(k for r in ok for k in r.metrics))
    out = ["| saver | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for r in ok:
        out.append(f"| {r.saver} | " + " | ".join(fmt_num(r.metrics.get(k)) for k in keys) + " |")
    return out


def _not_measured(rows: list[Result]) -> list[str]:
    unavailable = list(dict.fromkeys(r.saver for r in rows if r.status.startswith("unavailable")))
    not_applicable = list(dict.fromkeys(r.saver for r in rows if r.status == "n/a"))
    parts = []
    if unavailable:
        parts.append(", ".join(unavailable) + " (unavailable, see Savers)")
    if not_applicable:
        parts.append(", ".join(not_applicable) + " (n/a: does not support these operations)")
    return ["", "Not measured: " + "; ".join(parts) + "."] if parts else []
