"""Opening SQLite connections the same way everywhere, and the writers' file lock."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from types import TracebackType

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: SQLite's own busy handler still serializes
    fcntl = None  # type: ignore[assignment]

BUSY_TIMEOUT = 30.0

try:
    from inotify_simple import INotify, flags
except ImportError:  # pragma: no cover - not Linux: changes are found by polling
    INotify = None


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, with a busy timeout."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


class FileLock:
    """An exclusive ``flock`` held while writing, shared by every process using the database.

    The kernel hands the lock to the next waiter the moment it is released, where SQLite's
    busy handler would sleep 1, 2, 5, 10… ms between tries. A process that dies releases it.
    """

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)

    def __enter__(self) -> None:
        if fcntl is not None:
            fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if fcntl is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)


class WalDoorbell:
    """Readable when a transaction commits to the database, by any process: inotify on its WAL.

    Every commit in WAL mode writes to ``<file>-wal``. The directory is watched, not the file,
    because SQLite deletes and recreates the WAL file.
    """

    def __init__(self, path: Path) -> None:
        assert INotify is not None
        self._inotify = INotify(nonblocking=True)
        self._inotify.add_watch(path.resolve().parent, flags.MODIFY | flags.CREATE)
        self._wal = f"{path.name}-wal"

    @classmethod
    def for_database(cls, path: Path) -> WalDoorbell | None:
        """A doorbell where inotify exists, else ``None`` (the caller polls instead)."""
        if INotify is None:
            return None
        try:
            return cls(path)
        except OSError:  # e.g. out of inotify instances: polling still works
            return None

    def fileno(self) -> int:
        return int(self._inotify.fileno())

    def drain(self) -> bool:
        return any(event.name == self._wal for event in self._inotify.read(timeout=0))

    def close(self) -> None:
        self._inotify.close()
