"""The Store contract: every backend must pass these, through the Protocol methods only.

The ``store`` fixture (tests/conftest.py) checks at the end of every test that each job's
events are numbered 1..n without gaps.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
import pytest

from underway.events import Event, EventType, log_event
from underway.exceptions import InvalidTransition, JobNotFound, StoreError
from underway.jobs import TRANSITIONS, Job, Status, new_job_id
from underway.store import (
    UNSET,
    Heartbeat,
    JobFilter,
    Lease,
    NewJob,
    Store,
    SweepResult,
    WorkerInfo,
    WorkerWrite,
)

if TYPE_CHECKING:
    from tests.conftest import StoreFactory

pytestmark = pytest.mark.anyio

LEASE = 60.0
PROMPT = {"key": "go", "message": "Go on?", "options": ["yes", "no"]}
Contiguous = Callable[[Store, str], Awaitable[list[Event]]]


def new_job(
    *,
    queue: str = "default",
    task: str = "resize",
    args: dict[str, Any] | None = None,
    priority: int = 0,
    delay: float = 0.0,
    max_attempts: int = 1,
    crash_retries: int = 2,
    timeout: float | None = None,
    owner: str | None = None,
    labels: dict[str, str] | None = None,
) -> NewJob:
    return NewJob(
        id=new_job_id(),
        queue=queue,
        task=task,
        args={"n": 1} if args is None else args,
        priority=priority,
        run_at=time.time() + delay,
        max_attempts=max_attempts,
        crash_retries=crash_retries,
        timeout=timeout,
        owner=owner,
        labels=labels or {},
    )


async def submit(store: Store, **kwargs: Any) -> Job:
    (job,) = await store.enqueue([new_job(**kwargs)])
    return job


async def claim_job(store: Store, job: Job, *, worker: str = "w1", lease_timeout: float = LEASE) -> Job:
    """Claim ``job``, which must be the next one due in its queue."""
    claimed = await store.claim(worker, [job.queue], 1, lease_timeout)
    assert [c.id for c in claimed] == [job.id]
    return claimed[0]


async def running(store: Store, **kwargs: Any) -> Job:
    return await claim_job(store, await submit(store, **kwargs))


def lease(job: Job) -> Lease:
    return Lease(job.id, job.attempt)


async def record_one(store: Store, write: WorkerWrite) -> bool:
    (accepted,) = await store.record([write])
    return accepted


async def waiting(store: Store, prompt: dict[str, Any] | None = None, **kwargs: Any) -> Job:
    job = await running(store, **kwargs)
    write = WorkerWrite(lease=lease(job), status=Status.WAITING, prompt=prompt or PROMPT)
    assert await record_one(store, write)
    return await get(store, job.id)


async def finished(store: Store, status: Status, **kwargs: Any) -> Job:
    job = await running(store, **kwargs)
    error = None if status is Status.SUCCEEDED else {"type": "ValueError", "message": "bad"}
    write = WorkerWrite(lease=lease(job), status=status, result={"ok": 1}, error=error)
    assert await record_one(store, write)
    return await get(store, job.id)


async def in_status(store: Store, status: Status, **kwargs: Any) -> Job:
    if status is Status.QUEUED:
        return await submit(store, **kwargs)
    if status is Status.RUNNING:
        return await running(store, **kwargs)
    if status is Status.WAITING:
        return await waiting(store, **kwargs)
    return await finished(store, status, **kwargs)


async def get(store: Store, job_id: str) -> Job:
    job = await store.get(job_id)
    assert job is not None
    return job


async def statuses(store: Store, job_id: str) -> list[dict[str, Any]]:
    return [e.data for e in await store.events(job_id, types=["status"])]


def worker_info(worker_id: str = "w1", *, running: int = 0) -> WorkerInfo:
    now = time.time()
    return WorkerInfo(
        id=worker_id,
        host="host-1",
        pid=4242,
        queues=("default", "mail"),
        concurrency=4,
        running=running,
        started_at=now,
        last_seen=now,
    )


async def wait_until(condition: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not await condition():
            await anyio.sleep(0.005)


# -- life cycle ------------------------------------------------------------------------------------


async def test_open_twice_and_migrate_again_change_nothing(store: Store) -> None:
    await store.open()
    assert await store.migrate() == []


async def test_a_second_store_sees_the_first_ones_jobs(store: Store, stores: StoreFactory) -> None:
    job = await submit(store)
    other = await stores.open()
    assert await other.get(job.id) == job


# -- enqueue ---------------------------------------------------------------------------------------


async def test_enqueue_stores_a_queued_job(store: Store) -> None:
    before = time.time()
    new = new_job(
        queue="mail",
        task="send",
        args={"to": "a@example.com", "n": [1, 2]},
        priority=3,
        max_attempts=4,
        timeout=12.5,
        owner="alice",
        labels={"env": "prod"},
    )
    (job,) = await store.enqueue([new])
    assert job.id == new.id
    assert (job.queue, job.task, job.args) == ("mail", "send", {"to": "a@example.com", "n": [1, 2]})
    assert (job.priority, job.max_attempts, job.timeout) == (3, 4, 12.5)
    assert (job.owner, job.labels) == ("alice", {"env": "prod"})
    assert job.status is Status.QUEUED
    assert job.attempt == 0
    assert job.run_at == new.run_at
    assert before <= job.created_at == job.updated_at <= time.time()
    assert job.started_at is job.finished_at is job.lease_until is job.worker_id is None
    assert (job.progress, job.prompt, job.answers, job.checkpoint) == (None, None, {}, None)
    assert (job.result, job.error, job.cancel_requested) == (None, None, False)
    assert job.last_seq == 1
    assert await store.get(job.id) == job


async def test_enqueue_writes_the_first_event(store: Store, assert_contiguous: Contiguous) -> None:
    job = await submit(store)
    (event,) = await assert_contiguous(store, job.id)
    assert (event.seq, event.type, event.data) == (1, EventType.STATUS, {"status": "queued", "attempt": 0})
    assert event.at == job.created_at


async def test_enqueue_many_at_once(store: Store, assert_contiguous: Contiguous) -> None:
    news = [new_job(args={"i": i}) for i in range(5)]
    jobs = await store.enqueue(news)
    assert [j.id for j in jobs] == [n.id for n in news]
    for job in jobs:
        assert len(await assert_contiguous(store, job.id)) == 1


async def test_enqueue_nothing(store: Store) -> None:
    assert await store.enqueue([]) == []


async def test_enqueue_is_all_or_nothing(store: Store) -> None:
    first = new_job()
    with pytest.raises(StoreError):
        await store.enqueue([first, new_job(), NewJob(**{**_fields(first), "task": "other"})])
    assert await store.get(first.id) is None
    assert await store.list_jobs(JobFilter()) == []


def _fields(new: NewJob) -> dict[str, Any]:
    return {name: getattr(new, name) for name in NewJob.__dataclass_fields__}


async def test_get_unknown_job(store: Store) -> None:
    assert await store.get("nope") is None


# -- claim -----------------------------------------------------------------------------------------


async def test_claim_moves_a_job_to_running(store: Store, assert_contiguous: Contiguous) -> None:
    job = await submit(store, max_attempts=3)
    before = time.time()
    (claimed,) = await store.claim("w1", [], 10, 30.0)
    assert claimed.id == job.id
    assert claimed.status is Status.RUNNING
    assert claimed.attempt == 1
    assert claimed.worker_id == "w1"
    assert claimed.started_at is not None
    assert before <= claimed.started_at <= time.time()
    assert claimed.lease_until == pytest.approx(claimed.started_at + 30.0)
    assert claimed.last_seq == 2
    assert await store.get(job.id) == claimed
    events = await assert_contiguous(store, job.id)
    assert events[-1].data == {"status": "running", "attempt": 1}


async def test_claim_by_priority_then_age(store: Store) -> None:
    old_low = await submit(store, priority=0)
    high = await submit(store, priority=5)
    new_low = await submit(store, priority=0)
    mid = await submit(store, priority=2)
    negative = await submit(store, priority=-1)
    order = []
    for _ in range(5):
        (job,) = await store.claim("w1", [], 1, LEASE)
        order.append(job.id)
    assert order == [high.id, mid.id, old_low.id, new_low.id, negative.id]
    assert await store.claim("w1", [], 1, LEASE) == []


async def test_claim_returns_jobs_in_claim_order(store: Store) -> None:
    low = await submit(store, priority=0)
    high = await submit(store, priority=9)
    assert [j.id for j in await store.claim("w1", [], 10, LEASE)] == [high.id, low.id]


async def test_claim_respects_the_limit(store: Store) -> None:
    for _ in range(5):
        await submit(store)
    assert len(await store.claim("w1", [], 2, LEASE)) == 2
    assert len(await store.claim("w1", [], 2, LEASE)) == 2
    assert len(await store.claim("w1", [], 2, LEASE)) == 1
    assert await store.claim("w1", [], 2, LEASE) == []


async def test_claim_from_some_queues_only(store: Store) -> None:
    a_old = await submit(store, queue="a")
    c = await submit(store, queue="c", priority=9)
    b_high = await submit(store, queue="b", priority=5)
    a_new = await submit(store, queue="a")
    claimed = await store.claim("w1", ["a", "b"], 10, LEASE)
    assert [j.id for j in claimed] == [b_high.id, a_old.id, a_new.id]
    assert (await get(store, c.id)).status is Status.QUEUED
    assert [j.id for j in await store.claim("w1", ["c"], 10, LEASE)] == [c.id]


async def test_claim_across_queues_respects_the_limit(store: Store) -> None:
    a = await submit(store, queue="a", priority=1)
    await submit(store, queue="a")
    b = await submit(store, queue="b", priority=2)
    await submit(store, queue="b")
    assert [j.id for j in await store.claim("w1", ["a", "b"], 2, LEASE)] == [b.id, a.id]


async def test_claim_with_a_queue_named_twice(store: Store) -> None:
    first = await submit(store, queue="a")
    second = await submit(store, queue="a")
    claimed = await store.claim("w1", ["a", "a"], 2, LEASE)
    assert [j.id for j in claimed] == [first.id, second.id]


async def test_claim_nothing(store: Store) -> None:
    job = await submit(store)
    assert await store.claim("w1", [], 0, LEASE) == []
    assert await store.claim("w1", ["default"], 0, LEASE) == []
    assert await store.get(job.id) == job


async def test_claim_from_an_empty_or_unknown_queue(store: Store) -> None:
    assert await store.claim("w1", [], 5, LEASE) == []
    await submit(store, queue="a")
    assert await store.claim("w1", ["zzz"], 5, LEASE) == []


async def test_delayed_job_is_not_claimed_until_due(store: Store) -> None:
    later = await submit(store, delay=0.2)
    now_job = await submit(store)
    assert [j.id for j in await store.claim("w1", [], 10, LEASE)] == [now_job.id]
    assert await store.claim("w1", [], 10, LEASE) == []
    assert await store.claim("w1", ["default"], 10, LEASE) == []
    await anyio.sleep(max(0.0, later.run_at - time.time()) + 0.01)
    assert [j.id for j in await store.claim("w1", ["default"], 10, LEASE)] == [later.id]


async def test_next_run_at_is_the_earliest_queued_job(store: Store) -> None:
    assert await store.next_run_at([]) is None
    late = await submit(store, queue="b", delay=60)
    soon = await submit(store, queue="a", delay=30)
    assert await store.next_run_at([]) == soon.run_at
    assert await store.next_run_at(["b"]) == late.run_at
    assert await store.next_run_at(["c"]) is None
    await store.cancel(JobFilter(ids=(soon.id,)))
    assert await store.next_run_at([]) == late.run_at
    assert await store.next_run_at(["a"]) is None


async def test_finished_since_counts_jobs_that_ended_in_the_window(store: Store) -> None:
    before = time.time()
    first = await running(store)
    assert await store.record([WorkerWrite(lease=Lease(first.id, 1), status=Status.SUCCEEDED)]) == [True]
    second = await submit(store, queue="other")
    await store.cancel(JobFilter(ids=(second.id,)))
    await submit(store)  # still queued: not counted
    windows = {(w.queue, w.status): w for w in await store.finished_since(before)}
    assert set(windows) == {("default", Status.SUCCEEDED), ("other", Status.CANCELLED)}
    done = windows["default", Status.SUCCEEDED]
    assert done.count == 1
    assert 0 <= done.total_seconds == done.longest_seconds < 5
    assert await store.finished_since(time.time() + 60) == []


async def test_a_claimed_job_is_not_claimed_again(store: Store) -> None:
    await running(store)
    assert await store.claim("w2", [], 10, LEASE) == []


async def test_concurrent_claims_from_several_stores_never_share_a_job(
    store: Store, stores: StoreFactory
) -> None:
    others = [await stores.open() for _ in range(3)]
    await store.enqueue([new_job() for _ in range(60)])
    claimed: list[list[Job]] = []

    async def claim_all(s: Store, name: str) -> None:
        while batch := await s.claim(name, [], 3, LEASE):
            claimed.append(batch)

    async with anyio.create_task_group() as tg:
        for i, s in enumerate([store, *others, store]):
            tg.start_soon(claim_all, s, f"w{i}")
    ids = [j.id for batch in claimed for j in batch]
    assert len(ids) == len(set(ids)) == 60
    assert {j.attempt for batch in claimed for j in batch} == {1}


# -- record ----------------------------------------------------------------------------------------


async def test_record_logs_and_progress(store: Store, assert_contiguous: Contiguous) -> None:
    job = await running(store)
    progress = {"current": 3, "total": 10, "percent": 30.0}
    write = WorkerWrite(
        lease=lease(job),
        events=(log_event("info", "one"), log_event("warning", "two", {"k": 1})),
        progress=progress,
    )
    assert await store.record([write]) == [True]
    events = await assert_contiguous(store, job.id)
    assert [(e.seq, e.type) for e in events[2:]] == [
        (3, EventType.LOG),
        (4, EventType.LOG),
        (5, EventType.PROGRESS),
    ]
    assert events[3].data == {"level": "warning", "message": "two", "fields": {"k": 1}}
    assert events[4].data == progress
    after = await get(store, job.id)
    assert after.progress == progress
    assert after.status is Status.RUNNING
    assert after.last_seq == 5
    assert after.updated_at >= job.updated_at


async def test_record_keeps_the_last_progress(store: Store) -> None:
    job = await running(store)
    await store.record([WorkerWrite(lease=lease(job), progress={"current": 1})])
    await store.record([WorkerWrite(lease=lease(job), events=(log_event("info", "x"),))])
    assert (await get(store, job.id)).progress == {"current": 1}
    await store.record([WorkerWrite(lease=lease(job), progress={"current": 2})])
    assert (await get(store, job.id)).progress == {"current": 2}


async def test_many_writes_get_contiguous_seqs(store: Store, assert_contiguous: Contiguous) -> None:
    a, b = await running(store), await running(store)
    writes = [
        WorkerWrite(lease=lease(job), events=(log_event("info", str(i)),), progress={"current": i})
        for i in range(20)
        for job in (a, b)
    ]
    assert await store.record(writes) == [True] * 40
    for job in (a, b):
        events = await assert_contiguous(store, job.id)
        assert len(events) == 2 + 40
        assert [e.data["current"] for e in events if e.type is EventType.PROGRESS] == list(range(20))


async def test_writes_of_one_job_in_one_call_apply_in_order(
    store: Store, assert_contiguous: Contiguous
) -> None:
    a, b = await running(store), await running(store)
    writes = [
        WorkerWrite(lease=lease(a), progress={"current": 1}),
        WorkerWrite(lease=lease(b), status=Status.FAILED, error={"type": "E", "message": "m"}),
        WorkerWrite(lease=lease(a), progress={"current": 2}, status=Status.SUCCEEDED, result="done"),
        WorkerWrite(lease=lease(a), progress={"current": 3}),  # after the end: refused
        WorkerWrite(lease=lease(b), status=Status.SUCCEEDED, result="late"),  # failed is final
    ]
    assert await store.record(writes) == [True, True, True, False, False]
    events = await assert_contiguous(store, a.id)
    assert [(e.type, e.data.get("current", e.data.get("status"))) for e in events[2:]] == [
        (EventType.PROGRESS, 1),
        (EventType.PROGRESS, 2),
        (EventType.STATUS, "succeeded"),
    ]
    done = await get(store, a.id)
    assert (done.status, done.result, done.progress) == (Status.SUCCEEDED, "done", {"current": 2})
    failed = await get(store, b.id)
    assert (failed.status, failed.result) == (Status.FAILED, None)
    assert failed.error == {"type": "E", "message": "m"}


async def test_record_with_a_stale_attempt_is_refused_and_writes_nothing(
    store: Store, assert_contiguous: Contiguous
) -> None:
    job = await running(store)
    before = await assert_contiguous(store, job.id)
    stale = WorkerWrite(
        lease=Lease(job.id, job.attempt + 1),
        events=(log_event("info", "late"),),
        progress={"current": 9},
        checkpoint={"page": 9},
    )
    assert await store.record([stale]) == [False]
    final = WorkerWrite(lease=Lease(job.id, 0), status=Status.SUCCEEDED, result=1)
    assert await store.record([final]) == [False]
    assert await store.events(job.id) == before
    assert await store.get(job.id) == job


async def test_record_refused_and_accepted_in_one_call(store: Store) -> None:
    a, b = await running(store), await running(store)
    writes = [
        WorkerWrite(lease=Lease(a.id, 7), progress={"current": 1}),
        WorkerWrite(lease=lease(b), progress={"current": 2}),
        WorkerWrite(lease=Lease("missing", 1), progress={"current": 3}),
    ]
    assert await store.record(writes) == [False, True, False]
    assert (await get(store, a.id)).progress is None
    assert (await get(store, b.id)).progress == {"current": 2}


async def test_record_nothing(store: Store) -> None:
    assert await store.record([]) == []


async def test_checkpoint(store: Store) -> None:
    job = await running(store, max_attempts=2)
    await store.record([WorkerWrite(lease=lease(job), checkpoint={"page": 3})])
    assert (await get(store, job.id)).checkpoint == {"page": 3}
    await store.record([WorkerWrite(lease=lease(job), progress={"current": 1}, checkpoint=UNSET)])
    assert (await get(store, job.id)).checkpoint == {"page": 3}
    await store.record([WorkerWrite(lease=lease(job), checkpoint=[1, "two"])])
    assert (await get(store, job.id)).checkpoint == [1, "two"]
    # A re-run reads the checkpoint back.
    await store.record([WorkerWrite(lease=lease(job), status=Status.QUEUED, run_at=time.time())])
    again = await claim_job(store, job)
    assert again.attempt == 2
    assert again.checkpoint == [1, "two"]


async def test_checkpoint_alone_adds_no_event(store: Store) -> None:
    job = await running(store)
    assert await record_one(store, WorkerWrite(lease=lease(job), checkpoint=5))
    assert (await get(store, job.id)).last_seq == job.last_seq


async def test_record_success(store: Store, assert_contiguous: Contiguous) -> None:
    job = await running(store)
    write = WorkerWrite(
        lease=lease(job),
        progress={"current": 10, "total": 10, "percent": 100.0},
        status=Status.SUCCEEDED,
        result={"added": 3},
    )
    assert await record_one(store, write)
    done = await get(store, job.id)
    assert done.status is Status.SUCCEEDED
    assert done.result == {"added": 3}
    assert done.error is None
    assert done.finished_at is not None
    assert done.finished_at >= job.started_at  # type: ignore[operator]
    assert done.lease_until is None
    assert done.worker_id is None
    assert done.progress == {"current": 10, "total": 10, "percent": 100.0}
    events = await assert_contiguous(store, job.id)
    assert [e.type for e in events[2:]] == [EventType.PROGRESS, EventType.STATUS]
    assert events[-1].data == {"status": "succeeded", "attempt": 1, "result": {"added": 3}}
    assert events[-1].ends_job


async def test_record_success_with_a_null_result(store: Store) -> None:
    job = await running(store)
    assert await record_one(store, WorkerWrite(lease=lease(job), status=Status.SUCCEEDED))
    assert (await get(store, job.id)).result is None
    assert (await statuses(store, job.id))[-1] == {"status": "succeeded", "attempt": 1, "result": None}


async def test_record_failure(store: Store) -> None:
    job = await running(store)
    error = {"type": "ValueError", "message": "bad", "traceback": "Traceback…"}
    write = WorkerWrite(lease=lease(job), status=Status.FAILED, error=error, reason="attempts_exhausted")
    assert await record_one(store, write)
    done = await get(store, job.id)
    assert (done.status, done.error, done.result) == (Status.FAILED, error, None)
    assert done.finished_at is not None
    assert (await statuses(store, job.id))[-1] == {
        "status": "failed",
        "attempt": 1,
        "error": error,
        "reason": "attempts_exhausted",
    }


async def test_record_retry_later(store: Store) -> None:
    job = await running(store, max_attempts=3)
    error = {"type": "IOError", "message": "flaky"}
    run_at = time.time() + 0.2
    write = WorkerWrite(lease=lease(job), status=Status.QUEUED, error=error, run_at=run_at, reason="retry")
    assert await record_one(store, write)
    queued = await get(store, job.id)
    assert queued.status is Status.QUEUED
    assert queued.run_at == run_at
    assert queued.attempt == 1
    assert queued.error == error  # the last error stays visible until the next attempt ends
    assert queued.lease_until is None
    assert queued.worker_id is None
    assert queued.finished_at is None
    last = (await statuses(store, job.id))[-1]
    assert last["status"] == "queued"
    assert last["attempt"] == 1
    assert last["reason"] == "retry"
    assert last["error"] == error
    assert "run_at" in last
    # Not claimed before it is due; then attempt 2, and the first attempt's lease is dead.
    assert await store.claim("w2", [], 5, LEASE) == []
    await anyio.sleep(max(0.0, run_at - time.time()) + 0.01)
    second = await claim_job(store, job, worker="w2")
    assert second.attempt == 2
    assert not await record_one(store, WorkerWrite(lease=lease(job), progress={"current": 1}))
    assert await record_one(store, WorkerWrite(lease=lease(second), status=Status.SUCCEEDED, result=2))
    assert (await get(store, job.id)).error is None


async def test_record_hand_back_gives_the_attempt_back(store: Store) -> None:
    job = await running(store, max_attempts=2)
    write = WorkerWrite(
        lease=lease(job), status=Status.QUEUED, run_at=time.time(), reason="worker_shutdown", hand_back=True
    )
    assert await record_one(store, write)
    back = await get(store, job.id)
    assert (back.status, back.attempt, back.max_attempts) == (Status.QUEUED, 1, 3)


async def test_record_waiting_with_a_prompt(store: Store, assert_contiguous: Contiguous) -> None:
    job = await running(store)
    assert await record_one(store, WorkerWrite(lease=lease(job), status=Status.WAITING, prompt=PROMPT))
    now_waiting = await get(store, job.id)
    assert now_waiting.status is Status.WAITING
    assert now_waiting.prompt == PROMPT
    assert now_waiting.worker_id == "w1"
    assert now_waiting.lease_until == job.lease_until  # the lease is still held
    events = await assert_contiguous(store, job.id)
    assert [(e.type, e.data) for e in events[2:]] == [
        (EventType.STATUS, {"status": "waiting", "attempt": 1}),
        (EventType.PROMPT, PROMPT),
    ]
    # A waiting job's worker may still log, and resume it.
    assert await record_one(store, WorkerWrite(lease=lease(job), events=(log_event("info", "zzz"),)))
    assert await record_one(store, WorkerWrite(lease=lease(job), status=Status.RUNNING))
    resumed = await get(store, job.id)
    assert (resumed.status, resumed.prompt) == (Status.RUNNING, None)


ACTIVE_SOURCES = [Status.RUNNING, Status.WAITING]


@pytest.mark.parametrize("target", list(Status), ids=str)
@pytest.mark.parametrize("source", ACTIVE_SOURCES, ids=str)
async def test_record_moves_only_along_the_transition_table(
    store: Store, source: Status, target: Status
) -> None:
    job = await in_status(store, source, max_attempts=3)
    write = WorkerWrite(
        lease=lease(job),
        status=target,
        prompt=PROMPT if target is Status.WAITING else None,
        run_at=time.time() if target is Status.QUEUED else None,
        events=(log_event("info", "with the move"),),
    )
    legal = target in TRANSITIONS[source]
    assert await record_one(store, write) is legal
    after = await get(store, job.id)
    if legal:
        assert after.status is target
        assert after.last_seq > job.last_seq
    else:
        assert after == job


@pytest.mark.parametrize(
    "source", [Status.QUEUED, Status.SUCCEEDED, Status.FAILED, Status.CANCELLED], ids=str
)
@pytest.mark.parametrize("target", [None, *Status], ids=str)
async def test_no_worker_write_once_the_attempt_is_over(
    store: Store, source: Status, target: Status | None
) -> None:
    if source is Status.QUEUED:  # requeued after its first attempt, not claimed again yet
        first = await running(store, max_attempts=3)
        back = WorkerWrite(lease=lease(first), status=Status.QUEUED, run_at=time.time() + 3600)
        assert await record_one(store, back)
        job = await get(store, first.id)
    else:
        job = await in_status(store, source, max_attempts=3)
    write = WorkerWrite(
        lease=lease(job),
        status=target,
        prompt=PROMPT if target is Status.WAITING else None,
        progress={"current": 1},
    )
    assert not await record_one(store, write)
    assert await store.get(job.id) == job


# -- heartbeat and workers -------------------------------------------------------------------------


async def test_heartbeat_extends_the_lease(store: Store) -> None:
    job = await running(store, max_attempts=2)
    short = await claim_job(store, await submit(store), lease_timeout=0.5)
    before = time.time()
    beat = await store.heartbeat(worker_info(), [lease(job), lease(short)], 120.0)
    assert beat == Heartbeat(lost=frozenset(), cancelling=frozenset())
    for claimed in (job, short):
        extended = await get(store, claimed.id)
        assert extended.lease_until is not None
        assert before + 120.0 <= extended.lease_until <= time.time() + 120.0
        assert extended.last_seq == claimed.last_seq  # no event


async def test_heartbeat_keeps_a_short_lease_alive(store: Store) -> None:
    short = await claim_job(store, await submit(store), lease_timeout=0.05)
    assert short.lease_until is not None
    await store.heartbeat(worker_info(), [lease(short)], LEASE)
    await anyio.sleep(max(0.0, short.lease_until - time.time()) + 0.01)
    assert await store.sweep(cancel_grace=10.0) == SweepResult()
    assert (await get(store, short.id)).status is Status.RUNNING


async def test_heartbeat_reports_lost_leases(store: Store) -> None:
    ended = await finished(store, Status.SUCCEEDED)
    taken = await running(store, max_attempts=2)
    await record_one(store, WorkerWrite(lease=lease(taken), status=Status.QUEUED, run_at=time.time()))
    retaken = await claim_job(store, taken, worker="w2")
    held = await running(store)
    leases = [lease(ended), lease(taken), lease(held), Lease("missing", 1)]
    beat = await store.heartbeat(worker_info(), leases, LEASE)
    assert beat.lost == {ended.id, taken.id, "missing"}
    assert beat.cancelling == frozenset()
    assert (await get(store, retaken.id)).lease_until == retaken.lease_until  # w1 did not extend w2's


async def test_heartbeat_reports_jobs_asked_to_stop(store: Store) -> None:
    a, b = await running(store), await waiting(store)
    c = await running(store)
    await store.cancel(JobFilter(ids=(a.id, b.id)))
    beat = await store.heartbeat(worker_info(), [lease(a), lease(b), lease(c)], LEASE)
    assert beat == Heartbeat(lost=frozenset(), cancelling=frozenset({a.id, b.id}))
    assert await store.cancelling("w1") == {a.id, b.id}
    assert await store.cancelling("w2") == frozenset()


async def test_cancelling_forgets_jobs_that_ended(store: Store) -> None:
    job = await running(store)
    await store.cancel(JobFilter(ids=(job.id,)))
    assert await store.cancelling("w1") == {job.id}
    await record_one(store, WorkerWrite(lease=lease(job), status=Status.CANCELLED, reason="cancelled"))
    assert await store.cancelling("w1") == frozenset()


async def test_heartbeat_registers_the_worker(store: Store) -> None:
    assert await store.workers(60.0) == []
    info = worker_info("w1", running=2)
    await store.heartbeat(info, [], LEASE)
    (seen,) = await store.workers(60.0)
    assert seen.id == "w1"
    assert (seen.host, seen.pid, seen.queues, seen.concurrency) == ("host-1", 4242, ("default", "mail"), 4)
    assert seen.running == 2
    assert seen.started_at == info.started_at
    assert seen.last_seen >= info.last_seen
    await store.heartbeat(worker_info("w2"), [], LEASE)
    await store.heartbeat(worker_info("w1", running=3), [], LEASE)
    workers = {w.id: w for w in await store.workers(60.0)}
    assert set(workers) == {"w1", "w2"}
    assert workers["w1"].running == 3
    assert workers["w1"].started_at == info.started_at  # the first registration's
    assert workers["w1"].last_seen >= seen.last_seen
    await store.remove_worker("w1")
    assert [w.id for w in await store.workers(60.0)] == ["w2"]
    await store.remove_worker("never-seen")


async def test_workers_not_seen_recently_are_not_listed(store: Store) -> None:
    await store.heartbeat(worker_info("w1"), [], LEASE)
    await anyio.sleep(0.05)
    assert await store.workers(0.01) == []
    assert len(await store.workers(60.0)) == 1


# -- cancel ----------------------------------------------------------------------------------------


async def test_cancel_a_queued_job_at_once(store: Store, assert_contiguous: Contiguous) -> None:
    job = await submit(store, delay=3600.0)
    (changed,) = await store.cancel(JobFilter(ids=(job.id,)))
    assert changed.id == job.id
    assert changed.status is Status.CANCELLED
    assert changed.finished_at is not None
    assert await store.get(job.id) == changed
    events = await assert_contiguous(store, job.id)
    assert events[-1].data == {"status": "cancelled", "attempt": 0}
    assert await store.claim("w1", [], 5, LEASE) == []


@pytest.mark.parametrize("status", [Status.RUNNING, Status.WAITING], ids=str)
async def test_cancel_an_active_job_asks_it_to_stop(
    store: Store, status: Status, assert_contiguous: Contiguous
) -> None:
    job = await in_status(store, status)
    (changed,) = await store.cancel(JobFilter(ids=(job.id,)))
    assert (changed.id, changed.status, changed.cancel_requested) == (job.id, status, True)
    assert changed.finished_at is None
    assert await store.get(job.id) == changed
    events = await assert_contiguous(store, job.id)
    assert events[-1].type is EventType.STATUS
    assert events[-1].data == {"status": status.value, "attempt": 1, "cancel_requested": True}
    # Asking again changes nothing and adds no event.
    assert await store.cancel(JobFilter(ids=(job.id,))) == []
    assert (await get(store, job.id)).last_seq == changed.last_seq
    # The worker still holds the job and records how it ended.
    write = WorkerWrite(lease=lease(job), status=Status.CANCELLED, reason="cancelled")
    assert await record_one(store, write)
    done = await get(store, job.id)
    assert done.status is Status.CANCELLED
    assert done.finished_at is not None


@pytest.mark.parametrize("hand_back", [False, True], ids=["retry", "hand_back"])
async def test_a_job_asked_to_stop_is_not_queued_again(store: Store, hand_back: bool) -> None:
    # The attempt failed (or its worker shut down) before the worker heard of the cancel:
    # the job ends cancelled instead of running again.
    job = await running(store, max_attempts=3)
    await store.cancel(JobFilter(ids=(job.id,)))
    error = {"type": "IOError", "message": "flaky"}
    write = WorkerWrite(
        lease=lease(job), status=Status.QUEUED, run_at=time.time(), error=error, hand_back=hand_back
    )
    assert await record_one(store, write)
    done = await get(store, job.id)
    assert (done.status, done.max_attempts) == (Status.CANCELLED, 3)
    assert done.finished_at is not None
    assert (await statuses(store, job.id))[-1] == {
        "status": "cancelled",
        "attempt": 1,
        "error": error,
        "reason": "cancelled",
    }
    assert await store.claim("w2", [], 5, LEASE) == []


@pytest.mark.parametrize("status", [Status.SUCCEEDED, Status.FAILED, Status.CANCELLED], ids=str)
async def test_cancel_leaves_finished_jobs_alone(store: Store, status: Status) -> None:
    job = await in_status(store, status)
    assert await store.cancel(JobFilter(ids=(job.id,))) == []
    assert await store.get(job.id) == job


async def test_cancel_unknown_job_changes_nothing(store: Store) -> None:
    assert await store.cancel(JobFilter(ids=("missing",))) == []


async def _cancel_fixture(store: Store) -> dict[str, Job]:
    started = {
        "d": await running(store, queue="q1", task="t1", labels={"env": "prod"}, owner="bob"),
        "e": await finished(store, Status.SUCCEEDED, queue="q1", task="t1", labels={"env": "prod"}),
    }
    return {
        "a": await submit(store, queue="q1", task="t1", labels={"env": "prod"}, owner="alice"),
        "b": await submit(store, queue="q2", task="t1", labels={"env": "dev"}, owner="bob"),
        "c": await submit(store, queue="q1", task="t2", labels={"env": "dev"}, owner="alice"),
        **started,
    }


@pytest.mark.parametrize(
    ("job_filter", "expected"),
    [
        (JobFilter(queue="q1"), {"a", "c", "d"}),
        (JobFilter(task="t1"), {"a", "b", "d"}),
        (JobFilter(label=("env", "prod")), {"a", "d"}),
        (JobFilter(label=("env", "staging")), set()),
        (JobFilter(owner="alice"), {"a", "c"}),
        (JobFilter(statuses=(Status.QUEUED,)), {"a", "b", "c"}),
        (JobFilter(statuses=(Status.RUNNING, Status.SUCCEEDED)), {"d"}),
        (JobFilter(queue="q1", task="t1"), {"a", "d"}),
        (JobFilter(), {"a", "b", "c", "d"}),
    ],
)
async def test_cancel_by_filter(store: Store, job_filter: JobFilter, expected: set[str]) -> None:
    jobs = await _cancel_fixture(store)
    names = {job.id: name for name, job in jobs.items()}
    changed = await store.cancel(job_filter)
    assert {names[j.id] for j in changed} == expected
    for name, job in jobs.items():
        after = await get(store, job.id)
        if name not in expected:
            assert after == job
        elif job.status is Status.QUEUED:
            assert after.status is Status.CANCELLED
        else:
            assert (after.status, after.cancel_requested) == (Status.RUNNING, True)


async def test_cancel_label_filter_is_exact(store: Store) -> None:
    odd = await submit(store, labels={"a.b": "x", "a": "x"})
    await submit(store, labels={"a": "x"})
    assert [j.id for j in await store.cancel(JobFilter(label=("a.b", "x")))] == [odd.id]


# -- answer ----------------------------------------------------------------------------------------


async def test_answer_resumes_a_waiting_job(store: Store, assert_contiguous: Contiguous) -> None:
    job = await waiting(store)
    answered = await store.answer(job.id, "go", "yes")
    assert answered.status is Status.RUNNING
    assert answered.answers == {"go": "yes"}
    assert answered.prompt is None
    assert answered.attempt == job.attempt
    assert answered.worker_id == job.worker_id
    assert await store.get(job.id) == answered
    events = await assert_contiguous(store, job.id)
    assert [(e.type, e.data) for e in events[-2:]] == [
        (EventType.ANSWER, {"key": "go", "value": "yes"}),
        (EventType.STATUS, {"status": "running", "attempt": 1}),
    ]
    # The worker that asked still holds the job.
    assert await record_one(store, WorkerWrite(lease=lease(job), status=Status.SUCCEEDED, result="done"))


async def test_answers_accumulate_and_outlive_a_rerun(store: Store) -> None:
    job = await waiting(store, prompt={"key": "first", "message": "?"}, max_attempts=2)
    await store.answer(job.id, "first", {"n": 1})
    write = WorkerWrite(lease=lease(job), status=Status.WAITING, prompt={"key": "second", "message": "?"})
    assert await record_one(store, write)
    await store.answer(job.id, "second", [2])
    assert (await get(store, job.id)).answers == {"first": {"n": 1}, "second": [2]}
    await record_one(store, WorkerWrite(lease=lease(job), status=Status.QUEUED, run_at=time.time()))
    again = await claim_job(store, job)
    assert again.answers == {"first": {"n": 1}, "second": [2]}


async def test_answer_with_the_wrong_key(store: Store) -> None:
    job = await waiting(store)
    with pytest.raises(InvalidTransition, match="'go'"):
        await store.answer(job.id, "other", "yes")
    assert await store.get(job.id) == job


@pytest.mark.parametrize(
    "status", [Status.QUEUED, Status.RUNNING, Status.SUCCEEDED, Status.FAILED, Status.CANCELLED], ids=str
)
async def test_answer_only_a_waiting_job(store: Store, status: Status) -> None:
    job = await in_status(store, status)
    with pytest.raises(InvalidTransition, match=status.value):
        await store.answer(job.id, "go", "yes")
    assert await store.get(job.id) == job


async def test_answer_unknown_job(store: Store) -> None:
    with pytest.raises(JobNotFound):
        await store.answer("missing", "go", "yes")


# -- retry -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [Status.SUCCEEDED, Status.FAILED, Status.CANCELLED], ids=str)
async def test_retry_a_finished_job(store: Store, status: Status, assert_contiguous: Contiguous) -> None:
    job = await in_status(store, status, max_attempts=1)
    again = await store.retry(job.id, max_attempts=job.attempt + 2)
    assert again.id == job.id
    assert again.status is Status.QUEUED
    assert again.attempt == job.attempt
    assert again.max_attempts == job.attempt + 2
    assert (again.result, again.error, again.finished_at, again.cancel_requested) == (None, None, None, False)
    assert again.last_seq == job.last_seq + 1
    assert await store.get(job.id) == again
    events = await assert_contiguous(store, job.id)
    assert events[-1].data == {"status": "queued", "attempt": job.attempt, "reason": "retry"}
    # It runs again under the same id, with the next attempt number.
    rerun = await claim_job(store, again)
    assert rerun.attempt == job.attempt + 1
    assert await record_one(store, WorkerWrite(lease=lease(rerun), status=Status.SUCCEEDED, result=1))
    assert (await get(store, job.id)).last_seq == again.last_seq + 2


@pytest.mark.parametrize("status", [Status.QUEUED, Status.RUNNING, Status.WAITING], ids=str)
async def test_retry_only_a_finished_job(store: Store, status: Status) -> None:
    job = await in_status(store, status)
    with pytest.raises(InvalidTransition, match=status.value):
        await store.retry(job.id, max_attempts=3)
    assert await store.get(job.id) == job


async def test_retry_unknown_job(store: Store) -> None:
    with pytest.raises(JobNotFound):
        await store.retry("missing", max_attempts=1)


# -- delete ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [Status.SUCCEEDED, Status.FAILED, Status.CANCELLED], ids=str)
async def test_delete_a_finished_job(store: Store, status: Status) -> None:
    job = await in_status(store, status)
    kept = await finished(store, Status.SUCCEEDED)
    await store.delete(job.id)
    assert await store.get(job.id) is None
    assert await store.events(job.id) == []
    assert await store.get(kept.id) == kept


@pytest.mark.parametrize("status", [Status.QUEUED, Status.RUNNING, Status.WAITING], ids=str)
async def test_delete_only_a_finished_job(store: Store, status: Status) -> None:
    job = await in_status(store, status)
    with pytest.raises(InvalidTransition, match=status.value):
        await store.delete(job.id)
    assert await store.get(job.id) == job


async def test_delete_unknown_job(store: Store) -> None:
    with pytest.raises(JobNotFound):
        await store.delete("missing")


# -- listing ---------------------------------------------------------------------------------------


async def test_list_jobs_newest_first(store: Store) -> None:
    jobs = [await submit(store) for _ in range(4)]
    await claim_job(store, jobs[0])
    assert [j.id for j in await store.list_jobs(JobFilter())] == [j.id for j in reversed(jobs)]
    assert (await store.list_jobs(JobFilter()))[-1].status is Status.RUNNING


async def test_list_jobs_pages(store: Store) -> None:
    jobs = [await submit(store) for _ in range(7)]
    seen: list[str] = []
    before = None
    while page := await store.list_jobs(JobFilter(), limit=3, before=before):
        assert len(page) <= 3
        seen += [j.id for j in page]
        before = page[-1].id
    assert seen == [j.id for j in reversed(jobs)]


async def test_list_jobs_pages_with_a_filter(store: Store) -> None:
    wanted = []
    for i in range(9):
        job = await submit(store, queue="a" if i % 3 else "b")
        if i % 3:
            wanted.append(job.id)
    first = await store.list_jobs(JobFilter(queue="a"), limit=4)
    second = await store.list_jobs(JobFilter(queue="a"), limit=4, before=first[-1].id)
    assert [j.id for j in first + second] == list(reversed(wanted))
    assert await store.list_jobs(JobFilter(queue="a"), limit=4, before=second[-1].id) == []


@pytest.mark.parametrize(
    ("job_filter", "expected"),
    [
        (JobFilter(queue="q1"), {"a", "c", "d", "e"}),
        (JobFilter(task="t2"), {"c"}),
        (JobFilter(owner="bob"), {"b", "d"}),
        (JobFilter(label=("env", "dev")), {"b", "c"}),
        (JobFilter(statuses=(Status.SUCCEEDED,)), {"e"}),
        (JobFilter(statuses=(Status.QUEUED, Status.RUNNING)), {"a", "b", "c", "d"}),
        (JobFilter(queue="q1", statuses=(Status.QUEUED,), label=("env", "prod")), {"a"}),
        (JobFilter(ids=("a", "e")), {"a", "e"}),
        (JobFilter(queue="nope"), set()),
    ],
)
async def test_list_jobs_filters(store: Store, job_filter: JobFilter, expected: set[str]) -> None:
    jobs = await _cancel_fixture(store)
    names = {job.id: name for name, job in jobs.items()}
    if job_filter.ids:
        job_filter = JobFilter(ids=tuple(jobs[n].id for n in job_filter.ids))
    assert {names[j.id] for j in await store.list_jobs(job_filter)} == expected


async def test_list_jobs_limit(store: Store) -> None:
    for _ in range(5):
        await submit(store)
    assert len(await store.list_jobs(JobFilter(), limit=2)) == 2


# -- events ----------------------------------------------------------------------------------------


async def _busy_job(store: Store) -> Job:
    """A running job with events: 1 queued, 2 running, then log, progress, log, progress, log."""
    job = await running(store)
    for i in range(2):
        await record_one(
            store,
            WorkerWrite(lease=lease(job), events=(log_event("info", f"l{i}"),), progress={"current": i}),
        )
    await record_one(store, WorkerWrite(lease=lease(job), events=(log_event("info", "l2"),)))
    return job


async def test_events_after(store: Store) -> None:
    job = await _busy_job(store)
    assert [e.seq for e in await store.events(job.id)] == [1, 2, 3, 4, 5, 6, 7]
    assert [e.seq for e in await store.events(job.id, after=4)] == [5, 6, 7]
    assert await store.events(job.id, after=7) == []
    assert [e.seq for e in await store.events(job.id, after=2, limit=2)] == [3, 4]


async def test_events_of_some_types(store: Store) -> None:
    job = await _busy_job(store)
    assert [e.seq for e in await store.events(job.id, types=["log"])] == [3, 5, 7]
    assert [e.seq for e in await store.events(job.id, types=["progress", "status"])] == [1, 2, 4, 6]
    assert [e.seq for e in await store.events(job.id, after=3, types=["log"])] == [5, 7]


async def test_events_of_some_types_fill_the_limit(store: Store) -> None:
    # The limit counts matching events: the first page of logs is not empty because the
    # first events are status events.
    job = await _busy_job(store)
    assert [e.seq for e in await store.events(job.id, types=["log"], limit=2)] == [3, 5]
    assert [e.seq for e in await store.events(job.id, after=5, types=["log"], limit=1)] == [7]


async def test_events_carry_their_time(store: Store) -> None:
    job = await running(store)
    first, second = await store.events(job.id)
    assert first.at == job.created_at
    assert first.at <= second.at <= time.time()


async def test_events_of_unknown_job(store: Store) -> None:
    assert await store.events("missing") == []


# -- feed ------------------------------------------------------------------------------------------


async def test_feed_gives_events_of_all_jobs_in_commit_order(store: Store) -> None:
    start = await store.feed_position()
    a = await submit(store)
    b = await submit(store)
    a = await claim_job(store, a)
    await record_one(store, WorkerWrite(lease=lease(a), events=(log_event("info", "a"),)))
    await store.cancel(JobFilter(ids=(b.id,)))
    await store.record(
        [
            WorkerWrite(lease=lease(a), progress={"current": 1}),
            WorkerWrite(lease=lease(a), status=Status.SUCCEEDED, result=None),
        ]
    )
    events, position = await store.feed(start)
    assert [(e.job_id, e.seq, e.type.value) for e in events] == [
        (a.id, 1, "status"),
        (b.id, 1, "status"),
        (a.id, 2, "status"),
        (a.id, 3, "log"),
        (b.id, 2, "status"),
        (a.id, 4, "progress"),
        (a.id, 5, "status"),
    ]
    assert position == await store.feed_position()
    assert await store.feed(position) == ([], position)


async def test_feed_in_pages(store: Store) -> None:
    start = await store.feed_position()
    for _ in range(5):
        await submit(store)
    seen: list[Event] = []
    position = start
    while True:
        page, next_position = await store.feed(position, limit=2)
        if not page:
            assert next_position == position
            break
        assert len(page) <= 2
        assert next_position > position
        seen += page
        position = next_position
    assert len(seen) == 5
    assert seen == (await store.feed(start))[0]


async def test_feed_of_an_empty_store(store: Store) -> None:
    position = await store.feed_position()
    assert await store.feed(position) == ([], position)


async def test_feed_sees_writes_of_another_store(store: Store, stores: StoreFactory) -> None:
    other = await stores.open()
    start = await store.feed_position()
    job = await submit(other)
    events, position = await store.feed(start)
    assert [(e.job_id, e.seq) for e in events] == [(job.id, 1)]
    assert position == await other.feed_position()


# -- sweep -----------------------------------------------------------------------------------------


async def _expired(store: Store, **kwargs: Any) -> Job:
    """A job claimed with a tiny lease that has now run out."""
    return await _lose_worker(store, await submit(store, **kwargs))


async def _lose_worker(store: Store, job: Job) -> Job:
    """Claim ``job`` (the next due in its queue) with a tiny lease, and let the lease run out."""
    claimed = await claim_job(store, job, lease_timeout=0.05)
    assert claimed.lease_until is not None
    await anyio.sleep(max(0.0, claimed.lease_until - time.time()) + 0.01)
    return claimed


async def test_sweep_requeues_an_expired_lease_on_its_crash_budget(
    store: Store, assert_contiguous: Contiguous
) -> None:
    job = await claim_job(store, await submit(store), lease_timeout=0.05)  # retries=0: max_attempts 1
    assert await record_one(store, WorkerWrite(lease=lease(job), checkpoint={"done": 3}))
    assert job.lease_until is not None
    await anyio.sleep(max(0.0, job.lease_until - time.time()) + 0.01)
    assert await store.sweep(cancel_grace=10.0) == SweepResult(requeued=1)
    back = await get(store, job.id)
    assert (back.status, back.attempt, back.worker_id, back.lease_until) == (Status.QUEUED, 1, None, None)
    # The lost attempt is not the task's: max_attempts grows by one, the crash is counted instead.
    assert (back.max_attempts, back.crashes, back.crash_retries) == (2, 1, 2)
    assert back.checkpoint == {"done": 3}
    assert back.error is None
    assert back.run_at <= time.time()
    events = await assert_contiguous(store, job.id)
    assert {k: v for k, v in events[-1].data.items() if k != "run_at"} == {
        "status": "queued",
        "attempt": 1,
        "reason": "lease_expired",
    }
    # The stalled worker is fenced out; another claims attempt 2, which may still succeed.
    assert not await record_one(store, WorkerWrite(lease=lease(job), status=Status.SUCCEEDED))
    again = await claim_job(store, job, worker="w2")
    assert (again.attempt, again.max_attempts, again.checkpoint) == (2, 2, {"done": 3})
    assert await store.sweep(cancel_grace=10.0) == SweepResult()
    assert await record_one(store, WorkerWrite(lease=lease(again), status=Status.SUCCEEDED, result=1))
    done = await get(store, job.id)
    assert (done.status, done.attempt, done.max_attempts, done.crashes) == (Status.SUCCEEDED, 2, 2, 1)
    assert [s["status"] for s in await statuses(store, job.id)].count("succeeded") == 1


async def test_sweep_leaves_the_task_retries_to_its_own_failures(store: Store) -> None:
    job = await _expired(store, max_attempts=2)  # retries=1
    assert await store.sweep(cancel_grace=10.0) == SweepResult(requeued=1)
    again = await claim_job(store, job)
    assert (again.attempt, again.max_attempts, again.crashes) == (2, 3, 1)
    error = {"type": "ValueError", "message": "bad"}
    retry = WorkerWrite(
        lease=lease(again), status=Status.QUEUED, error=error, run_at=time.time(), reason="retry"
    )
    assert await record_one(store, retry)  # its one retry, still there after the crash
    third = await claim_job(store, again)
    assert (third.attempt, third.max_attempts, third.crashes) == (3, 3, 1)


async def test_sweep_fails_a_job_that_lost_more_workers_than_its_crash_retries(store: Store) -> None:
    job = await submit(store, crash_retries=2)
    for crashes in (1, 2):
        await _lose_worker(store, job)
        assert await store.sweep(cancel_grace=10.0) == SweepResult(requeued=1)
        back = await get(store, job.id)
        assert (back.status, back.crashes, back.attempt, back.max_attempts) == (
            Status.QUEUED,
            crashes,
            crashes,
            1 + crashes,
        )
    await _lose_worker(store, job)
    assert await store.sweep(cancel_grace=10.0) == SweepResult(failed=1)
    failed = await get(store, job.id)
    assert (failed.status, failed.crashes, failed.attempt, failed.max_attempts) == (Status.FAILED, 3, 3, 3)
    assert failed.finished_at is not None
    assert failed.error is not None
    assert failed.error["type"] == "WorkerLost"
    assert "lost its worker 3 times, more than crash_retries=2 allows" in failed.error["message"]
    assert "may be what kills its workers" in failed.error["message"]
    last = (await statuses(store, job.id))[-1]
    assert (last["status"], last["reason"], last["error"]) == ("failed", "lease_expired", failed.error)
    expiries = [s for s in await statuses(store, job.id) if s.get("reason") == "lease_expired"]
    assert [(s["status"], s["attempt"]) for s in expiries] == [("queued", 1), ("queued", 2), ("failed", 3)]


async def test_sweep_fails_at_once_without_crash_retries(store: Store) -> None:
    job = await _expired(store, max_attempts=5, crash_retries=0)
    assert await store.sweep(cancel_grace=10.0) == SweepResult(failed=1)
    failed = await get(store, job.id)
    assert (failed.status, failed.crashes, failed.attempt, failed.max_attempts) == (Status.FAILED, 1, 1, 5)
    assert failed.error is not None
    assert failed.error["type"] == "WorkerLost"
    assert "lost its worker once" in failed.error["message"]


async def test_a_manual_retry_gives_the_crash_budget_back(store: Store) -> None:
    job = await _expired(store, crash_retries=0)
    other = await _expired(store, crash_retries=0)
    assert await store.sweep(cancel_grace=10.0) == SweepResult(failed=2)
    again = await store.retry(job.id, max_attempts=2)
    assert (again.status, again.crashes, again.crash_retries, again.attempt) == (Status.QUEUED, 0, 0, 1)
    (others,) = await store.retry_jobs(JobFilter(ids=(other.id,)), 1)
    assert (others.status, others.crashes, others.crash_retries) == (Status.QUEUED, 0, 0)
    assert await store.get(other.id) == others


async def test_sweep_cancels_an_expired_lease_asked_to_stop(store: Store) -> None:
    job = await _expired(store, max_attempts=3)
    await store.cancel(JobFilter(ids=(job.id,)))
    assert await store.sweep(cancel_grace=10.0) == SweepResult(cancelled=1)
    cancelled = await get(store, job.id)
    assert (cancelled.status, cancelled.max_attempts, cancelled.crashes) == (Status.CANCELLED, 3, 1)
    assert (await statuses(store, job.id))[-1]["reason"] == "lease_expired"


async def test_sweep_requeues_a_waiting_job_whose_lease_expired(store: Store) -> None:
    job = await claim_job(store, await submit(store, max_attempts=2), lease_timeout=0.05)
    await record_one(store, WorkerWrite(lease=lease(job), status=Status.WAITING, prompt=PROMPT))
    assert job.lease_until is not None
    await anyio.sleep(max(0.0, job.lease_until - time.time()) + 0.01)
    assert await store.sweep(cancel_grace=10.0) == SweepResult(requeued=1)
    back = await get(store, job.id)
    assert (back.status, back.prompt, back.crashes) == (Status.QUEUED, None, 1)


async def test_sweep_leaves_live_leases_alone(store: Store) -> None:
    job = await running(store)
    waiting_job = await waiting(store)
    queued = await submit(store)
    assert await store.sweep(cancel_grace=10.0) == SweepResult()
    for before in (job, waiting_job, queued):
        assert await store.get(before.id) == before


async def test_sweep_cancels_a_job_that_ignored_its_cancel_past_the_grace(store: Store) -> None:
    job = await running(store)
    other = await running(store)
    await store.cancel(JobFilter(ids=(job.id,)))
    assert await store.sweep(cancel_grace=60.0) == SweepResult()
    assert (await get(store, job.id)).status is Status.RUNNING
    await anyio.sleep(0.06)
    assert await store.sweep(cancel_grace=0.05) == SweepResult(cancelled=1)
    ended = await get(store, job.id)
    assert ended.status is Status.CANCELLED
    assert ended.finished_at is not None
    assert (await statuses(store, job.id))[-1] == {
        "status": "cancelled",
        "attempt": 1,
        "reason": "cancel_grace",
    }
    # The late worker's writes are refused; the other job runs on.
    assert not await record_one(store, WorkerWrite(lease=lease(job), status=Status.SUCCEEDED))
    assert (await get(store, other.id)).status is Status.RUNNING


async def test_sweep_result_total() -> None:
    assert SweepResult(requeued=1, failed=2, cancelled=3).total == 6
    assert SweepResult().total == 0


# -- prune -----------------------------------------------------------------------------------------


async def test_prune_only_finished_jobs_older_than_the_cutoff(store: Store) -> None:
    old = [await in_status(store, s) for s in (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)]
    await anyio.sleep(0.5)
    recent = await finished(store, Status.SUCCEEDED)
    alive = [await in_status(store, s) for s in (Status.RUNNING, Status.WAITING, Status.QUEUED)]
    assert await store.prune(3600.0) == 0
    # A cutoff halfway between the old and the recent jobs: 0.25 s of margin either side, so a
    # loaded machine cannot move a job across it.
    assert recent.finished_at is not None
    older_than = time.time() - (recent.finished_at - 0.25)
    assert await store.prune(older_than) == 3
    for job in old:
        assert await store.get(job.id) is None
        assert await store.events(job.id) == []
    for job in [recent, *alive]:
        assert await store.get(job.id) == job
        assert len(await store.events(job.id)) == job.last_seq
    assert await store.prune(older_than) == 0


async def test_prune_in_chunks(store: Store) -> None:
    for _ in range(5):
        await finished(store, Status.SUCCEEDED)
    await anyio.sleep(0.01)
    assert [await store.prune(0.0, limit=2) for _ in range(4)] == [2, 2, 1, 0]
    assert await store.list_jobs(JobFilter()) == []
    assert (await store.feed(0))[0] == []


# -- stats -----------------------------------------------------------------------------------------


async def test_stats(store: Store) -> None:
    assert await store.stats() == {}
    await submit(store, queue="a")
    await submit(store, queue="a")
    await running(store, queue="b")
    await finished(store, Status.FAILED, queue="b")
    await waiting(store, queue="c")
    assert await store.stats() == {
        "a": {"queued": 2},
        "b": {"running": 1, "failed": 1},
        "c": {"waiting": 1},
    }


# -- waiting for changes ---------------------------------------------------------------------------


async def test_wait_for_change_times_out(store: Store) -> None:
    await submit(store)
    token = store.change_token()
    start = time.monotonic()
    assert await store.wait_for_change(token, 0.1) == token
    assert time.monotonic() - start >= 0.09


async def test_wait_for_change_with_no_time_returns_at_once(store: Store) -> None:
    token = store.change_token()
    with anyio.fail_after(1.0):
        assert await store.wait_for_change(token, 0.0) == token


async def test_change_token_moves_with_writes(store: Store) -> None:
    token = store.change_token()
    assert store.change_token() == token
    job = await submit(store)
    moved = store.change_token()
    assert moved != token
    with anyio.fail_after(1.0):
        assert await store.wait_for_change(token, 10.0) != token  # stale token: at once
    await store.get(job.id)
    await store.events(job.id)
    assert store.change_token() == moved  # reads change nothing


async def _wakes_on(writer: Store, waiter: Store, write: Callable[[Store], Awaitable[object]]) -> None:
    token = waiter.change_token()
    woke: list[float] = []

    async def wait() -> None:
        woke.append(time.monotonic())
        new = await waiter.wait_for_change(token, 10.0)
        woke.append(time.monotonic())
        assert new != token

    with anyio.fail_after(5.0):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.sleep(0.05)  # let the waiter park
            assert len(woke) == 1
            await write(writer)
            written = time.monotonic()
    assert woke[1] - written < 1.0


async def test_wait_for_change_wakes_on_a_write_of_the_same_store(store: Store) -> None:
    await _wakes_on(store, store, submit)


async def test_wait_for_change_wakes_on_a_write_from_another_store(
    store: Store, stores: StoreFactory
) -> None:
    other = await stores.open()
    await _wakes_on(other, store, submit)


async def test_wait_for_change_wakes_on_a_worker_write_from_another_store(
    store: Store, stores: StoreFactory
) -> None:
    other = await stores.open()
    job = await running(other)
    await settled(store)  # the news of that claim may still be on its way (a NOTIFY, say)

    async def progress(s: Store) -> object:
        return await s.record([WorkerWrite(lease=lease(job), progress={"current": 1})])

    await _wakes_on(other, store, progress)


async def settled(store: Store, quiet: float = 0.1) -> None:
    """Until the store's change token has stayed the same for ``quiet`` seconds."""
    with anyio.fail_after(5.0):
        token = store.change_token()
        while (moved := await store.wait_for_change(token, quiet)) != token:
            token = moved


async def test_many_waiters_wake_together(store: Store, stores: StoreFactory) -> None:
    other = await stores.open()
    token = store.change_token()
    results: list[int] = []

    async def wait() -> None:
        results.append(await store.wait_for_change(token, 10.0))

    with anyio.fail_after(5.0):
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(wait)
            await anyio.sleep(0.02)
            await submit(other)
    assert len(results) == 5
    assert token not in results
