"""The langgraph repository's newer conformance suite (`libs/checkpoint-conformance`), whose
DeltaChannel capability no PyPI release has yet (0.0.2 is the latest): tests/servers/test_conformance.py
runs again in a child process with that suite first on its path. The suite is extracted at run
time from a git directory of langchain-ai/langgraph named by `LTS_LANGGRAPH_GIT` (never
committed here); without one the test skips, saying so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.langgraph_src import GIT_ENV, extract, git_dir

ROOT = Path(__file__).resolve().parents[2]
SUITE = "libs/checkpoint-conformance"


def test_newer_conformance_suite_with_delta_channel_history(tmp_path: Path) -> None:
    repo = git_dir()
    if repo is None:
        pytest.skip(f"newer conformance suite: no PyPI release has it; set {GIT_ENV} to a langgraph git dir to run it")
    ref = os.environ.get("LTS_LANGGRAPH_CONFORMANCE_REF", "HEAD")
    src = extract(repo, ref, [SUITE], tmp_path) / SUITE
    env = {
        **os.environ, "LTS_CONFORMANCE_REQUIRE_DELTA": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(src), str(ROOT), os.environ.get("PYTHONPATH")])),
    }  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/servers/test_conformance.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert "4 passed" in done.stdout, done.stdout[-3000:]
