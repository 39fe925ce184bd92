"""An app served by a real hypercorn process, for tests that need a real socket.

    app = HypercornApp(name="api", target="myapp:create_app()", port=free_port(),
                       env=dict(os.environ), log_path=tmp_path / "api.log")
    app.start()
    app.wait_ready(time.monotonic() + 30)     # GET ready_path answers 200
    ...                                       # http://127.0.0.1:<port>
    app.stop()

The process runs in a session of its own, so stopping it (SIGTERM to its process
group, then SIGKILL) takes its workers down with it and nothing else. hypercorn is a
dependency of Quart, so this needs no extra install.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from quart_api.testing._process import HOST, ServerError

__all__ = ["BACKLOG", "HypercornApp", "ServeError", "http_get"]

#: Listen backlog: a burst of 1,000 connects queues in the kernel instead of being refused.
BACKLOG = 4096


class ServeError(ServerError):
    """An app did not start or answer."""


def http_get(
    url: str, headers: Mapping[str, str] | None = None, timeout: float = 5.0
) -> tuple[int, bytes]:
    """One GET, as ``(status, body)``; HTTP errors are answers too, not exceptions."""
    req = urllib.request.Request(url, headers=dict(headers or {}))  # noqa: S310 - http only
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:  # noqa: S310
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@dataclass
class HypercornApp:
    """One app factory served by ``hypercorn`` (``workers`` workers on ``worker_class``).

    Args:
        name: names the app in errors.
        target: what hypercorn serves, ``"module:factory()"`` or ``"module:app"``.
        port: a free loopback port (`free_port()`).
        env: the whole environment of the process (settings included).
        log_path: where the process's stdout and stderr go.
        cwd: the working directory (hypercorn imports ``target`` from there).
        cores: CPUs to pin the process to (None: not pinned).
        ready_path: answers 200 once the app serves.
    """

    name: str
    target: str
    port: int
    env: Mapping[str, str]
    log_path: Path
    workers: int = 1
    worker_class: str = "asyncio"
    cores: frozenset[int] | None = None
    ready_path: str = "/ok"
    cwd: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        """The hypercorn master's pid (its workers are its children)."""
        if self.process is None:
            raise ServeError(f"{self.name} is not started")
        return self.process.pid

    def start(self) -> None:
        """Spawn the process; `wait_ready` tells when it answers."""
        command = [
            sys.executable, "-m", "hypercorn",
            "--bind", f"{HOST}:{self.port}",
            "--workers", str(self.workers),
            "--worker-class", self.worker_class,
            "--backlog", str(BACKLOG),
            "--keep-alive", "30",
            "--graceful-timeout", "2",
            "--error-logfile", "-",
            self.target,
        ]  # fmt: skip
        cores = self.cores

        def pin() -> None:  # runs in the child between fork and exec
            if cores is not None:
                os.sched_setaffinity(0, cores)

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.cwd,
                env=dict(self.env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=pin,
            )

    def wait_ready(self, deadline: float) -> None:
        """Block until ``ready_path`` answers 200, the process dies, or ``deadline``."""
        url = self.base_url + self.ready_path
        while True:
            if self.process is None or self.process.poll() is not None:
                raise ServeError(
                    f"{self.name} exited on start; log {self.log_path}:\n{self.log_tail()}"
                )
            with contextlib.suppress(OSError):
                status, _ = http_get(url, timeout=2)
                if status == 200:
                    return
            if time.monotonic() > deadline:
                raise ServeError(
                    f"{self.name} did not answer {url}; log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the process's output."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 8.0) -> None:
        """SIGTERM our process group, then SIGKILL it if it lingers."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout)
        # Workers may outlive their parent for a moment: the group id is still ours.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(2)
