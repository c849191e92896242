"""Long polling: GET /jobs/{id}/events?after=&wait=&types= through a real server."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from web_support import LiveServer, assert_error, events_only, frames, live_streams, wait_until

pytestmark = pytest.mark.timeout(30)


def poll(live: LiveServer, job_id: str, **params: Any) -> dict[str, Any]:
    response = live.client(timeout=70).get(f"/jobs/{job_id}/events", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"events", "next_after", "status"}
    return body


def test_returns_at_once_when_events_exist(live: LiveServer) -> None:
    job = live.submit("echo", {"value": 1})
    live.wait_status(job["id"], "succeeded")
    started = time.monotonic()
    body = poll(live, job["id"], after=0, wait=20)
    assert time.monotonic() - started < 2
    seqs = [e["seq"] for e in body["events"]]
    assert seqs == list(range(1, len(seqs) + 1))
    assert body["next_after"] == seqs[-1]
    assert body["status"] == "succeeded"
    later = poll(live, job["id"], after=1)
    assert [e["seq"] for e in later["events"]] == seqs[1:]


def test_wait_returns_on_the_first_new_event(live: LiveServer) -> None:
    job = live.submit("hold", {"gate": "lp", "steps": 1})
    live.wait_running(job["id"])
    after = live.job(job["id"])["last_seq"]
    result: dict[str, Any] = {}

    def long_poll() -> None:
        started = time.monotonic()
        result["body"] = poll(live, job["id"], after=after, wait=20)
        result["elapsed"] = time.monotonic() - started
        result["returned_at"] = time.monotonic()

    poller = threading.Thread(target=long_poll)
    poller.start()
    # It holds while nothing happens (it is waiting, not answering an empty list).
    wait_until(lambda: live_streams(live, "long_poll") == 1, what="the long poll to be open")
    assert poller.is_alive()
    opened = time.monotonic()
    live.gates.open("lp/1")
    poller.join(15)
    assert not poller.is_alive()
    assert result["returned_at"] - opened < 2.0, result
    assert result["elapsed"] < 10
    events = result["body"]["events"]
    assert events, result
    assert events[0]["seq"] == after + 1
    assert events[0]["type"] == "log"
    assert result["body"]["next_after"] == events[-1]["seq"]
    assert live_streams(live, "long_poll") == 0


def test_wait_times_out_empty(live: LiveServer) -> None:
    job = live.submit("hold", {"gate": "never"})
    live.wait_running(job["id"])
    after = live.job(job["id"])["last_seq"]
    started = time.monotonic()
    body = poll(live, job["id"], after=after, wait=0.6)
    elapsed = time.monotonic() - started
    assert body == {"events": [], "next_after": after, "status": "running"}
    assert 0.5 <= elapsed < 3.0, elapsed


def test_finished_job_with_nothing_new_answers_at_once(live: LiveServer) -> None:
    job = live.submit("echo")
    done = live.wait_status(job["id"], "succeeded")
    started = time.monotonic()
    body = poll(live, job["id"], after=done["last_seq"], wait=30)
    assert time.monotonic() - started < 2
    assert body == {"events": [], "next_after": done["last_seq"], "status": "succeeded"}


def test_types_filter(live: LiveServer) -> None:
    job = live.submit("hold", {"gate": "t", "steps": 2})
    live.gates.open("t/1")
    live.gates.open("t/2")
    live.gates.open("t")
    live.wait_status(job["id"], "succeeded")
    logs = poll(live, job["id"], types="log")["events"]
    assert [e["data"]["message"] for e in logs] == ["step 1", "step 2"]
    both = poll(live, job["id"], types="log,status")["events"]
    assert {e["type"] for e in both} == {"log", "status"}
    assert [e["seq"] for e in both] == sorted(e["seq"] for e in both)
    everything = poll(live, job["id"])["events"]
    assert len(everything) > len(both)


def test_types_filter_waits_for_a_matching_event(live: LiveServer) -> None:
    job = live.submit("hold", {"gate": "tw", "steps": 1})
    live.wait_running(job["id"])
    after = live.job(job["id"])["last_seq"]
    result: dict[str, Any] = {}

    def long_poll() -> None:
        result["body"] = poll(live, job["id"], after=after, wait=20, types="status")

    poller = threading.Thread(target=long_poll)
    poller.start()
    wait_until(lambda: live_streams(live, "long_poll") == 1, what="the long poll to be open")
    live.gates.open("tw/1")  # a log and a progress: not what it waits for
    wait_until(lambda: len(live.events(job["id"], after)) >= 2, what="the step's events")
    assert poller.is_alive()
    live.gates.open("tw")
    poller.join(15)
    assert [e["data"]["status"] for e in result["body"]["events"]] == ["succeeded"]


def test_unknown_type_is_422(shared: LiveServer) -> None:
    job = shared.submit("echo")
    error = assert_error(
        shared.client().get(f"/jobs/{job['id']}/events", params={"types": "log,nope"}),
        422,
        "invalid_arguments",
    )
    assert error["details"] == {"types": ["nope"]}


@pytest.mark.parametrize("params", [{"after": -1}, {"wait": 61}, {"wait": -1}, {"limit": 0}, {"after": "x"}])
def test_bad_query_is_422(shared: LiveServer, params: dict[str, Any]) -> None:
    job = shared.submit("echo")
    assert_error(shared.client().get(f"/jobs/{job['id']}/events", params=params), 422, "invalid_request")


def test_unknown_job_is_404(shared: LiveServer) -> None:
    assert_error(shared.client().get("/jobs/nope/events", params={"wait": 5}), 404, "job_not_found")


def test_after_means_the_same_as_for_sse(live: LiveServer) -> None:
    job = live.submit("hold", {"gate": "s", "steps": 3})
    for gate in ("s/1", "s/2", "s/3", "s"):
        live.gates.open(gate)
    done = live.wait_status(job["id"], "succeeded")
    client = live.client()
    for after in (0, 2, done["last_seq"] - 1):
        polled = [e["seq"] for e in poll(live, job["id"], after=after)["events"]]
        with client.stream("GET", f"/jobs/{job['id']}/stream", params={"after": after}) as response:
            streamed = [int(f.id) for f in events_only(frames(response.iter_lines())) if f.id is not None]
        with client.stream(
            "GET", f"/jobs/{job['id']}/stream", headers={"Last-Event-ID": str(after)}
        ) as response:
            resumed = [int(f.id) for f in events_only(frames(response.iter_lines())) if f.id is not None]
        assert polled == streamed == resumed == list(range(after + 1, done["last_seq"] + 1))
