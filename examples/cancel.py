"""Cancellation: cooperative points, asyncio cancellation, and the grace after which it is forced."""

import asyncio
import time

import underway

app = underway.App("sqlite:///cancel.db", settings=underway.Settings(cancel_grace=1.0))


@app.task
def count(ctx: underway.Context, to: int) -> int:
    for _ in ctx.track(range(to)):  # track() and progress() raise Cancelled once cancel is asked
        time.sleep(0.02)
    return to


@app.task
def polite(ctx: underway.Context) -> None:
    while not ctx.cancelled:  # a loop with no cancellation point can poll the flag
        time.sleep(0.01)
    ctx.log.info("cleaning up")
    raise underway.Cancelled()  # or return: a task that stops after the request ends cancelled


@app.task
async def sleeper(ctx: underway.Context) -> None:
    ctx.log.info("sleeping")
    await asyncio.sleep(60)  # an async task is also cancelled through asyncio: CancelledError here


@app.task
def stubborn(ctx: underway.Context) -> str:
    started = time.monotonic()
    while time.monotonic() - started < 2.5:  # ignores the request for 2.5 s; the grace is 1 s
        try:
            ctx.progress(time.monotonic() - started)
        except underway.Cancelled:
            ctx.log.info("cancelled? not yet")  # refused once the job was recorded cancelled
        time.sleep(0.1)
    return "finished anyway"


async def cancel_when_running(job: underway.Job) -> None:
    async for event in app.watch(job.id):
        if event.type is not underway.EventType.STATUS:
            continue
        print(f"  {job.task} {event.data}")
        if event.data["status"] == "running" and not event.data.get("cancel_requested"):
            await asyncio.sleep(0.2)
            asked = await app.cancel(job.id)
            print(f"  {job.task}: cancel asked, status {asked.status.value}, {asked.cancel_requested=}")


async def main() -> None:
    queued = await count.options(delay=3600).submit(to=5)
    print("queued job:", (await app.cancel(queued.id)).status.value)  # cancelled at once

    jobs = [
        await count.submit(to=1000),
        await polite.submit(),
        await sleeper.submit(),
        await stubborn.submit(),
    ]
    worker = underway.Worker(app)
    running = asyncio.create_task(worker.run())
    await asyncio.gather(*(cancel_when_running(job) for job in jobs))
    await asyncio.sleep(2)  # stubborn's thread goes on meanwhile; its writes are refused
    logs = [e for e in await app.events(jobs[3].id) if e.type is underway.EventType.LOG]
    print(f"stubborn: {len(logs)} logs recorded within the grace, none after")
    worker.stop()
    await running
    await app.close()


if __name__ == "__main__":
    asyncio.run(main())
