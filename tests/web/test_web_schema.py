"""schemathesis fuzzes every REST route of the OpenAPI document against a real server.

No answer may be a 5xx, break the documented schema (status codes, content types, bodies), or
accept data the schema calls invalid (strict models). Stream routes and the WebSocket are left
out: their answers never end. Bounded: a few examples per route and generation mode.

The routes are fuzzed twice: on a server with authentication off (every request an admin), and
on one with ``auth=on``, as an admin key, as a user key (whose answers include 403 and 404
for what is not its own) and with no credentials at all (401 everywhere but ``/healthz``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
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
#: Without credentials every answer is the same 401: a few examples show it is documented.
ANONYMOUS_EXAMPLES = 5
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


@dataclass(frozen=True)
class Guarded:
    """A server with ``auth=on`` and the ``Authorization`` headers of its principals."""

    live: LiveServer
    headers: dict[str, dict[str, str]]


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz-auth') / 'fuzz.db'}"
    keys = asyncio.run(create_keys(url))
    headers = {role: {"Authorization": f"Bearer {key}"} for role, key in keys.items()}
    headers["anonymous"] = {}
    live = start_server(server_settings(url, auth="on"), headers=headers["admin"])
    # Jobs and batches of both owners, so that lists and filters have some of each to show.
    for role in ("admin", "user"):
        client = live.client(headers=headers[role])
        for args in ({"value": 1}, {"value": 2, "text": role}):
            assert client.post("/jobs", json={"task": "echo", "args": args}).status_code == 201
        assert client.post("/batches", json={"task": "echo", "items": [{}, {}]}).status_code == 201
    try:
        yield Guarded(live, headers)
    finally:
        live.stop()


async def create_keys(url: str) -> dict[str, str]:
    """An admin key and a user key, made in the store before the server starts."""
    import underway

    app = underway.App(settings=underway.Settings(url=url))
    try:
        await app.open()
        _, admin = await app.accounts.create_key("root", role="admin")
        _, user = await app.accounts.create_key("ada", role="user")
    finally:
        await app.close()
    return {"admin": admin, "user": user}


@pytest.fixture(scope="module")
def guarded_schema(guarded: Guarded) -> schemathesis.BaseSchema:
    """The schema as the guarded server serves it: behind the guard too."""
    return schemathesis.openapi.from_url(f"{guarded.live.api}/openapi.json", headers=guarded.headers["user"])


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


def guarded_cases() -> list[tuple[str, schemathesis.GenerationMode, str, str]]:
    """Every case as an admin and as a user; valid inputs without credentials."""
    positive = schemathesis.GenerationMode.POSITIVE
    return [(role, *case) for role in ("admin", "user") for case in cases()] + [
        ("anonymous", positive, method, path) for method, path, _ in operations()
    ]


@pytest.mark.parametrize(("mode", "method", "path"), cases(), ids=lambda x: str(x))
def test_route_conforms_to_its_schema(
    fuzzed: LiveServer,
    schema: schemathesis.BaseSchema,
    method: str,
    path: str,
    mode: schemathesis.GenerationMode,
) -> None:
    fuzz(schema[path][method], mode, fuzzed.base)


@pytest.mark.parametrize(("role", "mode", "method", "path"), guarded_cases(), ids=lambda x: str(x))
def test_guarded_route_conforms_to_its_schema(
    guarded: Guarded,
    guarded_schema: schemathesis.BaseSchema,
    role: str,
    method: str,
    path: str,
    mode: schemathesis.GenerationMode,
) -> None:
    examples = ANONYMOUS_EXAMPLES if role == "anonymous" else EXAMPLES
    fuzz(guarded_schema[path][method], mode, guarded.live.base, guarded.headers[role], examples)


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=lambda m: m.value)
@pytest.mark.parametrize("path", STREAMS)
def test_stream_route_answers_with_a_documented_status_and_no_server_error(
    fuzzed: LiveServer, schema: schemathesis.BaseSchema, path: str, mode: schemathesis.GenerationMode
) -> None:
    """The stream routes, whose answers never end: each generated request's status and content
    type are checked from its headers, then the stream is closed."""
    operation = schema[path]["GET"]
    documented = {str(code) for code in operation.definition.raw["responses"]}
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
        request = case.as_transport_kwargs(base_url=fuzzed.base)
        with session.request(**request, stream=True, timeout=10) as response:
            assert response.status_code < 500, f"{response.status_code} for {request}"
            assert str(response.status_code) in documented, f"{response.status_code} for {request}"
            if response.status_code == 200:
                assert response.headers["content-type"].startswith("text/event-stream")
            elif response.status_code != 204:
                assert response.headers["content-type"] == "application/json"

    try:
        run()
    finally:
        session.close()


def test_the_document_names_each_task_with_its_arguments(schema: schemathesis.BaseSchema) -> None:
    """Submissions generated from the document name a registered task with its arguments."""
    components = schema.raw_schema["components"]["schemas"]
    variants = [ref["$ref"].rsplit("/", 1)[-1] for ref in components["SubmitRequest"]["oneOf"]]
    assert {"SubmitRequest.add", "SubmitRequest.other.echo"} <= set(variants)
    add = components["SubmitRequest.add"]
    assert add["properties"]["task"]["const"] == "add"
    assert add["properties"]["args"]["required"] == ["a"]
    assert "args" in add["required"]
    item = components["BatchRequest.item"]["properties"]["items"]["items"]
    assert item["required"] == ["text"]


def fuzz(
    operation: Any,
    mode: schemathesis.GenerationMode,
    base_url: str,
    headers: dict[str, str] | None = None,
    examples: int = EXAMPLES,
) -> None:
    """Call ``operation`` with ``examples`` generated cases (and ``headers``); check each answer."""
    checks = [*CHECKS, negative_data_rejection] if mode is schemathesis.GenerationMode.NEGATIVE else CHECKS
    session = requests.Session()
    session.trust_env = False

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case[Any]) -> None:
        case.call_and_validate(base_url=base_url, session=session, headers=headers, checks=checks)

    try:
        run()
    finally:
        session.close()


def test_there_is_something_to_fuzz() -> None:
    fuzzed_routes = {path for _, path, _ in operations()}
    assert {"/api/jobs", "/api/jobs/{job_id}", "/api/jobs/{job_id}/events", "/api/tasks"} <= fuzzed_routes
    assert "/api/stream-tokens" in fuzzed_routes
    assert not fuzzed_routes & set(STREAMS)


def test_the_guarded_server_knows_each_principal(guarded: Guarded) -> None:
    """The fuzzing above is worth something only if the keys work and the roles differ."""
    with httpx.Client(base_url=guarded.live.api, trust_env=False) as http:
        answers = {role: http.get("/jobs", headers=headers) for role, headers in guarded.headers.items()}
        workers = http.get("/workers", headers=guarded.headers["user"])
        for_ada = http.get("/jobs", params={"owner": "ada"}, headers=guarded.headers["admin"])
    assert answers["anonymous"].status_code == 401
    assert {job["owner"] for job in answers["user"].json()["jobs"]} == {"ada"}
    assert {job["owner"] for job in for_ada.json()["jobs"]} == {"ada"}  # an admin sees others' jobs
    assert workers.status_code == 403
