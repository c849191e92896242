"""What every SQL store shares: rows to records, and the rules of a worker's fenced write.

Rows come from any driver whose rows are read by column name (``sqlite3.Row``, psycopg's
``dict_row``), with JSON columns as text.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..events import Event, EventType, NewEvent, dumps, prompt_event, status_event
from ..exceptions import IdempotencyConflict
from ..jobs import ACTIVE, Job, Status, sources_of
from ..stats import FinishedBucket
from .base import (
    UNSET,
    ApiKey,
    Batch,
    Finished,
    Lease,
    NewJob,
    QueueInfo,
    SweepResult,
    WorkerInfo,
    WorkerWrite,
)

Row = Mapping[str, Any]


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _loads_object(text: str) -> dict[str, Any]:
    """A JSON object column, most often empty (labels, answers): skip the parser then."""
    return {} if text == "{}" else json.loads(text)


_STATUS = {status.value: status for status in Status}


def job_from_row(row: Row) -> Job:
    return Job(
        id=row["id"],
        queue=row["queue"],
        task=row["task"],
        args=_loads_object(row["args"]),
        status=_STATUS[row["status"]],
        priority=row["priority"],
        run_at=row["run_at"],
        attempt=row["attempt"],
        max_attempts=row["max_attempts"],
        crashes=row["crashes"],
        crash_retries=row["crash_retries"],
        timeout=row["timeout"],
        lease_until=row["lease_until"],
        worker_id=row["worker_id"],
        owner=row["owner"],
        labels=_loads_object(row["labels"]),
        progress=_loads(row["progress"]),
        prompt=_loads(row["prompt"]),
        answers=_loads_object(row["answers"]),
        checkpoint=_loads(row["checkpoint"]),
        result=_loads(row["result"]),
        error=_loads(row["error"]),
        cancel_requested=bool(row["cancel_requested"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        last_seq=row["last_seq"],
        batch_id=row["batch_id"],
        limit_key=row["limit_key"],
        idempotency_key=row["idempotency_key"],
    )


def new_job(new: NewJob, now: float) -> Job:
    """The record of a job just inserted as ``queued``."""
    return Job(
        id=new.id,
        queue=new.queue,
        task=new.task,
        args=new.args,
        status=Status.QUEUED,
        priority=new.priority,
        run_at=new.run_at,
        max_attempts=new.max_attempts,
        crash_retries=new.crash_retries,
        timeout=new.timeout,
        owner=new.owner,
        labels=new.labels,
        created_at=now,
        updated_at=now,
        last_seq=1,
        batch_id=new.batch_id,
        limit_key=new.limit_key,
        idempotency_key=new.idempotency_key,
    )


def job_params(j: NewJob) -> tuple[Any, ...]:
    """The values of one job's row, in the column order of ``insert_job``."""
    return (
        j.id,
        j.queue,
        j.task,
        dumps(j.args),
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
        j.idempotency_key,
        j.crash_retries,
    )


def idempotency_scope(job: Job | NewJob) -> tuple[str, str] | None:
    """Where a job's idempotency key is unique: ``(owner, key)``, no owner being ``""`` as in
    the unique index; None without a key."""
    if job.idempotency_key is None:
        return None
    return job.owner or "", job.idempotency_key


def same_submission(existing: Job, new: NewJob) -> bool:
    """Whether a job stored under an idempotency key is what ``new`` asks for."""
    return existing.task == new.task and existing.args == new.args


def idempotency_conflict(existing: Job, new: NewJob) -> IdempotencyConflict:
    return IdempotencyConflict(
        f"idempotency key {new.idempotency_key!r} was used for job {existing.id} with other"
        " arguments: use a new key for a new job",
        details={"idempotency_key": new.idempotency_key, "job_id": existing.id},
    )


