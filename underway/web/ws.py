"""The WebSocket endpoint: subscriptions to jobs, batches, queues or everything, plus cancel and
answer.

Client messages are ``{"id", "op", ...}``; every one gets a reply ``{"reply": id, "ok": true|false,
"sub"?, "error"?}``; subscriptions push ``{"sub": n, "event": {...}}`` (after a ``{"sub": n,
"snapshot": {...}}`` for queue and multi-job ones) and ``{"sub": n, "end": {...}}`` when a
watched job ends. A batch subscription pushes ``snapshot`` (the batch), ``batch`` (``{"batch",
"items"}``, at most one per 0.25 s) and ``end``, as the batch's SSE stream does. Close codes:
4401 unauthenticated, 4403 origin not allowed, 4429 too many
connections, 1009 message too big.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from fastapi import WebSocket, WebSocketDisconnect
from starlette.routing import WebSocketRoute

from ..auth import Principal
from ..events import Event, EventType
from ..exceptions import InvalidArguments, TooManyRequests, UnderwayError
from ..service import JobFilter, Service
from .batches import BatchFollower
from .inputs import BadInput, loads
from .models import MAX_SEARCH, MAX_SEQ, checked_ids, job_filter
from .sse import send_within
from .streams import check_many, follow_many
from .wire import encoded

if TYPE_CHECKING:
    from .api import API

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_TOO_MANY = 4429
CLOSE_TOO_BIG = 1009

#: Sees nothing: owns nothing, and is no admin.
NOBODY = Principal(owner="", role="user")
#: A subscription's pump, started with the subscription's number.
Pump = Callable[[str], Coroutine[Any, Any, None]]


def add_websocket_route(api: API) -> None:
    async def websocket(ws: WebSocket) -> None:
        await Session(api, ws).run()

    # A plain Starlette route, not ``@router.websocket``: FastAPI's dependency machinery (an
    # exit stack and the solved values, ~3 KB) would live as long as each connection, and the
    # WebSocket has no dependencies (it authenticates itself once accepted, to close with 4401).
    api.router.routes.append(WebSocketRoute("/ws", websocket, name="websocket"))


class Session:
    """One WebSocket connection: its principal, its subscriptions (a task each, each counted
    against the principal's stream limit) and its serialized sends."""

    __slots__ = (
        "__weakref__",
        "_closing",
        "_expiry",
        "_next_sub",
        "_releases",
        "_send_lock",
        "api",
        "principal",
        "service",
        "subscriptions",
        "ws",
    )

    def __init__(self, api: API, ws: WebSocket) -> None:
        self.api = api
        self.ws = ws
        self.principal = NOBODY  # until the guard found who it is
        self.service = Service(api.app, NOBODY)
        self.subscriptions: dict[str, asyncio.Task[None]] = {}
        self._releases: dict[str, Callable[[], None]] = {}
        self._send_lock = asyncio.Lock()
        self._next_sub = 0
        self._expiry: asyncio.TimerHandle | None = None
        self._closing: asyncio.Future[None] | None = None

    async def run(self) -> None:
        guard = self.api.guard
        if not guard.origin_allowed(self.ws):
            await self._refuse(CLOSE_FORBIDDEN, "origin not allowed: add it to allowed_origins")
            return
        try:
            self.principal = await guard.principal(self.ws)
        except UnderwayError:
            await self._refuse(CLOSE_UNAUTHENTICATED, "not authenticated")
            return
        if self.api.open_websockets >= self.api.settings.ws_max_connections:
            await self._refuse(CLOSE_TOO_MANY, "too many connections")
            return
        self.service = Service(self.api.app, self.principal)
        await self.ws.accept()
        await self.api.app.open()
        self._watch_expiry()
        self.api.sessions.add(self)
        self.api.open_websockets += 1
        self.api.metrics.streams.labels("websocket").inc()
        try:
            await self._receive_loop()
        except WebSocketDisconnect:
            pass
        finally:
            self.api.sessions.discard(self)
            if self._expiry is not None:
                self._expiry.cancel()
            self.api.open_websockets -= 1
            self.api.metrics.streams.labels("websocket").dec()
            for task in self.subscriptions.values():
                task.cancel()
            await asyncio.gather(*self.subscriptions.values(), return_exceptions=True)
            for release in self._releases.values():
                release()

    def _watch_expiry(self) -> None:
        expires_at = self.principal.expires_at
        if expires_at is not None:
            loop = asyncio.get_running_loop()
            self._expiry = loop.call_later(max(0.0, expires_at - time.time()), self.end, "the token expired")

    def end(self, reason: str = "the API key was revoked") -> None:
        """Close the socket with 4401: its token expired or its key was revoked."""
        self._closing = asyncio.ensure_future(self._close_quietly(CLOSE_UNAUTHENTICATED, reason))

    async def _close_quietly(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close(code, reason)

    async def _refuse(self, code: int, reason: str) -> None:
        await self.ws.accept()
        await self.ws.close(code, reason)

    async def _receive_loop(self) -> None:
        limit = self.api.settings.ws_max_message
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            raw = message.get("text") or (message.get("bytes") or b"").decode("utf-8", "replace")
            if len(raw.encode()) > limit:
                await self.ws.close(CLOSE_TOO_BIG, f"messages are limited to {limit} bytes")
                return
            await self._handle(raw)

    async def _handle(self, raw: str) -> None:
        try:
            request = loads(raw, "message")
        except BadInput as exc:
            await self._error(None, "bad_message", exc.message)
            return
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            await self._error(None, "bad_message", 'a message is a JSON object with an "op"')
            return
        reply_to = request.get("id")
        handler = getattr(self, f"_op_{request['op']}", None)
        if handler is None:
            await self._error(reply_to, "unknown_op", f"unknown op {request['op']!r}: use {', '.join(OPS)}")
            return
        try:
            extra = await handler(request)
        except UnderwayError as exc:
            await self._error(reply_to, exc.code, exc.message)
            return
        await self.send({"reply": reply_to, "ok": True, **(extra or {})})

    # -- operations ----------------------------------------------------------------------------

    async def _op_ping(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"pong": True}

    async def _op_subscribe(self, request: dict[str, Any]) -> dict[str, Any]:
        if len(self.subscriptions) >= self.api.settings.ws_max_subscriptions:
            raise TooManyRequests(
                f"at most {self.api.settings.ws_max_subscriptions} subscriptions per connection",
                retry_after=1.0,
            )
        pump = await self._pump_for(request)
        release = self.api.quotas.open_stream(self.principal)
        self._next_sub += 1
        sub = str(self._next_sub)
        self._releases[sub] = release
        self.subscriptions[sub] = asyncio.create_task(
            self._run_pump(sub, pump), name=f"underway-ws-sub-{sub}"
        )
        return {"sub": sub}

    async def _pump_for(self, request: dict[str, Any]) -> Pump:
        """The pump of a subscription (to start with its number), once what it follows was
        found visible to the principal."""
        job_id = request.get("job")
        if job_id is not None:
            after = request.get("after", 0)
            if not isinstance(job_id, str) or type(after) is not int or not 0 <= after <= MAX_SEQ:
                shape = f'{{"job": "<id>", "after": <seq 0 to {MAX_SEQ}>}}'
                raise InvalidArguments(f"subscribe to a job with {shape}")
            job = await self.service.get(job_id)
            # The pump keeps what it needs, not the job (its arguments, result… for hours).
            ended = job.terminal and after >= job.last_seq  # nothing is left to send but the end
            ended_as = job.status.value if ended else None
            return lambda sub: self._pump_job(sub, job_id, after, ended_as)
        if request.get("batch") is not None:
            batch_id = request["batch"]
            if not isinstance(batch_id, str):
                raise InvalidArguments('subscribe to a batch with {"batch": "<id>"}')
            await self.service.get_batch(batch_id)
            return lambda sub: self._pump_batch(sub, batch_id)
        wanted = _many_filter(request)
        await check_many(self.service, wanted)
        return lambda sub: self._pump_many(sub, wanted)

    async def _run_pump(self, sub: str, pump: Pump) -> None:
        try:
            await pump(sub)
        finally:
            self.subscriptions.pop(sub, None)
            release = self._releases.pop(sub, None)
            if release is not None:
                release()

    async def _op_unsubscribe(self, request: dict[str, Any]) -> dict[str, Any]:
        task = self.subscriptions.pop(str(request.get("sub")), None)
        if task is None:
            raise InvalidArguments(f"no subscription {request.get('sub')!r} on this connection")
        task.cancel()
        return {"sub": str(request.get("sub"))}

    async def _op_cancel(self, request: dict[str, Any]) -> dict[str, Any]:
        job = await self.service.cancel(_job_id(request))
        return {"job": job.to_dict()}

    async def _op_answer(self, request: dict[str, Any]) -> dict[str, Any]:
        if "value" not in request:
            raise InvalidArguments('answer with {"job": "<id>", "value": ..., "key"?: "..."}')
        job = await self.service.answer(_job_id(request), request["value"], request.get("key"))
        return {"job": job.to_dict()}

    # -- pushing -------------------------------------------------------------------------------

    async def _pump_job(self, sub: str, job_id: str, after: int, ended_as: str | None) -> None:
        """Push the job's events after ``after``, then its end; only the end if it already
        ended (as ``ended_as``)."""
        status = ended_as
        if ended_as is None:
            last: Event | None = None
            async for event in self.service.watch(job_id, after=after):
                last = event
                await self._push(sub, event)
            if last is None:  # it ended at or before the resume point: only the end is sent
                status = (await self.service.get(job_id)).status.value
            else:
                status = last.data["status"] if last.type is EventType.STATUS else None
        await self.send({"sub": sub, "end": {"job_id": job_id, "status": status}})
        self.subscriptions.pop(sub, None)

    async def _pump_many(self, sub: str, wanted: JobFilter) -> None:
        async for item in follow_many(self.service, wanted):
            if isinstance(item, Event):
                await self._push(sub, item)
            else:
                await self.send({"sub": sub, "snapshot": item})

    async def _pump_batch(self, sub: str, batch_id: str) -> None:
        """Push the batch's ``snapshot``, then its coalesced ``batch`` updates, then its ``end``."""
        follower = BatchFollower(self.service, batch_id)
        try:
            while (updates := await follower.next(60.0)) is not None:
                for kind, body in updates:
                    await self.send({"sub": sub, kind: body})
        finally:
            follower.close()
        self.subscriptions.pop(sub, None)

    async def _push(self, sub: str, event: Event) -> None:
        # The event's JSON is encoded once per process (wire.py), not once per subscriber;
        # ``sub`` is a number we made, so it needs no escaping.
        await self.send_text(f'{{"sub":"{sub}","event":{encoded(event).json}}}')

    async def send(self, message: dict[str, Any]) -> None:
        await self.send_text(json.dumps(message))

    async def send_text(self, text: str) -> None:
        async with self._send_lock:
            try:
                await send_within(self.ws.send_text(text), self.api.settings.sse_send_timeout)
            except TimeoutError:
                with contextlib.suppress(Exception):
                    await self.ws.close(1008, "too slow to read")
                raise WebSocketDisconnect(1008) from None

    async def _error(self, reply_to: Any, code: str, message: str) -> None:
        await self.send({"reply": reply_to, "ok": False, "error": {"code": code, "message": message}})


OPS = ("subscribe", "unsubscribe", "cancel", "answer", "ping")


def _many_filter(request: dict[str, Any]) -> JobFilter:
    """The filter of a subscription to many jobs: ``jobs`` (or ``ids``), ``queue``, ``task``,
    ``label`` (``key:value``), ``owner``, ``q``."""
    ids = [*_strings(request, "jobs"), *_strings(request, "ids")]
    texts = {name: request.get(name) for name in ("queue", "task", "label", "owner", "q")}
    if not all(value is None or _unicode(value) for value in texts.values()):
        raise InvalidArguments('"queue", "task", "label", "owner" and "q" are strings')
    q, label = texts["q"], texts["label"]
    if q is not None and len(q) > MAX_SEARCH:
        raise InvalidArguments(f'"q" is at most {MAX_SEARCH} characters')
    if label is not None and ":" not in label:
        raise InvalidArguments('"label" is key:value')
    return job_filter(
        queue=texts["queue"], task=texts["task"], label=label, owner=texts["owner"], q=q, ids=checked_ids(ids)
    )


def _strings(request: dict[str, Any], name: str) -> list[str]:
    value = request.get(name) or []
    if not isinstance(value, list) or not all(_unicode(item) for item in value):
        raise InvalidArguments(f'"{name}" is a list of job ids')
    return value


def _unicode(value: object) -> bool:
    """Whether ``value`` is a string of Unicode (JSON can escape a lone surrogate, which is not)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _job_id(request: dict[str, Any]) -> str:
    job_id = request.get("job")
    if not isinstance(job_id, str) or not job_id:
        raise InvalidArguments('name the job: {"job": "<id>"}')
    return job_id
