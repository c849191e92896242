"""Opening SQLite connections the same way everywhere, and the writers' file lock."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from types import TracebackType

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: SQLite's own busy handler still serializes
    fcntl = None  # type: ignore[assignment]

BUSY_TIMEOUT = 30.0
_pwrite = getattr(os, "pwrite", None)

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
    """The writers' lock: an exclusive ``flock`` held while writing, shared by every process using
    the database, and a mutex for the threads of this process (``flock`` locks belong to an open
    file, not to a thread).

    The kernel hands the lock to the next waiter the moment it is released, where SQLite's
    busy handler would sleep 1, 2, 5, 10… ms between tries. A process that dies releases it.
    It may be released by another thread than the one that took it. The same file is the
    stores' doorbell: a writer calls :meth:`ring` after each commit.
    """

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self._mutex = threading.Lock()

    def acquire(self, blocking: bool = True) -> bool:
        if not self._mutex.acquire(blocking):
            return False
        if fcntl is None:
            return True
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._mutex.release()
            return False
        except BaseException:
            self._mutex.release()
            raise
        return True

    def release(self) -> None:
        if fcntl is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._mutex.release()

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def ring(self) -> None:
        """Tell every :class:`CommitDoorbell` on the database that a commit is visible now."""
        if _pwrite is not None:  # POSIX; elsewhere there is no inotify to ring anyway
            _pwrite(self._fd, b"\0", 0)

    def close(self) -> None:
        os.close(self._fd)


def lock_path(path: Path) -> Path:
    return path.with_name(f"{path.name}-lock")


class CommitDoorbell:
    """Readable when a store of any process has committed to the database: inotify on the lock file.

    Writers ring it (:meth:`FileLock.ring`) after their commit returned, so a reader woken by it
    sees the commit at once. (The WAL file is written a moment *before* SQLite publishes the
    commit in shared memory: a reader woken by that could probe too early and miss it.) The
    directory is watched rather than the file, which may not exist yet.
    """

    def __init__(self, path: Path) -> None:
        assert INotify is not None
        self._inotify = INotify(nonblocking=True)
        self._inotify.add_watch(path.resolve().parent, flags.MODIFY)
        self._name = lock_path(path).name

    @classmethod
    def for_database(cls, path: Path) -> CommitDoorbell | None:
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
        return any(event.name == self._name for event in self._inotify.read(timeout=0))

    def close(self) -> None:
        self._inotify.close()
