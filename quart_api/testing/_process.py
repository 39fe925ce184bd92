"""Server processes on free loopback ports: ports, binaries, and one process's lifecycle.

Each server is a child process of ours, in its own temporary directory, on a port the
kernel picked, never a default port (Debian's packaged daemons may hold those, and other
test sessions may run beside us). Fault tests drive the process directly: `stop()`,
`restart()` (same port, same data dir), `pause()` and `resume()` (SIGSTOP/SIGCONT).
Whatever is still open at interpreter exit is closed then.

Standard library only, so any test suite (and `bench/`) can use it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

__all__ = ["HOST", "Server", "ServerError", "find_binary", "free_port"]

#: Where every server listens unless told otherwise.
HOST = "127.0.0.1"


class ServerError(RuntimeError):
    """A server binary is missing, or a server failed to start, stop or answer."""


class PortTaken(ServerError):
    """Someone else bound the port between our probe and the server's bind."""


def find_binary(name: str, package: str) -> str:
    """Path of `name` on PATH, or a `ServerError` naming the Debian package that has it."""
    path = shutil.which(name)
    if path is None:
        raise ServerError(missing_binary(name, package))
    return path


def missing_binary(name: str, package: str) -> str:
    """The message for a server binary that is not installed."""
    return (
        f"{name!r} not found: install the Debian package {package!r} "
        f"(apt-get install {package}), or put {name!r} on PATH."
    )


# Ports handed out by this process: never handed out twice, so servers picked together
# but started one by one cannot collide.
_handed_out: set[int] = set()


def _bindable(host: str, port: int) -> int | None:
    """The port bound on `host` (0: the kernel picks one), or None if it is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return None
        bound: int = sock.getsockname()[1]
        return bound


def free_port(
    *, hosts: Iterable[str] = (HOST,), below: int = 65_536, also_free: int | None = None
) -> int:
    """A TCP port that nothing listens on now at any of `hosts`, chosen by the kernel.

    `below` bounds it (a Redis Cluster node needs port + 10000 to exist) and `also_free`
    is an offset whose port must be free as well (the cluster bus). Ports handed out
    earlier in this process are never returned again.
    """
    addresses = tuple(hosts)
    for _ in range(500):
        port = _bindable(addresses[0], 0)
        if port is None or port >= below or port in _handed_out:
            continue
        ports = [port] if also_free is None else [port, port + also_free]
        if all(_bindable(host, p) is not None for host in addresses for p in ports):
            _handed_out.add(port)
            return port
    raise ServerError(f"no port free on {addresses} below {below} (with +{also_free} free)")


def children(pid: int) -> list[int]:
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


def send_signal(pids: Iterable[int], sig: signal.Signals) -> None:
    """Signal each of `pids` that still exists."""
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

        with RedisServer() as server:
            client = redis.asyncio.Redis.from_url(server.url)

    `start()` returns once the server answers. `stop()` keeps the temp dir, so `start()`
    brings the same server back; `close()` (or leaving the `with` block) also removes it.
    """

    name: ClassVar[str]
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    startup_timeout: ClassVar[float] = 15.0

    def __init__(self, port: int | None = None, *, host: str = HOST) -> None:
        self.host = host
        self._port_fixed = port is not None
        self.owner_pid = os.getpid()
        self.port: int = port if port is not None else self._pick_port()
        self.paused = False
        self._dir: Path | None = None
        self._served = False  # once clients may know the port, it never changes
        self._process: subprocess.Popen[bytes] | None = None

    # -- what subclasses provide ---------------------------------------------------

    def _pick_port(self) -> int:
        return free_port(hosts=(self.host,))

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
    def announced(self) -> tuple[str, int]:
        """Where clients reach this server: ``(host, port)``."""
        return self.host, self.port

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
            except PortTaken:
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
                tail = self.log_tail(log_offset)
                error = PortTaken if "Address already in use" in tail else ServerError
                raise error(f"{self!r} exited with code {process.returncode} on start:\n{tail}")
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(
                    f"{self!r} did not answer within {self.startup_timeout} s; "
                    f"log {self.log_path}:\n{self.log_tail(log_offset)}"
                )
            time.sleep(0.02)

    def log_tail(self, offset: int = 0, lines: int = 20) -> str:
        """The last `lines` lines the server logged past byte `offset`."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                text = log.read().decode(errors="replace")
        except (OSError, ServerError) as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process by PID: `stop_signal`, wait, then SIGKILL. Keeps the temp dir."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            kids = children(process.pid)
            process.send_signal(self.stop_signal)
            if self.paused:  # a stopped process holds the signal until it is continued
                send_signal([*kids, process.pid], signal.SIGCONT)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                send_signal([process.pid, *children(process.pid), *kids], signal.SIGKILL)
                process.wait()
        self.paused = False

    def kill(self) -> None:
        """SIGKILL: the process dies at once, as in a crash (no shutdown, no last write)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
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
        send_signal([main], signal.SIGSTOP)  # first, so it forks no child we would miss
        send_signal(children(main), signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT what `pause()` stopped."""
        if self._process is not None and self.paused:
            main = self._process.pid
            send_signal([*children(main), main], signal.SIGCONT)
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
