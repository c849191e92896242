"""Bounds on what tasks and submissions put in the store, and on what lists show (pure).

Every bound is a setting (see :class:`~underway.config.Settings`): a log line is cut with a
marker; log lines past a job's cap are counted, not stored; a result or checkpoint over its
size is refused; labels and queue names are checked at submission; a list shows a large result
as ``{"truncated": true, "size": n}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .events import EventType, NewEvent, dumps
from .exceptions import CheckpointTooLarge, InvalidArguments, ResultTooLarge

#: The longest queue name, wherever a queue name enters (submissions, task declarations,
#: queue controls, the ``queues`` setting).
MAX_QUEUE_NAME = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskBounds:
    """What one running job may write: see the settings of the same names."""

    max_log_line: int = 8192
    max_log_lines: int = 10_000
    max_result_size: int = 1024 * 1024
    max_checkpoint_size: int = 256 * 1024


def json_size(text: str) -> int:
    """The size in bytes (UTF-8) of JSON text, without copying ASCII text."""
    return len(text) if text.isascii() else len(text.encode())


# -- log lines ---------------------------------------------------------------------------------


def cut_line(text: str, limit: int) -> tuple[str, int]:
    """``text`` cut to ``limit`` characters with a marker saying how much was cut, and that
    number (0: ``text`` as it was)."""
    if len(text) <= limit:
        return text, 0
    cut = len(text) - limit
    return f"{text[:limit]}… [cut {cut:,} characters]", cut


def capped_notice(cap: int) -> NewEvent:
    """The ``log`` event written when a job reaches its cap of stored log lines."""
    message = (
        f"this job reached its cap of {cap:,} stored log lines (max_log_lines): further log lines"
        " are counted, not stored"
    )
    return NewEvent(EventType.LOG, {"level": "warning", "message": message, "cap": cap})


def dropped_notice(dropped: int, cap: int) -> NewEvent:
    """The ``log`` event written when an attempt that dropped log lines ends."""
    lines = "1 log line was" if dropped == 1 else f"{dropped:,} log lines were"
    message = (
        f"{lines} counted, not stored, in this attempt: the job is past its cap of {cap:,} (max_log_lines)"
    )
    return NewEvent(EventType.LOG, {"level": "warning", "message": message, "dropped": dropped, "cap": cap})


# -- results and checkpoints ------------------------------------------------------------------


def result_too_large(size: int, limit: int) -> ResultTooLarge:
    return ResultTooLarge(
        f"the task's result takes {size:,} bytes of JSON, more than the {limit:,} allowed"
        " (max_result_size): store the data elsewhere (a file, a bucket, a table) and return a"
        " reference to it",
        details={"size": size, "limit": limit},
    )


def checked_checkpoint(value: Any, limit: int) -> str:
    """``value`` as JSON text; ``TypeError`` if it is not JSON data, ``CheckpointTooLarge`` if
    the text is larger than ``limit`` bytes."""
    try:
        text = dumps(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"a checkpoint must be JSON data: {exc}") from None
    size = json_size(text)
    if size > limit:
        raise CheckpointTooLarge(
            f"this checkpoint takes {size:,} bytes of JSON, more than the {limit:,} allowed"
            " (max_checkpoint_size): keep a small value that says where to resume (an index, an"
            " id, a reference to data stored elsewhere)",
            details={"size": size, "limit": limit},
        )
    return text


# -- lists -------------------------------------------------------------------------------------


def listed(job: Any, limit: int) -> dict[str, Any]:
    """``job.to_dict()`` as lists show it: a result larger than ``limit`` bytes of JSON is
    ``{"truncated": true, "size": n}`` (the job's own route has it whole)."""
    shown: dict[str, Any] = job.to_dict()
    result = shown["result"]
    if isinstance(result, dict | list | str):
        size = json_size(dumps(result))
        if size > limit:
            shown["result"] = {"truncated": True, "size": size}
    return shown


# -- labels and queue names ------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class LabelBounds:
    max_labels: int = 20
    max_label_key: int = 64
    max_label_value: int = 256


def check_labels(labels: Mapping[str, str] | None, bounds: LabelBounds) -> None:
    """``InvalidArguments`` naming the limit when ``labels`` has too many labels, a key or value
    too long, or text no store can keep."""
    if not labels:
        return
    if len(labels) > bounds.max_labels:
        raise InvalidArguments(
            f"{len(labels)} labels, more than the {bounds.max_labels} a job may have (max_labels)",
            details={"limit": bounds.max_labels, "labels": len(labels)},
        )
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidArguments("labels map text to text", details={"label": repr(key)})
        _check_label_text(key, "key", bounds.max_label_key, key, min_length=1)
        _check_label_text(value, "value", bounds.max_label_value, key, min_length=0)


def _check_label_text(text: str, what: str, limit: int, key: str, *, min_length: int) -> None:
    setting = f"max_label_{what}"
    if not min_length <= len(text) <= limit:
        raise InvalidArguments(
            f"a label {what} has {min_length} to {limit} characters ({setting}), not {len(text)}",
            details={"limit": limit, "label": key[:limit]},
        )
    problem = unstorable(text)
    if problem:
        raise InvalidArguments(f"a label {what} {problem}", details={"label": key[:limit]})


def check_queue_name(name: object) -> str:
    """``name`` if it is a queue name (1 to ``MAX_QUEUE_NAME`` characters of storable text),
    else ``ValueError`` saying why; the one rule for every way a queue name comes in."""
    if not isinstance(name, str):
        raise ValueError(f"a queue name is text, not {type(name).__name__}")
    if not 1 <= len(name) <= MAX_QUEUE_NAME:
        raise ValueError(f"a queue name has 1 to {MAX_QUEUE_NAME} characters, not {len(name)}")
    problem = unstorable(name)
    if problem:
        raise ValueError(f"a queue name {problem}")
    return name


def checked_queue(name: str) -> str:
    """:func:`check_queue_name` with ``InvalidArguments`` (HTTP 422) for a wrong name."""
    try:
        return check_queue_name(name)
    except ValueError as exc:
        raise InvalidArguments(str(exc), details={"queue": str(name)[:MAX_QUEUE_NAME]}) from None


def unstorable(text: str) -> str | None:
    """Why no store can keep ``text`` (a NUL character, half of a surrogate pair), or ``None``."""
    if "\x00" in text:
        return "contains a NUL character"
    try:
        text.encode()
    except UnicodeEncodeError:
        return "contains half of a surrogate pair (text that is not Unicode)"
    return None
