"""Stores, chosen by the scheme of the URL."""

from __future__ import annotations

from ..exceptions import ConfigError
from .base import (
    BATCH_STATUSES,
    UNSET,
    ApiKey,
    Batch,
    Finished,
    Heartbeat,
    JobFilter,
    Lease,
    NewBatch,
    NewJob,
    QueueInfo,
    Store,
    SweepResult,
    WorkerInfo,
    WorkerWrite,
)

__all__ = [
    "BATCH_STATUSES",
    "UNSET",
    "ApiKey",
    "Batch",
    "Finished",
    "Heartbeat",
    "JobFilter",
    "Lease",
    "NewBatch",
    "NewJob",
    "QueueInfo",
    "Store",
    "SweepResult",
    "WorkerInfo",
    "WorkerWrite",
    "open_store",
]


def open_store(url: str, *, poll_interval: float = 0.001) -> Store:
    """The store for ``url`` (not yet opened: ``await store.open()``)."""
    scheme = url.split(":", 1)[0]
    if scheme == "sqlite":
        from .sqlite import SQLiteStore

        return SQLiteStore(url, poll_interval=poll_interval)
    if scheme in ("postgres", "postgresql"):
        from .postgres import PostgresStore

        return PostgresStore(url)
    raise ConfigError(
        f"unknown store URL scheme {scheme!r}: use sqlite:///path.db or postgresql://host/database"
    )
