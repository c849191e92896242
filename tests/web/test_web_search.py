"""Search and selection in every job filter of the HTTP API (``q``, ``ids``, ``batch``): the list,
the multiplexed stream and WebSocket subscription (snapshot and live), cancel-all and retry-all,
each within what the caller may see."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_web_auth import Tenants, bearer, start_tenants
from test_web_ws import Socket
from web_support import LiveServer, assert_error, events_only, frames, wait_until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Tenants]:
    found = start_tenants(f"sqlite:///{tmp_path / 'search.db'}")
    try:
        yield found
    finally:
        found.live.stop()


def listed(client: httpx.Client, **params: Any) -> list[str]:
    """The ids ``GET /jobs`` answers with these parameters, newest first."""
    response = client.get("/jobs", params=params)
    assert response.status_code == 200, response.text
    return [job["id"] for job in response.json()["jobs"]]


def later(live: LiveServer, text: str) -> str:
    """A job that stays queued for a minute; its id."""
    job_id: str = live.submit("echo", {"text": text}, delay=60)["id"]
    return job_id


def ended(live: LiveServer, job_id: str, status: str, attempt: int) -> dict[str, Any]:
    """Wait until the job's attempt ``attempt`` ended with ``status``."""

    def done() -> dict[str, Any] | None:
        job = live.job(job_id)
        return job if (job["status"], job["attempt"]) == (status, attempt) else None

    return wait_until(done, what=f"job {job_id} to be {status} after attempt {attempt}")


# -- GET /jobs ---------------------------------------------------------------------------------------


def test_jobs_are_listed_by_id_prefix_argument_text_ids_and_batch(live: LiveServer) -> None:
    report, digest, odd = later(live, "Quarterly REPORT"), later(live, "weekly digest"), later(live, "100%_x")
    client = live.client()
    assert listed(client, q="report") == [report]
    assert listed(client, q=report.upper()) == [report]
    assert report in listed(client, q=report[:12])
    assert listed(client, q="100%") == listed(client, q="%_") == [odd]
    assert listed(client, q="digest", status="queued") == [digest]
    assert listed(client, q="digest", status="failed") == []
    assert listed(client, ids=f"{report},{odd}") == [odd, report]
    assert listed(client, ids=f"{report},{odd}", q="weekly") == []
    assert_error(client.get("/jobs", params={"ids": ","}), 422, "invalid_arguments")  # not "all"
    made = client.post("/batches", json={"task": "item", "items": [{"text": "alpha"}, {"text": "beta"}]})
    batch = made.json()["id"]
    items = listed(client, batch=batch)
    assert len(items) == 2
    assert len(listed(client, batch=batch, q="alpha")) == 1
    assert listed(client, batch=batch, q="report") == []
    assert_error(client.get("/jobs", params={"q": "x" * 201}), 422)
    too_many = ",".join(f"j{n}" for n in range(1001))
    assert_error(client.get("/jobs", params={"ids": too_many}), 422, "invalid_arguments")


# -- streams -----------------------------------------------------------------------------------------


def test_the_multiplexed_stream_follows_the_jobs_a_search_finds(live: LiveServer) -> None:
    first = later(live, "needle one")
    later(live, "haystack")
    with live.client().stream("GET", "/stream", params={"q": "NEEDLE"}) as response:
        stream = frames(response.iter_lines())
        snapshot = next(f for f in stream if f.event == "snapshot").json()
        assert [job["id"] for job in snapshot["jobs"]] == [first]
        hay = live.submit("echo", {"text": "more hay"})["id"]
        live.wait_status(hay, "succeeded")  # its events went out first…
        needle = live.submit("echo", {"text": "a needle"})["id"]
        got = [next(events_only(stream)).json() for _ in range(3)]  # …but only the needle's come
        assert [(e["job_id"], e["data"]["status"]) for e in got] == [
            (needle, "queued"),
            (needle, "running"),
            (needle, "succeeded"),
        ]


def test_the_multiplexed_stream_finds_a_job_by_its_id_live_too(live: LiveServer) -> None:
    wanted, other = later(live, "one"), later(live, "two")
    client = live.client()
    with client.stream("GET", "/stream", params={"q": wanted}) as response:
        stream = frames(response.iter_lines())
        snapshot = next(f for f in stream if f.event == "snapshot").json()
        assert [job["id"] for job in snapshot["jobs"]] == [wanted]
        assert client.post(f"/jobs/{other}/cancel").status_code == 200
        assert client.post(f"/jobs/{wanted}/cancel").status_code == 200
        event = next(events_only(stream)).json()
        assert (event["job_id"], event["data"]["status"]) == (wanted, "cancelled")


