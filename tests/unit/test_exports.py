"""The public API is what ``underway.__all__`` names, sorted, and every name resolves."""

from __future__ import annotations

import underway

PUBLIC = [
    "App",
    "AsyncClient",
    "BatchNotFound",
    "BatchPage",
    "BatchTooLarge",
    "BatchView",
    "Cancelled",
    "CheckpointTooLarge",
    "Client",
    "ConfigError",
    "Context",
    "Event",
    "EventType",
    "Forbidden",
    "IdempotencyConflict",
    "InvalidArguments",
    "InvalidTransition",
    "Job",
    "JobNotFound",
    "LeaseLost",
    "Principal",
    "ResultTooLarge",
    "SchemaError",
    "ServerError",
    "Settings",
    "Status",
    "StoreError",
    "StoreGone",
    "StoreUnhealthy",
    "StreamToken",
    "Task",
    "TaskNotFound",
    "TaskTimeout",
    "TooManyRequests",
    "Unauthenticated",
    "UnderwayError",
    "Worker",
    "__version__",
]


def test_the_public_names_are_pinned_and_sorted() -> None:
    assert underway.__all__ == PUBLIC
    assert underway.__all__ == sorted(underway.__all__, key=lambda n: (n.startswith("_"), n))


def test_every_public_name_resolves() -> None:
    for name in underway.__all__:
        assert getattr(underway, name) is not None
