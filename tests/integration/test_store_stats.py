"""``Store.finished_stats`` on every backend: jobs counted in the bucket they finished in, by final
status, and the nearest-rank percentiles of their latency (submit to finish), the same on every
store as :func:`underway.stats.nearest_rank` computes them; only an owner's jobs when asked."""

from __future__ import annotations

import time

import pytest

from underway.jobs import Job, Status, new_job_id
from underway.stats import FinishedBucket, nearest_rank
from underway.store import JobFilter, Lease, NewJob, Store, WorkerWrite

pytestmark = pytest.mark.anyio
LEASE = 30.0
OUTCOMES = (Status.SUCCEEDED, Status.SUCCEEDED, Status.SUCCEEDED, Status.FAILED)


def new(owner: str) -> NewJob:
    return NewJob(id=new_job_id(), queue="default", task="t", args={}, run_at=time.time(), owner=owner)


async def finished_jobs(store: Store) -> list[Job]:
    """11 jobs that ran and 3 cancelled while queued, of alice and bob; then one queued and one
    running (not counted). Returns the finished ones as stored."""
    owners = ["alice", "bob"] * 5 + ["alice"]
    ran = await store.enqueue([new(owner) for owner in owners])
    claimed = await store.claim("w1", [], len(ran), LEASE)
    assert len(claimed) == len(ran)
    writes = [
        WorkerWrite(lease=Lease(job.id, job.attempt), status=OUTCOMES[i % 4]) for i, job in enumerate(claimed)
    ]
    assert await store.record(writes) == [True] * len(writes)
    dropped = await store.enqueue([new(owner) for owner in ("alice", "bob", "bob")])
    await store.cancel(JobFilter(ids=tuple(job.id for job in dropped)))
    await store.enqueue([new("alice")])
    (still,) = await store.enqueue([new("alice")])
    await store.claim("w1", [], 1, LEASE)
    jobs = [await store.get(job.id) for job in [*ran, *dropped]]
    assert still.id not in {job.id for job in jobs if job}
    return [job for job in jobs if job is not None]


def expected(jobs: list[Job], index: int) -> FinishedBucket:
    latencies = [job.finished_at - job.created_at for job in jobs if job.finished_at is not None]
    p50, p90, p99 = (nearest_rank(latencies, p) or 0.0 for p in (0.5, 0.9, 0.99))
    return FinishedBucket(
        index=index,
        succeeded=sum(job.status is Status.SUCCEEDED for job in jobs),
        failed=sum(job.status is Status.FAILED for job in jobs),
        cancelled=sum(job.status is Status.CANCELLED for job in jobs),
        p50=p50,
        p90=p90,
        p99=p99,
    )


async def test_jobs_finished_now_land_in_the_last_bucket_with_nearest_rank_latencies(store: Store) -> None:
    before = time.time()
    jobs = await finished_jobs(store)
    assert len(jobs) == 14
    # Six buckets of 10 s, the last from ``before``: everything that just finished is in it.
    found = await store.finished_stats(before - 50.0, 10.0, 6)
    assert found == [expected(jobs, 5)]
    assert (found[0].succeeded, found[0].failed, found[0].cancelled) == (9, 2, 3)
    assert found[0].p50 <= found[0].p90 <= found[0].p99


async def test_an_owners_stats_count_only_its_jobs(store: Store) -> None:
    before = time.time()
    jobs = await finished_jobs(store)
    for owner in ("alice", "bob"):
        mine = [job for job in jobs if job.owner == owner]
        assert await store.finished_stats(before - 5.0, 60.0, 1, owner=owner) == [expected(mine, 0)]
    assert await store.finished_stats(before - 5.0, 60.0, 1, owner="carol") == []


async def test_jobs_outside_the_buckets_are_left_out(store: Store) -> None:
    before = time.time()
    await finished_jobs(store)
    assert [row.index for row in await store.finished_stats(before - 110.0, 60.0, 2)] == [1]
    assert await store.finished_stats(before - 120.0, 1.0, 60) == []  # ends before they finished
    assert await store.finished_stats(time.time() + 60.0, 1.0, 60) == []  # starts after
