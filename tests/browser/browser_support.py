"""Helpers of the browser tests: Chromium through Playwright, a real server, a strict-CSP page.

Each test starts ``underway.web.create_app(app, with_worker=True)`` with the tasks below under
uvicorn on 127.0.0.1, port 0, in a thread (as ``tests/web`` does), and adds to that app the test
page: ``/browser/`` (HTML, no inline script, served with ``Content-Security-Policy: default-src
'self'; script-src 'self'; style-src 'self'``) loads ``/browser/page.js`` (``page/page.js``
here), which imports ``/assets/underway-elements.js`` and creates one element from the page's
query string. ``/assets`` is the server's own (``create_app`` mounts it) or, on a server without
it, a ``StaticFiles`` of ``underway/web/static``.

Chromium is Debian's ``chromium`` (``scripts/install-chromium``), driven by the pinned
``playwright`` through ``executable_path``: never ``playwright install``. Without Chromium or
Playwright the tests skip with the reason, except under ``CI=true``, where they fail.

Test modules import this by name (``tests/browser`` is on ``sys.path`` under pytest's default
import mode); the fixtures live in ``conftest.py``.
"""

from __future__ import annotations

import functools
import json
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urlencode

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from live_support import Gates
from live_support import server_settings as server_settings  # the fixtures' import
from live_support import wait_until as wait_for
from needs import unavailable

import underway
from underway.timefmt import to_iso
from underway.web import create_app
from underway.web.api import Authenticate
from underway.web.server import Server, uvicorn_config

if TYPE_CHECKING:
    from playwright.sync_api import ConsoleMessage, Locator, LocatorAssertions, Page

T = TypeVar("T")
StartServer = Callable[..., "LiveServer"]

HERE = Path(__file__).resolve().parent

#: How long a condition that should hold "at once" may take on a slow machine.
SOON = 10.0
#: A server stops within this (uvicorn's graceful-shutdown timeout is 5 s).
STOP_LIMIT = 3.0

#: The page's policy: nothing inline, nothing from elsewhere.
PAGE_CSP = "default-src 'self'; script-src 'self'; style-src 'self'"

#: Chromium as root, headless, without background traffic (see ECOSYSTEM.md).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
]

#: Run in every page before its own scripts: records CSP violations, which the page's own
#: listeners could miss (page.evaluate() ignores the page's CSP, so it cannot test it).
WATCH_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__violations.push(`${event.violatedDirective} blocked ${event.blockedURI || "inline"}`
    + ` at ${event.sourceFile}:${event.lineNumber}`);
}, true);
"""


# -- Chromium ------------------------------------------------------------------------------------


def chromium_executable() -> str | None:
    """The Chromium to drive: ``chromium`` on PATH, else Debian's binary, else None."""
    found = shutil.which("chromium")
    if found:
        return found
    debian = Path("/usr/lib/chromium/chromium")
    return str(debian) if debian.exists() else None


@functools.cache
def _unavailable() -> str | None:
    """Why the browser tests cannot run, or None if they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -c constraints.txt 'underway[dev]')"
    if chromium_executable() is None:
        return "Chromium is not installed (scripts/install-chromium; never `playwright install`)"
    return None


def require_browser() -> None:
    reason = _unavailable()
    if reason is not None:
        unavailable("Chromium with Playwright", reason)


def expect(locator: Locator) -> LocatorAssertions:
    """Playwright's ``expect``, imported on use (without Playwright the fixtures skip first)."""
    from playwright.sync_api import expect as playwright_expect

    playwright_expect.set_options(timeout=SOON * 1000)
    return playwright_expect(locator)


# -- waiting and gates ---------------------------------------------------------------------------


def wait_until(predicate: Callable[[], T | None], timeout: float = SOON, **options: Any) -> T:
    """``live_support.wait_until`` with the browser tests' longer default timeout."""
    return wait_for(predicate, timeout, **options)


# -- the server ----------------------------------------------------------------------------------


