"""The response cache behind ``@cached``: keys, entries, the storage gate.

Entries are a small versioned msgpack array (never pickle: a cache that can
be written by anyone who reaches memcached must not execute code on read):
``[version, status, headers, body, etag, stored_at, fresh_until, stale_until]``.
Times are wall-clock seconds, because several processes share one entry.

Keys are ``<prefix>:c<version>:<namespace>:<generation>:<hash>``: a readable
prefix for whoever inspects memcached, the entry format version (workers of two
releases running side by side during a deploy each keep their own entries instead
of overwriting each other's with one the other cannot read), the namespace
generation so that invalidating a namespace is one ``incr`` (old keys are simply
never asked for again and age out), and a blake2b hash of the variable part (user,
path, normalized query) so a key never exceeds memcached's 250 bytes whatever the
URL.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode

import msgpack
from quart import Response
from quart.wrappers.response import DataBody
from werkzeug.datastructures import Headers, MultiDict

from quart_api.guards._identity import typed_key
from quart_api.guards._werkzeug_headers import ServedHeaders

__all__ = [
    "ENTRY_VERSION",
    "HEADER_NAME",
    "NEVER_KEPT_HEADERS",
    "DecodedEntries",
    "Entry",
    "cache_key",
    "decode_entry",
    "encode_entry",
    "entry_key_prefix",
    "etag_for",
    "etag_matches",
    "generation_key",
    "kept_headers",
    "listed_query",
    "normalized_query",
    "storable",
]

ENTRY_VERSION = 1
MAX_KEY_BYTES = 250
#: Response headers an entry keeps: they describe the body, not the exchange.
KEPT_HEADERS = frozenset(
    {
        "content-type",
        "content-language",
        "content-encoding",
        "content-disposition",
        "content-location",
        "cache-control",
        "expires",
        "last-modified",
        "link",
        "location",
        "vary",
        "etag",
    }
)
#: Set on every served entry (``Entry.response``, Quart), so never kept from the view.
_SET_WHEN_SERVED = frozenset({"etag", "content-length", "x-cache"})
#: Statuses a shared cache may store by default (RFC 9111 4.2.2, minus errors).
CACHEABLE_STATUSES = frozenset({200, 203, 204, 300, 301, 308})
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_.:\-]")
#: A header name: an RFC 9110 token (5.1).
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: A header value as h11 sends it (RFC 9110 5.5, with h11's leniency for DEL): visible
#: characters (any above ASCII too: UTF-8 bytes) with spaces or tabs between them, none
#: at either end.
_HEADER_VALUE = re.compile(r"(?:[^\x00-\x20]+(?:[ \t]+[^\x00-\x20]+)*)?")
#: Headers no entry holds: the exchange's framing and connection (RFC 9110 7.6.1),
#: and cookies (``storable`` never stores a response that sets one).
NEVER_KEPT_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "set-cookie",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


@dataclass(frozen=True, slots=True)
class Entry:
    """One cached response."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    etag: str
    stored_at: float
    fresh_until: float
    stale_until: float
    #: what every hit answers with before ``X-Cache``: the kept headers, ETag, length
    served_headers: tuple[tuple[str, str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        served = (*self.headers, ("ETag", self.etag))
        if self.status != 204:  # RFC 9110 8.6: never a Content-Length on a 204
            served += (("Content-Length", str(len(self.body))),)
        object.__setattr__(self, "served_headers", served)

    def response(self, x_cache: str) -> Response:
        """A fresh ``Response`` for this entry (each request gets its own).

        A hit is the hottest path of a cached route, so the response is assembled
        rather than computed: none of the served headers can be among the kept ones
        (``_SET_WHEN_SERVED``), so each is added without searching for an old value,
        and the body goes in as a ready ``DataBody`` with its length already known.
        The headers are not checked again: the view's were checked when it set them,
        a decoded entry's by :func:`decode_entry`, and the rest are made here.
        """
        headers = ServedHeaders.of_checked((*self.served_headers, ("X-Cache", x_cache)))
        return Response(DataBody(self.body), status=self.status, headers=headers)


def encode_entry(entry: Entry) -> bytes:
    return msgpack.packb(  # type: ignore[no-any-return]
        [
            ENTRY_VERSION,
            entry.status,
            [list(h) for h in entry.headers],
            entry.body,
            entry.etag,
            entry.stored_at,
            entry.fresh_until,
            entry.stale_until,
        ],
        use_bin_type=True,
    )


def _header_pair(name: object, value: object) -> tuple[str, str]:
    """A stored header as the view could have set it and h11 would send it, or ValueError.

    Checked once, as the entry is decoded: its hits add it unchecked (``Entry.response``),
    so an entry planted in memcached can neither split a response nor make every hit
    of its key fail to send.
    """
    name, value = str(name), str(value)
    if (
        not HEADER_NAME.fullmatch(name)
        or name.lower() in NEVER_KEPT_HEADERS
        or not _HEADER_VALUE.fullmatch(value)
    ):
        raise ValueError(f"not a header an entry keeps: {name!r}")
    return name, value


def decode_entry(raw: bytes) -> Entry | None:
    """The entry, or None for anything unreadable or of another version."""
    try:
        fields = msgpack.unpackb(raw, raw=False, use_list=True)
    except (ValueError, msgpack.UnpackException):
        return None
    if not isinstance(fields, list) or len(fields) != 8 or fields[0] != ENTRY_VERSION:
        return None
    _, status, headers, body, etag, stored_at, fresh_until, stale_until = fields
    try:
        return Entry(
            status=int(status),
            # Never the headers a hit sets itself: an entry written by anything else
            # (another version, whoever reaches memcached) must not add a second
            # Content-Length or ETag to the ones ``Entry.response`` adds.
            headers=tuple(
                _header_pair(k, v) for k, v in headers if str(k).lower() not in _SET_WHEN_SERVED
            ),
            body=bytes(body),
            etag=_header_pair("ETag", etag)[1],
            stored_at=float(stored_at),
            fresh_until=float(fresh_until),
            stale_until=float(stale_until),
        )
    except (TypeError, ValueError):
        return None


class DecodedEntries:
    """Entries decoded lately, each kept with the bytes it was decoded from.

    A hot key's hits fetch the same bytes from memcached again and again; decoding
    them (msgpack, the entry, its header list) costs a hit more than anything else it
    does in Python. Every hit still fetches its key (memcached stays the truth, and a
    hit costs exactly one key fetched): only the decoding is skipped, when the bytes
    are identical to those decoded last time for that key. Bounded by ``max_bytes``
    of entry bytes (each is held twice: as fetched, and as the entry's body); the
    oldest go first.
    """

    __slots__ = ("_by_key", "_bytes", "_max_bytes")

    def __init__(self, max_bytes: int = 8 * 1024 * 1024) -> None:
        self._by_key: dict[bytes, tuple[bytes, Entry]] = {}
        self._bytes = 0
        self._max_bytes = max_bytes

    def decode(self, key: bytes, raw: bytes) -> Entry | None:
        known = self._by_key.get(key)
        if known is not None and known[0] == raw:
            return known[1]
        entry = decode_entry(raw)
        if known is not None:
            del self._by_key[key]
            self._bytes -= 2 * len(known[0])
        size = 2 * len(raw)
        if entry is not None and size <= self._max_bytes:
            self._by_key[key] = (raw, entry)
            self._bytes += size
            while self._bytes > self._max_bytes:  # dicts keep insertion order: oldest first
                oldest = next(iter(self._by_key))
                self._bytes -= 2 * len(self._by_key.pop(oldest)[0])
        return entry


def etag_for(body: bytes) -> str:
    """A strong ETag from the body alone: the same in every worker and after restarts."""
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def etag_matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 13.1.2: weak comparison, ``*`` matches any current entry."""
    if if_none_match.strip() == "*":
        return True
    opaque = etag.removeprefix("W/")
    return any(
        candidate.strip().removeprefix("W/") == opaque for candidate in if_none_match.split(",")
    )


def normalized_query(query_string: bytes) -> str:
    """The query as the view's ``request.args`` sees it, names sorted.

    Shares an entry: names in another order (``?a=1&b=2``, ``?b=2&a=1``), and
    spellings that decode alike (``%61=1`` and ``a=1``; ``+`` and ``%20``; ``?a`` and
    ``?a=``), which ``request.args`` cannot tell apart either. Never shares: the
    values of one name in another order (``?a=1&a=2`` and ``?a=2&a=1``: the view
    reads the first), or anything that decodes differently (``%2B`` is ``+``, not a
    space; ``%26`` is part of a value, not a separator). Bytes that are not UTF-8
    are kept as they are (surrogate escapes), never merged with other bytes.
    """
    if not query_string:
        return ""
    pairs = parse_qsl(
        query_string.decode("utf-8", "surrogateescape"),
        keep_blank_values=True,
        errors="surrogateescape",
    )
    pairs.sort(key=_name)  # stable: the values of one name keep their order
    return urlencode(pairs, errors="surrogateescape")


def listed_query(args: MultiDict[str, str], names: tuple[str, ...]) -> str:
    """The first value of each of ``names`` in the query, in a fixed order (``@cached``'s
    ``query=``): what the view reads, and nothing a client adds around it."""
    # `in` first: MultiDict.get of a missing name raises and catches a KeyError.
    pairs = [(name, args[name]) for name in names if name in args]
    return urlencode(pairs, errors="surrogateescape") if pairs else ""


def _name(pair: tuple[str, str]) -> str:
    return pair[0]


def _readable(namespace: str) -> str:
    return _UNSAFE_KEY_CHARS.sub("_", namespace)[:120]


def generation_key(prefix: str, namespace: str) -> bytes:
    return f"{prefix}:g:{_readable(namespace)}".encode()


def entry_key_prefix(prefix: str, namespace: str) -> str:
    """The fixed part of a namespace's entry keys, computed once per endpoint."""
    return f"{prefix}:c{ENTRY_VERSION}:{_readable(namespace)}:"


def cache_key(key_prefix: str, generation: int, user: str | None, path: str, query: str) -> bytes:
    """The entry key; raises ValueError if it would not fit memcached's 250 bytes.

    An anonymous entry and a user's are told apart by type, never by emptiness:
    a user whose id is ``""`` is still a user.
    """
    owner = "-" if user is None else typed_key("u", user)
    digest = hashlib.blake2b(
        f"{owner}\x00{path}\x00{query}".encode("utf-8", "surrogatepass"), digest_size=16
    ).hexdigest()
    key = f"{key_prefix}{generation}:{digest}".encode()
    if len(key) > MAX_KEY_BYTES:
        raise ValueError(f"cache key of {len(key)} bytes exceeds {MAX_KEY_BYTES}: {key[:60]!r}...")
    return key


def _directives(header_values: Iterable[str]) -> set[str]:
    found: set[str] = set()
    for value in header_values:
        for part in value.split(","):
            name = part.split("=", 1)[0].strip().lower()
            if name:
                found.add(name)
    return found


def storable(response: Response, *, per_user: bool, request_headers: Headers) -> bool:
    """The one gate deciding what may be stored (RFC 9111 section 3).

    Never: a status that is not a cacheable success, ``Set-Cookie``,
    ``Cache-Control: no-store``, ``private`` unless the entry is per user,
    ``Vary: *``, a streamed body. A shared entry for a request that carried
    ``Authorization`` needs an explicit ``public``/``s-maxage``/``must-revalidate``.
    """
    if response.status_code not in CACHEABLE_STATUSES:
        return False
    if not isinstance(response.response, DataBody):
        return False
    headers = response.headers
    if "Set-Cookie" in headers:
        return False
    if any(v.strip() == "*" for v in headers.get_all("Vary")):
        return False
    directives = _directives(headers.get_all("Cache-Control"))
    if "no-store" in directives:
        return False
    if not per_user:
        if "private" in directives:
            return False
        if "Authorization" in request_headers and not directives & {
            "public",
            "s-maxage",
            "must-revalidate",
        }:
            return False
    return True


def kept_headers(response: Response, extra: frozenset[str]) -> tuple[tuple[str, str], ...]:
    """The response headers an entry keeps (content headers plus ``extra``)."""
    return tuple(
        (name, value)
        for name, value in response.headers.items()
        if (lowered := name.lower()) in KEPT_HEADERS or lowered in extra
        if lowered not in _SET_WHEN_SERVED
    )
