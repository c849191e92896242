"""The Procrastinate side of bench/throughput.py --url: an App with one no-op task.

Workers run ``procrastinate --app bench.procrastinate_app.app worker`` (one process each); the
database URL (with the benchmark's schema on its search_path) comes from ``BENCH_PG_URL``.
Finished jobs stay in ``procrastinate_jobs`` with status ``succeeded``, which the benchmark counts.
"""

from __future__ import annotations

import os
import time

import procrastinate

DONE_SQL = "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(
        conninfo=os.environ.get("BENCH_PG_URL", ""), min_size=1, max_size=10
    )
)


@app.task(name="noop")
async def noop() -> None:
    return None


async def install(url: str) -> None:
    """Procrastinate's schema (tables, types, functions, triggers) in the URL's search_path."""
    with app.replace_connector(_connector(url)):
        async with app.open_async():
            await app.schema_manager.apply_schema_async()


async def enqueue(url: str, n: int) -> float:
    """``n`` no-op jobs in one ``batch_defer_async`` call; its seconds."""
    with app.replace_connector(_connector(url)):
        async with app.open_async():
            start = time.perf_counter()
            await noop.batch_defer_async(*({} for _ in range(n)))
            return time.perf_counter() - start


def _connector(url: str) -> procrastinate.PsycopgConnector:
    """A connector for ``url`` (the benchmark process has no BENCH_PG_URL)."""
    return procrastinate.PsycopgConnector(conninfo=url, min_size=1, max_size=2)
