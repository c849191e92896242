"""The PostgreSQL store: many API servers and workers on many machines, one database.

SQL runs in threads, on connections of a psycopg_pool pool (the store serves any event loop,
like the SQLite store, and psycopg's sync driver releases the GIL while it waits). Tables are
created in the first schema of the connection's ``search_path``
(``postgresql://…?options=-csearch_path%3Dmyschema`` picks another than ``public``).

Every read-then-write is one transaction; claims lock their rows with ``FOR UPDATE SKIP LOCKED``.
Events are inserted last in a transaction, under a transaction-level advisory lock held until
the commit, so their ids follow commit order and serve as the feed's cursor. The same
transaction sends a ``NOTIFY`` (ids only); one ``LISTEN`` connection per process wakes its
waiters. A lost notification only delays: waiters time out and look again, and the listener
pokes everyone after it reconnects.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar
from weakref import WeakKeyDictionary

from ..events import Event, NewEvent, answer_event, dumps, status_event
from ..exceptions import (
    BatchNotFound,
    ConfigError,
    InvalidTransition,
    JobNotFound,
    SchemaError,
    StoreError,
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
from .postgres_health import write_problem
from .rows import (
    LONGEST_RATE_WINDOW,
    Candidate,
    Usage,
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
    idempotency_scope,
    job_from_row,
    limited,
    move_sources,
    new_job,
    numbered,
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

if TYPE_CHECKING:
    import psycopg
    import psycopg_pool

T = TypeVar("T")
#: Statements as bytes: psycopg takes ``bytes`` (or literal strings) as queries.
_TEXT = sql.queries("postgres")
Q = {name: text.encode() for name, text in _TEXT.items()}
logger = logging.getLogger("underway.store.postgres")

_TERMINAL = [s.value for s in TERMINAL]
_ACTIVE = [s.value for s in ACTIVE]
#: Transactions that failed for a reason a new try fixes (deadlock, a connection that broke
#: before the commit) run again this many times.
TRIES = 3
#: With the listener connected, waiters still look this often, as a safety net.
FALLBACK_INTERVAL = 0.5
#: How long the listener waits for a notification before it checks whether it should stop.
LISTEN_TICK = 1.0
#: The listener's delays between reconnection attempts grow to this.
LISTEN_BACKOFF_MAX = 2.0
#: The server ends a transaction of ours that stays idle this long (a stalled process's).
IDLE_IN_TRANSACTION_MS = 30_000
#: How long opening the store waits for the database.
CONNECT_TIMEOUT = 10.0
INSTALL_HINT = "the PostgreSQL store needs psycopg: pip install 'underway[postgres]'"


def _import_driver() -> tuple[Any, Any]:
    try:
        import psycopg
        import psycopg_pool
    except ImportError as exc:
        raise ConfigError(INSTALL_HINT, details={"missing": exc.name}) from exc
    return psycopg, psycopg_pool


def _lock_key(*parts: str) -> int:
    """A signed 64-bit advisory lock key for ``parts`` (stable across processes)."""
    digest = hashlib.blake2b("\0".join(("underway", *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class _Tx:
    """The statements of one write transaction (events and the notification go in last, see
    ``_finish``), or of a read on an autocommit connection (which appends nothing)."""

    def __init__(self, conn: psycopg.Connection[Any], now: float) -> None:
        self.conn = conn
        self.now = now
        self.events: list[tuple[str, int, NewEvent]] = []
        self.changed = False

    def one(self, query: bytes, params: dict[str, Any] | None = None) -> dict[str, Any] | None:
        row: dict[str, Any] | None = self.conn.execute(query, params).fetchone()
        return row

    def all(self, query: bytes, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.conn.execute(query, params).fetchall()
        return rows

    def run(self, query: bytes, params: dict[str, Any] | None = None) -> int:
        """Run a statement; the number of rows it changed."""
        cursor = self.conn.execute(query, params)
        if cursor.rowcount > 0:
            self.changed = True
        return cursor.rowcount

    def append(self, rows: Iterable[tuple[str, int, NewEvent]]) -> None:
        self.events += rows


class PostgresStore:
    def __init__(self, url: str, *, pool_size: int = 8, poll_interval: float = FALLBACK_INTERVAL) -> None:
        self.url = url
        self._psycopg, self._pool_module = _import_driver()
        self._pool_size = pool_size
        self._fallback_interval = max(poll_interval, FALLBACK_INTERVAL)
        self._pool: psycopg_pool.ConnectionPool[Any] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._opened = False
        self._open_lock = threading.Lock()
        self._schema = ""
        self._channel = ""
        self._feed_key = 0
        self._watches: WeakKeyDictionary[asyncio.AbstractEventLoop, ChangeWatch] = WeakKeyDictionary()
        self._watches_lock = threading.Lock()
        self._notifications = 0
        self._listener: threading.Thread | None = None
        self._listening: psycopg.Connection[Any] | None = None
        self._listen_ready = threading.Event()
        self._closing = threading.Event()
        #: Sent with this store's notifications, so that its listener skips them: its own
        #: writes poke its waiters at once.
        self._origin = secrets.token_hex(8)

    # -- life cycle ------------------------------------------------------------------------

    async def open(self) -> None:
        if not self._opened:
            await self._run(self._open)

    def _open(self) -> None:
        with self._open_lock:
            if self._opened:
                return
            self._closing.clear()
            self._connect_pool()
            self._migrate()
            self._opened = True
        self._start_listener()

    def _connect_pool(self) -> None:
        if self._pool is not None:
            return
        from psycopg.rows import dict_row

        try:  # one plain connection first: a wrong URL fails at once, with the driver's reason
            with self._psycopg.connect(self.url, connect_timeout=int(CONNECT_TIMEOUT)) as conn:
                row = conn.execute(b"SELECT current_schema()").fetchone()
        except self._psycopg.OperationalError as exc:
            raise StoreError(f"cannot connect to PostgreSQL at {_safe(self.url)}: {exc}") from exc
        if row is None or row[0] is None:
            raise ConfigError(
                "the PostgreSQL connection has no current schema: set a search_path"
                " whose first schema exists (options=-csearch_path%3Dmyschema)"
            )
        self._schema = row[0]
        self._channel = f"underway.{self._schema}"
        self._feed_key = _lock_key("feed", self._schema)
        pool = self._pool_module.ConnectionPool(
            self.url,
            min_size=1,
            max_size=self._pool_size,
            kwargs={"autocommit": True, "row_factory": dict_row, **self._session_params()},
            configure=_configure,
            open=False,
            name="underway",
            num_workers=1,
            timeout=CONNECT_TIMEOUT,
        )
        try:
            pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        except self._pool_module.PoolTimeout as exc:
            pool.close()
            raise StoreError(
                f"cannot connect to PostgreSQL at {_safe(self.url)} within {CONNECT_TIMEOUT:g} s"
            ) from exc
        self._pool = pool

    def _session_params(self) -> dict[str, Any]:
        """Connection parameters the URL does not set: a name that shows in
        ``pg_stat_activity`` (``underway-<pid>``)."""
        given = self._psycopg.conninfo.conninfo_to_dict(self.url)
        return {} if "application_name" in given else {"application_name": f"underway-{os.getpid()}"}

    async def close(self) -> None:
        here = asyncio.get_running_loop()
        with self._watches_lock:
            watches = list(self._watches.items())
            self._watches.clear()
        for loop, watch in watches:
            if loop is here:
                watch.close()
            elif not loop.is_closed():
                loop.call_soon_threadsafe(watch.close)
        self._closing.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            await asyncio.to_thread(self._stop_listener, listener)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        if self._pool is not None:
            await asyncio.to_thread(self._pool.close)
            self._pool = None
        self._opened = False

    def _stop_listener(self, listener: threading.Thread) -> None:
        # A notification of our own wakes the listener at once instead of at its next tick.
        if self._pool is not None:
            try:
                with self._pool.connection(timeout=1.0) as conn:
                    conn.execute(Q["notify"], {"channel": self._channel, "payload": "close"})
            except Exception:  # the listener ends at its next tick anyway
                logger.debug("could not wake the listener", exc_info=True)
        listener.join(LISTEN_TICK * 2)

    async def migrate(self) -> list[str]:
        return await self._run(self._connect_and_migrate)

    def _connect_and_migrate(self) -> list[str]:
        self._connect_pool()
        return self._migrate()

    def _migrate(self) -> list[str]:
        assert self._pool is not None
        known = sql.migrations("postgres")
        if self._schema_current(known):
            return []  # nothing to write: a read-only database opens too (its health says so)
        newest = max(m.version for m in known)
        with self._pool.connection() as conn, conn.transaction():
            # Two processes starting together: the second waits here, then finds nothing to do.
            lock = {"key": _lock_key("migrate", self._schema)}
            conn.execute(b"SELECT pg_advisory_xact_lock(%(key)s)", lock)
            conn.execute(
                b"CREATE TABLE IF NOT EXISTS underway_migrations"
                b" (version integer PRIMARY KEY, name text NOT NULL, applied_at double precision NOT NULL)"
            )
            done = {row["version"] for row in conn.execute(b"SELECT version FROM underway_migrations")}
            if done and max(done) > newest:
                raise SchemaError(
                    f"the database has underway schema version {max(done)}, newer than this"
                    f" underway knows ({newest}): upgrade underway"
                )
            todo = list(known) if not done else [m for m in known if m.version not in done]
            if not done:
                conn.execute(sql.schema("postgres").encode())
            else:
                for migration in todo:
                    conn.execute(migration.sql.encode())
            for migration in todo:
                conn.execute(
                    b"INSERT INTO underway_migrations VALUES (%s, %s, %s)",
                    (migration.version, migration.name, time.time()),
                )
        return [m.name for m in todo]

    # -- plumbing --------------------------------------------------------------------------

    def _executor_for_calls(self) -> ThreadPoolExecutor:
        if self._executor is None:
            with self._open_lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(self._pool_size, thread_name_prefix="underway-pg")
        return self._executor

    async def _run(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.wrap_future(self._executor_for_calls().submit(fn))
        except self._psycopg.Error as exc:
            raise StoreError(f"PostgreSQL error: {exc}") from exc

    async def _write(self, fn: Callable[[_Tx, float], T]) -> T:
        """Run ``fn(tx, now)`` in one transaction; events and a notification are added last."""
        loop = asyncio.get_running_loop()
        result, changed = await self._run(lambda: self._retrying(lambda: self._transaction(fn)))
        if changed:
            self._poke_all(loop)
        return result

    async def _read(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        return await self._run(lambda: self._retrying(lambda: self._reading(fn)))

    def _reading(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        if not self._opened:
            self._open()
        assert self._pool is not None
        with self._pool.connection() as conn:
            try:
                return fn(conn)
            except self._psycopg.OperationalError as exc:
                raise _NothingWritten(exc) from exc

    def _transaction(self, fn: Callable[[_Tx, float], T]) -> tuple[T, bool]:
        if not self._opened:
            self._open()
        assert self._pool is not None
        committing = False
        with self._pool.connection() as conn:
            try:
                with conn.transaction():
                    tx = _Tx(conn, time.time())
                    result = fn(tx, tx.now)
                    self._finish(tx)
                    committing = True  # leaving the block commits
            except self._psycopg.OperationalError as exc:
                if committing:
                    raise
                raise _NothingWritten(exc) from exc
            return result, tx.changed

    def _finish(self, tx: _Tx) -> None:
        """The end of every write: the events, under the feed lock, and the notification."""
        if not tx.events:
            return
        tx.changed = True
        notify = {"channel": self._channel, "payload": self._origin}
        if len(tx.events) >= COPY_FROM:
            tx.conn.execute(Q["feed_lock"], {"key": self._feed_key})
            _copy_events(tx)
            tx.conn.execute(Q["notify"], notify)
            return
        # One round trip: the lock is held for as short a time as the insert and the commit.
        with tx.conn.pipeline():
            tx.conn.execute(Q["feed_lock"], {"key": self._feed_key})
            tx.conn.execute(
                Q["insert_events"],
                {
                    "now": tx.now,
                    "job_ids": [job_id for job_id, _, _ in tx.events],
                    "seqs": [seq for _, seq, _ in tx.events],
                    "types": [event.type.value for _, _, event in tx.events],
                    "data": [dumps(event.data) for _, _, event in tx.events],
                },
            )
            tx.conn.execute(Q["notify"], notify)

    def _retrying(self, attempt: Callable[[], T]) -> T:
        """Run ``attempt`` again when it failed in a way that left nothing written: a deadlock
        (PostgreSQL rolled it back), or a connection that broke (a restarted database, a killed
        backend) before the commit was sent. A failure of the commit itself is not retried: the
        commit may have happened."""
        errors = self._psycopg.errors
        for tries in range(1, TRIES + 1):
            try:
                return attempt()
            except (errors.DeadlockDetected, errors.SerializationFailure):
                if tries == TRIES:
                    raise
            except _NothingWritten as failed:
                if tries == TRIES:
                    raise failed.error from None
                if self._pool is not None:
                    self._pool.check()  # drop every idle connection that broke the same way
                time.sleep(0.05 * tries)
        raise AssertionError("unreachable")  # pragma: no cover

    def _poke_all(self, here: asyncio.AbstractEventLoop) -> None:
        with self._watches_lock:
            watches = list(self._watches.items())
        for loop, watch in watches:
            if loop is here:
                watch.poke()
            elif not loop.is_closed():
                loop.call_soon_threadsafe(watch.poke)

    # -- changes ---------------------------------------------------------------------------

    def _watch(self) -> ChangeWatch:
        loop = asyncio.get_running_loop()
        watch = self._watches.get(loop)
        if watch is None:
            watch = ChangeWatch(lambda: self._notifications, self._fallback_interval)
            with self._watches_lock:
                self._watches[loop] = watch
        return watch

    def _start_listener(self) -> None:
        """Start listening, and wait until the first LISTEN is in place: a change committed
        after the store opened is then always notified."""
        with self._open_lock:
            if self._listener is None and not self._closing.is_set():
                self._listen_ready.clear()
                self._listener = threading.Thread(target=self._listen, name="underway-pg-listen", daemon=True)
                self._listener.start()
        if not self._listen_ready.wait(CONNECT_TIMEOUT):
            logger.warning("no LISTEN connection yet: changes are seen by polling until it connects")

    def _listen(self) -> None:
        """One LISTEN connection per store, reconnected for as long as the store is open."""
        delay = 0.05
        reconnecting = False
        while not self._closing.is_set():
            try:
                with self._psycopg.connect(
                    self.url,
                    autocommit=True,
                    **self._session_params(),
                    keepalives=1,
                    keepalives_idle=5,
                    keepalives_interval=2,
                    keepalives_count=3,
                    connect_timeout=int(CONNECT_TIMEOUT),
                ) as conn:
                    listen = self._psycopg.sql.SQL("LISTEN {}")
                    conn.execute(listen.format(self._psycopg.sql.Identifier(self._channel)))
                    self._listening = conn
                    self._listen_ready.set()
                    delay = 0.05
                    if reconnecting:
                        self._notified()  # whatever happened while no one listened
                    reconnecting = True
                    while not self._closing.is_set():
                        for notification in conn.notifies(timeout=LISTEN_TICK):
                            if self._closing.is_set():
                                break
                            if notification.payload != self._origin:
                                self._notified()
            except self._psycopg.Error as exc:
                if self._closing.is_set():
                    break
                logger.warning("the LISTEN connection failed (%s); reconnecting in %.2fs", exc, delay)
                self._closing.wait(delay)
                delay = min(LISTEN_BACKOFF_MAX, delay * 2)
            finally:
                self._listening = None

    def _notified(self) -> None:
        self._notifications += 1
        with self._watches_lock:
            watches = list(self._watches.items())
        for loop, watch in watches:
            if not loop.is_closed():
                try:
                    loop.call_soon_threadsafe(watch.poke)
                except RuntimeError:  # the loop closed meanwhile
                    pass

    def listener_pid(self) -> int | None:
        """The backend pid of the LISTEN connection, if connected (for tests and diagnostics)."""
        conn = self._listening
        return None if conn is None else int(conn.info.backend_pid)

    def change_token(self) -> int:
        return self._watch().token()

    async def wait_for_change(self, token: int, timeout: float) -> int:
        return await self._watch().wait(token, timeout)

    def _schema_current(self, known: Sequence[sql.Migration]) -> bool:
        assert self._pool is not None
        with self._pool.connection() as conn:
            present = conn.execute(b"SELECT to_regclass('underway_migrations') IS NOT NULL AS yes").fetchone()
            if present is None or not present["yes"]:
                return False
            done = {row["version"] for row in conn.execute(b"SELECT version FROM underway_migrations")}
        return done == {m.version for m in known}

    # -- health ----------------------------------------------------------------------------

    def check_identity(self) -> None:
        """Nothing to check: a PostgreSQL database has no file to lose under this process."""

    async def check_health(self) -> None:
        await self.open()
        problem = await self._run(self._health_problem)
        if problem is not None:
            raise problem

    def _health_problem(self) -> StoreUnhealthy | None:
        assert self._pool is not None
        with self._pool.connection() as conn:
            return write_problem(conn)

    # -- submitting ------------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[Job]:
        return await self._write(lambda tx, now: _enqueue(tx, now, jobs))

    # -- workers ---------------------------------------------------------------------------

    async def claim(
        self, worker_id: str, queues: Sequence[str], limit: int, lease_timeout: float
    ) -> list[Job]:
        return await self._write(lambda tx, now: _claim(tx, now, worker_id, queues, limit, lease_timeout))

    async def next_run_at(self, queues: Sequence[str]) -> float | None:
        if queues:
            query, params = Q["next_run_at_queues"], {"queues": list(dict.fromkeys(queues))}
        else:
            query, params = Q["next_run_at_any"], {}
        row = await self._read(lambda conn: conn.execute(query, params).fetchone())
        return None if row is None else row["min"]

    async def heartbeat(self, worker: WorkerInfo, leases: Sequence[Lease], lease_timeout: float) -> Heartbeat:
        return await self._write(lambda tx, now: _heartbeat(tx, now, worker, leases, lease_timeout))

    async def cancelling(self, worker_id: str) -> frozenset[str]:
        rows = await self._read(
            lambda conn: conn.execute(Q["cancelling"], {"worker_id": worker_id}).fetchall()
        )
        return frozenset(row["id"] for row in rows)

    async def record(self, writes: Sequence[WorkerWrite]) -> list[bool]:
        return await self._write(lambda tx, now: _record_all(tx, now, writes))

    async def workers(self, seen_within: float) -> list[WorkerInfo]:
        since = time.time() - seen_within
        rows = await self._read(lambda conn: conn.execute(Q["workers"], {"since": since}).fetchall())
        return [worker_from_row(row) for row in rows]

    async def remove_worker(self, worker_id: str) -> None:
        await self._write(lambda tx, now: tx.run(Q["remove_worker"], {"id": worker_id}))

    async def sweep(self, cancel_grace: float) -> SweepResult:
        return await self._write(lambda tx, now: _sweep(tx, now, cancel_grace))

    async def prune(self, older_than: float, limit: int = 1000) -> int:
        return await self._write(lambda tx, now: _prune(tx, now - older_than, limit))

    # -- clients ---------------------------------------------------------------------------

    async def cancel(self, job_filter: JobFilter) -> list[Job]:
        return await self._write(lambda tx, now: _cancel(tx, now, job_filter))

    async def answer(self, job_id: str, key: str, value: Any) -> Job:
        return await self._write(lambda tx, now: _answer(tx, now, job_id, key, value))

    async def retry(self, job_id: str, max_attempts: int) -> Job:
        return await self._write(lambda tx, now: _retry(tx, now, job_id, max_attempts))

    async def delete(self, job_id: str) -> None:
        await self._write(lambda tx, now: _delete(tx, job_id))

    # -- batches and queues ----------------------------------------------------------------

    async def create_batch(self, batch: NewBatch, jobs: Sequence[NewJob]) -> Batch:
        return await self._write(lambda tx, now: _create_batch(tx, now, batch, jobs))

    async def get_batch(self, batch_id: str) -> Batch | None:
        return await self._read(lambda conn: _find_batch(_Tx(conn, time.time()), batch_id))

    async def list_batches(
        self, *, limit: int = 50, before: str | None = None, owner: str | None = None
    ) -> list[Batch]:
        query = Q["list_batches" if owner is None else "list_batches_of_owner"]
        params = {"before": before or "~", "limit": limit, "owner": owner}

        def read(conn: psycopg.Connection[Any]) -> list[Batch]:
            tx = _Tx(conn, time.time())
            return [_batch_of(tx, row) for row in tx.all(query, params)]

        return await self._read(read)

    async def pause_batch(self, batch_id: str, paused: bool) -> Batch:
        return await self._write(lambda tx, now: _pause_batch(tx, now, batch_id, paused))

    async def cancel_batch(self, batch_id: str) -> tuple[Batch, list[Job]]:
        return await self._write(lambda tx, now: _cancel_batch(tx, now, batch_id))

    async def retry_jobs(self, job_filter: JobFilter, extra_attempts: int) -> list[Job]:
        return await self._write(lambda tx, now: _retry_jobs(tx, now, job_filter, extra_attempts))

    async def queues(self, owner: str | None = None) -> list[QueueInfo]:
        return await self._read(lambda conn: _queues(_Tx(conn, time.time()), time.time(), owner))

    async def set_queue(
        self, name: str, *, paused: bool | None = None, concurrency: int | None = UNSET
    ) -> QueueInfo:
        return await self._write(lambda tx, now: _set_queue(tx, now, name, paused, concurrency))

    async def get(self, job_id: str) -> Job | None:
        row = await self._read(lambda conn: conn.execute(Q["get_job"], {"id": job_id}).fetchone())
        return None if row is None else job_from_row(row)

    async def list_jobs(
        self, job_filter: JobFilter, *, limit: int = 50, before: str | None = None, after: str | None = None
    ) -> list[Job]:
        where, params = _where(job_filter)
        if before is not None:
            where += " AND id < %(before)s"
            params["before"] = before
        if after is not None:
            where += " AND id > %(after)s"
            params["after"] = after
        order = "DESC" if after is None else "ASC"
        query = f"SELECT * FROM underway_jobs WHERE {where} ORDER BY id {order} LIMIT %(limit)s".encode()
        rows = await self._read(lambda conn: conn.execute(query, {**params, "limit": limit}).fetchall())
        return [job_from_row(row) for row in rows]

    async def events(
        self, job_id: str, *, after: int = 0, limit: int = 1000, types: Sequence[str] = ()
    ) -> list[Event]:
        params: dict[str, Any] = {"job_id": job_id, "after": after, "limit": limit}
        query = Q["events_after"]
        if types:
            query, params["types"] = Q["events_after_types"], list(types)
        rows = await self._read(lambda conn: conn.execute(query, params).fetchall())
        return [event_from_row(row) for row in rows]

    async def log_lines(self, job_id: str) -> int:
        rows = await self._read(lambda conn: conn.execute(Q["log_lines"], {"job_id": job_id}).fetchall())
        return int(rows[0]["n"])

    async def feed(self, after: int, limit: int = 1000) -> tuple[list[Event], int]:
        rows = await self._read(
            lambda conn: conn.execute(Q["feed"], {"after": after, "limit": limit}).fetchall()
        )
        return [event_from_row(row) for row in rows], (rows[-1]["id"] if rows else after)

    async def feed_position(self) -> int:
        row = await self._read(lambda conn: conn.execute(Q["feed_position"]).fetchone())
        assert row is not None
        return int(row["position"])

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
        await self._write(lambda tx, now: tx.run(Q["insert_api_key"], api_key_params(key)))

    async def api_key(self, key_id: str) -> ApiKey | None:
        row = await self._read(lambda conn: conn.execute(Q["get_api_key"], {"id": key_id}).fetchone())
        return None if row is None else api_key_from_row(row)

    async def api_keys(self) -> list[ApiKey]:
        rows = await self._read(lambda conn: conn.execute(Q["api_keys"]).fetchall())
        return [api_key_from_row(row) for row in rows]

    async def revoke_api_key(self, key_id: str, at: float) -> ApiKey | None:
        row = await self._write(lambda tx, now: tx.one(Q["revoke_api_key"], {"id": key_id, "at": at}))
        return None if row is None else api_key_from_row(row)

    async def revoked_api_keys(self, key_ids: Sequence[str]) -> frozenset[str]:
        if not key_ids:
            return frozenset()
        params = {"ids": list(key_ids)}
        rows = await self._read(lambda conn: conn.execute(Q["revoked_api_keys"], params).fetchall())
        return frozenset(row["id"] for row in rows)

    async def has_api_keys(self) -> bool:
        row = await self._read(lambda conn: conn.execute(Q["has_api_keys"]).fetchone())
        return bool(row and row["found"])

    async def secret(self, name: str, make: Callable[[], str]) -> str:
        row = await self._read(lambda conn: conn.execute(Q["get_secret"], {"name": name}).fetchone())
        if row is not None:
            return str(row["value"])
        value = make()
        return await self._write(lambda tx, now: _secret(tx, now, name, value))

    async def set_secret(self, name: str, value: str) -> None:
        params = {"name": name, "value": value}
        await self._write(lambda tx, now: tx.run(Q["set_secret"], {**params, "now": now}))


def _configure(conn: psycopg.Connection[Any]) -> None:
    """JSON columns come back as text, as the shared row readers expect. A transaction left
    open by a stalled process (stopped, swapped out) is ended by the server, so that the row
    locks it holds cannot block the sweeper and other workers for longer than that."""
    from psycopg.types.string import TextLoader

    for name in ("json", "jsonb"):
        conn.adapters.register_loader(name, TextLoader)
    conn.execute(b"SET idle_in_transaction_session_timeout = %d" % IDLE_IN_TRANSACTION_MS)


class _NothingWritten(Exception):
    """An attempt failed on a broken connection before it sent its commit: safe to run again."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _safe(url: str) -> str:
    """The URL without its password."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        credentials, at, host = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        rest = f"{user}{at}{host}"
    return f"{scheme}{sep}{rest}"


# -- transactions --------------------------------------------------------------------------


#: From this many jobs without idempotency keys, ``_enqueue`` copies them in (``COPY``): about
#: twice as fast as the ``unnest`` insert, which it needs only for its ``ON CONFLICT``.
COPY_FROM = 100


def _enqueue(tx: _Tx, now: float, jobs: Sequence[NewJob]) -> list[Job]:
    if not jobs:
        return []
    if len(jobs) >= COPY_FROM and all(j.idempotency_key is None for j in jobs):
        _copy_jobs(tx, now, jobs)
        return [new_job(j, now) for j in jobs]
    keyed = {scope: j for j in jobs if (scope := idempotency_scope(j)) is not None}
    existing = _by_idempotency_keys(tx, keyed)
    fresh = [j for j in jobs if idempotency_scope(j) not in existing]
    inserted = {
        row["id"]
        for row in tx.all(
            Q["insert_jobs"],
            {
                "now": now,
                "ids": [j.id for j in fresh],
                "queues": [j.queue for j in fresh],
                "tasks": [j.task for j in fresh],
                "args": [dumps(j.args) for j in fresh],
                "priorities": [j.priority for j in fresh],
                "run_ats": [j.run_at for j in fresh],
                "max_attempts": [j.max_attempts for j in fresh],
                "timeouts": [j.timeout for j in fresh],
                "owners": [j.owner for j in fresh],
                "labels": [dumps(j.labels) for j in fresh],
                "batch_ids": [j.batch_id for j in fresh],
                "limit_keys": [j.limit_key for j in fresh],
                "limit_concurrencies": [j.limit_concurrency for j in fresh],
                "rate_counts": [j.rate_count for j in fresh],
                "rate_pers": [j.rate_per for j in fresh],
                "idempotency_keys": [j.idempotency_key for j in fresh],
                "crash_retries": [j.crash_retries for j in fresh],
            },
        )
    }
    raced = {scope: j for j in fresh if j.id not in inserted and (scope := idempotency_scope(j)) is not None}
    existing.update(_by_idempotency_keys(tx, raced))  # stored by a concurrent submission meanwhile
    if inserted:
        tx.changed = True
        queued = status_event(Status.QUEUED, 0)
        tx.append((j.id, 1, queued) for j in fresh if j.id in inserted)
    return [new_job(j, now) if j.id in inserted else existing[idempotency_scope(j)] for j in jobs]


def _copy_jobs(tx: _Tx, now: float, jobs: Sequence[NewJob]) -> None:
    """Insert jobs that have no idempotency key, and their ``queued`` events, with ``COPY``."""
    with tx.conn.cursor().copy(Q["copy_jobs"]) as copy:
        for j in jobs:
            copy.write_row(
                (
                    j.id,
                    j.queue,
                    j.task,
                    dumps(j.args),
                    "queued",
                    j.priority,
                    j.run_at,
                    j.max_attempts,
                    j.timeout,
                    j.owner,
                    dumps(j.labels),
                    j.batch_id,
                    j.limit_key,
                    j.limit_concurrency,
                    j.rate_count,
                    j.rate_per,
                    j.crash_retries,
                    now,
                    now,
                    1,
                )
            )
    tx.changed = True
    queued = status_event(Status.QUEUED, 0)
    tx.append((j.id, 1, queued) for j in jobs)


def _copy_events(tx: _Tx) -> None:
    """Insert the transaction's events with ``COPY``; one event appended for many jobs (a
    batch's ``queued``) is encoded once."""
    last: NewEvent | None = None
    data = ""
    with tx.conn.cursor().copy(Q["copy_events"]) as copy:
        for job_id, seq, event in tx.events:
            if event is not last:
                last, data = event, dumps(event.data)
            copy.write_row((job_id, seq, event.type.value, tx.now, data))


