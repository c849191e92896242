"""Application 4 of issue 13 (``examples/apps/docs``): document upload with AI extraction,
followed over WebSocket, driven in Chromium as a user would.

The app runs as its README says (``python examples/apps/docs/app.py --port N``), in a subprocess
whose working folder is ``tmp_path`` (so ``docs.db`` and ``docs-uploads/`` land there); on
PostgreSQL and for the reconnect, with ``--no-worker`` and a separate ``underway ... worker``.
``DOCS_PACE`` sets how long the stand-in model takes (20 units of it per document).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from browser_support import SOON, PageWatch, expect, wait_until
from dashboard_support import screenshot
from postgres_support import fresh_postgres_url

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "examples" / "apps" / "docs" / "app.py"
UNDERWAY = Path(sys.executable).parent / "underway"
WORKER_APP = "examples.apps.docs.app:app"  # the README's worker command

REPORT = b"Quarterly Report\nThe board of Acme met in Paris on Monday. Alice presented the results.\n"
BROKEN = b"Broken Memo\nThis memo is meant to FAIL in the model.\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Docs:
    """The app's processes: its server (the README's command) and, with ``--no-worker``, a worker."""

    def __init__(self, folder: Path, *, url: str | None = None, pace: float = 0.12, separate: bool = False):
        self.folder = folder
        self.port = free_port()
        self.env = {**os.environ, "DOCS_PACE": str(pace), "PYTHONPATH": str(ROOT)}
        if url is not None:
            self.env["UNDERWAY_URL"] = url
        self.separate = separate
        self.server: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.runs = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self, command: list[str], name: str) -> subprocess.Popen[bytes]:
        self.runs += 1
        with (self.folder / f"{name}{self.runs}.log").open("wb") as log:  # the child keeps its copy
            return subprocess.Popen(
                command, cwd=self.folder, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

    def start_server(self) -> None:
        command = [
            sys.executable,
            str(APP),
            "--port",
            str(self.port),
            *(["--no-worker"] if self.separate else []),
        ]
        self.server = self.spawn(command, "server")
        wait_until(self.healthy, SOON * 2, interval=0.05, what="the app to answer")

    def healthy(self) -> bool:
        assert self.server is not None
        assert self.server.poll() is None, self.logs()
        try:
            answer = httpx.get(f"{self.base}/underway/api/healthz", timeout=2, trust_env=False)
            return answer.status_code == 200
        except httpx.TransportError:
            return False

    def start(self) -> None:
        self.start_server()
        if self.separate:
            self.worker = self.spawn([str(UNDERWAY), "--app", WORKER_APP, "worker"], "worker")

    def kill_server(self) -> None:
        assert self.server is not None
        self.server.kill()
        self.server.wait(10)

    def logs(self) -> str:
        return "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')}" for log in self.folder.glob("*.log")
        )

    def stop(self) -> None:
        for process in (self.server, self.worker):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in (self.server, self.worker):
            if process is not None:
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)


@contextmanager
def running(folder: Path, **options: object) -> Iterator[Docs]:
    docs = Docs(folder, **options)  # type: ignore[arg-type]
    try:
        docs.start()
        yield docs
    finally:
        docs.stop()


@contextmanager
def user(browser: Browser) -> Iterator[tuple[PageWatch, list[str]]]:
    """A fresh browser (its own identity cookie) with one watched page, and the WebSocket URLs it opened."""
    context = browser.new_context()
    context.set_default_timeout(SOON * 1000)
    try:
        page = PageWatch(context.new_page())
        sockets: list[str] = []
        page.page.on("websocket", lambda ws: sockets.append(ws.url))
        yield page, sockets
    finally:
        context.close()


def upload(page: Page, name: str, content: bytes) -> None:
    page.set_input_files("#file", files=[{"name": name, "mimeType": "text/plain", "buffer": content}])
    page.click("button[type=submit]")


def processing_shown(page: Page) -> None:
    """The card shows the job processing, with a percent above 0 and its current step."""
    card = page.locator("#job")
    expect(card.locator(".status")).to_have_text("processing")
    expect(card.locator(".percent")).to_have_text(re.compile(r"^([1-9]\d?)%$"))
    expect(card.locator(".step")).to_have_text(re.compile(r"^step [123]/3: (Reading|Extracting|Checking)$"))


def test_upload_follow_fail_and_toast(browser: Browser, tmp_path: Path) -> None:
    with running(tmp_path) as docs, user(browser) as (watch, sockets):
        page = watch.page
        page.goto(f"{docs.base}/")
        upload(page, "report.txt", REPORT)
        card = page.locator("#job")
        expect(card.locator(".name")).to_have_text("report.txt")
        processing_shown(page)
        expect(card.locator(".status")).to_have_text("completed", timeout=SOON * 1000)
        expect(card.locator(".history li")).to_have_text(["pending", "processing", "completed"])
        expect(card.locator(".percent")).to_have_text("100%")
        expect(card.locator(".outcome dd").first).to_have_text("Quarterly Report")
        expect(card.locator(".outcome")).to_contain_text("The board of Acme met in Paris on Monday.")
        expect(card.locator(".outcome")).to_contain_text("Acme, Paris, Monday")
        expect(page.locator(".toast")).to_have_text(["report.txt: extraction completed"])

        upload(page, "broken.txt", BROKEN)
        expect(card.locator(".name")).to_have_text("broken.txt")
        expect(card.locator(".status")).to_have_text("failed", timeout=SOON * 1000)
        expect(card.locator(".outcome .error")).to_have_text(
            "Failed: the model refused broken.txt: line 2 says FAIL"
        )

        # a third one, and off to the other page while it runs: its toast shows there
        upload(page, "<b>notes.txt", b"<img src=x>Notes\nBob wrote these.\n")
        processing_shown(page)
        page.click("nav a[href='/extractions']")
        expect(page).to_have_url(f"{docs.base}/extractions")
        rows = page.locator("#documents tbody tr")
        expect(rows.locator(".name")).to_have_text(["<b>notes.txt", "broken.txt", "report.txt"])
        expect(page.locator(".toast")).to_have_text(["<b>notes.txt: extraction completed"])
        expect(rows.locator(".status")).to_have_text(["completed", "failed", "completed"])
        expect(rows.locator(".outcome")).to_have_text(
            ["<img src=x>Notes", "the model refused broken.txt: line 2 says FAIL", "Quarterly Report"]
        )
        assert page.locator("#documents img, #documents b").count() == 0  # job text is text
        path = screenshot(watch, "app-docs")
        assert path.stat().st_size > 0

        assert sockets, "no WebSocket was opened"
        assert all(url.startswith(f"ws://127.0.0.1:{docs.port}/underway/api/ws") for url in sockets), sockets
        watch.assert_clean()

        # another browser is another user: it sees none of these documents
        with user(browser) as (other, _):
            other.page.goto(f"{docs.base}/extractions")
            expect(other.page.locator("#empty")).to_be_visible()
            expect(other.page.locator("#documents tbody tr")).to_have_count(0)
            other.assert_clean()


def test_reconnects_after_the_server_restarts(browser: Browser, tmp_path: Path) -> None:
    """The server dies mid-job and comes back on the same port and store; the worker (apart)
    goes on; the page reconnects by itself and reaches the end."""
    with running(tmp_path, pace=0.25, separate=True) as docs, user(browser) as (watch, sockets):
        page = watch.page
        page.goto(f"{docs.base}/")
        upload(page, "report.txt", REPORT)
        processing_shown(page)
        assert len(sockets) == 1, sockets
        docs.kill_server()
        card = page.locator("#job")
        expect(card.locator(".connection")).to_be_visible()
        assert card.locator(".status").text_content() == "processing"
        docs.start_server()
        expect(card.locator(".connection")).to_be_hidden(timeout=SOON * 2000)  # backoff: at most 4 s
        expect(card.locator(".status")).to_have_text("completed", timeout=SOON * 1000)
        expect(card.locator(".outcome dd").first).to_have_text("Quarterly Report")
        expect(card.locator(".history li")).to_have_text(["pending", "processing", "completed"])
        assert len(sockets) >= 2, sockets
        assert all("/underway/api/ws" in url for url in sockets), sockets
        # what the outage itself makes Chromium log, and nothing else
        socket_url = f"ws://127.0.0.1:{docs.port}/underway/api/ws"
        refused = f"console error: WebSocket connection to '{socket_url}' failed"
        problems = [problem for problem in watch.problems() if not problem.startswith(refused)]
        assert not problems, problems


def test_postgres_with_a_separate_worker(browser: Browser, tmp_path: Path) -> None:
    for url in fresh_postgres_url():
        with running(tmp_path, url=url, separate=True) as docs, user(browser) as (watch, sockets):
            page = watch.page
            page.goto(f"{docs.base}/")
            upload(page, "report.txt", REPORT)
            processing_shown(page)
            card = page.locator("#job")
            expect(card.locator(".status")).to_have_text("completed", timeout=SOON * 1000)
            expect(card.locator(".outcome dd").first).to_have_text("Quarterly Report")
            assert sockets
            watch.assert_clean()
            assert not (tmp_path / "docs.db").exists()  # the store was PostgreSQL's
