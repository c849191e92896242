"""Where the commands of the command line find jobs, batches and queues: in the store, through an
:class:`~underway.App` (``--url``: :class:`LocalJobs`), or through a running server (``--server``:
:class:`ServerJobs`). Both answer in the HTTP API's shapes, so every command prints the same
whichever way it went.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .batches import BatchView
from .events import Event
from .exports import WRITERS
from .jobs import Job

if TYPE_CHECKING:
    from .app import App
    from .client import AsyncClient, ExportFormat

#: The largest pages the HTTP API gives.
JOBS_PAGE = 500
EVENTS_PAGE = 10_000
BATCHES_PAGE = 500

Json = dict[str, Any]


class JobSource(Protocol):
    """What the commands need: :class:`LocalJobs` has it (the store, ``--url``), and so has
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
        idempotency_key: str | None = None,
    ) -> Job: ...
    async def get(self, job_id: str) -> Job: ...
    async def list_jobs(
        self,
        *,
        status: Sequence[str],
        queue: str | None,
        task: str | None,
        owner: str | None = None,
        limit: int,
    ) -> list[Job]: ...
    async def events(self, job_id: str, *, limit: int) -> list[Event]: ...
    def watch(self, job_id: str, *, after: int = 0) -> AsyncIterator[Event]: ...
    async def cancel(self, job_id: str) -> Job: ...
    async def cancel_all(
        self, *, queue: str | None, batch: str | None = None, label: tuple[str, str] | None = None
    ) -> int: ...
    async def answer(self, job_id: str, value: Any, key: str | None) -> Job: ...
    async def retry(self, job_id: str) -> Job: ...

    # batches
    async def submit_batch(
        self,
        task: str,
        items: list[dict[str, Any]],
        *,
        name: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        delay: float | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        labels: dict[str, str] | None = None,
    ) -> BatchView: ...
    async def batch(self, batch_id: str) -> BatchView: ...
    async def list_batches(self, *, owner: str | None = None, limit: int) -> list[BatchView]: ...
    async def cancel_batch(self, batch_id: str) -> BatchView: ...
    async def pause_batch(self, batch_id: str) -> BatchView: ...
    async def resume_batch(self, batch_id: str) -> BatchView: ...
    async def retry_failed(self, batch_id: str) -> int: ...
    def export(self, batch_id: str, format: ExportFormat) -> AsyncIterator[str]: ...

    # queues
    async def queues(self) -> list[Json]: ...
    async def pause_queue(self, name: str) -> Json: ...
    async def resume_queue(self, name: str) -> Json: ...
    async def limit_queue(self, name: str, concurrency: int | None) -> Json: ...


class LocalJobs:
    """The :class:`JobSource` of the store: the App's calls, batches and queues as the API shows them."""

    def __init__(self, app: App) -> None:
        self.app = app
        # the calls that are the App's own
        self.submit = app.submit
        self.get = app.get
        self.list_jobs = app.list_jobs
        self.events = app.events
        self.watch = app.watch
        self.cancel = app.cancel
        self.cancel_all = app.cancel_all
        self.answer = app.answer
        self.retry = app.retry
        self.batch = app.batch_view
        self.retry_failed = app.retry_failed

    async def submit_batch(self, task: str, items: list[dict[str, Any]], **options: Any) -> BatchView:
        return BatchView.of(await self.app.submit_batch(task, items, **options))

    async def list_batches(self, *, owner: str | None = None, limit: int) -> list[BatchView]:
        return [BatchView.of(batch) for batch in await self.app.list_batches(limit=limit, owner=owner)]

    async def cancel_batch(self, batch_id: str) -> BatchView:
        await self.app.cancel_batch(batch_id)
        return await self.app.batch_view(batch_id)

    async def pause_batch(self, batch_id: str) -> BatchView:
        await self.app.pause_batch(batch_id)
        return await self.app.batch_view(batch_id)

    async def resume_batch(self, batch_id: str) -> BatchView:
        await self.app.resume_batch(batch_id)
        return await self.app.batch_view(batch_id)

    async def export(self, batch_id: str, format: ExportFormat) -> AsyncIterator[str]:
        """The text the server's ``/batches/{id}/results`` sends, written by the same code."""
        await self.app.get_batch(batch_id)  # BatchNotFound before anything is written
        async for chunk in WRITERS[format](self.app.batch_results(batch_id)):
            yield chunk

    async def queues(self) -> list[Json]:
        return await self.app.queue_records()

    async def pause_queue(self, name: str) -> Json:
        await self.app.pause_queue(name)
        return await self.app.queue_record(name)

    async def resume_queue(self, name: str) -> Json:
        await self.app.resume_queue(name)
        return await self.app.queue_record(name)

    async def limit_queue(self, name: str, concurrency: int | None) -> Json:
        await self.app.limit_queue(name, concurrency)
        return await self.app.queue_record(name)


class ServerJobs:
    """The :class:`JobSource` of ``--server``: the AsyncClient, paging where the App need not."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        # the calls that are the same as the App's
        self.submit = client.submit
        self.get = client.get
        self.watch = client.watch
        self.cancel = client.cancel
        self.answer = client.answer
        self.retry = client.retry
        self.submit_batch = client.submit_batch
        self.batch = client.get_batch
        self.cancel_batch = client.cancel_batch
        self.pause_batch = client.pause_batch
        self.resume_batch = client.resume_batch
        self.retry_failed = client.retry_failed
        self.export = client.export
        self.queues = client.queues
        self.pause_queue = client.pause_queue
        self.resume_queue = client.resume_queue
        self.limit_queue = client.limit_queue

    async def cancel_all(
        self, *, queue: str | None, batch: str | None = None, label: tuple[str, str] | None = None
    ) -> int:
        return await self.client.cancel_all(
            queue=queue, batch=batch, label=None if label is None else ":".join(label)
        )

    async def list_jobs(
        self,
        *,
        status: Sequence[str],
        queue: str | None,
        task: str | None,
        owner: str | None = None,
        limit: int,
    ) -> list[Job]:
        found: list[Job] = []
        cursor = None
        while len(found) < limit:
            size = min(limit - len(found), JOBS_PAGE)
            page = await self.client.list(
                status=status, queue=queue, task=task, owner=owner, limit=size, cursor=cursor
            )
            found += page.jobs
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        return found

    async def list_batches(self, *, owner: str | None = None, limit: int) -> list[BatchView]:
        found: list[BatchView] = []
        cursor = None
        while len(found) < limit:
            size = min(limit - len(found), BATCHES_PAGE)
            page = await self.client.list_batches(owner=owner, limit=size, cursor=cursor)
            found += page.batches
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