def build_app(settings: underway.Settings, gates: Gates) -> underway.App:
    """An App with the tasks the pages show."""
    app = underway.App(settings=settings)

    @app.task(name="steps")
    async def steps(ctx: underway.Context, gate: str, count: int, message: str = "step") -> int:
        """``count`` progress values, each once ``gate/i`` opens; then ends once ``gate`` opens."""
        for i in range(1, count + 1):
            await gates.wait(f"{gate}/{i}")
            ctx.progress(i, count, message=f"{message} {i}")
        await gates.wait(gate)
        return count

    @app.task(name="ask")
    async def ask(ctx: underway.Context, question: str, options: list[str]) -> dict[str, Any]:
        """Report some progress, ask, and return the answer."""
        ctx.progress(1, 2, message=question)
        answer = await ctx.ask(question, options=options)
        ctx.progress(2, 2, message=f"answered {answer}")
        return {"answer": answer}

    @app.task(name="boom")
    async def boom(ctx: underway.Context, message: str) -> None:
        """Report some progress, then fail with ``message``."""
        ctx.progress(1, 4, message="about to fail")
        raise ValueError(message)

    @app.task(name="item")
    async def item(text: str, gate: str = "", fail: bool = False) -> str:
        """A batch item: waits for ``gate`` (if any), then fails when told to."""
        if gate:
            await gates.wait(gate)
        if fail:
            raise ValueError(f"item {text!r} failed, as asked")
        return text

    @app.task(name="chatty")
    async def chatty(ctx: underway.Context, text: str, lines: int = 4, gate: str = "") -> dict[str, Any]:
        """Two steps; logs ``lines`` lines of ``text`` at each level in turn; waits for ``gate``
        (if any) between its steps; returns ``{"text": text}``."""
        levels = (ctx.log.debug, ctx.log.info, ctx.log.warning, ctx.log.error)
        ctx.step("Writing", steps=2)
        for i in range(lines):
            levels[i % len(levels)]("%s %d", text, i + 1)
            ctx.progress(i + 1, lines, message=f"{text} {i + 1}")
        if gate:
            await gates.wait(gate)
        ctx.step("Finishing")
        ctx.progress(1, 1, message=text)
        return {"text": text}

    @app.task(name="survey")
    async def survey(ctx: underway.Context, question: str) -> Any:
        """Asks for a structured answer (a JSON schema: a name and a count) and returns it."""
        schema = {
            "type": "object",
            "properties": {"name": {"type": "string"}, "count": {"type": "integer", "minimum": 1}},
            "required": ["name", "count"],
        }
        return await ctx.ask(question, schema=schema)

    @app.task(name="typed")
    async def typed(
        name: str,
        count: int = 2,
        ratio: float = 0.5,
        urgent: bool = False,
        color: Literal["red", "green"] = "red",
        tags: list[str] | None = None,
    ) -> dict[str, Any]:
        """Arguments of every kind, for the submit form; returns them."""
        return {"name": name, "count": count, "ratio": ratio, "urgent": urgent, "color": color, "tags": tags}

    return app


def add_test_page(web: FastAPI, app: underway.App, owner: str | None) -> None:
    """The page, its script, ``/assets`` if the server has none, and a token route for ``owner``."""

    @web.get("/browser/", include_in_schema=False)
    async def page() -> HTMLResponse:
        html = (HERE / "page" / "index.html").read_text(encoding="utf-8")
        return HTMLResponse(html, headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-store"})

    @web.get("/browser/page.js", include_in_schema=False)
    async def script() -> FileResponse:
        return FileResponse(HERE / "page" / "page.js", media_type="text/javascript")

    @web.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)

    @web.post("/browser/token", include_in_schema=False)
    async def token(request: Request) -> JSONResponse:
        """What a host app's backend does for its page: a short-lived token for one job."""
        body = await request.json()
        if owner is None or request.headers.get("x-requested-with") is None:
            return JSONResponse({"error": "no"}, status_code=403)
        minted = await app.stream_token(owner, job=body.get("job"), batch=body.get("batch"), ttl=60)
        web.state.tokens_minted = getattr(web.state, "tokens_minted", 0) + 1
        return JSONResponse({"token": minted.token, "expires_at": to_iso(minted.expires_at)})


