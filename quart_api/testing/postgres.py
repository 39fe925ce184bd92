"""Real PostgreSQL for tests: one server, a new database per test.

    with PostgresServer() as server:
        url = server.create_database("test_things")   # postgresql+asyncpg://...

PostgreSQL refuses to run as root: then `initdb` and `postgres` run as the `postgres`
system user, in a temp dir that user owns.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from quart_api.testing._process import HOST, Server, ServerError, missing_binary

__all__ = ["PostgresServer", "postgres_bindir"]


def postgres_bindir() -> Path:
    """Where `postgres`, `initdb` and friends live.

    Debian keeps them off PATH in /usr/lib/postgresql/<version>/bin: take the highest
    version there, else ask `pg_config --bindir`, else look on PATH.
    """
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda path: [int(n) for n in re.findall(r"\d+", path.parent.parent.name)],
    )
    if found:
        return found[-1].parent
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        bindir = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if bindir and (Path(bindir) / "postgres").exists():
            return Path(bindir)
    on_path = shutil.which("postgres")
    if on_path is not None:
        return Path(on_path).parent
    raise ServerError(missing_binary("postgres", "postgresql"))


_DBNAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class PostgresServer(Server):
    """PostgreSQL tuned for tests (no fsync), trusting every local connection as `postgres`.

    PostgreSQL refuses to run as root: then the temp dir belongs to the `postgres`
    system user and `initdb` and `postgres` run as that user.
    """

    name = "postgres"
    # SIGTERM is a "smart" shutdown that waits for every client to disconnect; SIGINT
    # ("fast") ends their sessions, so a test's open pool cannot stall stop().
    stop_signal = signal.SIGINT
    startup_timeout = 30.0

    def __init__(self, port: int | None = None, *, host: str = HOST) -> None:
        super().__init__(port, host=host)
        self.bindir = postgres_bindir()
        self._user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None

    def url(self, dbname: str = "postgres") -> str:
        """SQLAlchemy URL (asyncpg driver) of database `dbname`."""
        return f"postgresql+asyncpg://postgres@{self.host}:{self.port}/{dbname}"

    def dsn(self, dbname: str = "postgres") -> str:
        """libpq URL of database `dbname`, for `asyncpg.connect()` and psql."""
        return f"postgresql://postgres@{self.host}:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """(Re)create an empty database `name` and return its SQLAlchemy URL."""
        self._psql(
            f"DROP DATABASE IF EXISTS {self._checked(name)} WITH (FORCE)",
            f"CREATE DATABASE {name}",
        )
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database `name`, ending any session still connected to it."""
        self._psql(f"DROP DATABASE IF EXISTS {self._checked(name)} WITH (FORCE)")

    @staticmethod
    def _checked(name: str) -> str:
        if not _DBNAME.fullmatch(name):
            raise ValueError(
                f"Database name {name!r} is not a lower-case SQL identifier "
                "(letters, digits, underscores; at most 63)."
            )
        return name

    def _psql(self, *statements: str) -> None:
        command = [
            str(self.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
            "-h", self.host, "-p", str(self.port), "-U", "postgres", "-d", "postgres",
        ]  # fmt: skip
        for statement in statements:  # one -c each: CREATE DATABASE needs autocommit
            command += ["-c", statement]
        done = subprocess.run(
            command, capture_output=True, text=True, env=self._env(), timeout=60, check=False
        )
        if done.returncode != 0:
            raise ServerError(f"psql on {self!r} failed: {done.stderr.strip()}")

    @staticmethod
    def _env() -> dict[str, str]:
        """Our environment without PG* variables, which would override our arguments."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env["PGCONNECT_TIMEOUT"] = "5"
        return env

    def _popen_kwargs(self) -> dict[str, Any]:
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}

    def _temp_root(self) -> str | None:
        """The postgres user must be able to enter every parent of its temp dir."""
        base = Path(tempfile.gettempdir())
        if self._user is None or all(p.stat().st_mode & 0o001 for p in [base, *base.parents]):
            return None
        return "/tmp"  # world-traversable; the temp dir itself stays private (0700)

    def _prepare(self) -> None:
        if self._user is not None:
            os.chown(self.dir, self._user.pw_uid, self._user.pw_gid)
        initdb = [
            str(self.bindir / "initdb"), "-D", str(self.dir / "data"),
            "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C",
        ]  # fmt: skip
        done = subprocess.run(
            initdb,
            capture_output=True,
            text=True,
            cwd=self.dir,
            env=self._env(),
            timeout=120,
            check=False,
            **self._popen_kwargs(),
        )
        if done.returncode != 0:
            raise ServerError(f"initdb failed for {self!r}:\n{done.stdout}\n{done.stderr}")

    def _command(self) -> list[str]:
        settings = {
            "listen_addresses": self.host,
            "port": self.port,
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": 400,
        }
        command = [str(self.bindir / "postgres"), "-D", str(self.dir / "data"), "-k", str(self.dir)]
        for key, value in settings.items():
            command += ["-c", f"{key}={value}"]
        return command

    def _is_ready(self, pid: int) -> bool:
        # postmaster.pid: line 1 the PID, line 8 "ready" once it accepts connections.
        try:
            lines = (self.dir / "data" / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        if len(lines) < 8 or lines[0] != str(pid) or lines[7].strip() != "ready":
            return False
        pg_isready = [
            str(self.bindir / "pg_isready"), "-q", "-t", "1",
            "-h", self.host, "-p", str(self.port), "-U", "postgres", "-d", "postgres",
        ]  # fmt: skip
        return subprocess.run(pg_isready, env=self._env(), check=False).returncode == 0
