"""Run LangGraph's own test directory (`libs/langgraph/tests` of langchain-ai/langgraph) with
TieredSaver as its `sync_checkpointer` and `async_checkpointer` fixtures.

    python -m devtools.langgraph_tests [--git DIR] [--ref 1.2.11] [--dest DIR] [-- PYTEST ARGS]

The tests are extracted at run time from a git directory of the repository (`--git`, or
`LTS_LANGGRAPH_GIT`; nothing of them is committed here), and their conftest.py gets three
lines that rebind the two fixtures to `devtools/langgraph_tests_fixtures.py`. Only the tests
that take a checkpointer run (`-k tiered`, the fixtures' one parameter); pass pytest arguments
after `--` to narrow further. Their extra test dependencies (pytest-mock, syrupy, the SQLite
saver their conftest imports) are installed with pip when missing. Exit status: pytest's.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from devtools.langgraph_src import GIT_ENV, extract

FIXTURES = Path(__file__).with_name("langgraph_tests_fixtures.py")
NEEDS = {"pytest_mock": "pytest-mock", "syrupy": "syrupy", "langgraph.checkpoint.sqlite": "langgraph-checkpoint-sqlite"}
HOOK = """

# --- appended by devtools/langgraph_tests.py: TieredSaver is every test's checkpointer ---
import importlib.util as _lts_util  # noqa: E402

_lts_spec = _lts_util.spec_from_file_location("lts_langgraph_fixtures", {path!r})
_lts = _lts_util.module_from_spec(_lts_spec)
_lts_spec.loader.exec_module(_lts)
sync_checkpointer, async_checkpointer, lts_database = _lts.sync_checkpointer, _lts.async_checkpointer, _lts.lts_database
"""


def _missing() -> list[str]:
    out = []
    for module, package in NEEDS.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            out.append(package)
    return out


def prepare(repo: Path, ref: str, dest: Path) -> Path:
    """Extract the tests at `ref` under `dest`, hook the fixtures in; the pytest root."""
    extract(repo, ref, ["libs/langgraph/tests"], dest)
    root = dest / "libs" / "langgraph"
    conftest = root / "tests" / "conftest.py"
    conftest.write_text(conftest.read_text() + HOOK.format(path=str(FIXTURES)))
    (root / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    return root


def main(argv: list[str]) -> int:
    own, _, extra = (argv[: argv.index("--")], None, argv[argv.index("--") + 1 :]) if "--" in argv else (argv, None, [])
    p = argparse.ArgumentParser(prog="python -m devtools.langgraph_tests", description=__doc__.splitlines()[0])
    p.add_argument("--git", type=Path, default=os.environ.get(GIT_ENV), help=f"langgraph git directory (or {GIT_ENV})")
    p.add_argument("--ref", default="1.2.11", help="tag or commit of the tests (default 1.2.11)")
    p.add_argument("--dest", type=Path, help="where to extract (default: a new temporary directory)")
    args = p.parse_args(own)
    if args.git is None:
        p.error(f"name the langgraph git directory with --git or {GIT_ENV}")
    missing = _missing()
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *missing], check=True)
    dest = args.dest or Path(tempfile.mkdtemp(prefix="lts-langgraph-tests-"))
    root = prepare(args.git, args.ref, dest)
    env = {**os.environ, "NO_DOCKER": "true"}
    command = [sys.executable, "-m", "pytest", "tests", "-k", "tiered", "-p", "no:cacheprovider", "-q", *extra]
    print(f"{root}$ {' '.join(command)}", flush=True)
    return subprocess.run(command, cwd=root, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