@dataclass
class LiveServer:
    """A uvicorn server running ``create_app(app, with_worker=True)`` and the test page."""

    app: underway.App
    web: FastAPI
    gates: Gates
    server: uvicorn.Server
    thread: threading.Thread
    port: int
    headers: dict[str, str] = field(default_factory=dict)
    clients: list[httpx.Client] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def page_url(self, **params: str) -> str:
        """The test page showing the element that ``params`` describe (see page/page.js)."""
        return f"{self.base}/browser/?{urlencode(params)}"

    def client(self) -> httpx.Client:
        headers = {"X-Requested-With": "underway-tests", **self.headers}
        client = httpx.Client(base_url=f"{self.base}/api", timeout=10, trust_env=False, headers=headers)
        self.clients.append(client)
        return client

    def submit(self, task: str, *, job_options: dict[str, Any] | None = None, **args: Any) -> str:
        """Submit ``task`` with ``args``; ``job_options`` are the other fields (``max_attempts``…)."""
        body = {"task": task, "args": args, **(job_options or {})}
        response = self.client().post("/jobs", json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def submit_batch(self, task: str, items: list[dict[str, Any]]) -> str:
        response = self.client().post("/batches", json={"task": task, "items": items})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.client().get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        return job

    def wait_status(self, job_id: str, *statuses: str, timeout: float = SOON) -> dict[str, Any]:
        def in_status() -> dict[str, Any] | None:
            job = self.job(job_id)
            return job if job["status"] in statuses else None

        return wait_until(in_status, timeout, what=f"job {job_id} to be {' or '.join(statuses)}")

    def open_streams(self, transport: str) -> int:
        """The server's ``underway_open_streams`` gauge for one transport."""
        text = self.client().get("/metrics").text
        for line in text.splitlines():
            if line.startswith(f'underway_open_streams{{transport="{transport}"}}'):
                return int(float(line.rsplit(" ", 1)[1]))
        return 0

    def stop(self) -> None:
        """Stop the server and close the clients; idempotent."""
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
    owner: str | None = None,
) -> LiveServer:
    """Start the server and the test page; ``owner``: whom ``POST /browser/token`` mints for."""
    gates = Gates()
    app = build_app(settings, gates)
    web = create_app(app, settings=settings, with_worker=True, authenticate=authenticate)
    add_test_page(web, app, owner)
    server = Server(uvicorn_config(web, settings))
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            server.run()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=serve, name="browser-uvicorn", daemon=True)
    thread.start()
    wait_until(lambda: server.started or errors or not thread.is_alive(), what="uvicorn to start")
    if not server.started:
        gates.open_all()
        server.should_exit = True
        thread.join(10)
        raise RuntimeError(f"the test server did not start: {errors}")
    port = server.servers[0].sockets[0].getsockname()[1]
    live = LiveServer(app=app, web=web, gates=gates, server=server, thread=thread, port=port)
    live.headers = headers or {}
    try:
        if authenticate is None:  # /workers is for admins: with a hook, the first job waits
            wait_until(lambda: live.client().get("/workers").json()["workers"], what="the in-process worker")
    except BaseException:
        live.stop()
        raise
    return live


# -- the page ------------------------------------------------------------------------------------


class PageWatch:
    """A Playwright page that records what must not happen: console errors, uncaught errors,
    CSP violations (:meth:`problems`)."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        page.add_init_script(WATCH_VIOLATIONS)
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(f"{message.text} ({message.location.get('url')})")

    def open(self, live: LiveServer, **params: str) -> None:
        """Open the test page on ``live`` with one element (see page/page.js) and wait for it."""
        self.page.goto(live.page_url(**params))
        # Not page.wait_for_function(): its polling evaluates a string, which the CSP refuses.
        wait_until(lambda: self.page.evaluate("window.__ready === true"), what="the page's script to run")

    def recorded(self, name: str) -> list[Any]:
        """The details of the ``underway-progress`` or ``underway-end`` events the page saw."""
        found: list[Any] = self.page.evaluate(f"window.__underway[{json.dumps(name)}]")
        return found

    def problems(self) -> list[str]:
        violations = self.page.evaluate("window.__violations || []")
        return [
            *(f"console error: {text}" for text in self.console_errors),
            *(f"uncaught: {text}" for text in self.page_errors),
            *(f"CSP violation: {text}" for text in violations),
        ]

    def assert_clean(self) -> None:
        problems = self.problems()
        assert not problems, "the page reported problems:\n" + "\n".join(problems)
