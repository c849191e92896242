"""Waiting for changes made by anyone to a store: one cheap probe per process and loop.

Idle workers and stream feeds call :meth:`ChangeWatch.wait` instead of querying the store in a
loop. A *doorbell* (a file descriptor that becomes readable when the store may have changed,
e.g. inotify on a file that SQLite writers touch after each commit) wakes waiters at once;
without one, a poller calls ``probe`` (SQLite: ``PRAGMA data_version``, microseconds) every
``interval`` while someone waits. Either
way ``probe`` decides whether something really changed. Writes made in this process call
:meth:`ChangeWatch.poke` to wake waiters without any delay.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

#: With a doorbell, the probe still runs this often while someone waits, as a safety net (for
#: writers that do not ring it, such as the ``sqlite3`` shell).
DOORBELL_FALLBACK_INTERVAL = 0.1


class Doorbell(Protocol):
    def fileno(self) -> int: ...

    def drain(self) -> bool:
        """Consume what is readable; True if it may mean a change."""

    def close(self) -> None: ...


class ChangeWatch:
    def __init__(
        self, probe: Callable[[], object], interval: float, doorbell: Doorbell | None = None
    ) -> None:
        self._probe = probe
        self._interval = interval if doorbell is None else max(interval, DOORBELL_FALLBACK_INTERVAL)
        self._seen = probe()
        self._token = 0
        self._waiters: set[asyncio.Future[None]] = set()
        self._poller: asyncio.Task[None] | None = None
        self._doorbell = doorbell
        self._loop = asyncio.get_running_loop()
        if doorbell is not None:
            self._loop.add_reader(doorbell.fileno(), self._rung)

    def token(self) -> int:
        """Look now, and return the count of changes seen so far."""
        value = self._probe()
        if value != self._seen:
            self._seen = value
            self._token += 1
            self._wake()
        return self._token

    def poke(self) -> None:
        """Something changed (called on the watch's loop)."""
        self._token += 1
        self._wake()

    async def wait(self, token: int, timeout: float) -> int:
        if self.token() != token or timeout <= 0:
            return self._token
        waiter = self._loop.create_future()
        self._waiters.add(waiter)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll(), name="underway-change-poll")
        try:
            await asyncio.wait({waiter}, timeout=timeout)
        finally:
            self._waiters.discard(waiter)
        return self._token

    def close(self) -> None:
        """Stop watching (call on the watch's loop)."""
        if self._poller is not None:
            self._poller.cancel()
        if self._doorbell is not None:
            self._loop.remove_reader(self._doorbell.fileno())
            self._doorbell.close()
            self._doorbell = None
        self._wake()

    def _rung(self) -> None:
        if self._doorbell is not None and self._doorbell.drain():
            self.token()

    def _wake(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def _poll(self) -> None:
        while self._waiters:
            await asyncio.sleep(self._interval)
            self.token()
