"""The SQLite store: the default, zero-setup backend.

All SQL runs in threads: one writer thread with one connection (SQLite has one writer at a
time anyway) and a few reader threads. Every read-then-write runs in ``BEGIN IMMEDIATE``.
Writers of all processes sharing the file also queue on an advisory file lock next to the
database (``<file>-lock``), so they wait in line instead of in SQLite's sleeping busy handler.
Events' integer ids follow commit order, which makes them the cross-process feed's cursor.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

from ..events import Event, NewEvent, answer_event, dumps, status_event
from ..exceptions import (
    BatchNotFound,
    ConfigError,
    InvalidTransition,
    JobNotFound,
    SchemaError,
    StoreError,
    StoreGone,
    StoreUnhealthy,
)
from ..jobs import ACTIVE, TERMINAL, Job, Status
from ..stats import FinishedBucket
from . import sql
from .base import (
    UNSET,
    ApiKey,
    Batch,
    Finished,
    Heartbeat,
    JobFilter,
    Lease,
    NewBatch,
    NewJob,
    QueueInfo,
    SweepResult,
    WorkerInfo,
    WorkerWrite,
    search_prefix,
    search_texts,
)
from .changes import ChangeWatch
from .rows import (
    LONGEST_RATE_WINDOW,
    Candidate,
    after_cancel,
    api_key_from_row,
    api_key_params,
    batch_of,
    choose,
    counts_by_queue,
    event_from_row,
    expired_lease,
    finished_buckets_from_rows,
    finished_from_rows,
    idempotency_conflict,
    job_from_row,
    job_params,
    limited,
    move_sources,
    new_job,
    overdue,
    queue_infos,
    same_submission,
    sweep_result,
    usage_of,
    worker_from_row,
    worker_params,
    write_events,
    write_params,
)
from .sqlite_connection import CommitDoorbell, FileLock, connect, lock_path
from .sqlite_health import (
    IDENTITY_CHECK_INTERVAL,
    FileIdentity,
    cannot_write,
    logger,
    read_only_problem,
    room_problem,
    write_problem,
)

T = TypeVar("T")
#: How long a read or a write on the event loop's thread may wait for a busy database before it
#: moves to a thread.
QUICK_BUSY_MS = 20
#: Writes of at most this many rows run on the event loop's thread (see ``_write``).
INLINE_ROWS = 200
#: API key rows kept for reading again while nothing was committed (see ``api_key``).
KEYS_REMEMBERED = 10_000
#: Connections on event loops leave checkpoints to the writer thread, about once per this many
#: pages written to the WAL (SQLite's own automatic checkpoints use 1,000).
CHECKPOINT_PAGES = 1000
Q = sql.queries("sqlite")
_TERMINAL = tuple(s.value for s in TERMINAL)
_ACTIVE = tuple(s.value for s in ACTIVE)


def path_from_url(url: str) -> Path:
    """``sqlite:///underway.db`` → ``underway.db``; ``sqlite:////tmp/x.db`` → ``/tmp/x.db``."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ConfigError(
            f"{url!r} is not a SQLite URL: write sqlite:///relative.db or sqlite:////absolute.db"
        )
    path = url[len(prefix) :]
    if path == ":memory:":
        raise ConfigError("an in-memory SQLite database cannot be shared by workers: use a file")
    return Path(path)


