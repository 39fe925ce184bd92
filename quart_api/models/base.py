"""BaseModel: UUID key, UTC timestamps, `to_dict` / `from_dict`, race-safe `get_or_create`.

Field rules are class attributes of each model:

- `__default_fields__`: what `to_dict()` shows with no arguments.
- `__hidden_fields__`: never shown, never accepted (`password_hash`, `token_hash`).
- `__readonly_fields__`: shown but never accepted. `id`, `created_at`, `modified_at`,
  primary and foreign keys are always read-only.
- `__writeonly_fields__`: `{"password": WriteOnly("set_password", ...)}`: accepted,
  never shown; the named method turns the value into hidden columns.

Datetimes are rendered as `datetime.isoformat()` of the UTC value, so always with a
`+00:00` offset (never `Z`, never naive): `2024-05-01T12:00:00.123456+00:00`.

What `to_dict(show, hide)` shows is worked out once per model and `show`/`hide` pair
(a field plan, cached), not per object: lists serialize many objects with the same
arguments. The same plans serialize plain rows (`row_serializer`), so a list read with
a Core `select` of a model's columns gives exactly what `to_dict` gives its objects.
Keys come in a fixed order: the default fields as declared, then the shown extras in
the model's declaration order, so equal data serializes to equal bytes (and equal
ETags) in every process.
"""

from __future__ import annotations

import asyncio
import inspect as pyinspect
import random
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache, lru_cache
from itertools import repeat
from operator import attrgetter, is_, itemgetter
from typing import Any, ClassVar, Final, Self

from sqlalchemy import DateTime, Dialect, String, inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator

from quart_api.db import Base, is_retryable_error
from quart_api.models._fields import FieldRule, ValidationError, WriteOnly

__all__ = [
    "BaseModel",
    "FieldRule",
    "RowSerializer",
    "RowsSerializer",
    "UTCDateTime",
    "ValidationError",
    "WriteOnly",
    "utcnow",
]

#: Attempts of `get_or_create` on serialization failure, deadlock or a locked SQLite.
GET_OR_CREATE_ATTEMPTS: Final = 5
_BACKOFF_BASE: Final = 0.01  # seconds; doubles per attempt, full jitter
_BACKOFF_CAP: Final = 0.5

_ALWAYS_READONLY: Final = frozenset({"id", "created_at", "modified_at"})
_NO_PATHS: Final[frozenset[str]] = frozenset()
#: Field plans kept per (model, show, hide, path); callers pass a handful of fixed lists.
_PLAN_CACHE_SIZE: Final = 1024

#: A serializer of one kind of row: `row_serializer`'s result.
RowSerializer = Callable[[Sequence[Any]], dict[str, Any]]
#: A serializer of a list of rows of one kind: `rows_serializer`'s result.
RowsSerializer = Callable[[Iterable[Sequence[Any]]], list[dict[str, Any]]]
_tzinfo = attrgetter("tzinfo")


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL stores `timestamptz`; SQLite has no timezone support, so values are
    stored as naive UTC and given back their UTC tzinfo on load. Naive input is
    refused rather than guessed.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    @property
    def python_type(self) -> type[datetime]:
        return datetime

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: give a timezone-aware (UTC) value")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None or value.tzinfo is UTC:
            return value  # astimezone(UTC) would give the value itself
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@cache
def _rules(cls: type[BaseModel]) -> tuple[dict[str, FieldRule], dict[str, FieldRule]]:
    """(readable, writable) rules of a model, computed once from its mapping."""
    mapper = inspect(cls)
    hidden = cls._hidden()
    readonly = cls._readonly()
    readable: dict[str, FieldRule] = {}
    writable: dict[str, FieldRule] = {}
    for attr in mapper.column_attrs:
        if attr.key in hidden or len(attr.columns) != 1:
            continue
        column = attr.columns[0]
        info = column.info
        try:
            python_type: type = info.get("python_type") or column.type.python_type
        except NotImplementedError:
            python_type = object
        is_readonly = attr.key in readonly or bool(column.primary_key or column.foreign_keys)
        has_default = column.default is not None or column.server_default is not None
        rule = FieldRule(
            name=attr.key,
            python_type=python_type,
            nullable=bool(column.nullable),
            required=not column.nullable and not has_default and not is_readonly,
            max_length=getattr(column.type, "length", None)
            if isinstance(column.type, String)
            else info.get("max_length"),
            min_length=info.get("min_length"),
            pattern=info.get("pattern"),
            pattern_hint=info.get("pattern_hint"),
            format=info.get("format"),
            item_type=info.get("item_type"),
            read_only=is_readonly,
        )
        readable[attr.key] = rule
        if not is_readonly:
            writable[attr.key] = rule
    for name, spec in cls.__writeonly_fields__.items():
        if not callable(getattr(cls, spec.setter, None)):
            raise TypeError(
                f"{cls.__name__}.__writeonly_fields__[{name!r}]: no method {spec.setter!r}"
            )
        writable[name] = FieldRule(
            name=name,
            python_type=spec.python_type,
            required=spec.required,
            max_length=spec.max_length,
            min_length=spec.min_length,
            format="password" if name == "password" else None,
            write_only=True,
        )
    return readable, writable


