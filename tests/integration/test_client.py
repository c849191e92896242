"""The Python client (``Client``, ``AsyncClient``) and the CLI's ``--server``, against a real server.

A uvicorn server runs ``underway.web.create_app(app, with_worker=True)`` in a thread of this
process, on 127.0.0.1 port 0 and a SQLite file, with the tasks of ``client_tasks.py``. Every
client test runs twice: with :class:`underway.Client`, and with :class:`underway.AsyncClient`
driven from the test through an anyio portal (its event loop runs in a thread). The restart
test runs the server and a worker as subprocesses, so that the job goes on while the server
is killed and started again.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn
from anyio.from_thread import BlockingPortal, start_blocking_portal
from client_tasks import register

import underway
from underway import EventType, Job, Status
from underway.auth import Principal
from underway.client import exception_for
from underway.exceptions import BatchTooLarge, Forbidden, TooManyRequests, Unauthenticated
from underway.web import create_app
from underway.web.server import uvicorn_config

pytestmark = pytest.mark.timeout(30)

HERE = Path(__file__).resolve().parent
#: How long a condition that should hold "at once" may take on a slow machine.
SOON = 10.0
UNDERWAY = (sys.executable, "-m", "underway")


# -- a live server in a thread ---------------------------------------------------------------------


class LiveServer:
    """uvicorn serving ``create_app(app, with_worker=True)`` in a daemon thread, port 0."""

    def __init__(self, app: underway.App, **create: Any) -> None:
        self.app = app
        settings = app.settings.replace(port=0)
        self.server = uvicorn.Server(uvicorn_config(create_app(app, with_worker=True, **create), settings))
        self.thread = threading.Thread(target=self.server.run, name="test-uvicorn", daemon=True)
        self.thread.start()
        wait_until(lambda: self.server.started or not self.thread.is_alive(), what="uvicorn to start")
        assert self.server.started, "the test server did not start"
        self.port: int = self.server.servers[0].sockets[0].getsockname()[1]

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        assert not self.thread.is_alive(), "the test server did not stop"


def wait_until(predicate: Callable[[], Any], timeout: float = SOON, *, what: str) -> Any:
    """Poll ``predicate`` until it returns something true, and return that; fail on timeout."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)
    return value


def app_settings(url: str) -> underway.Settings:
    return underway.Settings(
        url=url,
        lease_timeout=2.0,
        cancel_grace=0.5,
        shutdown_grace=1.0,
        progress_interval=0.02,
        sweep_interval=0.2,
        concurrency=8,
    )


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for the module; each test uses its own jobs (and queues, where it counts)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('client') / 'client.db'}"
    server = LiveServer(register(underway.App(settings=app_settings(url))))
    try:
        with underway.Client(server.api) as client:
            wait_until(client.workers, what="the in-process worker")
        yield server
    finally:
        server.stop()


# -- both twins, driven the same way -------------------------------------------------------------


class BlockingTwin:
    """An :class:`underway.AsyncClient` whose calls the test makes as if it were blocking: each
    coroutine runs on the portal's event loop, and ``watch()`` is iterated one event at a time."""

    def __init__(self, portal: BlockingPortal, client: underway.AsyncClient) -> None:
        self._portal = portal
        self._client = client

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if inspect.isasyncgenfunction(attribute):
            return lambda *args, **kwargs: self._iterate(attribute(*args, **kwargs))
        if inspect.iscoroutinefunction(attribute):
            return lambda *args, **kwargs: self._portal.call(functools.partial(attribute, *args, **kwargs))
        return attribute

    def _iterate(self, events: Any) -> Iterator[Any]:
        try:
            while True:
                try:
                    yield self._portal.call(events.__anext__)
                except StopAsyncIteration:
                    return
        finally:
            self._portal.call(events.aclose)

    def close(self) -> None:
        self._portal.call(self._client.aclose)


@pytest.fixture(scope="module")
def portal() -> Iterator[BlockingPortal]:
    with start_blocking_portal("asyncio") as running:
        yield running


Connect = Callable[..., Any]


@pytest.fixture(params=["Client", "AsyncClient"])
def connect(request: pytest.FixtureRequest, live: LiveServer, portal: BlockingPortal) -> Iterator[Connect]:
    """``connect(base_url=live API, **options)`` → a Client, or an AsyncClient behind a BlockingTwin."""
    opened: list[Any] = []

    def connector(base_url: str | None = None, **options: Any) -> Any:
        if request.param == "Client":
            client: Any = underway.Client(base_url or live.api, **options)
        else:
            client = BlockingTwin(portal, underway.AsyncClient(base_url or live.api, **options))
        opened.append(client)
        return client

    try:
        yield connector
    finally:
        for client in opened:
            client.close()


