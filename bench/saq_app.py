"""The SAQ side of bench/throughput.py --url: a PostgresQueue with one no-op function.

Workers run ``saq bench.saq_app.settings --workers 2``; the database URL (with the benchmark's
schema on its search_path) comes from ``BENCH_PG_URL``. SAQ keeps finished jobs in ``saq_jobs``
with status ``complete`` (until their ttl), which the benchmark counts. SAQ has no bulk enqueue:
jobs are enqueued one call each (``SAQ_ENQUEUE_CONCURRENCY`` calls in flight).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

DONE_SQL = "SELECT count(*) FROM saq_jobs WHERE status = 'complete'"
#: Worker tasks per process (SAQ's default is 10).
CONCURRENCY = int(os.environ.get("BENCH_SAQ_CONCURRENCY", "10"))
#: Connections per process (SAQ's default pool is 4-20; kept small: max_connections is shared).
POOL_MAX = 10
SAQ_ENQUEUE_CONCURRENCY = 20


def make_queue(url: str) -> Any:
    from saq.queue.postgres import PostgresQueue

    return PostgresQueue.from_url(url, min_size=2, max_size=POOL_MAX)


async def noop(ctx: Any) -> None:
    return None


async def install(url: str) -> None:
    """SAQ creates its tables when a queue connects."""
    queue = make_queue(url)
    await queue.connect()
    await queue.disconnect()


async def enqueue(url: str, n: int) -> float:
    """``n`` no-op jobs, one ``queue.enqueue`` call each; the seconds it took."""
    import time

    queue = make_queue(url)
    await queue.connect()
    try:
        start = time.perf_counter()
        for first in range(0, n, SAQ_ENQUEUE_CONCURRENCY):
            count = min(SAQ_ENQUEUE_CONCURRENCY, n - first)
            await asyncio.gather(*(queue.enqueue("noop") for _ in range(count)))
        return time.perf_counter() - start
    finally:
        await queue.disconnect()


settings: dict[str, Any] | None = (
    {"queue": make_queue(os.environ["BENCH_PG_URL"]), "functions": [noop], "concurrency": CONCURRENCY}
    if "BENCH_PG_URL" in os.environ
    else None
)