def _by_idempotency_keys(tx: _Tx, keyed: dict[tuple[str, str], NewJob]) -> dict[tuple[str, str] | None, Job]:
    """The jobs already stored under these (owner, key) scopes (see ``idempotency_scope``); a
    conflict if one asks for something else."""
    if not keyed:
        return {}
    params = {"owners": [owner for owner, _ in keyed], "keys": [key for _, key in keyed]}
    found: dict[tuple[str, str] | None, Job] = {}
    for row in tx.all(Q["job_by_idempotency_keys"], params):
        job = job_from_row(row)
        scope = (job.owner or "", row["idempotency_key"])
        new = keyed[scope]
        if not same_submission(job, new):
            raise idempotency_conflict(job, new)
        found[scope] = job
    return found


def _claim(
    tx: _Tx, now: float, worker_id: str, queues: Sequence[str], limit: int, lease_timeout: float
) -> list[Job]:
    usage, skip_queues, skip_keys = _usage(tx, now)
    # No overscan here, unlike on SQLite: a row locked and then passed over would be skipped by
    # concurrent claims until this one commits. Keys already at their limit are passed over in
    # the query; a key that fills up within this claim holds the rest back until the next one.
    params: dict[str, Any] = {"now": now, "limit": limit, "skip_keys": skip_keys}
    if queues:
        wanted = [q for q in dict.fromkeys(queues) if q not in skip_queues]
        if len(wanted) == 1:
            rows = tx.all(Q["claim_candidates_queue"], {**params, "queue": wanted[0]})
        else:
            rows = tx.all(Q["claim_candidates_queues"], {**params, "queues": wanted}) if wanted else []
    else:
        rows = tx.all(Q["claim_candidates_any"], {**params, "skip_queues": skip_queues})
    candidates = [Candidate.of(row) for row in rows]
    if limited(candidates, usage.queue_limits):
        # Count again under the limits' locks: another claim may have started jobs meanwhile.
        keys = {f"key:{c.limit_key}" for c in candidates if c.limit_key is not None}
        keys |= {f"queue:{c.queue}" for c in candidates if c.queue in usage.queue_limits}
        tx.all(Q["limit_lock"], {"keys": [_lock_key("limit", key) for key in keys]})
        usage, _, _ = _usage(tx, now)
        candidates = choose(candidates, limit, usage)
        rated = [c for c in candidates if c.rate_count is not None]
        if rated:
            tx.run(
                Q["insert_starts"],
                {
                    "now": now,
                    "keys": [c.limit_key for c in rated],
                    "counts": [c.rate_count for c in rated],
                    "pers": [c.rate_per for c in rated],
                },
            )
    ids = [c.id for c in candidates[:limit]]
    if not ids:
        return []
    claimed = {
        row["id"]: job_from_row(row)
        for row in tx.all(
            Q["claim"], {"ids": ids, "now": now, "lease_until": now + lease_timeout, "worker_id": worker_id}
        )
    }
    jobs = [claimed[job_id] for job_id in ids]
    tx.changed = True
    tx.append((j.id, j.last_seq, status_event(Status.RUNNING, j.attempt)) for j in jobs)
    return jobs


