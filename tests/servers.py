"""Real Redis, memcached, PostgreSQL and Redis Cluster servers for tests and benchmarks.

Each server is a child process of ours on a free loopback port, in its own temporary
directory, never on a default port (Debian's packaged daemons may hold those, and other
test sessions may run beside us). Fault tests drive the process directly: `stop()`,
`restart()` (same port, same data dir), `pause()` and `resume()` (SIGSTOP/SIGCONT).

    with RedisServer() as server:
        client = redis.asyncio.Redis.from_url(server.url)

`start()` returns once the server answers. `stop()` keeps the temp dir, so `start()`
brings the same server back; `close()` (or leaving the `with` block) also removes it.
Whatever is still open at interpreter exit is closed then.

No pytest import here: `bench/` uses this module too.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

import redis

__all__ = [
    "HostedMemcachedServer",
    "HostedPostgresServer",
    "HostedRedisServer",
    "MemcachedServer",
    "PostgresServer",
    "RedisClusterServer",
    "RedisReplicatedCluster",
    "RedisSentinelGroup",
    "RedisServer",
    "SentinelServer",
    "Server",
    "ServerError",
    "find_binary",
    "free_port",
    "free_port_on",
    "postgres_bindir",
]

HOST = "127.0.0.1"
CLUSTER_BUS_OFFSET = 10_000  # a Redis Cluster node also listens on port + 10000


class ServerError(RuntimeError):
    """A server binary is missing, or a server failed to start, stop or answer."""


class _PortTaken(ServerError):
    """Someone else bound the port between our probe and the server's bind."""


def find_binary(name: str, package: str) -> str:
    """Path of `name` on PATH, or a `ServerError` saying which Debian package provides it."""
    path = shutil.which(name)
    if path is None:
        raise ServerError(_missing(name, package))
    return path


def _missing(name: str, package: str) -> str:
    return (
        f"{name!r} not found: install the Debian package {package!r} "
        f"(apt-get install {package}); `make test` installs it when run as root."
    )


_handed_out: set[int] = set()


