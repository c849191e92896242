"""The store: the one interface between underway's rules and a database.

Methods are at the level of the domain (claim, heartbeat, record…); every rule that decides
*what* to write lives outside, in pure modules. Each backend passes the same contract tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..events import Event, NewEvent, dumps
from ..jobs import CRASH_RETRIES, Job, Status
from ..stats import FinishedBucket


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


@dataclass(frozen=True, slots=True, kw_only=True)
class NewJob:
    id: str
    queue: str
    task: str
    args: dict[str, Any]
    priority: int = 0
    run_at: float
    max_attempts: int = 1
    #: Times the job may lose its worker and run again (see :attr:`Job.crash_retries`).
    crash_retries: int = CRASH_RETRIES
    timeout: float | None = None
    owner: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    batch_id: str | None = None
    #: Jobs with the same ``limit_key`` run at most ``limit_concurrency`` at a time, and start
    #: at most ``rate_count`` times per ``rate_per`` seconds, across all workers.
    limit_key: str | None = None
    limit_concurrency: int | None = None
    rate_count: int | None = None
    rate_per: float | None = None
    #: A second job with this key is not stored: the first is returned (same task and
    #: arguments) or the submission is refused (``IdempotencyConflict``).
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NewBatch:
    id: str
    task: str
    queue: str
    name: str | None = None
    owner: str | None = None
    labels: dict[str, str] = field(default_factory=dict)


BATCH_STATUSES = ("queued", "running", "paused", "completed", "partial", "failed", "cancelled")


@dataclass(frozen=True, slots=True, kw_only=True)
class Batch:
    """A batch and how many of its items are in each status."""

    id: str
    task: str
    queue: str
    name: str | None
    owner: str | None
    labels: dict[str, str]
    total: int
    paused: bool
    cancelled: bool
    created_at: float
    updated_at: float
    counts: dict[str, int]
    started_at: float | None = None  #: when its first item started
    finished_at: float | None = None  #: when its last item ended, once all have

    def count(self, status: Status) -> int:
        return self.counts.get(status.value, 0)

    @property
    def done(self) -> int:
        return sum(self.count(s) for s in (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED))

    @property
    def status(self) -> str:
        """``queued``, ``running``, ``paused``, ``completed``, ``partial``, ``failed`` or ``cancelled``."""
        if self.total and self.done == self.total:
            if self.count(Status.SUCCEEDED) == self.total:
                return "completed"
            if self.cancelled or self.count(Status.CANCELLED) == self.total:
                return "cancelled"
            return "failed" if self.count(Status.SUCCEEDED) == 0 else "partial"
        if self.paused and not self.cancelled:
            return "paused"
        if self.started_at is not None or self.done:
            return "running"
        return "queued"


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueInfo:
    """A queue as the store knows it: its controls and its jobs by status."""

    name: str
    paused: bool = False
    concurrency: int | None = None  #: most jobs of the queue running at once, over all workers
    counts: dict[str, int] = field(default_factory=dict)
    oldest_queued_at: float | None = None  #: when the longest-waiting due job was due


@dataclass(frozen=True, slots=True)
class Lease:
    """What fences a worker's writes: the job and the attempt the worker claimed."""

    job_id: str
    attempt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerWrite:
    """One fenced write of a worker about a job it runs.

    Appends ``events`` (logs), then a ``progress`` event if ``progress`` is given, then, if
    ``status`` is given, moves the job there with a ``status`` event (and a ``prompt`` event
    when it moves to ``waiting``). Refused as a whole when the worker no longer holds
    ``lease`` (another attempt runs, or the job ended).

    ``hand_back`` adds one to the job's ``max_attempts`` (the attempt ended does not count
    against the task's retries); ``crash`` adds one to its ``crashes`` (the sweep's write of an
    expired lease).
    """

    lease: Lease
    events: tuple[NewEvent, ...] = ()
    progress: dict[str, Any] | None = None
    checkpoint: Any = UNSET
    status: Status | None = None
    result: Any = None
    #: ``result`` as JSON text when the worker encoded it already (to measure it): not encoded again.
    result_json: str | None = None
    error: dict[str, Any] | None = None
    run_at: float | None = None
    prompt: dict[str, Any] | None = None
    reason: str | None = None
    hand_back: bool = False
    crash: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class JobFilter:
    """Which jobs a list, a cancel or a retry is about: those that match every field given."""

    statuses: tuple[Status, ...] = ()
    queue: str | None = None
    task: str | None = None
    owner: str | None = None
    label: tuple[str, str] | None = None
    ids: tuple[str, ...] = ()
    batch_id: str | None = None
    #: A search: the jobs whose id starts with it or whose arguments' JSON contains it (see
    #: :func:`search_texts`), ignoring the case of ASCII letters. ``None`` or ``""``: every job.
    q: str | None = None

    def matches(self, job: Job) -> bool:
        """Whether ``job`` matches, as the stores decide in SQL (for events that arrive live)."""
        label = self.label
        return (
            (not self.ids or job.id in self.ids)
            and (not self.statuses or job.status in self.statuses)
            and all(
                wanted is None or wanted == found
                for wanted, found in (
                    (self.queue, job.queue),
                    (self.task, job.task),
                    (self.owner, job.owner),
                    (self.batch_id, job.batch_id),
                )
            )
            and (label is None or job.labels.get(label[0]) == label[1])
            and (not self.q or found_by_search(job, self.q))
        )


