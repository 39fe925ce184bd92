"""The app hosts: each app served on every host address, by hypercorn or gunicorn.

:class:`AppHost` is ``bench.serve.HypercornApp`` bound to a host address of its own
(127.0.0.11, ...) instead of 127.0.0.1, and able to run gunicorn instead (the seed's
reference). :class:`AppFleet` is one app on every host, started together and stopped
together, with the CPU its processes used.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench.serve import BACKLOG, ROOT, HypercornApp
from bench.stats import server_cpu_seconds, server_sleeps

__all__ = ["AppFleet", "AppHost", "wait_all"]


@dataclass
class AppHost(HypercornApp):
    """One app on one host address (``server``: "hypercorn" or "gunicorn")."""

    host: str = "127.0.0.1"
    server: str = "hypercorn"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _command(self) -> list[str]:
        bind = f"{self.host}:{self.port}"
        if self.server == "gunicorn":
            return [
                sys.executable, "-m", "gunicorn",
                "--bind", bind,
                "--workers", str(self.workers),
                "--worker-class", "sync",
                "--backlog", str(BACKLOG),
                "--graceful-timeout", "2",
                "--log-level", "warning",
                "--error-logfile", "-",
                # gunicorn >= 25 opens a control socket in ~/.gunicorn: one per
                # server, so several on one machine race for it. Not needed here.
                "--no-control-socket",
                self.target,
            ]  # fmt: skip
        return [
            sys.executable, "-m", "hypercorn",
            "--bind", bind,
            "--workers", str(self.workers),
            "--worker-class", self.worker_class,
            "--backlog", str(BACKLOG),
            "--keep-alive", "30",
            "--graceful-timeout", "2",
            "--error-logfile", "-",
            self.target,
        ]  # fmt: skip

    def start(self) -> None:
        cores = self.cores

        def pin() -> None:  # in the child, between fork and exec
            if cores is not None:
                os.sched_setaffinity(0, cores)

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self._command(),
                cwd=ROOT,
                env=dict(self.env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=pin,
            )


@dataclass
class AppFleet:
    """One app served on every host: what the load generator spreads over."""

    name: str
    members: list[AppHost] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        name: str,
        target: str,
        *,
        hosts: tuple[str, ...],
        port: int,
        env: Mapping[str, str],
        logs: Path,
        workers: int,
        cores: frozenset[int] | None,
        ready_path: str,
        server: str = "hypercorn",
    ) -> AppFleet:
        return cls(
            name,
            [
                AppHost(
                    name=f"{name}@{host}",
                    target=target,
                    port=port,
                    env=env,
                    log_path=logs / f"{name}-{host}.log",
                    workers=workers,
                    cores=cores,
                    ready_path=ready_path,
                    host=host,
                    server=server,
                )
                for host in hosts
            ],
        )

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [(m.host, m.port) for m in self.members]

    def start(self) -> None:
        for member in self.members:
            member.start()

    def wait_ready(self, deadline: float) -> None:
        for member in self.members:
            member.wait_ready(deadline)

    def stop(self) -> None:
        for member in self.members:
            member.stop()

    def cpu_seconds(self) -> float:
        """User + system CPU of every process of the app, on every host, so far."""
        return sum(server_cpu_seconds(m.pid) for m in self.members if m.process is not None)

    def sleeps(self) -> int:
        """Voluntary context switches of every process of the app, on every host, so far."""
        return sum(server_sleeps(m.pid) for m in self.members if m.process is not None)

    def workers(self) -> int:
        return sum(m.workers for m in self.members)


def wait_all(fleets: list[AppFleet], timeout: float) -> None:
    """Every member of every fleet answers its ready path, or ``ServeError``."""
    deadline = time.monotonic() + timeout
    for fleet in fleets:
        fleet.wait_ready(deadline)
