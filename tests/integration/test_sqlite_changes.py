"""How SQLite stores learn of each other's commits: the doorbell rung after each commit, and the
``PRAGMA data_version`` poll behind it for writers that do not ring."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from underway.jobs import Status
from underway.store import NewJob, changes
from underway.store.sqlite import SQLiteStore
from underway.store.sqlite_connection import INotify

pytestmark = pytest.mark.anyio

#: Long enough that only the doorbell can wake a waiter within a test.
NO_FALLBACK = 3600.0


@pytest.fixture(autouse=True)
def _needs_inotify() -> None:
    """The doorbell needs inotify (Linux, ``inotify_simple``): skip without it, except under
    ``CI=true``, where it must be there."""
    if INotify is None:
        if os.environ.get("CI") == "true":
            pytest.fail("inotify_simple is required under CI=true (the SQLite doorbell)")
        pytest.skip("the doorbell needs inotify (Linux, inotify_simple)")


def new_job(n: int) -> NewJob:
    return NewJob(id=f"job-{n:04d}", queue="default", task="t", args={}, run_at=0.0)


@pytest.fixture
async def waiter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, anyio_backend: str
) -> AsyncIterator[SQLiteStore]:
    monkeypatch.setattr(changes, "DOORBELL_FALLBACK_INTERVAL", NO_FALLBACK)
    store = SQLiteStore(f"sqlite:///{tmp_path / 'q.db'}")
    await store.open()
    yield store
    await store.close()


async def parked(store: SQLiteStore) -> asyncio.Task[int]:
    """A task waiting for the next change of ``store``, already parked (past its first look)."""
    token = store.change_token()
    waiting = asyncio.create_task(store.wait_for_change(token, NO_FALLBACK))
    await asyncio.sleep(0)  # the task runs up to its first suspension: the wait itself
    assert not waiting.done()
    return waiting


async def test_every_commit_of_another_store_rings_at_once(waiter: SQLiteStore) -> None:
    """With the safety-net poll off, a ring that came before its commit was visible would be lost."""
    writer = SQLiteStore(waiter.url)
    await writer.open()
    try:
        for n in range(50):
            token = waiter.change_token()
            waiting = await parked(waiter)
            await writer.enqueue([new_job(n)])
            with anyio.fail_after(5.0):
                assert await waiting != token
    finally:
        await writer.close()


async def test_a_commit_in_another_process_rings(waiter: SQLiteStore) -> None:
    token = waiter.change_token()
    waiting = await parked(waiter)
    script = textwrap.dedent(
        f"""
        import asyncio
        from underway.store import NewJob
        from underway.store.sqlite import SQLiteStore

        async def main():
            store = SQLiteStore({waiter.url!r})
            await store.open()
            await store.enqueue([NewJob(id="from-afar", queue="default", task="t", args={{}}, run_at=0.0)])
            await store.close()

        asyncio.run(main())
        """
    )
    with anyio.fail_after(30.0):
        await anyio.to_thread.run_sync(lambda: subprocess.run([sys.executable, "-c", script], check=True))
        assert await waiting != token
    job = await waiter.get("from-afar")
    assert job is not None
    assert job.status is Status.QUEUED


async def test_a_writer_that_does_not_ring_is_seen_by_the_poll(tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'q.db'}")
    await store.open()
    try:
        token = store.change_token()
        waiting = await parked(store)
        with sqlite3.connect(store.path, isolation_level=None) as conn:  # the sqlite3 shell, say
            conn.execute("INSERT INTO queues (name, paused, updated_at) VALUES ('q', 1, 0)")
        with anyio.fail_after(5.0):
            assert await waiting != token
    finally:
        await store.close()
