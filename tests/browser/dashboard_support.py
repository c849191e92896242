"""What the dashboard's browser tests share: opening a page of it, the screenshots they save,
and a server on PostgreSQL.

The dashboard is served by ``create_app`` at ``/`` (the servers of ``browser_support``). Pages
are opened as users open them (``page.goto``), so their Content-Security-Policy applies; each
test ends with ``page.assert_clean()`` (no console error, uncaught error or CSP violation).

Screenshots go to ``$UNDERWAY_SCREENSHOTS`` (default ``build/screenshots``, not committed);
the ones in the README and ``docs/`` are copied from there.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from browser_support import SOON, LiveServer, PageWatch, StartServer, expect
from postgres_support import fresh_postgres_url

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("UNDERWAY_SCREENSHOTS", ROOT / "build" / "screenshots"))


def open_dashboard(page: PageWatch, live: LiveServer, path: str = "/", *, signed_in: bool = True) -> None:
    """Go to ``path`` of the dashboard on ``live`` and wait until it is drawn: its header when
    ``signed_in``, else the sign-in form."""
    page.page.goto(f"{live.base}{path}")
    expect(page.page.locator("header.top" if signed_in else "form #key")).to_be_visible(timeout=SOON * 1000)


def screenshot(page: PageWatch, name: str, *, full_page: bool = True) -> Path:
    """Save what the page shows as ``<SCREENSHOTS>/<name>.png``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.page.screenshot(path=str(path), full_page=full_page)
    return path


def postgres_server(start: StartServer, **options: object) -> Iterator[LiveServer]:
    """A server on a fresh PostgreSQL schema, stopped before the schema is dropped (for a
    fixture: ``yield from postgres_server(start)``; skips without PostgreSQL, fails under CI=true)."""
    for url in fresh_postgres_url():
        live = start(url, **options)
        try:
            yield live
        finally:
            live.stop()
