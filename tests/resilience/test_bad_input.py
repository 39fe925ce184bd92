"""Whatever bytes a client sends, it gets a 4xx or a closed connection, never a 5xx or a hang.

Against the real service under hypercorn (raw sockets, since a well-behaved client
library refuses to send most of this): oversized headers and bodies, bodies that
lie about their size, invalid UTF-8 in the request line, the query, headers and
JSON, random garbage from many connections at once, and slowloris clients that
trickle a header byte a second. After each, the server must still answer at once
on a new connection: no worker is stuck or dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections.abc import Callable

import httpx
import pytest

from tests.resilience.conftest import Service, assert_still_serving

pytestmark = pytest.mark.slow

ANSWER_TIMEOUT = 10.0  # seconds a server may take to answer or close; past it, it is stuck
MAX_CONTENT_LENGTH = 64 * 1024  # the service's default

CLOSE = b"Host: test\r\nConnection: close\r\n"
JSON = b"Content-Type: application/json\r\n"


def _bearer(token: str) -> bytes:
    return b"Authorization: Bearer " + token.encode() + b"\r\n"


def _body(line: bytes, headers: bytes, body: bytes) -> bytes:
    return line + CLOSE + headers + b"Content-Length: %d\r\n\r\n" % len(body) + body


Case = Callable[[str], bytes]

#: Malformed or oversized requests: each must get a 4xx or a closed connection.
MALFORMED: dict[str, Case] = {
    "64KiB-header": lambda t: (
        b"GET /api/v1/users/current HTTP/1.1\r\n" + CLOSE + _bearer(t)
        + b"X-Big: " + b"a" * 65536 + b"\r\n\r\n"
    ),
    "2000-headers": lambda t: (
        b"GET /healthz HTTP/1.1\r\n" + CLOSE
        + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 30) for i in range(2000)) + b"\r\n"
    ),
    "body-over-max": lambda t: _body(
        b"POST /api/v1/users HTTP/1.1\r\n", JSON, b"{" + b" " * (4 * MAX_CONTENT_LENGTH) + b"}"
    ),
    "declares-1GB-sends-2B": lambda t: (
        b"POST /api/v1/users HTTP/1.1\r\n" + CLOSE + JSON
        + b"Content-Length: 1000000000\r\n\r\n{}"
    ),
    "chunked-over-max": lambda t: (
        b"POST /api/v1/users HTTP/1.1\r\n" + CLOSE + JSON + b"Transfer-Encoding: chunked\r\n\r\n"
        + (b"10000\r\n" + b" " * 0x10000 + b"\r\n") * 4 + b"0\r\n\r\n"
    ),
    "raw-utf8-in-path": lambda t: b"GET /api/v1/users/\xff\xfe HTTP/1.1\r\n" + CLOSE + _bearer(t)
    + b"\r\n",
    "encoded-utf8-in-path": lambda t: (
        b"GET /api/v1/users/%ff%fe HTTP/1.1\r\n" + CLOSE + _bearer(t) + b"\r\n"
    ),
    "encoded-utf8-in-share-token": lambda t: b"GET /api/v1/share/%c3%28 HTTP/1.1\r\n" + CLOSE
    + b"\r\n",
    "raw-utf8-in-query": lambda t: b"GET /api/v1/users?page=\xff HTTP/1.1\r\n" + CLOSE
    + _bearer(t) + b"\r\n",
    "encoded-utf8-in-query": lambda t: (
        b"GET /api/v1/users?page=%ff&per_page=%c3%28 HTTP/1.1\r\n" + CLOSE + _bearer(t) + b"\r\n"
    ),
    "utf8-in-json-sign-up": lambda t: _body(
        b"POST /api/v1/users HTTP/1.1\r\n", JSON, b'{"username": "\xff\xfe", "password": "x" }'
    ),
    "utf8-in-json-patch": lambda t: _body(
        b"PATCH /api/v1/users/current HTTP/1.1\r\n", JSON + _bearer(t), b'{"full_name": "\xc3\x28"}'
    ),
    "utf8-in-json-login": lambda t: _body(
        b"POST /api/v1/auth/login HTTP/1.1\r\n", JSON, b'{"username": "alice", "password": "\xff"}'
    ),
    # NUL is valid JSON (\u0000) but no PostgreSQL text column or query takes it.
    "nul-in-json-sign-up": lambda t: _body(
        b"POST /api/v1/users HTTP/1.1\r\n", JSON,
        b'{"username": "nul", "password": "long enough", "full_name": "a\\u0000b"}',
    ),
    "nul-in-json-patch": lambda t: _body(
        b"PATCH /api/v1/users/current HTTP/1.1\r\n", JSON + _bearer(t), b'{"full_name": "\\u0000"}'
    ),
    "nul-in-json-token-name": lambda t: _body(
        b"POST /api/v1/auth/tokens HTTP/1.1\r\n", JSON + _bearer(t),
        b'{"name": "a\\u0000b", "scopes": ["users:read"]}',
    ),
    "nul-in-json-login": lambda t: _body(
        b"POST /api/v1/auth/login HTTP/1.1\r\n", JSON,
        b'{"username": "ali\\u0000ce", "password": "x"}',
    ),
    "utf8-in-bearer": lambda t: b"GET /api/v1/users/current HTTP/1.1\r\n" + CLOSE
    + b"Authorization: Bearer \xff\xfe\r\n\r\n",
    "utf8-in-cookie": lambda t: b"GET /api/v1/users/current HTTP/1.1\r\n" + CLOSE
    + b"Cookie: session=\xff\xfe\r\n\r\n",
    "utf8-in-content-type": lambda t: _body(
        b"POST /api/v1/users HTTP/1.1\r\n", b"Content-Type: application/\xffjson\r\n", b"{}"
    ),
    "utf8-in-method": lambda t: b"G\xffT /healthz HTTP/1.1\r\n" + CLOSE + b"\r\n",
    "binary-request-line": lambda t: b"\xff\xfe\x00\x01 / HTTP/1.1\r\n\r\n",
    "http-0.9": lambda t: b"GET /healthz\r\n\r\n",
    "bad-content-length": lambda t: b"POST /api/v1/users HTTP/1.1\r\n" + CLOSE + JSON
    + b"Content-Length: -5\r\n\r\n{}",
}  # fmt: skip

#: Odd but harmless bytes: any answer but a 5xx (an ignored header may well give 200).
ODD: dict[str, Case] = {
    "utf8-in-forwarded-for": lambda t: b"GET /api/v1/users/current HTTP/1.1\r\n" + CLOSE
    + _bearer(t) + b"X-Forwarded-For: \xff\xfe, 10.0.0.1\r\n\r\n",
    "utf8-in-host": lambda t: b"GET /healthz HTTP/1.1\r\nHost: \xff\xfe\r\n"
    + b"Connection: close\r\n\r\n",
    "encoded-utf8-query-key": lambda t: b"GET /api/v1/users?%ff=1 HTTP/1.1\r\n" + CLOSE
    + _bearer(t) + b"\r\n",
    "utf8-in-if-none-match": lambda t: b"GET /api/v1/users HTTP/1.1\r\n" + CLOSE + _bearer(t)
    + b"If-None-Match: \"\xff\"\r\n\r\n",
}  # fmt: skip


def exchange(port: int, data: bytes) -> int | None:
    """Send ``data`` on a new connection; the status answered, or None if it was closed.

    A server that neither answers nor closes within ``ANSWER_TIMEOUT`` fails the test.
    A server may answer (413, 431) before reading everything and reset the
    connection: an error while sending is not a failure; the answer is read anyway.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_TIMEOUT) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        reply = b""
        try:
            while b"\r\n" not in reply:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
        except ConnectionResetError:
            pass
        except TimeoutError:
            pytest.fail(f"no answer and no close within {ANSWER_TIMEOUT} s to {data[:80]!r}")
    if not reply:
        return None
    status_line = reply.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 "), reply[:200]
    return int(status_line.split()[1])


