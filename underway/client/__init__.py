"""The Python client of underway's HTTP API: :class:`Client` (blocking) and :class:`AsyncClient`.

::

    with underway.Client("http://127.0.0.1:8000/api") as client:
        job = client.submit("scrape", {"keyword": "rust", "source": "hn"})
        for event in client.watch(job.id):  # reconnects and resumes by itself
            print(event.seq, event.type, event.data)

The twins share every piece that does no I/O (``_base``: each request as a ``Call`` and how
to read its answer, ``wait()`` as a plan of calls, the state of a ``watch()``); they differ only
in how they send (``httpx.Client`` / ``httpx.AsyncClient``) and sleep.

With ``api_key=`` (or the ``UNDERWAY_API_KEY`` variable) every request, streams too, carries
``Authorization: Bearer <key>``.

Errors come back as underway's own exceptions: 401 → :class:`~underway.Unauthenticated`, 403 →
:class:`~underway.Forbidden`, 404 → :class:`~underway.JobNotFound` or
:class:`~underway.BatchNotFound`, 409 → :class:`~underway.InvalidTransition` or
:class:`~underway.IdempotencyConflict`, 413 ``batch_too_large`` → :class:`~underway.BatchTooLarge`,
422 → :class:`~underway.TaskNotFound` or :class:`~underway.InvalidArguments`, 429 →
:class:`~underway.TooManyRequests` (``retry_after`` from its header); anything else, and a server
that cannot be reached, → :class:`~underway.ServerError` (with ``status`` and ``code``).
"""

from ._async import AsyncClient
from ._base import (
    API_KEY_VARIABLE,
    DEFAULT_BASE_URL,
    BatchPage,
    EventPage,
    ExportFormat,
    JobPage,
    exception_for,
)
from ._sync import Client

__all__ = [
    "API_KEY_VARIABLE",
    "DEFAULT_BASE_URL",
    "AsyncClient",
    "BatchPage",
    "Client",
    "EventPage",
    "ExportFormat",
    "JobPage",
    "exception_for",
]
