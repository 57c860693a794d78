"""`python -m benchmarks [--quick|--full] [--only WORKLOAD ...] [--savers NAME ...] [--out DIR]`

Runs every workload in one process, the savers interleaved, and writes `results.json`,
`results.md` and plots to `--out`: by default `benchmarks/results/` (committed) for `--full`,
`benchmarks/results-quick/` (ignored by git) for `--quick`, so a quick run never overwrites the
published figures. Honours `REDIS_URL` and `DATABASE_URL`.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

from langgraph.checkpoint.memory import InMemorySaver

from .env import BenchEnv
from .graph import build_case_graph
from .machine import machine_info
from .report import write
from .savers import (
    BASELINE_FLOOR,
    BASELINE_POSTGRES,
    SaverFactory,
    all_factories,
    redis_stack_note,
)
from .stats import add_ratios
from .workloads import FULL, QUICK, WORKLOADS, Context, Progress

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
QUICK_OUT = Path(__file__).resolve().parent / "results-quick"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small run, under 2 minutes (default)")
    size.add_argument("--full", action="store_true", help="full run, the committed figures: about an hour on a 2-core machine (run 5d6ff2: 62 min without conformance and cpu)")
    p.add_argument(
        "--only",
        nargs="+",
        choices=list(WORKLOADS),
        metavar="WORKLOAD",
        help=f"run only these workloads: {', '.join(WORKLOADS)}",
    )
    p.add_argument(
        "--savers",
        nargs="+",
        metavar="NAME",
        help="run only savers whose name contains one of these (case-insensitive)",
    )
    p.add_argument(
        "--out",
        type=Path,
        help=f"output directory (default: {DEFAULT_OUT.name}/ for --full, {QUICK_OUT.name}/ otherwise)",
    )
    return p.parse_args(argv)


def output_dir(args: argparse.Namespace) -> Path:
    """`--out`, else the committed results for `--full` and an ignored folder for quick runs."""
    return Path(args.out) if args.out else DEFAULT_OUT if args.full else QUICK_OUT


def select(factories: list[SaverFactory], names: list[str] | None) -> list[SaverFactory]:
    if not names:
        return factories
    wanted = [n.lower() for n in names]
    return [f for f in factories if any(w in f.name.lower() for w in wanted)]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    profile = FULL if args.full else QUICK
    command = shlex.join(["python", "-m", "benchmarks", *argv])
    logging.basicConfig(level=logging.ERROR)  # savers' warnings would drown the progress lines
    warnings.simplefilter("ignore")
    progress = Progress()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with BenchEnv.create() as env:
        where = "dedicated database" if env.dedicated_db else "shared database"
        progress.line(
            f"run {env.run_id}: {command}  ({where} {env.db_name}, redis {env.redis_url})"
        )
        factories = select(all_factories(), args.savers)
        for f in factories:
            progress.line(f"{'probe':<28} {f.name:<40} {f.probe(env) or 'available'}")
        stack_note = redis_stack_note(env)
        ctx = Context(env, profile, factories, progress)
        ctx.notes["graph"] = build_case_graph(InMemorySaver()).source
        if stack_note:
            ctx.notes["redis-stack"] = stack_note
        for name, run in WORKLOADS.items():
            if args.only and name not in args.only:
                continue
            progress.line(f"--- {name}")
            run(ctx)
        machine = machine_info(env)
    add_ratios(ctx.results, BASELINE_POSTGRES, BASELINE_FLOOR)
    meta = {
        "command": command,
        "profile": profile.name,
        "run_id": env.run_id,
        "started": started,
        "duration_s": time.monotonic() - progress.start,
        "machine": machine,
        "notes": ctx.notes,
        "profile_settings": profile.__dict__,
    }
    savers = [
        {
            "name": f.name,
            "status": f.unavailable or "available",
            "conformance": ctx.conformance.get(f.name, {}).get("summary", "not run"),
        }
        for f in factories
    ]
    for path in write(output_dir(args), meta, savers, ctx.results, ctx.conformance):
        progress.line(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
