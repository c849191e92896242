"""Batches, queues, idempotency keys and filtered cancels through the Python client, against a
real server (uvicorn in a thread, with a worker), with both twins (see ``test_client.py``)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from client_tasks import register
from test_client import SOON, BlockingTwin, LiveServer, app_settings, unique, wait_until

import underway
from underway import BatchView, Status
from underway.client import BatchPage, JobPage, exception_for

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    url = f"sqlite:///{tmp_path_factory.mktemp('batches') / 'batches.db'}"
    server = LiveServer(register(underway.App(settings=app_settings(url))))
    try:
        with underway.Client(server.api) as client:
            wait_until(client.workers, what="the in-process worker")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def portal() -> Iterator[BlockingPortal]:
    with start_blocking_portal("asyncio") as running:
        yield running


@pytest.fixture(params=["Client", "AsyncClient"])
def client(request: pytest.FixtureRequest, live: LiveServer, portal: BlockingPortal) -> Iterator[Any]:
    """A Client, or an AsyncClient driven through the portal as if it were blocking."""
    if request.param == "Client":
        opened: Any = underway.Client(live.api, timeout=10)
    else:
        opened = BlockingTwin(portal, underway.AsyncClient(live.api, timeout=10))
    try:
        yield opened
    finally:
        opened.close()


def items(count: int, fail_until: Path | None = None, failing: int = 4) -> list[dict[str, Any]]:
    """``count`` items of the ``item`` task; every ``failing``-th one fails until ``fail_until`` exists."""
    made: list[dict[str, Any]] = [{"n": n} for n in range(count)]
    if fail_until is not None:
        for item in made[::failing]:
            item["fail_until"] = str(fail_until)
    return made


def read_export(client: Any, batch_id: str, format: str) -> list[str]:
    return list(client.export(batch_id, format))


# -- submit, read, wait --------------------------------------------------------------------------


def test_submit_batch_then_wait_until_it_ends(client: Any, tmp_path: Path) -> None:
    queue = unique("batch")
    made = client.submit_batch(
        "item", items(12, tmp_path / "fixed"), name="twelve", queue=queue, labels={"kind": "test"}, priority=3
    )
    assert isinstance(made, BatchView)
    assert (made.name, made.task, made.queue, made.labels, made.total) == (
        "twelve",
        "item",
        queue,
        {"kind": "test"},
        12,
    )
    assert made.status == "queued"
    assert made.counts["queued"] == 12
    done = client.wait_batch(made.id, timeout=SOON)
    assert (done.status, done.terminal, done.done, done.percent) == ("partial", True, 12, 100.0)
    assert (done.counts["succeeded"], done.counts["failed"]) == (9, 3)
    assert done.eta_s == 0.0
    assert done.finished_at is not None
    assert client.get_batch(made.id) == done
    jobs = client.batch_items(made.id, limit=500).jobs
    assert {job.priority for job in jobs} == {3}
    assert {job.queue for job in jobs} == {queue}


def test_wait_batch_times_out_on_a_batch_that_does_not_end(client: Any, tmp_path: Path) -> None:
    release = tmp_path / "go"
    made = client.submit_batch("hold", [{"release": str(release)}, {"release": str(release)}])
    with pytest.raises(TimeoutError, match=made.id):
        client.wait_batch(made.id, timeout=0.3, interval=0.05)
    running = wait_until(
        lambda: (view := client.get_batch(made.id)).counts["running"] == 2 and view, what="both items to run"
    )
    assert running.status == "running"
    assert {item.id for item in running.running} == {job.id for job in client.batch_items(made.id).jobs}
    release.touch()
    assert client.wait_batch(made.id, timeout=SOON, interval=0.05).status == "completed"


def test_list_batches_pages_newest_first(client: Any) -> None:
    made = [client.submit_batch("add", [{"a": n}], delay=3600).id for n in range(3)]
    page = client.list_batches(limit=2)
    assert isinstance(page, BatchPage)
    assert [view.id for view in page.batches] == made[:0:-1]
    assert page.next_cursor is not None
    older = client.list_batches(limit=1, cursor=page.next_cursor)
    assert [view.id for view in older.batches] == made[:1]
    for batch_id in made:
        client.cancel_batch(batch_id)


def test_batch_items_by_status_and_page(client: Any, tmp_path: Path) -> None:
    made = client.submit_batch("item", items(8, tmp_path / "fixed"))
    client.wait_batch(made.id, timeout=SOON, interval=0.05)
    failed = client.batch_items(made.id, status="failed")
    assert isinstance(failed, JobPage)
    assert sorted(job.args["n"] for job in failed.jobs) == [0, 4]
    assert all(job.status is Status.FAILED for job in failed.jobs)
    first = client.batch_items(made.id, limit=5)
    assert len(first.jobs) == 5
    assert first.next_cursor is not None
    rest = client.batch_items(made.id, limit=5, cursor=first.next_cursor)
    assert rest.next_cursor is None
    ns = [job.args["n"] for job in first.jobs + rest.jobs]
    assert ns == list(range(7, -1, -1))  # newest first: the last item first
    both = client.batch_items(made.id, status=["failed", Status.SUCCEEDED], limit=500).jobs
    assert len(both) == 8


# -- acting on batches ---------------------------------------------------------------------------


def test_pause_resume_and_cancel_a_batch(client: Any) -> None:
    made = client.submit_batch("add", [{"a": n} for n in range(3)], delay=3600)
    paused = client.pause_batch(made.id)
    assert (paused.status, paused.paused) == ("paused", True)
    resumed = client.resume_batch(made.id)
    assert (resumed.status, resumed.paused) == ("queued", False)
    cancelled = client.cancel_batch(made.id)
    assert (cancelled.status, cancelled.cancelled, cancelled.counts["cancelled"]) == ("cancelled", True, 3)
    assert cancelled.terminal


def test_a_paused_batch_starts_nothing_until_resumed(client: Any) -> None:
    made = client.submit_batch("add", [{"a": n} for n in range(3)], delay=0.5)
    client.pause_batch(made.id)
    with pytest.raises(TimeoutError):  # due after 0.5 s, but paused: still queued after 1.5 s
        client.wait_batch(made.id, timeout=1.5, interval=0.1)
    assert client.get_batch(made.id).counts["queued"] == 3
    client.resume_batch(made.id)
    assert client.wait_batch(made.id, timeout=SOON, interval=0.05).status == "completed"


def test_retry_failed_runs_only_the_failed_items_again(client: Any, tmp_path: Path) -> None:
    fixed = tmp_path / "fixed"
    made = client.submit_batch("item", items(6, fixed, failing=3))
    assert client.wait_batch(made.id, timeout=SOON, interval=0.05).status == "partial"
    fixed.touch()
    assert client.retry_failed(made.id) == 2
    done = client.wait_batch(made.id, timeout=SOON, interval=0.05)
    assert (done.status, done.counts["succeeded"]) == ("completed", 6)
    attempts = {job.args["n"]: job.attempt for job in client.batch_items(made.id).jobs}
    assert attempts == {0: 2, 1: 1, 2: 1, 3: 2, 4: 1, 5: 1}
    assert client.retry_failed(made.id) == 0


# -- exports -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ended(live: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[underway.Job]]:
    """An ended batch of 30 items (every 4th failed), and its jobs in submission order."""
    with underway.Client(live.api) as client:
        made = client.submit_batch("item", items(30, tmp_path_factory.mktemp("export") / "never"))
        client.wait_batch(made.id, timeout=SOON, interval=0.05)
        return made.id, client.batch_items(made.id, limit=500).jobs[::-1]


def test_export_json(client: Any, ended: tuple[str, list[underway.Job]]) -> None:
    batch_id, jobs = ended
    records = json.loads("".join(read_export(client, batch_id, "json")))
    assert [record["id"] for record in records] == [job.id for job in jobs]
    assert records[1] == {
        "id": jobs[1].id,
        "status": "succeeded",
        "attempt": 1,
        "args": {"n": 1, "fail_until": None},
        "result": {"n": 1, "square": 1},
        "error": None,
    }
    assert records[0]["status"] == "failed"
    assert (records[0]["error"]["type"], records[0]["error"]["message"]) == (
        "ValueError",
        "item 0 fails on purpose",
    )


def test_export_ndjson(client: Any, ended: tuple[str, list[underway.Job]]) -> None:
    batch_id, jobs = ended
    text = "".join(read_export(client, batch_id, "ndjson"))
    records = [json.loads(line) for line in text.splitlines()]
    assert text.endswith("\n")
    assert [(r["id"], r["status"]) for r in records] == [(job.id, job.status.value) for job in jobs]


def test_export_csv(client: Any, ended: tuple[str, list[underway.Job]]) -> None:
    batch_id, jobs = ended
    rows = list(csv.DictReader(io.StringIO("".join(read_export(client, batch_id, "csv")), newline="")))
    assert [row["id"] for row in rows] == [job.id for job in jobs]
    assert rows[0]["error_type"] == "ValueError"
    assert rows[0]["result.square"] == ""
    assert (rows[3]["status"], rows[3]["args.n"], rows[3]["result.square"], rows[3]["error_type"]) == (
        "succeeded",
        "3",
        "9",
        "",
    )


def test_export_is_streamed_in_chunks(live: LiveServer) -> None:
    """A large export comes as many chunks, and a reader may stop after the first."""
    with underway.Client(live.api, timeout=10) as client:
        made = client.submit_batch("add", [{"a": n} for n in range(2000)], delay=3600)
        chunks = client.export(made.id, "ndjson")
        first = next(chunks)
        assert first.startswith('{"id": ')
        chunks.close()  # closes the response: the rest is never read
        whole = list(client.export(made.id, "ndjson"))
        assert len(whole) > 1, "the export came as one piece: is it buffered?"
        assert sum(chunk.count("\n") for chunk in whole) == 2000
        client.cancel_batch(made.id)


# -- errors --------------------------------------------------------------------------------------


def test_an_unknown_batch_is_batch_not_found(client: Any) -> None:
    with pytest.raises(underway.BatchNotFound) as caught:
        client.get_batch("no-such-batch")
    assert caught.value.batch_id == "no-such-batch"
    calls = [
        client.batch_items,
        client.cancel_batch,
        client.pause_batch,
        client.resume_batch,
        client.retry_failed,
        client.wait_batch,
        lambda batch_id: list(client.export(batch_id, "csv")),
    ]
    for call in calls:
        with pytest.raises(underway.BatchNotFound, match="no batch with id 'no-such-batch'"):
            call("no-such-batch")


def test_a_wrong_item_is_named_and_nothing_is_stored(client: Any) -> None:
    queue = unique("wrong-item")
    with pytest.raises(underway.InvalidArguments, match="item 1") as caught:
        client.submit_batch("add", [{"a": 1}, {"a": "x"}], queue=queue)
    assert caught.value.details["item"] == 1
    assert client.list(queue=queue).jobs == []
    with pytest.raises(underway.TaskNotFound):
        client.submit_batch("nope", [{}])
    with pytest.raises(underway.InvalidArguments):
        client.submit_batch("add", [])


def test_an_idempotency_key_gives_the_first_job_back(client: Any) -> None:
    key = unique("key")
    first = client.submit("add", {"a": 1}, idempotency_key=key, delay=3600)
    again = client.submit("add", {"a": 1}, idempotency_key=key, delay=3600)
    assert again.id == first.id
    with pytest.raises(underway.IdempotencyConflict) as caught:
        client.submit("add", {"a": 2}, idempotency_key=key)
    assert caught.value.code == "idempotency_conflict"
    client.cancel(first.id)


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (404, "batch_not_found", underway.BatchNotFound),
        (409, "idempotency_conflict", underway.IdempotencyConflict),
        (409, "invalid_state", underway.InvalidTransition),
        (404, "job_not_found", underway.JobNotFound),
    ],
)
def test_exception_for_batch_and_key_errors(status: int, code: str, expected: type[Exception]) -> None:
    exc = exception_for(status, {"code": code, "message": "what went wrong", "details": {"batch_id": "b1"}})
    assert type(exc) is expected
    if isinstance(exc, underway.BatchNotFound):
        assert exc.batch_id == "b1"


# -- cancel by batch or label, queues -----------------------------------------------------------


def test_cancel_all_of_a_batch_or_a_label(client: Any) -> None:
    made = client.submit_batch("add", [{"a": n} for n in range(3)], delay=3600)
    other = client.submit_batch("add", [{"a": 9}], delay=3600)
    assert client.cancel_all(batch=made.id) == 3
    assert client.get_batch(made.id).counts["cancelled"] == 3
    assert client.get_batch(other.id).status == "queued"
    label = unique("team")
    tagged = [client.submit("add", {"a": n}, labels={"team": label}, delay=3600) for n in range(2)]
    untagged = client.submit("add", {"a": 5}, labels={"team": "other"}, delay=3600)
    assert client.cancel_all(label=f"team:{label}") == 2
    assert {client.get(job.id).status for job in tagged} == {Status.CANCELLED}
    assert client.get(untagged.id).status is Status.QUEUED
    client.cancel(untagged.id)
    client.cancel_batch(other.id)


def test_queues_pause_resume_and_limit(client: Any) -> None:
    name = unique("q")
    job = client.submit("add", {"a": 1}, queue=name, delay=3600)
    paused = client.pause_queue(name)
    assert (paused["name"], paused["paused"], paused["depth"]) == (name, True, 1)
    listed = {queue["name"]: queue for queue in client.queues()}
    assert listed[name] == paused | {"oldest_queued_age_s": listed[name]["oldest_queued_age_s"]}
    limited = client.limit_queue(name, 2)
    assert (limited["paused"], limited["concurrency"]) == (True, 2)
    assert client.limit_queue(name, None)["concurrency"] is None
    assert client.resume_queue(name)["paused"] is False
    with pytest.raises(underway.InvalidArguments):
        client.limit_queue(name, 0)
    client.cancel(job.id)


def test_a_paused_queue_starts_nothing_until_resumed(client: Any) -> None:
    name = unique("paused")
    client.pause_queue(name)
    job = client.submit("add", {"a": 2}, queue=name)
    with pytest.raises(TimeoutError):
        client.wait(job.id, timeout=1.0)
    client.resume_queue(name)
    assert client.wait(job.id, timeout=SOON).result == 2