@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
def test_malformed_request_gets_4xx_or_closed(service: Service, case: str) -> None:
    status = exchange(service.app.port, MALFORMED[case](service.tokens["alice"]))
    assert status is None or 400 <= status < 500, f"{case}: {status}"
    assert_still_serving(service.url)


def test_page_number_past_bigint_gets_4xx(service: Service) -> None:
    status = exchange(
        service.app.port,
        b"GET /api/v1/users?page=6024972945451411456&per_page=14 HTTP/1.1\r\n"
        + CLOSE
        + _bearer(service.tokens["alice"])
        + b"\r\n",
    )
    assert_still_serving(service.url)
    assert status is not None
    assert 400 <= status < 500, status


@pytest.mark.parametrize("case", list(ODD), ids=list(ODD))
def test_odd_bytes_never_get_a_server_error(service: Service, case: str) -> None:
    status = exchange(service.app.port, ODD[case](service.tokens["alice"]))
    assert status is None or status < 500, f"{case}: {status}"
    assert_still_serving(service.url)


async def test_garbage_from_many_connections_at_once_gets_no_5xx(service: Service) -> None:
    """200 connections of random bytes (fixed seed) at once; then normal service."""
    rng = random.Random(7)
    payloads = [
        rng.choice([b"", b"GET / HTTP/1.1\r\n", b"POST /api/v1/users HTTP/1.1\r\n"])
        + rng.randbytes(rng.randrange(1, 2048))
        + b"\r\n\r\n"
        for _ in range(200)
    ]
    statuses = await asyncio.gather(
        *(asyncio.to_thread(exchange, service.app.port, p) for p in payloads)
    )
    assert all(s is None or 400 <= s < 500 for s in statuses), sorted(filter(None, statuses))
    assert_still_serving(service.url)


async def test_slowloris_clients_do_not_starve_a_normal_one(service: Service) -> None:
    """Five sockets each trickle one header byte a second for three seconds (bounded),
    while a normal client keeps calling an authenticated, database-backed route."""
    seconds, sockets = 3, 5
    slow = [await asyncio.open_connection("127.0.0.1", service.app.port) for _ in range(sockets)]
    answered: list[int] = []
    try:
        for _, writer in slow:
            writer.write(b"GET /api/v1/users/current HTTP/1.1\r\nHost: test\r\n")
            await writer.drain()
        async with httpx.AsyncClient(
            base_url=service.url, timeout=5, headers=service.bearer("alice")
        ) as client:
            for second in range(seconds):
                for _, writer in slow:
                    writer.write(b"X-Slow: 1\r\n"[second : second + 1])
                    await writer.drain()
                for _ in range(4):
                    answered.append((await client.get("/api/v1/users/current")).status_code)
                    await asyncio.sleep(0.25)
        for reader, _ in slow:
            # Nothing complete was sent: the server owes these sockets nothing yet.
            early = await asyncio.wait_for(_read_available(reader), timeout=1)
            assert not early.startswith(b"HTTP/1.1 5"), early
    finally:
        for _, writer in slow:
            writer.close()
    assert answered == [200] * (4 * seconds)
    assert_still_serving(service.url)


async def _read_available(reader: asyncio.StreamReader) -> bytes:
    """Whatever the server sent so far (b"" if nothing within a moment, or closed)."""
    try:
        return await asyncio.wait_for(reader.read(4096), timeout=0.05)
    except TimeoutError:
        return b""
