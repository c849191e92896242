"""Running jobs to success: results, events, sync tasks in threads, the blocking twins."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import anyio
import pytest
from integration_support import history, of_type, running_worker, statuses

import underway
from underway import EventType, Status

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


async def test_an_async_task_succeeds_with_its_result_and_events(app: underway.App) -> None:
    @app.task(name="crawl")
    async def crawl(ctx: underway.Context, site: str, pages: int = 3) -> dict[str, Any]:
        for _ in ctx.track(range(pages), message=f"Crawling {site}"):
            await asyncio.sleep(0)
        return {"site": site, "pages": pages, "attempt": ctx.attempt, "job": ctx.job_id}

    job = await crawl.submit(site="example.org")
    async with running_worker(app):
        done = await app.wait(job.id, timeout=5)

    assert done.status is Status.SUCCEEDED
    assert done.result == {"site": "example.org", "pages": 3, "attempt": 1, "job": job.id}
    assert done.error is None
    assert done.finished_at is not None
    assert done.worker_id is None
    assert done.progress is not None
    assert done.progress["current"] == 3
    assert done.progress["total"] == 3
    events = await history(app, job.id, Status.SUCCEEDED, max_attempt=1)
    assert statuses(events) == [("queued", 0, None), ("running", 1, None), ("succeeded", 1, None)]
    assert [e.type for e in events[:2]] == [EventType.STATUS, EventType.STATUS]
    assert {e.type for e in events[2:-1]} == {EventType.PROGRESS}, "only progress between start and end"
    assert events[-1].data["result"] == done.result
    progress = [e.data for e in of_type(events, EventType.PROGRESS)]
    assert progress[0]["current"] == 0
    assert progress[0]["message"] == "Crawling example.org"
    assert progress[-1]["current"] == 3
    assert progress[-1]["percent"] == 100.0


async def test_a_sync_task_runs_in_a_thread(app: underway.App) -> None:
    threads: list[threading.Thread] = []

    @app.task(name="blocking")
    def blocking(ctx: underway.Context, n: int) -> int:
        threads.append(threading.current_thread())
        ctx.progress(n, total=n)
        return n * 2

    job = await blocking.submit(n=21)
    async with running_worker(app):
        done = await app.wait(job.id, timeout=5)

    assert done.result == 42
    assert len(threads) == 1
    assert threads[0] is not threading.main_thread()
    assert threads[0].name.startswith("underway-task")
    events = await history(app, job.id, Status.SUCCEEDED)
    assert of_type(events, EventType.PROGRESS)[-1].data["current"] == 21


@pytest.mark.parametrize("close_sync", [True, False], ids=["close_sync", "close"])
async def test_the_blocking_twins_work_from_a_plain_thread(app: underway.App, close_sync: bool) -> None:
    @app.task(name="double")
    def double(x: int) -> int:
        return 2 * x

    def client() -> tuple[underway.Job, underway.Job, underway.Job, underway.Job]:
        by_task = double.submit_sync(x=4)
        by_name = app.submit_sync("double", {"x": 5}, queue="default")
        bound = double.options(priority=3).submit_sync(x=6)
        seen = app.get_sync(by_task.id)
        return by_task, by_name, bound, seen

    async with running_worker(app):
        by_task, by_name, bound, seen = await anyio.to_thread.run_sync(client)
        assert seen.id == by_task.id
        assert app._portal is not None
        portal_loop = app._portal._loop
        assert bound.priority == 3
        results = await anyio.to_thread.run_sync(
            lambda: [app.wait_sync(j.id, timeout=5).result for j in (by_task, by_name, bound)]
        )

    assert results == [8, 10, 12]
    assert (await anyio.to_thread.run_sync(app.get_sync, by_name.id)).status is Status.SUCCEEDED
    for job in (by_task, by_name, bound):
        await history(app, job.id, Status.SUCCEEDED)
    # Closing from either side stops the sync portal's loop and its event feed.
    if close_sync:
        await anyio.to_thread.run_sync(app.close_sync)
    await app.close()
    assert portal_loop.is_closed()


async def test_a_result_that_is_not_json_fails_the_job(app: underway.App) -> None:
    @app.task(name="opaque", retries=3)
    def opaque() -> object:
        return object()

    job = await opaque.submit()
    async with running_worker(app):
        done = await app.wait(job.id, timeout=5)

    assert done.status is Status.FAILED
    assert done.error is not None
    assert "JSON" in done.error["message"]
    events = await history(app, job.id, Status.FAILED, max_attempt=1)
    assert statuses(events)[-1] == ("failed", 1, "non_retryable")


async def test_many_jobs_run_concurrently_up_to_the_limit(app: underway.App) -> None:
    running = 0
    most = 0

    @app.task(name="overlap")
    async def overlap(i: int) -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.05)
        running -= 1
        return i

    jobs = [await overlap.submit(i=i) for i in range(12)]
    async with running_worker(app, concurrency=4, burst=True):
        done = [await app.wait(job.id, timeout=10) for job in jobs]

    assert [j.result for j in done] == list(range(12))
    assert most == 4, "four slots, twelve jobs: all four slots were used, never more"
    for job in jobs:
        await history(app, job.id, Status.SUCCEEDED)


async def test_burst_mode_drains_the_queue_and_returns(app: underway.App) -> None:
    @app.task(name="square")
    async def square(x: int) -> int:
        await asyncio.sleep(0.01)
        return x * x

    jobs = [await square.submit(x=x) for x in range(6)]
    worker = underway.Worker(app, settings=app.settings.replace(concurrency=2), burst=True)

    with anyio.fail_after(10):
        await worker.run()

    for job in jobs:
        done = await app.get(job.id)
        assert done.status is Status.SUCCEEDED
        assert done.result == job.args["x"] ** 2
        await history(app, job.id, Status.SUCCEEDED)
    assert worker.runs == {}
    assert worker.busy == 0
    assert await app.store.workers(60.0) == [], "a stopped worker removes itself"


async def test_a_burst_worker_waits_for_the_retries_of_its_jobs_not_for_later_jobs(
    app: underway.App,
) -> None:
    attempts: list[int] = []

    @app.task(name="flaky", retries=2, retry_delay=0.3, max_retry_delay=0.3)
    async def flaky(ctx: underway.Context) -> int:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise RuntimeError("not yet")
        return ctx.attempt

    job = await flaky.submit()
    later = await flaky.options(delay=3600).submit()
    with anyio.fail_after(20):
        await underway.Worker(app, burst=True).run()

    done = await app.get(job.id)
    assert (done.status, done.result, attempts) == (Status.SUCCEEDED, 3, [1, 2, 3])
    assert [status for status, _, _ in statuses(await app.events(job.id))] == [
        *("queued", "running") * 3,
        "succeeded",
    ]
    assert (await app.get(later.id)).status is Status.QUEUED, "scheduled for later: left queued"