@dataclass(frozen=True, slots=True)
class _Shown:
    """One key of `to_dict`'s output: a column, or a relationship and what its child shows."""

    key: str
    relationship: bool
    child_show: frozenset[str] = _NO_PATHS  # relationships only
    path: str = ""  # relationships only: the dotted path of this key


def _paths(value: Iterable[str] | None) -> frozenset[str]:
    """`show`/`hide` as a set of dotted paths (a bare string is one path, not characters)."""
    if value is None:
        return _NO_PATHS
    if isinstance(value, str):
        return frozenset((value,))
    return value if isinstance(value, frozenset) else frozenset(value)


@lru_cache(maxsize=_PLAN_CACHE_SIZE)
def _plan(
    cls: type[BaseModel], show: frozenset[str], hide: frozenset[str], path: str | None
) -> tuple[_Shown, ...]:
    """What `to_dict(show, hide)` shows of a `cls` object at `path`, in output order.

    Defaults (at the top, or when the path itself is named in `show`) in declared
    order, then the keys `show` names at this level in the model's declaration order;
    hidden and write-only fields never, `hide`'s never, unknown names never.
    """
    mapper = inspect(cls)
    prefix = f"{path}." if path else ""
    with_defaults = path is None or path in show
    wanted = list(cls.__default_fields__) if with_defaults else []
    named = {
        item[len(prefix) :].split(".", 1)[0]
        for item in show
        if item.startswith(prefix) and len(item) > len(prefix)
    }
    wanted += [attr.key for attr in mapper.attrs if attr.key in named and attr.key not in wanted]
    hidden = cls._hidden()
    shown: list[_Shown] = []
    for key in wanted:
        full = prefix + key
        if key in hidden or full in hide:
            continue
        if key in mapper.relationships:
            # Named bare (or shown by default): the child shows its defaults too.
            bare = full in show or (with_defaults and key in cls.__default_fields__)
            shown.append(_Shown(key, True, show | {full} if bare else show, full))
        elif key in mapper.column_attrs:
            shown.append(_Shown(key, False))
    return tuple(shown)


