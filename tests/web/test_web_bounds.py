"""Bounds over HTTP on both stores: a job in a list carries a large result as its size only (the job's
own route has it whole), labels over the limits are refused with 422, queue names too."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from postgres_support import fresh_postgres_url
from web_support import SOON, LiveServer, assert_error, frames, server_settings, start_server
from websockets.sync.client import connect

pytestmark = pytest.mark.timeout(30)

#: The largest result a list shows in these tests (bytes of JSON).
LISTED = 200


@pytest.fixture(params=["sqlite", "postgres"])
def bounded(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LiveServer]:
    urls: Iterator[str] = iter(())
    if request.param == "postgres":
        urls = fresh_postgres_url()
        url = next(urls)
    else:
        url = f"sqlite:///{tmp_path / 'bounds.db'}"
    live = start_server(server_settings(url, max_listed_result=LISTED, max_labels=2, max_label_value=8))
    try:
        yield live
    finally:
        live.stop()
        for _ in urls:  # drops the schema
            pass


def finished(live: LiveServer, text: str, **options: Any) -> dict[str, Any]:
    job = live.submit("echo", {"text": text}, **options)
    return live.wait_status(job["id"], "succeeded")


def test_lists_carry_only_the_size_of_a_large_result_and_the_job_has_it_whole(bounded: LiveServer) -> None:
    client = bounded.client()
    small = finished(bounded, "s" * 10, queue="big")
    large = finished(bounded, "x" * 1000, queue="big")
    whole = {"value": 0, "text": "x" * 1000}
    size = len(json.dumps(whole, separators=(",", ":")))
    truncated = {"truncated": True, "size": size}

    assert client.get(f"/jobs/{large['id']}").json()["result"] == whole
    listed = {job["id"]: job for job in client.get("/jobs", params={"limit": 50}).json()["jobs"]}
    assert listed[large["id"]]["result"] == truncated
    assert listed[small["id"]]["result"] == {"value": 0, "text": "s" * 10}
    unlisted = {k: v for k, v in listed[large["id"]].items() if k not in ("result", "updated_at")}
    assert unlisted == {k: v for k, v in large.items() if k not in ("result", "updated_at")}

    batch = client.post("/batches", json={"task": "echo", "items": [{"text": "y" * 1000}]}).json()
    item = client.get(f"/batches/{batch['id']}/items").json()["jobs"][0]
    bounded.wait_status(item["id"], "succeeded")
    assert client.get(f"/batches/{batch['id']}/items").json()["jobs"][0]["result"]["truncated"] is True

    with client.stream("GET", "/stream", params={"queue": "big"}) as response:
        snapshot = next(frame for frame in frames(response.iter_lines()) if frame.event == "snapshot")
    shown = {job["id"]: job["result"] for job in snapshot.json()["jobs"]}
    assert shown == {large["id"]: truncated, small["id"]: {"value": 0, "text": "s" * 10}}

    with connect(bounded.ws_url, proxy=None, open_timeout=SOON) as ws:
        ws.send(json.dumps({"id": 1, "op": "subscribe", "queue": "big"}))
        pushed = {}
        while "snapshot" not in pushed:
            pushed = json.loads(ws.recv(timeout=SOON))
    assert {job["id"]: job["result"] for job in pushed["snapshot"]["jobs"]} == shown


def test_labels_over_the_limits_are_refused_with_422(bounded: LiveServer) -> None:
    client = bounded.client()
    many = client.post("/jobs", json={"task": "echo", "labels": {"a": "1", "b": "2", "c": "3"}})
    assert "max_labels" in assert_error(many, 422, "invalid_arguments")["message"]
    long = client.post("/jobs", json={"task": "echo", "labels": {"a": "v" * 9}})
    assert "max_label_value" in assert_error(long, 422, "invalid_arguments")["message"]
    key = client.post("/jobs", json={"task": "echo", "labels": {"k" * 65: "v"}})
    assert "max_label_key" in assert_error(key, 422, "invalid_arguments")["message"]
    batch = client.post("/batches", json={"task": "echo", "items": [{}], "labels": {"a": "v" * 9}})
    assert "max_label_value" in assert_error(batch, 422, "invalid_arguments")["message"]
    assert client.get("/jobs").json()["jobs"] == []
    assert client.post("/jobs", json={"task": "echo", "labels": {"a": "1", "b": "2"}}).status_code == 201


def test_a_long_queue_name_is_refused_on_every_route(bounded: LiveServer) -> None:
    client = bounded.client()
    long = "q" * 101
    for method, path in (("POST", f"/queues/{long}/pause"), ("POST", f"/queues/{long}/resume")):
        assert_error(client.request(method, path), 422)
    assert_error(client.post("/jobs", json={"task": "echo", "queue": long}), 422)
    assert all(queue["name"] != long for queue in client.get("/queues").json()["queues"])
