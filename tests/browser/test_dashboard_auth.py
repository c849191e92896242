"""Who sees the dashboard, in Chromium against real servers.

- With authentication off (a loopback server without keys) it opens without signing in, as
  ``local``.
- With ``auth=on`` it shows the sign-in form; a wrong key is refused with a message; a user's key
  signs in (``POST /session``: an HttpOnly, SameSite=Strict cookie), the header names the user,
  the jobs table holds that user's jobs and no other's (live ones too); Sign out returns to the
  form; an admin's key sees everyone's jobs.
- A write made with the session cookie but without its ``X-CSRF-Token`` is refused (403) and
  changes nothing; the same write with the token (from ``GET /api/me``) goes through.
- A page of another site, opened in the browser where the user is signed in, cannot cancel the
  user's job: neither its form nor its ``fetch`` with ``credentials: "include"`` carries the
  cookie (SameSite=Strict), and the job still runs.
- A host app that mounts the router under ``/underway/api`` and the dashboard at ``/underway``,
  with an ``authenticate`` hook reading its own session cookie, opens the dashboard without the
  sign-in form, on that owner's jobs only.

Chromium logs every refused request (``Failed to load resource: … 401``) as a console error: the
tests forgive exactly the refusals they cause (:func:`forgive`) and no other.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import uvicorn
from browser_support import SOON, LiveServer, PageWatch, StartServer, expect, wait_until
from dashboard_support import open_dashboard
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response
from starlette.requests import HTTPConnection

import underway
from underway.auth import SESSION_COOKIE, Principal
from underway.web import API
from underway.web.server import Server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Request

ROLES = {"admin": "admin", "alice": "user", "bob": "user"}


def make_keys(url: str, who: dict[str, str] = ROLES) -> dict[str, str]:
    """A key for each owner (with its role) in the store at ``url``: ``{owner: key}``. In a thread:
    Playwright's sync API holds an event loop on this one."""

    async def create() -> dict[str, str]:
        async with underway.App(url) as app:
            return {owner: (await app.accounts.create_key(owner, role))[1] for owner, role in who.items()}

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, create()).result(30)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Secured:
    """A server with ``auth=on`` and keys for an admin, alice and bob."""

    live: LiveServer
    keys: dict[str, str]

    def client(self, who: str) -> httpx.Client:
        client = httpx.Client(
            base_url=f"{self.live.base}/api", timeout=10, trust_env=False, headers=bearer(self.keys[who])
        )
        self.live.clients.append(client)
        return client

    def submit(self, who: str, task: str, **args: Any) -> str:
        response = self.client(who).post("/jobs", json={"task": task, "args": args})
        assert response.status_code == 201, response.text
        assert response.json()["owner"] == who
        return str(response.json()["id"])


@pytest.fixture
def secured(start: StartServer, tmp_path: Path) -> Secured:
    url = f"sqlite:///{tmp_path / 'secured.db'}"
    keys = make_keys(url)
    return Secured(start(url, auth="on", headers=bearer(keys["admin"])), keys)


def forgive(page: PageWatch, status: int, *paths: str) -> None:
    """Drop the console errors Chromium logs for the responses with ``status`` to ``paths`` (which
    the test asked for); every other error stays."""
    refused = f"the server responded with a status of {status}"
    page.console_errors[:] = [
        error
        for error in page.console_errors
        if not (refused in error and any(error.rstrip(")").endswith(path) for path in paths))
    ]


def row(page: PageWatch, job_id: str) -> Locator:
    return page.page.locator(f'table#jobs tr[data-job-id="{job_id}"]')


def who(page: PageWatch) -> Locator:
    return page.page.locator("header.top .who")


def sign_in(page: PageWatch, key: str) -> None:
    form = page.page.locator("form").filter(has=page.page.locator("#key"))
    form.locator("#key").fill(key)
    form.get_by_role("button", name="Sign in").click()


def session_cookies(page: PageWatch) -> list[dict[str, Any]]:
    return [dict(c) for c in page.page.context.cookies() if c["name"] == SESSION_COOKIE]