def test_the_multiplexed_stream_and_a_websocket_follow_a_task_and_a_label(live: LiveServer) -> None:
    team = later(live, "mine")
    live.submit("add", {"a": 1, "b": 2}, labels={"team": "blue"}, delay=60)
    with live.client().stream("GET", "/stream", params={"task": "echo", "label": "team:red"}) as response:
        stream = frames(response.iter_lines())
        assert next(f for f in stream if f.event == "snapshot").json()["jobs"] == []
        live.submit("echo", {"text": "not labelled"})  # the right task, no label: not followed
        wanted = live.submit("echo", {"text": "red"}, labels={"team": "red"})["id"]
        event = next(events_only(stream)).json()
        assert (event["job_id"], event["data"]["status"]) == (wanted, "queued")
    with Socket(live) as ws:
        reply = ws.request("subscribe", task="echo", label="team:red")
        snapshot = ws.push(lambda m: m.get("sub") == reply["sub"] and "snapshot" in m)["snapshot"]
        assert [job["id"] for job in snapshot["jobs"]] == [wanted]
        assert team not in {job["id"] for job in snapshot["jobs"]}
        for wrong in ({"task": 1}, {"label": "no-colon"}):
            refused = ws.request("subscribe", **wrong)
            assert (refused["ok"], refused["error"]["code"]) == (False, "invalid_arguments"), wrong
    assert_error(live.client().get("/stream", params={"label": "no-colon"}), 422)


def test_a_websocket_subscription_takes_a_search_and_ids(live: LiveServer) -> None:
    first = later(live, "needle one")
    hay = later(live, "haystack")
    with Socket(live) as ws:
        reply = ws.request("subscribe", q="needle")
        assert reply["ok"], reply
        sub = reply["sub"]
        snapshot = ws.push(lambda m: m.get("sub") == sub and "snapshot" in m)["snapshot"]
        assert [job["id"] for job in snapshot["jobs"]] == [first]
        by_ids = ws.request("subscribe", ids=[hay], jobs=[first], q="hay")
        snapshot = ws.push(lambda m: m.get("sub") == by_ids["sub"] and "snapshot" in m)["snapshot"]
        assert [job["id"] for job in snapshot["jobs"]] == [hay]
        live.client().post(f"/jobs/{hay}/cancel")
        live.client().post(f"/jobs/{first}/cancel")
        event = ws.push(lambda m: m.get("sub") == sub and "event" in m)["event"]
        assert (event["job_id"], event["data"]["status"]) == (first, "cancelled")
        event = ws.push(lambda m: m.get("sub") == by_ids["sub"] and "event" in m)["event"]
        assert event["job_id"] == hay
        for wrong in ({"q": 5}, {"jobs": "abc"}, {"ids": [1]}, {"queue": ["a"]}, {"q": "x" * 201}):
            refused = ws.request("subscribe", **wrong)
            assert refused["ok"] is False, wrong
            assert refused["error"]["code"] == "invalid_arguments"


# -- cancel-all and retry-all ------------------------------------------------------------------------


def test_cancel_all_with_a_search_or_ids_cancels_exactly_those(live: LiveServer) -> None:
    names = ("alpha one", "ALPHA two", "beta", "gamma", "delta")
    jobs = {name: later(live, name) for name in names}
    client = live.client()
    assert client.post("/jobs/cancel", json={"q": "alpha"}).json() == {"cancelled": 2}
    both = [jobs["beta"], jobs["alpha one"]]  # the second ended already
    assert client.post("/jobs/cancel", json={"ids": both}).json() == {"cancelled": 1}
    assert client.post("/jobs/cancel", json={"ids": [jobs["gamma"]], "q": "delta"}).json() == {"cancelled": 0}
    assert_error(client.post("/jobs/cancel", json={"ids": []}), 422)  # never "every job"
    statuses = {name: live.job(job_id)["status"] for name, job_id in jobs.items()}
    assert statuses == {
        "alpha one": "cancelled",
        "ALPHA two": "cancelled",
        "beta": "cancelled",
        "gamma": "queued",
        "delta": "queued",
    }


