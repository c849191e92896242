"""Application 2 of issue 13, the chat assistant (``examples/apps/chat``), driven as a user would
in Chromium: a message starts a job, the job shows in the bar running, then waiting with its
question's options as buttons; a click answers it and the booked slot shows in the chat; a
reload shows the session's jobs again; another session sees none of them; the page follows the
jobs by polling (``transport: "poll"``), never with EventSource or WebSocket.

The app is started as its README says (``python examples/apps/chat/app.py``), as a subprocess:
on SQLite with its worker in the same process, and on PostgreSQL with ``--no-worker`` and a
separate ``underway --app examples.apps.chat.app:app worker``.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from browser_support import PageWatch, expect, wait_until
from dashboard_support import screenshot
from postgres_support import fresh_postgres_url

if TYPE_CHECKING:
    from playwright.sync_api import Browser

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "examples" / "apps" / "chat" / "app.py"
WORKER_APP = "examples.apps.chat.app:app"
SLOTS = ["Tomorrow 09:30", "Tomorrow 14:00", "Tomorrow 16:30"]
BOOKED = "Booked the meeting for Tomorrow 14:00. Invitations sent."


class Process:
    """A subprocess whose output is collected line by line (for its URL and for failures)."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def url(self) -> str:
        """The URL the app prints once it listens."""

        def printed() -> str | None:
            if self.proc.poll() is not None:
                pytest.fail(f"the app exited with {self.proc.returncode}:\n{self.output()}")
            found = next((m for line in self.lines if (m := re.match(r"chat: (http://\S+/)", line))), None)
            return found.group(1) if found else None

        return wait_until(printed, 20, what="the app to print its URL")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # Ctrl-C
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                pytest.fail(f"{self.proc.args} did not stop on Ctrl-C:\n{self.output()}")
        self.reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextmanager
def running(args: list[str], env: dict[str, str]) -> Iterator[Process]:
    process = Process(args, env)
    try:
        yield process
    finally:
        process.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def app_env(url: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("UNDERWAY_")}
    return {**env, "UNDERWAY_URL": url, "PYTHONUNBUFFERED": "1"}


def underway_command() -> list[str]:
    """``underway`` of this virtualenv (``python -m underway`` without its script)."""
    script = Path(sys.executable).with_name("underway")
    return [str(script)] if script.exists() else [sys.executable, "-m", "underway"]


def open_chat(browser: Browser, base: str, stack: ExitStack) -> tuple[PageWatch, list[tuple[str, str]]]:
    """A new session (its own browser context) on the chat page; the requests it makes."""
    context = browser.new_context(viewport={"width": 900, "height": 640})
    stack.callback(context.close)
    context.set_default_timeout(10_000)
    page = PageWatch(context.new_page())
    requests: list[tuple[str, str]] = []
    page.page.on("request", lambda request: requests.append((request.resource_type, request.url)))
    page.page.on("websocket", lambda ws: requests.append(("websocket", ws.url)))
    page.page.goto(base)
    expect(page.page.locator("body[data-ready=true]")).to_be_attached()
    return page, requests


def send(page: PageWatch, text: str) -> None:
    page.page.fill("#text", text)
    page.page.press("#text", "Enter")


def drive(browser: Browser, base: str, *, save_screenshot: bool) -> None:
    with ExitStack() as stack:
        page, requests = open_chat(browser, base, stack)
        p = page.page
        messages = p.locator("#messages li")
        bar = p.locator("#job-list li.job")

        send(page, "hello")
        expect(messages.nth(1)).to_contain_text("I can book a meeting")
        expect(bar).to_have_count(0)

        send(page, "book a meeting tomorrow")
        expect(messages.nth(3)).to_have_text("Looking for free slots…")
        expect(bar).to_have_count(1)
        job = bar.first
        expect(job).to_have_attribute("data-status", "running")
        expect(job.locator(".status")).to_contain_text("running")
        expect(job.locator(".title")).to_have_text("Booking a meeting")
        expect(job).to_have_attribute("data-status", "waiting")
        expect(job.locator(".detail")).to_have_text("Which slot?")
        options = job.locator(".options button")
        expect(options).to_have_text(SLOTS)
        if save_screenshot:
            screenshot(page, "app-chat")
        options.nth(1).click()

        result = p.locator("#messages li.result")
        expect(result).to_have_text(BOOKED)
        expect(bar).to_have_count(0)
        job_id = result.get_attribute("data-job-id")
        assert job_id

        # A reload shows the session's jobs again, from the list route.
        p.reload()
        expect(p.locator("body[data-ready=true]")).to_be_attached()
        expect(messages).to_have_text(["book a meeting tomorrow", BOOKED])
        expect(result).to_have_attribute("data-job-id", job_id)

        # Another session sees none of them, on the page or through the API.
        other, _ = open_chat(browser, base, stack)
        expect(other.page.locator("#messages li")).to_have_count(0)
        expect(other.page.locator("#job-list li")).to_have_count(0)
        api = other.page.context.request
        assert api.get(f"{base}underway/api/jobs/{job_id}").status == 404
        assert api.get(f"{base}underway/api/jobs").json()["jobs"] == []
        assert api.post(f"{base}underway/api/jobs/{job_id}/answer", data={"value": SLOTS[0]}).status == 404
        other.assert_clean()

        # The jobs were followed by polling the list route: no event stream, no WebSocket.
        polls = [url for kind, url in requests if kind == "fetch" and "/underway/api/jobs?" in url]
        assert len(polls) >= 3, requests
        streams = [
            (kind, url)
            for kind, url in requests
            if kind in ("eventsource", "websocket") or "/stream" in url or url.endswith("/ws")
        ]
        assert not streams, streams
        page.assert_clean()


def test_chat_on_sqlite(browser: Browser, tmp_path: Path) -> None:
    """The README's one command: the app and its worker in one process, on SQLite."""
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    command = [sys.executable, str(APP), "--port", str(free_port())]
    with running(command, app_env(url)) as app:
        base = app.url()
        try:
            drive(browser, base, save_screenshot=True)
        except BaseException:
            print(app.output())
            raise


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh schema (skips without PostgreSQL; fails under CI=true)."""
    yield from fresh_postgres_url()


def test_chat_on_postgres_with_a_separate_worker(browser: Browser, postgres_url: str) -> None:
    """``UNDERWAY_URL`` on PostgreSQL, ``--no-worker``, and the worker as its own process."""
    env = app_env(postgres_url)
    command = [sys.executable, str(APP), "--port", str(free_port()), "--no-worker"]
    with (
        running(command, env) as app,
        running([*underway_command(), "--app", WORKER_APP, "worker"], env) as worker,
    ):
        base = app.url()
        try:
            drive(browser, base, save_screenshot=False)
        except BaseException:
            print(app.output())
            print(worker.output())
            raise
