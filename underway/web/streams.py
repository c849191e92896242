"""Long polling and Server-Sent Events.

Every stream reads history from the store and then goes live from the process's one bus, so a
thousand open streams cost one feed query per change, not a thousand. Per-job streams are
resumable by ``seq`` (``Last-Event-ID`` or ``?after=``); multiplexed streams start with a
``snapshot`` and start over with a fresh one after a reconnect.

The SSE responses are :class:`~.sse.EventStream` over the frame sources below; each event's
frame is encoded once per process (:mod:`.wire`) and shared by every stream that sends it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Header, Query, Response

from ..auth import Principal
from ..bounds import listed
from ..bus import Overflow, Subscription
from ..events import Event, EventType, dumps
from ..exceptions import InvalidArguments
from ..jobs import Job
from ..service import JobFilter, Service
from .guard import Svc
from .inputs import BadInput
from .models import IDS, MAX_SEARCH, MAX_SEQ, SEARCH, ErrorOut, EventList, id_list, job_filter
from .sse import EventStream, FrameSource, frame
from .wire import encoded

if TYPE_CHECKING:
    from .api import API

SNAPSHOT_LIMIT = 500
#: Events read from the store at a time when a stream replays history.
HISTORY_PAGE = 1000
SHUTTING_DOWN: dict[str, Any] = {"model": ErrorOut, "description": "The server is shutting down"}


def add_stream_routes(api: API) -> None:
    router = api.router

    @router.get("/jobs/{job_id}/events", response_model=EventList, tags=["streams"])
    async def job_events(
        job_id: str,
        service: Svc,
        after: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
        wait: Annotated[float, Query(ge=0, le=60, description="seconds to wait for a first event")] = 0,
        types: Annotated[str | None, Query(description="comma-separated event types")] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    ) -> Response:
        """Events after ``after``; with ``wait``, a long poll that answers as soon as one arrives."""
        wanted = _types(types)
        events, job = await service.events(job_id, after=after, limit=limit, types=wanted)
        expires_at = service.principal.expires_at
        if expires_at is not None:  # a token's long poll ends when the token does
            wait = max(0.0, min(wait, expires_at - time.time()))
        if not events and wait > 0 and not job.terminal:
            release = api.quotas.open_stream(service.principal)
            api.metrics.streams.labels("long_poll").inc()
            try:
                events, job = await _long_poll(api, service, job_id, after, wait, limit, wanted)
            finally:
                api.metrics.streams.labels("long_poll").dec()
                release()
        next_after = events[-1].seq if events else after
        body = ",".join(encoded(e).json for e in events)
        return _RawJSON(f'{{"events":[{body}],"next_after":{next_after},"status":"{job.status.value}"}}')

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
        service: Svc,
        after: Annotated[int | None, Query(ge=0, le=MAX_SEQ)] = None,
        last_event_id: Annotated[str | None, Header()] = None,
        token: Annotated[str | None, Query(description="a stream token (POST /stream-tokens)")] = None,
    ) -> Response:
        """Server-Sent Events of one job: replay after ``Last-Event-ID``/``after``, then live.

        Each event is ``id: <seq>``, ``event: <type>``, ``data: <event JSON>``. When the job
        ends the stream sends ``event: end`` and closes; reconnecting after that gets 204. A
        stream opened with a token sends ``event: expired`` and closes when the token expires.
        """
        start = _resume_point(last_event_id, after)
        job = await service.get(job_id)
        if job.terminal and start >= job.last_seq:
            return Response(status_code=204)
        # A resume point past the last event gets only the events numbered above it, and the
        # end whenever the job ends.
        return open_sse(api, service.principal, _JobFrames(api, service, job_id, start, job.last_seq))

    @router.get(
        "/stream",
        response_class=Response,
        responses={200: {"content": {"text/event-stream": {}}}, 503: SHUTTING_DOWN},
        tags=["streams"],
    )
    async def stream_many(
        service: Svc,
        jobs: Annotated[str | None, Query(description=IDS)] = None,
        ids: Annotated[str | None, Query(description=f"the same as jobs: {IDS}")] = None,
        queue: str | None = None,
        task: Annotated[str | None, Query(max_length=200)] = None,
        label: Annotated[str | None, Query(pattern=r"^[^:]+:.*$", description="key:value")] = None,
        batch: Annotated[str | None, Query(description="a batch id")] = None,
        owner: Annotated[str | None, Query(description="only this owner's jobs (admins)")] = None,
        q: Annotated[str | None, Query(max_length=MAX_SEARCH, description=SEARCH)] = None,
        token: Annotated[str | None, Query(description="a stream token (POST /stream-tokens)")] = None,
    ) -> Response:
        """One multiplexed stream: a ``snapshot`` of the matching jobs, then their live events.

        Without ``jobs``, ``queue``, ``task``, ``label``, ``batch``, ``owner`` or ``q`` it follows
        every job the caller may see. After a reconnect it starts again with a fresh snapshot
        (there is no resume point across jobs).
        """
        wanted = job_filter(
            queue=queue,
            task=task,
            label=label,
            batch=batch,
            owner=owner,
            q=q,
            ids=id_list(f"{jobs or ''},{ids or ''}"),
        )
        await check_many(service, wanted)
        return open_sse(api, service.principal, _ManyFrames(api, _Filter(service, wanted)))


async def check_many(service: Service, wanted: JobFilter) -> None:
    """Refuse a multiplexed stream of jobs the principal may not ask for: another owner's (403
    for a user), or a batch it does not see (404)."""
    service.scoped(wanted)
    if wanted.batch_id is not None:
        await service.get_batch(wanted.batch_id)


async def _long_poll(
    api: API, service: Service, job_id: str, after: int, wait: float, limit: int, wanted: tuple[str, ...]
) -> tuple[list[Event], Job]:
    """Wait up to ``wait`` seconds for events after ``after`` of a job ``service`` may see;
    the events and the job then."""
    events: list[Event] = []
    with await service.bus().subscribe(job_id) as subscription:
        # Read again now that the subscription is there: an event committed since the first
        # read would otherwise be missed.
        events = await service.more_events(job_id, after=after, limit=limit, types=wanted)
        deadline = time.monotonic() + wait
        while not events and time.monotonic() < deadline:
            try:
                event = await _next_event(subscription, api.stopping, deadline - time.monotonic())
            except Overflow:
                event = None
            except _Stopping:
                break
            if event is None:
                events = await service.more_events(job_id, after=after, limit=limit, types=wanted)
                break
            if event.seq > after and (not wanted or event.type.value in wanted):
                events = await service.more_events(job_id, after=after, limit=limit, types=wanted)
            if event.ends_job:
                break
    return events, await service.get(job_id)


class _RawJSON(Response):
    media_type = "application/json"


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
        resume = int(last_event_id.strip())
        if resume > MAX_SEQ:
            raise BadInput(f"Last-Event-ID is an event number, at most {MAX_SEQ}", details={"limit": MAX_SEQ})
        return resume
    return after or 0


def open_sse(api: API, principal: Principal, source: FrameSource) -> EventStream:
    """The SSE response of ``source`` for ``principal``: counted against its stream limit,
    ended when its token expires (``event: expired``) or its key is revoked."""
    release = api.quotas.open_stream(principal)
    settings = api.settings
    return EventStream(
        Guarded(source, principal, release),
        streams=api.sse_streams,
        ping_interval=settings.sse_ping_interval,
        send_timeout=settings.sse_send_timeout,
        retry=settings.sse_retry,
    )


class Guarded:
    """A :class:`~.sse.FrameSource` that ends with ``event: expired`` when its principal's
    token expires, and releases its place in the principal's stream limit when closed."""

    __slots__ = ("_expired", "_release", "_source", "principal")

    def __init__(self, source: FrameSource, principal: Principal, release: Callable[[], None]) -> None:
        self._source = source
        self.principal = principal
        self._release = release
        self._expired = False

    async def next(self, timeout: float) -> bytes | None:
        if self._expired:
            return None
        expires_at = self.principal.expires_at
        if expires_at is not None:
            left = expires_at - time.time()
            if left <= 0:
                self._expired = True
                return frame(
                    dumps({"reason": "the token expired: get a new one and resume"}), event="expired"
                )
            timeout = min(timeout, left)
        return await self._source.next(timeout)

    def close(self) -> None:
        self._source.close()
        self._release()