#: ASCII letters to lowercase, and nothing else: what SQLite's ``lower()`` does, and what
#: PostgreSQL's does under ``COLLATE "C"``, so that a search finds the same jobs in every store.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def fold_case(text: str) -> str:
    """``text`` with its ASCII letters in lowercase (other letters stay as they are)."""
    return text.translate(_ASCII_LOWER)


def search_prefix(q: str) -> str | None:
    """What a job's id must start with (case folded) to be found by ``q``; ``None`` if no id can."""
    return None if "\x00" in q else fold_case(q)


def search_texts(q: str) -> tuple[str, ...]:
    """What a search for ``q`` looks for in a job's arguments' JSON text, case folded: ``q`` as
    typed, and ``q`` as JSON writes it inside a string (``"`` as ``\\"``, a backslash doubled,
    a newline as ``\\n``) when that differs, so that ``say "hi"`` finds ``{"text": "say \\"hi\\""}``.
    A text with a NUL character is left out: no JSON text holds one (nor may PostgreSQL's)."""
    written = dumps(q)[1:-1]
    return tuple(dict.fromkeys(fold_case(text) for text in (q, written) if "\x00" not in text))


def found_by_search(job: Job, q: str) -> bool:
    """Whether a search for ``q`` finds ``job`` (see :attr:`JobFilter.q`)."""
    prefix = search_prefix(q)
    if prefix is not None and fold_case(job.id).startswith(prefix):
        return True
    text = fold_case(dumps(job.args))
    return any(wanted in text for wanted in search_texts(q))


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerInfo:
    id: str
    host: str
    pid: int
    queues: tuple[str, ...]
    concurrency: int
    running: int = 0
    started_at: float
    last_seen: float

    def to_dict(self) -> dict[str, Any]:
        from ..timefmt import to_iso

        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "queues": list(self.queues),
            "concurrency": self.concurrency,
            "running": self.running,
            "started_at": to_iso(self.started_at),
            "last_seen": to_iso(self.last_seen),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Finished:
    """How many jobs of a queue ended with a status in a window, and how long they ran."""

    queue: str
    status: Status
    count: int
    ran: int  #: how many of them had started (a job cancelled while queued never ran)
    total_seconds: float
    longest_seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKey:
    """A built-in API key as stored: never the secret, only its keyed hash."""

    id: str
    owner: str
    role: str  #: ``user`` or ``admin``
    digest: str  #: hex HMAC-SHA256 of the secret (computed by the caller)
    created_at: float
    revoked_at: float | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """What a heartbeat learnt: leases this worker lost, and jobs asked to stop."""

    lost: frozenset[str]
    cancelling: frozenset[str]