class SQLiteStore:
    def __init__(self, url: str, *, poll_interval: float = 0.001, readers: int = 4) -> None:
        self.url = url
        self.path = path_from_url(url)
        self._poll_interval = poll_interval
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="underway-sqlite-write")
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="underway-sqlite-read")
        self._local = threading.local()
        self._write_conn: sqlite3.Connection | None = None
        self._lock: FileLock | None = None
        self._watches: WeakKeyDictionary[asyncio.AbstractEventLoop, ChangeWatch] = WeakKeyDictionary()
        self._loop_connections: WeakKeyDictionary[asyncio.AbstractEventLoop, sqlite3.Connection] = (
            WeakKeyDictionary()
        )
        self._loop_writers: WeakKeyDictionary[asyncio.AbstractEventLoop, sqlite3.Connection] = (
            WeakKeyDictionary()
        )
        #: API keys read, by (connection, key id): the connection's data_version then, the key.
        self._keys_read: dict[tuple[int, str], tuple[int, ApiKey | None]] = {}
        #: Commits of the loops' connections since the last checkpoint, and how many should
        #: come between two (adjusted to what each checkpoint found in the WAL).
        self._commits_here = 0
        self._checkpoint_every = 32
        self._checkpointing = False
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._opened = False
        #: The file the path named when the store opened it; what was found once it was not.
        self._identity: FileIdentity | None = None
        self._gone: StoreGone | None = None
        self._identity_due = 0.0

    # -- life cycle ------------------------------------------------------------------------

    async def open(self) -> None:
        if not self._opened:
            await self._run(self._writer, self._open)

    def _open(self) -> None:
        if not self._opened:
            try:
                self._migrate()
            except (sqlite3.Error, StoreError) as exc:
                read_only = read_only_problem(self.path)
                if read_only is None:
                    raise
                raise read_only from exc

    def _prepare(self) -> None:
        if self._lock is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._lock = FileLock(lock_path(self.path))
            except OSError as exc:  # a read-only filesystem or directory
                raise read_only_problem(self.path) or cannot_write(
                    self.path, f"cannot open its lock file ({exc.strerror})"
                ) from exc

    async def close(self) -> None:
        here = asyncio.get_running_loop()
        for loop, watch in list(self._watches.items()):
            if loop is here:
                watch.close()
            elif not loop.is_closed():
                loop.call_soon_threadsafe(watch.close)
        self._watches.clear()
        self._loop_connections.clear()
        self._loop_writers.clear()
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        with self._connections_lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        self._write_conn = None
        self._opened = False
        self._identity = self._gone = None

    async def migrate(self) -> list[str]:
        return await self._run(self._writer, self._migrate)

    def _migrate(self) -> list[str]:
        self._prepare()
        assert self._lock is not None
        with self._lock:
            applied = self._apply_migrations(self._writer_conn())
        if self._identity is None:
            self._identity = FileIdentity.of(self.path)
        self._opened = True
        return applied

    def _apply_migrations(self, conn: sqlite3.Connection) -> list[str]:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS underway_migrations"
            " (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM underway_migrations")}
        known = sql.migrations("sqlite")
        newest = max(m.version for m in known)
        if done and max(done) > newest:
            raise SchemaError(
                f"the database {self.path} has schema version {max(done)}, newer than this"
                f" underway knows ({newest}): upgrade underway"
            )
        if not done:
            self._script(conn, sql.schema("sqlite"), known)
            return [m.name for m in known]
        todo = [m for m in known if m.version not in done]
        for migration in todo:
            self._script(conn, migration.sql, [migration])
        return [m.name for m in todo]

    @staticmethod
    def _script(conn: sqlite3.Connection, script: str, marks: Iterable[sql.Migration]) -> None:
        inserts = "".join(
            f"INSERT INTO underway_migrations VALUES ({m.version}, '{m.name}', {time.time()});\n"
            for m in marks
        )
        try:
            conn.executescript(f"BEGIN IMMEDIATE;\n{script}\n{inserts}COMMIT;")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise SchemaError(f"migrating {conn} failed: {exc}") from exc

    # -- plumbing --------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        self.check_identity()  # else SQLite would make a new, empty file at the path
        conn = connect(self.path)
        with self._connections_lock:
            self._connections.append(conn)
        return conn

    def _connect_quick(self) -> sqlite3.Connection:
        """A connection for an event loop's thread: it waits only briefly for a busy database."""
        conn = self._connect()
        conn.execute(f"PRAGMA busy_timeout = {QUICK_BUSY_MS}")
        return conn

    def _writer_conn(self) -> sqlite3.Connection:
        if self._write_conn is None:
            self._write_conn = self._connect()
        return self._write_conn

    def _reader_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    async def _run(self, executor: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.wrap_future(executor.submit(fn))
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite error on {self.path}: {exc}") from exc

    async def _write(self, fn: Callable[[sqlite3.Connection, float], T], *, rows: int = 1) -> T:
        """Run ``fn(conn, now)`` in one ``BEGIN IMMEDIATE`` transaction.

        A write of up to ``INLINE_ROWS`` rows runs on the event loop's own thread. On the writer
        thread it would cost two thread hand-offs, and, worse, that thread would hold the
        writers' lock while it waits for the GIL after each statement whenever the loop's thread
        runs Python (up to the interpreter's 5 ms switch interval each time), holding up the
        writers of every process. A larger write runs on the writer thread so as not to stall
        the loop; so does one that finds the database busy (a program that does not take the
        writers' lock is writing), which may wait for it up to the busy timeout.
        """
        self._check_identity_soon()
        loop = asyncio.get_running_loop()
        done = await self._transaction_here(loop, fn) if rows <= INLINE_ROWS and self._opened else None
        if done is None:
            done = await self._run(self._writer, lambda: self._transaction(fn))
        result, changed = done
        if changed:
            self._poke_all(loop)
        return result

    def _transaction(self, fn: Callable[[sqlite3.Connection, float], T]) -> tuple[T, bool]:
        """``fn`` in a transaction on the writer thread."""
        if not self._opened:
            self._open()
        conn = self._writer_conn()
        assert self._lock is not None
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            return self._finish(conn, fn)

    async def _transaction_here(
        self, loop: asyncio.AbstractEventLoop, fn: Callable[[sqlite3.Connection, float], T]
    ) -> tuple[T, bool] | None:
        """``fn`` in a transaction on this thread; ``None`` if SQLite is busy."""
        conn = self._loop_writers.get(loop)
        if conn is None:
            conn = self._loop_writers[loop] = self._connect_quick()
            conn.execute("PRAGMA wal_autocheckpoint = 0")  # it would sync the disk here: see _checkpoint
        await self._hold_lock()
        assert self._lock is not None
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:
                return None
            done = self._finish(conn, fn)
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite error on {self.path}: {exc}") from exc
        finally:
            self._lock.release()
        if done[1]:
            self._commits_here += 1
            if self._commits_here >= self._checkpoint_every and not self._checkpointing:
                self._checkpointing = True
                self._writer.submit(self._checkpoint)
        return done

    async def _hold_lock(self) -> None:
        """Take the writers' lock, waiting for it in the writer thread if someone holds it."""
        assert self._lock is not None
        lock = self._lock
        if lock.acquire(blocking=False):
            return
        taking = self._writer.submit(lock.acquire)
        try:
            await asyncio.shield(asyncio.wrap_future(taking))
        except asyncio.CancelledError:

            def give_back(taken: Future[bool]) -> None:  # the thread takes it anyway
                if not taken.cancelled() and taken.exception() is None:
                    lock.release()

            taking.add_done_callback(give_back)
            raise

    def _finish(
        self, conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection, float], T]
    ) -> tuple[T, bool]:
        """Run ``fn`` in the transaction just begun; commit if it changed anything, and ring."""
        assert self._lock is not None
        before = conn.total_changes
        try:
            result = fn(conn, time.time())
        except BaseException:
            if conn.in_transaction:  # SQLite rolled back already after some errors (a full disk)
                conn.execute("ROLLBACK")
            raise
        changed = conn.total_changes != before
        conn.execute("COMMIT" if changed else "ROLLBACK")
        if changed:
            self._lock.ring()
        return result, changed

    def _checkpoint(self) -> None:
        """Copy the WAL back into the database, holding the writers' lock: then no commit comes
        in meanwhile, the checkpoint completes, and the next write starts the WAL file over
        instead of making it longer (without the lock it grew past 100 MB in a benchmark).

        The next one comes after twice as many commits if this one found less than half of
        ``CHECKPOINT_PAGES`` in the WAL, and after half as many if it found more."""
        self._commits_here = 0
        lock = self._lock
        try:
            if lock is None:  # closed meanwhile
                return
            with lock:
                busy, pages, _ = self._writer_conn().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error:  # the next one will do
            return
        finally:
            self._checkpointing = False
        if not busy and pages < CHECKPOINT_PAGES // 2:
            self._checkpoint_every = min(self._checkpoint_every * 2, 1024)
        elif pages > CHECKPOINT_PAGES:
            self._checkpoint_every = max(self._checkpoint_every // 2, 1)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        self._refuse_if_gone()
        return await self._run(self._readers, lambda: fn(self._reader_conn()))

    def _poke_all(self, here: asyncio.AbstractEventLoop) -> None:
        for loop, watch in list(self._watches.items()):
            if loop is here:
                watch.poke()
            elif not loop.is_closed():
                loop.call_soon_threadsafe(watch.poke)

    async def _quick_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A small read on the event loop's own thread: a hand-off to a reader thread costs more
        than a point lookup. Readers never wait for writers in WAL mode; in the rare case SQLite
        is busy anyway (recovering the WAL index), the read goes to a reader thread instead."""
        self._refuse_if_gone()
        loop = asyncio.get_running_loop()
        conn = self._loop_connections.get(loop)
        if conn is None:
            conn = self._loop_connections[loop] = self._connect_quick()
        try:
            return fn(conn)
        except sqlite3.OperationalError:
            return await self._read(fn)
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite error on {self.path}: {exc}") from exc

    def _watch(self) -> ChangeWatch:
        loop = asyncio.get_running_loop()
        watch = self._watches.get(loop)
        if watch is None:
            conn = self._connect()
            watch = ChangeWatch(
                lambda: conn.execute("PRAGMA data_version").fetchone()[0],
                self._poll_interval,
                CommitDoorbell.for_database(self.path),
            )
            self._watches[loop] = watch
        return watch

    def change_token(self) -> int:
        return self._watch().token()

    async def wait_for_change(self, token: int, timeout: float) -> int:
        return await self._watch().wait(token, timeout)

    # -- health ----------------------------------------------------------------------------

    def check_identity(self) -> None:
        """``StoreGone`` if the file at the path is no longer the one this store opened (one
        ``stat``); once it was found gone, every read and write is refused."""
        if self._gone is None and self._identity is not None:
            gone = self._identity.check(self.path)
            if gone is not None:
                self._gone = gone
                logger.error("%s", gone.message)
        self._refuse_if_gone()

    def _refuse_if_gone(self) -> None:
        if self._gone is not None:
            raise StoreGone(self._gone.reason, self._gone.message)

    def _check_identity_soon(self) -> None:
        """:meth:`check_identity`, at most once per ``IDENTITY_CHECK_INTERVAL`` (every write)."""
        now = time.monotonic()
        if now >= self._identity_due:
            self._identity_due = now + IDENTITY_CHECK_INTERVAL
            self.check_identity()
        self._refuse_if_gone()

    async def check_health(self) -> None:
        await self.open()
        self.check_identity()
        problem = await self._run(self._writer, self._health_problem)
        if problem is not None:
            raise problem

    def _health_problem(self) -> StoreUnhealthy | None:
        read_only = read_only_problem(self.path)
        if read_only is not None:
            return read_only
        conn = self._writer_conn()
        assert self._lock is not None
        with self._lock:
            problem = write_problem(conn, self.path)
        return problem or room_problem(conn, self.path)

    # -- submitting ------------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[Job]:
        now, stored = await self._write(lambda conn, now: (now, _enqueue(conn, now, jobs)), rows=len(jobs))
        # The records of the jobs just inserted are built after the commit: nobody waits for that.
        return [
            new_job(j, now) if existing is None else existing
            for j, existing in zip(jobs, stored, strict=True)
        ]

    # -- workers ---------------------------------------------------------------------------

    async def claim(
        self, worker_id: str, queues: Sequence[str], limit: int, lease_timeout: float
    ) -> list[Job]:
        rows = await self._write(lambda conn, now: _claim(conn, now, worker_id, queues, limit, lease_timeout))
        return [job_from_row(row) for row in rows]  # after the commit: nobody waits for this

    async def next_run_at(self, queues: Sequence[str]) -> float | None:
        query, params = (
            (Q["next_run_at_queues"], (dumps(list(queues)),)) if queues else (Q["next_run_at_any"], ())
        )
        row = await self._quick_read(lambda conn: conn.execute(query, params).fetchone())
        return None if row is None else row[0]

    async def heartbeat(self, worker: WorkerInfo, leases: Sequence[Lease], lease_timeout: float) -> Heartbeat:
        return await self._write(lambda conn, now: _heartbeat(conn, now, worker, leases, lease_timeout))

    async def cancelling(self, worker_id: str) -> frozenset[str]:
        rows = await self._read(lambda conn: conn.execute(Q["cancelling"], (worker_id,)).fetchall())
        return frozenset(row[0] for row in rows)

    async def record(self, writes: Sequence[WorkerWrite]) -> list[bool]:
        prepared = [_Prepared.of(write) for write in writes]  # JSON work before taking the lock
        return await self._write(lambda conn, now: _record_all(conn, now, prepared), rows=len(writes))

    async def workers(self, seen_within: float) -> list[WorkerInfo]:
        since = time.time() - seen_within
        rows = await self._read(lambda conn: conn.execute(Q["workers"], (since,)).fetchall())
        return [worker_from_row(row) for row in rows]

    async def remove_worker(self, worker_id: str) -> None:
        await self._write(lambda conn, now: conn.execute(Q["remove_worker"], (worker_id,)))

    async def sweep(self, cancel_grace: float) -> SweepResult:
        return await self._write(lambda conn, now: _sweep(conn, now, cancel_grace), rows=INLINE_ROWS + 1)

    async def prune(self, older_than: float, limit: int = 1000) -> int:
        return await self._write(lambda conn, now: _prune(conn, now - older_than, limit), rows=limit)

    # -- clients ---------------------------------------------------------------------------

    async def cancel(self, job_filter: JobFilter) -> list[Job]:
        rows = len(job_filter.ids) if job_filter.ids else INLINE_ROWS + 1  # a filter may match many
        return await self._write(lambda conn, now: _cancel(conn, now, job_filter), rows=rows)

    async def answer(self, job_id: str, key: str, value: Any) -> Job:
        return await self._write(lambda conn, now: _answer(conn, now, job_id, key, value))

    async def retry(self, job_id: str, max_attempts: int) -> Job:
        return await self._write(lambda conn, now: _retry(conn, now, job_id, max_attempts))

    async def delete(self, job_id: str) -> None:
        await self._write(lambda conn, now: _delete(conn, job_id))

    # -- batches and queues ----------------------------------------------------------------

    async def create_batch(self, batch: NewBatch, jobs: Sequence[NewJob]) -> Batch:
        return await self._write(lambda conn, now: _create_batch(conn, now, batch, jobs), rows=len(jobs))

    async def get_batch(self, batch_id: str) -> Batch | None:
        return await self._read(lambda conn: _find_batch(conn, batch_id))

    async def list_batches(
        self, *, limit: int = 50, before: str | None = None, owner: str | None = None
    ) -> list[Batch]:
        query = Q["list_batches" if owner is None else "list_batches_of_owner"]
        params = {"before": before or "~", "limit": limit, "owner": owner}

        def read(conn: sqlite3.Connection) -> list[Batch]:
            return [_batch_of(conn, row) for row in conn.execute(query, params).fetchall()]

        return await self._read(read)

    async def pause_batch(self, batch_id: str, paused: bool) -> Batch:
        return await self._write(lambda conn, now: _pause_batch(conn, now, batch_id, paused))

    async def cancel_batch(self, batch_id: str) -> tuple[Batch, list[Job]]:
        return await self._write(lambda conn, now: _cancel_batch(conn, now, batch_id), rows=INLINE_ROWS + 1)

    async def retry_jobs(self, job_filter: JobFilter, extra_attempts: int) -> list[Job]:
        return await self._write(
            lambda conn, now: _retry_jobs(conn, now, job_filter, extra_attempts), rows=INLINE_ROWS + 1
        )

    async def queues(self, owner: str | None = None) -> list[QueueInfo]:
        return await self._read(lambda conn: _queues(conn, time.time(), owner))

    async def set_queue(
        self, name: str, *, paused: bool | None = None, concurrency: int | None = UNSET
    ) -> QueueInfo:
        return await self._write(lambda conn, now: _set_queue(conn, now, name, paused, concurrency))

    async def get(self, job_id: str) -> Job | None:
        row = await self._quick_read(lambda conn: conn.execute(Q["get_job"], (job_id,)).fetchone())
        return None if row is None else job_from_row(row)

    async def list_jobs(
        self, job_filter: JobFilter, *, limit: int = 50, before: str | None = None, after: str | None = None
    ) -> list[Job]:
        where, params = _where(job_filter)
        if before is not None:
            where += " AND id < ?"
            params.append(before)
        if after is not None:
            where += " AND id > ?"
            params.append(after)
        order = "DESC" if after is None else "ASC"
        query = f"SELECT * FROM jobs WHERE {where} ORDER BY id {order} LIMIT ?"
        rows = await self._read(lambda conn: conn.execute(query, [*params, limit]).fetchall())
        return [job_from_row(row) for row in rows]

    async def events(
        self, job_id: str, *, after: int = 0, limit: int = 1000, types: Sequence[str] = ()
    ) -> list[Event]:
        # The types are filtered in SQL, so that ``limit`` counts the events returned.
        query, params = (
            (Q["events_after_types"], (job_id, after, dumps(list(types)), limit))
            if types
            else (Q["events_after"], (job_id, after, limit))
        )
        rows = await self._read(lambda conn: conn.execute(query, params).fetchall())
        return [event_from_row(row) for row in rows]

    async def log_lines(self, job_id: str) -> int:
        row = await self._read(lambda conn: conn.execute(Q["log_lines"], (job_id,)).fetchone())
        return int(row[0])

    async def feed(self, after: int, limit: int = 1000) -> tuple[list[Event], int]:
        rows = await self._quick_read(lambda conn: conn.execute(Q["feed"], (after, limit)).fetchall())
        return [event_from_row(row) for row in rows], (rows[-1]["id"] if rows else after)

    async def feed_position(self) -> int:
        row = await self._quick_read(lambda conn: conn.execute(Q["feed_position"]).fetchone())
        return int(row[0])

    async def finished_since(self, since: float, owner: str | None = None) -> list[Finished]:
        query = Q["finished_since" if owner is None else "finished_since_of_owner"]
        params = {"since": since, "owner": owner}
        rows = await self._read(lambda conn: conn.execute(query, params).fetchall())
        return finished_from_rows(rows)

    async def finished_stats(
        self, since: float, bucket: float, count: int, owner: str | None = None
    ) -> list[FinishedBucket]:
        params = {"since": float(since), "bucket": float(bucket), "count": count, "owner": owner}
        rows = await self._read(lambda conn: conn.execute(Q["finished_stats"], params).fetchall())
        return finished_buckets_from_rows(rows)

    async def stats(self) -> dict[str, dict[str, int]]:
        rows = await self._read(lambda conn: conn.execute(Q["stats"]).fetchall())
        return counts_by_queue(rows)

    # -- API keys and secrets --------------------------------------------------------------

    async def add_api_key(self, key: ApiKey) -> None:
        await self._write(lambda conn, now: conn.execute(Q["insert_api_key"], api_key_params(key)))

    async def api_key(self, key_id: str) -> ApiKey | None:
        """The key's row, read on every request that carries the key. A row read before is
        used again while ``PRAGMA data_version`` of the connection says that nothing was
        committed since by any other connection (a revocation is such a commit): exact, and
        a point read cheaper."""

        def read(conn: sqlite3.Connection) -> ApiKey | None:
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            known = self._keys_read.get((id(conn), key_id))
            if known is not None and known[0] == version:
                return known[1]
            row = conn.execute(Q["get_api_key"], (key_id,)).fetchone()
            found = None if row is None else api_key_from_row(row)
            self._keys_read[(id(conn), key_id)] = (version, found)
            if len(self._keys_read) > KEYS_REMEMBERED:
                self._keys_read.pop(next(iter(self._keys_read)))
            return found

        return await self._quick_read(read)

    async def api_keys(self) -> list[ApiKey]:
        rows = await self._read(lambda conn: conn.execute(Q["api_keys"]).fetchall())
        return [api_key_from_row(row) for row in rows]

    async def revoke_api_key(self, key_id: str, at: float) -> ApiKey | None:
        params = {"id": key_id, "at": at}
        row = await self._write(lambda conn, now: conn.execute(Q["revoke_api_key"], params).fetchone())
        return None if row is None else api_key_from_row(row)

    async def revoked_api_keys(self, key_ids: Sequence[str]) -> frozenset[str]:
        if not key_ids:
            return frozenset()
        ids = (dumps(list(key_ids)),)
        rows = await self._quick_read(lambda conn: conn.execute(Q["revoked_api_keys"], ids).fetchall())
        return frozenset(row[0] for row in rows)

    async def has_api_keys(self) -> bool:
        row = await self._quick_read(lambda conn: conn.execute(Q["has_api_keys"]).fetchone())
        return bool(row[0])

    async def secret(self, name: str, make: Callable[[], str]) -> str:
        row = await self._quick_read(lambda conn: conn.execute(Q["get_secret"], (name,)).fetchone())
        if row is not None:
            return str(row[0])
        value = make()
        return await self._write(lambda conn, now: _secret(conn, now, name, value))

    async def set_secret(self, name: str, value: str) -> None:
        params = {"name": name, "value": value}
        await self._write(lambda conn, now: conn.execute(Q["set_secret"], {**params, "now": now}))


# -- transactions (run inside BEGIN IMMEDIATE) ----------------------------------------------------


def _enqueue(conn: sqlite3.Connection, now: float, jobs: Sequence[NewJob]) -> list[Job | None]:
    """Insert ``jobs``; for each, the job already stored under its idempotency key, or None."""
    stored = [_by_idempotency_key(conn, j) for j in jobs]
    _insert_jobs(conn, now, [j for j, existing in zip(jobs, stored, strict=True) if existing is None])
    return stored


def _insert_jobs(conn: sqlite3.Connection, now: float, jobs: Sequence[NewJob]) -> None:
    """Insert new jobs (no idempotency key already stored) with their ``queued`` events."""
    conn.executemany(Q["insert_job"], [(*job_params(j), now) for j in jobs])
    queued = dumps(status_event(Status.QUEUED, 0).data)
    conn.executemany(Q["insert_event"], [(j.id, 1, "status", now, queued) for j in jobs])


def _by_idempotency_key(conn: sqlite3.Connection, new: NewJob) -> Job | None:
    """The job already stored under ``new``'s idempotency key, if it asks for the same."""
    if new.idempotency_key is None:
        return None
    row = conn.execute(
        Q["job_by_idempotency_key"], {"owner": new.owner, "key": new.idempotency_key}
    ).fetchone()
    if row is None:
        return None
    existing = job_from_row(row)
    if not same_submission(existing, new):
        raise idempotency_conflict(existing, new)
    return existing


def _claim(
    conn: sqlite3.Connection,
    now: float,
    worker_id: str,
    queues: Sequence[str],
    limit: int,
    lease_timeout: float,
) -> list[Any]:
    """Claim up to ``limit`` due jobs; their rows (``sqlite3.Row``), in the order they were chosen."""
    controls = conn.execute(Q["queue_controls"]).fetchall()
    usage, skip_queues, skip_keys = usage_of(
        controls,
        conn.execute(Q["running_by_key"]).fetchall(),
        conn.execute(Q["started_by_key"], {"now": now}).fetchall(),
        conn.execute(Q["running_by_queue"]).fetchall() if any(r["concurrency"] for r in controls) else [],
    )
    candidates = _claim_candidates(conn, now, queues, limit, skip_queues, skip_keys)
    if limited(candidates, usage.queue_limits):
        candidates = choose(candidates, limit, usage)
        conn.executemany(
            Q["insert_start"],
            [(c.limit_key, now, c.rate_count, c.rate_per) for c in candidates if c.rate_count is not None],
        )
    ids = [c.id for c in candidates[:limit]]
    if not ids:
        return []
    params = {"lease_until": now + lease_timeout, "worker_id": worker_id, "now": now, "ids": dumps(ids)}
    order = {job_id: n for n, job_id in enumerate(ids)}
    rows = sorted(conn.execute(Q["claim"], params).fetchall(), key=lambda row: order[row["id"]])
    conn.executemany(
        Q["insert_event"],
        [(row["id"], row["last_seq"], "status", now, _running_data(row["attempt"])) for row in rows],
    )
    return rows


@functools.lru_cache(maxsize=64)
def _running_data(attempt: int) -> str:
    return dumps(status_event(Status.RUNNING, attempt).data)


#: A claim looks at this many more due jobs than it may take, for the limits to pass over.
OVERSCAN = 2


def _claim_candidates(
    conn: sqlite3.Connection,
    now: float,
    queues: Sequence[str],
    limit: int,
    skip_queues: list[str],
    skip_keys: list[str],
) -> list[Candidate]:
    params: dict[str, Any] = {"now": now, "limit": limit * OVERSCAN, "skip_keys": dumps(skip_keys)}
    if not queues:
        rows = conn.execute(
            Q["claim_candidates_any"], {**params, "skip_queues": dumps(skip_queues)}
        ).fetchall()
        return [Candidate.of(row) for row in rows]
    rows = []
    for queue in dict.fromkeys(queues):  # a queue named twice must not fill the limit twice
        if queue not in skip_queues:
            rows += conn.execute(Q["claim_candidates_queue"], {**params, "queue": queue}).fetchall()
    rows.sort(key=lambda row: (-row["priority"], row["run_at"], row["id"]))
    return [Candidate.of(row) for row in rows[: limit * OVERSCAN]]


def _heartbeat(
    conn: sqlite3.Connection,
    now: float,
    worker: WorkerInfo,
    leases: Sequence[Lease],
    lease_timeout: float,
) -> Heartbeat:
    conn.execute(Q["upsert_worker"], {**worker_params(worker), "last_seen": now})
    lost, cancelling = set(), set()
    for lease in leases:
        row = conn.execute(Q["extend_lease"], (now + lease_timeout, lease.job_id, lease.attempt)).fetchone()
        if row is None:
            lost.add(lease.job_id)
        elif row[1]:
            cancelling.add(lease.job_id)
    return Heartbeat(lost=frozenset(lost), cancelling=frozenset(cancelling))


@dataclass(slots=True)
class _Prepared:
    """A fenced write with its events and its element of ``:writes``, encoded ahead of time."""

    write: WorkerWrite
    events: list[NewEvent]
    texts: list[str]
    row: list[Any]

    @classmethod
    def of(cls, write: WorkerWrite) -> _Prepared:
        events = write_events(write)
        p = write_params(write, len(events), 0.0)
        row = [p["id"], p["attempt"], p["events"], p["progress"], p["set_checkpoint"], p["checkpoint"]]
        if write.status is not None:
            row += [p["result"], p["error"], p["prompt"], p["run_at"], p["hand_back"], p["crash"]]
        return cls(write, events, [dumps(e.data) for e in events], row)


def _record_all(conn: sqlite3.Connection, now: float, writes: Sequence[_Prepared]) -> list[bool]:
    """Apply fenced writes; whether each was accepted. One statement per kind of write, except
    that a job written twice gets its second write in a later statement."""
    writes = [_checked(conn, prepared) for prepared in writes]
    seqs: dict[int, int] = {}  # index in writes -> the job's last seq after the write
    start = 0
    while start < len(writes):
        ids: set[str] = set()
        end = start
        while end < len(writes) and writes[end].write.lease.job_id not in ids:
            ids.add(writes[end].write.lease.job_id)
            end += 1
        seqs.update(_apply(conn, now, writes, range(start, end)))
        start = end
    rows: list[tuple[str, int, str, float, str]] = []
    for n, prepared in enumerate(writes):
        if n in seqs:
            job_id = prepared.write.lease.job_id
            first = seqs[n] - len(prepared.events) + 1
            rows += [
                (job_id, first + i, event.type.value, now, text)
                for i, (event, text) in enumerate(zip(prepared.events, prepared.texts, strict=True))
            ]
    conn.executemany(Q["insert_event"], rows)
    return [n in seqs for n in range(len(writes))]


def _checked(conn: sqlite3.Connection, prepared: _Prepared) -> _Prepared:
    """A move back to the queue of a job someone asked to cancel ends it instead."""
    write = prepared.write
    if write.status is Status.QUEUED and _cancel_requested(conn, write.lease):
        return _Prepared.of(after_cancel(write))
    return prepared


def _apply(
    conn: sqlite3.Connection, now: float, writes: Sequence[_Prepared], indexes: range
) -> dict[int, int]:
    """Apply the fenced writes at ``indexes`` (of distinct jobs), one statement per target
    status; the last seq of each accepted one, by index."""
    groups: dict[Status | None, list[int]] = {}
    for n in indexes:
        groups.setdefault(writes[n].write.status, []).append(n)
    seqs: dict[int, int] = {}
    for status, members in groups.items():
        query = Q["fenced_touch"] if status is None else _fenced_move_sql(status)
        params = {
            "writes": dumps([writes[n].row for n in members]),
            "now": now,
            "status": None if status is None else status.value,
        }
        last_seqs = dict(conn.execute(query, params).fetchall())
        for n in members:
            seq = last_seqs.get(writes[n].write.lease.job_id)
            if seq is not None:
                seqs[n] = seq
    return seqs


def _cancel_requested(conn: sqlite3.Connection, lease: Lease) -> bool:
    row = conn.execute(Q["cancel_requested"], (lease.job_id, lease.attempt)).fetchone()
    return row is not None and bool(row[0])


@functools.cache
def _fenced_move_sql(target: Status) -> str:
    """The fenced move to ``target``, from the statuses a worker may move it from."""
    return Q["fenced_move"].format(sources=move_sources(target))


def _append_many(conn: sqlite3.Connection, now: float, rows: Sequence[tuple[str, int, NewEvent]]) -> None:
    conn.executemany(
        Q["insert_event"],
        [(job_id, seq, e.type.value, now, dumps(e.data)) for job_id, seq, e in rows],
    )


def _sweep(conn: sqlite3.Connection, now: float, cancel_grace: float) -> SweepResult:
    writes = [expired_lease(row, now) for row in conn.execute(Q["expired_leases"], (now,)).fetchall()]
    writes += [
        overdue(job_id, attempt)
        for job_id, attempt in conn.execute(Q["overdue_cancels"], (now - cancel_grace,)).fetchall()
    ]
    accepted = _record_all(conn, now, [_Prepared.of(write) for write in writes])
    conn.execute(Q["forget_workers"], (now - 86400.0,))
    conn.execute(Q["forget_starts"], (now - LONGEST_RATE_WINDOW,))
    return sweep_result(writes, accepted)


def _prune(conn: sqlite3.Connection, before: float, limit: int) -> int:
    ids = [row[0] for row in conn.execute(Q["prunable"], (before, limit))]
    for job_id in ids:
        conn.execute(Q["delete_events"], (job_id,))
        conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
    conn.execute(Q["prune_batches"], {"before": before, "limit": limit})
    return len(ids)


def _cancel(conn: sqlite3.Connection, now: float, job_filter: JobFilter) -> list[Job]:
    where, params = _where(job_filter)
    active = ",".join("?" * (len(_ACTIVE) + 1))
    query = f"SELECT id, status FROM jobs WHERE {where} AND status IN ({active})"
    changed = []
    for job_id, status in conn.execute(query, [*params, "queued", *_ACTIVE]).fetchall():
        if status == "queued":
            row = conn.execute(Q["cancel_queued"], {"id": job_id, "now": now}).fetchone()
            event = status_event(Status.CANCELLED, row["attempt"]) if row else None
        else:
            row = conn.execute(Q["request_cancel"], {"id": job_id, "now": now}).fetchone()
            event = status_event(Status(status), row["attempt"], cancel_requested=True) if row else None
        if row is not None and event is not None:
            job = job_from_row(row)
            _append_many(conn, now, [(job.id, job.last_seq, event)])
            changed.append(job)
    return changed


def _answer(conn: sqlite3.Connection, now: float, job_id: str, key: str, value: Any) -> Job:
    current = _get(conn, job_id)
    if current.status is not Status.WAITING or current.prompt is None:
        raise InvalidTransition(
            f"job {job_id} is {current.status.value}, not waiting for an answer",
            details={"status": current.status.value},
        )
    if current.prompt.get("key") != key:
        raise InvalidTransition(
            f"job {job_id} is waiting for an answer to {current.prompt.get('key')!r}, not {key!r}",
            details={"key": current.prompt.get("key")},
        )
    answers = {**current.answers, key: value}
    row = conn.execute(
        Q["answer"], {"id": job_id, "key": key, "answers": dumps(answers), "now": now}
    ).fetchone()
    job = job_from_row(row)
    _append_many(
        conn,
        now,
        [
            (job_id, job.last_seq - 1, answer_event(key, value)),
            (job_id, job.last_seq, status_event(Status.RUNNING, job.attempt)),
        ],
    )
    return job


def _retry(conn: sqlite3.Connection, now: float, job_id: str, max_attempts: int) -> Job:
    row = conn.execute(Q["retry"], {"id": job_id, "now": now, "max_attempts": max_attempts}).fetchone()
    if row is None:
        current = _get(conn, job_id)
        raise InvalidTransition(
            f"job {job_id} is {current.status.value}: only a finished job can be retried",
            details={"status": current.status.value},
        )
    job = job_from_row(row)
    _append_many(
        conn, now, [(job_id, job.last_seq, status_event(Status.QUEUED, job.attempt, reason="retry"))]
    )
    return job


def _delete(conn: sqlite3.Connection, job_id: str) -> None:
    if conn.execute(Q["delete_job"], (job_id,)).fetchone() is None:
        current = _get(conn, job_id)
        raise InvalidTransition(
            f"job {job_id} is {current.status.value}: cancel it and wait for it to end before deleting it",
            details={"status": current.status.value},
        )
    conn.execute(Q["delete_events"], (job_id,))


def _create_batch(conn: sqlite3.Connection, now: float, batch: NewBatch, jobs: Sequence[NewJob]) -> Batch:
    conn.execute(
        Q["insert_batch"],
        {
            "id": batch.id,
            "name": batch.name,
            "task": batch.task,
            "queue": batch.queue,
            "owner": batch.owner,
            "labels": dumps(batch.labels),
            "total": len(jobs),
            "now": now,
        },
    )
    if any(j.idempotency_key is not None for j in jobs):
        _enqueue(conn, now, jobs)
    else:  # nothing to look up, and no job records to return
        _insert_jobs(conn, now, jobs)
    return _batch(conn, batch.id)


def _find_batch(conn: sqlite3.Connection, batch_id: str) -> Batch | None:
    row = conn.execute(Q["get_batch"], (batch_id,)).fetchone()
    return None if row is None else _batch_of(conn, row)


def _batch(conn: sqlite3.Connection, batch_id: str) -> Batch:
    batch = _find_batch(conn, batch_id)
    if batch is None:
        raise BatchNotFound(batch_id)
    return batch


def _batch_of(conn: sqlite3.Connection, row: Any) -> Batch:
    return batch_of(row, conn.execute(Q["batch_counts"], (row["id"],)).fetchall())


def _pause_batch(conn: sqlite3.Connection, now: float, batch_id: str, paused: bool) -> Batch:
    if conn.execute(Q["pause_batch"], {"id": batch_id, "paused": int(paused), "now": now}).fetchone() is None:
        raise BatchNotFound(batch_id)
    return _batch(conn, batch_id)


def _cancel_batch(conn: sqlite3.Connection, now: float, batch_id: str) -> tuple[Batch, list[Job]]:
    if conn.execute(Q["cancel_batch"], {"id": batch_id, "now": now}).fetchone() is None:
        raise BatchNotFound(batch_id)
    jobs = _cancel(conn, now, JobFilter(batch_id=batch_id))
    return _batch(conn, batch_id), jobs


def _retry_jobs(conn: sqlite3.Connection, now: float, job_filter: JobFilter, extra: int) -> list[Job]:
    where, params = _where(job_filter)
    ended = ",".join("?" * len(_TERMINAL))
    ids = [
        row[0]
        for row in conn.execute(
            f"SELECT id FROM jobs WHERE {where} AND status IN ({ended})", [*params, *_TERMINAL]
        )
    ]
    jobs = []
    for job_id in ids:
        job = job_from_row(
            conn.execute(Q["retry_extra"], {"id": job_id, "now": now, "extra": extra}).fetchone()
        )
        _append_many(
            conn, now, [(job.id, job.last_seq, status_event(Status.QUEUED, job.attempt, reason="retry"))]
        )
        jobs.append(job)
    for batch_id in sorted({job.batch_id for job in jobs if job.batch_id is not None}):
        conn.execute(Q["reopen_batch"], {"id": batch_id, "now": now})
    return jobs


def _queues(conn: sqlite3.Connection, now: float, owner: str | None = None) -> list[QueueInfo]:
    controls = conn.execute(Q["all_queue_controls"]).fetchall()
    if owner is None:
        stats = conn.execute(Q["stats"]).fetchall()
        return queue_infos(stats, conn.execute(Q["oldest_due"], (now,)).fetchall(), controls)
    stats = conn.execute(Q["stats_of_owner"], (owner,)).fetchall()
    oldest = conn.execute(Q["oldest_due_of_owner"], {"now": now, "owner": owner}).fetchall()
    return queue_infos(stats, oldest, controls, with_jobs_only=True)


def _set_queue(
    conn: sqlite3.Connection, now: float, name: str, paused: bool | None, concurrency: int | None
) -> QueueInfo:
    conn.execute(
        Q["set_queue"],
        {
            "name": name,
            "paused": None if paused is None else int(paused),
            "set_concurrency": concurrency is not UNSET,
            "concurrency": None if concurrency is UNSET else concurrency,
            "now": now,
        },
    )
    return next(q for q in _queues(conn, now) if q.name == name)


def _secret(conn: sqlite3.Connection, now: float, name: str, value: str) -> str:
    """Store ``value`` under ``name`` unless a value is there already; the value stored."""
    conn.execute(Q["add_secret"], {"name": name, "value": value, "now": now})
    return str(conn.execute(Q["get_secret"], (name,)).fetchone()[0])


def _get(conn: sqlite3.Connection, job_id: str) -> Job:
    row = conn.execute(Q["get_job"], (job_id,)).fetchone()
    if row is None:
        raise JobNotFound(job_id)
    return job_from_row(row)


def _where(job_filter: JobFilter) -> tuple[str, list[Any]]:
    clauses: list[str] = ["1 = 1"]
    params: list[Any] = []
    if job_filter.ids:
        clauses.append(f"id IN ({','.join('?' * len(job_filter.ids))})")
        params += job_filter.ids
    if job_filter.statuses:
        clauses.append(f"status IN ({','.join('?' * len(job_filter.statuses))})")
        params += [s.value for s in job_filter.statuses]
    for column in ("queue", "task", "owner", "batch_id"):
        value = getattr(job_filter, column)
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if job_filter.label is not None:
        clauses.append("json_extract(labels, '$.' || json_quote(?)) = ?")
        params += list(job_filter.label)
    if job_filter.q:
        clause, found = _search(job_filter.q)
        clauses.append(clause)
        params += found
    return " AND ".join(clauses), params


def _search(q: str) -> tuple[str, list[Any]]:
    """The clause of a search (``lower()`` folds ASCII letters only, as :func:`fold_case` does)."""
    clauses: list[str] = []
    params: list[Any] = []
    prefix = search_prefix(q)
    if prefix is not None:
        clauses.append("instr(lower(id), ?) = 1")
        params.append(prefix)
    for text in search_texts(q):
        clauses.append("instr(lower(args), ?) > 0")
        params.append(text)
    return f"({' OR '.join(clauses) or '0 = 1'})", params