def _usage(tx: _Tx, now: float) -> tuple[Usage, list[str], list[str]]:
    """What limits a claim now (see :func:`~.rows.usage_of`), read in one round trip."""
    with tx.conn.pipeline():
        cursors = [
            tx.conn.execute(Q["queue_controls"]),
            tx.conn.execute(Q["running_by_key"]),
            tx.conn.execute(Q["started_by_key"], {"now": now}),
            tx.conn.execute(Q["running_by_queue"]),
        ]
    controls, by_key, started, by_queue = (cursor.fetchall() for cursor in cursors)
    return usage_of(controls, by_key, started, by_queue)


def _heartbeat(
    tx: _Tx, now: float, worker: WorkerInfo, leases: Sequence[Lease], lease_timeout: float
) -> Heartbeat:
    tx.run(Q["upsert_worker"], {**worker_params(worker), "last_seen": now})
    held: dict[str, bool] = {}
    if leases:
        rows = tx.all(
            Q["extend_leases"],
            {
                "lease_until": now + lease_timeout,
                "ids": [lease.job_id for lease in leases],
                "attempts": [lease.attempt for lease in leases],
            },
        )
        held = {row["id"]: row["cancel_requested"] for row in rows}
    lost = frozenset(lease.job_id for lease in leases if lease.job_id not in held)
    return Heartbeat(lost=lost, cancelling=frozenset(job_id for job_id, asked in held.items() if asked))


