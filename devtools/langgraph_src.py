"""Folders of the langgraph repository (langchain-ai/langgraph) extracted from a git directory
at run time, for tests that run LangGraph's own code against the saver: the newer conformance
suite (`libs/checkpoint-conformance`, whose DeltaChannel capability no PyPI release has yet) and
LangGraph's test directory (`benchmarks/langgraph_tests.py`). Nothing of it is committed here.

    python -m devtools.langgraph_src GIT_DIR REF DEST FOLDER...

GIT_DIR is a clone (bare or not) of the repository; REF a tag or commit (`1.2.11`, `HEAD`).
The environment variable `LTS_LANGGRAPH_GIT` names the git directory for the tests.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

GIT_ENV = "LTS_LANGGRAPH_GIT"


def git_dir() -> Path | None:
    """The langgraph git directory the environment names, or None."""
    value = os.environ.get(GIT_ENV)
    return Path(value) if value else None


def extract(repo: Path, ref: str, folders: list[str], dest: Path) -> Path:
    """Extract `folders` of `repo` at `ref` under `dest` (which it returns)."""
    archive = subprocess.run(
        ["git", "--git-dir", str(_git_dir_of(repo)), "archive", "--format=tar", ref, *folders],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def _git_dir_of(repo: Path) -> Path:
    return repo / ".git" if (repo / ".git").is_dir() else repo


if __name__ == "__main__":
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    print(extract(Path(sys.argv[1]), sys.argv[2], sys.argv[4:], Path(sys.argv[3])))
