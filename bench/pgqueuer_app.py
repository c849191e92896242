"""The PgQueuer side of bench/throughput.py --url: one no-op entrypoint (PgQueuer's public API).

Workers run ``python -m bench.pgqueuer_app``: ``pgqueuer.run(main)``, what ``pgq run
bench.pgqueuer_app:main`` does (that command fails in PgQueuer 1.6.0 while setting up its
logging). The database URL (with the benchmark's schema
on its search_path) comes from ``BENCH_PG_URL``. PgQueuer talks to PostgreSQL through a psycopg
async connection here (its ``PsycopgDriver``), the driver underway uses too. A finished job is
deleted from the ``pgqueuer`` table (and logged in ``pgqueuer_log``), so "all done" is an empty
``pgqueuer`` table.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

ENTRYPOINT = "noop"
#: Jobs not yet done (queued or picked): 0 once every job finished.
LEFT_SQL = "SELECT count(*) FROM pgqueuer"


async def _connect(url: str) -> Any:
    import psycopg

    return await psycopg.AsyncConnection.connect(url, autocommit=True)


async def install(url: str) -> None:
    """Create PgQueuer's tables, types and trigger in the schema the URL's search_path names."""
    from pgqueuer import Queries

    conn = await _connect(url)
    try:
        await Queries.from_psycopg_connection(conn).install(create_schema=False)
    finally:
        await conn.close()


async def enqueue(url: str, n: int) -> float:
    """``n`` no-op jobs in one batch call (``Queries.enqueue`` with lists); its seconds."""
    import time

    from pgqueuer import Queries

    conn = await _connect(url)
    try:
        queries = Queries.from_psycopg_connection(conn)
        start = time.perf_counter()
        await queries.enqueue([ENTRYPOINT] * n, [None] * n, [0] * n)
        return time.perf_counter() - start
    finally:
        await conn.close()


@asynccontextmanager
async def main() -> AsyncIterator[Any]:
    """The factory ``pgqueuer.run`` enters in each worker process."""
    from pgqueuer import PgQueuer

    conn = await _connect(os.environ["BENCH_PG_URL"])
    pgq = PgQueuer.from_psycopg_connection(conn)

    @pgq.entrypoint(ENTRYPOINT)
    async def noop(job: Any) -> None:
        return None

    try:
        yield pgq
    finally:
        await conn.close()


if __name__ == "__main__":
    import asyncio

    from pgqueuer import run

    asyncio.run(run(main))
