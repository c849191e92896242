"""The HTTP API as an ``APIRouter`` to mount anywhere, with a lifespan that opens the store.

::

    jobs = underway.web.API(app)
    server = FastAPI(lifespan=jobs.lifespan)
    server.include_router(jobs.router, prefix="/api")
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, ClassVar

from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse

from ..app import App
from ..auth import ANONYMOUS, SESSION_COOKIE, Principal
from ..bounds import listed
from ..config import Settings
from ..exceptions import StoreGone
from ..jobs import Status
from ..quotas import Quotas
from ..stats import parse_window
from ..timefmt import to_iso
from ..worker import Worker
from .assets import Assets
from .batches import add_batch_routes, add_queue_routes
from .dashboard import Dashboard
from .errors import ErrorRoute
from .guard import CSRF, Authenticate, Guard, KeyWatch, Svc, credentials
from .health import StoreWatch, store_health
from .metrics import Metrics
from .models import (
    IDS,
    MAX_SEARCH,
    SEARCH,
    AnswerRequest,
    CancelCount,
    CancelRequest,
    ErrorOut,
    Health,
    JobList,
    JobOut,
    MeOut,
    RetriedCount,
    RetryRequest,
    SessionOut,
    SessionRequest,
    StatsOut,
    StatusName,
    StreamTokenOut,
    StreamTokenRequest,
    SubmitRequest,
    TaskList,
    WorkerList,
    job_filter,
    selected_ids,
)
from .sse import StreamSet

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {
        "model": ErrorOut,
        "description": "No principal: a missing, wrong, revoked or expired key or token",
    },
    403: {
        "model": ErrorOut,
        "description": "Not allowed to this principal (admins only, or not with a token)",
    },
    404: {"model": ErrorOut, "description": "No job or batch with that id (that this principal may see)"},
    409: {"model": ErrorOut, "description": "The job is not in a state that allows this"},
    413: {"model": ErrorOut, "description": "The body, or the batch, is too large"},
    422: {"model": ErrorOut, "description": "Invalid request, unknown task or invalid task arguments"},
    429: {"model": ErrorOut, "description": "Too many open streams or submissions (see Retry-After)"},
}


class API:
    """underway's HTTP API for one :class:`~underway.App`.

    ``authenticate`` is the host app's hook: given the request (or WebSocket), it returns a
    :class:`~underway.auth.Principal`, or ``None`` (then a built-in key or token is needed: 401,
    or close code 4401 for a WebSocket). ``standalone``: served by ``underway server`` (with
    ``auth=auto``, authentication is then on when it listens beyond loopback). ``with_worker``:
    :meth:`lifespan` also runs a worker in this process (as ``underway dev`` does), stopped with
    the server, its running jobs handed back.
    """

    #: Every API of this process, for :func:`stop_streams` (a server that shuts down).
    instances: ClassVar[weakref.WeakSet[API]] = weakref.WeakSet()

    def __init__(
        self,
        app: App,
        *,
        settings: Settings | None = None,
        authenticate: Authenticate | None = None,
        standalone: bool = False,
        with_worker: bool = False,
    ) -> None:
        self.app = app
        #: Run a worker in this process while the API is served (:meth:`lifespan`); may be
        #: changed until the server starts (``--no-worker``: workers run apart).
        self.with_worker = with_worker
        self.settings = settings = settings or app.settings
        self.guard = Guard(app, settings, authenticate, standalone=standalone)
        self.quotas = Quotas(
            max_streams=settings.max_streams_per_user, per_minute=settings.max_submissions_per_minute
        )
        self.open_websockets = 0
        #: The open WebSocket sessions (ended when their key is revoked).
        self.sessions: weakref.WeakSet[Any] = weakref.WeakSet()
        self._stopping: asyncio.Event | None = None
        #: The open SSE responses, ended together by :meth:`stop_streams`.
        self.sse_streams = StreamSet()
        self._stopping_loop: asyncio.AbstractEventLoop | None = None
        self.key_watch = KeyWatch(self.guard, settings.key_check_interval, self._open_streams)
        self.store_watch = StoreWatch(app)
        API.instances.add(self)
        route_class = type(
            "Route", (ErrorRoute,), {"body_limit": settings.max_body_size, "guard": self.guard}
        )
        self.router = APIRouter(route_class=route_class, responses=ERRORS)
        self.metrics = Metrics(self)
        #: The browser files (``underway.js``…), an ASGI app to mount: public, no principal.
        self.assets = Assets()
        add_job_routes(self)
        add_batch_routes(self)
        add_queue_routes(self)
        add_service_routes(self)
        from .streams import add_stream_routes
        from .ws import add_websocket_route

        add_stream_routes(self)
        add_websocket_route(self)

    def dashboard(self, api_url: str | None = None) -> Dashboard:
        """The dashboard, an ASGI app to mount (``site.mount("/underway", api.dashboard())``,
        after the router). ``api_url``: where the page finds this API, by default ``/api`` under
        the dashboard's mount point."""
        return Dashboard(api_url)

    @property
    def authenticate(self) -> Authenticate | None:
        return self.guard.authenticate

    def _open_streams(self) -> list[tuple[Principal, Any]]:
        """Every open stream with its principal and what ends it."""
        found: list[tuple[Principal, Any]] = []
        for stream in self.sse_streams.open_streams():
            principal = getattr(stream.source, "principal", None)
            if principal is not None:
                found.append((principal, stream.end))
        for session in list(self.sessions):
            found.append((session.principal, session.end))
        return found

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
        await self.guard.start()
        self.key_watch.start()
        self.store_watch.start()
        worker = Worker(self.app, settings=self.settings) if self.with_worker else None
        working = asyncio.create_task(worker.run()) if worker is not None else None
        try:
            yield
        finally:
            if worker is not None and working is not None:
                worker.stop()
                worker.stop()  # a second stop hands running jobs back at once
                with contextlib.suppress(StoreGone):  # it said so when it stopped
                    await working
            await self.store_watch.stop()
            await self.key_watch.stop()
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
    router = api.router

    @router.post("/jobs", status_code=201, response_model=JobOut, tags=["jobs"])
    async def submit_job(body: SubmitRequest, service: Svc) -> JSONResponse:
        """Validate the arguments against the task's schema and queue a job (owned by the
        caller; an admin may name another ``owner``)."""
        api.quotas.submission(service.principal)
        job = await service.submit(body.task, body.args, body.options(body.idempotency_key))
        api.metrics.submitted(job)
        return JSONResponse(job.to_dict(), status_code=201)

    @router.get("/jobs", response_model=JobList, tags=["jobs"])
    async def list_jobs(
        service: Svc,
        status: Annotated[list[StatusName] | None, Query()] = None,
        queue: str | None = None,
        task: str | None = None,
        label: Annotated[str | None, Query(pattern=r"^[^:]+:.*$", description="key:value")] = None,
        owner: Annotated[str | None, Query(description="only this owner's jobs (admins)")] = None,
        batch: Annotated[str | None, Query(description="a batch id")] = None,
        q: Annotated[str | None, Query(max_length=MAX_SEARCH, description=SEARCH)] = None,
        ids: Annotated[str | None, Query(description=IDS)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: str | None = None,
    ) -> JSONResponse:
        """The caller's jobs (an admin's: everyone's) matching the filters, newest first;
        follow ``next_cursor`` for older ones."""
        found = job_filter(
            status=status or (),
            queue=queue,
            task=task,
            batch=batch,
            label=label,
            owner=owner,
            q=q,
            ids=selected_ids(ids),
        )
        jobs = await service.list_jobs(found, limit=limit, before=cursor)
        next_cursor = jobs[-1].id if len(jobs) == limit else None
        most = service.app.settings.max_listed_result
        return JSONResponse({"jobs": [listed(job, most) for job in jobs], "next_cursor": next_cursor})

    @router.get("/jobs/{job_id}", response_model=JobOut, tags=["jobs"])
    async def get_job(job_id: str, service: Svc) -> JSONResponse:
        return job_json(await service.get(job_id))

    @router.post("/jobs/cancel", response_model=CancelCount, tags=["jobs"])
    async def cancel_jobs(body: CancelRequest, service: Svc) -> dict[str, int]:
        """Cancel every unfinished job of the caller's that matches (queued at once, running
        ones asked to stop)."""
        return {"cancelled": await service.cancel_all(body.job_filter(body.status))}

    @router.post("/jobs/retry", response_model=RetriedCount, tags=["jobs"])
    async def retry_jobs(body: RetryRequest, service: Svc) -> dict[str, int]:
        """Run every finished job of the caller's that matches again (same ids; the failed and
        cancelled ones when ``status`` is not given), each with its task's full attempts."""
        return {"retried": await service.retry_all(body.job_filter(body.status))}

    @router.post("/jobs/{job_id}/cancel", response_model=JobOut, tags=["jobs"])
    async def cancel_job(job_id: str, service: Svc) -> JSONResponse:
        return job_json(await service.cancel(job_id))

    @router.post("/jobs/{job_id}/retry", response_model=JobOut, tags=["jobs"])
    async def retry_job(job_id: str, service: Svc) -> JSONResponse:
        """Run a finished job again (same id; its events go on)."""
        return job_json(await service.retry(job_id))

    @router.post("/jobs/{job_id}/answer", response_model=JobOut, tags=["jobs"])
    async def answer_job(job_id: str, body: AnswerRequest, service: Svc) -> JSONResponse:
        """Answer the question a waiting job asks; it resumes."""
        return job_json(await service.answer(job_id, body.value, body.key))

    @router.delete("/jobs/{job_id}", status_code=204, tags=["jobs"])
    async def delete_job(job_id: str, service: Svc) -> Response:
        """Delete a finished job and its events."""
        await service.delete(job_id)
        return Response(status_code=204)


def add_service_routes(api: API) -> None:
    router = api.router

    @router.get("/tasks", response_model=TaskList, tags=["service"])
    async def list_tasks(service: Svc) -> dict[str, Any]:
        """Registered tasks with the JSON schema of their arguments."""
        return {"tasks": service.tasks()}

    @router.get("/workers", response_model=WorkerList, tags=["service"])
    async def list_workers(service: Svc) -> dict[str, Any]:
        """Workers that heartbeated within three lease timeouts (admins)."""
        workers = await service.workers(3 * api.settings.lease_timeout)
        return {"workers": [worker.to_dict() for worker in workers]}

    @router.get("/stats", response_model=StatsOut, tags=["service"])
    async def stats(
        service: Svc,
        window: Annotated[
            str, Query(max_length=40, description="seconds, or 15m, 1h, 24h, 7d (at most 7 days)")
        ] = "1h",
        owner: Annotated[str | None, Query(description="only this owner's jobs (admins)")] = None,
    ) -> dict[str, Any]:
        """Jobs finished and their latency percentiles in about 60 buckets of the window, and the
        current depth: of the caller's jobs (an admin: all, or ``owner``'s)."""
        return await service.stats(parse_window(window), owner=owner)

    @router.post("/stream-tokens", status_code=201, response_model=StreamTokenOut, tags=["auth"])
    async def stream_token(body: StreamTokenRequest, service: Svc) -> dict[str, Any]:
        """A short-lived signed token for a browser's streams (``?token=``): it may read, cancel
        and answer the job or batch named, or (``{}``) all of the caller's jobs, and nothing
        else. An admin may make one for another ``owner`` (a host app's backend for its user)."""
        made = await service.stream_token(job=body.job, batch=body.batch, ttl=body.ttl, owner=body.owner)
        return {"token": made.token, "expires_at": to_iso(made.expires_at)}

    @router.post("/session", response_model=SessionOut, tags=["auth"])
    async def create_session(body: SessionRequest, request: Request) -> JSONResponse:
        """Sign a browser in with an API key: an HttpOnly, SameSite=Strict cookie, and a CSRF
        token the page sends as ``X-CSRF-Token`` with every change it makes."""
        accounts = api.app.accounts
        principal = await accounts.principal_of_key(body.key)
        session = await accounts.session(principal, api.settings.session_ttl)
        answer = JSONResponse(
            {
                "owner": principal.owner,
                "role": principal.role,
                "csrf_token": session.csrf_token,
                "expires_at": to_iso(session.expires_at),
            }
        )
        answer.set_cookie(
            SESSION_COOKIE,
            session.cookie,
            max_age=round(api.settings.session_ttl),
            path=_api_path(request),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return answer

    @router.delete("/session", status_code=204, tags=["auth"])
    async def end_session(request: Request) -> Response:
        """Sign the browser out: its session cookie is dropped."""
        answer = Response(status_code=204)
        answer.delete_cookie(SESSION_COOKIE, path=_api_path(request), httponly=True, samesite="strict")
        return answer

    @router.get("/me", response_model=MeOut, tags=["auth"])
    async def me(request: Request, service: Svc) -> dict[str, Any]:
        """Who the caller is, and what it may do (the dashboard shows or hides its controls)."""
        principal = service.principal
        kind = credentials(request)[0]
        via = kind or ("anonymous" if principal is ANONYMOUS else "hook")
        grant = principal.grant
        return {
            "owner": principal.owner,
            "role": principal.role,
            "auth": api.guard.on,
            "via": via,
            "can": {action: principal.may(action) for action in ("write", "cancel", "answer", "admin")},
            "grant": None if grant is None else {"job": grant.job, "batch": grant.batch},
            "csrf_token": request.scope.get(CSRF) if via == "session" else None,
        }

    @router.get("/healthz", response_model=Health, responses={503: {"model": Health}}, tags=["service"])
    async def health() -> JSONResponse:
        """Liveness, and whether the store can be read and written (503 with the reason when
        not: unreachable, cannot write, full, or its database file deleted or replaced); needs
        no principal."""
        body = await store_health(api.app)
        return JSONResponse(body, status_code=200 if body["ok"] else 503)

    @router.get("/metrics", response_class=Response, tags=["service"])
    async def metrics(service: Svc) -> Response:
        """Prometheus metrics: jobs by status and queue, throughput, durations, open streams (admins)."""
        body, content_type = await api.metrics.render(service)
        return Response(body, media_type=content_type)


def _api_path(request: Request) -> str:
    """Where the API is mounted (``/api`` for ``/api/session``): the session cookie's path."""
    path = request.url.path
    return path[: -len("/session")] or "/"


__all__ = ["API", "Authenticate", "Status"]
