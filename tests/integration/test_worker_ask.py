"""Questions to the user: waiting, answering, stored answers on re-runs, timeouts, slots."""

from __future__ import annotations

import time
from typing import Any

import pytest
from integration_support import history, of_type, running_worker, status_is, statuses, wait_until

import underway
from underway import EventType, Status

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


async def wait_waiting(app: underway.App, job_id: str) -> underway.Job:
    await wait_until(lambda: status_is(app, job_id, Status.WAITING), what=f"{job_id} to ask")
    return await app.get(job_id)


async def test_an_async_task_asks_and_resumes_with_the_answer(app: underway.App) -> None:
    @app.task(name="confirm")
    async def confirm(ctx: underway.Context, what: str) -> dict[str, Any]:
        answer = await ctx.ask(f"Delete {what}?", options=["yes", "no"])
        return {"what": what, "answer": answer}

    job = await confirm.submit(what="everything")
    async with running_worker(app):
        waiting = await wait_waiting(app, job.id)
        assert waiting.prompt == {"key": "q1", "message": "Delete everything?", "options": ["yes", "no"]}

        with pytest.raises(underway.InvalidArguments) as raised:
            await app.answer(job.id, "maybe")
        assert raised.value.details == {"options": ["yes", "no"]}
        assert (await app.get(job.id)).status is Status.WAITING, "a wrong answer changes nothing"

        resumed = await app.answer(job.id, "no")
        assert resumed.status is Status.RUNNING
        assert resumed.answers == {"q1": "no"}
        done = await app.wait(job.id, timeout=5)

    assert done.status is Status.SUCCEEDED
    assert done.result == {"what": "everything", "answer": "no"}
    assert done.prompt is None
    with pytest.raises(underway.InvalidTransition) as not_waiting:
        await app.answer(job.id, "yes")
    assert not_waiting.value.details == {"status": "succeeded"}
    events = await history(app, job.id, Status.SUCCEEDED, max_attempt=1)
    assert statuses(events) == [
        ("queued", 0, None),
        ("running", 1, None),
        ("waiting", 1, "ask"),
        ("running", 1, None),
        ("succeeded", 1, None),
    ]
    assert [(e.type, e.data) for e in events if e.type in (EventType.PROMPT, EventType.ANSWER)] == [
        (EventType.PROMPT, waiting.prompt),
        (EventType.ANSWER, {"key": "q1", "value": "no"}),
    ]
    prompt = of_type(events, EventType.PROMPT)[0]
    assert events[prompt.seq - 2].status is Status.WAITING, "the prompt follows the waiting status"


async def test_answering_a_job_that_is_not_waiting_is_an_invalid_transition(app: underway.App) -> None:
    @app.task(name="silent")
    def silent() -> None: ...

    job = await silent.submit()

    with pytest.raises(underway.InvalidTransition) as raised:
        await app.answer(job.id, "yes")

    assert raised.value.details == {"status": "queued"}
    with pytest.raises(underway.JobNotFound):
        await app.answer("0" * 26, "yes")
    await history(app, job.id, None)


async def test_a_stored_answer_is_reused_when_the_job_runs_again(app: underway.App) -> None:
    answers: list[tuple[int, str]] = []

    @app.task(name="ask_then_fail", retries=1, retry_delay=0.01)
    async def ask_then_fail(ctx: underway.Context) -> str:
        answer = await ctx.ask("Which colour?", options=["red", "blue"])
        answers.append((ctx.attempt, answer))
        if ctx.attempt == 1:
            raise RuntimeError("crashed after the answer")
        return answer

    job = await ask_then_fail.submit()
    async with running_worker(app):
        await wait_waiting(app, job.id)
        await app.answer(job.id, "blue")
        done = await app.wait(job.id, timeout=5)

    assert answers == [(1, "blue"), (2, "blue")]
    assert done.status is Status.SUCCEEDED
    assert done.result == "blue"
    events = await history(app, job.id, Status.SUCCEEDED, max_attempt=2)
    assert statuses(events) == [
        ("queued", 0, None),
        ("running", 1, None),
        ("waiting", 1, "ask"),
        ("running", 1, None),
        ("queued", 1, "retry"),
        ("running", 2, None),
        ("succeeded", 2, None),
    ]
    assert len(of_type(events, EventType.PROMPT)) == 1, "attempt 2 did not ask again"
    assert len(of_type(events, EventType.ANSWER)) == 1


