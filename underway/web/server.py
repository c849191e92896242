"""The standalone server: API under ``/api`` (room for the dashboard at ``/``), run by uvicorn.

``underway server`` serves it; ``underway dev`` and ``underway demo`` also run a worker in the
same process and event loop.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.exceptions import HTTPException

from ..app import App
from ..config import Settings
from ..worker import Worker
from .api import API, Authenticate, stop_streams
from .errors import error_response, response_for


def create_app(
    app: App,
    *,
    settings: Settings | None = None,
    with_worker: bool = False,
    authenticate: Authenticate | None = None,
) -> FastAPI:
    """A FastAPI app serving ``app``'s jobs under ``/api``; with a worker if ``with_worker``."""
    api = API(app, settings=settings, authenticate=authenticate)

    @asynccontextmanager
    async def lifespan(_server: FastAPI) -> AsyncIterator[None]:
        async with api.lifespan():
            worker = Worker(app, settings=api.settings) if with_worker else None
            working = asyncio.create_task(worker.run()) if worker is not None else None
            try:
                yield
            finally:
                if worker is not None and working is not None:
                    worker.stop()
                    worker.stop()  # a second stop hands running jobs back at once
                    await working

    server = FastAPI(
        title="underway",
        summary="Durable background jobs with live progress",
        lifespan=lifespan,
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
    )
    server.state.underway = api
    server.include_router(api.router, prefix="/api")

    @server.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse("/api/docs")

    @server.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else "http_error"
        return error_response(exc.status_code, code, str(exc.detail))

    @server.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return response_for(exc)

    return server


class Server(uvicorn.Server):
    """uvicorn's server, which ends underway's event streams and long polls as it shuts down.

    uvicorn waits for open responses before it stops, and a stream never ends by itself: a
    plain ``uvicorn.Server`` stopped with ``should_exit`` (or running in a thread) holds its
    shutdown for ``timeout_graceful_shutdown`` and then cancels the streams with errors. This
    one ends them at once, cleanly; clients reconnect and resume (``Last-Event-ID``).
    """

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        stop_streams()
        await super().shutdown(sockets)


def uvicorn_config(server: FastAPI, settings: Settings) -> uvicorn.Config:
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
    await Server(uvicorn_config(server, settings)).serve()
