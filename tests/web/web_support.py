"""Helpers of the HTTP API tests: a real uvicorn server in a thread, test tasks, an SSE reader.

Streams, long polls and WebSockets need a real server (in-process ASGI transports buffer whole
responses), so every test here talks to ``underway.web.create_app(...)`` served by uvicorn on
127.0.0.1, port 0, with the in-process worker running the tasks below on a SQLite file.

Test modules import this by name (``tests/web`` is on ``sys.path`` under pytest's default
import mode); the fixtures live in ``conftest.py``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from live_support import Gates, wait_until
from live_support import server_settings as server_settings  # the fixtures' and tests' import
from pydantic import Field

import underway
from underway.web import create_app
from underway.web.api import Authenticate
from underway.web.server import Server, uvicorn_config

T = TypeVar("T")

#: How long a condition that should hold "at once" may take on a slow machine.
SOON = 5.0
#: A server stops within this (uvicorn's graceful-shutdown timeout is 5 s).
STOP_LIMIT = 3.0


def build_app(settings: underway.Settings, gates: Gates) -> underway.App:
    """An App with the test tasks (names without module prefixes)."""
    app = underway.App(settings=settings)

    @app.task(name="echo")
    async def echo(value: int = 0, text: str = "") -> dict[str, Any]:
        """Return the arguments at once."""
        return {"value": value, "text": text}

    @app.task(name="add")
    def add(a: int, b: int = 0) -> int:
        """A sync task with a required argument."""
        return a + b

    @app.task(name="hold")
    async def hold(
        ctx: underway.Context, gate: str, steps: Annotated[int, Field(le=1000)] = 0
    ) -> dict[str, Any]:
        """Run until ``gate`` opens; before that, one log and one progress per opened ``gate/i``."""
        for i in range(1, steps + 1):
            await gates.wait(f"{gate}/{i}")
            ctx.log.info(f"step {i}")
            ctx.progress(i, steps, message=f"step {i}")
        await gates.wait(gate)
        return {"gate": gate}

    @app.task(name="ask")
    async def ask(ctx: underway.Context, question: str = "Go on?") -> dict[str, Any]:
        """Ask a yes/no question and return the answer."""
        answer = await ctx.ask(question, options=["yes", "no"])
        return {"answer": answer}

    @app.task(name="boom")
    async def boom() -> None:
        """Fail at once."""
        raise ValueError("boom")

    @app.task(name="flood")
    async def flood(
        ctx: underway.Context,
        gate: str,
        count: Annotated[int, Field(le=10_000)],
        size: Annotated[int, Field(le=10_000)] = 1000,
    ) -> int:
        """Once ``gate`` opens, write ``count`` log lines of ``size`` characters (bounded: the
        fuzzed submissions of tests/web/test_web_schema.py run it too)."""
        await gates.wait(gate)
        for i in range(count):
            ctx.log.info(f"{i:08d} " + "x" * size)
            if i % 100 == 99:
                await asyncio.sleep(0)
        return count

    @app.task(name="item")
    async def item(text: str, fail: bool = False) -> dict[str, Any]:
        """A batch item: fails when told to, else returns its text (commas, quotes, any script)."""
        if fail:
            raise ValueError(f"item {text!r} failed, as asked")
        return {"text": text, "length": len(text)}

    @app.task(name="other.echo", queue="other")
    async def other_echo(value: int = 0) -> int:
        """Lives on the ``other`` queue."""
        return value

    return app


@dataclass
class LiveServer:
    """A uvicorn server running ``create_app(app, with_worker=True)`` in a background thread."""

    app: underway.App
    web: FastAPI
    settings: underway.Settings
    gates: Gates
    server: uvicorn.Server
    thread: threading.Thread
    port: int
    headers: dict[str, str] = field(default_factory=dict)
    clients: list[httpx.Client] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        return f"{self.base}/api"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/ws"

    def client(self, timeout: float = 10.0, **kwargs: Any) -> httpx.Client:
        """An httpx client on ``/api`` (with the server's ``headers``), closed with the server."""
        kwargs["headers"] = {
            "X-Requested-With": "underway-tests",
            **self.headers,
            **kwargs.get("headers", {}),
        }
        client = httpx.Client(base_url=self.api, timeout=timeout, trust_env=False, **kwargs)
        self.clients.append(client)
        return client

    # -- a few calls most tests make ---------------------------------------------------------

    def submit(self, task: str, args: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
        response = self.client().post("/jobs", json={"task": task, "args": args or {}, **options})
        assert response.status_code == 201, response.text
        job: dict[str, Any] = response.json()
        return job

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.client().get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        return job

    def events(self, job_id: str, after: int = 0) -> list[dict[str, Any]]:
        response = self.client().get(f"/jobs/{job_id}/events", params={"after": after})
        assert response.status_code == 200, response.text
        events: list[dict[str, Any]] = response.json()["events"]
        return events

    def wait_status(self, job_id: str, *statuses: str, timeout: float = SOON) -> dict[str, Any]:
        def in_status() -> dict[str, Any] | None:
            job = self.job(job_id)
            return job if job["status"] in statuses else None

        return wait_until(in_status, timeout, what=f"job {job_id} to be {' or '.join(statuses)}")

    def wait_running(self, job_id: str) -> dict[str, Any]:
        """Wait until the job runs and its ``status: running`` event is stored."""
        job = self.wait_status(job_id, "running")
        wait_until(
            lambda: any(e["data"].get("status") == "running" for e in self.events(job_id)),
            what=f"the running event of {job_id}",
        )
        return job

    def on_server_loop(self, fn: Callable[[], T]) -> T:
        """Call ``fn`` on the server's event loop and return what it returns."""

        async def call() -> T:
            return fn()

        loop = self.server.servers[0].get_loop()
        return asyncio.run_coroutine_threadsafe(call(), loop).result(SOON)

    # -- life cycle --------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the server (if a test did not) and close the clients; idempotent.

        The server must stop well within uvicorn's graceful-shutdown timeout: a stream or a
        WebSocket task that outlives its connection holds the shutdown until that timeout.
        """
        self.gates.open_all()
        for client in self.clients:
            client.close()
        self.clients.clear()
        self.server.should_exit = True
        self.thread.join(STOP_LIMIT)
        if self.thread.is_alive():
            self.thread.join(30)
            pytest.fail(f"the server took more than {STOP_LIMIT} s to stop: something held its shutdown")


def start_server(
    settings: underway.Settings,
    *,
    authenticate: Authenticate | None = None,
    headers: dict[str, str] | None = None,
) -> LiveServer:
    """Start a server for ``settings`` (whose ``port`` should be 0) and wait until it listens;
    ``headers`` go with every request of :meth:`LiveServer.client` (credentials, say)."""
    gates = Gates()
    app = build_app(settings, gates)
    web = create_app(app, settings=settings, with_worker=True, authenticate=authenticate)
    server = Server(uvicorn_config(web, settings))
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            server.run()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=serve, name="test-uvicorn", daemon=True)
    thread.start()
    wait_until(lambda: server.started or errors or not thread.is_alive(), 10.0, what="uvicorn to start")
    if not server.started:
        gates.open_all()
        server.should_exit = True
        thread.join(10)
        raise RuntimeError(f"the test server did not start: {errors}")
    port = server.servers[0].sockets[0].getsockname()[1]
    live = LiveServer(
        app=app,
        web=web,
        settings=settings,
        gates=gates,
        server=server,
        thread=thread,
        port=port,
        headers=headers or {},
    )
    # The worker heartbeats once it runs: wait for it, so tests start with a working server.
    wait_until(lambda: live.client().get("/workers").json()["workers"], what="the in-process worker")
    return live


# -- Server-Sent Events, read line by line -----------------------------------------------------


@dataclass
class Frame:
    """One SSE frame: its fields as sent, and its comment lines (without the colon)."""

    fields: list[tuple[str, str]] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)

    def get(self, name: str) -> str | None:
        values = [value for key, value in self.fields if key == name]
        return values[-1] if values else None

    @property
    def event(self) -> str | None:
        return self.get("event")

    @property
    def id(self) -> str | None:
        return self.get("id")

    @property
    def data(self) -> str:
        return "\n".join(value for key, value in self.fields if key == "data")

    def json(self) -> Any:
        return json.loads(self.data)


def frames(lines: Iterator[str]) -> Iterator[Frame]:
    """Group the lines of an SSE body (``response.iter_lines()``) into frames."""
    frame = Frame()
    for line in lines:
        if line == "":
            if frame.fields or frame.comments:
                yield frame
            frame = Frame()
            continue
        if line.startswith(":"):
            frame.comments.append(line[1:].lstrip(" "))
            continue
        name, _, value = line.partition(":")
        frame.fields.append((name, value.removeprefix(" ")))
    if frame.fields or frame.comments:
        yield frame


def events_only(stream: Iterator[Frame]) -> Iterator[Frame]:
    """The frames that carry an event (no heartbeats or retry-only frames)."""
    return (f for f in stream if f.event is not None)


def raw_socket(port: int, request: bytes, rcvbuf: int | None = None) -> socket.socket:
    """A plain TCP socket that sent ``request`` and reads nothing (a frozen client)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    sock.sendall(request)
    return sock


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """Check the one error shape ``{"error": {"code", "message", "details"?}}``; return the error."""
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert {"code", "message"} <= set(error) <= {"code", "message", "details"}, error
    assert isinstance(error["code"], str)
    assert error["code"]
    assert isinstance(error["message"], str)
    assert error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


def live_streams(live: LiveServer, transport: str) -> int:
    """The server's ``underway_open_streams`` gauge for one transport."""
    text = httpx.get(f"{live.api}/metrics", headers=live.headers, timeout=10, trust_env=False).text
    for line in text.splitlines():
        if line.startswith(f'underway_open_streams{{transport="{transport}"}}'):
            return int(float(line.rsplit(" ", 1)[1]))
    raise AssertionError(f"no underway_open_streams for {transport}")


#: The ``start`` fixture's type: ``start(authenticate=None, headers=None, **settings)``.
StartServer = Callable[..., LiveServer]
