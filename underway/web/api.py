"""The HTTP API as an ``APIRouter`` to mount anywhere, with a lifespan that opens the store.

::

    jobs = underway.web.API(app)
    server = FastAPI(lifespan=jobs.lifespan)
    server.include_router(jobs.router, prefix="/api")
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, ClassVar

from fastapi import APIRouter, Depends, FastAPI, Query, Response
from fastapi.responses import JSONResponse
from starlette.requests import HTTPConnection

from ..app import App
from ..config import Settings
from ..jobs import Status
from ..store import JobFilter
from .batches import add_batch_routes, add_queue_routes
from .errors import ErrorRoute, Unauthenticated
from .metrics import Metrics
from .models import (
    AnswerRequest,
    CancelCount,
    CancelRequest,
    ErrorOut,
    Health,
    JobList,
    JobOut,
    StatusName,
    SubmitRequest,
    TaskList,
    WorkerList,
    statuses,
)
from .sse import StreamSet

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No job with that id"},
    409: {"model": ErrorOut, "description": "The job is not in a state that allows this"},
    401: {"model": ErrorOut, "description": "Not authenticated (when the API has an authenticate hook)"},
    413: {"model": ErrorOut, "description": "The body is too large"},
    422: {"model": ErrorOut, "description": "Invalid request, unknown task or invalid task arguments"},
}


Authenticate = Callable[[HTTPConnection], Awaitable[Any]]


class API:
    """underway's HTTP API for one :class:`~underway.App`.

    ``authenticate`` is the host app's hook: given the request (or WebSocket), it returns a
    principal, or ``None`` to refuse it (401, or close code 4401 for a WebSocket).
    """

    #: Every API of this process, for :func:`stop_streams` (a server that shuts down).
    instances: ClassVar[weakref.WeakSet[API]] = weakref.WeakSet()

    def __init__(
        self, app: App, *, settings: Settings | None = None, authenticate: Authenticate | None = None
    ) -> None:
        self.app = app
        self.settings = settings or app.settings
        self.authenticate = authenticate
        self.open_websockets = 0
        self._stopping: asyncio.Event | None = None
        #: The open SSE responses, ended together by :meth:`stop_streams`.
        self.sse_streams = StreamSet()
        self._stopping_loop: asyncio.AbstractEventLoop | None = None
        API.instances.add(self)
        route_class = type("Route", (ErrorRoute,), {"body_limit": self.settings.max_body_size})
        self.router = APIRouter(
            route_class=route_class, responses=ERRORS, dependencies=[Depends(self._require_principal)]
        )
        self.metrics = Metrics(self)
        add_job_routes(self)
        add_batch_routes(self)
        add_queue_routes(self)
        add_service_routes(self)
        from .streams import add_stream_routes
        from .ws import add_websocket_route

        add_stream_routes(self)
        add_websocket_route(self)

    async def _require_principal(self, conn: HTTPConnection) -> Any:
        if self.authenticate is None or conn.scope["type"] == "websocket":
            return None  # a WebSocket is checked once accepted, to close it with 4401
        principal = await self.authenticate(conn)
        if principal is None:
            raise Unauthenticated("authenticate to use this API")
        return principal

    @property
    def stopping(self) -> asyncio.Event:
        """Set when the server shuts down: open SSE streams and long polls end at once."""
        loop = asyncio.get_running_loop()
        if self._stopping is None or self._stopping_loop is not loop:
            self._stopping, self._stopping_loop = asyncio.Event(), loop
        return self._stopping

    def stop_streams(self) -> None:
        """End every open SSE stream and long poll now, and any opened later (call it on the
        loop that serves the API). A WebSocket is closed by the server itself (1012)."""
        self.stopping.set()
        self.sse_streams.stop()

    @asynccontextmanager
    async def lifespan(self, _server: FastAPI | None = None) -> AsyncIterator[None]:
        self._stopping = None  # streams of a new run of the server are not stopped
        self.sse_streams.restart()
        _ = self.stopping
        await self.app.open()
        try:
            yield
        finally:
            await self.app.close()


def stop_streams(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Stop the streams of every API served on ``loop`` (default: the running one).

    uvicorn waits for open responses to end before it stops (up to its graceful-shutdown
    timeout), and an event stream does not end by itself: :class:`underway.web.Server` calls
    this as it starts to shut down.
    """
    loop = loop or asyncio.get_running_loop()
    for api in list(API.instances):
        if api._stopping_loop is loop:
            api.stop_streams()


