"""Batches and queues over HTTP: submit, watch, act on and export batches; pause and limit queues."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Path, Query
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from ..app import MAX_BATCH
from ..batches import BatchView
from ..bounds import listed
from ..bus import Overflow, Subscription
from ..events import Event, EventType, dumps
from ..exceptions import BatchTooLarge
from ..exports import WRITERS
from ..service import Service
from .guard import Svc
from .models import JobList, StatusName, StrictModel, SubmitFields, statuses
from .sse import EventStream, frame

if TYPE_CHECKING:
    from .api import API

RESULT_TYPES = {
    "json": "application/json",
    "ndjson": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
}


class BatchRequest(SubmitFields):
    task: str = Field(min_length=1, max_length=200, description="name of a registered task")
    items: list[dict[str, Any]] = Field(
        min_length=1, description=f"the arguments of each item: one job per item (at most {MAX_BATCH})"
    )
    name: str | None = Field(default=None, max_length=200)


class RunningItemOut(BaseModel):
    id: str
    progress: dict[str, Any] | None


class BatchOut(BaseModel):
    id: str
    name: str | None
    task: str
    queue: str
    owner: str | None
    labels: dict[str, str]
    total: int
    status: Literal["queued", "running", "paused", "completed", "partial", "failed", "cancelled"]
    counts: dict[str, int] = Field(description="items per status")
    percent: float = Field(description="items ended, in percent")
    rate: float | None = Field(description="items ended per second since the first one started")
    eta_s: float | None = Field(description="seconds until every item has ended, at that rate")
    paused: bool
    cancelled: bool
    created_at: str | None
    updated_at: str | None
    started_at: str | None
    finished_at: str | None
    running: list[RunningItemOut] = Field(description="some running items and their progress")


class BatchList(BaseModel):
    batches: list[BatchOut]
    next_cursor: str | None = Field(description="pass as ?cursor= to get the next (older) page")


class RetryCount(BaseModel):
    retried: int
    batch: BatchOut


class QueueOut(BaseModel):
    name: str
    paused: bool
    concurrency: int | None = Field(description="most jobs of the queue running at once, over all workers")
    depth: int = Field(description="queued jobs")
    running: int
    waiting: int
    counts: dict[str, int]
    throughput_1m: int = Field(description="jobs that ended in the last minute")
    oldest_queued_age_s: float | None = Field(description="how long the longest-waiting due job has waited")


class QueueList(BaseModel):
    queues: list[QueueOut]


class QueueLimit(StrictModel):
    concurrency: int | None = Field(ge=1, le=1_000_000, description="null: no limit")


def add_batch_routes(api: API) -> None:
    router = api.router

    async def view(service: Service, batch_id: str) -> JSONResponse:
        return JSONResponse((await service.batch_view(batch_id)).to_dict())

    @router.post("/batches", status_code=201, response_model=BatchOut, tags=["batches"])
    async def submit_batch(body: BatchRequest, service: Svc) -> JSONResponse:
        """Validate every item against the task's schema, then store one job per item at once."""
        most = api.settings.max_batch_items
        if len(body.items) > most:
            raise BatchTooLarge(
                f"a batch has at most {most} items, not {len(body.items)}: split it (max_batch_items)",
                details={"limit": most, "items": len(body.items)},
            )
        api.quotas.submission(service.principal)
        batch = await service.submit_batch(body.task, body.items, name=body.name, options=body.options())
        return JSONResponse(BatchView.of(batch).to_dict(), status_code=201)

    @router.get("/batches", response_model=BatchList, tags=["batches"])
    async def list_batches(
        service: Svc,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: str | None = None,
        owner: Annotated[str | None, Query(description="only this owner's batches (admins)")] = None,
    ) -> JSONResponse:
        """The caller's batches (an admin's: everyone's), newest first; follow ``next_cursor``
        for older ones."""
        batches = await service.list_batches(limit=limit, before=cursor, owner=owner)
        return JSONResponse(
            {
                "batches": [BatchView.of(batch).to_dict() for batch in batches],
                "next_cursor": batches[-1].id if len(batches) == limit else None,
            }
        )

    @router.get("/batches/{batch_id}", response_model=BatchOut, tags=["batches"])
    async def get_batch(batch_id: str, service: Svc) -> JSONResponse:
        """Counts per status, percent, rate, ETA, and what the running items are doing now."""
        return await view(service, batch_id)

    @router.get("/batches/{batch_id}/items", response_model=JobList, tags=["batches"])
    async def batch_items(
        batch_id: str,
        service: Svc,
        status: Annotated[list[StatusName] | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: str | None = None,
    ) -> JSONResponse:
        """The batch's jobs, newest first, optionally of some statuses."""
        jobs = await service.batch_items(batch_id, status=statuses(status or []), limit=limit, before=cursor)
        next_cursor = jobs[-1].id if len(jobs) == limit else None
        most = service.app.settings.max_listed_result
        return JSONResponse({"jobs": [listed(job, most) for job in jobs], "next_cursor": next_cursor})

    @router.get(
        "/batches/{batch_id}/results",
        response_class=StreamingResponse,
        responses={200: {"content": {kind: {} for kind in RESULT_TYPES.values()}}},
        tags=["batches"],
    )
    async def batch_results(
        batch_id: str, service: Svc, format: Literal["json", "ndjson", "csv"] = "json"
    ) -> StreamingResponse:
        """Every item in submission order: its arguments, status, and result or error, streamed."""
        await service.get_batch(batch_id)  # a 404 before the stream starts
        writer = WRITERS[format]
        filename = f"batch-{batch_id}.{format}"
        return StreamingResponse(
            writer(service.batch_results(batch_id)),
            media_type=RESULT_TYPES[format],
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    @router.post("/batches/{batch_id}/cancel", response_model=BatchOut, tags=["batches"])
    async def cancel_batch(batch_id: str, service: Svc) -> JSONResponse:
        """Cancel the queued items at once; ask the running ones to stop."""
        await service.cancel_batch(batch_id)
        return await view(service, batch_id)

    @router.post("/batches/{batch_id}/pause", response_model=BatchOut, tags=["batches"])
    async def pause_batch(batch_id: str, service: Svc) -> JSONResponse:
        """Start no more of its items; running ones go on."""
        await service.pause_batch(batch_id)
        return await view(service, batch_id)

    @router.post("/batches/{batch_id}/resume", response_model=BatchOut, tags=["batches"])
    async def resume_batch(batch_id: str, service: Svc) -> JSONResponse:
        await service.pause_batch(batch_id, paused=False)
        return await view(service, batch_id)

    @router.post("/batches/{batch_id}/retry-failed", response_model=RetryCount, tags=["batches"])
    async def retry_failed(batch_id: str, service: Svc) -> JSONResponse:
        """Run the failed and cancelled items again (same ids; their events go on)."""
        retried = await service.retry_failed(batch_id)
        return JSONResponse({"retried": retried, "batch": (await service.batch_view(batch_id)).to_dict()})

    @router.get(
        "/batches/{batch_id}/stream",
        response_class=EventStream,
        responses={200: {"content": {"text/event-stream": {}}}},
        tags=["batches"],
    )
    async def batch_stream(
        batch_id: str,
        service: Svc,
        token: Annotated[str | None, Query(description="a stream token (POST /stream-tokens)")] = None,
    ) -> EventStream:
        """The batch as Server-Sent Events: ``snapshot`` (the batch), then ``batch`` events with
        its counts and the items that changed, at most one per 0.25 s however fast its items
        go, then ``end`` when every item has ended."""
        from .streams import open_sse

        await service.get_batch(batch_id)
        return open_sse(api, service.principal, _BatchFrames(service, batch_id))


#: A batch stream sends at most one ``batch`` event per this many seconds.
BATCH_EVENT_INTERVAL = 0.25
#: A ``batch`` event names at most this many changed items (the counts cover the rest).
CHANGED_SHOWN = 100


class BatchFollower:
    """A batch's changes as they happen: the events of its items, from the bus, folded into one
    update per interval: the batch read again from the store (counts, rate, ETA, running items)
    and the latest state of the items that changed. Shared by the SSE stream and the WebSocket.
    """

    __slots__ = ("_batch_id", "_changed", "_due", "_ended", "_members", "_service", "_subscription")

    def __init__(self, service: Service, batch_id: str) -> None:
        self._service = service
        self._batch_id = batch_id
        self._subscription: Subscription | None = None
        self._members: frozenset[str] = frozenset()
        self._changed: dict[str, dict[str, Any]] = {}
        self._due: float | None = None  # when the pending changes go out
        self._ended = False

    async def next(self, timeout: float) -> list[tuple[str, dict[str, Any]]] | None:
        """The next updates, as ``(kind, body)``: ``snapshot`` first, then ``batch``, then
        ``end`` once every item has ended; ``[]`` after ``timeout`` without any; ``None`` after
        the end."""
        if self._ended:
            return None
        if self._subscription is None:
            self._subscription = await self._service.bus().subscribe(None)
            self._members = await self._item_ids()
            return await self._update("snapshot")
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            until = deadline if self._due is None else min(deadline, self._due)
            try:
                event = await self._subscription.get(max(0.0, until - now))
                while event is not None:
                    self._note(event)
                    event = self._subscription.get_nowait()
            except Overflow:  # the counts come from the store anyway; some item details are lost
                self._due = self._due or time.monotonic()
            now = time.monotonic()
            if self._due is not None and now >= self._due:
                return await self._update("batch")
            if now >= deadline:
                return []

    def close(self) -> None:
        if self._subscription is not None:
            self._subscription.close()

    def _note(self, event: Event) -> None:
        if event.job_id not in self._members:
            return
        item = self._changed.setdefault(event.job_id, {"id": event.job_id})
        if event.type is EventType.STATUS:
            item["status"] = event.data["status"]
        elif event.type is EventType.PROGRESS:
            item["progress"] = event.data
        if self._due is None:
            self._due = time.monotonic() + BATCH_EVENT_INTERVAL

    async def _update(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        view = (await self._service.batch_view(self._batch_id)).to_dict()
        changed = list(self._changed.values())[-CHANGED_SHOWN:]
        self._changed.clear()
        self._due = None
        updates = [(kind, {"batch": view, "items": changed} if kind == "batch" else view)]
        if view["status"] in TERMINAL_BATCH:
            self._ended = True
            updates.append(("end", view))
        return updates

    async def _item_ids(self) -> frozenset[str]:
        ids: list[str] = []
        async for job in self._service.batch_results(self._batch_id, page=2000):
            ids.append(job.id)
        return frozenset(ids)


TERMINAL_BATCH = frozenset({"completed", "partial", "failed", "cancelled"})


class _BatchFrames:
    """A batch's SSE stream (a :class:`~.sse.FrameSource`) of a :class:`BatchFollower`."""

    __slots__ = ("_follower",)

    def __init__(self, service: Service, batch_id: str) -> None:
        self._follower = BatchFollower(service, batch_id)

    async def next(self, timeout: float) -> bytes | None:
        updates = await self._follower.next(timeout)
        if updates is None:
            return None
        return b"".join(frame(dumps(body), event=kind) for kind, body in updates)

    def close(self) -> None:
        self._follower.close()


def add_queue_routes(api: API) -> None:
    router = api.router

    @router.get("/queues", response_model=QueueList, tags=["queues"])
    async def list_queues(service: Svc) -> dict[str, Any]:
        """Every queue: depth, running, waiting, throughput in the last minute, oldest wait,
        controls. A user sees the queues of its jobs, with the counts of its jobs only."""
        return {"queues": await service.queue_records()}

    @router.post("/queues/{name}/pause", response_model=QueueOut, tags=["queues"])
    async def pause_queue(name: Annotated[str, QUEUE_NAME], service: Svc) -> dict[str, Any]:
        """Start none of the queue's jobs on any worker; running ones go on (admins)."""
        await service.pause_queue(name)
        return await service.queue_record(name)

    @router.post("/queues/{name}/resume", response_model=QueueOut, tags=["queues"])
    async def resume_queue(name: Annotated[str, QUEUE_NAME], service: Svc) -> dict[str, Any]:
        """(admins)"""
        await service.pause_queue(name, paused=False)
        return await service.queue_record(name)

    @router.put("/queues/{name}/limit", response_model=QueueOut, tags=["queues"])
    async def limit_queue(name: Annotated[str, QUEUE_NAME], body: QueueLimit, service: Svc) -> dict[str, Any]:
        """Run at most ``concurrency`` of the queue's jobs at once over all workers (admins)."""
        await service.limit_queue(name, body.concurrency)
        return await service.queue_record(name)


#: A queue's name in a path: as long as a submission's ``queue`` may be.
QUEUE_NAME = Path(min_length=1, max_length=100)
