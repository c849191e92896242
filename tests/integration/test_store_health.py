"""A store's health tells the truth: it fails when the store cannot write (read-only, full) or, for
SQLite, when the file at the path is no longer the one the store opened; and a SQLite store
whose file was deleted or replaced refuses every call instead of writing to a file nobody reads."""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from underway.exceptions import StoreError, StoreGone, StoreUnhealthy
from underway.store import JobFilter, NewJob, Store, sqlite_connection, sqlite_health
from underway.store import sqlite as sqlite_module
from underway.store.postgres import PostgresStore
from underway.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio


def new_job(size: int = 0) -> NewJob:
    return NewJob(id=secrets.token_hex(8), queue="default", task="t", args={"pad": "x" * size}, run_at=0.0)


@pytest.fixture
async def sqlite_store(tmp_path: Path, anyio_backend: str) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'h.db'}")
    await store.open()
    yield store
    await store.close()


class Pragmas:
    """Sets a PRAGMA on every connection of the SQLite stores of this process, the open ones and
    those opened later (pragmas such as ``query_only`` and ``max_page_count`` are per connection)."""

    def __init__(self, store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self._store = store
        self._given: list[str] = []
        real = sqlite_connection.connect

        def connect(path: Path) -> sqlite3.Connection:
            conn = real(path)
            for pragma in self._given:
                conn.execute(f"PRAGMA {pragma}")
            return conn

        monkeypatch.setattr(sqlite_module, "connect", connect)

    def set(self, pragma: str) -> None:
        self._given.append(pragma)
        for conn in list(self._store._connections):
            conn.execute(f"PRAGMA {pragma}")


@pytest.fixture
def pragmas(sqlite_store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> Pragmas:
    return Pragmas(sqlite_store, monkeypatch)


async def test_a_healthy_store_says_so_and_its_check_writes_nothing(store: Store) -> None:
    (job,) = await store.enqueue([new_job()])
    token = store.change_token()
    await store.check_health()
    store.check_identity()
    assert store.change_token() == token  # nothing was committed
    assert [j.id for j in await store.list_jobs(JobFilter(), limit=10)] == [job.id]


async def test_a_read_only_connection_cannot_write_and_says_so(
    sqlite_store: SQLiteStore, pragmas: Pragmas
) -> None:
    await sqlite_store.enqueue([new_job()])
    pragmas.set("query_only = 1")
    with pytest.raises(StoreUnhealthy) as unhealthy:
        await sqlite_store.check_health()
    assert unhealthy.value.reason == "cannot write: attempt to write a readonly database"
    with pytest.raises(StoreError, match="readonly"):
        await sqlite_store.enqueue([new_job()])
    assert len(await sqlite_store.list_jobs(JobFilter(), limit=10)) == 1  # reads go on
    pragmas.set("query_only = 0")
    await sqlite_store.check_health()


async def test_a_full_database_refuses_writes_loses_nothing_and_recovers(
    sqlite_store: SQLiteStore, pragmas: Pragmas
) -> None:
    conn = sqlite_store._writer_conn()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    pragmas.set(f"max_page_count = {pages}")  # the disk is full: no page more
    stored: list[str] = []
    with pytest.raises(StoreError, match="database or disk is full"):
        await fill(sqlite_store, stored)
    with pytest.raises(StoreUnhealthy) as unhealthy:
        await sqlite_store.check_health()
    assert unhealthy.value.reason == f"database full: {pages} of at most {pages} pages used (max_page_count)"
    pragmas.set("max_page_count = 1000000")  # space came back
    await sqlite_store.check_health()
    (late,) = await sqlite_store.enqueue([new_job(size=500)])
    found = {j.id for j in await sqlite_store.list_jobs(JobFilter(), limit=10_000)}
    assert found == {*stored, late.id}


async def fill(store: Store, stored: list[str]) -> None:
    """Submit jobs until the store refuses one; ``stored``: the ids of those it took."""
    for _ in range(1000):
        (job,) = await store.enqueue([new_job(size=500)])
        stored.append(job.id)


async def test_a_disk_with_less_room_than_sqlite_may_need_is_reported(
    sqlite_store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    free = sqlite_health.free_bytes(sqlite_store.path)
    monkeypatch.setattr(sqlite_health, "MIN_FREE_BYTES", free + 10**12)
    with pytest.raises(StoreUnhealthy) as unhealthy:
        await sqlite_store.check_health()
    assert unhealthy.value.reason.startswith("disk full: ")
    assert "MB free where the database is (underway needs" in unhealthy.value.reason


def lose_file(path: Path, what: str) -> None:
    if what == "deleted":
        path.unlink()
    else:
        other = path.with_name("other.db")
        sqlite3.connect(other).close()
        os.replace(other, path)


@pytest.mark.parametrize("what", ["deleted", "replaced"])
async def test_a_deleted_or_replaced_file_is_noticed_and_every_call_refused(
    sqlite_store: SQLiteStore, what: str
) -> None:
    await sqlite_store.enqueue([new_job()])
    lose_file(sqlite_store.path, what)
    with pytest.raises(StoreGone) as gone:
        sqlite_store.check_identity()
    assert gone.value.reason == (
        f"database file {what} while open: restart this process to open the file now at that path"
    )
    assert f"{sqlite_store.path} was {what} while this process had it open" in gone.value.message
    with pytest.raises(StoreGone):
        await sqlite_store.check_health()
    with pytest.raises(StoreGone):
        await sqlite_store.enqueue([new_job()])
    with pytest.raises(StoreGone):
        await sqlite_store.list_jobs(JobFilter(), limit=10)
    assert not sqlite_store.path.exists() or what == "replaced"  # no new file made at the path


async def test_writes_notice_a_lost_file_without_being_asked(
    sqlite_store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "IDENTITY_CHECK_INTERVAL", 0.0)
    await sqlite_store.enqueue([new_job()])
    sqlite_store.path.unlink()
    with pytest.raises(StoreGone, match="deleted"):
        await sqlite_store.enqueue([new_job()])


async def test_a_read_only_postgres_opens_and_says_it_cannot_write(
    postgres_url: str, anyio_backend: str
) -> None:
    writable = PostgresStore(postgres_url)
    await writable.open()  # makes the schema
    (job,) = await writable.enqueue([new_job()])
    read_only = PostgresStore(
        postgres_url.replace("options=", "options=-cdefault_transaction_read_only%3Don%20")
    )
    try:
        await writable.check_health()
        await read_only.open()
        assert await read_only.get(job.id) == job
        with pytest.raises(StoreUnhealthy) as unhealthy:
            await read_only.check_health()
        assert (
            unhealthy.value.reason
            == "cannot write: transactions are read-only (default_transaction_read_only)"
        )
        with pytest.raises(StoreError, match="read-only transaction"):
            await read_only.enqueue([new_job()])
    finally:
        await read_only.close()
        await writable.close()
