"""Batches and queues through a real server: submit, counts, actions, exports, queue controls."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from web_support import LiveServer, StartServer, assert_error, events_only, frames, wait_until

pytestmark = pytest.mark.timeout(60)

#: Results that a careless export would break: separators, quotes, newlines, other scripts.
AWKWARD = ["plain", "comma, inside", 'quote " inside', "line\nbreak", "naïve café 東京 🚀", ""]


def submit_batch(live: LiveServer, items: list[dict[str, Any]], **options: Any) -> dict[str, Any]:
    response = live.client().post("/batches", json={"task": "item", "items": items, **options})
    assert response.status_code == 201, response.text
    return response.json()


def batch(live: LiveServer, batch_id: str) -> dict[str, Any]:
    response = live.client().get(f"/batches/{batch_id}")
    assert response.status_code == 200, response.text
    return response.json()


def wait_batch(live: LiveServer, batch_id: str, *statuses: str) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        found = batch(live, batch_id)
        return found if found["status"] in statuses else None

    return wait_until(ended, 20, what=f"batch {batch_id} to be {statuses}")


def test_a_batch_with_failing_items_ends_partial_and_retry_failed_reruns_only_those(live: LiveServer) -> None:
    items = [{"text": f"t{n}", "fail": n % 3 == 0} for n in range(9)]
    made = submit_batch(live, items, name="nine", labels={"kind": "test"})
    assert (made["total"], made["name"], made["task"], made["labels"]) == (
        9,
        "nine",
        "item",
        {"kind": "test"},
    )
    assert made["status"] == "queued"
    assert made["counts"]["queued"] == 9

    done = wait_batch(live, made["id"], "partial")
    assert done["counts"]["succeeded"] == 6
    assert done["counts"]["failed"] == 3
    assert done["percent"] == 100.0
    assert done["eta_s"] == 0.0
    assert done["finished_at"] is not None

    failed = live.client().get(f"/batches/{made['id']}/items", params={"status": "failed"}).json()["jobs"]
    assert sorted(job["args"]["text"] for job in failed) == ["t0", "t3", "t6"]

    retried = live.client().post(f"/batches/{made['id']}/retry-failed")
    assert retried.status_code == 200, retried.text
    assert retried.json()["retried"] == 3
    again = wait_batch(live, made["id"], "partial")  # the same items fail again
    assert again["counts"] == {**again["counts"], "succeeded": 6, "failed": 3}
    assert all(
        job["attempt"] == 2
        for job in live.client()
        .get(f"/batches/{made['id']}/items", params={"status": "failed"})
        .json()["jobs"]
    )


def test_a_batch_that_succeeds_is_completed(live: LiveServer) -> None:
    made = submit_batch(live, [{"text": str(n)} for n in range(5)])
    done = wait_batch(live, made["id"], "completed")
    assert done["counts"]["succeeded"] == 5
    assert done["rate"] is not None


def test_a_paused_batch_resumes_and_a_cancelled_one_stops(live: LiveServer) -> None:
    gate = "batch-gate"
    response = live.client().post(
        "/batches", json={"task": "hold", "items": [{"gate": gate} for _ in range(30)], "queue": "held"}
    )
    assert response.status_code == 201, response.text
    made = response.json()
    wait_until(lambda: batch(live, made["id"])["counts"]["running"] > 0, 10, what="items to start")
    paused = live.client().post(f"/batches/{made['id']}/pause").json()
    assert paused["status"] == "paused"
    running = paused["counts"]["running"]
    live.gates.open(gate)
    finished = wait_until(
        lambda: (b := batch(live, made["id"]))["counts"]["succeeded"] >= running and b,
        10,
        what="running items to end",
    )
    assert finished["counts"]["queued"] == 30 - running  # nothing else started while paused
    assert finished["status"] == "paused"

    resumed = live.client().post(f"/batches/{made['id']}/resume").json()
    assert resumed["status"] in ("running", "completed")
    wait_batch(live, made["id"], "completed")

    second = live.client().post(
        "/batches", json={"task": "hold", "items": [{"gate": "never"} for _ in range(30)]}
    )
    other = second.json()
    wait_until(lambda: batch(live, other["id"])["counts"]["running"] > 0, 10, what="items to start")
    cancelled = live.client().post(f"/batches/{other['id']}/cancel").json()
    assert cancelled["cancelled"] is True
    assert cancelled["counts"]["queued"] == 0
    ended = wait_batch(live, other["id"], "cancelled")
    assert ended["counts"]["cancelled"] == 30


@pytest.mark.parametrize("kind", ["json", "ndjson", "csv"])
def test_results_export_in_every_format(live: LiveServer, kind: str) -> None:
    items = [{"text": text, "fail": n == 2} for n, text in enumerate(AWKWARD)]
    made = submit_batch(live, items)
    wait_batch(live, made["id"], "partial")
    response = live.client().get(f"/batches/{made['id']}/results", params={"format": kind})
    assert response.status_code == 200, response.text
    assert f"batch-{made['id']}.{kind}" in response.headers["content-disposition"]
    text = response.content.decode("utf-8")
    if kind == "json":
        rows = json.loads(text)
    elif kind == "ndjson":
        rows = [json.loads(line) for line in text.splitlines()]
    else:
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert [row["id"] for row in rows] == sorted(row["id"] for row in rows)  # submission order
    assert len(rows) == len(AWKWARD)
    for n, (row, text_in) in enumerate(zip(rows, AWKWARD, strict=True)):
        failed = n == 2
        assert row["status"] == ("failed" if failed else "succeeded")
        if kind == "csv":
            assert row["args.text"] == text_in
            assert row["result.text"] == ("" if failed else text_in)
            assert row["result.length"] == ("" if failed else str(len(text_in)))
            assert row["error_type"] == ("ValueError" if failed else "")
        else:
            assert row["args"] == {"text": text_in, "fail": failed}
            assert row["result"] == (None if failed else {"text": text_in, "length": len(text_in)})
            assert (row["error"] or {}).get("type") == ("ValueError" if failed else None)


def test_batch_errors(live: LiveServer) -> None:
    client = live.client()
    assert_error(client.get("/batches/nope"), 404, "batch_not_found")
    assert_error(client.post("/batches/nope/cancel"), 404, "batch_not_found")
    assert_error(client.get("/batches/nope/results"), 404, "batch_not_found")
    assert_error(client.post("/batches", json={"task": "item", "items": []}), 422, "invalid_request")
    bad = client.post("/batches", json={"task": "item", "items": [{"text": "ok"}, {"text": 5}]})
    assert_error(bad, 422, "invalid_arguments")
    assert bad.json()["error"]["details"]["item"] == 1
    assert_error(client.post("/batches", json={"task": "nope", "items": [{}]}), 422, "unknown_task")
    assert client.get("/batches").json()["batches"] == []  # nothing was stored


def test_batches_are_listed_newest_first_with_a_cursor(live: LiveServer) -> None:
    made = [submit_batch(live, [{"text": "x"}]) for _ in range(3)]
    first = live.client().get("/batches", params={"limit": 2}).json()
    assert [b["id"] for b in first["batches"]] == [made[2]["id"], made[1]["id"]]
    rest = live.client().get("/batches", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [b["id"] for b in rest["batches"]] == [made[0]["id"]]
    assert rest["next_cursor"] is None


# -- queues --------------------------------------------------------------------------------------


def queues(live: LiveServer) -> dict[str, dict[str, Any]]:
    return {q["name"]: q for q in live.client().get("/queues").json()["queues"]}


def test_a_paused_queue_starts_nothing_until_resumed(live: LiveServer) -> None:
    paused = live.client().post("/queues/slow/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["paused"] is True
    job = live.submit("echo", {"value": 1}, queue="slow")
    other = live.submit("echo", {"value": 2})
    live.wait_status(other["id"], "succeeded")
    state = queues(live)["slow"]
    assert (state["depth"], state["paused"]) == (1, True)
    assert state["oldest_queued_age_s"] is not None
    assert live.job(job["id"])["status"] == "queued"
    assert live.client().post("/queues/slow/resume").json()["paused"] is False
    live.wait_status(job["id"], "succeeded")
    assert queues(live)["slow"]["throughput_1m"] == 1


def test_a_queue_limit_is_set_and_removed(live: LiveServer) -> None:
    response = live.client().put("/queues/api/limit", json={"concurrency": 2})
    assert response.json()["concurrency"] == 2
    assert queues(live)["api"]["concurrency"] == 2
    assert live.client().put("/queues/api/limit", json={"concurrency": None}).json()["concurrency"] is None
    assert_error(live.client().put("/queues/api/limit", json={"concurrency": 0}), 422, "invalid_request")


# -- jobs: idempotency keys and cancel by batch ---------------------------------------------------


def test_an_idempotency_key_returns_the_same_job_or_409(live: LiveServer) -> None:
    first = live.submit("echo", {"value": 1}, idempotency_key="order-1")
    assert live.submit("echo", {"value": 1}, idempotency_key="order-1")["id"] == first["id"]
    conflict = live.client().post(
        "/jobs", json={"task": "echo", "args": {"value": 2}, "idempotency_key": "order-1"}
    )
    assert_error(conflict, 409, "idempotency_conflict")


def test_cancel_all_by_batch(live: LiveServer) -> None:
    made = live.client().post(
        "/batches", json={"task": "hold", "items": [{"gate": "never"} for _ in range(5)]}
    )
    batch_id = made.json()["id"]
    response = live.client().post("/jobs/cancel", json={"batch": batch_id})
    assert response.json()["cancelled"] == 5
    wait_batch(live, batch_id, "cancelled")  # every item was cancelled


# -- the batch stream ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_stream_of_ten_thousand_quick_items_is_coalesced(start: StartServer) -> None:
    live = start(concurrency=50)
    made = submit_batch(live, [{"text": str(n)} for n in range(10_000)])
    seen = []
    with (
        live.client(timeout=60).stream("GET", f"/batches/{made['id']}/stream") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for frame in events_only(frames(response.iter_lines())):
            seen.append(frame)
            if frame.event == "end":
                break
    kinds = [frame.event for frame in seen]
    assert kinds[0] == "snapshot"
    assert kinds[-1] == "end"
    assert set(kinds[1:-1]) <= {"batch"}
    final = seen[-1].json()
    assert final["status"] == "completed"
    assert final["counts"]["succeeded"] == 10_000
    # At most one batch event per 0.25 s: a few dozen for a run of seconds, not 30,000 events.
    assert len(seen) < 200, len(seen)
    updates = [frame.json() for frame in seen[1:-1]]
    done = [update["batch"]["counts"]["succeeded"] for update in updates]
    assert done == sorted(done)  # the counts only grow
    assert all(len(update["items"]) <= 100 for update in updates)
    assert any(item.get("status") == "succeeded" for update in updates for item in update["items"])


def test_the_stream_of_an_ended_batch_is_a_snapshot_and_an_end(live: LiveServer) -> None:
    made = submit_batch(live, [{"text": "a"}, {"text": "b", "fail": True}])
    wait_batch(live, made["id"], "partial")
    with live.client().stream("GET", f"/batches/{made['id']}/stream") as response:
        seen = list(events_only(frames(response.iter_lines())))
    assert [frame.event for frame in seen] == ["snapshot", "end"]
    assert seen[-1].json()["status"] == "partial"
    assert_error(live.client().get("/batches/nope/stream"), 404, "batch_not_found")
