"""Checkpoints: a re-run (retry, crashed worker) resumes where the last attempt stopped."""

import asyncio

import underway

app = underway.App("sqlite:///checkpoints.db")


@app.task(retries=2, retry_delay=0.2)
async def upload(ctx: underway.Context, files: list[str]) -> dict[str, object]:
    start = ctx.last_checkpoint or 0  # None on the first attempt
    print(f"attempt {ctx.attempt}: starting at file {start}")
    for index in range(start, len(files)):
        await asyncio.sleep(0.01)  # upload files[index] here
        ctx.checkpoint(index + 1)  # written at once, with the job
        ctx.progress(index + 1, total=len(files))
        if ctx.attempt == 1 and index == 4:
            raise ConnectionError("the server hung up")
    return {"uploaded": len(files), "attempts": ctx.attempt}


async def main() -> None:
    job = await upload.submit(files=[f"photo-{n}.jpg" for n in range(10)])
    worker = underway.Worker(app)  # not burst: a burst worker would not wait for the retry
    running = asyncio.create_task(worker.run())
    job = await app.wait(job.id, timeout=30)
    worker.stop()
    await running
    print(job.status.value, job.result, "checkpoint:", job.checkpoint)
    for event in await app.events(job.id):
        if event.type is underway.EventType.STATUS:
            print(event.data["status"], event.data["attempt"], event.data.get("reason", ""))
    await app.close()


if __name__ == "__main__":
    asyncio.run(main())
