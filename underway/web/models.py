"""Wire shapes of the HTTP API: strict input models, and output models for the OpenAPI schema.

Outputs are built by ``Job.to_dict()`` / ``Event.to_dict()`` (the same shapes ``--json``
prints); the models here describe them, and a test checks that they agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from ..exceptions import InvalidArguments
from ..jobs import Status
from ..service import JobFilter
from ..tasks import SubmitOptions

StatusName = Literal["queued", "running", "waiting", "succeeded", "failed", "cancelled"]
FinishedStatusName = Literal["succeeded", "failed", "cancelled"]
EventTypeName = Literal["status", "progress", "log", "prompt", "answer"]


#: The most job ids one filter may name.
MAX_IDS = 1000
#: The longest search text.
MAX_SEARCH = 200
#: The largest event number a client may name (``after``, ``Last-Event-ID``): a 64-bit integer.
MAX_SEQ = 2**63 - 1
SEARCH = (
    "a search: the jobs whose id starts with it or whose arguments' JSON contains it"
    " (ignoring the case of ASCII letters)"
)
IDS = f"comma-separated job ids (at most {MAX_IDS})"
JobId = Annotated[str, Field(max_length=200)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _iso_text(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("a date-time is ISO 8601 text, such as 2030-01-01T12:00:00Z")
    return value


_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(9999, 1, 1, tzinfo=UTC)


def _utc_in_range(value: datetime) -> datetime:
    value = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if not _EARLIEST <= value <= _LATEST:  # beyond, times no longer convert back to text
        raise ValueError("a date-time must lie between 1970-01-01 and 9999-01-01 (UTC)")
    return value


#: ISO 8601 text only (no numbers), read as UTC when it has no offset, between 1970 and 9999.
#: FastAPI validates the parsed JSON in Python mode, where a strict ``datetime`` refuses every
#: string: this field is lax for strings and refuses everything else itself.
IsoDatetime = Annotated[
    datetime, Field(strict=False), BeforeValidator(_iso_text), AfterValidator(_utc_in_range)
]


class SubmitFields(StrictModel):
    """What a job submission and a batch share: how the job(s) differ from the task's defaults."""

    queue: str | None = Field(default=None, min_length=1, max_length=100)
    priority: int | None = Field(default=None, ge=-1_000_000, le=1_000_000)
    run_at: IsoDatetime | None = Field(
        default=None, description="not before this time (ISO 8601; UTC when it has no offset)"
    )
    delay: float | None = Field(default=None, ge=0, le=366 * 86400, description="seconds from now")
    max_attempts: int | None = Field(default=None, ge=1, le=1000)
    crash_retries: int | None = Field(
        default=None, ge=0, le=1000, description="times it may lose its worker and run again"
    )
    timeout: float | None = Field(default=None, gt=0, le=366 * 86400)
    labels: dict[str, str] | None = None
    owner: str | None = Field(
        default=None, min_length=1, max_length=200, description="record another owner (admins only)"
    )

    def options(self, idempotency_key: str | None = None) -> SubmitOptions:
        return SubmitOptions(
            queue=self.queue,
            priority=self.priority,
            delay=self.delay,
            run_at=None if self.run_at is None else self.run_at.timestamp(),
            max_attempts=self.max_attempts,
            crash_retries=self.crash_retries,
            timeout=self.timeout,
            labels=self.labels,
            owner=self.owner,
            idempotency_key=idempotency_key,
        )


class SubmitRequest(SubmitFields):
    task: str = Field(min_length=1, max_length=200, description="name of a registered task")
    args: dict[str, Any] = Field(default_factory=dict, description="the task's arguments")
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="a second submit with this key returns the first job (409 if its arguments differ)",
    )

    model_config = ConfigDict(
        extra="forbid", strict=True, json_schema_extra={"examples": [{"task": "crawl"}]}
    )


class AnswerRequest(StrictModel):
    value: Any = Field(description="the answer (any JSON value)")
    key: str | None = Field(default=None, description="the question's key (default: the one asked now)")


