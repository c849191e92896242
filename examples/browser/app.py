"""A job with a live progress bar in a plain HTML page and in a React component.

    python app.py        # then open http://127.0.0.1:8000/progress.html

underway's own server (the API under /api, its browser files under /assets, a worker in the same
process) also serves the two pages of this folder.
"""

import asyncio
from pathlib import Path

import uvicorn
from fastapi.staticfiles import StaticFiles

import underway
from underway.web import create_app

app = underway.App("sqlite:///browser.db")


@app.task(name="report")
async def report(ctx: underway.Context, pages: int = 20) -> dict[str, int]:
    for _ in ctx.track(range(pages), message="Writing the report"):
        await asyncio.sleep(0.05)  # write one page here
    return {"pages": pages}


site = create_app(app, with_worker=True)  # /api, /assets/underway.js, and a worker
site.mount("/", StaticFiles(directory=Path(__file__).parent, html=True))  # progress.html, progress.js

if __name__ == "__main__":
    uvicorn.run(site, host="127.0.0.1", port=8000)