def fetch_status(
    page: PageWatch, url: str, headers: dict[str, str], body: str | None = None
) -> dict[str, Any]:
    """POST from the page's own script context, with its cookies (same origin)."""
    found: dict[str, Any] = page.page.evaluate(
        """async ([url, headers, body]) => {
            const response = await fetch(url, {method: "POST", credentials: "same-origin", headers, body});
            return {status: response.status, body: await response.json()};
        }""",
        [url, headers, body],
    )
    return found


# -- auth off ---------------------------------------------------------------------------------------


def test_with_auth_off_the_dashboard_opens_without_signing_in(live: LiveServer, page: PageWatch) -> None:
    job_id = live.submit("typed", name="no sign-in")
    open_dashboard(page, live, "/")
    expect(who(page)).to_have_text("local")
    expect(page.page.locator("#key")).to_have_count(0)
    expect(page.page.get_by_role("button", name="Sign out")).to_have_count(0)
    expect(row(page, job_id)).to_be_visible()
    assert session_cookies(page) == []
    page.assert_clean()


# -- sign-in with keys ------------------------------------------------------------------------------


def test_a_user_signs_in_sees_only_their_jobs_and_signs_out(secured: Secured, page: PageWatch) -> None:
    live = secured.live
    alices = [secured.submit("alice", "typed", name=f"alice {i}") for i in range(3)]
    bobs = [secured.submit("bob", "typed", name=f"bob {i}") for i in range(2)]

    open_dashboard(page, live, "/", signed_in=False)
    expect(page.page.locator("header.top")).to_have_count(0)
    sign_in(page, "uw_this-is-not-a-key")
    alert = page.page.get_by_role("alert")
    expect(alert).to_be_visible()
    expect(alert).not_to_be_empty()
    expect(page.page.locator("#key")).to_be_visible()
    assert session_cookies(page) == []

    sign_in(page, secured.keys["alice"])
    expect(who(page)).to_contain_text("alice")
    expect(who(page)).not_to_contain_text("(admin)")
    expect(page.page.locator("#key")).to_have_count(0)
    (cookie,) = session_cookies(page)
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/api"
    assert page.page.evaluate("document.cookie") == ""  # out of the page's scripts' reach

    for job_id in alices:
        expect(row(page, job_id)).to_be_visible()
    for job_id in bobs:
        expect(row(page, job_id)).to_have_count(0)
    # Live: bob's new job goes out first, alice's after it; hers appears, his never does.
    later_bob = secured.submit("bob", "typed", name="bob later")
    later_alice = secured.submit("alice", "typed", name="alice later")
    expect(row(page, later_alice)).to_be_visible()
    expect(row(page, later_bob)).to_have_count(0)
    assert page.page.locator("table#jobs tr[data-job-id]").count() == len(alices) + 1

    page.page.get_by_role("button", name="Sign out").click()
    expect(page.page.locator("#key")).to_be_visible()
    expect(page.page.locator("table#jobs")).to_have_count(0)
    wait_until(lambda: not session_cookies(page), what="the session cookie to be dropped")
    page.page.reload()
    expect(page.page.locator("#key")).to_be_visible()

    forgive(page, 401, "/api/me", "/api/session")
    page.assert_clean()


def test_an_admin_signs_in_and_sees_everyones_jobs(secured: Secured, page: PageWatch) -> None:
    jobs = [secured.submit("alice", "typed", name="a"), secured.submit("bob", "typed", name="b")]
    open_dashboard(page, secured.live, "/", signed_in=False)
    sign_in(page, secured.keys["admin"])
    expect(who(page)).to_contain_text("admin (admin)")
    for job_id in jobs:
        expect(row(page, job_id)).to_be_visible()
    later = secured.submit("bob", "typed", name="b later")
    expect(row(page, later)).to_be_visible()
    forgive(page, 401, "/api/me")
    page.assert_clean()


# -- CSRF ---------------------------------------------------------------------------------------------