def job_json(job: Any) -> JSONResponse:
    return JSONResponse(job.to_dict())


def add_job_routes(api: API) -> None:
    router, app = api.router, api.app

    @router.post("/jobs", status_code=201, response_model=JobOut, tags=["jobs"])
    async def submit_job(body: SubmitRequest) -> JSONResponse:
        """Validate the arguments against the task's schema and queue a job."""
        job = await app.submit(body.task, body.args, options=body.options(body.idempotency_key))
        api.metrics.submitted(job)
        return JSONResponse(job.to_dict(), status_code=201)

    @router.get("/jobs", response_model=JobList, tags=["jobs"])
    async def list_jobs(
        status: Annotated[list[StatusName] | None, Query()] = None,
        queue: str | None = None,
        task: str | None = None,
        label: Annotated[str | None, Query(pattern=r"^[^:]+:.*$", description="key:value")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: str | None = None,
    ) -> JSONResponse:
        """Jobs matching the filters, newest first; follow ``next_cursor`` for older ones."""
        key, _, value = (label or "").partition(":")
        job_filter = JobFilter(
            statuses=statuses(status or []), queue=queue, task=task, label=(key, value) if label else None
        )
        jobs = await (await _store(app)).list_jobs(job_filter, limit=limit, before=cursor)
        next_cursor = jobs[-1].id if len(jobs) == limit else None
        return JSONResponse({"jobs": [job.to_dict() for job in jobs], "next_cursor": next_cursor})

    @router.get("/jobs/{job_id}", response_model=JobOut, tags=["jobs"])
    async def get_job(job_id: str) -> JSONResponse:
        return job_json(await app.get(job_id))

    @router.post("/jobs/cancel", response_model=CancelCount, tags=["jobs"])
    async def cancel_jobs(body: CancelRequest) -> dict[str, int]:
        """Cancel every unfinished job that matches (queued at once, running ones asked to stop)."""
        key, _, value = (body.label or "").partition(":")
        count = await app.cancel_all(
            queue=body.queue,
            task=body.task,
            status=body.status,
            batch=body.batch,
            label=(key, value) if body.label else None,
        )
        return {"cancelled": count}

    @router.post("/jobs/{job_id}/cancel", response_model=JobOut, tags=["jobs"])
    async def cancel_job(job_id: str) -> JSONResponse:
        return job_json(await app.cancel(job_id))

    @router.post("/jobs/{job_id}/retry", response_model=JobOut, tags=["jobs"])
    async def retry_job(job_id: str) -> JSONResponse:
        """Run a finished job again (same id; its events go on)."""
        return job_json(await app.retry(job_id))

    @router.post("/jobs/{job_id}/answer", response_model=JobOut, tags=["jobs"])
    async def answer_job(job_id: str, body: AnswerRequest) -> JSONResponse:
        """Answer the question a waiting job asks; it resumes."""
        return job_json(await app.answer(job_id, body.value, body.key))

    @router.delete("/jobs/{job_id}", status_code=204, tags=["jobs"])
    async def delete_job(job_id: str) -> Response:
        """Delete a finished job and its events."""
        await app.delete(job_id)
        return Response(status_code=204)


def add_service_routes(api: API) -> None:
    router, app = api.router, api.app

    @router.get("/tasks", response_model=TaskList, tags=["service"])
    async def list_tasks() -> dict[str, Any]:
        """Registered tasks with the JSON schema of their arguments."""
        return {"tasks": [task.describe() for _, task in sorted(app.tasks.items())]}

    @router.get("/workers", response_model=WorkerList, tags=["service"])
    async def list_workers() -> dict[str, Any]:
        """Workers that heartbeated within three lease timeouts."""
        workers = await (await _store(app)).workers(3 * api.settings.lease_timeout)
        return {"workers": [worker.to_dict() for worker in workers]}

    @router.get("/healthz", response_model=Health, responses={503: {"model": Health}}, tags=["service"])
    async def health() -> JSONResponse:
        try:
            await (await _store(app)).feed_position()
        except Exception as exc:
            return JSONResponse({"ok": False, "store": f"unreachable: {exc}"}, status_code=503)
        return JSONResponse({"ok": True, "store": "ok"})

    @router.get("/metrics", response_class=Response, tags=["service"])
    async def metrics() -> Response:
        """Prometheus metrics: jobs by status and queue, throughput, durations, open streams."""
        body, content_type = await api.metrics.render()
        return Response(body, media_type=content_type)


async def _store(app: App) -> Any:
    await app.open()
    return app.store


__all__ = ["API", "Status"]
