"""underway's own SSE response (``underway/web/sse.py``) against the WHATWG format, on a real server.

Most tests serve :class:`EventStream` over a scripted :class:`FrameSource` from an extra route of
the live test server, so that framing, heartbeats, disconnects, frozen clients and shutdown are
checked on the response itself; the others use the job streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request
from web_support import SOON, Frame, LiveServer, StartServer, frames, raw_socket, wait_until

import underway.web.sse as sse_module
import underway.web.streams as streams
from underway.web.api import API
from underway.web.sse import EventStream, frame, retry_frame

pytestmark = pytest.mark.timeout(30)


class Script:
    """A :class:`~underway.web.sse.FrameSource`: ``frames`` first, then ``repeat`` (if any) on
    every call, else nothing (so the stream sends heartbeats) until closed."""

    def __init__(self, frames: list[bytes], repeat: bytes = b"", count: int = 0) -> None:
        self.frames = list(frames)
        self.repeat = repeat
        self.count = count
        self.closed = threading.Event()

    async def next(self, timeout: float) -> bytes | None:
        if self.frames:
            return self.frames.pop(0)
        if self.repeat and self.count > 0:
            self.count -= 1
            return self.repeat
        if self.repeat:
            return None
        await asyncio.sleep(timeout)
        return b""

    def close(self) -> None:
        self.closed.set()


def serve_script(live: LiveServer, script: Script, path: str = "/spec/stream") -> str:
    """Serve ``script`` at ``path`` of the live server (with its API's settings); the URL."""
    api: API = live.web.state.underway

    async def endpoint(_request: Request) -> EventStream:
        settings = api.settings
        return EventStream(
            script,
            streams=api.sse_streams,
            ping_interval=settings.sse_ping_interval,
            send_timeout=settings.sse_send_timeout,
            retry=settings.sse_retry,
        )

    live.web.add_route(path, endpoint)
    return f"{live.base}{path}"


def open_streams(live: LiveServer) -> int:
    api: API = live.web.state.underway
    return live.on_server_loop(lambda: len(api.sse_streams))


@contextlib.contextmanager
def reading(url: str, **kwargs: object) -> Iterator[tuple[httpx.Response, Iterator[Frame]]]:
    with (
        httpx.Client(timeout=10, trust_env=False) as client,
        client.stream("GET", url, **kwargs) as response,  # type: ignore[arg-type]
    ):
        assert response.status_code == 200
        yield response, frames(response.iter_lines())


# -- framing (pure) -----------------------------------------------------------------------------


def test_frame_fields_and_multiline_data() -> None:
    assert frame("x", event="note", id="7") == b"id: 7\nevent: note\ndata: x\n\n"
    assert frame("a\nb\r\nc\rd") == b"data: a\ndata: b\ndata: c\ndata: d\n\n"
    assert frame("") == b"data: \n\n"  # an event with empty data (one empty data line)
    assert frame("trailing\n") == b"data: trailing\ndata: \n\n"
    assert retry_frame(2000) == b"retry: 2000\n\n"


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "end\r\nid: 9"])
def test_no_field_injection_through_event_or_id(bad: str) -> None:
    with pytest.raises(ValueError, match="CR"):
        frame("x", event=bad)
    with pytest.raises(ValueError, match="CR"):
        frame("x", id=bad)
    with pytest.raises(ValueError, match="NUL"):
        frame("x", id="a\0b")


# -- on the wire --------------------------------------------------------------------------------


def test_multiline_data_arrives_as_sent(live: LiveServer) -> None:
    texts = ["one\ntwo\r\nthree\rfour", "", "single", '{"json": "line"}']
    url = serve_script(live, Script([frame(t, event="note", id=str(i)) for i, t in enumerate(texts)]))
    with reading(url) as (response, stream):
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-accel-buffering"] == "no"
        assert response.headers["content-encoding"] == "identity"
        events = list(itertools.islice((f for f in stream if f.event == "note"), len(texts)))
    assert [f.data for f in events] == [t.replace("\r\n", "\n").replace("\r", "\n") for t in texts]
    assert [f.id for f in events] == ["0", "1", "2", "3"]
    assert [n for n, _ in events[0].fields] == ["id", "event", "data", "data", "data", "data"]