@pytest.fixture
def client(connect: Connect) -> Any:
    return connect(timeout=10.0)


def until_status(client: Any, job_id: str, *statuses: Status, timeout: float = SOON) -> Job:
    """Long-poll the job's status events until it is in one of ``statuses``; return the job."""
    deadline = time.monotonic() + timeout
    while True:
        job: Job = client.get(job_id)
        if job.status in statuses:
            return job
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"job {job_id} is {job.status.value}, not {statuses} after {timeout:g} s")
        client.events(job_id, after=job.last_seq, wait=min(remaining, 2.0), types=["status"])


def unique(prefix: str) -> str:
    return f"{prefix}-{time.monotonic_ns()}"


# -- submit, get, list, wait ---------------------------------------------------------------------


def test_submit_returns_the_queued_job_with_its_options(client: Any) -> None:
    queue = unique("options")
    job = client.submit(
        "add",
        {"a": 1, "b": 2},
        queue=queue,
        priority=7,
        max_attempts=3,
        timeout=9.5,
        labels={"team": "client"},
    )
    assert isinstance(job, Job)
    assert (job.task, job.args, job.queue, job.status) == ("add", {"a": 1, "b": 2}, queue, Status.QUEUED)
    assert (job.priority, job.max_attempts, job.timeout, job.labels) == (7, 3, 9.5, {"team": "client"})
    assert job.last_seq == 1
    assert abs(job.created_at - time.time()) < 60
    done = client.wait(job.id, timeout=SOON)
    assert (done.status, done.result, done.attempt) == (Status.SUCCEEDED, 3, 1)
    assert done.finished_at is not None
    assert client.get(job.id) == done


def test_job_values_round_trip_their_wire_shape(client: Any) -> None:
    job = client.wait(client.submit("add", {"a": 2}).id, timeout=SOON)
    assert Job.from_dict(job.to_dict()) == job
    events = client.events(job.id).events
    assert [underway.Event.from_dict(e.to_dict()) for e in events] == events


def test_submit_later_by_run_at_or_delay(client: Any) -> None:
    at = datetime.now(UTC) + timedelta(hours=1)
    by_time = client.submit("add", {"a": 1}, run_at=at)
    assert abs(by_time.run_at - at.timestamp()) < 0.002
    by_epoch = client.submit("add", {"a": 1}, run_at=at.timestamp())
    assert abs(by_epoch.run_at - at.timestamp()) < 0.002
    by_delay = client.submit("add", {"a": 1}, delay=3600)
    assert by_delay.run_at - by_delay.created_at == pytest.approx(3600, abs=0.01)
    for job in (by_time, by_epoch, by_delay):
        assert client.cancel(job.id).status is Status.CANCELLED


def test_list_filters_and_pages_newest_first(client: Any) -> None:
    queue = unique("list")
    ids = [client.submit("add", {"a": i}, queue=queue, delay=3600, labels={"n": str(i)}).id for i in range(3)]
    jobs, cursor = client.list(queue=queue, limit=2)
    assert [job.id for job in jobs] == ids[:0:-1]
    assert cursor is not None
    older = client.list(queue=queue, limit=2, cursor=cursor)
    assert [job.id for job in older.jobs] == ids[:1]
    assert older.next_cursor is None
    assert [j.id for j in client.list(queue=queue, label="n:1").jobs] == [ids[1]]
    assert [j.id for j in client.list(queue=queue, task="add", status="queued").jobs] == ids[::-1]
    assert client.list(queue=queue, status=[Status.RUNNING, "succeeded"]).jobs == []
    assert client.cancel_all(queue=queue) == 3


def test_wait_times_out_on_a_job_that_does_not_end(client: Any, tmp_path: Path) -> None:
    job = client.submit("hold", {"release": str(tmp_path / "go")})
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=job.id):
        client.wait(job.id, timeout=0.3)
    assert time.monotonic() - started < 5
    (tmp_path / "go").touch()
    assert client.wait(job.id, timeout=SOON).status is Status.SUCCEEDED


# -- events, long polls --------------------------------------------------------------------------


