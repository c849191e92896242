"""Every REST route of the HTTP API through a real server: success and each error status."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.requests import HTTPConnection
from web_support import LiveServer, StartServer, assert_error, wait_until

from underway.auth import Principal
from underway.events import Event, EventType
from underway.jobs import Job, Status
from underway.web.models import EventOut, JobOut

pytestmark = pytest.mark.timeout(30)


def iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- POST /jobs ---------------------------------------------------------------------------------


def test_submit_returns_201_and_the_job(live: LiveServer) -> None:
    response = live.client().post("/jobs", json={"task": "echo", "args": {"value": 7}})
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["task"] == "echo"
    assert job["args"] == {"value": 7, "text": ""}  # defaults filled in
    assert job["status"] == "queued"
    assert job["queue"] == "default"
    assert job["last_seq"] == 1
    done = live.wait_status(job["id"], "succeeded")
    assert done["result"] == {"value": 7, "text": ""}


def test_submit_with_every_option(shared: LiveServer) -> None:
    run_at = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    job = shared.submit(
        "echo",
        {"value": 1},
        queue="elsewhere",
        priority=5,
        run_at=run_at.isoformat(),
        max_attempts=4,
        crash_retries=5,
        timeout=12.5,
        labels={"user": "ada", "kind": "test"},
    )
    assert (job["crash_retries"], job["crashes"]) == (5, 0)
    assert job["queue"] == "elsewhere"
    assert job["priority"] == 5
    assert iso(job["run_at"]) == run_at
    assert job["max_attempts"] == 4
    assert job["timeout"] == 12.5
    assert job["labels"] == {"user": "ada", "kind": "test"}
    assert job["status"] == "queued"


def test_submit_with_delay_schedules_it_later(shared: LiveServer) -> None:
    before = datetime.now(UTC)
    job = shared.submit("echo", delay=3600)
    assert iso(job["run_at"]) >= before + timedelta(seconds=3599)
    assert shared.job(job["id"])["status"] == "queued"


def test_submit_run_at_without_offset_is_utc(shared: LiveServer) -> None:
    job = shared.submit("echo", run_at="2031-02-03T04:05:06")
    assert job["run_at"] == "2031-02-03T04:05:06.000Z"


@pytest.mark.parametrize(
    "run_at",
    [
        1900000000,
        1.5,
        True,
        "tomorrow",
        "0001-01-01T00:00:00+01:00",  # before 1970: would not convert back to text
        "9999-12-31T23:59:59-23:59",  # year 10000 in UTC
    ],
)
def test_submit_bad_run_at_is_422(shared: LiveServer, run_at: Any) -> None:
    response = shared.client().post("/jobs", json={"task": "echo", "run_at": run_at})
    error = assert_error(response, 422, "invalid_request")
    assert error["details"][0]["loc"] == ["body", "run_at"]
    assert shared.client().get("/jobs").status_code == 200  # nothing half-stored


def test_submit_run_at_and_delay_together_is_422(shared: LiveServer) -> None:
    response = shared.client().post(
        "/jobs", json={"task": "echo", "run_at": "2030-01-01T00:00:00Z", "delay": 5}
    )
    assert_error(response, 422, "invalid_arguments")


def test_submit_unknown_task_is_422(shared: LiveServer) -> None:
    error = assert_error(shared.client().post("/jobs", json={"task": "nope"}), 422, "unknown_task")
    assert "nope" in error["message"]


def test_submit_invalid_args_is_422_with_details(shared: LiveServer) -> None:
    response = shared.client().post("/jobs", json={"task": "add", "args": {"a": "1", "c": 3}})
    error = assert_error(response, 422, "invalid_arguments")
    details = error["details"]
    assert isinstance(details, list)
    assert details
    assert all({"loc", "message", "type"} <= set(d) for d in details)
    locs = {tuple(d["loc"]) for d in details}
    assert ("a",) in locs  # "1" is not an int: strict like JSON
    assert ("c",) in locs  # unknown argument


def test_submit_missing_required_argument_is_422(shared: LiveServer) -> None:
    error = assert_error(shared.client().post("/jobs", json={"task": "add"}), 422, "invalid_arguments")
    assert [d["loc"] for d in error["details"]] == [["a"]]


@pytest.mark.parametrize(
    "body",
    [
        {"task": "echo", "priority": "1"},
        {"task": "echo", "priority": False},
        {"task": "echo", "priority": 1.5},
        {"task": "echo", "max_attempts": "2"},
        {"task": "echo", "delay": "5"},
        {"task": "echo", "args": []},
        {"task": "echo", "labels": {"a": 1}},
        {"task": "echo", "surprise": True},
        {"task": 5},
        {"task": ""},
        {"args": {}},
        {"task": "echo", "max_attempts": 0},
        {"task": "echo", "timeout": 0},
        {"task": "echo", "delay": -1},
    ],
    ids=lambda body: json.dumps(body),
)
def test_submit_strict_model_rejects(shared: LiveServer, body: dict[str, Any]) -> None:
    error = assert_error(shared.client().post("/jobs", json=body), 422, "invalid_request")
    assert isinstance(error["details"], list)
    assert error["details"]
    assert all({"loc", "message", "type"} <= set(d) for d in error["details"])


def test_submit_body_not_json_is_422(shared: LiveServer) -> None:
    response = shared.client().post(
        "/jobs", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_error(response, 422, "invalid_request")


def test_body_too_large_by_content_length_is_413(start: StartServer) -> None:
    live = start(max_body_size=2048)
    body = {"task": "echo", "args": {"text": "x" * 4000}}
    error = assert_error(live.client().post("/jobs", json=body), 413, "body_too_large")
    assert error["details"] == {"limit": 2048}
    # Under the limit it goes through.
    assert live.client().post("/jobs", json={"task": "echo", "args": {"text": "x" * 1000}}).status_code == 201


def test_body_too_large_chunked_is_413(start: StartServer) -> None:
    live = start(max_body_size=2048)
    payload = json.dumps({"task": "echo", "args": {"text": "x" * 8000}}).encode()

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(payload), 500):
            yield payload[i : i + 500]

    response = live.client().post("/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_error(response, 413, "body_too_large")
    # The server is still fine afterwards.
    assert live.client().get("/healthz").status_code == 200


def test_small_chunked_body_is_accepted(start: StartServer) -> None:
    live = start(max_body_size=2048)
    payload = json.dumps({"task": "echo", "args": {"value": 2}}).encode()
    response = live.client().post(
        "/jobs", content=iter([payload[:10], payload[10:]]), headers={"content-type": "application/json"}
    )
    assert response.status_code == 201, response.text


# -- GET /jobs ----------------------------------------------------------------------------------


def test_list_jobs_newest_first_with_filters(live: LiveServer) -> None:
    far = 3600
    a = live.submit("echo", {"value": 1}, delay=far, labels={"team": "red"})
    b = live.submit("add", {"a": 1}, delay=far, queue="q2", labels={"team": "blue"})
    c = live.submit("echo", {"value": 3}, delay=far, labels={"team": "blue", "x": "y:z"})
    d = live.submit("echo", {"value": 4})
    live.wait_status(d["id"], "succeeded")
    client = live.client()

    def ids(**params: Any) -> list[str]:
        response = client.get("/jobs", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"jobs", "next_cursor"}
        return [job["id"] for job in body["jobs"]]

    assert ids() == [d["id"], c["id"], b["id"], a["id"]]
    assert ids(status="queued") == [c["id"], b["id"], a["id"]]
    assert ids(status=["succeeded", "queued"]) == [d["id"], c["id"], b["id"], a["id"]]
    assert ids(status="succeeded") == [d["id"]]
    assert ids(queue="q2") == [b["id"]]
    assert ids(task="echo") == [d["id"], c["id"], a["id"]]
    assert ids(label="team:blue") == [c["id"], b["id"]]
    assert ids(label="x:y:z") == [c["id"]]  # the value may hold a colon
    assert ids(label="team:green") == []
    assert ids(task="echo", label="team:blue") == [c["id"]]
    assert ids(queue="nowhere") == []


def test_list_jobs_cursor_pagination(live: LiveServer) -> None:
    submitted = [live.submit("echo", {"value": i}, delay=3600)["id"] for i in range(5)]
    newest_first = list(reversed(submitted))
    client = live.client()
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor is not None:
            params["cursor"] = cursor
        body = client.get("/jobs", params=params).json()
        pages += 1
        seen += [job["id"] for job in body["jobs"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert cursor == body["jobs"][-1]["id"]
    assert seen == newest_first
    assert pages == 3


@pytest.mark.parametrize(
    "params",
    [{"status": "sleeping"}, {"label": "nocolon"}, {"limit": 0}, {"limit": 501}, {"limit": "many"}],
    ids=lambda p: json.dumps(p),
)
def test_list_jobs_bad_query_is_422(shared: LiveServer, params: dict[str, Any]) -> None:
    assert_error(shared.client().get("/jobs", params=params), 422, "invalid_request")


# -- GET /jobs/{id} -----------------------------------------------------------------------------


def test_get_job_and_404(shared: LiveServer) -> None:
    job = shared.submit("echo", delay=3600)
    assert shared.client().get(f"/jobs/{job['id']}").json() == job
    error = assert_error(shared.client().get("/jobs/nope"), 404, "job_not_found")
    assert error["details"] == {"id": "nope"}


# -- cancel -------------------------------------------------------------------------------------


def test_cancel_queued_job_cancels_it(live: LiveServer) -> None:
    job = live.submit("echo", delay=3600)
    response = live.client().post(f"/jobs/{job['id']}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    assert live.job(job["id"])["status"] == "cancelled"


def test_cancel_running_job_requests_it_then_it_ends(live: LiveServer) -> None:
    job = live.submit("hold", {"gate": "never"})
    live.wait_running(job["id"])
    response = live.client().post(f"/jobs/{job['id']}/cancel")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "running"
    assert body["cancel_requested"] is True
    live.wait_status(job["id"], "cancelled")


def test_cancel_finished_job_is_409(live: LiveServer) -> None:
    job = live.submit("echo")
    live.wait_status(job["id"], "succeeded")
    error = assert_error(live.client().post(f"/jobs/{job['id']}/cancel"), 409, "invalid_state")
    assert error["details"] == {"status": "succeeded"}


def test_cancel_unknown_job_is_404(shared: LiveServer) -> None:
    assert_error(shared.client().post("/jobs/nope/cancel"), 404, "job_not_found")


def test_cancel_all_returns_the_count(live: LiveServer) -> None:
    for i in range(3):
        live.submit("echo", {"value": i}, delay=3600, queue="bulk")
    keep = live.submit("echo", delay=3600, queue="keep")
    client = live.client()
    response = client.post("/jobs/cancel", json={"queue": "bulk"})
    assert response.status_code == 200, response.text
    assert response.json() == {"cancelled": 3}
    assert client.post("/jobs/cancel", json={"queue": "bulk"}).json() == {"cancelled": 0}
    assert live.job(keep["id"])["status"] == "queued"
    assert client.post("/jobs/cancel", json={"status": ["queued"], "task": "echo"}).json() == {"cancelled": 1}
    assert live.job(keep["id"])["status"] == "cancelled"


@pytest.mark.parametrize(
    "body", [{"queue": 1}, {"status": ["nope"]}, {"status": "queued"}, {"everything": True}]
)
def test_cancel_all_strict_body(shared: LiveServer, body: dict[str, Any]) -> None:
    assert_error(shared.client().post("/jobs/cancel", json=body), 422, "invalid_request")


# -- retry --------------------------------------------------------------------------------------


def test_retry_a_failed_job_runs_it_again(live: LiveServer) -> None:
    job = live.submit("boom")
    failed = live.wait_status(job["id"], "failed")
    assert failed["error"]["type"] == "ValueError"
    response = live.client().post(f"/jobs/{job['id']}/retry")
    assert response.status_code == 200, response.text
    assert response.json()["id"] == job["id"]
    assert response.json()["status"] == "queued"
    again = wait_until(lambda: (j := live.job(job["id"]))["attempt"] == 2 and j["status"] == "failed" and j)
    assert again["last_seq"] > failed["last_seq"]


def test_retry_unfinished_job_is_409(live: LiveServer) -> None:
    job = live.submit("echo", delay=3600)
    error = assert_error(live.client().post(f"/jobs/{job['id']}/retry"), 409, "invalid_state")
    assert error["details"] == {"status": "queued"}
    assert_error(live.client().post("/jobs/nope/retry"), 404, "job_not_found")


# -- answer -------------------------------------------------------------------------------------


def test_answer_resumes_a_waiting_job(live: LiveServer) -> None:
    job = live.submit("ask", {"question": "Ship it?"})
    waiting = live.wait_status(job["id"], "waiting")
    assert waiting["prompt"]["message"] == "Ship it?"
    assert waiting["prompt"]["options"] == ["yes", "no"]
    client = live.client()
    error = assert_error(client.post(f"/jobs/{job['id']}/answer", json={"value": "maybe"}), 422)
    assert error["code"] == "invalid_arguments"
    assert error["details"] == {"options": ["yes", "no"]}
    response = client.post(f"/jobs/{job['id']}/answer", json={"value": "yes"})
    assert response.status_code == 200, response.text
    assert response.json()["answers"] == {waiting["prompt"]["key"]: "yes"}
    done = live.wait_status(job["id"], "succeeded")
    assert done["result"] == {"answer": "yes"}
    types = [e["type"] for e in live.events(job["id"])]
    assert "prompt" in types
    assert "answer" in types


def test_answer_a_job_that_is_not_waiting_is_409(live: LiveServer) -> None:
    job = live.submit("echo", delay=3600)
    assert_error(live.client().post(f"/jobs/{job['id']}/answer", json={"value": 1}), 409, "invalid_state")
    assert_error(live.client().post("/jobs/nope/answer", json={"value": 1}), 404, "job_not_found")


@pytest.mark.parametrize("body", [{}, {"value": 1, "extra": 2}, {"value": 1, "key": 5}])
def test_answer_strict_body(shared: LiveServer, body: dict[str, Any]) -> None:
    job = shared.submit("echo", delay=3600)
    assert_error(shared.client().post(f"/jobs/{job['id']}/answer", json=body), 422, "invalid_request")


# -- delete -------------------------------------------------------------------------------------


def test_delete_a_finished_job(live: LiveServer) -> None:
    job = live.submit("echo")
    live.wait_status(job["id"], "succeeded")
    client = live.client()
    response = client.delete(f"/jobs/{job['id']}")
    assert response.status_code == 204
    assert response.content == b""
    assert_error(client.get(f"/jobs/{job['id']}"), 404, "job_not_found")
    assert_error(client.get(f"/jobs/{job['id']}/events"), 404, "job_not_found")
    assert_error(client.delete(f"/jobs/{job['id']}"), 404, "job_not_found")


def test_delete_a_running_job_is_409(live: LiveServer) -> None:
    job = live.submit("hold", {"gate": "d"})
    live.wait_running(job["id"])
    error = assert_error(live.client().delete(f"/jobs/{job['id']}"), 409, "invalid_state")
    assert error["details"] == {"status": "running"}
    live.gates.open("d")
    live.wait_status(job["id"], "succeeded")
    assert live.client().delete(f"/jobs/{job['id']}").status_code == 204


# -- service routes -----------------------------------------------------------------------------


def test_tasks_lists_schemas(shared: LiveServer) -> None:
    response = shared.client().get("/tasks")
    assert response.status_code == 200
    tasks = {task["name"]: task for task in response.json()["tasks"]}
    assert {"echo", "add", "hold", "ask", "boom", "flood", "other.echo"} <= set(tasks)
    add = tasks["add"]
    assert add["schema"]["required"] == ["a"]
    assert add["schema"]["properties"]["a"]["type"] == "integer"
    assert add["is_async"] is False
    assert add["doc"] == "A sync task with a required argument."
    assert tasks["other.echo"]["queue"] == "other"
    assert tasks["hold"]["is_async"] is True
    assert "ctx" not in tasks["hold"]["schema"]["properties"]


def test_workers_lists_the_in_process_worker(live: LiveServer) -> None:
    workers = live.client().get("/workers").json()["workers"]
    assert len(workers) == 1
    (worker,) = workers
    assert worker["pid"] == os.getpid()
    assert worker["concurrency"] == live.settings.concurrency
    assert worker["running"] == 0
    assert worker["last_seen"] is not None


def test_healthz(shared: LiveServer) -> None:
    response = shared.client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"ok": True, "store": "ok"}


def test_metrics_in_prometheus_text(live: LiveServer) -> None:
    job = live.submit("echo")
    live.wait_status(job["id"], "succeeded")
    live.submit("echo", delay=3600, queue="later")
    response = live.client().get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "# TYPE underway_jobs gauge" in text
    assert 'underway_jobs{queue="default",status="succeeded"} 1.0' in text
    assert 'underway_jobs{queue="later",status="queued"} 1.0' in text
    assert "# TYPE underway_open_streams gauge" in text
    for transport in ("sse", "websocket", "long_poll"):
        assert f'underway_open_streams{{transport="{transport}"}} 0.0' in text
    assert 'underway_jobs_submitted_total{queue="default",task="echo"} 1.0' in text
    assert 'underway_jobs_finished_last_minute{queue="default",status="succeeded"} 1.0' in text
    assert 'underway_job_duration_seconds_mean_last_minute{queue="default",status="succeeded"}' in text
    assert 'underway_job_duration_seconds_max_last_minute{queue="default",status="succeeded"}' in text
    assert 'underway_jobs_finished_last_minute{queue="later"' not in text


def test_unknown_path_is_404_in_the_error_shape(shared: LiveServer) -> None:
    with httpx.Client(base_url=shared.base, timeout=10) as client:
        assert_error(client.get("/api/nope"), 404, "not_found")
        assert_error(client.get("/nope"), 404, "not_found")
        assert_error(client.post("/api/jobs/x/nothing"), 404, "not_found")


def test_wrong_method_is_405_in_the_error_shape_with_allow(shared: LiveServer) -> None:
    response = shared.client().put("/jobs")
    assert_error(response, 405, "method_not_allowed")
    assert set(response.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST"}
    cancel = shared.client().get("/jobs/some-id/cancel")
    assert_error(cancel, 405, "method_not_allowed")
    assert cancel.headers["allow"] == "POST"


def test_openapi_document(shared: LiveServer) -> None:
    response = shared.client().get("/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    for path in (
        "/api/jobs",
        "/api/jobs/{job_id}",
        "/api/jobs/{job_id}/events",
        "/api/jobs/{job_id}/stream",
        "/api/jobs/{job_id}/cancel",
        "/api/jobs/cancel",
        "/api/jobs/{job_id}/retry",
        "/api/jobs/{job_id}/answer",
        "/api/tasks",
        "/api/workers",
        "/api/healthz",
        "/api/metrics",
        "/api/stream",
    ):
        assert path in paths, path
    submit = paths["/api/jobs"]["post"]
    assert "201" in submit["responses"]
    assert "422" in submit["responses"]
    assert set(doc["components"]["schemas"]["JobOut"]["properties"]) == set(JobOut.model_fields)


# -- the output models describe what the routes send --------------------------------------------


def test_job_and_event_models_match_to_dict() -> None:
    now = time.time()
    job = Job(
        id="j", queue="q", task="t", args={}, status=Status.QUEUED, run_at=now, created_at=now, updated_at=now
    )
    event = Event(job_id="j", seq=1, type=EventType.LOG, at=now, data={})
    assert set(JobOut.model_fields) == set(job.to_dict())
    assert set(EventOut.model_fields) == set(event.to_dict())
    JobOut.model_validate(job.to_dict())
    EventOut.model_validate(event.to_dict())


def test_live_responses_match_the_models(live: LiveServer) -> None:
    job = live.submit("hold", {"gate": "m", "steps": 1})
    live.gates.open("m/1")
    live.gates.open("m")
    done = live.wait_status(job["id"], "succeeded")
    assert set(done) == set(JobOut.model_fields)
    JobOut.model_validate(done)
    events = live.events(job["id"])
    assert {e["type"] for e in events} >= {"status", "log", "progress"}
    for event in events:
        assert set(event) == set(EventOut.model_fields)
        EventOut.model_validate(event)


def test_body_not_utf8_is_422(shared: LiveServer) -> None:
    response = shared.client().post(
        "/jobs", content=b'{"task": "\xc3I"}', headers={"content-type": "application/json"}
    )
    error = assert_error(response, 422, "invalid_request")
    assert error["details"][0]["type"] == "json_invalid"


def test_with_a_host_login_a_request_without_a_user_is_told_so(start: StartServer) -> None:
    async def host_login(conn: HTTPConnection) -> Principal | None:
        return Principal(owner="root", role="admin") if conn.headers.get("x-user") == "root" else None

    live = start(authenticate=host_login, headers={"X-User": "root"})
    assert live.client().get("/jobs").status_code == 200
    with httpx.Client(base_url=live.api, trust_env=False) as stranger:
        error = assert_error(stranger.get("/jobs"), 401, "unauthenticated")
    assert "this app's own login found no user" in error["message"]
