"""The app factory: settings -> extensions -> blueprints -> error handlers.

``hypercorn "quart_api.app:create_app()"`` serves it, with settings from the
environment: an invalid one ends the process with one line naming it and a
non-zero exit status (:mod:`quart_api.startup`). Tests and embedding apps pass
their own :class:`~quart_api.settings.Settings`, and get exceptions instead.
"""

from __future__ import annotations

import functools
import gc
import logging
from collections.abc import Awaitable, Callable
from inspect import CO_COROUTINE
from types import FunctionType
from typing import Any

from quart import Quart, Request, Response

from quart_api.service_extra import service_imports

with service_imports("quart_api.app (the users service)"):
    from quart_api import db, passwords
    from quart_api.api import API_BLUEPRINTS
    from quart_api.api.errors import register_error_handlers
    from quart_api.api.health import blueprint as health_blueprint
    from quart_api.api.metrics import blueprint as metrics_blueprint
    from quart_api.api.metrics import parse_allow_list
    from quart_api.api.openapi import init_openapi
    from quart_api.auth import ResponseStep, init_auth
    from quart_api.cli import register_cli
    from quart_api.guards import Guards
    from quart_api.json_provider import OrjsonProvider
    from quart_api.logging_setup import configure_logging
    from quart_api.no_session import NoSessionInterface
    from quart_api.oauth import OAUTH_BLUEPRINTS
    from quart_api.settings import Settings, SettingsError
    from quart_api.startup import fail_start_up

__all__ = ["create_app"]

log = logging.getLogger(__name__)


async def _freeze_start_up_objects() -> None:
    """Move what start-up built out of the collector's reach (``GC_FREEZE``).

    The service's heap is mostly import-time objects (SQLAlchemy, pydantic, routes)
    that live as long as the process. Python's full collections, which requests'
    short-lived objects keep triggering, would rescan all of them each time; frozen,
    they are skipped. Objects are still freed by reference counting, so this costs
    only cyclic garbage made of start-up objects, of which a served app makes none.
    """
    gc.collect()
    gc.freeze()


def _warn_of_a_generated_secret_key() -> None:
    log.warning(
        "SECRET_KEY is not set: using a random key for this process (development "
        "only; sessions end at restart and differ between workers)."
    )


@functools.cache
def _blueprint_names(endpoint: str) -> list[str]:
    """The blueprints of ``endpoint``, innermost first: ``a.b.view`` -> ``["a.b", "a"]``."""
    names: list[str] = []
    name = endpoint.rpartition(".")[0]
    while name:
        names.append(name)
        name = name.rpartition(".")[0]
    return names


class _Request(Request):
    """Quart's request, whose blueprint names are looked up per endpoint, once.

    Quart asks for them three times a request (before-request hooks, after-request
    hooks, teardown), and its own property splits the endpoint's name each time.
    Like Flask's, the list is shared: callers only read it.
    """

    @property
    def blueprints(self) -> list[str]:
        rule = self.url_rule
        return [] if rule is None else _blueprint_names(rule.endpoint)


class _Quart(Quart):
    """Quart that knows an ``async def`` function at a glance.

    Quart passes every hook and view through ``ensure_async`` on every request, and its
    test (asyncio's ``iscoroutinefunction``, then inspect's) unwraps methods and
    partials before it reads the code's flags: five Python calls per hook. A plain
    function whose code is a coroutine's is exactly what ``async def`` makes, and is
    returned as is; anything else gets Quart's own test.
    """

    def ensure_async(self, func: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        if type(func) is FunctionType and func.__code__.co_flags & CO_COROUTINE:
            return func
        return super().ensure_async(func)


def _no_content_no_content_headers(response: Response) -> None:
    """A 204 carries no content, so no ``Content-Type`` and no ``Content-Length``
    (RFC 9110 8.3 and 8.6: a server must not send the latter on a 204)."""
    if response.status_code == 204:
        response.headers.pop("Content-Type", None)
        response.headers.pop("Content-Length", None)


def _finish_responses(app: Quart, finish_auth: ResponseStep) -> None:
    """The app's one after-request hook: the 204 rule, then quart-auth's cookie and the
    caching headers (``finish_auth``).

    One hook, not one per step: Quart wraps every app-wide hook in ``ensure_async``
    on every request, and runs them in reverse order of registration, which a single
    hook states in one place instead.
    """

    @app.after_request
    async def finish_response(response: Response) -> Response:
        _no_content_no_content_headers(response)
        return await finish_auth(response)


def create_app(settings: Settings | None = None) -> Quart:
    """Build the service.

    Without ``settings``, they are read from the environment, and a failure to
    start (an invalid setting, named) exits the process with status 1 and one line
    on stderr, also under hypercorn's worker processes. With ``settings``, errors
    are raised as usual (:class:`SettingsError` and the like).
    """
    if settings is not None:
        return _build(settings)
    try:
        return _build(Settings.from_env())
    except SettingsError as error:
        fail_start_up(str(error))
    except Exception:
        # The process boundary: whatever stopped start-up must end in a non-zero exit.
        log.exception("start-up failed")
        fail_start_up("start-up failed; the error is logged above.")


def _build(settings: Settings) -> Quart:
    configure_logging(settings.log_level)
    app = _Quart("quart_api")
    app.request_class = _Request
    # `//users//current` is not a route: a 404 like any unknown path, never werkzeug's
    # 308 to the merged path, whose absolute Location is built from the client's Host
    # header and whose HTML body is cacheable by default.
    app.url_map.merge_slashes = False
    if settings.secret_key_generated:
        # When serving starts, not here: CLI commands sign nothing and build the app too.
        app.before_serving(_warn_of_a_generated_secret_key)
    app.json = OrjsonProvider(app)
    app.session_interface = NoSessionInterface()  # type: ignore[assignment]
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_content_length,
        PROPAGATE_EXCEPTIONS=False,
        **settings.guards_config(),
    )
    app.extensions["settings"] = settings

    passwords.configure(
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_cost,
        parallelism=settings.argon2_parallelism,
    )
    passwords.configure_slots(settings.password_hash_slots, settings.password_hash_queue_timeout)
    database = db.Database(
        settings.database_url,
        timeout=settings.database_timeout,
        pool_size=settings.database_pool_size,
    )
    db.init_app(app, database)
    app.extensions["migrations"] = db.read_migrations()

    @app.after_serving
    async def close_database() -> None:
        await database.dispose()

    @app.before_serving
    async def make_dummy_hash() -> None:
        """The hash an unknown user's login is verified against, made off the event loop."""
        await passwords.adummy_hash()

    if settings.gc_freeze:
        app.before_serving(_freeze_start_up_objects)

    guards = Guards(app)
    finish_auth = init_auth(app, settings, guards)

    app.extensions["metrics_allow"] = parse_allow_list(settings.metrics_allow)
    app.register_blueprint(health_blueprint)
    app.register_blueprint(metrics_blueprint)
    for blueprint in (*API_BLUEPRINTS, *OAUTH_BLUEPRINTS):
        app.register_blueprint(blueprint)
    register_error_handlers(app)
    _finish_responses(app, finish_auth)
    register_cli(app)
    init_openapi(app)
    return app
