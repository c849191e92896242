"""Bounds on what a task writes (log lines, results, checkpoints) and on what a submission
carries (labels, queue names), on both stores, through the public API; seq stays gapless."""

from __future__ import annotations

from typing import Any

import pytest
from integration_support import history, of_type, running_worker

import underway
from underway import EventType, Status
from underway.bounds import MAX_QUEUE_NAME

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


def logs(events: list[underway.Event]) -> list[dict[str, Any]]:
    return [e.data for e in of_type(events, EventType.LOG)]


async def test_a_long_log_line_is_cut_with_a_marker(app: underway.App) -> None:
    @app.task(name="shout")
    async def shout(ctx: underway.Context) -> None:
        ctx.log.info("a" * 100_000)
        ctx.log.info("short", blob="b" * 500)
        ctx.log.info("short too", small=1)

    job = await shout.submit()
    async with running_worker(app, max_log_line=100):
        await app.wait(job.id, timeout=5)

    first, second, third = logs(await history(app, job.id, Status.SUCCEEDED))
    assert first["message"] == "a" * 100 + "… [cut 99,900 characters]"
    assert first["truncated"] == 99_900
    assert second == {"level": "info", "message": "short", "fields_truncated": 511}
    assert third == {"level": "info", "message": "short too", "fields": {"small": 1}}


async def test_log_lines_past_the_cap_are_counted_not_stored(app: underway.App) -> None:
    @app.task(name="chatty")
    def chatty(ctx: underway.Context, lines: int) -> int:
        for i in range(lines):
            ctx.log.info("line %d", i)
        return lines

    job = await chatty.submit(lines=2000)
    async with running_worker(app, max_log_lines=50):
        done = await app.wait(job.id, timeout=10)

    assert done.status is Status.SUCCEEDED
    found = logs(await history(app, job.id, Status.SUCCEEDED))
    assert [line["message"] for line in found[:50]] == [f"line {i}" for i in range(50)]
    notice, count = found[50:]
    assert notice["level"] == "warning"
    assert notice["cap"] == 50
    assert "further log lines are counted, not stored" in notice["message"]
    assert count["level"] == "warning"
    assert count["dropped"] == 1950
    assert "1,950 log lines were counted, not stored" in count["message"]


async def test_a_re_run_goes_on_counting_towards_the_cap(app: underway.App) -> None:
    @app.task(name="flaky_logger", retries=2, retry_delay=0.01)
    async def flaky_logger(ctx: underway.Context) -> int:
        for i in range(30):
            ctx.log.info("attempt %d line %d", ctx.attempt, i)
        if ctx.attempt < 3:
            raise RuntimeError("again")
        return ctx.attempt

    job = await flaky_logger.submit()
    async with running_worker(app, max_log_lines=40):
        done = await app.wait(job.id, timeout=10)

    assert done.status is Status.SUCCEEDED
    assert done.attempt == 3
    found = logs(await history(app, job.id, Status.SUCCEEDED, max_attempt=3))
    messages = [line["message"] for line in found]
    assert messages[:30] == [f"attempt 1 line {i}" for i in range(30)]
    assert messages[30:40] == [f"attempt 2 line {i}" for i in range(10)]
    # attempt 2: the notice at its first dropped line, its count when it ends; attempt 3
    # (already past the cap, its notice written) only its count.
    assert [line.get("cap") for line in found[40:]] == [40, 40, 40]
    assert [line.get("dropped") for line in found[40:]] == [None, 20, 30]


async def test_a_result_over_the_limit_fails_the_job_with_a_clear_error(app: underway.App) -> None:
    @app.task(name="hoard", retries=3)
    async def hoard(size: int) -> str:
        return "x" * size

    small = await hoard.submit(size=10)
    large = await hoard.submit(size=5000)
    async with running_worker(app, max_result_size=1000):
        assert (await app.wait(small.id, timeout=5)).result == "x" * 10
        failed = await app.wait(large.id, timeout=5)

    assert failed.status is Status.FAILED
    assert failed.attempt == 1, "not retried: it would fail again"
    assert failed.result is None
    assert failed.error is not None
    assert failed.error["type"] == "ResultTooLarge"
    message = failed.error["message"]
    assert "5,002 bytes" in message
    assert "1,000 allowed (max_result_size)" in message
    assert "return a reference" in message
    events = await history(app, large.id, Status.FAILED, max_attempt=1)
    assert "result" not in events[-1].data