def _bindable(port: int) -> int | None:
    """The port bound on loopback (0: the kernel picks one), or None if it is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return None
        port_: int = sock.getsockname()[1]
        return port_


def free_port(*, below: int = 65_536, also_free: int | None = None) -> int:
    """A loopback TCP port that nothing listens on now, chosen by the kernel.

    `below` bounds it (a cluster node needs port + 10000 to exist) and `also_free`
    is an offset whose port must be free as well (the cluster bus). Ports handed out
    earlier in this process are never returned again, so servers picked together but
    started one by one cannot collide.
    """
    for _ in range(500):
        port = _bindable(0)
        if port is None or port >= below or port in _handed_out:
            continue
        if also_free is not None and _bindable(port + also_free) is None:
            continue
        _handed_out.add(port)
        return port
    raise ServerError(f"no free loopback port below {below} (with +{also_free} free)")


def _children(pid: int) -> list[int]:
    """PIDs whose parent is `pid`.

    PostgreSQL backends call setsid(), so signalling the postmaster's process group
    would not reach them; pausing a server must stop its children too.
    """
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the process went away while we read
        if ppid == pid:
            kids.append(int(stat.parent.name))
    return kids


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


_live: set[Server] = set()


@atexit.register
def _close_all() -> None:
    """Stop whatever a crashed or careless caller left running, and remove its temp dir.

    Only in the process that started it: a forked child exiting must not take the
    parent's servers down.
    """
    for server in list(_live):
        if server.owner_pid == os.getpid():
            server.close()


class Server:
    """One server process on a loopback port, in its own temp dir.

    Subclasses say how to run the binary and how to tell that it answers.
    `port` is picked at construction (so URLs exist before `start()`), and may change
    only if another process steals it before the first start; after that it is fixed.
    """

    name: ClassVar[str]
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    startup_timeout: ClassVar[float] = 15.0
    host: ClassVar[str] = HOST

    def __init__(self, port: int | None = None) -> None:
        self._port_fixed = port is not None
        self.owner_pid = os.getpid()
        self.port: int = port if port is not None else self._pick_port()
        self.paused = False
        self._dir: Path | None = None
        self._served = False  # once clients may know the port, it never changes
        self._process: subprocess.Popen[bytes] | None = None

    # -- what subclasses provide ---------------------------------------------------

    def _pick_port(self) -> int:
        return free_port()

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _is_ready(self, pid: int) -> bool:
        """True once process `pid` answers a real request on our port.

        Checking the PID matters: if another process took the port before our server
        bound it, our server exits and the one answering is not ours.
        """
        raise NotImplementedError

    def _prepare(self) -> None:
        """One-time set-up of a new temp dir, before the first start."""

    def _popen_kwargs(self) -> dict[str, Any]:
        return {}

    def _temp_root(self) -> str | None:
        return None

    # -- lifecycle ------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """PID of the running server process, or None."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def running(self) -> bool:
        """The process is alive (it may be paused)."""
        return self._process is not None and self._process.poll() is None

    @property
    def dir(self) -> Path:
        """The server's temp dir (data, sockets, `server.log`)."""
        if self._dir is None:
            raise ServerError(f"{self!r} has no temp dir: call start() first")
        return self._dir

    @property
    def log_path(self) -> Path:
        return self.dir / "server.log"

    def start(self) -> Self:
        """Start the server (a no-op while it runs) and return once it answers."""
        if self.running:
            return self
        if self._dir is None:
            prefix = f"quart-api-{self.name}-"
            self._dir = Path(tempfile.mkdtemp(prefix=prefix, dir=self._temp_root()))
            _live.add(self)
            self._prepare()
        for attempt in range(1, 4):
            try:
                self._spawn_and_wait()
                break
            except _PortTaken:
                if self._port_fixed or self._served or attempt == 3:
                    raise
                self.port = self._pick_port()
        self._served = True
        return self

    def _spawn_and_wait(self) -> None:
        self.paused = False
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                start_new_session=True,  # a Ctrl-C in the terminal is for pytest, not for us
                **self._popen_kwargs(),
            )
        self._process = process
        deadline = time.monotonic() + self.startup_timeout
        while not self._is_ready(process.pid):
            if process.poll() is not None:
                self._process = None
                tail = self._log_tail(log_offset)
                error = _PortTaken if "Address already in use" in tail else ServerError
                raise error(f"{self!r} exited with code {process.returncode} on start:\n{tail}")
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(
                    f"{self!r} did not answer within {self.startup_timeout} s; "
                    f"log {self.log_path}:\n{self._log_tail(log_offset)}"
                )
            time.sleep(0.02)

    def _log_tail(self, offset: int = 0, lines: int = 20) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                text = log.read().decode(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process by PID: `stop_signal`, wait, then SIGKILL. Keeps the temp dir."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            children = _children(process.pid)
            process.send_signal(self.stop_signal)
            if self.paused:  # a stopped process holds the signal until it is continued
                _signal([*children, process.pid], signal.SIGCONT)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal([process.pid, *_children(process.pid), *children], signal.SIGKILL)
                process.wait()
        self.paused = False

    def restart(self) -> None:
        """Stop and start again: same port, same data dir, new PID."""
        self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP the server and its children: connections open, nothing answers."""
        if self._process is None or not self.running:
            raise ServerError(f"{self!r} is not running, so it cannot be paused")
        main = self._process.pid
        _signal([main], signal.SIGSTOP)  # first, so it forks no child we would miss
        _signal(_children(main), signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT what `pause()` stopped."""
        if self._process is not None and self.paused:
            main = self._process.pid
            _signal([*_children(main), main], signal.SIGCONT)
        self.paused = False

    def ensure_running(self) -> None:
        """Undo whatever a fault test left behind: resume if paused, start if stopped."""
        if self.running:
            self.resume()
        else:
            self.start()

    def close(self) -> None:
        """Stop the server and remove its temp dir."""
        self.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        _live.discard(self)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()  # __exit__ will not run
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.host}:{self.port}, pid={self.pid})"


