"""schemathesis fuzzes every REST route of the OpenAPI document against a real server.

No answer may be a 5xx, break the documented schema (status codes, content types, bodies), or
accept data the schema calls invalid (strict models). Stream routes and the WebSocket are left
out: their answers never end. Bounded: a few examples per route and generation mode.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from web_support import LiveServer, server_settings, start_server

pytestmark = pytest.mark.timeout(120)

EXAMPLES = 25
STREAMS = ("/api/jobs/{job_id}/stream", "/api/stream")
CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'fuzz.db'}"
    live = start_server(server_settings(url))
    # Some jobs of every kind, so that lists and filters have something to show.
    for args in ({"value": 1}, {"value": 2, "text": "two"}):
        live.submit("echo", args, labels={"k": "v"})
    live.submit("echo", delay=3600, queue="later")
    live.submit("boom")
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def schema(fuzzed: LiveServer) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{fuzzed.api}/openapi.json")


def operations() -> list[tuple[str, str, bool]]:
    """(method, path, takes input) of every documented REST route, read from the app itself."""
    import underway
    from underway.web import create_app

    document = create_app(underway.App(settings=server_settings("sqlite:///:memory:"))).openapi()
    return [
        (method.upper(), path, _takes_input(operation))
        for path, item in sorted(document["paths"].items())
        if path not in STREAMS
        for method, operation in item.items()
    ]


def _takes_input(operation: dict[str, Any]) -> bool:
    """A body or a query parameter: something that can be invalid (any string is a job id)."""
    return "requestBody" in operation or any(p["in"] != "path" for p in operation.get("parameters", ()))


def cases() -> list[tuple[schemathesis.GenerationMode, str, str]]:
    """Valid inputs for every route; invalid ones for the routes that take any."""
    positive, negative = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
    return [(positive, method, path) for method, path, _ in operations()] + [
        (negative, method, path) for method, path, takes_input in operations() if takes_input
    ]


@pytest.mark.parametrize(("mode", "method", "path"), cases(), ids=lambda x: str(x))
def test_route_conforms_to_its_schema(
    fuzzed: LiveServer,
    schema: schemathesis.BaseSchema,
    method: str,
    path: str,
    mode: schemathesis.GenerationMode,
) -> None:
    operation = schema[path][method]
    checks = [*CHECKS, negative_data_rejection] if mode is schemathesis.GenerationMode.NEGATIVE else CHECKS
    session = requests.Session()
    session.trust_env = False

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case[Any]) -> None:
        case.call_and_validate(base_url=fuzzed.base, session=session, checks=checks)

    try:
        run()
    finally:
        session.close()


def test_there_is_something_to_fuzz() -> None:
    fuzzed_routes = {path for _, path, _ in operations()}
    assert {"/api/jobs", "/api/jobs/{job_id}", "/api/jobs/{job_id}/events", "/api/tasks"} <= fuzzed_routes
    assert not fuzzed_routes & set(STREAMS)
