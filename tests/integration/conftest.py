"""Fixtures of the integration tests: an App on a SQLite file in ``tmp_path``, small settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import underway


@pytest.fixture
def settings(tmp_path: Path) -> underway.Settings:
    """Settings scaled down so that leases, graces and sweeps play out in well under a second."""
    return underway.Settings(
        url=f"sqlite:///{tmp_path / 'x.db'}",
        lease_timeout=1.0,
        cancel_grace=0.5,
        shutdown_grace=1.0,
        progress_interval=0.02,
        sweep_interval=0.2,
        concurrency=4,
    )


@pytest.fixture
async def app(settings: underway.Settings) -> AsyncIterator[underway.App]:
    """A fresh App on its own file; tasks are registered by each test."""
    app = underway.App(settings=settings)
    await app.open()
    try:
        yield app
    finally:
        await app.close()
