"""/openapi.json describes every route, and real responses match it (schemathesis).

schemathesis drives the app in-process through its ASGI transport (its own
event loop thread), so the database is prepared synchronously here. An admin's
bearer token with every scope goes on each request, so the scoped routes are
exercised past their 401s.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from quart import Quart
from schemathesis.checks import not_a_server_error
from schemathesis.generation.case import Case
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from quart_api.app import create_app
from quart_api.auth import KNOWN_SCOPES
from quart_api.models import ApiToken, User
from tests.api.conftest import PASSWORD, create_schema, service_settings


def _prepared_app(directory: Path) -> Quart:
    """The service on a new SQLite file with its tables (created synchronously)."""
    engine = create_engine(f"sqlite:///{directory / 'test.db'}")
    with engine.begin() as connection:
        create_schema(connection)
    engine.dispose()
    return create_app(service_settings(directory))


# schemathesis' pytest plugin does not fit pytest 9 (`from_fixture` sets the removed
# `Node._nodeid`; eager `parametrize` gives every operation the same node id), so the
# app and its schema are built when the module loads and the operations parametrized
# here, each run through Hypothesis with schemathesis' strategies and checks.
_DIRECTORY = Path(tempfile.mkdtemp(prefix="quart-api-openapi-"))
APP = _prepared_app(_DIRECTORY)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
# A body past MAX_CONTENT_LENGTH is refused with 413 before it is read: as much a
# refusal of schema-violating data as a 400 or 422 (schemathesis' list omits it).
_rejection = schema.config.checks.negative_data_rejection
_rejection.expected_statuses = [*_rejection.expected_statuses, "413"]


@pytest.fixture(scope="module", autouse=True)
def _remove_database() -> Iterator[None]:
    yield
    shutil.rmtree(_DIRECTORY, ignore_errors=True)


@pytest.fixture(scope="module")
def admin_auth() -> dict[str, str]:
    """A bearer header of an admin's token with every scope."""
    engine = create_engine(f"sqlite:///{_DIRECTORY / 'test.db'}")
    with Session(engine) as session:
        admin = User().from_dict(username="root", password=PASSWORD)
        admin.is_admin = True
        session.add(admin)
        session.flush()
        token, secret = ApiToken.issue(admin.id, "schemathesis", list(KNOWN_SCOPES))
        session.add(token)
        session.commit()
    engine.dispose()
    return {"Authorization": f"Bearer {secret}"}


def test_openapi_lists_every_route() -> None:
    documented = {
        (method.upper(), path)
        for path, operations in schema.raw_schema["paths"].items()
        for method in operations
    }
    routed = {
        (method, rule.rule.replace("<", "{").replace(">", "}"))
        for rule in APP.url_map.iter_rules()
        if rule.rule.startswith(("/api/v1", "/healthz", "/readyz"))
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert routed <= documented


# Checks that hold a response to the schema; `negative_data_rejection` also holds
# the API to refusing (4xx) what the schema forbids.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
OPERATIONS = {result.ok().label: result.ok() for result in schema.get_all_operations()}
# Reads and updates of `current` reach the 200 responses (random ids only reach 404).
FIXED_PATH = {
    f"{method} /api/v1/users/{{user_ref}}": {"user_ref": "current"}
    for method in ("GET", "PUT", "PATCH")
}


@pytest.mark.parametrize("mode", list(GenerationMode))
@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_responses_match_the_schema_and_are_never_5xx(
    label: str, mode: GenerationMode, admin_auth: dict[str, str]
) -> None:
    strategy = OPERATIONS[label].as_strategy(
        generation_mode=mode, path_parameters=FIXED_PATH.get(label)
    )

    @given(case=strategy)
    @settings(
        max_examples=20,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def responses_conform(case: Case) -> None:
        case.call_and_validate(headers=admin_auth, checks=CHECKS)

    responses_conform()


def test_timestamps_are_documented_as_date_times() -> None:
    user = schema.raw_schema["components"]["schemas"]["User"]["properties"]
    assert user["created_at"].get("format") == "date-time"
