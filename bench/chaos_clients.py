"""The stream clients of bench/chaos.py's server scenario: SSE and WebSocket followers that
reconnect by themselves and resume where they were.

A client process (``bench/chaos.py --client``) reads its connections from the first line of
stdin (``{"port", "sse": [job ids], "ws": [job ids]}``: one follower per entry), opens them
(at most ``CONNECTING`` handshakes at once) and follows each job to its end:

* SSE: ``GET /api/jobs/{id}/stream``; after a drop it reconnects every ``RECONNECT_INTERVAL``
  seconds with ``Last-Event-ID: <last seq seen>`` until the stream is open again. A ``204``
  (the job ended and nothing is left to replay) ends it too.
* WebSocket: ``/api/ws``, ``{"op": "subscribe", "job", "after": <last seq seen>}``; after a drop
  it connects and subscribes again the same way.

Each follower records every event it receives (duplicates too) and when its stream opened.
Commands on stdin, one JSON line answered on stdout each:

* ``status <unix time>``: how many followers opened at least once, how many opened again after
  that time (or ended), and those re-open delays;
* ``final <seconds>``: waits (at most that long) until every follower saw its job end, then
  reports each follower's seqs, a digest of its events and its drops.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

#: Handshakes a client process runs at once (the others wait for a slot).
CONNECTING = 64
#: Seconds between reconnection attempts (the SSE stream's own ``retry`` is 2 s; a chaos run
#: wants to see how fast the server itself is back).
RECONNECT_INTERVAL = 0.2
#: Longest wait for a response head or a subscribe reply.
HANDSHAKE_TIMEOUT = 30.0


def event_line(seq: int, kind: str, data: Any) -> str:
    """One event in the canonical form the digests are computed over."""
    return json.dumps([seq, kind, data], sort_keys=True, separators=(",", ":"))


def digest(lines: Iterable[str]) -> str:
    return hashlib.sha1("\n".join(lines).encode()).hexdigest()


class Follower:
    """One connection following one job across drops."""

    def __init__(self, kind: str, job: str, port: int) -> None:
        self.kind = kind
        self.job = job
        self.port = port
        self.seqs: list[int] = []
        self.lines: list[str] = []
        self.last = 0
        self.done = False
        self.opened_at: list[float] = []
        self.drops = 0
        self.errors: Counter[str] = Counter()

    def got(self, seq: int, kind: str, data: Any) -> None:
        self.seqs.append(seq)
        self.lines.append(event_line(seq, kind, data))
        self.last = max(self.last, seq)

    async def run(self, slots: asyncio.Semaphore) -> None:
        while not self.done:
            opened = len(self.opened_at)
            try:
                if self.kind == "sse":
                    await self._sse(slots)
                else:
                    await self._ws(slots)
            except Exception as exc:  # a drop, a refused connection, a bad answer: try again
                self.errors[f"{type(exc).__name__}: {str(exc)[:60]}"] += 1
            if not self.done:
                self.drops += len(self.opened_at) > opened
                await asyncio.sleep(RECONNECT_INTERVAL)

    # -- SSE ------------------------------------------------------------------------------

    async def _sse(self, slots: asyncio.Semaphore) -> None:
        async with slots:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.port), HANDSHAKE_TIMEOUT
            )
        try:
            resume = f"Last-Event-ID: {self.last}\r\n" if self.last else ""
            writer.write(
                f"GET /api/jobs/{self.job}/stream HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                f"Accept: text/event-stream\r\n{resume}\r\n".encode()
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HANDSHAKE_TIMEOUT)
            status = int(head.split(b" ", 2)[1])
            if status == 204:  # the job ended and nothing is left to replay
                self.done = True
                return
            if status != 200:
                raise ConnectionError(f"HTTP {status}")
            self.opened_at.append(time.time())
            await self._sse_body(reader)
        finally:
            writer.close()

    async def _sse_body(self, reader: asyncio.StreamReader) -> None:
        buffer = b""
        while not self.done:
            size_line = await reader.readline()
            if not size_line:
                raise ConnectionError("the connection closed mid-stream")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                raise ConnectionError("the stream ended without an end event")
            buffer += (await reader.readexactly(size + 2))[:-2]
            buffer = buffer.replace(b"\r\n", b"\n")
            while b"\n\n" in buffer and not self.done:
                block, buffer = buffer.split(b"\n\n", 1)
                self._sse_block(block)

    def _sse_block(self, block: bytes) -> None:
        kind = None
        data: list[bytes] = []
        for line in block.split(b"\n"):
            if line.startswith(b"event:"):
                kind = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                data.append(line[5:].removeprefix(b" "))
        if kind == "end":
            self.done = True
        elif kind is not None and data:
            event = json.loads(b"\n".join(data))
            self.got(event["seq"], event["type"], event["data"])

    # -- WebSocket --------------------------------------------------------------------------

    async def _ws(self, slots: asyncio.Semaphore) -> None:
        from websockets.asyncio.client import connect

        url = f"ws://127.0.0.1:{self.port}/api/ws"
        async with slots:
            ws = await connect(url, open_timeout=HANDSHAKE_TIMEOUT, max_size=None, compression=None)
        try:
            request = {"id": 1, "op": "subscribe", "job": self.job, "after": self.last}
            await ws.send(json.dumps(request))
            async for raw in ws:
                message = json.loads(raw)
                if message.get("reply") == 1:
                    if not message.get("ok"):
                        raise ConnectionError(f"subscribe refused: {message.get('error')}")
                    self.opened_at.append(time.time())
                elif "event" in message:
                    event = message["event"]
                    self.got(event["seq"], event["type"], event["data"])
                elif "end" in message:
                    self.done = True
                    return
            raise ConnectionError("the socket closed before the end")
        finally:
            await ws.close()

    # -- reports ----------------------------------------------------------------------------

    def final(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "job": self.job,
            "seqs": self.seqs,
            "digest": digest(self.lines),
            "drops": self.drops,
            "opens": len(self.opened_at),
            "done": self.done,
            "errors": dict(self.errors.most_common(3)),
        }


def status(followers: list[Follower], since: float) -> dict[str, Any]:
    resumed = []
    for f in followers:
        again = [t for t in f.opened_at if t > since]
        if again:
            resumed.append(again[0] - since)
        elif f.done:
            resumed.append(0.0)
    return {
        "opened": sum(1 for f in followers if f.opened_at or f.done),
        "resumed": len(resumed),
        "resume_s": resumed,
        "done": sum(f.done for f in followers),
        "events": sum(len(f.seqs) for f in followers),
    }


async def client_main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    config = json.loads(await reader.readline())
    port = config["port"]
    followers = [Follower("sse", job, port) for job in config["sse"]]
    followers += [Follower("ws", job, port) for job in config["ws"]]
    slots = asyncio.Semaphore(CONNECTING)
    tasks = [asyncio.create_task(f.run(slots)) for f in followers]
    while True:
        line = (await reader.readline()).strip()
        if not line or line == b"close":
            break
        command, _, argument = line.decode().partition(" ")
        if command == "status":
            answer = status(followers, float(argument))
        elif command == "final":
            try:
                await asyncio.wait_for(asyncio.gather(*tasks), float(argument))
            except TimeoutError:
                pass
            answer = {"followers": [f.final() for f in followers]}
        else:
            answer = {"error": f"unknown command {command!r}"}
        print(json.dumps(answer), flush=True)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def run_client() -> None:
    from bench import serving

    serving.raise_nofile()
    try:
        import uvloop
    except ImportError:
        asyncio.run(client_main())
    else:
        uvloop.run(client_main())
