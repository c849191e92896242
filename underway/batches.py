"""What batches and queues look like to the people watching them: a batch's counts, percent,
rate, ETA and running items; a queue's depth, throughput and controls. The HTTP API, the client
and the command line share these shapes."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .jobs import Job, Status
from .store import Batch, QueueInfo
from .timefmt import from_iso, to_iso

#: How many running items a batch view shows.
RUNNING_SHOWN = 10


@dataclass(frozen=True, slots=True, kw_only=True)
class RunningItem:
    id: str
    progress: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "progress": self.progress}


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchView:
    id: str
    name: str | None
    task: str
    queue: str
    owner: str | None
    labels: dict[str, str]
    total: int
    status: str
    counts: dict[str, int]
    percent: float
    rate: float | None  #: items ended per second since the first one started
    eta_s: float | None
    paused: bool
    cancelled: bool
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    running: list[RunningItem] = field(default_factory=list)

    @property
    def done(self) -> int:
        return sum(self.counts.get(s.value, 0) for s in (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED))

    @property
    def terminal(self) -> bool:
        return self.total > 0 and self.done == self.total

    @classmethod
    def of(cls, batch: Batch, running: Sequence[Job] = (), now: float | None = None) -> BatchView:
        now = time.time() if now is None else now
        done = batch.done
        rate = eta = None
        if batch.started_at is not None and done:
            elapsed = (batch.finished_at or now) - batch.started_at
            if elapsed > 0:
                rate = done / elapsed
                eta = 0.0 if done == batch.total else (batch.total - done) / rate
        return cls(
            id=batch.id,
            name=batch.name,
            task=batch.task,
            queue=batch.queue,
            owner=batch.owner,
            labels=batch.labels,
            total=batch.total,
            status=batch.status,
            counts={s.value: batch.counts.get(s.value, 0) for s in Status},
            percent=round(100.0 * done / batch.total, 1) if batch.total else 0.0,
            rate=None if rate is None else round(rate, 3),
            eta_s=None if eta is None else round(eta, 1),
            paused=batch.paused,
            cancelled=batch.cancelled,
            created_at=batch.created_at,
            updated_at=batch.updated_at,
            started_at=batch.started_at,
            finished_at=batch.finished_at,
            running=[RunningItem(id=job.id, progress=job.progress) for job in running],
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "task": self.task,
            "queue": self.queue,
            "owner": self.owner,
            "labels": self.labels,
            "total": self.total,
            "status": self.status,
            "counts": self.counts,
            "percent": self.percent,
            "rate": self.rate,
            "eta_s": self.eta_s,
            "paused": self.paused,
            "cancelled": self.cancelled,
            "created_at": to_iso(self.created_at),
            "updated_at": to_iso(self.updated_at),
            "started_at": to_iso(self.started_at),
            "finished_at": to_iso(self.finished_at),
            "running": [item.to_dict() for item in self.running],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BatchView:
        return cls(
            id=data["id"],
            name=data["name"],
            task=data["task"],
            queue=data["queue"],
            owner=data["owner"],
            labels=data["labels"],
            total=data["total"],
            status=data["status"],
            counts=data["counts"],
            percent=data["percent"],
            rate=data["rate"],
            eta_s=data["eta_s"],
            paused=data["paused"],
            cancelled=data["cancelled"],
            created_at=from_iso(data["created_at"]),
            updated_at=from_iso(data["updated_at"]),
            started_at=None if data["started_at"] is None else from_iso(data["started_at"]),
            finished_at=None if data["finished_at"] is None else from_iso(data["finished_at"]),
            running=[RunningItem(id=item["id"], progress=item["progress"]) for item in data["running"]],
        )


def item_record(job: Job) -> dict[str, Any]:
    """One item of a batch's results: its arguments, status, and result or error."""
    return {
        "id": job.id,
        "status": job.status.value,
        "attempt": job.attempt,
        "args": job.args,
        "result": job.result,
        "error": job.error,
    }


def queue_record(info: QueueInfo, finished: int, now: float) -> dict[str, Any]:
    """A queue as ``GET /queues`` shows it: ``finished`` jobs ended in the last minute."""
    counts = {s.value: info.counts.get(s.value, 0) for s in Status}
    oldest = info.oldest_queued_at
    return {
        "name": info.name,
        "paused": info.paused,
        "concurrency": info.concurrency,
        "depth": counts["queued"],
        "running": counts["running"],
        "waiting": counts["waiting"],
        "counts": counts,
        "throughput_1m": finished,
        "oldest_queued_age_s": None if oldest is None else round(max(0.0, now - oldest), 3),
    }
