"""Bad input is a client's error (422 ``invalid_request``, underway's shape) on both stores, over
HTTP and the WebSocket, and nothing is stored: numbers JSON has not (``NaN``, ``1e400``),
characters no stored text may hold (NUL, lone surrogates) in bodies, paths and queries, JSON
nested too deep to read, and event numbers beyond 64 bits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from postgres_support import fresh_postgres_url
from test_web_ws import Socket
from web_support import LiveServer, assert_error, server_settings, start_server

pytestmark = pytest.mark.timeout(60)

JSON = {"content-type": "application/json"}


@pytest.fixture(params=["sqlite", "postgres"])
def live(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LiveServer]:
    urls: Iterator[str] = fresh_postgres_url() if request.param == "postgres" else iter(())
    url = next(urls) if request.param == "postgres" else f"sqlite:///{tmp_path / 'inputs.db'}"
    server = start_server(server_settings(url))
    try:
        yield server
    finally:
        server.stop()
        for _ in urls:  # drops the schema
            pass


def refused(response: Any, kind: str = "json_invalid") -> dict[str, Any]:
    error = assert_error(response, 422, "invalid_request")
    assert error["details"][0]["type"] == kind, error
    return error


def job_count(live: LiveServer) -> int:
    return len(live.client().get("/jobs", params={"limit": 500}).json()["jobs"])


@pytest.mark.parametrize(
    "body",
    [
        b'{"task": "echo", "args": {"value": NaN}}',
        b'{"task": "echo", "args": {"value": Infinity}}',
        b'{"task": "echo", "args": {"value": 1e400}}',
        b'{"task": "echo", "args": {"value": -1e400}}',
        b'{"task": "echo", "args": {"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
    ],
    ids=["nan", "infinity", "overflow", "negative-overflow", "deep"],
)
def test_numbers_json_has_not_and_deep_nesting_are_refused(live: LiveServer, body: bytes) -> None:
    before = job_count(live)
    refused(live.client().post("/jobs", content=body, headers=JSON))
    assert job_count(live) == before


@pytest.mark.parametrize(
    "fields",
    [
        {"args": {"text": "a\x00b"}},
        {"args": {"text": "\ud800"}},
        {"args": {"nested": ["\x00"]}, "task": "add"},
        {"labels": {"team": "a\x00"}},
        {"labels": {"a\x00": "team"}},
        {"queue": "q\x00"},
        {"idempotency_key": "k\x00"},
    ],
    ids=["arg", "surrogate", "nested", "label-value", "label-key", "queue", "idempotency-key"],
)
def test_characters_no_store_keeps_are_refused_in_bodies(live: LiveServer, fields: dict[str, Any]) -> None:
    body = {"task": "echo", "args": {}, **fields}
    text = _dumps_keeping_surrogates(body)
    before = job_count(live)
    error = refused(live.client().post("/jobs", content=text, headers=JSON), "unstorable_character")
    assert error["details"][0]["character"] in ("U+0000", "U+D800")
    assert job_count(live) == before


def test_answers_and_batches_are_read_the_same_way(live: LiveServer) -> None:
    client = live.client()
    job = live.submit("ask")
    live.wait_status(job["id"], "waiting")
    for body in (b'{"value": NaN}', b'{"value": 1e400}', b'{"value": "yes\\u0000"}'):
        assert client.post(f"/jobs/{job['id']}/answer", content=body, headers=JSON).status_code == 422
    batch = b'{"task": "item", "items": [{"text": "fine"}, {"text": "\\u0000"}]}'
    refused(client.post("/batches", content=batch, headers=JSON), "unstorable_character")
    assert client.get("/batches").json()["batches"] == []
    assert client.post(f"/jobs/{job['id']}/answer", json={"value": "yes"}).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "params"),
    [
        ("GET", "/jobs/a%00b", {}),
        ("GET", "/jobs", {"queue": "a\x00"}),
        ("GET", "/jobs", {"q": "\x00"}),
        ("GET", "/jobs", {"label": "team:\x00"}),
        ("POST", "/queues/a%00/pause", {}),
        ("GET", "/stream", {"q": "\x00"}),
    ],
)
def test_nul_in_paths_and_queries_is_refused(
    live: LiveServer, method: str, path: str, params: dict[str, str]
) -> None:
    refused(live.client().request(method, path, params=params), "unstorable_character")
    assert all(queue["name"] != "a\x00" for queue in live.client().get("/queues").json()["queues"])


def test_event_numbers_beyond_64_bits_are_refused(live: LiveServer) -> None:
    job = live.submit("echo")
    client = live.client()
    assert_error(client.get(f"/jobs/{job['id']}/events", params={"after": 2**63}), 422, "invalid_request")
    assert client.get(f"/jobs/{job['id']}/events", params={"after": 2**63 - 1}).status_code == 200
    with Socket(live) as ws:
        reply = ws.request("subscribe", job=job["id"], after=2**63)
        assert (reply["ok"], reply["error"]["code"]) == (False, "invalid_arguments")
        assert ws.request("ping")["pong"] is True


def test_a_websocket_message_json_cannot_hold_gets_an_error_reply_and_the_socket_stays(
    live: LiveServer,
) -> None:
    with Socket(live) as ws:
        for raw in (
            '{"id": 1, "op": "ping", "x": NaN}',
            '{"id": 2, "op": "ping", "x": 1e400}',
            '{"id": 3, "op": "ping", "x": ' + "[" * 10_000 + "]" * 10_000 + "}",
            '{"id": 4, "op": "subscribe", "q": "\\u0000"}',
        ):
            ws.send(raw)
            reply = ws.receive()
            assert (reply["ok"], reply["error"]["code"]) == (False, "bad_message"), reply
        assert ws.request("ping")["pong"] is True


def _dumps_keeping_surrogates(value: Any) -> bytes:
    """JSON text with ``\\uXXXX`` escapes, lone surrogates included (as a client may send)."""
    import json

    return json.dumps(value, ensure_ascii=True).encode()
