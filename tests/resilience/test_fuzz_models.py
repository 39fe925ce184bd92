"""``from_dict`` and ``validate`` take any JSON a client can send: only ValidationError.

Every request body of the API ends up in ``BaseModel.validate`` / ``from_dict``, so
any other exception there is a 500 waiting for the right body, and a partial
assignment before an error is a half-written row waiting for the next commit.
Hypothesis throws dictionaries of arbitrary JSON values (keys mixing every real
attribute name, hidden and read-only ones included, with random text) at each
model, on a new object (create) and on an existing one (update), and checks:

- the only exception is ``ValidationError``, whose errors name fields and never
  echo a submitted value;
- on error nothing was set; on success exactly the writable keys were taken, and
  every string they hold can be stored (no NUL, valid UTF-8).

CI runs a fixed number of examples derandomized (same examples every run);
``make chaos`` runs many more with a random seed (``QUART_API_FUZZ_EXAMPLES``,
``QUART_API_FUZZ_RANDOM=1``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import inspect
from sqlalchemy.orm import make_transient_to_detached

from quart_api import passwords
from quart_api.models import ApiToken, BaseModel, ShareLink, User, ValidationError

EXAMPLES = int(os.environ.get("QUART_API_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=os.environ.get("QUART_API_FUZZ_RANDOM") != "1",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
MODELS: list[type[BaseModel]] = [User, ApiToken, ShareLink]

# Values that pass some rule, so examples reach past the first check.
_PLAUSIBLE = st.sampled_from(
    [
        "alice",
        "Alice.B-2",
        "a@example.org",
        "correct horse battery",
        "users:read",
        str(uuid.UUID(int=7)),
        "2024-05-01T12:00:00+00:00",
        "2024-05-01T12:00:00",
        "x" * 300,
        "",
        "a\x00b",
        "\ud800",
        ["users:read", "users:write"],
        [1, 2],
    ]
)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
    | _PLAUSIBLE
)
JSON_VALUES = st.recursive(
    _SCALARS,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)


def _attribute_names(model: type[BaseModel]) -> list[str]:
    """Every name a body could try: columns (hidden ones too), relationships, write-only."""
    return sorted({attr.key for attr in inspect(model).attrs} | set(model.__writeonly_fields__))


def bodies(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    """Half the time only writable keys (so bodies get past "unknown field"), else anything."""
    writable = sorted(model.writable_fields())
    keys = st.sampled_from(_attribute_names(model)) | st.text(max_size=12)
    anything = st.dictionaries(keys, JSON_VALUES, max_size=6)
    if not writable:  # ShareLink: a client writes nothing
        return anything
    return st.dictionaries(st.sampled_from(writable), JSON_VALUES, max_size=len(writable)) | (
        anything
    )


@pytest.fixture(scope="module", autouse=True)
def _cheap_hashing() -> Iterator[None]:
    """A successful ``password`` is hashed: at test cost, and the default put back after."""
    saved = passwords._hasher
    passwords.configure(time_cost=1, memory_cost=8, parallelism=1)
    yield
    passwords._hasher = saved


def _state(obj: BaseModel) -> dict[str, Any]:
    return {k: v for k, v in vars(obj).items() if k != "_sa_instance_state"}


_LOADED: dict[type[BaseModel], dict[str, Any]] = {
    User: {
        "username": "existing",
        "email": None,
        "full_name": None,
        "password_hash": "$argon2id$stored",
        "is_admin": False,
        "session_version": 0,
    },
    ApiToken: {
        "user_id": uuid.UUID(int=1),
        "name": "existing",
        "token_hash": "0" * 64,
        "scopes": [],
        "expires_at": None,
        "last_used_at": None,
        "revoked_at": None,
    },
    ShareLink: {"user_id": uuid.UUID(int=1), "token_hash": "0" * 64},
}


def _existing(model: type[BaseModel]) -> BaseModel:
    """An object as loaded from the database (detached, every column loaded): an update."""
    now = datetime.now(UTC)
    obj = model(id=uuid.uuid4(), created_at=now, modified_at=now, **_LOADED[model])
    make_transient_to_detached(obj)
    return obj


def _check(model: type[BaseModel], obj: BaseModel, body: dict[str, Any]) -> None:
    before = _state(obj)
    failure: ValidationError | None = None
    try:
        obj.from_dict(**body)
    except ValidationError as error:
        failure = error
    if failure is not None:
        assert failure.errors, body
        for entry in failure.errors:
            assert set(entry) == {"field", "message"}
            assert entry["field"] in body or entry["message"] == "field is required"
            value = body.get(entry["field"])
            if isinstance(value, str) and len(value) >= 12:  # shorter ones may occur by chance
                assert value not in entry["message"], "a submitted value was echoed"
        assert _state(obj) == before, "from_dict changed the object before failing"
        return
    assert set(body) <= set(model.writable_fields()), body
    for name, value in _state(obj).items():
        for text in _strings(value):
            assert "\x00" not in text, (name, value)
            text.encode("utf-8")  # storable: no lone surrogates


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_from_dict_on_a_new_object_raises_only_validation_error(model: type[BaseModel]) -> None:
    @FUZZ
    @given(body=bodies(model))
    def run(body: dict[str, Any]) -> None:
        _check(model, model(), body)

    run()


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_from_dict_on_an_existing_object_raises_only_validation_error(
    model: type[BaseModel],
) -> None:
    @FUZZ
    @given(body=bodies(model))
    def run(body: dict[str, Any]) -> None:
        _check(model, _existing(model), body)

    run()


@FUZZ
@given(body=bodies(User), create=st.booleans())
def test_user_validate_returns_only_writable_fields(body: dict[str, Any], create: bool) -> None:
    try:
        clean = User.validate(body, create=create)
    except ValidationError as error:
        named = {e["field"] for e in error.errors}
    else:
        assert set(clean) == set(body) <= set(User.writable_fields())
        return
    assert named <= set(body) | set(User.writable_fields())