class _Frames:
    """What the SSE responses of this module stream (a :class:`~.sse.FrameSource`): counted in
    the ``underway_open_streams`` metric from creation to :meth:`close`."""

    __slots__ = ("_api", "_counted", "_subscription")

    def __init__(self, api: API) -> None:
        self._api = api
        self._subscription: Subscription | None = None
        api.metrics.streams.labels("sse").inc()
        self._counted = True

    def close(self) -> None:
        if self._subscription is not None:
            self._subscription.close()
        if self._counted:
            self._counted = False
            self._api.metrics.streams.labels("sse").dec()


class _JobFrames(_Frames):
    """One job's stream: its events after ``start`` from the store, then live, then ``end``.

    Several events that are ready together go out as one chunk. A live subscriber that fell
    behind (``Overflow``) reads what it missed from the store, like a fresh one.
    """

    __slots__ = ("_ended", "_horizon", "_job_id", "_last", "_last_event", "_replay", "_service")

    def __init__(self, api: API, service: Service, job_id: str, start: int, horizon: int) -> None:
        super().__init__(api)
        self._service = service
        self._job_id = job_id
        #: The job's last event when the stream opened: an event above it is new, not a copy
        #: of one read from the store (for a resume point beyond it, see :meth:`_add`).
        self._horizon = horizon
        self._last = start
        self._last_event: Event | None = None
        self._replay = True
        self._ended = False

    async def next(self, timeout: float) -> bytes | None:
        if self._ended:
            return None
        if self._subscription is None:  # subscribe first, then read: nothing falls in between
            self._subscription = await self._service.bus().subscribe(self._job_id)
        if self._replay:
            return await self._read_history()
        try:
            event = await self._subscription.get(timeout)
        except Overflow:
            return await self._read_history()
        chunks: list[bytes] = []
        while event is not None and not self._ended:
            self._add(chunks, event, ends=event.ends_job)
            try:
                event = self._subscription.get_nowait()
            except Overflow:
                self._replay = True
                break
        return b"".join(chunks)

    async def _read_history(self) -> bytes:
        events = await self._service.more_events(self._job_id, after=self._last, limit=HISTORY_PAGE)
        complete = len(events) < HISTORY_PAGE
        self._replay = not complete
        chunks: list[bytes] = []
        for event in events:
            # A terminal status ends the stream only as the last event: a manual retry may follow.
            self._add(chunks, event, ends=complete and event.ends_job and event is events[-1])
        if complete and not events and self._last_event is not None and self._last_event.ends_job:
            self._add_end(chunks)  # the end fell exactly at the end of a full page
        return b"".join(chunks)

    def _add(self, chunks: list[bytes], event: Event, *, ends: bool) -> None:
        if event.seq <= self._last:
            # A live copy of an event already read from the store; or, for a resume point
            # beyond the last event, a new one it asked not to get: it still gets the end.
            if ends and event.seq > self._horizon:
                self._add_end(chunks, event)
            return
        self._last, self._last_event = event.seq, event
        chunks.append(encoded(event).sse)
        if ends:
            self._add_end(chunks)

    def _add_end(self, chunks: list[bytes], last: Event | None = None) -> None:
        last = last or self._last_event
        status = last.data["status"] if last is not None and last.type is EventType.STATUS else None
        chunks.append(frame(dumps({"job_id": self._job_id, "status": status}), event="end"))
        self._ended = True


