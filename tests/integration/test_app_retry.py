"""Retrying many jobs (``App.retry_matching``): which ones, and with how many attempts."""

from __future__ import annotations

import pytest

import underway
import underway.app
from underway import Status
from underway.store import JobFilter, Lease, WorkerWrite

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


def tasks(app: underway.App) -> None:
    @app.task(name="once")
    def once(n: int = 0) -> int:
        return n

    @app.task(name="thrice", retries=2)
    def thrice(n: int = 0) -> int:
        return n


async def ended(app: underway.App, task: str, status: Status, n: int = 0) -> underway.Job:
    """A job of ``task`` that ran once and ended with ``status``."""
    job = await app.submit(task, {"n": n}, queue=task)
    (claimed,) = await app.store.claim("w", [task], 1, 30.0)
    write = WorkerWrite(lease=Lease(job.id, claimed.attempt), status=status, error={"message": "no"})
    assert await app.store.record([write]) == [True]
    return await app.get(job.id)


async def test_each_job_gets_its_own_tasks_attempts(app: underway.App) -> None:
    tasks(app)
    once = await ended(app, "once", Status.FAILED)
    thrice = await ended(app, "thrice", Status.CANCELLED)
    assert await app.retry_matching(JobFilter()) == 2
    for job, attempts in ((once, 1), (thrice, 3)):
        again = await app.get(job.id)
        assert (again.status, again.max_attempts) == (Status.QUEUED, job.attempt + attempts)


async def test_failed_and_cancelled_jobs_by_default_and_finished_ones_only(app: underway.App) -> None:
    tasks(app)
    failed = await ended(app, "once", Status.FAILED)
    await ended(app, "once", Status.SUCCEEDED)
    await app.submit("once", {"n": 1}, queue="once")
    assert await app.retry_matching(JobFilter()) == 1
    assert (await app.get(failed.id)).status is Status.QUEUED
    assert await app.retry_matching(JobFilter(statuses=(Status.SUCCEEDED,))) == 1
    with pytest.raises(underway.InvalidArguments, match="only finished jobs") as refused:
        await app.retry_matching(JobFilter(statuses=(Status.FAILED, Status.RUNNING)))
    assert refused.value.details == {"status": ["running"]}


async def test_every_page_is_retried_and_each_job_once(
    app: underway.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(underway.app, "RETRY_PAGE", 2)
    tasks(app)
    jobs = [await ended(app, "thrice" if n % 2 else "once", Status.FAILED, n) for n in range(5)]
    assert await app.retry_matching(JobFilter(q='"n":')) == 5
    for job in jobs:  # one retry each: one more event, ``status: queued``
        again = await app.get(job.id)
        assert (again.status, again.last_seq) == (Status.QUEUED, job.last_seq + 1)
