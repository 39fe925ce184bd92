"""The quart-schema internals `quart_api.adapters.quart_schema` relies on.

Each test names the internal it proves is still there and still used by quart-schema:
a release that moves one fails the test of that name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from quart import Quart
from quart_schema import QuartSchema, document_response

from quart_api.adapters.quart_schema import (
    Built,
    ResponseObjectProvider,
    convert_only,
    openapi_provider,
    serve_openapi,
)


class Pet(BaseModel):
    name: str


class RecordingProvider(ResponseObjectProvider):
    models: list[type[Any]] = []

    def response_object(self, model: type[Any], build: Callable[[], Built]) -> Built:
        type(self).models.append(model)
        response, definitions = build()
        response["description"] = "recorded"
        return response, definitions


def pets_app(**schema_options: Any) -> tuple[Quart, QuartSchema]:
    app = Quart(__name__)
    schema = QuartSchema(app, **schema_options)

    @app.get("/pet")
    @document_response(Pet)
    async def pet() -> Pet:
        return Pet(name="rex")

    return app, schema


def test_quart_schema_adapter_still_builds_response_objects_through_build_response_object() -> None:
    RecordingProvider.models = []
    _, schema = pets_app(openapi_provider_class=RecordingProvider)

    document = openapi_provider(schema).schema()

    assert RecordingProvider.models == [Pet]
    response = document["paths"]["/pet"]["get"]["responses"][200]
    assert response["description"] == "recorded"
    assert "application/json" in response["content"]


def test_quart_schema_adapter_still_keeps_its_provider_on_openapi_provider() -> None:
    _, schema = pets_app(openapi_provider_class=RecordingProvider)

    assert isinstance(openapi_provider(schema), RecordingProvider)


async def test_quart_schema_adapter_still_serves_openapi_path_under_the_openapi_endpoint() -> None:
    app, _ = pets_app()

    async def replaced() -> dict[str, bool]:
        return {"replaced": True}

    serve_openapi(app, replaced)

    response = await app.test_client().get("/openapi.json")
    assert await response.get_json() == {"replaced": True}


async def test_quart_schema_adapter_still_wraps_make_response_keeping_wrapped() -> None:
    app, _ = pets_app()
    assert app.make_response.__wrapped__ == Quart.make_response.__get__(app)  # type: ignore[attr-defined]
    converted: list[object] = []

    def needs_conversion(value: object) -> bool:
        converted.append(value)
        return isinstance(value, BaseModel)

    convert_only(app, needs_conversion)

    @app.get("/plain")
    async def plain() -> tuple[dict[str, str], int, dict[str, str]]:
        return {"a": "b"}, 202, {"X-Snake_Header": "kept"}

    client = app.test_client()
    model = await client.get("/pet")
    as_is = await client.get("/plain")

    assert await model.get_json() == {"name": "rex"}  # converted by quart-schema
    assert as_is.status_code == 202
    assert as_is.headers["X-Snake_Header"] == "kept"  # quart-schema's conversion renames it
    assert [type(value) for value in converted] == [Pet, dict]
