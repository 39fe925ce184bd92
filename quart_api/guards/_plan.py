"""What one endpoint checks, worked out once, when the app starts serving.

Everything that does not vary per request is resolved here, in the endpoint's
:class:`Plan`: key prefixes, policy names, ``RateLimit-Policy`` values, the limits an
``app.config`` key names, the cache namespace. The pipeline (``_pipeline``) then
formats only a request's own identity and the numbers the store answered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from quart_api.guards._cache import CachePlan
from quart_api.guards._decorators import Marks, PrecheckFn, ProtectSpec, RateSpec
from quart_api.guards._protect import Ban, Protect
from quart_api.guards._responses import Policy, PolicySet
from quart_api.guards._state import GuardsState
from quart_api.guards.rates import rate_from_config

__all__ = ["Plan", "RatePlan", "make_plan"]


@dataclass(frozen=True, slots=True)
class RatePlan:
    """One limit of an endpoint: its key prefix, store terms and policies, precomputed.

    A request's keys are ``keys`` plus its typed identity (``<keys>i:1.2.3.4}``), and
    which policies apply depends only on which identities it has, so nothing but the
    identity itself is formatted per request.
    """

    bucket: str
    #: every key of this limit starts so; one GCRA state per distinct rate, so two
    #: limits of one view (or of one scope) never overwrite each other's state
    keys: str
    #: ``Limit``'s arguments after the key: limit, window_ms, cost, dry_run
    terms: tuple[int, int, int, bool]
    methods: frozenset[str] | None
    exempt_when: Callable[[], Any] | None
    key: Callable[[], Any] | None
    ip: bool
    user: bool
    fail_closed: bool
    by_ip: PolicySet
    by_user: PolicySet
    by_ip_user: PolicySet
    by_key: PolicySet


def _rate_plan(spec: RateSpec, suffix: str, endpoint: str, key_prefix: str) -> RatePlan:
    bucket = endpoint if spec.scope is None else spec.scope
    window_s = _window_s(spec)

    def policy(kind: str) -> Policy:
        name = f"{spec.scope}-{kind}" if spec.scope else kind
        return Policy(name + suffix, spec.limit, window_s, kind)

    ip, user = policy("ip"), policy("user")
    return RatePlan(
        bucket=bucket,
        keys=f"{key_prefix}:r:{bucket}:{spec.limit}/{spec.window_ms}:{{",
        terms=(spec.limit, spec.window_ms, spec.cost, spec.dry_run),
        methods=spec.methods,
        exempt_when=spec.exempt_when,
        key=spec.key,
        ip=spec.ip,
        user=spec.user,
        fail_closed=spec.fail_closed,
        by_ip=PolicySet(ip),
        by_user=PolicySet(user),
        by_ip_user=PolicySet(ip, user),
        by_key=PolicySet(policy("key")),
    )


@dataclass(frozen=True, slots=True)
class Plan:
    """What one endpoint checks, resolved once at start-up."""

    endpoint: str
    rates: tuple[RatePlan, ...]
    #: ``@protected`` counted per client IP (a failure counter, a ban, reservations)
    protects: tuple[Protect, ...]
    #: ``@protected(key=...)``: counted per client IP and per key (two tallies)
    keyed: tuple[Protect, ...]
    #: the app-wide ban of scanners of unknown paths, checked here too
    unrouted: Ban | None
    cache: CachePlan | None
    prechecks: tuple[PrecheckFn, ...]
    #: whether the counters store is asked anything before the view
    counts: bool
    #: whether anything but rate limits is checked before the view (bans, tallies)
    protecting: bool


def make_plan(
    endpoint: str,
    marks: Marks,
    state: GuardsState,
    config: Mapping[str, Any],
    implied_rates: Sequence[RateSpec] = (),
) -> Plan:
    """The plan of ``endpoint`` from its marks; ``implied_rates`` (the default or the
    blueprint's limits) apply when it has no ``@rate_limited`` of its own."""
    prefix = state.key_prefix
    specs = tuple(_configured(s, config) for s in (marks.rates or implied_rates))
    protects = [Protect(_configured(s, config), endpoint, prefix) for s in marks.protects]
    unrouted = state.settings.protect_unrouted
    return Plan(
        endpoint=endpoint,
        rates=tuple(
            _rate_plan(spec, suffix, endpoint, prefix)
            for spec, suffix in zip(specs, _rate_suffixes(specs), strict=True)
        ),
        protects=tuple(p for p in protects if p.ban is not None),
        keyed=tuple(p for p in protects if p.ban is None),
        unrouted=Ban("unrouted", prefix) if unrouted else None,
        cache=None if marks.cache is None else CachePlan(state, marks.cache, endpoint),
        prechecks=tuple(marks.prechecks),
        counts=bool(specs or protects or unrouted),
        protecting=bool(protects or unrouted),
    )


def _rate_suffixes(rates: tuple[RateSpec, ...]) -> tuple[str, ...]:
    """Policy-name suffixes that tell several limits of one view apart in the headers.

    Draft-10 policy names identify a policy, so two limits of one view (``10/second``
    and ``1000/hour``) must not both be called ``"ip"``; a single limit keeps the
    plain name.
    """
    if len(rates) < 2:
        return ("",) * len(rates)
    windows = [r.window_ms for r in rates]
    return tuple(
        f"-{_window_s(r)}s" if windows.count(r.window_ms) == 1 else f"-{r.limit}-{_window_s(r)}s"
        for r in rates
    )


def _window_s(spec: RateSpec) -> int:
    """The window in whole seconds, as ``RateLimit-Policy: w`` (at least 1)."""
    return max(1, spec.window_ms // 1000)


_S = TypeVar("_S", RateSpec, ProtectSpec)


def _configured(spec: _S, config: Mapping[str, Any]) -> _S:
    """The spec with limit and window from ``app.config[spec.config]`` when set there."""
    if spec.config is None or config.get(spec.config) is None:
        return spec
    limit, window_ms = rate_from_config(spec.config, config[spec.config])
    return replace(spec, limit=limit, window_ms=window_ms)
