"""Leases and shutdown: fenced writes after a lost lease, graceful stop, handing jobs back."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from integration_support import (
    history,
    of_type,
    running_worker,
    status_is,
    statuses,
    wait_in_thread,
    wait_until,
)

import underway
from underway import EventType, Status
from underway.store import Lease, WorkerWrite

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


async def held_by(app: underway.App, job_id: str, worker: underway.Worker, attempt: int) -> bool:
    job = await app.get(job_id)
    return job.status is Status.RUNNING and job.worker_id == worker.id and job.attempt == attempt


async def requeue_as_a_sweep_would(app: underway.App, job_id: str, attempt: int) -> None:
    """Take the job away from the worker running ``attempt``, like a sweep of its expired lease."""
    write = WorkerWrite(
        lease=Lease(job_id, attempt), status=Status.QUEUED, run_at=time.time(), reason="lease_expired"
    )
    assert await app.store.record([write]) == [True]


async def test_a_worker_that_lost_its_lease_cannot_write_and_the_job_ends_once(app: underway.App) -> None:
    moved = threading.Event()
    first_done = threading.Event()
    first_saw: list[str] = []

    @app.task(name="guarded")
    def guarded(ctx: underway.Context) -> str:
        if ctx.attempt == 2:
            wait_in_thread(first_done.is_set, what="attempt 1 to give up")
            ctx.log.info("attempt 2 writing")
            return "second"
        wait_in_thread(moved.is_set, what="the job to be taken away")
        try:
            deadline = time.monotonic() + 5
            n = 0
            while time.monotonic() < deadline:
                n += 1
                ctx.log.info("attempt 1 still writing")
                ctx.progress(n)
                time.sleep(0.005)
        except underway.LeaseLost:
            first_saw.append("LeaseLost")
        finally:
            first_done.set()
        return "first"

    # Worker A heartbeats rarely: it learns of the loss only when the store refuses a write.
    async with running_worker(app, concurrency=1, lease_timeout=30.0) as a:
        job = await guarded.submit()
        await wait_until(lambda: held_by(app, job.id, a, 1), what="A to run attempt 1")
        await requeue_as_a_sweep_would(app, job.id, attempt=1)

        async with running_worker(app) as b:
            await wait_until(lambda: held_by(app, job.id, b, 2), what="B to run attempt 2")
            moved.set()
            done = await app.wait(job.id, timeout=10)

    assert first_saw == ["LeaseLost"], "attempt 1 was stopped at a cancellation point"
    assert done.status is Status.SUCCEEDED
    assert done.result == "second"
    assert done.attempt == 2
    events = await history(app, job.id, Status.SUCCEEDED, max_attempt=2)
    assert statuses(events) == [
        ("queued", 0, None),
        ("running", 1, None),
        ("queued", 1, "lease_expired"),
        ("running", 2, None),
        ("succeeded", 2, None),
    ]
    assert [e.data["message"] for e in of_type(events, EventType.LOG)] == ["attempt 2 writing"]
    assert not of_type(events, EventType.PROGRESS), "attempt 1's progress was refused"


async def test_a_waiting_job_whose_lease_is_lost_runs_again_and_slots_stay_right(
    app: underway.App,
) -> None:
    @app.task(name="patient")
    async def patient(ctx: underway.Context) -> str:
        return f"{await ctx.ask('Go?')} on attempt {ctx.attempt}"

    async with running_worker(app, concurrency=1) as worker:
        job = await patient.submit()
        await wait_until(lambda: status_is(app, job.id, Status.WAITING), what="the question")
        await requeue_as_a_sweep_would(app, job.id, attempt=1)

        await wait_until(
            lambda: _waiting_on_attempt(app, job.id, 2), what="attempt 2 to ask again (needs a free slot)"
        )
        await app.answer(job.id, "go")
        done = await app.wait(job.id, timeout=5)
        await wait_until(lambda: worker.runs == {}, what="every run to end")
        assert worker.busy == 0

        # The slot is free: the worker still takes new jobs.
        again = await patient.submit()
        await wait_until(lambda: status_is(app, again.id, Status.WAITING), what="a new job to run")
        await app.cancel(again.id)
        await app.wait(again.id, timeout=5)

    assert done.result == "go on attempt 2"
    events = await history(app, job.id, Status.SUCCEEDED, max_attempt=2)
    assert [s for s, _, _ in statuses(events)] == [
        "queued",
        "running",
        "waiting",
        "queued",
        "running",
        "waiting",
        "running",
        "succeeded",
    ]
    await history(app, again.id, Status.CANCELLED)


async def _waiting_on_attempt(app: underway.App, job_id: str, attempt: int) -> bool:
    job = await app.get(job_id)
    return job.status is Status.WAITING and job.attempt == attempt


async def test_stop_lets_a_running_job_finish_within_the_shutdown_grace(app: underway.App) -> None:
    release = asyncio.Event()

    @app.task(name="finishing")
    async def finishing(ctx: underway.Context) -> str:
        await release.wait()
        return "finished"

    job = await finishing.submit()
    worker = underway.Worker(app, settings=app.settings.replace(shutdown_grace=10.0))
    runner = asyncio.create_task(worker.run())
    await wait_until(lambda: status_is(app, job.id, Status.RUNNING))

    worker.stop()
    late = await finishing.submit()
    release.set()
    await asyncio.wait_for(runner, 5)

    assert (await app.get(job.id)).result == "finished"
    await history(app, job.id, Status.SUCCEEDED)
    assert (await app.get(late.id)).status is Status.QUEUED, "a stopping worker claims nothing new"
    await history(app, late.id, None)


async def test_a_job_still_running_at_the_end_of_the_grace_is_handed_back(app: underway.App) -> None:
    @app.task(name="long", retries=0)
    async def long(ctx: underway.Context) -> str:
        if ctx.attempt == 1:
            await asyncio.sleep(30)
        return f"done on attempt {ctx.attempt}"

    job = await long.submit()
    worker = underway.Worker(app, settings=app.settings.replace(shutdown_grace=0.2))
    runner = asyncio.create_task(worker.run())
    await wait_until(lambda: status_is(app, job.id, Status.RUNNING))

    started = time.monotonic()
    worker.stop()
    await asyncio.wait_for(runner, 5)
    assert 0.2 <= time.monotonic() - started < 2.0

    handed_back = await app.get(job.id)
    assert handed_back.status is Status.QUEUED
    assert handed_back.max_attempts == 2, "a hand-back does not use up an attempt"
    async with running_worker(app):
        done = await app.wait(job.id, timeout=5)

    assert done.result == "done on attempt 2"
    events = await history(app, job.id, Status.SUCCEEDED, max_attempt=2)
    assert statuses(events) == [
        ("queued", 0, None),
        ("running", 1, None),
        ("queued", 1, "worker_shutdown"),
        ("running", 2, None),
        ("succeeded", 2, None),
    ]


async def test_an_embedded_worker_abandons_a_stuck_sync_thread_and_returns(app: underway.App) -> None:
    release = threading.Event()
    woke: list[str] = []

    @app.task(name="stuck")
    def stuck(ctx: underway.Context) -> str:
        ctx.progress(0, message="stuck")
        release.wait(30)  # a call that ignores every cancellation point
        try:
            ctx.progress(1, message="too late")
        except underway.Cancelled:
            woke.append("Cancelled")
        return "late"

    job = await stuck.submit()
    worker = underway.Worker(app, settings=app.settings.replace(shutdown_grace=0.2))
    runner = asyncio.create_task(worker.run())
    await wait_until(lambda: _progress_of(app, job.id), what="the body to start")

    started = time.monotonic()
    worker.stop()
    await asyncio.wait_for(runner, 5)  # returns after the grace: it does not join the thread
    assert 0.2 <= time.monotonic() - started < 2.0
    assert worker.abandoned == [job.id]
    assert any(t.name.startswith("underway-task") and t.daemon for t in threading.enumerate())
    handed_back = await app.get(job.id)
    assert (handed_back.status, handed_back.max_attempts) == (Status.QUEUED, 2)
    settled = await app.events(job.id)

    release.set()  # the thread goes on: its writes are refused, the job stays handed back
    await wait_until(lambda: woke, what="the thread to wake up")
    assert woke == ["Cancelled"]
    assert await app.events(job.id) == settled
    assert (await app.get(job.id)).status is Status.QUEUED


async def _progress_of(app: underway.App, job_id: str) -> bool:
    return (await app.get(job_id)).progress is not None


async def test_a_second_stop_hands_jobs_back_at_once(app: underway.App) -> None:
    stopped: list[BaseException] = []

    @app.task(name="spin")
    def spin(ctx: underway.Context) -> None:
        try:
            while True:
                ctx.progress(1)
                time.sleep(0.005)
        except underway.Cancelled as exc:
            stopped.append(exc)
            raise

    job = await spin.submit()
    worker = underway.Worker(app, settings=app.settings.replace(shutdown_grace=30.0))
    runner = asyncio.create_task(worker.run())
    await wait_until(lambda: status_is(app, job.id, Status.RUNNING))

    started = time.monotonic()
    worker.stop()
    worker.stop()
    await asyncio.wait_for(runner, 5)

    assert time.monotonic() - started < 2.0
    await wait_until(lambda: stopped, what="the body to see the hand-back")
    assert "shutting down" in str(stopped[0])
    events = await history(app, job.id, None)
    assert statuses(events)[-1] == ("queued", 1, "worker_shutdown")


async def test_stop_before_the_worker_got_going(app: underway.App) -> None:
    worker = underway.Worker(app)
    runner = asyncio.create_task(worker.run())

    worker.stop()

    await asyncio.wait_for(runner, 5)
    assert await app.store.workers(60.0) == []