class BaseModel(Base):
    """Abstract base of the service's models (see the module docstring for the rules)."""

    __abstract__ = True

    __default_fields__: ClassVar[tuple[str, ...]] = ("id", "created_at", "modified_at")
    __hidden_fields__: ClassVar[frozenset[str]] = frozenset()
    __readonly_fields__: ClassVar[frozenset[str]] = frozenset()
    __writeonly_fields__: ClassVar[Mapping[str, WriteOnly]] = {}

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4, sort_order=-10)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, sort_order=10)
    modified_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, onupdate=utcnow, sort_order=10
    )

    # -- field rules -------------------------------------------------------------

    @classmethod
    def _hidden(cls) -> frozenset[str]:
        return cls.__hidden_fields__ | frozenset(cls.__writeonly_fields__)

    @classmethod
    def _readonly(cls) -> frozenset[str]:
        return cls.__readonly_fields__ | _ALWAYS_READONLY

    @classmethod
    def writable_fields(cls) -> dict[str, FieldRule]:
        """Rules of every field a client may send (columns and write-only fields).

        The API validates request bodies and builds its OpenAPI request schemas from
        these (`rule.json_schema()`, `rule.required`), so they match `from_dict`.
        """
        return dict(_rules(cls)[1])

    @classmethod
    def readable_fields(cls) -> dict[str, FieldRule]:
        """Rules of every column `to_dict` may show (hidden and write-only excluded)."""
        return dict(_rules(cls)[0])

    @classmethod
    def validate(
        cls, data: Mapping[str, Any], *, create: bool, already_set: frozenset[str] = frozenset()
    ) -> dict[str, Any]:
        """Check `data` against the rules; return the cleaned values.

        Every problem is collected (unknown, read-only, hidden, wrong type, too long,
        null, required but missing when `create` and not in `already_set`) and raised
        together as one `ValidationError`. Hidden fields are reported as unknown:
        clients are not told they exist.
        """
        writable = _rules(cls)[1]
        readonly = set(_rules(cls)[0]) | {r.key for r in inspect(cls).relationships}
        errors: list[dict[str, str]] = []
        clean: dict[str, Any] = {}
        for name, value in data.items():
            rule = writable.get(name)
            if rule is None:
                message = "field is read-only" if name in readonly else "unknown field"
                errors.append({"field": name, "message": message})
                continue
            value, problem = rule.check(value)
            if problem is not None:
                errors.append({"field": name, "message": problem})
            else:
                clean[name] = value
        if create:
            errors.extend(
                {"field": name, "message": "field is required"}
                for name, rule in writable.items()
                if rule.required and name not in data and name not in already_set
            )
        if errors:
            raise ValidationError(errors)
        return clean

    def _validate_for_self(self, data: Mapping[str, Any]) -> dict[str, Any]:
        # A transient object (never added to a session) is being created; what its
        # constructor already set counts as given.
        if not inspect(self).transient:
            return self.validate(data, create=False)
        already_set = frozenset(
            name for name, rule in _rules(type(self))[1].items() if self._is_set(rule)
        )
        return self.validate(data, create=True, already_set=already_set)

    def _is_set(self, rule: FieldRule) -> bool:
        column = self.__writeonly_fields__[rule.name].column if rule.write_only else rule.name
        return column is not None and getattr(self, column, None) is not None

    def from_dict(self, /, **data: Any) -> Self:
        """Set writable fields from client input; all or nothing.

        Raises `ValidationError` naming every bad field; nothing is assigned then.
        Write-only fields go through their setter (e.g. `password` is hashed here,
        on the calling thread: in request handlers prefer `afrom_dict`).
        """
        clean = self._validate_for_self(data)
        self._assign(clean)
        return self

    async def afrom_dict(self, /, **data: Any) -> Self:
        """`from_dict` whose expensive write-only setters run off the event loop.

        Order: validate everything, await the async setters (`"a" + setter`), then
        assign the rest with no await in between, so a cancelled request leaves the
        object as it was, or (rarely) with only the async-set fields applied.
        """
        clean = self._validate_for_self(data)
        for name, spec in self.__writeonly_fields__.items():
            asetter = getattr(self, "a" + spec.setter, None)
            if name in clean and asetter is not None and pyinspect.iscoroutinefunction(asetter):
                await asetter(clean.pop(name))
        self._assign(clean)
        return self

    def _assign(self, clean: dict[str, Any]) -> None:
        for name, value in clean.items():
            spec = self.__writeonly_fields__.get(name)
            if spec is not None:
                getattr(self, spec.setter)(value)
            else:
                setattr(self, name, value)

    # -- output ------------------------------------------------------------------

    def to_dict(
        self,
        show: Iterable[str] | None = None,
        hide: Iterable[str] | None = None,
        _path: str | None = None,
    ) -> dict[str, Any]:
        """A JSON-ready dict: default fields, plus `show`, minus `hide`.

        `show`/`hide` take dotted paths for relationships: `show=["user"]` adds the
        user's default fields, `show=["user.username"]` adds only `{"user":
        {"username": ...}}`. Hidden and write-only fields are never shown, whatever
        is asked. Relationships are shown only when already loaded (no lazy IO in
        async code: load them with `selectinload`); an unloaded one is left out.
        """
        hide_set = _paths(hide)
        out: dict[str, Any] = {}
        unloaded: frozenset[str] | None = None
        for shown in _plan(type(self), _paths(show), hide_set, _path):
            key = shown.key
            if not shown.relationship:
                value = getattr(self, key)
                out[key] = value if type(value) in _AS_IS else _json_value(value)
                continue
            if unloaded is None:
                unloaded = frozenset(inspect(self).unloaded)
            if key in unloaded:
                continue
            value = getattr(self, key)
            if isinstance(value, BaseModel):
                out[key] = value.to_dict(shown.child_show, hide_set, shown.path)
            elif value is None:
                out[key] = None
            else:
                out[key] = [item.to_dict(shown.child_show, hide_set, shown.path) for item in value]
        return out

    @classmethod
    def shown_columns(
        cls, show: Iterable[str] | None = None, hide: Iterable[str] | None = None
    ) -> tuple[str, ...]:
        """The column keys `to_dict(show, hide)` shows, in output order.

        What a row needs to hold for `row_serializer(..., show, hide)`;
        `table_columns` turns them into the columns to select.
        """
        return tuple(
            s.key for s in _plan(cls, _paths(show), _paths(hide), None) if not s.relationship
        )

    @classmethod
    def table_columns(cls, keys: Iterable[str]) -> list[ColumnElement[Any]]:
        """The table columns of these column keys, for a Core `select` of plain rows."""
        attrs = inspect(cls).column_attrs
        return [attrs[key].columns[0] for key in keys]

    @classmethod
    def row_serializer(
        cls,
        columns: Sequence[str],
        show: Iterable[str] | None = None,
        hide: Iterable[str] | None = None,
    ) -> RowSerializer:
        """`to_dict(show, hide)` for plain rows whose values are `columns`, in that order.

        For reads that select columns (`table_columns`) instead of loading
        objects: the same field plan, the same value rendering, so a row and the
        object it came from serialize alike. A row carries no relationships: they
        are left out, as `to_dict` leaves out unloaded ones. Build serializers once
        (at import), not per row; lists of rows go faster through `rows_serializer`.

        Raises:
            ValueError: a column `to_dict` would show is not in `columns`.
        """
        serialize_rows = cls.rows_serializer(columns, show, hide)

        def serialize(row: Sequence[Any]) -> dict[str, Any]:
            return serialize_rows((row,))[0]

        return serialize

    @classmethod
    def rows_serializer(
        cls,
        columns: Sequence[str],
        show: Iterable[str] | None = None,
        hide: Iterable[str] | None = None,
    ) -> RowsSerializer:
        """`row_serializer` for a list of rows: one dict per row, in order.

        The rows are serialized column by column: a column of plain values (text,
        numbers, booleans, nulls) is taken as it is, the others are rendered value
        by value as `to_dict` renders them, all in C but the rendering itself.

        Raises:
            ValueError: a column `to_dict` would show is not in `columns`.
        """
        position = {key: index for index, key in enumerate(columns)}
        wanted = cls.shown_columns(show, hide)
        missing = [key for key in wanted if key not in position]
        if missing:
            raise ValueError(
                f"{cls.__name__}.row_serializer: the row lacks column(s) {missing} "
                f"that to_dict shows; select {list(wanted)}"
            )
        keys = tuple(wanted)
        take = _taker(tuple(position[key] for key in wanted))

        def serialize_rows(rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
            if not keys:
                return [{} for _ in rows]
            shown = list(zip(*map(take, rows), strict=True))  # one tuple per key
            for index, values in enumerate(shown):
                kinds = frozenset(map(type, values))
                if not kinds <= _AS_IS:
                    shown[index] = _column_render(kinds)(values)
            return list(map(dict, map(zip, repeat(keys), zip(*shown, strict=True))))

        return serialize_rows

    def __repr__(self) -> str:
        # Never includes hidden columns, so logging a model cannot leak a hash.
        return f"<{type(self).__name__} id={self.__dict__.get('id')}>"

    # -- get_or_create -----------------------------------------------------------

    @classmethod
    def lookup_clause(cls, name: str, value: Any) -> ColumnElement[bool]:
        """The WHERE clause matching `name == value`; models override it to normalize
        (User compares `lower(username)`), and every lookup goes through it."""
        column = getattr(cls, name, None)
        if column is None or name not in inspect(cls).column_attrs:
            raise TypeError(f"{cls.__name__} has no column {name!r} to look up")
        clause: ColumnElement[bool] = column.is_(None) if value is None else column == value
        return clause

    @classmethod
    async def get_or_create(
        cls, session: AsyncSession, /, defaults: Mapping[str, Any] | None = None, **filters: Any
    ) -> tuple[Self, bool]:
        """Return `(obj, created)`: the row matching `filters`, inserted if missing.

        Safe under concurrency: the insert runs in a SAVEPOINT; a unique-key
        collision rolls back to it and re-reads the row it collided with (found
        through `lookup_clause`, so `alice` finds `Alice`). Serialization failures,
        deadlocks and a locked SQLite are retried up to `GET_OR_CREATE_ATTEMPTS`
        times with jittered exponential backoff. The caller's transaction is never
        left broken.

        When the session has no transaction yet, this call owns it and restarts it
        on retry (a fresh snapshot, needed under REPEATABLE READ / SERIALIZABLE,
        where a collision may be invisible to the re-read). Inside a caller's
        transaction at those levels the error is re-raised instead: only the caller
        can restart its own transaction. At PostgreSQL's default READ COMMITTED and
        on SQLite (writers serialized by BEGIN IMMEDIATE) the savepoint suffices.

        `defaults` and `filters` are trusted column values set on a new object (not
        client input: validate that first with `validate`); nothing is committed.
        """
        owned = not session.in_transaction()
        clauses = [cls.lookup_clause(name, value) for name, value in filters.items()]
        query = select(cls).where(*clauses).limit(1)
        for attempt in range(1, GET_OR_CREATE_ATTEMPTS + 1):
            last = attempt == GET_OR_CREATE_ATTEMPTS
            try:
                async with session.begin_nested():
                    found = (await session.execute(query)).scalars().first()
                    if found is not None:
                        return found, False
                    obj = cls(**{**(defaults or {}), **filters})
                    session.add(obj)
                    await session.flush()
                    return obj, True
            except IntegrityError:
                # Rolled back to the savepoint: the outer transaction is intact.
                # Re-read the row we collided with (in a savepoint too, so even a
                # failing read cannot break the caller's transaction).
                async with session.begin_nested():
                    found = (await session.execute(query)).scalars().first()
                if found is not None:
                    return found, False
                # Not visible: another constraint failed, or (REPEATABLE READ /
                # SERIALIZABLE) our snapshot predates the row. Only a fresh
                # transaction, which we may start only if we own it, can tell.
                if not owned or last:
                    raise
                await session.rollback()
            except Exception as exc:
                if last or not is_retryable_error(exc):
                    raise
                if owned and session.in_transaction():
                    await session.rollback()
            delay = random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2**attempt))
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover


