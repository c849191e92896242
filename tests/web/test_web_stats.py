"""``GET /stats`` on a real server with authentication on: a user's series count only its jobs,
an admin's all of them (or one owner's), a stream token may not ask, and the window is checked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_web_auth import Tenants, start_tenants
from web_support import assert_error


@pytest.fixture
def tenants(tmp_path: Path) -> Iterator[Tenants]:
    found = start_tenants(f"sqlite:///{tmp_path / 'stats.db'}")
    try:
        yield found
    finally:
        found.live.stop()


def finish(t: Tenants, who: str, task: str, status: str) -> None:
    job = t.submit(who, task)
    t.live.wait_status(job["id"], status)


def stats(t: Tenants, who: str, **params: str) -> dict[str, Any]:
    response = t.client(who).get("/stats", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def totals(body: dict[str, Any]) -> dict[str, int]:
    return {status: sum(counts) for status, counts in body["finished"].items()}


def test_each_user_sees_the_series_of_its_own_jobs_and_an_admin_all(tenants: Tenants) -> None:
    finish(tenants, "alice", "echo", "succeeded")
    finish(tenants, "alice", "boom", "failed")
    finish(tenants, "bob", "echo", "succeeded")
    tenants.submit("bob", "hold", {"gate": "bob"})  # running: depth, not finished
    alice = stats(tenants, "alice")
    assert totals(alice) == {"succeeded": 1, "failed": 1, "cancelled": 0}
    assert (alice["window_s"], alice["bucket_s"], len(alice["buckets"])) == (3600.0, 60, 60)
    assert alice["from"] == alice["buckets"][0]
    assert alice["buckets"][-1] <= alice["to"]
    latest = [p for p in alice["latency"]["p50"] if p is not None]
    assert latest
    assert all(0 <= p < 30 for p in latest)
    assert alice["depth"] == {"queued": 0, "running": 0, "waiting": 0}
    assert totals(stats(tenants, "bob")) == {"succeeded": 1, "failed": 0, "cancelled": 0}
    everyone = stats(tenants, "admin", window="15m")
    assert totals(everyone) == {"succeeded": 2, "failed": 1, "cancelled": 0}
    assert (everyone["window_s"], everyone["bucket_s"]) == (900.0, 15)
    assert everyone["depth"]["queued"] + everyone["depth"]["running"] == 1
    assert totals(stats(tenants, "admin", owner="alice")) == totals(alice)
    assert totals(stats(tenants, "bob", owner="bob")) == totals(stats(tenants, "bob"))
    tenants.live.gates.open_all()


def test_a_user_may_not_ask_for_another_owner_nor_a_stream_token_at_all(tenants: Tenants) -> None:
    assert_error(tenants.client("bob").get("/stats", params={"owner": "alice"}), 403, "forbidden")
    token = tenants.token("alice")
    assert_error(tenants.client(None).get("/stats", params={"token": token}), 403, "forbidden")
    assert tenants.client(None).get("/stats").status_code == 401


@pytest.mark.parametrize("window", ["0", "8d", "604801", "soon", "-1h"])
def test_a_window_beyond_seven_days_or_no_duration_is_422(tenants: Tenants, window: str) -> None:
    error = assert_error(tenants.client("alice").get("/stats", params={"window": window}), 422)
    assert "window" in error["message"]


def test_a_window_of_seconds_or_a_duration(tenants: Tenants) -> None:
    assert stats(tenants, "alice", window="7d")["bucket_s"] == 10080
    assert stats(tenants, "alice", window="60")["bucket_s"] == 1
