"""Accounts and ownership on a real server: keys, stream tokens, the IDOR matrix (user B against
each of user A's jobs and batches on every route, stream and WebSocket op), limits, browser
rules. The matrix runs on both stores."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from postgres_support import fresh_postgres_url
from web_support import (
    SOON,
    LiveServer,
    assert_error,
    events_only,
    frames,
    server_settings,
    start_server,
    wait_until,
)
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

import underway
from underway.auth import token_version
from underway.web import create_app

ROLES = {"admin": "admin", "alice": "user", "bob": "user"}


def make_keys(url: str, who: dict[str, str] = ROLES) -> dict[str, str]:
    """Create a key for each owner (with its role) in the store at ``url``: ``{owner: key}``."""

    async def create() -> dict[str, str]:
        async with underway.App(url) as app:
            return {owner: (await app.accounts.create_key(owner, role))[1] for owner, role in who.items()}

    return asyncio.run(create())


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Tenants:
    """A server with authentication on and a key for an admin, alice and bob."""

    live: LiveServer
    keys: dict[str, str]

    def client(self, who: str | None) -> httpx.Client:
        """Requests as ``who`` (``None``: no credentials at all)."""
        headers = {} if who is None else bearer(self.keys[who])
        client = httpx.Client(base_url=self.live.api, timeout=10, trust_env=False, headers=headers)
        self.live.clients.append(client)
        return client

    def submit(self, who: str, task: str, args: dict[str, Any] | None = None, **more: Any) -> dict[str, Any]:
        response = self.client(who).post("/jobs", json={"task": task, "args": args or {}, **more})
        assert response.status_code == 201, response.text
        job: dict[str, Any] = response.json()
        return job

    def token(self, who: str, **scope: Any) -> str:
        response = self.client(who).post("/stream-tokens", json=scope)
        assert response.status_code == 201, response.text
        token: str = response.json()["token"]
        return token


def start_tenants(url: str, **settings: Any) -> Tenants:
    keys = make_keys(url)
    values = {"auth": "on", "key_check_interval": 0.2, **settings}
    live = start_server(server_settings(url, **values), headers=bearer(keys["admin"]))
    return Tenants(live, keys)


@pytest.fixture(params=["sqlite", "postgres"])
def tenants(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Tenants]:
    if request.param == "postgres":
        urls = fresh_postgres_url()
        url = next(urls)
    else:
        urls, url = iter(()), f"sqlite:///{tmp_path / 'auth.db'}"
    found = start_tenants(url)
    try:
        yield found
    finally:
        found.live.stop()
        for _ in urls:  # drops the schema
            pass


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Tenants]:
    """The same on SQLite only, for the tests of one mechanism."""
    found = start_tenants(f"sqlite:///{tmp_path / 'auth.db'}")
    try:
        yield found
    finally:
        found.live.stop()


# -- the IDOR matrix ----------------------------------------------------------------------------


@dataclass
class AliceThings:
    done: dict[str, Any]
    waiting: dict[str, Any]
    running: dict[str, Any]
    batch: dict[str, Any]


def alice_things(t: Tenants) -> AliceThings:
    done = t.submit("alice", "echo", {"value": 1})
    waiting = t.submit("alice", "ask")
    running = t.submit("alice", "hold", {"gate": "alice"})
    made = t.client("alice").post("/batches", json={"task": "item", "items": [{"text": "a"}, {"text": "b"}]})
    assert made.status_code == 201, made.text
    t.live.wait_status(done["id"], "succeeded")
    t.live.wait_status(waiting["id"], "waiting")
    t.live.wait_running(running["id"])
    return AliceThings(done, waiting, running, made.json())


JOB_ROUTES = [
    ("GET", "/jobs/{id}", None),
    ("GET", "/jobs/{id}/events", None),
    ("GET", "/jobs/{id}/events?wait=1", None),
    ("GET", "/jobs/{id}/stream", None),
    ("POST", "/jobs/{id}/cancel", None),
    ("POST", "/jobs/{id}/retry", None),
    ("POST", "/jobs/{id}/answer", {"value": "yes"}),
    ("DELETE", "/jobs/{id}", None),
    ("POST", "/stream-tokens", {"job": "{id}"}),
]
BATCH_ROUTES = [
    ("GET", "/batches/{id}", None),
    ("GET", "/batches/{id}/items", None),
    ("GET", "/batches/{id}/results", None),
    ("GET", "/batches/{id}/stream", None),
    ("POST", "/batches/{id}/cancel", None),
    ("POST", "/batches/{id}/pause", None),
    ("POST", "/batches/{id}/resume", None),
    ("POST", "/batches/{id}/retry-failed", None),
    ("GET", "/stream?batch={id}", None),
    ("POST", "/stream-tokens", {"batch": "{id}"}),
]


def filled(value: Any, target: str) -> Any:
    return json.loads(json.dumps(value).replace("{id}", target)) if value is not None else None


def request_as(client: httpx.Client, method: str, path: str, body: Any) -> httpx.Response:
    if method == "GET" and ("/stream" in path):
        with client.stream(method, path) as response:
            response.read()
            return response
    return client.request(method, path, json=body)


def test_another_users_jobs_and_batches_are_not_found_on_any_route(tenants: Tenants) -> None:
    alice = alice_things(tenants)
    bob = tenants.client("bob")
    for job in (alice.done, alice.waiting, alice.running):
        for method, path, body in JOB_ROUTES:
            response = request_as(bob, method, path.replace("{id}", job["id"]), filled(body, job["id"]))
            assert_error(response, 404, "job_not_found")
    for method, path, body in BATCH_ROUTES:
        batch_id = alice.batch["id"]
        response = request_as(bob, method, path.replace("{id}", batch_id), filled(body, batch_id))
        assert_error(response, 404, "batch_not_found")
    # Nothing of alice's changed: the waiting job still waits, the running one still runs.
    assert tenants.live.job(alice.waiting["id"])["status"] == "waiting"
    assert tenants.live.job(alice.running["id"])["status"] == "running"
    tenants.live.gates.open_all()


def test_lists_counts_and_cancel_all_leave_out_another_users_jobs(tenants: Tenants) -> None:
    alice = alice_things(tenants)
    mine = tenants.submit("bob", "hold", {"gate": "bob"})
    tenants.live.wait_running(mine["id"])
    bob = tenants.client("bob")
    listed = bob.get("/jobs").json()["jobs"]
    assert [job["id"] for job in listed] == [mine["id"]]
    assert bob.get("/batches").json()["batches"] == []
    queues = bob.get("/queues").json()["queues"]
    assert [(q["name"], q["running"], sum(q["counts"].values())) for q in queues] == [("default", 1, 1)]
    assert_error(bob.get("/jobs", params={"owner": "alice"}), 403, "forbidden")
    assert bob.post("/jobs/cancel", json={}).json() == {"cancelled": 1}
    assert tenants.live.job(alice.running["id"])["status"] == "running"
    assert tenants.live.job(alice.waiting["id"])["status"] == "waiting"
    # An admin sees both, and filters by owner.
    admin = tenants.client("admin")
    everyone = {job["owner"] for job in admin.get("/jobs").json()["jobs"]}
    assert everyone == {"alice", "bob"}
    only = admin.get("/jobs", params={"owner": "alice"}).json()["jobs"]
    assert {job["owner"] for job in only} == {"alice"}
    assert len(only) == 5
    tenants.live.gates.open_all()


def test_idempotency_keys_are_per_owner(tenants: Tenants) -> None:
    first = tenants.submit("alice", "echo", {"value": 1}, idempotency_key="k1")
    again = tenants.submit("alice", "echo", {"value": 1}, idempotency_key="k1")
    assert again["id"] == first["id"]
    bobs = tenants.submit("bob", "echo", {"value": 2}, idempotency_key="k1")  # other args: no 409
    assert bobs["id"] != first["id"]
    assert bobs["owner"] == "bob"


def test_multiplexed_streams_carry_no_event_of_another_user(secured: Tenants) -> None:
    alice = secured.submit("alice", "hold", {"gate": "a", "steps": 1})
    mine = secured.submit("bob", "hold", {"gate": "b", "steps": 1})
    secured.live.wait_running(alice["id"])
    secured.live.wait_running(mine["id"])
    bob = secured.client("bob")
    with bob.stream("GET", "/stream", params={"jobs": f"{alice['id']},{mine['id']}"}) as response:
        snapshot = next(f for f in frames(response.iter_lines()) if f.event == "snapshot").json()
        assert [job["id"] for job in snapshot["jobs"]] == [mine["id"]]
    with bob.stream("GET", "/stream") as response:
        stream = frames(response.iter_lines())
        snapshot = next(f for f in stream if f.event == "snapshot").json()
        assert [job["id"] for job in snapshot["jobs"]] == [mine["id"]]
        secured.live.gates.open("a/1")  # alice's log and progress go out first…
        wait_until(lambda: len(secured.live.events(alice["id"])) >= 4, what="alice's progress")
        secured.live.gates.open("b/1")  # …but the first event bob gets is his own
        event = next(events_only(stream)).json()
        assert event["job_id"] == mine["id"]
    secured.live.gates.open_all()


def test_websocket_ops_on_another_users_jobs_are_refused(tenants: Tenants) -> None:
    alice = alice_things(tenants)
    with Socket(tenants, "bob") as ws:
        for job in (alice.done, alice.waiting, alice.running):
            assert ws.error("subscribe", job=job["id"])["code"] == "job_not_found"
            assert ws.error("cancel", job=job["id"])["code"] == "job_not_found"
            assert ws.error("answer", job=job["id"], value="yes")["code"] == "job_not_found"
        assert ws.error("subscribe", batch=alice.batch["id"])["code"] == "batch_not_found"
        reply = ws.request("subscribe", jobs=[alice.running["id"]])
        assert reply["ok"], reply
        snapshot = ws.receive_push()
        assert snapshot["snapshot"]["jobs"] == []
    assert tenants.live.job(alice.waiting["id"])["status"] == "waiting"
    tenants.live.gates.open_all()


def test_users_may_not_use_admin_operations(secured: Tenants) -> None:
    bob = secured.client("bob")
    for method, path, body in (
        ("GET", "/workers", None),
        ("GET", "/metrics", None),
        ("POST", "/queues/default/pause", None),
        ("POST", "/queues/default/resume", None),
        ("PUT", "/queues/default/limit", {"concurrency": 2}),
    ):
        assert_error(bob.request(method, path, json=body), 403, "forbidden")
    someone = bob.post("/jobs", json={"task": "echo", "owner": "alice"})
    assert_error(someone, 403, "forbidden")
    made = secured.client("admin").post("/jobs", json={"task": "echo", "owner": "alice"})
    assert made.json()["owner"] == "alice"
    assert secured.client("alice").get(f"/jobs/{made.json()['id']}").status_code == 200


# -- stream tokens ------------------------------------------------------------------------------


def test_a_token_for_one_job_reads_cancels_and_answers_that_job_only(tenants: Tenants) -> None:
    alice = alice_things(tenants)
    anonymous = tenants.client(None)
    token = tenants.token("alice", job=alice.waiting["id"])
    q = {"token": token}
    assert anonymous.get(f"/jobs/{alice.waiting['id']}", params=q).status_code == 200
    for job in (alice.done, alice.running):  # another job of the same owner
        for method, path, body in JOB_ROUTES[:-1]:
            url = path.replace("{id}", job["id"])
            response = request_as(
                anonymous, method, url + ("&" if "?" in url else "?") + f"token={token}", body
            )
            assert response.status_code in (403, 404), (method, path, response.text)
            if response.status_code == 403:  # retry and delete are not for tokens at all
                assert_error(response, 403, "forbidden")
    assert [j["id"] for j in anonymous.get("/jobs", params=q).json()["jobs"]] == [alice.waiting["id"]]
    assert_error(anonymous.post("/jobs", params=q, json={"task": "echo"}), 403, "forbidden")
    assert_error(anonymous.get("/queues", params=q), 403, "forbidden")
    assert_error(anonymous.post("/stream-tokens", params=q, json={}), 403, "forbidden")
    # What a progress widget needs: its stream, and the answer and cancel buttons.
    with anonymous.stream("GET", f"/jobs/{alice.waiting['id']}/stream", params=q) as response:
        assert response.status_code == 200
        assert next(events_only(frames(response.iter_lines()))).event == "status"
    answered = anonymous.post(f"/jobs/{alice.waiting['id']}/answer", params=q, json={"value": "yes"})
    assert answered.status_code == 200, answered.text
    tenants.live.wait_status(alice.waiting["id"], "succeeded")
    batch_token = tenants.token("alice", batch=alice.batch["id"])
    assert anonymous.get(f"/batches/{alice.batch['id']}", params={"token": batch_token}).status_code == 200
    assert_error(
        anonymous.get(f"/jobs/{alice.running['id']}", params={"token": batch_token}), 404, "job_not_found"
    )
    with Socket(tenants, None, token=token) as ws:
        assert ws.error("cancel", job=alice.running["id"])["code"] == "job_not_found"
    assert tenants.live.job(alice.running["id"])["status"] == "running"
    tenants.live.gates.open_all()


def test_an_admin_mints_a_token_for_a_user(secured: Tenants) -> None:
    job = secured.submit("alice", "hold", {"gate": "t"})
    made = secured.client("admin").post("/stream-tokens", json={"owner": "alice", "ttl": 60})
    assert made.status_code == 201
    token = made.json()["token"]
    listed = secured.client(None).get("/jobs", params={"token": token}).json()["jobs"]
    assert [j["id"] for j in listed] == [job["id"]]
    assert_error(secured.client("bob").post("/stream-tokens", json={"owner": "alice"}), 403, "forbidden")
    assert_error(secured.client("alice").post("/stream-tokens", json={"ttl": 86_401}), 422)
    secured.live.gates.open_all()


def test_an_open_sse_stream_ends_with_expired_when_its_token_expires(secured: Tenants) -> None:
    job = secured.submit("alice", "hold", {"gate": "x"})
    secured.live.wait_running(job["id"])
    token = secured.client("alice").post("/stream-tokens", json={"job": job["id"], "ttl": 1}).json()["token"]
    client = secured.client(None)
    started = time.monotonic()
    with client.stream("GET", f"/jobs/{job['id']}/stream", params={"token": token}) as response:
        seen = [f.event for f in frames(response.iter_lines()) if f.event]
    assert seen[-1] == "expired"
    assert "end" not in seen
    assert time.monotonic() - started < SOON
    assert_error(client.get(f"/jobs/{job['id']}", params={"token": token}), 401, "unauthenticated")
    secured.live.gates.open_all()


def test_an_open_websocket_closes_with_4401_when_its_token_expires(secured: Tenants) -> None:
    job = secured.submit("alice", "hold", {"gate": "y"})
    token = secured.client("alice").post("/stream-tokens", json={"job": job["id"], "ttl": 1}).json()["token"]
    with Socket(secured, None, token=token) as ws:
        assert ws.request("subscribe", job=job["id"])["ok"]
        assert ws.closed_with() == 4401
    secured.live.gates.open_all()


def test_forged_and_tampered_tokens_are_refused(secured: Tenants) -> None:
    job = secured.submit("alice", "echo")
    token = secured.token("alice", job=job["id"])
    body, _, signature = token[len("uwt.") :].partition(".")
    forged = f"uwt.{body}.{'A' * len(signature)}"
    client = secured.client(None)
    for bad in (forged, token + "x", "uwt.garbage", "uwt."):
        assert_error(client.get(f"/jobs/{job['id']}", params={"token": bad}), 401, "unauthenticated")
    assert bad not in client.get(f"/jobs/{job['id']}", params={"token": forged}).text


# -- keys ---------------------------------------------------------------------------------------


EVERY_ROUTE = [
    ("GET", "/jobs"),
    ("POST", "/jobs"),
    ("GET", "/jobs/x"),
    ("GET", "/jobs/x/events"),
    ("GET", "/jobs/x/stream"),
    ("GET", "/stream"),
    ("POST", "/jobs/x/cancel"),
    ("POST", "/jobs/x/answer"),
    ("POST", "/jobs/x/retry"),
    ("POST", "/jobs/cancel"),
    ("POST", "/jobs/retry"),
    ("DELETE", "/jobs/x"),
    ("GET", "/batches"),
    ("POST", "/batches"),
    ("GET", "/batches/x"),
    ("GET", "/batches/x/stream"),
    ("GET", "/queues"),
    ("GET", "/stats"),
    ("GET", "/tasks"),
    ("GET", "/workers"),
    ("GET", "/metrics"),
    ("POST", "/stream-tokens"),
    ("GET", "/me"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
]


def test_missing_wrong_and_revoked_keys_get_401_everywhere(secured: Tenants) -> None:
    revoked_key = make_keys_revoked(secured)
    wrong = "uw_0123456789ab_" + "x" * 43
    for headers in ({}, bearer(wrong), bearer(revoked_key), bearer("not-a-key")):
        client = httpx.Client(base_url=secured.live.api, timeout=10, trust_env=False, headers=headers)
        secured.live.clients.append(client)
        for method, path in EVERY_ROUTE:
            response = client.request(method, path, json={} if method != "GET" else None)
            assert_error(response, 401, "unauthenticated")
            assert wrong not in response.text
            assert revoked_key not in response.text
        with connect(secured.live.ws_url, additional_headers=headers, proxy=None) as ws:
            assert closing_code(ws) == 4401
    assert secured.client(None).get("/healthz").json() == {"ok": True, "store": "ok"}


def make_keys_revoked(secured: Tenants) -> str:
    """A key for carol, revoked (through the store, as ``underway keys revoke`` does)."""
    url = secured.live.settings.url

    async def revoke() -> str:
        async with underway.App(url) as app:
            record, key = await app.accounts.create_key("carol", "user")
            await app.accounts.revoke(record.id)
            return key

    return asyncio.run(revoke())


def revoke(secured: Tenants, owner: str) -> None:
    async def go() -> None:
        async with underway.App(secured.live.settings.url) as app:
            for record in await app.accounts.keys():
                if record.owner == owner:
                    await app.accounts.revoke(record.id)

    asyncio.run(go())


def test_a_revoked_key_stops_at_once_and_its_streams_end_within_seconds(secured: Tenants) -> None:
    job = secured.submit("alice", "hold", {"gate": "r"})
    secured.live.wait_running(job["id"])
    alice = secured.client("alice")
    token = secured.token("alice", job=job["id"])
    ended: dict[str, float] = {}

    def read_sse(name: str, params: dict[str, str]) -> None:
        with alice.stream("GET", f"/jobs/{job['id']}/stream", params=params) as response:
            for _ in response.iter_lines():
                pass
        ended[name] = time.monotonic()

    readers = [
        threading.Thread(target=read_sse, args=("key", {}), daemon=True),
        threading.Thread(target=read_sse, args=("token", {"token": token}), daemon=True),
    ]
    for reader in readers:
        reader.start()
    with Socket(secured, "alice") as ws:
        assert ws.request("subscribe", job=job["id"])["ok"]
        wait_until(lambda: len(secured.live.web.state.underway.sse_streams) == 2, what="two open streams")
        revoked_at = time.monotonic()
        revoke(secured, "alice")
        assert_error(alice.get(f"/jobs/{job['id']}"), 401, "unauthenticated")
        assert ws.closed_with() == 4401
    for reader in readers:
        reader.join(SOON)
    assert set(ended) == {"key", "token"}
    assert max(ended.values()) - revoked_at < 3.0
    secured.live.gates.open_all()


# -- limits -------------------------------------------------------------------------------------


def test_limits_answer_429_413_and_422_and_spare_other_users(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'limits.db'}"
    t = start_tenants(
        url,
        max_streams_per_user=2,
        max_submissions_per_minute=3,
        max_batch_items=5,
        max_json_depth=4,
        max_args_size=200,
    )
    try:
        alice, bob = t.client("alice"), t.client("bob")
        for _ in range(3):
            assert alice.post("/jobs", json={"task": "echo"}).status_code == 201
        flooded = alice.post("/jobs", json={"task": "echo"})
        assert_error(flooded, 429, "too_many_requests")
        assert int(flooded.headers["retry-after"]) >= 1
        assert bob.post("/jobs", json={"task": "echo"}).status_code == 201  # bob is not limited by her
        assert t.client("admin").post("/jobs", json={"task": "echo"}).status_code == 201

        job = t.submit("admin", "hold", {"gate": "l"}, owner="alice")
        last = t.live.wait_running(job["id"])["last_seq"]
        with contextlib.ExitStack() as stack:
            for _ in range(2):
                opened = stack.enter_context(alice.stream("GET", f"/jobs/{job['id']}/stream"))
                assert opened.status_code == 200
            third = alice.get(f"/jobs/{job['id']}/events", params={"wait": 1, "after": last})
            assert_error(third, 429, "too_many_requests")
            assert third.headers["retry-after"] == "1"
            with Socket(t, "alice") as ws:
                assert ws.error("subscribe", job=job["id"])["code"] == "too_many_requests"
            bobs = t.submit("admin", "hold", {"gate": "l"}, owner="bob")
            with bob.stream("GET", f"/jobs/{bobs['id']}/stream") as response:
                assert response.status_code == 200
        wait_until(lambda: t.live.web.state.underway.quotas.streams_of("alice") == 0, what="streams released")
        with alice.stream("GET", f"/jobs/{job['id']}/stream") as response:
            assert response.status_code == 200

        admin = t.client("admin")
        too_many = admin.post("/batches", json={"task": "item", "items": [{"text": "x"}] * 6})
        assert_error(too_many, 413, "batch_too_large")
        deep = admin.post("/jobs", json={"task": "echo", "args": {"text": "x", "value": 1, "n": [[[[[1]]]]]}})
        assert_error(deep, 422)
        large = admin.post("/jobs", json={"task": "echo", "args": {"text": "x" * 300}})
        assert_error(large, 422, "invalid_arguments")
        assert "max_args_size" in large.text
        t.live.gates.open_all()
    finally:
        t.live.stop()


# -- browser rules ------------------------------------------------------------------------------


def test_cors_follows_allowed_origins(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cors.db'}"
    t = start_tenants(url, allowed_origins=("https://app.example",))
    try:
        client = t.client(None)
        preflight = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        }
        good = client.options("/jobs", headers={"Origin": "https://app.example", **preflight})
        assert good.headers["access-control-allow-origin"] == "https://app.example"
        assert good.headers["access-control-allow-credentials"] == "true"
        evil = client.options("/jobs", headers={"Origin": "https://evil.example", **preflight})
        assert "access-control-allow-origin" not in evil.headers
        read = t.client("alice").get("/jobs", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in read.headers
    finally:
        t.live.stop()


def test_allowed_origins_cannot_be_a_wildcard() -> None:
    with pytest.raises(underway.ConfigError, match="list the origins"):
        underway.Settings(allowed_origins=("*",))


def test_a_body_less_cross_site_write_is_refused_when_the_browser_holds_the_credentials(
    live: LiveServer,
) -> None:
    job = live.submit("hold", {"gate": "csrf"})
    plain = httpx.Client(base_url=live.api, timeout=10, trust_env=False)
    live.clients.append(plain)
    form = plain.post(
        f"/jobs/{job['id']}/cancel",
        content=b"",
        headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": "https://evil.example"},
    )
    assert_error(form, 403, "forbidden")
    assert form.json()["error"]["details"] == {"reason": "csrf"}
    assert plain.post("/queues/default/pause").status_code == 403
    assert live.job(job["id"])["status"] in ("queued", "running")
    assert plain.post(f"/jobs/{job['id']}/cancel", json={}).status_code == 200  # JSON: not a form
    live.gates.open_all()


def test_security_headers_on_every_response(secured: Tenants) -> None:
    job = secured.submit("alice", "echo")
    secured.live.wait_status(job["id"], "succeeded")
    alice = secured.client("alice")
    responses = [alice.get(f"/jobs/{job['id']}"), alice.get("/jobs/nope"), secured.client(None).get("/jobs")]
    with alice.stream("GET", f"/jobs/{job['id']}/stream", params={"after": 0}) as streamed:
        responses.append(streamed)
    responses.append(httpx.get(f"{secured.live.base}/nowhere", trust_env=False))
    for response in responses:
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


# -- when authentication is on ------------------------------------------------------------------


def test_auto_is_off_on_loopback_until_a_key_exists(start: Any) -> None:
    live = start(key_check_interval=0.1)
    assert live.client().get("/jobs").status_code == 200  # anonymous: auth is off
    make_keys(live.settings.url, {"dora": "user"})
    anonymous = httpx.Client(base_url=live.api, timeout=10, trust_env=False)
    live.clients.append(anonymous)
    wait_until(lambda: anonymous.get("/jobs").status_code == 401, what="auth to turn on")


def test_auth_off_beyond_loopback_refuses_to_start(tmp_path: Path) -> None:
    app = underway.App(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(underway.ConfigError, match="auth=off"):
        create_app(app, settings=app.settings.replace(host="0.0.0.0", auth="off"))
    web = create_app(app, settings=app.settings.replace(host="0.0.0.0"))
    assert web.state.underway.guard.on


# -- helpers ------------------------------------------------------------------------------------


class Socket:
    """A WebSocket as ``who`` (``None``: no key), optionally with ``?token=``."""

    def __init__(self, t: Tenants, who: str | None, token: str | None = None) -> None:
        url = t.live.ws_url + (f"?token={token}" if token else "")
        headers = {} if who is None else bearer(t.keys[who])
        self._stack = contextlib.ExitStack()
        self.conn = self._stack.enter_context(
            connect(url, additional_headers=headers, proxy=None, open_timeout=SOON)
        )
        self._ids = 0
        self.pushes: list[dict[str, Any]] = []

    def __enter__(self) -> Socket:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        self._ids += 1
        self.conn.send(json.dumps({"id": self._ids, "op": op, **fields}))
        while True:
            message: dict[str, Any] = json.loads(self.conn.recv(timeout=SOON))
            if message.get("reply") == self._ids:
                return message
            self.pushes.append(message)

    def error(self, op: str, **fields: Any) -> dict[str, Any]:
        reply = self.request(op, **fields)
        assert reply["ok"] is False, reply
        error: dict[str, Any] = reply["error"]
        return error

    def receive_push(self) -> dict[str, Any]:
        if self.pushes:
            return self.pushes.pop(0)
        push: dict[str, Any] = json.loads(self.conn.recv(timeout=SOON))
        return push

    def closed_with(self) -> int:
        return closing_code(self.conn)


def closing_code(conn: ClientConnection) -> int:
    """The code the server closes ``conn`` with (what it sends before is read and dropped)."""
    with pytest.raises(ConnectionClosed) as closed:
        drain(conn)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


def drain(conn: ClientConnection) -> None:
    while True:  # until closed, or TimeoutError after SOON without a message
        conn.recv(timeout=SOON)


def test_a_rotation_by_another_process_reaches_a_running_server(secured: Tenants) -> None:
    job = secured.submit("alice", "echo")
    old = secured.token("alice", job=job["id"])
    anonymous = secured.client(None)

    async def rotate() -> None:
        async with underway.App(secured.live.settings.url) as app:
            await app.accounts.rotate()

    asyncio.run(rotate())  # tokens of the secret before still work…
    assert anonymous.get(f"/jobs/{job['id']}", params={"token": old}).status_code == 200
    asyncio.run(rotate())  # …until it is rotated out
    refused = wait_until(
        lambda: (r := anonymous.get(f"/jobs/{job['id']}", params={"token": old})).status_code == 401 and r,
        what="the token of a secret rotated out to be refused",
    )
    assert_error(refused, 401, "unauthenticated")
    fresh = secured.token("alice", job=job["id"])
    assert token_version(fresh) != token_version(old)  # signed with the newest secret
    assert anonymous.get(f"/jobs/{job['id']}", params={"token": fresh}).status_code == 200


def test_a_long_poll_with_a_token_ends_when_the_token_expires(secured: Tenants) -> None:
    job = secured.submit("alice", "hold", {"gate": "lp"})
    last = secured.live.wait_running(job["id"])["last_seq"]
    token = secured.client("alice").post("/stream-tokens", json={"job": job["id"], "ttl": 1}).json()["token"]
    started = time.monotonic()
    answered = secured.client(None).get(
        f"/jobs/{job['id']}/events", params={"token": token, "after": last, "wait": 30}
    )
    assert answered.status_code == 200
    assert answered.json()["events"] == []
    assert time.monotonic() - started < 3.0  # not the 30 s asked for
    secured.live.gates.open_all()


# -- browser sessions ---------------------------------------------------------------------------


def test_a_session_cookie_signs_a_browser_in_and_its_writes_need_the_csrf_token(secured: Tenants) -> None:
    browser = secured.client(None)
    signed = browser.post("/session", json={"key": secured.keys["alice"]})
    assert signed.status_code == 200, signed.text
    body = signed.json()
    assert (body["owner"], body["role"]) == ("alice", "user")
    cookie = signed.headers["set-cookie"]
    for attribute in ("underway_session=uws.", "HttpOnly", "SameSite=strict", "Path=/api"):
        assert attribute.lower() in cookie.lower(), cookie
    assert secured.keys["alice"] not in cookie
    mine = secured.submit("alice", "hold", {"gate": "s"})
    theirs = secured.submit("bob", "hold", {"gate": "s"})
    assert [j["id"] for j in browser.get("/jobs").json()["jobs"]] == [mine["id"]]  # the cookie alone
    assert_error(browser.get(f"/jobs/{theirs['id']}"), 404, "job_not_found")
    me = browser.get("/me").json()
    assert me["via"] == "session"
    assert me["csrf_token"] == body["csrf_token"]
    assert me["can"] == {"write": True, "cancel": True, "answer": True, "admin": False}

    # A write with the cookie alone (what a cross-site page could make the browser send) fails,
    # even as JSON; with the CSRF token it goes through.
    forged = browser.post(f"/jobs/{mine['id']}/cancel", json={}, headers={"X-Requested-With": "x"})
    assert_error(forged, 403, "forbidden")
    assert forged.json()["error"]["details"] == {"reason": "csrf"}
    wrong = browser.post(f"/jobs/{mine['id']}/cancel", json={}, headers={"X-CSRF-Token": "guess"})
    assert_error(wrong, 403, "forbidden")
    assert secured.live.job(mine["id"])["status"] == "running"
    done = browser.post(f"/jobs/{mine['id']}/cancel", json={}, headers={"X-CSRF-Token": body["csrf_token"]})
    assert done.status_code == 200, done.text

    # Signing out drops the cookie; a wrong key signs nobody in.
    assert browser.delete("/session").status_code == 204
    assert_error(browser.get("/jobs"), 401, "unauthenticated")
    assert_error(
        browser.post("/session", json={"key": "uw_0123456789ab_" + "x" * 43}), 401, "unauthenticated"
    )
    secured.live.gates.open_all()


def test_a_session_ends_when_its_key_is_revoked(secured: Tenants) -> None:
    browser = secured.client(None)
    assert browser.post("/session", json={"key": secured.keys["bob"]}).status_code == 200
    assert browser.get("/jobs").status_code == 200
    revoke(secured, "bob")
    assert_error(browser.get("/jobs"), 401, "unauthenticated")


def test_me_says_who_is_asking(secured: Tenants, live: LiveServer) -> None:
    admin = secured.client("admin").get("/me").json()
    assert (admin["owner"], admin["role"], admin["via"], admin["auth"]) == ("admin", "admin", "key", True)
    assert admin["can"]["admin"] is True
    job = secured.submit("alice", "echo")
    token = secured.token("alice", job=job["id"])
    scoped = secured.client(None).get("/me", params={"token": token}).json()
    assert scoped["via"] == "token"
    assert scoped["grant"] == {"job": job["id"], "batch": None}
    assert scoped["can"] == {"write": False, "cancel": True, "answer": True, "admin": False}
    anonymous = live.client().get("/me").json()  # auth off, on loopback
    assert (anonymous["via"], anonymous["role"], anonymous["auth"]) == ("anonymous", "admin", False)
