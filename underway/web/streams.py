"""Long polling and Server-Sent Events.

Every stream reads history from the store and then goes live from the process's one bus, so a
thousand open streams cost one feed query per change, not a thousand. Per-job streams are
resumable by ``seq`` (``Last-Event-ID`` or ``?after=``); multiplexed streams start with a
``snapshot`` and start over with a fresh one after a reconnect.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any

import anyio
from fastapi import Header, Query, Response
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Message, Receive, Scope, Send

from ..bus import Overflow, Subscription
from ..events import Event, EventType
from ..exceptions import InvalidArguments
from ..store import JobFilter
from .errors import error_response
from .models import ErrorOut, EventList

if TYPE_CHECKING:
    from .api import API

SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no", "Content-Encoding": "identity"}
SNAPSHOT_LIMIT = 500
SHUTTING_DOWN: dict[str, Any] = {"model": ErrorOut, "description": "The server is shutting down"}


def add_stream_routes(api: API) -> None:
    router, app = api.router, api.app

    @router.get("/jobs/{job_id}/events", response_model=EventList, tags=["streams"])
    async def job_events(
        job_id: str,
        after: Annotated[int, Query(ge=0)] = 0,
        wait: Annotated[float, Query(ge=0, le=60, description="seconds to wait for a first event")] = 0,
        types: Annotated[str | None, Query(description="comma-separated event types")] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    ) -> JSONResponse:
        """Events after ``after``; with ``wait``, a long poll that answers as soon as one arrives."""
        wanted = _types(types)
        await app.open()
        job = await app.get(job_id)
        api.metrics.streams.labels("long_poll").inc()
        try:
            with await app.bus().subscribe(job_id) as subscription:
                events = await app.store.events(job_id, after=after, limit=limit, types=wanted)
                deadline = time.monotonic() + wait
                while not events and not job.terminal and time.monotonic() < deadline:
                    try:
                        event = await _next_event(subscription, api.stopping, deadline - time.monotonic())
                    except Overflow:
                        event = None
                    except _Stopping:
                        break
                    if event is not None and event.seq <= after:
                        continue
                    events = await app.store.events(job_id, after=after, limit=limit, types=wanted)
                    job = await app.get(job_id)
                    if event is None:
                        break
        finally:
            api.metrics.streams.labels("long_poll").dec()
        if events:
            job = await app.get(job_id)
        next_after = events[-1].seq if events else after
        return JSONResponse(
            {"events": [e.to_dict() for e in events], "next_after": next_after, "status": job.status.value}
        )

    @router.get(
        "/jobs/{job_id}/stream",
        response_class=Response,
        responses={
            200: {"content": {"text/event-stream": {}}},
            204: {"description": "The job already ended"},
            503: SHUTTING_DOWN,
        },
        tags=["streams"],
    )
    async def stream_job(
        job_id: str,
        after: Annotated[int | None, Query(ge=0)] = None,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> Response:
        """Server-Sent Events of one job: replay after ``Last-Event-ID``/``after``, then live.

        Each event is ``id: <seq>``, ``event: <type>``, ``data: <event JSON>``. When the job
        ends the stream sends ``event: end`` and closes; reconnecting after that gets 204.
        """
        start = _resume_point(last_event_id, after)
        await app.open()
        job = await app.get(job_id)
        if job.terminal and start >= job.last_seq:
            return Response(status_code=204)
        # A resume point past the last event (another store's numbering, a made-up id) would
        # skip every event to come, the end too: go on from the last one instead.
        return _sse(api, _job_stream(api, job_id, min(start, job.last_seq)), "sse")

    @router.get(
        "/stream",
        response_class=Response,
        responses={200: {"content": {"text/event-stream": {}}}, 503: SHUTTING_DOWN},
        tags=["streams"],
    )
    async def stream_many(
        jobs: Annotated[str | None, Query(description="comma-separated job ids")] = None,
        queue: str | None = None,
    ) -> Response:
        """One multiplexed stream: a ``snapshot`` of the matching jobs, then their live events.

        Without ``jobs`` or ``queue`` it follows every job. After a reconnect it starts again
        with a fresh snapshot (there is no resume point across jobs).
        """
        ids = frozenset(j for j in (jobs or "").split(",") if j)
        await app.open()
        return _sse(api, _many_stream(api, ids, queue), "sse")


class _Stopping(Exception):
    """The server shuts down: a long poll answers with what it has."""


async def _next_event(subscription: Subscription, stopping: asyncio.Event, timeout: float) -> Event | None:
    """The subscription's next event, ``None`` after ``timeout``; ``_Stopping`` if the server stops."""
    if stopping.is_set():
        raise _Stopping
    getting = asyncio.ensure_future(subscription.get(timeout=timeout))
    stopped = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({getting, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        getting.cancel()
        stopped.cancel()
    if getting.done() and not getting.cancelled():
        return getting.result()
    raise _Stopping


def _types(types: str | None) -> tuple[str, ...]:
    if not types:
        return ()
    wanted = tuple(t.strip() for t in types.split(",") if t.strip())
    unknown = [t for t in wanted if t not in {e.value for e in EventType}]
    if unknown:
        raise InvalidArguments(
            f"unknown event types {unknown}: use {', '.join(e.value for e in EventType)}",
            details={"types": unknown},
        )
    return wanted


def _resume_point(last_event_id: str | None, after: int | None) -> int:
    if last_event_id is not None and last_event_id.strip().isdigit():
        return int(last_event_id.strip())
    return after or 0


def _sse(api: API, events: AsyncIterator[ServerSentEvent], transport: str) -> EventSourceResponse:
    async def counted() -> AsyncIterator[ServerSentEvent]:
        api.metrics.streams.labels(transport).inc()
        try:
            yield ServerSentEvent(comment="underway", retry=int(api.settings.sse_retry * 1000))
            async for event in events:
                yield event
        finally:
            api.metrics.streams.labels(transport).dec()

    return _EventStream(
        counted(),
        stopping=api.stopping,
        headers=SSE_HEADERS,
        ping=api.settings.sse_ping_interval,
        send_timeout=api.settings.sse_send_timeout,
    )


class _EventStream(EventSourceResponse):
    """sse-starlette's response, which also ends, cleanly, when the API stops its streams.

    sse-starlette ends streams on SIGTERM only by finding uvicorn's signal handler, which is not
    there when uvicorn runs in a thread or is stopped with ``should_exit``; uvicorn then waits
    its whole graceful-shutdown timeout for the streams and cancels them with errors.
    """

    def __init__(self, *args: Any, stopping: asyncio.Event, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stopping = stopping

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._stopping.is_set():  # a request that came in as the server began to stop
            refused = error_response(503, "shutting_down", "the server is shutting down: reconnect")
            refused.headers["Retry-After"] = "1"
            await refused(scope, receive, send)
            return
        started = ended = stopped = False

        async def tracked(message: Message) -> None:
            nonlocal started, ended
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                ended = True
            await send(message)

        async with anyio.create_task_group() as group:

            async def stop_when_told() -> None:
                nonlocal stopped
                await self._stopping.wait()
                stopped = True
                group.cancel_scope.cancel()

            group.start_soon(stop_when_told)
            await super().__call__(scope, receive, tracked)
            group.cancel_scope.cancel()
        if stopped and started and not ended:
            # End the chunked body: the client reconnects (to another server) and resumes.
            with anyio.move_on_after(1):
                await send({"type": "http.response.body", "body": b"", "more_body": False})


def _frame(event: Event) -> ServerSentEvent:
    return ServerSentEvent(data=event.to_json(), event=event.type.value, id=str(event.seq))


async def _job_stream(api: API, job_id: str, start: int) -> AsyncIterator[ServerSentEvent]:
    last: Event | None = None
    async for event in api.app.watch(job_id, after=start):
        last = event
        yield _frame(event)
    status = last.data["status"] if last is not None and last.type is EventType.STATUS else None
    yield ServerSentEvent(data=json.dumps({"job_id": job_id, "status": status}), event="end")


async def _many_stream(api: API, ids: frozenset[str], queue: str | None) -> AsyncIterator[ServerSentEvent]:
    async for item in follow_many(api, ids, queue):
        if isinstance(item, Event):
            yield ServerSentEvent(data=item.to_json(), event=item.type.value)
        else:
            yield ServerSentEvent(data=json.dumps(item, separators=(",", ":")), event="snapshot")


async def follow_many(
    api: API, ids: frozenset[str], queue: str | None
) -> AsyncIterator[Event | dict[str, Any]]:
    """A snapshot (``{"jobs": [...]}``), then every event of the matching jobs; a fresh
    snapshot whenever the subscriber fell behind."""
    queues = _QueueOf(api)
    with await api.app.bus().subscribe(None) as subscription:
        yield await snapshot(api, ids, queue)
        while True:
            try:
                event = await subscription.get()
            except Overflow:
                yield await snapshot(api, ids, queue)
                continue
            if event is None or (ids and event.job_id not in ids):
                continue
            if queue is not None and await queues.of(event.job_id) != queue:
                continue
            yield event


async def snapshot(api: API, ids: frozenset[str], queue: str | None) -> dict[str, Any]:
    store = api.app.store
    if ids:
        found = [await store.get(job_id) for job_id in sorted(ids)]
        jobs = [job for job in found if job is not None]
    else:
        jobs = await store.list_jobs(JobFilter(queue=queue), limit=SNAPSHOT_LIMIT)
    return {"jobs": [job.to_dict() for job in jobs]}


class _QueueOf:
    """The queue of each job seen on a multiplexed stream, looked up once."""

    def __init__(self, api: API, size: int = 10_000) -> None:
        self._api = api
        self._size = size
        self._known: OrderedDict[str, str | None] = OrderedDict()

    async def of(self, job_id: str) -> str | None:
        if job_id in self._known:
            return self._known[job_id]
        job = await self._api.app.store.get(job_id)
        queue = None if job is None else job.queue
        self._known[job_id] = queue
        if len(self._known) > self._size:
            self._known.popitem(last=False)
        return queue