class RedisServer(Server):
    """redis-server without persistence; `cluster=True` makes it a bare cluster node."""

    name = "redis"

    def __init__(self, port: int | None = None, *, cluster: bool = False) -> None:
        self.cluster = cluster
        super().__init__(port)

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def client(self) -> redis.Redis:
        """A short-timeout sync client for set-up work (not for the code under test)."""
        return redis.Redis(self.host, self.port, socket_timeout=2, socket_connect_timeout=2)

    def flush(self) -> None:
        """Delete every key (FLUSHALL)."""
        with self.client() as client:
            client.flushall()

    def _pick_port(self) -> int:
        if self.cluster:
            return free_port(below=65_536 - CLUSTER_BUS_OFFSET, also_free=CLUSTER_BUS_OFFSET)
        return free_port()

    def _command(self) -> list[str]:
        command = [
            find_binary("redis-server", "redis-server"),
            "--port", str(self.port),
            "--bind", self.host,
            "--protected-mode", "no",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.dir),
            "--logfile", "",
            "--daemonize", "no",
        ]  # fmt: skip
        if self.cluster:
            # nodes.conf lives in the temp dir, so a restarted node rejoins as itself.
            # A 2 s node timeout (default 15 s) bounds how long a new or restarted
            # cluster takes to report ok again (the rejoin delay is the node timeout,
            # clearing a FAIL flag takes twice it): ~2 s instead of up to 30 s.
            command += [
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-announce-ip", self.host,
                "--cluster-node-timeout", "2000",
            ]  # fmt: skip
        return command

    def _is_ready(self, pid: int) -> bool:
        try:
            with self.client() as client:
                return bool(client.info("server")["process_id"] == pid)
        except redis.RedisError:
            return False


class MemcachedServer(Server):
    """memcached, TCP only, 64 MB, 2 threads.

    memcached acts on SIGTERM at its next once-a-second clock tick, so `stop()` and
    `restart()` take up to a second.
    """

    name = "memcached"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def flush(self) -> None:
        """Invalidate every item (flush_all)."""
        reply = self._call(b"flush_all\r\n")
        if reply != b"OK\r\n":
            raise ServerError(f"{self!r} answered {reply!r} to flush_all")

    def _call(self, line: bytes, end: bytes = b"\r\n") -> bytes:
        """Send one text-protocol command and return its reply, read up to `end`."""
        with socket.create_connection((self.host, self.port), timeout=2) as sock:
            sock.sendall(line)
            reply = b""
            while not reply.endswith(end):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
            return reply

    def _command(self) -> list[str]:
        command = [
            find_binary("memcached", "memcached"),
            "-l", self.host, "-p", str(self.port), "-U", "0", "-m", "64", "-t", "2",
        ]  # fmt: skip
        if os.geteuid() == 0:
            command += ["-u", "root"]  # memcached refuses to run as root unless told to
        return command

    def _is_ready(self, pid: int) -> bool:
        try:
            stats = self._call(b"stats\r\n", end=b"END\r\n")
        except OSError:
            return False
        return f"STAT pid {pid}\r\n".encode() in stats


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
    raise ServerError(_missing("postgres", "postgresql"))


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

    def __init__(self, port: int | None = None) -> None:
        super().__init__(port)
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