def test_events_after_a_seq_and_of_some_types(client: Any) -> None:
    job = client.wait(client.submit("chatter", {"lines": 20}).id, timeout=SOON)
    page = client.events(job.id)
    assert [e.seq for e in page.events] == list(range(1, job.last_seq + 1))
    assert (page.next_after, page.status) == (job.last_seq, Status.SUCCEEDED)
    assert all(e.job_id == job.id for e in page.events)
    later = client.events(job.id, after=5, limit=3)
    assert [e.seq for e in later.events] == [6, 7, 8]
    assert later.next_after == 8
    statuses = client.events(job.id, types=[EventType.STATUS])
    assert [e.data["status"] for e in statuses.events] == ["queued", "running", "succeeded"]
    logs = client.events(job.id, types=["log"])
    assert [e.data["message"] for e in logs.events] == [f"line {i}" for i in range(1, 21)]


def test_events_long_poll_answers_when_an_event_arrives(client: Any, tmp_path: Path) -> None:
    job = client.submit("hold", {"release": str(tmp_path / "go")}, delay=0.3)
    started = time.monotonic()
    page = client.events(job.id, after=job.last_seq, wait=20)
    assert page.events
    assert page.events[0].seq == job.last_seq + 1
    assert time.monotonic() - started < 10
    (tmp_path / "go").touch()
    client.wait(job.id, timeout=SOON)


def test_events_long_poll_of_an_ended_job_answers_at_once(client: Any) -> None:
    job = client.wait(client.submit("add", {"a": 1}).id, timeout=SOON)
    started = time.monotonic()
    page = client.events(job.id, after=job.last_seq, wait=20)
    assert (page.events, page.next_after, page.status) == ([], job.last_seq, Status.SUCCEEDED)
    assert time.monotonic() - started < 5


# -- changing jobs -------------------------------------------------------------------------------


def test_cancel_a_running_job(client: Any, tmp_path: Path) -> None:
    job = client.submit("hold", {"release": str(tmp_path / "never")})
    until_status(client, job.id, Status.RUNNING)
    asked = client.cancel(job.id)
    assert asked.cancel_requested or asked.status is Status.CANCELLED
    assert client.wait(job.id, timeout=SOON).status is Status.CANCELLED
    with pytest.raises(underway.InvalidTransition, match="already ended"):
        client.cancel(job.id)


def test_cancel_all_that_match(client: Any) -> None:
    queue = unique("cancel-all")
    kept = client.submit("add", {"a": 1}, queue=queue, delay=3600)
    for _ in range(2):
        client.submit("chatter", {"lines": 1}, queue=queue, delay=3600)
    assert client.cancel_all(queue=queue, task="chatter", status=["queued"]) == 2
    assert client.cancel_all(queue=queue, task="chatter") == 0
    assert len(client.list(queue=queue, status="cancelled").jobs) == 2
    assert client.get(kept.id).status is Status.QUEUED
    assert client.cancel_all(queue=queue) == 1


def test_list_cancel_all_and_retry_all_by_search_and_ids(client: Any) -> None:
    queue = unique("search")
    wanted = [client.submit("chatter", {"lines": 7 + i}, queue=queue, delay=3600).id for i in range(2)]
    other = client.submit("add", {"a": 99}, queue=queue, delay=3600).id
    assert [job.id for job in client.list(queue=queue, q='"LINES":').jobs] == wanted[::-1]
    assert [job.id for job in client.list(q=other).jobs] == [other]
    assert [job.id for job in client.list(queue=queue, ids=[other, wanted[0]]).jobs] == [other, wanted[0]]
    assert client.list(queue=queue, q="lines", ids=[other]).jobs == []
    assert client.cancel_all(queue=queue, ids=[wanted[0]], q="add") == 0
    assert client.cancel_all(queue=queue, q="lines") == 2
    with pytest.raises(underway.InvalidArguments, match="ids"):
        client.cancel_all(ids=[])  # an empty selection is not "every job"
    assert client.retry_all(queue=queue, ids=[wanted[1]]) == 1
    assert until_status(client, wanted[1], Status.SUCCEEDED).attempt == 1
    assert client.retry_all(queue=queue, status=["succeeded"], q="lines") == 1
    with pytest.raises(underway.InvalidArguments, match="status"):
        client.retry_all(status=["queued"])
    assert client.retry_all(queue=queue) == 1  # what is left: the first, cancelled
    for job_id in wanted:
        until_status(client, job_id, Status.SUCCEEDED)
    assert client.get(wanted[1]).attempt == 2
    assert client.get(other).status is Status.QUEUED
    assert client.cancel_all(queue=queue) == 1