@dataclass(frozen=True, slots=True)
class SweepResult:
    requeued: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def total(self) -> int:
        return self.requeued + self.failed + self.cancelled


class Store(Protocol):
    url: str

    async def open(self) -> None:
        """Connect and bring the schema up to date."""

    async def close(self) -> None: ...

    async def migrate(self) -> list[str]:
        """Apply the migrations not yet applied; return their names."""

    async def check_health(self) -> None:
        """Return if the store can be read and written now; else raise ``StoreUnhealthy`` saying
        why (it cannot write: read-only, full, no permission; SQLite: its file was deleted or
        replaced, ``StoreGone``), or ``StoreError`` if it cannot be reached. It writes nothing
        that stays: a write that changes nothing, rolled back."""

    def check_identity(self) -> None:
        """Raise ``StoreGone`` if the database this store opened is no longer the one its URL
        names (SQLite: the file was deleted or another moved into place). Cheap enough to call
        every few seconds; PostgreSQL has nothing to check."""

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[Job]:
        """Insert jobs as ``queued``, each with its first event, in one transaction."""

    async def claim(
        self, worker_id: str, queues: Sequence[str], limit: int, lease_timeout: float
    ) -> list[Job]:
        """Move up to ``limit`` due jobs to ``running``, by priority then age."""

    async def next_run_at(self, queues: Sequence[str]) -> float | None:
        """When the earliest queued job of these queues (all if empty) may run; None if none."""

    async def heartbeat(self, worker: WorkerInfo, leases: Sequence[Lease], lease_timeout: float) -> Heartbeat:
        """Extend the leases still held, and say which are lost or asked to stop."""

    async def cancelling(self, worker_id: str) -> frozenset[str]:
        """Ids of the jobs this worker holds that were asked to stop."""

    async def record(self, writes: Sequence[WorkerWrite]) -> list[bool]:
        """Apply fenced worker writes in one transaction; ``False`` for each one refused."""

    async def cancel(self, job_filter: JobFilter) -> list[Job]:
        """Cancel queued jobs now, ask running/waiting ones to stop; return the jobs changed.

        Atomic against claims: no queued job it matched can start afterwards."""

    async def create_batch(self, batch: NewBatch, jobs: Sequence[NewJob]) -> Batch:
        """Store a batch and its jobs (``batch_id`` set) in one transaction."""

    async def get_batch(self, batch_id: str) -> Batch | None: ...

    async def list_batches(
        self, *, limit: int = 50, before: str | None = None, owner: str | None = None
    ) -> list[Batch]:
        """Batches (only ``owner``'s if given), newest first; ``before`` is the last id of the
        previous page."""

    async def pause_batch(self, batch_id: str, paused: bool) -> Batch:
        """Stop (or resume) claiming the batch's queued items; running ones go on."""

    async def cancel_batch(self, batch_id: str) -> tuple[Batch, list[Job]]:
        """Mark the batch cancelled and cancel its items as :meth:`cancel` does."""

    async def retry_jobs(self, job_filter: JobFilter, extra_attempts: int) -> list[Job]:
        """Queue the finished jobs matching the filter again, each with ``extra_attempts`` more;
        a batch with one of them in it is no longer marked cancelled."""

    async def queues(self, owner: str | None = None) -> list[QueueInfo]:
        """Every queue that has jobs or controls.

        With ``owner``: the queues where that owner has jobs, counting only those jobs (the
        controls are the queue's own)."""

    async def set_queue(
        self, name: str, *, paused: bool | None = None, concurrency: int | None = UNSET
    ) -> QueueInfo:
        """Pause or resume a queue, or set (``None``: remove) its concurrency limit."""

    async def answer(self, job_id: str, key: str, value: Any) -> Job:
        """Store the answer to the question a ``waiting`` job asks, and resume it."""

    async def retry(self, job_id: str, max_attempts: int) -> Job:
        """Queue a finished job again (same id, its events go on)."""

    async def delete(self, job_id: str) -> None:
        """Delete a finished job and its events."""

    async def get(self, job_id: str) -> Job | None: ...

    async def list_jobs(
        self, job_filter: JobFilter, *, limit: int = 50, before: str | None = None, after: str | None = None
    ) -> list[Job]:
        """Jobs matching the filter, newest first; ``before`` is the last id of the previous page.

        With ``after`` (``""`` for the first page), oldest first: the jobs after that id."""

    async def events(
        self,
        job_id: str,
        *,
        after: int = 0,
        limit: int = 1000,
        types: Sequence[str] = (),
    ) -> list[Event]: ...

    async def log_lines(self, job_id: str) -> int:
        """How many ``log`` events the job has (a re-run goes on counting towards ``max_log_lines``)."""
        ...

    async def feed(self, after: int, limit: int = 1000) -> tuple[list[Event], int]:
        """Events of all jobs committed after feed position ``after``, and the new position."""

    async def feed_position(self) -> int:
        """The current end of the feed (new events come after it)."""

    async def sweep(self, cancel_grace: float) -> SweepResult:
        """Requeue (or fail) jobs whose lease expired; cancel jobs past their cancel grace."""

    async def prune(self, older_than: float, limit: int = 1000) -> int:
        """Delete up to ``limit`` jobs finished more than ``older_than`` seconds ago."""

    async def stats(self) -> dict[str, dict[str, int]]:
        """Job counts: ``{queue: {status: count}}``."""

    async def finished_since(self, since: float, owner: str | None = None) -> list[Finished]:
        """Jobs (only ``owner``'s if given) that ended at or after ``since`` (epoch seconds), by
        queue and final status."""

    async def finished_stats(
        self, since: float, bucket: float, count: int, owner: str | None = None
    ) -> list[FinishedBucket]:
        """The jobs (only ``owner``'s if given) that ended in each of ``count`` buckets of
        ``bucket`` seconds from ``since``: counts by final status and nearest-rank percentiles of
        their latency (see :mod:`underway.stats`), one record per bucket that has any, in order."""

    async def workers(self, seen_within: float) -> list[WorkerInfo]: ...

    async def remove_worker(self, worker_id: str) -> None: ...

    async def add_api_key(self, key: ApiKey) -> None:
        """Store a new key (a ``StoreError`` if its id is taken)."""

    async def api_key(self, key_id: str) -> ApiKey | None:
        """The key with this id, revoked or not: a primary key read, made on every request."""

    async def api_keys(self) -> list[ApiKey]:
        """Every key, revoked ones too, oldest first."""

    async def revoke_api_key(self, key_id: str, at: float) -> ApiKey | None:
        """Mark the key revoked at ``at`` (a key revoked before keeps its time); None if unknown."""

    async def revoked_api_keys(self, key_ids: Sequence[str]) -> frozenset[str]:
        """Those of ``key_ids`` that are revoked or do not exist, in one query."""

    async def has_api_keys(self) -> bool:
        """Whether any key that is not revoked exists."""

    async def secret(self, name: str, make: Callable[[], str]) -> str:
        """The value stored under ``name``; if none, ``make()`` is stored and returned. Stores
        racing to make one all return the one that was stored first."""

    async def set_secret(self, name: str, value: str) -> None:
        """Store ``value`` under ``name``, replacing any value stored before."""

    def change_token(self) -> int:
        """A value that changes whenever anything may have changed in the store."""

    async def wait_for_change(self, token: int, timeout: float) -> int:
        """Return as soon as the store changed since ``token`` was taken, or after ``timeout``."""
