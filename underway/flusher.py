"""The worker's writer: coalesces progress and batches every fenced write into one transaction.

Tasks mark their job dirty (from the event loop or from a thread); the flusher writes a job's
pending logs, progress and checkpoint when its :class:`~underway.progress.Throttle` allows it,
and status changes at once, merged with whatever is still pending for that job so the final
progress value always lands before the final status. Everything due at the same moment goes
into one ``store.record()`` call: a group commit.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from typing import TYPE_CHECKING

from .exceptions import StoreGone, UnderwayError
from .store import UNSET, Store, WorkerWrite

if TYPE_CHECKING:
    from .run import JobRun

logger = logging.getLogger("underway.worker")


class Flusher:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._dirty: dict[JobRun, None] = {}
        self._moves: list[tuple[JobRun, WorkerWrite, asyncio.Future[bool]]] = []
        self._wake = asyncio.Event()
        self._next_due: float | None = None
        self._closing = False

    def mark(self, run: JobRun, urgent: bool = False) -> None:
        """A run has something to write (thread-safe)."""
        if threading.get_ident() == self._thread:
            self._mark(run, urgent)
        else:
            self._loop.call_soon_threadsafe(self._mark, run, urgent)

    def _mark(self, run: JobRun, urgent: bool) -> None:
        self._dirty[run] = None
        due = time.monotonic() if urgent else run.throttle.due()
        if urgent:
            run.urgent = True
        if due <= time.monotonic():
            self._wake.set()
        elif self._next_due is None or due < self._next_due:
            self._next_due = due
            self._wake.set()

    async def move(self, run: JobRun, write: WorkerWrite) -> bool:
        """Write a status change (with the run's pending logs and progress); ``False`` if refused."""
        done: asyncio.Future[bool] = self._loop.create_future()
        self._moves.append((run, write, done))
        self._wake.set()
        return await done

    async def run(self) -> None:
        """Write until :meth:`close` is called and nothing is left to write."""
        while not (self._closing and not self._moves and not self._dirty):
            await self._wait()
            batch = self._collect(time.monotonic())
            if batch:
                await self._write(batch)

    def close(self) -> None:
        self._closing = True
        for run in self._dirty:
            run.urgent = True
        self._wake.set()

    async def _wait(self) -> None:
        timeout = None if self._next_due is None else max(0.0, self._next_due - time.monotonic())
        if self._closing:
            timeout = 0.0
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            pass
        self._wake.clear()

    def _collect(self, now: float) -> list[tuple[JobRun, WorkerWrite, asyncio.Future[bool] | None]]:
        batch: list[tuple[JobRun, WorkerWrite, asyncio.Future[bool] | None]] = []
        moves, self._moves = self._moves, []
        for run, write, done in moves:
            self._dirty.pop(run, None)
            batch.append((run, _merge(write, run.pending_write(now)), done))
        self._next_due = None
        for run in list(self._dirty):
            due = run.throttle.due()
            if run.urgent or due <= now:
                del self._dirty[run]
                run.urgent = False
                batch.append((run, run.pending_write(now), None))
            elif self._next_due is None or due < self._next_due:
                self._next_due = due
        return batch

    async def _write(self, batch: list[tuple[JobRun, WorkerWrite, asyncio.Future[bool] | None]]) -> None:
        failures = 0
        while True:
            try:
                accepted = await self._store.record([write for _, write, _ in batch])
                break
            except StoreGone:  # it never heals: the writes are refused
                accepted = [False] * len(batch)
                break
            except UnderwayError:
                failures += 1
                logger.exception("writing %d job updates failed (try %d); retrying", len(batch), failures)
                await asyncio.sleep(min(5.0, 0.05 * 2**failures))
        for (run, _, done), ok in zip(batch, accepted, strict=True):
            if done is not None:
                if not done.done():  # its waiter may have been cancelled meanwhile
                    done.set_result(ok)
            elif not ok:
                run.lost()


def _merge(move: WorkerWrite, pending: WorkerWrite) -> WorkerWrite:
    return dataclasses.replace(
        move,
        events=pending.events + move.events,
        progress=pending.progress if move.progress is None else move.progress,
        checkpoint=pending.checkpoint if move.checkpoint is UNSET else move.checkpoint,
    )
