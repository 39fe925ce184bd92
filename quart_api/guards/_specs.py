"""What the guard decorators record on a view, and how it is found again.

The decorators (``_marks``) only build these frozen specs and attach them to the
view; the extension finds them with :func:`marks_of` and the runner turns them into
checks. Keeping the data apart from the decorators lets the runner and the
extension import it without the argument checking that runs at import time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = [
    "MARK_ATTRIBUTE",
    "CacheSpec",
    "IdentityFn",
    "Marks",
    "PrecheckFn",
    "ProtectSpec",
    "RateSpec",
    "mark",
    "marks_of",
]

F = TypeVar("F", bound=Callable[..., Any])
#: An identity or predicate callable: sync or async, no arguments, reads ``request``.
IdentityFn = Callable[[], Any]
#: A pre-check: sync or async, no arguments; raises an HTTPException to refuse.
PrecheckFn = Callable[[], Any]

MARK_ATTRIBUTE = "__quart_api_guards__"


@dataclass(frozen=True, slots=True)
class RateSpec:
    """One ``@rate_limited`` as written; keys are built per request by the runner."""

    limit: int
    window_ms: int
    methods: frozenset[str] | None
    ip: bool
    user: bool
    key: IdentityFn | None
    scope: str | None
    cost: int
    exempt_when: IdentityFn | None
    dry_run: bool
    fail_closed: bool
    config: str | None = None


@dataclass(frozen=True, slots=True)
class ProtectSpec:
    """One ``@protected`` as written (``key``: also count per that key, across clients)."""

    limit: int
    window_ms: int
    statuses: frozenset[int]
    block_status: int
    reset_on_success: bool
    escalate: bool
    max_ban_ms: int
    scope: str | None
    config: str | None = None
    key: IdentityFn | None = None
    block_detail: str | None = None


@dataclass(frozen=True, slots=True)
class CacheSpec:
    """One ``@cached`` as written."""

    ttl: int
    stale: int
    unique_per_user: bool
    namespace: str | None
    extra_headers: frozenset[str]


@dataclass(slots=True)
class Marks:
    """Everything the guard decorators recorded on one view."""

    rates: list[RateSpec] = field(default_factory=list)
    protects: list[ProtectSpec] = field(default_factory=list)
    cache: CacheSpec | None = None
    prechecks: list[PrecheckFn] = field(default_factory=list)


def marks_of(view: Callable[..., Any]) -> Marks | None:
    """The marks on ``view`` (also found through ``functools.wraps`` copies)."""
    marks = getattr(view, MARK_ATTRIBUTE, None)
    return marks if isinstance(marks, Marks) else None


def mark(view: F) -> Marks:
    """The marks of ``view``, attached on first use."""
    if not callable(view):
        raise TypeError(f"A guard decorates a view function, not {view!r}.")
    marks = marks_of(view)
    if marks is None:
        marks = Marks()
        setattr(view, MARK_ATTRIBUTE, marks)
    return marks