def test_never_compressed(live: LiveServer) -> None:
    url = serve_script(live, Script([frame("x" * 5000, event="big")]))
    with reading(url, headers={"Accept-Encoding": "gzip, br, deflate"}) as (response, stream):
        assert response.headers["content-encoding"] == "identity"
        big = next(f for f in stream if f.event == "big")
    assert big.data == "x" * 5000


def test_retry_once_then_heartbeats_at_the_interval(start: StartServer) -> None:
    interval = 0.1
    live = start(sse_ping_interval=interval, sse_retry=1.5)
    url = serve_script(live, Script([frame("hello", event="greeting")]))
    with reading(url) as (_, stream):
        first = next(stream)
        started = time.monotonic()
        seen = [next(stream) for _ in range(5)]
        elapsed = time.monotonic() - started
    assert first.fields == [("retry", "1500")]
    assert seen[0].event == "greeting"
    pings = seen[1:]
    assert all(f.comments == ["ping"] and not f.fields for f in pings), [f.fields for f in pings]
    assert not any(f.get("retry") for f in seen)
    # Four pings are at least three intervals apart (not faster than configured).
    assert elapsed >= 3 * interval


def test_no_heartbeat_while_frames_flow(start: StartServer) -> None:
    live = start(sse_ping_interval=60)
    url = serve_script(live, Script([], repeat=frame("tick", event="tick"), count=200))
    with reading(url) as (_, stream):
        received = list(stream)
    assert [f.event for f in received[1:]] == ["tick"] * 200
    assert not any(f.comments for f in received)


def test_disconnect_releases_the_subscription(start: StartServer) -> None:
    """An idle stream (no frame, no heartbeat due for a minute) notices its client leaving:
    the bus subscription and the stream are released."""
    live = start(sse_ping_interval=60)
    job = live.submit("hold", {"gate": "d"})
    live.wait_running(job["id"])

    def subscribers() -> int:
        return live.on_server_loop(lambda: live.app.bus().subscribers)

    before = subscribers()
    client = httpx.Client(base_url=live.api, timeout=10, trust_env=False)
    with client.stream("GET", f"/jobs/{job['id']}/stream") as response:
        lines = response.iter_lines()
        next(line for line in lines if line.startswith("event: status"))
        wait_until(lambda: subscribers() == before + 1, what="the subscription")
        assert open_streams(live) == 1
    client.close()  # the connection goes away while the stream waits for an event
    wait_until(lambda: subscribers() == before, what="the subscription to go")
    wait_until(lambda: open_streams(live) == 0, what="the stream to end")


def test_disconnect_closes_the_source(start: StartServer) -> None:
    live = start(sse_ping_interval=60)
    script = Script([frame("x", event="one")])
    url = serve_script(live, script)
    with reading(url) as (_, stream):
        next(f for f in stream if f.event == "one")
    assert script.closed.wait(SOON), "the source was not closed after the client left"
    wait_until(lambda: open_streams(live) == 0, what="the stream to end")


def test_one_task_per_connection(start: StartServer) -> None:
    """Only the server's own request task runs a stream: no helper task per connection."""
    live = start(sse_ping_interval=60)
    job = live.submit("hold", {"gate": "t"})
    live.wait_running(job["id"])
    web_dir = str(Path(sse_module.__file__).parent)

    def helpers() -> list[str]:
        found = []
        for task in asyncio.all_tasks():
            files = [f.f_code.co_filename for f in task.get_stack(limit=100)]
            if files and "uvicorn/protocols" in files[0]:
                continue  # a request task: the connection's one task
            if task.get_name() in ("underway-key-watch", "underway-store-watch"):
                continue  # one per server, not per connection
            if any(web_dir in f or "/starlette/" in f or "/anyio/" in f for f in files):
                found.append(f"{task.get_name()}: {task.get_coro()!r}")
        return found

    clients = [httpx.Client(base_url=live.api, timeout=10, trust_env=False) for _ in range(5)]
    try:
        with contextlib.ExitStack() as stack:
            readers = []  # kept: a line iterator that is collected closes its connection
            for client in clients:
                response = stack.enter_context(client.stream("GET", f"/jobs/{job['id']}/stream"))
                readers.append(response.iter_lines())
                next(line for line in readers[-1] if line.startswith("event: status"))
            wait_until(lambda: open_streams(live) == 5, what=f"five streams, not {open_streams(live)}")
            assert live.on_server_loop(helpers) == []
    finally:
        for client in clients:
            client.close()


