"""The tasks ``underway demo`` runs: a crawl, a question, a flaky job and a sync batch.

They sleep instead of doing real I/O, so the demo works offline, but they use the task API
exactly as real tasks do.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

from rich.console import Console
from rich.markup import escape

import underway
from underway.events import EventType
from underway.exceptions import UnderwayError
from underway.terminal import JobBars

app = underway.App("sqlite:///underway-demo.db")


@app.task(queue="demo", timeout=120)
async def crawl(ctx: underway.Context, site: str, pages: int = 40) -> dict[str, Any]:
    """Fetch ``pages`` pages of ``site``, logging what each one held."""
    links = 0
    async for page in ctx.track(_pages(pages), total=pages, message=f"Crawling {site}"):
        links += page["links"]
        if page["number"] % 10 == 0:
            ctx.log.info("page %d: %d links so far", page["number"], links, site=site)
    return {"site": site, "pages": pages, "links": links}


async def _pages(count: int) -> Any:
    for number in range(1, count + 1):
        await asyncio.sleep(random.uniform(0.02, 0.08))
        yield {"number": number, "links": random.randint(3, 30)}


@app.task(queue="demo")
async def extract(ctx: underway.Context, documents: int = 20) -> dict[str, Any]:
    """Extract fields from documents, then ask whether to publish them."""
    ctx.step("Extracting", steps=2)
    for _ in ctx.track(range(documents), message="Extracting"):
        await asyncio.sleep(0.03)
    ctx.step("Review")
    publish = await ctx.ask(f"{documents} documents extracted. Publish them?", options=["yes", "no"])
    ctx.log.info("publish: %s", publish)
    return {"documents": documents, "published": publish == "yes"}


@app.task(queue="demo", retries=2, retry_delay=0.5)
async def flaky_upload(ctx: underway.Context, files: int = 10) -> dict[str, Any]:
    """Fails on its first attempt halfway through, then resumes from its checkpoint."""
    start = ctx.last_checkpoint or 0
    if start:
        ctx.log.warning("resuming from file %d after a failed attempt", start)
    for done in range(start, files):
        await asyncio.sleep(0.05)
        ctx.progress(done + 1, files, message="Uploading")
        ctx.checkpoint(done + 1)
        if ctx.attempt == 1 and done + 1 == files // 2:
            raise ConnectionError("the upload server hung up")
    return {"uploaded": files, "attempts": ctx.attempt}


@app.task(queue="demo")
def thumbnails(ctx: underway.Context, photos: int = 30) -> int:
    """A sync task: runs in a worker thread."""
    for _ in ctx.track(range(photos), message="Making thumbnails"):
        time.sleep(0.02)
    return photos


DEMO_JOBS: list[tuple[underway.Task[..., Any], dict[str, Any]]] = [
    (crawl, {"site": "news.example", "pages": 40}),
    (crawl, {"site": "shop.example", "pages": 25}),
    (extract, {"documents": 20}),
    (flaky_upload, {"files": 10}),
    (thumbnails, {"photos": 30}),
]


async def run(app: underway.App, console: Console, *, answer: str = "yes", once: bool = False) -> None:
    """Serve the API with a worker, submit the demo jobs and draw their bars.

    Serves on until Ctrl-C, or until the jobs end when ``once``.
    """
    from underway.web import create_app
    from underway.web.server import Server, uvicorn_config

    server = Server(uvicorn_config(create_app(app, with_worker=True), app.settings))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            await serving  # it failed to start: let its error show
            raise UnderwayError(f"the server could not start on {app.settings.host}:{app.settings.port}")
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    console.print(
        f"[bold]underway demo[/] · API http://{app.settings.host}:{port}/api/docs"
        f" · store {escape(app.settings.url)} · Ctrl-C to stop\n"
    )
    showing = asyncio.create_task(_show(app, console, answer))
    await asyncio.wait({serving, showing}, return_when=asyncio.FIRST_COMPLETED)
    if showing.done():
        await showing
        if once:
            server.should_exit = True
        else:
            console.print("\nThe jobs ended; the API keeps serving. Ctrl-C to stop.")
    else:
        showing.cancel()
    await serving


async def _show(app: underway.App, console: Console, answer: str) -> None:
    jobs = [await task.submit(**args) for task, args in DEMO_JOBS]
    with JobBars(console) as bars:
        for job in jobs:
            bars.add(job)
        await asyncio.gather(*(_follow(app, job, bars, answer) for job in jobs))
    console.print()
    for job in [await app.get(job.id) for job in jobs]:
        console.print(
            f"{job.id}  {job.task:<30} [bold]{job.status.value}[/]  {escape(json.dumps(job.result))}"
        )


async def _follow(app: underway.App, job: underway.Job, bars: JobBars, answer: str) -> None:
    async for event in app.watch(job.id):
        bars.update(event)
        if event.type is EventType.PROMPT:
            bars.progress.console.print(
                f"[yellow]{escape(job.id)} asks: {escape(event.data['message'])}[/] → answering {answer!r}"
                f" in 2 s (or run: underway --url {app.settings.url} answer {job.id} no)"
            )
            asyncio.get_running_loop().call_later(
                2.0, lambda: asyncio.ensure_future(_answer_if_waiting(app, job.id, answer))
            )


async def _answer_if_waiting(app: underway.App, job_id: str, answer: str) -> None:
    try:
        await app.answer(job_id, answer)
    except UnderwayError:
        pass  # answered from another terminal meanwhile
