"""What the SQLite store checks to say it is healthy: that its file is still the one at the path,
that it can take the write lock and write, and that there is room to write.

Each check returns ``None`` when all is well, else a :class:`~underway.exceptions.StoreUnhealthy`
to raise, whose ``reason`` names no path (``/healthz`` shows it to anyone) and whose message
says where and what to do.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from ..exceptions import StoreGone, StoreUnhealthy

logger = logging.getLogger("underway.store.sqlite")

#: Below this much free space on the database's filesystem the store says the disk is full. SQLite
#: fails a write only when it needs a new page, and the WAL grows to about 1,000 pages (4 MB)
#: between checkpoints: with less than that left, the next writes may fail at any moment.
MIN_FREE_BYTES = 4 * 1024 * 1024
#: Below this many pages left under ``PRAGMA max_page_count`` the store says the database is full
#: (a submission with its first event needs a few pages; an index split a few more).
MIN_FREE_PAGES = 16
#: A statement that writes (so SQLite refuses it on a read-only database or connection) but
#: changes nothing; it runs in a transaction that is rolled back.
WRITE_PROBE = "DELETE FROM underway_migrations WHERE version < 0"
#: How often at most every write looks again whether the file is still the one at the path.
IDENTITY_CHECK_INTERVAL = 1.0
RESTART = "restart this process to open the file now at that path"


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """Which file a path named when the store opened it (device and inode)."""

    device: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> FileIdentity:
        st = os.stat(path)
        return cls(st.st_dev, st.st_ino)

    def check(self, path: Path) -> StoreGone | None:
        """A :class:`StoreGone` if ``path`` no longer names this file (deleted, or replaced)."""
        try:
            now = FileIdentity.of(path)
        except FileNotFoundError:
            return _gone(path, "deleted")
        return None if now == self else _gone(path, "replaced")


def _gone(path: Path, what: str) -> StoreGone:
    return StoreGone(
        f"database file {what} while open: {RESTART}",
        f"the database file {path} was {what} while this process had it open; its writes would go"
        f" to a file nobody reads: stopping. {RESTART.capitalize()}",
    )


def cannot_write(path: Path, why: str) -> StoreUnhealthy:
    return StoreUnhealthy(
        f"cannot write: {why}",
        f"cannot write to the database {path}: {why}. Check the file's and its directory's"
        " permissions, and that the filesystem is mounted read-write",
    )


def read_only_problem(path: Path) -> StoreUnhealthy | None:
    """The filesystem holding the database is mounted read-only (remounted so after errors, say):
    SQLite cannot even open a WAL database there without its ``-shm`` file."""
    if hasattr(os, "ST_RDONLY") and os.statvfs(path.parent).f_flag & os.ST_RDONLY:
        return cannot_write(path, "the filesystem is read-only")
    return None


def write_problem(conn: sqlite3.Connection, path: Path) -> StoreUnhealthy | None:
    """Take the write lock and run a write that changes nothing, then roll back: a read-only
    file, filesystem or connection (``PRAGMA query_only``) refuses it. Call it holding the
    writers' lock."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(WRITE_PROBE)
        finally:
            conn.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        return cannot_write(path, str(exc))
    return None


def room_problem(conn: sqlite3.Connection, path: Path) -> StoreUnhealthy | None:
    """The database is full (``PRAGMA max_page_count`` nearly reached) or its disk is."""
    pages, limit, free = (
        conn.execute(f"PRAGMA {name}").fetchone()[0]
        for name in ("page_count", "max_page_count", "freelist_count")
    )
    if limit - pages + free < MIN_FREE_PAGES:
        return StoreUnhealthy(
            f"database full: {pages - free} of at most {limit} pages used (max_page_count)",
            f"the database {path} is full: {pages - free} of at most {limit} pages (PRAGMA"
            " max_page_count) are used: raise the limit, or prune finished jobs",
        )
    available = free_bytes(path)
    if available < MIN_FREE_BYTES:
        return StoreUnhealthy(
            f"disk full: {_mb(available)} free where the database is (underway needs {_mb(MIN_FREE_BYTES)})",
            f"the disk holding {path} has {_mb(available)} free, less than the {_mb(MIN_FREE_BYTES)}"
            " SQLite may need for its next writes: free some space",
        )
    return None


def free_bytes(path: Path) -> int:
    """Free space of the filesystem holding ``path``, as this process may use it (root may use
    the blocks reserved for it)."""
    if not hasattr(os, "statvfs"):  # pragma: no cover - not POSIX
        return MIN_FREE_BYTES
    st = os.statvfs(path)
    blocks = st.f_bfree if hasattr(os, "geteuid") and os.geteuid() == 0 else st.f_bavail
    return blocks * st.f_frsize


def _mb(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB"
