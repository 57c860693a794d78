"""A private PgBouncer in transaction pooling mode, for tests: the setup that breaks clients which
rely on session state or server-side prepared statements. Debian package `pgbouncer`."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from .servers import ServerUnavailable, _pg_os_user, free_port


def find_pgbouncer() -> str | None:
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(p, os.X_OK)), None
    )


class PrivatePgBouncer:
    """`pool_mode = transaction` in front of `host:port`, on a free port, for the given roles
    (trust auth: the server behind it decides). Stopped by PID."""

    def __init__(self, host: str, port: int, roles: list[str], *, pool_size: int = 5) -> None:
        binary = find_pgbouncer()
        if binary is None:
            raise ServerUnavailable("pgbouncer is not installed (Debian package 'pgbouncer')")
        self.binary = binary
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="lts-pgbouncer-"))
        (self.dir / "users.txt").write_text("".join(f'"{role}" ""\n' for role in roles))
        (self.dir / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={host} port={port}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {self.dir / 'users.txt'}\n"
            f"pool_mode = transaction\ndefault_pool_size = {pool_size}\nmax_client_conn = 1000\n"
            "ignore_startup_parameters = extra_float_digits,options\n"
            f"logfile = {self.dir / 'pgbouncer.log'}\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, user: str, dbname: str) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> PrivatePgBouncer:
        cmd = [self.binary, str(self.dir / "pgbouncer.ini")]
        user = _pg_os_user()  # pgbouncer refuses to run as root
        if user is not None:
            shutil.chown(self.dir, user)
            for path in self.dir.iterdir():
                shutil.chown(path, user)
            cmd = ["runuser", "-u", user, "--", *cmd]
        self.process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerUnavailable(f"pgbouncer exited: {self.process.stderr.read().decode() if self.process.stderr else ''}")
            try:
                psycopg.connect(f"host=127.0.0.1 port={self.port} dbname=pgbouncer user=pgbouncer", connect_timeout=1).close()
            except psycopg.OperationalError as exc:
                if "Connection refused" not in str(exc):
                    return self  # it answers (and refuses the admin login): up
                time.sleep(0.05)
            else:
                return self
        raise ServerUnavailable("pgbouncer did not start listening within 10 s")

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PrivatePgBouncer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
