"""Event types, their data shapes and their JSON encoding (pure).

Every change a client can see is an event ``{seq, job_id, type, at, data}``; ``seq`` is
numbered per job from 1 without gaps by the store, in the transaction that changes the job.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .jobs import Status
from .timefmt import from_iso, to_iso


class EventType(str, Enum):
    STATUS = "status"
    PROGRESS = "progress"
    LOG = "log"
    PROMPT = "prompt"
    ANSWER = "answer"

    def __str__(self) -> str:
        return self.value


LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    job_id: str
    seq: int
    type: EventType
    at: float
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "job_id": self.job_id,
            "type": self.type.value,
            "at": to_iso(self.at),
            "data": self.data,
        }

    def to_json(self) -> str:
        return dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        """The event from its wire shape (what :meth:`to_dict` and the HTTP API give)."""
        return cls(
            job_id=data["job_id"],
            seq=data["seq"],
            type=EventType(data["type"]),
            at=from_iso(data["at"]),
            data=data["data"],
        )

    @property
    def status(self) -> Status | None:
        """The status this event moved the job to, for ``status`` events."""
        if self.type is EventType.STATUS:
            return Status(self.data["status"])
        return None

    @property
    def ends_job(self) -> bool:
        status = self.status
        return status is not None and status.terminal


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event about to be appended: the store gives it its ``seq`` and ``at``."""

    type: EventType
    data: dict[str, Any]


def dumps(value: Any) -> str:
    """Compact JSON, the one encoding used in the store and on the wire.

    NaN and infinities are refused (``ValueError``): browsers and strict parsers reject them.
    """
    return _ENCODER.encode(value)


def _fallback(value: Any) -> Any:
    from pydantic_core import to_jsonable_python

    return to_jsonable_python(value)


# One encoder for every call: ``json.dumps`` with options builds a new one each time.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_fallback)


def status_event(
    status: Status,
    attempt: int,
    *,
    result: Any = None,
    error: dict[str, Any] | None = None,
    cancel_requested: bool = False,
    run_at: float | None = None,
    reason: str | None = None,
) -> NewEvent:
    data: dict[str, Any] = {"status": status.value, "attempt": attempt}
    if status is Status.SUCCEEDED:
        data["result"] = result
    if error is not None:
        data["error"] = error
    if cancel_requested:
        data["cancel_requested"] = True
    if run_at is not None:
        data["run_at"] = to_iso(run_at)
    if reason is not None:
        data["reason"] = reason
    return NewEvent(EventType.STATUS, data)


def log_event(level: str, message: str, fields: dict[str, Any] | None = None) -> NewEvent:
    if level not in LOG_LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, not {level!r}")
    data: dict[str, Any] = {"level": level, "message": message}
    if fields:
        data["fields"] = fields
    return NewEvent(EventType.LOG, data)


def prompt_event(prompt: dict[str, Any]) -> NewEvent:
    return NewEvent(EventType.PROMPT, prompt)


def answer_event(key: str, value: Any) -> NewEvent:
    return NewEvent(EventType.ANSWER, {"key": key, "value": value})


def error_info(exc: BaseException, *, with_traceback: bool = True) -> dict[str, Any]:
    """``{type, message, traceback?}`` for an exception raised by a task."""
    import traceback

    info: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
    if with_traceback and exc.__traceback__ is not None:
        info["traceback"] = "".join(traceback.format_exception(exc)).rstrip()
    return info