def batch_from_row(
    row: Row, counts: dict[str, int], started_at: float | None, ended_at: float | None
) -> Batch:
    total = row["total"]
    done = sum(counts.get(s, 0) for s in ("succeeded", "failed", "cancelled"))
    return Batch(
        id=row["id"],
        task=row["task"],
        queue=row["queue"],
        name=row["name"],
        owner=row["owner"],
        labels=_loads_object(row["labels"]),
        total=total,
        paused=bool(row["paused"]),
        cancelled=bool(row["cancelled"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        counts=counts,
        started_at=started_at,
        finished_at=ended_at if total and done == total else None,
    )


# -- limits in the claim ---------------------------------------------------------------------

#: Starts of rate-limited jobs are kept this long: the longest rate window allowed.
LONGEST_RATE_WINDOW = 3600.0


@dataclass(frozen=True, slots=True)
class Candidate:
    """A due job as the claim sees it: where it stands and what limits it."""

    id: str
    queue: str
    limit_key: str | None
    limit_concurrency: int | None
    rate_count: int | None
    rate_per: float | None

    @classmethod
    def of(cls, row: Row) -> Candidate:
        return cls(
            id=row["id"],
            queue=row["queue"],
            limit_key=row["limit_key"],
            limit_concurrency=row["limit_concurrency"],
            rate_count=row["rate_count"],
            rate_per=row["rate_per"],
        )


@dataclass(slots=True)
class Usage:
    """What is running (and started recently) now, per limit key and per limited queue."""

    running_by_key: dict[str, int] = field(default_factory=dict)
    started_by_key: dict[str, int] = field(default_factory=dict)
    running_by_queue: dict[str, int] = field(default_factory=dict)
    queue_limits: dict[str, int] = field(default_factory=dict)

    def admits(self, candidate: Candidate) -> bool:
        limit = self.queue_limits.get(candidate.queue)
        if limit is not None and self.running_by_queue.get(candidate.queue, 0) >= limit:
            return False
        key = candidate.limit_key
        if key is None:
            return True
        if (
            candidate.limit_concurrency is not None
            and self.running_by_key.get(key, 0) >= candidate.limit_concurrency
        ):
            return False
        return candidate.rate_count is None or self.started_by_key.get(key, 0) < candidate.rate_count

    def take(self, candidate: Candidate) -> None:
        if candidate.queue in self.queue_limits:
            self.running_by_queue[candidate.queue] = self.running_by_queue.get(candidate.queue, 0) + 1
        if candidate.limit_key is not None:
            key = candidate.limit_key
            self.running_by_key[key] = self.running_by_key.get(key, 0) + 1
            if candidate.rate_count is not None:
                self.started_by_key[key] = self.started_by_key.get(key, 0) + 1


def choose(candidates: Sequence[Candidate], limit: int, usage: Usage) -> list[Candidate]:
    """The first ``limit`` candidates, in order, that no limit holds back."""
    chosen: list[Candidate] = []
    for candidate in candidates:
        if len(chosen) == limit:
            break
        if usage.admits(candidate):
            usage.take(candidate)
            chosen.append(candidate)
    return chosen


def limited(candidates: Sequence[Candidate], queue_limits: Mapping[str, int]) -> bool:
    """Whether any limit applies to these candidates (if not, the claim needs no counting)."""
    return any(c.limit_key is not None or c.queue in queue_limits for c in candidates)


def event_from_row(row: Row) -> Event:
    return Event(
        job_id=row["job_id"],
        seq=row["seq"],
        type=EventType(row["type"]),
        at=row["at"],
        data=json.loads(row["data"]),
    )


def worker_params(worker: WorkerInfo) -> dict[str, Any]:
    return {
        "id": worker.id,
        "host": worker.host,
        "pid": worker.pid,
        "queues": dumps(list(worker.queues)),
        "concurrency": worker.concurrency,
        "running": worker.running,
        "started_at": worker.started_at,
    }


def worker_from_row(row: Row) -> WorkerInfo:
    return WorkerInfo(
        id=row["id"],
        host=row["host"],
        pid=row["pid"],
        queues=tuple(json.loads(row["queues"])),
        concurrency=row["concurrency"],
        running=row["running"],
        started_at=row["started_at"],
        last_seen=row["last_seen"],
    )


# -- a worker's fenced write -------------------------------------------------------------------


def after_cancel(write: WorkerWrite) -> WorkerWrite:
    """A write that ends an attempt after a cancel was asked: the job must not run again."""
    return dataclasses.replace(
        write, status=Status.CANCELLED, run_at=None, hand_back=False, reason="cancelled"
    )


def write_events(write: WorkerWrite) -> list[NewEvent]:
    """The events a write appends, in order: its logs, its progress, its status (and prompt)."""
    events = list(write.events)
    if write.progress is not None:
        events.append(NewEvent(EventType.PROGRESS, write.progress))
    if write.status is not None:
        events.append(
            status_event(
                write.status,
                write.lease.attempt,
                result=write.result,
                error=write.error,
                run_at=write.run_at,
                reason=write.reason,
            )
        )
        if write.prompt is not None:
            events.append(prompt_event(write.prompt))
    return events


def write_params(write: WorkerWrite, events: int, now: float) -> dict[str, Any]:
    """The parameters of the fenced statement (``fenced_touch`` or ``fenced_move``)."""
    params: dict[str, Any] = {
        "id": write.lease.job_id,
        "attempt": write.lease.attempt,
        "events": events,
        "now": now,
        "progress": None if write.progress is None else dumps(write.progress),
        "set_checkpoint": write.checkpoint is not UNSET,
        "checkpoint": None if write.checkpoint is UNSET else dumps(write.checkpoint),
    }
    if write.status is not None:
        params.update(
            status=write.status.value,
            result=_result_json(write) if write.status is Status.SUCCEEDED else None,
            error=None if write.error is None else dumps(write.error),
            prompt=None if write.prompt is None else dumps(write.prompt),
            run_at=write.run_at,
            hand_back=int(write.hand_back),
            crash=int(write.crash),
        )
    return params


def _result_json(write: WorkerWrite) -> str:
    return write.result_json if write.result_json is not None else dumps(write.result)


def move_sources(target: Status) -> str:
    """The statuses a worker may move a job to ``target`` from, as a SQL list of literals."""
    return ", ".join(f"'{source}'" for source in sorted(s.value for s in sources_of(target) if s in ACTIVE))


def numbered(job_id: str, last_seq: int, events: Sequence[NewEvent]) -> list[tuple[str, int, NewEvent]]:
    """``events`` with their seqs, the last of them being ``last_seq``."""
    first = last_seq - len(events) + 1
    return [(job_id, first + i, event) for i, event in enumerate(events)]


# -- the sweep ---------------------------------------------------------------------------------


def expired(
    job_id: str, attempt: int, crashes: int, crash_retries: int, cancelling: bool, now: float
) -> WorkerWrite:
    """What an expired lease turns into.

    The job lost its worker (killed, out of memory, a lost machine): that is no failure of the
    task, so it runs again at once without using up its retries (``hand_back``: its
    ``max_attempts`` grows by one) and its ``crashes`` go up by one. A job that lost more than
    ``crash_retries`` workers is likely what kills them: it fails with ``WorkerLost``. A job
    asked to stop is cancelled (its lost worker counted too).
    """
    lease = Lease(job_id, attempt)
    if cancelling:
        return WorkerWrite(lease=lease, status=Status.CANCELLED, reason="lease_expired", crash=True)
    if crashes >= crash_retries:
        error = worker_lost(crashes + 1, crash_retries)
        return WorkerWrite(lease=lease, status=Status.FAILED, error=error, reason="lease_expired", crash=True)
    return WorkerWrite(
        lease=lease, status=Status.QUEUED, run_at=now, reason="lease_expired", hand_back=True, crash=True
    )


def expired_lease(row: Row, now: float) -> WorkerWrite:
    """:func:`expired` of a row of ``expired_leases``."""
    cancelling = bool(row["cancel_requested"])
    return expired(row["id"], row["attempt"], row["crashes"], row["crash_retries"], cancelling, now)


def worker_lost(crashes: int, crash_retries: int) -> dict[str, str]:
    """The error of a job that lost its worker ``crashes`` times, more than it may."""
    times = "once" if crashes == 1 else "twice" if crashes == 2 else f"{crashes} times"
    return {
        "type": "WorkerLost",
        "message": (
            f"the job lost its worker {times}, more than crash_retries={crash_retries} allows (each"
            " time the worker stopped heartbeating: it was killed, ran out of memory or was cut off"
            " from the store). The job itself may be what kills its workers (memory, a crash in"
            " native code): look into it; if it is not, raise crash_retries"
            " (@app.task(crash_retries=N) or UNDERWAY_CRASH_RETRIES) and retry the job"
        ),
    }


def overdue(job_id: str, attempt: int) -> WorkerWrite:
    """The end of a job that ignored its cancel request past the grace."""
    return WorkerWrite(lease=Lease(job_id, attempt), status=Status.CANCELLED, reason="cancel_grace")


def sweep_result(writes: Sequence[WorkerWrite], accepted: Sequence[bool]) -> SweepResult:
    done = [w.status for w, ok in zip(writes, accepted, strict=True) if ok]
    return SweepResult(
        requeued=done.count(Status.QUEUED),
        failed=done.count(Status.FAILED),
        cancelled=done.count(Status.CANCELLED),
    )


def usage_of(
    controls: Sequence[Row],
    running_by_key: Sequence[Row],
    started_by_key: Sequence[Row],
    running_by_queue: Sequence[Row],
) -> tuple[Usage, list[str], list[str]]:
    """What limits a claim now: the usage to count against, the queues to pass over (paused
    or at their limit) and the limit keys to pass over (at their concurrency or rate)."""
    usage = Usage(
        running_by_key={row["limit_key"]: row["n"] for row in running_by_key},
        started_by_key={row["limit_key"]: row["n"] for row in started_by_key},
        running_by_queue={row["queue"]: row["n"] for row in running_by_queue},
        queue_limits={row["name"]: row["concurrency"] for row in controls if row["concurrency"] is not None},
    )
    full = {q for q, most in usage.queue_limits.items() if usage.running_by_queue.get(q, 0) >= most}
    skip_queues = [row["name"] for row in controls if row["paused"] or row["name"] in full]
    skip_keys = [row["limit_key"] for row in running_by_key if row["n"] >= (row["most"] or 1 << 62)]
    skip_keys += [row["limit_key"] for row in started_by_key if row["n"] >= row["most"]]
    return usage, skip_queues, skip_keys


# -- reports ---------------------------------------------------------------------------------


def finished_from_rows(rows: Sequence[Row]) -> list[Finished]:
    """The rows of ``finished_since`` as records."""
    return [
        Finished(
            queue=row["queue"],
            status=Status(row["status"]),
            count=row["n"],
            ran=row["ran"],
            total_seconds=row["busy"],
            longest_seconds=row["longest"],
        )
        for row in rows
    ]


def finished_buckets_from_rows(rows: Sequence[Row]) -> list[FinishedBucket]:
    """The rows of ``finished_stats`` as records."""
    return [
        FinishedBucket(
            index=row["bucket"],
            succeeded=row["succeeded"],
            failed=row["failed"],
            cancelled=row["cancelled"],
            p50=row["p50"],
            p90=row["p90"],
            p99=row["p99"],
        )
        for row in rows
    ]


def counts_by_queue(rows: Sequence[Row]) -> dict[str, dict[str, int]]:
    """The rows of ``stats``: ``{queue: {status: count}}``."""
    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        counts.setdefault(row["queue"], {})[row["status"]] = row["n"]
    return counts


def queue_infos(
    stats: Sequence[Row], oldest_due: Sequence[Row], controls: Sequence[Row], *, with_jobs_only: bool = False
) -> list[QueueInfo]:
    """Every queue that has jobs or controls (only jobs, ``with_jobs_only``), from the rows of
    ``stats``, ``oldest_due`` and ``all_queue_controls``."""
    counts = counts_by_queue(stats)
    oldest = {row["queue"]: row["oldest"] for row in oldest_due}
    control = {row["name"]: row for row in controls}
    names = set(counts) if with_jobs_only else {*counts, *control}
    return [
        QueueInfo(
            name=name,
            paused=bool(control[name]["paused"]) if name in control else False,
            concurrency=control[name]["concurrency"] if name in control else None,
            counts=counts.get(name, {}),
            oldest_queued_at=oldest.get(name),
        )
        for name in sorted(names)
    ]


def batch_of(row: Row, parts: Sequence[Row]) -> Batch:
    """A batch from its row and the rows of ``batch_counts`` (per status: count, first start,
    last end)."""
    started = [p["started"] for p in parts if p["started"] is not None]
    ended = [p["ended"] for p in parts if p["ended"] is not None]
    return batch_from_row(
        row, {p["status"]: p["n"] for p in parts}, min(started, default=None), max(ended, default=None)
    )


# -- API keys ------------------------------------------------------------------------------------


def api_key_params(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "owner": key.owner,
        "role": key.role,
        "digest": key.digest,
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
    }


def api_key_from_row(row: Row) -> ApiKey:
    return ApiKey(
        id=row["id"],
        owner=row["owner"],
        role=row["role"],
        digest=row["digest"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )
