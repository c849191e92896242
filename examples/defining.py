"""Defining tasks and submitting jobs: task options, the argument schema, strict validation."""

import asyncio
from typing import Literal

import underway

app = underway.App("sqlite:///defining.db")


class BadImage(Exception):
    """An error that no retry can fix."""


@app.task(
    name="images.resize",  # default: "<module>.<function name>"
    queue="images",  # default: "default"
    retries=3,  # 3 re-runs after the first attempt: max_attempts = 4
    timeout=30,  # seconds per attempt (default: no timeout)
    priority=5,  # higher runs first (default: 0)
    retry_delay=0.5,  # first retry after 0.25 to 0.5 s, doubling each time…
    max_retry_delay=60,  # …but never longer than this
    non_retryable=(BadImage,),  # these fail the job at once
)
async def resize(
    ctx: underway.Context, url: str, width: int, fmt: Literal["png", "jpeg"] = "png"
) -> dict[str, object]:
    ctx.log.info("resizing %s to %d px", url, width)
    return {"url": url, "width": width, "format": fmt}


async def main() -> None:
    print(sorted(resize.schema["properties"]), resize.schema["required"])

    try:
        await app.submit("images.resize", {"url": "https://example.org/cat.png", "width": "640", "size": 2})
    except underway.InvalidArguments as exc:
        print("refused:", exc.message)
        print("details:", exc.details)

    job = await resize.submit(url="https://example.org/cat.png", width=640)
    print(job.status.value, job.queue, job.priority, job.max_attempts, job.timeout, job.args)

    rush = resize.options(queue="urgent", priority=10, max_attempts=1, timeout=5, labels={"team": "web"})
    urgent = await rush.submit(url="https://example.org/dog.png", width=320)
    tonight = resize.options(delay=3600, owner="alice")  # or run_at=<a Unix timestamp>
    later = await tonight.submit(url="https://example.org/owl.png", width=64)
    by_name = await app.submit("images.resize", {"url": "https://example.org/fox.png", "width": 128})
    print(urgent.queue, urgent.priority, urgent.max_attempts, urgent.timeout, urgent.labels, later.owner)

    await underway.Worker(app, burst=True).run()  # runs what is due now, then returns
    for submitted in (job, urgent, by_name, later):
        done = await app.get(submitted.id)
        print(done.args["width"], done.status.value, done.result)
    await app.cancel(later.id)
    await app.close()


if __name__ == "__main__":
    asyncio.run(main())