class RedisClusterServer:
    """A Redis Cluster of `size` masters (no replicas) on loopback, each a `RedisServer`.

    Built with CLUSTER ADDSLOTS / SET-CONFIG-EPOCH / MEET (no redis-cli needed), and
    `start()` returns only once every node reports cluster_state:ok. `stop()`,
    `pause()` and friends act on every node; fault tests that want one node down use
    `nodes[i]` and then `ensure_running()` (which waits for the cluster to be ok again).
    `port` and `pid` are the first node's.

    With no replicas and a 2 s node timeout, a node paused or stopped for more than
    about 2 s is marked FAIL and the other nodes answer CLUSTERDOWN until it is back;
    a restarted node itself reports ok only ~2 s after it starts (Redis's rejoin delay).
    """

    host: ClassVar[str] = HOST
    SLOTS: ClassVar[int] = 16_384

    def __init__(self, size: int = 3, *, ready_timeout: float = 30.0) -> None:
        self.nodes = [RedisServer(cluster=True) for _ in range(size)]
        self.ready_timeout = ready_timeout

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def port(self) -> int:
        return self.nodes[0].port

    @property
    def pid(self) -> int | None:
        return self.nodes[0].pid

    @property
    def url(self) -> str:
        """`redis+cluster://h1:p1,h2:p2,...`, the form `REDIS_URL` takes for a cluster."""
        return "redis+cluster://" + ",".join(f"{self.host}:{port}" for port in self.ports)

    def start(self) -> Self:
        """Start every node, form the cluster if new, and wait for cluster_state:ok."""
        for node in self.nodes:
            node.start()
        if self._info(self.nodes[0])["cluster_slots_assigned"] == "0":
            self._create()
        self.wait_ok()
        return self

    def _create(self) -> None:
        size = len(self.nodes)
        bounds = [i * self.SLOTS // size for i in range(size + 1)]
        for i, node in enumerate(self.nodes):
            with node.client() as client:
                client.execute_command("CLUSTER ADDSLOTS", *range(bounds[i], bounds[i + 1]))
                # Distinct epochs, as redis-cli gives them; only allowed before MEET.
                client.execute_command("CLUSTER SET-CONFIG-EPOCH", i + 1)
        with self.nodes[0].client() as client:
            for node in self.nodes[1:]:
                client.execute_command("CLUSTER MEET", node.host, node.port)

    @staticmethod
    def _info(node: RedisServer) -> dict[str, str]:
        """CLUSTER INFO of one node, values as strings."""
        with node.client() as client:
            info: dict[str, str] = client.cluster("info")
            return info

    def states(self) -> list[str]:
        """Each node's cluster_state ("ok", "fail", or "down" if it does not answer)."""
        states = []
        for node in self.nodes:
            try:
                states.append(self._info(node)["cluster_state"])
            except redis.RedisError:
                states.append("down")
        return states

    def wait_ok(self) -> None:
        """Block until every node reports cluster_state:ok."""
        deadline = time.monotonic() + self.ready_timeout
        while (states := self.states()) != ["ok"] * len(self.nodes):
            if time.monotonic() > deadline:
                tails = "\n".join(f"{node!r}:\n{node._log_tail(lines=5)}" for node in self.nodes)
                raise ServerError(
                    f"cluster not ok after {self.ready_timeout} s: states {states}\n{tails}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def restart(self) -> None:
        """Restart every node on its port with its nodes.conf; waits for cluster_state:ok."""
        self.stop()
        self.start()

    def pause(self) -> None:
        for node in self.nodes:
            node.pause()

    def resume(self) -> None:
        for node in self.nodes:
            node.resume()

    def ensure_running(self) -> None:
        """Resume or restart any node left down, then wait for cluster_state:ok."""
        for node in self.nodes:
            node.ensure_running()
        self.wait_ok()

    def flush(self) -> None:
        """FLUSHALL on every node (each holds only its own slots' keys)."""
        for node in self.nodes:
            node.flush()

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()  # __exit__ will not run
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RedisClusterServer({self.url})"


# -- Several hosts on loopback (``make cluster-bench``) ----------------------------------
#
# The whole of 127.0.0.0/8 answers on `lo`, so each server below listens on an address
# of its own ("its host") and may announce another one: the address of a relay in
# front of it (bench/cluster/relay.py), which is where clients, replicas, other cluster
# nodes and sentinels reach it. The classes only take the addresses; starting relays
# is the caller's business (before `start()` when the servers must reach each other).


def free_port_on(
    hosts: tuple[str, ...], *, below: int = 65_536, also_free: int | None = None
) -> int:
    """A port that nothing listens on at any of ``hosts`` (and at +``also_free`` there).

    Like :func:`free_port` (never the same port twice in this process), but checked
    on every address that will bind it: a server's own and its relay's.
    """

    def bindable(host: str, port: int) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return False
            return True

    for _ in range(500):
        port = _bindable(0)
        if port is None or port >= below or port in _handed_out:
            continue
        ports = [port] if also_free is None else [port, port + also_free]
        if all(bindable(host, p) for host in hosts for p in ports):
            _handed_out.add(port)
            return port
    raise ServerError(f"no port free on {hosts} below {below} (with +{also_free} free)")


class HostedRedisServer(RedisServer):
    """redis-server on its own address, announcing ``announce_host`` (same port).

    ``cluster=True``: a cluster node whose `CLUSTER SLOTS`, `MOVED` and gossip name
    ``announce_host`` (bus port too), with partial coverage allowed (a failed
    primary's slots stop answering, not the whole cluster) and ``node_timeout_ms``.
    ``replica_of``: the announced address of the primary to replicate. A replica also
    announces ``announce_host`` to its primary, so sentinels find it there.
    """

    def __init__(
        self,
        host: str,
        announce_host: str | None = None,
        port: int | None = None,
        *,
        cluster: bool = False,
        replica_of: tuple[str, int] | None = None,
        node_timeout_ms: int = 2000,
    ) -> None:
        self.host = host  # type: ignore[misc]
        self.announce_host = announce_host or host
        self.replica_of = replica_of
        self.node_timeout_ms = node_timeout_ms
        super().__init__(port, cluster=cluster)

    @property
    def announced(self) -> tuple[str, int]:
        """Where everyone else reaches this server (its relay)."""
        return self.announce_host, self.port

    def _pick_port(self) -> int:
        hosts = (self.host, self.announce_host)
        if self.cluster:
            return free_port_on(
                hosts, below=65_536 - CLUSTER_BUS_OFFSET, also_free=CLUSTER_BUS_OFFSET
            )
        return free_port_on(hosts)

    def _command(self) -> list[str]:
        command = super()._command()
        if self.cluster:
            at = command.index("--cluster-announce-ip")
            del command[at : at + 2]
            at = command.index("--cluster-node-timeout")
            del command[at : at + 2]
            command += [
                "--cluster-announce-ip", self.announce_host,
                "--cluster-announce-port", str(self.port),
                "--cluster-announce-bus-port", str(self.port + CLUSTER_BUS_OFFSET),
                "--cluster-node-timeout", str(self.node_timeout_ms),
                "--cluster-require-full-coverage", "no",
            ]  # fmt: skip
        command += [
            "--replica-announce-ip", self.announce_host,
            "--replica-announce-port", str(self.port),
        ]  # fmt: skip
        if self.replica_of is not None:
            command += ["--replicaof", self.replica_of[0], str(self.replica_of[1])]
        return command

    def info(self, section: str) -> dict[str, Any]:
        """`INFO section`, asked directly (not through the relay)."""
        with self.client() as client:
            info: dict[str, Any] = client.info(section)
            return info

    def kill(self) -> None:
        """SIGKILL: the process dies at once, as in a crash (no shutdown, no last write)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        self.paused = False


class SentinelServer(Server):
    """A Redis Sentinel (`redis-server sentinel.conf --sentinel`) on its own address.

    It monitors the primary at ``primary`` (an announced address) as ``master_name``,
    announces ``announce_host``, and judges a primary down after ``down_after_ms``.
    Sentinel rewrites its config file as it learns, so a restart keeps what it knew.
    """

    name = "sentinel"

    def __init__(
        self,
        host: str,
        announce_host: str,
        *,
        master_name: str,
        primary: tuple[str, int],
        quorum: int = 2,
        down_after_ms: int = 2000,
        failover_timeout_ms: int = 10_000,
        port: int | None = None,
    ) -> None:
        self.host = host  # type: ignore[misc]
        self.announce_host = announce_host
        self.master_name = master_name
        self.primary = primary
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        super().__init__(port)

    @property
    def announced(self) -> tuple[str, int]:
        return self.announce_host, self.port

    def _pick_port(self) -> int:
        return free_port_on((self.host, self.announce_host))

    def _prepare(self) -> None:
        name = self.master_name
        lines = [
            f"port {self.port}",
            f"bind {self.host}",
            "protected-mode no",
            "daemonize no",
            f"dir {self.dir}",
            'logfile ""',
            f"sentinel announce-ip {self.announce_host}",
            f"sentinel announce-port {self.port}",
            "sentinel resolve-hostnames no",
            f"sentinel monitor {name} {self.primary[0]} {self.primary[1]} {self.quorum}",
            f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
            f"sentinel failover-timeout {name} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {name} 1",
        ]
        (self.dir / "sentinel.conf").write_text("\n".join(lines) + "\n")

    def _command(self) -> list[str]:
        return [
            find_binary("redis-server", "redis-server"),
            str(self.dir / "sentinel.conf"),
            "--sentinel",
        ]

    def client(self) -> redis.Redis:
        return redis.Redis(self.host, self.port, socket_timeout=2, socket_connect_timeout=2)

    def master(self) -> dict[str, Any]:
        """What this sentinel knows of the primary (`SENTINEL MASTER name`)."""
        with self.client() as client:
            state: dict[str, Any] = client.sentinel_master(self.master_name)
            return state

    def _is_ready(self, pid: int) -> bool:
        try:
            with self.client() as client:
                return bool(client.info("server")["process_id"] == pid)
        except redis.RedisError:
            return False


class RedisReplicatedCluster:
    """A Redis Cluster of ``primaries`` primaries with ``replicas`` replicas each.

    Node ``i`` listens on ``hosts[i]`` and announces ``announce[i]`` (where its relay
    listens, same port, bus port included): the relays must run before `start()`,
    since the nodes meet and replicate through them. Built with ADDSLOTS /
    SET-CONFIG-EPOCH / MEET / REPLICATE; `start()` returns once every node reports
    cluster_state:ok and every replica's link to its primary is up.
    """

    SLOTS: ClassVar[int] = 16_384

    def __init__(
        self,
        hosts: list[str],
        announce: list[str],
        *,
        primaries: int = 3,
        node_timeout_ms: int = 2000,
        ready_timeout: float = 60.0,
    ) -> None:
        if len(hosts) != len(announce) or len(hosts) % primaries:
            raise ValueError(f"{len(hosts)} hosts for {primaries} primaries: need a multiple")
        self.primary_count = primaries
        self.nodes = [
            HostedRedisServer(host, shown, cluster=True, node_timeout_ms=node_timeout_ms)
            for host, shown in zip(hosts, announce, strict=True)
        ]
        self.ready_timeout = ready_timeout

    @property
    def url(self) -> str:
        """`redis+cluster://` with every node's announced address."""
        return "redis+cluster://" + ",".join(f"{h}:{p}" for h, p in self.announced)

    @property
    def announced(self) -> list[tuple[str, int]]:
        return [node.announced for node in self.nodes]

    def start(self) -> Self:
        for node in self.nodes:
            node.start()
        if self.nodes[0].info("cluster")["cluster_enabled"] and self._slots_assigned() == 0:
            self._create()
        self.wait_ok()
        return self

    def _slots_assigned(self) -> int:
        with self.nodes[0].client() as client:
            return int(client.cluster("info")["cluster_slots_assigned"])

    def _node_id(self, node: HostedRedisServer) -> str:
        with node.client() as client:
            return str(client.execute_command("CLUSTER MYID").decode())

    def _create(self) -> None:
        primaries = self.nodes[: self.primary_count]
        bounds = [i * self.SLOTS // len(primaries) for i in range(len(primaries) + 1)]
        for i, node in enumerate(self.nodes):
            with node.client() as client:
                if i < len(primaries):
                    client.execute_command("CLUSTER ADDSLOTS", *range(bounds[i], bounds[i + 1]))
                client.execute_command("CLUSTER SET-CONFIG-EPOCH", i + 1)
        with self.nodes[0].client() as client:
            for node in self.nodes[1:]:
                client.execute_command("CLUSTER MEET", *node.announced)
        ids = [self._node_id(node) for node in primaries]
        deadline = time.monotonic() + self.ready_timeout
        for i, node in enumerate(self.nodes[len(primaries) :]):
            primary_id = ids[i % len(primaries)]
            while True:  # a node can replicate only a primary it has heard of
                try:
                    with node.client() as client:
                        client.execute_command("CLUSTER REPLICATE", primary_id)
                    break
                except redis.ResponseError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)

    def states(self) -> list[str]:
        states = []
        for node in self.nodes:
            try:
                with node.client() as client:
                    states.append(client.cluster("info")["cluster_state"])
            except redis.RedisError:
                states.append("down")
        return states

    def roles(self) -> list[str]:
        """Each node's role now ("master", "slave", or "down")."""
        roles = []
        for node in self.nodes:
            try:
                roles.append(str(node.info("replication")["role"]))
            except redis.RedisError:
                roles.append("down")
        return roles

    def _replicas_linked(self) -> bool:
        for node in self.nodes[self.primary_count :]:
            try:
                info = node.info("replication")
            except redis.RedisError:
                return False
            if info.get("role") != "slave" or info.get("master_link_status") != "up":
                return False
        return True

    def wait_ok(self) -> None:
        """Block until every running node reports ok and every replica is linked."""
        deadline = time.monotonic() + self.ready_timeout
        while True:
            states = [s for s in self.states() if s != "down"]
            if states and set(states) == {"ok"} and self._replicas_linked():
                return
            if time.monotonic() > deadline:
                raise ServerError(
                    f"cluster not ok after {self.ready_timeout} s: states {self.states()}, "
                    f"roles {self.roles()}"
                )
            time.sleep(0.05)

    def primaries(self) -> list[HostedRedisServer]:
        """The nodes that are primaries now (a failover changes which)."""
        return [n for n, role in zip(self.nodes, self.roles(), strict=True) if role == "master"]

    def flush(self) -> None:
        for node in self.primaries():
            node.flush()

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()


class RedisSentinelGroup:
    """A primary, its replica(s) and sentinels, each on its own address.

    ``redis_hosts[0]`` starts as the primary; sentinels monitor it as ``master_name``
    at its announced address. `start()` returns once every sentinel sees the primary,
    its replicas and the other sentinels (a failover needs all of that). `url` is the
    ``redis+sentinel://s1:p1,s2:p2,s3:p3/<master name>`` form.
    """

    def __init__(
        self,
        redis_hosts: list[str],
        redis_announce: list[str],
        sentinel_hosts: list[str],
        sentinel_announce: list[str],
        *,
        master_name: str = "qa-primary",
        down_after_ms: int = 2000,
        ready_timeout: float = 60.0,
    ) -> None:
        primary = HostedRedisServer(redis_hosts[0], redis_announce[0])
        self.redis = [primary] + [
            HostedRedisServer(host, shown, replica_of=primary.announced)
            for host, shown in zip(redis_hosts[1:], redis_announce[1:], strict=True)
        ]
        self.master_name = master_name
        self.sentinels = [
            SentinelServer(
                host,
                shown,
                master_name=master_name,
                primary=primary.announced,
                quorum=len(sentinel_hosts) // 2 + 1,
                down_after_ms=down_after_ms,
            )
            for host, shown in zip(sentinel_hosts, sentinel_announce, strict=True)
        ]
        self.ready_timeout = ready_timeout

    @property
    def url(self) -> str:
        hosts = ",".join(f"{h}:{p}" for h, p in (s.announced for s in self.sentinels))
        return f"redis+sentinel://{hosts}/{self.master_name}"

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [s.announced for s in self.sentinels]

    def start(self) -> Self:
        for server in [*self.redis, *self.sentinels]:
            server.start()
        self.wait_ready()
        return self

    def primary(self) -> HostedRedisServer:
        """The server the sentinels name as primary now."""
        address = self.sentinels[0].master()
        for server in self.redis:
            if (server.announce_host, server.port) == (address["ip"], int(address["port"])):
                return server
        raise ServerError(f"sentinels name {address['ip']}:{address['port']}, not ours")

    def wait_ready(self) -> None:
        """Every running sentinel sees the primary up, every replica, and the others."""
        deadline = time.monotonic() + self.ready_timeout
        want_replicas = len(self.redis) - 1
        want_sentinels = len(self.sentinels) - 1
        while True:
            try:
                states = [s.master() for s in self.sentinels if s.running]
                ok = all(
                    int(m["num-slaves"]) >= want_replicas
                    and int(m["num-other-sentinels"]) >= want_sentinels
                    and not (m["is_sdown"] or m["is_odown"])
                    for m in states
                )
                if ok and len({(m["ip"], m["port"]) for m in states}) == 1:
                    return
            except (redis.RedisError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise ServerError(f"sentinel group not ready after {self.ready_timeout} s")
            time.sleep(0.1)

    def flush(self) -> None:
        self.primary().flush()

    def close(self) -> None:
        for server in [*self.sentinels, *self.redis]:
            server.close()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()


class HostedMemcachedServer(MemcachedServer):
    """memcached on its own address; clients reach it at ``announce_host`` (same port)."""

    def __init__(self, host: str, announce_host: str | None = None) -> None:
        self.host = host  # type: ignore[misc]
        self.announce_host = announce_host or host
        super().__init__()

    @property
    def announced(self) -> tuple[str, int]:
        return self.announce_host, self.port

    def _pick_port(self) -> int:
        return free_port_on((self.host, self.announce_host))


class HostedPostgresServer(PostgresServer):
    """PostgreSQL on its own address; clients reach it at ``announce_host`` (same port)."""

    def __init__(self, host: str, announce_host: str | None = None) -> None:
        self.host = host  # type: ignore[misc]
        self.announce_host = announce_host or host
        super().__init__()

    @property
    def announced(self) -> tuple[str, int]:
        return self.announce_host, self.port

    def announced_url(self, dbname: str = "postgres") -> str:
        """SQLAlchemy URL (asyncpg) of database ``dbname`` at the announced address."""
        return f"postgresql+asyncpg://postgres@{self.announce_host}:{self.port}/{dbname}"

    def _pick_port(self) -> int:
        return free_port_on((self.host, self.announce_host))
