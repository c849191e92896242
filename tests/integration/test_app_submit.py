"""Submitting jobs: validation before anything is stored, options, delays and priorities."""

from __future__ import annotations

import time

import pytest
from integration_support import history, running_worker, statuses

import underway
from underway import Status
from underway.store import JobFilter

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


def add_task(app: underway.App) -> underway.Task[..., int]:
    @app.task(name="add")
    def add(a: int, b: int = 1) -> int:
        return a + b

    return add


@pytest.mark.parametrize(
    ("args", "loc", "kind"),
    [
        ({}, ["a"], "missing"),
        ({"a": "5"}, ["a"], "int_type"),
        ({"a": 1, "c": 2}, ["c"], "extra_forbidden"),
    ],
    ids=["missing", "wrong-type", "extra"],
)
async def test_invalid_arguments_are_refused_and_nothing_is_stored(
    app: underway.App, args: dict[str, object], loc: list[str], kind: str
) -> None:
    add = add_task(app)

    with pytest.raises(underway.InvalidArguments) as raised:
        await add.submit(**args)

    assert [(d["loc"], d["type"]) for d in raised.value.details] == [(loc, kind)]
    assert "add" in raised.value.message
    assert loc[0] in raised.value.message
    with pytest.raises(underway.InvalidArguments):
        await app.submit("add", args)
    assert await app.list_jobs() == []


async def test_positional_arguments_are_refused(app: underway.App) -> None:
    add = add_task(app)

    with pytest.raises(underway.InvalidArguments, match="by keyword"):
        await add.submit(1)  # type: ignore[call-arg]

    assert await app.list_jobs() == []


async def test_unknown_task_name_is_refused(app: underway.App) -> None:
    add_task(app)

    with pytest.raises(underway.TaskNotFound) as raised:
        await app.submit("nope", {})

    assert raised.value.details == {"task": "nope"}
    assert "add" in raised.value.message, "the message lists the registered tasks"
    assert await app.list_jobs() == []


async def test_valid_arguments_are_stored_with_defaults(app: underway.App) -> None:
    add = add_task(app)

    job = await add.submit(a=2)

    stored = await app.get(job.id)
    assert stored.args == {"a": 2, "b": 1}
    assert (stored.status, stored.queue, stored.task, stored.attempt) == (Status.QUEUED, "default", "add", 0)
    await history(app, job.id, None)


async def test_options_override_queue_delay_and_priority(app: underway.App) -> None:
    add = add_task(app)
    before = time.time()

    job = await add.options(queue="slow", delay=60.0, priority=7, max_attempts=3).submit(a=1)

    stored = await app.get(job.id)
    assert (stored.queue, stored.priority, stored.max_attempts) == ("slow", 7, 3)
    assert before + 60.0 <= stored.run_at <= time.time() + 60.0
    plain = await app.get((await add.submit(a=1)).id)
    assert (plain.queue, plain.priority, plain.max_attempts) == ("default", 0, 1)
    assert plain.run_at <= time.time()


async def test_options_are_validated(app: underway.App) -> None:
    add = add_task(app)

    with pytest.raises(underway.InvalidArguments, match="run_at or delay"):
        await add.options(delay=1.0, run_at=time.time()).submit(a=1)
    with pytest.raises(underway.InvalidArguments, match="max_attempts"):
        await add.options(max_attempts=0).submit(a=1)
    with pytest.raises(underway.InvalidArguments, match="timeout"):
        await add.options(timeout=-1.0).submit(a=1)
    assert await app.list_jobs() == []


async def test_a_delayed_job_is_not_claimed_before_its_run_at(app: underway.App) -> None:
    add = add_task(app)

    async with running_worker(app):
        delayed = await add.options(delay=1.0).submit(a=1)
        now = await add.submit(a=2)
        await app.wait(now.id, timeout=5)
        # The worker is demonstrably working, and the delayed job is not due yet.
        assert time.time() < delayed.run_at
        assert (await app.get(delayed.id)).status is Status.QUEUED

        done = await app.wait(delayed.id, timeout=5)

    assert done.status is Status.SUCCEEDED
    assert done.result == 2
    assert done.started_at is not None
    assert done.started_at >= delayed.run_at
    events = await history(app, delayed.id, Status.SUCCEEDED)
    assert statuses(events) == [("queued", 0, None), ("running", 1, None), ("succeeded", 1, None)]
    assert events[1].at >= delayed.run_at


async def test_higher_priority_runs_first_with_one_slot(app: underway.App) -> None:
    order: list[str] = []

    @app.task(name="record")
    def record(label: str) -> None:
        order.append(label)

    submitted = [
        await record.options(priority=priority).submit(label=label)
        for label, priority in [("low", 0), ("high-1", 5), ("top", 10), ("high-2", 5), ("low-2", 0)]
    ]

    async with running_worker(app, concurrency=1, burst=True):
        for job in submitted:
            await app.wait(job.id, timeout=5)

    assert order == ["top", "high-1", "high-2", "low", "low-2"]
    for job in submitted:
        await history(app, job.id, Status.SUCCEEDED)


async def test_a_job_with_no_registered_task_fails_without_retry(app: underway.App) -> None:
    other = underway.App(settings=app.settings)

    @other.task(name="elsewhere")
    def elsewhere() -> None: ...

    job = await other.submit("elsewhere", {}, max_attempts=3)
    await other.close()

    async with running_worker(app):
        failed = await app.wait(job.id, timeout=5)

    assert failed.status is Status.FAILED
    assert failed.error is not None
    assert "elsewhere" in failed.error["message"]
    events = await history(app, job.id, Status.FAILED, max_attempt=1)
    assert statuses(events)[-1] == ("failed", 1, "non_retryable")


async def test_wait_times_out_on_a_job_that_does_not_end(app: underway.App) -> None:
    add = add_task(app)
    job = await add.submit(a=1)

    with pytest.raises(TimeoutError):
        await app.wait(job.id, timeout=0.1)

    with pytest.raises(underway.JobNotFound):
        await app.get("0" * 26)


async def test_a_job_stores_its_crash_budget_at_submit(app: underway.App) -> None:
    add = add_task(app)

    @app.task(name="fragile", crash_retries=5)
    def fragile() -> None: ...

    assert (await add.submit(a=1)).crash_retries == app.settings.crash_retries == 2
    assert (await fragile.submit()).crash_retries == 5
    assert (await fragile.options(crash_retries=0).submit()).crash_retries == 0
    batch = await app.submit_batch(fragile, [{}, {}])
    assert {job.crash_retries for job in await app.find_jobs(JobFilter(batch_id=batch.id))} == {5}
    app.settings = app.settings.replace(crash_retries=7)
    stored = await add.submit(a=1)
    assert (await app.get(stored.id)).crash_retries == 7
    with pytest.raises(underway.InvalidArguments, match="crash_retries must not be negative"):
        await add.options(crash_retries=-1).submit(a=1)
    with pytest.raises(ValueError, match="crash_retries must not be negative"):
        app.task(name="broken", crash_retries=-1)
