"""Errors of the guards package that are not store errors."""

from __future__ import annotations

import re

__all__ = ["ConfigurationError", "redact"]


class ConfigurationError(ValueError):
    """A setting (a store URL, a server list) cannot be used; the message names the value.

    A ``ValueError`` so that code validating settings generically still catches it.
    """


#: Everything from the scheme to the LAST ``@``: a password may itself hold ``@`` or
#: ``/`` (unencoded), and no part of it may show.
_USERINFO = re.compile(r"(?<=://).*@")
#: Credentials redis-py also reads from the query string (``?password=...``).
_QUERY_SECRET = re.compile(r"(?i)([?&](?:password|username)=)[^&#]*")


def redact(url: str) -> str:
    """``url`` with any ``user:password@`` shown as ``***@`` and any ``password=`` or
    ``username=`` query value as ``***``, for logs and error messages."""
    return _QUERY_SECRET.sub(r"\1***", _USERINFO.sub("***@", url))
