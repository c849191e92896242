"""Where the job commands of the command line find jobs: in the store, through an
:class:`~underway.App` (``--url``), or through a running server (``--server``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .events import Event
from .jobs import Job

if TYPE_CHECKING:
    from .client import AsyncClient

#: The largest pages the HTTP API gives.
JOBS_PAGE = 500
EVENTS_PAGE = 10_000


class JobSource(Protocol):
    """What the job commands need: an :class:`App` has it (the store, ``--url``), and so has
    :class:`ServerJobs` (a running server, ``--server``)."""

    async def submit(
        self,
        task: str,
        args: dict[str, Any],
        *,
        queue: str | None = None,
        priority: int | None = None,
        delay: float | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
    ) -> Job: ...
    async def get(self, job_id: str) -> Job: ...
    async def list_jobs(
        self, *, status: Sequence[str], queue: str | None, task: str | None, limit: int
    ) -> list[Job]: ...
    async def events(self, job_id: str, *, limit: int) -> list[Event]: ...
    def watch(self, job_id: str, *, after: int = 0) -> AsyncIterator[Event]: ...
    async def cancel(self, job_id: str) -> Job: ...
    async def cancel_all(self, *, queue: str | None) -> int: ...
    async def answer(self, job_id: str, value: Any, key: str | None) -> Job: ...
    async def retry(self, job_id: str) -> Job: ...


class ServerJobs:
    """The :class:`JobSource` of ``--server``: the AsyncClient, paging where the App need not."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        # the calls that are the same as the App's
        self.submit = client.submit
        self.get = client.get
        self.watch = client.watch
        self.cancel = client.cancel
        self.cancel_all = client.cancel_all
        self.answer = client.answer
        self.retry = client.retry

    async def list_jobs(
        self, *, status: Sequence[str], queue: str | None, task: str | None, limit: int
    ) -> list[Job]:
        found: list[Job] = []
        cursor = None
        while len(found) < limit:
            page = await self.client.list(
                status=status, queue=queue, task=task, limit=min(limit - len(found), JOBS_PAGE), cursor=cursor
            )
            found += page.jobs
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        return found

    async def events(self, job_id: str, *, limit: int) -> list[Event]:
        found: list[Event] = []
        while len(found) < limit:
            after = found[-1].seq if found else 0
            page = await self.client.events(job_id, after, limit=min(limit - len(found), EVENTS_PAGE))
            if not page.events:
                break
            found += page.events
        return found
