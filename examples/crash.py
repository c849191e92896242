"""A worker process dies mid-job: its lease expires, another worker re-runs the job from its checkpoint.

The task has no retries: a lost worker is not the task's failure, and the job runs again on its
own budget of ``crash_retries`` (default 2).
"""

import asyncio
import sys

import underway

settings = underway.Settings(lease_timeout=1.0, sweep_interval=0.2)
app = underway.App("sqlite:///crash.db", settings=settings)


# Named, because the worker process imports this file as "crash", not as "__main__".
@app.task(name="encode")
async def encode(ctx: underway.Context, chunks: int) -> dict[str, int]:
    start = ctx.last_checkpoint or 0
    for chunk in ctx.track(range(start, chunks), total=chunks - start):
        await asyncio.sleep(0.1)
        ctx.checkpoint(chunk + 1)
    return {"chunks": chunks, "resumed_at": start, "attempt": ctx.attempt}


async def main() -> None:
    job = await encode.submit(chunks=20)
    command = [sys.executable, "-m", "underway", "--app", "crash:app", "worker", "--lease-timeout", "1s"]
    process = await asyncio.create_subprocess_exec(*command)  # a worker in another process
    async for event in app.watch(job.id):
        if event.type is underway.EventType.PROGRESS and event.data["current"] >= 5:
            break
    process.kill()  # SIGKILL: no hand-back, no last write; the lease just runs out
    await process.wait()
    print("worker process killed at checkpoint", (await app.get(job.id)).checkpoint)

    worker = underway.Worker(app)  # its sweeper requeues the job once the lease has expired
    running = asyncio.create_task(worker.run())
    job = await app.wait(job.id, timeout=30)
    print(job.status.value, job.result)
    print(job.attempts_summary)
    for event in await app.events(job.id):
        if event.type is underway.EventType.STATUS:
            print("   ", event.data["status"], event.data["attempt"], event.data.get("reason", ""))
    worker.stop()
    await running
    await app.close()


if __name__ == "__main__":
    asyncio.run(main())