#: Types `_json_value` gives back as they are (exact types: subclasses take the long way).
_AS_IS: Final = frozenset({str, int, bool, float, type(None)})


def _json_value(value: Any) -> Any:
    """A column value as JSON-ready data (UTC ISO datetimes, UUIDs as strings)."""
    kind = type(value)
    if kind in _AS_IS:
        return value
    if kind is datetime and value.tzinfo is UTC:
        return value.isoformat()
    if isinstance(value, uuid.UUID):  # first: drivers give their own UUID subclasses
        return str(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        return dict(value)
    return value


def _utc_datetime_json(value: datetime) -> Any:
    """`_json_value` of an exact `datetime`, its usual case (UTC) first."""
    if value.tzinfo is UTC:
        return value.isoformat()
    return _json_value(value)


def _render_column(values: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(map(_json_value, values))


def _render_uuid_column(values: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(map(str, values))


def _render_datetime_column(values: tuple[datetime, ...]) -> tuple[Any, ...]:
    if all(map(is_, map(_tzinfo, values), repeat(UTC))):
        return tuple(map(datetime.isoformat, values))
    return tuple(map(_utc_datetime_json, values))


@lru_cache(maxsize=_PLAN_CACHE_SIZE)
def _column_render(kinds: frozenset[type]) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """How to render a column whose values are of these types, each as `_json_value`
    renders it: UUIDs alone (the drivers' subclasses too) as `str`, exact datetimes
    alone as their UTC ISO form, anything else or a mix value by value."""
    if len(kinds) == 1:
        (kind,) = kinds
        if kind is datetime:
            return _render_datetime_column
        if issubclass(kind, uuid.UUID):
            return _render_uuid_column
    return _render_column


def _taker(indices: tuple[int, ...]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """The values at `indices` of a row, as a tuple, picked in C."""
    if len(indices) == 1:
        only = indices[0]
        return lambda row: (row[only],)
    if not indices:
        return lambda row: ()
    return itemgetter(*indices)
