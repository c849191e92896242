"""Tasks the benchmarks run (loaded by worker processes with --app bench.apps:app)."""

from __future__ import annotations

import asyncio
import os
import time

import underway

#: Blocks of each kind in the cost estimate of ``_timed_spin``.
ROUNDS = 5

app = underway.App(os.environ.get("UNDERWAY_URL", "sqlite:///bench.db"))


@app.task(name="noop")
async def noop() -> None:
    return None


@app.task(name="spin")
async def spin(ctx: underway.Context, calls: int) -> int:
    for i in range(calls):
        ctx.progress(i + 1, calls)
    return calls


def _timed_spin(ctx: underway.Context, calls: int) -> dict[str, float]:
    """``calls`` progress calls in one timed loop, after a load-robust estimate of their cost.

    The estimate alternates blocks of a tenth of ``calls`` progress calls (``current`` never
    reaching ``total``) and of calls to a no-op method, and takes the fastest block of each:
    ``ns_per_call`` is what ``progress()`` costs over a bare method call. Returns right after
    the last call of the main loop, which ``last_call_at`` records.
    """
    null = _Null()
    block = max(1, calls // 10)
    fastest = {"progress": float("inf"), "baseline": float("inf")}
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for i in range(block):
            null.progress(i + 1, calls)
        fastest["baseline"] = min(fastest["baseline"], time.perf_counter() - start)
        start = time.perf_counter()
        for i in range(block):
            ctx.progress(i + 1, calls)
        fastest["progress"] = min(fastest["progress"], time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(calls):
        ctx.progress(i + 1, calls)
    elapsed = time.perf_counter() - start
    last_call_at = time.time()
    return {
        "calls": calls,
        "seconds": elapsed,
        "calls_per_s": calls / elapsed,
        "best_block_calls_per_s": block / fastest["progress"],
        "ns_per_call": (fastest["progress"] - fastest["baseline"]) / block * 1e9,
        "last_call_at": last_call_at,
    }


class _Null:
    """A ``progress`` method that does nothing: the cost of the loop and of a method call."""

    __slots__ = ()

    def progress(self, current: float, total: float | None = None) -> None:
        return None


@app.task(name="spin_timed")
async def spin_timed(ctx: underway.Context, calls: int) -> dict[str, float]:
    """An async task calling ``ctx.progress`` ``calls`` times (the event loop is blocked meanwhile)."""
    return _timed_spin(ctx, calls)


@app.task(name="spin_timed_sync")
def spin_timed_sync(ctx: underway.Context, calls: int) -> dict[str, float]:
    """The same in a sync task, which runs in a worker thread while the flusher writes."""
    return _timed_spin(ctx, calls)


@app.task(name="progress_clock")
async def progress_clock(ctx: underway.Context, calls: int, every: float, lead: float = 0.5) -> int:
    """``calls`` progress calls ``every`` seconds apart, each with ``time.time()`` of the call as
    its message (bench/sse_latency.py, bench/http_load.py); starts after ``lead`` seconds."""
    await asyncio.sleep(lead)
    for i in range(calls):
        ctx.progress(i + 1, calls, message=f"{time.time():.6f}")
        await asyncio.sleep(every)
    return calls


@app.task(name="asker")
async def asker(ctx: underway.Context, rounds: int, gap: float) -> int:
    """Asks ``rounds`` questions (keys ``r1``, ``r2``...), ``gap`` seconds after each answer
    (bench/fanout.py: every client sees the answer event; nothing else is written meanwhile)."""
    for i in range(rounds):
        await ctx.ask(f"round {i + 1}", key=f"r{i + 1}")
        await asyncio.sleep(gap)
    return rounds


@app.task(name="item")
async def item(url: str, n: int = 0) -> None:
    """A no-op with arguments like a batch item's (bench/batches.py)."""


#: Jobs of ``item_keyed`` have 100 keys and at most 1,000 running per key: a limit that never binds.
KEYS = 100


@app.task(name="item_keyed", concurrency=1000, concurrency_key=lambda n, **_: f"k{n % KEYS}")
async def item_keyed(url: str, n: int = 0) -> None:
    """``item`` with a per-key concurrency limit that never binds: what counting limits costs."""
