"""Fixtures of the HTTP API tests: a real uvicorn server per test, on its own SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from web_support import LiveServer, StartServer, server_settings, start_server

from underway.web.api import Authenticate


@pytest.fixture
def start(tmp_path: Path) -> Iterator[StartServer]:
    """``start(authenticate=None, headers=None, **settings)`` → a running :class:`LiveServer`,
    stopped at the end.

    Each call gets its own SQLite file in ``tmp_path``; ``settings`` override the test defaults
    (``sse_ping_interval=0.2``, ``ws_max_connections=1``…); ``headers`` go with the requests of
    ``live.client()`` (credentials for the ``authenticate`` hook).
    """
    servers: list[LiveServer] = []

    def starter(
        authenticate: Authenticate | None = None, headers: dict[str, str] | None = None, **overrides: Any
    ) -> LiveServer:
        url = f"sqlite:///{tmp_path / f'web{len(servers)}.db'}"
        live = start_server(server_settings(url, **overrides), authenticate=authenticate, headers=headers)
        servers.append(live)
        return live

    try:
        yield starter
    finally:
        for live in reversed(servers):
            live.stop()


@pytest.fixture
def live(start: StartServer) -> LiveServer:
    """A running server with default test settings."""
    return start()


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for a whole module, for tests that only read or are refused (faster)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('shared') / 'shared.db'}"
    live = start_server(server_settings(url))
    try:
        yield live
    finally:
        live.stop()
