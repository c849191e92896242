"""Tasks of the JavaScript client's tests (``js/test/``), run by the ``underway dev`` servers those
tests start (``--app js_tasks:app``, with this directory on ``PYTHONPATH``).

Tasks that wait for the test wait for a file to exist, which works across processes; none waits
longer than ``MAX_WAIT``, even if the test died.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import anyio

import underway

MAX_WAIT = 60.0

app = underway.App()


@app.task(name="add")
def add(a: int, b: int = 0) -> int:
    return a + b


@app.task(name="steps")
async def steps(ctx: underway.Context, count: int = 5, interval: float = 0.06) -> dict[str, int]:
    """``count`` steps, each a log line and a progress value ``interval`` seconds apart (apart
    enough that no watcher sees two progress values coalesced), then a result."""
    for i in range(1, count + 1):
        ctx.log.info(f"step {i} of {count}", step=i)
        ctx.progress(i, count, message=f"step {i}")
        await asyncio.sleep(interval)
    return {"done": count}


@app.task(name="hold", retries=2)
async def hold(ctx: underway.Context, release: str, interval: float = 0.05) -> dict[str, int]:
    """Log a tick every ``interval`` seconds until the file ``release`` exists (an attempt whose
    worker was killed runs again, and ticks again)."""
    started = time.monotonic()
    ticks = 0
    while not await anyio.Path(release).exists():
        if time.monotonic() - started > MAX_WAIT:
            raise TimeoutError(f"{release} did not appear within {MAX_WAIT} s")
        ticks += 1
        ctx.log.info(f"tick {ticks}", attempt=ctx.attempt)
        await asyncio.sleep(interval)
    return {"ticks": ticks, "attempt": ctx.attempt}


@app.task(name="confirm")
async def confirm(ctx: underway.Context, question: str = "Go on?") -> dict[str, Any]:
    ctx.step("asking", steps=2)
    answer = await ctx.ask(question, options=["yes", "no"])
    ctx.step("answered")
    ctx.progress(1, 1, message="done")
    return {"answer": answer}


@app.task(name="boom")
def boom(message: str = "boom") -> None:
    raise ValueError(message)


@app.task(name="item")
async def item(ctx: underway.Context, n: int, fail: bool = False) -> dict[str, int]:
    """One item of a batch: squares ``n``, or fails when ``fail``."""
    ctx.progress(1, 2, message=f"squaring {n}")
    if fail:
        raise ValueError(f"item {n} fails on purpose")
    return {"n": n, "square": n * n}
