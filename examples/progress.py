"""Reporting from a task: progress, track (sync and async iterables), named steps, logs."""

import asyncio
from collections.abc import AsyncIterator

import underway

app = underway.App("sqlite:///progress.db")


async def fetch_rows(count: int) -> AsyncIterator[dict[str, int]]:
    for number in range(count):
        await asyncio.sleep(0.001)
        yield {"number": number}


@app.task
async def import_csv(ctx: underway.Context, rows: int = 200) -> dict[str, int]:
    ctx.step("Downloading", steps=3)  # step 1 of 3; progress restarts at 0
    for received in range(0, 1_000_001, 100):
        ctx.progress(received, total=1_000_000)  # cheap: only a few of these calls are written
        if received % 100_000 == 0:
            await asyncio.sleep(0.01)  # the download itself

    ctx.step("Parsing")  # step 2 of 3
    parsed = 0
    async for _row in ctx.track(fetch_rows(rows), total=rows, message="Parsing rows"):
        parsed += 1

    ctx.step("Saving")  # step 3 of 3
    for batch in ctx.track(range(0, rows, 50)):  # a list or range gives its own total
        ctx.log.info("saved rows %d to %d", batch, batch + 49, table="rows", batch=batch)
        await asyncio.sleep(0.01)
    ctx.log.warning("2 rows had no e-mail address", skipped=2)
    return {"rows": parsed}


async def main() -> None:
    job = await import_csv.submit(rows=200)
    worker = asyncio.create_task(underway.Worker(app, burst=True).run())
    async for event in app.watch(job.id):
        if event.type is underway.EventType.PROGRESS:
            data = event.data
            print(f"{event.seq:3} progress step {data.get('step')}/{data.get('steps')}", end=" ")
            print(f"{data.get('message')!r} {data['current']}/{data.get('total')} {data.get('percent')}%")
        else:
            print(f"{event.seq:3} {event.type.value} {event.data}")
    await worker
    await app.close()


if __name__ == "__main__":
    asyncio.run(main())
