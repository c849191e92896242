"""The blocking client: :class:`Client`, over ``httpx.Client``."""

from __future__ import annotations

import builtins
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import httpx
from httpx_sse import EventSource, connect_sse

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
    run_plan,
)

T = TypeVar("T")


class Client(BaseClient):
    """A blocking client of underway's HTTP API (one ``httpx.Client``, its connections pooled).

    ``base_url`` is where the API is served (``/api`` of ``underway server``); ``api_key`` goes
    with every request, streams too, as ``Authorization: Bearer …`` (``None``: the
    ``UNDERWAY_API_KEY`` variable, if set); ``headers`` go with every request too (an
    ``Authorization`` there wins over the key); ``timeout`` is in seconds (``None``: no timeout;
    long polls and streams get what they need on top); ``transport`` is an httpx transport
    (tests, proxies). Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, timeout=timeout)
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=request_headers(api_key, headers),
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: Call[T]) -> T:
        try:
            response = self._http.request(
                call.method,
                call.path,
                params=call.params,
                json=call.body,
                timeout=self._request_timeout(call),
            )
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        return self._read(call, response)

    def submit(
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
        """Queue a job of ``task``; the server validates ``args`` against the task's schema.

        ``run_at`` is a time (epoch seconds or a ``datetime``), ``delay`` seconds from now. A
        second submission with the same ``idempotency_key`` returns the first job (or raises
        ``IdempotencyConflict`` if its arguments differ). An admin may record another ``owner``.
        """
        return self._send(
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

    def get(self, job_id: str) -> Job:
        return self._send(self._get_call(job_id))

    def list(
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
        """One page of jobs, newest first: ``jobs, next_cursor = client.list(status="running")``.

        ``label`` is ``"key:value"``; ``owner``: only that owner's jobs (admins); ``batch``: a
        batch's; ``q``: a search, the jobs whose id starts with it or whose arguments' JSON
        contains it (ignoring the case of ASCII letters); ``ids``: only these jobs. Pass
        ``next_cursor`` back as ``cursor`` for older jobs (it is ``None`` on the last page).
        """
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
        return self._send(call)

    def events(
        self,
        job_id: str,
        after: int = 0,
        wait: float = 0,
        types: Iterable[EventType | str] = (),
        *,
        limit: int = 1000,
    ) -> EventPage:
        """The job's events after ``after``; with ``wait`` (≤ 60 s), a long poll that answers as
        soon as there is one."""
        return self._send(self._events_call(job_id, after=after, wait=wait, types=types, limit=limit))

    def cancel(self, job_id: str) -> Job:
        """Cancel a job: at once if queued; a running or waiting one is asked to stop."""
        return self._send(self._change_call(job_id, "cancel"))

    def cancel_all(
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
        """Cancel every unfinished job that matches (the filters of :meth:`list`; ``ids``, if
        given, must name at least one job); return how many."""
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
        return self._send(call)

    def retry_all(
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
        """Run every finished job that matches again (same ids, each with its task's full
        attempts): the failed and cancelled ones unless ``status`` names finished statuses; the
        other filters are :meth:`list`'s. Return how many."""
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
        return self._send(call)

    def retry(self, job_id: str) -> Job:
        """Run a finished job again (same id; its events go on)."""
        return self._send(self._change_call(job_id, "retry"))

    def answer(self, job_id: str, value: Any, key: str | None = None) -> Job:
        """Answer the question a waiting job asks; it resumes."""
        return self._send(self._answer_call(job_id, value, key))

    def delete(self, job_id: str) -> None:
        """Delete a finished job and its events."""
        self._send(self._delete_call(job_id))

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Wait (by long polls) until the job ends and return it; ``TimeoutError`` after ``timeout`` s."""
        return run_plan(self._wait_plan(job_id, timeout), self._send)

    # -- batches -------------------------------------------------------------------------------

    def submit_batch(
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
        """Queue one job of ``task`` per item (each item is its arguments), all or none.

        The options apply to every item. A wrong item raises ``InvalidArguments`` whose
        ``details["item"]`` is its index; nothing is stored then. An admin may record another
        ``owner``.
        """
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
        return self._send(call)

    def get_batch(self, batch_id: str) -> BatchView:
        """The batch: counts per status, percent, rate, ETA, and its running items' progress."""
        return self._send(self._batch_call(batch_id))

    def list_batches(
        self, *, owner: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> BatchPage:
        """One page of batches, newest first; pass ``next_cursor`` back as ``cursor`` for older ones.
        ``owner``: only that owner's (admins)."""
        return self._send(self._list_batches_call(limit=limit, cursor=cursor, owner=owner))

    def batch_items(
        self,
        batch_id: str,
        *,
        status: Status | str | Iterable[Status | str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        """One page of the batch's jobs, newest first (of ``status``, if given)."""
        return self._send(self._batch_items_call(batch_id, status=status, limit=limit, cursor=cursor))

    def cancel_batch(self, batch_id: str) -> BatchView:
        """Cancel the batch's queued items at once and ask its running ones to stop."""
        return self._send(self._batch_call(batch_id, "cancel"))

    def pause_batch(self, batch_id: str) -> BatchView:
        """Start no more of the batch's items; running ones go on."""
        return self._send(self._batch_call(batch_id, "pause"))

    def resume_batch(self, batch_id: str) -> BatchView:
        return self._send(self._batch_call(batch_id, "resume"))

    def retry_failed(self, batch_id: str) -> int:
        """Run the batch's failed and cancelled items again; return how many."""
        return self._send(self._retry_failed_call(batch_id))

    def wait_batch(
        self, batch_id: str, timeout: float | None = None, *, interval: float = BATCH_POLL_INTERVAL
    ) -> BatchView:
        """Read the batch every ``interval`` seconds until every item has ended, and return it;
        ``TimeoutError`` after ``timeout`` seconds."""
        return run_plan(self._wait_batch_plan(batch_id, timeout, interval), self._send)

    def export(self, batch_id: str, format: ExportFormat = "json") -> Iterator[str]:
        """The batch's items (arguments, status, result or error) in submission order, as text
        chunks of ``json``, ``ndjson`` or ``csv``, streamed as the server writes them.

        The request is made when iteration starts; break out of the loop to stop it.
        """
        call = self._export_call(batch_id, format)
        try:
            with self._http.stream(
                call.method, call.path, params=call.params, timeout=self._request_timeout(call)
            ) as response:
                if not response.is_success:
                    response.read()
                    raise self.error_for(response, None)
                yield from response.iter_text()
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc

    # -- queues and the service ----------------------------------------------------------------

    def queues(self) -> builtins.list[Json]:
        """Every queue: depth, running, waiting, throughput of the last minute, oldest wait, controls."""
        return self._send(self._service_call("/queues", "queues"))

    def pause_queue(self, name: str) -> Json:
        """Start none of the queue's jobs, on any worker; running ones go on. Returns the queue."""
        return self._send(self._queue_call(name, "pause"))

    def resume_queue(self, name: str) -> Json:
        return self._send(self._queue_call(name, "resume"))

    def limit_queue(self, name: str, concurrency: int | None) -> Json:
        """Run at most ``concurrency`` of the queue's jobs at once over all workers (``None``: no limit)."""
        return self._send(self._queue_call(name, "limit", concurrency))

    def tasks(self) -> builtins.list[Json]:
        """The server's registered tasks, each with the JSON schema of its arguments."""
        return self._send(self._service_call("/tasks", "tasks"))

    def workers(self) -> builtins.list[Json]:
        """Workers that heartbeated recently."""
        return self._send(self._service_call("/workers", "workers"))

    def stats(self, window: float | str = 3600, owner: str | None = None) -> Json:
        """Time series of the last ``window`` (seconds, or ``"15m"``, ``"1h"``, ``"7d"``; at most
        7 days): jobs finished and their latency percentiles in about 60 buckets, and the current
        depth, of your jobs (an admin: all, or ``owner``'s). See ``GET /stats`` in docs/http.md."""
        return self._send(self._stats_call(window, owner))

    def me(self) -> Json:
        """Who the client is to the server: ``{owner, role, auth, via, can, grant, csrf_token}``
        (``can``: what it may do: ``write``, ``cancel``, ``answer``, ``admin``)."""
        return self._send(self._me_call())

    def health(self) -> Json:
        """``{"ok": bool, "store": "ok" | "unreachable: …"}`` (also when the store is down)."""
        return self._send(self._health_call())

    def stream_token(
        self,
        job: str | None = None,
        batch: str | None = None,
        ttl: float | None = None,
        owner: str | None = None,
    ) -> StreamToken:
        """A short-lived token for a browser's streams (``?token=``): it may read, cancel and
        answer the ``job`` or ``batch`` named, or (neither) all of the owner's jobs, and nothing
        else. ``ttl`` in seconds (server default 15 minutes, at most a day); an admin may make
        one for another ``owner``."""
        return self._send(self._stream_token_call(job=job, batch=batch, ttl=ttl, owner=owner))

    def watch(
        self, job_id: str, after: int = 0, *, reconnect_timeout: float = RECONNECT_TIMEOUT
    ) -> Iterator[Event]:
        """The job's events after ``after`` as they happen (Server-Sent Events), until it ends.

        A dropped connection or a restarted server is reconnected with backoff, resuming after
        the last event seen, so each event comes once and in order; after ``reconnect_timeout``
        seconds without a successful reconnection it raises ``ServerError``.
        """
        stream = self._stream(job_id, after, reconnect_timeout)
        while not stream.done:
            try:
                with connect_sse(
                    self._http, "GET", stream.path, headers=stream.headers(), timeout=self._stream_timeout()
                ) as source:
                    yield from self._follow(source, stream)
                if not stream.done:
                    time.sleep(stream.lost("the server closed the stream"))
            except STREAM_ERRORS as exc:
                time.sleep(stream.lost(exc))

    def _follow(self, source: EventSource, stream: Stream) -> Iterator[Event]:
        if source.response.status_code != 200:
            source.response.read()
        if not stream.opened(source.response):
            return
        for sse in source.iter_sse():
            event = stream.accept(sse)
            if event is not None:
                yield event
            if stream.done:
                return
