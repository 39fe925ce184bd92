"""Real memcached for tests.

with MemcachedServer() as server:
    app.config["MEMCACHED_SERVERS"] = server.address    # "127.0.0.1:<port>"
"""

from __future__ import annotations

import os
import socket

from quart_api.testing._process import Server, ServerError, find_binary

__all__ = ["MemcachedServer"]


class MemcachedServer(Server):
    """memcached, TCP only, 64 MB, 2 threads.

    memcached acts on SIGTERM at its next once-a-second clock tick, so `stop()` and
    `restart()` take up to a second.
    """

    name = "memcached"

    @property
    def address(self) -> str:
        """``host:port``, the form ``MEMCACHED_SERVERS`` takes."""
        return f"{self.host}:{self.port}"

    def stats(self) -> dict[str, str]:
        """The server's ``stats`` (``curr_items``, ``get_hits``, ...), values as text."""
        reply = self._call(b"stats\r\n", end=b"END\r\n").decode()
        return {
            parts[1]: parts[2]
            for parts in (line.split(" ", 2) for line in reply.splitlines())
            if len(parts) == 3 and parts[0] == "STAT"
        }

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