def _record_all(tx: _Tx, now: float, writes: Sequence[WorkerWrite]) -> list[bool]:
    """The fenced statements of all ``writes`` in one pipeline: one round trip, not one each."""
    planned = [_plan(tx, now, write) for write in writes]
    with tx.conn.pipeline():
        cursors = [tx.conn.execute(query, params) for _, query, params, _ in planned]
    accepted = []
    for (job_id, _, _, events), cursor in zip(planned, cursors, strict=True):
        row = cursor.fetchone()
        accepted.append(row is not None)
        if row is not None:
            tx.changed = True
            tx.append(numbered(job_id, row["last_seq"], events))
    return accepted


def _plan(tx: _Tx, now: float, write: WorkerWrite) -> tuple[str, bytes, dict[str, Any], list[NewEvent]]:
    """The fenced statement of one write: (job id, query, parameters, its events)."""
    if write.status is Status.QUEUED:
        row = tx.one(Q["cancel_requested"], {"id": write.lease.job_id, "attempt": write.lease.attempt})
        if row is not None and row["cancel_requested"]:
            write = after_cancel(write)
    events = write_events(write)
    query = Q["fenced_touch"] if write.status is None else _fenced_move_sql(write.status)
    return write.lease.job_id, query, write_params(write, len(events), now), events