def test_answer_a_waiting_job(client: Any) -> None:
    job = client.submit("ask", {"question": "Go on?"})
    waiting = until_status(client, job.id, Status.WAITING)
    assert waiting.prompt is not None
    assert waiting.prompt["message"] == "Go on?"
    with pytest.raises(underway.InvalidArguments, match="must be one of") as caught:
        client.answer(job.id, "maybe")
    assert caught.value.details == {"options": ["yes", "no"]}
    with pytest.raises(underway.InvalidTransition, match="not 'other'"):
        client.answer(job.id, "yes", key="other")
    answered = client.answer(job.id, "yes", key=waiting.prompt["key"])
    assert answered.answers == {waiting.prompt["key"]: "yes"}
    done = client.wait(job.id, timeout=SOON)
    assert done.result == {"answer": "yes"}
    with pytest.raises(underway.InvalidTransition, match="not waiting"):
        client.answer(job.id, "no")


def test_retry_a_failed_job(client: Any) -> None:
    failed = client.wait(client.submit("boom", {"message": "bad luck"}).id, timeout=SOON)
    assert failed.status is Status.FAILED
    assert failed.error is not None
    assert (failed.error["type"], failed.error["message"]) == ("ValueError", "bad luck")
    again = client.retry(failed.id)
    assert (again.id, again.status) == (failed.id, Status.QUEUED)
    assert again.last_seq > failed.last_seq
    done = client.wait(failed.id, timeout=SOON)
    assert (done.status, done.attempt) == (Status.FAILED, 2)


def test_retry_refuses_an_unfinished_job(client: Any) -> None:
    job = client.submit("add", {"a": 1}, delay=3600)
    with pytest.raises(underway.InvalidTransition, match="only a finished job") as caught:
        client.retry(job.id)
    assert caught.value.details == {"status": "queued"}
    client.cancel(job.id)


def test_delete_a_finished_job(client: Any) -> None:
    waiting = client.submit("add", {"a": 1}, delay=3600)
    with pytest.raises(underway.InvalidTransition, match="cancel it"):
        client.delete(waiting.id)
    client.cancel(waiting.id)
    assert client.delete(waiting.id) is None
    with pytest.raises(underway.JobNotFound):
        client.get(waiting.id)


# -- the service ---------------------------------------------------------------------------------


def test_tasks_workers_and_health(client: Any) -> None:
    tasks = {task["name"]: task for task in client.tasks()}
    assert sorted(tasks) == ["add", "ask", "boom", "chatter", "hold", "item"]
    assert tasks["add"]["schema"]["required"] == ["a"]
    (worker,) = client.workers()
    assert worker["pid"] == os.getpid()
    assert client.health() == {"ok": True, "store": "ok"}
    me = client.me()
    assert (me["auth"], me["role"], me["via"]) == (False, "admin", "anonymous")
    assert me["can"]["admin"] is True


def test_stats_count_the_jobs_that_finished_in_the_window(client: Any) -> None:
    before = sum(client.stats()["finished"]["succeeded"])
    client.wait(client.submit("add", {"a": 2}).id, timeout=SOON)
    after = client.stats(window="15m")
    assert (after["window_s"], after["bucket_s"], len(after["buckets"])) == (900.0, 15, 60)
    assert sum(after["finished"]["succeeded"]) >= before + 1
    assert any(p is not None for p in after["latency"]["p99"])
    assert set(after["depth"]) == {"queued", "running", "waiting"}
    assert client.stats(window=120, owner="someone")["bucket_s"] == 2
    with pytest.raises(underway.InvalidArguments, match="window"):
        client.stats(window="8d")


# -- errors --------------------------------------------------------------------------------------


def test_errors_map_back_to_underways_exceptions(client: Any) -> None:
    with pytest.raises(underway.JobNotFound) as missing:
        client.get("no-such-job")
    assert missing.value.job_id == "no-such-job"
    for call in (client.cancel, client.retry, client.delete, client.events, lambda i: client.answer(i, 1)):
        with pytest.raises(underway.JobNotFound):
            call("no-such-job")
    with pytest.raises(underway.TaskNotFound, match="no task named 'nope'") as unknown:
        client.submit("nope")
    assert unknown.value.details == {"task": "nope"}
    with pytest.raises(underway.InvalidArguments, match="a: Input should be a valid integer"):
        client.submit("add", {"a": "x"})
    with pytest.raises(underway.InvalidArguments, match="priority"):
        client.submit("add", {"a": 1}, priority=10**9)
    with pytest.raises(underway.InvalidArguments, match="unknown event types"):
        client.events(client.submit("add", {"a": 1}).id, types=["nope"])


