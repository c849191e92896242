"""The asynchronous client: :class:`AsyncClient`, over ``httpx.AsyncClient``."""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import AsyncGenerator, Generator, Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import anyio
import httpx
from httpx_sse import EventSource, aconnect_sse

from ..auth import StreamToken
from ..batches import BatchView
from ..events import Event, EventType
from ..jobs import Job, Status
from ._base import (
    BATCH_POLL_INTERVAL,
    DEFAULT_BASE_URL,
    RECONNECT_TIMEOUT,
    STREAM_ERRORS,
    BaseClient,
    BatchPage,
    Call,
    EventPage,
    ExportFormat,
    JobPage,
    Json,
    Stream,
    request_headers,
)

T = TypeVar("T")


class AsyncClient(BaseClient):
    """The asynchronous twin of :class:`Client` (one ``httpx.AsyncClient``): the same methods,
    to be awaited, and ``watch()`` is an async iterator. Use it as an async context manager,
    or call :meth:`aclose`.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, timeout=timeout)
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=request_headers(api_key, headers),
            timeout=timeout,
            transport=transport,
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: Call[T]) -> T:
        try:
            response = await self._http.request(
                call.method,
                call.path,
                params=call.params,
                json=call.body,
                timeout=self._request_timeout(call),
            )
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        return self._read(call, response)

    async def submit(
        self,
        task: str,
        args: Mapping[str, Any] | None = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        delay: float | None = None,
        run_at: float | datetime | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        labels: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        owner: str | None = None,
    ) -> Job:
        """Queue a job of ``task``: see :meth:`Client.submit`."""
        return await self._send(
            self._submit_call(
                task,
                args,
                queue=queue,
                priority=priority,
                delay=delay,
                run_at=run_at,
                max_attempts=max_attempts,
                timeout=timeout,
                labels=labels,
                idempotency_key=idempotency_key,
                owner=owner,
            )
        )

    async def get(self, job_id: str) -> Job:
        return await self._send(self._get_call(job_id))

    async def list(
        self,
        *,
        status: Status | str | Iterable[Status | str] | None = None,
        queue: str | None = None,
        task: str | None = None,
        label: str | None = None,
        owner: str | None = None,
        batch: str | None = None,
        q: str | None = None,
        ids: Iterable[str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        """One page of jobs, newest first: see :meth:`Client.list`."""
        call = self._list_call(
            status=status,
            queue=queue,
            task=task,
            label=label,
            owner=owner,
            batch=batch,
            q=q,
            ids=ids,
            limit=limit,
            cursor=cursor,
        )
        return await self._send(call)

    async def events(
        self,
        job_id: str,
        after: int = 0,
        wait: float = 0,
        types: Iterable[EventType | str] = (),
        *,
        limit: int = 1000,
    ) -> EventPage:
        """The job's events after ``after``, long-polled with ``wait``: see :meth:`Client.events`."""
        return await self._send(self._events_call(job_id, after=after, wait=wait, types=types, limit=limit))

    async def cancel(self, job_id: str) -> Job:
        return await self._send(self._change_call(job_id, "cancel"))

    async def cancel_all(
        self,
        *,
        queue: str | None = None,
        task: str | None = None,
        status: Iterable[Status | str] = (),
        batch: str | None = None,
        label: str | None = None,
        owner: str | None = None,
        q: str | None = None,
        ids: Iterable[str] | None = None,
    ) -> int:
        """Cancel every unfinished job that matches: see :meth:`Client.cancel_all`."""
        call = self._change_all_call(
            "cancel",
            queue=queue,
            task=task,
            status=status,
            batch=batch,
            label=label,
            owner=owner,
            q=q,
            ids=ids,
        )
        return await self._send(call)

    async def retry_all(
        self,
        *,
        status: Iterable[Status | str] = (),
        queue: str | None = None,
        task: str | None = None,
        batch: str | None = None,
        label: str | None = None,
        owner: str | None = None,
        q: str | None = None,
        ids: Iterable[str] | None = None,
    ) -> int:
        """Run every finished job that matches again: see :meth:`Client.retry_all`."""
        call = self._change_all_call(
            "retry",
            queue=queue,
            task=task,
            status=status,
            batch=batch,
            label=label,
            owner=owner,
            q=q,
            ids=ids,
        )
        return await self._send(call)

    async def retry(self, job_id: str) -> Job:
        return await self._send(self._change_call(job_id, "retry"))

    async def answer(self, job_id: str, value: Any, key: str | None = None) -> Job:
        return await self._send(self._answer_call(job_id, value, key))

    async def delete(self, job_id: str) -> None:
        await self._send(self._delete_call(job_id))

    async def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Wait until the job ends and return it: see :meth:`Client.wait`."""
        return await self._run(self._wait_plan(job_id, timeout))

    async def _run(self, plan: Generator[Call[Any] | float, Any, T]) -> T:
        """Drive a plan: send its calls, sleep its pauses."""
        answer: Any = None
        while True:
            try:
                step = plan.send(answer)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            if isinstance(step, Call):
                answer = await self._send(step)
            else:
                await anyio.sleep(step)
                answer = None

    # -- batches -------------------------------------------------------------------------------

    async def submit_batch(
        self,
        task: str,
        items: Iterable[Mapping[str, Any]],
        *,
        name: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        delay: float | None = None,
        run_at: float | datetime | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        labels: Mapping[str, str] | None = None,
        owner: str | None = None,
    ) -> BatchView:
        """Queue one job of ``task`` per item: see :meth:`Client.submit_batch`."""
        call = self._submit_batch_call(
            task,
            items,
            name=name,
            queue=queue,
            priority=priority,
            delay=delay,
            run_at=run_at,
            max_attempts=max_attempts,
            timeout=timeout,
            labels=labels,
            owner=owner,
        )
        return await self._send(call)

    async def get_batch(self, batch_id: str) -> BatchView:
        return await self._send(self._batch_call(batch_id))

    async def list_batches(
        self, *, owner: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> BatchPage:
        return await self._send(self._list_batches_call(limit=limit, cursor=cursor, owner=owner))

    async def batch_items(
        self,
        batch_id: str,
        *,
        status: Status | str | Iterable[Status | str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        return await self._send(self._batch_items_call(batch_id, status=status, limit=limit, cursor=cursor))

    async def cancel_batch(self, batch_id: str) -> BatchView:
        return await self._send(self._batch_call(batch_id, "cancel"))

    async def pause_batch(self, batch_id: str) -> BatchView:
        return await self._send(self._batch_call(batch_id, "pause"))

    async def resume_batch(self, batch_id: str) -> BatchView:
        return await self._send(self._batch_call(batch_id, "resume"))

    async def retry_failed(self, batch_id: str) -> int:
        return await self._send(self._retry_failed_call(batch_id))

    async def wait_batch(
        self, batch_id: str, timeout: float | None = None, *, interval: float = BATCH_POLL_INTERVAL
    ) -> BatchView:
        """Wait until every item of the batch has ended: see :meth:`Client.wait_batch`."""
        return await self._run(self._wait_batch_plan(batch_id, timeout, interval))

    async def export(self, batch_id: str, format: ExportFormat = "json") -> AsyncGenerator[str, None]:
        """The batch's items as text chunks, streamed: see :meth:`Client.export`.

        To stop early, close it: ``async with contextlib.aclosing(client.export(id)) as chunks:``.
        """
        call = self._export_call(batch_id, format)
        try:
            async with self._http.stream(
                call.method, call.path, params=call.params, timeout=self._request_timeout(call)
            ) as response:
                if not response.is_success:
                    await response.aread()
                    raise self.error_for(response, None)
                async for chunk in response.aiter_text():
                    yield chunk
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc

    # -- queues and the service ----------------------------------------------------------------

    async def queues(self) -> builtins.list[Json]:
        return await self._send(self._service_call("/queues", "queues"))

    async def pause_queue(self, name: str) -> Json:
        return await self._send(self._queue_call(name, "pause"))

    async def resume_queue(self, name: str) -> Json:
        return await self._send(self._queue_call(name, "resume"))

    async def limit_queue(self, name: str, concurrency: int | None) -> Json:
        return await self._send(self._queue_call(name, "limit", concurrency))

    async def tasks(self) -> builtins.list[Json]:
        return await self._send(self._service_call("/tasks", "tasks"))

    async def workers(self) -> builtins.list[Json]:
        return await self._send(self._service_call("/workers", "workers"))

    async def stats(self, window: float | str = 3600, owner: str | None = None) -> Json:
        return await self._send(self._stats_call(window, owner))

    async def me(self) -> Json:
        return await self._send(self._me_call())

    async def health(self) -> Json:
        return await self._send(self._health_call())

    async def stream_token(
        self,
        job: str | None = None,
        batch: str | None = None,
        ttl: float | None = None,
        owner: str | None = None,
    ) -> StreamToken:
        """A short-lived token for a browser's streams: see :meth:`Client.stream_token`."""
        return await self._send(self._stream_token_call(job=job, batch=batch, ttl=ttl, owner=owner))

    async def watch(
        self, job_id: str, after: int = 0, *, reconnect_timeout: float = RECONNECT_TIMEOUT
    ) -> AsyncGenerator[Event, None]:
        """The job's events as they happen, reconnecting by itself: see :meth:`Client.watch`.

        To stop early, close it: ``async with contextlib.aclosing(client.watch(id)) as events:``.
        """
        stream = self._stream(job_id, after, reconnect_timeout)
        while not stream.done:
            try:
                async with (
                    aconnect_sse(
                        self._http,
                        "GET",
                        stream.path,
                        headers=stream.headers(),
                        timeout=self._stream_timeout(),
                    ) as source,
                    contextlib.aclosing(self._follow(source, stream)) as events,
                ):
                    async for event in events:
                        yield event
                if not stream.done:
                    await anyio.sleep(stream.lost("the server closed the stream"))
            except STREAM_ERRORS as exc:
                await anyio.sleep(stream.lost(exc))

    async def _follow(self, source: EventSource, stream: Stream) -> AsyncGenerator[Event, None]:
        if source.response.status_code != 200:
            await source.response.aread()
        if not stream.opened(source.response):
            return
        async with contextlib.aclosing(source.aiter_sse()) as messages:
            async for sse in messages:
                event = stream.accept(sse)
                if event is not None:
                    yield event
                if stream.done:
                    return
