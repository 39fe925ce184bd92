"""The service's models and the BaseModel they share.

Importing this package registers every table on `quart_api.db.metadata` (Alembic's
`env.py` and the tests rely on that).
"""

from quart_api.db import metadata
from quart_api.models._fields import FieldRule, ValidationError, WriteOnly
from quart_api.models.api_token import ApiToken, hash_secret
from quart_api.models.base import BaseModel, UTCDateTime, utcnow
from quart_api.models.oauth import OAuthClient, OAuthGrant, OAuthRefreshToken
from quart_api.models.share_link import ShareLink
from quart_api.models.user import User, normalize_username

__all__ = [
    "ApiToken",
    "BaseModel",
    "FieldRule",
    "OAuthClient",
    "OAuthGrant",
    "OAuthRefreshToken",
    "ShareLink",
    "UTCDateTime",
    "User",
    "ValidationError",
    "WriteOnly",
    "hash_secret",
    "metadata",
    "normalize_username",
    "utcnow",
]
