"""Markdown for the emulated-network workloads: proxy precision, run time against RTT (medians,
p99, ratios to PostgresSaver and InMemorySaver), and round trips per run and per superstep."""

from __future__ import annotations

from collections import defaultdict

from .stats import Result

POSTGRES = "PostgresSaver"
MEMORY = "InMemorySaver"
RTT_GROUPS = ("netem", "rtt", "roundtrips")


def _num(v: float | None) -> str:
    if v is None:
        return "–"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def _ratio(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}×"


def _kind_level(r: Result) -> tuple[str, float]:
    kind, _, _ = r.workload.partition(" @ RTT ")
    return kind, float(r.metrics.get("rtt_ms", 0.0))


def precision_table(results: list[Result]) -> list[str]:
    rows = [r for r in results if r.group == "netem" and r.status == "ok" and r.samples]
    if not rows:
        return []
    direct = next((r for r in rows if "direct" in r.workload), None)
    base = direct.summary.median if direct and direct.summary else 0.0
    out = [
        "## Delay proxy precision — raw Redis PING round trip (ms)",
        "",
        "| path | configured RTT | n | median | p99 | median − direct |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        s = r.summary
        assert s is not None
        conf = "–" if r is direct else _num(r.metrics.get("rtt_ms"))
        extra = "–" if r is direct else f"{s.median - base:.3f}"
        out.append(f"| {r.workload.partition(' @ ')[0]} | {conf} | {s.n} | {s.median:.3f} | "
                   f"{s.p99:.3f} | {extra} |")
    return out


def rtt_tables(results: list[Result]) -> list[str]:
    rows = [r for r in results if r.group == "rtt"]
    if not rows:
        return []
    medians: dict[tuple[str, str], float] = {}
    for r in rows:
        s = r.summary
        if r.status == "ok" and s is not None:
            medians[(r.workload, r.saver)] = s.median
    kinds = list(dict.fromkeys(_kind_level(r)[0] for r in rows))
    levels = sorted({_kind_level(r)[1] for r in rows})
    savers = list(dict.fromkeys(r.saver for r in rows if r.status == "ok" and r.samples))
    out = [
        "## Across an emulated network — median ms (× PostgresSaver, × InMemorySaver)",
        "",
        "| workload | saver | " + " | ".join(f"RTT {lv:g} ms" for lv in levels) + " |",
        "|---|---|" + "---:|" * len(levels),
    ]
    for kind in kinds:
        for saver in savers:
            cells = []
            for lv in levels:
                w = next((r.workload for r in rows if _kind_level(r) == (kind, lv)), None)
                m = medians.get((w, saver)) if w is not None else None
                if w is None or m is None:
                    cells.append("–")
                    continue
                pg, mem = medians.get((w, POSTGRES)), medians.get((w, MEMORY))
                bases = [pg] if saver == MEMORY else [pg, mem]
                ratios = ", ".join(_ratio(m / b if b else None) for b in bases)
                cells.append(f"{_num(m)} ({ratios})")
            if any(c != "–" for c in cells):
                out.append(f"| {kind} | {saver} | " + " | ".join(cells) + " |")
    out += [
        "",
        "### Detail: every cell with its p99",
        "",
        "| workload | RTT ms | saver | n | median | p99 | × PostgresSaver | × InMemorySaver |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (kinds.index(_kind_level(r)[0]), _kind_level(r)[1])):
        s = r.summary
        if r.status != "ok" or s is None:
            continue
        pg, mem = medians.get((r.workload, POSTGRES)), medians.get((r.workload, MEMORY))
        kind, lv = _kind_level(r)
        out.append(
            f"| {kind} | {lv:g} | {r.saver} | {s.n} | {_num(s.median)} | {_num(s.p99)} | "
            f"{_ratio(s.median / pg if pg else None)} | {_ratio(s.median / mem if mem else None)} |"
        )
    out += _unavailable(rows)
    return out


def roundtrip_table(results: list[Result]) -> list[str]:
    rows = [r for r in results if r.group == "roundtrips"]
    if not rows:
        return []
    graphs = [r for r in rows if r.status == "ok" and "supersteps" in r.metrics]
    calls = [r for r in rows if r.status == "ok" and r.metrics and "supersteps" not in r.metrics]
    out = [
        "## Round trips (counted by the proxies; TieredSaver with its background flusher off)",
        "",
        "A round trip is a client burst (a pipeline or a Lua script is one); a superstep is a "
        "checkpoint `put` LangGraph makes in the run (counted on an `InMemorySaver`); Postgres "
        "xact = transactions ended (`ReadyForQuery` idle). Connections were open before counting.",
        "",
        "| workload | saver | supersteps/run | **Redis RT/superstep** | Redis RT/run | "
        "Postgres RT/run | Postgres xact/run | write-behind: Redis RT, Postgres RT, xact per run "
        "(one `flush()` after all runs of the pass) |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in graphs:
        m = r.metrics
        flush = (
            f"{_num(m['flush_redis_rt'])}, {_num(m['flush_pg_rt'])}, {_num(m['flush_pg_xact'])}"
            if "flush_redis_rt" in m
            else "–"
        )
        out.append(
            f"| {r.workload} | {r.saver} | {_num(m['supersteps'])} | "
            f"**{_num(m['redis_rt_per_superstep'])}** | {_num(m['redis_rt'])} | "
            f"{_num(m['pg_rt'])} | {_num(m['pg_xact'])} | {flush} |"
        )
    if calls:
        out += [
            "",
            "| call | saver | Redis RT/call | Postgres RT/call | Postgres xact/call |",
            "|---|---|---:|---:|---:|",
        ]
        for r in calls:
            m = r.metrics
            out.append(
                f"| {r.workload} | {r.saver} | {_num(m['redis_rt'])} | {_num(m['pg_rt'])} | "
                f"{_num(m['pg_xact'])} |"
            )
    out += _unavailable(rows)
    return out


def _unavailable(rows: list[Result]) -> list[str]:
    why: dict[str, str] = defaultdict(str)
    for r in rows:
        if r.status.startswith(("unavailable", "error")):
            why[r.saver] = why[r.saver] or r.status
    return ["", *(f"- {saver}: {status}" for saver, status in why.items())] if why else []


def markdown_sections(results: list[Result]) -> list[str]:
    out: list[str] = []
    for section in (precision_table(results), rtt_tables(results), roundtrip_table(results)):
        if section:
            out += ["", *section]
    return out