async def test_a_sync_task_asks_with_ask_sync(app: underway.App) -> None:
    @app.task(name="sync_confirm")
    def sync_confirm(ctx: underway.Context) -> dict[str, Any]:
        first = ctx.ask_sync("How many?", schema={"type": "integer"})
        second = ctx.ask_sync("Sure?", options=[True, False], key="sure")
        return {"first": first, "second": second}

    job = await sync_confirm.submit()
    async with running_worker(app):
        first = await wait_waiting(app, job.id)
        assert first.prompt == {"key": "q1", "message": "How many?", "schema": {"type": "integer"}}
        await app.answer(job.id, 12)
        await wait_until(lambda: _prompt_key(app, job.id, "sure"), what="the second question")
        await app.answer(job.id, True)
        done = await app.wait(job.id, timeout=5)

    assert done.result == {"first": 12, "second": True}
    assert done.answers == {"q1": 12, "sure": True}
    events = await history(app, job.id, Status.SUCCEEDED)
    assert [s for s, _, _ in statuses(events)].count("waiting") == 2


async def _prompt_key(app: underway.App, job_id: str, key: str) -> bool:
    job = await app.get(job_id)
    return job.status is Status.WAITING and job.prompt is not None and job.prompt["key"] == key


async def test_a_waiting_job_does_not_hold_a_slot(app: underway.App) -> None:
    @app.task(name="asker")
    async def asker(ctx: underway.Context) -> str:
        return str(await ctx.ask("Go?"))

    @app.task(name="doer")
    async def doer() -> str:
        return "done"

    async with running_worker(app, concurrency=1) as worker:
        a = await asker.submit()
        await wait_waiting(app, a.id)
        b = await doer.submit()

        b_done = await app.wait(b.id, timeout=5)
        assert b_done.status is Status.SUCCEEDED
        assert (await app.get(a.id)).status is Status.WAITING, "A still waits while B ran"
        assert worker.busy == 0

        await app.answer(a.id, "go")
        a_done = await app.wait(a.id, timeout=5)

    assert a_done.result == "go"
    await history(app, a.id, Status.SUCCEEDED)
    await history(app, b.id, Status.SUCCEEDED)


async def test_an_unanswered_question_times_out_inside_the_task(app: underway.App) -> None:
    @app.task(name="impatient")
    async def impatient(ctx: underway.Context) -> str:
        try:
            await ctx.ask("Anyone?", timeout=0.3)
        except TimeoutError as exc:
            return f"gave up: {exc}"
        return "answered"

    job = await impatient.submit()
    async with running_worker(app):
        await wait_waiting(app, job.id)
        started = time.monotonic()
        done = await app.wait(job.id, timeout=5)

    assert done.status is Status.SUCCEEDED
    assert done.result.startswith("gave up")
    assert "q1" in done.result
    assert time.monotonic() - started < 2.0
    events = await history(app, job.id, Status.SUCCEEDED)
    assert statuses(events) == [
        ("queued", 0, None),
        ("running", 1, None),
        ("waiting", 1, "ask"),
        ("running", 1, "ask_timeout"),
        ("succeeded", 1, None),
    ]
    assert not of_type(events, EventType.ANSWER)


async def test_cancelling_a_waiting_job_ends_it(app: underway.App) -> None:
    seen: list[str] = []

    @app.task(name="asks_forever")
    async def asks_forever(ctx: underway.Context) -> str:
        try:
            return str(await ctx.ask("Well?"))
        except BaseException as exc:
            seen.append(type(exc).__name__)
            raise

    job = await asks_forever.submit()
    async with running_worker(app, concurrency=1, cancel_grace=10.0) as worker:
        await wait_waiting(app, job.id)
        await app.cancel(job.id)
        done = await app.wait(job.id, timeout=5)
        await wait_until(lambda: worker.runs == {}, what="the run to end")
        assert worker.busy == 0, "the slot given back while waiting is not given back twice"

    assert done.status is Status.CANCELLED
    assert seen
    assert seen[0] in ("Cancelled", "CancelledError")
    events = await history(app, job.id, Status.CANCELLED)
    assert statuses(events)[-2:] == [("waiting", 1, None), ("cancelled", 1, "cancelled")]
