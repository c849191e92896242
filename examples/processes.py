"""Several processes on one SQLite file: two worker processes, and this one watching live."""

import asyncio
import os
import sys

import underway

app = underway.App("sqlite:///processes.db")


@app.task(name="checksum")  # named: the worker processes import this file as "processes"
async def checksum(ctx: underway.Context, blocks: int) -> int:
    for _ in ctx.track(range(blocks)):
        await asyncio.sleep(0.01)
    return os.getpid()


async def follow(job: underway.Job) -> tuple[int, int]:
    """How many events of the job arrived, and which process ran it."""
    events = [event async for event in app.watch(job.id)]
    return len(events), (await app.get(job.id)).result


async def main() -> None:
    jobs = [await checksum.submit(blocks=40) for _ in range(6)]
    command = [sys.executable, "-m", "underway", "--app", "processes:app", "worker", "--burst"]
    workers = [await asyncio.create_subprocess_exec(*command, "--concurrency", "2") for _ in range(2)]
    results = await asyncio.gather(*(follow(job) for job in jobs))
    for process in workers:
        await process.wait()
    pids = {process.pid for process in workers}
    print("jobs run by the two worker processes:", all(pid in pids for _, pid in results))
    print("processes used:", len({pid for _, pid in results}))
    print("every job watched to its end:", all(count >= 4 for count, _ in results))
    await app.close()


if __name__ == "__main__":
    asyncio.run(main())