def test_send_timeout_drops_a_frozen_client_and_others_go_on(start: StartServer) -> None:
    live = start(sse_send_timeout=0.5, sse_ping_interval=60)
    chunk = frame("x" * 16_000, event="bulk")
    count = 2000  # ~32 MB: far more than the socket buffers of a client that reads nothing
    serve_script(live, Script([], repeat=chunk, count=count), "/spec/frozen")
    reader_url = serve_script(live, Script([], repeat=chunk, count=count), "/spec/reader")
    frozen = raw_socket(live.port, b"GET /spec/frozen HTTP/1.1\r\nHost: x\r\n\r\n", rcvbuf=4096)
    try:
        wait_until(lambda: open_streams(live) == 1, what="the frozen stream")
        with reading(reader_url) as (_, stream):
            bulk = sum(1 for f in stream if f.event == "bulk")
        assert bulk == count, "the reading client got every frame"
        # The frozen one is dropped once a send waited sse_send_timeout: the server closes it.
        wait_until(lambda: open_streams(live) == 0, 10, what="the frozen stream to be dropped")
        frozen.settimeout(SOON)
        received = 0
        with contextlib.suppress(ConnectionResetError):
            while data := frozen.recv(1 << 20):
                received += len(data)
        assert received < count * len(chunk), "the frozen client got everything: it was not frozen"
    finally:
        frozen.close()


def test_refused_with_503_once_stopping(live: LiveServer) -> None:
    url = serve_script(live, Script([frame("x")]))
    api: API = live.web.state.underway
    live.on_server_loop(api.stop_streams)
    response = httpx.get(url, timeout=10, trust_env=False)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "shutting_down"
    assert response.headers["retry-after"] == "1"


def test_shutdown_with_open_streams_ends_each_body_cleanly(start: StartServer) -> None:
    live = start(sse_ping_interval=60)
    url = serve_script(live, Script([frame("hello", event="greeting")]))
    outcomes: list[str] = []

    def watch() -> None:
        try:
            with reading(url) as (_, stream):
                for _ in stream:
                    pass
            outcomes.append("clean")
        except httpx.HTTPError as exc:
            outcomes.append(repr(exc))

    threads = [threading.Thread(target=watch) for _ in range(6)]
    for thread in threads:
        thread.start()
    wait_until(lambda: open_streams(live) == 6, what="six open streams")
    live.stop()  # fails the test if the server does not stop within its STOP_LIMIT
    for thread in threads:
        thread.join(SOON)
    assert outcomes == ["clean"] * 6


def test_client_gone_before_the_first_frame(start: StartServer) -> None:
    """A client that sends its request and leaves at once does not leave a stream behind."""
    live = start(sse_ping_interval=60)
    serve_script(live, Script([]))
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", live.port)) as sock:
            sock.sendall(b"GET /spec/stream HTTP/1.1\r\nHost: x\r\n\r\n")
    wait_until(lambda: open_streams(live) == 0, what="the streams to end")


def test_job_stream_replays_history_in_pages_and_ends(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """History is read a page at a time; the end comes whether the job's last event falls
    inside a page or exactly at the end of a full one."""
    job = live.submit("hold", {"gate": "pg", "steps": 2})
    live.gates.open("pg/1")
    live.gates.open("pg/2")
    live.gates.open("pg")
    last = live.wait_status(job["id"], "succeeded")["last_seq"]
    stored = [e["seq"] for e in live.events(job["id"])]
    for page in (1, 2, last - 1, last, last + 1):
        monkeypatch.setattr(streams, "HISTORY_PAGE", page)
        with reading(f"{live.api}/jobs/{job['id']}/stream") as (_, stream):
            received = [f for f in stream if f.event is not None]
        assert [int(f.id or 0) for f in received[:-1]] == stored, page
        assert received[-1].event == "end", page
        assert received[-1].json() == {"job_id": job["id"], "status": "succeeded"}
