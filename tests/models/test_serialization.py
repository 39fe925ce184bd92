"""to_dict / from_dict rules of BaseModel.

Rules that do not touch the database run once, on transient objects; the ones that
depend on what a backend gives back (timestamps, loaded state) run on both backends.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from quart_api import passwords
from quart_api.models import ApiToken, FieldRule, User, ValidationError


def make_user(username: str = "alice", **extra: object) -> User:
    return User(
        username=username,
        full_name="Alice A.",
        email="alice@example.com",
        password_hash=passwords.hash_password("correct horse"),
        **extra,
    )


def make_token(user: User) -> ApiToken:
    token, _ = ApiToken.issue(user.id, "ci", ["users:read"])
    token.user = user
    return token


def errors_of(exc: pytest.ExceptionInfo[ValidationError]) -> dict[str, str]:
    return {e["field"]: e["message"] for e in exc.value.errors}


# -- to_dict --------------------------------------------------------------------------


def test_to_dict_gives_the_default_fields_only() -> None:
    user = make_user(id=uuid.uuid4())
    assert set(user.to_dict()) == {"id", "username", "full_name", "created_at", "modified_at"}


def test_show_adds_fields_and_hide_removes_them() -> None:
    data = make_user().to_dict(show=["email", "is_admin"], hide=["full_name"])
    assert data["email"] == "alice@example.com"
    assert "is_admin" in data
    assert "full_name" not in data


def test_hidden_fields_are_never_shown_even_when_asked() -> None:
    user = make_user()
    data = user.to_dict(show=["password_hash", "session_version", "password"])
    assert not {"password_hash", "session_version", "password"} & set(data)
    token = make_token(user)
    assert "token_hash" not in token.to_dict(show=["token_hash", "user.password_hash"])
    assert "password_hash" not in token.to_dict(show=["user.password_hash"]).get("user", {})


def test_dotted_path_shows_only_the_named_nested_field() -> None:
    token = make_token(make_user())
    data = token.to_dict(show=["user.username"])
    assert data["user"] == {"username": "alice"}
    assert data["name"] == "ci"


def test_bare_relationship_shows_its_defaults_and_nested_hide_applies() -> None:
    token = make_token(make_user())
    nested = token.to_dict(show=["user", "user.email"], hide=["user.full_name"])["user"]
    assert set(nested) == {"id", "username", "email", "created_at", "modified_at"}


def test_list_relationship_renders_each_loaded_item() -> None:
    user = make_user()
    make_token(user)
    data = user.to_dict(show=["api_tokens.name"])
    assert data["api_tokens"] == [{"name": "ci"}]


async def test_unloaded_relationship_is_left_out_without_io(session: AsyncSession) -> None:
    user = make_user()
    session.add(user)
    await session.flush()
    session.add(ApiToken.issue(user.id, "ci", [])[0])
    await session.commit()
    session.expunge_all()
    token = (await session.execute(select(ApiToken))).scalars().first()
    assert token is not None
    assert "user" not in token.to_dict(show=["user.username"])  # not loaded: no lazy IO
    loaded = (
        (await session.execute(select(ApiToken).options(selectinload(ApiToken.user))))
        .scalars()
        .first()
    )
    assert loaded is not None
    assert loaded.to_dict(show=["user.username"])["user"] == {"username": "alice"}


async def test_datetimes_are_iso_8601_utc_and_ids_are_strings(session: AsyncSession) -> None:
    user = make_user()
    session.add(user)
    await session.commit()
    session.expunge_all()
    loaded = await User.by_username(session, "alice")
    assert loaded is not None
    data = loaded.to_dict()
    assert uuid.UUID(data["id"]) == user.id
    for key in ("created_at", "modified_at"):
        assert data[key].endswith("+00:00")
        parsed = datetime.fromisoformat(data[key])
        assert parsed.utcoffset() == timedelta(0)
        assert abs(parsed - user.created_at) < timedelta(seconds=1)


def test_non_utc_datetimes_are_rendered_in_utc() -> None:
    token = ApiToken(
        name="x",
        scopes=[],
        expires_at=datetime(2030, 1, 1, 12, tzinfo=timezone(timedelta(hours=2))),
    )
    assert token.to_dict()["expires_at"] == "2030-01-01T10:00:00+00:00"


# -- from_dict ------------------------------------------------------------------------


def test_from_dict_sets_writable_fields() -> None:
    user = make_user()
    user.from_dict(full_name="Alice B.", email=None)
    assert (user.full_name, user.email) == ("Alice B.", None)


def test_unknown_read_only_and_hidden_fields_are_each_named() -> None:
    user = make_user()
    with pytest.raises(ValidationError) as exc:
        user.from_dict(
            nickname="x",
            is_admin=True,
            id=str(uuid.uuid4()),
            created_at="2020-01-01T00:00:00+00:00",
            password_hash="x",
            session_version=3,
            api_tokens=[],
        )
    assert errors_of(exc) == {
        "nickname": "unknown field",
        "is_admin": "field is read-only",
        "id": "field is read-only",
        "created_at": "field is read-only",
        "password_hash": "unknown field",  # hidden fields are not admitted to exist
        "session_version": "unknown field",
        "api_tokens": "field is read-only",
    }


def test_foreign_keys_are_read_only() -> None:
    token = ApiToken(name="x", scopes=[])
    with pytest.raises(ValidationError) as exc:
        token.from_dict(user_id=str(uuid.uuid4()), token_hash="0" * 64)
    assert errors_of(exc) == {"user_id": "field is read-only", "token_hash": "unknown field"}


def test_wrong_types_are_each_named() -> None:
    with pytest.raises(ValidationError) as exc:
        make_user().from_dict(username=123, full_name=True, email=["a@b.co"])
    assert errors_of(exc) == {
        "username": "must be a string",
        "full_name": "must be a string",
        "email": "must be a string",
    }
    token = ApiToken(name="x", scopes=[])
    with pytest.raises(ValidationError) as exc:
        token.from_dict(name=1.5, scopes=["users:read", 7])
    assert errors_of(exc) == {"name": "must be a string", "scopes": "must be a list of strings"}


@pytest.mark.parametrize(
    ("python_type", "value", "ok"),
    [
        (bool, True, True),
        (bool, 1, False),  # no int-as-bool
        (int, 3, True),
        (int, True, False),  # no bool-as-int
        (int, "3", False),
        (float, 2, True),
        (float, False, False),
        (str, 5, False),
        (uuid.UUID, "not-a-uuid", False),
        (datetime, "2030-01-01T00:00:00", False),  # naive: refused, not guessed
        (datetime, "2030-01-01T02:00:00+02:00", True),
    ],
)
def test_types_are_strict(python_type: type, value: object, ok: bool) -> None:
    _, problem = FieldRule("f", python_type).check(value)
    assert (problem is None) is ok


def test_datetime_strings_are_converted_to_utc() -> None:
    clean, problem = FieldRule("f", datetime).check("2030-01-01T02:00:00+02:00")
    assert problem is None
    assert clean == datetime(2030, 1, 1, tzinfo=UTC)
    assert clean.tzinfo is UTC


def test_over_long_strings_are_named_with_the_limit() -> None:
    with pytest.raises(ValidationError) as exc:
        make_user().from_dict(username="a" * 65, full_name="b" * 201, email="c" * 250 + "@x.io")
    assert errors_of(exc) == {
        "username": "must be at most 64 characters",
        "full_name": "must be at most 200 characters",
        "email": "must be at most 254 characters",
    }
    make_user().from_dict(username="a" * 64, full_name="b" * 200)  # the limits themselves pass


def test_null_is_refused_for_non_nullable_fields_only() -> None:
    user = make_user()
    with pytest.raises(ValidationError) as exc:
        user.from_dict(username=None, full_name=None)
    assert errors_of(exc) == {"username": "may not be null"}


def test_username_charset_and_length_are_checked() -> None:
    for bad in ("ab", "al ice", "alice!", "ålice"):
        with pytest.raises(ValidationError):
            make_user().from_dict(username=bad)
    make_user().from_dict(username="A.b_c-9")


def test_email_needs_a_basic_address_shape() -> None:
    with pytest.raises(ValidationError) as exc:
        make_user().from_dict(email="not an address")
    assert errors_of(exc) == {"email": "is not an e-mail address"}


def test_nothing_is_assigned_when_any_field_is_invalid() -> None:
    user = make_user()
    with pytest.raises(ValidationError):
        user.from_dict(full_name="Changed", password="long enough pw", username="x")
    assert user.full_name == "Alice A."
    assert passwords.verify_password(user.password_hash or "", "correct horse")


async def test_nothing_is_written_to_the_database_on_error(session: AsyncSession) -> None:
    session.add(make_user())
    await session.commit()
    user = await User.by_username(session, "alice")
    assert user is not None
    with pytest.raises(ValidationError):
        user.from_dict(full_name="Changed", is_admin=True)
    assert not session.dirty
    await session.commit()
    session.expunge_all()
    again = await User.by_username(session, "alice")
    assert again is not None
    assert (again.full_name, again.is_admin) == ("Alice A.", False)


def test_required_fields_are_named_when_creating_only() -> None:
    with pytest.raises(ValidationError) as exc:
        User().from_dict(full_name="Nobody")
    assert errors_of(exc) == {"username": "field is required", "password": "field is required"}


async def test_updates_need_no_required_fields(session: AsyncSession) -> None:
    session.add(make_user())
    await session.commit()
    user = await User.by_username(session, "ALICE")
    assert user is not None
    user.from_dict(full_name="Only this")
    await session.commit()
    assert user.full_name == "Only this"


def test_submitted_password_is_never_echoed() -> None:
    secret = "hunter2"  # too short
    with pytest.raises(ValidationError) as exc:
        User().from_dict(username="bob", password=secret)
    assert errors_of(exc) == {"password": "must be at least 8 characters"}
    assert secret not in str(exc.value)
    assert secret not in repr(exc.value.errors)
    with pytest.raises(ValidationError) as exc:
        User().from_dict(username="bob", password=["x" * 20])
    assert "x" * 20 not in repr(exc.value.errors)


def test_write_only_password_is_hashed_and_never_shown() -> None:
    user = User().from_dict(username="bob", password="correct horse battery")
    assert user.password_hash is not None
    assert user.password_hash.startswith("$argon2id$")
    assert passwords.verify_password(user.password_hash, "correct horse battery")
    assert "correct horse battery" not in repr(user.to_dict(show=["password", "password_hash"]))


async def test_afrom_dict_hashes_off_the_loop_with_the_same_rules() -> None:
    user = await User().afrom_dict(username="bob", password="correct horse battery")
    assert user.username == "bob"
    assert passwords.verify_password(user.password_hash or "", "correct horse battery")
    with pytest.raises(ValidationError):
        await user.afrom_dict(password="another good one", username="!")
    assert passwords.verify_password(user.password_hash or "", "correct horse battery")


async def test_changing_the_password_bumps_the_session_version(session: AsyncSession) -> None:
    session.add(User().from_dict(username="bob", password="first password"))
    await session.commit()
    user = await User.by_username(session, "bob")
    assert user is not None
    version = user.session_version
    await user.afrom_dict(password="second password")
    await session.commit()
    assert user.session_version == version + 1
    user.end_sessions()
    assert user.session_version == version + 2


def test_writable_fields_are_the_single_source_of_rules() -> None:
    rules = User.writable_fields()
    assert set(rules) == {"username", "email", "full_name", "password"}
    assert (rules["username"].max_length, rules["username"].min_length) == (64, 3)
    assert rules["username"].required
    assert rules["password"].required
    assert not rules["email"].required
    assert rules["email"].nullable
    assert rules["password"].write_only
    schema = rules["username"].json_schema()
    assert schema == {
        "type": "string",
        "maxLength": 64,
        "minLength": 3,
        "pattern": "^[A-Za-z0-9_.-]+$",
    }
    assert rules["email"].json_schema()["type"] == ["string", "null"]
    assert set(ApiToken.writable_fields()) == {"name", "scopes"}
    assert ApiToken.writable_fields()["scopes"].json_schema()["items"] == {"type": "string"}
    assert "password_hash" not in User.readable_fields()
    assert User.readable_fields()["is_admin"].read_only
