"""Run LangGraph's own test directory (`libs/langgraph/tests` of langchain-ai/langgraph) with
TieredSaver as its `sync_checkpointer` and `async_checkpointer` fixtures.

    python -m devtools.langgraph_tests [--git DIR] [--ref 1.2.11] [--dest DIR] [-- PYTEST ARGS]

The tests are extracted at run time from a git directory of the repository (`--git`, or
`LTS_LANGGRAPH_GIT`; nothing of them is committed here), and their conftest.py gets three
lines that rebind the two fixtures to `devtools/langgraph_tests_fixtures.py`. Only the tests
that take a checkpointer run (`-k tiered`, the fixtures' one parameter); pass pytest arguments
after `--` to narrow further. Exit status: pytest's.

The tests of one langgraph release assert that release's behaviour (a newer langgraph adds
fields to interrupts, arguments to its internals), so they run in a virtualenv with the
langgraph version the extracted `pyproject.toml` names and this project installed editable
(`--venv`, created once and reused; default under the temporary directory), with their test
dependencies (pytest-mock, syrupy, the SQLite saver their conftest imports, ...).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from devtools.langgraph_src import GIT_ENV, extract

FIXTURES = Path(__file__).with_name("langgraph_tests_fixtures.py")
ROOT = Path(__file__).resolve().parents[1]
TEST_DEPS = (
    "pytest", "pytest-timeout", "pytest-mock", "pytest-repeat", "syrupy", "anyio", "pycryptodome",
    "langgraph-checkpoint-sqlite", "langgraph-checkpoint-postgres",
)  # fmt: skip
HOOK = """

# --- appended by devtools/langgraph_tests.py: TieredSaver is every test's checkpointer ---
import importlib.util as _lts_util  # noqa: E402

_lts_spec = _lts_util.spec_from_file_location("lts_langgraph_fixtures", {path!r})
_lts = _lts_util.module_from_spec(_lts_spec)
_lts_spec.loader.exec_module(_lts)
sync_checkpointer, async_checkpointer, lts_database = _lts.sync_checkpointer, _lts.async_checkpointer, _lts.lts_database
"""


def langgraph_version(root: Path) -> str:
    """The langgraph version the extracted tests belong to."""
    found = re.search(r'^version = "([^"]+)"', (root / "pyproject.toml").read_text(), re.MULTILINE)
    if found is None:
        raise SystemExit(f"no version in {root / 'pyproject.toml'}")
    return found.group(1)


def venv_python(venv: Path, version: str) -> Path:
    """The interpreter of a virtualenv with langgraph `version`, this project and the test
    dependencies (created when missing)."""
    python = venv / "bin" / "python"
    stamp = venv / f".lts-langgraph-{version}"
    if not stamp.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-e", f"{ROOT}[binary]", f"langgraph=={version}", *TEST_DEPS],
            check=True,
        )  # fmt: skip
        stamp.touch()
    return python


def prepare(repo: Path, ref: str, dest: Path) -> Path:
    """Extract the tests at `ref` under `dest`, hook the fixtures in; the pytest root."""
    extract(repo, ref, ["libs/langgraph/tests", "libs/langgraph/pyproject.toml"], dest)  # their pytest options
    root = dest / "libs" / "langgraph"
    conftest = root / "tests" / "conftest.py"
    conftest.write_text(conftest.read_text() + HOOK.format(path=str(FIXTURES)))
    return root


def main(argv: list[str]) -> int:
    own, _, extra = (argv[: argv.index("--")], None, argv[argv.index("--") + 1 :]) if "--" in argv else (argv, None, [])
    p = argparse.ArgumentParser(prog="python -m devtools.langgraph_tests", description=__doc__.splitlines()[0])
    p.add_argument("--git", type=Path, default=os.environ.get(GIT_ENV), help=f"langgraph git directory (or {GIT_ENV})")
    p.add_argument("--ref", default="1.2.11", help="tag or commit of the tests (default 1.2.11)")
    p.add_argument("--dest", type=Path, help="where to extract (default: a new temporary directory)")
    p.add_argument("--venv", type=Path, help="virtualenv to run them in (default: one per langgraph version, reused)")
    args = p.parse_args(own)
    if args.git is None:
        p.error(f"name the langgraph git directory with --git or {GIT_ENV}")
    dest = args.dest or Path(tempfile.mkdtemp(prefix="lts-langgraph-tests-"))
    root = prepare(args.git, args.ref, dest)
    version = langgraph_version(root)
    python = venv_python(args.venv or Path(tempfile.gettempdir()) / f"lts-langgraph-{version}-venv", version)
    env = {**os.environ, "NO_DOCKER": "true"}
    where = [] if any(a.startswith("tests/") for a in extra) else ["tests"]
    command = [str(python), "-m", "pytest", *where, "-k", "tiered", "-p", "no:cacheprovider", "-q", *extra]
    print(f"{root}$ {' '.join(command)}", flush=True)
    return subprocess.run(command, cwd=root, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
