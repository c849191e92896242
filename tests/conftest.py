"""Shared fixtures: stores of every backend behind the one Store Protocol.

Async tests are ``async def`` functions marked ``pytest.mark.anyio`` (the anyio pytest plugin
runs them). ``store`` is opened on a fresh database of each backend in ``BACKENDS``; contract
tests use only the methods of :class:`underway.store.Store`, so a new backend joins them by
adding its name here and a branch in :func:`_fresh_url`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from postgres_support import fresh_postgres_url

from underway.events import Event, EventType
from underway.store import JobFilter, Store, open_store

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _fresh_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A store URL of a fresh, empty database for ``backend`` (one of BACKENDS), then clean up."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'underway.db'}"
    elif backend == "postgres":
        yield from fresh_postgres_url()
    else:  # pragma: no cover
        raise AssertionError(f"BACKENDS names {backend!r}: add how to make its database here")


class StoreFactory:
    """Opens stores on one fresh database, as several processes would, and closes them all."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._opened: list[Store] = []

    async def open(self) -> Store:
        store = open_store(self.url, poll_interval=0.002)
        await store.open()
        self._opened.append(store)
        return store

    async def close_all(self) -> None:
        for store in reversed(self._opened):
            await store.close()
        self._opened.clear()


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from _fresh_url(request.param, tmp_path)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL store URL on a fresh schema of the test database."""
    yield from fresh_postgres_url()


@pytest.fixture
async def stores(store_url: str, anyio_backend: str) -> AsyncIterator[StoreFactory]:
    factory = StoreFactory(store_url)
    try:
        yield factory
    finally:
        await factory.close_all()


@pytest.fixture
async def store(stores: StoreFactory) -> AsyncIterator[Store]:
    """An opened store on a fresh database; at the end, every job's events must be 1..n."""
    opened = await stores.open()
    yield opened
    for job in await opened.list_jobs(JobFilter(), limit=100_000):
        await check_contiguous(opened, job.id)


async def check_contiguous(store: Store, job_id: str) -> list[Event]:
    """Assert the job's events are numbered 1..n without gaps, n is its ``last_seq``, and the
    first is ``status: queued``; return the events."""
    events = await store.events(job_id, limit=1_000_000)
    seqs = [e.seq for e in events]
    assert seqs == list(range(1, len(events) + 1)), f"job {job_id} has events {seqs}"
    assert all(e.job_id == job_id for e in events)
    job = await store.get(job_id)
    assert job is not None, f"job {job_id} has events but no row"
    assert job.last_seq == len(events), f"job {job_id} has last_seq {job.last_seq}, {len(events)} events"
    assert events[0].type is EventType.STATUS
    assert events[0].data == {"status": "queued", "attempt": 0}
    return events


@pytest.fixture
def assert_contiguous() -> Callable[[Store, str], Awaitable[list[Event]]]:
    """``await assert_contiguous(store, job_id)``: see :func:`check_contiguous`."""
    return check_contiguous
