"""The README and docs/*.md as written: every Python block runs against the test servers, every
command line parses with the real parser, and every `--help` block is what the tool prints."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import redis

from langgraph_tiered_saver.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARK = "# runs as written"
CLUSTER_MARK = "# runs against a Redis Cluster"
README_REDIS_DB = 13  # the snippets use the default key prefix: keep them off the shared db 0
FENCE = re.compile(r"^([ \t]*)```(\w*)\n(.*?)^\1```[ \t]*$", re.M | re.S)
PROGS = ("langgraph-tiered-saver", "python -m langgraph_tiered_saver")
INVOKED = tuple(f"{prog} " for prog in PROGS)  # the tool with arguments, not its name alone
HELP_COLUMNS = "100"


def fenced(page: Path) -> list[tuple[str, str]]:
    """(language, text) of each fenced block, indentation removed (blocks inside lists)."""
    return [(m.group(2), textwrap.dedent(m.group(3))) for m in FENCE.finditer(page.read_text())]


def python_blocks(mark: str) -> list[tuple[str, str]]:
    return [
        (f"{page.relative_to(ROOT)}#{i}", text)
        for page in PAGES
        for i, (lang, text) in enumerate(fenced(page))
        if lang == "python" and text.startswith(mark)
    ]


def command_lines() -> list[tuple[str, str]]:
    """Each invocation shown: lines of non-Python blocks, and inline code spans, that start with
    the tool's name (help blocks, whose lines start with `$ `, are checked below)."""
    found: list[tuple[str, str]] = []
    for page in PAGES:
        name = str(page.relative_to(ROOT))
        for lang, text in fenced(page):
            if lang != "python":
                found += [(name, line.strip()) for line in text.splitlines() if line.strip().startswith(INVOKED)]
        prose = FENCE.sub("", page.read_text())
        for span in re.findall(r"(?<!`)`([^`]+)`(?!`)", prose):
            span = " ".join(span.split())
            if span.startswith(INVOKED):
                found.append((name, span))
    return found


def help_blocks() -> list[tuple[str, list[str], str]]:
    out = []
    for page in PAGES:
        for lang, text in fenced(page):
            first, _, rest = text.partition("\n")
            if lang == "text" and first.startswith("$ langgraph-tiered-saver ") and first.endswith("--help"):
                out.append((str(page.relative_to(ROOT)), shlex.split(first)[2:], rest.rstrip("\n")))
    return out


def test_every_python_block_is_run() -> None:
    """A block that neither runs as written nor against a cluster would go unchecked."""
    unmarked = [
        f"{page.relative_to(ROOT)}: {text.splitlines()[0]}"
        for page in PAGES
        for lang, text in fenced(page)
        if lang in ("python", "py") and not text.startswith((MARK, CLUSTER_MARK))
    ]
    assert unmarked == []
    assert len(python_blocks(MARK)) >= 5 and command_lines() and help_blocks()


@pytest.mark.parametrize("name,code", python_blocks(MARK), ids=[n for n, _ in python_blocks(MARK)])
def test_block_runs_as_written(
    name: str, code: str, redis_url: str, test_database_url: str, tmp_path: Path
) -> None:
    url = redis_url.rsplit("/", 1)[0] + f"/{README_REDIS_DB}"
    out = _run(code, tmp_path, {"REDIS_URL": url, "DATABASE_URL": test_database_url}, url)
    if "# refund approved: yes" in code:
        assert "refund approved: yes" in out


@pytest.mark.parametrize("name,code", python_blocks(CLUSTER_MARK), ids=[n for n, _ in python_blocks(CLUSTER_MARK)])
def test_cluster_block_runs(name: str, code: str, redis_cluster: object, test_database_url: str, tmp_path: Path) -> None:
    cluster_url = redis_cluster.url  # type: ignore[attr-defined]
    _run(code, tmp_path, {"REDIS_CLUSTER_URL": cluster_url, "DATABASE_URL": test_database_url}, None)


def _run(code: str, tmp_path: Path, env: dict[str, str], clean_url: str | None) -> str:
    script = tmp_path / "block.py"
    script.write_text(code)
    try:
        done = subprocess.run(
            [sys.executable, str(script)], env={**os.environ, **env}, capture_output=True, text=True, timeout=180
        )
        assert done.returncode == 0, done.stderr
        return done.stdout
    finally:
        if clean_url is not None:
            client = redis.Redis.from_url(clean_url)
            for key in client.scan_iter(match="lts:*", count=1000):
                client.delete(key)
            client.close()


@pytest.mark.parametrize("page,line", command_lines(), ids=[f"{p}: {line}" for p, line in command_lines()])
def test_command_line_parses(page: str, line: str) -> None:
    words = shlex.split(line)
    args = words[1:] if words[0] == PROGS[0] else words[3:]
    try:
        build_parser().parse_args(args)
    except SystemExit as exc:
        pytest.fail(f"{page}: `{line}` does not parse (exit {exc.code})")


@pytest.mark.parametrize("page,args,shown", help_blocks(), ids=[" ".join(a) for _, a, _ in help_blocks()])
def test_help_block_is_what_the_tool_prints(
    page: str, args: list[str], shown: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", HELP_COLUMNS)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.raises(SystemExit):
        build_parser().parse_args(args)
    assert printed.getvalue().rstrip("\n") == shown, f"{page}: paste the output of `COLUMNS={HELP_COLUMNS} langgraph-tiered-saver {' '.join(args)}`"


def test_the_clis_own_usage_lines_parse() -> None:
    """The examples in `python -m langgraph_tiered_saver --help`'s module docstring."""
    import langgraph_tiered_saver.cli.main as cli

    for line in (cli.__doc__ or "").splitlines():
        if line.strip().startswith(PROGS[1]):
            words = shlex.split(line.split("  #")[0])
            build_parser().parse_args(words[3:])


def test_make_targets_shown_exist() -> None:
    """`make demo`, `make test`, ...: each target shown resolves (`make -n`, nothing run)."""
    shown = {
        line.split("#")[0].split()[1]
        for page in PAGES
        for lang, text in fenced(page)
        if lang == "bash"
        for line in text.splitlines()
        if line.startswith("make ")
    }
    assert {"demo", "test"} <= shown
    for target in sorted(shown):
        done = subprocess.run(["make", "-n", "-C", str(ROOT), target], capture_output=True, text=True)
        assert done.returncode == 0, f"make {target}: {done.stderr}"


def test_install_lines_name_real_extras() -> None:
    """Every extra a `pip install` line or the README's table names is one pyproject defines,
    and the table names them all."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    defined = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    named: set[str] = set()
    for page in PAGES:
        for match in re.finditer(r"pip install '?langgraph-tiered-saver\[([^\]]+)\]", page.read_text()):
            named |= {extra.strip() for extra in match.group(1).split(",")}
    assert named and named <= defined
    readme = (ROOT / "README.md").read_text()
    table = {extra for row in re.findall(r"^\| (`[^|]+`) \|", readme, re.M) for extra in re.findall(r"`([\w-]+)`", row)}
    assert defined <= table, f"extras missing from the README's table: {sorted(defined - table)}"
