"""Tasks of the client tests, served by a server in the test process (:func:`register` on the
test's App) and by ``underway`` subprocesses (``--app client_tasks:app``, with this directory
on ``PYTHONPATH``).

Tasks that must wait for the test wait for a file to exist, which works across processes.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import anyio

import underway

#: A task that waits for the test never waits longer than this, even if the test died.
MAX_WAIT = 60.0


def register(app: underway.App) -> underway.App:
    """Register the client tests' tasks on ``app`` and return it."""

    @app.task(name="add")
    def add(a: int, b: int = 0) -> int:
        return a + b

    @app.task(name="chatter")
    async def chatter(ctx: underway.Context, lines: int) -> int:
        """Log ``lines`` lines as fast as it can (log events are never coalesced)."""
        for i in range(1, lines + 1):
            ctx.log.info(f"line {i}")
            if i % 50 == 0:
                await asyncio.sleep(0)
        return lines

    @app.task(name="hold")
    async def hold(ctx: underway.Context, release: str, interval: float = 0.02) -> int:
        """Log a line every ``interval`` seconds until the file ``release`` exists."""
        started = time.monotonic()
        ticks = 0
        while not await anyio.Path(release).exists():
            if time.monotonic() - started > MAX_WAIT:
                raise TimeoutError(f"{release} did not appear within {MAX_WAIT} s")
            ticks += 1
            ctx.log.info(f"tick {ticks}")
            await asyncio.sleep(interval)
        return ticks

    @app.task(name="ask")
    async def ask(ctx: underway.Context, question: str = "Go on?") -> dict[str, Any]:
        answer = await ctx.ask(question, options=["yes", "no"])
        return {"answer": answer}

    @app.task(name="item")
    async def item(ctx: underway.Context, n: int, fail_until: str | None = None) -> dict[str, int]:
        """One item of a batch: squares ``n``; fails while the file ``fail_until`` does not exist."""
        ctx.progress(1, 2, message=f"squaring {n}")
        if fail_until is not None and not await anyio.Path(fail_until).exists():
            raise ValueError(f"item {n} fails on purpose")
        return {"n": n, "square": n * n}

    @app.task(name="boom")
    def boom(message: str = "boom") -> None:
        raise ValueError(message)

    return app


app = register(underway.App())
