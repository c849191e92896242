"""Watching jobs: history then live events, several watchers, other processes; the bus itself."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from integration_support import history, of_type, running_worker, wait_until

import underway
from underway import Event, EventType, Status
from underway.bus import Bus, Overflow

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


class Watcher:
    """Collects what ``app.watch`` yields, in a task of its own."""

    def __init__(self, events: AsyncIterator[Event]) -> None:
        self.events: list[Event] = []
        self.delays: list[float] = []  # from the event's commit to its arrival here
        self._source = events
        self.task = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        async for event in self._source:
            self.delays.append(time.time() - event.at)
            self.events.append(event)

    async def finished(self, timeout: float = 5.0) -> list[Event]:
        await asyncio.wait_for(self.task, timeout)
        return self.events


def without_progress(events: list[Event]) -> list[Event]:
    return [e for e in events if e.type is not EventType.PROGRESS]


def check_live_order(seen: list[Event], stored: list[Event]) -> None:
    """What a watcher saw: in seq order, every non-progress event once, ending at the end."""
    seqs = [e.seq for e in seen]
    assert seqs == sorted(set(seqs)), "in seq order, nothing twice"
    assert without_progress(seen) == without_progress(stored)
    assert seen[-1] == stored[-1]
    assert seen[-1].ends_job
    assert set(seqs) <= {e.seq for e in stored}
    assert all(e in stored for e in seen), "what was seen is what was stored"


async def test_watch_replays_history_then_follows_live_until_the_end(app: underway.App) -> None:
    release = asyncio.Event()

    @app.task(name="gated")
    async def gated(ctx: underway.Context) -> str:
        ctx.log.info("before the gate")
        ctx.progress(1, total=3)
        await release.wait()
        for n in (2, 3):
            ctx.progress(n)
            ctx.log.info("after the gate", n=n)
            await asyncio.sleep(0.03)
        return "through"

    job = await gated.submit()
    async with running_worker(app):
        await wait_until(lambda: _has_log(app, job.id), what="the first log line")
        past = await app.events(job.id)
        watcher = Watcher(app.watch(job.id))
        await wait_until(lambda: len(watcher.events) >= len(past), what="the history")
        assert watcher.events[: len(past)] == past, "history first, as stored"
        assert not watcher.task.done(), "then it waits for live events"

        release.set()
        seen = await watcher.finished()

    stored = await history(app, job.id, Status.SUCCEEDED)
    check_live_order(seen, stored)
    assert [e.data["message"] for e in of_type(seen, EventType.LOG)] == ["before the gate"] + [
        "after the gate"
    ] * 2

    # A finished job: its whole history, then the iterator ends; ``after`` skips what one has.
    assert [e async for e in app.watch(job.id)] == stored
    assert [e async for e in app.watch(job.id, after=3)] == stored[3:]


async def test_watch_after_a_point_beyond_the_last_event_yields_only_later_events(app: underway.App) -> None:
    release = asyncio.Event()

    @app.task(name="stepped")
    async def stepped(ctx: underway.Context) -> int:
        await release.wait()
        for n in range(1, 5):
            ctx.log.info("line", n=n)
        return 4

    job = await stepped.submit()
    async with running_worker(app):
        await wait_until(lambda: _is_running(app, job.id), what="the job to run")
        last = (await app.get(job.id)).last_seq
        near = Watcher(app.watch(job.id, after=last + 2))  # skips the first two lines
        far = Watcher(app.watch(job.id, after=last + 1000))  # beyond the whole run
        await asyncio.sleep(0)
        release.set()
        seen, beyond = await near.finished(), await far.finished()
    stored = await history(app, job.id, Status.SUCCEEDED)
    assert seen == [e for e in stored if e.seq > last + 2]
    assert [e.data["fields"]["n"] for e in of_type(seen, EventType.LOG)] == [3, 4]
    assert beyond == [], "nothing numbered up to the resume point, and the watch still ends"
    with pytest.raises(underway.JobNotFound):
        async for _ in app.watch("0" * 26, after=5):
            pass


async def _is_running(app: underway.App, job_id: str) -> bool:
    return (await app.get(job_id)).status is Status.RUNNING


async def _has_log(app: underway.App, job_id: str) -> bool:
    return any(e.type is EventType.LOG for e in await app.events(job_id))


async def test_watching_an_unknown_job_raises(app: underway.App) -> None:
    with pytest.raises(underway.JobNotFound):
        async for _ in app.watch("0" * 26):
            pass


async def test_two_watchers_both_see_every_non_progress_event(app: underway.App) -> None:
    @app.task(name="busy")
    async def busy(ctx: underway.Context, n: int) -> int:
        for i in range(n):
            for j in range(50):
                ctx.progress(i * 50 + j, total=n * 50)
            ctx.log.info("round %d", i)
            await asyncio.sleep(0.005)
        return n

    job = await busy.submit(n=20)
    first = Watcher(app.watch(job.id))
    second = Watcher(app.watch(job.id))
    async with running_worker(app):
        seen = [await first.finished(), await second.finished()]

    stored = await history(app, job.id, Status.SUCCEEDED)
    for events in seen:
        check_live_order(events, stored)
        assert len(of_type(events, EventType.LOG)) == 20


async def test_a_watcher_sees_events_written_by_another_app_on_the_same_file(
    app: underway.App, settings: underway.Settings
) -> None:
    other = underway.App(settings=settings)  # as if in another process: its own connections

    @other.task(name="remote")
    async def remote(ctx: underway.Context, n: int) -> int:
        for i in range(n):
            ctx.log.info("step %d", i)
            await asyncio.sleep(0.05)
        return n

    try:
        job = await remote.submit(n=5)
        watcher = Watcher(app.watch(job.id))
        async with running_worker(other):
            seen = await watcher.finished()
    finally:
        await other.close()

    stored = await history(app, job.id, Status.SUCCEEDED)
    check_live_order(seen, stored)
    live = watcher.delays[1:]  # the first event may be history already
    assert len(live) >= 6
    assert max(live) < 0.5, f"seen well within a second of being written: {live}"


def event(job_id: str, seq: int, kind: EventType, **data: object) -> Event:
    return Event(job_id=job_id, seq=seq, type=kind, at=time.time(), data=dict(data))


def drain(subscription: underway.bus.Subscription) -> list[tuple[str, int]]:
    seen = []
    while (got := subscription.get_nowait()) is not None:
        seen.append((got.job_id, got.seq))
    return seen


async def test_a_subscription_coalesces_unread_progress_and_keeps_other_events(app: underway.App) -> None:
    bus = Bus(app.store, maxsize=10)
    j1 = await bus.subscribe("j1")
    j2 = await bus.subscribe("j2")
    everyone = await bus.subscribe()
    try:
        bus.publish(
            [
                event("j1", 2, EventType.PROGRESS, current=1),
                event("j1", 3, EventType.LOG, level="info", message="a"),
                event("j2", 2, EventType.PROGRESS, current=1),
                event("j1", 4, EventType.PROGRESS, current=2),
                event("j1", 5, EventType.LOG, level="info", message="b"),
                event("j1", 6, EventType.PROGRESS, current=3),
            ]
        )

        assert drain(j1) == [("j1", 3), ("j1", 5), ("j1", 6)], "the newest progress replaced the unread"
        assert drain(j2) == [("j2", 2)]
        assert drain(everyone) == [("j1", 3), ("j2", 2), ("j1", 5), ("j1", 6)], "per job, not across jobs"

        bus.publish([event("j1", 7, EventType.PROGRESS, current=4)])
        assert drain(j1) == [("j1", 7)], "a progress event already read is not replaced"
        assert await j1.get(timeout=0.01) is None
        assert bus.subscribers == 3
    finally:
        for subscription in (j1, j2, everyone):
            subscription.close()
        await bus.close()
    assert bus.subscribers == 0


async def test_a_subscription_that_falls_behind_overflows_once_then_goes_on(app: underway.App) -> None:
    bus = Bus(app.store, maxsize=3)
    subscription = await bus.subscribe("j1")
    try:
        bus.publish([event("j1", seq, EventType.PROGRESS, current=seq) for seq in range(2, 200)])
        assert drain(subscription) == [("j1", 199)], "progress replaces progress: no overflow"

        bus.publish([event("j1", seq, EventType.LOG, level="info", message="x") for seq in range(200, 204)])
        with pytest.raises(Overflow):
            subscription.get_nowait()
        assert subscription.get_nowait() is None, "Overflow is raised once; the backlog is dropped"

        bus.publish([event("j1", 204, EventType.LOG, level="info", message="y")])
        got = await subscription.get(timeout=1.0)
        assert got is not None
        assert got.seq == 204
    finally:
        subscription.close()
        await bus.close()


async def test_a_waiting_get_wakes_up_on_publish(app: underway.App) -> None:
    bus = Bus(app.store)
    subscription = await bus.subscribe("j1")
    try:
        getter = asyncio.create_task(subscription.get(timeout=5.0))
        await asyncio.sleep(0)
        assert not getter.done()
        bus.publish([event("j1", 2, EventType.LOG, level="info", message="hello")])
        got = await asyncio.wait_for(getter, 1.0)
        assert got is not None
        assert got.data["message"] == "hello"
    finally:
        subscription.close()
        await bus.close()