def test_a_wrong_base_url_says_so(connect: Connect, live: LiveServer) -> None:
    client = connect(f"http://127.0.0.1:{live.port}")
    with pytest.raises(underway.ServerError, match="underway's API") as caught:
        client.get("x")  # /jobs/x is the dashboard's page of that job: HTML
    assert (caught.value.status, caught.value.code) == (200, "not_json")
    with pytest.raises(underway.ServerError, match="underway's API") as caught:
        client.tasks()  # /tasks: no such page or route
    assert (caught.value.status, caught.value.code) == (404, "not_found")


def test_an_unreachable_server_is_a_server_error(connect: Connect) -> None:
    client = connect(f"http://127.0.0.1:{free_port()}/api")
    with pytest.raises(underway.ServerError, match="cannot reach the underway server") as caught:
        client.health()
    assert (caught.value.status, caught.value.code) == (None, "unreachable")
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


def test_a_server_that_does_not_answer_times_out(connect: Connect) -> None:
    with socket.create_server(("127.0.0.1", 0)) as mute:  # accepts connections, never answers
        client = connect(f"http://127.0.0.1:{mute.getsockname()[1]}/api", timeout=0.2)
        with pytest.raises(underway.ServerError, match="did not answer in time") as caught:
            client.get("x")
    assert caught.value.code == "timeout"


def test_headers_go_with_every_request(connect: Connect, tmp_path: Path) -> None:
    async def authenticate(conn: Any) -> Principal | None:
        return Principal(owner="tester") if conn.headers.get("authorization") == "Bearer s3cret" else None

    app = register(underway.App(settings=app_settings(f"sqlite:///{tmp_path / 'auth.db'}")))
    server = LiveServer(app, authenticate=authenticate)
    try:
        with pytest.raises(Unauthenticated, match="own login found no user") as caught:
            connect(server.api).tasks()
        assert caught.value.code == "unauthenticated"
        client = connect(server.api, headers={"Authorization": "Bearer s3cret"})
        done = client.wait(client.submit("add", {"a": 4}).id, timeout=SOON)
        assert done.result == 4
        assert [e.seq for e in client.watch(done.id)] == list(range(1, done.last_seq + 1))
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (404, "job_not_found", underway.JobNotFound),
        (409, "invalid_state", underway.InvalidTransition),
        (409, "conflict", underway.InvalidTransition),
        (422, "unknown_task", underway.TaskNotFound),
        (422, "invalid_arguments", underway.InvalidArguments),
        (422, "invalid_request", underway.InvalidArguments),
        (400, "invalid_config", underway.ServerError),
        (401, "unauthenticated", Unauthenticated),
        (403, "forbidden", Forbidden),
        (413, "batch_too_large", BatchTooLarge),
        (413, "body_too_large", underway.ServerError),
        (429, "too_many_requests", TooManyRequests),
        (503, "store_error", underway.ServerError),
        (500, "error", underway.ServerError),
    ],
)
def test_exception_for_each_error_body(status: int, code: str, expected: type[Exception]) -> None:
    exc = exception_for(status, {"code": code, "message": "what went wrong", "details": {"id": "j1"}}, "j1")
    assert type(exc) is expected
    if isinstance(exc, underway.ServerError):
        assert (exc.status, exc.code, exc.message, exc.details) == (
            status,
            code,
            "what went wrong",
            {"id": "j1"},
        )
    elif isinstance(exc, underway.JobNotFound):
        assert exc.job_id == "j1"
    else:
        assert (str(exc), exc.details) == ("what went wrong", {"id": "j1"})


def test_a_429_carries_its_retry_after() -> None:
    error = {"code": "too_many_requests", "message": "slow down"}
    told = exception_for(429, error, retry_after=7.0)
    untold = exception_for(429, error)
    assert isinstance(told, TooManyRequests)
    assert isinstance(untold, TooManyRequests)
    assert (told.retry_after, untold.retry_after) == (7.0, 1.0)


# -- watch ---------------------------------------------------------------------------------------


def assert_whole_history(client: Any, job_id: str, seen: list[underway.Event], final: Status) -> None:
    """``seen`` is every event of the job, once, in order (seq 1..n), ending at ``final``."""
    stored = client.events(job_id, limit=10_000).events
    assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
    assert seen == stored
    assert seen[-1].status is final


