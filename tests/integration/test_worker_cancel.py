"""Cancelling jobs: queued ones at once, running ones cooperatively or after the grace."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from integration_support import history, running_worker, status_is, statuses, wait_until

import underway
from underway import EventType, Status

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


async def wait_running(app: underway.App, job_id: str) -> None:
    await wait_until(lambda: status_is(app, job_id, Status.RUNNING), what=f"{job_id} to run")


async def test_a_queued_job_is_cancelled_at_once_and_never_runs(app: underway.App) -> None:
    ran: list[str] = []

    @app.task(name="record")
    def record(label: str) -> None:
        ran.append(label)

    doomed = await record.submit(label="doomed")
    cancelled = await app.cancel(doomed.id)
    assert cancelled.status is Status.CANCELLED
    assert cancelled.finished_at is not None
    kept = await record.submit(label="kept")

    async with running_worker(app, burst=True):
        await app.wait(kept.id, timeout=5)

    assert ran == ["kept"]
    events = await history(app, doomed.id, Status.CANCELLED, max_attempt=0)
    assert statuses(events) == [("queued", 0, None), ("cancelled", 0, None)]
    await history(app, kept.id, Status.SUCCEEDED)


async def test_a_running_async_task_is_cancelled_through_asyncio(app: underway.App) -> None:
    seen: list[str] = []

    @app.task(name="sleeper")
    async def sleeper(ctx: underway.Context) -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        return "never"

    job = await sleeper.submit()
    async with running_worker(app, cancel_grace=10.0):
        await wait_running(app, job.id)
        started = time.monotonic()
        asked = await app.cancel(job.id)
        done = await app.wait(job.id, timeout=5)
        elapsed = time.monotonic() - started

    assert asked.status is Status.RUNNING
    assert asked.cancel_requested
    assert elapsed < 1.0, "well within the 10 s grace: the body was cancelled at once"
    assert seen == ["cancelled"]
    assert done.status is Status.CANCELLED
    events = await history(app, job.id, Status.CANCELLED, max_attempt=1)
    assert statuses(events) == [
        ("queued", 0, None),
        ("running", 1, None),
        ("running", 1, None),
        ("cancelled", 1, "cancelled"),
    ]
    assert events[2].data["cancel_requested"] is True


async def test_a_running_sync_task_stops_at_its_next_progress_call(app: underway.App) -> None:
    raised: list[BaseException] = []

    @app.task(name="counter")
    def counter(ctx: underway.Context) -> str:
        n = 0
        deadline = time.monotonic() + 20
        try:
            while time.monotonic() < deadline:
                n += 1
                ctx.progress(n)
                time.sleep(0.001)
        except underway.Cancelled as exc:
            raised.append(exc)
            assert ctx.cancelled
            raise
        return "never"

    job = await counter.submit()
    async with running_worker(app, cancel_grace=10.0):
        await wait_running(app, job.id)
        started = time.monotonic()
        await app.cancel(job.id)
        done = await app.wait(job.id, timeout=5)
        elapsed = time.monotonic() - started

    assert elapsed < 1.0
    assert len(raised) == 1
    assert isinstance(raised[0], underway.Cancelled)
    assert done.status is Status.CANCELLED
    events = await history(app, job.id, Status.CANCELLED, max_attempt=1)
    assert statuses(events)[-1] == ("cancelled", 1, "cancelled")


async def test_an_async_task_that_ignores_cancellation_is_cancelled_after_the_grace(
    app: underway.App,
) -> None:
    release = asyncio.Event()
    ignored = 0
    finished: list[str] = []

    @app.task(name="stubborn")
    async def stubborn(ctx: underway.Context) -> str:
        nonlocal ignored
        while not release.is_set():
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                ignored += 1
        ctx.log.info("still here after the cancel")
        finished.append("returned")
        return "too late"

    job = await stubborn.submit()
    async with running_worker(app, cancel_grace=0.5):
        await wait_running(app, job.id)
        started = time.monotonic()
        await app.cancel(job.id)
        done = await app.wait(job.id, timeout=5)
        elapsed = time.monotonic() - started
        before = await app.events(job.id)

        release.set()
        await wait_until(lambda: finished, what="the body to return")

    assert ignored >= 1, "the body was asked to stop through asyncio"
    assert 0.5 <= elapsed < 2.0, "recorded cancelled when the grace ran out"
    assert done.status is Status.CANCELLED
    events = await history(app, job.id, Status.CANCELLED, max_attempt=1)
    assert events == before, "the late log line and result were refused"
    assert statuses(events)[-1][0] == "cancelled"
    assert statuses(events)[-1][2] in ("cancel_grace", "lease_expired")
    assert (await app.get(job.id)).result is None


async def test_a_sync_task_that_ignores_cancellation_is_cancelled_after_the_grace(
    app: underway.App,
) -> None:
    release = threading.Event()
    finished = threading.Event()

    @app.task(name="oblivious")
    def oblivious(ctx: underway.Context) -> str:
        try:
            while not release.is_set():  # never reaches a cancellation point
                time.sleep(0.005)
            ctx.log.info("still here after the cancel")
            return "too late"
        finally:
            finished.set()

    job = await oblivious.submit()
    async with running_worker(app, cancel_grace=0.5):
        await wait_running(app, job.id)
        started = time.monotonic()
        await app.cancel(job.id)
        done = await app.wait(job.id, timeout=5)
        elapsed = time.monotonic() - started
        before = await app.events(job.id)

        release.set()
        await wait_until(finished.is_set, what="the body to return")

    assert 0.5 <= elapsed < 2.0
    assert done.status is Status.CANCELLED
    # The worker stopped after the body returned, so its flusher tried the late write.
    events = await history(app, job.id, Status.CANCELLED, max_attempt=1)
    assert events == before
    assert not [e for e in events if e.type is EventType.LOG]
    assert (await app.get(job.id)).result is None


async def test_cancelling_a_finished_job_is_an_invalid_transition(app: underway.App) -> None:
    @app.task(name="quick")
    def quick() -> int:
        return 1

    job = await quick.submit()
    async with running_worker(app):
        await app.wait(job.id, timeout=5)

    with pytest.raises(underway.InvalidTransition) as raised:
        await app.cancel(job.id)
    assert raised.value.details == {"status": "succeeded"}
    with pytest.raises(underway.JobNotFound):
        await app.cancel("0" * 26)
    await history(app, job.id, Status.SUCCEEDED)


async def test_cancel_all_in_a_queue_counts_queued_and_running_jobs(app: underway.App) -> None:
    started = threading.Event()

    @app.task(name="work", queue="a")
    def work(ctx: underway.Context, n: int) -> int:
        started.set()
        while True:
            ctx.progress(n)
            time.sleep(0.005)

    async with running_worker(app, queues=("a",), concurrency=1):
        running = await work.submit(n=0)
        await wait_running(app, running.id)
        queued_a = [await work.submit(n=n) for n in (1, 2)]
        queued_b = [await work.options(queue="b").submit(n=n) for n in (3, 4)]

        count = await app.cancel_all(queue="a")
        await app.wait(running.id, timeout=5)
        assert await app.cancel_all(queue="a") == 0, "nothing is left to cancel in a"

    assert count == 3
    for job in (running, *queued_a):
        await history(app, job.id, Status.CANCELLED)
    for job in queued_b:
        assert (await app.get(job.id)).status is Status.QUEUED
        await history(app, job.id, None)
