"""Which scopes a third-party app may be granted, in words, and the RFC 6749 scope syntax.

``tokens:write`` is never granted to an app: with it an app could mint personal
API tokens, which would outlive the user's revocation of the app.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["GRANTABLE_SCOPES", "SCOPE_DESCRIPTIONS", "ScopeError", "format_scope", "parse_scope"]

#: The scopes an app may ask for, in the order the consent page lists them.
GRANTABLE_SCOPES: Final = ("users:read", "users:write")

#: What each grantable scope lets an app do, as the consent page says it.
SCOPE_DESCRIPTIONS: Final = {
    "users:read": "See your profile, including your e-mail address, and other users' profiles",
    "users:write": "Change your profile, create share links, and delete your account",
}

#: RFC 6749 3.3: ``scope-token = 1*( %x21 / %x23-5B / %x5D-7E )``.
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")
MAX_SCOPE_LENGTH: Final = 1000


class ScopeError(ValueError):
    """A scope string that is malformed or names scopes an app may not have."""


def parse_scope(
    text: str, allowed: tuple[str, ...] | frozenset[str] = GRANTABLE_SCOPES
) -> tuple[str, ...]:
    """Split an RFC 6749 scope string into known, grantable scopes (sorted, unique).

    Raises :class:`ScopeError` naming what is wrong: malformed, unknown, or outside
    ``allowed``.
    """
    if len(text) > MAX_SCOPE_LENGTH:
        raise ScopeError(f"scope is longer than {MAX_SCOPE_LENGTH} characters")
    tokens = [token for token in text.split(" ") if token]
    malformed = [t for t in tokens if _SCOPE_TOKEN.match(t) is None]
    if malformed:
        raise ScopeError("scope must be scope names separated by spaces")
    unknown = sorted(set(tokens) - set(GRANTABLE_SCOPES))
    if unknown:
        raise ScopeError(
            f"unknown or ungrantable scope(s) {' '.join(unknown)}; "
            f"an app may have: {' '.join(GRANTABLE_SCOPES)}"
        )
    beyond = sorted(set(tokens) - set(allowed))
    if beyond:
        raise ScopeError(f"scope(s) {' '.join(beyond)} exceed what may be granted here")
    return tuple(sorted(set(tokens)))


def format_scope(scopes: list[str] | tuple[str, ...]) -> str:
    """Scopes as one RFC 6749 scope string, in a stable order."""
    return " ".join(sorted(set(scopes)))
