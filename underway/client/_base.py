"""The I/O-free half of the client, shared by :class:`~underway.Client` and
:class:`~underway.AsyncClient`: each request as a :class:`Call` (what to send, how to read the
answer), error bodies mapped back to underway's exceptions, ``wait()`` as a plan of calls, and
the state of one ``watch()`` (:class:`Stream`: what to yield, when to reconnect, when to give up).

A plan (``wait()``, ``wait_batch()``) is a generator that yields what to do next, a :class:`Call`
to send or a number of seconds to sleep, and receives the answers; each twin drives it with its
own I/O.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Literal, NamedTuple, TypeVar
from urllib.parse import quote

import httpx
from httpx_sse import ServerSentEvent

from ..auth import StreamToken
from ..batches import BatchView
from ..events import Event, EventType
from ..exceptions import (
    BatchNotFound,
    BatchTooLarge,
    Forbidden,
    IdempotencyConflict,
    InvalidArguments,
    InvalidTransition,
    JobNotFound,
    ServerError,
    TaskNotFound,
    TooManyRequests,
    Unauthenticated,
    UnderwayError,
)
from ..jobs import Job, Status
from ..timefmt import from_iso, to_iso

T = TypeVar("T")
Json = dict[str, Any]
Params = list[tuple[str, str | int | float | bool | None]]
#: The formats of a batch's export.
ExportFormat = Literal["json", "ndjson", "csv"]

DEFAULT_BASE_URL = "http://127.0.0.1:8000/api"
#: The variable an API key is read from when none is given.
API_KEY_VARIABLE = "UNDERWAY_API_KEY"
#: Sent with every request: a change with no JSON body (``cancel``) passes the server's check
#: against cross-site forms even when no key goes with it.
REQUESTED_WITH = "underway-client"
#: Seconds one long poll of ``wait()`` lasts (the server allows up to 60; proxies often cut at 60).
LONG_POLL_WAIT = 25.0
#: A stream that sends nothing for this long is taken as dead (the server pings every 15 s).
STREAM_READ_TIMEOUT = 45.0
#: ``watch()`` gives up after this many seconds of failed reconnections.
RECONNECT_TIMEOUT = 60.0
FIRST_RECONNECT_DELAY = 0.1
MAX_RECONNECT_DELAY = 5.0
#: Seconds between two reads of a batch in ``wait_batch()``.
BATCH_POLL_INTERVAL = 0.5
#: Answers to a (re)connection of a stream that mean "try again later".
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
#: Seconds to wait after a 429 that names none (the server always sends ``Retry-After``).
DEFAULT_RETRY_AFTER = 1.0

_EVENT_TYPES = frozenset(t.value for t in EventType)


class JobPage(NamedTuple):
    """One page of ``list()``: pass ``next_cursor`` as ``cursor=`` for the next (older) one."""

    jobs: list[Job]
    next_cursor: str | None


class BatchPage(NamedTuple):
    """One page of ``list_batches()``: pass ``next_cursor`` as ``cursor=`` for the next (older) one."""

    batches: list[BatchView]
    next_cursor: str | None


class EventPage(NamedTuple):
    """The answer of ``events()``: pass ``next_after`` as ``after=`` for what follows."""

    events: list[Event]
    next_after: int
    status: Status


@dataclass(frozen=True, slots=True, kw_only=True)
class Call(Generic[T]):
    """One request, and how to read its JSON answer (I/O-free)."""

    method: str
    path: str
    parse: Callable[[Any], T]
    params: Params = field(default_factory=list)
    body: Any = None
    job_id: str | None = None
    #: Seconds the server may hold the request (a long poll) on top of the client's timeout.
    wait: float = 0.0
    #: Error statuses whose body is an answer all the same (``/healthz`` answers 503 when down).
    accept: frozenset[int] = frozenset()


class Unavailable(Exception):
    """A stream's (re)connection was answered "try again later" (429, 502, 503, 504)."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BaseClient:
    """Everything the twins share that does no I/O: requests, answers, errors, streams."""

    def __init__(self, base_url: str, *, timeout: float | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    # -- requests ------------------------------------------------------------------------------

    def _submit_call(
        self,
        task: str,
        args: Mapping[str, Any] | None,
        *,
        idempotency_key: str | None = None,
        **options: Any,
    ) -> Call[Job]:
        """``options``: see :func:`submit_options`."""
        body = {"task": task, "args": dict(args or {})} | submit_options(**options)
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        return Call(method="POST", path="/jobs", body=body, parse=Job.from_dict)

    def _get_call(self, job_id: str) -> Call[Job]:
        return Call(method="GET", path=_job_path(job_id), job_id=job_id, parse=Job.from_dict)

    def _list_call(
        self,
        *,
        status: Status | str | Iterable[Status | str] | None,
        queue: str | None,
        task: str | None,
        label: str | None,
        owner: str | None,
        batch: str | None = None,
        q: str | None = None,
        ids: Iterable[str] | None = None,
        limit: int,
        cursor: str | None,
    ) -> Call[JobPage]:
        statuses = [status] if isinstance(status, str) else list(status or ())
        params: Params = [("status", str(s)) for s in statuses]
        given = (
            ("queue", queue),
            ("task", task),
            ("label", label),
            ("owner", owner),
            ("batch", batch),
            ("q", q),
            ("ids", None if ids is None else ",".join(ids)),
            ("cursor", cursor),
        )
        for name, value in given:
            if value is not None:
                params.append((name, value))
        params.append(("limit", limit))
        return Call(method="GET", path="/jobs", params=params, parse=_job_page)

    def _events_call(
        self, job_id: str, *, after: int, wait: float, types: Iterable[EventType | str], limit: int
    ) -> Call[EventPage]:
        params: Params = [("after", after), ("limit", limit)]
        if wait:
            params.append(("wait", wait))
        wanted = ",".join(str(t) for t in types)
        if wanted:
            params.append(("types", wanted))
        return Call(
            method="GET",
            path=_job_path(job_id, "events"),
            params=params,
            job_id=job_id,
            wait=wait,
            parse=_event_page,
        )

    def _change_call(self, job_id: str, action: str, body: Any = None) -> Call[Job]:
        """``cancel``, ``retry`` or ``answer`` one job."""
        return Call(
            method="POST", path=_job_path(job_id, action), body=body, job_id=job_id, parse=Job.from_dict
        )

    def _answer_call(self, job_id: str, value: Any, key: str | None) -> Call[Job]:
        body = {"value": value} if key is None else {"value": value, "key": key}
        return self._change_call(job_id, "answer", body)

    def _change_all_call(
        self,
        action: Literal["cancel", "retry"],
        *,
        status: Iterable[Status | str],
        queue: str | None = None,
        task: str | None = None,
        batch: str | None = None,
        label: str | None = None,
        owner: str | None = None,
        q: str | None = None,
        ids: Iterable[str] | None = None,
    ) -> Call[int]:
        """``cancel`` or ``retry`` every job that matches: how many were (``ids``, if given,
        must name at least one job: an empty selection is refused, never taken for all)."""
        body: Json = {"status": [str(s) for s in status]}
        given = {"queue": queue, "task": task, "batch": batch, "label": label, "owner": owner, "q": q}
        body |= {name: value for name, value in given.items() if value is not None}
        if ids is not None:
            body["ids"] = list(ids)
        count = "cancelled" if action == "cancel" else "retried"
        return Call(method="POST", path=f"/jobs/{action}", body=body, parse=lambda data: int(data[count]))

    def _delete_call(self, job_id: str) -> Call[None]:
        return Call(method="DELETE", path=_job_path(job_id), job_id=job_id, parse=lambda _: None)

    # -- batches -------------------------------------------------------------------------------

    def _submit_batch_call(
        self, task: str, items: Iterable[Mapping[str, Any]], *, name: str | None, **options: Any
    ) -> Call[BatchView]:
        """``options``: see :func:`submit_options`."""
        body: Json = {"task": task, "items": [dict(item) for item in items]}
        if name is not None:
            body["name"] = name
        body |= submit_options(**options)
        return Call(method="POST", path="/batches", body=body, parse=BatchView.from_dict)

    def _batch_call(self, batch_id: str, action: str | None = None) -> Call[BatchView]:
        """Read the batch (no ``action``), or ``cancel``, ``pause`` or ``resume`` it."""
        method = "GET" if action is None else "POST"
        return Call(method=method, path=_batch_path(batch_id, action), parse=BatchView.from_dict)

    def _list_batches_call(self, *, limit: int, cursor: str | None, owner: str | None) -> Call[BatchPage]:
        params: Params = [("limit", limit)]
        for name, value in (("cursor", cursor), ("owner", owner)):
            if value is not None:
                params.append((name, value))
        return Call(method="GET", path="/batches", params=params, parse=_batch_page)

    def _batch_items_call(
        self,
        batch_id: str,
        *,
        status: Status | str | Iterable[Status | str] | None,
        limit: int,
        cursor: str | None,
    ) -> Call[JobPage]:
        statuses = [status] if isinstance(status, str) else list(status or ())
        params: Params = [("status", str(s)) for s in statuses]
        if cursor is not None:
            params.append(("cursor", cursor))
        params.append(("limit", limit))
        return Call(method="GET", path=_batch_path(batch_id, "items"), params=params, parse=_job_page)

    def _retry_failed_call(self, batch_id: str) -> Call[int]:
        path = _batch_path(batch_id, "retry-failed")
        return Call(method="POST", path=path, parse=lambda data: int(data["retried"]))

    def _export_call(self, batch_id: str, format: str) -> Call[None]:
        """The request of ``export()``: its answer is streamed by the twins, not parsed."""
        path = _batch_path(batch_id, "results")
        return Call(method="GET", path=path, params=[("format", format)], parse=lambda _: None)

    def _wait_batch_plan(
        self, batch_id: str, timeout: float | None, interval: float
    ) -> Generator[Call[Any] | float, Any, BatchView]:
        """The steps of ``wait_batch()``: read the batch every ``interval`` seconds until it ends."""
        deadline = None if timeout is None else time.monotonic() + timeout
        batch: BatchView = yield self._batch_call(batch_id)
        while not batch.terminal:
            pause = interval if deadline is None else min(interval, deadline - time.monotonic())
            if pause <= 0:
                raise TimeoutError(
                    f"batch {batch_id} did not end within {timeout:g} s "
                    f"(it is {batch.status}, {batch.done} of {batch.total} items done)"
                )
            yield pause
            batch = yield self._batch_call(batch_id)
        return batch

    # -- queues --------------------------------------------------------------------------------

    def _queue_call(self, name: str, action: str, concurrency: int | None = None) -> Call[Json]:
        """``pause``, ``resume`` or ``limit`` (to ``concurrency``) one queue."""
        path = f"/queues/{quote(name, safe='')}/{action}"
        if action == "limit":
            return Call(method="PUT", path=path, body={"concurrency": concurrency}, parse=dict)
        return Call(method="POST", path=path, parse=dict)

    def _service_call(self, path: str, key: str) -> Call[list[Json]]:
        """``/tasks`` or ``/workers``: the list under ``key``."""
        return Call(method="GET", path=path, parse=lambda data: list(data[key]))

    def _stats_call(self, window: float | str, owner: str | None) -> Call[Json]:
        """``GET /stats``: ``window`` in seconds or as a duration (``"15m"``, ``"1h"``, ``"7d"``)."""
        params: Params = [("window", f"{window:g}" if isinstance(window, int | float) else window)]
        if owner is not None:
            params.append(("owner", owner))
        return Call(method="GET", path="/stats", params=params, parse=dict)

    def _stream_token_call(
        self, *, job: str | None, batch: str | None, ttl: float | None, owner: str | None
    ) -> Call[StreamToken]:
        given = {"job": job, "batch": batch, "ttl": None if ttl is None else float(ttl), "owner": owner}
        body = {name: value for name, value in given.items() if value is not None}
        return Call(method="POST", path="/stream-tokens", body=body, job_id=job, parse=_stream_token)

    def _me_call(self) -> Call[Json]:
        return Call(method="GET", path="/me", parse=dict)

    def _health_call(self) -> Call[Json]:
        return Call(method="GET", path="/healthz", accept=frozenset({503}), parse=dict)

    def _wait_plan(self, job_id: str, timeout: float | None) -> Generator[Call[Any], Any, Job]:
        """The calls of ``wait()``: read the job, then long-poll its status events until it ends."""
        deadline = None if timeout is None else time.monotonic() + timeout
        job: Job = yield self._get_call(job_id)
        after = job.last_seq
        while not job.terminal:
            wait = LONG_POLL_WAIT if deadline is None else min(LONG_POLL_WAIT, deadline - time.monotonic())
            if wait <= 0:
                raise TimeoutError(
                    f"job {job_id} did not end within {timeout:g} s (it is {job.status.value})"
                )
            page: EventPage = yield self._events_call(
                job_id, after=after, wait=round(wait, 3), types=(EventType.STATUS,), limit=1000
            )
            after = page.next_after
            if page.status.terminal:
                job = yield self._get_call(job_id)
        return job

    # -- answers -------------------------------------------------------------------------------

    def _request_timeout(self, call: Call[Any]) -> httpx.Timeout:
        if self.timeout is None:
            return httpx.Timeout(None)
        return httpx.Timeout(self.timeout, read=self.timeout + call.wait)

    def _stream_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.timeout, read=max(self.timeout or 0.0, STREAM_READ_TIMEOUT))

    def _read(self, call: Call[T], response: httpx.Response) -> T:
        if not (response.is_success or response.status_code in call.accept):
            raise self.error_for(response, call.job_id)
        data = self._json(response) if response.content else None
        try:
            return call.parse(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise self._unreadable(response, exc) from exc

    def _unreadable(self, response: httpx.Response, exc: Exception) -> ServerError:
        return ServerError(
            f"{response.request.method} {response.url} answered something this client cannot read "
            f"({type(exc).__name__}: {exc}): is {self.base_url} underway's API, of a matching version?",
            status=response.status_code,
            code="unreadable",
        )

    def _json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise ServerError(
                f"{response.request.method} {response.url} answered {response.status_code} with "
                f"something other than JSON: is {self.base_url} underway's API?",
                status=response.status_code,
                code="not_json",
            ) from None

    def error_for(self, response: httpx.Response, job_id: str | None) -> UnderwayError:
        """The exception for an error answer (its body read)."""
        try:
            body = response.json()
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        status = response.status_code
        if not isinstance(error, dict):
            return ServerError(
                f"{response.request.method} {response.url} answered {status} {response.reason_phrase}",
                status=status,
            )
        if status == 404 and error.get("code") == "not_found":  # no such route: a wrong base_url?
            return ServerError(
                f"{response.request.method} {response.url} answered 404 (no such route): "
                f"is {self.base_url} underway's API?",
                status=status,
                code="not_found",
            )
        return exception_for(status, error, job_id, retry_after=_retry_after(response))

    def _unreachable(self, exc: httpx.TransportError) -> ServerError:
        if isinstance(exc, httpx.TimeoutException):
            return ServerError(
                f"the underway server at {self.base_url} did not answer in time ({type(exc).__name__}, "
                f"timeout={self.timeout})",
                code="timeout",
            )
        return ServerError(
            f"cannot reach the underway server at {self.base_url}: {str(exc) or type(exc).__name__}",
            code="unreachable",
        )

    def _stream(self, job_id: str, after: int, reconnect_timeout: float) -> Stream:
        return Stream(self, job_id, after=after, reconnect_timeout=reconnect_timeout)


def request_headers(api_key: str | None, headers: Mapping[str, str] | None) -> dict[str, str]:
    """The headers of every request: ``X-Requested-With``, ``Authorization`` with the API key
    (``api_key``, else ``UNDERWAY_API_KEY``; ``""``: none), then ``headers``, which win."""
    key = os.environ.get(API_KEY_VARIABLE, "") if api_key is None else api_key
    sent = {"X-Requested-With": REQUESTED_WITH}
    if key:
        sent["Authorization"] = f"Bearer {key}"
    return sent | dict(headers or {})


def exception_for(
    status: int, error: Mapping[str, Any], job_id: str | None = None, *, retry_after: float | None = None
) -> UnderwayError:
    """The underway exception for an error body ``{"code", "message", "details"?}`` of ``status``
    (``retry_after``: the seconds of a 429's ``Retry-After`` header)."""
    code = str(error.get("code", "error"))
    message = str(error.get("message", "")) or f"the server answered {status} ({code})"
    details = error.get("details")
    if status == 401:
        return Unauthenticated(message, details=details)
    if status == 403:
        return Forbidden(message, details=details)
    if status == 429:
        wait = DEFAULT_RETRY_AFTER if retry_after is None else retry_after
        return TooManyRequests(message, retry_after=wait, details=details)
    if status == 413 and code == BatchTooLarge.code:
        return BatchTooLarge(message, details=details)
    if status == 404 and code == JobNotFound.code:
        known = details.get("id") if isinstance(details, dict) else None
        return JobNotFound(job_id or str(known))
    if status == 404 and code == BatchNotFound.code:
        known = details.get("batch_id") if isinstance(details, dict) else None
        return BatchNotFound(str(known))
    if status == 409 and code == IdempotencyConflict.code:
        return IdempotencyConflict(message, details=details)
    if status == 409:
        return InvalidTransition(message, details=details)
    if status == 422 and code == TaskNotFound.code:
        return TaskNotFound(message, details=details)
    if status == 422 and code in (InvalidArguments.code, "invalid_request"):
        return InvalidArguments(message, details=details)
    return ServerError(message, status=status, code=code, details=details)


def _job_path(job_id: str, action: str | None = None) -> str:
    path = f"/jobs/{quote(job_id, safe='')}"
    return path if action is None else f"{path}/{action}"


def _batch_path(batch_id: str, action: str | None = None) -> str:
    path = f"/batches/{quote(batch_id, safe='')}"
    return path if action is None else f"{path}/{action}"


def submit_options(
    *,
    queue: str | None = None,
    priority: int | None = None,
    delay: float | None = None,
    run_at: float | datetime | None = None,
    max_attempts: int | None = None,
    timeout: float | None = None,
    labels: Mapping[str, str] | None = None,
    owner: str | None = None,
) -> Json:
    """The options of a submission (of a job or a batch) as the API takes them, unset ones left out.

    ``run_at`` is epoch seconds or a ``datetime`` (a naive one is local time, as everywhere in Python);
    ``owner`` records another owner (admins only).
    """
    if isinstance(run_at, datetime):
        run_at = run_at.timestamp()
    options = {
        "queue": queue,
        "priority": priority,
        "delay": delay,
        "run_at": to_iso(run_at),
        "max_attempts": max_attempts,
        "timeout": timeout,
        "labels": None if labels is None else dict(labels),
        "owner": owner,
    }
    return {k: v for k, v in options.items() if v is not None}


def _batch_page(data: Json) -> BatchPage:
    return BatchPage([BatchView.from_dict(batch) for batch in data["batches"]], data.get("next_cursor"))


def _job_page(data: Json) -> JobPage:
    return JobPage([Job.from_dict(job) for job in data["jobs"]], data.get("next_cursor"))


def _stream_token(data: Json) -> StreamToken:
    return StreamToken(str(data["token"]), from_iso(data["expires_at"]))


def _event_page(data: Json) -> EventPage:
    events = [Event.from_dict(event) for event in data["events"]]
    return EventPage(events, int(data["next_after"]), Status(data["status"]))


def run_plan(
    plan: Generator[Call[Any] | float, Any, T],
    send: Callable[[Call[Any]], Any],
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Drive a plan with a blocking ``send`` (a number it yields is seconds to ``sleep``)."""
    answer: Any = None
    while True:
        try:
            step = plan.send(answer)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        if isinstance(step, Call):
            answer = send(step)
        else:
            sleep(step)
            answer = None


class Stream:
    """One ``watch()``: its resume point, what it yields, when it reconnects and gives up (I/O-free).

    Every event is yielded once, in ``seq`` order: a replay after a reconnection starts after
    the last ``seq`` seen (``Last-Event-ID``) and anything at or below it is dropped. The watch
    ends at the server's ``end`` event or when a reconnection is answered 204 (the job ended).
    """

    def __init__(self, client: BaseClient, job_id: str, *, after: int, reconnect_timeout: float) -> None:
        self.job_id = job_id
        self.last = after
        self.done = False
        self.path = _job_path(job_id, "stream")
        self._client = client
        self._reconnect_timeout = reconnect_timeout
        self._failures = 0
        self._failing_since: float | None = None

    def headers(self) -> dict[str, str]:
        return {"Last-Event-ID": str(self.last)}

    def opened(self, response: httpx.Response) -> bool:
        """Check the answer to a (re)connection, its body read unless it is 200: True if live."""
        status = response.status_code
        if status == 204:
            self.done = True
            return False
        if status in RETRYABLE_STATUSES:
            raise Unavailable(f"the server answered {status}", _retry_after(response))
        if status != 200:
            raise self._client.error_for(response, self.job_id)
        content_type = response.headers.get("content-type", "")
        if not content_type.startswith("text/event-stream"):
            raise ServerError(
                f"GET {response.url} answered {content_type!r}, not an event stream: "
                f"is {self._client.base_url} underway's API?",
                status=status,
                code="not_a_stream",
            )
        self._failing_since = None  # backoff starts over once an event comes through
        return True

    def accept(self, sse: ServerSentEvent) -> Event | None:
        """The event to yield for this message, if any (duplicates and other messages are not)."""
        if sse.event == "end":
            self.done = True
            return None
        if sse.event not in _EVENT_TYPES:
            return None  # the opening comment with ``retry:``, or a type newer than this client
        try:
            event = Event.from_dict(json.loads(sse.data))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ServerError(
                f"the event stream of job {self.job_id} sent an event this client cannot read "
                f"({type(exc).__name__}: {exc}): is {self._client.base_url} underway's API?",
                code="unreadable",
            ) from exc
        self._failures = 0
        if event.seq <= self.last:
            return None
        self.last = event.seq
        return event

    def lost(self, cause: BaseException | str) -> float:
        """The connection failed or dropped: seconds to wait before reconnecting.

        Exponential backoff with jitter (so the clients of a restarted server do not all come
        back at once), capped at ``MAX_RECONNECT_DELAY``; ``ServerError`` once
        ``reconnect_timeout`` seconds have passed without a successful reconnection.
        """
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        elapsed = now - self._failing_since
        if elapsed >= self._reconnect_timeout:
            raise ServerError(
                f"lost the event stream of job {self.job_id} and could not reconnect to "
                f"{self._client.base_url} within {self._reconnect_timeout:g} s: {cause}",
                code="unreachable",
            ) from (cause if isinstance(cause, BaseException) else None)
        delay = min(MAX_RECONNECT_DELAY, FIRST_RECONNECT_DELAY * 2.0 ** min(self._failures, 20))
        delay *= random.uniform(0.5, 1.0)
        self._failures += 1
        if isinstance(cause, Unavailable) and cause.retry_after is not None:
            delay = max(delay, min(cause.retry_after, MAX_RECONNECT_DELAY))
        return max(0.0, min(delay, self._reconnect_timeout - elapsed))


def _retry_after(response: httpx.Response) -> float | None:
    value: str = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


STREAM_ERRORS = (httpx.TransportError, Unavailable)
