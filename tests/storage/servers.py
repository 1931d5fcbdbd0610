"""Private, throw-away PostgreSQL and Redis servers for the storage tests.

`PostgresServer` runs Debian's `initdb` and `pg_ctl` from
/usr/lib/postgresql/<version>/bin on a free loopback port, with its data and
unix-socket directory in a fresh temporary directory. PostgreSQL refuses to
run as root, so as root the binaries run as the `postgres` system user
(`runuser`), owning that directory. `RedisServer` runs `redis-server` in the
foreground without persistence. Both are the real servers; nothing is
faked. When the binaries are missing the tests that need them are skipped,
unless `TRUSTEE_REQUIRE_DB_SERVERS=1` (set by .ci/run) makes that a failure.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest
import redis

from tests.procs import Proc, free_port

PG_ROOT = Path("/usr/lib/postgresql")
REQUIRE_ENV = "TRUSTEE_REQUIRE_DB_SERVERS"


def missing(what: str) -> None:
    """Skip (or fail, in CI) because a server binary is not installed."""
    message = f"{what} is not installed (apt-get install postgresql redis-server)"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(message)
    pytest.skip(message)


def postgres_bin() -> Path | None:
    """The bin directory of the newest PostgreSQL under /usr/lib/postgresql."""
    versions = [p for p in PG_ROOT.glob("*/bin") if (p / "initdb").exists() and re.fullmatch(r"\d+", p.parent.name)]
    return max(versions, key=lambda p: int(p.parent.name), default=None)


class PostgresServer:
    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="pytrustee-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self.root.chmod(0o700)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")
        self.url = self.database_url("postgres")

    def _run(self, program: str, *args: str) -> None:
        result = subprocess.run([*self._as_user, str(self.bindir / program), *args], capture_output=True, text=True, check=False,
                                timeout=120, cwd=self.root)
        if result.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(f"{program} failed ({result.returncode}):\n{result.stdout}{result.stderr}{log}")

    def database_url(self, name: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def new_database(self) -> str:
        """A fresh, empty database's URL."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.database_url(name)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


class RedisServer:
    def __init__(self, program: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = Proc([program, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                          "--daemonize", "no"], log, port=self.port)

    def flush(self) -> None:
        with redis.Redis.from_url(self.url) as client:
            client.flushall()

    def stop(self) -> None:
        self.proc.stop()


def start_postgres() -> PostgresServer:
    bindir = postgres_bin()
    if bindir is None:
        missing("PostgreSQL (/usr/lib/postgresql/<version>/bin/initdb)")
        raise AssertionError("unreachable")
    return PostgresServer(bindir)


def start_redis(log: Path) -> RedisServer:
    program = shutil.which("redis-server")
    if program is None:
        missing("redis-server")
        raise AssertionError("unreachable")
    return RedisServer(program, log)
