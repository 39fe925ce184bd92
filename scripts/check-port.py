"""``make run``'s first step: HOST:PORT must be free to listen on, else one line saying so.

hypercorn binds in its supervisor process, before any code of ours runs, and reports
a port in use with a traceback; this check names HOST and PORT instead. It binds the
way hypercorn does (SO_REUSEADDR), so a port left in TIME_WAIT by a stopped server
counts as free.

Usage: python scripts/check-port.py HOST PORT
"""

from __future__ import annotations

import errno
import socket
import sys


def main(host: str, port_text: str) -> int:
    try:
        port = int(port_text)
        if not 0 < port < 65536:
            raise ValueError
    except ValueError:
        print(f"make run: PORT={port_text!r} is not a port number (1-65535).", file=sys.stderr)
        return 2
    address = host.strip("[]")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
    except OSError as error:
        reason = error.strerror or str(error)
        if error.errno == errno.EADDRINUSE:
            advice = f"stop what uses it, or choose another: make run PORT={port % 65535 + 1}"
        else:
            advice = "set HOST to an address of this machine, e.g. make run HOST=127.0.0.1"
        print(
            f"make run: cannot listen on HOST={host} PORT={port}: {reason}; {advice}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(main(sys.argv[1], sys.argv[2]))
