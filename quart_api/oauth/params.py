"""Reading RFC 6749 parameters: each at most once (3.1, 3.2), empty meaning absent."""

from __future__ import annotations

import re

from werkzeug.datastructures import MultiDict

from quart_api.oauth.errors import OAuthError

__all__ = ["repeated_parameter", "single"]

#: Longest value any parameter of ours may have (secrets are 43 characters, a
#: redirect URI at most 2000, a state value 1000).
MAX_PARAMETER_LENGTH = 4000


#: A parameter name an error may repeat back: a short word, like every OAuth name.
_NAMEABLE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def repeated_parameter(params: MultiDict[str, str]) -> str | None:
    """The first parameter that occurs more than once, as an error may say it, or None.

    ``"The parameter <name>"`` when the name is a short word (letters, digits,
    ``_.-``), as every OAuth parameter's is; ``"A parameter"`` for anything else, so
    markup, quotes or Unicode someone put in a link are never echoed: RFC 6749
    (4.1.2.1, 5.2) allows only printable ASCII without ``"`` and ``\\`` in
    ``error_description``, which goes to the app's redirect URI and may be shown to
    its user.
    """
    for name in params:
        if len(params.getlist(name)) > 1:
            return f"The parameter {name}" if _NAMEABLE.fullmatch(name) else "A parameter"
    return None


def single(params: MultiDict[str, str], name: str) -> str | None:
    """The value of ``name``; None when absent or empty (RFC 6749 3.1: "treated as if
    omitted"). Raises ``invalid_request`` when repeated or implausibly long."""
    values = params.getlist(name)
    if len(values) > 1:
        raise OAuthError("invalid_request", f"The parameter {name} is repeated.")
    if not values or values[0] == "":
        return None
    if len(values[0]) > MAX_PARAMETER_LENGTH:
        raise OAuthError("invalid_request", f"The parameter {name} is too long.")
    return values[0]