@functools.cache
def _fenced_move_sql(target: Status) -> bytes:
    return _TEXT["fenced_move"].replace("{sources}", move_sources(target)).encode()


def _sweep(tx: _Tx, now: float, cancel_grace: float) -> SweepResult:
    writes = [expired_lease(row, now) for row in tx.all(Q["expired_leases"], {"now": now})]
    writes += [
        overdue(row["id"], row["attempt"])
        for row in tx.all(Q["overdue_cancels"], {"before": now - cancel_grace})
    ]
    accepted = _record_all(tx, now, writes)
    tx.run(Q["forget_workers"], {"before": now - 86400.0})
    tx.run(Q["forget_starts"], {"before": now - LONGEST_RATE_WINDOW})
    return sweep_result(writes, accepted)


def _prune(tx: _Tx, before: float, limit: int) -> int:
    ids = [row["id"] for row in tx.all(Q["prune"], {"before": before, "limit": limit})]
    if ids:
        tx.changed = True
        tx.run(Q["delete_events"], {"ids": ids})
    tx.run(Q["prune_batches"], {"before": before, "limit": limit})
    return len(ids)


def _cancel(tx: _Tx, now: float, job_filter: JobFilter) -> list[Job]:
    where, params = _where(job_filter)
    rows = tx.all(_TEXT["cancel"].replace("{where}", where).encode(), {**params, "now": now})
    jobs = sorted((job_from_row(row) for row in rows), key=lambda j: j.id)
    for job in jobs:
        tx.changed = True
        if job.status is Status.CANCELLED:
            event = status_event(Status.CANCELLED, job.attempt)
        else:
            event = status_event(job.status, job.attempt, cancel_requested=True)
        tx.append([(job.id, job.last_seq, event)])
    return jobs


