"""Failed attempts: retries with backoff, giving up, non-retryable errors and timeouts."""

from __future__ import annotations

import asyncio
import time

import pytest
from integration_support import history, running_worker, statuses, wait_until

import underway
from underway import EventType, Status
from underway.timefmt import from_iso

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


class Flaky(Exception):
    pass


class Fatal(Exception):
    pass


def queued_again(events: list[underway.Event]) -> list[underway.Event]:
    """The status events that sent the job back to the queue after a failed attempt."""
    return [e for e in events if e.status is Status.QUEUED and e.data.get("reason") == "retry"]


async def test_a_failing_task_is_retried_with_growing_backoff(app: underway.App) -> None:
    attempts: list[int] = []

    @app.task(name="flaky", retries=2, retry_delay=0.1)
    async def flaky(ctx: underway.Context) -> str:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise Flaky(f"attempt {ctx.attempt} went wrong")
        return "third time lucky"

    job = await flaky.submit()
    async with running_worker(app):
        done = await app.wait(job.id, timeout=10)

    assert attempts == [1, 2, 3]
    assert done.status is Status.SUCCEEDED
    assert done.result == "third time lucky"
    assert done.error is None, "a success clears the error of earlier attempts"
    events = await history(app, job.id, Status.SUCCEEDED, max_attempt=3)
    assert statuses(events) == [
        ("queued", 0, None),
        ("running", 1, None),
        ("queued", 1, "retry"),
        ("running", 2, None),
        ("queued", 2, "retry"),
        ("running", 3, None),
        ("succeeded", 3, None),
    ]
    retries = queued_again(events)
    for n, event in enumerate(retries, 1):
        assert event.data["error"]["type"] == "Flaky"
        assert event.data["error"]["message"] == f"attempt {n} went wrong"
        assert "Traceback" in event.data["error"]["traceback"]
    # Backoff with jitter: retry n waits within [0.1·2ⁿ⁻¹·½, 0.1·2ⁿ⁻¹] (ms precision on the wire).
    delays = [from_iso(e.data["run_at"]) - e.at for e in retries]
    assert 0.05 - 0.01 <= delays[0] <= 0.1 + 0.001
    assert 0.1 - 0.01 <= delays[1] <= 0.2 + 0.001
    assert delays[1] >= delays[0] - 0.002
    running_again = [e for e in events if e.status is Status.RUNNING][1:]
    for retry, run in zip(retries, running_again, strict=True):
        assert run.at >= from_iso(retry.data["run_at"]) - 0.001, "not claimed before its run_at"


async def test_a_job_out_of_attempts_fails_with_the_error(app: underway.App) -> None:
    @app.task(name="doomed", retries=1, retry_delay=0.01)
    def doomed(ctx: underway.Context) -> None:
        raise Flaky(f"no luck on attempt {ctx.attempt}")

    job = await doomed.submit()
    async with running_worker(app):
        done = await app.wait(job.id, timeout=10)

    assert done.status is Status.FAILED
    assert done.error is not None
    assert done.error["type"] == "Flaky"
    assert done.error["message"] == "no luck on attempt 2"
    assert "Traceback" in done.error["traceback"]
    assert "doomed" in done.error["traceback"]
    events = await history(app, job.id, Status.FAILED, max_attempt=2)
    assert statuses(events)[-3:] == [
        ("queued", 1, "retry"),
        ("running", 2, None),
        ("failed", 2, "attempts_exhausted"),
    ]
    assert events[-1].data["error"] == done.error


async def test_a_non_retryable_error_fails_at_once(app: underway.App) -> None:
    attempts: list[int] = []

    @app.task(name="fatal", retries=3, retry_delay=0.01, non_retryable=(Fatal,))
    async def fatal(ctx: underway.Context) -> None:
        attempts.append(ctx.attempt)
        raise Fatal("this will never work")

    job = await fatal.submit()
    async with running_worker(app):
        done = await app.wait(job.id, timeout=5)

    assert attempts == [1]
    assert done.status is Status.FAILED
    assert done.error is not None
    assert done.error["type"] == "Fatal"
    events = await history(app, job.id, Status.FAILED, max_attempt=1)
    assert statuses(events)[-1] == ("failed", 1, "non_retryable")


async def test_max_attempts_of_a_submission_overrides_the_task(app: underway.App) -> None:
    attempts: list[int] = []

    @app.task(name="stubborn", retries=5, retry_delay=0.01)
    def stubborn(ctx: underway.Context) -> None:
        attempts.append(ctx.attempt)
        raise Flaky("again")

    job = await stubborn.options(max_attempts=2).submit()
    async with running_worker(app):
        done = await app.wait(job.id, timeout=10)

    assert attempts == [1, 2]
    assert done.status is Status.FAILED
    await history(app, job.id, Status.FAILED, max_attempt=2)


async def test_an_async_task_past_its_timeout_fails_the_attempt_and_is_retried(app: underway.App) -> None:
    interrupted: list[int] = []

    @app.task(name="sleepy", timeout=0.2, retries=1, retry_delay=0.01)
    async def sleepy(ctx: underway.Context) -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            interrupted.append(ctx.attempt)
            raise
        return "never"

    job = await sleepy.submit()
    started = time.monotonic()
    async with running_worker(app):
        done = await app.wait(job.id, timeout=10)

    assert time.monotonic() - started < 5, "each attempt ends at its timeout, not after the sleep"
    assert interrupted == [1, 2], "the body was cancelled through asyncio"
    assert done.status is Status.FAILED
    assert done.error is not None
    assert done.error["type"] == "Timeout"
    assert "0.2 s" in done.error["message"]
    events = await history(app, job.id, Status.FAILED, max_attempt=2)
    assert statuses(events) == [
        ("queued", 0, None),
        ("running", 1, None),
        ("queued", 1, "retry"),
        ("running", 2, None),
        ("failed", 2, "attempts_exhausted"),
    ]
    assert events[2].data["error"]["type"] == "Timeout"
    for start, end in ((events[1], events[2]), (events[3], events[4])):
        assert 0.2 <= end.at - start.at < 2.0


async def test_a_sync_task_past_its_timeout_stops_at_its_next_progress_call(app: underway.App) -> None:
    raised: list[BaseException] = []
    calls = 0

    @app.task(name="spinner", timeout=0.2)
    def spinner(ctx: underway.Context) -> str:
        nonlocal calls
        deadline = time.monotonic() + 20
        try:
            while time.monotonic() < deadline:
                calls += 1
                ctx.progress(calls)
        except BaseException as exc:
            raised.append(exc)
            raise
        return "never"

    job = await spinner.submit()
    async with running_worker(app):
        done = await app.wait(job.id, timeout=5)
        await wait_until(lambda: raised, what="the task to see its timeout")

    assert done.status is Status.FAILED
    assert done.error is not None
    assert done.error["type"] == "Timeout"
    assert [type(e) for e in raised] == [underway.TaskTimeout]
    events = await history(app, job.id, Status.FAILED, max_attempt=1)
    assert statuses(events)[-1] == ("failed", 1, "attempts_exhausted")
    assert any(e.type is EventType.PROGRESS for e in events)
