"""ApiToken, ShareLink and User specifics, on both backends."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from quart_api.models import ApiToken, ShareLink, User, normalize_username, utcnow


async def test_api_token_stores_only_the_sha256_of_its_secret(session: AsyncSession) -> None:
    user = User(username="alice")
    session.add(user)
    await session.flush()
    token, secret = ApiToken.issue(user.id, "ci", ["users:read", "users:write"])
    session.add(token)
    await session.commit()
    assert len(secret) >= 43
    assert token.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in repr(token.to_dict(show=["token_hash"]))
    session.expunge_all()
    found = (
        await session.execute(
            select(ApiToken).where(ApiToken.token_hash == ApiToken.hash_secret(secret))
        )
    ).scalar_one()
    assert found.scopes == ["users:read", "users:write"]
    assert found.to_dict()["scopes"] == ["users:read", "users:write"]


async def test_scopes_default_to_an_empty_list(session: AsyncSession) -> None:
    user = User(username="alice")
    session.add(user)
    await session.flush()
    token = ApiToken(user_id=user.id, name="bare", token_hash="0" * 64)
    session.add(token)
    await session.commit()
    assert token.to_dict()["scopes"] == []


async def test_expired_or_revoked_tokens_are_not_active(session: AsyncSession) -> None:
    user = User(username="alice")
    session.add(user)
    await session.flush()
    token, _ = ApiToken.issue(user.id, "short", [], expires_in=timedelta(seconds=60))
    session.add(token)
    await session.commit()
    assert token.is_active()
    assert not token.is_active(now=utcnow() + timedelta(seconds=61))
    token.revoked_at = utcnow()
    await session.commit()
    assert not token.is_active()


async def test_share_link_is_found_by_the_hash_of_its_secret(session: AsyncSession) -> None:
    user = User(username="alice")
    session.add(user)
    await session.flush()
    link, secret = ShareLink.issue(user.id)
    session.add(link)
    await session.commit()
    query = select(ShareLink).where(ShareLink.token_hash == ShareLink.hash_secret(secret))
    assert (await session.execute(query)).scalar_one().user_id == user.id
    assert "token_hash" not in link.to_dict(show=["token_hash"])


async def test_deleting_a_user_deletes_its_tokens_and_links(session: AsyncSession) -> None:
    user = User(username="alice")
    session.add(user)
    await session.flush()
    session.add(ApiToken.issue(user.id, "ci", [])[0])
    session.add(ShareLink.issue(user.id)[0])
    await session.commit()
    session.expunge_all()
    victim = await User.by_username(session, "alice")
    await session.delete(victim)  # tokens are not loaded: the database cascades
    await session.commit()
    for model in (ApiToken, ShareLink):
        count = (await session.execute(select(func.count()).select_from(model))).scalar_one()
        assert count == 0


async def test_modified_at_moves_on_update_and_created_at_does_not(
    session: AsyncSession,
) -> None:
    user = User(username="alice")
    session.add(user)
    await session.commit()
    created, modified = user.created_at, user.modified_at
    user.full_name = "Alice"
    await session.commit()
    assert user.created_at == created
    assert user.modified_at > modified


def test_username_normalization_is_lower_case() -> None:
    assert normalize_username("Alice.B_1") == "alice.b_1"


def test_repr_never_shows_hidden_columns() -> None:
    user = User(username="alice", password_hash="$argon2id$secret")
    assert "argon2" not in repr(user)
