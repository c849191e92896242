"""The huey side of bench/throughput.py: a SqliteHuey with one no-op task.

The consumer loads ``bench.huey_app.huey``, whose database path comes from ``BENCH_HUEY_DB``.
The benchmark process builds its own instance on the same file with :func:`make_huey`.

``BENCH_HUEY_SYNC=normal`` (the default here) sets ``PRAGMA synchronous = NORMAL``, which is
what underway's store uses: the like-for-like comparison. ``BENCH_HUEY_SYNC=default`` keeps
huey's own setting (SQLite's default ``FULL``: an fsync of the WAL at every commit), which is
what a user of ``SqliteHuey(filename=...)`` gets.
"""

from __future__ import annotations

import os
from typing import Any

from huey import SqliteHuey
from huey.storage import SqliteStorage

HUEY_NAME = "bench"


class NormalSyncStorage(SqliteStorage):  # type: ignore[misc]
    """huey's SqliteStorage with ``PRAGMA synchronous = NORMAL`` (like underway's store)."""

    def _create_connection(self) -> Any:
        conn = super()._create_connection()
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn


def make_huey(path: str, sync: str = "normal") -> tuple[Any, Any]:
    """A huey on ``path`` and its no-op task (call the task to enqueue one)."""
    if sync not in ("normal", "default"):
        raise ValueError(f"BENCH_HUEY_SYNC must be normal or default, not {sync!r}")
    storage = SqliteStorage if sync == "default" else NormalSyncStorage
    # store_none: a no-op's None result is stored too, so every finished task leaves a row.
    # timeout: SQLite's busy timeout, 30 s like underway's (huey's default of 5 s gives
    # "database is locked" errors on a loaded machine with synchronous=FULL).
    instance = SqliteHuey(HUEY_NAME, filename=path, storage_class=storage, store_none=True, timeout=30)
    return instance, instance.task(name="noop")(noop)


def noop() -> None:
    return None


huey = (
    make_huey(os.environ["BENCH_HUEY_DB"], os.environ.get("BENCH_HUEY_SYNC", "normal"))[0]
    if "BENCH_HUEY_DB" in os.environ
    else None
)
