"""Server-Sent Events as a lean ASGI response: one task per connection, and nothing else.

:class:`EventStream` sends the frames of a :class:`FrameSource` from the task the server runs
the request in. It starts no helper task: the client's disconnect is noticed by running the
ASGI ``receive()`` inside that task (its pending future gets a callback), the server's shutdown
by a callback from :class:`StreamSet`, and heartbeats by the source returning empty-handed after
a timeout. Either of the first two interrupts the task where it waits, and the stream ends.

What it guarantees (the WHATWG "server-sent events" format):

* ``retry: <ms>`` once, first; then the source's frames; a comment line (``: ping``) after every
  ``ping_interval`` without a frame;
* frames built by :func:`frame`: ``id:``, ``event:``, one ``data:`` line per line of the data,
  a blank line after each; a CR or LF in an ``id`` or ``event`` is refused (no field injection);
* ``Cache-Control: no-store``, ``X-Accel-Buffering: no``, ``Content-Encoding: identity`` (never
  compressed: a compressing proxy or middleware would hold frames back);
* a client that does not take a frame within ``send_timeout`` is dropped; others do not wait;
* on shutdown (:meth:`StreamSet.stop`) each stream ends its chunked body cleanly, at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from .errors import error_response

logger = logging.getLogger("underway.web")

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),
    (b"content-encoding", b"identity"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
]
PING = b": ping\n\n"
#: Longest wait for the end of a body when the server stops.
STOP_SEND_TIMEOUT = 1.0


def frame(data: str, *, event: str | None = None, id: str | None = None) -> bytes:
    """One SSE frame: ``id:``, ``event:``, a ``data:`` line per line of ``data``, a blank line.

    Lines of ``data`` may end with CRLF, CR or LF (all three end a line in SSE). ``event`` and
    ``id`` are single-line fields: a CR or LF in them is refused (``ValueError``), and so is a
    NUL in ``id`` (a browser ignores such an id).
    """
    parts: list[str] = []
    if id is not None:
        if "\r" in id or "\n" in id or "\0" in id:
            raise ValueError(f"an SSE id may not contain CR, LF or NUL: {id!r}")
        parts.append(f"id: {id}\n")
    if event is not None:
        if "\r" in event or "\n" in event:
            raise ValueError(f"an SSE event name may not contain CR or LF: {event!r}")
        parts.append(f"event: {event}\n")
    for line in data.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        parts.append(f"data: {line}\n")
    parts.append("\n")
    return "".join(parts).encode()


def retry_frame(milliseconds: int) -> bytes:
    return f"retry: {milliseconds}\n\n".encode()


class FrameSource(Protocol):
    """What an :class:`EventStream` sends.

    ``next(timeout)`` returns the next frame(s) as bytes (several frames may come together),
    ``b""`` when nothing came within ``timeout`` seconds (the stream sends a heartbeat), or
    ``None`` when the stream is over. ``close()`` releases what the source holds; it is called
    once, however the stream ends (the source may be closed while ``next`` is suspended).
    """

    async def next(self, timeout: float) -> bytes | None: ...

    def close(self) -> None: ...


class StreamSet:
    """The open :class:`EventStream` responses of one API, which end together on shutdown."""

    __slots__ = ("_open", "stopped")

    def __init__(self) -> None:
        self._open: set[EventStream] = set()
        self.stopped = False

    def __len__(self) -> int:
        return len(self._open)

    def add(self, stream: EventStream) -> None:
        self._open.add(stream)

    def discard(self, stream: EventStream) -> None:
        self._open.discard(stream)

    def open_streams(self) -> list[EventStream]:
        return list(self._open)

    def stop(self) -> None:
        """End every open stream now (each closes its body cleanly); refuse new ones."""
        self.stopped = True
        for stream in list(self._open):
            stream.interrupt(stopping=True)

    def restart(self) -> None:
        """Accept streams again (a new run of the server)."""
        self.stopped = False


class EventStream(Response):
    """An ASGI response streaming a :class:`FrameSource` as ``text/event-stream``.

    A :class:`~starlette.responses.Response` only so that FastAPI hands it to the server as
    it is; none of the base class's body handling is used. An endpoint may be annotated
    ``-> EventStream`` (FastAPI reads the default ``status_code`` for the OpenAPI document);
    declare ``responses={200: {"content": {"text/event-stream": {}}}}`` on the route.
    """

    __slots__ = (
        "_interrupted",
        "_ping_interval",
        "_pumping",
        "_retry",
        "_send_timeout",
        "_source",
        "_streams",
        "_task",
        "disconnected",
        "stopped",
    )

    def __init__(
        self,
        source: FrameSource,
        *,
        streams: StreamSet,
        ping_interval: float,
        send_timeout: float,
        retry: float | None = None,
        status_code: int = 200,
    ) -> None:
        self.status_code = status_code
        self.background = None
        self.raw_headers = list(HEADERS)
        self._source = source
        self._streams = streams
        self._ping_interval = ping_interval
        self._send_timeout = send_timeout
        self._retry = retry
        self._task: asyncio.Task[Any] | None = None
        self._pumping = False
        self._interrupted = False
        self.disconnected = False
        self.stopped = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._streams.stopped:  # a request that came in as the server began to stop
            self._source.close()
            refused = error_response(503, "shutting_down", "the server is shutting down: reconnect")
            refused.headers["Retry-After"] = "1"
            await refused(scope, receive, send)
            return
        self._task = asyncio.current_task()
        self._streams.add(self)
        watch = _DisconnectWatch(receive, self.interrupt)
        try:
            start = {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            await self._send(send, start)
            if self._retry is not None:
                await self._send_body(send, retry_frame(round(self._retry * 1000)))
            await self._pump_interruptibly(send)
        except TimeoutError:
            logger.debug("dropped an SSE client that took no frame for %s s", self._send_timeout)
            return
        finally:
            watch.close()
            self._streams.discard(self)
            self._source.close()
        if not self.disconnected:
            # End the chunked body: after a shutdown, the client reconnects and resumes. A
            # client too slow to take it must not hold a shutdown for a whole send timeout.
            end = {"type": "http.response.body", "body": b"", "more_body": False}
            try:
                await self._send(send, end, STOP_SEND_TIMEOUT if self.stopped else None)
            except TimeoutError:
                pass

    @property
    def source(self) -> FrameSource:
        return self._source

    def end(self) -> None:
        """End the stream now, cleanly (its credentials were revoked): the client that
        reconnects learns why."""
        self.interrupt(stopping=True)

    def interrupt(self, *, stopping: bool = False) -> None:
        """End the stream: the client left, or the server stops (``stopping``)."""
        if stopping:
            self.stopped = True
        else:
            self.disconnected = True
        if self._pumping and not self._interrupted and self._task is not None:
            self._interrupted = True
            self._task.cancel()

    async def _pump_interruptibly(self, send: Send) -> None:
        if self.disconnected or self.stopped:
            return
        task = self._task
        assert task is not None
        self._pumping = True
        try:
            await self._pump(send)
        except asyncio.CancelledError:
            # Our own interrupt() ends the stream; any other cancellation goes on up.
            if not self._interrupted or task.uncancel() > 0:
                raise
        finally:
            self._pumping = False

    async def _pump(self, send: Send) -> None:
        loop = asyncio.get_running_loop()
        interval = self._ping_interval
        ping_at = loop.time() + interval
        while True:
            chunk = await self._source.next(max(0.0, ping_at - loop.time()))
            if chunk is None:
                return
            if chunk:
                await self._send_body(send, chunk)
            elif loop.time() >= ping_at:
                await self._send_body(send, PING)
            else:
                continue
            ping_at = loop.time() + interval

    async def _send_body(self, send: Send, body: bytes) -> None:
        await self._send(send, {"type": "http.response.body", "body": body, "more_body": True})

    async def _send(self, send: Send, message: Message, timeout: float | None = None) -> None:
        await send_within(send(message), self._send_timeout if timeout is None else timeout)


async def send_within(sending: Awaitable[None], timeout: float) -> None:
    """Await ``sending`` (an ASGI send), which may wait at most ``timeout``, else ``TimeoutError``.

    A send that does not wait (the client keeps up: the usual case) runs without arming a timer:
    with 10,000 streams, a timer per frame is a good part of the cost of an event. A send that
    has to wait finishes under ``asyncio.timeout`` (not ``wait_for``: on 3.11 that may swallow a
    cancel that comes as the send completes).
    """
    if not asyncio.iscoroutine(sending):  # pragma: no cover - servers send with coroutines
        async with asyncio.timeout(timeout):
            await sending
        return
    try:
        waiting_on = sending.send(None)
    except StopIteration:
        return
    except BaseException:
        sending.close()
        raise
    async with asyncio.timeout(timeout):
        await _finish(sending, waiting_on)


async def _finish(coro: Any, waiting_on: Any) -> None:
    """Run ``coro``, which is stopped at ``waiting_on`` (what it yielded), to its end in the
    current task: wait for that, step it, and so on, as a task would."""
    try:
        while True:
            if waiting_on is None:
                await asyncio.sleep(0)
            else:
                waiting_on._asyncio_future_blocking = False
                await waiting_on
            try:
                waiting_on = coro.send(None)
            except StopIteration:
                return
    finally:
        coro.close()  # a no-op when it ended; else (cancelled, timed out) it cleans up


class _DisconnectWatch:
    """Waits for ``http.disconnect`` from ``receive()`` without a task of its own.

    The coroutine ``receive()`` is stepped by hand, the way a task steps it: each step runs up
    to the future it waits on, and that future's done-callback takes the next step. When it
    returns ``http.disconnect``, ``on_disconnect`` is called. A ``receive()`` that is not a
    coroutine (some other awaitable) is awaited in a helper task instead.
    """

    __slots__ = ("_closed", "_coro", "_future", "_helper", "_on_disconnect", "_receive")

    def __init__(self, receive: Receive, on_disconnect: Callable[[], None]) -> None:
        self._receive = receive
        self._on_disconnect = on_disconnect
        self._coro: Any = None
        self._future: asyncio.Future[Any] | None = None
        self._helper: asyncio.Task[None] | None = None
        self._closed = False
        self._next_receive()

    def _next_receive(self) -> None:
        awaitable: Awaitable[Message] = self._receive()
        if not asyncio.iscoroutine(awaitable):
            self._helper = asyncio.ensure_future(self._watch_in_task(awaitable))
            return
        self._coro = awaitable
        self._step()

    def _step(self, _done: object = None) -> None:
        self._future = None
        if self._closed:
            return
        try:
            waiting_on = self._coro.send(None)
        except StopIteration as returned:
            self._coro = None
            self._received(returned.value)
            return
        except BaseException:  # pragma: no cover - a broken server; treat it as gone
            self._coro = None
            logger.exception("receive() failed while an SSE stream waited for the disconnect")
            self._on_disconnect()
            return
        if asyncio.isfuture(waiting_on):
            waiting_on._asyncio_future_blocking = False  # what a task does with what it awaits
            self._future = waiting_on
            waiting_on.add_done_callback(self._step)
        elif waiting_on is None:  # a bare yield (sleep(0)): step again soon
            asyncio.get_running_loop().call_soon(self._step)
        else:  # pragma: no cover - asyncio itself refuses any other yield
            self._coro.close()
            self._coro = None
            logger.warning("receive() waited on %r: SSE disconnects are seen at the next send", waiting_on)

    def _received(self, message: Message) -> None:
        if message["type"] == "http.disconnect":
            self._on_disconnect()
        elif not self._closed:  # the (empty) request body: wait for what comes next
            self._next_receive()

    async def _watch_in_task(self, awaitable: Awaitable[Message]) -> None:
        self._received(await awaitable)

    def close(self) -> None:
        self._closed = True
        if self._future is not None:
            self._future.remove_done_callback(self._step)
            self._future = None
        if self._coro is not None:
            self._coro.close()  # runs receive()'s cleanup (an Event.wait drops its waiter)
            self._coro = None
        if self._helper is not None:
            self._helper.cancel()
            self._helper = None