def test_watch_yields_every_event_once_in_order(client: Any) -> None:
    job = client.submit("chatter", {"lines": 300})
    seen = list(client.watch(job.id))
    assert len(seen) == 303
    assert_whole_history(client, job.id, seen, Status.SUCCEEDED)


def test_watch_follows_a_live_job_to_its_end(client: Any, tmp_path: Path) -> None:
    job = client.submit("hold", {"release": str(tmp_path / "go")})
    seen = []
    for event in client.watch(job.id):
        seen.append(event)
        if event.data.get("message") == "tick 5":
            (tmp_path / "go").touch()
    assert_whole_history(client, job.id, seen, Status.SUCCEEDED)
    assert seen[-1].data["result"] >= 5


def test_watch_after_a_seq_and_of_an_ended_job(client: Any) -> None:
    job = client.wait(client.submit("chatter", {"lines": 5}).id, timeout=SOON)
    assert [e.seq for e in client.watch(job.id, after=4)] == list(range(5, job.last_seq + 1))
    assert list(client.watch(job.id, after=job.last_seq)) == []  # the server answers 204


def test_watch_of_an_unknown_job_raises(client: Any) -> None:
    with pytest.raises(underway.JobNotFound):
        list(client.watch("no-such-job"))


def test_watch_stops_when_the_caller_does(client: Any, tmp_path: Path) -> None:
    job = client.submit("hold", {"release": str(tmp_path / "go")})
    events = client.watch(job.id)
    assert next(events).seq == 1
    events.close()
    (tmp_path / "go").touch()
    assert client.wait(job.id, timeout=SOON).status is Status.SUCCEEDED


def test_watch_gives_up_after_reconnect_timeout(connect: Connect) -> None:
    client = connect(f"http://127.0.0.1:{free_port()}/api")
    started = time.monotonic()
    with pytest.raises(underway.ServerError, match=r"could not reconnect .* within 0.5 s") as caught:
        list(client.watch("any", reconnect_timeout=0.5))
    assert 0.5 <= time.monotonic() - started < 3
    assert caught.value.code == "unreachable"


class CuttingTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """A real HTTP transport that cuts the first ``cuts`` event streams after ``keep`` bytes:
    with a read error (a dropped connection), or by ending them (a proxy that closed them)."""

    def __init__(self, cuts: int, keep: int, *, error: bool) -> None:
        self.cuts, self.keep, self.error = cuts, keep, error
        self.resumed_from: list[str | None] = []
        self._sync = httpx.HTTPTransport()
        self._async = httpx.AsyncHTTPTransport()

    def _cut_this(self, request: httpx.Request) -> bool:
        if not request.url.path.endswith("/stream"):
            return False
        self.resumed_from.append(request.headers.get("last-event-id"))
        return len(self.resumed_from) <= self.cuts

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._sync.handle_request(request)
        if self._cut_this(request):
            response.stream = _CutStream(response.stream, self.keep, self.error)
        return response

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._async.handle_async_request(request)
        if self._cut_this(request):
            response.stream = _CutStream(response.stream, self.keep, self.error)
        return response

    def close(self) -> None:
        self._sync.close()

    async def aclose(self) -> None:
        await self._async.aclose()


class _CutStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    def __init__(self, inner: Any, keep: int, error: bool) -> None:
        self.inner, self.keep, self.error = inner, keep, error

    def _end(self) -> None:
        if self.error:
            raise httpx.ReadError("connection cut by the test")

    def __iter__(self) -> Iterator[bytes]:
        sent = 0
        for chunk in self.inner:
            if sent + len(chunk) >= self.keep:
                yield chunk[: self.keep - sent]
                self._end()
                return
            sent += len(chunk)
            yield chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        sent = 0
        async for chunk in self.inner:
            if sent + len(chunk) >= self.keep:
                yield chunk[: self.keep - sent]
                self._end()
                return
            sent += len(chunk)
            yield chunk

    def close(self) -> None:
        self.inner.close()

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize("error", [True, False], ids=["dropped", "closed"])
def test_watch_resumes_after_a_cut_stream(connect: Connect, client: Any, error: bool) -> None:
    job = client.wait(client.submit("chatter", {"lines": 100}).id, timeout=SOON)
    transport = CuttingTransport(cuts=3, keep=2500, error=error)
    seen = list(connect(transport=transport).watch(job.id))
    assert_whole_history(client, job.id, seen, Status.SUCCEEDED)
    resumed = [int(value or 0) for value in transport.resumed_from]
    assert len(resumed) == 4
    assert resumed[0] == 0
    assert resumed == sorted(resumed)
    assert 0 < resumed[1] < resumed[2] < resumed[3] < job.last_seq