def test_retry_all_reruns_exactly_the_failed_jobs(live: LiveServer) -> None:
    failed = [live.submit("item", {"text": f"bad {n}", "fail": True})["id"] for n in range(2)]
    good = live.submit("item", {"text": "good"})["id"]
    cancelled = later(live, "later")
    client = live.client()
    assert client.post(f"/jobs/{cancelled}/cancel").status_code == 200
    for job_id in failed:
        ended(live, job_id, "failed", 1)
    ended(live, good, "succeeded", 1)
    assert client.post("/jobs/retry", json={"status": ["failed"]}).json() == {"retried": 2}
    for job_id in failed:
        ended(live, job_id, "failed", 2)
    assert (live.job(good)["attempt"], live.job(cancelled)["status"]) == (1, "cancelled")
    # No status: the failed and the cancelled ones; a search narrows that.
    assert client.post("/jobs/retry", json={"q": "LATER"}).json() == {"retried": 1}
    ended(live, cancelled, "succeeded", 1)
    assert client.post("/jobs/retry", json={"status": ["succeeded"], "ids": [good]}).json() == {"retried": 1}
    ended(live, good, "succeeded", 2)
    assert [live.job(job_id)["attempt"] for job_id in failed] == [2, 2]
    assert_error(client.post("/jobs/retry", json={"status": ["running"]}), 422, "invalid_request")
    assert_error(client.post("/jobs/retry", json={"ids": []}), 422, "invalid_request")


# -- within what the caller may see ------------------------------------------------------------------


def test_search_and_changes_of_many_stay_within_the_callers_jobs(secured: Tenants) -> None:
    t = secured
    alices = [t.submit("alice", "item", {"text": "shared", "fail": True})["id"] for _ in range(2)]
    bobs = t.submit("bob", "item", {"text": "shared", "fail": True})["id"]
    for job_id in [*alices, bobs]:
        ended(t.live, job_id, "failed", 1)
    bob, admin = t.client("bob"), t.client("admin")
    assert listed(bob, q="shared") == [bobs]
    assert listed(bob, ids=",".join(alices)) == []
    assert_error(bob.get("/jobs", params={"owner": "alice", "q": "shared"}), 403, "forbidden")
    assert listed(admin, owner="alice", q="SHARED") == alices[::-1]
    with bob.stream("GET", "/stream", params={"q": "shared"}) as response:
        snapshot = next(f for f in frames(response.iter_lines()) if f.event == "snapshot").json()
        assert [job["id"] for job in snapshot["jobs"]] == [bobs]
    assert_error(bob.get("/stream", params={"owner": "alice"}), 403, "forbidden")

    assert bob.post("/jobs/retry", json={}).json() == {"retried": 1}
    assert bob.post("/jobs/retry", json={"ids": alices}).json() == {"retried": 0}
    assert_error(bob.post("/jobs/retry", json={"owner": "alice"}), 403, "forbidden")
    ended(t.live, bobs, "failed", 2)
    assert [t.live.job(job_id)["attempt"] for job_id in alices] == [1, 1]
    assert admin.post("/jobs/retry", json={"owner": "alice", "q": "shared"}).json() == {"retried": 2}
    for job_id in alices:
        ended(t.live, job_id, "failed", 2)
    assert t.live.job(bobs)["attempt"] == 2

    queued = t.submit("alice", "echo", {"text": "shared"}, delay=60)["id"]
    assert bob.post("/jobs/cancel", json={"q": "shared"}).json() == {"cancelled": 0}
    assert t.live.job(queued)["status"] == "queued"


def test_a_stream_token_may_not_retry(secured: Tenants) -> None:
    t = secured
    job_id = t.submit("alice", "item", {"text": "x", "fail": True})["id"]
    ended(t.live, job_id, "failed", 1)
    anonymous = t.client(None)
    for scope in ({}, {"job": job_id}):
        params = {"token": t.token("alice", **scope)}
        assert_error(anonymous.post("/jobs/retry", params=params, json={}), 403, "forbidden")
        assert listed(anonymous, q="x", **params) == [job_id]  # reading is what it is for
    tokened = httpx.Client(base_url=t.live.api, headers=bearer(t.token("alice")), trust_env=False)
    t.live.clients.append(tokened)
    assert_error(tokened.post("/jobs/retry", json={"ids": [job_id]}), 403, "forbidden")
    assert t.live.job(job_id)["attempt"] == 1
