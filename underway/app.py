"""The App: registers tasks, opens the store, submits, watches, cancels and answers jobs.

The core is async. Every call a sync program needs has a blocking twin named ``*_sync``; those
run the async call on a private event loop in a background thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, overload
from weakref import WeakKeyDictionary

from .accounts import Accounts
from .auth import DEFAULT_TOKEN_TTL, Principal, StreamToken
from .batches import RUNNING_SHOWN, BatchView, queue_record
from .bounds import check_labels, check_queue_name, checked_queue
from .bus import Bus, Overflow
from .config import Settings
from .events import Event, dumps
from .exceptions import (
    BatchNotFound,
    BatchTooLarge,
    InvalidArguments,
    InvalidTransition,
    JobNotFound,
    TaskNotFound,
)
from .jobs import Job, Status, new_job_id, new_job_ids
from .retry import RetryPolicy
from .stats import DEFAULT_WINDOW, DEPTH, stats_answer, stats_window
from .store import Batch, Finished, JobFilter, NewBatch, NewJob, QueueInfo, Store, WorkerInfo, open_store
from .tasks import Limits, RateLimit, SubmitOptions, Task

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

DEFAULT_QUEUE = "default"
#: Seconds ``close()`` waits for the event feed of another loop to stop.
FOREIGN_CLOSE_TIMEOUT = 1.0
#: Bounds of submission times: what lies outside cannot be written as an ISO 8601 timestamp.
LATEST_RUN_AT = 253402300799.0  # 9999-12-31T23:59:59Z
MAX_DELAY = 366 * 86400.0
#: ``wait()`` reads the job again after this long without an event, as a safety net.
WAIT_RECHECK = 5.0


class App:
    def __init__(self, url: str | None = None, *, settings: Settings | None = None) -> None:
        settings = settings or Settings.from_env()
        self.settings = settings.replace(url=url)
        self.tasks: dict[str, Task[..., Any]] = {}
        self._store: Store | None = None
        self._opened = False
        self._open_lock = threading.Lock()
        self._buses: WeakKeyDictionary[asyncio.AbstractEventLoop, Bus] = WeakKeyDictionary()
        self._portal: _Portal | None = None
        self._accounts: Accounts | None = None

    def __repr__(self) -> str:
        return f"<underway.App {self.settings.url} tasks={sorted(self.tasks)}>"

    # -- tasks -------------------------------------------------------------------------------

    @overload
    def task(self, fn: Callable[P, R]) -> Task[P, R]: ...

    @overload
    def task(
        self,
        *,
        name: str | None = None,
        queue: str = DEFAULT_QUEUE,
        retries: int = 0,
        timeout: float | None = None,
        priority: int = 0,
        retry_delay: float = 1.0,
        max_retry_delay: float = 300.0,
        non_retryable: tuple[type[BaseException], ...] = (),
        concurrency: int | None = None,
        concurrency_key: Callable[..., object] | None = None,
        rate_limit: str | None = None,
        crash_retries: int | None = None,
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        queue: str = DEFAULT_QUEUE,
        retries: int = 0,
        timeout: float | None = None,
        priority: int = 0,
        retry_delay: float = 1.0,
        max_retry_delay: float = 300.0,
        non_retryable: tuple[type[BaseException], ...] = (),
        concurrency: int | None = None,
        concurrency_key: Callable[..., object] | None = None,
        rate_limit: str | None = None,
        crash_retries: int | None = None,
    ) -> Task[..., Any] | Callable[[Callable[..., Any]], Task[..., Any]]:
        """Register a task: ``@app.task`` or ``@app.task(queue="scrape", retries=3, timeout=600)``.

        ``retries=N`` allows N re-runs after the first attempt, with exponential backoff from
        ``retry_delay`` seconds (with jitter) up to ``max_retry_delay``. Exceptions of the
        ``non_retryable`` types fail the job at once.

        ``concurrency=N`` runs at most N of its jobs at once and ``rate_limit="5/s"`` starts at
        most 5 per second, over all workers; with ``concurrency_key`` (called with the job's
        arguments, e.g. ``lambda url, **_: domain(url)``) the limits hold per key, and jobs of
        any task that share a key share the limits.

        ``crash_retries=N`` lets a job run again after it lost its worker (killed, out of memory,
        a lost machine) N times before it fails with ``WorkerLost``, without using up its
        ``retries`` (default: the ``crash_retries`` setting of the process that submits it).
        """
        check_queue_name(queue)
        if retries < 0:
            raise ValueError("retries must not be negative")
        if crash_retries is not None and crash_retries < 0:
            raise ValueError("crash_retries must not be negative")
        if concurrency is not None and concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if concurrency_key is not None and concurrency is None and rate_limit is None:
            raise ValueError("concurrency_key needs concurrency= or rate_limit= to limit anything")
        limits = Limits(
            key=concurrency_key,
            concurrency=concurrency,
            rate=None if rate_limit is None else RateLimit.parse(rate_limit),
        )
        policy = RetryPolicy(
            max_attempts=retries + 1,
            base_delay=retry_delay,
            max_delay=max_retry_delay,
            non_retryable=non_retryable,
        )

        def register(fn: Callable[..., Any]) -> Task[..., Any]:
            task_name = name or default_task_name(fn)
            if task_name in self.tasks:
                raise ValueError(f"a task named {task_name!r} is already registered")
            task: Task[..., Any] = Task(
                self,
                fn,
                name=task_name,
                queue=queue,
                priority=priority,
                timeout=timeout,
                retry=policy,
                limits=limits,
                crash_retries=crash_retries,
            )
            self.tasks[task_name] = task
            return task

        return register(fn) if fn is not None else register

    def get_task(self, name: str) -> Task[..., Any]:
        try:
            return self.tasks[name]
        except KeyError:
            known = ", ".join(sorted(self.tasks)) or "none"
            raise TaskNotFound(
                f"no task named {name!r} (registered: {known})", details={"task": name}
            ) from None

    # -- store ---------------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        if self._store is None:
            with self._open_lock:
                if self._store is None:
                    self._store = open_store(self.settings.url, poll_interval=self.settings.poll_interval)
        return self._store

    @property
    def accounts(self) -> Accounts:
        """The built-in API keys and the stream tokens of this App's store."""
        if self._accounts is None:
            self._accounts = Accounts(self._ready)
        return self._accounts

    async def stream_token(
        self,
        owner: str,
        *,
        job: str | None = None,
        batch: str | None = None,
        ttl: float = DEFAULT_TOKEN_TTL,
    ) -> StreamToken:
        """A short-lived token with which a browser of ``owner`` may watch, cancel and answer
        one job, one batch, or (neither) all of its jobs: what a host app's backend hands its
        page (``?token=`` on the streams)."""
        from .service import Service

        return await Service(self, Principal(owner=owner, role="user")).stream_token(
            job=job, batch=batch, ttl=ttl
        )

    async def open(self) -> None:
        """Connect to the store and migrate it (done on first use anyway)."""
        if not self._opened:
            await self.store.open()
            self._opened = True

    async def close(self) -> None:
        here = asyncio.get_running_loop()
        for loop, bus in list(self._buses.items()):
            if loop is here:
                await bus.close()
            elif loop.is_running():
                # A bus lives on its own loop (the portal's, say): close it there.
                closing = asyncio.run_coroutine_threadsafe(bus.close(), loop)
                try:
                    await asyncio.wait_for(asyncio.wrap_future(closing), FOREIGN_CLOSE_TIMEOUT)
                except TimeoutError:
                    pass
        self._buses.clear()
        self._accounts = None
        if self._store is not None:
            await self._store.close()
            self._store = None
        if self._portal is not None:  # after the store, which closes its watch on the portal's loop
            self._portal.stop()
            self._portal = None
        self._opened = False

    async def __aenter__(self) -> App:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def bus(self) -> Bus:
        """The event fan-out of this process for the running event loop."""
        loop = asyncio.get_running_loop()
        bus = self._buses.get(loop)
        if bus is None:
            bus = self._buses[loop] = Bus(self.store)
        return bus

    async def _ready(self) -> Store:
        if not self._opened:
            await self.open()
        return self.store

    # -- submitting ----------------------------------------------------------------------------

    async def submit(
        self,
        task: Task[..., Any] | str,
        args: dict[str, Any] | None = None,
        *,
        options: SubmitOptions | None = None,
        **option_values: Any,
    ) -> Job:
        """Validate the arguments, store a ``queued`` job and return it.

        ``options`` (or keyword options: ``queue``, ``priority``, ``delay``, ``run_at``,
        ``max_attempts``, ``timeout``, ``labels``, ``owner``) override the task's defaults.
        """
        new = self.new_job(task, args or {}, options or SubmitOptions(**option_values))
        store = await self._ready()
        (job,) = await store.enqueue([new])
        return job

    def new_job(
        self,
        task: Task[..., Any] | str,
        args: dict[str, Any],
        options: SubmitOptions,
        *,
        batch_id: str | None = None,
    ) -> NewJob:
        """The job a submission would store (validated; nothing stored yet)."""
        task = self.get_task(task) if isinstance(task, str) else task
        run_at = _checked_run_at(options)
        check_labels(options.labels, self.settings.label_bounds)
        crash_retries = self._crash_retries(task, options)
        return _new_job(task, new_job_id(), task.validate(args), options, run_at, batch_id, crash_retries)

    def _crash_retries(self, task: Task[..., Any], options: SubmitOptions) -> int:
        """The times a job may lose its worker: the submission's, else its task's, else the settings'."""
        for value in (options.crash_retries, task.crash_retries):
            if value is not None:
                return value
        return self.settings.crash_retries

    # -- reading -------------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job:
        job = await (await self._ready()).get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    async def list_jobs(
        self,
        *,
        status: Sequence[Status | str] = (),
        queue: str | None = None,
        task: str | None = None,
        owner: str | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> list[Job]:
        job_filter = JobFilter(statuses=tuple(Status(s) for s in status), queue=queue, task=task, owner=owner)
        return await self.find_jobs(job_filter, limit=limit, before=before)

    async def find_jobs(
        self, job_filter: JobFilter, *, limit: int = 50, before: str | None = None
    ) -> list[Job]:
        """Jobs matching ``job_filter``, newest first; ``before`` is the last id of the previous page."""
        return await (await self._ready()).list_jobs(job_filter, limit=limit, before=before)

    async def events(
        self, job_id: str, *, after: int = 0, limit: int = 1000, types: Sequence[str] = ()
    ) -> list[Event]:
        return await (await self._ready()).events(job_id, after=after, limit=limit, types=types)

    async def watch(self, job_id: str, *, after: int = 0) -> AsyncIterator[Event]:
        """Every event of the job after ``after``, first from the store then live, until it ends.

        Live ``progress`` events may be coalesced (a newer one replaces one not yet read);
        every other event arrives once, in ``seq`` order.
        """
        store = await self._ready()
        with await self.bus().subscribe(job_id) as subscription:
            last = after
            history = await self._history(store, job_id, last)
            # The job's last event now: a live event above it is new, not a copy of one read.
            horizon = history[-1].seq if history else await self._last_seq(store, job_id, after)
            if horizon < 0:  # it ended at or before the resume point: nothing more will come
                return
            for past in history:
                last = past.seq
                yield past
                if past.ends_job and past is history[-1]:  # not a run a manual retry followed
                    return
            while True:
                try:
                    event = await subscription.get()
                except Overflow:
                    for missed in await self._history(store, job_id, last):
                        last = missed.seq
                        yield missed
                        if missed.ends_job:
                            return
                    continue
                if event is None:
                    continue
                if event.seq <= last:
                    # After a resume point beyond the last event, events up to it are not
                    # delivered, but the job's end still ends the watch.
                    if event.ends_job and event.seq > horizon:
                        return
                    continue
                last = event.seq
                yield event
                if event.ends_job:
                    return

    @staticmethod
    async def _last_seq(store: Store, job_id: str, after: int) -> int:
        """The job's last event number (0 when watching from the start: all are new); -1 when
        the job ended at or before ``after``."""
        if after == 0:
            return 0
        job = await store.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return -1 if job.terminal and job.last_seq <= after else job.last_seq

    async def _history(self, store: Store, job_id: str, after: int) -> list[Event]:
        events = await store.events(job_id, after=after, limit=1_000_000)
        if not events and after == 0 and await store.get(job_id) is None:
            raise JobNotFound(job_id)
        return events

    async def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Wait until the job ends and return it; ``TimeoutError`` after ``timeout`` seconds."""

        async def until_end() -> Job:
            with await self.bus().subscribe(job_id) as subscription:
                job = await self.get(job_id)
                while not job.terminal:
                    try:
                        event = await subscription.get(timeout=WAIT_RECHECK)
                    except Overflow:
                        event = None
                    if event is None or event.ends_job:
                        job = await self.get(job_id)
                return job

        return await asyncio.wait_for(until_end(), timeout)

    # -- changing ------------------------------------------------------------------------------

    async def cancel(self, job_id: str) -> Job:
        """Cancel a job: at once if queued; a running or waiting one is asked to stop."""
        store = await self._ready()
        changed = await store.cancel(JobFilter(ids=(job_id,)))
        if changed:
            return changed[0]
        job = await self.get(job_id)
        if job.terminal:
            raise InvalidTransition(
                f"job {job_id} already ended ({job.status.value}): there is nothing to cancel",
                details={"status": job.status.value},
            )
        return job

    async def cancel_all(
        self,
        *,
        queue: str | None = None,
        task: str | None = None,
        status: Sequence[Status | str] = (),
        batch: str | None = None,
        label: tuple[str, str] | None = None,
    ) -> int:
        """Cancel every unfinished job that matches; return how many were cancelled or asked to stop.

        Atomic against claims: no queued job it matched can start afterwards.
        """
        job_filter = JobFilter(
            statuses=tuple(Status(s) for s in status), queue=queue, task=task, batch_id=batch, label=label
        )
        return await self.cancel_matching(job_filter)

    async def cancel_matching(self, job_filter: JobFilter) -> int:
        """Cancel every unfinished job ``job_filter`` matches; return how many."""
        return len(await (await self._ready()).cancel(job_filter))

    async def retry_matching(self, job_filter: JobFilter) -> int:
        """Run every finished job ``job_filter`` matches again (same ids; the failed and
        cancelled ones when it names no status), each with its task's full number of attempts,
        as :meth:`retry` does; return how many.

        The jobs are read a page at a time and retried a task at a time: each job once, even
        one that runs and ends again before the last page is done.
        """
        job_filter = retry_filter(job_filter)
        store = await self._ready()
        retried, after = 0, ""
        while True:
            page = await store.list_jobs(job_filter, limit=RETRY_PAGE, after=after)
            for task, ids in _ids_by_task(page).items():
                matching = dataclasses.replace(job_filter, ids=ids)
                retried += len(await store.retry_jobs(matching, self._attempts(task)))
            if len(page) < RETRY_PAGE:
                return retried
            after = page[-1].id

    def _attempts(self, task: str) -> int:
        """The attempts a retried job of ``task`` gets: its task's, or 1 for a task not registered here."""
        return self.tasks[task].retry.max_attempts if task in self.tasks else 1

    # -- batches -------------------------------------------------------------------------------

    async def submit_batch(
        self,
        task: Task[..., Any] | str,
        items: Sequence[dict[str, Any]],
        *,
        name: str | None = None,
        options: SubmitOptions | None = None,
        **option_values: Any,
    ) -> Batch:
        """Validate every item, then store the batch and one job per item in one transaction.

        Options (``queue``, ``priority``, ``labels``, ``owner``…) apply to every item. A wrong
        item is an ``InvalidArguments`` naming its index; nothing is stored then.
        """
        task = self.get_task(task) if isinstance(task, str) else task
        options = options or SubmitOptions(**option_values)
        if not items:
            raise InvalidArguments("a batch needs at least one item")
        most = min(MAX_BATCH, self.settings.max_batch_items)
        if len(items) > most:
            raise BatchTooLarge(
                f"a batch has at most {most} items, not {len(items)}: split it (max_batch_items)",
                details={"limit": most, "items": len(items)},
            )
        if options.idempotency_key is not None:
            raise InvalidArguments("idempotency keys are for single jobs, not for batches")
        if options.queue is not None:
            checked_queue(options.queue)
        check_labels(options.labels, self.settings.label_bounds)
        batch = NewBatch(
            id=new_job_id(),
            task=task.name,
            queue=options.queue or task.queue,
            name=name,
            owner=options.owner,
            labels=dict(options.labels or {}),
        )
        jobs = self._batch_jobs(task, items, options, batch.id)
        return await (await self._ready()).create_batch(batch, jobs)

    def _batch_jobs(
        self, task: Task[..., Any], items: Sequence[dict[str, Any]], options: SubmitOptions, batch_id: str
    ) -> list[NewJob]:
        """``new_job`` of every item, with what the items share worked out once."""
        try:
            run_at = _checked_run_at(options)
        except InvalidArguments:
            run_at = None
        valid = task.validate_all(items) if run_at is not None else None
        if run_at is None or valid is None:  # one by one, to name the first wrong item
            jobs = []
            for index, item in enumerate(items):
                try:
                    jobs.append(self.new_job(task, item, options, batch_id=batch_id))
                except InvalidArguments as exc:
                    raise InvalidArguments(
                        f"item {index}: {exc.message}", details={"item": index, "error": exc.details}
                    ) from None
            return jobs
        crash_retries = self._crash_retries(task, options)
        return [
            _new_job(task, job_id, args, options, run_at, batch_id, crash_retries)
            for job_id, args in zip(new_job_ids(len(valid)), valid, strict=True)
        ]

    async def get_batch(self, batch_id: str) -> Batch:
        batch = await (await self._ready()).get_batch(batch_id)
        if batch is None:
            raise BatchNotFound(batch_id)
        return batch

    async def list_batches(
        self, *, limit: int = 50, before: str | None = None, owner: str | None = None
    ) -> list[Batch]:
        return await (await self._ready()).list_batches(limit=limit, before=before, owner=owner)

    async def batch_items(
        self,
        batch_id: str,
        *,
        status: Sequence[Status | str] = (),
        limit: int = 50,
        before: str | None = None,
    ) -> list[Job]:
        """The batch's jobs, newest first (the order of the items, last first)."""
        await self.get_batch(batch_id)
        job_filter = JobFilter(statuses=tuple(Status(s) for s in status), batch_id=batch_id)
        return await self.store.list_jobs(job_filter, limit=limit, before=before)

    async def batch_view(self, batch_id: str) -> BatchView:
        """The batch with its percent, rate, ETA and what its running items are doing now."""
        batch = await self.get_batch(batch_id)
        running = JobFilter(statuses=(Status.RUNNING,), batch_id=batch_id)
        return BatchView.of(batch, await self.store.list_jobs(running, limit=RUNNING_SHOWN))

    async def batch_results(self, batch_id: str, *, page: int = 500) -> AsyncIterator[Job]:
        """Every item of the batch, in the order they were submitted, read page by page."""
        await self.get_batch(batch_id)
        after = ""
        while True:
            jobs = await self.store.list_jobs(JobFilter(batch_id=batch_id), limit=page, after=after)
            for job in jobs:
                yield job
            if len(jobs) < page:
                return
            after = jobs[-1].id

    async def pause_batch(self, batch_id: str) -> Batch:
        """Start no more of the batch's items; running ones go on."""
        return await (await self._ready()).pause_batch(batch_id, True)

    async def resume_batch(self, batch_id: str) -> Batch:
        return await (await self._ready()).pause_batch(batch_id, False)

    async def cancel_batch(self, batch_id: str) -> Batch:
        """Cancel the queued items at once and ask the running ones to stop."""
        batch, _ = await (await self._ready()).cancel_batch(batch_id)
        return batch

    async def retry_failed(self, batch_id: str) -> int:
        """Run the batch's failed and cancelled items again; return how many."""
        batch = await self.get_batch(batch_id)
        job_filter = JobFilter(statuses=RETRIED_BY_DEFAULT, batch_id=batch_id)
        return len(await self.store.retry_jobs(job_filter, self._attempts(batch.task)))

    # -- queues --------------------------------------------------------------------------------

    async def queues(self, *, owner: str | None = None) -> list[QueueInfo]:
        """Every queue with jobs or controls: counts by status, paused, limit, oldest due job.
        With ``owner``: the queues of that owner's jobs, with the counts of its jobs only."""
        return await (await self._ready()).queues(owner=owner)

    async def queue_records(self, *, owner: str | None = None) -> list[dict[str, Any]]:
        """Every queue as ``GET /queues`` shows it: depth, running, waiting, counts, jobs ended
        in the last minute, how long the oldest due job has waited, paused, limit (of the jobs
        of ``owner`` only, if given)."""
        queues = await self.queues(owner=owner)
        finished: dict[str, int] = {}
        for row in await self.finished_since(time.time() - 60.0, owner=owner):
            finished[row.queue] = finished.get(row.queue, 0) + row.count
        now = time.time()
        return [queue_record(q, finished.get(q.name, 0), now) for q in queues]

    async def queue_record(self, name: str) -> dict[str, Any]:
        found = [record for record in await self.queue_records() if record["name"] == name]
        return found[0] if found else queue_record(QueueInfo(name=name), 0, time.time())

    async def finished_since(self, since: float, *, owner: str | None = None) -> list[Finished]:
        """Jobs that ended at or after ``since``, by queue and final status."""
        return await (await self._ready()).finished_since(since, owner=owner)

    async def stats(self, window: float = DEFAULT_WINDOW, *, owner: str | None = None) -> dict[str, Any]:
        """Time series of the last ``window`` seconds (at most 7 days) as ``GET /stats`` shows
        them: jobs finished and their latency percentiles per bucket (about 60 buckets), and the
        current depth (of the jobs of ``owner`` only, if given). See :mod:`underway.stats`."""
        span = stats_window(window, time.time())
        store = await self._ready()
        rows = await store.finished_stats(span.start, span.bucket, span.count, owner=owner)
        depth = dict.fromkeys(DEPTH, 0)
        for queue in await store.queues(owner=owner):
            for status in DEPTH:
                depth[status] += queue.counts.get(status, 0)
        return stats_answer(span, rows, depth)

    async def job_counts(self) -> dict[str, dict[str, int]]:
        """``{queue: {status: count}}`` of every job in the store."""
        return await (await self._ready()).stats()

    async def workers(self, seen_within: float) -> list[WorkerInfo]:
        """Workers that heartbeated within ``seen_within`` seconds."""
        return await (await self._ready()).workers(seen_within)

    async def ping(self) -> None:
        """Reach the store (a cheap read); raises what the store raises when it cannot."""
        await (await self._ready()).feed_position()

    async def check_health(self) -> None:
        """Return if the store can be read and written now; else raise ``StoreUnhealthy`` (it
        answers but cannot write, or its SQLite file was deleted or replaced: ``reason`` says
        which) or ``StoreError`` (it cannot be reached). Nothing it does stays written."""
        await (await self._ready()).check_health()

    def check_store_identity(self) -> None:
        """Raise ``StoreGone`` if the SQLite file the store opened was deleted or replaced (one
        ``stat``; nothing to check before the store opened, nor on PostgreSQL)."""
        if self._store is not None:
            self._store.check_identity()

    async def pause_queue(self, name: str) -> QueueInfo:
        """Start no more of the queue's jobs (on any worker); running ones go on."""
        return await (await self._ready()).set_queue(checked_queue(name), paused=True)

    async def resume_queue(self, name: str) -> QueueInfo:
        return await (await self._ready()).set_queue(checked_queue(name), paused=False)

    async def limit_queue(self, name: str, concurrency: int | None) -> QueueInfo:
        """Run at most ``concurrency`` of the queue's jobs at once over all workers (None: no limit)."""
        checked_queue(name)
        if concurrency is not None and concurrency < 1:
            raise InvalidArguments("a queue's concurrency must be at least 1 (or None for no limit)")
        return await (await self._ready()).set_queue(name, concurrency=concurrency)

    async def answer(self, job_id: str, value: Any, key: str | None = None) -> Job:
        """Answer the question a ``waiting`` job asks; the job resumes."""
        job = await self.get(job_id)
        if job.status is not Status.WAITING or job.prompt is None:
            raise InvalidTransition(
                f"job {job_id} is {job.status.value}, not waiting for an answer",
                details={"status": job.status.value},
            )
        options = job.prompt.get("options")
        if options is not None and dumps(value) not in {dumps(option) for option in options}:
            raise InvalidArguments(
                f"the answer must be one of {options!r}, not {value!r}", details={"options": options}
            )
        return await self.store.answer(job_id, key or job.prompt["key"], value)

    async def retry(self, job_id: str) -> Job:
        """Run a finished job again (same id; it gets the task's full number of attempts)."""
        job = await self.get(job_id)
        return await self.store.retry(job_id, max_attempts=job.attempt + self._attempts(job.task))

    async def delete(self, job_id: str) -> None:
        await (await self._ready()).delete(job_id)

    # -- blocking twins ------------------------------------------------------------------------

    def _sync(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._portal is None:
            with self._open_lock:
                if self._portal is None:
                    self._portal = _Portal()
        return self._portal.call(coro)

    def submit_sync(
        self,
        task: Task[..., Any] | str,
        args: dict[str, Any] | None = None,
        *,
        options: SubmitOptions | None = None,
        **option_values: Any,
    ) -> Job:
        return self._sync(self.submit(task, args, options=options, **option_values))

    def get_sync(self, job_id: str) -> Job:
        return self._sync(self.get(job_id))

    def list_jobs_sync(self, **filters: Any) -> list[Job]:
        return self._sync(self.list_jobs(**filters))

    def cancel_sync(self, job_id: str) -> Job:
        return self._sync(self.cancel(job_id))

    def cancel_all_sync(self, **filters: Any) -> int:
        return self._sync(self.cancel_all(**filters))

    def answer_sync(self, job_id: str, value: Any, key: str | None = None) -> Job:
        return self._sync(self.answer(job_id, value, key))

    def retry_sync(self, job_id: str) -> Job:
        return self._sync(self.retry(job_id))

    def wait_sync(self, job_id: str, timeout: float | None = None) -> Job:
        return self._sync(self.wait(job_id, timeout))

    def close_sync(self) -> None:
        portal, self._portal = self._portal, None
        if portal is not None:
            portal.call(self.close())
            portal.stop()


def _new_job(
    task: Task[..., Any],
    job_id: str,
    args: dict[str, Any],
    options: SubmitOptions,
    run_at: float,
    batch_id: str | None,
    crash_retries: int,
) -> NewJob:
    """The job of validated ``args``: the task's defaults, overridden by ``options``."""
    limits = task.limits
    return NewJob(
        id=job_id,
        queue=options.queue or task.queue,
        task=task.name,
        args=args,
        priority=task.priority if options.priority is None else options.priority,
        run_at=run_at,
        max_attempts=options.max_attempts or task.retry.max_attempts,
        crash_retries=crash_retries,
        timeout=options.timeout or task.timeout,
        owner=options.owner,
        labels=dict(options.labels or {}),
        batch_id=batch_id,
        limit_key=limits.key_of(task.name, args),
        limit_concurrency=limits.concurrency,
        rate_count=None if limits.rate is None else limits.rate.count,
        rate_per=None if limits.rate is None else limits.rate.per,
        idempotency_key=options.idempotency_key,
    )


#: The most items one batch may have.
MAX_BATCH = 100_000
#: What a retry of many jobs runs again when it names no status.
RETRIED_BY_DEFAULT = (Status.FAILED, Status.CANCELLED)
#: Jobs read at a time by :meth:`App.retry_matching`.
RETRY_PAGE = 500


def retry_filter(job_filter: JobFilter) -> JobFilter:
    """``job_filter`` as a retry of many jobs uses it: the failed and cancelled jobs when it names
    no status; ``InvalidArguments`` when it names one that has not ended."""
    if not job_filter.statuses:
        return dataclasses.replace(job_filter, statuses=RETRIED_BY_DEFAULT)
    unfinished = [status.value for status in job_filter.statuses if not status.terminal]
    if unfinished:
        raise InvalidArguments(
            f"only finished jobs can be retried, not {', '.join(unfinished)} ones: name succeeded, "
            "failed or cancelled (or no status: failed and cancelled)",
            details={"status": unfinished},
        )
    return job_filter


def _ids_by_task(jobs: Sequence[Job]) -> dict[str, tuple[str, ...]]:
    found: dict[str, list[str]] = {}
    for job in jobs:
        found.setdefault(job.task, []).append(job.id)
    return {task: tuple(ids) for task, ids in found.items()}


def _checked_run_at(options: SubmitOptions) -> float:
    """When a job submitted with ``options`` is due; ``InvalidArguments`` for a wrong option."""
    if options.queue is not None:
        checked_queue(options.queue)
    if options.run_at is not None and options.delay is not None:
        raise InvalidArguments("give either run_at or delay, not both")
    if options.max_attempts is not None and options.max_attempts < 1:
        raise InvalidArguments("max_attempts must be at least 1")
    if options.crash_retries is not None and options.crash_retries < 0:
        raise InvalidArguments("crash_retries must not be negative")
    if options.timeout is not None and options.timeout <= 0:
        raise InvalidArguments("timeout must be greater than 0")
    if options.delay is not None and not 0 <= options.delay <= MAX_DELAY:
        raise InvalidArguments(f"delay must be between 0 and {MAX_DELAY:g} seconds")
    if options.run_at is not None and not 0 <= options.run_at <= LATEST_RUN_AT:
        raise InvalidArguments("run_at must be a time between 1970 and 9999 (seconds since the epoch)")
    if options.idempotency_key is not None and not 0 < len(options.idempotency_key) <= 200:
        raise InvalidArguments("idempotency_key must have 1 to 200 characters")
    return options.run_at if options.run_at is not None else time.time() + (options.delay or 0.0)


class _Portal:
    """An event loop in a daemon thread that runs the ``*_sync`` calls."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="underway-sync", daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            coro.close()
            raise RuntimeError("a *_sync method was called from underway's own loop: await the async one")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def stop(self) -> None:
        """Cancel what still runs on the loop (change polls, event feeds), stop and close it."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("the sync portal cannot stop itself: call close_sync() from outside")
        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(_cancel_all(), self._loop).result(timeout=5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()


async def _cancel_all() -> None:
    tasks = asyncio.all_tasks() - {asyncio.current_task()}
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def default_task_name(fn: Callable[..., Any]) -> str:
    """``module.function``; for a script run as ``__main__``, its file's name stands for the module,
    so that ``python jobs.py`` submits the names that ``underway --app jobs:app worker`` runs."""
    module = fn.__module__
    if module == "__main__":
        main_file = getattr(sys.modules["__main__"], "__file__", None)
        module = Path(main_file).stem if main_file else "__main__"
    return f"{module}.{fn.__qualname__}"
