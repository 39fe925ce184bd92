"""quart-schema: its OpenAPI provider's response objects, and its response conversion.

Checked on quart-schema 0.21 to 0.25.0 (``pyproject.toml``: ``>=0.21,<0.26``). What
is used beyond the documented decorators, each with a test in
``tests/adapters/test_quart_schema.py`` named after it:

- ``OpenAPIProvider.build_response_object(model, headers_model)``, which returns
  ``(response object, component definitions)``: overridden (its docstring invites
  that, but the signature is not part of the documentation).
- ``QuartSchema.openapi_provider`` (the provider instance) and ``"openapi"``, the
  endpoint ``QuartSchema`` serves ``openapi_path`` under.
- ``app.make_response`` as ``QuartSchema`` leaves it: a ``functools.wraps`` wrapper
  that converts every dict, list, model and dataclass, so ``__wrapped__`` is Quart's
  own ``make_response``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from quart import Quart, Response
from quart_schema import OpenAPIProvider, QuartSchema
from werkzeug.wrappers import Response as WerkzeugResponse

__all__ = [
    "OPENAPI_ENDPOINT",
    "ResponseObjectProvider",
    "convert_only",
    "openapi_provider",
    "serve_openapi",
]

#: The endpoint ``QuartSchema`` registers for ``openapi_path``.
OPENAPI_ENDPOINT = "openapi"

#: ``(response object, component definitions)``, as quart-schema builds them.
Built = tuple[dict[str, Any], dict[str, Any]]


class ResponseObjectProvider(OpenAPIProvider):
    """An `OpenAPIProvider` whose response objects pass through `response_object`."""

    def response_object(self, model: type[Any], build: Callable[[], Built]) -> Built:
        """The response object documenting ``model``; ``build()`` is quart-schema's."""
        return build()

    def build_response_object(self, model: type[Any], headers_model: type[Any] | None) -> Built:
        build = super().build_response_object
        return self.response_object(model, lambda: build(model, headers_model))


def openapi_provider(schema: QuartSchema) -> OpenAPIProvider:
    """The provider instance ``schema`` builds its document with."""
    provider: OpenAPIProvider = schema.openapi_provider
    return provider


def serve_openapi(app: Quart, view: Callable[[], Any]) -> None:
    """Serve ``view`` at ``QuartSchema``'s ``openapi_path`` instead of its own view."""
    if OPENAPI_ENDPOINT not in app.view_functions:
        raise RuntimeError(f"QuartSchema registered no {OPENAPI_ENDPOINT!r} endpoint on {app!r}")
    app.view_functions[OPENAPI_ENDPOINT] = view


def convert_only(app: Quart, needs_conversion: Callable[[Any], bool]) -> None:
    """Send only return values ``needs_conversion`` accepts through quart-schema's conversion.

    Call after ``QuartSchema(app)``. Other values go straight to Quart's own
    ``make_response``. The value tested is the body: the first item of a tuple.
    """
    converting = app.make_response
    plain = getattr(converting, "__wrapped__", converting)

    async def make_response(rv: Any) -> Response | WerkzeugResponse:
        value = rv[0] if isinstance(rv, tuple) else rv
        if needs_conversion(value):
            return await converting(rv)
        return await plain(rv)

    app.make_response = make_response  # type: ignore[method-assign,assignment]