class JobFilterFields(StrictModel):
    """The jobs a change of many is about: those that match every field given."""

    # Every text has a length limit: pydantic then refuses one that is not Unicode (a lone
    # surrogate, which JSON can escape), as no store could take it.
    queue: str | None = Field(default=None, max_length=100)
    task: str | None = Field(default=None, max_length=200)
    batch: str | None = Field(default=None, max_length=200, description="a batch id")
    label: str | None = Field(default=None, pattern=r"^[^:]+:.*$", description="key:value")
    owner: str | None = Field(default=None, max_length=200, description="only this owner's jobs (admins)")
    q: str | None = Field(default=None, max_length=MAX_SEARCH, description=SEARCH)
    ids: list[JobId] | None = Field(
        default=None, min_length=1, max_length=MAX_IDS, description="only these jobs (at least one)"
    )

    def job_filter(self, status: Sequence[str]) -> JobFilter:
        return job_filter(
            status=status,
            queue=self.queue,
            task=self.task,
            batch=self.batch,
            label=self.label,
            owner=self.owner,
            q=self.q,
            ids=self.ids or (),
        )


class CancelRequest(JobFilterFields):
    status: list[StatusName] = Field(default_factory=list)


class RetryRequest(JobFilterFields):
    status: list[FinishedStatusName] = Field(
        default_factory=list, description="default: failed and cancelled"
    )


class StreamTokenRequest(StrictModel):
    job: str | None = Field(default=None, min_length=1, max_length=200, description="a job id")
    batch: str | None = Field(default=None, min_length=1, max_length=200, description="a batch id")
    ttl: float = Field(default=900.0, gt=0, le=86_400, description="seconds the token is valid")
    owner: str | None = Field(
        default=None, min_length=1, max_length=200, description="make it for this owner (admins only)"
    )

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [{"job": "…"}]})


class StreamTokenOut(BaseModel):
    token: str = Field(description="pass as ?token= (or Authorization: Bearer)")
    expires_at: str


class SessionRequest(StrictModel):
    key: str = Field(min_length=1, max_length=200, description="an API key (underway keys create)")


class SessionOut(BaseModel):
    owner: str
    role: Literal["user", "admin"]
    csrf_token: str = Field(description="send it as X-CSRF-Token with every change")
    expires_at: str


class MeOut(BaseModel):
    owner: str = Field(description='"" when authentication is off')
    role: Literal["user", "admin"]
    auth: bool = Field(description="whether authentication is on")
    via: Literal["key", "token", "session", "hook", "anonymous"]
    can: dict[str, bool] = Field(
        description="write (submit, retry, delete), cancel, answer, admin: what this principal may do"
    )
    grant: dict[str, str | None] | None = Field(description="what a stream token is limited to")
    csrf_token: str | None = Field(description="with a session: send it as X-CSRF-Token")


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorOut(BaseModel):
    error: ErrorDetail


class JobOut(BaseModel):
    id: str
    queue: str
    task: str
    args: dict[str, Any]
    status: StatusName
    priority: int
    run_at: str | None
    attempt: int
    max_attempts: int
    crashes: int = Field(default=0, description="times the job lost its worker (its lease expired)")
    crash_retries: int = Field(
        default=2, description="times it may lose its worker and run again before it fails with WorkerLost"
    )
    timeout: float | None
    lease_until: str | None
    worker_id: str | None
    owner: str | None
    labels: dict[str, str]
    progress: dict[str, Any] | None
    prompt: dict[str, Any] | None
    answers: dict[str, Any]
    checkpoint: Any
    result: Any
    error: dict[str, Any] | None
    cancel_requested: bool
    created_at: str | None
    updated_at: str | None
    started_at: str | None
    finished_at: str | None
    last_seq: int
    batch_id: str | None = Field(default=None, description="the batch the job belongs to")
    limit_key: str | None = Field(default=None, description="its key for its task's per-key limit")
    idempotency_key: str | None = Field(default=None, description="the idempotency key it was submitted with")


