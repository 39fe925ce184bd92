"""PKCE (RFC 7636) with the ``S256`` method only: ``plain`` gives no protection
against a code intercepted together with its request, so it is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import Final

__all__ = ["CHALLENGE_PATTERN", "VERIFIER_PATTERN", "s256_challenge", "verifier_matches"]

#: BASE64URL(SHA256(verifier)) without padding is always 43 characters.
CHALLENGE_PATTERN: Final = re.compile(r"^[A-Za-z0-9_-]{43}$")
#: RFC 7636 4.1: 43 to 128 unreserved characters.
VERIFIER_PATTERN: Final = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")


def s256_challenge(verifier: str) -> str:
    """The S256 code challenge of ``verifier`` (RFC 7636 4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verifier_matches(verifier: str, challenge: str) -> bool:
    """Whether ``verifier`` is well-formed and hashes to ``challenge`` (constant time)."""
    if VERIFIER_PATTERN.match(verifier) is None:
        return False
    return hmac.compare_digest(s256_challenge(verifier), challenge)
