"""Fixtures of the integration tests: an App on a fresh store of each backend, small settings."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import underway


@pytest.fixture
def settings(store_url: str) -> underway.Settings:
    """Settings scaled down so that leases, graces and sweeps play out in well under a second."""
    return underway.Settings(
        url=store_url,
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
