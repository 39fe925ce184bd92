"""Fixtures of the attack tests: the OAuth fixtures (the service on a real PostgreSQL)."""

from tests.oauth.conftest import (
    alice,
    app,
    bearer,
    client,
    developer,
    make_oauth_app,
    make_user,
    oauth,
)

__all__ = ["alice", "app", "bearer", "client", "developer", "make_oauth_app", "make_user", "oauth"]
