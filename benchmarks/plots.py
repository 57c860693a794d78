"""PNG plots (only when matplotlib is importable): put latency per saver, throughput vs concurrency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .stats import Result


def plot_all(out: Path, results: list[Result]) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    for path in (
        _put_latency(plt, out, results),
        _throughput(plt, out, results),
        _rtt(plt, out, results),
    ):
        if path is not None:
            written.append(path)
    return written


def _ok(results: list[Result], group: str) -> list[Result]:
    return [r for r in results if r.group == group and r.status == "ok" and r.samples]


def _put_latency(plt: Any, out: Path, results: list[Result]) -> Path | None:
    panels = [
        (api, [r for r in _ok(results, "micro") if r.workload == f"put ({api})"])
        for api in ("sync", "async")
    ]
    panels = [(api, rows) for api, rows in panels if rows]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    for ax, (api, rows) in zip(axes[0], panels, strict=True):
        ax.boxplot(
            [r.samples for r in rows],
            vert=False,
            whis=(1, 99),
            showfliers=True,
            flierprops={"markersize": 2},
        )
        ax.set_yticks(range(1, len(rows) + 1), [r.saver for r in rows])
        ax.set_xscale("log")
        ax.set_xlabel("put latency (ms, log scale); whiskers p1–p99")
        ax.set_title(f"put ({api} API)")
        ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    path = out / "put_latency.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _throughput(plt: Any, out: Path, results: list[Result]) -> Path | None:
    rows = _ok(results, "concurrency")
    if not rows:
        return None
    kinds = list(dict.fromkeys(r.workload.split(" c=")[0] for r in rows))
    fig, axes = plt.subplots(1, len(kinds), figsize=(6.5 * len(kinds), 4.5), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        by_saver: dict[str, list[tuple[int, float]]] = {}
        for r in rows:
            name, _, level = r.workload.partition(" c=")
            s = r.summary
            if name == kind and s is not None:
                by_saver.setdefault(r.saver, []).append((int(level), s.median))
        for saver, points in by_saver.items():
            points.sort()
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=saver)
        ax.set_xscale("log", base=2)
        levels = sorted({p[0] for points in by_saver.values() for p in points})
        ax.set_xticks(levels, [str(level) for level in levels])
        ax.set_yscale("log")
        ax.set_xlabel("concurrency")
        ax.set_ylabel("checkpoints / second (median)")
        ax.set_title(f"throughput, {kind}")
        ax.grid(which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "throughput.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _rtt(plt: Any, out: Path, results: list[Result]) -> Path | None:
    """Run time against the emulated RTT, one colour per saver: median solid, p99 dashed."""
    rows = _ok(results, "rtt")
    if not rows:
        return None
    kinds = [k for k in dict.fromkeys(r.workload.partition(" @ RTT ")[0] for r in rows)
             if "run" in k]
    if not kinds:
        return None
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.5 * len(kinds), 4.5), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        by_saver: dict[str, list[tuple[float, float, float]]] = {}
        for r in rows:
            s = r.summary
            if r.workload.partition(" @ RTT ")[0] == kind and s is not None:
                by_saver.setdefault(r.saver, []).append((r.metrics["rtt_ms"], s.median, s.p99))
        for saver, points in by_saver.items():
            points.sort()
            xs = [p[0] for p in points]
            ys = [p[1] for p in points]
            (line,) = ax.plot(xs, ys, marker="o", label=saver)
            ax.plot(xs, [p[2] for p in points], linestyle="--", alpha=0.45, color=line.get_color())
        ax.set_xlabel("emulated round-trip time to Redis and Postgres (ms)")
        ax.set_ylabel("run time (ms): median solid, p99 dashed")
        ax.set_title(kind)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "rtt_runs.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
