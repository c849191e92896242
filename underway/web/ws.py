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
from typing import TYPE_CHECKING, Any

from fastapi import WebSocket, WebSocketDisconnect
from starlette.routing import WebSocketRoute

from ..events import Event, EventType
from ..exceptions import InvalidArguments, UnderwayError
from .batches import BatchFollower
from .sse import send_within
from .streams import follow_many
from .wire import encoded

if TYPE_CHECKING:
    from .api import API

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_TOO_MANY = 4429
CLOSE_TOO_BIG = 1009


def add_websocket_route(api: API) -> None:
    async def websocket(ws: WebSocket) -> None:
        await Session(api, ws).run()

    # A plain Starlette route, not ``@router.websocket``: FastAPI's dependency machinery (an
    # exit stack and the solved values, ~3 KB) would live as long as each connection, and the
    # WebSocket has no dependencies (it authenticates itself once accepted, to close with 4401).
    api.router.routes.append(WebSocketRoute("/ws", websocket, name="websocket"))


class Session:
    """One WebSocket connection: its subscriptions (a task each) and its serialized sends."""

    __slots__ = ("_next_sub", "_send_lock", "api", "subscriptions", "ws")

    def __init__(self, api: API, ws: WebSocket) -> None:
        self.api = api
        self.ws = ws
        self.subscriptions: dict[str, asyncio.Task[None]] = {}
        self._send_lock = asyncio.Lock()
        self._next_sub = 0

    async def run(self) -> None:
        settings = self.api.settings
        origin = self.ws.headers.get("origin")
        if settings.ws_origins and origin not in settings.ws_origins:
            await self._refuse(CLOSE_FORBIDDEN, "origin not allowed")
            return
        if self.api.authenticate is not None and await self.api.authenticate(self.ws) is None:
            await self._refuse(CLOSE_UNAUTHENTICATED, "not authenticated")
            return
        if self.api.open_websockets >= settings.ws_max_connections:
            await self._refuse(CLOSE_TOO_MANY, "too many connections")
            return
        await self.ws.accept()
        await self.api.app.open()
        self.api.open_websockets += 1
        self.api.metrics.streams.labels("websocket").inc()
        try:
            await self._receive_loop()
        except WebSocketDisconnect:
            pass
        finally:
            self.api.open_websockets -= 1
            self.api.metrics.streams.labels("websocket").dec()
            for task in self.subscriptions.values():
                task.cancel()
            await asyncio.gather(*self.subscriptions.values(), return_exceptions=True)

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
            request = json.loads(raw)
        except json.JSONDecodeError as exc:
            await self._error(None, "bad_message", f"not JSON: {exc}")
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
            raise InvalidArguments(
                f"at most {self.api.settings.ws_max_subscriptions} subscriptions per connection"
            )
        self._next_sub += 1
        sub = str(self._next_sub)
        job_id = request.get("job")
        if job_id is not None:
            after = request.get("after", 0)
            if not isinstance(job_id, str) or not isinstance(after, int) or after < 0:
                raise InvalidArguments('subscribe to a job with {"job": "<id>", "after": <seq ≥ 0>}')
            job = await self.api.app.get(job_id)
            # The pump keeps what it needs, not the job (its arguments, result… for hours).
            ended = job.terminal and after >= job.last_seq  # nothing is left to send but the end
            pump = self._pump_job(sub, job_id, min(after, job.last_seq), job.status.value if ended else None)
        elif request.get("batch") is not None:
            batch_id = request["batch"]
            if not isinstance(batch_id, str):
                raise InvalidArguments('subscribe to a batch with {"batch": "<id>"}')
            await self.api.app.get_batch(batch_id)
            pump = self._pump_batch(sub, batch_id)
        else:
            pump = self._pump_many(sub, request)
        self.subscriptions[sub] = asyncio.create_task(pump, name=f"underway-ws-sub-{sub}")
        return {"sub": sub}

    async def _op_unsubscribe(self, request: dict[str, Any]) -> dict[str, Any]:
        task = self.subscriptions.pop(str(request.get("sub")), None)
        if task is None:
            raise InvalidArguments(f"no subscription {request.get('sub')!r} on this connection")
        task.cancel()
        return {"sub": str(request.get("sub"))}

    async def _op_cancel(self, request: dict[str, Any]) -> dict[str, Any]:
        job = await self.api.app.cancel(_job_id(request))
        return {"job": job.to_dict()}

    async def _op_answer(self, request: dict[str, Any]) -> dict[str, Any]:
        if "value" not in request:
            raise InvalidArguments('answer with {"job": "<id>", "value": ..., "key"?: "..."}')
        job = await self.api.app.answer(_job_id(request), request["value"], request.get("key"))
        return {"job": job.to_dict()}

    # -- pushing -------------------------------------------------------------------------------

    async def _pump_job(self, sub: str, job_id: str, after: int, ended_as: str | None) -> None:
        """Push the job's events after ``after``, then its end; only the end if it already
        ended (as ``ended_as``)."""
        status = ended_as
        if ended_as is None:
            last: Event | None = None
            async for event in self.api.app.watch(job_id, after=after):
                last = event
                await self._push(sub, event)
            status = last.data["status"] if last is not None and last.type is EventType.STATUS else None
        await self.send({"sub": sub, "end": {"job_id": job_id, "status": status}})
        self.subscriptions.pop(sub, None)

    async def _pump_many(self, sub: str, request: dict[str, Any]) -> None:
        jobs = request.get("jobs") or []
        queue = request.get("queue")
        async for item in follow_many(self.api, frozenset(map(str, jobs)), queue):
            if isinstance(item, Event):
                await self._push(sub, item)
            else:
                await self.send({"sub": sub, "snapshot": item})

    async def _pump_batch(self, sub: str, batch_id: str) -> None:
        """Push the batch's ``snapshot``, then its coalesced ``batch`` updates, then its ``end``."""
        follower = BatchFollower(self.api, batch_id)
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


def _job_id(request: dict[str, Any]) -> str:
    job_id = request.get("job")
    if not isinstance(job_id, str) or not job_id:
        raise InvalidArguments('name the job: {"job": "<id>"}')
    return job_id
