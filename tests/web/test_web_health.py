"""``GET /healthz`` tells the truth about the store: a full database answers 503 with the reason,
submissions are refused with 503 ``store_error`` meanwhile, none is lost, and both recover when
space comes back. (A deleted, replaced or read-only database: ``tests/e2e/test_e2e_store_health.py``.)"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from web_support import LiveServer

from underway.store import sqlite as sqlite_module
from underway.store import sqlite_connection
from underway.store.sqlite import SQLiteStore


def pragmas_for(live: LiveServer, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The pragmas every new connection of the server's store gets from now on (filled by
    :func:`apply`; ``max_page_count`` is per connection)."""
    given: list[str] = []
    real = sqlite_connection.connect

    def connect(path: Path) -> sqlite3.Connection:
        conn = real(path)
        for pragma in given:
            conn.execute(f"PRAGMA {pragma}")
        return conn

    monkeypatch.setattr(sqlite_module, "connect", connect)
    return given


def apply(live: LiveServer, pragma: str, given: list[str]) -> None:
    given.append(pragma)
    store = live.app.store
    assert isinstance(store, SQLiteStore)

    def set_all() -> None:  # on the server's loop: its own connections are used there
        for conn in list(store._connections):
            conn.execute(f"PRAGMA {pragma}")

    live.on_server_loop(set_all)


def test_a_full_database_answers_503_refuses_submissions_and_recovers(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = live.client()
    given = pragmas_for(live, monkeypatch)
    before = [live.submit("echo", {"value": i})["id"] for i in range(3)]
    store = live.app.store
    assert isinstance(store, SQLiteStore)
    pages = live.on_server_loop(lambda: store._writer_conn().execute("PRAGMA page_count").fetchone()[0])
    apply(live, f"max_page_count = {pages}", given)  # the disk is full: not one page more

    accepted: list[str] = []
    refused = None
    for i in range(2000):
        response = client.post("/jobs", json={"task": "echo", "args": {"text": f"{i:04d}" + "x" * 800}})
        if response.status_code != 201:
            refused = response
            break
        accepted.append(response.json()["id"])
    assert refused is not None, "the database never filled up"
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "store_error"
    assert "database or disk is full" in refused.json()["error"]["message"]
    health = client.get("/healthz")
    assert health.status_code == 503
    assert health.json() == {
        "ok": False,
        "store": f"database full: {pages} of at most {pages} pages used (max_page_count)",
    }

    apply(live, "max_page_count = 1073741823", given)  # space is back
    assert client.get("/healthz").json() == {"ok": True, "store": "ok"}
    after = live.submit("echo", {"value": 99})["id"]
    for job_id in [*before, *accepted, after]:  # nothing was lost: every accepted job runs
        live.wait_status(job_id, "succeeded", timeout=30)


def test_a_read_only_database_answers_503_cannot_write(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = live.client()
    given = pragmas_for(live, monkeypatch)
    job = live.submit("echo")["id"]
    apply(live, "query_only = 1", given)  # as a database SQLite opened read-only
    health = client.get("/healthz")
    assert (health.status_code, health.json()) == (
        503,
        {"ok": False, "store": "cannot write: attempt to write a readonly database"},
    )
    refused = client.post("/jobs", json={"task": "echo", "args": {}})
    assert (refused.status_code, refused.json()["error"]["code"]) == (503, "store_error")
    assert client.get(f"/jobs/{job}").status_code == 200  # it still reads
    apply(live, "query_only = 0", given)
    assert client.get("/healthz").json() == {"ok": True, "store": "ok"}
