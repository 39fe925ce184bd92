"""Errors of the guards package that are not store errors."""

from __future__ import annotations

import re

__all__ = ["ConfigurationError", "redact"]


class ConfigurationError(ValueError):
    """A setting (a store URL, a server list) cannot be used; the message names the value.

    A ``ValueError`` so that code validating settings generically still catches it.
    """


_USERINFO = re.compile(r"(?<=://)([^/@]*)@")


def redact(url: str) -> str:
    """``url`` with any ``user:password@`` shown as ``***@``, for logs and error messages."""
    return _USERINFO.sub("***@", url)
