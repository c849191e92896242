"""Limits: per-key concurrency and rate limits, a paused queue, idempotency keys.

A worker with ten slots crawls pages of three sites, at most two pages of one site at a time
and at most five starts per second for the slow one; a queue is paused and resumed; an order
submitted twice with one idempotency key is stored once.
"""

import asyncio
from urllib.parse import urlsplit

import underway

app = underway.App("sqlite:///limits.db", settings=underway.Settings(concurrency=10))
running: dict[str, int] = {}
most: dict[str, int] = {}


def domain(url: str, **_: object) -> str:
    return urlsplit(url).hostname or ""


@app.task(concurrency=2, concurrency_key=domain)  # at most 2 pages of one site at once
async def fetch(ctx: underway.Context, url: str) -> str:
    site = domain(url)
    running[site] = running.get(site, 0) + 1
    most[site] = max(most.get(site, 0), running[site])
    await asyncio.sleep(0.05)  # fetch the page here
    running[site] -= 1
    return site


@app.task(rate_limit="5/s")  # at most 5 starts per second, over all workers
async def call_api(ctx: underway.Context, n: int) -> int:
    return n  # call the API here


@app.task(queue="mail")
async def send_receipt(ctx: underway.Context, order: int) -> str:
    return f"receipt for order {order}"


async def main() -> None:
    urls = [f"https://{site}.example/{page}" for page in range(6) for site in ("a", "b", "c")]
    crawl = await app.submit_batch(fetch, [{"url": url} for url in urls], name="crawl")
    calls = [await call_api.submit(n=n) for n in range(10)]

    await app.pause_queue("mail")  # nothing of the queue starts, on any worker
    once = send_receipt.options(idempotency_key="receipt-7")
    first = await once.submit(order=7)
    again = await once.submit(order=7)  # a retried request, say: the same job
    print("one job for one key:", again.id == first.id)

    worker = underway.Worker(app)
    running_worker = asyncio.create_task(worker.run())
    while (await app.get_batch(crawl.id)).status != "completed":
        await asyncio.sleep(0.05)
    print("pages of one site at once, at most:", max(most.values()))
    print("mail queue while paused:", (await app.get(first.id)).status.value)

    await app.resume_queue("mail")
    print("after resume:", (await app.wait(first.id, timeout=10)).result)
    starts = sorted([(await app.wait(job.id, timeout=10)).started_at or 0.0 for job in calls])
    in_any_second = max(sum(1 for t in starts if s <= t < s + 1.0) for s in starts)
    print("API calls started in any one second, at most:", in_any_second)
    worker.stop()
    await running_worker
    await app.close()


if __name__ == "__main__":
    asyncio.run(main())
