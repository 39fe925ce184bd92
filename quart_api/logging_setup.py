"""Configure logging once per process, however many apps are created.

Tests and the CLI create many apps in one process; adding a handler per app
would print every line several times.

A share link's secret is its URL path (``/api/v1/share/<secret>``), which every
access log writes, and an OAuth authorization code travels in the ``Location`` that
sends the user back to the app (``?code=<code>``), which a log format may name.
:func:`configure_logging` puts a filter on hypercorn's access logger that replaces
the secret in every atom a log format can name (request line, path, query,
referrer, location), whatever ``access_log_format`` or ``hypercorn.toml`` says;
the service's own log lines pass paths through :func:`redact_secrets`.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any

__all__ = ["REDACTED", "RedactShareSecrets", "configure_logging", "redact_secrets"]

_HANDLER_NAME = "quart_api"
ACCESS_LOGGER = "hypercorn.access"
REDACTED = "[redacted]"

#: ``/share/<secret>`` of any share URL: repeated slashes and any case included (a
#: non-canonical path can still carry a real secret, if only to be redirected).
_SHARE_SECRET = re.compile(r"(/share/+)[^/?#\s\"]+", re.IGNORECASE)
#: OAuth secrets in a query: the code in the ``Location`` that sends the user back to
#: the app, and any secret a client wrongly put in a URL of ours.
_QUERY_SECRET = re.compile(
    r"((?:^|[?&])(?:code|code_verifier|access_token|refresh_token|client_secret|token)=)[^&#\s\"]+",
    re.IGNORECASE,
)
#: Access-log atoms that carry a path or URL (hypercorn's ``AccessLogAtoms`` keys).
_URL_ATOMS = ("r", "R", "U", "Uq", "q", "f", "{referer}i", "{location}o")


def redact_secrets(text: str) -> str:
    """``text`` with every share-link secret and OAuth query secret replaced by
    ``[redacted]``."""
    if "=" in text:
        text = _QUERY_SECRET.sub(r"\1" + REDACTED, text)
    if "share/" not in text.lower():
        return text
    return _SHARE_SECRET.sub(r"\1" + REDACTED, text)


class _RedactedAtoms(dict[str, Any]):
    """Hypercorn's atoms with the URL-bearing ones redacted; unknown atoms stay ``-``."""

    def __getitem__(self, key: str) -> Any:
        try:
            return super().__getitem__(key.lower() if key.startswith("{") else key)
        except KeyError:
            return "-"


class RedactShareSecrets(logging.Filter):
    """A filter for hypercorn's access logger: share secrets never reach the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        atoms = record.args
        if isinstance(atoms, Mapping):
            redacted = _RedactedAtoms(atoms)
            for key in _URL_ATOMS:
                value = dict.get(redacted, key)
                if isinstance(value, str):
                    redacted[key] = redact_secrets(value)
            record.args = redacted
        elif isinstance(record.msg, str):
            record.msg = redact_secrets(record.msg)
        return True


def configure_logging(level: str) -> None:
    """Send ``quart_api`` logs to stderr at ``level``; redact the access log; idempotent."""
    access = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, RedactShareSecrets) for f in access.filters):
        access.addFilter(RedactShareSecrets())
    logger = logging.getLogger("quart_api")
    logger.setLevel(level.upper())
    if any(h.get_name() == _HANDLER_NAME for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")
    )
    logger.addHandler(handler)
