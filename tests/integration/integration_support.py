"""Helpers of the integration tests: a real Worker in-process on a real SQLite file.

Test modules import this by name (``tests/integration`` is on ``sys.path`` under pytest's
default import mode); the fixtures that build apps live in ``conftest.py``.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest

import underway
from underway import Event, EventType, Status
from underway.jobs import can_transition

T = TypeVar("T")

#: How long a condition that should hold "at once" may take on a slow machine.
SOON = 5.0


async def wait_until(
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float = SOON,
    *,
    interval: float = 0.005,
    what: str | None = None,
) -> T:
    """Poll ``predicate`` (sync or async) until it returns something true; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what or predicate}")
        await asyncio.sleep(interval)


def wait_in_thread(predicate: Callable[[], bool], timeout: float = SOON, what: str = "") -> None:
    """``wait_until`` for the body of a sync task (runs in a worker thread)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or predicate}")
        time.sleep(0.002)


async def status_is(app: underway.App, job_id: str, *statuses: Status) -> bool:
    return (await app.get(job_id)).status in statuses


@asynccontextmanager
async def running_worker(
    app: underway.App, *, burst: bool = False, **settings: Any
) -> AsyncIterator[underway.Worker]:
    """A Worker running as an asyncio task for the duration of the block, then stopped.

    ``settings`` override the app's (``concurrency=1``, ``queues=("a",)``…). Errors of the
    worker's run are raised on exit.
    """
    worker = underway.Worker(app, settings=app.settings.replace(**settings), burst=burst)
    runner = asyncio.create_task(worker.run(), name="test-worker")
    try:
        yield worker
    finally:
        if not runner.done():
            worker.stop()
        await asyncio.wait_for(runner, app.settings.shutdown_grace + SOON)


async def history(
    app: underway.App, job_id: str, final: Status | None, *, max_attempt: int | None = None
) -> list[Event]:
    """All events of the job, checked against the rules every history obeys.

    ``seq`` runs 1..n without gaps and the job row's ``last_seq`` is n; the first event is
    ``status: queued``; every change of status is legal and each claim counts one attempt up;
    the job ended with exactly one terminal status event, the last event, of status ``final``
    (or has none if ``final`` is None).
    """
    events = await app.events(job_id, limit=1_000_000)
    job = await app.get(job_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1)), "seq must run 1..n"
    assert job.last_seq == len(events)
    assert events[0].type is EventType.STATUS
    assert events[0].data["status"] == "queued"
    current: Status | None = None
    attempt = 0
    for event in events:
        new = event.status
        if new is None:
            assert current in (Status.RUNNING, Status.WAITING), f"{event} outside a run"
            continue
        if event.data.get("cancel_requested"):
            assert new is current, f"a cancel request must not change the status: {event}"
        elif current is not None:
            assert can_transition(current, new), f"illegal {current.value} → {new.value}: {event}"
        if current is Status.QUEUED and new is Status.RUNNING:
            attempt += 1
        assert event.data["attempt"] == attempt, f"attempt should be {attempt}: {event}"
        current = new
    terminal = [e for e in events if e.ends_job]
    if final is None:
        assert not terminal, f"the job should not have ended: {terminal}"
        return events
    assert len(terminal) == 1, f"one terminal status event expected, got {terminal}"
    assert events[-1] is terminal[0], "nothing may follow the terminal status event"
    assert terminal[0].status is final, f"ended {terminal[0].status}, expected {final.value}"
    assert job.status is final
    assert job.attempt == attempt
    if max_attempt is not None:
        assert attempt == max_attempt
    return events


def statuses(events: list[Event]) -> list[tuple[str, int, str | None]]:
    """``(status, attempt, reason)`` of each status event: compact to compare."""
    return [
        (e.data["status"], e.data["attempt"], e.data.get("reason"))
        for e in events
        if e.type is EventType.STATUS
    ]


def of_type(events: list[Event], kind: EventType) -> list[Event]:
    return [e for e in events if e.type is kind]
