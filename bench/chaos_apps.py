"""Tasks of the chaos suite (bench/chaos.py; workers load ``--app bench.chaos_apps:app``).

Both use the default task settings (no ``retries``, the default crash budget): the suite
measures what a new user gets.
"""

from __future__ import annotations

import asyncio
import os

import underway


async def chaos_short(n: int, seconds: float) -> int:
    """A short job: sleeps ``seconds`` and returns its number."""
    await asyncio.sleep(seconds)
    return n


async def chaos_ticker(ctx: underway.Context, every: float, stop: str, most: int = 10_000) -> int:
    """Logs numbered lines ``every`` seconds until the file ``stop`` exists (at most ``most``):
    log events are never coalesced, so every client must see each of them exactly once."""
    lines = 0
    while lines < most and not await asyncio.to_thread(os.path.exists, stop):
        lines += 1
        ctx.log.info(f"line {lines}")
        await asyncio.sleep(every)
    return lines


def make_app(url: str) -> underway.App:
    """An App on ``url`` with the chaos tasks (the suite submits through one of its own)."""
    new = underway.App(url)
    new.task(name="chaos_short")(chaos_short)
    new.task(name="chaos_ticker")(chaos_ticker)
    return new


app = make_app(os.environ.get("UNDERWAY_URL", "sqlite:///chaos.db"))