class _ManyFrames(_Frames):
    """A multiplexed stream: a ``snapshot``, then the live events the filter wants; a fresh
    snapshot whenever the subscriber fell behind."""

    __slots__ = ("_filter", "_snapshot_due")

    def __init__(self, api: API, wanted: _Filter) -> None:
        super().__init__(api)
        self._filter = wanted
        self._snapshot_due = True

    async def next(self, timeout: float) -> bytes | None:
        if self._subscription is None:
            self._subscription = await self._filter.service.bus().subscribe(None)
        chunks: list[bytes] = []
        if not self._snapshot_due:
            try:
                event = await self._subscription.get(timeout)
                while event is not None:
                    if await self._filter.wants(event):
                        chunks.append(encoded(event).sse_without_id)
                    event = self._subscription.get_nowait()
            except Overflow:
                self._snapshot_due = True
        if self._snapshot_due:
            self._snapshot_due = False
            found = await self._filter.snapshot()
            chunks.append(frame(dumps(found), event="snapshot"))
        return b"".join(chunks)


async def follow_many(service: Service, wanted: JobFilter) -> AsyncIterator[Event | dict[str, Any]]:
    """A snapshot (``{"jobs": [...]}``), then every event of the jobs ``wanted`` matches that
    ``service`` may see; a fresh snapshot whenever the subscriber fell behind."""
    jobs = _Filter(service, wanted)
    with await service.bus().subscribe(None) as subscription:
        yield await jobs.snapshot()
        while True:
            try:
                event = await subscription.get()
            except Overflow:
                yield await jobs.snapshot()
                continue
            if event is not None and await jobs.wants(event):
                yield event


class _Filter:
    """The jobs a multiplexed stream follows: those its principal may see that the filter
    matches (some ids, a queue, a task, a label, a batch, an owner, a search, or all of them).
    Its statuses are not used: a stream follows its jobs from status to status.

    Each job seen is looked up once, through the service (the last ``size`` are remembered):
    whether it is visible and matches (what it matches on does not change as it runs).
    """

    __slots__ = ("_filter", "_ids", "_known", "_size", "service")

    def __init__(self, service: Service, wanted: JobFilter, size: int = 10_000) -> None:
        self.service = service
        self._filter = dataclasses.replace(wanted, statuses=())
        self._ids = frozenset(wanted.ids)
        self._size = size
        self._known: OrderedDict[str, bool] | None = None

    async def wants(self, event: Event) -> bool:
        if self._ids and event.job_id not in self._ids:
            return False
        return await self._seen(event.job_id)

    async def snapshot(self) -> dict[str, Any]:
        service = self.service
        if self._ids:
            found = [await service.find(job_id) for job_id in sorted(self._ids)]
            jobs = [job for job in found if job is not None and self._filter.matches(job)]
        else:
            jobs = await service.list_jobs(self._filter, limit=SNAPSHOT_LIMIT)
        most = service.app.settings.max_listed_result
        return {"jobs": [listed(job, most) for job in jobs]}

    async def _seen(self, job_id: str) -> bool:
        """Whether the job is visible and matches (``False`` for one gone)."""
        if self._known is None:
            self._known = OrderedDict()
        if job_id in self._known:
            return self._known[job_id]
        job = await self.service.find(job_id)
        seen = job is not None and self._filter.matches(job)
        self._known[job_id] = seen
        if len(self._known) > self._size:
            self._known.popitem(last=False)
        return seen
