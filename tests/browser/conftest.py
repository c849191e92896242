"""Fixtures of the browser tests: one Chromium per session, a fresh page per test, and real
servers (see ``browser_support.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from browser_support import (
    CHROMIUM_ARGS,
    LiveServer,
    PageWatch,
    StartServer,
    chromium_executable,
    require_browser,
    server_settings,
    start_server,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium (Debian's, through ``executable_path``); skips or, under CI=true,
    fails without it. One per module, not per session: while Playwright's sync API is open, the
    main thread has a running event loop, and the tests after these (``asyncio.run``) need none."""
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=chromium_executable(), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[PageWatch]:
    """A page in its own browser context, recording console errors and CSP violations."""
    context = browser.new_context()
    context.set_default_timeout(10_000)
    try:
        yield PageWatch(context.new_page())
    finally:
        context.close()


@pytest.fixture
def start(browser: Browser, tmp_path: Path) -> Iterator[StartServer]:
    """``start(url=None, authenticate=None, headers=None, owner=None, **settings)`` → a running
    :class:`LiveServer` (on its own SQLite file unless ``url`` names a store), stopped at the end."""
    servers: list[LiveServer] = []

    def starter(url: str | None = None, **options: Any) -> LiveServer:
        keywords = {key: options.pop(key) for key in ("authenticate", "headers", "owner") if key in options}
        url = url or f"sqlite:///{tmp_path / f'browser{len(servers)}.db'}"
        live = start_server(server_settings(url, **options), **keywords)
        servers.append(live)
        return live

    try:
        yield starter
    finally:
        for live in reversed(servers):
            live.stop()


@pytest.fixture
def live(start: StartServer) -> LiveServer:
    """A running server with the default test settings, on SQLite."""
    return start()
