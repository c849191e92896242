"""Server-Sent Events: /jobs/{id}/stream (resumable) and /stream (multiplexed), on a real server."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from web_support import (
    SOON,
    Frame,
    LiveServer,
    StartServer,
    assert_error,
    events_only,
    frames,
    live_streams,
    raw_socket,
    wait_until,
)
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

pytestmark = pytest.mark.timeout(30)


@contextlib.contextmanager
def sse(client: httpx.Client, path: str, **kwargs: Any) -> Iterator[tuple[httpx.Response, Iterator[Frame]]]:
    with client.stream("GET", path, **kwargs) as response:
        assert response.status_code == 200, response.read()
        yield response, frames(response.iter_lines())


def until(stream: Iterator[Frame], predicate: Callable[[Frame], bool], what: str = "") -> list[Frame]:
    """Read frames up to and including the first that matches; fail if the stream ends first."""
    seen: list[Frame] = []
    for frame in stream:
        seen.append(frame)
        if predicate(frame):
            return seen
    pytest.fail(f"the stream ended before {what or predicate}: {[f.fields for f in seen]}")


def is_status(status: str) -> Callable[[Frame], bool]:
    return lambda f: f.event == "status" and f.json()["data"]["status"] == status


def finished_job(live: LiveServer, gate: str, steps: int = 2) -> dict[str, Any]:
    job = live.submit("hold", {"gate": gate, "steps": steps})
    for i in range(1, steps + 1):
        live.gates.open(f"{gate}/{i}")
    live.gates.open(gate)
    return live.wait_status(job["id"], "succeeded")


# -- framing ------------------------------------------------------------------------------------


def test_framing_and_headers(live: LiveServer) -> None:
    job = finished_job(live, "fr")
    stored = live.events(job["id"])
    client = live.client(headers={"Accept-Encoding": "gzip, deflate, br"})
    with client.stream("GET", f"/jobs/{job['id']}/stream") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-accel-buffering"] == "no"
        assert response.headers.get("content-encoding", "identity") == "identity"
        raw = b"".join(response.iter_raw())
    text = raw.decode()
    lines = list(frames(iter(text.replace("\r\n", "\n").split("\n"))))
    # ``retry:`` comes once, first.
    first = lines[0]
    assert first.get("retry") == str(int(live.settings.sse_retry * 1000))
    assert first.event is None
    assert first.id is None
    assert sum(1 for f in lines if f.get("retry") is not None) == 1
    events = [f for f in lines if f.event not in (None, "end")]
    assert len(events) == len(stored)
    for frame, event in zip(events, stored, strict=True):
        assert [name for name, _ in frame.fields] == ["id", "event", "data"]
        assert frame.id == str(event["seq"])
        assert frame.event == event["type"]
        assert frame.json() == event
    end = lines[-1]
    assert end.event == "end"
    assert end.id is None
    assert end.json() == {"job_id": job["id"], "status": "succeeded"}


def test_unknown_job_is_404(live: LiveServer) -> None:
    assert_error(live.client().get("/jobs/nope/stream"), 404, "job_not_found")


# -- live, resume, end --------------------------------------------------------------------------


def test_progress_of_a_running_job_arrives_live(live: LiveServer) -> None:
    job = live.submit("hold", {"gate": "p", "steps": 3})
    live.wait_running(job["id"])
    with sse(live.client(), f"/jobs/{job['id']}/stream") as (_, stream):
        events = events_only(stream)
        until(events, is_status("running"), "the running status")
        for i in range(1, 4):
            opened = time.monotonic()
            live.gates.open(f"p/{i}")
            seen = until(
                events,
                lambda f, i=i: f.event == "progress" and f.json()["data"]["current"] == i,  # type: ignore[misc]
                f"progress {i}",
            )
            assert time.monotonic() - opened < SOON
            assert any(f.event == "log" and f.json()["data"]["message"] == f"step {i}" for f in seen)
            progress = seen[-1].json()["data"]
            assert progress["total"] == 3
            assert progress["percent"] == pytest.approx(100 * i / 3, abs=0.1)
        live.gates.open("p")
        rest = list(events)
    assert rest[-2].event == "status"
    assert rest[-2].json()["data"]["status"] == "succeeded"
    assert rest[-1].event == "end"


def test_cut_and_resume_with_last_event_id(live: LiveServer) -> None:
    job = live.submit("hold", {"gate": "r", "steps": 4})
    live.wait_running(job["id"])
    live.gates.open("r/1")
    received: list[Frame] = []
    with sse(live.client(), f"/jobs/{job['id']}/stream") as (_, stream):
        received += until(events_only(stream), lambda f: f.event == "progress", "the first progress")
    # The connection is gone; the job goes on meanwhile.
    last = int(received[-1].id or 0)
    live.gates.open("r/2")
    live.gates.open("r/3")
    wait_until(lambda: any(e["data"].get("message") == "step 3" for e in live.events(job["id"])))
    resumed: list[Frame] = []
    with sse(live.client(), f"/jobs/{job['id']}/stream", headers={"Last-Event-ID": str(last)}) as (_, stream):
        events = events_only(stream)
        resumed += until(events, lambda f: f.event == "log" and f.json()["data"]["message"] == "step 3")
        live.gates.open("r/4")  # this one arrives live
        live.gates.open("r")
        resumed += list(events)
    assert resumed[-1].event == "end"
    seqs = [int(f.id) for f in resumed if f.id is not None]
    assert seqs[0] == last + 1
    assert seqs == sorted(set(seqs)), "each event once, in order"
    stored = live.events(job["id"], after=last)
    # Every event is there; only progress (state, not a log) may be coalesced when live.
    must = [e["seq"] for e in stored if e["type"] != "progress"]
    assert set(must) <= set(seqs)
    assert seqs[-1] == stored[-1]["seq"]
    by_seq = {e["seq"]: e for e in stored}
    for frame in resumed[:-1]:
        assert frame.json() == by_seq[int(frame.id or 0)]
    messages = [f.json()["data"]["message"] for f in resumed if f.event == "log"]
    assert messages == ["step 2", "step 3", "step 4"]


def test_after_query_equals_last_event_id(live: LiveServer) -> None:
    job = finished_job(live, "a", steps=3)
    client = live.client()

    def read(**kwargs: Any) -> list[tuple[str | None, str | None, str]]:
        with sse(client, f"/jobs/{job['id']}/stream", **kwargs) as (_, stream):
            return [(f.id, f.event, f.data) for f in events_only(stream)]

    by_header = read(headers={"Last-Event-ID": "3"})
    by_query = read(params={"after": 3})
    assert by_header == by_query
    assert by_header[0][0] == "4"
    # Last-Event-ID wins over ?after= (it is what a browser sends when it reconnects).
    assert read(params={"after": 1}, headers={"Last-Event-ID": "3"}) == by_header


def test_end_then_reconnect_gets_204(live: LiveServer) -> None:
    job = live.submit("hold", {"gate": "e"})
    live.wait_running(job["id"])
    client = live.client()
    with sse(client, f"/jobs/{job['id']}/stream") as (_, stream):
        events = events_only(stream)
        until(events, is_status("running"))
        live.gates.open("e")
        rest = list(events)  # the server closes the stream after ``end``
    assert [f.event for f in rest][-2:] == ["status", "end"]
    last = rest[-2].id
    assert last == str(live.job(job["id"])["last_seq"])
    for kwargs in (
        {"headers": {"Last-Event-ID": last}},
        {"params": {"after": last}},
        {"params": {"after": 99}},
    ):
        response = client.get(f"/jobs/{job['id']}/stream", **kwargs)
        assert response.status_code == 204, kwargs
        assert response.content == b""
    # Before the end there is still something to replay.
    with sse(client, f"/jobs/{job['id']}/stream", params={"after": int(last or 0) - 1}) as (_, stream):
        assert [f.event for f in events_only(stream)] == ["status", "end"]


def test_stream_of_a_retried_job_goes_on_to_its_last_attempt(live: LiveServer) -> None:
    job = live.submit("boom")
    live.wait_status(job["id"], "failed")
    assert live.client().post(f"/jobs/{job['id']}/retry").status_code == 200
    done = wait_until(lambda: (j := live.job(job["id"]))["attempt"] == 2 and j["status"] == "failed" and j)
    with sse(live.client(), f"/jobs/{job['id']}/stream") as (_, stream):
        seqs = [f.id for f in events_only(stream)]
    assert seqs == [*map(str, range(1, done["last_seq"] + 1)), None]


# -- slow clients, heartbeats, shutdown ---------------------------------------------------------


def test_frozen_client_does_not_delay_others(start: StartServer) -> None:
    live = start(sse_send_timeout=0.5)
    job = live.submit("flood", {"gate": "f", "count": 4000, "size": 2000})
    live.wait_running(job["id"])
    request = (
        f"GET /api/jobs/{job['id']}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    frozen = raw_socket(live.port, request, rcvbuf=4096)
    try:
        with sse(live.client(timeout=30), f"/jobs/{job['id']}/stream") as (_, stream):
            events = events_only(stream)
            until(events, is_status("running"))
            wait_until(lambda: live_streams(live, "sse") == 2, what="both streams to be open")
            opened = time.monotonic()
            live.gates.open("f")
            rest = list(events)
            took = time.monotonic() - opened
        assert rest[-1].event == "end"
        assert sum(1 for f in rest if f.event == "log") == 4000
        assert took < 15, f"the reading client took {took:.1f} s"
        # The frozen one is dropped after sse_send_timeout, not kept forever.
        wait_until(lambda: live_streams(live, "sse") == 0, 10, what="the frozen stream to be dropped")
        frozen.settimeout(5)
        body = bytearray()
        with contextlib.suppress(OSError):
            while chunk := frozen.recv(1 << 20):
                body += chunk
        assert b"event: end" not in body, "the frozen client got everything: it was not frozen"
    finally:
        frozen.close()


def test_comment_heartbeat(start: StartServer) -> None:
    live = start(sse_ping_interval=0.2)
    job = live.submit("hold", {"gate": "h"})
    live.wait_running(job["id"])
    with sse(live.client(), f"/jobs/{job['id']}/stream") as (_, stream):
        started = time.monotonic()
        pings = until(stream, lambda f: any(c.startswith("ping") for c in f.comments), "a heartbeat")
        assert time.monotonic() - started < 3
        assert not pings[-1].fields  # a comment only: a browser dispatches no event for it


def close_code(ws: ClientConnection) -> int | None:
    """Read until the server closes the WebSocket; its close code."""
    try:
        while True:
            ws.recv(timeout=SOON)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None


def test_clean_shutdown_with_streams_open(start: StartServer) -> None:
    """``should_exit`` with streams, a long poll and a WebSocket open: the server stops at once,
    and each stream ends cleanly (a complete body), not cut off after a timeout."""
    live = start()
    job = live.submit("hold", {"gate": "s"})
    live.wait_running(job["id"])
    outcomes: list[str] = []

    def watch(path: str) -> None:
        try:
            with (
                httpx.Client(base_url=live.api, timeout=30, trust_env=False) as client,
                client.stream("GET", path) as response,
            ):
                for _ in response.iter_lines():
                    pass
            outcomes.append("clean")
        except httpx.HTTPError as exc:
            outcomes.append(repr(exc))

    def long_poll() -> None:
        with httpx.Client(base_url=live.api, timeout=70, trust_env=False) as client:
            response = client.get(f"/jobs/{job['id']}/events", params={"after": 99, "wait": 60})
        outcomes.append("answered" if response.status_code == 200 else response.text)

    paths = [f"/jobs/{job['id']}/stream"] * 4 + ["/stream"]
    threads = [threading.Thread(target=watch, args=(path,)) for path in paths]
    threads.append(threading.Thread(target=long_poll))
    for thread in threads:
        thread.start()
    with connect(live.ws_url, proxy=None, open_timeout=SOON) as ws:
        ws.send(json.dumps({"id": 1, "op": "subscribe", "job": job["id"]}))
        assert json.loads(ws.recv(timeout=SOON))["ok"] is True
        wait_until(lambda: live_streams(live, "sse") == 5, what="five open streams")
        wait_until(lambda: live_streams(live, "long_poll") == 1, what="the long poll")
        stopping = time.monotonic()
        live.server.should_exit = True
        live.thread.join(10)
        took = time.monotonic() - stopping
        assert not live.thread.is_alive()
        assert took < 3, f"the server took {took:.1f} s to stop"
        code = close_code(ws)
    assert code == 1012  # service restart: come back later
    for thread in threads:
        thread.join(5)
    assert sorted(outcomes) == ["answered"] + ["clean"] * 5


def test_streams_end_when_the_api_stops_them(live: LiveServer) -> None:
    """``API.stop_streams()`` (what ``underway.web.Server`` calls as it shuts down) ends open
    streams cleanly, answers long polls at once and refuses new streams with 503."""
    job = live.submit("hold", {"gate": "st"})
    live.wait_running(job["id"])
    client = live.client()
    with sse(client, f"/jobs/{job['id']}/stream") as (_, stream):
        until(events_only(stream), is_status("running"))
        live.on_server_loop(live.web.state.underway.stop_streams)
        assert [f.event for f in events_only(stream)] == []  # ended, without an error
    started = time.monotonic()
    body = client.get(f"/jobs/{job['id']}/events", params={"after": 99, "wait": 30}).json()
    assert time.monotonic() - started < 2
    assert body["events"] == []
    refused = client.get(f"/jobs/{job['id']}/stream")
    assert_error(refused, 503, "shutting_down")
    assert refused.headers["retry-after"] == "1"
    assert_error(client.get("/stream"), 503, "shutting_down")
    wait_until(lambda: live_streams(live, "sse") == 0, what="the streams to be counted out")


# -- multiplexed --------------------------------------------------------------------------------


def test_multiplexed_jobs_snapshot_then_only_their_events(live: LiveServer) -> None:
    a = live.submit("hold", {"gate": "ma", "steps": 1})
    b = live.submit("hold", {"gate": "mb", "steps": 1})
    c = live.submit("hold", {"gate": "mc", "steps": 1})
    for job in (a, b, c):
        live.wait_running(job["id"])
    with sse(live.client(), "/stream", params={"jobs": f"{a['id']},{b['id']}"}) as (_, stream):
        events = events_only(stream)
        snapshot = next(events)
        assert snapshot.event == "snapshot"
        assert snapshot.id is None
        listed = {job["id"]: job for job in snapshot.json()["jobs"]}
        assert set(listed) == {a["id"], b["id"]}
        assert all(job["status"] == "running" for job in listed.values())
        for gate in ("mc/1", "mc"):
            live.gates.open(gate)
        live.wait_status(c["id"], "succeeded")
        for gate in ("ma/1", "ma", "mb/1", "mb"):
            live.gates.open(gate)
        ended: set[str] = set()
        seen: list[dict[str, Any]] = []
        for frame in events:
            assert frame.event in ("status", "progress", "log")
            event = frame.json()
            seen.append(event)
            if event["type"] == "status" and event["data"]["status"] == "succeeded":
                ended.add(event["job_id"])
            if ended == {a["id"], b["id"]}:
                break
    assert {e["job_id"] for e in seen} == {a["id"], b["id"]}
    for job_id in (a["id"], b["id"]):
        logs = [e["data"]["message"] for e in seen if e["job_id"] == job_id and e["type"] == "log"]
        assert logs == ["step 1"]


def test_multiplexed_queue(live: LiveServer) -> None:
    mine = live.submit("hold", {"gate": "q1", "steps": 1}, queue="watched")
    other = live.submit("hold", {"gate": "q2", "steps": 1})
    live.wait_running(mine["id"])
    live.wait_running(other["id"])
    with sse(live.client(), "/stream", params={"queue": "watched"}) as (_, stream):
        events = events_only(stream)
        snapshot = next(events)
        assert snapshot.event == "snapshot"
        assert [job["id"] for job in snapshot.json()["jobs"]] == [mine["id"]]
        for gate in ("q2/1", "q2"):
            live.gates.open(gate)
        live.wait_status(other["id"], "succeeded")
        later = live.submit("echo", {"value": 1}, queue="watched")
        for gate in ("q1/1", "q1"):
            live.gates.open(gate)
        seen: list[dict[str, Any]] = []
        finished: set[str] = set()
        for frame in events:
            event = frame.json()
            seen.append(event)
            if event["type"] == "status" and event["data"]["status"] == "succeeded":
                finished.add(event["job_id"])
            if finished == {mine["id"], later["id"]}:
                break
    assert {e["job_id"] for e in seen} == {mine["id"], later["id"]}
    later_statuses = [
        e["data"]["status"] for e in seen if e["job_id"] == later["id"] and e["type"] == "status"
    ]
    assert later_statuses == ["queued", "running", "succeeded"]


def test_multiplexed_reconnect_starts_with_a_fresh_snapshot(live: LiveServer) -> None:
    job = live.submit("hold", {"gate": "fs"})
    live.wait_running(job["id"])
    client = live.client()
    with sse(client, "/stream", params={"jobs": job["id"]}) as (_, stream):
        first = next(events_only(stream)).json()["jobs"][0]
    assert first["status"] == "running"
    live.gates.open("fs")
    live.wait_status(job["id"], "succeeded")
    with sse(client, "/stream", params={"jobs": job["id"]}, headers={"Last-Event-ID": "1"}) as (_, stream):
        again = next(events_only(stream))
    assert again.event == "snapshot"
    assert again.json()["jobs"][0]["status"] == "succeeded"


def test_resume_point_beyond_the_last_event_gets_only_later_events_and_the_end(live: LiveServer) -> None:
    """A Last-Event-ID past the job's last seq gets only the events numbered above it, waiting
    for them, and the end (with the job's status) even when the job ends below it."""
    job = live.submit("hold", {"gate": "bz", "steps": 3})
    live.wait_running(job["id"])
    last = live.job(job["id"])["last_seq"]
    resume = last + 3  # steps 1 and 2 log and report progress: last+1 … last+4
    headers = {"Last-Event-ID": str(resume)}
    with sse(live.client(), f"/jobs/{job['id']}/stream", headers=headers) as (_, stream):
        events = events_only(stream)
        wait_until(lambda: live_streams(live, "sse") == 1, what="the stream to be open")
        for gate in ("bz/1", "bz/2", "bz/3", "bz"):
            live.gates.open(gate)
        rest = list(events)
    numbered = [int(f.id) for f in rest if f.event != "end"]
    assert numbered == list(range(resume + 1, numbered[-1] + 1)), numbered
    assert [f.event for f in rest][-2:] == ["status", "end"]
    assert rest[-1].json()["status"] == "succeeded"
    far = live.submit("hold", {"gate": "far"})
    live.wait_running(far["id"])
    with sse(live.client(), f"/jobs/{far['id']}/stream", headers={"Last-Event-ID": "999"}) as (_, stream):
        events = events_only(stream)
        wait_until(lambda: live_streams(live, "sse") == 1, what="the second stream to be open")
        live.gates.open("far")
        rest = list(events)
    assert [f.event for f in rest] == ["end"]
    assert rest[0].json()["status"] == "succeeded"
    assert_error(live.client().get(f"/jobs/{far['id']}/stream", params={"after": 2**63}), 422)
    too_far = live.client().get(f"/jobs/{far['id']}/stream", headers={"Last-Event-ID": str(2**63)})
    assert_error(too_far, 422, "invalid_request")
