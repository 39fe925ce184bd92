"""RFC 6749 errors: JSON at the token and revocation endpoints (5.2), query parameters
on the client's redirect URI at the authorization endpoint (4.1.2.1).

Every answer of the token endpoint, success or error, is ``Cache-Control: no-store``
(RFC 6749 5.1): it carries secrets or says something about them.
"""

from __future__ import annotations

from typing import Any, Final

from quart import Response

from quart_api.json_provider import dumps_bytes

__all__ = ["NO_STORE", "OAuthError", "json_response"]

#: Headers of every response that carries or judges a secret.
NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class OAuthError(Exception):
    """An RFC 6749 error: its ``error`` code, a human-readable description, a status.

    ``basic_challenge`` adds ``WWW-Authenticate: Basic`` (RFC 6749 5.2: required on
    a 401 when the client tried HTTP Basic authentication).
    """

    def __init__(
        self, error: str, description: str, *, status: int = 400, basic_challenge: bool = False
    ) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status
        self.basic_challenge = basic_challenge

    def response(self) -> Response:
        """The error as the token endpoint's JSON body."""
        headers = dict(NO_STORE)
        if self.basic_challenge:
            headers["WWW-Authenticate"] = 'Basic realm="oauth", charset="UTF-8"'
        return json_response(
            {"error": self.error, "error_description": self.description}, self.status, headers
        )


def json_response(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """A JSON response that is never stored by a cache."""
    response = Response(dumps_bytes(body), status=status, content_type="application/json")
    response.headers.update(NO_STORE)
    if headers:
        response.headers.update(headers)
    return response
