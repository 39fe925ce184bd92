"""Row serialization: `row_serializer` gives what `to_dict` gives, from the same field plans.

List reads select columns and serialize rows; single objects go through `to_dict`.
These tests hold the two to one output, on random models with random values and
random `show`/`hide` lists, and pin the rules a plan must keep (hidden never shown,
a fixed key order).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import inspect

from quart_api.models import (
    ApiToken,
    BaseModel,
    OAuthClient,
    OAuthGrant,
    OAuthRefreshToken,
    ShareLink,
    User,
)

MODELS: tuple[type[BaseModel], ...] = (
    User,
    ApiToken,
    ShareLink,
    OAuthClient,
    OAuthGrant,
    OAuthRefreshToken,
)

_offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
_datetimes = st.one_of(
    st.datetimes(
        min_value=datetime(1970, 1, 2), max_value=datetime(9998, 12, 30), timezones=_offsets
    ),
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9998, 12, 30)),  # naive
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9998, 12, 30)).map(
        lambda value: value.replace(tzinfo=UTC)
    ),
)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)
#: Any value a column may hold on an object: the rendering rules apply per value.
_values = st.one_of(
    st.none(),
    st.text(max_size=10),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.uuids(),
    _datetimes,
    st.dates(),
    _json,
)


def _names(model: type[BaseModel]) -> list[str]:
    """Every name a caller could pass: attributes, hidden and write-only fields, paths."""
    mapper = inspect(model)
    names = [attr.key for attr in mapper.attrs] + ["password", "nope"]
    for relationship in mapper.relationships:
        child = relationship.mapper
        names += [f"{relationship.key}.{attr.key}" for attr in child.attrs]
        names.append(f"{relationship.key}.nope")
    return names


@st.composite
def _cases(draw: st.DrawFn) -> tuple[type[BaseModel], dict[str, Any], Any, Any, list[str]]:
    model = draw(st.sampled_from(MODELS))
    columns = [attr.key for attr in inspect(model).column_attrs]
    values = {key: draw(_values) for key in columns}
    names = _names(model)
    subsets = st.lists(st.sampled_from(names), max_size=6, unique=True)
    show = draw(st.one_of(st.none(), subsets, st.sampled_from(names)))  # a bare string too
    hide = draw(st.one_of(st.none(), subsets))
    order = draw(st.permutations(columns))
    return model, values, show, hide, list(order)


@settings(max_examples=400, deadline=None)
@given(_cases())
def test_a_row_serializes_like_the_object_it_holds(
    case: tuple[type[BaseModel], dict[str, Any], Any, Any, list[str]],
) -> None:
    model, values, show, hide, order = case
    obj = model()
    for key, value in values.items():
        setattr(obj, key, value)
    row = tuple(values[key] for key in order)  # hidden columns included: never shown
    expected = obj.to_dict(show=show, hide=hide)
    got = model.row_serializer(order, show=show, hide=hide)(row)
    assert got == expected
    assert list(got) == list(expected)  # same keys in the same order


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=4), st.data())
def test_rows_serialize_together_like_the_objects_they_hold(
    count: int, data: st.DataObject
) -> None:
    """A list of rows, columns of mixed kinds included, serializes like each object alone."""
    model = data.draw(st.sampled_from(MODELS))
    columns = [attr.key for attr in inspect(model).column_attrs]
    show = data.draw(st.one_of(st.none(), st.lists(st.sampled_from(_names(model)), max_size=6)))
    rows, expected = [], []
    for _ in range(count):
        values = {key: data.draw(_values) for key in columns}
        obj = model()
        for key, value in values.items():
            setattr(obj, key, value)
        rows.append(tuple(values[key] for key in columns))
        expected.append(obj.to_dict(show=show))
    got = model.rows_serializer(columns, show=show)(rows)
    assert got == expected
    assert [list(body) for body in got] == [list(body) for body in expected]


def test_keys_come_in_a_fixed_order_whatever_order_show_names_them() -> None:
    user = User(id=uuid.uuid4(), username="alice", email="a@example.org", is_admin=False)
    one = user.to_dict(show=["is_admin", "email"])
    other = user.to_dict(show={"email", "is_admin"})
    assert list(one) == list(other) == [*User.__default_fields__, "email", "is_admin"]


def test_hidden_and_write_only_fields_never_leave_a_row() -> None:
    columns = [attr.key for attr in inspect(User).column_attrs]
    row = [f"value of {key}" for key in columns]
    data = User.row_serializer(columns, show=["password_hash", "session_version", "password"])(row)
    assert not {"password_hash", "session_version", "password"} & set(data)
    assert "value of password_hash" not in repr(data)


def test_a_row_missing_a_shown_column_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="'email'"):
        User.row_serializer(["id", "username", "full_name", "created_at", "modified_at"], ["email"])


def test_relationships_are_left_out_of_rows_as_unloaded_ones_are_of_objects() -> None:
    columns = User.shown_columns(show=["api_tokens"])
    assert "api_tokens" not in columns
    user = User(id=uuid.uuid4(), username="alice")
    row = [getattr(user, key) for key in columns]
    assert User.row_serializer(columns, show=["api_tokens"])(row) == user.to_dict(
        show=["api_tokens"]
    )


def test_table_columns_select_what_shown_columns_names() -> None:
    keys = User.shown_columns(show=["email", "is_admin"])
    assert [column.key for column in User.table_columns(keys)] == list(keys)
    assert all(column.table is User.__table__ for column in User.table_columns(keys))
