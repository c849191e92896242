"""The one exception tree of underway.

::

    UnderwayError
    ├── ConfigError              a setting or URL is wrong
    ├── StoreError               the store failed (driver errors are translated into this)
    │   ├── SchemaError          the database schema is newer than this code, or broken
    │   └── StoreUnhealthy       the store answers but cannot take writes (read-only, full)
    │       └── StoreGone        the SQLite file was deleted or replaced under this process
    ├── JobNotFound              no job with that id (HTTP 404)
    ├── InvalidTransition        the job is not in a state that allows this (HTTP 409)
    ├── BatchTooLarge            more items than max_batch_items (HTTP 413)
    ├── TaskNotFound             no task registered under that name (HTTP 422)
    ├── InvalidArguments         arguments do not match the task's signature (HTTP 422)
    ├── Unauthenticated          no principal, or a wrong, revoked or expired key or token (HTTP 401)
    ├── Forbidden                the principal may not do this at all (HTTP 403)
    ├── TooManyRequests          a limit per user was reached (HTTP 429, ``retry_after`` seconds)
    ├── LeaseLost                the worker no longer holds this job (fenced write refused)
    ├── ResultTooLarge           a task returned more than max_result_size (the job fails)
    ├── CheckpointTooLarge       ctx.checkpoint() was given more than max_checkpoint_size
    ├── Cancelled                raised inside a task whose job was cancelled
    └── ServerError              the client: the server could not be reached, or answered an
                                 error with no better exception (``status`` and ``code`` tell)

A :class:`~underway.Client` raises the exception the server raised where one fits (404 →
``JobNotFound``, 409 → ``InvalidTransition``, 422 → ``TaskNotFound`` / ``InvalidArguments``).
"""

from __future__ import annotations

from typing import Any


class UnderwayError(Exception):
    """Root of every error underway raises on purpose."""

    code = "error"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ConfigError(UnderwayError):
    code = "invalid_config"


class StoreError(UnderwayError):
    code = "store_error"


class SchemaError(StoreError):
    code = "schema_error"


class StoreUnhealthy(StoreError):
    """The store answers, but cannot be trusted with writes now: ``reason`` says why in a few
    words that name no path or address (``/healthz`` shows it); the message adds where and what
    to do. Its HTTP code stays ``store_error`` (503)."""

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(message or reason, details={"reason": reason})
        self.reason = reason


class StoreGone(StoreUnhealthy):
    """The SQLite file this process opened is no longer the one at its path (deleted, or
    another moved into place): its writes would reach nobody. It does not heal: the process
    must be restarted to open the file now at the path."""


class JobNotFound(UnderwayError):
    code = "job_not_found"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}", details={"id": job_id})
        self.job_id = job_id


class InvalidTransition(UnderwayError):
    code = "invalid_state"


class BatchNotFound(UnderwayError):
    code = "batch_not_found"

    def __init__(self, batch_id: str) -> None:
        super().__init__(f"no batch with id {batch_id!r}", details={"batch_id": batch_id})
        self.batch_id = batch_id


class BatchTooLarge(UnderwayError):
    """A batch with more items than ``max_batch_items`` (HTTP 413)."""

    code = "batch_too_large"


class IdempotencyConflict(UnderwayError):
    """A submission reused an idempotency key with other arguments."""

    code = "idempotency_conflict"


class TaskNotFound(UnderwayError):
    code = "unknown_task"


class InvalidArguments(UnderwayError):
    code = "invalid_arguments"


class Unauthenticated(UnderwayError):
    """No principal, or credentials that are wrong, revoked or expired (HTTP 401)."""

    code = "unauthenticated"


class Forbidden(UnderwayError):
    """The principal may not do this (HTTP 403); another owner's job is a 404 instead."""

    code = "forbidden"


class TooManyRequests(UnderwayError):
    """A user reached a limit (HTTP 429): try again after ``retry_after`` seconds."""

    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after: float, details: Any = None) -> None:
        super().__init__(message, details=details)
        self.retry_after = retry_after


class LeaseLost(UnderwayError):
    code = "lease_lost"


class ResultTooLarge(UnderwayError):
    """A task returned a result larger than ``max_result_size``: the job fails (not retried)."""

    code = "result_too_large"


class CheckpointTooLarge(UnderwayError):
    """Raised in a task by ``ctx.checkpoint()`` for a value larger than ``max_checkpoint_size``."""

    code = "checkpoint_too_large"


class Cancelled(UnderwayError):
    """Raised inside a task at a cancellation point once its job was asked to stop.

    It derives from ``UnderwayError``, not from ``BaseException``: a task that catches
    ``Exception`` may swallow it, and the worker still records the job ``cancelled``
    after ``cancel_grace``.
    """

    code = "cancelled"

    def __init__(self, message: str = "the job was cancelled") -> None:
        super().__init__(message)


class ServerError(UnderwayError):
    """The underway server could not be reached (``status`` is ``None``), or answered with an
    error that no other exception describes (``status`` and ``code`` are the HTTP status and the
    error body's code)."""

    code = "server_error"

    def __init__(
        self, message: str, *, status: int | None = None, code: str | None = None, details: Any = None
    ) -> None:
        super().__init__(message, details=details)
        self.status = status
        if code is not None:
            self.code = code
