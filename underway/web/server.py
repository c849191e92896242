"""The standalone server: the API under ``/api``, the dashboard at ``/``, run by uvicorn.

``underway server`` serves it; ``underway dev`` and ``underway demo`` also run a worker in the
same process and event loop.
"""

from __future__ import annotations

import gc
import logging
import re
import socket
from typing import Any
from urllib.parse import quote

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..app import App
from ..config import Settings
from ..exceptions import UnderwayError
from .api import API, Authenticate, stop_streams
from .dashboard import PageMount
from .errors import http_error_response, response_for
from .guard import CSRF_HEADERS, check_serving
from .openapi import with_tasks


def create_app(
    app: App,
    *,
    settings: Settings | None = None,
    with_worker: bool = False,
    authenticate: Authenticate | None = None,
) -> FastAPI:
    """A FastAPI app serving ``app``'s jobs under ``/api``, the browser files under ``/assets``
    and the dashboard at ``/``; with a worker if ``with_worker``.

    ``ConfigError`` if it would listen beyond loopback with ``auth=off``.
    """
    settings = settings or app.settings
    check_serving(settings)
    api = API(app, settings=settings, authenticate=authenticate, standalone=True, with_worker=with_worker)

    server = FastAPI(
        title="underway",
        summary="Durable background jobs with live progress",
        lifespan=api.lifespan,
        openapi_url=None,  # served below, behind the guard
        docs_url=None,
        redoc_url=None,
    )
    server.state.underway = api
    server.include_router(api.router, prefix="/api")
    server.mount("/assets", api.assets, name="assets")
    add_documentation(server, api)

    @server.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        response = http_error_response(exc)
        if exc.status_code == 405:  # starlette names the methods of the first route of the path only
            response.headers["Allow"] = ", ".join(allowed_methods(server, request.scope))
        return response

    @server.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return response_for(exc)

    @server.exception_handler(UnderwayError)
    async def refused(_request: Request, exc: UnderwayError) -> JSONResponse:
        return response_for(exc)

    if settings.allowed_origins:
        server.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.allowed_origins),
            allow_credentials=True,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID", *CSRF_HEADERS],
            max_age=600,
        )
    server.add_middleware(SecurityHeaders)
    server.router.routes.append(PageMount("/", api.dashboard(), name="dashboard"))
    return server


def add_documentation(server: FastAPI, api: API) -> None:
    """``/api/openapi.json`` (with the registered tasks: :func:`~.openapi.with_tasks`) and
    ``/api/docs``, for principals only when authentication is on (the docs page passes its
    ``?token=`` on to the schema)."""

    @server.get("/api/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> JSONResponse:
        await api.guard.principal(request)
        return JSONResponse(with_tasks(server.openapi(), api.app.tasks))

    @server.get("/api/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        await api.guard.principal(request)
        token = request.query_params.get("token")
        schema = "/api/openapi.json" + (f"?token={quote(token, safe='')}" if token else "")
        return get_swagger_ui_html(openapi_url=schema, title="underway API")


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(server: FastAPI, scope: Scope) -> list[str]:
    """Every method some route of ``server`` takes at the path of ``scope``."""
    routes = server.router.routes
    return [m for m in METHODS if any(r.matches({**scope, "method": m})[0] is Match.FULL for r in routes)]


class SecurityHeaders:
    """Adds the headers every page of the standalone server carries, where a route did not."""

    HEADERS = (
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
        (b"content-security-policy", b"frame-ancestors 'none'"),
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend((name, value) for name, value in self.HEADERS if name not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_secured)


class Server(uvicorn.Server):
    """uvicorn's server, which ends underway's event streams and long polls as it shuts down.

    uvicorn waits for open responses before it stops, and a stream never ends by itself: a
    plain ``uvicorn.Server`` stopped with ``should_exit`` (or running in a thread) holds its
    shutdown for ``timeout_graceful_shutdown`` and then cancels the streams with errors. This
    one ends them at once, cleanly; clients reconnect and resume (``Last-Event-ID``).
    """

    def __init__(self, config: uvicorn.Config, *, freeze_heap: bool = False) -> None:
        super().__init__(config)
        self.freeze_heap = freeze_heap

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.freeze_heap and self.started:
            freeze_heap()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        stop_streams()
        await super().shutdown(sockets)


class RedactTokens(logging.Filter):
    """Keeps stream tokens out of the access log: ``?token=uwt.…`` is logged as ``?token=…``."""

    SECRET = re.compile(r"(token=)[^&\s]+")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self._redact(arg) for arg in record.args)
        return True

    def _redact(self, value: Any) -> Any:
        return self.SECRET.sub(r"\1…", value) if isinstance(value, str) else value


def uvicorn_config(server: FastAPI, settings: Settings) -> uvicorn.Config:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactTokens) for f in access.filters):
        access.addFilter(RedactTokens())
    return uvicorn.Config(
        server,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        ws_max_size=settings.ws_max_message * 4,
        timeout_graceful_shutdown=5,
        log_level="warning",
        lifespan="on",
    )


async def serve(server: FastAPI, settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT (uvicorn installs the handlers)."""
    await Server(uvicorn_config(server, settings), freeze_heap=True).serve()


#: The collector's thresholds for ``underway server`` (Python's default: 700, 10, 10). A young
#: collection every 700 allocations moves the waits of thousands of streams, alive for just
#: one event, into the oldest generation, and a full collection follows every 25 % of growth
#: there. Collecting the young generations ~70x less often promotes far fewer of them.
GC_THRESHOLDS = (50_000, 20, 20)


def freeze_heap() -> None:
    """Take what the process built up to now (modules, the app, routes, pydantic models) out of
    the garbage collector's sight, once, after startup.

    A full collection walks every tracked object: with thousands of open streams it stops the
    server for a noticeable time, and the ~half a million objects of startup, which live as
    long as the process, only make that longer. Only a process that owns its heap should do
    this (``underway server``), not an app mounted into someone else's server.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