@pytest.mark.anyio
async def test_async_client_natively(live: LiveServer, tmp_path: Path) -> None:
    """The AsyncClient on the test's own event loop: context manager, calls and watch()."""
    async with underway.AsyncClient(live.api, timeout=10) as client:
        job = await client.submit("hold", {"release": str(tmp_path / "go")})
        seen = []
        async with contextlib.aclosing(client.watch(job.id)) as events:
            async for event in events:
                seen.append(event)
                if event.data.get("message") == "tick 3":
                    await anyio.Path(tmp_path / "go").touch()
        assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
        assert (await client.wait(job.id, timeout=SOON)).status is Status.SUCCEEDED
        async with contextlib.aclosing(client.watch(job.id)) as again:
            first = await again.__anext__()
        assert first == seen[0]


# -- watch across a server restart ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def subprocess_env(url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNDERWAY_")}
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")])),
        PYTHONUNBUFFERED="1",
        COLUMNS="200",
        NO_COLOR="1",
        TERM="dumb",
    )
    if url is not None:
        env["UNDERWAY_URL"] = url
    return env


class Processes:
    """``underway`` subprocesses of one test, output in files, all killed at the end."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd, self.env = cwd, env
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with (self.cwd / f"{name}.out").open("ab") as out:
            proc = subprocess.Popen(
                [*UNDERWAY, *args],
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        self.started.append(proc)
        return proc

    def output(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.read_text(errors='replace')}" for p in self.cwd.glob("*.out"))

    def kill_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


@contextmanager
def processes(tmp_path: Path, env: dict[str, str]) -> Iterator[Processes]:
    procs = Processes(tmp_path, env)
    try:
        yield procs
    finally:
        procs.kill_all()


def start_server(procs: Processes, port: int) -> subprocess.Popen[bytes]:
    """``underway server`` (no worker of its own) with the test tasks, healthy on ``port``."""
    server = procs.start("server", "--app", "client_tasks:app", "server", "--port", str(port))

    def healthy() -> bool:
        assert server.poll() is None, f"the server exited ({server.returncode})\n{procs.output()}"
        try:
            with underway.Client(f"http://127.0.0.1:{port}/api", timeout=1) as probe:
                return bool(probe.health()["ok"])
        except underway.ServerError:
            return False

    wait_until(healthy, 20, what="the server subprocess to answer")
    return server


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize("twin", ["Client", "AsyncClient"])
def test_watch_survives_a_server_restart(tmp_path: Path, portal: BlockingPortal, twin: str) -> None:
    url = f"sqlite:///{tmp_path / 'restart.db'}"
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    release = tmp_path / "release"
    with processes(tmp_path, subprocess_env(url)) as procs:
        server = start_server(procs, port)
        procs.start("worker", "--app", "client_tasks:app", "worker")
        client: Any = (
            underway.Client(api) if twin == "Client" else BlockingTwin(portal, underway.AsyncClient(api))
        )
        try:
            wait_until(client.workers, 20, what="the worker subprocess")
            job = client.submit("hold", {"release": str(release)})
            seen: list[underway.Event] = []
            back_at: float | None = None
            for event in client.watch(job.id):
                seen.append(event)
                if back_at is None and event.data.get("message") == "tick 5":
                    server.send_signal(signal.SIGKILL)
                    server.wait(10)
                    server = start_server(procs, port)  # the job runs on in the worker meanwhile
                    back_at = time.time()
                elif back_at is not None and event.at > back_at + 0.1 and not release.exists():
                    release.touch()  # this event came through the new connection
            assert back_at is not None
            assert release.exists(), "no event came after the restart"
            assert_whole_history(client, job.id, seen, Status.SUCCEEDED)
            assert seen[-1].data["result"] == len(seen) - 3  # queued, running, ticks…, succeeded
        finally:
            client.close()


# -- the command line through --server -----------------------------------------------------------


def cli(live: LiveServer, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``underway --server <live API> ARGS`` in a fresh interpreter, with no store of its own."""
    return subprocess.run(
        [*UNDERWAY, "--server", live.api, *args],
        cwd=HERE,
        env=env or subprocess_env(url="sqlite:////nonexistent/never-used.db"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def cli_json(live: LiveServer, *args: str) -> Any:
    done = cli(live, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def api(live: LiveServer) -> Iterator[underway.Client]:
    with underway.Client(live.api, timeout=10) as client:
        yield client


@pytest.mark.slow
def test_cli_submit_jobs_and_show_through_the_server(live: LiveServer, api: underway.Client) -> None:
    queue = unique("cli")
    submitted = cli_json(live, "submit", "add", "--args", '{"a": 2, "b": 3}', "--queue", queue)
    assert (submitted["task"], submitted["status"], submitted["queue"]) == ("add", "queued", queue)
    job = api.wait(submitted["id"], timeout=SOON)
    assert sorted(submitted) == sorted(job.to_dict())
    listed = cli_json(live, "jobs", "--queue", queue, "--status", "succeeded")
    assert listed == {"jobs": [job.to_dict()]}
    shown = cli_json(live, "show", job.id, "--events")
    assert shown["events"] == [e.to_dict() for e in api.events(job.id).events]
    assert {k: v for k, v in shown.items() if k != "events"} == job.to_dict()
    text = cli(live, "show", job.id)
    assert text.returncode == 0
    assert job.id in text.stdout
    assert "succeeded" in text.stdout
    table = cli(live, "jobs", "--queue", queue)
    assert table.returncode == 0
    assert job.id in table.stdout


@pytest.mark.slow
def test_cli_errors_through_the_server(live: LiveServer) -> None:
    unknown = cli(live, "show", "no-such-job")
    assert unknown.returncode == 1
    assert "no job with id 'no-such-job'" in unknown.stderr
    no_task = cli(live, "submit", "nope")
    assert no_task.returncode == 1
    assert "no task named 'nope'" in no_task.stderr
    away = subprocess.run(
        [*UNDERWAY, "jobs"],
        cwd=HERE,
        env={**subprocess_env(), "UNDERWAY_SERVER": f"http://127.0.0.1:{free_port()}/api"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert away.returncode == 1
    assert "cannot reach the underway server" in away.stderr


@pytest.mark.slow
def test_cli_cancel_answer_and_retry_through_the_server(live: LiveServer, api: underway.Client) -> None:
    queue = unique("cli-cancel")
    first, second, third = (api.submit("add", {"a": 1}, queue=queue, delay=3600) for _ in range(3))
    cancelled = cli(live, "cancel", first.id)
    assert (cancelled.returncode, cancelled.stdout) == (0, f"{first.id} cancelled\n")
    assert cli_json(live, "cancel", "--all", "--queue", queue) == {"cancelled": 2}
    assert api.get(third.id).status is Status.CANCELLED
    again = cli(live, "cancel", second.id)
    assert again.returncode == 1
    assert "already ended" in again.stderr

    asking = api.submit("ask")
    until_status(api, asking.id, Status.WAITING)
    answered = cli_json(live, "answer", asking.id, "yes")
    assert answered["id"] == asking.id
    assert api.wait(asking.id, timeout=SOON).result == {"answer": "yes"}
    late = cli(live, "answer", asking.id, "no")
    assert late.returncode == 1
    assert "not waiting" in late.stderr

    failed = api.wait(api.submit("boom").id, timeout=SOON)
    retried = cli(live, "retry", failed.id)
    assert (retried.returncode, retried.stdout) == (0, f"{failed.id} queued\n")
    assert api.wait(failed.id, timeout=SOON).attempt == 2
    assert cli_json(live, "retry", failed.id)["status"] == "queued"
    api.wait(failed.id, timeout=SOON)


@pytest.mark.slow
def test_cli_watch_through_the_server(live: LiveServer, api: underway.Client, tmp_path: Path) -> None:
    ok = cli(live, "submit", "chatter", "--args", '{"lines": 3}', "--watch")
    assert ok.returncode == 0, ok.stderr
    assert "succeeded 3" in ok.stdout
    failed = api.wait(api.submit("boom", {"message": "kaput"}).id, timeout=SOON)
    watched = cli(live, "watch", failed.id)
    assert watched.returncode == 1
    assert "failed kaput" in watched.stdout
    held = api.submit("hold", {"release": str(tmp_path / "go")})
    watcher = subprocess.Popen(
        [*UNDERWAY, "--server", live.api, "watch", held.id],
        cwd=HERE,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        until_status(api, held.id, Status.RUNNING)
        (tmp_path / "go").touch()
        out, err = watcher.communicate(timeout=20)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.communicate()
    assert watcher.returncode == 0, err
    assert "succeeded" in out