async def test_a_checkpoint_over_the_limit_raises_in_the_task(app: underway.App) -> None:
    @app.task(name="saver")
    async def saver(ctx: underway.Context) -> dict[str, Any]:
        ctx.checkpoint({"page": 1})
        try:
            ctx.checkpoint({"pages": "y" * 5000})
        except underway.CheckpointTooLarge as exc:
            return {"error": str(exc), "last": ctx.last_checkpoint}
        return {}

    job = await saver.submit()
    async with running_worker(app, max_checkpoint_size=1000):
        done = await app.wait(job.id, timeout=5)

    assert done.status is Status.SUCCEEDED
    assert done.checkpoint == {"page": 1}
    assert done.result["last"] == {"page": 1}
    assert "5,012 bytes" in done.result["error"]
    assert "max_checkpoint_size" in done.result["error"]
    await history(app, job.id, Status.SUCCEEDED)


async def test_a_checkpoint_over_the_limit_fails_a_task_that_does_not_catch_it(app: underway.App) -> None:
    @app.task(name="careless")
    def careless(ctx: underway.Context) -> None:
        ctx.checkpoint(list(range(1000)))

    job = await careless.submit()
    async with running_worker(app, max_checkpoint_size=100):
        failed = await app.wait(job.id, timeout=5)
    assert failed.status is Status.FAILED
    assert failed.error is not None
    assert failed.error["type"] == "CheckpointTooLarge"
    assert failed.checkpoint is None


# -- labels and queue names --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "limit"),
    [
        ({f"k{i}": "v" for i in range(21)}, "max_labels"),
        ({"k" * 65: "v"}, "max_label_key"),
        ({"k": "v" * 257}, "max_label_value"),
        ({"": "v"}, "max_label_key"),
        ({"k": "a\x00b"}, "NUL"),
    ],
)
async def test_labels_over_the_limits_are_refused(
    app: underway.App, labels: dict[str, str], limit: str
) -> None:
    @app.task(name="noop")
    async def noop() -> None:
        return None

    with pytest.raises(underway.InvalidArguments, match=limit):
        await noop.options(labels=labels).submit()
    with pytest.raises(underway.InvalidArguments, match=limit):
        await app.submit_batch(noop, [{}], labels=labels)
    assert await app.list_jobs() == []
    job = await noop.options(labels={f"k{i}": "v" * 256 for i in range(20)}).submit()
    assert len(job.labels) == 20


async def test_labels_limits_are_settings(app: underway.App) -> None:
    small = underway.App(settings=app.settings.replace(max_labels=1))
    small.task(name="noop")(lambda: None)
    try:
        with pytest.raises(underway.InvalidArguments, match=r"2 labels, more than the 1"):
            await small.submit("noop", labels={"a": "1", "b": "2"})
    finally:
        await small.close()


async def test_a_queue_name_follows_one_rule_everywhere(app: underway.App) -> None:
    long = "q" * (MAX_QUEUE_NAME + 1)
    with pytest.raises(ValueError, match="1 to 100 characters"):
        app.task(name="badq", queue=long)(lambda: None)

    @app.task(name="noop")
    async def noop() -> None:
        return None

    for name in (long, "", "a\x00b", "half \ud800"):
        with pytest.raises(underway.InvalidArguments, match="a queue name"):
            await noop.options(queue=name).submit()
        with pytest.raises(underway.InvalidArguments, match="a queue name"):
            await app.submit_batch(noop, [{}], queue=name)
        with pytest.raises(underway.InvalidArguments, match="a queue name"):
            await app.pause_queue(name)
        with pytest.raises(underway.InvalidArguments, match="a queue name"):
            await app.resume_queue(name)
        with pytest.raises(underway.InvalidArguments, match="a queue name"):
            await app.limit_queue(name, 2)
    assert await app.queues() == [], "no queue row was made"
    assert (await app.pause_queue("q" * MAX_QUEUE_NAME)).paused


def test_the_queues_setting_takes_the_same_rule() -> None:
    with pytest.raises(underway.ConfigError, match="queues: a queue name has 1 to 100 characters"):
        underway.Settings(queues=("ok", "q" * 101))
    with pytest.raises(underway.ConfigError, match="NUL"):
        underway.Settings.from_env({"UNDERWAY_QUEUES": "a,b\x00c"})
