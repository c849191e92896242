"""The worker's writer keeps writing whatever happens to the tasks that wait on it."""

from __future__ import annotations

import asyncio
import time

import anyio
import pytest

from underway.flusher import Flusher
from underway.jobs import new_job_id
from underway.progress import Throttle
from underway.store import Lease, NewJob, Store, WorkerWrite

pytestmark = pytest.mark.anyio


class Run:
    """What the flusher asks of a job's run: its pending write, its throttle, whether it is lost."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.throttle = Throttle(0.05)
        self.urgent = False
        self.was_lost = False

    def pending_write(self, monotonic_now: float) -> WorkerWrite:
        self.throttle.wrote(monotonic_now)
        return WorkerWrite(lease=self.lease)

    def lost(self) -> None:
        self.was_lost = True


async def test_a_move_whose_waiter_was_cancelled_does_not_stop_the_flusher(store: Store) -> None:
    new = NewJob(id=new_job_id(), queue="default", task="t", args={}, run_at=time.time())
    await store.enqueue([new])
    (job,) = await store.claim("w1", [], 1, 30.0)
    run = Run(Lease(job.id, job.attempt))
    flusher = Flusher(store)
    writing = asyncio.create_task(flusher.run())
    try:
        # A task asks a question and is cancelled while its write is on the way (a cancel
        # request, a shutdown): the write still lands, and later writes are not stuck.
        mover = asyncio.create_task(flusher.move(run, WorkerWrite(lease=run.lease, progress={"current": 1})))
        await asyncio.sleep(0)  # the move is queued and awaited
        mover.cancel()
        with anyio.fail_after(10):
            assert await flusher.move(run, WorkerWrite(lease=run.lease, progress={"current": 2}))
    finally:
        flusher.close()
        with anyio.fail_after(10):
            await writing
    progress = [e.data["current"] for e in await store.events(job.id) if e.type.value == "progress"]
    assert progress == [1, 2]
    assert not run.was_lost
