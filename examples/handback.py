"""Stopping a worker: running jobs get ``shutdown_grace`` seconds, then go back to the queue."""

import asyncio

import underway

app = underway.App("sqlite:///handback.db", settings=underway.Settings(shutdown_grace=0.5))


@app.task  # no retries: max_attempts is 1
async def render(ctx: underway.Context, frames: int) -> str:
    start = ctx.last_checkpoint or 0
    for frame in ctx.track(range(start, frames), total=frames - start):
        await asyncio.sleep(0.05)
        ctx.checkpoint(frame + 1)
    return f"rendered {frames} frames, the last {frames - start} on attempt {ctx.attempt}"


async def main() -> None:
    job = await render.submit(frames=30)

    first = underway.Worker(app)
    running = asyncio.create_task(first.run())
    await asyncio.sleep(0.5)
    first.stop()  # SIGTERM does this: stop claiming, wait up to shutdown_grace, hand back
    await running
    job = await app.get(job.id)
    print(job.status.value, f"attempt {job.attempt} of {job.max_attempts}", "checkpoint", job.checkpoint)

    second = underway.Worker(app, burst=True)
    await second.run()
    job = await app.get(job.id)
    print(job.status.value, f"attempt {job.attempt} of {job.max_attempts}:", job.result)
    for event in await app.events(job.id):
        if event.type is underway.EventType.STATUS:
            print("   ", event.data["status"], event.data["attempt"], event.data.get("reason", ""))
    await app.close()


if __name__ == "__main__":
    asyncio.run(main())
