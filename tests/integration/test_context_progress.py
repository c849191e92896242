"""What a running task writes through its context: progress, steps, logs, checkpoints."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from integration_support import history, of_type, running_worker, wait_until

import underway
from underway import EventType, Status

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

CALLS = 200_000
FLOOD_SECONDS = 0.3


def flood_task(app: underway.App, kind: str, timing: dict[str, float]) -> underway.Task[..., int]:
    """At least CALLS progress calls, over long enough to span many progress intervals.

    The sync body runs in a thread and competes with the flusher for the GIL; the async one
    lets the flusher run every thousand calls, so an unthrottled flusher would write hundreds
    of times.
    """
    if kind == "sync":

        @app.task(name="flood")
        def flood(ctx: underway.Context) -> int:
            started = time.perf_counter()
            end = started + FLOOD_SECONDS
            n = 0
            while n < CALLS or time.perf_counter() < end:
                n += 1
                ctx.progress(n)
            timing["per_call"] = (time.perf_counter() - started) / n
            return n

        return flood

    @app.task(name="flood")
    async def async_flood(ctx: underway.Context) -> int:
        started = time.perf_counter()
        end = started + FLOOD_SECONDS
        n = 0
        while n < CALLS or time.perf_counter() < end:
            n += 1
            ctx.progress(n)
            if n % 1000 == 0:
                await asyncio.sleep(0)
        timing["per_call"] = (time.perf_counter() - started) / n
        return n

    return async_flood


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_flood_of_progress_calls_is_coalesced(app: underway.App, kind: str) -> None:
    timing: dict[str, float] = {}
    flood = flood_task(app, kind, timing)

    job = await flood.submit()
    async with running_worker(app):
        done = await app.wait(job.id, timeout=20)

    calls = done.result
    assert calls >= CALLS
    events = await history(app, job.id, Status.SUCCEEDED)
    progress = of_type(events, EventType.PROGRESS)
    running, finished = events[1], events[-1]
    interval = app.settings.progress_interval
    bound = (finished.at - running.at) / interval + 2
    assert 2 <= len(progress) <= bound, f"{len(progress)} progress writes in {finished.at - running.at:.3f} s"
    assert progress[-1].data["current"] == calls, "the last value is always written"
    assert done.progress == progress[-1].data
    currents = [e.data["current"] for e in progress]
    assert currents == sorted(currents), "progress only moves forward"
    assert timing["per_call"] < 20e-6, f"progress() costs {timing['per_call'] * 1e6:.1f} µs"


async def test_progress_has_percent_rate_and_eta(app: underway.App) -> None:
    seen: list[dict[str, Any]] = []

    @app.task(name="steady")
    async def steady(ctx: underway.Context) -> None:
        for n in range(1, 11):
            ctx.progress(n, total=20, message="half of it")
            await asyncio.sleep(0.03)

    job = await steady.submit()
    async with running_worker(app):
        await app.wait(job.id, timeout=5)

    events = await history(app, job.id, Status.SUCCEEDED)
    seen = [e.data for e in of_type(events, EventType.PROGRESS)]
    assert len(seen) >= 3
    assert seen[0] == {"current": 1, "total": 20, "percent": 5.0, "message": "half of it"}
    later = seen[1:]
    for data in later:
        assert data["percent"] == pytest.approx(100 * data["current"] / 20, abs=0.1)
        assert data["rate"] > 0
        assert data["eta_s"] == pytest.approx((20 - data["current"]) / data["rate"], abs=0.1)
    # About one unit per 30 ms: 33/s, with plenty of room for a slow machine.
    assert 5 < seen[-1]["rate"] < 60
    assert seen[-1]["current"] == 10
    assert seen[-1]["percent"] == 50.0


async def test_steps_set_step_steps_and_message(app: underway.App) -> None:
    @app.task(name="pipeline")
    async def pipeline(ctx: underway.Context) -> None:
        ctx.step("Downloading", steps=3)
        await wait_until(lambda: _progress_step(app, ctx.job_id, 1), what="step 1 to be written")
        ctx.progress(5, total=10)
        ctx.step("Extracting")
        await wait_until(lambda: _progress_step(app, ctx.job_id, 2), what="step 2 to be written")
        ctx.step("Loading")
        for _ in ctx.track([1, 2, 3, 4]):
            pass

    job = await pipeline.submit()
    async with running_worker(app):
        done = await app.wait(job.id, timeout=5)

    events = await history(app, job.id, Status.SUCCEEDED)
    stages = [
        (e.data.get("step"), e.data.get("steps"), e.data.get("message"))
        for e in of_type(events, EventType.PROGRESS)
    ]
    assert stages[0] == (1, 3, "Downloading")
    assert (2, 3, "Extracting") in stages
    assert stages[-1] == (3, 3, "Loading")
    assert [s for s, _, _ in stages] == sorted(s for s, _, _ in stages)
    assert done.progress is not None
    assert (done.progress["current"], done.progress["total"], done.progress["percent"]) == (4, 4, 100.0)
    extracting = [e.data for e in of_type(events, EventType.PROGRESS) if e.data.get("step") == 2]
    assert extracting[0]["current"] == 0, "a step restarts progress"
    assert "total" not in extracting[0]


async def _progress_step(app: underway.App, job_id: str, step: int) -> bool:
    job = await app.get(job_id)
    return job.progress is not None and job.progress.get("step") == step


async def test_log_lines_become_events_in_order(app: underway.App) -> None:
    @app.task(name="chatty")
    async def chatty(ctx: underway.Context, n: int) -> None:
        ctx.log.debug("starting")
        for i in range(n):
            ctx.log.info("saved post %s", i, post=i, source="feed")
        ctx.log.warning("slow source", source="feed")
        ctx.log.error("gave up on %d posts", 2)

    job = await chatty.submit(n=3)
    async with running_worker(app):
        await app.wait(job.id, timeout=5)

    events = await history(app, job.id, Status.SUCCEEDED)
    logs = [e.data for e in of_type(events, EventType.LOG)]
    assert logs == [
        {"level": "debug", "message": "starting"},
        {"level": "info", "message": "saved post 0", "fields": {"post": 0, "source": "feed"}},
        {"level": "info", "message": "saved post 1", "fields": {"post": 1, "source": "feed"}},
        {"level": "info", "message": "saved post 2", "fields": {"post": 2, "source": "feed"}},
        {"level": "warning", "message": "slow source", "fields": {"source": "feed"}},
        {"level": "error", "message": "gave up on 2 posts"},
    ]
    assert events[-1].status is Status.SUCCEEDED, "every log line landed before the end"


async def test_log_fields_must_be_json(app: underway.App) -> None:
    @app.task(name="odd_fields")
    def odd_fields(ctx: underway.Context) -> str:
        try:
            ctx.log.info("odd", thing=object())
        except TypeError as exc:
            return str(exc)
        return "accepted"

    job = await odd_fields.submit()
    async with running_worker(app):
        done = await app.wait(job.id, timeout=5)

    assert "JSON" in done.result
    events = await history(app, job.id, Status.SUCCEEDED)
    assert not of_type(events, EventType.LOG)


async def test_a_rerun_resumes_from_the_last_checkpoint(app: underway.App) -> None:
    seen: list[tuple[int, Any]] = []

    @app.task(name="resumable", retries=1, retry_delay=0.01)
    def resumable(ctx: underway.Context, items: int) -> int:
        seen.append((ctx.attempt, ctx.last_checkpoint))
        start = (ctx.last_checkpoint or {}).get("done", 0)
        for i in range(start, items):
            if ctx.attempt == 1 and i == 3:
                raise RuntimeError("crashed half way")
            ctx.checkpoint({"done": i + 1})
        return start

    job = await resumable.submit(items=5)
    async with running_worker(app):
        done = await app.wait(job.id, timeout=5)

    assert seen == [(1, None), (2, {"done": 3})]
    assert done.result == 3, "attempt 2 started where attempt 1 stopped"
    assert done.checkpoint == {"done": 5}
    await history(app, job.id, Status.SUCCEEDED, max_attempt=2)