def test_a_cookie_write_without_the_csrf_token_is_refused(secured: Secured, page: PageWatch) -> None:
    live = secured.live
    job_id = secured.submit("alice", "steps", gate="csrf", count=1)
    live.wait_status(job_id, "running")
    open_dashboard(page, live, "/", signed_in=False)
    sign_in(page, secured.keys["alice"])
    expect(row(page, job_id)).to_be_visible()

    cancel = f"/api/jobs/{job_id}/cancel"
    for headers, body in [
        ({}, None),
        ({"Content-Type": "application/json"}, "{}"),  # a JSON body is not enough with a cookie
        ({"X-Requested-With": "XMLHttpRequest"}, None),
        ({"X-CSRF-Token": "forged"}, None),
    ]:
        refused = fetch_status(page, cancel, headers, body)
        assert refused["status"] == 403, (headers, refused)
        assert refused["body"]["error"]["code"] == "forbidden"
        assert refused["body"]["error"]["details"] == {"reason": "csrf"}
    assert live.job(job_id)["status"] == "running"

    me: dict[str, Any] = page.page.evaluate(
        "async () => (await fetch('/api/me', {credentials: 'same-origin'})).json()"
    )
    assert me["owner"] == "alice"
    assert me["via"] == "session"
    token = me["csrf_token"]
    assert token
    accepted = fetch_status(page, cancel, {"X-CSRF-Token": token})
    assert accepted["status"] == 200, accepted
    assert accepted["body"]["id"] == job_id
    live.wait_status(job_id, "cancelled")
    forgive(page, 401, "/api/me")
    forgive(page, 403, cancel)
    page.assert_clean()


# -- another site ---------------------------------------------------------------------------------------


ATTACK_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>win a prize</title>
<script type="module" src="/attack.js"></script></head>
<body><form id="attack" method="post" action="{target}">
<input type="hidden" name="reason" value="prize"></form></body></html>
"""
#: The attacker's own script (a file: no inline script): a fetch with the user's credentials, if
#: the browser would send them, then the form.
ATTACK_SCRIPT = """
const form = document.getElementById("attack");
window.__attack = "started";
try {
  await fetch(form.action, {method: "POST", credentials: "include", body: "x"});
  window.__attack = "fetch answered";
} catch (error) {
  window.__attack = `fetch failed: ${error}`;
}
form.submit();
"""


@dataclass
class ThreadedServer:
    """A uvicorn server of any ASGI app in a thread, on 127.0.0.1."""

    server: uvicorn.Server
    thread: threading.Thread

    @property
    def port(self) -> int:
        port: int = self.server.servers[0].sockets[0].getsockname()[1]
        return port

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        assert not self.thread.is_alive(), "the server did not stop"


def serve(site: FastAPI) -> ThreadedServer:
    server = Server(uvicorn.Config(site, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="test-site", daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), what="the server to start")
    assert server.started, "the server did not start"
    return ThreadedServer(server, thread)


@pytest.fixture
def serving() -> Iterator[Callable[[FastAPI], ThreadedServer]]:
    """``serving(site)`` → a running server of ``site``, stopped at the end."""
    started: list[ThreadedServer] = []

    def starter(site: FastAPI) -> ThreadedServer:
        started.append(serve(site))
        return started[-1]

    yield starter
    for found in reversed(started):
        found.stop()


def attacker_site(target: str) -> FastAPI:
    site = FastAPI()

    @site.get("/")
    async def page() -> HTMLResponse:
        return HTMLResponse(ATTACK_PAGE.format(target=target))

    @site.get("/attack.js")
    async def script() -> Response:
        return Response(ATTACK_SCRIPT, media_type="text/javascript")

    return site


def test_a_page_of_another_site_cannot_cancel_a_job(
    secured: Secured, page: PageWatch, serving: Callable[[FastAPI], ThreadedServer]
) -> None:
    live = secured.live
    job_id = secured.submit("alice", "steps", gate="victim", count=1)
    live.wait_status(job_id, "running")
    open_dashboard(page, live, "/", signed_in=False)
    sign_in(page, secured.keys["alice"])
    expect(row(page, job_id)).to_be_visible()
    assert session_cookies(page), "signed in: the browser holds the session cookie"

    target = f"{live.base}/api/jobs/{job_id}/cancel"
    attacker = serving(attacker_site(target))
    sent: list[Request] = []
    page.page.on("request", lambda request: sent.append(request) if request.url == target else None)
    # localhost and 127.0.0.1: another site (and origin) for the browser, the same machine.
    page.page.goto(f"http://localhost:{attacker.port}/")
    page.page.wait_for_url(target, timeout=SOON * 1000)  # the form was posted: the browser is there

    posts = [request for request in sent if request.method == "POST"]
    assert len(posts) == 2, [(r.method, r.url) for r in sent]  # the fetch and the form did go out
    for request in posts:
        assert SESSION_COOKIE not in (request.header_value("cookie") or ""), "the cookie went cross-site"
    answer = posts[-1].response()
    assert answer is not None
    assert answer.status in (401, 403)
    assert answer.json()["error"]["code"] in ("unauthenticated", "forbidden")
    # Still running, still alice's, nothing asked it to stop.
    job = live.job(job_id)
    assert job["status"] == "running", job
    assert not job["cancel_requested"], job
    live.gates.open_all()
    live.wait_status(job_id, "succeeded")
    # The attacker's page logs CORS and refusal errors, and it is not ours: no assert_clean here.


# -- a host app's own session ------------------------------------------------------------------------


HOST_SESSIONS = {"alice-secret": "alice", "bob-secret": "bob"}


async def host_login(conn: HTTPConnection) -> Principal | None:
    """The host app's own session: its cookie names a user of its own."""
    owner = HOST_SESSIONS.get(conn.cookies.get("host_session", ""))
    return Principal(owner=owner, role="user") if owner else None


