"""A server's background checks: a task that runs :meth:`Periodic.tick` every ``interval``
seconds from :meth:`~Periodic.start` to :meth:`~Periodic.stop` (the key watch, the store watch)."""

from __future__ import annotations

import asyncio
import contextlib


class Periodic:
    """Runs :meth:`tick` every ``interval`` seconds in a task named ``name``, until
    :meth:`stop` or until :meth:`tick` returns ``False``."""

    name = "underway-periodic"

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def tick(self) -> bool:
        """One check; ``False`` ends the task."""
        raise NotImplementedError

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            if not await self.tick():
                return
