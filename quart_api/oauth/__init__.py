"""OAuth 2.0 authorization server: third-party apps act for users with granted scopes.

Implemented against the RFCs (6749 with 7636 PKCE, 7009 revocation, 7591 client
metadata, 8252 native apps, 8414 metadata, 9207 ``iss``, 9700 security BCP); see the
README's "OAuth 2.0 for third-party apps" for the flow and why no library does it.

- :mod:`.authorize`: ``/oauth/authorize`` (log-in form, consent page, redirect back)
- :mod:`.token_endpoint`: ``/oauth/token`` and ``/oauth/revoke``
- :mod:`.metadata`: ``/.well-known/oauth-authorization-server``
- :mod:`.clients_api`, :mod:`.grants_api`: the JSON routes under ``/api/v1/oauth``
- :mod:`.grants`: every state change (codes, token sets, rotation, revocation)

Access tokens are ``api_tokens`` rows linked to their grant, so they work as bearer
tokens on every ``/api/v1`` route, with exactly the granted scopes.
"""

from quart import Blueprint

from quart_api.oauth import authorize, clients_api, grants_api, metadata, token_endpoint

__all__ = ["OAUTH_BLUEPRINTS"]

OAUTH_BLUEPRINTS: tuple[Blueprint, ...] = (
    authorize.blueprint,
    token_endpoint.blueprint,
    metadata.blueprint,
    clients_api.blueprint,
    grants_api.blueprint,
)
