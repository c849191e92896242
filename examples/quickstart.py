import asyncio

import underway

app = underway.App("sqlite:///quickstart.db")


@app.task(retries=2, timeout=60)
async def crawl(ctx: underway.Context, site: str, pages: int = 20) -> dict[str, object]:
    for _page in ctx.track(range(pages), message=f"Crawling {site}"):
        await asyncio.sleep(0.01)  # fetch and save the page here
    ctx.log.info("crawled %d pages of %s", pages, site)
    return {"site": site, "pages": pages}


async def main() -> None:
    job = await crawl.submit(site="example.org")  # stored at once; a worker runs it
    worker = asyncio.create_task(underway.Worker(app, burst=True).run())
    async for event in app.watch(job.id):  # history, then live, until the job ends
        print(event.seq, event.type.value, event.data)
    await worker
    await app.close()


if __name__ == "__main__":
    asyncio.run(main())
