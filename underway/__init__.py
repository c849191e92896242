"""underway: durable background jobs whose progress shows live wherever people watch them."""

import logging
from typing import TYPE_CHECKING, Any

from .app import App
from .auth import Principal, StreamToken
from .batches import BatchView
from .config import Settings
from .context import Context, TaskTimeout
from .events import Event, EventType
from .exceptions import (
    BatchNotFound,
    BatchTooLarge,
    Cancelled,
    CheckpointTooLarge,
    ConfigError,
    Forbidden,
    IdempotencyConflict,
    InvalidArguments,
    InvalidTransition,
    JobNotFound,
    LeaseLost,
    ResultTooLarge,
    SchemaError,
    ServerError,
    StoreError,
    StoreGone,
    StoreUnhealthy,
    TaskNotFound,
    TooManyRequests,
    Unauthenticated,
    UnderwayError,
)
from .jobs import Job, Status
from .tasks import Task
from .worker import Worker

if TYPE_CHECKING:
    from .client import AsyncClient, BatchPage, Client

__version__ = "0.1.0"

# A library logs; the program decides where to (without this, warnings of tasks would reach
# stderr through logging's last-resort handler in programs that configured nothing).
logging.getLogger("underway").addHandler(logging.NullHandler())

__all__ = [
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


_CLIENT_NAMES = frozenset({"AsyncClient", "BatchPage", "Client"})


def __getattr__(name: str) -> Any:
    """The client's names are imported on first use: workers need no httpx."""
    if name in _CLIENT_NAMES:
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'underway' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