def host_app(url: str) -> FastAPI:
    app = underway.App(url)

    @app.task(name="note")
    async def note(text: str) -> str:
        return text

    api = API(app, authenticate=host_login)
    site = FastAPI(lifespan=api.lifespan)

    @site.get("/")
    async def home() -> dict[str, str]:
        return {"hello": "the host"}

    site.include_router(api.router, prefix="/underway/api")
    site.mount("/underway", api.dashboard())  # after the router
    return site


def test_a_host_apps_own_session_opens_the_dashboard_on_that_owners_jobs(
    page: PageWatch, browser: Browser, serving: Callable[[FastAPI], ThreadedServer], tmp_path: Path
) -> None:
    host = serving(host_app(f"sqlite:///{tmp_path / 'host.db'}"))
    base = f"http://127.0.0.1:{host.port}"

    def submit(session: str, text: str) -> str:
        with httpx.Client(
            base_url=f"{base}/underway/api", cookies={"host_session": session}, trust_env=False
        ) as c:
            response = c.post("/jobs", json={"task": "note", "args": {"text": text}})
            assert response.status_code == 201, response.text
            return str(response.json()["id"])

    alices = [submit("alice-secret", f"alice {i}") for i in range(2)]
    bobs = [submit("bob-secret", f"bob {i}") for i in range(2)]
    page.page.context.add_cookies([{"name": "host_session", "value": "alice-secret", "url": base}])
    page.page.goto(f"{base}/underway/")
    expect(who(page)).to_contain_text("alice")
    expect(page.page.locator("#key")).to_have_count(0)
    expect(page.page.get_by_role("button", name="Sign out")).to_have_count(0)  # the host signs out
    for job_id in alices:
        expect(row(page, job_id)).to_be_visible()
    for job_id in bobs:
        expect(row(page, job_id)).to_have_count(0)
    later_bob = submit("bob-secret", "bob later")
    later_alice = submit("alice-secret", "alice later")
    expect(row(page, later_alice)).to_be_visible()
    expect(row(page, later_bob)).to_have_count(0)
    # A job's page under the prefix, reached from the row's link or by its URL.
    page.page.goto(f"{base}/underway/jobs/{alices[0]}")
    expect(who(page)).to_contain_text("alice")
    page.assert_clean()
