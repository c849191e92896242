"""The job value, its status and the legal transitions between statuses (pure)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .timefmt import from_iso, to_iso


class Status(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    def __str__(self) -> str:
        return self.value


TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})
ACTIVE = frozenset({Status.RUNNING, Status.WAITING})

#: Every legal change of status. ``queued`` after a terminal status is a manual retry;
#: ``queued`` after ``running``/``waiting`` is a retry with backoff, an expired lease or a
#: job handed back by a worker that shuts down.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.QUEUED: frozenset({Status.RUNNING, Status.CANCELLED}),
    Status.RUNNING: frozenset(
        {Status.SUCCEEDED, Status.FAILED, Status.QUEUED, Status.WAITING, Status.CANCELLED}
    ),
    Status.WAITING: frozenset({Status.RUNNING, Status.QUEUED, Status.FAILED, Status.CANCELLED}),
    Status.SUCCEEDED: frozenset({Status.QUEUED}),
    Status.FAILED: frozenset({Status.QUEUED}),
    Status.CANCELLED: frozenset({Status.QUEUED}),
}


#: How many times a job may lose its worker (a lease that expired: the worker was killed, ran out
#: of memory, lost the machine) and run again, unless its task or the settings say otherwise.
CRASH_RETRIES = 2


def can_transition(source: Status, target: Status) -> bool:
    return target in TRANSITIONS[source]


def sources_of(target: Status) -> frozenset[Status]:
    """The statuses from which ``target`` may be reached (what the store puts in its WHERE)."""
    return frozenset(s for s, targets in TRANSITIONS.items() if target in targets)


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    id: str
    queue: str
    task: str
    args: dict[str, Any]
    status: Status
    priority: int = 0
    run_at: float
    attempt: int = 0
    max_attempts: int = 1
    #: Times the job lost its worker (its lease expired), and how many such re-runs it may have:
    #: a crash re-run does not use up ``max_attempts`` (that grows by one), this budget instead.
    crashes: int = 0
    crash_retries: int = CRASH_RETRIES
    timeout: float | None = None
    lease_until: float | None = None
    worker_id: str | None = None
    owner: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    progress: dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None
    answers: dict[str, Any] = field(default_factory=dict)
    checkpoint: Any = None
    result: Any = None
    error: dict[str, Any] | None = None
    cancel_requested: bool = False
    created_at: float
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None
    last_seq: int = 0
    batch_id: str | None = None
    limit_key: str | None = None
    idempotency_key: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    @property
    def attempts_summary(self) -> str:
        """``attempt 2 of 3 · crashes 1 of 2``: the attempts made and allowed, and the times the
        job lost its worker and may lose it and run again."""
        attempts = f"attempt {self.attempt} of {self.max_attempts}"
        return f"{attempts} · crashes {self.crashes} of {self.crash_retries}"

    def to_dict(self) -> dict[str, Any]:
        """The wire shape shared by the HTTP API and ``--json`` output."""
        return {
            "id": self.id,
            "queue": self.queue,
            "task": self.task,
            "args": self.args,
            "status": self.status.value,
            "priority": self.priority,
            "run_at": to_iso(self.run_at),
            "attempt": self.attempt,
            "max_attempts": self.max_attempts,
            "crashes": self.crashes,
            "crash_retries": self.crash_retries,
            "timeout": self.timeout,
            "lease_until": to_iso(self.lease_until),
            "worker_id": self.worker_id,
            "owner": self.owner,
            "labels": self.labels,
            "progress": self.progress,
            "prompt": self.prompt,
            "answers": self.answers,
            "checkpoint": self.checkpoint,
            "result": self.result,
            "error": self.error,
            "cancel_requested": self.cancel_requested,
            "created_at": to_iso(self.created_at),
            "updated_at": to_iso(self.updated_at),
            "started_at": to_iso(self.started_at),
            "finished_at": to_iso(self.finished_at),
            "last_seq": self.last_seq,
            "batch_id": self.batch_id,
            "limit_key": self.limit_key,
            "idempotency_key": self.idempotency_key,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Job:
        """The job from its wire shape (what :meth:`to_dict` and the HTTP API give).

        Timestamps come back with the millisecond precision of the wire.
        """
        return cls(
            id=data["id"],
            queue=data["queue"],
            task=data["task"],
            args=data["args"],
            status=Status(data["status"]),
            priority=data["priority"],
            run_at=from_iso(data["run_at"]),
            attempt=data["attempt"],
            max_attempts=data["max_attempts"],
            crashes=data.get("crashes", 0),
            crash_retries=data.get("crash_retries", CRASH_RETRIES),
            timeout=data["timeout"],
            lease_until=_optional_time(data["lease_until"]),
            worker_id=data["worker_id"],
            owner=data["owner"],
            labels=data["labels"],
            progress=data["progress"],
            prompt=data["prompt"],
            answers=data["answers"],
            checkpoint=data["checkpoint"],
            result=data["result"],
            error=data["error"],
            cancel_requested=data["cancel_requested"],
            created_at=from_iso(data["created_at"]),
            updated_at=from_iso(data["updated_at"]),
            started_at=_optional_time(data["started_at"]),
            finished_at=_optional_time(data["finished_at"]),
            last_seq=data["last_seq"],
            batch_id=data.get("batch_id"),
            limit_key=data.get("limit_key"),
            idempotency_key=data.get("idempotency_key"),
        )


def _optional_time(text: str | None) -> float | None:
    return None if text is None else from_iso(text)


_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
_id_lock = threading.Lock()
_id_last: tuple[int, int] = (0, 0)


def new_job_id() -> str:
    """A 26-character id that sorts by creation time (ULID layout, lowercase Crockford).

    48 bits of milliseconds then 80 random bits; within one millisecond of one process the
    random part is incremented, so ids made here are strictly increasing.
    """
    return new_job_ids(1)[0]


def new_job_ids(count: int) -> list[str]:
    """``count`` ids as ``new_job_id()`` makes them, strictly increasing (one clock reading)."""
    global _id_last
    millis = time.time_ns() // 1_000_000
    with _id_lock:
        last_millis, last_random = _id_last
        if millis <= last_millis:
            millis, first = last_millis, last_random + 1
        else:
            first = int.from_bytes(os.urandom(10), "big")
        _id_last = (millis, (first + count - 1) & _RANDOM_MASK)
    return _encode_run(millis, first, count)


_RANDOM_MASK = (1 << 80) - 1
#: Two Crockford characters for each 10-bit value.
_PAIRS = [_CROCKFORD[n >> 5] + _CROCKFORD[n & 31] for n in range(1024)]


def _encode_run(millis: int, first: int, count: int) -> list[str]:
    """The ids of ``count`` consecutive random parts from ``first``: only the last 4 characters
    (20 bits) change from one to the next, so the first 22 are encoded again only on a carry."""
    ids = []
    pairs = _PAIRS
    top, prefix = -1, ""
    for n in range(count):
        value = (millis << 80) | ((first + n) & _RANDOM_MASK)
        if value >> 20 != top:
            top, prefix = value >> 20, _encode(value)[:22]
        ids.append(prefix + pairs[(value >> 10) & 1023] + pairs[value & 1023])
    return ids


def _encode(value: int) -> str:
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))
