"""PostgreSQL: the same code as on SQLite, another URL. Workers and watchers in several
processes (or on several hosts) share one database and see each other's events at once.

Run it with ``DATABASE_URL=postgresql://user@host/dbname python postgres.py``.
"""

import asyncio
import os
import sys

import underway

app = underway.App(os.environ.get("DATABASE_URL", "postgresql://localhost/underway"))


@app.task(name="thumbnail")  # named: the worker processes import this file as "postgres"
async def thumbnail(ctx: underway.Context, photo: str) -> str:
    for _ in ctx.track(range(10), message=f"resizing {photo}"):
        await asyncio.sleep(0.02)
    return f"{photo}.thumb.jpg"


async def main() -> None:
    jobs = [await thumbnail.submit(photo=f"img{n}.jpg") for n in range(6)]
    command = [sys.executable, "-m", "underway", "--app", "postgres:app", "worker", "--burst"]
    workers = [await asyncio.create_subprocess_exec(*command) for _ in range(2)]
    for job in jobs:
        async for event in app.watch(job.id):  # NOTIFY wakes this process: no polling
            if event.ends_job:
                print(job.args["photo"], event.data["status"], event.data["result"])
    for process in workers:
        await process.wait()
    await app.close()


if __name__ == "__main__":
    asyncio.run(main())
