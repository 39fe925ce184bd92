"""The orjson provider answers ``jsonify`` exactly as Flask's own provider does."""

from __future__ import annotations

from typing import Any

import pytest
from flask.json.provider import DefaultJSONProvider as FlaskJSONProvider
from quart import Quart

from quart_api.json_provider import OrjsonProvider

CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    ((), {}),
    (({"a": 1},), {}),
    (([1, 2],), {}),
    ((1, "two"), {}),
    ((), {"a": 1, "b": [2]}),
    ((None,), {}),
    ((0,), {}),
]


@pytest.mark.parametrize(("args", "kwargs"), CALLS)
async def test_jsonify_arguments_make_the_same_body_as_flasks_provider(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    app = Quart(__name__)
    ours = OrjsonProvider(app).response(*args, **kwargs)
    flasks = FlaskJSONProvider(app).response(*args, **kwargs)  # type: ignore[arg-type]

    assert ours.mimetype == "application/json"
    assert app.json.loads(await ours.get_data()) == app.json.loads(await flasks.get_data())


def test_jsonify_with_both_kinds_of_arguments_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="not both"):
        OrjsonProvider(Quart(__name__)).response(1, a=1)
