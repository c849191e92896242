"""Retries and timeouts: failed attempts run again with backoff, until attempts run out."""

import asyncio

import underway

app = underway.App("sqlite:///retries.db")


@app.task(retries=2, timeout=0.2, retry_delay=0.1)
async def slow(ctx: underway.Context) -> str:
    if ctx.attempt < 3:
        await asyncio.sleep(10)  # too slow: the timeout ends this attempt
    return f"done on attempt {ctx.attempt}"


@app.task(retries=5, non_retryable=(ValueError,))
async def parse(ctx: underway.Context, text: str) -> int:
    return int(text)  # a ValueError fails the job at once


@app.task(retries=1, retry_delay=0.1)
def flaky(ctx: underway.Context) -> None:  # a sync task: it runs in a thread
    raise ConnectionError(f"attempt {ctx.attempt} failed")


async def main() -> None:
    for n in range(1, 4):
        longest, shortest = slow.retry.delay(n, rand=lambda: 0.0), slow.retry.delay(n, rand=lambda: 1.0)
        print(f"retry after attempt {n} waits {shortest:g} to {longest:g} s")

    jobs = [await slow.submit(), await parse.submit(text="forty-two"), await flaky.submit()]
    worker = underway.Worker(app)
    running = asyncio.create_task(worker.run())
    for job in jobs:
        job = await app.wait(job.id, timeout=30)
        print(f"{job.task}: {job.status.value} after {job.attempt} of {job.max_attempts} attempts")
        for event in await app.events(job.id, after=2):
            if event.type is underway.EventType.STATUS:
                error = event.data.get("error", {})
                print("   ", event.data["status"], event.data.get("reason", ""), error.get("type", ""))
        print("    result:", job.result, "| error:", job.error and job.error["message"])
    worker.stop()
    await running
    await app.close()


if __name__ == "__main__":
    asyncio.run(main())
