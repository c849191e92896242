"""The store's batches, queue controls, limits and idempotency keys, on every backend."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import pytest

from underway.exceptions import BatchNotFound, IdempotencyConflict
from underway.jobs import Job, Status, new_job_id
from underway.store import Batch, JobFilter, Lease, NewBatch, NewJob, Store, WorkerWrite

if TYPE_CHECKING:
    from tests.conftest import StoreFactory

pytestmark = pytest.mark.anyio
LEASE = 30.0


def new(n: int = 0, **fields: Any) -> NewJob:
    return NewJob(
        **{
            "id": new_job_id(),
            "queue": "default",
            "task": "t",
            "args": {"n": n},
            "run_at": time.time(),
            **fields,
        }
    )


async def batch_of(store: Store, count: int, **fields: Any) -> Batch:
    batch = NewBatch(id=new_job_id(), task="t", queue=fields.get("queue", "default"), name="photos")
    return await store.create_batch(batch, [new(n, batch_id=batch.id, **fields) for n in range(count)])


async def finish(store: Store, job: Job, status: Status) -> None:
    error = None if status is Status.SUCCEEDED else {"type": "E", "message": "no"}
    write = WorkerWrite(
        lease=Lease(job.id, job.attempt), status=status, result={"n": job.args["n"]}, error=error
    )
    assert await store.record([write]) == [True]


# -- batches ---------------------------------------------------------------------------------------


async def test_a_batch_and_its_jobs_are_stored_together(store: Store) -> None:
    batch = await batch_of(store, 5)
    assert (batch.total, batch.name, batch.task, batch.status) == (5, "photos", "t", "queued")
    assert batch.counts == {"queued": 5}
    items = await store.list_jobs(JobFilter(batch_id=batch.id), limit=100)
    assert sorted(job.args["n"] for job in items) == [0, 1, 2, 3, 4]
    assert {job.batch_id for job in items} == {batch.id}
    assert await store.get_batch(batch.id) == batch
    assert await store.get_batch("nope") is None


async def test_batches_are_listed_newest_first_by_pages(store: Store) -> None:
    made = [await batch_of(store, 1) for _ in range(3)]
    first = await store.list_batches(limit=2)
    assert [b.id for b in first] == [made[2].id, made[1].id]
    rest = await store.list_batches(limit=2, before=first[-1].id)
    assert [b.id for b in rest] == [made[0].id]


async def test_a_batch_goes_through_running_to_partial(store: Store) -> None:
    batch = await batch_of(store, 4)
    jobs = await store.claim("w", [], 10, LEASE)
    assert len(jobs) == 4
    assert (await store.get_batch(batch.id)).status == "running"  # type: ignore[union-attr]
    for job, status in zip(
        jobs, [Status.SUCCEEDED, Status.SUCCEEDED, Status.FAILED, Status.CANCELLED], strict=True
    ):
        await finish(store, job, status)
    done = await store.get_batch(batch.id)
    assert done is not None
    assert done.counts == {"succeeded": 2, "failed": 1, "cancelled": 1}
    assert done.status == "partial"
    assert done.started_at is not None
    assert done.finished_at is not None


@pytest.mark.parametrize(
    ("ends", "status"),
    [
        ([Status.SUCCEEDED, Status.SUCCEEDED], "completed"),
        ([Status.FAILED, Status.FAILED], "failed"),
    ],
)
async def test_a_batch_that_ended_all_alike(store: Store, ends: list[Status], status: str) -> None:
    batch = await batch_of(store, 2)
    for job, end in zip(await store.claim("w", [], 10, LEASE), ends, strict=True):
        await finish(store, job, end)
    assert (await store.get_batch(batch.id)).status == status  # type: ignore[union-attr]


async def test_a_paused_batch_starts_nothing_until_resumed(store: Store) -> None:
    batch = await batch_of(store, 3)
    other = await store.enqueue([new(9)])
    paused = await store.pause_batch(batch.id, True)
    assert paused.status == "paused"
    assert [j.id for j in await store.claim("w", [], 10, LEASE)] == [other[0].id]
    assert await store.next_run_at([]) is None
    assert await store.claim("w", ["default"], 10, LEASE) == []
    resumed = await store.pause_batch(batch.id, False)
    assert resumed.status == "queued"
    assert len(await store.claim("w", ["default"], 10, LEASE)) == 3
    with pytest.raises(BatchNotFound):
        await store.pause_batch("nope", True)


async def test_cancelling_a_batch_cancels_queued_items_and_asks_running_ones_to_stop(store: Store) -> None:
    batch = await batch_of(store, 3)
    (running,) = await store.claim("w", [], 1, LEASE)
    cancelled, changed = await store.cancel_batch(batch.id)
    assert len(changed) == 3
    assert cancelled.counts == {"cancelled": 2, "running": 1}
    assert cancelled.status == "running"  # its running item still has to stop
    assert (await store.get(running.id)).cancel_requested  # type: ignore[union-attr]
    await finish(store, running, Status.CANCELLED)
    assert (await store.get_batch(batch.id)).status == "cancelled"  # type: ignore[union-attr]


async def test_retrying_a_batch_reruns_only_its_failed_and_cancelled_items(store: Store) -> None:
    batch = await batch_of(store, 3)
    jobs = await store.claim("w", [], 10, LEASE)
    for job, end in zip(jobs, [Status.SUCCEEDED, Status.FAILED, Status.CANCELLED], strict=True):
        await finish(store, job, end)
    again = await store.retry_jobs(
        JobFilter(batch_id=batch.id, statuses=(Status.FAILED, Status.CANCELLED)), 2
    )
    assert sorted(j.id for j in again) == sorted(j.id for j in jobs[1:])
    assert all(j.status is Status.QUEUED and j.max_attempts == j.attempt + 2 for j in again)
    after = await store.get_batch(batch.id)
    assert after is not None
    assert after.counts == {"succeeded": 1, "queued": 2}
    assert after.status == "running"


async def test_retrying_items_by_any_filter_reopens_their_cancelled_batch(store: Store) -> None:
    batch = await batch_of(store, 2)
    await store.cancel_batch(batch.id)
    again = await store.retry_jobs(JobFilter(q='"n":1', statuses=(Status.CANCELLED,)), 1)
    assert [job.args for job in again] == [{"n": 1}]
    after = await store.get_batch(batch.id)
    assert after is not None
    assert not after.cancelled
    (item,) = await store.claim("w", [], 10, LEASE)
    await finish(store, item, Status.SUCCEEDED)
    done = await store.get_batch(batch.id)
    assert done is not None
    assert (done.counts, done.status) == ({"cancelled": 1, "succeeded": 1}, "partial")


# -- queues ----------------------------------------------------------------------------------------


async def test_a_paused_queue_starts_nothing_while_its_running_jobs_go_on(store: Store) -> None:
    await store.enqueue([new(1, queue="mail"), new(2, queue="mail"), new(3, queue="web")])
    (started,) = await store.claim("w", ["mail"], 1, LEASE)
    info = await store.set_queue("mail", paused=True)
    assert info.paused
    assert [j.queue for j in await store.claim("w", [], 10, LEASE)] == ["web"]
    assert await store.claim("w", ["mail"], 10, LEASE) == []
    await finish(store, started, Status.SUCCEEDED)  # a running job still ends
    await store.set_queue("mail", paused=False)
    assert len(await store.claim("w", ["mail"], 10, LEASE)) == 1


async def test_queues_report_counts_controls_and_the_oldest_due_job(store: Store) -> None:
    before = time.time()
    await store.enqueue([new(1, queue="mail"), new(2, queue="mail", run_at=time.time() + 3600)])
    await store.set_queue("idle", concurrency=3)
    await store.claim("w", [], 1, LEASE)
    queues = {q.name: q for q in await store.queues()}
    assert set(queues) == {"mail", "idle"}
    assert queues["mail"].counts == {"running": 1, "queued": 1}
    assert queues["mail"].oldest_queued_at is None  # the queued one is not due yet
    assert queues["idle"].concurrency == 3
    assert not queues["idle"].paused
    await store.enqueue([new(3, queue="mail")])
    oldest = {q.name: q for q in await store.queues()}["mail"].oldest_queued_at
    assert oldest is not None
    assert oldest >= before
    assert (await store.set_queue("idle", concurrency=None)).concurrency is None


async def test_a_queue_limit_holds_over_all_claims(store: Store, stores: StoreFactory) -> None:
    other = await stores.open()
    await store.enqueue([new(n, queue="api") for n in range(6)])
    await store.set_queue("api", concurrency=2)
    assert len(await store.claim("w1", [], 10, LEASE)) == 2
    assert await other.claim("w2", ["api"], 10, LEASE) == []
    running = await store.list_jobs(JobFilter(statuses=(Status.RUNNING,)))
    await finish(store, running[0], Status.SUCCEEDED)
    assert len(await other.claim("w2", ["api"], 10, LEASE)) == 1


# -- limits per key --------------------------------------------------------------------------------


async def test_jobs_of_a_key_run_at_most_its_concurrency_at_once(store: Store) -> None:
    limited = [new(n, limit_key="example.org", limit_concurrency=2) for n in range(5)]
    free = [new(10 + n) for n in range(2)]
    await store.enqueue([*limited, *free])
    claimed = await store.claim("w", [], 10, LEASE)
    assert sum(j.limit_key == "example.org" for j in claimed) == 2
    assert sum(j.limit_key is None for j in claimed) == 2
    assert await store.claim("w", [], 10, LEASE) == []
    await finish(store, next(j for j in claimed if j.limit_key), Status.SUCCEEDED)
    again = await store.claim("w", [], 10, LEASE)
    assert [j.limit_key for j in again] == ["example.org"]


async def test_a_key_starts_at_most_its_rate(store: Store) -> None:
    await store.enqueue([new(n, limit_key="api", rate_count=2, rate_per=0.5) for n in range(5)])
    first = await store.claim("w", [], 10, LEASE)
    assert len(first) == 2
    assert await store.claim("w", [], 10, LEASE) == []
    with anyio.fail_after(5):
        while not (later := await store.claim("w", [], 10, LEASE)):
            await anyio.sleep(0.05)
    assert len(later) == 2


async def test_limits_hold_across_concurrent_claims(store: Store, stores: StoreFactory) -> None:
    others = [await stores.open() for _ in range(3)]
    await store.enqueue([new(n, limit_key="k", limit_concurrency=3) for n in range(40)])
    claimed: list[Job] = []

    async def claim(s: Store, worker: str) -> None:
        for _ in range(5):
            claimed.extend(await s.claim(worker, [], 4, LEASE))

    async with anyio.create_task_group() as tg:
        for n, s in enumerate([store, *others]):
            tg.start_soon(claim, s, f"w{n}")
    assert len(claimed) == 3


# -- idempotency keys ------------------------------------------------------------------------------


async def test_an_idempotency_key_returns_the_first_job(store: Store) -> None:
    (first,) = await store.enqueue([new(1, idempotency_key="order-7")])
    (again,) = await store.enqueue([new(1, idempotency_key="order-7")])
    assert again.id == first.id
    assert len(await store.list_jobs(JobFilter())) == 1
    assert len(await store.events(first.id)) == 1
    with pytest.raises(IdempotencyConflict, match="order-7"):
        await store.enqueue([new(2, idempotency_key="order-7")])
    assert len(await store.list_jobs(JobFilter())) == 1


async def test_concurrent_submissions_with_one_key_store_one_job(store: Store, stores: StoreFactory) -> None:
    others = [await stores.open() for _ in range(3)]
    got: list[Job] = []

    async def submit(s: Store) -> None:
        got.extend(await s.enqueue([new(1, idempotency_key="once")]))

    async with anyio.create_task_group() as tg:
        for s in [store, *others]:
            tg.start_soon(submit, s)
    assert len({job.id for job in got}) == 1
    assert len(await store.list_jobs(JobFilter())) == 1


# -- cancel against claims -------------------------------------------------------------------------


async def test_cancel_all_is_atomic_against_claims(store: Store, stores: StoreFactory) -> None:
    claimers = [await stores.open() for _ in range(2)]
    await store.enqueue([new(n, queue="q") for n in range(200)])

    async def claim(s: Store, worker: str) -> None:
        for _ in range(20):
            await s.claim(worker, ["q"], 5, LEASE)

    async with anyio.create_task_group() as tg:
        for n, s in enumerate(claimers):
            tg.start_soon(claim, s, f"w{n}")
        await anyio.lowlevel.checkpoint()
        cancelled = await store.cancel(JobFilter(queue="q"))
    jobs = await store.list_jobs(JobFilter(), limit=1000)
    # Every job either ended cancelled without running, or was asked to stop: none that the
    # cancel matched started afterwards (a job claimed after it would run without a request).
    assert all(j.status is Status.CANCELLED or j.cancel_requested for j in jobs), [
        (j.status, j.cancel_requested)
        for j in jobs
        if j.status is not Status.CANCELLED and not j.cancel_requested
    ][:5]
    assert len(cancelled) == 200


# -- retention -------------------------------------------------------------------------------------


async def test_a_batch_is_pruned_with_its_last_job(store: Store) -> None:
    batch = await batch_of(store, 2)
    for job in await store.claim("w", [], 10, LEASE):
        await finish(store, job, Status.SUCCEEDED)
    assert await store.prune(0.0) == 2
    assert await store.get_batch(batch.id) is None


async def test_a_batch_whose_items_were_all_cancelled_is_cancelled(store: Store) -> None:
    batch = await batch_of(store, 3)
    await store.cancel(JobFilter(batch_id=batch.id))  # not through cancel_batch
    assert (await store.get_batch(batch.id)).status == "cancelled"  # type: ignore[union-attr]
