"""The WebSocket protocol (/ws) on a real server; and the authenticate hook on every route."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import httpx
import pytest
from starlette.requests import HTTPConnection
from web_support import SOON, LiveServer, StartServer, assert_error, live_streams, wait_until
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from underway.auth import Principal

pytestmark = pytest.mark.timeout(30)


class Socket:
    """A WebSocket client speaking underway's protocol: requests get replies, pushes are kept."""

    def __init__(self, live: LiveServer, **kwargs: Any) -> None:
        kwargs.setdefault("proxy", None)
        kwargs.setdefault("open_timeout", SOON)
        self._stack = contextlib.ExitStack()
        self.conn: ClientConnection = self._stack.enter_context(connect(live.ws_url, **kwargs))
        self.pushes: list[dict[str, Any]] = []
        self.replies: dict[Any, dict[str, Any]] = {}
        self.log: list[dict[str, Any]] = []  # every message, in order
        self._ids = 0

    def __enter__(self) -> Socket:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def receive(self, timeout: float = SOON) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(self.conn.recv(timeout=timeout))
        self.log.append(message)
        if "reply" in message:
            self.replies[message["reply"]] = message
        else:
            self.pushes.append(message)
        return message

    def send(self, message: Any) -> None:
        self.conn.send(message if isinstance(message, str) else json.dumps(message))

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        self._ids += 1
        request_id = f"r{self._ids}"
        self.send({"id": request_id, "op": op, **fields})
        return self.reply(request_id)

    def reply(self, request_id: Any, timeout: float = SOON) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while request_id not in self.replies:
            self.receive(max(0.01, deadline - time.monotonic()))
        return self.replies.pop(request_id)

    def push(self, predicate: Any = None, timeout: float = SOON) -> dict[str, Any]:
        """The first kept or next push that matches ``predicate`` (removed from the kept ones)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, message in enumerate(self.pushes):
                if predicate is None or predicate(message):
                    return self.pushes.pop(i)
            self.receive(max(0.01, deadline - time.monotonic()))

    def end_of(self, sub: str, timeout: float = SOON) -> list[dict[str, Any]]:
        """Every push of ``sub`` up to and including its ``end``."""
        got: list[dict[str, Any]] = []
        while not got or "end" not in got[-1]:
            got.append(self.push(lambda m: m.get("sub") == sub, timeout))
        return got

    def closed_with(self, timeout: float = SOON) -> int | None:
        """Read until the server closes the socket; its close code."""
        try:
            while True:
                self.receive(timeout)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd is not None else None


def ok(reply: dict[str, Any]) -> dict[str, Any]:
    assert reply["ok"] is True, reply
    return reply


def error_of(reply: dict[str, Any]) -> dict[str, Any]:
    assert reply["ok"] is False, reply
    assert set(reply["error"]) >= {"code", "message"}
    error: dict[str, Any] = reply["error"]
    return error


# -- operations ---------------------------------------------------------------------------------


def test_ping(live: LiveServer) -> None:
    with Socket(live) as ws:
        assert ws.request("ping") == {"reply": "r1", "ok": True, "pong": True}
        ws.send({"id": 42, "op": "ping"})
        assert ws.reply(42) == {"reply": 42, "ok": True, "pong": True}


def test_subscribe_to_a_job_replays_after_then_live_then_end(live: LiveServer) -> None:
    job = live.submit("hold", {"gate": "w", "steps": 2})
    live.gates.open("w/1")
    wait_until(lambda: any(e["type"] == "log" for e in live.events(job["id"])), what="step 1's log")
    with Socket(live) as ws:
        reply = ok(ws.request("subscribe", job=job["id"], after=1))
        sub = reply["sub"]
        assert isinstance(sub, str)
        assert ws.pushes == [] or all(p["sub"] == sub for p in ws.pushes)
        replayed = ws.push(lambda m: m.get("sub") == sub)
        assert replayed["event"]["seq"] == 2  # nothing at or before ``after``
        ws.push(lambda m: m.get("sub") == sub and m["event"]["type"] == "log")
        live.gates.open("w/2")
        live_log = ws.push(lambda m: m.get("sub") == sub and m["event"]["type"] == "log")
        assert live_log["event"]["data"]["message"] == "step 2"
        live.gates.open("w")
        rest = ws.end_of(sub)
    assert rest[-1] == {"sub": sub, "end": {"job_id": job["id"], "status": "succeeded"}}
    assert rest[-2]["event"]["data"]["status"] == "succeeded"
    assert all(set(p["event"]) == {"seq", "job_id", "type", "at", "data"} for p in rest[:-1])


def test_reply_comes_before_the_pushes(live: LiveServer) -> None:
    job = live.submit("echo")
    live.wait_status(job["id"], "succeeded")
    with Socket(live) as ws:
        ws.send({"id": "s", "op": "subscribe", "job": job["id"]})
        first = ws.receive()
        assert first["reply"] == "s"
        assert first["ok"] is True
        pushes = ws.end_of(first["sub"])
    assert [p["event"]["seq"] for p in pushes[:-1]] == [1, 2, 3]


def test_subscribe_to_a_queue_snapshot_then_events(live: LiveServer) -> None:
    held = live.submit("hold", {"gate": "wq"}, queue="wsq")
    live.wait_running(held["id"])
    with Socket(live) as ws:
        sub = ok(ws.request("subscribe", queue="wsq"))["sub"]
        snapshot = ws.push(lambda m: m.get("sub") == sub)
        assert [j["id"] for j in snapshot["snapshot"]["jobs"]] == [held["id"]]
        live.submit("echo", {"value": 9})  # another queue: not pushed
        later = live.submit("echo", {"value": 1}, queue="wsq")
        live.gates.open("wq")
        finished: set[str] = set()
        seen: list[dict[str, Any]] = []
        while finished != {held["id"], later["id"]}:
            push = ws.push(lambda m: m.get("sub") == sub)
            event = push["event"]
            seen.append(event)
            if event["type"] == "status" and event["data"]["status"] == "succeeded":
                finished.add(event["job_id"])
    assert {e["job_id"] for e in seen} == {held["id"], later["id"]}


def test_two_subscriptions_on_one_socket_then_unsubscribe(live: LiveServer) -> None:
    a = live.submit("hold", {"gate": "two-a", "steps": 2})
    b = live.submit("hold", {"gate": "two-b", "steps": 2})
    live.wait_running(a["id"])
    live.wait_running(b["id"])
    with Socket(live) as ws:
        sub_a = ok(ws.request("subscribe", job=a["id"]))["sub"]
        sub_b = ok(ws.request("subscribe", job=b["id"]))["sub"]
        assert sub_a != sub_b
        live.gates.open("two-a/1")
        live.gates.open("two-b/1")
        got_a = ws.push(lambda m: m.get("sub") == sub_a and m["event"]["type"] == "log")
        got_b = ws.push(lambda m: m.get("sub") == sub_b and m["event"]["type"] == "log")
        assert got_a["event"]["job_id"] == a["id"]
        assert got_b["event"]["job_id"] == b["id"]
        assert ok(ws.request("unsubscribe", sub=sub_a))["sub"] == sub_a
        error = error_of(ws.request("unsubscribe", sub=sub_a))
        assert error["code"] == "invalid_arguments"
        for gate in ("two-a/2", "two-a", "two-b/2", "two-b"):
            live.gates.open(gate)
        ws.end_of(sub_b)
        live.wait_status(a["id"], "succeeded")
        assert ws.request("ping")["pong"] is True  # anything pushed for a by now has arrived
    late = [p for p in ws.pushes if p.get("sub") == sub_a and "event" in p]
    assert all(p["event"]["seq"] <= got_a["event"]["seq"] + 1 for p in late), late
    assert not any("end" in p for p in ws.pushes if p.get("sub") == sub_a)


def test_unsubscribe_while_events_flow_stops_the_pushes(live: LiveServer) -> None:
    job = live.submit("flood", {"gate": "uf", "count": 3000, "size": 100})
    live.wait_running(job["id"])
    with Socket(live) as ws:
        sub = ok(ws.request("subscribe", job=job["id"]))["sub"]
        everything = ok(ws.request("subscribe"))["sub"]
        live.gates.open("uf")
        ws.push(lambda m: m.get("sub") == sub and m["event"]["type"] == "log")
        ok(ws.request("unsubscribe", sub=sub))
        after_reply = len(ws.log)
        ok(ws.request("unsubscribe", sub=everything))
        ws.request("ping")
        late = [m for m in ws.log[after_reply:] if m.get("sub") == sub]
        assert late == [], f"{len(late)} pushes after the unsubscribe reply"


def test_closing_sockets_while_events_flow_leaves_nothing_behind(live: LiveServer) -> None:
    job = live.submit("flood", {"gate": "cf", "count": 3000, "size": 100})
    live.wait_running(job["id"])
    sockets = [Socket(live, close_timeout=0.5) for _ in range(4)]
    for ws in sockets:
        ok(ws.request("subscribe", job=job["id"]))
        ok(ws.request("subscribe", queue="default"))
    live.gates.open("cf")
    for ws in sockets:
        ws.push(lambda m: "event" in m and m["event"]["type"] == "log")
        ws.__exit__()  # gone in the middle of the flood
    live.wait_status(job["id"], "succeeded", timeout=20)
    wait_until(lambda: live_streams(live, "websocket") == 0, what="the sockets to be counted out")
    live.stop()  # fails if a subscription outlived its socket and held the shutdown


def test_cancel(live: LiveServer) -> None:
    queued = live.submit("echo", delay=3600)
    running = live.submit("hold", {"gate": "never"})
    live.wait_running(running["id"])
    with Socket(live) as ws:
        assert ok(ws.request("cancel", job=queued["id"]))["job"]["status"] == "cancelled"
        reply = ok(ws.request("cancel", job=running["id"]))
        assert reply["job"]["cancel_requested"] is True
        assert error_of(ws.request("cancel", job=queued["id"]))["code"] == "invalid_state"
        assert error_of(ws.request("cancel", job="nope"))["code"] == "job_not_found"
        assert error_of(ws.request("cancel"))["code"] == "invalid_arguments"
    live.wait_status(running["id"], "cancelled")


def test_answer(live: LiveServer) -> None:
    job = live.submit("ask")
    not_waiting = live.submit("echo", delay=3600)
    live.wait_status(job["id"], "waiting")
    with Socket(live) as ws:
        assert error_of(ws.request("answer", job=job["id"], value="maybe"))["code"] == "invalid_arguments"
        assert error_of(ws.request("answer", job=job["id"]))["code"] == "invalid_arguments"
        assert error_of(ws.request("answer", job=not_waiting["id"], value="yes"))["code"] == "invalid_state"
        reply = ok(ws.request("answer", job=job["id"], value="no"))
        assert reply["job"]["id"] == job["id"]
    assert live.wait_status(job["id"], "succeeded")["result"] == {"answer": "no"}


# -- errors as replies --------------------------------------------------------------------------


def test_bad_messages_get_error_replies(live: LiveServer) -> None:
    with Socket(live) as ws:
        ws.send("{not json")
        reply = ws.reply(None)
        assert error_of(reply)["code"] == "bad_message"
        ws.send("[1, 2]")
        assert error_of(ws.reply(None))["code"] == "bad_message"
        ws.send({"id": 5})
        assert error_of(ws.reply(None))["code"] == "bad_message"
        unknown = ws.request("explode")
        assert unknown["reply"] == "r1"
        assert error_of(unknown)["code"] == "unknown_op"
        assert error_of(ws.request("subscribe", job="nope"))["code"] == "job_not_found"
        assert error_of(ws.request("subscribe", job=5))["code"] == "invalid_arguments"
        assert error_of(ws.request("subscribe", job="x", after=-1))["code"] == "invalid_arguments"
        assert error_of(ws.request("_handle"))["code"] == "unknown_op"
        # The socket is still fine.
        assert ws.request("ping")["pong"] is True


def test_too_many_subscriptions(start: StartServer) -> None:
    live = start(ws_max_subscriptions=2)
    job = live.submit("hold", {"gate": "many"})
    with Socket(live) as ws:
        ok(ws.request("subscribe", job=job["id"]))
        ok(ws.request("subscribe", queue="default"))
        error = error_of(ws.request("subscribe", job=job["id"]))
        assert error["code"] == "too_many_requests"
        assert "2" in error["message"]


# -- close codes --------------------------------------------------------------------------------


def test_wrong_origin_is_closed_with_4403(start: StartServer) -> None:
    live = start(allowed_origins=("http://good.example",))
    with Socket(live, origin="http://evil.example") as ws:
        assert ws.closed_with() == 4403
    with Socket(live, origin="http://good.example") as ws:
        assert ws.request("ping")["pong"] is True
    with Socket(live, origin=f"http://127.0.0.1:{live.port}") as ws:  # the page's own origin
        assert ws.request("ping")["pong"] is True


def test_without_allowed_origins_only_the_same_origin_may_connect(live: LiveServer) -> None:
    with Socket(live, origin="http://evil.example") as ws:
        assert ws.closed_with() == 4403
    with Socket(live, origin=f"http://127.0.0.1:{live.port}") as ws:
        assert ws.request("ping")["pong"] is True


def test_too_many_connections_is_closed_with_4429(start: StartServer) -> None:
    live = start(ws_max_connections=1)
    with Socket(live) as first:
        assert first.request("ping")["pong"] is True
        with Socket(live) as second:
            assert second.closed_with() == 4429
        assert first.request("ping")["pong"] is True
    wait_until(lambda: live_streams(live, "websocket") == 0, what="the first socket to be counted out")
    with Socket(live) as third:
        assert third.request("ping")["pong"] is True


def test_message_too_big_is_closed_with_1009(start: StartServer) -> None:
    live = start(ws_max_message=1000)
    with Socket(live) as ws:
        assert ws.request("ping")["pong"] is True
        ws.send(json.dumps({"id": 1, "op": "ping", "pad": "x" * 1500}))
        assert ws.closed_with() == 1009
    with Socket(live) as ws:  # far over: refused by the protocol layer, same code
        ws.send(json.dumps({"id": 1, "op": "ping", "pad": "x" * 20_000}))
        assert ws.closed_with() == 1009


# -- the authenticate hook ----------------------------------------------------------------------


async def bearer(conn: HTTPConnection) -> Principal | None:
    letmein = conn.headers.get("authorization") == "Bearer letmein"
    return Principal(owner="ada", role="admin") if letmein else None


def test_unauthenticated_websocket_is_closed_with_4401(start: StartServer) -> None:
    live = start(authenticate=bearer, headers={"Authorization": "Bearer letmein"})
    with Socket(live) as ws:
        assert ws.closed_with() == 4401
    with Socket(live, additional_headers={"Authorization": "Bearer letmein"}) as ws:
        assert ws.request("ping")["pong"] is True


def test_unauthenticated_http_is_401(start: StartServer) -> None:
    live = start(authenticate=bearer, headers={"Authorization": "Bearer letmein"})
    anonymous = httpx.Client(base_url=live.api, timeout=10, trust_env=False)
    live.clients.append(anonymous)
    for method, path in (
        ("GET", "/jobs"),
        ("POST", "/jobs"),
        ("GET", "/jobs/x"),
        ("GET", "/jobs/x/events"),
        ("GET", "/jobs/x/stream"),
        ("GET", "/stream"),
        ("POST", "/jobs/x/cancel"),
        ("POST", "/jobs/cancel"),
        ("DELETE", "/jobs/x"),
        ("GET", "/tasks"),
        ("GET", "/workers"),
        ("GET", "/metrics"),
    ):
        response = anonymous.request(method, path, json={"task": "echo"} if method == "POST" else None)
        assert_error(response, 401, "unauthenticated")
    assert anonymous.get("/healthz").status_code == 200  # liveness needs no principal
    wrong = anonymous.get("/jobs", headers={"Authorization": "Bearer nope"})
    assert_error(wrong, 401, "unauthenticated")
    allowed = live.client().get("/jobs")
    assert allowed.status_code == 200


def test_subscribe_to_a_finished_job_after_its_end_gets_the_end(live: LiveServer) -> None:
    job = live.submit("echo")
    done = live.wait_status(job["id"], "succeeded")
    with Socket(live) as ws:
        sub = ok(ws.request("subscribe", job=job["id"], after=done["last_seq"]))["sub"]
        assert ws.end_of(sub) == [{"sub": sub, "end": {"job_id": job["id"], "status": "succeeded"}}]
        sub = ok(ws.request("subscribe", job=job["id"], after=done["last_seq"] - 1))["sub"]
        pushes = ws.end_of(sub)
        assert [p["event"]["seq"] for p in pushes[:-1]] == [done["last_seq"]]


def test_subscribe_after_beyond_the_last_event_gets_only_the_end(live: LiveServer) -> None:
    """Events numbered up to ``after`` are not pushed, even those still to come; the end is."""
    job = live.submit("hold", {"gate": "wb"})
    live.wait_running(job["id"])
    with Socket(live) as ws:
        sub = ok(ws.request("subscribe", job=job["id"], after=999))["sub"]
        live.gates.open("wb")
        pushes = ws.end_of(sub)
    assert pushes[:-1] == []
    assert pushes[-1]["end"]["status"] == "succeeded"


def test_a_batch_subscription_pushes_a_snapshot_coalesced_updates_and_the_end(live: LiveServer) -> None:
    made = live.client().post(
        "/batches", json={"task": "hold", "items": [{"gate": "ws-batch"} for _ in range(6)]}
    )
    batch_id = made.json()["id"]
    with Socket(live) as ws:
        sub = ok(ws.request("subscribe", batch=batch_id))["sub"]
        snapshot = ws.push(lambda m: m.get("sub") == sub and "snapshot" in m)["snapshot"]
        assert (snapshot["id"], snapshot["total"]) == (batch_id, 6)
        live.gates.open("ws-batch")
        end = ws.push(lambda m: m.get("sub") == sub and "end" in m)["end"]
        assert end["status"] == "completed"
        assert end["counts"]["succeeded"] == 6
        updates = [p["batch"] for p in ws.pushes if p.get("sub") == sub and "batch" in p]
        assert all(u["batch"]["id"] == batch_id for u in updates)
        assert [u["batch"]["counts"]["succeeded"] for u in updates] == sorted(
            u["batch"]["counts"]["succeeded"] for u in updates
        )
        assert error_of(ws.request("subscribe", batch="nope"))["code"] == "batch_not_found"
        assert error_of(ws.request("subscribe", batch=5))["code"] == "invalid_arguments"