def _create_batch(tx: _Tx, now: float, batch: NewBatch, jobs: Sequence[NewJob]) -> Batch:
    tx.run(
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
    if len(jobs) >= COPY_FROM and all(j.idempotency_key is None for j in jobs):
        _copy_jobs(tx, now, jobs)  # no job records to return
    else:
        _enqueue(tx, now, jobs)
    return _batch(tx, batch.id)


def _find_batch(tx: _Tx, batch_id: str) -> Batch | None:
    row = tx.one(Q["get_batch"], {"id": batch_id})
    return None if row is None else _batch_of(tx, row)


def _batch(tx: _Tx, batch_id: str) -> Batch:
    batch = _find_batch(tx, batch_id)
    if batch is None:
        raise BatchNotFound(batch_id)
    return batch


def _batch_of(tx: _Tx, row: dict[str, Any]) -> Batch:
    return batch_of(row, tx.all(Q["batch_counts"], {"id": row["id"]}))


def _pause_batch(tx: _Tx, now: float, batch_id: str, paused: bool) -> Batch:
    if tx.one(Q["pause_batch"], {"id": batch_id, "paused": paused, "now": now}) is None:
        raise BatchNotFound(batch_id)
    tx.changed = True
    return _batch(tx, batch_id)


def _cancel_batch(tx: _Tx, now: float, batch_id: str) -> tuple[Batch, list[Job]]:
    if tx.one(Q["cancel_batch"], {"id": batch_id, "now": now}) is None:
        raise BatchNotFound(batch_id)
    tx.changed = True
    jobs = _cancel(tx, now, JobFilter(batch_id=batch_id))
    return _batch(tx, batch_id), jobs


def _retry_jobs(tx: _Tx, now: float, job_filter: JobFilter, extra: int) -> list[Job]:
    where, params = _where(job_filter)
    query = _TEXT["retry_extra"].replace("{where}", where).encode()
    jobs = sorted(
        (job_from_row(row) for row in tx.all(query, {**params, "now": now, "extra": extra})),
        key=lambda j: j.id,
    )
    for job in jobs:
        tx.append([(job.id, job.last_seq, status_event(Status.QUEUED, job.attempt, reason="retry"))])
    if jobs:
        tx.changed = True
    for batch_id in sorted({job.batch_id for job in jobs if job.batch_id is not None}):
        tx.run(Q["reopen_batch"], {"id": batch_id, "now": now})
    return jobs


def _queues(tx: _Tx, now: float, owner: str | None = None) -> list[QueueInfo]:
    controls = tx.all(Q["all_queue_controls"])
    if owner is None:
        return queue_infos(tx.all(Q["stats"]), tx.all(Q["oldest_due"], {"now": now}), controls)
    stats = tx.all(Q["stats_of_owner"], {"owner": owner})
    oldest = tx.all(Q["oldest_due_of_owner"], {"now": now, "owner": owner})
    return queue_infos(stats, oldest, controls, with_jobs_only=True)


def _set_queue(tx: _Tx, now: float, name: str, paused: bool | None, concurrency: int | None) -> QueueInfo:
    tx.run(
        Q["set_queue"],
        {
            "name": name,
            "paused": paused,
            "set_concurrency": concurrency is not UNSET,
            "concurrency": None if concurrency is UNSET else concurrency,
            "now": now,
        },
    )
    return next(q for q in _queues(tx, now) if q.name == name)


def _answer(tx: _Tx, now: float, job_id: str, key: str, value: Any) -> Job:
    current = _get(tx, job_id, lock=True)
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
    row = tx.one(Q["answer"], {"id": job_id, "answers": dumps({**current.answers, key: value}), "now": now})
    assert row is not None  # the row is locked and waiting
    job = job_from_row(row)
    tx.changed = True
    tx.append(
        [
            (job_id, job.last_seq - 1, answer_event(key, value)),
            (job_id, job.last_seq, status_event(Status.RUNNING, job.attempt)),
        ]
    )
    return job


def _retry(tx: _Tx, now: float, job_id: str, max_attempts: int) -> Job:
    row = tx.one(Q["retry"], {"id": job_id, "now": now, "max_attempts": max_attempts})
    if row is None:
        current = _get(tx, job_id)
        raise InvalidTransition(
            f"job {job_id} is {current.status.value}: only a finished job can be retried",
            details={"status": current.status.value},
        )
    job = job_from_row(row)
    tx.changed = True
    tx.append([(job_id, job.last_seq, status_event(Status.QUEUED, job.attempt, reason="retry"))])
    return job


def _delete(tx: _Tx, job_id: str) -> None:
    if tx.one(Q["delete_job"], {"id": job_id}) is None:
        current = _get(tx, job_id)
        raise InvalidTransition(
            f"job {job_id} is {current.status.value}: cancel it and wait for it to end before deleting it",
            details={"status": current.status.value},
        )
    tx.changed = True
    tx.run(Q["delete_events"], {"ids": [job_id]})


def _secret(tx: _Tx, now: float, name: str, value: str) -> str:
    """Store ``value`` under ``name`` unless a value is there already; the value stored."""
    tx.run(Q["add_secret"], {"name": name, "value": value, "now": now})
    row = tx.one(Q["get_secret"], {"name": name})
    assert row is not None  # stored by this transaction or by one committed before
    return str(row["value"])


def _get(tx: _Tx, job_id: str, *, lock: bool = False) -> Job:
    row = tx.one(Q["get_job_for_update" if lock else "get_job"], {"id": job_id})
    if row is None:
        raise JobNotFound(job_id)
    return job_from_row(row)


def _where(job_filter: JobFilter) -> tuple[str, dict[str, Any]]:
    if _holds_nul(job_filter):
        return "false", {}
    clauses = ["true"]
    params: dict[str, Any] = {}
    if job_filter.ids:
        clauses.append("id = ANY(%(ids)s::text[])")
        params["ids"] = [job_id for job_id in job_filter.ids if "\x00" not in job_id]
    if job_filter.statuses:
        clauses.append("status = ANY(%(statuses)s::text[])")
        params["statuses"] = [s.value for s in job_filter.statuses]
    for column in ("queue", "task", "owner", "batch_id"):
        value = getattr(job_filter, column)
        if value is not None:
            clauses.append(f"{column} = %({column})s")
            params[column] = value
    if job_filter.label is not None:
        clauses.append("labels ->> %(label_key)s = %(label_value)s")
        params["label_key"], params["label_value"] = job_filter.label
    if job_filter.q:
        clauses.append(_search(job_filter.q, params))
    return " AND ".join(clauses), params


def _holds_nul(job_filter: JobFilter) -> bool:
    """Whether a value the filter compares for equality has a NUL: no text of PostgreSQL holds
    one (it refuses the query), so the filter matches nothing."""
    values = (job_filter.queue, job_filter.task, job_filter.owner, job_filter.batch_id)
    texts = [value for value in (*values, *(job_filter.label or ())) if value is not None]
    if job_filter.ids and all("\x00" in job_id for job_id in job_filter.ids):
        return True
    return any("\x00" in text for text in texts)


def _search(q: str, params: dict[str, Any]) -> str:
    """The clause of a search, its patterns added to ``params``. ``COLLATE "C"`` makes ``ILIKE``
    ignore the case of ASCII letters only, as SQLite and :func:`fold_case` do, whatever the
    database's locale."""
    clauses: list[str] = []
    prefix = search_prefix(q)
    if prefix is not None:
        clauses.append("id COLLATE \"C\" ILIKE %(q_prefix)s ESCAPE '\\'")
        params["q_prefix"] = _like_escaped(prefix) + "%"
    for index, text in enumerate(search_texts(q)):
        clauses.append(f"args::text COLLATE \"C\" ILIKE %(q_text{index})s ESCAPE '\\'")
        params[f"q_text{index}"] = f"%{_like_escaped(text)}%"
    return f"({' OR '.join(clauses) or 'false'})"


def _like_escaped(text: str) -> str:
    """``text`` in a ``LIKE`` pattern, its wildcards (``%``, ``_``) and the escape (``\\``) escaped."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
