"""The task of the batch command tests (``--app batch_tasks:app``): one item of a batch.

Items wait for files rather than for time, so a test can hold them running, or let them fail
until it "fixes" them, across processes.
"""

from __future__ import annotations

import asyncio
import time

import anyio

import underway

#: An item that waits for the test never waits longer than this, even if the test died.
MAX_WAIT = 60.0


def register(app: underway.App) -> underway.App:
    @app.task(name="square")
    async def square(
        ctx: underway.Context, n: int, fail_until: str | None = None, hold: str | None = None
    ) -> dict[str, int]:
        """Square ``n``. It fails while the file ``fail_until`` does not exist, and reports
        ``holding n`` until the file ``hold`` exists."""
        ctx.progress(0, 2, message=f"holding {n}" if hold else f"squaring {n}")
        started = time.monotonic()
        while hold and not await anyio.Path(hold).exists() and time.monotonic() - started < MAX_WAIT:
            await asyncio.sleep(0.02)
        if fail_until is not None and not await anyio.Path(fail_until).exists():
            raise ValueError(f"item {n} fails on purpose")
        ctx.progress(2, 2, message=f"squared {n}")
        return {"n": n, "square": n * n}

    return app


app = register(underway.App())
