"""Events: watch a job live, stop, and resume after the last seq seen without a gap."""

import asyncio

import underway

app = underway.App("sqlite:///events.db")


@app.task
async def report(ctx: underway.Context, sections: int) -> str:
    for number in ctx.track(range(1, sections + 1), message="Writing"):
        await asyncio.sleep(0.02)
        ctx.log.info("section %d written", number, section=number)
    return f"{sections} sections"


async def main() -> None:
    job = await report.submit(sections=5)
    worker = asyncio.create_task(underway.Worker(app, burst=True).run())

    last_seen = 0
    async for event in app.watch(job.id):  # the job's history first, then live events
        print(event.to_json())  # the wire shape: {seq, job_id, type, at, data}
        last_seen = event.seq
        if last_seen == 4:
            break  # e.g. the connection dropped

    await asyncio.sleep(0.1)  # events go on being stored meanwhile
    resumed = [event.seq async for event in app.watch(job.id, after=last_seen)]
    print("resumed after", last_seen, "with", resumed)  # no gap, no repeat; ends with the job

    done = await app.wait(job.id, timeout=10)  # returns at once: the job has ended
    print(done.status.value, done.result, "last_seq", done.last_seq)
    await worker
    await app.close()


if __name__ == "__main__":
    asyncio.run(main())
