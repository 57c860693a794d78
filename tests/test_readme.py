"""The README's code blocks marked `# runs as written` run as written, against the test servers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import redis

README = Path(__file__).resolve().parent.parent / "README.md"
MARK = "# runs as written"
README_REDIS_DB = 13  # the snippets use the default key prefix: keep them off the shared db 0


def runnable_blocks() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    return [b for b in blocks if b.startswith(MARK)]


def test_the_readme_has_runnable_blocks() -> None:
    assert len(runnable_blocks()) >= 1


@pytest.mark.parametrize("index", range(len(runnable_blocks())))
def test_readme_block_runs_as_written(
    index: int, redis_url: str, test_database_url: str, tmp_path: Path
) -> None:
    url = redis_url.rsplit("/", 1)[0] + f"/{README_REDIS_DB}"
    script = tmp_path / f"readme_block_{index}.py"
    script.write_text(runnable_blocks()[index])
    env = {**os.environ, "REDIS_URL": url, "DATABASE_URL": test_database_url}
    client = redis.Redis.from_url(url)
    try:
        out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "refund approved: yes" in out.stdout
    finally:
        for key in client.scan_iter(match="lts:*", count=1000):
            client.delete(key)
        client.close()
