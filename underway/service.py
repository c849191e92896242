"""What the HTTP API, its streams and the WebSocket may do, for one principal.

Every route, stream and socket of :mod:`underway.web` calls a :class:`Service` made for the
principal of its request, and nothing else: ownership is applied here, once. Another owner's
job or batch is not found (404, never 403: its existence is not revealed); lists, counts and
streams leave it out; operations that are not the principal's to do at all (queue controls for a
user, anything but reading, cancelling and answering for a stream token) are ``Forbidden``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from .auth import DEFAULT_TOKEN_TTL, Grant, Principal, StreamToken, check_owner
from .batches import BatchView
from .events import Event, dumps
from .exceptions import BatchNotFound, Forbidden, InvalidArguments, JobNotFound
from .jobs import Job, Status
from .store import Batch, JobFilter, QueueInfo, WorkerInfo
from .tasks import SubmitOptions

if TYPE_CHECKING:
    from .app import App
    from .bus import Bus
    from .store import Finished


class Service:
    """``app``'s operations as ``principal`` may do them."""

    __slots__ = ("app", "principal")

    def __init__(self, app: App, principal: Principal) -> None:
        self.app = app
        self.principal = principal

    def require(self, action: str) -> None:
        """``Forbidden`` unless the principal may ``action`` (see :meth:`Principal.may`)."""
        if not self.principal.may(action):
            if self.principal.grant is not None:
                raise Forbidden("a stream token allows reading, cancel and answer only: use an API key")
            raise Forbidden("this needs an admin: ask one, or use an admin key")

    def visible(self, job: Job) -> bool:
        return self.principal.may_see(job.owner, job.id, job.batch_id)

    # -- jobs ----------------------------------------------------------------------------------

    async def submit(self, task: str, args: dict[str, Any], options: SubmitOptions) -> Job:
        self.require("write")
        self._check_json(args, "the arguments")
        return await self.app.submit(task, args, options=self._owned(options))

    async def get(self, job_id: str) -> Job:
        """The job, if the principal may see it; ``JobNotFound`` otherwise (as for no job)."""
        self.require("read")
        job = await self.app.get(job_id)
        if not self.visible(job):
            raise JobNotFound(job_id)
        return job

    async def find(self, job_id: str) -> Job | None:
        """The job if it exists and is visible, else ``None``."""
        try:
            return await self.get(job_id)
        except JobNotFound:
            return None

    async def list_jobs(
        self, job_filter: JobFilter, *, limit: int = 50, before: str | None = None
    ) -> list[Job]:
        scoped = self.scoped(job_filter)
        return [] if scoped is None else await self.app.find_jobs(scoped, limit=limit, before=before)

    def scoped(self, job_filter: JobFilter) -> JobFilter | None:
        """``job_filter`` limited to what the principal may see; ``None`` if that is nothing."""
        self.require("read")
        principal = self.principal
        if job_filter.owner is not None and not principal.is_admin and job_filter.owner != principal.owner:
            raise Forbidden("only an admin may list the jobs of another owner")
        owner = job_filter.owner if principal.is_admin else principal.owner
        scoped = dataclasses.replace(job_filter, owner=owner)
        grant = principal.grant
        if grant is None or (grant.job is None and grant.batch is None):
            return scoped
        if grant.job is not None:
            if job_filter.ids and grant.job not in job_filter.ids:
                return None
            return dataclasses.replace(scoped, ids=(grant.job,))
        if job_filter.batch_id is not None and job_filter.batch_id != grant.batch:
            return None
        return dataclasses.replace(scoped, batch_id=grant.batch)

    async def events(
        self, job_id: str, *, after: int = 0, limit: int = 1000, types: Sequence[str] = ()
    ) -> tuple[list[Event], Job]:
        """Events of a visible job after ``after``, and the job read after them (its status is
        at least as new as they are)."""
        self.require("read")
        events = await self.app.events(job_id, after=after, limit=limit, types=types)
        return events, await self.get(job_id)

    async def more_events(
        self, job_id: str, *, after: int = 0, limit: int = 1000, types: Sequence[str] = ()
    ) -> list[Event]:
        """Events of a job already found visible (by :meth:`get` or :meth:`events`)."""
        return await self.app.events(job_id, after=after, limit=limit, types=types)

    async def watch(self, job_id: str, *, after: int = 0) -> AsyncIterator[Event]:
        await self.get(job_id)
        async for event in self.app.watch(job_id, after=after):
            yield event

    def bus(self) -> Bus:
        return self.app.bus()

    async def cancel(self, job_id: str) -> Job:
        self.require("cancel")
        await self.get(job_id)
        return await self.app.cancel(job_id)

    async def cancel_all(self, job_filter: JobFilter) -> int:
        self.require("cancel")
        scoped = self.scoped(job_filter)
        return 0 if scoped is None else await self.app.cancel_matching(scoped)

    async def retry_all(self, job_filter: JobFilter) -> int:
        """Run every finished job of the principal's that matches again (see
        :meth:`App.retry_matching`): a write, so not with a stream token."""
        self.require("write")
        scoped = self.scoped(job_filter)
        return 0 if scoped is None else await self.app.retry_matching(scoped)

    async def answer(self, job_id: str, value: Any, key: str | None = None) -> Job:
        self.require("answer")
        self._check_json(value, "the answer")
        await self.get(job_id)
        return await self.app.answer(job_id, value, key)

    async def retry(self, job_id: str) -> Job:
        self.require("write")
        await self.get(job_id)
        return await self.app.retry(job_id)

    async def delete(self, job_id: str) -> None:
        self.require("write")
        await self.get(job_id)
        await self.app.delete(job_id)

    # -- batches -------------------------------------------------------------------------------

    async def submit_batch(
        self, task: str, items: Sequence[dict[str, Any]], *, name: str | None, options: SubmitOptions
    ) -> Batch:
        self.require("write")
        for index, item in enumerate(items):
            self._check_json(item, f"the arguments of item {index}")
        return await self.app.submit_batch(task, items, name=name, options=self._owned(options))

    async def get_batch(self, batch_id: str) -> Batch:
        self.require("read")
        batch = await self.app.get_batch(batch_id)
        if not self.principal.may_see(batch.owner, None, batch.id):
            raise BatchNotFound(batch_id)
        return batch

    async def list_batches(
        self, *, limit: int = 50, before: str | None = None, owner: str | None = None
    ) -> list[Batch]:
        self.require("read")
        principal = self.principal
        if owner is not None and not principal.is_admin and owner != principal.owner:
            raise Forbidden("only an admin may list the batches of another owner")
        grant = principal.grant
        if grant is not None and grant.job is not None:
            return []
        if grant is not None and grant.batch is not None:
            return [await self.get_batch(grant.batch)] if before is None else []
        return await self.app.list_batches(
            limit=limit, before=before, owner=owner if principal.is_admin else principal.owner
        )

    async def batch_view(self, batch_id: str) -> BatchView:
        await self.get_batch(batch_id)
        return await self.app.batch_view(batch_id)

    async def batch_items(
        self, batch_id: str, *, status: Sequence[Status] = (), limit: int = 50, before: str | None = None
    ) -> list[Job]:
        await self.get_batch(batch_id)
        return await self.app.batch_items(batch_id, status=status, limit=limit, before=before)

    async def batch_results(self, batch_id: str, *, page: int = 500) -> AsyncIterator[Job]:
        """Every item of a batch, in submission order (check :meth:`get_batch` first)."""
        await self.get_batch(batch_id)
        async for job in self.app.batch_results(batch_id, page=page):
            yield job

    async def cancel_batch(self, batch_id: str) -> Batch:
        self.require("write")
        await self.get_batch(batch_id)
        return await self.app.cancel_batch(batch_id)

    async def pause_batch(self, batch_id: str, paused: bool = True) -> Batch:
        self.require("write")
        await self.get_batch(batch_id)
        return await (self.app.pause_batch(batch_id) if paused else self.app.resume_batch(batch_id))

    async def retry_failed(self, batch_id: str) -> int:
        self.require("write")
        await self.get_batch(batch_id)
        return await self.app.retry_failed(batch_id)

    # -- queues, workers, service --------------------------------------------------------------

    async def queue_records(self) -> list[dict[str, Any]]:
        """Every queue as ``GET /queues`` shows it; a user's counts are of its own jobs only (not
        for a stream token: counts go beyond what it names)."""
        self.require("write")
        return await self.app.queue_records(owner=self.principal.owner_filter)

    async def queue_record(self, name: str) -> dict[str, Any]:
        self.require("admin")
        return await self.app.queue_record(name)

    async def pause_queue(self, name: str, paused: bool = True) -> QueueInfo:
        self.require("admin")
        return await (self.app.pause_queue(name) if paused else self.app.resume_queue(name))

    async def limit_queue(self, name: str, concurrency: int | None) -> QueueInfo:
        self.require("admin")
        return await self.app.limit_queue(name, concurrency)

    async def workers(self, seen_within: float) -> list[WorkerInfo]:
        self.require("admin")
        return await self.app.workers(seen_within)

    async def job_counts(self) -> dict[str, dict[str, int]]:
        """``{queue: {status: count}}`` of every job (metrics: admins)."""
        self.require("admin")
        return await self.app.job_counts()

    async def finished_since(self, since: float) -> list[Finished]:
        self.require("admin")
        return await self.app.finished_since(since)

    async def stats(self, window: float, owner: str | None = None) -> dict[str, Any]:
        """``GET /stats``: of the principal's jobs (an admin: all, or ``owner``'s); not for a
        stream token, as for :meth:`queue_records`."""
        self.require("write")
        principal = self.principal
        if owner is not None and not principal.is_admin and owner != principal.owner:
            raise Forbidden("only an admin may see the stats of another owner")
        return await self.app.stats(window, owner=owner if principal.is_admin else principal.owner)

    def tasks(self) -> list[dict[str, Any]]:
        self.require("read")
        return [task.describe() for _, task in sorted(self.app.tasks.items())]

    # -- tokens --------------------------------------------------------------------------------

    async def stream_token(
        self,
        *,
        job: str | None = None,
        batch: str | None = None,
        ttl: float = DEFAULT_TOKEN_TTL,
        owner: str | None = None,
    ) -> StreamToken:
        """A token for a browser's streams: the job or batch named (which must be visible to
        the token's principal), or all of its jobs. An admin may mint one for ``owner``."""
        principal = self.principal
        if principal.grant is not None:
            raise Forbidden("a stream token cannot make tokens: use an API key")
        if job is not None and batch is not None:
            raise InvalidArguments("name a job or a batch, not both (or neither: {} for all your jobs)")
        if owner is not None and owner != principal.owner:
            self.require("admin")
            principal = Principal(owner=_checked_owner(owner), role="user")
        holder = Service(self.app, principal)
        if job is not None:
            await holder.get(job)
        if batch is not None:
            await holder.get_batch(batch)
        return await self.app.accounts.token(principal, Grant(job=job, batch=batch), ttl)

    def _check_json(self, value: Any, what: str) -> None:
        """``InvalidArguments`` if ``value`` nests deeper than ``max_json_depth`` or its JSON is
        larger than ``max_args_size`` bytes."""
        settings = self.app.settings
        depth = json_depth(value)
        if depth > settings.max_json_depth:
            raise InvalidArguments(
                f"{what} nest {depth} levels deep, more than the {settings.max_json_depth} allowed"
                " (max_json_depth)",
                details={"limit": settings.max_json_depth},
            )
        size = len(dumps(value).encode())
        if size > settings.max_args_size:
            raise InvalidArguments(
                f"{what} take {size} bytes of JSON, more than the {settings.max_args_size} allowed"
                " (max_args_size): pass a reference to the data instead",
                details={"limit": settings.max_args_size},
            )

    def _owned(self, options: SubmitOptions) -> SubmitOptions:
        """``options`` with the owner to record: the principal's, or one an admin names."""
        principal = self.principal
        if options.owner is not None and options.owner != principal.owner:
            self.require("admin")
            _checked_owner(options.owner)
            return options
        return dataclasses.replace(options, owner=principal.stored_owner)


def _checked_owner(owner: str) -> str:
    try:
        return check_owner(owner)
    except ValueError as exc:
        raise InvalidArguments(str(exc), details={"owner": owner}) from None


def json_depth(value: Any) -> int:
    """How deep ``value`` (parsed JSON) nests: 0 for a scalar, 1 for ``[]`` or ``{"a": 1}``.
    Walked without recursion, so any depth can be measured."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth + 1)
            pending.extend((child, depth + 1) for child in item if isinstance(child, dict | list))
    return deepest


__all__ = ["JobFilter", "Service", "json_depth"]
