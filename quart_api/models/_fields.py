"""Field rules: the one description of what a client may write, and how it is checked.

`BaseModel.writable_fields()` builds a `FieldRule` per writable column (from the
column's type, length, nullability and `info`) and per declared write-only field.
`from_dict` validates with these rules, and the API's request validation and
OpenAPI schema read the same objects, so the two can never disagree.

Column `info` keys understood here: `min_length`, `pattern`, `pattern_hint` (the
message when the pattern does not match), `format` (OpenAPI format, e.g. "email"),
`python_type` and `item_type` (for JSON columns: `list` of `str`).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

__all__ = ["FieldRule", "ValidationError", "WriteOnly"]

_TYPE_NAMES: Final[dict[type, str]] = {
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    list: "a list",
    dict: "an object",
    uuid.UUID: "a UUID",
    datetime: "an ISO 8601 date-time with a timezone",
}

_JSON_TYPES: Final[dict[type, str]] = {
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    list: "array",
    dict: "object",
    uuid.UUID: "string",
    datetime: "string",
}


class ValidationError(ValueError):
    """Input that breaks the field rules; `errors` names every offending field.

    `errors` is `[{"field": name, "message": text}, ...]`, ready for a problem+json
    body. Messages never contain the submitted value (it may be a password).
    """

    def __init__(self, errors: list[dict[str, str]]) -> None:
        self.errors = errors
        super().__init__("invalid fields: " + ", ".join(e["field"] for e in errors))


@dataclass(frozen=True, slots=True)
class WriteOnly:
    """Declares a write-only field: accepted as input, turned into hidden columns by
    the model method `setter` (for example `password` -> `set_password`).

    When the model also has an async method named `"a" + setter`, `afrom_dict` awaits
    it instead, so expensive work (hashing) runs off the event loop. `column` names
    the hidden column the setter fills: when it is already set on a new object, a
    `required` write-only field may be left out.
    """

    setter: str
    column: str | None = None
    python_type: type = str
    min_length: int | None = None
    max_length: int | None = None
    required: bool = False


@dataclass(frozen=True, slots=True)
class FieldRule:
    """What one field accepts.

    Attributes:
        name: the key in request bodies and in `to_dict` output.
        python_type: `str`, `bool`, `int`, `float`, `uuid.UUID`, `datetime`, `list`, `dict`.
        nullable: `None` is accepted.
        required: must be given when creating a new object.
        max_length / min_length: in characters (strings) or items (lists).
        pattern: regular expression the whole string must match.
        pattern_hint: message when `pattern` does not match.
        format: OpenAPI string format ("email", "uuid", "date-time", "password").
        item_type: element type of a list.
        read_only: shown but never accepted as input.
        write_only: accepted but never shown.
    """

    name: str
    python_type: type
    nullable: bool = False
    required: bool = False
    max_length: int | None = None
    min_length: int | None = None
    pattern: str | None = None
    pattern_hint: str | None = None
    format: str | None = None
    item_type: type | None = None
    read_only: bool = False
    write_only: bool = False
    _regex: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.pattern is not None:
            object.__setattr__(self, "_regex", re.compile(self.pattern))

    def check(self, value: Any) -> tuple[Any, str | None]:
        """Return `(clean_value, None)` or `(None, message)`.

        Types are strict: no bool-as-int, no number-as-string. UUIDs and datetimes
        also accept their string forms (as they arrive in JSON); datetimes must carry
        a timezone and come back in UTC.
        """
        if value is None:
            return (None, None) if self.nullable else (None, "may not be null")
        clean, ok = _coerce(self.python_type, value)
        if not ok:
            return None, f"must be {_type_name(self.python_type, self.item_type)}"
        item_type = self.item_type
        if (
            isinstance(clean, list)
            and item_type is not None
            and not all(_coerce(item_type, item)[1] for item in clean)
        ):
            return None, f"must be {_type_name(list, item_type)}"
        if isinstance(clean, str | list):
            unstorable = _unstorable(clean, allow_nul=self.write_only)
            if unstorable is not None:
                return None, unstorable
            unit = "characters" if isinstance(clean, str) else "items"
            if self.max_length is not None and len(clean) > self.max_length:
                return None, f"must be at most {self.max_length} {unit}"
            if self.min_length is not None and len(clean) < self.min_length:
                return None, f"must be at least {self.min_length} {unit}"
        regex = self._regex
        if regex is not None and isinstance(clean, str) and regex.fullmatch(clean) is None:
            return None, self.pattern_hint or "has an invalid format"
        return clean, None

    def json_schema(self) -> dict[str, Any]:
        """This rule as an OpenAPI 3.1 / JSON Schema property."""
        json_type: Any = _JSON_TYPES.get(self.python_type, "string")
        schema: dict[str, Any] = {"type": [json_type, "null"] if self.nullable else json_type}
        fmt = self.format or {uuid.UUID: "uuid", datetime: "date-time"}.get(self.python_type)
        if fmt:
            schema["format"] = fmt
        is_list = self.python_type is list
        if self.max_length is not None:
            schema["maxItems" if is_list else "maxLength"] = self.max_length
        if self.min_length is not None:
            schema["minItems" if is_list else "minLength"] = self.min_length
        if self.pattern is not None:
            schema["pattern"] = self.pattern
        if is_list and self.item_type is not None:
            schema["items"] = {"type": _JSON_TYPES.get(self.item_type, "string")}
        if self.read_only:
            schema["readOnly"] = True
        if self.write_only:
            schema["writeOnly"] = True
        return schema


def _unstorable(value: str | list[Any], *, allow_nul: bool) -> str | None:
    """Why a string (or a list's strings) cannot be stored, or None.

    PostgreSQL's text types refuse NUL (valid in JSON as ``\\u0000``), and a lone
    surrogate (from Python callers; JSON parsers refuse it) is not UTF-8: either
    would fail at the database as a 500 instead of here as a 422. Write-only values
    (a password) are hashed, not stored, so NUL is fine there.
    """
    texts = [value] if isinstance(value, str) else [v for v in value if isinstance(v, str)]
    for text in texts:
        if not allow_nul and "\x00" in text:
            return "may not contain NUL characters"
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                return "must be valid Unicode text (no lone surrogates)"
    return None


def _type_name(python_type: type, item_type: type | None) -> str:
    if python_type is list and item_type is not None:
        return f"a list of {_TYPE_NAMES.get(item_type, item_type.__name__).split(' ', 1)[1]}s"
    return _TYPE_NAMES.get(python_type, python_type.__name__)


def _coerce(python_type: type, value: Any) -> tuple[Any, bool]:
    """Strict type check with the two conversions JSON needs (UUID, datetime)."""
    if python_type is bool:
        return value, isinstance(value, bool)
    if python_type is int:
        return value, isinstance(value, int) and not isinstance(value, bool)
    if python_type is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return (float(value) if ok else None), ok
    if python_type is uuid.UUID:
        if isinstance(value, uuid.UUID):
            return value, True
        if isinstance(value, str):
            try:
                return uuid.UUID(value), True
            except ValueError:
                return None, False
        return None, False
    if python_type is datetime:
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                return None, False
        if isinstance(value, datetime) and value.tzinfo is not None:
            return value.astimezone(UTC), True
        return None, False
    return value, isinstance(value, python_type)
