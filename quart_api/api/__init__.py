"""The JSON API under ``/api/v1`` (and the probes, registered separately)."""

from quart import Blueprint

from quart_api.api import sessions, share, tokens, users

__all__ = ["API_BLUEPRINTS"]

#: Registered in this order; ``share`` before ``users`` so ``/users/current/share``
#: is matched as its own rule.
API_BLUEPRINTS: tuple[Blueprint, ...] = (
    sessions.blueprint,
    tokens.blueprint,
    share.blueprint,
    users.blueprint,
)