class JobList(BaseModel):
    jobs: list[JobOut]
    next_cursor: str | None = Field(description="pass as ?cursor= to get the next (older) page")


class EventOut(BaseModel):
    seq: int
    job_id: str
    type: EventTypeName
    at: str | None
    data: dict[str, Any]


class EventList(BaseModel):
    events: list[EventOut]
    next_after: int = Field(description="pass as ?after= to get what follows")
    status: StatusName


class CancelCount(BaseModel):
    cancelled: int


class RetriedCount(BaseModel):
    retried: int


class TaskOut(BaseModel):
    name: str
    queue: str
    priority: int
    timeout: float | None
    max_attempts: int
    is_async: bool
    doc: str | None
    schema_: dict[str, Any] = Field(alias="schema")


class TaskList(BaseModel):
    tasks: list[TaskOut]


class WorkerOut(BaseModel):
    id: str
    host: str
    pid: int
    queues: list[str]
    concurrency: int
    running: int
    started_at: str | None
    last_seen: str | None


class WorkerList(BaseModel):
    workers: list[WorkerOut]


class FinishedSeries(BaseModel):
    succeeded: list[int]
    failed: list[int]
    cancelled: list[int]


class LatencySeries(BaseModel):
    p50: list[float | None]
    p90: list[float | None]
    p99: list[float | None]


class Depth(BaseModel):
    queued: int
    running: int
    waiting: int


class StatsOut(BaseModel):
    window_s: float
    bucket_s: int = Field(description="the length of each bucket, in whole seconds")
    from_: str = Field(alias="from", description="where the first bucket starts")
    to: str = Field(description="when the answer was made (inside the last bucket)")
    buckets: list[str] = Field(description="where each bucket starts")
    finished: FinishedSeries = Field(description="jobs that ended in each bucket, by final status")
    latency: LatencySeries = Field(
        description="nearest-rank percentiles of submit-to-finish seconds of the jobs that ended in"
        " each bucket (null: none did)"
    )
    depth: Depth = Field(description="jobs in each status now (no history is kept of it)")


class Health(BaseModel):
    ok: bool
    store: str


def statuses(names: Sequence[str]) -> tuple[Status, ...]:
    return tuple(Status(name) for name in names)


def job_filter(
    *,
    status: Sequence[str] = (),
    queue: str | None = None,
    task: str | None = None,
    batch: str | None = None,
    label: str | None = None,
    owner: str | None = None,
    q: str | None = None,
    ids: Sequence[str] = (),
) -> JobFilter:
    """The filter of the parameters every job filter of the API takes (``label`` is ``key:value``)."""
    key, _, value = (label or "").partition(":")
    return JobFilter(
        statuses=statuses(status),
        queue=queue,
        task=task,
        owner=owner,
        label=(key, value) if label else None,
        ids=tuple(ids),
        batch_id=batch,
        q=q or None,
    )


def id_list(text: str | None) -> tuple[str, ...]:
    """The job ids of a comma-separated parameter (none if it is empty); at most ``MAX_IDS``."""
    return checked_ids((text or "").split(","))


def selected_ids(text: str | None) -> tuple[str, ...]:
    """The job ids of ``?ids=a,b``: none when it is not given; ``InvalidArguments`` when it is
    given but names no job (an empty selection is not taken for every job)."""
    ids = id_list(text)
    if text is not None and not ids:
        raise InvalidArguments("ids names no job: leave it out for every job, or name at least one")
    return ids


def checked_ids(given: Iterable[str]) -> tuple[str, ...]:
    """The job ids given, each once, empty ones left out; ``InvalidArguments`` beyond ``MAX_IDS``."""
    ids = tuple(dict.fromkeys(one for one in given if one))
    if len(ids) > MAX_IDS:
        raise InvalidArguments(
            f"{len(ids)} job ids, more than the {MAX_IDS} a filter may name: split the request",
            details={"limit": MAX_IDS},
        )
    return ids
