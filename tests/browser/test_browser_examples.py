"""The pages of examples/browser/ (what docs/browser.md shows) in Chromium: the plain HTML page
starts a job and its bar follows it to the end, under a strict Content-Security-Policy."""

from __future__ import annotations

import importlib.util
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from browser_support import PageWatch, expect, wait_until
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from underway.web.server import Server

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "browser" / "app.py"
CSP = b"default-src 'self'; script-src 'self'; style-src 'self'"


class StrictCSP:
    """Adds a strict Content-Security-Policy to every response: the page must need no inline
    script or style."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_csp(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message["headers"] if k.lower() != b"content-security-policy"]
                message = {**message, "headers": [*headers, (b"content-security-policy", CSP)]}
            await send(message)

        await self.app(scope, receive, send_with_csp)


@pytest.fixture
def example_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, page: PageWatch) -> Iterator[str]:
    """examples/browser/app.py served on a free port (its store in ``tmp_path``); its base URL."""
    monkeypatch.chdir(tmp_path)  # the example's sqlite:///browser.db lands here
    spec = importlib.util.spec_from_file_location("browser_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.site.add_middleware(StrictCSP)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = Server(uvicorn.Config(module.site, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, what="the example's server to start")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_the_plain_page_starts_a_job_and_its_bar_follows_it(example_site: str, page: PageWatch) -> None:
    page.page.goto(f"{example_site}/progress.html")
    page.page.click("#start")
    element = page.page.locator("underway-job")
    wait_until(lambda: element.get_attribute("job-id"), what="the page to submit the job")
    bar = element.get_by_role("progressbar")
    expect(page.page.locator("#done")).to_have_text("The report succeeded.", timeout=20_000)
    expect(bar).to_have_attribute("aria-valuenow", "100")
    expect(element.locator("[part~=message]")).to_have_text("Writing the report")
    # The example folder has no favicon.ico: the browser's own request for it is not the page's.
    page.console_errors = [error for error in page.console_errors if "/favicon.ico" not in error]
    page.assert_clean()
