"""The tasks ``underway demo`` runs: crawls, a question, a flaky job, a sync task and a batch
whose items sometimes fail; and the runner, which serves the dashboard and the API with a
worker, opens the dashboard in a browser, and draws the jobs' bars in the terminal.

The tasks sleep instead of doing real I/O, so the demo works offline, but they use the task API
exactly as real tasks do.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import threading
import time
import webbrowser
from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.markup import escape

import underway
from underway.events import EventType
from underway.exceptions import UnderwayError
from underway.terminal import JobBars, batch_status_text
from underway.web.dashboard import dashboard_url

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


@app.task(queue="demo")
async def resize(ctx: underway.Context, photo: str, corrupt: bool = False) -> dict[str, Any]:
    """One item of the demo's batch: resizes a photo, or fails on a corrupt one (no retry)."""
    for step in ctx.track(range(8), message=f"Resizing {photo}"):
        await asyncio.sleep(random.uniform(0.02, 0.06))
        if corrupt and step == 3:
            raise ValueError(f"{photo} is corrupt: cannot decode its JPEG data")
    return {"photo": photo, "sizes": [320, 1280]}


DEMO_JOBS: list[tuple[underway.Task[..., Any], dict[str, Any]]] = [
    (crawl, {"site": "news.example", "pages": 40}),
    (crawl, {"site": "shop.example", "pages": 25}),
    (extract, {"documents": 20}),
    (flaky_upload, {"files": 10}),
    (thumbnails, {"photos": 30}),
]
#: The demo's batch: every fifth photo is corrupt, so the batch ends ``partial``.
DEMO_BATCH_NAME = "Resize the holiday photos"
DEMO_BATCH: list[dict[str, Any]] = [
    {"photo": f"IMG_{number:04d}.jpg", "corrupt": number % 5 == 0} for number in range(1, 13)
]
#: How often the batch's bar reads the batch again.
BATCH_INTERVAL = 0.2


def should_open_browser(
    no_browser: bool, env: Mapping[str, str] | None = None, platform: str = sys.platform
) -> bool:
    """Whether to open the dashboard in the user's browser: not when told not to, not in CI,
    and on Linux not without a display (``DISPLAY`` or ``WAYLAND_DISPLAY``)."""
    env = os.environ if env is None else env
    if no_browser or env.get("CI"):
        return False
    return not platform.startswith("linux") or bool(env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


def open_browser(url: str) -> None:
    """Open ``url`` in the user's browser, from a thread of its own: a browser command (``$BROWSER``)
    may run until that browser closes, and the demo must not wait for it."""

    def go() -> None:
        try:
            webbrowser.open(url)
        except Exception:  # a broken browser setting must not stop the demo
            pass

    threading.Thread(target=go, name="underway-demo-browser", daemon=True).start()


async def run(
    app: underway.App,
    console: Console,
    *,
    answer: str = "yes",
    once: bool = False,
    browser: bool = False,
) -> None:
    """Serve the dashboard and the API with a worker, submit the demo jobs and batch, and draw
    their bars; print the dashboard's URL first, and open it in a browser if ``browser``.

    Serves on until Ctrl-C, or until the jobs and the batch end when ``once``.
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
    url = dashboard_url(app.settings.host, port)
    console.print(f"{url}  ← the dashboard", highlight=False, soft_wrap=True)
    if browser:
        open_browser(url)
    console.print(
        f"[bold]underway demo[/] · dashboard {url}{' (opening it in your browser)' if browser else ''}"
        f" · API {url}api/docs · store {escape(app.settings.url)} · Ctrl-C to stop\n",
        highlight=False,
        soft_wrap=True,
    )
    showing = asyncio.create_task(_show(app, console, answer))
    await asyncio.wait({serving, showing}, return_when=asyncio.FIRST_COMPLETED)
    if showing.done():
        await showing
        if once:
            server.should_exit = True
        else:
            console.print(f"\nThe jobs ended; the dashboard keeps serving at {url}. Ctrl-C to stop.")
    else:
        showing.cancel()
    await serving


async def _show(app: underway.App, console: Console, answer: str) -> None:
    jobs = [await task.submit(**args) for task, args in DEMO_JOBS]
    batch = await app.submit_batch(resize, DEMO_BATCH, name=DEMO_BATCH_NAME, labels={"album": "holiday"})
    with JobBars(console) as bars:
        for job in jobs:
            bars.add(job)
        await asyncio.gather(
            *(_follow(app, job, bars, answer) for job in jobs), _follow_batch(app, batch.id, bars)
        )
    console.print()
    for job in [await app.get(job.id) for job in jobs]:
        console.print(
            f"{job.id}  {job.task:<30} [bold]{job.status.value}[/]  {escape(json.dumps(job.result))}"
        )
    view = await app.batch_view(batch.id)
    console.print(
        f"batch {view.id}  {escape(view.name or view.task)}: {batch_status_text(view)}"
        f" · {view.counts.get('succeeded', 0)}/{view.total} succeeded",
        highlight=False,
    )


async def _follow_batch(app: underway.App, batch_id: str, bars: JobBars) -> None:
    """One bar for the batch among the jobs' bars, read again until every item has ended (its
    failing items end it too: ``partial``)."""
    view = await app.batch_view(batch_id)
    bar = bars.progress.add_task(
        escape(f"batch of resize {batch_id[-6:]}"), total=view.total, speed="", status=""
    )
    while True:
        bars.progress.update(bar, completed=view.done, status=batch_status_text(view))
        if view.terminal:
            bars.progress.stop_task(bar)
            return
        await asyncio.sleep(BATCH_INTERVAL)
        view = await app.batch_view(batch_id)


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
