"""The WebSocket endpoint: subscriptions to jobs, queues or everything, plus cancel and answer.

Client messages are ``{"id", "op", ...}``; every one gets a reply ``{"reply": id, "ok": true|false,
"sub"?, "error"?}``; subscriptions push ``{"sub": n, "event": {...}}`` (after a ``{"sub": n,
"snapshot": {...}}`` for queue and multi-job ones) and ``{"sub": n, "end": {...}}`` when a
watched job ends. Close codes: 4401 unauthenticated, 4403 origin not allowed, 4429 too many
connections, 1009 message too big.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any

from fastapi import WebSocket, WebSocketDisconnect

from ..events import Event, EventType
from ..exceptions import InvalidArguments, UnderwayError
from ..jobs import Job
from .streams import follow_many

if TYPE_CHECKING:
    from .api import API

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_TOO_MANY = 4429
CLOSE_TOO_BIG = 1009


def add_websocket_route(api: API) -> None:
    @api.router.websocket("/ws")
    async def websocket(ws: WebSocket) -> None:
        await Session(api, ws).run()


class Session:
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
            pump = self._pump_job(sub, job, min(after, job.last_seq))  # see stream_job
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

    async def _pump_job(self, sub: str, job: Job, after: int) -> None:
        job_id = job.id
        status: str | None = job.status.value
        if not (job.terminal and after >= job.last_seq):  # else nothing is left to send but the end
            last: Event | None = None
            async for event in self.api.app.watch(job_id, after=after):
                last = event
                await self.send({"sub": sub, "event": event.to_dict()})
            status = last.data["status"] if last is not None and last.type is EventType.STATUS else None
        await self.send({"sub": sub, "end": {"job_id": job_id, "status": status}})
        self.subscriptions.pop(sub, None)

    async def _pump_many(self, sub: str, request: dict[str, Any]) -> None:
        jobs = request.get("jobs") or []
        queue = request.get("queue")
        async for item in follow_many(self.api, frozenset(map(str, jobs)), queue):
            if isinstance(item, Event):
                await self.send({"sub": sub, "event": item.to_dict()})
            else:
                await self.send({"sub": sub, "snapshot": item})

    async def send(self, message: dict[str, Any]) -> None:
        async with self._send_lock:
            try:
                # Not asyncio.wait_for: on Python 3.11 it swallows a cancel that comes as the send
                # completes, and an unsubscribed or closed pump would then live on.
                async with asyncio.timeout(self.api.settings.sse_send_timeout):
                    await self.ws.send_text(json.dumps(message))
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
