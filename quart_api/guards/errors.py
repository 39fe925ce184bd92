"""Errors of the guards package that are not store errors."""

from __future__ import annotations

__all__ = ["ConfigurationError"]


class ConfigurationError(ValueError):
    """A setting (a store URL, a server list) cannot be used; the message names the value.

    A ``ValueError`` so that code validating settings generically still catches it.
    """
