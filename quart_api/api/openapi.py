"""``/openapi.json`` and ``/docs``, generated from the routes (quart-schema).

Each view declares what it answers with :func:`documented`; error statuses are
documented as ``application/problem+json`` bodies, which is what the error
handlers send, so a schema checker (schemathesis) can hold responses to it.

The document is built once per app, on its first request (building it walks every
route through pydantic: tens of milliseconds of event-loop time), and then served
as the same bytes with a strong ``ETag``; ``If-None-Match`` gets a 304.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from quart import Quart, Response, request
from quart_schema import (
    DataSource,
    HttpSecurityScheme,
    Info,
    OpenAPIProvider,
    QuartSchema,
    document_querystring,
    document_request,
    document_response,
    hide,
)
from quart_schema.openapi import APIKeySecurityScheme

from quart_api.adapters.quart_schema import (
    ResponseObjectProvider,
    convert_only,
    openapi_provider,
    serve_openapi,
)
from quart_api.api.schemas import NoContent, ProblemSchema
from quart_api.json_provider import OrjsonProvider, dumps_bytes
from quart_api.problem import PROBLEM_JSON

__all__ = ["documented", "init_openapi"]

F = TypeVar("F", bound=Callable[..., Any])

#: Statuses any rate-limited route may answer with, besides its own. 401 too: a
#: bad bearer token is refused wherever it is sent, even where no login is needed
#: (the limits key on the caller, so an unverifiable caller is not served).
COMMON_ERRORS = (401, 429, 503)


class ApiOpenAPIProvider(ResponseObjectProvider):
    """Problems as ``application/problem+json``; ``NoContent`` as an empty response."""

    def response_object(
        self, model: type[Any], build: Callable[[], tuple[dict[str, Any], dict[str, Any]]]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        if model is NoContent:
            return {"description": "No content"}, {}
        response, definitions = build()
        if model is ProblemSchema:
            response["content"] = {PROBLEM_JSON: response["content"]["application/json"]}
            response["description"] = "An RFC 9457 problem"
        return response, definitions


def documented(
    *,
    responses: dict[int, type[Any]],
    errors: Iterable[int] = (),
    request: type[Any] | None = None,
    query: type[Any] | None = None,
) -> Callable[[F], F]:
    """Document a view: success bodies, the error statuses it can answer, its body."""

    def decorate(view: F) -> F:
        for status, model in responses.items():
            view = document_response(model, status)(view)
        # A body past MAX_CONTENT_LENGTH is 413 on every route that takes one.
        too_large = (413,) if request is not None else ()
        for status in sorted({*errors, *COMMON_ERRORS, *too_large}):
            view = document_response(ProblemSchema, status)(view)
        if request is not None:
            view = document_request(request, source=DataSource.JSON)(view)
        if query is not None:
            view = document_querystring(query)(view)
        return view

    return decorate


def init_openapi(app: Quart) -> None:
    """Serve ``/openapi.json`` and a Swagger UI at ``/docs``; keep orjson as the JSON provider."""
    schema = QuartSchema(
        app,
        info=Info(
            title="quart-api users API",
            version="1.0.0",
            description=inspect.cleandoc(
                """
                A users JSON API. Authenticate with a session cookie (POST /api/v1/auth/login)
                or `Authorization: Bearer <token>` (POST /api/v1/auth/tokens). Scopes:
                users:read, users:write, tokens:write. Errors are RFC 9457 problem+json.
                An unsafe request authenticated by the session cookie and sent by another
                site (Sec-Fetch-Site, Origin) is 403. Responses to callers with credentials
                are Cache-Control: private; those showing a secret are no-store.
                """
            ),
        ),
        openapi_path="/openapi.json",
        swagger_ui_path="/docs",
        redoc_ui_path=None,
        scalar_ui_path=None,
        openapi_provider_class=ApiOpenAPIProvider,
        security_schemes={
            "bearer": HttpSecurityScheme(scheme="bearer"),
            "cookie": APIKeySecurityScheme(in_="cookie", name="QUART_AUTH"),
        },
        security=[{"bearer": []}, {"cookie": []}],
    )
    app.json = OrjsonProvider(app)
    # Models and dataclasses still go through quart-schema's conversion; JSON-ready
    # values skip it: it dumps each through a new pydantic ``TypeAdapter``, a schema
    # built per response, about a third of a bare request's cost.
    convert_only(app, lambda value: not isinstance(value, _PLAIN))
    serve_openapi(app, _built_once(openapi_provider(schema)))


def _built_once(provider: OpenAPIProvider) -> Callable[[], Any]:
    """The ``/openapi.json`` view: the document built on first use, then its bytes."""
    built: list[tuple[bytes, str]] = []  # (body, quoted ETag), once built

    @hide
    async def openapi() -> Response:
        if not built:
            body = dumps_bytes(provider.schema())
            built.append((body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'))
        body, etag = built[0]
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if _matches(", ".join(request.headers.getlist("If-None-Match")), etag):
            return Response(b"", status=304, headers=headers)
        return Response(body, content_type="application/json", headers=headers)

    return openapi


def _matches(if_none_match: str, etag: str) -> bool:
    """``If-None-Match`` lists ``etag`` (weakly compared, RFC 9110 13.1.2) or is ``*``."""
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


#: What views return that needs no conversion: JSON-ready values and responses.
_PLAIN = (dict, list, str, bytes, Response)
